/* clusterer "rtn": INT4 round-to-nearest, the paper's baseline.
 *
 * Works on the raw weights (HVQ_CLUSTERER_RAW). Each row is cut into groups
 * of group_size columns (0: the whole row, as in the paper; a last shorter
 * group when group_size does not divide the row). Per group:
 *   symmetric:  scale = fp16(max|w| / 7), q = clamp(round(w / scale), -7, 7),
 *               w_hat = q * scale                      (the paper's baseline)
 *   asymmetric: scale = fp16((max - min) / 15), m = fp16(min),
 *               q = clamp(round((w - m) / scale), 0, 15), w_hat = q * scale + m
 *               (like llama.cpp's Q4_1)
 * Components: "levels" (U8, two 4-bit codes per byte, low nibble first, in
 * row-major order; symmetric codes are stored as q + 8), "scales" (F16,
 * [rows, groups]) and, asymmetric only, "mins" (F16, [rows, groups]).
 */
#include "plugin.h"

#include "f16_round.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { P_GROUP_SIZE, P_MODE };

static const char *const mode_choices[] = {"symmetric", "asymmetric", NULL};

static const hvq_param_spec rtn_params[] = {
    {"group_size", HVQ_PARAM_INT, "0", 0, 1048576, NULL,
     "columns per scale group; 0 = one scale per output row (the paper)"},
    {"mode", HVQ_PARAM_CHOICE, "symmetric", 0, 0, mode_choices,
     "symmetric: levels -7..7 (the paper); asymmetric: 0..15 with a min"},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

static uint64_t groups_per_row(uint64_t cols, uint64_t g)
{
    return g == 0 || g >= cols ? 1 : (cols + g - 1) / g;
}

static void put_nibble(uint8_t *levels, uint64_t idx, unsigned code)
{
    if (idx & 1)
        levels[idx >> 1] = (uint8_t)((levels[idx >> 1] & 0x0f) | (code << 4));
    else
        levels[idx >> 1] = (uint8_t)((levels[idx >> 1] & 0xf0) | code);
}

static unsigned get_nibble(const uint8_t *levels, uint64_t idx)
{
    return (idx & 1) ? (unsigned)(levels[idx >> 1] >> 4) : (unsigned)(levels[idx >> 1] & 0x0f);
}

static hvq_status rtn_encode(hvq_ctx *ctx, const hvq_params *params,
                             const hvq_cluster_input *in, float *recon, hvq_encoded *enc)
{
    const hvq_host *H = ctx->host;
    uint64_t g = (uint64_t)params->values[P_GROUP_SIZE].i;
    int asym = strcmp(params->values[P_MODE].s, "asymmetric") == 0;
    uint64_t rows = in->rows, cols = in->cols, numel = rows * cols;
    uint64_t ng = groups_per_row(cols, g);
    uint64_t gs = ng == 1 ? cols : g;

    int64_t lshape[1] = {(int64_t)((numel + 1) / 2)};
    int64_t sshape[2] = {(int64_t)rows, (int64_t)ng};
    hvq_component *lev = H->enc_add(ctx, enc, "levels", HVQ_DTYPE_U8, 1, lshape, 4 * numel);
    if (!lev)
        return HVQ_E_NOMEM;
    hvq_component *sc = H->enc_add(ctx, enc, "scales", HVQ_DTYPE_F16, 2, sshape, 16 * rows * ng);
    if (!sc)
        return HVQ_E_NOMEM;
    hvq_component *mn = NULL;
    if (asym && !(mn = H->enc_add(ctx, enc, "mins", HVQ_DTYPE_F16, 2, sshape, 16 * rows * ng)))
        return HVQ_E_NOMEM;
    uint8_t *levels = lev->data;
    uint16_t *scales = sc->data, *mins = mn ? mn->data : NULL;

    for (uint64_t r = 0; r < rows; r++) {
        for (uint64_t k = 0; k < ng; k++) {
            uint64_t c0 = k * gs, c1 = c0 + gs < cols ? c0 + gs : cols;
            const float *w = in->x + r * cols;
            float *o = recon + r * cols;
            float lo = w[c0], hi = w[c0], amax = 0.0f;
            for (uint64_t c = c0; c < c1; c++) {
                if (w[c] < lo) lo = w[c];
                if (w[c] > hi) hi = w[c];
                if (fabsf(w[c]) > amax) amax = fabsf(w[c]);
            }
            float scale, m = 0.0f;
            if (asym) {
                m = hvq_host_round_f16(ctx, lo);
                scale = hvq_host_round_f16(ctx, (hi - m) / 15.0f);
            } else {
                scale = hvq_host_round_f16(ctx, amax / 7.0f);
            }
            if (!isfinite(scale) || !isfinite(m))
                return H->error(ctx, HVQ_E_INPUT,
                                "tensor '%s': row %llu: values up to %g exceed the fp16 "
                                "range of the scales",
                                in->tensor_name, (unsigned long long)r, (double)amax);
            H->convert(ctx, HVQ_DTYPE_F16, &scales[r * ng + k], HVQ_DTYPE_F32, &scale, 1);
            if (mins)
                H->convert(ctx, HVQ_DTYPE_F16, &mins[r * ng + k], HVQ_DTYPE_F32, &m, 1);
            for (uint64_t c = c0; c < c1; c++) {
                float q = 0.0f;
                if (scale > 0.0f) {
                    q = roundf((w[c] - m) / scale);
                    float qlo = asym ? 0.0f : -7.0f, qhi = asym ? 15.0f : 7.0f;
                    q = q < qlo ? qlo : q > qhi ? qhi : q;
                }
                put_nibble(levels, r * cols + c, (unsigned)((int)q + (asym ? 0 : 8)));
                o[c] = q * scale + m;
            }
        }
    }
    char buf[32];
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)(ng == 1 ? 0 : g));
    hvq_status st = H->enc_attr(ctx, enc, "group_size", buf);
    if (st == HVQ_OK)
        st = H->enc_attr(ctx, enc, "mode", asym ? "asymmetric" : "symmetric");
    return st;
}

/* The attributes and component sizes of an encoding of a rows x cols
 * matrix (the host guarantees rows * cols fits in memory), checked without
 * reading component data: cluster_check, and the first step of decode. */
static hvq_status rtn_layout(hvq_ctx *ctx, const hvq_encoded *enc, uint64_t rows,
                             uint64_t cols, uint64_t *g_out, int *asym_out)
{
    const hvq_host *H = ctx->host;
    const char *gtext = H->enc_attr_get(enc, "group_size");
    const char *mode = H->enc_attr_get(enc, "mode");
    if (!gtext || !mode)
        return H->error(ctx, HVQ_E_INPUT, "rtn: missing attribute group_size or mode");
    char *end;
    uint64_t g = strtoull(gtext, &end, 10);
    int asym = strcmp(mode, "asymmetric") == 0;
    if (*gtext < '0' || *gtext > '9' || *end || (!asym && strcmp(mode, "symmetric") != 0))
        return H->error(ctx, HVQ_E_INPUT, "rtn: bad attributes group_size='%.40s' mode='%.40s'",
                        gtext, mode);
    uint64_t numel = rows * cols, ng = groups_per_row(cols, g);
    const hvq_component *lev = H->enc_get(enc, "levels"), *sc = H->enc_get(enc, "scales");
    const hvq_component *mn = H->enc_get(enc, "mins");
    if (!lev || !sc || (asym && !mn) || lev->nbytes != (numel + 1) / 2 ||
        sc->nbytes != 2 * rows * ng || (asym && mn->nbytes != 2 * rows * ng))
        return H->error(ctx, HVQ_E_INPUT,
                        "rtn: components missing or of the wrong size for a %llux%llu matrix",
                        (unsigned long long)rows, (unsigned long long)cols);
    *g_out = g;
    *asym_out = asym;
    return HVQ_OK;
}

static hvq_status rtn_check(hvq_ctx *ctx, const hvq_encoded *enc, uint64_t rows, uint64_t cols)
{
    uint64_t g;
    int asym;
    return rtn_layout(ctx, enc, rows, cols, &g, &asym);
}

static hvq_status rtn_decode(hvq_ctx *ctx, const hvq_encoded *enc, uint64_t rows,
                             uint64_t cols, float *recon)
{
    const hvq_host *H = ctx->host;
    uint64_t g;
    int asym;
    hvq_status st = rtn_layout(ctx, enc, rows, cols, &g, &asym);
    if (st != HVQ_OK)
        return st;
    uint64_t ng = groups_per_row(cols, g), gs = ng == 1 ? cols : g;
    const hvq_component *lev = H->enc_get(enc, "levels"), *sc = H->enc_get(enc, "scales");
    const hvq_component *mn = H->enc_get(enc, "mins");
    if (!lev->data || !sc->data || (asym && !mn->data))
        return H->error(ctx, HVQ_E_INPUT, "rtn: a component has no data");
    const uint8_t *levels = lev->data;
    for (uint64_t r = 0; r < rows; r++)
        for (uint64_t k = 0; k < ng; k++) {
            float scale, m = 0.0f;
            H->convert(ctx, HVQ_DTYPE_F32, &scale, HVQ_DTYPE_F16,
                       (const uint16_t *)sc->data + r * ng + k, 1);
            if (asym)
                H->convert(ctx, HVQ_DTYPE_F32, &m, HVQ_DTYPE_F16,
                           (const uint16_t *)mn->data + r * ng + k, 1);
            if (!(scale > 0.0f && isfinite(scale)))
                scale = 0.0f;
            uint64_t c0 = k * gs, c1 = c0 + gs < cols ? c0 + gs : cols;
            for (uint64_t c = c0; c < c1; c++) {
                int q = (int)get_nibble(levels, r * cols + c) - (asym ? 0 : 8);
                recon[r * cols + c] = scale > 0.0f ? (float)q * scale + m : m;
            }
        }
    return HVQ_OK;
}

static const hvq_plugin rtn_plugin = {
    HVQ_PLUGIN_HEADER,
    .kinds = HVQ_KIND_CLUSTERER,
    .flags = HVQ_CLUSTERER_RAW,
    .name = "rtn",
    .version = "1.0.0",
    .summary = "INT4 round-to-nearest baseline, per row or per group",
    .license = "MIT",
    .params = rtn_params,
    .cluster_encode = rtn_encode,
    .cluster_decode = rtn_decode,
    .cluster_check = rtn_check,
};

HVQ_REGISTER_PLUGIN(rtn_plugin)
