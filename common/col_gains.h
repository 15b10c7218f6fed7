/* Activation-aware column gains (as AWQ): c_j = fp16((H_j / mean H)^a),
 * with H_j below 1e-6 mean H counted as that and c_j kept within fp16's
 * normal range. A clusterer multiplies column j by c_j before quantizing
 * and divides the reconstruction by c_j, so the columns whose inputs are
 * large get finer steps. Header-only, for plugins. */
#ifndef HVQ_COMMON_COL_GAINS_H
#define HVQ_COMMON_COL_GAINS_H

#include "f16_round.h"

#include <math.h>
#include <stdlib.h>

static inline void hvq_col_gains(hvq_ctx *ctx, const float *h, uint64_t cols, double a, float *c)
{
    double mean = 0.0;
    for (uint64_t j = 0; j < cols; j++)
        mean += h[j];
    mean = cols ? mean / (double)cols : 0.0;
    for (uint64_t j = 0; j < cols; j++) {
        double r = mean > 0.0 ? h[j] / mean : 1.0;
        double v = pow(r > 1e-6 ? r : 1e-6, a);
        c[j] = hvq_host_round_f16(ctx, (float)(v < 6.2e-5 ? 6.2e-5 : v > 6e4 ? 6e4 : v));
    }
}

/* Stores c as the component "col_gains" (F16 [cols], 16 paper bits each)
 * with the attribute "col_exponent" (its text). */
static inline hvq_status hvq_col_gains_store(hvq_ctx *ctx, hvq_encoded *enc, const float *c,
                                             uint64_t cols, const char *exponent)
{
    const hvq_host *H = ctx->host;
    int64_t shape[1] = {(int64_t)cols};
    hvq_component *cc = H->enc_add(ctx, enc, "col_gains", HVQ_DTYPE_F16, 1, shape, 16 * cols);
    if (!cc)
        return H->status(ctx);
    hvq_status st = H->convert(ctx, HVQ_DTYPE_F16, cc->data, HVQ_DTYPE_F32, c, (size_t)cols);
    return st == HVQ_OK ? H->enc_attr(ctx, enc, "col_exponent", exponent) : st;
}

/* The stored column gains of an encoding: HVQ_OK with *c NULL when it has
 * none; else *c is malloc'd (cols values, each finite and above 0).
 * HVQ_E_INPUT (message set, prefixed by who) for a wrong layout; without
 * data (check_only, or a check) only the layout is checked. */
static inline hvq_status hvq_col_gains_load(hvq_ctx *ctx, const hvq_encoded *enc, uint64_t cols,
                                            const char *who, int check_only, float **c)
{
    const hvq_host *H = ctx->host;
    const hvq_component *cc = H->enc_get(enc, "col_gains");
    *c = NULL;
    if (!H->enc_attr_get(enc, "col_exponent") != !cc)
        return H->error(ctx, HVQ_E_INPUT, "%s: col_gains and col_exponent go together", who);
    if (!cc)
        return HVQ_OK;
    if (cc->dtype != HVQ_DTYPE_F16 || cc->ndim != 1 || cc->shape[0] != (int64_t)cols ||
        cc->nbytes != 2 * cols)
        return H->error(ctx, HVQ_E_INPUT, "%s: col_gains must be F16 [%llu]", who,
                        (unsigned long long)cols);
    if (check_only)
        return HVQ_OK;
    if (!cc->data)
        return H->error(ctx, HVQ_E_INPUT, "%s: col_gains have no data", who);
    float *v = malloc((size_t)cols * sizeof *v + 1);
    if (!v)
        return H->error(ctx, HVQ_E_NOMEM, "%s: out of memory", who);
    hvq_status st = H->convert(ctx, HVQ_DTYPE_F32, v, HVQ_DTYPE_F16, cc->data, (size_t)cols);
    for (uint64_t j = 0; st == HVQ_OK && j < cols; j++)
        if (!(v[j] > 0.0f) || !isfinite(v[j]))
            st = H->error(ctx, HVQ_E_INPUT, "%s: column gain %llu is not a finite value above 0",
                          who, (unsigned long long)j);
    if (st != HVQ_OK) {
        free(v);
        return st;
    }
    *c = v;
    return HVQ_OK;
}

#endif
