/* Reading hvq containers: the checksums, and the reconstruction of
 * compressed tensors through their plugins. The source plugin "hvq"
 * (formats/hvq/reader.c) reads the files and validates the container's
 * index (docs/FORMAT.md); this keeps what is the core's: the CRC-32 policy
 * (checked once per tensor, before any use), the decoders looked up in the
 * registry, each clusterer's cluster_check before anything is allocated,
 * and the arithmetic of reconstruction. */
#include "config.h"

#include "container.h"
#include "dtype.h"
#include "finite.h"
#include "parallel.h"
#include "util.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <zlib.h>
#include <string.h>

struct hvq_container {
    char *path;           /* as given (error messages) */
    const hvq_registry *reg;
    const hvq_loaded_plugin *src; /* the source "hvq" */
    void *state;
    const hvq_container_view *v;
    signed char *verified; /* per tensor: 0 not yet, 1 OK, -1 mismatch */
    uint32_t *computed;
    int warned_version;
};

static hvq_status cfail(hvq_ctx *ctx, hvq_status st, const hvq_container *c, const char *fmt,
                        ...) __attribute__((format(printf, 4, 5)));

static hvq_status cfail(hvq_ctx *ctx, hvq_status st, const hvq_container *c, const char *fmt,
                        ...)
{
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return hvq_error(ctx, st, "%s: %s", c->path, msg);
}

/* Names the container in a message that does not. */
static hvq_status named(hvq_ctx *ctx, const hvq_container *c, hvq_status st)
{
    if (st != HVQ_OK && !strstr(hvq_ctx_error(ctx), c->path))
        hvq_error_prefix(ctx, "%s", c->path);
    return st;
}

/* Stored tensor k of tensor i (read: with its data). */
static hvq_status read_part(hvq_ctx *ctx, hvq_container *c, size_t i, size_t k, int read,
                            hvq_tensor *out, int *role, const char **key)
{
    return named(ctx, c, c->src->desc.container_part(ctx, c->state, i, k, read, out, role, key));
}

/* Each compressed tensor's clusterer components, checked by its plugin's
 * cluster_check (when installed and offered) from the index alone, before
 * anyone allocates a decoded tensor: a file whose few bytes claim a huge
 * tensor is bad input here, not an allocation failing later. */
static hvq_status check_layout(hvq_ctx *ctx, hvq_container *c, size_t i)
{
    const hvq_container_tensor *p = &c->v->tensors[i];
    const hvq_loaded_plugin *pl =
        p->compressed && c->reg ? hvq_registry_find(c->reg, HVQ_KIND_CLUSTERER, p->clusterer.plugin)
                                : NULL;
    if (!pl || !pl->desc.cluster_check)
        return HVQ_OK;
    hvq_encoded enc;
    hvq_encoded_init(&enc);
    hvq_status st = HVQ_OK;
    for (size_t a = 0; st == HVQ_OK && a < p->clusterer.n_attrs; a++)
        st = ctx->host->enc_attr(ctx, &enc, p->clusterer.attrs[a].key,
                                 p->clusterer.attrs[a].value);
    for (size_t k = 0; st == HVQ_OK && k < p->n_stored; k++) {
        hvq_tensor part;
        int role;
        const char *key;
        if ((st = read_part(ctx, c, i, k, 0, &part, &role, &key)) != HVQ_OK ||
            role != HVQ_PART_CLUSTERER)
            continue;
        st = hvq_encoded_add_layout(ctx, &enc, key, part.info.dtype, part.info.ndim,
                                    part.info.shape);
        if (st == HVQ_OK && enc.components[enc.n_components - 1].nbytes != part.info.nbytes)
            st = cfail(ctx, HVQ_E_INPUT, c, "tensor '%s': component '%s' has a bad size",
                       p->name, key);
    }
    if (st == HVQ_OK) {
        st = pl->desc.cluster_check(ctx, &enc, p->rows, p->cols);
        if (st != HVQ_OK)
            hvq_error_prefix(ctx, "%s: tensor '%s': clusterer '%s'", c->path, p->name,
                             pl->desc.name);
    }
    hvq_encoded_clear(&enc);
    return st;
}

static hvq_status open_checked(hvq_ctx *ctx, hvq_container *c)
{
    c->src = c->reg ? hvq_registry_find(c->reg, HVQ_KIND_SOURCE, "hvq") : NULL;
    if (!c->src || !c->src->desc.container_view || !c->src->desc.container_part)
        return cfail(ctx, HVQ_E_NOTFOUND, c,
                     "reading a container needs the hvq source plugin, which is not loaded");
    /* The source reads the files through the host, with this registry. */
    const hvq_registry *saved = hvq_ctx_registry(ctx);
    hvq_ctx_set_registry(ctx, c->reg);
    hvq_status st = named(ctx, c, c->src->desc.source_open(ctx, c->path, &c->state));
    hvq_ctx_set_registry(ctx, saved);
    if (st != HVQ_OK)
        return st;
    c->v = c->src->desc.container_view(c->state);
    size_t n = c->v->n ? c->v->n : 1;
    if (!(c->verified = hvq_calloc(ctx, n, 1)) ||
        !(c->computed = hvq_calloc(ctx, n, sizeof *c->computed)))
        return HVQ_E_NOMEM;
    for (size_t i = 0; i < c->v->n; i++)
        if ((st = check_layout(ctx, c, i)) != HVQ_OK)
            return st;
    return HVQ_OK;
}

hvq_status hvq_container_open(hvq_ctx *ctx, const hvq_registry *reg, const char *path,
                              hvq_container **out)
{
    *out = NULL;
    hvq_container *c = hvq_calloc(ctx, 1, sizeof *c);
    if (!c)
        return HVQ_E_NOMEM;
    c->reg = reg;
    if (!(c->path = hvq_strdup(ctx, path))) {
        free(c);
        return HVQ_E_NOMEM;
    }
    hvq_status st = open_checked(ctx, c);
    if (st != HVQ_OK) {
        hvq_container_close(ctx, c);
        return st;
    }
    *out = c;
    return HVQ_OK;
}

void hvq_container_close(hvq_ctx *ctx, hvq_container *c)
{
    if (!c)
        return;
    if (c->src && c->state)
        c->src->desc.source_close(ctx, c->state);
    free(c->verified);
    free(c->computed);
    free(c->path);
    free(c);
}

const char *hvq_container_path(const hvq_container *c) { return c->path; }
uint64_t hvq_container_file_size(const hvq_container *c) { return c->v->file_size; }
size_t hvq_container_count(const hvq_container *c) { return c->v->n; }

const hvq_container_tensor *hvq_container_info(const hvq_container *c, size_t i)
{
    return i < c->v->n ? &c->v->tensors[i] : NULL;
}

const char *hvq_container_meta(const hvq_container *c, const char *key)
{
    for (size_t i = 0; i < c->v->n_meta; i++)
        if (strcmp(c->v->meta[i].key, key) == 0)
            return c->v->meta[i].value;
    return NULL;
}

void hvq_container_source_meta(const hvq_container *c, const hvq_meta **meta, size_t *n)
{
    *meta = c->v->source_meta;
    *n = c->v->n_source_meta;
}

/* CRC-32 (zlib's) in parallel: a large stored tensor is cut into fixed
 * segments whose CRCs the threads compute, combined in order with
 * crc32_combine: the same value as one pass. */
#define CRC_SEGMENT ((uint64_t)1 << 21)

typedef struct crc_job {
    const unsigned char *data;
    uint64_t n;
    uint32_t *seg;
} crc_job;

static void crc_segment(void *arg, uint64_t chunk, uint64_t begin, uint64_t end)
{
    crc_job *j = arg;
    j->seg[chunk] = (uint32_t)crc32_z(0, j->data + begin, (z_size_t)(end - begin));
}

/* crc continued over n bytes of data. */
static uint32_t crc_parallel(hvq_ctx *ctx, uint32_t crc, const void *data, uint64_t n)
{
    uint64_t nseg = hvq_parallel_chunks(n, CRC_SEGMENT);
    uint32_t seg_local[64], *seg = nseg <= 64 ? seg_local : malloc((size_t)nseg * sizeof *seg);
    if (nseg <= 1 || hvq_ctx_options(ctx)->threads <= 1 || !seg) {
        if (seg != seg_local)
            free(seg);
        return (uint32_t)crc32_z(crc, data, (z_size_t)n);
    }
    crc_job j = {data, n, seg};
    hvq_parallel_for(ctx, n, CRC_SEGMENT, crc_segment, &j);
    for (uint64_t s = 0; s < nseg; s++) {
        uint64_t len = s + 1 < nseg ? CRC_SEGMENT : n - s * CRC_SEGMENT;
        crc = (uint32_t)crc32_combine(crc, seg[s], (z_off_t)len);
    }
    if (seg != seg_local)
        free(seg);
    return crc;
}

hvq_status hvq_container_verify(hvq_ctx *ctx, hvq_container *c, size_t i)
{
    if (i >= c->v->n)
        return hvq_error(ctx, HVQ_E_INTERNAL, "%s: tensor index %zu out of range", c->path, i);
    const hvq_container_tensor *t = &c->v->tensors[i];
    if (c->verified[i] == 0) {
        uint32_t crc = 0;
        for (size_t k = 0; k < t->n_stored; k++) {
            hvq_tensor part;
            int role;
            const char *key;
            hvq_status st = read_part(ctx, c, i, k, 1, &part, &role, &key);
            if (st != HVQ_OK)
                return st;
            crc = crc_parallel(ctx, crc, part.data, part.info.nbytes);
        }
        c->computed[i] = crc;
        c->verified[i] = crc == t->crc32 ? 1 : -1;
    }
    if (c->verified[i] < 0)
        return cfail(ctx, HVQ_E_INPUT, c,
                     "tensor '%s': checksum mismatch (stored 0x%08x, computed 0x%08x)",
                     t->name, (unsigned)t->crc32, (unsigned)c->computed[i]);
    return HVQ_OK;
}

hvq_status hvq_container_read_raw(hvq_ctx *ctx, hvq_container *c, size_t i, hvq_tensor *out)
{
    hvq_status st = hvq_container_verify(ctx, c, i);
    if (st != HVQ_OK)
        return st;
    if (c->v->tensors[i].compressed)
        return hvq_error(ctx, HVQ_E_INTERNAL, "%s: tensor '%s' is compressed, not raw", c->path,
                         c->v->tensors[i].name);
    int role;
    const char *key;
    return read_part(ctx, c, i, 0, 1, out, &role, &key);
}

hvq_status hvq_container_read_component(hvq_ctx *ctx, hvq_container *c, size_t i,
                                        const char *name, hvq_tensor *out)
{
    hvq_status st = hvq_container_verify(ctx, c, i);
    if (st != HVQ_OK)
        return st;
    const hvq_container_tensor *t = &c->v->tensors[i];
    for (size_t k = 0; t->compressed && k < t->n_stored; k++) {
        int role;
        const char *key;
        if ((st = read_part(ctx, c, i, k, 0, out, &role, &key)) != HVQ_OK)
            return st;
        if (role == HVQ_PART_CLUSTERER && strcmp(key, name) == 0)
            return read_part(ctx, c, i, k, 1, out, &role, &key);
    }
    return hvq_error(ctx, HVQ_E_INTERNAL, "%s: tensor '%s' has no clusterer component '%s'",
                     c->path, t->name, name);
}

/* The hvq_encoded of one stage (HVQ_PART_CLUSTERER or _RESIDUAL): copies
 * of the stored components. */
static hvq_status build_enc(hvq_ctx *ctx, hvq_container *c, size_t i, int which,
                            hvq_encoded *enc)
{
    const hvq_host *H = ctx->host;
    const hvq_container_tensor *t = &c->v->tensors[i];
    const hvq_container_stage *s = which == HVQ_PART_CLUSTERER ? &t->clusterer : &t->residual;
    for (size_t a = 0; a < s->n_attrs; a++) {
        hvq_status st = H->enc_attr(ctx, enc, s->attrs[a].key, s->attrs[a].value);
        if (st != HVQ_OK)
            return st;
    }
    /* Components in "stored" order (the encoder's order for files hvqconv
     * wrote); decoders look them up by name. */
    for (size_t k = 0; k < t->n_stored; k++) {
        hvq_tensor part;
        int role;
        const char *key;
        hvq_status st = read_part(ctx, c, i, k, 0, &part, &role, &key);
        if (st != HVQ_OK)
            return st;
        if (role != which)
            continue;
        if ((st = read_part(ctx, c, i, k, 1, &part, &role, &key)) != HVQ_OK)
            return st;
        hvq_component *comp = H->enc_add(ctx, enc, key, part.info.dtype, part.info.ndim,
                                         part.info.shape, 0);
        if (!comp)
            return hvq_ctx_status(ctx) ? hvq_ctx_status(ctx) : HVQ_E_NOMEM;
        if (comp->nbytes != part.info.nbytes)
            return cfail(ctx, HVQ_E_INPUT, c, "tensor '%s': component '%s' has a bad size",
                         t->name, key);
        if (part.info.nbytes)
            memcpy(comp->data, part.data, (size_t)part.info.nbytes);
    }
    return HVQ_OK;
}

static const hvq_loaded_plugin *stage_plugin(hvq_ctx *ctx, hvq_container *c,
                                             const hvq_container_tensor *t, int which)
{
    const hvq_container_stage *s = which == 1 ? &t->clusterer : &t->residual;
    uint32_t kind = which == 1 ? HVQ_KIND_CLUSTERER : HVQ_KIND_RESIDUAL;
    const char *what = which == 1 ? "clusterer" : "residual";
    const hvq_loaded_plugin *pl = c->reg ? hvq_registry_find(c->reg, kind, s->plugin) : NULL;
    if (!pl) {
        cfail(ctx, HVQ_E_NOTFOUND, c,
              "tensor '%s' needs the %s plugin '%s' (version %s), which is not installed (see "
              "hvqconv list-plugins; --plugin-dir adds a directory)",
              t->name, what, s->plugin, s->version);
        return NULL;
    }
    /* Same major version expected; warn once otherwise. */
    size_t a = strcspn(s->version, "."), b = strcspn(pl->desc.version, ".");
    if (!c->warned_version && (a != b || strncmp(s->version, pl->desc.version, a) != 0)) {
        c->warned_version = 1;
        hvq_log(ctx, HVQ_LOG_WARN,
                "%s: tensor '%s' was written by %s plugin '%s' %s; the installed one is %s",
                c->path, t->name, what, s->plugin, s->version, pl->desc.version);
    }
    return pl;
}

/* The per-element loops of read_decoded, in parallel chunks (each element
 * alone: the result does not depend on the thread count). */
static void zero_chunk(void *arg, uint64_t chunk, uint64_t begin, uint64_t end)
{
    (void)chunk;
    memset((float *)arg + begin, 0, (size_t)(end - begin) * sizeof(float));
}

typedef struct scale_job {
    float *out;
    const uint16_t *scales;
    uint64_t rows, cols, rows_per_chunk;
} scale_job;

static void scale_chunk(void *arg, uint64_t chunk, uint64_t begin, uint64_t end)
{
    (void)begin;
    (void)end;
    scale_job *j = arg;
    for (uint64_t r = chunk * j->rows_per_chunk;
         r < (chunk + 1) * j->rows_per_chunk && r < j->rows; r++) {
        float s = hvq_f16_to_f32(j->scales[r]);
        float *o = j->out + r * j->cols;
        for (uint64_t col = 0; col < j->cols; col++)
            o[col] *= s;
    }
}

static hvq_status decode_tensor(hvq_ctx *ctx, hvq_container *c, size_t i, float *out);

/* Each row of tensor i's reconstruction times its fp16 scale, exactly as
 * the driver. */
static hvq_status apply_scales(hvq_ctx *ctx, hvq_container *c, size_t i, float *out)
{
    const hvq_container_tensor *p = &c->v->tensors[i];
    hvq_tensor part;
    int role = -1;
    const char *key;
    hvq_status st = HVQ_OK;
    for (size_t k = 0; st == HVQ_OK && k < p->n_stored && role != HVQ_PART_DATA; k++)
        st = read_part(ctx, c, i, k, 1, &part, &role, &key);
    if (st != HVQ_OK || role != HVQ_PART_DATA)
        return st != HVQ_OK ? st : cfail(ctx, HVQ_E_INTERNAL, c, "tensor '%s': no row scales",
                                         p->name);
    uint16_t *scales = hvq_alloc(ctx, (size_t)p->rows * sizeof *scales);
    if (!scales)
        return HVQ_E_NOMEM;
    memcpy(scales, part.data, (size_t)p->rows * sizeof *scales);
    scale_job j = {.out = out, .scales = scales, .rows = p->rows, .cols = p->cols,
                   .rows_per_chunk = hvq_par_rows(p->cols)};
    hvq_parallel_for(ctx, hvq_parallel_chunks(p->rows, j.rows_per_chunk), 1, scale_chunk, &j);
    free(scales);
    return HVQ_OK;
}

/* A tensor decoded to float32: every value must be finite (a NaN or
 * infinite scale, min, codebook entry or sparse value is a corrupt file,
 * never written by hvqconv). */
hvq_status hvq_container_read_decoded(hvq_ctx *ctx, hvq_container *c, size_t i, float *out)
{
    hvq_status st = decode_tensor(ctx, c, i, out);
    if (st != HVQ_OK)
        return st;
    const hvq_container_tensor *p = &c->v->tensors[i];
    uint64_t bad = hvq_first_nonfinite(out, p->numel);
    if (bad < p->numel)
        return cfail(ctx, HVQ_E_INPUT, c,
                     "tensor '%s': value %llu decodes to %s (a stored component is not "
                     "finite)",
                     p->name, (unsigned long long)bad, isnan(out[bad]) ? "NaN" : "infinity");
    return HVQ_OK;
}

static hvq_status decode_tensor(hvq_ctx *ctx, hvq_container *c, size_t i, float *out)
{
    hvq_status st = hvq_container_verify(ctx, c, i);
    if (st != HVQ_OK)
        return st;
    const hvq_container_tensor *p = &c->v->tensors[i];
    if (!p->compressed) {
        hvq_tensor raw;
        if ((st = hvq_container_read_raw(ctx, c, i, &raw)) != HVQ_OK)
            return st;
        if (!hvq_dtype_is_float(raw.info.dtype))
            return cfail(ctx, HVQ_E_UNSUPPORTED, c,
                         "tensor '%s' has dtype %s, which has no float32 value", p->name,
                         p->dtype_name);
        /* hvq_convert reads its source byte-wise: the data may be
         * unaligned. */
        return hvq_convert_parallel(ctx, HVQ_DTYPE_F32, out, raw.info.dtype, raw.data,
                                    p->numel);
    }

    const hvq_loaded_plugin *cp = stage_plugin(ctx, c, p, 1);
    const hvq_loaded_plugin *rp = cp ? stage_plugin(ctx, c, p, 2) : NULL;
    if (!cp || !rp)
        return HVQ_E_NOTFOUND;
    hvq_encoded cenc, renc;
    hvq_encoded_init(&cenc);
    hvq_encoded_init(&renc);
    hvq_parallel_for(ctx, p->numel, HVQ_PAR_ELEMS, zero_chunk, out);
    st = build_enc(ctx, c, i, HVQ_PART_CLUSTERER, &cenc);
    if (st == HVQ_OK)
        st = build_enc(ctx, c, i, HVQ_PART_RESIDUAL, &renc);
    if (st == HVQ_OK) {
        st = cp->desc.cluster_decode(ctx, &cenc, p->rows, p->cols, out);
        if (st != HVQ_OK)
            hvq_error_prefix(ctx, "%s: tensor '%s': clusterer '%s'", c->path, p->name,
                             cp->desc.name);
    }
    if (st == HVQ_OK) {
        st = rp->desc.residual_decode(ctx, &renc, p->rows, p->cols, out);
        if (st != HVQ_OK)
            hvq_error_prefix(ctx, "%s: tensor '%s': residual '%s'", c->path, p->name,
                             rp->desc.name);
    }
    if (st == HVQ_OK && p->has_scales)
        st = apply_scales(ctx, c, i, out);
    hvq_encoded_clear(&cenc);
    hvq_encoded_clear(&renc);
    return st;
}

