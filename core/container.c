/* Reading hvq containers: validation of the index, checksums, and the
 * reconstruction of compressed tensors through their plugins. The byte
 * layout is documented in docs/FORMAT.md. A container is one .hvq file or,
 * sharded, NAME-0000k-of-0000N.hvq files with NAME.hvq.index.json (opened
 * through the index or its directory); the safetensors source reads the
 * shards as one set of stored tensors and takes the metadata from the
 * first. */
#include "config.h"

#include "container.h"
#include "file.h"
#include "crc32.h"
#include "dtype.h"
#include "finite.h"
#include "json.h"
#include "parallel.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* One stored (safetensors) tensor of an original tensor. */
typedef struct ct_part {
    size_t src;           /* index in the safetensors source */
    int stage;            /* 0: the raw tensor or the scales, 1: clusterer,
                             2: residual */
    const char *key;      /* component key (stages 1 and 2) */
} ct_part;

typedef struct ct_tensor {
    hvq_container_tensor pub;
    ct_part *parts;       /* in "stored" order */
    size_t n_parts;
    hvq_meta *attrs[2];   /* clusterer, residual */
    int verified;         /* 0 not yet, 1 OK, -1 mismatch */
    uint32_t computed;
} ct_tensor;

typedef struct ct_name {
    const char *name;
    size_t idx;
} ct_name;

struct hvq_container {
    char *path;           /* as given (error messages) */
    char *open_path;      /* the file opened: path, or a directory's index */
    int sharded;          /* opened through an index */
    size_t n_shards;
    const hvq_registry *reg;
    const hvq_loaded_plugin *src;
    void *sstate;
    uint64_t file_size;
    size_t n_src;
    hvq_tensor_info *src_info;
    ct_name *by_name;     /* the stored tensors sorted by name */
    unsigned char *used;  /* per stored tensor: listed by an entry */
    const hvq_meta *meta; /* the container's __metadata__ */
    size_t n_meta;
    hvq_json_doc *tdoc;   /* hvq.tensors */
    hvq_json_doc *sdoc;   /* hvq.source_metadata */
    hvq_meta *smeta;
    size_t n_smeta;
    ct_tensor *t;
    size_t n;
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
    return strcmp(((const ct_name *)a)->name, ((const ct_name *)b)->name);
}

/* Index of the stored tensor called name, or (size_t)-1. */
static size_t find_stored(const hvq_container *c, const char *name)
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

const char *hvq_container_meta(const hvq_container *c, const char *key)
{
    for (size_t i = 0; i < c->n_meta; i++)
        if (strcmp(c->meta[i].key, key) == 0)
            return c->meta[i].value;
    return NULL;
}

/* A JSON string without NUL bytes, or NULL. */
static const char *jstr(const hvq_json_value *v)
{
    size_t len;
    const char *s = hvq_json_string(v, &len);
    return s && strlen(s) == len ? s : NULL;
}

/* Parses hvq.source_metadata: an object of strings. */
static hvq_status parse_source_meta(hvq_ctx *ctx, hvq_container *c)
{
    const char *text = hvq_container_meta(c, "hvq.source_metadata");
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
    c->smeta = hvq_calloc(ctx, c->n_smeta ? c->n_smeta : 1, sizeof *c->smeta);
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
static hvq_status claim(hvq_ctx *ctx, hvq_container *c, const char *tname, const char *name,
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
static hvq_status parse_stage(hvq_ctx *ctx, hvq_container *c, ct_tensor *t, int which,
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
    t->attrs[which - 1] = hvq_calloc(ctx, attrs->count ? attrs->count : 1, sizeof(hvq_meta));
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
        if (hvq_dtype_size(dt) == 0)
            return cfail(ctx, HVQ_E_INPUT, c,
                         "tensor '%s': %s component '%s' has dtype %s, which components may "
                         "not use", tn, sname, m->key, c->src_info[t->parts[k].src].dtype_name);
        t->parts[k].stage = which;
        t->parts[k].key = m->key;
    }
    return HVQ_OK;
}

/* Validates entry e into t. */
static hvq_status parse_entry(hvq_ctx *ctx, hvq_container *c, size_t ei, const hvq_json_value *e,
                              ct_tensor *t)
{
    hvq_container_tensor *p = &t->pub;
    hvq_status st;
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

    const hvq_json_value *stored = hvq_json_get(e, "stored");
    if (!stored || stored->type != HVQ_JSON_ARRAY)
        return cfail(ctx, HVQ_E_INPUT, c, "tensor '%s': \"stored\" must be an array of names", tn);
    t->n_parts = stored->count;
    t->parts = hvq_calloc(ctx, t->n_parts ? t->n_parts : 1, sizeof *t->parts);
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

    if (!p->compressed) {
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

    /* "hvq" */
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

static hvq_status parse_index(hvq_ctx *ctx, hvq_container *c)
{
    const char *text = hvq_container_meta(c, "hvq.tensors");
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
    c->t = hvq_calloc(ctx, c->n ? c->n : 1, sizeof *c->t);
    if (!c->t)
        return HVQ_E_NOMEM;
    for (size_t i = 0; i < c->n; i++) {
        hvq_status st = parse_entry(ctx, c, i, root->items[i], &c->t[i]);
        if (st != HVQ_OK)
            return st;
    }
    /* Original names are unique. */
    ct_name *names = hvq_calloc(ctx, c->n ? c->n : 1, sizeof *names);
    if (!names)
        return HVQ_E_NOMEM;
    for (size_t i = 0; i < c->n; i++)
        names[i].name = c->t[i].pub.name;
    qsort(names, c->n, sizeof *names, cmp_name);
    for (size_t i = 1; i < c->n; i++)
        if (strcmp(names[i].name, names[i - 1].name) == 0) {
            hvq_status st = cfail(ctx, HVQ_E_INPUT, c, "tensor '%s' is listed twice in hvq.tensors",
                                  names[i].name);
            free(names);
            return st;
        }
    free(names);
    for (size_t i = 0; i < c->n_src; i++)
        if (!c->used[i])
            return cfail(ctx, HVQ_E_INPUT, c, "stored tensor '%s' is not listed in hvq.tensors",
                         c->src_info[i].name);
    return HVQ_OK;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

#define CT_INDEX_EXT ".hvq.index.json"

/* A directory holds a container: its only *.hvq.index.json, else its only
 * *.hvq file. Sets c->open_path. */
static hvq_status resolve_dir(hvq_ctx *ctx, hvq_container *c)
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
        int is_index = ends_with(de->d_name, CT_INDEX_EXT);
        if (!is_index && !ends_with(de->d_name, ".hvq"))
            continue;
        size_t len = strlen(c->path) + strlen(de->d_name) + 2;
        char *full = hvq_alloc(ctx, len);
        if (!full) {
            st = HVQ_E_NOMEM;
            break;
        }
        snprintf(full, len, "%s/%s", c->path, de->d_name);
        struct stat sb;
        if (stat(full, &sb) != 0 || !S_ISREG(sb.st_mode)) {
            free(full);
            continue;
        }
        if (is_index) {
            n_index++;
            free(index);
            index = full;
        } else {
            n_file++;
            free(file);
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
    free(index);
    free(file);
    return st;
}

/* Sharded: the number of shard files the index names and their bytes plus
 * the index's (the index is valid: the source has read it). */
static hvq_status shard_sizes(hvq_ctx *ctx, hvq_container *c, uint64_t index_size)
{
    char *dirpart = hvq_strdup(ctx, c->open_path);
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
    if (!f || !(text = hvq_alloc(ctx, (size_t)index_size + 1)) ||
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
    const char **names = st == HVQ_OK ? hvq_calloc(ctx, n ? n : 1, sizeof *names) : NULL;
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
        char *full = hvq_alloc(ctx, plen);
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
        free(full);
    }
    c->n_shards = u;
    free(names);
    hvq_json_free(doc);
    free(text);
    free(dirpart);
    return st;
}

/* "hvq.shard": "K of N" of the first shard, checked against how the
 * container was opened. */
static hvq_status check_shard_key(hvq_ctx *ctx, hvq_container *c)
{
    const char *key = hvq_container_meta(c, "hvq.shard");
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
static hvq_status check_layouts(hvq_ctx *ctx, hvq_container *c)
{
    for (size_t i = 0; i < c->n; i++) {
        const ct_tensor *t = &c->t[i];
        const hvq_container_tensor *p = &t->pub;
        const hvq_loaded_plugin *pl =
            p->compressed && c->reg
                ? hvq_registry_find(c->reg, HVQ_KIND_CLUSTERER, p->clusterer.plugin)
                : NULL;
        if (!pl || !pl->desc.cluster_check)
            continue;
        hvq_encoded enc;
        hvq_encoded_init(&enc);
        hvq_status st = HVQ_OK;
        for (size_t a = 0; st == HVQ_OK && a < p->clusterer.n_attrs; a++)
            st = ctx->host->enc_attr(ctx, &enc, p->clusterer.attrs[a].key,
                                     p->clusterer.attrs[a].value);
        for (size_t k = 0; st == HVQ_OK && k < t->n_parts; k++) {
            if (t->parts[k].stage != 1)
                continue;
            const hvq_tensor_info *si = &c->src_info[t->parts[k].src];
            st = hvq_encoded_add_layout(ctx, &enc, t->parts[k].key, si->dtype, si->ndim,
                                        si->shape);
            if (st == HVQ_OK && enc.components[enc.n_components - 1].nbytes != si->nbytes)
                st = cfail(ctx, HVQ_E_INPUT, c, "tensor '%s': component '%s' has a bad size",
                           p->name, t->parts[k].key);
        }
        if (st == HVQ_OK) {
            st = pl->desc.cluster_check(ctx, &enc, p->rows, p->cols);
            if (st != HVQ_OK)
                hvq_error_prefix(ctx, "%s: tensor '%s': clusterer '%s'", c->path, p->name,
                                 pl->desc.name);
        }
        hvq_encoded_clear(&enc);
        if (st != HVQ_OK)
            return st;
    }
    return HVQ_OK;
}

static hvq_status open_checked(hvq_ctx *ctx, hvq_container *c)
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
    } else if (!(c->open_path = hvq_strdup(ctx, c->path))) {
        return HVQ_E_NOMEM;
    }
    c->sharded = ends_with(c->open_path, ".index.json");
    c->file_size = (uint64_t)sb.st_size;
    c->n_shards = 1;
    c->src = hvq_registry_find(c->reg, HVQ_KIND_SOURCE, "safetensors");
    if (!c->src)
        return cfail(ctx, HVQ_E_NOTFOUND, c,
                     "reading a container needs the safetensors plugin, which is not loaded");
    st = c->src->desc.source_open(ctx, c->open_path, &c->sstate);
    if (st != HVQ_OK) {
        if (!strstr(hvq_ctx_error(ctx), c->path))
            hvq_error_prefix(ctx, "%s", c->path);
        return st;
    }
    if (c->sharded && (st = shard_sizes(ctx, c, c->file_size)) != HVQ_OK)
        return st;
    if (c->src->desc.source_meta)
        c->src->desc.source_meta(c->sstate, &c->meta, &c->n_meta);
    const char *fmt = hvq_container_meta(c, "format");
    if (!fmt || strcmp(fmt, "hvq") != 0)
        return cfail(ctx, HVQ_E_INPUT, c,
                     "not an hvq container: a safetensors file whose metadata %s%s%s (an hvq "
                     "container has \"format\": \"hvq\")",
                     fmt ? "has \"format\": \"" : "has no \"format\" key", fmt ? fmt : "",
                     fmt ? "\"" : "");
    const char *ver = hvq_container_meta(c, "hvq.format_version");
    if (!ver)
        return cfail(ctx, HVQ_E_INPUT, c, "the metadata has no \"hvq.format_version\"");
    char *end;
    errno = 0;
    unsigned long long v = strtoull(ver, &end, 10);
    if (ver[0] < '0' || ver[0] > '9' || *end || errno || v == 0)
        return cfail(ctx, HVQ_E_INPUT, c, "bad container format version '%s'", ver);
    if (v > HVQ_CONTAINER_FORMAT_VERSION)
        return cfail(ctx, HVQ_E_INPUT, c,
                     "container format version %llu is newer than this hvqconv supports (%d)", v,
                     HVQ_CONTAINER_FORMAT_VERSION);
    if (v < HVQ_CONTAINER_FORMAT_VERSION) /* no version before 1 exists */
        return cfail(ctx, HVQ_E_INPUT, c, "unknown container format version %llu", v);
    if ((st = check_shard_key(ctx, c)) != HVQ_OK)
        return st;

    c->n_src = c->src->desc.source_count(c->sstate);
    c->src_info = hvq_calloc(ctx, c->n_src ? c->n_src : 1, sizeof *c->src_info);
    c->by_name = hvq_calloc(ctx, c->n_src ? c->n_src : 1, sizeof *c->by_name);
    c->used = hvq_calloc(ctx, c->n_src ? c->n_src : 1, 1);
    if (!c->src_info || !c->by_name || !c->used)
        return HVQ_E_NOMEM;
    for (size_t i = 0; i < c->n_src; i++) {
        if ((st = c->src->desc.source_info(c->sstate, i, &c->src_info[i])) != HVQ_OK)
            return cfail(ctx, st, c, "cannot read the description of stored tensor %zu", i);
        if ((st = hvq_tensor_check(ctx, c->path, c->src->desc.name, &c->src_info[i], NULL)) !=
            HVQ_OK)
            return st;
        c->by_name[i].name = c->src_info[i].name;
        c->by_name[i].idx = i;
    }
    qsort(c->by_name, c->n_src, sizeof *c->by_name, cmp_name);
    if ((st = parse_source_meta(ctx, c)) != HVQ_OK)
        return st;
    if ((st = parse_index(ctx, c)) != HVQ_OK)
        return st;
    return check_layouts(ctx, c);
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
    if (c->src)
        c->src->desc.source_close(ctx, c->sstate);
    for (size_t i = 0; c->t && i < c->n; i++) {
        free(c->t[i].parts);
        free(c->t[i].attrs[0]);
        free(c->t[i].attrs[1]);
    }
    free(c->t);
    hvq_json_free(c->tdoc);
    hvq_json_free(c->sdoc);
    free(c->smeta);
    free(c->src_info);
    free(c->by_name);
    free(c->used);
    free(c->open_path);
    free(c->path);
    free(c);
}

const char *hvq_container_path(const hvq_container *c) { return c->path; }
uint64_t hvq_container_file_size(const hvq_container *c) { return c->file_size; }
size_t hvq_container_count(const hvq_container *c) { return c->n; }

const hvq_container_tensor *hvq_container_info(const hvq_container *c, size_t i)
{
    return i < c->n ? &c->t[i].pub : NULL;
}

void hvq_container_source_meta(const hvq_container *c, const hvq_meta **meta, size_t *n)
{
    *meta = c->smeta;
    *n = c->n_smeta;
}

/* Stored tensor k of t. */
static hvq_status read_part(hvq_ctx *ctx, hvq_container *c, const ct_tensor *t, size_t k,
                            hvq_tensor *out)
{
    size_t i = t->parts[k].src;
    hvq_status st = c->src->desc.source_read(ctx, c->sstate, i, out);
    if (st == HVQ_OK)
        st = hvq_tensor_check(ctx, c->path, c->src->desc.name, &c->src_info[i], out);
    if (st != HVQ_OK && !strstr(hvq_ctx_error(ctx), c->path))
        hvq_error_prefix(ctx, "%s", c->path);
    return st;
}

/* CRC-32 in parallel: the CRC of a concatenation follows from the CRCs of
 * its pieces, crc(A B) = crc(A) * x^(8 |B|) + crc(B) modulo the CRC
 * polynomial (the initial and final inversions cancel out), so a large
 * stored tensor is cut into fixed segments whose CRCs the threads compute
 * and which are then combined in order: the same value as one pass. */
#define CRC_POLY 0xedb88320u
#define CRC_SEGMENT ((uint64_t)1 << 21)

/* a * b modulo the polynomial, both reflected (bit 31 is x^0). */
static uint32_t crc_gf_mul(uint32_t a, uint32_t b)
{
    uint32_t p = 0;
    for (int i = 0; i < 32; i++) {
        if (a & 0x80000000u)
            p ^= b;
        a <<= 1;
        b = (b & 1u) ? (b >> 1) ^ CRC_POLY : b >> 1;
    }
    return p;
}

/* x^(8 n) modulo the polynomial. */
static uint32_t crc_x8n(uint64_t n)
{
    uint32_t r = 0x80000000u, sq = 0x00800000u; /* x^0, x^8 */
    for (; n; n >>= 1) {
        if (n & 1)
            r = crc_gf_mul(r, sq);
        sq = crc_gf_mul(sq, sq);
    }
    return r;
}

typedef struct crc_job {
    const unsigned char *data;
    uint64_t n;
    uint32_t *seg;
} crc_job;

static void crc_segment(void *arg, uint64_t chunk, uint64_t begin, uint64_t end)
{
    crc_job *j = arg;
    j->seg[chunk] = hvq_crc32(0, j->data + begin, (size_t)(end - begin));
}

/* crc continued over n bytes of data. */
static uint32_t crc_parallel(hvq_ctx *ctx, uint32_t crc, const void *data, uint64_t n)
{
    uint64_t nseg = hvq_parallel_chunks(n, CRC_SEGMENT);
    uint32_t seg_local[64], *seg = nseg <= 64 ? seg_local : malloc((size_t)nseg * sizeof *seg);
    if (nseg <= 1 || hvq_ctx_options(ctx)->threads <= 1 || !seg) {
        if (seg != seg_local)
            free(seg);
        return hvq_crc32(crc, data, (size_t)n);
    }
    crc_job j = {data, n, seg};
    hvq_parallel_for(ctx, n, CRC_SEGMENT, crc_segment, &j);
    uint32_t x_seg = crc_x8n(CRC_SEGMENT);
    for (uint64_t s = 0; s < nseg; s++) {
        uint64_t len = s + 1 < nseg ? CRC_SEGMENT : n - s * CRC_SEGMENT;
        crc = crc_gf_mul(len == CRC_SEGMENT ? x_seg : crc_x8n(len), crc) ^ seg[s];
    }
    if (seg != seg_local)
        free(seg);
    return crc;
}

hvq_status hvq_container_verify(hvq_ctx *ctx, hvq_container *c, size_t i)
{
    if (i >= c->n)
        return hvq_error(ctx, HVQ_E_INTERNAL, "%s: tensor index %zu out of range", c->path, i);
    ct_tensor *t = &c->t[i];
    if (t->verified == 0) {
        uint32_t crc = 0;
        for (size_t k = 0; k < t->n_parts; k++) {
            hvq_tensor part;
            hvq_status st = read_part(ctx, c, t, k, &part);
            if (st != HVQ_OK)
                return st;
            crc = crc_parallel(ctx, crc, part.data, part.info.nbytes);
        }
        t->computed = crc;
        t->verified = crc == t->pub.crc32 ? 1 : -1;
    }
    if (t->verified < 0)
        return cfail(ctx, HVQ_E_INPUT, c,
                     "tensor '%s': checksum mismatch (stored 0x%08x, computed 0x%08x)",
                     t->pub.name, (unsigned)t->pub.crc32, (unsigned)t->computed);
    return HVQ_OK;
}

hvq_status hvq_container_read_raw(hvq_ctx *ctx, hvq_container *c, size_t i, hvq_tensor *out)
{
    hvq_status st = hvq_container_verify(ctx, c, i);
    if (st != HVQ_OK)
        return st;
    const ct_tensor *t = &c->t[i];
    if (t->pub.compressed)
        return hvq_error(ctx, HVQ_E_INTERNAL, "%s: tensor '%s' is compressed, not raw", c->path,
                         t->pub.name);
    hvq_tensor part;
    if ((st = read_part(ctx, c, t, 0, &part)) != HVQ_OK)
        return st;
    memset(out, 0, sizeof *out);
    out->info.name = t->pub.name;
    out->info.ndim = t->pub.ndim;
    memcpy(out->info.shape, t->pub.shape, sizeof out->info.shape);
    out->info.nbytes = part.info.nbytes;
    if (st_type(t->pub.dtype_name, NULL)) {
        out->info.dtype = part.info.dtype;
        out->info.dtype_name = part.info.dtype_name;
    } else {
        out->info.dtype = HVQ_DTYPE_OPAQUE;
        out->info.dtype_name = t->pub.dtype_name;
    }
    out->data = part.data;
    return HVQ_OK;
}

/* The hvq_encoded of one stage: copies of the stored components. */
static hvq_status build_enc(hvq_ctx *ctx, hvq_container *c, const ct_tensor *t, int which,
                            hvq_encoded *enc)
{
    const hvq_host *H = ctx->host;
    const hvq_container_stage *s = which == 1 ? &t->pub.clusterer : &t->pub.residual;
    const hvq_meta *attrs = s->attrs;
    for (size_t a = 0; a < s->n_attrs; a++) {
        hvq_status st = H->enc_attr(ctx, enc, attrs[a].key, attrs[a].value);
        if (st != HVQ_OK)
            return st;
    }
    /* Components in "stored" order (the encoder's order for files hvqconv
     * wrote); decoders look them up by name. */
    for (size_t k = 0; k < t->n_parts; k++) {
        if (t->parts[k].stage != which)
            continue;
        hvq_tensor part;
        hvq_status st = read_part(ctx, c, t, k, &part);
        if (st != HVQ_OK)
            return st;
        hvq_component *comp = H->enc_add(ctx, enc, t->parts[k].key, part.info.dtype,
                                         part.info.ndim, part.info.shape, 0);
        if (!comp)
            return hvq_ctx_status(ctx) ? hvq_ctx_status(ctx) : HVQ_E_NOMEM;
        if (comp->nbytes != part.info.nbytes)
            return cfail(ctx, HVQ_E_INPUT, c, "tensor '%s': component '%s' has a bad size",
                         t->pub.name, t->parts[k].key);
        if (part.info.nbytes)
            memcpy(comp->data, part.data, (size_t)part.info.nbytes);
    }
    return HVQ_OK;
}

static const hvq_loaded_plugin *stage_plugin(hvq_ctx *ctx, hvq_container *c, const ct_tensor *t,
                                             int which)
{
    const hvq_container_stage *s = which == 1 ? &t->pub.clusterer : &t->pub.residual;
    uint32_t kind = which == 1 ? HVQ_KIND_CLUSTERER : HVQ_KIND_RESIDUAL;
    const char *what = which == 1 ? "clusterer" : "residual";
    const hvq_loaded_plugin *pl = c->reg ? hvq_registry_find(c->reg, kind, s->plugin) : NULL;
    if (!pl) {
        cfail(ctx, HVQ_E_NOTFOUND, c,
              "tensor '%s' needs the %s plugin '%s' (version %s), which is not installed (see "
              "hvqconv list-plugins; --plugin-dir adds a directory)",
              t->pub.name, what, s->plugin, s->version);
        return NULL;
    }
    /* Same major version expected; warn once otherwise. */
    size_t a = strcspn(s->version, "."), b = strcspn(pl->desc.version, ".");
    if (!c->warned_version && (a != b || strncmp(s->version, pl->desc.version, a) != 0)) {
        c->warned_version = 1;
        hvq_log(ctx, HVQ_LOG_WARN,
                "%s: tensor '%s' was written by %s plugin '%s' %s; the installed one is %s",
                c->path, t->pub.name, what, s->plugin, s->version, pl->desc.version);
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

/* A tensor decoded to float32: every value must be finite (a NaN or
 * infinite scale, min, codebook entry or sparse value is a corrupt file,
 * never written by hvqconv). */
hvq_status hvq_container_read_decoded(hvq_ctx *ctx, hvq_container *c, size_t i, float *out)
{
    hvq_status st = decode_tensor(ctx, c, i, out);
    if (st != HVQ_OK)
        return st;
    const hvq_container_tensor *p = &c->t[i].pub;
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
    const ct_tensor *t = &c->t[i];
    const hvq_container_tensor *p = &t->pub;
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

    const hvq_loaded_plugin *cp = stage_plugin(ctx, c, t, 1);
    const hvq_loaded_plugin *rp = cp ? stage_plugin(ctx, c, t, 2) : NULL;
    if (!cp || !rp)
        return HVQ_E_NOTFOUND;
    hvq_encoded cenc, renc;
    hvq_encoded_init(&cenc);
    hvq_encoded_init(&renc);
    uint16_t *scales = NULL;
    hvq_parallel_for(ctx, p->numel, HVQ_PAR_ELEMS, zero_chunk, out);
    st = build_enc(ctx, c, t, 1, &cenc);
    if (st == HVQ_OK)
        st = build_enc(ctx, c, t, 2, &renc);
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
    if (st == HVQ_OK && p->has_scales) {
        size_t k;
        for (k = 0; k < t->n_parts && t->parts[k].stage != 0; k++)
            ;
        hvq_tensor part;
        st = read_part(ctx, c, t, k, &part);
        if (st == HVQ_OK && !(scales = hvq_alloc(ctx, (size_t)p->rows * sizeof *scales)))
            st = HVQ_E_NOMEM;
        if (st == HVQ_OK) {
            memcpy(scales, part.data, (size_t)p->rows * sizeof *scales);
            /* exactly as the driver: each element times the row's scale */
            scale_job j = {.out = out, .scales = scales, .rows = p->rows, .cols = p->cols,
                           .rows_per_chunk = hvq_par_rows(p->cols)};
            hvq_parallel_for(ctx, hvq_parallel_chunks(p->rows, j.rows_per_chunk), 1,
                             scale_chunk, &j);
        }
    }
    free(scales);
    hvq_encoded_clear(&cenc);
    hvq_encoded_clear(&renc);
    return st;
}
