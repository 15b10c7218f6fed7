/* What the files of the "kmeans" clusterer's core (km_*.c) share; the
 * API is kmeans_core.h. Not installed, not seen by kmeans.c.
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
#ifndef HVQ_KM_PRIVATE_H
#define HVQ_KM_PRIVATE_H

#include "kmeans_core.h"

#include <float.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

enum { KM_CHUNK = 4096 }; /* vectors per task; a multiple of 8 */

/* ---- the exact index's layout (km_index.c builds it, km_kernels.c
 * searches it) -------------------------------------------------------- */

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

/* ---- the vector kernels' types ----------------------------------------- */

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
/* The smallest lane of *p (no NaN lanes); vectors by pointer, as values
 * of vector type would change the calling convention by target. */
#define KM_VMIN(a, b) ((km_v8f)(((km_v8i)(a) & ((a) < (b))) | ((km_v8i)(b) & ~((a) < (b)))))
#define KM_IMIN(a, b) (((a) & ((a) < (b))) | ((b) & ~((a) < (b))))

#define KM_DEFINE_HMIN(NAME, T, R, MIN)                                       \
    KM_INLINE R NAME(const T *p)                                              \
    {                                                                         \
        T v = *p, s;                                                          \
        s = KM_SWAP(v, 4, 5, 6, 7, 0, 1, 2, 3);                               \
        v = MIN(v, s);                                                        \
        s = KM_SWAP(v, 2, 3, 0, 1, 6, 7, 4, 5);                               \
        v = MIN(v, s);                                                        \
        s = KM_SWAP(v, 1, 0, 3, 2, 5, 4, 7, 6);                               \
        v = MIN(v, s);                                                        \
        return v[0];                                                          \
    }
KM_DEFINE_HMIN(km_hmin, km_v8f, float, KM_VMIN)
KM_DEFINE_HMIN(km_hmin_i, km_v8i, int32_t, KM_IMIN)

/* The cases of a switch over the block size b, C(b, X) each: 1 to 8 (the
 * index's block sizes) or 1 to 16 (every block size), so that each kernel
 * body is compiled with b a constant. */
#define KM_B8(C, X) C(1, X) C(2, X) C(3, X) C(4, X) C(5, X) C(6, X) C(7, X) C(8, X)
#define KM_B16(C, X)                                                          \
    KM_B8(C, X) C(9, X) C(10, X) C(11, X) C(12, X) C(13, X) C(14, X) C(15, X) C(16, X)
#endif /* KM_HAVE_VECTORS */

/* ---- guided assignment (km_nbrs.c, km_guided.c) ------------------------ */

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

/* A capacity for need entries: cap doubled (first when 0) until it holds
 * them. */
static inline size_t km_grow_cap(size_t cap, size_t need, size_t first)
{
    cap = cap ? cap * 2 : first;
    while (cap < need)
        cap *= 2;
    return cap;
}

/* Reallocates the array whose pointer is at pp (of any object type) to
 * bytes: 0, or -1 when out of memory (the array kept as it was). */
static inline int km_realloc(void *pp, size_t bytes)
{
    void *old, *p;
    memcpy(&old, pp, sizeof old);
    if (!(p = realloc(old, bytes)))
        return -1;
    memcpy(pp, &p, sizeof p);
    return 0;
}

/* The reference's distance from v to the centroid whose value j is
 * c[j * stride]: d = d + (v_j - c_j)^2 in float, j in order. */
static inline float km_dist_strided(const float *v, const float *c, size_t stride, int b)
{
    float d = 0.0f;
    for (int j = 0; j < b; j++) {
        float t = v[j] - c[(size_t)j * stride];
        d = d + t * t;
    }
    return d;
}

/* Frees p and sets it to NULL. */
#define KM_FREE_NULL(p) (free(p), (p) = NULL)

/* Moves the want-th smallest of the m centroids o[] by value dim (c: b
 * values per centroid) to o[want], the smaller ones before it and the
 * larger after (a three-way quickselect; km_index.c). */
void km_select_median(uint32_t *o, uint32_t m, uint32_t want, const float *c, int b, int dim);

/* tab = the k centroids c (b values each) in b rows of kp (>= k), +inf
 * past k (km_nbrs.c). */
void km_tab_rows(float *tab, uint32_t kp, const float *c, uint32_t k, int b);

/* Whether guided search is used for block size b, k centroids and accel. */
int km_guided_ok(int b, uint32_t k, int accel);

/* km_assign_guided on the calling thread for n <= KM_CHUNK vectors;
 * returns how many went to km_assign_fast. */
size_t km_guided_range(const float *x, size_t n, const km_codebook *cb, const km_nbrs *nb,
                       uint32_t *idx, float *dist);

#endif
