/* Determinism of the parallel paths: the same run with 1, 2 and 3 threads
 * writes byte-identical outputs (hvq container, dequantized safetensors)
 * and reports identical error figures, on a model big enough that every
 * parallel loop of the core (conversion, finite check, normalization,
 * top-k, body split, reconstruction and metrics) and of the importance
 * plugins is cut into several chunks; and hvq_top_k against a simple
 * reference at large n, on both of its paths (gathered candidates and
 * whole-array histograms), with ties, signed zeros and infinities, for
 * any thread count; and the fast dtype conversions against the reference
 * ones. */
#include "config.h"

#include "driver.h"
#include "dtype.h"
#include "harness.h"
#include "parallel.h"
#include "pipeline.h"

#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- a small synthetic model ------------------------------------------- */

typedef struct tens {
    const char *name;
    int ndim;
    int64_t shape[2];
    const float *data;
} tens;

/* Writes F32 tensors as one safetensors file. */
static void write_st(const char *path, const tens *t, size_t n)
{
    char hdr[4096];
    size_t len = 0;
    uint64_t off = 0;
    len += (size_t)snprintf(hdr + len, sizeof hdr - len, "{");
    for (size_t i = 0; i < n; i++) {
        uint64_t bytes = 4 * (uint64_t)t[i].shape[0] * (uint64_t)(t[i].ndim > 1 ? t[i].shape[1] : 1);
        if (t[i].ndim == 1)
            len += (size_t)snprintf(hdr + len, sizeof hdr - len,
                                    "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[%lld],"
                                    "\"data_offsets\":[%llu,%llu]}",
                                    i ? "," : "", t[i].name, (long long)t[i].shape[0],
                                    (unsigned long long)off, (unsigned long long)(off + bytes));
        else
            len += (size_t)snprintf(hdr + len, sizeof hdr - len,
                                    "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[%lld,%lld],"
                                    "\"data_offsets\":[%llu,%llu]}",
                                    i ? "," : "", t[i].name, (long long)t[i].shape[0],
                                    (long long)t[i].shape[1], (unsigned long long)off,
                                    (unsigned long long)(off + bytes));
        off += bytes;
    }
    len += (size_t)snprintf(hdr + len, sizeof hdr - len, "}");
    while (len % 8)
        hdr[len++] = ' ';
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    unsigned char len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (unsigned char)((uint64_t)len >> (8 * i));
    ck_assert_uint_eq(fwrite(len8, 1, 8, f), 8);
    ck_assert_uint_eq(fwrite(hdr, 1, len, f), len);
    for (size_t i = 0; i < n; i++) {
        size_t count = (size_t)t[i].shape[0] * (size_t)(t[i].ndim > 1 ? t[i].shape[1] : 1);
        ck_assert_uint_eq(fwrite(t[i].data, 4, count, f), count);
    }
    ck_assert_int_eq(fclose(f), 0);
}

static uint64_t rng_state;

static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static double unif(void) { return ((rng() >> 11) + 0.5) / 9007199254740992.0; }

static double normal(void)
{
    return sqrt(-2.0 * log(unif())) * cos(6.283185307179586 * unif());
}

/* Student-t with 4 degrees of freedom: N / sqrt(chi2_4 / 4). */
static double student4(void)
{
    double c = 0;
    for (int i = 0; i < 4; i++) {
        double z = normal();
        c += z * z;
    }
    return normal() / sqrt(c / 4.0);
}

enum { A_R = 512, A_C = 384, B_R = 1024, B_C = 256 };

static char *make_model(char **hess_path)
{
    static float a[A_R * A_C], b[B_R * B_C], norm[A_C], ha[A_C], hb[B_C];
    rng_state = 0x9e3779b97f4a7c15ull;
    for (int r = 0; r < A_R; r++) {
        double s = 0.02 * exp(0.3 * normal());
        for (int c = 0; c < A_C; c++)
            a[r * A_C + c] = (float)(s * normal());
    }
    for (int r = 0; r < B_R; r++) {
        double s = 0.01 * exp(0.3 * normal());
        for (int c = 0; c < B_C; c++)
            b[r * B_C + c] = (float)(s * student4() * (rng() % 5000 == 0 ? 30.0 : 1.0));
    }
    for (int c = 0; c < A_C; c++) {
        norm[c] = (float)(1.0 + 0.1 * normal());
        ha[c] = (float)(exp(1.5 * normal()) * (c % 97 == 3 ? 100.0 : 1.0));
    }
    for (int c = 0; c < B_C; c++)
        hb[c] = (float)exp(1.5 * normal());
    char *dir = th_tmpdir("speed");
    size_t plen = strlen(dir) + 64;
    char *model = malloc(plen);
    *hess_path = malloc(plen);
    ck_assert(model && *hess_path);
    snprintf(model, plen, "%s/model.safetensors", dir);
    snprintf(*hess_path, plen, "%s/hessian.safetensors", dir);
    const tens m[] = {
        {"a.weight", 2, {A_R, A_C}, a},
        {"b.weight", 2, {B_R, B_C}, b},
        {"norm.weight", 1, {A_C, 0}, norm},
    };
    const tens h[] = {
        {"a.weight", 1, {A_C, 0}, ha},
        {"b.weight", 1, {B_C, 0}, hb},
    };
    write_st(model, m, 3);
    write_st(*hess_path, h, 2);
    free(dir);
    return model;
}

/* Runs the pipeline given as --set assignments with `threads` threads;
 * returns the output's bytes and fills *rep (free with
 * hvq_run_report_free; *pp with hvq_pipeline_free). */
static char *run_with(int threads, const char *const *sets, const char *out,
                      hvq_pipeline **pp, hvq_run_report *rep, size_t *len)
{
    hvq_ctx_opts o = {.quiet = 1, .threads = threads, .force = 1};
    hvq_ctx *ctx = hvq_ctx_new(&o);
    ck_assert_ptr_nonnull(ctx);
    hvq_registry *reg = th_registry(ctx);
    ck_assert_int_eq(hvq_pipeline_new(ctx, pp), HVQ_OK);
    for (size_t i = 0; sets[i]; i++)
        ck_assert_msg(hvq_pipeline_set(ctx, *pp, sets[i]) == HVQ_OK, "%s: %s", sets[i],
                      hvq_ctx_error(ctx));
    ck_assert_msg(hvq_pipeline_validate(ctx, *pp, reg) == HVQ_OK, "%s", hvq_ctx_error(ctx));
    ck_assert_msg(hvq_run_pipeline(ctx, reg, *pp, rep) == HVQ_OK, "%d threads: %s", threads,
                  hvq_ctx_error(ctx));
    ck_assert_int_eq(rep->threads, threads);
    hvq_ctx_free(ctx);
    hvq_registry_free(reg);
    char *bytes = th_read_file(out, len);
    ck_assert_ptr_nonnull(bytes);
    return bytes;
}

static void same_reports(const hvq_run_report *a, const hvq_run_report *b, int threads)
{
    ck_assert_uint_eq(a->n, b->n);
    /* Exact equality of doubles, on purpose. */
    ck_assert_msg(memcmp(&a->err2, &b->err2, sizeof a->err2) == 0 &&
                      memcmp(&a->w2, &b->w2, sizeof a->w2) == 0 &&
                      memcmp(&a->herr2, &b->herr2, sizeof a->herr2) == 0 &&
                      memcmp(&a->hw2, &b->hw2, sizeof a->hw2) == 0,
                  "%d threads: error sums differ (%.17g vs %.17g)", threads, a->err2, b->err2);
    for (size_t i = 0; i < a->n; i++) {
        const hvq_tensor_report *x = &a->t[i], *y = &b->t[i];
        ck_assert_int_eq(x->compressed, y->compressed);
        ck_assert_msg(memcmp(&x->rel_fro, &y->rel_fro, sizeof x->rel_fro) == 0 &&
                          memcmp(&x->rel_hessian, &y->rel_hessian, sizeof x->rel_hessian) == 0 &&
                          memcmp(&x->sqnr_db, &y->sqnr_db, sizeof x->sqnr_db) == 0 &&
                          memcmp(&x->max_abs_err_sparse, &y->max_abs_err_sparse,
                                 sizeof x->max_abs_err_sparse) == 0 &&
                          x->paper_bits == y->paper_bits && x->stored_bytes == y->stored_bytes &&
                          x->n_sparse == y->n_sparse,
                      "%d threads: tensor '%s': figures differ (rel. error %.17g vs %.17g)",
                      threads, x->name, x->rel_fro, y->rel_fro);
    }
}

/* Runs sets with 1, 2 and 3 threads; the outputs and figures must agree. */
static void check_threads(const char *const *sets, const char *out, int expect_compressed)
{
    hvq_pipeline *p1 = NULL;
    hvq_run_report r1;
    size_t len1;
    char *b1 = run_with(1, sets, out, &p1, &r1, &len1);
    size_t compressed = 0;
    for (size_t i = 0; i < r1.n; i++)
        compressed += (size_t)r1.t[i].compressed;
    ck_assert_uint_eq(compressed, (size_t)expect_compressed);
    for (int threads = 2; threads <= 3; threads++) {
        hvq_pipeline *p = NULL;
        hvq_run_report r;
        size_t len;
        char *b = run_with(threads, sets, out, &p, &r, &len);
        ck_assert_msg(len == len1 && memcmp(b, b1, len) == 0,
                      "%s: %d threads wrote other bytes than 1 thread (%zu vs %zu bytes)", out,
                      threads, len, len1);
        same_reports(&r1, &r, threads);
        free(b);
        hvq_run_report_free(&r);
        hvq_pipeline_free(p);
    }
    free(b1);
    hvq_run_report_free(&r1);
    hvq_pipeline_free(p1);
}

START_TEST(kmeans_coo16_any_thread_count)
{
    char *hess = NULL;
    char *model = make_model(&hess);
    char out_hvq[4200], out_st[4200], set_in[4300], set_hess[4300], set_out[4300];
    snprintf(out_hvq, sizeof out_hvq, "%.4000s", model);
    strcpy(strrchr(out_hvq, '/'), "/out.hvq");
    snprintf(out_st, sizeof out_st, "%.4000s", model);
    strcpy(strrchr(out_st, '/'), "/out-dequant.safetensors");
    snprintf(set_in, sizeof set_in, "input=%s", model);
    snprintf(set_hess, sizeof set_hess, "stages.hessian.path=%s", hess);
    /* Sparsity 20 %: tens of thousands of sparse entries, so the split and
     * the sparse-error loops are cut into chunks too. */
    const char *common[] = {set_in, "select.include=*.weight", "select.exclude=norm.weight",
                            "stages.hessian.plugin=file", set_hess,
                            "stages.importance.plugin=hasvq", "stages.clusterer.plugin=kmeans",
                            "stages.clusterer.block_size=2", "stages.clusterer.centroids=64",
                            "stages.clusterer.iterations=4", "stages.clusterer.stability=16",
                            "stages.residual.plugin=coo16", "stages.residual.sparsity=0.2"};
    size_t nc = sizeof common / sizeof common[0];
    const char *sets[32];
    memcpy(sets, common, sizeof common);
    snprintf(set_out, sizeof set_out, "output=%s", out_hvq);
    sets[nc] = set_out;
    sets[nc + 1] = "stages.writer.plugin=hvq";
    sets[nc + 2] = NULL;
    check_threads(sets, out_hvq, 2);
    /* decode: the same bytes for any --threads (1 writes in the main
     * thread, more in a writer thread of its own) */
    char *dec1 = NULL;
    size_t len1 = 0;
    for (int threads = 1; threads <= 3; threads++) {
        char dec[4300], targ[16];
        snprintf(dec, sizeof dec, "%s-t%d.safetensors", out_hvq, threads);
        snprintf(targ, sizeof targ, "%d", threads);
        const char *args[] = {"decode", "-q", out_hvq, "-o", dec, "--dtype", "f16",
                              "--threads", targ, NULL};
        char *err = NULL;
        ck_assert_msg(th_run(NULL, &err, args) == 0, "decode --threads %d: %s", threads,
                      err ? err : "");
        free(err);
        size_t len;
        char *bytes = th_read_file(dec, &len);
        ck_assert_ptr_nonnull(bytes);
        if (threads == 1) {
            dec1 = bytes;
            len1 = len;
        } else {
            ck_assert_msg(len == len1 && memcmp(bytes, dec1, len) == 0,
                          "decode --threads %d wrote other bytes than --threads 1", threads);
            free(bytes);
        }
    }
    free(dec1);
    snprintf(set_out, sizeof set_out, "output=%s", out_st);
    sets[nc + 1] = "stages.writer.plugin=dequant";
    sets[nc + 2] = "stages.writer.dtype=f32";
    sets[nc + 3] = NULL;
    check_threads(sets, out_st, 2);
    char *dir = strdup(model);
    *strrchr(dir, '/') = '\0';
    th_rmtree(dir);
    free(dir);
    free(model);
    free(hess);
}
END_TEST

START_TEST(rtn_groups_any_thread_count)
{
    char *hess = NULL;
    char *model = make_model(&hess);
    char out[4200], set_in[4300], set_out[4300];
    snprintf(out, sizeof out, "%.4000s", model);
    strcpy(strrchr(out, '/'), "/out-rtn.safetensors");
    snprintf(set_in, sizeof set_in, "input=%s", model);
    snprintf(set_out, sizeof set_out, "output=%s", out);
    const char *sets[] = {set_in, set_out, "select.include=*.weight",
                          "select.exclude=norm.weight", "stages.clusterer.plugin=rtn",
                          "stages.clusterer.group_size=32", "stages.residual.plugin=none",
                          "stages.writer.plugin=dequant", "stages.writer.dtype=f16", NULL};
    check_threads(sets, out, 2);
    char *dir = strdup(model);
    *strrchr(dir, '/') = '\0';
    th_rmtree(dir);
    free(dir);
    free(model);
    free(hess);
}
END_TEST

/* ---- top-k ---------------------------------------------------------------- */

static int cmp_desc(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x > y ? -1 : x < y;
}

/* The reference: the k-th largest score t by sorting a copy, then every
 * entry above t and the first (k - #above) equal to t, in index order. */
static void ref_top_k(const float *s, uint64_t n, uint64_t k, uint64_t *out)
{
    if (k == 0)
        return;
    float *c = malloc(n * sizeof *c);
    ck_assert_ptr_nonnull(c);
    memcpy(c, s, n * sizeof *c);
    qsort(c, n, sizeof *c, cmp_desc);
    float t = c[k - 1];
    free(c);
    uint64_t above = 0;
    for (uint64_t i = 0; i < n; i++)
        above += s[i] > t;
    uint64_t ties = k - above, o = 0;
    for (uint64_t i = 0; i < n; i++)
        if (s[i] > t || (s[i] == t && ties && ties--))
            out[o++] = i;
    ck_assert_uint_eq(o, k);
}

static void check_top_k(const float *s, uint64_t n, uint64_t k, const char *what)
{
    uint64_t *want = malloc((k ? k : 1) * sizeof *want);
    uint64_t *got = malloc((k ? k : 1) * sizeof *got);
    ck_assert(want && got);
    ref_top_k(s, n, k, want);
    static const int threads[] = {1, 2, 3, 7};
    for (size_t ti = 0; ti < sizeof threads / sizeof threads[0]; ti++) {
        hvq_ctx_opts o = {.quiet = 1, .threads = threads[ti]};
        hvq_ctx *ctx = hvq_ctx_new(&o);
        ck_assert_ptr_nonnull(ctx);
        ck_assert_msg(hvq_top_k(ctx, s, n, k, got) == HVQ_OK, "%s: %s", what,
                      hvq_ctx_error(ctx));
        uint64_t bad = k;
        for (uint64_t i = 0; i < k && bad == k; i++)
            if (got[i] != want[i])
                bad = i;
        ck_assert_msg(bad == k, "%s, n=%llu k=%llu, %d threads: pos[%llu] = %llu, want %llu",
                      what, (unsigned long long)n, (unsigned long long)k, threads[ti],
                      (unsigned long long)bad, (unsigned long long)got[bad],
                      (unsigned long long)want[bad]);
        hvq_ctx_free(ctx);
    }
    free(want);
    free(got);
}

START_TEST(top_k_large_against_reference)
{
    const uint64_t n = 1500000;
    float *s = malloc(n * sizeof *s);
    ck_assert_ptr_nonnull(s);
    rng_state = 0x243f6a8885a308d3ull;

    /* Importance-like: |t| * sqrt(H), continuous; the k-th best lies in a
     * thin top-digit bin: the gathered path. */
    for (uint64_t i = 0; i < n; i++)
        s[i] = (float)(fabs(student4()) * sqrt(exp(normal())));
    check_top_k(s, n, n / 50, "continuous");
    check_top_k(s, n, 1, "continuous, k=1");
    check_top_k(s, n, n - 1, "continuous, k=n-1");

    /* Heavy ties: 7 levels, the k-th best's bin holds a seventh of all
     * entries, more than the gathered path takes: whole-array histograms. */
    for (uint64_t i = 0; i < n; i++)
        s[i] = (float)(rng() % 7) * 0.5f;
    check_top_k(s, n, n / 3, "7 levels");
    check_top_k(s, n, n / 7, "7 levels, cut at a level's end");

    /* Everything equal: the lowest indices. */
    for (uint64_t i = 0; i < n; i++)
        s[i] = 0.25f;
    check_top_k(s, n, n / 2, "all equal");

    /* Signs, signed zeros, infinities, subnormals and ties at the cut,
     * spread over the chunks. */
    for (uint64_t i = 0; i < n; i++) {
        switch (rng() % 10) {
        case 0: s[i] = -INFINITY; break;
        case 1: s[i] = INFINITY; break;
        case 2: s[i] = -0.0f; break;
        case 3: s[i] = 0.0f; break;
        case 4: s[i] = 1e-42f * (float)(rng() % 3); break;
        case 5: s[i] = -1e-42f; break;
        default: s[i] = (float)((double)(rng() % 2001) - 1000.0) * 0.125f;
        }
    }
    check_top_k(s, n, n / 20, "mixed, cut among +inf");
    check_top_k(s, n, n / 10, "mixed, cut near +inf");
    check_top_k(s, n, n / 2, "mixed, middle");
    check_top_k(s, n, n - n / 20, "mixed, cut among -inf");
    check_top_k(s, n, n, "mixed, k=n");

    /* Zeros of both signs around the cut: -0 and +0 are equal scores. */
    for (uint64_t i = 0; i < n; i++)
        s[i] = rng() % 2 ? -0.0f : (rng() % 4 == 0 ? 1.0f : 0.0f);
    check_top_k(s, n, n / 2, "signed zeros");

    /* Negatives spread over many magnitudes (the gathered path below
     * zero). */
    for (uint64_t i = 0; i < n; i++)
        s[i] = -(float)exp(3.0 * normal());
    check_top_k(s, n, n / 100, "negatives");

    /* The cut among negative subnormals, right below the zeros: the bin
     * just under +0 (whose upper end would be -0) on the gathered path. */
    for (uint64_t i = 0; i < n; i++) {
        uint64_t r = rng() % 100;
        if (r < 85)
            s[i] = (float)exp(normal());
        else if (r < 90)
            s[i] = r % 2 ? 0.0f : -0.0f;
        else
            s[i] = -(float)(rng() % 2000000 + 1) * 1e-45f;
    }
    check_top_k(s, n, n * 95 / 100, "negative subnormals");
    free(s);
}
END_TEST

START_TEST(top_k_first_nan_any_thread_count)
{
    const uint64_t n = 1000000;
    float *s = malloc(n * sizeof *s);
    uint64_t *pos = malloc(10 * sizeof *pos);
    ck_assert(s && pos);
    for (uint64_t i = 0; i < n; i++)
        s[i] = (float)i;
    s[900001] = NAN;
    s[300007] = -NAN;
    for (int threads = 1; threads <= 4; threads++) {
        hvq_ctx_opts o = {.quiet = 1, .threads = threads};
        hvq_ctx *ctx = hvq_ctx_new(&o);
        ck_assert_int_eq(hvq_top_k(ctx, s, n, 10, pos), HVQ_E_INPUT);
        ck_assert_str_eq(hvq_ctx_error(ctx), "importance score is NaN at entry 300007");
        hvq_ctx_free(ctx);
    }
    free(s);
    free(pos);
}
END_TEST

/* ---- the fast conversions ------------------------------------------------- */

/* hvq_convert_fast gives hvq_convert's bits: every F16 and BF16 value, and
 * F32 values around every rounding boundary and special case (checked
 * exhaustively over all 2^32 while writing it; here a sample). */
START_TEST(fast_conversions_match_reference)
{
    enum { N = 1 << 20 };
    uint16_t *h = malloc(65536 * sizeof *h);
    float *a = malloc(65536 * sizeof *a), *b = malloc(65536 * sizeof *b);
    uint32_t *x = malloc(N * sizeof *x);
    uint16_t *r = malloc(N * sizeof *r), *f = malloc(N * sizeof *f);
    ck_assert(h && a && b && x && r && f);
    for (uint32_t i = 0; i < 65536; i++)
        h[i] = (uint16_t)i;
    static const hvq_dtype halves[] = {HVQ_DTYPE_F16, HVQ_DTYPE_BF16};
    for (int t = 0; t < 2; t++) {
        ck_assert_int_eq(hvq_convert(NULL, HVQ_DTYPE_F32, a, halves[t], h, 65536), HVQ_OK);
        ck_assert_int_eq(hvq_convert_fast(NULL, HVQ_DTYPE_F32, b, halves[t], h, 65536), HVQ_OK);
        ck_assert_msg(memcmp(a, b, 65536 * sizeof *a) == 0, "%s to F32 differs",
                      t ? "BF16" : "F16");
    }
    /* F32 bit patterns: each F16 boundary region (every exponent, the
     * rounding bits around the halfway points), a stride over all 2^32,
     * and random ones; both signs. */
    size_t n = 0;
    rng_state = 77;
    for (uint32_t e = 0; e < 256 && n + 64 <= N / 2; e++)
        for (uint32_t k = 0; k < 32; k++) {
            uint32_t m = (uint32_t)(rng() & 0x7fe000u) | 0x1000u; /* a tie for normals */
            uint32_t v = (e << 23) | ((m + k - 16) & 0x7fffffu);
            x[n++] = v;
            x[n++] = v | 0x80000000u;
        }
    for (uint64_t v = 0; v < (1ull << 32) && n < 3 * N / 4; v += 65537 * 13)
        x[n++] = (uint32_t)v;
    while (n < N)
        x[n++] = (uint32_t)rng();
    x[0] = 0x7f800000u; /* +inf */
    x[1] = 0xff800001u; /* a NaN with a payload */
    x[2] = 0x477fefffu; /* just below the rounding to F16 infinity */
    x[3] = 0x477ff000u; /* rounds to infinity */
    x[4] = 0x33000000u; /* 2^-25: a tie between 0 and the smallest subnormal */
    x[5] = 0x387fe000u; /* rounds up to the smallest normal F16 */
    for (int t = 0; t < 2; t++) {
        ck_assert_int_eq(hvq_convert(NULL, halves[t], r, HVQ_DTYPE_F32, x, N), HVQ_OK);
        ck_assert_int_eq(hvq_convert_fast(NULL, halves[t], f, HVQ_DTYPE_F32, x, N), HVQ_OK);
        for (size_t i = 0; i < N; i++)
            if (r[i] != f[i])
                ck_abort_msg("F32 0x%08x to %s: 0x%04x, want 0x%04x", (unsigned)x[i],
                             t ? "BF16" : "F16", (unsigned)f[i], (unsigned)r[i]);
    }
    /* An unsupported pair fails like hvq_convert. */
    hvq_ctx *ctx = th_ctx();
    ck_assert_int_eq(hvq_convert_parallel(ctx, HVQ_DTYPE_I8, r, HVQ_DTYPE_F32, x, 4),
                     HVQ_E_UNSUPPORTED);
    hvq_ctx_free(ctx);
    free(h);
    free(a);
    free(b);
    free(x);
    free(r);
    free(f);
}
END_TEST

/* ---- the loop itself ------------------------------------------------------ */

typedef struct sum_job {
    const double *x;
    double *part;
    uint64_t *seen;
} sum_job;

static void sum_chunk(void *arg, uint64_t chunk, uint64_t begin, uint64_t end)
{
    sum_job *j = arg;
    double s = 0;
    for (uint64_t i = begin; i < end; i++)
        s += j->x[i];
    j->part[chunk] = s;
    j->seen[chunk]++;
}

START_TEST(parallel_for_chunks_and_order)
{
    const uint64_t n = 100003, chunk = 1000;
    uint64_t nc = hvq_parallel_chunks(n, chunk);
    ck_assert_uint_eq(nc, 101);
    ck_assert_uint_eq(hvq_parallel_chunks(0, chunk), 0);
    ck_assert_uint_eq(hvq_parallel_chunks(1000, 1000), 1);
    double *x = malloc(n * sizeof *x), *part = malloc(nc * sizeof *part);
    uint64_t *seen = calloc(nc, sizeof *seen);
    ck_assert(x && part && seen);
    rng_state = 12345;
    for (uint64_t i = 0; i < n; i++)
        x[i] = normal() * exp(10 * normal());
    double first = 0;
    for (int threads = 1; threads <= 8; threads++) {
        memset(seen, 0, nc * sizeof *seen);
        sum_job j = {x, part, seen};
        hvq_parallel_for_n(threads, n, chunk, sum_chunk, &j);
        double total = 0;
        for (uint64_t c = 0; c < nc; c++) {
            ck_assert_uint_eq(seen[c], 1); /* every chunk exactly once */
            total += part[c];
        }
        if (threads == 1)
            first = total;
        ck_assert_msg(memcmp(&total, &first, sizeof total) == 0,
                      "%d threads: %.17g, 1 thread: %.17g", threads, total, first);
    }
    free(x);
    free(part);
    free(seen);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("speed_determinism");
    TCase *tc = tcase_create("threads");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, parallel_for_chunks_and_order);
    tcase_add_test(tc, fast_conversions_match_reference);
    tcase_add_test(tc, top_k_large_against_reference);
    tcase_add_test(tc, top_k_first_nan_any_thread_count);
    tcase_add_test(tc, kmeans_coo16_any_thread_count);
    tcase_add_test(tc, rtn_groups_any_thread_count);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
