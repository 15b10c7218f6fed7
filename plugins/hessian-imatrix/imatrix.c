/* hessian "imatrix": Hessian diagonals from a llama.cpp importance matrix
 * (the file `llama-imatrix` writes), in either of its two layouts, both
 * read through the host (this plugin parses no file format):
 *
 *   - GGUF, when the host's detection says so (host->detect; the gguf
 *     format reads it): general.type = "imatrix", and per weight W the
 *     tensors W.in_sum2 (sum of x^2 per input column, [n] or [n_mat, n]
 *     for a stack of expert matrices) and W.counts (activation rows, 1 or
 *     n_mat values);
 *   - otherwise the legacy .dat, which has no magic bytes, opened by name
 *     with the source format "imatrix-dat" (formats/imatrix; host
 *     model_open_as), which presents each entry the same way: W.in_sum2
 *     (the stored values, mean(x^2) * ncall) and W.counts (ncall).
 *
 *     The diagonal is in_sum2 / counts. A stack of matrices
 *     is folded into one diagonal: sum over matrices of in_sum2 divided by
 *     the total count, the mean of x^2 over every row any of them saw.
 *     Tensors with other suffixes are ignored.
 *
 * The whole file is validated when the stage opens, so a corrupt matrix
 * stops the run before any tensor is compressed.
 *
 * Names. The imatrix is keyed by llama.cpp tensor names (blk.N.attn_q.weight,
 * ...). With names: auto (the default) a tensor is looked up by its own name
 * first, so a model read from GGUF matches directly, then by the llama.cpp
 * name of its Hugging Face name (model.layers.N.self_attn.q_proj.weight ->
 * blk.N.attn_q.weight). names: llama only does the first, names: hf only
 * the second.
 *
 * RoPE: Hugging Face checkpoints permute the ROWS of q_proj and k_proj
 * relative to llama.cpp (rotate-half versus interleaved pairs). The Hessian
 * diagonal is indexed by input COLUMNS, which both layouts keep in the same
 * order, so the imatrix entry applies to the Hugging Face tensor as it is:
 * no permutation is needed.
 *
 * A tensor with no entry gets H = 1 (missing: uniform, the default; one
 * warning listing them all when the stage closes) or stops the run
 * (missing: error).
 */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1 /* fileno */
#endif

#include "plugin.h"

#include "checked.h"
#include "json.h"
#include "meta.h"
#include "names.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum { P_PATH, P_MISSING, P_NAMES };
enum { NAMES_AUTO, NAMES_LLAMA, NAMES_HF };

/* Names listed in the closing warning before "and N more". */
#define IMX_WARN_LIST 10

static const char *const missing_choices[] = {"uniform", "error", NULL};
static const char *const names_choices[] = {"auto", "llama", "hf", NULL};

static const hvq_param_spec imx_params[] = {
    {"path", HVQ_PARAM_PATH, NULL, 0, 0, NULL,
     "llama.cpp importance matrix: legacy imatrix .dat or GGUF (general.type imatrix)"},
    {"missing", HVQ_PARAM_CHOICE, "uniform", 0, 0, missing_choices,
     "a tensor with no entry: use H = 1 (uniform, one warning at the end) or stop (error)"},
    {"names", HVQ_PARAM_CHOICE, "auto", 0, 0, names_choices,
     "matching: exact name then Hugging Face -> llama.cpp mapping (auto), exact only "
     "(llama), mapping only (hf)"},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

typedef struct imx_entry {
    char *name;   /* llama.cpp tensor name */
    float *diag;  /* n values: the Hessian diagonal */
    uint64_t n;
    size_t order; /* position in the file, for messages */
} imx_entry;

typedef struct imx_state {
    char *path;
    int missing_error;
    int names;
    imx_entry *e;
    size_t n, cap;
    hvq_names missing; /* tensors that got H = 1 */
} imx_state;

/* ---- entries ------------------------------------------------------------- */

/* Appends an entry taking ownership of name and diag (freed on failure). */
static hvq_status add_entry(hvq_ctx *ctx, imx_state *s, char *name, float *diag, uint64_t n)
{
    const hvq_host *H = ctx->host;
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        imx_entry *e = H->realloc(ctx, s->e, cap * sizeof *e);
        if (!e) {
            H->free(name);
            H->free(diag);
            return HVQ_E_NOMEM;
        }
        s->e = e;
        s->cap = cap;
    }
    s->e[s->n].name = name;
    s->e[s->n].diag = diag;
    s->e[s->n].n = n;
    s->e[s->n].order = s->n;
    s->n++;
    return HVQ_OK;
}

static int cmp_entry(const void *a, const void *b)
{
    const imx_entry *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    if (c)
        return c;
    return x->order < y->order ? -1 : x->order > y->order;
}

/* Sorts the entries by name for lookups and refuses a name seen twice. */
static hvq_status sort_entries(hvq_ctx *ctx, imx_state *s)
{
    if (s->n == 0)
        return ctx->host->error(ctx, HVQ_E_INPUT, "%s: the importance matrix has no entries",
                                s->path);
    qsort(s->e, s->n, sizeof *s->e, cmp_entry);
    for (size_t i = 1; i < s->n; i++)
        if (strcmp(s->e[i - 1].name, s->e[i].name) == 0)
            return ctx->host->error(ctx, HVQ_E_INPUT,
                                    "%s: duplicate entry '%s' (entries %zu and %zu of %zu)",
                                    s->path, s->e[i].name, s->e[i - 1].order + 1,
                                    s->e[i].order + 1, s->n);
    return HVQ_OK;
}

static const imx_entry *find_entry(const imx_state *s, const char *name)
{
    size_t lo = 0, hi = s->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(s->e[mid].name, name);
        if (c == 0)
            return &s->e[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* ---- the matrix, as tensors ---------------------------------------------- */

/* A string metadata value of a GGUF model (general.type, ...). The gguf
 * plugin gives typed metadata as JSON text,
 * {"gguf_type":"string","value":"imatrix"}; anything that is not such an
 * object is taken as the plain text. Returns a host-allocated copy, NULL
 * when the key is absent (and on no memory, with *nomem set). */
static char *meta_string(hvq_ctx *ctx, hvq_model *m, const char *key, int *nomem)
{
    const hvq_host *H = ctx->host;
    const hvq_meta *meta;
    size_t n;
    *nomem = 0;
    H->model_meta(m, &meta, &n);
    const char *text = hvq_meta_find(meta, n, key);
    if (text) {
        char *out = NULL;
        hvq_json_doc *doc = hvq_json_parse(text, strlen(text), 0, NULL);
        if (doc) {
            const hvq_json_value *root = hvq_json_root(doc);
            const hvq_json_value *v = root->type == HVQ_JSON_OBJECT ? hvq_json_get(root, "value")
                                                                   : root;
            const char *str = hvq_json_string(v, NULL);
            out = H->strdup(ctx, str ? str : text);
            hvq_json_free(doc);
        } else {
            out = H->strdup(ctx, text);
        }
        if (!out)
            *nomem = 1;
        return out;
    }
    return NULL;
}

/* Converts a float tensor to n float32 values in a new host buffer. */
static hvq_status tensor_f32(hvq_ctx *ctx, const imx_state *s, const hvq_tensor *t, float **out)
{
    const hvq_host *H = ctx->host;
    uint64_t n = hvq_numel(&t->info);
    *out = NULL;
    if (t->info.dtype != HVQ_DTYPE_F32 && t->info.dtype != HVQ_DTYPE_F16 &&
        t->info.dtype != HVQ_DTYPE_BF16 && t->info.dtype != HVQ_DTYPE_F64)
        return H->error(ctx, HVQ_E_INPUT, "%s: tensor '%s' is %s, not a float type", s->path,
                        t->info.name,
                        t->info.dtype_name ? t->info.dtype_name : H->dtype_name(t->info.dtype));
    float *f = H->alloc(ctx, (size_t)(n ? n : 1) * sizeof *f);
    if (!f)
        return HVQ_E_NOMEM;
    hvq_status st = H->convert(ctx, HVQ_DTYPE_F32, f, t->info.dtype, t->data, (size_t)n);
    if (st != HVQ_OK) {
        H->free(f);
        return st;
    }
    *out = f;
    return HVQ_OK;
}

/* A counts tensor as doubles: F64 as stored (the legacy layout's ncall,
 * exact), the other float types through float32. */
static hvq_status tensor_counts(hvq_ctx *ctx, const imx_state *s, const hvq_tensor *t,
                                double **out)
{
    const hvq_host *H = ctx->host;
    uint64_t n = hvq_numel(&t->info);
    float *f = NULL;
    double *d = H->alloc(ctx, (size_t)(n ? n : 1) * sizeof *d);
    hvq_status st = d ? HVQ_OK : HVQ_E_NOMEM;
    if (st == HVQ_OK && t->info.dtype == HVQ_DTYPE_F64)
        memcpy(d, t->data, (size_t)n * sizeof *d);
    else if (st == HVQ_OK && (st = tensor_f32(ctx, s, t, &f)) == HVQ_OK)
        for (uint64_t i = 0; i < n; i++)
            d[i] = f[i];
    H->free(f);
    if (st != HVQ_OK)
        H->free(d);
    *out = st == HVQ_OK ? d : NULL;
    return st;
}

/* One weight: stem.in_sum2 and stem.counts. */
static hvq_status one_weight(hvq_ctx *ctx, imx_state *s, hvq_model *m, const char *sum_name,
                              size_t stem)
{
    const hvq_host *H = ctx->host;
    hvq_tensor t;
    hvq_status st = H->model_find(ctx, m, sum_name, &t);
    if (st != HVQ_OK)
        return st == HVQ_E_NOTFOUND
                   ? H->error(ctx, HVQ_E_INTERNAL, "%s: listed tensor '%s' not found", s->path,
                              sum_name)
                   : st;
    int64_t n_mat, n;
    if (t.info.ndim == 1) {
        n_mat = 1;
        n = t.info.shape[0];
    } else if (t.info.ndim == 2) {
        n_mat = t.info.shape[0];
        n = t.info.shape[1];
    } else {
        return H->error(ctx, HVQ_E_INPUT,
                        "%s: tensor '%s' has %d dimensions; in_sum2 is [n] or [n_mat, n]",
                        s->path, sum_name, t.info.ndim);
    }
    if (n <= 0 || n_mat <= 0)
        return H->error(ctx, HVQ_E_INPUT, "%s: tensor '%s' is empty", s->path, sum_name);
    float *sum = NULL, *diag = NULL;
    double *cnt = NULL;
    char *name = NULL;
    if ((st = tensor_f32(ctx, s, &t, &sum)) != HVQ_OK)
        return st;
    name = H->alloc(ctx, stem + sizeof ".counts");
    if (!name) {
        st = HVQ_E_NOMEM;
        goto fail;
    }
    memcpy(name, sum_name, stem);
    strcpy(name + stem, ".counts");
    st = H->model_find(ctx, m, name, &t); /* invalidates the in_sum2 data: copied above */
    if (st == HVQ_E_NOTFOUND) {
        st = H->error(ctx, HVQ_E_INPUT, "%s: '%s' has no matching '%s'", s->path, sum_name, name);
        goto fail;
    }
    if (st != HVQ_OK)
        goto fail;
    if (hvq_numel(&t.info) != (uint64_t)n_mat) {
        st = H->error(ctx, HVQ_E_INPUT, "%s: '%s' has %llu values; '%s' holds %lld matrices",
                      s->path, name, (unsigned long long)hvq_numel(&t.info), sum_name,
                      (long long)n_mat);
        goto fail;
    }
    if ((st = tensor_counts(ctx, s, &t, &cnt)) != HVQ_OK)
        goto fail;
    double total = 0;
    for (int64_t e = 0; e < n_mat; e++) {
        if (!(cnt[e] >= 0) || isinf(cnt[e])) {
            st = H->error(ctx, HVQ_E_INPUT, "%s: '%s' has the invalid count %g", s->path, name,
                          cnt[e]);
            goto fail;
        }
        total += cnt[e];
    }
    name[stem] = '\0';
    if (!(total > 0)) {
        st = H->error(ctx, HVQ_E_INPUT,
                      "%s: entry '%s' has a count of 0: no activations were recorded for it",
                      s->path, name);
        goto fail;
    }
    if (!(diag = H->alloc(ctx, (size_t)n * sizeof *diag))) {
        st = HVQ_E_NOMEM;
        goto fail;
    }
    for (int64_t j = 0; j < n; j++) {
        double acc = 0;
        for (int64_t e = 0; e < n_mat; e++) {
            float v = sum[e * n + j];
            if (!(v >= 0.0f) || isinf(v)) {
                st = H->error(ctx, HVQ_E_INPUT,
                              "%s: '%s' has the invalid value %g at index %lld (values must be "
                              "finite and >= 0)",
                              s->path, sum_name, (double)v, (long long)(e * n + j));
                goto fail;
            }
            acc += v;
        }
        diag[j] = (float)(acc / total);
    }
    H->free(sum);
    H->free(cnt);
    return add_entry(ctx, s, name, diag, (uint64_t)n);
fail:
    H->free(sum);
    H->free(cnt);
    H->free(diag);
    H->free(name);
    return st;
}

/* general.type of a GGUF model must say "imatrix". */
static hvq_status check_type(hvq_ctx *ctx, const imx_state *s, hvq_model *m)
{
    const hvq_host *H = ctx->host;
    int nomem;
    hvq_status st = HVQ_OK;
    char *type = meta_string(ctx, m, "general.type", &nomem);
    if (!type) {
        if (nomem)
            return HVQ_E_NOMEM;
        /* A model file usually says what it is in general.architecture. */
        char *arch = meta_string(ctx, m, "general.architecture", &nomem);
        st = nomem ? HVQ_E_NOMEM
                   : H->error(ctx, HVQ_E_INPUT,
                              "%s: a GGUF file but not an importance matrix (no general.type%s%s%s)",
                              s->path, arch ? "; general.architecture is '" : "",
                              arch ? arch : "", arch ? "'" : "");
        H->free(arch);
        return st;
    }
    if (strcmp(type, "imatrix") != 0)
        st = H->error(ctx, HVQ_E_INPUT,
                      "%s: a GGUF file but not an importance matrix (general.type is '%s')",
                      s->path, type);
    H->free(type);
    return st;
}

/* Every weight of the matrix (GGUF, or the legacy .dat through its
 * source format): W.in_sum2 with its W.counts. */
static hvq_status load_model(hvq_ctx *ctx, imx_state *s, hvq_model *m)
{
    const hvq_host *H = ctx->host;
    hvq_status st = HVQ_OK;
    size_t count = H->model_count(m);
    for (size_t i = 0; i < count && st == HVQ_OK; i++) {
        hvq_tensor_info info;
        if ((st = H->model_info(m, i, &info)) != HVQ_OK)
            break;
        size_t len = strlen(info.name);
        if (len > 8 && hvq_ends_with(info.name, ".in_sum2")) {
            st = one_weight(ctx, s, m, info.name, len - 8);
        } else if (len > 7 && hvq_ends_with(info.name, ".counts")) {
            size_t stem = len - 7;
            /* A count without its sums is a damaged file too. */
            char *sum = H->alloc(ctx, stem + sizeof ".in_sum2");
            if (!sum) {
                st = HVQ_E_NOMEM;
                break;
            }
            memcpy(sum, info.name, stem);
            strcpy(sum + stem, ".in_sum2");
            hvq_tensor t;
            st = H->model_find(ctx, m, sum, &t);
            if (st == HVQ_E_NOTFOUND)
                st = H->error(ctx, HVQ_E_INPUT, "%s: '%s' has no matching '%s'", s->path,
                              info.name, sum);
            H->free(sum);
        }
    }
    return st == HVQ_OK ? sort_entries(ctx, s) : st;
}

/* The matrix at s->path: GGUF when the host's detection says so, else the
 * legacy .dat (no magic bytes to detect), opened by its format's name. */
static hvq_status load(hvq_ctx *ctx, imx_state *s)
{
    const hvq_host *H = ctx->host;
    if (!HVQ_HOST_HAS(H, model_open_as))
        return H->error(ctx, HVQ_E_UNSUPPORTED, "%s: this hvqconv is too old for the imatrix "
                        "plugin (no host model_open_as)", s->path);
    const char *format = H->detect(ctx, s->path);
    int gguf = format && strcmp(format, "gguf") == 0;
    hvq_model *m = H->model_open_as(ctx, s->path, gguf ? "gguf" : "imatrix-dat");
    if (!m) {
        hvq_status st = H->status(ctx);
        return st == HVQ_OK ? HVQ_E_INPUT : st;
    }
    hvq_status st = gguf ? check_type(ctx, s, m) : HVQ_OK;
    if (st == HVQ_OK)
        st = load_model(ctx, s, m);
    if (st == HVQ_OK)
        H->log(ctx, HVQ_LOG_DEBUG, "%s: %s imatrix, %zu entries", s->path,
               gguf ? "GGUF" : "legacy .dat", s->n);
    H->model_close(ctx, m);
    return st;
}

/* ---- names ----------------------------------------------------------------- */

/* The llama.cpp name of a Hugging Face Llama tensor name into out; 0 when
 * it has none. */
static int hf_to_llama(const char *hf, char *out, size_t cap)
{
    static const char *const map[][2] = {
        {"self_attn.q_proj.weight", "attn_q.weight"},
        {"self_attn.k_proj.weight", "attn_k.weight"},
        {"self_attn.v_proj.weight", "attn_v.weight"},
        {"self_attn.o_proj.weight", "attn_output.weight"},
        {"mlp.gate_proj.weight", "ffn_gate.weight"},
        {"mlp.up_proj.weight", "ffn_up.weight"},
        {"mlp.down_proj.weight", "ffn_down.weight"},
    };
    int n;
    if (strcmp(hf, "model.embed_tokens.weight") == 0)
        n = snprintf(out, cap, "token_embd.weight");
    else if (strcmp(hf, "lm_head.weight") == 0)
        n = snprintf(out, cap, "output.weight");
    else {
        static const char prefix[] = "model.layers.";
        if (strncmp(hf, prefix, sizeof prefix - 1) != 0)
            return 0;
        const char *p = hf + sizeof prefix - 1, *d = p;
        while (*d >= '0' && *d <= '9')
            d++;
        /* a layer number: digits, no leading zero, at most 9 of them */
        if (d == p || d - p > 9 || (*p == '0' && d - p > 1) || *d != '.')
            return 0;
        size_t k;
        for (k = 0; k < sizeof map / sizeof map[0]; k++)
            if (strcmp(d + 1, map[k][0]) == 0)
                break;
        if (k == sizeof map / sizeof map[0])
            return 0;
        n = snprintf(out, cap, "blk.%.*s.%s", (int)(d - p), p, map[k][1]);
    }
    return n > 0 && (size_t)n < cap;
}

/* ---- the plugin ------------------------------------------------------------ */

static void imx_close(hvq_ctx *ctx, void *state);

static hvq_status imx_open(hvq_ctx *ctx, const hvq_params *params, const char *model_path,
                           void **state)
{
    const hvq_host *H = ctx->host;
    (void)model_path;
    imx_state *s = H->calloc(ctx, 1, sizeof *s);
    if (!s)
        return HVQ_E_NOMEM;
    *state = s;
    s->missing_error = strcmp(params->values[P_MISSING].s, "error") == 0;
    const char *nm = params->values[P_NAMES].s;
    s->names = strcmp(nm, "llama") == 0 ? NAMES_LLAMA : strcmp(nm, "hf") == 0 ? NAMES_HF
                                                                               : NAMES_AUTO;
    if (!(s->path = H->strdup(ctx, params->values[P_PATH].s)))
        return HVQ_E_NOMEM;
    return load(ctx, s);
}

static hvq_status imx_get(hvq_ctx *ctx, void *state, const hvq_tensor_info *t, uint64_t rows,
                          uint64_t cols, float *h)
{
    const hvq_host *H = ctx->host;
    imx_state *s = state;
    (void)rows; /* the diagonal runs over input columns; see RoPE above */
    char mapped[1024];
    int has_mapped = s->names != NAMES_LLAMA && hf_to_llama(t->name, mapped, sizeof mapped);
    const imx_entry *e = NULL;
    if (s->names != NAMES_HF)
        e = find_entry(s, t->name);
    if (!e && has_mapped)
        e = find_entry(s, mapped);
    if (!e) {
        if (s->missing_error) {
            char tried[1200];
            if (s->names == NAMES_LLAMA)
                snprintf(tried, sizeof tried, "names: llama matches exact names only");
            else if (!has_mapped)
                snprintf(tried, sizeof tried, "it has no llama.cpp name to look for");
            else if (s->names == NAMES_HF)
                snprintf(tried, sizeof tried, "looked for its llama.cpp name '%s'", mapped);
            else
                snprintf(tried, sizeof tried, "looked for it and its llama.cpp name '%s'",
                         mapped);
            return H->error(ctx, HVQ_E_INPUT,
                            "%s: no entry for tensor '%s' (%s); set missing: uniform to use "
                            "H = 1 for it",
                            s->path, t->name, tried);
        }
        hvq_status st = hvq_names_add(ctx, &s->missing, t->name);
        if (st != HVQ_OK)
            return st;
        for (uint64_t j = 0; j < cols; j++)
            h[j] = 1.0f;
        return HVQ_OK;
    }
    if (e->n != cols)
        return H->error(ctx, HVQ_E_INPUT,
                        "%s: entry '%s' has %llu values but tensor '%s' has %llu input columns",
                        s->path, e->name, (unsigned long long)e->n, t->name,
                        (unsigned long long)cols);
    memcpy(h, e->diag, (size_t)cols * sizeof *h);
    return HVQ_OK;
}

static void imx_close(hvq_ctx *ctx, void *state)
{
    const hvq_host *H = ctx->host;
    imx_state *s = state;
    if (!s)
        return;
    if (s->missing.n > 0) {
        char list[IMX_WARN_LIST * 160 + 64];
        hvq_names_list(&s->missing, IMX_WARN_LIST, list, sizeof list);
        H->log(ctx, HVQ_LOG_WARN, "%s: no entry for %zu tensor%s, H = 1 was used for %s: %s",
               s->path, s->missing.n, s->missing.n == 1 ? "" : "s",
               s->missing.n == 1 ? "it" : "them", list);
    }
    hvq_names_free(ctx, &s->missing);
    for (size_t i = 0; i < s->n; i++) {
        H->free(s->e[i].name);
        H->free(s->e[i].diag);
    }
    H->free(s->e);
    H->free(s->path);
    H->free(s);
}

static const hvq_plugin imx_plugin = {
    HVQ_PLUGIN_HEADER,
    .kinds = HVQ_KIND_HESSIAN,
    .name = "imatrix",
    .version = "1.0.0",
    .summary = "Hessian diagonals from a llama.cpp importance matrix (imatrix .dat or GGUF)",
    .license = "MIT",
    .params = imx_params,
    .hessian_open = imx_open,
    .hessian_get = imx_get,
    .hessian_close = imx_close,
};

HVQ_REGISTER_PLUGIN(imx_plugin)
