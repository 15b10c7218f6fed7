/* Error feedback for scalar k-means: see kmeans_gptq.c. */
#ifndef HVQ_KMEANS_GPTQ_H
#define HVQ_KMEANS_GPTQ_H

#include "plugin.h"

/* Re-assigns every value of in->x (rows x cols, block size 1) to the k
 * levels cent[] with error feedback through u (cols x cols, common/gptq.h),
 * rewriting the packed indices (bits each, as km_encode_all wrote them)
 * and recon, on ctx's threads. Returns 0, or -1 when out of memory. */
int km_gptq_scalar(hvq_ctx *ctx, const hvq_cluster_input *in, const float *cent, uint32_t k,
                   unsigned bits, const double *u, uint8_t *packed, float *recon);

#endif
