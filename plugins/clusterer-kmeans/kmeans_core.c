/* The host-independent part of the "kmeans" clusterer; see kmeans_core.h.
 *
 * Speed. Assignment dominates: (sample vectors x centroids x iterations)
 * plus (all vectors x centroids). Three exact searches share one rule:
 * every distance that decides is the reference's float sum
 * d = sum_j (x_j - c_j)^2, evaluated with the same operations in the same
 * order (no FMA: the plugin is built with -ffp-contract=off), and the
 * answer is the smallest d, then the lowest index. So every search gives
 * the reference's assignment and distance bit for bit; they differ only in
 * which centroids they can prove need no look.
 *
 *  - Brute force (the fallback, and block sizes above 4): SIMD kernels over
 *    a structure-of-arrays codebook, eight centroids at a time and four
 *    vectors per pass so each centroid load serves four vectors; each lane
 *    keeps its best with strict "<", lanes merge by (distance, index).
 *    GCC/Clang vector extensions; on x86 a second copy is compiled for AVX2
 *    (no FMA) and picked at run time.
 *  - The exact index (block sizes 1-2; any with KM_ACCEL_INDEX): a k-d
 *    partition of the vectors' box with, per leaf, the list of the only
 *    centroids that can be nearest in it, proved with bounds evaluated in
 *    the reference's own float arithmetic (monotone rounding makes them
 *    exact, no margin); see "The exact index" below. A search is a few
 *    branch-free steps down the tree and one block of 8 candidates.
 *  - Guided search (Lloyd's iterations after the first, and block sizes
 *    3-4 where there is no index): x's previous centroid a is checked
 *    against the neighbours of a within 2 ||x - c_a|| (the triangle
 *    inequality excludes every other centroid), with margins that cover
 *    the float sums' rounding; see "Guided assignment" below. Without a
 *    previous centroid, a k-d tree over the centroids gives the guess.
 *    A vector it cannot certify goes to the index or brute force. The
 *    check runs eight neighbours at a time (SIMD, like the brute-force
 *    kernels) over a per-centroid copy of the neighbours' values in
 *    blocks of 8, prefetched a few vectors ahead; it looks at whole blocks,
 *    a superset of the neighbours the proof needs, which cannot change the
 *    smallest (distance, index) pair. The k-d tree's buckets are blocks of
 *    8 too, and the lists' seeded rebuild between iterations scans the
 *    codebook with the same vector code (AVX2 where available).
 *
 * Profile (one thread, the driver's 2048x2048 matrix): Mid spends about
 * half its clusterer time in the guided check, a fifth rebuilding the
 * neighbour lists, a tenth on brute force for the ~4 % of vectors nothing
 * certifies; High spends it in the index search of the final pass (about
 * half of that in the descent, whose loads depend on each other) and the
 * guided check. A start-node table for the descent's top levels was tried
 * and did not pay: the partition is deep where the data are dense, so a
 * 256x256 grid (uniform or logarithmic) left most of the descent to do.
 *
 * Every parallel loop runs on the host's thread pool (host->parallel_for,
 * through hvq_host_parallel_for) in fixed chunks: their sizes depend only
 * on the data, never on the thread count. Each vector's result is
 * independent of the split, builds are deterministic, and the M-step sums
 * are accumulated by one thread in sample order, so nothing depends on the
 * thread count.
 */
#include "kmeans_core.h"

#include <float.h>
#include <math.h>
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

/* A node, 8 bytes: x goes to node (kid >> 3) + (x[kid & 7] >= split). A
 * leaf has split = NaN and kid = its own number << 3, so it stays put; its
 * list is in lf[node]. Node 0 is the root. */
typedef struct km_gnode {
    float split;
    uint32_t kid;
} km_gnode;
#define KM_ISLEAF(nd) ((nd).split != (nd).split)

/* A leaf's list: count blocks from block first. When the list had to be
 * cut short, lim is the bound below which it is complete: a vector whose
 * best distance in it is not below lim goes to brute force (+inf when the
 * list is complete). */
typedef struct km_gleaf {
    uint32_t first, count;
    float lim;
    uint32_t pad;
} km_gleaf;

/* Blocks: 8 centroid numbers (a list shorter than a multiple of 8 repeats
 * its first centroid, which changes nothing) and a lower bound of the
 * distance to them and to every later block of the list. */
typedef struct km_gbuf {
    uint16_t *id; /* nb blocks of 8 centroid numbers */
    float *mn;    /* nb lower bounds */
    size_t nb, cap;
    km_gnode *node; /* nodes (a task's: the halvings of its leaves) */
    km_gleaf *lf;   /* per node: a leaf's list */
    size_t nn, ncap;
    uint32_t *lv;   /* a task's partition leaves, in order */
    size_t nlv, caplv;
} km_gbuf;

/* A subtree of the partition whose lists are built by one worker: its
 * root and the root's list (in the task pool). */
typedef struct km_gtask {
    uint32_t node;
    float U, lim;
    size_t off, n;
} km_gtask;

/* The partition while it is built: per node, its centroids (a range of
 * ord), its children (0: none), its box and its centroids' bounding box. */
typedef struct km_gpart {
    uint32_t s, e, kid, depth;
} km_gpart;

struct km_grid {
    int b, valid;
    uint32_t k, steps;
    float lo[KM_INDEX_MAX_BLOCK], hi[KM_INDEX_MAX_BLOCK];
    km_gbuf all;  /* every node and block */
    float *tab;   /* the centroids, b rows of k */
    size_t nleaf; /* leaves in use */
    /* build state */
    const float *cv;
    uint32_t *ord;
    km_gpart *part;
    float *box, *bb; /* per node 2b floats: lo then hi */
    size_t npart, cappart;
    km_gtask *task;
    size_t ntask, captask;
    float *tmd; /* the tasks' lists */
    uint32_t *tqs;
    size_t tn, captn;
    km_gbuf *chunk; /* per task */
    size_t nchunk, max_blocks;
    atomic_size_t blocks;
    atomic_int failed;
};

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
    size_t cap = o->cap ? o->cap : 64;
    while (cap < nb)
        cap *= 2;
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
    size_t cap = o->ncap ? o->ncap : 64;
    while (cap < nn)
        cap *= 2;
    km_gnode *p = realloc(o->node, cap * sizeof *p);
    if (p)
        o->node = p;
    km_gleaf *lf = realloc(o->lf, cap * sizeof *lf);
    if (lf)
        o->lf = lf;
    if (!p || !lf)
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

/* One step down from node ni for the vector v (a leaf stays put). */
static inline uint32_t km_grid_step(const km_gnode *node, uint32_t ni, const float *v)
{
    uint32_t k = node[ni].kid;
    return (k >> 3) + (uint32_t)(v[k & 7] >= node[ni].split);
}

/* The leaf below node ni for v. */
static inline uint32_t km_grid_finish(const km_gnode *node, uint32_t ni, const float *v)
{
    while (__builtin_expect(!KM_ISLEAF(node[ni]), 0))
        ni = km_grid_step(node, ni, v);
    return ni;
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
        size_t cap = s->cap ? s->cap * 2 : 1024;
        while (cap < s->top + n)
            cap *= 2;
        float *md = realloc(s->md, cap * sizeof *md);
        if (md)
            s->md = md;
        uint32_t *qs = realloc(s->qs, cap * sizeof *qs);
        if (qs)
            s->qs = qs;
        if (!md || !qs)
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
            size_t cap = o->caplv ? o->caplv * 2 : 64;
            uint32_t *lv = realloc(o->lv, cap * sizeof *lv);
            if (!lv)
                return -1;
            o->lv = lv;
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
            size_t cap = g->captask ? g->captask * 2 : 64;
            km_gtask *t = realloc(g->task, cap * sizeof *t);
            if (!t)
                return -1;
            g->task = t;
            g->captask = cap;
        }
        if (g->tn + n > g->captn) {
            size_t cap = g->captn ? g->captn * 2 : 4096;
            while (cap < g->tn + n)
                cap *= 2;
            float *md = realloc(g->tmd, cap * sizeof *md);
            if (md)
                g->tmd = md;
            uint32_t *qs = realloc(g->tqs, cap * sizeof *qs);
            if (qs)
                g->tqs = qs;
            if (!md || !qs)
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
        size_t cap = g->cappart ? g->cappart * 2 : 256;
        km_gpart *p = realloc(g->part, cap * sizeof *p);
        if (p)
            g->part = p;
        float *bx = realloc(g->box, cap * 2 * (size_t)b * sizeof *bx);
        if (bx)
            g->box = bx;
        float *bb = realloc(g->bb, cap * 2 * (size_t)b * sizeof *bb);
        if (bb)
            g->bb = bb;
        if (!p || !bx || !bb || km_gbuf_nodes(&g->all, cap))
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

/* Splits node i at its median centroid (see above), or leaves it a leaf. */
static int km_part_split(km_grid *g, size_t i)
{
    const int b = g->b;
    const float *cv = g->cv;
    km_gpart p = g->part[i];
    uint32_t m = p.e - p.s;
    float *bb = g->bb + i * 2 * b;
    for (int j = 0; j < b; j++) {
        bb[j] = INFINITY;
        bb[b + j] = -INFINITY;
    }
    for (uint32_t t = p.s; t < p.e; t++)
        for (int j = 0; j < b; j++) {
            float v = cv[(size_t)g->ord[t] * b + j];
            bb[j] = v < bb[j] ? v : bb[j];
            bb[b + j] = v > bb[b + j] ? v : bb[b + j];
        }
    if (m <= 1 || p.depth >= KM_SPLIT_DEPTH)
        return 0;
    const float *blo = g->box + i * 2 * b, *bhi = blo + b;
    uint32_t *o = g->ord + p.s;
    float split;
    int dim = -1;
    /* A box reaching farther beyond its centroids than they spread is
     * first cut at their bounding box, the empty part a leaf of its own:
     * a long box next to dense centroids would have a long list. */
    double spread = 0, tgap;
    for (int j = 0; j < b; j++)
        spread = (double)bb[b + j] - (double)bb[j] > spread ? (double)bb[b + j] - (double)bb[j]
                                                            : spread;
    tgap = spread;
    int high = 0;
    for (int j = 0; j < b; j++) {
        double gl = (double)bb[j] - (double)blo[j], gh = (double)bhi[j] - (double)bb[b + j];
        if (gl > tgap) {
            tgap = gl;
            dim = j;
            high = 0;
        }
        if (gh > tgap) {
            tgap = gh;
            dim = j;
            high = 1;
        }
    }
    if (dim >= 0) {
        split = high ? nextafterf(bb[b + dim], INFINITY) : bb[dim];
        if (blo[dim] < split && split < bhi[dim])
            goto cut;
    }
    /* the widest side of the box among the coordinates that differ */
    dim = -1;
    double w = -1;
    for (int j = 0; j < b; j++)
        if (bb[b + j] > bb[j] && (double)bhi[j] - (double)blo[j] > w) {
            w = (double)bhi[j] - (double)blo[j];
            dim = j;
        }
    if (dim < 0)
        return 0; /* all its centroids coincide */
    /* the median: quickselect (three-way) of the (m/2)-th smallest */
    uint32_t want = m / 2;
    for (uint32_t lo_ = 0, hi_ = m; hi_ - lo_ > 1;) {
        float pv = cv[(size_t)o[lo_ + (hi_ - lo_) / 2] * b + dim];
        uint32_t lt = lo_, t = lo_, gt = hi_;
        while (t < gt) {
            float v = cv[(size_t)o[t] * b + dim];
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
    float rv = cv[(size_t)o[want] * b + dim], lv = -INFINITY;
    for (uint32_t t = 0; t < want; t++) {
        float v = cv[(size_t)o[t] * b + dim];
        lv = v > lv ? v : lv;
    }
    /* lv <= rv: cut between them, so that both sides hold centroids */
    split = rv;
    if (lv < rv) {
        split = 0.5f * lv + 0.5f * rv;
        if (!(split > lv))
            split = rv;
    }
    if (!(split > bb[dim])) {
        /* ties at the median: cut between the smallest and the largest */
        split = 0.5f * bb[dim] + 0.5f * bb[b + dim];
        if (!(split > bb[dim]))
            split = bb[b + dim];
    }
    split = split < blo[dim] ? blo[dim] : split > bhi[dim] ? bhi[dim] : split;
cut:; /* (a label may not precede a declaration before C23; clang refuses it) */
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
    memcpy(clo, blo, (size_t)b * sizeof *blo);
    memcpy(chi, bhi, (size_t)b * sizeof *bhi);
    chi[dim] = split;
    uint32_t kid = (uint32_t)g->npart;
    if (km_part_add(g, clo, chi, p.s, p.s + a, p.depth + 1))
        return -1;
    blo = g->box + i * 2 * b; /* may have moved */
    bhi = blo + b;
    memcpy(clo, blo, (size_t)b * sizeof *blo);
    memcpy(chi, bhi, (size_t)b * sizeof *bhi);
    clo[dim] = split;
    if (km_part_add(g, clo, chi, p.s + a, p.e, p.depth + 1))
        return -1;
    g->part[i].kid = kid;
    g->all.node[i].split = split;
    g->all.node[i].kid = kid << 3 | (uint32_t)dim;
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

    int rc = -1;
    /* The partition, breadth first: node i's children follow every node
     * before them. */
    g->ord = malloc((size_t)k * sizeof *g->ord);
    if (!g->ord)
        goto out;
    for (uint32_t q = 0; q < k; q++)
        g->ord[q] = q;
    if (km_part_add(g, lo, hi, 0, k, 0))
        goto out;
    for (size_t i = 0; i < g->npart; i++)
        if (km_part_split(g, i))
            goto out;
    /* The lists, top down (a child's from its parent's): serially down
     * to a depth with enough subtrees, then the subtrees in parallel. */
    {
        km_gscratch s = {0};
        int bad = km_gs_reserve(&s, k);
        if (!bad) {
            const float *blo = g->box, *bhi = blo + b;
            float U = INFINITY;
            for (uint32_t q = 0; q < k; q++) {
                float d = km_box_max(c + (size_t)q * b, blo, bhi, b);
                U = d < U ? d : U;
                s.md[q] = km_box_min(c + (size_t)q * b, blo, bhi, b);
                s.qs[q] = q;
            }
            s.top = k;
            bad = km_plan(g, &s, 0, 0, k, U, INFINITY, KM_PLAN_DEPTH);
        }
        km_gs_free(&s);
        if (bad)
            goto out;
    }
    size_t nchunk = g->ntask;
    if (nchunk > g->nchunk) {
        km_gbuf *ch = realloc(g->chunk, nchunk * sizeof *ch);
        if (!ch)
            goto out;
        memset(ch + g->nchunk, 0, (nchunk - g->nchunk) * sizeof *ch);
        g->chunk = ch;
        g->nchunk = nchunk;
    }
    g->max_blocks = KM_INDEX_MAX_BYTES / (8 * sizeof(uint16_t) + sizeof(float));
    atomic_init(&g->blocks, 0);
    atomic_init(&g->failed, 0);
    hvq_host_parallel_for(ctx, nchunk, 1, km_grid_task, g);
    if (atomic_load(&g->failed))
        goto out;
    /* Concatenate, renumbering: chunk ci's nodes follow the partition's
     * and the nodes of the chunks before it, and so do its blocks. */
    size_t total = 0, nodes = g->npart;
    for (size_t ci = 0; ci < nchunk; ci++) {
        total += g->chunk[ci].nb;
        nodes += g->chunk[ci].nn;
    }
    if (nodes >= (1u << 28) || total >= (1u << 28) || km_gbuf_reserve(&g->all, total) ||
        km_gbuf_nodes(&g->all, nodes))
        goto out;
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
    /* Steps of the branch-free descent: enough for 9 in 10 leaves. */
    {
        uint32_t hist[KM_SPLIT_DEPTH + KM_HALVE_DEPTH + 2] = {0};
        size_t sp = 0;
        uint32_t *st = malloc(nodes * 2 * sizeof *st);
        if (!st)
            goto out;
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
    }
    float *tab = km_regrow(g->tab, 0, (size_t)k * b * sizeof *tab);
    if (!tab)
        goto out;
    g->tab = tab;
    for (uint32_t q = 0; q < k; q++)
        for (int j = 0; j < b; j++)
            tab[(size_t)j * k + q] = c[(size_t)q * b + j];
    /* AUTO: brute force when the lists are long anyway. */
    if (accel == KM_ACCEL_AUTO && (double)total / (double)g->nleaf > 0.5 * cb->nblk)
        goto out;
    rc = 0;
out:
    km_grid_release(g);
    if (rc)
        return 0;
    g->valid = 1;
    return 1;
}

/* ------------------------------------------------------------------------
 * Assignment: the fast kernels
 * ---------------------------------------------------------------------- */

typedef void (*km_kernel_fn)(const float *, size_t, const km_codebook *, uint32_t *, float *);

#if defined(__GNUC__) || defined(__clang__)
#define KM_HAVE_VECTORS 1
typedef float km_v8f __attribute__((vector_size(32)));
typedef int32_t km_v8i __attribute__((vector_size(32)));
typedef uint16_t km_v8u16 __attribute__((vector_size(16)));
#define KM_INLINE static inline __attribute__((always_inline))
#define KM_PRAGMA(x) _Pragma(#x)
#if defined(__clang__)
#define KM_UNROLL KM_PRAGMA(unroll)
#else
#define KM_UNROLL KM_PRAGMA(GCC unroll 16)
#endif
#if defined(__clang__) || __GNUC__ >= 12
#define KM_SWAP(v, ...) __builtin_shufflevector(v, v, __VA_ARGS__)
#else
#define KM_SWAP(v, ...) __builtin_shuffle(v, (km_v8i){__VA_ARGS__})
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

/* The smallest lane of *p (no NaN lanes); vectors by pointer, as values
 * of vector type would change the calling convention by target. */
#define KM_VMIN(a, b) ((km_v8f)(((km_v8i)(a) & ((a) < (b))) | ((km_v8i)(b) & ~((a) < (b)))))
#define KM_IMIN(a, b) (((a) & ((a) < (b))) | ((b) & ~((a) < (b))))

KM_INLINE float km_hmin(const km_v8f *p)
{
    km_v8f v = *p, s;
    s = KM_SWAP(v, 4, 5, 6, 7, 0, 1, 2, 3);
    v = KM_VMIN(v, s);
    s = KM_SWAP(v, 2, 3, 0, 1, 6, 7, 4, 5);
    v = KM_VMIN(v, s);
    s = KM_SWAP(v, 1, 0, 3, 2, 5, 4, 7, 6);
    v = KM_VMIN(v, s);
    return v[0];
}

KM_INLINE int32_t km_hmin_i(const km_v8i *p)
{
    km_v8i v = *p, s;
    s = KM_SWAP(v, 4, 5, 6, 7, 0, 1, 2, 3);
    v = KM_IMIN(v, s);
    s = KM_SWAP(v, 2, 3, 0, 1, 6, 7, 4, 5);
    v = KM_IMIN(v, s);
    s = KM_SWAP(v, 1, 0, 3, 2, 5, 4, 7, 6);
    v = KM_IMIN(v, s);
    return v[0];
}

/* The index search for n vectors (see "The exact index"): the cell, then
 * its blocks in order until one's bound exceeds the best distance; on a
 * lane, a candidate replaces the kept one when its distance is smaller, or
 * equal with a lower index (lists are not in index order). A vector
 * outside the index's box, or whose best distance is not finite, goes to
 * brute force. */
enum { KM_BATCH = 16 }; /* vectors whose leaves are found before any is searched */

KM_INLINE void km_gbody(const float *x, size_t n, const int B, const km_codebook *cb,
                        uint32_t *idx, float *dist, km_kernel_fn brute)
{
    const km_grid *g = cb->grid;
    const km_v8f inf = {INFINITY, INFINITY, INFINITY, INFINITY,
                        INFINITY, INFINITY, INFINITY, INFINITY};
    const km_v8f zero = {0};
    const km_v8i none = zero > zero, maxi = none + INT32_MAX;
    const float *bmn = g->all.mn, *tab = g->tab;
    const uint16_t *bid = g->all.id;
    const size_t k = g->k;
    for (size_t i0 = 0; i0 < n; i0 += KM_BATCH) {
        const size_t m = n - i0 < KM_BATCH ? n - i0 : KM_BATCH;
        const float *xb = x + i0 * (size_t)B;
        /* the leaves first: independent short chains of loads the
         * processor overlaps, and prefetches of their lists */
        const km_gnode *node = g->all.node;
        const km_gleaf *lf = g->all.lf;
        uint32_t t0[KM_BATCH], t1[KM_BATCH];
        float lim[KM_BATCH];
        /* eight descents side by side (a short batch repeats its last
         * vector), in registers */
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
                    __builtin_prefetch(bid + (size_t)t0[p] * 8);
                    __builtin_prefetch(bmn + t0[p]);
                } else {
                    t0[p] = t1[p] = 0;
                    lim[p] = INFINITY;
                }
            }
        }
        for (size_t p = 0; p < m; p++) {
            const float *v = xb + p * (size_t)B;
            km_v8f xs[KM_MAX_BLOCK];
            KM_UNROLL
            for (int j = 0; j < B; j++)
                xs[j] = zero + v[j];
            km_v8f best = inf;
            km_v8i bi = maxi;
            float bs = INFINITY;
            uint32_t t = t0[p], te = t1[p];
            for (; t < te && !(bmn[t] > bs); t++) {
                /* (vectors built in registers: lane by lane stores
                 * reloaded whole would stall the loads) */
                const uint16_t *ids = bid + (size_t)t * 8;
#if defined(__clang__) || __GNUC__ >= 9
                km_v8u16 id16;
                memcpy(&id16, ids, sizeof id16);
                const km_v8i id = __builtin_convertvector(id16, km_v8i);
#else
                const km_v8i id = {ids[0], ids[1], ids[2], ids[3],
                                   ids[4], ids[5], ids[6], ids[7]};
#endif
                const uint32_t q0 = ids[0], q1 = ids[1], q2 = ids[2], q3 = ids[3];
                const uint32_t q4 = ids[4], q5 = ids[5], q6 = ids[6], q7 = ids[7];
                km_v8f cj = {tab[q0], tab[q1], tab[q2], tab[q3],
                             tab[q4], tab[q5], tab[q6], tab[q7]};
                km_v8f tt = cj - xs[0], d = tt * tt;
                KM_UNROLL
                for (int j = 1; j < B; j++) {
                    const float *tj = tab + (size_t)j * k;
                    cj = (km_v8f){tj[q0], tj[q1], tj[q2], tj[q3],
                                  tj[q4], tj[q5], tj[q6], tj[q7]};
                    tt = cj - xs[j];
                    d = d + tt * tt;
                }
                km_v8i mk = (d < best) | ((d == best) & (id < bi));
                best = (km_v8f)(((km_v8i)best & ~mk) | ((km_v8i)d & mk));
                bi = (bi & ~mk) | (id & mk);
                if (t + 1 < te)
                    bs = km_hmin(&best);
            }
            float bd = km_hmin(&best);
            km_v8i at = best == (zero + bd);
            km_v8i cand = (bi & at) | (maxi & ~at);
            uint32_t bk = (uint32_t)km_hmin_i(&cand);
            if (__builtin_expect(!(bd < lim[p]), 0))
                brute(v, 1, cb, &bk, &bd);
            idx[i0 + p] = bk;
            if (dist)
                dist[i0 + p] = bd;
        }
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

#define KM_GCASE(B, BRUTE)                                                    \
    case B:                                                                   \
        km_gbody(x, n, B, cb, idx, dist, BRUTE);                              \
        break;

#define KM_DEFINE_GKERNEL(NAME, ATTR, BRUTE)                                  \
    ATTR static void NAME(const float *x, size_t n, const km_codebook *cb,    \
                          uint32_t *idx, float *dist)                         \
    {                                                                         \
        switch (cb->b) {                                                      \
            KM_GCASE(1, BRUTE) KM_GCASE(2, BRUTE) KM_GCASE(3, BRUTE)          \
            KM_GCASE(4, BRUTE) KM_GCASE(5, BRUTE) KM_GCASE(6, BRUTE)          \
            KM_GCASE(7, BRUTE) KM_GCASE(8, BRUTE)                             \
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
                    float d = 0.0f;
                    for (int j = 0; j < b; j++) {
                        float tt = v[j] - g->tab[(size_t)j * g->k + q];
                        d = d + tt * tt;
                    }
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

enum { KM_CHUNK = 4096 }; /* vectors per task; a multiple of 8 */

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
static int km_guided_ok(int b, uint32_t k, int accel)
{
    if (accel == KM_ACCEL_INDEX)
        return k > 1 && b <= KM_MAX_BLOCK;
    return accel == KM_ACCEL_AUTO && b <= 4 && k > 4 * km_nbr_count(b);
}

void km_nbrs_free(km_nbrs *nb)
{
    km_kd_free(nb->kd);
    free(nb->id);
    free(nb->e);
    free(nb->reach);
    free(nb->tab);
    free(nb->tab4);
    free(nb->nid);
    free(nb->nc);
    free(nb->e8);
    memset(nb, 0, sizeof *nb);
}

/* A k-d tree over the centroids for the neighbour search: buckets of up
 * to 8, each node with the bounding box of its centroids. */
struct km_kd {
    const float *c;
    int b;
    uint32_t *ord;
    uint32_t (*nd)[3]; /* s, e, kid (0: leaf) */
    double *bb;        /* per node 2b: lo then hi */
    float *split;      /* inner nodes: x goes to kid + (x[dim] >= split) */
    uint8_t *dim;
    size_t n, cap;
    /* For the vector kernels: per node, the block of its bucket (leaves of
     * 1 to 8 centroids; UINT32_MAX otherwise), and per block the bucket's
     * numbers (8, the first repeated as padding) and values (b rows of
     * 8). NULL when out of memory: the scalar loop. */
    uint32_t *lb;
    int32_t *lbid;
    float *lbc;
};

static int km_kd_node(km_kd *t, uint32_t s, uint32_t e)
{
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 256;
        uint32_t(*nd)[3] = realloc(t->nd, cap * sizeof *nd);
        if (nd)
            t->nd = nd;
        double *bb = realloc(t->bb, cap * 2 * (size_t)t->b * sizeof *bb);
        if (bb)
            t->bb = bb;
        float *sp = realloc(t->split, cap * sizeof *sp);
        if (sp)
            t->split = sp;
        uint8_t *dm = realloc(t->dim, cap * sizeof *dm);
        if (dm)
            t->dim = dm;
        if (!nd || !bb || !sp || !dm)
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
        /* median by quickselect (three-way) */
        uint32_t *o = t->ord + s, m = e - s, want = m / 2;
        for (uint32_t lo_ = 0, hi_ = m; hi_ - lo_ > 1;) {
            float pv = c[(size_t)o[lo_ + (hi_ - lo_) / 2] * b + dim];
            uint32_t lt = lo_, u = lo_, gt = hi_;
            while (u < gt) {
                float v = c[(size_t)o[u] * b + dim];
                uint32_t tmp = o[u];
                if (v < pv) {
                    o[u++] = o[lt];
                    o[lt++] = tmp;
                } else if (v > pv) {
                    o[u] = o[--gt];
                    o[gt] = tmp;
                } else {
                    u++;
                }
            }
            if (want < lt)
                hi_ = lt;
            else if (want >= gt)
                lo_ = gt;
            else
                break;
        }
        uint32_t kid = (uint32_t)t->n;
        if (km_kd_node(t, s, s + want) || km_kd_node(t, s + want, e))
            return -1;
        t->nd[i][2] = kid;
        t->dim[i] = (uint8_t)dim;
        t->split[i] = c[(size_t)t->ord[s + want] * b + dim];
    }
    /* the buckets as blocks of 8 */
    free(t->lb);
    free(t->lbid);
    free(t->lbc);
    t->lb = malloc(t->n * sizeof *t->lb);
    t->lbid = aligned_alloc(32, t->n * 8 * sizeof *t->lbid);
    t->lbc = aligned_alloc(32, t->n * 8 * (size_t)b * sizeof *t->lbc);
    if (!t->lb || !t->lbid || !t->lbc) {
        free(t->lb);
        free(t->lbid);
        free(t->lbc);
        t->lb = NULL;
        t->lbid = NULL;
        t->lbc = NULL;
        return 0;
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
                t->lbc[((size_t)nlb * b + (size_t)j) * 8 + l] = c[(size_t)q * b + j];
        }
        nlb++;
    }
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
    free(t->lb);
    free(t->lbid);
    free(t->lbc);
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

/* Puts (d, p) into the max-heap of the m smallest pairs (hn of them). */
static inline void km_heap_put(double *hd, uint32_t *hq, uint32_t *hn, uint32_t m, double d,
                               uint32_t p)
{
    size_t h;
    if (*hn < m) {
        h = (*hn)++;
        while (h && km_pair_gt(d, p, hd[(h - 1) / 2], hq[(h - 1) / 2])) {
            hd[h] = hd[(h - 1) / 2];
            hq[h] = hq[(h - 1) / 2];
            h = (h - 1) / 2;
        }
    } else if (km_pair_gt(hd[0], hq[0], d, p)) {
        h = 0;
        for (;;) {
            size_t c2 = 2 * h + 1;
            if (c2 >= m)
                break;
            if (c2 + 1 < m && km_pair_gt(hd[c2 + 1], hq[c2 + 1], hd[c2], hq[c2]))
                c2++;
            if (!km_pair_gt(hd[c2], hq[c2], d, p))
                break;
            hd[h] = hd[c2];
            hq[h] = hq[c2];
            h = c2;
        }
    } else {
        return;
    }
    hd[h] = d;
    hq[h] = p;
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

#define KM_SCASE(B)                                                           \
    case B:                                                                   \
        return km_scan_body(tab4, kp4, k, q, cq, B, lim, out);

#define KM_DEFINE_SCAN(NAME, ATTR)                                            \
    ATTR static size_t NAME(const float *tab4, uint32_t kp4, uint32_t k, uint32_t q, \
                            const float *cq, int b, float lim, uint32_t *out) \
    {                                                                         \
        switch (b) {                                                          \
            KM_SCASE(1) KM_SCASE(2) KM_SCASE(3) KM_SCASE(4)                   \
            KM_SCASE(5) KM_SCASE(6) KM_SCASE(7) KM_SCASE(8)                   \
            KM_SCASE(9) KM_SCASE(10) KM_SCASE(11) KM_SCASE(12)                \
            KM_SCASE(13) KM_SCASE(14) KM_SCASE(15) KM_SCASE(16)               \
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

static void km_nbr_chunk(void *arg, uint64_t ci, uint64_t begin, uint64_t end)
{
    km_nbr_job *job = arg;
    const km_kd *t = job->t;
    km_nbrs *nb = job->nb;
    const int b = t->b;
    const uint32_t m = nb->m, k = nb->k;
    uint32_t q0 = (uint32_t)begin, q1 = (uint32_t)end;
    (void)ci;
    double *hd = malloc((size_t)m * sizeof *hd);
    uint32_t *hq = malloc((size_t)m * sizeof *hq);
    uint32_t *stack = malloc(t->n * sizeof *stack + 1);
    uint32_t *seen = job->seeded ? calloc(k, sizeof *seen) : NULL;
    uint32_t *cand = job->seeded ? malloc((size_t)k * sizeof *cand) : NULL;
    if (!hd || !hq || !stack || (job->seeded && (!seen || !cand))) {
        atomic_store(&job->failed, 1);
        goto out;
    }
    for (uint32_t q = q0; q < q1; q++) {
        const float *cq = t->c + (size_t)q * b;
        uint32_t hn = 0, sp = 0;
#ifdef KM_HAVE_VECTORS
        if (seen && b >= 3 && k <= KM_NBR_SCAN) {
            /* The previous neighbours bound the new m-th distance: a scan
             * of every centroid in float (its rounding covered by the
             * slack) keeps the few within that bound, ranked in double. */
            const uint16_t *old = nb->id + (size_t)q * m;
            double T = 0;
            for (uint32_t u = 0; u < m; u++) {
                const float *cp = t->c + (size_t)old[u] * b;
                double d = 0;
                for (int j = 0; j < b; j++) {
                    double df = (double)cp[j] - (double)cq[j];
                    d += df * df;
                }
                T = d > T ? d : T;
            }
            float lim = (float)(T * (1 + 0x1p-14) + 0x1p-120);
            size_t ncand = km_nbr_scan(nb->tab4, nb->kp4, k, q, cq, b, lim, cand);
            for (size_t u = 0; u < ncand; u++) {
                uint32_t p = cand[u];
                const float *cp = t->c + (size_t)p * b;
                double dd = 0;
                for (int j = 0; j < b; j++) {
                    double df = (double)cp[j] - (double)cq[j];
                    dd += df * df;
                }
                km_heap_put(hd, hq, &hn, m, dd, p);
            }
            goto sorted;
        }
#endif
        if (seen) {
            /* the previous list first: the bound is tight from the start
             * and the walk skips most of the tree */
            const uint16_t *old = nb->id + (size_t)q * m;
            for (uint32_t u = 0; u < m; u++) {
                uint32_t p = old[u];
                if (p == q || seen[p] == q + 1)
                    continue;
                seen[p] = q + 1;
                const float *cp = t->c + (size_t)p * b;
                double d = 0;
                for (int j = 0; j < b; j++) {
                    double df = (double)cp[j] - (double)cq[j];
                    d += df * df;
                }
                size_t h = hn++;
                while (h && km_pair_gt(d, p, hd[(h - 1) / 2], hq[(h - 1) / 2])) {
                    hd[h] = hd[(h - 1) / 2];
                    hq[h] = hq[(h - 1) / 2];
                    h = (h - 1) / 2;
                }
                hd[h] = d;
                hq[h] = p;
            }
        }
        stack[sp++] = 0;
        while (sp) {
            uint32_t i = stack[--sp];
            const double *bb = t->bb + (size_t)i * 2 * b;
            if (hn == m) {
                double lb = 0;
                for (int j = 0; j < b; j++) {
                    double g = cq[j] < bb[j] ? bb[j] - cq[j] : cq[j] > bb[b + j] ? cq[j] - bb[b + j] : 0;
                    lb += g * g;
                }
                if (lb > hd[0] * (1 + 1e-9))
                    continue;
            }
            uint32_t kid = t->nd[i][2];
            if (kid) {
                /* nearer child last (popped first) */
                const double *lb0 = t->bb + (size_t)kid * 2 * b;
                const double *lb1 = t->bb + (size_t)(kid + 1) * 2 * b;
                double g0 = 0, g1 = 0;
                for (int j = 0; j < b; j++) {
                    double a0 = cq[j] < lb0[j] ? lb0[j] - cq[j] : cq[j] > lb0[b + j] ? cq[j] - lb0[b + j] : 0;
                    double a1 = cq[j] < lb1[j] ? lb1[j] - cq[j] : cq[j] > lb1[b + j] ? cq[j] - lb1[b + j] : 0;
                    g0 += a0 * a0;
                    g1 += a1 * a1;
                }
                stack[sp++] = g0 <= g1 ? kid + 1 : kid;
                stack[sp++] = g0 <= g1 ? kid : kid + 1;
                continue;
            }
            for (uint32_t u = t->nd[i][0]; u < t->nd[i][1]; u++) {
                uint32_t p = t->ord[u];
                if (p == q || (seen && seen[p] == q + 1))
                    continue;
                const float *cp = t->c + (size_t)p * b;
                double d = 0;
                for (int j = 0; j < b; j++) {
                    double df = (double)cp[j] - (double)cq[j];
                    d += df * df;
                }
                size_t h;
                if (hn < m) {
                    h = hn++;
                    while (h && km_pair_gt(d, p, hd[(h - 1) / 2], hq[(h - 1) / 2])) {
                        hd[h] = hd[(h - 1) / 2];
                        hq[h] = hq[(h - 1) / 2];
                        h = (h - 1) / 2;
                    }
                } else if (km_pair_gt(hd[0], hq[0], d, p)) {
                    h = 0;
                    for (;;) {
                        size_t c2 = 2 * h + 1;
                        if (c2 >= m)
                            break;
                        if (c2 + 1 < m && km_pair_gt(hd[c2 + 1], hq[c2 + 1], hd[c2], hq[c2]))
                            c2++;
                        if (!km_pair_gt(hd[c2], hq[c2], d, p))
                            break;
                        hd[h] = hd[c2];
                        hq[h] = hq[c2];
                        h = c2;
                    }
                } else {
                    continue;
                }
                hd[h] = d;
                hq[h] = p;
            }
        }
#ifdef KM_HAVE_VECTORS
    sorted:
#endif
        /* heap sort ascending: pop the largest to the end */
        for (uint32_t n2 = hn; n2 > 1; n2--) {
            double d = hd[n2 - 1];
            uint32_t p = hq[n2 - 1];
            hd[n2 - 1] = hd[0];
            hq[n2 - 1] = hq[0];
            size_t h = 0;
            for (;;) {
                size_t c2 = 2 * h + 1;
                if (c2 >= n2 - 1)
                    break;
                if (c2 + 1 < n2 - 1 && km_pair_gt(hd[c2 + 1], hq[c2 + 1], hd[c2], hq[c2]))
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
out:
    free(hd);
    free(hq);
    free(stack);
    free(seen);
    free(cand);
}

int km_nbrs_build(km_nbrs *nb, const float *c, uint32_t k, int b, hvq_ctx *ctx)
{
    uint32_t m = km_nbr_count(b);
    if (m > k - 1)
        m = k > 1 ? k - 1 : 1;
    int seeded = nb->k == k && nb->m == m && nb->b == b && k > 1;
    if (!seeded) {
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
        /* the vector kernels' copy, when it is not too large (without
         * it, the scalar loop) */
        nb->m8 = (m + 7) / 8 * 8;
        if ((size_t)k * nb->m8 * (size_t)(b + 1) * sizeof(float) <= KM_NC_MAX_BYTES) {
            nb->nid = aligned_alloc(32, (size_t)k * nb->m8 * sizeof *nb->nid);
            nb->nc = aligned_alloc(32, (size_t)k * nb->m8 * (size_t)b * sizeof *nb->nc);
            nb->e8 = malloc((size_t)k * (nb->m8 / 8) * sizeof *nb->e8);
            if (!nb->nid || !nb->nc || !nb->e8) {
                free(nb->nid);
                free(nb->nc);
                free(nb->e8);
                nb->nid = NULL;
                nb->nc = NULL;
                nb->e8 = NULL;
            }
        }
#endif
        nb->k = k;
        nb->m = m;
        nb->b = b;
    }
    for (int j = 0; j < b; j++)
        for (uint32_t q = 0; q < nb->kp; q++)
            nb->tab[(size_t)j * nb->kp + q] = q < k ? c[(size_t)q * b + j] : INFINITY;
    for (int j = 0; j < b; j++)
        for (uint32_t q = 0; q < nb->kp4; q++)
            nb->tab4[(size_t)j * nb->kp4 + q] = q < k ? c[(size_t)q * b + j] : INFINITY;
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

/* The reference's distance from v to centroid q (tab: b rows of kp). */
static inline float km_dist_tab(const float *v, const float *tab, uint32_t kp, uint32_t q, int b)
{
    float d = 0.0f;
    for (int j = 0; j < b; j++) {
        float t = v[j] - tab[(size_t)j * kp + q];
        d = d + t * t;
    }
    return d;
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
    const km_kd *t = nb->kd;
    size_t nrest = 0;
    for (size_t i = 0; i < n; i++) {
        const float *v = x + i * (size_t)b;
        uint32_t a = idx[i];
        float bd;
        if (a >= k) {
            /* the bucket's nearest */
            uint32_t nd = 0;
            while (t->nd[nd][2])
                nd = t->nd[nd][2] + (uint32_t)(v[t->dim[nd]] >= t->split[nd]);
            a = t->ord[t->nd[nd][0]];
            bd = km_dist_tab(v, tab, kp, a, b);
            for (uint32_t u = t->nd[nd][0] + 1; u < t->nd[nd][1]; u++) {
                uint32_t q = t->ord[u];
                float d = km_dist_tab(v, tab, kp, q, b);
                if (d < bd || (d == bd && q < a)) {
                    bd = d;
                    a = q;
                }
            }
        } else {
            bd = km_dist_tab(v, tab, kp, a, b);
        }
        int done = 0;
        for (int hop = 0; hop <= KM_HOPS && isfinite(bd); hop++) {
            double r = sqrt((double)bd * (1 + 0x1p-16) + 0x1p-120);
            double R = 2 * r * (1 + 0x1p-16);
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
            uint32_t nd = 0;
            while (t->nd[nd][2])
                nd = t->nd[nd][2] + (uint32_t)(v[t->dim[nd]] >= t->split[nd]);
            a = t->ord[t->nd[nd][0]];
            bd = km_dist_tab(v, tab, kp, a, B);
            if (t->lb && t->lb[nd] != UINT32_MAX) {
                /* the bucket's block: the same smallest pair */
                uint32_t lb = t->lb[nd];
                km_nbr_best(xs, B, t->lbc + (size_t)lb * (size_t)B * 8, t->lbid + (size_t)lb * 8,
                            1, &bd, &a);
            } else {
                for (uint32_t u = t->nd[nd][0] + 1; u < t->nd[nd][1]; u++) {
                    uint32_t q = t->ord[u];
                    float d = km_dist_tab(v, tab, kp, q, B);
                    if (d < bd || (d == bd && q < a)) {
                        bd = d;
                        a = q;
                    }
                }
            }
        } else {
            bd = km_dist_tab(v, tab, kp, a, B);
        }
        int done = 0;
        for (int hop = 0; hop <= KM_HOPS && isfinite(bd); hop++) {
            double r = sqrt((double)bd * (1 + 0x1p-16) + 0x1p-120);
            double R = 2 * r * (1 + 0x1p-16);
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

#define KM_VGCASE(B)                                                          \
    case B:                                                                   \
        return km_vguided_body(x, n, B, nb, idx, dist, rest);

#define KM_DEFINE_VGUIDED(NAME, ATTR)                                         \
    ATTR static size_t NAME(const float *x, size_t n, const km_nbrs *nb,      \
                            uint32_t *idx, float *dist, uint32_t *rest)       \
    {                                                                         \
        switch (nb->b) {                                                      \
            KM_VGCASE(1) KM_VGCASE(2) KM_VGCASE(3) KM_VGCASE(4)               \
            KM_VGCASE(5) KM_VGCASE(6) KM_VGCASE(7) KM_VGCASE(8)               \
            KM_VGCASE(9) KM_VGCASE(10) KM_VGCASE(11) KM_VGCASE(12)            \
            KM_VGCASE(13) KM_VGCASE(14) KM_VGCASE(15) KM_VGCASE(16)           \
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

/* km_assign_guided on one thread for n <= KM_CHUNK vectors; returns how
 * many went to km_assign_fast. */
static size_t km_guided_range(const float *x, size_t n, const km_codebook *cb,
                              const km_nbrs *nb, uint32_t *idx, float *dist)
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
                         float *cent, const uint64_t *counts, const float *lo, const float *hi)
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
    /* (an index costs more than it saves on a small subset) */
    if (rs >= 100000)
        km_codebook_index(&live, lv, lo, hi, o->accel, o->ctx);
    if (km_sample(r, m, rs, pos))
        goto out;
    for (uint64_t s = 0; s < rs; s++)
        memcpy(vec + s * (size_t)b, sample + pos[s] * (size_t)b, (size_t)b * sizeof *vec);
    km_assign_parallel(vec, (size_t)rs, &live, lab, dist, o->ctx);
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
    km_nbrs nb = {0};
    uint64_t *perm = malloc((size_t)k * sizeof *perm);
    uint32_t *labels = malloc((size_t)m * sizeof *labels);
    float *dist = o->objective ? malloc((size_t)m * sizeof *dist) : NULL;
    double *sums = malloc((size_t)k * (size_t)b * sizeof *sums);
    uint64_t *counts = malloc((size_t)k * sizeof *counts);
    if (!perm || !labels || (o->objective && !dist) || !sums || !counts ||
        km_codebook_init(&cb, b, k))
        goto out;
    /* The box of the queries, for the index. */
    float lo[KM_MAX_BLOCK], hi[KM_MAX_BLOCK];
    km_bounds(sample, (size_t)m, b, lo, hi);

    /* Initialization: k distinct sample vectors chosen at random. */
    if (km_sample(r, m, k, perm))
        goto out;
    for (uint32_t q = 0; q < k; q++)
        memcpy(cent + (size_t)q * b, sample + perm[q] * (size_t)b, (size_t)b * sizeof *cent);
    km_codebook_set(&cb, cent);
    km_codebook_index(&cb, cent, lo, hi, o->accel, o->ctx);

    /* Guided assignment pays when the lists are much shorter than the
     * codebook. */
    const int guided = km_guided_ok(b, k, o->accel);
    for (int it = 0; it < o->iterations; it++) {
        /* E-step: a full search first; then each vector's previous
         * centroid, certified by the centroids' neighbours */
        if (it == 0 && cb.grid && km_codebook_index_load(&cb) > 0) {
            km_assign_parallel(sample, (size_t)m, &cb, labels, dist, o->ctx);
        } else if (!guided || km_nbrs_build(&nb, cent, k, b, o->ctx)) {
            km_assign_parallel(sample, (size_t)m, &cb, labels, dist, o->ctx);
        } else {
            if (it == 0) /* no previous centroids: the k-d tree's guesses */
                memset(labels, 0xff, (size_t)m * sizeof *labels);
            km_assign_guided(sample, (size_t)m, &cb, &nb, labels, dist, o->ctx);
        }
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
        if (dead && (moved = km_revive(sample, m, o, r, cent, counts, lo, hi)) < 0)
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
    if (o->labels && o->iterations > 0)
        memcpy(o->labels, labels, (size_t)m * sizeof *labels);
    if (o->objective) {
        if (o->iterations == 0 || !guided || km_nbrs_build(&nb, cent, k, b, o->ctx))
            km_assign_parallel(sample, (size_t)m, &cb, labels, dist, o->ctx);
        else
            km_assign_guided(sample, (size_t)m, &cb, &nb, labels, dist, o->ctx);
        o->objective[o->iterations] = km_sum(dist, m);
    }
    rc = 0;
out:
    km_codebook_free(&cb);
    km_nbrs_free(&nb);
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
    const km_nbrs *nb;     /* guided search, or NULL */
    const uint32_t *guess; /* its first guesses, or NULL */
} km_encode_job;

static void km_encode_chunk(void *arg, uint64_t c, uint64_t i0, uint64_t i1)
{
    const km_encode_job *j = arg;
    const int b = j->cb->b;
    uint32_t idx[KM_CHUNK];
    (void)c;
    uint64_t full_end = i1 < j->nfull ? i1 : j->nfull;
    if (full_end > i0 && j->nb) {
        if (j->guess)
            memcpy(idx, j->guess + i0, (size_t)(full_end - i0) * sizeof *idx);
        else
            memset(idx, 0xff, (size_t)(full_end - i0) * sizeof *idx);
        km_guided_range(j->x + i0 * (uint64_t)b, (size_t)(full_end - i0), j->cb, j->nb, idx,
                        NULL);
    } else if (full_end > i0) {
        km_assign_fast(j->x + i0 * (uint64_t)b, (size_t)(full_end - i0), j->cb, idx, NULL);
    }
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

int km_encode_all(const float *x, uint64_t numel, km_codebook *cb, const float *cvals,
                  unsigned bits, uint8_t *packed, float *recon, hvq_ctx *ctx, int accel,
                  const uint32_t *guess)
{
    uint64_t b = (uint64_t)cb->b;
    km_encode_job j = {x, numel, numel / b + (numel % b != 0), numel / b, cb, cvals,
                       bits, packed, recon, NULL, guess};
    km_nbrs nb = {0};
    if (accel != KM_ACCEL_NONE) {
        /* The box of the vectors (the padded last one included). */
        float lo[KM_MAX_BLOCK], hi[KM_MAX_BLOCK];
        km_bounds(x, (size_t)j.nfull, cb->b, lo, hi);
        if (j.n > j.nfull) {
            float v[KM_MAX_BLOCK] = {0};
            float l2[KM_MAX_BLOCK], h2[KM_MAX_BLOCK];
            memcpy(v, x + j.nfull * b, (size_t)(numel - j.nfull * b) * sizeof *v);
            km_bounds(v, 1, cb->b, l2, h2);
            for (uint64_t i = 0; i < b; i++) {
                lo[i] = l2[i] < lo[i] ? l2[i] : lo[i];
                hi[i] = h2[i] > hi[i] ? h2[i] : hi[i];
            }
        }
        /* the index where it pays; else guided search from the k-d
         * tree's guess where the lists are much shorter than the codebook */
        if (!km_codebook_index(cb, cvals, lo, hi, accel, ctx) &&
            km_guided_ok(cb->b, cb->k, accel) &&
            km_nbrs_build(&nb, cvals, cb->k, cb->b, ctx) == 0)
            j.nb = &nb;
    }
    hvq_host_parallel_for(ctx, j.n, KM_CHUNK, km_encode_chunk, &j);
    km_nbrs_free(&nb);
    return 0;
}

/* ------------------------------------------------------------------------
 * Decoding
 * ---------------------------------------------------------------------- */

/* Vectors per decode chunk: a multiple of 8, so every chunk starts on a
 * byte of the bit stream. */
enum { KM_DECODE_CHUNK = 1 << 15 };

typedef struct km_decode_job {
    const uint8_t *packed;
    unsigned bits;
    uint32_t k;
    const float *cvals;
    int b;
    uint64_t numel, n;
    float *recon;
    uint64_t *bad; /* per chunk: first bad vector, or UINT64_MAX */
} km_decode_job;

/* Decodes vectors [i0, i1): UINT64_MAX, or the first with a bad index. */
static uint64_t km_decode_range(const km_decode_job *j, uint64_t i0, uint64_t i1)
{
    const unsigned bits = j->bits;
    const size_t b = (size_t)j->b;
    /* The last vector may be cut short by numel: done apart below. */
    uint64_t full = i1;
    if (full == j->n && j->n * b > j->numel)
        full--;
    const uint8_t *src = j->packed + (size_t)(i0 * bits / 8);
    const uint64_t mask = bits ? ((uint64_t)1 << bits) - 1 : 0;
    uint64_t acc = 0;
    unsigned have = 0;
    float *out = j->recon + i0 * b;
    for (uint64_t i = i0; i < i1; i++) {
        while (have < bits) {
            acc |= (uint64_t)*src++ << have;
            have += 8;
        }
        uint64_t q = acc & mask;
        acc >>= bits;
        have -= bits;
        if (q >= j->k)
            return i;
        const float *c = j->cvals + q * b;
        if (i < full) {
            for (size_t t = 0; t < b; t++) /* b is 1..8: a short fixed copy */
                out[t] = c[t];
        } else {
            for (size_t t = 0; t < j->numel - i * b; t++)
                out[t] = c[t];
        }
        out += b;
    }
    return UINT64_MAX;
}

static void km_decode_chunk(void *arg, uint64_t chunk, uint64_t i0, uint64_t i1)
{
    km_decode_job *j = arg;
    j->bad[chunk] = km_decode_range(j, i0, i1);
}

uint64_t km_decode(const uint8_t *packed, unsigned bits, uint32_t k, const float *cvals, int b,
                   uint64_t numel, float *recon, hvq_ctx *ctx)
{
    uint64_t n = numel / (uint64_t)b + (numel % (uint64_t)b != 0);
    size_t nchunk = (size_t)((n + KM_DECODE_CHUNK - 1) / KM_DECODE_CHUNK);
    km_decode_job j = {packed, bits, k, cvals, b, numel, n, recon, NULL};
    if (nchunk <= 1 || !(j.bad = malloc(nchunk * sizeof *j.bad)))
        return km_decode_range(&j, 0, n); /* in order, on this thread */
    hvq_host_parallel_for(ctx, n, KM_DECODE_CHUNK, km_decode_chunk, &j);
    uint64_t first = UINT64_MAX;
    for (size_t c = 0; c < nchunk; c++)
        if (j.bad[c] < first)
            first = j.bad[c];
    free(j.bad);
    return first;
}
