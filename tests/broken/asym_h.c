/* A hessian plugin that loads and works but whose full matrix is not
 * symmetric: hessian "asym" gives H = 1 on the diagonal and a full matrix
 * with one entry above the diagonal and none below. The driver must refuse
 * it (exit 2, naming the tensor and the plugin) before a clusterer uses it.
 * Loaded from tests/broken/.libs by test_gptq. */
#include "plugin.h"

#include <string.h>

static hvq_status asym_open(hvq_ctx *ctx, const hvq_params *params, const char *model_path,
                            void **state)
{
    (void)ctx;
    (void)params;
    (void)model_path;
    *state = NULL;
    return HVQ_OK;
}

static hvq_status asym_get(hvq_ctx *ctx, void *state, const hvq_tensor_info *t, uint64_t rows,
                           uint64_t cols, float *h)
{
    (void)ctx;
    (void)state;
    (void)t;
    (void)rows;
    for (uint64_t j = 0; j < cols; j++)
        h[j] = 1.0f;
    return HVQ_OK;
}

static hvq_status asym_get_full(hvq_ctx *ctx, void *state, const hvq_tensor_info *t,
                                uint64_t rows, uint64_t cols, float *h)
{
    (void)ctx;
    (void)state;
    (void)t;
    (void)rows;
    memset(h, 0, (size_t)(cols * cols) * sizeof *h);
    for (uint64_t j = 0; j < cols; j++)
        h[j * cols + j] = 1.0f;
    if (cols > 1)
        h[1] = 0.5f;
    return HVQ_OK;
}

static void asym_close(hvq_ctx *ctx, void *state)
{
    (void)ctx;
    (void)state;
}

static const hvq_plugin asym_plugin = {
    HVQ_PLUGIN_HEADER,
    .kinds = HVQ_KIND_HESSIAN,
    .name = "asym",
    .version = "1.0.0",
    .summary = "test: a full Hessian that is not symmetric",
    .license = "MIT",
    .hessian_open = asym_open,
    .hessian_get = asym_get,
    .hessian_close = asym_close,
    .hessian_get_full = asym_get_full,
};

HVQ_REGISTER_PLUGIN(asym_plugin)
