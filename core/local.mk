# The core: host table, registry, pipelines, driver, report; and the CLI.
noinst_LTLIBRARIES += libhvqcore.la
libhvqcore_la_SOURCES = \
	include/hvqconv/plugin.h \
	core/ctx.c core/ctx.h core/ctx_int.h core/output.c core/shared.c core/sink.c \
	core/registry.c core/registry.h \
	core/params.c core/params.h \
	core/pipeline.c core/pipeline.h core/pipeline_int.h \
	core/pipeline_yaml.c core/pipeline_load.c core/pipeline_set.c \
	core/pipeline_check.c core/pipeline_emit.c core/pipeline_writer.c \
	core/dtype.c core/dtype.h \
	core/driver.c core/driver.h \
	core/alloc.c core/alloc.h \
	core/measure.c core/driver_int.h \
	core/report.c core/report.h \
	core/parallel.c core/parallel.h \
	core/util.c core/util.h \
	core/signals.c core/signals.h \
	core/cli.c core/cli.h
libhvqcore_la_CFLAGS = $(AM_CFLAGS) $(YAML_CFLAGS) $(ZLIB_CFLAGS)
libhvqcore_la_LIBADD = $(YAML_LIBS) $(ZLIB_LIBS)

bin_PROGRAMS += hvqconv
hvqconv_SOURCES = core/main.c
hvqconv_LDADD = libhvqcore.la

# The public contract, installed as <hvqconv/plugin.h>.
hvqconvincludedir = $(includedir)/hvqconv
hvqconvinclude_HEADERS = include/hvqconv/plugin.h
