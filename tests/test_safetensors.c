/* Tests of the safetensors plugin (the JSON parser's are in test_json.c). */
#include "config.h"

#include "harness.h"
#include "json.h"

#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ========================================================================
 * safetensors plugin
 * ====================================================================== */
static hvq_ctx *g_ctx;
static hvq_registry *g_reg;
static const hvq_plugin *st;

static void st_setup(void)
{
    const hvq_loaded_plugin *lp;
    g_ctx = th_ctx();
    g_reg = th_registry(g_ctx);
    lp = hvq_registry_find(g_reg, HVQ_KIND_SOURCE, "safetensors");
    ck_assert_msg(lp != NULL, "safetensors plugin not loaded");
    st = &lp->desc;
}

static void st_teardown(void)
{
    hvq_ctx_free(g_ctx);
    hvq_registry_free(g_reg);
    g_ctx = NULL;
    g_reg = NULL;
    st = NULL;
}

static const char *fixture(const char *rel)
{
    static char buf[8][4096];
    static int k;
    char *b = buf[k++ % 8];
    snprintf(b, 4096, "tests/data/safetensors/%s", rel);
    return th_src(b);
}

/* Opens path, expecting status want; returns the state (NULL on error). */
static void *open_ok(const char *path)
{
    void *state = NULL;
    hvq_status s = st->source_open(g_ctx, path, &state);
    ck_assert_msg(s == HVQ_OK, "open %s: %d %s", path, s,
                  hvq_ctx_error(g_ctx));
    ck_assert_ptr_nonnull(state);
    return state;
}

static void close_src(void *state)
{
    st->source_close(g_ctx, state);
}

START_TEST(st_descriptor)
{
    ck_assert_str_eq(st->name, "safetensors");
    ck_assert_str_eq(st->version, "1.0.0");
    ck_assert_str_eq(st->license, "MIT");
    ck_assert_uint_eq(st->kinds, HVQ_KIND_SOURCE | HVQ_KIND_SINK);
    ck_assert_str_eq(st->extensions, ".safetensors");
    ck_assert_ptr_nonnull(hvq_registry_find(g_reg, HVQ_KIND_SINK,
                                            "safetensors"));
}
END_TEST

typedef struct rt_tensor {
    const char *name;
    hvq_dtype dtype;
    const char *dtype_name;
    int ndim;
    int64_t shape[3];
    size_t nbytes;
} rt_tensor;

START_TEST(st_round_trip)
{
    static const rt_tensor decl[] = {
        {"model.b.f32", HVQ_DTYPE_F32, NULL, 2, {2, 3, 0}, 24},
        {"a.f16", HVQ_DTYPE_F16, "F16", 1, {3, 0, 0}, 6},
        {"c.bf16", HVQ_DTYPE_BF16, NULL, 2, {2, 2, 0}, 8},
        {"d.i32", HVQ_DTYPE_I32, NULL, 1, {5, 0, 0}, 20},
        {"e.fp8 \"quoted\" \xc3\xa9", HVQ_DTYPE_OPAQUE, "F8_E4M3", 3,
         {1, 2, 3}, 6},
        {"f.scalar", HVQ_DTYPE_F32, NULL, 0, {0, 0, 0}, 4},
        {"g.empty", HVQ_DTYPE_F32, NULL, 2, {0, 4, 0}, 0},
        {"h.u8", HVQ_DTYPE_U8, NULL, 1, {3, 0, 0}, 3},
    };
    enum { N = sizeof decl / sizeof decl[0] };
    static const hvq_meta meta[] = {
        {"format", "pt"},
        {"note", "a \"quote\", a \\ backslash,\na newline, \xc3\xa9"},
    };
    hvq_tensor_info info[N];
    unsigned char data[N][32];
    char *dir = th_tmpdir("st-roundtrip");
    char path[4096];
    void *sink = NULL, *src;
    size_t i, flen, n_meta;
    unsigned char *file;
    uint64_t hlen;
    const hvq_meta *m;
    hvq_json_doc *doc;
    const hvq_json_value *root;
    uint64_t expect_off = 0;

    snprintf(path, sizeof path, "%s/out.safetensors", dir);
    memset(info, 0, sizeof info);
    for (i = 0; i < N; i++) {
        size_t b;
        info[i].name = decl[i].name;
        info[i].dtype = decl[i].dtype;
        info[i].dtype_name = decl[i].dtype_name;
        info[i].ndim = decl[i].ndim;
        memcpy(info[i].shape, decl[i].shape, sizeof decl[i].shape);
        info[i].nbytes = decl[i].nbytes;
        for (b = 0; b < sizeof data[i]; b++)
            data[i][b] = (unsigned char)(i * 37 + b * 11 + 1);
    }

    ck_assert_int_eq(st->sink_create(g_ctx, path, meta, 2, info, N, &sink),
                     HVQ_OK);
    ck_assert_ptr_nonnull(sink);
    for (i = 0; i < N; i++) {
        hvq_tensor t;
        t.info = info[i];
        t.data = data[i];
        ck_assert_msg(st->sink_write(g_ctx, sink, &t) == HVQ_OK, "%s",
                      hvq_ctx_error(g_ctx));
    }
    ck_assert_int_eq(st->sink_finish(g_ctx, sink), HVQ_OK);
    st->sink_close(g_ctx, sink);
    ck_assert_msg(!th_exists(path), "output visible before commit");
    ck_assert_msg(hvq_outputs_commit(g_ctx) == HVQ_OK, "%s",
                  hvq_ctx_error(g_ctx));
    ck_assert(th_exists(path));

    /* The raw layout: 8-byte length, header padded with spaces to a
     * multiple of 8, "__metadata__" first, then the tensors in declaration
     * order with contiguous offsets. */
    file = (unsigned char *)th_read_file(path, &flen);
    ck_assert_ptr_nonnull(file);
    hlen = 0;
    for (i = 8; i-- > 0;)
        hlen = (hlen << 8) | file[i];
    ck_assert_uint_eq(hlen % 8, 0);
    ck_assert_uint_eq((8 + hlen) % 8, 0);
    ck_assert_int_eq(file[8], '{');
    {
        size_t last = 8 + hlen - 1;
        while (file[last] == ' ')
            last--;
        ck_assert_int_eq(file[last], '}');
        ck_assert_uint_lt(8 + hlen - 1 - last, 8);
    }
    doc = hvq_json_parse((const char *)file + 8, hlen, HVQ_JSON_NO_DUPLICATES,
                         NULL);
    ck_assert_ptr_nonnull(doc);
    root = hvq_json_root(doc);
    ck_assert_uint_eq(hvq_json_count(root), N + 1);
    ck_assert_str_eq(root->members[0].key, "__metadata__");
    for (i = 0; i < N; i++) {
        const hvq_json_value *e = root->members[i + 1].value;
        const hvq_json_value *off = hvq_json_get(e, "data_offsets");
        uint64_t b, en;
        ck_assert_str_eq(root->members[i + 1].key, decl[i].name);
        ck_assert_int_eq(hvq_json_uint64(hvq_json_item(off, 0), &b), 0);
        ck_assert_int_eq(hvq_json_uint64(hvq_json_item(off, 1), &en), 0);
        ck_assert_uint_eq(b, expect_off);
        ck_assert_uint_eq(en - b, decl[i].nbytes);
        expect_off = en;
    }
    ck_assert_str_eq(hvq_json_string(hvq_json_get(root->members[5].value,
                                                  "dtype"),
                                     NULL),
                     "F8_E4M3");
    ck_assert_uint_eq(flen, 8 + hlen + expect_off);
    hvq_json_free(doc);
    free(file);

    /* Read it back. */
    src = open_ok(path);
    ck_assert_uint_eq(st->source_count(src), N);
    for (i = 0; i < N; i++) {
        hvq_tensor_info ti;
        hvq_tensor t;
        int d;
        ck_assert_int_eq(st->source_info(src, i, &ti), HVQ_OK);
        ck_assert_str_eq(ti.name, decl[i].name);
        ck_assert_int_eq(ti.dtype, decl[i].dtype);
        if (decl[i].dtype_name)
            ck_assert_str_eq(ti.dtype_name, decl[i].dtype_name);
        ck_assert_int_eq(ti.ndim, decl[i].ndim);
        for (d = 0; d < ti.ndim; d++)
            ck_assert_int_eq(ti.shape[d], decl[i].shape[d]);
        ck_assert_uint_eq(ti.nbytes, decl[i].nbytes);
        ck_assert_int_eq(st->source_read(g_ctx, src, i, &t), HVQ_OK);
        ck_assert_str_eq(t.info.name, decl[i].name);
        ck_assert(memcmp(t.data, data[i], decl[i].nbytes) == 0);
    }
    {
        hvq_tensor_info ti;
        ck_assert_int_eq(st->source_info(src, 0, &ti), HVQ_OK);
        ck_assert_str_eq(ti.dtype_name, "F32");
        ck_assert_int_eq(st->source_info(src, 2, &ti), HVQ_OK);
        ck_assert_str_eq(ti.dtype_name, "BF16");
        ck_assert_int_ne(st->source_info(src, N, &ti), HVQ_OK);
    }
    st->source_meta(src, &m, &n_meta);
    ck_assert_uint_eq(n_meta, 2);
    ck_assert_str_eq(m[0].key, "format");
    ck_assert_str_eq(m[0].value, "pt");
    ck_assert_str_eq(m[1].key, "note");
    ck_assert_str_eq(m[1].value, meta[1].value);
    close_src(src);

    /* The probe recognizes what we wrote. */
    file = (unsigned char *)th_read_file(path, &flen);
    ck_assert_int_eq(st->probe(path, file, flen < 64 ? flen : 64), 90);
    free(file);

    th_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(st_write_empty_and_no_meta)
{
    char *dir = th_tmpdir("st-empty");
    char path[4096];
    void *sink = NULL, *src;
    size_t n;
    char *file;
    const hvq_meta *m;

    snprintf(path, sizeof path, "%s/empty.safetensors", dir);
    ck_assert_int_eq(st->sink_create(g_ctx, path, NULL, 0, NULL, 0, &sink),
                     HVQ_OK);
    ck_assert_int_eq(st->sink_finish(g_ctx, sink), HVQ_OK);
    st->sink_close(g_ctx, sink);
    ck_assert_int_eq(hvq_outputs_commit(g_ctx), HVQ_OK);
    file = th_read_file(path, &n);
    ck_assert_ptr_nonnull(file);
    ck_assert_uint_eq(n, 16);
    ck_assert(memcmp(file, "\x08\0\0\0\0\0\0\0{}      ", 16) == 0);
    free(file);
    src = open_ok(path);
    ck_assert_uint_eq(st->source_count(src), 0);
    st->source_meta(src, &m, &n);
    ck_assert_uint_eq(n, 0);
    close_src(src);
    th_rmtree(dir);
    free(dir);
}
END_TEST

static hvq_tensor_info mk_info(const char *name, hvq_dtype dt,
                               const char *dtn, int64_t rows, int64_t cols,
                               uint64_t nbytes)
{
    hvq_tensor_info t;
    memset(&t, 0, sizeof t);
    t.name = name;
    t.dtype = dt;
    t.dtype_name = dtn;
    t.ndim = 2;
    t.shape[0] = rows;
    t.shape[1] = cols;
    t.nbytes = nbytes;
    return t;
}

/* A declaration the host or the safetensors sink refuses: no handle, and
 * the status expected. */
static void st_refused(const char *path, const hvq_meta *meta, size_t n_meta,
                       const hvq_tensor_info *info, hvq_status status)
{
    ck_assert_ptr_null(g_ctx->host->sink_open_params(g_ctx, "safetensors", path, NULL, meta,
                                                     n_meta, info, 2));
    ck_assert_int_eq(hvq_ctx_status(g_ctx), status);
}

START_TEST(st_sink_errors)
{
    char *dir = th_tmpdir("st-sinkerr");
    char path[4096];
    hvq_sink_handle *hs;
    hvq_tensor_info info[2];
    hvq_tensor t;
    float buf[16] = {0};
    hvq_meta dup_meta[2] = {{"k", "1"}, {"k", "2"}};

    snprintf(path, sizeof path, "%s/x.safetensors", dir);

    /* Declarations are validated before anything is opened: by the host
     * (what every format needs) and by the sink (what safetensors adds). */
    info[0] = mk_info("a", HVQ_DTYPE_F32, NULL, 2, 2, 16);
    info[1] = mk_info("a", HVQ_DTYPE_F32, NULL, 1, 2, 8);
    st_refused(path, NULL, 0, info, HVQ_E_INPUT);
    th_assert_contains(hvq_ctx_error(g_ctx), path);
    th_assert_contains(hvq_ctx_error(g_ctx), "'a' is declared twice");

    info[1] = mk_info("b", HVQ_DTYPE_F32, NULL, 3, 2, 8);
    st_refused(path, NULL, 0, info, HVQ_E_INPUT);
    th_assert_contains(hvq_ctx_error(g_ctx),
                       "tensor 'b': declared as 8 bytes but F32 [3, 2] "
                       "needs 24");

    info[1] = mk_info("b", HVQ_DTYPE_OPAQUE, "Q4_K", 1, 2, 8);
    st_refused(path, NULL, 0, info, HVQ_E_UNSUPPORTED);
    th_assert_contains(hvq_ctx_error(g_ctx), "dtype 'Q4_K'");

    info[1] = mk_info("b", HVQ_DTYPE_F32, NULL, -1, 2, 8);
    st_refused(path, NULL, 0, info, HVQ_E_INPUT);
    th_assert_contains(hvq_ctx_error(g_ctx), "negative");

    info[1] = mk_info("__metadata__", HVQ_DTYPE_F32, NULL, 1, 2, 8);
    st_refused(path, NULL, 0, info, HVQ_E_INPUT);

    info[1] = mk_info("b", HVQ_DTYPE_F32, NULL, 1, 2, 8);
    st_refused(path, dup_meta, 2, info, HVQ_E_INPUT);
    th_assert_contains(hvq_ctx_error(g_ctx), "metadata key 'k'");

    /* Writes out of order, or too few (checked by the host). */
    hs = g_ctx->host->sink_open_params(g_ctx, "safetensors", path, NULL, NULL, 0, info, 2);
    ck_assert_ptr_nonnull(hs);
    t.info = info[1];
    t.data = buf;
    ck_assert_int_eq(g_ctx->host->sink_write(g_ctx, hs, &t), HVQ_E_INTERNAL);
    th_assert_contains(hvq_ctx_error(g_ctx),
                       "expected tensor 1 of 2 to be 'a' (16 bytes), got "
                       "'b' (8 bytes)");
    t.info = info[0];
    t.info.nbytes = 12;
    ck_assert_int_eq(g_ctx->host->sink_write(g_ctx, hs, &t), HVQ_E_INTERNAL);
    t.info = info[0];
    ck_assert_int_eq(g_ctx->host->sink_write(g_ctx, hs, &t), HVQ_OK);
    ck_assert_int_eq(g_ctx->host->sink_finish(g_ctx, hs), HVQ_E_INTERNAL);
    th_assert_contains(hvq_ctx_error(g_ctx),
                       "only 1 of 2 declared tensors were written");
    t.info = info[1];
    ck_assert_int_eq(g_ctx->host->sink_write(g_ctx, hs, &t), HVQ_OK);
    ck_assert_int_eq(g_ctx->host->sink_write(g_ctx, hs, &t), HVQ_E_INTERNAL);
    th_assert_contains(hvq_ctx_error(g_ctx), "already written");
    g_ctx->host->sink_close(g_ctx, hs);
    hvq_outputs_abort(g_ctx);
    ck_assert(!th_exists(path));
    th_rmtree(dir);
    free(dir);
}
END_TEST

/* The sharded fixture: tensors in shard order, by offset within a shard. */
static void check_sharded(void *src)
{
    static const struct {
        const char *name;
        hvq_dtype dtype;
        int64_t r, c;
    } want[] = {
        {"model.layers.0.w", HVQ_DTYPE_F16, 2, 2},
        {"model.embed.weight", HVQ_DTYPE_F32, 4, 3},
        {"model.layers.1.w", HVQ_DTYPE_BF16, 2, 2},
        {"lm_head.weight", HVQ_DTYPE_F32, 3, 4},
    };
    const hvq_meta *m;
    size_t n, i;
    hvq_tensor t;

    ck_assert_uint_eq(st->source_count(src), 4);
    for (i = 0; i < 4; i++) {
        ck_assert_int_eq(st->source_read(g_ctx, src, i, &t), HVQ_OK);
        ck_assert_str_eq(t.info.name, want[i].name);
        ck_assert_int_eq(t.info.dtype, want[i].dtype);
        ck_assert_int_eq(t.info.ndim, 2);
        ck_assert_int_eq(t.info.shape[0], want[i].r);
        ck_assert_int_eq(t.info.shape[1], want[i].c);
    }
    /* Values: embed is 0..11, lm_head 300..311 (F32); layer 1 is BF16
     * 200..203 (0x4348 = 200.0). */
    ck_assert_int_eq(st->source_read(g_ctx, src, 1, &t), HVQ_OK);
    for (i = 0; i < 12; i++)
        ck_assert(((const float *)t.data)[i] == (float)i);
    ck_assert_int_eq(st->source_read(g_ctx, src, 3, &t), HVQ_OK);
    ck_assert(((const float *)t.data)[11] == 311.0f);
    ck_assert_int_eq(st->source_read(g_ctx, src, 2, &t), HVQ_OK);
    ck_assert_uint_eq(((const uint16_t *)t.data)[0], 0x4348);

    /* The model metadata is the first shard's, not the index's. */
    st->source_meta(src, &m, &n);
    ck_assert_uint_eq(n, 2);
    ck_assert_str_eq(m[0].key, "format");
    ck_assert_str_eq(m[0].value, "pt");
    ck_assert_str_eq(m[1].key, "shard");
    ck_assert_str_eq(m[1].value, "1");
}

START_TEST(st_sharded_dir)
{
    void *src = open_ok(fixture("sharded"));
    check_sharded(src);
    close_src(src);
    src = open_ok(fixture("sharded/model.safetensors.index.json"));
    check_sharded(src);
    close_src(src);
}
END_TEST

START_TEST(st_misc_dtypes)
{
    void *src = open_ok(fixture("misc.safetensors"));
    hvq_tensor t;
    ck_assert_uint_eq(st->source_count(src), 4);
    /* Data order: fp8, scalar, empty, mask. */
    ck_assert_int_eq(st->source_read(g_ctx, src, 0, &t), HVQ_OK);
    ck_assert_str_eq(t.info.name, "fp8");
    ck_assert_int_eq(t.info.dtype, HVQ_DTYPE_OPAQUE);
    ck_assert_str_eq(t.info.dtype_name, "F8_E4M3");
    ck_assert_uint_eq(t.info.nbytes, 4);
    ck_assert_int_eq(((const unsigned char *)t.data)[1], 0x40);
    ck_assert_int_eq(st->source_read(g_ctx, src, 1, &t), HVQ_OK);
    ck_assert_str_eq(t.info.name, "scalar");
    ck_assert_int_eq(t.info.dtype, HVQ_DTYPE_I64);
    ck_assert_int_eq(t.info.ndim, 0);
    ck_assert_uint_eq(t.info.nbytes, 8);
    ck_assert_int_eq(st->source_read(g_ctx, src, 2, &t), HVQ_OK);
    ck_assert_str_eq(t.info.name, "empty");
    ck_assert_uint_eq(t.info.nbytes, 0);
    ck_assert_int_eq(st->source_read(g_ctx, src, 3, &t), HVQ_OK);
    ck_assert_str_eq(t.info.name, "mask");
    ck_assert_int_eq(t.info.dtype, HVQ_DTYPE_BOOL);
    close_src(src);
}
END_TEST

START_TEST(st_probe)
{
    const char *shard = fixture("sharded/model-00001-of-00002.safetensors");
    size_t n;
    char *head = th_read_file(shard, &n);
    char *dir;
    char path[4096];

    ck_assert_ptr_nonnull(head);
    ck_assert_int_eq(st->probe(shard, (unsigned char *)head, n), 90);
    ck_assert_int_eq(st->probe(shard, (unsigned char *)head, 9), 90);
    /* Too little head: the plugin reads nothing itself (the host's
     * detection gives up to 4096 bytes); the name alone gives a low score. */
    ck_assert_int_eq(st->probe(shard, (unsigned char *)head, 4), 10);
    ck_assert_int_eq(st->probe(fixture("sharded"), NULL, 0), 90);
    ck_assert_int_eq(
        st->probe(fixture("sharded/model.safetensors.index.json"), NULL, 0),
        90);
    ck_assert_int_eq(st->probe(fixture("make_fixtures.py"),
                               (const unsigned char *)"#!/usr/bin/env", 14),
                     0);
    free(head);
    /* A damaged file named *.safetensors gets a low score only, so that
     * opening it reports what is wrong. */
    ck_assert_int_eq(st->probe(fixture("bad/header-huge.safetensors"), NULL,
                               0),
                     10);
    head = th_read_file(fixture("bad/header-huge.safetensors"), &n);
    ck_assert_int_eq(st->probe(fixture("bad/header-huge.safetensors"),
                               (unsigned char *)head, n), 10);
    free(head);
    ck_assert_int_eq(st->probe(fixture("bad/truncated.safetensors"), NULL,
                               0),
                     10);
    ck_assert_int_eq(st->probe(fixture("bad"), NULL, 0), 0);

    /* Directories: one file → yes; two files without index → no. */
    dir = th_tmpdir("st-probe");
    ck_assert_int_eq(st->probe(dir, NULL, 0), 0);
    head = th_read_file(fixture("misc.safetensors"), &n);
    snprintf(path, sizeof path, "%s/a.safetensors", dir);
    th_write_file(path, head, n);
    ck_assert_int_eq(st->probe(dir, NULL, 0), 90);
    snprintf(path, sizeof path, "%s/b.safetensors", dir);
    th_write_file(path, head, n);
    ck_assert_int_eq(st->probe(dir, NULL, 0), 0);
    free(head);
    th_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(st_directory_choices)
{
    char *dir = th_tmpdir("st-dir");
    char path[4096];
    size_t n;
    char *blob = th_read_file(fixture("misc.safetensors"), &n);
    void *state = (void *)1;

    ck_assert_ptr_nonnull(blob);
    ck_assert_int_eq(st->source_open(g_ctx, dir, &state), HVQ_E_INPUT);
    ck_assert_ptr_null(state);
    th_assert_contains(hvq_ctx_error(g_ctx), dir);
    th_assert_contains(hvq_ctx_error(g_ctx), "no *.safetensors file");

    snprintf(path, sizeof path, "%s/only.safetensors", dir);
    th_write_file(path, blob, n);
    state = open_ok(dir);
    ck_assert_uint_eq(st->source_count(state), 4);
    close_src(state);

    snprintf(path, sizeof path, "%s/second.safetensors", dir);
    th_write_file(path, blob, n);
    ck_assert_int_eq(st->source_open(g_ctx, dir, &state), HVQ_E_INPUT);
    th_assert_contains(hvq_ctx_error(g_ctx),
                       "2 *.safetensors files and no "
                       "model.safetensors.index.json");
    free(blob);
    th_rmtree(dir);
    free(dir);

    ck_assert_int_eq(st->source_open(g_ctx, fixture("nonexistent.safetensors"),
                                     &state),
                     HVQ_E_INPUT);
    th_assert_contains(hvq_ctx_error(g_ctx), "nonexistent.safetensors");
    th_assert_contains(hvq_ctx_error(g_ctx), "cannot open");
}
END_TEST

typedef struct bad_file {
    const char *file;
    const char *reason;
    const char *file_in_msg; /* NULL: the opened file itself */
} bad_file;

static const bad_file bad_files[] = {
    {"bad/truncated.safetensors",
     "truncated: the file is 5 bytes, too short for the 8-byte header", NULL},
    {"bad/header-cut.safetensors",
     "header length 64 goes beyond the end of the file (30 bytes", NULL},
    {"bad/header-beyond.safetensors",
     "header length 4096 goes beyond the end of the file", NULL},
    {"bad/header-huge.safetensors",
     "header length 200000000 exceeds the limit of 100000000 bytes", NULL},
    {"bad/bad-json.safetensors",
     "bad JSON in header: expected ',' or '}', found '\"' at byte 30", NULL},
    {"bad/invalid-utf8.safetensors", "bad JSON in header: invalid UTF-8",
     NULL},
    {"bad/not-object.safetensors", "header is not a JSON object", NULL},
    {"bad/overlap.safetensors",
     "tensor 'b': data_offsets [8, 24] overlap tensor 'a' [0, 16]", NULL},
    {"bad/gap.safetensors",
     "tensor 'b': gap of 4 bytes before its data_offsets [20, 36]", NULL},
    {"bad/out-of-bounds.safetensors",
     "tensor 'b': data_offsets [16, 32] are out of bounds: the data "
     "section has 24 bytes",
     NULL},
    {"bad/size-mismatch.safetensors",
     "tensor 'a.weight': data_offsets [0, 100] hold 100 bytes but F32 "
     "[5, 6] needs 120",
     NULL},
    {"bad/shape-overflow.safetensors",
     "tensor 'big': shape overflow: the non-zero dimensions of F32 "
     "[4611686018427387904, 4611686018427387904] multiply past 63 bits",
     NULL},
    {"bad/negative-dim.safetensors",
     "tensor 'neg': shape dimension 0 is negative (-1)", NULL},
    {"bad/too-many-dims.safetensors",
     "tensor 'deep': shape has 9 dimensions, more than the maximum of 8",
     NULL},
    {"bad/unknown-dtype.safetensors", "tensor 'q': unknown dtype 'Q4_K'",
     NULL},
    {"bad/duplicate-name.safetensors", "duplicate tensor name 'dup'", NULL},
    {"bad/meta-non-string.safetensors",
     "\"__metadata__\" value of 'epoch' is a number, expected a string",
     NULL},
    {"bad/trailing-data.safetensors",
     "the data section has 20 bytes but the tensors cover 16", NULL},
    {"sharded-missing-shard",
     "shard 'model-00002-of-00002.safetensors' named in \"weight_map\" "
     "cannot be opened",
     "sharded-missing-shard/model.safetensors.index.json"},
    {"sharded-absent-tensor",
     "tensor 'model.extra.weight' is mapped to shard "
     "'model-00001-of-00002.safetensors' but is absent from that shard",
     "sharded-absent-tensor/model.safetensors.index.json"},
    {"sharded-unlisted/model.safetensors.index.json",
     "tensor 'lm_head.weight' is not listed in the \"weight_map\"",
     "sharded-unlisted/model-00002-of-00002.safetensors"},
};

START_TEST(st_corrupt)
{
    const bad_file *b = &bad_files[_i];
    const char *path = fixture(b->file);
    const char *where = b->file_in_msg ? fixture(b->file_in_msg) : path;
    void *state = (void *)1;
    const char *msg;
    hvq_status s = st->source_open(g_ctx, path, &state);

    msg = hvq_ctx_error(g_ctx);
    ck_assert_msg(s == HVQ_E_INPUT, "%s: status %d (%s)", b->file, s, msg);
    ck_assert_ptr_null(state);
    /* The message starts with the file and says what is wrong. */
    ck_assert_msg(strncmp(msg, where, strlen(where)) == 0,
                  "message does not start with %s:\n%s", where, msg);
    th_assert_contains(msg, b->reason);
}
END_TEST

static const char *shared_model(const char *rel)
{
    static char path[4096];
    const char *base = th_shared_data();
    if (base == NULL)
        return NULL;
    snprintf(path, sizeof path, "%s/stories260K/%s", base, rel);
    return th_exists(path) ? path : NULL;
}

static void check_real(const char *rel, hvq_dtype dtype, const char *dtn)
{
    const char *path = shared_model(rel);
    void *src;
    size_t i, n, found = 0, n_meta;
    uint64_t total = 0;
    const hvq_meta *m;
    size_t head_n;
    char *head;

    if (path == NULL) {
        fprintf(stderr, "skipped: %s not available\n", rel);
        return;
    }
    head = th_read_file(path, &head_n);
    ck_assert_int_eq(st->probe(path, (unsigned char *)head,
                               head_n < 4096 ? head_n : 4096),
                     90);
    free(head);
    src = open_ok(path);
    n = st->source_count(src);
    ck_assert_uint_eq(n, 47);
    for (i = 0; i < n; i++) {
        hvq_tensor t;
        ck_assert_int_eq(st->source_read(g_ctx, src, i, &t), HVQ_OK);
        ck_assert_int_eq(t.info.dtype, dtype);
        ck_assert_str_eq(t.info.dtype_name, dtn);
        total += hvq_numel(&t.info);
        if (strcmp(t.info.name, "model.layers.0.self_attn.q_proj.weight") ==
            0) {
            found++;
            ck_assert_int_eq(t.info.ndim, 2);
            ck_assert_int_eq(t.info.shape[0], 64);
            ck_assert_int_eq(t.info.shape[1], 64);
        }
    }
    ck_assert_uint_eq(found, 1);
    ck_assert_uint_eq(total, 260032);
    st->source_meta(src, &m, &n_meta);
    ck_assert_uint_eq(n_meta, 1);
    ck_assert_str_eq(m[0].key, "format");
    ck_assert_str_eq(m[0].value, "pt");
    close_src(src);
}

START_TEST(st_real_f32)
{
    check_real("hf/model.safetensors", HVQ_DTYPE_F32, "F32");
    /* The directory form picks the single file. */
    if (shared_model("hf") != NULL) {
        void *src = open_ok(shared_model("hf"));
        ck_assert_uint_eq(st->source_count(src), 47);
        close_src(src);
    }
}
END_TEST

START_TEST(st_real_bf16)
{
    check_real("hf-bf16/model.safetensors", HVQ_DTYPE_BF16, "BF16");
}
END_TEST

/* Real model → write → read: every byte identical. */
START_TEST(st_real_rewrite)
{
    const char *path = shared_model("hf-bf16/model.safetensors");
    char *dir, out[4096];
    void *src, *sink = NULL, *back;
    size_t i, n, n_meta;
    hvq_tensor_info *info;
    const hvq_meta *m;

    if (path == NULL) {
        fprintf(stderr, "skipped: shared model not available\n");
        return;
    }
    src = open_ok(path);
    n = st->source_count(src);
    info = calloc(n, sizeof *info);
    ck_assert_ptr_nonnull(info);
    for (i = 0; i < n; i++)
        ck_assert_int_eq(st->source_info(src, i, &info[i]), HVQ_OK);
    st->source_meta(src, &m, &n_meta);
    dir = th_tmpdir("st-rewrite");
    snprintf(out, sizeof out, "%s/copy.safetensors", dir);
    ck_assert_int_eq(st->sink_create(g_ctx, out, m, n_meta, info, n, &sink),
                     HVQ_OK);
    for (i = 0; i < n; i++) {
        hvq_tensor t;
        ck_assert_int_eq(st->source_read(g_ctx, src, i, &t), HVQ_OK);
        ck_assert_int_eq(st->sink_write(g_ctx, sink, &t), HVQ_OK);
    }
    ck_assert_int_eq(st->sink_finish(g_ctx, sink), HVQ_OK);
    st->sink_close(g_ctx, sink);
    ck_assert_int_eq(hvq_outputs_commit(g_ctx), HVQ_OK);

    back = open_ok(out);
    ck_assert_uint_eq(st->source_count(back), n);
    for (i = 0; i < n; i++) {
        hvq_tensor a, b;
        ck_assert_int_eq(st->source_read(g_ctx, src, i, &a), HVQ_OK);
        ck_assert_int_eq(st->source_read(g_ctx, back, i, &b), HVQ_OK);
        ck_assert_str_eq(a.info.name, b.info.name);
        ck_assert_uint_eq(a.info.nbytes, b.info.nbytes);
        ck_assert(memcmp(a.data, b.data, a.info.nbytes) == 0);
    }
    close_src(back);
    close_src(src);
    free(info);
    th_rmtree(dir);
    free(dir);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("safetensors");
    TCase *tp = tcase_create("plugin");


    tcase_add_checked_fixture(tp, st_setup, st_teardown);
    tcase_add_test(tp, st_descriptor);
    tcase_add_test(tp, st_round_trip);
    tcase_add_test(tp, st_write_empty_and_no_meta);
    tcase_add_test(tp, st_sink_errors);
    tcase_add_test(tp, st_sharded_dir);
    tcase_add_test(tp, st_misc_dtypes);
    tcase_add_test(tp, st_probe);
    tcase_add_test(tp, st_directory_choices);
    tcase_add_loop_test(tp, st_corrupt, 0,
                        (int)(sizeof bad_files / sizeof bad_files[0]));
    tcase_add_test(tp, st_real_f32);
    tcase_add_test(tp, st_real_bf16);
    tcase_add_test(tp, st_real_rewrite);
    suite_add_tcase(s, tp);
    return s;
}

int main(void) { return th_run_suite(suite()); }
