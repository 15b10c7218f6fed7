/* residual "coo16": the paper's sparse residual feedback. Keeps
 * floor(sparsity * numel) entries (chosen by the core from the importance
 * score) as coordinate pairs: a 32-bit flat row-major position and an fp16
 * correction S, so that decode computes recon[pos] += S.
 *
 * S is fp16(target - recon[pos]), then moved to whichever fp16 neighbour
 * makes recon[pos] + S closest to the target in float32, the arithmetic
 * decode performs; the reconstruction at each kept entry therefore equals
 * W_norm to within fp16 precision of the correction.
 *
 * Components: "positions" U32 [n], strictly ascending; "values" F16 [n].
 * Paper accounting: 32 + 16 bits per entry.
 */
#include "plugin.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

enum { P_SPARSITY };

static const hvq_param_spec coo16_params[] = {
    {"sparsity", HVQ_PARAM_FLOAT, "0.02", 0, 1, NULL,
     "fraction rho of entries kept exactly (0.02 or 2% = the paper's High)"},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

static uint64_t coo16_count(const hvq_params *params, uint64_t numel)
{
    double k = floor(params->values[P_SPARSITY].f * (double)numel);
    if (k < 0)
        return 0;
    return (uint64_t)k > numel ? numel : (uint64_t)k;
}

static float f16_to_f32(hvq_ctx *ctx, uint16_t h)
{
    float f;
    ctx->host->convert(ctx, HVQ_DTYPE_F32, &f, HVQ_DTYPE_F16, &h, 1);
    return f;
}

/* The fp16 value next to h towards +inf (dir 1) or -inf (dir -1). */
static uint16_t f16_step(uint16_t h, int dir)
{
    int neg = (h & 0x8000) != 0;
    uint16_t mag = h & 0x7fff;
    if (mag == 0)
        return dir > 0 ? 0x0001 : 0x8001;
    if ((dir > 0) != neg)
        return mag >= 0x7c00 ? h : (uint16_t)(h + 1); /* away from zero */
    return (uint16_t)(h - 1);                         /* towards zero */
}

static hvq_status coo16_encode(hvq_ctx *ctx, const hvq_params *params, hvq_residual_input *in,
                               hvq_encoded *enc)
{
    const hvq_host *H = ctx->host;
    (void)params;
    uint64_t numel = in->rows * in->cols;
    if (numel > UINT32_MAX)
        return H->error(ctx, HVQ_E_UNSUPPORTED,
                        "tensor '%s': %llu entries do not fit 32-bit positions",
                        in->tensor_name, (unsigned long long)numel);
    int64_t shape[1] = {(int64_t)in->n};
    hvq_component *pc = H->enc_add(ctx, enc, "positions", HVQ_DTYPE_U32, 1, shape, 32 * in->n);
    if (!pc)
        return HVQ_E_NOMEM;
    hvq_component *vc = H->enc_add(ctx, enc, "values", HVQ_DTYPE_F16, 1, shape, 16 * in->n);
    if (!vc)
        return HVQ_E_NOMEM;
    uint32_t *pos = pc->data;
    uint16_t *val = vc->data;
    /* In blocks, so that each conversion is one host call for the block
     * (the same rounding as one value at a time, without a call per value):
     * the fp16 corrections, then the candidates and their float32 values. */
    enum { BLOCK = 1024 };
    float diff[BLOCK], cand_f[3 * BLOCK];
    uint16_t cand[3 * BLOCK];
    for (uint64_t b0 = 0; b0 < in->n; b0 += BLOCK) {
        size_t m = in->n - b0 < BLOCK ? (size_t)(in->n - b0) : BLOCK;
        for (size_t j = 0; j < m; j++) {
            uint64_t i = b0 + j, p = in->pos[i];
            if (p >= numel || (i > 0 && p <= in->pos[i - 1]))
                return H->error(ctx, HVQ_E_INTERNAL,
                                "coo16: positions not ascending or out of range");
            diff[j] = in->target[i] - in->recon[p];
        }
        H->convert(ctx, HVQ_DTYPE_F16, cand, HVQ_DTYPE_F32, diff, m);
        for (size_t j = m; j-- > 0;) {
            uint16_t h = cand[j];
            cand[3 * j] = h;
            cand[3 * j + 1] = f16_step(h, -1);
            cand[3 * j + 2] = f16_step(h, 1);
        }
        H->convert(ctx, HVQ_DTYPE_F32, cand_f, HVQ_DTYPE_F16, cand, 3 * m);
        for (size_t j = 0; j < m; j++) {
            uint64_t i = b0 + j, p = in->pos[i];
            float base = in->recon[p], target = in->target[i];
            /* fp16(target - base) first, then its lower and upper
             * neighbours, each taken only when strictly closer */
            size_t best = 3 * j;
            float best_err = fabsf(base + cand_f[best] - target);
            for (size_t k = 3 * j + 1; k <= 3 * j + 2; k++) {
                if (!isfinite(cand_f[k]))
                    continue;
                float e = fabsf(base + cand_f[k] - target);
                if (e < best_err) {
                    best_err = e;
                    best = k;
                }
            }
            pos[i] = (uint32_t)p;
            val[i] = cand[best];
            in->recon[p] = base + cand_f[best];
        }
    }
    char buf[32];
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)in->n);
    return H->enc_attr(ctx, enc, "count", buf);
}

static hvq_status coo16_decode(hvq_ctx *ctx, const hvq_encoded *enc, uint64_t rows,
                               uint64_t cols, float *recon)
{
    const hvq_host *H = ctx->host;
    const hvq_component *pc = H->enc_get(enc, "positions"), *vc = H->enc_get(enc, "values");
    const char *count = H->enc_attr_get(enc, "count");
    if (!pc || !vc || !count)
        return H->error(ctx, HVQ_E_INPUT, "coo16: missing positions, values or count");
    char *end;
    uint64_t n = strtoull(count, &end, 10);
    uint64_t numel = rows * cols;
    if (*end || n > numel || pc->nbytes != 4 * n || vc->nbytes != 2 * n)
        return H->error(ctx, HVQ_E_INPUT,
                        "coo16: count %s does not match the components of a %llux%llu matrix",
                        count, (unsigned long long)rows, (unsigned long long)cols);
    const uint32_t *pos = pc->data;
    const uint16_t *val = vc->data;
    for (uint64_t i = 0; i < n; i++) {
        if (pos[i] >= numel || (i > 0 && pos[i] <= pos[i - 1]))
            return H->error(ctx, HVQ_E_INPUT,
                            "coo16: position %llu (entry %llu) out of range or not ascending",
                            (unsigned long long)pos[i], (unsigned long long)i);
        float v = f16_to_f32(ctx, val[i]);
        if (!isfinite(v))
            return H->error(ctx, HVQ_E_INPUT, "coo16: entry %llu is not finite",
                            (unsigned long long)i);
        recon[pos[i]] = recon[pos[i]] + v;
    }
    return HVQ_OK;
}

static const hvq_plugin coo16_plugin = {
    HVQ_PLUGIN_HEADER,
    .kinds = HVQ_KIND_RESIDUAL,
    .name = "coo16",
    .version = "1.0.0",
    .summary = "the paper's sparse residual: 32-bit position + fp16 value per entry",
    .license = "MIT",
    .params = coo16_params,
    .residual_count = coo16_count,
    .residual_encode = coo16_encode,
    .residual_decode = coo16_decode,
};

HVQ_REGISTER_PLUGIN(coo16_plugin)
