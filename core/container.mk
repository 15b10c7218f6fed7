# Decoding hvq containers and the decode/inspect/verify commands (core), and
# their tests. The writer and the reader are formats/hvq; the format is docs/FORMAT.md.
libhvqcore_la_SOURCES += core/container.c core/container.h core/cmd_container.c
libhvqcore_la_LIBADD += libhvqjson.la
# decode and convert to llama.cpp block types: the quantizers the ggml
# clusterer uses too (common/ggml_native.h)
libhvqcore_la_LIBADD += libhvqggml.la

check_PROGRAMS += tests/test_container
tests_test_container_SOURCES = tests/test_container.c
tests_test_container_CFLAGS = $(HVQ_TEST_CFLAGS)
tests_test_container_LDADD = libhvqjson.la $(HVQ_TEST_LIBS) $(ZLIB_LIBS)
TESTS += tests/test_container

dist_noinst_SCRIPTS += tools/hvq_read.py
