/* residual "coo16": the paper's sparse residual feedback. Keeps
 * floor(sparsity * numel) entries (chosen by the core from the importance
 * score) as coordinate pairs: a 32-bit flat row-major position and an fp16
 * correction S, so that decode computes recon[pos] += S.
 *
 * S is fp16(target - recon[pos]), then moved to whichever fp16 neighbour
 * makes recon[pos] + S closest to the target in float32, the arithmetic
 * decode performs (plugins/sparse_residual.h, shared with "rice"); the
 * reconstruction at each kept entry therefore equals W_norm to within fp16
 * precision of the correction.
 *
 * Components: "positions" U32 [n], strictly ascending; "values" F16 [n].
 * Paper accounting: 32 + 16 bits per entry.
 */
#include "plugin.h"

#include "../sparse_residual.h"

#include <stdio.h>
#include <stdlib.h>

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
    for (uint64_t i = 0; i < in->n; i++) {
        uint64_t p = in->pos[i];
        if (p >= numel || (i > 0 && p <= in->pos[i - 1]))
            return H->error(ctx, HVQ_E_INTERNAL,
                            "coo16: positions not ascending or out of range");
        pos[i] = (uint32_t)p;
    }
    uint16_t *val = vc->data;
    for (uint64_t b0 = 0; b0 < in->n; b0 += FP16C_BLOCK) {
        size_t m = in->n - b0 < FP16C_BLOCK ? (size_t)(in->n - b0) : FP16C_BLOCK;
        fp16c_encode_block(ctx, in->pos + b0, in->target + b0, m, in->recon, val + b0);
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
    uint64_t block[FP16C_BLOCK];
    for (uint64_t b0 = 0; b0 < n; b0 += FP16C_BLOCK) {
        size_t m = n - b0 < FP16C_BLOCK ? (size_t)(n - b0) : FP16C_BLOCK;
        for (size_t j = 0; j < m; j++) {
            uint64_t i = b0 + j;
            if (pos[i] >= numel || (i > 0 && pos[i] <= pos[i - 1]))
                return H->error(ctx, HVQ_E_INPUT,
                                "coo16: position %llu (entry %llu) out of range or not ascending",
                                (unsigned long long)pos[i], (unsigned long long)i);
            block[j] = pos[i];
        }
        hvq_status st = fp16c_apply_block(ctx, "coo16", block, val + b0, m, b0, recon);
        if (st != HVQ_OK)
            return st;
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
    .params = sparse_params,
    .residual_count = sparse_count,
    .residual_encode = coo16_encode,
    .residual_decode = coo16_decode,
};

HVQ_REGISTER_PLUGIN(coo16_plugin)
