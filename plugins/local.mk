# The stage plugins: one folder each, one loadable module each.
plugin_LTLIBRARIES += \
	plugins/hessian_uniform.la \
	plugins/importance_magnitude.la \
	plugins/clusterer_rtn.la \
	plugins/residual_none.la \
	plugins/writer_dequant.la


plugins_hessian_uniform_la_SOURCES = plugins/hessian-uniform/uniform.c
plugins_hessian_uniform_la_CPPFLAGS = $(PLUGIN_CPPFLAGS)
plugins_hessian_uniform_la_LDFLAGS = $(PLUGIN_LDFLAGS)

plugins_importance_magnitude_la_SOURCES = plugins/importance-magnitude/magnitude.c
plugins_importance_magnitude_la_CPPFLAGS = $(PLUGIN_CPPFLAGS)
plugins_importance_magnitude_la_LDFLAGS = $(PLUGIN_LDFLAGS)
plugins_importance_magnitude_la_LIBADD = -lm

plugins_clusterer_rtn_la_SOURCES = plugins/clusterer-rtn/rtn.c
plugins_clusterer_rtn_la_CPPFLAGS = $(PLUGIN_CPPFLAGS)
plugins_clusterer_rtn_la_LDFLAGS = $(PLUGIN_LDFLAGS)
plugins_clusterer_rtn_la_LIBADD = -lm

plugins_residual_none_la_SOURCES = plugins/residual-none/none.c
plugins_residual_none_la_CPPFLAGS = $(PLUGIN_CPPFLAGS)
plugins_residual_none_la_LDFLAGS = $(PLUGIN_LDFLAGS)

plugins_writer_dequant_la_SOURCES = plugins/writer-dequant/dequant.c
plugins_writer_dequant_la_CPPFLAGS = $(PLUGIN_CPPFLAGS)
plugins_writer_dequant_la_LDFLAGS = $(PLUGIN_LDFLAGS)
plugins_writer_dequant_la_LIBADD = libhvqggml.la

plugin_LTLIBRARIES += \
	plugins/importance_hasvq.la \
	plugins/importance_obd.la \
	plugins/residual_coo16.la

plugins_importance_hasvq_la_SOURCES = plugins/importance-hasvq/hasvq.c
plugins_importance_hasvq_la_CPPFLAGS = $(PLUGIN_CPPFLAGS)
plugins_importance_hasvq_la_LDFLAGS = $(PLUGIN_LDFLAGS)
plugins_importance_hasvq_la_LIBADD = -lm

plugins_importance_obd_la_SOURCES = plugins/importance-obd/obd.c
plugins_importance_obd_la_CPPFLAGS = $(PLUGIN_CPPFLAGS)
plugins_importance_obd_la_LDFLAGS = $(PLUGIN_LDFLAGS)

plugins_residual_coo16_la_SOURCES = plugins/residual-coo16/coo16.c plugins/sparse_residual.h
plugins_residual_coo16_la_CPPFLAGS = $(PLUGIN_CPPFLAGS)
plugins_residual_coo16_la_LDFLAGS = $(PLUGIN_LDFLAGS)
plugins_residual_coo16_la_LIBADD = -lm

plugin_LTLIBRARIES += plugins/hessian_file.la
plugins_hessian_file_la_SOURCES = plugins/hessian-file/file.c
plugins_hessian_file_la_CPPFLAGS = $(PLUGIN_CPPFLAGS)
plugins_hessian_file_la_LDFLAGS = $(PLUGIN_LDFLAGS)
plugins_hessian_file_la_LIBADD = libhvqjson.la -lm
