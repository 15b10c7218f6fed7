/* The hessian plugin "file" in isolation (the stage harness): diagonals
 * read from a safetensors file of 1-D tensors keyed by weight or module
 * name, and every way a file can disagree with the model. */
#include "config.h"

#include "stage.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *g_dir;

static void setup(void) { g_dir = th_tmpdir("hessian-file"); }

static void teardown(void)
{
    th_rmtree(g_dir);
    free(g_dir);
}

/* diag.safetensors in the test's directory: tensor k named names[k], the
 * n[k] values of v[k] as F32 (or F16 when half). Written through the host's
 * safetensors sink on a context of its own. */
static const char *write_diagonals(const char *const *names, const float *const *v,
                                   const int64_t *n, size_t count, int half)
{
    const char *path = th_join(g_dir, "diag.safetensors");
    hvq_ctx *ctx = th_ctx();
    hvq_registry *reg = th_registry(ctx);
    hvq_tensor_info info[8];
    uint16_t buf[8][64];
    ck_assert_uint_le(count, 8);
    for (size_t k = 0; k < count; k++) {
        memset(&info[k], 0, sizeof info[k]);
        info[k].name = names[k];
        info[k].dtype = half ? HVQ_DTYPE_F16 : HVQ_DTYPE_F32;
        info[k].ndim = 1;
        info[k].shape[0] = n[k];
        info[k].nbytes = (uint64_t)n[k] * (half ? 2 : 4);
        if (half)
            ck_assert_int_eq(ctx->host->convert(ctx, HVQ_DTYPE_F16, buf[k], HVQ_DTYPE_F32, v[k],
                                                (size_t)n[k]), HVQ_OK);
    }
    hvq_sink_handle *h = ctx->host->sink_open(ctx, "safetensors", path, NULL, 0, info, count);
    ck_assert_msg(h != NULL, "%s", hvq_ctx_error(ctx));
    for (size_t k = 0; k < count; k++) {
        hvq_tensor t = {info[k], half ? (const void *)buf[k] : (const void *)v[k]};
        ck_assert_int_eq(ctx->host->sink_write(ctx, h, &t), HVQ_OK);
    }
    ck_assert_int_eq(ctx->host->sink_finish(ctx, h), HVQ_OK);
    ctx->host->sink_close(ctx, h);
    ck_assert_int_eq(hvq_outputs_commit(ctx), HVQ_OK);
    hvq_ctx_free(ctx);
    hvq_registry_free(reg);
    return path;
}

static hvq_tensor_info weight(const char *name, int64_t rows, int64_t cols)
{
    hvq_tensor_info t = {.name = name, .dtype = HVQ_DTYPE_F32, .dtype_name = "F32", .ndim = 2,
                         .shape = {rows, cols}, .nbytes = (uint64_t)(rows * cols * 4)};
    return t;
}

/* A stage opened on path with the given overrides after path=. */
static void open_on(th_stage *s, const char *path, const char *extra)
{
    char kv_path[4200];
    snprintf(kv_path, sizeof kv_path, "path=%s", path);
    const char *kv[] = {kv_path, extra, NULL};
    th_stage_init(s, HVQ_KIND_HESSIAN, "file", kv);
    ck_assert_msg(th_stage_hessian_open(s, "model.safetensors") == HVQ_OK, "%s",
                  th_stage_error(s));
}

START_TEST(diagonals_by_weight_and_module_name)
{
    static const float a[4] = {0.5f, 1.0f, 2.0f, 0.0f}, b[3] = {3.0f, 1e-8f, 7.25f};
    const char *const names[] = {"layer.0.q.weight", "layer.0.k"};
    const float *const v[] = {a, b};
    const int64_t n[] = {4, 3};
    th_stage s;
    float h[4];
    open_on(&s, write_diagonals(names, v, n, 2, 0), NULL);
    hvq_tensor_info q = weight("layer.0.q.weight", 5, 4), k = weight("layer.0.k.weight", 2, 3);
    ck_assert_int_eq(th_stage_hessian(&s, &q, 5, 4, h), HVQ_OK);
    ck_assert(memcmp(h, a, sizeof a) == 0); /* exact: F32 as stored */
    ck_assert_int_eq(th_stage_hessian(&s, &k, 2, 3, h), HVQ_OK);
    ck_assert(memcmp(h, b, sizeof b) == 0);
    th_stage_fini(&s);
}
END_TEST

START_TEST(f16_diagonals_are_widened_exactly)
{
    static const float a[3] = {0.5f, 1.5f, 1024.0f}; /* each an F16 value */
    const char *const names[] = {"w.weight"};
    const float *const v[] = {a};
    const int64_t n[] = {3};
    th_stage s;
    float h[3];
    open_on(&s, write_diagonals(names, v, n, 1, 1), NULL);
    hvq_tensor_info w = weight("w.weight", 1, 3);
    ck_assert_int_eq(th_stage_hessian(&s, &w, 1, 3, h), HVQ_OK);
    ck_assert(memcmp(h, a, sizeof a) == 0);
    th_stage_fini(&s);
}
END_TEST

START_TEST(missing_is_an_error_or_uniform)
{
    static const float a[2] = {1, 2};
    const char *const names[] = {"a.weight"};
    const float *const v[] = {a};
    const int64_t n[] = {2};
    const char *path = write_diagonals(names, v, n, 1, 0);
    hvq_tensor_info other = weight("b.weight", 3, 2);
    float h[2] = {-1, -1};
    th_stage s;
    open_on(&s, path, NULL); /* missing: error, the default */
    ck_assert_int_eq(th_stage_hessian(&s, &other, 3, 2, h), HVQ_E_INPUT);
    th_assert_contains(th_stage_error(&s), "no Hessian diagonal for tensor 'b.weight'");
    th_assert_contains(th_stage_error(&s), path);
    th_stage_fini(&s);
    open_on(&s, path, "missing=uniform");
    ck_assert_int_eq(th_stage_hessian(&s, &other, 3, 2, h), HVQ_OK);
    ck_assert(h[0] == 1.0f && h[1] == 1.0f);
    th_stage_fini(&s);
}
END_TEST

START_TEST(bad_diagonals_are_refused)
{
    static const float ok[3] = {1, 2, 3}, neg[2] = {1, -0.5f}, nan_[2] = {NAN, 1},
                       inf_[2] = {1, INFINITY};
    const char *const names[] = {"long.weight", "neg.weight", "nan.weight", "inf.weight"};
    const float *const v[] = {ok, neg, nan_, inf_};
    const int64_t n[] = {3, 2, 2, 2};
    th_stage s;
    float h[3];
    open_on(&s, write_diagonals(names, v, n, 4, 0), NULL);
    hvq_tensor_info t = weight("long.weight", 4, 2);
    ck_assert_int_eq(th_stage_hessian(&s, &t, 4, 2, h), HVQ_E_INPUT);
    th_assert_contains(th_stage_error(&s), "has 3 values in 1 dimension(s); the tensor has 2 "
                                           "input columns");
    static const char *const bad[] = {"neg.weight", "nan.weight", "inf.weight"};
    static const char *const says[] = {"invalid value -0.5 at 1", "invalid value nan at 0",
                                       "invalid value inf at 1"};
    for (int k = 0; k < 3; k++) {
        t = weight(bad[k], 4, 2);
        ck_assert_int_eq(th_stage_hessian(&s, &t, 4, 2, h), HVQ_E_INPUT);
        th_assert_contains(th_stage_error(&s), says[k]);
    }
    th_stage_fini(&s);
}
END_TEST

START_TEST(an_unreadable_file_fails_at_open)
{
    th_stage s;
    char kv_path[4200];
    snprintf(kv_path, sizeof kv_path, "path=%s", th_join(g_dir, "absent.safetensors"));
    const char *kv[] = {kv_path, NULL};
    th_stage_init(&s, HVQ_KIND_HESSIAN, "file", kv);
    ck_assert_int_eq(th_stage_hessian_open(&s, "model.safetensors"), HVQ_E_INPUT);
    th_assert_contains(th_stage_error(&s), "absent.safetensors: cannot open");
    th_write_file(th_join(g_dir, "junk.bin"), "not a model", 11);
    snprintf(kv_path, sizeof kv_path, "path=%s", th_join(g_dir, "junk.bin"));
    th_stage_fini(&s);
    th_stage_init(&s, HVQ_KIND_HESSIAN, "file", kv);
    ck_assert_int_eq(th_stage_hessian_open(&s, "model.safetensors"), HVQ_E_INPUT);
    th_assert_contains(th_stage_error(&s), "not a model file of any supported format");
    th_stage_fini(&s);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("hessian-file");
    TCase *tc = tcase_create("stage");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, diagonals_by_weight_and_module_name);
    tcase_add_test(tc, f16_diagonals_are_widened_exactly);
    tcase_add_test(tc, missing_is_an_error_or_uniform);
    tcase_add_test(tc, bad_diagonals_are_refused);
    tcase_add_test(tc, an_unreadable_file_fails_at_open);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return th_run_suite(suite()); }
