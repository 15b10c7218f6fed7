/* safetensors source and sink.
 *
 * Format: an 8-byte little-endian header length N, N bytes of UTF-8 JSON
 * (an object, optionally padded with spaces), then the data section. The
 * JSON maps each tensor name to {"dtype", "shape", "data_offsets"}; the
 * offsets are relative to the data section, and the tensors, sorted by
 * offset, must tile it exactly. An optional "__metadata__" object holds
 * string -> string pairs.
 *
 * Sources: a single file, a directory (its model.safetensors.index.json, or
 * its only *.safetensors file) or a sharded model's *.safetensors.index.json
 * (opened directly, any *.index.json of that shape is read: the shards may
 * have another extension, e.g. a sharded hvq container's *.hvq files).
 * Sink: one file, or shards with an index (max_shard_size), every tensor
 * declared up front; or, with streaming=true, tensors added as they come
 * (the hvq container's writer, formats/hvq): headers reserved and filled
 * in at the end, shards cut while streaming, sink_control for the rest.
 * Files are mapped read-only; tensor data points into the mapping. Pages a
 * read touched would stay resident until close, so a model read tensor by
 * tensor would end up wholly in memory: each source_read first releases
 * the pages of the tensor read before it (madvise MADV_DONTNEED; the
 * mapping stays, a later access reads the file again), and peak memory
 * grows with the largest tensor, not with the model. It also asks the
 * kernel to read the tensor and the next one ahead (MADV_WILLNEED), so
 * that reading a model that is not in the page cache overlaps the work.
 *
 * Everything the plugin needs from hvqconv goes through ctx->host; the only
 * library linked in is the JSON parser (common/json.c).
 */
#include "config.h" /* _GNU_SOURCE, through AC_USE_SYSTEM_EXTENSIONS */

#include "plugin.h"
#include "buf.h"
#include "checked.h"
#include "json.h"
#include "file.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>


#define ST_MAX_HEADER 100000000ull     /* as the reference implementation */
#define ST_INDEX_NAME "model.safetensors.index.json"
#define ST_EXT ".safetensors"
#define ST_INDEX_EXT ".safetensors.index.json"
#define ST_ANY_INDEX_EXT ".index.json"
#define ST_MSG 2048

/* ------------------------------------------------------------------------
 * dtypes
 * ---------------------------------------------------------------------- */
typedef struct st_dtype {
    const char *name;
    hvq_dtype dtype;
    unsigned bits;
} st_dtype;

/* Every dtype of the safetensors specification. Types hvqconv does not
 * interpret are OPAQUE and copied byte for byte under their own name. */
static const st_dtype st_dtypes[] = {
    {"F32", HVQ_DTYPE_F32, 32},
    {"F16", HVQ_DTYPE_F16, 16},
    {"BF16", HVQ_DTYPE_BF16, 16},
    {"F64", HVQ_DTYPE_F64, 64},
    {"I8", HVQ_DTYPE_I8, 8},
    {"U8", HVQ_DTYPE_U8, 8},
    {"I16", HVQ_DTYPE_I16, 16},
    {"U16", HVQ_DTYPE_U16, 16},
    {"I32", HVQ_DTYPE_I32, 32},
    {"U32", HVQ_DTYPE_U32, 32},
    {"I64", HVQ_DTYPE_I64, 64},
    {"U64", HVQ_DTYPE_U64, 64},
    {"BOOL", HVQ_DTYPE_BOOL, 8},
    {"F8_E4M3", HVQ_DTYPE_OPAQUE, 8},
    {"F8_E5M2", HVQ_DTYPE_OPAQUE, 8},
    {"F8_E8M0", HVQ_DTYPE_OPAQUE, 8},
    {"C64", HVQ_DTYPE_OPAQUE, 64},
    /* Sub-byte types: a tensor must still fill whole bytes. */
    {"F4", HVQ_DTYPE_OPAQUE, 4},
    {"F6_E2M3", HVQ_DTYPE_OPAQUE, 6},
    {"F6_E3M2", HVQ_DTYPE_OPAQUE, 6},
};
#define ST_N_DTYPES (sizeof st_dtypes / sizeof st_dtypes[0])

static const st_dtype *st_dtype_by_name(const char *name)
{
    size_t i;
    if (name == NULL)
        return NULL;
    for (i = 0; i < ST_N_DTYPES; i++)
        if (strcmp(st_dtypes[i].name, name) == 0)
            return &st_dtypes[i];
    return NULL;
}

static const st_dtype *st_dtype_by_enum(hvq_dtype t)
{
    size_t i;
    if (t == HVQ_DTYPE_OPAQUE)
        return NULL;
    for (i = 0; i < ST_N_DTYPES; i++)
        if (st_dtypes[i].dtype == t)
            return &st_dtypes[i];
    return NULL;
}

/* ------------------------------------------------------------------------
 * Small helpers
 * ---------------------------------------------------------------------- */
static uint64_t st_le64(const unsigned char *p)
{
    uint64_t v = 0;
    int i;
    for (i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}


/* Sets the ctx error "PATH: MESSAGE" and returns st. */
static hvq_status st_fail(hvq_ctx *ctx, hvq_status st, const char *path,
                          const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

static hvq_status st_fail(hvq_ctx *ctx, hvq_status st, const char *path,
                          const char *fmt, ...)
{
    char msg[ST_MSG];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return ctx->host->error(ctx, st, "%s: %s", path, msg);
}

static hvq_status st_nomem(hvq_ctx *ctx, const char *path)
{
    return st_fail(ctx, HVQ_E_NOMEM, path, "out of memory");
}

/* "dir/name" (malloc'd, NULL when out of memory). */
static char *st_join(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    int slash = a > 0 && dir[a - 1] != '/';
    char *p = malloc(a + (size_t)slash + b + 1);
    if (p == NULL)
        return NULL;
    memcpy(p, dir, a);
    if (slash)
        p[a] = '/';
    memcpy(p + a + (size_t)slash, name, b + 1);
    return p;
}

/* The directory part of path ("." when there is none); malloc'd. */
static char *st_dirname(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *d;
    size_t n;
    if (slash == NULL)
        return strdup(".");
    n = slash == path ? 1 : (size_t)(slash - path);
    d = malloc(n + 1);
    if (d == NULL)
        return NULL;
    memcpy(d, path, n);
    d[n] = '\0';
    return d;
}

static int st_is_regular(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* What a directory holds: the index to use (model.safetensors.index.json,
 * else the only *.safetensors.index.json) and the *.safetensors files. */
typedef struct st_dirscan {
    char *index;       /* file name of the index to use, or NULL */
    size_t n_index;    /* number of *.safetensors.index.json */
    char *single;      /* the first *.safetensors (by name) */
    size_t n_files;    /* number of *.safetensors */
} st_dirscan;

static void st_dirscan_free(st_dirscan *d)
{
    free(d->index);
    free(d->single);
    memset(d, 0, sizeof *d);
}

/* 0 on success, else errno (ENOMEM, or why opendir failed). */
static int st_scan_dir(const char *dir, st_dirscan *out)
{
    DIR *dp;
    struct dirent *de;
    int has_model_index = 0;
    char *first_index = NULL;
    memset(out, 0, sizeof *out);
    dp = opendir(dir);
    if (dp == NULL)
        return errno ? errno : EIO;
    while ((de = readdir(dp)) != NULL) {
        const char *n = de->d_name;
        int is_index = hvq_ends_with(n, ST_INDEX_EXT);
        int is_file = hvq_ends_with(n, ST_EXT);
        char *full;
        if (!is_index && !is_file)
            continue;
        full = st_join(dir, n);
        if (full == NULL)
            goto nomem;
        if (!st_is_regular(full)) {
            free(full);
            continue;
        }
        free(full);
        if (is_index) {
            out->n_index++;
            if (strcmp(n, ST_INDEX_NAME) == 0)
                has_model_index = 1;
            if (first_index == NULL || strcmp(n, first_index) < 0) {
                char *c = strdup(n);
                if (c == NULL)
                    goto nomem;
                free(first_index);
                first_index = c;
            }
        } else {
            out->n_files++;
            if (out->single == NULL || strcmp(n, out->single) < 0) {
                char *c = strdup(n);
                if (c == NULL)
                    goto nomem;
                free(out->single);
                out->single = c;
            }
        }
    }
    closedir(dp);
    if (has_model_index) {
        free(first_index);
        out->index = strdup(ST_INDEX_NAME);
        if (out->index == NULL) {
            st_dirscan_free(out);
            return ENOMEM;
        }
    } else if (out->n_index == 1) {
        out->index = first_index;
    } else {
        free(first_index);
    }
    return 0;
nomem:
    closedir(dp);
    free(first_index);
    st_dirscan_free(out);
    return ENOMEM;
}

/* ------------------------------------------------------------------------
 * probe
 * ---------------------------------------------------------------------- */
static int st_head_plausible(const unsigned char *head, size_t len,
                             uint64_t file_size)
{
    uint64_t n;
    if (len < 9)
        return 0;
    n = st_le64(head);
    if (n < 2 || n > ST_MAX_HEADER || head[8] != '{')
        return 0;
    if (file_size != 0 && n > file_size - 8)
        return 0;
    return 1;
}

static int st_probe(const char *path, const unsigned char *head,
                    size_t head_len)
{
    struct stat sb;
    if (path == NULL)
        return 0;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        st_dirscan d;
        int score = 0;
        if (st_scan_dir(path, &d) != 0)
            return 0;
        if (d.index != NULL || d.n_files == 1)
            score = 90;
        st_dirscan_free(&d);
        return score;
    }
    if (hvq_ends_with(path, ST_INDEX_EXT))
        return 90;
    {
        uint64_t size = 0; /* the host gives the head (at most 4096 bytes) */
        if (stat(path, &sb) == 0 && S_ISREG(sb.st_mode))
            size = (uint64_t)sb.st_size;
        if (head != NULL && st_head_plausible(head, head_len, size))
            return 90;
        /* Only the name says safetensors: a low score, so that a damaged
         * file still reaches source_open and gets a precise error rather
         * than "unknown format". */
        return hvq_ends_with(path, ST_EXT) ? 10 : 0;
    }
}

/* ------------------------------------------------------------------------
 * Source
 * ---------------------------------------------------------------------- */
typedef struct st_file {
    char *path;                  /* as opened (host alloc) */
    const unsigned char *map;    /* the whole file, read-only */
    size_t size;
    const unsigned char *data;   /* start of the data section */
    uint64_t data_len;
    hvq_json_doc *doc;           /* the header; owns tensor names */
} st_file;

typedef struct st_tensor {
    hvq_tensor_info info;
    size_t file;                 /* index into files */
    uint64_t begin, end;         /* within the file's data section */
    size_t order;                /* position in its header */
} st_tensor;

typedef struct st_source {
    hvq_ctx *ctx;
    const hvq_host *host;
    st_file *files;
    size_t n_files;
    st_tensor *tensors;
    size_t n_tensors, cap_tensors;
    hvq_meta *meta;
    size_t n_meta;
    hvq_json_doc *index_doc;     /* sharded: the index (owns shard names) */
    size_t last;                 /* the tensor read last (n_tensors: none) */
} st_source;

static void st_source_free(st_source *s)
{
    size_t i;
    const hvq_host *h;
    if (s == NULL)
        return;
    h = s->host;
    for (i = 0; i < s->n_files; i++) {
        st_file *f = &s->files[i];
        if (f->map != NULL)
            munmap((void *)f->map, f->size);
        hvq_json_free(f->doc);
        h->free(f->path);
    }
    h->free(s->files);
    h->free(s->tensors);
    h->free(s->meta);
    hvq_json_free(s->index_doc);
    h->free(s);
}

static int st_tensor_cmp(const void *a, const void *b)
{
    const st_tensor *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

/* Opens and maps path into a new entry of s->files. */
static hvq_status st_map_file(st_source *s, const char *path, st_file **out)
{
    hvq_ctx *ctx = s->ctx;
    st_file *f, *files;
    const void *map = NULL;
    size_t size = 0;
    hvq_status st;

    files = s->host->realloc(ctx, s->files, (s->n_files + 1) * sizeof *files);
    if (files == NULL)
        return HVQ_E_NOMEM;
    s->files = files;
    f = &s->files[s->n_files];
    memset(f, 0, sizeof *f);
    f->path = s->host->strdup(ctx, path);
    if (f->path == NULL)
        return HVQ_E_NOMEM;
    s->n_files++; /* from here on st_source_free releases it */
    st = hvq_map_input(ctx, path, &map, &size);
    if (st != HVQ_OK)
        return st;
    f->map = map;
    f->size = size; /* from here on st_source_free unmaps it */
    if (size < 8)
        return st_fail(ctx, HVQ_E_INPUT, path,
                       "truncated: the file is %lld bytes, too short for "
                       "the 8-byte header length",
                       (long long)size);
    *out = f;
    return HVQ_OK;
}

/* Checks the "__metadata__" object and, when keep, exposes it. */
static hvq_status st_read_meta(st_source *s, const char *path,
                               const hvq_json_value *v, int keep)
{
    hvq_ctx *ctx = s->ctx;
    size_t i, n;
    int nomem;
    const hvq_json_member *dup;

    if (v->type != HVQ_JSON_OBJECT)
        return st_fail(ctx, HVQ_E_INPUT, path,
                       "\"__metadata__\" is a %s, expected an object of "
                       "strings",
                       hvq_json_kind(v));
    n = v->count;
    dup = hvq_json_object_duplicate(v, &nomem);
    if (nomem)
        return st_nomem(ctx, path);
    if (dup != NULL)
        return st_fail(ctx, HVQ_E_INPUT, path,
                       "\"__metadata__\" has the key '%.200s' twice",
                       dup->key);
    for (i = 0; i < n; i++) {
        const hvq_json_member *m = &v->members[i];
        if (m->value->type != HVQ_JSON_STRING)
            return st_fail(ctx, HVQ_E_INPUT, path,
                           "\"__metadata__\" value of '%.200s' is a %s, "
                           "expected a string",
                           m->key, hvq_json_kind(m->value));
        if (strlen(m->value->str) != m->value->len)
            return st_fail(ctx, HVQ_E_UNSUPPORTED, path,
                           "\"__metadata__\" value of '%.200s' contains a "
                           "NUL character",
                           m->key);
    }
    if (!keep || n == 0)
        return HVQ_OK;
    s->meta = s->host->calloc(ctx, n, sizeof *s->meta);
    if (s->meta == NULL)
        return HVQ_E_NOMEM;
    for (i = 0; i < n; i++) {
        s->meta[i].key = v->members[i].key;
        s->meta[i].value = v->members[i].value->str;
    }
    s->n_meta = n;
    return HVQ_OK;
}

/* The dimensions of a tensor's "shape" (at most HVQ_MAX_DIMS) into dims:
 * non-negative integers that fit in 63 bits. */
static hvq_status st_read_dims(hvq_ctx *ctx, const char *path, const char *name,
                               const hvq_json_value *shape, int64_t *dims)
{
    size_t d, nd = shape->count;
    for (d = 0; d < nd; d++) {
        const hvq_json_value *dim = shape->items[d];
        int64_t x;
        if (dim->type != HVQ_JSON_NUMBER)
            return st_fail(ctx, HVQ_E_INPUT, path,
                           "tensor '%.200s': shape dimension %zu is a %s, "
                           "expected an integer",
                           name, d, hvq_json_kind(dim));
        if (!dim->is_integer)
            return st_fail(ctx, HVQ_E_INPUT, path,
                           "tensor '%.200s': shape dimension %zu (%.40s) is "
                           "not an integer",
                           name, d, dim->str);
        if (dim->str[0] == '-' && strcmp(dim->str, "-0") != 0)
            return st_fail(ctx, HVQ_E_INPUT, path,
                           "tensor '%.200s': shape dimension %zu is negative "
                           "(%.40s)",
                           name, d, dim->str);
        if (hvq_json_int64(dim, &x) != 0 || x < 0)
            return st_fail(ctx, HVQ_E_INPUT, path,
                           "tensor '%.200s': shape dimension %zu (%.40s) is "
                           "too large",
                           name, d, dim->str);
        dims[d] = x;
    }
    return HVQ_OK;
}

/* A tensor's "data_offsets": [begin, end) of exactly size bytes inside
 * the data section of f (desc names the dtype and shape). */
static hvq_status st_read_offsets(hvq_ctx *ctx, const st_file *f, const char *name,
                                  const hvq_json_value *v, uint64_t size,
                                  const char *desc, uint64_t *pbegin,
                                  uint64_t *pend)
{
    const char *path = f->path;
    const hvq_json_value *offs;
    uint64_t begin, end;
    offs = hvq_json_get(v, "data_offsets");
    if (offs == NULL || offs->type != HVQ_JSON_ARRAY || offs->count != 2 ||
        hvq_json_uint64(offs->items[0], &begin) != 0 ||
        hvq_json_uint64(offs->items[1], &end) != 0)
        return st_fail(ctx, HVQ_E_INPUT, path,
                       "tensor '%.200s': \"data_offsets\" must be [begin, "
                       "end] with non-negative integers",
                       name);
    if (begin > end)
        return st_fail(ctx, HVQ_E_INPUT, path,
                       "tensor '%.200s': data_offsets [%llu, %llu] begin "
                       "after they end",
                       name, (unsigned long long)begin,
                       (unsigned long long)end);
    if (end - begin != size)
        return st_fail(ctx, HVQ_E_INPUT, path,
                       "tensor '%.200s': data_offsets [%llu, %llu] hold %llu "
                       "bytes but %s needs %llu",
                       name, (unsigned long long)begin,
                       (unsigned long long)end,
                       (unsigned long long)(end - begin), desc,
                       (unsigned long long)size);
    if (end > f->data_len)
        return st_fail(ctx, HVQ_E_INPUT, path,
                       "tensor '%.200s': data_offsets [%llu, %llu] are out "
                       "of bounds: the data section has %llu bytes",
                       name, (unsigned long long)begin,
                       (unsigned long long)end,
                       (unsigned long long)f->data_len);
    *pbegin = begin;
    *pend = end;
    return HVQ_OK;
}

/* A tensor's "dtype": a safetensors dtype name. */
static hvq_status st_read_dtype(hvq_ctx *ctx, const char *path, const char *name,
                                const hvq_json_value *v, const st_dtype **out)
{
    const hvq_json_value *dt = hvq_json_get(v, "dtype");
    if (dt == NULL || dt->type != HVQ_JSON_STRING)
        return st_fail(ctx, HVQ_E_INPUT, path,
                       "tensor '%.200s': \"dtype\" is %s%s, expected a "
                       "string",
                       name, dt == NULL ? "" : "a ", hvq_json_kind(dt));
    *out = st_dtype_by_name(dt->str);
    if (*out == NULL)
        return st_fail(ctx, HVQ_E_INPUT, path,
                       "tensor '%.200s': unknown dtype '%.60s'", name,
                       dt->str);
    return HVQ_OK;
}

/* Validates one tensor entry of file f (index fi) into *t. */
static hvq_status st_read_tensor(st_source *s, const st_file *f,
                                 const hvq_json_member *m, st_tensor *t)
{
    hvq_ctx *ctx = s->ctx;
    const char *path = f->path;
    const char *name = m->key;
    const hvq_json_value *v = m->value, *shape;
    const hvq_json_member *dup;
    const st_dtype *type;
    uint64_t numel = 1, bits, begin = 0, end = 0;
    size_t nd;
    int nomem;
    char desc[256];
    hvq_status st;

    if (v->type != HVQ_JSON_OBJECT)
        return st_fail(ctx, HVQ_E_INPUT, path,
                       "tensor '%.200s': entry is a %s, expected an object",
                       name, hvq_json_kind(v));
    dup = hvq_json_object_duplicate(v, &nomem);
    if (nomem)
        return st_nomem(ctx, path);
    if (dup != NULL)
        return st_fail(ctx, HVQ_E_INPUT, path,
                       "tensor '%.200s': key \"%.60s\" appears twice", name,
                       dup->key);

    if ((st = st_read_dtype(ctx, path, name, v, &type)) != HVQ_OK)
        return st;

    shape = hvq_json_get(v, "shape");
    if (shape == NULL || shape->type != HVQ_JSON_ARRAY)
        return st_fail(ctx, HVQ_E_INPUT, path,
                       "tensor '%.200s': \"shape\" is %s%s, expected an "
                       "array of integers",
                       name, shape == NULL ? "" : "a ", hvq_json_kind(shape));
    nd = shape->count;
    if (nd > HVQ_MAX_DIMS)
        return st_fail(ctx, HVQ_E_INPUT, path,
                       "tensor '%.200s': shape has %zu dimensions, more than "
                       "the maximum of %d",
                       name, nd, HVQ_MAX_DIMS);
    memset(&t->info, 0, sizeof t->info);
    st = st_read_dims(ctx, path, name, shape, t->info.shape);
    if (st != HVQ_OK)
        return st;
    t->info.ndim = (int)nd;
    hvq_shape_text(desc, sizeof desc, type->name, t->info.ndim, t->info.shape);
    if (!hvq_shape_numel(t->info.ndim, t->info.shape, &numel))
        return st_fail(ctx, HVQ_E_INPUT, path,
                       "tensor '%.200s': shape overflow: the non-zero "
                       "dimensions of %s multiply past 63 bits",
                       name, desc);
    if (!hvq_mul_u64(numel, type->bits, &bits))
        return st_fail(ctx, HVQ_E_INPUT, path,
                       "tensor '%.200s': shape overflow: the byte size of "
                       "%s does not fit in 64 bits",
                       name, desc);
    if (bits % 8 != 0)
        return st_fail(ctx, HVQ_E_INPUT, path,
                       "tensor '%.200s': %s is not a whole number of bytes",
                       name, desc);

    st = st_read_offsets(ctx, f, name, v, bits / 8, desc, &begin, &end);
    if (st != HVQ_OK)
        return st;

    t->info.name = name;
    t->info.dtype = type->dtype;
    t->info.dtype_name = type->name;
    t->info.nbytes = end - begin;
    t->begin = begin;
    t->end = end;
    return HVQ_OK;
}

/* The header of a mapped file: its length checked, its JSON parsed into
 * f->doc (*root: an object without a repeated key), f->data placed. */
static hvq_status st_parse_header(hvq_ctx *ctx, st_file *f, const hvq_json_value **out)
{
    const char *path = f->path;
    const hvq_json_value *root;
    const hvq_json_member *dup;
    hvq_json_error jerr;
    uint64_t n;
    int nomem;
    n = st_le64(f->map);
    if (n > ST_MAX_HEADER)
        return st_fail(ctx, HVQ_E_INPUT, path,
                       "header length %llu exceeds the limit of %llu bytes "
                       "(100 MB)",
                       (unsigned long long)n,
                       (unsigned long long)ST_MAX_HEADER);
    if (n > (uint64_t)f->size - 8)
        return st_fail(ctx, HVQ_E_INPUT, path,
                       "header length %llu goes beyond the end of the file "
                       "(%llu bytes; truncated?)",
                       (unsigned long long)n, (unsigned long long)f->size);
    if (n == 0 || f->map[8] != '{')
        return st_fail(ctx, HVQ_E_INPUT, path,
                       "header is not a JSON object (it does not start "
                       "with '{')");
    f->data = f->map + 8 + n;
    f->data_len = (uint64_t)f->size - 8 - n;

    f->doc = hvq_json_parse((const char *)f->map + 8, (size_t)n, 0, &jerr);
    if (f->doc == NULL) {
        if (jerr.status == HVQ_JSON_E_NOMEM)
            return st_nomem(ctx, path);
        return st_fail(ctx, HVQ_E_INPUT, path,
                       "bad JSON in header: %s at byte %llu of the file",
                       jerr.reason,
                       (unsigned long long)(jerr.offset + 8));
    }
    root = hvq_json_root(f->doc);
    if (root->type != HVQ_JSON_OBJECT) /* cannot happen after '{' */
        return st_fail(ctx, HVQ_E_INPUT, path,
                       "header is not a JSON object");
    dup = hvq_json_object_duplicate(root, &nomem);
    if (nomem)
        return st_nomem(ctx, path);
    if (dup != NULL) {
        if (strcmp(dup->key, "__metadata__") == 0)
            return st_fail(ctx, HVQ_E_INPUT, path,
                           "header has \"__metadata__\" twice");
        return st_fail(ctx, HVQ_E_INPUT, path,
                       "duplicate tensor name '%.200s'", dup->key);
    }
    *out = root;
    return HVQ_OK;
}

/* Sorted by offset, the tensors first.. of a file must tile its data
 * section of data_len bytes. */
static hvq_status st_check_tiling(hvq_ctx *ctx, st_source *s, const char *path, size_t first,
                                  uint64_t data_len)
{
    size_t i, count;
    uint64_t expect;
    count = s->n_tensors - first;
    if (count > 1)
        qsort(s->tensors + first, count, sizeof *s->tensors, st_tensor_cmp);
    expect = 0;
    for (i = first; i < s->n_tensors; i++) {
        const st_tensor *t = &s->tensors[i];
        if (t->begin < expect) {
            const st_tensor *p = &s->tensors[i - 1];
            return st_fail(ctx, HVQ_E_INPUT, path,
                           "tensor '%.200s': data_offsets [%llu, %llu] "
                           "overlap tensor '%.200s' [%llu, %llu]",
                           t->info.name, (unsigned long long)t->begin,
                           (unsigned long long)t->end, p->info.name,
                           (unsigned long long)p->begin,
                           (unsigned long long)p->end);
        }
        if (t->begin > expect)
            return st_fail(ctx, HVQ_E_INPUT, path,
                           "tensor '%.200s': gap of %llu bytes before its "
                           "data_offsets [%llu, %llu] (the previous data "
                           "ends at %llu)",
                           t->info.name,
                           (unsigned long long)(t->begin - expect),
                           (unsigned long long)t->begin,
                           (unsigned long long)t->end,
                           (unsigned long long)expect);
        expect = t->end;
    }
    if (expect != data_len)
        return st_fail(ctx, HVQ_E_INPUT, path,
                       "the data section has %llu bytes but the tensors "
                       "cover %llu (%llu bytes unaccounted for)",
                       (unsigned long long)data_len,
                       (unsigned long long)expect,
                       (unsigned long long)(data_len - expect));
    return HVQ_OK;
}

/* Maps one safetensors file, validates it and appends its tensors (in
 * data order) to s->tensors. keep_meta: expose its __metadata__. */
static hvq_status st_load_file(st_source *s, const char *path, int keep_meta)
{
    hvq_ctx *ctx = s->ctx;
    st_file *f = NULL;
    const hvq_json_value *root = NULL;
    size_t i, fi, first, count;
    hvq_status st;

    st = st_map_file(s, path, &f);
    if (st != HVQ_OK)
        return st;
    fi = s->n_files - 1;
    path = f->path;

    if ((st = st_parse_header(ctx, f, &root)) != HVQ_OK)
        return st;

    /* Room for every tensor of this file. */
    count = root->count;
    if (s->n_tensors + count > s->cap_tensors) {
        size_t cap = s->n_tensors + count;
        st_tensor *t = s->host->realloc(ctx, s->tensors, cap * sizeof *t);
        if (t == NULL)
            return HVQ_E_NOMEM;
        s->tensors = t;
        s->cap_tensors = cap;
    }
    first = s->n_tensors;
    for (i = 0; i < root->count; i++) {
        const hvq_json_member *m = &root->members[i];
        st_tensor *t;
        if (strcmp(m->key, "__metadata__") == 0) {
            st = st_read_meta(s, path, m->value, keep_meta);
            if (st != HVQ_OK)
                return st;
            continue;
        }
        t = &s->tensors[s->n_tensors];
        st = st_read_tensor(s, f, m, t);
        if (st != HVQ_OK)
            return st;
        t->file = fi;
        t->order = i;
        s->n_tensors++;
    }

    return st_check_tiling(ctx, s, path, first, f->data_len);
}

/* Reads a whole (small) file with the host allocator. */
static hvq_status st_slurp(hvq_ctx *ctx, const char *path, char **out,
                           size_t *len)
{
    int fd = hvq_open_input(ctx, path);
    struct stat sb;
    char *buf;
    size_t n, got = 0;
    int e;
    if (fd < 0) {
        e = errno;
        return st_fail(ctx,
                       e == ENOENT || e == ENOTDIR ? HVQ_E_INPUT : HVQ_E_IO,
                       path, "cannot open: %s", strerror(e));
    }
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return st_fail(ctx, HVQ_E_INPUT, path, "not a regular file");
    }
    if ((uint64_t)sb.st_size > ST_MAX_HEADER) {
        close(fd);
        return st_fail(ctx, HVQ_E_INPUT, path,
                       "index file of %lld bytes is too large",
                       (long long)sb.st_size);
    }
    n = (size_t)sb.st_size;
    buf = ctx->host->alloc(ctx, n + 1);
    if (buf == NULL) {
        close(fd);
        return HVQ_E_NOMEM;
    }
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            e = r < 0 ? errno : 0;
            close(fd);
            ctx->host->free(buf);
            return st_fail(ctx, HVQ_E_IO, path, "read failed: %s",
                           e ? strerror(e) : "file shrank while reading");
        }
        got += (size_t)r;
    }
    close(fd);
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return HVQ_OK;
}

typedef struct st_mapent {
    const char *name;   /* tensor name (index doc) */
    size_t shard;       /* index into the sorted shard names */
    int found;
} st_mapent;

static int st_str_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int st_mapent_cmp(const void *a, const void *b)
{
    return strcmp(((const st_mapent *)a)->name, ((const st_mapent *)b)->name);
}

static const st_mapent *st_map_find(const st_mapent *m, size_t n,
                                    const char *name)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, m[mid].name);
        if (c == 0)
            return &m[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

/* A shard name must stay inside the index's directory. */
static int st_shard_name_ok(const char *n)
{
    const char *p;
    if (n[0] == '\0' || n[0] == '/')
        return 0;
    for (p = n; *p;) {
        size_t len = strcspn(p, "/");
        if (len == 2 && p[0] == '.' && p[1] == '.')
            return 0;
        p += len;
        if (*p == '/')
            p++;
    }
    return 1;
}

/* The index's JSON, its "weight_map" checked: an object of at least one
 * tensor, each listed once. */
static hvq_status st_index_map(st_source *s, const char *index_path,
                               const hvq_json_value **out)
{
    hvq_ctx *ctx = s->ctx;
    char *text = NULL;
    size_t len = 0;
    const hvq_json_value *root, *wm;
    const hvq_json_member *dup;
    hvq_json_error jerr;
    int nomem;
    hvq_status st = st_slurp(ctx, index_path, &text, &len);
    if (st != HVQ_OK)
        return st;
    s->index_doc = hvq_json_parse(text, len, 0, &jerr);
    s->host->free(text);
    if (s->index_doc == NULL) {
        if (jerr.status == HVQ_JSON_E_NOMEM)
            return st_nomem(ctx, index_path);
        return st_fail(ctx, HVQ_E_INPUT, index_path, "bad JSON: %s",
                       jerr.message);
    }
    root = hvq_json_root(s->index_doc);
    if (root->type != HVQ_JSON_OBJECT)
        return st_fail(ctx, HVQ_E_INPUT, index_path,
                       "not a JSON object");
    wm = hvq_json_get(root, "weight_map");
    if (wm == NULL || wm->type != HVQ_JSON_OBJECT)
        return st_fail(ctx, HVQ_E_INPUT, index_path,
                       "\"weight_map\" is %s%s, expected an object",
                       wm == NULL ? "" : "a ", hvq_json_kind(wm));
    if (wm->count == 0)
        return st_fail(ctx, HVQ_E_INPUT, index_path,
                       "\"weight_map\" lists no tensors");
    dup = hvq_json_object_duplicate(wm, &nomem);
    if (nomem)
        return st_nomem(ctx, index_path);
    if (dup != NULL)
        return st_fail(ctx, HVQ_E_INPUT, index_path,
                       "\"weight_map\" lists tensor '%.200s' twice",
                       dup->key);
    *out = wm;
    return HVQ_OK;
}

/* The shard files wm names (checked, unique, sorted, in shards[0 ..
 * *n_shards)) and map: every tensor with its shard, sorted by name. */
static hvq_status st_index_shards(hvq_ctx *ctx, const char *index_path,
                                  const hvq_json_value *wm, const char **shards,
                                  size_t *n_shards, st_mapent *map)
{
    size_t i, n = wm->count, u = 0;
    for (i = 0; i < n; i++) {
        const hvq_json_member *m = &wm->members[i];
        if (m->value->type != HVQ_JSON_STRING)
            return st_fail(ctx, HVQ_E_INPUT, index_path,
                           "\"weight_map\" entry of tensor '%.200s' is a %s, "
                           "expected a shard file name",
                           m->key, hvq_json_kind(m->value));
        if (strlen(m->value->str) != m->value->len ||
            !st_shard_name_ok(m->value->str))
            return st_fail(ctx, HVQ_E_INPUT, index_path,
                           "\"weight_map\" entry of tensor '%.200s' names the "
                           "shard '%.200s', which is not a relative path "
                           "inside the model directory",
                           m->key, m->value->str);
        shards[i] = m->value->str;
    }
    /* Unique shard names, sorted. */
    qsort(shards, n, sizeof *shards, st_str_cmp);
    for (i = 0; i < n; i++)
        if (u == 0 || strcmp(shards[i], shards[u - 1]) != 0)
            shards[u++] = shards[i];
    for (i = 0; i < n; i++) {
        const hvq_json_member *m = &wm->members[i];
        const char **hit = bsearch(&m->value->str, shards, u,
                                   sizeof *shards, st_str_cmp);
        map[i].name = m->key;
        map[i].shard = (size_t)(hit - shards);
        map[i].found = 0;
    }
    qsort(map, n, sizeof *map, st_mapent_cmp);
    *n_shards = u;
    return HVQ_OK;
}

/* Shard k (at shard_path): read, and every tensor in it mapped there. */
static hvq_status st_index_load_shard(st_source *s, const char *index_path,
                                      const char *shard_path, size_t k,
                                      const char **shards, st_mapent *map,
                                      size_t n)
{
    hvq_ctx *ctx = s->ctx;
    size_t first = s->n_tensors, i;
    struct stat sb;
    hvq_status st;
    if (stat(shard_path, &sb) != 0) {
        int e = errno;
        return st_fail(ctx,
                       e == ENOENT || e == ENOTDIR ? HVQ_E_INPUT : HVQ_E_IO,
                       index_path,
                       "shard '%.200s' named in \"weight_map\" cannot be "
                       "opened: %s: %s",
                       shards[k], shard_path, strerror(e));
    }
    st = st_load_file(s, shard_path, k == 0);
    if (st != HVQ_OK)
        return st;
    for (i = first; i < s->n_tensors; i++) {
        const char *tn = s->tensors[i].info.name;
        st_mapent *e = (st_mapent *)st_map_find(map, n, tn);
        if (e == NULL)
            return st_fail(ctx, HVQ_E_INPUT, shard_path,
                           "tensor '%.200s' is not listed in the "
                           "\"weight_map\" of %s",
                           tn, index_path);
        if (e->shard != k)
            return st_fail(ctx, HVQ_E_INPUT, shard_path,
                           "tensor '%.200s' is here but %s maps it to "
                           "shard '%.200s'",
                           tn, index_path, shards[e->shard]);
        e->found = 1;
    }
    return HVQ_OK;
}

static hvq_status st_load_index(st_source *s, const char *index_path)
{
    hvq_ctx *ctx = s->ctx;
    const hvq_host *h = s->host;
    char *dir = NULL, *shard_path = NULL;
    size_t i, k, n, n_shards = 0;
    const char **shards = NULL;
    st_mapent *map = NULL;
    const hvq_json_value *wm = NULL;
    hvq_status st = st_index_map(s, index_path, &wm);

    if (st != HVQ_OK)
        return st;
    n = wm->count;
    shards = h->calloc(ctx, n, sizeof *shards);
    map = h->calloc(ctx, n, sizeof *map);
    if (shards == NULL || map == NULL)
        st = HVQ_E_NOMEM;
    if (st == HVQ_OK)
        st = st_index_shards(ctx, index_path, wm, shards, &n_shards, map);
    if (st == HVQ_OK && (dir = st_dirname(index_path)) == NULL)
        st = st_nomem(ctx, index_path);
    for (k = 0; st == HVQ_OK && k < n_shards; k++) {
        free(shard_path);
        shard_path = st_join(dir, shards[k]);
        st = shard_path == NULL ? st_nomem(ctx, index_path)
                                : st_index_load_shard(s, index_path, shard_path,
                                                      k, shards, map, n);
    }
    for (i = 0; st == HVQ_OK && i < n; i++)
        if (!map[i].found)
            st = st_fail(ctx, HVQ_E_INPUT, index_path,
                         "tensor '%.200s' is mapped to shard '%.200s' but "
                         "is absent from that shard",
                         map[i].name, shards[map[i].shard]);
    free(shard_path);
    free(dir);
    h->free(shards);
    h->free(map);
    return st;
}

static hvq_status st_source_open(hvq_ctx *ctx, const char *path,
                                 void **state)
{
    st_source *s;
    struct stat sb;
    hvq_status st;

    *state = NULL;
    if (path == NULL)
        return ctx->host->error(ctx, HVQ_E_INTERNAL,
                                "safetensors: no path given");
    s = ctx->host->calloc(ctx, 1, sizeof *s);
    if (s == NULL)
        return HVQ_E_NOMEM;
    s->last = (size_t)-1;
    s->ctx = ctx;
    s->host = ctx->host;

    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        st_dirscan d;
        int e = st_scan_dir(path, &d);
        if (e == ENOMEM) {
            st = st_nomem(ctx, path);
        } else if (e != 0) {
            st = st_fail(ctx, HVQ_E_IO, path, "cannot read the directory: %s",
                         strerror(e));
        } else if (d.index != NULL) {
            char *ip = st_join(path, d.index);
            st = ip == NULL ? st_nomem(ctx, path) : st_load_index(s, ip);
            free(ip);
        } else if (d.n_index > 1) {
            st = st_fail(ctx, HVQ_E_INPUT, path,
                         "%zu *" ST_INDEX_EXT " files and no " ST_INDEX_NAME
                         "; open one of them",
                         d.n_index);
        } else if (d.n_files == 1) {
            char *fp = st_join(path, d.single);
            st = fp == NULL ? st_nomem(ctx, path) : st_load_file(s, fp, 1);
            free(fp);
        } else if (d.n_files == 0) {
            st = st_fail(ctx, HVQ_E_INPUT, path,
                         "the directory has no *" ST_EXT " file");
        } else {
            st = st_fail(ctx, HVQ_E_INPUT, path,
                         "the directory has %zu *" ST_EXT " files and no "
                         ST_INDEX_NAME "; open one file or add an index",
                         d.n_files);
        }
        st_dirscan_free(&d);
    } else if (hvq_ends_with(path, ST_ANY_INDEX_EXT)) {
        /* Any Hugging Face-style index, whatever its shards are called
         * (the hvq container's NAME.hvq.index.json too). */
        st = st_load_index(s, path);
    } else {
        st = st_load_file(s, path, 1);
    }
    if (st != HVQ_OK) {
        st_source_free(s);
        return st;
    }
    ctx->host->log(ctx, HVQ_LOG_DEBUG,
                   "%s: %zu tensors in %zu file(s), %zu metadata entries",
                   path, s->n_tensors, s->n_files, s->n_meta);
    *state = s;
    return HVQ_OK;
}

static size_t st_source_count(void *state)
{
    const st_source *s = state;
    return s != NULL ? s->n_tensors : 0;
}

static hvq_status st_source_info(void *state, size_t i, hvq_tensor_info *info)
{
    const st_source *s = state;
    if (s == NULL || info == NULL || i >= s->n_tensors)
        return HVQ_E_INTERNAL;
    *info = s->tensors[i].info;
    return HVQ_OK;
}

/* Drops the resident pages of tensor x's data (whole pages, so possibly a
 * neighbour's first or last page too: harmless, those are read again when
 * touched). The mapping is private and read-only, so MADV_DONTNEED only
 * forgets pages that the file still holds. */
static void st_release(const st_source *s, const st_tensor *x)
{
    const st_file *f = &s->files[x->file];
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t a, b, lo = (uintptr_t)f->map, hi = (uintptr_t)f->map + f->size;
    if (x->end <= x->begin || page == 0 || (page & (page - 1)) != 0)
        return;
    a = ((uintptr_t)(f->data + x->begin)) & ~(page - 1);
    b = ((uintptr_t)(f->data + x->end) + page - 1) & ~(page - 1);
    if (a < lo)
        a = lo;
    if (b > ((hi + page - 1) & ~(page - 1)))
        b = (hi + page - 1) & ~(page - 1);
    if (b > a)
        (void)madvise((void *)a, (size_t)(b - a), MADV_DONTNEED);
}

/* Asks the kernel to read tensor x's data in ahead of use (MADV_WILLNEED:
 * asynchronous, into the page cache, not into this process's resident
 * memory until touched). */
static void st_prefetch(const st_source *s, const st_tensor *x)
{
    const st_file *f = &s->files[x->file];
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t a, b;
    if (x->end <= x->begin || page == 0 || (page & (page - 1)) != 0)
        return;
    a = ((uintptr_t)(f->data + x->begin)) & ~(page - 1);
    b = (uintptr_t)(f->data + x->end);
    if (b > a)
        (void)madvise((void *)a, (size_t)(b - a), MADV_WILLNEED);
}

static hvq_status st_source_read(hvq_ctx *ctx, void *state, size_t i,
                                 hvq_tensor *t)
{
    st_source *s = state;
    const st_tensor *x;
    if (s == NULL || t == NULL)
        return ctx->host->error(ctx, HVQ_E_INTERNAL,
                                "safetensors: source_read without a source");
    if (i >= s->n_tensors)
        return ctx->host->error(ctx, HVQ_E_INTERNAL,
                                "%s: tensor index %zu out of range (%zu "
                                "tensors)",
                                s->n_files ? s->files[0].path : "safetensors",
                                i, s->n_tensors);
    if (s->last != i) {
        if (s->last < s->n_tensors)
            st_release(s, &s->tensors[s->last]);
        /* Readers go through a model in order: this tensor is read in
         * large requests rather than page by page as it is touched, and
         * the next one while this one is being worked on. */
        st_prefetch(s, &s->tensors[i]);
        if (i + 1 < s->n_tensors)
            st_prefetch(s, &s->tensors[i + 1]);
    }
    x = &s->tensors[i];
    t->info = x->info;
    t->data = s->files[x->file].data + x->begin;
    s->last = i;
    return HVQ_OK;
}

static void st_source_meta(void *state, const hvq_meta **meta, size_t *n)
{
    const st_source *s = state;
    if (meta != NULL)
        *meta = s != NULL ? s->meta : NULL;
    if (n != NULL)
        *n = s != NULL ? s->n_meta : 0;
}

static void st_source_close(hvq_ctx *ctx, void *state)
{
    (void)ctx;
    st_source_free(state);
}

/* ------------------------------------------------------------------------
 * Sink
 *
 * One file, or with max_shard_size > 0 and more tensor data than that,
 * shards the Hugging Face way: the declared tensors are split in order
 * (a new shard starts when the next tensor would take the current one past
 * the limit, so a tensor larger than the limit gets a shard of its own)
 * into NAME-00001-of-0000N.safetensors ..., each with the same
 * __metadata__, and NAME.safetensors.index.json maps every tensor to its
 * shard. Every shard and the index are atomic outputs opened at create
 * time, so a failure leaves none of them behind.
 * ---------------------------------------------------------------------- */
enum {
    ST_P_MAX_SHARD,
    ST_P_STREAMING,
    ST_P_HEADER_RESERVE,
    ST_P_BUFFER_MIB,
    ST_P_SHARD_KEY,
    ST_P_SHARD_META
};

static const hvq_param_spec st_params[] = {
    {"max_shard_size", HVQ_PARAM_SIZE, "0", 0, 0, NULL,
     "write shards of at most this many bytes of tensor data (500MB, 5GB) as "
     "NAME-00001-of-0000N.safetensors plus NAME.safetensors.index.json, like Hugging "
     "Face; a tensor above it gets a shard of its own; 0 = always one file"},
    {"streaming", HVQ_PARAM_BOOL, "false", 0, 0, NULL,
     "for writers: tensors are not declared up front but added by each write, the "
     "header is reserved and filled in at the end (sink_control); any NAME.EXT shards"},
    {"header_reserve", HVQ_PARAM_INT, "0", 0, 97656, NULL,
     "streaming: KiB reserved for each header, the data then goes straight to the file; "
     "0 = automatic (exact while the data fits buffer_mib, else an estimate)"},
    {"buffer_mib", HVQ_PARAM_INT, "64", 0, 65536, NULL,
     "streaming: MiB of data all files keep in memory before a header size is fixed"},
    {"shard_key", HVQ_PARAM_STRING, "", 0, 0, NULL,
     "streaming, sharded: a metadata key every file ends with, \"K of N\" (empty: none)"},
    {"shard_meta", HVQ_PARAM_INT, "1", 1, 1000000, NULL,
     "streaming, sharded: how many of the first metadata keys the files after the first "
     "carry (the first carries all)"},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

typedef struct st_decl {
    char *name;
    uint64_t nbytes;
} st_decl;

typedef struct st_shard {
    char *path;          /* final path */
    hvq_output *out;
    size_t first, end;   /* its tensors: decl[first .. end) */
} st_shard;

typedef struct st_sink {
    int streaming;       /* 0 here (st_stream: 1) */
    const hvq_host *host;
    char *path;          /* as given */
    st_shard *shards;
    size_t n_shards, cur;
    hvq_output *index;   /* sharded only: written at finish */
    uint64_t total;      /* bytes of tensor data */
    st_decl *decl;
    size_t n, next;
    int failed;
} st_sink;

static void st_sink_free(st_sink *k)
{
    size_t i;
    if (k == NULL)
        return;
    for (i = 0; k->decl != NULL && i < k->n; i++)
        k->host->free(k->decl[i].name);
    for (i = 0; k->shards != NULL && i < k->n_shards; i++)
        k->host->free(k->shards[i].path);
    k->host->free(k->shards);
    k->host->free(k->decl);
    k->host->free(k->path);
    k->host->free(k);
}

/* What safetensors limits in a tensor the host checked (core/sink.c: a
 * name, the shape rule, typed byte sizes): a name other than
 * "__metadata__", a safetensors dtype (*type) and a whole number of
 * bytes matching nbytes for the sub-byte and opaque ones. */
static hvq_status st_check_tensor(hvq_ctx *ctx, const char *path, size_t i,
                                  const hvq_tensor_info *t, const st_dtype **out)
{
    const st_dtype *type;
    uint64_t numel, bits = 0;
    char desc[256];
    (void)i;
    if (strcmp(t->name, "__metadata__") == 0)
        return st_fail(ctx, HVQ_E_INPUT, path,
                       "a tensor cannot be named \"__metadata__\"");
    if (t->dtype == HVQ_DTYPE_OPAQUE) {
        type = st_dtype_by_name(t->dtype_name);
        if (type == NULL)
            return st_fail(ctx, HVQ_E_UNSUPPORTED, path,
                           "tensor '%.200s': dtype '%.60s' cannot be "
                           "stored in safetensors",
                           t->name,
                           t->dtype_name ? t->dtype_name : "(none)");
    } else {
        type = st_dtype_by_enum(t->dtype);
        if (type == NULL)
            return st_fail(ctx, HVQ_E_UNSUPPORTED, path,
                           "tensor '%.200s': dtype %d cannot be stored "
                           "in safetensors",
                           t->name, (int)t->dtype);
    }
    hvq_shape_text(desc, sizeof desc, type->name, t->ndim, t->shape);
    numel = hvq_numel(t);
    if (!hvq_mul_u64(numel, type->bits, &bits))
        return st_fail(ctx, HVQ_E_INPUT, path,
                       "tensor '%.200s': the byte size of %s does not "
                       "fit in 64 bits",
                       t->name, desc);
    if (bits % 8 != 0)
        return st_fail(ctx, HVQ_E_INPUT, path,
                       "tensor '%.200s': %s is not a whole number of "
                       "bytes",
                       t->name, desc);
    if (bits / 8 != t->nbytes)
        return st_fail(ctx, HVQ_E_INPUT, path,
                       "tensor '%.200s': declared as %llu bytes but %s "
                       "needs %llu",
                       t->name, (unsigned long long)t->nbytes, desc,
                       (unsigned long long)(bits / 8));
    *out = type;
    return HVQ_OK;
}

static hvq_status st_check_decl(hvq_ctx *ctx, const char *path,
                                const hvq_tensor_info *tensors, size_t n,
                                const st_dtype **types)
{
    for (size_t i = 0; i < n; i++) {
        hvq_status st = st_check_tensor(ctx, path, i, &tensors[i], &types[i]);
        if (st != HVQ_OK)
            return st;
    }
    return HVQ_OK;
}

/* The metadata pairs "k":"v",... (no braces). */
static void st_put_meta(hvq_buf *b, const hvq_meta *meta, size_t n_meta)
{
    size_t i;
    for (i = 0; i < n_meta; i++) {
        if (i)
            hvq_buf_append(b, ",", 1);
        hvq_buf_json_string(b, meta[i].key);
        hvq_buf_append(b, ":", 1);
        hvq_buf_json_string(b, meta[i].value);
    }
}

/* One header entry "name":{"dtype":...,"shape":[...],"data_offsets":[..]}. */
static void st_put_entry(hvq_buf *b, const char *name, const char *dtype,
                         int ndim, const int64_t *shape, uint64_t begin,
                         uint64_t end)
{
    int d;
    hvq_buf_json_string(b, name);
    hvq_buf_puts(b, ":{\"dtype\":");
    hvq_buf_json_string(b, dtype);
    hvq_buf_puts(b, ",\"shape\":[");
    for (d = 0; d < ndim; d++) {
        if (d)
            hvq_buf_append(b, ",", 1);
        hvq_buf_putu(b, (unsigned long long)shape[d]);
    }
    hvq_buf_puts(b, "],\"data_offsets\":[");
    hvq_buf_putu(b, (unsigned long long)begin);
    hvq_buf_append(b, ",", 1);
    hvq_buf_putu(b, (unsigned long long)end);
    hvq_buf_puts(b, "]}");
}

/* The header of tensors[first .. end): "__metadata__" first, then the
 * tensors in write order with contiguous offsets, padded with spaces so
 * the data section starts at a multiple of 8. */
static hvq_status st_build_header(hvq_ctx *ctx, const char *path, hvq_buf *b,
                                  const hvq_meta *meta, size_t n_meta,
                                  const hvq_tensor_info *tensors,
                                  const st_dtype **types, size_t first,
                                  size_t end)
{
    uint64_t off = 0;
    size_t i;

    hvq_buf_append(b, "{", 1);
    if (n_meta > 0) {
        hvq_buf_puts(b, "\"__metadata__\":{");
        st_put_meta(b, meta, n_meta);
        hvq_buf_append(b, "}", 1);
    }
    for (i = first; i < end; i++) {
        const hvq_tensor_info *t = &tensors[i];
        uint64_t stop;
        if (!hvq_add_u64(off, t->nbytes, &stop))
            return st_fail(ctx, HVQ_E_INPUT, path,
                           "the tensors add up to more than 2^64 bytes");
        if (i > first || n_meta > 0)
            hvq_buf_append(b, ",", 1);
        st_put_entry(b, t->name, types[i]->name, t->ndim, t->shape, off, stop);
        off = stop;
    }
    hvq_buf_append(b, "}", 1);
    while (!b->oom && b->len % 8 != 0)
        hvq_buf_append(b, " ", 1);
    if (b->oom)
        return st_nomem(ctx, path);
    if (b->len > ST_MAX_HEADER)
        return st_fail(ctx, HVQ_E_UNSUPPORTED, path,
                       "the header would be %llu bytes, above the %llu-byte "
                       "limit of safetensors readers",
                       (unsigned long long)b->len,
                       (unsigned long long)ST_MAX_HEADER);
    return HVQ_OK;
}

/* The file name part of a path. */
static const char *st_basename(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash != NULL ? slash + 1 : path;
}

/* The extension of a sharded output's name: ".EXT" of DIR/NAME.EXT, or
 * NULL when the file name has no NAME before a dot. */
static const char *st_ext(const char *path)
{
    const char *base = st_basename(path), *dot = strrchr(base, '.');
    return dot != NULL && dot > base && dot[1] != '\0' ? dot : NULL;
}

/* The one naming of shards: DIR/NAME.EXT gives DIR/NAME-0000k-of-0000N.EXT
 * (k counted from 0 here, from 1 in the name); host-allocated. */
static char *st_shard_path(hvq_ctx *ctx, const char *path, size_t k, size_t n)
{
    const char *ext = st_ext(path);
    size_t el = ext ? strlen(ext) : 0, stem = strlen(path) - el, len = stem + el + 64;
    char *p = ctx->host->alloc(ctx, len);
    if (p != NULL)
        snprintf(p, len, "%.*s-%05zu-of-%05zu%s", (int)stem, path, k + 1, n,
                 ext ? ext : "");
    return p;
}

/* Splits tensors[0..n) greedily into shards of at most max bytes; fills
 * k->shards (paths included) and k->n_shards. One shard keeps path. */
static hvq_status st_plan_shards(hvq_ctx *ctx, st_sink *k, const char *path,
                                 const hvq_tensor_info *tensors, size_t n,
                                 uint64_t max)
{
    const hvq_host *h = ctx->host;
    size_t i, count = 1, s;
    uint64_t cur = 0;

    /* Count first: a new shard when the next tensor would go past max. */
    for (i = 0; i < n; i++) {
        if (max > 0 && cur > 0 && tensors[i].nbytes > max - (cur < max ? cur : max)) {
            count++;
            cur = 0;
        }
        cur += tensors[i].nbytes;
    }
    k->shards = h->calloc(ctx, count, sizeof *k->shards);
    if (k->shards == NULL)
        return HVQ_E_NOMEM;
    k->n_shards = count;
    s = 0;
    cur = 0;
    for (i = 0; i < n; i++) {
        if (max > 0 && cur > 0 && tensors[i].nbytes > max - (cur < max ? cur : max)) {
            k->shards[s].end = i;
            k->shards[++s].first = i;
            cur = 0;
        }
        cur += tensors[i].nbytes;
    }
    k->shards[count - 1].end = n;

    if (count == 1) {
        k->shards[0].path = h->strdup(ctx, path);
        return k->shards[0].path != NULL ? HVQ_OK : HVQ_E_NOMEM;
    }
    for (s = 0; s < count; s++)
        if ((k->shards[s].path = st_shard_path(ctx, path, s, count)) == NULL)
            return HVQ_E_NOMEM;
    return HVQ_OK;
}

static int st_decl_cmp(const void *a, const void *b)
{
    return strcmp(((const st_decl *)a)->name, ((const st_decl *)b)->name);
}

/* NAME.EXT.index.json: total_size and the weight_map sorted by tensor
 * name, as Hugging Face writes it (indent 2, trailing newline). map[i]
 * is a tensor and, in nbytes, the number of its shard in paths[]; map is
 * sorted here. */
static hvq_status st_put_index(hvq_ctx *ctx, hvq_output *out, const char *path,
                               uint64_t total, st_decl *map, size_t n,
                               char *const *paths)
{
    hvq_buf b;
    size_t i;
    hvq_status st;

    qsort(map, n, sizeof *map, st_decl_cmp);
    hvq_buf_init(&b);
    hvq_buf_puts(&b, "{\n  \"metadata\": {\n    \"total_size\": ");
    hvq_buf_putu(&b, (unsigned long long)total);
    hvq_buf_puts(&b, ",\n    \"written_by\": \"hvqconv\"\n  },\n  \"weight_map\": {");
    for (i = 0; i < n; i++) {
        hvq_buf_puts(&b, i ? ",\n    " : "\n    ");
        hvq_buf_json_string(&b, map[i].name);
        hvq_buf_puts(&b, ": ");
        hvq_buf_json_string(&b, st_basename(paths[map[i].nbytes]));
    }
    hvq_buf_puts(&b, "\n  }\n}\n");
    if (b.oom) {
        hvq_buf_free(&b);
        return st_nomem(ctx, path);
    }
    st = ctx->host->output_write(ctx, out, b.data, b.len);
    hvq_buf_free(&b);
    return st;
}

/* The index of a sink whose tensors were all declared. */
static hvq_status st_write_index(hvq_ctx *ctx, st_sink *k)
{
    const hvq_host *h = ctx->host;
    st_decl *sorted;
    char **paths;
    size_t i, s = 0;
    hvq_status st = HVQ_E_NOMEM;

    sorted = h->calloc(ctx, k->n ? k->n : 1, sizeof *sorted);
    paths = h->calloc(ctx, k->n_shards, sizeof *paths);
    if (sorted != NULL && paths != NULL) {
        /* nbytes carries the shard number while sorting. */
        for (i = 0; i < k->n; i++) {
            while (i >= k->shards[s].end)
                s++;
            sorted[i].name = k->decl[i].name;
            sorted[i].nbytes = s;
        }
        for (i = 0; i < k->n_shards; i++)
            paths[i] = k->shards[i].path;
        st = st_put_index(ctx, k->index, k->path, k->total, sorted, k->n, paths);
    }
    h->free(sorted);
    h->free(paths);
    return st;
}

/* An atomic output; the host has set the message when it fails. */
static hvq_status st_open_output(hvq_ctx *ctx, const char *path,
                                 hvq_output **out)
{
    hvq_status st;
    *out = ctx->host->output_open(ctx, path);
    if (*out != NULL)
        return HVQ_OK;
    st = ctx->host->status(ctx);
    return st != HVQ_OK ? st : HVQ_E_IO;
}

/* NAME.EXT.index.json, opened as an atomic output. */
static hvq_status st_open_index(hvq_ctx *ctx, const char *path, hvq_output **out)
{
    size_t len = strlen(path) + sizeof ".index.json";
    char *ip = ctx->host->alloc(ctx, len);
    hvq_status st;
    if (ip == NULL)
        return HVQ_E_NOMEM;
    snprintf(ip, len, "%s.index.json", path);
    st = st_open_output(ctx, ip, out);
    ctx->host->free(ip);
    return st;
}

/* The largest earlier index sink_index_lists reads. */
#define ST_MAX_OLD_INDEX (64u << 20)

/* sink_index_lists: an index this sink wrote (st_put_index's metadata
 * "written_by": "hvqconv") lists its shards. Read without ctx, so it is
 * not recorded as an input: an earlier output is not read by the run. */
static int st_index_lists(hvq_ctx *ctx, const char *index_path,
                          void (*add)(void *ud, const char *name), void *ud)
{
    int not_regular = 0, ours = 0;
    FILE *f = hvq_fopen_input(NULL, index_path, &not_regular);
    struct stat sb;
    char *text = NULL;
    size_t len = 0;
    (void)ctx;
    if (f != NULL && fstat(fileno(f), &sb) == 0 && (uint64_t)sb.st_size <= ST_MAX_OLD_INDEX &&
        (text = malloc((size_t)sb.st_size + 1)) != NULL)
        len = fread(text, 1, (size_t)sb.st_size, f);
    if (f != NULL)
        fclose(f);
    hvq_json_doc *doc = text ? hvq_json_parse(text, len, 0, NULL) : NULL;
    const hvq_json_value *root = doc ? hvq_json_root(doc) : NULL;
    const char *by =
        hvq_json_string(hvq_json_get(hvq_json_get(root, "metadata"), "written_by"), NULL);
    if (by != NULL && strcmp(by, "hvqconv") == 0) {
        const hvq_json_value *wm = hvq_json_get(root, "weight_map");
        for (size_t i = 0; i < hvq_json_count(wm); i++) {
            const char *shard = hvq_json_string(hvq_json_member_at(wm, i)->value, NULL);
            if (shard != NULL)
                add(ud, shard);
        }
        ours = 1;
    }
    hvq_json_free(doc);
    free(text);
    return ours;
}

/* ------------------------------------------------------------------------
 * Streaming sink (streaming=true), for writers whose tensors are only
 * known as they arrive (the hvq container, formats/hvq): no tensor is
 * declared at create time; each sink_write adds one.
 *
 * The header lists every tensor's offsets, so it cannot be written first.
 * The data is kept in memory while it is small (buffer_mib, shared by all
 * files); a file that never outgrows it gets an exact header (padded to a
 * multiple of 8). When the budget would overflow, the sink fixes a header
 * size R for good: twice the exact size of the header so far, plus 16 KiB,
 * plus the bound the writer gives (sink_control's header_to_come); from
 * then on every byte goes straight to its final offset 8 + R + offset and
 * the header is padded with spaces to exactly R at the end. Should a
 * header outgrow its reservation the write fails with a message naming the
 * header_reserve that would do, or, sharded, the file ends early and the
 * next one takes the tensor.
 *
 * Sharding (max_shard_size > 0) cuts while streaming: a tensor starts the
 * next file when it would take the current one past the limit (never the
 * first of a file), and an item (sink_control) whose tensors fit one file
 * but not what is left of the current one starts the next file. The first
 * file carries the whole metadata, the last key of which may grow
 * (sink_control's meta_append) until the end; the others carry its first
 * shard_meta keys. With shard_key every file's metadata ends with that key,
 * "K of N" (N counted as 20 digits until it is known). The first file is
 * opened under the output's name and the others under provisional names
 * NAME.EXT.shard-0000k; at finish they are renamed NAME-0000k-of-0000N.EXT
 * (st_shard_path, as the declared sink names them) and NAME.EXT.index.json
 * maps every tensor to its file. Output that ends in one file is NAME.EXT,
 * without an index.
 * ---------------------------------------------------------------------- */
#define STS_CHUNK ((size_t)1 << 28)

/* One output file of a streaming sink. */
typedef struct sts_file {
    hvq_output *out;
    hvq_buf entries;        /* its header entries: ,"n":{...} */
    uint64_t data_len;      /* bytes of its data section so far */
    uint64_t reserve;       /* R: header bytes before its data, once fixed */
    int fixed;              /* R is fixed and its data goes to the output */
    unsigned char *mem;     /* its data section while it is in memory */
    size_t mem_len, mem_cap;
    uint64_t before;        /* its header size before the current item */
    size_t n_stored;        /* tensors in it */
} sts_file;

typedef struct st_stream {
    int streaming;          /* 1 (st_sink: 0) */
    char *path;
    uint64_t user_reserve;  /* header_reserve in bytes, 0 = automatic */
    uint64_t max_shard;     /* max_shard_size, 0 = one file */
    size_t mem_max, mem_used;
    sts_file *f;            /* the files; the current one is the last */
    size_t n_f, cap_f;
    st_decl *locs;          /* sharded: every tensor and (nbytes) its file */
    size_t n_locs, cap_locs;
    hvq_buf prefix;         /* {"__metadata__":{ ... up to the last value */
    hvq_buf grow;           /* the last metadata value, raw */
    uint64_t grow_esc;      /* its length once escaped */
    hvq_buf other;          /* {"__metadata__":{ + shard_meta pairs */
    char *shard_key;        /* NULL: none */
    uint64_t meta_reserve, meta_pending; /* sink_control */
    uint64_t header_to_come;
    char *item;             /* the current item, for messages */
    size_t item_index, n_items;
    uint64_t grown, before; /* header text of all files, and before the item */
    int checked;            /* sts_check_fixed done (first sink_control) */
    int failed;
} st_stream;

static uint64_t sts_digits(uint64_t v)
{
    uint64_t d = 1;
    while (v >= 10) {
        v /= 10;
        d++;
    }
    return d;
}

/* Length of ,"KEY":"K of N" in file k: none without shard_key or when the
 * output is one file; n_files 0 (not known yet) counts the widest N. */
static uint64_t sts_key_len(const st_stream *s, size_t k, size_t n_files)
{
    if (!s->shard_key || !s->max_shard || n_files == 1)
        return 0;
    return 10 + hvq_json_escaped_len(s->shard_key, strlen(s->shard_key)) +
           sts_digits(k + 1) + (n_files ? sts_digits(n_files) : 20);
}

/* Exact header size of file k with what is known now; n_files as for
 * sts_key_len. */
static uint64_t sts_header_size(const st_stream *s, size_t k, size_t n_files)
{
    uint64_t key = sts_key_len(s, k, n_files);
    uint64_t entries = k < s->n_f ? s->f[k].entries.len : 0;
    /* prefix, the last value as a JSON string (two quotes), the growth
     * still to come, the shard key, "}" closing __metadata__, the entries
     * and "}" closing the root. */
    if (k == 0)
        return s->prefix.len + 2 + s->grow_esc + s->meta_reserve + key + 1 + entries + 1;
    return s->other.len + key + 1 + entries + 1;
}

static hvq_status sts_too_big(hvq_ctx *ctx, const st_stream *s, uint64_t need, uint64_t reserve)
{
    /* Suggest room for every item at the rate seen so far, twice over. */
    uint64_t per = need / (s->item_index + 1) + 1;
    uint64_t kib = (2 * per * (s->n_items + 1) + 1023) / 1024;
    const char *item = s->item ? s->item : "(none)";
    if (kib > ST_MAX_HEADER / 1024)
        kib = ST_MAX_HEADER / 1024;
    if (need > ST_MAX_HEADER)
        return st_fail(ctx, HVQ_E_UNSUPPORTED, s->path,
                       "at tensor '%s' the container header already needs %llu bytes, more "
                       "than the %llu safetensors readers accept",
                       item, (unsigned long long)need, ST_MAX_HEADER);
    return st_fail(ctx, HVQ_E_UNSUPPORTED, s->path,
                   "tensor '%s': the container header needs more than the %llu bytes "
                   "reserved for it (the plugins store more attributes or components than "
                   "expected); rerun with --set stages.writer.header_reserve=%llu (KiB)",
                   item, (unsigned long long)reserve, (unsigned long long)kib);
}

/* Starts the next file: under the output's name for the first (renamed
 * at the end when more follow), a provisional name for the others. */
static hvq_status sts_add_file(hvq_ctx *ctx, st_stream *s)
{
    const hvq_host *H = ctx->host;
    size_t k = s->n_f, len = strlen(s->path) + 32;
    char *name = NULL;
    hvq_status st;
    if (s->n_f == s->cap_f) {
        size_t cap = s->cap_f ? 2 * s->cap_f : 4;
        sts_file *p = H->realloc(ctx, s->f, cap * sizeof *p);
        if (!p)
            return HVQ_E_NOMEM;
        s->f = p;
        s->cap_f = cap;
    }
    memset(&s->f[k], 0, sizeof s->f[k]);
    s->n_f++;
    if (k) {
        if (!(name = H->alloc(ctx, len)))
            return HVQ_E_NOMEM;
        snprintf(name, len, "%s.shard-%05zu", s->path, k + 1);
    }
    st = st_open_output(ctx, k ? name : s->path, &s->f[k].out);
    H->free(name);
    if (st != HVQ_OK)
        return st;
    s->f[k].before = sts_header_size(s, k, 0);
    if (s->user_reserve) { /* the user's size: stream from the first byte */
        s->f[k].reserve = s->user_reserve;
        s->f[k].fixed = 1;
    }
    return HVQ_OK;
}

/* Moves file k's buffered data to the output at 8 + R and frees it. */
static hvq_status sts_flush(hvq_ctx *ctx, st_stream *s, size_t k)
{
    sts_file *f = &s->f[k];
    hvq_status st = HVQ_OK;
    if (f->mem_len)
        st = ctx->host->output_pwrite(ctx, f->out, f->mem, f->mem_len, 8 + f->reserve);
    ctx->host->free(f->mem);
    s->mem_used -= f->mem_len;
    f->mem = NULL;
    f->mem_len = f->mem_cap = 0;
    return st;
}

/* The automatic reservation of file k, fixed while the current item is
 * written: twice its header before that item, 16 KiB, and the writer's
 * bound for the items to come. A file other than the first only takes
 * the tensors that fit in it, so it gets no more than twice its header
 * per data byte so far (pending: bytes about to be written) times the
 * size limit, plus 16 KiB: should later tensors need more, the file ends
 * early (sts_write). */
static uint64_t sts_auto_reserve(const st_stream *s, size_t k, uint64_t pending)
{
    const sts_file *f = &s->f[k];
    uint64_t r = 2 * f->before + 16384 + s->header_to_come;
    if (k > 0) {
        uint64_t used = f->data_len + pending, need = sts_header_size(s, k, 0);
        uint64_t mult = (s->max_shard > used ? s->max_shard : used) / (used ? used : 1) + 1;
        uint64_t rate = mult > ST_MAX_HEADER || need > ST_MAX_HEADER / (2 * mult)
                            ? ST_MAX_HEADER
                            : 2 * need * mult + 16384;
        if (rate < r)
            r = rate;
    }
    r = (r + 7) / 8 * 8;
    return r > ST_MAX_HEADER ? ST_MAX_HEADER : r;
}

/* Fixes file k's R and moves its buffered data to the output. */
static hvq_status sts_fix_reserve(hvq_ctx *ctx, st_stream *s, size_t k, uint64_t pending)
{
    sts_file *f = &s->f[k];
    uint64_t need;
    f->reserve = s->user_reserve ? s->user_reserve : sts_auto_reserve(s, k, pending);
    f->fixed = 1;
    /* The first file's header also holds the metadata being built. */
    need = sts_header_size(s, k, 0) + (k == 0 ? s->meta_pending : 0);
    if (need > f->reserve)
        return sts_too_big(ctx, s, need, f->reserve);
    ctx->host->log(ctx, HVQ_LOG_DEBUG, "%s: %llu bytes reserved for the header of file %zu",
                   s->path, (unsigned long long)f->reserve, k + 1);
    return sts_flush(ctx, s, k);
}

/* Keeps n bytes in file k's memory buffer. */
static hvq_status sts_keep(hvq_ctx *ctx, st_stream *s, sts_file *f, const void *p, size_t n)
{
    if (f->mem_len + n > f->mem_cap) {
        size_t cap = f->mem_cap ? f->mem_cap : 65536;
        unsigned char *m;
        while (cap < f->mem_len + n)
            cap *= 2;
        if (cap > s->mem_max)
            cap = s->mem_max;
        m = ctx->host->realloc(ctx, f->mem, cap);
        if (!m)
            return HVQ_E_NOMEM;
        f->mem = m;
        f->mem_cap = cap;
    }
    memcpy(f->mem + f->mem_len, p, n);
    f->mem_len += n;
    s->mem_used += n;
    f->data_len += n;
    return HVQ_OK;
}

/* Appends n bytes to the current file's data section. */
static hvq_status sts_data(hvq_ctx *ctx, st_stream *s, const void *data, uint64_t n)
{
    const unsigned char *p = data;
    size_t k = s->n_f - 1;
    sts_file *f = &s->f[k];
    hvq_status st;
    if (!f->fixed && n > 0) {
        /* Over budget with the first file still held in memory: that one
         * gets its reservation first. */
        if (n > s->mem_max - s->mem_used && k > 0 && !s->f[0].fixed &&
            (st = sts_fix_reserve(ctx, s, 0, 0)) != HVQ_OK)
            return st;
        if (n <= s->mem_max - s->mem_used)
            return sts_keep(ctx, s, f, p, (size_t)n);
        if ((st = sts_fix_reserve(ctx, s, k, n)) != HVQ_OK)
            return st;
    }
    while (n > 0) {
        size_t chunk = n > STS_CHUNK ? STS_CHUNK : (size_t)n;
        st = ctx->host->output_pwrite(ctx, f->out, p, chunk, 8 + f->reserve + f->data_len);
        if (st != HVQ_OK)
            return st;
        f->data_len += chunk;
        p += chunk;
        n -= chunk;
    }
    return HVQ_OK;
}

/* Ends the current file and starts the next one. A file other than the
 * first gets its exact header size now and its data goes to the output;
 * the first stays in memory (if it is) until the end, since its last
 * metadata value may still grow. */
static hvq_status sts_next_file(hvq_ctx *ctx, st_stream *s)
{
    size_t k = s->n_f - 1;
    sts_file *f = &s->f[k];
    if (k > 0 && !f->fixed) {
        uint64_t need = sts_header_size(s, k, 0);
        hvq_status st;
        f->reserve = (need + 7) / 8 * 8;
        f->fixed = 1;
        if (need > ST_MAX_HEADER)
            return sts_too_big(ctx, s, need, ST_MAX_HEADER);
        if ((st = sts_flush(ctx, s, k)) != HVQ_OK)
            return st;
    }
    return sts_add_file(ctx, s);
}

/* The entry of t, starting at the current end of file k's data. */
static void sts_entry(st_stream *s, size_t k, const hvq_tensor_info *t, const char *dtype)
{
    hvq_buf *b = &s->f[k].entries;
    hvq_buf_append(b, ",", 1);
    st_put_entry(b, t->name, dtype, t->ndim, t->shape, s->f[k].data_len,
                 s->f[k].data_len + t->nbytes);
}

/* Sharded: remembers that tensor name is in file k. */
static hvq_status sts_locate(hvq_ctx *ctx, st_stream *s, const char *name, size_t k)
{
    if (s->n_locs == s->cap_locs) {
        size_t cap = s->cap_locs ? 2 * s->cap_locs : 64;
        st_decl *p = ctx->host->realloc(ctx, s->locs, cap * sizeof *p);
        if (!p)
            return HVQ_E_NOMEM;
        s->locs = p;
        s->cap_locs = cap;
    }
    if (!(s->locs[s->n_locs].name = ctx->host->strdup(ctx, name)))
        return HVQ_E_NOMEM;
    s->locs[s->n_locs++].nbytes = k;
    return HVQ_OK;
}

/* Adds t's entry to the current file, or sharded to a new file when this
 * one would pass max_shard_size (never for the first tensor of a file) or
 * its fixed header has no room left; then its data. */
static hvq_status sts_put(hvq_ctx *ctx, st_stream *s, const hvq_tensor *t, const char *dtype)
{
    hvq_status st;
    size_t k = s->n_f - 1, mark;
    sts_file *f = &s->f[k];
    uint64_t n = t->info.nbytes, need;
    if (s->max_shard && f->data_len > 0 &&
        n > s->max_shard - (f->data_len < s->max_shard ? f->data_len : s->max_shard)) {
        if ((st = sts_next_file(ctx, s)) != HVQ_OK)
            return st;
        f = &s->f[++k];
    }
    mark = f->entries.len;
    sts_entry(s, k, &t->info, dtype);
    if (f->entries.oom)
        return st_nomem(ctx, s->path);
    need = sts_header_size(s, k, 0) + (k == 0 ? s->meta_pending : 0);
    if (f->fixed && need > f->reserve) {
        if (!s->max_shard || f->n_stored == 0)
            return sts_too_big(ctx, s, need, f->reserve);
        f->entries.len = mark; /* no room: this one opens the next file */
        if ((st = sts_next_file(ctx, s)) != HVQ_OK)
            return st;
        f = &s->f[++k];
        mark = 0;
        sts_entry(s, k, &t->info, dtype);
        need = sts_header_size(s, k, 0);
        if (f->entries.oom)
            return st_nomem(ctx, s->path);
        if (f->fixed && need > f->reserve)
            return sts_too_big(ctx, s, need, f->reserve);
    }
    s->grown += f->entries.len - mark;
    f->n_stored++;
    if (s->max_shard && (st = sts_locate(ctx, s, t->info.name, k)) != HVQ_OK)
        return st;
    return sts_data(ctx, s, t->data, n);
}

static hvq_status sts_write(hvq_ctx *ctx, st_stream *s, const hvq_tensor *t)
{
    const st_dtype *type = NULL;
    /* the host checked the tensor (name, shape, size, data, not written
     * before); what safetensors adds: */
    hvq_status st = st_check_tensor(ctx, s->path, 0, &t->info, &type);
    if (st == HVQ_OK)
        st = sts_put(ctx, s, t, type->name);
    if (st != HVQ_OK)
        s->failed = 1;
    return st;
}

/* A new item: sharded, it starts the next file when its tensors fit one
 * but not what is left of the current one. */
static hvq_status sts_item(hvq_ctx *ctx, st_stream *s, const hvq_sink_control *c)
{
    const hvq_host *H = ctx->host;
    const sts_file *f = &s->f[s->n_f - 1];
    hvq_status st;
    H->free(s->item);
    if (!(s->item = H->strdup(ctx, c->item)))
        return HVQ_E_NOMEM;
    s->item_index = c->item_index;
    s->n_items = c->n_items;
    s->header_to_come = c->header_to_come;
    if (s->max_shard) {
        uint64_t total = c->item_bytes;
        uint64_t used = f->data_len < s->max_shard ? f->data_len : s->max_shard;
        if (f->data_len > 0 && total <= s->max_shard && total > s->max_shard - used &&
            (st = sts_next_file(ctx, s)) != HVQ_OK)
            return st;
    }
    s->before = s->grown;
    s->f[0].before = sts_header_size(s, 0, 0);
    s->f[s->n_f - 1].before = sts_header_size(s, s->n_f - 1, 0);
    return HVQ_OK;
}

/* Appends text to the last metadata value and checks that the headers of
 * the first and the current file still fit. */
static hvq_status sts_append(hvq_ctx *ctx, st_stream *s, const hvq_sink_control *c)
{
    size_t files[2] = {0, s->n_f - 1}, i;
    uint64_t esc = hvq_json_escaped_len(c->meta_append, c->meta_append_len);
    hvq_buf_append(&s->grow, c->meta_append, c->meta_append_len);
    if (s->grow.oom)
        return st_nomem(ctx, s->path);
    s->grow_esc += esc;
    s->grown += esc;
    for (i = 0; i < 2; i++) {
        const sts_file *f = &s->f[files[i]];
        uint64_t need = sts_header_size(s, files[i], 0);
        uint64_t room = f->fixed ? f->reserve : ST_MAX_HEADER;
        if (need > room)
            return sts_too_big(ctx, s, need, room);
    }
    return HVQ_OK;
}

/* The header every file 0 needs whatever comes (the metadata, with the
 * growth the first sink_control announces) against the reservations. */
static hvq_status sts_check_fixed(hvq_ctx *ctx, const st_stream *s)
{
    uint64_t fixed = sts_header_size(s, 0, 0) - s->f[0].entries.len;
    if (s->user_reserve && fixed > s->user_reserve)
        return st_fail(ctx, HVQ_E_INPUT, s->path,
                       "the container header needs at least %llu bytes (metadata and "
                       "pipeline) but stages.writer.header_reserve gives %llu",
                       (unsigned long long)fixed, (unsigned long long)s->user_reserve);
    if (fixed > ST_MAX_HEADER)
        return st_fail(ctx, HVQ_E_UNSUPPORTED, s->path,
                       "the container header needs at least %llu bytes (metadata and "
                       "pipeline), more than the %llu safetensors readers accept",
                       (unsigned long long)fixed, ST_MAX_HEADER);
    return HVQ_OK;
}

static hvq_status st_sink_control(hvq_ctx *ctx, void *state, hvq_sink_control *c)
{
    st_stream *s = state;
    hvq_status st = HVQ_OK;
    if (s == NULL || !s->streaming || c == NULL ||
        c->struct_size < offsetof(hvq_sink_control, item_header) + sizeof c->item_header)
        return ctx->host->error(ctx, HVQ_E_INTERNAL,
                                "safetensors: sink_control needs a sink opened with "
                                "streaming=true and a whole hvq_sink_control");
    if (s->failed)
        return st_fail(ctx, HVQ_E_INTERNAL, s->path, "control after an earlier failure");
    s->meta_reserve = c->meta_reserve;
    s->meta_pending = c->meta_pending;
    if (!s->checked) { /* the first call: the metadata is all known */
        s->checked = 1;
        st = sts_check_fixed(ctx, s);
    }
    if (st == HVQ_OK && c->item != NULL)
        st = sts_item(ctx, s, c);
    if (st == HVQ_OK && c->meta_append != NULL)
        st = sts_append(ctx, s, c);
    c->item_header = s->grown - s->before;
    if (st != HVQ_OK)
        s->failed = 1;
    return st;
}

/* The header of file k (n_files in all) into h: the 8-byte length, the
 * JSON, spaces up to 8 + R. */
static hvq_status sts_header(hvq_ctx *ctx, st_stream *s, size_t k, size_t n_files, hvq_buf *h)
{
    sts_file *f = &s->f[k];
    unsigned char len8[8];
    int i;
    for (i = 0; i < 8; i++)
        len8[i] = (unsigned char)(f->reserve >> (8 * i));
    h->len = 0;
    hvq_buf_append(h, (const char *)len8, 8);
    if (k == 0) {
        hvq_buf_append(h, s->prefix.data, s->prefix.len);
        hvq_buf_json_stringn(h, s->grow.data ? s->grow.data : "", s->grow.len);
    } else {
        hvq_buf_append(h, s->other.data, s->other.len);
    }
    if (sts_key_len(s, k, n_files)) {
        hvq_buf_append(h, ",", 1);
        hvq_buf_json_string(h, s->shard_key);
        hvq_buf_printf(h, ":\"%zu of %zu\"", k + 1, n_files);
    }
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
        return st_nomem(ctx, s->path);
    if (h->len != 8 + f->reserve)
        return st_fail(ctx, HVQ_E_INTERNAL, s->path, "header of %zu bytes, expected %llu",
                       h->len, (unsigned long long)(8 + f->reserve));
    return HVQ_OK;
}

/* Sharded: every file gets its final name and NAME.EXT.index.json maps
 * every tensor to its file. */
static hvq_status sts_names(hvq_ctx *ctx, st_stream *s)
{
    const hvq_host *H = ctx->host;
    char **names = H->calloc(ctx, s->n_f, sizeof *names);
    hvq_status st = names ? HVQ_OK : HVQ_E_NOMEM;
    hvq_output *index = NULL;
    uint64_t total = 0;
    size_t k;
    for (k = 0; st == HVQ_OK && k < s->n_f; k++) {
        if (!(names[k] = st_shard_path(ctx, s->path, k, s->n_f)))
            st = HVQ_E_NOMEM;
        else
            st = H->output_rename(ctx, s->f[k].out, names[k]);
        total += s->f[k].data_len;
    }
    if (st == HVQ_OK)
        st = st_open_index(ctx, s->path, &index);
    if (st == HVQ_OK)
        st = st_put_index(ctx, index, s->path, total, s->locs, s->n_locs, names);
    for (k = 0; names && k < s->n_f; k++)
        H->free(names[k]);
    H->free(names);
    return st;
}

/* Writes file k's header (exact when its data is still in memory). */
static hvq_status sts_close_file(hvq_ctx *ctx, st_stream *s, size_t k, size_t n_files,
                                 hvq_buf *h)
{
    const hvq_host *H = ctx->host;
    sts_file *f = &s->f[k];
    uint64_t need = sts_header_size(s, k, n_files);
    hvq_status st;
    if (!f->fixed) /* its data is in memory: the exact size will do */
        f->reserve = s->user_reserve ? s->user_reserve : (need + 7) / 8 * 8;
    if (need > f->reserve || need > ST_MAX_HEADER)
        return st_fail(ctx, HVQ_E_UNSUPPORTED, s->path,
                       "the container header needs %llu bytes but %llu %s",
                       (unsigned long long)need,
                       (unsigned long long)(need > ST_MAX_HEADER ? ST_MAX_HEADER : f->reserve),
                       need > ST_MAX_HEADER ? "is the most safetensors readers accept"
                                            : "were reserved; rerun with a larger "
                                              "stages.writer.header_reserve");
    if ((st = sts_header(ctx, s, k, n_files, h)) != HVQ_OK)
        return st;
    st = H->output_pwrite(ctx, f->out, h->data, h->len, 0);
    if (st == HVQ_OK && !f->fixed) {
        f->fixed = 1;
        st = sts_flush(ctx, s, k);
    }
    if (st == HVQ_OK)
        H->log(ctx, HVQ_LOG_DEBUG, "%s: file %zu of %zu: header %llu of %llu reserved "
               "bytes, %llu bytes of data", s->path, k + 1, n_files,
               (unsigned long long)need, (unsigned long long)f->reserve,
               (unsigned long long)f->data_len);
    return st;
}

static hvq_status sts_finish(hvq_ctx *ctx, st_stream *s)
{
    size_t n_files = s->n_f, k;
    hvq_buf h;
    hvq_status st = HVQ_OK;
    if (s->failed)
        return st_fail(ctx, HVQ_E_INTERNAL, s->path, "finish after a failed write");
    hvq_buf_init(&h);
    for (k = 0; st == HVQ_OK && k < n_files; k++)
        st = sts_close_file(ctx, s, k, n_files, &h);
    hvq_buf_free(&h);
    if (st == HVQ_OK && n_files > 1)
        st = sts_names(ctx, s);
    if (st != HVQ_OK)
        s->failed = 1;
    return st;
}

static void sts_free(const hvq_host *H, st_stream *s)
{
    size_t k;
    if (!s)
        return;
    for (k = 0; k < s->n_f; k++) {
        hvq_buf_free(&s->f[k].entries);
        H->free(s->f[k].mem);
    }
    H->free(s->f);
    for (k = 0; k < s->n_locs; k++)
        H->free(s->locs[k].name);
    H->free(s->locs);
    hvq_buf_free(&s->prefix);
    hvq_buf_free(&s->grow);
    hvq_buf_free(&s->other);
    H->free(s->shard_key);
    H->free(s->item);
    H->free(s->path);
    H->free(s);
}

/* The metadata: every pair but the last value into prefix, that value
 * into grow, the first shard_meta pairs into other. */
static hvq_status sts_meta(hvq_ctx *ctx, st_stream *s, const hvq_meta *meta, size_t n_meta,
                           size_t shard_meta)
{
    if (n_meta == 0) /* the host checked the entries */
        return st_fail(ctx, HVQ_E_INTERNAL, s->path, "streaming needs metadata");
    hvq_buf_puts(&s->prefix, "{\"__metadata__\":{");
    st_put_meta(&s->prefix, meta, n_meta - 1);
    if (n_meta > 1)
        hvq_buf_append(&s->prefix, ",", 1);
    hvq_buf_json_string(&s->prefix, meta[n_meta - 1].key);
    hvq_buf_append(&s->prefix, ":", 1);
    hvq_buf_puts(&s->grow, meta[n_meta - 1].value);
    s->grow_esc = hvq_json_escaped_len(s->grow.data ? s->grow.data : "", s->grow.len);
    hvq_buf_puts(&s->other, "{\"__metadata__\":{");
    st_put_meta(&s->other, meta, shard_meta < n_meta ? shard_meta : n_meta);
    if (s->prefix.oom || s->grow.oom || s->other.oom)
        return st_nomem(ctx, s->path);
    return HVQ_OK;
}

static hvq_status sts_create(hvq_ctx *ctx, const char *path, const hvq_params *params,
                             const hvq_meta *meta, size_t n_meta, size_t n_tensors,
                             void **state)
{
    const hvq_host *H = ctx->host;
    const hvq_value *v = params->values;
    st_stream *s = H->calloc(ctx, 1, sizeof *s);
    uint64_t mib = (uint64_t)v[ST_P_BUFFER_MIB].i;
    hvq_status st;
    if (!s)
        return HVQ_E_NOMEM;
    *state = s;
    s->streaming = 1;
    if (n_tensors > 0)
        return st_fail(ctx, HVQ_E_INTERNAL, path,
                       "streaming: tensors are added by sink_write, not declared");
    if (!(s->path = H->strdup(ctx, path)))
        return HVQ_E_NOMEM;
    s->max_shard = v[ST_P_MAX_SHARD].i > 0 ? (uint64_t)v[ST_P_MAX_SHARD].i : 0;
    if (s->max_shard && !st_ext(path))
        return st_fail(ctx, HVQ_E_INPUT, path,
                       "max_shard_size needs an output name NAME.EXT (the shards become "
                       "NAME-00001-of-0000N.EXT and the index NAME.EXT.index.json)");
    if (v[ST_P_SHARD_KEY].s && *v[ST_P_SHARD_KEY].s &&
        !(s->shard_key = H->strdup(ctx, v[ST_P_SHARD_KEY].s)))
        return HVQ_E_NOMEM;
    s->user_reserve = (uint64_t)v[ST_P_HEADER_RESERVE].i * 1024;
    s->mem_max = mib > SIZE_MAX >> 21 ? SIZE_MAX >> 1 : (size_t)(mib << 20);
    if ((st = sts_meta(ctx, s, meta, n_meta, (size_t)v[ST_P_SHARD_META].i)) != HVQ_OK)
        return st;
    return sts_add_file(ctx, s);
}

/* The declarations a sink keeps: names, sizes, their total. */
static hvq_status st_sink_decl(hvq_ctx *ctx, st_sink *k, const char *path,
                               const hvq_tensor_info *tensors, size_t n)
{
    const hvq_host *h = ctx->host;
    size_t i;
    k->host = h;
    k->path = h->strdup(ctx, path);
    k->decl = h->calloc(ctx, n ? n : 1, sizeof *k->decl);
    if (k->path == NULL || k->decl == NULL)
        return HVQ_E_NOMEM;
    k->n = n; /* decl is zeroed: st_sink_free copes with a partial fill */
    for (i = 0; i < n; i++) {
        k->decl[i].name = h->strdup(ctx, tensors[i].name);
        if (k->decl[i].name == NULL)
            return HVQ_E_NOMEM;
        k->decl[i].nbytes = tensors[i].nbytes;
        if (!hvq_add_u64(k->total, tensors[i].nbytes, &k->total))
            return st_fail(ctx, HVQ_E_INPUT, path,
                           "the tensors add up to more than 2^64 bytes");
    }
    return HVQ_OK;
}

/* Every header is known: build them all before creating a file, then open
 * the outputs (the index last) and write the headers. */
static hvq_status st_sink_files(hvq_ctx *ctx, st_sink *k, const hvq_meta *meta,
                                size_t n_meta, const hvq_tensor_info *tensors,
                                const st_dtype **types, uint64_t max)
{
    const hvq_host *h = ctx->host;
    unsigned char len8[8];
    hvq_buf b;
    size_t i, s;
    hvq_status st = HVQ_OK;
    hvq_buf_init(&b);
    for (s = 0; st == HVQ_OK && s < k->n_shards; s++) {
        st_shard *sh = &k->shards[s];
        b.len = 0;
        st = st_build_header(ctx, sh->path, &b, meta, n_meta, tensors, types,
                             sh->first, sh->end);
        if (st == HVQ_OK)
            st = st_open_output(ctx, sh->path, &sh->out);
        for (i = 0; i < 8; i++)
            len8[i] = (unsigned char)((uint64_t)b.len >> (8 * i));
        if (st == HVQ_OK)
            st = h->output_write(ctx, sh->out, len8, sizeof len8);
        if (st == HVQ_OK)
            st = h->output_write(ctx, sh->out, b.data, b.len);
    }
    hvq_buf_free(&b);
    if (st == HVQ_OK && k->n_shards > 1) {
        st = st_open_index(ctx, k->path, &k->index);
        if (st == HVQ_OK)
            h->log(ctx, HVQ_LOG_DEBUG, "%s: %zu shards of at most %llu bytes",
                   k->path, k->n_shards, (unsigned long long)max);
    }
    return st;
}

static hvq_status st_sink_create_params(hvq_ctx *ctx, const char *path,
                                        const hvq_params *params,
                                        const hvq_meta *meta, size_t n_meta,
                                        const hvq_tensor_info *tensors,
                                        size_t n, void **state)
{
    const hvq_host *h = ctx->host;
    st_sink *k = NULL;
    const st_dtype **types = NULL;
    uint64_t max = 0;
    hvq_status st;

    *state = NULL;
    if (path == NULL)
        return h->error(ctx, HVQ_E_INTERNAL, "safetensors: no output path");
    if (params != NULL && params->count > ST_P_SHARD_META &&
        params->values[ST_P_STREAMING].i)
        return sts_create(ctx, path, params, meta, n_meta, n, state);
    if (params != NULL && params->count > ST_P_MAX_SHARD &&
        params->values[ST_P_MAX_SHARD].i > 0)
        max = (uint64_t)params->values[ST_P_MAX_SHARD].i;
    if (max > 0) {
        const char *base = st_basename(path);
        if (!hvq_ends_with(base, ST_EXT) || strlen(base) == strlen(ST_EXT))
            return st_fail(ctx, HVQ_E_INPUT, path,
                           "max_shard_size needs an output name NAME" ST_EXT
                           " (the shards become NAME-00001-of-0000N" ST_EXT
                           " and the index NAME" ST_INDEX_EXT ")");
    }
    types = h->calloc(ctx, n ? n : 1, sizeof *types);
    if (types == NULL)
        return HVQ_E_NOMEM;
    st = st_check_decl(ctx, path, tensors, n, types);
    if (st == HVQ_OK && (k = h->calloc(ctx, 1, sizeof *k)) == NULL)
        st = HVQ_E_NOMEM;
    if (st == HVQ_OK)
        st = st_sink_decl(ctx, k, path, tensors, n);
    if (st == HVQ_OK)
        st = st_plan_shards(ctx, k, path, tensors, n, max);
    if (st == HVQ_OK)
        st = st_sink_files(ctx, k, meta, n_meta, tensors, types, max);
    h->free(types);
    if (st != HVQ_OK) {
        st_sink_free(k);
        return st;
    }
    *state = k;
    return HVQ_OK;
}

/* Without options: one file. */
static hvq_status st_sink_create(hvq_ctx *ctx, const char *path,
                                 const hvq_meta *meta, size_t n_meta,
                                 const hvq_tensor_info *tensors, size_t n,
                                 void **state)
{
    return st_sink_create_params(ctx, path, NULL, meta, n_meta, tensors, n,
                                 state);
}

static hvq_status st_sink_write(hvq_ctx *ctx, void *state,
                                const hvq_tensor *t)
{
    st_sink *k = state;
    const st_decl *want;
    const unsigned char *p;
    uint64_t left;
    hvq_status st;

    if (k == NULL || t == NULL)
        return ctx->host->error(ctx, HVQ_E_INTERNAL,
                                "safetensors: sink_write without a sink or "
                                "tensor");
    if (k->streaming)
        return sts_write(ctx, state, t);
    /* The host checked the order, the sizes and the data. */
    want = &k->decl[k->next];
    while (k->next >= k->shards[k->cur].end)
        k->cur++;
    p = t->data;
    left = want->nbytes;
    while (left > 0) {
        size_t chunk = left > (1u << 30) ? (size_t)1 << 30 : (size_t)left;
        st = ctx->host->output_write(ctx, k->shards[k->cur].out, p, chunk);
        if (st != HVQ_OK) {
            k->failed = 1;
            return st;
        }
        p += chunk;
        left -= chunk;
    }
    k->next++;
    return HVQ_OK;
}

static hvq_status st_sink_finish(hvq_ctx *ctx, void *state)
{
    st_sink *k = state;
    if (k == NULL)
        return ctx->host->error(ctx, HVQ_E_INTERNAL,
                                "safetensors: sink_finish without a sink");
    if (k->streaming)
        return sts_finish(ctx, state);
    if (k->index != NULL) {
        hvq_status st = st_write_index(ctx, k);
        if (st != HVQ_OK) {
            k->failed = 1;
            return st;
        }
        k->index = NULL; /* written once */
    }
    return HVQ_OK;
}

static void st_sink_close(hvq_ctx *ctx, void *state)
{
    const st_sink *k = state;
    if (k != NULL && k->streaming)
        sts_free(ctx->host, state);
    else
        st_sink_free(state);
}

/* ------------------------------------------------------------------------
 * Descriptor
 * ---------------------------------------------------------------------- */
static const hvq_plugin st_plugin = {
    HVQ_PLUGIN_HEADER,
    .kinds = HVQ_KIND_SOURCE | HVQ_KIND_SINK,
    .flags = 0,
    .name = "safetensors",
    .version = "1.0.0",
    .summary = "safetensors files and sharded models (write: one file, or shards with "
               "max_shard_size)",
    .license = "MIT",
    .params = st_params,
    .probe = st_probe,
    .source_open = st_source_open,
    .source_count = st_source_count,
    .source_info = st_source_info,
    .source_read = st_source_read,
    .source_meta = st_source_meta,
    .source_close = st_source_close,
    .sink_create = st_sink_create,
    .sink_write = st_sink_write,
    .sink_finish = st_sink_finish,
    .sink_close = st_sink_close,
    .extensions = ST_EXT,
    .sink_create_params = st_sink_create_params,
    .sink_control = st_sink_control,
    .sink_index_lists = st_index_lists,
};

HVQ_REGISTER_PLUGIN(st_plugin)
