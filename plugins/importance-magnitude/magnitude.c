/* importance "magnitude": I_ij = |W_norm_ij|; ignores the Hessian. The
 * entries are scored on the host's threads (host->parallel_for), each alone, so
 * the result does not depend on the count. */
#include "plugin.h"

#include <math.h>

typedef struct job {
    const float *w;
    float *score;
} job;

static void score_range(void *arg, uint64_t chunk, uint64_t i0, uint64_t i1)
{
    const job *p = arg;
    const float *restrict w = p->w;
    float *restrict score = p->score;
    (void)chunk;
    for (uint64_t i = i0; i < i1; i++)
        score[i] = fabsf(w[i]);
}

static hvq_status magnitude_score(hvq_ctx *ctx, const hvq_params *params, const float *w,
                                  uint64_t rows, uint64_t cols, const float *h,
                                  float *score)
{
    (void)params; (void)h;
    job j = {w, score};
    hvq_host_parallel_for(ctx, rows * cols, HVQ_PAR_ELEMS, score_range, &j);
    return HVQ_OK;
}

static const hvq_plugin magnitude_plugin = {
    HVQ_PLUGIN_HEADER,
    .kinds = HVQ_KIND_IMPORTANCE,
    .name = "magnitude",
    .version = "1.0.0",
    .summary = "importance = |W_norm| (magnitude only, Hessian ignored)",
    .license = "MIT",
    .importance_score = magnitude_score,
};

HVQ_REGISTER_PLUGIN(magnitude_plugin)
