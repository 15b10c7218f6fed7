# clusterer "ecsq": entropy-coded scalar quantization, and its tests.
# libhvqjson.la: common/gptq.c (GPTQ error feedback).
plugin_LTLIBRARIES += plugins/clusterer_ecsq.la
plugins_clusterer_ecsq_la_SOURCES = \
	plugins/clusterer-ecsq/ecsq.c \
	plugins/clusterer-ecsq/ecsq_code.c \
	plugins/clusterer-ecsq/ecsq_code.h \
	plugins/clusterer-ecsq/ecsq_quant.c \
	plugins/clusterer-ecsq/ecsq_quant.h
plugins_clusterer_ecsq_la_CPPFLAGS = $(PLUGIN_CPPFLAGS)

# Besides the plugin's entry, hvq_ecsq_decode_f32 (ecsq_code.h), the one
# function python/hvqconv.py calls through ctypes to decode the streams.
plugins_clusterer_ecsq_la_LDFLAGS = -module -avoid-version -shared -no-undefined \
	-export-symbols-regex '^hvq_(plugin_entry|ecsq_decode_f32)$$'
plugins_clusterer_ecsq_la_LIBADD = libhvqjson.la -lm

# The code against a bit-level reference and corrupt streams, the quantizer
# against scalar references, the plugin through the real binary.
check_PROGRAMS += tests/test_ecsq
tests_test_ecsq_SOURCES = tests/test_ecsq.c tests/full_hessian.c tests/full_hessian.h \
	plugins/clusterer-ecsq/ecsq_code.c \
	plugins/clusterer-ecsq/ecsq_code.h \
	plugins/clusterer-ecsq/ecsq_quant.c \
	plugins/clusterer-ecsq/ecsq_quant.h
tests_test_ecsq_CFLAGS = $(HVQ_TEST_CFLAGS) -I$(top_srcdir)/plugins/clusterer-ecsq
tests_test_ecsq_LDADD = $(HVQ_TEST_LIBS) libhvqjson.la -lm
TESTS += tests/test_ecsq
