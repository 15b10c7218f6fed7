/* Perplexity of a Llama-family model over a token file, and the `eval`
 * command (core/cmd_eval.c), on a model plugin (HVQ_KIND_MODEL: the one
 * whose architectures list the GGUF metadata's general.architecture, else
 * "llama"), opened through host->model_plugin; the core has no model code.
 *
 * A model is a safetensors file or model directory, a GGUF file, or an hvq
 * container (decoded tensor by tensor while loading, nothing written). Its
 * configuration, first found wins:
 *   - config_path (a Hugging Face config.json; tensors then have Hugging
 *     Face names and rotate-half RoPE order);
 *   - GGUF metadata: the model's own (a GGUF file) or, for a container, the
 *     source model's (hvq.source_metadata), when it has general.architecture
 *     (llama.cpp names and RoPE order);
 *   - config.json in the model directory or beside the model file; for a
 *     container, beside or in the model its pipeline read (hvq.pipeline's
 *     input:, relative to the current directory, else to the container's
 *     directory), else beside the container.
 *
 * Tokens: a 1-D integer .npy (or a one-array .npz), or raw little-endian
 * int32 (a file ending in .bin). The stream is cut into consecutive windows
 * of ctx_len tokens from its start (a last partial window is dropped), at
 * most max_windows of them (0: all); every token after the first of each
 * window is scored.
 */
#ifndef HVQ_CORE_EVAL_H
#define HVQ_CORE_EVAL_H

#include "ctx.h"
#include "plugin.h"
#include "registry.h"

#include <stdint.h>

typedef struct hvq_eval_result {
    double nll;           /* mean negative log-likelihood per scored token, nats */
    double ppl;           /* exp(nll) */
    uint64_t n_scored;    /* n_windows * (ctx_len - 1) */
    uint64_t n_windows;
    double seconds;       /* the forward passes (loading excluded) */
    double load_seconds;  /* reading the model and the tokens */
    uint64_t n_tokens;    /* tokens in the file */
    int ctx_len;
    char kind[32];        /* "safetensors", "gguf", "hvq container", ... */
    hvq_model_info config;  /* the model plugin's model_info */
} hvq_eval_result;

/* Evaluates model_path on tokens_path. ctx_len >= 2; max_windows 0 means
 * every whole window; config_path may be NULL. Uses ctx's thread count; the
 * result does not depend on it. Errors (HVQ_E_INPUT for a bad model, token
 * file or argument) name the file. reg must hold the format plugins (and,
 * for a container, the plugins that decode it). */
hvq_status hvq_eval_model(hvq_ctx *ctx, const hvq_registry *reg, const char *model_path,
                          const char *tokens_path, int ctx_len, int max_windows,
                          const char *config_path, hvq_eval_result *res);

/* The same on a text: paragraphs separated by blank lines, each tokenized
 * with BOS and the dummy-prefix space (the model plugin's tokenizer_*) by the llama2.c
 * tokenizer.bin at tokenizer_path, or, when NULL, by the SentencePiece
 * vocabulary in the model's GGUF metadata (a container: its source's). */
hvq_status hvq_eval_model_text(hvq_ctx *ctx, const hvq_registry *reg, const char *model_path,
                               const char *text_path, const char *tokenizer_path, int ctx_len,
                               int max_windows, const char *config_path, hvq_eval_result *res);

/* Reads a token file (see above; common/tokens.h, the reader calibrate
 * uses too) into malloc'd int32 ids (*n of them); ids are checked to be
 * non-negative and to fit an int32. */
hvq_status hvq_eval_read_tokens(hvq_ctx *ctx, const char *path, int32_t **ids, uint64_t *n);

/* The command. argv[0] is "eval"; returns an exit status (0, 2 bad input,
 * 1 other failures). */
int hvq_cmd_eval(int argc, char **argv, const char *const *plugin_dirs, size_t n_plugin_dirs,
                 const hvq_ctx_opts *opts);

#endif
