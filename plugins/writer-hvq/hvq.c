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
 * discards the partial output. Nothing is deleted here: the host commits
 * outputs after the run.
 *
 * Sharding (max_shard_size > 0): stored sizes are only known as tensors
 * arrive, so shards are cut while streaming. A tensor whose stored tensors
 * fit one shard but not what is left of the current one starts the next
 * shard; a larger one is split between its stored tensors, each starting
 * a new shard when it would take the current one past the limit (never
 * the first of a shard). Each shard is a file of its own with the header
 * logic above: the first holds the whole metadata (hvq.tensors keeps
 * growing until the end, so while it is in memory it stays there, within
 * the buffer_mib budget all files share, and gets its exact header at
 * finish; when the budget runs out it is the first to get a reservation);
 * the others hold {"format", "hvq.format_version", "hvq.shard": "K of N"}
 * and get their exact size when they are closed, counting N as 20 digits
 * since the shard count is only known at the end. A shard whose fixed
 * reservation cannot take the next entry closes early instead of failing.
 * The first shard is opened under the container's own name and the
 * others under provisional names; at finish, with N known, they are
 * renamed NAME-0000k-of-0000N.hvq (host output_rename) and
 * NAME.hvq.index.json maps every stored tensor to its shard. A container
 * that ends up in one shard is the plain NAME.hvq, without an index.
 */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include "plugin.h"
#include "crc32.h"
#include "buf.h"
#include "json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION "unknown"
#endif

#define HW_FORMAT_VERSION "1"
/* The largest header safetensors readers accept (the reference
 * implementation's limit); a multiple of 8. */
#define HW_MAX_HEADER 100000000ull
#define HW_CHUNK ((size_t)1 << 28)

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

/* One output file: the whole container, or one shard of it. */
typedef struct hw_shard {
    hvq_output *out;
    hvq_buf entries;        /* its safetensors tensor entries: ,"n":{...} */
    uint64_t data_len;      /* bytes of its data section so far */
    uint64_t reserve;       /* R: header bytes before its data, once fixed */
    int fixed;              /* R is fixed and its data goes to the output */
    unsigned char *mem;     /* its data section while it is in memory */
    size_t mem_len, mem_cap;
    uint64_t before;        /* its header size before the current tensor */
    size_t n_stored;        /* stored tensors in it */
} hw_shard;

/* Where a stored tensor went (sharded containers: the index). */
typedef struct hw_loc {
    char *name;
    size_t shard;
} hw_loc;

typedef struct hw_state {
    char *path;
    uint64_t user_reserve;  /* header_reserve in bytes, 0 = automatic */
    uint64_t max_shard;     /* max_shard_size in bytes, 0 = one file */
    size_t mem_max, mem_used; /* the in-memory budget, shared by the shards */
    hw_shard *sh;           /* the files; the current one is the last */
    size_t n_sh, cap_sh;
    hw_loc *locs;           /* sharded: every stored tensor and its shard */
    size_t n_locs, cap_locs;
    char **names;           /* declared tensor names, in order */
    uint64_t *estimate;     /* per tensor: an upper bound of its header part */
    unsigned char *compressed; /* per tensor: declared compressed */
    uint64_t seen_max[2];   /* largest header part seen, raw / compressed */
    size_t seen_max_len[2]; /* the name length of that tensor */
    uint64_t grown, before; /* header text of all files so far, and before
                               the current tensor */
    size_t n, next;
    hw_set stored;          /* every stored tensor name */
    hvq_buf prefix;          /* header text up to the value of hvq.tensors */
    hvq_buf tensors;         /* hvq.tensors as raw JSON: "[{...},{...}" */
    uint64_t tensors_esc;   /* its length once escaped into the header */
    hvq_buf tmp;             /* scratch: one tensor's JSON */
    uint16_t *scales;       /* fp16 row scales of one tensor */
    size_t scales_cap;
} hw_state;

/* The metadata of every shard but the first, before its "hvq.shard". */
#define HW_SHARD_META "{\"__metadata__\":{\"format\":\"hvq\",\"hvq.format_version\":\"" \
    HW_FORMAT_VERSION "\""
#define HW_EXT ".hvq"

static uint64_t hw_digits(uint64_t v)
{
    uint64_t d = 1;
    while (v >= 10) {
        v /= 10;
        d++;
    }
    return d;
}

/* Length of ,"hvq.shard":"K of N" in shard k's metadata: none unsharded or
 * when the container is one file; n_files 0 (not known yet) counts the
 * widest N. */
static uint64_t hw_key_len(const hw_state *s, size_t k, size_t n_files)
{
    if (!s->max_shard || n_files == 1)
        return 0;
    return 19 + hw_digits(k + 1) + (n_files ? hw_digits(n_files) : 20);
}

/* Exact header size of file k with what is known now (the tensors so
 * far); n_files as for hw_key_len. */
static uint64_t hw_header_size(const hw_state *s, size_t k, size_t n_files)
{
    uint64_t key = hw_key_len(s, k, n_files);
    /* prefix, then hvq.tensors as a JSON string: two quotes around the
     * escaped "[" + entries (tensors_esc) and the closing "]" (counted here
     * even while the list is still open); then the shard key, "}" closing
     * __metadata__, the tensor entries and "}" closing the root. */
    if (k == 0) /* (before the first file is open, without entries) */
        return s->prefix.len + 1 + s->tensors_esc + 1 + key + 1 + 1 +
               (s->sh ? s->sh[0].entries.len : 0) + 1;
    return strlen(HW_SHARD_META) + key + 1 + s->sh[k].entries.len + 1;
}

static void hw_close(hvq_ctx *ctx, void *state);

static hvq_status hw_nomem(hvq_ctx *ctx, const hw_state *s)
{
    return ctx->host->error(ctx, HVQ_E_NOMEM, "%s: out of memory building the container header",
                            s->path);
}

static int hw_utf8(const char *s) { return s && hvq_json_utf8_valid(s, strlen(s)); }

/* "DIR/NAME" + tail (the path is DIR/NAME.hvq); host-allocated. */
static char *hw_stem_path(hvq_ctx *ctx, const hw_state *s, const char *tail)
{
    size_t stem = strlen(s->path) - strlen(HW_EXT), len = stem + strlen(tail) + 1;
    char *p = ctx->host->alloc(ctx, len);
    if (p)
        snprintf(p, len, "%.*s%s", (int)stem, s->path, tail);
    return p;
}

/* Starts file k (the container, or its next shard): its output, under the
 * container's name for the first (renamed at the end when there are more)
 * and a provisional name for the others. */
static hvq_status hw_add_file(hvq_ctx *ctx, hw_state *s)
{
    const hvq_host *H = ctx->host;
    if (s->n_sh == s->cap_sh) {
        size_t cap = s->cap_sh ? 2 * s->cap_sh : 4;
        hw_shard *p = H->realloc(ctx, s->sh, cap * sizeof *p);
        if (!p)
            return HVQ_E_NOMEM;
        s->sh = p;
        s->cap_sh = cap;
    }
    size_t k = s->n_sh;
    hw_shard *f = &s->sh[k];
    memset(f, 0, sizeof *f);
    s->n_sh++;
    char tail[64], *name = NULL;
    snprintf(tail, sizeof tail, HW_EXT ".shard-%05zu", k + 1);
    if (k)
        name = hw_stem_path(ctx, s, tail);
    if (k && !name)
        return HVQ_E_NOMEM;
    f->out = H->output_open(ctx, k ? name : s->path);
    H->free(name);
    if (!f->out) {
        hvq_status st = H->status(ctx); /* the host set the message */
        return st != HVQ_OK ? st : HVQ_E_IO;
    }
    f->before = hw_header_size(s, k, 0);
    if (s->user_reserve) { /* the user's size: stream from the first byte */
        f->reserve = s->user_reserve;
        f->fixed = 1;
    }
    return HVQ_OK;
}

static hvq_status hw_open(hvq_ctx *ctx, const hvq_params *params, const hvq_writer_setup *setup,
                          void **state)
{
    const hvq_host *H = ctx->host;
    *state = NULL;
    hw_state *s = H->calloc(ctx, 1, sizeof *s);
    if (!s)
        return HVQ_E_NOMEM;
    *state = s; /* the host calls hw_close even when this fails */
    if (!(s->path = H->strdup(ctx, setup->output_path)))
        return HVQ_E_NOMEM;
    s->max_shard = (uint64_t)params->values[P_MAX_SHARD].i;
    if (s->max_shard) {
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
    uint64_t fixed = hw_header_size(s, 0, 0);
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
    return hw_add_file(ctx, s);
}

static hvq_status hw_too_big(hvq_ctx *ctx, const hw_state *s, uint64_t need, uint64_t reserve)
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
        s->path, s->names[s->next], (unsigned long long)reserve, (unsigned long long)kib);
}

/* Moves file k's buffered data to the output at 8 + R and frees it. */
static hvq_status hw_flush(hvq_ctx *ctx, hw_state *s, size_t k)
{
    hw_shard *f = &s->sh[k];
    hvq_status st = HVQ_OK;
    if (f->mem_len)
        st = ctx->host->output_pwrite(ctx, f->out, f->mem, f->mem_len, 8 + f->reserve);
    ctx->host->free(f->mem);
    s->mem_used -= f->mem_len;
    f->mem = NULL;
    f->mem_len = f->mem_cap = 0;
    return st;
}

/* Fixes file k's R while tensor s->next is being written: twice its
 * header before that tensor, 16 KiB, and a bound for it and every later
 * tensor; then moves its buffered data to the output. A shard other than
 * the first only takes the tensors that fit in it, so it gets no more than
 * twice its header per data byte so far (pending: bytes about to be
 * written) times its size limit, plus 16 KiB: should later tensors need
 * more, the shard closes early (hw_put). */
static hvq_status hw_fix_reserve(hvq_ctx *ctx, hw_state *s, size_t k, uint64_t pending)
{
    hw_shard *f = &s->sh[k];
    uint64_t r = s->user_reserve;
    if (!r) {
        r = 2 * f->before + 16384;
        for (size_t j = s->next; j < s->n; j++) {
            int c = s->compressed[j];
            uint64_t e = s->estimate[j];
            if (s->seen_max[c]) { /* twice the largest seen, scaled by name length */
                uint64_t l = strlen(s->names[j]);
                uint64_t seen = 2 * s->seen_max[c] * (l + 16) / (s->seen_max_len[c] + 16);
                if (seen > e)
                    e = seen;
            }
            r += e;
        }
        if (k > 0) {
            uint64_t used = f->data_len + pending, need = hw_header_size(s, k, 0);
            uint64_t mult = (s->max_shard > used ? s->max_shard : used) / (used ? used : 1) + 1;
            uint64_t rate = mult > HW_MAX_HEADER || need > HW_MAX_HEADER / (2 * mult)
                                ? HW_MAX_HEADER
                                : 2 * need * mult + 16384;
            if (rate < r)
                r = rate;
        }
        r = (r + 7) / 8 * 8;
        if (r > HW_MAX_HEADER)
            r = HW_MAX_HEADER;
    }
    f->reserve = r;
    f->fixed = 1;
    /* The first file's header also holds the hvq.tensors entry being built. */
    uint64_t need = hw_header_size(s, k, 0) + (k == 0 ? s->tmp.len : 0);
    if (need > f->reserve)
        return hw_too_big(ctx, s, need, f->reserve);
    ctx->host->log(ctx, HVQ_LOG_DEBUG, "%s: %llu bytes reserved for the header of file %zu",
                   s->path, (unsigned long long)f->reserve, k + 1);
    return hw_flush(ctx, s, k);
}

/* Appends n bytes to the current file's data section, adding them to
 * *crc. */
static hvq_status hw_data(hvq_ctx *ctx, hw_state *s, const void *data, uint64_t n,
                          uint32_t *crc)
{
    const unsigned char *p = data;
    size_t k = s->n_sh - 1;
    hw_shard *f = &s->sh[k];
    hvq_status st;
    if (!f->fixed && n > 0) {
        /* Over budget with the first shard still held in memory: that one
         * gets its reservation first. */
        if (n > s->mem_max - s->mem_used && k > 0 && !s->sh[0].fixed &&
            (st = hw_fix_reserve(ctx, s, 0, 0)) != HVQ_OK)
            return st;
        if (n <= s->mem_max - s->mem_used) {
            if (f->mem_len + n > f->mem_cap) {
                size_t cap = f->mem_cap ? f->mem_cap : 65536;
                while (cap < f->mem_len + n)
                    cap *= 2;
                if (cap > s->mem_max)
                    cap = s->mem_max;
                unsigned char *m = ctx->host->realloc(ctx, f->mem, cap);
                if (!m)
                    return HVQ_E_NOMEM;
                f->mem = m;
                f->mem_cap = cap;
            }
            memcpy(f->mem + f->mem_len, p, (size_t)n);
            *crc = hvq_crc32(*crc, p, (size_t)n);
            f->mem_len += (size_t)n;
            s->mem_used += (size_t)n;
            f->data_len += n;
            return HVQ_OK;
        }
        if ((st = hw_fix_reserve(ctx, s, k, n)) != HVQ_OK)
            return st;
    }
    while (n > 0) {
        size_t chunk = n > HW_CHUNK ? HW_CHUNK : (size_t)n;
        *crc = hvq_crc32(*crc, p, chunk);
        st = ctx->host->output_pwrite(ctx, f->out, p, chunk, 8 + f->reserve + f->data_len);
        if (st != HVQ_OK)
            return st;
        f->data_len += chunk;
        p += chunk;
        n -= chunk;
    }
    return HVQ_OK;
}

/* Closes the current shard and starts the next one. A closed shard other
 * than the first gets its exact header size now and its data goes to the
 * output; the first stays in memory (if it is) until the end, since its
 * hvq.tensors still grows. */
static hvq_status hw_next_shard(hvq_ctx *ctx, hw_state *s)
{
    size_t k = s->n_sh - 1;
    hw_shard *f = &s->sh[k];
    if (k > 0 && !f->fixed) {
        uint64_t need = hw_header_size(s, k, 0);
        f->reserve = (need + 7) / 8 * 8;
        f->fixed = 1;
        if (need > HW_MAX_HEADER)
            return hw_too_big(ctx, s, need, HW_MAX_HEADER);
        hvq_status st = hw_flush(ctx, s, k);
        if (st != HVQ_OK)
            return st;
    }
    return hw_add_file(ctx, s);
}

/* One safetensors header entry for a stored tensor of n bytes that starts
 * at the current end of file k's data section. */
static void hw_entry(hw_state *s, size_t k, const char *name, const char *dtype, int ndim,
                     const int64_t *shape, uint64_t n)
{
    hvq_buf *b = &s->sh[k].entries;
    hvq_buf_append(b, ",", 1);
    hvq_buf_json_string(b, name);
    hvq_buf_puts(b, ":{\"dtype\":");
    hvq_buf_json_string(b, dtype);
    hvq_buf_puts(b, ",\"shape\":");
    hw_put_shape(b, ndim, shape);
    hvq_buf_puts(b, ",\"data_offsets\":[");
    hvq_buf_putu(b, (unsigned long long)s->sh[k].data_len);
    hvq_buf_append(b, ",", 1);
    hvq_buf_putu(b, (unsigned long long)(s->sh[k].data_len + n));
    hvq_buf_puts(b, "]}");
}

/* Stores one tensor (n bytes at data) in the current file, or sharded in
 * a new shard when this one would pass max_shard_size (never for the first
 * stored tensor of a shard) or its fixed header has no room left. */
static hvq_status hw_put(hvq_ctx *ctx, hw_state *s, const char *name, const char *dtype,
                         int ndim, const int64_t *shape, const void *data, uint64_t n,
                         uint32_t *crc)
{
    const hvq_host *H = ctx->host;
    hvq_status st;
    size_t k = s->n_sh - 1;
    hw_shard *f = &s->sh[k];
    if (s->max_shard && f->data_len > 0 &&
        n > s->max_shard - (f->data_len < s->max_shard ? f->data_len : s->max_shard)) {
        if ((st = hw_next_shard(ctx, s)) != HVQ_OK)
            return st;
        f = &s->sh[++k];
    }
    size_t mark = f->entries.len;
    hw_entry(s, k, name, dtype, ndim, shape, n);
    if (f->entries.oom)
        return hw_nomem(ctx, s);
    uint64_t need = hw_header_size(s, k, 0) + (k == 0 ? s->tmp.len : 0);
    if (f->fixed && need > f->reserve) {
        if (!s->max_shard || f->n_stored == 0)
            return hw_too_big(ctx, s, need, f->reserve);
        f->entries.len = mark; /* no room: this one opens the next shard */
        if ((st = hw_next_shard(ctx, s)) != HVQ_OK)
            return st;
        f = &s->sh[++k];
        mark = 0;
        hw_entry(s, k, name, dtype, ndim, shape, n);
        need = hw_header_size(s, k, 0);
        if (f->entries.oom)
            return hw_nomem(ctx, s);
        if (f->fixed && need > f->reserve)
            return hw_too_big(ctx, s, need, f->reserve);
    }
    s->grown += f->entries.len - mark;
    f->n_stored++;
    if (s->max_shard) {
        if (s->n_locs == s->cap_locs) {
            size_t cap = s->cap_locs ? 2 * s->cap_locs : 64;
            hw_loc *p = H->realloc(ctx, s->locs, cap * sizeof *p);
            if (!p)
                return HVQ_E_NOMEM;
            s->locs = p;
            s->cap_locs = cap;
        }
        if (!(s->locs[s->n_locs].name = H->strdup(ctx, name)))
            return HVQ_E_NOMEM;
        s->locs[s->n_locs++].shard = k;
    }
    return hw_data(ctx, s, data, n, crc);
}

/* Appends the tensor's hvq.tensors entry (in s->tmp) and checks that the
 * headers still fit their reservations. */
static hvq_status hw_commit_entry(hvq_ctx *ctx, hw_state *s)
{
    if (s->next > 0)
        hvq_buf_append(&s->tensors, ",", 1);
    hvq_buf_append(&s->tensors, s->tmp.data ? s->tmp.data : "", s->tmp.len);
    uint64_t esc = (s->next > 0) + hvq_json_escaped_len(s->tmp.data ? s->tmp.data : "",
                                                       s->tmp.len);
    s->tensors_esc += esc;
    s->grown += esc;
    s->tmp.len = 0;
    if (s->tensors.oom || s->tmp.oom)
        return hw_nomem(ctx, s);
    int c = s->compressed[s->next];
    if (s->grown - s->before > s->seen_max[c]) {
        s->seen_max[c] = s->grown - s->before;
        s->seen_max_len[c] = strlen(s->names[s->next]);
    }
    size_t files[2] = {0, s->n_sh - 1}; /* the first and the current */
    for (size_t i = 0; i < 2; i++) {
        const hw_shard *f = &s->sh[files[i]];
        uint64_t need = hw_header_size(s, files[i], 0);
        uint64_t room = f->fixed ? f->reserve : HW_MAX_HEADER;
        if (need > room)
            return hw_too_big(ctx, s, need, room);
    }
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
        if (st == HVQ_OK)
            st = hw_put(ctx, s, sname.data, "F16", 1, shape, s->scales, 2 * r->rows, &crc);
        hvq_buf_free(&sname);
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
    /* Sharded: a tensor whose stored tensors fit one shard but not what is
     * left of the current one starts the next shard. */
    if (s->max_shard) {
        uint64_t total = hw_stored_bytes(r);
        const hw_shard *f = &s->sh[s->n_sh - 1];
        uint64_t used = f->data_len < s->max_shard ? f->data_len : s->max_shard;
        if (f->data_len > 0 && total <= s->max_shard && total > s->max_shard - used) {
            hvq_status st = hw_next_shard(ctx, s);
            if (st != HVQ_OK)
                return st;
        }
    }
    s->before = s->grown;
    s->sh[0].before = hw_header_size(s, 0, 0);
    s->sh[s->n_sh - 1].before = hw_header_size(s, s->n_sh - 1, 0);
    hvq_status st = r->compressed ? hw_compressed(ctx, s, r) : hw_raw(ctx, s, &r->original);
    if (st == HVQ_OK)
        s->next++;
    return st;
}

/* The header of file k (n_files in all) into h: the 8-byte length, the
 * JSON, spaces up to 8 + R. */
static hvq_status hw_header(hvq_ctx *ctx, hw_state *s, size_t k, size_t n_files, hvq_buf *h)
{
    hw_shard *f = &s->sh[k];
    unsigned char len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (unsigned char)(f->reserve >> (8 * i));
    h->len = 0;
    hvq_buf_append(h, (const char *)len8, 8);
    if (k == 0) {
        hvq_buf_append(h, s->prefix.data, s->prefix.len);
        hvq_buf_json_stringn(h, s->tensors.data, s->tensors.len);
    } else {
        hvq_buf_puts(h, HW_SHARD_META);
    }
    if (hw_key_len(s, k, n_files))
        hvq_buf_printf(h, ",\"hvq.shard\":\"%zu of %zu\"", k + 1, n_files);
    hvq_buf_append(h, "}", 1);
    if (f->entries.len)
        hvq_buf_append(h, f->entries.data, f->entries.len);
    hvq_buf_append(h, "}", 1);
    while (!h->oom && h->len < 8 + f->reserve) {
        static const char spaces[64] = "                                                               ";
        uint64_t left = 8 + f->reserve - h->len;
        hvq_buf_append(h, spaces, left < 63 ? (size_t)left : 63);
    }
    if (h->oom)
        return hw_nomem(ctx, s);
    if (h->len != 8 + f->reserve)
        return ctx->host->error(ctx, HVQ_E_INTERNAL, "%s: header of %zu bytes, expected %llu",
                                s->path, h->len, (unsigned long long)(8 + f->reserve));
    return HVQ_OK;
}

static int hw_loc_cmp(const void *a, const void *b)
{
    return strcmp(((const hw_loc *)a)->name, ((const hw_loc *)b)->name);
}

/* Sharded: every file gets its final name, and NAME.hvq.index.json maps
 * every stored tensor to its shard (Hugging Face's index layout). */
static hvq_status hw_shard_names(hvq_ctx *ctx, hw_state *s)
{
    const hvq_host *H = ctx->host;
    char **names = H->calloc(ctx, s->n_sh, sizeof *names);
    hvq_status st = names ? HVQ_OK : HVQ_E_NOMEM;
    uint64_t total = 0;
    for (size_t k = 0; st == HVQ_OK && k < s->n_sh; k++) {
        char tail[96];
        snprintf(tail, sizeof tail, "-%05zu-of-%05zu" HW_EXT, k + 1, s->n_sh);
        if (!(names[k] = hw_stem_path(ctx, s, tail)))
            st = HVQ_E_NOMEM;
        else
            st = H->output_rename(ctx, s->sh[k].out, names[k]);
        total += s->sh[k].data_len;
    }
    hvq_buf b = {0};
    if (st == HVQ_OK) {
        qsort(s->locs, s->n_locs, sizeof *s->locs, hw_loc_cmp);
        hvq_buf_puts(&b, "{\n  \"metadata\": {\n    \"total_size\": ");
        hvq_buf_putu(&b, (unsigned long long)total);
        hvq_buf_puts(&b, ",\n    \"written_by\": \"hvqconv\"\n  },\n  \"weight_map\": {");
        for (size_t i = 0; i < s->n_locs; i++) {
            const char *file = names[s->locs[i].shard];
            const char *slash = strrchr(file, '/');
            hvq_buf_puts(&b, i ? ",\n    " : "\n    ");
            hvq_buf_json_string(&b, s->locs[i].name);
            hvq_buf_puts(&b, ": ");
            hvq_buf_json_string(&b, slash ? slash + 1 : file);
        }
        hvq_buf_puts(&b, "\n  }\n}\n");
        if (b.oom)
            st = hw_nomem(ctx, s);
    }
    char *ipath = st == HVQ_OK ? hw_stem_path(ctx, s, HW_EXT ".index.json") : NULL;
    if (st == HVQ_OK && !ipath)
        st = HVQ_E_NOMEM;
    if (st == HVQ_OK) {
        hvq_output *o = H->output_open(ctx, ipath);
        if (!o)
            st = H->status(ctx) != HVQ_OK ? H->status(ctx) : HVQ_E_IO;
        else
            st = H->output_write(ctx, o, b.data, b.len);
    }
    H->free(ipath);
    hvq_buf_free(&b);
    for (size_t k = 0; names && k < s->n_sh; k++)
        H->free(names[k]);
    H->free(names);
    return st;
}

static hvq_status hw_finish(hvq_ctx *ctx, void *state)
{
    const hvq_host *H = ctx->host;
    hw_state *s = state;
    if (s->next != s->n)
        return H->error(ctx, HVQ_E_INTERNAL, "%s: finish after %zu of %zu tensors", s->path,
                        s->next, s->n);
    /* hw_header_size already counts this closing bracket (it reserves it
     * while the list is still open), so tensors_esc does not grow. */
    hvq_buf_append(&s->tensors, "]", 1);
    if (s->tensors.oom)
        return hw_nomem(ctx, s);
    size_t n_files = s->n_sh;
    hvq_buf h = {0};
    hvq_status st = HVQ_OK;
    for (size_t k = 0; st == HVQ_OK && k < n_files; k++) {
        hw_shard *f = &s->sh[k];
        uint64_t need = hw_header_size(s, k, n_files);
        if (!f->fixed) /* its data is in memory: the exact size will do */
            f->reserve = s->user_reserve ? s->user_reserve : (need + 7) / 8 * 8;
        if (need > f->reserve || need > HW_MAX_HEADER) {
            st = H->error(ctx, HVQ_E_UNSUPPORTED,
                          "%s: the container header needs %llu bytes but %llu %s", s->path,
                          (unsigned long long)need,
                          (unsigned long long)(need > HW_MAX_HEADER ? HW_MAX_HEADER
                                                                    : f->reserve),
                          need > HW_MAX_HEADER ? "is the most safetensors readers accept"
                                               : "were reserved; rerun with a larger "
                                                 "stages.writer.header_reserve");
            break;
        }
        if ((st = hw_header(ctx, s, k, n_files, &h)) != HVQ_OK)
            break;
        st = H->output_pwrite(ctx, f->out, h.data, h.len, 0);
        if (st == HVQ_OK && !f->fixed) {
            f->fixed = 1;
            st = hw_flush(ctx, s, k);
        }
        if (st == HVQ_OK)
            H->log(ctx, HVQ_LOG_DEBUG, "%s: file %zu of %zu: header %llu of %llu reserved "
                   "bytes, %llu bytes of data", s->path, k + 1, n_files,
                   (unsigned long long)need, (unsigned long long)f->reserve,
                   (unsigned long long)f->data_len);
    }
    hvq_buf_free(&h);
    if (st == HVQ_OK && n_files > 1)
        st = hw_shard_names(ctx, s);
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
    for (size_t k = 0; k < s->n_sh; k++) {
        hvq_buf_free(&s->sh[k].entries);
        H->free(s->sh[k].mem);
    }
    H->free(s->sh);
    for (size_t i = 0; i < s->n_locs; i++)
        H->free(s->locs[i].name);
    H->free(s->locs);
    hw_set_free(H, &s->stored);
    hvq_buf_free(&s->prefix);
    hvq_buf_free(&s->tensors);
    hvq_buf_free(&s->tmp);
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
};

HVQ_REGISTER_PLUGIN(hw_plugin)
