/* Scale modes of the k-means clusterer (kmeans_gain.h). */
#include "kmeans_gain.h"

#include "col_gains.h"

#include <math.h>

uint64_t km_gain_groups(uint64_t cols, uint64_t group)
{
    return group == 0 || group >= cols ? 1 : (cols + group - 1) / group;
}

/* The gain of columns [c0, c1) of row r (x times the column gains cg);
 * *sp walks the sparse positions (ascending) so that each is skipped
 * once. */
static float group_gain(const hvq_cluster_input *in, const float *cg, int mode, uint64_t r,
                        uint64_t c0, uint64_t c1, uint64_t *sp)
{
    const float *x = in->x + r * in->cols;
    double sum = 0.0, m = 0.0;
    uint64_t count = 0, base = r * in->cols;
    for (uint64_t c = c0; c < c1; c++) {
        if (*sp < in->n_sparse && in->sparse_pos[*sp] == base + c) {
            (*sp)++;
            continue;
        }
        double a = fabs((double)(cg ? x[c] * cg[c] : x[c]));
        sum += a * a;
        m = a > m ? a : m;
        count++;
    }
    if (mode == KM_GAIN_MAX)
        return (float)m;
    return count ? (float)sqrt(sum / (double)count) : 0.0f;
}

hvq_status km_gain_apply(hvq_ctx *ctx, const hvq_cluster_input *in, int mode, uint64_t group,
                         const float *cg, float *gains, float *xs)
{
    uint64_t ng = km_gain_groups(in->cols, group), gs = ng == 1 ? in->cols : group, sp = 0;
    for (uint64_t r = 0; r < in->rows; r++)
        for (uint64_t k = 0; k < ng; k++) {
            uint64_t c0 = k * gs, c1 = c0 + gs < in->cols ? c0 + gs : in->cols;
            float g = hvq_host_round_f16(ctx, group_gain(in, cg, mode, r, c0, c1, &sp));
            if (!isfinite(g))
                return ctx->host->error(ctx, HVQ_E_INPUT,
                                        "tensor '%s': row %llu: a gain exceeds the fp16 range",
                                        in->tensor_name, (unsigned long long)r);
            gains[r * ng + k] = g;
            const float *x = in->x + r * in->cols;
            float *o = xs + r * in->cols;
            for (uint64_t c = c0; c < c1; c++)
                o[c] = g > 0.0f ? (cg ? x[c] * cg[c] : x[c]) / g : 0.0f;
        }
    return HVQ_OK;
}

void km_gain_scale(float *recon, uint64_t rows, uint64_t cols, uint64_t group, const float *gains,
                   const float *cg)
{
    uint64_t ng = km_gain_groups(cols, group), gs = ng == 1 ? cols : group;
    for (uint64_t r = 0; r < rows; r++)
        for (uint64_t c = 0; c < cols; c++) {
            float v = recon[r * cols + c] * gains[r * ng + c / gs];
            recon[r * cols + c] = cg ? v / cg[c] : v;
        }
}
