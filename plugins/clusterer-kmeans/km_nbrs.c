/* k-means core: the centroids' neighbour lists of guided assignment and
 * the k-d tree they are built with (see km_guided.c). */
#include "km_private.h"

/* ------------------------------------------------------------------------
 * Guided assignment: a guess certified by the centroids' neighbours
 *
 * For a vector x and a guess a (in Lloyd's iterations: x's centroid in the
 * previous one), every centroid c with ||c - c_a|| > 2 ||x - c_a|| is
 * farther from x than c_a (||x - c|| >= ||c - c_a|| - ||x - c_a||). So
 * with each centroid's m nearest other centroids at hand (sorted by
 * distance), x needs only the reference's distances to c_a and to the
 * neighbours of a within 2 ||x - c_a||, provided the m-th neighbour is
 * farther than that; otherwise x goes to the index or to brute force. The
 * distances that decide are the reference's own float sums; the reasoning
 * above is on true distances, and the margins used cover the sums'
 * rounding (relative 2^-19 for b <= 16, plus underflow) several times
 * over: r = sqrt(d * (1 + 2^-16) + 2^-120) >= ||x - c_a||, and a centroid
 * beyond 2r (1 + 2^-16) has a float distance strictly above x's to c_a,
 * so it can neither win nor tie. Neighbour distances are computed in
 * double and compared with slack the other way (a neighbour kept when in
 * doubt, the list's reach rounded down).
 * ---------------------------------------------------------------------- */

/* Neighbours kept per centroid, by block size. */
static uint32_t km_nbr_count(int b)
{
    return b <= 2 ? 16 : b <= 4 ? 48 : 64;
}

static void km_kd_free(km_kd *t);

/* Whether guided search is used: where it pays (AUTO: block sizes up to
 * 4, lists much shorter than the codebook; beyond that brute force is
 * cheaper), always with INDEX (tests), never with NONE. */
int km_guided_ok(int b, uint32_t k, int accel)
{
    if (accel == KM_ACCEL_INDEX)
        return k > 1 && b <= KM_MAX_BLOCK;
    return accel == KM_ACCEL_AUTO && b <= 4 && k > 4 * km_nbr_count(b);
}

/* Frees the vector kernels' copy of the lists (the scalar loop then). */
static void km_nbrs_vec_free(km_nbrs *nb)
{
    KM_FREE_NULL(nb->nid);
    KM_FREE_NULL(nb->nc);
    KM_FREE_NULL(nb->e8);
}

void km_nbrs_free(km_nbrs *nb)
{
    km_kd_free(nb->kd);
    free(nb->id);
    free(nb->e);
    free(nb->reach);
    free(nb->tab);
    free(nb->tab4);
    km_nbrs_vec_free(nb);
    memset(nb, 0, sizeof *nb);
}


static int km_kd_node(km_kd *t, uint32_t s, uint32_t e)
{
    if (t->n == t->cap) {
        size_t cap = km_grow_cap(t->cap, t->n + 1, 256);
        if (km_realloc(&t->nd, cap * sizeof *t->nd) ||
            km_realloc(&t->bb, cap * 2 * (size_t)t->b * sizeof *t->bb) ||
            km_realloc(&t->split, cap * sizeof *t->split) ||
            km_realloc(&t->dim, cap * sizeof *t->dim))
            return -1;
        t->cap = cap;
    }
    size_t i = t->n++;
    t->nd[i][0] = s;
    t->nd[i][1] = e;
    t->nd[i][2] = 0;
    t->split[i] = 0.0f;
    t->dim[i] = 0;
    double *bb = t->bb + i * 2 * (size_t)t->b;
    for (int j = 0; j < t->b; j++) {
        bb[j] = INFINITY;
        bb[t->b + j] = -INFINITY;
    }
    for (uint32_t u = s; u < e; u++)
        for (int j = 0; j < t->b; j++) {
            double v = t->c[(size_t)t->ord[u] * t->b + j];
            bb[j] = v < bb[j] ? v : bb[j];
            bb[t->b + j] = v > bb[t->b + j] ? v : bb[t->b + j];
        }
    return 0;
}

/* Frees the tree's blocks of buckets (km_kd.lb, lbid, lbc). */
static void km_kd_blocks_free(km_kd *t)
{
    KM_FREE_NULL(t->lb);
    KM_FREE_NULL(t->lbid);
    KM_FREE_NULL(t->lbc);
}

/* The buckets as blocks of 8, for the vector kernels (none when out of
 * memory: the scalar loop). */
static void km_kd_blocks(km_kd *t)
{
    const int b = t->b;
    km_kd_blocks_free(t);
    t->lb = malloc(t->n * sizeof *t->lb);
    t->lbid = aligned_alloc(32, t->n * 8 * sizeof *t->lbid);
    t->lbc = aligned_alloc(32, t->n * 8 * (size_t)b * sizeof *t->lbc);
    if (!t->lb || !t->lbid || !t->lbc) {
        km_kd_blocks_free(t);
        return;
    }
    uint32_t nlb = 0;
    for (size_t i = 0; i < t->n; i++) {
        uint32_t s = t->nd[i][0], e = t->nd[i][1];
        t->lb[i] = UINT32_MAX;
        if (t->nd[i][2] || e <= s || e - s > 8)
            continue;
        t->lb[i] = nlb;
        for (uint32_t l = 0; l < 8; l++) {
            uint32_t q = t->ord[s + l < e ? s + l : s];
            t->lbid[(size_t)nlb * 8 + l] = (int32_t)q;
            for (int j = 0; j < b; j++)
                t->lbc[((size_t)nlb * b + (size_t)j) * 8 + l] = t->c[(size_t)q * b + j];
        }
        nlb++;
    }
}

/* Builds the tree over the k centroids (breadth first), reusing t's
 * memory. */
static int km_kd_make(km_kd *t, const float *c, uint32_t k, int b)
{
    t->n = 0;
    t->c = c;
    t->b = b;
    uint32_t *ord = realloc(t->ord, (size_t)k * sizeof *t->ord);
    if (!ord)
        return -1;
    t->ord = ord;
    for (uint32_t q = 0; q < k; q++)
        t->ord[q] = q;
    if (km_kd_node(t, 0, k))
        return -1;
    for (size_t i = 0; i < t->n; i++) {
        uint32_t s = t->nd[i][0], e = t->nd[i][1];
        if (e - s <= 8)
            continue;
        const double *bb = t->bb + i * 2 * (size_t)b;
        int dim = 0;
        for (int j = 1; j < b; j++)
            if (bb[b + j] - bb[j] > bb[b + dim] - bb[dim])
                dim = j;
        if (!(bb[b + dim] > bb[dim]))
            continue; /* all equal */
        /* the median */
        uint32_t m = e - s, want = m / 2;
        km_select_median(t->ord + s, m, want, c, b, dim);
        uint32_t kid = (uint32_t)t->n;
        if (km_kd_node(t, s, s + want) || km_kd_node(t, s + want, e))
            return -1;
        t->nd[i][2] = kid;
        t->dim[i] = (uint8_t)dim;
        t->split[i] = c[(size_t)t->ord[s + want] * b + dim];
    }
    km_kd_blocks(t);
    return 0;
}

static void km_kd_free(km_kd *t)
{
    if (!t)
        return;
    free(t->ord);
    free(t->nd);
    free(t->bb);
    free(t->split);
    free(t->dim);
    km_kd_blocks_free(t);
    free(t);
}

typedef struct km_nbr_job {
    const km_kd *t;
    km_nbrs *nb;
    int seeded; /* nb holds lists for centroids close to these */
    atomic_int failed;
} km_nbr_job;

enum { KM_NBR_CHUNK = 64 };

/* Larger pair first: (distance, index), for a deterministic list. */
static inline int km_pair_gt(double d1, uint32_t q1, double d2, uint32_t q2)
{
    return d1 > d2 || (d1 == d2 && q1 > q2);
}

/* Sifts (d, p) down from the root of the max-heap of n pairs. */
static inline void km_heap_down(double *hd, uint32_t *hq, size_t n, double d, uint32_t p)
{
    size_t h = 0;
    for (;;) {
        size_t c2 = 2 * h + 1;
        if (c2 >= n)
            break;
        if (c2 + 1 < n && km_pair_gt(hd[c2 + 1], hq[c2 + 1], hd[c2], hq[c2]))
            c2++;
        if (!km_pair_gt(hd[c2], hq[c2], d, p))
            break;
        hd[h] = hd[c2];
        hq[h] = hq[c2];
        h = c2;
    }
    hd[h] = d;
    hq[h] = p;
}

/* Puts (d, p) into the max-heap of the m smallest pairs (hn of them). */
static inline void km_heap_put(double *hd, uint32_t *hq, uint32_t *hn, uint32_t m, double d,
                               uint32_t p)
{
    if (*hn < m) {
        size_t h = (*hn)++;
        while (h && km_pair_gt(d, p, hd[(h - 1) / 2], hq[(h - 1) / 2])) {
            hd[h] = hd[(h - 1) / 2];
            hq[h] = hq[(h - 1) / 2];
            h = (h - 1) / 2;
        }
        hd[h] = d;
        hq[h] = p;
    } else if (km_pair_gt(hd[0], hq[0], d, p)) {
        km_heap_down(hd, hq, m, d, p);
    }
}

/* The distance of two centroids in double, as the lists rank them. */
static inline double km_dist_d(const float *cp, const float *cq, int b)
{
    double d = 0;
    for (int j = 0; j < b; j++) {
        double df = (double)cp[j] - (double)cq[j];
        d += df * df;
    }
    return d;
}

/* The squared distance in double from cq to the box bb (lo then hi). */
static inline double km_gap_d(const float *cq, const double *bb, int b)
{
    double g2 = 0;
    for (int j = 0; j < b; j++) {
        double g = cq[j] < bb[j] ? bb[j] - cq[j] : cq[j] > bb[b + j] ? cq[j] - bb[b + j] : 0;
        g2 += g * g;
    }
    return g2;
}

/* Largest copy of the lists for the vector kernels (km_nbrs.nc). */
#define KM_NC_MAX_BYTES ((size_t)128 << 20)

/* Up to this many centroids, a seeded neighbour search scans them all. */
#define KM_NBR_SCAN 8192

#ifdef KM_HAVE_VECTORS
/* The seeded scan: the centroids p != q (p < k) whose float distance to
 * cq (the reference's sum over tab4, b rows of kp4, +inf past k) is at
 * most lim, in increasing order, to out; returns how many. Four blocks of
 * 8 at a time, then a look at the lanes of a group that has any. */
KM_INLINE size_t km_scan_body(const float *tab4, uint32_t kp4, uint32_t k, uint32_t q,
                              const float *cq, const int B, float lim, uint32_t *out)
{
    const km_v8f zero = {0}, lv = zero + lim;
    km_v8f xs[KM_MAX_BLOCK];
    KM_UNROLL
    for (int j = 0; j < B; j++)
        xs[j] = zero + cq[j];
    size_t cnt = 0;
    for (uint32_t p0 = 0; p0 < k; p0 += 32) {
        km_v8i in[4], any = zero > zero;
        KM_UNROLL
        for (int u = 0; u < 4; u++) {
            km_v8f cj, tt, d;
            memcpy(&cj, tab4 + p0 + 8 * (uint32_t)u, sizeof cj);
            tt = cj - xs[0];
            d = tt * tt;
            KM_UNROLL
            for (int j = 1; j < B; j++) {
                memcpy(&cj, tab4 + (size_t)j * kp4 + p0 + 8 * (uint32_t)u, sizeof cj);
                tt = cj - xs[j];
                d = d + tt * tt;
            }
            in[u] = d <= lv;
            any |= in[u];
        }
        uint64_t a2[4];
        memcpy(a2, &any, sizeof a2);
        if (!(a2[0] | a2[1] | a2[2] | a2[3]))
            continue;
        int32_t lanes[32];
        memcpy(lanes, in, sizeof lanes);
        for (uint32_t l = 0; l < 32; l++) {
            uint32_t p = p0 + l;
            if (lanes[l] && p != q && p < k)
                out[cnt++] = p;
        }
    }
    return cnt;
}

#define KM_SCASE(B, X)                                                        \
    case B:                                                                   \
        return km_scan_body(tab4, kp4, k, q, cq, B, lim, out);

#define KM_DEFINE_SCAN(NAME, ATTR)                                            \
    ATTR static size_t NAME(const float *tab4, uint32_t kp4, uint32_t k, uint32_t q, \
                            const float *cq, int b, float lim, uint32_t *out) \
    {                                                                         \
        switch (b) {                                                          \
            KM_B16(KM_SCASE, )                                                \
        default:                                                              \
            return 0;                                                         \
        }                                                                     \
    }

KM_DEFINE_SCAN(km_nbr_scan_vec, )
#ifdef KM_HAVE_AVX2
KM_DEFINE_SCAN(km_nbr_scan_avx2, __attribute__((target("avx2"))))
#endif

static size_t km_nbr_scan(const float *tab4, uint32_t kp4, uint32_t k, uint32_t q,
                          const float *cq, int b, float lim, uint32_t *out)
{
#ifdef KM_HAVE_AVX2
    if (__builtin_cpu_supports("avx2"))
        return km_nbr_scan_avx2(tab4, kp4, k, q, cq, b, lim, out);
#endif
    return km_nbr_scan_vec(tab4, kp4, k, q, cq, b, lim, out);
}
#endif /* KM_HAVE_VECTORS */

/* A worker's scratch for the lists of its chunk of centroids: the heap
 * of the m nearest pairs found so far (hn of them), the tree walk's stack,
 * and when seeded, seen[p] == q + 1 for the centroids p already offered
 * for centroid q and the seeded scan's candidates. */
typedef struct km_nbr_scratch {
    double *hd;
    uint32_t *hq, hn;
    uint32_t *stack, *seen, *cand;
} km_nbr_scratch;

#ifdef KM_HAVE_VECTORS
/* The seeded scan (block sizes 3 and up, codebooks up to KM_NBR_SCAN):
 * the previous neighbours of q bound the new m-th distance; a scan of
 * every centroid in float (its rounding covered by the slack) keeps the
 * few within that bound, ranked in double. 1 when it ran. */
static int km_nbr_scan_seeded(const km_nbr_job *job, km_nbr_scratch *s, uint32_t q)
{
    const km_kd *t = job->t;
    const km_nbrs *nb = job->nb;
    const int b = t->b;
    const uint32_t m = nb->m, k = nb->k;
    if (!s->seen || b < 3 || k > KM_NBR_SCAN)
        return 0;
    const float *cq = t->c + (size_t)q * b;
    const uint16_t *old = nb->id + (size_t)q * m;
    double T = 0;
    for (uint32_t u = 0; u < m; u++) {
        double d = km_dist_d(t->c + (size_t)old[u] * b, cq, b);
        T = d > T ? d : T;
    }
    float lim = (float)(T * (1 + 0x1p-14) + 0x1p-120);
    size_t ncand = km_nbr_scan(nb->tab4, nb->kp4, k, q, cq, b, lim, s->cand);
    for (size_t u = 0; u < ncand; u++) {
        uint32_t p = s->cand[u];
        km_heap_put(s->hd, s->hq, &s->hn, m, km_dist_d(t->c + (size_t)p * b, cq, b), p);
    }
    return 1;
}
#endif

/* The heap of q's nearest from the tree: when seeded, the previous list
 * first (the bound is tight from the start and the walk skips most of the
 * tree), then every bucket that may hold nearer ones, nearer child first. */
static void km_nbr_walk(const km_nbr_job *job, km_nbr_scratch *s, uint32_t q)
{
    const km_kd *t = job->t;
    const int b = t->b;
    const uint32_t m = job->nb->m;
    const float *cq = t->c + (size_t)q * b;
    uint32_t *seen = s->seen, sp = 0;
    if (seen) {
        const uint16_t *old = job->nb->id + (size_t)q * m;
        for (uint32_t u = 0; u < m; u++) {
            uint32_t p = old[u];
            if (p == q || seen[p] == q + 1)
                continue;
            seen[p] = q + 1;
            km_heap_put(s->hd, s->hq, &s->hn, m, km_dist_d(t->c + (size_t)p * b, cq, b), p);
        }
    }
    s->stack[sp++] = 0;
    while (sp) {
        uint32_t i = s->stack[--sp];
        if (s->hn == m && km_gap_d(cq, t->bb + (size_t)i * 2 * b, b) > s->hd[0] * (1 + 1e-9))
            continue;
        uint32_t kid = t->nd[i][2];
        if (kid) {
            /* nearer child last (popped first) */
            double g0 = km_gap_d(cq, t->bb + (size_t)kid * 2 * b, b);
            double g1 = km_gap_d(cq, t->bb + (size_t)(kid + 1) * 2 * b, b);
            s->stack[sp++] = g0 <= g1 ? kid + 1 : kid;
            s->stack[sp++] = g0 <= g1 ? kid : kid + 1;
            continue;
        }
        for (uint32_t u = t->nd[i][0]; u < t->nd[i][1]; u++) {
            uint32_t p = t->ord[u];
            if (p == q || (seen && seen[p] == q + 1))
                continue;
            km_heap_put(s->hd, s->hq, &s->hn, m, km_dist_d(t->c + (size_t)p * b, cq, b), p);
        }
    }
}

/* Stores q's list from the heap (sorted ascending here) in nb: numbers,
 * distances, the vector kernels' copy and the reach. */
static void km_nbr_store(const km_nbr_job *job, km_nbr_scratch *s, uint32_t q)
{
    const km_kd *t = job->t;
    km_nbrs *nb = job->nb;
    const int b = t->b;
    const uint32_t m = nb->m, k = nb->k, hn = s->hn;
    double *hd = s->hd;
    uint32_t *hq = s->hq;
    /* heap sort ascending: pop the largest to the end */
    for (uint32_t n2 = hn; n2 > 1; n2--) {
        double d = hd[n2 - 1];
        uint32_t p = hq[n2 - 1];
        hd[n2 - 1] = hd[0];
        hq[n2 - 1] = hq[0];
        km_heap_down(hd, hq, n2 - 1, d, p);
    }
    uint16_t *id = nb->id + (size_t)q * m;
    float *e = nb->e + (size_t)q * m;
    for (uint32_t u = 0; u < m; u++) {
        /* the stored distance may round either way: it only picks
         * which neighbours to check, with slack (a padding entry
         * repeats a real centroid: checking it changes nothing) */
        id[u] = (uint16_t)(u < hn ? hq[u] : hn ? hq[0] : q);
        e[u] = u < hn ? (float)sqrt(hd[u]) : INFINITY;
    }
    if (nb->nc) {
        /* the same list for the vector kernels, padded to m8 */
        const uint32_t m8 = nb->m8;
        int32_t *nid = nb->nid + (size_t)q * m8;
        float *nc = nb->nc + (size_t)q * m8 * (size_t)b;
        for (uint32_t u = 0; u < m; u += 8)
            nb->e8[(size_t)q * (m8 / 8) + u / 8] = e[u];
        for (uint32_t u = 0; u < m8; u++) {
            uint32_t p = id[u < m ? u : 0];
            nid[u] = (int32_t)p;
            for (int j = 0; j < b; j++)
                nc[((size_t)(u / 8) * b + (size_t)j) * 8 + u % 8] = t->c[(size_t)p * b + j];
        }
    }
    /* the list's reach: every centroid outside it is at least this
     * far (rounded down); unlimited when it holds them all */
    nb->reach[q] = hn < k - 1 ? (float)(sqrt(hd[hn - 1]) * (1 - 0x1p-20)) : INFINITY;
}

static void km_nbr_chunk(void *arg, uint64_t ci, uint64_t begin, uint64_t end)
{
    km_nbr_job *job = arg;
    const uint32_t m = job->nb->m, k = job->nb->k;
    (void)ci;
    km_nbr_scratch s = {
        .hd = malloc((size_t)m * sizeof *s.hd),
        .hq = malloc((size_t)m * sizeof *s.hq),
        .stack = malloc(job->t->n * sizeof *s.stack + 1),
        .seen = job->seeded ? calloc(k, sizeof *s.seen) : NULL,
        .cand = job->seeded ? malloc((size_t)k * sizeof *s.cand) : NULL,
    };
    if (!s.hd || !s.hq || !s.stack || (job->seeded && (!s.seen || !s.cand))) {
        atomic_store(&job->failed, 1);
    } else {
        for (uint32_t q = (uint32_t)begin; q < (uint32_t)end; q++) {
            s.hn = 0;
#ifdef KM_HAVE_VECTORS
            if (!km_nbr_scan_seeded(job, &s, q))
#endif
                km_nbr_walk(job, &s, q);
            km_nbr_store(job, &s, q);
        }
    }
    free(s.hd);
    free(s.hq);
    free(s.stack);
    free(s.seen);
    free(s.cand);
}

/* nb's memory for k centroids of b values with lists of m (nb freed
 * first): 0, or -1 when out of memory (nb then freed). */
static int km_nbrs_alloc(km_nbrs *nb, uint32_t k, uint32_t m, int b)
{
    km_nbrs_free(nb);
    nb->id = malloc((size_t)k * m * sizeof *nb->id);
    nb->e = malloc((size_t)k * m * sizeof *nb->e);
    nb->reach = malloc((size_t)k * sizeof *nb->reach);
    nb->kp = (k + 7) / 8 * 8;
    nb->kp4 = (k + 31) / 32 * 32;
    nb->tab = malloc((size_t)nb->kp * b * sizeof *nb->tab);
    nb->tab4 = malloc((size_t)nb->kp4 * b * sizeof *nb->tab4);
    if (!nb->id || !nb->e || !nb->reach || !nb->tab || !nb->tab4) {
        km_nbrs_free(nb);
        return -1;
    }
#ifdef KM_HAVE_VECTORS
    /* the vector kernels' copy, when it is not too large (without it,
     * the scalar loop) */
    nb->m8 = (m + 7) / 8 * 8;
    if ((size_t)k * nb->m8 * (size_t)(b + 1) * sizeof(float) <= KM_NC_MAX_BYTES) {
        nb->nid = aligned_alloc(32, (size_t)k * nb->m8 * sizeof *nb->nid);
        nb->nc = aligned_alloc(32, (size_t)k * nb->m8 * (size_t)b * sizeof *nb->nc);
        nb->e8 = malloc((size_t)k * (nb->m8 / 8) * sizeof *nb->e8);
        if (!nb->nid || !nb->nc || !nb->e8)
            km_nbrs_vec_free(nb);
    }
#endif
    nb->k = k;
    nb->m = m;
    nb->b = b;
    return 0;
}

/* km_private.h */
void km_tab_rows(float *tab, uint32_t kp, const float *c, uint32_t k, int b)
{
    for (int j = 0; j < b; j++)
        for (uint32_t q = 0; q < kp; q++)
            tab[(size_t)j * kp + q] = q < k ? c[(size_t)q * b + j] : INFINITY;
}

int km_nbrs_build(km_nbrs *nb, const float *c, uint32_t k, int b, hvq_ctx *ctx)
{
    uint32_t m = km_nbr_count(b);
    if (m > k - 1)
        m = k > 1 ? k - 1 : 1;
    int seeded = nb->k == k && nb->m == m && nb->b == b && k > 1;
    if (!seeded && km_nbrs_alloc(nb, k, m, b))
        return -1;
    km_tab_rows(nb->tab, nb->kp, c, k, b);
    km_tab_rows(nb->tab4, nb->kp4, c, k, b);
    if (k == 1) {
        nb->id[0] = 0;
        nb->e[0] = INFINITY;
        nb->reach[0] = INFINITY;
    }
    if (!nb->kd && !(nb->kd = calloc(1, sizeof *nb->kd)))
        return -1;
    km_nbr_job job = {.t = nb->kd, .nb = nb, .seeded = seeded};
    atomic_init(&job.failed, 0);
    if (km_kd_make(nb->kd, c, k, b))
        return -1;
    hvq_host_parallel_for(ctx, k, KM_NBR_CHUNK, km_nbr_chunk, &job);
    return atomic_load(&job.failed) ? -1 : 0;
}
