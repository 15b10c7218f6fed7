/* What the sparse residual coders (coo16, rice) share: header-only, using
 * nothing but plugin.h and the host table (plugins link against nothing
 * from hvqconv).
 *
 * The parameter and the count: floor(sparsity * numel) entries, so that
 * coders with the same sparsity keep the same entries.
 *
 * The fp16 correction. Encode: for each kept entry the correction S is fp16(target - recon[pos]),
 * then moved to whichever fp16 neighbour makes recon[pos] + S closest to the
 * target in float32 (the arithmetic decode performs), and recon[pos] becomes
 * exactly that sum. Decode: recon[pos] = recon[pos] + S. Two coders that keep
 * the same positions thus give bit-identical reconstructions.
 *
 * Conversions go through the host one block at a time (the same rounding as
 * one value at a time, without a call per value). */
#ifndef HVQ_SPARSE_RESIDUAL_H
#define HVQ_SPARSE_RESIDUAL_H

#include "plugin.h"

#include <math.h>
#include <stdint.h>

/* The one parameter of the sparse coders, and their residual_count:
 * floor(sparsity * numel) entries. */
static const hvq_param_spec sparse_params[] = {
    {"sparsity", HVQ_PARAM_FLOAT, "0.02", 0, 1, NULL,
     "fraction rho of entries kept exactly (0.02 or 2% = the paper's High)"},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

static inline uint64_t sparse_count(const hvq_params *params, uint64_t numel)
{
    double k = floor(params->values[0].f * (double)numel);
    if (k < 0)
        return 0;
    return (uint64_t)k > numel ? numel : (uint64_t)k;
}

/* Entries per block, and so per host conversion call. */
#define FP16C_BLOCK 1024

/* The fp16 value next to h towards +inf (dir 1) or -inf (dir -1). */
static inline uint16_t fp16c_step(uint16_t h, int dir)
{
    int neg = (h & 0x8000) != 0;
    uint16_t mag = h & 0x7fff;
    if (mag == 0)
        return dir > 0 ? 0x0001 : 0x8001;
    if ((dir > 0) != neg)
        return mag >= 0x7c00 ? h : (uint16_t)(h + 1); /* away from zero */
    return (uint16_t)(h - 1);                         /* towards zero */
}

/* Chooses the corrections val[0..m) of the m <= FP16C_BLOCK entries at
 * pos[0..m) (valid, distinct) with targets target[0..m), and updates recon
 * there to what decode will produce. */
static inline void fp16c_encode_block(hvq_ctx *ctx, const uint64_t *pos, const float *target,
                                      size_t m, float *recon, uint16_t *val)
{
    const hvq_host *H = ctx->host;
    float diff[FP16C_BLOCK], cand_f[3 * FP16C_BLOCK];
    uint16_t cand[3 * FP16C_BLOCK];
    for (size_t j = 0; j < m; j++)
        diff[j] = target[j] - recon[pos[j]];
    H->convert(ctx, HVQ_DTYPE_F16, cand, HVQ_DTYPE_F32, diff, m);
    for (size_t j = m; j-- > 0;) {
        uint16_t h = cand[j];
        cand[3 * j] = h;
        cand[3 * j + 1] = fp16c_step(h, -1);
        cand[3 * j + 2] = fp16c_step(h, 1);
    }
    H->convert(ctx, HVQ_DTYPE_F32, cand_f, HVQ_DTYPE_F16, cand, 3 * m);
    for (size_t j = 0; j < m; j++) {
        float base = recon[pos[j]];
        /* fp16(target - base) first, then its lower and upper neighbours,
         * each taken only when strictly closer */
        size_t best = 3 * j;
        float best_err = fabsf(base + cand_f[best] - target[j]);
        for (size_t k = 3 * j + 1; k <= 3 * j + 2; k++) {
            if (!isfinite(cand_f[k]))
                continue;
            float e = fabsf(base + cand_f[k] - target[j]);
            if (e < best_err) {
                best_err = e;
                best = k;
            }
        }
        val[j] = cand[best];
        recon[pos[j]] = base + cand_f[best];
    }
}

/* Applies the m <= FP16C_BLOCK corrections val[0..m) at pos[0..m) (valid
 * positions) to recon; entry numbers in messages start at first. A
 * correction that is not finite is bad input, named by plugin and entry. */
static inline hvq_status fp16c_apply_block(hvq_ctx *ctx, const char *plugin,
                                           const uint64_t *pos, const uint16_t *val, size_t m,
                                           uint64_t first, float *recon)
{
    float v[FP16C_BLOCK];
    ctx->host->convert(ctx, HVQ_DTYPE_F32, v, HVQ_DTYPE_F16, val, m);
    for (size_t j = 0; j < m; j++) {
        if (!isfinite(v[j]))
            return ctx->host->error(ctx, HVQ_E_INPUT, "%s: entry %llu is not finite", plugin,
                                    (unsigned long long)(first + j));
        recon[pos[j]] = recon[pos[j]] + v[j];
    }
    return HVQ_OK;
}

#endif
