/* hessian "uniform": H_j = 1 for every input column, i.e. no curvature
 * information. The default Hessian source. */
#include "plugin.h"

static hvq_status uniform_open(hvq_ctx *ctx, const hvq_params *params,
                               const char *model_path, void **state)
{
    (void)ctx; (void)params; (void)model_path;
    *state = NULL;
    return HVQ_OK;
}

static hvq_status uniform_get(hvq_ctx *ctx, void *state, const hvq_tensor_info *t,
                              uint64_t rows, uint64_t cols, float *h)
{
    (void)ctx; (void)state; (void)t; (void)rows;
    for (uint64_t j = 0; j < cols; j++)
        h[j] = 1.0f;
    return HVQ_OK;
}

static void uniform_close(hvq_ctx *ctx, void *state)
{
    (void)ctx; (void)state;
}

static const hvq_plugin uniform_plugin = {
    HVQ_PLUGIN_HEADER,
    .kinds = HVQ_KIND_HESSIAN,
    .name = "uniform",
    .version = "1.0.0",
    .summary = "H = 1 for every input column (no calibration data)",
    .license = "MIT",
    .hessian_open = uniform_open,
    .hessian_get = uniform_get,
    .hessian_close = uniform_close,
};

HVQ_REGISTER_PLUGIN(uniform_plugin)
