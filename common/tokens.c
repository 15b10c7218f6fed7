/* Token files, read alike by `hvqconv eval` (core) and the calibrate
 * Hessian source (a plugin): see tokens.h. Everything goes through the
 * host table, so the same code serves both sides of the plugin boundary. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1 /* fileno */
#endif

#include "tokens.h"

#include "file.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Token ids from a tensor of any integer type: checked to be >= 0 and to
 * fit an int32 (the vocabulary check comes with the forward pass). */
static hvq_status ids_from_tensor(hvq_ctx *ctx, const char *path, const hvq_tensor *t,
                                  int32_t **out, uint64_t *n_out)
{
    const hvq_host *H = ctx->host;
    int size, is_signed;
    switch (t->info.dtype) {
    case HVQ_DTYPE_I8: size = 1; is_signed = 1; break;
    case HVQ_DTYPE_U8: size = 1; is_signed = 0; break;
    case HVQ_DTYPE_I16: size = 2; is_signed = 1; break;
    case HVQ_DTYPE_U16: size = 2; is_signed = 0; break;
    case HVQ_DTYPE_I32: size = 4; is_signed = 1; break;
    case HVQ_DTYPE_U32: size = 4; is_signed = 0; break;
    case HVQ_DTYPE_I64: size = 8; is_signed = 1; break;
    case HVQ_DTYPE_U64: size = 8; is_signed = 0; break;
    default:
        return H->error(ctx, HVQ_E_INPUT,
                        "%s: the array '%s' holds %s; token ids must be integers (int32, "
                        "int64, uint16, ...)",
                        path, t->info.name,
                        t->info.dtype_name ? t->info.dtype_name : H->dtype_name(t->info.dtype));
    }
    int flat = 1;
    for (int d = 0; d + 1 < t->info.ndim; d++)
        flat &= t->info.shape[d] == 1;
    if (t->info.ndim < 1 || !flat)
        return H->error(ctx, HVQ_E_INPUT,
                        "%s: the array '%s' has %d dimensions; a token file holds one flat (1-D) "
                        "array of ids",
                        path, t->info.name, t->info.ndim);
    uint64_t count = hvq_numel(&t->info);
    if (count > t->info.nbytes / (uint64_t)size)
        return H->error(ctx, HVQ_E_INTERNAL, "%s: array '%s' is shorter than its shape", path,
                        t->info.name);
    int32_t *ids = H->alloc(ctx, (size_t)(count ? count : 1) * sizeof *ids);
    if (!ids)
        return HVQ_E_NOMEM;
    const unsigned char *base = t->data;
    for (uint64_t i = 0; i < count; i++) {
        const unsigned char *p = base + i * (uint64_t)size;
        uint64_t u = 0;
        for (int k = 0; k < size; k++)
            u |= (uint64_t)p[k] << (8 * k);
        int neg = is_signed && (p[size - 1] & 0x80);
        if (neg || u > INT32_MAX) {
            H->free(ids);
            return H->error(ctx, HVQ_E_INPUT, "%s: token %llu is %s", path,
                            (unsigned long long)i,
                            neg ? "negative" : "too large for a token id (over 2^31 - 1)");
        }
        ids[i] = (int32_t)u;
    }
    *out = ids;
    *n_out = count;
    return HVQ_OK;
}

hvq_status hvq_tokens_read(hvq_ctx *ctx, const char *path, int32_t **out, uint64_t *n)
{
    const hvq_host *H = ctx->host;
    size_t plen = strlen(path);
    *out = NULL;
    *n = 0;
    if (plen >= 4 && strcmp(path + plen - 4, ".bin") == 0) {
        unsigned char *b;
        size_t len;
        hvq_status st = hvq_slurp_input(ctx, path, HVQ_TOKENS_MAX_FILE, "a token file", &b, &len);
        if (st != HVQ_OK)
            return st;
        if (len % 4 != 0) {
            H->free(b);
            return H->error(ctx, HVQ_E_INPUT,
                            "%s: %zu bytes, not a whole number of int32 token ids (a .bin "
                            "token file is raw little-endian int32)",
                            path, len);
        }
        hvq_tensor t = {{.name = "ids", .dtype = HVQ_DTYPE_I32, .dtype_name = "I32", .ndim = 1,
                         .shape = {(int64_t)(len / 4)}, .nbytes = len},
                        b};
        st = ids_from_tensor(ctx, path, &t, out, n);
        H->free(b);
        return st;
    }
    if (access(path, F_OK) != 0)
        return H->error(ctx, errno == ENOENT ? HVQ_E_INPUT : HVQ_E_IO, "%s: cannot open: %s",
                        path, strerror(errno));
    /* The one place that sniffs magic bytes is the host's detect. */
    struct stat sb;
    if (HVQ_HOST_HAS(H, detect) && !H->detect(ctx, path)) {
        if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) /* detect's message says why */
            return H->status(ctx) == HVQ_OK ? HVQ_E_INPUT : H->status(ctx);
        return H->error(ctx, HVQ_E_INPUT, "%s: not a token file: expected a .npy array (or a "
                        "one-array .npz) or raw little-endian int32 ids in a .bin file", path);
    }
    hvq_model *m = H->model_open(ctx, path);
    if (!m) {
        hvq_status st = H->status(ctx);
        return st == HVQ_OK ? HVQ_E_INPUT : st;
    }
    hvq_status st;
    hvq_tensor_info info;
    size_t count = H->model_count(m);
    if (count != 1) {
        st = H->error(ctx, HVQ_E_INPUT,
                      "%s: %zu arrays; a token file holds exactly one (a 1-D array of ids)",
                      path, count);
    } else if ((st = H->model_info(m, 0, &info)) == HVQ_OK) {
        hvq_tensor t;
        st = H->model_find(ctx, m, info.name, &t);
        if (st == HVQ_OK)
            st = ids_from_tensor(ctx, path, &t, out, n);
    }
    H->model_close(ctx, m);
    return st;
}
