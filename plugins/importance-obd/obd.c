/* importance "obd": Optimal Brain Damage saliency I_ij = H_j * W_norm_ij^2,
 * the loss increase a diagonal quadratic model predicts for zeroing the
 * entry. H is floored at h_floor like the paper's score. Rows are scored
 * on up to host->threads(ctx) threads; every entry is computed alone, so
 * the result does not depend on the count. */
#include "plugin.h"

#include <pthread.h>

enum { P_H_FLOOR };

static const hvq_param_spec obd_params[] = {
    {"h_floor", HVQ_PARAM_FLOAT, "1e-6", 0, 1e30, NULL, "lower bound applied to H"},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

#define MAX_THREADS 64

typedef struct part {
    const float *w, *h;
    float *score;
    float floor_h;
    uint64_t r0, r1, cols;
} part;

static void *score_rows(void *arg)
{
    const part *p = arg;
    const float *restrict h = p->h;
    float floor_h = p->floor_h;
    for (uint64_t r = p->r0; r < p->r1; r++) {
        const float *restrict wr = p->w + r * p->cols;
        float *restrict sr = p->score + r * p->cols;
        for (uint64_t j = 0; j < p->cols; j++) {
            float hj = h[j] > floor_h ? h[j] : floor_h;
            sr[j] = hj * wr[j] * wr[j];
        }
    }
    return NULL;
}

static hvq_status obd_score(hvq_ctx *ctx, const hvq_params *params, const float *w,
                            uint64_t rows, uint64_t cols, const float *h, float *score)
{
    float floor_h = (float)params->values[P_H_FLOOR].f;
    int nt = ctx->host->threads(ctx);
    if (nt > MAX_THREADS)
        nt = MAX_THREADS;
    if ((uint64_t)nt > rows)
        nt = (int)rows;
    if (rows * cols < ((uint64_t)1 << 16) || nt < 1)
        nt = 1;
    part parts[MAX_THREADS];
    pthread_t tid[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    for (int t = 0; t < nt; t++) {
        parts[t] = (part){w, h, score, floor_h, rows * (uint64_t)t / (uint64_t)nt,
                          rows * (uint64_t)(t + 1) / (uint64_t)nt, cols};
        if (t > 0)
            started[t] = pthread_create(&tid[t], NULL, score_rows, &parts[t]) == 0;
    }
    score_rows(&parts[0]);
    for (int t = 1; t < nt; t++) {
        if (started[t])
            pthread_join(tid[t], NULL);
        else
            score_rows(&parts[t]); /* could not start a thread: do it here */
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
