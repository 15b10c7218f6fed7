/* Broken on purpose: a clusterer without its mandatory cluster_decode. */
#include "broken.h"

static const hvq_plugin no_decode_plugin = {
    HVQ_PLUGIN_HEADER,
    .kinds = HVQ_KIND_CLUSTERER,
    .name = "no-decode",
    .version = "1.0.0",
    .summary = "test: clusterer lacking cluster_decode",
    .license = "MIT",
    .cluster_encode = broken_encode,
};

HVQ_REGISTER_PLUGIN(no_decode_plugin)
