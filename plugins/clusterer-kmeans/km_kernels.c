/* k-means core: nearest-centroid assignment, the scalar reference, the
 * brute-force and index-search kernels (portable, vector, AVX2) and the
 * parallel assignment (see km_private.h). */
#include "km_private.h"

/* ------------------------------------------------------------------------
 * Assignment: the reference
 * ---------------------------------------------------------------------- */

/* The reference's loops over k centroids c, row-major (soa = 0) or in
 * the codebook's blocks of 8 (soa = 1). */
static void km_nearest_plain(const float *x, size_t n, int b, const float *c, uint32_t k,
                             int soa, uint32_t *idx, float *dist)
{
    for (size_t i = 0; i < n; i++) {
        const float *v = x + i * (size_t)b;
        float best = INFINITY;
        uint32_t bk = 0;
        for (uint32_t q = 0; q < k; q++) {
            float d = soa ? km_dist_strided(v, c + (size_t)(q / 8) * (size_t)b * 8 + q % 8, 8, b)
                          : km_dist_strided(v, c + (size_t)q * b, 1, b);
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

void km_assign_ref(const float *x, size_t n, int b, const float *c, uint32_t k,
                   uint32_t *idx, float *dist)
{
    km_nearest_plain(x, n, b, c, k, 0, idx, dist);
}

/* ------------------------------------------------------------------------
 * Assignment: the fast kernels
 * ---------------------------------------------------------------------- */


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


/* The index search for n vectors (see "The exact index"): the cell, then
 * its blocks in order until one's bound exceeds the best distance; on a
 * lane, a candidate replaces the kept one when its distance is smaller, or
 * equal with a lower index (lists are not in index order). A vector
 * outside the index's box, or whose best distance is not finite, goes to
 * brute force. */
enum { KM_BATCH = 16 }; /* vectors whose leaves are found before any is searched */

/* The leaves of the m <= KM_BATCH vectors xb: eight descents side by
 * side (a short batch repeats its last vector), in registers, then each
 * leaf's list as blocks [t0, t1) with its lim (none for a vector outside
 * the index's box), and prefetches of the lists. Independent short chains
 * of loads the processor overlaps. */
KM_INLINE void km_gleaves(const float *xb, size_t m, const int B, const km_grid *g,
                          uint32_t *t0, uint32_t *t1, float *lim)
{
    const km_gnode *node = g->all.node;
    const km_gleaf *lf = g->all.lf;
    for (size_t p0 = 0; p0 < m; p0 += 8) {
        const float *vp[8];
        uint32_t nq[8];
        for (int l = 0; l < 8; l++)
            vp[l] = xb + (p0 + (size_t)l < m ? p0 + (size_t)l : m - 1) * (size_t)B;
        for (int l = 0; l < 8; l++)
            nq[l] = 0;
        for (uint32_t st = 0; st < g->steps; st++) {
            KM_UNROLL
            for (int l = 0; l < 8; l++)
                nq[l] = km_grid_step(node, nq[l], vp[l]);
        }
        for (int l = 0; l < 8 && p0 + (size_t)l < m; l++) {
            size_t p = p0 + (size_t)l;
            const float *v = vp[l];
            int inside = 1;
            KM_UNROLL
            for (int j = 0; j < B; j++)
                inside &= v[j] >= g->lo[j] && v[j] <= g->hi[j];
            if (__builtin_expect(inside, 1)) {
                uint32_t leaf = km_grid_finish(node, nq[l], v);
                t0[p] = lf[leaf].first;
                t1[p] = t0[p] + lf[leaf].count;
                lim[p] = lf[leaf].lim;
                __builtin_prefetch(g->all.id + (size_t)t0[p] * 8);
                __builtin_prefetch(g->all.mn + t0[p]);
            } else {
                t0[p] = t1[p] = 0;
                lim[p] = INFINITY;
            }
        }
    }
}

/* The nearest centroid of v among the blocks [t, te) of the index's
 * lists, to *bk and *bd. */
KM_INLINE void km_gsearch(const float *v, const int B, const km_grid *g, uint32_t t,
                          uint32_t te, uint32_t *bk, float *bd)
{
    const km_v8f inf = {INFINITY, INFINITY, INFINITY, INFINITY,
                        INFINITY, INFINITY, INFINITY, INFINITY};
    const km_v8f zero = {0};
    const km_v8i none = zero > zero, maxi = none + INT32_MAX;
    const float *bmn = g->all.mn, *tab = g->tab;
    const uint16_t *bid = g->all.id;
    const size_t k = g->k;
    km_v8f xs[KM_MAX_BLOCK];
    KM_UNROLL
    for (int j = 0; j < B; j++)
        xs[j] = zero + v[j];
    km_v8f best = inf;
    km_v8i bi = maxi;
    float bs = INFINITY;
    for (; t < te && !(bmn[t] > bs); t++) {
        /* (vectors built in registers: lane by lane stores reloaded
         * whole would stall the loads) */
        const uint16_t *ids = bid + (size_t)t * 8;
#if defined(__clang__) || __GNUC__ >= 9
        km_v8u16 id16;
        memcpy(&id16, ids, sizeof id16);
        const km_v8i id = __builtin_convertvector(id16, km_v8i);
#else
        const km_v8i id = {ids[0], ids[1], ids[2], ids[3], ids[4], ids[5], ids[6], ids[7]};
#endif
        const uint32_t q0 = ids[0], q1 = ids[1], q2 = ids[2], q3 = ids[3];
        const uint32_t q4 = ids[4], q5 = ids[5], q6 = ids[6], q7 = ids[7];
        km_v8f cj = {tab[q0], tab[q1], tab[q2], tab[q3], tab[q4], tab[q5], tab[q6], tab[q7]};
        km_v8f tt = cj - xs[0], d = tt * tt;
        KM_UNROLL
        for (int j = 1; j < B; j++) {
            const float *tj = tab + (size_t)j * k;
            cj = (km_v8f){tj[q0], tj[q1], tj[q2], tj[q3], tj[q4], tj[q5], tj[q6], tj[q7]};
            tt = cj - xs[j];
            d = d + tt * tt;
        }
        km_v8i mk = (d < best) | ((d == best) & (id < bi));
        best = (km_v8f)(((km_v8i)best & ~mk) | ((km_v8i)d & mk));
        bi = (bi & ~mk) | (id & mk);
        if (t + 1 < te)
            bs = km_hmin(&best);
    }
    *bd = km_hmin(&best);
    km_v8i at = best == (zero + *bd);
    km_v8i cand = (bi & at) | (maxi & ~at);
    *bk = (uint32_t)km_hmin_i(&cand);
}

KM_INLINE void km_gbody(const float *x, size_t n, const int B, const km_codebook *cb,
                        uint32_t *idx, float *dist, km_kernel_fn brute)
{
    const km_grid *g = cb->grid;
    for (size_t i0 = 0; i0 < n; i0 += KM_BATCH) {
        const size_t m = n - i0 < KM_BATCH ? n - i0 : KM_BATCH;
        const float *xb = x + i0 * (size_t)B;
        uint32_t t0[KM_BATCH], t1[KM_BATCH];
        float lim[KM_BATCH];
        km_gleaves(xb, m, B, g, t0, t1, lim);
        for (size_t p = 0; p < m; p++) {
            const float *v = xb + p * (size_t)B;
            uint32_t bk;
            float bd;
            km_gsearch(v, B, g, t0[p], t1[p], &bk, &bd);
            if (__builtin_expect(!(bd < lim[p]), 0))
                brute(v, 1, cb, &bk, &bd);
            idx[i0 + p] = bk;
            if (dist)
                dist[i0 + p] = bd;
        }
    }
}

#define KM_CASE(B, X)                                                         \
    case B:                                                                   \
        km_body(x, n, B, cb->soa, cb->nblk, idx, dist);                       \
        break;

#define KM_DEFINE_KERNEL(NAME, ATTR)                                          \
    ATTR static void NAME(const float *x, size_t n, const km_codebook *cb,    \
                          uint32_t *idx, float *dist)                         \
    {                                                                         \
        switch (cb->b) {                                                      \
            KM_B16(KM_CASE, )                                                 \
        default:                                                              \
            break;                                                            \
        }                                                                     \
    }

#define KM_GCASE(B, BRUTE)                                                    \
    case B:                                                                   \
        km_gbody(x, n, B, cb, idx, dist, BRUTE);                              \
        break;

#define KM_DEFINE_GKERNEL(NAME, ATTR, BRUTE)                                  \
    ATTR static void NAME(const float *x, size_t n, const km_codebook *cb,    \
                          uint32_t *idx, float *dist)                         \
    {                                                                         \
        switch (cb->b) {                                                      \
            KM_B8(KM_GCASE, BRUTE)                                            \
        default:                                                              \
            BRUTE(x, n, cb, idx, dist);                                       \
            break;                                                            \
        }                                                                     \
    }

KM_DEFINE_KERNEL(km_kernel_vec, )
KM_DEFINE_GKERNEL(km_gkernel_vec, , km_kernel_vec)
#ifdef KM_HAVE_AVX2
KM_DEFINE_KERNEL(km_kernel_avx2, __attribute__((target("avx2"))))
KM_DEFINE_GKERNEL(km_gkernel_avx2, __attribute__((target("avx2"))), km_kernel_avx2)
#endif

#endif /* KM_HAVE_VECTORS */

/* The portable kernel (always available, and the only one without vector
 * extensions): the reference's loops, reading the blocked layout. */
static void km_kernel_plain(const float *x, size_t n, const km_codebook *cb, uint32_t *idx,
                            float *dist)
{
    km_nearest_plain(x, n, cb->b, cb->soa, cb->k, 1, idx, dist);
}

/* The portable index search: km_gbody's steps, one candidate at a time. */
static void km_gkernel_plain(const float *x, size_t n, const km_codebook *cb, uint32_t *idx,
                             float *dist)
{
    const km_grid *g = cb->grid;
    const int b = cb->b;
    for (size_t i = 0; i < n; i++) {
        const float *v = x + i * (size_t)b;
        int inside = 1;
        for (int j = 0; j < b; j++)
            inside &= v[j] >= g->lo[j] && v[j] <= g->hi[j];
        float bd = INFINITY;
        uint32_t bk = UINT32_MAX;
        uint32_t t0 = 0, t1 = 0;
        float lim = INFINITY;
        if (inside) {
            uint32_t leaf = km_grid_finish(g->all.node, 0, v);
            t0 = g->all.lf[leaf].first;
            t1 = t0 + g->all.lf[leaf].count;
            lim = g->all.lf[leaf].lim;
        }
        for (uint32_t t = t0; t < t1; t++) {
                if (g->all.mn[t] > bd)
                    break;
                for (int l = 0; l < 8; l++) {
                    uint32_t q = g->all.id[(size_t)t * 8 + l];
                    float d = km_dist_strided(v, g->tab + q, g->k, b);
                    if (d < bd || (d == bd && q < bk)) {
                        bd = d;
                        bk = q;
                    }
                }
            }
        if (!(bd < lim))
            km_kernel_plain(v, 1, cb, &bk, &bd);
        idx[i] = bk;
        if (dist)
            dist[i] = bd;
    }
}

typedef struct km_kernel_entry {
    const char *name;
    km_kernel_fn brute, indexed;
} km_kernel_entry;

static int km_kernels(km_kernel_entry *out)
{
    int n = 0;
    out[n++] = (km_kernel_entry){"plain", km_kernel_plain, km_gkernel_plain};
#ifdef KM_HAVE_VECTORS
    out[n++] = (km_kernel_entry){"vector", km_kernel_vec, km_gkernel_vec};
#endif
#ifdef KM_HAVE_AVX2
    if (__builtin_cpu_supports("avx2"))
        out[n++] = (km_kernel_entry){"avx2", km_kernel_avx2, km_gkernel_avx2};
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

static void km_assign_with(int kernel, int indexed, const float *x, size_t n,
                           const km_codebook *cb, uint32_t *idx, float *dist)
{
    km_kernel_entry k[4];
    int nk = km_kernels(k);
    if (kernel < 0 || kernel >= nk)
        kernel = nk - 1;
    if (indexed && cb->grid && cb->grid->valid)
        k[kernel].indexed(x, n, cb, idx, dist);
    else
        k[kernel].brute(x, n, cb, idx, dist);
}

void km_assign_kernel(int kernel, const float *x, size_t n, const km_codebook *cb,
                      uint32_t *idx, float *dist)
{
    km_assign_with(kernel, 0, x, n, cb, idx, dist);
}

void km_assign_kernel_indexed(int kernel, const float *x, size_t n, const km_codebook *cb,
                              uint32_t *idx, float *dist)
{
    km_assign_with(kernel, 1, x, n, cb, idx, dist);
}

void km_assign_fast(const float *x, size_t n, const km_codebook *cb, uint32_t *idx, float *dist)
{
    km_assign_with(-1, 1, x, n, cb, idx, dist);
}

/* ------------------------------------------------------------------------
 * Threaded assignment
 * ---------------------------------------------------------------------- */


typedef struct km_assign_job {
    const float *x;
    size_t n;
    const km_codebook *cb;
    uint32_t *idx;
    float *dist;
} km_assign_job;

static void km_assign_chunk(void *arg, uint64_t c, uint64_t i0, uint64_t i1)
{
    const km_assign_job *j = arg;
    (void)c;
    km_assign_fast(j->x + i0 * (size_t)j->cb->b, i1 - i0, j->cb, j->idx + i0,
                   j->dist ? j->dist + i0 : NULL);
}

int km_assign_parallel(const float *x, size_t n, const km_codebook *cb, uint32_t *idx,
                       float *dist, hvq_ctx *ctx)
{
    km_assign_job j = {x, n, cb, idx, dist};
    hvq_host_parallel_for(ctx, n, KM_CHUNK, km_assign_chunk, &j);
    return 0;
}
