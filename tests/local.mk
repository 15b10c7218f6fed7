# Test infrastructure and the core's own tests.
check_LTLIBRARIES += tests/libharness.la
tests_libharness_la_SOURCES = tests/harness.c tests/harness.h tests/stage.c tests/stage.h
tests_libharness_la_CFLAGS = $(AM_CFLAGS) $(CHECK_CFLAGS)

HVQ_TEST_LIBS = tests/libharness.la libhvqcore.la $(CHECK_LIBS)
HVQ_TEST_CFLAGS = $(AM_CFLAGS) $(CHECK_CFLAGS) -I$(top_srcdir)/tests

# The small stage plugins against scalar reference code.
check_PROGRAMS += tests/test_stages
tests_test_stages_SOURCES = tests/test_stages.c
tests_test_stages_CFLAGS = $(HVQ_TEST_CFLAGS)
tests_test_stages_LDADD = $(HVQ_TEST_LIBS)
TESTS += tests/test_stages

# HAS-VQ through the driver: accounting, sparse precision, a real model.
check_PROGRAMS += tests/test_hasvq
tests_test_hasvq_SOURCES = tests/test_hasvq.c
tests_test_hasvq_CFLAGS = $(HVQ_TEST_CFLAGS)
tests_test_hasvq_LDADD = $(HVQ_TEST_LIBS)
TESTS += tests/test_hasvq

# The parallel paths give the same bytes and figures for any thread count;
# hvq_top_k against a reference at large n.
check_PROGRAMS += tests/test_speed_determinism
tests_test_speed_determinism_SOURCES = tests/test_speed_determinism.c
tests_test_speed_determinism_CFLAGS = $(HVQ_TEST_CFLAGS)
tests_test_speed_determinism_LDADD = $(HVQ_TEST_LIBS) -lm
TESTS += tests/test_speed_determinism

# The allocator (--target-bpw): the solver against brute force, the
# pipeline keys target: and candidates:, the binary on the demo model.
check_PROGRAMS += tests/test_alloc
tests_test_alloc_SOURCES = tests/test_alloc.c
tests_test_alloc_CFLAGS = $(HVQ_TEST_CFLAGS)
tests_test_alloc_LDADD = $(HVQ_TEST_LIBS) -lm
TESTS += tests/test_alloc
EXTRA_DIST += tests/data/alloc

# The paper's pipelines decode to the weights they gave when first landed.
check_PROGRAMS += tests/test_repro
tests_test_repro_SOURCES = tests/test_repro.c
tests_test_repro_CFLAGS = $(HVQ_TEST_CFLAGS)
tests_test_repro_LDADD = $(HVQ_TEST_LIBS)
TESTS += tests/test_repro

# The hessian plugin "file" in the stage harness.
check_PROGRAMS += tests/test_hessian_file
tests_test_hessian_file_SOURCES = tests/test_hessian_file.c
tests_test_hessian_file_CFLAGS = $(HVQ_TEST_CFLAGS)
tests_test_hessian_file_LDADD = $(HVQ_TEST_LIBS)
TESTS += tests/test_hessian_file

# The writer plugin "dequant" in the stage harness.
check_PROGRAMS += tests/test_writer_dequant
tests_test_writer_dequant_SOURCES = tests/test_writer_dequant.c
tests_test_writer_dequant_CFLAGS = $(HVQ_TEST_CFLAGS)
tests_test_writer_dequant_LDADD = $(HVQ_TEST_LIBS) -lm
TESTS += tests/test_writer_dequant

# One test file per small stage plugin, in the stage harness.
check_PROGRAMS += tests/test_rtn tests/test_coo16 tests/test_magnitude tests/test_obd \
	tests/test_uniform tests/test_none
tests_test_rtn_SOURCES = tests/test_rtn.c
tests_test_rtn_CFLAGS = $(HVQ_TEST_CFLAGS)
tests_test_rtn_LDADD = $(HVQ_TEST_LIBS) -lm
tests_test_coo16_SOURCES = tests/test_coo16.c
tests_test_coo16_CFLAGS = $(HVQ_TEST_CFLAGS)
tests_test_coo16_LDADD = $(HVQ_TEST_LIBS) -lm
tests_test_magnitude_SOURCES = tests/test_magnitude.c
tests_test_magnitude_CFLAGS = $(HVQ_TEST_CFLAGS)
tests_test_magnitude_LDADD = $(HVQ_TEST_LIBS) -lm
tests_test_obd_SOURCES = tests/test_obd.c
tests_test_obd_CFLAGS = $(HVQ_TEST_CFLAGS)
tests_test_obd_LDADD = $(HVQ_TEST_LIBS)
tests_test_uniform_SOURCES = tests/test_uniform.c
tests_test_uniform_CFLAGS = $(HVQ_TEST_CFLAGS)
tests_test_uniform_LDADD = $(HVQ_TEST_LIBS)
tests_test_none_SOURCES = tests/test_none.c
tests_test_none_CFLAGS = $(HVQ_TEST_CFLAGS)
tests_test_none_LDADD = $(HVQ_TEST_LIBS)
TESTS += tests/test_rtn tests/test_coo16 tests/test_magnitude tests/test_obd \
	tests/test_uniform tests/test_none

# The architecture's boundary: plugins, formats and common/ cannot reach a
# core header; the core has no model code.
dist_check_SCRIPTS = tests/boundary.sh
TESTS += tests/boundary.sh

# llama.cpp's block types written natively into GGUF (the dequant writer
# and decode --dtype q8_0), through the real binary on the demo model.
check_PROGRAMS += tests/test_gguf_native
tests_test_gguf_native_SOURCES = tests/test_gguf_native.c
tests_test_gguf_native_CFLAGS = $(HVQ_TEST_CFLAGS)
tests_test_gguf_native_LDADD = $(HVQ_TEST_LIBS)
TESTS += tests/test_gguf_native

# python/hvqconv.py against hvqconv decode, bit for bit, on every pipeline
# and encoding; bad input. Skipped without python3 and numpy.
dist_check_SCRIPTS += tests/pyload.sh
TESTS += tests/pyload.sh
EXTRA_DIST += tests/pyload_check.py
