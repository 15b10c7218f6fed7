/* clusterer "ggml": llama.cpp's block quantization, bit for bit.
 *
 * Works on the raw weights (HVQ_CLUSTERER_RAW). Blocks (32 values; 256 for
 * the K types and IQ4_XS) run along each row; the row's blocks are
 * quantized exactly as llama-quantize quantizes them (ggml_quants.c,
 * ggml_kquants.c, ggml_iquants.c) and stored byte for byte in ggml's block
 * layout, so a writer can put them into a GGUF file as they are.
 *
 *   type     q4_0 | q4_1 | q5_0 | q5_1 | q8_0 | iq4_nl (blocks of 32);
 *            q2_K | q3_K | q4_K | q5_K | q6_K | iq4_xs (super-blocks of 256)
 *   weights  none:    llama.cpp without an importance matrix (the _ref
 *                     quantizers; IQ4_* weigh each value by x^2);
 *            hessian: in->hessian (a llama.cpp imatrix's mean x^2 per
 *                     column with the hessian stage `imatrix`) passed as
 *                     llama.cpp's quant_weights, as llama-quantize
 *                     --imatrix does (Q8_0 ignores them, as llama.cpp does);
 *            auto:    hessian, unless every H is exactly 1 (no imatrix, or
 *                     a tensor the imatrix has no entry for).
 *
 * A row whose length is not a multiple of the block size is refused
 * (llama-quantize falls back to another type for such tensors; exclude
 * them in the pipeline).
 *
 * Component: "blocks" (U8, [rows, cols / block * block bytes]); attributes
 * "type" (q4_0, ...) and "weights" (none or hessian, what was used).
 * paper_bits = 8 * bytes. recon = ggml's dequantize_row_* of the blocks.
 */
#include "plugin.h"

#include "ggml_quants.h"

#include <math.h>
#include <string.h>

enum { P_TYPE, P_WEIGHTS };

static const char *const type_choices[] = {"q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "iq4_nl",
                                           "q2_K", "q3_K", "q4_K", "q5_K", "q6_K", "iq4_xs", NULL};
static const char *const weights_choices[] = {"auto", "none", "hessian", NULL};

static const hvq_param_spec ggml_params[] = {
    {"type", HVQ_PARAM_CHOICE, "q4_0", 0, 0, type_choices,
     "llama.cpp block type: q4_0, q4_1, q5_0, q5_1, q8_0, iq4_nl (blocks of 32 along a row), "
     "q2_K..q6_K, iq4_xs (256)"},
    {"weights", HVQ_PARAM_CHOICE, "auto", 0, 0, weights_choices,
     "importance weights: none, hessian (H as llama.cpp's imatrix), auto (hessian unless H=1)"},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

/* The importance weights to quantize with: NULL for none. */
static const float *choose_weights(const char *mode, const hvq_cluster_input *in)
{
    if (strcmp(mode, "none") == 0)
        return NULL;
    if (strcmp(mode, "hessian") == 0)
        return in->hessian;
    for (uint64_t j = 0; j < in->cols; j++)
        if (in->hessian[j] != 1.0f)
            return in->hessian;
    return NULL;
}

static hvq_status ggml_encode(hvq_ctx *ctx, const hvq_params *params,
                              const hvq_cluster_input *in, float *recon, hvq_encoded *enc)
{
    const hvq_host *H = ctx->host;
    const hvq_ggml_type *t = hvq_ggml_type_find(params->values[P_TYPE].s);
    if (!t)
        return H->error(ctx, HVQ_E_INTERNAL, "ggml: unknown type '%s'", params->values[P_TYPE].s);
    if (in->cols % (uint64_t)t->block != 0)
        return H->error(ctx, HVQ_E_INPUT,
                        "tensor '%s': rows of %llu columns are not a multiple of the %s block "
                        "size %d",
                        in->tensor_name, (unsigned long long)in->cols, t->name, t->block);
    for (uint64_t i = 0; i < in->rows * in->cols; i++)
        if (!isfinite(in->x[i]))
            return H->error(ctx, HVQ_E_INPUT, "tensor '%s': value %llu is not finite",
                            in->tensor_name, (unsigned long long)i);
    const float *qw = t->uses_weights ? choose_weights(params->values[P_WEIGHTS].s, in) : NULL;
    uint64_t row_bytes = in->cols / (uint64_t)t->block * t->block_bytes;
    int64_t shape[2] = {(int64_t)in->rows, (int64_t)row_bytes};
    hvq_component *c = H->enc_add(ctx, enc, "blocks", HVQ_DTYPE_U8, 2, shape,
                                  8 * in->rows * row_bytes);
    if (!c)
        return H->status(ctx);
    uint8_t *blocks = c->data;
    for (uint64_t r = 0; r < in->rows; r++) {
        t->quantize_row(in->x + r * in->cols, qw, blocks + r * row_bytes, (int64_t)in->cols);
        t->dequantize_row(blocks + r * row_bytes, recon + r * in->cols, (int64_t)in->cols);
        for (uint64_t j = 0; j < in->cols; j++)
            if (!isfinite(recon[r * in->cols + j]))
                return H->error(ctx, HVQ_E_INPUT,
                                "tensor '%s': row %llu: values beyond the fp16 range of %s's "
                                "scales",
                                in->tensor_name, (unsigned long long)r, t->name);
    }
    hvq_status st = H->enc_attr(ctx, enc, "type", t->name);
    if (st == HVQ_OK)
        st = H->enc_attr(ctx, enc, "weights", qw ? "hessian" : "none");
    return st;
}

/* The type and the size of "blocks" for a rows x cols matrix, checked
 * without reading component data. */
static hvq_status ggml_layout(hvq_ctx *ctx, const hvq_encoded *enc, uint64_t rows, uint64_t cols,
                              const hvq_ggml_type **type)
{
    const hvq_host *H = ctx->host;
    const char *name = H->enc_attr_get(enc, "type");
    const hvq_ggml_type *t = name ? hvq_ggml_type_find(name) : NULL;
    if (!t)
        return H->error(ctx, HVQ_E_INPUT, "ggml: missing or unknown attribute type '%.40s'",
                        name ? name : "");
    if (cols % (uint64_t)t->block != 0)
        return H->error(ctx, HVQ_E_INPUT,
                        "ggml: a %llux%llu matrix does not divide into %s blocks of %d",
                        (unsigned long long)rows, (unsigned long long)cols, t->name, t->block);
    uint64_t row_bytes = cols / (uint64_t)t->block * t->block_bytes;
    const hvq_component *c = H->enc_get(enc, "blocks");
    if (!c || c->dtype != HVQ_DTYPE_U8 || (rows && row_bytes > UINT64_MAX / rows) ||
        c->nbytes != rows * row_bytes)
        return H->error(ctx, HVQ_E_INPUT,
                        "ggml: component blocks missing or of the wrong size for a %llux%llu %s "
                        "matrix",
                        (unsigned long long)rows, (unsigned long long)cols, t->name);
    *type = t;
    return HVQ_OK;
}

static hvq_status ggml_check(hvq_ctx *ctx, const hvq_encoded *enc, uint64_t rows, uint64_t cols)
{
    const hvq_ggml_type *t;
    return ggml_layout(ctx, enc, rows, cols, &t);
}

static hvq_status ggml_decode(hvq_ctx *ctx, const hvq_encoded *enc, uint64_t rows,
                              uint64_t cols, float *recon)
{
    const hvq_ggml_type *t;
    hvq_status st = ggml_layout(ctx, enc, rows, cols, &t);
    if (st != HVQ_OK)
        return st;
    const hvq_component *c = ctx->host->enc_get(enc, "blocks");
    if (!c->data && c->nbytes)
        return ctx->host->error(ctx, HVQ_E_INPUT, "ggml: component blocks has no data");
    uint64_t row_bytes = cols / (uint64_t)t->block * t->block_bytes;
    for (uint64_t r = 0; r < rows; r++)
        t->dequantize_row((const uint8_t *)c->data + r * row_bytes, recon + r * cols,
                          (int64_t)cols);
    return HVQ_OK;
}

static const hvq_plugin ggml_plugin = {
    HVQ_PLUGIN_HEADER,
    .kinds = HVQ_KIND_CLUSTERER,
    .flags = HVQ_CLUSTERER_RAW,
    .name = "ggml",
    .version = "1.1.0",
    .summary = "llama.cpp's Q4_0/Q4_1/Q5_0/Q5_1/Q8_0/IQ4_NL, Q2_K..Q6_K and IQ4_XS blocks, "
               "bit-exact with llama-quantize",
    .license = "MIT",
    .params = ggml_params,
    .cluster_encode = ggml_encode,
    .cluster_decode = ggml_decode,
    .cluster_check = ggml_check,
};

HVQ_REGISTER_PLUGIN(ggml_plugin)
