# Perplexity evaluation: the `eval` command (core) on a model plugin
# (plugins/model-llama), and its tests. The tests also check the forward
# pass and the tokenizer directly: they compile the plugin's sources in,
# as the plugin does (no fused multiply-adds).
libhvqcore_la_SOURCES += core/eval.h core/cmd_eval.c
libhvqcore_la_LIBADD += libhvqtokens.la

# The one token-file reader, linked by the core (eval) and by the calibrate
# Hessian source; it goes through the host table only.
noinst_LTLIBRARIES += libhvqtokens.la
libhvqtokens_la_SOURCES = common/tokens.c common/tokens.h
libhvqtokens_la_CPPFLAGS = $(PLUGIN_CPPFLAGS)

check_PROGRAMS += tests/test_eval
tests_test_eval_SOURCES = tests/test_eval.c plugins/model-llama/llama.c \
	plugins/model-llama/llama_tok.c
tests_test_eval_CFLAGS = $(HVQ_TEST_CFLAGS) -I$(top_srcdir)/plugins/model-llama -ffp-contract=off
tests_test_eval_LDADD = libhvqjson.la $(HVQ_TEST_LIBS)
TESTS += tests/test_eval

EXTRA_DIST += tests/data/eval
