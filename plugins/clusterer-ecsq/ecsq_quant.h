/* The quantizer of clusterer "ecsq": one uniform step for a whole tensor,
 * levels q = round(w / step), w_hat = q * step, optionally with GPTQ's
 * error feedback (common/gptq.h). Plain C, no host: compiled into the
 * plugin and into its test. */
#ifndef HVQ_ECSQ_QUANT_H
#define HVQ_ECSQ_QUANT_H

#include <stddef.h>
#include <stdint.h>

/* Values the step search looks at: an even sample of larger tensors. */
#define ECSQ_SAMPLE (1u << 16)

/* The empirical entropy (bits per value) of round(v / step) over the
 * ascending values v[0..n). */
double ecsq_entropy_sorted(const float *v, uint64_t n, float step);

/* The step (a float > 0) whose levels of plain rounding have an empirical
 * entropy of about bits per value over x[0..n) (every value when n <=
 * ECSQ_SAMPLE, else an evenly spaced sample of ECSQ_SAMPLE): bisection on
 * log(step), 40 halvings, between amax 2^-22 and 4 amax, amax = max |x|
 * (1 when every value is 0). -1 when out of memory. The values must be
 * finite. */
float ecsq_step_for_bits(const float *x, uint64_t n, double bits);

/* Quantizes rows [r0, r1) of the rows x cols matrix x (finite values)
 * with the step: q (the (r1 - r0) x cols levels of those rows, |q| <=
 * ECSQ_MAX_LEVEL) and recon (the whole matrix's: rows r0..r1 written) =
 * (float)q * step. skip (NULL: none; else scratch of cols bytes filled
 * per row by hvq_gptq_row_skip from pos[0..n_pos)) marks the entries a
 * residual keeps: level 0. With u (common/gptq.h's factor, cols x cols;
 * NULL: plain rounding), each row's columns in order, each value's
 * rounding error spread over the columns after it; sparse entries take no
 * updates and spread none. w: scratch of cols floats. */
void ecsq_quant_rows(const float *x, uint64_t r0, uint64_t r1, uint64_t cols, float step,
                     const double *u, const uint64_t *pos, uint64_t n_pos, unsigned char *skip,
                     float *w, int32_t *q, float *recon);

#endif
