/* residual "none": keeps no sparse entries; the body quantizer alone
 * reconstructs the matrix. */
#include "plugin.h"

static uint64_t none_count(const hvq_params *params, uint64_t numel)
{
    (void)params; (void)numel;
    return 0;
}

static hvq_status none_encode(hvq_ctx *ctx, const hvq_params *params, hvq_residual_input *in,
                              hvq_encoded *enc)
{
    (void)params; (void)enc;
    if (in->n != 0)
        return ctx->host->error(ctx, HVQ_E_INTERNAL,
                                "residual 'none' was given %llu entries",
                                (unsigned long long)in->n);
    return HVQ_OK;
}

static hvq_status none_decode(hvq_ctx *ctx, const hvq_encoded *enc, uint64_t rows,
                              uint64_t cols, float *recon)
{
    (void)ctx; (void)enc; (void)rows; (void)cols; (void)recon;
    return HVQ_OK;
}

static const hvq_plugin none_plugin = {
    HVQ_PLUGIN_HEADER,
    .kinds = HVQ_KIND_RESIDUAL,
    .name = "none",
    .version = "1.0.0",
    .summary = "no sparse residual (sparsity 0)",
    .license = "MIT",
    .residual_count = none_count,
    .residual_encode = none_encode,
    .residual_decode = none_decode,
};

HVQ_REGISTER_PLUGIN(none_plugin)
