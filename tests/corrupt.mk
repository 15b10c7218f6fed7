# Corrupt inputs for every reader, failed writes (RLIMIT_FSIZE), byte-identical
# reruns and `hvqconv verify`, through the real binary.
check_PROGRAMS += tests/test_corrupt
tests_test_corrupt_SOURCES = tests/test_corrupt.c
tests_test_corrupt_CFLAGS = $(HVQ_TEST_CFLAGS)
tests_test_corrupt_LDADD = $(HVQ_TEST_LIBS)
TESTS += tests/test_corrupt
EXTRA_DIST += tests/data/claims
