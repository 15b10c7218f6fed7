# Test infrastructure and the core's own tests.
check_LTLIBRARIES += tests/libharness.la
tests_libharness_la_SOURCES = tests/harness.c tests/harness.h
tests_libharness_la_CFLAGS = $(AM_CFLAGS) $(CHECK_CFLAGS)

HVQ_TEST_LIBS = tests/libharness.la libhvqcore.la $(CHECK_LIBS)
HVQ_TEST_CFLAGS = $(AM_CFLAGS) $(CHECK_CFLAGS) -I$(top_srcdir)/tests
