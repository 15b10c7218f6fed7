/* Element types: sizes, names, and conversion to and from float32. */
#include "config.h"

#include "dtype.h"
#include "ctx.h"
#include "util.h"

#include <math.h>
#include <string.h>
#include <strings.h>

size_t hvq_dtype_size(hvq_dtype t)
{
    switch (t) {
    case HVQ_DTYPE_F32: case HVQ_DTYPE_I32: case HVQ_DTYPE_U32: return 4;
    case HVQ_DTYPE_F16: case HVQ_DTYPE_BF16: case HVQ_DTYPE_I16:
    case HVQ_DTYPE_U16: return 2;
    case HVQ_DTYPE_F64: case HVQ_DTYPE_I64: case HVQ_DTYPE_U64: return 8;
    case HVQ_DTYPE_I8: case HVQ_DTYPE_U8: case HVQ_DTYPE_BOOL: return 1;
    case HVQ_DTYPE_OPAQUE: break;
    }
    return 0;
}

const char *hvq_dtype_name(hvq_dtype t)
{
    static const char *const names[] = {
        "OPAQUE", "F32", "F16", "BF16", "F64", "I8", "U8",
        "I16", "U16", "I32", "U32", "I64", "U64", "BOOL"};
    if ((unsigned)t < sizeof names / sizeof names[0])
        return names[t];
    return "OPAQUE";
}

hvq_dtype hvq_dtype_parse_float(const char *s)
{
    static const struct { const char *name; hvq_dtype t; } tab[] = {
        {"f32", HVQ_DTYPE_F32}, {"float32", HVQ_DTYPE_F32},
        {"f16", HVQ_DTYPE_F16}, {"float16", HVQ_DTYPE_F16},
        {"half", HVQ_DTYPE_F16}, {"fp16", HVQ_DTYPE_F16},
        {"bf16", HVQ_DTYPE_BF16}, {"bfloat16", HVQ_DTYPE_BF16},
        {"f64", HVQ_DTYPE_F64}, {"float64", HVQ_DTYPE_F64},
    };
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
        if (strcasecmp(s, tab[i].name) == 0)
            return tab[i].t;
    return HVQ_DTYPE_OPAQUE;
}

int hvq_dtype_is_float(hvq_dtype t)
{
    return t == HVQ_DTYPE_F32 || t == HVQ_DTYPE_F16 || t == HVQ_DTYPE_BF16 ||
           t == HVQ_DTYPE_F64;
}


hvq_status hvq_convert(hvq_ctx *ctx, hvq_dtype dt, void *dst, hvq_dtype st,
                       const void *src, size_t n)
{
    if (dt == st && hvq_dtype_is_float(dt)) {
        if (n > 0) /* an empty tensor's data may be NULL */
            memmove(dst, src, n * hvq_dtype_size(dt));
        return HVQ_OK;
    }
    if (dt == HVQ_DTYPE_F32 && (st == HVQ_DTYPE_F16 || st == HVQ_DTYPE_BF16)) {
        float (*widen)(uint16_t) = st == HVQ_DTYPE_F16 ? hvq_f16_to_f32 : hvq_bf16_to_f32;
        const uint8_t *s = src;
        float *d = dst;
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, s + 2 * i, 2);
            d[i] = widen(h);
        }
        return HVQ_OK;
    }
    if (st == HVQ_DTYPE_F32 && (dt == HVQ_DTYPE_F16 || dt == HVQ_DTYPE_BF16)) {
        uint16_t (*narrow)(float) = dt == HVQ_DTYPE_F16 ? hvq_f32_to_f16 : hvq_f32_to_bf16;
        const float *s = src;
        uint8_t *d = dst;
        for (size_t i = 0; i < n; i++) {
            uint16_t h = narrow(s[i]);
            memcpy(d + 2 * i, &h, 2);
        }
        return HVQ_OK;
    }
    if (dt == HVQ_DTYPE_F32 && st == HVQ_DTYPE_F64) {
        const uint8_t *s = src;
        float *d = dst;
        for (size_t i = 0; i < n; i++) {
            double v;
            memcpy(&v, s + 8 * i, 8);
            d[i] = (float)v;
        }
        return HVQ_OK;
    }
    if (st == HVQ_DTYPE_F32 && dt == HVQ_DTYPE_F64) {
        const float *s = src;
        uint8_t *d = dst;
        for (size_t i = 0; i < n; i++) {
            double v = s[i];
            memcpy(d + 8 * i, &v, 8);
        }
        return HVQ_OK;
    }
    if (ctx)
        return hvq_error(ctx, HVQ_E_UNSUPPORTED,
                         "no conversion from %s to %s", hvq_dtype_name(st),
                         hvq_dtype_name(dt));
    return HVQ_E_UNSUPPORTED;
}

#define HVQ_STR_(x) #x
#define HVQ_STR(x) HVQ_STR_(x)

hvq_status hvq_tensor_check(hvq_ctx *ctx, const char *path, const char *source,
                            const hvq_tensor_info *info, const hvq_tensor *read)
{
    const char *name = info->name ? info->name : "";
    uint64_t numel, nbytes;
    size_t es = hvq_dtype_size(info->dtype);
    const char *why = NULL;
    if (!info->name || !*info->name)
        why = "a tensor without a name";
    else if (info->ndim < 0 || info->ndim > HVQ_MAX_DIMS)
        why = "a number of dimensions outside 0 to " HVQ_STR(HVQ_MAX_DIMS);
    else if (!hvq_shape_numel(info->ndim, info->shape, &numel))
        why = "a negative dimension, or non-zero dimensions that multiply past 63 bits";
    else if (es == 0 && info->dtype != HVQ_DTYPE_OPAQUE)
        why = "an unknown element type";
    else if (es != 0 && (!hvq_mul_u64(numel, es, &nbytes) || nbytes != info->nbytes))
        why = "a byte size that does not match its shape and element type";
    else if (read) {
        const hvq_tensor_info *r = &read->info;
        if (r->dtype != info->dtype || r->ndim != info->ndim || r->nbytes != info->nbytes ||
            memcmp(r->shape, info->shape, (size_t)info->ndim * sizeof *info->shape) != 0)
            why = "read with a different element type, shape or size than it was listed with";
        else if (info->nbytes > 0 && !read->data)
            why = "read without its data";
    }
    if (!why)
        return HVQ_OK;
    return hvq_error(ctx, HVQ_E_INPUT, "%s: tensor '%.200s' as the %s source gives it: %s", path,
                     name, source, why);
}
