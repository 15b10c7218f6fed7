/* The ggml tensor types and the GGUF metadata value types.
 *
 * Block sizes and bytes per block follow ggml's block layouts (ggml.h's
 * enum ggml_type and ggml-common.h's block_* structs). Ids ggml removed
 * (Q4_2, Q4_3, the Q4_0_x_y and IQ4_NL_x_y repackings) are unknown types:
 * ggml refuses them in GGUF files too. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include "gguf_local.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <unistd.h>

static const gg_type gg_types[] = {
    {0, "F32", 1, 4, HVQ_DTYPE_F32},
    {1, "F16", 1, 2, HVQ_DTYPE_F16},
    {2, "Q4_0", 32, 18, HVQ_DTYPE_OPAQUE},     /* f16 d, 16 B of nibbles */
    {3, "Q4_1", 32, 20, HVQ_DTYPE_OPAQUE},     /* f16 d, m, 16 B */
    {6, "Q5_0", 32, 22, HVQ_DTYPE_OPAQUE},     /* f16 d, 4 B qh, 16 B */
    {7, "Q5_1", 32, 24, HVQ_DTYPE_OPAQUE},     /* f16 d, m, 4 B qh, 16 B */
    {8, "Q8_0", 32, 34, HVQ_DTYPE_OPAQUE},     /* f16 d, 32 int8 */
    {9, "Q8_1", 32, 36, HVQ_DTYPE_OPAQUE},     /* f16 d, s, 32 int8 */
    {10, "Q2_K", 256, 84, HVQ_DTYPE_OPAQUE},
    {11, "Q3_K", 256, 110, HVQ_DTYPE_OPAQUE},
    {12, "Q4_K", 256, 144, HVQ_DTYPE_OPAQUE},
    {13, "Q5_K", 256, 176, HVQ_DTYPE_OPAQUE},
    {14, "Q6_K", 256, 210, HVQ_DTYPE_OPAQUE},
    {15, "Q8_K", 256, 292, HVQ_DTYPE_OPAQUE},
    {16, "IQ2_XXS", 256, 66, HVQ_DTYPE_OPAQUE},
    {17, "IQ2_XS", 256, 74, HVQ_DTYPE_OPAQUE},
    {18, "IQ3_XXS", 256, 98, HVQ_DTYPE_OPAQUE},
    {19, "IQ1_S", 256, 50, HVQ_DTYPE_OPAQUE},
    {20, "IQ4_NL", 32, 18, HVQ_DTYPE_OPAQUE},
    {21, "IQ3_S", 256, 110, HVQ_DTYPE_OPAQUE},
    {22, "IQ2_S", 256, 82, HVQ_DTYPE_OPAQUE},
    {23, "IQ4_XS", 256, 136, HVQ_DTYPE_OPAQUE},
    {24, "I8", 1, 1, HVQ_DTYPE_I8},
    {25, "I16", 1, 2, HVQ_DTYPE_I16},
    {26, "I32", 1, 4, HVQ_DTYPE_I32},
    {27, "I64", 1, 8, HVQ_DTYPE_I64},
    {28, "F64", 1, 8, HVQ_DTYPE_F64},
    {29, "IQ1_M", 256, 56, HVQ_DTYPE_OPAQUE},
    {30, "BF16", 1, 2, HVQ_DTYPE_BF16},
    {34, "TQ1_0", 256, 54, HVQ_DTYPE_OPAQUE},
    {35, "TQ2_0", 256, 66, HVQ_DTYPE_OPAQUE},
    {39, "MXFP4", 32, 17, HVQ_DTYPE_OPAQUE},   /* e8m0 e, 16 B of nibbles */
    {40, "NVFP4", 64, 36, HVQ_DTYPE_OPAQUE},   /* 4 ue4m3 scales, 32 B */
    {41, "Q1_0", 128, 18, HVQ_DTYPE_OPAQUE},   /* f16 d, 16 B of bits */
};
#define GG_N_TYPES (sizeof gg_types / sizeof gg_types[0])

static const struct {
    uint32_t id;
    const char *name;
} gg_removed[] = {
    {4, "Q4_2"},        {5, "Q4_3"},        {31, "Q4_0_4_4"},
    {32, "Q4_0_4_8"},   {33, "Q4_0_8_8"},   {36, "IQ4_NL_4_4"},
    {37, "IQ4_NL_4_8"}, {38, "IQ4_NL_8_8"},
};

const gg_type *gg_type_by_id(uint32_t id)
{
    size_t i;
    for (i = 0; i < GG_N_TYPES; i++)
        if (gg_types[i].id == id)
            return &gg_types[i];
    return NULL;
}

const gg_type *gg_type_by_name(const char *name)
{
    size_t i;
    if (name == NULL)
        return NULL;
    for (i = 0; i < GG_N_TYPES; i++)
        if (strcasecmp(gg_types[i].name, name) == 0)
            return &gg_types[i];
    return NULL;
}

const gg_type *gg_type_by_dtype(hvq_dtype t)
{
    size_t i;
    if (t == HVQ_DTYPE_OPAQUE)
        return NULL;
    for (i = 0; i < GG_N_TYPES; i++)
        if (gg_types[i].dtype == t)
            return &gg_types[i];
    return NULL;
}

const char *gg_removed_type_name(uint32_t id)
{
    size_t i;
    for (i = 0; i < sizeof gg_removed / sizeof gg_removed[0]; i++)
        if (gg_removed[i].id == id)
            return gg_removed[i].name;
    return NULL;
}

/* ------------------------------------------------------------------------
 * Metadata value types
 * ---------------------------------------------------------------------- */
static const char *const gg_vtype_names[GG_N_VTYPES] = {
    "uint8", "int8",   "uint16", "int16", "uint32", "int32",  "float32",
    "bool",  "string", "array",  "uint64", "int64", "float64",
};

static const unsigned char gg_vtype_sizes[GG_N_VTYPES] = {
    1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8,
};

const char *gg_vtype_name(uint32_t t)
{
    return t < GG_N_VTYPES ? gg_vtype_names[t] : NULL;
}

int gg_vtype_by_name(const char *name)
{
    int i;
    if (name == NULL)
        return -1;
    for (i = 0; i < GG_N_VTYPES; i++)
        if (strcmp(gg_vtype_names[i], name) == 0)
            return i;
    return -1;
}

unsigned gg_vtype_size(uint32_t t)
{
    return t < GG_N_VTYPES ? gg_vtype_sizes[t] : 0;
}

unsigned gg_vtype_min_size(uint32_t t)
{
    if (t == GG_STRING)
        return 8;      /* the length */
    if (t == GG_ARRAY)
        return 12;     /* item type and count */
    return gg_vtype_size(t);
}

/* ------------------------------------------------------------------------
 * Errors, reading, writing
 * ---------------------------------------------------------------------- */
hvq_status gg_fail(hvq_ctx *ctx, hvq_status st, const char *path,
                   const char *fmt, ...)
{
    char msg[GG_MSG];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return ctx->host->error(ctx, st, "%s: %s", path, msg);
}

hvq_status gg_need(gg_reader *r, uint64_t n, const char *what)
{
    if (r->pos <= r->size && n <= r->size - r->pos)
        return HVQ_OK;
    return gg_fail(r->ctx, HVQ_E_INPUT, r->path,
                   "truncated: %s%s%s at byte %llu needs %llu bytes, but "
                   "the file ends at byte %llu",
                   r->where, r->where[0] ? ": " : "", what,
                   (unsigned long long)r->pos, (unsigned long long)n,
                   (unsigned long long)r->size);
}

static uint64_t gg_le(const unsigned char *p, int n)
{
    uint64_t v = 0;
    while (n-- > 0)
        v = (v << 8) | p[n];
    return v;
}

/* An n-byte little-endian unsigned integer at r. */
static hvq_status gg_read_le(gg_reader *r, const char *what, int n, uint64_t *v)
{
    hvq_status st = gg_need(r, (uint64_t)n, what);
    if (st != HVQ_OK)
        return st;
    *v = gg_le(r->p + r->pos, n);
    r->pos += (uint64_t)n;
    return HVQ_OK;
}

hvq_status gg_read_u32(gg_reader *r, const char *what, uint32_t *v)
{
    uint64_t u = 0;
    hvq_status st = gg_read_le(r, what, 4, &u);
    *v = (uint32_t)u;
    return st;
}

hvq_status gg_read_u64(gg_reader *r, const char *what, uint64_t *v)
{
    return gg_read_le(r, what, 8, v);
}

hvq_status gg_read_str(gg_reader *r, const char *what, uint64_t cap,
                       const unsigned char **s, uint64_t *len)
{
    char lwhat[160];
    uint64_t n, at;
    hvq_status st;
    at = r->pos;
    if (r->pos > r->size || r->size - r->pos < 8) { /* only then formatted */
        snprintf(lwhat, sizeof lwhat, "the length of %s", what);
        return gg_need(r, 8, lwhat);
    }
    st = gg_read_u64(r, what, &n);
    if (st != HVQ_OK)
        return st;
    if (n > r->size - r->pos)
        return gg_fail(r->ctx, HVQ_E_INPUT, r->path,
                       "%s%s%s at byte %llu is %llu bytes long, beyond the "
                       "end of the file (%llu bytes; truncated?)",
                       r->where, r->where[0] ? ": " : "", what,
                       (unsigned long long)at, (unsigned long long)n,
                       (unsigned long long)r->size);
    if (n > cap)
        return gg_fail(r->ctx, HVQ_E_INPUT, r->path,
                       "%s%s%s at byte %llu is %llu bytes long, more than "
                       "the limit of %llu",
                       r->where, r->where[0] ? ": " : "", what,
                       (unsigned long long)at, (unsigned long long)n,
                       (unsigned long long)cap);
    *s = r->p + r->pos;
    *len = n;
    r->pos += n;
    return HVQ_OK;
}

void gg_put_u32(hvq_buf *b, uint32_t v)
{
    char c[4];
    int i;
    for (i = 0; i < 4; i++)
        c[i] = (char)(unsigned char)(v >> (8 * i));
    hvq_buf_append(b, c, 4);
}

void gg_put_u64(hvq_buf *b, uint64_t v)
{
    char c[8];
    int i;
    for (i = 0; i < 8; i++)
        c[i] = (char)(unsigned char)(v >> (8 * i));
    hvq_buf_append(b, c, 8);
}

void gg_release(gg_reader *r, int all)
{
    long page;
    uint64_t end;
    if (!r->mapped || r->p == NULL || r->pos > r->size ||
        (!all && r->pos - r->released < GG_RELEASE_STEP))
        return;
    page = sysconf(_SC_PAGESIZE);
    if (page <= 0)
        return;
    end = r->pos - r->pos % (uint64_t)page;
    if (end > r->released)
        (void)madvise((void *)(r->p + r->released),
                      (size_t)(end - r->released), MADV_DONTNEED);
    r->released = end > r->released ? end : r->released;
}

hvq_status gg_out_drain(gg_out *o, int all)
{
    hvq_status st = HVQ_OK;
    if (o->b.oom)
        return gg_fail(o->ctx, HVQ_E_NOMEM, o->path, "out of memory");
    if (o->b.len == 0 || (!all && o->b.len < GG_DRAIN))
        return HVQ_OK;
    if (o->out != NULL)
        st = o->ctx->host->output_write(o->ctx, o->out, o->b.data, o->b.len);
    o->drained += o->b.len;
    o->b.len = 0;
    return st;
}

hvq_status gg_out_patch_u64(gg_out *o, uint64_t at, uint64_t v)
{
    unsigned char c[8];
    int i;
    for (i = 0; i < 8; i++)
        c[i] = (unsigned char)(v >> (8 * i));
    if (o->b.oom)
        return gg_fail(o->ctx, HVQ_E_NOMEM, o->path, "out of memory");
    if (at >= o->drained) {
        memcpy(o->b.data + (at - o->drained), c, 8);
        return HVQ_OK;
    }
    if (o->out == NULL)
        return HVQ_OK;
    return o->ctx->host->output_pwrite(o->ctx, o->out, c, 8, at);
}

