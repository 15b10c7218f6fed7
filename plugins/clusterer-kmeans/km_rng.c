/* k-means core: the seeded PRNG and sampling without replacement (see
 * kmeans_core.h). */
#include "km_private.h"

/* ------------------------------------------------------------------------
 * Random numbers
 * ---------------------------------------------------------------------- */

static uint64_t km_splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void km_rng_seed(km_rng *r, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        r->s[i] = km_splitmix64(&x);
}

static inline uint64_t km_rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t km_rng_next(km_rng *r)
{
    uint64_t *s = r->s;
    uint64_t out = km_rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = km_rotl(s[3], 45);
    return out;
}

uint64_t km_rng_below(km_rng *r, uint64_t n)
{
    /* Values below (2^64 mod n) would be over-represented: reject them. */
    uint64_t threshold = (0 - n) % n;
    for (;;) {
        uint64_t v = km_rng_next(r);
        if (v >= threshold)
            return v % n;
    }
}

/* A map from positions to values with open addressing: the swapped part of
 * a virtual Fisher-Yates array (untouched positions hold themselves). */
typedef struct km_map {
    uint64_t *key; /* position + 1; 0 = empty */
    uint64_t *val;
    uint64_t mask;
} km_map;

static uint64_t km_hash(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    return k;
}

static uint64_t *km_map_slot(const km_map *m, uint64_t pos)
{
    uint64_t h = km_hash(pos) & m->mask;
    while (m->key[h] != 0 && m->key[h] != pos + 1)
        h = (h + 1) & m->mask;
    return &m->key[h];
}

static uint64_t km_map_get(const km_map *m, uint64_t pos)
{
    uint64_t *k = km_map_slot(m, pos);
    return *k ? m->val[k - m->key] : pos;
}

static void km_map_set(km_map *m, uint64_t pos, uint64_t v)
{
    uint64_t *k = km_map_slot(m, pos);
    *k = pos + 1;
    m->val[k - m->key] = v;
}

int km_sample_with(km_rng *r, uint64_t n, uint64_t m, uint64_t *out, int method)
{
    if (m > n)
        return -1;
    if (m == n) {
        for (uint64_t i = 0; i < n; i++)
            out[i] = i;
        return 0;
    }
    if (method == KM_SAMPLE_AUTO)
        method = n <= UINT32_MAX && (n <= 8 * m || n <= (1u << 20)) ? KM_SAMPLE_ARRAY
                                                                   : KM_SAMPLE_MAP;
    if (method == KM_SAMPLE_ARRAY) {
        /* The plain shuffle of an explicit array 0..n-1. */
        if (n > UINT32_MAX || n > SIZE_MAX / sizeof(uint32_t))
            return -1;
        uint32_t *a = malloc((size_t)n * sizeof *a);
        if (!a)
            return -1;
        for (uint64_t i = 0; i < n; i++)
            a[i] = (uint32_t)i;
        for (uint64_t i = 0; i < m; i++) {
            uint64_t j = i + km_rng_below(r, n - i);
            uint32_t t = a[j];
            a[j] = a[i];
            out[i] = t;
        }
        free(a);
        return 0;
    }
    /* The same shuffle with only the touched entries stored: at most one
     * new entry per draw, so m entries in a table of >= 2m. */
    uint64_t cap = 16;
    while (cap < 2 * m)
        cap *= 2;
    if (cap > SIZE_MAX / sizeof(uint64_t))
        return -1;
    km_map map = {calloc((size_t)cap, sizeof(uint64_t)), malloc((size_t)cap * sizeof(uint64_t)),
                  cap - 1};
    if (!map.key || !map.val) {
        free(map.key);
        free(map.val);
        return -1;
    }
    for (uint64_t i = 0; i < m; i++) {
        uint64_t j = i + km_rng_below(r, n - i);
        uint64_t vi = km_map_get(&map, i), vj = km_map_get(&map, j);
        out[i] = vj;
        km_map_set(&map, j, vi); /* position i is never read again */
    }
    free(map.key);
    free(map.val);
    return 0;
}

int km_sample(km_rng *r, uint64_t n, uint64_t m, uint64_t *out)
{
    return km_sample_with(r, n, m, out, KM_SAMPLE_AUTO);
}
