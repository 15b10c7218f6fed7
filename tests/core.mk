# The core's own tests: the registry and the pieces under the driver
# (test_registry), the command-line program end to end (test_cli), the
# public header compiled as strict C99 and as C++11, and plugins broken on
# purpose for the loader.

# Plugins broken on purpose, one defect each, plus one good one (fp16).
# Real loadable modules (hence -rpath), never installed; libtool puts them
# all in tests/broken/.libs/, the directory the tests load.
HVQ_TEST_MODULE_LDFLAGS = -module -avoid-version -shared -no-undefined -rpath /nowhere

check_LTLIBRARIES += \
	tests/broken/wrong_abi.la \
	tests/broken/no_entry.la \
	tests/broken/null_entry.la \
	tests/broken/short_desc.la \
	tests/broken/bad_name.la \
	tests/broken/dup_rtn.la \
	tests/broken/no_decode.la \
	tests/broken/two_kinds.la \
	tests/broken/fp16.la \
	tests/broken/asym_h.la

tests_broken_wrong_abi_la_SOURCES = tests/broken/wrong_abi.c tests/broken/broken.h
tests_broken_wrong_abi_la_LDFLAGS = $(HVQ_TEST_MODULE_LDFLAGS)
tests_broken_no_entry_la_SOURCES = tests/broken/no_entry.c tests/broken/broken.h
tests_broken_no_entry_la_LDFLAGS = $(HVQ_TEST_MODULE_LDFLAGS)
tests_broken_null_entry_la_SOURCES = tests/broken/null_entry.c tests/broken/broken.h
tests_broken_null_entry_la_LDFLAGS = $(HVQ_TEST_MODULE_LDFLAGS)
tests_broken_short_desc_la_SOURCES = tests/broken/short_desc.c tests/broken/broken.h
tests_broken_short_desc_la_LDFLAGS = $(HVQ_TEST_MODULE_LDFLAGS)
tests_broken_asym_h_la_SOURCES = tests/broken/asym_h.c
tests_broken_asym_h_la_LDFLAGS = $(HVQ_TEST_MODULE_LDFLAGS)
tests_broken_bad_name_la_SOURCES = tests/broken/bad_name.c tests/broken/broken.h
tests_broken_bad_name_la_LDFLAGS = $(HVQ_TEST_MODULE_LDFLAGS)
tests_broken_dup_rtn_la_SOURCES = tests/broken/dup_rtn.c tests/broken/broken.h
tests_broken_dup_rtn_la_LDFLAGS = $(HVQ_TEST_MODULE_LDFLAGS)
tests_broken_no_decode_la_SOURCES = tests/broken/no_decode.c tests/broken/broken.h
tests_broken_no_decode_la_LDFLAGS = $(HVQ_TEST_MODULE_LDFLAGS)
tests_broken_two_kinds_la_SOURCES = tests/broken/two_kinds.c tests/broken/broken.h
tests_broken_two_kinds_la_LDFLAGS = $(HVQ_TEST_MODULE_LDFLAGS)
tests_broken_fp16_la_SOURCES = tests/broken/fp16.c
tests_broken_fp16_la_LDFLAGS = $(HVQ_TEST_MODULE_LDFLAGS)

# The public header, alone (no config.h, only -I include/hvqconv), as strict C99 and
# as C++11; each is a complete plugin that test_registry loads.
check_LTLIBRARIES += tests/header_c99.la tests/header_cxx.la
tests_header_c99_la_SOURCES = tests/header_c99.c
tests_header_c99_la_CPPFLAGS = -I$(top_srcdir)/include/hvqconv
tests_header_c99_la_CFLAGS = -std=c99 -pedantic -Werror -Wall -Wextra
tests_header_c99_la_LDFLAGS = $(HVQ_TEST_MODULE_LDFLAGS)
tests_header_cxx_la_SOURCES = tests/header_cxx.cc
tests_header_cxx_la_CPPFLAGS = -I$(top_srcdir)/include/hvqconv
tests_header_cxx_la_CXXFLAGS = -std=c++11 -pedantic -Werror -Wall
tests_header_cxx_la_LDFLAGS = $(HVQ_TEST_MODULE_LDFLAGS)

check_PROGRAMS += tests/test_registry tests/test_cli
tests_test_registry_SOURCES = tests/test_registry.c
tests_test_registry_CFLAGS = $(HVQ_TEST_CFLAGS)
tests_test_registry_LDADD = $(HVQ_TEST_LIBS)
tests_test_cli_SOURCES = tests/test_cli.c
tests_test_cli_CFLAGS = $(HVQ_TEST_CFLAGS)
tests_test_cli_LDADD = $(HVQ_TEST_LIBS)
TESTS += tests/test_registry tests/test_cli

EXTRA_DIST += tests/data/cli tests/data/nan

# Failures of the machine on demand (a failing rename, a shrinking input, a
# signal mid-run, no O_TMPFILE), preloaded into the binary by test_safety.
check_LTLIBRARIES += tests/fault/fault.la
tests_fault_fault_la_SOURCES = tests/fault/fault.c
tests_fault_fault_la_LDFLAGS = $(HVQ_TEST_MODULE_LDFLAGS)
tests_fault_fault_la_LIBADD = -ldl

# Nothing lost (issue 14): inputs never written, --force replacing only
# what hvqconv wrote, all-or-nothing commits, special and concurrent
# outputs, signals, an input shrinking under the run.
check_PROGRAMS += tests/test_safety
tests_test_safety_SOURCES = tests/test_safety.c
tests_test_safety_CFLAGS = $(HVQ_TEST_CFLAGS)
tests_test_safety_LDADD = $(HVQ_TEST_LIBS)
TESTS += tests/test_safety
