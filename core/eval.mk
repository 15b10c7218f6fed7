# Perplexity evaluation: the `eval` command (core) on the Llama forward
# pass (common/llama.mk), and its tests.
libhvqcore_la_SOURCES += core/eval.h core/cmd_eval.c
libhvqcore_la_LIBADD += libhvqllama.la

check_PROGRAMS += tests/test_eval
tests_test_eval_SOURCES = tests/test_eval.c
tests_test_eval_CFLAGS = $(HVQ_TEST_CFLAGS)
tests_test_eval_LDADD = libhvqjson.la $(HVQ_TEST_LIBS)
TESTS += tests/test_eval

EXTRA_DIST += tests/data/eval
