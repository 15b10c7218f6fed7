# writer "hvq": the native compressed container (docs/FORMAT.md).
plugin_LTLIBRARIES += plugins/writer_hvq.la
plugins_writer_hvq_la_SOURCES = plugins/writer-hvq/hvq.c
plugins_writer_hvq_la_CPPFLAGS = $(PLUGIN_CPPFLAGS)
plugins_writer_hvq_la_LDFLAGS = $(PLUGIN_LDFLAGS)
plugins_writer_hvq_la_LIBADD = libhvqjson.la
