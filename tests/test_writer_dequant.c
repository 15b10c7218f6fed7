/* The writer plugin "dequant" in isolation (the stage harness): what it
 * writes for compressed and pass-through tensors, in each element type and
 * through other sinks, read back with the host's sources. */
#include "config.h"

#include "stage.h"

#include <string.h>

static char *g_dir;

static void setup(void) { g_dir = th_tmpdir("writer-dequant"); }

static void teardown(void)
{
    th_rmtree(g_dir);
    free(g_dir);
}

/* The model the writer is given: "w" (2 x 3, compressed, F16 in the source)
 * and "norm" (3, F32, passed through). */
static const uint16_t w_f16[6] = {0x3c00, 0x4000, 0x4200, 0xbc00, 0x0000, 0x3800};
static const float norm[3] = {1.0f, 0.25f, -3.0f};
static const float recon[6] = {1.0f, 2.0f, 3.0f, -1.0f, 0.1f, 0.5f};

static hvq_tensor_info infos[2];
static const unsigned char compressed[2] = {1, 0};

static void make_infos(void)
{
    memset(infos, 0, sizeof infos);
    infos[0] = (hvq_tensor_info){.name = "w", .dtype = HVQ_DTYPE_F16, .dtype_name = "F16",
                                 .ndim = 2, .shape = {2, 3}, .nbytes = 12};
    infos[1] = (hvq_tensor_info){.name = "norm", .dtype = HVQ_DTYPE_F32, .dtype_name = "F32",
                                 .ndim = 1, .shape = {3}, .nbytes = 12};
}

/* Runs the writer with overrides kv to out; the status of the first step
 * that fails (open, a tensor or finish), HVQ_OK when all succeed. */
static hvq_status write_model(const char *out, const char *const *kv, th_stage *s)
{
    make_infos();
    th_stage_init(s, HVQ_KIND_WRITER, "dequant", kv);
    hvq_writer_setup setup = {.output_path = out, .source_path = "in.safetensors",
                              .source_format = "safetensors", .tensors = infos,
                              .compressed = compressed, .n_tensors = 2,
                              .pipeline_yaml = "name: test\n"};
    hvq_status st = th_stage_writer_open(s, &setup);
    hvq_result r[2];
    memset(r, 0, sizeof r);
    r[0] = (hvq_result){.original = {infos[0], w_f16}, .compressed = 1, .recon = recon,
                        .rows = 2, .cols = 3, .clusterer = "rtn", .residual = "none"};
    r[1] = (hvq_result){.original = {infos[1], norm}, .compressed = 0};
    for (int i = 0; st == HVQ_OK && i < 2; i++)
        st = th_stage_writer_tensor(s, &r[i]);
    return st == HVQ_OK ? th_stage_writer_finish(s) : st;
}

/* The tensor name of the model at path, its data checked against want
 * (nbytes of type dtype). */
static void expect_tensor(hvq_ctx *ctx, const char *path, const char *name, hvq_dtype dtype,
                          const void *want, size_t nbytes)
{
    hvq_model *m = ctx->host->model_open(ctx, path);
    ck_assert_msg(m != NULL, "%s", hvq_ctx_error(ctx));
    hvq_tensor t;
    ck_assert_int_eq(ctx->host->model_find(ctx, m, name, &t), HVQ_OK);
    ck_assert_int_eq(t.info.dtype, dtype);
    ck_assert_uint_eq(t.info.nbytes, nbytes);
    ck_assert(memcmp(t.data, want, nbytes) == 0);
    ctx->host->model_close(ctx, m);
}

START_TEST(same_dtype_keeps_the_source_type)
{
    th_stage s;
    const char *out = th_join(g_dir, "same.safetensors");
    ck_assert_msg(write_model(out, NULL, &s) == HVQ_OK, "%s", th_stage_error(&s));
    uint16_t want[6];
    ck_assert_int_eq(s.ctx->host->convert(s.ctx, HVQ_DTYPE_F16, want, HVQ_DTYPE_F32, recon, 6),
                     HVQ_OK);
    expect_tensor(s.ctx, out, "w", HVQ_DTYPE_F16, want, sizeof want);
    expect_tensor(s.ctx, out, "norm", HVQ_DTYPE_F32, norm, sizeof norm);
    th_stage_fini(&s);
}
END_TEST

START_TEST(f32_and_bf16_outputs)
{
    th_stage s;
    const char *out = th_join(g_dir, "f32.safetensors");
    const char *kv32[] = {"dtype=f32", NULL};
    ck_assert_msg(write_model(out, kv32, &s) == HVQ_OK, "%s", th_stage_error(&s));
    expect_tensor(s.ctx, out, "w", HVQ_DTYPE_F32, recon, sizeof recon);
    expect_tensor(s.ctx, out, "norm", HVQ_DTYPE_F32, norm, sizeof norm); /* untouched */
    th_stage_fini(&s);
    out = th_join(g_dir, "bf16.safetensors");
    const char *kvbf[] = {"dtype=bf16", NULL};
    ck_assert_msg(write_model(out, kvbf, &s) == HVQ_OK, "%s", th_stage_error(&s));
    uint16_t want[6];
    ck_assert_int_eq(s.ctx->host->convert(s.ctx, HVQ_DTYPE_BF16, want, HVQ_DTYPE_F32, recon, 6),
                     HVQ_OK);
    expect_tensor(s.ctx, out, "w", HVQ_DTYPE_BF16, want, sizeof want);
    th_stage_fini(&s);
}
END_TEST

START_TEST(any_sink_by_extension_or_format)
{
    th_stage s;
    const char *out = th_join(g_dir, "model.npz");
    const char *kv[] = {"dtype=f32", "sink_options=compress=true", NULL};
    ck_assert_msg(write_model(out, kv, &s) == HVQ_OK, "%s", th_stage_error(&s));
    expect_tensor(s.ctx, out, "w", HVQ_DTYPE_F32, recon, sizeof recon);
    th_stage_fini(&s);
    out = th_join(g_dir, "named.bin");
    const char *kvf[] = {"dtype=f32", "format=gguf", NULL};
    ck_assert_msg(write_model(out, kvf, &s) == HVQ_OK, "%s", th_stage_error(&s));
    expect_tensor(s.ctx, out, "norm", HVQ_DTYPE_F32, norm, sizeof norm);
    th_stage_fini(&s);
}
END_TEST

START_TEST(bad_options_fail_at_open_and_write_nothing)
{
    th_stage s;
    const char *out = th_join(g_dir, "bad.safetensors");
    const char *kv[] = {"sink_options=level=9", NULL};
    ck_assert_int_eq(write_model(out, kv, &s), HVQ_E_INPUT);
    th_assert_contains(th_stage_error(&s), "has no option 'level'");
    th_stage_fini(&s);
    const char *kvf[] = {"format=nosuch", NULL};
    ck_assert_int_eq(write_model(out, kvf, &s), HVQ_E_INPUT);
    th_assert_contains(th_stage_error(&s), "no such output format 'nosuch'");
    th_stage_fini(&s);
    const char *kvs[] = {"format=gguf", "max_shard_size=1KB", NULL}; /* gguf has no shards */
    ck_assert_int_eq(write_model(out, kvs, &s), HVQ_E_INPUT);
    th_assert_contains(th_stage_error(&s), "max_shard_size");
    th_stage_fini(&s);
    ck_assert(!th_exists(out));
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("writer-dequant");
    TCase *tc = tcase_create("stage");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, same_dtype_keeps_the_source_type);
    tcase_add_test(tc, f32_and_bf16_outputs);
    tcase_add_test(tc, any_sink_by_extension_or_format);
    tcase_add_test(tc, bad_options_fail_at_open_and_write_nothing);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return th_run_suite(suite()); }
