/* Element types: sizes, names, and conversion to and from float32. */
#ifndef HVQ_CORE_DTYPE_H
#define HVQ_CORE_DTYPE_H

#include "plugin.h"

size_t hvq_dtype_size(hvq_dtype t);        /* bytes; 0 for OPAQUE */
const char *hvq_dtype_name(hvq_dtype t);   /* "F32", ...; "OPAQUE" */
/* Parses "f32"/"F32"/"float32", "f16"/"float16"/"half", "bf16"/"bfloat16",
 * "f64"; HVQ_DTYPE_OPAQUE when not a float name. */
hvq_dtype hvq_dtype_parse_float(const char *s);
int hvq_dtype_is_float(hvq_dtype t);       /* F32, F16, BF16, F64 */

/* Scalar reference conversions (round to nearest even, NaN kept):
 * hvq_f32_to_f16, hvq_f16_to_f32, hvq_f32_to_bf16, hvq_bf16_to_f32. */
#include "f16.h"

/* Converts n elements between F32 and F16/BF16/F64/F32. HVQ_E_UNSUPPORTED
 * (with a message on ctx, when ctx is not NULL) for other pairs. */
hvq_status hvq_convert(hvq_ctx *ctx, hvq_dtype dst_type, void *dst,
                       hvq_dtype src_type, const void *src, size_t n);

/* The host's check of a tensor a source plugin lists (read NULL) or reads
 * (read: what source_read gave for the listed info): a name, a shape
 * within hvq_shape_numel's rule, a known element type, a byte size that
 * matches, and on read the same description with its data. HVQ_E_INPUT
 * with a message naming path and the source plugin otherwise. */
hvq_status hvq_tensor_check(hvq_ctx *ctx, const char *path, const char *source,
                            const hvq_tensor_info *info, const hvq_tensor *read);

#endif
