/* The quantizer of clusterer "ecsq": see ecsq_quant.h. */
#include "ecsq_quant.h"

#include "ecsq_code.h"
#include "gptq.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

double ecsq_entropy_sorted(const float *v, uint64_t n, float step)
{
    double h = 0.0;
    uint64_t i = 0;
    while (i < n) {
        double q = floor((double)v[i] / step + 0.5);
        uint64_t j = i + 1;
        while (j < n && floor((double)v[j] / step + 0.5) == q)
            j++;
        double p = (double)(j - i) / (double)n;
        h -= p * log2(p);
        i = j;
    }
    return h;
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

float ecsq_step_for_bits(const float *x, uint64_t n, double bits)
{
    uint64_t m = n < ECSQ_SAMPLE ? n : ECSQ_SAMPLE;
    float *v = malloc((size_t)(m ? m : 1) * sizeof *v);
    if (!v)
        return -1.0f;
    double amax = 0.0;
    for (uint64_t i = 0; i < m; i++) {
        v[i] = x[m == n ? i : i * (n / m)];
        amax = fmax(amax, fabs((double)v[i]));
    }
    qsort(v, (size_t)m, sizeof *v, cmp_float);
    if (amax == 0.0)
        amax = 1.0;
    double lo = log(amax) - 22.0 * log(2.0), hi = log(amax) + 2.0 * log(2.0);
    for (int it = 0; it < 60; it++) {
        double mid = 0.5 * (lo + hi);
        if (ecsq_entropy_sorted(v, m, (float)exp(mid)) > bits)
            lo = mid;
        else
            hi = mid;
    }
    free(v);
    return (float)exp(hi);
}

static int32_t level_of(float w, float step)
{
    double q = floor((double)w / step + 0.5);
    if (q > ECSQ_MAX_LEVEL)
        q = ECSQ_MAX_LEVEL;
    if (q < -ECSQ_MAX_LEVEL)
        q = -ECSQ_MAX_LEVEL;
    return (int32_t)q;
}

void ecsq_quant_rows(const float *x, uint64_t r0, uint64_t r1, uint64_t cols, float step,
                     const double *u, const uint64_t *pos, uint64_t n_pos, unsigned char *skip,
                     float *w, int32_t *q, float *recon)
{
    for (uint64_t r = r0; r < r1; r++) {
        memcpy(w, x + r * cols, (size_t)cols * sizeof *w);
        if (skip)
            hvq_gptq_row_skip(pos, n_pos, r, cols, skip);
        int32_t *qr = q + r * cols;
        float *o = recon + r * cols;
        for (uint64_t c = 0; c < cols; c++) {
            if (skip && skip[c]) {
                qr[c] = 0;
                o[c] = 0.0f;
                continue;
            }
            qr[c] = level_of(w[c], step);
            o[c] = (float)qr[c] * step;
            if (!u)
                continue;
            const double *uc = u + c * cols;
            double e = ((double)w[c] - (double)o[c]) / uc[c];
            for (uint64_t d = c + 1; d < cols; d++)
                if (!skip || !skip[d])
                    w[d] = (float)((double)w[d] - e * uc[d]);
        }
    }
}
