/* importance "hasvq": the paper's score I_ij = |W_norm_ij| * sqrt(H_j),
 * H the Hessian diagonal over input columns, floored at h_floor (the
 * reference implementation clamps H at 1e-6). Rows are scored on up to
 * host->threads(ctx) threads; every entry is computed alone, so the result
 * does not depend on the count. */
#include "plugin.h"

#include <math.h>
#include <pthread.h>

enum { P_H_FLOOR };

static const hvq_param_spec hasvq_params[] = {
    {"h_floor", HVQ_PARAM_FLOAT, "1e-6", 0, 1e30, NULL,
     "lower bound applied to H before the square root (the reference uses 1e-6)"},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

#define MAX_THREADS 64

typedef struct part {
    const float *w, *sq;
    float *score;
    uint64_t r0, r1, cols;
} part;

static void *score_rows(void *arg)
{
    const part *p = arg;
    const float *restrict sq = p->sq;
    for (uint64_t r = p->r0; r < p->r1; r++) {
        const float *restrict wr = p->w + r * p->cols;
        float *restrict sr = p->score + r * p->cols;
        for (uint64_t j = 0; j < p->cols; j++)
            sr[j] = fabsf(wr[j]) * sq[j];
    }
    return NULL;
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
        parts[t] = (part){w, sq, score, rows * (uint64_t)t / (uint64_t)nt,
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
