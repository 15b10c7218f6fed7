/* A second clusterer named "rtn". Valid on its own; whichever of it and the
 * built-in rtn loads second is refused as a duplicate. It declares the
 * built-in's parameters (and ignores them) so that pipelines written for
 * rtn still validate when this one is loaded first, and reconstructs the
 * weights unchanged (it is a stand-in, not a quantizer). */
#include "broken.h"

static const char *const dup_modes[] = {"symmetric", "asymmetric", NULL};

static const hvq_param_spec dup_params[] = {
    {"group_size", HVQ_PARAM_INT, "0", 0, 1048576, NULL, "ignored"},
    {"mode", HVQ_PARAM_CHOICE, "symmetric", 0, 0, dup_modes, "ignored"},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

static const hvq_plugin dup_rtn_plugin = {
    HVQ_PLUGIN_HEADER,
    .kinds = HVQ_KIND_CLUSTERER,
    .flags = HVQ_CLUSTERER_RAW,
    .name = "rtn",
    .version = "0.0.1",
    .summary = "test: a second clusterer named rtn",
    .license = "MIT",
    .params = dup_params,
    .cluster_encode = broken_encode,
    .cluster_decode = broken_decode,
};

HVQ_REGISTER_PLUGIN(dup_rtn_plugin)
