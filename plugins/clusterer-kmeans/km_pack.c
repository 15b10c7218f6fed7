/* k-means core: the indices' bit packing and the fit rule (see
 * kmeans_core.h). */
#include "km_private.h"

/* ------------------------------------------------------------------------
 * Bit packing
 * ---------------------------------------------------------------------- */

unsigned km_index_bits(uint64_t k)
{
    unsigned bits = 0;
    while (bits < 64 && (k - 1) >> bits)
        bits++;
    return k <= 1 ? 0 : bits;
}

uint64_t km_packed_bytes(uint64_t n, unsigned bits)
{
    if (bits && n > (UINT64_MAX - 7) / bits)
        return UINT64_MAX;
    return (n * bits + 7) / 8;
}

void km_pack(uint8_t *dst, const uint32_t *idx, size_t n, unsigned bits)
{
    if (bits == 0)
        return;
    uint64_t acc = 0, mask = ((uint64_t)1 << bits) - 1;
    unsigned have = 0;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        acc |= ((uint64_t)idx[i] & mask) << have;
        have += bits;
        while (have >= 8) {
            dst[o++] = (uint8_t)acc;
            acc >>= 8;
            have -= 8;
        }
    }
    if (have)
        dst[o] = (uint8_t)acc;
}

void km_unpack(const uint8_t *src, size_t n, unsigned bits, uint32_t *idx)
{
    if (bits == 0) {
        memset(idx, 0, n * sizeof *idx);
        return;
    }
    uint64_t acc = 0, mask = ((uint64_t)1 << bits) - 1;
    unsigned have = 0;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        while (have < bits) {
            acc |= (uint64_t)src[o++] << have;
            have += 8;
        }
        idx[i] = (uint32_t)(acc & mask);
        acc >>= bits;
        have -= bits;
    }
}

/* ------------------------------------------------------------------------
 * The fit rule
 * ---------------------------------------------------------------------- */

uint32_t km_fit_centroids(uint64_t n, uint32_t k, int shrink)
{
    if (!shrink)
        return n < k ? 0 : k;
    if (n / 16 >= k)
        return k;
    if (n < 2)
        return 1;
    uint32_t p = 2;
    while ((uint64_t)p * 2 <= n / 16)
        p *= 2;
    return p < k ? p : k;
}
