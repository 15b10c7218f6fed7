/* llama.cpp's legacy block quantizers (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0), written from the
 * arithmetic of ggml-quants.c: every float expression below is evaluated
 * in the same order, with the same constants and the same int/float
 * conversions, because the point is identical bytes. See ggml_quants.h.
 *
 * Block layouts (fp16 little-endian, nibbles: value j in the low nibble of
 * byte j, value j + 16 in the high nibble):
 *   Q4_0 (18 bytes): d, 16 bytes of 4-bit codes q;      w = (q - 8) * d
 *   Q4_1 (20 bytes): d, m, 16 bytes of 4-bit codes q;   w = q * d + m
 *   Q5_0 (22 bytes): d, 4 bytes qh, 16 bytes of nibbles; w = (q - 16) * d
 *   Q5_1 (24 bytes): d, m, 4 bytes qh, 16 bytes;         w = q * d + m
 *   Q8_0 (34 bytes): d, 32 int8 codes q;                w = q * d
 * (Q5_*: the fifth bit of code j is bit j of the little-endian 32-bit qh.)
 */
#include "ggml_quants.h"

#include <float.h>
#include <math.h>
#include <string.h>

enum { QK = 32 };


void hvq_ggml_put_f16(uint8_t *p, float f)
{
    uint16_t h = hvq_f32_to_f16(f);
    p[0] = (uint8_t)(h & 0xff);
    p[1] = (uint8_t)(h >> 8);
}

float hvq_ggml_get_f16(const uint8_t *p)
{
    return hvq_f16_to_f32((uint16_t)(p[0] | (p[1] << 8)));
}

/* ggml's nearest_int: round to nearest even through the float adder, valid
 * for |v| <= 2^22 (every caller stays far inside it). */
int hvq_ggml_nearest(float v)
{
    float t = v + 12582912.f;
    int32_t i;
    memcpy(&i, &t, 4);
    return (i & 0x007fffff) - 0x00400000;
}

static void pack_nibbles(uint8_t *qs, const uint8_t *L)
{
    for (int j = 0; j < QK / 2; j++)
        qs[j] = (uint8_t)(L[j] | (L[j + QK / 2] << 4));
}

/* Codes 0..31: the low nibbles as pack_nibbles, the fifth bits into the
 * 32-bit little-endian qh (bit j for value j). */
static void pack_fifth(uint8_t *qh, uint8_t *qs, const uint8_t *L)
{
    uint32_t h = 0;
    for (int j = 0; j < QK / 2; j++) {
        qs[j] = (uint8_t)((L[j] & 0x0f) | ((L[j + QK / 2] & 0x0f) << 4));
        h |= (uint32_t)(L[j] >> 4 & 1) << j;
        h |= (uint32_t)(L[j + QK / 2] >> 4 & 1) << (j + QK / 2);
    }
    for (int k = 0; k < 4; k++)
        qh[k] = (uint8_t)(h >> 8 * k);
}

/* C's (int8_t) or (uint8_t) cast of a float as llama.cpp's x86-64 build
 * evaluates it: truncation toward zero, then the low byte; NaN and values
 * beyond int32 (a scale whose inverse overflowed) give 0x80000000, so 0. */
static int trunc_byte(float v)
{
    int32_t i = v > -2147483648.0f && v < 2147483648.0f ? (int32_t)v : INT32_MIN;
    return (int)(uint8_t)(i & 0xff);
}

/* ---- without weights: the _ref quantizers ---------------------------------- */

/* The value of largest magnitude, the first of equals (amax < |x| in order). */
static float signed_absmax(const float *x, int n)
{
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < n; j++)
        if (amax < fabsf(x[j])) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    return max;
}

/* Q4_0 (half 8) and Q5_0 (half 16): d = signed max / -half, codes
 * trunc(x / d + half + 0.5) up to 2 half - 1. Returns d. */
static float sym_ref(const float *x, int half, uint8_t *L)
{
    const float d = signed_absmax(x, QK) / (float)-half;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int j = 0; j < QK; j++) {
        int q = trunc_byte(x[j] * id + ((float)half + 0.5f));
        L[j] = (uint8_t)(q < 2 * half - 1 ? q : 2 * half - 1);
    }
    return d;
}

/* Q4_1 (nmax 15) and Q5_1 (31): d = (max - min) / nmax, codes
 * trunc((x - min) / d + 0.5) up to nmax (Q5_1 has no such clamp in ggml;
 * its codes never exceed 31 but for the wrapped 0x80000000). Returns d. */
static float asym_ref(const float *x, int nmax, uint8_t *L, float *min_out)
{
    float min = FLT_MAX, max = -FLT_MAX;
    for (int j = 0; j < QK; j++) {
        if (x[j] < min)
            min = x[j];
        if (x[j] > max)
            max = x[j];
    }
    const float d = (max - min) / (float)nmax;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int j = 0; j < QK; j++) {
        int q = trunc_byte((x[j] - min) * id + 0.5f);
        L[j] = (uint8_t)(q < nmax ? q : nmax);
    }
    *min_out = min;
    return d;
}

static void q8_0_ref(const float *x, uint8_t *y)
{
    float amax = 0.0f;
    for (int j = 0; j < QK; j++)
        amax = amax > fabsf(x[j]) ? amax : fabsf(x[j]);
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    hvq_ggml_put_f16(y, d);
    for (int j = 0; j < QK; j++)
        y[2 + j] = (uint8_t)trunc_byte(roundf(x[j] * id));
}

/* ---- with weights: make_qx_quants and make_qkx3_quants --------------------- */

/* The weight of value i: qw[i], or x[i]^2 without importance weights. */
static float qx_w(const float *qw, const float *x, int i)
{
    return qw ? qw[i] : x[i] * x[i];
}

/* Codes l in -nmax..nmax-1 for x at inverse scale iscale (stored in L as
 * l + nmax when L is not NULL), with the weighted sums sum w*x*l and
 * sum w*l*l, accumulated in index order. */
static void qx_try(int n, int nmax, const float *x, const float *qw, float iscale, int8_t *L,
                   float *sumlx, float *suml2)
{
    float slx = 0.0f, sl2 = 0.0f;
    for (int i = 0; i < n; i++) {
        int l = hvq_ggml_nearest(iscale * x[i]);
        l = l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l;
        if (L)
            L[i] = (int8_t)(l + nmax);
        float w = qx_w(qw, x, i);
        slx += w * x[i] * (float)l;
        sl2 += w * (float)l * (float)l;
    }
    *sumlx = slx;
    *suml2 = sl2;
}

/* llama.cpp's make_qx_quants with rmse_type 1: the weighted least-squares
 * scale, searched over 19 candidate inverse scales. Returns the scale. */
float hvq_ggml_make_qx(int n, int nmax, const float *x, int8_t *L, const float *qw)
{
    float max = 0.0f, amax = 0.0f;
    for (int i = 0; i < n; i++)
        if (fabsf(x[i]) > amax) {
            amax = fabsf(x[i]);
            max = x[i];
        }
    if (amax < 1e-15f) { /* GROUP_MAX_EPS: all zero */
        memset(L, 0, (size_t)n);
        return 0.0f;
    }
    float sumlx, suml2;
    qx_try(n, nmax, x, qw, (float)-nmax / max, L, &sumlx, &suml2);
    float scale = suml2 != 0.0f ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; is++) {
        if (is == 0)
            continue;
        float iscale = -((float)nmax + 0.1f * (float)is) / max;
        qx_try(n, nmax, x, qw, iscale, NULL, &sumlx, &suml2);
        if (suml2 > 0.0f && sumlx * sumlx > best * suml2) {
            qx_try(n, nmax, x, qw, iscale, L, &sumlx, &suml2);
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

/* Weighted squared (use_mad: absolute) error of codes L with scale and
 * min (min <= 0). */
static float qkx_error(int n, const float *x, const float *w, const uint8_t *L, float scale,
                       float min, int use_mad)
{
    float err = 0.0f;
    for (int i = 0; i < n; i++) {
        float diff = scale * (float)L[i] + min - x[i];
        err += qx_w(w, x, i) * (use_mad ? fabsf(diff) : diff * diff);
    }
    return err;
}

/* One candidate of make_qkx3_quants: codes at inverse scale iscale and the
 * weighted least-squares scale and min for them. 0 when degenerate. */
static int qkx_candidate(int n, int nmax, const float *x, const float *w, float iscale, float min,
                         float sum_w, float sum_x, uint8_t *Laux, float *scale_out,
                         float *min_out)
{
    float sum_l = 0.0f, sum_l2 = 0.0f, sum_xl = 0.0f;
    for (int i = 0; i < n; i++) {
        int l = hvq_ggml_nearest(iscale * (x[i] - min));
        l = l < 0 ? 0 : l > nmax ? nmax : l;
        Laux[i] = (uint8_t)l;
        float wl = qx_w(w, x, i) * (float)l;
        sum_l += wl;
        sum_l2 += wl * (float)l;
        sum_xl += wl * x[i];
    }
    float D = sum_w * sum_l2 - sum_l * sum_l;
    if (!(D > 0.0f))
        return 0;
    float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
    float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
    if (this_min > 0.0f) {
        this_min = 0.0f;
        this_scale = sum_xl / sum_l2;
    }
    *scale_out = this_scale;
    *min_out = this_min;
    return 1;
}

/* llama.cpp's make_qkx3_quants: codes 0..nmax, a scale and a min
 * (returned in *the_min as -min, >= 0), searched over nstep + 1 inverse
 * scales (rmin + rdelta * is + nmax) / (max - min), errors squared or
 * (use_mad) absolute. */
float hvq_ggml_make_qkx3(int n, int nmax, const float *x, const float *w, uint8_t *L,
                         float *the_min, uint8_t *Laux, float rmin, float rdelta, int nstep,
                         int use_mad)
{
    float min = x[0], max = x[0];
    float sum_w = qx_w(w, x, 0), sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < min)
            min = x[i];
        if (x[i] > max)
            max = x[i];
        sum_w += qx_w(w, x, i);
        sum_x += qx_w(w, x, i) * x[i];
    }
    if (min > 0.0f)
        min = 0.0f;
    if (max <= min) {
        memset(L, 0, (size_t)n);
        *the_min = -min;
        return 0.0f;
    }
    float iscale = (float)nmax / (max - min), scale = 1.0f / iscale;
    for (int i = 0; i < n; i++) {
        int l = hvq_ggml_nearest(iscale * (x[i] - min));
        L[i] = (uint8_t)(l < 0 ? 0 : l > nmax ? nmax : l);
    }
    float best = qkx_error(n, x, w, L, scale, min, use_mad);
    for (int is = 0; is <= nstep; is++) {
        float s, m;
        iscale = (rmin + rdelta * (float)is + (float)nmax) / (max - min);
        if (!qkx_candidate(n, nmax, x, w, iscale, min, sum_w, sum_x, Laux, &s, &m))
            continue;
        float err = qkx_error(n, x, w, Laux, s, m, use_mad);
        if (err < best) {
            memcpy(L, Laux, (size_t)n);
            best = err;
            scale = s;
            min = m;
        }
    }
    *the_min = -min;
    return scale;
}

/* sigma^2 of a row: the mean of x^2, summed in order, over n values. */
static float row_sigma2(const float *x, int64_t n)
{
    float sum_x2 = 0.0f;
    for (int64_t j = 0; j < n; j++)
        sum_x2 += x[j] * x[j];
    return sum_x2 / (float)n;
}

float hvq_ggml_weights(const float *x, const float *qw, float sigma2, int n, float *weight)
{
    float sum = 0.0f;
    for (int j = 0; j < n; j++)
        weight[j] = qw[j] * sqrtf(sigma2 + x[j] * x[j]);
    for (int j = 0; j < n; j++)
        sum += weight[j];
    return sum;
}

/* ---- rows -------------------------------------------------------------- */

/* The legacy 32-value types but Q8_0. */
typedef struct legacy {
    int bits;       /* 4 or 5 */
    int has_min;    /* Q4_1, Q5_1: w = q * d + m; else w = (q - half) * d */
    size_t bytes;
} legacy;

static const legacy q4_0_t = {4, 0, 18}, q4_1_t = {4, 1, 20}, q5_0_t = {5, 0, 22},
                    q5_1_t = {5, 1, 24};

/* One block: the _ref quantizer without weights, with them make_qx_quants
 * (symmetric types) or make_qkx3_quants (with a min), as the _impl. */
static void legacy_block(const legacy *t, const float *x, const float *weight, uint8_t *out)
{
    uint8_t L[QK], Laux[QK];
    const int half = 1 << (t->bits - 1), nmax = (1 << t->bits) - 1;
    float d, m = 0.0f;
    if (t->has_min && weight) {
        d = hvq_ggml_make_qkx3(QK, nmax, x, weight, L, &m, Laux, -0.9f, 0.05f, 36, 0);
        m = -m;
    } else if (t->has_min) {
        d = asym_ref(x, nmax, L, &m);
    } else if (weight) {
        d = hvq_ggml_make_qx(QK, half, x, (int8_t *)L, weight);
    } else {
        d = sym_ref(x, half, L);
    }
    hvq_ggml_put_f16(out, d);
    if (t->has_min)
        hvq_ggml_put_f16(out + 2, m);
    uint8_t *q = out + (t->has_min ? 4 : 2);
    if (t->bits == 5)
        pack_fifth(q, q + 4, L);
    else
        pack_nibbles(q, L);
}

static void legacy_row(const legacy *t, const float *x, const float *qw, uint8_t *out,
                       int64_t n)
{
    float sigma2 = qw ? row_sigma2(x, n) : 0.0f, weight[QK];
    for (int64_t b = 0; b < n / QK; b++, x += QK, out += t->bytes) {
        if (qw)
            hvq_ggml_weights(x, qw + b * QK, sigma2, QK, weight);
        legacy_block(t, x, qw ? weight : NULL, out);
    }
}

/* w = (q - half) * d, or q * d + m; q's fifth bit from qh in Q5_*. */
static void legacy_dequant(const legacy *t, const uint8_t *blk, float *y, int64_t n)
{
    const int half = 1 << (t->bits - 1);
    for (int64_t b = 0; b < n / QK; b++, blk += t->bytes, y += QK) {
        const float d = hvq_ggml_get_f16(blk), m = t->has_min ? hvq_ggml_get_f16(blk + 2) : 0;
        const uint8_t *qh = blk + (t->has_min ? 4 : 2), *qs = qh + (t->bits == 5 ? 4 : 0);
        for (int j = 0; j < QK; j++) {
            int q = j < QK / 2 ? qs[j] & 0x0f : qs[j - QK / 2] >> 4;
            if (t->bits == 5)
                q |= (qh[j / 8] >> (j % 8) & 1) << 4;
            y[j] = t->has_min ? (float)q * d + m : (float)(q - half) * d;
        }
    }
}

/* The code of value j set to the nearest under the block's d (and m),
 * clamped to the type's range; returns what it decodes to. */
static float legacy_requant(const legacy *t, uint8_t *blk, int j, float x)
{
    const int half = 1 << (t->bits - 1), nmax = (1 << t->bits) - 1;
    const float d = hvq_ggml_get_f16(blk), m = t->has_min ? hvq_ggml_get_f16(blk + 2) : 0;
    uint8_t *qh = blk + (t->has_min ? 4 : 2), *qs = qh + (t->bits == 5 ? 4 : 0);
    float v = t->has_min ? (x - m) / d : x / d + (float)half;
    int q = d != 0.0f && isfinite(v) ? (int)nearbyintf(fminf(fmaxf(v, 0.0f), (float)nmax))
                                     : (t->has_min ? 0 : half);
    uint8_t *b = &qs[j % (QK / 2)];
    int shift = j < QK / 2 ? 0 : 4;
    *b = (uint8_t)((*b & ~(0xf << shift)) | (q & 0xf) << shift);
    if (t->bits == 5)
        qh[j / 8] = (uint8_t)((qh[j / 8] & ~(1u << (j % 8))) | (unsigned)(q >> 4 & 1) << (j % 8));
    return t->has_min ? (float)q * d + m : (float)(q - half) * d;
}

#define LEGACY(name)                                                                  \
    static void name##_row(const float *x, const float *qw, uint8_t *out, int64_t n)  \
    {                                                                                 \
        legacy_row(&name##_t, x, qw, out, n);                                         \
    }                                                                                 \
    static void name##_dequant(const uint8_t *blk, float *y, int64_t n)               \
    {                                                                                 \
        legacy_dequant(&name##_t, blk, y, n);                                         \
    }                                                                                 \
    static float name##_requant(uint8_t *blk, int j, float x)                         \
    {                                                                                 \
        return legacy_requant(&name##_t, blk, j, x);                                  \
    }
LEGACY(q4_0)
LEGACY(q4_1)
LEGACY(q5_0)
LEGACY(q5_1)

static void q8_0_row(const float *x, const float *qw, uint8_t *out, int64_t n)
{
    (void)qw; /* llama.cpp's Q8_0 ignores the importance matrix */
    for (int64_t b = 0; b < n / QK; b++)
        q8_0_ref(x + b * QK, out + b * 34);
}

static void q8_0_dequant(const uint8_t *blk, float *y, int64_t n)
{
    for (int64_t b = 0; b < n / QK; b++, blk += 34, y += QK) {
        const float d = hvq_ggml_get_f16(blk);
        for (int j = 0; j < QK; j++)
            y[j] = (float)(int8_t)blk[2 + j] * d;
    }
}

static float q8_0_requant(uint8_t *blk, int j, float x)
{
    const float d = hvq_ggml_get_f16(blk), v = x / d;
    if (d != 0.0f && isfinite(v))
        blk[2 + j] = (uint8_t)(int8_t)nearbyintf(fminf(fmaxf(v, -128.0f), 127.0f));
    return (float)(int8_t)blk[2 + j] * d;
}

static const hvq_ggml_type types[] = {
    {"q4_0", "Q4_0", QK, 18, 1, q4_0_row, q4_0_dequant, q4_0_requant},
    {"q4_1", "Q4_1", QK, 20, 1, q4_1_row, q4_1_dequant, q4_1_requant},
    {"q8_0", "Q8_0", QK, 34, 0, q8_0_row, q8_0_dequant, q8_0_requant},
    {"q5_0", "Q5_0", QK, 22, 1, q5_0_row, q5_0_dequant, q5_0_requant},
    {"q5_1", "Q5_1", QK, 24, 1, q5_1_row, q5_1_dequant, q5_1_requant},
    {"iq4_nl", "IQ4_NL", QK, 18, 1, hvq_ggml_iq4_nl_row, hvq_ggml_iq4_nl_dequant,
     hvq_ggml_iq4_nl_requant},
    {"q2_K", "Q2_K", 256, 84, 1, hvq_ggml_q2_k_row, hvq_ggml_q2_k_dequant, NULL},
    {"q3_K", "Q3_K", 256, 110, 1, hvq_ggml_q3_k_row, hvq_ggml_q3_k_dequant, NULL},
    {"q4_K", "Q4_K", 256, 144, 1, hvq_ggml_q4_k_row, hvq_ggml_q4_k_dequant,
     hvq_ggml_q4_k_requant},
    {"q5_K", "Q5_K", 256, 176, 1, hvq_ggml_q5_k_row, hvq_ggml_q5_k_dequant,
     hvq_ggml_q5_k_requant},
    {"q6_K", "Q6_K", 256, 210, 1, hvq_ggml_q6_k_row, hvq_ggml_q6_k_dequant,
     hvq_ggml_q6_k_requant},
    {"iq4_xs", "IQ4_XS", 256, 136, 1, hvq_ggml_iq4_xs_row, hvq_ggml_iq4_xs_dequant, NULL},
};

const hvq_ggml_type *hvq_ggml_type_find_ggml(const char *ggml)
{
    for (size_t i = 0; ggml && i < sizeof types / sizeof types[0]; i++)
        if (strcmp(types[i].ggml, ggml) == 0)
            return &types[i];
    return NULL;
}

const hvq_ggml_type *hvq_ggml_type_find(const char *name)
{
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (strcmp(types[i].name, name) == 0)
            return &types[i];
    return NULL;
}
