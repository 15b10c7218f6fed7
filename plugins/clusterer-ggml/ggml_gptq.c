/* Error feedback for clusterer "ggml" (gptq: on): GPTQ (Frantar et al.,
 * 2023) over llama.cpp's block layouts.
 *
 * The objective is the layer's output error on the calibration inputs,
 * sum_i (w_i - q_i)^T H (w_i - q_i) per row i, H = the mean of x x^T over
 * the tokens entering the layer (the full Hessian; its diagonal is what
 * the other stages weigh with). The columns are quantized in order; the
 * rounding error of column j, divided by U[j][j], is spread over the
 * columns not yet quantized, w_k -= e_j U[j][k] (k > j), U the upper
 * Cholesky factor of (H + damp * mean(diag H) * I)^-1. Columns with
 * H_jj = 0 (inputs that were always zero) get H_jj = 1 first.
 *
 * Blocks. When column j starts a block, the whole row as updated so far is
 * quantized with the type's own quantizer (its scales, and its use of the
 * importance weights, from those values) and that block's bytes are kept:
 * its scales are final. Within the block each value is then rounded to the
 * nearest code under those scales (hvq_ggml_type.requant) just before its
 * error is spread. The stored blocks are ggml's layout, decoded by ggml's
 * dequantize_row.
 *
 * The 32-wide types, q4_K, q5_K and q6_K have a requant (for the K types,
 * under the scale and min of the value's sub-block, the super-block's
 * scales fixed at its start). q2_K, q3_K and iq4_xs have none and get no
 * feedback: keeping a block's codes from its start while the feedback
 * moves the values under them raised q4_K's output error above plain
 * rounding for 8 random seeds in 10, before q4_K had its requant.
 *
 * Sparse entries (kept exactly by a residual coder) stay 0 in the blocks,
 * as without feedback, take no updates and spread no error.
 *
 * The factor U comes from common/gptq.c. Cost: the factor is O(cols^3)
 * once per tensor, the feedback O(cols^2) per row, plus cols / block
 * quantizations of a row per row.
 */
#include "ggml_gptq.h"

#include <stdlib.h>
#include <string.h>

/* One row: see the top of this file. x is the row (sparse entries 0),
 * skip[j] nonzero for its sparse entries (NULL: none), qw the importance
 * weights or NULL. s provides scratch: w (n floats) and row (a row of
 * blocks). Writes the row's blocks to out. */
void hvq_ggml_gptq_row(const hvq_ggml_type *t, const float *x, const unsigned char *skip,
                       const float *qw, const double *u, uint64_t n, hvq_ggml_gptq_scratch *s,
                       uint8_t *out)
{
    float *w = s->w;
    memcpy(w, x, (size_t)n * sizeof *w);
    const uint64_t bs = (uint64_t)t->block;
    for (uint64_t b = 0; b < n; b += bs) {
        uint8_t *blk = out + b / bs * t->block_bytes;
        t->quantize_row(w, qw, s->row, (int64_t)n);
        memcpy(blk, s->row + b / bs * t->block_bytes, t->block_bytes);
        for (uint64_t j = b; j < b + bs; j++) {
            if (skip && skip[j])
                continue;
            float q = t->requant(blk, (int)(j - b), w[j]);
            const double *uj = u + j * n;
            double e = ((double)w[j] - (double)q) / uj[j];
            for (uint64_t k = j + 1; k < n; k++)
                if (!skip || !skip[k])
                    w[k] = (float)((double)w[k] - e * uj[k]);
        }
    }
}
