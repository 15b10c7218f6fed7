/* hessian "calibrate": Hessian diagonals computed by running the model being
 * compressed over calibration tokens with a model plugin (HVQ_KIND_MODEL,
 * reached through host->model_plugin: the one that runs the GGUF
 * metadata's architecture, else "llama"), so no other framework is needed.
 *
 * What it computes. For every block l and every linear layer of it, the
 * mean over all calibration tokens of x_j^2, x being the activation row
 * entering the layer (the input of its matrix product) and j the input
 * column: H_j = sum_t x_tj^2 / T. This is the diagonal the paper weights
 * its importance and errors with, and the quantity llama.cpp's imatrix
 * stores as in_sum2 / counts. q, k and v share their input (the normed
 * residual stream), as do gate and up, so a block has four accumulators:
 * attention input, o input, MLP input, down input. Sums are in double.
 *
 * Tokens. `tokens` is a 1-D integer .npy (or a .npz holding one such
 * array), read through the format plugins, or a raw little-endian int32
 * file whose name ends in .bin: the token files `hvqconv eval` reads. The
 * stream is cut as `hvqconv eval` cuts it: consecutive windows of `ctx`
 * tokens from the start, each run from an empty cache; the first `windows`
 * of them are used (all whole windows when the file holds fewer, with a
 * warning).
 *
 * The model. hessian_open gets the pipeline's input: a safetensors
 * directory or file with config.json (in the directory, or beside the
 * file), or a GGUF file (configuration from its llama.* metadata, RoPE in
 * llama.cpp's order). The host opens the model (model_open; host->detect
 * tells a GGUF file) and the model plugin reads its tensors from it. When
 * the plugin can (model_open_lazy, model_windows), it reads them block by
 * block as a layer-major pass reaches them: every window through block l,
 * then block l + 1, so one block's weights are held at a time instead of
 * the whole model in float32; the sums are the same bits either way.
 *
 * Names. A tensor is matched by its Hugging Face name
 * (model.layers.N.self_attn.q_proj.weight) or its llama.cpp name
 * (blk.N.attn_q.weight), whichever the model uses. Any other tensor (the
 * embedding, the output head) has no calibrated diagonal: missing: error
 * stops the run naming it, missing: uniform gives it H = 1 and lists every
 * such tensor in one warning when the stage closes.
 *
 * save: PATH writes what was computed as a llama.cpp imatrix in its GGUF
 * layout (what llama-imatrix writes): general.type = "imatrix",
 * imatrix.datasets = [the token file], imatrix.chunk_count = windows used,
 * imatrix.chunk_size = ctx, and per weight W (llama.cpp names, sorted by
 * name as llama.cpp writes them) W.in_sum2 (F32 [n], the sum of x^2 per
 * input column) and W.counts (F32 [1], the number of tokens). The
 * `imatrix` Hessian source reads it back to the same diagonals (to float32
 * rounding). The file is one of the run's outputs: it appears when the run
 * succeeds, never after a failure.
 *
 * full: true also accumulates, per block and input, the full matrix
 * sum_t x_t x_t^T (upper triangle, in double: 8 n^2 bytes for n columns),
 * and hessian_get_full gives it over the token count: H = mean(x x^T), whose
 * diagonal is hessian_get's, bit for bit (the same products summed in the
 * same order). A tensor given H = 1 (missing: uniform) gets the identity.
 */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1 /* fileno */
#endif

#include "plugin.h"

#include "file.h"
#include "buf.h"
#include "json.h"
#include "meta.h"
#include "names.h"
#include "tokens.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum { P_TOKENS, P_WINDOWS, P_CTX, P_SAVE, P_MISSING, P_FULL };

/* The largest config.json read. */
#define CAL_MAX_CONFIG (16u << 20)
/* The activations one layer-major pass holds at most (windows of ctx x
 * hidden floats; at least one window). */
#define CAL_ACTIVATIONS ((int64_t)1 << 30)
/* Names listed in the closing warning before "and N more". */
#define CAL_WARN_LIST 10

/* Accumulators of a block: one per distinct input of its linear layers
 * (the model plugin's model_linears: for Llama the inputs of q/k/v, o,
 * gate/up, down). */

static const char *const missing_choices[] = {"error", "uniform", NULL};

static const hvq_param_spec cal_params[] = {
    {"tokens", HVQ_PARAM_PATH, NULL, 0, 0, NULL,
     "calibration token ids: a 1-D integer .npy (or one-array .npz), or raw int32 .bin"},
    {"windows", HVQ_PARAM_INT, "8", 1, 1e9, NULL,
     "how many windows of ctx tokens to run, consecutive from the start of the file"},
    {"ctx", HVQ_PARAM_INT, "256", 2, 1048576, NULL,
     "tokens per window (each window runs from an empty cache, as `hvqconv eval`)"},
    {"save", HVQ_PARAM_STRING, "", 0, 0, NULL,
     "also write the statistics as a llama.cpp imatrix GGUF to this path (empty: don't)"},
    {"missing", HVQ_PARAM_CHOICE, "error", 0, 0, missing_choices,
     "a tensor that is not a linear layer of a block: stop (error) or use H = 1 (uniform)"},
    {"full", HVQ_PARAM_BOOL, "false", 0, 0, NULL,
     "also accumulate the full matrix mean(x x^T) per layer input, for clusterers with error "
     "feedback (ggml gptq); 8 n^2 bytes per input of n columns"},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

typedef struct cal_acc {
    double *sum;    /* n values: sum over tokens of x_j^2 */
    double *full;   /* with full: true, n x n: sum over tokens of x_i x_j
                       (the upper triangle and the diagonal) */
    uint64_t n;     /* input columns (0 until the first call) */
    uint64_t count; /* tokens seen */
} cal_acc;

/* One calibration serves every instance of a run. The base stage and each
 * override that names other parameters (say missing:) open instances of
 * their own, but the statistics depend only on the model, the tokens file,
 * the windows and ctx: the first instance computes them and hands them to
 * the host (host->shared_put, under a key naming those four), and later
 * ones of the run borrow them read-only (host->shared_get), so the forward
 * pass runs once and a save: path is written once. The host releases them
 * when the run ends. */
typedef struct cal_shared {
    const hvq_host *host;
    int n_layers;
    const hvq_model_linear *lin; /* the model plugin's table */
    int n_lin, n_slots;
    cal_acc *acc;
    pthread_mutex_t mu; /* guards saved */
    char **saved;       /* save: paths written from these statistics */
    size_t n_saved;
} cal_shared;

typedef struct cal_state {
    char *tokens_path;
    int missing_error;
    int full;         /* accumulate the full matrices */
    int n_layers;
    const hvq_model_linear *lin; /* the model plugin's linear layers */
    int n_lin;        /* entries of lin */
    int n_slots;      /* distinct inputs among them */
    cal_acc *acc;     /* n_layers * n_slots */
    cal_shared *shared; /* acc is borrowed from it (NULL: this instance's) */
    hvq_names missing; /* tensors that got H = 1 */
    /* set by the hook when activations do not fit an accumulator */
    int hook_failed;
    int fail_layer, fail_which;
    uint64_t fail_dim, fail_want;
} cal_state;

/* The accumulator of linear layer `linear` of block `layer`. */
static cal_acc *acc_of(const cal_state *s, int layer, int linear)
{
    return &s->acc[(size_t)layer * (size_t)s->n_slots + (size_t)s->lin[linear].input];
}

/* Whether linear layer `linear` is the first with its input (the hook
 * counts shared rows once). */
static int first_of_input(const cal_state *s, int linear)
{
    for (int w = 0; w < linear; w++)
        if (s->lin[w].input == s->lin[linear].input)
            return 0;
    return 1;
}

/* The name of linear layer w of block l in a naming scheme. */
static void linear_name(const cal_state *s, int gguf, int l, int w, char *buf, size_t len)
{
    snprintf(buf, len, gguf ? s->lin[w].gguf_name : s->lin[w].hf_name, l);
}

/* ---- the model ------------------------------------------------------------ */

/* config.json of a safetensors model: in the directory, or beside the file.
 * *json is NULL (no error) when there is none. */
static hvq_status read_config(hvq_ctx *ctx, const char *model_path, char **json, char **where)
{
    const hvq_host *H = ctx->host;
    struct stat st;
    *json = NULL;
    *where = NULL;
    size_t n = strlen(model_path);
    char *cfg = H->alloc(ctx, n + sizeof "/config.json");
    if (!cfg)
        return HVQ_E_NOMEM;
    if (stat(model_path, &st) == 0 && S_ISDIR(st.st_mode)) {
        snprintf(cfg, n + sizeof "/config.json", "%s/config.json", model_path);
    } else {
        const char *slash = strrchr(model_path, '/');
        if (slash)
            snprintf(cfg, n + sizeof "/config.json", "%.*s/config.json",
                     (int)(slash - model_path), model_path);
        else
            snprintf(cfg, n + sizeof "/config.json", "config.json");
    }
    if (stat(cfg, &st) != 0) {
        H->free(cfg);
        return HVQ_OK;
    }
    unsigned char *b;
    size_t len;
    hvq_status s = hvq_slurp_input(ctx, cfg, CAL_MAX_CONFIG, "a model configuration", &b, &len);
    if (s != HVQ_OK) {
        H->free(cfg);
        return s;
    }
    *json = (char *)b;
    *where = cfg;
    return HVQ_OK;
}

/* ---- statistics ------------------------------------------------------------ */

/* full += row^T row, the upper triangle and the diagonal (n x n). */
static void add_outer(double *full, const float *row, int n)
{
    for (int i = 0; i < n; i++) {
        double xi = row[i], *f = full + (size_t)i * (size_t)n;
        for (int j = i; j < n; j++)
            f[j] += xi * (double)row[j];
    }
}

static void cal_hook(void *ud, int layer, int which, const float *x, int n_tokens, int in_dim)
{
    cal_state *s = ud;
    /* q/k/v and gate/up see the same rows: count them once. */
    if (which < 0 || which >= s->n_lin || !first_of_input(s, which))
        return;
    if (s->hook_failed || layer < 0 || layer >= s->n_layers || n_tokens <= 0 || in_dim <= 0) {
        if (!s->hook_failed) {
            s->hook_failed = 1;
            s->fail_layer = layer;
            s->fail_which = (int)which;
            s->fail_dim = (uint64_t)(in_dim > 0 ? in_dim : 0);
            s->fail_want = 0;
        }
        return;
    }
    cal_acc *a = acc_of(s, layer, which);
    if (!a->sum) {
        a->sum = calloc((size_t)in_dim, sizeof *a->sum);
        if (!a->sum) {
            s->hook_failed = 2;
            return;
        }
        a->n = (uint64_t)in_dim;
    }
    if (a->n != (uint64_t)in_dim) {
        s->hook_failed = 1;
        s->fail_layer = layer;
        s->fail_which = (int)which;
        s->fail_dim = (uint64_t)in_dim;
        s->fail_want = a->n;
        return;
    }
    if (s->full && !a->full && !(a->full = calloc((size_t)in_dim * (size_t)in_dim, sizeof *a->full))) {
        s->hook_failed = 2;
        return;
    }
    double *sum = a->sum;
    for (int t = 0; t < n_tokens; t++) {
        const float *row = x + (size_t)t * (size_t)in_dim;
        for (int j = 0; j < in_dim; j++)
            sum[j] += (double)row[j] * (double)row[j];
        if (a->full)
            add_outer(a->full, row, in_dim);
    }
    a->count += (uint64_t)n_tokens;
}

/* ---- saving as a llama.cpp imatrix ----------------------------------------- */

typedef struct save_entry {
    char name[96];      /* blk.N.attn_q.weight */
    const cal_acc *acc;
} save_entry;

static int cmp_save(const void *a, const void *b)
{
    return strcmp(((const save_entry *)a)->name, ((const save_entry *)b)->name);
}

/* The token path as a JSON string, with bytes that are not UTF-8 shown as
 * '?' (GGUF strings must be UTF-8). */
static void json_path(hvq_buf *b, const char *path)
{
    size_t n = strlen(path);
    if (hvq_json_utf8_valid(path, n)) {
        hvq_buf_json_string(b, path);
        return;
    }
    char *copy = malloc(n + 1);
    if (!copy) {
        b->oom = 1;
        return;
    }
    for (size_t i = 0; i < n; i++)
        copy[i] = (unsigned char)path[i] < 0x80 ? path[i] : '?';
    copy[n] = '\0';
    hvq_buf_json_string(b, copy);
    free(copy);
}

/* Writes the k entries (tensor infos ti: in_sum2 and counts of each) as
 * a GGUF through the gguf sink. */
static hvq_status write_imatrix(hvq_ctx *ctx, const char *path, const hvq_meta *meta,
                                size_t n_meta, const save_entry *e, const hvq_tensor_info *ti,
                                const float *counts, size_t k, uint64_t max_n)
{
    const hvq_host *H = ctx->host;
    float *sums = H->alloc(ctx, (size_t)max_n * sizeof *sums);
    if (!sums)
        return HVQ_E_NOMEM;
    hvq_status st = HVQ_OK;
    hvq_sink_handle *sink = H->sink_open_params(ctx, "gguf", path, NULL, meta, n_meta, ti, 2 * k);
    if (!sink) {
        st = H->status(ctx);
        H->free(sums);
        return st == HVQ_OK ? HVQ_E_IO : st;
    }
    for (size_t i = 0; i < k && st == HVQ_OK; i++) {
        for (uint64_t j = 0; j < e[i].acc->n; j++)
            sums[j] = (float)e[i].acc->sum[j];
        hvq_tensor t = {ti[2 * i], sums};
        st = H->sink_write(ctx, sink, &t);
        if (st == HVQ_OK) {
            hvq_tensor c = {ti[2 * i + 1], &counts[i]};
            st = H->sink_write(ctx, sink, &c);
        }
    }
    if (st == HVQ_OK)
        st = H->sink_finish(ctx, sink);
    if (st == HVQ_OK)
        H->log(ctx, HVQ_LOG_INFO, "calibrate: wrote the importance matrix (%zu weights) to %s",
               k, path);
    H->sink_close(ctx, sink);
    H->free(sums);
    return st;
}

static hvq_status save_imatrix(hvq_ctx *ctx, cal_state *s, const char *path, int64_t windows,
                               int64_t ctx_len)
{
    const hvq_host *H = ctx->host;
    size_t n_w = (size_t)s->n_layers * (size_t)s->n_lin, k = 0;
    save_entry *e = H->calloc(ctx, n_w ? n_w : 1, sizeof *e);
    hvq_tensor_info *ti = H->calloc(ctx, 2 * (n_w ? n_w : 1), sizeof *ti);
    char (*names)[112] = H->calloc(ctx, 2 * (n_w ? n_w : 1), sizeof *names);
    float *counts = H->calloc(ctx, n_w ? n_w : 1, sizeof *counts);
    hvq_buf ds;
    hvq_buf_init(&ds);
    hvq_status st = HVQ_OK;
    if (!e || !ti || !names || !counts) {
        st = HVQ_E_NOMEM;
        goto done;
    }
    uint64_t max_n = 1;
    for (int l = 0; l < s->n_layers; l++)
        for (int w = 0; w < s->n_lin; w++) {
            const cal_acc *a = acc_of(s, l, w);
            if (!a->sum || !a->count)
                continue;
            linear_name(s, 1, l, w, e[k].name, sizeof e[k].name);
            e[k].acc = a;
            if (a->n > max_n)
                max_n = a->n;
            k++;
        }
    qsort(e, k, sizeof *e, cmp_save);
    for (size_t i = 0; i < k; i++) {
        snprintf(names[2 * i], sizeof names[0], "%s.in_sum2", e[i].name);
        snprintf(names[2 * i + 1], sizeof names[0], "%s.counts", e[i].name);
        ti[2 * i] = (hvq_tensor_info){.name = names[2 * i], .dtype = HVQ_DTYPE_F32,
                                      .dtype_name = "F32", .ndim = 1,
                                      .shape = {(int64_t)e[i].acc->n},
                                      .nbytes = e[i].acc->n * 4};
        ti[2 * i + 1] = (hvq_tensor_info){.name = names[2 * i + 1], .dtype = HVQ_DTYPE_F32,
                                          .dtype_name = "F32", .ndim = 1, .shape = {1},
                                          .nbytes = 4};
        counts[i] = (float)e[i].acc->count;
    }
    hvq_buf_puts(&ds, "{\"gguf_type\":\"array\",\"item_type\":\"string\",\"value\":[");
    json_path(&ds, s->tokens_path);
    hvq_buf_puts(&ds, "]}");
    char chunks[64], size[64];
    snprintf(chunks, sizeof chunks, "{\"gguf_type\":\"uint32\",\"value\":%lld}",
             (long long)windows);
    snprintf(size, sizeof size, "{\"gguf_type\":\"uint32\",\"value\":%lld}", (long long)ctx_len);
    if (ds.oom || !ds.data) {
        st = H->error(ctx, HVQ_E_NOMEM, "out of memory");
        goto done;
    }
    const hvq_meta meta[] = {
        {"general.type", "{\"gguf_type\":\"string\",\"value\":\"imatrix\"}"},
        {"imatrix.datasets", ds.data},
        {"imatrix.chunk_count", chunks},
        {"imatrix.chunk_size", size},
    };
    st = write_imatrix(ctx, path, meta, sizeof meta / sizeof meta[0], e, ti, counts, k, max_n);
done:
    hvq_buf_free(&ds);
    H->free(counts);
    H->free(names);
    H->free(ti);
    H->free(e);
    return st;
}

static void free_acc(const hvq_host *H, cal_acc *acc, int n_layers, int n_slots)
{
    if (acc)
        for (size_t i = 0; i < (size_t)n_layers * (size_t)n_slots; i++) {
            free(acc[i].sum);
            free(acc[i].full);
        }
    H->free(acc);
}

/* ---- one calibration per run ---------------------------------------------- */

/* The key of the statistics of (model, tokens, windows, ctx_len, full) in
 * the run's shared values (allocated; NULL when out of memory). */
static char *shared_key(hvq_ctx *ctx, const cal_state *s, const char *model, int64_t windows,
                        int64_t ctx_len)
{
    size_t n = strlen(model) + strlen(s->tokens_path) + 96;
    char *key = ctx->host->alloc(ctx, n);
    if (key)
        snprintf(key, n, "calibrate\n%s\n%s\n%lld\n%lld\n%d", model, s->tokens_path,
                 (long long)windows, (long long)ctx_len, s->full);
    return key;
}

/* Borrows the run's statistics under key when an earlier instance computed
 * them: 1, with s->acc pointing to them. */
static int shared_take(hvq_ctx *ctx, cal_state *s, const char *key)
{
    const hvq_host *H = ctx->host;
    cal_shared *sh = HVQ_HOST_HAS(H, shared_get) ? H->shared_get(ctx, key) : NULL;
    if (!sh)
        return 0;
    s->shared = sh;
    s->acc = sh->acc;
    s->n_layers = sh->n_layers;
    s->lin = sh->lin;
    s->n_lin = sh->n_lin;
    s->n_slots = sh->n_slots;
    return 1;
}

/* host->shared_put's release: at the end of the run. */
static void shared_release(void *value)
{
    cal_shared *sh = value;
    free_acc(sh->host, sh->acc, sh->n_layers, sh->n_slots);
    for (size_t i = 0; i < sh->n_saved; i++)
        free(sh->saved[i]);
    free(sh->saved);
    pthread_mutex_destroy(&sh->mu);
    free(sh);
}

/* Hands the statistics s computed to the host for the run's later
 * instances; s borrows them from then on. A host without shared values
 * (an older one) leaves them to s. */
static hvq_status shared_put(hvq_ctx *ctx, cal_state *s, const char *key)
{
    const hvq_host *H = ctx->host;
    if (!HVQ_HOST_HAS(H, shared_put))
        return HVQ_OK;
    cal_shared *sh = calloc(1, sizeof *sh);
    if (!sh)
        return H->error(ctx, HVQ_E_NOMEM, "out of memory");
    *sh = (cal_shared){.host = H, .n_layers = s->n_layers, .lin = s->lin, .n_lin = s->n_lin,
                       .n_slots = s->n_slots, .acc = s->acc};
    pthread_mutex_init(&sh->mu, NULL);
    hvq_status st = H->shared_put(ctx, key, sh, shared_release);
    if (st != HVQ_OK) {
        pthread_mutex_destroy(&sh->mu);
        free(sh);
        return st;
    }
    s->shared = sh;
    return HVQ_OK;
}

/* Whether path was saved from these statistics already; if not, notes it
 * (the caller is about to write it). */
static int shared_saved(cal_shared *sh, const char *path)
{
    int seen = 0;
    if (!sh)
        return 0;
    pthread_mutex_lock(&sh->mu);
    for (size_t i = 0; i < sh->n_saved && !seen; i++)
        seen = strcmp(sh->saved[i], path) == 0;
    if (!seen) {
        char **grown = realloc(sh->saved, (sh->n_saved + 1) * sizeof *grown);
        if (grown) {
            sh->saved = grown;
            if ((sh->saved[sh->n_saved] = strdup(path)) != NULL)
                sh->n_saved++;
        }
    }
    pthread_mutex_unlock(&sh->mu);
    return seen;
}

/* Whether the model plugin runs windows layer-major reading one block's
 * weights at a time (model_open_lazy and model_windows). */
static int lazy_plugin(const hvq_plugin *mp)
{
    return HVQ_PLUGIN_HAS(mp, model_open_lazy) && HVQ_PLUGIN_HAS(mp, model_windows);
}

/* The model being compressed, opened by the host (model_open on the
 * pipeline's input) and built by the model plugin that runs its
 * architecture (else "llama"): configuration from the GGUF metadata of a
 * GGUF model, else config.json. A plugin that can opens it lazily: then
 * *file is the host's model, which must stay open until model_close (the
 * caller closes it after); else *file is NULL. */
static hvq_status open_model(hvq_ctx *ctx, const char *model_path, const hvq_plugin **mp,
                             void **model, hvq_model **file)
{
    const hvq_host *H = ctx->host;
    *mp = NULL;
    *model = NULL;
    *file = NULL;
    if (!HVQ_HOST_HAS(H, model_plugin) || !HVQ_HOST_HAS(H, detect))
        return H->error(ctx, HVQ_E_UNSUPPORTED, "calibrate: this hvqconv has no model plugins "
                        "(host->model_plugin); a newer one is needed");
    hvq_model *m = H->model_open(ctx, model_path);
    if (!m) {
        hvq_status st = H->status(ctx);
        return st == HVQ_OK ? HVQ_E_INPUT : st;
    }
    hvq_model_input in = {.path = model_path, .model = m};
    char *config = NULL, *config_path = NULL, arch[64] = "";
    const char *fmt = H->detect(ctx, model_path);
    hvq_status st = HVQ_OK;
    if (fmt && strcmp(fmt, "gguf") == 0) {
        H->model_meta(m, &in.meta, &in.n_meta);
        hvq_meta_string(in.meta, in.n_meta, "general.architecture", arch, sizeof arch);
    } else {
        st = read_config(ctx, model_path, &config, &config_path);
        if (st == HVQ_OK && !config)
            st = H->error(ctx, HVQ_E_INPUT,
                          "%s: calibrate needs the model's configuration: a Hugging Face "
                          "config.json in the model directory (or beside the file), or a GGUF "
                          "model; none found",
                          model_path);
        in.config_json = config;
    }
    if (st == HVQ_OK && arch[0])
        *mp = H->model_plugin(ctx, NULL, arch);
    if (st == HVQ_OK && !*mp && !(*mp = H->model_plugin(ctx, "llama", NULL)))
        st = H->status(ctx);
    int lazy = st == HVQ_OK && lazy_plugin(*mp);
    if (st == HVQ_OK)
        st = lazy ? (*mp)->model_open_lazy(ctx, NULL, &in, model)
                  : (*mp)->model_open(ctx, NULL, &in, model);
    if (st != HVQ_OK) {
        if (*model)
            (*mp)->model_close(ctx, *model);
        *model = NULL;
        lazy = 0;
    }
    if (lazy)
        *file = m;
    else
        H->model_close(ctx, m);
    H->free(config);
    H->free(config_path);
    return st;
}

/* What the hook reported after a pass: an error status, or HVQ_OK. */
static hvq_status hook_status(hvq_ctx *ctx, const cal_state *s)
{
    const hvq_host *H = ctx->host;
    if (s->hook_failed == 2)
        return H->error(ctx, HVQ_E_NOMEM, "calibrate: out of memory");
    if (s->hook_failed)
        return H->error(ctx, HVQ_E_INTERNAL,
                        "calibrate: unexpected activations entering layer %d, %s: %llu "
                        "columns (earlier: %llu)",
                        s->fail_layer,
                        s->fail_which >= 0 && s->fail_which < s->n_lin
                            ? s->lin[s->fail_which].short_name
                            : "?",
                        (unsigned long long)s->fail_dim, (unsigned long long)s->fail_want);
    return HVQ_OK;
}

/* Runs the windows with the hook accumulating into s: layer-major with
 * model_windows when the plugin has it, as many windows a call as keep
 * their activations within CAL_ACTIVATIONS bytes (every accumulator still
 * sees the windows in order, so the sums are the same bits), else window
 * by window. */
static hvq_status run_windows(hvq_ctx *ctx, cal_state *s, const hvq_plugin *mp, void *model,
                              const int32_t *ids, int64_t windows, int64_t ctx_len, double *nll,
                              uint64_t *scored)
{
    const hvq_host *H = ctx->host;
    hvq_status st = HVQ_OK;
    if (!mp->model_set_hook)
        return H->error(ctx, HVQ_E_UNSUPPORTED, "calibrate: the model plugin '%s' has no "
                        "activation hook", mp->name);
    mp->model_set_hook(model, cal_hook, s);
    if (HVQ_PLUGIN_HAS(mp, model_windows)) {
        hvq_model_info info;
        mp->model_info(model, &info);
        int64_t row = ctx_len * (info.hidden > 0 ? info.hidden : 1) * (int64_t)sizeof(float);
        int64_t batch = CAL_ACTIVATIONS / row > 0 ? CAL_ACTIVATIONS / row : 1;
        for (int64_t w = 0; w < windows && st == HVQ_OK; w += batch) {
            int64_t k = windows - w < batch ? windows - w : batch;
            st = mp->model_windows(ctx, model, ids + (size_t)w * (size_t)ctx_len, (int)k,
                                   (int)ctx_len, nll, scored);
            if (st == HVQ_OK)
                st = hook_status(ctx, s);
            H->progress(ctx, (uint64_t)(w + k), (uint64_t)windows);
        }
    } else {
        for (int64_t w = 0; w < windows && st == HVQ_OK; w++) {
            st = mp->model_window(ctx, model, ids + (size_t)w * (size_t)ctx_len, (int)ctx_len,
                                  nll, scored);
            if (st == HVQ_OK)
                st = hook_status(ctx, s);
            H->progress(ctx, (uint64_t)w + 1, (uint64_t)windows);
        }
    }
    mp->model_set_hook(model, NULL, NULL);
    return st;
}

/* Opens the model, sizes the accumulators from its shape and the plugin's
 * linear layers, and runs the calibration windows. */
static hvq_status calibrate(hvq_ctx *ctx, cal_state *s, const char *model_path,
                            const int32_t *ids, int64_t windows, int64_t ctx_len, double *nll,
                            uint64_t *scored)
{
    const hvq_host *H = ctx->host;
    const hvq_plugin *mp;
    void *model;
    hvq_model *file;
    hvq_status st = open_model(ctx, model_path, &mp, &model, &file);
    if (st != HVQ_OK)
        return st;
    hvq_model_info info;
    mp->model_info(model, &info);
    s->lin = mp->model_linears;
    for (s->n_lin = 0, s->n_slots = 0; s->lin[s->n_lin].short_name; s->n_lin++)
        if (s->lin[s->n_lin].input >= s->n_slots)
            s->n_slots = s->lin[s->n_lin].input + 1;
    s->n_layers = info.n_layers;
    s->acc = H->calloc(ctx, (size_t)(info.n_layers > 0 ? info.n_layers : 1) *
                                (size_t)(s->n_slots > 0 ? s->n_slots : 1),
                       sizeof *s->acc);
    if (!s->acc)
        st = HVQ_E_NOMEM;
    else
        st = run_windows(ctx, s, mp, model, ids, windows, ctx_len, nll, scored);
    mp->model_close(ctx, model);
    if (file)
        H->model_close(ctx, file);
    return st;
}

/* ---- the plugin ------------------------------------------------------------ */

static void cal_close(hvq_ctx *ctx, void *state);

/* The calibration tokens: *windows windows of ctx_len (fewer, with a
 * warning, when the file holds fewer). */
static hvq_status read_windows(hvq_ctx *ctx, const cal_state *s, int64_t ctx_len,
                               int64_t *windows, int32_t **ids)
{
    const hvq_host *H = ctx->host;
    uint64_t n_ids = 0;
    hvq_status st = hvq_tokens_read(ctx, s->tokens_path, ids, &n_ids);
    if (st != HVQ_OK)
        return st;
    uint64_t avail = n_ids / (uint64_t)ctx_len;
    if (avail == 0) {
        H->free(*ids);
        *ids = NULL;
        return H->error(ctx, HVQ_E_INPUT,
                        "%s: %llu tokens, fewer than one window of ctx = %lld; use a smaller "
                        "ctx or a longer file",
                        s->tokens_path, (unsigned long long)n_ids, (long long)ctx_len);
    }
    if ((uint64_t)*windows > avail) {
        H->log(ctx, HVQ_LOG_WARN,
               "calibrate: %s holds %llu tokens, %llu windows of %lld; using those instead of "
               "the %lld asked for",
               s->tokens_path, (unsigned long long)n_ids, (unsigned long long)avail,
               (long long)ctx_len, (long long)*windows);
        *windows = (int64_t)avail;
    }
    return HVQ_OK;
}

static hvq_status cal_open(hvq_ctx *ctx, const hvq_params *params, const char *model_path,
                           void **state)
{
    const hvq_host *H = ctx->host;
    cal_state *s = H->calloc(ctx, 1, sizeof *s);
    if (!s)
        return HVQ_E_NOMEM;
    *state = s;
    s->missing_error = strcmp(params->values[P_MISSING].s, "error") == 0;
    s->full = params->count > P_FULL && params->values[P_FULL].i;
    int64_t windows = params->values[P_WINDOWS].i, ctx_len = params->values[P_CTX].i;
    const char *save = params->values[P_SAVE].s;
    if (!(s->tokens_path = H->strdup(ctx, params->values[P_TOKENS].s)))
        return HVQ_E_NOMEM;
    if (!model_path || !*model_path)
        return H->error(ctx, HVQ_E_INPUT, "calibrate: the pipeline has no input model to run");

    /* The tokens first: a wrong file is found before the model is loaded. */
    int32_t *ids = NULL;
    hvq_status st = read_windows(ctx, s, ctx_len, &windows, &ids);
    if (st != HVQ_OK)
        return st;

    /* Computed already in this run (another instance): shared. */
    char *key = shared_key(ctx, s, model_path, windows, ctx_len);
    if (!key) {
        H->free(ids);
        return HVQ_E_NOMEM;
    }
    if (shared_take(ctx, s, key)) {
        H->free(ids);
        H->free(key);
        if (save && *save && !shared_saved(s->shared, save))
            return save_imatrix(ctx, s, save, windows, ctx_len);
        return HVQ_OK;
    }

    /* The model being compressed. */
    double nll = 0;
    uint64_t scored = 0;
    st = calibrate(ctx, s, model_path, ids, windows, ctx_len, &nll, &scored);
    H->free(ids);
    if (st != HVQ_OK) {
        H->free(key);
        return st;
    }
    uint64_t tokens = (uint64_t)windows * (uint64_t)ctx_len;
    H->log(ctx, HVQ_LOG_INFO,
           "calibrate: calibrated on %llu tokens (%lld windows of %lld) from %s (perplexity "
           "on them %.4f)",
           (unsigned long long)tokens, (long long)windows, (long long)ctx_len, s->tokens_path,
           scored ? exp(nll / (double)scored) : NAN);
    st = shared_put(ctx, s, key);
    H->free(key);
    if (st != HVQ_OK)
        return st;
    if (save && *save && !shared_saved(s->shared, save))
        return save_imatrix(ctx, s, save, windows, ctx_len);
    return HVQ_OK;
}

/* The block and linear layer a tensor name belongs to: 0 when none. */
static int find_linear(const cal_state *s, const char *name, int *layer, int *which)
{
    /* Both schemes put the layer number after the first run of text. */
    static const char hf[] = "model.layers.", ll[] = "blk.";
    const char *p;
    if (strncmp(name, hf, sizeof hf - 1) == 0)
        p = name + sizeof hf - 1;
    else if (strncmp(name, ll, sizeof ll - 1) == 0)
        p = name + sizeof ll - 1;
    else
        return 0;
    long l = 0;
    const char *d = p;
    while (*d >= '0' && *d <= '9' && d - p < 9)
        l = l * 10 + (*d++ - '0');
    if (d == p || *d != '.' || l >= s->n_layers)
        return 0;
    for (int g = 0; g < 2; g++)
        for (int w = 0; w < s->n_lin; w++) {
            char buf[128];
            linear_name(s, g, (int)l, w, buf, sizeof buf);
            if (strcmp(buf, name) == 0) {
                *layer = (int)l;
                *which = w;
                return 1;
            }
        }
    return 0;
}

/* The accumulator of tensor t (cols input columns), checked; *acc = NULL
 * for a tensor that is no linear layer of a block (missing: uniform). */
static hvq_status acc_for(hvq_ctx *ctx, const cal_state *s, const hvq_tensor_info *t,
                          uint64_t cols, const cal_acc **acc)
{
    const hvq_host *H = ctx->host;
    int layer, which;
    *acc = NULL;
    if (!find_linear(s, t->name, &layer, &which))
        return s->missing_error
                   ? H->error(ctx, HVQ_E_INPUT,
                              "calibrate: tensor '%s' is not a linear layer of a block (q, k, "
                              "v, o, gate, up, down), so calibration gives it no Hessian "
                              "diagonal; exclude it in select, or set missing: uniform to use "
                              "H = 1 for it",
                              t->name)
                   : HVQ_OK;
    const cal_acc *a = acc_of(s, layer, which);
    if (!a->sum || a->count == 0)
        return H->error(ctx, HVQ_E_INTERNAL,
                        "calibrate: no activations were recorded for tensor '%s' (layer %d, %s)",
                        t->name, layer, s->lin[which].short_name);
    if (a->n != cols)
        return H->error(ctx, HVQ_E_INPUT,
                        "calibrate: the diagonal for tensor '%s' has %llu values (the model's "
                        "activations) but the tensor has %llu input columns",
                        t->name, (unsigned long long)a->n, (unsigned long long)cols);
    *acc = a;
    return HVQ_OK;
}

/* hessian_get_full: mean x x^T, mirrored from the upper triangle; for a
 * tensor with H = 1 (missing: uniform), the identity. */
static hvq_status cal_get_full(hvq_ctx *ctx, void *state, const hvq_tensor_info *t,
                               uint64_t rows, uint64_t cols, float *h)
{
    cal_state *s = state;
    const cal_acc *a;
    (void)rows;
    if (!s->full)
        return HVQ_E_NOTFOUND;
    hvq_status st = acc_for(ctx, s, t, cols, &a);
    if (st != HVQ_OK)
        return st;
    for (uint64_t i = 0; i < cols; i++)
        for (uint64_t j = i; j < cols; j++) {
            float v = a ? (float)(a->full[i * cols + j] / (double)a->count) : (float)(i == j);
            h[i * cols + j] = h[j * cols + i] = v;
        }
    return HVQ_OK;
}

static hvq_status cal_get_h(hvq_ctx *ctx, void *state, const hvq_tensor_info *t, uint64_t rows,
                            uint64_t cols, float *h)
{
    cal_state *s = state;
    (void)rows;
    const cal_acc *a;
    hvq_status st = acc_for(ctx, s, t, cols, &a);
    if (st != HVQ_OK)
        return st;
    if (!a) {
        if ((st = hvq_names_add(ctx, &s->missing, t->name)) != HVQ_OK)
            return st;
        for (uint64_t j = 0; j < cols; j++)
            h[j] = 1.0f;
        return HVQ_OK;
    }
    for (uint64_t j = 0; j < cols; j++)
        h[j] = (float)(a->sum[j] / (double)a->count);
    return HVQ_OK;
}

static void cal_close(hvq_ctx *ctx, void *state)
{
    const hvq_host *H = ctx->host;
    cal_state *s = state;
    if (!s)
        return;
    if (s->missing.n > 0) {
        char list[CAL_WARN_LIST * 160 + 64];
        hvq_names_list(&s->missing, CAL_WARN_LIST, list, sizeof list);
        H->log(ctx, HVQ_LOG_WARN,
               "calibrate: %zu tensor%s %s not a linear layer of a block, H = 1 was used for "
               "%s: %s",
               s->missing.n, s->missing.n == 1 ? "" : "s", s->missing.n == 1 ? "is" : "are",
               s->missing.n == 1 ? "it" : "them", list);
    }
    hvq_names_free(ctx, &s->missing);
    if (!s->shared) /* else the host's, released when the run ends */
        free_acc(H, s->acc, s->n_layers, s->n_slots);
    H->free(s->tokens_path);
    H->free(s);
}

static const hvq_plugin cal_plugin = {
    HVQ_PLUGIN_HEADER,
    .kinds = HVQ_KIND_HESSIAN,
    .name = "calibrate",
    .version = "1.1.0",
    .summary = "Hessian diagonals from running the model on calibration tokens (mean of x^2)",
    .license = "MIT",
    .params = cal_params,
    .hessian_open = cal_open,
    .hessian_get = cal_get_h,
    .hessian_close = cal_close,
    .hessian_get_full = cal_get_full,
};

HVQ_REGISTER_PLUGIN(cal_plugin)
