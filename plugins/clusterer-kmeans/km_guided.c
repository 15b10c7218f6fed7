/* k-means core: guided assignment, a guess certified by the centroids'
 * neighbour lists (built in km_nbrs.c; see there for the reasoning). */
#include "km_private.h"

/* The reference's distance from v to centroid q (tab: b rows of kp). */
static inline float km_dist_tab(const float *v, const float *tab, uint32_t kp, uint32_t q, int b)
{
    return km_dist_strided(v, tab + q, kp, b);
}

/* A vector v without a guess: the k-d tree's bucket holding it (its
 * number returned), *a its first centroid and *bd the distance to it. */
static inline uint32_t km_bucket_first(const km_nbrs *nb, const float *v, int b, uint32_t *a,
                                       float *bd)
{
    const km_kd *t = nb->kd;
    uint32_t nd = 0;
    while (t->nd[nd][2])
        nd = t->nd[nd][2] + (uint32_t)(v[t->dim[nd]] >= t->split[nd]);
    *a = t->ord[t->nd[nd][0]];
    *bd = km_dist_tab(v, nb->tab, nb->kp, *a, b);
    return nd;
}

/* The rest of bucket nd against the best so far (*a, *bd), one by one. */
static inline void km_bucket_scan(const km_nbrs *nb, uint32_t nd, const float *v, int b,
                                  uint32_t *a, float *bd)
{
    const km_kd *t = nb->kd;
    for (uint32_t u = t->nd[nd][0] + 1; u < t->nd[nd][1]; u++) {
        uint32_t q = t->ord[u];
        float d = km_dist_tab(v, nb->tab, nb->kp, q, b);
        if (d < *bd || (d == *bd && q < *a)) {
            *bd = d;
            *a = q;
        }
    }
}

/* The radius within which a's neighbours must be checked for a vector at
 * float distance bd from a: 2r with r >= ||x - c_a||, margins covering
 * the float sums' rounding (see km_nbrs.c). */
static inline double km_cert_radius(float bd)
{
    double r = sqrt((double)bd * (1 + 0x1p-16) + 0x1p-120);
    return 2 * r * (1 + 0x1p-16);
}

enum { KM_HOPS = 4 };

/* Certifies the guesses of n vectors (a guess >= k: the nearest centroid
 * of the tree's bucket holding the vector); a guess that fails moves to
 * its best neighbour, up to KM_HOPS times. The vectors it cannot certify
 * are listed in *rest (their positions) for the caller. */
static size_t km_guided_run_plain(const float *x, size_t n, const km_nbrs *nb, uint32_t *idx,
                                  float *dist, uint32_t *rest)
{
    const int b = nb->b;
    const uint32_t m = nb->m, k = nb->k, kp = nb->kp;
    const float *tab = nb->tab;
    size_t nrest = 0;
    for (size_t i = 0; i < n; i++) {
        const float *v = x + i * (size_t)b;
        uint32_t a = idx[i];
        float bd;
        if (a >= k) {
            /* the bucket's nearest */
            uint32_t nd = km_bucket_first(nb, v, b, &a, &bd);
            km_bucket_scan(nb, nd, v, b, &a, &bd);
        } else {
            bd = km_dist_tab(v, tab, kp, a, b);
        }
        int done = 0;
        for (int hop = 0; hop <= KM_HOPS && isfinite(bd); hop++) {
            double R = km_cert_radius(bd);
            const uint16_t *id = nb->id + (size_t)a * m;
            const float *e = nb->e + (size_t)a * m;
            if (R < (double)nb->reach[a]) {
                /* certified: the best of a and its neighbours within R
                 * (a neighbour is kept when in doubt) */
                float Rf = (float)(R * (1 + 0x1p-20));
                uint32_t bk = a;
                for (uint32_t u = 0; u < m && e[u] <= Rf; u++) {
                    uint32_t q = id[u];
                    float d = km_dist_tab(v, tab, kp, q, b);
                    if (d < bd || (d == bd && q < bk)) {
                        bd = d;
                        bk = q;
                    }
                }
                idx[i] = bk;
                if (dist)
                    dist[i] = bd;
                done = 1;
                break;
            }
            /* not certified: hop to the best of a's neighbours */
            uint32_t bk = a;
            float b2 = bd;
            for (uint32_t u = 0; u < m; u++) {
                uint32_t q = id[u];
                float d = km_dist_tab(v, tab, kp, q, b);
                if (d < b2 || (d == b2 && q < bk)) {
                    b2 = d;
                    bk = q;
                }
            }
            if (bk == a)
                break;
            a = bk;
            bd = b2;
        }
        if (!done)
            rest[nrest++] = (uint32_t)i;
    }
    return nrest;
}

#ifdef KM_HAVE_VECTORS
/* The same, eight neighbours at a time from the padded copy of the lists
 * (nb->nid, nb->nc). Where the scalar loop looks at the neighbours u with
 * e[u] <= Rf (a prefix: e is sorted), this looks at every block of 8 that
 * holds one of them, so at a superset of them made of real centroids
 * (padding repeats one); a hop looks at all blocks, like the scalar loop
 * at all m. Each lane computes the reference's sum (the same operations
 * in the same order; (c - x)^2 is bitwise (x - c)^2) and keeps the
 * smallest (distance, index) pair, and the lanes merge the same way. The
 * smallest pair over a set of centroids that holds the nearest one is the
 * nearest one's, so the answers are the scalar loop's bit for bit. */
KM_INLINE void km_nbr_best(const km_v8f *xs, const int B, const float *nc, const int32_t *nid,
                           uint32_t nblk, float *bd, uint32_t *bk)
{
    const km_v8f zero = {0};
    const km_v8i zi = {0};
    km_v8f best = zero + *bd;
    km_v8i bi = zi + (int32_t)*bk;
    for (uint32_t t = 0; t < nblk; t++) {
        km_v8f cj, tt, d;
        km_v8i id;
        const float *c = nc + (size_t)t * (size_t)B * 8;
        memcpy(&cj, c, sizeof cj);
        tt = cj - xs[0];
        d = tt * tt;
        KM_UNROLL
        for (int j = 1; j < B; j++) {
            memcpy(&cj, c + j * 8, sizeof cj);
            tt = cj - xs[j];
            d = d + tt * tt;
        }
        memcpy(&id, nid + (size_t)t * 8, sizeof id);
        km_v8i mk = (d < best) | ((d == best) & (id < bi));
        best = (km_v8f)(((km_v8i)best & ~mk) | ((km_v8i)d & mk));
        bi = (bi & ~mk) | (id & mk);
    }
    float m = km_hmin(&best);
    km_v8i at = best == (zero + m);
    km_v8i cand = (bi & at) | ((zi + INT32_MAX) & ~at);
    *bd = m;
    *bk = (uint32_t)km_hmin_i(&cand);
}

enum { KM_PF = 6 }; /* vectors ahead whose lists are prefetched */

/* km_guided_run_plain's steps with the vector check: the same guesses,
 * hops and certificates, so the same answers and the same vectors left
 * for the caller. */
KM_INLINE size_t km_vguided_body(const float *x, size_t n, const int B, const km_nbrs *nb,
                                 uint32_t *idx, float *dist, uint32_t *rest)
{
    const uint32_t m8 = nb->m8, nb8 = m8 / 8, k = nb->k, kp = nb->kp;
    const float *tab = nb->tab;
    const km_kd *t = nb->kd;
    const km_v8f zero = {0};
    size_t nrest = 0;
    for (size_t i = 0; i < n; i++) {
        const float *v = x + i * (size_t)B;
        km_v8f xs[KM_MAX_BLOCK];
        KM_UNROLL
        for (int j = 0; j < B; j++)
            xs[j] = zero + v[j];
        if (i + KM_PF < n && idx[i + KM_PF] < k) {
            /* the lists a few vectors ahead (their first blocks) */
            uint32_t ap = idx[i + KM_PF];
            __builtin_prefetch(nb->nc + (size_t)ap * m8 * (size_t)B);
            __builtin_prefetch(nb->nc + (size_t)ap * m8 * (size_t)B + 16);
            __builtin_prefetch(nb->e8 + (size_t)ap * nb8);
        }
        uint32_t a = idx[i];
        float bd;
        if (a >= k) {
            /* the bucket's nearest (as the scalar loop) */
            uint32_t nd = km_bucket_first(nb, v, B, &a, &bd);
            if (t->lb && t->lb[nd] != UINT32_MAX) {
                /* the bucket's block: the same smallest pair */
                uint32_t lb = t->lb[nd];
                km_nbr_best(xs, B, t->lbc + (size_t)lb * (size_t)B * 8, t->lbid + (size_t)lb * 8,
                            1, &bd, &a);
            } else {
                km_bucket_scan(nb, nd, v, B, &a, &bd);
            }
        } else {
            bd = km_dist_tab(v, tab, kp, a, B);
        }
        int done = 0;
        for (int hop = 0; hop <= KM_HOPS && isfinite(bd); hop++) {
            double R = km_cert_radius(bd);
            const float *nc = nb->nc + (size_t)a * m8 * (size_t)B;
            const int32_t *nid = nb->nid + (size_t)a * m8;
            uint32_t bk = a;
            if (R < (double)nb->reach[a]) {
                /* certified: the blocks holding the neighbours within R */
                const float *e8 = nb->e8 + (size_t)a * nb8;
                float Rf = (float)(R * (1 + 0x1p-20));
                uint32_t nblk = 0;
                for (uint32_t u = 0; u < nb8; u++)
                    nblk += e8[u] <= Rf;
                km_nbr_best(xs, B, nc, nid, nblk, &bd, &bk);
                idx[i] = bk;
                if (dist)
                    dist[i] = bd;
                done = 1;
                break;
            }
            /* not certified: hop to the best of a's neighbours */
            km_nbr_best(xs, B, nc, nid, m8 / 8, &bd, &bk);
            if (bk == a)
                break;
            a = bk;
        }
        if (!done)
            rest[nrest++] = (uint32_t)i;
    }
    return nrest;
}

#define KM_VGCASE(B, X)                                                       \
    case B:                                                                   \
        return km_vguided_body(x, n, B, nb, idx, dist, rest);

#define KM_DEFINE_VGUIDED(NAME, ATTR)                                         \
    ATTR static size_t NAME(const float *x, size_t n, const km_nbrs *nb,      \
                            uint32_t *idx, float *dist, uint32_t *rest)       \
    {                                                                         \
        switch (nb->b) {                                                      \
            KM_B16(KM_VGCASE, )                                               \
        default:                                                              \
            return km_guided_run_plain(x, n, nb, idx, dist, rest);            \
        }                                                                     \
    }

KM_DEFINE_VGUIDED(km_vguided_vec, )
#ifdef KM_HAVE_AVX2
KM_DEFINE_VGUIDED(km_vguided_avx2, __attribute__((target("avx2"))))
#endif
#endif /* KM_HAVE_VECTORS */

/* Test hook: 0 forces the scalar certification loop. */
int km_guided_vector = 1;

/* km_guided_run_plain, or its vector version where there is one. */
static size_t km_guided_run(const float *x, size_t n, const km_nbrs *nb, uint32_t *idx,
                            float *dist, uint32_t *rest)
{
#ifdef KM_HAVE_VECTORS
    if (nb->nc && km_guided_vector) {
#ifdef KM_HAVE_AVX2
        if (__builtin_cpu_supports("avx2"))
            return km_vguided_avx2(x, n, nb, idx, dist, rest);
#endif
        return km_vguided_vec(x, n, nb, idx, dist, rest);
    }
#endif
    return km_guided_run_plain(x, n, nb, idx, dist, rest);
}

typedef struct km_guided_job {
    const float *x;
    size_t n;
    const km_codebook *cb;
    const km_nbrs *nb;
    uint32_t *idx;
    float *dist;
    atomic_size_t rest;
} km_guided_job;

/* km_assign_guided on one thread for n <= KM_CHUNK vectors (km_private.h). */
size_t km_guided_range(const float *x, size_t n, const km_codebook *cb, const km_nbrs *nb,
                       uint32_t *idx, float *dist)
{
    const int b = cb->b;
    uint32_t rest[KM_CHUNK];
    size_t nr = km_guided_run(x, n, nb, idx, dist, rest);
    /* the rest: gathered, searched together, scattered back */
    float buf[64 * KM_MAX_BLOCK], bd[64];
    uint32_t bi[64];
    for (size_t r0 = 0; r0 < nr; r0 += 64) {
        size_t cnt = nr - r0 < 64 ? nr - r0 : 64;
        for (size_t u = 0; u < cnt; u++)
            memcpy(buf + u * (size_t)b, x + rest[r0 + u] * (size_t)b, (size_t)b * sizeof *buf);
        km_assign_fast(buf, cnt, cb, bi, bd);
        for (size_t u = 0; u < cnt; u++) {
            idx[rest[r0 + u]] = bi[u];
            if (dist)
                dist[rest[r0 + u]] = bd[u];
        }
    }
    return nr;
}

static void km_guided_chunk(void *arg, uint64_t c, uint64_t i0, uint64_t i1)
{
    km_guided_job *j = arg;
    const int b = j->cb->b;
    (void)c;
    size_t nr = km_guided_range(j->x + i0 * (size_t)b, i1 - i0, j->cb, j->nb, j->idx + i0,
                                j->dist ? j->dist + i0 : NULL);
    atomic_fetch_add(&j->rest, nr);
}

size_t km_assign_guided(const float *x, size_t n, const km_codebook *cb, const km_nbrs *nb,
                        uint32_t *idx, float *dist, hvq_ctx *ctx)
{
    km_guided_job j = {.x = x, .n = n, .cb = cb, .nb = nb, .idx = idx, .dist = dist};
    atomic_init(&j.rest, 0);
    hvq_host_parallel_for(ctx, n, KM_CHUNK, km_guided_chunk, &j);
    return atomic_load(&j.rest);
}
