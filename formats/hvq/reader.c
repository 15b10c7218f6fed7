/* source "hvq": reading hvq containers (docs/FORMAT.md).
 *
 * A container is one .hvq file or, sharded, NAME-0000k-of-0000N.hvq files
 * with NAME.hvq.index.json (opened through the index or its directory). Its
 * files are safetensors files: this source reads them through the
 * safetensors source (host->model_open_as), which reads the shards as
 * one set of stored tensors and takes the metadata from the first, and
 * validates everything the container adds: the version, "hvq.shard", the
 * whole "hvq.tensors" index against the stored tensors (names, dtypes,
 * shapes, sizes, every stored tensor listed exactly once) and
 * "hvq.source_metadata". It describes the result through container_view
 * and container_part (include/hvqconv/plugin.h); the host checks the
 * checksums and decodes the compressed tensors with the clusterer and
 * residual plugins named there. As a plain source it lists the stored
 * tensors. It never claims a file by probe: hvqconv opens it by name.
 */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include "plugin.h"

#include "checked.h"
#include "file.h"
#include "json.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* The container format version this source reads. */
#define HR_FORMAT_VERSION 1

/* One stored (safetensors) tensor of an original tensor. */
typedef struct hr_part {
    size_t src;           /* index in the stored tensors */
    int stage;            /* HVQ_PART_* */
    const char *key;      /* component key (stages 1 and 2) */
} hr_part;

typedef struct hr_tensor {
    hvq_container_tensor pub;
    hr_part *parts;       /* in "stored" order */
    size_t n_parts;
    hvq_meta *attrs[2];   /* clusterer, residual */
} hr_tensor;

typedef struct hr_name {
    const char *name;
    size_t idx;
} hr_name;

typedef struct hr_state {
    char *path;           /* as given (error messages) */
    char *open_path;      /* the file opened: path, or a directory's index */
    int sharded;          /* opened through an index */
    size_t n_shards;
    hvq_model *model;     /* the safetensors layer */
    uint64_t file_size;
    size_t n_src;
    hvq_tensor_info *src_info;
    hr_name *by_name;     /* the stored tensors sorted by name */
    unsigned char *used;  /* per stored tensor: listed by an entry */
    const hvq_meta *meta; /* the container's __metadata__ */
    size_t n_meta;
    hvq_json_doc *tdoc;   /* hvq.tensors */
    hvq_json_doc *sdoc;   /* hvq.source_metadata */
    hvq_meta *smeta;
    size_t n_smeta;
    hr_tensor *t;
    size_t n;
    hvq_container_tensor *pubs; /* t[i].pub, contiguous (the view) */
    hvq_container_view view;
} hr_state;

static hvq_status cfail(hvq_ctx *ctx, hvq_status st, const hr_state *c, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

static hvq_status cfail(hvq_ctx *ctx, hvq_status st, const hr_state *c, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return ctx->host->error(ctx, st, "%s: %s", c->path, msg);
}

/* A value of the container's own metadata, or NULL. */
static const char *hr_meta(const hr_state *c, const char *key)
{
    for (size_t i = 0; i < c->n_meta; i++)
        if (strcmp(c->meta[i].key, key) == 0)
            return c->meta[i].value;
    return NULL;
}

/* Every dtype of the safetensors specification (the container's layer). */
static const struct {
    const char *name;
    hvq_dtype dtype;
} st_types[] = {
    {"F32", HVQ_DTYPE_F32},     {"F16", HVQ_DTYPE_F16},     {"BF16", HVQ_DTYPE_BF16},
    {"F64", HVQ_DTYPE_F64},     {"I8", HVQ_DTYPE_I8},       {"U8", HVQ_DTYPE_U8},
    {"I16", HVQ_DTYPE_I16},     {"U16", HVQ_DTYPE_U16},     {"I32", HVQ_DTYPE_I32},
    {"U32", HVQ_DTYPE_U32},     {"I64", HVQ_DTYPE_I64},     {"U64", HVQ_DTYPE_U64},
    {"BOOL", HVQ_DTYPE_BOOL},   {"F8_E4M3", HVQ_DTYPE_OPAQUE}, {"F8_E5M2", HVQ_DTYPE_OPAQUE},
    {"F8_E8M0", HVQ_DTYPE_OPAQUE}, {"C64", HVQ_DTYPE_OPAQUE}, {"F4", HVQ_DTYPE_OPAQUE},
    {"F6_E2M3", HVQ_DTYPE_OPAQUE}, {"F6_E3M2", HVQ_DTYPE_OPAQUE},
};

/* 1 when name is a safetensors dtype (*dt gets its hvq_dtype). */
static int st_type(const char *name, hvq_dtype *dt)
{
    for (size_t i = 0; i < sizeof st_types / sizeof st_types[0]; i++)
        if (strcmp(name, st_types[i].name) == 0) {
            if (dt)
                *dt = st_types[i].dtype;
            return 1;
        }
    if (dt)
        *dt = HVQ_DTYPE_OPAQUE;
    return 0;
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(((const hr_name *)a)->name, ((const hr_name *)b)->name);
}

/* Index of the stored tensor called name, or (size_t)-1. */
static size_t find_stored(const hr_state *c, const char *name)
{
    size_t lo = 0, hi = c->n_src;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int r = strcmp(name, c->by_name[mid].name);
        if (r == 0)
            return c->by_name[mid].idx;
        if (r < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return (size_t)-1;
}

/* A JSON string without NUL bytes, or NULL. */
static const char *jstr(const hvq_json_value *v)
{
    size_t len;
    const char *s = hvq_json_string(v, &len);
    return s && strlen(s) == len ? s : NULL;
}

/* Parses hvq.source_metadata: an object of strings. */
static hvq_status parse_source_meta(hvq_ctx *ctx, hr_state *c)
{
    const char *text = hr_meta(c, "hvq.source_metadata");
    if (!text)
        return HVQ_OK; /* none recorded: empty */
    hvq_json_error jerr;
    c->sdoc = hvq_json_parse(text, strlen(text), HVQ_JSON_NO_DUPLICATES, &jerr);
    if (!c->sdoc)
        return jerr.status == HVQ_JSON_E_NOMEM
                   ? cfail(ctx, HVQ_E_NOMEM, c, "out of memory")
                   : cfail(ctx, HVQ_E_INPUT, c, "hvq.source_metadata is not valid JSON: %s",
                           jerr.message);
    const hvq_json_value *root = hvq_json_root(c->sdoc);
    if (root->type != HVQ_JSON_OBJECT)
        return cfail(ctx, HVQ_E_INPUT, c, "hvq.source_metadata is a JSON %s, expected an object",
                     hvq_json_kind(root));
    c->n_smeta = root->count;
    c->smeta = ctx->host->calloc(ctx, c->n_smeta ? c->n_smeta : 1, sizeof *c->smeta);
    if (!c->smeta)
        return HVQ_E_NOMEM;
    for (size_t i = 0; i < root->count; i++) {
        const hvq_json_member *m = &root->members[i];
        const char *v = jstr(m->value);
        if (!v)
            return cfail(ctx, HVQ_E_INPUT, c,
                         "hvq.source_metadata: the value of '%s' is not a string", m->key);
        c->smeta[i].key = m->key;
        c->smeta[i].value = v;
    }
    return HVQ_OK;
}

/* A shape array into ndim/shape with its element count. */
static int parse_shape(const hvq_json_value *v, int *ndim, int64_t *shape, uint64_t *numel)
{
    if (!v || v->type != HVQ_JSON_ARRAY || v->count > HVQ_MAX_DIMS)
        return 0;
    for (size_t d = 0; d < v->count; d++)
        if (hvq_json_int64(v->items[d], &shape[d]) != 0)
            return 0;
    *ndim = (int)v->count;
    return hvq_shape_numel(*ndim, shape, numel);
}

static int same_shape(int nd, const int64_t *a, int nd2, const int64_t *b)
{
    if (nd != nd2)
        return 0;
    for (int d = 0; d < nd; d++)
        if (a[d] != b[d])
            return 0;
    return 1;
}

/* Marks stored tensor `name` as belonging to entry t; returns its source
 * index or sets an error. */
static hvq_status claim(hvq_ctx *ctx, hr_state *c, const char *tname, const char *name,
                        size_t *idx)
{
    size_t i = find_stored(c, name);
    if (i == (size_t)-1)
        return cfail(ctx, HVQ_E_INPUT, c,
                     "tensor '%s': stored tensor '%s' is not in the container", tname, name);
    if (c->used[i])
        return cfail(ctx, HVQ_E_INPUT, c,
                     "tensor '%s': stored tensor '%s' is listed more than once", tname, name);
    c->used[i] = 1;
    *idx = i;
    return HVQ_OK;
}

/* Parses the "clusterer" or "residual" object of a compressed entry; fills
 * the stage description and sets the stage of the parts it names. */
static hvq_status parse_stage(hvq_ctx *ctx, hr_state *c, hr_tensor *t, int which,
                              const hvq_json_value *obj, const hvq_json_value *stored)
{
    const char *sname = which == 1 ? "clusterer" : "residual";
    const char *tn = t->pub.name;
    hvq_container_stage *s = which == 1 ? &t->pub.clusterer : &t->pub.residual;
    if (!obj || obj->type != HVQ_JSON_OBJECT)
        return cfail(ctx, HVQ_E_INPUT, c, "tensor '%s': \"%s\" is %s, expected an object", tn,
                     sname, obj ? hvq_json_kind(obj) : "missing");
    s->plugin = jstr(hvq_json_get(obj, "plugin"));
    s->version = jstr(hvq_json_get(obj, "version"));
    if (!s->plugin || !*s->plugin || !s->version)
        return cfail(ctx, HVQ_E_INPUT, c,
                     "tensor '%s': the %s needs string \"plugin\" and \"version\"", tn, sname);
    const hvq_json_value *attrs = hvq_json_get(obj, "attrs");
    const hvq_json_value *comps = hvq_json_get(obj, "components");
    if (!attrs || attrs->type != HVQ_JSON_OBJECT || !comps || comps->type != HVQ_JSON_OBJECT)
        return cfail(ctx, HVQ_E_INPUT, c,
                     "tensor '%s': the %s needs \"attrs\" and \"components\" objects", tn, sname);
    s->n_attrs = attrs->count;
    t->attrs[which - 1] = ctx->host->calloc(ctx, attrs->count ? attrs->count : 1, sizeof(hvq_meta));
    if (!t->attrs[which - 1])
        return HVQ_E_NOMEM;
    for (size_t i = 0; i < attrs->count; i++) {
        const char *v = jstr(attrs->members[i].value);
        if (!v)
            return cfail(ctx, HVQ_E_INPUT, c, "tensor '%s': %s attribute '%s' is not a string",
                         tn, sname, attrs->members[i].key);
        t->attrs[which - 1][i].key = attrs->members[i].key;
        t->attrs[which - 1][i].value = v;
    }
    s->attrs = t->attrs[which - 1];
    s->n_components = comps->count;
    for (size_t i = 0; i < comps->count; i++) {
        const hvq_json_member *m = &comps->members[i];
        const char *target = jstr(m->value);
        if (m->key_len == 0 || m->key_len >= sizeof(((hvq_component *)0)->name))
            return cfail(ctx, HVQ_E_INPUT, c,
                         "tensor '%s': %s component name '%s' must have 1 to 31 bytes", tn,
                         sname, m->key);
        if (!target)
            return cfail(ctx, HVQ_E_INPUT, c,
                         "tensor '%s': %s component '%s' does not name a stored tensor", tn,
                         sname, m->key);
        size_t k;
        for (k = 0; k < t->n_parts; k++)
            if (strcmp(jstr(stored->items[k]), target) == 0)
                break;
        if (k == t->n_parts)
            return cfail(ctx, HVQ_E_INPUT, c,
                         "tensor '%s': %s component '%s' (stored tensor '%s') is not listed in "
                         "\"stored\"", tn, sname, m->key, target);
        if (t->parts[k].stage != -1)
            return cfail(ctx, HVQ_E_INPUT, c,
                         "tensor '%s': stored tensor '%s' is used twice", tn, target);
        hvq_dtype dt = c->src_info[t->parts[k].src].dtype;
        if (ctx->host->dtype_size(dt) == 0)
            return cfail(ctx, HVQ_E_INPUT, c,
                         "tensor '%s': %s component '%s' has dtype %s, which components may "
                         "not use", tn, sname, m->key, c->src_info[t->parts[k].src].dtype_name);
        t->parts[k].stage = which;
        t->parts[k].key = m->key;
    }
    return HVQ_OK;
}

/* The fields every entry has: name, dtype, shape, crc32, encoding. */
static hvq_status parse_head(hvq_ctx *ctx, hr_state *c, size_t ei, const hvq_json_value *e,
                             hr_tensor *t)
{
    hvq_container_tensor *p = &t->pub;
    if (e->type != HVQ_JSON_OBJECT)
        return cfail(ctx, HVQ_E_INPUT, c, "hvq.tensors entry %zu is a %s, expected an object",
                     ei, hvq_json_kind(e));
    p->name = jstr(hvq_json_get(e, "name"));
    if (!p->name || !*p->name)
        return cfail(ctx, HVQ_E_INPUT, c, "hvq.tensors entry %zu has no \"name\" string", ei);
    const char *tn = p->name;
    p->dtype_name = jstr(hvq_json_get(e, "dtype"));
    if (!p->dtype_name || !*p->dtype_name)
        return cfail(ctx, HVQ_E_INPUT, c, "tensor '%s': no \"dtype\" string", tn);
    st_type(p->dtype_name, &p->dtype);
    if (!parse_shape(hvq_json_get(e, "shape"), &p->ndim, p->shape, &p->numel))
        return cfail(ctx, HVQ_E_INPUT, c,
                     "tensor '%s': \"shape\" must be an array of at most %d non-negative "
                     "integers whose non-zero ones multiply to at most 2^63 - 1", tn,
                     HVQ_MAX_DIMS);
    uint64_t crc;
    if (hvq_json_uint64(hvq_json_get(e, "crc32"), &crc) != 0 || crc > 0xffffffffu)
        return cfail(ctx, HVQ_E_INPUT, c,
                     "tensor '%s': \"crc32\" must be an integer from 0 to 4294967295", tn);
    p->crc32 = (uint32_t)crc;
    const char *enc = jstr(hvq_json_get(e, "encoding"));
    if (!enc)
        return cfail(ctx, HVQ_E_INPUT, c, "tensor '%s': no \"encoding\" string", tn);
    if (strcmp(enc, "raw") == 0)
        p->compressed = 0;
    else if (strcmp(enc, "hvq") == 0)
        p->compressed = 1;
    else
        return cfail(ctx, HVQ_E_INPUT, c,
                     "tensor '%s': unknown encoding '%s' (this hvqconv knows \"raw\" and \"hvq\")",
                     tn, enc);
    return HVQ_OK;
}

/* "stored": every name claimed, the sizes added up. */
static hvq_status parse_stored(hvq_ctx *ctx, hr_state *c, const hvq_json_value *stored,
                               hr_tensor *t)
{
    hvq_container_tensor *p = &t->pub;
    const char *tn = p->name;
    hvq_status st;
    if (!stored || stored->type != HVQ_JSON_ARRAY)
        return cfail(ctx, HVQ_E_INPUT, c, "tensor '%s': \"stored\" must be an array of names", tn);
    t->n_parts = stored->count;
    t->parts = ctx->host->calloc(ctx, t->n_parts ? t->n_parts : 1, sizeof *t->parts);
    if (!t->parts)
        return HVQ_E_NOMEM;
    for (size_t k = 0; k < t->n_parts; k++) {
        const char *sn = jstr(stored->items[k]);
        if (!sn)
            return cfail(ctx, HVQ_E_INPUT, c, "tensor '%s': \"stored\" item %zu is not a string",
                         tn, k);
        if ((st = claim(ctx, c, tn, sn, &t->parts[k].src)) != HVQ_OK)
            return st;
        t->parts[k].stage = -1;
        uint64_t nb = c->src_info[t->parts[k].src].nbytes;
        if (!hvq_add_u64(p->stored_bytes, nb, &p->stored_bytes))
            return cfail(ctx, HVQ_E_INPUT, c, "tensor '%s': sizes overflow", tn);
    }
    p->n_stored = t->n_parts;
    return HVQ_OK;
}

/* A raw entry: one stored tensor, under its own name, of its dtype and
 * shape (or U8 bytes for a dtype safetensors lacks). */
static hvq_status parse_raw(hvq_ctx *ctx, hr_state *c, const hvq_json_value *stored,
                            hr_tensor *t)
{
    hvq_container_tensor *p = &t->pub;
    const char *tn = p->name;
    if (t->n_parts != 1 || strcmp(jstr(stored->items[0]), tn) != 0)
        return cfail(ctx, HVQ_E_INPUT, c,
                     "tensor '%s': a raw tensor must be stored under its own name alone", tn);
    const hvq_tensor_info *si = &c->src_info[t->parts[0].src];
    int ok;
    if (st_type(p->dtype_name, NULL))
        ok = strcmp(si->dtype_name, p->dtype_name) == 0 &&
             same_shape(si->ndim, si->shape, p->ndim, p->shape);
    else /* a dtype safetensors lacks: stored as U8 bytes */
        ok = strcmp(si->dtype_name, "U8") == 0 && si->ndim == 1;
    if (!ok)
        return cfail(ctx, HVQ_E_INPUT, c,
                     "tensor '%s': the stored tensor's dtype or shape differs from the "
                     "entry's (%s)", tn, p->dtype_name);
    t->parts[0].stage = 0;
    return HVQ_OK;
}

/* A compressed entry: the matrix view, the scales, both stages. */
static hvq_status parse_compressed(hvq_ctx *ctx, hr_state *c, const hvq_json_value *e,
                                   const hvq_json_value *stored, hr_tensor *t)
{
    hvq_container_tensor *p = &t->pub;
    const char *tn = p->name;
    hvq_status st;
    if (hvq_json_uint64(hvq_json_get(e, "rows"), &p->rows) != 0 ||
        hvq_json_uint64(hvq_json_get(e, "cols"), &p->cols) != 0 || p->rows == 0 || p->cols == 0)
        return cfail(ctx, HVQ_E_INPUT, c, "tensor '%s': \"rows\" and \"cols\" must be positive "
                     "integers", tn);
    uint64_t rc;
    if (!hvq_mul_u64(p->rows, p->cols, &rc) || rc != p->numel)
        return cfail(ctx, HVQ_E_INPUT, c,
                     "tensor '%s': rows x cols = %llu x %llu does not match the %llu elements of "
                     "its shape", tn, (unsigned long long)p->rows, (unsigned long long)p->cols,
                     (unsigned long long)p->numel);
    if (rc > SIZE_MAX / sizeof(float))
        return cfail(ctx, HVQ_E_UNSUPPORTED, c, "tensor '%s' is too large for this system", tn);
    const hvq_json_value *pb = hvq_json_get(e, "paper_bits");
    if (pb) {
        if (hvq_json_uint64(pb, &p->paper_bits) != 0)
            return cfail(ctx, HVQ_E_INPUT, c, "tensor '%s': \"paper_bits\" is not an integer",
                         tn);
        p->has_paper_bits = 1;
    }
    const hvq_json_value *sc = hvq_json_get(e, "scales");
    if (!sc)
        return cfail(ctx, HVQ_E_INPUT, c, "tensor '%s': no \"scales\" (a name or null)", tn);
    if (sc->type != HVQ_JSON_NULL) {
        const char *sname = jstr(sc);
        size_t k;
        for (k = 0; sname && k < t->n_parts; k++)
            if (strcmp(jstr(stored->items[k]), sname) == 0)
                break;
        if (!sname || k == t->n_parts)
            return cfail(ctx, HVQ_E_INPUT, c,
                         "tensor '%s': \"scales\" must be null or a name listed in \"stored\"",
                         tn);
        const hvq_tensor_info *si = &c->src_info[t->parts[k].src];
        if (si->dtype != HVQ_DTYPE_F16 || si->ndim != 1 || (uint64_t)si->shape[0] != p->rows)
            return cfail(ctx, HVQ_E_INPUT, c,
                         "tensor '%s': the scales '%s' must be F16 [%llu]", tn, sname,
                         (unsigned long long)p->rows);
        t->parts[k].stage = 0;
        p->has_scales = 1;
    }
    if ((st = parse_stage(ctx, c, t, 1, hvq_json_get(e, "clusterer"), stored)) != HVQ_OK ||
        (st = parse_stage(ctx, c, t, 2, hvq_json_get(e, "residual"), stored)) != HVQ_OK)
        return st;
    for (size_t k = 0; k < t->n_parts; k++)
        if (t->parts[k].stage == -1)
            return cfail(ctx, HVQ_E_INPUT, c,
                         "tensor '%s': stored tensor '%s' is neither its scales nor a component",
                         tn, jstr(stored->items[k]));
    return HVQ_OK;
}


/* Validates entry e into t. */
static hvq_status parse_entry(hvq_ctx *ctx, hr_state *c, size_t ei, const hvq_json_value *e,
                              hr_tensor *t)
{
    hvq_status st = parse_head(ctx, c, ei, e, t);
    if (st != HVQ_OK)
        return st;
    const hvq_json_value *stored = hvq_json_get(e, "stored");
    if ((st = parse_stored(ctx, c, stored, t)) != HVQ_OK)
        return st;
    return t->pub.compressed ? parse_compressed(ctx, c, e, stored, t)
                             : parse_raw(ctx, c, stored, t);
}

static hvq_status parse_index(hvq_ctx *ctx, hr_state *c)
{
    const char *text = hr_meta(c, "hvq.tensors");
    if (!text)
        return cfail(ctx, HVQ_E_INPUT, c, "the metadata has no \"hvq.tensors\" index");
    hvq_json_error jerr;
    c->tdoc = hvq_json_parse(text, strlen(text), HVQ_JSON_NO_DUPLICATES, &jerr);
    if (!c->tdoc)
        return jerr.status == HVQ_JSON_E_NOMEM
                   ? cfail(ctx, HVQ_E_NOMEM, c, "out of memory")
                   : cfail(ctx, HVQ_E_INPUT, c, "hvq.tensors is not valid JSON: %s",
                           jerr.message);
    const hvq_json_value *root = hvq_json_root(c->tdoc);
    if (root->type != HVQ_JSON_ARRAY)
        return cfail(ctx, HVQ_E_INPUT, c, "hvq.tensors is a JSON %s, expected an array",
                     hvq_json_kind(root));
    c->n = root->count;
    c->t = ctx->host->calloc(ctx, c->n ? c->n : 1, sizeof *c->t);
    if (!c->t)
        return HVQ_E_NOMEM;
    for (size_t i = 0; i < c->n; i++) {
        hvq_status st = parse_entry(ctx, c, i, root->items[i], &c->t[i]);
        if (st != HVQ_OK)
            return st;
    }
    /* Original names are unique. */
    hr_name *names = ctx->host->calloc(ctx, c->n ? c->n : 1, sizeof *names);
    if (!names)
        return HVQ_E_NOMEM;
    for (size_t i = 0; i < c->n; i++)
        names[i].name = c->t[i].pub.name;
    qsort(names, c->n, sizeof *names, cmp_name);
    for (size_t i = 1; i < c->n; i++)
        if (strcmp(names[i].name, names[i - 1].name) == 0) {
            hvq_status st = cfail(ctx, HVQ_E_INPUT, c, "tensor '%s' is listed twice in hvq.tensors",
                                  names[i].name);
            ctx->host->free(names);
            return st;
        }
    ctx->host->free(names);
    for (size_t i = 0; i < c->n_src; i++)
        if (!c->used[i])
            return cfail(ctx, HVQ_E_INPUT, c, "stored tensor '%s' is not listed in hvq.tensors",
                         c->src_info[i].name);
    return HVQ_OK;
}


#define CT_INDEX_EXT ".hvq.index.json"

/* A directory holds a container: its only *.hvq.index.json, else its only
 * *.hvq file. Sets c->open_path. */
static hvq_status resolve_dir(hvq_ctx *ctx, hr_state *c)
{
    DIR *dp = opendir(c->path);
    if (!dp)
        return cfail(ctx, errno == ENOENT || errno == ENOTDIR || errno == EACCES ? HVQ_E_INPUT
                                                                                 : HVQ_E_IO,
                     c, "cannot read the directory: %s", strerror(errno));
    char *index = NULL, *file = NULL;
    size_t n_index = 0, n_file = 0;
    hvq_status st = HVQ_OK;
    struct dirent *de;
    while (st == HVQ_OK && (de = readdir(dp)) != NULL) {
        int is_index = hvq_ends_with(de->d_name, CT_INDEX_EXT);
        if (!is_index && !hvq_ends_with(de->d_name, ".hvq"))
            continue;
        size_t len = strlen(c->path) + strlen(de->d_name) + 2;
        char *full = ctx->host->alloc(ctx, len);
        if (!full) {
            st = HVQ_E_NOMEM;
            break;
        }
        snprintf(full, len, "%s/%s", c->path, de->d_name);
        struct stat sb;
        if (stat(full, &sb) != 0 || !S_ISREG(sb.st_mode)) {
            ctx->host->free(full);
            continue;
        }
        if (is_index) {
            n_index++;
            ctx->host->free(index);
            index = full;
        } else {
            n_file++;
            ctx->host->free(file);
            file = full;
        }
    }
    closedir(dp);
    if (st == HVQ_OK) {
        if (n_index == 1) {
            c->open_path = index;
            index = NULL;
        } else if (n_index > 1) {
            st = cfail(ctx, HVQ_E_INPUT, c,
                       "the directory holds %zu *" CT_INDEX_EXT " files; open one of them",
                       n_index);
        } else if (n_file == 1) {
            c->open_path = file;
            file = NULL;
        } else if (n_file > 1) {
            st = cfail(ctx, HVQ_E_INPUT, c,
                       "the directory holds %zu *.hvq files and no *" CT_INDEX_EXT
                       "; open one of them", n_file);
        } else {
            st = cfail(ctx, HVQ_E_INPUT, c,
                       "the directory holds no hvq container (*.hvq or *" CT_INDEX_EXT ")");
        }
    }
    ctx->host->free(index);
    ctx->host->free(file);
    return st;
}

/* Sharded: the number of shard files the index names and their bytes plus
 * the index's (the index is valid: the source has read it). */
static hvq_status shard_sizes(hvq_ctx *ctx, hr_state *c, uint64_t index_size)
{
    char *dirpart = ctx->host->strdup(ctx, c->open_path);
    if (!dirpart)
        return HVQ_E_NOMEM;
    char *slash = strrchr(dirpart, '/');
    if (slash)
        slash[1] = '\0';
    else
        dirpart[0] = '\0';
    size_t len = 0;
    char *text = NULL;
    int odd;
    FILE *f = hvq_fopen_input(ctx, c->open_path, &odd);
    hvq_status st = HVQ_OK;
    if (!f || !(text = ctx->host->alloc(ctx, (size_t)index_size + 1)) ||
        (len = fread(text, 1, (size_t)index_size, f)) != index_size)
        st = text || !f ? cfail(ctx, HVQ_E_IO, c, "%s: cannot read the index", c->open_path)
                        : HVQ_E_NOMEM;
    if (f)
        fclose(f);
    hvq_json_doc *doc = NULL;
    if (st == HVQ_OK && !(doc = hvq_json_parse(text, len, 0, NULL)))
        st = cfail(ctx, HVQ_E_INPUT, c, "%s: the index changed while it was read",
                   c->open_path);
    const hvq_json_value *wm = doc ? hvq_json_get(hvq_json_root(doc), "weight_map") : NULL;
    size_t n = wm ? hvq_json_count(wm) : 0;
    const char **names = st == HVQ_OK ? ctx->host->calloc(ctx, n ? n : 1, sizeof *names) : NULL;
    if (st == HVQ_OK && !names)
        st = HVQ_E_NOMEM;
    size_t u = 0;
    for (size_t i = 0; st == HVQ_OK && i < n; i++) {
        const char *sh = jstr(wm->members[i].value);
        size_t k;
        for (k = 0; sh && k < u && strcmp(names[k], sh) != 0; k++)
            ;
        if (!sh || k < u)
            continue;
        names[u++] = sh;
        size_t plen = strlen(dirpart) + strlen(sh) + 1;
        char *full = ctx->host->alloc(ctx, plen);
        struct stat sb;
        if (!full) {
            st = HVQ_E_NOMEM;
            break;
        }
        snprintf(full, plen, "%s%s", dirpart, sh);
        if (stat(full, &sb) != 0)
            st = cfail(ctx, HVQ_E_IO, c, "%s: %s", full, strerror(errno));
        else
            c->file_size += (uint64_t)sb.st_size;
        ctx->host->free(full);
    }
    c->n_shards = u;
    ctx->host->free(names);
    hvq_json_free(doc);
    ctx->host->free(text);
    ctx->host->free(dirpart);
    return st;
}

/* "hvq.shard": "K of N" of the first shard, checked against how the
 * container was opened. */
static hvq_status check_shard_key(hvq_ctx *ctx, hr_state *c)
{
    const char *key = hr_meta(c, "hvq.shard");
    if (!key)
        return HVQ_OK; /* one file, or shards written by another tool */
    unsigned long long k = 0, n = 0;
    char tail;
    if (sscanf(key, "%llu of %llu%c", &k, &n, &tail) != 2 || k < 1 || k > n)
        return cfail(ctx, HVQ_E_INPUT, c, "bad \"hvq.shard\" value '%s'", key);
    if (!c->sharded)
        return cfail(ctx, HVQ_E_INPUT, c,
                     "this is shard %llu of %llu of a sharded container: open its "
                     "NAME" CT_INDEX_EXT " or its directory", k, n);
    if (k != 1 || n != c->n_shards)
        return cfail(ctx, HVQ_E_INPUT, c,
                     "the first shard says it is shard %llu of %llu, but the index names %zu "
                     "shard files", k, n, c->n_shards);
    return HVQ_OK;
}

/* Each compressed tensor's clusterer components, checked by its plugin's
 * cluster_check (when installed and offered) from the index alone, before
 * anyone allocates a decoded tensor: a file whose few bytes claim a huge
 * tensor is bad input here, not an allocation failing later. */
/* The file or directory: which file to open, and the bytes of all. */
static hvq_status hr_locate(hvq_ctx *ctx, hr_state *c)
{
    struct stat sb;
    if (stat(c->path, &sb) != 0)
        return cfail(ctx, errno == ENOENT || errno == ENOTDIR ? HVQ_E_INPUT : HVQ_E_IO, c,
                     "cannot open: %s", strerror(errno));
    hvq_status st;
    if (S_ISDIR(sb.st_mode)) {
        if ((st = resolve_dir(ctx, c)) != HVQ_OK)
            return st;
        if (stat(c->open_path, &sb) != 0)
            return cfail(ctx, HVQ_E_IO, c, "%s: %s", c->open_path, strerror(errno));
    } else if (!S_ISREG(sb.st_mode)) {
        return cfail(ctx, HVQ_E_INPUT, c,
                     "not a regular file or directory (an hvq container is a .hvq file, or "
                     "a sharded container's NAME" CT_INDEX_EXT " or its directory)");
    } else if (!(c->open_path = ctx->host->strdup(ctx, c->path))) {
        return HVQ_E_NOMEM;
    }
    c->sharded = hvq_ends_with(c->open_path, ".index.json");
    c->file_size = (uint64_t)sb.st_size;
    c->n_shards = 1;
    return HVQ_OK;
}

/* "format" and "hvq.format_version". */
static hvq_status check_version(hvq_ctx *ctx, const hr_state *c)
{
    const char *fmt = hr_meta(c, "format");
    if (!fmt || strcmp(fmt, "hvq") != 0)
        return cfail(ctx, HVQ_E_INPUT, c,
                     "not an hvq container: a safetensors file whose metadata %s%s%s (an hvq "
                     "container has \"format\": \"hvq\")",
                     fmt ? "has \"format\": \"" : "has no \"format\" key", fmt ? fmt : "",
                     fmt ? "\"" : "");
    const char *ver = hr_meta(c, "hvq.format_version");
    if (!ver)
        return cfail(ctx, HVQ_E_INPUT, c, "the metadata has no \"hvq.format_version\"");
    char *end;
    errno = 0;
    unsigned long long v = strtoull(ver, &end, 10);
    if (ver[0] < '0' || ver[0] > '9' || *end || errno || v == 0)
        return cfail(ctx, HVQ_E_INPUT, c, "bad container format version '%s'", ver);
    if (v > HR_FORMAT_VERSION)
        return cfail(ctx, HVQ_E_INPUT, c,
                     "container format version %llu is newer than this hvqconv supports (%d)", v,
                     HR_FORMAT_VERSION);
    if (v < HR_FORMAT_VERSION) /* no version before 1 exists */
        return cfail(ctx, HVQ_E_INPUT, c, "unknown container format version %llu", v);
    return HVQ_OK;
}

static hvq_status open_checked(hvq_ctx *ctx, hr_state *c)
{
    const hvq_host *H = ctx->host;
    hvq_status st = hr_locate(ctx, c);
    if (st != HVQ_OK)
        return st;
    if (!HVQ_HOST_HAS(H, model_open_as))
        return cfail(ctx, HVQ_E_UNSUPPORTED, c, "reading a container needs a newer hvqconv");
    if (!(c->model = H->model_open_as(ctx, c->open_path, "safetensors")))
        return H->status(ctx) != HVQ_OK ? H->status(ctx) : HVQ_E_IO;
    if (c->sharded && (st = shard_sizes(ctx, c, c->file_size)) != HVQ_OK)
        return st;
    H->model_meta(c->model, &c->meta, &c->n_meta);
    if ((st = check_version(ctx, c)) != HVQ_OK || (st = check_shard_key(ctx, c)) != HVQ_OK)
        return st;

    c->n_src = H->model_count(c->model);
    c->src_info = H->calloc(ctx, c->n_src ? c->n_src : 1, sizeof *c->src_info);
    c->by_name = H->calloc(ctx, c->n_src ? c->n_src : 1, sizeof *c->by_name);
    c->used = H->calloc(ctx, c->n_src ? c->n_src : 1, 1);
    if (!c->src_info || !c->by_name || !c->used)
        return HVQ_E_NOMEM;
    for (size_t i = 0; i < c->n_src; i++) {
        if ((st = H->model_info(c->model, i, &c->src_info[i])) != HVQ_OK)
            return cfail(ctx, st, c, "cannot read the description of stored tensor %zu", i);
        c->by_name[i].name = c->src_info[i].name;
        c->by_name[i].idx = i;
    }
    qsort(c->by_name, c->n_src, sizeof *c->by_name, cmp_name);
    if ((st = parse_source_meta(ctx, c)) != HVQ_OK)
        return st;
    return parse_index(ctx, c);
}

static void hr_close(hvq_ctx *ctx, void *state)
{
    const hvq_host *H = ctx->host;
    hr_state *c = state;
    if (!c)
        return;
    if (c->model)
        H->model_close(ctx, c->model);
    for (size_t i = 0; c->t && i < c->n; i++) {
        H->free(c->t[i].parts);
        H->free(c->t[i].attrs[0]);
        H->free(c->t[i].attrs[1]);
    }
    H->free(c->t);
    H->free(c->pubs);
    hvq_json_free(c->tdoc);
    hvq_json_free(c->sdoc);
    H->free(c->smeta);
    H->free(c->src_info);
    H->free(c->by_name);
    H->free(c->used);
    H->free(c->open_path);
    H->free(c->path);
    H->free(c);
}

static hvq_status hr_open(hvq_ctx *ctx, const char *path, void **state)
{
    const hvq_host *H = ctx->host;
    hr_state *c = H->calloc(ctx, 1, sizeof *c);
    *state = c; /* the host calls hr_close even when this fails */
    if (!c || !(c->path = H->strdup(ctx, path)))
        return HVQ_E_NOMEM;
    hvq_status st = open_checked(ctx, c);
    if (st != HVQ_OK)
        return st;
    if (!(c->pubs = H->calloc(ctx, c->n ? c->n : 1, sizeof *c->pubs)))
        return HVQ_E_NOMEM;
    for (size_t i = 0; i < c->n; i++)
        c->pubs[i] = c->t[i].pub;
    c->view.tensors = c->pubs;
    c->view.n = c->n;
    c->view.meta = c->meta;
    c->view.n_meta = c->n_meta;
    c->view.source_meta = c->smeta;
    c->view.n_source_meta = c->n_smeta;
    c->view.file_size = c->file_size;
    return HVQ_OK;
}

static const hvq_container_view *hr_view(void *state) { return &((hr_state *)state)->view; }

static hvq_status hr_part_of(hvq_ctx *ctx, void *state, size_t i, size_t k, int read,
                             hvq_tensor *out, int *role, const char **component)
{
    hr_state *c = state;
    if (i >= c->n || k >= c->t[i].n_parts)
        return ctx->host->error(ctx, HVQ_E_INTERNAL, "%s: no stored tensor %zu of tensor %zu",
                                c->path, k, i);
    const hr_tensor *t = &c->t[i];
    const hr_part *p = &t->parts[k];
    const hvq_tensor_info *si = &c->src_info[p->src];
    *role = p->stage;
    *component = p->stage == HVQ_PART_DATA ? NULL : p->key;
    memset(out, 0, sizeof *out);
    if (read) {
        hvq_status st = ctx->host->model_find(ctx, c->model, si->name, out);
        if (st != HVQ_OK)
            return st == HVQ_E_NOTFOUND ? cfail(ctx, HVQ_E_INTERNAL, c, "stored tensor '%s' is "
                                                "gone", si->name)
                                        : st;
    }
    out->info = *si;
    if (!t->pub.compressed) { /* as the original: name, dtype, shape */
        out->info.name = t->pub.name;
        out->info.ndim = t->pub.ndim;
        memcpy(out->info.shape, t->pub.shape, sizeof out->info.shape);
        if (!st_type(t->pub.dtype_name, NULL)) {
            out->info.dtype = HVQ_DTYPE_OPAQUE;
            out->info.dtype_name = t->pub.dtype_name;
        }
    }
    return HVQ_OK;
}

/* As a plain source: the stored tensors. */
static size_t hr_count(void *state) { return ((hr_state *)state)->n_src; }

static hvq_status hr_info(void *state, size_t i, hvq_tensor_info *info)
{
    hr_state *c = state;
    if (i >= c->n_src)
        return HVQ_E_NOTFOUND;
    *info = c->src_info[i];
    return HVQ_OK;
}

static hvq_status hr_read(hvq_ctx *ctx, void *state, size_t i, hvq_tensor *t)
{
    hr_state *c = state;
    if (i >= c->n_src)
        return ctx->host->error(ctx, HVQ_E_INTERNAL, "%s: no stored tensor %zu", c->path, i);
    return ctx->host->model_find(ctx, c->model, c->src_info[i].name, t);
}

static void hr_meta_of(void *state, const hvq_meta **meta, size_t *n)
{
    *meta = ((hr_state *)state)->meta;
    *n = ((hr_state *)state)->n_meta;
}

/* hvqconv opens containers by name, never by probing. */
static int hr_probe(const char *path, const unsigned char *head, size_t head_len)
{
    (void)path;
    (void)head;
    (void)head_len;
    return 0;
}

static const hvq_plugin hr_plugin = {
    HVQ_PLUGIN_HEADER,
    .kinds = HVQ_KIND_SOURCE,
    .name = "hvq",
    .version = "1.0.0",
    .summary = "reads hvq containers (.hvq, sharded with NAME.hvq.index.json; docs/FORMAT.md) "
               "for decode, inspect, verify and eval",
    .license = "MIT",
    .probe = hr_probe,
    .source_open = hr_open,
    .source_count = hr_count,
    .source_info = hr_info,
    .source_read = hr_read,
    .source_meta = hr_meta_of,
    .source_close = hr_close,
    .container_view = hr_view,
    .container_part = hr_part_of,
};

HVQ_REGISTER_PLUGIN(hr_plugin)
