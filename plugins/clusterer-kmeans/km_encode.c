/* k-means core: the final pass (assign every vector, pack the indices,
 * write the reconstruction). */
#include "km_private.h"

/* ------------------------------------------------------------------------
 * The final pass
 * ---------------------------------------------------------------------- */

typedef struct km_encode_job {
    const float *x;
    uint64_t numel, n, nfull;
    const km_codebook *cb;
    const float *cvals;
    unsigned bits;
    uint8_t *packed;
    float *recon;
    const km_nbrs *nb;     /* guided search, or NULL */
    const uint32_t *guess; /* its first guesses, or NULL */
} km_encode_job;

static void km_encode_chunk(void *arg, uint64_t c, uint64_t i0, uint64_t i1)
{
    const km_encode_job *j = arg;
    const int b = j->cb->b;
    uint32_t idx[KM_CHUNK];
    (void)c;
    uint64_t full_end = i1 < j->nfull ? i1 : j->nfull;
    if (full_end > i0 && j->nb) {
        if (j->guess)
            memcpy(idx, j->guess + i0, (size_t)(full_end - i0) * sizeof *idx);
        else
            memset(idx, 0xff, (size_t)(full_end - i0) * sizeof *idx);
        km_guided_range(j->x + i0 * (uint64_t)b, (size_t)(full_end - i0), j->cb, j->nb, idx,
                        NULL);
    } else if (full_end > i0) {
        km_assign_fast(j->x + i0 * (uint64_t)b, (size_t)(full_end - i0), j->cb, idx, NULL);
    }
    if (i1 > j->nfull) { /* the last, zero-padded vector */
        float v[KM_MAX_BLOCK] = {0};
        memcpy(v, j->x + j->nfull * (uint64_t)b,
               (size_t)(j->numel - j->nfull * (uint64_t)b) * sizeof *v);
        km_assign_fast(v, 1, j->cb, idx + (j->nfull - i0), NULL);
    }
    /* i0 is a multiple of 8, so this chunk's bits start on a byte. */
    km_pack(j->packed + i0 * j->bits / 8, idx, (size_t)(i1 - i0), j->bits);
    for (uint64_t i = i0; i < i1; i++) {
        const float *cv = j->cvals + (size_t)idx[i - i0] * (size_t)b;
        uint64_t p = i * (uint64_t)b;
        uint64_t cnt = j->numel - p < (uint64_t)b ? j->numel - p : (uint64_t)b;
        memcpy(j->recon + p, cv, (size_t)cnt * sizeof *cv);
    }
}

int km_encode_all(const float *x, uint64_t numel, km_codebook *cb, const float *cvals,
                  unsigned bits, uint8_t *packed, float *recon, hvq_ctx *ctx, int accel,
                  const uint32_t *guess)
{
    uint64_t b = (uint64_t)cb->b;
    km_encode_job j = {x, numel, numel / b + (numel % b != 0), numel / b, cb, cvals,
                       bits, packed, recon, NULL, guess};
    km_nbrs nb = {0};
    if (accel != KM_ACCEL_NONE) {
        /* The box of the vectors (the padded last one included). */
        float lo[KM_MAX_BLOCK], hi[KM_MAX_BLOCK];
        km_bounds(x, (size_t)j.nfull, cb->b, lo, hi);
        if (j.n > j.nfull) {
            float v[KM_MAX_BLOCK] = {0};
            float l2[KM_MAX_BLOCK], h2[KM_MAX_BLOCK];
            memcpy(v, x + j.nfull * b, (size_t)(numel - j.nfull * b) * sizeof *v);
            km_bounds(v, 1, cb->b, l2, h2);
            for (uint64_t i = 0; i < b; i++) {
                lo[i] = l2[i] < lo[i] ? l2[i] : lo[i];
                hi[i] = h2[i] > hi[i] ? h2[i] : hi[i];
            }
        }
        /* the index where it pays; else guided search from the k-d
         * tree's guess where the lists are much shorter than the codebook */
        if (!km_codebook_index(cb, cvals, lo, hi, accel, ctx) &&
            km_guided_ok(cb->b, cb->k, accel) &&
            km_nbrs_build(&nb, cvals, cb->k, cb->b, ctx) == 0)
            j.nb = &nb;
    }
    hvq_host_parallel_for(ctx, j.n, KM_CHUNK, km_encode_chunk, &j);
    km_nbrs_free(&nb);
    return 0;
}
