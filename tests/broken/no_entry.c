/* Broken on purpose: a complete descriptor, but the exported function has
 * the wrong name, so the host finds no hvq_plugin_entry. */
#include "broken.h"

static const hvq_plugin no_entry_plugin = {
    HVQ_PLUGIN_HEADER,
    .kinds = HVQ_KIND_CLUSTERER,
    .name = "no-entry",
    .version = "1.0.0",
    .summary = "test: exports hvq_plugin_entry_v2 instead of hvq_plugin_entry",
    .license = "MIT",
    .cluster_encode = broken_encode,
    .cluster_decode = broken_decode,
};

HVQ_EXPORT const hvq_plugin *hvq_plugin_entry_v2(void);
HVQ_EXPORT const hvq_plugin *hvq_plugin_entry_v2(void) { return &no_entry_plugin; }
