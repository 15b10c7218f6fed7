/* Token files, one reader for `hvqconv eval` and the calibrate Hessian
 * source (both link it): a 1-D integer array read through the host (a
 * .npy, or a .npz holding one array: whatever source format host->detect
 * names for it), or raw little-endian int32 ids in a file whose name ends
 * in .bin. Ids are checked to be >= 0 and to fit an int32 (the vocabulary
 * check is the model's). Errors name the file. */
#ifndef HVQ_COMMON_TOKENS_H
#define HVQ_COMMON_TOKENS_H

#include "plugin.h"

#include <stdint.h>

/* The largest file read (a billion int32 ids would be 4 GB). */
#define HVQ_TOKENS_MAX_FILE (4ull << 30)

/* Reads path into *ids (allocated with host->alloc; *n of them). */
hvq_status hvq_tokens_read(hvq_ctx *ctx, const char *path, int32_t **ids, uint64_t *n);


#endif
