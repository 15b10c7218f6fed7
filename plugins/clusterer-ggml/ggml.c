/* clusterer "ggml": llama.cpp's block quantization, bit for bit.
 *
 * Works on the raw weights (HVQ_CLUSTERER_RAW). Blocks (32 values; 256 for
 * the K types and IQ4_XS) run along each row; the row's blocks are
 * quantized exactly as llama-quantize quantizes them (common/ggml_quants.c,
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
 * A row whose length is not a multiple of the block size takes
 * llama-quantize's fallback type (ggml_native.h: q4_K -> q5_0, q6_K ->
 * q8_0, ...; the attribute "type" then names the type used), as the dequant
 * writer declares it for GGUF; where llama-quantize would fall back to F16
 * (the types with blocks of 32, or a fallback that does not fit either)
 * the tensor is refused: exclude it in the pipeline.
 *
 * Rows are quantized (and decoded) on up to host->threads(ctx) threads, in
 * fixed chunks of rows; the bytes do not depend on the count.
 *
 * Component: "blocks" (U8, [rows, cols / block * block bytes]); attributes
 * "type" (q4_0, ...) and "weights" (none or hessian, what was used).
 * paper_bits = 8 * bytes. recon = ggml's dequantize_row_* of the blocks.
 *
 * Beyond llama.cpp, col_exponent a > 0 (default 0): activation-aware column
 * gains c_j = fp16((H_j / mean H)^a) (common/col_gains.h): the blocks are
 * those of W * c, quantized with the importance weights H_j / c_j^2 (the
 * same Hessian-weighted error), and recon = dequantized / c_j. The
 * component "col_gains" (F16 [cols]) and the attribute "col_exponent" are
 * then stored too, and the blocks alone are no longer W's.
 *
 * gptq: on (or auto, when the hessian stage gives the full matrix through
 * host->hessian_full; off, the default, is llama.cpp's bytes) quantizes
 * each row with GPTQ's error feedback (ggml_gptq.c, common/gptq.h; damping
 * gptq_damp): the same layout and decoding, the attribute "feedback" =
 * "gptq" added. For the types whose codes it can set one by one (the
 * 32-wide ones, q4_K, q5_K, q6_K): on refuses q2_K, q3_K and iq4_xs, auto
 * leaves them as llama.cpp quantizes them. Not combined with
 * col_exponent.
 */
#include "plugin.h"

#include "col_gains.h"
#include "finite.h"
#include "gptq.h"
#include "ggml_gptq.h"
#include "ggml_native.h"
#include "ggml_quants.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

enum { P_TYPE, P_WEIGHTS, P_COL_EXPONENT, P_GPTQ, P_GPTQ_DAMP };

static const char *const type_choices[] = {"q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "iq4_nl",
                                           "q2_K", "q3_K", "q4_K", "q5_K", "q6_K", "iq4_xs", NULL};
static const char *const weights_choices[] = {"auto", "none", "hessian", NULL};

static const hvq_param_spec ggml_params[] = {
    {"type", HVQ_PARAM_CHOICE, "q4_0", 0, 0, type_choices,
     "llama.cpp block type: q4_0, q4_1, q5_0, q5_1, q8_0, iq4_nl (blocks of 32 along a row), "
     "q2_K..q6_K, iq4_xs (256)"},
    {"weights", HVQ_PARAM_CHOICE, "auto", 0, 0, weights_choices,
     "importance weights: none, hessian (H as llama.cpp's imatrix), auto (hessian unless H=1)"},
    {"col_exponent", HVQ_PARAM_FLOAT, "0", 0, 2, NULL,
     "column gains (H_j / mean H)^a applied before the blocks (as AWQ; stored beside them, "
     "so the blocks alone are not llama.cpp's); 0 = none, llama.cpp's blocks"},
    {"gptq", HVQ_PARAM_CHOICE, "off", 0, 0, hvq_gptq_modes,
     "error feedback with the full Hessian (GPTQ; not q2_K, q3_K, iq4_xs): off (llama.cpp's "
     "blocks), on (the hessian stage must give a full matrix, e.g. calibrate with full: true), "
     "auto (when it does and the type allows)"},
    {"gptq_damp", HVQ_PARAM_FLOAT, "0.01", 1e-6, 10, NULL,
     "GPTQ's damping: this times the mean of diag(H) added to the diagonal"},
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

/* ---- rows on the host's threads ----------------------------------------
 * Each row's blocks depend on that row and the weights alone, so the rows
 * are cut into fixed chunks (host->parallel_for) and quantized on up to
 * host->threads(ctx) threads, the bytes the same for any count. Workers
 * make no host calls: each chunk notes its first faults, and the calling
 * thread reports the first one in row order after the join. */

#define NO_FAULT UINT64_MAX

/* The first faults of one chunk: the index of the first value that is not
 * finite, the first row whose scales overflow fp16 (NO_FAULT: none). */
typedef struct chunk_fault {
    uint64_t nonfinite, overflow;
    int nomem; /* the chunk's scratch could not be allocated */
} chunk_fault;

typedef struct row_job {
    const hvq_ggml_type *t;
    const float *x, *qw; /* encode: the weights and importance weights */
    uint8_t *blocks;     /* encode: written; decode: read */
    float *recon;
    uint64_t cols, row_bytes;
    chunk_fault *faults; /* encode: one per chunk */
    /* encode with error feedback (gptq): the factor U (cols x cols), and
     * the sparse positions to leave alone */
    const double *u;
    const uint64_t *sparse_pos;
    uint64_t n_sparse;
} row_job;

/* Error feedback's scratch for one chunk of rows; 0 when out of memory. */
static int gptq_scratch(const row_job *j, hvq_ggml_gptq_scratch *s, unsigned char **skip)
{
    s->w = malloc((size_t)j->cols * sizeof *s->w);
    s->row = malloc((size_t)j->row_bytes);
    *skip = j->n_sparse ? malloc((size_t)j->cols) : NULL;
    return s->w && s->row && (*skip || !j->n_sparse);
}

static void gptq_scratch_free(hvq_ggml_gptq_scratch *s, unsigned char *skip)
{
    free(s->w);
    free(s->row);
    free(skip);
}

/* Rows [r0, r1): a value that is not finite ends the chunk (no later value
 * can come first); after a row whose scales overflow, the rest are only
 * checked for values that are not finite (those are reported first). With
 * j->u, each row is quantized with error feedback (ggml_gptq.c). */
static void encode_rows(void *arg, uint64_t chunk, uint64_t r0, uint64_t r1)
{
    const row_job *j = arg;
    chunk_fault *f = &j->faults[chunk];
    f->nonfinite = f->overflow = NO_FAULT;
    f->nomem = 0;
    hvq_ggml_gptq_scratch gs = {NULL, NULL};
    unsigned char *skip = NULL;
    if (j->u && !gptq_scratch(j, &gs, &skip)) {
        gptq_scratch_free(&gs, skip);
        f->nomem = 1;
        return;
    }
    for (uint64_t r = r0; r < r1; r++) {
        const float *x = j->x + r * j->cols;
        float *y = j->recon + r * j->cols;
        uint64_t c = hvq_first_nonfinite(x, j->cols);
        if (c < j->cols) {
            f->nonfinite = r * j->cols + c;
            break;
        }
        if (f->overflow != NO_FAULT)
            continue;
        uint8_t *out = j->blocks + r * j->row_bytes;
        if (j->u) {
            if (skip)
                hvq_gptq_row_skip(j->sparse_pos, j->n_sparse, r, j->cols, skip);
            hvq_ggml_gptq_row(j->t, x, skip, j->qw, j->u, j->cols, &gs, out);
        } else {
            j->t->quantize_row(x, j->qw, out, (int64_t)j->cols);
        }
        j->t->dequantize_row(out, y, (int64_t)j->cols);
        if (hvq_first_nonfinite(y, j->cols) < j->cols)
            f->overflow = r;
    }
    gptq_scratch_free(&gs, skip);
}

static void decode_rows(void *arg, uint64_t chunk, uint64_t r0, uint64_t r1)
{
    const row_job *j = arg;
    (void)chunk;
    for (uint64_t r = r0; r < r1; r++)
        j->t->dequantize_row(j->blocks + r * j->row_bytes, j->recon + r * j->cols,
                             (int64_t)j->cols);
}

/* Quantizes every row into j->blocks and j->recon on the ctx's threads;
 * reports the first fault in row order: a value that is not finite before
 * any overflow, as a whole-tensor check first would. */
static hvq_status encode_all(hvq_ctx *ctx, const hvq_cluster_input *in, row_job *j)
{
    const hvq_host *H = ctx->host;
    uint64_t per = hvq_par_rows(in->cols), n = hvq_parallel_chunks(in->rows, per);
    j->faults = H->alloc(ctx, (n ? n : 1) * sizeof *j->faults);
    if (!j->faults)
        return H->status(ctx);
    hvq_host_parallel_for(ctx, in->rows, per, encode_rows, j);
    uint64_t nonfinite = NO_FAULT, overflow = NO_FAULT;
    int nomem = 0;
    for (uint64_t c = 0; c < n; c++) {
        if (nonfinite == NO_FAULT)
            nonfinite = j->faults[c].nonfinite;
        if (overflow == NO_FAULT)
            overflow = j->faults[c].overflow;
        nomem |= j->faults[c].nomem;
    }
    H->free(j->faults);
    if (nomem)
        return H->error(ctx, HVQ_E_NOMEM, "ggml: out of memory");
    if (nonfinite != NO_FAULT)
        return H->error(ctx, HVQ_E_INPUT, "tensor '%s': value %llu is not finite",
                        in->tensor_name, (unsigned long long)nonfinite);
    if (overflow != NO_FAULT)
        return H->error(ctx, HVQ_E_INPUT,
                        "tensor '%s': row %llu: values beyond the fp16 range of %s's scales",
                        in->tensor_name, (unsigned long long)overflow, j->t->name);
    return HVQ_OK;
}

/* recon[r][c] /= cg[c], for a whole matrix. */
static void unscale_columns(float *recon, uint64_t rows, uint64_t cols, const float *cg)
{
    for (uint64_t r = 0; r < rows; r++)
        for (uint64_t c = 0; c < cols; c++)
            recon[r * cols + c] = recon[r * cols + c] / cg[c];
}

/* encode_all on W * c with the weights qw / c^2, the column gains stored,
 * the reconstruction divided by c. */
static hvq_status encode_scaled(hvq_ctx *ctx, const hvq_cluster_input *in, row_job *j,
                                double a, const char *exponent, hvq_encoded *enc)
{
    uint64_t rows = in->rows, cols = in->cols;
    float *cg = malloc((size_t)cols * sizeof *cg + 1), *qw = malloc((size_t)cols * sizeof *qw + 1);
    float *xs = malloc((size_t)(rows * cols) * sizeof *xs + 1);
    hvq_status st = cg && qw && xs ? HVQ_OK
                                   : ctx->host->error(ctx, HVQ_E_NOMEM, "ggml: out of memory");
    if (st == HVQ_OK) {
        hvq_col_gains(ctx, in->hessian, cols, a, cg);
        for (uint64_t c = 0; c < cols; c++)
            qw[c] = j->qw ? j->qw[c] / (cg[c] * cg[c]) : 0.0f;
        for (uint64_t i = 0; i < rows * cols; i++)
            xs[i] = in->x[i] * cg[i % cols];
        j->x = xs;
        j->qw = j->qw ? qw : NULL;
        st = encode_all(ctx, in, j);
    }
    if (st == HVQ_OK) {
        unscale_columns(j->recon, rows, cols, cg);
        st = hvq_col_gains_store(ctx, enc, cg, cols, exponent);
    }
    free(cg);
    free(qw);
    free(xs);
    return st;
}

static hvq_status ggml_encode(hvq_ctx *ctx, const hvq_params *params,
                              const hvq_cluster_input *in, float *recon, hvq_encoded *enc)
{
    const hvq_host *H = ctx->host;
    const hvq_ggml_type *t = hvq_ggml_type_find(params->values[P_TYPE].s);
    if (!t)
        return H->error(ctx, HVQ_E_INTERNAL, "ggml: unknown type '%s'", params->values[P_TYPE].s);
    const hvq_ggml_type *ft = hvq_ggml_fallback(t, (int64_t)in->cols);
    if (!ft)
        return H->error(ctx, HVQ_E_INPUT,
                        "tensor '%s': rows of %llu columns are not a multiple of the %s block "
                        "size %d (llama-quantize stores such a tensor as F16; exclude it)",
                        in->tensor_name, (unsigned long long)in->cols, t->name, t->block);
    if (ft != t)
        H->log(ctx, HVQ_LOG_DEBUG, "tensor '%s': rows of %llu columns fit no %s block; %s, as "
               "llama-quantize falls back", in->tensor_name, (unsigned long long)in->cols,
               t->name, ft->name);
    t = ft;
    const float *qw = t->uses_weights ? choose_weights(params->values[P_WEIGHTS].s, in) : NULL;
    uint64_t row_bytes = in->cols / (uint64_t)t->block * t->block_bytes;
    int64_t shape[2] = {(int64_t)in->rows, (int64_t)row_bytes};
    hvq_component *c = H->enc_add(ctx, enc, "blocks", HVQ_DTYPE_U8, 2, shape,
                                  8 * in->rows * row_bytes);
    if (!c)
        return H->status(ctx);
    row_job j = {.t = t, .x = in->x, .qw = qw, .blocks = c->data, .recon = recon,
                 .cols = in->cols, .row_bytes = row_bytes, .sparse_pos = in->sparse_pos,
                 .n_sparse = in->sparse_pos ? in->n_sparse : 0};
    double a = params->count > P_COL_EXPONENT ? params->values[P_COL_EXPONENT].f : 0.0;
    double *u = NULL;
    const char *gptq = params->count > P_GPTQ ? params->values[P_GPTQ].s : "off";
    if (!t->requant && strcmp(gptq, "on") == 0)
        return H->error(ctx, HVQ_E_INPUT,
                        "tensor '%s': gptq works with the types whose codes it can set one "
                        "by one (q4_0, q4_1, q5_0, q5_1, q8_0, iq4_nl, q4_K, q5_K, q6_K), not "
                        "%s; use gptq: auto to apply it only where it can",
                        in->tensor_name, t->name);
    if (!t->requant)
        gptq = "off"; /* auto */
    hvq_status st = hvq_gptq_prepare(
        ctx, in, gptq, params->count > P_GPTQ_DAMP ? params->values[P_GPTQ_DAMP].f : 0.01, &u);
    if (st == HVQ_OK && u && a > 0.0)
        st = H->error(ctx, HVQ_E_INPUT,
                      "tensor '%s': gptq and col_exponent cannot be combined; set one of them "
                      "off",
                      in->tensor_name);
    j.u = u;
    if (st == HVQ_OK)
        st = a > 0.0 ? encode_scaled(ctx, in, &j, a, params->values[P_COL_EXPONENT].s, enc)
                     : encode_all(ctx, in, &j);
    free(u);
    if (st == HVQ_OK && j.u)
        st = H->enc_attr(ctx, enc, "feedback", "gptq");
    if (st == HVQ_OK)
        st = H->enc_attr(ctx, enc, "type", t->name);
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
    float *cg;
    hvq_status st = hvq_col_gains_load(ctx, enc, cols, "ggml", 1, &cg);
    if (st != HVQ_OK)
        return st;
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
    row_job j = {.t = t, .blocks = c->data, .recon = recon, .cols = cols,
                 .row_bytes = cols / (uint64_t)t->block * t->block_bytes};
    float *cg;
    if ((st = hvq_col_gains_load(ctx, enc, cols, "ggml", 0, &cg)) != HVQ_OK)
        return st;
    hvq_host_parallel_for(ctx, rows, hvq_par_rows(cols), decode_rows, &j);
    if (cg)
        unscale_columns(recon, rows, cols, cg);
    free(cg);
    return HVQ_OK;
}

static const hvq_plugin ggml_plugin = {
    HVQ_PLUGIN_HEADER,
    .kinds = HVQ_KIND_CLUSTERER,
    .flags = HVQ_CLUSTERER_RAW,
    .name = "ggml",
    .version = "1.3.0",
    .summary = "llama.cpp's Q4_0/Q4_1/Q5_0/Q5_1/Q8_0/IQ4_NL, Q2_K..Q6_K and IQ4_XS blocks, "
               "bit-exact with llama-quantize",
    .license = "MIT",
    .params = ggml_params,
    .cluster_encode = ggml_encode,
    .cluster_decode = ggml_decode,
    .cluster_check = ggml_check,
};

HVQ_REGISTER_PLUGIN(ggml_plugin)
