/* Broken on purpose: built for the next plugin ABI. Otherwise a complete
 * clusterer; the host must refuse it naming both ABI numbers. */
#include "broken.h"

static const hvq_plugin wrong_abi_plugin = {
    HVQ_ABI_VERSION + 1, (uint32_t)sizeof(hvq_plugin),
    .kinds = HVQ_KIND_CLUSTERER,
    .name = "wrong-abi",
    .version = "1.0.0",
    .summary = "test: descriptor stamped with another ABI version",
    .license = "MIT",
    .cluster_encode = broken_encode,
    .cluster_decode = broken_decode,
};

HVQ_REGISTER_PLUGIN(wrong_abi_plugin)
