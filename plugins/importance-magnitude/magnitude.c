/* importance "magnitude": I_ij = |W_norm_ij|; ignores the Hessian. The
 * entries are scored on up to host->threads(ctx) threads, each alone, so
 * the result does not depend on the count. */
#include "plugin.h"

#include <math.h>
#include <pthread.h>

#define MAX_THREADS 64

typedef struct part {
    const float *w;
    float *score;
    uint64_t i0, i1;
} part;

static void *score_range(void *arg)
{
    const part *p = arg;
    const float *restrict w = p->w;
    float *restrict score = p->score;
    for (uint64_t i = p->i0; i < p->i1; i++)
        score[i] = fabsf(w[i]);
    return NULL;
}

static hvq_status magnitude_score(hvq_ctx *ctx, const hvq_params *params, const float *w,
                                  uint64_t rows, uint64_t cols, const float *h,
                                  float *score)
{
    (void)params; (void)h;
    uint64_t n = rows * cols;
    int nt = ctx->host->threads(ctx);
    if (nt > MAX_THREADS)
        nt = MAX_THREADS;
    if (n < ((uint64_t)1 << 16) || nt < 1)
        nt = 1;
    part parts[MAX_THREADS];
    pthread_t tid[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    for (int t = 0; t < nt; t++) {
        parts[t] = (part){w, score, n * (uint64_t)t / (uint64_t)nt,
                          n * (uint64_t)(t + 1) / (uint64_t)nt};
        if (t > 0)
            started[t] = pthread_create(&tid[t], NULL, score_range, &parts[t]) == 0;
    }
    score_range(&parts[0]);
    for (int t = 1; t < nt; t++) {
        if (started[t])
            pthread_join(tid[t], NULL);
        else
            score_range(&parts[t]); /* could not start a thread: do it here */
    }
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
