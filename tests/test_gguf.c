/* Tests of the GGUF plugin (formats/gguf/).
 *
 * Every small file is built here, byte by byte, by a little GGUF writer
 * that lays files out as ggml's own writer does (header padded to the
 * alignment, each tensor at the next aligned offset and padded after), so
 * "read and write back" can be compared byte for byte. The real models in
 * ../shared/data are used when present (skipped cleanly otherwise): the
 * llama.cpp-written stories260K GGUF files, compared with the Hugging Face
 * safetensors of the same model and rewritten byte-identically, and the
 * real binary end to end (GGUF in, GGUF out; GGUF in, .hvq, decode to
 * GGUF). */
#include "config.h"

#include "harness.h"
#include "json.h"

#include <check.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ========================================================================
 * A small GGUF writer for fixtures
 * ====================================================================== */
typedef struct gb {
    unsigned char *d;
    size_t len, cap;
} gb;

static void gb_raw(gb *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        b->d = realloc(b->d, cap);
        ck_assert_ptr_nonnull(b->d);
        b->cap = cap;
    }
    if (n)
        memcpy(b->d + b->len, p, n);
    b->len += n;
}

static void gb_le(gb *b, uint64_t v, int n)
{
    unsigned char c[8];
    int i;
    for (i = 0; i < n; i++)
        c[i] = (unsigned char)(v >> (8 * i));
    gb_raw(b, c, (size_t)n);
}

static void gb_u8(gb *b, uint8_t v) { gb_le(b, v, 1); }
static void gb_u16(gb *b, uint16_t v) { gb_le(b, v, 2); }
static void gb_u32(gb *b, uint32_t v) { gb_le(b, v, 4); }
static void gb_u64(gb *b, uint64_t v) { gb_le(b, v, 8); }

static void gb_f32(gb *b, float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    gb_u32(b, u);
}

static void gb_f64(gb *b, double f)
{
    uint64_t u;
    memcpy(&u, &f, 8);
    gb_u64(b, u);
}

static void gb_strn(gb *b, const char *s, size_t n)
{
    gb_u64(b, n);
    gb_raw(b, s, n);
}

static void gb_str(gb *b, const char *s) { gb_strn(b, s, strlen(s)); }

static void gb_free(gb *b)
{
    free(b->d);
    memset(b, 0, sizeof *b);
}

/* Patches n little-endian bytes at pos. */
static void gb_set(gb *b, size_t pos, uint64_t v, int n)
{
    int i;
    ck_assert_uint_le(pos + (size_t)n, b->len);
    for (i = 0; i < n; i++)
        b->d[pos + (size_t)i] = (unsigned char)(v >> (8 * i));
}

/* Value types. */
enum { T_U8, T_I8, T_U16, T_I16, T_U32, T_I32, T_F32, T_BOOL, T_STR,
       T_ARR, T_U64, T_I64, T_F64 };

static void kv_head(gb *b, const char *key, uint32_t type)
{
    gb_str(b, key);
    gb_u32(b, type);
}

/* A tensor for gb_file. */
typedef struct bt {
    const char *name;
    uint32_t type;      /* ggml type id */
    uint32_t nd;
    uint64_t ne[4];     /* ne[0] innermost */
    const void *data;
    size_t nbytes;
} bt;

/* Where the parts of a file built by gb_file are. */
typedef struct layout {
    size_t kv_end;            /* end of the metadata */
    size_t tinfo[16];         /* start of each tensor info */
    size_t data_start;
    uint64_t offset[16];      /* each tensor's data offset */
} layout;

static uint64_t pad_to(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

/* A whole file laid out as ggml's writer lays it out. */
static void gb_file(gb *out, uint32_t version, const gb *kvs, uint64_t n_kv,
                    const bt *t, size_t n, uint32_t align, layout *lay)
{
    layout l;
    uint64_t off = 0;
    size_t i;
    memset(&l, 0, sizeof l);
    ck_assert_uint_le(n, 16);
    gb_raw(out, "GGUF", 4);
    gb_u32(out, version);
    gb_u64(out, n);
    gb_u64(out, n_kv);
    if (kvs)
        gb_raw(out, kvs->d, kvs->len);
    l.kv_end = out->len;
    for (i = 0; i < n; i++) {
        uint32_t d;
        l.tinfo[i] = out->len;
        gb_str(out, t[i].name);
        gb_u32(out, t[i].nd);
        for (d = 0; d < t[i].nd; d++)
            gb_u64(out, t[i].ne[d]);
        gb_u32(out, t[i].type);
        gb_u64(out, off);
        l.offset[i] = off;
        off += pad_to(t[i].nbytes, align);
    }
    while (out->len % align)
        gb_u8(out, 0);
    l.data_start = out->len;
    for (i = 0; i < n; i++) {
        gb_raw(out, t[i].data, t[i].nbytes);
        while ((out->len - l.data_start) % align)
            gb_u8(out, 0);
    }
    if (lay)
        *lay = l;
}

/* ========================================================================
 * Fixture and helpers
 * ====================================================================== */
static hvq_ctx *g_ctx;
static hvq_registry *g_reg;
static const hvq_plugin *gg;
static char *g_dir;

static void gg_setup(void)
{
    const hvq_loaded_plugin *lp;
    g_ctx = th_ctx();
    g_reg = th_registry(g_ctx);
    lp = hvq_registry_find(g_reg, HVQ_KIND_SOURCE, "gguf");
    ck_assert_msg(lp != NULL, "gguf plugin not loaded");
    gg = &lp->desc;
    g_dir = th_tmpdir("gguf");
}

static void gg_teardown(void)
{
    hvq_ctx_free(g_ctx);
    hvq_registry_free(g_reg);
    th_rmtree(g_dir);
    free(g_dir);
    g_ctx = NULL;
    g_reg = NULL;
    gg = NULL;
    g_dir = NULL;
}

/* "TMPDIR/name" in a rotating static buffer. */
static const char *tmp(const char *name)
{
    static char bufs[8][4096];
    static int k;
    char *b = bufs[k++ % 8];
    snprintf(b, 4096, "%s/%s", g_dir, name);
    return b;
}

static const char *save(const char *name, const gb *b)
{
    const char *p = tmp(name);
    th_write_file(p, b->d, b->len);
    return p;
}

static void *open_ok(const char *path)
{
    void *state = NULL;
    hvq_status s = gg->source_open(g_ctx, path, &state);
    ck_assert_msg(s == HVQ_OK, "open %s: %d %s", path, s,
                  hvq_ctx_error(g_ctx));
    ck_assert_ptr_nonnull(state);
    return state;
}

static const char *meta_get(void *src, const char *key)
{
    const hvq_meta *m;
    size_t n, i;
    gg->source_meta(src, &m, &n);
    for (i = 0; i < n; i++)
        if (strcmp(m[i].key, key) == 0)
            return m[i].value;
    return NULL;
}

static int find_tensor(void *src, const char *name)
{
    size_t i, n = gg->source_count(src);
    for (i = 0; i < n; i++) {
        hvq_tensor_info ti;
        ck_assert_int_eq(gg->source_info(src, i, &ti), HVQ_OK);
        if (strcmp(ti.name, name) == 0)
            return (int)i;
    }
    return -1;
}

/* Reads every tensor and the metadata of src and writes them to out
 * through the sink, then commits. */
static void rewrite(void *src, const char *out)
{
    size_t i, n = gg->source_count(src), n_meta;
    hvq_tensor_info *info = calloc(n ? n : 1, sizeof *info);
    const hvq_meta *m;
    void *sink = NULL;
    hvq_status s;
    ck_assert_ptr_nonnull(info);
    for (i = 0; i < n; i++)
        ck_assert_int_eq(gg->source_info(src, i, &info[i]), HVQ_OK);
    gg->source_meta(src, &m, &n_meta);
    s = gg->sink_create(g_ctx, out, m, n_meta, info, n, &sink);
    ck_assert_msg(s == HVQ_OK, "sink_create %s: %s", out,
                  hvq_ctx_error(g_ctx));
    for (i = 0; i < n; i++) {
        hvq_tensor t;
        ck_assert_int_eq(gg->source_read(g_ctx, src, i, &t), HVQ_OK);
        s = gg->sink_write(g_ctx, sink, &t);
        ck_assert_msg(s == HVQ_OK, "%s", hvq_ctx_error(g_ctx));
    }
    ck_assert_int_eq(gg->sink_finish(g_ctx, sink), HVQ_OK);
    gg->sink_close(g_ctx, sink);
    ck_assert_msg(hvq_outputs_commit(g_ctx) == HVQ_OK, "%s",
                  hvq_ctx_error(g_ctx));
    free(info);
}

/* cmp(1): 1 when both files hold the same bytes; else prints the first
 * difference. */
static int same_bytes(const char *a, const char *b)
{
    size_t na, nb, i;
    char *x = th_read_file(a, &na), *y = th_read_file(b, &nb);
    int same;
    ck_assert_ptr_nonnull(x);
    ck_assert_ptr_nonnull(y);
    same = na == nb && memcmp(x, y, na) == 0;
    if (!same) {
        for (i = 0; i < na && i < nb && x[i] == y[i]; i++)
            ;
        fprintf(stderr, "%s and %s differ: byte %zu (sizes %zu, %zu)\n", a,
                b, i, na, nb);
    }
    free(x);
    free(y);
    return same;
}

/* A reference fp16 -> float, written differently from the plugin's. */
static float ref_half(uint16_t h)
{
    int e = (h >> 10) & 0x1f, m = h & 0x3ff;
    double v;
    if (e == 0)
        v = ldexp((double)m, -24);
    else if (e == 31)
        v = m ? NAN : INFINITY;
    else
        v = ldexp((double)(m | 0x400), e - 25);
    return (float)((h & 0x8000) ? -v : v);
}

/* ========================================================================
 * Descriptor and probe
 * ====================================================================== */
START_TEST(gguf_descriptor)
{
    ck_assert_str_eq(gg->name, "gguf");
    ck_assert_str_eq(gg->version, "1.0.0");
    ck_assert_str_eq(gg->license, "MIT");
    ck_assert_uint_eq(gg->kinds, HVQ_KIND_SOURCE | HVQ_KIND_SINK);
    ck_assert_str_eq(gg->extensions, ".gguf");
    ck_assert_ptr_nonnull(hvq_registry_find(g_reg, HVQ_KIND_SINK, "gguf"));
    /* The host picks it for a .gguf output. */
    ck_assert_ptr_eq(&hvq_registry_sink_for(g_reg, g_ctx, "x/y.gguf")->desc,
                     gg);
}
END_TEST

START_TEST(gguf_probe)
{
    gb b = {0};
    const char *p;
    gb_file(&b, 3, NULL, 0, NULL, 0, 32, NULL);
    p = save("empty.gguf", &b);
    ck_assert_int_eq(gg->probe(p, b.d, b.len), 95);
    /* The host's detection picks it. */
    ck_assert_ptr_eq(&hvq_registry_detect(g_reg, g_ctx, p)->desc, gg);
    /* No head given: the probe reads nothing itself (the host's detection
     * gives the head); the name alone gives a low score. */
    ck_assert_int_eq(gg->probe(p, NULL, 0), 10);
    p = save("magic-only.bin", &b);
    ck_assert_int_eq(gg->probe(p, b.d, 4), 95);
    memcpy(b.d, "GGML", 4);
    p = save("bad.gguf", &b);
    ck_assert_int_eq(gg->probe(p, b.d, b.len), 10);
    p = save("bad.bin", &b);
    ck_assert_int_eq(gg->probe(p, b.d, b.len), 0);
    ck_assert_int_eq(gg->probe(g_dir, NULL, 0), 0);
    ck_assert_int_eq(gg->probe(tmp("absent.gguf"), NULL, 0), 0);
    gb_free(&b);
}
END_TEST

/* ========================================================================
 * Metadata: every type, nested arrays, exact round trip
 * ====================================================================== */
static const char k_str[] = "a \"quote\" \\ back\nslash \xc3\xa9\x01\ttab";
#define K_STR_LEN (sizeof k_str - 1)
static const char k_str_nul[] = "nul\0inside";
#define K_STR_NUL_LEN (sizeof k_str_nul - 1)

typedef struct want_kv {
    const char *key;
    const char *json;   /* NULL: checked separately */
} want_kv;

static const want_kv all_types[] = {
    {"t.u8", "{\"gguf_type\":\"uint8\",\"value\":255}"},
    {"t.i8", "{\"gguf_type\":\"int8\",\"value\":-128}"},
    {"t.u16", "{\"gguf_type\":\"uint16\",\"value\":65535}"},
    {"t.i16", "{\"gguf_type\":\"int16\",\"value\":-32768}"},
    {"t.u32", "{\"gguf_type\":\"uint32\",\"value\":4294967295}"},
    {"t.i32", "{\"gguf_type\":\"int32\",\"value\":-2147483648}"},
    {"t.u64", "{\"gguf_type\":\"uint64\",\"value\":18446744073709551615}"},
    {"t.i64", "{\"gguf_type\":\"int64\",\"value\":-9223372036854775808}"},
    {"t.i64max", "{\"gguf_type\":\"int64\",\"value\":9223372036854775807}"},
    {"t.f32", "{\"gguf_type\":\"float32\",\"value\":0.100000001}"},
    {"t.f32.eps", "{\"gguf_type\":\"float32\",\"value\":9.99999975e-06}"},
    {"t.f32.neg0", "{\"gguf_type\":\"float32\",\"value\":-0}"},
    {"t.f32.denorm", "{\"gguf_type\":\"float32\",\"value\":1.40129846e-45}"},
    {"t.f32.max", "{\"gguf_type\":\"float32\",\"value\":3.40282347e+38}"},
    {"t.f32.nan", "{\"gguf_type\":\"float32\",\"value\":\"nan\"}"},
    {"t.f32.inf", "{\"gguf_type\":\"float32\",\"value\":\"inf\"}"},
    {"t.f32.ninf", "{\"gguf_type\":\"float32\",\"value\":\"-inf\"}"},
    {"t.f64", "{\"gguf_type\":\"float64\",\"value\":0.10000000000000001}"},
    {"t.f64.min",
     "{\"gguf_type\":\"float64\",\"value\":4.9406564584124654e-324}"},
    {"t.f64.big", "{\"gguf_type\":\"float64\",\"value\":1e+308}"},
    {"t.f64.third", "{\"gguf_type\":\"float64\",\"value\":0.33333333333333331}"},
    {"t.f64.nan", "{\"gguf_type\":\"float64\",\"value\":\"nan\"}"},
    {"t.f64.ninf", "{\"gguf_type\":\"float64\",\"value\":\"-inf\"}"},
    {"t.bool.t", "{\"gguf_type\":\"bool\",\"value\":true}"},
    {"t.bool.f", "{\"gguf_type\":\"bool\",\"value\":false}"},
    {"t.str", "{\"gguf_type\":\"string\",\"value\":\"a \\\"quote\\\" \\\\ "
              "back\\nslash \xc3\xa9\\u0001\\ttab\"}"},
    {"t.str.nul", "{\"gguf_type\":\"string\",\"value\":\"nul\\u0000inside\"}"},
    {"t.str.empty", "{\"gguf_type\":\"string\",\"value\":\"\"}"},
    {"t.arr.u8",
     "{\"gguf_type\":\"array\",\"item_type\":\"uint8\",\"value\":[0,1,255]}"},
    {"t.arr.i64",
     "{\"gguf_type\":\"array\",\"item_type\":\"int64\",\"value\":"
     "[-9223372036854775808,9223372036854775807,0]}"},
    {"t.arr.u64",
     "{\"gguf_type\":\"array\",\"item_type\":\"uint64\",\"value\":"
     "[18446744073709551615,1]}"},
    {"t.arr.f32",
     "{\"gguf_type\":\"array\",\"item_type\":\"float32\",\"value\":"
     "[0.5,\"nan\",-0,\"-inf\",16777216]}"},
    {"t.arr.f64",
     "{\"gguf_type\":\"array\",\"item_type\":\"float64\",\"value\":"
     "[1e-300,-2.5]}"},
    {"t.arr.str",
     "{\"gguf_type\":\"array\",\"item_type\":\"string\",\"value\":"
     "[\"x\",\"\",\"<0x0A>\"]}"},
    {"t.arr.bool",
     "{\"gguf_type\":\"array\",\"item_type\":\"bool\",\"value\":"
     "[true,false]}"},
    {"t.arr.small",
     "{\"gguf_type\":\"array\",\"item_type\":\"int8\",\"value\":[-1,127]}"},
    {"t.arr.u16",
     "{\"gguf_type\":\"array\",\"item_type\":\"uint16\",\"value\":[7]}"},
    {"t.arr.i16",
     "{\"gguf_type\":\"array\",\"item_type\":\"int16\",\"value\":[-7]}"},
    {"t.arr.u32",
     "{\"gguf_type\":\"array\",\"item_type\":\"uint32\",\"value\":[7]}"},
    {"t.arr.empty",
     "{\"gguf_type\":\"array\",\"item_type\":\"int32\",\"value\":[]}"},
    {"t.arr.nested",
     "{\"gguf_type\":\"array\",\"item_type\":\"array\",\"value\":["
     "{\"gguf_type\":\"array\",\"item_type\":\"int16\",\"value\":[1,2]},"
     "{\"gguf_type\":\"array\",\"item_type\":\"int16\",\"value\":[3]}]}"},
    {"t.arr.nested3",
     "{\"gguf_type\":\"array\",\"item_type\":\"array\",\"value\":["
     "{\"gguf_type\":\"array\",\"item_type\":\"array\",\"value\":["
     "{\"gguf_type\":\"array\",\"item_type\":\"string\",\"value\":[\"a\"]}"
     "]},"
     "{\"gguf_type\":\"array\",\"item_type\":\"uint8\",\"value\":[]}]}"},
};
#define N_ALL_TYPES (sizeof all_types / sizeof all_types[0])

static void build_all_types(gb *kv)
{
    float nanf_ = NAN;
    uint32_t qnan32 = 0x7fc00000u;
    uint64_t qnan64 = 0x7ff8000000000000ull;
    memcpy(&nanf_, &qnan32, 4);
    kv_head(kv, "t.u8", T_U8); gb_u8(kv, 255);
    kv_head(kv, "t.i8", T_I8); gb_u8(kv, 0x80);
    kv_head(kv, "t.u16", T_U16); gb_u16(kv, 65535);
    kv_head(kv, "t.i16", T_I16); gb_u16(kv, 0x8000);
    kv_head(kv, "t.u32", T_U32); gb_u32(kv, 4294967295u);
    kv_head(kv, "t.i32", T_I32); gb_u32(kv, 0x80000000u);
    kv_head(kv, "t.u64", T_U64); gb_u64(kv, UINT64_MAX);
    kv_head(kv, "t.i64", T_I64); gb_u64(kv, 0x8000000000000000ull);
    kv_head(kv, "t.i64max", T_I64); gb_u64(kv, INT64_MAX);
    kv_head(kv, "t.f32", T_F32); gb_f32(kv, 0.1f);
    kv_head(kv, "t.f32.eps", T_F32); gb_f32(kv, 1e-5f);
    kv_head(kv, "t.f32.neg0", T_F32); gb_f32(kv, -0.0f);
    kv_head(kv, "t.f32.denorm", T_F32); gb_u32(kv, 1);
    kv_head(kv, "t.f32.max", T_F32); gb_f32(kv, FLT_MAX);
    kv_head(kv, "t.f32.nan", T_F32); gb_u32(kv, qnan32);
    kv_head(kv, "t.f32.inf", T_F32); gb_f32(kv, INFINITY);
    kv_head(kv, "t.f32.ninf", T_F32); gb_f32(kv, -INFINITY);
    kv_head(kv, "t.f64", T_F64); gb_f64(kv, 0.1);
    kv_head(kv, "t.f64.min", T_F64); gb_u64(kv, 1);
    kv_head(kv, "t.f64.big", T_F64); gb_f64(kv, 1e308);
    kv_head(kv, "t.f64.third", T_F64); gb_f64(kv, 1.0 / 3.0);
    kv_head(kv, "t.f64.nan", T_F64); gb_u64(kv, qnan64);
    kv_head(kv, "t.f64.ninf", T_F64); gb_f64(kv, -INFINITY);
    kv_head(kv, "t.bool.t", T_BOOL); gb_u8(kv, 1);
    kv_head(kv, "t.bool.f", T_BOOL); gb_u8(kv, 0);
    kv_head(kv, "t.str", T_STR); gb_strn(kv, k_str, K_STR_LEN);
    kv_head(kv, "t.str.nul", T_STR); gb_strn(kv, k_str_nul, K_STR_NUL_LEN);
    kv_head(kv, "t.str.empty", T_STR); gb_str(kv, "");
    kv_head(kv, "t.arr.u8", T_ARR); gb_u32(kv, T_U8); gb_u64(kv, 3);
    gb_u8(kv, 0); gb_u8(kv, 1); gb_u8(kv, 255);
    kv_head(kv, "t.arr.i64", T_ARR); gb_u32(kv, T_I64); gb_u64(kv, 3);
    gb_u64(kv, 0x8000000000000000ull); gb_u64(kv, INT64_MAX); gb_u64(kv, 0);
    kv_head(kv, "t.arr.u64", T_ARR); gb_u32(kv, T_U64); gb_u64(kv, 2);
    gb_u64(kv, UINT64_MAX); gb_u64(kv, 1);
    kv_head(kv, "t.arr.f32", T_ARR); gb_u32(kv, T_F32); gb_u64(kv, 5);
    gb_f32(kv, 0.5f); gb_u32(kv, qnan32); gb_f32(kv, -0.0f);
    gb_f32(kv, -INFINITY); gb_f32(kv, 16777216.0f);
    kv_head(kv, "t.arr.f64", T_ARR); gb_u32(kv, T_F64); gb_u64(kv, 2);
    gb_f64(kv, 1e-300); gb_f64(kv, -2.5);
    kv_head(kv, "t.arr.str", T_ARR); gb_u32(kv, T_STR); gb_u64(kv, 3);
    gb_str(kv, "x"); gb_str(kv, ""); gb_str(kv, "<0x0A>");
    kv_head(kv, "t.arr.bool", T_ARR); gb_u32(kv, T_BOOL); gb_u64(kv, 2);
    gb_u8(kv, 1); gb_u8(kv, 0);
    kv_head(kv, "t.arr.small", T_ARR); gb_u32(kv, T_I8); gb_u64(kv, 2);
    gb_u8(kv, 0xff); gb_u8(kv, 127);
    kv_head(kv, "t.arr.u16", T_ARR); gb_u32(kv, T_U16); gb_u64(kv, 1);
    gb_u16(kv, 7);
    kv_head(kv, "t.arr.i16", T_ARR); gb_u32(kv, T_I16); gb_u64(kv, 1);
    gb_u16(kv, (uint16_t)-7);
    kv_head(kv, "t.arr.u32", T_ARR); gb_u32(kv, T_U32); gb_u64(kv, 1);
    gb_u32(kv, 7);
    kv_head(kv, "t.arr.empty", T_ARR); gb_u32(kv, T_I32); gb_u64(kv, 0);
    kv_head(kv, "t.arr.nested", T_ARR); gb_u32(kv, T_ARR); gb_u64(kv, 2);
    gb_u32(kv, T_I16); gb_u64(kv, 2); gb_u16(kv, 1); gb_u16(kv, 2);
    gb_u32(kv, T_I16); gb_u64(kv, 1); gb_u16(kv, 3);
    kv_head(kv, "t.arr.nested3", T_ARR); gb_u32(kv, T_ARR); gb_u64(kv, 2);
    gb_u32(kv, T_ARR); gb_u64(kv, 1);
    gb_u32(kv, T_STR); gb_u64(kv, 1); gb_str(kv, "a");
    gb_u32(kv, T_U8); gb_u64(kv, 0);
}

START_TEST(gguf_meta_all_types)
{
    gb kv = {0}, f = {0};
    float w[2] = {1.5f, -2.0f};
    bt t[1] = {{"w", 0, 1, {2}, w, sizeof w}};
    const char *p, *out;
    void *src, *back;
    const hvq_meta *m;
    size_t n, i;

    build_all_types(&kv);
    gb_file(&f, 3, &kv, N_ALL_TYPES, t, 1, 32, NULL);
    p = save("types.gguf", &f);
    src = open_ok(p);
    gg->source_meta(src, &m, &n);
    ck_assert_uint_eq(n, N_ALL_TYPES);
    for (i = 0; i < N_ALL_TYPES; i++) {
        ck_assert_str_eq(m[i].key, all_types[i].key);
        ck_assert_msg(strcmp(m[i].value, all_types[i].json) == 0,
                      "%s:\n got  %s\n want %s", m[i].key, m[i].value,
                      all_types[i].json);
    }
    /* The strings decode to the exact bytes, NUL included. */
    {
        hvq_json_doc *doc = hvq_json_parse(m[25].value, strlen(m[25].value),
                                           0, NULL);
        const hvq_json_value *v;
        ck_assert_ptr_nonnull(doc);
        v = hvq_json_get(hvq_json_root(doc), "value");
        ck_assert_uint_eq(v->len, K_STR_LEN);
        ck_assert(memcmp(v->str, k_str, K_STR_LEN) == 0);
        hvq_json_free(doc);
        doc = hvq_json_parse(m[26].value, strlen(m[26].value), 0, NULL);
        ck_assert_ptr_nonnull(doc);
        v = hvq_json_get(hvq_json_root(doc), "value");
        ck_assert_uint_eq(v->len, K_STR_NUL_LEN);
        ck_assert(memcmp(v->str, k_str_nul, K_STR_NUL_LEN) == 0);
        hvq_json_free(doc);
    }
    /* Every value is valid JSON. */
    for (i = 0; i < n; i++) {
        hvq_json_doc *doc = hvq_json_parse(m[i].value, strlen(m[i].value),
                                           HVQ_JSON_NO_DUPLICATES, NULL);
        ck_assert_msg(doc != NULL, "%s is not valid JSON", m[i].key);
        hvq_json_free(doc);
    }

    /* Written back: the same bytes (floats, NaNs, -0, 64-bit integers,
     * NUL in strings, nested arrays all exact). */
    out = tmp("types-copy.gguf");
    rewrite(src, out);
    ck_assert(same_bytes(p, out));
    back = open_ok(out);
    gg->source_meta(back, &m, &n);
    ck_assert_uint_eq(n, N_ALL_TYPES);
    for (i = 0; i < n; i++)
        ck_assert_str_eq(m[i].value, all_types[i].json);
    gg->source_close(g_ctx, back);
    gg->source_close(g_ctx, src);
    gb_free(&kv);
    gb_free(&f);
}
END_TEST

/* The sink: plain strings, JSON that is not the typed form, typed values
 * written in any member order and spacing, alignment from the metadata. */
START_TEST(gguf_sink_meta_texts)
{
    static const hvq_meta meta[] = {
        {"format", "pt"},
        {"json.other", "{\"a\":1}"},
        {"json.array", "[1,2]"},
        {"json.bad", "{\"gguf_type\""},  /* not JSON: a string */
        {"general.alignment", "{\"gguf_type\":\"uint32\",\"value\":64}"},
        {"f", "{\"gguf_type\":\"float32\",\"value\":\"-inf\"}"},
        {"spaced", " { \"value\" : 7 , \"gguf_type\" : \"uint16\" } "},
        {"exp", "{\"gguf_type\":\"float64\",\"value\":2.5e-3}"},
        {"i8neg0", "{\"gguf_type\":\"int8\",\"value\":-0}"},
        {"nest", "{\"gguf_type\":\"array\",\"item_type\":\"array\","
                 "\"value\":[]}"},
        {"big", "{\"gguf_type\":\"int64\",\"value\":-9223372036854775807}"},
    };
    static const char *const reread[] = {
        "{\"gguf_type\":\"string\",\"value\":\"pt\"}",
        "{\"gguf_type\":\"string\",\"value\":\"{\\\"a\\\":1}\"}",
        "{\"gguf_type\":\"string\",\"value\":\"[1,2]\"}",
        "{\"gguf_type\":\"string\",\"value\":\"{\\\"gguf_type\\\"\"}",
        "{\"gguf_type\":\"uint32\",\"value\":64}",
        "{\"gguf_type\":\"float32\",\"value\":\"-inf\"}",
        "{\"gguf_type\":\"uint16\",\"value\":7}",
        "{\"gguf_type\":\"float64\",\"value\":0.0025000000000000001}",
        "{\"gguf_type\":\"int8\",\"value\":0}",
        "{\"gguf_type\":\"array\",\"item_type\":\"array\",\"value\":[]}",
        "{\"gguf_type\":\"int64\",\"value\":-9223372036854775807}",
    };
    enum { NM = sizeof meta / sizeof meta[0] };
    uint16_t f16[6] = {0x3c00, 0xc000, 0x0001, 0x7bff, 0x8000, 0x3555};
    unsigned char q8[34];
    hvq_tensor_info info[2];
    void *sink = NULL, *src;
    const char *p = tmp("texts.gguf");
    const hvq_meta *m;
    size_t n, i, flen;
    char *file;
    hvq_tensor t;

    memset(info, 0, sizeof info);
    info[0].name = "x";
    info[0].dtype = HVQ_DTYPE_F16;
    info[0].ndim = 2;
    info[0].shape[0] = 2;
    info[0].shape[1] = 3;
    info[0].nbytes = sizeof f16;
    info[1].name = "y";
    info[1].dtype = HVQ_DTYPE_OPAQUE;
    info[1].dtype_name = "q8_0"; /* any case */
    info[1].ndim = 2;
    info[1].shape[0] = 1;
    info[1].shape[1] = 32;
    info[1].nbytes = sizeof q8;
    q8[0] = 0x00;
    q8[1] = 0x38; /* d = 0.5 */
    for (i = 0; i < 32; i++)
        q8[2 + i] = (unsigned char)(int8_t)((int)i - 16);

    ck_assert_msg(gg->sink_create(g_ctx, p, meta, NM, info, 2, &sink) ==
                      HVQ_OK,
                  "%s", hvq_ctx_error(g_ctx));
    t.info = info[0];
    t.data = f16;
    ck_assert_int_eq(gg->sink_write(g_ctx, sink, &t), HVQ_OK);
    t.info = info[1];
    t.data = q8;
    ck_assert_int_eq(gg->sink_write(g_ctx, sink, &t), HVQ_OK);
    ck_assert_int_eq(gg->sink_finish(g_ctx, sink), HVQ_OK);
    gg->sink_close(g_ctx, sink);
    ck_assert_msg(!th_exists(p), "output visible before commit");
    ck_assert_int_eq(hvq_outputs_commit(g_ctx), HVQ_OK);

    /* Layout: alignment 64 everywhere, padding after the last tensor. */
    file = th_read_file(p, &flen);
    ck_assert_ptr_nonnull(file);
    ck_assert_uint_eq(flen % 64, 0);
    ck_assert(memcmp(file, "GGUF\3\0\0\0", 8) == 0);
    free(file);

    src = open_ok(p);
    gg->source_meta(src, &m, &n);
    ck_assert_uint_eq(n, NM);
    for (i = 0; i < NM; i++) {
        ck_assert_str_eq(m[i].key, meta[i].key);
        ck_assert_str_eq(m[i].value, reread[i]);
    }
    ck_assert_uint_eq(gg->source_count(src), 2);
    ck_assert_int_eq(gg->source_read(g_ctx, src, 0, &t), HVQ_OK);
    ck_assert_int_eq(t.info.dtype, HVQ_DTYPE_F16);
    ck_assert_str_eq(t.info.dtype_name, "F16");
    ck_assert_int_eq(t.info.ndim, 2);
    ck_assert_int_eq(t.info.shape[0], 2);
    ck_assert_int_eq(t.info.shape[1], 3);
    ck_assert(memcmp(t.data, f16, sizeof f16) == 0);
    ck_assert_uint_eq(((uintptr_t)t.data) % 64, 0);
    ck_assert_int_eq(gg->source_read(g_ctx, src, 1, &t), HVQ_OK);
    ck_assert_int_eq(t.info.dtype, HVQ_DTYPE_F32);
    ck_assert_uint_eq(t.info.nbytes, 32 * 4);
    for (i = 0; i < 32; i++)
        ck_assert(((const float *)t.data)[i] == 0.5f * (float)((int)i - 16));
    gg->source_close(g_ctx, src);
}
END_TEST

/* Values far larger than the sink's 64 KiB of buffered output: array
 * counts patched in the file once the items are out (nested ones too),
 * read back as the same text; a bad item deep in such an array is named. */
START_TEST(gguf_sink_large_values)
{
    enum { N_OUTER = 3, N_INNER = 40000 };
    size_t cap = (size_t)N_OUTER * N_INNER * 8 + 4096, o = 0, i, k;
    char *nested = malloc(cap), *flat = malloc(cap);
    const char *p = tmp("large.gguf");
    hvq_meta meta[2];
    hvq_tensor_info info;
    hvq_tensor t;
    float w[2] = {1, 2};
    void *sink = NULL, *src;

    ck_assert_ptr_nonnull(nested);
    ck_assert_ptr_nonnull(flat);
    o += (size_t)snprintf(nested + o, cap - o, "{\"gguf_type\":\"array\","
                          "\"item_type\":\"array\",\"value\":[");
    for (k = 0; k < N_OUTER; k++) {
        o += (size_t)snprintf(nested + o, cap - o, "%s{\"gguf_type\":\"array\","
                              "\"item_type\":\"uint16\",\"value\":[", k ? "," : "");
        for (i = 0; i < N_INNER / (k + 1); i++)
            o += (size_t)snprintf(nested + o, cap - o, "%s%zu", i ? "," : "",
                                  (i * 7 + k) % 65536);
        o += (size_t)snprintf(nested + o, cap - o, "]}");
    }
    snprintf(nested + o, cap - o, "]}");
    o = (size_t)snprintf(flat, cap, "{\"gguf_type\":\"array\",\"item_type\":"
                         "\"string\",\"value\":[");
    for (i = 0; i < N_INNER; i++)
        o += (size_t)snprintf(flat + o, cap - o, "%s\"s%zu\"", i ? "," : "", i);
    snprintf(flat + o, cap - o, "]}");
    meta[0].key = "test.nested";
    meta[0].value = nested;
    meta[1].key = "test.flat";
    meta[1].value = flat;
    memset(&info, 0, sizeof info);
    info.name = "w";
    info.dtype = HVQ_DTYPE_F32;
    info.ndim = 1;
    info.shape[0] = 2;
    info.nbytes = sizeof w;
    ck_assert_msg(gg->sink_create(g_ctx, p, meta, 2, &info, 1, &sink) == HVQ_OK,
                  "%s", hvq_ctx_error(g_ctx));
    t.info = info;
    t.data = w;
    ck_assert_int_eq(gg->sink_write(g_ctx, sink, &t), HVQ_OK);
    ck_assert_int_eq(gg->sink_finish(g_ctx, sink), HVQ_OK);
    gg->sink_close(g_ctx, sink);
    ck_assert_int_eq(hvq_outputs_commit(g_ctx), HVQ_OK);
    src = open_ok(p);
    ck_assert_str_eq(meta_get(src, "test.nested"), nested);
    ck_assert_str_eq(meta_get(src, "test.flat"), flat);
    gg->source_close(g_ctx, src);

    /* The last item of the last inner array out of range. */
    o = strlen(nested) - 3;
    while (nested[o] != ',')
        o--;
    memcpy(nested + o, ",70000", 6);
    ck_assert_str_eq(nested + o + 6, "]}]}");
    sink = (void *)1;
    ck_assert_int_eq(gg->sink_create(g_ctx, tmp("bad.gguf"), meta, 2, &info, 1, &sink),
                     HVQ_E_INPUT);
    ck_assert_ptr_null(sink);
    th_assert_contains(hvq_ctx_error(g_ctx), "bad.gguf: metadata 'test.nested' (array item");
    th_assert_contains(hvq_ctx_error(g_ctx), "the uint16 value 70000 is not an integer in "
                                             "0..65535");
    ck_assert(!th_exists(tmp("bad.gguf")));
    free(nested);
    free(flat);
}
END_TEST

typedef struct sink_bad {
    const char *key, *value;      /* one metadata entry, or NULL */
    hvq_dtype dtype;              /* tensor "w" */
    const char *dtype_name;
    int ndim;
    int64_t shape[5];
    uint64_t nbytes;
    const char *name;             /* NULL: "w" */
    hvq_status status;
    const char *reason;
} sink_bad;

static const sink_bad sink_bads[] = {
    {NULL, NULL, HVQ_DTYPE_U8, NULL, 1, {4}, 4, NULL, HVQ_E_UNSUPPORTED,
     "tensor 'w': dtype U8 cannot be stored in GGUF"},
    {NULL, NULL, HVQ_DTYPE_BOOL, NULL, 1, {4}, 4, NULL, HVQ_E_UNSUPPORTED,
     "dtype BOOL cannot be stored in GGUF"},
    {NULL, NULL, HVQ_DTYPE_OPAQUE, "F8_E4M3", 1, {4}, 4, NULL,
     HVQ_E_UNSUPPORTED, "dtype 'F8_E4M3' is not a ggml type"},
    {NULL, NULL, HVQ_DTYPE_F32, NULL, 5, {1, 1, 1, 1, 2}, 8, NULL,
     HVQ_E_UNSUPPORTED, "5 dimensions; GGUF allows at most 4"},
    {NULL, NULL, HVQ_DTYPE_F32, NULL, 2, {2, 3}, 20, NULL, HVQ_E_INPUT,
     "declared as 20 bytes but F32 [2, 3] needs 24"},
    {NULL, NULL, HVQ_DTYPE_OPAQUE, "Q4_K", 2, {2, 100}, 288, NULL,
     HVQ_E_INPUT, "the row length of Q4_K [2, 100] is not a multiple of the "
                  "Q4_K block size 256"},
    {NULL, NULL, HVQ_DTYPE_F32, NULL, 1, {-1}, 0, NULL, HVQ_E_INPUT,
     "shape dimension 0 is negative"},
    {NULL, NULL, HVQ_DTYPE_F32, NULL, 1, {1}, 4,
     "a.name.that.is.sixty.four.bytes.long.which.llama.cpp.cannot.load",
     HVQ_E_UNSUPPORTED, "is 64 bytes; GGUF readers (llama.cpp) accept at most 63"},
    {"k", "{\"gguf_type\":\"uint8\",\"value\":300}", HVQ_DTYPE_F32, NULL, 1,
     {1}, 4, NULL, HVQ_E_INPUT,
     "metadata 'k': the uint8 value 300 is not an integer in 0..255"},
    {"k", "{\"gguf_type\":\"int32\",\"value\":1.5}", HVQ_DTYPE_F32, NULL, 1,
     {1}, 4, NULL, HVQ_E_INPUT, "the int32 value 1.5 is not an integer"},
    {"k", "{\"gguf_type\":\"uint64\",\"value\":-1}", HVQ_DTYPE_F32, NULL, 1,
     {1}, 4, NULL, HVQ_E_INPUT, "the uint64 value -1 is not an integer"},
    {"k", "{\"gguf_type\":\"int64\",\"value\":9223372036854775808}",
     HVQ_DTYPE_F32, NULL, 1, {1}, 4, NULL, HVQ_E_INPUT,
     "the int64 value 9223372036854775808 is not an integer"},
    {"k", "{\"gguf_type\":\"uint7\",\"value\":1}", HVQ_DTYPE_F32, NULL, 1,
     {1}, 4, NULL, HVQ_E_INPUT, "unknown gguf_type \"uint7\""},
    {"k", "{\"gguf_type\":\"uint8\"}", HVQ_DTYPE_F32, NULL, 1, {1}, 4, NULL,
     HVQ_E_INPUT, "metadata 'k': no \"value\""},
    {"k", "{\"gguf_type\":\"array\",\"value\":[1]}", HVQ_DTYPE_F32, NULL, 1,
     {1}, 4, NULL, HVQ_E_INPUT, "an array needs \"item_type\""},
    {"k", "{\"gguf_type\":\"array\",\"item_type\":\"int8\",\"value\":3}",
     HVQ_DTYPE_F32, NULL, 1, {1}, 4, NULL, HVQ_E_INPUT,
     "the array's \"value\" is a number, expected a JSON array"},
    {"k", "{\"gguf_type\":\"uint8\",\"value\":1,\"x\":2}", HVQ_DTYPE_F32,
     NULL, 1, {1}, 4, NULL, HVQ_E_INPUT, "unexpected member \"x\""},
    {"k", "{\"gguf_type\":\"uint8\",\"value\":1,\"value\":2}", HVQ_DTYPE_F32,
     NULL, 1, {1}, 4, NULL, HVQ_E_INPUT, "\"value\" appears twice"},
    {"k", "{\"gguf_type\":\"float32\",\"value\":1e39}", HVQ_DTYPE_F32, NULL,
     1, {1}, 4, NULL, HVQ_E_INPUT, "1e39 is out of range for float32"},
    {"k", "{\"gguf_type\":\"float64\",\"value\":\"NaN\"}", HVQ_DTYPE_F32,
     NULL, 1, {1}, 4, NULL, HVQ_E_INPUT,
     "the float64 value is the string \"NaN\""},
    {"k", "{\"gguf_type\":\"bool\",\"value\":1}", HVQ_DTYPE_F32, NULL, 1, {1},
     4, NULL, HVQ_E_INPUT, "expected true or false"},
    {"k", "{\"gguf_type\":\"string\",\"value\":1}", HVQ_DTYPE_F32, NULL, 1,
     {1}, 4, NULL, HVQ_E_INPUT, "the string value is a number"},
    {"k", "{\"gguf_type\":\"array\",\"item_type\":\"uint8\",\"value\":[1,"
          "256]}",
     HVQ_DTYPE_F32, NULL, 1, {1}, 4, NULL, HVQ_E_INPUT,
     "metadata 'k' (array item 1): the uint8 value 256"},
    {"k", "{\"gguf_type\":\"array\",\"item_type\":\"array\",\"value\":[[1]]}",
     HVQ_DTYPE_F32, NULL, 1, {1}, 4, NULL, HVQ_E_INPUT,
     "an item of an array of arrays is a array, expected an object"},
    {"k", "{\"gguf_type\":\"array\",\"item_type\":\"array\",\"value\":[{"
          "\"gguf_type\":\"uint8\",\"value\":1}]}",
     HVQ_DTYPE_F32, NULL, 1, {1}, 4, NULL, HVQ_E_INPUT,
     "has gguf_type \"uint8\", expected \"array\""},
    {"general.alignment", "64", HVQ_DTYPE_F32, NULL, 1, {1}, 4, NULL,
     HVQ_E_INPUT, "metadata 'general.alignment' is the plain string \"64\"; "
                  "it must be a uint32"},
    {"general.alignment", "{\"gguf_type\":\"uint64\",\"value\":64}",
     HVQ_DTYPE_F32, NULL, 1, {1}, 4, NULL, HVQ_E_INPUT,
     "has type uint64; it must be a uint32"},
    {"general.alignment", "{\"gguf_type\":\"uint32\",\"value\":3}",
     HVQ_DTYPE_F32, NULL, 1, {1}, 4, NULL, HVQ_E_INPUT,
     "metadata 'general.alignment' is 3; it must be a power of two"},
    {"general.alignment", "{\"gguf_type\":\"uint32\",\"value\":0}",
     HVQ_DTYPE_F32, NULL, 1, {1}, 4, NULL, HVQ_E_INPUT,
     "is 0; it must be a power of two"},
    {"", "x", HVQ_DTYPE_F32, NULL, 1, {1}, 4, NULL, HVQ_E_INPUT,
     "a metadata key is empty"},
};

START_TEST(gguf_sink_errors)
{
    const sink_bad *c = &sink_bads[_i];
    const char *p = tmp("bad-sink.gguf");
    hvq_tensor_info info;
    hvq_meta m;
    hvq_sink_handle *sink;
    hvq_status s;
    const char *msg;

    memset(&info, 0, sizeof info);
    info.name = c->name ? c->name : "w";
    info.dtype = c->dtype;
    info.dtype_name = c->dtype_name;
    info.ndim = c->ndim;
    memcpy(info.shape, c->shape, sizeof c->shape);
    info.nbytes = c->nbytes;
    m.key = c->key;
    m.value = c->value;
    /* through the host, which makes the checks common to every format */
    sink = g_ctx->host->sink_open_params(g_ctx, "gguf", p, NULL, c->key ? &m : NULL,
                                         c->key ? 1 : 0, &info, 1);
    s = hvq_ctx_status(g_ctx);
    msg = hvq_ctx_error(g_ctx);
    ck_assert_msg(s == c->status, "case %d: status %d (%s)", _i, s, msg);
    ck_assert_ptr_null(sink);
    ck_assert_msg(strncmp(msg, p, strlen(p)) == 0,
                  "message does not start with %s:\n%s", p, msg);
    th_assert_contains(msg, c->reason);
    ck_assert(!th_exists(p));
}
END_TEST

/* Declared order, sizes, duplicates, and a sink closed half-way, through
 * the host (host->sink_*), which checks them for every format. */
START_TEST(gguf_sink_order)
{
    float a[4] = {1, 2, 3, 4}, b[2] = {5, 6};
    hvq_tensor_info info[2];
    hvq_meta dup[2] = {{"k", "1"}, {"k", "2"}};
    const hvq_host *H = g_ctx->host;
    hvq_sink_handle *hs;
    void *sink = NULL;
    hvq_tensor t;
    const char *p = tmp("order.gguf");

    memset(info, 0, sizeof info);
    info[0].name = "a";
    info[0].dtype = HVQ_DTYPE_F32;
    info[0].ndim = 1;
    info[0].shape[0] = 4;
    info[0].nbytes = 16;
    info[1] = info[0];
    info[1].name = "a";
    ck_assert_ptr_null(H->sink_open_params(g_ctx, "gguf", p, NULL, NULL, 0, info, 2));
    th_assert_contains(hvq_ctx_error(g_ctx),
                       "tensor name 'a' is declared twice");
    info[1].name = "b";
    info[1].shape[0] = 2;
    info[1].nbytes = 8;
    ck_assert_ptr_null(H->sink_open_params(g_ctx, "gguf", p, NULL, dup, 2, info, 2));
    th_assert_contains(hvq_ctx_error(g_ctx), "metadata key 'k' is given twice");

    hs = H->sink_open_params(g_ctx, "gguf", p, NULL, NULL, 0, info, 2);
    ck_assert_ptr_nonnull(hs);
    t.info = info[1];
    t.data = b;
    ck_assert_int_eq(H->sink_write(g_ctx, hs, &t), HVQ_E_INTERNAL);
    th_assert_contains(hvq_ctx_error(g_ctx),
                       "expected tensor 1 of 2 to be 'a' (16 bytes), got 'b'");
    ck_assert_int_eq(H->sink_finish(g_ctx, hs), HVQ_E_INTERNAL);
    th_assert_contains(hvq_ctx_error(g_ctx),
                       "only 0 of 2 declared tensors were written");
    t.info = info[0];
    t.data = a;
    ck_assert_int_eq(H->sink_write(g_ctx, hs, &t), HVQ_OK);
    /* Closed before the end: freed, and the output is abandoned. */
    H->sink_close(g_ctx, hs);
    hvq_outputs_abort(g_ctx);
    ck_assert(!th_exists(p));

    /* No tensors, no metadata: a valid empty GGUF. */
    ck_assert_int_eq(gg->sink_create(g_ctx, p, NULL, 0, NULL, 0, &sink),
                     HVQ_OK);
    ck_assert_int_eq(gg->sink_finish(g_ctx, sink), HVQ_OK);
    gg->sink_close(g_ctx, sink);
    ck_assert_int_eq(hvq_outputs_commit(g_ctx), HVQ_OK);
    {
        size_t n;
        char *f = th_read_file(p, &n);
        void *src;
        ck_assert_uint_eq(n, 32);
        ck_assert(memcmp(f, "GGUF\3\0\0\0", 8) == 0);
        free(f);
        src = open_ok(p);
        ck_assert_uint_eq(gg->source_count(src), 0);
        gg->source_close(g_ctx, src);
    }
}
END_TEST

/* ========================================================================
 * Tensor types: Q8_0 and Q4_0 dequantized, the rest passed through
 * ====================================================================== */
static const uint16_t scales[] = {0x3c00, 0x2e66, 0xb800, 0x0001,
                                  0x7bff, 0x8000, 0x1234, 0xd0a5};

START_TEST(gguf_dequant)
{
    enum { ROWS = 3, COLS = 64, NB = ROWS * COLS / 32 };
    unsigned char q8[NB * 34], q4[NB * 18];
    float ref8[ROWS * COLS], ref4[ROWS * COLS];
    gb f = {0};
    bt t[2];
    const char *p;
    void *src;
    hvq_tensor x;
    int b, j;

    for (b = 0; b < NB; b++) {
        uint16_t d = scales[b % 8];
        unsigned char *blk8 = q8 + b * 34, *blk4 = q4 + b * 18;
        blk8[0] = blk4[0] = (unsigned char)(d & 0xff);
        blk8[1] = blk4[1] = (unsigned char)(d >> 8);
        for (j = 0; j < 32; j++) {
            int8_t q = (int8_t)((j * 37 + b * 11) % 256 - 128);
            blk8[2 + j] = (unsigned char)q;
            ref8[b * 32 + j] = ref_half(d) * (float)q;
        }
        for (j = 0; j < 16; j++) {
            int lo = (j * 7 + b) % 16, hi = (j * 5 + 3 * b + 1) % 16;
            blk4[2 + j] = (unsigned char)(lo | hi << 4);
            ref4[b * 32 + j] = ref_half(d) * (float)(lo - 8);
            ref4[b * 32 + j + 16] = ref_half(d) * (float)(hi - 8);
        }
    }
    memset(t, 0, sizeof t);
    t[0].name = "q8";
    t[0].type = 8;
    t[0].nd = 2;
    t[0].ne[0] = COLS;
    t[0].ne[1] = ROWS;
    t[0].data = q8;
    t[0].nbytes = sizeof q8;
    t[1] = t[0];
    t[1].name = "q4";
    t[1].type = 2;
    t[1].data = q4;
    t[1].nbytes = sizeof q4;
    gb_file(&f, 3, NULL, 0, t, 2, 32, NULL);
    p = save("quant.gguf", &f);
    src = open_ok(p);
    for (b = 0; b < 2; b++) {
        const float *ref = b == 0 ? ref8 : ref4;
        hvq_tensor_info ti;
        ck_assert_int_eq(gg->source_info(src, (size_t)b, &ti), HVQ_OK);
        ck_assert_int_eq(ti.dtype, HVQ_DTYPE_F32);
        ck_assert_str_eq(ti.dtype_name, "F32");
        ck_assert_uint_eq(ti.nbytes, ROWS * COLS * 4);
        ck_assert_int_eq(ti.shape[0], ROWS);
        ck_assert_int_eq(ti.shape[1], COLS);
        ck_assert_int_eq(gg->source_read(g_ctx, src, (size_t)b, &x), HVQ_OK);
        ck_assert_uint_eq(x.info.nbytes, ROWS * COLS * 4);
        for (j = 0; j < ROWS * COLS; j++) {
            float got = ((const float *)x.data)[j];
            ck_assert_msg(memcmp(&got, &ref[j], 4) == 0,
                          "%s element %d: %g, want %g", ti.name, j,
                          (double)got, (double)ref[j]);
        }
    }
    gg->source_close(g_ctx, src);
    gb_free(&f);

    /* A row length that is not a multiple of 32. */
    memset(&f, 0, sizeof f);
    t[0].ne[0] = 48;
    t[0].ne[1] = 2;
    t[0].nbytes = 3 * 34;
    gb_file(&f, 3, NULL, 0, t, 1, 32, NULL);
    p = save("q8-row.gguf", &f);
    {
        void *st = (void *)1;
        ck_assert_int_eq(gg->source_open(g_ctx, p, &st), HVQ_E_INPUT);
        th_assert_contains(hvq_ctx_error(g_ctx),
                           "tensor 'q8': the row length ne[0] = 48 of Q8_0 "
                           "[2, 48] is not a multiple of the Q8_0 block "
                           "size 32");
    }
    gb_free(&f);
}
END_TEST

/* ggml block types written through the host's sink (OPAQUE with the ggml
 * type name as dtype_name): the type ids and the aligned offsets in the
 * header, Q8_0 and Q4_0 read back as F32 by the source, the K types byte
 * for byte, and a declared size that is not rows * blocks per row * block
 * bytes refused with the numbers. */
START_TEST(gguf_sink_ggml_blocks)
{
    enum { NB = 6 };
    static const struct {
        const char *name, *type;
        uint32_t id;
        int64_t rows, cols;
        size_t bytes;
    } ts[] = {
        {"q8", "Q8_0", 8, 3, 64, NB * 34},   {"q4", "Q4_0", 2, 3, 64, NB * 18},
        {"q4k", "Q4_K", 12, 2, 256, 2 * 144}, {"q6k", "Q6_K", 14, 1, 512, 2 * 210},
        {"q5_0", "Q5_0", 6, 1, 32, 22},
    };
    enum { N = sizeof ts / sizeof ts[0] };
    unsigned char data[N][600];
    hvq_tensor_info info[N];
    const hvq_host *H = g_ctx->host;
    const char *p = tmp("blocks.gguf");
    hvq_sink_handle *hs;
    size_t i, j;

    memset(info, 0, sizeof info);
    for (i = 0; i < N; i++) {
        for (j = 0; j < sizeof data[i]; j++)
            data[i][j] = (unsigned char)(i * 13 + j * 5 + 1);
        if (i < 2) /* finite fp16 scales for the dequantized types */
            for (j = 0; j < NB; j++) {
                size_t at = j * (i == 0 ? 34 : 18);
                data[i][at] = (unsigned char)(scales[j] & 0xff);
                data[i][at + 1] = (unsigned char)(scales[j] >> 8 & 0x3f);
            }
        info[i].name = ts[i].name;
        info[i].dtype = HVQ_DTYPE_OPAQUE;
        info[i].dtype_name = ts[i].type;
        info[i].ndim = 2;
        info[i].shape[0] = ts[i].rows;
        info[i].shape[1] = ts[i].cols;
        info[i].nbytes = ts[i].bytes;
    }
    info[4].nbytes = 21; /* wrong: one Q5_0 block is 22 bytes */
    ck_assert_ptr_null(H->sink_open_params(g_ctx, "gguf", p, NULL, NULL, 0, info, N));
    th_assert_contains(hvq_ctx_error(g_ctx),
                       "tensor 'q5_0': declared as 21 bytes but Q5_0 [1, 32] needs 22");
    ck_assert(!th_exists(p));
    info[4].nbytes = 22;
    hs = H->sink_open_params(g_ctx, "gguf", p, NULL, NULL, 0, info, N);
    ck_assert_msg(hs != NULL, "%s", hvq_ctx_error(g_ctx));
    for (i = 0; i < N; i++) {
        hvq_tensor t = {info[i], data[i]};
        ck_assert_int_eq(H->sink_write(g_ctx, hs, &t), HVQ_OK);
    }
    ck_assert_int_eq(H->sink_finish(g_ctx, hs), HVQ_OK);
    H->sink_close(g_ctx, hs);
    ck_assert_int_eq(hvq_outputs_commit(g_ctx), HVQ_OK);

    /* the header: after each name, n_dims, ne[0], ne[1], the type id and an
     * offset that is a multiple of 32 */
    size_t n;
    char *f = th_read_file(p, &n);
    ck_assert_ptr_nonnull(f);
    for (i = 0; i < N; i++) {
        size_t k, len = strlen(ts[i].name);
        for (k = 8; k + len + 32 < n; k++) /* the name after its length */
            if (memcmp(f + k, ts[i].name, len) == 0 && (unsigned char)f[k - 8] == len)
                break;
        ck_assert(k + len + 32 < n);
        const unsigned char *q = (const unsigned char *)f + k + len + 4 + 16;
        uint32_t id = (uint32_t)q[0] | (uint32_t)q[1] << 8;
        uint64_t off = 0;
        for (j = 0; j < 8; j++)
            off |= (uint64_t)q[4 + j] << (8 * j);
        ck_assert_uint_eq(id, ts[i].id);
        ck_assert_uint_eq(off % 32, 0);
    }
    free(f);

    void *src = open_ok(p);
    for (i = 0; i < N; i++) {
        hvq_tensor x;
        ck_assert_int_eq(gg->source_read(g_ctx, src, i, &x), HVQ_OK);
        ck_assert_int_eq(x.info.shape[0], ts[i].rows);
        ck_assert_int_eq(x.info.shape[1], ts[i].cols);
        if (i >= 2) {
            ck_assert_int_eq(x.info.dtype, HVQ_DTYPE_OPAQUE);
            ck_assert_str_eq(x.info.dtype_name, ts[i].type);
            ck_assert(memcmp(x.data, data[i], ts[i].bytes) == 0);
            continue;
        }
        ck_assert_int_eq(x.info.dtype, HVQ_DTYPE_F32);
        for (j = 0; j < (size_t)(ts[i].rows * ts[i].cols); j++) {
            const unsigned char *b = data[i] + j / 32 * (i == 0 ? 34 : 18);
            float d = ref_half((uint16_t)(b[0] | b[1] << 8)), want;
            if (i == 0)
                want = d * (float)(int8_t)b[2 + j % 32];
            else
                want = d * (float)((j % 32 < 16 ? b[2 + j % 16] & 15 : b[2 + j % 16] >> 4) - 8);
            ck_assert(memcmp(&want, (const float *)x.data + j, 4) == 0);
        }
    }
    gg->source_close(g_ctx, src);
}
END_TEST

/* Every other ggml type passes through byte for byte; integer and F64
 * tensors map to hvq's types. */
START_TEST(gguf_opaque_passthrough)
{
    static const struct {
        const char *name;
        uint32_t type;
        uint64_t ne0, ne1;
        size_t bytes;
        hvq_dtype dtype;
        const char *dname;
    } ts[] = {
        {"q4k", 12, 512, 2, 4 * 144, HVQ_DTYPE_OPAQUE, "Q4_K"},
        {"q6k", 14, 256, 1, 210, HVQ_DTYPE_OPAQUE, "Q6_K"},
        {"q5_1", 7, 64, 1, 2 * 24, HVQ_DTYPE_OPAQUE, "Q5_1"},
        {"iq2xxs", 16, 256, 1, 66, HVQ_DTYPE_OPAQUE, "IQ2_XXS"},
        {"tq1", 34, 256, 1, 54, HVQ_DTYPE_OPAQUE, "TQ1_0"},
        {"mxfp4", 39, 32, 3, 3 * 17, HVQ_DTYPE_OPAQUE, "MXFP4"},
        {"q8k", 15, 256, 1, 292, HVQ_DTYPE_OPAQUE, "Q8_K"},
        {"i8", 24, 5, 1, 5, HVQ_DTYPE_I8, "I8"},
        {"i16", 25, 3, 1, 6, HVQ_DTYPE_I16, "I16"},
        {"i32", 26, 3, 2, 24, HVQ_DTYPE_I32, "I32"},
        {"i64", 27, 2, 1, 16, HVQ_DTYPE_I64, "I64"},
        {"f64", 28, 2, 1, 16, HVQ_DTYPE_F64, "F64"},
        {"bf16", 30, 4, 1, 8, HVQ_DTYPE_BF16, "BF16"},
        {"f16", 1, 4, 1, 8, HVQ_DTYPE_F16, "F16"},
    };
    enum { N = sizeof ts / sizeof ts[0] };
    unsigned char data[N][600];
    bt t[N];
    gb f = {0};
    const char *p, *out;
    void *src;
    size_t i, j;

    memset(t, 0, sizeof t);
    for (i = 0; i < N; i++) {
        for (j = 0; j < sizeof data[i]; j++)
            data[i][j] = (unsigned char)(i * 31 + j * 7 + 3);
        t[i].name = ts[i].name;
        t[i].type = ts[i].type;
        t[i].nd = ts[i].ne1 > 1 ? 2 : 1;
        t[i].ne[0] = ts[i].ne0;
        t[i].ne[1] = ts[i].ne1;
        t[i].data = data[i];
        t[i].nbytes = ts[i].bytes;
    }
    gb_file(&f, 3, NULL, 0, t, N, 32, NULL);
    p = save("opaque.gguf", &f);
    src = open_ok(p);
    ck_assert_uint_eq(gg->source_count(src), N);
    for (i = 0; i < N; i++) {
        hvq_tensor x;
        ck_assert_int_eq(gg->source_read(g_ctx, src, i, &x), HVQ_OK);
        ck_assert_str_eq(x.info.name, ts[i].name);
        ck_assert_int_eq(x.info.dtype, ts[i].dtype);
        ck_assert_str_eq(x.info.dtype_name, ts[i].dname);
        ck_assert_uint_eq(x.info.nbytes, ts[i].bytes);
        ck_assert_int_eq(x.info.ndim, (int)t[i].nd);
        ck_assert_int_eq(x.info.shape[x.info.ndim - 1], (int64_t)ts[i].ne0);
        if (x.info.ndim == 2)
            ck_assert_int_eq(x.info.shape[0], (int64_t)ts[i].ne1);
        ck_assert(memcmp(x.data, data[i], ts[i].bytes) == 0);
    }
    out = tmp("opaque-copy.gguf");
    rewrite(src, out);
    ck_assert(same_bytes(p, out));
    gg->source_close(g_ctx, src);
    gb_free(&f);
}
END_TEST

/* Version 2, alignment 64, alignment 1 (misaligned data copied), empty
 * tensors, 0 dims, big-endian refused, 4 dims. */
START_TEST(gguf_versions_alignment)
{
    float a[3] = {1, 2, 3}, c[2] = {7, 8};
    int8_t b[1] = {-5};
    double s[1] = {0.25};
    gb kv = {0}, f = {0};
    bt t[5];
    layout lay;
    const char *p, *out;
    void *src;
    hvq_tensor x;
    size_t i, n;
    char *file;

    memset(t, 0, sizeof t);
    t[0] = (bt){"a", 0, 1, {3}, a, sizeof a};
    t[1] = (bt){"b", 24, 1, {1}, b, sizeof b};
    t[2] = (bt){"c", 0, 4, {1, 2, 1, 1}, c, sizeof c};
    t[3] = (bt){"empty", 0, 2, {0, 5}, NULL, 0};
    t[4] = (bt){"scalar", 28, 0, {0}, s, sizeof s};

    /* Version 2 reads like 3; written back as version 3. */
    kv_head(&kv, "general.name", T_STR);
    gb_str(&kv, "v2");
    gb_file(&f, 2, &kv, 1, t, 5, 32, NULL);
    p = save("v2.gguf", &f);
    src = open_ok(p);
    ck_assert_uint_eq(gg->source_count(src), 5);
    ck_assert_int_eq(gg->source_read(g_ctx, src, 2, &x), HVQ_OK);
    ck_assert_int_eq(x.info.ndim, 4);
    ck_assert_int_eq(x.info.shape[0], 1);
    ck_assert_int_eq(x.info.shape[2], 2);
    ck_assert_int_eq(x.info.shape[3], 1);
    ck_assert_int_eq(gg->source_read(g_ctx, src, 3, &x), HVQ_OK);
    ck_assert_uint_eq(x.info.nbytes, 0);
    ck_assert_int_eq(x.info.shape[0], 5);
    ck_assert_int_eq(x.info.shape[1], 0);
    ck_assert_int_eq(gg->source_read(g_ctx, src, 4, &x), HVQ_OK);
    ck_assert_int_eq(x.info.ndim, 0);
    ck_assert_int_eq(x.info.dtype, HVQ_DTYPE_F64);
    ck_assert(*(const double *)x.data == 0.25);
    out = tmp("v2-copy.gguf");
    rewrite(src, out);
    gg->source_close(g_ctx, src);
    file = th_read_file(out, &n);
    ck_assert_uint_eq(n, f.len);
    ck_assert_int_eq(file[4], 3);
    file[4] = 2;
    ck_assert(memcmp(file, f.d, n) == 0);
    free(file);
    gb_free(&f);
    gb_free(&kv);

    /* Alignment 64: offsets and the data section on multiples of 64, and
     * the rewrite byte-identical. */
    kv_head(&kv, "general.alignment", T_U32);
    gb_u32(&kv, 64);
    gb_file(&f, 3, &kv, 1, t, 3, 64, &lay);
    ck_assert_uint_eq(lay.data_start % 64, 0);
    ck_assert_uint_eq(lay.offset[1], 64);
    ck_assert_uint_eq(lay.offset[2], 128);
    p = save("align64.gguf", &f);
    src = open_ok(p);
    ck_assert_str_eq(meta_get(src, "general.alignment"),
                     "{\"gguf_type\":\"uint32\",\"value\":64}");
    for (i = 0; i < 3; i++) {
        ck_assert_int_eq(gg->source_read(g_ctx, src, i, &x), HVQ_OK);
        ck_assert(memcmp(x.data, t[i].data, t[i].nbytes) == 0);
    }
    out = tmp("align64-copy.gguf");
    rewrite(src, out);
    ck_assert(same_bytes(p, out));
    gg->source_close(g_ctx, src);
    gb_free(&f);
    gb_free(&kv);

    /* Alignment 1: "a" after "b" sits at an odd offset; it is read through
     * an aligned copy. */
    kv_head(&kv, "general.alignment", T_U32);
    gb_u32(&kv, 1);
    {
        bt t1[2] = {{"b", 24, 1, {1}, b, 1}, {"a", 0, 1, {3}, a, sizeof a}};
        gb_file(&f, 3, &kv, 1, t1, 2, 1, &lay);
        ck_assert_uint_eq(lay.offset[1], 1);
    }
    p = save("align1.gguf", &f);
    src = open_ok(p);
    ck_assert_int_eq(gg->source_read(g_ctx, src, 1, &x), HVQ_OK);
    ck_assert_uint_eq((uintptr_t)x.data % 4, 0);
    ck_assert(memcmp(x.data, a, sizeof a) == 0);
    out = tmp("align1-copy.gguf");
    rewrite(src, out);
    ck_assert(same_bytes(p, out));
    gg->source_close(g_ctx, src);
    gb_free(&f);
    gb_free(&kv);

    /* Big-endian: the version's bytes are swapped. */
    gb_file(&f, 3, NULL, 0, NULL, 0, 32, NULL);
    gb_set(&f, 4, 0x03000000u, 4);
    p = save("big-endian.gguf", &f);
    {
        void *st = (void *)1;
        const char *msg;
        ck_assert_int_eq(gg->source_open(g_ctx, p, &st), HVQ_E_UNSUPPORTED);
        ck_assert_ptr_null(st);
        msg = hvq_ctx_error(g_ctx);
        ck_assert(strncmp(msg, p, strlen(p)) == 0);
        th_assert_contains(msg, "big-endian GGUF file (version bytes 00 00 "
                                "00 03 read as version 3 byte-swapped): "
                                "only little-endian files are supported");
    }
    gb_free(&f);
}
END_TEST

/* ========================================================================
 * Corrupt files
 * ====================================================================== */
typedef struct base_opts {
    int dup_key;       /* general.name twice */
    int bool_kv;       /* a bool entry (last) */
    int array_kv;      /* an array entry (last) */
} base_opts;

/* Base file: general.name "tiny", general.alignment 32 (entry 1), tensors
 * a (F32 [2, 4]) and b (F32 [4]). kvpos[i]: start of entry i. */
static void build_base(gb *f, layout *lay, size_t *kvpos, const base_opts *o)
{
    static const float a[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    static const float b[4] = {8, 9, 10, 11};
    bt t[2] = {{"a", 0, 2, {4, 2}, a, sizeof a}, {"b", 0, 1, {4}, b, sizeof b}};
    gb kv = {0};
    uint64_t n = 2;
    size_t hdr = 24;
    kvpos[0] = hdr + kv.len;
    kv_head(&kv, "general.name", T_STR);
    gb_str(&kv, "tiny");
    kvpos[1] = hdr + kv.len;
    kv_head(&kv, "general.alignment", T_U32);
    gb_u32(&kv, 32);
    kvpos[2] = hdr + kv.len;
    if (o && o->dup_key) {
        kv_head(&kv, "general.name", T_STR);
        gb_str(&kv, "again");
        n++;
    }
    if (o && o->bool_kv) {
        kv_head(&kv, "flag", T_BOOL);
        gb_u8(&kv, 1);
        n++;
    }
    if (o && o->array_kv) {
        kv_head(&kv, "list", T_ARR);
        gb_u32(&kv, T_I32);
        gb_u64(&kv, 2);
        gb_u32(&kv, 1);
        gb_u32(&kv, 2);
        n++;
    }
    gb_file(f, 3, &kv, n, t, 2, 32, lay);
    gb_free(&kv);
}

typedef struct bad_case {
    const char *reason;
    hvq_status status;
} bad_case;

/* Builds corrupt file number k into f; returns what the message must say. */
static bad_case make_bad(int k, gb *f)
{
    layout l;
    size_t kv[3];
    base_opts o = {0, 0, 0};
    bad_case r = {"truncated", HVQ_E_INPUT};
    size_t a_ne, b_off;

    if (k == 28)
        o.dup_key = 1;
    if (k == 29)
        o.bool_kv = 1;
    if (k == 30)
        o.array_kv = 1;
    build_base(f, &l, kv, &o);
    a_ne = l.tinfo[0] + 8 + 1 + 4;                    /* a's ne[0] */
    b_off = l.tinfo[1] + 8 + 1 + 4 + 8 + 4;           /* b's offset */
    switch (k) {
    /* Truncated at many points. */
    case 0: f->len = 0; r.reason = "truncated: the magic at byte 0 needs 4 "
                                   "bytes, but the file ends at byte 0"; break;
    case 1: f->len = 3; r.reason = "truncated: the magic"; break;
    case 2: f->len = 6; r.reason = "truncated: the version at byte 4"; break;
    case 3: f->len = 20; r.reason = "truncated: the metadata count at byte 16";
        break;
    case 4: f->len = kv[0] + 4;
        r.reason = "truncated or corrupt?"; break; /* counts do not fit */
    case 5: f->len = kv[1] + 20;
        r.reason = "truncated or corrupt?"; break;
    case 6: f->len = l.tinfo[0] + 20;
        r.reason = "truncated: tensor 'a': a dimension at byte 106 needs 8 "
                   "bytes, but the file ends at byte 113";
        break;
    case 7: f->len = l.tinfo[1] + 30;
        r.reason = "truncated: tensor 'b': the data offset at byte"; break;
    case 8: f->len = l.data_start - 4;
        r.reason = "truncated: the header ends at byte"; break;
    case 9: f->len = l.data_start + 32 + 12;
        r.reason = "tensor 'b': its 16 bytes at data offset 32 go beyond the "
                   "end of the file (the data section starts at byte 192 and "
                   "has 44 bytes; truncated?)";
        break;
    /* Header fields. */
    case 10: memcpy(f->d, "GGML", 4);
        r.reason = "bad magic \"GGML\" at byte 0: not a GGUF file"; break;
    case 11: gb_set(f, 4, 1, 4); r.reason = "unsupported version 1"; break;
    case 12: gb_set(f, 4, 4, 4);
        r.reason = "unsupported version 4 (only versions 2 and 3 are read)";
        break;
    case 13: gb_set(f, 8, 1ull << 40, 8);
        r.reason = "the header declares 1099511627776 tensors, but the file "
                   "has room for at most";
        break;
    case 14: gb_set(f, 16, 1ull << 40, 8);
        r.reason = "the header declares 1099511627776 metadata entries";
        break;
    case 15: gb_set(f, kv[0], 1000, 8);
        r.reason = "metadata entry 0: the key at byte 24 is 1000 bytes long, "
                   "beyond the end of the file";
        break;
    case 16: gb_set(f, kv[0] + 8 + 12 + 4, 1ull << 62, 8);
        r.reason = "metadata entry 0 ('general.name'): the value at byte 48 "
                   "is 4611686018427387904 bytes long, beyond the end of the "
                   "file";
        break;
    case 17: gb_set(f, l.tinfo[0] + 9, 5, 4);
        r.reason = "tensor 'a': n_dims 5 at byte"; break;
    case 18: gb_set(f, a_ne, 1ull << 32, 8); gb_set(f, a_ne + 8, 1ull << 32, 8);
        r.reason = "tensor 'a': the dimensions overflow"; break;
    case 19: gb_set(f, a_ne, 1ull << 63, 8);
        r.reason = "tensor 'a': dimension ne[0] = 9223372036854775808"; break;
    case 20: gb_set(f, b_off, 36, 8);
        r.reason = "tensor 'b': data offset 36 (at byte 159) is not a "
                   "multiple of the alignment 32";
        break;
    case 21: gb_set(f, b_off, 1 << 20, 8);
        r.reason = "tensor 'b': its 16 bytes at data offset 1048576 go beyond "
                   "the end of the file";
        break;
    case 22: gb_set(f, b_off, 0, 8);
        r.reason = "tensor 'a' (data bytes [0, 32)) overlaps tensor 'b' "
                   "([0, 16))";
        break;
    case 23: f->d[l.tinfo[1] + 8] = 'a';
        r.reason = "duplicate tensor name 'a' (tensor infos 0 and 1)"; break;
    case 24: gb_set(f, a_ne + 16, 99, 4);
        r.reason = "tensor 'a': unknown ggml type id 99 at byte"; break;
    case 25: gb_set(f, a_ne + 16, 4, 4);
        r.reason = "unknown ggml type id 4 at byte 122 (Q4_2, removed from "
                   "ggml)";
        break;
    case 26: gb_set(f, kv[1] + 8 + 17 + 4, 0, 4);
        r.reason = "general.alignment is 0 at byte 89; it must be a power of "
                   "two";
        break;
    case 27: gb_set(f, kv[1] + 8 + 17 + 4, 3, 4);
        r.reason = "general.alignment is 3 at byte 89; it must be a power of "
                   "two";
        break;
    case 28: r.reason = "duplicate metadata key 'general.name' (entries 0 "
                        "and 2)";
        break;
    case 29: f->d[kv[2] + 8 + 4 + 4] = 2;
        r.reason = "metadata entry 2 ('flag'): the value at byte 109 is a "
                   "bool of value 2 (only 0 and 1 are valid)";
        break;
    case 30: gb_set(f, kv[2] + 8 + 4 + 4 + 4, 1ull << 40, 8);
        r.reason = "metadata entry 2 ('list'): the array of 1099511627776 "
                   "int32 items at byte 113 goes beyond the end of the file";
        break;
    case 31: gb_set(f, kv[1] + 8 + 17, 5, 4);
        r.reason = "general.alignment has type int32; it must be uint32";
        break;
    case 32: gb_set(f, kv[0] + 8 + 12, 13, 4);
        r.reason = "metadata entry 0 ('general.name'): unknown value type 13 "
                   "at byte 44";
        break;
    case 33: gb_set(f, a_ne + 16, 8, 4);
        r.reason = "the row length ne[0] = 4 of Q8_0 [2, 4] is not a multiple "
                   "of the Q8_0 block size 32";
        break;
    case 34: f->d[kv[0] + 8] = 0xff;
        r.reason = "metadata entry 0 at byte 24: the key is not valid UTF-8";
        break;
    case 35: gb_set(f, l.tinfo[1], 0, 8);
        r.reason = "tensor info 1 at byte 134: the name is empty";
        break;
    case 36: gb_set(f, kv[0] + 8 + 12 + 4, 4, 8); f->d[kv[0] + 8 + 12 + 12] = 0xc3;
        r.reason = "metadata entry 0 ('general.name'): the value at byte 56 is "
                   "not valid UTF-8";
        r.status = HVQ_E_UNSUPPORTED;
        break;
    default:
        ck_abort_msg("no case %d", k);
    }
    return r;
}
#define N_BAD 37

START_TEST(gguf_corrupt)
{
    gb f = {0};
    bad_case c = make_bad(_i, &f);
    char name[32];
    const char *p, *msg;
    void *state = (void *)1;
    hvq_status s;

    snprintf(name, sizeof name, "bad-%02d.gguf", _i);
    p = save(name, &f);
    s = gg->source_open(g_ctx, p, &state);
    msg = hvq_ctx_error(g_ctx);
    ck_assert_msg(s == c.status, "case %d: status %d (%s)", _i, s, msg);
    ck_assert_ptr_null(state);
    ck_assert_msg(strncmp(msg, p, strlen(p)) == 0,
                  "case %d: message does not start with %s:\n%s", _i, p, msg);
    th_assert_contains(msg, c.reason);
    gb_free(&f);
}
END_TEST

START_TEST(gguf_base_is_valid)
{
    gb f = {0};
    layout l;
    size_t kv[3];
    base_opts o = {0, 1, 1};
    void *src;
    hvq_tensor x;
    build_base(&f, &l, kv, NULL);
    ck_assert_uint_eq(l.data_start, 192);
    src = open_ok(save("base.gguf", &f));
    ck_assert_uint_eq(gg->source_count(src), 2);
    ck_assert_int_eq(gg->source_read(g_ctx, src, 0, &x), HVQ_OK);
    ck_assert_int_eq(x.info.shape[0], 2);
    ck_assert_int_eq(x.info.shape[1], 4);
    ck_assert(((const float *)x.data)[5] == 5.0f);
    gg->source_close(g_ctx, src);
    gb_free(&f);
    build_base(&f, &l, kv, &o);
    src = open_ok(save("base2.gguf", &f));
    ck_assert_str_eq(meta_get(src, "flag"),
                     "{\"gguf_type\":\"bool\",\"value\":true}");
    gg->source_close(g_ctx, src);
    gb_free(&f);
    {
        void *st = (void *)1;
        ck_assert_int_eq(gg->source_open(g_ctx, g_dir, &st), HVQ_E_INPUT);
        th_assert_contains(hvq_ctx_error(g_ctx), "not a regular file");
        ck_assert_int_eq(gg->source_open(g_ctx, tmp("absent.gguf"), &st),
                         HVQ_E_INPUT);
        th_assert_contains(hvq_ctx_error(g_ctx), "cannot open");
    }
}
END_TEST

/* ========================================================================
 * The real model (../shared/data), skipped when absent
 * ====================================================================== */
static const char *shared(const char *rel)
{
    static char bufs[4][4096];
    static int k;
    char *b = bufs[k++ % 4];
    const char *base = th_shared_data();
    if (base == NULL)
        return NULL;
    snprintf(b, 4096, "%s/%s", base, rel);
    return th_exists(b) ? b : NULL;
}

#define SKIP_UNLESS(p)                                                        \
    do {                                                                      \
        if ((p) == NULL) {                                                    \
            fprintf(stderr, "skipped: shared data not available\n");          \
            return;                                                           \
        }                                                                     \
    } while (0)

static void check_shape(void *src, const char *name, int64_t r, int64_t c)
{
    hvq_tensor_info ti;
    int i = find_tensor(src, name);
    ck_assert_msg(i >= 0, "no tensor %s", name);
    ck_assert_int_eq(gg->source_info(src, (size_t)i, &ti), HVQ_OK);
    ck_assert_int_eq(ti.ndim, c ? 2 : 1);
    ck_assert_int_eq(ti.shape[0], r);
    if (c)
        ck_assert_int_eq(ti.shape[1], c);
}

/* The value of a metadata entry, parsed. */
static hvq_json_doc *meta_json(void *src, const char *key)
{
    const char *v = meta_get(src, key);
    hvq_json_doc *doc;
    ck_assert_msg(v != NULL, "no metadata %s", key);
    doc = hvq_json_parse(v, strlen(v), HVQ_JSON_NO_DUPLICATES, NULL);
    ck_assert_msg(doc != NULL, "%s: not JSON", key);
    return doc;
}

static void check_real(const char *rel, hvq_dtype wtype)
{
    const char *p = shared(rel);
    void *src;
    size_t i, n;
    uint64_t total = 0;
    hvq_json_doc *doc;
    const hvq_json_value *root, *v;
    char *head;
    size_t head_n;
    SKIP_UNLESS(p);

    head = th_read_file(p, &head_n);
    ck_assert_int_eq(gg->probe(p, (unsigned char *)head, 4096), 95);
    free(head);
    src = open_ok(p);
    n = gg->source_count(src);
    ck_assert_uint_eq(n, 47);
    for (i = 0; i < n; i++) {
        hvq_tensor t;
        ck_assert_int_eq(gg->source_read(g_ctx, src, i, &t), HVQ_OK);
        total += hvq_numel(&t.info);
        if (t.info.ndim == 2)
            ck_assert_int_eq(t.info.dtype, wtype);
        else
            ck_assert_int_eq(t.info.dtype, HVQ_DTYPE_F32);
    }
    ck_assert_uint_eq(total, 260032);
    {
        hvq_tensor_info ti;
        ck_assert_int_eq(gg->source_info(src, 0, &ti), HVQ_OK);
        ck_assert_str_eq(ti.name, "token_embd.weight");
        ck_assert_int_eq(gg->source_info(src, 2, &ti), HVQ_OK);
        ck_assert_str_eq(ti.name, "blk.0.attn_q.weight");
    }
    check_shape(src, "token_embd.weight", 512, 64);
    check_shape(src, "blk.0.attn_q.weight", 64, 64);
    check_shape(src, "blk.0.attn_k.weight", 32, 64);
    check_shape(src, "blk.0.ffn_gate.weight", 172, 64);
    check_shape(src, "blk.0.ffn_up.weight", 172, 64);
    check_shape(src, "blk.0.ffn_down.weight", 64, 172);
    check_shape(src, "blk.4.attn_norm.weight", 64, 0);
    check_shape(src, "output_norm.weight", 64, 0);

    /* Metadata. */
    {
        const hvq_meta *m;
        gg->source_meta(src, &m, &n);
        ck_assert_uint_eq(n, 20);
        ck_assert_str_eq(m[0].key, "general.architecture");
        ck_assert_str_eq(m[0].value,
                         "{\"gguf_type\":\"string\",\"value\":\"llama\"}");
    }
    ck_assert_str_eq(meta_get(src, "general.alignment"),
                     "{\"gguf_type\":\"uint32\",\"value\":32}");
    ck_assert_str_eq(meta_get(src, "llama.block_count"),
                     "{\"gguf_type\":\"uint32\",\"value\":5}");
    ck_assert_str_eq(meta_get(src, "llama.attention.layer_norm_rms_epsilon"),
                     "{\"gguf_type\":\"float32\",\"value\":9.99999975e-06}");
    ck_assert_str_eq(meta_get(src, "llama.rope.freq_base"),
                     "{\"gguf_type\":\"float32\",\"value\":10000}");
    doc = meta_json(src, "tokenizer.ggml.tokens");
    root = hvq_json_root(doc);
    ck_assert_str_eq(hvq_json_string(hvq_json_get(root, "gguf_type"), NULL),
                     "array");
    ck_assert_str_eq(hvq_json_string(hvq_json_get(root, "item_type"), NULL),
                     "string");
    v = hvq_json_get(root, "value");
    ck_assert_uint_eq(hvq_json_count(v), 512);
    ck_assert_str_eq(hvq_json_string(hvq_json_item(v, 0), NULL), "<unk>");
    ck_assert_str_eq(hvq_json_string(hvq_json_item(v, 1), NULL), "<s>");
    ck_assert_str_eq(hvq_json_string(hvq_json_item(v, 3), NULL), "<0x00>");
    hvq_json_free(doc);
    doc = meta_json(src, "tokenizer.ggml.scores");
    root = hvq_json_root(doc);
    ck_assert_str_eq(hvq_json_string(hvq_json_get(root, "item_type"), NULL),
                     "float32");
    ck_assert_uint_eq(hvq_json_count(hvq_json_get(root, "value")), 512);
    hvq_json_free(doc);
    doc = meta_json(src, "tokenizer.ggml.token_type");
    root = hvq_json_root(doc);
    ck_assert_str_eq(hvq_json_string(hvq_json_get(root, "item_type"), NULL),
                     "int32");
    v = hvq_json_get(root, "value");
    ck_assert_uint_eq(hvq_json_count(v), 512);
    {
        int64_t tt;
        ck_assert_int_eq(hvq_json_int64(hvq_json_item(v, 0), &tt), 0);
        ck_assert_int_eq(tt, 2);
        ck_assert_int_eq(hvq_json_int64(hvq_json_item(v, 3), &tt), 0);
        ck_assert_int_eq(tt, 6);
    }
    hvq_json_free(doc);
    gg->source_close(g_ctx, src);
}

START_TEST(gguf_real_f32) { check_real("stories260K/stories260K.f32.gguf", HVQ_DTYPE_F32); }
END_TEST

START_TEST(gguf_real_f16) { check_real("stories260K/stories260K.f16.gguf", HVQ_DTYPE_F16); }
END_TEST

/* The GGUF tensors hold the same numbers as the Hugging Face safetensors
 * (for tensors llama.cpp does not permute for RoPE): bit-exact in F32, the
 * round-to-nearest-even F16 of them in F16. */
START_TEST(gguf_real_matches_safetensors)
{
    static const char *const pairs[][2] = {
        {"blk.0.ffn_down.weight", "model.layers.0.mlp.down_proj.weight"},
        {"blk.3.ffn_gate.weight", "model.layers.3.mlp.gate_proj.weight"},
        {"blk.4.attn_v.weight", "model.layers.4.self_attn.v_proj.weight"},
        {"blk.2.attn_output.weight", "model.layers.2.self_attn.o_proj.weight"},
        {"token_embd.weight", "model.embed_tokens.weight"},
        {"output_norm.weight", "model.norm.weight"},
    };
    const char *p32 = shared("stories260K/stories260K.f32.gguf");
    const char *p16 = shared("stories260K/stories260K.f16.gguf");
    const char *pst = shared("stories260K/hf/model.safetensors");
    const hvq_loaded_plugin *stp;
    const hvq_plugin *st;
    void *s32, *s16, *sst;
    size_t k;
    SKIP_UNLESS(p32);
    SKIP_UNLESS(p16);
    SKIP_UNLESS(pst);

    stp = hvq_registry_find(g_reg, HVQ_KIND_SOURCE, "safetensors");
    ck_assert_ptr_nonnull(stp);
    st = &stp->desc;
    ck_assert_int_eq(st->source_open(g_ctx, pst, &sst), HVQ_OK);
    s32 = open_ok(p32);
    s16 = open_ok(p16);
    for (k = 0; k < sizeof pairs / sizeof pairs[0]; k++) {
        hvq_tensor a, b, h;
        size_t i, j, nst = st->source_count(sst);
        int ia = find_tensor(s32, pairs[k][0]);
        int ib = find_tensor(s16, pairs[k][0]);
        uint16_t *conv;
        ck_assert(ia >= 0 && ib >= 0);
        for (j = 0; j < nst; j++) {
            hvq_tensor_info ti;
            ck_assert_int_eq(st->source_info(sst, j, &ti), HVQ_OK);
            if (strcmp(ti.name, pairs[k][1]) == 0)
                break;
        }
        ck_assert_msg(j < nst, "no %s in the safetensors", pairs[k][1]);
        ck_assert_int_eq(st->source_read(g_ctx, sst, j, &h), HVQ_OK);
        ck_assert_int_eq(gg->source_read(g_ctx, s32, (size_t)ia, &a), HVQ_OK);
        ck_assert_int_eq(gg->source_read(g_ctx, s16, (size_t)ib, &b), HVQ_OK);
        /* Same shape, [out, in]. */
        ck_assert_int_eq(a.info.ndim, h.info.ndim);
        for (i = 0; i < (size_t)a.info.ndim; i++)
            ck_assert_int_eq(a.info.shape[i], h.info.shape[i]);
        ck_assert_uint_eq(a.info.nbytes, h.info.nbytes);
        ck_assert_msg(memcmp(a.data, h.data, a.info.nbytes) == 0,
                      "%s differs from %s", pairs[k][0], pairs[k][1]);
        if (b.info.dtype == HVQ_DTYPE_F16) {
            size_t ne = (size_t)hvq_numel(&h.info);
            conv = malloc(ne * 2);
            ck_assert_ptr_nonnull(conv);
            ck_assert_int_eq(g_ctx->host->convert(g_ctx, HVQ_DTYPE_F16, conv,
                                                  HVQ_DTYPE_F32, h.data, ne),
                             HVQ_OK);
            ck_assert_msg(memcmp(conv, b.data, ne * 2) == 0,
                          "%s (F16) is not the F16 of %s", pairs[k][0],
                          pairs[k][1]);
            free(conv);
        } else {
            ck_assert(memcmp(b.data, h.data, h.info.nbytes) == 0);
        }
    }
    gg->source_close(g_ctx, s32);
    gg->source_close(g_ctx, s16);
    st->source_close(g_ctx, sst);
}
END_TEST

/* Read through the source, written through the sink: the same bytes as the
 * file llama.cpp wrote. */
START_TEST(gguf_real_rewrite)
{
    static const char *const files[] = {
        "stories260K/stories260K.f32.gguf",
        "stories260K/stories260K.f16.gguf",
        "stories260K/imatrix.gguf",
    };
    size_t k;
    for (k = 0; k < sizeof files / sizeof files[0]; k++) {
        const char *p = shared(files[k]);
        char out[64];
        void *src;
        SKIP_UNLESS(p);
        src = open_ok(p);
        snprintf(out, sizeof out, "copy-%zu.gguf", k);
        rewrite(src, tmp(out));
        gg->source_close(g_ctx, src);
        ck_assert_msg(same_bytes(p, tmp(out)), "%s: rewrite differs",
                      files[k]);
    }
}
END_TEST

/* ========================================================================
 * The real binary end to end
 * ====================================================================== */

/* Whether name is compressed by int4-rtn with include blk.*, exclude
 * *norm*. */
static int compressed_name(const char *name)
{
    return strncmp(name, "blk.", 4) == 0 && strstr(name, "norm") == NULL;
}

/* out must hold every tensor and metadata entry of in, in the same order
 * with the same names, shapes and types; uncompressed tensors
 * byte-identical, compressed ones F32 and close. */
static void check_against(void *in, void *out)
{
    size_t i, n = gg->source_count(in), nmi, nmo;
    const hvq_meta *mi, *mo;
    size_t n_comp = 0;
    ck_assert_uint_eq(gg->source_count(out), n);
    for (i = 0; i < n; i++) {
        hvq_tensor a, b;
        int d;
        ck_assert_int_eq(gg->source_read(g_ctx, in, i, &a), HVQ_OK);
        ck_assert_int_eq(gg->source_read(g_ctx, out, i, &b), HVQ_OK);
        ck_assert_str_eq(a.info.name, b.info.name);
        ck_assert_int_eq(a.info.ndim, b.info.ndim);
        for (d = 0; d < a.info.ndim; d++)
            ck_assert_int_eq(a.info.shape[d], b.info.shape[d]);
        ck_assert_int_eq(b.info.dtype, a.info.dtype);
        ck_assert_uint_eq(a.info.nbytes, b.info.nbytes);
        if (compressed_name(a.info.name)) {
            const float *x = a.data, *y = b.data;
            double num = 0, den = 0;
            size_t j, ne = (size_t)hvq_numel(&a.info);
            ck_assert_int_eq(a.info.dtype, HVQ_DTYPE_F32);
            for (j = 0; j < ne; j++) {
                num += ((double)x[j] - y[j]) * ((double)x[j] - y[j]);
                den += (double)x[j] * x[j];
            }
            ck_assert_msg(num > 0 && num < 0.05 * den,
                          "%s: relative error %g", a.info.name,
                          sqrt(num / den));
            n_comp++;
        } else {
            ck_assert_msg(memcmp(a.data, b.data, a.info.nbytes) == 0,
                          "%s changed", a.info.name);
        }
    }
    ck_assert_uint_eq(n_comp, 35);
    gg->source_meta(in, &mi, &nmi);
    gg->source_meta(out, &mo, &nmo);
    ck_assert_uint_eq(nmi, nmo);
    for (i = 0; i < nmi; i++) {
        ck_assert_str_eq(mi[i].key, mo[i].key);
        ck_assert_str_eq(mi[i].value, mo[i].value);
    }
}

START_TEST(gguf_cli_end_to_end)
{
    const char *in = shared("stories260K/stories260K.f32.gguf");
    char x[4096], xh[4096], y[4096], rep[4096], rep2[4096];
    char *out = NULL, *err = NULL, *json;
    void *sin, *sx, *sy;
    int rc;
    SKIP_UNLESS(in);

    snprintf(x, sizeof x, "%s", tmp("X.gguf"));
    snprintf(xh, sizeof xh, "%s", tmp("X.hvq"));
    snprintf(y, sizeof y, "%s", tmp("Y.gguf"));
    snprintf(rep, sizeof rep, "%s", tmp("R.json"));
    snprintf(rep2, sizeof rep2, "%s", tmp("R2.json"));
    {
        const char *args[] = {"run", th_src("pipelines/int4-rtn.yaml"),
                              "--input", in, "--output", x,
                              "--set", "select.include=blk.*",
                              "--set", "select.exclude=*norm*",
                              "-r", rep, "--quiet", NULL};
        rc = th_run(&out, &err, args);
        ck_assert_msg(rc == 0, "run exited %d:\n%s%s", rc, out, err);
        free(out);
        free(err);
    }
    json = th_read_file(rep, NULL);
    ck_assert_ptr_nonnull(json);
    th_assert_contains(json, "blk.0.ffn_down.weight");
    free(json);
    {
        const char *args[] = {"run", th_src("pipelines/int4-rtn.yaml"),
                              "--input", in, "--output", xh,
                              "--set", "select.include=blk.*",
                              "--set", "select.exclude=*norm*",
                              "--set", "stages.writer.plugin=hvq",
                              "-r", rep2, "--quiet", NULL};
        rc = th_run(&out, &err, args);
        ck_assert_msg(rc == 0, "run (hvq) exited %d:\n%s%s", rc, out, err);
        free(out);
        free(err);
    }
    {
        const char *args[] = {"decode", xh, "-o", y, "--quiet", NULL};
        rc = th_run(&out, &err, args);
        ck_assert_msg(rc == 0, "decode exited %d:\n%s%s", rc, out, err);
        free(out);
        free(err);
    }
    sin = open_ok(in);
    sx = open_ok(x);
    sy = open_ok(y);
    check_against(sin, sx);
    check_against(sin, sy);
    gg->source_close(g_ctx, sin);
    gg->source_close(g_ctx, sx);
    gg->source_close(g_ctx, sy);
    /* decode reconstructs exactly what the dequant writer wrote. */
    ck_assert(same_bytes(x, y));
}
END_TEST

/* ========================================================================
 * Memory: a tokenizer's worth of metadata through the real binary
 * ====================================================================== */

/* The fixture's tokenizer: BIG_META_TOKENS entries in each of its three
 * parallel arrays (tokens, scores, token types) and a precompiled_charsmap
 * (an array of uint8, as SentencePiece's normalizer is stored) of
 * BIG_META_CHARSMAP bytes: 18 MB of metadata, 9 MB of it short strings. */
#define BIG_META_TOKENS 600000u
#define BIG_META_CHARSMAP (4u << 20)
/* The most a child writing a GGUF may use for it, in MiB. Today a copy
 * takes 36 and decode, which reads the metadata escaped twice in the
 * container, 95 (127 and 111 under ASan, whose allocator and shadow
 * memory cost more). The sink used to build a DOM of each value, about
 * 100 bytes per array item whatever its size: 530 and 570 MB. */
#if defined(__SANITIZE_ADDRESS__)
#define BIG_META_MAX_RSS_MB 320
#else
#define BIG_META_MAX_RSS_MB 160
#endif

/* The fixture: one small F32 tensor behind the tokenizer. */
static const char *big_meta_gguf(const char *name, size_t *meta_bytes)
{
    gb kv, f;
    float w[64];
    char tok[32];
    bt t = {"w.weight", 0, 2, {8, 8, 0, 0}, w, sizeof w};
    uint32_t i, n = BIG_META_TOKENS;
    const char *p;

    memset(&kv, 0, sizeof kv);
    memset(&f, 0, sizeof f);
    for (i = 0; i < 64; i++)
        w[i] = (float)i * 0.25f - 8.0f;
    kv_head(&kv, "tokenizer.ggml.model", T_STR);
    gb_str(&kv, "llama");
    kv_head(&kv, "tokenizer.ggml.tokens", T_ARR);
    gb_u32(&kv, T_STR);
    gb_u64(&kv, n);
    for (i = 0; i < n; i++) {
        snprintf(tok, sizeof tok, i % 3 ? "t%u" : "\xe2\x96\x81w%u", i);
        gb_str(&kv, tok);
    }
    kv_head(&kv, "tokenizer.ggml.scores", T_ARR);
    gb_u32(&kv, T_F32);
    gb_u64(&kv, n);
    for (i = 0; i < n; i++)
        gb_f32(&kv, -(float)i * 0.125f);
    kv_head(&kv, "tokenizer.ggml.token_type", T_ARR);
    gb_u32(&kv, T_I32);
    gb_u64(&kv, n);
    for (i = 0; i < n; i++)
        gb_u32(&kv, i < 3 ? 3 : i < 259 ? 6 : 1);
    kv_head(&kv, "tokenizer.ggml.precompiled_charsmap", T_ARR);
    gb_u32(&kv, T_U8);
    gb_u64(&kv, BIG_META_CHARSMAP);
    for (i = 0; i < BIG_META_CHARSMAP; i++)
        gb_u8(&kv, (uint8_t)(i * 7u >> 3));
    *meta_bytes = kv.len;
    gb_file(&f, 3, &kv, 5, &t, 1, 32, NULL);
    p = save(name, &f);
    gb_free(&kv);
    gb_free(&f);
    return p;
}

/* Runs hvqconv; exit status 0 and the peak RSS under the bound. */
static void run_bounded(const char *what, const char *const *args)
{
    char *out = NULL, *err = NULL;
    long rss_kb = 0;
    int rc = th_run_rss(&out, &err, args, &rss_kb);
    ck_assert_msg(rc == 0, "%s exited %d:\n%s%s", what, rc, out, err);
    ck_assert_msg(rss_kb > 0 && rss_kb < BIG_META_MAX_RSS_MB * 1024L,
                  "%s: peak RSS %ld KiB, more than %d MiB", what, rss_kb,
                  BIG_META_MAX_RSS_MB);
    free(out);
    free(err);
}

/* GGUF in, GGUF out (byte for byte), and GGUF in, .hvq, decode to GGUF:
 * the memory of each run that writes the GGUF is bounded by a small
 * multiple of the metadata. */
START_TEST(gguf_cli_large_metadata)
{
    char in[4096], y[4096], yh[4096], z[4096], pipe[4096];
    size_t meta_bytes;
    FILE *f;

    snprintf(in, sizeof in, "%s", big_meta_gguf("big.gguf", &meta_bytes));
    ck_assert_uint_gt(meta_bytes, 10u << 20);
    snprintf(y, sizeof y, "%s", tmp("Y.gguf"));
    snprintf(yh, sizeof yh, "%s", tmp("Y.hvq"));
    snprintf(z, sizeof z, "%s", tmp("Z.gguf"));
    snprintf(pipe, sizeof pipe, "%s", tmp("copy.yaml"));
    f = fopen(pipe, "w");
    ck_assert_ptr_nonnull(f);
    fputs("name: copy\nselect:\n  include: [\"nothing\"]\nstages:\n"
          "  clusterer: rtn\n  writer: { plugin: dequant, dtype: same }\n", f);
    fclose(f);
    {
        const char *args[] = {"run", pipe, "-i", in, "-o", y, "-q", NULL};
        run_bounded("run to GGUF", args);
    }
    ck_assert(same_bytes(in, y));
    {
        const char *args[] = {"run", pipe, "-i", in, "-o", yh, "-q",
                              "--set", "stages.writer.plugin=hvq", NULL};
        char *out = NULL, *err = NULL;
        int rc = th_run(&out, &err, args);
        ck_assert_msg(rc == 0, "run to .hvq exited %d:\n%s%s", rc, out, err);
        free(out);
        free(err);
    }
    {
        const char *args[] = {"decode", yh, "-o", z, "-q", NULL};
        run_bounded("decode to GGUF", args);
    }
    ck_assert(same_bytes(in, z));
}
END_TEST

/* ========================================================================
 * Suite
 * ====================================================================== */
static Suite *suite(void)
{
    Suite *s = suite_create("gguf");
    TCase *tc = tcase_create("plugin");
    TCase *tr = tcase_create("real");

    tcase_add_checked_fixture(tc, gg_setup, gg_teardown);
    tcase_add_test(tc, gguf_descriptor);
    tcase_add_test(tc, gguf_probe);
    tcase_add_test(tc, gguf_meta_all_types);
    tcase_add_test(tc, gguf_sink_meta_texts);
    tcase_add_loop_test(tc, gguf_sink_errors, 0,
                        (int)(sizeof sink_bads / sizeof sink_bads[0]));
    tcase_add_test(tc, gguf_sink_large_values);
    tcase_add_test(tc, gguf_sink_order);
    tcase_add_test(tc, gguf_dequant);
    tcase_add_test(tc, gguf_opaque_passthrough);
    tcase_add_test(tc, gguf_sink_ggml_blocks);
    tcase_add_test(tc, gguf_versions_alignment);
    tcase_add_test(tc, gguf_base_is_valid);
    tcase_add_loop_test(tc, gguf_corrupt, 0, N_BAD);
    suite_add_tcase(s, tc);

    tcase_add_checked_fixture(tr, gg_setup, gg_teardown);
    tcase_add_test(tr, gguf_real_f32);
    tcase_add_test(tr, gguf_real_f16);
    tcase_add_test(tr, gguf_real_matches_safetensors);
    tcase_add_test(tr, gguf_real_rewrite);
    tcase_add_test(tr, gguf_cli_end_to_end);
    tcase_add_test(tr, gguf_cli_large_metadata);
    suite_add_tcase(s, tr);
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
