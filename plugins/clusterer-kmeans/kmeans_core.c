/* The host-independent part of the "kmeans" clusterer; see kmeans_core.h.
 *
 * Speed. Assignment dominates: (sample vectors x centroids x iterations)
 * plus (all vectors x centroids). The fast kernels compute the direct-form
 * distance sum_j (x_j - c_j)^2 (not the expanded ||c||^2 - 2 x.c, whose
 * rounding differs), eight centroids at a time from a structure-of-arrays
 * codebook and four vectors at a time so each centroid load serves four
 * vectors; each lane keeps its best distance and index with strict "<", and
 * the lanes are merged by (distance, index). Since every lane evaluates the
 * very expression of the reference in the same order, the distances are the
 * same bit for bit and so is the assignment. The kernels are written with
 * GCC/Clang vector extensions; on x86 a second copy is compiled for AVX2
 * (no FMA) and picked at run time. Threads split the vectors into fixed
 * chunks; each vector's result is independent of the split, and the M-step
 * sums are accumulated by one thread in sample order, so nothing depends on
 * the thread count.
 */
#include "kmeans_core.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

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

/* ------------------------------------------------------------------------
 * Codebooks
 * ---------------------------------------------------------------------- */

int km_codebook_init(km_codebook *cb, int b, uint32_t k)
{
    memset(cb, 0, sizeof *cb);
    cb->b = b;
    cb->k = k;
    cb->nblk = (k + 7) / 8;
    size_t bytes = (size_t)cb->nblk * (size_t)b * 8 * sizeof(float);
    cb->soa = aligned_alloc(32, bytes ? bytes : 32);
    if (!cb->soa)
        return -1;
    for (size_t i = 0; i < bytes / sizeof(float); i++)
        cb->soa[i] = NAN;
    return 0;
}

void km_codebook_set(km_codebook *cb, const float *c)
{
    int b = cb->b;
    for (uint32_t q = 0; q < cb->k; q++)
        for (int j = 0; j < b; j++)
            cb->soa[((size_t)(q / 8) * (size_t)b + (size_t)j) * 8 + q % 8] = c[(size_t)q * b + j];
}

void km_codebook_free(km_codebook *cb)
{
    free(cb->soa);
    cb->soa = NULL;
}

/* ------------------------------------------------------------------------
 * Assignment: the reference
 * ---------------------------------------------------------------------- */

void km_assign_ref(const float *x, size_t n, int b, const float *c, uint32_t k,
                   uint32_t *idx, float *dist)
{
    for (size_t i = 0; i < n; i++) {
        const float *v = x + i * (size_t)b;
        float best = INFINITY;
        uint32_t bk = 0;
        for (uint32_t q = 0; q < k; q++) {
            const float *cq = c + (size_t)q * b;
            float d = 0.0f;
            for (int j = 0; j < b; j++) {
                float t = v[j] - cq[j];
                d = d + t * t;
            }
            if (d < best) {
                best = d;
                bk = q;
            }
        }
        idx[i] = bk;
        if (dist)
            dist[i] = best;
    }
}

/* ------------------------------------------------------------------------
 * Assignment: the fast kernels
 * ---------------------------------------------------------------------- */

#if defined(__GNUC__) || defined(__clang__)
#define KM_HAVE_VECTORS 1
typedef float km_v8f __attribute__((vector_size(32)));
typedef int32_t km_v8i __attribute__((vector_size(32)));
#define KM_INLINE static inline __attribute__((always_inline))
#define KM_PRAGMA(x) _Pragma(#x)
#if defined(__clang__)
#define KM_UNROLL KM_PRAGMA(unroll)
#else
#define KM_UNROLL KM_PRAGMA(GCC unroll 16)
#endif
#endif

#if defined(KM_HAVE_VECTORS) && (defined(__x86_64__) || defined(__i386__))
#define KM_HAVE_AVX2 1
#endif

#ifdef KM_HAVE_VECTORS

enum { KM_XB = 4 }; /* vectors per pass over the centroids */

KM_INLINE void km_merge(const km_v8f *bestp, const km_v8i *bip, uint32_t *idx, float *dist)
{
    const km_v8f best = *bestp;
    const km_v8i bi = *bip;
    float bd = INFINITY;
    uint32_t bk = 0;
    for (int l = 0; l < 8; l++) {
        float d = best[l];
        uint32_t k = (uint32_t)bi[l];
        if (d < bd || (d == bd && k < bk)) {
            bd = d;
            bk = k;
        }
    }
    *idx = bk;
    if (dist)
        *dist = bd;
}

/* Keeps, per lane, the smaller distance and its centroid (strict <: the
 * earlier centroid stays on a tie). */
#define KM_KEEP(d, cur, best, bi)                                             \
    do {                                                                      \
        km_v8i m_ = (d) < (best);                                             \
        (best) = (km_v8f)(((km_v8i)(best) & ~m_) | ((km_v8i)(d) & m_));       \
        (bi) = ((bi) & ~m_) | ((cur) & m_);                                   \
    } while (0)

/* Distances of KM_XB vectors at a time (then one at a time) to every
 * centroid, B values per vector; B is a constant after inlining. The
 * vectors' values, splatted, stay in memory (read as operands); one
 * centroid row at a time sits in a register and serves all KM_XB vectors.
 * (c - x)^2 is bitwise (x - c)^2: rounding to nearest is symmetric. */
KM_INLINE void km_body(const float *x, size_t n, const int B, const float *soa, uint32_t nblk,
                       uint32_t *idx, float *dist)
{
    const km_v8i iota = {0, 1, 2, 3, 4, 5, 6, 7};
    const km_v8f inf = {INFINITY, INFINITY, INFINITY, INFINITY,
                        INFINITY, INFINITY, INFINITY, INFINITY};
    const km_v8f zero = {0};
    size_t i = 0;
    for (; i + KM_XB <= n; i += KM_XB) {
        km_v8f x0[KM_MAX_BLOCK], x1[KM_MAX_BLOCK], x2[KM_MAX_BLOCK], x3[KM_MAX_BLOCK];
        const float *v = x + i * (size_t)B;
        for (int j = 0; j < B; j++) {
            x0[j] = zero + v[j];
            x1[j] = zero + v[B + j];
            x2[j] = zero + v[2 * B + j];
            x3[j] = zero + v[3 * B + j];
        }
        km_v8f b0 = inf, b1 = inf, b2 = inf, b3 = inf;
        km_v8i i0 = iota - iota, i1 = i0, i2 = i0, i3 = i0, cur = iota;
        const float *c = soa;
        for (uint32_t blk = 0; blk < nblk; blk++, c += B * 8) {
            km_v8f cj = *(const km_v8f *)c, t;
            km_v8f d0, d1, d2, d3;
            t = cj - x0[0];
            d0 = t * t;
            t = cj - x1[0];
            d1 = t * t;
            t = cj - x2[0];
            d2 = t * t;
            t = cj - x3[0];
            d3 = t * t;
            KM_UNROLL
            for (int j = 1; j < B; j++) {
                cj = *(const km_v8f *)(c + j * 8);
                t = cj - x0[j];
                d0 = d0 + t * t;
                t = cj - x1[j];
                d1 = d1 + t * t;
                t = cj - x2[j];
                d2 = d2 + t * t;
                t = cj - x3[j];
                d3 = d3 + t * t;
            }
            KM_KEEP(d0, cur, b0, i0);
            KM_KEEP(d1, cur, b1, i1);
            KM_KEEP(d2, cur, b2, i2);
            KM_KEEP(d3, cur, b3, i3);
            cur += 8;
        }
        km_merge(&b0, &i0, idx + i, dist ? dist + i : NULL);
        km_merge(&b1, &i1, idx + i + 1, dist ? dist + i + 1 : NULL);
        km_merge(&b2, &i2, idx + i + 2, dist ? dist + i + 2 : NULL);
        km_merge(&b3, &i3, idx + i + 3, dist ? dist + i + 3 : NULL);
    }
    for (; i < n; i++) {
        km_v8f xs[KM_MAX_BLOCK];
        for (int j = 0; j < B; j++)
            xs[j] = zero + x[i * (size_t)B + (size_t)j];
        km_v8f best = inf;
        km_v8i bi = iota - iota, cur = iota;
        const float *c = soa;
        for (uint32_t blk = 0; blk < nblk; blk++, c += B * 8) {
            km_v8f t = *(const km_v8f *)c - xs[0];
            km_v8f d = t * t;
            KM_UNROLL
            for (int j = 1; j < B; j++) {
                t = *(const km_v8f *)(c + j * 8) - xs[j];
                d = d + t * t;
            }
            KM_KEEP(d, cur, best, bi);
            cur += 8;
        }
        km_merge(&best, &bi, idx + i, dist ? dist + i : NULL);
    }
}

#define KM_CASE(B)                                                            \
    case B:                                                                   \
        km_body(x, n, B, cb->soa, cb->nblk, idx, dist);                       \
        break;

#define KM_DEFINE_KERNEL(NAME, ATTR)                                          \
    ATTR static void NAME(const float *x, size_t n, const km_codebook *cb,    \
                          uint32_t *idx, float *dist)                         \
    {                                                                         \
        switch (cb->b) {                                                      \
            KM_CASE(1) KM_CASE(2) KM_CASE(3) KM_CASE(4)                       \
            KM_CASE(5) KM_CASE(6) KM_CASE(7) KM_CASE(8)                       \
            KM_CASE(9) KM_CASE(10) KM_CASE(11) KM_CASE(12)                    \
            KM_CASE(13) KM_CASE(14) KM_CASE(15) KM_CASE(16)                   \
        default:                                                              \
            break;                                                            \
        }                                                                     \
    }

KM_DEFINE_KERNEL(km_kernel_vec, )
#ifdef KM_HAVE_AVX2
KM_DEFINE_KERNEL(km_kernel_avx2, __attribute__((target("avx2"))))
#endif

#endif /* KM_HAVE_VECTORS */

/* The portable kernel (always available, and the only one without vector
 * extensions): the reference's loops, reading the blocked layout. */
static void km_kernel_plain(const float *x, size_t n, const km_codebook *cb, uint32_t *idx,
                            float *dist)
{
    int b = cb->b;
    for (size_t i = 0; i < n; i++) {
        const float *v = x + i * (size_t)b;
        float best = INFINITY;
        uint32_t bk = 0;
        for (uint32_t q = 0; q < cb->k; q++) {
            const float *c = cb->soa + (size_t)(q / 8) * (size_t)b * 8 + q % 8;
            float d = 0.0f;
            for (int j = 0; j < b; j++) {
                float t = v[j] - c[j * 8];
                d = d + t * t;
            }
            if (d < best) {
                best = d;
                bk = q;
            }
        }
        idx[i] = bk;
        if (dist)
            dist[i] = best;
    }
}

typedef void (*km_kernel_fn)(const float *, size_t, const km_codebook *, uint32_t *, float *);

typedef struct km_kernel_entry {
    const char *name;
    km_kernel_fn fn;
} km_kernel_entry;

static int km_kernels(km_kernel_entry *out)
{
    int n = 0;
    out[n++] = (km_kernel_entry){"plain", km_kernel_plain};
#ifdef KM_HAVE_VECTORS
    out[n++] = (km_kernel_entry){"vector", km_kernel_vec};
#endif
#ifdef KM_HAVE_AVX2
    if (__builtin_cpu_supports("avx2"))
        out[n++] = (km_kernel_entry){"avx2", km_kernel_avx2};
#endif
    return n;
}

int km_kernel_count(void)
{
    km_kernel_entry k[4];
    return km_kernels(k);
}

const char *km_kernel_name(int kernel)
{
    km_kernel_entry k[4];
    int n = km_kernels(k);
    return kernel >= 0 && kernel < n ? k[kernel].name : NULL;
}

void km_assign_kernel(int kernel, const float *x, size_t n, const km_codebook *cb,
                      uint32_t *idx, float *dist)
{
    km_kernel_entry k[4];
    int nk = km_kernels(k);
    if (kernel < 0 || kernel >= nk)
        kernel = nk - 1;
    k[kernel].fn(x, n, cb, idx, dist);
}

void km_assign_fast(const float *x, size_t n, const km_codebook *cb, uint32_t *idx, float *dist)
{
    km_assign_kernel(-1, x, n, cb, idx, dist);
}

/* ------------------------------------------------------------------------
 * Threads: fixed chunks handed out by an atomic counter.
 * ---------------------------------------------------------------------- */

typedef struct km_par {
    atomic_size_t next;
    size_t n;
    void (*fn)(void *arg, size_t chunk);
    void *arg;
} km_par;

static void *km_par_worker(void *p)
{
    km_par *q = p;
    size_t c;
    while ((c = atomic_fetch_add(&q->next, 1)) < q->n)
        q->fn(q->arg, c);
    return NULL;
}

enum { KM_MAX_THREADS = 256 };

static void km_parallel(int threads, size_t nchunks, void (*fn)(void *, size_t), void *arg)
{
    km_par q;
    atomic_init(&q.next, 0);
    q.n = nchunks;
    q.fn = fn;
    q.arg = arg;
    if (threads > KM_MAX_THREADS)
        threads = KM_MAX_THREADS;
    if ((size_t)threads > nchunks)
        threads = (int)nchunks;
    pthread_t th[KM_MAX_THREADS];
    int started = 0;
    for (int t = 1; t < threads; t++) {
        if (pthread_create(&th[started], NULL, km_par_worker, &q) != 0)
            break; /* fewer threads: same result */
        started++;
    }
    km_par_worker(&q);
    for (int t = 0; t < started; t++)
        pthread_join(th[t], NULL);
}

enum { KM_CHUNK = 4096 }; /* vectors per task; a multiple of 8 */

typedef struct km_assign_job {
    const float *x;
    size_t n;
    const km_codebook *cb;
    uint32_t *idx;
    float *dist;
} km_assign_job;

static void km_assign_chunk(void *arg, size_t c)
{
    const km_assign_job *j = arg;
    size_t i0 = c * KM_CHUNK, i1 = i0 + KM_CHUNK < j->n ? i0 + KM_CHUNK : j->n;
    km_assign_fast(j->x + i0 * (size_t)j->cb->b, i1 - i0, j->cb, j->idx + i0,
                   j->dist ? j->dist + i0 : NULL);
}

int km_assign_threads(const float *x, size_t n, const km_codebook *cb, uint32_t *idx,
                      float *dist, int threads)
{
    km_assign_job j = {x, n, cb, idx, dist};
    km_parallel(threads, (n + KM_CHUNK - 1) / KM_CHUNK, km_assign_chunk, &j);
    return 0;
}

/* ------------------------------------------------------------------------
 * Training
 * ---------------------------------------------------------------------- */

typedef struct km_ranked {
    float d;
    uint32_t pad;
    uint64_t pos;
} km_ranked;

/* Largest distance first; equal distances by position. */
static int km_ranked_cmp(const void *pa, const void *pb)
{
    const km_ranked *a = pa, *b = pb;
    if (a->d != b->d)
        return a->d > b->d ? -1 : 1;
    return a->pos < b->pos ? -1 : a->pos > b->pos;
}

static double km_sum(const float *d, uint64_t n)
{
    double s = 0.0;
    for (uint64_t i = 0; i < n; i++)
        s += d[i];
    return s;
}

/* Moves the dead centroids (counts == 0) to the subset vectors worst served
 * by the live ones; returns the number moved, or -1 when out of memory. */
static int64_t km_revive(const float *sample, uint64_t m, const km_train_opts *o, km_rng *r,
                         float *cent, const uint64_t *counts)
{
    const int b = o->b;
    const uint32_t k = o->k;
    uint32_t nlive = 0;
    for (uint32_t q = 0; q < k; q++)
        nlive += counts[q] != 0;
    uint64_t nd = k - nlive, rs = o->revival < m ? o->revival : m;
    int64_t moved = -1;
    km_codebook live = {0};
    float *lv = malloc((size_t)nlive * (size_t)b * sizeof *lv + 1);
    uint64_t *pos = malloc((size_t)rs * sizeof *pos + 1);
    float *vec = malloc((size_t)rs * (size_t)b * sizeof *vec + 1);
    float *dist = malloc((size_t)rs * sizeof *dist + 1);
    uint32_t *lab = malloc((size_t)rs * sizeof *lab + 1);
    km_ranked *rank = malloc((size_t)rs * sizeof *rank + 1);
    if (!lv || !pos || !vec || !dist || !lab || !rank || km_codebook_init(&live, b, nlive))
        goto out;
    for (uint32_t q = 0, l = 0; q < k; q++)
        if (counts[q])
            memcpy(lv + (size_t)l++ * b, cent + (size_t)q * b, (size_t)b * sizeof *lv);
    km_codebook_set(&live, lv);
    if (km_sample(r, m, rs, pos))
        goto out;
    for (uint64_t s = 0; s < rs; s++)
        memcpy(vec + s * (size_t)b, sample + pos[s] * (size_t)b, (size_t)b * sizeof *vec);
    km_assign_threads(vec, (size_t)rs, &live, lab, dist, o->threads);
    for (uint64_t s = 0; s < rs; s++) {
        rank[s].d = isnan(dist[s]) ? -INFINITY : dist[s];
        rank[s].pad = 0;
        rank[s].pos = s;
    }
    qsort(rank, (size_t)rs, sizeof *rank, km_ranked_cmp);
    uint64_t nmove = nd < rs ? nd : rs, q2 = 0;
    for (uint32_t q = 0; q < k && q2 < nmove; q++)
        if (!counts[q])
            memcpy(cent + (size_t)q * b, vec + rank[q2++].pos * (size_t)b,
                   (size_t)b * sizeof *cent);
    moved = (int64_t)nmove;
out:
    km_codebook_free(&live);
    free(lv);
    free(pos);
    free(vec);
    free(dist);
    free(lab);
    free(rank);
    return moved;
}

int km_train(const float *sample, uint64_t m, const km_train_opts *o, km_rng *r, float *cent)
{
    const int b = o->b;
    const uint32_t k = o->k;
    int rc = -1;
    if (k < 1 || k > m || b < 1 || b > KM_MAX_BLOCK)
        return -1;
    km_codebook cb = {0};
    uint64_t *perm = malloc((size_t)k * sizeof *perm);
    uint32_t *labels = malloc((size_t)m * sizeof *labels);
    float *dist = o->objective ? malloc((size_t)m * sizeof *dist) : NULL;
    double *sums = malloc((size_t)k * (size_t)b * sizeof *sums);
    uint64_t *counts = malloc((size_t)k * sizeof *counts);
    if (!perm || !labels || (o->objective && !dist) || !sums || !counts ||
        km_codebook_init(&cb, b, k))
        goto out;

    /* Initialization: k distinct sample vectors chosen at random. */
    if (km_sample(r, m, k, perm))
        goto out;
    for (uint32_t q = 0; q < k; q++)
        memcpy(cent + (size_t)q * b, sample + perm[q] * (size_t)b, (size_t)b * sizeof *cent);
    km_codebook_set(&cb, cent);

    for (int it = 0; it < o->iterations; it++) {
        /* E-step */
        km_assign_threads(sample, (size_t)m, &cb, labels, dist, o->threads);
        if (o->objective)
            o->objective[it] = km_sum(dist, m);
        /* M-step sums, in sample order (independent of the threads). */
        memset(sums, 0, (size_t)k * (size_t)b * sizeof *sums);
        memset(counts, 0, (size_t)k * sizeof *counts);
        for (uint64_t i = 0; i < m; i++) {
            uint32_t q = labels[i];
            const float *v = sample + i * (size_t)b;
            double *s = sums + (size_t)q * b;
            counts[q]++;
            for (int j = 0; j < b; j++)
                s[j] += v[j];
        }
        uint64_t dead = 0;
        for (uint32_t q = 0; q < k; q++)
            dead += counts[q] == 0;
        int64_t moved = 0;
        /* Dead units first: their distances are to the live centroids as
         * they were before this update. */
        if (dead && (moved = km_revive(sample, m, o, r, cent, counts)) < 0)
            goto out;
        if (o->revived)
            o->revived[it] = (uint64_t)moved;
        for (uint32_t q = 0; q < k; q++)
            if (counts[q])
                for (int j = 0; j < b; j++)
                    cent[(size_t)q * b + j] =
                        (float)(sums[(size_t)q * b + j] / (double)counts[q]);
        km_codebook_set(&cb, cent);
        if (o->progress)
            o->progress(o->progress_arg, (uint64_t)it + 1, (uint64_t)o->iterations);
    }
    if (o->objective) {
        km_assign_threads(sample, (size_t)m, &cb, labels, dist, o->threads);
        o->objective[o->iterations] = km_sum(dist, m);
    }
    rc = 0;
out:
    km_codebook_free(&cb);
    free(perm);
    free(labels);
    free(dist);
    free(sums);
    free(counts);
    return rc;
}

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
} km_encode_job;

static void km_encode_chunk(void *arg, size_t c)
{
    const km_encode_job *j = arg;
    const int b = j->cb->b;
    uint32_t idx[KM_CHUNK];
    uint64_t i0 = (uint64_t)c * KM_CHUNK, i1 = i0 + KM_CHUNK < j->n ? i0 + KM_CHUNK : j->n;
    uint64_t full_end = i1 < j->nfull ? i1 : j->nfull;
    if (full_end > i0)
        km_assign_fast(j->x + i0 * (uint64_t)b, (size_t)(full_end - i0), j->cb, idx, NULL);
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

int km_encode_all(const float *x, uint64_t numel, const km_codebook *cb, const float *cvals,
                  unsigned bits, uint8_t *packed, float *recon, int threads)
{
    uint64_t b = (uint64_t)cb->b;
    km_encode_job j = {x, numel, numel / b + (numel % b != 0), numel / b, cb, cvals,
                       bits, packed, recon};
    km_parallel(threads, (size_t)((j.n + KM_CHUNK - 1) / KM_CHUNK), km_encode_chunk, &j);
    return 0;
}
