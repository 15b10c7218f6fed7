/* model "llama": the Llama-family forward pass (llama.c) and its
 * SentencePiece tokenizer (llama_tok.c) as a model plugin, for
 * `hvqconv eval` and the calibrate Hessian source (docs/plugins.md, "Model
 * plugins").
 *
 * Weights come from a model the host opened (host->model_find, converted
 * to float32 by host->convert and checked to be finite) or from the
 * caller's supplier (a decoded container); opened lazily
 * (model_open_lazy), block by block as model_windows reaches them. The
 * configuration is config.json text or GGUF metadata, as llama.h
 * describes. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include "plugin.h"

#include "convert.h"
#include "finite.h"
#include "llama.h"
#include "llama_tok.h"
#include "ggml_quants.h"

#include <stdlib.h>
#include <string.h>

/* The linear layers in hvq_llama_linear order; q/k/v and gate/up share an
 * input. */
static const hvq_model_linear llama_linears[] = {
    {"q", "model.layers.%d.self_attn.q_proj.weight", "blk.%d.attn_q.weight", 0},
    {"k", "model.layers.%d.self_attn.k_proj.weight", "blk.%d.attn_k.weight", 0},
    {"v", "model.layers.%d.self_attn.v_proj.weight", "blk.%d.attn_v.weight", 0},
    {"o", "model.layers.%d.self_attn.o_proj.weight", "blk.%d.attn_output.weight", 1},
    {"gate", "model.layers.%d.mlp.gate_proj.weight", "blk.%d.ffn_gate.weight", 2},
    {"up", "model.layers.%d.mlp.up_proj.weight", "blk.%d.ffn_up.weight", 2},
    {"down", "model.layers.%d.mlp.down_proj.weight", "blk.%d.ffn_down.weight", 3},
    {NULL, NULL, NULL, 0},
};

typedef struct lm_source {
    hvq_model *m;
    const char *path;
} lm_source;

/* t (F32, F16, BF16 or F64) as float32 into *data (host->alloc). */
static hvq_status to_f32(hvq_ctx *ctx, const char *path, const char *name, const hvq_tensor *t,
                         float **data)
{
    const hvq_host *H = ctx->host;
    uint64_t numel = hvq_numel(&t->info);
    if (t->info.nbytes != numel * H->dtype_size(t->info.dtype) ||
        numel > SIZE_MAX / sizeof(float))
        return H->error(ctx, HVQ_E_INPUT, "%s: tensor '%s': size does not match its shape",
                        path, name);
    float *out = H->alloc(ctx, (size_t)(numel ? numel : 1) * sizeof *out);
    if (!out)
        return HVQ_E_NOMEM;
    hvq_status st = HVQ_OK;
    if (t->info.dtype == HVQ_DTYPE_F32)
        memcpy(out, t->data, (size_t)numel * sizeof *out);
    else
        st = H->convert(ctx, HVQ_DTYPE_F32, out, t->info.dtype, t->data, (size_t)numel);
    if (st != HVQ_OK) {
        H->free(out);
        return st;
    }
    *data = out;
    return HVQ_OK;
}

/* t, stored as llama.cpp blocks of type gt (a GGUF tensor other than Q8_0
 * and Q4_0, which the gguf source gives as F32), dequantized into *data
 * (host->alloc) with ggml's reference dequantizers (libhvqggml). */
static hvq_status from_blocks(hvq_ctx *ctx, const char *path, const char *name,
                              const hvq_tensor *t, const hvq_ggml_type *gt, float **data)
{
    const hvq_host *H = ctx->host;
    uint64_t numel = hvq_numel(&t->info);
    int64_t row = t->info.ndim ? t->info.shape[t->info.ndim - 1] : 1;
    if (row % gt->block != 0 || t->info.nbytes != numel / (uint64_t)gt->block * gt->block_bytes ||
        numel > SIZE_MAX / sizeof(float) || !t->data)
        return H->error(ctx, HVQ_E_INPUT, "%s: tensor '%s': %s blocks do not match its shape",
                        path, name, gt->ggml);
    float *out = H->alloc(ctx, (size_t)(numel ? numel : 1) * sizeof *out);
    if (!out)
        return HVQ_E_NOMEM;
    gt->dequantize_row(t->data, out, (int64_t)numel);
    *data = out;
    return HVQ_OK;
}

/* hvq_llama_get_fn over a host-opened model: one tensor by name as
 * float32 (malloc'd), refused when a value is not finite. */
static hvq_status get_from_model(void *ud, hvq_ctx *ctx, const char *name, float **data,
                                 int *ndim, int64_t shape[HVQ_MAX_DIMS])
{
    const hvq_host *H = ctx->host;
    lm_source *s = ud;
    hvq_tensor t;
    hvq_status st = H->model_find(ctx, s->m, name, &t);
    if (st != HVQ_OK)
        return st;
    uint64_t numel = hvq_numel(&t.info);
    const hvq_ggml_type *gt = hvq_ggml_type_find_ggml(t.info.dtype_name);
    if (gt)
        st = from_blocks(ctx, s->path, name, &t, gt, data);
    else if (t.info.dtype != HVQ_DTYPE_F32 && t.info.dtype != HVQ_DTYPE_F16 &&
             t.info.dtype != HVQ_DTYPE_BF16 && t.info.dtype != HVQ_DTYPE_F64)
        return H->error(ctx, HVQ_E_UNSUPPORTED, "%s: tensor '%s' has type %s; the forward pass "
                        "reads F32, F16, BF16, F64 and llama.cpp's block types (Q8_0, Q4_0, "
                        "Q4_1, Q5_0, Q5_1, IQ4_NL, Q2_K..Q6_K, IQ4_XS)", s->path, name,
                        t.info.dtype_name ? t.info.dtype_name : H->dtype_name(t.info.dtype));
    else
        st = to_f32(ctx, s->path, name, &t, data);
    if (st != HVQ_OK)
        return st;
    uint64_t bad = hvq_first_nonfinite(*data, numel);
    if (bad < numel) {
        H->free(*data);
        *data = NULL;
        return H->error(ctx, HVQ_E_INPUT, "%s: tensor '%s': value %llu is not finite (a model "
                        "with NaN or infinite weights cannot be run)",
                        s->path, name, (unsigned long long)bad);
    }
    *ndim = t.info.ndim;
    memcpy(shape, t.info.shape, sizeof t.info.shape);
    return HVQ_OK;
}

/* An opened model. A lazy one keeps its tensor supplier (the host's model,
 * or the caller's get) for the passes: src and path live here. */
typedef struct lm_state {
    hvq_llama *m;
    lm_source src;
    char *path;
} lm_state;

static void lm_close(hvq_ctx *ctx, void *state)
{
    lm_state *s = state;
    if (!s)
        return;
    hvq_llama_free(s->m);
    ctx->host->free(s->path);
    ctx->host->free(s);
}

static hvq_status lm_open_as(hvq_ctx *ctx, const hvq_model_input *in, int lazy, void **state)
{
    const hvq_host *H = ctx->host;
    *state = NULL;
    if (!in->model && !in->get)
        return H->error(ctx, HVQ_E_INTERNAL, "%s: no model and no tensor supplier",
                        in->path ? in->path : "model");
    lm_state *s = H->calloc(ctx, 1, sizeof *s);
    if (!s)
        return HVQ_E_NOMEM;
    *state = s;
    if (in->path && !(s->path = H->strdup(ctx, in->path)))
        return HVQ_E_NOMEM;
    s->src = (lm_source){in->model, s->path};
    hvq_llama_source src = {in->config_json, in->config_json ? NULL : in->meta,
                            in->config_json ? 0 : in->n_meta,
                            in->model ? get_from_model : in->get,
                            in->model ? (void *)&s->src : in->get_ud, in->path};
    return lazy ? hvq_llama_load_lazy(ctx, &src, &s->m) : hvq_llama_load(ctx, &src, &s->m);
}

static hvq_status lm_open(hvq_ctx *ctx, const hvq_params *params, const hvq_model_input *in,
                          void **state)
{
    (void)params;
    return lm_open_as(ctx, in, 0, state);
}

static hvq_status lm_open_lazy(hvq_ctx *ctx, const hvq_params *params,
                               const hvq_model_input *in, void **state)
{
    (void)params;
    return lm_open_as(ctx, in, 1, state);
}

static void lm_info(void *state, hvq_model_info *info)
{
    const hvq_llama_config *c = hvq_llama_get_config(((lm_state *)state)->m);
    memset(info, 0, sizeof *info);
    info->architecture = "llama";
    info->n_layers = c->n_layers;
    info->hidden = c->hidden;
    info->intermediate = c->intermediate;
    info->n_heads = c->n_heads;
    info->n_kv_heads = c->n_kv_heads;
    info->head_dim = c->head_dim;
    info->vocab = c->vocab;
    info->tied = c->tied;
    info->gguf_names = c->rope_interleaved;
}

static hvq_status lm_window(hvq_ctx *ctx, void *state, const int32_t *tokens, int n,
                            double *nll, uint64_t *n_scored)
{
    return hvq_llama_window(ctx, ((lm_state *)state)->m, tokens, n, nll, n_scored);
}

static hvq_status lm_windows(hvq_ctx *ctx, void *state, const int32_t *tokens, int n_windows,
                             int n, double *nll, uint64_t *n_scored)
{
    return hvq_llama_windows(ctx, ((lm_state *)state)->m, tokens, n_windows, n, nll, n_scored);
}

static void lm_set_hook(void *state, hvq_model_hook_fn fn, void *ud)
{
    hvq_llama_set_hook(((lm_state *)state)->m, fn, ud);
}

static void lm_set_stop(void *state, const volatile sig_atomic_t *flag)
{
    hvq_llama_set_stop(((lm_state *)state)->m, flag);
}

static hvq_status tok_open(hvq_ctx *ctx, const char *path, const hvq_meta *meta, size_t n,
                           const char *what, void **tok)
{
    hvq_tokenizer *t = NULL;
    hvq_status st = path ? hvq_tokenizer_load_llama2c(ctx, path, &t)
                         : hvq_tokenizer_from_gguf(ctx, meta, n, what, &t);
    *tok = t;
    return st;
}

static hvq_status tok_encode_text(hvq_ctx *ctx, void *tok, const char *text, size_t len,
                                  int32_t **ids, size_t *n)
{
    return hvq_tokenizer_encode_text(ctx, tok, text, len, ids, n);
}

static int tok_vocab(void *tok) { return hvq_tokenizer_size(tok); }

static void tok_close(hvq_ctx *ctx, void *tok)
{
    (void)ctx;
    hvq_tokenizer_free(tok);
}

static const hvq_plugin llama_plugin = {
    HVQ_PLUGIN_HEADER,
    .kinds = HVQ_KIND_MODEL,
    .name = "llama",
    .version = "1.0.0",
    .summary = "Llama-family forward pass (Llama 1/2/3, TinyLlama, SmolLM2, Mistral) in "
               "float32, its SentencePiece tokenizer, and conversion between Hugging Face and "
               "llama.cpp (GGUF) layouts",
    .license = "MIT",
    .architectures = "llama mistral",
    .model_linears = llama_linears,
    .model_open = lm_open,
    .model_info = lm_info,
    .model_window = lm_window,
    .model_set_hook = lm_set_hook,
    .model_set_stop = lm_set_stop,
    .model_close = lm_close,
    .tokenizer_open = tok_open,
    .tokenizer_encode_text = tok_encode_text,
    .tokenizer_vocab = tok_vocab,
    .tokenizer_close = tok_close,
    .model_open_lazy = lm_open_lazy,
    .model_windows = lm_windows,
    .convert_open = hvq_llama_convert_open,
    .convert_tensor = hvq_llama_convert_tensor,
    .convert_rows = hvq_llama_convert_rows,
    .convert_meta = hvq_llama_convert_meta,
    .convert_file = hvq_llama_convert_file,
    .convert_close = hvq_llama_convert_close,
};

HVQ_REGISTER_PLUGIN(llama_plugin)
