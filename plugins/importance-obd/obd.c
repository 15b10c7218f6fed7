/* importance "obd": Optimal Brain Damage saliency I_ij = H_j * W_norm_ij^2,
 * the loss increase a diagonal quadratic model predicts for zeroing the
 * entry. H is floored at h_floor like the paper's score. Rows are scored
 * on the host's threads (host->parallel_for); every entry is computed alone, so
 * the result does not depend on the count. */
#include "plugin.h"


enum { P_H_FLOOR };

static const hvq_param_spec obd_params[] = {
    {"h_floor", HVQ_PARAM_FLOAT, "1e-6", 0, 1e30, NULL, "lower bound applied to H"},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

typedef struct job {
    const float *w, *h;
    float *score;
    float floor_h;
    uint64_t cols;
} job;

static void score_rows(void *arg, uint64_t chunk, uint64_t r0, uint64_t r1)
{
    const job *p = arg;
    const float *restrict h = p->h;
    float floor_h = p->floor_h;
    (void)chunk;
    for (uint64_t r = r0; r < r1; r++) {
        const float *restrict wr = p->w + r * p->cols;
        float *restrict sr = p->score + r * p->cols;
        for (uint64_t j = 0; j < p->cols; j++) {
            float hj = h[j] > floor_h ? h[j] : floor_h;
            sr[j] = hj * wr[j] * wr[j];
        }
    }
}

static hvq_status obd_score(hvq_ctx *ctx, const hvq_params *params, const float *w,
                            uint64_t rows, uint64_t cols, const float *h, float *score)
{
    job j = {w, h, score, (float)params->values[P_H_FLOOR].f, cols};
    hvq_host_parallel_for(ctx, rows, hvq_par_rows(cols), score_rows, &j);
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
