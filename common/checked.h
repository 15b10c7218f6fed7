/* Small pure helpers shared by the core and plugins (header-only, no
 * state): overflow-checked arithmetic on byte counts, suffix tests on
 * names, a tensor's description for messages. One copy for the whole
 * project. */
#ifndef HVQ_COMMON_CHECKED_H
#define HVQ_COMMON_CHECKED_H

#include <stdint.h>
#include <stdio.h>
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

/* "TYPE [a, b, c]" (or "[a, b, c]" when type is NULL) into buf, cut at
 * len; returns buf. */
static inline const char *hvq_shape_text(char *buf, size_t len, const char *type, int ndim,
                                         const int64_t *shape)
{
    size_t o = (size_t)snprintf(buf, len, "%s%s[", type ? type : "", type ? " " : "");
    for (int d = 0; d < ndim && o < len; d++)
        o += (size_t)snprintf(buf + o, len - o, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (o < len)
        snprintf(buf + o, len - o, "]");
    return buf;
}

#endif
