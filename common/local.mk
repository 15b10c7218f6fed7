# Code shared by the core and plugins, linked statically into each.
noinst_LTLIBRARIES += libhvqjson.la
libhvqjson_la_SOURCES = common/json.c common/json.h common/buf.c common/buf.h \
	common/gptq.c common/gptq.h common/file.c common/file.h common/names.c common/names.h \
	common/meta.c common/meta.h
libhvqjson_la_CPPFLAGS = $(PLUGIN_CPPFLAGS)
EXTRA_DIST += common/checked.h common/f16.h common/f16_round.h common/col_gains.h common/finite.h
