# hessian "calibrate": Hessian diagonals from running the model being
# compressed over calibration tokens (through a model plugin, e.g.
# plugins/model-llama, reached with host->model_plugin), optionally saved
# as a llama.cpp imatrix GGUF.
plugin_LTLIBRARIES += plugins/hessian_calibrate.la
plugins_hessian_calibrate_la_SOURCES = plugins/hessian-calibrate/calibrate.c
plugins_hessian_calibrate_la_CPPFLAGS = $(PLUGIN_CPPFLAGS)
plugins_hessian_calibrate_la_LDFLAGS = $(PLUGIN_LDFLAGS)
plugins_hessian_calibrate_la_LIBADD = libhvqtokens.la libhvqjson.la -lm

# Its tests: agreement with llama.cpp's imatrix for the same text, save and
# read back, a pipeline end to end, `evaluate:` and compare's PPL column.
check_PROGRAMS += tests/test_calibrate
tests_test_calibrate_SOURCES = tests/test_calibrate.c plugins/model-llama/llama.c
tests_test_calibrate_CFLAGS = $(HVQ_TEST_CFLAGS) -I$(top_srcdir)/plugins/model-llama -ffp-contract=off
tests_test_calibrate_LDADD = $(HVQ_TEST_LIBS) libhvqjson.la -lm
TESTS += tests/test_calibrate
