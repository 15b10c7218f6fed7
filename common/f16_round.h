/* A float rounded to the nearest fp16 value and back, through the host's
 * conversion (round to nearest even): what a plugin stores as an F16
 * scale or gain is then exactly what it computes with. Header-only, for
 * plugins (they link against nothing from hvqconv). */
#ifndef HVQ_COMMON_F16_ROUND_H
#define HVQ_COMMON_F16_ROUND_H

#include "plugin.h"

static inline float hvq_host_round_f16(hvq_ctx *ctx, float v)
{
    uint16_t h;
    float r;
    ctx->host->convert(ctx, HVQ_DTYPE_F16, &h, HVQ_DTYPE_F32, &v, 1);
    ctx->host->convert(ctx, HVQ_DTYPE_F32, &r, HVQ_DTYPE_F16, &h, 1);
    return r;
}

#endif
