/* The ggml clusterer: llama.cpp's blocks, bit for bit.
 *
 *   - fixtures made by llama-quantize (tests/data/ggml, see its README):
 *     the plugin must write the same block bytes from the same weights and
 *     importance matrix, with weights none, hessian and auto; decode and
 *     recon must equal a scalar dequantization of those bytes;
 *   - hand-checked blocks and properties of Q4_0, Q4_1, Q5_0, Q5_1, Q8_0
 *     and IQ4_NL;
 *   - bad input: rows that fit no block, values beyond fp16, corrupt
 *     encodings refused by check and decode;
 *   - pipelines/q4_0.yaml through the real binary.
 *
 * HVQ_GGML_FIXTURES=DIR runs the fixture test on another folder of the same
 * layout (e.g. every tensor of a model, made by make_fixtures.py).
 */
#include "config.h"

#include "dtype.h"
#include "harness.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static hvq_ctx *ctx;
static hvq_registry *reg;
static const hvq_plugin *ggml;

/* Loaded once (an unchecked fixture: forked tests inherit them). */
static void load(void)
{
    ctx = th_ctx();
    reg = th_registry(ctx);
    ggml = th_plugin(reg, HVQ_KIND_CLUSTERER, "ggml");
}

static void unload(void)
{
    hvq_ctx_free(ctx);
    hvq_registry_free(reg);
}

/* ---- a scalar reference of ggml's dequantization ---------------------------- */

static float half_to_float(const uint8_t *p)
{
    unsigned h = (unsigned)(p[0] | p[1] << 8), e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0    ? ldexp(m, -24)
               : e == 31 ? (m ? NAN : INFINITY)
                         : ldexp(1024 + m, (int)e - 25);
    return (float)((h & 0x8000) ? -v : v);
}

/* w of value j (0..31) of one block of type t. */
static float ref_value(const char *t, const uint8_t *b, int j)
{
    if (strcmp(t, "q8_0") == 0)
        return (float)(int8_t)b[2 + j] * half_to_float(b);
    if (strcmp(t, "iq4_nl") == 0) { /* llama.cpp's kvalues_iq4nl */
        static const int8_t levels[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                          1,    13,   25,  38,  53,  69,  89,  113};
        return half_to_float(b) * (float)levels[j < 16 ? b[2 + j] & 15 : b[2 + j - 16] >> 4];
    }
    int with_min = t[3] == '1', five = t[1] == '5'; /* q4_1, q5_1; q5_0, q5_1 */
    const uint8_t *qs = b + (with_min ? 4 : 2) + (five ? 4 : 0);
    int q = j < 16 ? qs[j] & 15 : qs[j - 16] >> 4;
    if (five) {
        const uint8_t *qh = b + (with_min ? 4 : 2);
        uint32_t h = qh[0] | qh[1] << 8 | qh[2] << 16 | (uint32_t)qh[3] << 24;
        q += (int)(h >> j & 1) * 16;
    }
    if (with_min)
        return (float)q * half_to_float(b) + half_to_float(b + 2);
    return (float)(q - (five ? 16 : 8)) * half_to_float(b);
}

static const struct {
    const char *name;
    unsigned block, bytes;
} types[] = {{"q4_0", 32, 18},   {"q4_1", 32, 20},   {"q8_0", 32, 34},   {"q5_0", 32, 22},
             {"q5_1", 32, 24},   {"iq4_nl", 32, 18}, {"q2_K", 256, 84},  {"q3_K", 256, 110},
             {"q4_K", 256, 144}, {"q5_K", 256, 176}, {"q6_K", 256, 210}, {"iq4_xs", 256, 136}};

static int type_index(const char *t)
{
    for (int i = 0; i < (int)(sizeof types / sizeof types[0]); i++)
        if (strcmp(types[i].name, t) == 0)
            return i;
    ck_abort_msg("unknown type %s", t);
    return -1;
}

static size_t block_bytes(const char *t) { return types[type_index(t)].bytes; }
static uint64_t block_size(const char *t) { return types[type_index(t)].block; }

/* ---- running the plugin ------------------------------------------------------ */

/* Encodes x (rows x cols) as type with weights mode and hessian h (NULL: all
 * 1) on context cx (its threads); checks the component's shape, decode ==
 * recon, recon == the scalar dequantization of the blocks. Returns the
 * status; enc holds the result. */
static hvq_status encode_on(hvq_ctx *cx, const char *type, const char *mode, const float *x,
                            uint64_t rows, uint64_t cols, const float *h, float *recon,
                            hvq_encoded *enc)
{
    char tkv[32], wkv[32];
    snprintf(tkv, sizeof tkv, "type=%s", type);
    snprintf(wkv, sizeof wkv, "weights=%s", mode);
    const char *kv[] = {tkv, wkv, NULL};
    th_params tp;
    th_params_make(&tp, ggml, kv);
    float *ones = malloc(cols * sizeof *ones);
    for (uint64_t j = 0; j < cols; j++)
        ones[j] = 1.0f;
    hvq_cluster_input in = {.tensor_name = "t", .x = x, .rows = rows, .cols = cols,
                            .hessian = h ? h : ones, .seed = 1};
    hvq_encoded_init(enc);
    hvq_status st = ggml->cluster_encode(cx, &tp.p, &in, recon, enc);
    free(ones);
    if (st != HVQ_OK)
        return st;
    const hvq_component *c = cx->host->enc_get(enc, "blocks");
    ck_assert_ptr_nonnull(c);
    ck_assert_int_eq(c->dtype, HVQ_DTYPE_U8);
    ck_assert_uint_eq(c->nbytes, rows * cols / block_size(type) * block_bytes(type));
    ck_assert_uint_eq(c->paper_bits, 8 * c->nbytes);
    ck_assert_str_eq(cx->host->enc_attr_get(enc, "type"), type);
    float *dec = malloc(rows * cols * sizeof *dec);
    ck_assert_int_eq(ggml->cluster_check(cx, enc, rows, cols), HVQ_OK);
    ck_assert_int_eq(ggml->cluster_decode(cx, enc, rows, cols, dec), HVQ_OK);
    ck_assert_msg(memcmp(dec, recon, rows * cols * sizeof *dec) == 0, "decode != recon");
    const uint8_t *b = c->data;
    size_t bb = block_bytes(type);
    for (uint64_t i = 0; i < rows * cols && block_size(type) == 32; i++) {
        float ref = ref_value(type, b + i / 32 * bb, (int)(i % 32));
        ck_assert_msg(memcmp(&ref, &recon[i], 4) == 0, "%s: recon[%llu] = %a, dequantized %a",
                      type, (unsigned long long)i, (double)recon[i], (double)ref);
    }
    free(dec);
    return HVQ_OK;
}

/* encode_on the test's context (one thread). */
static hvq_status encode(const char *type, const char *mode, const float *x, uint64_t rows,
                         uint64_t cols, const float *h, float *recon, hvq_encoded *enc)
{
    return encode_on(ctx, type, mode, x, rows, cols, h, recon, enc);
}

/* ---- fixtures made by llama-quantize ------------------------------------------ */

static const char *fixture_dir(void)
{
    const char *d = getenv("HVQ_GGML_FIXTURES");
    return d && *d ? d : th_src("tests/data/ggml");
}

/* The file dir/name.suffix, whose size must be n bytes. */
static void *fixture(const char *dir, const char *name, const char *suffix, size_t n)
{
    char path[4096];
    size_t got;
    snprintf(path, sizeof path, "%s/%s%s", dir, name, suffix);
    void *p = th_read_file(path, &got);
    ck_assert_msg(p != NULL, "missing fixture %s", path);
    ck_assert_msg(got == n, "%s: %zu bytes, expected %zu", path, got, n);
    return p;
}

/* The first differing block of a and b (n bytes, blocks of bb), or -1. */
static long first_diff_block(const uint8_t *a, const uint8_t *b, size_t n, size_t bb)
{
    for (size_t i = 0; i < n; i++)
        if (a[i] != b[i])
            return (long)(i / bb);
    return -1;
}

/* One case of the manifest: tensor name (rows x cols) quantized as type by
 * llama-quantize without (imatrix 0) or with the importance matrix. */
static void check_case(const char *type, int imatrix, const char *name, uint64_t rows,
                       uint64_t cols)
{
    size_t nb = rows * cols / block_size(type) * block_bytes(type);
    char suffix[64];
    snprintf(suffix, sizeof suffix, ".%s.%s.bin", type, imatrix ? "imatrix" : "none");
    float *x = fixture(fixture_dir(), name, ".f32", rows * cols * 4);
    float *h = imatrix ? fixture(fixture_dir(), name, ".imatrix.f32", cols * 4) : NULL;
    uint8_t *want = fixture(fixture_dir(), name, suffix, nb);
    float *recon = malloc(rows * cols * sizeof *recon);
    const char *modes[] = {imatrix ? "hessian" : "none", "auto"};
    for (int m = 0; m < 2; m++) {
        hvq_encoded enc;
        ck_assert_int_eq(encode(type, modes[m], x, rows, cols, h, recon, &enc), HVQ_OK);
        const uint8_t *got = ctx->host->enc_get(&enc, "blocks")->data;
        long b = first_diff_block(got, want, nb, block_bytes(type));
        ck_assert_msg(b < 0, "%s %s weights=%s: block %ld (row %llu) differs from llama-quantize",
                      name, suffix, modes[m], b,
                      (unsigned long long)(b * (long)block_size(type) / (long)cols));
        hvq_encoded_clear(&enc);
    }
    free(x);
    free(h);
    free(want);
    free(recon);
}

START_TEST(blocks_match_llama_quantize)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/manifest.txt", fixture_dir());
    char *text = th_read_file(path, NULL);
    ck_assert_msg(text != NULL, "missing %s", path);
    int cases = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        char type[16], weights[16], name[256];
        unsigned long long rows, cols;
        if (line[0] == '#')
            continue;
        ck_assert_msg(sscanf(line, "%15s %15s %255s %llu %llu", type, weights, name, &rows,
                             &cols) == 5,
                      "bad manifest line: %s", line);
        check_case(type, strcmp(weights, "imatrix") == 0, name, rows, cols);
        cases++;
    }
    free(text);
    ck_assert_int_ge(cases, 6);
}
END_TEST

/* ---- hand-checked blocks and properties ---------------------------------------- */

/* Encodes one block of 32 values and returns a copy of its bytes. */
static void one_block(const char *type, const char *mode, const float *x, const float *h,
                      uint8_t *out)
{
    float recon[32];
    hvq_encoded enc;
    ck_assert_int_eq(encode(type, mode, x, 1, 32, h, recon, &enc), HVQ_OK);
    memcpy(out, ctx->host->enc_get(&enc, "blocks")->data, block_bytes(type));
    hvq_encoded_clear(&enc);
}

START_TEST(q4_0_scale_is_signed_max_over_minus_8)
{
    float x[32] = {-8.0f, 7.0f, 7.6f, 0.49f, 0.5f, -7.5f};
    uint8_t b[18];
    one_block("q4_0", "none", x, NULL, b);
    /* d = -8 / -8 = 1 (fp16 0x3c00); code = trunc(x / d + 8.5), at most 15;
     * value j in the low nibble, value j + 16 (here 0: code 8) in the high */
    static const uint8_t want[18] = {0x00, 0x3c, 0x80, 0x8f, 0x8f, 0x88, 0x89, 0x81,
                                     0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88};
    ck_assert_int_eq(memcmp(b, want, 18), 0);
    /* the largest magnitude positive: d = -1 (0xbc00), its code 0 */
    x[0] = 8.0f;
    one_block("q4_0", "none", x, NULL, b);
    ck_assert_uint_eq(b[0] | b[1] << 8, 0xbc00);
    ck_assert_uint_eq(b[2] & 15, 0);
}
END_TEST

START_TEST(q8_0_and_q4_1_hand_blocks)
{
    float x[32] = {127.0f, 2.5f, -2.5f, 0.4f};
    uint8_t b[34];
    one_block("q8_0", "none", x, NULL, b);
    /* d = 127 / 127; roundf: halves away from zero */
    ck_assert_uint_eq(b[0] | b[1] << 8, 0x3c00);
    ck_assert_int_eq((int8_t)b[2], 127);
    ck_assert_int_eq((int8_t)b[3], 3);
    ck_assert_int_eq((int8_t)b[4], -3);
    ck_assert_int_eq((int8_t)b[5], 0);
    for (int j = 0; j < 32; j++)
        x[j] = (float)(j % 16) - 3.0f; /* min -3, max 12: d = 1, m = -3 */
    one_block("q4_1", "none", x, NULL, b);
    ck_assert_uint_eq(b[0] | b[1] << 8, 0x3c00);
    ck_assert_uint_eq(b[2] | b[3] << 8, 0xc200);
    for (int j = 0; j < 16; j++)
        ck_assert_uint_eq(b[4 + j], (unsigned)(j | j << 4));
}
END_TEST

START_TEST(zero_blocks_follow_llama_cpp)
{
    float x[32] = {0}, h[32];
    for (int j = 0; j < 32; j++)
        h[j] = 0.5f;
    uint8_t b[18];
    /* without weights: d = 0 / -8 = -0 (fp16 0x8000), every code 8; with:
     * make_qx_quants' all-zero branch, d = +0, every code 0; both decode
     * to 0 */
    one_block("q4_0", "none", x, NULL, b);
    for (int j = 0; j < 18; j++)
        ck_assert_uint_eq(b[j], (j == 0 ? 0u : j == 1 ? 0x80u : 0x88u));
    one_block("q4_0", "hessian", x, h, b);
    for (int j = 0; j < 18; j++)
        ck_assert_uint_eq(b[j], 0);
    /* IQ4_NL: d = +0, every code the level nearest 0 (8: level 1, nearer
     * than -10), with weights or without */
    for (int m = 0; m < 2; m++) {
        one_block("iq4_nl", m ? "hessian" : "none", x, h, b);
        for (int j = 0; j < 18; j++)
            ck_assert_uint_eq(b[j], j < 2 ? 0u : 0x88u);
    }
}
END_TEST

static uint64_t rng = 1;
static float urand(void) /* uniform in (-1, 1), some rows with outliers */
{
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)(((double)(rng >> 11) + 0.5) / 4503599627370496.0 - 1.0);
}

static uint16_t host_half(float f)
{
    uint16_t h;
    ck_assert_int_eq(ctx->host->convert(ctx, HVQ_DTYPE_F16, &h, HVQ_DTYPE_F32, &f, 1), HVQ_OK);
    return h;
}

/* Random rows, every type and weighting: decode == recon == dequantized
 * blocks (in encode); without weights each scale is the _ref formula. */
START_TEST(random_rows_follow_the_reference_formulas)
{
    enum { R = 6, C = 96 };
    static float x[R * C], recon[R * C], h[C];
    for (int i = 0; i < R * C; i++)
        x[i] = urand() * (i % 29 == 0 ? 0.5f : 0.05f);
    for (int j = 0; j < C; j++)
        h[j] = 0.01f + urand() * urand();
    const char *names[] = {"q4_0", "q4_1", "q8_0", "q5_0", "q5_1"};
    const char *modes[] = {"none", "hessian", "auto"};
    for (int t = 0; t < 5; t++)
        for (int m = 0; m < 3; m++) {
            hvq_encoded enc;
            ck_assert_int_eq(encode(names[t], modes[m], x, R, C, h, recon, &enc), HVQ_OK);
            int weighted = m > 0 && t != 2; /* llama.cpp's Q8_0 ignores weights */
            ck_assert_str_eq(ctx->host->enc_attr_get(&enc, "weights"),
                             weighted ? "hessian" : "none");
            const uint8_t *b = ctx->host->enc_get(&enc, "blocks")->data;
            for (int k = 0; k < R * C / 32 && !weighted; k++) {
                const float *v = x + 32 * k;
                float amax = 0, smax = 0, mn = v[0];
                for (int j = 0; j < 32; j++) {
                    if (fabsf(v[j]) > amax)
                        amax = fabsf(v[j]), smax = v[j];
                    mn = v[j] < mn ? v[j] : mn;
                }
                const uint8_t *blk = b + k * block_bytes(names[t]);
                float d = t == 0 ? smax / -8.0f : t == 3 ? smax / -16.0f : amax / 127.0f;
                if (t != 1 && t != 4)
                    ck_assert_uint_eq(blk[0] | blk[1] << 8, host_half(d));
                else
                    ck_assert_uint_eq(blk[2] | blk[3] << 8, host_half(mn));
            }
            hvq_encoded_clear(&enc);
        }
}
END_TEST

/* K types: 256-value super-blocks; decode == recon (in encode), a zero
 * super-block is all zero bytes in Q6_K, rows of 64 are refused. */
/* The fallback types of the K types, in the order of the test below. */
static const char *const fallbacks[] = {"q4_0", "q4_0", "q5_0", "q5_1", "q8_0", "iq4_nl"};

/* encode_on for a type whose rows fall back: the encoding is checked as
 * the fallback type's (the attribute names the type used). */
static hvq_status fallback_encode(const char *type, const char *mode, const float *x,
                                  uint64_t rows, uint64_t cols, const float *h, float *recon,
                                  hvq_encoded *enc)
{
    char tkv[32], wkv[32];
    snprintf(tkv, sizeof tkv, "type=%s", type);
    snprintf(wkv, sizeof wkv, "weights=%s", mode);
    const char *kv[] = {tkv, wkv, NULL};
    th_params tp;
    th_params_make(&tp, ggml, kv);
    hvq_cluster_input in = {.tensor_name = "t", .x = x, .rows = rows, .cols = cols,
                            .hessian = h, .seed = 1};
    hvq_encoded_init(enc);
    hvq_status st = ggml->cluster_encode(ctx, &tp.p, &in, recon, enc);
    if (st == HVQ_OK) {
        const char *used = ctx->host->enc_attr_get(enc, "type");
        const hvq_component *c = ctx->host->enc_get(enc, "blocks");
        ck_assert_uint_eq(c->nbytes, rows * cols / block_size(used) * block_bytes(used));
        float *dec = malloc(rows * cols * sizeof *dec);
        ck_assert_int_eq(ggml->cluster_decode(ctx, enc, rows, cols, dec), HVQ_OK);
        ck_assert(memcmp(dec, recon, rows * cols * sizeof *dec) == 0);
        free(dec);
    }
    return st;
}

START_TEST(k_types_round_trip_and_fall_back_on_short_rows)
{
    enum { R = 4, C = 512 };
    static float x[R * C], recon[R * C], h[C];
    for (int i = 0; i < R * C; i++)
        x[i] = i < 256 ? 0.0f : urand() * (i % 37 == 0 ? 0.3f : 0.03f);
    for (int j = 0; j < C; j++)
        h[j] = 0.01f + urand() * urand();
    const char *names[] = {"q2_K", "q3_K", "q4_K", "q5_K", "q6_K", "iq4_xs"};
    const char *modes[] = {"none", "hessian"};
    for (int t = 0; t < 6; t++)
        for (int m = 0; m < 2; m++) {
            hvq_encoded enc;
            ck_assert_int_eq(encode(names[t], modes[m], x, R, C, h, recon, &enc), HVQ_OK);
            for (int i = 0; i < 256; i++)
                ck_assert(recon[i] == 0.0f);
            const uint8_t *b = ctx->host->enc_get(&enc, "blocks")->data;
            for (int i = 0; i < 210 && t == 4; i++)
                ck_assert_uint_eq(b[i], 0);
            hvq_encoded_clear(&enc);
            /* rows of 64: llama-quantize's fallback type, whole */
            ck_assert_int_eq(fallback_encode(names[t], modes[m], x, 8, 64, h, recon, &enc),
                             HVQ_OK);
            ck_assert_str_eq(ctx->host->enc_attr_get(&enc, "type"), fallbacks[t]);
            hvq_encoded_clear(&enc);
            /* rows of 48 fit no fallback either (llama-quantize: F16) */
            ck_assert_int_eq(fallback_encode(names[t], modes[m], x, 8, 48, h, recon, &enc),
                             HVQ_E_INPUT);
            th_assert_contains(hvq_ctx_error(ctx), "block size 256 (llama-quantize stores such "
                                                   "a tensor as F16; exclude it)");
            hvq_ctx_clear_error(ctx);
            hvq_encoded_clear(&enc);
        }
}
END_TEST

/* ---- threads ------------------------------------------------------------------- */

/* Contexts with 1, 2 and 3 threads (the first the test's own). */
static void thread_ctxs(hvq_ctx *cs[3])
{
    cs[0] = ctx;
    for (int k = 1; k < 3; k++) {
        hvq_ctx_opts o = {.quiet = 1, .threads = k + 1};
        cs[k] = hvq_ctx_new(&o);
        ck_assert_ptr_nonnull(cs[k]);
    }
}

/* Rows of 256 make chunks of 128 rows (host->parallel_for): 600 rows are
 * five chunks, the last one short. Every type gives the same blocks and
 * recon (and decode, in encode_on) with 1, 2 and 3 threads. */
START_TEST(threads_give_the_same_bytes)
{
    enum { R = 600, C = 256 };
    float *x = malloc(R * C * sizeof *x), *recon[3], h[C];
    for (int i = 0; i < R * C; i++)
        x[i] = urand() * (i % 41 == 0 ? 0.4f : 0.02f) * (float)(1 + i / C % 7);
    for (int j = 0; j < C; j++)
        h[j] = 0.01f + urand() * urand();
    hvq_ctx *cs[3];
    thread_ctxs(cs);
    const char *names[] = {"q4_0", "q5_1", "q8_0", "iq4_nl", "q2_K", "q3_K", "q4_K", "q6_K",
                           "iq4_xs"};
    for (int t = 0; t < 9; t++)
        for (int m = 0; m < 2; m++) {
            hvq_encoded enc[3];
            for (int k = 0; k < 3; k++) {
                recon[k] = malloc(R * C * sizeof *recon[k]);
                ck_assert_int_eq(encode_on(cs[k], names[t], m ? "hessian" : "none", x, R, C, h,
                                           recon[k], &enc[k]),
                                 HVQ_OK);
            }
            const hvq_component *b0 = ctx->host->enc_get(&enc[0], "blocks");
            for (int k = 1; k < 3; k++) {
                const hvq_component *bk = ctx->host->enc_get(&enc[k], "blocks");
                ck_assert_msg(memcmp(b0->data, bk->data, b0->nbytes) == 0,
                              "%s: %d threads write other blocks", names[t], k + 1);
                ck_assert_msg(memcmp(recon[0], recon[k], R * C * sizeof *recon[k]) == 0,
                              "%s: %d threads give another recon", names[t], k + 1);
            }
            for (int k = 0; k < 3; k++) {
                hvq_encoded_clear(&enc[k]);
                free(recon[k]);
            }
        }
    hvq_ctx_free(cs[1]);
    hvq_ctx_free(cs[2]);
    free(x);
}
END_TEST

/* Encodes x on 1, 2 and 3 threads: refused with the same message, which
 * names what. */
static void refused_on_threads(const float *x, uint64_t rows, uint64_t cols, const char *what)
{
    hvq_ctx *cs[3];
    thread_ctxs(cs);
    float *recon = malloc(rows * cols * sizeof *recon);
    for (int k = 0; k < 3; k++) {
        hvq_encoded enc;
        ck_assert_int_eq(encode_on(cs[k], "q4_0", "none", x, rows, cols, NULL, recon, &enc),
                         HVQ_E_INPUT);
        th_assert_contains(hvq_ctx_error(cs[k]), what);
        hvq_encoded_clear(&enc);
    }
    hvq_ctx_clear_error(ctx);
    hvq_ctx_free(cs[1]);
    hvq_ctx_free(cs[2]);
    free(recon);
}

/* The first fault in row order, whatever chunk a thread met first: the
 * first overflowing row; a value that is not finite before any overflow
 * (as a check of the whole tensor first would report it). */
START_TEST(threads_report_the_first_bad_row)
{
    enum { R = 600, C = 256 };
    float *x = malloc(R * C * sizeof *x);
    for (int i = 0; i < R * C; i++)
        x[i] = urand() * 0.02f;
    x[590 * C + 3] = 1e6f; /* d = 1e6 / -8, beyond fp16 */
    x[300 * C + 9] = -1e6f;
    x[310 * C + 9] = 2e6f;
    refused_on_threads(x, R, C, "tensor 't': row 300: values beyond the fp16 range");
    x[599 * C + 1] = NAN;
    x[450 * C + 7] = INFINITY;
    x[450 * C + 200] = NAN;
    refused_on_threads(x, R, C, "tensor 't': value 115207 is not finite");
    free(x);
}
END_TEST

/* ---- bad input ----------------------------------------------------------------- */

START_TEST(refuses_rows_that_fit_no_block_and_huge_values)
{
    static float x[4 * 64], recon[4 * 64];
    hvq_encoded enc;
    ck_assert_int_eq(encode("q4_1", "none", x, 4, 48, NULL, recon, &enc), HVQ_E_INPUT);
    th_assert_contains(hvq_ctx_error(ctx), "tensor 't': rows of 48 columns are not a multiple "
                                           "of the q4_1 block size 32");
    hvq_encoded_clear(&enc);
    hvq_ctx_clear_error(ctx);
    x[5] = 1e6f; /* d = 1e6 / -8 is beyond fp16: infinite scales */
    ck_assert_int_eq(encode("q4_0", "none", x, 4, 64, NULL, recon, &enc), HVQ_E_INPUT);
    th_assert_contains(hvq_ctx_error(ctx), "tensor 't': row 0: values beyond the fp16 range");
    hvq_encoded_clear(&enc);
    hvq_ctx_clear_error(ctx);
    x[5] = INFINITY;
    ck_assert_int_eq(encode("q8_0", "none", x, 4, 64, NULL, recon, &enc), HVQ_E_INPUT);
    th_assert_contains(hvq_ctx_error(ctx), "value 5 is not finite");
    hvq_encoded_clear(&enc);
}
END_TEST

/* check and decode refuse a layout that does not match, without data too. */
static void refused(hvq_encoded *enc, uint64_t rows, uint64_t cols, const char *why)
{
    static float out[16 * 128];
    ck_assert_int_eq(ggml->cluster_check(ctx, enc, rows, cols), HVQ_E_INPUT);
    th_assert_contains(hvq_ctx_error(ctx), why);
    hvq_ctx_clear_error(ctx);
    ck_assert_int_eq(ggml->cluster_decode(ctx, enc, rows, cols, out), HVQ_E_INPUT);
    th_assert_contains(hvq_ctx_error(ctx), why);
    hvq_ctx_clear_error(ctx);
}

START_TEST(check_and_decode_refuse_corrupt_encodings)
{
    static float x[4 * 64], recon[4 * 64];
    for (int i = 0; i < 4 * 64; i++)
        x[i] = urand();
    hvq_encoded enc;
    ck_assert_int_eq(encode("q4_0", "none", x, 4, 64, NULL, recon, &enc), HVQ_OK);
    refused(&enc, 8, 64, "blocks missing or of the wrong size for a 8x64 q4_0 matrix");
    refused(&enc, 4, 48, "a 4x48 matrix does not divide into q4_0 blocks of 32");
    refused(&enc, 1ull << 40, 1ull << 20, "wrong size");
    ck_assert_int_eq(ctx->host->enc_attr(ctx, &enc, "type", "q8_0"), HVQ_OK);
    refused(&enc, 4, 64, "wrong size for a 4x64 q8_0 matrix");
    ck_assert_int_eq(ctx->host->enc_attr(ctx, &enc, "type", "q7_0"), HVQ_OK);
    refused(&enc, 4, 64, "unknown attribute type 'q7_0'");
    ck_assert_int_eq(ctx->host->enc_attr(ctx, &enc, "type", "q4_0"), HVQ_OK);
    ck_assert_int_eq(ggml->cluster_check(ctx, &enc, 4, 64), HVQ_OK);
    enc.components[0].dtype = HVQ_DTYPE_I8;
    refused(&enc, 4, 64, "wrong size");
    hvq_encoded_clear(&enc);
}
END_TEST

/* ---- through the binary --------------------------------------------------------- */

START_TEST(q4_0_pipeline_runs_on_the_demo_model)
{
    char *dir = th_tmpdir("ggml"), out[4096], rep[4096], dec[4096];
    snprintf(out, sizeof out, "%s/q4_0.hvq", dir);
    snprintf(rep, sizeof rep, "%s/q4_0.json", dir);
    snprintf(dec, sizeof dec, "%s/q4_0.safetensors", dir);
    const char *run[] = {"run", "-q", th_src("pipelines/q4_0.yaml"), "--input",
                         th_src("models/stories260K"), "-o", out, "-r", rep, NULL};
    char *err = NULL;
    ck_assert_msg(th_run(NULL, &err, run) == 0, "run failed: %s", err);
    free(err);
    char *report = th_read_file(rep, NULL);
    th_assert_contains(report, "\"clusterer\": \"ggml\"");
    th_assert_contains(report, "model.layers.0.self_attn.q_proj.weight");
    free(report);
    const char *verify[] = {"verify", out, NULL};
    ck_assert_int_eq(th_run(NULL, NULL, verify), 0);
    const char *decode[] = {"decode", out, "-o", dec, NULL};
    ck_assert_int_eq(th_run(NULL, NULL, decode), 0);
    ck_assert(th_exists(dec));
    th_rmtree(dir);
    free(dir);
}
END_TEST

/* The whole chain on the shared stories260K GGUF and its imatrix: the
 * imatrix hessian stage, the ggml clusterer and the hvq writer store the
 * bytes llama-quantize --imatrix wrote (the checked-in fixtures). */
START_TEST(pipeline_with_imatrix_stores_llama_quantize_blocks)
{
    const char *shared = th_shared_data();
    char model[4096], imx[4096];
    snprintf(model, sizeof model, "%s/stories260K/stories260K.f32.gguf", shared ? shared : "");
    snprintf(imx, sizeof imx, "%s/stories260K/imatrix.gguf", shared ? shared : "");
    if (!shared || !th_exists(model) || !th_exists(imx)) {
        fprintf(stderr, "test_ggml: skipped the imatrix pipeline: %s not found\n",
                shared ? model : "the shared data folder");
        return;
    }
    char *dir = th_tmpdir("ggml-imatrix"), out[4096], rep[4096], pipe[64], path[4200];
    const char *names[] = {"q4_0", "q4_1", "q8_0"};
    const char *tensors[] = {"blk.0.attn_q.weight", "blk.1.ffn_gate.weight", "blk.4.attn_v.weight"};
    const uint64_t rows[] = {64, 172, 32};
    for (int t = 0; t < 3; t++) {
        snprintf(out, sizeof out, "%s/%s.hvq", dir, names[t]);
        snprintf(rep, sizeof rep, "%s/%s.json", dir, names[t]);
        snprintf(pipe, sizeof pipe, "pipelines/%s.yaml", names[t]);
        snprintf(path, sizeof path, "stages.hessian.path=%s", imx);
        const char *run[] = {"run", "-q", th_src(pipe), "--input", model, "-o", out, "-r", rep,
                             "--set", "stages.hessian.plugin=imatrix", "--set", path, NULL};
        char *err = NULL;
        ck_assert_msg(th_run(NULL, &err, run) == 0, "%s: %s", names[t], err);
        free(err);
        hvq_model *m = ctx->host->model_open(ctx, out);
        ck_assert_msg(m != NULL, "%s: %s", out, hvq_ctx_error(ctx));
        for (int k = 0; k < 3; k++) {
            char comp[256], suffix[64];
            snprintf(comp, sizeof comp, "%s::clusterer.blocks", tensors[k]);
            snprintf(suffix, sizeof suffix, ".%s.imatrix.bin", names[t]);
            size_t nb = rows[k] * 64 / 32 * block_bytes(names[t]);
            uint8_t *want = fixture(th_src("tests/data/ggml"), tensors[k], suffix, nb);
            hvq_tensor got;
            ck_assert_int_eq(ctx->host->model_find(ctx, m, comp, &got), HVQ_OK);
            ck_assert_uint_eq(got.info.nbytes, nb);
            ck_assert_msg(memcmp(got.data, want, nb) == 0, "%s %s: not llama-quantize's bytes",
                          names[t], tensors[k]);
            free(want);
        }
        ctx->host->model_close(ctx, m);
    }
    th_rmtree(dir);
    free(dir);
}
END_TEST

/* col_exponent: the blocks are those of W * c quantized with the weights
 * H / c^2 (the plain plugin on those inputs is the reference), c is the
 * fp16 of (H_j / mean H)^a, and recon is the blocks' values / c. */
START_TEST(column_gains_follow_their_definition)
{
    enum { R = 8, C = 256 };
    static float x[R * C], xs[R * C], h[C], hs[C], cg[C], recon[R * C], ref[R * C], dec[R * C];
    rng = 5;
    for (int i = 0; i < R * C; i++)
        x[i] = urand();
    double mean = 0;
    for (int j = 0; j < C; j++)
        mean += (h[j] = (float)exp(1.5 * sin(0.37 * j)));
    mean /= C;
    const char *tnames[] = {"q4_0", "q4_K", "iq4_nl"};
    for (size_t k = 0; k < 3; k++) {
        char tkv[32];
        snprintf(tkv, sizeof tkv, "type=%s", tnames[k]);
        const char *kv[] = {tkv, "weights=hessian", "col_exponent=0.25", NULL};
        th_params tp;
        th_params_make(&tp, ggml, kv);
        hvq_cluster_input in = {.tensor_name = "t", .x = x, .rows = R, .cols = C, .hessian = h,
                                .seed = 1};
        hvq_encoded enc, plain;
        hvq_encoded_init(&enc);
        ck_assert_int_eq(ggml->cluster_encode(ctx, &tp.p, &in, recon, &enc), HVQ_OK);
        const hvq_component *cc = ctx->host->enc_get(&enc, "col_gains");
        ck_assert_ptr_nonnull(cc);
        for (int j = 0; j < C; j++) {
            cg[j] = hvq_f16_to_f32(hvq_f32_to_f16((float)pow(h[j] / mean, 0.25)));
            ck_assert(hvq_f16_to_f32(((const uint16_t *)cc->data)[j]) == cg[j]);
            hs[j] = h[j] / (cg[j] * cg[j]);
        }
        for (int i = 0; i < R * C; i++)
            xs[i] = x[i] * cg[i % C];
        ck_assert_int_eq(encode(tnames[k], "hessian", xs, R, C, hs, ref, &plain), HVQ_OK);
        const hvq_component *a = ctx->host->enc_get(&enc, "blocks");
        const hvq_component *b = ctx->host->enc_get(&plain, "blocks");
        ck_assert_uint_eq(a->nbytes, b->nbytes);
        ck_assert_int_eq(memcmp(a->data, b->data, a->nbytes), 0);
        for (int i = 0; i < R * C; i++)
            ck_assert(recon[i] == ref[i] / cg[i % C]);
        ck_assert_int_eq(ggml->cluster_check(ctx, &enc, R, C), HVQ_OK);
        ck_assert_int_eq(ggml->cluster_decode(ctx, &enc, R, C, dec), HVQ_OK);
        ck_assert_int_eq(memcmp(dec, recon, sizeof dec), 0);
        ((uint16_t *)cc->data)[3] = 0; /* a zero gain */
        ck_assert_int_eq(ggml->cluster_decode(ctx, &enc, R, C, dec), HVQ_E_INPUT);
        ((hvq_component *)cc)->nbytes = 2 * (C - 1);
        ck_assert_int_eq(ggml->cluster_check(ctx, &enc, R, C), HVQ_E_INPUT);
        hvq_encoded_clear(&enc);
        hvq_encoded_clear(&plain);
    }
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("ggml");
    TCase *tc = tcase_create("ggml");
    tcase_add_unchecked_fixture(tc, load, unload);
    tcase_add_test(tc, blocks_match_llama_quantize);
    tcase_add_test(tc, q4_0_scale_is_signed_max_over_minus_8);
    tcase_add_test(tc, q8_0_and_q4_1_hand_blocks);
    tcase_add_test(tc, zero_blocks_follow_llama_cpp);
    tcase_add_test(tc, random_rows_follow_the_reference_formulas);
    tcase_add_test(tc, k_types_round_trip_and_fall_back_on_short_rows);
    tcase_add_test(tc, threads_give_the_same_bytes);
    tcase_add_test(tc, threads_report_the_first_bad_row);
    tcase_add_test(tc, refuses_rows_that_fit_no_block_and_huge_values);
    tcase_add_test(tc, check_and_decode_refuse_corrupt_encodings);
    tcase_add_test(tc, column_gains_follow_their_definition);
    tcase_add_test(tc, q4_0_pipeline_runs_on_the_demo_model);
    tcase_add_test(tc, pipeline_with_imatrix_stores_llama_quantize_blocks);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
