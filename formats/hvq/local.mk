# The hvq container format (docs/FORMAT.md): the writer "hvq", which
# stores its files through the safetensors sink (streaming=true).
plugin_LTLIBRARIES += formats/hvq.la
formats_hvq_la_SOURCES = formats/hvq/writer.c
formats_hvq_la_CPPFLAGS = $(PLUGIN_CPPFLAGS)
formats_hvq_la_CFLAGS = $(AM_CFLAGS) $(ZLIB_CFLAGS)
formats_hvq_la_LDFLAGS = $(PLUGIN_LDFLAGS)
formats_hvq_la_LIBADD = libhvqjson.la $(ZLIB_LIBS)

# The source "hvq": reads containers for decode, inspect, verify, eval.
plugin_LTLIBRARIES += formats/hvq_reader.la
formats_hvq_reader_la_SOURCES = formats/hvq/reader.c
formats_hvq_reader_la_CPPFLAGS = $(PLUGIN_CPPFLAGS)
formats_hvq_reader_la_LDFLAGS = $(PLUGIN_LDFLAGS)
formats_hvq_reader_la_LIBADD = libhvqjson.la
