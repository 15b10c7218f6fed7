/* The importance plugin "magnitude": |W_norm|, the Hessian ignored, bit for
 * bit on a fixture (stage harness). */
#include "config.h"

#include "stage.h"

#include <math.h>
#include <stdlib.h>

static float magnitude_ref(float w, float h)
{
    (void)h;
    return fabsf(w);
}

START_TEST(scores_are_the_magnitudes)
{
    th_importance_matches("magnitude", magnitude_ref);
}
END_TEST

/* Scores on more entries than one chunk of the host's loop: the same as one
 * at a time, on 1 and on 2 threads. */
START_TEST(scores_do_not_depend_on_the_threads)
{
    enum { N = 300000 };
    float *w = malloc(N * sizeof *w), *s = malloc(N * sizeof *s), h = 1.0f;
    ck_assert(w && s);
    th_fill_heavy(w, N, 4);
    for (int threads = 1; threads <= 2; threads++) {
        hvq_ctx_opts o = {.threads = threads, .quiet = 1};
        th_stage st;
        th_stage_init(&st, HVQ_KIND_IMPORTANCE, "magnitude", NULL);
        hvq_ctx *one = hvq_ctx_new(&o);
        hvq_ctx_set_registry(one, st.reg);
        ck_assert_int_eq(st.d->importance_score(one, &st.tp.p, w, 1, N, &h, s), HVQ_OK);
        for (int i = 0; i < N; i++)
            ck_assert(s[i] == fabsf(w[i]));
        hvq_ctx_free(one);
        th_stage_fini(&st);
    }
    free(w);
    free(s);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("magnitude");
    TCase *tc = tcase_create("stage");
    tcase_add_test(tc, scores_are_the_magnitudes);
    tcase_add_test(tc, scores_do_not_depend_on_the_threads);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return th_run_suite(suite()); }
