/* The block quantizers of clusterer "ggml": llama.cpp's block formats and
 * its quantization arithmetic, re-derived from ggml-quants.c so that the
 * blocks come out byte for byte as llama-quantize writes them (x86-64
 * build: SSE float arithmetic, no fused multiply-add; this file is built
 * with -ffp-contract=off).
 *
 * A row of n values (n a multiple of the type's block size) becomes
 * n / block blocks of block_bytes bytes each, in ggml's on-disk layout
 * (fp16 fields little-endian). qw, when not NULL, is the row's importance
 * weights (llama.cpp's quant_weights: one per column); NULL quantizes the
 * way llama.cpp does without an importance matrix.
 */
#ifndef HVQ_GGML_QUANTS_H
#define HVQ_GGML_QUANTS_H

#include <stddef.h>
#include <stdint.h>

typedef struct hvq_ggml_type {
    const char *name;   /* "q4_0", ... (the plugin's choice value) */
    const char *ggml;   /* ggml's own name: "Q4_0", ... */
    int block;          /* values per block */
    size_t block_bytes; /* bytes per block */
    int uses_weights;   /* 0 when llama.cpp ignores quant_weights */
    void (*quantize_row)(const float *x, const float *qw, uint8_t *out, int64_t n);
    void (*dequantize_row)(const uint8_t *blocks, float *y, int64_t n);
    /* Error feedback (ggml_gptq.c): sets the code of value j of block to
     * the one nearest x under the block's scales as they stand, and returns
     * the value it decodes to. NULL for the types with super-blocks (their
     * values are fixed when the whole block is quantized). */
    float (*requant)(uint8_t *block, int j, float x);
} hvq_ggml_type;

/* The type called name (the plugin's choice value), or NULL. */
const hvq_ggml_type *hvq_ggml_type_find(const char *name);
/* The type ggml calls ggml ("Q4_1", "Q4_K": a GGUF tensor's dtype_name),
 * or NULL. */
const hvq_ggml_type *hvq_ggml_type_find_ggml(const char *ggml);

/* IEEE half <-> float, rounding to nearest even: the project's one
 * conversion (common/f16.h), the same bits as ggml's for every finite value
 * and infinity (the weights quantized here are finite). */
#include "f16.h"

/* ---- shared by the quantizers (ggml_quants.c, ggml_kquants.c) ---- */

/* fp16 little-endian at p. */
void hvq_ggml_put_f16(uint8_t *p, float f);
float hvq_ggml_get_f16(const uint8_t *p);

/* ggml's nearest_int: round to nearest even, |v| <= 2^22. */
int hvq_ggml_nearest(float v);

/* llama.cpp's importance weights of n values: qw[j] * sqrt(sigma2 + x[j]^2)
 * in weight; returns their sum, added in order. */
float hvq_ggml_weights(const float *x, const float *qw, float sigma2, int n, float *weight);

/* make_qx_quants with rmse_type 1 (weights qw, or x^2 when qw is NULL):
 * codes l + nmax in L, returns the scale. */
float hvq_ggml_make_qx(int n, int nmax, const float *x, int8_t *L, const float *qw);

/* make_qkx3_quants (weights w, or x^2 when NULL; errors squared, or
 * absolute with use_mad); with weights it is also make_qkx2_quants: codes
 * 0..nmax in L, -min in *the_min, returns the scale. */
float hvq_ggml_make_qkx3(int n, int nmax, const float *x, const float *w, uint8_t *L,
                         float *the_min, uint8_t *Laux, float rmin, float rdelta, int nstep,
                         int use_mad);

/* The K types' rows and dequantization (ggml_kquants.c). */
void hvq_ggml_q2_k_row(const float *x, const float *qw, uint8_t *out, int64_t n);
void hvq_ggml_q3_k_row(const float *x, const float *qw, uint8_t *out, int64_t n);
void hvq_ggml_q4_k_row(const float *x, const float *qw, uint8_t *out, int64_t n);
void hvq_ggml_q5_k_row(const float *x, const float *qw, uint8_t *out, int64_t n);
void hvq_ggml_q6_k_row(const float *x, const float *qw, uint8_t *out, int64_t n);
void hvq_ggml_q2_k_dequant(const uint8_t *blocks, float *y, int64_t n);
void hvq_ggml_q3_k_dequant(const uint8_t *blocks, float *y, int64_t n);
void hvq_ggml_q4_k_dequant(const uint8_t *blocks, float *y, int64_t n);
void hvq_ggml_q5_k_dequant(const uint8_t *blocks, float *y, int64_t n);
void hvq_ggml_q6_k_dequant(const uint8_t *blocks, float *y, int64_t n);
float hvq_ggml_q4_k_requant(uint8_t *block, int j, float x);
float hvq_ggml_q5_k_requant(uint8_t *block, int j, float x);
float hvq_ggml_q6_k_requant(uint8_t *block, int j, float x);

float hvq_ggml_iq4_nl_requant(uint8_t *block, int j, float x);

/* The 4-bit non-linear types' rows and dequantization (ggml_iquants.c). */
void hvq_ggml_iq4_nl_row(const float *x, const float *qw, uint8_t *out, int64_t n);
void hvq_ggml_iq4_xs_row(const float *x, const float *qw, uint8_t *out, int64_t n);
void hvq_ggml_iq4_nl_dequant(const uint8_t *blocks, float *y, int64_t n);
void hvq_ggml_iq4_xs_dequant(const uint8_t *blocks, float *y, int64_t n);

#endif
