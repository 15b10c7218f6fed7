/* The source format "imatrix-dat": llama.cpp's legacy importance matrix
 * (the .dat file older `llama-imatrix` writes; the GGUF layout is read by
 * the gguf format). It has no magic bytes, so detection only suggests it
 * for a file named *.dat or *.imatrix whose first entry parses; the imatrix
 * Hessian stage opens it by name (host->model_open_as).
 *
 * The layout, little-endian:
 *     int32 n_entries
 *     n_entries x { int32 name_len, name bytes, int32 ncall,
 *                   int32 n_values, float32 values[n_values] }
 *     optional trailer: int32 last_chunk, int32 dataset_len, dataset name
 * each value being mean(x^2) * ncall.
 *
 * It is presented like the GGUF layout, so one reader serves both: per
 * entry W, the tensors W.in_sum2 (F32 [n_values], the values as stored)
 * and W.counts (F64 [1], ncall, exact), whose ratio is the diagonal. The
 * whole file is checked when it is opened.
 */
#include "config.h"

#include "plugin.h"

#include "checked.h"
#include "file.h"

#include <stdio.h>
#include <string.h>

/* The longest name accepted, and the largest file (a 70B model's imatrix
 * is a few MB). */
#define DAT_MAX_NAME 4096
#define DAT_MAX_FILE (2ull << 30)

typedef struct dat_entry {
    char *sum_name, *count_name; /* "W.in_sum2", "W.counts" */
    float *values;
    double ncall;
    int32_t n;
} dat_entry;

typedef struct dat_state {
    const hvq_host *host;
    char *path;
    dat_entry *e;
    size_t n;
} dat_state;

typedef struct cursor {
    const unsigned char *p;
    size_t len, off;
} cursor;

/* Reads a little-endian int32; 0 when fewer than 4 bytes are left. */
static int rd_i32(cursor *c, int32_t *v)
{
    if (c->len - c->off < 4)
        return 0;
    const unsigned char *b = c->p + c->off;
    uint32_t u = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
                 (uint32_t)b[3] << 24;
    *v = u < 0x80000000u ? (int32_t)u : (int32_t)(u - 0x80000000u) - INT32_MAX - 1;
    c->off += 4;
    return 1;
}

/* Whether head (a file's first bytes) starts like a legacy imatrix: a
 * plausible entry count, then a first name of printable bytes. */
static int looks_like_dat(const unsigned char *head, size_t n)
{
    cursor c = {head, n, 0};
    int32_t count, nlen;
    if (!rd_i32(&c, &count) || count <= 0 || !rd_i32(&c, &nlen) || nlen <= 0 ||
        nlen > DAT_MAX_NAME || (size_t)nlen > n - c.off)
        return 0;
    for (int32_t i = 0; i < nlen; i++)
        if (head[c.off + (size_t)i] < 0x20 || head[c.off + (size_t)i] > 0x7e)
            return 0;
    return 1;
}

static int dat_probe(const char *path, const unsigned char *head, size_t head_len)
{
    if (head_len == 0 || !(hvq_ends_with(path, ".dat") || hvq_ends_with(path, ".imatrix")))
        return 0;
    return looks_like_dat(head, head_len) ? 40 : 0;
}

/* "truncated" error for `what` of entry k at the cursor. */
static hvq_status truncated(hvq_ctx *ctx, const dat_state *s, const cursor *c, int32_t k,
                            int32_t count, const char *what, size_t need)
{
    return ctx->host->error(ctx, HVQ_E_INPUT,
                            "%s: truncated in entry %ld of %ld: %s needs %zu bytes at offset %zu "
                            "but the file ends at %zu",
                            s->path, (long)k + 1, (long)count, what, need, c->off, c->len);
}

/* The entry count, checked against what the file can hold (the smallest
 * entry is 12 bytes plus a 1-byte name plus one value). */
static hvq_status read_count(hvq_ctx *ctx, const dat_state *s, cursor *c, int32_t *count)
{
    const hvq_host *H = ctx->host;
    if (!rd_i32(c, count))
        return H->error(ctx, HVQ_E_INPUT,
                        "%s: %zu bytes, too short for an importance matrix (legacy .dat: an "
                        "int32 entry count first; GGUF: the magic \"GGUF\")",
                        s->path, c->len);
    if (*count < 0)
        return H->error(ctx, HVQ_E_INPUT, "%s: negative entry count %ld", s->path, (long)*count);
    if ((uint64_t)*count > (c->len - 4) / 17)
        return H->error(ctx, HVQ_E_INPUT,
                        "%s: entry count %ld is more than a file of %zu bytes can hold; not an "
                        "importance matrix?",
                        s->path, (long)*count, c->len);
    return HVQ_OK;
}

/* Entry k's name: 1..DAT_MAX_NAME bytes, no NUL. */
static hvq_status read_name(hvq_ctx *ctx, const dat_state *s, cursor *c, int32_t k,
                            int32_t count, const char **name, size_t *len)
{
    int32_t nlen;
    if (!rd_i32(c, &nlen))
        return truncated(ctx, s, c, k, count, "the name length", 4);
    if (nlen <= 0 || nlen > DAT_MAX_NAME)
        return ctx->host->error(ctx, HVQ_E_INPUT,
                                "%s: entry %ld of %ld: invalid name length %ld at offset %zu (1 "
                                "to %d accepted)",
                                s->path, (long)k + 1, (long)count, (long)nlen, c->off - 4,
                                DAT_MAX_NAME);
    if (c->len - c->off < (size_t)nlen)
        return truncated(ctx, s, c, k, count, "the name", (size_t)nlen);
    *name = (const char *)c->p + c->off;
    *len = (size_t)nlen;
    if (memchr(*name, '\0', *len))
        return ctx->host->error(ctx, HVQ_E_INPUT,
                                "%s: entry %ld of %ld: the name holds a NUL byte", s->path,
                                (long)k + 1, (long)count);
    c->off += *len;
    return HVQ_OK;
}

/* "NAME" followed by suffix, in a new host string. */
static char *suffixed(hvq_ctx *ctx, const char *name, size_t len, const char *suffix)
{
    char *p = ctx->host->alloc(ctx, len + strlen(suffix) + 1);
    if (p) {
        memcpy(p, name, len);
        strcpy(p + len, suffix);
    }
    return p;
}

/* Entry k after its name: ncall, the value count and the values. */
static hvq_status read_values(hvq_ctx *ctx, const dat_state *s, cursor *c, int32_t k,
                              int32_t count, const char *name, dat_entry *e)
{
    const hvq_host *H = ctx->host;
    char what[DAT_MAX_NAME + 64];
    int32_t ncall, nval;
    int got_ncall = rd_i32(c, &ncall);
    if (!got_ncall || !rd_i32(c, &nval)) {
        snprintf(what, sizeof what, "the %s of '%s'", got_ncall ? "value count" : "ncall", name);
        return truncated(ctx, s, c, k, count, what, 4);
    }
    if (ncall <= 0 || nval <= 0)
        return H->error(ctx, HVQ_E_INPUT, "%s: entry '%s' (%ld of %ld): %s is %ld (must be > 0)",
                        s->path, name, (long)k + 1, (long)count,
                        ncall <= 0 ? "ncall" : "the value count",
                        (long)(ncall <= 0 ? ncall : nval));
    if ((c->len - c->off) / 4 < (size_t)nval) {
        snprintf(what, sizeof what, "'%s' with %ld values", name, (long)nval);
        return truncated(ctx, s, c, k, count, what, (size_t)nval * 4);
    }
    if (!(e->values = H->alloc(ctx, (size_t)nval * sizeof *e->values)))
        return HVQ_E_NOMEM;
    for (int32_t j = 0; j < nval; j++) {
        const unsigned char *b = c->p + c->off + 4 * (size_t)j;
        uint32_t u = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
                     (uint32_t)b[3] << 24;
        memcpy(&e->values[j], &u, 4);
    }
    c->off += 4 * (size_t)nval;
    e->ncall = ncall;
    e->n = nval;
    return HVQ_OK;
}

/* Optional trailer: int32 last chunk, int32 dataset name length, name.
 * Nothing else may follow the entries. */
static hvq_status read_trailer(hvq_ctx *ctx, const dat_state *s, cursor *c)
{
    size_t rest = c->len - c->off, at = c->off;
    int32_t chunk, dlen;
    if (rest == 0)
        return HVQ_OK;
    if (rest < 8)
        return ctx->host->error(ctx, HVQ_E_INPUT,
                                "%s: %zu bytes of trailing data at offset %zu after the last "
                                "entry (too short for a trailer: int32 last chunk, int32 dataset "
                                "name length, name)",
                                s->path, rest, at);
    rd_i32(c, &chunk);
    rd_i32(c, &dlen);
    if (chunk < 0 || dlen < 0 || (size_t)dlen != rest - 8)
        return ctx->host->error(ctx, HVQ_E_INPUT,
                                "%s: %zu bytes of trailing data at offset %zu after the last "
                                "entry are not a trailer (last chunk %ld, dataset name length "
                                "%ld, %zu bytes left for the name)",
                                s->path, rest, at, (long)chunk, (long)dlen, rest - 8);
    return HVQ_OK;
}

static hvq_status parse(hvq_ctx *ctx, dat_state *s, const unsigned char *buf, size_t len)
{
    cursor c = {buf, len, 0};
    int32_t count = 0;
    hvq_status st = read_count(ctx, s, &c, &count);
    if (st == HVQ_OK && !(s->e = ctx->host->calloc(ctx, (size_t)count + 1, sizeof *s->e)))
        st = HVQ_E_NOMEM;
    for (int32_t k = 0; st == HVQ_OK && k < count; k++) {
        const char *name = NULL;
        size_t nlen = 0;
        dat_entry *e = &s->e[k];
        if ((st = read_name(ctx, s, &c, k, count, &name, &nlen)) != HVQ_OK)
            break;
        if (!(e->sum_name = suffixed(ctx, name, nlen, ".in_sum2")) ||
            !(e->count_name = suffixed(ctx, name, nlen, ".counts"))) {
            st = HVQ_E_NOMEM;
            break;
        }
        s->n = (size_t)k + 1;
        e->sum_name[nlen] = '\0'; /* the bare name for messages, restored below */
        st = read_values(ctx, s, &c, k, count, e->sum_name, e);
        e->sum_name[nlen] = '.';
    }
    return st == HVQ_OK ? read_trailer(ctx, s, &c) : st;
}

static void dat_close(hvq_ctx *ctx, void *state)
{
    dat_state *s = state;
    (void)ctx;
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++) {
        s->host->free(s->e[i].sum_name);
        s->host->free(s->e[i].count_name);
        s->host->free(s->e[i].values);
    }
    s->host->free(s->e);
    s->host->free(s->path);
    s->host->free(s);
}

static hvq_status dat_open(hvq_ctx *ctx, const char *path, void **state)
{
    const hvq_host *H = ctx->host;
    dat_state *s = H->calloc(ctx, 1, sizeof *s);
    *state = s;
    if (!s)
        return HVQ_E_NOMEM;
    s->host = H;
    if (!(s->path = H->strdup(ctx, path)))
        return HVQ_E_NOMEM;
    unsigned char *buf = NULL;
    size_t len = 0;
    hvq_status st = hvq_slurp_input(ctx, path, DAT_MAX_FILE, "an importance matrix", &buf, &len);
    if (st == HVQ_OK)
        st = parse(ctx, s, buf, len);
    H->free(buf);
    return st;
}

static size_t dat_count(void *state) { return ((dat_state *)state)->n * 2; }

static hvq_status dat_info(void *state, size_t i, hvq_tensor_info *info)
{
    const dat_state *s = state;
    const dat_entry *e = &s->e[i / 2];
    memset(info, 0, sizeof *info);
    info->ndim = 1;
    if (i % 2 == 0) {
        info->name = e->sum_name;
        info->dtype = HVQ_DTYPE_F32;
        info->dtype_name = "F32";
        info->shape[0] = e->n;
        info->nbytes = (uint64_t)e->n * sizeof(float);
    } else {
        info->name = e->count_name;
        info->dtype = HVQ_DTYPE_F64;
        info->dtype_name = "F64";
        info->shape[0] = 1;
        info->nbytes = sizeof(double);
    }
    return HVQ_OK;
}

static hvq_status dat_read(hvq_ctx *ctx, void *state, size_t i, hvq_tensor *t)
{
    const dat_state *s = state;
    (void)ctx;
    dat_info(state, i, &t->info);
    t->data = i % 2 == 0 ? (const void *)s->e[i / 2].values : (const void *)&s->e[i / 2].ncall;
    return HVQ_OK;
}

static const hvq_plugin dat_plugin = {
    HVQ_PLUGIN_HEADER,
    .kinds = HVQ_KIND_SOURCE,
    .name = "imatrix-dat",
    .version = "1.0.0",
    .summary = "llama.cpp's legacy importance matrix (.dat), as W.in_sum2 and W.counts",
    .license = "MIT",
    .probe = dat_probe,
    .source_open = dat_open,
    .source_count = dat_count,
    .source_info = dat_info,
    .source_read = dat_read,
    .source_close = dat_close,
};

HVQ_REGISTER_PLUGIN(dat_plugin)
