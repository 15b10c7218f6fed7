/* The residual coder "coo16" (positions as uint32, corrections as fp16):
 * how many entries it keeps, the targets it reconstructs to fp16 precision,
 * an identical decode, and corrupt positions refused. */
#include "config.h"

#include "dtype.h"
#include "stage.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ctx th_env_ctx()

START_TEST(coo16_count_is_floor_of_rho_numel)
{
    const hvq_plugin *d = th_env_plugin(HVQ_KIND_RESIDUAL, "coo16");
    th_params tp;
    const char *mid[] = {"sparsity=0.015", NULL}, *high[] = {"sparsity=2%", NULL};
    th_params_make(&tp, d, mid);
    ck_assert_uint_eq(d->residual_count(&tp.p, 2048ull * 2048), 62914); /* 62914.56 */
    ck_assert_uint_eq(d->residual_count(&tp.p, 4096), 61);              /* 61.44 */
    th_params_make(&tp, d, high);
    ck_assert_uint_eq(d->residual_count(&tp.p, 2048ull * 2048), 83886); /* 83886.08 */
    ck_assert_uint_eq(d->residual_count(&tp.p, 10), 0);
}
END_TEST

/* The tolerance for "equals W_norm to fp16 precision": the correction S is
 * one fp16 value, so the error is at most half an fp16 ulp of S: |S| * 2^-11
 * for normal values, 2^-25 absolute in fp16's subnormal range; plus float32
 * rounding of the addition (2^-24 relative to the result). */
static double coo16_tolerance(float s, float target)
{
    return fabs(s) * 0x1p-11 + 0x1p-25 + fabs(target) * 0x1p-23;
}

START_TEST(coo16_reconstructs_targets_and_decodes_identically)
{
    enum { R = 16, C = 24, N = R * C, K = 40 };
    float recon[N], body[N], target[K];
    uint64_t pos[K];
    th_fill_heavy(body, N, 2);
    memcpy(recon, body, sizeof recon);
    th_rng_state = 99;
    for (int i = 0; i < K; i++) {
        pos[i] = (uint64_t)i * 9 + (uint64_t)(th_urand() * 8); /* ascending, distinct */
        target[i] = (float)(th_urand() * 2 - 1);
    }
    target[0] = recon[pos[0]];        /* a zero correction */
    target[1] = recon[pos[1]] + 1e-7f; /* a tiny one (fp16 subnormal range) */
    const hvq_plugin *d = th_env_plugin(HVQ_KIND_RESIDUAL, "coo16");
    th_params tp;
    th_params_make(&tp, d, NULL);
    hvq_encoded enc;
    hvq_encoded_init(&enc);
    hvq_residual_input in = {.tensor_name = "t", .rows = R, .cols = C, .pos = pos,
                             .target = target, .n = K, .recon = recon};
    ck_assert_int_eq(d->residual_encode(ctx, &tp.p, &in, &enc), HVQ_OK);
    for (int i = 0; i < K; i++) {
        float s = target[i] - body[pos[i]];
        double err = fabs((double)recon[pos[i]] - target[i]);
        ck_assert_msg(err <= coo16_tolerance(s, target[i]),
                      "entry %d: |recon - target| = %g > tolerance %g", i, err,
                      coo16_tolerance(s, target[i]));
    }
    for (int i = 0, k = 0; i < N; i++) { /* untouched elsewhere */
        if (k < K && (uint64_t)i == pos[k]) {
            k++;
            continue;
        }
        ck_assert(recon[i] == body[i]);
    }
    const hvq_component *pc = ctx->host->enc_get(&enc, "positions");
    ck_assert_ptr_nonnull(pc);
    ck_assert_uint_eq(pc->paper_bits + ctx->host->enc_get(&enc, "values")->paper_bits, 48 * K);
    float dec[N];
    memcpy(dec, body, sizeof dec);
    ck_assert_int_eq(d->residual_decode(ctx, &enc, R, C, dec), HVQ_OK);
    ck_assert_int_eq(memcmp(dec, recon, sizeof dec), 0);
    /* A corrupt stream is bad input, not a crash. */
    uint32_t *p32 = ctx->host->enc_get(&enc, "positions")->data;
    p32[5] = p32[4];
    ck_assert_int_eq(d->residual_decode(ctx, &enc, R, C, dec), HVQ_E_INPUT);
    th_assert_contains(hvq_ctx_error(ctx), "not ascending");
    p32[5] = N + 1;
    ck_assert_int_eq(d->residual_decode(ctx, &enc, R, C, dec), HVQ_E_INPUT);
    hvq_encoded_clear(&enc);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("coo16");
    TCase *tc = tcase_create("stage");
    tcase_add_checked_fixture(tc, th_env_setup, th_env_teardown);
    tcase_add_test(tc, coo16_count_is_floor_of_rho_numel);
    tcase_add_test(tc, coo16_reconstructs_targets_and_decodes_identically);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return th_run_suite(suite()); }
