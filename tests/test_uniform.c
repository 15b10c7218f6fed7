/* The hessian plugin "uniform": H = 1 for every input column of every
 * tensor (stage harness). */
#include "config.h"

#include "stage.h"

START_TEST(every_diagonal_is_one)
{
    th_stage s;
    float h[300];
    th_stage_init(&s, HVQ_KIND_HESSIAN, "uniform", NULL);
    ck_assert_int_eq(th_stage_hessian_open(&s, "model.safetensors"), HVQ_OK);
    static const int64_t cols[] = {1, 64, 300};
    for (int k = 0; k < 3; k++) {
        hvq_tensor_info t = {.name = "w", .dtype = HVQ_DTYPE_F32, .ndim = 2,
                             .shape = {7, cols[k]}, .nbytes = (uint64_t)(7 * cols[k] * 4)};
        for (int j = 0; j < 300; j++)
            h[j] = -1.0f;
        ck_assert_int_eq(th_stage_hessian(&s, &t, 7, (uint64_t)cols[k], h), HVQ_OK);
        for (int j = 0; j < 300; j++)
            ck_assert(h[j] == (j < cols[k] ? 1.0f : -1.0f)); /* nothing past cols */
    }
    th_stage_fini(&s);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("uniform");
    TCase *tc = tcase_create("stage");
    tcase_add_test(tc, every_diagonal_is_one);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return th_run_suite(suite()); }
