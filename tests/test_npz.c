/* Tests of the npz plugin: numpy-written fixtures (tests/data/npz, made by
 * make_fixtures.py), archives and NPY members built here with libarchive,
 * write -> read round trips (checked with numpy when it is installed), the
 * real model in ../shared/data when present, and runs of the real binary. */
#include "config.h"

#include "dtype.h"
#include "harness.h"

#include <archive.h>
#include <archive_entry.h>
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static hvq_ctx *g_ctx;
static hvq_registry *g_reg;
static const hvq_plugin *np;

static void np_setup(void)
{
    const hvq_loaded_plugin *lp;
    g_ctx = th_ctx();
    g_reg = th_registry(g_ctx);
    lp = hvq_registry_find(g_reg, HVQ_KIND_SOURCE, "npz");
    ck_assert_msg(lp != NULL, "npz plugin not loaded");
    np = &lp->desc;
}

static void np_teardown(void)
{
    hvq_outputs_abort(g_ctx);
    hvq_ctx_free(g_ctx);
    hvq_registry_free(g_reg);
    g_ctx = NULL;
    g_reg = NULL;
    np = NULL;
}

static const char *fixture(const char *rel)
{
    static char buf[8][4096];
    static int k;
    char *b = buf[k++ % 8];
    snprintf(b, 4096, "tests/data/npz/%s", rel);
    return th_src(b);
}

static void *open_ok(const char *path)
{
    void *state = NULL;
    hvq_status s = np->source_open(g_ctx, path, &state);
    ck_assert_msg(s == HVQ_OK, "open %s: %d %s", path, s,
                  hvq_ctx_error(g_ctx));
    ck_assert_ptr_nonnull(state);
    return state;
}

static void close_src(void *state)
{
    np->source_close(g_ctx, state);
}

/* Index of the tensor called name; fails the test when absent. */
static size_t find(void *src, const char *name)
{
    size_t i, n = np->source_count(src);
    for (i = 0; i < n; i++) {
        hvq_tensor_info ti;
        ck_assert_int_eq(np->source_info(src, i, &ti), HVQ_OK);
        if (strcmp(ti.name, name) == 0)
            return i;
    }
    ck_abort_msg("tensor '%s' not found", name);
    return 0;
}

/* Reads tensor name, checking its dtype and shape. */
static hvq_tensor read_named(void *src, const char *name, hvq_dtype dt,
                             int ndim, int64_t d0, int64_t d1, int64_t d2)
{
    hvq_tensor t;
    int64_t want[3] = {d0, d1, d2};
    int d;
    size_t i = find(src, name);
    hvq_status s = np->source_read(g_ctx, src, i, &t);
    ck_assert_msg(s == HVQ_OK, "read %s: %s", name, hvq_ctx_error(g_ctx));
    ck_assert_str_eq(t.info.name, name);
    ck_assert_int_eq(t.info.dtype, dt);
    ck_assert_int_eq(t.info.ndim, ndim);
    for (d = 0; d < ndim && d < 3; d++)
        ck_assert_int_eq(t.info.shape[d], want[d]);
    ck_assert_uint_eq(t.info.nbytes, hvq_numel(&t.info) * hvq_dtype_size(dt));
    ck_assert(t.data != NULL);
    return t;
}

/* ------------------------------------------------------------------------
 * Building archives and NPY members
 * ---------------------------------------------------------------------- */
typedef struct zmember {
    const char *name;
    const void *data;
    size_t len;
    int dir;
} zmember;

/* A zip of the members, with libarchive's writer (deflated or stored). */
static void make_zip(const char *path, int deflate, const zmember *m,
                     size_t n)
{
    struct archive *a = archive_write_new();
    size_t i;
    ck_assert_ptr_nonnull(a);
    ck_assert_int_eq(archive_write_set_format_zip(a), ARCHIVE_OK);
    ck_assert_int_eq(deflate ? archive_write_zip_set_compression_deflate(a)
                             : archive_write_zip_set_compression_store(a),
                     ARCHIVE_OK);
    archive_write_set_bytes_in_last_block(a, 1);
    ck_assert_int_eq(archive_write_open_filename(a, path), ARCHIVE_OK);
    for (i = 0; i < n; i++) {
        struct archive_entry *e = archive_entry_new();
        archive_entry_set_pathname(e, m[i].name);
        archive_entry_set_filetype(e, m[i].dir ? AE_IFDIR : AE_IFREG);
        archive_entry_set_perm(e, 0644);
        archive_entry_set_size(e, (la_int64_t)m[i].len);
        ck_assert_int_eq(archive_write_header(a, e), ARCHIVE_OK);
        if (m[i].len > 0)
            ck_assert_int_eq(archive_write_data(a, m[i].data, m[i].len),
                             (la_ssize_t)m[i].len);
        archive_entry_free(e);
    }
    ck_assert_int_eq(archive_write_close(a), ARCHIVE_OK);
    archive_write_free(a);
}

/* An NPY file: magic, version major.minor, the header text exactly as
 * given (hlen bytes), then dlen bytes of data (zeros when data is NULL). */
static unsigned char *npy_raw(int major, int minor, const char *header,
                              size_t hlen, const void *data, size_t dlen,
                              size_t *len)
{
    size_t lb = major == 1 ? 2 : 4, i, n = 8 + lb + hlen + dlen;
    unsigned char *b = calloc(1, n ? n : 1);
    ck_assert_ptr_nonnull(b);
    memcpy(b, "\x93NUMPY", 6);
    b[6] = (unsigned char)major;
    b[7] = (unsigned char)minor;
    for (i = 0; i < lb; i++)
        b[8 + i] = (unsigned char)(hlen >> (8 * i));
    memcpy(b + 8 + lb, header, hlen);
    if (data != NULL)
        memcpy(b + 8 + lb + hlen, data, dlen);
    *len = n;
    return b;
}

/* An NPY file with the dict padded as numpy pads it (spaces and '\n' up to
 * a multiple of 64). */
static unsigned char *npy_make(int major, const char *dict, const void *data,
                               size_t dlen, size_t *len)
{
    size_t lb = major == 1 ? 2 : 4, dl = strlen(dict);
    size_t total = 8 + lb + dl + 1, hlen;
    char *h;
    unsigned char *b;
    total = (total + 63) / 64 * 64;
    hlen = total - 8 - lb;
    h = malloc(hlen);
    ck_assert_ptr_nonnull(h);
    memcpy(h, dict, dl);
    memset(h + dl, ' ', hlen - dl - 1);
    h[hlen - 1] = '\n';
    b = npy_raw(major, 0, h, hlen, data, dlen, len);
    free(h);
    return b;
}

/* A one-member archive a.npy holding the given bytes. */
static void zip_one(const char *path, const void *member, size_t len,
                    int deflate)
{
    zmember m = {"a.npy", member, len, 0};
    make_zip(path, deflate, &m, 1);
}

static char *tmpfile_in(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    ck_assert_ptr_nonnull(p);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

/* Expects opening path to fail with HVQ_E_INPUT, a message that starts
 * with the path and contains reason. */
static void expect_open_error(const char *path, const char *reason)
{
    void *state = (void *)1;
    const char *msg;
    hvq_status s = np->source_open(g_ctx, path, &state);
    msg = hvq_ctx_error(g_ctx);
    ck_assert_msg(s == HVQ_E_INPUT, "%s: status %d (%s), want %s", path, s,
                  msg, reason);
    ck_assert_ptr_null(state);
    ck_assert_msg(strncmp(msg, path, strlen(path)) == 0 &&
                      strncmp(msg + strlen(path), ": ", 2) == 0,
                  "message does not start with %s:\n%s", path, msg);
    th_assert_contains(msg, reason);
}

/* ------------------------------------------------------------------------
 * Descriptor and probe
 * ---------------------------------------------------------------------- */
START_TEST(npz_descriptor)
{
    ck_assert_str_eq(np->name, "npz");
    ck_assert_str_eq(np->version, "1.0.0");
    ck_assert_str_eq(np->license, "MIT");
    ck_assert_uint_eq(np->kinds, HVQ_KIND_SOURCE | HVQ_KIND_SINK);
    ck_assert_str_eq(np->extensions, ".npz");
    ck_assert_ptr_nonnull(np->sink_create_params);
    ck_assert_ptr_nonnull(np->params);
    ck_assert_str_eq(np->params[0].name, "compress");
    ck_assert_int_eq(np->params[0].type, HVQ_PARAM_BOOL);
    ck_assert_str_eq(np->params[0].default_value, "false");
    ck_assert_ptr_null(np->params[1].name);
    ck_assert_ptr_nonnull(hvq_registry_find(g_reg, HVQ_KIND_SINK, "npz"));
}
END_TEST

START_TEST(npz_probe)
{
    char *dir = th_tmpdir("npz-probe");
    char *p;
    size_t n;
    char *head = th_read_file(fixture("numpy.npz"), &n);

    ck_assert_ptr_nonnull(head);
    ck_assert_int_eq(np->probe(fixture("numpy.npz"), (unsigned char *)head,
                               n < 4096 ? n : 4096),
                     60);
    /* No head: the plugin reads nothing itself (the host's detection
     * gives the head); the name alone gives a low score. */
    ck_assert_int_eq(np->probe(fixture("numpy.npz"), NULL, 0), 10);
    ck_assert_ptr_eq(&hvq_registry_detect(g_reg, g_ctx, fixture("empty.npz"))->desc, np);
    /* A zip by another name. */
    p = tmpfile_in(dir, "model.zip");
    th_write_file(p, head, n);
    ck_assert_int_eq(np->probe(p, (unsigned char *)head, 64), 40);
    free(p);
    free(head);
    /* A lone .npy, whatever its name. */
    head = th_read_file(fixture("hessian.npy"), &n);
    ck_assert_int_eq(np->probe(fixture("hessian.npy"), (unsigned char *)head,
                               n),
                     90);
    p = tmpfile_in(dir, "h.bin");
    th_write_file(p, head, n);
    ck_assert_ptr_eq(&hvq_registry_detect(g_reg, g_ctx, p)->desc, np);
    free(p);
    free(head);
    /* Only the name: low, so that opening reports what is wrong. */
    p = tmpfile_in(dir, "broken.npz");
    th_write_file(p, "hello", 5);
    ck_assert_int_eq(np->probe(p, (const unsigned char *)"hello", 5), 10);
    free(p);
    p = tmpfile_in(dir, "other.txt");
    th_write_file(p, "hello", 5);
    ck_assert_int_eq(np->probe(p, (const unsigned char *)"hello", 5), 0);
    free(p);
    ck_assert_int_eq(np->probe(dir, NULL, 0), 0);
    th_rmtree(dir);
    free(dir);
}
END_TEST

/* ------------------------------------------------------------------------
 * numpy-written fixtures
 * ---------------------------------------------------------------------- */
static void check_numpy_fixture(void *src)
{
    hvq_tensor t;
    const float *f;
    const double *d;
    const uint16_t *h;
    int k;

    ck_assert_uint_eq(np->source_count(src), 21);
    t = read_named(src, "w.f32", HVQ_DTYPE_F32, 2, 3, 4, 0);
    ck_assert_str_eq(t.info.dtype_name, "<f4");
    f = t.data;
    for (k = 0; k < 12; k++)
        ck_assert(f[k] == k * 0.5f - 1);
    t = read_named(src, "w.f16", HVQ_DTYPE_F16, 2, 2, 3, 0);
    ck_assert_str_eq(t.info.dtype_name, "<f2");
    h = t.data;
    for (k = 0; k < 6; k++)
        ck_assert(hvq_f16_to_f32(h[k]) == (float)(k - 2));
    t = read_named(src, "w.f64", HVQ_DTYPE_F64, 1, 3, 0, 0);
    d = t.data;
    ck_assert(d[0] == 1.5 && d[1] == -2.25 && d[2] == 1e300);
    t = read_named(src, "i8", HVQ_DTYPE_I8, 1, 4, 0, 0);
    ck_assert_str_eq(t.info.dtype_name, "|i1");
    ck_assert_int_eq(((const int8_t *)t.data)[0], -2);
    ck_assert_int_eq(((const int8_t *)t.data)[3], 1);
    t = read_named(src, "u8", HVQ_DTYPE_U8, 1, 4, 0, 0);
    ck_assert_uint_eq(((const uint8_t *)t.data)[3], 253);
    t = read_named(src, "i16", HVQ_DTYPE_I16, 1, 3, 0, 0);
    ck_assert_int_eq(((const int16_t *)t.data)[2], -600);
    t = read_named(src, "u16", HVQ_DTYPE_U16, 1, 3, 0, 0);
    ck_assert_uint_eq(((const uint16_t *)t.data)[2], 65002);
    t = read_named(src, "i32", HVQ_DTYPE_I32, 1, 3, 0, 0);
    ck_assert_int_eq(((const int32_t *)t.data)[2], -200000);
    t = read_named(src, "u32", HVQ_DTYPE_U32, 1, 3, 0, 0);
    ck_assert_uint_eq(((const uint32_t *)t.data)[2], 4000000002u);
    t = read_named(src, "i64", HVQ_DTYPE_I64, 1, 2, 0, 0);
    ck_assert(((const int64_t *)t.data)[1] == -1000000000000LL);
    t = read_named(src, "u64", HVQ_DTYPE_U64, 1, 2, 0, 0);
    ck_assert(((const uint64_t *)t.data)[0] == (uint64_t)1 << 63);
    ck_assert(((const uint64_t *)t.data)[1] == UINT64_MAX);
    t = read_named(src, "mask", HVQ_DTYPE_BOOL, 1, 5, 0, 0);
    ck_assert_str_eq(t.info.dtype_name, "|b1");
    for (k = 0; k < 5; k++)
        ck_assert_int_eq(((const uint8_t *)t.data)[k], k % 2 == 0);
    t = read_named(src, "scalar", HVQ_DTYPE_F32, 0, 0, 0, 0);
    ck_assert_uint_eq(t.info.nbytes, 4);
    ck_assert(*(const float *)t.data == 3.5f);
    t = read_named(src, "empty", HVQ_DTYPE_F32, 2, 0, 4, 0);
    ck_assert_uint_eq(t.info.nbytes, 0);
    /* Fortran order: C-order element (i, j) of a 2x3 is i*3 + j. */
    t = read_named(src, "fortran2d", HVQ_DTYPE_F32, 2, 2, 3, 0);
    f = t.data;
    for (k = 0; k < 6; k++)
        ck_assert_msg(f[k] == (float)k, "fortran2d[%d] = %g", k, f[k]);
    t = read_named(src, "fortran3d", HVQ_DTYPE_I32, 3, 2, 3, 4);
    for (k = 0; k < 24; k++)
        ck_assert_msg(((const int32_t *)t.data)[k] == k, "fortran3d[%d] = %d",
                      k, ((const int32_t *)t.data)[k]);
    /* Big-endian: swapped to little-endian, dtype_name says so. */
    t = read_named(src, "big.f32", HVQ_DTYPE_F32, 1, 5, 0, 0);
    ck_assert_str_eq(t.info.dtype_name, "<f4");
    for (k = 0; k < 5; k++)
        ck_assert(((const float *)t.data)[k] == k * 0.5f);
    t = read_named(src, "big.i64", HVQ_DTYPE_I64, 1, 3, 0, 0);
    ck_assert(((const int64_t *)t.data)[0] == -1);
    ck_assert(((const int64_t *)t.data)[2] == 1);
    t = read_named(src, "big.fortran", HVQ_DTYPE_U16, 2, 3, 2, 0);
    for (k = 0; k < 6; k++)
        ck_assert_uint_eq(((const uint16_t *)t.data)[k], k + 1);
    t = read_named(src, "model.layers.0.mlp.down_proj.weight", HVQ_DTYPE_F32,
                   2, 2, 4, 0);
    ck_assert(((const float *)t.data)[7] == 0.875f);
    /* A UTF-8 member name (flagged as such in the zip). */
    t = read_named(src, "caf\xc3\xa9", HVQ_DTYPE_F32, 1, 2, 0, 0);
    ck_assert(((const float *)t.data)[1] == 1.0f);
}

START_TEST(npz_numpy_stored)
{
    void *src = open_ok(fixture("numpy.npz"));
    const hvq_meta *m = (const hvq_meta *)1;
    size_t n = 1;
    hvq_tensor_info ti;
    check_numpy_fixture(src);
    /* Archive order. */
    ck_assert_int_eq(np->source_info(src, 0, &ti), HVQ_OK);
    ck_assert_str_eq(ti.name, "w.f32");
    ck_assert_int_ne(np->source_info(src, 21, &ti), HVQ_OK);
    np->source_meta(src, &m, &n);
    ck_assert_uint_eq(n, 0);
    close_src(src);
}
END_TEST

START_TEST(npz_numpy_compressed)
{
    void *src = open_ok(fixture("numpy-compressed.npz"));
    check_numpy_fixture(src);
    close_src(src);
}
END_TEST

/* Reads in any order: forward, backward (the archive is reopened), the
 * same tensor twice. */
START_TEST(npz_read_any_order)
{
    static const char *const files[] = {"numpy.npz", "numpy-compressed.npz"};
    static const size_t order[] = {20, 3, 3, 0, 15, 14, 20, 1};
    int f;
    for (f = 0; f < 2; f++) {
        void *src = open_ok(fixture(files[f]));
        size_t i, n = np->source_count(src);
        unsigned char **ref = calloc(n, sizeof *ref);
        ck_assert_ptr_nonnull(ref);
        for (i = 0; i < n; i++) {
            hvq_tensor t;
            ck_assert_int_eq(np->source_read(g_ctx, src, i, &t), HVQ_OK);
            ref[i] = malloc(t.info.nbytes + 1);
            memcpy(ref[i], t.data, t.info.nbytes);
        }
        for (i = 0; i < sizeof order / sizeof order[0]; i++) {
            hvq_tensor t;
            ck_assert_int_eq(np->source_read(g_ctx, src, order[i], &t),
                             HVQ_OK);
            ck_assert(memcmp(t.data, ref[order[i]], t.info.nbytes) == 0);
        }
        ck_assert_int_eq(np->source_read(g_ctx, src, n, NULL) != HVQ_OK, 1);
        for (i = 0; i < n; i++)
            free(ref[i]);
        free(ref);
        close_src(src);
    }
}
END_TEST

START_TEST(npz_header_versions)
{
    void *src = open_ok(fixture("versions.npz"));
    hvq_tensor t;
    int k;
    ck_assert_uint_eq(np->source_count(src), 2);
    /* NPY 2.0, C order. */
    t = read_named(src, "v2", HVQ_DTYPE_I16, 2, 2, 3, 0);
    for (k = 0; k < 6; k++)
        ck_assert_int_eq(((const int16_t *)t.data)[k], 2 * k);
    /* NPY 3.0, big-endian and Fortran order at once. */
    t = read_named(src, "v3", HVQ_DTYPE_F64, 2, 3, 2, 0);
    for (k = 0; k < 6; k++)
        ck_assert(((const double *)t.data)[k] == (double)k);
    close_src(src);
}
END_TEST

START_TEST(npz_empty_archive)
{
    void *src = open_ok(fixture("empty.npz"));
    ck_assert_uint_eq(np->source_count(src), 0);
    close_src(src);
}
END_TEST

START_TEST(npz_lone_npy)
{
    void *src = open_ok(fixture("hessian.npy"));
    hvq_tensor t;
    hvq_model *m;
    int k;
    ck_assert_uint_eq(np->source_count(src), 1);
    t = read_named(src, "hessian", HVQ_DTYPE_F32, 1, 8, 0, 0);
    for (k = 0; k < 8; k++)
        ck_assert(((const float *)t.data)[k] == (float)(k + 1));
    close_src(src);

    /* The way a Hessian plugin opens it: through the host, by name. */
    m = g_ctx->host->model_open(g_ctx, fixture("hessian.npy"));
    ck_assert_msg(m != NULL, "%s", hvq_ctx_error(g_ctx));
    ck_assert_uint_eq(g_ctx->host->model_count(m), 1);
    ck_assert_int_eq(g_ctx->host->model_find(g_ctx, m, "hessian", &t),
                     HVQ_OK);
    ck_assert(((const float *)t.data)[7] == 8.0f);
    ck_assert_int_eq(g_ctx->host->model_find(g_ctx, m, "absent", &t),
                     HVQ_E_NOTFOUND);
    g_ctx->host->model_close(g_ctx, m);
}
END_TEST

/* Fortran order of 2, 3 and 4 dimensions, built here, against the index
 * formula: Fortran element (i0..in-1) is at sum ik * stride_k, stride_0 = 1. */
START_TEST(npz_fortran_built)
{
    static const int64_t shapes[][4] = {{5, 7, 0, 0}, {2, 3, 4, 0},
                                        {3, 1, 4, 2}};
    static const int ndims[] = {2, 3, 4};
    char *dir = th_tmpdir("npz-fortran");
    char *path = tmpfile_in(dir, "f.npz");
    int c;
    for (c = 0; c < 3; c++) {
        int nd = ndims[c], d;
        const int64_t *sh = shapes[c];
        int64_t numel = 1, i;
        int32_t *fdata;
        char dict[256];
        size_t o, len;
        unsigned char *member;
        void *src;
        hvq_tensor t;
        for (d = 0; d < nd; d++)
            numel *= sh[d];
        fdata = malloc((size_t)numel * 4);
        ck_assert_ptr_nonnull(fdata);
        /* Value = the C-order flat index, stored at the Fortran offset. */
        for (i = 0; i < numel; i++) {
            int64_t rem = i, idx[4], foff = 0, stride = 1;
            for (d = nd - 1; d >= 0; d--) {
                idx[d] = rem % sh[d];
                rem /= sh[d];
            }
            for (d = 0; d < nd; d++) {
                foff += idx[d] * stride;
                stride *= sh[d];
            }
            fdata[foff] = (int32_t)i;
        }
        o = (size_t)snprintf(dict, sizeof dict,
                             "{'descr': '<i4', 'fortran_order': True, "
                             "'shape': (");
        for (d = 0; d < nd; d++)
            o += (size_t)snprintf(dict + o, sizeof dict - o, "%s%lld",
                                  d ? ", " : "", (long long)sh[d]);
        snprintf(dict + o, sizeof dict - o, "), }");
        member = npy_make(1, dict, fdata, (size_t)numel * 4, &len);
        unlink(path);
        zip_one(path, member, len, c == 1);
        src = open_ok(path);
        ck_assert_int_eq(np->source_read(g_ctx, src, 0, &t), HVQ_OK);
        ck_assert_int_eq(t.info.ndim, nd);
        for (i = 0; i < numel; i++)
            ck_assert_msg(((const int32_t *)t.data)[i] == i,
                          "case %d: element %lld is %d", c, (long long)i,
                          ((const int32_t *)t.data)[i]);
        close_src(src);
        free(member);
        free(fdata);
    }
    free(path);
    th_rmtree(dir);
    free(dir);
}
END_TEST

/* ------------------------------------------------------------------------
 * Malformed NPY headers, each in a member a.npy and as a lone .npy file
 * ---------------------------------------------------------------------- */
typedef struct bad_header {
    const char *dict;
    size_t data_len;
    const char *reason;
} bad_header;

static const bad_header bad_headers[] = {
    {"'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", 8,
     "malformed NPY header: expected '{'"},
    {"{'descr': '<f4', 'shape': (2,), }", 8,
     "malformed NPY header: the key 'fortran_order' is missing"},
    {"{'fortran_order': False, 'shape': (2,), }", 8,
     "the key 'descr' is missing"},
    {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'extra': 1, }",
     8, "unexpected key 'extra'"},
    {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), "
     "'shape': (2,), }",
     8, "key 'shape' appears twice"},
    {"{'descr': '<f4', 'fortran_order': false, 'shape': (2,), }", 8,
     "expected True or False for 'fortran_order', found 'false"},
    {"{'descr': '<f4', 'fortran_order': False, 'shape': 2, }", 8,
     "'shape' must be a tuple"},
    {"{'descr': '<f4', 'fortran_order': False, 'shape': (2), }", 8,
     "is a parenthesized integer, not a tuple"},
    {"{'descr': '<f4', 'fortran_order': False, 'shape': (-2,), }", 8,
     "expected a non-negative integer in 'shape', found '-2,)"},
    {"{'descr': '<f4', 'fortran_order': False, 'shape': (02,), }", 8,
     "integer with a leading zero"},
    {"{'descr': '<f4', 'fortran_order': False, 'shape': (2.0,), }", 8,
     "something other than a plain integer"},
    {"{'descr': '<f4', 'fortran_order': False, 'shape': (1 2), }", 8,
     "expected ',' or ')' in 'shape'"},
    {"{'descr': '<f4' 'fortran_order': False, 'shape': (2,), }", 8,
     "expected ',' or '}', found ''fortran...' at byte 26"},
    {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), ", 8,
     "expected a quoted key or '}', found the end of the header"},
    {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,)}, }", 8,
     "expected only spaces and a newline after '}'"},
    {"{descr: '<f4', 'fortran_order': False, 'shape': (2,), }", 8,
     "expected a quoted key or '}', found 'descr: '"},
    {"{'descr' '<f4', 'fortran_order': False, 'shape': (2,), }", 8,
     "expected ':' after a key, found ''<f4', '...' at byte 19"},
    {"{'descr': '<f4, 'fortran_order': False}", 8, "unknown dtype '<f4, '"},
    {"{'descr': '\\x3cf4', 'fortran_order': False, 'shape': (2,), }", 8,
     "escape sequences in strings are not supported"},
    {"{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 1, 1, 1, 1, "
     "1, 1, 1), }",
     4, "'shape' has more than 8 dimensions"},
    {"{'descr': '<f4', 'fortran_order': False, "
     "'shape': (99999999999999999999,), }",
     8, "does not fit in 63 bits"},
    {"{'descr': '<f3', 'fortran_order': False, 'shape': (2,), }", 8,
     "unknown dtype '<f3' (supported: <f4"},
    {"{'descr': '|f4', 'fortran_order': False, 'shape': (2,), }", 8,
     "unknown dtype '|f4'"},
    {"{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }", 8,
     "dtype '<c8' is not supported (complex numbers)"},
    {"{'descr': '<U2', 'fortran_order': False, 'shape': (1,), }", 8,
     "dtype '<U2' is not supported (strings)"},
    {"{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", 8,
     "dtype '|O' is a Python object array"},
    {"{'descr': [('a', '<f4'), ('b', '<i4')], 'fortran_order': False, "
     "'shape': (1,), }",
     8, "structured dtype [('a', '<f4'), ('b', '<i4')] is not supported"},
    {"{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }", 12,
     "size mismatch: <f4 (4,) needs 16 data bytes but the"},
    {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 28,
     "size mismatch: <f4 (2, 3) needs 24 data bytes but the"},
    {"{'descr': '<f4', 'fortran_order': False, "
     "'shape': (4611686018427387904, 4611686018427387904), }",
     0,
     "shape overflow: the non-zero dimensions of (4611686018427387904, "
     "4611686018427387904) multiply past 63 bits"},
    {"{'descr': '<f8', 'fortran_order': False, "
     "'shape': (4611686018427387904,), }",
     0, "shape overflow: the byte size of (4611686018427387904,)"},
};

START_TEST(npz_bad_header)
{
    const bad_header *b = &bad_headers[_i];
    char *dir = th_tmpdir("npz-badhdr");
    char *zpath = tmpfile_in(dir, "bad.npz");
    char *npath = tmpfile_in(dir, "bad.npy");
    char want[512];
    size_t len;
    unsigned char *m = npy_make(1, b->dict, NULL, b->data_len, &len);

    zip_one(zpath, m, len, 0);
    snprintf(want, sizeof want, ": member 'a.npy': ");
    expect_open_error(zpath, want);
    expect_open_error(zpath, b->reason);
    /* The same as a lone file: no member in the message. */
    th_write_file(npath, m, len);
    expect_open_error(npath, b->reason);
    ck_assert_ptr_null(strstr(hvq_ctx_error(g_ctx), "member"));
    free(m);
    free(zpath);
    free(npath);
    th_rmtree(dir);
    free(dir);
}
END_TEST

/* The header dialects numpy's reader accepts and this parser must too. */
START_TEST(npz_header_dialects)
{
    static const char *const ok[] = {
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }",
        "{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (2,)}",
        "{'shape': (2, ), 'fortran_order': False, 'descr': '<f4'}",
        "  {  'descr'  :  '<f4'  ,  'fortran_order':False,'shape':(2,)  ,  }",
        "{'descr': '<f4',\t'fortran_order': False, 'shape': (1, 2,), }",
    };
    char *dir = th_tmpdir("npz-dialect");
    char *path = tmpfile_in(dir, "ok.npy");
    size_t i;
    for (i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        static const float data[2] = {1.0f, 2.0f};
        size_t len;
        unsigned char *m = npy_make(1, ok[i], data, sizeof data, &len);
        void *src;
        hvq_tensor t;
        th_write_file(path, m, len);
        src = open_ok(path);
        ck_assert_int_eq(np->source_read(g_ctx, src, 0, &t), HVQ_OK);
        ck_assert_str_eq(t.info.name, "ok");
        ck_assert_int_eq(t.info.ndim, i == 4 ? 2 : 1);
        ck_assert(((const float *)t.data)[1] == 2.0f);
        close_src(src);
        free(m);
    }
    free(path);
    th_rmtree(dir);
    free(dir);
}
END_TEST

/* ------------------------------------------------------------------------
 * Damaged archives and members
 * ---------------------------------------------------------------------- */
static const char *good_dict =
    "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }";

static void build_not_zip(const char *p)
{
    th_write_file(p, "hello, this is not a zip archive\n", 33);
}

static void build_empty_file(const char *p)
{
    th_write_file(p, "", 0);
}

static void build_truncated_zip(const char *p)
{
    static float data[256];
    size_t len, n;
    unsigned char *m = npy_make(1, good_dict, data, 16, &len);
    zmember z[2] = {{"a.npy", m, len, 0}, {"b.npy", data, sizeof data, 0}};
    char *file;
    make_zip(p, 0, z, 2);
    file = th_read_file(p, &n);
    th_write_file(p, file, n / 2);
    free(file);
    free(m);
}

static void build_not_npy_member(const char *p)
{
    size_t len;
    unsigned char *m = npy_make(1, good_dict, NULL, 16, &len);
    zmember z[2] = {{"a.npy", m, len, 0}, {"readme.txt", "hi", 2, 0}};
    make_zip(p, 0, z, 2);
    free(m);
}

static void build_dir_member(const char *p)
{
    zmember z[1] = {{"weights/", NULL, 0, 1}};
    make_zip(p, 0, z, 1);
}

static void build_empty_name(const char *p)
{
    size_t len;
    unsigned char *m = npy_make(1, good_dict, NULL, 16, &len);
    zmember z[1] = {{".npy", m, len, 0}};
    make_zip(p, 0, z, 1);
    free(m);
}

static void build_bad_magic(const char *p)
{
    static const char inner[] = "PK\003\004 a zip in a zip";
    zip_one(p, inner, sizeof inner - 1, 0);
}

static void build_version_4(const char *p)
{
    size_t len;
    unsigned char *m = npy_make(1, good_dict, NULL, 16, &len);
    m[6] = 4;
    zip_one(p, m, len, 0);
    free(m);
}

static void build_version_1_1(const char *p)
{
    size_t len;
    unsigned char *m = npy_make(1, good_dict, NULL, 16, &len);
    m[7] = 1;
    zip_one(p, m, len, 0);
    free(m);
}

static void build_short_member(const char *p)
{
    zip_one(p, "\x93NUMPY\x01\x00", 8, 0);
}

static void build_empty_member(const char *p)
{
    zip_one(p, "", 0, 0);
}

static void build_header_beyond(const char *p)
{
    size_t len;
    unsigned char *m = npy_make(1, good_dict, NULL, 16, &len);
    m[8] = 0x88; /* header length 0x1388 = 5000 */
    m[9] = 0x13;
    zip_one(p, m, len, 0);
    free(m);
}

static void build_header_huge(const char *p)
{
    size_t len;
    unsigned char *m = npy_make(2, good_dict, NULL, 16, &len);
    m[8] = 0xf0;
    m[9] = m[10] = m[11] = 0xff;
    zip_one(p, m, len, 0);
    free(m);
}

static void build_duplicate(const char *p)
{
    size_t len;
    unsigned char *m = npy_make(1, good_dict, NULL, 16, &len);
    zmember z[3] = {{"w.npy", m, len, 0},
                    {"b.npy", m, len, 0},
                    {"w.npy", m, len, 0}};
    make_zip(p, 0, z, 3);
    free(m);
}

/* The offset of the first member's data in a zip (after its local
 * header). */
static size_t first_data_offset(const unsigned char *z)
{
    ck_assert(memcmp(z, "PK\003\004", 4) == 0);
    return 30 + (size_t)(z[26] | z[27] << 8) + (size_t)(z[28] | z[29] << 8);
}

/* A deflated member whose stream is broken from its first byte: found when
 * opening reads the NPY header. */
static void build_deflate_broken_start(const char *p)
{
    static float data[1024];
    size_t len, n, off, i;
    unsigned char *m, *z;
    for (i = 0; i < 1024; i++)
        data[i] = (float)(i % 7);
    m = npy_make(1, "{'descr': '<f4', 'fortran_order': False, "
                    "'shape': (1024,), }",
                 data, sizeof data, &len);
    zip_one(p, m, len, 1);
    z = (unsigned char *)th_read_file(p, &n);
    off = first_data_offset(z);
    z[off] = 0xff; /* final block of the reserved type 3 */
    th_write_file(p, z, n);
    free(z);
    free(m);
}

static void build_stored_bad_crc(const char *p)
{
    static float data[64];
    size_t len, n, off;
    unsigned char *m, *z;
    m = npy_make(1, "{'descr': '<f4', 'fortran_order': False, "
                    "'shape': (64,), }",
                 data, sizeof data, &len);
    zip_one(p, m, len, 0);
    z = (unsigned char *)th_read_file(p, &n);
    off = first_data_offset(z);
    z[off + 64 + 100] ^= 0x5a; /* inside the array data */
    th_write_file(p, z, n);
    free(z);
    free(m);
}

/* Deflated random-looking data (zlib stores it in stored blocks): a byte
 * flipped past the first 256 KiB is only found by reading it all. */
static void build_deflate_bad_late(const char *p)
{
    enum { N = 1 << 18 };
    uint32_t *data = malloc(N * 4), x = 12345;
    size_t len, n, off, i;
    unsigned char *m, *z;
    ck_assert_ptr_nonnull(data);
    for (i = 0; i < N; i++) {
        x = x * 1664525u + 1013904223u;
        data[i] = x;
    }
    m = npy_make(1, "{'descr': '<u4', 'fortran_order': False, "
                    "'shape': (262144,), }",
                 data, (size_t)N * 4, &len);
    zip_one(p, m, len, 1);
    z = (unsigned char *)th_read_file(p, &n);
    off = first_data_offset(z);
    ck_assert_uint_gt(n, off + 900000);
    z[off + 900000] ^= 0x01;
    th_write_file(p, z, n);
    free(z);
    free(m);
    free(data);
}

static void build_lone_truncated(const char *p)
{
    size_t len;
    unsigned char *m = npy_make(1, good_dict, NULL, 16, &len);
    th_write_file(p, m, len - 3);
    free(m);
}

static void build_lone_v9(const char *p)
{
    size_t len;
    unsigned char *m = npy_make(1, good_dict, NULL, 16, &len);
    m[6] = 9;
    th_write_file(p, m, len);
    free(m);
}

static void build_dotdot_member(const char *p)
{
    size_t len;
    unsigned char *m = npy_make(1, good_dict, NULL, 16, &len);
    zmember z[1] = {{"../../evil.npy", m, len, 0}};
    make_zip(p, 0, z, 1);
    free(m);
}

typedef struct bad_archive {
    const char *file;            /* name in the temporary directory */
    void (*build)(const char *path);
    const char *reason;
    int at_read;                 /* opens; reading tensor 0 fails */
} bad_archive;

static const bad_archive bad_archives[] = {
    {"text.npz", build_not_zip,
     "not a zip archive (it starts with the bytes 68 65 6c 6c, not "
     "PK\\x03\\x04)",
     0},
    {"empty.npz", build_empty_file, "not a zip archive: the file is empty", 0},
    {"cut.npz", build_truncated_zip,
     "truncated or damaged zip archive: no end of central directory record",
     0},
    {"txt.npz", build_not_npy_member,
     "member 'readme.txt' is not an .npy array", 0},
    {"dir.npz", build_dir_member, "member 'weights/' is a directory", 0},
    {"noname.npz", build_empty_name, "member '.npy' has an empty array name",
     0},
    {"magic.npz", build_bad_magic,
     "member 'a.npy': bad NPY magic: expected \\x93NUMPY, found 'PK\\x03\\x04 "
     "a'",
     0},
    {"v4.npz", build_version_4,
     "member 'a.npy': unsupported NPY version 4.0", 0},
    {"v11.npz", build_version_1_1,
     "member 'a.npy': unsupported NPY version 1.1", 0},
    {"short.npz", build_short_member,
     "member 'a.npy': the member is 8 bytes, too short for an NPY header", 0},
    {"empty-member.npz", build_empty_member,
     "member 'a.npy': the member is empty, not an NPY array", 0},
    {"beyond.npz", build_header_beyond,
     "member 'a.npy': the NPY header (5010 bytes with its prefix) goes beyond "
     "the end of the member (144 bytes; truncated?)",
     0},
    {"huge.npz", build_header_huge,
     "member 'a.npy': NPY header length 4294967280 exceeds the limit", 0},
    {"dup.npz", build_duplicate, "duplicate member name 'w.npy'", 0},
    {"dotdot.npz", build_dotdot_member,
     "member '../../evil.npy' cannot be an array name: it has a '.' or '..' "
     "path component",
     0},
    {"deflate-start.npz", build_deflate_broken_start,
     "member 'a.npy': cannot read: ", 0},
    {"crc.npz", build_stored_bad_crc, "member 'a.npy': cannot read: ZIP bad "
                                      "CRC",
     1},
    {"deflate-late.npz", build_deflate_bad_late, "member 'a.npy': cannot read",
     1},
    {"cut.npy", build_lone_truncated,
     "size mismatch: <f4 (4,) needs 16 data bytes but the file holds 13", 0},
    {"v9.npy", build_lone_v9, "unsupported NPY version 9.0", 0},
};

START_TEST(npz_bad_archive)
{
    const bad_archive *b = &bad_archives[_i];
    char *dir = th_tmpdir("npz-bad");
    char *path = tmpfile_in(dir, b->file);
    b->build(path);
    if (!b->at_read) {
        expect_open_error(path, b->reason);
    } else {
        void *src = open_ok(path);
        hvq_tensor t;
        const char *msg;
        hvq_status s = np->source_read(g_ctx, src, 0, &t);
        msg = hvq_ctx_error(g_ctx);
        ck_assert_msg(s == HVQ_E_INPUT, "%s: read status %d (%s)", b->file, s,
                      msg);
        ck_assert_msg(strncmp(msg, path, strlen(path)) == 0,
                      "message does not start with %s:\n%s", path, msg);
        th_assert_contains(msg, b->reason);
        /* It fails the same way again (the reader starts over). */
        ck_assert_int_eq(np->source_read(g_ctx, src, 0, &t), HVQ_E_INPUT);
        close_src(src);
    }
    free(path);
    th_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(npz_open_missing)
{
    void *state = (void *)1;
    const char *p = fixture("nonexistent.npz");
    ck_assert_int_eq(np->source_open(g_ctx, p, &state), HVQ_E_INPUT);
    ck_assert_ptr_null(state);
    th_assert_contains(hvq_ctx_error(g_ctx), p);
    th_assert_contains(hvq_ctx_error(g_ctx), "cannot open");
}
END_TEST

/* ------------------------------------------------------------------------
 * Sink
 * ---------------------------------------------------------------------- */
typedef struct rt_tensor {
    const char *name;
    hvq_dtype dtype;
    int ndim;
    int64_t shape[3];
} rt_tensor;

/* Every tensor the round trip writes; the values follow from the flat
 * index k as the Python check below spells out. */
static const rt_tensor rt_decl[] = {
    {"w.f32", HVQ_DTYPE_F32, 2, {3, 5, 0}},
    {"w.f16", HVQ_DTYPE_F16, 2, {2, 3, 0}},
    {"w.f64", HVQ_DTYPE_F64, 1, {4, 0, 0}},
    {"layer/0.i32", HVQ_DTYPE_I32, 3, {2, 2, 2}},
    {"mask", HVQ_DTYPE_BOOL, 1, {5, 0, 0}},
    {"scalar", HVQ_DTYPE_F32, 0, {0, 0, 0}},
    {"empty", HVQ_DTYPE_F32, 2, {0, 4, 0}},
    {"u8", HVQ_DTYPE_U8, 1, {3, 0, 0}},
    {"i64", HVQ_DTYPE_I64, 1, {2, 0, 0}},
    {"caf\xc3\xa9", HVQ_DTYPE_F32, 1, {2, 0, 0}},
};
#define RT_N (sizeof rt_decl / sizeof rt_decl[0])

static const char *const rt_python =
    "import sys\n"
    "import numpy as np\n"
    "k = np.arange\n"
    "want = {\n"
    "    'w.f32': (k(15) * 0.25 - 3).astype('<f4').reshape(3, 5),\n"
    "    'w.f16': (k(6) - 2).astype('<f2').reshape(2, 3),\n"
    "    'w.f64': (k(4) * 1.5 - 1).astype('<f8'),\n"
    "    'layer/0.i32': (k(8) * 1000 - 3000).astype('<i4').reshape(2, 2, 2),\n"
    "    'mask': k(5) % 2 == 1,\n"
    "    'scalar': np.array(7.5, dtype='<f4'),\n"
    "    'empty': np.zeros((0, 4), dtype='<f4'),\n"
    "    'u8': (k(3) + 250).astype('|u1'),\n"
    "    'i64': (k(2) * -10**12).astype('<i8'),\n"
    "    'caf\\u00e9': np.ones(2, dtype='<f4'),\n"
    "}\n"
    "with np.load(sys.argv[1]) as f:\n"
    "    assert sorted(f.files) == sorted(want), f.files\n"
    "    for name, w in want.items():\n"
    "        a = f[name]\n"
    "        assert a.dtype == w.dtype, (name, a.dtype)\n"
    "        assert a.shape == w.shape, (name, a.shape)\n"
    "        assert np.array_equal(a, w), (name, a)\n"
    "print('numpy reads it')\n";

static void rt_fill(size_t i, hvq_tensor_info *info, unsigned char *buf)
{
    const rt_tensor *r = &rt_decl[i];
    uint64_t k, n;
    memset(info, 0, sizeof *info);
    info->name = r->name;
    info->dtype = r->dtype;
    info->ndim = r->ndim;
    memcpy(info->shape, r->shape, sizeof r->shape);
    n = hvq_numel(info);
    info->nbytes = n * hvq_dtype_size(r->dtype);
    for (k = 0; k < n; k++) {
        switch (i) {
        case 0: ((float *)buf)[k] = (float)k * 0.25f - 3; break;
        case 1: ((uint16_t *)buf)[k] = hvq_f32_to_f16((float)k - 2); break;
        case 2: ((double *)buf)[k] = (double)k * 1.5 - 1; break;
        case 3: ((int32_t *)buf)[k] = (int32_t)k * 1000 - 3000; break;
        case 4: buf[k] = (unsigned char)(k % 2); break;
        case 5: ((float *)buf)[k] = 7.5f; break;
        case 7: buf[k] = (unsigned char)(250 + k); break;
        case 8: ((int64_t *)buf)[k] = -(int64_t)k * 1000000000000LL; break;
        case 9: ((float *)buf)[k] = 1.0f; break;
        default: break;
        }
    }
}

/* The first interpreter with numpy, or NULL. */
static const char *numpy_python(void)
{
    static const char *const cand[] = {"/usr/bin/python3", "python3"};
    size_t i;
    for (i = 0; i < sizeof cand / sizeof cand[0]; i++) {
        char cmd[256];
        snprintf(cmd, sizeof cmd, "%s -c 'import numpy' >/dev/null 2>&1",
                 cand[i]);
        if (system(cmd) == 0)
            return cand[i];
    }
    return NULL;
}

/* Runs the Python check script on path when numpy is available. */
static void numpy_check(const char *dir, const char *path,
                        const char *script)
{
    const char *py = numpy_python();
    char *sp, *out, cmd[8192];
    size_t n;
    int rc;
    if (py == NULL) {
        fprintf(stderr, "skipped: no python3 with numpy to check %s\n", path);
        return;
    }
    sp = tmpfile_in(dir, "check.py");
    out = tmpfile_in(dir, "check.out");
    th_write_file(sp, script, strlen(script));
    snprintf(cmd, sizeof cmd, "%s '%s' '%s' >'%s' 2>&1", py, sp, path, out);
    rc = system(cmd);
    {
        char *text = th_read_file(out, &n);
        ck_assert_msg(rc == 0, "numpy could not load %s:\n%s", path,
                      text ? text : "");
        th_assert_contains(text, "numpy reads it");
        free(text);
    }
    free(sp);
    free(out);
}

/* Writes the round-trip tensors to path: directly through the plugin, or
 * through the host with options. */
static void rt_write(const char *path, const char *const *options)
{
    hvq_tensor_info info[RT_N];
    static unsigned char data[RT_N][128];
    size_t i;
    for (i = 0; i < RT_N; i++)
        rt_fill(i, &info[i], data[i]);
    if (options == NULL) {
        void *sink = NULL;
        ck_assert_msg(np->sink_create(g_ctx, path, NULL, 0, info, RT_N,
                                      &sink) == HVQ_OK,
                      "%s", hvq_ctx_error(g_ctx));
        for (i = 0; i < RT_N; i++) {
            hvq_tensor t;
            t.info = info[i];
            t.data = data[i];
            ck_assert_msg(np->sink_write(g_ctx, sink, &t) == HVQ_OK, "%s",
                          hvq_ctx_error(g_ctx));
        }
        ck_assert_int_eq(np->sink_finish(g_ctx, sink), HVQ_OK);
        np->sink_close(g_ctx, sink);
    } else {
        const hvq_host *H = g_ctx->host;
        hvq_sink_handle *h = H->sink_open_params(g_ctx, "npz", path, options,
                                                 NULL, 0, info, RT_N);
        ck_assert_msg(h != NULL, "%s", hvq_ctx_error(g_ctx));
        for (i = 0; i < RT_N; i++) {
            hvq_tensor t;
            t.info = info[i];
            t.data = data[i];
            ck_assert_msg(H->sink_write(g_ctx, h, &t) == HVQ_OK, "%s",
                          hvq_ctx_error(g_ctx));
        }
        ck_assert_int_eq(H->sink_finish(g_ctx, h), HVQ_OK);
        H->sink_close(g_ctx, h);
    }
    ck_assert_msg(!th_exists(path), "output visible before commit");
    ck_assert_msg(hvq_outputs_commit(g_ctx) == HVQ_OK, "%s",
                  hvq_ctx_error(g_ctx));
    ck_assert(th_exists(path));
}

static void rt_read_back(const char *path)
{
    void *src = open_ok(path);
    size_t i;
    ck_assert_uint_eq(np->source_count(src), RT_N);
    for (i = 0; i < RT_N; i++) {
        hvq_tensor_info want;
        unsigned char data[128];
        hvq_tensor t;
        int d;
        rt_fill(i, &want, data);
        ck_assert_int_eq(np->source_read(g_ctx, src, i, &t), HVQ_OK);
        ck_assert_str_eq(t.info.name, want.name);
        ck_assert_int_eq(t.info.dtype, want.dtype);
        ck_assert_int_eq(t.info.ndim, want.ndim);
        for (d = 0; d < want.ndim; d++)
            ck_assert_int_eq(t.info.shape[d], want.shape[d]);
        ck_assert_uint_eq(t.info.nbytes, want.nbytes);
        ck_assert(memcmp(t.data, data, want.nbytes) == 0);
    }
    close_src(src);
}

START_TEST(npz_round_trip_stored)
{
    char *dir = th_tmpdir("npz-rt");
    char *path = tmpfile_in(dir, "out.npz");
    size_t n, off, hlen;
    unsigned char *z;

    rt_write(path, NULL);
    /* Stored: the first member's bytes are in the file as they are, an NPY
     * 1.0 header padded so that the data starts at a multiple of 64. */
    z = (unsigned char *)th_read_file(path, &n);
    ck_assert_ptr_nonnull(z);
    ck_assert_int_eq(z[8] | z[9] << 8, 0); /* method: stored */
    off = first_data_offset(z);
    ck_assert(memcmp(z + off, "\x93NUMPY\x01\x00", 8) == 0);
    hlen = (size_t)(z[off + 8] | z[off + 9] << 8);
    ck_assert_uint_eq((10 + hlen) % 64, 0);
    ck_assert(memcmp(z + off + 10,
                     "{'descr': '<f4', 'fortran_order': False, "
                     "'shape': (3, 5), }",
                     58) == 0);
    ck_assert_int_eq(z[off + 10 + hlen - 1], '\n');
    free(z);

    rt_read_back(path);
    numpy_check(dir, path, rt_python);
    {
        size_t hn;
        char *head = th_read_file(path, &hn);
        ck_assert_int_eq(np->probe(path, (unsigned char *)head, 64), 60);
        free(head);
    }
    free(path);
    th_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(npz_round_trip_compressed)
{
    static const char *const opts[] = {"compress=true", NULL};
    static const char *const stored[] = {"compress=no", NULL};
    char *dir = th_tmpdir("npz-rtc");
    char *path = tmpfile_in(dir, "out.npz");
    char *p2 = tmpfile_in(dir, "stored.npz");
    size_t n;
    unsigned char *z;

    rt_write(path, opts);
    z = (unsigned char *)th_read_file(path, &n);
    ck_assert_int_eq(z[8] | z[9] << 8, 8); /* method: deflate */
    free(z);
    rt_read_back(path);
    numpy_check(dir, path, rt_python);

    /* The option through the host, set to false. */
    rt_write(p2, stored);
    z = (unsigned char *)th_read_file(p2, &n);
    ck_assert_int_eq(z[8] | z[9] << 8, 0);
    free(z);
    rt_read_back(p2);
    free(path);
    free(p2);
    th_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(npz_write_empty_model)
{
    char *dir = th_tmpdir("npz-empty");
    char *path = tmpfile_in(dir, "none.npz");
    void *sink = NULL, *src;
    size_t n;
    char *file;
    ck_assert_int_eq(np->sink_create(g_ctx, path, NULL, 0, NULL, 0, &sink),
                     HVQ_OK);
    ck_assert_int_eq(np->sink_finish(g_ctx, sink), HVQ_OK);
    np->sink_close(g_ctx, sink);
    ck_assert_int_eq(hvq_outputs_commit(g_ctx), HVQ_OK);
    file = th_read_file(path, &n);
    ck_assert_uint_eq(n, 22); /* an end of central directory record only */
    ck_assert(memcmp(file, "PK\005\006", 4) == 0);
    free(file);
    src = open_ok(path);
    ck_assert_uint_eq(np->source_count(src), 0);
    close_src(src);
    free(path);
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

/* A declaration the host (the checks common to every format) or the npz
 * sink refuses: no handle, the status expected. */
#define refused(info, status)                                                  \
    do {                                                                       \
        ck_assert_ptr_null(g_ctx->host->sink_open_params(g_ctx, "npz", path,   \
                                                         NULL, NULL, 0, info,  \
                                                         2));                  \
        ck_assert_int_eq(hvq_ctx_status(g_ctx), status);                       \
    } while (0)

START_TEST(npz_sink_errors)
{
    char *dir = th_tmpdir("npz-sinkerr");
    char *path = tmpfile_in(dir, "x.npz");
    void *sink = NULL;
    hvq_sink_handle *hs;
    hvq_tensor_info info[2];
    hvq_tensor t;
    float buf[16] = {0};
    static const hvq_meta meta[1] = {{"format", "pt"}};
    static const char *const bad_opt[] = {"compress=maybe", NULL};
    static const char *const unknown_opt[] = {"level=9", NULL};

    /* Types numpy does not have. */
    info[0] = mk_info("a", HVQ_DTYPE_F32, NULL, 2, 2, 16);
    info[1] = mk_info("b.bf16", HVQ_DTYPE_BF16, "BF16", 2, 2, 8);
    refused(info, HVQ_E_UNSUPPORTED);
    th_assert_contains(hvq_ctx_error(g_ctx), path);
    th_assert_contains(hvq_ctx_error(g_ctx),
                       "tensor 'b.bf16' is BF16, which npz cannot store: "
                       "numpy has no bfloat16; use --dtype f16 or f32");
    info[1] = mk_info("q", HVQ_DTYPE_OPAQUE, "Q4_K", 1, 2, 8);
    refused(info, HVQ_E_UNSUPPORTED);
    th_assert_contains(hvq_ctx_error(g_ctx), "dtype 'Q4_K' cannot be stored");

    /* Bad declarations. */
    info[1] = mk_info("a", HVQ_DTYPE_F32, NULL, 1, 2, 8);
    refused(info, HVQ_E_INPUT);
    th_assert_contains(hvq_ctx_error(g_ctx), "'a' is declared twice");
    info[1] = mk_info("b", HVQ_DTYPE_F32, NULL, 3, 2, 8);
    refused(info, HVQ_E_INPUT);
    th_assert_contains(hvq_ctx_error(g_ctx),
                       "tensor 'b': declared as 8 bytes but F32 [3, 2] "
                       "needs 24");
    info[1] = mk_info("b", HVQ_DTYPE_F32, NULL, -1, 2, 8);
    refused(info, HVQ_E_INPUT);
    th_assert_contains(hvq_ctx_error(g_ctx), "negative");
    info[1] = mk_info("", HVQ_DTYPE_F32, NULL, 1, 2, 8);
    refused(info, HVQ_E_INPUT);
    th_assert_contains(hvq_ctx_error(g_ctx), "has no name");
    info[1] = mk_info("bad\xff", HVQ_DTYPE_F32, NULL, 1, 2, 8);
    refused(info, HVQ_E_INPUT);
    th_assert_contains(hvq_ctx_error(g_ctx), "is not valid UTF-8");
    info[1] = mk_info("big", HVQ_DTYPE_F32, NULL, INT64_C(1) << 62,
                      INT64_C(1) << 62, 8);
    refused(info, HVQ_E_INPUT);
    th_assert_contains(hvq_ctx_error(g_ctx), "multiply past 63 bits");
    ck_assert(!th_exists(path));

    /* Options through the host. */
    info[1] = mk_info("b", HVQ_DTYPE_F32, NULL, 1, 2, 8);
    ck_assert_ptr_null(g_ctx->host->sink_open_params(g_ctx, "npz", path,
                                                     bad_opt, NULL, 0, info,
                                                     2));
    th_assert_contains(hvq_ctx_error(g_ctx), "compress");
    ck_assert_ptr_null(g_ctx->host->sink_open_params(
        g_ctx, "npz", path, unknown_opt, NULL, 0, info, 2));
    th_assert_contains(hvq_ctx_error(g_ctx), "has no option 'level'");

    /* Writes out of order, or too few; metadata is dropped with a warning. */
    hs = g_ctx->host->sink_open_params(g_ctx, "npz", path, NULL, meta, 1, info, 2);
    ck_assert_ptr_nonnull(hs);
    t.info = info[1];
    t.data = buf;
    ck_assert_int_eq(g_ctx->host->sink_write(g_ctx, hs, &t), HVQ_E_INTERNAL);
    th_assert_contains(hvq_ctx_error(g_ctx),
                       "expected tensor 1 of 2 to be 'a' (16 bytes), got "
                       "'b' (8 bytes)");
    t.info = info[0];
    ck_assert_int_eq(g_ctx->host->sink_write(g_ctx, hs, &t), HVQ_OK);
    ck_assert_int_eq(g_ctx->host->sink_finish(g_ctx, hs), HVQ_E_INTERNAL);
    th_assert_contains(hvq_ctx_error(g_ctx),
                       "only 1 of 2 declared tensors were written");
    t.info = info[1];
    ck_assert_int_eq(g_ctx->host->sink_write(g_ctx, hs, &t), HVQ_OK);
    ck_assert_int_eq(g_ctx->host->sink_write(g_ctx, hs, &t), HVQ_E_INTERNAL);
    th_assert_contains(hvq_ctx_error(g_ctx), "already written");
    /* Closed without a finish: abandoned, never visible. */
    g_ctx->host->sink_close(g_ctx, hs);
    hvq_outputs_abort(g_ctx);
    ck_assert(!th_exists(path));

    /* An existing output is not replaced without --force. */
    th_write_file(path, "old", 3);
    sink = NULL;
    ck_assert_int_eq(np->sink_create(g_ctx, path, NULL, 0, info, 2, &sink),
                     HVQ_E_INPUT);
    th_assert_contains(hvq_ctx_error(g_ctx), "already exists");
    np->sink_close(g_ctx, sink);
    free(path);
    th_rmtree(dir);
    free(dir);
}
END_TEST

/* Names a zip member cannot hold are refused before anything is written
 * (a name of 65,532 bytes or more with '.npy' overflows the 16-bit name
 * length; a '..' component would lead an extracting tool out of its
 * directory); the longest name that fits and a name with '/' round-trip. */
START_TEST(npz_sink_names)
{
    char *dir = th_tmpdir("npz-names");
    char *path = tmpfile_in(dir, "n.npz");
    void *sink = NULL;
    hvq_tensor_info info[2];
    float buf[4] = {1, 2, 3, 4};
    size_t longest = 65535 - strlen(".npy");
    char *name = malloc(longest + 2);
    memset(name, 'w', longest + 1);
    name[longest + 1] = '\0';
    info[0] = mk_info("a/b", HVQ_DTYPE_F32, NULL, 2, 2, 16);
    info[1] = mk_info(name, HVQ_DTYPE_F32, NULL, 2, 2, 16);
    ck_assert_int_eq(np->sink_create(g_ctx, path, NULL, 0, info, 2, &sink),
                     HVQ_E_INPUT);
    th_assert_contains(hvq_ctx_error(g_ctx), "a name of 65532 bytes does not "
                                             "fit a zip member name");
    static const char *const bad[] = {"../x", "a/../b", "/abs", "a//b", "a/.",
                                      "c\\d"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        info[1] = mk_info(bad[i], HVQ_DTYPE_F32, NULL, 2, 2, 16);
        ck_assert_int_eq(np->sink_create(g_ctx, path, NULL, 0, info, 2,
                                         &sink),
                         HVQ_E_INPUT);
        th_assert_contains(hvq_ctx_error(g_ctx), "cannot be a zip member name");
    }
    ck_assert(!th_exists(path));
    name[longest] = '\0'; /* 65,531 bytes: fits */
    info[1] = mk_info(name, HVQ_DTYPE_F32, NULL, 2, 2, 16);
    ck_assert_msg(np->sink_create(g_ctx, path, NULL, 0, info, 2, &sink) ==
                      HVQ_OK,
                  "%s", hvq_ctx_error(g_ctx));
    for (int i = 0; i < 2; i++) {
        hvq_tensor t = {info[i], buf};
        ck_assert_msg(np->sink_write(g_ctx, sink, &t) == HVQ_OK, "%s",
                      hvq_ctx_error(g_ctx));
    }
    ck_assert_int_eq(np->sink_finish(g_ctx, sink), HVQ_OK);
    np->sink_close(g_ctx, sink);
    ck_assert_int_eq(hvq_outputs_commit(g_ctx), HVQ_OK);
    void *src = open_ok(path);
    for (int i = 0; i < 2; i++) {
        hvq_tensor t = read_named(src, info[i].name, HVQ_DTYPE_F32, 2, 2, 2, 0);
        ck_assert_mem_eq(t.data, buf, 16);
    }
    close_src(src);
    free(name);
    free(path);
    th_rmtree(dir);
    free(dir);
}
END_TEST

/* ------------------------------------------------------------------------
 * The real model (../shared/data), when present
 * ---------------------------------------------------------------------- */
static const char *shared_model(const char *rel)
{
    static char path[4][4096];
    static int k;
    char *p = path[k++ % 4];
    const char *base = th_shared_data();
    if (base == NULL)
        return NULL;
    snprintf(p, 4096, "%s/stories260K/%s", base, rel);
    return th_exists(p) ? p : NULL;
}

/* Opens the safetensors reference through its plugin. */
static const hvq_plugin *st_plugin(void)
{
    const hvq_loaded_plugin *lp =
        hvq_registry_find(g_reg, HVQ_KIND_SOURCE, "safetensors");
    ck_assert_msg(lp != NULL, "safetensors plugin not loaded");
    return &lp->desc;
}

/* Every tensor of the npz at path against the same tensor of the
 * safetensors reference: F32 bit for bit, or F16 equal to the F32 value
 * rounded to F16. */
static void check_real(const char *rel, hvq_dtype dtype)
{
    const char *path = shared_model(rel);
    const char *ref = shared_model("hf/model.safetensors");
    const hvq_plugin *st;
    void *src, *rsrc = NULL;
    size_t i, n, found = 0;
    uint64_t total = 0;
    char *head;
    size_t head_n;

    if (path == NULL || ref == NULL) {
        fprintf(stderr, "skipped: %s not available\n", rel);
        return;
    }
    head = th_read_file(path, &head_n);
    ck_assert_int_eq(np->probe(path, (unsigned char *)head,
                               head_n < 4096 ? head_n : 4096),
                     60);
    free(head);
    st = st_plugin();
    ck_assert_int_eq(st->source_open(g_ctx, ref, &rsrc), HVQ_OK);
    src = open_ok(path);
    n = np->source_count(src);
    ck_assert_uint_eq(n, 47);
    ck_assert_uint_eq(st->source_count(rsrc), 47);
    for (i = 0; i < n; i++) {
        hvq_tensor t, r;
        size_t j, m = st->source_count(rsrc), k;
        int d;
        ck_assert_int_eq(np->source_read(g_ctx, src, i, &t), HVQ_OK);
        ck_assert_int_eq(t.info.dtype, dtype);
        total += hvq_numel(&t.info);
        if (strcmp(t.info.name, "model.layers.0.self_attn.q_proj.weight") ==
            0) {
            found++;
            ck_assert_int_eq(t.info.ndim, 2);
            ck_assert_int_eq(t.info.shape[0], 64);
            ck_assert_int_eq(t.info.shape[1], 64);
        }
        for (j = 0; j < m; j++) {
            ck_assert_int_eq(st->source_read(g_ctx, rsrc, j, &r), HVQ_OK);
            if (strcmp(r.info.name, t.info.name) == 0)
                break;
        }
        ck_assert_msg(j < m, "'%s' is not in the reference", t.info.name);
        ck_assert_int_eq(t.info.ndim, r.info.ndim);
        for (d = 0; d < t.info.ndim; d++)
            ck_assert_int_eq(t.info.shape[d], r.info.shape[d]);
        if (dtype == HVQ_DTYPE_F32) {
            ck_assert(memcmp(t.data, r.data, r.info.nbytes) == 0);
        } else {
            const uint16_t *h = t.data;
            const float *f = r.data;
            for (k = 0; k < hvq_numel(&t.info); k++)
                ck_assert_msg(h[k] == hvq_f32_to_f16(f[k]),
                              "%s[%zu]: %04x, want %04x", t.info.name, k,
                              h[k], hvq_f32_to_f16(f[k]));
        }
    }
    ck_assert_uint_eq(found, 1);
    ck_assert_uint_eq(total, 260032);
    close_src(src);
    st->source_close(g_ctx, rsrc);
}

START_TEST(npz_real_f32)
{
    check_real("stories260K.npz", HVQ_DTYPE_F32);
}
END_TEST

START_TEST(npz_real_f16_compressed)
{
    check_real("stories260K.f16.compressed.npz", HVQ_DTYPE_F16);
}
END_TEST

/* hvqconv run: NPZ in, NPZ out, against the same run from safetensors. */
START_TEST(npz_cli_run)
{
    const char *npz = shared_model("stories260K.npz");
    const char *ref = shared_model("hf/model.safetensors");
    const char *pipeline = th_src("pipelines/int4-rtn.yaml");
    char *dir, *x, *y, *rx, *ry, *out = NULL, *err = NULL;
    const hvq_plugin *st;
    void *a, *b = NULL;
    size_t i, n, compressed = 0;
    int rc;

    if (npz == NULL || ref == NULL) {
        fprintf(stderr, "skipped: shared model not available\n");
        return;
    }
    dir = th_tmpdir("npz-cli");
    x = tmpfile_in(dir, "x.npz");
    y = tmpfile_in(dir, "y.safetensors");
    rx = tmpfile_in(dir, "x.json");
    ry = tmpfile_in(dir, "y.json");
    {
        const char *args[] = {"run", pipeline, "--input", npz, "--output", x,
                              "-r", rx, "-q", NULL};
        rc = th_run(&out, &err, args);
        ck_assert_msg(rc == 0, "run failed (%d):\n%s", rc, err);
        free(out);
        free(err);
    }
    {
        const char *args[] = {"run", pipeline, "--input", ref, "--output", y,
                              "-r", ry, "-q", NULL};
        rc = th_run(&out, &err, args);
        ck_assert_msg(rc == 0, "run failed (%d):\n%s", rc, err);
        free(out);
        free(err);
    }
    ck_assert(th_exists(rx));
    {
        char *report = th_read_file(rx, NULL);
        th_assert_contains(report, "\"compressed\"");
        free(report);
    }

    /* Same tensors, same bytes; the compressed ones reconstructed alike. */
    st = st_plugin();
    a = open_ok(x);
    ck_assert_int_eq(st->source_open(g_ctx, y, &b), HVQ_OK);
    n = np->source_count(a);
    ck_assert_uint_eq(n, 47);
    for (i = 0; i < n; i++) {
        hvq_tensor t, r;
        size_t j, m = st->source_count(b);
        ck_assert_int_eq(np->source_read(g_ctx, a, i, &t), HVQ_OK);
        for (j = 0; j < m; j++) {
            ck_assert_int_eq(st->source_read(g_ctx, b, j, &r), HVQ_OK);
            if (strcmp(r.info.name, t.info.name) == 0)
                break;
        }
        ck_assert_msg(j < m, "'%s' missing from the safetensors run",
                      t.info.name);
        ck_assert_int_eq(t.info.dtype, r.info.dtype);
        ck_assert_uint_eq(t.info.nbytes, r.info.nbytes);
        ck_assert_msg(memcmp(t.data, r.data, t.info.nbytes) == 0,
                      "'%s' differs", t.info.name);
        if (strstr(t.info.name, "_proj.weight") != NULL)
            compressed++;
    }
    ck_assert_uint_eq(compressed, 35);
    close_src(a);
    st->source_close(g_ctx, b);
    free(x);
    free(y);
    free(rx);
    free(ry);
    th_rmtree(dir);
    free(dir);
}
END_TEST

/* Errors reach the command line: exit status 2, the file and the reason. */
START_TEST(npz_cli_errors)
{
    const char *pipeline = th_src("pipelines/int4-rtn.yaml");
    char *dir = th_tmpdir("npz-clierr");
    char *bad = tmpfile_in(dir, "bad.npz");
    char *o = tmpfile_in(dir, "o.npz");
    char *err = NULL;
    int rc;
    th_write_file(bad, "not a zip at all", 16);
    {
        const char *args[] = {"run", pipeline, "--input", bad, "--output", o,
                              "-q", NULL};
        rc = th_run(NULL, &err, args);
    }
    ck_assert_int_eq(rc, 2);
    th_assert_contains(err, bad);
    th_assert_contains(err, "not a zip archive");
    ck_assert(!th_exists(o));
    free(err);
    /* An empty archive is an empty model: nothing to compress, exit 2. */
    {
        const char *empty = fixture("empty.npz");
        const char *args[] = {"run", pipeline, "--input", empty, "--output", o, "-q",
                              NULL};
        rc = th_run(NULL, &err, args);
        ck_assert_msg(rc == 2, "exit %d: %s", rc, err);
        th_assert_contains(err, "empty.npz: the model holds no tensors");
        ck_assert(!th_exists(o));
        free(err);
    }
    /* A model whose tensor name (65,535 bytes) fits no zip member name:
     * refused with exit 2 before anything is written (it overflowed a
     * buffer in libarchive's zip writer). */
    {
        char *st = tmpfile_in(dir, "long.safetensors");
        size_t nlen = 65535, cap = nlen + 128;
        char *hdr = malloc(cap), *file = malloc(cap + 16);
        memcpy(hdr, "{\"", 2);
        memset(hdr + 2, 'w', nlen);
        int hl = 2 + (int)nlen;
        hl += snprintf(hdr + hl, cap - (size_t)hl,
                       "\":{\"dtype\":\"F32\",\"shape\":[2],"
                       "\"data_offsets\":[0,8]}}");
        while (hl % 8)
            hdr[hl++] = ' ';
        uint64_t h64 = (uint64_t)hl;
        for (int b = 0; b < 8; b++)
            file[b] = (char)(h64 >> (8 * b));
        memcpy(file + 8, hdr, (size_t)hl);
        memset(file + 8 + hl, 0, 8);
        th_write_file(st, file, 8 + (size_t)hl + 8);
        const char *args[] = {"run", pipeline, "--input", st, "--output", o, "-q",
                              NULL};
        rc = th_run(NULL, &err, args);
        ck_assert_msg(rc == 2, "exit %d: %s", rc, err);
        th_assert_contains(err, "a name of 65535 bytes does not fit a zip member name");
        ck_assert(!th_exists(o));
        free(err);
        free(hdr);
        free(file);
        free(st);
    }
    free(bad);
    free(o);
    th_rmtree(dir);
    free(dir);
}
END_TEST

/* The dequant writer forwards sink_options to the npz sink: compress=true
 * deflates the members (a smaller file holding the same tensors); a
 * misspelt option is refused with a suggestion before anything is written. */
START_TEST(npz_cli_sink_options)
{
    const char *pipeline = th_src("pipelines/int4-rtn.yaml");
    const char *model = th_src("models/stories260K");
    char *dir = th_tmpdir("npz-opts");
    char *plain = tmpfile_in(dir, "plain.npz"), *packed = tmpfile_in(dir, "packed.npz");
    char *typo = tmpfile_in(dir, "typo.npz"), *rep = tmpfile_in(dir, "r.json");
    char *err = NULL;
    const char *a1[] = {"run", pipeline, "--input", model, "--output", plain, "-r", rep, "-q", NULL};
    ck_assert_int_eq(th_run(NULL, NULL, a1), 0);
    const char *a2[] = {"run", pipeline, "--input", model, "--output", packed, "-r", rep,
                        "--force", "-q", "--set", "stages.writer.sink_options=compress=true", NULL};
    ck_assert_int_eq(th_run(NULL, NULL, a2), 0);
    size_t n_plain = 0, n_packed = 0;
    free(th_read_file(plain, &n_plain));
    free(th_read_file(packed, &n_packed));
    ck_assert_msg(n_packed < n_plain, "deflated %zu >= stored %zu bytes", n_packed, n_plain);
    const char *a3[] = {"run", pipeline, "--input", model, "--output", typo, "-r", rep, "--force",
                        "-q", "--set", "stages.writer.sink_options=compres=true", NULL};
    ck_assert_int_eq(th_run(NULL, &err, a3), 2);
    th_assert_contains(err, "output format 'npz' has no option 'compres'; did you mean "
                            "'compress'?");
    ck_assert(!th_exists(typo));
    free(err);
    free(plain);
    free(packed);
    free(typo);
    free(rep);
    th_rmtree(dir);
    free(dir);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("npz");
    TCase *tc = tcase_create("npz");

    tcase_add_checked_fixture(tc, np_setup, np_teardown);
    tcase_add_test(tc, npz_descriptor);
    tcase_add_test(tc, npz_probe);
    tcase_add_test(tc, npz_numpy_stored);
    tcase_add_test(tc, npz_numpy_compressed);
    tcase_add_test(tc, npz_read_any_order);
    tcase_add_test(tc, npz_header_versions);
    tcase_add_test(tc, npz_empty_archive);
    tcase_add_test(tc, npz_lone_npy);
    tcase_add_test(tc, npz_fortran_built);
    tcase_add_loop_test(tc, npz_bad_header, 0,
                        (int)(sizeof bad_headers / sizeof bad_headers[0]));
    tcase_add_test(tc, npz_header_dialects);
    tcase_add_loop_test(tc, npz_bad_archive, 0,
                        (int)(sizeof bad_archives / sizeof bad_archives[0]));
    tcase_add_test(tc, npz_open_missing);
    tcase_add_test(tc, npz_cli_sink_options);
    tcase_add_test(tc, npz_round_trip_stored);
    tcase_add_test(tc, npz_round_trip_compressed);
    tcase_add_test(tc, npz_write_empty_model);
    tcase_add_test(tc, npz_sink_errors);
    tcase_add_test(tc, npz_sink_names);
    tcase_add_test(tc, npz_real_f32);
    tcase_add_test(tc, npz_real_f16_compressed);
    tcase_add_test(tc, npz_cli_run);
    tcase_add_test(tc, npz_cli_errors);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(suite());
    int failed;
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
