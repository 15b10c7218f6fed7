/* Shared pieces of the plugins broken on purpose (tests/broken/): no-op
 * clusterer and residual callbacks, so that each broken plugin is complete
 * except for the one defect it demonstrates. Only plugin.h is included, as
 * for any real plugin. */
#ifndef HVQ_TEST_BROKEN_H
#define HVQ_TEST_BROKEN_H

#include "plugin.h"

/* Reconstructs the input unchanged and stores nothing. */
static inline hvq_status broken_encode(hvq_ctx *ctx, const hvq_params *params,
                                       const hvq_cluster_input *in, float *recon,
                                       hvq_encoded *enc)
{
    (void)ctx; (void)params; (void)enc;
    for (uint64_t i = 0; i < in->rows * in->cols; i++)
        recon[i] = in->x[i];
    return HVQ_OK;
}

static inline hvq_status broken_decode(hvq_ctx *ctx, const hvq_encoded *enc,
                                       uint64_t rows, uint64_t cols, float *recon)
{
    (void)enc;
    (void)recon;
    return ctx->host->error(ctx, HVQ_E_UNSUPPORTED,
                            "test plugin: cannot decode a %llux%llu matrix",
                            (unsigned long long)rows, (unsigned long long)cols);
}

static inline uint64_t broken_count(const hvq_params *params, uint64_t numel)
{
    (void)params; (void)numel;
    return 0;
}

static inline hvq_status broken_residual_encode(hvq_ctx *ctx, const hvq_params *params,
                                                hvq_residual_input *in, hvq_encoded *enc)
{
    (void)ctx; (void)params; (void)in; (void)enc;
    return HVQ_OK;
}

static inline hvq_status broken_residual_decode(hvq_ctx *ctx, const hvq_encoded *enc,
                                                uint64_t rows, uint64_t cols, float *recon)
{
    (void)ctx; (void)enc; (void)rows; (void)cols; (void)recon;
    return HVQ_OK;
}

#endif
