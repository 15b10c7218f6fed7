/* Unit tests of the small stage plugins against scalar reference code:
 * importance (magnitude, hasvq, obd), residual (none, coo16, rice) and the rtn
 * clusterer (per row, per group, asymmetric), each loaded from the build
 * tree and run on fixture matrices. */
#include "config.h"

#include "dtype.h"
#include "harness.h"
#include "params.h"

#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Deterministic heavy-tailed test data (ratio of normals has heavy tails;
 * clipped to stay finite and within fp16 range). */
static uint64_t rng_state;
static double urand(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return ((rng_state >> 11) + 0.5) / 9007199254740992.0;
}
static float heavy(void)
{
    double u1 = urand(), u2 = urand(), u3 = urand(), u4 = urand();
    double z = sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2);
    double w = sqrt(-2 * log(u3)) * cos(6.283185307179586 * u4);
    double v = z / (0.5 + fabs(w)) * 0.02;
    return (float)(v > 1 ? 1 : v < -1 ? -1 : v);
}
static void fill(float *x, size_t n, uint64_t seed)
{
    rng_state = seed;
    for (size_t i = 0; i < n; i++)
        x[i] = heavy();
}

static hvq_ctx *ctx;
static hvq_registry *reg;

static void setup(void)
{
    ctx = th_ctx();
    reg = th_registry(ctx);
}

static void teardown(void)
{
    hvq_ctx_free(ctx);
    hvq_registry_free(reg);
}

static const hvq_plugin *plugin(uint32_t kind, const char *name)
{
    return th_plugin(reg, kind, name);
}

/* ---- importance ---------------------------------------------------------- */

START_TEST(importance_matches_reference)
{
    enum { R = 7, C = 13 };
    float w[R * C], h[C], s[R * C];
    fill(w, R * C, 1);
    for (int j = 0; j < C; j++)
        h[j] = j == 3 ? 0.0f : (float)(0.25 * (j + 1)); /* one column below the floor */
    const char *names[] = {"magnitude", "hasvq", "obd"};
    for (int k = 0; k < 3; k++) {
        const hvq_plugin *d = plugin(HVQ_KIND_IMPORTANCE, names[k]);
        th_params tp;
        th_params_make(&tp, d, NULL);
        ck_assert_int_eq(d->importance_score(ctx, &tp.p, w, R, C, h, s), HVQ_OK);
        for (int i = 0; i < R * C; i++) {
            float hj = h[i % C] > 1e-6f ? h[i % C] : 1e-6f; /* the default h_floor */
            float ref = k == 0 ? fabsf(w[i]) : k == 1 ? fabsf(w[i]) * sqrtf(hj) : hj * w[i] * w[i];
            ck_assert_msg(s[i] == ref, "%s[%d]: %g != reference %g", names[k], i, s[i], ref);
        }
    }
}
END_TEST

/* ---- residual ------------------------------------------------------------ */

START_TEST(coo16_count_is_floor_of_rho_numel)
{
    const hvq_plugin *d = plugin(HVQ_KIND_RESIDUAL, "coo16");
    th_params tp;
    const char *mid[] = {"sparsity=0.015", NULL}, *high[] = {"sparsity=2%", NULL};
    th_params_make(&tp, d, mid);
    ck_assert_uint_eq(d->residual_count(&tp.p, 2048ull * 2048), 62914); /* 62914.56 */
    ck_assert_uint_eq(d->residual_count(&tp.p, 4096), 61);              /* 61.44 */
    th_params_make(&tp, d, high);
    ck_assert_uint_eq(d->residual_count(&tp.p, 2048ull * 2048), 83886); /* 83886.08 */
    ck_assert_uint_eq(d->residual_count(&tp.p, 10), 0);
    const hvq_plugin *none = plugin(HVQ_KIND_RESIDUAL, "none");
    th_params_make(&tp, none, NULL);
    ck_assert_uint_eq(none->residual_count(&tp.p, 1000000), 0);
}
END_TEST

/* The tolerance for "equals W_norm to fp16 precision": the correction S is
 * one fp16 value, so the error is at most half an fp16 ulp of S: |S| * 2^-11
 * for normal values, 2^-25 absolute in fp16's subnormal range; plus float32
 * rounding of the addition (2^-24 relative to the result). */
static double coo16_tolerance(float s, float target)
{
    return fabs(s) * 0x1p-11 + 0x1p-25 + fabs(target) * 0x1p-23;
}

START_TEST(coo16_reconstructs_targets_and_decodes_identically)
{
    enum { R = 16, C = 24, N = R * C, K = 40 };
    float recon[N], body[N], target[K];
    uint64_t pos[K];
    fill(body, N, 2);
    memcpy(recon, body, sizeof recon);
    rng_state = 99;
    for (int i = 0; i < K; i++) {
        pos[i] = (uint64_t)i * 9 + (uint64_t)(urand() * 8); /* ascending, distinct */
        target[i] = (float)(urand() * 2 - 1);
    }
    target[0] = recon[pos[0]];        /* a zero correction */
    target[1] = recon[pos[1]] + 1e-7f; /* a tiny one (fp16 subnormal range) */
    const hvq_plugin *d = plugin(HVQ_KIND_RESIDUAL, "coo16");
    th_params tp;
    th_params_make(&tp, d, NULL);
    hvq_encoded enc;
    hvq_encoded_init(&enc);
    hvq_residual_input in = {.tensor_name = "t", .rows = R, .cols = C, .pos = pos,
                             .target = target, .n = K, .recon = recon};
    ck_assert_int_eq(d->residual_encode(ctx, &tp.p, &in, &enc), HVQ_OK);
    for (int i = 0; i < K; i++) {
        float s = target[i] - body[pos[i]];
        double err = fabs((double)recon[pos[i]] - target[i]);
        ck_assert_msg(err <= coo16_tolerance(s, target[i]),
                      "entry %d: |recon - target| = %g > tolerance %g", i, err,
                      coo16_tolerance(s, target[i]));
    }
    for (int i = 0, k = 0; i < N; i++) { /* untouched elsewhere */
        if (k < K && (uint64_t)i == pos[k]) {
            k++;
            continue;
        }
        ck_assert(recon[i] == body[i]);
    }
    const hvq_component *pc = ctx->host->enc_get(&enc, "positions");
    ck_assert_ptr_nonnull(pc);
    ck_assert_uint_eq(pc->paper_bits + ctx->host->enc_get(&enc, "values")->paper_bits, 48 * K);
    float dec[N];
    memcpy(dec, body, sizeof dec);
    ck_assert_int_eq(d->residual_decode(ctx, &enc, R, C, dec), HVQ_OK);
    ck_assert_int_eq(memcmp(dec, recon, sizeof dec), 0);
    /* A corrupt stream is bad input, not a crash. */
    uint32_t *p32 = ctx->host->enc_get(&enc, "positions")->data;
    p32[5] = p32[4];
    ck_assert_int_eq(d->residual_decode(ctx, &enc, R, C, dec), HVQ_E_INPUT);
    th_assert_contains(hvq_ctx_error(ctx), "not ascending");
    p32[5] = N + 1;
    ck_assert_int_eq(d->residual_decode(ctx, &enc, R, C, dec), HVQ_E_INPUT);
    hvq_encoded_clear(&enc);
}
END_TEST

/* ---- residual rice: the same entries as coo16, compact positions ---------- */

static const hvq_plugin *residual(const char *name)
{
    return th_plugin(reg, HVQ_KIND_RESIDUAL, name);
}

/* The plugin's parameters with sparsity set (its one parameter, as coo16's). */
static void sparsity(th_params *tp, const hvq_plugin *d, const char *value)
{
    char kv[64];
    snprintf(kv, sizeof kv, "sparsity=%s", value);
    const char *const list[] = {kv, NULL};
    ck_assert_uint_eq(hvq_param_count(d->params), 1);
    th_params_make(tp, d, list);
}

START_TEST(rice_count_is_coo16s)
{
    const hvq_plugin *r = residual("rice"), *c = residual("coo16");
    static const char *const rho[] = {"0", "0.005", "1.5%", "0.02", "0.5", "1"};
    static const uint64_t numel[] = {0, 1, 10, 4096, 2048ull * 2048, 8192ull * 2048, 1ull << 40};
    for (size_t i = 0; i < sizeof rho / sizeof *rho; i++) {
        th_params tr, tc;
        sparsity(&tr, r, rho[i]);
        sparsity(&tc, c, rho[i]);
        for (size_t j = 0; j < sizeof numel / sizeof *numel; j++)
            ck_assert_uint_eq(r->residual_count(&tr.p, numel[j]),
                              c->residual_count(&tc.p, numel[j]));
    }
    th_params tr;
    sparsity(&tr, r, "0.02");
    ck_assert_uint_eq(r->residual_count(&tr.p, 2048ull * 2048), 83886);
}
END_TEST

/* A fixture: body (the clusterer's recon) and targets at chosen positions. */
typedef struct fixture {
    uint64_t rows, cols, n;
    float *body, *target;
    uint64_t *pos;
} fixture;

static fixture make_fixture(uint64_t rows, uint64_t cols, double p, uint64_t seed)
{
    fixture f = {rows, cols, 0, malloc(rows * cols * sizeof(float)),
                 malloc(rows * cols * sizeof(float)), malloc(rows * cols * sizeof(uint64_t))};
    rng_state = seed;
    for (uint64_t i = 0; i < rows * cols; i++) {
        f.body[i] = (float)(urand() * 2 - 1) * 0.1f;
        int keep = urand() < p || i == 0 || i == rows * cols - 1;
        if (keep && p > 0) {
            double t = urand() * 2 - 1;
            if (f.n % 7 == 3)
                t = f.body[i] + 1e-7; /* tiny corrections: fp16 subnormals */
            if (f.n % 11 == 5)
                t = f.body[i]; /* none at all */
            f.pos[f.n] = i;
            f.target[f.n++] = (float)t;
        }
    }
    return f;
}

static void free_fixture(fixture *f)
{
    free(f->body);
    free(f->target);
    free(f->pos);
}

/* Encodes f with plugin d into enc; returns the reconstruction (malloc'd). */
static float *encode(const hvq_plugin *d, const fixture *f, hvq_encoded *enc)
{
    th_params tp;
    sparsity(&tp, d, "0.02");
    float *recon = malloc(f->rows * f->cols * sizeof(float) + 4);
    memcpy(recon, f->body, f->rows * f->cols * sizeof(float));
    hvq_residual_input in = {.tensor_name = "t", .rows = f->rows, .cols = f->cols,
                             .pos = f->pos, .target = f->target, .n = f->n, .recon = recon};
    hvq_encoded_init(enc);
    ck_assert_msg(d->residual_encode(ctx, &tp.p, &in, enc) == HVQ_OK, "%s: %s", d->name,
                  hvq_ctx_error(ctx));
    return recon;
}

/* Decodes enc onto the body; the status, the result in *out (malloc'd). */
static hvq_status decode(const hvq_plugin *d, const fixture *f, const hvq_encoded *enc,
                         float **out)
{
    *out = malloc(f->rows * f->cols * sizeof(float) + 4);
    memcpy(*out, f->body, f->rows * f->cols * sizeof(float));
    return d->residual_decode(ctx, enc, f->rows, f->cols, *out);
}

static void check_same_as_coo16(uint64_t rows, uint64_t cols, double p, uint64_t seed)
{
    fixture f = make_fixture(rows, cols, p, seed);
    hvq_encoded er, ec;
    float *rr = encode(residual("rice"), &f, &er), *rc = encode(residual("coo16"), &f, &ec);
    size_t bytes = rows * cols * sizeof(float);
    ck_assert_msg(memcmp(rr, rc, bytes) == 0, "%llux%llu: rice's recon differs from coo16's",
                  (unsigned long long)rows, (unsigned long long)cols);
    const hvq_component *vr = ctx->host->enc_get(&er, "values"),
                        *vc = ctx->host->enc_get(&ec, "values");
    ck_assert_uint_eq(vr->nbytes, 2 * f.n);
    ck_assert_int_eq(memcmp(vr->data, vc->data, vr->nbytes), 0);
    /* the real bits: the stream's length, below coo16's 32 per entry */
    const hvq_component *pr = ctx->host->enc_get(&er, "positions");
    ck_assert_uint_eq(pr->dtype, HVQ_DTYPE_U8);
    ck_assert_ptr_nonnull(ctx->host->enc_attr_get(&er, "bits"));
    ck_assert_uint_eq(pr->paper_bits, strtoull(ctx->host->enc_attr_get(&er, "bits"), NULL, 10));
    ck_assert_uint_eq(pr->nbytes, (pr->paper_bits + 7) / 8);
    ck_assert_uint_le(pr->paper_bits, 32 * f.n);
    float *dr, *dc;
    ck_assert_int_eq(decode(residual("rice"), &f, &er, &dr), HVQ_OK);
    ck_assert_int_eq(decode(residual("coo16"), &f, &ec, &dc), HVQ_OK);
    ck_assert_int_eq(memcmp(dr, rr, bytes), 0);
    ck_assert_int_eq(memcmp(dc, rc, bytes), 0);
    free(rr);
    free(rc);
    free(dr);
    free(dc);
    hvq_encoded_clear(&er);
    hvq_encoded_clear(&ec);
    free_fixture(&f);
}

START_TEST(rice_reconstruction_is_coo16s_bit_for_bit)
{
    check_same_as_coo16(64, 96, 0.02, 1);
    check_same_as_coo16(300, 257, 0.005, 2);
    check_same_as_coo16(1, 5000, 0.03, 3); /* one row */
    check_same_as_coo16(40, 40, 1.0, 4);   /* every entry */
    check_same_as_coo16(16, 16, 0.0, 5);   /* none */
}
END_TEST

/* Sets attribute key of enc to value and expects decode to refuse it with a
 * message containing `says`; restores old. */
static void expect_refused(const fixture *f, hvq_encoded *enc, const char *says)
{
    float *out;
    ck_assert_int_eq(decode(residual("rice"), f, enc, &out), HVQ_E_INPUT);
    th_assert_contains(hvq_ctx_error(ctx), says);
    free(out);
}

static void with_attr(const fixture *f, hvq_encoded *enc, const char *key, const char *value,
                      const char *says)
{
    char old[64];
    snprintf(old, sizeof old, "%s", ctx->host->enc_attr_get(enc, key));
    ck_assert_int_eq(ctx->host->enc_attr(ctx, enc, key, value), HVQ_OK);
    expect_refused(f, enc, says);
    ck_assert_int_eq(ctx->host->enc_attr(ctx, enc, key, old), HVQ_OK);
}

static hvq_component *component(hvq_encoded *enc, const char *name)
{
    for (size_t i = 0; i < enc->n_components; i++)
        if (strcmp(enc->components[i].name, name) == 0)
            return &enc->components[i];
    ck_abort_msg("no component %s", name);
    return NULL;
}

START_TEST(rice_decode_refuses_corrupt_components)
{
    fixture f = make_fixture(50, 70, 0.03, 9);
    hvq_encoded enc;
    free(encode(residual("rice"), &f, &enc));
    char buf[32];
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)f.n + 1);
    with_attr(&f, &enc, "count", buf, "does not match");
    with_attr(&f, &enc, "count", "-1", "is not a count");
    with_attr(&f, &enc, "count", "", "is not a count");
    with_attr(&f, &enc, "k", "13", "parameter k above");
    with_attr(&f, &enc, "k", "99999999999999999999999", "is not a count");
    with_attr(&f, &enc, "bits", "1", "stream length does not match");
    with_attr(&f, &enc, "bits", "12x", "is not a count");
    hvq_component *pc = component(&enc, "positions");
    /* a stream cut by one byte, its bits to match: an entry runs past */
    uint64_t bits = pc->paper_bits, cut = (pc->nbytes - 1) * 8;
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)cut);
    pc->nbytes--;
    pc->shape[0]--;
    with_attr(&f, &enc, "bits", buf, "runs past the end");
    pc->nbytes++;
    pc->shape[0]++;
    /* a stray bit after the last entry, when there is room */
    if (bits % 8) {
        ((uint8_t *)pc->data)[pc->nbytes - 1] ^= 0x80;
        expect_refused(&f, &enc, "left over");
        ((uint8_t *)pc->data)[pc->nbytes - 1] ^= 0x80;
    }
    /* a smaller tensor than the positions need (the last entry is the
     * last element) */
    float *out = malloc(f.rows * f.cols * sizeof(float));
    ck_assert_int_eq(residual("rice")->residual_decode(ctx, &enc, f.rows - 1, f.cols, out),
                     HVQ_E_INPUT);
    th_assert_contains(hvq_ctx_error(ctx), "beyond the tensor");
    free(out);
    pc->dtype = HVQ_DTYPE_I8;
    expect_refused(&f, &enc, "must be U8");
    pc->dtype = HVQ_DTYPE_U8;
    hvq_component *vc = component(&enc, "values");
    ((uint16_t *)vc->data)[2] = 0x7c00; /* +inf */
    expect_refused(&f, &enc, "entry 2 is not finite");
    vc->name[0] = 'x';
    expect_refused(&f, &enc, "missing positions or values");
    vc->name[0] = 'v';
    ((uint16_t *)vc->data)[2] = 0;
    ck_assert_int_eq(decode(residual("rice"), &f, &enc, &out), HVQ_OK);
    free(out);
    hvq_encoded_clear(&enc);
    free_fixture(&f);
}
END_TEST

/* ---- rtn ----------------------------------------------------------------- */

/* Scalar reference of the rtn clusterer (see plugins/clusterer-rtn/rtn.c). */
static void rtn_ref(const float *w, size_t rows, size_t cols, size_t g, int asym, float *out)
{
    size_t gs = g == 0 || g >= cols ? cols : g;
    for (size_t r = 0; r < rows; r++)
        for (size_t c0 = 0; c0 < cols; c0 += gs) {
            size_t c1 = c0 + gs < cols ? c0 + gs : cols;
            float lo = w[r * cols + c0], hi = lo, amax = 0;
            for (size_t c = c0; c < c1; c++) {
                float v = w[r * cols + c];
                lo = v < lo ? v : lo;
                hi = v > hi ? v : hi;
                amax = fabsf(v) > amax ? fabsf(v) : amax;
            }
            float m = asym ? hvq_f16_to_f32(hvq_f32_to_f16(lo)) : 0.0f;
            float scale = hvq_f16_to_f32(hvq_f32_to_f16(asym ? (hi - m) / 15.0f : amax / 7.0f));
            for (size_t c = c0; c < c1; c++) {
                float q = 0;
                if (scale > 0) {
                    q = roundf((w[r * cols + c] - m) / scale);
                    float qlo = asym ? 0 : -7, qhi = asym ? 15 : 7;
                    q = q < qlo ? qlo : q > qhi ? qhi : q;
                }
                out[r * cols + c] = q * scale + m;
            }
        }
}

START_TEST(rtn_matches_reference_and_decodes_identically)
{
    enum { R = 9, C = 172 };
    static float w[R * C], recon[R * C], ref[R * C], dec[R * C];
    fill(w, R * C, 3);
    for (int c = 0; c < C; c++)
        w[4 * C + c] = 0.0f; /* an all-zero row */
    const hvq_plugin *d = plugin(HVQ_KIND_CLUSTERER, "rtn");
    ck_assert(d->flags & HVQ_CLUSTERER_RAW);
    struct { const char *g, *mode; size_t gs; int asym; uint64_t groups; } cases[] = {
        {"0", "symmetric", 0, 0, 1},      {"32", "symmetric", 32, 0, 6},
        {"128", "symmetric", 128, 0, 2},  {"32", "asymmetric", 32, 1, 6},
        {"1000", "symmetric", 1000, 0, 1}, {"1", "asymmetric", 1, 1, C},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char gkv[32], mkv[32];
        snprintf(gkv, sizeof gkv, "group_size=%s", cases[k].g);
        snprintf(mkv, sizeof mkv, "mode=%s", cases[k].mode);
        const char *kv[] = {gkv, mkv, NULL};
        th_params tp;
        th_params_make(&tp, d, kv);
        float ones[C];
        for (int c = 0; c < C; c++)
            ones[c] = 1.0f;
        hvq_cluster_input in = {.tensor_name = "t", .x = w, .rows = R, .cols = C,
                                .hessian = ones, .seed = 1};
        hvq_encoded enc;
        hvq_encoded_init(&enc);
        ck_assert_int_eq(d->cluster_encode(ctx, &tp.p, &in, recon, &enc), HVQ_OK);
        rtn_ref(w, R, C, cases[k].gs, cases[k].asym, ref);
        ck_assert_msg(memcmp(recon, ref, sizeof ref) == 0, "case %zu differs from reference", k);
        for (int c = 0; c < C; c++)
            ck_assert(recon[4 * C + c] == 0.0f);
        uint64_t bits = 0;
        for (size_t i = 0; i < enc.n_components; i++)
            bits += enc.components[i].paper_bits;
        /* 4 bits per weight + 16 per scale (and per min) per group per row */
        ck_assert_uint_eq(bits, 4ull * R * C + 16ull * R * cases[k].groups * (cases[k].asym ? 2 : 1));
        memset(dec, 0xff, sizeof dec);
        ck_assert_int_eq(d->cluster_decode(ctx, &enc, R, C, dec), HVQ_OK);
        ck_assert_int_eq(memcmp(dec, recon, sizeof dec), 0);
        hvq_encoded_clear(&enc);
    }
}
END_TEST

START_TEST(rtn_levels_are_symmetric_minus7_to_7)
{
    /* A row 0..7 * 0.5 must map to levels 0..7 exactly (scale 0.5). */
    float w[8] = {0, 0.5f, -1.0f, 1.5f, -2.0f, 2.5f, -3.0f, 3.5f}, recon[8];
    const hvq_plugin *d = plugin(HVQ_KIND_CLUSTERER, "rtn");
    th_params tp;
    th_params_make(&tp, d, NULL);
    float ones[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    hvq_cluster_input in = {.tensor_name = "t", .x = w, .rows = 1, .cols = 8, .hessian = ones};
    hvq_encoded enc;
    hvq_encoded_init(&enc);
    ck_assert_int_eq(d->cluster_encode(ctx, &tp.p, &in, recon, &enc), HVQ_OK);
    ck_assert_int_eq(memcmp(w, recon, sizeof w), 0);
    const uint8_t *lv = ctx->host->enc_get(&enc, "levels")->data;
    /* codes q+8: 8,9,6,11,4,13,2,15 -> low nibble first */
    ck_assert_uint_eq(lv[0], 8 | 9 << 4);
    ck_assert_uint_eq(lv[1], 6 | 11 << 4);
    ck_assert_uint_eq(lv[2], 4 | 13 << 4);
    ck_assert_uint_eq(lv[3], 2 | 15 << 4);
    hvq_encoded_clear(&enc);
}
END_TEST

START_TEST(rtn_rejects_values_beyond_fp16)
{
    float w[4] = {1e6f, 0, 0, 0}, recon[4];
    const hvq_plugin *d = plugin(HVQ_KIND_CLUSTERER, "rtn");
    th_params tp;
    th_params_make(&tp, d, NULL);
    float ones[4] = {1, 1, 1, 1};
    hvq_cluster_input in = {.tensor_name = "big", .x = w, .rows = 1, .cols = 4, .hessian = ones};
    hvq_encoded enc;
    hvq_encoded_init(&enc);
    ck_assert_int_eq(d->cluster_encode(ctx, &tp.p, &in, recon, &enc), HVQ_E_INPUT);
    th_assert_contains(hvq_ctx_error(ctx), "tensor 'big': row 0");
    hvq_encoded_clear(&enc);
}
END_TEST

START_TEST(rtn_decode_refuses_corrupt_components)
{
    float w[64], recon[64];
    fill(w, 64, 5);
    const hvq_plugin *d = plugin(HVQ_KIND_CLUSTERER, "rtn");
    th_params tp;
    th_params_make(&tp, d, NULL);
    float ones[16];
    for (int i = 0; i < 16; i++)
        ones[i] = 1;
    hvq_cluster_input in = {.tensor_name = "t", .x = w, .rows = 4, .cols = 16, .hessian = ones};
    hvq_encoded enc;
    hvq_encoded_init(&enc);
    ck_assert_int_eq(d->cluster_encode(ctx, &tp.p, &in, recon, &enc), HVQ_OK);
    ck_assert_int_eq(d->cluster_check(ctx, &enc, 4, 16), HVQ_OK);
    /* decoding as a larger matrix than the components hold: refused by
     * decode and by the layout check the host runs before allocating */
    ck_assert_int_eq(d->cluster_decode(ctx, &enc, 8, 16, recon), HVQ_E_INPUT);
    th_assert_contains(hvq_ctx_error(ctx), "wrong size");
    hvq_ctx_clear_error(ctx);
    ck_assert_int_eq(d->cluster_check(ctx, &enc, 1024, 1048576), HVQ_E_INPUT);
    th_assert_contains(hvq_ctx_error(ctx), "wrong size for a 1024x1048576 matrix");
    hvq_ctx_clear_error(ctx);
    static const char *const bad_group[] = {"", "-1", "+4", "4x", NULL};
    for (int i = 0; bad_group[i]; i++) {
        ck_assert_int_eq(ctx->host->enc_attr(ctx, &enc, "group_size", bad_group[i]), HVQ_OK);
        ck_assert_int_eq(d->cluster_check(ctx, &enc, 4, 16), HVQ_E_INPUT);
        th_assert_contains(hvq_ctx_error(ctx), "rtn: bad attributes group_size");
        hvq_ctx_clear_error(ctx);
    }
    ck_assert_int_eq(ctx->host->enc_attr(ctx, &enc, "group_size", "0"), HVQ_OK);
    ck_assert_int_eq(d->cluster_check(ctx, &enc, 4, 16), HVQ_OK);
    ck_assert_int_eq(ctx->host->enc_attr(ctx, &enc, "mode", "sideways"), HVQ_OK);
    ck_assert_int_eq(d->cluster_decode(ctx, &enc, 4, 16, recon), HVQ_E_INPUT);
    ck_assert_int_eq(d->cluster_check(ctx, &enc, 4, 16), HVQ_E_INPUT);
    hvq_encoded_clear(&enc);
}
END_TEST

START_TEST(size_parameters_parse_units)
{
    hvq_param_spec spec = {"max_shard_size", HVQ_PARAM_SIZE, "0", 0, 0, NULL, ""};
    struct { const char *text; int64_t bytes; } ok[] = {
        {"0", 0}, {"4096", 4096}, {"500MB", 500000000}, {"5GB", 5000000000ll},
        {"2GiB", 2147483648ll}, {"10 kib", 10240}, {"1T", 1000000000000ll}, {"7b", 7},
    };
    char why[256];
    hvq_value v;
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        ck_assert_msg(hvq_param_parse(&spec, ok[i].text, &v, why, sizeof why) == HVQ_OK, "%s: %s",
                      ok[i].text, why);
        ck_assert_int_eq(v.i, ok[i].bytes);
    }
    ck_assert_int_eq(hvq_param_parse(&spec, "5 parsecs", &v, why, sizeof why), HVQ_E_INPUT);
    ck_assert_str_eq(why, "unknown size unit 'parsecs' in '5 parsecs' (use B, KB, MB, GB, TB or "
                          "KiB, MiB, GiB, TiB)");
    ck_assert_int_eq(hvq_param_parse(&spec, "-5GB", &v, why, sizeof why), HVQ_E_INPUT);
    ck_assert_int_eq(hvq_param_parse(&spec, "99999999999TB", &v, why, sizeof why), HVQ_E_INPUT);
    ck_assert_str_eq(why, "99999999999TB is too large");
    spec.min = 1024;
    spec.max = 1e12;
    ck_assert_int_eq(hvq_param_parse(&spec, "1KB", &v, why, sizeof why), HVQ_E_INPUT);
    ck_assert_str_eq(why, "1KB (1000 bytes) is outside 1024..1000000000000");
    ck_assert_str_eq(hvq_param_type_name(HVQ_PARAM_SIZE), "size");
}
END_TEST

/* ---- kmeans scale modes (gains) ------------------------------------------- */

/* The gains of kmeans_gain.h by their definition: column gains
 * fp16((h_j / mean h)^a), then per group of G columns fp16 of the RMS of
 * x * c over the group's entries that are not sparse. */
static void gains_ref(const float *x, size_t rows, size_t cols, size_t g, const float *h,
                      double a, const uint64_t *sparse, size_t ns, float *cg, float *gains)
{
    double mean = 0;
    for (size_t j = 0; j < cols; j++)
        mean += h[j];
    mean /= (double)cols;
    for (size_t j = 0; j < cols; j++)
        cg[j] = hvq_f16_to_f32(hvq_f32_to_f16((float)pow(h[j] / mean, a)));
    size_t ng = (cols + g - 1) / g, sp = 0;
    for (size_t r = 0; r < rows; r++)
        for (size_t k = 0; k < ng; k++) {
            double sum = 0;
            size_t n = 0;
            for (size_t c = k * g; c < (k + 1) * g && c < cols; c++) {
                if (sp < ns && sparse[sp] == r * cols + c) {
                    sp++;
                    continue;
                }
                double v = (double)(x[r * cols + c] * cg[c]);
                sum += v * v;
                n++;
            }
            gains[r * ng + k] = hvq_f16_to_f32(hvq_f32_to_f16((float)sqrt(sum / (double)n)));
        }
}

START_TEST(kmeans_gains_match_reference_and_decode_identically)
{
    enum { R = 6, C = 100, G = 32, NG = 4 };
    static float x[R * C], recon[R * C], dec[R * C], h[C], cg[C], gref[R * NG], gout[R * NG];
    static const uint64_t sparse[] = {3, 40, 41, 150, 333, 599};
    fill(x, R * C, 11);
    for (size_t i = 0; i < sizeof sparse / sizeof sparse[0]; i++)
        x[sparse[i]] = 0.0f; /* the body: sparse entries removed */
    for (int j = 0; j < C; j++)
        h[j] = (float)exp(2.0 * sin(0.7 * j));
    const hvq_plugin *d = plugin(HVQ_KIND_CLUSTERER, "kmeans");
    const char *kv[] = {"centroids=16", "scale=rms", "scale_group=32", "col_exponent=0.25", NULL};
    th_params tp;
    th_params_make(&tp, d, kv);
    hvq_cluster_input in = {.tensor_name = "t", .x = x, .rows = R, .cols = C, .hessian = h,
                            .sparse_pos = sparse, .n_sparse = 6, .seed = 5};
    hvq_encoded enc;
    hvq_encoded_init(&enc);
    ck_assert_int_eq(d->cluster_encode(ctx, &tp.p, &in, recon, &enc), HVQ_OK);
    gains_ref(x, R, C, G, h, 0.25, sparse, 6, cg, gref);
    const hvq_component *gc = ctx->host->enc_get(&enc, "gains");
    const hvq_component *cc = ctx->host->enc_get(&enc, "col_gains");
    ck_assert_ptr_nonnull(gc);
    ck_assert_ptr_nonnull(cc);
    ck_assert_int_eq(gc->shape[0], R);
    ck_assert_int_eq(gc->shape[1], NG);
    for (size_t i = 0; i < R * NG; i++)
        gout[i] = hvq_f16_to_f32(((const uint16_t *)gc->data)[i]);
    ck_assert_int_eq(memcmp(gout, gref, sizeof gref), 0);
    for (size_t j = 0; j < C; j++)
        ck_assert(hvq_f16_to_f32(((const uint16_t *)cc->data)[j]) == cg[j]);
    /* 16 bits per gain and per column gain on top of codebook and indices */
    ck_assert_uint_eq(gc->paper_bits, 16ull * R * NG);
    ck_assert_uint_eq(cc->paper_bits, 16ull * C);
    memset(dec, 0xff, sizeof dec);
    ck_assert_int_eq(d->cluster_check(ctx, &enc, R, C), HVQ_OK);
    ck_assert_int_eq(d->cluster_decode(ctx, &enc, R, C, dec), HVQ_OK);
    ck_assert_int_eq(memcmp(dec, recon, sizeof dec), 0);
    /* the reconstruction is the codebook entries times the gains over the
     * column gains: within a codebook step of x (tolerance: a loose bound
     * of 16 centroids' quantization error on this heavy-tailed data) */
    double e2 = 0, w2 = 0;
    for (size_t i = 0; i < R * C; i++) {
        e2 += (x[i] - recon[i]) * (double)(x[i] - recon[i]);
        w2 += x[i] * (double)x[i];
    }
    ck_assert_double_lt(e2 / w2, 0.25);
    /* a negative gain and a missing column gain are refused */
    ((uint16_t *)gc->data)[2] = 0xbc00; /* -1.0 */
    ck_assert_int_eq(d->cluster_decode(ctx, &enc, R, C, dec), HVQ_E_INPUT);
    ((hvq_component *)cc)->nbytes = 2 * (C - 1);
    ck_assert_int_eq(d->cluster_check(ctx, &enc, R, C), HVQ_E_INPUT);
    hvq_encoded_clear(&enc);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("stages");
    TCase *tc = tcase_create("plugins");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, importance_matches_reference);
    tcase_add_test(tc, coo16_count_is_floor_of_rho_numel);
    tcase_add_test(tc, coo16_reconstructs_targets_and_decodes_identically);
    tcase_add_test(tc, rice_count_is_coo16s);
    tcase_add_test(tc, rice_reconstruction_is_coo16s_bit_for_bit);
    tcase_add_test(tc, rice_decode_refuses_corrupt_components);
    tcase_add_test(tc, rtn_matches_reference_and_decodes_identically);
    tcase_add_test(tc, rtn_levels_are_symmetric_minus7_to_7);
    tcase_add_test(tc, rtn_rejects_values_beyond_fp16);
    tcase_add_test(tc, rtn_decode_refuses_corrupt_components);
    tcase_add_test(tc, size_parameters_parse_units);
    tcase_add_test(tc, kmeans_gains_match_reference_and_decode_identically);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
