/* A SentencePiece-style tokenizer (Llama 1/2 vocabularies: pieces with
 * scores, byte fallback), encoding text the way llama2.c's encoder does:
 *   - optionally BOS first;
 *   - a "dummy prefix" space before non-empty text (unless the vocabulary
 *     says not to: GGUF tokenizer.ggml.add_space_prefix = false);
 *   - every UTF-8 code point becomes the piece of that code point, or, when
 *     there is none, one byte token per byte (<0xXX>);
 *   - then, repeatedly, the adjacent pair whose concatenation is a piece
 *     with the highest score (the leftmost on ties) is merged, until no
 *     pair is a piece (in O(n log n) for n bytes, with a heap of the
 *     pairs).
 * Vocabularies come from a llama2.c tokenizer.bin (int32 max piece length,
 * then per token a float32 score, an int32 length and the bytes) or from a
 * GGUF file's metadata (tokenizer.ggml.model "llama": tokens, scores,
 * token_type; "▁" stands for a space). Control, unknown and byte tokens
 * are never produced by merges. */
#ifndef HVQ_MODEL_LLAMA_TOK_H
#define HVQ_MODEL_LLAMA_TOK_H

#include "plugin.h"

#include <stddef.h>
#include <stdint.h>

typedef struct hvq_tokenizer hvq_tokenizer;

hvq_status hvq_tokenizer_load_llama2c(hvq_ctx *ctx, const char *path, hvq_tokenizer **out);
/* what names the model in messages. HVQ_E_NOTFOUND (message set) when the
 * metadata has no tokenizer; HVQ_E_UNSUPPORTED for another kind (gpt2). */
hvq_status hvq_tokenizer_from_gguf(hvq_ctx *ctx, const hvq_meta *meta, size_t n,
                                   const char *what, hvq_tokenizer **out);
void hvq_tokenizer_free(hvq_tokenizer *t);

int hvq_tokenizer_size(const hvq_tokenizer *t); /* number of tokens */
int hvq_tokenizer_bos(const hvq_tokenizer *t);  /* BOS id (1 for llama2.c) */

/* The vocabulary as the encoder sees it (0 <= id < size): token id's
 * piece (spaces as ' ', NUL-terminated, *len its length) and score; the
 * token a code point or a merge may become for s[0..n) (never a control,
 * unknown or byte token; the first of duplicates), or -1; the token byte b
 * falls back to (its <0xXX> token, else the unknown token); whether text
 * gets the dummy-prefix space. */
const char *hvq_tokenizer_piece(const hvq_tokenizer *t, int id, size_t *len);
float hvq_tokenizer_score(const hvq_tokenizer *t, int id);
int hvq_tokenizer_lookup(const hvq_tokenizer *t, const char *s, size_t n);
int hvq_tokenizer_byte(const hvq_tokenizer *t, unsigned char b);
int hvq_tokenizer_space_prefix(const hvq_tokenizer *t);

/* Encodes text[0..len) as one piece of text, appending the ids to *ids
 * (grown with realloc; *n used, *cap allocated). */
hvq_status hvq_tokenizer_encode(hvq_ctx *ctx, const hvq_tokenizer *t, const char *text,
                                size_t len, int bos, int32_t **ids, size_t *n, size_t *cap);

/* Encodes a whole text as paragraphs: runs of non-blank lines (a blank line
 * is empty or only spaces, tabs and CRs) joined by "\n", each encoded with
 * BOS. That is how tinystories.tok512.npy was made from tinystories.txt. */
hvq_status hvq_tokenizer_encode_text(hvq_ctx *ctx, const hvq_tokenizer *t, const char *text,
                                     size_t len, int32_t **ids, size_t *n);

#endif
