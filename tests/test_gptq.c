/* Error feedback with the full Hessian (GPTQ): common/gptq.c's factor,
 * clusterer ggml's and clusterer kmeans's gptq against scalar references
 * written here from the definition, and the host's and the plugins'
 * refusals.
 *
 * The clusterers get the full Hessian through host->hessian_full; here a
 * copy of the host table whose hessian_full hands out the test's matrix.
 */
#include "config.h"

#include "full_hessian.h"
#include "ggml_quants.h"
#include "gptq.h"
#include "harness.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* U^T U (H + damp mean(diag) I) = I to this, on matrices of order <= 40 in
 * double. */
#define FACTOR_TOL 1e-9

static hvq_ctx *ctx;
static hvq_registry *reg;
static const hvq_plugin *ggml, *kmeans;

static void load(void)
{
    ctx = th_ctx();
    reg = th_registry(ctx);
    ggml = th_plugin(reg, HVQ_KIND_CLUSTERER, "ggml");
    kmeans = th_plugin(reg, HVQ_KIND_CLUSTERER, "kmeans");
}

static void unload(void)
{
    hvq_ctx_free(ctx);
    hvq_registry_free(reg);
}

/* ---- the factor ---------------------------------------------------------- */

START_TEST(factor_inverts_the_damped_hessian)
{
    fh_rng = 7; /* the same data forked or not (CK_FORK=no) */
    enum { N = 40 };
    static float h[N * N];
    static double u[N * N];
    fh_make_h(h, N, 200, 5);
    const double damp = 0.01;
    ck_assert_int_eq(hvq_gptq_factor(h, N, damp, u), 0);
    double mean = 0;
    for (int j = 0; j < N; j++)
        mean += h[j * N + j] > 0 ? h[j * N + j] : 1.0;
    mean /= N;
    for (int i = 0; i < N; i++) {
        ck_assert(u[i * N + i] > 0);
        for (int j = 0; j < i; j++)
            ck_assert(u[i * N + j] == 0.0); /* upper triangular */
    }
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++) {
            double s = 0; /* (U^T U A)[i][j], A = H with dead 1 + damp mean I */
            for (int k = 0; k < N; k++) {
                double utu = 0;
                for (int m = 0; m < N; m++)
                    utu += u[m * N + i] * u[m * N + k];
                double a = h[k * N + j];
                if (k == j)
                    a = (a > 0 ? a : 1.0) + damp * mean;
                s += utu * a;
            }
            ck_assert_msg(fabs(s - (i == j)) < FACTOR_TOL, "(U^T U A)[%d][%d] = %.17g", i, j, s);
        }
    /* Not positive definite even when damped: refused. */
    float bad[4] = {1.0f, 1e9f, 1e9f, 1.0f};
    ck_assert_int_eq(hvq_gptq_factor(bad, 2, 0.01, u), -1);
}
END_TEST

/* ---- a host that gives the full Hessian ----------------------------------- */

static hvq_status encode(const hvq_plugin *pl, hvq_ctx *cx, const char *const *kv,
                         const hvq_cluster_input *in, float *recon, hvq_encoded *enc)
{
    th_params tp;
    th_params_make(&tp, pl, kv);
    hvq_encoded_init(enc);
    hvq_ctx_clear_error(cx);
    return pl->cluster_encode(cx, &tp.p, in, recon, enc);
}

/* ---- ggml ---------------------------------------------------------------- */

/* The reference: for each row, at each block start the plugin itself (gptq
 * off, held bit-exact to llama-quantize elsewhere) quantizes the row as
 * updated so far, giving the block's d; each value is then rounded to the
 * nearest code, clamped, under that d (Q4_0: (q - 8) d, q in 0..15), and
 * its error spread by U as the definition says, in the same float and
 * double operations. */
static void ggml_reference(const float *x, int rows, int n, const double *u, float *out)
{
    float *w = malloc((size_t)n * sizeof *w), *tmp = malloc((size_t)n * sizeof *tmp);
    const char *kv[] = {"type=q4_0", "weights=none", NULL};
    for (int r = 0; r < rows; r++) {
        memcpy(w, x + r * n, (size_t)n * sizeof *w);
        for (int b = 0; b < n; b += 32) {
            hvq_encoded enc;
            hvq_cluster_input in = {.tensor_name = "ref", .x = w, .rows = 1, .cols = (uint64_t)n,
                                    .hessian = w /* unused with weights=none */};
            ck_assert_int_eq(encode(ggml, ctx, kv, &in, tmp, &enc), HVQ_OK);
            const uint8_t *blk = (const uint8_t *)ctx->host->enc_get(&enc, "blocks")->data +
                                 b / 32 * 18;
            float d;
            ck_assert_int_eq(ctx->host->convert(ctx, HVQ_DTYPE_F32, &d, HVQ_DTYPE_F16, blk, 1),
                             HVQ_OK);
            hvq_encoded_clear(&enc);
            for (int j = b; j < b + 32; j++) {
                float v = w[j] / d + 8.0f;
                int q = d != 0.0f ? (int)nearbyintf(fminf(fmaxf(v, 0.0f), 15.0f)) : 8;
                float qv = (float)(q - 8) * d;
                out[r * n + j] = qv;
                double e = ((double)w[j] - (double)qv) / u[j * n + j];
                for (int k = j + 1; k < n; k++)
                    w[k] = (float)((double)w[k] - e * u[j * n + k]);
            }
        }
    }
    free(w);
    free(tmp);
}

START_TEST(ggml_gptq_follows_the_definition)
{
    fh_rng = 7; /* the same data forked or not (CK_FORK=no) */
    enum { R = 5, N = 64 };
    static float x[R * N], h[N * N], recon[R * N], plain[R * N], ref[R * N], dec[R * N];
    static double u[N * N];
    for (int i = 0; i < R * N; i++)
        x[i] = (float)(fh_urand() * (i % 17 == 0 ? 0.4 : 0.05));
    fh_make_h(h, N, 300, 9);
    hvq_ctx *cx = fh_ctx_with(ctx, h);
    const char *on[] = {"type=q4_0", "weights=none", "gptq=on", NULL};
    const char *off[] = {"type=q4_0", "weights=none", NULL};
    hvq_cluster_input in = {.tensor_name = "t", .x = x, .rows = R, .cols = N, .hessian = x};
    hvq_encoded enc, enc0;
    ck_assert_msg(encode(ggml, cx, on, &in, recon, &enc) == HVQ_OK, "%s", hvq_ctx_error(cx));
    ck_assert_str_eq(cx->host->enc_attr_get(&enc, "feedback"), "gptq");
    ck_assert_int_eq(ggml->cluster_decode(cx, &enc, R, N, dec), HVQ_OK);
    ck_assert_mem_eq(dec, recon, sizeof dec);
    ck_assert_int_eq(hvq_gptq_factor(h, N, 0.01, u), 0);
    ggml_reference(x, R, N, u, ref);
    for (int i = 0; i < R * N; i++)
        ck_assert_msg(memcmp(&ref[i], &recon[i], 4) == 0, "recon[%d] %a, reference %a", i,
                      (double)recon[i], (double)ref[i]);
    /* It does what it is for: a smaller output error than rounding alone. */
    ck_assert_int_eq(encode(ggml, cx, off, &in, plain, &enc0), HVQ_OK);
    ck_assert_ptr_null(cx->host->enc_attr_get(&enc0, "feedback"));
    double e_on = fh_output_error(x, recon, h, R, N), e_off = fh_output_error(x, plain, h, R, N);
    ck_assert_msg(e_on < e_off, "output error with gptq %g, without %g", e_on, e_off);
    hvq_encoded_clear(&enc);
    hvq_encoded_clear(&enc0);

    /* Every other type with a requant decodes what it reports and shrinks
     * the output error (rows of two super-blocks for the K types). */
    enum { N2 = 512 };
    static float x2[R * N2], h2[N2 * N2], r2[R * N2], p2[R * N2], d2[R * N2];
    for (int i = 0; i < R * N2; i++)
        x2[i] = (float)(fh_urand() * 0.05);
    fh_make_h(h2, N2, 1200, -1);
    cx = fh_ctx_with(ctx, h2);
    const char *types[] = {"type=q4_1", "type=q5_0", "type=q5_1", "type=q8_0", "type=iq4_nl",
                           "type=q4_K", "type=q5_K", "type=q6_K"};
    hvq_cluster_input in2 = {.tensor_name = "t2", .x = x2, .rows = R, .cols = N2, .hessian = x2};
    for (int t = 0; t < 8; t++) {
        const char *kon[] = {types[t], "weights=none", "gptq=on", NULL};
        const char *koff[] = {types[t], "weights=none", NULL};
        ck_assert_msg(encode(ggml, cx, kon, &in2, r2, &enc) == HVQ_OK, "%s", hvq_ctx_error(cx));
        ck_assert_int_eq(ggml->cluster_decode(cx, &enc, R, N2, d2), HVQ_OK);
        ck_assert_mem_eq(d2, r2, sizeof d2);
        ck_assert_int_eq(encode(ggml, cx, koff, &in2, p2, &enc0), HVQ_OK);
        double a = fh_output_error(x2, r2, h2, R, N2), b = fh_output_error(x2, p2, h2, R, N2);
        ck_assert_msg(a < b, "%s: output error with gptq %g, without %g", types[t], a, b);
        hvq_encoded_clear(&enc);
        hvq_encoded_clear(&enc0);
    }
}
END_TEST

/* gptq: auto without a full Hessian is gptq: off, byte for byte; on is
 * refused naming the tensor; col_exponent with gptq is refused. Sparse
 * entries keep the value the residual overwrites and spread nothing. */
START_TEST(ggml_gptq_modes_and_refusals)
{
    fh_rng = 7; /* the same data forked or not (CK_FORK=no) */
    enum { R = 3, N = 64 };
    static float x[R * N], h[N * N], a[R * N], b[R * N];
    for (int i = 0; i < R * N; i++)
        x[i] = (float)(fh_urand() * 0.05);
    fh_make_h(h, N, 200, -1);
    hvq_cluster_input in = {.tensor_name = "blk.0.attn_q.weight", .x = x, .rows = R, .cols = N,
                            .hessian = x};
    hvq_encoded e1, e2;
    hvq_ctx *cx = fh_ctx_with(ctx, NULL);
    const char *aut[] = {"type=q5_0", "gptq=auto", NULL}, *off[] = {"type=q5_0", NULL};
    ck_assert_int_eq(encode(ggml, cx, aut, &in, a, &e1), HVQ_OK);
    ck_assert_int_eq(encode(ggml, cx, off, &in, b, &e2), HVQ_OK);
    ck_assert_mem_eq(cx->host->enc_get(&e1, "blocks")->data,
                     cx->host->enc_get(&e2, "blocks")->data, R * N / 32 * 22);
    hvq_encoded_clear(&e1);
    hvq_encoded_clear(&e2);
    const char *on[] = {"type=q5_0", "gptq=on", NULL};
    ck_assert_int_eq(encode(ggml, cx, on, &in, a, &e1), HVQ_E_INPUT);
    th_assert_contains(hvq_ctx_error(cx), "tensor 'blk.0.attn_q.weight': gptq: on needs the "
                                          "full Hessian");
    hvq_encoded_clear(&e1);
    cx = fh_ctx_with(ctx, h);
    /* Types without a requant (q2_K, q3_K, iq4_xs): on is refused, auto
     * leaves llama.cpp's bytes. */
    static float xk[R * 256], hk[256 * 256], ka[R * 256], kb[R * 256];
    for (int i = 0; i < R * 256; i++)
        xk[i] = (float)(fh_urand() * 0.05);
    fh_make_h(hk, 256, 300, -1);
    hvq_cluster_input ink = {.tensor_name = "blk.0.ffn_up.weight", .x = xk, .rows = R,
                             .cols = 256, .hessian = xk};
    cx = fh_ctx_with(ctx, hk);
    const char *kon[] = {"type=q3_K", "gptq=on", NULL}, *kauto[] = {"type=q3_K", "gptq=auto", NULL},
               *koff[] = {"type=q3_K", NULL};
    ck_assert_int_eq(encode(ggml, cx, kon, &ink, ka, &e1), HVQ_E_INPUT);
    th_assert_contains(hvq_ctx_error(cx), "gptq works with the types whose codes it can set");
    hvq_encoded_clear(&e1);
    ck_assert_int_eq(encode(ggml, cx, kauto, &ink, ka, &e1), HVQ_OK);
    ck_assert_int_eq(encode(ggml, cx, koff, &ink, kb, &e2), HVQ_OK);
    ck_assert_mem_eq(cx->host->enc_get(&e1, "blocks")->data,
                     cx->host->enc_get(&e2, "blocks")->data, R * 110);
    ck_assert_ptr_null(cx->host->enc_attr_get(&e1, "feedback"));
    hvq_encoded_clear(&e1);
    hvq_encoded_clear(&e2);
    const char *both[] = {"type=q5_0", "gptq=on", "col_exponent=0.5", NULL};
    ck_assert_int_eq(encode(ggml, cx, both, &in, a, &e1), HVQ_E_INPUT);
    th_assert_contains(hvq_ctx_error(cx), "gptq and col_exponent cannot be combined");
    hvq_encoded_clear(&e1);
    /* The real host refuses an input it did not make. */
    hvq_ctx_clear_error(ctx);
    ck_assert_int_eq(ctx->host->hessian_full(ctx, &in, h), HVQ_E_INTERNAL);
    /* Sparse entries: with a residual keeping positions 3 and 70, the
     * blocks see 0 there, and the rows are those of the same matrix with
     * those columns' errors not spread. */
    static const uint64_t pos[] = {3, 70};
    float xs[R * N];
    memcpy(xs, x, sizeof xs);
    xs[3] = xs[70] = 0.0f;
    hvq_cluster_input sp = in;
    sp.x = xs;
    sp.sparse_pos = pos;
    sp.n_sparse = 2;
    ck_assert_int_eq(encode(ggml, cx, on, &sp, a, &e1), HVQ_OK);
    ck_assert_int_eq(encode(ggml, cx, on, &in, b, &e2), HVQ_OK);
    ck_assert_mem_eq(a + 2 * N, b + 2 * N, N * sizeof *a); /* row 2 has none */
    hvq_encoded_clear(&e1);
    hvq_encoded_clear(&e2);
}
END_TEST

/* requant of every type that has one (the plugin's quantizers compiled
 * into this test): the value it returns is what ggml's dequantization of
 * the block gives at j, no other value moves, and it is the nearest of the
 * codes' values, which are evenly spaced (iq4_nl: one of sixteen fixed
 * levels times the scale) between those that targets beyond either end
 * give. */
START_TEST(requant_sets_the_nearest_code)
{
    fh_rng = 7;
    const char *names[] = {"q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q4_K", "q5_K", "q6_K"};
    const int levels[] = {16, 16, 32, 32, 256, 16, 32, 64};
    for (int t = 0; t < 8; t++) {
        const hvq_ggml_type *ty = hvq_ggml_type_find(names[t]);
        ck_assert_ptr_nonnull(ty);
        ck_assert_ptr_nonnull(ty->requant);
        const int n = ty->block;
        float x[256], before[256], after[256];
        uint8_t blk[256];
        for (int trial = 0; trial < 50; trial++) {
            for (int i = 0; i < n; i++)
                x[i] = (float)(fh_urand() * (i % 13 == 0 ? 1.0 : 0.2));
            ty->quantize_row(x, NULL, blk, n);
            int j = (int)((fh_urand() + 1.0) * 0.5 * n) % n;
            ty->dequantize_row(blk, before, n);
            float lo = ty->requant(blk, j, -1e30f), hi = ty->requant(blk, j, 1e30f);
            float step = (hi - lo) / (float)(levels[t] - 1);
            float target = (float)(fh_urand() * 1.5);
            float v = ty->requant(blk, j, target);
            ty->dequantize_row(blk, after, n);
            ck_assert_msg(memcmp(&v, &after[j], 4) == 0, "%s: requant %a, decoded %a", names[t],
                          (double)v, (double)after[j]);
            for (int i = 0; i < n; i++)
                if (i != j)
                    ck_assert_msg(memcmp(&before[i], &after[i], 4) == 0, "%s: value %d moved",
                                  names[t], i);
            ck_assert(v >= fminf(lo, hi) && v <= fmaxf(lo, hi));
            /* nearest: within half a step, unless clamped at an end; the
             * tolerance covers the float rounding of the scales */
            int clamped = (target <= fminf(lo, hi) && v == fminf(lo, hi)) ||
                          (target >= fmaxf(lo, hi) && v == fmaxf(lo, hi));
            ck_assert_msg(clamped || fabsf(target - v) <= 0.5f * fabsf(step) * 1.0001f + 1e-7f,
                          "%s: target %g gave %g, step %g", names[t], (double)target, (double)v,
                          (double)step);
        }
    }
}
END_TEST

/* ---- kmeans -------------------------------------------------------------- */

/* The reference: the codebook as trained (the same with or without
 * feedback), then per row each value to its nearest level (ties to the
 * lower index) and its error spread by U. */
START_TEST(kmeans_gptq_follows_the_definition)
{
    fh_rng = 7; /* the same data forked or not (CK_FORK=no) */
    enum { R = 6, N = 40, K = 8 };
    static float x[R * N], h[N * N], recon[R * N], plain[R * N], dec[R * N];
    static double u[N * N];
    for (int i = 0; i < R * N; i++)
        x[i] = (float)(fh_urand() * 0.8);
    fh_make_h(h, N, 300, 11);
    hvq_ctx *cx = fh_ctx_with(ctx, h);
    const char *on[] = {"block_size=1", "centroids=8", "gptq=on", NULL};
    const char *off[] = {"block_size=1", "centroids=8", NULL};
    hvq_cluster_input in = {.tensor_name = "t", .x = x, .rows = R, .cols = N, .hessian = x,
                            .seed = 3};
    hvq_encoded enc, enc0;
    ck_assert_msg(encode(kmeans, cx, on, &in, recon, &enc) == HVQ_OK, "%s", hvq_ctx_error(cx));
    ck_assert_int_eq(encode(kmeans, cx, off, &in, plain, &enc0), HVQ_OK);
    const hvq_component *cb = cx->host->enc_get(&enc, "codebook");
    ck_assert_mem_eq(cb->data, cx->host->enc_get(&enc0, "codebook")->data, K * 2);
    ck_assert_str_eq(cx->host->enc_attr_get(&enc, "feedback"), "gptq");
    ck_assert_int_eq(kmeans->cluster_decode(cx, &enc, R, N, dec), HVQ_OK);
    ck_assert_mem_eq(dec, recon, sizeof dec);
    float c[K];
    ck_assert_int_eq(cx->host->convert(cx, HVQ_DTYPE_F32, c, HVQ_DTYPE_F16, cb->data, K), HVQ_OK);
    ck_assert_int_eq(hvq_gptq_factor(h, N, 0.01, u), 0);
    for (int r = 0; r < R; r++) {
        float w[N];
        memcpy(w, x + r * N, sizeof w);
        for (int j = 0; j < N; j++) {
            int best = 0;
            for (int k = 1; k < K; k++)
                if (fabsf(w[j] - c[k]) < fabsf(w[j] - c[best]))
                    best = k;
            ck_assert_msg(memcmp(&c[best], &recon[r * N + j], 4) == 0,
                          "row %d col %d: %a, reference %a", r, j, (double)recon[r * N + j],
                          (double)c[best]);
            double e = ((double)w[j] - (double)c[best]) / u[j * N + j];
            for (int k = j + 1; k < N; k++)
                w[k] = (float)((double)w[k] - e * u[j * N + k]);
        }
    }
    double e_on = fh_output_error(x, recon, h, R, N), e_off = fh_output_error(x, plain, h, R, N);
    ck_assert_msg(e_on < e_off, "output error with gptq %g, without %g", e_on, e_off);
    hvq_encoded_clear(&enc);
    hvq_encoded_clear(&enc0);
    /* on needs block_size 1 without gains; auto skips the others. */
    const char *vec[] = {"block_size=2", "centroids=8", "gptq=on", NULL};
    ck_assert_int_eq(encode(kmeans, cx, vec, &in, recon, &enc), HVQ_E_INPUT);
    th_assert_contains(hvq_ctx_error(cx), "kmeans gptq: on needs block_size 1 and no gains");
    hvq_encoded_clear(&enc);
    const char *va[] = {"block_size=2", "centroids=8", "gptq=auto", NULL};
    ck_assert_int_eq(encode(kmeans, cx, va, &in, recon, &enc), HVQ_OK);
    ck_assert_ptr_null(cx->host->enc_attr_get(&enc, "feedback"));
    hvq_encoded_clear(&enc);
}
END_TEST

/* ---- the real binary ------------------------------------------------------- */

/* calibrate with full: true feeds gptq through the driver; without a full
 * Hessian, gptq: on stops the run with exit 2 and no output. */
START_TEST(pipeline_with_calibrated_full_hessian)
{
    char *dir = th_tmpdir("gptq"), out[4096], rep[4096], tok[4200];
    snprintf(out, sizeof out, "%s/q5.hvq", dir);
    snprintf(rep, sizeof rep, "%s/q5.json", dir);
    snprintf(tok, sizeof tok, "stages.hessian.tokens=%s",
             th_src("models/stories260K/tinystories-calib.tok512.npy"));
    const char *args[] = {"run", th_src("pipelines/q4_0.yaml"), "-q", "--input",
                          th_src("models/stories260K"), "-o", out, "-r", rep,
                          "--set", "stages.clusterer.type=q5_0",
                          "--set", "stages.clusterer.gptq=on",
                          "--set", "stages.hessian.plugin=calibrate",
                          "--set", tok, "--set", "stages.hessian.windows=2",
                          "--set", "stages.hessian.full=true", NULL};
    char *o = NULL, *e = NULL;
    ck_assert_msg(th_run(&o, &e, args) == 0, "%s", e);
    ck_assert(th_exists(out));
    free(o);
    free(e);
    /* the same without full: true */
    args[20] = "stages.hessian.full=false";
    char out2[4200];
    snprintf(out2, sizeof out2, "%s/q5b.hvq", dir);
    args[6] = out2;
    ck_assert_int_eq(th_run(&o, &e, args), 2);
    th_assert_contains(e, "gptq: on needs the full Hessian");
    ck_assert(!th_exists(out2));
    free(o);
    free(e);
    /* A full Hessian that is not symmetric (tests/broken/asym_h.c) is
     * refused by the driver before the clusterer uses it. */
    char plugdir[4200];
    snprintf(plugdir, sizeof plugdir, "%s/tests/broken/.libs", th_builddir());
    const char *asym[] = {"--plugin-dir", plugdir, "run", th_src("pipelines/q4_0.yaml"), "-q",
                          "--input", th_src("models/stories260K"), "-o", out2, "-r", rep,
                          "--set", "stages.clusterer.gptq=on",
                          "--set", "stages.hessian.plugin=asym", NULL};
    ck_assert_int_eq(th_run(&o, &e, asym), 2);
    th_assert_contains(e, "hessian 'asym' gave a full matrix that is not finite and symmetric "
                          "with a non-negative diagonal (at [0, 1])");
    ck_assert(!th_exists(out2));
    free(o);
    free(e);
    th_rmtree(dir);
    free(dir);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("gptq");
    TCase *tc = tcase_create("gptq");
    tcase_add_unchecked_fixture(tc, load, unload);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, factor_inverts_the_damped_hessian);
    tcase_add_test(tc, ggml_gptq_follows_the_definition);
    tcase_add_test(tc, ggml_gptq_modes_and_refusals);
    tcase_add_test(tc, requant_sets_the_nearest_code);
    tcase_add_test(tc, kmeans_gptq_follows_the_definition);
    tcase_add_test(tc, pipeline_with_calibrated_full_hessian);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
