/* A CPU forward pass for Llama-family models; see llama.h for the contract.
 *
 * Layout of the computation for one window of n tokens (row-major, one row
 * per token):
 *   x = embed[tokens]                                   [n, hidden]
 *   per layer: h = rmsnorm(x) * attn_norm
 *              q = h Wq^T, k = h Wk^T, v = h Wv^T; RoPE on q and k
 *              a = causal softmax(q k^T / sqrt(head_dim)) v, per head, the
 *                  query head j reading key/value head j / (n_heads/n_kv)
 *              x += a Wo^T
 *              h = rmsnorm(x) * ffn_norm
 *              x += (silu(h Wgate^T) * (h Wup^T)) Wdown^T
 *   logits = (rmsnorm(x) * out_norm) Wout^T, then the log-softmax in double.
 *
 * Several windows run layer-major (hvq_llama_windows): each window keeps
 * its own x, and block l runs for every window in turn before block l + 1,
 * so a lazily loaded model (hvq_llama_load_lazy) reads one block's weights
 * at a time; one window is the same computation, whatever the grouping.
 *
 * Determinism: every output element of a matrix product is one dot product
 * computed by one thread in a fixed order (eight interleaved partial sums
 * combined pairwise, then the tail), whatever the number of threads and
 * whatever kernel (portable or AVX2: no fused multiply-add) runs it; the
 * attention rows, norms and per-token log-likelihoods likewise, and the
 * per-token log-likelihoods are summed in token order. So a result depends
 * on the model and the tokens only.
 */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include "llama.h"
#include "json.h"
#include "meta.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LL_MAX_LAYERS 4096
#define LL_MAX_DIM (1 << 24)
#define LL_MAX_THREADS 256 /* as the host's loop */

/* ------------------------------------------------------------------------
 * The model
 * ---------------------------------------------------------------------- */

typedef struct ll_layer {
    float *attn_norm, *ffn_norm;
    float *w[HVQ_LLAMA_N_LINEAR];
} ll_layer;

struct hvq_llama {
    hvq_llama_config cfg;
    char *what;
    int gguf_names;
    float *embed;      /* [vocab, hidden] */
    float *out_norm;   /* [hidden] */
    float *head;       /* [vocab, hidden]; == embed when tied */
    ll_layer *layers;
    double *inv_freq;  /* head_dim / 2 rotary frequencies */
    int lazy;          /* hvq_llama_load_lazy: the pass reads the weights */
    int tied_known;    /* the configuration says whether the head is tied */
    hvq_llama_get_fn get; /* the tensor supplier (kept while lazy) */
    void *ud;
    hvq_llama_hook_fn hook;
    void *hook_ud;
    const volatile sig_atomic_t *stop; /* hvq_llama_set_stop */
};

static const char *const hf_linear[HVQ_LLAMA_N_LINEAR] = {
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};
static const char *const gguf_linear[HVQ_LLAMA_N_LINEAR] = {
    "attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};

const char *hvq_llama_linear_name(int gguf_names, int layer, hvq_llama_linear which,
                                  char *buf, size_t len)
{
    if ((int)which < 0 || which >= HVQ_LLAMA_N_LINEAR) {
        if (len)
            buf[0] = '\0';
        return buf;
    }
    if (gguf_names)
        snprintf(buf, len, "blk.%d.%s.weight", layer, gguf_linear[which]);
    else
        snprintf(buf, len, "model.layers.%d.%s.weight", layer, hf_linear[which]);
    return buf;
}

const hvq_llama_config *hvq_llama_get_config(const hvq_llama *m) { return &m->cfg; }

void hvq_llama_set_hook(hvq_llama *m, hvq_llama_hook_fn fn, void *ud)
{
    m->hook = fn;
    m->hook_ud = ud;
}

void hvq_llama_set_stop(hvq_llama *m, const volatile sig_atomic_t *flag) { m->stop = flag; }

/* Frees block l's weights. */
static void ll_drop_layer(ll_layer *L)
{
    free(L->attn_norm);
    free(L->ffn_norm);
    for (int k = 0; k < HVQ_LLAMA_N_LINEAR; k++)
        free(L->w[k]);
    memset(L, 0, sizeof *L);
}

/* Frees every weight (a lazy model after a pass): what a pass needs is
 * read again when it reaches it. */
static void ll_unload(hvq_llama *m)
{
    if (m->layers)
        for (int l = 0; l < m->cfg.n_layers; l++)
            ll_drop_layer(&m->layers[l]);
    if (m->head != m->embed)
        free(m->head);
    free(m->embed);
    free(m->out_norm);
    m->head = m->embed = m->out_norm = NULL;
}

size_t hvq_llama_weights_held(const hvq_llama *m)
{
    const hvq_llama_config *c = &m->cfg;
    int64_t H = c->hidden, I = c->intermediate;
    int64_t QD = (int64_t)c->n_heads * c->head_dim, KD = (int64_t)c->n_kv_heads * c->head_dim;
    const int64_t lin[HVQ_LLAMA_N_LINEAR] = {QD * H, KD * H, KD * H, H * QD, I * H, I * H, H * I};
    size_t n = 0;
    for (int l = 0; m->layers && l < c->n_layers; l++) {
        const ll_layer *L = &m->layers[l];
        n += (L->attn_norm ? (size_t)H : 0) + (L->ffn_norm ? (size_t)H : 0);
        for (int k = 0; k < HVQ_LLAMA_N_LINEAR; k++)
            n += L->w[k] ? (size_t)lin[k] : 0;
    }
    n += m->embed ? (size_t)c->vocab * (size_t)H : 0;
    n += m->head && m->head != m->embed ? (size_t)c->vocab * (size_t)H : 0;
    return n + (m->out_norm ? (size_t)H : 0);
}

void hvq_llama_free(hvq_llama *m)
{
    if (!m)
        return;
    ll_unload(m);
    free(m->layers);
    free(m->inv_freq);
    free(m->what);
    free(m);
}

/* ------------------------------------------------------------------------
 * Configuration: Hugging Face config.json
 * ---------------------------------------------------------------------- */

/* Rotary scaling read from a configuration, applied to inv_freq. */
typedef struct ll_rope_scaling {
    int kind;                 /* 0 none, 1 linear, 2 llama3 */
    double factor, low_freq_factor, high_freq_factor, original_max;
} ll_rope_scaling;

static hvq_status cfg_int(hvq_ctx *ctx, const char *what, const hvq_json_value *root,
                          const char *key, int required, int *out)
{
    const hvq_json_value *v = hvq_json_get(root, key);
    int64_t i;
    if (!v || v->type == HVQ_JSON_NULL) {
        if (required)
            return ctx->host->error(ctx, HVQ_E_INPUT, "%s: config.json has no \"%s\"", what, key);
        return HVQ_OK;
    }
    if (hvq_json_int64(v, &i) != 0 || i < 1 || i > LL_MAX_DIM)
        return ctx->host->error(ctx, HVQ_E_INPUT,
                                "%s: config.json: \"%s\" must be a positive integer (at most %d)",
                                what, key, LL_MAX_DIM);
    *out = (int)i;
    return HVQ_OK;
}

static hvq_status cfg_num(hvq_ctx *ctx, const char *what, const hvq_json_value *root,
                          const char *key, double *out)
{
    const hvq_json_value *v = hvq_json_get(root, key);
    if (!v || v->type == HVQ_JSON_NULL)
        return HVQ_OK;
    if (hvq_json_double(v, out) != 0 || !isfinite(*out) || *out <= 0)
        return ctx->host->error(ctx, HVQ_E_INPUT,
                                "%s: config.json: \"%s\" must be a positive number", what, key);
    return HVQ_OK;
}

static hvq_status parse_rope_scaling_json(hvq_ctx *ctx, const char *what,
                                          const hvq_json_value *rs, ll_rope_scaling *sc)
{
    if (!rs || rs->type == HVQ_JSON_NULL)
        return HVQ_OK;
    if (rs->type != HVQ_JSON_OBJECT)
        return ctx->host->error(ctx, HVQ_E_INPUT, "%s: config.json: \"rope_scaling\" must be an "
                                "object or null", what);
    const char *type = hvq_json_string(hvq_json_get(rs, "rope_type"), NULL);
    if (!type)
        type = hvq_json_string(hvq_json_get(rs, "type"), NULL);
    if (!type || strcmp(type, "default") == 0)
        return HVQ_OK;
    double f = 1.0;
    hvq_status st = cfg_num(ctx, what, rs, "factor", &f);
    if (st != HVQ_OK)
        return st;
    if (strcmp(type, "linear") == 0) {
        sc->kind = 1;
        sc->factor = f;
        return HVQ_OK;
    }
    if (strcmp(type, "llama3") == 0) {
        sc->kind = 2;
        sc->factor = f;
        sc->low_freq_factor = 1.0;
        sc->high_freq_factor = 4.0;
        sc->original_max = 8192.0;
        if ((st = cfg_num(ctx, what, rs, "low_freq_factor", &sc->low_freq_factor)) != HVQ_OK ||
            (st = cfg_num(ctx, what, rs, "high_freq_factor", &sc->high_freq_factor)) != HVQ_OK ||
            (st = cfg_num(ctx, what, rs, "original_max_position_embeddings",
                          &sc->original_max)) != HVQ_OK)
            return st;
        if (sc->high_freq_factor <= sc->low_freq_factor)
            return ctx->host->error(ctx, HVQ_E_INPUT, "%s: config.json: rope_scaling "
                                    "high_freq_factor must exceed low_freq_factor", what);
        return HVQ_OK;
    }
    return ctx->host->error(ctx, HVQ_E_UNSUPPORTED,
                            "%s: config.json: rope_scaling type '%s' is not supported "
                            "(default, linear and llama3 are)", what, type);
}

static hvq_status parse_config_json(hvq_ctx *ctx, const char *what, const char *text,
                                    hvq_llama_config *c, int *tied_known, ll_rope_scaling *sc)
{
    hvq_json_error je;
    hvq_json_doc *doc = hvq_json_parse(text, strlen(text), 0, &je);
    if (!doc)
        return ctx->host->error(ctx, HVQ_E_INPUT, "%s: config.json: %s", what, je.message);
    const hvq_json_value *root = hvq_json_root(doc);
    hvq_status st = HVQ_OK;
    if (root->type != HVQ_JSON_OBJECT) {
        st = ctx->host->error(ctx, HVQ_E_INPUT, "%s: config.json is not a JSON object", what);
        goto done;
    }
    const char *mt = hvq_json_string(hvq_json_get(root, "model_type"), NULL);
    if (mt && strcmp(mt, "llama") != 0 && strcmp(mt, "mistral") != 0) {
        st = ctx->host->error(ctx, HVQ_E_UNSUPPORTED,
                              "%s: config.json: model_type '%s' is not a Llama-family model "
                              "this forward pass runs (llama, mistral)", what, mt);
        goto done;
    }
    static const char *const biases[] = {"attention_bias", "mlp_bias"};
    for (size_t i = 0; i < 2; i++)
        if (hvq_json_bool(hvq_json_get(root, biases[i])) == 1) {
            st = ctx->host->error(ctx, HVQ_E_UNSUPPORTED,
                                  "%s: config.json: \"%s\": true is not supported (Llama "
                                  "linear layers have no bias)", what, biases[i]);
            goto done;
        }
    c->n_kv_heads = 0;
    c->head_dim = 0;
    c->vocab = 0;
    if ((st = cfg_int(ctx, what, root, "hidden_size", 1, &c->hidden)) != HVQ_OK ||
        (st = cfg_int(ctx, what, root, "intermediate_size", 1, &c->intermediate)) != HVQ_OK ||
        (st = cfg_int(ctx, what, root, "num_hidden_layers", 1, &c->n_layers)) != HVQ_OK ||
        (st = cfg_int(ctx, what, root, "num_attention_heads", 1, &c->n_heads)) != HVQ_OK ||
        (st = cfg_int(ctx, what, root, "num_key_value_heads", 0, &c->n_kv_heads)) != HVQ_OK ||
        (st = cfg_int(ctx, what, root, "head_dim", 0, &c->head_dim)) != HVQ_OK ||
        (st = cfg_int(ctx, what, root, "vocab_size", 0, &c->vocab)) != HVQ_OK)
        goto done;
    double eps = 1e-6, theta = 10000.0;
    if ((st = cfg_num(ctx, what, root, "rms_norm_eps", &eps)) != HVQ_OK ||
        (st = cfg_num(ctx, what, root, "rope_theta", &theta)) != HVQ_OK)
        goto done;
    c->rms_eps = (float)eps;
    c->rope_theta = (float)theta;
    int tie = hvq_json_bool(hvq_json_get(root, "tie_word_embeddings"));
    *tied_known = tie >= 0;
    c->tied = tie == 1;
    c->rope_interleaved = 0;
    st = parse_rope_scaling_json(ctx, what, hvq_json_get(root, "rope_scaling"), sc);
done:
    hvq_json_free(doc);
    return st;
}

/* ------------------------------------------------------------------------
 * Configuration: GGUF metadata (typed JSON text per key)
 * ---------------------------------------------------------------------- */

typedef struct ll_gguf {
    const hvq_meta *meta;
    size_t n;
    const char *what;
    char arch[64];
} ll_gguf;

/* The parsed typed value of key, or NULL (absent). *doc must be freed. */
static const hvq_json_value *gguf_value(hvq_ctx *ctx, const ll_gguf *g, const char *key,
                                        hvq_json_doc **doc, const char **type, hvq_status *st)
{
    int bad;
    const hvq_json_value *v = hvq_meta_typed(g->meta, g->n, key, doc, type, &bad);
    *st = HVQ_OK;
    if (bad) {
        hvq_json_free(*doc);
        *doc = NULL;
        *st = ctx->host->error(ctx, HVQ_E_INPUT, "%s: metadata '%s' is not a typed GGUF value",
                               g->what, key);
    }
    return v;
}

/* The longest metadata key an architecture's value is looked up under. */
#define LL_KEY_LEN 160

/* gguf_value of the architecture's key "ARCH.suffix" (its name into key). */
static const hvq_json_value *arch_value(hvq_ctx *ctx, const ll_gguf *g, const char *suffix,
                                        char key[LL_KEY_LEN], hvq_json_doc **doc,
                                        const char **type, hvq_status *st)
{
    snprintf(key, LL_KEY_LEN, "%s.%s", g->arch, suffix);
    return gguf_value(ctx, g, key, doc, type, st);
}

/* An integer key "ARCH.suffix": 0 when absent and not required. */
static hvq_status gguf_int(hvq_ctx *ctx, const ll_gguf *g, const char *suffix, int required,
                           int *out)
{
    char key[LL_KEY_LEN];
    hvq_json_doc *doc;
    const char *type;
    hvq_status st;
    const hvq_json_value *v = arch_value(ctx, g, suffix, key, &doc, &type, &st);
    if (st != HVQ_OK)
        return st;
    if (!v) {
        if (required)
            return ctx->host->error(ctx, HVQ_E_INPUT, "%s: the GGUF metadata has no '%s'",
                                    g->what, key);
        return HVQ_OK;
    }
    int64_t i = 0;
    if (strcmp(type, "array") == 0)
        st = ctx->host->error(ctx, HVQ_E_UNSUPPORTED,
                              "%s: metadata '%s' is an array (per-layer values are not "
                              "supported)", g->what, key);
    else if (hvq_json_int64(v, &i) != 0 || i < 1 || i > LL_MAX_DIM)
        st = ctx->host->error(ctx, HVQ_E_INPUT,
                              "%s: metadata '%s' must be a positive integer (at most %d)",
                              g->what, key, LL_MAX_DIM);
    else
        *out = (int)i;
    hvq_json_free(doc);
    return st;
}

/* A float key; *out untouched when absent. */
static hvq_status gguf_float(hvq_ctx *ctx, const ll_gguf *g, const char *suffix, double *out)
{
    char key[LL_KEY_LEN];
    hvq_json_doc *doc;
    const char *type;
    hvq_status st;
    const hvq_json_value *v = arch_value(ctx, g, suffix, key, &doc, &type, &st);
    if (st != HVQ_OK || !v)
        return st;
    double d;
    if (hvq_json_double(v, &d) != 0 || !isfinite(d) || d <= 0)
        st = ctx->host->error(ctx, HVQ_E_INPUT, "%s: metadata '%s' must be a positive number",
                              g->what, key);
    else
        *out = d;
    hvq_json_free(doc);
    return st;
}

/* A string key (any name), copied into buf; "" when absent. */
static hvq_status gguf_string(hvq_ctx *ctx, const ll_gguf *g, const char *key, char *buf,
                              size_t len)
{
    hvq_json_doc *doc;
    const char *type;
    hvq_status st;
    buf[0] = '\0';
    const hvq_json_value *v = gguf_value(ctx, g, key, &doc, &type, &st);
    if (st != HVQ_OK || !v)
        return st;
    const char *s = hvq_json_string(v, NULL);
    if (!s || strlen(s) >= len)
        st = ctx->host->error(ctx, HVQ_E_INPUT, "%s: metadata '%s' must be a short string",
                              g->what, key);
    else
        snprintf(buf, len, "%s", s);
    hvq_json_free(doc);
    return st;
}

static hvq_status parse_gguf_meta(hvq_ctx *ctx, const char *what, const hvq_meta *meta,
                                  size_t n, hvq_llama_config *c, ll_rope_scaling *sc)
{
    ll_gguf g = {meta, n, what, ""};
    hvq_status st = gguf_string(ctx, &g, "general.architecture", g.arch, sizeof g.arch);
    if (st != HVQ_OK)
        return st;
    if (!g.arch[0])
        snprintf(g.arch, sizeof g.arch, "llama");
    if (strcmp(g.arch, "llama") != 0)
        return ctx->host->error(ctx, HVQ_E_UNSUPPORTED,
                                "%s: GGUF architecture '%s' is not supported (this forward pass "
                                "runs 'llama')", what, g.arch);
    memset(c, 0, sizeof *c);
    int rope_dims = 0;
    if ((st = gguf_int(ctx, &g, "block_count", 1, &c->n_layers)) != HVQ_OK ||
        (st = gguf_int(ctx, &g, "embedding_length", 1, &c->hidden)) != HVQ_OK ||
        (st = gguf_int(ctx, &g, "feed_forward_length", 1, &c->intermediate)) != HVQ_OK ||
        (st = gguf_int(ctx, &g, "attention.head_count", 1, &c->n_heads)) != HVQ_OK ||
        (st = gguf_int(ctx, &g, "attention.head_count_kv", 0, &c->n_kv_heads)) != HVQ_OK ||
        (st = gguf_int(ctx, &g, "attention.key_length", 0, &c->head_dim)) != HVQ_OK ||
        (st = gguf_int(ctx, &g, "rope.dimension_count", 0, &rope_dims)) != HVQ_OK ||
        (st = gguf_int(ctx, &g, "vocab_size", 0, &c->vocab)) != HVQ_OK)
        return st;
    double eps = 1e-5, theta = 10000.0;
    if ((st = gguf_float(ctx, &g, "attention.layer_norm_rms_epsilon", &eps)) != HVQ_OK ||
        (st = gguf_float(ctx, &g, "rope.freq_base", &theta)) != HVQ_OK)
        return st;
    c->rms_eps = (float)eps;
    c->rope_theta = (float)theta;
    c->rope_interleaved = 1;
    if (rope_dims) {
        int hd = c->head_dim ? c->head_dim : c->hidden / c->n_heads;
        if (rope_dims != hd)
            return ctx->host->error(ctx, HVQ_E_UNSUPPORTED,
                                    "%s: metadata '%s.rope.dimension_count' is %d, not the head "
                                    "size %d (partial rotary embeddings are not supported)",
                                    what, g.arch, rope_dims, hd);
    }
    /* RoPE scaling: none or linear. */
    char key[160], type[32];
    snprintf(key, sizeof key, "%s.rope.scaling.type", g.arch);
    if ((st = gguf_string(ctx, &g, key, type, sizeof type)) != HVQ_OK)
        return st;
    if (type[0] && strcmp(type, "none") != 0) {
        if (strcmp(type, "linear") != 0)
            return ctx->host->error(ctx, HVQ_E_UNSUPPORTED,
                                    "%s: metadata '%s' is '%s' (none and linear are supported)",
                                    what, key, type);
        double f = 1.0;
        if ((st = gguf_float(ctx, &g, "rope.scaling.factor", &f)) != HVQ_OK)
            return st;
        sc->kind = 1;
        sc->factor = f;
    }
    /* The vocabulary size from the tokenizer when not given. */
    if (!c->vocab) {
        hvq_json_doc *doc;
        const char *t;
        const hvq_json_value *v = gguf_value(ctx, &g, "tokenizer.ggml.tokens", &doc, &t, &st);
        if (st != HVQ_OK)
            return st;
        if (v && v->type == HVQ_JSON_ARRAY && v->count > 0 && v->count <= LL_MAX_DIM)
            c->vocab = (int)v->count;
        hvq_json_free(doc);
    }
    return HVQ_OK;
}

/* ------------------------------------------------------------------------
 * Loading
 * ---------------------------------------------------------------------- */

static void shape_str(char *buf, size_t len, int ndim, const int64_t *shape)
{
    size_t o = (size_t)snprintf(buf, len, "[");
    for (int d = 0; d < ndim && o < len; d++)
        o += (size_t)snprintf(buf + o, len - o, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (o < len)
        snprintf(buf + o, len - o, "]");
}

/* Loads tensor name, expecting shape [d0] (d1 == 0) or [d0, d1]; d0 == -1
 * accepts any first dimension, returned in *got0. */
static hvq_status load_tensor(hvq_ctx *ctx, hvq_llama *m, const char *name, int64_t d0,
                              int64_t d1, float **out, int64_t *got0, int optional)
{
    float *data = NULL;
    int ndim = 0;
    int64_t shape[HVQ_MAX_DIMS] = {0};
    *out = NULL;
    hvq_status st = m->get(m->ud, ctx, name, &data, &ndim, shape);
    if (st == HVQ_E_NOTFOUND) {
        free(data);
        if (optional)
            return HVQ_E_NOTFOUND;
        return ctx->host->error(ctx, HVQ_E_INPUT,
                                "%s: no tensor '%s' (a Llama model with %s names has one)",
                                m->what, name, m->gguf_names ? "llama.cpp (GGUF)" : "Hugging Face");
    }
    if (st != HVQ_OK) {
        free(data);
        return st;
    }
    int want_ndim = d1 ? 2 : 1;
    int ok = ndim == want_ndim && (d0 < 0 ? shape[0] >= 1 && shape[0] <= LL_MAX_DIM
                                          : shape[0] == d0) &&
             (want_ndim == 1 || shape[1] == d1);
    if (!ok) {
        char got[160], want[80];
        shape_str(got, sizeof got, ndim, shape);
        if (d1 && d0 < 0)
            snprintf(want, sizeof want, "[N, %lld]", (long long)d1);
        else if (d1)
            snprintf(want, sizeof want, "[%lld, %lld]", (long long)d0, (long long)d1);
        else
            snprintf(want, sizeof want, "[%lld]", (long long)d0);
        free(data);
        return ctx->host->error(ctx, HVQ_E_INPUT,
                                "%s: tensor '%s' has shape %s, but the configuration (hidden "
                                "%d, intermediate %d, heads %d, kv heads %d, head size %d, "
                                "vocabulary %d) needs %s: not a Llama model of that shape",
                                m->what, name, got, m->cfg.hidden, m->cfg.intermediate,
                                m->cfg.n_heads, m->cfg.n_kv_heads, m->cfg.head_dim,
                                m->cfg.vocab, want);
    }
    if (!data)
        return ctx->host->error(ctx, HVQ_E_INTERNAL, "%s: tensor '%s': no data", m->what, name);
    if (got0)
        *got0 = shape[0];
    *out = data;
    return HVQ_OK;
}

static hvq_status check_config(hvq_ctx *ctx, hvq_llama *m)
{
    hvq_llama_config *c = &m->cfg;
    if (c->n_layers > LL_MAX_LAYERS)
        return ctx->host->error(ctx, HVQ_E_INPUT, "%s: %d layers is more than this forward "
                                "pass supports (%d)", m->what, c->n_layers, LL_MAX_LAYERS);
    if (!c->n_kv_heads)
        c->n_kv_heads = c->n_heads;
    if (!c->head_dim) {
        if (c->hidden % c->n_heads)
            return ctx->host->error(ctx, HVQ_E_INPUT, "%s: hidden size %d is not a multiple of "
                                    "the %d attention heads", m->what, c->hidden, c->n_heads);
        c->head_dim = c->hidden / c->n_heads;
    }
    if (c->n_heads % c->n_kv_heads)
        return ctx->host->error(ctx, HVQ_E_INPUT, "%s: %d attention heads is not a multiple of "
                                "the %d key/value heads", m->what, c->n_heads, c->n_kv_heads);
    if (c->head_dim % 2)
        return ctx->host->error(ctx, HVQ_E_INPUT, "%s: the head size %d is odd (rotary "
                                "embeddings need pairs)", m->what, c->head_dim);
    if ((int64_t)c->n_heads * c->head_dim > LL_MAX_DIM)
        return ctx->host->error(ctx, HVQ_E_INPUT, "%s: heads x head size is too large", m->what);
    if (!(c->rms_eps > 0) || !(c->rope_theta > 0) || !isfinite(c->rope_theta))
        return ctx->host->error(ctx, HVQ_E_INPUT, "%s: bad rms_norm_eps or rope_theta", m->what);
    return HVQ_OK;
}

static void rope_frequencies(hvq_llama *m, const ll_rope_scaling *sc)
{
    int half = m->cfg.head_dim / 2;
    for (int i = 0; i < half; i++) {
        double f = pow((double)m->cfg.rope_theta, -2.0 * i / m->cfg.head_dim);
        if (sc->kind == 1) {
            f /= sc->factor;
        } else if (sc->kind == 2) {
            /* Llama 3.1: long wavelengths divided by factor, short ones
             * kept, a smooth blend in between. */
            double wavelen = 2.0 * 3.14159265358979323846 / f;
            double low_wl = sc->original_max / sc->low_freq_factor;
            double high_wl = sc->original_max / sc->high_freq_factor;
            if (wavelen > low_wl) {
                f /= sc->factor;
            } else if (wavelen >= high_wl) {
                double s = (sc->original_max / wavelen - sc->low_freq_factor) /
                           (sc->high_freq_factor - sc->low_freq_factor);
                f = (1.0 - s) * f / sc->factor + s * f;
            }
        }
        m->inv_freq[i] = f;
    }
}

/* The norms and linear layers of block l (names by m's scheme). */
static hvq_status load_layer(hvq_ctx *ctx, hvq_llama *m, int l)
{
    const hvq_llama_config *c = &m->cfg;
    int64_t H = c->hidden, I = c->intermediate;
    int64_t QD = (int64_t)c->n_heads * c->head_dim, KD = (int64_t)c->n_kv_heads * c->head_dim;
    int g = m->gguf_names;
    char name[256];
    hvq_status st;
    ll_layer *L = &m->layers[l];
    if (g)
        snprintf(name, sizeof name, "blk.%d.attn_norm.weight", l);
    else
        snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", l);
    if ((st = load_tensor(ctx, m, name, H, 0, &L->attn_norm, NULL, 0)) != HVQ_OK)
        return st;
    for (int k = 0; k < HVQ_LLAMA_N_LINEAR; k++) {
        int64_t rows = k == HVQ_LLAMA_Q ? QD
                       : k == HVQ_LLAMA_K || k == HVQ_LLAMA_V ? KD
                       : k == HVQ_LLAMA_O || k == HVQ_LLAMA_DOWN ? H
                                                                  : I;
        int64_t cols = k == HVQ_LLAMA_O ? QD : k == HVQ_LLAMA_DOWN ? I : H;
        hvq_llama_linear_name(g, l, (hvq_llama_linear)k, name, sizeof name);
        if ((st = load_tensor(ctx, m, name, rows, cols, &L->w[k], NULL, 0)) != HVQ_OK)
            return st;
        if (k == HVQ_LLAMA_O) {
            if (g)
                snprintf(name, sizeof name, "blk.%d.ffn_norm.weight", l);
            else
                snprintf(name, sizeof name, "model.layers.%d.post_attention_layernorm.weight",
                         l);
            if ((st = load_tensor(ctx, m, name, H, 0, &L->ffn_norm, NULL, 0)) != HVQ_OK)
                return st;
        }
    }
    return HVQ_OK;
}

/* The rotary frequencies, with the configuration's scaling and, in GGUF
 * files (Llama 3.1), the per-pair divisors of rope_freqs.weight. */
static hvq_status load_rope(hvq_ctx *ctx, hvq_llama *m, const ll_rope_scaling *sc)
{
    const hvq_llama_config *c = &m->cfg;
    m->inv_freq = calloc((size_t)c->head_dim / 2, sizeof *m->inv_freq);
    if (!m->inv_freq)
        return ctx->host->error(ctx, HVQ_E_NOMEM, "out of memory");
    rope_frequencies(m, sc);
    if (!m->gguf_names)
        return HVQ_OK;
    float *ff = NULL;
    hvq_status st = load_tensor(ctx, m, "rope_freqs.weight", c->head_dim / 2, 0, &ff, NULL, 1);
    if (st == HVQ_E_NOTFOUND)
        return HVQ_OK;
    if (st != HVQ_OK)
        return st;
    for (int i = 0; i < c->head_dim / 2; i++) {
        if (!(ff[i] > 0) || !isfinite(ff[i])) {
            free(ff);
            return ctx->host->error(ctx, HVQ_E_INPUT, "%s: rope_freqs.weight has a "
                                    "non-positive entry", m->what);
        }
        m->inv_freq[i] /= ff[i];
    }
    free(ff);
    return HVQ_OK;
}

/* The configuration, from config.json or the GGUF metadata, checked. */
static hvq_status ll_config(hvq_ctx *ctx, const hvq_llama_source *src, hvq_llama *m,
                            ll_rope_scaling *sc)
{
    hvq_status st;
    if (src->config_json) {
        st = parse_config_json(ctx, m->what, src->config_json, &m->cfg, &m->tied_known, sc);
        m->gguf_names = 0;
    } else if (src->gguf_meta || src->n_gguf_meta) {
        st = parse_gguf_meta(ctx, m->what, src->gguf_meta, src->n_gguf_meta, &m->cfg, sc);
        m->gguf_names = 1;
    } else {
        st = ctx->host->error(ctx, HVQ_E_INPUT, "%s: no configuration (config.json or GGUF "
                              "metadata)", m->what);
    }
    return st == HVQ_OK ? check_config(ctx, m) : st;
}

/* The token embedding, unless held; the first read sets the vocabulary
 * when the configuration left it out. */
static hvq_status load_embed(hvq_ctx *ctx, hvq_llama *m)
{
    if (m->embed)
        return HVQ_OK;
    int64_t vocab = 0;
    hvq_status st = load_tensor(ctx, m, m->gguf_names ? "token_embd.weight"
                                                      : "model.embed_tokens.weight",
                                m->cfg.vocab ? m->cfg.vocab : -1, m->cfg.hidden, &m->embed,
                                &vocab, 0);
    if (st == HVQ_OK)
        m->cfg.vocab = (int)vocab;
    return st;
}

/* The final norm and the output head: a tensor of its own, else (absent,
 * or tied by the configuration) the token embedding. */
static hvq_status load_head(hvq_ctx *ctx, hvq_llama *m)
{
    hvq_llama_config *c = &m->cfg;
    int g = m->gguf_names;
    hvq_status st = load_tensor(ctx, m, g ? "output_norm.weight" : "model.norm.weight",
                                c->hidden, 0, &m->out_norm, NULL, 0);
    if (st != HVQ_OK)
        return st;
    if (!(m->tied_known && c->tied)) {
        st = load_tensor(ctx, m, g ? "output.weight" : "lm_head.weight", c->vocab, c->hidden,
                         &m->head, NULL, 1);
        if (st != HVQ_OK && st != HVQ_E_NOTFOUND)
            return st;
        c->tied = st == HVQ_E_NOTFOUND;
    }
    if (c->tied) {
        if ((st = load_embed(ctx, m)) != HVQ_OK)
            return st;
        m->head = m->embed;
    }
    return HVQ_OK;
}

/* hvq_llama_load and hvq_llama_load_lazy: a lazy model reads the
 * configuration, the embedding and the rotary frequencies here, the rest
 * when a pass reaches it. */
static hvq_status ll_open(hvq_ctx *ctx, const hvq_llama_source *src, int lazy,
                          hvq_llama **out)
{
    *out = NULL;
    if (!src || !src->get)
        return ctx->host->error(ctx, HVQ_E_INTERNAL, "hvq_llama_load: no tensor supplier");
    hvq_llama *m = calloc(1, sizeof *m);
    if (!m)
        return ctx->host->error(ctx, HVQ_E_NOMEM, "out of memory");
    const char *what = src->what ? src->what : "model";
    if (!(m->what = malloc(strlen(what) + 1))) {
        free(m);
        return ctx->host->error(ctx, HVQ_E_NOMEM, "out of memory");
    }
    strcpy(m->what, what);
    m->get = src->get;
    m->ud = src->ud;
    m->lazy = lazy;
    ll_rope_scaling sc = {0, 1.0, 1.0, 4.0, 8192.0};
    hvq_status st = ll_config(ctx, src, m, &sc);
    if (st == HVQ_OK)
        st = load_embed(ctx, m);
    if (st == HVQ_OK && !(m->layers = calloc((size_t)m->cfg.n_layers, sizeof *m->layers)))
        st = ctx->host->error(ctx, HVQ_E_NOMEM, "out of memory");
    for (int l = 0; st == HVQ_OK && !lazy && l < m->cfg.n_layers; l++)
        st = load_layer(ctx, m, l);
    if (st == HVQ_OK && !lazy)
        st = load_head(ctx, m);
    if (st == HVQ_OK)
        st = load_rope(ctx, m, &sc);
    if (st != HVQ_OK) {
        hvq_llama_free(m);
        return st;
    }
    if (!lazy) { /* the caller's, valid for this call only */
        m->get = NULL;
        m->ud = NULL;
    }
    *out = m;
    return HVQ_OK;
}

hvq_status hvq_llama_load(hvq_ctx *ctx, const hvq_llama_source *src, hvq_llama **out)
{
    return ll_open(ctx, src, 0, out);
}

hvq_status hvq_llama_load_lazy(hvq_ctx *ctx, const hvq_llama_source *src, hvq_llama **out)
{
    return ll_open(ctx, src, 1, out);
}

/* ------------------------------------------------------------------------
 * Threads: the host's parallel loop (host->parallel_for) over [0, n) in
 * chunks whose size depends only on the job's shape, never on the thread
 * count; every item is computed whole by one chunk, so the bits do not
 * depend on how the chunks are spread.
 * ---------------------------------------------------------------------- */

typedef void (*ll_range_fn)(void *arg, int64_t begin, int64_t end);

/* Stopping a window: every worker reads the caller's flag (hvq_llama_set_stop)
 * at each tile of a matrix product, each attention row and each row of
 * logits, and the window between its steps; the first to see it set latches
 * it in `seen`, so the others stop at their next check without reading the
 * flag again. A stopped step leaves its output unfinished: the window then
 * only unwinds. */
typedef struct ll_stop {
    const volatile sig_atomic_t *flag; /* NULL: never stop */
    atomic_int seen;
} ll_stop;

static int ll_stopped(ll_stop *s)
{
    if (atomic_load_explicit(&s->seen, memory_order_relaxed))
        return 1;
    if (s->flag && *s->flag) {
        atomic_store_explicit(&s->seen, 1, memory_order_relaxed);
        return 1;
    }
    return 0;
}

typedef struct ll_task {
    ll_range_fn fn;
    void *arg;
} ll_task;

static void ll_chunk(void *p, uint64_t chunk, uint64_t begin, uint64_t end)
{
    const ll_task *t = p;
    (void)chunk;
    t->fn(t->arg, (int64_t)begin, (int64_t)end);
}

/* Work per chunk: at least ~512K multiply-adds (some 50 us, well above the
 * cost of handing a chunk to a thread). */
#define LL_CHUNK_WORK 524288.0

/* Runs fn over [0, n) in chunks of items that cost `item_work` each: as
 * many items as make LL_CHUNK_WORK, rounded up to a multiple of align. */
static void ll_parallel(hvq_ctx *ctx, int64_t n, int64_t align, double item_work,
                        ll_range_fn fn, void *arg)
{
    if (n <= 0)
        return;
    double want = item_work > 0 ? LL_CHUNK_WORK / item_work : (double)n;
    int64_t chunk = want >= (double)n ? n : (int64_t)want + 1;
    chunk = (chunk + align - 1) / align * align;
    ll_task t = {fn, arg};
    hvq_host_parallel_for(ctx, (uint64_t)n, (uint64_t)chunk, ll_chunk, &t);
}

/* ------------------------------------------------------------------------
 * Matrix product Y[n, out] = X[n, in] W[out, in]^T
 * ---------------------------------------------------------------------- */

/* One dot product in the fixed order: lane j sums a[k]*b[k] for k = j mod 8
 * over the whole blocks of 8, the lanes combine pairwise, then the tail. */
#define LL_COMBINE(s) \
    ((((s)[0] + (s)[1]) + ((s)[2] + (s)[3])) + (((s)[4] + (s)[5]) + ((s)[6] + (s)[7])))

#if defined(__GNUC__) || defined(__clang__)
#define LL_VECTORS 1
typedef float ll_v4 __attribute__((vector_size(16)));
typedef float ll_v8 __attribute__((vector_size(32)));
#define LL_COMBINE2(lo, hi) \
    ((((lo)[0] + (lo)[1]) + ((lo)[2] + (lo)[3])) + (((hi)[0] + (hi)[1]) + ((hi)[2] + (hi)[3])))
#endif

/* The kernels' scalar ends, past the last whole 8 columns: four rows
 * (W's rows w0 .. w0 + 3 * stride) into y[0..3], and one row. */
static inline void ll_tail4(const float *x, const float *w0, int64_t stride, int64_t nb,
                            int64_t in, float r0, float r1, float r2, float r3, float *y)
{
    const float *w1 = w0 + stride, *w2 = w1 + stride, *w3 = w2 + stride;
    for (int64_t k = nb; k < in; k++) {
        r0 += x[k] * w0[k];
        r1 += x[k] * w1[k];
        r2 += x[k] * w2[k];
        r3 += x[k] * w3[k];
    }
    y[0] = r0;
    y[1] = r1;
    y[2] = r2;
    y[3] = r3;
}

static inline float ll_tail1(const float *x, const float *w0, int64_t nb, int64_t in, float r0)
{
    for (int64_t k = nb; k < in; k++)
        r0 += x[k] * w0[k];
    return r0;
}

/* The kernels: rows [o0, o1) of W against tokens [t0, t1) of X. Four rows
 * at a time share each X row; every element is still its own dot product
 * in the order above. The portable vector kernel holds the eight lanes in
 * two 4-wide vectors (SSE2, NEON), the AVX2 one in one 8-wide vector. */
#ifdef LL_VECTORS
/* Eight columns of one row w into the two 4-wide sums. */
static inline void ll_acc2(ll_v4 xl, ll_v4 xh, const float *w, ll_v4 *l, ll_v4 *h)
{
    ll_v4 a, b;
    memcpy(&a, w, sizeof a);
    memcpy(&b, w + 4, sizeof b);
    *l += xl * a;
    *h += xh * b;
}

static void ll_kernel_vec(const float *X, const float *W, float *Y, int64_t in, int64_t out,
                          int64_t t0, int64_t t1, int64_t o0, int64_t o1)
{
    int64_t nb = in / 8 * 8;
    int64_t o = o0;
    for (; o + 4 <= o1; o += 4) {
        const float *w0 = W + o * in, *w1 = w0 + in, *w2 = w1 + in, *w3 = w2 + in;
        for (int64_t t = t0; t < t1; t++) {
            const float *x = X + t * in;
            ll_v4 l0 = {0}, h0 = {0}, l1 = {0}, h1 = {0}, l2 = {0}, h2 = {0}, l3 = {0}, h3 = {0};
            for (int64_t k = 0; k < nb; k += 8) {
                ll_v4 xl, xh;
                memcpy(&xl, x + k, sizeof xl);
                memcpy(&xh, x + k + 4, sizeof xh);
                ll_acc2(xl, xh, w0 + k, &l0, &h0);
                ll_acc2(xl, xh, w1 + k, &l1, &h1);
                ll_acc2(xl, xh, w2 + k, &l2, &h2);
                ll_acc2(xl, xh, w3 + k, &l3, &h3);
            }
            float r0 = LL_COMBINE2(l0, h0), r1 = LL_COMBINE2(l1, h1);
            float r2 = LL_COMBINE2(l2, h2), r3 = LL_COMBINE2(l3, h3);
            ll_tail4(x, w0, in, nb, in, r0, r1, r2, r3, Y + t * out + o);
        }
    }
    for (; o < o1; o++) {
        const float *w0 = W + o * in;
        for (int64_t t = t0; t < t1; t++) {
            const float *x = X + t * in;
            ll_v4 l0 = {0}, h0 = {0};
            for (int64_t k = 0; k < nb; k += 8) {
                ll_v4 xl, xh;
                memcpy(&xl, x + k, sizeof xl);
                memcpy(&xh, x + k + 4, sizeof xh);
                ll_acc2(xl, xh, w0 + k, &l0, &h0);
            }
            float r0 = LL_COMBINE2(l0, h0);
            Y[t * out + o] = ll_tail1(x, w0, nb, in, r0);
        }
    }
}

#if defined(__x86_64__) || defined(__i386__)
#define LL_HAVE_AVX2 1
__attribute__((target("avx2"))) static void ll_kernel_avx2(const float *X, const float *W,
                                                           float *Y, int64_t in, int64_t out,
                                                           int64_t t0, int64_t t1, int64_t o0,
                                                           int64_t o1)
{
    int64_t nb = in / 8 * 8;
    int64_t o = o0;
    for (; o + 4 <= o1; o += 4) {
        const float *w0 = W + o * in, *w1 = w0 + in, *w2 = w1 + in, *w3 = w2 + in;
        for (int64_t t = t0; t < t1; t++) {
            const float *x = X + t * in;
            ll_v8 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
            for (int64_t k = 0; k < nb; k += 8) {
                ll_v8 xv, v0, v1, v2, v3;
                memcpy(&xv, x + k, sizeof xv);
                memcpy(&v0, w0 + k, sizeof v0);
                memcpy(&v1, w1 + k, sizeof v1);
                memcpy(&v2, w2 + k, sizeof v2);
                memcpy(&v3, w3 + k, sizeof v3);
                a0 += xv * v0;
                a1 += xv * v1;
                a2 += xv * v2;
                a3 += xv * v3;
            }
            float r0 = LL_COMBINE(a0), r1 = LL_COMBINE(a1);
            float r2 = LL_COMBINE(a2), r3 = LL_COMBINE(a3);
            ll_tail4(x, w0, in, nb, in, r0, r1, r2, r3, Y + t * out + o);
        }
    }
    for (; o < o1; o++) {
        const float *w0 = W + o * in;
        for (int64_t t = t0; t < t1; t++) {
            const float *x = X + t * in;
            ll_v8 a0 = {0};
            for (int64_t k = 0; k < nb; k += 8) {
                ll_v8 xv, v0;
                memcpy(&xv, x + k, sizeof xv);
                memcpy(&v0, w0 + k, sizeof v0);
                a0 += xv * v0;
            }
            float r0 = LL_COMBINE(a0);
            Y[t * out + o] = ll_tail1(x, w0, nb, in, r0);
        }
    }
}
#endif
#endif

/* The portable kernel, the same arithmetic written with scalars. */
static void ll_kernel_plain(const float *X, const float *W, float *Y, int64_t in, int64_t out,
                            int64_t t0, int64_t t1, int64_t o0, int64_t o1)
{
    int64_t nb = in / 8 * 8;
    for (int64_t o = o0; o < o1; o++) {
        const float *w = W + o * in;
        for (int64_t t = t0; t < t1; t++) {
            const float *x = X + t * in;
            float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            for (int64_t k = 0; k < nb; k += 8)
                for (int j = 0; j < 8; j++)
                    s[j] += x[k + j] * w[k + j];
            float r = LL_COMBINE(s);
            for (int64_t k = nb; k < in; k++)
                r += x[k] * w[k];
            Y[t * out + o] = r;
        }
    }
}

typedef void (*ll_kernel_fn)(const float *, const float *, float *, int64_t, int64_t, int64_t,
                             int64_t, int64_t, int64_t);

static ll_kernel_fn ll_kernel(void)
{
#ifdef LL_HAVE_AVX2
    if (__builtin_cpu_supports("avx2"))
        return ll_kernel_avx2;
#endif
#ifdef LL_VECTORS
    return ll_kernel_vec;
#else
    return ll_kernel_plain;
#endif
}

typedef struct ll_mm {
    const float *X, *W;
    float *Y;
    int64_t n, in, out;
    ll_kernel_fn kernel;
    ll_stop *stop;
} ll_mm;

/* Tiles: TT tokens by TO output rows, so both stay in cache. */
#define LL_TT 32
#define LL_TO 16

static void ll_mm_range(void *arg, int64_t o0, int64_t o1)
{
    const ll_mm *j = arg;
    for (int64_t ob = o0; ob < o1; ob += LL_TO) {
        int64_t oe = ob + LL_TO < o1 ? ob + LL_TO : o1;
        for (int64_t tb = 0; tb < j->n; tb += LL_TT) {
            int64_t te = tb + LL_TT < j->n ? tb + LL_TT : j->n;
            if (ll_stopped(j->stop))
                return;
            j->kernel(j->X, j->W, j->Y, j->in, j->out, tb, te, ob, oe);
        }
    }
}

static void ll_matmul(ll_stop *stop, hvq_ctx *ctx, const float *X, const float *W, float *Y,
                      int64_t n, int64_t in, int64_t out)
{
    ll_mm j = {X, W, Y, n, in, out, ll_kernel(), stop};
    ll_parallel(ctx, out, 4, (double)n * (double)in, ll_mm_range, &j);
}

/* For the tests: runs every matrix kernel this build and machine have on
 * the same data; returns how many there are when all give the same bits,
 * else 0 (declared here, not in the header: internal). */
int hvq_llama_kernel_check(void);
int hvq_llama_kernel_check(void)
{
    enum { N = 5, IN = 77, OUT = 13 };
    float X[N * IN], W[OUT * IN], Y0[N * OUT], Y1[N * OUT];
    uint32_t s = 12345;
    for (int i = 0; i < N * IN; i++) {
        s = s * 1664525u + 1013904223u;
        X[i] = (float)((int)(s >> 9) - (1 << 22)) / (float)(1 << 22);
    }
    for (int i = 0; i < OUT * IN; i++) {
        s = s * 1664525u + 1013904223u;
        W[i] = (float)((int)(s >> 9) - (1 << 22)) / (float)(1 << 22);
    }
    ll_kernel_fn k[3];
    int nk = 0;
#ifdef LL_VECTORS
    k[nk++] = ll_kernel_vec;
#endif
#ifdef LL_HAVE_AVX2
    if (__builtin_cpu_supports("avx2"))
        k[nk++] = ll_kernel_avx2;
#endif
    ll_kernel_plain(X, W, Y0, IN, OUT, 0, N, 0, OUT);
    for (int i = 0; i < nk; i++) {
        memset(Y1, 0, sizeof Y1);
        k[i](X, W, Y1, IN, OUT, 0, N, 0, OUT);
        if (memcmp(Y0, Y1, sizeof Y0) != 0)
            return 0;
    }
    return nk + 1;
}

/* ------------------------------------------------------------------------
 * The window
 * ---------------------------------------------------------------------- */

static void rmsnorm(float *y, const float *x, const float *w, int64_t n, int64_t d, float eps)
{
    for (int64_t t = 0; t < n; t++) {
        const float *xr = x + t * d;
        float *yr = y + t * d;
        double ss = 0;
        for (int64_t i = 0; i < d; i++)
            ss += (double)xr[i] * xr[i];
        float r = (float)(1.0 / sqrt(ss / (double)d + (double)eps));
        for (int64_t i = 0; i < d; i++)
            yr[i] = xr[i] * r * w[i];
    }
}

/* Rotates n_heads heads of head_dim in each of n rows of width stride. */
static void rope(float *x, int64_t n, int64_t stride, int heads, int hd, int interleaved,
                 const float *cosv, const float *sinv)
{
    int half = hd / 2;
    for (int64_t t = 0; t < n; t++) {
        const float *c = cosv + t * half, *s = sinv + t * half;
        for (int h = 0; h < heads; h++) {
            float *v = x + t * stride + (int64_t)h * hd;
            if (interleaved) {
                for (int i = 0; i < half; i++) {
                    float a = v[2 * i], b = v[2 * i + 1];
                    v[2 * i] = a * c[i] - b * s[i];
                    v[2 * i + 1] = a * s[i] + b * c[i];
                }
            } else {
                for (int i = 0; i < half; i++) {
                    float a = v[i], b = v[i + half];
                    v[i] = a * c[i] - b * s[i];
                    v[i + half] = b * c[i] + a * s[i];
                }
            }
        }
    }
}

#ifdef LL_VECTORS
/* The attention's four-lane step: a[i] += s[i] * (the four floats at
 * x + i * step), i < 4, each lane its own multiply and add. ll_scores
 * steps across 16 adjacent keys (step 4, one query value for all), and
 * ll_weighted down four value rows (step stride, four weights). */
static inline void ll_madd4(ll_v4 a[4], const float s[4], const float *x, int64_t step)
{
    for (int i = 0; i < 4; i++) {
        ll_v4 xv;
        memcpy(&xv, x + i * step, sizeof xv);
        a[i] += s[i] * xv;
    }
}

/* acc + the sum over k from k0 to k1 - 1, in order, of c[k] * (the four
 * floats at x + k * step): the four-wide tails of both. */
static inline ll_v4 ll_axpy4(ll_v4 acc, const float *c, const float *x, int64_t step,
                             int64_t k0, int64_t k1)
{
    for (int64_t k = k0; k < k1; k++) {
        ll_v4 xv;
        memcpy(&xv, x + k * step, sizeof xv);
        acc += c[k] * xv;
    }
    return acc;
}
#endif

/* sc[j] = sum over d (in order) of q[d] * kt[d * stride + j], j < n. */
static void ll_scores(float *sc, const float *q, const float *kt, int64_t stride, int hd,
                      int64_t n)
{
    int64_t j = 0;
#ifdef LL_VECTORS
    for (; j + 16 <= n; j += 16) {
        ll_v4 c[4] = {{0, 0, 0, 0}, {0, 0, 0, 0}, {0, 0, 0, 0}, {0, 0, 0, 0}};
        for (int d = 0; d < hd; d++) {
            const float qd[4] = {q[d], q[d], q[d], q[d]};
            ll_madd4(c, qd, kt + d * stride + j, 4);
        }
        memcpy(sc + j, c, sizeof c);
    }
    for (; j + 4 <= n; j += 4) {
        ll_v4 acc = ll_axpy4((ll_v4){0, 0, 0, 0}, q, kt + j, stride, 0, hd);
        memcpy(sc + j, &acc, sizeof acc);
    }
#endif
    for (; j < n; j++) {
        float acc = 0;
        for (int d = 0; d < hd; d++)
            acc += q[d] * kt[d * stride + j];
        sc[j] = acc;
    }
}

/* o[d] = sum over j of p[j] * v[j * stride + d], d < hd, in a fixed order:
 * four partial sums over j mod 4 for the whole groups of four, combined
 * pairwise, then the remaining j in order. */
static void ll_weighted(float *o, const float *p, const float *v, int64_t stride, int hd,
                        int64_t n)
{
    int64_t nb = n / 4 * 4;
    int d = 0;
#ifdef LL_VECTORS
    for (; d + 4 <= hd; d += 4) {
        ll_v4 a[4] = {{0, 0, 0, 0}, {0, 0, 0, 0}, {0, 0, 0, 0}, {0, 0, 0, 0}};
        for (int64_t j = 0; j < nb; j += 4)
            ll_madd4(a, p + j, v + j * stride + d, stride);
        ll_v4 acc = ll_axpy4((a[0] + a[1]) + (a[2] + a[3]), p, v + d, stride, nb, n);
        memcpy(o + d, &acc, sizeof acc);
    }
#endif
    for (; d < hd; d++) {
        float a0 = 0, a1 = 0, a2 = 0, a3 = 0;
        for (int64_t j = 0; j < nb; j += 4) {
            a0 += p[j] * v[j * stride + d];
            a1 += p[j + 1] * v[(j + 1) * stride + d];
            a2 += p[j + 2] * v[(j + 2) * stride + d];
            a3 += p[j + 3] * v[(j + 3) * stride + d];
        }
        float acc = (a0 + a1) + (a2 + a3);
        for (int64_t j = nb; j < n; j++)
            acc += p[j] * v[j * stride + d];
        o[d] = acc;
    }
}

typedef struct ll_attn {
    const float *q, *kt, *v; /* kt: keys transposed, [n_kv][head_dim][n] */
    float *out;
    float *scratch; /* n_scratch rows of n floats */
    int64_t n;
    int n_heads, n_kv, hd;
    float scale;
    ll_stop *stop;
    int n_scratch;  /* the run's threads: no more chunks run at once */
    atomic_int busy[LL_MAX_THREADS]; /* scratch row i is in use */
} ll_attn;

/* A free scratch row for a chunk (one exists: at most n_scratch chunks
 * run at once); its contents never reach a result. */
static int ll_scratch_take(ll_attn *a)
{
    for (int i = 0;; i = (i + 1) % a->n_scratch)
        if (!atomic_exchange_explicit(&a->busy[i], 1, memory_order_acquire))
            return i;
}

/* Items are (head, position) pairs, head-major. */
static void ll_attn_range(void *arg, int64_t b, int64_t e)
{
    ll_attn *a = arg;
    int64_t qs = (int64_t)a->n_heads * a->hd, ks = (int64_t)a->n_kv * a->hd;
    int group = a->n_heads / a->n_kv;
    int slot = ll_scratch_take(a);
    float *sc = a->scratch + (int64_t)slot * a->n;
    for (int64_t it = b; it < e && !ll_stopped(a->stop); it++) {
        int h = (int)(it / a->n);
        int64_t i = it % a->n;
        int kh = h / group;
        const float *q = a->q + i * qs + (int64_t)h * a->hd;
        const float *kt = a->kt + (int64_t)kh * a->hd * a->n;
        /* Each score sums over d in order; the loop runs across keys. */
        ll_scores(sc, q, kt, a->n, a->hd, i + 1);
        float mx = -INFINITY;
        for (int64_t j = 0; j <= i; j++) {
            sc[j] *= a->scale;
            if (sc[j] > mx)
                mx = sc[j];
        }
        float sum = 0;
        for (int64_t j = 0; j <= i; j++) {
            sc[j] = expf(sc[j] - mx);
            sum += sc[j];
        }
        float inv = 1.0f / sum;
        for (int64_t j = 0; j <= i; j++)
            sc[j] *= inv;
        ll_weighted(a->out + i * qs + (int64_t)h * a->hd, sc, a->v + (int64_t)kh * a->hd, ks,
                    a->hd, i + 1);
    }
    atomic_store_explicit(&a->busy[slot], 0, memory_order_release);
}

typedef struct ll_nll {
    const float *logits; /* rows x vocab */
    const int32_t *targets;
    double *nll;         /* per row */
    int64_t vocab;
    ll_stop *stop;
} ll_nll;

static void ll_nll_range(void *arg, int64_t b, int64_t e)
{
    const ll_nll *a = arg;
    for (int64_t r = b; r < e && !ll_stopped(a->stop); r++) {
        const float *l = a->logits + r * a->vocab;
        double mx = l[0];
        for (int64_t i = 1; i < a->vocab; i++)
            if (l[i] > mx)
                mx = l[i];
        double s = 0;
        for (int64_t i = 0; i < a->vocab; i++)
            s += exp((double)l[i] - mx);
        a->nll[r] = -((double)l[a->targets[r]] - mx - log(s));
    }
}

#define LL_LOGIT_ROWS 64
#define LL_TABLE_ROWS 4096 /* positions of the RoPE tables between two checks */

/* The activations of W windows of N tokens (row-major, one row per
 * token): xs holds every window's residual stream, x points at the one
 * being run; the rest is scratch one window at a time reuses. */
typedef struct ll_run {
    hvq_llama *m;
    hvq_ctx *ctx;
    int threads;
    int64_t N, W, QD, KD;
    float *buf; /* everything below but row_nll */
    float *xs, *x, *h, *q, *att, *k, *v, *g, *u, *cosv, *sinv, *kt, *scratch, *logits;
    double *row_nll;
    ll_stop stop;
} ll_run;

static int ll_run_alloc(ll_run *r, hvq_llama *m, hvq_ctx *ctx, int threads, int64_t N,
                        int64_t W)
{
    const hvq_llama_config *c = &m->cfg;
    int64_t H = c->hidden, I = c->intermediate, V = c->vocab, half = c->head_dim / 2;
    int64_t QD = (int64_t)c->n_heads * c->head_dim, KD = (int64_t)c->n_kv_heads * c->head_dim;
    int64_t lrows = N - 1 < LL_LOGIT_ROWS ? N - 1 : LL_LOGIT_ROWS;
    *r = (ll_run){.m = m, .ctx = ctx, .threads = threads, .N = N, .W = W, .QD = QD, .KD = KD};
    if ((double)W * (double)N * (double)H > (double)(SIZE_MAX / sizeof(float) / 2))
        return 0;
    float **part[] = {&r->xs, &r->h,   &r->q,    &r->att, &r->k,  &r->v,       &r->g,
                      &r->u,  &r->cosv, &r->sinv, &r->kt,  &r->scratch, &r->logits};
    const int64_t floats[] = {W * N * H, N * H,    N * QD,   N * QD, N * KD, N * KD,    N * I,
                              N * I,     N * half, N * half, N * KD, threads * N, lrows * V};
    size_t total = 0;
    for (size_t i = 0; i < sizeof floats / sizeof floats[0]; i++)
        total += (size_t)floats[i];
    r->buf = malloc(total * sizeof(float));
    r->row_nll = malloc((size_t)(N > 1 ? N - 1 : 1) * sizeof(double));
    if (!r->buf || !r->row_nll) {
        free(r->buf);
        free(r->row_nll);
        return 0;
    }
    float *p = r->buf;
    for (size_t i = 0; i < sizeof floats / sizeof floats[0]; i++) {
        *part[i] = p;
        p += floats[i];
    }
    r->x = r->xs;
    r->stop.flag = m->stop;
    atomic_init(&r->stop.seen, 0);
    return 1;
}

/* The embeddings of every window's tokens and the RoPE tables (every
 * window has N positions); 0 when stopped. */
static int ll_tables(ll_run *r, const int32_t *tokens)
{
    const hvq_llama *m = r->m;
    int64_t H = m->cfg.hidden, half = m->cfg.head_dim / 2;
    for (int64_t t = 0; t < r->W * r->N; t++)
        memcpy(r->xs + t * H, m->embed + (int64_t)tokens[t] * H, (size_t)H * sizeof(float));
    for (int64_t t = 0; t < r->N; t++) {
        if (t % LL_TABLE_ROWS == 0 && ll_stopped(&r->stop))
            return 0;
        for (int64_t i = 0; i < half; i++) {
            double ang = (double)t * m->inv_freq[i];
            r->cosv[t * half + i] = (float)cos(ang);
            r->sinv[t * half + i] = (float)sin(ang);
        }
    }
    return 1;
}

static void ll_hook(const ll_run *r, int l, hvq_llama_linear which, const float *x, int64_t dim)
{
    if (r->m->hook)
        r->m->hook(r->m->hook_ud, l, which, x, (int)r->N, (int)dim);
}

/* The attention half of layer l: x += attention(rmsnorm(x)). */
static void ll_attention(ll_run *r, int l)
{
    const hvq_llama_config *c = &r->m->cfg;
    const ll_layer *L = &r->m->layers[l];
    int64_t N = r->N, H = c->hidden, QD = r->QD, KD = r->KD, hd = c->head_dim;
    ll_stop *st = &r->stop;
    rmsnorm(r->h, r->x, L->attn_norm, N, H, c->rms_eps);
    ll_hook(r, l, HVQ_LLAMA_Q, r->h, H);
    ll_hook(r, l, HVQ_LLAMA_K, r->h, H);
    ll_hook(r, l, HVQ_LLAMA_V, r->h, H);
    ll_matmul(st, r->ctx, r->h, L->w[HVQ_LLAMA_Q], r->q, N, H, QD);
    ll_matmul(st, r->ctx, r->h, L->w[HVQ_LLAMA_K], r->k, N, H, KD);
    ll_matmul(st, r->ctx, r->h, L->w[HVQ_LLAMA_V], r->v, N, H, KD);
    if (ll_stopped(st))
        return;
    rope(r->q, N, QD, c->n_heads, (int)hd, c->rope_interleaved, r->cosv, r->sinv);
    rope(r->k, N, KD, c->n_kv_heads, (int)hd, c->rope_interleaved, r->cosv, r->sinv);
    for (int64_t t = 0; t < N; t++)
        for (int64_t e = 0; e < KD; e++)
            r->kt[e * N + t] = r->k[t * KD + e];
    ll_attn aj = {.q = r->q, .kt = r->kt, .v = r->v, .out = r->att, .scratch = r->scratch,
                  .n = N, .n_heads = c->n_heads, .n_kv = c->n_kv_heads, .hd = (int)hd,
                  .scale = (float)(1.0 / sqrt((double)hd)), .stop = st,
                  .n_scratch = r->threads};
    for (int i = 0; i < r->threads; i++)
        atomic_init(&aj.busy[i], 0);
    /* An item (a query row) costs about N * head_dim on average. */
    ll_parallel(r->ctx, (int64_t)c->n_heads * N, 1, (double)N * (double)hd, ll_attn_range,
                &aj);
    if (ll_stopped(st))
        return;
    ll_hook(r, l, HVQ_LLAMA_O, r->att, QD);
    ll_matmul(st, r->ctx, r->att, L->w[HVQ_LLAMA_O], r->h, N, QD, H);
    for (int64_t i = 0; i < N * H; i++)
        r->x[i] += r->h[i];
}

/* The MLP half of layer l: x += down(silu(gate h) * up h), h = rmsnorm(x). */
static void ll_mlp(ll_run *r, int l)
{
    const hvq_llama_config *c = &r->m->cfg;
    const ll_layer *L = &r->m->layers[l];
    int64_t N = r->N, H = c->hidden, I = c->intermediate;
    ll_stop *st = &r->stop;
    rmsnorm(r->h, r->x, L->ffn_norm, N, H, c->rms_eps);
    ll_hook(r, l, HVQ_LLAMA_GATE, r->h, H);
    ll_hook(r, l, HVQ_LLAMA_UP, r->h, H);
    ll_matmul(st, r->ctx, r->h, L->w[HVQ_LLAMA_GATE], r->g, N, H, I);
    ll_matmul(st, r->ctx, r->h, L->w[HVQ_LLAMA_UP], r->u, N, H, I);
    if (ll_stopped(st))
        return;
    for (int64_t i = 0; i < N * I; i++)
        r->g[i] = r->g[i] / (1.0f + expf(-r->g[i])) * r->u[i];
    ll_hook(r, l, HVQ_LLAMA_DOWN, r->g, I);
    ll_matmul(st, r->ctx, r->g, L->w[HVQ_LLAMA_DOWN], r->h, N, I, H);
    for (int64_t i = 0; i < N * H; i++)
        r->x[i] += r->h[i];
}

/* The negative log-likelihood of tokens[1..N-1], row by row into row_nll:
 * only rows 0..N-2 predict a token of the window. */
static void ll_loss(ll_run *r, const int32_t *tokens)
{
    const hvq_llama *m = r->m;
    int64_t N = r->N, H = m->cfg.hidden, V = m->cfg.vocab;
    rmsnorm(r->h, r->x, m->out_norm, N - 1, H, m->cfg.rms_eps);
    for (int64_t r0 = 0; r0 < N - 1 && !ll_stopped(&r->stop); r0 += LL_LOGIT_ROWS) {
        int64_t rows = N - 1 - r0 < LL_LOGIT_ROWS ? N - 1 - r0 : LL_LOGIT_ROWS;
        ll_matmul(&r->stop, r->ctx, r->h + r0 * H, m->head, r->logits, rows, H, V);
        ll_nll nj = {r->logits, tokens + r0 + 1, r->row_nll + r0, V, &r->stop};
        ll_parallel(r->ctx, rows, 1, (double)V * 8, ll_nll_range, &nj);
    }
}

/* Block l for every window in order; a lazy model reads the block's
 * weights first and frees them after. */
static hvq_status ll_blocks(ll_run *r)
{
    hvq_llama *m = r->m;
    int64_t NH = r->N * m->cfg.hidden;
    for (int l = 0; l < m->cfg.n_layers && !ll_stopped(&r->stop); l++) {
        hvq_status st = m->lazy ? load_layer(r->ctx, m, l) : HVQ_OK;
        for (int64_t w = 0; w < r->W && st == HVQ_OK && !ll_stopped(&r->stop); w++) {
            r->x = r->xs + w * NH;
            ll_attention(r, l);
            if (!ll_stopped(&r->stop))
                ll_mlp(r, l);
        }
        if (m->lazy)
            ll_drop_layer(&m->layers[l]);
        if (st != HVQ_OK)
            return st;
    }
    return HVQ_OK;
}

/* The whole pass: embeddings, the blocks, then the head window by window,
 * adding each window's negative log-likelihood to *acc in window order. */
static hvq_status ll_pass(ll_run *r, const int32_t *tokens, double *acc)
{
    hvq_llama *m = r->m;
    hvq_status st = load_embed(r->ctx, m);
    if (st != HVQ_OK || !ll_tables(r, tokens))
        return st;
    if (m->lazy) { /* the head reads it again when tied */
        free(m->embed);
        m->embed = NULL;
    }
    if ((st = ll_blocks(r)) != HVQ_OK || ll_stopped(&r->stop))
        return st;
    if (m->lazy && (st = load_head(r->ctx, m)) != HVQ_OK)
        return st;
    for (int64_t w = 0; w < r->W && !ll_stopped(&r->stop); w++) {
        r->x = r->xs + w * r->N * m->cfg.hidden;
        ll_loss(r, tokens + w * r->N);
        double sum = 0;
        for (int64_t i = 0; i < r->N - 1; i++)
            sum += r->row_nll[i];
        *acc += sum;
    }
    return HVQ_OK;
}

/* Token ids against the vocabulary. */
static hvq_status ll_check_tokens(hvq_ctx *ctx, const hvq_llama *m, const int32_t *tokens,
                                  int n_windows, int n)
{
    if (n < 1)
        return ctx->host->error(ctx, HVQ_E_INPUT, "%s: a window needs at least one token",
                                m->what);
    if (n_windows < 1)
        return ctx->host->error(ctx, HVQ_E_INPUT, "%s: no windows to run", m->what);
    for (int w = 0; w < n_windows; w++)
        for (int i = 0; i < n; i++) {
            int32_t t = tokens[(size_t)w * (size_t)n + (size_t)i];
            if (t >= 0 && t < m->cfg.vocab)
                continue;
            if (n_windows == 1)
                return ctx->host->error(ctx, HVQ_E_INPUT,
                                        "%s: token id %ld at position %d of the window is "
                                        "outside the vocabulary of %d tokens", m->what, (long)t,
                                        i, m->cfg.vocab);
            return ctx->host->error(ctx, HVQ_E_INPUT,
                                    "%s: token id %ld at position %d of window %d is outside "
                                    "the vocabulary of %d tokens", m->what, (long)t, i, w,
                                    m->cfg.vocab);
        }
    return HVQ_OK;
}

hvq_status hvq_llama_windows(hvq_ctx *ctx, hvq_llama *m, const int32_t *tokens, int n_windows,
                             int n, double *nll, uint64_t *n_scored)
{
    hvq_status st = ll_check_tokens(ctx, m, tokens, n_windows, n);
    if (st != HVQ_OK)
        return st;
    int threads = ctx->host->threads(ctx);
    if (threads < 1)
        threads = 1;
    if (threads > LL_MAX_THREADS)
        threads = LL_MAX_THREADS;
    ll_run r;
    if (!ll_run_alloc(&r, m, ctx, threads, n, n_windows))
        return n_windows == 1
                   ? ctx->host->error(ctx, HVQ_E_NOMEM, "out of memory (a window of %d tokens)", n)
                   : ctx->host->error(ctx, HVQ_E_NOMEM, "out of memory (%d windows of %d tokens)",
                                      n_windows, n);
    double acc = *nll;
    st = ll_pass(&r, tokens, &acc);
    if (st == HVQ_OK && ll_stopped(&r.stop)) {
        st = ctx->host->error(ctx, HVQ_E_IO, "interrupted");
    } else if (st == HVQ_OK) {
        *nll = acc;
        *n_scored += (uint64_t)n_windows * (uint64_t)(r.N - 1);
    }
    if (m->lazy)
        ll_unload(m);
    free(r.buf);
    free(r.row_nll);
    return st;
}

hvq_status hvq_llama_window(hvq_ctx *ctx, hvq_llama *m, const int32_t *tokens, int n,
                            double *nll, uint64_t *n_scored)
{
    return hvq_llama_windows(ctx, m, tokens, 1, n, nll, n_scored);
}
