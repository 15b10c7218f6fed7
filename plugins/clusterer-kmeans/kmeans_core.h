/* The host-independent part of the "kmeans" clusterer: a seeded PRNG,
 * sampling without replacement, nearest-centroid assignment (a scalar
 * reference and fast exact kernels), Lloyd training with dead-unit revival,
 * the bit packing of the indices, and the final encode pass.
 *
 * Nothing here touches the host table, so the tests compile this file
 * directly and check its pieces one by one. Scratch memory comes from
 * malloc; every function that allocates returns 0 on success and -1 when
 * out of memory.
 *
 * Distances. The distance between a vector x and a centroid c of b values
 * is the float sum  d = 0; for j in 0..b-1: t = x[j] - c[j]; d = d + t*t
 * evaluated in exactly that order in single precision, with no fused
 * multiply-add (the plugin is built with -ffp-contract=off). Every kernel
 * computes this same expression, so all kernels give the same distances bit
 * for bit; the nearest centroid is the lowest index among those at the
 * smallest distance. A NaN distance never wins; when no distance is below
 * +inf the answer is centroid 0.
 */
#ifndef HVQ_KMEANS_CORE_H
#define HVQ_KMEANS_CORE_H

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

/* Centroids in the layout the fast kernels read: blocks of 8 centroids,
 * each block b runs of 8 lanes (soa[(blk*b + j)*8 + lane] is value j of
 * centroid blk*8 + lane); lanes past k hold NaN so they never win. */
typedef struct km_codebook {
    int b;
    uint32_t k;
    uint32_t nblk;
    float *soa;
} km_codebook;

int km_codebook_init(km_codebook *cb, int b, uint32_t k);
/* Sets the centroids from k*b row-major values. */
void km_codebook_set(km_codebook *cb, const float *c);
void km_codebook_free(km_codebook *cb);

/* The scalar reference: plain loops over c (k*b row-major). idx[i] gets the
 * nearest centroid of vector i, dist[i] (when dist is not NULL) its
 * distance. */
void km_assign_ref(const float *x, size_t n, int b, const float *c, uint32_t k,
                   uint32_t *idx, float *dist);

/* Kernels available on this machine: 0 is the portable one; more (e.g.
 * "avx2") where the CPU has them. km_assign_fast uses the best one. */
int km_kernel_count(void);
const char *km_kernel_name(int kernel);
void km_assign_kernel(int kernel, const float *x, size_t n, const km_codebook *cb,
                      uint32_t *idx, float *dist);
void km_assign_fast(const float *x, size_t n, const km_codebook *cb, uint32_t *idx,
                    float *dist);
/* The same, on up to `threads` threads. The result does not depend on the
 * thread count. */
int km_assign_threads(const float *x, size_t n, const km_codebook *cb, uint32_t *idx,
                      float *dist, int threads);

/* ---- training ---------------------------------------------------------------- */

typedef struct km_train_opts {
    int b;                  /* values per vector */
    uint32_t k;             /* centroids, 1 <= k <= m */
    int iterations;         /* Lloyd iterations */
    uint64_t revival;       /* size of the random subset dead units are
                               revived from (capped at m) */
    int threads;
    /* Optional diagnostics (NULL: not computed). objective[t], t in
     * 0..iterations, is the sum over the sample of the distance to the
     * nearest centroid after t updates (objective[iterations] costs one
     * more assignment pass); revived[t], t < iterations, is the number of
     * dead units moved in iteration t. */
    double *objective;
    uint64_t *revived;
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
 * are cvals (k*b), packs the indices into packed (zeroed,
 * km_packed_bytes(n, bits) bytes) and writes recon[0..numel) =
 * cvals[index][...] cropped to numel. */
int km_encode_all(const float *x, uint64_t numel, const km_codebook *cb, const float *cvals,
                  unsigned bits, uint8_t *packed, float *recon, int threads);

#endif
