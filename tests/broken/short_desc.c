/* Broken on purpose: the descriptor declares a struct_size that ends before
 * the last field ABI 1 requires (as a plugin built against a truncated or
 * hand-edited header would). */
#include "broken.h"

#include <stddef.h>

static const hvq_plugin short_desc_plugin = {
    HVQ_ABI_VERSION, (uint32_t)offsetof(hvq_plugin, writer_open),
    .kinds = HVQ_KIND_CLUSTERER,
    .name = "short-desc",
    .version = "1.0.0",
    .summary = "test: struct_size shorter than the ABI 1 descriptor",
    .license = "MIT",
    .cluster_encode = broken_encode,
    .cluster_decode = broken_decode,
};

HVQ_REGISTER_PLUGIN(short_desc_plugin)
