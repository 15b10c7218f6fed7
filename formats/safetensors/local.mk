# The safetensors source/sink plugin.
plugin_LTLIBRARIES += formats/safetensors.la
formats_safetensors_la_SOURCES = formats/safetensors/safetensors.c
formats_safetensors_la_CPPFLAGS = $(PLUGIN_CPPFLAGS)
formats_safetensors_la_LDFLAGS = $(PLUGIN_LDFLAGS)
formats_safetensors_la_LIBADD = libhvqjson.la
