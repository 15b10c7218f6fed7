/* llama.cpp's block types written natively into GGUF, through the real
 * binary on the demo model: a ggml pipeline whose dequant writer writes
 * GGUF stores the clusterer's blocks byte for byte (compared with the
 * blocks the same pipeline stores in an hvq container), with llama-
 * quantize's fallbacks and one summary warning, and general.file_type;
 * `hvqconv decode --dtype q8_0` turns a HAS-VQ container into Q8_0 blocks
 * equal to the ggml clusterer's Q8_0 of the reconstruction. Bad inputs
 * exit 2 with a message and leave nothing behind. */
#include "config.h"

#include "container.h"
#include "ctx.h"
#include "registry.h"
#include "stage.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *g_dir;

static void setup(void) { g_dir = th_tmpdir("gguf-native"); }

static void teardown(void)
{
    th_rmtree(g_dir);
    free(g_dir);
}

static const char *P(const char *name) { return th_join(g_dir, name); }

/* Runs hvqconv with args (NULL-terminated); returns the exit status, the
 * standard error in *err (freed by the caller). */
static int hvq_run(const char *const *args, char **err)
{
    char *out = NULL;
    int rc = th_run(&out, err, args);
    free(out);
    return rc;
}

/* The number of lines of text that contain what. */
static int count_lines(const char *text, const char *what)
{
    int n = 0;
    for (const char *p = text; (p = strstr(p, what)) != NULL; p++)
        n++;
    return n;
}

/* pipelines/q4_0.yaml on the demo model with clusterer type `type`, to out
 * (a .gguf with the dequant writer in dtype `type`, or an .hvq). */
static int run_q(const char *type, const char *out, char **err)
{
    char ct[64], wd[64], rep[4096];
    snprintf(ct, sizeof ct, "stages.clusterer.type=%s", type);
    snprintf(rep, sizeof rep, "%s.json", out);
    snprintf(wd, sizeof wd, "stages.writer.dtype=%s", type);
    int gguf = strstr(out, ".gguf") != NULL;
    const char *args[] = {"run", th_src("pipelines/q4_0.yaml"), "--input",
                          th_src("models/stories260K"), "--output", out, "--report",
                          rep, "--set", ct, "--set",
                          gguf ? "stages.writer.plugin=dequant" : "stages.writer.plugin=hvq",
                          gguf ? "--set" : NULL, wd, NULL};
    return hvq_run(args, err);
}

/* general.file_type of the GGUF at path is LLAMA_FTYPE_MOSTLY_* ftype. */
static void expect_file_type(const char *path, unsigned ftype)
{
    char want[64];
    snprintf(want, sizeof want, "{\"gguf_type\":\"uint32\",\"value\":%u}", ftype);
    hvq_ctx *ctx = th_ctx();
    hvq_registry *reg = th_registry(ctx);
    hvq_model *m = ctx->host->model_open(ctx, path);
    ck_assert_msg(m != NULL, "%s", hvq_ctx_error(ctx));
    ck_assert_str_eq(th_model_meta(ctx, m, "general.file_type"), want);
    ctx->host->model_close(ctx, m);
    hvq_registry_free(reg);
    hvq_ctx_free(ctx);
}

/* Every compressed tensor of the container: its clusterer's "blocks"
 * stand in the GGUF file byte for byte (every type, Q4_0 and Q8_0 too,
 * which the gguf source would read as F32). Returns the number found. */
static size_t compare_blocks(const char *hvq, const char *gguf)
{
    hvq_ctx *ctx = th_ctx();
    hvq_registry *reg = th_registry(ctx);
    const hvq_loaded_plugin *pl = hvq_registry_find(reg, HVQ_KIND_SOURCE, "hvq");
    void *state = NULL;
    ck_assert_msg(pl->desc.source_open(ctx, hvq, &state) == HVQ_OK, "%s", hvq_ctx_error(ctx));
    const hvq_container_view *v = pl->desc.container_view(state);
    size_t n_file, compared = 0;
    char *file = th_read_file(gguf, &n_file);
    ck_assert_ptr_nonnull(file);
    for (size_t i = 0; i < v->n; i++)
        for (size_t k = 0; v->tensors[i].compressed && k < v->tensors[i].n_stored; k++) {
            hvq_tensor part;
            int role;
            const char *key;
            ck_assert_int_eq(pl->desc.container_part(ctx, state, i, k, 1, &part, &role, &key),
                             HVQ_OK);
            if (role != HVQ_PART_CLUSTERER || strcmp(key, "blocks") != 0)
                continue;
            ck_assert_msg(memmem(file, n_file, part.data, (size_t)part.info.nbytes) != NULL,
                          "%s: the clusterer's blocks are not in the GGUF",
                          v->tensors[i].name);
            compared++;
        }
    free(file);
    pl->desc.source_close(ctx, state);
    hvq_registry_free(reg);
    hvq_ctx_free(ctx);
    return compared;
}

/* q4_K on the demo model, whose rows (64 and 172 values) fit no block of
 * 256: every compressed tensor falls back to Q5_0 as llama-quantize does,
 * one warning says so, and the GGUF holds the clusterer's Q5_0 blocks. */
START_TEST(k_type_pipeline_writes_the_clusterers_blocks)
{
    char *err = NULL;
    ck_assert_int_eq(run_q("q4_K", P("q.hvq"), &err), 0);
    free(err);
    ck_assert_msg(run_q("q4_K", P("q.gguf"), &err) == 0, "%s", err);
    ck_assert_int_eq(count_lines(err, "warning:"), 1);
    th_assert_contains(err, "30 of 30 quantized tensors have rows that fit no Q4_K block of 256 "
                            "(e.g. 'model.layers.0.self_attn.q_proj.weight', rows of 64); "
                            "written as Q5_0 (30) instead, as llama-quantize falls back");
    free(err);
    ck_assert_uint_eq(compare_blocks(P("q.hvq"), P("q.gguf")), 30);
    expect_file_type(P("q.gguf"), 14); /* LLAMA_FTYPE_MOSTLY_Q4_K_S */
}
END_TEST

/* q4_0: no fallback (the down projections are excluded by the pipeline),
 * no warning, the Q4_0 tensors read back (as F32) as the container
 * decodes them, LLAMA_FTYPE_MOSTLY_Q4_0; decode --dtype native or q4_0 of
 * the container writes the container's blocks: the very same file. */
START_TEST(q4_0_pipeline_matches_the_container)
{
    char *err = NULL;
    ck_assert_int_eq(run_q("q4_0", P("q.hvq"), &err), 0);
    free(err);
    ck_assert_msg(run_q("q4_0", P("q.gguf"), &err) == 0, "%s", err);
    ck_assert_int_eq(count_lines(err, "warning:"), 0);
    free(err);
    const char *dec[] = {"decode", P("q.hvq"), "-o", P("d.safetensors"),
                         "--dtype", "f32", "-q", NULL};
    ck_assert_int_eq(hvq_run(dec, &err), 0);
    free(err);
    hvq_ctx *ctx = th_ctx();
    hvq_registry *reg = th_registry(ctx);
    hvq_ctx_set_registry(ctx, reg);
    hvq_model *g = ctx->host->model_open(ctx, P("q.gguf"));
    hvq_model *d = ctx->host->model_open(ctx, P("d.safetensors"));
    ck_assert_ptr_nonnull(g);
    ck_assert_ptr_nonnull(d);
    const char *name = "model.layers.3.mlp.up_proj.weight";
    hvq_tensor a, b;
    ck_assert_int_eq(ctx->host->model_find(ctx, g, name, &a), HVQ_OK);
    float *copy = malloc((size_t)a.info.nbytes);
    memcpy(copy, a.data, (size_t)a.info.nbytes);
    ck_assert_int_eq(ctx->host->model_find(ctx, d, name, &b), HVQ_OK);
    ck_assert_uint_eq(a.info.nbytes, b.info.nbytes);
    ck_assert(memcmp(copy, b.data, (size_t)b.info.nbytes) == 0);
    free(copy);
    ctx->host->model_close(ctx, g);
    ctx->host->model_close(ctx, d);
    hvq_registry_free(reg);
    hvq_ctx_free(ctx);
    expect_file_type(P("q.gguf"), 2);
    /* decoding the container: its blocks as they are, the very file */
    static const char *const dts[] = {"native", "q4_0"};
    for (int k = 0; k < 2; k++) {
        const char *d2[] = {"decode", P("q.hvq"), "-o", P("d.gguf"), "--raw", "--dtype", dts[k], "-f",
                            "-q", NULL};
        ck_assert_int_eq(hvq_run(d2, &err), 0);
        free(err);
        ck_assert_msg(th_same_bytes(P("d.gguf"), P("q.gguf")), "decode --dtype %s", dts[k]);
    }
}
END_TEST

/* A pipeline whose encodings no writer puts into GGUF as they are (k-means;
 * ggml with a residual on top; ggml overridden by k-means for some
 * tensors; ggml with column gains) is refused before anything runs: exit
 * 2, the message naming the output, the writer and the way out, nothing
 * left behind. */
START_TEST(gguf_output_no_writer_keeps_the_encodings)
{
    static const char *const sets[][3] = {
        {"stages.clusterer.plugin=kmeans", "stages.clusterer.centroids=16", "'kmeans'"},
        {"stages.residual.plugin=coo16", "stages.residual.sparsity=0.01", "'ggml'"},
        {"stages.clusterer.col_exponent=0.5", "seed=1", "'ggml'"},
    };
    char *dir = th_tmpdir("gguf-native-keep");
    for (int k = 0; k < 4; k++) {
        char yaml[1024], *err = NULL;
        snprintf(yaml, sizeof yaml,
                 "input: %s\nselect: { include: [\"*proj.weight\"] }\n"
                 "stages:\n  clusterer: { plugin: ggml, type: q4_0 }\n"
                 "  writer: { plugin: hvq }\n%s",
                 th_src("models/stories260K"),
                 k == 3 ? "overrides:\n  - match: \"*v_proj*\"\n    clusterer: { plugin: "
                          "kmeans, centroids: 16 }\n" : "");
        th_write_file(th_join(dir, "p.yaml"), yaml, strlen(yaml));
        const char *run[] = {"run", th_join(dir, "p.yaml"), "--output", th_join(dir, "y.gguf"),
                             "--report", th_join(dir, "y.json"),
                             "--set", k < 3 ? sets[k][0] : "seed=2",
                             "--set", k < 3 ? sets[k][1] : "seed=3", NULL};
        ck_assert_int_eq(hvq_run(run, &err), 2);
        th_assert_contains(err, "y.gguf: writer 'hvq' does not write gguf (it writes "
                                "safetensors), and no writer writes this pipeline's encodings "
                                "(clusterer ");
        th_assert_contains(err, k < 3 ? sets[k][2] : "'ggml', 'kmeans'");
        th_assert_contains(err, "`hvqconv decode OUT.hvq -o MODEL.gguf --dtype q8_0`");
        free(err);
        ck_assert(!th_exists(th_join(dir, "y.gguf")) && !th_exists(th_join(dir, "y.json")));
    }
    th_rmtree(dir);
    free(dir);
}
END_TEST

/* pipelines/q4_1.yaml (and q5_1) on a GGUF in llama.cpp's layout, to a
 * .gguf: the pipeline's hvq writer gives way to the dequant writer, and
 * its evaluate: step runs on the GGUF (Q4_1 and Q5_1 blocks read through
 * libhvqggml's dequantizers), the same perplexity as on the container. */
START_TEST(eval_of_a_q4_1_gguf_output)
{
    static const char *const types[] = {"stages.clusterer.type=q4_1",
                                        "stages.clusterer.type=q5_1"};
    char *out = NULL, *err = NULL;
    const char *conv[] = {"convert", th_src("models/stories260K"), P("m.gguf"), "-q", NULL};
    ck_assert_msg(th_run(&out, &err, conv) == 0, "%s", err);
    free(out);
    free(err);
    /* the pipeline's token file, wherever the build tree is (VPATH) */
    char toks[PATH_MAX + 32];
    snprintf(toks, sizeof toks, "evaluate.tokens=%s",
             th_src("models/stories260K/tinystories-10k.tok512.npy"));
    for (int t = 0; t < 2; t++) {
        char *ppl[2];
        for (int g = 0; g < 2; g++) {
            const char *run[] = {"run", th_src("pipelines/q4_1.yaml"), "--input", P("m.gguf"),
                                 "--output", P(g ? "e.gguf" : "e.hvq"), "--report", "",
                                 "--set", types[t], "--set", toks, "--eval", "-f", NULL};
            ck_assert_msg(th_run(&out, &err, run) == 0, "%s", err);
            char *at = strstr(out, "perplexity of the output: ");
            ck_assert_msg(at != NULL, "%s", out);
            ppl[g] = strndup(at, strcspn(at, "\n"));
            free(out);
            free(err);
        }
        ck_assert_str_eq(ppl[0], ppl[1]);
        free(ppl[0]);
        free(ppl[1]);
    }
}
END_TEST

/* decode --dtype q8_0 of a HAS-VQ container (pipelines/mid.yaml): every
 * reconstructed tensor whose rows fit blocks of 32 is the ggml
 * clusterer's Q8_0 of the reconstruction, the down projections (rows of
 * 172) are F16 with one warning, the same bytes on 1 and 2 threads. */
START_TEST(decode_q8_0_of_a_has_vq_container)
{
    char *err = NULL;
    const char *run[] = {"run", th_src("pipelines/mid.yaml"), "--input",
                         th_src("models/stories260K"), "--output", P("m.hvq"), "--report",
                         P("m.json"), "-q", NULL};
    ck_assert_int_eq(hvq_run(run, &err), 0);
    free(err);
    const char *dec[] = {"decode", P("m.hvq"), "-o", P("m.gguf"), "--raw",
                         "--dtype", "q8_0", "-t", "2", NULL};
    ck_assert_msg(hvq_run(dec, &err) == 0, "%s", err);
    ck_assert_int_eq(count_lines(err, "warning:"), 1);
    th_assert_contains(err, "5 of 35 quantized tensors have rows that fit no Q8_0 block of 32 "
                            "(e.g. 'model.layers.0.mlp.down_proj.weight', rows of 172); "
                            "written as F16 (5) instead");
    free(err);
    const char *dec1[] = {"decode", P("m.hvq"), "-o", P("m1.gguf"), "--raw",
                          "--dtype", "q8_0", "-t", "1", "-q", NULL};
    ck_assert_int_eq(hvq_run(dec1, &err), 0);
    free(err);
    ck_assert(th_same_bytes(P("m.gguf"), P("m1.gguf")));
    const char *f32[] = {"decode", P("m.hvq"), "-o", P("m.safetensors"),
                         "--dtype", "f32", "-q", NULL};
    ck_assert_int_eq(hvq_run(f32, &err), 0);
    free(err);

    th_stage c;
    const char *kv[] = {"type=q8_0", "weights=none", NULL};
    th_stage_init(&c, HVQ_KIND_CLUSTERER, "ggml", kv);
    hvq_ctx *ctx = c.ctx;
    hvq_model *g = ctx->host->model_open(ctx, P("m.gguf"));
    hvq_model *d = ctx->host->model_open(ctx, P("m.safetensors"));
    ck_assert_ptr_nonnull(g);
    ck_assert_ptr_nonnull(d);
    static const char *const names[] = {"model.layers.0.self_attn.q_proj.weight",
                                        "model.layers.4.mlp.gate_proj.weight",
                                        "model.layers.2.mlp.down_proj.weight"};
    for (int i = 0; i < 3; i++) {
        hvq_tensor a, b;
        ck_assert_int_eq(ctx->host->model_find(ctx, d, names[i], &b), HVQ_OK);
        uint64_t rows = (uint64_t)b.info.shape[0], cols = (uint64_t)b.info.shape[1];
        float *w = malloc(rows * cols * sizeof *w), *want = malloc(rows * cols * sizeof *want);
        float *h = malloc(cols * sizeof *h);
        memcpy(w, b.data, rows * cols * sizeof *w);
        for (uint64_t j = 0; j < cols; j++)
            h[j] = 1.0f;
        ck_assert_int_eq(ctx->host->model_find(ctx, g, names[i], &a), HVQ_OK);
        if (cols % 32 == 0) {
            hvq_cluster_input in = {.tensor_name = names[i], .x = w, .rows = rows, .cols = cols,
                                    .hessian = h};
            ck_assert_int_eq(th_stage_encode(&c, &in, want), HVQ_OK);
            ck_assert_int_eq(a.info.dtype, HVQ_DTYPE_F32); /* Q8_0, read as F32 */
            ck_assert(memcmp(a.data, want, rows * cols * 4) == 0);
        } else {
            uint16_t *f16 = malloc(rows * cols * 2);
            ck_assert_int_eq(ctx->host->convert(ctx, HVQ_DTYPE_F16, f16, HVQ_DTYPE_F32, w,
                                                rows * cols), HVQ_OK);
            ck_assert_int_eq(a.info.dtype, HVQ_DTYPE_F16);
            ck_assert(memcmp(a.data, f16, rows * cols * 2) == 0);
            free(f16);
        }
        free(w);
        free(want);
        free(h);
    }
    ctx->host->model_close(ctx, g);
    ctx->host->model_close(ctx, d);
    th_stage_fini(&c);
    expect_file_type(P("m.gguf"), 7);
}
END_TEST

/* dtype native: each tensor in the type the ggml clusterer used for it,
 * overrides included (q8_0 for the value projections, q4_K, falling back
 * to Q5_0, for the gate projections, q4_0 for the rest), the blocks as the
 * container stores them; general.file_type of the type with the most
 * parameters (Q4_0). Named with the hvq writer, a .gguf output is written
 * by the dequant writer in dtype native. */
START_TEST(native_follows_the_clusterers_types)
{
    char yaml[2048];
    for (int g = 0; g < 2; g++) {
        snprintf(yaml, sizeof yaml,
                 "input: %s\noutput: %s\nseed: 1\n"
                 "select: { include: [\"*proj.weight\"], exclude: [\"*down_proj*\"] }\n"
                 "stages:\n  clusterer: { plugin: ggml, type: q4_0 }\n"
                 "  writer: { plugin: %s }\n"
                 "overrides:\n  - match: \"*v_proj*\"\n    clusterer: { type: q8_0 }\n"
                 "  - match: \"*gate_proj*\"\n    clusterer: { type: q4_K }\n",
                 th_src("models/stories260K"), P(g ? "n.gguf" : "n.hvq"),
                 g ? "dequant, dtype: native" : "hvq");
        th_write_file(P("n.yaml"), yaml, strlen(yaml));
        char *err = NULL;
        const char *run[] = {"run", P("n.yaml"), "--report", P(g ? "g.json" : "h.json"), NULL};
        ck_assert_msg(hvq_run(run, &err) == 0, "%s", err);
        if (g) /* the gate projections' rows of 64 fit no Q4_K block */
            th_assert_contains(err, "5 of 30 quantized tensors have rows that fit no Q4_K "
                                    "block of 256 (e.g. 'model.layers.0.mlp.gate_proj.weight', "
                                    "rows of 64); written as Q5_0 (5) instead");
        free(err);
    }
    ck_assert_uint_eq(compare_blocks(P("n.hvq"), P("n.gguf")), 30);
    expect_file_type(P("n.gguf"), 2);

    /* the hvq writer does not write GGUF: the dequant writer in dtype
     * native, which keeps these blocks, writes it instead, said once; the
     * same file, the record and report naming the writer that ran */
    char *err = NULL;
    const char *hvq[] = {"run", P("n.yaml"), "--output", P("x.gguf"), "--report", P("x.json"),
                         "--set", "stages.writer.plugin=hvq", NULL};
    ck_assert_msg(hvq_run(hvq, &err) == 0, "%s", err);
    ck_assert_int_eq(count_lines(err, "does not write gguf"), 1);
    th_assert_contains(err, "x.gguf: writer 'hvq' does not write gguf; writing it with writer "
                            "'dequant', dtype=native, which keeps the pipeline's encodings as "
                            "they are");
    free(err);
    ck_assert(th_same_bytes(P("x.gguf"), P("n.gguf")));
    char *rep = th_read_file(P("x.json"), NULL);
    th_assert_contains(rep, "\"writer\": \"dequant\"");
    th_assert_contains(rep, "writer:\\n    plugin: dequant\\n    dtype: native\\n");
    free(rep);
}
END_TEST

START_TEST(bad_dtype_and_non_gguf_outputs_exit_2)
{
    char *err = NULL;
    const char *run[] = {"run", th_src("pipelines/q8_0.yaml"), "--input",
                         th_src("models/stories260K"), "--output", P("x.hvq"), "--report",
                         P("x.json"), "-q", NULL};
    ck_assert_int_eq(hvq_run(run, &err), 0);
    free(err);
    char *dir = th_tmpdir("gguf-native-bad");
    const char *bad1[] = {"decode", P("x.hvq"), "-o",
                          th_join(dir, "y.gguf"), "--dtype", "q9_0", NULL};
    ck_assert_int_eq(hvq_run(bad1, &err), 2);
    th_assert_contains(err, "--dtype q9_0: expected same, f32, f16, bf16, or for GGUF native "
                            "or a llama.cpp block type (q8_0");
    free(err);
    const char *bad2[] = {"decode", P("x.hvq"), "-o",
                          th_join(dir, "y.safetensors"), "--dtype", "q8_0", NULL};
    ck_assert_int_eq(hvq_run(bad2, &err), 2);
    th_assert_contains(err, "y.safetensors: --dtype q8_0 writes llama.cpp blocks, which only "
                            "GGUF stores, and this output is safetensors");
    free(err);
    const char *bad3[] = {"run", th_src("pipelines/q8_0.yaml"), "--input",
                          th_src("models/stories260K"), "--output", th_join(dir, "z.npz"),
                          "--report", th_join(dir, "z.json"), "--set",
                          "stages.writer.plugin=dequant", "--set", "stages.writer.dtype=q8_0",
                          "-q", NULL};
    ck_assert_int_eq(hvq_run(bad3, &err), 2);
    th_assert_contains(err, "z.npz: writer dequant: dtype q8_0 writes llama.cpp blocks, which "
                            "only GGUF stores");
    free(err);
    th_assert_dir_holds(dir, (const char *)NULL);
    th_rmtree(dir);
    free(dir);
}
END_TEST

/* ---- against llama-quantize's bytes (tests/data/ggml) --------------------
 * The fixtures' weights written as a GGUF model and their importance
 * values as a file of diagonals; a ggml pipeline with the dequant writer
 * in the same type then writes, for every tensor, the very blocks
 * llama-quantize wrote (K types: tok_embd_24x512, rows of 512; the other
 * tensors, rows of 64, in the K type's fallback type, whose fixture is
 * llama-quantize's own of that type). */
static const struct {
    const char *name;
    int64_t rows, cols;
} fx[] = {{"blk.0.attn_q.weight", 64, 64},
          {"blk.1.ffn_gate.weight", 172, 64},
          {"blk.4.attn_v.weight", 32, 64},
          {"tok_embd_24x512", 24, 512}};
enum { N_FX = sizeof fx / sizeof fx[0] };

static void *fixture(const char *name, const char *suffix, size_t *n)
{
    char rel[256];
    snprintf(rel, sizeof rel, "tests/data/ggml/%s.%s", name, suffix);
    void *d = th_read_file(th_src(rel), n);
    ck_assert_msg(d != NULL, "cannot read %s", rel);
    return d;
}

/* Writes n tensors (2-D weights, or with diag their 1-D diagonals) through
 * the host's sink `format` to path. */
static void write_fixtures(const char *path, const char *format, int diag)
{
    hvq_ctx *ctx = th_ctx();
    hvq_registry *reg = th_registry(ctx);
    hvq_tensor_info info[N_FX];
    void *data[N_FX];
    for (int i = 0; i < N_FX; i++) {
        size_t n;
        data[i] = fixture(fx[i].name, diag ? "imatrix.f32" : "f32", &n);
        info[i] = (hvq_tensor_info){.name = fx[i].name, .dtype = HVQ_DTYPE_F32,
                                    .dtype_name = "F32", .ndim = diag ? 1 : 2, .nbytes = n,
                                    .shape = {diag ? fx[i].cols : fx[i].rows, fx[i].cols}};
    }
    hvq_sink_handle *h =
        ctx->host->sink_open_params(ctx, format, path, NULL, NULL, 0, info, N_FX);
    ck_assert_msg(h != NULL, "%s", hvq_ctx_error(ctx));
    for (int i = 0; i < N_FX; i++) {
        hvq_tensor t = {info[i], data[i]};
        ck_assert_int_eq(ctx->host->sink_write(ctx, h, &t), HVQ_OK);
        free(data[i]);
    }
    ck_assert_int_eq(ctx->host->sink_finish(ctx, h), HVQ_OK);
    ctx->host->sink_close(ctx, h);
    ck_assert_int_eq(hvq_outputs_commit(ctx), HVQ_OK);
    hvq_registry_free(reg);
    hvq_ctx_free(ctx);
}

/* Whether the bytes of fixture TENSOR.TYPE.MODE.bin occur in file. */
static int holds_fixture(const char *file, size_t n_file, const char *tensor, const char *type,
                         const char *mode)
{
    char suffix[64];
    size_t n;
    snprintf(suffix, sizeof suffix, "%s.%s.bin", type, mode);
    void *want = fixture(tensor, suffix, &n);
    int found = memmem(file, n_file, want, n) != NULL;
    free(want);
    return found;
}

static const char *const k_fallback[][2] = {
    {"q2_K", "q4_0"}, {"q3_K", "q4_0"}, {"q4_K", "q5_0"},
    {"q5_K", "q5_1"}, {"q6_K", "q8_0"}, {"iq4_xs", "iq4_nl"},
    {"q4_0", NULL},   {"q4_1", NULL},   {"q5_0", NULL},
    {"q5_1", NULL},   {"q8_0", NULL},   {"iq4_nl", NULL}};

START_TEST(native_blocks_are_llama_quantize_s)
{
    const char *type = k_fallback[_i / 2][0], *fb = k_fallback[_i / 2][1];
    const char *mode = _i % 2 ? "imatrix" : "none";
    write_fixtures(P("in.gguf"), "gguf", 0);
    write_fixtures(P("h.safetensors"), "safetensors", 1);
    char hess[512], yaml[2048];
    if (_i % 2) /* the importance values as the Hessian */
        snprintf(hess, sizeof hess, "{ plugin: file, path: %s }", P("h.safetensors"));
    else
        snprintf(hess, sizeof hess, "{ plugin: uniform }");
    snprintf(yaml, sizeof yaml,
             "input: %s\noutput: %s\nselect: { include: [\"*\"] }\nstages:\n"
             "  hessian: %s\n  importance: { plugin: magnitude }\n"
             "  clusterer: { plugin: ggml, type: %s, weights: %s }\n"
             "  residual: { plugin: none }\n  writer: { plugin: dequant, dtype: %s }\n",
             P("in.gguf"), P("out.gguf"), hess, type, _i % 2 ? "hessian" : "none", type);
    th_write_file(P("p.yaml"), yaml, strlen(yaml));
    char *err = NULL;
    const char *run[] = {"run", P("p.yaml"), "-q", NULL};
    ck_assert_msg(hvq_run(run, &err) == 0, "%s\n%s", yaml, err);
    free(err);
    size_t n;
    char *file = th_read_file(P("out.gguf"), &n);
    ck_assert_ptr_nonnull(file);
    for (int i = 0; i < N_FX; i++) {
        int k = fx[i].cols % 256 == 0;
        const char *want = fb && !k ? fb : type;
        if (!fb && k)
            continue; /* no fixture of the 32-wide types for rows of 512 */
        ck_assert_msg(holds_fixture(file, n, fx[i].name, want, mode),
                      "%s (%s, %s): not llama-quantize's %s blocks", fx[i].name, type, mode,
                      want);
    }
    free(file);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("gguf-native");
    TCase *tc = tcase_create("binary");
    tcase_set_timeout(tc, 300);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, k_type_pipeline_writes_the_clusterers_blocks);
    tcase_add_test(tc, q4_0_pipeline_matches_the_container);
    tcase_add_test(tc, decode_q8_0_of_a_has_vq_container);
    tcase_add_test(tc, native_follows_the_clusterers_types);
    tcase_add_test(tc, gguf_output_no_writer_keeps_the_encodings);
    tcase_add_test(tc, eval_of_a_q4_1_gguf_output);
    tcase_add_test(tc, bad_dtype_and_non_gguf_outputs_exit_2);
    tcase_add_loop_test(tc, native_blocks_are_llama_quantize_s, 0, 24);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return th_run_suite(suite()); }
