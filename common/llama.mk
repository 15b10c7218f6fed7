# The Llama forward pass shared by `hvqconv eval` (core) and the calibrate
# Hessian source, linked statically into each (users also link
# libhvqjson.la, which it uses). Compiled without contracting a*b+c into
# fused multiply-adds, so every kernel gives the same bits.
noinst_LTLIBRARIES += libhvqllama.la
libhvqllama_la_SOURCES = common/llama.c common/llama.h common/llama_tok.c common/llama_tok.h
libhvqllama_la_CPPFLAGS = $(PLUGIN_CPPFLAGS)
libhvqllama_la_CFLAGS = $(AM_CFLAGS) -ffp-contract=off
