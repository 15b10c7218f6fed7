/* The residual coder "none": keeps no entry, stores nothing, and its decode
 * leaves the reconstruction as it is (stage harness). */
#include "config.h"

#include "stage.h"

#include <string.h>

START_TEST(keeps_nothing)
{
    th_stage s;
    float recon[6] = {1, 2, 3, 4, 5, 6}, before[6];
    memcpy(before, recon, sizeof recon);
    th_stage_init(&s, HVQ_KIND_RESIDUAL, "none", NULL);
    ck_assert_uint_eq(th_stage_count(&s, 0), 0);
    ck_assert_uint_eq(th_stage_count(&s, 1000000), 0);
    hvq_residual_input in = {.tensor_name = "t", .rows = 2, .cols = 3, .n = 0, .recon = recon};
    ck_assert_int_eq(th_stage_residual(&s, &in), HVQ_OK);
    ck_assert_uint_eq(s.enc.n_components, 0);
    ck_assert_int_eq(th_stage_decode(&s, NULL, 2, 3, recon), HVQ_OK);
    ck_assert(memcmp(recon, before, sizeof recon) == 0);
    th_stage_fini(&s);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("none");
    TCase *tc = tcase_create("stage");
    tcase_add_test(tc, keeps_nothing);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return th_run_suite(suite()); }
