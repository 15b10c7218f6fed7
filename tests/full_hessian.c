/* Test helpers for error feedback: see full_hessian.h. */
#include "full_hessian.h"

#include <stdlib.h>
#include <string.h>

uint64_t fh_rng = 7;

double fh_urand(void)
{
    fh_rng = fh_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(fh_rng >> 11) / (double)(1ull << 52) - 1.0;
}

void fh_make_h(float *h, int n, int t, int dead)
{
    double *x = malloc((size_t)n * sizeof *x), *acc = calloc((size_t)(n * n), sizeof *acc);
    if (!x || !acc)
        abort(); /* a test's few kilobytes */
    for (int s = 0; s < t; s++) {
        double base = fh_urand();
        for (int j = 0; j < n; j++)
            x[j] = j == dead ? 0.0 : base * (1.0 + 0.1 * j) + 0.3 * fh_urand();
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++)
                acc[i * n + j] += x[i] * x[j];
    }
    for (int i = 0; i < n * n; i++)
        h[i] = (float)(acc[i] / t);
    free(x);
    free(acc);
}

static const float *g_full;
static hvq_host fh_host;
static hvq_ctx fh_ctx;

static hvq_status give_full(hvq_ctx *cx, const hvq_cluster_input *in, float *h)
{
    (void)cx;
    if (!g_full)
        return HVQ_E_NOTFOUND;
    memcpy(h, g_full, (size_t)(in->cols * in->cols) * sizeof *h);
    return HVQ_OK;
}

hvq_ctx *fh_ctx_with(hvq_ctx *base, const float *full)
{
    fh_host = *base->host;
    fh_host.hessian_full = give_full;
    fh_ctx = *base;
    fh_ctx.host = &fh_host;
    g_full = full;
    return &fh_ctx;
}

double fh_output_error(const float *w, const float *recon, const float *h, int rows, int n)
{
    double s = 0;
    for (int r = 0; r < rows; r++)
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++)
                s += ((double)w[r * n + i] - recon[r * n + i]) * h[i * n + j] *
                     ((double)w[r * n + j] - recon[r * n + j]);
    return s;
}
