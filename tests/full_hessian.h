/* Test helpers for error feedback (GPTQ), shared by test_gptq and
 * test_ecsq: a deterministic random stream, correlated Hessians, a host
 * table whose hessian_full hands out the test's matrix, and the output
 * error a feedback quantizer minimises. */
#ifndef HVQ_TEST_FULL_HESSIAN_H
#define HVQ_TEST_FULL_HESSIAN_H

#include "plugin.h"

#include <stdint.h>

/* The state of fh_urand; a test sets it first, so that its data is the
 * same forked or not (CK_FORK=no). */
extern uint64_t fh_rng;

/* Uniform in [-1, 1). */
double fh_urand(void);

/* A covariance of correlated inputs: the mean of x x^T over t samples of
 * x = a random mixture, so columns are strongly correlated; column dead
 * (if >= 0) is always zero. h: n x n. */
void fh_make_h(float *h, int n, int t, int dead);

/* A context like base whose host->hessian_full gives full (NULL: none,
 * HVQ_E_NOTFOUND). One at a time: the next call replaces it. */
hvq_ctx *fh_ctx_with(hvq_ctx *base, const float *full);

/* sum over rows of e^T H e, e = w - recon (rows x n, H n x n). */
double fh_output_error(const float *w, const float *recon, const float *h, int rows, int n);

#endif
