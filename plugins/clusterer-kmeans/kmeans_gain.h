/* Scale modes of the k-means clusterer: gains g applied to the normalized
 * body before clustering (x / g) and after decoding (q * g).
 *
 * The core divides each row by s_i = max_j |W_ij| (the paper). With
 * scale: rms each row (scale_group: 0) or each group of scale_group
 * columns of a row is further divided by the root mean square of its body
 * entries (the sparse entries left out), so that the codebook sees rows of
 * comparable spread rather than rows squeezed by one large outlier; with
 * scale: max and scale_group G > 0, by the largest |value| of the group's
 * body. Gains are rounded to fp16 and stored as the component "gains",
 * F16 [rows, groups] (paper_bits 16 each); a group whose body is all zero
 * gets gain 0 and decodes to 0.
 *
 * Column gains (col_exponent a > 0, activation-aware as in AWQ): before
 * the row or group gains, column j is multiplied by
 * c_j = fp16((H_j / mean H)^a) (H_j below 1e-6 mean H counts as that),
 * so the columns whose inputs are large get proportionally finer
 * quantization; decode divides by c_j last. Stored as "col_gains", F16
 * [cols], with the attribute "col_exponent".
 *
 * scale: max, scale_group 0 and col_exponent 0 (the defaults) store
 * nothing: the paper's encoding, byte for byte. */
#ifndef HVQ_KMEANS_GAIN_H
#define HVQ_KMEANS_GAIN_H

#include "plugin.h"

#include <stdint.h>

enum { KM_GAIN_MAX = 0, KM_GAIN_RMS = 1 };

/* Groups per row for a group size (0: one per row). */
uint64_t km_gain_groups(uint64_t cols, uint64_t group);

/* Computes the fp16-representable gains g[rows * groups] of x * c (the
 * body times the column gains, NULL for none; sparse_pos ascending flat
 * positions excluded) and writes x * c / g to xs (0 where g is 0).
 * HVQ_E_INPUT (message set) when a gain exceeds fp16. */
hvq_status km_gain_apply(hvq_ctx *ctx, const hvq_cluster_input *in, int mode, uint64_t group,
                         const float *c, float *gains, float *xs);

/* recon[i] = recon[i] * g of its group, then / c of its column (c may be
 * NULL). */
void km_gain_scale(float *recon, uint64_t rows, uint64_t cols, uint64_t group,
                   const float *gains, const float *c);

#endif
