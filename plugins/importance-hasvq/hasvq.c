/* importance "hasvq": the paper's score I_ij = |W_norm_ij| * sqrt(H_j),
 * H the Hessian diagonal over input columns, floored at h_floor (the
 * reference implementation clamps H at 1e-6). Rows are scored on the
 * host's threads (host->parallel_for); every entry is computed alone, so the result
 * does not depend on the count. */
#include "plugin.h"

#include <math.h>

enum { P_H_FLOOR };

static const hvq_param_spec hasvq_params[] = {
    {"h_floor", HVQ_PARAM_FLOAT, "1e-6", 0, 1e30, NULL,
     "lower bound applied to H before the square root (the reference uses 1e-6)"},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

typedef struct job {
    const float *w, *sq;
    float *score;
    uint64_t cols;
} job;

static void score_rows(void *arg, uint64_t chunk, uint64_t r0, uint64_t r1)
{
    const job *p = arg;
    const float *restrict sq = p->sq;
    (void)chunk;
    for (uint64_t r = r0; r < r1; r++) {
        const float *restrict wr = p->w + r * p->cols;
        float *restrict sr = p->score + r * p->cols;
        for (uint64_t j = 0; j < p->cols; j++)
            sr[j] = fabsf(wr[j]) * sq[j];
    }
}

static hvq_status hasvq_score(hvq_ctx *ctx, const hvq_params *params, const float *w,
                              uint64_t rows, uint64_t cols, const float *h, float *score)
{
    float floor_h = (float)params->values[P_H_FLOOR].f;
    float *sq = ctx->host->alloc(ctx, (size_t)cols * sizeof *sq);
    if (!sq)
        return HVQ_E_NOMEM;
    for (uint64_t j = 0; j < cols; j++)
        sq[j] = sqrtf(h[j] > floor_h ? h[j] : floor_h);
    job j = {w, sq, score, cols};
    hvq_host_parallel_for(ctx, rows, hvq_par_rows(cols), score_rows, &j);
    ctx->host->free(sq);
    return HVQ_OK;
}

static const hvq_plugin hasvq_plugin = {
    HVQ_PLUGIN_HEADER,
    .kinds = HVQ_KIND_IMPORTANCE,
    .name = "hasvq",
    .version = "1.0.0",
    .summary = "the paper's importance |W_norm| * sqrt(H) (Hessian-weighted magnitude)",
    .license = "MIT",
    .params = hasvq_params,
    .importance_score = hasvq_score,
};

HVQ_REGISTER_PLUGIN(hasvq_plugin)
