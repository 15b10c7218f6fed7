/* llama.cpp's 4-bit non-linear quantizers (IQ4_NL, IQ4_XS), written from
 * the arithmetic of ggml-quants.c (quantize_iq4_nl, quantize_iq4_xs: both
 * quantize_row_iq4_nl_impl with ntry 7, importance weights or x^2) in the
 * same evaluation order. See ggml_quants.h.
 *
 * Each 4-bit code q selects one of sixteen fixed levels kvalues[q]
 * (llama.cpp's kvalues_iq4nl); nibbles as in Q4_0 (value j of a group of 32
 * in the low nibble of byte j, value j + 16 in the high one).
 *   IQ4_NL (18 bytes):  d, 16 bytes of codes;               w = d * kvalues[q]
 *   IQ4_XS (136 bytes): d, scales_h (16 bits, little-endian), 4 bytes
 *                       scales_l, 128 bytes of codes: eight groups of 32,
 *                       each with a 6-bit scale ls (low 4 bits in scales_l,
 *                       high 2 in scales_h);  w = d * (ls - 32) * kvalues[q]
 */
#include "ggml_quants.h"

#include <math.h>
#include <string.h>

enum { QK_NL = 32, QK_K = 256 };

static const int8_t kvalues[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                   1,    13,   25,  38,  53,  69,  89,  113};

/* The code of the level nearest x (best_index_int8): bisection, ties to
 * the upper level. */
static int best_index(float x)
{
    if (x <= (float)kvalues[0])
        return 0;
    if (x >= (float)kvalues[15])
        return 15;
    int ml = 0, mu = 15;
    while (mu - ml > 1) {
        int mav = (ml + mu) / 2;
        if (x < (float)kvalues[mav])
            mu = mav;
        else
            ml = mav;
    }
    return x - (float)kvalues[mu - 1] < (float)kvalues[mu] - x ? mu - 1 : mu;
}

/* Weighted sums sum w*q*x and sum w*q*q of the levels nearest id * x;
 * the codes into L unless it is NULL. */
static void nl_sums(const float *xb, const float *weight, float id, uint8_t *L, float *sumqx,
                    float *sumq2)
{
    float sqx = 0.0f, sq2 = 0.0f;
    for (int j = 0; j < 32; j++) {
        int l = best_index(id * xb[j]);
        if (L)
            L[j] = (uint8_t)l;
        float q = (float)kvalues[l], w = weight[j];
        sqx += w * q * xb[j];
        sq2 += w * q * q;
    }
    *sumqx = sqx;
    *sumq2 = sq2;
}

/* The scale of a group of 32 (ntry 7): 0 when all (nearly) zero, L then
 * left as it is. */
static float nl_group_scale(const float *xb, const float *weight, uint8_t *L)
{
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < 32; j++)
        if (fabsf(xb[j]) > amax) {
            amax = fabsf(xb[j]);
            max = xb[j];
        }
    if (amax < 1e-15f) /* GROUP_MAX_EPS */
        return 0.0f;
    float d = -max / (float)kvalues[0], sumqx, sumq2;
    nl_sums(xb, weight, 1.0f / d, L, &sumqx, &sumq2);
    d = sumq2 > 0.0f ? sumqx / sumq2 : 0.0f;
    float best = d * sumqx;
    for (int itry = -7; itry <= 7; itry++) {
        nl_sums(xb, weight, (float)(itry + kvalues[0]) / max, NULL, &sumqx, &sumq2);
        if (sumq2 > 0.0f && sumqx * sumqx > best * sumq2) {
            d = sumqx / sumq2;
            best = d * sumqx;
        }
    }
    return d;
}

/* sigma^2 of a block of n values: sum x^2 * (2 / n). */
static float nl_sigma2(const float *x, int n)
{
    float s = 0.0f;
    for (int j = 0; j < n; j++)
        s += x[j] * x[j];
    return s * (2.0f / (float)n);
}

/* The importance weights of a group of 32: qw * sqrt(sigma2 + x^2), or x^2. */
static void nl_weights(const float *xb, const float *qw, float sigma2, float *weight)
{
    if (qw) {
        hvq_ggml_weights(xb, qw, sigma2, 32, weight);
        return;
    }
    for (int j = 0; j < 32; j++)
        weight[j] = xb[j] * xb[j];
}

static void pack_codes(uint8_t *q4, const uint8_t *L, int n)
{
    for (int i = 0; i < n / 32; i++)
        for (int j = 0; j < 16; j++)
            q4[16 * i + j] = (uint8_t)(L[32 * i + j] | (L[32 * i + 16 + j] << 4));
}

void hvq_ggml_iq4_nl_row(const float *x, const float *qw, uint8_t *out, int64_t n)
{
    for (int64_t b = 0; b < n / QK_NL; b++, x += QK_NL, out += 18) {
        float weight[QK_NL];
        uint8_t L[QK_NL];
        nl_weights(x, qw ? qw + b * QK_NL : NULL, nl_sigma2(x, QK_NL), weight);
        const float d = nl_group_scale(x, weight, L);
        hvq_ggml_put_f16(out, d);
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        for (int j = 0; j < QK_NL; j++)
            L[j] = (uint8_t)best_index(id * x[j]);
        pack_codes(out + 2, L, QK_NL);
    }
}

/* One IQ4_XS super-block: group scales, their 6-bit codes against
 * d = -(the signed largest) / 32, the codes requantized with d * (ls - 32). */
static void iq4_xs_block(const float *x, const float *qw, uint8_t *out)
{
    float scales[8], weight[32], max_scale = 0.0f, amax_scale = 0.0f;
    const float sigma2 = nl_sigma2(x, QK_K);
    uint8_t L[QK_K];
    for (int ib = 0; ib < 8; ib++) {
        nl_weights(x + 32 * ib, qw ? qw + 32 * ib : NULL, sigma2, weight);
        scales[ib] = nl_group_scale(x + 32 * ib, weight, L + 32 * ib);
        if (fabsf(scales[ib]) > amax_scale) {
            amax_scale = fabsf(scales[ib]);
            max_scale = scales[ib];
        }
    }
    const float d = -max_scale / 32.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    unsigned scales_h = 0;
    memset(out + 4, 0, 4);
    for (int ib = 0; ib < 8; ib++) {
        int l = hvq_ggml_nearest(id * scales[ib]);
        l = l < -32 ? -32 : l > 31 ? 31 : l;
        const float dl = d * (float)l, idl = dl != 0.0f ? 1.0f / dl : 0.0f;
        for (int j = 0; j < 32; j++)
            L[32 * ib + j] = (uint8_t)best_index(idl * x[32 * ib + j]);
        l += 32;
        out[4 + ib / 2] |= (uint8_t)((l & 0xf) << 4 * (ib % 2));
        scales_h |= (unsigned)(l >> 4) << 2 * ib;
    }
    hvq_ggml_put_f16(out, d);
    out[2] = (uint8_t)(scales_h & 0xff);
    out[3] = (uint8_t)(scales_h >> 8);
    pack_codes(out + 8, L, QK_K);
}

void hvq_ggml_iq4_xs_row(const float *x, const float *qw, uint8_t *out, int64_t n)
{
    for (int64_t b = 0; b < n / QK_K; b++)
        iq4_xs_block(x + b * QK_K, qw ? qw + b * QK_K : NULL, out + b * 136);
}

/* A group of 32 codes at q4 with scale dl. */
static void nl_dequant_group(const uint8_t *q4, float dl, float *y)
{
    for (int j = 0; j < 16; j++) {
        y[j] = dl * (float)kvalues[q4[j] & 0xf];
        y[j + 16] = dl * (float)kvalues[q4[j] >> 4];
    }
}

float hvq_ggml_iq4_nl_requant(uint8_t *block, int j, float x)
{
    const float d = hvq_ggml_get_f16(block);
    uint8_t *q = block + 2 + j % 16;
    int shift = j < 16 ? 0 : 4, l = (*q >> shift) & 0xf;
    if (d != 0.0f && isfinite(x / d))
        l = best_index(x / d);
    *q = (uint8_t)((*q & ~(0xf << shift)) | l << shift);
    return d * (float)kvalues[l];
}

void hvq_ggml_iq4_nl_dequant(const uint8_t *blocks, float *y, int64_t n)
{
    for (int64_t b = 0; b < n / QK_NL; b++)
        nl_dequant_group(blocks + 18 * b + 2, hvq_ggml_get_f16(blocks + 18 * b), y + QK_NL * b);
}

void hvq_ggml_iq4_xs_dequant(const uint8_t *blocks, float *y, int64_t n)
{
    for (int64_t b = 0; b < n / QK_K; b++, blocks += 136) {
        const float d = hvq_ggml_get_f16(blocks);
        const unsigned scales_h = (unsigned)(blocks[2] | blocks[3] << 8);
        for (int ib = 0; ib < 8; ib++, y += 32) {
            int ls = (blocks[4 + ib / 2] >> 4 * (ib % 2) & 0xf) |
                     (int)((scales_h >> 2 * ib & 3) << 4);
            nl_dequant_group(blocks + 8 + 16 * ib, d * (float)(ls - 32), y);
        }
    }
}
