/* Compile test of the public header: a complete plugin in strict C99
 * (-std=c99 -pedantic -Wall -Wextra -Werror) that includes plugin.h alone,
 * with no config.h and no other hvqconv header. It is also loaded by
 * test_registry, so it must be a valid plugin.
 *
 * importance "obd-c99": I_ij = H_j * W_norm_ij^2, the optimal-brain-damage
 * saliency, with an optional exponent on the Hessian term. */
#include "plugin.h"

/* plugin.h stands alone: it must pull in neither config.h nor another
 * hvqconv header (the build puts both within reach of the compiler). */
#if defined(PACKAGE_VERSION) || defined(HVQ_CORE_CTX_H) || defined(HVQ_CORE_UTIL_H) || \
    defined(HVQ_CORE_REGISTRY_H) || defined(HVQ_CORE_DTYPE_H)
#error "plugin.h includes config.h or another hvqconv header"
#endif

static const hvq_param_spec obd_params[] = {
    {"hessian_power", HVQ_PARAM_FLOAT, "1", 0, 4, NULL,
     "I = H^p * W^2; 0 ignores the Hessian, 1 is optimal brain damage"},
    {NULL, (hvq_param_type)0, NULL, 0, 0, NULL, NULL},
};

static float powf_small(float b, double p)
{
    /* b^p for the p this plugin allows, without libm: integer steps and a
     * square root by Newton's method for the half powers. */
    float r = 1.0f;
    int whole = (int)p, i;
    for (i = 0; i < whole; i++)
        r *= b;
    if (p - whole >= 0.5 && b > 0.0f) {
        float s = b > 1.0f ? b : 1.0f;
        for (i = 0; i < 40; i++)
            s = 0.5f * (s + b / s);
        r *= s;
    }
    return r;
}

static hvq_status obd_score(hvq_ctx *ctx, const hvq_params *params, const float *w,
                            uint64_t rows, uint64_t cols, const float *h, float *score)
{
    const hvq_value *pw = ctx->host->param(params, "hessian_power");
    double p = pw ? pw->f : params->values[0].f;
    uint64_t r, c;
    hvq_tensor_info info;
    info.ndim = 2;
    info.shape[0] = (int64_t)rows;
    info.shape[1] = (int64_t)cols;
    if (hvq_numel(&info) != rows * cols)
        return ctx->host->error(ctx, HVQ_E_INTERNAL, "obd-c99: bad shape");
    for (r = 0; r < rows; r++)
        for (c = 0; c < cols; c++) {
            float v = w[r * cols + c];
            score[r * cols + c] = powf_small(h[c], p) * v * v;
        }
    return HVQ_OK;
}

static const hvq_plugin obd_plugin = {
    HVQ_PLUGIN_HEADER,
    HVQ_KIND_IMPORTANCE, /* kinds */
    0,                   /* flags */
    "obd-c99",
    "1.0.0",
    "importance = H^p * W_norm^2 (header compile test, C99)",
    "MIT",
    obd_params,
    .importance_score = obd_score,
};

HVQ_REGISTER_PLUGIN(obd_plugin)
