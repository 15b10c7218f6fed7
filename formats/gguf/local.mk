# The GGUF source/sink plugin (llama.cpp's model format).
plugin_LTLIBRARIES += formats/gguf.la
formats_gguf_la_SOURCES = formats/gguf/gguf.c formats/gguf/gguf_meta.c \
	formats/gguf/gguf_types.c formats/gguf/gguf_local.h
formats_gguf_la_CPPFLAGS = $(PLUGIN_CPPFLAGS)
formats_gguf_la_LDFLAGS = $(PLUGIN_LDFLAGS)
formats_gguf_la_LIBADD = libhvqjson.la

# Its tests: hand-built files (made by the test itself), the real models
# in ../shared/data when present, and the real binary end to end.
check_PROGRAMS += tests/test_gguf
tests_test_gguf_SOURCES = tests/test_gguf.c
tests_test_gguf_CFLAGS = $(HVQ_TEST_CFLAGS)
tests_test_gguf_LDADD = libhvqjson.la $(HVQ_TEST_LIBS)
TESTS += tests/test_gguf
