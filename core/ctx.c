/* The host side of a context: the function table handed to plugins, the
 * error message, logging, and atomic outputs. */
#include "config.h"

#include "ctx_int.h"
#include "driver.h"
#include "dtype.h"
#include "parallel.h"
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
/* An encoding's arrays hold 4, 8, 16, ... entries: they grow when the
 * count reaches 0 or a power of two from 4 on, so no capacity is stored
 * (plugins see the struct; the bookkeeping stays the host's). */
static int grow_at(size_t n) { return n == 0 || (n >= 4 && (n & (n - 1)) == 0); }

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
    if (grow_at(enc->n_components)) {
        size_t cap = enc->n_components ? enc->n_components * 2 : 4;
        hvq_component *c = host_realloc(ctx, enc->components, cap * sizeof *c);
        if (!c)
            return NULL;
        enc->components = c;
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
    if (grow_at(enc->n_attrs)) {
        size_t cap = enc->n_attrs ? enc->n_attrs * 2 : 4;
        hvq_meta *a = host_realloc(ctx, enc->attrs, cap * sizeof *a);
        if (!a)
            return HVQ_E_NOMEM;
        enc->attrs = a;
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

/* Opens path with the source plugin pl (NULL: detection failed, the
 * error is set) and lists its tensors, checked. */
static hvq_model *model_open_with(hvq_ctx *ctx, const char *path, const hvq_loaded_plugin *pl)
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

static const hvq_registry *ctx_registry(hvq_ctx *ctx)
{
    const hvq_registry *reg = priv(ctx)->registry;
    if (!reg)
        hvq_error(ctx, HVQ_E_INTERNAL, "no plugin registry on this context");
    return reg;
}

static hvq_model *host_model_open(hvq_ctx *ctx, const char *path)
{
    const hvq_registry *reg = ctx_registry(ctx);
    return reg ? model_open_with(ctx, path, hvq_registry_detect(reg, ctx, path)) : NULL;
}

static hvq_model *host_model_open_as(hvq_ctx *ctx, const char *path, const char *format)
{
    const hvq_registry *reg = ctx_registry(ctx);
    if (!reg)
        return NULL;
    const hvq_loaded_plugin *pl = hvq_registry_find(reg, HVQ_KIND_SOURCE, format);
    if (!pl)
        hvq_error(ctx, HVQ_E_NOTFOUND, "%s: reading it needs the %s plugin, which is not loaded",
                  path, format);
    return model_open_with(ctx, path, pl);
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

static const char *host_detect(hvq_ctx *ctx, const char *path)
{
    const hvq_registry *reg = ctx_registry(ctx);
    const hvq_loaded_plugin *pl = NULL;
    if (reg)
        hvq_registry_probe(reg, ctx, path, &pl);
    return pl ? pl->desc.name : NULL;
}

/* host->model_plugin: a model plugin by name, else by architecture. */
static const hvq_plugin *host_model_plugin(hvq_ctx *ctx, const char *name,
                                           const char *architecture)
{
    const hvq_registry *reg = priv(ctx)->registry;
    if (!reg) {
        hvq_error(ctx, HVQ_E_INTERNAL, "no plugin registry on this context");
        return NULL;
    }
    if (name) {
        const hvq_loaded_plugin *pl = hvq_registry_find(reg, HVQ_KIND_MODEL, name);
        if (!pl)
            hvq_error(ctx, HVQ_E_NOTFOUND, "no model plugin named '%s' (see hvqconv "
                      "list-plugins; --plugin-dir adds a directory)", name);
        return pl ? &pl->desc : NULL;
    }
    const hvq_loaded_plugin *pl =
        architecture ? hvq_registry_model_for(reg, architecture) : NULL;
    if (!pl)
        hvq_error(ctx, HVQ_E_UNSUPPORTED, "no model plugin runs the architecture '%s' (see "
                  "hvqconv list-plugins)", architecture ? architecture : "(none)");
    return pl ? &pl->desc : NULL;
}

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
    .convert = hvq_convert_fast,
    .dtype_size = hvq_dtype_size,
    .dtype_name = hvq_dtype_name,
    .sink_open = hvq_sink_open,
    .sink_write = hvq_sink_write,
    .sink_finish = hvq_sink_finish,
    .sink_close = hvq_sink_close,
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
    .sink_open_params = hvq_sink_open_params,
    .output_rename = hvq_output_rename,
    .model_meta = host_model_meta,
    .hessian_full = hvq_cluster_hessian_full,
    .input_open = hvq_input_open,
    .parallel_for = hvq_parallel_for,
    .detect = host_detect,
    .model_open_as = host_model_open_as,
    .model_plugin = host_model_plugin,
    .sink_control = hvq_sink_pass_control,
    .shared_get = hvq_shared_get,
    .shared_put = hvq_shared_put,
    .writer_stage_param = hvq_writer_stage_param,
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
    hvq_ctx_shared_clear(ctx);
    hvq_inputs_free(ctx);
    free(priv(ctx));
}
