# The `convert` command (core): a model between formats and layouts without
# compression; the Llama mapping is the model plugin's (plugins/model-llama,
# convert*.c and tok_gguf.c). Its tests run the real binary and, compiled
# in like test_eval does, the plugin's mapping pieces.
libhvqcore_la_SOURCES += core/cmd_convert.c

check_PROGRAMS += tests/test_convert
tests_test_convert_SOURCES = tests/test_convert.c plugins/model-llama/convert.c \
	plugins/model-llama/convert_plugin.c plugins/model-llama/tok_gguf.c \
	plugins/model-llama/llama_tok.c
tests_test_convert_CFLAGS = $(HVQ_TEST_CFLAGS) -I$(top_srcdir)/plugins/model-llama
tests_test_convert_LDADD = libhvqjson.la $(HVQ_TEST_LIBS)
TESTS += tests/test_convert
