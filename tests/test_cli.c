/* Integration tests of the hvqconv program: the real binary is run (th_run)
 * and its exit status, messages and files are checked.
 *
 *   - the commands, their --help, exit statuses, list-plugins, describe;
 *   - --plugin-dir with the plugins of tests/broken/: one refusal line per
 *     broken plugin, the others (and the built-in ones) still load and run;
 *   - pipelines/int4-rtn.yaml on the bundled model, read back through the
 *     safetensors source: every tensor present, pass-through tensors byte
 *     for byte, compressed ones equal to a scalar RTN written here;
 *   - validation errors before any work (a misspelt parameter in a file and
 *     in --set), with FILE:LINE:COL and a suggestion;
 *   - failures leave nothing behind: no output, no temporary file (missing
 *     or unusable output directory, corrupt input, existing output, output
 *     equal to the input, NaN weights);
 *   - determinism (two runs, 1 or 2 threads, give the same bytes);
 *   - the example plugin of examples/clusterer-sign, compiled against the
 *     header alone, loaded with --plugin-dir and run end to end. */
#include "config.h"

#include "harness.h"

#include "dtype.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- helpers ------------------------------------------------------------- */

static const char *pipeline_rtn(void) { return th_src("pipelines/int4-rtn.yaml"); }
static const char *model_dir(void) { return th_src("models/stories260K"); }

static const char *broken_dir(void)
{
    static char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/tests/broken/.libs", th_builddir());
    return dir;
}

static size_t count_lines_with(const char *text, const char *needle)
{
    size_t n = 0;
    const char *line = text;
    while (line && *line) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        char buf[4096];
        snprintf(buf, sizeof buf, "%.*s", (int)(len < sizeof buf ? len : sizeof buf - 1), line);
        if (strstr(buf, needle))
            n++;
        line = end ? end + 1 : NULL;
    }
    return n;
}

/* The line of text containing needle (static copy), or NULL. */
static const char *line_with(const char *text, const char *needle)
{
    static char buf[4096];
    const char *p = text ? strstr(text, needle) : NULL;
    if (!p)
        return NULL;
    const char *start = p;
    while (start > text && start[-1] != '\n')
        start--;
    const char *end = strchr(p, '\n');
    size_t len = end ? (size_t)(end - start) : strlen(start);
    snprintf(buf, sizeof buf, "%.*s", (int)(len < sizeof buf ? len : sizeof buf - 1), start);
    return buf;
}

/* Whether stdout of list-plugins has a row "KIND NAME ...". */
static int lists(const char *out, const char *kind, const char *name)
{
    const char *line = out;
    while (line && *line) {
        char k[64], n[64];
        if (sscanf(line, "%63s %63s", k, n) == 2 && strcmp(k, kind) == 0 &&
            strcmp(n, name) == 0)
            return 1;
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    return 0;
}



static float f16_round(float v) { return hvq_f16_to_f32(hvq_f32_to_f16(v)); }

/* ---- reading models back through the safetensors source ------------------ */

typedef struct reader {
    hvq_ctx *ctx;
    hvq_registry *reg;
    const hvq_loaded_plugin *src;
} reader;

typedef struct model {
    reader *rd;
    void *state;
    size_t n;
} model;

static void reader_open(reader *rd)
{
    rd->ctx = th_ctx();
    rd->reg = th_registry(rd->ctx);
    rd->src = hvq_registry_find(rd->reg, HVQ_KIND_SOURCE, "safetensors");
    ck_assert_ptr_nonnull(rd->src);
}

static void reader_close(reader *rd)
{
    hvq_registry_free(rd->reg);
    hvq_ctx_free(rd->ctx);
}

static void model_open(reader *rd, model *m, const char *path)
{
    m->rd = rd;
    m->state = NULL;
    hvq_status st = rd->src->desc.source_open(rd->ctx, path, &m->state);
    ck_assert_msg(st == HVQ_OK, "cannot open %s: %s", path, hvq_ctx_error(rd->ctx));
    m->n = rd->src->desc.source_count(m->state);
}

static void model_close(model *m) { m->rd->src->desc.source_close(m->rd->ctx, m->state); }

static hvq_tensor_info model_info(model *m, size_t i)
{
    hvq_tensor_info info;
    ck_assert_int_eq(m->rd->src->desc.source_info(m->state, i, &info), HVQ_OK);
    return info;
}

/* Index of the tensor called name, or (size_t)-1. */
static size_t model_find(model *m, const char *name)
{
    for (size_t i = 0; i < m->n; i++)
        if (strcmp(model_info(m, i).name, name) == 0)
            return i;
    return (size_t)-1;
}

static hvq_tensor model_read(model *m, size_t i)
{
    hvq_tensor t;
    hvq_status st = m->rd->src->desc.source_read(m->rd->ctx, m->state, i, &t);
    ck_assert_msg(st == HVQ_OK, "read %zu: %s", i, hvq_ctx_error(m->rd->ctx));
    return t;
}

/* ---- reference quantizers ------------------------------------------------ */

/* Whether int4-rtn.yaml compresses a tensor: include *.weight, exclude
 * *norm*, *embed_tokens*, lm_head.weight; float matrices only. */
static int rtn_selects(const hvq_tensor_info *t)
{
    size_t n = strlen(t->name);
    return n > 7 && strcmp(t->name + n - 7, ".weight") == 0 && !strstr(t->name, "norm") &&
           !strstr(t->name, "embed_tokens") && strcmp(t->name, "lm_head.weight") != 0 &&
           t->ndim >= 2 && t->dtype == HVQ_DTYPE_F32;
}

/* Symmetric INT4 round-to-nearest as the paper describes it: per group of g
 * columns (0: the whole row), scale = fp16(max|w| / 7),
 * q = clamp(round(w / scale), -7, 7), w_hat = q * scale. */
static void ref_rtn(const float *w, uint64_t rows, uint64_t cols, uint64_t g, float *out)
{
    uint64_t gs = g == 0 || g >= cols ? cols : g;
    for (uint64_t r = 0; r < rows; r++)
        for (uint64_t c0 = 0; c0 < cols; c0 += gs) {
            uint64_t c1 = c0 + gs < cols ? c0 + gs : cols;
            const float *x = w + r * cols;
            float amax = 0.0f;
            for (uint64_t c = c0; c < c1; c++)
                if (fabsf(x[c]) > amax)
                    amax = fabsf(x[c]);
            float scale = f16_round(amax / 7.0f);
            for (uint64_t c = c0; c < c1; c++) {
                float q = 0.0f;
                if (scale > 0.0f) {
                    q = roundf(x[c] / scale);
                    q = q < -7.0f ? -7.0f : q > 7.0f ? 7.0f : q;
                }
                out[r * cols + c] = q * scale;
            }
        }
}

/* The example "sign" clusterer behind the core's row normalization:
 * s = fp16(max|w|), x = w / s, a = fp16(mean |x|), w_hat = s * (+-a). */
static void ref_sign(const float *w, uint64_t rows, uint64_t cols, float *out)
{
    for (uint64_t r = 0; r < rows; r++) {
        const float *row = w + r * cols;
        float m = 0.0f;
        for (uint64_t c = 0; c < cols; c++)
            if (fabsf(row[c]) > m)
                m = fabsf(row[c]);
        float s = f16_round(m);
        double sum = 0.0;
        for (uint64_t c = 0; c < cols; c++)
            sum += (double)fabsf(s > 0.0f ? row[c] / s : 0.0f);
        float a = f16_round((float)(sum / (double)cols));
        for (uint64_t c = 0; c < cols; c++) {
            float x = s > 0.0f ? row[c] / s : 0.0f;
            out[r * cols + c] = (x >= 0.0f ? a : -a) * s;
        }
    }
}

typedef enum { REF_RTN, REF_SIGN, REF_FP16 } ref_kind;

/* Checks an output of int4-rtn.yaml (or a variant) against its input:
 * every tensor present with the same name, shape and dtype; pass-through
 * tensors byte for byte; compressed ones equal to the reference. Returns
 * the number of compressed tensors. */
static size_t check_output(const char *input, const char *output, ref_kind kind, uint64_t g)
{
    reader rd;
    reader_open(&rd);
    model in, out;
    model_open(&rd, &in, input);
    model_open(&rd, &out, output);
    ck_assert_uint_eq(out.n, in.n);
    size_t compressed = 0;
    for (size_t i = 0; i < in.n; i++) {
        hvq_tensor_info ti = model_info(&in, i);
        size_t j = model_find(&out, ti.name);
        ck_assert_msg(j != (size_t)-1, "tensor '%s' missing from %s", ti.name, output);
        hvq_tensor_info to = model_info(&out, j);
        ck_assert_int_eq(to.dtype, ti.dtype);
        ck_assert_str_eq(to.dtype_name, ti.dtype_name);
        ck_assert_int_eq(to.ndim, ti.ndim);
        for (int d = 0; d < ti.ndim; d++)
            ck_assert_int_eq(to.shape[d], ti.shape[d]);
        ck_assert_uint_eq(to.nbytes, ti.nbytes);
        hvq_tensor a = model_read(&in, i), b = model_read(&out, j);
        if (!rtn_selects(&ti)) {
            ck_assert_msg(memcmp(a.data, b.data, (size_t)ti.nbytes) == 0,
                          "pass-through tensor '%s' changed", ti.name);
            continue;
        }
        compressed++;
        uint64_t rows = (uint64_t)ti.shape[0], n = hvq_numel(&ti), cols = n / rows;
        float *w = malloc((size_t)n * sizeof *w), *want = malloc((size_t)n * sizeof *want),
              *got = malloc((size_t)n * sizeof *got);
        ck_assert(w && want && got);
        memcpy(w, a.data, (size_t)n * sizeof *w);
        memcpy(got, b.data, (size_t)n * sizeof *got);
        switch (kind) {
        case REF_RTN: ref_rtn(w, rows, cols, g, want); break;
        case REF_SIGN: ref_sign(w, rows, cols, want); break;
        case REF_FP16:
            for (uint64_t k = 0; k < n; k++)
                want[k] = f16_round(w[k]);
            break;
        }
        for (uint64_t k = 0; k < n; k++)
            if (got[k] != want[k])
                ck_abort_msg("tensor '%s' [%llu, %llu]: %.9g, want %.9g (w %.9g)", ti.name,
                             (unsigned long long)(k / cols), (unsigned long long)(k % cols),
                             (double)got[k], (double)want[k], (double)w[k]);
        free(w);
        free(want);
        free(got);
    }
    model_close(&in);
    model_close(&out);
    reader_close(&rd);
    return compressed;
}

/* Writes a small safetensors file by hand: F32 tensors a.weight [4, 8]
 * (with `bad` at [2, 5]) and b.weight [2, 8]. */
static void write_small_model(const char *path, float bad)
{
    float a[32], b[16];
    for (int i = 0; i < 32; i++)
        a[i] = (float)((i * 7) % 11 - 5) * 0.125f;
    for (int i = 0; i < 16; i++)
        b[i] = (float)(i - 8) * 0.25f;
    a[2 * 8 + 5] = bad;
    char header[256];
    int len = snprintf(header, sizeof header,
                       "{\"a.weight\":{\"dtype\":\"F32\",\"shape\":[4,8],\"data_offsets\":[0,128]},"
                       "\"b.weight\":{\"dtype\":\"F32\",\"shape\":[2,8],\"data_offsets\":[128,192]}}");
    while (len % 8)
        header[len++] = ' ';
    unsigned char *buf = malloc(8 + (size_t)len + 192);
    ck_assert_ptr_nonnull(buf);
    uint64_t hl = (uint64_t)len;
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)(hl >> (8 * i));
    memcpy(buf + 8, header, (size_t)len);
    memcpy(buf + 8 + len, a, sizeof a); /* little-endian host */
    memcpy(buf + 8 + len + sizeof a, b, sizeof b);
    th_write_file(path, buf, 8 + (size_t)len + 192);
    free(buf);
}

/* A small pipeline (every .weight compressed with rtn), written into dir. */
static const char *write_small_pipeline(const char *dir)
{
    static char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/small.yaml", dir);
    const char *yaml = "name: small\n"
                       "select:\n"
                       "  include: [\"*.weight\"]\n"
                       "stages:\n"
                       "  clusterer: rtn\n"
                       "  writer: dequant\n";
    th_write_file(path, yaml, strlen(yaml));
    return path;
}

/* ---- commands and help --------------------------------------------------- */

START_TEST(help_and_version)
{
    static const char *const helps[][2] = {
        {"--help", NULL},       {"-h", NULL},
        {"run", "--help"},      {"list-plugins", "--help"},
        {"describe", "--help"}, {"run", "-h"},
    };
    for (size_t i = 0; i < sizeof helps / sizeof helps[0]; i++) {
        char *out, *err;
        int rc = th_hvq(&out, &err, helps[i][0], helps[i][1], (const char *)NULL);
        ck_assert_msg(rc == 0, "%s %s: exit %d", helps[i][0], helps[i][1] ? helps[i][1] : "", rc);
        th_assert_contains(out, "Usage: hvqconv");
        ck_assert_str_eq(err, "");
        free(out);
        free(err);
    }
    char *out, *err;
    ck_assert_int_eq(th_hvq(&out, &err, "run", "--help", (const char *)NULL), 0);
    th_assert_contains(out, "--set");
    th_assert_contains(out, "--force");
    free(out);
    free(err);
    ck_assert_int_eq(th_hvq(&out, &err, "--version", (const char *)NULL), 0);
    th_assert_contains(out, "hvqconv " PACKAGE_VERSION);
    th_assert_contains(out, "plugin ABI 1");
    free(out);
    free(err);
}
END_TEST

START_TEST(bad_usage)
{
    char *out, *err;
    ck_assert_int_eq(th_hvq(&out, &err, "frobnicate", (const char *)NULL), 2);
    th_assert_contains(err, "unknown command 'frobnicate'");
    ck_assert_str_eq(out, "");
    free(out);
    free(err);
    ck_assert_int_eq(th_hvq(&out, &err, (const char *)NULL), 2); /* no command */
    th_assert_contains(err, "Usage: hvqconv");
    free(out);
    free(err);
    ck_assert_int_eq(th_hvq(&out, &err, "--frobnicate", "list-plugins", (const char *)NULL), 2);
    free(out);
    free(err);
    ck_assert_int_eq(th_hvq(&out, &err, "run", (const char *)NULL), 2);
    th_assert_contains(err, "run needs a pipeline file");
    free(out);
    free(err);
    ck_assert_int_eq(th_hvq(&out, &err, "run", "a.yaml", "b.yaml", (const char *)NULL), 2);
    th_assert_contains(err, "unexpected argument 'b.yaml'");
    free(out);
    free(err);
    /* --threads: the same check and message for every command that takes it */
    static const char *const cmds[] = {"run", "compare", "decode", "verify", "eval"};
    static const char *const bad_threads[] = {"0", "", "x", "2x", "1025", "99999999999999999999"};
    for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++)
        for (size_t j = 0; j < sizeof bad_threads / sizeof *bad_threads; j++) {
            ck_assert_int_eq(th_hvq(&out, &err, cmds[i], "--threads", bad_threads[j], "-o",
                                 "/nonexistent/out", "x.yaml", (const char *)NULL),
                             2);
            char want[64];
            snprintf(want, sizeof want, "--threads %s: expected a number from 1 to 1024",
                     bad_threads[j]);
            th_assert_contains(err, want);
            free(out);
            free(err);
        }
    ck_assert_int_eq(th_hvq(&out, &err, "describe", (const char *)NULL), 2);
    free(out);
    free(err);
    ck_assert_int_eq(th_hvq(&out, &err, "list-plugins", "extra", (const char *)NULL), 2);
    free(out);
    free(err);
    /* a pipeline that does not exist */
    ck_assert_int_eq(th_hvq(&out, &err, "run", "/nonexistent/p.yaml", (const char *)NULL), 2);
    th_assert_contains(err, "/nonexistent/p.yaml");
    free(out);
    free(err);
}
END_TEST

START_TEST(list_plugins)
{
    char *out, *err;
    ck_assert_int_eq(th_hvq(&out, &err, "list-plugins", (const char *)NULL), 0);
    ck_assert_str_eq(err, "");
    ck_assert_msg(lists(out, "source,sink", "safetensors"), "%s", out);
    ck_assert_msg(lists(out, "hessian", "uniform"), "%s", out);
    ck_assert_msg(lists(out, "importance", "magnitude"), "%s", out);
    ck_assert_msg(lists(out, "clusterer", "rtn"), "%s", out);
    ck_assert_msg(lists(out, "residual", "none"), "%s", out);
    ck_assert_msg(lists(out, "writer", "dequant"), "%s", out);
    /* each row names the file the plugin came from */
    th_assert_contains(line_with(out, " rtn "), "/plugins/.libs/clusterer_rtn.so");
    th_assert_contains(line_with(out, " safetensors "), "/formats/.libs/safetensors.so");
    ck_assert_msg(!lists(out, "clusterer", "fp16"), "test plugins leak into the default list");
    free(out);
    free(err);
}
END_TEST

START_TEST(describe)
{
    char *out, *err;
    ck_assert_int_eq(th_hvq(&out, &err, "describe", "rtn", (const char *)NULL), 0);
    th_assert_contains(out, "rtn (clusterer)");
    const char *gs = line_with(out, "group_size");
    th_assert_contains(gs, " int ");
    th_assert_contains(gs, "default: 0");
    th_assert_contains(gs, "range: 0..1048576");
    const char *mode = line_with(out, "  mode ");
    th_assert_contains(mode, "choice");
    th_assert_contains(mode, "default: symmetric");
    th_assert_contains(mode, "symmetric|asymmetric");
    free(out);
    free(err);
    ck_assert_int_eq(th_hvq(&out, &err, "describe", "safetensors", (const char *)NULL), 0);
    th_assert_contains(out, "safetensors (source,sink)");
    th_assert_contains(out, "extensions: .safetensors");
    free(out);
    free(err);

    /* unknown names: exit 2, with the nearest name when there is one */
    ck_assert_int_eq(th_hvq(&out, &err, "describe", "nosuch", (const char *)NULL), 2);
    th_assert_contains(err, "no plugin named 'nosuch'");
    th_assert_contains(err, "hvqconv list-plugins");
    ck_assert_str_eq(out, "");
    free(out);
    free(err);
    ck_assert_int_eq(th_hvq(&out, &err, "describe", "rnt", (const char *)NULL), 2);
    th_assert_contains(err, "no plugin named 'rnt'; did you mean 'rtn'?");
    free(out);
    free(err);
    ck_assert_int_eq(th_hvq(&out, &err, "describe", "dequnt", (const char *)NULL), 2);
    th_assert_contains(err, "did you mean 'dequant'?");
    free(out);
    free(err);
}
END_TEST

/* ---- broken plugins ------------------------------------------------------ */

/* The refusals --plugin-dir tests/broken/.libs must print: one line each,
 * naming the file and the reason. */
static void check_broken_refusals(const char *err)
{
    static const struct {
        const char *file, *reason;
    } bad[] = {
        {"wrong_abi.so", "plugin refused: built for plugin ABI 2, this hvqconv uses ABI 1"},
        {"no_entry.so", "plugin refused: no entry point hvq_plugin_entry()"},
        {"null_entry.so", "plugin refused: hvq_plugin_entry() returned NULL"},
        {"short_desc.so", "plugin refused: descriptor is "},
        {"bad_name.so", "plugin refused: invalid plugin name 'Bad Name'"},
        {"no_decode.so", "plugin refused: clusterer plugin lacks the mandatory callback "
                         "cluster_decode"},
        {"two_kinds.so", "plugin refused: plugin 'two-kinds' declares several kinds"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char prefix[PATH_MAX + 64];
        snprintf(prefix, sizeof prefix, "hvqconv: warning: %s: ", th_join(broken_dir(), bad[i].file));
        ck_assert_msg(count_lines_with(err, prefix) == 1, "want one line starting %s in:\n%s",
                      prefix, err);
        th_assert_contains(line_with(err, prefix), bad[i].reason);
    }
    /* The second "rtn": --plugin-dir directories load before the built-in
     * plugins, so the broken directory's "rtn" is the one kept and the
     * built-in one is the duplicate; either way the line names both files. */
    const char *dup = line_with(err, "duplicate clusterer plugin name 'rtn'");
    ck_assert_msg(dup != NULL, "no duplicate line in:\n%s", err);
    th_assert_contains(dup, th_join(broken_dir(), "dup_rtn.so"));
    th_assert_contains(dup, "clusterer_rtn.so");
    /* one line per broken plugin, nothing else */
    ck_assert_uint_eq(count_lines_with(err, "plugin refused: "), 8);
    ck_assert_uint_eq(count_lines_with(err, ""), 8);
}

START_TEST(broken_list)
{
    char *out, *err;
    ck_assert_int_eq(
        th_hvq(&out, &err, "--plugin-dir", broken_dir(), "list-plugins", (const char *)NULL), 0);
    check_broken_refusals(err);
    ck_assert_msg(lists(out, "clusterer", "fp16"), "%s", out);
    th_assert_contains(line_with(out, " fp16 "), th_join(broken_dir(), "fp16.so"));
    ck_assert_msg(lists(out, "source,sink", "safetensors"), "%s", out);
    ck_assert_msg(lists(out, "hessian", "uniform"), "%s", out);
    ck_assert_msg(lists(out, "importance", "magnitude"), "%s", out);
    ck_assert_msg(lists(out, "clusterer", "rtn"), "%s", out);
    ck_assert_msg(lists(out, "residual", "none"), "%s", out);
    ck_assert_msg(lists(out, "writer", "dequant"), "%s", out);
    ck_assert_uint_eq(count_lines_with(out, " rtn "), 1);
    free(out);
    free(err);

    /* the option also works after the command, and for describe */
    ck_assert_int_eq(th_hvq(&out, &err, "describe", "fp16", "--plugin-dir", broken_dir(),
                         (const char *)NULL), 0);
    th_assert_contains(out, "fp16 (clusterer)");
    th_assert_contains(out, "parameters: none");
    check_broken_refusals(err);
    free(out);
    free(err);
}
END_TEST

START_TEST(plugin_path_env)
{
    /* $HVQ_PLUGIN_PATH: colon-separated, missing entries ignored. */
    char path[2 * PATH_MAX];
    snprintf(path, sizeof path, "/nonexistent/dir:%s", broken_dir());
    ck_assert_int_eq(setenv("HVQ_PLUGIN_PATH", path, 1), 0);
    char *out, *err;
    int rc = th_hvq(&out, &err, "list-plugins", (const char *)NULL);
    ck_assert_int_eq(rc, 0);
    check_broken_refusals(err);
    ck_assert_msg(lists(out, "clusterer", "fp16"), "%s", out);
    free(out);
    free(err);
    /* the build tree's own plugin directory named again: the same files,
     * not duplicates */
    snprintf(path, sizeof path, "%s/plugins/.libs:%s/formats/.libs", th_builddir(),
             th_builddir());
    ck_assert_int_eq(setenv("HVQ_PLUGIN_PATH", path, 1), 0);
    rc = th_hvq(&out, &err, "--plugin-dir", th_join(th_builddir(), "plugins/.libs"), "list-plugins",
             (const char *)NULL);
    unsetenv("HVQ_PLUGIN_PATH");
    ck_assert_int_eq(rc, 0);
    ck_assert_str_eq(err, "");
    ck_assert_uint_eq(count_lines_with(out, " rtn "), 1);
    free(out);
    free(err);
}
END_TEST

START_TEST(broken_run)
{
    /* A run still works with the broken plugins around (as --plugin-dir
     * directories load first, the stand-in "rtn" of dup_rtn.so is the one
     * this run uses); the good test plugin from the same directory runs end
     * to end, checked value by value. */
    char *dir = th_tmpdir("cli-broken");
    char o1[PATH_MAX], o2[PATH_MAX]; /* kept across many th_join() calls */
    snprintf(o1, sizeof o1, "%s", th_join(dir, "a.safetensors"));
    snprintf(o2, sizeof o2, "%s", th_join(dir, "b.safetensors"));
    char *out, *err;
    int rc = th_hvq(&out, &err, "--plugin-dir", broken_dir(), "run", pipeline_rtn(), "-q", "-i",
                 model_dir(), "-o", o1, "--set", "report=", (const char *)NULL);
    ck_assert_msg(rc == 0, "exit %d:\n%s", rc, err);
    check_broken_refusals(err);
    ck_assert(th_exists(o1));
    free(out);
    free(err);
    rc = th_hvq(&out, &err, "--plugin-dir", broken_dir(), "run", pipeline_rtn(), "-q", "-i",
             model_dir(), "-o", o2, "--set", "stages.clusterer.plugin=fp16", "--set", "report=",
             (const char *)NULL);
    ck_assert_msg(rc == 0, "exit %d:\n%s", rc, err);
    check_broken_refusals(err);
    free(out);
    free(err);
    ck_assert_uint_eq(check_output(th_join(model_dir(), "model.safetensors"), o2, REF_FP16, 0), 35);
    th_rmtree(dir);
    free(dir);
}
END_TEST

/* ---- the run, end to end ------------------------------------------------- */

START_TEST(run_rtn_exact)
{
    char *dir = th_tmpdir("cli-rtn");
    const char *o = th_join(dir, "out.safetensors"), *r = th_join(dir, "report.json");
    char *out, *err;
    int rc = th_hvq(&out, &err, "run", pipeline_rtn(), "--input", model_dir(), "--output", o,
                 "--report", r, "-q", (const char *)NULL);
    ck_assert_msg(rc == 0, "exit %d:\n%s", rc, err);
    ck_assert_str_eq(err, "");
    th_assert_contains(out, "int4-rtn");
    free(out);
    free(err);
    th_assert_dir_holds(dir, "out.safetensors", "report.json", (const char *)NULL);
    /* 5 layers x 7 projections */
    ck_assert_uint_eq(check_output(th_join(model_dir(), "model.safetensors"), o, REF_RTN, 0), 35);
    char *rep = th_read_file(r, NULL);
    ck_assert_ptr_nonnull(rep);
    th_assert_contains(rep, "\"bpp_paper\"");
    th_assert_contains(rep, "\"model.layers.4.mlp.down_proj.weight\"");
    free(rep);
    th_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(run_set_group_size)
{
    char *dir = th_tmpdir("cli-group");
    const char *o = th_join(dir, "out.safetensors");
    char *out, *err;
    int rc = th_hvq(&out, &err, "run", pipeline_rtn(), "-i", model_dir(), "-o", o, "-q", "--set",
                 "stages.clusterer.group_size=32", "--set", "report=", (const char *)NULL);
    ck_assert_msg(rc == 0, "exit %d:\n%s", rc, err);
    free(out);
    free(err);
    ck_assert_uint_eq(check_output(th_join(model_dir(), "model.safetensors"), o, REF_RTN, 32), 35);
    th_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(run_deterministic)
{
    char *dir = th_tmpdir("cli-det");
    const char *a = th_join(dir, "a.safetensors"), *b = th_join(dir, "b.safetensors"),
               *c = th_join(dir, "c.safetensors");
    ck_assert_int_eq(th_hvq(NULL, NULL, "run", pipeline_rtn(), "-q", "-i", model_dir(), "-o", a,
                         "--set", "report=", (const char *)NULL), 0);
    ck_assert_int_eq(th_hvq(NULL, NULL, "run", pipeline_rtn(), "-q", "-i", model_dir(), "-o", b,
                         "--threads", "1", "--set", "report=", (const char *)NULL), 0);
    ck_assert_int_eq(th_hvq(NULL, NULL, "run", pipeline_rtn(), "-q", "-i", model_dir(), "-o", c,
                         "--threads", "2", "--set", "report=", (const char *)NULL), 0);
    ck_assert_msg(th_same_bytes(a, b), "two runs differ");
    ck_assert_msg(th_same_bytes(a, c), "1 and 2 threads differ");
    th_rmtree(dir);
    free(dir);
}
END_TEST

/* ---- validation before any work ------------------------------------------ */

START_TEST(typo_in_file)
{
    char *dir = th_tmpdir("cli-typo");
    const char *o = th_join(dir, "out.safetensors");
    const char *yaml = th_src("tests/data/cli/typo-param.yaml");
    char *out, *err;
    ck_assert_int_eq(th_hvq(&out, &err, "run", yaml, "-i", model_dir(), "-o", o, (const char *)NULL),
                     2);
    char where[PATH_MAX + 32];
    snprintf(where, sizeof where, "%s:7:29: ", yaml);
    th_assert_contains(err, where);
    th_assert_contains(err, "unknown parameter 'group_sise'; did you mean 'group_size'?");
    ck_assert_uint_eq(count_lines_with(err, ""), 1);
    ck_assert_str_eq(out, "");
    free(out);
    free(err);
    th_assert_dir_holds(dir, (const char *)NULL);
    th_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(typo_in_set)
{
    char *dir = th_tmpdir("cli-settypo");
    const char *o = th_join(dir, "out.safetensors");
    char *out, *err;
    ck_assert_int_eq(th_hvq(&out, &err, "run", pipeline_rtn(), "-i", model_dir(), "-o", o, "--set",
                         "stages.clusterer.group_sise=32", (const char *)NULL),
                     2);
    th_assert_contains(err, "group_sise");
    th_assert_contains(err, "did you mean 'group_size'?");
    ck_assert_str_eq(out, "");
    free(out);
    free(err);
    /* an out-of-range value is refused the same way */
    ck_assert_int_eq(th_hvq(&out, &err, "run", pipeline_rtn(), "-i", model_dir(), "-o", o, "--set",
                         "stages.clusterer.group_size=-1", (const char *)NULL),
                     2);
    th_assert_contains(err, "group_size");
    free(out);
    free(err);
    ck_assert_int_eq(th_hvq(&out, &err, "run", pipeline_rtn(), "-i", model_dir(), "-o", o, "--set",
                         "stages.clusterer.plugin=rnt", (const char *)NULL),
                     2);
    th_assert_contains(err, "did you mean 'rtn'?");
    free(out);
    free(err);
    th_assert_dir_holds(dir, (const char *)NULL);
    th_rmtree(dir);
    free(dir);
}
END_TEST

/* ---- failures leave nothing behind --------------------------------------- */

START_TEST(fail_output_dir_missing)
{
    char *dir = th_tmpdir("cli-nodir");
    char *out, *err;
    /* a directory that does not exist */
    const char *o = th_join(dir, "nodir/out.safetensors");
    int rc = th_hvq(&out, &err, "run", pipeline_rtn(), "-q", "-i", model_dir(), "-o", o, "-r",
                 th_join(dir, "r.json"), (const char *)NULL);
    ck_assert_int_eq(rc, 2);
    th_assert_contains(err, o);
    ck_assert_str_eq(out, "");
    free(out);
    free(err);
    th_assert_dir_holds(dir, (const char *)NULL);

    /* a "directory" that is a regular file */
    th_write_file(th_join(dir, "file"), "x", 1);
    o = th_join(dir, "file/out.safetensors");
    rc = th_hvq(&out, &err, "run", pipeline_rtn(), "-q", "-i", model_dir(), "-o", o, "-r",
             th_join(dir, "r.json"), (const char *)NULL);
    ck_assert_int_eq(rc, 2);
    th_assert_contains(err, o);
    free(out);
    free(err);
    th_assert_dir_holds(dir, "file", (const char *)NULL);

    /* the report's directory is missing: the model output, already written
     * to its temporary file, must go too (all or nothing) */
    o = th_join(dir, "out.safetensors");
    const char *r = th_join(dir, "nodir/report.json");
    rc = th_hvq(&out, &err, "run", pipeline_rtn(), "-q", "-i", model_dir(), "-o", o, "-r", r,
             (const char *)NULL);
    ck_assert_int_eq(rc, 2);
    th_assert_contains(err, r);
    free(out);
    free(err);
    th_assert_dir_holds(dir, "file", (const char *)NULL);
    th_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(fail_output_dir_readonly)
{
    /* Permissions do not stop root; the test means nothing then. */
    if (geteuid() == 0)
        return;
    char *dir = th_tmpdir("cli-ro");
    const char *ro = th_join(dir, "ro");
    ck_assert_int_eq(mkdir(ro, 0555), 0);
    char *out, *err;
    const char *o = th_join(ro, "out.safetensors");
    int rc = th_hvq(&out, &err, "run", pipeline_rtn(), "-q", "-i", model_dir(), "-o", o, "-r",
                 th_join(ro, "r.json"), (const char *)NULL);
    ck_assert_int_ne(rc, 0);
    th_assert_contains(err, o);
    free(out);
    free(err);
    th_assert_dir_holds(ro, (const char *)NULL);
    chmod(ro, 0755);
    th_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(fail_corrupt_input)
{
    char *dir = th_tmpdir("cli-corrupt");
    const char *in = th_join(dir, "model");
    ck_assert_int_eq(mkdir(in, 0755), 0);
    const char *weights = th_join(in, "model.safetensors");
    th_copy_file(th_join(model_dir(), "config.json"), th_join(in, "config.json"), SIZE_MAX);
    th_copy_file(th_join(model_dir(), "model.safetensors"), weights, 600000); /* truncated */
    const char *outdir = th_join(dir, "out");
    ck_assert_int_eq(mkdir(outdir, 0755), 0);
    const char *o = th_join(outdir, "out.safetensors");
    char *out, *err;
    const char *r = th_join(outdir, "r.json");
    int rc = th_hvq(&out, &err, "run", pipeline_rtn(), "-q", "-i", in, "-o", o, "-r", r,
                 (const char *)NULL);
    ck_assert_int_eq(rc, 2);
    th_assert_contains(err, "model.safetensors");
    ck_assert_str_eq(out, "");
    free(out);
    free(err);
    th_assert_dir_holds(outdir, (const char *)NULL);

    /* the same truncated file given directly */
    rc = th_hvq(&out, &err, "run", pipeline_rtn(), "-q", "-i", weights, "-o", o, "-r", r,
             (const char *)NULL);
    ck_assert_int_eq(rc, 2);
    th_assert_contains(err, weights);
    free(out);
    free(err);
    th_assert_dir_holds(outdir, (const char *)NULL);

    /* not a model at all */
    rc = th_hvq(&out, &err, "run", pipeline_rtn(), "-q", "-i", th_join(in, "config.json"), "-o", o,
             "-r", r, (const char *)NULL);
    ck_assert_int_eq(rc, 2);
    th_assert_contains(err, "config.json");
    free(out);
    free(err);
    th_assert_dir_holds(outdir, (const char *)NULL);
    th_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(fail_existing_output)
{
    char *dir = th_tmpdir("cli-exists");
    const char *o = th_join(dir, "out.safetensors");
    th_write_file(o, "original", 8);
    char *out, *err;
    int rc = th_hvq(&out, &err, "run", pipeline_rtn(), "-q", "-i", model_dir(), "-o", o, "-r",
                 th_join(dir, "r0.json"), (const char *)NULL);
    ck_assert_int_eq(rc, 2);
    th_assert_contains(err, o);
    th_assert_contains(err, "--force");
    free(out);
    free(err);
    size_t n;
    char *data = th_read_file(o, &n);
    ck_assert(n == 8 && memcmp(data, "original", 8) == 0);
    free(data);
    th_assert_dir_holds(dir, "out.safetensors", (const char *)NULL);

    /* the report too */
    const char *o2 = th_join(dir, "new.safetensors"), *r = th_join(dir, "r.json");
    th_write_file(r, "{}", 2);
    rc = th_hvq(&out, &err, "run", pipeline_rtn(), "-q", "-i", model_dir(), "-o", o2, "-r", r,
             (const char *)NULL);
    ck_assert_int_eq(rc, 2);
    th_assert_contains(err, r);
    free(out);
    free(err);
    th_assert_dir_holds(dir, "out.safetensors", "r.json", (const char *)NULL);

    /* --force replaces both */
    rc = th_hvq(&out, &err, "run", pipeline_rtn(), "-q", "--force", "-i", model_dir(), "-o", o, "-r",
             r, (const char *)NULL);
    ck_assert_msg(rc == 0, "exit %d:\n%s", rc, err);
    free(out);
    free(err);
    th_assert_dir_holds(dir, "out.safetensors", "r.json", (const char *)NULL);
    ck_assert_uint_eq(check_output(th_join(model_dir(), "model.safetensors"), o, REF_RTN, 0), 35);
    char *rep = th_read_file(r, NULL);
    th_assert_contains(rep, "\"bpp_paper\"");
    free(rep);
    th_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(fail_output_is_input)
{
    char *dir = th_tmpdir("cli-same");
    const char *in = th_join(dir, "m.safetensors");
    th_copy_file(th_join(model_dir(), "model.safetensors"), in, SIZE_MAX);
    char *out, *err;
    for (int force = 0; force < 2; force++) {
        int rc = th_hvq(&out, &err, "run", pipeline_rtn(), "-q", "-i", in, "-o", in, "-r",
                     th_join(dir, "r.json"), force ? "--force" : "-q", (const char *)NULL);
        ck_assert_int_eq(rc, 2);
        th_assert_contains(err, "may not be the input");
        free(out);
        free(err);
    }
    /* spelt differently */
    char other[PATH_MAX];
    snprintf(other, sizeof other, "%s/./m.safetensors", dir);
    int rc = th_hvq(&out, &err, "run", pipeline_rtn(), "-q", "--force", "-i", in, "-o", other,
                 "-r", th_join(dir, "r.json"), (const char *)NULL);
    ck_assert_int_eq(rc, 2);
    th_assert_contains(err, "may not be the input");
    free(out);
    free(err);
    /* the report may not overwrite the input either */
    rc = th_hvq(&out, &err, "run", pipeline_rtn(), "-q", "--force", "-i", in, "-o",
             th_join(dir, "o.safetensors"), "-r", in, (const char *)NULL);
    ck_assert_int_eq(rc, 2);
    free(out);
    free(err);
    ck_assert(th_same_bytes(in, th_join(model_dir(), "model.safetensors")));
    th_assert_dir_holds(dir, "m.safetensors", (const char *)NULL);

    /* a model given as a directory: its files may not be replaced */
    const char *mdir = th_join(dir, "model");
    ck_assert_int_eq(mkdir(mdir, 0755), 0);
    const char *weights = th_join(mdir, "model.safetensors");
    th_copy_file(th_join(model_dir(), "model.safetensors"), weights, SIZE_MAX);
    rc = th_hvq(&out, &err, "run", pipeline_rtn(), "-q", "--force", "-i", mdir, "-o", weights, "-r",
             th_join(dir, "r.json"), (const char *)NULL);
    ck_assert_int_eq(rc, 2);
    th_assert_contains(err, "may not replace a file of the input directory");
    free(out);
    free(err);
    rc = th_hvq(&out, &err, "run", pipeline_rtn(), "-q", "--force", "-i", mdir, "-o",
             th_join(dir, "o.safetensors"), "-r", weights, (const char *)NULL);
    ck_assert_int_eq(rc, 2);
    free(out);
    free(err);
    ck_assert(th_same_bytes(weights, th_join(model_dir(), "model.safetensors")));
    th_assert_dir_holds(mdir, "model.safetensors", (const char *)NULL);
    th_assert_dir_holds(dir, "m.safetensors", "model", (const char *)NULL);

    /* the report may not be the output, however spelt */
    char again[PATH_MAX];
    snprintf(again, sizeof again, "%s/./o.safetensors", dir);
    rc = th_hvq(&out, &err, "run", pipeline_rtn(), "-q", "-i", model_dir(), "-o",
             th_join(dir, "o.safetensors"), "-r", again, (const char *)NULL);
    ck_assert_int_eq(rc, 2);
    th_assert_contains(err, "the report may not be the output");
    free(out);
    free(err);
    th_assert_dir_holds(dir, "m.safetensors", "model", (const char *)NULL);
    th_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(fail_nan_weight)
{
    char *dir = th_tmpdir("cli-nan");
    const char *pipe = write_small_pipeline(dir);
    const char *in = th_join(dir, "small.safetensors"), *o = th_join(dir, "out.safetensors");
    char *out, *err;

    /* the hand-written model itself is fine */
    write_small_model(in, 0.5f);
    int rc = th_hvq(&out, &err, "run", pipe, "-q", "-i", in, "-o", o, (const char *)NULL);
    ck_assert_msg(rc == 0, "exit %d:\n%s", rc, err);
    free(out);
    free(err);
    ck_assert(unlink(o) == 0);

    static const float bad[] = {NAN, INFINITY, -INFINITY};
    static const char *const what[] = {"NaN", "infinite", "infinite"};
    for (int i = 0; i < 3; i++) {
        write_small_model(in, bad[i]);
        rc = th_hvq(&out, &err, "run", pipe, "-q", "-i", in, "-o", o, (const char *)NULL);
        ck_assert_int_eq(rc, 2);
        th_assert_contains(err, in);
        th_assert_contains(err, "tensor 'a.weight'");
        th_assert_contains(err, what[i]);
        th_assert_contains(err, "[2, 5]");
        ck_assert_str_eq(out, "");
        free(out);
        free(err);
        th_assert_dir_holds(dir, "small.yaml", "small.safetensors", (const char *)NULL);
    }
    th_rmtree(dir);
    free(dir);
}
END_TEST

/* ---- the example plugin -------------------------------------------------- */

/* Every input a user names that is not a regular file (here a FIFO, which
 * an fopen waits on forever for a writer) is refused at once with exit 2
 * and its name: eval's tokens, text, tokenizer and config, the imatrix and
 * calibrate's tokens; a FIFO named *.so in a plugin directory is refused
 * with a warning and the run goes on. (Before: each of these hung.) */
START_TEST(fail_fifo_inputs)
{
    char *dir = th_tmpdir("fifo");
    char fifo[4096], so[4200], out[4200], hpath[4200], tpath[4200];
    snprintf(fifo, sizeof fifo, "%s/p", dir);
    snprintf(so, sizeof so, "%s/x.so", dir);
    snprintf(out, sizeof out, "%s/o.safetensors", dir);
    snprintf(hpath, sizeof hpath, "stages.hessian.path=%s", fifo);
    snprintf(tpath, sizeof tpath, "stages.hessian.tokens=%s", fifo);
    ck_assert_int_eq(mkfifo(fifo, 0600), 0);
    ck_assert_int_eq(mkfifo(so, 0600), 0);
    const char *demo = th_src("models/stories260K");
    const char *tok = th_src("tests/data/eval/tok512.bin");
    const char *pipe = th_src("pipelines/int4-rtn.yaml");
    const char *cases[][12] = {
        {"eval", demo, "--tokens", fifo, NULL},
        {"eval", demo, "--text", fifo, "--tokenizer", tok, NULL},
        {"eval", demo, "--text", th_src("README.md"), "--tokenizer", fifo, NULL},
        {"eval", th_src("models/stories260K/model.safetensors"), "--config", fifo, "--tokens",
         th_src("models/stories260K/tinystories-calib.tok512.npy"), NULL},
        {"run", "-q", pipe, "--input", demo, "-o", out, "--set",
         "stages.hessian.plugin=imatrix", "--set", hpath, NULL},
        {"run", "-q", pipe, "--input", demo, "-o", out, "--set",
         "stages.hessian.plugin=calibrate", "--set", tpath, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *err = NULL;
        int rc = th_run(NULL, &err, cases[i]);
        ck_assert_msg(rc == 2, "case %zu: exit %d: %s", i, rc, err);
        th_assert_contains(err, fifo);
        th_assert_contains(err, "not a regular file");
        ck_assert(!th_exists(out));
        free(err);
    }
    char *err = NULL;
    char rep[4200];
    snprintf(rep, sizeof rep, "%s/o.json", dir);
    const char *plug[] = {"--plugin-dir", dir, "run", "-q", pipe, "--input", demo, "-o", out,
                          "-r", rep, NULL};
    int rc = th_run(NULL, &err, plug);
    ck_assert_msg(rc == 0, "exit %d: %s", rc, err);
    th_assert_contains(err, "x.so: plugin refused: not a regular file");
    free(err);
    th_rmtree(dir);
    free(dir);
}
END_TEST

/* Non-finite values are refused wherever they come from (exit 2, the file
 * named): a container whose stored component is NaN but whose checksum
 * matches (tests/data/nan/make_nan.py: rtn's min of one row) in verify,
 * verify --json (valid JSON) and decode, which writes nothing; a model with
 * one NaN weight in eval, which printed "PPL -nan" with exit 0. */
START_TEST(fail_nan_components)
{
    char *dir = th_tmpdir("cli-nancomp");
    const char *good = th_src("tests/data/nan/asym.hvq");
    const char *nanc = th_src("tests/data/nan/nan-min.hvq");
    const char *o = th_join(dir, "d.safetensors");
    char *out = NULL, *err = NULL;
    int rc = th_hvq(&out, &err, "verify", good, (const char *)NULL);
    ck_assert_msg(rc == 0, "exit %d: %s", rc, err);
    free(out);
    free(err);
    const char *want = "tensor 'a.weight': value 96 decodes to NaN (a stored component is "
                       "not finite)";
    rc = th_hvq(&out, &err, "verify", nanc, (const char *)NULL);
    ck_assert_int_eq(rc, 2);
    th_assert_contains(err, want);
    free(out);
    free(err);
    rc = th_hvq(&out, &err, "verify", "--json", nanc, (const char *)NULL);
    ck_assert_int_eq(rc, 2);
    th_assert_contains(out, "\"ok\": false");
    ck_assert_msg(!strstr(out, "nan\"") && !strstr(out, ": nan"), "not JSON: %s", out);
    free(out);
    free(err);
    rc = th_hvq(&out, &err, "decode", nanc, "-o", o, (const char *)NULL);
    ck_assert_int_eq(rc, 2);
    th_assert_contains(err, want);
    ck_assert(!th_exists(o));
    free(out);
    free(err);

    /* the demo model with one NaN weight */
    const char *mdir = th_join(dir, "m");
    ck_assert_int_eq(mkdir(mdir, 0755), 0);
    size_t n, cn;
    char *st = th_read_file(th_src("models/stories260K/model.safetensors"), &n);
    char *cfg = th_read_file(th_src("models/stories260K/config.json"), &cn);
    ck_assert(st && cfg && n > 8);
    uint64_t hl = 0;
    for (int b = 0; b < 8; b++)
        hl |= (uint64_t)(unsigned char)st[b] << (8 * b);
    const char *key = strstr(st + 8, "\"model.layers.0.self_attn.q_proj.weight\"");
    ck_assert_ptr_nonnull(key);
    unsigned long long begin = 0;
    ck_assert_int_eq(sscanf(strstr(key, "data_offsets") + 15, "%llu", &begin), 1);
    const float nanv = NAN;
    memcpy(st + 8 + hl + begin + 4 * 7, &nanv, 4);
    th_write_file(th_join(mdir, "model.safetensors"), st, n);
    th_write_file(th_join(mdir, "config.json"), cfg, cn);
    free(st);
    free(cfg);
    rc = th_hvq(&out, &err, "eval", mdir, "--tokens",
             th_src("models/stories260K/tinystories-calib.tok512.npy"), "--json",
             (const char *)NULL);
    ck_assert_msg(rc == 2, "exit %d: %s %s", rc, out, err);
    th_assert_contains(err, "tensor 'model.layers.0.self_attn.q_proj.weight': value 7 is not "
                            "finite");
    ck_assert_msg(!strstr(out, "nan"), "printed: %s", out);
    free(out);
    free(err);
    th_rmtree(dir);
    free(dir);
}
END_TEST

/* Output paths that cannot be written are bad input (exit 2) refused
 * before any work: an empty -o (it ended in "cannot rename into place",
 * exit 1), a directory even with --force (the same, after all the work),
 * and compare --keep "" (which wrote into /). */
START_TEST(fail_bad_output_paths)
{
    char *dir = th_tmpdir("cli-outpath");
    const char *c = th_src("tests/data/nan/asym.hvq");
    const char *sub = th_join(dir, "d.safetensors");
    ck_assert_int_eq(mkdir(sub, 0755), 0);
    char *out = NULL, *err = NULL;
    int rc = th_hvq(&out, &err, "decode", c, "-o", "", (const char *)NULL);
    ck_assert_msg(rc == 2, "exit %d: %s", rc, err);
    th_assert_contains(err, "the output path is empty");
    free(out);
    free(err);
    rc = th_hvq(&out, &err, "decode", c, "-o", sub, "--force", (const char *)NULL);
    ck_assert_msg(rc == 2, "exit %d: %s", rc, err);
    th_assert_contains(err, "d.safetensors: is a directory; the output must be a file name");
    free(out);
    free(err);
    rc = th_hvq(&out, &err, "run", "-q", th_src("pipelines/int4-rtn.yaml"), "--input",
             th_src("models/stories260K"), "-o", sub, "-r", th_join(dir, "r.json"), "--force",
             (const char *)NULL);
    ck_assert_msg(rc == 2, "exit %d: %s", rc, err);
    th_assert_contains(err, "is a directory");
    free(out);
    free(err);
    th_assert_dir_holds(dir, "d.safetensors", (const char *)NULL);
    rc = th_hvq(&out, &err, "compare", "-q", th_src("pipelines/int4-rtn.yaml"), "--keep", "",
             (const char *)NULL);
    ck_assert_msg(rc == 2, "exit %d: %s", rc, err);
    th_assert_contains(err, "--keep needs a directory, not an empty name");
    free(out);
    free(err);
    th_rmtree(dir);
    free(dir);
}
END_TEST

/* A selection that leaves nothing to compress and an override whose
 * pattern matches no tensor each get one warning (a typo there silently
 * changed nothing); the run still succeeds. */
START_TEST(warn_unmatched_patterns)
{
    char *dir = th_tmpdir("cli-unmatched");
    const char *yaml = th_join(dir, "ov.yaml");
    char text[8192];
    snprintf(text, sizeof text,
             "name: ov\ninput: %s\nstages:\n  clusterer: { plugin: rtn }\n"
             "  writer: { plugin: dequant }\noverrides:\n"
             "  - match: \"*q_prj*\"\n    clusterer: { group_size: 32 }\n"
             "  - match: \"*q_proj*\"\n    clusterer: { group_size: 32 }\n",
             th_src("models/stories260K"));
    th_write_file(yaml, text, strlen(text));
    char *out = NULL, *err = NULL;
    int rc = th_hvq(&out, &err, "run", "-q", yaml, "-o", th_join(dir, "o.safetensors"), "-r",
                 th_join(dir, "o.json"), (const char *)NULL);
    ck_assert_msg(rc == 0, "exit %d: %s", rc, err);
    ck_assert_uint_eq(count_lines_with(err, "matches no tensor"), 1);
    th_assert_contains(err, "ov.yaml:7: override '*q_prj*' matches no tensor of");
    free(out);
    free(err);
    rc = th_hvq(&out, &err, "run", "-q", yaml, "-o", th_join(dir, "p.safetensors"), "-r",
             th_join(dir, "p.json"), "--set", "select.include=nothing*", (const char *)NULL);
    ck_assert_msg(rc == 0, "exit %d: %s", rc, err);
    th_assert_contains(err, "the selection matches no tensor to compress");
    free(out);
    free(err);
    th_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(example_sign)
{
    char *dir = th_tmpdir("cli-example");
    /* The header where pkg-config's -I${includedir} would find it. */
    const char *inc = th_join(dir, "include"), *hdir = th_join(dir, "include/hvqconv");
    const char *plugins = th_join(dir, "plugins");
    ck_assert_int_eq(mkdir(inc, 0755), 0);
    ck_assert_int_eq(mkdir(hdir, 0755), 0);
    ck_assert_int_eq(mkdir(plugins, 0755), 0);
    th_copy_file(th_src("include/hvqconv/plugin.h"), th_join(hdir, "plugin.h"), SIZE_MAX);

    const char *cc = getenv("HVQ_CC");
    if (!cc || !*cc)
        cc = "cc";
    char cmd[4 * PATH_MAX + 256];
    const char *log = th_join(dir, "cc.log");
    snprintf(cmd, sizeof cmd,
             "%s -shared -fPIC -std=c99 -Wall -Wextra -Werror -I'%s' '%s' -o '%s' >'%s' 2>&1", cc,
             inc, th_src("examples/clusterer-sign/sign.c"), th_join(plugins, "sign.so"), log);
    int rc = system(cmd);
    if (rc != 0) {
        char *text = th_read_file(log, NULL);
        ck_abort_msg("compiling the example failed (%d):\n%s\n%s", rc, cmd, text ? text : "");
    }

    char *out, *err;
    ck_assert_int_eq(th_hvq(&out, &err, "--plugin-dir", plugins, "list-plugins", (const char *)NULL),
                     0);
    ck_assert_msg(lists(out, "clusterer", "sign"), "%s", out);
    th_assert_contains(line_with(out, " sign "), th_join(plugins, "sign.so"));
    ck_assert_str_eq(err, "");
    free(out);
    free(err);
    ck_assert_int_eq(th_hvq(&out, &err, "--plugin-dir", plugins, "describe", "sign",
                         (const char *)NULL), 0);
    th_assert_contains(out, "sign (clusterer) 1.0.0");
    th_assert_contains(out, "parameters: none");
    free(out);
    free(err);

    const char *o = th_join(dir, "sign.safetensors"), *r = th_join(dir, "sign.json");
    rc = th_hvq(&out, &err, "--plugin-dir", plugins, "run", pipeline_rtn(), "--set",
             "stages.clusterer.plugin=sign", "-q", "-i", model_dir(), "-o", o, "-r", r,
             (const char *)NULL);
    ck_assert_msg(rc == 0, "exit %d:\n%s", rc, err);
    th_assert_contains(out, "sign");
    free(out);
    free(err);
    ck_assert_uint_eq(check_output(th_join(model_dir(), "model.safetensors"), o, REF_SIGN, 0), 35);
    char *rep = th_read_file(r, NULL);
    ck_assert_ptr_nonnull(rep);
    th_assert_contains(rep, "\"sign\"");
    free(rep);
    th_rmtree(dir);
    free(dir);
}
END_TEST

static Suite *cli_suite(void)
{
    Suite *s = suite_create("cli");
    TCase *tc = tcase_create("commands");
    tcase_add_test(tc, help_and_version);
    tcase_add_test(tc, bad_usage);
    tcase_add_test(tc, list_plugins);
    tcase_add_test(tc, describe);
    tcase_add_test(tc, broken_list);
    tcase_add_test(tc, plugin_path_env);
    tcase_add_test(tc, broken_run);
    suite_add_tcase(s, tc);

    tc = tcase_create("run");
    tcase_add_test(tc, run_rtn_exact);
    tcase_add_test(tc, run_set_group_size);
    tcase_add_test(tc, run_deterministic);
    tcase_add_test(tc, typo_in_file);
    tcase_add_test(tc, typo_in_set);
    suite_add_tcase(s, tc);

    tc = tcase_create("failures");
    tcase_add_test(tc, fail_output_dir_missing);
    tcase_add_test(tc, fail_output_dir_readonly);
    tcase_add_test(tc, fail_corrupt_input);
    tcase_add_test(tc, fail_existing_output);
    tcase_add_test(tc, fail_output_is_input);
    tcase_add_test(tc, fail_nan_weight);
    tcase_add_test(tc, fail_fifo_inputs);
    tcase_add_test(tc, fail_nan_components);
    tcase_add_test(tc, fail_bad_output_paths);
    tcase_add_test(tc, warn_unmatched_patterns);
    suite_add_tcase(s, tc);

    tc = tcase_create("example");
    tcase_add_test(tc, example_sign);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(cli_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
