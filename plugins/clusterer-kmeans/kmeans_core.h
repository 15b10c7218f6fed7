/* The host-independent part of the "kmeans" clusterer: a seeded PRNG,
 * sampling without replacement, nearest-centroid assignment (a scalar
 * reference, fast exact brute-force kernels, an exact index over the
 * centroids and guided search certified by the centroids' neighbours),
 * Lloyd training with dead-unit revival, the bit packing of the indices,
 * and the final encode pass.
 *
 * Nothing here touches the host table but its parallel loop: every
 * function that runs in parallel takes the ctx whose host->parallel_for
 * (hvq_host_parallel_for) it uses, the project's one thread pool, in fixed
 * chunks (the results never depend on the thread count). The tests compile
 * these files directly and check their pieces one by one, with contexts
 * from the core. Scratch memory comes from malloc; every function that
 * allocates returns 0 on success and -1 when out of memory.
 *
 * Distances. The distance between a vector x and a centroid c of b values
 * is the float sum  d = 0; for j in 0..b-1: t = x[j] - c[j]; d = d + t*t
 * evaluated in exactly that order in single precision, with no fused
 * multiply-add (the plugin is built with -ffp-contract=off). Every kernel
 * computes this same expression, so all kernels give the same distances bit
 * for bit; the nearest centroid is the lowest index among those at the
 * smallest distance. A NaN distance never wins; when no distance is below
 * +inf the answer is centroid 0. The index and guided search compute the
 * deciding distances the same way and prune only centroids provably
 * farther, so they give these answers too.
 */
#ifndef HVQ_KMEANS_CORE_H
#define HVQ_KMEANS_CORE_H

#include "plugin.h"

#include <stddef.h>
#include <stdint.h>

/* Largest block size and number of centroids the plugin accepts. */
#define KM_MAX_BLOCK 16
#define KM_MAX_CENTROIDS 65536

/* ---- random numbers: xoshiro256** seeded through splitmix64 ------------ */
typedef struct km_rng {
    uint64_t s[4];
} km_rng;

void km_rng_seed(km_rng *r, uint64_t seed);
uint64_t km_rng_next(km_rng *r);
/* Uniform in [0, n), n >= 1, without modulo bias (rejection). */
uint64_t km_rng_below(km_rng *r, uint64_t n);

/* m distinct values of [0, n) (m <= n): the first m entries of a
 * Fisher-Yates shuffle of 0..n-1 driven by r, computed in O(m) memory.
 * When m == n the result is 0..n-1 in order and r is not used. */
int km_sample(km_rng *r, uint64_t n, uint64_t m, uint64_t *out);
/* The same with the method forced (tests): an explicit array of n entries,
 * or a hash map of the touched entries; AUTO picks by size. All three give
 * the same values. */
enum { KM_SAMPLE_AUTO = 0, KM_SAMPLE_MAP = 1, KM_SAMPLE_ARRAY = 2 };
int km_sample_with(km_rng *r, uint64_t n, uint64_t m, uint64_t *out, int method);

/* ---- the indices' bit stream ---------------------------------------------
 * Index i occupies bits [i*bits, (i+1)*bits) of the stream, least
 * significant bit first; bit j of the stream is bit (j % 8) of byte j / 8.
 * The last byte's unused high bits are zero. bits is 0..16. */
unsigned km_index_bits(uint64_t k); /* ceil(log2 k); 0 for k <= 1 */
uint64_t km_packed_bytes(uint64_t n, unsigned bits); /* ceil(n*bits/8);
                                                        UINT64_MAX on
                                                        overflow */
/* Writes n indices starting at bit 0 of dst (which must be zeroed). */
void km_pack(uint8_t *dst, const uint32_t *idx, size_t n, unsigned bits);
/* Reads n indices starting at bit 0 of src. */
void km_unpack(const uint8_t *src, size_t n, unsigned bits, uint32_t *idx);

/* ---- the fit rule ----------------------------------------------------------
 * The number of centroids actually trained for n vectors when k were asked
 * for. shrink = 0 ("fit: error"): k, or 0 (an error) when n < k.
 * shrink = 1 ("fit: shrink"): k when n >= 16*k; otherwise the largest power
 * of two <= n/16, at least 2, and 1 when n < 2. */
uint32_t km_fit_centroids(uint64_t n, uint32_t k, int shrink);

/* ---- assignment ------------------------------------------------------------ */

/* Search acceleration (see the Speed note in km_private.h): AUTO uses
 * what pays: the exact index for block sizes 1-2 (at least 64 centroids),
 * guided search for block sizes up to 4 (codebooks much larger than the
 * neighbour lists), brute force elsewhere; NONE is brute force always (the
 * plain Lloyd's the others must equal; for tests and benchmarks); INDEX
 * builds the index whenever it can (block sizes 1-8, any number of
 * centroids) and uses guided search for any block size (for tests). Every
 * choice gives the same assignments and distances bit for bit. */
enum { KM_ACCEL_AUTO = 0, KM_ACCEL_NONE = 1, KM_ACCEL_INDEX = 2 };

/* Largest block size the index handles. */
#define KM_INDEX_MAX_BLOCK 8

typedef struct km_grid km_grid;

/* Centroids in the layout the fast kernels read: blocks of 8 centroids,
 * each block b runs of 8 lanes (soa[(blk*b + j)*8 + lane] is value j of
 * centroid blk*8 + lane); lanes past k hold NaN so they never win. grid is
 * the exact index over the centroids (see km_codebook_index), used by the
 * assignment functions when built. */
typedef struct km_codebook {
    int b;
    uint32_t k;
    uint32_t nblk;
    float *soa;
    km_grid *grid;
} km_codebook;

int km_codebook_init(km_codebook *cb, int b, uint32_t k);
/* Sets the centroids from k*b row-major values; drops the index (it
 * described the old centroids). */
void km_codebook_set(km_codebook *cb, const float *c);
void km_codebook_free(km_codebook *cb);

/* Per-coordinate bounds of n vectors of b values: lo[j] = min, hi[j] = max
 * over the vectors of value j. With n = 0, lo = +inf and hi = -inf. */
void km_bounds(const float *x, size_t n, int b, float *lo, float *hi);

/* Builds the exact index over the centroids c (the k*b values last given
 * to km_codebook_set) for queries inside the box lo[j] <= x_j <= hi[j]
 * (queries outside it, or non-finite, are answered by brute force), as
 * accel asks, on ctx's threads. Returns 1 when the index is in
 * use, 0 when the assignment functions will use brute force (accel NONE,
 * a block size or codebook where it does not pay, non-finite values, out
 * of memory, ...). The result of any assignment is the same either way. */
int km_codebook_index(km_codebook *cb, const float *c, const float *lo, const float *hi,
                      int accel, hvq_ctx *ctx);
/* Average candidate centroids in a leaf's list, padding included (0
 * without an index): for benchmarks. */
double km_codebook_index_load(const km_codebook *cb);

/* The scalar reference: plain loops over c (k*b row-major). idx[i] gets the
 * nearest centroid of vector i, dist[i] (when dist is not NULL) its
 * distance. */
void km_assign_ref(const float *x, size_t n, int b, const float *c, uint32_t k,
                   uint32_t *idx, float *dist);

/* Kernels available on this machine: 0 is the portable one; more (e.g.
 * "avx2") where the CPU has them. km_assign_kernel is brute force with the
 * given kernel whatever cb holds; km_assign_kernel_indexed searches the
 * index with that kernel's code when cb has one (brute force otherwise).
 * km_assign_fast uses the best kernel, and the index when there is one. */
int km_kernel_count(void);
const char *km_kernel_name(int kernel);
void km_assign_kernel(int kernel, const float *x, size_t n, const km_codebook *cb,
                      uint32_t *idx, float *dist);
void km_assign_kernel_indexed(int kernel, const float *x, size_t n, const km_codebook *cb,
                              uint32_t *idx, float *dist);
void km_assign_fast(const float *x, size_t n, const km_codebook *cb, uint32_t *idx,
                    float *dist);
/* The same, on ctx's threads. The result does not depend on the thread
 * count. */
int km_assign_parallel(const float *x, size_t n, const km_codebook *cb, uint32_t *idx,
                       float *dist, hvq_ctx *ctx);

/* Guided assignment (see km_nbrs.c): each centroid's m nearest other
 * centroids, sorted, with distances (double, rounded to float) and reach
 * (every centroid outside the list is at least that far; +inf when the
 * list holds them all); tab holds the centroids in b rows of k. */
typedef struct km_kd km_kd;
typedef struct km_nbrs {
    uint32_t k, m, kp, kp4;
    int b;
    uint16_t *id;  /* k*m */
    float *e;      /* k*m */
    float *reach;  /* k */
    float *tab;    /* b rows of kp = k rounded up to 8 (+inf past k) */
    float *tab4;   /* the same with rows of kp4 = k rounded up to 32 */
    km_kd *kd;     /* a k-d tree over the centroids, for first guesses */
    /* For the vector kernels (NULL when too large or without them): each
     * centroid's list again with m8 = m rounded up to 8 entries (the
     * padding repeats a real centroid), nid its numbers (k*m8) and nc the
     * neighbours' values in blocks of 8 neighbours, each b rows of 8
     * (k*b*m8 floats). */
    uint32_t m8;
    int32_t *nid;
    float *nc;
    float *e8; /* k*(m8/8): the distance of each block's first entry */
} km_nbrs;

/* Builds (or rebuilds, reusing memory) the lists for the k centroids c
 * (k*b row-major, k <= KM_MAX_CENTROIDS). 0, or -1 when out of memory. */
int km_nbrs_build(km_nbrs *nb, const float *c, uint32_t k, int b, hvq_ctx *ctx);
void km_nbrs_free(km_nbrs *nb);
/* idx[i] holds a guess for vector i (any value; one >= k asks for a guess
 * from the k-d tree) and gets its nearest centroid, exactly as km_assign_ref would find it (dist
 * too); cb holds the same centroids as nb. A vector the neighbour lists
 * cannot certify is searched with km_assign_fast. Returns how many were.
 * The result does not depend on the thread count. */
size_t km_assign_guided(const float *x, size_t n, const km_codebook *cb, const km_nbrs *nb,
                        uint32_t *idx, float *dist, hvq_ctx *ctx);
/* For tests: 0 makes km_assign_guided use its scalar certification loop
 * instead of the vector kernels (the same answers). Default 1. */
extern int km_guided_vector;

/* ---- training ---------------------------------------------------------------- */

typedef struct km_train_opts {
    int b;                  /* values per vector */
    uint32_t k;             /* centroids, 1 <= k <= m */
    int iterations;         /* Lloyd iterations */
    uint64_t revival;       /* size of the random subset dead units are
                               revived from (capped at m) */
    hvq_ctx *ctx;           /* whose threads run the passes */
    int accel;              /* KM_ACCEL_*; 0 (AUTO) when not set */
    /* Optional diagnostics (NULL: not computed). objective[t], t in
     * 0..iterations, is the sum over the sample of the distance to the
     * nearest centroid after t updates (objective[iterations] costs one
     * more assignment pass); revived[t], t < iterations, is the number of
     * dead units moved in iteration t. */
    double *objective;
    uint64_t *revived;
    /* Optional (NULL: not written): m entries, each sample vector's
     * centroid in the last E-step (when iterations > 0; good first
     * guesses for the final pass). */
    uint32_t *labels;
    /* Optional progress: called after each iteration from this thread. */
    void (*progress)(void *arg, uint64_t done, uint64_t total);
    void *progress_arg;
} km_train_opts;

/* Trains k centroids on the m vectors of sample (m*b values) and writes
 * them to cent (k*b values). r supplies the initialization (the first k of
 * a permutation of the sample) and the revival subsets. */
int km_train(const float *sample, uint64_t m, const km_train_opts *o, km_rng *r,
             float *cent);

/* ---- the final pass ---------------------------------------------------------- */

/* Assigns the n = ceil(numel/b) vectors of x (numel values, zero-padded to
 * a multiple of b) to the centroids of cb, whose values as row-major floats
 * are cvals (k*b; km_codebook_set(cb, cvals) done), packs the indices into
 * packed (zeroed, km_packed_bytes(n, bits) bytes) and writes
 * recon[0..numel) = cvals[index][...] cropped to numel. Searches as accel
 * asks (an index, guided search or brute force; the same indices in every
 * case); guess (NULL or n entries, >= k for none) gives first guesses to
 * the guided search. */
int km_encode_all(const float *x, uint64_t numel, km_codebook *cb, const float *cvals,
                  unsigned bits, uint8_t *packed, float *recon, hvq_ctx *ctx, int accel,
                  const uint32_t *guess);

/* ---- decoding ----------------------------------------------------------------- */

/* The inverse of the final pass: recon[0..numel) = cvals[index][...] for
 * the n = ceil(numel/b) indices packed at bits each (bits = km_index_bits(k))
 * in packed, cropped to numel; in parallel chunks (each vector alone: the
 * result does not depend on the threads). Returns UINT64_MAX, or the first
 * vector whose index is k or more (recon is then incomplete). */
uint64_t km_decode(const uint8_t *packed, unsigned bits, uint32_t k, const float *cvals, int b,
                   uint64_t numel, float *recon, hvq_ctx *ctx);

#endif
