/* The clusterer "rtn" (round to nearest, per row or per group, symmetric or
 * asymmetric) against a scalar reference, its bit accounting, its decode,
 * and the corrupt components it refuses. */
#include "config.h"

#include "dtype.h"
#include "stage.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ctx th_env_ctx()

/* Scalar reference of the rtn clusterer (see plugins/clusterer-rtn/rtn.c). */
static void rtn_ref(const float *w, size_t rows, size_t cols, size_t g, int asym, float *out)
{
    size_t gs = g == 0 || g >= cols ? cols : g;
    for (size_t r = 0; r < rows; r++)
        for (size_t c0 = 0; c0 < cols; c0 += gs) {
            size_t c1 = c0 + gs < cols ? c0 + gs : cols;
            float lo = w[r * cols + c0], hi = lo, amax = 0;
            for (size_t c = c0; c < c1; c++) {
                float v = w[r * cols + c];
                lo = v < lo ? v : lo;
                hi = v > hi ? v : hi;
                amax = fabsf(v) > amax ? fabsf(v) : amax;
            }
            float m = asym ? hvq_f16_to_f32(hvq_f32_to_f16(lo)) : 0.0f;
            float scale = hvq_f16_to_f32(hvq_f32_to_f16(asym ? (hi - m) / 15.0f : amax / 7.0f));
            for (size_t c = c0; c < c1; c++) {
                float q = 0;
                if (scale > 0) {
                    q = roundf((w[r * cols + c] - m) / scale);
                    float qlo = asym ? 0 : -7, qhi = asym ? 15 : 7;
                    q = q < qlo ? qlo : q > qhi ? qhi : q;
                }
                out[r * cols + c] = q * scale + m;
            }
        }
}

START_TEST(rtn_matches_reference_and_decodes_identically)
{
    enum { R = 9, C = 172 };
    static float w[R * C], recon[R * C], ref[R * C], dec[R * C];
    th_fill_heavy(w, R * C, 3);
    for (int c = 0; c < C; c++)
        w[4 * C + c] = 0.0f; /* an all-zero row */
    const hvq_plugin *d = th_env_plugin(HVQ_KIND_CLUSTERER, "rtn");
    ck_assert(d->flags & HVQ_CLUSTERER_RAW);
    struct { const char *g, *mode; size_t gs; int asym; uint64_t groups; } cases[] = {
        {"0", "symmetric", 0, 0, 1},      {"32", "symmetric", 32, 0, 6},
        {"128", "symmetric", 128, 0, 2},  {"32", "asymmetric", 32, 1, 6},
        {"1000", "symmetric", 1000, 0, 1}, {"1", "asymmetric", 1, 1, C},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char gkv[32], mkv[32];
        snprintf(gkv, sizeof gkv, "group_size=%s", cases[k].g);
        snprintf(mkv, sizeof mkv, "mode=%s", cases[k].mode);
        const char *kv[] = {gkv, mkv, NULL};
        th_params tp;
        th_params_make(&tp, d, kv);
        float ones[C];
        for (int c = 0; c < C; c++)
            ones[c] = 1.0f;
        hvq_cluster_input in = {.tensor_name = "t", .x = w, .rows = R, .cols = C,
                                .hessian = ones, .seed = 1};
        hvq_encoded enc;
        hvq_encoded_init(&enc);
        ck_assert_int_eq(d->cluster_encode(ctx, &tp.p, &in, recon, &enc), HVQ_OK);
        rtn_ref(w, R, C, cases[k].gs, cases[k].asym, ref);
        ck_assert_msg(memcmp(recon, ref, sizeof ref) == 0, "case %zu differs from reference", k);
        for (int c = 0; c < C; c++)
            ck_assert(recon[4 * C + c] == 0.0f);
        uint64_t bits = 0;
        for (size_t i = 0; i < enc.n_components; i++)
            bits += enc.components[i].paper_bits;
        /* 4 bits per weight + 16 per scale (and per min) per group per row */
        ck_assert_uint_eq(bits, 4ull * R * C + 16ull * R * cases[k].groups * (cases[k].asym ? 2 : 1));
        memset(dec, 0xff, sizeof dec);
        ck_assert_int_eq(d->cluster_decode(ctx, &enc, R, C, dec), HVQ_OK);
        ck_assert_int_eq(memcmp(dec, recon, sizeof dec), 0);
        hvq_encoded_clear(&enc);
    }
}
END_TEST

START_TEST(rtn_levels_are_symmetric_minus7_to_7)
{
    /* A row 0..7 * 0.5 must map to levels 0..7 exactly (scale 0.5). */
    float w[8] = {0, 0.5f, -1.0f, 1.5f, -2.0f, 2.5f, -3.0f, 3.5f}, recon[8];
    const hvq_plugin *d = th_env_plugin(HVQ_KIND_CLUSTERER, "rtn");
    th_params tp;
    th_params_make(&tp, d, NULL);
    float ones[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    hvq_cluster_input in = {.tensor_name = "t", .x = w, .rows = 1, .cols = 8, .hessian = ones};
    hvq_encoded enc;
    hvq_encoded_init(&enc);
    ck_assert_int_eq(d->cluster_encode(ctx, &tp.p, &in, recon, &enc), HVQ_OK);
    ck_assert_int_eq(memcmp(w, recon, sizeof w), 0);
    const uint8_t *lv = ctx->host->enc_get(&enc, "levels")->data;
    /* codes q+8: 8,9,6,11,4,13,2,15 -> low nibble first */
    ck_assert_uint_eq(lv[0], 8 | 9 << 4);
    ck_assert_uint_eq(lv[1], 6 | 11 << 4);
    ck_assert_uint_eq(lv[2], 4 | 13 << 4);
    ck_assert_uint_eq(lv[3], 2 | 15 << 4);
    hvq_encoded_clear(&enc);
}
END_TEST

START_TEST(rtn_rejects_values_beyond_fp16)
{
    float w[4] = {1e6f, 0, 0, 0}, recon[4];
    const hvq_plugin *d = th_env_plugin(HVQ_KIND_CLUSTERER, "rtn");
    th_params tp;
    th_params_make(&tp, d, NULL);
    float ones[4] = {1, 1, 1, 1};
    hvq_cluster_input in = {.tensor_name = "big", .x = w, .rows = 1, .cols = 4, .hessian = ones};
    hvq_encoded enc;
    hvq_encoded_init(&enc);
    ck_assert_int_eq(d->cluster_encode(ctx, &tp.p, &in, recon, &enc), HVQ_E_INPUT);
    th_assert_contains(hvq_ctx_error(ctx), "tensor 'big': row 0");
    hvq_encoded_clear(&enc);
}
END_TEST

START_TEST(rtn_decode_refuses_corrupt_components)
{
    float w[64], recon[64];
    th_fill_heavy(w, 64, 5);
    const hvq_plugin *d = th_env_plugin(HVQ_KIND_CLUSTERER, "rtn");
    th_params tp;
    th_params_make(&tp, d, NULL);
    float ones[16];
    for (int i = 0; i < 16; i++)
        ones[i] = 1;
    hvq_cluster_input in = {.tensor_name = "t", .x = w, .rows = 4, .cols = 16, .hessian = ones};
    hvq_encoded enc;
    hvq_encoded_init(&enc);
    ck_assert_int_eq(d->cluster_encode(ctx, &tp.p, &in, recon, &enc), HVQ_OK);
    ck_assert_int_eq(d->cluster_check(ctx, &enc, 4, 16), HVQ_OK);
    /* decoding as a larger matrix than the components hold: refused by
     * decode and by the layout check the host runs before allocating */
    ck_assert_int_eq(d->cluster_decode(ctx, &enc, 8, 16, recon), HVQ_E_INPUT);
    th_assert_contains(hvq_ctx_error(ctx), "wrong size");
    hvq_ctx_clear_error(ctx);
    ck_assert_int_eq(d->cluster_check(ctx, &enc, 1024, 1048576), HVQ_E_INPUT);
    th_assert_contains(hvq_ctx_error(ctx), "wrong size for a 1024x1048576 matrix");
    hvq_ctx_clear_error(ctx);
    static const char *const bad_group[] = {"", "-1", "+4", "4x", NULL};
    for (int i = 0; bad_group[i]; i++) {
        ck_assert_int_eq(ctx->host->enc_attr(ctx, &enc, "group_size", bad_group[i]), HVQ_OK);
        ck_assert_int_eq(d->cluster_check(ctx, &enc, 4, 16), HVQ_E_INPUT);
        th_assert_contains(hvq_ctx_error(ctx), "rtn: bad attributes group_size");
        hvq_ctx_clear_error(ctx);
    }
    ck_assert_int_eq(ctx->host->enc_attr(ctx, &enc, "group_size", "0"), HVQ_OK);
    ck_assert_int_eq(d->cluster_check(ctx, &enc, 4, 16), HVQ_OK);
    ck_assert_int_eq(ctx->host->enc_attr(ctx, &enc, "mode", "sideways"), HVQ_OK);
    ck_assert_int_eq(d->cluster_decode(ctx, &enc, 4, 16, recon), HVQ_E_INPUT);
    ck_assert_int_eq(d->cluster_check(ctx, &enc, 4, 16), HVQ_E_INPUT);
    hvq_encoded_clear(&enc);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("rtn");
    TCase *tc = tcase_create("stage");
    tcase_add_checked_fixture(tc, th_env_setup, th_env_teardown);
    tcase_add_test(tc, rtn_matches_reference_and_decodes_identically);
    tcase_add_test(tc, rtn_levels_are_symmetric_minus7_to_7);
    tcase_add_test(tc, rtn_rejects_values_beyond_fp16);
    tcase_add_test(tc, rtn_decode_refuses_corrupt_components);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return th_run_suite(suite()); }
