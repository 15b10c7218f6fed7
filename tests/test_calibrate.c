/* Tests of the hessian "calibrate" plugin, the pipelines' evaluate: key and
 * compare's perplexity column:
 *
 *   - agreement with llama.cpp: the diagonals calibrate computes for
 *     stories260K over the whole of ../shared/data/tokens/tinystories.tok512.npy
 *     (text/tinystories.txt tokenized with the same tokenizer) against the
 *     imatrix.gguf and imatrix.dat llama-imatrix wrote for the same text
 *     with context 256. The streams are not identical: our token file has
 *     a BOS before each of its 1,230 paragraphs, llama-imatrix tokenized the
 *     text as one string (paragraphs joined by newline tokens) and puts one
 *     BOS at the start of each of its 393 chunks, so a few columns that fire
 *     on BOS (or on newlines) differ a lot. Two comparisons, with the figures
 *     measured when this test was written:
 *       1. the token file as it is (386 windows of 256): relative L2
 *          difference over all 35 x 64..172 columns 0.0377, the worst weight
 *          0.58 (blk.0.ffn_down: one column 0.565 vs 0.146), Pearson
 *          correlation 0.9990, per-weight means within 5.6 %;
 *       2. the same tokens laid out as llama-imatrix lays them out (each
 *          paragraph BOS replaced by two newline tokens, BOS only at the
 *          start of each window: 391 windows): relative L2 0.0097, worst
 *          weight 0.035 (blk.4.ffn_down), Pearson 0.99993, means within
 *          0.6 %.
 *     The bounds asserted are those figures with some margin; the second
 *     shows what remains is the text's layout, not the statistic;
 *   - save: the GGUF written is what llama-imatrix writes (general.type,
 *     imatrix.datasets / chunk_count / chunk_size, per weight .in_sum2 [n]
 *     and .counts [1], F32, sorted by name) and the imatrix plugin reads it
 *     back to the diagonals calibrate gave (to float rounding);
 *   - the GGUF copy of the model gives the diagonals of the Hugging Face
 *     one (llama.cpp names and RoPE order);
 *   - names, missing: error / uniform, length checks, bad token files and a
 *     model without configuration;
 *   - a pipeline with hessian: calibrate through the real binary: the
 *     summary and the JSON report name the tokens; the one warning for
 *     tensors that are not linear layers;
 *   - evaluate: parsing, --set, validation errors and the YAML round trip;
 *   - compare's PPL column (uncompressed row first, 4.236 for the demo
 *     model on the first 40 windows), --no-eval, the JSON report, the
 *     first pipeline's evaluation used for every row, and run --eval;
 *   - the layer-major pass calibrate uses (model_windows, model_open_lazy):
 *     the same hook sums and NLL bits as window by window, and a lazy model
 *     holding one block's weights at a time. */
#include "config.h"

#include "eval.h"
#include "harness.h"
#include "json.h"
#include "llama.h"
#include "params.h"
#include "pipeline.h"

#include <check.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MODEL "models/stories260K"
#define TOKENS "models/stories260K/tinystories-10k.tok512.npy"
#define N_LAYERS 5
#define HIDDEN 64
#define FFN 172
#define N_WEIGHTS (N_LAYERS * HVQ_LLAMA_N_LINEAR)

static hvq_ctx *ctx;
static hvq_registry *reg;
static char *tmp;

static void load(void)
{
    ctx = th_ctx();
    reg = th_registry(ctx);
}

static void unload(void)
{
    hvq_ctx_free(ctx);
    hvq_registry_free(reg);
}

static void setup(void) { tmp = th_tmpdir("calibrate"); }

static void teardown(void)
{
    th_rmtree(tmp);
    free(tmp);
}

/* "tmp/name" in a rotating static buffer. */
static const char *tpath(const char *name)
{
    static char bufs[8][PATH_MAX];
    static int k;
    char *b = bufs[k++ % 8];
    snprintf(b, PATH_MAX, "%s/%s", tmp, name);
    return b;
}

static int cols_of(hvq_llama_linear w) { return w == HVQ_LLAMA_DOWN ? FFN : HIDDEN; }

/* ---- an instance of a Hessian plugin with "key=value" parameters --------- */

typedef struct inst {
    const hvq_plugin *pl;
    hvq_value v[8];
    char text[8][PATH_MAX];
    hvq_params p;
    void *st;
} inst;

/* Opens the Hessian plugin `name` for model_path; kv sets parameters (the
 * others take their defaults). Returns the status; close with inst_close. */
static hvq_status inst_open(inst *in, const char *name, const char *model_path,
                            const char *const *kv)
{
    char why[256];
    memset(in, 0, sizeof *in);
    const hvq_loaded_plugin *lp = hvq_registry_find(reg, HVQ_KIND_HESSIAN, name);
    ck_assert_msg(lp != NULL, "no hessian plugin '%s' in the build tree", name);
    in->pl = &lp->desc;
    size_t n = hvq_param_count(in->pl->params);
    ck_assert_uint_le(n, 8);
    for (size_t i = 0; i < n; i++) {
        in->v[i].type = in->pl->params[i].type;
        const char *text = in->pl->params[i].default_value;
        for (size_t k = 0; kv && kv[k]; k++) {
            size_t len = strlen(in->pl->params[i].name);
            if (strncmp(kv[k], in->pl->params[i].name, len) == 0 && kv[k][len] == '=')
                text = kv[k] + len + 1;
        }
        if (!text)
            continue;
        snprintf(in->text[i], sizeof in->text[i], "%s", text);
        ck_assert_msg(hvq_param_parse(&in->pl->params[i], in->text[i], &in->v[i], why,
                                      sizeof why) == HVQ_OK,
                      "%s: %s", in->pl->params[i].name, why);
    }
    in->p.count = n;
    in->p.values = in->v;
    in->p.specs = in->pl->params;
    hvq_ctx_clear_error(ctx);
    return in->pl->hessian_open(ctx, &in->p, model_path, &in->st);
}

static void inst_close(inst *in) { in->pl->hessian_close(ctx, in->st); }

static hvq_status inst_get(inst *in, const char *name, uint64_t cols, float *h)
{
    hvq_tensor_info t = {.name = name, .dtype = HVQ_DTYPE_F32, .dtype_name = "F32", .ndim = 2,
                         .shape = {32, (int64_t)cols}, .nbytes = 32 * cols * 4};
    hvq_ctx_clear_error(ctx);
    return in->pl->hessian_get(ctx, in->st, &t, 32, cols, h);
}

/* ---- diagonals of every linear weight ------------------------------------ */

typedef struct diags {
    float d[N_WEIGHTS][FFN];
    int n[N_WEIGHTS];
    char name[N_WEIGHTS][64]; /* llama.cpp names */
} diags;

/* Every diagonal from an open instance, looked up by the names of one
 * scheme (gguf_names: llama.cpp's, else Hugging Face's). */
static void diags_from(inst *in, int gguf_names, diags *out)
{
    for (int l = 0; l < N_LAYERS; l++)
        for (int w = 0; w < HVQ_LLAMA_N_LINEAR; w++) {
            int k = l * HVQ_LLAMA_N_LINEAR + w;
            char name[128];
            hvq_llama_linear_name(gguf_names, l, (hvq_llama_linear)w, name, sizeof name);
            hvq_llama_linear_name(1, l, (hvq_llama_linear)w, out->name[k], sizeof out->name[k]);
            out->n[k] = cols_of((hvq_llama_linear)w);
            ck_assert_msg(inst_get(in, name, (uint64_t)out->n[k], out->d[k]) == HVQ_OK, "%s: %s",
                          name, hvq_ctx_error(ctx));
        }
}

/* The diagonals of an importance matrix file, through the imatrix plugin. */
static void diags_imatrix(const char *path, diags *out)
{
    char p[PATH_MAX + 8];
    snprintf(p, sizeof p, "path=%s", path);
    const char *kv[] = {p, "missing=error", "names=llama", NULL};
    inst in;
    ck_assert_msg(inst_open(&in, "imatrix", "model", kv) == HVQ_OK, "%s", hvq_ctx_error(ctx));
    diags_from(&in, 1, out);
    inst_close(&in);
}

typedef struct agreement {
    double rel_l2;       /* over every column of every weight */
    double worst;        /* the largest per-weight relative L2 */
    int worst_k;
    double pearson;      /* over every column */
    double mean_dev;     /* max over weights of |mean(a) / mean(b) - 1| */
    double max_rel;      /* max over columns of |a - b| / b */
} agreement;

static agreement agree(const diags *a, const diags *b)
{
    agreement r = {0};
    double num = 0, den = 0, sx = 0, sy = 0, sxx = 0, syy = 0, sxy = 0;
    size_t cnt = 0;
    for (int k = 0; k < N_WEIGHTS; k++) {
        ck_assert_int_eq(a->n[k], b->n[k]);
        double wn = 0, wd = 0, ma = 0, mb = 0;
        for (int j = 0; j < a->n[k]; j++) {
            double x = a->d[k][j], y = b->d[k][j];
            wn += (x - y) * (x - y);
            wd += y * y;
            ma += x;
            mb += y;
            sx += x;
            sy += y;
            sxx += x * x;
            syy += y * y;
            sxy += x * y;
            cnt++;
            if (y > 0 && fabs(x - y) / y > r.max_rel)
                r.max_rel = fabs(x - y) / y;
        }
        num += wn;
        den += wd;
        if (sqrt(wn / wd) > r.worst) {
            r.worst = sqrt(wn / wd);
            r.worst_k = k;
        }
        if (fabs(ma / mb - 1) > r.mean_dev)
            r.mean_dev = fabs(ma / mb - 1);
    }
    r.rel_l2 = sqrt(num / den);
    double n = (double)cnt;
    r.pearson = (sxy - sx * sy / n) / sqrt((sxx - sx * sx / n) * (syy - sy * sy / n));
    return r;
}

static void print_agreement(const char *what, const agreement *r, const diags *a)
{
    fprintf(stderr,
            "test_calibrate: %s: relative L2 %.4f, worst weight %.4f (%s), Pearson %.6f, "
            "per-weight means within %.2f %%, largest column difference %.1f %%\n",
            what, r->rel_l2, r->worst, a->name[r->worst_k], r->pearson, 100 * r->mean_dev,
            100 * r->max_rel);
}

/* ---- running the binary --------------------------------------------------- */

/* Runs hvqconv with args; checks the exit status; returns stdout and
 * (when err is not NULL) stderr. */
static char *run_ok(char **err, const char *const *args)
{
    char *out = NULL, *e = NULL;
    int rc = th_run(&out, &e, args);
    ck_assert_msg(rc == 0, "hvqconv %s %s exited %d:\n%s", args[0], args[1] ? args[1] : "", rc,
                  e ? e : "");
    if (err)
        *err = e;
    else
        free(e);
    return out;
}

/* A pipeline file in tmp: the demo model (or model), the given hessian
 * stage (flow-mapping body) and select globs; rtn and dequant. */
static const char *write_pipeline(const char *file, const char *model, const char *hessian,
                                  const char *include, const char *extra)
{
    char text[8192];
    snprintf(text, sizeof text,
             "name: cal\n"
             "input: %s\n"
             "output: %s\n"
             "report: %s\n"
             "select:\n  include: [\"%s\"]\n"
             "stages:\n"
             "  hessian: { %s }\n"
             "  clusterer: { plugin: rtn, group_size: 32 }\n"
             "  writer: { plugin: dequant, dtype: f32 }\n%s",
             model, tpath("out.safetensors"), tpath("out.json"), include, hessian,
             extra ? extra : "");
    const char *path = tpath(file);
    th_write_file(path, text, strlen(text));
    return path;
}

/* Writes ids as raw little-endian int32. */
static void write_bin(const char *path, const int32_t *ids, size_t n)
{
    unsigned char *b = malloc(n * 4 + 1);
    ck_assert_ptr_nonnull(b);
    for (size_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)ids[i];
        b[4 * i] = (unsigned char)u;
        b[4 * i + 1] = (unsigned char)(u >> 8);
        b[4 * i + 2] = (unsigned char)(u >> 16);
        b[4 * i + 3] = (unsigned char)(u >> 24);
    }
    th_write_file(path, b, n * 4);
    free(b);
}

/* Writes a .npy with the given descr and shape text and raw data. */
static void write_npy(const char *path, const char *descr, const char *shape, const void *data,
                      size_t n)
{
    char hdr[256];
    int len = snprintf(hdr, sizeof hdr, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }",
                       descr, shape);
    size_t total = 10 + (size_t)len + 1, pad = (64 - total % 64) % 64;
    unsigned char *b = malloc(total + pad + n);
    ck_assert_ptr_nonnull(b);
    memcpy(b, "\x93NUMPY\x01\x00", 8);
    b[8] = (unsigned char)((size_t)len + 1 + pad);
    b[9] = (unsigned char)(((size_t)len + 1 + pad) >> 8);
    memcpy(b + 10, hdr, (size_t)len);
    memset(b + 10 + len, ' ', pad);
    b[10 + (size_t)len + pad] = '\n';
    memcpy(b + total + pad, data, n);
    th_write_file(path, b, total + pad + n);
    free(b);
}

/* ---- agreement with llama.cpp's imatrix ------------------------------------ */

START_TEST(agrees_with_llama_cpp)
{
    const char *shared = th_shared_data();
    if (!shared) {
        fprintf(stderr, "test_calibrate: skipped agrees_with_llama_cpp: no ../shared/data\n");
        return;
    }
    char toks[PATH_MAX], igguf[PATH_MAX], idat[PATH_MAX];
    snprintf(toks, sizeof toks, "%s/tokens/tinystories.tok512.npy", shared);
    snprintf(igguf, sizeof igguf, "%s/stories260K/imatrix.gguf", shared);
    snprintf(idat, sizeof idat, "%s/stories260K/imatrix.dat", shared);

    /* The tokens as llama-imatrix lays the same text out: paragraphs joined
     * by two newline tokens (<0x0A> is id 13), one BOS per window. */
    int32_t *ids;
    uint64_t n;
    ck_assert_msg(hvq_eval_read_tokens(ctx, toks, &ids, &n) == HVQ_OK, "%s", hvq_ctx_error(ctx));
    ck_assert_uint_eq(n, 98881);
    int32_t *lay = malloc((size_t)n * 2 * sizeof *lay);
    ck_assert_ptr_nonnull(lay);
    size_t m = 0;
    for (uint64_t i = 0; i < n; i++) {
        if (ids[i] != 1)
            lay[m++] = ids[i];
        else if (i > 0) {
            lay[m++] = 13;
            lay[m++] = 13;
        }
    }
    m -= m % 256;
    for (size_t w = 0; w < m; w += 256)
        lay[w] = 1;
    write_bin(tpath("layout.bin"), lay, m);
    free(lay);
    free(ids);

    /* Both through the real binary, every window, saved as imatrix GGUF. */
    char hess[2 * PATH_MAX];
    snprintf(hess, sizeof hess, "plugin: calibrate, tokens: \"%s\", windows: 1000, save: \"%s\"",
             toks, tpath("asis.gguf"));
    const char *pipe1 =
        write_pipeline("asis.yaml", th_src(MODEL), hess, "*.down_proj.weight", NULL);
    snprintf(hess, sizeof hess, "plugin: calibrate, tokens: \"%s\", windows: 1000, save: \"%s\"",
             tpath("layout.bin"), tpath("layout.gguf"));
    const char *pipe2 =
        write_pipeline("layout.yaml", th_src(MODEL), hess, "*.down_proj.weight", NULL);
    const char *a1[] = {"run", pipe1, "-f", NULL};
    char *err;
    free(run_ok(&err, a1));
    th_assert_contains(err, "calibrated on 98816 tokens (386 windows of 256)");
    th_assert_contains(err, "386 windows of 256; using those instead of the 1000 asked for");
    free(err);
    const char *a2[] = {"run", pipe2, "-f", "-q", NULL};
    free(run_ok(NULL, a2));

    static diags ours, laid, ref_gguf, ref_dat;
    diags_imatrix(tpath("asis.gguf"), &ours);
    diags_imatrix(tpath("layout.gguf"), &laid);
    diags_imatrix(igguf, &ref_gguf);
    diags_imatrix(idat, &ref_dat);
    const diags *refs[] = {&ref_gguf, &ref_dat};
    for (int r = 0; r < 2; r++) {
        agreement x = agree(&ours, refs[r]), y = agree(&laid, refs[r]);
        print_agreement(r ? "as is vs imatrix.dat" : "as is vs imatrix.gguf", &x, &ours);
        print_agreement(r ? "llama.cpp layout vs imatrix.dat" : "llama.cpp layout vs imatrix.gguf",
                        &y, &laid);
        /* measured: 0.0377, 0.9990, 5.6 % */
        ck_assert_double_lt(x.rel_l2, 0.06);
        ck_assert_double_gt(x.pearson, 0.998);
        ck_assert_double_lt(x.mean_dev, 0.08);
        /* measured: 0.0097, worst 0.035, 0.99993, 0.6 % */
        ck_assert_double_lt(y.rel_l2, 0.015);
        ck_assert_double_lt(y.worst, 0.05);
        ck_assert_double_gt(y.pearson, 0.9998);
        ck_assert_double_lt(y.mean_dev, 0.015);
    }
}
END_TEST

/* ---- save and read back ----------------------------------------------------- */

/* The typed JSON text of a GGUF metadata key of m, or NULL. */
static const char *meta_of(hvq_model *m, const char *key)
{
    return th_model_meta(ctx, m, key);
}

START_TEST(save_reads_back)
{
    char toks[PATH_MAX + 16], save[PATH_MAX + 16];
    snprintf(toks, sizeof toks, "tokens=%s", th_src(TOKENS));
    snprintf(save, sizeof save, "save=%s", tpath("s.gguf"));
    const char *kv[] = {toks, "windows=4", "ctx=64", save, NULL};
    inst cal;
    ck_assert_msg(inst_open(&cal, "calibrate", th_src(MODEL), kv) == HVQ_OK, "%s",
                  hvq_ctx_error(ctx));
    static diags mine, back;
    diags_from(&cal, 0, &mine); /* Hugging Face names, as the model has */
    inst_close(&cal);
    ck_assert_int_eq(hvq_outputs_commit(ctx), HVQ_OK); /* the save is an output of the run */
    diags_imatrix(tpath("s.gguf"), &back);
    for (int k = 0; k < N_WEIGHTS; k++)
        for (int j = 0; j < mine.n[k]; j++) {
            ck_assert_msg(mine.d[k][j] > 0, "%s[%d] = %g", mine.name[k], j, (double)mine.d[k][j]);
            ck_assert_msg(fabsf(mine.d[k][j] - back.d[k][j]) <= 3e-7f * mine.d[k][j],
                          "%s[%d]: %.9g calibrated, %.9g read back", mine.name[k], j,
                          (double)mine.d[k][j], (double)back.d[k][j]);
        }
    /* q, k and v share their input, gate and up theirs. */
    for (int l = 0; l < N_LAYERS; l++) {
        int b = l * HVQ_LLAMA_N_LINEAR;
        ck_assert_mem_eq(mine.d[b + HVQ_LLAMA_Q], mine.d[b + HVQ_LLAMA_K], HIDDEN * 4);
        ck_assert_mem_eq(mine.d[b + HVQ_LLAMA_Q], mine.d[b + HVQ_LLAMA_V], HIDDEN * 4);
        ck_assert_mem_eq(mine.d[b + HVQ_LLAMA_GATE], mine.d[b + HVQ_LLAMA_UP], HIDDEN * 4);
    }

    /* The layout llama-imatrix writes. */
    hvq_model *m = ctx->host->model_open(ctx, tpath("s.gguf"));
    ck_assert_msg(m != NULL, "%s", hvq_ctx_error(ctx));
    th_assert_contains(meta_of(m, "general.type"), "\"value\":\"imatrix\"");
    th_assert_contains(meta_of(m, "imatrix.chunk_count"), "{\"gguf_type\":\"uint32\",\"value\":4}");
    th_assert_contains(meta_of(m, "imatrix.chunk_size"), "{\"gguf_type\":\"uint32\",\"value\":64}");
    th_assert_contains(meta_of(m, "imatrix.datasets"), "\"item_type\":\"string\"");
    th_assert_contains(meta_of(m, "imatrix.datasets"), TOKENS);
    ck_assert_uint_eq(ctx->host->model_count(m), 2 * N_WEIGHTS);
    /* per weight (sorted by name, as llama.cpp's map) in_sum2 then counts */
    char prev[128] = "";
    for (size_t i = 0; i < 2 * N_WEIGHTS; i++) {
        hvq_tensor_info info;
        ck_assert_int_eq(ctx->host->model_info(m, i, &info), HVQ_OK);
        ck_assert_int_eq(info.dtype, HVQ_DTYPE_F32);
        ck_assert_int_eq(info.ndim, 1);
        const char *dot = strrchr(info.name, '.');
        ck_assert_ptr_nonnull(dot);
        char stem[128];
        snprintf(stem, sizeof stem, "%.*s", (int)(dot - info.name), info.name);
        if (i % 2 == 0) {
            ck_assert_msg(strcmp(prev, stem) < 0, "'%s' after '%s'", stem, prev);
            snprintf(prev, sizeof prev, "%s", stem);
        } else {
            ck_assert_str_eq(stem, prev);
        }
        if (i % 2 == 1) {
            ck_assert_str_eq(dot, ".counts");
            ck_assert_int_eq(info.shape[0], 1);
            hvq_tensor t;
            ck_assert_int_eq(ctx->host->model_find(ctx, m, info.name, &t), HVQ_OK);
            float c;
            memcpy(&c, t.data, 4);
            ck_assert(c == 256.0f); /* 4 windows of 64 tokens */
        } else {
            ck_assert_str_eq(dot, ".in_sum2");
            ck_assert_int_eq(info.shape[0], strstr(info.name, "ffn_down") ? FFN : HIDDEN);
        }
    }
    ctx->host->model_close(ctx, m);
}
END_TEST

/* The GGUF copy (llama.cpp names, interleaved RoPE) gives the same. */
START_TEST(gguf_model_same)
{
    const char *shared = th_shared_data();
    if (!shared) {
        fprintf(stderr, "test_calibrate: skipped gguf_model_same: no ../shared/data\n");
        return;
    }
    char gguf[PATH_MAX], toks[PATH_MAX + 16];
    snprintf(gguf, sizeof gguf, "%s/stories260K/stories260K.f32.gguf", shared);
    snprintf(toks, sizeof toks, "tokens=%s", th_src(TOKENS));
    const char *kv[] = {toks, "windows=2", "ctx=96", NULL};
    static diags hf, gg;
    inst in;
    ck_assert_msg(inst_open(&in, "calibrate", th_src(MODEL), kv) == HVQ_OK, "%s",
                  hvq_ctx_error(ctx));
    diags_from(&in, 0, &hf);
    inst_close(&in);
    ck_assert_msg(inst_open(&in, "calibrate", gguf, kv) == HVQ_OK, "%s", hvq_ctx_error(ctx));
    diags_from(&in, 1, &gg);
    inst_close(&in);
    agreement a = agree(&gg, &hf);
    print_agreement("GGUF model vs Hugging Face model", &a, &gg);
    ck_assert_double_lt(a.max_rel, 1e-4);
}
END_TEST

/* ---- names, policies, errors ----------------------------------------------- */

START_TEST(names_and_missing)
{
    char toks[PATH_MAX + 16];
    snprintf(toks, sizeof toks, "tokens=%s", th_src(TOKENS));
    const char *kv[] = {toks, "windows=1", "ctx=32", NULL};
    inst in;
    ck_assert_msg(inst_open(&in, "calibrate", th_src(MODEL), kv) == HVQ_OK, "%s",
                  hvq_ctx_error(ctx));
    float a[FFN], b[FFN];
    /* Both naming schemes reach the same accumulator. */
    ck_assert_int_eq(inst_get(&in, "model.layers.3.mlp.down_proj.weight", FFN, a), HVQ_OK);
    ck_assert_int_eq(inst_get(&in, "blk.3.ffn_down.weight", FFN, b), HVQ_OK);
    ck_assert_mem_eq(a, b, sizeof a);
    ck_assert_int_eq(inst_get(&in, "model.layers.0.self_attn.o_proj.weight", HIDDEN, a), HVQ_OK);
    ck_assert_int_eq(inst_get(&in, "blk.0.attn_output.weight", HIDDEN, b), HVQ_OK);
    ck_assert_mem_eq(a, b, HIDDEN * 4);
    /* Not a linear layer of a block: missing: error (the default). */
    ck_assert_int_eq(inst_get(&in, "model.embed_tokens.weight", HIDDEN, a), HVQ_E_INPUT);
    ck_assert_str_eq(hvq_ctx_error(ctx),
                     "calibrate: tensor 'model.embed_tokens.weight' is not a linear layer of a "
                     "block (q, k, v, o, gate, up, down), so calibration gives it no Hessian "
                     "diagonal; exclude it in select, or set missing: uniform to use H = 1 for "
                     "it");
    ck_assert_int_eq(inst_get(&in, "model.layers.5.mlp.up_proj.weight", HIDDEN, a), HVQ_E_INPUT);
    ck_assert_int_eq(inst_get(&in, "model.layers.01.mlp.up_proj.weight", HIDDEN, a), HVQ_E_INPUT);
    /* A length that is not the tensor's input dimension. */
    ck_assert_int_eq(inst_get(&in, "model.layers.1.mlp.down_proj.weight", HIDDEN, a), HVQ_E_INPUT);
    ck_assert_str_eq(hvq_ctx_error(ctx),
                     "calibrate: the diagonal for tensor 'model.layers.1.mlp.down_proj.weight' "
                     "has 172 values (the model's activations) but the tensor has 64 input "
                     "columns");
    inst_close(&in);

    const char *kv2[] = {toks, "windows=1", "ctx=32", "missing=uniform", NULL};
    ck_assert_int_eq(inst_open(&in, "calibrate", th_src(MODEL), kv2), HVQ_OK);
    for (int j = 0; j < HIDDEN; j++)
        a[j] = 0;
    ck_assert_int_eq(inst_get(&in, "lm_head.weight", HIDDEN, a), HVQ_OK);
    for (int j = 0; j < HIDDEN; j++)
        ck_assert(a[j] == 1.0f);
    ck_assert_int_eq(inst_get(&in, "lm_head.weight", HIDDEN, a), HVQ_OK); /* listed once */
    inst_close(&in);
}
END_TEST

/* full: true gives mean x x^T: symmetric, its diagonal the diagonal
 * hessian_get gives (the same sums in double, bit for bit), positive
 * semidefinite (x^T H x >= 0 for a few x); without it HVQ_E_NOTFOUND; H = 1
 * tensors (missing: uniform) get the identity. */
START_TEST(full_matrix)
{
    char toks[PATH_MAX + 16];
    snprintf(toks, sizeof toks, "tokens=%s", th_src(TOKENS));
    const char *kv[] = {toks, "windows=2", "ctx=32", "full=true", "missing=uniform", NULL};
    inst in;
    ck_assert_msg(inst_open(&in, "calibrate", th_src(MODEL), kv) == HVQ_OK, "%s",
                  hvq_ctx_error(ctx));
    ck_assert_ptr_nonnull(in.pl->hessian_get_full);
    static float full[FFN * FFN], d[FFN];
    const char *names[] = {"model.layers.2.mlp.down_proj.weight", "blk.4.attn_q.weight"};
    const uint64_t cols[] = {FFN, HIDDEN};
    for (int t = 0; t < 2; t++) {
        uint64_t n = cols[t];
        hvq_tensor_info ti = {.name = names[t], .dtype = HVQ_DTYPE_F32, .ndim = 2,
                              .shape = {32, (int64_t)n}};
        ck_assert_int_eq(in.pl->hessian_get_full(ctx, in.st, &ti, 32, n, full), HVQ_OK);
        ck_assert_int_eq(inst_get(&in, names[t], n, d), HVQ_OK);
        for (uint64_t i = 0; i < n; i++) {
            ck_assert_msg(full[i * n + i] == d[i], "%s: H[%llu][%llu] %a, diagonal %a",
                          names[t], (unsigned long long)i, (unsigned long long)i,
                          (double)full[i * n + i], (double)d[i]);
            for (uint64_t j = 0; j < n; j++)
                ck_assert(full[i * n + j] == full[j * n + i]);
        }
        for (int k = 0; k < 4; k++) {
            double q = 0;
            for (uint64_t i = 0; i < n; i++)
                for (uint64_t j = 0; j < n; j++)
                    q += (double)full[i * n + j] * sin(1.0 + (double)(i * (k + 1))) *
                         sin(1.0 + (double)(j * (k + 1)));
            ck_assert_msg(q >= -1e-6, "x^T H x = %g", q); /* float rounding of the means */
        }
    }
    hvq_tensor_info head = {.name = "lm_head.weight", .ndim = 2, .shape = {32, HIDDEN}};
    ck_assert_int_eq(in.pl->hessian_get_full(ctx, in.st, &head, 32, HIDDEN, full), HVQ_OK);
    for (int i = 0; i < HIDDEN; i++)
        for (int j = 0; j < HIDDEN; j++)
            ck_assert(full[i * HIDDEN + j] == (i == j ? 1.0f : 0.0f));
    inst_close(&in);

    const char *kv2[] = {toks, "windows=1", "ctx=32", NULL};
    ck_assert_int_eq(inst_open(&in, "calibrate", th_src(MODEL), kv2), HVQ_OK);
    hvq_tensor_info ti = {.name = names[1], .ndim = 2, .shape = {32, HIDDEN}};
    hvq_ctx_clear_error(ctx);
    ck_assert_int_eq(in.pl->hessian_get_full(ctx, in.st, &ti, 32, HIDDEN, full),
                     HVQ_E_NOTFOUND);
    ck_assert_str_eq(hvq_ctx_error(ctx), "");
    inst_close(&in);
}
END_TEST

/* Opening with tokens=path (and kv) must fail with status st and a message
 * holding reason. */
static void open_fails(const char *model, const char *tokens, const char *ctx_len,
                       hvq_status st, const char *reason)
{
    char t[PATH_MAX + 16], c[32];
    snprintf(t, sizeof t, "tokens=%s", tokens);
    snprintf(c, sizeof c, "ctx=%s", ctx_len);
    const char *kv[] = {t, c, "windows=2", NULL};
    inst in;
    hvq_status got = inst_open(&in, "calibrate", model, kv);
    ck_assert_msg(got == st, "%s: status %d, expected %d: %s", reason, got, st,
                  hvq_ctx_error(ctx));
    th_assert_contains(hvq_ctx_error(ctx), reason);
    inst_close(&in);
}

START_TEST(bad_inputs)
{
    const char *model = th_src(MODEL);
    open_fails(model, tpath("none.npy"), "16", HVQ_E_INPUT, "none.npy");
    /* floats */
    float f[4] = {1, 2, 3, 4};
    write_npy(tpath("f.npy"), "<f4", "(4,)", f, sizeof f);
    open_fails(model, tpath("f.npy"), "2", HVQ_E_INPUT, "token ids must be integers");
    /* two dimensions */
    int32_t two[4] = {1, 2, 3, 4};
    write_npy(tpath("two.npy"), "<i4", "(2, 2)", two, sizeof two);
    open_fails(model, tpath("two.npy"), "2", HVQ_E_INPUT,
               "a token file holds one flat (1-D) array of ids");
    /* int64 and uint16 are fine */
    int64_t i64[8] = {1, 403, 407, 261, 378, 432, 383, 286};
    write_npy(tpath("i64.npy"), "<i8", "(8,)", i64, sizeof i64);
    uint16_t u16[8] = {1, 403, 407, 261, 378, 432, 383, 286};
    write_npy(tpath("u16.npy"), "<u2", "(8,)", u16, sizeof u16);
    char t[PATH_MAX + 16];
    static diags d64, d16;
    inst in;
    snprintf(t, sizeof t, "tokens=%s", tpath("i64.npy"));
    const char *kv1[] = {t, "ctx=8", "windows=1", NULL};
    ck_assert_msg(inst_open(&in, "calibrate", model, kv1) == HVQ_OK, "%s", hvq_ctx_error(ctx));
    diags_from(&in, 0, &d64);
    inst_close(&in);
    snprintf(t, sizeof t, "tokens=%s", tpath("u16.npy"));
    ck_assert_msg(inst_open(&in, "calibrate", model, kv1) == HVQ_OK, "%s", hvq_ctx_error(ctx));
    diags_from(&in, 0, &d16);
    inst_close(&in);
    ck_assert_mem_eq(&d64, &d16, sizeof d64);
    /* raw int32 */
    int32_t ids[300];
    for (int i = 0; i < 300; i++)
        ids[i] = (int32_t)(3 + i % 500);
    write_bin(tpath("ok.bin"), ids, 300);
    open_fails(model, tpath("ok.bin"), "512", HVQ_E_INPUT,
               "300 tokens, fewer than one window of ctx = 512");
    ids[7] = 9999;
    write_bin(tpath("vocab.bin"), ids, 300);
    open_fails(model, tpath("vocab.bin"), "16", HVQ_E_INPUT, "outside the vocabulary");
    ids[7] = -5;
    write_bin(tpath("neg.bin"), ids, 300);
    open_fails(model, tpath("neg.bin"), "16", HVQ_E_INPUT, "token 7 is negative");
    th_write_file(tpath("odd.bin"), "abcdef", 6);
    open_fails(model, tpath("odd.bin"), "2", HVQ_E_INPUT, "not a whole number of int32");
    th_write_file(tpath("text.npy"), "hello, world", 12);
    open_fails(model, tpath("text.npy"), "2", HVQ_E_INPUT, "text.npy");
    /* A safetensors file without a config.json beside it. */
    char src[PATH_MAX];
    snprintf(src, sizeof src, "%s/model.safetensors", model);
    ck_assert_int_eq(symlink(src, tpath("lone.safetensors")), 0);
    open_fails(tpath("lone.safetensors"), th_src(TOKENS), "16", HVQ_E_INPUT,
               "calibrate needs the model's configuration");
    mkdir(tpath("dir.bin"), 0755);
    open_fails(model, tpath("dir.bin"), "2", HVQ_E_INPUT, "not a regular file");
    /* save: into a directory that does not exist */
    char sv[PATH_MAX + 32];
    snprintf(t, sizeof t, "tokens=%s", th_src(TOKENS));
    snprintf(sv, sizeof sv, "save=%s", tpath("no/such/dir/i.gguf"));
    const char *kv3[] = {t, "ctx=16", "windows=1", sv, NULL};
    ck_assert_int_eq(inst_open(&in, "calibrate", model, kv3), HVQ_E_INPUT);
    th_assert_contains(hvq_ctx_error(ctx), "no/such/dir/i.gguf");
    inst_close(&in);
    /* More windows than the file holds: all of them, with a warning. */
    snprintf(t, sizeof t, "tokens=%s", tpath("ok.bin"));
    const char *kv2[] = {t, "ctx=100", "windows=50", NULL};
    ck_assert_int_eq(inst_open(&in, "calibrate", model, kv2), HVQ_OK);
    inst_close(&in);
}
END_TEST

/* ---- a pipeline end to end -------------------------------------------------- */

START_TEST(pipeline_end_to_end)
{
    char hess[2 * PATH_MAX];
    const char *toks = th_src(TOKENS);
    snprintf(hess, sizeof hess, "plugin: calibrate, tokens: \"%s\", windows: 2, ctx: 128", toks);
    char *out = NULL, *err = NULL;
    const char *pipe = write_pipeline("e2e.yaml", th_src(MODEL), hess, "*.weight",
                                      "overrides:\n  - match: \"*embed_tokens*\"\n"
                                      "    hessian: { missing: uniform }\n");
    const char *args[] = {"run", pipe, NULL};
    out = run_ok(&err, args);
    char want[PATH_MAX + 128];
    snprintf(want, sizeof want, "  hessian: calibrate (tokens %s, windows 2, ctx 128)\n", toks);
    th_assert_contains(out, want);
    snprintf(want, sizeof want, "calibrated on 256 tokens (2 windows of 128) from %s", toks);
    th_assert_contains(err, want);
    /* ... once: the override's instance borrows the first one's statistics
     * (host->shared_get) instead of running the model again. */
    ck_assert_ptr_null(strstr(strstr(err, "calibrated on") + 1, "calibrated on"));
    /* The override is another parameter set: a second instance, whose one
     * warning names the embedding. */
    th_assert_contains(err, "calibrate: 1 tensor is not a linear layer of a block, H = 1 was "
                            "used for it: 'model.embed_tokens.weight'");
    free(out);
    free(err);

    /* The JSON report carries the effective pipeline, tokens included. */
    size_t n;
    char *json = th_read_file(tpath("out.json"), &n);
    ck_assert_ptr_nonnull(json);
    hvq_json_doc *doc = hvq_json_parse(json, n, 0, NULL);
    ck_assert_ptr_nonnull(doc);
    const char *yaml = hvq_json_string(hvq_json_get(hvq_json_root(doc), "pipeline_yaml"), NULL);
    ck_assert_ptr_nonnull(yaml);
    th_assert_contains(yaml, "  hessian:\n    plugin: calibrate\n");
    th_assert_contains(yaml, toks);
    th_assert_contains(yaml, "    windows: 2\n    ctx: 128\n");
    hvq_json_free(doc);
    free(json);

    /* A saved imatrix is another file of the run, not part of the output:
     * the report's output_bytes (and so its bits per parameter of the
     * file) counts the output alone. */
    char hsave[3 * PATH_MAX];
    snprintf(hsave, sizeof hsave, "%s, save: \"%s\"", hess, tpath("saved.gguf"));
    pipe = write_pipeline("e2e-save.yaml", th_src(MODEL), hsave, "*.weight",
                          "overrides:\n  - match: \"*embed_tokens*\"\n"
                          "    hessian: { missing: uniform }\n");
    const char *sargs[] = {"run", pipe, "-f", "-q", NULL};
    free(run_ok(NULL, sargs));
    struct stat so, ss;
    ck_assert_int_eq(stat(tpath("out.safetensors"), &so), 0);
    ck_assert_int_eq(stat(tpath("saved.gguf"), &ss), 0);
    ck_assert_int_gt(ss.st_size, 0);
    json = th_read_file(tpath("out.json"), &n);
    ck_assert_ptr_nonnull(json);
    char bytes[64];
    snprintf(bytes, sizeof bytes, "\"output_bytes\": %lld,", (long long)so.st_size);
    th_assert_contains(json, bytes);
    free(json);

    /* missing: error stops the run at the embedding. */
    pipe = write_pipeline("e2e.yaml", th_src(MODEL), hess, "*.weight", NULL);
    unlink(tpath("out.safetensors"));
    unlink(tpath("out.json"));
    const char *eargs[] = {"run", pipe, NULL};
    ck_assert_int_eq(th_run(&out, &err, eargs), 2);
    th_assert_contains(err, "tensor 'model.embed_tokens.weight' is not a linear layer");
    ck_assert(!th_exists(tpath("out.safetensors")));
    free(out);
    free(err);
}
END_TEST

/* ---- evaluate: ---------------------------------------------------------- */

#define MINIMAL "stages:\n  clusterer: rtn\n  writer: dequant\n"

static hvq_pipeline *load_text(const char *text, hvq_status *st)
{
    const char *path = tpath("p.yaml");
    th_write_file(path, text, strlen(text));
    hvq_pipeline *p = NULL;
    hvq_ctx_clear_error(ctx);
    *st = hvq_pipeline_load(ctx, path, &p);
    return p;
}

/* Loading text fails with "FILE:" + msg. */
static void eval_load_fails(const char *text, const char *msg)
{
    hvq_status st;
    hvq_pipeline *p = load_text(text, &st);
    ck_assert_ptr_null(p);
    ck_assert_int_eq(st, HVQ_E_INPUT);
    char want[PATH_MAX + 512];
    snprintf(want, sizeof want, "%s:%s", tpath("p.yaml"), msg);
    ck_assert_str_eq(hvq_ctx_error(ctx), want);
}

START_TEST(evaluate_key)
{
    hvq_status st;
    hvq_pipeline *p = load_text(MINIMAL "evaluate: { tokens: t.npy, ctx: 128, windows: 3 }\n", &st);
    ck_assert_int_eq(st, HVQ_OK);
    ck_assert(p->evaluate.present);
    ck_assert_str_eq(p->evaluate.tokens, "t.npy");
    ck_assert_int_eq(p->evaluate.ctx, 128);
    ck_assert_int_eq(p->evaluate.windows, 3);
    ck_assert_int_eq(hvq_pipeline_validate(ctx, p, reg), HVQ_OK);
    /* The YAML of the effective pipeline reads back the same. */
    char *yaml = hvq_pipeline_to_yaml(p);
    ck_assert_ptr_nonnull(yaml);
    th_assert_contains(yaml, "evaluate:\n  tokens: \"t.npy\"\n  ctx: 128\n  windows: 3\n");
    hvq_pipeline_free(p);
    p = load_text(yaml, &st);
    free(yaml);
    ck_assert_int_eq(st, HVQ_OK);
    ck_assert_str_eq(p->evaluate.tokens, "t.npy");
    ck_assert_int_eq(p->evaluate.ctx, 128);
    ck_assert_int_eq(p->evaluate.windows, 3);
    /* --set */
    ck_assert_int_eq(hvq_pipeline_set(ctx, p, "evaluate.windows=7"), HVQ_OK);
    ck_assert_int_eq(hvq_pipeline_set(ctx, p, "evaluate.tokens=u.npy"), HVQ_OK);
    ck_assert_str_eq(p->evaluate.tokens, "u.npy");
    ck_assert_int_eq(p->evaluate.windows, 7);
    ck_assert_int_eq(hvq_pipeline_set(ctx, p, "evaluate.ctx=1"), HVQ_E_INPUT);
    ck_assert_str_eq(hvq_ctx_error(ctx), "--set evaluate.ctx=1: 'evaluate.ctx' must be an "
                                         "integer from 2 to 1048576, got '1'");
    ck_assert_int_eq(hvq_pipeline_set(ctx, p, "evaluate.tokns=x"), HVQ_E_INPUT);
    ck_assert_str_eq(hvq_ctx_error(ctx), "--set evaluate.tokns=x: unknown key 'evaluate.tokns'; "
                                         "did you mean 'evaluate.tokens'?");
    ck_assert_int_eq(hvq_pipeline_set(ctx, p, "evaluate.windows=0"), HVQ_E_INPUT);
    ck_assert_int_eq(hvq_pipeline_set(ctx, p, "evaluate.tokens="), HVQ_E_INPUT);
    ck_assert_int_eq(hvq_pipeline_set(ctx, p, "evaluate=x"), HVQ_E_INPUT);
    ck_assert_str_eq(hvq_ctx_error(ctx), "--set evaluate=x: expected evaluate.tokens, "
                                         "evaluate.ctx or evaluate.windows (or evaluate= to "
                                         "remove the evaluation)");
    ck_assert_int_eq(hvq_pipeline_set(ctx, p, "evaluate.zzzzzzzz=1"), HVQ_E_INPUT);
    ck_assert_str_eq(hvq_ctx_error(ctx), "--set evaluate.zzzzzzzz=1: unknown key "
                                         "'evaluate.zzzzzzzz' (valid keys under evaluate: "
                                         "tokens, ctx, windows)");
    ck_assert_int_eq(hvq_pipeline_set(ctx, p, "evaluate="), HVQ_OK);
    ck_assert(!p->evaluate.present);
    yaml = hvq_pipeline_to_yaml(p);
    ck_assert_ptr_null(strstr(yaml, "evaluate"));
    free(yaml);
    /* A new evaluation starts from the defaults. */
    ck_assert_int_eq(hvq_pipeline_set(ctx, p, "evaluate.windows=3"), HVQ_OK);
    ck_assert(p->evaluate.present);
    ck_assert_int_eq(p->evaluate.ctx, 256);
    ck_assert_int_eq(hvq_pipeline_set(ctx, p, "evaluate="), HVQ_OK);
    /* Without tokens an evaluation is incomplete. */
    ck_assert_int_eq(hvq_pipeline_set(ctx, p, "evaluate.ctx=64"), HVQ_OK);
    ck_assert_int_eq(hvq_pipeline_validate(ctx, p, reg), HVQ_E_INPUT);
    ck_assert_str_eq(hvq_ctx_error(ctx),
                     "--set evaluate.ctx=64: 'evaluate' needs 'tokens: PATH' (the token file "
                     "perplexity is measured on; --set evaluate.tokens=PATH)");
    ck_assert_int_eq(hvq_pipeline_set(ctx, p, "evaluate.tokens=t.npy"), HVQ_OK);
    ck_assert_int_eq(hvq_pipeline_validate(ctx, p, reg), HVQ_OK);
    ck_assert_int_eq(p->evaluate.ctx, 64);
    ck_assert_int_eq(p->evaluate.windows, 0); /* every window */
    hvq_pipeline_free(p);

    /* Defaults, and null. */
    p = load_text(MINIMAL "evaluate: {tokens: t.npy}\n", &st);
    ck_assert_int_eq(p->evaluate.ctx, 256);
    ck_assert_int_eq(p->evaluate.windows, 0);
    hvq_pipeline_free(p);
    p = load_text(MINIMAL "evaluate: ~\n", &st);
    ck_assert(!p->evaluate.present);
    hvq_pipeline_free(p);

    eval_load_fails(MINIMAL "evaluate: {tokns: t.npy}\n",
                    "4:12: unknown key 'tokns' in 'evaluate'; did you mean 'tokens'?");
    eval_load_fails(MINIMAL "evaluate: {tokens: t.npy, colour: red}\n",
                    "4:27: unknown key 'colour' in 'evaluate' (valid keys: tokens, ctx, "
                    "windows)");
    eval_load_fails(MINIMAL "evaluate: {tokens: t.npy, ctx: 1}\n",
                    "4:32: 'evaluate.ctx' must be an integer from 2 to 1048576, got '1'");
    eval_load_fails(MINIMAL "evaluate: {tokens: t.npy, ctx: abc}\n",
                    "4:32: 'evaluate.ctx' must be an integer from 2 to 1048576, got 'abc'");
    eval_load_fails(MINIMAL "evaluate: {tokens: t.npy, windows: 0}\n",
                    "4:36: 'evaluate.windows' must be an integer from 1 to 1000000000, got '0'");
    eval_load_fails(MINIMAL "evaluate: {tokens: [a]}\n",
                    "4:20: 'evaluate.tokens' must be a path, not a sequence");
    eval_load_fails(MINIMAL "evaluate: {ctx: 128}\n",
                    "4:1: 'evaluate' needs 'tokens: PATH' (the token file perplexity is "
                    "measured on)");
    eval_load_fails(MINIMAL "evaluate: {tokens: a, tokens: b}\n",
                    "4:23: duplicate key 'tokens' (first at line 4, column 12)");
    eval_load_fails(MINIMAL "evaluate: t.npy\n",
                    "4:11: 'evaluate' must be a mapping (tokens:, ctx:, windows:), not a scalar");
    eval_load_fails(MINIMAL "evalute: {tokens: t.npy}\n",
                    "4:1: unknown key 'evalute'; did you mean 'evaluate'?");
}
END_TEST

/* ---- compare's perplexity column and run --eval -------------------------- */

/* The last number of the line of text that starts with prefix. */
static double row_last(const char *text, const char *prefix)
{
    const char *line = text;
    while (line && strncmp(line, prefix, strlen(prefix)) != 0) {
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    ck_assert_msg(line != NULL, "no row '%s' in:\n%s", prefix, text);
    const char *end = strchr(line, '\n');
    const char *p = end ? end : line + strlen(line);
    while (p > line && p[-1] == ' ')
        p--;
    while (p > line && p[-1] != ' ')
        p--;
    return strtod(p, NULL);
}

START_TEST(compare_ppl)
{
    /* The shipped pipelines declare evaluate: the first 40 windows of 256
     * of the repo's token file. */
    char rep[PATH_MAX];
    snprintf(rep, sizeof rep, "%s", tpath("cmp.json"));
    const char *args[] = {"compare", "-q", th_src("pipelines/int4-rtn.yaml"),
                          th_src("pipelines/mid.yaml"), "--input", th_src(MODEL),
                          "--report", rep, NULL};
    /* (the pipelines' token path is relative to the source tree) */
    char *cwd = getcwd(NULL, 0);
    ck_assert_int_eq(chdir(th_srcdir()), 0);
    char *out = run_ok(NULL, args);
    ck_assert_int_eq(chdir(cwd), 0);
    free(cwd);
    const char *l1 = out, *l3 = strchr(strchr(out, '\n') + 1, '\n') + 1;
    ck_assert_msg(strncmp(l1, "pipeline ", 9) == 0 && strstr(l1, "PPL\n") != NULL, "%s", out);
    ck_assert_msg(strncmp(l3, "uncompressed ", 13) == 0, "the first row is not the input:\n%s",
                  out);
    th_assert_contains(l3, "16.0000");
    double base = row_last(out, "uncompressed "), rtn = row_last(out, "int4-rtn "),
           mid = row_last(out, "mid ");
    /* The reference figure for the first 40 windows: 4.236. */
    ck_assert_msg(fabs(base - 4.236) / 4.236 < 1e-3, "uncompressed PPL %g", base);
    ck_assert_msg(rtn > base && rtn < 2 * base, "int4-rtn PPL %g", rtn);
    ck_assert_msg(mid > base, "mid PPL %g", mid);
    th_assert_contains(out, "on 10200 tokens (40 windows of 256) of\n" TOKENS ".\n");
    free(out);

    size_t n;
    char *json = th_read_file(rep, &n);
    ck_assert_ptr_nonnull(json);
    hvq_json_doc *doc = hvq_json_parse(json, n, 0, NULL);
    ck_assert_ptr_nonnull(doc);
    const hvq_json_value *pp = hvq_json_get(hvq_json_root(doc), "perplexity");
    ck_assert_ptr_nonnull(pp);
    double v;
    ck_assert_int_eq(hvq_json_double(hvq_json_get(hvq_json_get(pp, "uncompressed"), "ppl"), &v),
                     0);
    ck_assert(fabs(v - base) < 1e-4);
    ck_assert_uint_eq(hvq_json_count(hvq_json_get(pp, "runs")), 2);
    ck_assert_int_eq(hvq_json_double(hvq_json_item(hvq_json_get(pp, "runs"), 1), &v), 0);
    ck_assert(fabs(v - mid) < 1e-3);
    hvq_json_free(doc);
    free(json);

    /* --no-eval; and --set evaluate= on every pipeline: no column. */
    const char *ne[] = {"compare", "-q", th_src("pipelines/int4-rtn.yaml"), "--input",
                        th_src(MODEL), "--no-eval", NULL};
    out = run_ok(NULL, ne);
    ck_assert_ptr_null(strstr(out, "PPL"));
    ck_assert_ptr_null(strstr(out, "uncompressed"));
    free(out);
    const char *none[] = {"compare", "-q", th_src("pipelines/int4-rtn.yaml"), "--input",
                          th_src(MODEL), "--set", "evaluate=", NULL};
    out = run_ok(NULL, none);
    ck_assert_ptr_null(strstr(out, "PPL"));
    free(out);

    /* A token file that does not exist stops compare before any run. */
    const char *bad[] = {"compare", "-q", th_src("pipelines/int4-rtn.yaml"), "--input",
                         th_src(MODEL), "--set", "evaluate.tokens=/nonexistent/t.npy", NULL};
    char *err = NULL;
    ck_assert_int_eq(th_run(&out, &err, bad), 2);
    th_assert_contains(err, "/nonexistent/t.npy");
    free(out);
    free(err);
}
END_TEST

/* Pipelines declaring different evaluations: the first one's for every row,
 * with a warning; a model file as input (its config.json beside it). */
START_TEST(compare_first_evaluation)
{
    char text[4096];
    for (int k = 0; k < 2; k++) {
        snprintf(text, sizeof text,
                 "name: p%d\n"
                 "output: out/p%d.safetensors\n"
                 "select: { include: [\"*proj.weight\"] }\n"
                 "stages:\n  clusterer: { plugin: rtn }\n  writer: { plugin: dequant }\n"
                 "evaluate: { tokens: \"%s\", ctx: 128, windows: %d }\n",
                 k, k, th_src(TOKENS), 2 + k);
        th_write_file(tpath(k ? "p1.yaml" : "p0.yaml"), text, strlen(text));
    }
    char model[PATH_MAX];
    snprintf(model, sizeof model, "%s/model.safetensors", th_src(MODEL));
    mkdir(tpath("keep"), 0755);
    const char *args[] = {"compare", "-q", tpath("p0.yaml"), tpath("p1.yaml"), "--input", model,
                          "--keep", tpath("keep"), NULL};
    char *err;
    char *out = run_ok(&err, args);
    th_assert_contains(err, "p1.yaml declares another evaluate: than ");
    th_assert_contains(out, "on 254 tokens (2 windows of 128) of\n");
    th_assert_contains(out, "uncompressed           -            16.0000         -   16.0000   "
                            "32.1494");
    double a = row_last(out, "p0 "), b = row_last(out, "p1 ");
    ck_assert(isfinite(a) && a > 1 && a == b); /* same settings, same method */
    ck_assert(th_exists(tpath("keep/1-p0.safetensors")));
    free(out);
    free(err);
}
END_TEST

START_TEST(run_eval)
{
    char tok[PATH_MAX + 32];
    snprintf(tok, sizeof tok, "evaluate.tokens=%s", th_src(TOKENS));
    const char *args[] = {"run", "-q", th_src("pipelines/int4-g32.yaml"), "--input",
                          th_src(MODEL), "-o", tpath("g32.safetensors"), "-r",
                          tpath("g32.json"), "--set", tok, "--set", "evaluate.windows=4",
                          "--eval", NULL};
    char *out = run_ok(NULL, args);
    th_assert_contains(out, "  perplexity of the output: ");
    th_assert_contains(out, " on 1020 tokens (4 windows of 256 from ");
    free(out);
    const char *none[] = {"run", "-q", th_src("pipelines/int4-g32.yaml"), "--input",
                          th_src(MODEL), "-o", tpath("x.safetensors"), "--set", "evaluate=",
                          "--eval", NULL};
    char *err = NULL;
    ck_assert_int_eq(th_run(&out, &err, none), 2);
    th_assert_contains(err, "--eval: the pipeline declares no evaluate:");
    ck_assert(!th_exists(tpath("x.safetensors")));
    free(out);
    free(err);
}
END_TEST

/* ---- layer-major passes: model_windows and model_open_lazy ------------- */

/* What the hook saw, per block and linear layer: the sum of x^2 per column
 * (in the order the calls came) and the rows; with a lazy hvq_llama, the
 * weights it held at each call and the highest block its supplier had
 * been asked for. */
typedef struct pass_log {
    double sum[N_LAYERS][HVQ_LLAMA_N_LINEAR][FFN];
    uint64_t rows[N_LAYERS][HVQ_LLAMA_N_LINEAR];
    const hvq_llama *m;
    size_t block_floats; /* what m may hold during a block */
    int held_bad;        /* a call saw m hold anything else */
    int ahead;           /* a call came after a later block was read */
    hvq_model *hm;       /* the supplier's model */
    int gets, top_block; /* tensors supplied; highest block asked for */
    const char *absent;  /* a tensor the supplier says is not there */
} pass_log;

static void pass_hook(void *ud, int layer, int which, const float *x, int n_tokens, int in_dim)
{
    pass_log *g = ud;
    ck_assert(layer >= 0 && layer < N_LAYERS && which >= 0 && which < HVQ_LLAMA_N_LINEAR);
    ck_assert_int_eq(in_dim, cols_of((hvq_llama_linear)which));
    for (int t = 0; t < n_tokens; t++)
        for (int j = 0; j < in_dim; j++)
            g->sum[layer][which][j] += (double)x[t * in_dim + j] * x[t * in_dim + j];
    g->rows[layer][which] += (uint64_t)n_tokens;
    if (g->m && hvq_llama_weights_held(g->m) != g->block_floats)
        g->held_bad = 1;
    if (g->m && g->top_block != layer)
        g->ahead = 1;
}

/* A tensor supplier over the demo model (float32) that counts. */
static hvq_status pass_get(void *ud, hvq_ctx *c, const char *name, float **data, int *ndim,
                           int64_t shape[HVQ_MAX_DIMS])
{
    pass_log *g = ud;
    hvq_tensor t;
    if (g->absent && strcmp(name, g->absent) == 0)
        return HVQ_E_NOTFOUND;
    hvq_status st = c->host->model_find(c, g->hm, name, &t);
    if (st != HVQ_OK)
        return st;
    ck_assert_int_eq(t.info.dtype, HVQ_DTYPE_F32);
    *data = malloc(t.info.nbytes);
    ck_assert_ptr_nonnull(*data);
    memcpy(*data, t.data, t.info.nbytes);
    *ndim = t.info.ndim;
    memcpy(shape, t.info.shape, sizeof t.info.shape);
    g->gets++;
    int l;
    if (sscanf(name, "model.layers.%d.", &l) == 1 && l > g->top_block)
        g->top_block = l;
    return HVQ_OK;
}

/* A counting supplier over the demo model for hvq_llama_load(_lazy): a
 * new log (g->hm open), the configuration text in *cfg and the demo
 * tokens in *ids (free the three). */
static hvq_llama_source pass_source(pass_log **g, char **cfg, int32_t **ids)
{
    uint64_t n_ids;
    ck_assert_int_eq(hvq_eval_read_tokens(ctx, th_src(TOKENS), ids, &n_ids), HVQ_OK);
    ck_assert_uint_ge(n_ids, 128);
    *g = calloc(1, sizeof **g);
    ck_assert_ptr_nonnull(*g);
    (*g)->hm = ctx->host->model_open(ctx, th_src(MODEL));
    ck_assert_ptr_nonnull((*g)->hm);
    *cfg = th_read_file(th_src(MODEL "/config.json"), NULL);
    return (hvq_llama_source){*cfg, NULL, 0, pass_get, *g, "demo"};
}

/* The demo model through the llama plugin's descriptor: opened as `how`
 * says (0 model_open + model_window per window, 1 model_open +
 * model_windows, 2 model_open_lazy + model_windows), windows of n tokens
 * with the hook logging into g; the negative log-likelihood in *nll. */
static void plugin_pass(hvq_ctx *c, int how, const int32_t *ids, int windows, int n,
                        pass_log *g, double *nll, uint64_t *scored)
{
    hvq_registry *r = th_registry(c);
    const hvq_plugin *mp = th_plugin(r, HVQ_KIND_MODEL, "llama");
    ck_assert(HVQ_PLUGIN_HAS(mp, model_open_lazy) && HVQ_PLUGIN_HAS(mp, model_windows));
    hvq_model *hm = c->host->model_open(c, th_src(MODEL));
    ck_assert_ptr_nonnull(hm);
    char *cfg = th_read_file(th_src(MODEL "/config.json"), NULL);
    hvq_model_input in = {.path = th_src(MODEL), .model = hm, .config_json = cfg};
    void *st = NULL;
    ck_assert_msg((how == 2 ? mp->model_open_lazy : mp->model_open)(c, NULL, &in, &st) ==
                      HVQ_OK, "%s", hvq_ctx_error(c));
    free(cfg); /* the plugin keeps none of *in but the model */
    mp->model_set_hook(st, pass_hook, g);
    if (how == 0)
        for (int w = 0; w < windows; w++)
            ck_assert_int_eq(mp->model_window(c, st, ids + w * n, n, nll, scored), HVQ_OK);
    else
        ck_assert_msg(mp->model_windows(c, st, ids, windows, n, nll, scored) == HVQ_OK, "%s",
                      hvq_ctx_error(c));
    mp->model_close(c, st);
    c->host->model_close(c, hm);
    hvq_registry_free(r);
}

/* Layer-major (every window through block l, then l + 1), with the
 * weights held or read block by block, gives the hook the same sums and
 * the same negative log-likelihood, bit for bit, as window after window;
 * with 1 and 3 threads. */
START_TEST(layer_major_same)
{
    int32_t *ids;
    uint64_t n_ids;
    ck_assert_int_eq(hvq_eval_read_tokens(ctx, th_src(TOKENS), &ids, &n_ids), HVQ_OK);
    enum { W = 3, N = 96 };
    ck_assert_uint_ge(n_ids, W * N);
    pass_log *g = calloc(4, sizeof *g);
    double nll[4] = {0.25, 0.25, 0.25, 0.25}; /* added to, as calibrate's running sum */
    uint64_t scored[4] = {0};
    for (int k = 0; k < 4; k++) {
        hvq_ctx_opts o = {.quiet = 1, .threads = k == 3 ? 3 : 1};
        hvq_ctx *c = hvq_ctx_new(&o);
        plugin_pass(c, k == 3 ? 2 : k, ids, W, N, &g[k], &nll[k], &scored[k]);
        hvq_ctx_free(c);
    }
    for (int k = 1; k < 4; k++) {
        ck_assert_msg(memcmp(g[k].sum, g[0].sum, sizeof g[0].sum) == 0, "pass %d: sums differ", k);
        ck_assert(memcmp(g[k].rows, g[0].rows, sizeof g[0].rows) == 0);
        ck_assert_msg(memcmp(&nll[k], &nll[0], sizeof nll[0]) == 0, "pass %d: nll %.17g vs %.17g",
                      k, nll[k], nll[0]);
        ck_assert_uint_eq(scored[k], scored[0]);
    }
    ck_assert_uint_eq(scored[0], W * (N - 1));
    ck_assert_uint_eq(g[0].rows[N_LAYERS - 1][HVQ_LLAMA_DOWN], W * N);
    ck_assert(nll[0] > 0.25);
    free(g);
    free(ids);
}
END_TEST

/* A lazily opened model holds the embedding after opening, during block l
 * only block l's weights (its supplier not yet asked for block l + 1), and
 * nothing after the pass; every tensor is read once a pass (the tied head
 * reads the embedding again). A second pass gives the same bits. */
START_TEST(one_block_at_a_time)
{
    int32_t *ids;
    pass_log *g;
    char *cfg;
    hvq_llama_source src = pass_source(&g, &cfg, &ids);
    double(*first)[HVQ_LLAMA_N_LINEAR][FFN] = malloc(sizeof g->sum);
    hvq_llama *m = NULL;
    ck_assert_msg(hvq_llama_load_lazy(ctx, &src, &m) == HVQ_OK, "%s", hvq_ctx_error(ctx));
    free(cfg);
    ck_assert_uint_eq(hvq_llama_weights_held(m), 512 * HIDDEN);
    ck_assert_int_eq(g->gets, 1);
    g->m = m;
    g->block_floats = 2 * HIDDEN + 2 * 64 * 64 + 2 * 32 * 64 + 3 * FFN * HIDDEN; /* q, o; k, v */
    hvq_llama_set_hook(m, pass_hook, g);
    double nll[2] = {0, 0};
    uint64_t scored = 0;
    for (int k = 0; k < 2; k++) {
        if (k) {
            memcpy(first, g->sum, sizeof g->sum);
            memset(g->sum, 0, sizeof g->sum);
        }
        g->top_block = -1;
        ck_assert_int_eq(hvq_llama_windows(ctx, m, ids, 2, 64, &nll[k], &scored), HVQ_OK);
        ck_assert_int_eq(g->held_bad, 0);
        ck_assert_int_eq(g->ahead, 0);
        ck_assert_int_eq(g->top_block, N_LAYERS - 1);
        ck_assert_uint_eq(hvq_llama_weights_held(m), 0);
        ck_assert_int_eq(g->gets, (k + 1) * (1 + N_LAYERS * 9 + 2));
    }
    ck_assert(memcmp(first, g->sum, sizeof g->sum) == 0);
    ck_assert(nll[0] == nll[1] && nll[0] > 0);
    hvq_llama_free(m);
    ctx->host->model_close(ctx, g->hm);
    free(first);
    free(g);
    free(ids);
}
END_TEST

/* A lazy model missing a tensor of block 2 opens (only the embedding is
 * read), and the pass that reaches the block fails with model_open's
 * message, leaves *nll and *n_scored alone and holds no weights after. */
START_TEST(lazy_error_mid_pass)
{
    int32_t *ids;
    pass_log *g;
    char *cfg;
    hvq_llama_source src = pass_source(&g, &cfg, &ids);
    g->absent = "model.layers.2.mlp.up_proj.weight";
    hvq_llama *m = NULL;
    ck_assert_int_eq(hvq_llama_load(ctx, &src, &m), HVQ_E_INPUT);
    char eager[512];
    snprintf(eager, sizeof eager, "%s", hvq_ctx_error(ctx));
    ck_assert_msg(hvq_llama_load_lazy(ctx, &src, &m) == HVQ_OK, "%s", hvq_ctx_error(ctx));
    free(cfg);
    double nll = 1.5;
    uint64_t scored = 7;
    ck_assert_int_eq(hvq_llama_windows(ctx, m, ids, 2, 32, &nll, &scored), HVQ_E_INPUT);
    ck_assert_str_eq(hvq_ctx_error(ctx), eager);
    th_assert_contains(hvq_ctx_error(ctx), "no tensor 'model.layers.2.mlp.up_proj.weight'");
    ck_assert(nll == 1.5 && scored == 7);
    ck_assert_uint_eq(hvq_llama_weights_held(m), 0);
    hvq_llama_free(m);
    ctx->host->model_close(ctx, g->hm);
    free(g);
    free(ids);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("calibrate");
    TCase *tc = tcase_create("calibrate");
    tcase_add_unchecked_fixture(tc, load, unload);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, agrees_with_llama_cpp);
    tcase_add_test(tc, save_reads_back);
    tcase_add_test(tc, gguf_model_same);
    tcase_add_test(tc, names_and_missing);
    tcase_add_test(tc, full_matrix);
    tcase_add_test(tc, bad_inputs);
    tcase_add_test(tc, pipeline_end_to_end);
    tcase_add_test(tc, evaluate_key);
    tcase_add_test(tc, compare_ppl);
    tcase_add_test(tc, compare_first_evaluation);
    tcase_add_test(tc, run_eval);
    tcase_add_test(tc, layer_major_same);
    tcase_add_test(tc, one_block_at_a_time);
    tcase_add_test(tc, lazy_error_mid_pass);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
