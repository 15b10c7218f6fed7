/* importance "magnitude": I_ij = |W_norm_ij|; ignores the Hessian. */
#include "plugin.h"

#include <math.h>

static hvq_status magnitude_score(hvq_ctx *ctx, const hvq_params *params, const float *w,
                                  uint64_t rows, uint64_t cols, const float *h,
                                  float *score)
{
    (void)ctx; (void)params; (void)h;
    uint64_t n = rows * cols;
    for (uint64_t i = 0; i < n; i++)
        score[i] = fabsf(w[i]);
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
