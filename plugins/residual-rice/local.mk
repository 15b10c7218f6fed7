# residual "rice": coo16's entries with Rice-coded positions, and its tests.
plugin_LTLIBRARIES += plugins/residual_rice.la
plugins_residual_rice_la_SOURCES = \
	plugins/residual-rice/rice.c \
	plugins/residual-rice/rice_code.c \
	plugins/residual-rice/rice_code.h \
	plugins/sparse_residual.h
plugins_residual_rice_la_CPPFLAGS = $(PLUGIN_CPPFLAGS)
plugins_residual_rice_la_LDFLAGS = $(PLUGIN_LDFLAGS)
plugins_residual_rice_la_LIBADD = -lm

# The position code against a bit-at-a-time reference (linked in directly,
# so tensors beyond 2^32 entries need no matrix), the plugin against coo16,
# corrupt streams, and a pipeline through the real binary.
check_PROGRAMS += tests/test_rice
tests_test_rice_SOURCES = tests/test_rice.c \
	plugins/residual-rice/rice_code.c \
	plugins/residual-rice/rice_code.h
tests_test_rice_CFLAGS = $(HVQ_TEST_CFLAGS) -I$(top_srcdir)/plugins/residual-rice
tests_test_rice_LDADD = $(HVQ_TEST_LIBS) -lm
TESTS += tests/test_rice
