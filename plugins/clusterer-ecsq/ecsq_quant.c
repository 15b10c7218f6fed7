/* The quantizer of clusterer "ecsq": see ecsq_quant.h. */
#include "ecsq_quant.h"

#include "ecsq_code.h"
#include "gptq.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The level of v under step, as plain rounding gives it. */
static double level_at(float v, float step)
{
    return floor((double)v / step + 0.5);
}

/* The end of the run of values at level q that starts at v[i]: levels
 * only grow along sorted values, so a galloping search finds it in
 * O(log(run)) steps. */
static uint64_t run_end(const float *v, uint64_t n, uint64_t i, double q, float step)
{
    uint64_t lo = i + 1, k = 1; /* v[lo - 1] is at level q */
    while (lo + k - 1 < n && level_at(v[lo + k - 1], step) == q) {
        lo += k;
        k *= 2;
    }
    uint64_t hi = lo + k - 1 < n ? lo + k - 1 : n; /* v[hi] is past the run, or hi = n */
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        if (level_at(v[mid], step) == q)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

double ecsq_entropy_sorted(const float *v, uint64_t n, float step)
{
    double h = 0.0;
    uint64_t i = 0;
    while (i < n) {
        uint64_t j = run_end(v, n, i, level_at(v[i], step), step);
        double p = (double)(j - i) / (double)n;
        h -= p * log2(p);
        i = j;
    }
    return h;
}

/* The order-preserving key of a finite float: its bits, sign flipped for
 * positives, all flipped for negatives. */
static uint32_t float_key(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u & 0x80000000u ? ~u : u | 0x80000000u;
}

/* Sorts v[0..n) ascending (finite values; -0 before +0) by four byte-wise
 * counting passes through tmp (n floats). */
static void radix_sort(float *v, float *tmp, uint64_t n)
{
    for (int shift = 0; shift < 32; shift += 8) {
        uint64_t count[257] = {0};
        for (uint64_t i = 0; i < n; i++)
            count[((float_key(v[i]) >> shift) & 0xff) + 1]++;
        for (int b = 0; b < 256; b++)
            count[b + 1] += count[b];
        for (uint64_t i = 0; i < n; i++)
            tmp[count[(float_key(v[i]) >> shift) & 0xff]++] = v[i];
        memcpy(v, tmp, (size_t)n * sizeof *v);
    }
}

float ecsq_step_for_bits(const float *x, uint64_t n, double bits)
{
    uint64_t m = n < ECSQ_SAMPLE ? n : ECSQ_SAMPLE;
    float *v = malloc((size_t)(m ? m : 1) * sizeof *v);
    float *tmp = malloc((size_t)(m ? m : 1) * sizeof *tmp);
    if (!v || !tmp) {
        free(v);
        free(tmp);
        return -1.0f;
    }
    double amax = 0.0;
    for (uint64_t i = 0; i < m; i++) {
        v[i] = x[m == n ? i : i * (n / m)];
        amax = fmax(amax, fabs((double)v[i]));
    }
    radix_sort(v, tmp, m);
    free(tmp);
    if (amax == 0.0)
        amax = 1.0;
    double lo = log(amax) - 22.0 * log(2.0), hi = log(amax) + 2.0 * log(2.0);
    for (int it = 0; it < 40; it++) {
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
        int32_t *qr = q + (r - r0) * cols;
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
