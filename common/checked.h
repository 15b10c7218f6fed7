/* Small pure helpers shared by the core and plugins (header-only, no
 * state): overflow-checked arithmetic on byte counts and suffix tests on
 * names. One copy for the whole project. */
#ifndef HVQ_COMMON_CHECKED_H
#define HVQ_COMMON_CHECKED_H

#include <stdint.h>
#include <string.h>

/* *out = a * b; 0 (and *out untouched) when it would pass 64 bits. */
static inline int hvq_mul_u64(uint64_t a, uint64_t b, uint64_t *out)
{
    if (a != 0 && b > UINT64_MAX / a)
        return 0;
    *out = a * b;
    return 1;
}

/* *out = a + b; 0 (and *out untouched) when it would pass 64 bits. */
static inline int hvq_add_u64(uint64_t a, uint64_t b, uint64_t *out)
{
    if (b > UINT64_MAX - a)
        return 0;
    *out = a + b;
    return 1;
}

/* Whether s ends with suffix (an empty suffix always matches). */
static inline int hvq_ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

#endif
