/* Broken on purpose: a name with a capital letter and a space. */
#include "broken.h"

static const hvq_plugin bad_name_plugin = {
    HVQ_PLUGIN_HEADER,
    .kinds = HVQ_KIND_CLUSTERER,
    .name = "Bad Name",
    .version = "1.0.0",
    .summary = "test: invalid plugin name",
    .license = "MIT",
    .cluster_encode = broken_encode,
    .cluster_decode = broken_decode,
};

HVQ_REGISTER_PLUGIN(bad_name_plugin)
