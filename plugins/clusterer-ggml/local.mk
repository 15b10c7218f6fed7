# clusterer "ggml": llama.cpp's block quantizers, bit-exact, and their tests.
# -ffp-contract=off: llama.cpp's reference build evaluates every multiply and
# add separately (no fused multiply-add), and identical bytes need the same.
# libhvqjson.la: common/gptq.c (GPTQ error feedback); libhvqggml.la: the
# quantizers themselves (common/ggml_*.c).
plugin_LTLIBRARIES += plugins/clusterer_ggml.la
plugins_clusterer_ggml_la_SOURCES = \
	plugins/clusterer-ggml/ggml.c \
	plugins/clusterer-ggml/ggml_gptq.c \
	plugins/clusterer-ggml/ggml_gptq.h
plugins_clusterer_ggml_la_CPPFLAGS = $(PLUGIN_CPPFLAGS)
plugins_clusterer_ggml_la_CFLAGS = $(AM_CFLAGS) -ffp-contract=off
plugins_clusterer_ggml_la_LDFLAGS = $(PLUGIN_LDFLAGS)
plugins_clusterer_ggml_la_LIBADD = libhvqggml.la libhvqjson.la -lm

check_PROGRAMS += tests/test_ggml
tests_test_ggml_SOURCES = tests/test_ggml.c
tests_test_ggml_CFLAGS = $(HVQ_TEST_CFLAGS) -ffp-contract=off
tests_test_ggml_LDADD = $(HVQ_TEST_LIBS) -lm
TESTS += tests/test_ggml
EXTRA_DIST += tests/data/ggml

# error feedback (common/gptq.c, ggml_gptq.c, kmeans_gptq.c) against
# references written from the definition
check_PROGRAMS += tests/test_gptq
tests_test_gptq_SOURCES = tests/test_gptq.c tests/full_hessian.c tests/full_hessian.h \
	common/ggml_quants.c common/ggml_kquants.c common/ggml_iquants.c
tests_test_gptq_CFLAGS = $(HVQ_TEST_CFLAGS) -ffp-contract=off -I$(top_srcdir)/common \
	-I$(top_srcdir)/plugins/clusterer-ggml
tests_test_gptq_LDADD = $(HVQ_TEST_LIBS) libhvqjson.la -lm
TESTS += tests/test_gptq
