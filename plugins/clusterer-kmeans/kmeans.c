/* clusterer "kmeans": the paper's robust k-means vector quantization.
 *
 * Input: the normalized body B (rows x cols, row-major). Steps:
 *  1. Flatten B row-major, pad with zeros to a multiple of b = block_size
 *     and cut it into N = ceil(rows*cols / b) vectors of b consecutive
 *     values (vectors may cross row ends).
 *  2. The number of centroids K (fit rule, see km_fit_centroids):
 *       fit: error   K = centroids; N < K is an error.
 *       fit: shrink  K = centroids when N >= 16 * centroids; otherwise the
 *                    largest power of two <= N/16 (at least 2; 1 when N = 1),
 *                    so every centroid has about 16 training vectors or
 *                    more. The change is logged as a warning.
 *  3. Training sample: M = min(N, K * stability) vectors drawn without
 *     replacement (all N in order when M = N).
 *  4. Initialization: K distinct sample vectors at random.
 *  5. `iterations` Lloyd iterations: assign each sample vector to its
 *     nearest centroid (squared Euclidean, ties to the lowest index); each
 *     centroid with members moves to their mean (sums in double). Dead
 *     centroids (no members) move to the vectors of a random subset of
 *     min(M, revival_sample) sample vectors that are farthest from their
 *     nearest live centroid (largest distance first, ties to the earlier
 *     subset vector), as the paper's reference does; the distances are to
 *     the live centroids before this iteration's update. Should the subset
 *     be smaller than the number of dead centroids, the surplus ones (the
 *     highest indices) stay where they are for this iteration.
 *  6. The centroids are rounded to fp16; every one of the N vectors is then
 *     assigned to its nearest fp16 centroid, and the reconstruction is the
 *     fp16 codebook entry of each vector, cropped to rows*cols values.
 * Every random draw comes from one xoshiro256** stream seeded with the
 * tensor's seed, in this order: the sample, the initialization, the
 * revival subsets. The result is the same for any number of threads.
 *
 * How it is fast (km_private.h and the km_*.c files have the details and
 * the proofs). The result is always that of plain Lloyd's with
 * brute-force assignment on the same seed: identical assignments (exact ties to the lowest index),
 * codebook bytes and reconstruction; the parameter accel = none runs that
 * plain version (for tests and benchmarks), accel = auto (the default)
 * avoids looking at centroids that provably cannot win:
 *  - Every distance that decides is the reference's own float sum, so the
 *    fast paths agree bit for bit, and all pruning is strict: a centroid
 *    is skipped only when its distance is provably greater than the best
 *    one, never when it could be equal.
 *  - Lloyd's iterations after the first check each vector's previous
 *    centroid against that centroid's nearest neighbours among the
 *    centroids (Elkan's triangle inequality: no centroid farther than
 *    twice the vector's distance from its centroid can be nearer), with
 *    margins covering float rounding; about 1 vector in 1000 (block 2) to
 *    1 in 50 (block 4) needs a full search.
 *  - Block sizes 1 and 2 (the first iteration and the final pass over all
 *    vectors): an exact index, a k-d partition of the data's box whose
 *    leaves list the only centroids that can be nearest there, proved with
 *    bounds computed in the same float arithmetic; a vector costs a few
 *    branch-free steps and one block of 8 candidates.
 *  - Block sizes 3 and 4 (first iteration, final pass): the neighbour
 *    check from a guess, the nearest centroid of a k-d tree bucket or the
 *    vector's centroid in training.
 *  - The neighbour check runs eight neighbours at a time (SIMD) over a
 *    per-centroid copy of the neighbours' values; it may look at a few
 *    more neighbours than the proof needs, which cannot change the nearest
 *    one (the smallest distance, then the lowest index).
 *  - Brute force otherwise (block sizes above 4, small codebooks, vectors
 *    nothing certifies): AVX2 kernels, 8 centroids x 4 vectors per step.
 *  - The host's threads (host->parallel_for) run fixed chunks of vectors;
 *    sums are taken in a fixed order.
 * On 2 cores, a 2048x2048 matrix: High (b 2, K 2048) 0.25 s instead of
 * 1.2 s; Mid (b 4) about 3x faster than brute force (bench/kmeans_bench.c;
 * bench/matrix_bench.sh for the whole driver).
 *
 * Components:
 *   "codebook"  F16 [K, b], row-major; paper_bits = 16*K*b.
 *   "indices"   U8 [ceil(N*bits/8)] with bits = ceil(log2 K) (0 when K = 1,
 *               which is valid only for N = 1: a decoder refuses K = 1 with
 *               more vectors, so every stored index bit decodes to at most
 *               b values and a small file cannot claim a huge tensor):
 *               index i occupies bits [i*bits, (i+1)*bits) of the byte
 *               stream, least significant bit first, where bit j of the
 *               stream is bit (j % 8) of byte j / 8; the unused high bits of
 *               the last byte are written as zero (and ignored by the
 *               decoder). paper_bits = N*bits.
 * Attributes (decimal): "block_size" b, "centroids" K, "index_bits" bits,
 * "vectors" N.
 *
 * Parameters: block_size, centroids, iterations, stability, fit,
 * revival_sample as above; accel (auto | none): the search, for testing
 * and benchmarking only, since both give the same bytes; scale (max |
 * rms) and scale_group: gains per row or group on top of the core's row
 * scales (kmeans_gain.h: the component "gains" and the attributes
 * "scale" and "scale_group"; absent with the defaults, the paper's).
 * gptq (off | on | auto) and gptq_damp: for block_size 1 without gains,
 * the codebook trained as above, then every value re-assigned with GPTQ's
 * error feedback through the full Hessian (kmeans_gptq.c); the attribute
 * "feedback" = "gptq" is added. on needs that setting and a full Hessian;
 * auto applies it where both are there, else changes nothing.
 */
#include "plugin.h"

#include "kmeans_core.h"
#include "kmeans_gain.h"
#include "kmeans_gptq.h"

#include "col_gains.h"
#include "gptq.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    P_BLOCK_SIZE, P_CENTROIDS, P_ITERATIONS, P_STABILITY, P_FIT, P_REVIVAL_SAMPLE, P_ACCEL,
    P_SCALE, P_SCALE_GROUP, P_COL_EXPONENT, P_GPTQ, P_GPTQ_DAMP
};

static const char *const fit_choices[] = {"error", "shrink", NULL};
static const char *const scale_choices[] = {"max", "rms", NULL};
static const char *const accel_choices[] = {"auto", "none", NULL};

static const hvq_param_spec kmeans_params[] = {
    {"block_size", HVQ_PARAM_INT, "2", 1, KM_MAX_BLOCK, NULL,
     "values per vector b (consecutive in the flattened row-major matrix)"},
    {"centroids", HVQ_PARAM_INT, "2048", 2, KM_MAX_CENTROIDS, NULL,
     "codebook size K; indices take ceil(log2 K) bits"},
    {"iterations", HVQ_PARAM_INT, "15", 0, 1000, NULL, "Lloyd iterations"},
    {"stability", HVQ_PARAM_INT, "200", 1, 1000000, NULL,
     "training sample of min(vectors, K * stability) vectors, drawn without replacement"},
    {"fit", HVQ_PARAM_CHOICE, "error", 0, 0, fit_choices,
     "fewer vectors than centroids: error; shrink: K = largest power of two <= vectors/16 "
     "when vectors < 16*K"},
    {"revival_sample", HVQ_PARAM_INT, "10000", 1, 100000000, NULL,
     "random sample vectors a dead centroid may be moved to (the worst served one)"},
    {"accel", HVQ_PARAM_CHOICE, "auto", 0, 0, accel_choices,
     "nearest-centroid search: auto (exact index where it pays) or none (brute force); "
     "for testing and benchmarking: the output is identical"},
    {"scale", HVQ_PARAM_CHOICE, "max", 0, 0, scale_choices,
     "max: the core's row scales max|W| alone (the paper); rms: each row (or group) also "
     "divided by the RMS of its body, outliers left out, stored as fp16 gains"},
    {"scale_group", HVQ_PARAM_INT, "0", 0, 1048576, NULL,
     "columns per gain: 0 = one per row; G = one per G columns (with scale: max, the "
     "largest |value| of the group's body)"},
    {"col_exponent", HVQ_PARAM_FLOAT, "0", 0, 2, NULL,
     "column gains (H_j / mean H)^a before the row or group gains (activation-aware, as "
     "AWQ): columns with larger inputs get finer steps; 0 = none (the paper)"},
    {"gptq", HVQ_PARAM_CHOICE, "off", 0, 0, hvq_gptq_modes,
     "error feedback with the full Hessian (GPTQ) for block_size 1 without gains: off (the "
     "paper), on (the hessian stage must give a full matrix, e.g. calibrate with full: true), "
     "auto (when it does and the setting allows)"},
    {"gptq_damp", HVQ_PARAM_FLOAT, "0.01", 1e-6, 10, NULL,
     "GPTQ's damping: this times the mean of diag(H) added to the diagonal"},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

static void kmeans_progress(void *arg, uint64_t done, uint64_t total)
{
    hvq_ctx *ctx = arg;
    ctx->host->progress(ctx, done, total + 1);
}

static hvq_status nomem(hvq_ctx *ctx, const char *name)
{
    return ctx->host->error(ctx, HVQ_E_NOMEM, "tensor '%s': kmeans: out of memory", name);
}

/* One tensor's settings, from the parameters and its size. */
typedef struct km_setup {
    const char *name;
    int b, iterations, accel;
    uint32_t k;                  /* centroids trained (after the fit rule) */
    uint64_t revival, numel, n;  /* n vectors of b values */
    uint64_t m, packed_bytes;    /* sample vectors; bytes of the indices */
    unsigned bits;
} km_setup;

/* Reads the parameters and checks in (every value finite, sizes): *S. */
static hvq_status kmeans_setup(hvq_ctx *ctx, const hvq_params *params,
                               const hvq_cluster_input *in, km_setup *S)
{
    const hvq_host *H = ctx->host;
    const char *name = in->tensor_name ? in->tensor_name : "?";
    const int b = (int)params->values[P_BLOCK_SIZE].i;
    const uint32_t k_req = (uint32_t)params->values[P_CENTROIDS].i;
    const uint64_t stability = (uint64_t)params->values[P_STABILITY].i;
    const int shrink = strcmp(params->values[P_FIT].s, "shrink") == 0;
    *S = (km_setup){.name = name, .b = b,
                    .iterations = (int)params->values[P_ITERATIONS].i,
                    .accel = params->count > P_ACCEL &&
                                     strcmp(params->values[P_ACCEL].s, "none") == 0
                                 ? KM_ACCEL_NONE
                                 : KM_ACCEL_AUTO,
                    .revival = (uint64_t)params->values[P_REVIVAL_SAMPLE].i};
    if (b < 1 || b > KM_MAX_BLOCK || k_req < 1 || k_req > KM_MAX_CENTROIDS)
        return H->error(ctx, HVQ_E_INTERNAL, "kmeans: parameters out of range");
    if (in->cols && in->rows > UINT64_MAX / in->cols)
        return H->error(ctx, HVQ_E_INPUT, "tensor '%s': too large", name);
    const uint64_t numel = in->rows * in->cols;
    if (numel == 0)
        return H->error(ctx, HVQ_E_INPUT, "tensor '%s': kmeans needs at least one value", name);
    for (uint64_t i = 0; i < numel; i++)
        if (!isfinite(in->x[i]))
            return H->error(ctx, HVQ_E_INPUT, "tensor '%s': value %" PRIu64 " is not finite",
                            name, i);
    const uint64_t n = numel / (uint64_t)b + (numel % (uint64_t)b != 0);

    uint32_t k = km_fit_centroids(n, k_req, shrink);
    if (k == 0)
        return H->error(ctx, HVQ_E_INPUT,
                        "tensor '%s': %" PRIu64 " vector%s of %d value%s cannot train %" PRIu32
                        " centroids (use fit: shrink or fewer centroids)",
                        name, n, n == 1 ? "" : "s", b, b == 1 ? "" : "s", k_req);
    if (k != k_req)
        H->log(ctx, HVQ_LOG_WARN,
               "tensor '%s': %" PRIu64 " vector%s, centroids %" PRIu32 " -> %" PRIu32
               " (fit: shrink)",
               name, n, n == 1 ? "" : "s", k_req, k);
    S->k = k;
    S->numel = numel;
    S->n = n;
    S->bits = km_index_bits(k);
    S->m = n < (uint64_t)k * stability ? n : (uint64_t)k * stability;
    S->packed_bytes = km_packed_bytes(n, S->bits);
    if (S->packed_bytes == UINT64_MAX || S->m > SIZE_MAX / ((size_t)b * sizeof(float)) ||
        S->packed_bytes > (uint64_t)INT64_MAX)
        return H->error(ctx, HVQ_E_INPUT, "tensor '%s': too large", name);
    return HVQ_OK;
}

/* Trains the codebook on a sample of in's vectors (seeded by in->seed):
 * cent (k*b values); *guess (NULL, or n first guesses for the final pass:
 * each sample vector's centroid in training, none elsewhere). */
static hvq_status kmeans_train_codebook(hvq_ctx *ctx, const hvq_cluster_input *in,
                                        const km_setup *S, float *cent, uint32_t **guess)
{
    const int b = S->b;
    const uint64_t m = S->m, n = S->n, numel = S->numel;
    hvq_status st = HVQ_OK;
    km_rng rng;
    km_rng_seed(&rng, in->seed);
    uint32_t *labels = NULL;
    uint64_t *pos = malloc((size_t)m * sizeof *pos + 1);
    float *sample = malloc((size_t)m * (size_t)b * sizeof *sample);
    *guess = NULL;
    if (!pos || !sample || km_sample(&rng, n, m, pos)) {
        st = nomem(ctx, S->name);
        goto out;
    }
    /* The sample, with the padding of the last vector. */
    for (uint64_t s = 0; s < m; s++) {
        uint64_t p = pos[s] * (uint64_t)b;
        uint64_t cnt = numel - p < (uint64_t)b ? numel - p : (uint64_t)b;
        float *v = sample + s * (uint64_t)b;
        memcpy(v, in->x + p, (size_t)cnt * sizeof *v);
        for (uint64_t j = cnt; j < (uint64_t)b; j++)
            v[j] = 0.0f;
    }
    /* Each sample vector's centroid in training: first guesses for the
     * final pass's guided search (block sizes where it is used). */
    if (S->accel != KM_ACCEL_NONE && b > 2 && S->iterations > 0 &&
        n <= SIZE_MAX / sizeof **guess) {
        labels = malloc((size_t)m * sizeof *labels + 1);
        *guess = malloc((size_t)n * sizeof **guess);
        if (!labels || !*guess) {
            free(labels);
            free(*guess);
            labels = *guess = NULL; /* (not needed for the result) */
        }
    }
    km_train_opts o = {.b = b, .k = S->k, .iterations = S->iterations, .revival = S->revival,
                       .ctx = ctx, .accel = S->accel, .labels = labels,
                       .progress = kmeans_progress, .progress_arg = ctx};
    if (km_train(sample, m, &o, &rng, cent)) {
        st = nomem(ctx, S->name);
        goto out;
    }
    if (*guess) {
        memset(*guess, 0xff, (size_t)n * sizeof **guess);
        for (uint64_t s = 0; s < m; s++)
            (*guess)[pos[s]] = labels[s];
    }
out:
    free(labels);
    free(pos);
    free(sample);
    return st;
}

/* The component "codebook" (F16) from cent, and cent = the values it
 * decodes to. */
static hvq_status kmeans_store_codebook(hvq_ctx *ctx, hvq_encoded *enc, const km_setup *S,
                                        float *cent)
{
    const hvq_host *H = ctx->host;
    int64_t cshape[2] = {(int64_t)S->k, (int64_t)S->b};
    hvq_component *cbc = H->enc_add(ctx, enc, "codebook", HVQ_DTYPE_F16, 2, cshape,
                                    (uint64_t)S->k * (uint64_t)S->b * 16);
    if (!cbc)
        return HVQ_E_NOMEM;
    size_t kb = (size_t)S->k * (size_t)S->b;
    hvq_status st;
    if ((st = H->convert(ctx, HVQ_DTYPE_F16, cbc->data, HVQ_DTYPE_F32, cent, kb)) != HVQ_OK ||
        (st = H->convert(ctx, HVQ_DTYPE_F32, cent, HVQ_DTYPE_F16, cbc->data, kb)) != HVQ_OK)
        return st;
    for (size_t i = 0; i < kb; i++)
        if (!isfinite(cent[i]))
            return H->error(ctx, HVQ_E_INPUT,
                            "tensor '%s': a centroid value exceeds the fp16 range of the "
                            "codebook",
                            S->name);
    return HVQ_OK;
}

/* The attributes "block_size", "centroids", "index_bits" and "vectors". */
static hvq_status kmeans_attrs(hvq_ctx *ctx, hvq_encoded *enc, const km_setup *S)
{
    const char *const keys[4] = {"block_size", "centroids", "index_bits", "vectors"};
    const uint64_t vals[4] = {(uint64_t)S->b, S->k, S->bits, S->n};
    hvq_status st = HVQ_OK;
    for (int i = 0; i < 4 && st == HVQ_OK; i++) {
        char buf[32];
        snprintf(buf, sizeof buf, "%" PRIu64, vals[i]);
        st = ctx->host->enc_attr(ctx, enc, keys[i], buf);
    }
    return st;
}

static hvq_status kmeans_encode_body(hvq_ctx *ctx, const hvq_params *params,
                                     const hvq_cluster_input *in, const double *u,
                                     float *recon, hvq_encoded *enc)
{
    const hvq_host *H = ctx->host;
    km_setup S;
    hvq_status st = kmeans_setup(ctx, params, in, &S);
    if (st != HVQ_OK)
        return st;
    km_codebook cb = {0};
    uint32_t *guess = NULL;
    float *cent = malloc((size_t)S.k * (size_t)S.b * sizeof *cent);
    if (!cent) {
        st = nomem(ctx, S.name);
        goto out;
    }
    if ((st = kmeans_train_codebook(ctx, in, &S, cent, &guess)) != HVQ_OK ||
        (st = kmeans_store_codebook(ctx, enc, &S, cent)) != HVQ_OK)
        goto out;
    int64_t ishape[1] = {(int64_t)S.packed_bytes};
    hvq_component *ic = H->enc_add(ctx, enc, "indices", HVQ_DTYPE_U8, 1, ishape, S.n * S.bits);
    if (!ic) {
        st = HVQ_E_NOMEM;
        goto out;
    }
    if (km_codebook_init(&cb, S.b, S.k)) {
        st = nomem(ctx, S.name);
        goto out;
    }
    km_codebook_set(&cb, cent);
    km_encode_all(in->x, S.numel, &cb, cent, S.bits, ic->data, recon, ctx, S.accel, guess);
    if (u && km_gptq_scalar(ctx, in, cent, S.k, S.bits, u, ic->data, recon)) {
        st = nomem(ctx, S.name);
        goto out;
    }
    H->progress(ctx, (uint64_t)S.iterations + 1, (uint64_t)S.iterations + 1);
    if (u && (st = H->enc_attr(ctx, enc, "feedback", "gptq")) != HVQ_OK)
        goto out;
    st = kmeans_attrs(ctx, enc, &S);
out:
    km_codebook_free(&cb);
    free(guess);
    free(cent);
    return st;
}

/* The body with gains (scale: rms, a scale_group or col_exponent): x * c /
 * g clustered, the reconstruction multiplied back by g and divided by c. */
static hvq_status kmeans_encode(hvq_ctx *ctx, const hvq_params *params,
                                const hvq_cluster_input *in, float *recon, hvq_encoded *enc)
{
    const hvq_host *H = ctx->host;
    int mode = params->count > P_SCALE && strcmp(params->values[P_SCALE].s, "rms") == 0
                   ? KM_GAIN_RMS
                   : KM_GAIN_MAX;
    uint64_t group = params->count > P_SCALE_GROUP ? (uint64_t)params->values[P_SCALE_GROUP].i
                                                   : 0;
    double alpha = params->count > P_COL_EXPONENT ? params->values[P_COL_EXPONENT].f : 0.0;
    const char *gptq = params->count > P_GPTQ ? params->values[P_GPTQ].s : "off";
    int plain = mode == KM_GAIN_MAX && group == 0 && alpha == 0.0;
    if (strcmp(gptq, "on") == 0 && (!plain || params->values[P_BLOCK_SIZE].i != 1))
        return H->error(ctx, HVQ_E_INPUT,
                        "tensor '%s': kmeans gptq: on needs block_size 1 and no gains "
                        "(scale: max, scale_group: 0, col_exponent: 0); use gptq: auto to "
                        "apply it only where it can",
                        in->tensor_name);
    if (plain) {
        double *u = NULL;
        hvq_status st = HVQ_OK;
        if (params->values[P_BLOCK_SIZE].i == 1)
            st = hvq_gptq_prepare(ctx, in, gptq, params->values[P_GPTQ_DAMP].f, &u);
        if (st == HVQ_OK)
            st = kmeans_encode_body(ctx, params, in, u, recon, enc);
        free(u);
        return st;
    }
    if (in->cols && in->rows > UINT64_MAX / in->cols / sizeof(float))
        return H->error(ctx, HVQ_E_INPUT, "tensor '%s': too large", in->tensor_name);
    uint64_t ng = km_gain_groups(in->cols, group), numel = in->rows * in->cols;
    float *g = malloc((size_t)(in->rows * ng) * sizeof *g + 1);
    float *xs = malloc((size_t)numel * sizeof *xs + 1);
    float *cg = alpha > 0.0 ? malloc((size_t)in->cols * sizeof *cg + 1) : NULL;
    hvq_status st = g && xs && (cg || alpha == 0.0) ? HVQ_OK : nomem(ctx, in->tensor_name);
    if (st == HVQ_OK && cg)
        hvq_col_gains(ctx, in->hessian, in->cols, alpha, cg);
    if (st == HVQ_OK)
        st = km_gain_apply(ctx, in, mode, group, cg, g, xs);
    hvq_cluster_input scaled = *in;
    scaled.x = xs;
    if (st == HVQ_OK)
        st = kmeans_encode_body(ctx, params, &scaled, NULL, recon, enc);
    int64_t shape[2] = {(int64_t)in->rows, (int64_t)ng};
    hvq_component *gc = NULL;
    if (st == HVQ_OK &&
        !(gc = H->enc_add(ctx, enc, "gains", HVQ_DTYPE_F16, 2, shape, 16 * in->rows * ng)))
        st = HVQ_E_NOMEM;
    if (st == HVQ_OK)
        st = H->convert(ctx, HVQ_DTYPE_F16, gc->data, HVQ_DTYPE_F32, g, (size_t)(in->rows * ng));
    if (st == HVQ_OK && cg)
        st = hvq_col_gains_store(ctx, enc, cg, in->cols, params->values[P_COL_EXPONENT].s);
    if (st == HVQ_OK) {
        km_gain_scale(recon, in->rows, in->cols, ng == 1 ? 0 : group, g, cg);
        char buf[32];
        snprintf(buf, sizeof buf, "%" PRIu64, ng == 1 ? (uint64_t)0 : group);
        st = H->enc_attr(ctx, enc, "scale", mode == KM_GAIN_RMS ? "rms" : "max");
        if (st == HVQ_OK)
            st = H->enc_attr(ctx, enc, "scale_group", buf);
    }
    free(g);
    free(xs);
    free(cg);
    return st;
}

/* A decimal attribute in [lo, hi]: digits only, no sign, no overflow. */
static hvq_status attr_u64(hvq_ctx *ctx, const hvq_encoded *enc, const char *key, uint64_t lo,
                           uint64_t hi, uint64_t *out)
{
    const hvq_host *H = ctx->host;
    const char *text = H->enc_attr_get(enc, key), *s = text;
    if (!text)
        return H->error(ctx, HVQ_E_INPUT, "kmeans: attribute %s missing", key);
    uint64_t v = 0;
    int ok = *s != '\0';
    for (; ok && *s; s++) {
        if (*s < '0' || *s > '9' || v > (UINT64_MAX - 9) / 10)
            ok = 0;
        else
            v = v * 10 + (uint64_t)(*s - '0');
    }
    if (!ok || v < lo || v > hi)
        return H->error(ctx, HVQ_E_INPUT,
                        "kmeans: attribute %s='%.40s' is not a number in %" PRIu64 "..%" PRIu64,
                        key, text, lo, hi);
    *out = v;
    return HVQ_OK;
}

/* The gains of an encoding with scale modes (none without the attribute
 * "scale"): *group_out gets the group size (0: per row). */
static hvq_status gains_layout(hvq_ctx *ctx, const hvq_encoded *enc, uint64_t rows,
                               uint64_t cols, uint64_t *group_out)
{
    const hvq_host *H = ctx->host;
    const char *mode = H->enc_attr_get(enc, "scale");
    uint64_t group = 0;
    hvq_status st;
    if (!mode) {
        if (H->enc_get(enc, "gains") || H->enc_get(enc, "col_gains"))
            return H->error(ctx, HVQ_E_INPUT, "kmeans: gains without the attribute scale");
        if (group_out)
            *group_out = UINT64_MAX;
        return HVQ_OK;
    }
    if (strcmp(mode, "max") != 0 && strcmp(mode, "rms") != 0)
        return H->error(ctx, HVQ_E_INPUT, "kmeans: unknown scale '%.40s'", mode);
    if ((st = attr_u64(ctx, enc, "scale_group", 0, 1048576, &group)) != HVQ_OK)
        return st;
    uint64_t ng = km_gain_groups(cols, group);
    const hvq_component *gc = H->enc_get(enc, "gains");
    if (!gc || gc->dtype != HVQ_DTYPE_F16 || gc->ndim != 2 || gc->shape[0] != (int64_t)rows ||
        gc->shape[1] != (int64_t)ng || gc->nbytes != 2 * rows * ng)
        return H->error(ctx, HVQ_E_INPUT,
                        "kmeans: gains must be F16 [%" PRIu64 ", %" PRIu64 "]", rows, ng);
    const hvq_component *cc = H->enc_get(enc, "col_gains");
    if (!H->enc_attr_get(enc, "col_exponent") != !cc)
        return H->error(ctx, HVQ_E_INPUT, "kmeans: col_gains and col_exponent go together");
    if (cc && (cc->dtype != HVQ_DTYPE_F16 || cc->ndim != 1 || cc->shape[0] != (int64_t)cols ||
               cc->nbytes != 2 * cols))
        return H->error(ctx, HVQ_E_INPUT, "kmeans: col_gains must be F16 [%" PRIu64 "]", cols);
    if (group_out)
        *group_out = ng == 1 ? 0 : group;
    return HVQ_OK;
}

/* The attributes and component shapes of an encoding of a rows x cols
 * matrix, checked without reading component data (cluster_check; the
 * first step of cluster_decode). */
static hvq_status kmeans_layout(hvq_ctx *ctx, const hvq_encoded *enc, uint64_t rows,
                                uint64_t cols, uint64_t *b_out, uint64_t *k_out,
                                uint64_t *bits_out, uint64_t *numel_out)
{
    const hvq_host *H = ctx->host;
    uint64_t b, k, bits, n;
    hvq_status st;
    if ((st = attr_u64(ctx, enc, "block_size", 1, KM_MAX_BLOCK, &b)) ||
        (st = attr_u64(ctx, enc, "centroids", 1, KM_MAX_CENTROIDS, &k)) ||
        (st = attr_u64(ctx, enc, "index_bits", 0, 16, &bits)) ||
        (st = attr_u64(ctx, enc, "vectors", 1, UINT64_MAX, &n)))
        return st;
    if (bits != km_index_bits(k))
        return H->error(ctx, HVQ_E_INPUT,
                        "kmeans: index_bits %" PRIu64 " does not match %" PRIu64 " centroids",
                        bits, k);
    /* One centroid stores no index bits: only fit: shrink on a single
     * vector writes it. Anything else would let a few bytes claim a
     * tensor of any size; with 2 centroids or more every vector costs a
     * stored bit. */
    if (k == 1 && n != 1)
        return H->error(ctx, HVQ_E_INPUT,
                        "kmeans: 1 centroid (0-bit indices) is only valid for a single vector, "
                        "not %" PRIu64,
                        n);
    if (cols && rows > UINT64_MAX / cols)
        return H->error(ctx, HVQ_E_INPUT, "kmeans: a %" PRIu64 "x%" PRIu64
                        " matrix is too large", rows, cols);
    uint64_t numel = rows * cols;
    if (numel == 0 || n != numel / b + (numel % b != 0))
        return H->error(ctx, HVQ_E_INPUT,
                        "kmeans: %" PRIu64 " vectors of %" PRIu64
                        " values do not make a %" PRIu64 "x%" PRIu64 " matrix",
                        n, b, rows, cols);
    const hvq_component *cbc = H->enc_get(enc, "codebook"), *ic = H->enc_get(enc, "indices");
    uint64_t packed = km_packed_bytes(n, (unsigned)bits);
    if (!cbc || !ic)
        return H->error(ctx, HVQ_E_INPUT, "kmeans: component codebook or indices missing");
    if (cbc->dtype != HVQ_DTYPE_F16 || cbc->ndim != 2 || cbc->shape[0] != (int64_t)k ||
        cbc->shape[1] != (int64_t)b || cbc->nbytes != k * b * 2)
        return H->error(ctx, HVQ_E_INPUT,
                        "kmeans: codebook must be F16 [%" PRIu64 ", %" PRIu64
                        "], got %s with %d dimensions and %" PRIu64 " bytes",
                        k, b, H->dtype_name(cbc->dtype), cbc->ndim, cbc->nbytes);
    if (ic->dtype != HVQ_DTYPE_U8 || ic->ndim != 1 || ic->nbytes != packed)
        return H->error(ctx, HVQ_E_INPUT,
                        "kmeans: indices must be U8 [%" PRIu64
                        "], got %s with %d dimensions and %" PRIu64 " bytes",
                        packed, H->dtype_name(ic->dtype), ic->ndim, ic->nbytes);
    if ((st = gains_layout(ctx, enc, rows, cols, NULL)) != HVQ_OK)
        return st;
    *b_out = b;
    *k_out = k;
    *bits_out = bits;
    *numel_out = numel;
    return HVQ_OK;
}

static hvq_status kmeans_check(hvq_ctx *ctx, const hvq_encoded *enc, uint64_t rows,
                               uint64_t cols)
{
    uint64_t b, k, bits, numel;
    return kmeans_layout(ctx, enc, rows, cols, &b, &k, &bits, &numel);
}

/* Decode's last step with scale modes: recon times the stored gains. */
static hvq_status apply_gains(hvq_ctx *ctx, const hvq_encoded *enc, uint64_t rows,
                              uint64_t cols, float *recon)
{
    const hvq_host *H = ctx->host;
    uint64_t group;
    hvq_status st = gains_layout(ctx, enc, rows, cols, &group);
    if (st != HVQ_OK || group == UINT64_MAX)
        return st;
    const hvq_component *gc = H->enc_get(enc, "gains"), *cc = H->enc_get(enc, "col_gains");
    size_t n = (size_t)(gc->nbytes / 2), nc = cc ? (size_t)cols : 0;
    float *g = malloc((n + nc) * sizeof *g + 1);
    if (!g || !gc->data || (cc && !cc->data)) {
        free(g);
        return H->error(ctx, g ? HVQ_E_INPUT : HVQ_E_NOMEM,
                        g ? "kmeans: gains have no data" : "kmeans: out of memory");
    }
    st = H->convert(ctx, HVQ_DTYPE_F32, g, HVQ_DTYPE_F16, gc->data, n);
    if (st == HVQ_OK && cc)
        st = H->convert(ctx, HVQ_DTYPE_F32, g + n, HVQ_DTYPE_F16, cc->data, nc);
    for (size_t i = 0; st == HVQ_OK && i < n + nc; i++)
        if (!(g[i] >= 0.0f) || !isfinite(g[i]) || (i >= n && g[i] == 0.0f))
            st = H->error(ctx, HVQ_E_INPUT, "kmeans: gain %zu is negative, zero or not finite",
                          i);
    if (st == HVQ_OK)
        km_gain_scale(recon, rows, cols, group, g, cc ? g + n : NULL);
    free(g);
    return st;
}

static hvq_status kmeans_decode(hvq_ctx *ctx, const hvq_encoded *enc, uint64_t rows,
                                uint64_t cols, float *recon)
{
    const hvq_host *H = ctx->host;
    uint64_t b, k, bits, numel;
    hvq_status st = kmeans_layout(ctx, enc, rows, cols, &b, &k, &bits, &numel);
    if (st != HVQ_OK)
        return st;
    const hvq_component *cbc = H->enc_get(enc, "codebook"), *ic = H->enc_get(enc, "indices");
    if (!cbc->data || (ic->nbytes && !ic->data))
        return H->error(ctx, HVQ_E_INPUT, "kmeans: component codebook or indices has no data");

    float *cv = malloc((size_t)(k * b) * sizeof *cv);
    if (!cv)
        return H->error(ctx, HVQ_E_NOMEM, "kmeans: out of memory");
    if ((st = H->convert(ctx, HVQ_DTYPE_F32, cv, HVQ_DTYPE_F16, cbc->data, (size_t)(k * b))))
        goto out;
    for (uint64_t i = 0; i < k * b; i++)
        if (!isfinite(cv[i])) {
            st = H->error(ctx, HVQ_E_INPUT, "kmeans: codebook value %" PRIu64 " is not finite",
                          i);
            goto out;
        }
    uint64_t bad = km_decode(ic->data, (unsigned)bits, (uint32_t)k, cv, (int)b, numel, recon, ctx);
    if (bad != UINT64_MAX) {
        /* the index again, for the message (the stream is valid up to it) */
        uint32_t q;
        const uint8_t *src = ic->data;
        uint64_t at = bad * bits;
        q = 0;
        for (unsigned t = 0; t < bits; t++, at++)
            q |= (uint32_t)((src[at / 8] >> (at % 8)) & 1u) << t;
        st = H->error(ctx, HVQ_E_INPUT,
                      "kmeans: index %" PRIu32 " of vector %" PRIu64
                      " is out of range (%" PRIu64 " centroids)",
                      q, bad, k);
        goto out;
    }
    st = apply_gains(ctx, enc, rows, cols, recon);
out:
    free(cv);
    return st;
}

static const hvq_plugin kmeans_plugin = {
    HVQ_PLUGIN_HEADER,
    .kinds = HVQ_KIND_CLUSTERER,
    .name = "kmeans",
    .version = "1.3.0",
    .summary = "the paper's k-means vector quantization with dead-unit revival (HAS-VQ)",
    .license = "MIT",
    .params = kmeans_params,
    .cluster_encode = kmeans_encode,
    .cluster_decode = kmeans_decode,
    .cluster_check = kmeans_check,
};

HVQ_REGISTER_PLUGIN(kmeans_plugin)
