/* The Llama family's conversion between Hugging Face and llama.cpp layouts
 * (`hvqconv convert`, the model plugin's convert_* callbacks in model.c):
 * tensor names both ways, the q/k row permutation, GGUF metadata from a
 * config.json and config.json from GGUF metadata (convert.c), and the
 * tokenizer files read into GGUF's tokenizer.ggml.* keys (tok_gguf.c). */
#ifndef HVQ_MODEL_LLAMA_CONVERT_H
#define HVQ_MODEL_LLAMA_CONVERT_H

#include "buf.h"
#include "plugin.h"

#include <stddef.h>
#include <stdint.h>

/* What a tensor's rows need: nothing, or the per-head permutation of the
 * query (with the attention heads) or key projection (with the key/value
 * heads). */
enum { HVQ_LLAMA_ROWS_KEEP = 0, HVQ_LLAMA_ROWS_Q = 1, HVQ_LLAMA_ROWS_K = 2 };

/* The llama.cpp name of a Hugging Face tensor name (to_gguf), or the
 * Hugging Face name of a llama.cpp one, into buf; *rows says whether its
 * rows are permuted. Returns 0 when the name is not a Llama tensor (or does
 * not fit in buf). */
int hvq_llama_map_name(int to_gguf, const char *name, char *buf, size_t len, int *rows);

/* Reorders the rows of a projection of n_head heads (rows = n_head *
 * head_dim rows of row_bytes bytes each, head_dim even) from Hugging Face's
 * rotate-half order to llama.cpp's interleaved order (to_gguf), or back.
 * Within a head, interleaved row 2i + j is rotate-half row j * head_dim/2
 * + i (j = 0, 1). in and out must not overlap. */
void hvq_llama_permute_rows(void *out, const void *in, int n_head, int64_t rows,
                            size_t row_bytes, int to_gguf);

/* Metadata being built: keys static or malloc'd (owned[i]), values malloc'd
 * typed JSON text (the gguf source's encoding). oom once an append failed. */
typedef struct hvq_llama_meta {
    hvq_meta *v;
    unsigned char *owned;
    size_t n, cap;
    int oom;
} hvq_llama_meta;

void hvq_llama_meta_free(hvq_llama_meta *m);
/* Appends key with the value text b holds (b is consumed). */
void hvq_llama_meta_put(hvq_llama_meta *m, const char *key, hvq_buf *b);
void hvq_llama_meta_u32(hvq_llama_meta *m, const char *key, uint32_t v);
void hvq_llama_meta_f32(hvq_llama_meta *m, const char *key, double v);
void hvq_llama_meta_str(hvq_llama_meta *m, const char *key, const char *s);
void hvq_llama_meta_bool(hvq_llama_meta *m, const char *key, int v);

/* Tokenizer files into tokenizer.ggml.* keys: llama2.c's tokenizer.bin,
 * SentencePiece's tokenizer.model (a ModelProto), a Hugging Face
 * tokenizer.json of a byte-level BPE (ids: the config's bos/eos/pad, -1
 * when absent). Errors name the file. */
hvq_status hvq_llama_tok_llama2c(hvq_ctx *ctx, const char *path, hvq_llama_meta *m);
hvq_status hvq_llama_tok_spm(hvq_ctx *ctx, const char *path, hvq_llama_meta *m);
hvq_status hvq_llama_tok_bpe(hvq_ctx *ctx, const char *path, const int64_t ids[3],
                             hvq_llama_meta *m);

/* A GGUF vocabulary (tokenizer.ggml.model "gpt2") back to a Hugging Face
 * tokenizer.json text into out. HVQ_E_NOTFOUND when the metadata holds no
 * such vocabulary. */
hvq_status hvq_llama_tok_json(hvq_ctx *ctx, const hvq_meta *meta, size_t n, const char *what,
                              hvq_buf *out);

/* A GGUF vocabulary (tokenizer.ggml.model "llama") back to a SentencePiece
 * tokenizer.model (BPE with byte fallback, identity normalizer) into out.
 * HVQ_E_NOTFOUND when the metadata holds no such vocabulary. */
hvq_status hvq_llama_tok_model(hvq_ctx *ctx, const hvq_meta *meta, size_t n, const char *what,
                               hvq_buf *out);

/* The plugin's convert_* callbacks (convert_plugin.c). */
hvq_status hvq_llama_convert_open(hvq_ctx *ctx, const hvq_convert_setup *setup, void **state);
hvq_status hvq_llama_convert_tensor(hvq_ctx *ctx, void *state, const hvq_tensor_info *in,
                                    hvq_convert_tensor *out);
hvq_status hvq_llama_convert_rows(hvq_ctx *ctx, void *state, const hvq_tensor *in, void *out);
hvq_status hvq_llama_convert_meta(hvq_ctx *ctx, void *state, const hvq_meta **meta, size_t *n);
hvq_status hvq_llama_convert_file(hvq_ctx *ctx, void *state, size_t k, const char **name,
                                  const void **data, size_t *len);
void hvq_llama_convert_close(hvq_ctx *ctx, void *state);

#endif
