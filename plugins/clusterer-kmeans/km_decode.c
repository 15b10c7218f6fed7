/* k-means core: decoding the packed indices. */
#include "km_private.h"

/* ------------------------------------------------------------------------
 * Decoding
 * ---------------------------------------------------------------------- */

/* Vectors per decode chunk: a multiple of 8, so every chunk starts on a
 * byte of the bit stream. */
enum { KM_DECODE_CHUNK = 1 << 15 };

typedef struct km_decode_job {
    const uint8_t *packed;
    unsigned bits;
    uint32_t k;
    const float *cvals;
    int b;
    uint64_t numel, n;
    float *recon;
    uint64_t *bad; /* per chunk: first bad vector, or UINT64_MAX */
} km_decode_job;

/* Decodes vectors [i0, i1): UINT64_MAX, or the first with a bad index. */
static uint64_t km_decode_range(const km_decode_job *j, uint64_t i0, uint64_t i1)
{
    const unsigned bits = j->bits;
    const size_t b = (size_t)j->b;
    /* The last vector may be cut short by numel: done apart below. */
    uint64_t full = i1;
    if (full == j->n && j->n * b > j->numel)
        full--;
    const uint8_t *src = j->packed + (size_t)(i0 * bits / 8);
    const uint64_t mask = bits ? ((uint64_t)1 << bits) - 1 : 0;
    uint64_t acc = 0;
    unsigned have = 0;
    float *out = j->recon + i0 * b;
    for (uint64_t i = i0; i < i1; i++) {
        while (have < bits) {
            acc |= (uint64_t)*src++ << have;
            have += 8;
        }
        uint64_t q = acc & mask;
        acc >>= bits;
        have -= bits;
        if (q >= j->k)
            return i;
        const float *c = j->cvals + q * b;
        if (i < full) {
            for (size_t t = 0; t < b; t++) /* b is 1..8: a short fixed copy */
                out[t] = c[t];
        } else {
            for (size_t t = 0; t < j->numel - i * b; t++)
                out[t] = c[t];
        }
        out += b;
    }
    return UINT64_MAX;
}

static void km_decode_chunk(void *arg, uint64_t chunk, uint64_t i0, uint64_t i1)
{
    km_decode_job *j = arg;
    j->bad[chunk] = km_decode_range(j, i0, i1);
}

uint64_t km_decode(const uint8_t *packed, unsigned bits, uint32_t k, const float *cvals, int b,
                   uint64_t numel, float *recon, hvq_ctx *ctx)
{
    uint64_t n = numel / (uint64_t)b + (numel % (uint64_t)b != 0);
    size_t nchunk = (size_t)((n + KM_DECODE_CHUNK - 1) / KM_DECODE_CHUNK);
    km_decode_job j = {packed, bits, k, cvals, b, numel, n, recon, NULL};
    if (nchunk <= 1 || !(j.bad = malloc(nchunk * sizeof *j.bad)))
        return km_decode_range(&j, 0, n); /* in order, on this thread */
    hvq_host_parallel_for(ctx, n, KM_DECODE_CHUNK, km_decode_chunk, &j);
    uint64_t first = UINT64_MAX;
    for (size_t c = 0; c < nchunk; c++)
        if (j.bad[c] < first)
            first = j.bad[c];
    free(j.bad);
    return first;
}
