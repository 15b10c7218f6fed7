/* llama.cpp's block types written natively into GGUF: what the dequant
 * writer (plugins/writer-dequant) and `hvqconv decode --dtype TYPE`
 * (core/cmd_container.c) share with the ggml clusterer, whose quantizers
 * (ggml_quants.h) they call, so the blocks are the clusterer's, bit for bit.
 *
 * A tensor goes to GGUF as ggml rows of its innermost dimension (ne[0] =
 * shape[ndim-1]). A row length that is not a multiple of the type's block
 * size takes llama-quantize's fallback (llama-quant.cpp,
 * tensor_type_fallback): q2_K and q3_K -> q4_0, q4_K -> q5_0, q5_K ->
 * q5_1, q6_K -> q8_0, iq4_xs -> iq4_nl; F16 when that type does not fit
 * either, and directly for the types with blocks of 32. */
#ifndef HVQ_GGML_NATIVE_H
#define HVQ_GGML_NATIVE_H

#include "plugin.h"
#include "ggml_quants.h"

/* The type a tensor with rows of `row` values gets for target t: t, its
 * fallback, or NULL for F16. */
const hvq_ggml_type *hvq_ggml_fallback(const hvq_ggml_type *t, int64_t row);

/* llama.cpp's general.file_type (LLAMA_FTYPE_MOSTLY_*) of a file whose
 * quantized tensors are mostly t: the K types as their _S mixes. */
uint32_t hvq_ggml_ftype(const hvq_ggml_type *t);

/* Sets o's dtype, dtype_name and nbytes (its name and shape set) for the
 * GGUF tensor of target t; returns the type used (NULL: F16). */
const hvq_ggml_type *hvq_ggml_declare(hvq_tensor_info *o, const hvq_ggml_type *t);

/* x (the numel values of the tensor o declares, F32) quantized into out
 * (o->nbytes) as type ft (NULL: F16) with ggml's reference quantizers (no
 * importance weights), rows on the host's threads. */
hvq_status hvq_ggml_quantize(hvq_ctx *ctx, const hvq_tensor_info *o, const hvq_ggml_type *ft,
                             const float *x, void *out);

/* The metadata of a GGUF file of target t: meta[0..n) with
 * general.file_type set (replaced, or appended) and
 * general.quantization_version 2 appended when absent, as llama-quantize
 * writes them. The array is malloc'd, its strings the caller's or g's. */
typedef struct hvq_ggml_meta {
    hvq_meta *meta;
    size_t n;
    char ftype[64];
} hvq_ggml_meta;

/* 0 when out of memory. g must not move until hvq_ggml_meta_free. */
int hvq_ggml_meta_init(hvq_ggml_meta *g, const hvq_meta *meta, size_t n, const hvq_ggml_type *t);
void hvq_ggml_meta_free(hvq_ggml_meta *g);

/* The types of a file, by parameters: general.file_type is that of the
 * type holding the most (the first to reach it on a tie). */
typedef struct hvq_ggml_mix {
    const hvq_ggml_type *type[16]; /* in the order first added; 12 at most */
    uint64_t params[16];
} hvq_ggml_mix;

void hvq_ggml_mix_add(hvq_ggml_mix *m, const hvq_ggml_type *t, uint64_t params);
/* NULL when nothing was added. */
const hvq_ggml_type *hvq_ggml_mix_main(const hvq_ggml_mix *m);

/* The fallbacks of a declaration, for the one summary warning: "3 of 35
 * tensors ... written as F16 (3)". Counts by type; text is the sentence. */
typedef struct hvq_ggml_fallbacks {
    size_t n, n_total;
    size_t count[4];          /* F16 then up to 3 fallback types */
    const char *type[4];
    const char *example;      /* the first tensor that fell back */
    int64_t example_row;
    const hvq_ggml_type *example_type; /* its target */
} hvq_ggml_fallbacks;

/* Records that the tensor named name, rows of row values, took ft for t. */
void hvq_ggml_fallback_note(hvq_ggml_fallbacks *f, const char *name, int64_t row,
                            const hvq_ggml_type *t, const hvq_ggml_type *ft);
/* Logs the summary warning, when any fell back; what names the output. */
void hvq_ggml_fallback_warn(hvq_ctx *ctx, const hvq_ggml_fallbacks *f, const char *what);

#endif
