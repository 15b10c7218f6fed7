/* The one good plugin among the broken ones: clusterer "fp16", which stores
 * every weight as an IEEE half (16 bits per weight, no scales). A useful
 * reference point (the cost of merely halving the precision) and the proof
 * that the broken plugins beside it do not stop a good one from loading.
 * Works on the raw weights; fails on values beyond the fp16 range. */
#include "plugin.h"

#include <math.h>

static hvq_status fp16_encode(hvq_ctx *ctx, const hvq_params *params,
                              const hvq_cluster_input *in, float *recon,
                              hvq_encoded *enc)
{
    const hvq_host *H = ctx->host;
    uint64_t n = in->rows * in->cols;
    int64_t shape[2] = {(int64_t)in->rows, (int64_t)in->cols};
    hvq_status st;
    (void)params;
    hvq_component *c = H->enc_add(ctx, enc, "values", HVQ_DTYPE_F16, 2, shape, 16 * n);
    if (!c)
        return HVQ_E_NOMEM;
    if ((st = H->convert(ctx, HVQ_DTYPE_F16, c->data, HVQ_DTYPE_F32, in->x, (size_t)n)))
        return st;
    if ((st = H->convert(ctx, HVQ_DTYPE_F32, recon, HVQ_DTYPE_F16, c->data, (size_t)n)))
        return st;
    for (uint64_t i = 0; i < n; i++)
        if (!isfinite(recon[i])) /* rounded to infinity */
            return H->error(ctx, HVQ_E_INPUT,
                            "tensor '%s': value %g at [%llu, %llu] is beyond the fp16 range",
                            in->tensor_name, (double)in->x[i],
                            (unsigned long long)(i / in->cols),
                            (unsigned long long)(i % in->cols));
    return HVQ_OK;
}

static hvq_status fp16_decode(hvq_ctx *ctx, const hvq_encoded *enc, uint64_t rows,
                              uint64_t cols, float *recon)
{
    const hvq_host *H = ctx->host;
    const hvq_component *c = H->enc_get(enc, "values");
    if (!c || c->dtype != HVQ_DTYPE_F16 || c->nbytes != 2 * rows * cols)
        return H->error(ctx, HVQ_E_INPUT,
                        "fp16: component 'values' missing or not %llux%llu F16",
                        (unsigned long long)rows, (unsigned long long)cols);
    return H->convert(ctx, HVQ_DTYPE_F32, recon, HVQ_DTYPE_F16, c->data,
                      (size_t)(rows * cols));
}

static const hvq_plugin fp16_plugin = {
    HVQ_PLUGIN_HEADER,
    .kinds = HVQ_KIND_CLUSTERER,
    .flags = HVQ_CLUSTERER_RAW,
    .name = "fp16",
    .version = "1.0.0",
    .summary = "store every weight as fp16 (16 bits per weight, a reference point)",
    .license = "MIT",
    .cluster_encode = fp16_encode,
    .cluster_decode = fp16_decode,
};

HVQ_REGISTER_PLUGIN(fp16_plugin)
