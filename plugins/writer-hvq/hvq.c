/* writer "hvq": the native compressed container (docs/FORMAT.md).
 *
 * The container is a valid safetensors file: an 8-byte little-endian header
 * length R, R bytes of JSON header (padded with spaces), then the data
 * section. Every original tensor is listed, in source order, in the
 * metadata key "hvq.tensors"; pass-through tensors are stored under their
 * own name and bytes, compressed ones as their components
 * (NAME::scales, NAME::clusterer.<c>, NAME::residual.<c>).
 *
 * Streaming: component sizes are unknown until each tensor arrives, so the
 * header cannot be written first. The data section is kept in memory while
 * it is small (buffer_mib, 64 MiB by default); a container that never
 * outgrows it gets an exact header (padded to a multiple of 8). When the
 * buffer would overflow, the writer fixes the header size R for good: twice
 * the exact size of the header so far (metadata and the entries of the
 * tensors seen), plus 16 KiB, plus an upper bound for each tensor still to
 * come (computed at writer_open from its name, shape and whether it is
 * compressed, raised to twice the largest entry seen when that is more).
 * From then on every byte goes straight to its final offset 8 + R + offset
 * in the output, and writer_finish pads the header with spaces to exactly R
 * so every offset stays valid. The writer keeps the exact size of the
 * header built so far; should later plugins produce so many attributes or
 * components that it can no longer fit (data already written cannot be
 * read back through the host table to move it), the writer stops at once
 * with an error naming the size to pass as header_reserve, and the host
 * discards the partial output. Nothing is renamed or deleted here: the
 * host commits outputs after the run.
 */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include "plugin.h"
#include "crc32.h"
#include "buf.h"
#include "json.h"

#include <stdio.h>
#include <string.h>

#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION "unknown"
#endif

#define HW_FORMAT_VERSION "1"
/* The largest header safetensors readers accept (the reference
 * implementation's limit); a multiple of 8. */
#define HW_MAX_HEADER 100000000ull
#define HW_CHUNK ((size_t)1 << 28)

enum { P_HEADER_RESERVE, P_BUFFER_MIB };

static const hvq_param_spec hw_params[] = {
    {"header_reserve", HVQ_PARAM_INT, "0", 0, 97656, NULL,
     "KiB reserved for the container header, the data then streams straight to the "
     "output; 0 = automatic (exact for small models, else a generous estimate)"},
    {"buffer_mib", HVQ_PARAM_INT, "64", 0, 65536, NULL,
     "MiB of data kept in memory before the header size is fixed; a container that fits "
     "gets an exact header; 0 = stream from the first tensor"},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

/* Every dtype name of the safetensors specification. */
static const char *const st_dtypes[] = {
    "F32",     "F16",     "BF16",    "F64", "I8",  "U8", "I16",     "U16",     "I32",     "U32",
    "I64",     "U64",     "BOOL",    "F8_E4M3", "F8_E5M2", "F8_E8M0", "C64", "F4", "F6_E2M3",
    "F6_E3M2", NULL};

static int is_st_dtype(const char *s)
{
    for (size_t i = 0; st_dtypes[i]; i++)
        if (strcmp(s, st_dtypes[i]) == 0)
            return 1;
    return 0;
}

static void hw_put_shape(hvq_buf *b, int ndim, const int64_t *shape)
{
    hvq_buf_append(b, "[", 1);
    for (int d = 0; d < ndim; d++) {
        if (d)
            hvq_buf_append(b, ",", 1);
        hvq_buf_putu(b, (unsigned long long)shape[d]);
    }
    hvq_buf_append(b, "]", 1);
}

/* ---- a set of stored tensor names (open addressing) ------------------- */

typedef struct hw_set {
    char **slot;
    size_t cap, n;
} hw_set;

static uint64_t hw_hash(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        h = (h ^ *p) * 0x100000001b3ull;
    return h;
}

/* Adds a copy of s: 1 added, 0 already present, -1 out of memory. */
static int hw_set_add(hvq_ctx *ctx, hw_set *set, const char *s)
{
    const hvq_host *H = ctx->host;
    if (2 * (set->n + 1) > set->cap) {
        size_t cap = set->cap ? set->cap * 2 : 64;
        char **slot = H->calloc(ctx, cap, sizeof *slot);
        if (!slot)
            return -1;
        for (size_t i = 0; i < set->cap; i++)
            if (set->slot[i]) {
                size_t j = (size_t)hw_hash(set->slot[i]) & (cap - 1);
                while (slot[j])
                    j = (j + 1) & (cap - 1);
                slot[j] = set->slot[i];
            }
        H->free(set->slot);
        set->slot = slot;
        set->cap = cap;
    }
    size_t j = (size_t)hw_hash(s) & (set->cap - 1);
    while (set->slot[j]) {
        if (strcmp(set->slot[j], s) == 0)
            return 0;
        j = (j + 1) & (set->cap - 1);
    }
    if (!(set->slot[j] = H->strdup(ctx, s)))
        return -1;
    set->n++;
    return 1;
}

static void hw_set_free(const hvq_host *H, hw_set *set)
{
    for (size_t i = 0; i < set->cap; i++)
        H->free(set->slot[i]);
    H->free(set->slot);
    memset(set, 0, sizeof *set);
}

/* ---- the writer state ------------------------------------------------- */

typedef struct hw_state {
    char *path;
    hvq_output *out;
    uint64_t reserve;       /* R: header bytes before the data, once fixed */
    int fixed;              /* R is fixed and the data goes to the output */
    uint64_t user_reserve;  /* header_reserve in bytes, 0 = automatic */
    unsigned char *mem;     /* the data section while it is in memory */
    size_t mem_len, mem_cap, mem_max;
    uint64_t data_len;      /* bytes of the data section so far */
    char **names;           /* declared tensor names, in order */
    uint64_t *estimate;     /* per tensor: an upper bound of its header part */
    unsigned char *compressed; /* per tensor: declared compressed */
    uint64_t seen_max[2];   /* largest header part seen, raw / compressed */
    size_t seen_max_len[2]; /* the name length of that tensor */
    uint64_t before;        /* header size before the current tensor */
    size_t n, next;
    hw_set stored;          /* every stored tensor name */
    hvq_buf prefix;          /* header text up to the value of hvq.tensors */
    hvq_buf tensors;         /* hvq.tensors as raw JSON: "[{...},{...}" */
    uint64_t tensors_esc;   /* its length once escaped into the header */
    hvq_buf entries;         /* the safetensors tensor entries: ,"n":{...} */
    hvq_buf tmp;             /* scratch: one tensor's JSON */
    uint16_t *scales;       /* fp16 row scales of one tensor */
    size_t scales_cap;
} hw_state;

/* Exact header size with what is known now (the tensors so far). */
static uint64_t hw_header_size(const hw_state *s)
{
    /* prefix + "[...]" escaped in quotes + "}" closing __metadata__ +
     * entries + "}" closing the root */
    return s->prefix.len + 1 + s->tensors_esc + 1 + 1 + 1 + s->entries.len + 1;
}

static void hw_close(hvq_ctx *ctx, void *state);

static hvq_status hw_nomem(hvq_ctx *ctx, const hw_state *s)
{
    return ctx->host->error(ctx, HVQ_E_NOMEM, "%s: out of memory building the container header",
                            s->path);
}

static int hw_utf8(const char *s) { return s && hvq_json_utf8_valid(s, strlen(s)); }

static hvq_status hw_open(hvq_ctx *ctx, const hvq_params *params, const hvq_writer_setup *setup,
                          void **state)
{
    const hvq_host *H = ctx->host;
    hvq_status st = HVQ_OK;
    *state = NULL;
    hw_state *s = H->calloc(ctx, 1, sizeof *s);
    if (!s)
        return HVQ_E_NOMEM;
    *state = s; /* the host calls hw_close even when this fails */
    if (!(s->path = H->strdup(ctx, setup->output_path)))
        return HVQ_E_NOMEM;
    s->n = setup->n_tensors;
    if (!(s->names = H->calloc(ctx, s->n ? s->n : 1, sizeof *s->names)) ||
        !(s->estimate = H->calloc(ctx, s->n ? s->n : 1, sizeof *s->estimate)) ||
        !(s->compressed = H->calloc(ctx, s->n ? s->n : 1, 1)))
        return HVQ_E_NOMEM;

    /* Names; pass-through tensors keep theirs in the container. */
    for (size_t i = 0; i < s->n; i++) {
        const hvq_tensor_info *t = &setup->tensors[i];
        if (!hw_utf8(t->name))
            return H->error(ctx, HVQ_E_UNSUPPORTED,
                            "%s: tensor %zu: the name is not valid UTF-8, which a "
                            "container (JSON header) cannot hold", s->path, i);
        if (!(s->names[i] = H->strdup(ctx, t->name)))
            return HVQ_E_NOMEM;
        /* Upper bounds: a compressed tensor's name appears about 3 + 3 x
         * (components) times, a raw one's 4 times; shapes up to 20 digits
         * per dimension. */
        uint64_t l = hvq_json_escaped_len(t->name, strlen(t->name));
        s->compressed[i] = setup->compressed[i] != 0;
        if (setup->compressed[i]) {
            s->estimate[i] = 1536 + 32 * l + 24 * (uint64_t)t->ndim;
        } else {
            s->estimate[i] = 384 + 8 * l + 48 * (uint64_t)t->ndim;
            if (strcmp(t->name, "__metadata__") == 0)
                return H->error(ctx, HVQ_E_UNSUPPORTED,
                                "%s: a tensor named \"__metadata__\" cannot be stored in a "
                                "safetensors-based container", s->path);
            int r = hw_set_add(ctx, &s->stored, t->name);
            if (r < 0)
                return HVQ_E_NOMEM;
            if (r == 0)
                return H->error(ctx, HVQ_E_INPUT, "%s: tensor name '%s' appears twice",
                                s->path, t->name);
        }
    }

    /* The metadata, up to the value of hvq.tensors. */
    hvq_buf meta = {0};
    hvq_buf_append(&meta, "{", 1);
    for (size_t i = 0; i < setup->n_source_meta; i++) {
        const hvq_meta *m = &setup->source_meta[i];
        if (!hw_utf8(m->key) || !hw_utf8(m->value)) {
            hvq_buf_free(&meta);
            return H->error(ctx, HVQ_E_UNSUPPORTED,
                            "%s: source metadata entry %zu is not valid UTF-8", s->path, i);
        }
        if (i)
            hvq_buf_append(&meta, ",", 1);
        hvq_buf_json_string(&meta, m->key);
        hvq_buf_append(&meta, ":", 1);
        hvq_buf_json_string(&meta, m->value);
    }
    hvq_buf_append(&meta, "}", 1);
    const char *yaml = setup->pipeline_yaml ? setup->pipeline_yaml : "";
    const char *srcfmt = setup->source_format ? setup->source_format : "";
    if (!hw_utf8(yaml) || !hw_utf8(srcfmt)) {
        hvq_buf_free(&meta);
        return H->error(ctx, HVQ_E_UNSUPPORTED,
                        "%s: the pipeline text or source format name is not valid UTF-8",
                        s->path);
    }
    hvq_buf *b = &s->prefix;
    hvq_buf_puts(b, "{\"__metadata__\":{\"format\":\"hvq\",\"hvq.format_version\":\"" HW_FORMAT_VERSION
               "\",\"hvq.producer\":\"hvqconv " PACKAGE_VERSION "\",\"hvq.source_format\":");
    hvq_buf_json_string(b, srcfmt);
    hvq_buf_puts(b, ",\"hvq.source_metadata\":");
    if (!meta.oom)
        hvq_buf_json_stringn(b, meta.data, meta.len);
    hvq_buf_puts(b, ",\"hvq.pipeline\":");
    hvq_buf_json_string(b, yaml);
    hvq_buf_puts(b, ",\"hvq.tensors\":");
    hvq_buf_free(&meta);
    hvq_buf_append(&s->tensors, "[", 1);
    s->tensors_esc = 1;
    if (meta.oom || b->oom || s->tensors.oom)
        return hw_nomem(ctx, s);

    s->user_reserve = (uint64_t)params->values[P_HEADER_RESERVE].i * 1024;
    uint64_t mib = (uint64_t)params->values[P_BUFFER_MIB].i;
    s->mem_max = mib > SIZE_MAX >> 21 ? SIZE_MAX >> 1 : (size_t)(mib << 20);
    uint64_t fixed = hw_header_size(s);
    if (s->user_reserve && fixed > s->user_reserve)
        return H->error(ctx, HVQ_E_INPUT,
                        "%s: the container header needs at least %llu bytes (metadata and "
                        "pipeline) but stages.writer.header_reserve gives %llu",
                        s->path, (unsigned long long)fixed, (unsigned long long)s->user_reserve);
    if (fixed > HW_MAX_HEADER)
        return H->error(ctx, HVQ_E_UNSUPPORTED,
                        "%s: the container header needs at least %llu bytes (metadata and "
                        "pipeline), more than the %llu safetensors readers accept",
                        s->path, (unsigned long long)fixed, HW_MAX_HEADER);

    if (s->user_reserve) { /* the user's size: stream from the first byte */
        s->reserve = s->user_reserve;
        s->fixed = 1;
    }
    if (!(s->out = H->output_open(ctx, s->path)))
        return HVQ_E_IO; /* the host set the message */
    return st;
}

static hvq_status hw_too_big(hvq_ctx *ctx, const hw_state *s, uint64_t need)
{
    /* Suggest room for every tensor at the rate seen so far, twice over. */
    uint64_t per = need / (s->next + 1) + 1;
    uint64_t kib = (2 * per * (s->n + 1) + 1023) / 1024;
    if (kib > HW_MAX_HEADER / 1024)
        kib = HW_MAX_HEADER / 1024;
    if (need > HW_MAX_HEADER)
        return ctx->host->error(ctx, HVQ_E_UNSUPPORTED,
                                "%s: at tensor '%s' the container header already needs %llu "
                                "bytes, more than the %llu safetensors readers accept",
                                s->path, s->names[s->next], (unsigned long long)need,
                                HW_MAX_HEADER);
    return ctx->host->error(
        ctx, HVQ_E_UNSUPPORTED,
        "%s: tensor '%s': the container header needs more than the %llu bytes reserved for it "
        "(the plugins store more attributes or components than expected); rerun with --set "
        "stages.writer.header_reserve=%llu (KiB)",
        s->path, s->names[s->next], (unsigned long long)s->reserve, (unsigned long long)kib);
}

/* Fixes R while tensor s->next is being written: twice the header before
 * it, 16 KiB, and a bound for it and every later tensor; then moves the
 * buffered data to the output. */
static hvq_status hw_fix_reserve(hvq_ctx *ctx, hw_state *s)
{
    uint64_t r = s->user_reserve;
    if (!r) {
        r = 2 * s->before + 16384;
        for (size_t j = s->next; j < s->n; j++) {
            int k = s->compressed[j];
            uint64_t e = s->estimate[j];
            if (s->seen_max[k]) { /* twice the largest seen, scaled by name length */
                uint64_t l = strlen(s->names[j]);
                uint64_t seen = 2 * s->seen_max[k] * (l + 16) / (s->seen_max_len[k] + 16);
                if (seen > e)
                    e = seen;
            }
            r += e;
        }
        r = (r + 7) / 8 * 8;
        if (r > HW_MAX_HEADER)
            r = HW_MAX_HEADER;
    }
    s->reserve = r;
    s->fixed = 1;
    uint64_t need = hw_header_size(s) + s->tmp.len;
    if (need > s->reserve)
        return hw_too_big(ctx, s, need);
    ctx->host->log(ctx, HVQ_LOG_DEBUG, "%s: %llu bytes reserved for the container header",
                   s->path, (unsigned long long)s->reserve);
    hvq_status st = HVQ_OK;
    if (s->mem_len)
        st = ctx->host->output_pwrite(ctx, s->out, s->mem, s->mem_len, 8 + s->reserve);
    ctx->host->free(s->mem);
    s->mem = NULL;
    s->mem_len = s->mem_cap = 0;
    return st;
}

/* Appends n bytes to the data section, adding them to *crc. */
static hvq_status hw_data(hvq_ctx *ctx, hw_state *s, const void *data, uint64_t n,
                          uint32_t *crc)
{
    const unsigned char *p = data;
    hvq_status st;
    if (!s->fixed && n > 0) {
        if (n <= s->mem_max - s->mem_len) {
            if (s->mem_len + n > s->mem_cap) {
                size_t cap = s->mem_cap ? s->mem_cap : 65536;
                while (cap < s->mem_len + n)
                    cap *= 2;
                if (cap > s->mem_max)
                    cap = s->mem_max;
                unsigned char *m = ctx->host->realloc(ctx, s->mem, cap);
                if (!m)
                    return HVQ_E_NOMEM;
                s->mem = m;
                s->mem_cap = cap;
            }
            memcpy(s->mem + s->mem_len, p, (size_t)n);
            *crc = hvq_crc32(*crc, p, (size_t)n);
            s->mem_len += (size_t)n;
            s->data_len += n;
            return HVQ_OK;
        }
        if ((st = hw_fix_reserve(ctx, s)) != HVQ_OK)
            return st;
    }
    while (n > 0) {
        size_t chunk = n > HW_CHUNK ? HW_CHUNK : (size_t)n;
        *crc = hvq_crc32(*crc, p, chunk);
        st = ctx->host->output_pwrite(ctx, s->out, p, chunk, 8 + s->reserve + s->data_len);
        if (st != HVQ_OK)
            return st;
        s->data_len += chunk;
        p += chunk;
        n -= chunk;
    }
    return HVQ_OK;
}

/* One safetensors header entry for a stored tensor of n bytes that starts
 * at the current end of the data section. */
static void hw_entry(hw_state *s, const char *name, const char *dtype, int ndim,
                     const int64_t *shape, uint64_t n)
{
    hvq_buf *b = &s->entries;
    hvq_buf_append(b, ",", 1);
    hvq_buf_json_string(b, name);
    hvq_buf_puts(b, ":{\"dtype\":");
    hvq_buf_json_string(b, dtype);
    hvq_buf_puts(b, ",\"shape\":");
    hw_put_shape(b, ndim, shape);
    hvq_buf_puts(b, ",\"data_offsets\":[");
    hvq_buf_putu(b, (unsigned long long)s->data_len);
    hvq_buf_append(b, ",", 1);
    hvq_buf_putu(b, (unsigned long long)(s->data_len + n));
    hvq_buf_puts(b, "]}");
}

/* Appends the tensor's hvq.tensors entry (in s->tmp) and checks that the
 * header still fits the reservation. */
static hvq_status hw_commit_entry(hvq_ctx *ctx, hw_state *s)
{
    if (s->next > 0)
        hvq_buf_append(&s->tensors, ",", 1);
    hvq_buf_append(&s->tensors, s->tmp.data ? s->tmp.data : "", s->tmp.len);
    s->tensors_esc += (s->next > 0) + hvq_json_escaped_len(s->tmp.data ? s->tmp.data : "", s->tmp.len);
    s->tmp.len = 0;
    if (s->tensors.oom || s->entries.oom || s->tmp.oom)
        return hw_nomem(ctx, s);
    uint64_t need = hw_header_size(s);
    int k = s->compressed[s->next];
    if (need - s->before > s->seen_max[k]) {
        s->seen_max[k] = need - s->before;
        s->seen_max_len[k] = strlen(s->names[s->next]);
    }
    if (need > (s->fixed ? s->reserve : HW_MAX_HEADER))
        return hw_too_big(ctx, s, need);
    return HVQ_OK;
}

/* The hvq.tensors fields every entry starts with. */
static void hw_entry_head(hvq_buf *b, const hvq_tensor_info *t, const char *dtype)
{
    hvq_buf_puts(b, "{\"name\":");
    hvq_buf_json_string(b, t->name);
    hvq_buf_puts(b, ",\"dtype\":");
    hvq_buf_json_string(b, dtype);
    hvq_buf_puts(b, ",\"shape\":");
    hw_put_shape(b, t->ndim, t->shape);
}

static hvq_status hw_raw(hvq_ctx *ctx, hw_state *s, const hvq_tensor *t)
{
    const hvq_host *H = ctx->host;
    const hvq_tensor_info *info = &t->info;
    const char *dtype = info->dtype == HVQ_DTYPE_OPAQUE ? info->dtype_name
                                                         : H->dtype_name(info->dtype);
    if (!hw_utf8(dtype) || !*dtype)
        return H->error(ctx, HVQ_E_UNSUPPORTED, "%s: tensor '%s': no usable dtype name",
                        s->path, info->name);
    if (info->nbytes > 0 && !t->data)
        return H->error(ctx, HVQ_E_INTERNAL, "%s: tensor '%s' has no data", s->path,
                        info->name);
    /* A dtype safetensors does not know is stored as U8 bytes; the entry
     * keeps its name and shape. */
    int native = is_st_dtype(dtype);
    int64_t bytes_shape[1] = {(int64_t)info->nbytes};
    hw_entry(s, info->name, native ? dtype : "U8", native ? info->ndim : 1,
             native ? info->shape : bytes_shape, info->nbytes);
    uint32_t crc = 0;
    hvq_status st = hw_data(ctx, s, t->data, info->nbytes, &crc);
    if (st != HVQ_OK)
        return st;
    hvq_buf *b = &s->tmp;
    hw_entry_head(b, info, dtype);
    hvq_buf_puts(b, ",\"encoding\":\"raw\",\"crc32\":");
    hvq_buf_putu(b, crc);
    hvq_buf_puts(b, ",\"stored\":[");
    hvq_buf_json_string(b, info->name);
    hvq_buf_puts(b, "]}");
    return hw_commit_entry(ctx, s);
}

/* Checks that a component is well formed: a name, a known dtype, a shape
 * that matches its size. */
static hvq_status hw_component_ok(hvq_ctx *ctx, hw_state *s, const char *tensor,
                                  const char *stage, const hvq_component *c)
{
    const hvq_host *H = ctx->host;
    size_t nl = strnlen(c->name, sizeof c->name);
    if (nl == 0 || nl == sizeof c->name || !hvq_json_utf8_valid(c->name, nl))
        return H->error(ctx, HVQ_E_INTERNAL,
                        "%s: tensor '%s': the %s produced a component with an empty, "
                        "unterminated or non-UTF-8 name", s->path, tensor, stage);
    size_t es = H->dtype_size(c->dtype);
    uint64_t n = es;
    int ok = es > 0 && c->ndim >= 0 && c->ndim <= HVQ_MAX_DIMS && (c->data || c->nbytes == 0);
    for (int d = 0; ok && d < c->ndim; d++) {
        uint64_t dim = (uint64_t)c->shape[d];
        if (c->shape[d] < 0 || (dim && n > UINT64_MAX / dim))
            ok = 0;
        else
            n *= dim;
    }
    if (!ok || n != c->nbytes)
        return H->error(ctx, HVQ_E_INTERNAL,
                        "%s: tensor '%s': %s component '%s' has an invalid dtype, shape or "
                        "size", s->path, tensor, stage, c->name);
    return HVQ_OK;
}

/* Appends "attrs":{...},"components":{...} of one stage and records the
 * stored names; writes the data. */
static hvq_status hw_stage(hvq_ctx *ctx, hw_state *s, const char *tensor, const char *stage,
                           const char *plugin, const char *version, const hvq_encoded *enc,
                           hvq_buf *stored, uint32_t *crc, uint64_t *paper_bits)
{
    const hvq_host *H = ctx->host;
    hvq_buf *b = &s->tmp;
    plugin = plugin ? plugin : "";
    version = version ? version : "";
    if (!hw_utf8(plugin) || !hw_utf8(version))
        return H->error(ctx, HVQ_E_INTERNAL, "%s: tensor '%s': bad %s plugin name", s->path,
                        tensor, stage);
    hvq_buf_puts(b, ",\"");
    hvq_buf_puts(b, stage);
    hvq_buf_puts(b, "\":{\"plugin\":");
    hvq_buf_json_string(b, plugin);
    hvq_buf_puts(b, ",\"version\":");
    hvq_buf_json_string(b, version);
    hvq_buf_puts(b, ",\"attrs\":{");
    size_t na = enc ? enc->n_attrs : 0, nc = enc ? enc->n_components : 0;
    for (size_t i = 0; i < na; i++) {
        const hvq_meta *a = &enc->attrs[i];
        if (!hw_utf8(a->key) || !hw_utf8(a->value))
            return H->error(ctx, HVQ_E_INTERNAL,
                            "%s: tensor '%s': %s attribute %zu is not valid UTF-8", s->path,
                            tensor, stage, i);
        if (i)
            hvq_buf_append(b, ",", 1);
        hvq_buf_json_string(b, a->key);
        hvq_buf_append(b, ":", 1);
        hvq_buf_json_string(b, a->value);
    }
    hvq_buf_puts(b, "},\"components\":{");
    for (size_t i = 0; i < nc; i++) {
        const hvq_component *c = &enc->components[i];
        hvq_status st = hw_component_ok(ctx, s, tensor, stage, c);
        if (st != HVQ_OK)
            return st;
        char cname[32];
        memcpy(cname, c->name, sizeof cname);
        cname[sizeof cname - 1] = '\0';
        /* NAME::stage.component */
        hvq_buf full = {0};
        hvq_buf_puts(&full, tensor);
        hvq_buf_puts(&full, "::");
        hvq_buf_puts(&full, stage);
        hvq_buf_puts(&full, ".");
        hvq_buf_puts(&full, cname);
        if (full.oom)
            return hw_nomem(ctx, s);
        int r = hw_set_add(ctx, &s->stored, full.data);
        if (r <= 0) {
            if (r == 0)
                st = H->error(ctx, HVQ_E_UNSUPPORTED,
                              "%s: tensor '%s': the stored name '%s' is already taken by "
                              "another tensor or component", s->path, tensor, full.data);
            else
                st = HVQ_E_NOMEM;
            hvq_buf_free(&full);
            return st;
        }
        if (i)
            hvq_buf_append(b, ",", 1);
        hvq_buf_json_string(b, cname);
        hvq_buf_append(b, ":", 1);
        hvq_buf_json_string(b, full.data);
        hvq_buf_append(stored, ",", 1);
        hvq_buf_json_string(stored, full.data);
        hw_entry(s, full.data, H->dtype_name(c->dtype), c->ndim, c->shape, c->nbytes);
        hvq_buf_free(&full);
        if ((st = hw_data(ctx, s, c->data, c->nbytes, crc)) != HVQ_OK)
            return st;
        *paper_bits += c->paper_bits;
    }
    hvq_buf_puts(b, "}}");
    return HVQ_OK;
}

static hvq_status hw_compressed(hvq_ctx *ctx, hw_state *s, const hvq_result *r)
{
    const hvq_host *H = ctx->host;
    const hvq_tensor_info *info = &r->original.info;
    const char *name = info->name;
    uint64_t numel = hvq_numel(info);
    if (r->rows == 0 || r->cols == 0 || r->rows > numel / r->cols ||
        r->rows * r->cols != numel)
        return H->error(ctx, HVQ_E_INTERNAL, "%s: tensor '%s': a %llux%llu matrix for %llu "
                        "elements", s->path, name, (unsigned long long)r->rows,
                        (unsigned long long)r->cols, (unsigned long long)numel);
    const char *dtype = info->dtype == HVQ_DTYPE_OPAQUE ? info->dtype_name
                                                         : H->dtype_name(info->dtype);
    if (!hw_utf8(dtype) || !*dtype)
        return H->error(ctx, HVQ_E_UNSUPPORTED, "%s: tensor '%s': no usable dtype name",
                        s->path, name);
    hvq_buf stored = {0};
    uint32_t crc = 0;
    uint64_t paper_bits = 0;
    hvq_status st = HVQ_OK;
    hvq_buf *b = &s->tmp;
    hw_entry_head(b, info, dtype);
    hvq_buf_puts(b, ",\"encoding\":\"hvq\",\"rows\":");
    hvq_buf_putu(b, (unsigned long long)r->rows);
    hvq_buf_puts(b, ",\"cols\":");
    hvq_buf_putu(b, (unsigned long long)r->cols);
    hvq_buf_puts(b, ",\"scales\":");
    if (r->row_scale) {
        hvq_buf sname = {0};
        hvq_buf_puts(&sname, name);
        hvq_buf_puts(&sname, "::scales");
        if (sname.oom)
            return hw_nomem(ctx, s);
        int added = hw_set_add(ctx, &s->stored, sname.data);
        if (added <= 0) {
            st = added == 0 ? H->error(ctx, HVQ_E_UNSUPPORTED,
                                       "%s: tensor '%s': the stored name '%s' is already taken "
                                       "by another tensor", s->path, name, sname.data)
                            : HVQ_E_NOMEM;
            hvq_buf_free(&sname);
            return st;
        }
        if (r->rows > s->scales_cap) {
            uint16_t *p = H->realloc(ctx, s->scales, (size_t)r->rows * sizeof *p);
            if (!p) {
                hvq_buf_free(&sname);
                return HVQ_E_NOMEM;
            }
            s->scales = p;
            s->scales_cap = (size_t)r->rows;
        }
        st = H->convert(ctx, HVQ_DTYPE_F16, s->scales, HVQ_DTYPE_F32, r->row_scale,
                        (size_t)r->rows);
        int64_t shape[1] = {(int64_t)r->rows};
        hvq_buf_json_string(b, sname.data);
        hvq_buf_append(&stored, ",", 1);
        hvq_buf_json_string(&stored, sname.data);
        hw_entry(s, sname.data, "F16", 1, shape, 2 * r->rows);
        hvq_buf_free(&sname);
        if (st == HVQ_OK)
            st = hw_data(ctx, s, s->scales, 2 * r->rows, &crc);
        paper_bits += 16 * r->rows;
    } else {
        hvq_buf_puts(b, "null");
    }
    if (st == HVQ_OK)
        st = hw_stage(ctx, s, name, "clusterer", r->clusterer, r->clusterer_version,
                      r->cluster_enc, &stored, &crc, &paper_bits);
    if (st == HVQ_OK)
        st = hw_stage(ctx, s, name, "residual", r->residual, r->residual_version,
                      r->residual_enc, &stored, &crc, &paper_bits);
    if (st == HVQ_OK) {
        hvq_buf_puts(b, ",\"paper_bits\":");
        hvq_buf_putu(b, (unsigned long long)paper_bits);
        hvq_buf_puts(b, ",\"crc32\":");
        hvq_buf_putu(b, crc);
        hvq_buf_puts(b, ",\"stored\":[");
        if (stored.len > 1)
            hvq_buf_append(b, stored.data + 1, stored.len - 1); /* without the leading comma */
        hvq_buf_puts(b, "]}");
        if (stored.oom)
            st = hw_nomem(ctx, s);
    }
    hvq_buf_free(&stored);
    if (st != HVQ_OK)
        return st;
    return hw_commit_entry(ctx, s);
}

static hvq_status hw_tensor(hvq_ctx *ctx, void *state, const hvq_result *r)
{
    hw_state *s = state;
    if (s->next >= s->n || !r->original.info.name ||
        strcmp(r->original.info.name, s->names[s->next]) != 0)
        return ctx->host->error(ctx, HVQ_E_INTERNAL,
                                "%s: writer got tensor '%s', expected '%s'", s->path,
                                r->original.info.name ? r->original.info.name : "(null)",
                                s->next < s->n ? s->names[s->next] : "(none: all written)");
    s->tmp.len = 0;
    s->before = hw_header_size(s);
    hvq_status st = r->compressed ? hw_compressed(ctx, s, r) : hw_raw(ctx, s, &r->original);
    if (st == HVQ_OK)
        s->next++;
    return st;
}

static hvq_status hw_finish(hvq_ctx *ctx, void *state)
{
    const hvq_host *H = ctx->host;
    hw_state *s = state;
    if (s->next != s->n)
        return H->error(ctx, HVQ_E_INTERNAL, "%s: finish after %zu of %zu tensors", s->path,
                        s->next, s->n);
    hvq_buf_append(&s->tensors, "]", 1);
    s->tensors_esc += 1;
    uint64_t need = hw_header_size(s);
    if (s->tensors.oom)
        return hw_nomem(ctx, s);
    if (!s->fixed) /* everything is in memory: the exact size will do */
        s->reserve = s->user_reserve ? s->user_reserve : (need + 7) / 8 * 8;
    if (need > s->reserve || need > HW_MAX_HEADER)
        return H->error(ctx, HVQ_E_UNSUPPORTED,
                        "%s: the container header needs %llu bytes but %llu %s", s->path,
                        (unsigned long long)need,
                        (unsigned long long)(need > HW_MAX_HEADER ? HW_MAX_HEADER : s->reserve),
                        need > HW_MAX_HEADER ? "is the most safetensors readers accept"
                                             : "were reserved; rerun with a larger "
                                               "stages.writer.header_reserve");
    hvq_buf h = {0};
    unsigned char len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (unsigned char)(s->reserve >> (8 * i));
    hvq_buf_append(&h, (const char *)len8, 8);
    hvq_buf_append(&h, s->prefix.data, s->prefix.len);
    hvq_buf_json_stringn(&h, s->tensors.data, s->tensors.len);
    hvq_buf_append(&h, "}", 1);
    if (s->entries.len)
        hvq_buf_append(&h, s->entries.data, s->entries.len);
    hvq_buf_append(&h, "}", 1);
    while (!h.oom && h.len < 8 + s->reserve) {
        static const char spaces[64] = "                                                               ";
        uint64_t left = 8 + s->reserve - h.len;
        hvq_buf_append(&h, spaces, left < 63 ? (size_t)left : 63);
    }
    if (h.oom)
        return hw_nomem(ctx, s);
    if (h.len != 8 + s->reserve) {
        hvq_buf_free(&h);
        return H->error(ctx, HVQ_E_INTERNAL, "%s: header of %zu bytes, expected %llu", s->path,
                        h.len, (unsigned long long)(8 + s->reserve));
    }
    hvq_status st = H->output_pwrite(ctx, s->out, h.data, h.len, 0);
    hvq_buf_free(&h);
    if (st == HVQ_OK && !s->fixed && s->mem_len)
        st = H->output_pwrite(ctx, s->out, s->mem, s->mem_len, 8 + s->reserve);
    if (st == HVQ_OK)
        H->log(ctx, HVQ_LOG_DEBUG, "%s: container header %llu of %llu reserved bytes, %llu "
               "bytes of data", s->path, (unsigned long long)need,
               (unsigned long long)s->reserve, (unsigned long long)s->data_len);
    return st;
}

static void hw_close(hvq_ctx *ctx, void *state)
{
    const hvq_host *H = ctx->host;
    hw_state *s = state;
    if (!s)
        return;
    for (size_t i = 0; s->names && i < s->n; i++)
        H->free(s->names[i]);
    H->free(s->names);
    hw_set_free(H, &s->stored);
    hvq_buf_free(&s->prefix);
    hvq_buf_free(&s->tensors);
    hvq_buf_free(&s->entries);
    hvq_buf_free(&s->tmp);
    H->free(s->scales);
    H->free(s->mem);
    H->free(s->estimate);
    H->free(s->compressed);
    H->free(s->path);
    H->free(s);
}

static const hvq_plugin hw_plugin = {
    HVQ_PLUGIN_HEADER,
    .kinds = HVQ_KIND_WRITER,
    .name = "hvq",
    .version = "1.0.0",
    .summary = "the native compressed container (.hvq, safetensors-compatible; docs/FORMAT.md)",
    .license = "MIT",
    .params = hw_params,
    .writer_open = hw_open,
    .writer_tensor = hw_tensor,
    .writer_finish = hw_finish,
    .writer_close = hw_close,
};

HVQ_REGISTER_PLUGIN(hw_plugin)
