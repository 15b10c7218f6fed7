/* The first value of a float array that is NaN or infinite: shared by the
 * core (decoded containers, eval's weights) and the clusterers. Header-only,
 * for plugins. */
#ifndef HVQ_COMMON_FINITE_H
#define HVQ_COMMON_FINITE_H

#include <math.h>
#include <stdint.h>

/* The index of the first value of v[0..n) that is NaN or infinite, or n. */
static inline uint64_t hvq_first_nonfinite(const float *v, uint64_t n)
{
    uint64_t i = 0;
    while (i < n && isfinite(v[i]))
        i++;
    return i;
}

#endif
