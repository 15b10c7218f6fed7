/* GGUF source and sink (llama.cpp's model format).
 *
 * Format (versions 2 and 3, little-endian): "GGUF", uint32 version, uint64
 * tensor count, uint64 metadata count, the metadata entries (key string,
 * uint32 value type, value), the tensor infos (name string, uint32 n_dims,
 * n_dims uint64 dims ne[0] innermost first, uint32 ggml type, uint64 offset
 * relative to the data section), zero padding to general.alignment (uint32,
 * a power of two, default 32), then the data section. A string is a uint64
 * byte length and the bytes; an array is a uint32 item type, a uint64 count
 * and the items.
 *
 * Reading. The file is mapped read-only and validated completely when
 * opened: magic, version (1 is refused; a big-endian file is recognised by
 * its byte-swapped version and refused), counts against the file size,
 * every string length, value type and nesting, unique keys, the alignment,
 * unique tensor names, at most 4 dims whose element count fits in an
 * int64, known ggml types, row lengths that are a multiple of the type's
 * block size, offsets that are aligned, inside the file and do not overlap.
 * Tensors are listed in the order of the tensor infos. Shapes are reversed:
 * hvq_tensor_info.shape[0] = ne[n_dims-1], ..., shape[ndim-1] = ne[0], so a
 * weight stored with ne = [in, out] is [out, in] to the core.
 *
 * Tensor types. F32, F16 and BF16 (and F64, I8, I16, I32, I64 as the hvq
 * types of those names) point into the mapping. Q8_0 and Q4_0 are
 * dequantized to F32 when read (dtype F32, dtype_name "F32", nbytes =
 * numel * 4; the data lives in a buffer valid until the next source_read
 * or close), following ggml's scalar reference: Q8_0 blocks of 32 are an
 * fp16 scale d and 32 int8 q, x = d * q; Q4_0 blocks of 32 are d and 16
 * bytes, byte i holding element i in its low nibble and element i + 16 in
 * its high nibble, x = d * (q - 8). Every other ggml type (Q4_1, Q5_0,
 * Q5_1, Q8_1, Q2_K..Q8_K, IQ*, TQ*, MXFP4, ...) is HVQ_DTYPE_OPAQUE with
 * dtype_name the ggml type name ("Q4_K") and is copied byte for byte.
 *
 * Metadata encoding. Every GGUF key/value becomes one hvq_meta whose key is
 * the GGUF key and whose value is this JSON text (compact, no spaces):
 *
 *   {"gguf_type":"<type>","value":<value>}
 *
 * with <type> one of uint8 int8 uint16 int16 uint32 int32 uint64 int64
 * float32 float64 bool string, and <value> a JSON number (integers exact,
 * 64-bit ones included, printed in decimal without exponent), true/false,
 * or a JSON string (GGUF strings must be UTF-8; a NUL byte is \u0000).
 * Floats are printed so that they read back to the same bits: float32 with
 * "%.9g", float64 with "%.17g" (-0 stays -0); NaN, +inf and -inf are the
 * strings "nan", "inf" and "-inf" (a NaN's sign and payload are not kept;
 * it is written back as the quiet NaN 0x7fc00000 / 0x7ff8000000000000).
 * An array is
 *
 *   {"gguf_type":"array","item_type":"<type>","value":[<item>,...]}
 *
 * whose items are bare values as above, or, when item_type is "array",
 * objects of this same array form (nested arrays, up to 16 levels):
 *
 *   {"gguf_type":"array","item_type":"array","value":[
 *       {"gguf_type":"array","item_type":"int32","value":[1,2]}, ...]}
 *
 * Examples: general.alignment {"gguf_type":"uint32","value":32};
 * general.name {"gguf_type":"string","value":"stories260K"};
 * tokenizer.ggml.scores {"gguf_type":"array","item_type":"float32",
 * "value":[0,-1.5,...]}.
 *
 * Writing. sink_create takes the metadata in order: a value that is a JSON
 * object with a "gguf_type" member must be valid in the encoding above and
 * becomes a typed entry (range-checked: a uint8 of 300 is an error); any
 * other text becomes a string entry (what safetensors metadata gives).
 * general.alignment, when present, must be a typed uint32 power of two and
 * sets the alignment (else 32, and no entry is added). Tensors are written
 * in the declared order with their shapes reversed back into ne; F32, F16,
 * BF16, F64, I8, I16, I32 and I64 natively, OPAQUE tensors whose
 * dtype_name is a ggml type name with that type (bytes as given); other
 * types (unsigned integers, bool, F8_E4M3, ...) are HVQ_E_UNSUPPORTED, as
 * are more than 4 dims and names longer than llama.cpp's 63 bytes. The
 * layout is the one ggml's gguf writer produces: version 3, the header
 * padded with zeros to the alignment, each tensor at the next aligned
 * offset and followed by zeros up to the next multiple of the alignment
 * (the last one too). A GGUF read and written back with the same tensors,
 * types, metadata and alignment is byte-identical to the original.
 */
#include "config.h" /* _GNU_SOURCE, through AC_USE_SYSTEM_EXTENSIONS */

#include "checked.h"
#include "gguf_local.h"
#include "json.h"
#include "file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>


#define GG_EXT ".gguf"

/* ------------------------------------------------------------------------
 * Small helpers
 * ---------------------------------------------------------------------- */

/* x rounded up to a multiple of the power of two a; 0 on overflow. */
static int gg_align_up(uint64_t x, uint64_t a, uint64_t *out)
{
    uint64_t r = x % a;
    if (r == 0) {
        *out = x;
        return 1;
    }
    return hvq_add_u64(x, a - r, out);
}

/* A copy of s[0..n) as a C string (host memory); NULL when out of memory. */
static char *gg_strndup(hvq_ctx *ctx, const unsigned char *s, uint64_t n)
{
    char *p = ctx->host->alloc(ctx, (size_t)n + 1);
    if (p == NULL)
        return NULL;
    if (n)
        memcpy(p, s, (size_t)n);
    p[n] = '\0';
    return p;
}

/* Up to 4 bytes as printable text for messages: "GGML" or "\x00\x01..". */
static void gg_show_bytes(char *buf, size_t len, const unsigned char *p,
                          size_t n)
{
    size_t i, o = 0;
    buf[0] = '\0';
    for (i = 0; i < n && o + 5 < len; i++) {
        if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '"' && p[i] != '\\')
            o += (size_t)snprintf(buf + o, len - o, "%c", p[i]);
        else
            o += (size_t)snprintf(buf + o, len - o, "\\x%02x", p[i]);
    }
}

/* ------------------------------------------------------------------------
 * probe
 * ---------------------------------------------------------------------- */
static int gg_probe(const char *path, const unsigned char *head,
                    size_t head_len)
{
    struct stat sb; /* the host gives the head (at most 4096 bytes) */
    if (path == NULL)
        return 0;
    if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode))
        return 0;
    if (head != NULL && head_len >= 4 && memcmp(head, GG_MAGIC, 4) == 0)
        return 95;
    /* Only the name says GGUF: a low score, so that a damaged file still
     * reaches source_open and gets a precise error. */
    return hvq_ends_with(path, GG_EXT) ? 10 : 0;
}

/* ------------------------------------------------------------------------
 * Source
 * ---------------------------------------------------------------------- */
typedef struct gg_tensor {
    hvq_tensor_info info;   /* name: host memory */
    const gg_type *type;
    uint64_t offset;        /* in the data section */
    uint64_t file_bytes;    /* bytes in the file */
    size_t order;           /* index in the file's tensor infos */
    uint64_t info_pos;      /* byte of its tensor info (for messages) */
} gg_tensor;

typedef struct gg_source {
    const hvq_host *host;
    char *path;
    const unsigned char *map;
    size_t size;
    uint32_t version;
    uint32_t alignment;
    uint64_t data_start;
    gg_tensor *tensors;
    size_t n_tensors;
    hvq_meta *meta;         /* keys: host memory; values: malloc'd (each
                               the buffer it was written into) */
    size_t n_meta;
    void *buf;              /* dequantized or realigned data */
    size_t buf_cap;
} gg_source;

static void gg_source_free(gg_source *s)
{
    size_t i;
    const hvq_host *h;
    if (s == NULL)
        return;
    h = s->host;
    if (s->map != NULL)
        munmap((void *)s->map, s->size);
    for (i = 0; i < s->n_tensors; i++)
        h->free((void *)s->tensors[i].info.name);
    h->free(s->tensors);
    for (i = 0; i < s->n_meta; i++) {
        h->free((void *)s->meta[i].key);
        free((void *)s->meta[i].value); /* from hvq_buf: malloc */
    }
    h->free(s->meta);
    h->free(s->buf);
    h->free(s->path);
    h->free(s);
}

static hvq_status gg_map(hvq_ctx *ctx, gg_source *s, const char *path)
{
    const void *map = NULL;
    size_t size = 0;
    hvq_status st = hvq_map_input(ctx, path, &map, &size); /* 0 bytes: the reader reports */
    s->map = map;
    s->size = size;
    return st;
}

typedef struct gg_keyref {
    const char *key;
    size_t index;
} gg_keyref;

static int gg_keyref_cmp(const void *a, const void *b)
{
    const gg_keyref *x = a, *y = b;
    int c = strcmp(x->key, y->key);
    if (c != 0)
        return c;
    return x->index < y->index ? -1 : x->index > y->index;
}

/* The header up to and including the counts. */
static hvq_status gg_read_preamble(gg_reader *r, gg_source *s,
                                   uint64_t *n_tensors, uint64_t *n_kv)
{
    hvq_ctx *ctx = r->ctx;
    uint32_t v, sw;
    uint64_t room;
    hvq_status st;
    char shown[40];

    st = gg_need(r, 4, "the magic");
    if (st != HVQ_OK)
        return st;
    if (memcmp(r->p, GG_MAGIC, 4) != 0) {
        gg_show_bytes(shown, sizeof shown, r->p, 4);
        return gg_fail(ctx, HVQ_E_INPUT, r->path,
                       "bad magic \"%s\" at byte 0: not a GGUF file "
                       "(expected \"GGUF\")",
                       shown);
    }
    r->pos = 4;
    st = gg_read_u32(r, "the version", &v);
    if (st != HVQ_OK)
        return st;
    sw = (v >> 24) | ((v >> 8) & 0xff00u) | ((v << 8) & 0xff0000u) | (v << 24);
    if (sw >= 1 && sw <= 3)
        return gg_fail(ctx, HVQ_E_UNSUPPORTED, r->path,
                       "big-endian GGUF file (version bytes %02x %02x %02x "
                       "%02x read as version %u byte-swapped): only "
                       "little-endian files are supported",
                       r->p[4], r->p[5], r->p[6], r->p[7], (unsigned)sw);
    if (v == 1)
        return gg_fail(ctx, HVQ_E_INPUT, r->path,
                       "unsupported version 1 (GGUF v1, with 32-bit counts, "
                       "is obsolete; only versions 2 and 3 are read)");
    if (v != 2 && v != 3)
        return gg_fail(ctx, HVQ_E_INPUT, r->path,
                       "unsupported version %u (only versions 2 and 3 are "
                       "read)",
                       (unsigned)v);
    s->version = v;
    st = gg_read_u64(r, "the tensor count", n_tensors);
    if (st == HVQ_OK)
        st = gg_read_u64(r, "the metadata count", n_kv);
    if (st != HVQ_OK)
        return st;
    room = r->size - r->pos;
    if (*n_kv > room / GG_MIN_KV_BYTES)
        return gg_fail(ctx, HVQ_E_INPUT, r->path,
                       "the header declares %llu metadata entries, but the "
                       "%llu bytes after it can hold at most %llu (each "
                       "needs at least %u bytes; truncated or corrupt?)",
                       (unsigned long long)*n_kv, (unsigned long long)room,
                       (unsigned long long)(room / GG_MIN_KV_BYTES),
                       GG_MIN_KV_BYTES);
    room -= *n_kv * GG_MIN_KV_BYTES;
    if (*n_tensors > room / GG_MIN_TENSOR_BYTES)
        return gg_fail(ctx, HVQ_E_INPUT, r->path,
                       "the header declares %llu tensors, but the file has "
                       "room for at most %llu tensor infos after the "
                       "metadata (each needs at least %u bytes; truncated "
                       "or corrupt?)",
                       (unsigned long long)*n_tensors,
                       (unsigned long long)(room / GG_MIN_TENSOR_BYTES),
                       GG_MIN_TENSOR_BYTES);
    return HVQ_OK;
}

/* A metadata value (of type type, at r) as its JSON text, malloc'd: the
 * buffer it is written into becomes the value, so that a value of
 * hundreds of megabytes (a tokenizer's arrays) is never copied. */
static hvq_status gg_read_value(gg_reader *r, uint32_t type,
                                const char **value)
{
    hvq_buf b;
    char *v;
    hvq_status st;
    hvq_buf_init(&b);
    st = gg_meta_to_json(r, type, &b);
    v = st == HVQ_OK ? realloc(b.data, b.len + 1) : NULL;
    if (v == NULL) {
        hvq_buf_free(&b);
        return st != HVQ_OK ? st
                            : gg_fail(r->ctx, HVQ_E_NOMEM, r->path,
                                      "out of memory");
    }
    v[b.len] = '\0';
    *value = v;
    return HVQ_OK;
}

/* The metadata entries, into s->meta. */
/* A name at r (a metadata key, a tensor name: `field` of `entry` i,
 * which starts at byte at): non-empty UTF-8 without NUL, copied. */
static hvq_status gg_read_text(gg_reader *r, const char *entry, const char *field,
                               uint64_t max, uint64_t i, uint64_t at, char **out)
{
    const unsigned char *text;
    uint64_t len;
    hvq_status st = gg_read_str(r, field, max, &text, &len);
    if (st != HVQ_OK)
        return st;
    if (len == 0 || memchr(text, 0, (size_t)len) != NULL ||
        !hvq_json_utf8_valid((const char *)text, (size_t)len))
        return gg_fail(r->ctx, HVQ_E_INPUT, r->path, "%s %llu at byte %llu: %s is %s", entry,
                       (unsigned long long)i, (unsigned long long)at, field,
                       len == 0 ? "empty" : "not valid UTF-8 text without NUL");
    *out = gg_strndup(r->ctx, text, len);
    return *out ? HVQ_OK : HVQ_E_NOMEM;
}

/* general.alignment's value at r (not consumed): a uint32 power of two. */
static hvq_status gg_read_alignment(gg_reader *r, gg_source *s, uint32_t type)
{
    if (type != GG_UINT32)
        return gg_fail(r->ctx, HVQ_E_INPUT, r->path, "%s has type %s; it must be uint32",
                       GG_ALIGNMENT_KEY, gg_vtype_name(type));
    hvq_status st = gg_need(r, 4, "the value");
    if (st != HVQ_OK)
        return st;
    uint32_t a = (uint32_t)r->p[r->pos] | (uint32_t)r->p[r->pos + 1] << 8 |
                 (uint32_t)r->p[r->pos + 2] << 16 | (uint32_t)r->p[r->pos + 3] << 24;
    if (a == 0 || (a & (a - 1)) != 0)
        return gg_fail(r->ctx, HVQ_E_INPUT, r->path,
                       "%s is %u at byte %llu; it must be a power of two", GG_ALIGNMENT_KEY,
                       (unsigned)a, (unsigned long long)r->pos);
    s->alignment = a;
    return HVQ_OK;
}

/* Metadata entry i: its key, value type and value (as JSON text). */
static hvq_status gg_read_entry(gg_reader *r, gg_source *s, uint64_t i)
{
    hvq_meta *m = &s->meta[i];
    uint32_t type;
    char *key = NULL;
    snprintf(r->where, sizeof r->where, "metadata entry %llu", (unsigned long long)i);
    hvq_status st = gg_read_text(r, "metadata entry", "the key", GG_MAX_KEY, i, r->pos, &key);
    if (st != HVQ_OK)
        return st;
    m->key = key;
    s->n_meta = (size_t)i + 1; /* from here on freed with s */
    snprintf(r->where, sizeof r->where, "metadata entry %llu ('%.200s')", (unsigned long long)i,
             m->key);
    uint64_t tpos = r->pos;
    if ((st = gg_read_u32(r, "the value type", &type)) != HVQ_OK)
        return st;
    if (gg_vtype_name(type) == NULL)
        return gg_fail(r->ctx, HVQ_E_INPUT, r->path, "%s: unknown value type %u at byte %llu",
                       r->where, (unsigned)type, (unsigned long long)tpos);
    if (strcmp(m->key, GG_ALIGNMENT_KEY) == 0 && (st = gg_read_alignment(r, s, type)) != HVQ_OK)
        return st;
    if ((st = gg_read_value(r, type, &m->value)) != HVQ_OK)
        return st;
    gg_release(r, 0);
    return HVQ_OK;
}

/* Every key once. */
static hvq_status gg_unique_keys(gg_reader *r, gg_source *s, uint64_t n_kv)
{
    hvq_status st = HVQ_OK;
    gg_keyref *refs = s->host->calloc(r->ctx, n_kv ? (size_t)n_kv : 1, sizeof *refs);
    if (refs == NULL)
        return HVQ_E_NOMEM;
    for (uint64_t i = 0; i < n_kv; i++) {
        refs[i].key = s->meta[i].key;
        refs[i].index = (size_t)i;
    }
    if (n_kv > 1)
        qsort(refs, (size_t)n_kv, sizeof *refs, gg_keyref_cmp);
    for (uint64_t i = 1; i < n_kv && st == HVQ_OK; i++)
        if (strcmp(refs[i].key, refs[i - 1].key) == 0)
            st = gg_fail(r->ctx, HVQ_E_INPUT, r->path,
                         "duplicate metadata key '%.200s' (entries %zu and %zu)", refs[i].key,
                         refs[i - 1].index, refs[i].index);
    s->host->free(refs);
    return st;
}

static hvq_status gg_read_meta(gg_reader *r, gg_source *s, uint64_t n_kv)
{
    s->meta = s->host->calloc(r->ctx, n_kv ? (size_t)n_kv : 1, sizeof *s->meta);
    if (s->meta == NULL)
        return HVQ_E_NOMEM;
    for (uint64_t i = 0; i < n_kv; i++) {
        hvq_status st = gg_read_entry(r, s, i);
        if (st != HVQ_OK)
            return st;
    }
    r->where[0] = '\0';
    return gg_unique_keys(r, s, n_kv);
}

/* Tensor info i's name. */
static hvq_status gg_read_tensor_name(gg_reader *r, uint64_t i, gg_tensor *t)
{
    char *name = NULL;
    hvq_status st = gg_read_text(r, "tensor info", "the name", GG_MAX_NAME, i, t->info_pos,
                                 &name);
    t->info.name = name;
    if (st == HVQ_OK)
        snprintf(r->where, sizeof r->where, "tensor '%.200s'", t->info.name);
    return st;
}

static hvq_status gg_read_tensor_dims(gg_reader *r, const gg_tensor *t, uint32_t *nd,
                                      uint64_t ne[GG_MAX_DIMS])
{
    uint64_t at = r->pos;
    hvq_status st = gg_read_u32(r, "the number of dimensions", nd);
    if (st != HVQ_OK)
        return st;
    if (*nd > GG_MAX_DIMS)
        return gg_fail(r->ctx, HVQ_E_INPUT, r->path,
                       "tensor '%.200s': n_dims %u at byte %llu is more "
                       "than GGUF's maximum of %d",
                       t->info.name, (unsigned)*nd, (unsigned long long)at,
                       GG_MAX_DIMS);
    for (uint32_t d = 0; d < *nd; d++) {
        at = r->pos;
        st = gg_read_u64(r, "a dimension", &ne[d]);
        if (st != HVQ_OK)
            return st;
        if (ne[d] > (uint64_t)INT64_MAX)
            return gg_fail(r->ctx, HVQ_E_INPUT, r->path,
                           "tensor '%.200s': dimension ne[%u] = %llu at "
                           "byte %llu is too large",
                           t->info.name, (unsigned)d,
                           (unsigned long long)ne[d], (unsigned long long)at);
    }
    return HVQ_OK;
}

/* The ggml type id, known to this reader. */
static hvq_status gg_read_tensor_type(gg_reader *r, const gg_tensor *t, uint32_t *tid,
                                      const gg_type **type)
{
    uint64_t at = r->pos;
    hvq_status st = gg_read_u32(r, "the type", tid);
    if (st != HVQ_OK)
        return st;
    *type = gg_type_by_id(*tid);
    if (*type == NULL) {
        const char *old = gg_removed_type_name(*tid);
        return gg_fail(r->ctx, HVQ_E_INPUT, r->path,
                       "tensor '%.200s': unknown ggml type id %u at byte "
                       "%llu%s%s%s",
                       t->info.name, (unsigned)*tid, (unsigned long long)at,
                       old ? " (" : "", old ? old : "",
                       old ? ", removed from ggml)" : "");
    }
    return HVQ_OK;
}

/* The shape (reversed into hvq order) against the type's blocks, the byte
 * size in the file, and what the tensor is read as (Q8_0 and Q4_0 as F32,
 * the others as stored). offset_at: where the data offset was read. */
static hvq_status gg_tensor_layout(gg_reader *r, const gg_source *s, gg_tensor *t,
                                   uint32_t nd, const uint64_t *ne, uint32_t tid,
                                   const gg_type *type, uint64_t offset_at)
{
    hvq_ctx *ctx = r->ctx;
    uint64_t numel = 1, bytes;
    char desc[256];
    t->info.ndim = (int)nd;
    for (uint32_t d = 0; d < nd; d++)
        t->info.shape[d] = (int64_t)ne[nd - 1 - d];
    hvq_shape_text(desc, sizeof desc, type->name, t->info.ndim, t->info.shape);
    if (!hvq_shape_numel(t->info.ndim, t->info.shape, &numel))
        return gg_fail(ctx, HVQ_E_INPUT, r->path,
                       "tensor '%.200s': the dimensions overflow: the "
                       "non-zero dimensions of %s multiply past 63 bits",
                       t->info.name, desc);
    if (nd > 0 && ne[0] % type->blck != 0)
        return gg_fail(ctx, HVQ_E_INPUT, r->path,
                       "tensor '%.200s': the row length ne[0] = %llu of %s "
                       "is not a multiple of the %s block size %u",
                       t->info.name, (unsigned long long)ne[0], desc,
                       type->name, (unsigned)type->blck);
    if (nd == 0 && type->blck != 1)
        return gg_fail(ctx, HVQ_E_INPUT, r->path,
                       "tensor '%.200s': a scalar cannot be of the block "
                       "type %s",
                       t->info.name, type->name);
    if (!hvq_mul_u64(numel / type->blck, type->size, &bytes))
        return gg_fail(ctx, HVQ_E_INPUT, r->path,
                       "tensor '%.200s': the byte size of %s does not fit "
                       "in 64 bits",
                       t->info.name, desc);
    if (t->offset % s->alignment != 0)
        return gg_fail(ctx, HVQ_E_INPUT, r->path,
                       "tensor '%.200s': data offset %llu (at byte %llu) "
                       "is not a multiple of the alignment %u",
                       t->info.name, (unsigned long long)t->offset,
                       (unsigned long long)offset_at, (unsigned)s->alignment);
    t->type = type;
    t->file_bytes = bytes;
    t->info.dtype = type->dtype;
    t->info.dtype_name = type->name;
    t->info.nbytes = bytes;
    if (tid == GG_TYPE_Q8_0 || tid == GG_TYPE_Q4_0) {
        if (!hvq_mul_u64(numel, 4, &t->info.nbytes))
            return gg_fail(ctx, HVQ_E_INPUT, r->path,
                           "tensor '%.200s': %s is too large to dequantize",
                           t->info.name, desc);
        t->info.dtype = HVQ_DTYPE_F32;
        t->info.dtype_name = "F32";
    }
    return HVQ_OK;
}

/* One tensor info at r into t. */
static hvq_status gg_read_tensor_info(gg_reader *r, gg_source *s,
                                      uint64_t i, gg_tensor *t)
{
    uint64_t ne[GG_MAX_DIMS], offset_at;
    uint32_t nd, tid;
    const gg_type *type;
    hvq_status st;

    t->info_pos = r->pos;
    snprintf(r->where, sizeof r->where, "tensor info %llu",
             (unsigned long long)i);
    if ((st = gg_read_tensor_name(r, i, t)) != HVQ_OK ||
        (st = gg_read_tensor_dims(r, t, &nd, ne)) != HVQ_OK ||
        (st = gg_read_tensor_type(r, t, &tid, &type)) != HVQ_OK)
        return st;
    offset_at = r->pos;
    st = gg_read_u64(r, "the data offset", &t->offset);
    if (st != HVQ_OK)
        return st;
    return gg_tensor_layout(r, s, t, nd, ne, tid, type, offset_at);
}

static int gg_tensor_cmp(const void *a, const void *b)
{
    const gg_tensor *x = *(const gg_tensor *const *)a;
    const gg_tensor *y = *(const gg_tensor *const *)b;
    uint64_t xe = x->offset + x->file_bytes, ye = y->offset + y->file_bytes;
    if (x->offset != y->offset)
        return x->offset < y->offset ? -1 : 1;
    if (xe != ye)
        return xe < ye ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

static int gg_tensor_name_cmp(const void *a, const void *b)
{
    return strcmp((*(const gg_tensor *const *)a)->info.name,
                  (*(const gg_tensor *const *)b)->info.name);
}

/* The tensor infos, the data section, and every cross-tensor check. */
static hvq_status gg_read_tensors(gg_reader *r, gg_source *s,
                                  uint64_t n_tensors)
{
    hvq_ctx *ctx = r->ctx;
    const hvq_host *h = s->host;
    gg_tensor **order = NULL;
    uint64_t i, data_len, end;
    hvq_status st = HVQ_OK;

    s->tensors = h->calloc(ctx, n_tensors ? (size_t)n_tensors : 1,
                           sizeof *s->tensors);
    if (s->tensors == NULL)
        return HVQ_E_NOMEM;
    for (i = 0; i < n_tensors; i++) {
        gg_tensor *t = &s->tensors[i];
        t->order = (size_t)i;
        s->n_tensors = (size_t)i + 1; /* its name is freed with s */
        st = gg_read_tensor_info(r, s, i, t);
        if (st != HVQ_OK)
            return st;
    }
    r->where[0] = '\0';

    /* The data section starts at the next multiple of the alignment. */
    if (!gg_align_up(r->pos, s->alignment, &s->data_start))
        return gg_fail(ctx, HVQ_E_INPUT, r->path, "header too large");
    if (s->data_start > r->size) {
        if (n_tensors > 0)
            return gg_fail(ctx, HVQ_E_INPUT, r->path,
                           "truncated: the header ends at byte %llu and the "
                           "data section would start at byte %llu, but the "
                           "file ends at byte %llu",
                           (unsigned long long)r->pos,
                           (unsigned long long)s->data_start,
                           (unsigned long long)r->size);
        s->data_start = r->size;
    }
    data_len = r->size - s->data_start;

    if (n_tensors == 0)
        return HVQ_OK;
    order = h->calloc(ctx, (size_t)n_tensors, sizeof *order);
    if (order == NULL)
        return HVQ_E_NOMEM;

    /* Unique names. */
    for (i = 0; i < n_tensors; i++)
        order[i] = &s->tensors[i];
    qsort(order, (size_t)n_tensors, sizeof *order, gg_tensor_name_cmp);
    for (i = 1; i < n_tensors; i++)
        if (strcmp(order[i]->info.name, order[i - 1]->info.name) == 0) {
            size_t a = order[i]->order, b = order[i - 1]->order;
            st = gg_fail(ctx, HVQ_E_INPUT, r->path,
                         "duplicate tensor name '%.200s' (tensor infos %zu "
                         "and %zu)",
                         order[i]->info.name, a < b ? a : b, a < b ? b : a);
            goto out;
        }

    /* In bounds. */
    for (i = 0; i < n_tensors; i++) {
        const gg_tensor *t = &s->tensors[i];
        if (t->offset > data_len || t->file_bytes > data_len - t->offset) {
            st = gg_fail(ctx, HVQ_E_INPUT, r->path,
                         "tensor '%.200s': its %llu bytes at data offset "
                         "%llu go beyond the end of the file (the data "
                         "section starts at byte %llu and has %llu bytes; "
                         "truncated?)",
                         t->info.name, (unsigned long long)t->file_bytes,
                         (unsigned long long)t->offset,
                         (unsigned long long)s->data_start,
                         (unsigned long long)data_len);
            goto out;
        }
    }

    /* No overlaps: sorted by offset, each starts where the last ended or
     * later. */
    qsort(order, (size_t)n_tensors, sizeof *order, gg_tensor_cmp);
    end = 0;
    for (i = 0; i < n_tensors; i++) {
        const gg_tensor *t = order[i];
        if (i > 0 && t->offset < end) {
            const gg_tensor *p = order[i - 1];
            st = gg_fail(ctx, HVQ_E_INPUT, r->path,
                         "tensor '%.200s' (data bytes [%llu, %llu)) "
                         "overlaps tensor '%.200s' ([%llu, %llu))",
                         t->info.name, (unsigned long long)t->offset,
                         (unsigned long long)(t->offset + t->file_bytes),
                         p->info.name, (unsigned long long)p->offset,
                         (unsigned long long)(p->offset + p->file_bytes));
            goto out;
        }
        if (t->offset + t->file_bytes > end)
            end = t->offset + t->file_bytes;
    }
out:
    h->free(order);
    return st;
}

static hvq_status gg_source_open(hvq_ctx *ctx, const char *path,
                                 void **state)
{
    gg_source *s;
    gg_reader r;
    uint64_t n_tensors = 0, n_kv = 0;
    hvq_status st;

    *state = NULL;
    if (path == NULL)
        return ctx->host->error(ctx, HVQ_E_INTERNAL, "gguf: no path given");
    s = ctx->host->calloc(ctx, 1, sizeof *s);
    if (s == NULL)
        return HVQ_E_NOMEM;
    s->host = ctx->host;
    s->alignment = GG_DEFAULT_ALIGNMENT;
    s->path = ctx->host->strdup(ctx, path);
    if (s->path == NULL) {
        gg_source_free(s);
        return HVQ_E_NOMEM;
    }
    st = gg_map(ctx, s, path);
    if (st == HVQ_OK) {
        memset(&r, 0, sizeof r);
        r.ctx = ctx;
        r.path = s->path;
        r.p = s->map;
        r.mapped = 1;
        r.size = s->size;
        st = gg_read_preamble(&r, s, &n_tensors, &n_kv);
    }
    if (st == HVQ_OK)
        st = gg_read_meta(&r, s, n_kv);
    if (st == HVQ_OK)
        st = gg_read_tensors(&r, s, n_tensors);
    if (st != HVQ_OK) {
        gg_source_free(s);
        return st;
    }
    gg_release(&r, 1); /* the header: read, and kept in memory of its own */
    ctx->host->log(ctx, HVQ_LOG_DEBUG,
                   "%s: GGUF v%u, %zu tensors, %zu metadata entries, "
                   "alignment %u",
                   path, (unsigned)s->version, s->n_tensors, s->n_meta,
                   (unsigned)s->alignment);
    *state = s;
    return HVQ_OK;
}

static size_t gg_source_count(void *state)
{
    const gg_source *s = state;
    return s != NULL ? s->n_tensors : 0;
}

static hvq_status gg_source_info(void *state, size_t i, hvq_tensor_info *info)
{
    const gg_source *s = state;
    if (s == NULL || info == NULL || i >= s->n_tensors)
        return HVQ_E_INTERNAL;
    *info = s->tensors[i].info;
    return HVQ_OK;
}

/* s->buf with room for n bytes. */
static hvq_status gg_reserve(hvq_ctx *ctx, gg_source *s, uint64_t n)
{
    void *p;
    if (n <= s->buf_cap)
        return HVQ_OK;
    if (n > (uint64_t)SIZE_MAX)
        return gg_fail(ctx, HVQ_E_NOMEM, s->path,
                       "a tensor of %llu bytes does not fit in memory",
                       (unsigned long long)n);
    p = s->host->realloc(ctx, s->buf, (size_t)n);
    if (p == NULL)
        return HVQ_E_NOMEM;
    s->buf = p;
    s->buf_cap = (size_t)n;
    return HVQ_OK;
}

static void gg_dequant_q8_0(const unsigned char *src, float *dst,
                            uint64_t nblocks)
{
    uint64_t b;
    int j;
    for (b = 0; b < nblocks; b++, src += 34, dst += 32) {
        float d = hvq_f16_to_f32((uint16_t)(src[0] | src[1] << 8));
        for (j = 0; j < 32; j++)
            dst[j] = (float)(int8_t)src[2 + j] * d;
    }
}

static void gg_dequant_q4_0(const unsigned char *src, float *dst,
                            uint64_t nblocks)
{
    uint64_t b;
    int j;
    for (b = 0; b < nblocks; b++, src += 18, dst += 32) {
        float d = hvq_f16_to_f32((uint16_t)(src[0] | src[1] << 8));
        for (j = 0; j < 16; j++) {
            dst[j] = (float)((int)(src[2 + j] & 0x0f) - 8) * d;
            dst[j + 16] = (float)((int)(src[2 + j] >> 4) - 8) * d;
        }
    }
}

static hvq_status gg_source_read(hvq_ctx *ctx, void *state, size_t i,
                                 hvq_tensor *t)
{
    gg_source *s = state;
    const gg_tensor *x;
    const unsigned char *p;
    hvq_status st;
    if (s == NULL || t == NULL)
        return ctx->host->error(ctx, HVQ_E_INTERNAL,
                                "gguf: source_read without a source");
    if (i >= s->n_tensors)
        return ctx->host->error(ctx, HVQ_E_INTERNAL,
                                "%s: tensor index %zu out of range (%zu "
                                "tensors)",
                                s->path, i, s->n_tensors);
    x = &s->tensors[i];
    p = s->map != NULL ? s->map + s->data_start + x->offset : NULL;
    t->info = x->info;
    if (x->type->id == GG_TYPE_Q8_0 || x->type->id == GG_TYPE_Q4_0) {
        uint64_t nblocks = x->file_bytes / x->type->size;
        st = gg_reserve(ctx, s, x->info.nbytes);
        if (st != HVQ_OK)
            return st;
        if (x->type->id == GG_TYPE_Q8_0)
            gg_dequant_q8_0(p, s->buf, nblocks);
        else
            gg_dequant_q4_0(p, s->buf, nblocks);
        t->data = s->buf;
        return HVQ_OK;
    }
    /* Zero-copy, unless an alignment below the element size left the data
     * misaligned for its type: then an aligned copy. */
    if (p != NULL && x->type->blck == 1 && x->type->size > 1 &&
        (uintptr_t)p % x->type->size != 0) {
        st = gg_reserve(ctx, s, x->file_bytes);
        if (st != HVQ_OK)
            return st;
        memcpy(s->buf, p, (size_t)x->file_bytes);
        p = s->buf;
    }
    t->data = p;
    return HVQ_OK;
}

static void gg_source_meta(void *state, const hvq_meta **meta, size_t *n)
{
    const gg_source *s = state;
    if (meta != NULL)
        *meta = s != NULL ? s->meta : NULL;
    if (n != NULL)
        *n = s != NULL ? s->n_meta : 0;
}

static void gg_source_close(hvq_ctx *ctx, void *state)
{
    (void)ctx;
    gg_source_free(state);
}

/* ------------------------------------------------------------------------
 * Sink
 * ---------------------------------------------------------------------- */
/* A sink keeps no copy of the declarations: the host checks every write
 * against them (core/sink.c), so t->info is the declared tensor. */
typedef struct gg_sink {
    const hvq_host *host;
    char *path;
    hvq_output *out;
    uint32_t alignment;
} gg_sink;

static void gg_sink_free(gg_sink *k)
{
    if (k == NULL)
        return;
    k->host->free(k->path);
    k->host->free(k);
}

/* The ggml type of a declared tensor, checked against its shape and size. */
static hvq_status gg_check_tensor(hvq_ctx *ctx, const char *path,
                                  const hvq_tensor_info *t, const gg_type **out)
{
    const gg_type *type;
    uint64_t numel = 1, bytes;
    size_t nlen;
    char desc[256];

    nlen = strlen(t->name);
    if (nlen > GG_MAX_NAME_WRITTEN)
        return gg_fail(ctx, HVQ_E_UNSUPPORTED, path,
                       "tensor name '%.200s' is %zu bytes; GGUF readers "
                       "(llama.cpp) accept at most %u",
                       t->name, nlen, GG_MAX_NAME_WRITTEN);
    if (t->ndim < 0 || t->ndim > GG_MAX_DIMS)
        return gg_fail(ctx, HVQ_E_UNSUPPORTED, path,
                       "tensor '%.200s': %d dimensions; GGUF allows at "
                       "most %d",
                       t->name, t->ndim, GG_MAX_DIMS);
    if (t->dtype == HVQ_DTYPE_OPAQUE) {
        type = gg_type_by_name(t->dtype_name);
        if (type == NULL)
            return gg_fail(ctx, HVQ_E_UNSUPPORTED, path,
                           "tensor '%.200s': dtype '%.60s' is not a ggml "
                           "type and cannot be stored in GGUF",
                           t->name, t->dtype_name ? t->dtype_name : "(none)");
    } else {
        type = gg_type_by_dtype(t->dtype);
        if (type == NULL)
            return gg_fail(ctx, HVQ_E_UNSUPPORTED, path,
                           "tensor '%.200s': dtype %s cannot be stored in "
                           "GGUF (it has no unsigned integer or bool "
                           "tensor types)",
                           t->name,
                           ctx->host->dtype_name(t->dtype)
                               ? ctx->host->dtype_name(t->dtype)
                               : "?");
    }
    hvq_shape_text(desc, sizeof desc, type->name, t->ndim, t->shape);
    numel = hvq_numel(t); /* the host checked the shape rule */
    if (type->blck > 1 &&
        (t->ndim == 0 || (uint64_t)t->shape[t->ndim - 1] % type->blck != 0))
        return gg_fail(ctx, HVQ_E_INPUT, path,
                       "tensor '%.200s': the row length of %s is not a "
                       "multiple of the %s block size %u",
                       t->name, desc, type->name, (unsigned)type->blck);
    if (!hvq_mul_u64(numel / type->blck, type->size, &bytes))
        return gg_fail(ctx, HVQ_E_INPUT, path,
                       "tensor '%.200s': the byte size of %s does not fit "
                       "in 64 bits",
                       t->name, desc);
    if (bytes != t->nbytes)
        return gg_fail(ctx, HVQ_E_INPUT, path,
                       "tensor '%.200s': declared as %llu bytes but %s "
                       "needs %llu",
                       t->name, (unsigned long long)t->nbytes, desc,
                       (unsigned long long)bytes);
    *out = type;
    return HVQ_OK;
}

static hvq_status gg_write_zeros(hvq_ctx *ctx, hvq_output *out, uint64_t n)
{
    static const unsigned char zeros[4096];
    while (n > 0) {
        size_t c = n > sizeof zeros ? sizeof zeros : (size_t)n;
        hvq_status st = ctx->host->output_write(ctx, out, zeros, c);
        if (st != HVQ_OK)
            return st;
        n -= c;
    }
    return HVQ_OK;
}

/* The sink's state, with its output open (the file not yet written). */
static hvq_status gg_sink_new(hvq_ctx *ctx, const char *path, uint32_t alignment,
                              gg_sink **out)
{
    const hvq_host *h = ctx->host;
    gg_sink *k = h->calloc(ctx, 1, sizeof *k);
    hvq_status st;

    *out = k;
    if (k == NULL)
        return HVQ_E_NOMEM;
    k->host = h;
    k->alignment = alignment;
    k->path = h->strdup(ctx, path);
    if (k->path == NULL)
        return HVQ_E_NOMEM;
    k->out = h->output_open(ctx, path);
    if (k->out != NULL)
        return HVQ_OK;
    st = h->status(ctx); /* the host has set the message and status */
    return st != HVQ_OK ? st : HVQ_E_IO;
}

/* The header (magic, version, counts, metadata, tensor infos, zero
 * padding to the alignment) to o, drained to its end. Run twice: counting
 * only (o->out NULL), which checks every value, then writing; typed[i]
 * carries what the first run learnt of entry i (gg_meta_from_text). */
static hvq_status gg_write_header(hvq_ctx *ctx, const char *path,
                                  const hvq_meta *meta, size_t n_meta,
                                  const hvq_tensor_info *tensors,
                                  const gg_type *const *types, size_t n,
                                  gg_out *o, uint32_t *alignment,
                                  signed char *typed)
{
    static const char zero[256];
    uint64_t off = 0, len;
    size_t i;
    int d;
    hvq_status st = HVQ_OK;

    *alignment = GG_DEFAULT_ALIGNMENT;
    hvq_buf_append(&o->b, GG_MAGIC, 4);
    gg_put_u32(&o->b, GG_VERSION_WRITTEN);
    gg_put_u64(&o->b, (uint64_t)n);
    gg_put_u64(&o->b, (uint64_t)n_meta);
    for (i = 0; i < n_meta && st == HVQ_OK; i++)
        st = gg_meta_from_text(ctx, path, &meta[i], o, alignment, &typed[i]);
    for (i = 0; i < n && st == HVQ_OK; i++) {
        const hvq_tensor_info *t = &tensors[i];
        uint64_t padded;
        size_t nlen = strlen(t->name);
        gg_put_u64(&o->b, (uint64_t)nlen);
        hvq_buf_append(&o->b, t->name, nlen);
        gg_put_u32(&o->b, (uint32_t)t->ndim);
        for (d = t->ndim - 1; d >= 0; d--)
            gg_put_u64(&o->b, (uint64_t)t->shape[d]);
        gg_put_u32(&o->b, types[i]->id);
        gg_put_u64(&o->b, off);
        if (!gg_align_up(t->nbytes, *alignment, &padded) ||
            !hvq_add_u64(off, padded, &off))
            return gg_fail(ctx, HVQ_E_INPUT, path,
                           "the tensors add up to more than 2^64 bytes");
        st = gg_out_drain(o, 0);
    }
    if (st != HVQ_OK)
        return st;
    len = o->drained + o->b.len;
    while (len % *alignment != 0) {
        size_t c = *alignment - len % *alignment;
        c = c > sizeof zero ? sizeof zero : c;
        hvq_buf_append(&o->b, zero, c);
        len += c;
    }
    return gg_out_drain(o, 1);
}

static hvq_status gg_sink_create(hvq_ctx *ctx, const char *path,
                                 const hvq_meta *meta, size_t n_meta,
                                 const hvq_tensor_info *tensors, size_t n,
                                 void **state)
{
    const hvq_host *h = ctx->host;
    gg_sink *k = NULL;
    const gg_type **types = NULL;
    signed char *typed = NULL;
    gg_out o;
    uint32_t alignment;
    size_t i;
    hvq_status st;

    *state = NULL;
    memset(&o, 0, sizeof o);
    o.ctx = ctx;
    o.path = path;
    hvq_buf_init(&o.b);
    if (path == NULL)
        return h->error(ctx, HVQ_E_INTERNAL, "gguf: no output path");
    /* the host checked the declarations (core/sink.c) */
    types = h->calloc(ctx, n ? n : 1, sizeof *types);
    typed = h->alloc(ctx, n_meta ? n_meta : 1);
    st = types != NULL && typed != NULL ? HVQ_OK : HVQ_E_NOMEM;
    if (st != HVQ_OK)
        goto fail;
    memset(typed, -1, n_meta);
    for (i = 0; i < n; i++) {
        st = gg_check_tensor(ctx, path, &tensors[i], &types[i]);
        if (st != HVQ_OK)
            goto fail;
    }
    /* every value checked before the file is created */
    st = gg_write_header(ctx, path, meta, n_meta, tensors, types, n, &o,
                         &alignment, typed);
    if (st != HVQ_OK)
        goto fail;

    st = gg_sink_new(ctx, path, alignment, &k);
    if (st != HVQ_OK)
        goto fail;
    o.out = k->out;
    o.drained = 0;
    st = gg_write_header(ctx, path, meta, n_meta, tensors, types, n, &o,
                         &alignment, typed);
    if (st != HVQ_OK)
        goto fail;
    hvq_buf_free(&o.b);
    h->free(types);
    h->free(typed);
    *state = k;
    return HVQ_OK;
fail:
    hvq_buf_free(&o.b);
    h->free(types);
    h->free(typed);
    gg_sink_free(k);
    return st;
}

static hvq_status gg_sink_write(hvq_ctx *ctx, void *state,
                                const hvq_tensor *t)
{
    gg_sink *k = state;
    const unsigned char *p = t->data;
    uint64_t nbytes = t->info.nbytes, left = nbytes, padded;
    hvq_status st;

    /* The host checked the order, the sizes and the data (host->sink_write). */
    while (left > 0) {
        size_t chunk = left > (1u << 30) ? (size_t)1 << 30 : (size_t)left;
        st = ctx->host->output_write(ctx, k->out, p, chunk);
        if (st != HVQ_OK)
            return st;
        p += chunk;
        left -= chunk;
    }
    /* Padding to the alignment after every tensor, as ggml writes it. */
    if (!gg_align_up(nbytes, k->alignment, &padded))
        padded = nbytes; /* cannot happen: checked in create */
    return gg_write_zeros(ctx, k->out, padded - nbytes);
}

static hvq_status gg_sink_finish(hvq_ctx *ctx, void *state)
{
    (void)ctx; (void)state; /* every tensor is written, padded (the host
                               checked that all were) */
    return HVQ_OK;
}

static void gg_sink_close(hvq_ctx *ctx, void *state)
{
    (void)ctx;
    gg_sink_free(state);
}

/* ------------------------------------------------------------------------
 * Descriptor
 * ---------------------------------------------------------------------- */
static const hvq_plugin gg_plugin = {
    HVQ_PLUGIN_HEADER,
    .kinds = HVQ_KIND_SOURCE | HVQ_KIND_SINK,
    .flags = 0,
    .name = "gguf",
    .version = "1.0.0",
    .summary = "GGUF v2/v3 (llama.cpp); Q8_0/Q4_0 read as F32, other "
               "quantized types copied as is",
    .license = "MIT",
    .params = NULL,
    .probe = gg_probe,
    .source_open = gg_source_open,
    .source_count = gg_source_count,
    .source_info = gg_source_info,
    .source_read = gg_source_read,
    .source_meta = gg_source_meta,
    .source_close = gg_source_close,
    .sink_create = gg_sink_create,
    .sink_write = gg_sink_write,
    .sink_finish = gg_sink_finish,
    .sink_close = gg_sink_close,
    .extensions = GG_EXT,
};

HVQ_REGISTER_PLUGIN(gg_plugin)
