/* Sharded outputs: the safetensors sink's max_shard_size (greedy shards and
 * a Hugging Face index, read back by the source), the dequant writer's and
 * `hvqconv decode --max-shard-size`, and sharded hvq containers (shards cut
 * while streaming, decode and inspect through the index or the directory).
 * Failures leave no shard and no index behind. */
#include "config.h"

#include "container.h"
#include "harness.h"
#include "json.h"
#include "params.h"

#include <check.h>
#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MODEL "models/stories260K"
#define PIPE "pipelines/int4-rtn.yaml"
#define N_TENSORS 47

static char *dir;  /* this test's outputs */
static char *rdir; /* run reports, kept apart so they do not count */
static hvq_ctx *g_ctx;
static hvq_registry *g_reg;
static const hvq_plugin *st;

static void setup(void)
{
    dir = th_tmpdir("shard");
    rdir = th_tmpdir("shard-reports");
    g_ctx = th_ctx();
    g_reg = th_registry(g_ctx);
    const hvq_loaded_plugin *lp = hvq_registry_find(g_reg, HVQ_KIND_SINK, "safetensors");
    ck_assert_msg(lp != NULL, "safetensors plugin not loaded");
    st = &lp->desc;
}

static void teardown(void)
{
    hvq_ctx_free(g_ctx);
    hvq_registry_free(g_reg);
    g_ctx = NULL;
    g_reg = NULL;
    st = NULL;
    th_rmtree(dir);
    free(dir);
    dir = NULL;
    th_rmtree(rdir);
    free(rdir);
    rdir = NULL;
}

/* "DIR/name" in a rotating static buffer. */
static const char *P(const char *name)
{
    static char bufs[16][PATH_MAX];
    static int k;
    char *b = bufs[k++ % 16];
    snprintf(b, PATH_MAX, "%s/%s", dir, name);
    return b;
}

/* "DIR/BASE-0000k-of-0000n.EXT" */
static const char *shard_path(const char *base, size_t k, size_t n, const char *ext)
{
    char name[256];
    snprintf(name, sizeof name, "%s-%05zu-of-%05zu%s", base, k, n, ext);
    return P(name);
}

/* Entries of d (without . and ..). */
static int dir_entries(const char *d)
{
    DIR *dp = opendir(d);
    ck_assert_ptr_nonnull(dp);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(dp)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            n++;
    closedir(dp);
    return n;
}

static hvq_json_doc *parse_file(const char *path)
{
    size_t n;
    char *text = th_read_file(path, &n);
    ck_assert_msg(text != NULL, "cannot read %s", path);
    hvq_json_error err;
    hvq_json_doc *doc = hvq_json_parse(text, n, HVQ_JSON_NO_DUPLICATES, &err);
    ck_assert_msg(doc != NULL, "%s: %s", path, err.message);
    free(text);
    return doc;
}

/* ---- a model opened through the safetensors source ------------------------ */

typedef struct src {
    void *state;
} src;

static void src_open(src *s, const char *path)
{
    s->state = NULL;
    hvq_status rc = st->source_open(g_ctx, path, &s->state);
    ck_assert_msg(rc == HVQ_OK, "open %s: %s", path, hvq_ctx_error(g_ctx));
}

static void src_close(src *s) { st->source_close(g_ctx, s->state); }
static size_t src_count(src *s) { return st->source_count(s->state); }

static hvq_tensor src_read(src *s, size_t i)
{
    hvq_tensor t;
    ck_assert_int_eq(st->source_read(g_ctx, s->state, i, &t), HVQ_OK);
    return t;
}

static long src_find(src *s, const char *name)
{
    for (size_t i = 0; i < src_count(s); i++) {
        hvq_tensor_info info;
        ck_assert_int_eq(st->source_info(s->state, i, &info), HVQ_OK);
        if (strcmp(info.name, name) == 0)
            return (long)i;
    }
    return -1;
}

/* The value of a metadata key, or NULL; *n gets the entry count. */
static const char *src_meta(src *s, const char *key, size_t *n)
{
    const hvq_meta *m;
    size_t count;
    st->source_meta(s->state, &m, &count);
    if (n)
        *n = count;
    for (size_t i = 0; i < count; i++)
        if (strcmp(m[i].key, key) == 0)
            return m[i].value;
    return NULL;
}

/* Every tensor of a is in b under the same name, with the same dtype,
 * shape and bytes, and the counts agree. */
static void assert_same_model(const char *a_path, const char *b_path)
{
    src a, b;
    src_open(&a, a_path);
    src_open(&b, b_path);
    ck_assert_uint_eq(src_count(&a), src_count(&b));
    for (size_t i = 0; i < src_count(&a); i++) {
        hvq_tensor ta = src_read(&a, i);
        long k = src_find(&b, ta.info.name);
        ck_assert_msg(k >= 0, "%s: tensor '%s' missing", b_path, ta.info.name);
        hvq_tensor tb = src_read(&b, (size_t)k);
        ck_assert_str_eq(ta.info.dtype_name, tb.info.dtype_name);
        ck_assert_int_eq(ta.info.ndim, tb.info.ndim);
        for (int d = 0; d < ta.info.ndim; d++)
            ck_assert_int_eq(ta.info.shape[d], tb.info.shape[d]);
        ck_assert_uint_eq(ta.info.nbytes, tb.info.nbytes);
        ck_assert_msg(memcmp(ta.data, tb.data, (size_t)ta.info.nbytes) == 0,
                      "tensor '%s' differs between %s and %s", ta.info.name, a_path, b_path);
    }
    src_close(&a);
    src_close(&b);
}

static void assert_same_file(const char *a, const char *b)
{
    size_t na, nb;
    char *da = th_read_file(a, &na), *db = th_read_file(b, &nb);
    ck_assert_msg(da && db, "cannot read %s or %s", a, b);
    ck_assert_msg(na == nb && memcmp(da, db, na) == 0, "%s (%zu bytes) and %s (%zu bytes) differ",
                  a, na, b, nb);
    free(da);
    free(db);
}

/* ---- the sink, through the plugin ------------------------------------------ */

/* The test model: U8 tensors of these sizes, named so that their sorted
 * order is the reverse of the declaration order. */
static const uint64_t SIZES[] = {100, 200, 50, 400, 30, 0, 70};
#define N_SIZES (sizeof SIZES / sizeof SIZES[0])
static char names[N_SIZES][16];
static hvq_tensor_info infos[N_SIZES];
static unsigned char datas[N_SIZES][400];
static const hvq_meta META[] = {{"format", "pt"}};

static void make_model(void)
{
    memset(infos, 0, sizeof infos);
    for (size_t i = 0; i < N_SIZES; i++) {
        snprintf(names[i], sizeof names[i], "%c.w%zu", (char)('z' - i), i);
        infos[i].name = names[i];
        infos[i].dtype = HVQ_DTYPE_U8;
        infos[i].ndim = 1;
        infos[i].shape[0] = (int64_t)SIZES[i];
        infos[i].nbytes = SIZES[i];
        for (size_t b = 0; b < sizeof datas[i]; b++)
            datas[i][b] = (unsigned char)(i * 31 + b * 7 + 3);
    }
}

/* Writes the test model to path with max_shard_size = max_text (NULL: the
 * parameterless sink_create) and commits. */
static hvq_status write_model(const char *path, const char *max_text)
{
    void *sink = NULL;
    hvq_status rc;
    make_model();
    if (max_text) {
        ck_assert_ptr_nonnull(st->params);
        ck_assert_str_eq(st->params[0].name, "max_shard_size");
        ck_assert_int_eq(st->params[0].type, HVQ_PARAM_SIZE);
        ck_assert_str_eq(st->params[0].default_value, "0");
        /* the others belong to streaming=true (the hvq writer's), off here */
        ck_assert_str_eq(st->params[1].name, "streaming");
        ck_assert_str_eq(st->params[1].default_value, "false");
        hvq_value v;
        char why[256];
        ck_assert_int_eq(hvq_param_parse(&st->params[0], max_text, &v, why, sizeof why), HVQ_OK);
        hvq_params par = {1, &v, st->params};
        rc = st->sink_create_params(g_ctx, path, &par, META, 1, infos, N_SIZES, &sink);
    } else {
        rc = st->sink_create(g_ctx, path, META, 1, infos, N_SIZES, &sink);
    }
    if (rc != HVQ_OK) {
        st->sink_close(g_ctx, sink);
        hvq_outputs_abort(g_ctx);
        return rc;
    }
    for (size_t i = 0; i < N_SIZES; i++) {
        hvq_tensor t = {infos[i], datas[i]};
        ck_assert_msg(st->sink_write(g_ctx, sink, &t) == HVQ_OK, "%s", hvq_ctx_error(g_ctx));
        ck_assert_msg(!th_exists(path), "output visible before commit");
    }
    ck_assert_msg(st->sink_finish(g_ctx, sink) == HVQ_OK, "%s", hvq_ctx_error(g_ctx));
    st->sink_close(g_ctx, sink);
    ck_assert_msg(hvq_outputs_commit(g_ctx) == HVQ_OK, "%s", hvq_ctx_error(g_ctx));
    return HVQ_OK;
}

/* The test model read back from path (a file, an index or a directory). */
static void check_model(const char *path)
{
    src s;
    src_open(&s, path);
    ck_assert_uint_eq(src_count(&s), N_SIZES);
    for (size_t i = 0; i < N_SIZES; i++) {
        hvq_tensor t = src_read(&s, i);
        ck_assert_str_eq(t.info.name, names[i]);
        ck_assert_uint_eq(t.info.nbytes, SIZES[i]);
        ck_assert_int_eq(t.info.dtype, HVQ_DTYPE_U8);
        ck_assert(SIZES[i] == 0 || memcmp(t.data, datas[i], SIZES[i]) == 0);
    }
    size_t n;
    ck_assert_str_eq(src_meta(&s, "format", &n), "pt");
    ck_assert_uint_eq(n, 1);
    src_close(&s);
}

/* Checks m-0000k-of-0000N.safetensors + m.safetensors.index.json for the
 * expected shard of every tensor (n_shards > 1), or the single m.safetensors. */
static void check_sharded(const size_t *shard_of, size_t n_shards)
{
    if (n_shards == 1) {
        ck_assert(th_exists(P("m.safetensors")));
        ck_assert(!th_exists(P("m.safetensors.index.json")));
        ck_assert_int_eq(dir_entries(dir), 1);
        check_model(P("m.safetensors"));
        check_model(dir);
        return;
    }
    ck_assert(!th_exists(P("m.safetensors")));
    ck_assert_int_eq(dir_entries(dir), (int)n_shards + 1); /* no temporary files */

    /* The index: total_size, and the weight map sorted by name. */
    hvq_json_doc *doc = parse_file(P("m.safetensors.index.json"));
    const hvq_json_value *root = hvq_json_root(doc);
    ck_assert_uint_eq(hvq_json_count(root), 2);
    uint64_t total = 0, want_total = 0;
    ck_assert_int_eq(hvq_json_uint64(hvq_json_get(hvq_json_get(root, "metadata"), "total_size"),
                                     &total), 0);
    for (size_t i = 0; i < N_SIZES; i++)
        want_total += SIZES[i];
    ck_assert_uint_eq(total, want_total);
    const hvq_json_value *wm = hvq_json_get(root, "weight_map");
    ck_assert_uint_eq(hvq_json_count(wm), N_SIZES);
    for (size_t i = 0; i < N_SIZES; i++) {
        const hvq_json_member *m = hvq_json_member_at(wm, i);
        if (i)
            ck_assert_msg(strcmp(hvq_json_member_at(wm, i - 1)->key, m->key) < 0,
                          "weight_map is not sorted at '%s'", m->key);
        size_t t = N_SIZES - 1 - i; /* names sort in reverse */
        ck_assert_str_eq(m->key, names[t]);
        char want[64];
        snprintf(want, sizeof want, "m-%05zu-of-%05zu.safetensors", shard_of[t] + 1, n_shards);
        ck_assert_str_eq(hvq_json_string(m->value, NULL), want);
    }
    hvq_json_free(doc);

    /* Every shard: its tensors in declaration order, the same metadata. */
    for (size_t k = 0; k < n_shards; k++) {
        src s;
        src_open(&s, shard_path("m", k + 1, n_shards, ".safetensors"));
        size_t got = 0;
        for (size_t i = 0; i < N_SIZES; i++) {
            if (shard_of[i] != k)
                continue;
            hvq_tensor t = src_read(&s, got++);
            ck_assert_str_eq(t.info.name, names[i]);
        }
        ck_assert_uint_eq(src_count(&s), got);
        ck_assert_uint_gt(got, 0);
        size_t n;
        ck_assert_str_eq(src_meta(&s, "format", &n), "pt");
        ck_assert_uint_eq(n, 1);
        src_close(&s);
    }
    /* Read back whole, through the index and the directory. */
    check_model(P("m.safetensors.index.json"));
    check_model(dir);
}

/* A new directory, and a new context: the files the last one read are its
 * inputs, which no output of it may replace. */
static void clear_dir(void)
{
    th_rmtree(dir);
    ck_assert_int_eq(mkdir(dir, 0755), 0);
    hvq_ctx_free(g_ctx);
    g_ctx = th_ctx();
    hvq_ctx_set_registry(g_ctx, g_reg);
}

START_TEST(sink_greedy_shards)
{
    /* 100 200 | 50 | 400 (above the limit: alone) | 30 0 70 */
    static const size_t s300[] = {0, 0, 1, 2, 3, 3, 3};
    ck_assert_int_eq(write_model(P("m.safetensors"), "300"), HVQ_OK);
    check_sharded(s300, 4);
    clear_dir();
    /* one byte over the total: the last tensor alone */
    static const size_t s849[] = {0, 0, 0, 0, 0, 0, 1};
    ck_assert_int_eq(write_model(P("m.safetensors"), "849B"), HVQ_OK);
    check_sharded(s849, 2);
    clear_dir();
    /* every tensor above the limit: one shard each, the empty one joins */
    static const size_t s1[] = {0, 1, 2, 3, 4, 4, 5};
    ck_assert_int_eq(write_model(P("m.safetensors"), "1"), HVQ_OK);
    check_sharded(s1, 6);
    clear_dir();
    /* the exact total, more, and 0: one file, no index */
    const char *fits[] = {"850", "1KB", "5GB", "0"};
    for (size_t i = 0; i < sizeof fits / sizeof fits[0]; i++) {
        ck_assert_int_eq(write_model(P("m.safetensors"), fits[i]), HVQ_OK);
        check_sharded(NULL, 1);
        clear_dir();
    }
    /* sink_create (no options) is one file too */
    ck_assert_int_eq(write_model(P("m.safetensors"), NULL), HVQ_OK);
    check_sharded(NULL, 1);
}
END_TEST

START_TEST(sink_through_host)
{
    /* The host resolves the option against the declared parameter. */
    make_model();
    const char *opts[] = {"max_shard_size=0.3KB", NULL};
    hvq_sink_handle *h = g_ctx->host->sink_open_params(g_ctx, "safetensors", P("m.safetensors"),
                                                       opts, META, 1, infos, N_SIZES);
    ck_assert_ptr_null(h); /* sizes are whole numbers */
    th_assert_contains(hvq_ctx_error(g_ctx), "max_shard_size");
    opts[0] = "max_shard_size=300";
    h = g_ctx->host->sink_open_params(g_ctx, NULL, P("m.safetensors"), opts, META, 1, infos,
                                      N_SIZES);
    ck_assert_msg(h != NULL, "%s", hvq_ctx_error(g_ctx));
    for (size_t i = 0; i < N_SIZES; i++) {
        hvq_tensor t = {infos[i], datas[i]};
        ck_assert_int_eq(g_ctx->host->sink_write(g_ctx, h, &t), HVQ_OK);
    }
    ck_assert_int_eq(g_ctx->host->sink_finish(g_ctx, h), HVQ_OK);
    g_ctx->host->sink_close(g_ctx, h);
    ck_assert_int_eq(hvq_outputs_commit(g_ctx), HVQ_OK);
    static const size_t s300[] = {0, 0, 1, 2, 3, 3, 3};
    check_sharded(s300, 4);
}
END_TEST

/* A streaming sink (no declarations) refuses a name written before, found
 * among many (the host's table of names grows past its first size). */
START_TEST(sink_streaming_names)
{
    static const char *const opts[] = {"streaming=true", NULL};
    hvq_sink_handle *h = g_ctx->host->sink_open_params(g_ctx, "safetensors",
                                                       P("s.safetensors"), opts, META, 1,
                                                       NULL, 0);
    ck_assert_msg(h != NULL, "%s", hvq_ctx_error(g_ctx));
    float v = 1.0f;
    char name[32];
    hvq_tensor t = {.info = {.name = name, .dtype = HVQ_DTYPE_F32, .dtype_name = "F32",
                             .ndim = 1, .shape = {1}, .nbytes = 4},
                    .data = &v};
    for (int i = 0; i < 300; i++) {
        snprintf(name, sizeof name, "t.%d", i);
        ck_assert_msg(g_ctx->host->sink_write(g_ctx, h, &t) == HVQ_OK, "%s",
                      hvq_ctx_error(g_ctx));
    }
    snprintf(name, sizeof name, "t.%d", 17);
    ck_assert_int_eq(g_ctx->host->sink_write(g_ctx, h, &t), HVQ_E_INTERNAL);
    th_assert_contains(hvq_ctx_error(g_ctx), "tensor 't.17' is written twice");
    g_ctx->host->sink_close(g_ctx, h);
    hvq_outputs_abort(g_ctx);
}
END_TEST

START_TEST(sink_failures)
{
    /* A name that does not end in .safetensors cannot be sharded. */
    ck_assert_int_eq(write_model(P("m.bin"), "300"), HVQ_E_INPUT);
    th_assert_contains(hvq_ctx_error(g_ctx), "NAME.safetensors");
    ck_assert_int_eq(write_model(P(".safetensors"), "300"), HVQ_E_INPUT);
    ck_assert_int_eq(dir_entries(dir), 0);
    /* ... but without max_shard_size any name is fine */
    ck_assert_int_eq(write_model(P("m.bin"), "0"), HVQ_OK);
    ck_assert(th_exists(P("m.bin")));
    clear_dir();

    /* A missing directory: nothing is created. */
    ck_assert_int_eq(write_model(P("missing/m.safetensors"), "300"), HVQ_E_INPUT);
    ck_assert_int_eq(dir_entries(dir), 0);

    /* A shard name that exists (no --force): no other shard, no index. */
    th_write_file(shard_path("m", 3, 4, ".safetensors"), "keep", 4);
    ck_assert_int_eq(write_model(P("m.safetensors"), "300"), HVQ_E_INPUT);
    th_assert_contains(hvq_ctx_error(g_ctx), "already exists");
    ck_assert_int_eq(dir_entries(dir), 1);
    clear_dir();
    th_write_file(P("m.safetensors.index.json"), "keep", 4);
    ck_assert_int_eq(write_model(P("m.safetensors"), "300"), HVQ_E_INPUT);
    ck_assert_int_eq(dir_entries(dir), 1);
    clear_dir();

    /* Abandoned after two tensors: the shards and the index go away (the
     * host refuses the early finish). */
    static const char *const opts[] = {"max_shard_size=300", NULL};
    hvq_sink_handle *hs = g_ctx->host->sink_open_params(g_ctx, "safetensors", P("m.safetensors"),
                                                        opts, META, 1, infos, N_SIZES);
    ck_assert_ptr_nonnull(hs);
    for (size_t i = 0; i < 2; i++) {
        hvq_tensor t = {infos[i], datas[i]};
        ck_assert_int_eq(g_ctx->host->sink_write(g_ctx, hs, &t), HVQ_OK);
    }
    ck_assert_int_eq(g_ctx->host->sink_finish(g_ctx, hs), HVQ_E_INTERNAL);
    g_ctx->host->sink_close(g_ctx, hs);
    hvq_outputs_abort(g_ctx);
    ck_assert_int_eq(dir_entries(dir), 0);
}
END_TEST

/* ---- the real binary ----------------------------------------------------------- */

static void run_ok(const char *const *args)
{
    char *err = NULL;
    int rc = th_run(NULL, &err, args);
    ck_assert_msg(rc == 0, "hvqconv %s %s failed (%d):\n%s", args[0], args[1] ? args[1] : "", rc,
                  err);
    free(err);
}

/* Compresses the demo model with int4-rtn and up to 8 more arguments. */
static int compress(const char *out, char **err, const char *const *extra, size_t n_extra)
{
    const char *args[32];
    char report[PATH_MAX];
    static int count;
    size_t n = 0;
    snprintf(report, sizeof report, "%s/report-%d.json", rdir, count++);
    args[n++] = "run";
    args[n++] = th_src(PIPE);
    args[n++] = "--input";
    args[n++] = th_src(MODEL);
    args[n++] = "--output";
    args[n++] = out;
    args[n++] = "--report";
    args[n++] = report;
    args[n++] = "-q";
    for (size_t i = 0; i < n_extra; i++)
        args[n++] = extra[i];
    args[n] = NULL;
    return th_run(NULL, err, args);
}

static void compress_ok(const char *out, const char *const *extra, size_t n_extra)
{
    char *err = NULL;
    int rc = compress(out, &err, extra, n_extra);
    ck_assert_msg(rc == 0, "compressing to %s failed (%d):\n%s", out, rc, err);
    free(err);
}

#define N(a) (sizeof(a) / sizeof((a)[0]))

/* The shard count an index names (and checks every shard file exists). */
static size_t index_shards(const char *index, const char *base, const char *ext)
{
    hvq_json_doc *doc = parse_file(index);
    const hvq_json_value *wm = hvq_json_get(hvq_json_root(doc), "weight_map");
    ck_assert_ptr_nonnull(wm);
    size_t n = 0;
    for (size_t i = 0; i < hvq_json_count(wm); i++) {
        const char *f = hvq_json_string(hvq_json_member_at(wm, i)->value, NULL);
        size_t k, of;
        char tail[32];
        char fmt[64];
        snprintf(fmt, sizeof fmt, "%s-%%5zu-of-%%5zu%%31s", base);
        ck_assert_msg(sscanf(f, fmt, &k, &of, tail) == 3 && strcmp(tail, ext) == 0,
                      "bad shard name '%s'", f);
        ck_assert_uint_ge(k, 1);
        ck_assert_uint_le(k, of);
        ck_assert(n == 0 || n == of);
        n = of;
    }
    hvq_json_free(doc);
    for (size_t k = 1; k <= n; k++)
        ck_assert_msg(th_exists(shard_path(base, k, n, ext)), "shard %zu of %zu missing", k, n);
    return n;
}

START_TEST(cli_dequant_sharded)
{
    const char *sharded[] = {"--set", "stages.writer.max_shard_size=300KB"};
    compress_ok(P("m.safetensors"), sharded, N(sharded));
    compress_ok(P("u.safetensors"), NULL, 0);
    ck_assert(!th_exists(P("m.safetensors")));
    size_t n = index_shards(P("m.safetensors.index.json"), "m", ".safetensors");
    ck_assert_uint_eq(n, 4); /* 1,040,128 bytes of data in 300 KB shards */
    ck_assert_int_eq(dir_entries(dir), (int)n + 2);
    for (size_t k = 1; k <= n; k++) {
        src s;
        src_open(&s, shard_path("m", k, n, ".safetensors"));
        uint64_t bytes = 0;
        for (size_t i = 0; i < src_count(&s); i++)
            bytes += src_read(&s, i).info.nbytes;
        ck_assert_uint_le(bytes, 300000);
        ck_assert_str_eq(src_meta(&s, "format", NULL), "pt");
        src_close(&s);
    }
    /* Every tensor, equal to the unsharded run's, through the index and
     * through the directory (the only index there). */
    assert_same_model(P("u.safetensors"), P("m.safetensors.index.json"));
    assert_same_model(P("u.safetensors"), dir);

    /* A bad size names the parameter, exit status 2, no output. */
    char *err = NULL;
    const char *bad[] = {"--set", "stages.writer.max_shard_size=5parsecs"};
    ck_assert_int_eq(compress(P("b.safetensors"), &err, bad, N(bad)), 2);
    th_assert_contains(err, "max_shard_size");
    th_assert_contains(err, "5parsecs");
    free(err);
    ck_assert(!th_exists(P("b.safetensors")));
    ck_assert(!th_exists(P("b.safetensors.index.json")));
}
END_TEST

START_TEST(cli_dequant_directory)
{
    /* A model directory holding only the sharded output reads as a model. */
    const char *sharded[] = {"--set", "stages.writer.max_shard_size=300KB"};
    char sub[PATH_MAX];
    snprintf(sub, sizeof sub, "%s", P("model"));
    ck_assert_int_eq(mkdir(sub, 0755), 0);
    compress_ok(P("model/model.safetensors"), sharded, N(sharded));
    compress_ok(P("u.safetensors"), NULL, 0);
    assert_same_model(P("u.safetensors"), sub);
    /* and hvqconv reads it as an input */
    char report[PATH_MAX];
    snprintf(report, sizeof report, "%s/again.json", rdir);
    const char *args[] = {"run", th_src(PIPE), "--input", sub, "-o", P("again.safetensors"),
                          "--report", report, "-q", NULL};
    run_ok(args);
}
END_TEST

START_TEST(cli_sink_without_option)
{
    /* A sink that declares no max_shard_size: the host names the option. */
    const hvq_loaded_plugin *other = NULL;
    for (size_t i = 0; i < hvq_registry_count(g_reg) && !other; i++) {
        const hvq_loaded_plugin *p = hvq_registry_at(g_reg, i);
        if ((p->desc.kinds & HVQ_KIND_SINK) && strcmp(p->desc.name, "safetensors") != 0 &&
            hvq_param_index(p->desc.params, "max_shard_size") < 0)
            other = p;
    }
    if (!other) {
        fprintf(stderr, "cli_sink_without_option: skipped: no other sink without the option\n");
        return;
    }
    char set[128];
    snprintf(set, sizeof set, "stages.writer.format=%s", other->desc.name);
    const char *extra[] = {"--set", set, "--set", "stages.writer.max_shard_size=1MB"};
    char *err = NULL;
    ck_assert_int_eq(compress(P("x.out"), &err, extra, N(extra)), 2);
    th_assert_contains(err, "no option 'max_shard_size'");
    free(err);
    ck_assert_int_eq(dir_entries(dir), 0);
}
END_TEST

/* ---- sharded hvq containers ------------------------------------------------ */

static void decode_ok(const char *in, const char *out)
{
    const char *args[] = {"decode", in, "-o", out, "-q", NULL};
    run_ok(args);
}

/* The stored tensors of the unsharded container and the sharded one's
 * index agree; each original tensor's stored tensors share a shard unless
 * together they exceed max; the shards' metadata. */
static void check_container(const char *base, size_t n, uint64_t max, int split_expected)
{
    char name[64], index[PATH_MAX];
    snprintf(name, sizeof name, "%s.hvq.index.json", base);
    snprintf(index, sizeof index, "%s", P(name));
    src u;
    src_open(&u, P("u.hvq"));
    hvq_json_doc *doc = parse_file(index);
    const hvq_json_value *wm = hvq_json_get(hvq_json_root(doc), "weight_map");
    ck_assert_uint_eq(hvq_json_count(wm), src_count(&u));
    uint64_t total = 0;
    int split = 0;
    for (size_t i = 0; i < hvq_json_count(wm); i++) {
        const hvq_json_member *m = hvq_json_member_at(wm, i);
        if (i)
            ck_assert_msg(strcmp(hvq_json_member_at(wm, i - 1)->key, m->key) < 0,
                          "weight_map is not sorted at '%s'", m->key);
        long k = src_find(&u, m->key);
        ck_assert_msg(k >= 0, "'%s' is not a stored tensor of the unsharded container", m->key);
        total += src_read(&u, (size_t)k).info.nbytes;
        /* the stored tensors of one original tensor, "X" and "X::...", are
         * adjacent in sorted order: same shard, unless split */
        const char *sep = strstr(m->key, "::");
        if (i && sep) {
            const hvq_json_member *p = hvq_json_member_at(wm, i - 1);
            size_t stem = (size_t)(sep - m->key);
            if (strncmp(p->key, m->key, stem + 2) == 0 &&
                strcmp(hvq_json_string(p->value, NULL), hvq_json_string(m->value, NULL)) != 0)
                split = 1;
        }
    }
    uint64_t t;
    ck_assert_int_eq(hvq_json_uint64(hvq_json_get(hvq_json_get(hvq_json_root(doc), "metadata"),
                                                  "total_size"), &t), 0);
    ck_assert_uint_eq(t, total);
    ck_assert_int_eq(split, split_expected);
    hvq_json_free(doc);
    src_close(&u);

    for (size_t k = 1; k <= n; k++) {
        src s;
        src_open(&s, shard_path(base, k, n, ".hvq"));
        size_t nm;
        char want[64];
        snprintf(want, sizeof want, "%zu of %zu", k, n);
        ck_assert_str_eq(src_meta(&s, "format", &nm), "hvq");
        ck_assert_str_eq(src_meta(&s, "hvq.format_version", NULL), "1");
        ck_assert_str_eq(src_meta(&s, "hvq.shard", NULL), want);
        if (k == 1) {
            ck_assert_ptr_nonnull(src_meta(&s, "hvq.tensors", NULL));
            ck_assert_ptr_nonnull(src_meta(&s, "hvq.pipeline", NULL));
            ck_assert_ptr_nonnull(src_meta(&s, "hvq.source_metadata", NULL));
        } else {
            ck_assert_uint_eq(nm, 3);
        }
        uint64_t bytes = 0;
        for (size_t i = 0; i < src_count(&s); i++)
            bytes += src_read(&s, i).info.nbytes;
        if (bytes > max) /* only one stored tensor goes past the limit */
            ck_assert_uint_eq(src_count(&s), 1);
        src_close(&s);
    }
}

START_TEST(cli_hvq_sharded)
{
    const char *plain[] = {"--set", "stages.writer.plugin=hvq"};
    const char *sharded[] = {"--set", "stages.writer.plugin=hvq", "--set",
                             "stages.writer.max_shard_size=100KB"};
    compress_ok(P("u.hvq"), plain, N(plain));
    compress_ok(P("m.hvq"), sharded, N(sharded));
    ck_assert(!th_exists(P("m.hvq")));
    size_t n = index_shards(P("m.hvq.index.json"), "m", ".hvq");
    ck_assert_uint_eq(n, 3);
    ck_assert_int_eq(dir_entries(dir), 2 + (int)n);
    check_container("m", n, 100000, 0);

    /* decode through the index and the directory: byte-identical to
     * decoding the unsharded container */
    decode_ok(P("u.hvq"), P("u.safetensors"));
    decode_ok(P("m.hvq.index.json"), P("d.safetensors"));
    assert_same_file(P("u.safetensors"), P("d.safetensors"));
    char sub[PATH_MAX];
    snprintf(sub, sizeof sub, "%s", P("only"));
    ck_assert_int_eq(mkdir(sub, 0755), 0);
    compress_ok(P("only/m.hvq"), sharded, N(sharded));
    decode_ok(sub, P("d2.safetensors"));
    assert_same_file(P("u.safetensors"), P("d2.safetensors"));

    /* inspect verifies every checksum across the shards */
    char *o = NULL, *err = NULL;
    const char *iargs[] = {"inspect", P("m.hvq.index.json"), NULL};
    ck_assert_int_eq(th_run(&o, &err, iargs), 0);
    th_assert_contains(o, "in 3 shards and an index");
    th_assert_contains(o, "checksums:      OK (47 tensors)");
    free(o);
    free(err);
    const char *jargs[] = {"inspect", "--json", sub, NULL};
    ck_assert_int_eq(th_run(&o, NULL, jargs), 0);
    th_assert_contains(o, "\"shards\": 3");
    th_assert_contains(o, "\"checksums\": \"ok\"");
    free(o);

    /* one shard alone is refused, pointing to the index */
    for (size_t k = 1; k <= n; k++) {
        const char *args[] = {"inspect", shard_path("m", k, n, ".hvq"), NULL};
        err = NULL;
        ck_assert_int_eq(th_run(NULL, &err, args), 2);
        th_assert_contains(err, "of a sharded container");
        th_assert_contains(err, ".hvq.index.json");
        free(err);
    }
}
END_TEST

/* --force replaces an output in whichever form it had: fewer shards, one
 * file where shards were and shards where one file was leave no stale file
 * beside the new ones; a file of another name is kept, and nothing is
 * removed from a directory an input is read from. */
START_TEST(cli_force_replaces_forms)
{
    const char *s100[] = {"--force", "--set", "stages.writer.max_shard_size=100KB"};
    const char *s300[] = {"--force", "--set", "stages.writer.max_shard_size=300KB"};
    const char *one[] = {"--force"};
    th_write_file(P("m-keep.safetensors"), "x", 1);
    compress_ok(P("m.safetensors"), s100, N(s100));
    size_t n = index_shards(P("m.safetensors.index.json"), "m", ".safetensors");
    ck_assert_uint_gt(n, 4);
    ck_assert_int_eq(dir_entries(dir), (int)n + 2);
    compress_ok(P("m.safetensors"), s300, N(s300));
    ck_assert_uint_eq(index_shards(P("m.safetensors.index.json"), "m", ".safetensors"), 4);
    ck_assert_int_eq(dir_entries(dir), 4 + 2);
    compress_ok(P("m.safetensors"), one, N(one));
    ck_assert(th_exists(P("m.safetensors")));
    ck_assert(!th_exists(P("m.safetensors.index.json")));
    ck_assert_int_eq(dir_entries(dir), 2);
    compress_ok(P("m.safetensors"), s300, N(s300));
    ck_assert(!th_exists(P("m.safetensors")));
    ck_assert_int_eq(dir_entries(dir), 4 + 2);
    ck_assert(th_exists(P("m-keep.safetensors")));

    /* The input's directory: decoding the sharded container there keeps
     * every file (the output is single, the old shards stay). */
    const char *hvq[] = {"--force", "--set", "stages.writer.plugin=hvq", "--set",
                         "stages.writer.max_shard_size=100KB"};
    compress_ok(P("c.hvq"), hvq, N(hvq));
    size_t nc = index_shards(P("c.hvq.index.json"), "c", ".hvq");
    th_write_file(P("c-00001-of-00009.hvq"), "x", 1);
    const char *args[] = {"decode", P("c.hvq.index.json"), "-o", P("c.hvq"), "--force", NULL};
    char *err = NULL;
    int rc = th_run(NULL, &err, args);
    free(err);
    (void)rc;
    for (size_t k = 1; k <= nc; k++)
        ck_assert(th_exists(shard_path("c", k, nc, ".hvq")));
    ck_assert(th_exists(P("c-00001-of-00009.hvq")));
    ck_assert(th_exists(P("c.hvq.index.json")));
}
END_TEST

START_TEST(cli_hvq_streaming)
{
    /* The per-shard header reservations: streaming from the first byte
     * (buffer_mib 0), a user reservation, and a limit below some tensors'
     * stored size (split between their stored tensors). */
    const char *plain[] = {"--set", "stages.writer.plugin=hvq"};
    compress_ok(P("u.hvq"), plain, N(plain));
    decode_ok(P("u.hvq"), P("u.safetensors"));
    static const struct {
        const char *base, *set1, *set2;
        uint64_t max;
        int split;
    } cases[] = {
        {"s0", "stages.writer.buffer_mib=0", "stages.writer.max_shard_size=100KB", 100000, 0},
        {"s1", "stages.writer.header_reserve=64", "stages.writer.max_shard_size=100KB", 100000, 0},
        {"s2", "stages.writer.buffer_mib=0", "stages.writer.max_shard_size=4KB", 4000, 1},
        {"s3", "stages.writer.buffer_mib=64", "stages.writer.max_shard_size=4KB", 4000, 1},
    };
    for (size_t c = 0; c < N(cases); c++) {
        char name[64], out[PATH_MAX], index[PATH_MAX], dec[PATH_MAX];
        snprintf(name, sizeof name, "%s.hvq", cases[c].base);
        snprintf(out, sizeof out, "%s", P(name));
        snprintf(name, sizeof name, "%s.hvq.index.json", cases[c].base);
        snprintf(index, sizeof index, "%s", P(name));
        snprintf(name, sizeof name, "%s.safetensors", cases[c].base);
        snprintf(dec, sizeof dec, "%s", P(name));
        const char *extra[] = {"--set", "stages.writer.plugin=hvq", "--set", cases[c].set1,
                               "--set", cases[c].set2};
        compress_ok(out, extra, N(extra));
        size_t n = index_shards(index, cases[c].base, ".hvq");
        ck_assert_uint_gt(n, 2);
        check_container(cases[c].base, n, cases[c].max, cases[c].split);
        decode_ok(index, dec);
        assert_same_file(P("u.safetensors"), dec);
        const char *iargs[] = {"inspect", index, NULL};
        char *o = NULL;
        ck_assert_int_eq(th_run(&o, NULL, iargs), 0);
        th_assert_contains(o, "checksums:      OK");
        free(o);
    }
}
END_TEST

START_TEST(cli_hvq_fits_one_file)
{
    /* Everything in one shard: the plain container, no index, no
     * "hvq.shard". */
    const char *sharded[] = {"--set", "stages.writer.plugin=hvq", "--set",
                             "stages.writer.max_shard_size=10MB"};
    compress_ok(P("m.hvq"), sharded, N(sharded));
    ck_assert_int_eq(dir_entries(dir), 1);
    src s;
    src_open(&s, P("m.hvq"));
    ck_assert_ptr_null(src_meta(&s, "hvq.shard", NULL));
    src_close(&s);
    const char *plain[] = {"--set", "stages.writer.plugin=hvq"};
    compress_ok(P("u.hvq"), plain, N(plain));
    decode_ok(P("u.hvq"), P("u.safetensors"));
    decode_ok(P("m.hvq"), P("d.safetensors"));
    assert_same_file(P("u.safetensors"), P("d.safetensors"));
    /* a sharded container needs a NAME.hvq output */
    const char *bad[] = {"--set", "stages.writer.plugin=hvq", "--set",
                         "stages.writer.max_shard_size=10MB"};
    char *err = NULL;
    ck_assert_int_eq(compress(P("m.bin"), &err, bad, N(bad)), 2);
    th_assert_contains(err, "NAME.hvq");
    free(err);
    ck_assert(!th_exists(P("m.bin")));
}
END_TEST

START_TEST(cli_decode_sharded)
{
    const char *plain[] = {"--set", "stages.writer.plugin=hvq"};
    compress_ok(P("u.hvq"), plain, N(plain));
    decode_ok(P("u.hvq"), P("u.safetensors"));
    const char *args[] = {"decode", P("u.hvq"), "-o", P("d.safetensors"), "--max-shard-size",
                          "300KB", "-q", NULL};
    run_ok(args);
    ck_assert(!th_exists(P("d.safetensors")));
    ck_assert_uint_eq(index_shards(P("d.safetensors.index.json"), "d", ".safetensors"), 4);
    assert_same_model(P("u.safetensors"), P("d.safetensors.index.json"));
    /* a bad size: exit 2, nothing written */
    int before = dir_entries(dir);
    char *err = NULL;
    const char *bad[] = {"decode", P("u.hvq"), "-o", P("e.safetensors"), "--max-shard-size",
                         "5parsecs", NULL};
    ck_assert_int_eq(th_run(NULL, &err, bad), 2);
    th_assert_contains(err, "--max-shard-size 5parsecs");
    free(err);
    ck_assert_int_eq(dir_entries(dir), before);
    /* a name that cannot be sharded */
    const char *bin[] = {"decode", P("u.hvq"), "-o", P("e.bin"), "--format", "safetensors",
                         "--max-shard-size", "300KB", NULL};
    ck_assert_int_eq(th_run(NULL, &err, bin), 2);
    th_assert_contains(err, "NAME.safetensors");
    free(err);
    ck_assert_int_eq(dir_entries(dir), before);
}
END_TEST

START_TEST(cli_failures_leave_nothing)
{
    const char *dq[] = {"--set", "stages.writer.max_shard_size=300KB"};
    const char *hq[] = {"--set", "stages.writer.plugin=hvq", "--set",
                        "stages.writer.max_shard_size=100KB"};
    char *err = NULL;
    /* the output directory is missing */
    ck_assert_int_eq(compress(P("missing/m.safetensors"), &err, dq, N(dq)), 2);
    free(err);
    ck_assert_int_eq(compress(P("missing/m.hvq"), &err, hq, N(hq)), 2);
    free(err);
    ck_assert_int_eq(dir_entries(dir), 0);
    /* a shard's name is taken: refused before any work */
    th_write_file(shard_path("m", 2, 4, ".safetensors"), "keep", 4);
    ck_assert_int_eq(compress(P("m.safetensors"), &err, dq, N(dq)), 2);
    th_assert_contains(err, "already exists");
    free(err);
    ck_assert_int_eq(dir_entries(dir), 1);
    /* the hvq index's name is taken: found only at the end, when the shard
     * count is known; the shards written so far go away */
    th_write_file(P("m.hvq.index.json"), "keep", 4);
    ck_assert_int_eq(compress(P("m.hvq"), &err, hq, N(hq)), 2);
    th_assert_contains(err, "already exists");
    free(err);
    ck_assert_int_eq(dir_entries(dir), 2);
    size_t len;
    char *keep = th_read_file(P("m.hvq.index.json"), &len);
    ck_assert(keep && len == 4 && memcmp(keep, "keep", 4) == 0);
    free(keep);
    /* --force does not replace files hvqconv did not write for it */
    const char *forced[] = {"--set", "stages.writer.plugin=hvq", "--set",
                            "stages.writer.max_shard_size=100KB", "--force"};
    ck_assert_int_eq(compress(P("m.hvq"), &err, forced, N(forced)), 2);
    th_assert_contains(err, "hvqconv did not write it");
    free(err);
    ck_assert_int_eq(dir_entries(dir), 2);
    /* removed by hand, the name is free */
    ck_assert_int_eq(unlink(P("m.hvq.index.json")), 0);
    compress_ok(P("m.hvq"), forced, N(forced));
    ck_assert_uint_eq(index_shards(P("m.hvq.index.json"), "m", ".hvq"), 3);
}
END_TEST

/* ---- the hvq writer through the plugin ------------------------------------- */

/* A shard whose reservation (sized from its data rate so far) runs out
 * closes early: a big tensor, then many tiny ones with long names. */
START_TEST(hvq_writer_header_cut)
{
    enum { N_TINY = 600, N_ALL = N_TINY + 2 };
    const hvq_loaded_plugin *wp = hvq_registry_find(g_reg, HVQ_KIND_WRITER, "hvq");
    ck_assert_ptr_nonnull(wp);
    const hvq_param_spec *specs = wp->desc.params;
    size_t np = hvq_param_count(specs);
    hvq_value vals[8];
    char why[256];
    ck_assert_uint_le(np, 8);
    for (size_t i = 0; i < np; i++) {
        const char *text = specs[i].default_value;
        if (strcmp(specs[i].name, "buffer_mib") == 0)
            text = "0";
        else if (strcmp(specs[i].name, "max_shard_size") == 0)
            text = "1MB";
        ck_assert_int_eq(hvq_param_parse(&specs[i], text, &vals[i], why, sizeof why), HVQ_OK);
    }
    hvq_params par = {np, vals, specs};

    static hvq_tensor_info ti[N_ALL];
    static char tnames[N_ALL][96];
    static unsigned char compressed[N_ALL];
    static const uint64_t big[2] = {1000000, 500000};
    unsigned char *data = calloc(1, big[0]);
    ck_assert_ptr_nonnull(data);
    for (size_t i = 0; i < big[0]; i++)
        data[i] = (unsigned char)(i * 13 + 5);
    memset(ti, 0, sizeof ti);
    for (size_t i = 0; i < N_ALL; i++) {
        if (i < 2)
            snprintf(tnames[i], sizeof tnames[i], "big.%zu", i);
        else
            snprintf(tnames[i], sizeof tnames[i],
                     "model.layers.%04zu.a_rather_long_name_that_fills_the_header.bias", i);
        ti[i].name = tnames[i];
        ti[i].dtype = HVQ_DTYPE_U8;
        ti[i].dtype_name = "U8";
        ti[i].ndim = 1;
        ti[i].shape[0] = (int64_t)(i < 2 ? big[i] : 1);
        ti[i].nbytes = (uint64_t)ti[i].shape[0];
    }
    hvq_writer_setup setup = {
        .output_path = P("c.hvq"), .source_path = "synthetic", .source_format = "safetensors",
        .source_meta = META, .n_source_meta = 1, .tensors = ti, .compressed = compressed,
        .n_tensors = N_ALL, .pipeline_yaml = "name: synthetic\n",
    };
    void *state = NULL;
    hvq_status rc = wp->desc.writer_open(g_ctx, &par, &setup, &state);
    ck_assert_msg(rc == HVQ_OK, "%s", hvq_ctx_error(g_ctx));
    for (size_t i = 0; i < N_ALL && rc == HVQ_OK; i++) {
        hvq_result r;
        memset(&r, 0, sizeof r);
        r.original.info = ti[i];
        r.original.data = data + i;
        rc = wp->desc.writer_tensor(g_ctx, state, &r);
        ck_assert_msg(rc == HVQ_OK, "tensor %zu: %s", i, hvq_ctx_error(g_ctx));
    }
    ck_assert_msg(wp->desc.writer_finish(g_ctx, state) == HVQ_OK, "%s", hvq_ctx_error(g_ctx));
    wp->desc.writer_close(g_ctx, state);
    ck_assert_msg(hvq_outputs_commit(g_ctx) == HVQ_OK, "%s", hvq_ctx_error(g_ctx));

    /* By size two shards would do (1 MB, then 500,600 bytes); the second
     * one's header ran out of room, so there are more. */
    size_t n = index_shards(P("c.hvq.index.json"), "c", ".hvq");
    ck_assert_uint_ge(n, 3);
    src s;
    src_open(&s, shard_path("c", 1, n, ".hvq"));
    ck_assert_uint_eq(src_count(&s), 1);
    src_close(&s);
    src_open(&s, shard_path("c", 2, n, ".hvq"));
    ck_assert_str_eq(src_read(&s, 0).info.name, "big.1");
    ck_assert_uint_lt(src_count(&s), N_TINY + 1);
    src_close(&s);
    /* Every tensor reads back, checksums verified. */
    hvq_container *c = NULL;
    rc = hvq_container_open(g_ctx, g_reg, dir, &c);
    ck_assert_msg(rc == HVQ_OK, "%s", hvq_ctx_error(g_ctx));
    ck_assert_uint_eq(hvq_container_count(c), N_ALL);
    for (size_t i = 0; i < N_ALL; i++) {
        hvq_tensor t;
        ck_assert_msg(hvq_container_read_raw(g_ctx, c, i, &t) == HVQ_OK, "%s",
                      hvq_ctx_error(g_ctx));
        ck_assert_str_eq(t.info.name, tnames[i]);
        ck_assert_uint_eq(t.info.nbytes, ti[i].nbytes);
        ck_assert(memcmp(t.data, data + i, (size_t)t.info.nbytes) == 0);
    }
    hvq_container_close(g_ctx, c);
    free(data);
}
END_TEST

static Suite *shard_suite(void)
{
    Suite *s = suite_create("shard");
    TCase *t = tcase_create("sink");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_add_test(t, sink_greedy_shards);
    tcase_add_test(t, sink_through_host);
    tcase_add_test(t, sink_failures);
    tcase_add_test(t, sink_streaming_names);
    tcase_add_test(t, hvq_writer_header_cut);
    suite_add_tcase(s, t);
    t = tcase_create("cli");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 60);
    tcase_add_test(t, cli_dequant_sharded);
    tcase_add_test(t, cli_dequant_directory);
    tcase_add_test(t, cli_sink_without_option);
    tcase_add_test(t, cli_hvq_sharded);
    tcase_add_test(t, cli_hvq_streaming);
    tcase_add_test(t, cli_force_replaces_forms);
    tcase_add_test(t, cli_hvq_fits_one_file);
    tcase_add_test(t, cli_decode_sharded);
    tcase_add_test(t, cli_failures_leave_nothing);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(shard_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
