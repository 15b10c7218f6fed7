/* Reading a model's metadata (hvq_meta: key and value text; a GGUF
 * source gives each value as typed JSON, {"gguf_type": "string", "value":
 * ...}): one lookup for the core and plugins. Linked into both
 * (libhvqjson). */
#ifndef HVQ_COMMON_META_H
#define HVQ_COMMON_META_H

#include <stddef.h>

#include "json.h"
#include "plugin.h"

/* The value text of the first entry named key, or NULL. */
const char *hvq_meta_find(const hvq_meta *meta, size_t n, const char *key);

/* The "value" of the typed entry key, parsed into *doc (free it with
 * hvq_json_free, also when NULL is returned); *type (when type is not NULL)
 * its "gguf_type". NULL when there is no such entry or it is not a typed
 * value (*bad is then 1, when bad is not NULL). */
const hvq_json_value *hvq_meta_typed(const hvq_meta *meta, size_t n, const char *key,
                                     hvq_json_doc **doc, const char **type, int *bad);

/* The typed string entry key into buf: 1, or 0 (buf "") when it is
 * absent, not a string or not shorter than len. */
int hvq_meta_string(const hvq_meta *meta, size_t n, const char *key, char *buf, size_t len);

#endif
