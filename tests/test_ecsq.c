/* Clusterer "ecsq": the range code (round trips, its length against the
 * information content computed here from the code's definition, truncated
 * and corrupt streams), the quantizer (plain rounding and GPTQ's feedback
 * against references written here), the step search, the plugin (decode
 * equals encode's reconstruction, several streams, any thread count, every
 * refusal) and a pipeline through the real binary. */
#include "config.h"

#include "ecsq_code.h"
#include "ecsq_quant.h"
#include "full_hessian.h"
#include "gptq.h"
#include "harness.h"

#include <check.h>
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The coded length may exceed the information content of its decisions
 * under the adaptive model by this fraction (the 12-bit probabilities
 * truncate the range) plus the flush. */
#define RATE_SLACK 0.002
#define FLUSH_BITS 40
/* ecsq_step_for_bits: the entropy of plain rounding at the step found is
 * within this of the target (bits per value) on Gaussian data. */
#define STEP_TOL 0.02

static hvq_ctx *ctx;
static hvq_registry *reg;
static const hvq_plugin *ecsq;

static void load(void)
{
    ctx = th_ctx();
    reg = th_registry(ctx);
    ecsq = th_plugin(reg, HVQ_KIND_CLUSTERER, "ecsq");
}

static void unload(void)
{
    hvq_ctx_free(ctx);
    hvq_registry_free(reg);
}

static double gauss(void)
{
    double u = (fh_urand() + 1.0) / 2.0 + 1e-12, v = fh_urand();
    return sqrt(-2.0 * log(u)) * cos(3.14159265358979 * v);
}

/* ---- the code ------------------------------------------------------------ */

/* The information content, in bits, of coding q[0..n) with the code's
 * adaptive model, written from ecsq_code.h's description: every adaptive
 * decision costs -log2 of the probability the model gave it, then the
 * probability moves 1/64 of the way towards the bit (12-bit fixed point);
 * bits at probability 1/2 cost 1. */
typedef struct ref_model {
    unsigned zero, sign, exp[ECSQ_MAX_EXP], mant[ECSQ_MAX_EXP][3];
} ref_model;

static double ref_bit(unsigned *p, unsigned bit)
{
    double p0 = *p / 4096.0, cost = -log2(bit ? 1.0 - p0 : p0);
    *p = bit ? *p - (*p >> 6) : *p + ((4096 - *p) >> 6);
    return cost;
}

static double ref_information(const int32_t *q, uint64_t n)
{
    ref_model m;
    unsigned *p = (unsigned *)&m;
    for (size_t i = 0; i < sizeof m / sizeof *p; i++)
        p[i] = 2048;
    double bits = 0;
    for (uint64_t i = 0; i < n; i++) {
        bits += ref_bit(&m.zero, q[i] != 0);
        if (q[i] == 0)
            continue;
        bits += ref_bit(&m.sign, q[i] < 0);
        uint32_t v = (uint32_t)abs(q[i]);
        unsigned k = 0;
        while ((v >> (k + 1)) != 0)
            k++;
        for (unsigned e = 0; e < k; e++)
            bits += ref_bit(&m.exp[e], 1);
        bits += ref_bit(&m.exp[k], 0);
        for (unsigned i2 = 0, ctx2 = 0; i2 < k; i2++) {
            unsigned bit = (v >> (k - 1 - i2)) & 1;
            bits += i2 < 2 ? ref_bit(&m.mant[k][ctx2], bit) : 1.0;
            ctx2 = 1 + bit;
        }
    }
    return bits;
}

/* Levels of one of several shapes of distribution. */
static void make_levels(int32_t *q, uint64_t n, int kind)
{
    const double sc[] = {0.3, 8.0, 3000.0, 4e6};
    for (uint64_t i = 0; i < n; i++) {
        double v = gauss() * sc[kind % 4];
        if (fh_urand() > 0.98)
            v = fh_urand() > 0 ? ECSQ_MAX_LEVEL : -ECSQ_MAX_LEVEL;
        v = fmin(fmax(round(v), -ECSQ_MAX_LEVEL), ECSQ_MAX_LEVEL);
        q[i] = (int32_t)v;
    }
}

START_TEST(code_round_trips_at_its_information_content)
{
    fh_rng = 11;
    for (int t = 0; t < 400; t++) {
        uint64_t rows = 1 + (uint64_t)((fh_urand() + 1) * 10);
        uint64_t cols = 1 + (uint64_t)((fh_urand() + 1) * 40);
        uint64_t n = rows * cols;
        int32_t *q = malloc(n * sizeof *q), *d = malloc(n * sizeof *d);
        make_levels(q, n, t);
        if (t % 50 == 0)
            memset(q, 0, n * sizeof *q);
        uint8_t *b;
        size_t len;
        ck_assert_int_eq(ecsq_encode(q, rows, cols, &b, &len), 0);
        ck_assert_int_eq(ecsq_decode(b, len, rows, cols, d), 0);
        ck_assert_mem_eq(d, q, n * sizeof *q);
        double info = ref_information(q, n);
        ck_assert_msg(8.0 * len <= info * (1 + RATE_SLACK) + FLUSH_BITS && 8.0 * len >= info - 8,
                      "case %d: %zu bytes for %.1f bits of information", t, len, info);
        /* the stream without its last byte, or with one more, is refused */
        ck_assert_int_eq(ecsq_decode(b, len - 1, rows, cols, d), -1);
        uint8_t *longer = malloc(len + 1);
        memcpy(longer, b, len);
        longer[len] = 0;
        ck_assert_int_eq(ecsq_decode(longer, len + 1, rows, cols, d), -1);
        free(longer);
        free(b);
        free(q);
        free(d);
    }
}
END_TEST

/* Random bytes decode or are refused; never a read or write out of bounds
 * (run under ASan and valgrind), never a level beyond the largest. */
START_TEST(code_survives_garbage)
{
    fh_rng = 12;
    enum { N = 300 };
    static uint8_t b[64];
    static int32_t q[N];
    for (int t = 0; t < 2000; t++) {
        size_t len = (size_t)((fh_urand() + 1) * 32);
        for (size_t i = 0; i < len; i++)
            b[i] = (uint8_t)(fh_urand() * 128 + 128);
        if (ecsq_decode(b, len, 3, N / 3, q) == 0)
            for (int i = 0; i < N; i++)
                ck_assert(abs(q[i]) <= ECSQ_MAX_LEVEL);
    }
    /* all ones: the exponent never ends, refused at ECSQ_MAX_EXP */
    memset(b, 0xff, sizeof b);
    ck_assert_int_eq(ecsq_decode(b, sizeof b, 1, 1, q), -1);
}
END_TEST

/* hvq_ecsq_decode_f32, the entry point python/hvqconv.py calls: (float)q *
 * step for a stream that decodes, -1 for one that does not; and the built
 * plugin exports it under that name. */
START_TEST(decode_f32_is_the_levels_times_the_step)
{
    fh_rng = 13;
    enum { N = 5000 };
    static int32_t q[N], d[N];
    static float out[N];
    const float step = 0.0123f;
    make_levels(q, N, 1);
    uint8_t *b;
    size_t len;
    ck_assert_int_eq(ecsq_encode(q, 1, N, &b, &len), 0);
    ck_assert_int_eq(hvq_ecsq_decode_f32(b, len, N, step, out), 0);
    ck_assert_int_eq(ecsq_decode(b, len, 50, N / 50, d), 0);
    for (int i = 0; i < N; i++) {
        float want = (float)d[i] * step;
        ck_assert_mem_eq(&out[i], &want, sizeof want);
    }
    ck_assert_int_eq(hvq_ecsq_decode_f32(b, len - 1, N, step, out), -1);
    ck_assert_int_eq(hvq_ecsq_decode_f32(b, len, N + 1, step, out), -1);
    free(b);
    char so[4096];
    snprintf(so, sizeof so, "%s/plugins/.libs/clusterer_ecsq.so", th_builddir());
    void *h = dlopen(so, RTLD_NOW | RTLD_LOCAL);
    ck_assert_msg(h != NULL, "%s", dlerror());
    ck_assert_msg(dlsym(h, "hvq_ecsq_decode_f32") != NULL, "%s exports no hvq_ecsq_decode_f32",
                  so);
    dlclose(h);
}
END_TEST

/* ---- the quantizer --------------------------------------------------------- */

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

START_TEST(step_search_hits_the_entropy)
{
    fh_rng = 13;
    enum { N = 20000 };
    static float x[N], s[N];
    for (int i = 0; i < N; i++)
        x[i] = (float)(gauss() * 0.02);
    float prev = INFINITY;
    for (double bits = 2.0; bits <= 8.0; bits += 1.5) {
        float step = ecsq_step_for_bits(x, N, bits);
        ck_assert(step > 0 && step < prev);
        prev = step;
        memcpy(s, x, sizeof s);
        qsort(s, N, sizeof *s, cmp_float);
        double h = ecsq_entropy_sorted(s, N, step);
        ck_assert_msg(fabs(h - bits) < STEP_TOL, "bits %g: entropy %g", bits, h);
    }
    /* all zeros: a step of 1, every level 0 */
    memset(x, 0, sizeof x);
    ck_assert(ecsq_step_for_bits(x, N, 4.0) > 0);
}
END_TEST

START_TEST(entropy_counts_the_levels)
{
    const float v[] = {-1.6f, -1.4f, -0.2f, 0.1f, 0.4f, 0.6f, 2.4f, 2.6f};
    /* step 1: levels -2 -1 0 0 0 1 2 3: counts 1 1 3 1 1 1 of 8 */
    double h = 5 * (1.0 / 8) * 3 + (3.0 / 8) * log2(8.0 / 3);
    ck_assert(fabs(ecsq_entropy_sorted(v, 8, 1.0f) - h) < 1e-12);
    ck_assert(ecsq_entropy_sorted(v, 8, 100.0f) == 0.0);
}
END_TEST

/* Plain rounding: every value to the nearest multiple of the step, so
 * within step / 2 of it; with feedback: the definition (common/gptq.h),
 * the sparse entries level 0 and left alone, and a lower output error. */
START_TEST(quantizer_follows_the_definitions)
{
    fh_rng = 14;
    enum { R = 5, N = 30 };
    static float x[R * N], h[N * N], w[N], rec[R * N], plain[R * N];
    static int32_t q[R * N];
    static double u[N * N];
    static unsigned char skip[N];
    for (int i = 0; i < R * N; i++)
        x[i] = (float)(gauss() * 0.05);
    const float step = 0.01f;
    ecsq_quant_rows(x, 0, R, N, step, NULL, NULL, 0, NULL, w, q, plain);
    for (int i = 0; i < R * N; i++) {
        ck_assert(q[i] == (int32_t)floor((double)x[i] / step + 0.5));
        ck_assert(plain[i] == (float)q[i] * step);
        ck_assert(fabs((double)x[i] - plain[i]) <= step / 2 * (1 + 1e-6));
    }
    fh_make_h(h, N, 200, -1);
    ck_assert_int_eq(hvq_gptq_factor(h, N, 0.01, u), 0);
    const uint64_t pos[] = {3, 2 * N + 7, 2 * N + 8};
    for (int i = 0; i < 3; i++)
        x[pos[i]] = 0.0f;
    ecsq_quant_rows(x, 0, R, N, step, u, pos, 3, skip, w, q, rec);
    for (int r = 0; r < R; r++) {
        double ww[N];
        for (int j = 0; j < N; j++)
            ww[j] = x[r * N + j];
        for (int j = 0; j < N; j++) {
            int sparse = 0;
            for (int i = 0; i < 3; i++)
                sparse |= pos[i] == (uint64_t)(r * N + j);
            if (sparse) {
                ck_assert(q[r * N + j] == 0 && rec[r * N + j] == 0.0f);
                continue;
            }
            float wj = (float)ww[j];
            int32_t lv = (int32_t)floor((double)wj / step + 0.5);
            ck_assert_msg(q[r * N + j] == lv, "row %d col %d: %d, reference %d", r, j,
                          q[r * N + j], lv);
            double e = ((double)wj - (double)((float)lv * step)) / u[j * N + j];
            for (int k = j + 1; k < N; k++) {
                int sk = 0;
                for (int i = 0; i < 3; i++)
                    sk |= pos[i] == (uint64_t)(r * N + k);
                if (!sk)
                    ww[k] = (float)((float)ww[k] - e * u[j * N + k]);
            }
        }
    }
    ck_assert_msg(fh_output_error(x, rec, h, R, N) < fh_output_error(x, plain, h, R, N),
                  "feedback did not lower the output error");
}
END_TEST

/* ---- the plugin -------------------------------------------------------------- */

static hvq_status encode(hvq_ctx *cx, const char *const *kv, const hvq_cluster_input *in,
                         float *recon, hvq_encoded *enc)
{
    th_params tp;
    th_params_make(&tp, ecsq, kv);
    hvq_encoded_init(enc);
    hvq_ctx_clear_error(cx);
    return ecsq->cluster_encode(cx, &tp.p, in, recon, enc);
}

/* Decode gives encode's reconstruction bit for bit; a tall narrow matrix
 * makes several streams; 1 and 2 threads give the same bytes. */
START_TEST(plugin_round_trips_on_any_thread_count)
{
    fh_rng = 15;
    const uint64_t R = (1u << 19) + 3, N = 4; /* 2^21 + 12 levels: 3 streams */
    float *x = malloc(R * N * sizeof *x), *rec = malloc(R * N * sizeof *rec);
    float *rec2 = malloc(R * N * sizeof *rec2), *dec = malloc(R * N * sizeof *dec);
    float hdiag[4] = {1, 1, 1, 1};
    for (uint64_t i = 0; i < R * N; i++)
        x[i] = (float)(gauss() * 0.02);
    hvq_cluster_input in = {.tensor_name = "t", .x = x, .rows = R, .cols = N, .hessian = hdiag};
    const char *kv[] = {"bits=5", NULL};
    hvq_encoded e1, e2;
    ck_assert_int_eq(encode(ctx, kv, &in, rec, &e1), HVQ_OK);
    hvq_ctx_opts o = {.quiet = 1, .threads = 2};
    hvq_ctx *c2 = hvq_ctx_new(&o);
    ck_assert_int_eq(encode(c2, kv, &in, rec2, &e2), HVQ_OK);
    ck_assert_uint_eq(e1.n_components, 3);
    for (size_t i = 0; i < e1.n_components; i++) {
        ck_assert_str_eq(e1.components[i].name, e2.components[i].name);
        ck_assert_uint_eq(e1.components[i].nbytes, e2.components[i].nbytes);
        ck_assert_mem_eq(e1.components[i].data, e2.components[i].data, e1.components[i].nbytes);
    }
    ck_assert_uint_eq(ctx->host->enc_get(&e1, "lengths")->nbytes, 3 * 4);
    ck_assert_mem_eq(rec, rec2, R * N * sizeof *rec);
    ck_assert_int_eq(ecsq->cluster_check(c2, &e1, R, N), HVQ_OK);
    ck_assert_int_eq(ecsq->cluster_decode(c2, &e1, R, N, dec), HVQ_OK);
    ck_assert_mem_eq(dec, rec, R * N * sizeof *rec);
    /* the coded size is near the entropy asked for */
    double bpw = 8.0 * (double)ctx->host->enc_get(&e1, "streams")->nbytes / (double)(R * N);
    ck_assert_msg(fabs(bpw - 5.0) < 0.1, "%g bits per weight for bits=5", bpw);
    hvq_encoded_clear(&e1);
    hvq_encoded_clear(&e2);
    hvq_ctx_free(c2);
    free(x);
    free(rec);
    free(rec2);
    free(dec);
}
END_TEST

/* With the full Hessian the plugin's levels are ecsq_quant_rows' with the
 * factor of common/gptq.c; without one, on is refused and auto rounds. */
START_TEST(plugin_gptq_modes)
{
    fh_rng = 16;
    enum { R = 4, N = 24 };
    static float x[R * N], h[N * N], rec[R * N], ref[R * N], w[N], dec[R * N];
    static int32_t q[R * N];
    static double u[N * N];
    float hdiag[N];
    for (int i = 0; i < R * N; i++)
        x[i] = (float)(gauss() * 0.1);
    fh_make_h(h, N, 100, -1);
    for (int j = 0; j < N; j++)
        hdiag[j] = h[j * N + j];
    hvq_cluster_input in = {.tensor_name = "t", .x = x, .rows = R, .cols = N, .hessian = hdiag};
    const char *on[] = {"bits=4", "gptq=on", "gptq_damp=0.1", NULL};
    hvq_ctx *cx = fh_ctx_with(ctx, h);
    hvq_encoded enc;
    ck_assert_msg(encode(cx, on, &in, rec, &enc) == HVQ_OK, "%s", hvq_ctx_error(cx));
    ck_assert_str_eq(cx->host->enc_attr_get(&enc, "feedback"), "gptq");
    float step;
    memcpy(&step, cx->host->enc_get(&enc, "step")->data, 4);
    ck_assert(step == ecsq_step_for_bits(x, R * N, 4.0));
    ck_assert_int_eq(hvq_gptq_factor(h, N, 0.1, u), 0);
    ecsq_quant_rows(x, 0, R, N, step, u, NULL, 0, NULL, w, q, ref);
    ck_assert_mem_eq(rec, ref, sizeof rec);
    ck_assert_int_eq(ecsq->cluster_decode(cx, &enc, R, N, dec), HVQ_OK);
    ck_assert_mem_eq(dec, rec, sizeof rec);
    hvq_encoded_clear(&enc);
    cx = fh_ctx_with(ctx, NULL);
    ck_assert_int_eq(encode(cx, on, &in, rec, &enc), HVQ_E_INPUT);
    th_assert_contains(hvq_ctx_error(cx), "gptq: on needs the full Hessian");
    hvq_encoded_clear(&enc);
    const char *au[] = {"bits=4", "gptq=auto", NULL};
    ck_assert_int_eq(encode(cx, au, &in, rec, &enc), HVQ_OK);
    ck_assert_ptr_null(cx->host->enc_attr_get(&enc, "feedback"));
    hvq_encoded_clear(&enc);
}
END_TEST

/* Column gains: the levels are those of W c with the step found for W c,
 * recon = q step / c (what decode gives, bit for bit); the columns of
 * large H get the finer steps, so the Hessian-weighted error falls; the
 * gains are refused with feedback and checked on decode. */
START_TEST(plugin_column_gains)
{
    fh_rng = 18;
    enum { R = 40, N = 32 };
    static float x[R * N], xs[R * N], rec[R * N], plain[R * N], ref[R * N], w[N], dec[R * N];
    static int32_t q[R * N];
    float hd[N], c[N];
    for (int j = 0; j < N; j++)
        hd[j] = (float)exp(3.0 * fh_urand()); /* H spread over e^-3 .. e^3 */
    for (int i = 0; i < R * N; i++)
        x[i] = (float)(gauss() * 0.05);
    hvq_cluster_input in = {.tensor_name = "t", .x = x, .rows = R, .cols = N, .hessian = hd};
    const char *kv[] = {"bits=4", "col_exponent=0.5", NULL};
    const char *kv0[] = {"bits=4", NULL};
    hvq_encoded enc, enc0;
    ck_assert_msg(encode(ctx, kv, &in, rec, &enc) == HVQ_OK, "%s", hvq_ctx_error(ctx));
    ck_assert_int_eq(encode(ctx, kv0, &in, plain, &enc0), HVQ_OK);
    ck_assert_str_eq(ctx->host->enc_attr_get(&enc, "col_exponent"), "0.5");
    const hvq_component *cc = ctx->host->enc_get(&enc, "col_gains");
    ck_assert(cc && cc->nbytes == 2 * N);
    ck_assert_int_eq(ctx->host->convert(ctx, HVQ_DTYPE_F32, c, HVQ_DTYPE_F16, cc->data, N),
                     HVQ_OK);
    double mean = 0;
    for (int j = 0; j < N; j++)
        mean += hd[j] / N;
    for (int j = 0; j < N; j++) /* fp16 of sqrt(H_j / mean H) */
        ck_assert(fabs(c[j] - sqrt(hd[j] / mean)) <= 1e-3 * sqrt(hd[j] / mean));
    for (int i = 0; i < R * N; i++)
        xs[i] = x[i] * c[i % N];
    float step;
    memcpy(&step, ctx->host->enc_get(&enc, "step")->data, 4);
    ck_assert(step == ecsq_step_for_bits(xs, R * N, 4.0));
    ecsq_quant_rows(xs, 0, R, N, step, NULL, NULL, 0, NULL, w, q, ref);
    for (int i = 0; i < R * N; i++)
        ck_assert(rec[i] == ref[i] / c[i % N]);
    ck_assert_int_eq(ecsq->cluster_check(ctx, &enc, R, N), HVQ_OK);
    ck_assert_int_eq(ecsq->cluster_decode(ctx, &enc, R, N, dec), HVQ_OK);
    ck_assert_mem_eq(dec, rec, sizeof rec);
    double e = 0, e0 = 0;
    for (int i = 0; i < R * N; i++) {
        e += hd[i % N] * (x[i] - rec[i]) * (x[i] - rec[i]);
        e0 += hd[i % N] * (x[i] - plain[i]) * (x[i] - plain[i]);
    }
    ck_assert_msg(e < e0, "H-weighted error with gains %g, without %g", e, e0);
    /* a gain of 0 is refused on decode; gains without the attribute too */
    ((uint16_t *)ctx->host->enc_get(&enc, "col_gains")->data)[3] = 0;
    hvq_ctx_clear_error(ctx);
    ck_assert_int_eq(ecsq->cluster_decode(ctx, &enc, R, N, dec), HVQ_E_INPUT);
    th_assert_contains(hvq_ctx_error(ctx), "ecsq: column gain 3 is not a finite value above 0");
    for (size_t i = 0; i < enc.n_attrs; i++)
        if (strcmp(enc.attrs[i].key, "col_exponent") == 0)
            ((char *)enc.attrs[i].key)[0] = 'x';
    hvq_ctx_clear_error(ctx);
    ck_assert_int_eq(ecsq->cluster_check(ctx, &enc, R, N), HVQ_E_INPUT);
    th_assert_contains(hvq_ctx_error(ctx), "col_gains and col_exponent go together");
    hvq_encoded_clear(&enc);
    hvq_encoded_clear(&enc0);
    /* with the full Hessian's feedback: refused */
    static float h[N * N];
    fh_make_h(h, N, 100, -1);
    hvq_ctx *cx = fh_ctx_with(ctx, h);
    const char *both[] = {"bits=4", "col_exponent=0.5", "gptq=on", NULL};
    ck_assert_int_eq(encode(cx, both, &in, rec, &enc), HVQ_E_INPUT);
    th_assert_contains(hvq_ctx_error(cx), "gptq: on and col_exponent cannot be combined");
    hvq_encoded_clear(&enc);
    /* auto: the feedback, without the gains, where the full H is there */
    const char *au[] = {"bits=4", "col_exponent=0.5", "gptq=auto", NULL};
    const char *fb[] = {"bits=4", "gptq=on", NULL};
    ck_assert_int_eq(encode(cx, au, &in, rec, &enc), HVQ_OK);
    ck_assert_int_eq(encode(cx, fb, &in, ref, &enc0), HVQ_OK);
    ck_assert_ptr_null(cx->host->enc_get(&enc, "col_gains"));
    ck_assert_str_eq(cx->host->enc_attr_get(&enc, "feedback"), "gptq");
    ck_assert_mem_eq(rec, ref, sizeof rec);
    hvq_encoded_clear(&enc);
    hvq_encoded_clear(&enc0);
    cx = fh_ctx_with(ctx, NULL); /* and the gains where it is not */
    ck_assert_int_eq(encode(cx, au, &in, rec, &enc), HVQ_OK);
    ck_assert_ptr_nonnull(cx->host->enc_get(&enc, "col_gains"));
    hvq_encoded_clear(&enc);
}
END_TEST

/* Corrupt encodings are refused with a message, never decoded. */
START_TEST(plugin_refuses_bad_input)
{
    fh_rng = 17;
    enum { R = 8, N = 16 };
    static float x[R * N], rec[R * N], dec[R * N];
    float hdiag[N];
    for (int j = 0; j < N; j++)
        hdiag[j] = 1;
    for (int i = 0; i < R * N; i++)
        x[i] = (float)(gauss() * 0.1);
    hvq_cluster_input in = {.tensor_name = "t", .x = x, .rows = R, .cols = N, .hessian = hdiag};
    const char *kv[] = {"bits=3", NULL};
    hvq_encoded enc;
    x[37] = NAN;
    ck_assert_int_eq(encode(ctx, kv, &in, rec, &enc), HVQ_E_INPUT);
    th_assert_contains(hvq_ctx_error(ctx), "tensor 't': value 37 is not finite");
    hvq_encoded_clear(&enc);
    /* finite, but not once scaled by its column's gain */
    x[37] = 3e38f;
    hdiag[37 % N] = 100.0f;
    const char *gains[] = {"bits=3", "col_exponent=0.5", NULL};
    ck_assert_int_eq(encode(ctx, gains, &in, rec, &enc), HVQ_E_INPUT);
    th_assert_contains(hvq_ctx_error(ctx), "tensor 't': value 37 times its column gain is beyond");
    hvq_encoded_clear(&enc);
    hdiag[37 % N] = 1.0f;
    x[37] = 0.5f;
    ck_assert_int_eq(encode(ctx, kv, &in, rec, &enc), HVQ_OK);
    hvq_component *st = NULL, *bytes = NULL;
    for (size_t i = 0; i < enc.n_components; i++) {
        if (strcmp(enc.components[i].name, "step") == 0)
            st = &enc.components[i];
        if (strcmp(enc.components[i].name, "streams") == 0)
            bytes = &enc.components[i];
    }
    ck_assert(st && bytes && bytes->nbytes > 2);
    /* a shape of more streams than stored, a bad step, a stream cut short,
     * a lying length */
    ck_assert_int_eq(ecsq->cluster_check(ctx, &enc, 1u << 17, N), HVQ_E_INPUT);
    th_assert_contains(hvq_ctx_error(ctx), "missing or of the wrong size for a 131072x16");
    float good;
    memcpy(&good, st->data, 4);
    const float bad_steps[] = {0.0f, -1.0f, NAN, INFINITY};
    for (int i = 0; i < 4; i++) {
        memcpy(st->data, &bad_steps[i], 4);
        hvq_ctx_clear_error(ctx);
        ck_assert_int_eq(ecsq->cluster_decode(ctx, &enc, R, N, dec), HVQ_E_INPUT);
        th_assert_contains(hvq_ctx_error(ctx), "is not a positive number");
    }
    /* a step so large the levels overflow a float */
    const float huge = 1e38f;
    memcpy(st->data, &huge, 4);
    hvq_ctx_clear_error(ctx);
    ck_assert_int_eq(ecsq->cluster_decode(ctx, &enc, R, N, dec), HVQ_E_INPUT);
    th_assert_contains(hvq_ctx_error(ctx), "is beyond what a float holds");
    memcpy(st->data, &good, 4);
    bytes->nbytes--;
    hvq_ctx_clear_error(ctx);
    ck_assert_int_eq(ecsq->cluster_decode(ctx, &enc, R, N, dec), HVQ_E_INPUT);
    th_assert_contains(hvq_ctx_error(ctx), "the stream lengths do not add up");
    bytes->nbytes++;
    ((uint8_t *)bytes->data)[bytes->nbytes - 1] ^= 0x5a;
    ((uint8_t *)bytes->data)[0] ^= 0xa5;
    hvq_ctx_clear_error(ctx);
    hvq_status s = ecsq->cluster_decode(ctx, &enc, R, N, dec);
    ck_assert(s == HVQ_OK || (s == HVQ_E_INPUT && strstr(hvq_ctx_error(ctx), "is corrupt")));
    hvq_encoded_clear(&enc);
    /* an unknown code */
    ck_assert_int_eq(encode(ctx, kv, &in, rec, &enc), HVQ_OK);
    for (size_t i = 0; i < enc.n_attrs; i++)
        if (strcmp(enc.attrs[i].key, "code") == 0)
            ((char *)enc.attrs[i].value)[0] = 'X';
    hvq_ctx_clear_error(ctx);
    ck_assert_int_eq(ecsq->cluster_check(ctx, &enc, R, N), HVQ_E_INPUT);
    th_assert_contains(hvq_ctx_error(ctx), "attribute code 'Xange1' is not range1");
    hvq_encoded_clear(&enc);
}
END_TEST

/* ---- the real binary --------------------------------------------------------- */

/* A pipeline of ecsq on the demo model: the container's bits per weight
 * near the target, and decode gives a model back. */
START_TEST(pipeline_through_the_binary)
{
    char *dir = th_tmpdir("ecsq"), yaml[4096], out[4096], rep[4096], dec[4096];
    snprintf(yaml, sizeof yaml, "%s/ec.yaml", dir);
    snprintf(out, sizeof out, "%s/ec.hvq", dir);
    snprintf(rep, sizeof rep, "%s/ec.json", dir);
    snprintf(dec, sizeof dec, "%s/dec.safetensors", dir);
    const char *y = "name: ec\nselect: { include: [\"*proj.weight\"] }\n"
                    "stages:\n  clusterer: { plugin: ecsq, bits: 5 }\n  writer: { plugin: hvq }\n";
    th_write_file(yaml, y, strlen(y));
    const char *args[] = {"run", yaml, "-q", "--input", th_src("models/stories260K"),
                          "-o", out, "-r", rep, NULL};
    char *o = NULL, *e = NULL;
    ck_assert_msg(th_run(&o, &e, args) == 0, "%s", e);
    free(o);
    free(e);
    char *report = th_read_file(rep, NULL);
    th_assert_contains(report, "\"ecsq\"");
    const char *key = "\"bpp_stored\": ";
    char *p = report ? strstr(report, key) : NULL;
    ck_assert_msg(p != NULL, "no %s in the report", key);
    double bpw = strtod(p + strlen(key), NULL);
    ck_assert_msg(bpw > 4.9 && bpw < 5.4, "%g bits per weight stored for bits: 5", bpw);
    free(report);
    const char *dargs[] = {"decode", out, "-q", "-o", dec, NULL};
    ck_assert_msg(th_run(&o, &e, dargs) == 0, "%s", e);
    ck_assert(th_exists(dec));
    free(o);
    free(e);
    th_rmtree(dir);
    free(dir);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("ecsq");
    TCase *tc = tcase_create("ecsq");
    tcase_add_unchecked_fixture(tc, load, unload);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, code_round_trips_at_its_information_content);
    tcase_add_test(tc, code_survives_garbage);
    tcase_add_test(tc, decode_f32_is_the_levels_times_the_step);
    tcase_add_test(tc, step_search_hits_the_entropy);
    tcase_add_test(tc, entropy_counts_the_levels);
    tcase_add_test(tc, quantizer_follows_the_definitions);
    tcase_add_test(tc, plugin_round_trips_on_any_thread_count);
    tcase_add_test(tc, plugin_gptq_modes);
    tcase_add_test(tc, plugin_column_gains);
    tcase_add_test(tc, plugin_refuses_bad_input);
    tcase_add_test(tc, pipeline_through_the_binary);
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
