# clusterer "kmeans": the paper's k-means vector quantization, and its tests.
# -ffp-contract=off: every assignment kernel must evaluate the distance with
# separate multiplies and adds, exactly like the scalar reference.

# The core (kmeans_core.h), compiled into the plugin and into its test.
KMEANS_CORE_SOURCES = \
	plugins/clusterer-kmeans/kmeans_core.h \
	plugins/clusterer-kmeans/km_private.h \
	plugins/clusterer-kmeans/km_rng.c \
	plugins/clusterer-kmeans/km_pack.c \
	plugins/clusterer-kmeans/km_index.c \
	plugins/clusterer-kmeans/km_kernels.c \
	plugins/clusterer-kmeans/km_nbrs.c \
	plugins/clusterer-kmeans/km_guided.c \
	plugins/clusterer-kmeans/km_train.c \
	plugins/clusterer-kmeans/km_encode.c \
	plugins/clusterer-kmeans/km_decode.c
plugin_LTLIBRARIES += plugins/clusterer_kmeans.la
plugins_clusterer_kmeans_la_SOURCES = \
	plugins/clusterer-kmeans/kmeans.c \
	plugins/clusterer-kmeans/kmeans_gain.c \
	plugins/clusterer-kmeans/kmeans_gain.h \
	plugins/clusterer-kmeans/kmeans_gptq.c \
	plugins/clusterer-kmeans/kmeans_gptq.h \
	$(KMEANS_CORE_SOURCES)
plugins_clusterer_kmeans_la_CPPFLAGS = $(PLUGIN_CPPFLAGS)
plugins_clusterer_kmeans_la_CFLAGS = $(AM_CFLAGS) -ffp-contract=off
plugins_clusterer_kmeans_la_LDFLAGS = $(PLUGIN_LDFLAGS)
plugins_clusterer_kmeans_la_LIBADD = libhvqjson.la -lm

check_PROGRAMS += tests/test_kmeans
tests_test_kmeans_SOURCES = tests/test_kmeans.c \
	$(KMEANS_CORE_SOURCES)
tests_test_kmeans_CFLAGS = $(HVQ_TEST_CFLAGS) -ffp-contract=off \
	-I$(top_srcdir)/plugins/clusterer-kmeans
tests_test_kmeans_LDADD = $(HVQ_TEST_LIBS) -lm
TESTS += tests/test_kmeans

