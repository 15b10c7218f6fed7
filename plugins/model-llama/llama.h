/* A CPU forward pass for Llama-family models (Llama 1/2/3, TinyLlama,
 * SmolLM2, Mistral-style): the inside of the model plugin "llama"
 * (model.c), which `hvqconv eval` and the `calibrate` Hessian source reach
 * through host->model_plugin.
 *
 * Model: token embedding; per layer RMSNorm -> attention (RoPE, grouped-
 * query heads, causal softmax) -> residual add -> RMSNorm -> SwiGLU MLP
 * (down(silu(gate x) * up x)) -> residual add; final RMSNorm; output head
 * (tied to the embedding or separate). Float32 weights and activations,
 * float32 accumulation in the kernels (double for the log-likelihood).
 *
 * Ownership: hvq_llama_load copies nothing it does not need and owns every
 * weight array it returns (float32 copies); free with hvq_llama_free.
 * hvq_llama_load_lazy reads the weights block by block as a pass runs.
 * Threads: a model may be run by one caller at a time; a window runs on
 * the host's parallel loop (host->parallel_for, up to host->threads), in
 * chunks that depend only on the shapes, with results independent of the
 * number of threads.
 */
#ifndef HVQ_MODEL_LLAMA_H
#define HVQ_MODEL_LLAMA_H

#include "plugin.h"

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

typedef struct hvq_llama_config {
    int n_layers;
    int hidden;          /* model width */
    int intermediate;    /* MLP width */
    int n_heads;
    int n_kv_heads;      /* grouped-query attention: n_heads % n_kv_heads == 0 */
    int head_dim;        /* hidden / n_heads */
    int vocab;
    int tied;            /* output head is the token embedding */
    float rms_eps;
    float rope_theta;
    /* RoPE pairing: 0 = Hugging Face "rotate half" (dimension i pairs with
     * i + head_dim/2), for safetensors checkpoints; 1 = llama.cpp's
     * interleaved pairs (2i, 2i+1), for GGUF files, whose q/k rows are
     * permuted accordingly. */
    int rope_interleaved;
} hvq_llama_config;

/* The seven linear layers of a block, in this order. */
typedef enum hvq_llama_linear {
    HVQ_LLAMA_Q = 0,
    HVQ_LLAMA_K,
    HVQ_LLAMA_V,
    HVQ_LLAMA_O,
    HVQ_LLAMA_GATE,
    HVQ_LLAMA_UP,
    HVQ_LLAMA_DOWN,
    HVQ_LLAMA_N_LINEAR
} hvq_llama_linear;

/* Tensor names of the linear layers, per naming scheme: the Hugging Face
 * name of layer l ("model.layers.%d.self_attn.q_proj.weight") or llama.cpp's
 * ("blk.%d.attn_q.weight"), written into buf. */
const char *hvq_llama_linear_name(int gguf_names, int layer, hvq_llama_linear which,
                                  char *buf, size_t len);

/* Supplies one tensor by name as float32 (malloc'd *data, the caller of the
 * callback frees it), with its shape ([out, in] for weights). Returns
 * HVQ_E_NOTFOUND when the model has no such tensor. */
typedef hvq_status (*hvq_llama_get_fn)(void *ud, hvq_ctx *ctx, const char *name,
                                       float **data, int *ndim, int64_t shape[HVQ_MAX_DIMS]);

/* Where the configuration comes from: Hugging Face config.json text
 * (hidden_size, intermediate_size, num_hidden_layers, num_attention_heads,
 * num_key_value_heads, vocab_size, rms_norm_eps, rope_theta,
 * tie_word_embeddings), or GGUF metadata pairs as the gguf source gives
 * them (llama.block_count, llama.embedding_length, ... as typed JSON text).
 * Exactly one of config_json / gguf_meta is used (config_json first). */
typedef struct hvq_llama_source {
    const char *config_json;       /* NULL when none */
    const hvq_meta *gguf_meta;     /* NULL when none */
    size_t n_gguf_meta;
    hvq_llama_get_fn get;          /* tensor supplier */
    void *ud;
    const char *what;              /* the model's path, for messages */
} hvq_llama_source;

typedef struct hvq_llama hvq_llama;

/* Builds a model: parses the configuration, loads and checks every tensor
 * (names by scheme: GGUF names when the configuration came from GGUF
 * metadata, else Hugging Face names; shapes against the configuration).
 * Errors name the model and the tensor or key. */
hvq_status hvq_llama_load(hvq_ctx *ctx, const hvq_llama_source *src, hvq_llama **out);
/* hvq_llama_load reading only the configuration, the token embedding (for
 * the vocabulary) and the rotary frequencies: a pass (hvq_llama_windows,
 * hvq_llama_window) reads each block's weights when it reaches the block
 * and frees them after it, the embedding and the head likewise, so src->get
 * and src->ud must stay valid until hvq_llama_free. The configuration's
 * `tied` is known after the first pass when it does not say. */
hvq_status hvq_llama_load_lazy(hvq_ctx *ctx, const hvq_llama_source *src, hvq_llama **out);
void hvq_llama_free(hvq_llama *m);
/* The float32 weight values the model holds now (for the tests). */
size_t hvq_llama_weights_held(const hvq_llama *m);
const hvq_llama_config *hvq_llama_get_config(const hvq_llama *m);

/* Called, when set, with the activations entering a linear layer (which:
 * an hvq_llama_linear): x is n_tokens rows of in_dim values (row-major),
 * valid for the call. Q, K and V share one input, as do GATE and UP: the
 * hook is called for each. */
typedef hvq_model_hook_fn hvq_llama_hook_fn;
void hvq_llama_set_hook(hvq_llama *m, hvq_llama_hook_fn fn, void *ud);

/* When set, a window stops soon after *flag becomes nonzero (set by a
 * signal handler or another thread): every worker thread checks it at each
 * tile of a matrix product (32 tokens by 16 outputs) and at each attention
 * or logit row, and the window between its steps, so that even a window of
 * a million tokens stops after at most one such item per thread.
 * NULL (the default): windows always run to the end. */
void hvq_llama_set_stop(hvq_llama *m, const volatile sig_atomic_t *flag);

/* Runs one window of n tokens (1 <= n <= any length; token ids checked
 * against the vocabulary) from an empty cache and adds to *nll the negative
 * log-likelihood (natural log, double) of tokens[1..n-1] given their
 * prefixes, and n-1 to *n_scored. Stopped (hvq_llama_set_stop): HVQ_E_IO
 * with the message "interrupted", *nll and *n_scored untouched, every
 * thread joined and nothing left allocated. */
hvq_status hvq_llama_window(hvq_ctx *ctx, hvq_llama *m, const int32_t *tokens, int n,
                            double *nll, uint64_t *n_scored);

/* n_windows windows of n tokens (window w: tokens[w*n .. w*n+n)) run
 * layer-major: block l for every window in order, then block l + 1, the
 * head last; the hook sees block l's inputs for window 0, 1, ... . The
 * same bits as hvq_llama_window on each window in turn: *nll gets each
 * window's sum in window order, *n_scored n_windows * (n - 1). Holds
 * n_windows * n * hidden floats of activations. */
hvq_status hvq_llama_windows(hvq_ctx *ctx, hvq_llama *m, const int32_t *tokens, int n_windows,
                             int n, double *nll, uint64_t *n_scored);

#endif
