# The npz source/sink plugin (numpy .npz archives and single .npy files),
# reading and writing zip archives with libarchive.
plugin_LTLIBRARIES += formats/npz.la
formats_npz_la_SOURCES = formats/npz/npz.c formats/npz/npy.c \
	formats/npz/npy.h formats/npz/zipdir.c formats/npz/zipdir.h
formats_npz_la_CPPFLAGS = $(PLUGIN_CPPFLAGS)
formats_npz_la_CFLAGS = $(AM_CFLAGS) $(ARCHIVE_CFLAGS)
formats_npz_la_LDFLAGS = $(PLUGIN_LDFLAGS)
formats_npz_la_LIBADD = libhvqjson.la $(ARCHIVE_LIBS)

# Its tests: fixtures written by numpy (tests/data/npz, made by
# make_fixtures.py) and archives built in the test with libarchive.
check_PROGRAMS += tests/test_npz
tests_test_npz_SOURCES = tests/test_npz.c
tests_test_npz_CFLAGS = $(HVQ_TEST_CFLAGS) $(ARCHIVE_CFLAGS)
tests_test_npz_LDADD = $(HVQ_TEST_LIBS) $(ARCHIVE_LIBS)
TESTS += tests/test_npz

EXTRA_DIST += tests/data/npz
