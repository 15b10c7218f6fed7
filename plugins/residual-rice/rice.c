/* residual "rice": coo16's sparse residual with compact positions. Keeps
 * the same floor(sparsity * numel) entries as coo16 with the same fp16
 * corrections (plugins/sparse_residual.h), so swapping one for the other
 * gives a bit-identical reconstruction; the positions, instead of 32 bits
 * each, are the gaps between consecutive flat positions, Rice-coded with the
 * parameter k that makes the tensor's stream shortest (rice_code.h).
 *
 * Components: "positions" U8 [ceil(bits / 8)], the bit stream; "values"
 * F16 [count]. Attributes: "count", "k", "bits" (decimal). Accounting: the
 * stream's bits + 16 bits per entry; for random positions at density p the
 * stream is within a few hundredths of a bit of the entropy H(p) / p per
 * entry (about 7.1 bits at 2 %, 9.1 at 0.5 %).
 */
#include "plugin.h"

#include "../sparse_residual.h"
#include "rice_code.h"

#include <stdio.h>
#include <string.h>

static hvq_status set_attr(hvq_ctx *ctx, hvq_encoded *enc, const char *key, uint64_t v)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)v);
    return ctx->host->enc_attr(ctx, enc, key, buf);
}

static hvq_status rice_encode(hvq_ctx *ctx, const hvq_params *params, hvq_residual_input *in,
                              hvq_encoded *enc)
{
    const hvq_host *H = ctx->host;
    (void)params;
    uint64_t numel = in->rows * in->cols, bits, bad;
    unsigned k;
    if (!rice_plan(in->pos, in->n, numel, &k, &bits, &bad))
        return H->error(ctx, HVQ_E_INTERNAL,
                        "rice: tensor '%s': position %llu (entry %llu) not ascending or out of "
                        "range", in->tensor_name, (unsigned long long)in->pos[bad],
                        (unsigned long long)bad);
    int64_t pshape[1] = {(int64_t)(bits / 8 + (bits % 8 != 0))}, vshape[1] = {(int64_t)in->n};
    hvq_component *pc = H->enc_add(ctx, enc, "positions", HVQ_DTYPE_U8, 1, pshape, bits);
    if (!pc)
        return HVQ_E_NOMEM;
    hvq_component *vc = H->enc_add(ctx, enc, "values", HVQ_DTYPE_F16, 1, vshape, 16 * in->n);
    if (!vc)
        return HVQ_E_NOMEM;
    if (rice_write(in->pos, in->n, numel, k, pc->data, pc->nbytes) != bits)
        return H->error(ctx, HVQ_E_INTERNAL, "rice: tensor '%s': stream is not %llu bits",
                        in->tensor_name, (unsigned long long)bits);
    uint16_t *val = vc->data;
    for (uint64_t b0 = 0; b0 < in->n; b0 += FP16C_BLOCK) {
        size_t m = in->n - b0 < FP16C_BLOCK ? (size_t)(in->n - b0) : FP16C_BLOCK;
        fp16c_encode_block(ctx, in->pos + b0, in->target + b0, m, in->recon, val + b0);
    }
    hvq_status st = set_attr(ctx, enc, "count", in->n);
    if (st == HVQ_OK)
        st = set_attr(ctx, enc, "k", k);
    if (st == HVQ_OK)
        st = set_attr(ctx, enc, "bits", bits);
    return st;
}

/* A decimal attribute: digits only, no sign, no overflow. */
static hvq_status get_attr(hvq_ctx *ctx, const hvq_encoded *enc, const char *key, uint64_t *v)
{
    const char *s = ctx->host->enc_attr_get(enc, key);
    if (!s)
        return ctx->host->error(ctx, HVQ_E_INPUT, "rice: missing attribute '%s'", key);
    *v = 0;
    for (const char *c = s;; c++) {
        if (*c == 0 && c > s)
            return HVQ_OK;
        if (*c < '0' || *c > '9' || *v > (UINT64_MAX - 9) / 10)
            return ctx->host->error(ctx, HVQ_E_INPUT, "rice: attribute %s = '%s' is not a count",
                                    key, s);
        *v = *v * 10 + (uint64_t)(*c - '0');
    }
}

/* The components and attributes, checked; *rd ready to read n entries. */
static hvq_status open_stream(hvq_ctx *ctx, const hvq_encoded *enc, uint64_t numel,
                              rice_reader *rd, const uint16_t **val, uint64_t *n)
{
    const hvq_host *H = ctx->host;
    const hvq_component *pc = H->enc_get(enc, "positions"), *vc = H->enc_get(enc, "values");
    if (!pc || !vc)
        return H->error(ctx, HVQ_E_INPUT, "rice: missing positions or values");
    if (pc->dtype != HVQ_DTYPE_U8 || vc->dtype != HVQ_DTYPE_F16)
        return H->error(ctx, HVQ_E_INPUT, "rice: positions must be U8 and values F16");
    uint64_t k, bits;
    hvq_status st = get_attr(ctx, enc, "count", n);
    if (st == HVQ_OK)
        st = get_attr(ctx, enc, "k", &k);
    if (st == HVQ_OK)
        st = get_attr(ctx, enc, "bits", &bits);
    if (st != HVQ_OK)
        return st;
    if (*n > numel || vc->nbytes != 2 * *n)
        return H->error(ctx, HVQ_E_INPUT,
                        "rice: count %llu does not match %llu values or a tensor of %llu entries",
                        (unsigned long long)*n, (unsigned long long)(vc->nbytes / 2),
                        (unsigned long long)numel);
    rice_err e = rice_reader_init(rd, pc->data, pc->nbytes, bits, k > 64 ? 64 : (unsigned)k,
                                  numel, *n);
    if (e != RICE_OK)
        return H->error(ctx, HVQ_E_INPUT,
                        "rice: k %llu, %llu bits in %llu bytes for %llu entries: %s",
                        (unsigned long long)k, (unsigned long long)bits,
                        (unsigned long long)pc->nbytes, (unsigned long long)*n,
                        rice_strerror(e));
    *val = vc->data;
    return HVQ_OK;
}

static hvq_status rice_decode(hvq_ctx *ctx, const hvq_encoded *enc, uint64_t rows, uint64_t cols,
                              float *recon)
{
    rice_reader rd;
    const uint16_t *val = NULL;
    uint64_t n = 0, pos[FP16C_BLOCK];
    hvq_status st = open_stream(ctx, enc, rows * cols, &rd, &val, &n);
    for (uint64_t b0 = 0; st == HVQ_OK && b0 < n; b0 += FP16C_BLOCK) {
        size_t m = n - b0 < FP16C_BLOCK ? (size_t)(n - b0) : FP16C_BLOCK, done;
        rice_err e = rice_read(&rd, pos, m, &done);
        if (e != RICE_OK)
            return ctx->host->error(ctx, HVQ_E_INPUT, "rice: entry %llu of %llu: %s",
                                    (unsigned long long)(b0 + done), (unsigned long long)n,
                                    rice_strerror(e));
        st = fp16c_apply_block(ctx, "rice", pos, val + b0, m, b0, recon);
    }
    if (st == HVQ_OK && rice_reader_end(&rd) != RICE_OK)
        return ctx->host->error(ctx, HVQ_E_INPUT, "rice: %s (bit %llu of %llu)",
                                rice_strerror(RICE_TRAILING), (unsigned long long)rd.at,
                                (unsigned long long)rd.bits);
    return st;
}

static const hvq_plugin rice_plugin = {
    HVQ_PLUGIN_HEADER,
    .kinds = HVQ_KIND_RESIDUAL,
    .name = "rice",
    .version = "1.0.0",
    .summary = "sparse residual with Rice-coded position gaps + fp16 values (coo16's entries)",
    .license = "MIT",
    .params = sparse_params,
    .residual_count = sparse_count,
    .residual_encode = rice_encode,
    .residual_decode = rice_decode,
};

HVQ_REGISTER_PLUGIN(rice_plugin)
