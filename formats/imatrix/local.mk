# The source format for llama.cpp's legacy importance matrix (.dat).
plugin_LTLIBRARIES += formats/imatrix_dat.la
formats_imatrix_dat_la_SOURCES = formats/imatrix/imatrix_dat.c
formats_imatrix_dat_la_CPPFLAGS = $(PLUGIN_CPPFLAGS)
formats_imatrix_dat_la_LDFLAGS = $(PLUGIN_LDFLAGS)
formats_imatrix_dat_la_LIBADD = libhvqjson.la
