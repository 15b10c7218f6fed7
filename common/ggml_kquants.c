/* llama.cpp's K quantizers (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K): super-blocks of 256 values,
 * written from the arithmetic of ggml-quants.c (quantize_row_*_K_ref
 * without an importance matrix, quantize_row_*_K_impl with one) in the
 * same evaluation order. See ggml_quants.h.
 *
 * Layouts (fp16 little-endian):
 *   Q2_K (84 bytes):  16 bytes of 4-bit scales (low nibble) and mins (high),
 *                     64 bytes of 2-bit codes, d, dmin
 *   Q3_K (110 bytes): 32 bytes of high bits, 64 bytes of low 2 bits,
 *                     12 bytes of sixteen 6-bit scales, d
 *   Q4_K (144 bytes): d, dmin, 12 bytes of eight 6-bit scales and mins,
 *                     128 bytes of 4-bit codes
 *   Q5_K (176 bytes): d, dmin, 12 bytes of scales and mins, 32 bytes of
 *                     fifth bits, 128 bytes of low 4 bits
 *   Q6_K (210 bytes): 128 bytes of low 4 bits, 64 bytes of high 2 bits,
 *                     16 int8 scales, d
 */
#include "ggml_quants.h"

#include <math.h>
#include <string.h>

enum { QK_K = 256 };

/* The K types' sigma^2 of a super-block: 2 * sum x^2 / 256. */
static float super_sigma2(const float *x)
{
    float sum_x2 = 0.0f;
    for (int l = 0; l < QK_K; l++)
        sum_x2 += x[l] * x[l];
    return 2.0f * sum_x2 / (float)QK_K;
}

/* ---- Q4_K and Q5_K: eight sub-blocks of 32 with a 6-bit scale and min ---- */

/* The 6-bit scale and min of sub-block j from the 12 packed bytes. */
static void scale_min(int j, const uint8_t *q, uint8_t *d, uint8_t *m)
{
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (uint8_t)((q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

static void pack_scales(uint8_t *q, const uint8_t *ls, const uint8_t *lm)
{
    memset(q, 0, 12);
    for (int j = 0; j < 8; j++)
        if (j < 4) {
            q[j] = ls[j];
            q[j + 4] = lm[j];
        } else {
            q[j + 4] = (uint8_t)((ls[j] & 0xf) | ((lm[j] & 0xf) << 4));
            q[j - 4] |= (uint8_t)((ls[j] >> 4) << 6);
            q[j] |= (uint8_t)((lm[j] >> 4) << 6);
        }
}

/* make_qp_quants: codes 0..nmax for n non-negative values x (uint8 as in
 * ggml, which stores a negative code wrapped), weighted by qw. */
static float make_qp(int n, int nmax, const float *x, uint8_t *L, const float *qw)
{
    float max = 0.0f;
    for (int i = 0; i < n; i++)
        max = max > x[i] ? max : x[i];
    if (max < 1e-15f) {
        memset(L, 0, (size_t)n);
        return 0.0f;
    }
    float iscale = (float)nmax / max, scale = 1.0f / iscale, best = 0.0f;
    for (int i = 0; i < n; i++) {
        L[i] = (uint8_t)hvq_ggml_nearest(iscale * x[i]);
        float diff = x[i] - scale * (float)L[i];
        best += qw[i] * diff * diff;
    }
    for (int is = -4; is <= 4; is++) {
        if (is == 0)
            continue;
        float iscale_is = (0.1f * (float)is + (float)nmax) / max, scale_is = 1.0f / iscale_is;
        float mse = 0.0f;
        for (int i = 0; i < n; i++) {
            int l = hvq_ggml_nearest(iscale_is * x[i]);
            l = l < nmax ? l : nmax;
            float diff = x[i] - scale_is * (float)l;
            mse += qw[i] * diff * diff;
        }
        if (mse < best) {
            best = mse;
            iscale = iscale_is;
        }
    }
    float sumlx = 0.0f, suml2 = 0.0f;
    for (int i = 0; i < n; i++) {
        int l = hvq_ggml_nearest(iscale * x[i]);
        l = l < nmax ? l : nmax;
        L[i] = (uint8_t)l;
        sumlx += qw[i] * x[i] * (float)l;
        suml2 += qw[i] * (float)l * (float)l;
    }
    for (int itry = 0; itry < 5; itry++) {
        int changed = 0;
        for (int i = 0; i < n; i++) {
            float w = qw[i];
            float slx = sumlx - w * x[i] * (float)L[i], sl2 = suml2 - w * (float)L[i] * (float)L[i];
            if (!(slx > 0.0f && sl2 > 0.0f))
                continue;
            int nl = hvq_ggml_nearest(x[i] * sl2 / slx);
            nl = nl < nmax ? nl : nmax;
            if (nl == L[i])
                continue;
            slx += w * x[i] * (float)nl;
            sl2 += w * (float)nl * (float)nl;
            if (slx * slx * suml2 > sumlx * sumlx * sl2) {
                L[i] = (uint8_t)nl;
                sumlx = slx;
                suml2 = sl2;
                changed++;
            }
        }
        if (!changed)
            break;
    }
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

/* Q4_K (nmax 15) or Q5_K (nmax 31) settings. */
typedef struct k45 {
    int nmax;
    float ref_rmin;  /* make_qkx2_quants' rmin without weights */
    int ref_nstep;   /* and its nstep (rdelta 0.1) */
    int clamp_impl;  /* Q5_K clamps the make_qp_quants codes to 63 */
} k45;

static const k45 q4_k = {15, -1.0f, 20, 0}, q5_k = {31, -0.5f, 15, 1};

/* Sub-block scales and mins without weights (quantize_row_*_K_ref). */
static void k45_ref_scales(const k45 *k, const float *x, uint8_t *L, uint8_t *ls, uint8_t *lm,
                           float *d, float *dmin)
{
    float scales[8], mins[8], weights[32], max_scale = 0.0f, max_min = 0.0f;
    uint8_t Laux[32];
    for (int j = 0; j < 8; j++) {
        const float *xb = x + 32 * j;
        float sum_x2 = 0.0f;
        for (int l = 0; l < 32; l++)
            sum_x2 += xb[l] * xb[l];
        float av_x = sqrtf(sum_x2 / 32.0f);
        for (int l = 0; l < 32; l++)
            weights[l] = av_x + fabsf(xb[l]);
        scales[j] = hvq_ggml_make_qkx3(32, k->nmax, xb, weights, L + 32 * j, &mins[j], Laux,
                                       k->ref_rmin, 0.1f, k->ref_nstep, 0);
        if (scales[j] > max_scale)
            max_scale = scales[j];
        if (mins[j] > max_min)
            max_min = mins[j];
    }
    float inv_scale = max_scale > 0.0f ? 63.0f / max_scale : 0.0f;
    float inv_min = max_min > 0.0f ? 63.0f / max_min : 0.0f;
    for (int j = 0; j < 8; j++) {
        ls[j] = (uint8_t)hvq_ggml_nearest(inv_scale * scales[j]);
        lm[j] = (uint8_t)hvq_ggml_nearest(inv_min * mins[j]);
        ls[j] = ls[j] < 63 ? ls[j] : 63;
        lm[j] = lm[j] < 63 ? lm[j] : 63;
    }
    *d = max_scale / 63.0f;
    *dmin = max_min / 63.0f;
}

/* Sub-block scales and mins with importance weights qw (the _impl). */
static void k45_impl_scales(const k45 *k, const float *x, const float *qw, uint8_t *L,
                            uint8_t *ls, uint8_t *lm, float *d, float *dmin)
{
    float scales[8], mins[8], sw[8], weights[32], sigma2 = super_sigma2(x);
    uint8_t Laux[32];
    for (int j = 0; j < 8; j++) {
        const float *xb = x + 32 * j;
        sw[j] = hvq_ggml_weights(xb, qw + 32 * j, sigma2, 32, weights);
        scales[j] = hvq_ggml_make_qkx3(32, k->nmax, xb, weights, L + 32 * j, &mins[j], Laux,
                                       -0.9f, 0.05f, 36, 0);
    }
    *d = make_qp(8, 63, scales, ls, sw);
    *dmin = make_qp(8, 63, mins, lm, sw);
    for (int j = 0; j < 8 && k->clamp_impl; j++) {
        ls[j] = ls[j] < 63 ? ls[j] : 63;
        lm[j] = lm[j] < 63 ? lm[j] : 63;
    }
}

/* One super-block's header (d, dmin, packed scales at hdr) and codes
 * 0..nmax in L, requantized with the stored scales as ggml does. */
static void k45_block(const k45 *k, const float *x, const float *qw, uint8_t *hdr, uint8_t *L)
{
    uint8_t ls[8], lm[8];
    float d, dmin;
    if (qw)
        k45_impl_scales(k, x, qw, L, ls, lm, &d, &dmin);
    else
        k45_ref_scales(k, x, L, ls, lm, &d, &dmin);
    pack_scales(hdr + 4, ls, lm);
    hvq_ggml_put_f16(hdr, d);
    hvq_ggml_put_f16(hdr + 2, dmin);
    for (int j = 0; j < 8; j++) {
        uint8_t sc, m;
        scale_min(j, hdr + 4, &sc, &m);
        const float dj = hvq_ggml_get_f16(hdr) * (float)sc;
        if (dj == 0.0f)
            continue;
        const float dm = hvq_ggml_get_f16(hdr + 2) * (float)m;
        for (int i = 0; i < 32; i++) {
            int l = hvq_ggml_nearest((x[32 * j + i] + dm) / dj);
            L[32 * j + i] = (uint8_t)(l < 0 ? 0 : l > k->nmax ? k->nmax : l);
        }
    }
}

void hvq_ggml_q4_k_row(const float *x, const float *qw, uint8_t *out, int64_t n)
{
    for (int64_t b = 0; b < n / QK_K; b++, x += QK_K, out += 144) {
        uint8_t L[QK_K];
        k45_block(&q4_k, x, qw ? qw + b * QK_K : NULL, out, L);
        uint8_t *q = out + 16;
        for (int j = 0; j < QK_K; j += 64, q += 32)
            for (int l = 0; l < 32; l++)
                q[l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 4));
    }
}

void hvq_ggml_q5_k_row(const float *x, const float *qw, uint8_t *out, int64_t n)
{
    for (int64_t b = 0; b < n / QK_K; b++, x += QK_K, out += 176) {
        uint8_t L[QK_K];
        k45_block(&q5_k, x, qw ? qw + b * QK_K : NULL, out, L);
        uint8_t *qh = out + 16, *ql = out + 48;
        memset(qh, 0, 32);
        for (int j = 0; j < QK_K; j += 64, ql += 32) {
            uint8_t m1 = (uint8_t)(1u << (j / 32)), m2 = (uint8_t)(2u << (j / 32));
            for (int l = 0; l < 32; l++) {
                int l1 = L[j + l], l2 = L[j + l + 32];
                if (l1 > 15) {
                    l1 -= 16;
                    qh[l] |= m1;
                }
                if (l2 > 15) {
                    l2 -= 16;
                    qh[l] |= m2;
                }
                ql[l] = (uint8_t)(l1 | (l2 << 4));
            }
        }
    }
}

/* Q4_K (qh NULL) and Q5_K: value = d * scale * code - dmin * min. */
static void k45_dequant(const uint8_t *blk, const uint8_t *qh, const uint8_t *ql, float *y)
{
    const float d = hvq_ggml_get_f16(blk), min = hvq_ggml_get_f16(blk + 2);
    for (int j = 0, is = 0; j < QK_K; j += 64, is += 2, ql += 32) {
        uint8_t sc, m;
        scale_min(is, blk + 4, &sc, &m);
        const float d1 = d * (float)sc, m1 = min * (float)m;
        scale_min(is + 1, blk + 4, &sc, &m);
        const float d2 = d * (float)sc, m2 = min * (float)m;
        unsigned u1 = 1u << (j / 32), u2 = 2u << (j / 32);
        for (int l = 0; l < 32; l++)
            *y++ = d1 * (float)((ql[l] & 0xf) + (qh && (qh[l] & u1) ? 16 : 0)) - m1;
        for (int l = 0; l < 32; l++)
            *y++ = d2 * (float)((ql[l] >> 4) + (qh && (qh[l] & u2) ? 16 : 0)) - m2;
    }
}

/* Code j of a Q4_K / Q5_K super-block (qh NULL for Q4_K) set to the one
 * nearest x under its sub-block's scale and min; returns what
 * k45_dequant gives for it. */
static float k45_requant(uint8_t *blk, uint8_t *qh, uint8_t *ql, int j, float x)
{
    const float d = hvq_ggml_get_f16(blk), min = hvq_ggml_get_f16(blk + 2);
    const int c = j / 64, hi = j % 64 >= 32, l = j % 32, max = qh ? 31 : 15;
    uint8_t sc, m;
    scale_min(2 * c + hi, blk + 4, &sc, &m);
    const float d1 = d * (float)sc, m1 = min * (float)m, v = (x + m1) / d1;
    uint8_t *q = ql + 32 * c + l;
    const unsigned u = (hi ? 2u : 1u) << (2 * c);
    int code = (hi ? *q >> 4 : *q & 0xf) + (qh && (qh[l] & u) ? 16 : 0);
    if (d1 != 0.0f && isfinite(v))
        code = (int)nearbyintf(fminf(fmaxf(v, 0.0f), (float)max));
    *q = (uint8_t)(hi ? (*q & 0x0f) | (code & 0xf) << 4 : (*q & 0xf0) | (code & 0xf));
    if (qh)
        qh[l] = (uint8_t)((qh[l] & ~u) | (code >> 4 ? u : 0u));
    return d1 * (float)code - m1;
}

float hvq_ggml_q4_k_requant(uint8_t *block, int j, float x)
{
    return k45_requant(block, NULL, block + 16, j, x);
}

float hvq_ggml_q5_k_requant(uint8_t *block, int j, float x)
{
    return k45_requant(block, block + 16, block + 48, j, x);
}

void hvq_ggml_q4_k_dequant(const uint8_t *blocks, float *y, int64_t n)
{
    for (int64_t b = 0; b < n / QK_K; b++)
        k45_dequant(blocks + b * 144, NULL, blocks + b * 144 + 16, y + b * QK_K);
}

void hvq_ggml_q5_k_dequant(const uint8_t *blocks, float *y, int64_t n)
{
    for (int64_t b = 0; b < n / QK_K; b++)
        k45_dequant(blocks + b * 176, blocks + b * 176 + 16, blocks + b * 176 + 48,
                    y + b * QK_K);
}

/* ---- Q6_K: sixteen sub-blocks of 16 with an int8 scale ------------------- */

/* Codes 0..63 (value + 32) of one super-block from make_qx_quants in L,
 * the int8 scales in sc and the super-block scale in *d; 0 for a block
 * whose scales are all (nearly) zero. */
static int q6_k_codes(const float *x, const float *qw, int8_t *L, int8_t *sc, float *d)
{
    float scales[16], max_scale = 0.0f, max_abs = 0.0f;
    for (int ib = 0; ib < 16; ib++) {
        scales[ib] = hvq_ggml_make_qx(16, 32, x + 16 * ib, L + 16 * ib, qw ? qw + 16 * ib : NULL);
        if (fabsf(scales[ib]) > max_abs) {
            max_abs = fabsf(scales[ib]);
            max_scale = scales[ib];
        }
    }
    if (max_abs < 1e-15f)
        return 0;
    float iscale = -128.0f / max_scale;
    for (int ib = 0; ib < 16; ib++) {
        int l = hvq_ggml_nearest(iscale * scales[ib]);
        sc[ib] = (int8_t)(l < 127 ? l : 127);
    }
    *d = 1.0f / iscale;
    return 1;
}

/* Low 4 bits of codes j and j + 64 into ql, high 2 bits of four into qh. */
static void q6_k_pack(const int8_t *L, uint8_t *ql, uint8_t *qh)
{
    for (int j = 0; j < QK_K; j += 128, ql += 64, qh += 32)
        for (int l = 0; l < 32; l++) {
            const int8_t *c = L + j + l;
            ql[l] = (uint8_t)((c[0] & 0xf) | ((c[64] & 0xf) << 4));
            ql[l + 32] = (uint8_t)((c[32] & 0xf) | ((c[96] & 0xf) << 4));
            qh[l] = (uint8_t)((c[0] >> 4) | ((c[32] >> 4) << 2) | ((c[64] >> 4) << 4) |
                              ((c[96] >> 4) << 6));
        }
}

void hvq_ggml_q6_k_row(const float *x, const float *qw, uint8_t *out, int64_t n)
{
    for (int64_t b = 0; b < n / QK_K; b++, x += QK_K, out += 210) {
        int8_t L[QK_K], sc[16];
        float d;
        memset(out, 0, 210);
        if (!q6_k_codes(x, qw ? qw + b * QK_K : NULL, L, sc, &d))
            continue; /* all zero, d = +0 */
        hvq_ggml_put_f16(out + 208, d);
        for (int j = 0; j < 16; j++) {
            out[192 + j] = (uint8_t)sc[j];
            const float dj = hvq_ggml_get_f16(out + 208) * (float)sc[j];
            if (dj == 0.0f)
                continue;
            for (int i = 0; i < 16; i++) {
                int l = hvq_ggml_nearest(x[16 * j + i] / dj);
                L[16 * j + i] = (int8_t)((l < -32 ? -32 : l > 31 ? 31 : l) + 32);
            }
        }
        q6_k_pack(L, out, out + 128);
    }
}

void hvq_ggml_q6_k_dequant(const uint8_t *blocks, float *y, int64_t n)
{
    for (int64_t b = 0; b < n / QK_K; b++) {
        const uint8_t *ql = blocks + b * 210, *qh = ql + 128;
        const int8_t *sc = (const int8_t *)(ql + 192);
        const float d = hvq_ggml_get_f16(ql + 208);
        for (int j = 0; j < QK_K; j += 128, y += 128, ql += 64, qh += 32, sc += 8)
            for (int l = 0; l < 32; l++) {
                int is = l / 16;
                int q1 = ((ql[l] & 0xf) | (((qh[l] >> 0) & 3) << 4)) - 32;
                int q2 = ((ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4)) - 32;
                int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                y[l] = d * (float)sc[is] * (float)q1;
                y[l + 32] = d * (float)sc[is + 2] * (float)q2;
                y[l + 64] = d * (float)sc[is + 4] * (float)q3;
                y[l + 96] = d * (float)sc[is + 6] * (float)q4;
            }
    }
}

/* Code j of a Q6_K super-block set to the one nearest x under its
 * sub-block's scale (-32..31); returns what the dequantization gives. */
float hvq_ggml_q6_k_requant(uint8_t *block, int j, float x)
{
    const int half = j / 128, g = j % 128 / 32, l = j % 32;
    uint8_t *ql = block + 64 * half + (g & 1 ? 32 : 0) + l, *qh = block + 128 + 32 * half + l;
    const int8_t sc = (int8_t)block[192 + 8 * half + l / 16 + 2 * g];
    const float d = hvq_ggml_get_f16(block + 208), v = x / (d * (float)sc);
    const int shift = g >= 2 ? 4 : 0;
    int code = ((*ql >> shift) & 0xf) | (((*qh >> (2 * g)) & 3) << 4);
    if (d * (float)sc != 0.0f && isfinite(v))
        code = (int)nearbyintf(fminf(fmaxf(v, -32.0f), 31.0f)) + 32;
    *ql = (uint8_t)((*ql & ~(0xf << shift)) | (code & 0xf) << shift);
    *qh = (uint8_t)((*qh & ~(3 << (2 * g))) | ((code >> 4) & 3) << (2 * g));
    return d * (float)sc * (float)(code - 32);
}

/* Low 2 bits of codes j, j + 32, j + 64, j + 96 into one byte, per 128. */
static void pack_2bit(uint8_t *qs, const uint8_t *L)
{
    for (int j = 0; j < QK_K; j += 128)
        for (int l = 0; l < 32; l++)
            qs[j / 4 + l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) |
                                      (L[j + l + 96] << 6));
}

/* ---- Q3_K: sixteen sub-blocks of 16 with a 6-bit signed scale -------------- */

/* make_q3_quants with do_rmse: codes -nmax..nmax-1 weighted by x^2, then
 * refined one code at a time; L gets code + nmax. Returns the scale. */
static float make_q3(int n, int nmax, const float *x, int8_t *L)
{
    float max = 0.0f, amax = 0.0f, sumlx = 0.0f, suml2 = 0.0f;
    for (int i = 0; i < n; i++)
        if (fabsf(x[i]) > amax) {
            amax = fabsf(x[i]);
            max = x[i];
        }
    if (amax < 1e-15f) {
        memset(L, 0, (size_t)n);
        return 0.0f;
    }
    float iscale = (float)-nmax / max;
    for (int i = 0; i < n; i++) {
        int l = hvq_ggml_nearest(iscale * x[i]);
        l = l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l;
        L[i] = (int8_t)l;
        float w = x[i] * x[i];
        sumlx += w * x[i] * (float)l;
        suml2 += w * (float)l * (float)l;
    }
    for (int itry = 0; itry < 5; itry++) {
        int changed = 0;
        for (int i = 0; i < n; i++) {
            float w = x[i] * x[i], slx = sumlx - w * x[i] * (float)L[i];
            if (!(slx > 0.0f))
                continue;
            float sl2 = suml2 - w * (float)L[i] * (float)L[i];
            int nl = hvq_ggml_nearest(x[i] * sl2 / slx);
            nl = nl < -nmax ? -nmax : nl > nmax - 1 ? nmax - 1 : nl;
            if (nl == L[i])
                continue;
            slx += w * x[i] * (float)nl;
            sl2 += w * (float)nl * (float)nl;
            if (sl2 > 0.0f && slx * slx * suml2 > sumlx * sumlx * sl2) {
                L[i] = (int8_t)nl;
                sumlx = slx;
                suml2 = sl2;
                changed++;
            }
        }
        if (!changed)
            break;
    }
    for (int i = 0; i < n; i++)
        L[i] = (int8_t)(L[i] + nmax);
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

/* The 6-bit scale code (0..63, value + 32) of sub-block j. */
static int q3_k_scale(const uint8_t *sc, int j)
{
    int low = j < 8 ? sc[j] & 0xf : sc[j - 8] >> 4;
    return low | (((sc[8 + j % 4] >> (2 * (j / 4))) & 3) << 4);
}

/* Packs scale codes ls (0..63) of the sixteen sub-blocks into 12 bytes. */
static void q3_k_pack_scales(uint8_t *sc, const int *ls)
{
    memset(sc, 0, 12);
    for (int j = 0; j < 16; j++) {
        if (j < 8)
            sc[j] = (uint8_t)(ls[j] & 0xf);
        else
            sc[j - 8] |= (uint8_t)((ls[j] & 0xf) << 4);
        sc[j % 4 + 8] |= (uint8_t)((ls[j] >> 4) << (2 * (j / 4)));
    }
}

/* The super-block scale d and the scale codes, without (ref) or with
 * (impl) importance weights; codes + 4 of make_q3/make_qx in L. */
static float q3_k_scales(const float *x, const float *qw, int8_t *L, int *ls)
{
    float scales[16];
    if (!qw) {
        float max_scale = 0.0f, amax = 0.0f;
        for (int j = 0; j < 16; j++) {
            scales[j] = make_q3(16, 4, x + 16 * j, L + 16 * j);
            if (fabsf(scales[j]) > amax) {
                amax = fabsf(scales[j]);
                max_scale = scales[j];
            }
        }
        memset(ls, 0, 16 * sizeof *ls);
        if (max_scale == 0.0f)
            return 0.0f;
        float iscale = -32.0f / max_scale;
        for (int j = 0; j < 16; j++) {
            int l = (int8_t)hvq_ggml_nearest(iscale * scales[j]);
            ls[j] = (l < -32 ? -32 : l > 31 ? 31 : l) + 32;
        }
        return 1.0f / iscale;
    }
    float sw[16], weight[16], sigma2 = super_sigma2(x);
    int8_t Ls[16];
    for (int j = 0; j < 16; j++) {
        const float *xb = x + 16 * j;
        sw[j] = hvq_ggml_weights(xb, qw + 16 * j, sigma2, 16, weight);
        scales[j] = hvq_ggml_make_qx(16, 4, xb, L + 16 * j, weight);
    }
    float d = hvq_ggml_make_qx(16, 32, scales, Ls, sw);
    for (int j = 0; j < 16; j++)
        ls[j] = Ls[j];
    return d;
}

void hvq_ggml_q3_k_row(const float *x, const float *qw, uint8_t *out, int64_t n)
{
    for (int64_t b = 0; b < n / QK_K; b++, x += QK_K, out += 110) {
        int8_t L[QK_K];
        int ls[16];
        uint8_t *hmask = out, *qs = out + 32, *sc = out + 96;
        float d = q3_k_scales(x, qw ? qw + b * QK_K : NULL, L, ls);
        memset(out, 0, 110);
        q3_k_pack_scales(sc, ls);
        hvq_ggml_put_f16(out + 108, d);
        for (int j = 0; j < 16; j++) {
            const float dj = hvq_ggml_get_f16(out + 108) * (float)(q3_k_scale(sc, j) - 32);
            if (dj == 0.0f)
                continue;
            for (int i = 0; i < 16; i++) {
                int l = hvq_ggml_nearest(x[16 * j + i] / dj);
                L[16 * j + i] = (int8_t)((l < -4 ? -4 : l > 3 ? 3 : l) + 4);
            }
        }
        for (int j = 0; j < QK_K; j++)
            if (L[j] > 3) {
                hmask[j % 32] |= (uint8_t)(1u << (j / 32));
                L[j] = (int8_t)(L[j] - 4);
            }
        pack_2bit(qs, (const uint8_t *)L);
    }
}

void hvq_ggml_q3_k_dequant(const uint8_t *blocks, float *y, int64_t n)
{
    for (int64_t b = 0; b < n / QK_K; b++) {
        const uint8_t *hm = blocks + b * 110, *q = hm + 32, *sc = hm + 96;
        const float d_all = hvq_ggml_get_f16(hm + 108);
        for (int v = 0; v < QK_K; v++) {
            const float dl = d_all * (float)(q3_k_scale(sc, v / 16) - 32);
            int code = (q[(v / 128) * 32 + v % 32] >> (2 * ((v / 32) % 4))) & 3;
            *y++ = dl * (float)(code - ((hm[v % 32] >> (v / 32)) & 1 ? 0 : 4));
        }
    }
}

/* ---- Q2_K: sixteen sub-blocks of 16 with a 4-bit scale and a 4-bit min ---- */

/* Codes 0..3 in L, the scale (low nibble) and min (high) codes in sc, and
 * d, dmin without weights (quantize_row_q2_K_ref: make_qkx2_quants with
 * weights |x| and absolute errors). */
static void q2_k_ref_scales(const float *x, uint8_t *L, uint8_t *sc, float *d, float *dmin)
{
    float scales[16], mins[16], weights[16], max_scale = 0.0f, max_min = 0.0f;
    uint8_t Laux[16];
    for (int j = 0; j < 16; j++) {
        for (int l = 0; l < 16; l++)
            weights[l] = fabsf(x[16 * j + l]);
        scales[j] = hvq_ggml_make_qkx3(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], Laux,
                                       -0.5f, 0.1f, 15, 1);
        if (scales[j] > max_scale)
            max_scale = scales[j];
        if (mins[j] > max_min)
            max_min = mins[j];
    }
    memset(sc, 0, 16);
    *d = *dmin = 0.0f;
    if (max_scale > 0.0f) {
        float iscale = 15.0f / max_scale;
        for (int j = 0; j < 16; j++)
            sc[j] = (uint8_t)hvq_ggml_nearest(iscale * scales[j]);
        *d = max_scale / 15.0f;
    }
    if (max_min > 0.0f) {
        float iscale = 15.0f / max_min;
        for (int j = 0; j < 16; j++)
            sc[j] |= (uint8_t)((unsigned)hvq_ggml_nearest(iscale * mins[j]) << 4);
        *dmin = max_min / 15.0f;
    }
}

/* The same with importance weights qw (quantize_row_q2_K_impl). */
static void q2_k_impl_scales(const float *x, const float *qw, uint8_t *L, uint8_t *sc, float *d,
                             float *dmin)
{
    float scales[16], mins[16], sw[16], weight[16], sumx2 = 0.0f;
    uint8_t Laux[16], Ls[16], Lm[16];
    for (int j = 0; j < QK_K; j++)
        sumx2 += x[j] * x[j];
    const float sigma2 = sumx2 / (float)QK_K;
    for (int j = 0; j < 16; j++) {
        sw[j] = hvq_ggml_weights(x + 16 * j, qw + 16 * j, sigma2, 16, weight);
        scales[j] = hvq_ggml_make_qkx3(16, 3, x + 16 * j, weight, L + 16 * j, &mins[j], Laux,
                                       -0.9f, 0.05f, 36, 0);
    }
    *d = make_qp(16, 15, scales, Ls, sw);
    *dmin = make_qp(16, 15, mins, Lm, sw);
    for (int j = 0; j < 16; j++)
        sc[j] = (uint8_t)(Ls[j] | (Lm[j] << 4));
}

void hvq_ggml_q2_k_row(const float *x, const float *qw, uint8_t *out, int64_t n)
{
    for (int64_t b = 0; b < n / QK_K; b++, x += QK_K, out += 84) {
        uint8_t L[QK_K];
        float d, dmin;
        if (qw)
            q2_k_impl_scales(x, qw + b * QK_K, L, out, &d, &dmin);
        else
            q2_k_ref_scales(x, L, out, &d, &dmin);
        hvq_ggml_put_f16(out + 80, d);
        hvq_ggml_put_f16(out + 82, dmin);
        for (int j = 0; j < 16; j++) {
            const float dj = hvq_ggml_get_f16(out + 80) * (float)(out[j] & 0xf);
            if (dj == 0.0f)
                continue;
            const float m = hvq_ggml_get_f16(out + 82) * (float)(out[j] >> 4);
            for (int i = 0; i < 16; i++) {
                int l = hvq_ggml_nearest((x[16 * j + i] + m) / dj);
                L[16 * j + i] = (uint8_t)(l < 0 ? 0 : l > 3 ? 3 : l);
            }
        }
        pack_2bit(out + 16, L);
    }
}

void hvq_ggml_q2_k_dequant(const uint8_t *blocks, float *y, int64_t n)
{
    for (int64_t b = 0; b < n / QK_K; b++, blocks += 84) {
        const float d = hvq_ggml_get_f16(blocks + 80), min = hvq_ggml_get_f16(blocks + 82);
        for (int v = 0; v < QK_K; v++) {
            const uint8_t sc = blocks[v / 16];
            const float dl = d * (float)(sc & 0xf), ml = min * (float)(sc >> 4);
            int code = blocks[16 + (v / 128) * 32 + v % 32] >> (2 * ((v / 32) % 4)) & 3;
            *y++ = dl * (float)code - ml;
        }
    }
}
