/* The writer plugin "dequant" in isolation (the stage harness): what it
 * writes for compressed and pass-through tensors, in each element type and
 * through other sinks, read back with the host's sources. */
#include "config.h"

#include "stage.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
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

/* ---- llama.cpp block types into GGUF ------------------------------------
 * Three compressed tensors and one passed through, written with a ggml
 * dtype: "blk" encoded by the ggml clusterer as exactly that type (with
 * importance weights, so its blocks are not what requantizing would give),
 * "other" from another clusterer (quantized from its reconstruction), and
 * "odd" whose rows fit no block (llama-quantize's fallback). */
enum { RB = 2, CB = 512, RO = 2, CO = 64, CD = 48 };
static float w_blk[RB * CB], r_blk[RB * CB], w_other[RO * CO], w_odd[RO * CD], h_blk[CB];

static hvq_status write_ggml(th_stage *s, th_stage *c, const char *out, const char *dtype)
{
    char type[32], kvt[40];
    snprintf(type, sizeof type, "type=%s", dtype);
    snprintf(kvt, sizeof kvt, "dtype=%s", dtype);
    for (int i = 0; i < RB * CB; i++)
        w_blk[i] = sinf((float)i * 0.37f) * (1.0f + (float)(i % 7));
    for (int j = 0; j < CB; j++)
        h_blk[j] = 0.5f + (float)(j % 5);
    for (int i = 0; i < RO * CO; i++)
        w_other[i] = cosf((float)i * 0.11f);
    for (int i = 0; i < RO * CD; i++)
        w_odd[i] = (float)i / 16.0f - 2.0f;
    const char *kvc[] = {type, "weights=hessian", NULL};
    th_stage_init(c, HVQ_KIND_CLUSTERER, "ggml", kvc);
    hvq_cluster_input in = {.tensor_name = "blk", .x = w_blk, .rows = RB, .cols = CB,
                            .hessian = h_blk};
    ck_assert_msg(th_stage_encode(c, &in, r_blk) == HVQ_OK, "%s", th_stage_error(c));
    hvq_tensor_info ti[4] = {
        {.name = "blk", .dtype = HVQ_DTYPE_F32, .ndim = 2, .shape = {RB, CB}, .nbytes = sizeof w_blk},
        {.name = "other", .dtype = HVQ_DTYPE_F32, .ndim = 2, .shape = {RO, CO}, .nbytes = sizeof w_other},
        {.name = "odd", .dtype = HVQ_DTYPE_F32, .ndim = 2, .shape = {RO, CD}, .nbytes = sizeof w_odd},
        {.name = "norm", .dtype = HVQ_DTYPE_F32, .ndim = 1, .shape = {3}, .nbytes = sizeof norm}};
    for (int i = 0; i < 4; i++)
        ti[i].dtype_name = "F32";
    static const unsigned char comp[4] = {1, 1, 1, 0};
    static const hvq_meta meta[] = {{"general.architecture", "{\"gguf_type\":\"string\",\"value\":\"llama\"}"},
                                    {"general.file_type", "{\"gguf_type\":\"uint32\",\"value\":0}"}};
    const char *kv[] = {kvt, NULL};
    th_stage_init(s, HVQ_KIND_WRITER, "dequant", kv);
    hvq_writer_setup setup = {.output_path = out, .source_format = "gguf", .source_meta = meta,
                              .n_source_meta = 2, .tensors = ti, .compressed = comp,
                              .n_tensors = 4, .pipeline_yaml = "name: test\n"};
    hvq_status st = th_stage_writer_open(s, &setup);
    hvq_encoded none = {0};
    hvq_result r[4] = {
        {.original = {ti[0], w_blk}, .compressed = 1, .recon = r_blk, .rows = RB, .cols = CB,
         .clusterer = "ggml", .residual = "none", .cluster_enc = &c->enc, .residual_enc = &none},
        {.original = {ti[1], w_other}, .compressed = 1, .recon = w_other, .rows = RO,
         .cols = CO, .clusterer = "rtn", .residual = "none"},
        {.original = {ti[2], w_odd}, .compressed = 1, .recon = w_odd, .rows = RO, .cols = CD,
         .clusterer = "rtn", .residual = "none"},
        {.original = {ti[3], norm}, .compressed = 0}};
    for (int i = 0; st == HVQ_OK && i < 4; i++)
        st = th_stage_writer_tensor(s, &r[i]);
    return st == HVQ_OK ? th_stage_writer_finish(s) : st;
}

/* The blocks the ggml clusterer gives for w (weights none) with type. */
static void ggml_blocks(const char *type, const float *w, uint64_t rows, uint64_t cols,
                        th_stage *c, float *rec)
{
    char kt[32];
    snprintf(kt, sizeof kt, "type=%s", type);
    const char *kv[] = {kt, "weights=none", NULL};
    float *h = malloc(cols * sizeof *h);
    for (uint64_t j = 0; j < cols; j++)
        h[j] = 1.0f;
    th_stage_init(c, HVQ_KIND_CLUSTERER, "ggml", kv);
    hvq_cluster_input in = {.tensor_name = "x", .x = w, .rows = rows, .cols = cols, .hessian = h};
    ck_assert_msg(th_stage_encode(c, &in, rec) == HVQ_OK, "%s", th_stage_error(c));
    free(h);
}

static const hvq_component *blocks_of(th_stage *c)
{
    const hvq_component *b = c->ctx->host->enc_get(&c->enc, "blocks");
    ck_assert_ptr_nonnull(b);
    return b;
}

START_TEST(k_type_blocks_byte_for_byte_with_fallbacks)
{
    th_stage s, c, q;
    const char *out = th_join(g_dir, "q4k.gguf");
    ck_assert_msg(write_ggml(&s, &c, out, "q4_K") == HVQ_OK, "%s", th_stage_error(&s));
    /* blk: the clusterer's own Q4_K blocks, as they are */
    const hvq_component *b = blocks_of(&c);
    expect_tensor(s.ctx, out, "blk", HVQ_DTYPE_OPAQUE, b->data, (size_t)b->nbytes);
    /* other: rows of 64 fit no Q4_K block: Q5_0, as llama-quantize falls
     * back, quantized from the reconstruction */
    float rec[RO * CO];
    ggml_blocks("q5_0", w_other, RO, CO, &q, rec);
    b = blocks_of(&q);
    expect_tensor(s.ctx, out, "other", HVQ_DTYPE_OPAQUE, b->data, (size_t)b->nbytes);
    th_stage_fini(&q);
    /* odd: rows of 48 fit no Q5_0 block either: F16 */
    uint16_t f16[RO * CD];
    ck_assert_int_eq(s.ctx->host->convert(s.ctx, HVQ_DTYPE_F16, f16, HVQ_DTYPE_F32, w_odd,
                                          RO * CD), HVQ_OK);
    expect_tensor(s.ctx, out, "odd", HVQ_DTYPE_F16, f16, sizeof f16);
    expect_tensor(s.ctx, out, "norm", HVQ_DTYPE_F32, norm, sizeof norm);
    /* general.file_type replaced (LLAMA_FTYPE_MOSTLY_Q4_K_S), the
     * quantization version added */
    hvq_model *m = s.ctx->host->model_open(s.ctx, out);
    const hvq_meta *meta;
    size_t n;
    s.ctx->host->model_meta(m, &meta, &n);
    ck_assert_uint_eq(n, 3);
    ck_assert_str_eq(meta[1].key, "general.file_type");
    ck_assert_str_eq(meta[1].value, "{\"gguf_type\":\"uint32\",\"value\":14}");
    ck_assert_str_eq(meta[2].key, "general.quantization_version");
    ck_assert_str_eq(meta[2].value, "{\"gguf_type\":\"uint32\",\"value\":2}");
    s.ctx->host->model_close(s.ctx, m);
    th_stage_fini(&s);
    th_stage_fini(&c);
}
END_TEST

/* Q8_0: blocks read back as F32 (the gguf source dequantizes Q8_0), so
 * the values are compared: the clusterer's reconstruction for "blk", the
 * Q8_0 of the reconstruction for "other", and the size is the blocks'. */
START_TEST(q8_0_blocks_and_requantized_reconstruction)
{
    th_stage s, c, q;
    const char *out = th_join(g_dir, "q8.gguf");
    ck_assert_msg(write_ggml(&s, &c, out, "q8_0") == HVQ_OK, "%s", th_stage_error(&s));
    expect_tensor(s.ctx, out, "blk", HVQ_DTYPE_F32, r_blk, sizeof r_blk);
    float rec[RO * CO];
    ggml_blocks("q8_0", w_other, RO, CO, &q, rec);
    expect_tensor(s.ctx, out, "other", HVQ_DTYPE_F32, rec, sizeof rec);
    th_stage_fini(&q);
    size_t n;
    free(th_read_file(out, &n));
    /* the header (320 bytes), then, each padded to 32: 2 x 16 blocks of 34
     * bytes, 2 x 2 blocks, 96 F16 and 3 F32 (F32 throughout: 5,024) */
    ck_assert_uint_eq(n, 320 + 1088 + 160 + 192 + 32);
    th_stage_fini(&s);
    th_stage_fini(&c);
}
END_TEST

START_TEST(ggml_dtype_needs_a_gguf_output)
{
    th_stage s, c;
    const char *out = th_join(g_dir, "q8.safetensors");
    ck_assert_int_eq(write_ggml(&s, &c, out, "q8_0"), HVQ_E_INPUT);
    th_assert_contains(th_stage_error(&s), "q8.safetensors: writer dequant: dtype q8_0 writes "
                                           "llama.cpp blocks, which only GGUF stores");
    ck_assert(!th_exists(out));
    th_stage_fini(&s);
    th_stage_fini(&c);
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
    tcase_add_test(tc, k_type_blocks_byte_for_byte_with_fallbacks);
    tcase_add_test(tc, q8_0_blocks_and_requantized_reconstruction);
    tcase_add_test(tc, ggml_dtype_needs_a_gguf_output);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return th_run_suite(suite()); }
