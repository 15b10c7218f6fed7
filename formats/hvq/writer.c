/* writer "hvq": the native compressed container (docs/FORMAT.md).
 *
 * The container is a valid safetensors file (or a sharded set of them):
 * every original tensor is listed, in source order, in the metadata key
 * "hvq.tensors"; pass-through tensors are stored under their own name and
 * bytes, compressed ones as their components (NAME::scales,
 * NAME::clusterer.<c>, NAME::residual.<c>).
 *
 * This file owns what the container means: the metadata, the entries of
 * hvq.tensors, the stored names, the checksums. The safetensors sink owns
 * the files: it is opened with streaming=true (host->sink_open_params),
 * takes each stored tensor through host->sink_write, and is told through
 * host->sink_control where each original tensor begins (its stored tensors
 * stay in one shard when they fit one), how much header the tensors still
 * to come may need (the bound below), and the hvq.tensors entry of each
 * tensor, appended to the last metadata value. It reserves the headers,
 * cuts and names the shards, and writes the index (formats/safetensors).
 *
 * The bound: an upper estimate of each tensor's header text, computed at
 * writer_open from its name, shape and whether it is compressed, raised to
 * twice the largest seen so far (scaled by the name's length) when that is
 * more.
 */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include "plugin.h"
#include "buf.h"
#include "json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION "unknown"
#endif

#define HW_FORMAT_VERSION "1"
#define HW_EXT ".hvq"

enum { P_HEADER_RESERVE, P_BUFFER_MIB, P_MAX_SHARD };

static const hvq_param_spec hw_params[] = {
    {"header_reserve", HVQ_PARAM_INT, "0", 0, 97656, NULL,
     "KiB reserved for the container header, the data then streams straight to the "
     "output; 0 = automatic (exact for small models, else a generous estimate)"},
    {"buffer_mib", HVQ_PARAM_INT, "64", 0, 65536, NULL,
     "MiB of data kept in memory before the header size is fixed; a container that fits "
     "gets an exact header; 0 = stream from the first tensor"},
    {"max_shard_size", HVQ_PARAM_SIZE, "0", 0, 0, NULL,
     "split the container into shards NAME-00001-of-0000N.hvq of at most this many bytes of "
     "data (500MB, 5GB) plus NAME.hvq.index.json; 0 = one file"},
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
    hvq_sink_handle *sink;  /* the safetensors sink, streaming */
    int sharded;            /* max_shard_size > 0 */
    char **names;           /* declared tensor names, in order */
    size_t *name_len;
    uint64_t *estimate;     /* per tensor: an upper bound of its header part */
    unsigned char *compressed; /* per tensor: declared compressed */
    uint64_t seen_max[2];   /* largest header part seen, raw / compressed */
    size_t seen_max_len[2]; /* the name length of that tensor */
    size_t n, next;
    hw_set stored;          /* every stored tensor name */
    hvq_buf tmp;            /* one tensor's hvq.tensors entry */
    hvq_buf line;           /* scratch: that entry with its comma */
    uint16_t *scales;       /* fp16 row scales of one tensor */
    size_t scales_cap;
} hw_state;

static void hw_close(hvq_ctx *ctx, void *state);

static hvq_status hw_nomem(hvq_ctx *ctx, const hw_state *s)
{
    return ctx->host->error(ctx, HVQ_E_NOMEM, "%s: out of memory building the container header",
                            s->path);
}

static int hw_utf8(const char *s) { return s && hvq_json_utf8_valid(s, strlen(s)); }

/* Passes c to the sink. Until writer_finish appends it, hvq.tensors
 * still lacks its closing "]" (meta_reserve 1). */
static hvq_status hw_control(hvq_ctx *ctx, hw_state *s, hvq_sink_control *c, int last)
{
    c->struct_size = (uint32_t)sizeof *c;
    c->meta_reserve = last ? 0 : 1;
    return ctx->host->sink_control(ctx, s->sink, c);
}

/* The names, and an upper bound of each tensor's header part; pass-through
 * tensors keep their names in the container. */
static hvq_status hw_names(hvq_ctx *ctx, hw_state *s, const hvq_writer_setup *setup)
{
    const hvq_host *H = ctx->host;
    for (size_t i = 0; i < s->n; i++) {
        const hvq_tensor_info *t = &setup->tensors[i];
        if (!hw_utf8(t->name))
            return H->error(ctx, HVQ_E_UNSUPPORTED,
                            "%s: tensor %zu: the name is not valid UTF-8, which a "
                            "container (JSON header) cannot hold", s->path, i);
        if (!(s->names[i] = H->strdup(ctx, t->name)))
            return HVQ_E_NOMEM;
        s->name_len[i] = strlen(t->name);
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
    return HVQ_OK;
}

/* hvq.source_metadata: the source's metadata as a JSON object, in b. */
static hvq_status hw_source_meta(hvq_ctx *ctx, const hw_state *s, const hvq_writer_setup *setup,
                                 hvq_buf *b)
{
    hvq_buf_append(b, "{", 1);
    for (size_t i = 0; i < setup->n_source_meta; i++) {
        const hvq_meta *m = &setup->source_meta[i];
        if (!hw_utf8(m->key) || !hw_utf8(m->value))
            return ctx->host->error(ctx, HVQ_E_UNSUPPORTED,
                                    "%s: source metadata entry %zu is not valid UTF-8",
                                    s->path, i);
        if (i)
            hvq_buf_append(b, ",", 1);
        hvq_buf_json_string(b, m->key);
        hvq_buf_append(b, ":", 1);
        hvq_buf_json_string(b, m->value);
    }
    hvq_buf_append(b, "}", 1);
    return b->oom ? hw_nomem(ctx, s) : HVQ_OK;
}

/* Opens the safetensors sink, streaming, with the container's metadata:
 * hvq.tensors last, "[" so far (each tensor appends its entry). */
static hvq_status hw_open_sink(hvq_ctx *ctx, hw_state *s, const hvq_params *params,
                               const hvq_writer_setup *setup)
{
    const hvq_host *H = ctx->host;
    const char *yaml = setup->pipeline_yaml ? setup->pipeline_yaml : "";
    const char *srcfmt = setup->source_format ? setup->source_format : "";
    if (!hw_utf8(yaml) || !hw_utf8(srcfmt))
        return H->error(ctx, HVQ_E_UNSUPPORTED,
                        "%s: the pipeline text or source format name is not valid UTF-8",
                        s->path);
    hvq_buf smeta = {0};
    hvq_status st = hw_source_meta(ctx, s, setup, &smeta);
    if (st != HVQ_OK) {
        hvq_buf_free(&smeta);
        return st;
    }
    const hvq_meta meta[] = {
        {"format", "hvq"},
        {"hvq.format_version", HW_FORMAT_VERSION},
        {"hvq.producer", "hvqconv " PACKAGE_VERSION},
        {"hvq.source_format", srcfmt},
        {"hvq.source_metadata", smeta.data},
        {"hvq.pipeline", yaml},
        {"hvq.tensors", "["},
    };
    char opt[4][64];
    snprintf(opt[0], sizeof opt[0], "header_reserve=%lld",
             (long long)params->values[P_HEADER_RESERVE].i);
    snprintf(opt[1], sizeof opt[1], "buffer_mib=%lld",
             (long long)params->values[P_BUFFER_MIB].i);
    snprintf(opt[2], sizeof opt[2], "max_shard_size=%lld",
             (long long)params->values[P_MAX_SHARD].i);
    /* the other shards carry format and hvq.format_version */
    snprintf(opt[3], sizeof opt[3], "shard_meta=2");
    const char *const options[] = {"streaming=true", opt[0], opt[1], opt[2], opt[3],
                                   "shard_key=hvq.shard", NULL};
    s->sink = H->sink_open_params(ctx, "safetensors", s->path, options, meta,
                                  sizeof meta / sizeof meta[0], NULL, 0);
    hvq_buf_free(&smeta);
    if (!s->sink)
        return H->status(ctx) != HVQ_OK ? H->status(ctx) : HVQ_E_IO;
    return HVQ_OK;
}

static hvq_status hw_open(hvq_ctx *ctx, const hvq_params *params, const hvq_writer_setup *setup,
                          void **state)
{
    const hvq_host *H = ctx->host;
    *state = NULL;
    if (H->struct_size < offsetof(hvq_host, sink_control) + sizeof H->sink_control)
        return H->error(ctx, HVQ_E_UNSUPPORTED, "%s: writer 'hvq' needs a host with "
                        "sink_control (a newer hvqconv)", setup->output_path);
    size_t plen = strlen(setup->output_path);
    if (plen >= 5 && strcasecmp(setup->output_path + plen - 5, ".gguf") == 0)
        return H->error(ctx, HVQ_E_INPUT,
                        "%s: writer 'hvq' writes an hvq container (a safetensors file), not "
                        "GGUF; for a GGUF llama.cpp runs, add --set stages.writer.plugin=dequant "
                        "--set stages.writer.dtype=native (the ggml clusterer's blocks as they "
                        "are) or a block type such as q8_0",
                        setup->output_path);
    hw_state *s = H->calloc(ctx, 1, sizeof *s);
    if (!s)
        return HVQ_E_NOMEM;
    *state = s; /* the host calls hw_close even when this fails */
    if (!(s->path = H->strdup(ctx, setup->output_path)))
        return HVQ_E_NOMEM;
    s->sharded = params->values[P_MAX_SHARD].i > 0;
    if (s->sharded) {
        const char *base = strrchr(s->path, '/');
        base = base ? base + 1 : s->path;
        size_t bl = strlen(base), el = strlen(HW_EXT);
        if (bl <= el || strcmp(base + bl - el, HW_EXT) != 0)
            return H->error(ctx, HVQ_E_INPUT,
                            "%s: stages.writer.max_shard_size needs an output name NAME" HW_EXT
                            " (the shards become NAME-00001-of-0000N" HW_EXT
                            " and the index NAME" HW_EXT ".index.json)", s->path);
    }
    s->n = setup->n_tensors;
    size_t n = s->n ? s->n : 1;
    if (!(s->names = H->calloc(ctx, n, sizeof *s->names)) ||
        !(s->name_len = H->calloc(ctx, n, sizeof *s->name_len)) ||
        !(s->estimate = H->calloc(ctx, n, sizeof *s->estimate)) ||
        !(s->compressed = H->calloc(ctx, n, 1)))
        return HVQ_E_NOMEM;
    hvq_status st = hw_names(ctx, s, setup);
    if (st == HVQ_OK)
        st = hw_open_sink(ctx, s, params, setup);
    if (st == HVQ_OK) { /* the closing "]" of hvq.tensors is still to come */
        hvq_sink_control c = {0};
        st = hw_control(ctx, s, &c, 0);
    }
    return st;
}

/* An upper bound of the header text of tensors next.. (each estimate, or
 * twice the largest seen, scaled by the name's length, when more). */
static uint64_t hw_header_to_come(const hw_state *s)
{
    uint64_t r = 0;
    for (size_t j = s->next; j < s->n; j++) {
        int c = s->compressed[j];
        uint64_t e = s->estimate[j];
        if (s->seen_max[c]) {
            uint64_t seen = 2 * s->seen_max[c] * (s->name_len[j] + 16) /
                            (s->seen_max_len[c] + 16);
            if (seen > e)
                e = seen;
        }
        r += e;
    }
    return r;
}

/* Stores one tensor (n bytes at data) through the sink, adding its bytes
 * to *crc. */
static hvq_status hw_put(hvq_ctx *ctx, hw_state *s, const char *name, const char *dtype,
                         int ndim, const int64_t *shape, const void *data, uint64_t n,
                         uint32_t *crc)
{
    hvq_sink_control c = {0};
    c.meta_pending = s->tmp.len; /* this tensor's entry so far */
    hvq_status st = hw_control(ctx, s, &c, 0);
    if (st != HVQ_OK)
        return st;
    hvq_tensor t;
    memset(&t, 0, sizeof t);
    t.info.name = name;
    t.info.dtype = HVQ_DTYPE_OPAQUE; /* by its safetensors name */
    t.info.dtype_name = dtype;
    t.info.ndim = ndim;
    memcpy(t.info.shape, shape, (size_t)ndim * sizeof *shape);
    t.info.nbytes = n;
    t.data = data;
    const unsigned char *p = data;
    for (uint64_t left = n; left > 0;) {
        size_t chunk = left > ((size_t)1 << 30) ? (size_t)1 << 30 : (size_t)left;
        *crc = (uint32_t)crc32_z(*crc, p, (z_size_t)chunk);
        p += chunk;
        left -= chunk;
    }
    return ctx->host->sink_write(ctx, s->sink, &t);
}

static hvq_status hw_commit_entry(hvq_ctx *ctx, hw_state *s)
{
    hvq_buf *line = &s->line;
    line->len = 0;
    if (s->next > 0)
        hvq_buf_append(line, ",", 1);
    hvq_buf_append(line, s->tmp.data ? s->tmp.data : "", s->tmp.len);
    s->tmp.len = 0;
    if (line->oom || s->tmp.oom)
        return hw_nomem(ctx, s);
    hvq_sink_control c = {0};
    c.meta_append = line->data;
    c.meta_append_len = line->len;
    hvq_status st = hw_control(ctx, s, &c, 0);
    int k = s->compressed[s->next];
    if (st == HVQ_OK && c.item_header > s->seen_max[k]) {
        s->seen_max[k] = c.item_header;
        s->seen_max_len[k] = s->name_len[s->next];
    }
    return st;
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
    uint32_t crc = 0;
    hvq_status st = hw_put(ctx, s, info->name, native ? dtype : "U8", native ? info->ndim : 1,
                           native ? info->shape : bytes_shape, t->data, info->nbytes, &crc);
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
        st = hw_put(ctx, s, full.data, H->dtype_name(c->dtype), c->ndim, c->shape, c->data,
                    c->nbytes, crc);
        hvq_buf_free(&full);
        if (st != HVQ_OK)
            return st;
        *paper_bits += c->paper_bits;
    }
    hvq_buf_puts(b, "}}");
    return HVQ_OK;
}

/* The row scales of a compressed tensor: NAME::scales, F16 [rows]. */
static hvq_status hw_scales(hvq_ctx *ctx, hw_state *s, const hvq_result *r, hvq_buf *stored,
                            uint32_t *crc, uint64_t *paper_bits)
{
    const hvq_host *H = ctx->host;
    const char *name = r->original.info.name;
    hvq_buf *b = &s->tmp;
    hvq_status st;
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
    hvq_buf_append(stored, ",", 1);
    hvq_buf_json_string(stored, sname.data);
    if (st == HVQ_OK)
        st = hw_put(ctx, s, sname.data, "F16", 1, shape, s->scales, 2 * r->rows, crc);
    hvq_buf_free(&sname);
    *paper_bits += 16 * r->rows;
    return st;
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
        st = hw_scales(ctx, s, r, &stored, &crc, &paper_bits);
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

/* The bytes a tensor will store (saturating). */
static uint64_t hw_stored_bytes(const hvq_result *r)
{
    if (!r->compressed)
        return r->original.info.nbytes;
    uint64_t total = r->row_scale ? 2 * r->rows : 0;
    const hvq_encoded *e[2] = {r->cluster_enc, r->residual_enc};
    for (int i = 0; i < 2; i++)
        for (size_t c = 0; e[i] && c < e[i]->n_components; c++)
            total = e[i]->components[c].nbytes > UINT64_MAX - total
                        ? UINT64_MAX
                        : total + e[i]->components[c].nbytes;
    return total;
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
    hvq_sink_control c = {0};
    c.item = s->names[s->next];
    c.item_index = s->next;
    c.n_items = s->n;
    c.item_bytes = s->sharded ? hw_stored_bytes(r) : 0;
    c.header_to_come = hw_header_to_come(s);
    hvq_status st = hw_control(ctx, s, &c, 0);
    if (st == HVQ_OK)
        st = r->compressed ? hw_compressed(ctx, s, r) : hw_raw(ctx, s, &r->original);
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
    hvq_sink_control c = {0};
    c.meta_append = "]";
    c.meta_append_len = 1;
    hvq_status st = hw_control(ctx, s, &c, 1);
    return st != HVQ_OK ? st : H->sink_finish(ctx, s->sink);
}

static void hw_close(hvq_ctx *ctx, void *state)
{
    const hvq_host *H = ctx->host;
    hw_state *s = state;
    if (!s)
        return;
    if (s->sink)
        H->sink_close(ctx, s->sink);
    for (size_t i = 0; s->names && i < s->n; i++)
        H->free(s->names[i]);
    H->free(s->names);
    H->free(s->name_len);
    hw_set_free(H, &s->stored);
    hvq_buf_free(&s->tmp);
    hvq_buf_free(&s->line);
    H->free(s->scales);
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
    .writer_formats = "safetensors",
    .writer_elsewhere = "Write the container (an output named .hvq) and decode it to GGUF with "
                        "`hvqconv decode OUT.hvq -o MODEL.gguf --dtype q8_0` (or f16), or write "
                        "the reconstruction directly with --set stages.writer.plugin=dequant "
                        "(--set stages.writer.dtype=q8_0 for llama.cpp blocks)",
};

HVQ_REGISTER_PLUGIN(hw_plugin)
