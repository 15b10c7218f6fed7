/* GPTQ's error feedback, shared by the clusterers that offer it (ggml,
 * kmeans): the full Hessian of a tensor from the host, and the factor the
 * feedback spreads errors with.
 *
 * A clusterer quantizing the columns of a row in order spreads the rounding
 * error of column j over the columns not yet quantized,
 *   w_k -= (w_j - q_j) / U[j][j] * U[j][k]    (k > j),
 * U the upper Cholesky factor of (H + damp * mean(diag H) * I)^-1, which
 * minimises sum_i (w_i - q_i)^T H (w_i - q_i), the error of the layer's
 * output on the calibration inputs (Frantar et al., 2023). Zero diagonal
 * entries of H (inputs that were always zero) are taken as 1.
 */
#ifndef HVQ_COMMON_GPTQ_H
#define HVQ_COMMON_GPTQ_H

#include "plugin.h"

/* The choices of a clusterer's gptq parameter, NULL-terminated: off, on
 * (a full Hessian required), auto (used where the Hessian stage gives
 * one). */
extern const char *const hvq_gptq_modes[];

/* The widest row offered: the factor takes cols^2 doubles. */
#define HVQ_GPTQ_MAX_COLS 32768u

/* u (n x n, row-major) = U for the full Hessian h (n x n floats,
 * symmetric). The damping rises tenfold, up to five times, while the
 * matrix is not numerically positive definite. Returns 0, -1 when it
 * never is, -2 when out of memory. */
int hvq_gptq_factor(const float *h, uint64_t n, double damp, double *u);

/* For mode "on" or "auto" (a clusterer's gptq parameter; "off": *u =
 * NULL), U of the full Hessian of the tensor in (host->hessian_full) into
 * *u, malloc'd (the caller frees it). With auto and no full Hessian from
 * the hessian stage, *u = NULL; with on, an error naming the tensor. */
hvq_status hvq_gptq_prepare(hvq_ctx *ctx, const hvq_cluster_input *in, const char *mode,
                            double damp, double **u);

/* skip[c] = 1 for the sparse entries of row r of a rows x cols matrix
 * (pos: n sorted flat positions), 0 elsewhere: the entries a residual
 * keeps, which take no updates and spread no error. */
void hvq_gptq_row_skip(const uint64_t *pos, uint64_t n, uint64_t r, uint64_t cols,
                       unsigned char *skip);

#endif
