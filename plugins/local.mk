# The stage plugins: one folder each, one loadable module each.
plugin_LTLIBRARIES += \
	plugins/hessian_uniform.la \
	plugins/importance_magnitude.la \
	plugins/clusterer_rtn.la \
	plugins/residual_none.la \
	plugins/writer_dequant.la

PLUGIN_CPPFLAGS = -I$(top_srcdir)/core

plugins_hessian_uniform_la_SOURCES = plugins/hessian-uniform/uniform.c
plugins_hessian_uniform_la_LDFLAGS = $(PLUGIN_LDFLAGS)

plugins_importance_magnitude_la_SOURCES = plugins/importance-magnitude/magnitude.c
plugins_importance_magnitude_la_LDFLAGS = $(PLUGIN_LDFLAGS)
plugins_importance_magnitude_la_LIBADD = -lm

plugins_clusterer_rtn_la_SOURCES = plugins/clusterer-rtn/rtn.c
plugins_clusterer_rtn_la_LDFLAGS = $(PLUGIN_LDFLAGS)
plugins_clusterer_rtn_la_LIBADD = -lm

plugins_residual_none_la_SOURCES = plugins/residual-none/none.c
plugins_residual_none_la_LDFLAGS = $(PLUGIN_LDFLAGS)

plugins_writer_dequant_la_SOURCES = plugins/writer-dequant/dequant.c
plugins_writer_dequant_la_LDFLAGS = $(PLUGIN_LDFLAGS)
