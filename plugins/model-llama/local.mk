# model "llama": the Llama-family forward pass, its SentencePiece
# tokenizer and the mapping between Hugging Face and llama.cpp (GGUF)
# layouts, as a model plugin (HVQ_KIND_MODEL) that `hvqconv eval`,
# `hvqconv convert` and the calibrate Hessian source open through
# host->model_plugin. Compiled
# without contracting a*b+c into fused multiply-adds, so every kernel gives
# the same bits.
plugin_LTLIBRARIES += plugins/model_llama.la
plugins_model_llama_la_SOURCES = plugins/model-llama/model.c \
	plugins/model-llama/llama.c plugins/model-llama/llama.h \
	plugins/model-llama/llama_tok.c plugins/model-llama/llama_tok.h \
	plugins/model-llama/convert.c plugins/model-llama/convert.h \
	plugins/model-llama/convert_plugin.c plugins/model-llama/tok_gguf.c
plugins_model_llama_la_CPPFLAGS = $(PLUGIN_CPPFLAGS)
plugins_model_llama_la_CFLAGS = $(AM_CFLAGS) -ffp-contract=off
plugins_model_llama_la_LDFLAGS = $(PLUGIN_LDFLAGS)
plugins_model_llama_la_LIBADD = libhvqggml.la libhvqjson.la -lm
