/* The host side of a context: the function table handed to plugins, the
 * error message, logging, and atomic outputs. */
#include "config.h"

#include "ctx_int.h"
#include "driver.h"
#include "dtype.h"
#include "params.h"
#include "registry.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct hvq_sink_handle {
    const hvq_loaded_plugin *plugin;
    void *state;
    int finished;
    hvq_value *values;  /* the sink's resolved parameters (instance lifetime) */
    char **texts;       /* copies of the option values the above point into */
    size_t n_values;
};

/* ---- errors and logging ------------------------------------------------ */

/* The message formatted whole (malloc'd), or NULL. */
static char *vformat(const char *fmt, va_list ap)
{
    va_list aq;
    va_copy(aq, ap);
    int n = vsnprintf(NULL, 0, fmt, aq);
    va_end(aq);
    char *s = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (s)
        vsnprintf(s, (size_t)n + 1, fmt, ap);
    return s;
}

/* A message longer than the buffer (a path of thousands of bytes) keeps
 * its start and its end, where the reason is. */
static hvq_status verror(hvq_ctx *ctx, hvq_status st, const char *fmt, va_list ap)
{
    ctx_private *p = priv(ctx);
    char *full = vformat(fmt, ap);
    size_t n = full ? strlen(full) : 0, cap = sizeof p->msg;
    if (!full)
        snprintf(p->msg, cap, "%s (the message could not be formatted)", fmt);
    else if (n < cap)
        memcpy(p->msg, full, n + 1);
    else
        snprintf(p->msg, cap, "%.*s ... %s", (int)(cap / 4), full, full + n - (cap / 2));
    free(full);
    p->status = st;
    return st;
}

static hvq_status host_error(hvq_ctx *ctx, hvq_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    verror(ctx, st, fmt, ap);
    va_end(ap);
    return st;
}

hvq_status hvq_error(hvq_ctx *ctx, hvq_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    verror(ctx, st, fmt, ap);
    va_end(ap);
    return st;
}

void hvq_error_prefix(hvq_ctx *ctx, const char *fmt, ...)
{
    ctx_private *p = priv(ctx);
    char pre[1024], old[sizeof p->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pre, sizeof pre, fmt, ap);
    va_end(ap);
    memcpy(old, p->msg, sizeof old);
    size_t n = strlen(pre);
    if (n + 2 >= sizeof p->msg)
        n = sizeof p->msg - 3;
    memcpy(p->msg, pre, n);
    memcpy(p->msg + n, ": ", 2);
    size_t rest = sizeof p->msg - n - 3;
    size_t m = strlen(old);
    if (m > rest)
        m = rest;
    memcpy(p->msg + n + 2, old, m);
    p->msg[n + 2 + m] = '\0';
}

const char *hvq_ctx_error(const hvq_ctx *ctx) { return priv(ctx)->msg; }
hvq_status hvq_ctx_status(hvq_ctx *ctx) { return priv(ctx)->status; }
const hvq_ctx_opts *hvq_ctx_options(const hvq_ctx *ctx) { return &priv(ctx)->opts; }

void hvq_ctx_clear_error(hvq_ctx *ctx)
{
    priv(ctx)->msg[0] = '\0';
    priv(ctx)->status = HVQ_OK;
}

void hvq_ctx_set_registry(hvq_ctx *ctx, const hvq_registry *reg) { priv(ctx)->registry = reg; }
const hvq_registry *hvq_ctx_registry(const hvq_ctx *ctx) { return priv(ctx)->registry; }

void hvq_ctx_line_dirty(hvq_ctx *ctx, int dirty) { priv(ctx)->line_dirty = dirty; }

static void vlog(hvq_ctx *ctx, hvq_log_level lvl, const char *fmt, va_list ap)
{
    ctx_private *p = priv(ctx);
    if (lvl == HVQ_LOG_INFO && p->opts.quiet)
        return;
    if (lvl == HVQ_LOG_DEBUG && !p->opts.verbose)
        return;
    if (p->line_dirty) {
        fputs("\r\033[K", stderr);
        p->line_dirty = 0;
    }
    static const char *const tag[] = {"error: ", "warning: ", "", "debug: "};
    char *msg = vformat(fmt, ap), buf[8192];
    fprintf(stderr, "hvqconv: %s%s\n", tag[lvl <= HVQ_LOG_DEBUG ? lvl : 3],
            msg ? hvq_printable(msg, buf, sizeof buf) : fmt);
    free(msg);
}

void hvq_ctx_print_error(hvq_ctx *ctx) { hvq_log(ctx, HVQ_LOG_ERROR, "%s", priv(ctx)->msg); }

static void host_log(hvq_ctx *ctx, hvq_log_level lvl, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(ctx, lvl, fmt, ap);
    va_end(ap);
}

void hvq_log(hvq_ctx *ctx, hvq_log_level lvl, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(ctx, lvl, fmt, ap);
    va_end(ap);
}

static void host_progress(hvq_ctx *ctx, uint64_t done, uint64_t total)
{
    (void)ctx; (void)done; (void)total; /* the driver shows per-tensor progress */
}

static int host_threads(hvq_ctx *ctx) { return priv(ctx)->opts.threads > 0 ? priv(ctx)->opts.threads : 1; }

/* ---- memory ------------------------------------------------------------ */

void *hvq_alloc(hvq_ctx *ctx, size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p && ctx)
        hvq_error(ctx, HVQ_E_NOMEM, "out of memory (allocating %zu bytes)", n);
    return p;
}

void *hvq_calloc(hvq_ctx *ctx, size_t count, size_t size)
{
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p && ctx)
        hvq_error(ctx, HVQ_E_NOMEM, "out of memory (allocating %zu x %zu bytes)",
                  count, size);
    return p;
}

static void *host_realloc(hvq_ctx *ctx, void *old, size_t n)
{
    void *p = realloc(old, n ? n : 1);
    if (!p && ctx)
        hvq_error(ctx, HVQ_E_NOMEM, "out of memory (allocating %zu bytes)", n);
    return p;
}

static void host_free(void *p) { free(p); }

char *hvq_strdup(hvq_ctx *ctx, const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = hvq_alloc(ctx, n);
    if (d)
        memcpy(d, s, n);
    return d;
}

/* ---- sinks for writers ------------------------------------------------- */

static void sink_handle_free(hvq_sink_handle *h)
{
    if (!h)
        return;
    for (size_t i = 0; i < h->n_values; i++)
        free(h->texts[i]);
    free(h->texts);
    free(h->values);
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

static hvq_sink_handle *host_sink_open_params(hvq_ctx *ctx, const char *format,
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
    if (sink_params(ctx, h, path, options) != HVQ_OK) {
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

static hvq_sink_handle *host_sink_open(hvq_ctx *ctx, const char *format, const char *path,
                                       const hvq_meta *meta, size_t n_meta,
                                       const hvq_tensor_info *tensors, size_t n)
{
    return host_sink_open_params(ctx, format, path, NULL, meta, n_meta, tensors, n);
}

static hvq_status host_sink_write(hvq_ctx *ctx, hvq_sink_handle *h, const hvq_tensor *t)
{
    return h->plugin->desc.sink_write(ctx, h->state, t);
}

static hvq_status host_sink_control(hvq_ctx *ctx, hvq_sink_handle *h, hvq_sink_control *c)
{
    if (!h->plugin->desc.sink_control)
        return hvq_error(ctx, HVQ_E_UNSUPPORTED, "output format '%s' does not stream (it has no "
                         "sink_control)", h->plugin->desc.name);
    return h->plugin->desc.sink_control(ctx, h->state, c);
}

static hvq_status host_sink_finish(hvq_ctx *ctx, hvq_sink_handle *h)
{
    hvq_status st = h->plugin->desc.sink_finish(ctx, h->state);
    if (st == HVQ_OK)
        h->finished = 1;
    return st;
}

static void host_sink_close(hvq_ctx *ctx, hvq_sink_handle *h)
{
    (void)ctx;
    if (!h)
        return;
    h->plugin->desc.sink_close(ctx, h->state);
    sink_handle_free(h);
}

/* ---- encoded components ------------------------------------------------ */

void hvq_encoded_init(hvq_encoded *enc) { memset(enc, 0, sizeof *enc); }

void hvq_encoded_clear(hvq_encoded *enc)
{
    for (size_t i = 0; i < enc->n_components; i++)
        free(enc->components[i].data);
    for (size_t i = 0; i < enc->n_attrs; i++) {
        free((char *)enc->attrs[i].key);
        free((char *)enc->attrs[i].value);
    }
    free(enc->components);
    free(enc->attrs);
    memset(enc, 0, sizeof *enc);
}

/* enc_add, with zeroed data of the component's size when alloc, with
 * data NULL otherwise (a layout for cluster_check). */
static hvq_component *enc_add(hvq_ctx *ctx, hvq_encoded *enc, const char *name,
                              hvq_dtype dtype, int ndim, const int64_t *shape,
                              uint64_t paper_bits, int alloc)
{
    if (!name || strlen(name) >= sizeof enc->components[0].name || ndim < 0 ||
        ndim > HVQ_MAX_DIMS || hvq_dtype_size(dtype) == 0) {
        hvq_error(ctx, HVQ_E_INTERNAL, "invalid component '%s'", name ? name : "(null)");
        return NULL;
    }
    for (size_t i = 0; i < enc->n_components; i++)
        if (strcmp(enc->components[i].name, name) == 0) {
            hvq_error(ctx, HVQ_E_INTERNAL, "component '%s' added twice", name);
            return NULL;
        }
    uint64_t nbytes = hvq_dtype_size(dtype);
    for (int d = 0; d < ndim; d++)
        if (shape[d] < 0 || !hvq_mul_u64(nbytes, (uint64_t)shape[d], &nbytes)) {
            hvq_error(ctx, HVQ_E_INTERNAL, "component '%s': bad shape", name);
            return NULL;
        }
    if (nbytes > SIZE_MAX) {
        hvq_error(ctx, HVQ_E_NOMEM, "component '%s' too large", name);
        return NULL;
    }
    if (enc->n_components == enc->cap_components) {
        size_t cap = enc->cap_components ? enc->cap_components * 2 : 4;
        hvq_component *c = host_realloc(ctx, enc->components, cap * sizeof *c);
        if (!c)
            return NULL;
        enc->components = c;
        enc->cap_components = cap;
    }
    void *data = alloc ? hvq_calloc(ctx, 1, (size_t)nbytes) : NULL;
    if (alloc && !data)
        return NULL;
    hvq_component *c = &enc->components[enc->n_components++];
    memset(c, 0, sizeof *c);
    snprintf(c->name, sizeof c->name, "%s", name);
    c->dtype = dtype;
    c->ndim = ndim;
    for (int d = 0; d < ndim; d++)
        c->shape[d] = shape[d];
    c->data = data;
    c->nbytes = nbytes;
    c->paper_bits = paper_bits;
    return c;
}

static hvq_component *host_enc_add(hvq_ctx *ctx, hvq_encoded *enc, const char *name,
                                   hvq_dtype dtype, int ndim, const int64_t *shape,
                                   uint64_t paper_bits)
{
    return enc_add(ctx, enc, name, dtype, ndim, shape, paper_bits, 1);
}

hvq_status hvq_encoded_add_layout(hvq_ctx *ctx, hvq_encoded *enc, const char *name,
                                  hvq_dtype dtype, int ndim, const int64_t *shape)
{
    if (enc_add(ctx, enc, name, dtype, ndim, shape, 0, 0))
        return HVQ_OK;
    return hvq_ctx_status(ctx) ? hvq_ctx_status(ctx) : HVQ_E_NOMEM;
}

static hvq_status host_enc_attr(hvq_ctx *ctx, hvq_encoded *enc, const char *key,
                                const char *value)
{
    for (size_t i = 0; i < enc->n_attrs; i++)
        if (strcmp(enc->attrs[i].key, key) == 0) {
            char *v = hvq_strdup(ctx, value);
            if (!v)
                return HVQ_E_NOMEM;
            free((char *)enc->attrs[i].value);
            enc->attrs[i].value = v;
            return HVQ_OK;
        }
    if (enc->n_attrs == enc->cap_attrs) {
        size_t cap = enc->cap_attrs ? enc->cap_attrs * 2 : 4;
        hvq_meta *a = host_realloc(ctx, enc->attrs, cap * sizeof *a);
        if (!a)
            return HVQ_E_NOMEM;
        enc->attrs = a;
        enc->cap_attrs = cap;
    }
    char *k = hvq_strdup(ctx, key), *v = hvq_strdup(ctx, value);
    if (!k || !v) {
        free(k);
        free(v);
        return HVQ_E_NOMEM;
    }
    enc->attrs[enc->n_attrs].key = k;
    enc->attrs[enc->n_attrs].value = v;
    enc->n_attrs++;
    return HVQ_OK;
}

static const hvq_component *host_enc_get(const hvq_encoded *enc, const char *name)
{
    for (size_t i = 0; enc && i < enc->n_components; i++)
        if (strcmp(enc->components[i].name, name) == 0)
            return &enc->components[i];
    return NULL;
}

static const char *host_enc_attr_get(const hvq_encoded *enc, const char *key)
{
    for (size_t i = 0; enc && i < enc->n_attrs; i++)
        if (strcmp(enc->attrs[i].key, key) == 0)
            return enc->attrs[i].value;
    return NULL;
}

/* ---- other model files for plugins ----------------------------------- */

struct hvq_model {
    const hvq_loaded_plugin *plugin;
    void *state;
    char *path;
    size_t n;
    hvq_tensor_info *infos;
    size_t *by_name; /* indices sorted by tensor name */
};

static const hvq_tensor_info *sort_infos;
static int cmp_by_name(const void *a, const void *b)
{
    return strcmp(sort_infos[*(const size_t *)a].name, sort_infos[*(const size_t *)b].name);
}

static void host_model_close(hvq_ctx *ctx, hvq_model *m)
{
    if (!m)
        return;
    if (m->plugin)
        m->plugin->desc.source_close(ctx, m->state);
    free(m->infos);
    free(m->by_name);
    free(m->path);
    free(m);
}

/* Opens path with the source plugin pl (NULL: none, the error is set). */
static hvq_model *model_open_with(hvq_ctx *ctx, const hvq_loaded_plugin *pl, const char *path)
{
    hvq_ctx_add_input(ctx, path);
    if (!pl)
        return NULL;
    hvq_model *m = hvq_calloc(ctx, 1, sizeof *m);
    if (!m)
        return NULL;
    m->path = hvq_strdup(ctx, path);
    if (!m->path) {
        free(m);
        return NULL;
    }
    m->plugin = pl;
    if (pl->desc.source_open(ctx, path, &m->state) != HVQ_OK) {
        host_model_close(ctx, m);
        return NULL;
    }
    m->n = pl->desc.source_count(m->state);
    m->infos = hvq_calloc(ctx, m->n ? m->n : 1, sizeof *m->infos);
    m->by_name = hvq_calloc(ctx, m->n ? m->n : 1, sizeof *m->by_name);
    if (!m->infos || !m->by_name) {
        host_model_close(ctx, m);
        return NULL;
    }
    for (size_t i = 0; i < m->n; i++) {
        if (pl->desc.source_info(m->state, i, &m->infos[i]) != HVQ_OK) {
            hvq_error(ctx, HVQ_E_INPUT, "%s: cannot list tensor %zu", path, i);
            host_model_close(ctx, m);
            return NULL;
        }
        if (hvq_tensor_check(ctx, path, pl->desc.name, &m->infos[i], NULL) != HVQ_OK) {
            host_model_close(ctx, m);
            return NULL;
        }
        m->by_name[i] = i;
    }
    sort_infos = m->infos; /* qsort has no context argument; single-threaded here */
    qsort(m->by_name, m->n, sizeof *m->by_name, cmp_by_name);
    return m;
}

static hvq_model *host_model_open(hvq_ctx *ctx, const char *path)
{
    const hvq_registry *reg = priv(ctx)->registry;
    if (!reg) {
        hvq_error(ctx, HVQ_E_INTERNAL, "no plugin registry on this context");
        return NULL;
    }
    return model_open_with(ctx, hvq_registry_detect(reg, ctx, path), path);
}

static hvq_model *host_model_open_format(hvq_ctx *ctx, const char *format, const char *path)
{
    const hvq_registry *reg = priv(ctx)->registry;
    if (!reg) {
        hvq_error(ctx, HVQ_E_INTERNAL, "no plugin registry on this context");
        return NULL;
    }
    const hvq_loaded_plugin *pl = hvq_registry_find(reg, HVQ_KIND_SOURCE, format);
    if (!pl)
        hvq_error(ctx, HVQ_E_NOTFOUND, "%s: reading it needs the %s plugin, which is not loaded",
                  path, format);
    return model_open_with(ctx, pl, path);
}

static hvq_status host_model_find(hvq_ctx *ctx, hvq_model *m, const char *name, hvq_tensor *t)
{
    size_t lo = 0, hi = m->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(m->infos[m->by_name[mid]].name, name);
        if (c == 0) {
            size_t i = m->by_name[mid];
            hvq_status st = m->plugin->desc.source_read(ctx, m->state, i, t);
            return st != HVQ_OK ? st
                                : hvq_tensor_check(ctx, m->path, m->plugin->desc.name,
                                                   &m->infos[i], t);
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return HVQ_E_NOTFOUND;
}

static size_t host_model_count(hvq_model *m) { return m->n; }

static void host_model_meta(hvq_model *m, const hvq_meta **meta, size_t *n)
{
    *meta = NULL;
    *n = 0;
    if (m->plugin->desc.source_meta)
        m->plugin->desc.source_meta(m->state, meta, n);
}

static hvq_status host_model_info(hvq_model *m, size_t i, hvq_tensor_info *info)
{
    if (i >= m->n)
        return HVQ_E_NOTFOUND;
    *info = m->infos[i];
    return HVQ_OK;
}

/* ---- the table --------------------------------------------------------- */

static hvq_output *host_output_open(hvq_ctx *ctx, const char *path) { return hvq_output_open(ctx, path); }

static const hvq_host host_table = {
    .abi_version = HVQ_ABI_VERSION,
    .struct_size = sizeof(hvq_host),
    .alloc = hvq_alloc,
    .calloc = hvq_calloc,
    .realloc = host_realloc,
    .free = host_free,
    .strdup = hvq_strdup,
    .error = host_error,
    .log = host_log,
    .progress = host_progress,
    .threads = host_threads,
    .output_open = host_output_open,
    .output_write = hvq_output_write,
    .output_pwrite = hvq_output_pwrite,
    .output_tell = hvq_output_tell,
    .convert = hvq_convert,
    .dtype_size = hvq_dtype_size,
    .dtype_name = hvq_dtype_name,
    .sink_open = host_sink_open,
    .sink_write = host_sink_write,
    .sink_finish = host_sink_finish,
    .sink_close = host_sink_close,
    .param = hvq_param_lookup,
    .enc_add = host_enc_add,
    .enc_attr = host_enc_attr,
    .enc_get = host_enc_get,
    .enc_attr_get = host_enc_attr_get,
    .status = hvq_ctx_status,
    .model_open = host_model_open,
    .model_find = host_model_find,
    .model_count = host_model_count,
    .model_info = host_model_info,
    .model_close = host_model_close,
    .sink_open_params = host_sink_open_params,
    .output_rename = hvq_output_rename,
    .model_meta = host_model_meta,
    .hessian_full = hvq_cluster_hessian_full,
    .input_open = hvq_input_open,
    .sink_control = host_sink_control,
    .model_open_format = host_model_open_format,
};

const hvq_host *hvq_host_table(void) { return &host_table; }

hvq_ctx *hvq_ctx_new(const hvq_ctx_opts *opts)
{
    ctx_private *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->pub.host = &host_table;
    p->pub.host_private = p;
    if (opts)
        p->opts = *opts;
    if (p->opts.threads < 1)
        p->opts.threads = 1;
    return &p->pub;
}

void hvq_ctx_free(hvq_ctx *ctx)
{
    if (!ctx)
        return;
    hvq_outputs_abort(ctx);
    hvq_inputs_free(ctx);
    free(priv(ctx));
}
