/* The importance plugin "obd": Optimal Brain Damage saliency H * W_norm^2,
 * H floored at h_floor, bit for bit on a fixture (stage harness). */
#include "config.h"

#include "stage.h"

static float obd_ref(float w, float h) { return h * w * w; }

START_TEST(scores_are_h_times_w_squared)
{
    th_importance_matches("obd", obd_ref);
}
END_TEST

START_TEST(h_floor_is_a_parameter)
{
    float w[2] = {0.5f, -2.0f}, h[2] = {0.0f, 4.0f}, s[2];
    const char *kv[] = {"h_floor=0.25", NULL};
    th_stage st;
    th_stage_init(&st, HVQ_KIND_IMPORTANCE, "obd", kv);
    ck_assert_int_eq(th_stage_score(&st, w, 1, 2, h, s), HVQ_OK);
    ck_assert(s[0] == 0.25f * 0.25f && s[1] == 16.0f);
    th_stage_fini(&st);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("obd");
    TCase *tc = tcase_create("stage");
    tcase_add_test(tc, scores_are_h_times_w_squared);
    tcase_add_test(tc, h_floor_is_a_parameter);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return th_run_suite(suite()); }
