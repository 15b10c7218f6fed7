/* Broken on purpose: the entry point returns NULL. */
#include "broken.h"

HVQ_EXPORT const hvq_plugin *hvq_plugin_entry(void);
HVQ_EXPORT const hvq_plugin *hvq_plugin_entry(void) { return NULL; }
