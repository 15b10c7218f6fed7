/* Broken on purpose: a clusterer and a residual coder in one descriptor
 * (only source and sink may be combined). Every callback of both is set. */
#include "broken.h"

static const hvq_plugin two_kinds_plugin = {
    HVQ_PLUGIN_HEADER,
    .kinds = HVQ_KIND_CLUSTERER | HVQ_KIND_RESIDUAL,
    .name = "two-kinds",
    .version = "1.0.0",
    .summary = "test: clusterer and residual at once",
    .license = "MIT",
    .cluster_encode = broken_encode,
    .cluster_decode = broken_decode,
    .residual_count = broken_count,
    .residual_encode = broken_residual_encode,
    .residual_decode = broken_residual_decode,
};

HVQ_REGISTER_PLUGIN(two_kinds_plugin)
