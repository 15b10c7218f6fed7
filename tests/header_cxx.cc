// Compile test of the public header from C++11 (-std=c++11 -pedantic -Wall
// -Werror): a complete plugin that includes plugin.h alone. C++11 has no
// designated initializers, so the descriptor is initialized in field order.
// It is also loaded by test_registry, so it must be a valid plugin.
//
// hessian "flat-cxx": H_j = value for every column (a constant curvature).
#include "plugin.h"

// plugin.h stands alone: it must pull in neither config.h nor another
// hvqconv header (the build puts both within reach of the compiler).
#if defined(PACKAGE_VERSION) || defined(HVQ_CORE_CTX_H) || defined(HVQ_CORE_UTIL_H) || \
    defined(HVQ_CORE_REGISTRY_H) || defined(HVQ_CORE_DTYPE_H)
#error "plugin.h includes config.h or another hvqconv header"
#endif

namespace {

const hvq_param_spec flat_params[] = {
    {"value", HVQ_PARAM_FLOAT, "1", 0, 1e6, nullptr, "the constant H_j"},
    {nullptr, static_cast<hvq_param_type>(0), nullptr, 0, 0, nullptr, nullptr},
};

struct flat_state {
    float value;
};

hvq_status flat_open(hvq_ctx *ctx, const hvq_params *params, const char *model_path,
                     void **state)
{
    (void)model_path;
    flat_state *s = static_cast<flat_state *>(ctx->host->alloc(ctx, sizeof(flat_state)));
    if (!s)
        return HVQ_E_NOMEM;
    s->value = static_cast<float>(params->values[0].f);
    *state = s;
    return HVQ_OK;
}

hvq_status flat_get(hvq_ctx *ctx, void *state, const hvq_tensor_info *t, uint64_t rows,
                    uint64_t cols, float *h)
{
    (void)ctx;
    (void)rows;
    if (hvq_numel(t) == 0)
        return HVQ_E_NOTFOUND;
    const flat_state *s = static_cast<const flat_state *>(state);
    for (uint64_t j = 0; j < cols; j++)
        h[j] = s->value;
    return HVQ_OK;
}

void flat_close(hvq_ctx *ctx, void *state) { ctx->host->free(state); }

const hvq_plugin flat_plugin = {
    HVQ_PLUGIN_HEADER,
    HVQ_KIND_HESSIAN, // kinds
    0,                // flags
    "flat-cxx",
    "1.0.0",
    "H = a constant for every column (header compile test, C++11)",
    "MIT",
    flat_params,
    // source
    nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
    // sink
    nullptr, nullptr, nullptr, nullptr, nullptr,
    // hessian
    flat_open, flat_get, flat_close,
    // the rest (importance, clusterer, residual, writer) are value-initialized
};

} // namespace

HVQ_REGISTER_PLUGIN(flat_plugin)
