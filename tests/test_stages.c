/* What is left of the first stage tests (each plugin now has a test file
 * of its own): size parameters, and k-means' gains against a reference. */
#include "config.h"

#include "dtype.h"
#include "harness.h"
#include "params.h"

#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Deterministic heavy-tailed test data (ratio of normals has heavy tails;
 * clipped to stay finite and within fp16 range). */
static uint64_t rng_state;
static double urand(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return ((rng_state >> 11) + 0.5) / 9007199254740992.0;
}
static float heavy(void)
{
    double u1 = urand(), u2 = urand(), u3 = urand(), u4 = urand();
    double z = sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2);
    double w = sqrt(-2 * log(u3)) * cos(6.283185307179586 * u4);
    double v = z / (0.5 + fabs(w)) * 0.02;
    return (float)(v > 1 ? 1 : v < -1 ? -1 : v);
}
static void fill(float *x, size_t n, uint64_t seed)
{
    rng_state = seed;
    for (size_t i = 0; i < n; i++)
        x[i] = heavy();
}

static hvq_ctx *ctx;
static hvq_registry *reg;

static void setup(void)
{
    ctx = th_ctx();
    reg = th_registry(ctx);
}

static void teardown(void)
{
    hvq_ctx_free(ctx);
    hvq_registry_free(reg);
}

static const hvq_plugin *plugin(uint32_t kind, const char *name)
{
    return th_plugin(reg, kind, name);
}

START_TEST(size_parameters_parse_units)
{
    hvq_param_spec spec = {"max_shard_size", HVQ_PARAM_SIZE, "0", 0, 0, NULL, ""};
    struct { const char *text; int64_t bytes; } ok[] = {
        {"0", 0}, {"4096", 4096}, {"500MB", 500000000}, {"5GB", 5000000000ll},
        {"2GiB", 2147483648ll}, {"10 kib", 10240}, {"1T", 1000000000000ll}, {"7b", 7},
    };
    char why[256];
    hvq_value v;
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        ck_assert_msg(hvq_param_parse(&spec, ok[i].text, &v, why, sizeof why) == HVQ_OK, "%s: %s",
                      ok[i].text, why);
        ck_assert_int_eq(v.i, ok[i].bytes);
    }
    ck_assert_int_eq(hvq_param_parse(&spec, "5 parsecs", &v, why, sizeof why), HVQ_E_INPUT);
    ck_assert_str_eq(why, "unknown size unit 'parsecs' in '5 parsecs' (use B, KB, MB, GB, TB or "
                          "KiB, MiB, GiB, TiB)");
    ck_assert_int_eq(hvq_param_parse(&spec, "-5GB", &v, why, sizeof why), HVQ_E_INPUT);
    ck_assert_int_eq(hvq_param_parse(&spec, "99999999999TB", &v, why, sizeof why), HVQ_E_INPUT);
    ck_assert_str_eq(why, "99999999999TB is too large");
    spec.min = 1024;
    spec.max = 1e12;
    ck_assert_int_eq(hvq_param_parse(&spec, "1KB", &v, why, sizeof why), HVQ_E_INPUT);
    ck_assert_str_eq(why, "1KB (1000 bytes) is outside 1024..1000000000000");
    ck_assert_str_eq(hvq_param_type_name(HVQ_PARAM_SIZE), "size");
}
END_TEST

/* ---- kmeans scale modes (gains) ------------------------------------------- */

/* The gains of kmeans_gain.h by their definition: column gains
 * fp16((h_j / mean h)^a), then per group of G columns fp16 of the RMS of
 * x * c over the group's entries that are not sparse. */
static void gains_ref(const float *x, size_t rows, size_t cols, size_t g, const float *h,
                      double a, const uint64_t *sparse, size_t ns, float *cg, float *gains)
{
    double mean = 0;
    for (size_t j = 0; j < cols; j++)
        mean += h[j];
    mean /= (double)cols;
    for (size_t j = 0; j < cols; j++)
        cg[j] = hvq_f16_to_f32(hvq_f32_to_f16((float)pow(h[j] / mean, a)));
    size_t ng = (cols + g - 1) / g, sp = 0;
    for (size_t r = 0; r < rows; r++)
        for (size_t k = 0; k < ng; k++) {
            double sum = 0;
            size_t n = 0;
            for (size_t c = k * g; c < (k + 1) * g && c < cols; c++) {
                if (sp < ns && sparse[sp] == r * cols + c) {
                    sp++;
                    continue;
                }
                double v = (double)(x[r * cols + c] * cg[c]);
                sum += v * v;
                n++;
            }
            gains[r * ng + k] = hvq_f16_to_f32(hvq_f32_to_f16((float)sqrt(sum / (double)n)));
        }
}

START_TEST(kmeans_gains_match_reference_and_decode_identically)
{
    enum { R = 6, C = 100, G = 32, NG = 4 };
    static float x[R * C], recon[R * C], dec[R * C], h[C], cg[C], gref[R * NG], gout[R * NG];
    static const uint64_t sparse[] = {3, 40, 41, 150, 333, 599};
    fill(x, R * C, 11);
    for (size_t i = 0; i < sizeof sparse / sizeof sparse[0]; i++)
        x[sparse[i]] = 0.0f; /* the body: sparse entries removed */
    for (int j = 0; j < C; j++)
        h[j] = (float)exp(2.0 * sin(0.7 * j));
    const hvq_plugin *d = plugin(HVQ_KIND_CLUSTERER, "kmeans");
    const char *kv[] = {"centroids=16", "scale=rms", "scale_group=32", "col_exponent=0.25", NULL};
    th_params tp;
    th_params_make(&tp, d, kv);
    hvq_cluster_input in = {.tensor_name = "t", .x = x, .rows = R, .cols = C, .hessian = h,
                            .sparse_pos = sparse, .n_sparse = 6, .seed = 5};
    hvq_encoded enc;
    hvq_encoded_init(&enc);
    ck_assert_int_eq(d->cluster_encode(ctx, &tp.p, &in, recon, &enc), HVQ_OK);
    gains_ref(x, R, C, G, h, 0.25, sparse, 6, cg, gref);
    const hvq_component *gc = ctx->host->enc_get(&enc, "gains");
    const hvq_component *cc = ctx->host->enc_get(&enc, "col_gains");
    ck_assert_ptr_nonnull(gc);
    ck_assert_ptr_nonnull(cc);
    ck_assert_int_eq(gc->shape[0], R);
    ck_assert_int_eq(gc->shape[1], NG);
    for (size_t i = 0; i < R * NG; i++)
        gout[i] = hvq_f16_to_f32(((const uint16_t *)gc->data)[i]);
    ck_assert_int_eq(memcmp(gout, gref, sizeof gref), 0);
    for (size_t j = 0; j < C; j++)
        ck_assert(hvq_f16_to_f32(((const uint16_t *)cc->data)[j]) == cg[j]);
    /* 16 bits per gain and per column gain on top of codebook and indices */
    ck_assert_uint_eq(gc->paper_bits, 16ull * R * NG);
    ck_assert_uint_eq(cc->paper_bits, 16ull * C);
    memset(dec, 0xff, sizeof dec);
    ck_assert_int_eq(d->cluster_check(ctx, &enc, R, C), HVQ_OK);
    ck_assert_int_eq(d->cluster_decode(ctx, &enc, R, C, dec), HVQ_OK);
    ck_assert_int_eq(memcmp(dec, recon, sizeof dec), 0);
    /* the reconstruction is the codebook entries times the gains over the
     * column gains: within a codebook step of x (tolerance: a loose bound
     * of 16 centroids' quantization error on this heavy-tailed data) */
    double e2 = 0, w2 = 0;
    for (size_t i = 0; i < R * C; i++) {
        e2 += (x[i] - recon[i]) * (double)(x[i] - recon[i]);
        w2 += x[i] * (double)x[i];
    }
    ck_assert_double_lt(e2 / w2, 0.25);
    /* a negative gain and a missing column gain are refused */
    ((uint16_t *)gc->data)[2] = 0xbc00; /* -1.0 */
    ck_assert_int_eq(d->cluster_decode(ctx, &enc, R, C, dec), HVQ_E_INPUT);
    ((hvq_component *)cc)->nbytes = 2 * (C - 1);
    ck_assert_int_eq(d->cluster_check(ctx, &enc, R, C), HVQ_E_INPUT);
    hvq_encoded_clear(&enc);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("stages");
    TCase *tc = tcase_create("plugins");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, size_parameters_parse_units);
    tcase_add_test(tc, kmeans_gains_match_reference_and_decode_identically);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
