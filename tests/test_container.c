/* The hvq container: the writer plugin, `hvqconv decode` and `inspect`, the
 * reader API, corrupt containers, and tools/hvq_read.py.
 *
 * The reference for bit-exactness is the dequant writer at dtype f32: it
 * writes the reconstruction W_hat the driver measured, so decoding the
 * container must give the same bytes. */
#include "config.h"

#include "container.h"
#include <zlib.h>
#include "dtype.h"
#include "harness.h"
#include "json.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define MODEL "models/stories260K"
#define PIPE "pipelines/int4-rtn.yaml"
#define N_TENSORS 47

static const char *const KMEANS_SETS[] = {
    "--set", "stages.clusterer.plugin=kmeans", "--set", "stages.clusterer.centroids=64",
    "--set", "stages.clusterer.fit=shrink", "--set", "stages.residual.plugin=coo16",
    "--set", "stages.residual.sparsity=0.02", "--set", "stages.importance.plugin=hasvq"};
#define N_KMEANS_SETS (sizeof KMEANS_SETS / sizeof KMEANS_SETS[0])

/* ---- helpers -------------------------------------------------------------- */

static char *dir; /* this test's temporary directory */

static void setup(void) { dir = th_tmpdir("container"); }

static void teardown(void)
{
    th_rmtree(dir);
    free(dir);
    dir = NULL;
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

/* Runs hvqconv with up to 64 arguments; out/err may be NULL. */
static int hvq(char **out, char **err, const char *const *args)
{
    return th_run(out, err, args);
}

static void hvq_ok(const char *const *args)
{
    char *err = NULL;
    int rc = th_run(NULL, &err, args);
    ck_assert_msg(rc == 0, "hvqconv %s %s failed (%d):\n%s", args[0], args[1] ? args[1] : "", rc,
                  err);
    free(err);
}

/* Compresses the demo model with int4-rtn (+ extra --set pairs) through
 * `writer` (plus its own --set) into out. */
static void run_compress(const char *out, const char *writer_set, const char *const *extra,
                     size_t n_extra)
{
    const char *args[64];
    size_t n = 0;
    static int report;
    char rpath[64];
    snprintf(rpath, sizeof rpath, "report-%d.json", report++);
    args[n++] = "run";
    args[n++] = th_src(PIPE);
    args[n++] = "--input";
    args[n++] = th_src(MODEL);
    args[n++] = "--output";
    args[n++] = out;
    args[n++] = "--report";
    args[n++] = P(rpath);
    args[n++] = "-q";
    for (size_t i = 0; i < n_extra; i++)
        args[n++] = extra[i];
    args[n++] = "--set";
    args[n++] = writer_set;
    args[n] = NULL;
    hvq_ok(args);
}

static void compress_hvq(const char *out, const char *const *extra, size_t n_extra)
{
    run_compress(out, "stages.writer.plugin=hvq", extra, n_extra);
}

static void compress_dequant(const char *out, const char *const *extra, size_t n_extra)
{
    run_compress(out, "stages.writer.dtype=f32", extra, n_extra);
}

static void decode_ok(const char *in, const char *out, const char *dtype)
{
    const char *args[] = {"decode", in, "-o", out, "--dtype", dtype, "-q", NULL};
    hvq_ok(args);
}

static char *slurp(const char *path, size_t *n)
{
    char *d = th_read_file(path, n);
    ck_assert_msg(d != NULL, "cannot read %s", path);
    return d;
}

static void assert_same_file(const char *a, const char *b)
{
    size_t na, nb;
    char *da = slurp(a, &na), *db = slurp(b, &nb);
    ck_assert_msg(na == nb && memcmp(da, db, na) == 0, "%s (%zu bytes) and %s (%zu bytes) differ",
                  a, na, b, nb);
    free(da);
    free(db);
}

/* Entries of dir (without . and ..). */
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

/* A safetensors file opened through the plugin. */
typedef struct stf {
    hvq_ctx *ctx;
    hvq_registry *reg;
    const hvq_loaded_plugin *pl;
    void *state;
} stf;

static void stf_open(stf *f, const char *path)
{
    f->ctx = th_ctx();
    f->reg = th_registry(f->ctx);
    f->pl = hvq_registry_find(f->reg, HVQ_KIND_SOURCE, "safetensors");
    ck_assert_ptr_nonnull(f->pl);
    f->state = NULL;
    hvq_status st = f->pl->desc.source_open(f->ctx, path, &f->state);
    ck_assert_msg(st == HVQ_OK, "%s", hvq_ctx_error(f->ctx));
}

static void stf_close(stf *f)
{
    f->pl->desc.source_close(f->ctx, f->state);
    hvq_registry_free(f->reg);
    hvq_ctx_free(f->ctx);
}

static size_t stf_count(stf *f) { return f->pl->desc.source_count(f->state); }

static hvq_tensor stf_read(stf *f, size_t i)
{
    hvq_tensor t;
    ck_assert_int_eq(f->pl->desc.source_read(f->ctx, f->state, i, &t), HVQ_OK);
    return t;
}

/* Index of name in f, or -1. */
static long stf_find(stf *f, const char *name)
{
    for (size_t i = 0; i < stf_count(f); i++) {
        hvq_tensor_info info;
        f->pl->desc.source_info(f->state, i, &info);
        if (strcmp(info.name, name) == 0)
            return (long)i;
    }
    return -1;
}

static void assert_same_tensor(const hvq_tensor *a, const hvq_tensor *b, const char *what)
{
    ck_assert_str_eq(a->info.name, b->info.name);
    ck_assert_msg(strcmp(a->info.dtype_name, b->info.dtype_name) == 0,
                  "%s: tensor '%s': dtype %s vs %s", what, a->info.name, a->info.dtype_name,
                  b->info.dtype_name);
    ck_assert_int_eq(a->info.ndim, b->info.ndim);
    for (int d = 0; d < a->info.ndim; d++)
        ck_assert_int_eq(a->info.shape[d], b->info.shape[d]);
    ck_assert_uint_eq(a->info.nbytes, b->info.nbytes);
    ck_assert_msg(memcmp(a->data, b->data, (size_t)a->info.nbytes) == 0,
                  "%s: tensor '%s' differs", what, a->info.name);
}

static void assert_same_meta(stf *a, stf *b)
{
    const hvq_meta *ma, *mb;
    size_t na, nb;
    a->pl->desc.source_meta(a->state, &ma, &na);
    b->pl->desc.source_meta(b->state, &mb, &nb);
    ck_assert_uint_eq(na, nb);
    for (size_t i = 0; i < na; i++) {
        ck_assert_str_eq(ma[i].key, mb[i].key);
        ck_assert_str_eq(ma[i].value, mb[i].value);
    }
}

/* The decoded model dec against the reference dequant output ref (for
 * compressed tensors) and the input model (for the others). */
static void assert_decoded(const char *dec, const char *ref)
{
    stf d, r, in;
    stf_open(&d, dec);
    stf_open(&r, ref);
    stf_open(&in, th_src(MODEL));
    ck_assert_uint_eq(stf_count(&d), N_TENSORS);
    ck_assert_uint_eq(stf_count(&r), N_TENSORS);
    size_t compressed = 0;
    for (size_t i = 0; i < stf_count(&d); i++) {
        hvq_tensor td = stf_read(&d, i), tr = stf_read(&r, i);
        long k = stf_find(&in, td.info.name);
        ck_assert_msg(k >= 0, "decoded tensor '%s' is not in the input", td.info.name);
        hvq_tensor ti = stf_read(&in, (size_t)k);
        /* every tensor equals the dequant writer's (W_hat, bit for bit) */
        assert_same_tensor(&td, &tr, "decoded vs dequant");
        if (memcmp(td.data, ti.data, (size_t)td.info.nbytes) != 0)
            compressed++;
        else /* untouched tensors equal the input's */
            assert_same_tensor(&td, &ti, "decoded vs input");
    }
    ck_assert_uint_ge(compressed, 30);
    assert_same_meta(&d, &in);
    stf_close(&d);
    stf_close(&r);
    stf_close(&in);
}

static int have_kmeans(void)
{
    hvq_ctx *ctx = th_ctx();
    hvq_registry *reg = th_registry(ctx);
    int ok = hvq_registry_find(reg, HVQ_KIND_CLUSTERER, "kmeans") != NULL &&
             hvq_registry_find(reg, HVQ_KIND_RESIDUAL, "coo16") != NULL &&
             hvq_registry_find(reg, HVQ_KIND_IMPORTANCE, "hasvq") != NULL;
    hvq_registry_free(reg);
    hvq_ctx_free(ctx);
    return ok;
}

/* The header of a container: its length N and parsed JSON. */
static hvq_json_doc *header_of(const char *data, size_t len, uint64_t *n)
{
    ck_assert_uint_ge(len, 8);
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | (unsigned char)data[i];
    ck_assert_uint_le(v, len - 8);
    *n = v;
    hvq_json_doc *doc = hvq_json_parse(data + 8, (size_t)v, 0, NULL);
    ck_assert_ptr_nonnull(doc);
    return doc;
}

/* Copies src to dst with the first occurrence of `from` in the header
 * replaced by `to` (same length, so offsets stay valid). */
static void copy_edited(const char *src, const char *dst, const char *from, const char *to,
                        int all)
{
    size_t n;
    char *d = slurp(src, &n);
    ck_assert_uint_eq(strlen(from), strlen(to));
    uint64_t hl;
    hvq_json_free(header_of(d, n, &hl));
    int hits = 0;
    for (char *p = d + 8; p + strlen(from) <= d + 8 + hl;) {
        char *q = memmem(p, (size_t)(d + 8 + hl - p), from, strlen(from));
        if (!q)
            break;
        memcpy(q, to, strlen(to));
        hits++;
        p = q + strlen(to);
        if (!all)
            break;
    }
    ck_assert_msg(hits > 0, "'%s' not found in the header of %s", from, src);
    th_write_file(dst, d, n);
    free(d);
}

/* Expects `hvqconv decode in` and `inspect in` to fail with status 2 and a
 * message containing want, leaving no output. */
static void assert_refused(const char *in, const char *want)
{
    const char *out = P("refused.safetensors");
    int before = dir_entries(dir);
    char *err = NULL;
    const char *args[] = {"decode", in, "-o", out, NULL};
    int rc = hvq(NULL, &err, args);
    ck_assert_msg(rc == 2, "decode %s: exit %d, expected 2:\n%s", in, rc, err);
    th_assert_contains(err, want);
    th_assert_contains(err, in);
    ck_assert_msg(!th_exists(out), "decode left %s behind", out);
    ck_assert_int_eq(dir_entries(dir), before); /* no temporary files either */
    free(err);
    err = NULL;
    const char *iargs[] = {"inspect", in, NULL};
    char *o = NULL;
    rc = hvq(&o, &err, iargs);
    ck_assert_msg(rc == 2, "inspect %s: exit %d, expected 2:\n%s", in, rc, err);
    th_assert_contains(err, want);
    free(err);
    free(o);
}

/* ---- CRC ------------------------------------------------------------------ */

/* The CRC-32 containers record is zlib's, and verify computes it in
 * segments joined with crc32_combine: the check values, and pieces joined
 * at every split give the one-pass value. */
START_TEST(test_crc32)
{
    ck_assert_uint_eq(crc32(0, (const Bytef *)"123456789", 9), 0xCBF43926u);
    ck_assert_uint_eq(crc32(0, (const Bytef *)"The quick brown fox jumps over the lazy dog", 43),
                      0x414FA339u);
    enum { N = 600 };
    unsigned char buf[N];
    uint32_t r = 12345u;
    for (size_t i = 0; i < N; i++) {
        r = r * 1103515245u + 12345u;
        buf[i] = (unsigned char)(r >> 16);
    }
    uLong whole = crc32(0, buf, N);
    for (size_t cut = 0; cut <= N; cut += 7)
        ck_assert_uint_eq(crc32_combine(crc32(0, buf, (uInt)cut), crc32(0, buf + cut,
                                                                          (uInt)(N - cut)),
                                        (z_off_t)(N - cut)),
                          whole);
}
END_TEST

/* ---- round trips ---------------------------------------------------------- */

START_TEST(test_rtn_roundtrip)
{
    compress_hvq(P("x.hvq"), NULL, 0);
    compress_dequant(P("d.safetensors"), NULL, 0);
    decode_ok(P("x.hvq"), P("y.safetensors"), "f32");
    assert_decoded(P("y.safetensors"), P("d.safetensors"));
    /* the same sink, tensors and metadata: the very same file */
    assert_same_file(P("y.safetensors"), P("d.safetensors"));
    /* the container itself is a safetensors file any reader opens */
    stf c;
    stf_open(&c, P("x.hvq"));
    ck_assert_int_ge(stf_find(&c, "model.layers.0.self_attn.q_proj.weight::clusterer.levels"), 0);
    ck_assert_int_ge(stf_find(&c, "model.embed_tokens.weight"), 0);
    ck_assert_int_lt(stf_find(&c, "model.layers.0.self_attn.q_proj.weight::scales"), 0);
    stf_close(&c);
    /* --dtype same keeps the original F32 */
    decode_ok(P("x.hvq"), P("same.safetensors"), "same");
    assert_same_file(P("same.safetensors"), P("d.safetensors"));
}
END_TEST

START_TEST(test_decode_f16)
{
    compress_hvq(P("x.hvq"), NULL, 0);
    compress_dequant(P("d.safetensors"), NULL, 0);
    decode_ok(P("x.hvq"), P("h.safetensors"), "f16");
    stf h, d;
    stf_open(&h, P("h.safetensors"));
    stf_open(&d, P("d.safetensors"));
    long k = stf_find(&h, "model.layers.2.mlp.down_proj.weight");
    ck_assert_int_ge(k, 0);
    hvq_tensor th = stf_read(&h, (size_t)k), td = stf_read(&d, (size_t)k);
    ck_assert_str_eq(th.info.dtype_name, "F16");
    ck_assert_uint_eq(th.info.nbytes, td.info.nbytes / 2);
    size_t n = (size_t)(td.info.nbytes / 4);
    float *f = malloc(n * sizeof *f);
    uint16_t *want = malloc(n * sizeof *want);
    memcpy(f, td.data, n * sizeof *f);
    ck_assert_int_eq(hvq_convert(NULL, HVQ_DTYPE_F16, want, HVQ_DTYPE_F32, f, n), HVQ_OK);
    ck_assert(memcmp(want, th.data, n * 2) == 0);
    /* raw tensors stay F32 */
    k = stf_find(&h, "model.norm.weight");
    ck_assert_str_eq(stf_read(&h, (size_t)k).info.dtype_name, "F32");
    free(f);
    free(want);
    stf_close(&h);
    stf_close(&d);
}
END_TEST

START_TEST(test_kmeans_roundtrip)
{
    if (!have_kmeans()) {
        fprintf(stderr, "test_kmeans_roundtrip: skipped: the kmeans, coo16 or hasvq plugin is "
                        "not built\n");
        return;
    }
    compress_hvq(P("k.hvq"), KMEANS_SETS, N_KMEANS_SETS);
    compress_dequant(P("kd.safetensors"), KMEANS_SETS, N_KMEANS_SETS);
    decode_ok(P("k.hvq"), P("ky.safetensors"), "f32");
    assert_decoded(P("ky.safetensors"), P("kd.safetensors"));
    assert_same_file(P("ky.safetensors"), P("kd.safetensors"));
    char *out = NULL;
    const char *args[] = {"inspect", P("k.hvq"), NULL};
    ck_assert_int_eq(hvq(&out, NULL, args), 0);
    th_assert_contains(out, "kmeans block_size=2 centroids=64");
    th_assert_contains(out, "coo16 count=");
    th_assert_contains(out, "checksums:      OK (47 tensors)");
    free(out);
}
END_TEST

/* The writer's streaming modes give the same tensors. */
START_TEST(test_writer_streaming)
{
    compress_dequant(P("d.safetensors"), NULL, 0);
    static const char *const stream[] = {"--set", "stages.writer.buffer_mib=0"};
    compress_hvq(P("s.hvq"), stream, 2);
    decode_ok(P("s.hvq"), P("s.safetensors"), "f32");
    assert_same_file(P("s.safetensors"), P("d.safetensors"));
    static const char *const reserve[] = {"--set", "stages.writer.header_reserve=200"};
    compress_hvq(P("r.hvq"), reserve, 2);
    decode_ok(P("r.hvq"), P("r.safetensors"), "f32");
    assert_same_file(P("r.safetensors"), P("d.safetensors"));
    /* the header is exactly the reservation */
    size_t n;
    char *data = slurp(P("r.hvq"), &n);
    uint64_t hl;
    hvq_json_free(header_of(data, n, &hl));
    ck_assert_uint_eq(hl, 200 * 1024);
    free(data);
    /* the default: an exact header, padded to 8 */
    data = slurp(P("s.hvq"), &n);
    char *data2;
    size_t n2;
    compress_hvq(P("e.hvq"), NULL, 0);
    data2 = slurp(P("e.hvq"), &n2);
    uint64_t hl2;
    hvq_json_free(header_of(data2, n2, &hl2));
    ck_assert_uint_eq(hl2 % 8, 0);
    size_t sp = 0;
    while (sp < hl2 && data2[8 + hl2 - 1 - sp] == ' ')
        sp++;
    ck_assert_uint_lt(sp, 8);
    ck_assert_uint_lt(n2, n); /* the streamed one reserved more */
    free(data);
    free(data2);
}
END_TEST

START_TEST(test_writer_reserve_too_small)
{
    char *err = NULL;
    const char *args[] = {"run", th_src(PIPE), "--input", th_src(MODEL), "--output",
                          P("small.hvq"), "--report", P("small.json"), "-q", "--set",
                          "stages.writer.plugin=hvq", "--set",
                          "stages.writer.header_reserve=8", NULL};
    int rc = hvq(NULL, &err, args);
    ck_assert_int_ne(rc, 0);
    th_assert_contains(err, "header_reserve");
    ck_assert(!th_exists(P("small.hvq")));
    ck_assert_int_eq(dir_entries(dir), 0);
    free(err);
}
END_TEST

/* The same arguments give the same bytes (the pipeline text, output path
 * included, is part of the container). */
START_TEST(test_deterministic)
{
    const char *args[] = {"run", th_src(PIPE), "--input", th_src(MODEL), "--output",
                          P("a.hvq"), "--report", P("a.json"), "-q", "--set",
                          "stages.writer.plugin=hvq", NULL};
    hvq_ok(args);
    ck_assert_int_eq(rename(P("a.hvq"), P("first.hvq")), 0);
    ck_assert_int_eq(unlink(P("a.json")), 0);
    hvq_ok(args);
    assert_same_file(P("a.hvq"), P("first.hvq"));
}
END_TEST

/* Opaque and integer dtypes pass through; BF16 and F16 are compressed and
 * decode as themselves with --dtype same. */
START_TEST(test_dtypes)
{
    /* a safetensors model built here */
    const char *hdr_fmt =
        "{\"__metadata__\":{\"k\":\"v\"},"
        "\"a.weight\":{\"dtype\":\"BF16\",\"shape\":[4,16],\"data_offsets\":[0,128]},"
        "\"ids\":{\"dtype\":\"I64\",\"shape\":[3],\"data_offsets\":[128,152]},"
        "\"f8\":{\"dtype\":\"F8_E4M3\",\"shape\":[5],\"data_offsets\":[152,157]},"
        "\"b.weight\":{\"dtype\":\"F16\",\"shape\":[2,3,8],\"data_offsets\":[157,253]}}";
    size_t hl = strlen(hdr_fmt), pad = (8 - hl % 8) % 8, total = 8 + hl + pad + 253;
    unsigned char *m = calloc(1, total);
    for (int i = 0; i < 8; i++)
        m[i] = (unsigned char)((hl + pad) >> (8 * i));
    memcpy(m + 8, hdr_fmt, hl);
    memset(m + 8 + hl, ' ', pad);
    unsigned char *data = m + 8 + hl + pad;
    for (int i = 0; i < 64; i++) { /* bf16 values */
        float f = (float)((i * 37) % 23 - 11) / 8.0f;
        uint16_t h = hvq_f32_to_bf16(f);
        memcpy(data + 2 * i, &h, 2);
    }
    for (int i = 128; i < 157; i++)
        data[i] = (unsigned char)(i * 7 + 3);
    for (int i = 0; i < 48; i++) {
        uint16_t h = hvq_f32_to_f16((float)(i % 9 - 4) / 3.0f);
        memcpy(data + 157 + 2 * i, &h, 2);
    }
    th_write_file(P("m.safetensors"), m, total);
    free(m);

    const char *base[] = {"run", th_src(PIPE), "--input", P("m.safetensors"), "-q", "--output"};
    const char *a1[] = {base[0], base[1], base[2], base[3], base[4], base[5], P("m.hvq"),
                        "--report", P("m1.json"), "--set", "stages.writer.plugin=hvq", NULL};
    hvq_ok(a1);
    const char *a2[] = {base[0], base[1], base[2], base[3], base[4], base[5], P("md.safetensors"),
                        "--report", P("m2.json"), NULL}; /* dequant, dtype same */
    hvq_ok(a2);
    decode_ok(P("m.hvq"), P("my.safetensors"), "same");
    assert_same_file(P("my.safetensors"), P("md.safetensors"));
    stf y, in;
    stf_open(&y, P("my.safetensors"));
    stf_open(&in, P("m.safetensors"));
    ck_assert_uint_eq(stf_count(&y), 4);
    for (size_t i = 0; i < 4; i++) {
        hvq_tensor t = stf_read(&y, i), o = stf_read(&in, i);
        ck_assert_str_eq(t.info.dtype_name, o.info.dtype_name);
        if (strcmp(t.info.name, "ids") == 0 || strcmp(t.info.name, "f8") == 0)
            assert_same_tensor(&t, &o, "raw");
    }
    assert_same_meta(&y, &in);
    stf_close(&y);
    stf_close(&in);
}
END_TEST

/* ---- the reader API ------------------------------------------------------- */

START_TEST(test_api)
{
    compress_hvq(P("x.hvq"), NULL, 0);
    compress_dequant(P("d.safetensors"), NULL, 0);
    hvq_ctx *ctx = th_ctx();
    hvq_registry *reg = th_registry(ctx);
    hvq_container *c = NULL;
    ck_assert_msg(hvq_container_open(ctx, reg, P("x.hvq"), &c) == HVQ_OK, "%s",
                  hvq_ctx_error(ctx));
    ck_assert_uint_eq(hvq_container_count(c), N_TENSORS);
    ck_assert_str_eq(hvq_container_meta(c, "format"), "hvq");
    ck_assert_str_eq(hvq_container_meta(c, "hvq.source_format"), "safetensors");
    const hvq_meta *sm;
    size_t nsm;
    hvq_container_source_meta(c, &sm, &nsm);
    ck_assert_uint_eq(nsm, 1);
    ck_assert_str_eq(sm[0].key, "format");
    ck_assert_str_eq(sm[0].value, "pt");
    stf d;
    stf_open(&d, P("d.safetensors"));
    size_t n_comp = 0;
    for (size_t i = 0; i < hvq_container_count(c); i++) {
        const hvq_container_tensor *t = hvq_container_info(c, i);
        hvq_tensor ref = stf_read(&d, i);
        ck_assert_str_eq(t->name, ref.info.name);
        ck_assert_int_eq(hvq_container_verify(ctx, c, i), HVQ_OK);
        float *buf = malloc((size_t)t->numel * sizeof *buf);
        ck_assert_int_eq(hvq_container_read_decoded(ctx, c, i, buf), HVQ_OK);
        ck_assert(memcmp(buf, ref.data, (size_t)t->numel * 4) == 0);
        free(buf);
        if (t->compressed) {
            n_comp++;
            ck_assert_str_eq(t->clusterer.plugin, "rtn");
            ck_assert_str_eq(t->residual.plugin, "none");
            ck_assert_uint_eq(t->rows * t->cols, t->numel);
            ck_assert_int_eq(t->has_scales, 0);
            ck_assert_int_eq(t->has_paper_bits, 1);
        } else {
            hvq_tensor raw;
            ck_assert_int_eq(hvq_container_read_raw(ctx, c, i, &raw), HVQ_OK);
            ck_assert_uint_eq(raw.info.nbytes, ref.info.nbytes);
            ck_assert(memcmp(raw.data, ref.data, (size_t)raw.info.nbytes) == 0);
        }
    }
    ck_assert_uint_eq(n_comp, 35);
    stf_close(&d);
    hvq_container_close(ctx, c);
    /* a plain safetensors model is not a container */
    ck_assert_int_eq(hvq_container_open(ctx, reg, th_src(MODEL "/model.safetensors"), &c),
                     HVQ_E_INPUT);
    th_assert_contains(hvq_ctx_error(ctx), "not an hvq container");
    ck_assert_ptr_null(c);
    hvq_registry_free(reg);
    hvq_ctx_free(ctx);
}
END_TEST

/* The source plugin "hvq" (formats/hvq/reader.c) on its own: never chosen
 * by probe, a plain source of the stored tensors, and a container view in
 * which every stored tensor is some entry's part exactly once. */
START_TEST(test_source_plugin)
{
    compress_hvq(P("x.hvq"), NULL, 0);
    hvq_ctx *ctx = th_ctx();
    hvq_registry *reg = th_registry(ctx);
    hvq_ctx_set_registry(ctx, reg);
    const hvq_loaded_plugin *pl = hvq_registry_find(reg, HVQ_KIND_SOURCE, "hvq");
    ck_assert_ptr_nonnull(pl);
    ck_assert_ptr_nonnull(pl->desc.container_view);
    ck_assert_ptr_nonnull(pl->desc.container_part);
    ck_assert_int_eq(pl->desc.probe(P("x.hvq"), (const unsigned char *)"x", 1), 0);
    const hvq_loaded_plugin *det = hvq_registry_detect(reg, ctx, P("x.hvq"));
    ck_assert_ptr_nonnull(det);
    ck_assert_str_eq(det->desc.name, "safetensors"); /* a container is a safetensors file */
    void *state = NULL;
    ck_assert_msg(pl->desc.source_open(ctx, P("x.hvq"), &state) == HVQ_OK, "%s",
                  hvq_ctx_error(ctx));
    const hvq_container_view *v = pl->desc.container_view(state);
    ck_assert_uint_eq(v->n, N_TENSORS);
    size_t parts = 0;
    uint64_t bytes = 0;
    for (size_t i = 0; i < v->n; i++) {
        const hvq_container_tensor *t = &v->tensors[i];
        uint64_t sum = 0;
        for (size_t k = 0; k < t->n_stored; k++) {
            hvq_tensor part;
            int role;
            const char *key;
            ck_assert_int_eq(pl->desc.container_part(ctx, state, i, k, 1, &part, &role, &key),
                             HVQ_OK);
            ck_assert(t->compressed ? role != HVQ_PART_DATA || t->has_scales
                                    : role == HVQ_PART_DATA);
            ck_assert(role == HVQ_PART_DATA ? key == NULL : key != NULL);
            ck_assert(part.data != NULL || part.info.nbytes == 0);
            sum += part.info.nbytes;
            parts++;
        }
        ck_assert_uint_eq(sum, t->stored_bytes);
        bytes += sum;
    }
    ck_assert_uint_eq(parts, pl->desc.source_count(state));
    for (size_t i = 0; i < pl->desc.source_count(state); i++) {
        hvq_tensor_info info;
        ck_assert_int_eq(pl->desc.source_info(state, i, &info), HVQ_OK);
        bytes -= info.nbytes;
    }
    ck_assert_uint_eq(bytes, 0);
    ck_assert_int_eq(pl->desc.container_part(ctx, state, v->n, 0, 0, &(hvq_tensor){0},
                                             &(int){0}, &(const char *){NULL}),
                     HVQ_E_INTERNAL);
    pl->desc.source_close(ctx, state);
    hvq_registry_free(reg);
    hvq_ctx_free(ctx);
}
END_TEST

/* ---- inspect -------------------------------------------------------------- */

START_TEST(test_inspect)
{
    compress_hvq(P("x.hvq"), NULL, 0);
    char *out = NULL, *err = NULL;
    const char *args[] = {"inspect", P("x.hvq"), NULL};
    int rc = hvq(&out, &err, args);
    ck_assert_msg(rc == 0, "inspect failed: %s", err);
    th_assert_contains(out, "format version 1");
    th_assert_contains(out, "producer:       hvqconv " PACKAGE_VERSION);
    th_assert_contains(out, "source format:  safetensors");
    th_assert_contains(out, "pipeline:       int4-rtn");
    th_assert_contains(out, "tensors:        47 (35 compressed, 12 stored raw)");
    th_assert_contains(out, "rtn group_size=0 mode=symmetric + none");
    th_assert_contains(out, "checksums:      OK (47 tensors)");
    stf in;
    stf_open(&in, th_src(MODEL));
    for (size_t i = 0; i < stf_count(&in); i++) {
        hvq_tensor_info info;
        in.pl->desc.source_info(in.state, i, &info);
        th_assert_contains(out, info.name);
    }
    stf_close(&in);
    free(out);
    free(err);

    const char *jargs[] = {"inspect", "--json", P("x.hvq"), NULL};
    ck_assert_int_eq(hvq(&out, NULL, jargs), 0);
    hvq_json_doc *doc = hvq_json_parse(out, strlen(out), HVQ_JSON_NO_DUPLICATES, NULL);
    ck_assert_msg(doc != NULL, "inspect --json is not JSON:\n%s", out);
    const hvq_json_value *root = hvq_json_root(doc);
    ck_assert_uint_eq(hvq_json_count(hvq_json_get(root, "tensors")), N_TENSORS);
    ck_assert_str_eq(hvq_json_string(hvq_json_get(root, "checksums"), NULL), "ok");
    ck_assert_str_eq(hvq_json_string(hvq_json_get(root, "pipeline"), NULL), "int4-rtn");
    const hvq_json_value *t2 = hvq_json_item(hvq_json_get(root, "tensors"), 2);
    ck_assert_str_eq(hvq_json_string(hvq_json_get(t2, "encoding"), NULL), "hvq");
    ck_assert_str_eq(hvq_json_string(hvq_json_get(hvq_json_get(t2, "clusterer"), "plugin"), NULL),
                     "rtn");
    hvq_json_free(doc);
    free(out);

    const char *hargs[] = {"inspect", "--help", NULL};
    ck_assert_int_eq(hvq(&out, NULL, hargs), 0);
    th_assert_contains(out, "Usage: hvqconv inspect");
    free(out);
}
END_TEST

/* ---- broken containers ---------------------------------------------------- */

START_TEST(test_corrupt_checksum)
{
    compress_hvq(P("x.hvq"), NULL, 0);
    size_t n;
    char *d = slurp(P("x.hvq"), &n);
    uint64_t hl;
    hvq_json_doc *doc = header_of(d, n, &hl);
    const char *victim = "model.layers.1.mlp.up_proj.weight";
    const hvq_json_value *e =
        hvq_json_get(hvq_json_root(doc), "model.layers.1.mlp.up_proj.weight::clusterer.levels");
    ck_assert_ptr_nonnull(e);
    uint64_t begin;
    ck_assert_int_eq(hvq_json_uint64(hvq_json_item(hvq_json_get(e, "data_offsets"), 0), &begin),
                     0);
    d[8 + hl + begin + 5] ^= 0x10;
    hvq_json_free(doc);
    th_write_file(P("bad.hvq"), d, n);
    free(d);
    assert_refused(P("bad.hvq"), "checksum mismatch");
    char *err = NULL;
    const char *args[] = {"decode", P("bad.hvq"), "-o", P("o.safetensors"), NULL};
    ck_assert_int_eq(hvq(NULL, &err, args), 2);
    char want[256];
    snprintf(want, sizeof want, "tensor '%s': checksum mismatch (stored 0x", victim);
    th_assert_contains(err, want);
    th_assert_contains(err, ", computed 0x");
    free(err);
    /* inspect still describes the container, and names the mismatch */
    char *out = NULL;
    const char *iargs[] = {"inspect", P("bad.hvq"), NULL};
    ck_assert_int_eq(hvq(&out, NULL, iargs), 2);
    th_assert_contains(out, "CHECKSUM MISMATCH");
    th_assert_contains(out, "checksums:      FAILED");
    free(out);
}
END_TEST

START_TEST(test_not_a_container)
{
    compress_hvq(P("x.hvq"), NULL, 0);
    copy_edited(P("x.hvq"), P("fmt.hvq"), "\"format\":\"hvq\"", "\"format\":\"hvx\"", 0);
    assert_refused(P("fmt.hvq"), "not an hvq container");
    /* the model itself */
    assert_refused(th_src(MODEL "/model.safetensors"), "not an hvq container");
    /* not even safetensors */
    th_write_file(P("junk.hvq"), "hello, world\n", 13);
    char *err = NULL;
    const char *args[] = {"decode", P("junk.hvq"), "-o", P("o.safetensors"), NULL};
    ck_assert_int_eq(hvq(NULL, &err, args), 2);
    th_assert_contains(err, P("junk.hvq"));
    free(err);
}
END_TEST

START_TEST(test_newer_version)
{
    compress_hvq(P("x.hvq"), NULL, 0);
    copy_edited(P("x.hvq"), P("v2.hvq"), "\"hvq.format_version\":\"1\"",
                "\"hvq.format_version\":\"2\"", 0);
    char want[PATH_MAX + 128];
    snprintf(want, sizeof want,
             "%s: container format version 2 is newer than this hvqconv supports (1)",
             P("v2.hvq"));
    assert_refused(P("v2.hvq"), want);
}
END_TEST

START_TEST(test_missing_component)
{
    compress_hvq(P("x.hvq"), NULL, 0);
    /* rename the component in hvq.tensors only (escaped quotes there) */
    copy_edited(P("x.hvq"), P("mc.hvq"),
                "self_attn.k_proj.weight::clusterer.scales\\\"",
                "self_attn.k_proj.weight::clusterer.scalez\\\"", 0);
    assert_refused(P("mc.hvq"), "::clusterer.scalez') is not listed in \"stored\"");
    /* rename it in "stored" and "components" alike: the real tensor is then
     * listed by nobody */
    copy_edited(P("x.hvq"), P("mc2.hvq"),
                "layers.0.self_attn.k_proj.weight::clusterer.scales\\\"",
                "layers.0.self_attn.k_proj.weight::clusterer.scalez\\\"", 1);
    assert_refused(P("mc2.hvq"), "::clusterer.scalez' is not in the container");
}
END_TEST

START_TEST(test_rows_cols_mismatch)
{
    compress_hvq(P("x.hvq"), NULL, 0);
    copy_edited(P("x.hvq"), P("rc.hvq"), "\\\"rows\\\":64,\\\"cols\\\":64",
                "\\\"rows\\\":64,\\\"cols\\\":63", 0);
    assert_refused(P("rc.hvq"), "rows x cols = 64 x 63 does not match the 4096 elements");
}
END_TEST

START_TEST(test_truncated)
{
    compress_hvq(P("x.hvq"), NULL, 0);
    size_t n;
    char *d = slurp(P("x.hvq"), &n);
    th_write_file(P("t1.hvq"), d, n - 100);
    th_write_file(P("t2.hvq"), d, n / 2);
    th_write_file(P("t3.hvq"), d, 5);
    free(d);
    assert_refused(P("t1.hvq"), "t1.hvq: ");
    assert_refused(P("t2.hvq"), "t2.hvq: ");
    assert_refused(P("t3.hvq"), "truncated");
}
END_TEST

START_TEST(test_missing_plugin)
{
    compress_hvq(P("x.hvq"), NULL, 0);
    copy_edited(P("x.hvq"), P("np.hvq"), "\\\"plugin\\\":\\\"rtn\\\"",
                "\\\"plugin\\\":\\\"rtx\\\"", 0);
    char *err = NULL;
    const char *args[] = {"decode", P("np.hvq"), "-o", P("o.safetensors"), NULL};
    ck_assert_int_eq(hvq(NULL, &err, args), 2);
    th_assert_contains(err, "needs the clusterer plugin 'rtx' (version 1.0.0), which is not "
                            "installed");
    ck_assert(!th_exists(P("o.safetensors")));
    free(err);
    /* inspect does not need it */
    const char *iargs[] = {"inspect", P("np.hvq"), NULL};
    char *out = NULL;
    ck_assert_int_eq(hvq(&out, NULL, iargs), 0);
    th_assert_contains(out, "rtx group_size=0");
    free(out);
}
END_TEST

/* ---- the command line ----------------------------------------------------- */

START_TEST(test_decode_cli)
{
    compress_hvq(P("x.hvq"), NULL, 0);
    char *out = NULL, *err = NULL;
    const char *help[] = {"decode", "--help", NULL};
    ck_assert_int_eq(hvq(&out, NULL, help), 0);
    th_assert_contains(out, "Usage: hvqconv decode");
    free(out);
    const char *noout[] = {"decode", P("x.hvq"), NULL};
    ck_assert_int_eq(hvq(NULL, &err, noout), 2);
    th_assert_contains(err, "-o PATH");
    free(err);
    const char *badtype[] = {"decode", P("x.hvq"), "-o", P("y.safetensors"), "--dtype", "f8",
                             NULL};
    ck_assert_int_eq(hvq(NULL, &err, badtype), 2);
    th_assert_contains(err, "--dtype f8");
    free(err);
    const char *badfmt[] = {"decode", P("x.hvq"), "-o", P("y.bin"), "--format", "nosuch", NULL};
    ck_assert_int_eq(hvq(NULL, &err, badfmt), 2);
    th_assert_contains(err, "nosuch");
    free(err);
    ck_assert(!th_exists(P("y.bin")));
    /* an unknown extension falls back to the source format */
    const char *fallback[] = {"decode", P("x.hvq"), "-o", P("y.bin"), "-q", NULL};
    hvq_ok(fallback);
    stf f;
    stf_open(&f, P("y.bin"));
    ck_assert_uint_eq(stf_count(&f), N_TENSORS);
    stf_close(&f);
    /* an existing output is kept unless --force */
    th_write_file(P("keep.safetensors"), "precious", 8);
    const char *exists[] = {"decode", P("x.hvq"), "-o", P("keep.safetensors"), NULL};
    ck_assert_int_eq(hvq(NULL, &err, exists), 2);
    th_assert_contains(err, "already exists");
    free(err);
    size_t n;
    char *k = slurp(P("keep.safetensors"), &n);
    ck_assert(n == 8 && memcmp(k, "precious", 8) == 0);
    free(k);
    const char *force[] = {"decode", P("x.hvq"), "-o", P("keep.safetensors"), "--force", "-q",
                           NULL};
    hvq_ok(force);
    /* the output may not be the input */
    const char *self[] = {"decode", P("x.hvq"), "-o", P("x.hvq"), "--force", NULL};
    ck_assert_int_eq(hvq(NULL, &err, self), 2);
    th_assert_contains(err, "may not be the input");
    free(err);
    /* the main help lists the commands */
    const char *mh[] = {"--help", NULL};
    ck_assert_int_eq(hvq(&out, NULL, mh), 0);
    th_assert_contains(out, "decode FILE.hvq");
    th_assert_contains(out, "inspect FILE.hvq");
    free(out);
}
END_TEST

/* ---- tools/hvq_read.py ---------------------------------------------------- */

static int find_python(char *path, size_t len)
{
    const char *env = getenv("PATH");
    if (!env)
        return 0;
    char *copy = strdup(env), *save = NULL;
    int found = 0;
    for (char *d = strtok_r(copy, ":", &save); d && !found; d = strtok_r(NULL, ":", &save)) {
        snprintf(path, len, "%s/python3", *d ? d : ".");
        found = access(path, X_OK) == 0;
    }
    free(copy);
    return found;
}

/* Runs argv (argv[0] a path), stdout and stderr into *out (malloc'd). */
static int run_prog(char **out, const char *const *argv)
{
    char tmpl[PATH_MAX];
    snprintf(tmpl, sizeof tmpl, "%s/py-out-XXXXXX", dir);
    int fd = mkstemp(tmpl);
    ck_assert_int_ge(fd, 0);
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        dup2(fd, 1);
        dup2(fd, 2);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    close(fd);
    *out = th_read_file(tmpl, NULL);
    unlink(tmpl);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

static void python_check(const char *hvqfile, const char *decoded)
{
    char py[PATH_MAX];
    ck_assert(find_python(py, sizeof py));
    char *out = NULL;
    const char *cmp[] = {py, th_src("tools/hvq_read.py"), hvqfile, "--compare", decoded, NULL};
    int rc = run_prog(&out, cmp);
    ck_assert_msg(rc == 0, "hvq_read.py --compare failed (%d):\n%s", rc, out);
    th_assert_contains(out, "47 tensors decoded, 0 differ");
    free(out);
    /* and as a file: every tensor bit for bit, the metadata too */
    const char *wr[] = {py, th_src("tools/hvq_read.py"), hvqfile, "-o", P("py.safetensors"), NULL};
    rc = run_prog(&out, wr);
    ck_assert_msg(rc == 0, "hvq_read.py -o failed (%d):\n%s", rc, out);
    free(out);
    stf a, b;
    stf_open(&a, P("py.safetensors"));
    stf_open(&b, decoded);
    ck_assert_uint_eq(stf_count(&a), stf_count(&b));
    for (size_t i = 0; i < stf_count(&b); i++) {
        hvq_tensor tb = stf_read(&b, i);
        long k = stf_find(&a, tb.info.name);
        ck_assert_int_ge(k, 0);
        hvq_tensor ta = stf_read(&a, (size_t)k);
        assert_same_tensor(&ta, &tb, "hvq_read.py vs hvqconv decode");
    }
    assert_same_meta(&a, &b);
    stf_close(&a);
    stf_close(&b);
    unlink(P("py.safetensors"));
}

START_TEST(test_python_reader)
{
    char py[PATH_MAX];
    if (!find_python(py, sizeof py)) {
        fprintf(stderr, "test_python_reader: skipped: no python3 on PATH\n");
        return;
    }
    compress_hvq(P("x.hvq"), NULL, 0);
    decode_ok(P("x.hvq"), P("y.safetensors"), "f32");
    python_check(P("x.hvq"), P("y.safetensors"));
    /* a sharded container, through its index */
    static const char *const shard_sets[] = {"--set", "stages.writer.max_shard_size=100KB"};
    run_compress(P("s.hvq"), "stages.writer.plugin=hvq", shard_sets, 2);
    ck_assert(th_exists(P("s.hvq.index.json")));
    python_check(P("s.hvq.index.json"), P("y.safetensors"));
    if (!have_kmeans()) {
        fprintf(stderr, "test_python_reader: kmeans case skipped: the kmeans plugin is not "
                        "built\n");
        return;
    }
    compress_hvq(P("k.hvq"), KMEANS_SETS, N_KMEANS_SETS);
    decode_ok(P("k.hvq"), P("ky.safetensors"), "f32");
    python_check(P("k.hvq"), P("ky.safetensors"));
    /* the residual rice (its bit stream read from docs/FORMAT.md alone):
     * the same weights as with coo16 */
    const char *rice_sets[N_KMEANS_SETS + 2];
    memcpy(rice_sets, KMEANS_SETS, sizeof KMEANS_SETS);
    rice_sets[N_KMEANS_SETS] = "--set";
    rice_sets[N_KMEANS_SETS + 1] = "stages.residual.plugin=rice";
    compress_hvq(P("r.hvq"), rice_sets, N_KMEANS_SETS + 2);
    python_check(P("r.hvq"), P("ky.safetensors"));
}
END_TEST

static Suite *container_suite(void)
{
    Suite *s = suite_create("container");
    TCase *t = tcase_create("container");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 600);
    tcase_add_test(t, test_crc32);
    tcase_add_test(t, test_rtn_roundtrip);
    tcase_add_test(t, test_decode_f16);
    tcase_add_test(t, test_kmeans_roundtrip);
    tcase_add_test(t, test_writer_streaming);
    tcase_add_test(t, test_writer_reserve_too_small);
    tcase_add_test(t, test_deterministic);
    tcase_add_test(t, test_dtypes);
    tcase_add_test(t, test_api);
    tcase_add_test(t, test_source_plugin);
    tcase_add_test(t, test_inspect);
    tcase_add_test(t, test_corrupt_checksum);
    tcase_add_test(t, test_not_a_container);
    tcase_add_test(t, test_newer_version);
    tcase_add_test(t, test_missing_component);
    tcase_add_test(t, test_rows_cols_mismatch);
    tcase_add_test(t, test_truncated);
    tcase_add_test(t, test_missing_plugin);
    tcase_add_test(t, test_decode_cli);
    tcase_add_test(t, test_python_reader);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(container_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
