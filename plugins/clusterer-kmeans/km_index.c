/* k-means core: codebooks and the exact index over their centroids (see
 * "The exact index" below and km_private.h). */
#include "km_private.h"

/* ------------------------------------------------------------------------
 * Codebooks
 * ---------------------------------------------------------------------- */

static void km_grid_free(km_grid *g);

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

void km_codebook_free(km_codebook *cb)
{
    free(cb->soa);
    cb->soa = NULL;
    km_grid_free(cb->grid);
    cb->grid = NULL;
}

void km_bounds(const float *x, size_t n, int b, float *lo, float *hi)
{
    for (int j = 0; j < b; j++) {
        lo[j] = INFINITY;
        hi[j] = -INFINITY;
    }
    size_t i = 0;
    if (b >= 1 && 8 % b == 0 && n >= 8) {
        /* Eight running bounds over the flat array, lane l for value l % b
         * (SIMD): the same comparisons in another order, so the same
         * smallest and largest values (NaN never taken; only the sign of
         * a zero bound may differ, which nothing using the box can
         * tell: -0 and +0 compare and subtract alike). */
        float l8[8], h8[8];
        for (int l = 0; l < 8; l++) {
            l8[l] = INFINITY;
            h8[l] = -INFINITY;
        }
        const size_t e = n * (size_t)b / 8 * 8;
        for (size_t p = 0; p < e; p += 8)
            for (int l = 0; l < 8; l++) {
                float v = x[p + (size_t)l];
                l8[l] = v < l8[l] ? v : l8[l];
                h8[l] = v > h8[l] ? v : h8[l];
            }
        for (int l = 0; l < 8; l++) {
            int j = l % b;
            lo[j] = l8[l] < lo[j] ? l8[l] : lo[j];
            hi[j] = h8[l] > hi[j] ? h8[l] : hi[j];
        }
        i = e / (size_t)b;
    }
    for (; i < n; i++)
        for (int j = 0; j < b; j++) {
            float v = x[i * (size_t)b + (size_t)j];
            lo[j] = v < lo[j] ? v : lo[j];
            hi[j] = v > hi[j] ? v : hi[j];
        }
}


/* ------------------------------------------------------------------------
 * The exact index: a k-d partition of the query box, each leaf box with
 * the list of the only centroids that can be nearest to a point inside it.
 *
 * Boxes. The root is the box of the queries, [lo, hi]. A box holding
 * several centroids is cut across its widest side (among the coordinates
 * on which its centroids differ) at the median centroid, so boxes are
 * small where centroids are dense and not much longer than wide anywhere
 * (a grid of quantiles would make long thin cells where a dense coordinate
 * crosses a sparse one, as heavy tails do). A box whose list is still long
 * is then halved across its widest side while that shortens the lists. A
 * point goes to the half with x_j >= split or x_j < split, so it lies in
 * the closed box of the leaf it reaches.
 *
 * Bounds. For a box B and a centroid c, boxmin(B, c) and boxmax(B, c) are
 * the distance's sum evaluated like the reference's (the same float
 * operations in the same order) with |x_j - c_j| replaced by its smallest
 * and largest value over the box. IEEE rounding to nearest is monotone
 * (a <= b implies fl(a) <= fl(b)) and every step of the sum is a monotone
 * function of non-negative operands, so for every float point x in B the
 * reference's distance d(x, c) satisfies
 *     boxmin(B, c) <= d(x, c) <= boxmax(B, c)
 * bit for bit, with no margin needed. With U = the smallest boxmax over
 * some centroids, the nearest distance of any x in B is <= U, so every
 * centroid that is nearest or ties the nearest has boxmin <= U: a leaf's
 * list holds exactly the centroids with boxmin <= U, and the search over
 * it (smallest distance, then lowest index) gives the reference's answer.
 * The lists are built top down: the root's is every centroid, and a
 * child's is taken from its parent's (boxmin only grows and boxmax only
 * shrinks in a smaller box, so nothing outside the parent's list can
 * enter), with U the parent's or a smaller boxmax. A half box of a leaf
 * whose list is still long gets its list the same way. Where lists get
 * long anyway (block sizes 3 and up), a list keeps only the cap smallest
 * boxmins, and the leaf records lim, the largest kept: every centroid
 * with boxmin < lim is then in the list, so a vector whose best distance
 * in it is below lim has its answer, and one whose best is not goes to
 * brute force. Lists are ordered roughly by boxmin in blocks of 8, each
 * block carrying the smallest boxmin of itself and the blocks after it;
 * the search stops before a block whose bound is strictly greater than the
 * best distance found, which then can neither win nor tie.
 *
 * Layout, for speed: 8-byte nodes, lists of 16-bit centroid numbers, and
 * the centroids in b rows of k floats; about 40 bytes per centroid for
 * block size 2, so the index of 2048 centroids stays in the fast caches.
 * A search takes a fixed number of branch-free steps down the tree (a leaf
 * stays where it is; enough steps for 9 leaves in 10), then a loop for the
 * rare deeper leaves, eight vectors side by side.
 * ---------------------------------------------------------------------- */

/* Per block size: the list length above which a leaf box is halved, and
 * the longest list (0: no limit). And when AUTO uses the index. */
static const uint32_t km_leaf_max[KM_INDEX_MAX_BLOCK + 1] = {0, 8, 8, 16, UINT32_MAX,
                                                             UINT32_MAX, UINT32_MAX,
                                                             UINT32_MAX, UINT32_MAX};
static const uint32_t km_list_cap[KM_INDEX_MAX_BLOCK + 1] = {0, 0, 0, 64, 64, 64, 64, 64, 64};
enum { KM_AUTO_MAX_BLOCK = 2, KM_AUTO_MIN_K = 64, KM_SPLIT_DEPTH = 48, KM_HALVE_DEPTH = 24 };
/* The lists are built serially down to this depth of the partition, then
 * its subtrees (up to 2^depth) are built in parallel on the host's threads.
 * A constant, so the index built is the same for every thread count (and
 * the assignments are exact whatever the index). */
enum { KM_PLAN_DEPTH = 6 };
#define KM_INDEX_MAX_BYTES ((size_t)256 << 20)


/* A 32-byte aligned array of n bytes holding the first keep bytes of old
 * (freed); NULL when out of memory (old kept). */
static void *km_regrow(void *old, size_t keep, size_t n)
{
    void *p = aligned_alloc(32, (n + 31) / 32 * 32);
    if (p && keep)
        memcpy(p, old, keep);
    if (p)
        free(old);
    return p;
}

static void km_gbuf_free(km_gbuf *o)
{
    free(o->id);
    free(o->mn);
    free(o->node);
    free(o->lf);
    free(o->lv);
    memset(o, 0, sizeof *o);
}

static int km_gbuf_reserve(km_gbuf *o, size_t nb)
{
    if (nb <= o->cap)
        return 0;
    size_t cap = km_grow_cap(o->cap, nb, 64);
    const size_t ib = 8 * sizeof(uint16_t);
    uint16_t *id = km_regrow(o->id, o->nb * ib, cap * ib);
    if (id)
        o->id = id;
    float *mn = km_regrow(o->mn, o->nb * sizeof(float), cap * sizeof(float));
    if (mn)
        o->mn = mn;
    if (!id || !mn)
        return -1;
    o->cap = cap;
    return 0;
}

static int km_gbuf_nodes(km_gbuf *o, size_t nn)
{
    if (nn <= o->ncap)
        return 0;
    size_t cap = km_grow_cap(o->ncap, nn, 64);
    if (km_realloc(&o->node, cap * sizeof *o->node) || km_realloc(&o->lf, cap * sizeof *o->lf))
        return -1;
    o->ncap = cap;
    return 0;
}

static void km_grid_release(km_grid *g)
{
    free(g->ord);
    free(g->part);
    free(g->box);
    free(g->bb);
    free(g->task);
    free(g->tmd);
    free(g->tqs);
    g->ord = NULL;
    g->part = NULL;
    g->box = g->bb = NULL;
    g->task = NULL;
    g->tmd = NULL;
    g->tqs = NULL;
    g->npart = g->cappart = g->ntask = g->captask = g->tn = g->captn = 0;
    g->cv = NULL;
}

static void km_grid_free(km_grid *g)
{
    if (!g)
        return;
    km_grid_release(g);
    km_gbuf_free(&g->all);
    free(g->tab);
    for (size_t i = 0; i < g->nchunk; i++)
        km_gbuf_free(&g->chunk[i]);
    free(g->chunk);
    free(g);
}

void km_codebook_set(km_codebook *cb, const float *c)
{
    int b = cb->b;
    for (uint32_t q = 0; q < cb->k; q++)
        for (int j = 0; j < b; j++)
            cb->soa[((size_t)(q / 8) * (size_t)b + (size_t)j) * 8 + q % 8] = c[(size_t)q * b + j];
    if (cb->grid)
        cb->grid->valid = 0;
}

double km_codebook_index_load(const km_codebook *cb)
{
    const km_grid *g = cb->grid;
    if (!g || !g->valid || !g->nleaf)
        return 0;
    /* centroids checked per leaf, padding included */
    return 8.0 * (double)g->all.nb / (double)g->nleaf;
}


/* Lower and upper bound of the reference's distance from any point of the
 * box [blo, bhi] to c (see above). */
static inline float km_box_min(const float *c, const float *blo, const float *bhi, int b)
{
    float d = 0.0f;
    for (int j = 0; j < b; j++) {
        float s = c[j] < blo[j] ? blo[j] - c[j] : c[j] > bhi[j] ? c[j] - bhi[j] : 0.0f;
        d = d + s * s;
    }
    return d;
}

static inline float km_box_max(const float *c, const float *blo, const float *bhi, int b)
{
    float d = 0.0f;
    for (int j = 0; j < b; j++) {
        float s0 = fabsf(blo[j] - c[j]), s1 = fabsf(bhi[j] - c[j]);
        float s = s0 > s1 ? s0 : s1;
        d = d + s * s;
    }
    return d;
}

/* A lower bound of boxmin(B, c) for every c in the box [nlo, nhi]: the
 * same float sum over the gaps between the boxes (c_j >= nlo_j makes
 * c_j - bhi_j >= nlo_j - bhi_j, and rounding is monotone). */
static inline float km_box_gap(const float *nlo, const float *nhi, const float *blo,
                               const float *bhi, int b)
{
    float d = 0.0f;
    for (int j = 0; j < b; j++) {
        float s = nlo[j] > bhi[j] ? nlo[j] - bhi[j] : blo[j] > nhi[j] ? blo[j] - nhi[j] : 0.0f;
        d = d + s * s;
    }
    return d;
}

/* A worker's scratch: a stack of lists (boxmin, centroid) and room to
 * reorder one list. */
typedef struct km_gscratch {
    float *md, *md2;
    uint32_t *qs, *qs2;
    size_t top, cap, cap2;
} km_gscratch;

static int km_gs_reserve(km_gscratch *s, size_t n)
{
    if (s->top + n > s->cap) {
        size_t cap = km_grow_cap(s->cap, s->top + n, 1024);
        if (km_realloc(&s->md, cap * sizeof *s->md) || km_realloc(&s->qs, cap * sizeof *s->qs))
            return -1;
        s->cap = cap;
    }
    return 0;
}

static int km_gs_reserve2(km_gscratch *s, size_t n)
{
    if (n > s->cap2) {
        free(s->md2);
        free(s->qs2);
        s->md2 = malloc(n * sizeof *s->md2);
        s->qs2 = malloc(n * sizeof *s->qs2);
        s->cap2 = s->md2 && s->qs2 ? n : 0;
        if (!s->cap2)
            return -1;
    }
    return 0;
}

static void km_gs_free(km_gscratch *s)
{
    free(s->md);
    free(s->md2);
    free(s->qs);
    free(s->qs2);
}

enum { KM_LEVELS = 32 }; /* ordering granularity of long lists */

/* Emits the list s[off .. off+n) (bound U, complete below lim) as the
 * blocks of leaf node self: *res and *lf (first block local to o). */
static int km_leaf(km_gbuf *o, km_gscratch *s, size_t off, size_t n, float U, float lim,
                   uint32_t self, km_gnode *res, km_gleaf *lf)
{
    const float *smd = s->md + off;
    const uint32_t *sqs = s->qs + off;
    if (n > 8 && U > 0 && (U < INFINITY || lim < INFINITY)) {
        if (km_gs_reserve2(s, n))
            return -1;
        /* a counting sort by boxmin level, so the search can stop early */
        uint32_t cnt[KM_LEVELS + 2] = {0};
        double scale = KM_LEVELS / (double)(lim < U ? lim : U);
        for (size_t i = 0; i < n; i++) {
            uint32_t l = (uint32_t)((double)smd[i] * scale);
            cnt[(l > KM_LEVELS ? KM_LEVELS : l) + 1]++;
        }
        for (int l = 1; l <= KM_LEVELS + 1; l++)
            cnt[l] += cnt[l - 1];
        for (size_t i = 0; i < n; i++) {
            uint32_t l = (uint32_t)((double)smd[i] * scale);
            size_t p = cnt[l > KM_LEVELS ? KM_LEVELS : l]++;
            s->md2[p] = smd[i];
            s->qs2[p] = sqs[i];
        }
        smd = s->md2;
        sqs = s->qs2;
    }
    size_t nb = (n + 7) / 8;
    if (km_gbuf_reserve(o, o->nb + nb))
        return -1;
    uint16_t *oid = o->id + o->nb * 8;
    float *omn = o->mn + o->nb;
    for (size_t t = 0; t < nb; t++) {
        float mn = INFINITY;
        for (size_t l = 0; l < 8; l++) {
            size_t i = t * 8 + l < n ? t * 8 + l : 0;
            oid[t * 8 + l] = (uint16_t)sqs[i];
            mn = smd[i] < mn ? smd[i] : mn;
        }
        omn[t] = mn;
    }
    for (size_t t = nb; t-- > 1;)
        omn[t - 1] = omn[t] < omn[t - 1] ? omn[t] : omn[t - 1];
    res->split = NAN;
    res->kid = self << 3;
    *lf = (km_gleaf){(uint32_t)o->nb, (uint32_t)nb, lim, 0};
    o->nb += nb;
    return 0;
}

/* The subtree of the box [blo, bhi] whose list is s[off .. off+n) with
 * bound U, rooted at node self: a leaf, or the box halved across its
 * widest side when that shortens a half's list. New nodes are o's, with
 * numbers local to o; *res and lf[2] as km_leaf's. */
static int km_subtree(km_grid *g, km_gbuf *o, km_gscratch *s, const float *blo,
                      const float *bhi, size_t off, size_t n, float U, float lim, int depth,
                      uint32_t self, km_gnode *res, km_gleaf *lf)
{
    const int b = g->b;
    const float *cv = g->cv;
    if (n > km_leaf_max[b] && depth < KM_HALVE_DEPTH) {
        int dim = 0;
        double w = -1;
        for (int j = 0; j < b; j++)
            if ((double)bhi[j] - (double)blo[j] > w) {
                w = (double)bhi[j] - (double)blo[j];
                dim = j;
            }
        float sp = 0.5f * blo[dim] + 0.5f * bhi[dim];
        if (blo[dim] < sp && sp < bhi[dim]) {
            float clo[2][KM_INDEX_MAX_BLOCK], chi[2][KM_INDEX_MAX_BLOCK], uc[2];
            size_t nc[2];
            for (int h = 0; h < 2; h++) {
                memcpy(clo[h], blo, (size_t)b * sizeof *blo);
                memcpy(chi[h], bhi, (size_t)b * sizeof *bhi);
            }
            chi[0][dim] = sp;
            clo[1][dim] = sp;
            for (int h = 0; h < 2; h++) {
                float u = INFINITY;
                for (size_t i = 0; i < n; i++) {
                    float d = km_box_max(cv + (size_t)s->qs[off + i] * b, clo[h], chi[h], b);
                    u = d < u ? d : u;
                }
                size_t cnt = 0;
                for (size_t i = 0; i < n; i++)
                    cnt += km_box_min(cv + (size_t)s->qs[off + i] * b, clo[h], chi[h], b) <= u;
                uc[h] = u;
                nc[h] = cnt;
            }
            if (nc[0] < n || nc[1] < n) {
                if (km_gbuf_nodes(o, o->nn + 2))
                    return -1;
                size_t a = o->nn;
                o->nn += 2;
                for (int h = 0; h < 2; h++) {
                    size_t at = s->top;
                    if (km_gs_reserve(s, nc[h]))
                        return -1;
                    size_t m = 0;
                    for (size_t i = 0; i < n; i++) {
                        uint32_t q = s->qs[off + i];
                        float d = km_box_min(cv + (size_t)q * b, clo[h], chi[h], b);
                        if (d <= uc[h]) {
                            s->md[at + m] = d;
                            s->qs[at + m] = q;
                            m++;
                        }
                    }
                    s->top = at + m;
                    km_gnode child;
                    km_gleaf clf;
                    int rc = km_subtree(g, o, s, clo[h], chi[h], at, m, uc[h], lim, depth + 1,
                                        (uint32_t)a + (uint32_t)h, &child, &clf);
                    s->top = at;
                    if (rc)
                        return -1;
                    o->node[a + (size_t)h] = child;
                    o->lf[a + (size_t)h] = clf;
                }
                res->split = sp;
                res->kid = (uint32_t)a << 3 | (uint32_t)dim;
                return 0;
            }
        }
    }
    return km_leaf(o, s, off, n, U, lim, self, res, lf);
}

/* Moves the kth smallest (by md) of the n pairs to position kth, the
 * smaller ones before it: a three-way quickselect. */
static void km_select_pairs(float *md, uint32_t *qs, size_t n, size_t kth)
{
    size_t lo = 0, hi = n;
    while (hi - lo > 1) {
        float pv = md[lo + (hi - lo) / 2];
        size_t lt = lo, t = lo, gt = hi;
        while (t < gt) {
            float v = md[t];
            uint32_t q = qs[t];
            if (v < pv) {
                md[t] = md[lt];
                qs[t++] = qs[lt];
                md[lt] = v;
                qs[lt++] = q;
            } else if (v > pv) {
                gt--;
                md[t] = md[gt];
                qs[t] = qs[gt];
                md[gt] = v;
                qs[gt] = q;
            } else {
                t++;
            }
        }
        if (kth < lt)
            hi = lt;
        else if (kth >= gt)
            lo = gt;
        else
            return;
    }
}

/* The list of partition node ci, from its parent's list s[off .. off+n)
 * (bound U, complete below lim), pushed on s's stack at *coff (*cn
 * entries, bound *cu, complete below *clim). Its U is the parent's or a
 * smaller boxmax of a centroid of the parent's list; its entries are those
 * of the parent's with boxmin <= U (every centroid with boxmin <= U and
 * below lim is there: its boxmin in the larger parent box is no larger).
 * When they are more than the node's cap, the cap smallest stay and lim
 * falls to the largest of them (those below it all stay). */
static int km_child_list(km_grid *g, km_gscratch *s, uint32_t ci, size_t off, size_t n, float U,
                         float lim, size_t *coff, size_t *cn, float *cu, float *clim)
{
    const int b = g->b;
    const float *cv = g->cv;
    const float *blo = g->box + (size_t)ci * 2 * b, *bhi = blo + b;
    float u = U;
    for (size_t i = 0; i < n; i++) {
        float d = km_box_max(cv + (size_t)s->qs[off + i] * b, blo, bhi, b);
        u = d < u ? d : u;
    }
    size_t at = s->top;
    if (km_gs_reserve(s, n))
        return -1;
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t q = s->qs[off + i];
        float d = km_box_min(cv + (size_t)q * b, blo, bhi, b);
        if (d <= u) {
            s->md[at + m] = d;
            s->qs[at + m++] = q;
        }
    }
    size_t cap = km_list_cap[b];
    if (cap && g->part[ci].kid) {
        size_t own = g->part[ci].e - g->part[ci].s;
        cap = cap > 16 * own ? cap : 16 * own;
    }
    if (cap && m > cap) {
        km_select_pairs(s->md + at, s->qs + at, m, cap - 1);
        float t = s->md[at + cap - 1];
        m = cap;
        lim = t < lim ? t : lim;
    }
    if (u < lim)
        lim = INFINITY; /* complete: its nearest distance is <= u */
    s->top = at + m;
    *coff = at;
    *cn = m;
    *cu = u;
    *clim = lim;
    return 0;
}

/* The lists of the subtree of partition node ni, whose list is
 * s[off .. off+n): the leaves' blocks and halvings go to o. */
static int km_lists(km_grid *g, km_gbuf *o, km_gscratch *s, uint32_t ni, size_t off, size_t n,
                    float U, float lim)
{
    const int b = g->b;
    const km_gpart *p = &g->part[ni];
    if (!p->kid) {
        if (o->nlv == o->caplv) {
            size_t cap = km_grow_cap(o->caplv, o->nlv + 1, 64);
            if (km_realloc(&o->lv, cap * sizeof *o->lv))
                return -1;
            o->caplv = cap;
        }
        o->lv[o->nlv++] = ni;
        const float *blo = g->box + (size_t)ni * 2 * b;
        return km_subtree(g, o, s, blo, blo + b, off, n, U, lim, 0, ni, &g->all.node[ni],
                          &g->all.lf[ni]);
    }
    for (uint32_t h = 0; h < 2; h++) {
        size_t at = s->top, coff, cn;
        float cu, clim;
        int rc = km_child_list(g, s, p->kid + h, off, n, U, lim, &coff, &cn, &cu, &clim) ||
                 km_lists(g, o, s, p->kid + h, coff, cn, cu, clim);
        s->top = at;
        if (rc)
            return -1;
    }
    return 0;
}

/* The tasks: the partition's subtrees at depth cut (or leaves above it),
 * with their lists, in depth-first order. */
static int km_plan(km_grid *g, km_gscratch *s, uint32_t ni, size_t off, size_t n, float U,
                   float lim, uint32_t cut)
{
    const km_gpart *p = &g->part[ni];
    if (!p->kid || p->depth >= cut) {
        if (g->ntask == g->captask) {
            size_t cap = km_grow_cap(g->captask, g->ntask + 1, 64);
            if (km_realloc(&g->task, cap * sizeof *g->task))
                return -1;
            g->captask = cap;
        }
        if (g->tn + n > g->captn) {
            size_t cap = km_grow_cap(g->captn, g->tn + n, 4096);
            if (km_realloc(&g->tmd, cap * sizeof *g->tmd) ||
                km_realloc(&g->tqs, cap * sizeof *g->tqs))
                return -1;
            g->captn = cap;
        }
        memcpy(g->tmd + g->tn, s->md + off, n * sizeof *g->tmd);
        memcpy(g->tqs + g->tn, s->qs + off, n * sizeof *g->tqs);
        g->task[g->ntask++] = (km_gtask){ni, U, lim, g->tn, n};
        g->tn += n;
        return 0;
    }
    for (uint32_t h = 0; h < 2; h++) {
        size_t at = s->top, coff, cn;
        float cu, clim;
        int rc = km_child_list(g, s, p->kid + h, off, n, U, lim, &coff, &cn, &cu, &clim) ||
                 km_plan(g, s, p->kid + h, coff, cn, cu, clim, cut);
        s->top = at;
        if (rc)
            return -1;
    }
    return 0;
}

static void km_grid_task(void *arg, uint64_t ti, uint64_t begin, uint64_t end)
{
    (void)begin;
    (void)end;
    km_grid *g = arg;
    km_gbuf *o = &g->chunk[ti];
    o->nb = o->nn = o->nlv = 0;
    if (atomic_load(&g->failed))
        return;
    const km_gtask *t = &g->task[ti];
    km_gscratch s = {0};
    if (km_gs_reserve(&s, t->n)) {
        atomic_store(&g->failed, 1);
    } else {
        memcpy(s.md, g->tmd + t->off, t->n * sizeof *s.md);
        memcpy(s.qs, g->tqs + t->off, t->n * sizeof *s.qs);
        s.top = t->n;
        if (km_lists(g, o, &s, t->node, 0, t->n, t->U, t->lim) ||
            atomic_fetch_add(&g->blocks, o->nb) + o->nb > g->max_blocks)
            atomic_store(&g->failed, 1);
    }
    km_gs_free(&s);
}

/* A new partition node with box [blo, bhi] and centroids ord[s..e). */
static int km_part_add(km_grid *g, const float *blo, const float *bhi, uint32_t s, uint32_t e,
                       uint32_t depth)
{
    const int b = g->b;
    if (g->npart == g->cappart) {
        size_t cap = km_grow_cap(g->cappart, g->npart + 1, 256);
        if (km_realloc(&g->part, cap * sizeof *g->part) ||
            km_realloc(&g->box, cap * 2 * (size_t)b * sizeof *g->box) ||
            km_realloc(&g->bb, cap * 2 * (size_t)b * sizeof *g->bb) ||
            km_gbuf_nodes(&g->all, cap))
            return -1;
        g->cappart = cap;
    }
    size_t i = g->npart++;
    g->part[i] = (km_gpart){s, e, 0, depth};
    memcpy(g->box + i * 2 * b, blo, (size_t)b * sizeof *blo);
    memcpy(g->box + i * 2 * b + b, bhi, (size_t)b * sizeof *bhi);
    g->all.node[i] = (km_gnode){NAN, (uint32_t)i << 3};
    return 0;
}

/* Moves the want-th smallest of the m centroids o[] by value dim (c: b
 * values per centroid) to o[want], the smaller ones before it: a three-way
 * quickselect (km_private.h). */
void km_select_median(uint32_t *o, uint32_t m, uint32_t want, const float *c, int b, int dim)
{
    for (uint32_t lo_ = 0, hi_ = m; hi_ - lo_ > 1;) {
        float pv = c[(size_t)o[lo_ + (hi_ - lo_) / 2] * b + dim];
        uint32_t lt = lo_, t = lo_, gt = hi_;
        while (t < gt) {
            float v = c[(size_t)o[t] * b + dim];
            uint32_t tmp = o[t];
            if (v < pv) {
                o[t++] = o[lt];
                o[lt++] = tmp;
            } else if (v > pv) {
                o[t] = o[--gt];
                o[gt] = tmp;
            } else {
                t++;
            }
        }
        if (want < lt)
            hi_ = lt;
        else if (want >= gt)
            lo_ = gt;
        else
            break;
    }
}

/* The bounding box bb (lo then hi) of node p's centroids. */
static void km_part_bbox(const km_grid *g, km_gpart p, float *bb)
{
    const int b = g->b;
    for (int j = 0; j < b; j++) {
        bb[j] = INFINITY;
        bb[b + j] = -INFINITY;
    }
    for (uint32_t t = p.s; t < p.e; t++)
        for (int j = 0; j < b; j++) {
            float v = g->cv[(size_t)g->ord[t] * b + j];
            bb[j] = v < bb[j] ? v : bb[j];
            bb[b + j] = v > bb[b + j] ? v : bb[b + j];
        }
}

/* A box [blo, bhi] reaching farther beyond its centroids' box bb than they
 * spread is first cut at bb, the empty part a leaf of its own (a long box
 * next to dense centroids would have a long list): 1 with *dim and *split
 * of that cut, else 0. */
static int km_part_gap_cut(const float *blo, const float *bhi, const float *bb, int b, int *dim,
                           float *split)
{
    double spread = 0, tgap;
    for (int j = 0; j < b; j++)
        spread = (double)bb[b + j] - (double)bb[j] > spread ? (double)bb[b + j] - (double)bb[j]
                                                            : spread;
    tgap = spread;
    int high = 0, d = -1;
    for (int j = 0; j < b; j++) {
        double gl = (double)bb[j] - (double)blo[j], gh = (double)bhi[j] - (double)bb[b + j];
        if (gl > tgap) {
            tgap = gl;
            d = j;
            high = 0;
        }
        if (gh > tgap) {
            tgap = gh;
            d = j;
            high = 1;
        }
    }
    if (d < 0)
        return 0;
    *dim = d;
    *split = high ? nextafterf(bb[b + d], INFINITY) : bb[d];
    return blo[d] < *split && *split < bhi[d];
}

/* The median cut of the m centroids o[] in the box [blo, bhi] (their box
 * bb) across the widest side among the coordinates that differ: 1 with
 * *dim and *split, 0 when all its centroids coincide. */
static int km_part_median_cut(const km_grid *g, uint32_t *o, uint32_t m, const float *blo,
                              const float *bhi, const float *bb, int *dim, float *split)
{
    const int b = g->b;
    const float *cv = g->cv;
    int d = -1;
    double w = -1;
    for (int j = 0; j < b; j++)
        if (bb[b + j] > bb[j] && (double)bhi[j] - (double)blo[j] > w) {
            w = (double)bhi[j] - (double)blo[j];
            d = j;
        }
    if (d < 0)
        return 0;
    uint32_t want = m / 2;
    km_select_median(o, m, want, cv, b, d);
    float rv = cv[(size_t)o[want] * b + d], lv = -INFINITY;
    for (uint32_t t = 0; t < want; t++) {
        float v = cv[(size_t)o[t] * b + d];
        lv = v > lv ? v : lv;
    }
    /* lv <= rv: cut between them, so that both sides hold centroids */
    float sp = rv;
    if (lv < rv) {
        sp = 0.5f * lv + 0.5f * rv;
        if (!(sp > lv))
            sp = rv;
    }
    if (!(sp > bb[d])) {
        /* ties at the median: cut between the smallest and the largest */
        sp = 0.5f * bb[d] + 0.5f * bb[b + d];
        if (!(sp > bb[d]))
            sp = bb[b + d];
    }
    *dim = d;
    *split = sp < blo[d] ? blo[d] : sp > bhi[d] ? bhi[d] : sp;
    return 1;
}

/* Splits node i at its median centroid (see above), or leaves it a leaf. */
static int km_part_split(km_grid *g, size_t i)
{
    const int b = g->b;
    const float *cv = g->cv;
    km_gpart p = g->part[i];
    uint32_t m = p.e - p.s;
    float *bb = g->bb + i * 2 * b;
    km_part_bbox(g, p, bb);
    if (m <= 1 || p.depth >= KM_SPLIT_DEPTH)
        return 0;
    const float *blo = g->box + i * 2 * b, *bhi = blo + b;
    uint32_t *o = g->ord + p.s;
    float split;
    int dim;
    if (!km_part_gap_cut(blo, bhi, bb, b, &dim, &split) &&
        !km_part_median_cut(g, o, m, blo, bhi, bb, &dim, &split))
        return 0;
    /* partition: c < split to the left */
    uint32_t a = 0;
    for (uint32_t t = 0; t < m; t++)
        if (cv[(size_t)o[t] * b + dim] < split) {
            uint32_t tmp = o[a];
            o[a] = o[t];
            o[t] = tmp;
            a++;
        }
    if ((a == 0 || a == m) && !(blo[dim] < split && split < bhi[dim]))
        return 0; /* (a median cut clamped to the box's side) */
    float clo[KM_INDEX_MAX_BLOCK], chi[KM_INDEX_MAX_BLOCK];
    uint32_t kid = (uint32_t)g->npart;
    for (int h = 0; h < 2; h++) {
        blo = g->box + i * 2 * b; /* (may have moved) */
        memcpy(clo, blo, (size_t)b * sizeof *blo);
        memcpy(chi, blo + b, (size_t)b * sizeof *bhi);
        (h ? clo : chi)[dim] = split;
        if (km_part_add(g, clo, chi, h ? p.s + a : p.s, h ? p.e : p.s + a, p.depth + 1))
            return -1;
    }
    g->part[i].kid = kid;
    g->all.node[i].split = split;
    g->all.node[i].kid = kid << 3 | (uint32_t)dim;
    return 0;
}

/* Whether the index may be built for cb's centroids c in the box [lo, hi]
 * as accel asks (see km_codebook_index). */
static int km_index_wanted(const km_codebook *cb, const float *c, const float *lo,
                           const float *hi, int accel)
{
    const int b = cb->b;
    const uint32_t k = cb->k;
#if !defined(FLT_EVAL_METHOD) || FLT_EVAL_METHOD != 0
    return 0; /* the bounds need plain single-precision arithmetic */
#endif
    if (accel == KM_ACCEL_NONE || b < 1 || b > KM_INDEX_MAX_BLOCK || k < 1 ||
        k > KM_MAX_CENTROIDS)
        return 0;
    if (accel != KM_ACCEL_INDEX && (b > KM_AUTO_MAX_BLOCK || k < KM_AUTO_MIN_K))
        return 0;
    for (int j = 0; j < b; j++)
        if (!(isfinite(lo[j]) && isfinite(hi[j]) && lo[j] <= hi[j]))
            return 0;
    for (size_t i = 0; i < (size_t)k * b; i++)
        if (!isfinite(c[i]))
            return 0;
    return 1;
}

/* The partition, breadth first: node i's children follow every node
 * before them. */
static int km_grid_partition(km_grid *g)
{
    g->ord = malloc((size_t)g->k * sizeof *g->ord);
    if (!g->ord)
        return -1;
    for (uint32_t q = 0; q < g->k; q++)
        g->ord[q] = q;
    if (km_part_add(g, g->lo, g->hi, 0, g->k, 0))
        return -1;
    for (size_t i = 0; i < g->npart; i++)
        if (km_part_split(g, i))
            return -1;
    return 0;
}

/* The lists, top down (a child's from its parent's): serially down to
 * KM_PLAN_DEPTH (the tasks), then the tasks' subtrees in parallel, each
 * into its chunk of g. */
static int km_grid_lists(km_grid *g, hvq_ctx *ctx)
{
    const int b = g->b;
    const uint32_t k = g->k;
    km_gscratch s = {0};
    int bad = km_gs_reserve(&s, k);
    if (!bad) {
        const float *blo = g->box, *bhi = blo + b;
        float U = INFINITY;
        for (uint32_t q = 0; q < k; q++) {
            float d = km_box_max(g->cv + (size_t)q * b, blo, bhi, b);
            U = d < U ? d : U;
            s.md[q] = km_box_min(g->cv + (size_t)q * b, blo, bhi, b);
            s.qs[q] = q;
        }
        s.top = k;
        bad = km_plan(g, &s, 0, 0, k, U, INFINITY, KM_PLAN_DEPTH);
    }
    km_gs_free(&s);
    if (bad)
        return -1;
    size_t nchunk = g->ntask;
    if (nchunk > g->nchunk) {
        km_gbuf *ch = realloc(g->chunk, nchunk * sizeof *ch);
        if (!ch)
            return -1;
        memset(ch + g->nchunk, 0, (nchunk - g->nchunk) * sizeof *ch);
        g->chunk = ch;
        g->nchunk = nchunk;
    }
    g->max_blocks = KM_INDEX_MAX_BYTES / (8 * sizeof(uint16_t) + sizeof(float));
    atomic_init(&g->blocks, 0);
    atomic_init(&g->failed, 0);
    hvq_host_parallel_for(ctx, nchunk, 1, km_grid_task, g);
    return atomic_load(&g->failed) ? -1 : 0;
}

/* Concatenates the tasks' chunks into g->all, renumbering: chunk ci's
 * nodes follow the partition's and the nodes of the chunks before it, and
 * so do its blocks. */
static int km_grid_concat(km_grid *g)
{
    const size_t nchunk = g->ntask;
    size_t total = 0, nodes = g->npart;
    for (size_t ci = 0; ci < nchunk; ci++) {
        total += g->chunk[ci].nb;
        nodes += g->chunk[ci].nn;
    }
    if (nodes >= (1u << 28) || total >= (1u << 28) || km_gbuf_reserve(&g->all, total) ||
        km_gbuf_nodes(&g->all, nodes))
        return -1;
    size_t at = 0, nat = g->npart;
    g->nleaf = 0;
    for (size_t ci = 0; ci < nchunk; ci++) {
        const km_gbuf *o = &g->chunk[ci];
        if (o->nb) {
            memcpy(g->all.id + at * 8, o->id, o->nb * 8 * sizeof *o->id);
            memcpy(g->all.mn + at, o->mn, o->nb * sizeof *o->mn);
        }
        if (o->nn) {
            memcpy(g->all.node + nat, o->node, o->nn * sizeof *o->node);
            memcpy(g->all.lf + nat, o->lf, o->nn * sizeof *o->lf);
        }
        for (size_t i = 0; i < o->nlv + o->nn; i++) {
            int root = i < o->nlv;
            size_t ni = root ? o->lv[i] : nat + (i - o->nlv);
            km_gnode *nd = &g->all.node[ni];
            /* local numbers: an inner node's children, a new leaf's own */
            if (!KM_ISLEAF(*nd) || !root)
                nd->kid += (uint32_t)nat << 3;
            if (KM_ISLEAF(*nd)) {
                g->all.lf[ni].first += (uint32_t)at;
                g->nleaf++;
            }
        }
        at += o->nb;
        nat += o->nn;
    }
    g->all.nb = total;
    g->all.nn = nodes;
    return 0;
}

/* Steps of the branch-free descent: enough for 9 in 10 leaves. */
static int km_grid_steps(km_grid *g)
{
    uint32_t hist[KM_SPLIT_DEPTH + KM_HALVE_DEPTH + 2] = {0};
    size_t sp = 0;
    uint32_t *st = malloc(g->all.nn * 2 * sizeof *st);
    if (!st)
        return -1;
    st[sp++] = 0;
    st[sp++] = 0;
    while (sp) {
        uint32_t d = st[--sp], ni = st[--sp];
        const km_gnode *nd = &g->all.node[ni];
        if (KM_ISLEAF(*nd)) {
            hist[d]++;
        } else {
            st[sp++] = (nd->kid >> 3);
            st[sp++] = d + 1;
            st[sp++] = (nd->kid >> 3) + 1;
            st[sp++] = d + 1;
        }
    }
    free(st);
    size_t acc = 0;
    g->steps = 0;
    while (acc * 10 < g->nleaf * 9)
        acc += hist[g->steps++];
    g->steps = g->steps ? g->steps - 1 : 0;
    return 0;
}

int km_codebook_index(km_codebook *cb, const float *c, const float *lo, const float *hi,
                      int accel, hvq_ctx *ctx)
{
    km_grid *g = cb->grid;
    if (g)
        g->valid = 0;
    const int b = cb->b;
    const uint32_t k = cb->k;
    if (!km_index_wanted(cb, c, lo, hi, accel))
        return 0;
    if (!g) {
        g = calloc(1, sizeof *g);
        if (!g)
            return 0;
        cb->grid = g;
    }
    km_grid_release(g);
    g->b = b;
    g->k = k;
    g->cv = c;
    memcpy(g->lo, lo, (size_t)b * sizeof *lo);
    memcpy(g->hi, hi, (size_t)b * sizeof *hi);
    g->all.nb = g->all.nn = 0;
    float *tab = NULL;
    int ok = !km_grid_partition(g) && !km_grid_lists(g, ctx) && !km_grid_concat(g) &&
             !km_grid_steps(g) && (tab = km_regrow(g->tab, 0, (size_t)k * b * sizeof *tab));
    if (ok) {
        g->tab = tab;
        km_tab_rows(tab, k, c, k, b);
        /* AUTO: brute force when the lists are long anyway. */
        ok = !(accel == KM_ACCEL_AUTO && (double)g->all.nb / (double)g->nleaf > 0.5 * cb->nblk);
    }
    km_grid_release(g);
    g->valid = ok;
    return ok;
}
