/* The host's sinks (host->sink_open, sink_write, sink_finish,
 * sink_close): a sink plugin opened by format name or by the output's
 * extension, its options resolved like a stage's parameters, and every
 * check that does not depend on the format made here, once, for all of
 * them: the declared tensors (names present, UTF-8 and unique, shapes
 * that obey the shape rule, byte sizes that match typed dtypes), unique
 * metadata keys, and writes in the declared order, each with its data,
 * then a finish after all of them. A streaming sink (one with
 * sink_control) may be opened with no declarations: each write is then
 * checked as it comes (the same rules, and a name not written before). A
 * sink checks only what its format limits (name lengths, dimensions,
 * dtypes it can store). */
#include "config.h"

#include "ctx_int.h"
#include "dtype.h"
#include "json.h"
#include "params.h"
#include "registry.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct sink_decl {
    char *name;
    uint64_t nbytes;
} sink_decl;

struct hvq_sink_handle {
    const hvq_loaded_plugin *plugin;
    void *state;
    int finished, failed;
    hvq_value *values;  /* the sink's resolved parameters (instance lifetime) */
    char **texts;       /* copies of the option values the above point into */
    size_t n_values;
    char *path;         /* the output, for messages */
    sink_decl *decl;    /* the declared tensors, in write order; or, for a
                           streaming sink opened without declarations
                           (undeclared), the tensors written so far */
    size_t n_decl, next, cap;
    int undeclared;
    size_t *seen;       /* undeclared: a hash table of the names written,
                           1 + their index in decl (0: empty), at most half
                           full */
    size_t seen_cap;    /* a power of two (0: none yet) */
};

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A string of v[0..n) that occurs twice (v is sorted), or NULL. */
static const char *repeated(const char **v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_str);
    for (size_t i = 1; i < n; i++)
        if (strcmp(v[i], v[i - 1]) == 0)
            return v[i];
    return NULL;
}

/* One declared tensor: a name, a shape within the shape rule, and for a
 * dtype hvqconv knows, the byte size its shape needs. */
static hvq_status check_one(hvq_ctx *ctx, const char *path, const hvq_tensor_info *t, size_t i)
{
    uint64_t numel, bytes;
    if (!t->name || !t->name[0])
        return hvq_error(ctx, HVQ_E_INPUT, "%s: declared tensor %zu has no name", path, i);
    if (!hvq_json_utf8_valid(t->name, strlen(t->name)))
        return hvq_error(ctx, HVQ_E_INPUT, "%s: tensor name '%.200s' is not valid UTF-8",
                         path, t->name);
    for (int d = 0; d >= 0 && d < t->ndim && d < HVQ_MAX_DIMS; d++)
        if (t->shape[d] < 0)
            return hvq_error(ctx, HVQ_E_INPUT, "%s: tensor '%.200s': shape dimension %d is "
                             "negative (%lld)", path, t->name, d, (long long)t->shape[d]);
    if (t->ndim < 0 || t->ndim > HVQ_MAX_DIMS)
        return hvq_error(ctx, HVQ_E_INPUT, "%s: tensor '%.200s': %d dimensions (0..%d "
                         "allowed)", path, t->name, t->ndim, HVQ_MAX_DIMS);
    if (!hvq_shape_numel(t->ndim, t->shape, &numel))
        return hvq_error(ctx, HVQ_E_INPUT, "%s: tensor '%.200s': the non-zero dimensions of "
                         "its shape multiply past 63 bits", path, t->name);
    if (t->dtype == HVQ_DTYPE_OPAQUE)
        return HVQ_OK; /* its format knows its size */
    if (!hvq_mul_u64(numel, hvq_dtype_size(t->dtype), &bytes))
        return hvq_error(ctx, HVQ_E_INPUT, "%s: tensor '%.200s': its byte size does not fit "
                         "in 64 bits", path, t->name);
    if (bytes != t->nbytes) {
        char desc[HVQ_MAX_DIMS * 22 + 32];
        hvq_shape_text(desc, sizeof desc, hvq_dtype_name(t->dtype), t->ndim, t->shape);
        return hvq_error(ctx, HVQ_E_INPUT, "%s: tensor '%.200s': declared as %llu bytes but "
                         "%s needs %llu", path, t->name, (unsigned long long)t->nbytes, desc,
                         (unsigned long long)bytes);
    }
    return HVQ_OK;
}

/* Metadata entry i: a key and a value, both UTF-8. */
static hvq_status check_meta(hvq_ctx *ctx, const char *path, const hvq_meta *m, size_t i)
{
    if (!m->key || !m->value)
        return hvq_error(ctx, HVQ_E_INPUT, "%s: metadata entry %zu has no key or value", path,
                         i);
    if (!hvq_json_utf8_valid(m->key, strlen(m->key)) ||
        !hvq_json_utf8_valid(m->value, strlen(m->value)))
        return hvq_error(ctx, HVQ_E_INPUT, "%s: metadata entry '%.200s' is not valid UTF-8",
                         path, m->key);
    return HVQ_OK;
}

static hvq_status check_declared(hvq_ctx *ctx, const char *path, const hvq_meta *meta,
                                 size_t n_meta, const hvq_tensor_info *tensors, size_t n)
{
    if ((n > 0 && !tensors) || (n_meta > 0 && !meta))
        return hvq_error(ctx, HVQ_E_INTERNAL, "%s: no %s array", path,
                         n > 0 && !tensors ? "tensor declaration" : "metadata");
    for (size_t i = 0; i < n_meta; i++) {
        hvq_status st = check_meta(ctx, path, &meta[i], i);
        if (st != HVQ_OK)
            return st;
    }
    for (size_t i = 0; i < n; i++) {
        hvq_status st = check_one(ctx, path, &tensors[i], i);
        if (st != HVQ_OK)
            return st;
    }
    const char **v = hvq_calloc(ctx, (n > n_meta ? n : n_meta) + 1, sizeof *v);
    if (!v)
        return HVQ_E_NOMEM;
    for (size_t i = 0; i < n; i++)
        v[i] = tensors[i].name;
    const char *rep = repeated(v, n);
    hvq_status st = HVQ_OK;
    if (rep)
        st = hvq_error(ctx, HVQ_E_INPUT, "%s: tensor name '%.200s' is declared twice", path,
                       rep);
    for (size_t i = 0; st == HVQ_OK && i < n_meta; i++)
        v[i] = meta[i].key;
    if (st == HVQ_OK && (rep = repeated(v, n_meta)))
        st = hvq_error(ctx, HVQ_E_INPUT, "%s: metadata key '%.200s' is given twice", path, rep);
    free(v);
    return st;
}

/* The handle's own copy of the declaration, for the order checks. */
static hvq_status keep_declared(hvq_ctx *ctx, hvq_sink_handle *h, const char *path,
                                const hvq_tensor_info *tensors, size_t n)
{
    if (!(h->path = hvq_strdup(ctx, path)) ||
        !(h->decl = hvq_calloc(ctx, n ? n : 1, sizeof *h->decl)))
        return HVQ_E_NOMEM;
    for (; h->n_decl < n; h->n_decl++) {
        h->decl[h->n_decl].nbytes = tensors[h->n_decl].nbytes;
        if (!(h->decl[h->n_decl].name = hvq_strdup(ctx, tensors[h->n_decl].name)))
            return HVQ_E_NOMEM;
    }
    return HVQ_OK;
}

static void sink_handle_free(hvq_sink_handle *h)
{
    if (!h)
        return;
    for (size_t i = 0; i < h->n_values; i++)
        free(h->texts[i]);
    free(h->texts);
    free(h->values);
    for (size_t i = 0; i < h->n_decl; i++)
        free(h->decl[i].name);
    free(h->decl);
    free(h->seen);
    free(h->path);
    free(h);
}

/* Resolves the sink's declared parameters: defaults, then "key=value"
 * options. */
static hvq_status sink_params(hvq_ctx *ctx, hvq_sink_handle *h, const char *path,
                              const char *const *options)
{
    const hvq_plugin *d = &h->plugin->desc;
    size_t n = hvq_param_count(d->params);
    char why[512];
    h->n_values = n;
    h->values = hvq_calloc(ctx, n ? n : 1, sizeof *h->values);
    h->texts = hvq_calloc(ctx, n ? n : 1, sizeof *h->texts);
    if (!h->values || !h->texts)
        return HVQ_E_NOMEM;
    for (size_t i = 0; i < n; i++)
        if (hvq_param_parse(&d->params[i], d->params[i].default_value ? d->params[i].default_value
                                                                      : "",
                            &h->values[i], why, sizeof why) != HVQ_OK)
            return hvq_error(ctx, HVQ_E_INTERNAL, "output format '%s': the default of '%s' is "
                             "invalid: %s (a bug in the plugin)", d->name, d->params[i].name, why);
    for (size_t k = 0; options && options[k]; k++) {
        const char *eq = strchr(options[k], '=');
        size_t klen = eq ? (size_t)(eq - options[k]) : strlen(options[k]);
        long idx = -1;
        for (size_t i = 0; i < n; i++)
            if (strlen(d->params[i].name) == klen && strncmp(d->params[i].name, options[k], klen) == 0)
                idx = (long)i;
        if (!eq || idx < 0) {
            char key[128];
            const char *names[64];
            size_t nn = 0;
            snprintf(key, sizeof key, "%.*s", (int)klen, options[k]);
            for (size_t i = 0; i < n && nn < 64; i++)
                names[nn++] = d->params[i].name;
            const char *near = hvq_nearest(key, names, nn);
            return hvq_error(ctx, HVQ_E_INPUT, "%s: output format '%s' has no option '%s'%s%s%s",
                             path, d->name, key,
                             near ? "; did you mean '" : (n ? "" : " (it takes none)"),
                             near ? near : "", near ? "'?" : "");
        }
        free(h->texts[idx]);
        if (!(h->texts[idx] = hvq_strdup(ctx, eq + 1)))
            return HVQ_E_NOMEM;
        if (hvq_param_parse(&d->params[idx], h->texts[idx], &h->values[idx], why, sizeof why) !=
            HVQ_OK)
            return hvq_error(ctx, HVQ_E_INPUT, "%s: output format '%s': option '%s': %s", path,
                             d->name, d->params[idx].name, why);
        h->values[idx].is_default = 0;
    }
    return HVQ_OK;
}

hvq_sink_handle *hvq_sink_open_params(hvq_ctx *ctx, const char *format,
                                              const char *path, const char *const *options,
                                       const hvq_meta *meta, size_t n_meta,
                                       const hvq_tensor_info *tensors, size_t n)
{
    const hvq_registry *reg = priv(ctx)->registry;
    const hvq_loaded_plugin *pl;
    if (!reg) {
        hvq_error(ctx, HVQ_E_INTERNAL, "no plugin registry on this context");
        return NULL;
    }
    if (format && *format) {
        pl = hvq_registry_find(reg, HVQ_KIND_SINK, format);
        if (!pl) {
            const char *near = hvq_registry_suggest(reg, HVQ_KIND_SINK, format);
            hvq_error(ctx, HVQ_E_INPUT, "%s: no such output format '%s'%s%s%s", path, format,
                      near ? "; did you mean '" : "", near ? near : "", near ? "'?" : "");
            return NULL;
        }
    } else {
        pl = hvq_registry_sink_for(reg, ctx, path);
        if (!pl)
            return NULL;
    }
    hvq_sink_handle *h = hvq_calloc(ctx, 1, sizeof *h);
    if (!h)
        return NULL;
    h->plugin = pl;
    h->undeclared = n == 0 && pl->desc.sink_control != NULL;
    if (check_declared(ctx, path, meta, n_meta, tensors, n) != HVQ_OK ||
        keep_declared(ctx, h, path, tensors, n) != HVQ_OK ||
        sink_params(ctx, h, path, options) != HVQ_OK) {
        sink_handle_free(h);
        return NULL;
    }
    hvq_status st;
    if (pl->desc.sink_create_params) {
        hvq_params par = {h->n_values, h->values, pl->desc.params};
        st = pl->desc.sink_create_params(ctx, path, &par, meta, n_meta, tensors, n, &h->state);
    } else {
        st = pl->desc.sink_create(ctx, path, meta, n_meta, tensors, n, &h->state);
    }
    if (st != HVQ_OK) {
        pl->desc.sink_close(ctx, h->state);
        sink_handle_free(h);
        return NULL;
    }
    return h;
}

hvq_sink_handle *hvq_sink_open(hvq_ctx *ctx, const char *format, const char *path,
                               const hvq_meta *meta, size_t n_meta,
                               const hvq_tensor_info *tensors, size_t n)
{
    return hvq_sink_open_params(ctx, format, path, NULL, meta, n_meta, tensors, n);
}

/* ---- names a streaming sink has written ---------------------------------- */

static uint64_t name_hash(const char *s)
{
    uint64_t x = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++)
        x = (x ^ (unsigned char)*s) * 1099511628211ull;
    return x;
}

/* The slot of name in h->seen: its entry when it was written (non-zero),
 * else the empty slot it would take; NULL when the table is empty. */
static size_t *seen_find(const struct hvq_sink_handle *h, const char *name)
{
    if (!h->seen_cap)
        return NULL;
    size_t mask = h->seen_cap - 1, i = (size_t)name_hash(name) & mask;
    while (h->seen[i] && strcmp(h->decl[h->seen[i] - 1].name, name) != 0)
        i = (i + 1) & mask;
    return &h->seen[i];
}

/* name's entry when it was written, else NULL. */
static size_t *seen_slot(const struct hvq_sink_handle *h, const char *name)
{
    size_t *slot = seen_find(h, name);
    return slot && *slot ? slot : NULL;
}

/* Adds the last of h->decl (n_decl - 1) to the table, growing it first
 * when it would be more than half full. 0 when out of memory. */
static int seen_add(struct hvq_sink_handle *h)
{
    if (2 * h->n_decl > h->seen_cap) {
        size_t cap = h->seen_cap ? 2 * h->seen_cap : 128;
        size_t *grown = calloc(cap, sizeof *grown);
        if (!grown)
            return 0;
        free(h->seen);
        h->seen = grown;
        h->seen_cap = cap;
        for (size_t k = 0; k + 1 < h->n_decl; k++)
            *seen_find(h, h->decl[k].name) = k + 1;
    }
    *seen_find(h, h->decl[h->n_decl - 1].name) = h->n_decl;
    return 1;
}

/* A write to an undeclared (streaming) sink: a tensor as a declared one
 * would be, under a name not written before. */
static hvq_status check_streamed(hvq_ctx *ctx, hvq_sink_handle *h, const hvq_tensor *t)
{
    hvq_status st = check_one(ctx, h->path, &t->info, h->n_decl);
    if (st == HVQ_OK && seen_slot(h, t->info.name) != NULL)
        st = hvq_error(ctx, HVQ_E_INTERNAL, "%s: tensor '%.200s' is written twice",
                       h->path, t->info.name);
    if (st == HVQ_OK && !t->data && t->info.nbytes > 0)
        st = hvq_error(ctx, HVQ_E_INTERNAL, "%s: tensor '%.200s' has no data", h->path,
                       t->info.name);
    if (st == HVQ_OK && h->n_decl == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 64;
        sink_decl *d = realloc(h->decl, cap * sizeof *d);
        if (!d)
            return hvq_error(ctx, HVQ_E_NOMEM, "out of memory");
        h->decl = d;
        h->cap = cap;
    }
    if (st == HVQ_OK) {
        sink_decl *d = &h->decl[h->n_decl];
        if (!(d->name = hvq_strdup(ctx, t->info.name)))
            return HVQ_E_NOMEM;
        d->nbytes = t->info.nbytes;
        h->n_decl++;
        if (!seen_add(h))
            return hvq_error(ctx, HVQ_E_NOMEM, "out of memory");
    }
    return st;
}

hvq_status hvq_sink_write(hvq_ctx *ctx, hvq_sink_handle *h, const hvq_tensor *t)
{
    const char *name = t && t->info.name ? t->info.name : "(null)";
    if (h->failed)
        return hvq_error(ctx, HVQ_E_INTERNAL, "%s: write after an earlier write failed",
                         h->path);
    if (h->undeclared) {
        hvq_status st = check_streamed(ctx, h, t);
        if (st == HVQ_OK && (st = h->plugin->desc.sink_write(ctx, h->state, t)) == HVQ_OK)
            h->next++;
        h->failed = st != HVQ_OK;
        return st;
    }
    if (h->next >= h->n_decl)
        return hvq_error(ctx, HVQ_E_INTERNAL, "%s: tensor '%.200s' written, but all %zu "
                         "declared tensors were already written", h->path, name, h->n_decl);
    const sink_decl *want = &h->decl[h->next];
    if (!t || !t->info.name || strcmp(t->info.name, want->name) != 0 ||
        t->info.nbytes != want->nbytes)
        return hvq_error(ctx, HVQ_E_INTERNAL, "%s: expected tensor %zu of %zu to be '%.200s' "
                         "(%llu bytes), got '%.200s' (%llu bytes)", h->path, h->next + 1,
                         h->n_decl, want->name, (unsigned long long)want->nbytes, name,
                         (unsigned long long)(t ? t->info.nbytes : 0));
    if (!t->data && want->nbytes > 0)
        return hvq_error(ctx, HVQ_E_INTERNAL, "%s: tensor '%.200s' has no data", h->path,
                         want->name);
    hvq_status st = h->plugin->desc.sink_write(ctx, h->state, t);
    if (st != HVQ_OK)
        h->failed = 1;
    else
        h->next++;
    return st;
}

hvq_status hvq_sink_finish(hvq_ctx *ctx, hvq_sink_handle *h)
{
    if (h->failed)
        return hvq_error(ctx, HVQ_E_INTERNAL, "%s: finish after a failed write", h->path);
    if (!h->undeclared && h->next != h->n_decl)
        return hvq_error(ctx, HVQ_E_INTERNAL, "%s: only %zu of %zu declared tensors were "
                         "written (missing '%.200s')", h->path, h->next, h->n_decl,
                         h->decl[h->next].name);
    hvq_status st = h->plugin->desc.sink_finish(ctx, h->state);
    if (st == HVQ_OK)
        h->finished = 1;
    else
        h->failed = 1;
    return st;
}

/* A streaming sink's side channel (host->sink_control), passed on. */
hvq_status hvq_sink_pass_control(hvq_ctx *ctx, hvq_sink_handle *h, hvq_sink_control *c)
{
    if (!h->plugin->desc.sink_control)
        return hvq_error(ctx, HVQ_E_UNSUPPORTED, "output format '%s' does not stream (it has no "
                         "sink_control)", h->plugin->desc.name);
    return h->plugin->desc.sink_control(ctx, h->state, c);
}

void hvq_sink_close(hvq_ctx *ctx, hvq_sink_handle *h)
{
    if (!h)
        return;
    h->plugin->desc.sink_close(ctx, h->state);
    sink_handle_free(h);
}
