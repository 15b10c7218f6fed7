/* Error feedback (GPTQ) over llama.cpp's block layouts: see ggml_gptq.c. */
#ifndef HVQ_GGML_GPTQ_H
#define HVQ_GGML_GPTQ_H

#include "ggml_quants.h"

/* Scratch of one thread: w[n], row[n / block * block_bytes]. */
typedef struct hvq_ggml_gptq_scratch {
    float *w;
    uint8_t *row;
} hvq_ggml_gptq_scratch;

/* One row of n values (x, sparse entries 0 and flagged in skip, or skip
 * NULL) quantized to type t (one with a requant) with error feedback
 * through u; qw the importance weights (NULL: none). Writes n / t->block
 * blocks to out. */
void hvq_ggml_gptq_row(const hvq_ggml_type *t, const float *x, const unsigned char *skip,
                       const float *qw, const double *u, uint64_t n, hvq_ggml_gptq_scratch *s,
                       uint8_t *out);

#endif
