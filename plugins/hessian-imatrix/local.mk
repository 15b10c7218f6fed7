# hessian "imatrix": Hessian diagonals from a llama.cpp importance matrix
# (legacy .dat, or GGUF read through the gguf format plugin).
plugin_LTLIBRARIES += plugins/hessian_imatrix.la
plugins_hessian_imatrix_la_SOURCES = plugins/hessian-imatrix/imatrix.c
plugins_hessian_imatrix_la_CPPFLAGS = $(PLUGIN_CPPFLAGS)
plugins_hessian_imatrix_la_LDFLAGS = $(PLUGIN_LDFLAGS)
plugins_hessian_imatrix_la_LIBADD = libhvqjson.la -lm

# Its unit and end-to-end tests; the real stories260K imatrix is a fixture.
check_PROGRAMS += tests/test_imatrix
tests_test_imatrix_SOURCES = tests/test_imatrix.c
tests_test_imatrix_CFLAGS = $(HVQ_TEST_CFLAGS)
tests_test_imatrix_LDADD = libhvqjson.la $(HVQ_TEST_LIBS)
TESTS += tests/test_imatrix
EXTRA_DIST += tests/data/imatrix/stories260K.imatrix.dat
