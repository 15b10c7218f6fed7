/* The driver: the flow between stages.
 *
 * For every tensor of the source, in file order:
 *   pass-through tensors go to the writer untouched;
 *   selected tensors are converted to float32 and checked (finite values),
 *   get their Hessian diagonal, are normalized per row (s_i = max_j |W_ij|,
 *   stored as fp16), scored by the importance plugin, split into the top-k
 *   sparse set Omega and the body B, quantized by the clusterer, corrected
 *   by the residual coder, reconstructed (W_hat = (Q(B) + S) * s), measured,
 *   and handed to the writer.
 * Only one tensor is in memory at a time (plus what the source maps). All
 * files are written through atomic outputs and renamed into place only at
 * the end of a successful run.
 */
#include "config.h"

#include "driver.h"

#include "driver_int.h"
#include "ctx.h"
#include "dtype.h"
#include "parallel.h"
#include "report.h"
#include "util.h"

#include <libgen.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

volatile sig_atomic_t hvq_interrupted = 0;

const char *const hvq_time_stage_names[HVQ_TIME_STAGES] = {
    "convert", "hessian", "normalize", "importance", "clusterer", "residual", "metrics",
    "writer",
};

double hvq_peak_rss_mib(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0.0;
    return (double)ru.ru_maxrss / 1024.0; /* kilobytes on Linux and the BSDs */
}

/* ---- seeds and top-k ---------------------------------------------------- */

static uint64_t splitmix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

uint64_t hvq_tensor_seed(uint64_t seed, const char *name)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * 0x100000001b3ull;
    return splitmix64(seed ^ splitmix64(h));
}

/* Top-k by radix select. A score's order-preserving key: the float's bits
 * with the sign bit flipped for positives and every bit flipped for
 * negatives, so keys compare as unsigned integers exactly as the scores
 * compare as floats (-0 is folded onto +0 first: they are equal scores).
 * Three digits of 11, 11 and 10 bits narrow down the key t of the k-th best
 * entry: fewer than k entries have a key > t and at least k have >= t.
 * Every entry above t is taken, and of those equal to t the first
 * k - count(> t) in index order, so ties go to the lower index.
 *
 * The work is cut into chunks of TOPK_CHUNK entries, each with histograms
 * of its own (integers: their sum is the same in any order). The first
 * pass over the scores histograms the top digit; the keys of the entries
 * whose top digit is the one holding the k-th best (usually a few percent)
 * are then gathered chunk by chunk and the two lower digits are found on
 * those alone. When that bin holds more than an eighth of all entries (a
 * degenerate tensor, e.g. all scores equal) the lower digits are
 * histogrammed over the whole array instead, so memory stays bounded. The histograms give every chunk its count of entries
 * above and at t, hence its place in the output, and a last pass writes
 * the positions: ascending, with no n-sized index array. */
#define TOPK_CHUNK ((uint64_t)1 << 16)
#define TOPK_BINS 2048u

static inline uint32_t score_key(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) == 0)
        u = 0;
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

static inline float key_score(uint32_t key)
{
    uint32_t u = (key & 0x80000000u) ? (key & 0x7fffffffu) : ~key;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

typedef struct topk_job {
    const float *score;
    uint32_t *hist;          /* n_chunks x TOPK_BINS */
    uint64_t *first_nan;     /* per chunk: the first NaN (first pass), then
                                whether the gather's count was off */
    int digit;               /* 1 or 2 in the later passes */
    uint32_t prefix;         /* the key bits above the digit */
    uint32_t b0;             /* the top digit of the k-th best */
    float lo, hi;            /* its scores: lo <= v <= hi */
    uint32_t *cand_key;      /* keys of the gathered candidates, chunk by chunk */
    uint64_t *cand_at;       /* per chunk: first candidate (n_chunks + 1) */
    uint64_t *n_gt, *n_eq;   /* per chunk */
    uint64_t *out_at, *eq_take; /* per chunk: first output slot, ties to take */
    float tf;                /* the threshold score */
    uint64_t *pos;
} topk_job;

static const int topk_shift[3] = {21, 10, 0};
static const uint32_t topk_mask[3] = {0x7ffu, 0x7ffu, 0x3ffu};

/* The top digit's histogram, four interleaved copies so that runs of equal
 * digits do not wait on each other's increments. */
static void topk_hist0(void *arg, uint64_t chunk, uint64_t begin, uint64_t end)
{
    topk_job *j = arg;
    uint32_t *h = j->hist + chunk * TOPK_BINS;
    uint32_t part[4][TOPK_BINS];
    memset(part, 0, sizeof part);
    const float *s = j->score;
    uint64_t nan_at = UINT64_MAX, i = begin;
    for (; i + 4 <= end; i += 4) {
        uint32_t u[4];
        memcpy(u, &s[i], 16);
        int bad = 0;
        for (int l = 0; l < 4; l++)
            bad |= (u[l] & 0x7fffffffu) > 0x7f800000u;
        if (bad)
            break;
        for (int l = 0; l < 4; l++)
            part[l][score_key(s[i + l]) >> 21]++;
    }
    for (; i < end; i++) {
        uint32_t u;
        memcpy(&u, &s[i], 4);
        if ((u & 0x7fffffffu) > 0x7f800000u) {
            nan_at = i;
            break;
        }
        part[0][score_key(s[i]) >> 21]++;
    }
    for (uint32_t b = 0; b < TOPK_BINS; b++)
        h[b] = part[0][b] + part[1][b] + part[2][b] + part[3][b];
    j->first_nan[chunk] = nan_at;
}

/* A lower digit's histogram over the whole chunk (entries matching the
 * prefix). */
static void topk_hist_full(void *arg, uint64_t chunk, uint64_t begin, uint64_t end)
{
    topk_job *j = arg;
    uint32_t *h = j->hist + chunk * TOPK_BINS;
    memset(h, 0, TOPK_BINS * sizeof *h);
    int shift = topk_shift[j->digit], hi = topk_shift[j->digit - 1];
    uint32_t mask = topk_mask[j->digit];
    for (uint64_t i = begin; i < end; i++) {
        uint32_t key = score_key(j->score[i]);
        if ((key >> hi) == j->prefix)
            h[(key >> shift) & mask]++;
    }
}

/* The same over the chunk's gathered candidates. */
static void topk_hist_cand(void *arg, uint64_t chunk, uint64_t begin, uint64_t end)
{
    (void)begin;
    (void)end;
    topk_job *j = arg;
    uint32_t *h = j->hist + chunk * TOPK_BINS;
    memset(h, 0, TOPK_BINS * sizeof *h);
    int shift = topk_shift[j->digit], hi = topk_shift[j->digit - 1];
    uint32_t mask = topk_mask[j->digit];
    for (uint64_t c = j->cand_at[chunk]; c < j->cand_at[chunk + 1]; c++) {
        uint32_t key = j->cand_key[c];
        if ((key >> hi) == j->prefix)
            h[(key >> shift) & mask]++;
    }
}

/* The keys of the chunk's entries in the top bin b0, in index order. The
 * bin is a range of scores, lo <= v <= hi, so the test is two float
 * comparisons; every score is stored branch free into a small buffer (a
 * candidate is a coin flip for the branch predictor), the count advancing
 * only past candidates, and their keys are written out per block. */
static void topk_gather(void *arg, uint64_t chunk, uint64_t begin, uint64_t end)
{
    topk_job *j = arg;
    uint64_t o = j->cand_at[chunk];
    const float *s = j->score;
    float lo = j->lo, hi = j->hi;
    float buf[256];
    for (uint64_t i0 = begin; i0 < end; i0 += 256) {
        uint64_t i1 = end - i0 > 256 ? i0 + 256 : end;
        size_t m = 0;
        for (uint64_t i = i0; i < i1; i++) {
            float v = s[i];
            buf[m] = v;
            m += (v >= lo) & (v <= hi);
        }
        if (m > j->cand_at[chunk + 1] - o) { /* cannot happen: the bin was counted */
            j->first_nan[chunk] = 1;
            return;
        }
        for (size_t q = 0; q < m; q++)
            j->cand_key[o + q] = score_key(buf[q]);
        o += m;
    }
    j->first_nan[chunk] = o != j->cand_at[chunk + 1];
}

static void topk_emit(void *arg, uint64_t chunk, uint64_t begin, uint64_t end)
{
    topk_job *j = arg;
    uint64_t o = j->out_at[chunk], take = j->eq_take[chunk];
    uint64_t left = j->n_gt[chunk] + take;
    const float *s = j->score;
    float tf = j->tf;
    for (uint64_t i = begin; i < end && left; i++) {
        float v = s[i];
        if (v >= tf) {
            if (v > tf) {
                j->pos[o++] = i;
                left--;
            } else if (take) {
                j->pos[o++] = i;
                take--;
                left--;
            }
        }
    }
}

/* Sums the chunks' histograms of a digit, finds the bin holding the k-th
 * best (greater: entries known to rank above the prefix so far, updated),
 * and adds to each chunk's n_gt its entries in the bins above. */
static uint32_t topk_choose(topk_job *j, uint64_t nc, int digit, uint64_t k, uint64_t *greater)
{
    uint32_t bins = topk_mask[digit] + 1;
    uint64_t total[TOPK_BINS];
    memset(total, 0, sizeof total);
    for (uint64_t c = 0; c < nc; c++) {
        const uint32_t *h = j->hist + c * TOPK_BINS;
        for (uint32_t b = 0; b < bins; b++)
            total[b] += h[b];
    }
    uint32_t b = bins;
    while (b > 0) {
        b--;
        if (*greater + total[b] >= k)
            break;
        *greater += total[b];
    }
    for (uint64_t c = 0; c < nc; c++) {
        const uint32_t *h = j->hist + c * TOPK_BINS;
        uint64_t above = 0;
        for (uint32_t a = b + 1; a < bins; a++)
            above += h[a];
        j->n_gt[c] += above;
        if (digit == 2)
            j->n_eq[c] = h[b];
    }
    return b;
}

/* The keys of the entries in the top bin b0 (n_cand of them), gathered
 * so that the lower digits' passes read those only (*gathered; not when
 * out of memory: the passes then read every score). */
static hvq_status topk_gather_bin(hvq_ctx *ctx, topk_job *j, uint64_t n, uint64_t nc,
                                  uint64_t n_cand, int *gathered)
{
    /* Bin b0 as scores lo <= v <= hi: its keys [b0 << 21, (b0 + 1) << 21)
     * clipped to those of -inf and +inf (the bins beyond hold NaNs
     * only: never chosen, there are none). Key 0x7fffffff would be -0,
     * folded onto +0 in the next bin: the bin ends one key earlier. */
    uint32_t lo_key = j->b0 << 21, hi_key = ((j->b0 + 1) << 21) - 1; /* wraps at the top */
    const uint32_t key_ninf = score_key(-INFINITY), key_pinf = score_key(INFINITY);
    hvq_status st = HVQ_OK;
    if (lo_key < key_ninf)
        lo_key = key_ninf;
    if (hi_key > key_pinf)
        hi_key = key_pinf;
    if (hi_key == 0x7fffffffu)
        hi_key--;
    j->lo = key_score(lo_key);
    j->hi = key_score(hi_key);
    j->cand_key = malloc((size_t)(n_cand ? n_cand : 1) * sizeof *j->cand_key);
    *gathered = j->cand_key != NULL;
    if (*gathered) {
        hvq_parallel_for(ctx, n, TOPK_CHUNK, topk_gather, j);
        for (uint64_t c = 0; c < nc; c++)
            if (j->first_nan[c]) /* here: the chunk's count differed */
                st = hvq_error(ctx, HVQ_E_INTERNAL, "top-k: bin count mismatch");
    }
    return st;
}

/* With the threshold key in j->prefix (greater entries above it): each
 * chunk's first output slot and ties to take, then the positions. */
static hvq_status topk_place(hvq_ctx *ctx, topk_job *j, uint64_t n, uint64_t nc, uint64_t k,
                             uint64_t greater)
{
    j->tf = key_score(j->prefix);
    uint64_t need = k - greater, at = 0;
    for (uint64_t c = 0; c < nc; c++) {
        uint64_t take = j->n_eq[c] < need ? j->n_eq[c] : need;
        need -= take;
        j->eq_take[c] = take;
        j->out_at[c] = at;
        at += j->n_gt[c] + take;
    }
    if (at != k || need != 0)
        return hvq_error(ctx, HVQ_E_INTERNAL, "top-k: selected %llu of %llu",
                         (unsigned long long)at, (unsigned long long)k);
    hvq_parallel_for(ctx, n, TOPK_CHUNK, topk_emit, j);
    return HVQ_OK;
}

hvq_status hvq_top_k(hvq_ctx *ctx, const float *score, uint64_t n, uint64_t k, uint64_t *pos)
{
    if (k == 0)
        return HVQ_OK;
    if (k > n)
        return hvq_error(ctx, HVQ_E_INTERNAL, "top-k: k %llu > n %llu",
                         (unsigned long long)k, (unsigned long long)n);
    uint64_t nc = hvq_parallel_chunks(n, TOPK_CHUNK);
    topk_job j = {.score = score, .pos = pos};
    j.hist = malloc((size_t)nc * TOPK_BINS * sizeof *j.hist);
    j.first_nan = calloc((size_t)nc * 6 + 1, sizeof(uint64_t));
    if (!j.hist || !j.first_nan) {
        free(j.hist);
        free(j.first_nan);
        return hvq_error(ctx, HVQ_E_NOMEM, "out of memory (top-k of %llu scores)",
                         (unsigned long long)n);
    }
    j.n_gt = j.first_nan + nc;
    j.n_eq = j.n_gt + nc;
    j.out_at = j.n_eq + nc;
    j.eq_take = j.out_at + nc;
    j.cand_at = j.eq_take + nc; /* nc + 1 */

    hvq_status st = HVQ_OK;
    hvq_parallel_for(ctx, n, TOPK_CHUNK, topk_hist0, &j);
    for (uint64_t c = 0; c < nc; c++)
        if (j.first_nan[c] != UINT64_MAX) {
            st = hvq_error(ctx, HVQ_E_INPUT, "importance score is NaN at entry %llu",
                           (unsigned long long)j.first_nan[c]);
            break;
        }
    if (st != HVQ_OK)
        goto done;
    uint64_t greater = 0;
    j.b0 = topk_choose(&j, nc, 0, k, &greater);
    uint64_t n_cand = 0;
    for (uint64_t c = 0; c < nc; c++) {
        j.cand_at[c] = n_cand;
        n_cand += j.hist[c * TOPK_BINS + j.b0];
    }
    j.cand_at[nc] = n_cand;
    int gathered = 0;
    if (n_cand <= n / 8 && (st = topk_gather_bin(ctx, &j, n, nc, n_cand, &gathered)) != HVQ_OK)
        goto done;
    j.prefix = j.b0;
    for (int digit = 1; digit <= 2; digit++) {
        j.digit = digit;
        if (gathered)
            hvq_parallel_for(ctx, nc, 1, topk_hist_cand, &j);
        else
            hvq_parallel_for(ctx, n, TOPK_CHUNK, topk_hist_full, &j);
        uint32_t b = topk_choose(&j, nc, digit, k, &greater);
        j.prefix = (j.prefix << (digit == 1 ? 11 : 10)) | b;
    }
    st = topk_place(ctx, &j, n, nc, k, greater);
done:
    free(j.cand_key);
    free(j.hist);
    free(j.first_nan);
    return st;
}

/* ---- progress ------------------------------------------------------------ */

typedef struct progress {
    int tty, quiet;
    double start;
    uint64_t total_units, done_units;
    size_t n_tensors;
} progress;

static void progress_tensor(hvq_ctx *ctx, progress *pg, size_t i, const char *name,
                            const hvq_tensor_report *tr)
{
    if (pg->quiet)
        return;
    double el = hvq_now() - pg->start;
    if (pg->tty) {
        double frac = pg->total_units ? (double)pg->done_units / (double)pg->total_units : 1.0;
        char bar[21];
        int fill = (int)(frac * 20.0 + 0.5);
        for (int b = 0; b < 20; b++)
            bar[b] = b < fill ? '#' : '.';
        bar[20] = '\0';
        double eta = frac > 0.0 ? el / frac - el : 0.0;
        char shown[200];
        fprintf(stderr, "\r\033[K[%s] %3d%% %zu/%zu %.48s  ETA %.0fs", bar,
                (int)(frac * 100.0), i + 1, pg->n_tensors, hvq_printable(name, shown, sizeof shown),
                eta);
        fflush(stderr);
        hvq_ctx_line_dirty(ctx, 1);
    } else if (tr->compressed) {
        hvq_log(ctx, HVQ_LOG_INFO, "[%zu/%zu] %s %llux%llu %s: rel. error %.4g (%.3f s)", i + 1,
                pg->n_tensors, name, (unsigned long long)tr->rows,
                (unsigned long long)tr->cols, tr->clusterer, tr->rel_fro, tr->seconds);
    }
}

static void progress_end(hvq_ctx *ctx, progress *pg)
{
    if (pg->tty && !pg->quiet) {
        fputs("\r\033[K", stderr);
        hvq_ctx_line_dirty(ctx, 0);
    }
}

/* ---- the full Hessian, on a clusterer's request ------------------------- */

/* What the host passes to cluster_encode: the plugin's input first, then
 * what host->hessian_full needs to find the tensor's full Hessian. */
typedef struct cluster_call {
    hvq_cluster_input in; /* first: the plugin's pointer is this one */
    const hvq_loaded_plugin *hessian;
    void *hstate;
    const hvq_tensor_info *info;
} cluster_call;

/* The cluster_encode call running on this thread (plugins call
 * host->hessian_full from the thread that called them). */
static _Thread_local const cluster_call *tl_call;

hvq_status hvq_cluster_hessian_full(hvq_ctx *ctx, const hvq_cluster_input *in, float *h)
{
    const cluster_call *call = tl_call;
    if (!in || !call || &call->in != in)
        return hvq_error(ctx, HVQ_E_INTERNAL,
                         "hessian_full: not the input of the cluster_encode call running on "
                         "this thread");
    const hvq_plugin *d = &call->hessian->desc;
    if (!d->hessian_get_full)
        return HVQ_E_NOTFOUND;
    uint64_t n = in->cols;
    hvq_status st = d->hessian_get_full(ctx, call->hstate, call->info, in->rows, n, h);
    if (st != HVQ_OK)
        return st;
    for (uint64_t i = 0; i < n; i++)
        for (uint64_t j = 0; j < n; j++) {
            float v = h[i * n + j];
            if (!isfinite(v) || (i == j && v < 0.0f) || v != h[j * n + i])
                return hvq_error(ctx, HVQ_E_INPUT,
                                 "tensor '%s': hessian '%s' gave a full matrix that is not "
                                 "finite and symmetric with a non-negative diagonal (at "
                                 "[%llu, %llu])",
                                 in->tensor_name, d->name, (unsigned long long)i,
                                 (unsigned long long)j);
        }
    return HVQ_OK;
}

/* ---- hessian instances (one per plugin and parameter set) --------------- */


static hvq_status hessian_for(run_state *rs, const hvq_loaded_plugin *pl,
                              const hvq_params *params, void **state)
{
    for (size_t i = 0; i < rs->n_hess; i++)
        if (rs->hess[i].plugin == pl && rs->hess[i].values == params->values) {
            *state = rs->hess[i].state;
            return HVQ_OK;
        }
    if (rs->n_hess == sizeof rs->hess / sizeof rs->hess[0])
        return hvq_error(rs->ctx, HVQ_E_INPUT, "too many distinct hessian stages");
    void *st = NULL;
    hvq_status s = pl->desc.hessian_open(rs->ctx, params, rs->p->input, &st);
    if (s != HVQ_OK) {
        pl->desc.hessian_close(rs->ctx, st);
        return s;
    }
    rs->hess[rs->n_hess].plugin = pl;
    rs->hess[rs->n_hess].values = params->values;
    rs->hess[rs->n_hess].state = st;
    rs->n_hess++;
    *state = st;
    return HVQ_OK;
}

/* ---- one tensor ---------------------------------------------------------- */


static void work_free(work *wk)
{
    free(wk->w);
    free(wk->recon);
    free(wk->h);
    free(wk->x);
    free(wk->score);
    free(wk->scale);
    free(wk->target);
    free(wk->pos);
    free(wk->cbad);
    free(wk->cval);
    free(wk->csum);
    memset(wk, 0, sizeof *wk);
}

static int grow(hvq_ctx *ctx, void **p, size_t n, size_t elem)
{
    size_t bytes = n * elem;
    void *q = realloc(*p, bytes ? bytes : 1);
    if (!q) {
        hvq_error(ctx, HVQ_E_NOMEM, "out of memory (%zu bytes for one tensor)", bytes);
        return 0;
    }
    *p = q;
    return 1;
}

static hvq_status work_reserve(hvq_ctx *ctx, work *wk, size_t numel, size_t rows, size_t cols)
{
    if (numel > wk->cap) {
        if (!grow(ctx, (void **)&wk->w, numel, sizeof(float)) ||
            !grow(ctx, (void **)&wk->recon, numel, sizeof(float)) ||
            !grow(ctx, (void **)&wk->x, numel, sizeof(float)) ||
            !grow(ctx, (void **)&wk->score, numel, sizeof(float)))
            return HVQ_E_NOMEM;
        wk->cap = numel;
    }
    if (cols > wk->hcap) {
        if (!grow(ctx, (void **)&wk->h, cols, sizeof(float)))
            return HVQ_E_NOMEM;
        wk->hcap = cols;
    }
    if (rows > wk->scap) {
        if (!grow(ctx, (void **)&wk->scale, rows, sizeof(float)))
            return HVQ_E_NOMEM;
        wk->scap = rows;
    }
    return HVQ_OK;
}

static float round_f16(float v) { return hvq_f16_to_f32(hvq_f32_to_f16(v)); }

/* ---- the per-element loops, in parallel chunks --------------------------
 * Each loop keeps its per-chunk findings (the first bad entry, partial
 * sums) in arrays indexed by chunk and combines them in chunk order, so
 * messages and figures do not depend on the thread count. */

typedef struct elem_job {
    /* conversion and the finite check */
    float *w;
    const unsigned char *src;
    hvq_dtype dtype;
    size_t esize;
    /* row loops */
    float *x, *recon, *scale;
    const float *h;
    uint64_t rows, cols, rows_per_chunk;
    int raw;
    /* sparse entries */
    const uint64_t *pos;
    float *target;
    /* per chunk */
    uint64_t *bad;      /* first bad entry or row (UINT64_MAX: none) */
    float *bad_value;   /* the row maximum of a bad row */
    double *sums;       /* 4 per chunk: err^2, w^2, H err^2, H w^2 */
    double *maxs;       /* per chunk: max |err| at sparse entries */
} elem_job;

/* dst[i] = src[i] / s and o[i] *= s for a row: four at a time with the
 * compilers' vector extensions where they exist (divps, mulps: each
 * element's value is the scalar operation's, exactly). */
#if defined(__GNUC__) || defined(__clang__)
typedef float v4f __attribute__((vector_size(16)));
#define HAVE_V4F 1
#endif

static void row_div(float *dst, const float *src, uint64_t n, float s)
{
    uint64_t c = 0;
#ifdef HAVE_V4F
    v4f vs = {s, s, s, s};
    for (; c + 4 <= n; c += 4) {
        v4f v;
        memcpy(&v, src + c, sizeof v);
        v = v / vs;
        memcpy(dst + c, &v, sizeof v);
    }
#endif
    for (; c < n; c++)
        dst[c] = src[c] / s;
}

static void row_scale(float *o, uint64_t n, float s)
{
    uint64_t c = 0;
#ifdef HAVE_V4F
    v4f vs = {s, s, s, s};
    for (; c + 4 <= n; c += 4) {
        v4f v;
        memcpy(&v, o + c, sizeof v);
        v = v * vs;
        memcpy(o + c, &v, sizeof v);
    }
#endif
    for (; c < n; c++)
        o[c] *= s;
}

static void job_convert(void *arg, uint64_t chunk, uint64_t begin, uint64_t end)
{
    elem_job *j = arg;
    float *w = j->w + begin;
    size_t n = (size_t)(end - begin);
    hvq_convert_fast(NULL, HVQ_DTYPE_F32, w, j->dtype, j->src + begin * j->esize, n);
    uint64_t bad = UINT64_MAX;
    for (size_t i = 0; i < n; i++)
        if (!isfinite(w[i])) {
            bad = begin + i;
            break;
        }
    j->bad[chunk] = bad;
}

static void job_normalize(void *arg, uint64_t chunk, uint64_t begin, uint64_t end)
{
    elem_job *j = arg;
    uint64_t cols = j->cols, bad = UINT64_MAX;
    float bad_m = 0.0f;
    for (uint64_t r = begin * j->rows_per_chunk; r < end * j->rows_per_chunk && r < j->rows;
         r++) {
        const float *row = j->w + r * cols;
        /* the maximum in four lanes (the same value, without one long
         * dependency chain) */
        float m4[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        uint64_t c = 0;
        for (; c + 4 <= cols; c += 4)
            for (int l = 0; l < 4; l++) {
                float a = fabsf(row[c + l]);
                m4[l] = a > m4[l] ? a : m4[l];
            }
        for (; c < cols; c++) {
            float a = fabsf(row[c]);
            m4[0] = a > m4[0] ? a : m4[0];
        }
        float m01 = m4[0] > m4[1] ? m4[0] : m4[1], m23 = m4[2] > m4[3] ? m4[2] : m4[3];
        float m = m01 > m23 ? m01 : m23;
        float s = round_f16(m);
        if (isinf(s)) {
            if (bad == UINT64_MAX) {
                bad = r;
                bad_m = m;
            }
            s = 0.0f;
        }
        j->scale[r] = s;
        float *xr = j->x + r * cols;
        if (s > 0.0f) {
            row_div(xr, row, cols, s);
        } else {
            memset(xr, 0, (size_t)cols * sizeof *xr);
        }
    }
    j->bad[chunk] = bad;
    j->bad_value[chunk] = bad_m;
}

static void job_split(void *arg, uint64_t chunk, uint64_t begin, uint64_t end)
{
    (void)chunk;
    elem_job *j = arg;
    for (uint64_t i = begin; i < end; i++) {
        j->target[i] = j->x[j->pos[i]];
        j->x[j->pos[i]] = 0.0f;
    }
}

/* Reconstruction W_hat = recon * s (unless raw) and the error sums, four
 * lanes per row so the additions pipeline; lanes and rows are combined in
 * a fixed order. */
static void job_metrics(void *arg, uint64_t chunk, uint64_t begin, uint64_t end)
{
    elem_job *j = arg;
    uint64_t cols = j->cols;
    double e2 = 0, w2 = 0, he2 = 0, hw2 = 0;
    for (uint64_t r = begin * j->rows_per_chunk; r < end * j->rows_per_chunk && r < j->rows;
         r++) {
        const float *w = j->w + r * cols, *h = j->h;
        float *o = j->recon + r * cols;
        if (!j->raw)
            row_scale(o, cols, j->scale[r]);
        double a[4] = {0, 0, 0, 0}, b[4] = {0, 0, 0, 0}, ha[4] = {0, 0, 0, 0},
               hb[4] = {0, 0, 0, 0};
        uint64_t c = 0;
        for (; c + 4 <= cols; c += 4)
            for (int l = 0; l < 4; l++) {
                double wv = w[c + l], e = wv - (double)o[c + l], hv = h[c + l];
                a[l] += e * e;
                b[l] += wv * wv;
                ha[l] += hv * e * e;
                hb[l] += hv * wv * wv;
            }
        for (; c < cols; c++) {
            double wv = w[c], e = wv - (double)o[c], hv = h[c];
            a[0] += e * e;
            b[0] += wv * wv;
            ha[0] += hv * e * e;
            hb[0] += hv * wv * wv;
        }
        e2 += (a[0] + a[1]) + (a[2] + a[3]);
        w2 += (b[0] + b[1]) + (b[2] + b[3]);
        he2 += (ha[0] + ha[1]) + (ha[2] + ha[3]);
        hw2 += (hb[0] + hb[1]) + (hb[2] + hb[3]);
    }
    double *s = j->sums + 4 * chunk;
    s[0] = e2;
    s[1] = w2;
    s[2] = he2;
    s[3] = hw2;
}

static void job_sparse_max(void *arg, uint64_t chunk, uint64_t begin, uint64_t end)
{
    elem_job *j = arg;
    double m = 0;
    for (uint64_t i = begin; i < end; i++) {
        uint64_t p = j->pos[i];
        double e = fabs((double)j->w[p] - j->recon[p]);
        m = e > m ? e : m;
    }
    j->maxs[chunk] = m;
}

/* Per-chunk scratch for the loops above, grown to the largest tensor. */
static int chunk_scratch(hvq_ctx *ctx, work *wk, uint64_t n_chunks)
{
    if (n_chunks <= wk->ccap)
        return 1;
    if (!grow(ctx, (void **)&wk->cbad, (size_t)n_chunks, sizeof *wk->cbad) ||
        !grow(ctx, (void **)&wk->cval, (size_t)n_chunks, sizeof *wk->cval) ||
        !grow(ctx, (void **)&wk->csum, (size_t)n_chunks * 4, sizeof *wk->csum))
        return 0;
    wk->ccap = (size_t)n_chunks;
    return 1;
}

static uint64_t first_bad(const uint64_t *bad, uint64_t n_chunks, uint64_t *chunk)
{
    for (uint64_t c = 0; c < n_chunks; c++)
        if (bad[c] != UINT64_MAX) {
            if (chunk)
                *chunk = c;
            return bad[c];
        }
    return UINT64_MAX;
}

/* ---- one tensor's compression, stage by stage --------------------------- */

/* A tensor in compression: its plugins and parameters, the matrix view,
 * the loops' job, and the clock of the stage timings. */
typedef struct tensor_job {
    run_state *rs;
    hvq_ctx *ctx;
    const hvq_tensor *t;
    const char *name;
    work *wk;
    hvq_tensor_report *tr;
    const hvq_loaded_plugin *hp, *ip, *cp, *rp;
    hvq_params hpar, ipar, cpar, rpar;
    uint64_t rows, cols, numel;
    uint64_t n_row_chunks, n_elem_chunks;
    uint64_t k;      /* sparse entries */
    int raw;         /* the clusterer works on the raw weights */
    void *hstate;    /* the Hessian instance */
    const float *x;  /* what the clusterer quantizes */
    elem_job job;
    double tl;       /* when the last stage ended */
} tensor_job;

/* Stage i's time since the last stage ended. */
static void stage_done(tensor_job *tj, int i)
{
    double now = hvq_now();
    tj->tr->stage_seconds[i] += now - tj->tl;
    tj->tl = now;
}

/* The plugins and parameters of every stage for this tensor, the matrix
 * view, the buffers and the loops' job. */
static hvq_status tensor_setup(tensor_job *tj, long cand)
{
    hvq_ctx *ctx = tj->ctx;
    const hvq_pipeline *p = tj->rs->p;
    const char *name = tj->name;
    hvq_tensor_report *tr = tj->tr;
    work *wk = tj->wk;
    hvq_status st;

    const hvq_loaded_plugin **pl[4] = {&tj->hp, &tj->ip, &tj->cp, &tj->rp};
    hvq_params *par[4] = {&tj->hpar, &tj->ipar, &tj->cpar, &tj->rpar};
    for (int s = HVQ_STAGE_HESSIAN; s <= HVQ_STAGE_RESIDUAL; s++)
        if ((st = hvq_pipeline_stage_cand(ctx, p, s, name, cand, pl[s], par[s])) != HVQ_OK)
            return st;
    snprintf(tr->hessian, sizeof tr->hessian, "%s", tj->hp->desc.name);
    snprintf(tr->importance, sizeof tr->importance, "%s", tj->ip->desc.name);
    snprintf(tr->clusterer, sizeof tr->clusterer, "%s", tj->cp->desc.name);
    snprintf(tr->residual, sizeof tr->residual, "%s", tj->rp->desc.name);

    tj->rows = (uint64_t)tj->t->info.shape[0];
    tj->numel = hvq_numel(&tj->t->info);
    tj->cols = tj->numel / tj->rows;
    tr->rows = tj->rows;
    tr->cols = tj->cols;
    if ((st = work_reserve(ctx, wk, (size_t)tj->numel, (size_t)tj->rows, (size_t)tj->cols)) !=
        HVQ_OK)
        return st;
    uint64_t rpc = hvq_par_rows(tj->cols);
    tj->n_row_chunks = hvq_parallel_chunks(tj->rows, rpc);
    tj->n_elem_chunks = hvq_parallel_chunks(tj->numel, HVQ_PAR_ELEMS);
    if (!chunk_scratch(ctx, wk, tj->n_row_chunks > tj->n_elem_chunks ? tj->n_row_chunks
                                                                     : tj->n_elem_chunks))
        return HVQ_E_NOMEM;
    tj->job = (elem_job){
        .w = wk->w, .src = tj->t->data, .dtype = tj->t->info.dtype,
        .esize = hvq_dtype_size(tj->t->info.dtype), .x = wk->x, .recon = wk->recon,
        .scale = wk->scale, .h = wk->h, .rows = tj->rows, .cols = tj->cols,
        .rows_per_chunk = rpc, .bad = wk->cbad, .bad_value = wk->cval, .sums = wk->csum,
        .maxs = wk->csum,
    };
    return HVQ_OK;
}

/* float32 copy, checked finite; then the Hessian diagonal, checked. */
static hvq_status tensor_convert_hessian(tensor_job *tj)
{
    hvq_ctx *ctx = tj->ctx;
    work *wk = tj->wk;
    uint64_t cols = tj->cols;
    hvq_status st;

    hvq_convert_fast_init();
    hvq_parallel_for(ctx, tj->numel, HVQ_PAR_ELEMS, job_convert, &tj->job);
    uint64_t bad = first_bad(wk->cbad, tj->n_elem_chunks, NULL);
    if (bad != UINT64_MAX)
        return hvq_error(ctx, HVQ_E_INPUT, "tensor '%s': %s value at [%llu, %llu]", tj->name,
                         isnan(wk->w[bad]) ? "NaN" : "infinite",
                         (unsigned long long)(bad / cols), (unsigned long long)(bad % cols));
    stage_done(tj, HVQ_TIME_CONVERT);

    if ((st = hessian_for(tj->rs, tj->hp, &tj->hpar, &tj->hstate)) != HVQ_OK)
        return st;
    st = tj->hp->desc.hessian_get(ctx, tj->hstate, &tj->t->info, tj->rows, cols, wk->h);
    if (st != HVQ_OK)
        return st;
    for (uint64_t j = 0; j < cols; j++)
        if (!(wk->h[j] >= 0.0f) || !isfinite(wk->h[j]))
            return hvq_error(ctx, HVQ_E_INPUT,
                             "tensor '%s': hessian '%s' gave an invalid value %g at column %llu",
                             tj->name, tj->hp->desc.name, (double)wk->h[j],
                             (unsigned long long)j);
    stage_done(tj, HVQ_TIME_HESSIAN);
    return HVQ_OK;
}

/* Normalization: s_i = max_j |W_ij| rounded to fp16 (what is stored). A
 * raw clusterer with sparse entries needs it too, for the importance
 * scores only. Then decoupling: Omega = top-k importance; B = W_norm with
 * Omega zeroed. */
static hvq_status tensor_normalize_decouple(tensor_job *tj)
{
    hvq_ctx *ctx = tj->ctx;
    work *wk = tj->wk;
    uint64_t k = tj->k;
    hvq_status st;

    tj->x = wk->w;
    if (!tj->raw || k > 0) {
        hvq_parallel_for(ctx, tj->n_row_chunks, 1, job_normalize, &tj->job);
        uint64_t c = 0;
        uint64_t bad = first_bad(wk->cbad, tj->n_row_chunks, &c);
        if (bad != UINT64_MAX)
            return hvq_error(ctx, HVQ_E_INPUT,
                             "tensor '%s': row %llu has magnitude %g, beyond the fp16 "
                             "range of the row scales",
                             tj->name, (unsigned long long)bad, (double)wk->cval[c]);
        tj->x = wk->x;
    }
    stage_done(tj, HVQ_TIME_NORMALIZE);

    if (k > 0) {
        if (!grow(ctx, (void **)&wk->pos, (size_t)k, sizeof *wk->pos) ||
            !grow(ctx, (void **)&wk->target, (size_t)k, sizeof *wk->target))
            return HVQ_E_NOMEM;
        if ((st = tj->ip->desc.importance_score(ctx, &tj->ipar, wk->x, tj->rows, tj->cols,
                                                wk->h, wk->score)))
            return st;
        if ((st = hvq_top_k(ctx, wk->score, tj->numel, k, wk->pos)) != HVQ_OK) {
            hvq_error_prefix(ctx, "tensor '%s': importance '%s'", tj->name, tj->ip->desc.name);
            return st;
        }
        tj->job.pos = wk->pos;
        tj->job.target = wk->target;
        if (tj->raw) /* the raw weights, the sparse ones set apart */
            memcpy(wk->x, wk->w, (size_t)tj->numel * sizeof *wk->x);
        hvq_parallel_for(ctx, k, HVQ_PAR_ELEMS, job_split, &tj->job);
    }
    stage_done(tj, HVQ_TIME_IMPORTANCE);
    return HVQ_OK;
}

/* Body quantization, then the residual. */
static hvq_status tensor_encode(tensor_job *tj, hvq_encoded *cenc, hvq_encoded *renc)
{
    hvq_ctx *ctx = tj->ctx;
    work *wk = tj->wk;
    uint64_t k = tj->k;
    hvq_status st;

    cluster_call call = {
        .in = {.tensor_name = tj->name, .x = tj->x, .rows = tj->rows, .cols = tj->cols,
               .hessian = wk->h, .row_scale = tj->raw ? NULL : wk->scale,
               .sparse_pos = k ? wk->pos : NULL, .n_sparse = k,
               .seed = hvq_tensor_seed(tj->rs->p->seed, tj->name)},
        .hessian = tj->hp, .hstate = tj->hstate, .info = &tj->t->info,
    };
    tl_call = &call;
    st = tj->cp->desc.cluster_encode(ctx, &tj->cpar, &call.in, wk->recon, cenc);
    tl_call = NULL;
    if (st != HVQ_OK)
        return st;
    stage_done(tj, HVQ_TIME_CLUSTERER);

    hvq_residual_input rin = {
        .tensor_name = tj->name, .rows = tj->rows, .cols = tj->cols, .pos = k ? wk->pos : NULL,
        .target = k ? wk->target : NULL, .n = k, .recon = wk->recon,
    };
    if ((st = tj->rp->desc.residual_encode(ctx, &tj->rpar, &rin, renc)) != HVQ_OK)
        return st;
    stage_done(tj, HVQ_TIME_RESIDUAL);
    return HVQ_OK;
}

/* Reconstruction and metrics into the tensor report. */
static void tensor_metrics(tensor_job *tj, const hvq_encoded *cenc, const hvq_encoded *renc)
{
    hvq_ctx *ctx = tj->ctx;
    work *wk = tj->wk;
    hvq_tensor_report *tr = tj->tr;
    uint64_t k = tj->k;

    hvq_parallel_for(ctx, tj->n_row_chunks, 1, job_metrics, &tj->job);
    double e2 = 0, w2 = 0, he2 = 0, hw2 = 0, maxs = 0;
    for (uint64_t c = 0; c < tj->n_row_chunks; c++) {
        e2 += wk->csum[4 * c];
        w2 += wk->csum[4 * c + 1];
        he2 += wk->csum[4 * c + 2];
        hw2 += wk->csum[4 * c + 3];
    }
    if (k > 0) {
        uint64_t nk = hvq_parallel_chunks(k, HVQ_PAR_ELEMS);
        hvq_parallel_for(ctx, k, HVQ_PAR_ELEMS, job_sparse_max, &tj->job);
        for (uint64_t c = 0; c < nk; c++)
            maxs = wk->csum[c] > maxs ? wk->csum[c] : maxs;
    }
    tr->rel_fro = w2 > 0 ? sqrt(e2 / w2) : (e2 > 0 ? INFINITY : 0.0);
    tr->rel_hessian = hw2 > 0 ? he2 / hw2 : (he2 > 0 ? INFINITY : 0.0);
    tr->sqnr_db = e2 > 0 ? 10.0 * log10(w2 / e2) : INFINITY;
    tr->max_abs_err_sparse = maxs;
    tr->err2 = e2;
    tr->w2 = w2;
    tr->herr2 = he2;
    tr->hw2 = hw2;
    double bits = tj->raw ? 0.0 : 16.0 * (double)tj->rows;
    uint64_t bytes = tj->raw ? 0 : 2 * tj->rows;
    for (size_t i = 0; i < cenc->n_components; i++) {
        bits += (double)cenc->components[i].paper_bits;
        bytes += cenc->components[i].nbytes;
    }
    for (size_t i = 0; i < renc->n_components; i++) {
        bits += (double)renc->components[i].paper_bits;
        bytes += renc->components[i].nbytes;
    }
    tr->paper_bits = bits;
    tr->stored_bytes = bytes;
    stage_done(tj, HVQ_TIME_METRICS);
}

hvq_status hvq_compress_tensor(run_state *rs, const hvq_tensor *t, long cand, work *wk,
                               hvq_tensor_report *tr, hvq_encoded *cenc, hvq_encoded *renc,
                               hvq_result *res)
{
    double t0 = hvq_now();
    tensor_job tj = {.rs = rs, .ctx = rs->ctx, .t = t, .name = t->info.name, .wk = wk,
                     .tr = tr, .tl = t0};
    hvq_status st;

    if ((st = tensor_setup(&tj, cand)) != HVQ_OK ||
        (st = tensor_convert_hessian(&tj)) != HVQ_OK)
        return st;
    tj.raw = (tj.cp->desc.flags & HVQ_CLUSTERER_RAW) != 0;
    tj.job.raw = tj.raw;
    tj.k = tj.rp->desc.residual_count(&tj.rpar, tj.numel);
    if (tj.k > tj.numel)
        return hvq_error(rs->ctx, HVQ_E_INTERNAL, "residual '%s' asked for %llu of %llu entries",
                         tj.rp->desc.name, (unsigned long long)tj.k,
                         (unsigned long long)tj.numel);
    tr->n_sparse = tj.k;
    if ((st = tensor_normalize_decouple(&tj)) != HVQ_OK ||
        (st = tensor_encode(&tj, cenc, renc)) != HVQ_OK)
        return st;
    tensor_metrics(&tj, cenc, renc);
    tr->seconds = hvq_now() - t0;

    res->compressed = 1;
    res->recon = wk->recon;
    res->rows = tj.rows;
    res->cols = tj.cols;
    res->row_scale = tj.raw ? NULL : wk->scale;
    res->clusterer = tj.cp->desc.name;
    res->residual = tj.rp->desc.name;
    res->clusterer_version = tj.cp->desc.version;
    res->residual_version = tj.rp->desc.version;
    res->cluster_enc = cenc;
    res->residual_enc = renc;
    return HVQ_OK;
}

/* ---- the run ------------------------------------------------------------- */

static int same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

/* Whether paths a and b name the same directory entry, whether or not it
 * exists yet ("x" and "./x"): same directory and same last component. */
static int same_target(const char *a, const char *b)
{
    char *da = strdup(a), *db = strdup(b), *ba = strdup(a), *bb = strdup(b);
    int same = da && db && ba && bb && strcmp(basename(ba), basename(bb)) == 0 &&
               same_file(dirname(da), dirname(db));
    free(da);
    free(db);
    free(ba);
    free(bb);
    return same || strcmp(a, b) == 0;
}

/* Whether path is an existing entry of the directory dir: when the input is
 * a model directory, such a file may be one the source reads. */
static int in_input_dir(const char *path, const char *dir)
{
    struct stat sd, sp;
    if (stat(dir, &sd) != 0 || !S_ISDIR(sd.st_mode) || stat(path, &sp) != 0)
        return 0;
    char *d = strdup(path);
    int in = d && same_file(dirname(d), dir);
    free(d);
    return in;
}

/* The file among the run's output and report that path names (however
 * spelt), or NULL. */
static const char *names_output(const hvq_pipeline *p, const char *path)
{
    if (same_target(path, p->output) || same_file(path, p->output))
        return p->output;
    if (p->report && *p->report && (same_target(path, p->report) || same_file(path, p->report)))
        return p->report;
    return NULL;
}

/* A parameter naming a file (a Hessian, an imatrix, calibration tokens, a
 * saved imatrix) is a file the run reads or writes: refused before any
 * work when it names the output or the report. */
static hvq_status check_stage_paths(hvq_ctx *ctx, const hvq_pipeline *p,
                                    const hvq_stage_cfg *stages)
{
    for (int s = 0; s < HVQ_STAGE_COUNT; s++) {
        const hvq_stage_cfg *c = &stages[s];
        for (size_t i = 0; c->resolved && c->values && i < c->n_values; i++) {
            const hvq_value *v = &c->values[i];
            if ((v->type != HVQ_PARAM_STRING && v->type != HVQ_PARAM_PATH) || !v->s || !*v->s)
                continue;
            const char *hit = names_output(p, v->s);
            if (hit)
                return hvq_error(ctx, HVQ_E_INPUT, "%s: stage %s: %s: %s names the run's %s; "
                                 "a run never writes a file it reads, nor one file twice",
                                 p->path, hvq_stage_name(s), c->resolved->desc.params[i].name,
                                 v->s, hit == p->output ? "output" : "report");
        }
    }
    return HVQ_OK;
}

static hvq_status check_all_stage_paths(hvq_ctx *ctx, const hvq_pipeline *p)
{
    hvq_status st = check_stage_paths(ctx, p, p->stages);
    for (size_t k = 0; st == HVQ_OK && k < p->n_overrides; k++)
        st = check_stage_paths(ctx, p, p->overrides[k].stages);
    for (size_t k = 0; st == HVQ_OK && k < p->n_candidates; k++)
        st = check_stage_paths(ctx, p, p->candidates[k].stages);
    if (st == HVQ_OK && p->evaluate.present && p->evaluate.tokens &&
        names_output(p, p->evaluate.tokens))
        st = hvq_error(ctx, HVQ_E_INPUT, "%s: evaluate: tokens: %s names the run's output or "
                       "report", p->path, p->evaluate.tokens);
    return st;
}

/* One warning when the selection leaves nothing to compress, and one per
 * override whose pattern matches no tensor of the input (a typo there
 * silently changes nothing otherwise). */
static void warn_unmatched(hvq_ctx *ctx, const hvq_pipeline *p, const hvq_tensor_info *infos,
                           size_t n, const unsigned char *selected)
{
    size_t n_sel = 0;
    for (size_t i = 0; i < n; i++)
        n_sel += selected[i] != 0;
    if (n_sel == 0)
        hvq_log(ctx, HVQ_LOG_WARN, "%s: the selection matches no tensor to compress; every "
                "tensor passes through unchanged", p->input);
    for (size_t k = 0; k < p->n_overrides; k++) {
        const hvq_override *o = &p->overrides[k];
        size_t i = 0;
        while (i < n && !hvq_glob_match(o->match, infos[i].name))
            i++;
        if (i == n)
            hvq_log(ctx, HVQ_LOG_WARN, "%s:%d: override '%s' matches no tensor of %s",
                    o->mark.file ? o->mark.file : "--set", o->mark.line, o->match, p->input);
    }
}

/* The compression of tensor name failed with st. With on_error:
 * passthrough for it and a failure about the tensor (HVQ_E_UNSUPPORTED: a
 * plugin cannot handle it; HVQ_E_INPUT: its shape or values), it is
 * written unchanged: one warning, the message kept for the report, and
 * HVQ_OK. Anything else (out of memory, I/O, a bug, on_error: abort)
 * stops the run: st, the message naming the input. */
static hvq_status compress_failed(hvq_ctx *ctx, const hvq_pipeline *p, const char *name,
                                  hvq_status st, hvq_tensor_report *tr)
{
    if ((st == HVQ_E_UNSUPPORTED || st == HVQ_E_INPUT) && !hvq_interrupted &&
        hvq_pipeline_passthrough(p, name)) {
        if (!(tr->error = strdup(hvq_ctx_error(ctx))))
            return hvq_error(ctx, HVQ_E_NOMEM, "out of memory");
        tr->why_passed = "compression failed";
        hvq_log(ctx, HVQ_LOG_WARN, "%s: tensor '%s' passed through unchanged "
                "(on_error: passthrough): %s", p->input, name, tr->error);
        hvq_ctx_clear_error(ctx);
        return HVQ_OK;
    }
    if (!strstr(hvq_ctx_error(ctx), p->input))
        hvq_error_prefix(ctx, "%s", p->input);
    return st;
}

/* The run's refusals before any work: no input or output, an output or
 * report that is (or is in) the input, the report as the output, a
 * stage's file naming the output or report. */
static hvq_status check_run_paths(hvq_ctx *ctx, const hvq_pipeline *p)
{
    if (!p->input || !*p->input)
        return hvq_error(ctx, HVQ_E_INPUT, "%s: no input (set 'input:' or --input)", p->path);
    if (!p->output || !*p->output)
        return hvq_error(ctx, HVQ_E_INPUT, "%s: no output (set 'output:' or --output)", p->path);
    if (same_file(p->input, p->output) || (p->report && same_file(p->input, p->report)))
        return hvq_error(ctx, HVQ_E_INPUT, "%s: the output may not be the input", p->output);
    if (in_input_dir(p->output, p->input) || (p->report && in_input_dir(p->report, p->input)))
        return hvq_error(ctx, HVQ_E_INPUT,
                         "%s: the output may not replace a file of the input directory %s",
                         in_input_dir(p->output, p->input) ? p->output : p->report, p->input);
    if (p->report && same_target(p->report, p->output))
        return hvq_error(ctx, HVQ_E_INPUT, "%s: the report may not be the output", p->report);
    return check_all_stage_paths(ctx, p);
}

/* What a run holds between its steps. */
typedef struct run_io {
    hvq_ctx *ctx;
    const hvq_pipeline *p;
    hvq_run_report *rep;
    const hvq_loaded_plugin *src, *wp;
    void *sstate, *wstate;
    size_t n;
    hvq_tensor_info *infos;
    unsigned char *selected;  /* per tensor: to be compressed */
    long *choice;             /* with a size target: the candidates */
    hvq_alloc_plan *plan;
    run_state rs;
    work wk;
    progress pg;
} run_io;

/* Every tensor's description into infos and the report, and which are
 * compressed (selected by the pipeline, float, a matrix, not empty). */
static hvq_status scan_tensors(run_io *io)
{
    hvq_ctx *ctx = io->ctx;
    const hvq_pipeline *p = io->p;
    hvq_run_report *rep = io->rep;
    hvq_status st;
    for (size_t i = 0; i < io->n; i++) {
        hvq_tensor_info *info = &io->infos[i];
        if ((st = io->src->desc.source_info(io->sstate, i, info)) != HVQ_OK ||
            (st = hvq_tensor_check(ctx, p->input, io->src->desc.name, info, NULL)) != HVQ_OK)
            return st;
        hvq_tensor_report *tr = &rep->t[i];
        tr->name = strdup(info->name);
        if (!tr->name)
            return hvq_error(ctx, HVQ_E_NOMEM, "out of memory");
        snprintf(tr->dtype, sizeof tr->dtype, "%s", info->dtype_name ? info->dtype_name
                                                          : hvq_dtype_name(info->dtype));
        tr->ndim = info->ndim;
        memcpy(tr->shape, info->shape, sizeof tr->shape);
        tr->params = hvq_numel(info);
        rep->total_params += tr->params;
        if (!hvq_pipeline_selects(p, info->name)) {
            tr->why_passed = "not selected";
        } else if (!hvq_dtype_is_float(info->dtype)) {
            tr->why_passed = "not a float tensor";
        } else if (info->ndim < 2) {
            tr->why_passed = "not a matrix (fewer than 2 dimensions)";
        } else if (tr->params == 0) {
            tr->why_passed = "empty";
        } else {
            io->selected[i] = 1;
            io->pg.total_units += tr->params;
        }
        if (tr->why_passed && strcmp(tr->why_passed, "not selected") != 0)
            hvq_log(ctx, HVQ_LOG_WARN, "%s: tensor '%s' matches the selection but is %s; "
                    "passed through unchanged", p->input, info->name, tr->why_passed);
    }
    return HVQ_OK;
}

/* The allocation pass of a size target, when the pipeline has one. */
static hvq_status allocate(run_io *io)
{
    if (!io->p->target.present)
        return HVQ_OK;
    io->choice = calloc(io->n + 1, sizeof *io->choice);
    if (!io->choice)
        return hvq_error(io->ctx, HVQ_E_NOMEM, "out of memory");
    hvq_log(io->ctx, HVQ_LOG_INFO, "allocation: measuring %zu candidates on every selected tensor",
            io->p->n_candidates);
    return hvq_allocate(&io->rs, io->src, io->sstate, io->infos, io->selected, io->n, &io->wk,
                        io->rep, io->choice, &io->plan);
}

/* Tensor i compressed: its figures into the run's. */
static void account(run_io *io, size_t i)
{
    hvq_run_report *rep = io->rep;
    hvq_tensor_report *tr = &rep->t[i];
    tr->compressed = 1;
    rep->compressed_params += tr->params;
    rep->paper_bits_compressed += tr->paper_bits;
    rep->stored_bytes_compressed += tr->stored_bytes;
    hvq_alloc_settle(io->plan, i, tr->stored_bytes, rep, io->choice);
    rep->err2 += tr->err2;
    rep->w2 += tr->w2;
    rep->herr2 += tr->herr2;
    rep->hw2 += tr->hw2;
    io->pg.done_units += tr->params;
}

/* Tensor i: read, compressed when selected, written. */
static hvq_status run_tensor(run_io *io, size_t i)
{
    hvq_ctx *ctx = io->ctx;
    hvq_run_report *rep = io->rep;
    hvq_status st;
    hvq_tensor t;
    if ((st = io->src->desc.source_read(ctx, io->sstate, i, &t)) != HVQ_OK ||
        (st = hvq_tensor_check(ctx, io->p->input, io->src->desc.name, &io->infos[i], &t)) !=
            HVQ_OK)
        return st;
    hvq_result res = {.original = t};
    hvq_encoded cenc, renc;
    hvq_encoded_init(&cenc);
    hvq_encoded_init(&renc);
    if (io->selected[i]) {
        st = hvq_compress_tensor(&io->rs, &t, io->choice ? io->choice[i] : -1, &io->wk,
                                 &rep->t[i], &cenc, &renc, &res);
        if (st != HVQ_OK) {
            st = compress_failed(ctx, io->p, io->infos[i].name, st, &rep->t[i]);
            if (st == HVQ_OK) /* passed through */
                io->pg.done_units += rep->t[i].params;
        } else {
            account(io, i);
        }
    }
    if (st == HVQ_OK) {
        double tw = hvq_now();
        st = io->wp->desc.writer_tensor(ctx, io->wstate, &res);
        if (st != HVQ_OK && rep->t[i].error) /* a writer that declared it converted */
            hvq_error_prefix(ctx, "tensor '%s' failed to compress and was to pass through "
                             "unchanged (on_error: passthrough), which writer '%s' did not "
                             "take", io->infos[i].name, io->wp->desc.name);
        rep->t[i].stage_seconds[HVQ_TIME_WRITER] = hvq_now() - tw;
        for (int s = 0; s < HVQ_TIME_STAGES; s++)
            rep->stage_seconds[s] += rep->t[i].stage_seconds[s];
    }
    hvq_encoded_clear(&cenc);
    hvq_encoded_clear(&renc);
    return st;
}

/* The JSON report, when the pipeline names one. */
static hvq_status write_report(hvq_ctx *ctx, const hvq_pipeline *p, const hvq_run_report *rep)
{
    if (!p->report || !*p->report)
        return HVQ_OK;
    hvq_output *ro = hvq_output_open(ctx, p->report);
    if (!ro)
        return hvq_ctx_status(ctx);
    hvq_status st;
    hvq_buf b;
    hvq_buf_init(&b);
    hvq_report_json(&b, rep);
    if (b.oom)
        st = hvq_error(ctx, HVQ_E_NOMEM, "out of memory writing the report");
    else
        st = ctx->host->output_write(ctx, ro, b.data, b.len);
    hvq_buf_free(&b);
    return st;
}

/* What writer_open may ask through host->writer_stage_param: the setup
 * first (the plugin's pointer is this one), then the run. */
typedef struct writer_call {
    hvq_writer_setup setup;
    const run_io *io;
} writer_call;

/* The writer_open call running on this thread. */
static _Thread_local const writer_call *tl_writer;

const char *hvq_writer_stage_param(hvq_ctx *ctx, const hvq_writer_setup *setup, size_t i,
                                   const char *stage, const char *key)
{
    const writer_call *w = tl_writer;
    if (!setup || !stage || !w || &w->setup != setup || i >= w->io->n || !w->io->selected[i])
        return NULL;
    int s = 0;
    while (s < HVQ_STAGE_WRITER && strcmp(hvq_stage_name(s), stage) != 0)
        s++;
    const hvq_loaded_plugin *pl;
    hvq_params par;
    if (s == HVQ_STAGE_WRITER ||
        hvq_pipeline_stage_cand(ctx, w->io->p, s, w->io->infos[i].name,
                                w->io->choice ? w->io->choice[i] : -1, &pl, &par) != HVQ_OK)
        return NULL;
    if (!key)
        return pl->desc.name;
    for (size_t k = 0; k < par.count; k++)
        if (strcmp(par.specs[k].name, key) == 0)
            return par.values[k].s;
    return NULL;
}

/* Opens the writer (*opened: its close is due) with the effective pipeline
 * recorded (into *yaml, freed by the caller). */
static hvq_status open_writer(run_io *io, char **yaml, int *opened)
{
    const hvq_pipeline *p = io->p;
    *yaml = hvq_pipeline_record(p, io->src->desc.name, io->src->desc.version);
    writer_call call = {
        .setup = {.output_path = p->output, .source_path = p->input,
                  .source_format = io->src->desc.name, .tensors = io->infos,
                  .compressed = io->selected, .n_tensors = io->n,
                  .pipeline_yaml = *yaml ? *yaml : ""},
        .io = io};
    if (io->src->desc.source_meta)
        io->src->desc.source_meta(io->sstate, &call.setup.source_meta,
                                  &call.setup.n_source_meta);
    const hvq_stage_cfg *wc = &p->stages[HVQ_STAGE_WRITER];
    hvq_params wpar = {wc->n_values, wc->values, io->wp->desc.params};
    *opened = 1;
    tl_writer = &call;
    hvq_status st = io->wp->desc.writer_open(io->ctx, &wpar, &call.setup, &io->wstate);
    tl_writer = NULL;
    return st;
}

/* Every tensor through the writer, then its finish. */
static hvq_status run_tensors(run_io *io)
{
    hvq_ctx *ctx = io->ctx;
    hvq_run_report *rep = io->rep;
    hvq_status st;
    for (size_t i = 0; i < io->n; i++) {
        if (hvq_interrupted)
            return hvq_interrupt_error(ctx);
        if ((st = run_tensor(io, i)) != HVQ_OK)
            return st;
        progress_tensor(ctx, &io->pg, i, io->infos[i].name, &rep->t[i]);
    }
    progress_end(ctx, &io->pg);
    if (rep->allocated && rep->stored_bytes_compressed > rep->alloc_budget)
        hvq_log(ctx, HVQ_LOG_WARN,
                "%s: the compressed tensors take %llu bytes, %llu more than the target "
                "allows: the sizes estimated on samples (target.sample) were too low",
                io->p->input, (unsigned long long)rep->stored_bytes_compressed,
                (unsigned long long)(rep->stored_bytes_compressed - rep->alloc_budget));
    return io->wp->desc.writer_finish(ctx, io->wstate);
}

/* The run once the source is open: the scan, the allocation, the writer,
 * every tensor, the report, and the outputs committed. */
static hvq_status run_open(run_io *io, double t_start, char **yaml, int *writer_opened)
{
    hvq_ctx *ctx = io->ctx;
    const hvq_pipeline *p = io->p;
    hvq_run_report *rep = io->rep;
    hvq_status st;
    size_t n = io->n = io->src->desc.source_count(io->sstate);
    if (n == 0)
        return hvq_error(ctx, HVQ_E_INPUT, "%s: the model holds no tensors (nothing to compress)",
                         p->input);
    io->infos = hvq_calloc(ctx, n ? n : 1, sizeof *io->infos);
    io->selected = hvq_calloc(ctx, n ? n : 1, 1);
    rep->t = hvq_calloc(ctx, n ? n : 1, sizeof *rep->t);
    if (!io->infos || !io->selected || !rep->t)
        return HVQ_E_NOMEM;
    rep->n = n;
    io->pg = (progress){.tty = isatty(2), .quiet = hvq_ctx_options(ctx)->quiet,
                        .start = hvq_now(), .n_tensors = n};
    if ((st = scan_tensors(io)) != HVQ_OK)
        return st;
    warn_unmatched(ctx, p, io->infos, n, io->selected);
    if ((st = allocate(io)) != HVQ_OK || (st = open_writer(io, yaml, writer_opened)) != HVQ_OK ||
        (st = run_tensors(io)) != HVQ_OK)
        return st;
    rep->output_bytes = hvq_outputs_size(ctx, p->output);
    rep->seconds = hvq_now() - t_start;
    rep->peak_rss_mib = hvq_peak_rss_mib();
    if ((st = write_report(ctx, p, rep)) != HVQ_OK)
        return st;
    return hvq_outputs_commit(ctx);
}

hvq_status hvq_run_pipeline(hvq_ctx *ctx, const hvq_registry *reg, const hvq_pipeline *p,
                            hvq_run_report *rep)
{
    hvq_status st = HVQ_OK;
    memset(rep, 0, sizeof *rep);
    rep->pipeline = p;
    rep->threads = hvq_ctx_options(ctx)->threads;
    double t_start = hvq_now();

    if ((st = check_run_paths(ctx, p)) != HVQ_OK)
        return st;
    hvq_ctx_add_input(ctx, p->input);
    hvq_ctx_name_output(ctx, p->output);
    if (p->report && *p->report)
        hvq_ctx_name_output(ctx, p->report);
    const hvq_loaded_plugin *src = hvq_registry_detect(reg, ctx, p->input);
    if (!src)
        return hvq_ctx_status(ctx);
    rep->source_format = strdup(src->desc.name);
    const hvq_loaded_plugin *wp = p->stages[HVQ_STAGE_WRITER].resolved;
    rep->writer = strdup(wp->desc.name);
    if (!rep->source_format || !rep->writer)
        return hvq_error(ctx, HVQ_E_NOMEM, "out of memory");

    run_io io = {.ctx = ctx, .p = p, .rep = rep, .src = src, .wp = wp,
                 .rs = {.ctx = ctx, .p = p}};
    char *yaml = NULL;
    int writer_opened = 0;
    if ((st = src->desc.source_open(ctx, p->input, &io.sstate)) == HVQ_OK)
        st = run_open(&io, t_start, &yaml, &writer_opened);

    if (writer_opened)
        wp->desc.writer_close(ctx, io.wstate);
    for (size_t i = 0; i < io.rs.n_hess; i++)
        io.rs.hess[i].plugin->desc.hessian_close(ctx, io.rs.hess[i].state);
    hvq_ctx_shared_clear(ctx);
    src->desc.source_close(ctx, io.sstate);
    if (st != HVQ_OK)
        hvq_outputs_abort(ctx);
    work_free(&io.wk);
    free(io.choice);
    hvq_alloc_plan_free(io.plan);
    free(io.infos);
    free(io.selected);
    free(yaml);
    return st;
}

void hvq_run_report_free(hvq_run_report *rep)
{
    for (size_t i = 0; i < rep->n; i++) {
        free(rep->t[i].name);
        free(rep->t[i].error);
    }
    free(rep->t);
    free(rep->source_format);
    free(rep->writer);
    memset(rep, 0, sizeof *rep);
}
