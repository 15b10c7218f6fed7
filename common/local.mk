# Code shared by the core and plugins, linked statically into each.
noinst_LTLIBRARIES += libhvqjson.la
libhvqjson_la_SOURCES = common/json.c common/json.h common/buf.c common/buf.h \
	common/gptq.c common/gptq.h common/file.c common/file.h common/names.c common/names.h \
	common/meta.c common/meta.h
libhvqjson_la_CPPFLAGS = $(PLUGIN_CPPFLAGS)
EXTRA_DIST += common/checked.h common/f16.h common/f16_round.h common/col_gains.h common/finite.h

# llama.cpp's block quantizers, bit-exact, and the native GGUF helpers
# (ggml_native.c): one copy linked into the ggml clusterer, the dequant
# writer, the model plugin and the core (decode and convert to block types:
# dtype conversion, a host service), so all write the same blocks.
# -ffp-contract=off: llama.cpp's reference build evaluates every multiply and
# add separately (no fused multiply-add), and identical bytes need the same.
noinst_LTLIBRARIES += libhvqggml.la
libhvqggml_la_SOURCES = common/ggml_quants.c common/ggml_kquants.c common/ggml_iquants.c \
	common/ggml_native.c common/ggml_native.h common/ggml_quants.h
libhvqggml_la_CPPFLAGS = $(PLUGIN_CPPFLAGS)
libhvqggml_la_CFLAGS = $(AM_CFLAGS) -ffp-contract=off
libhvqggml_la_LIBADD = -lm
