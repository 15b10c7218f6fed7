/* importance "obd": Optimal Brain Damage saliency I_ij = H_j * W_norm_ij^2,
 * the loss increase a diagonal quadratic model predicts for zeroing the
 * entry. H is floored at h_floor like the paper's score. */
#include "plugin.h"

enum { P_H_FLOOR };

static const hvq_param_spec obd_params[] = {
    {"h_floor", HVQ_PARAM_FLOAT, "1e-6", 0, 1e30, NULL, "lower bound applied to H"},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

static hvq_status obd_score(hvq_ctx *ctx, const hvq_params *params, const float *w,
                            uint64_t rows, uint64_t cols, const float *h, float *score)
{
    (void)ctx;
    float floor_h = (float)params->values[P_H_FLOOR].f;
    for (uint64_t r = 0; r < rows; r++) {
        const float *wr = w + r * cols;
        float *sr = score + r * cols;
        for (uint64_t j = 0; j < cols; j++) {
            float hj = h[j] > floor_h ? h[j] : floor_h;
            sr[j] = hj * wr[j] * wr[j];
        }
    }
    return HVQ_OK;
}

static const hvq_plugin obd_plugin = {
    HVQ_PLUGIN_HEADER,
    .kinds = HVQ_KIND_IMPORTANCE,
    .name = "obd",
    .version = "1.0.0",
    .summary = "importance H * W_norm^2 (Optimal Brain Damage saliency)",
    .license = "MIT",
    .params = obd_params,
    .importance_score = obd_score,
};

HVQ_REGISTER_PLUGIN(obd_plugin)
