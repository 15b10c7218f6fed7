/* Reading a model's metadata: see meta.h. */
#include "config.h"

#include "meta.h"

#include <stdio.h>
#include <string.h>

const char *hvq_meta_find(const hvq_meta *meta, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++)
        if (meta[i].key && strcmp(meta[i].key, key) == 0)
            return meta[i].value;
    return NULL;
}

const hvq_json_value *hvq_meta_typed(const hvq_meta *meta, size_t n, const char *key,
                                     hvq_json_doc **doc, const char **type, int *bad)
{
    const char *text = hvq_meta_find(meta, n, key);
    *doc = text ? hvq_json_parse(text, strlen(text), 0, NULL) : NULL;
    const hvq_json_value *root = *doc ? hvq_json_root(*doc) : NULL;
    const char *t = hvq_json_string(hvq_json_get(root, "gguf_type"), NULL);
    const hvq_json_value *v = t ? hvq_json_get(root, "value") : NULL;
    if (type)
        *type = t;
    if (bad)
        *bad = text && !v;
    return v;
}

int hvq_meta_string(const hvq_meta *meta, size_t n, const char *key, char *buf, size_t len)
{
    hvq_json_doc *doc;
    const hvq_json_value *v = hvq_meta_typed(meta, n, key, &doc, NULL, NULL);
    int ok = v && v->type == HVQ_JSON_STRING && v->len < len;
    if (len)
        snprintf(buf, len, "%s", ok ? v->str : "");
    hvq_json_free(doc);
    return ok;
}
