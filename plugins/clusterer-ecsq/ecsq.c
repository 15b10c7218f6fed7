/* clusterer "ecsq": entropy-coded scalar quantization.
 *
 * Works on the raw weights (HVQ_CLUSTERER_RAW). One uniform step for the
 * whole tensor, levels q = round(w / step), w_hat = q * step, the levels
 * stored with an adaptive binary range coder (ecsq_code.h). A fixed-rate
 * code spends log2(levels) bits on every weight; an entropy code spends
 * about the information of each level, and for the bell-shaped weights of
 * a model a uniform quantizer so coded is within about 0.25 bit per weight
 * of the best any scalar quantizer can do at its error (Gish and Pierce,
 * 1968); on stories260K llama.cpp's q5_0 at 5.5 bits per weight has the
 * error of this quantizer at an entropy of about 4.8 (bench/ecsq_probe.py).
 * The file is then a storage format: `hvqconv decode` turns it back into
 * weights for an inference stack.
 *
 *   bits       the entropy of the levels to aim for, bits per weight: the
 *              step is found by bisection so that the levels of plain
 *              rounding (of the tensor, or a sample of 2^16 values) have
 *              that empirical entropy; the coded size comes out within
 *              about 0.1 bit of it
 *   gptq       off | on | auto: GPTQ's error feedback through the full
 *              Hessian (common/gptq.h; on needs it, auto uses it when the
 *              hessian stage gives it), damping gptq_damp
 *   col_exponent  a > 0: column gains c_j = fp16((H_j / mean H)^a)
 *              (common/col_gains.h): the step search and the levels are
 *              those of W c, recon = (float)q * step / c_j, so column j's
 *              step is step / c_j (a = 0.5: the steps that minimise the
 *              Hessian-weighted error at a given entropy). Stored as the
 *              component "col_gains" with the attribute "col_exponent".
 *              Not combined with feedback: gptq: on refuses them, gptq:
 *              auto drops them where the hessian stage gives the full
 *              matrix (on stories260K, gains without feedback chosen by
 *              the diagonal's error gave a higher perplexity than
 *              feedback at 4.5 and 5.5 bits per weight).
 *
 * Streams: the rows are cut into runs of ECSQ_STREAM_LEVELS levels (at
 * least one row; the last run shorter), each coded as its own stream so
 * runs encode and decode on the host's threads, the bytes the same for any
 * count. Components: "step" (F32 [1]), "lengths" (U32 [streams], the
 * bytes of each stream), "streams" (U8, the streams one after the other);
 * attribute "code" = "range1" (the code of ecsq_code.h; a decoder refuses
 * any other) and, with feedback, "feedback" = "gptq". paper_bits = 8 *
 * bytes. Sparse entries (kept by a residual coder) get level 0.
 */
#include "plugin.h"

#include "col_gains.h"
#include "ecsq_code.h"
#include "ecsq_quant.h"
#include "finite.h"
#include "gptq.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ECSQ_STREAM_LEVELS (1u << 20)
#define ECSQ_CODE "range1"

enum { P_BITS, P_GPTQ, P_GPTQ_DAMP, P_COL_EXPONENT };

static const hvq_param_spec ecsq_params[] = {
    {"bits", HVQ_PARAM_FLOAT, "4", 0.5, 16, NULL,
     "entropy of the levels to aim for, bits per weight (the step is chosen for it)"},
    {"gptq", HVQ_PARAM_CHOICE, "off", 0, 0, hvq_gptq_modes,
     "error feedback with the full Hessian (GPTQ): off, on (the hessian stage must give a "
     "full matrix, e.g. calibrate with full: true), auto (when it does)"},
    {"gptq_damp", HVQ_PARAM_FLOAT, "0.01", 1e-6, 10, NULL,
     "GPTQ's damping: this times the mean of diag(H) added to the diagonal"},
    {"col_exponent", HVQ_PARAM_FLOAT, "0", 0, 2, NULL,
     "column gains (H_j / mean H)^a: column j's step divided by its gain (0.5: the steps "
     "that minimise the Hessian-weighted error); 0 = one step for all"},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

/* Rows per stream for rows of cols levels. */
static uint64_t stream_rows(uint64_t cols)
{
    uint64_t r = cols ? ECSQ_STREAM_LEVELS / cols : 1;
    return r ? r : 1;
}

/* One stream's work: encode quantizes and codes its rows, decode decodes
 * them, each with the levels of its own rows only. Workers make no host
 * calls; each stream notes its own failure. */
typedef struct ecsq_job {
    const hvq_cluster_input *in; /* encode */
    const float *x;              /* encode: the values to quantize */
    float step;
    const double *u;             /* encode with feedback */
    uint64_t cols, per;          /* per: rows per stream */
    float *recon;
    uint8_t **bytes;             /* encode: one malloc'd stream each */
    size_t *lens;
    const uint8_t *data;         /* decode: the streams */
    const uint64_t *offs;        /* decode: each stream's offset */
    int *fail;                   /* per stream: 1 out of memory, 2 corrupt */
} ecsq_job;

static void encode_stream(void *arg, uint64_t s, uint64_t r0, uint64_t r1)
{
    const ecsq_job *j = arg;
    uint64_t cols = j->cols;
    int sparse = j->u && j->in->sparse_pos && j->in->n_sparse;
    float *w = malloc((size_t)cols * sizeof *w);
    int32_t *q = malloc((size_t)((r1 - r0) * cols) * sizeof *q + 1);
    unsigned char *skip = sparse ? malloc((size_t)cols) : NULL;
    j->fail[s] = !w || !q || (sparse && !skip);
    if (!j->fail[s]) {
        ecsq_quant_rows(j->x, r0, r1, cols, j->step, j->u, j->in->sparse_pos,
                        j->in->n_sparse, skip, w, q, j->recon);
        j->fail[s] = ecsq_encode(q, r1 - r0, cols, &j->bytes[s], &j->lens[s]) != 0;
    }
    free(w);
    free(q);
    free(skip);
}

static void decode_stream(void *arg, uint64_t s, uint64_t r0, uint64_t r1)
{
    const ecsq_job *j = arg;
    int rc = hvq_ecsq_decode_f32(j->data + j->offs[s], (size_t)(j->offs[s + 1] - j->offs[s]),
                                 (r1 - r0) * j->cols, j->step, j->recon + r0 * j->cols);
    j->fail[s] = rc == -2 ? 1 : rc != 0 ? 2 : 0;
}

/* Stores the coded streams of j (n of them) as "lengths" and "streams". */
static hvq_status store_streams(hvq_ctx *ctx, hvq_encoded *enc, const ecsq_job *j, uint64_t n)
{
    const hvq_host *H = ctx->host;
    uint64_t total = 0;
    for (uint64_t s = 0; s < n; s++) {
        if (j->lens[s] > UINT32_MAX)
            return H->error(ctx, HVQ_E_INPUT, "tensor '%s': stream %llu exceeds 4 GiB",
                            j->in->tensor_name, (unsigned long long)s);
        total += j->lens[s];
    }
    int64_t lshape[1] = {(int64_t)n}, sshape[1] = {(int64_t)total};
    hvq_component *lc = H->enc_add(ctx, enc, "lengths", HVQ_DTYPE_U32, 1, lshape, 32 * n);
    hvq_component *sc = lc ? H->enc_add(ctx, enc, "streams", HVQ_DTYPE_U8, 1, sshape, 8 * total)
                           : NULL;
    if (!sc)
        return H->status(ctx);
    uint8_t *p = sc->data;
    for (uint64_t s = 0; s < n; s++) {
        uint32_t len = (uint32_t)j->lens[s];
        for (int b = 0; b < 4; b++) /* little-endian, as every component */
            ((uint8_t *)lc->data)[4 * s + b] = (uint8_t)(len >> (8 * b));
        if (len)
            memcpy(p, j->bytes[s], len);
        p += len;
    }
    return HVQ_OK;
}

/* Quantizes and codes every stream of j on the ctx's threads, then stores
 * them. */
static hvq_status encode_streams(hvq_ctx *ctx, hvq_encoded *enc, ecsq_job *j)
{
    const hvq_host *H = ctx->host;
    uint64_t rows = j->in->rows, n = hvq_parallel_chunks(rows, j->per);
    j->bytes = calloc((size_t)(n ? n : 1), sizeof *j->bytes);
    j->lens = calloc((size_t)(n ? n : 1), sizeof *j->lens);
    j->fail = calloc((size_t)(n ? n : 1), sizeof *j->fail);
    hvq_status st = j->bytes && j->lens && j->fail
                        ? HVQ_OK
                        : H->error(ctx, HVQ_E_NOMEM, "ecsq: out of memory");
    if (st == HVQ_OK) {
        hvq_host_parallel_for(ctx, rows, j->per, encode_stream, j);
        for (uint64_t s = 0; s < n && st == HVQ_OK; s++)
            if (j->fail[s])
                st = H->error(ctx, HVQ_E_NOMEM, "ecsq: out of memory");
    }
    if (st == HVQ_OK)
        st = store_streams(ctx, enc, j, n);
    for (uint64_t s = 0; j->bytes && s < n; s++)
        free(j->bytes[s]);
    free(j->bytes);
    free(j->lens);
    free(j->fail);
    return st;
}

/* With column gains (col_exponent a > 0): the gains c, and the scaled
 * weights x c the step is found for and quantized (*xs, malloc'd). */
static hvq_status scale_columns(hvq_ctx *ctx, const hvq_cluster_input *in, double a, float **cg,
                                float **xs)
{
    uint64_t rows = in->rows, cols = in->cols;
    *cg = malloc((size_t)cols * sizeof **cg + 1);
    *xs = malloc((size_t)(rows * cols) * sizeof **xs + 1);
    if (!*cg || !*xs)
        return ctx->host->error(ctx, HVQ_E_NOMEM, "ecsq: out of memory");
    hvq_col_gains(ctx, in->hessian, cols, a, *cg);
    for (uint64_t i = 0; i < rows * cols; i++)
        (*xs)[i] = in->x[i] * (*cg)[i % cols];
    uint64_t bad = hvq_first_nonfinite(*xs, rows * cols);
    if (bad < rows * cols)
        return ctx->host->error(ctx, HVQ_E_INPUT,
                                "tensor '%s': value %llu times its column gain is beyond what a "
                                "float holds",
                                in->tensor_name, (unsigned long long)bad);
    return HVQ_OK;
}

/* recon[r][c] /= cg[c]: the decoder's last step too. */
static void unscale_columns(float *recon, uint64_t rows, uint64_t cols, const float *cg)
{
    for (uint64_t i = 0; i < rows * cols; i++)
        recon[i] = recon[i] / cg[i % cols];
}

/* The step for the values x, stored as the component "step". */
static hvq_status choose_step(hvq_ctx *ctx, const hvq_cluster_input *in, const float *x,
                              double bits, hvq_encoded *enc, float *step)
{
    const hvq_host *H = ctx->host;
    *step = ecsq_step_for_bits(x, in->rows * in->cols, bits);
    if (*step < 0.0f)
        return H->error(ctx, HVQ_E_NOMEM, "ecsq: out of memory");
    if (!isfinite(*step) || *step <= 0.0f)
        return H->error(ctx, HVQ_E_INPUT, "tensor '%s': no step of a float fits its values",
                        in->tensor_name);
    int64_t one[1] = {1};
    hvq_component *sc = H->enc_add(ctx, enc, "step", HVQ_DTYPE_F32, 1, one, 32);
    if (!sc)
        return H->status(ctx);
    memcpy(sc->data, step, sizeof *step);
    return HVQ_OK;
}

static hvq_status ecsq_encode_tensor(hvq_ctx *ctx, const hvq_params *params,
                                     const hvq_cluster_input *in, float *recon, hvq_encoded *enc)
{
    const hvq_host *H = ctx->host;
    uint64_t numel = in->rows * in->cols, bad = hvq_first_nonfinite(in->x, numel);
    if (bad < numel)
        return H->error(ctx, HVQ_E_INPUT, "tensor '%s': value %llu is not finite",
                        in->tensor_name, (unsigned long long)bad);
    double a = params->values[P_COL_EXPONENT].f, *u = NULL;
    hvq_status st = hvq_gptq_prepare(ctx, in, params->values[P_GPTQ].s,
                                     params->values[P_GPTQ_DAMP].f, &u);
    if (st == HVQ_OK && u && a > 0.0 && strcmp(params->values[P_GPTQ].s, "on") == 0)
        st = H->error(ctx, HVQ_E_INPUT,
                      "tensor '%s': gptq: on and col_exponent cannot be combined; set one of "
                      "them off (gptq: auto drops the gains where it has the full Hessian)",
                      in->tensor_name);
    if (u)
        a = 0.0; /* gptq: auto with the full Hessian: feedback instead of gains */
    float *cg = NULL, *xs = NULL;
    if (st == HVQ_OK && a > 0.0)
        st = scale_columns(ctx, in, a, &cg, &xs);
    ecsq_job j = {.in = in, .x = xs ? xs : in->x, .u = u, .cols = in->cols,
                  .per = stream_rows(in->cols), .recon = recon};
    if (st == HVQ_OK)
        st = choose_step(ctx, in, j.x, params->values[P_BITS].f, enc, &j.step);
    if (st == HVQ_OK)
        st = encode_streams(ctx, enc, &j);
    if (st == HVQ_OK && cg) {
        unscale_columns(recon, in->rows, in->cols, cg);
        st = hvq_col_gains_store(ctx, enc, cg, in->cols, params->values[P_COL_EXPONENT].s);
    }
    if (st == HVQ_OK && (bad = hvq_first_nonfinite(recon, numel)) < numel)
        st = H->error(ctx, HVQ_E_INPUT,
                      "tensor '%s': value %llu is beyond what a float holds once quantized",
                      in->tensor_name, (unsigned long long)bad);
    free(u);
    free(cg);
    free(xs);
    if (st == HVQ_OK)
        st = H->enc_attr(ctx, enc, "code", ECSQ_CODE);
    if (st == HVQ_OK && j.u)
        st = H->enc_attr(ctx, enc, "feedback", "gptq");
    return st;
}

/* The components of an encoding of a rows x cols matrix, checked without
 * reading their data; *n the number of streams. */
static hvq_status ecsq_layout(hvq_ctx *ctx, const hvq_encoded *enc, uint64_t rows, uint64_t cols,
                              uint64_t *n)
{
    const hvq_host *H = ctx->host;
    const char *code = H->enc_attr_get(enc, "code");
    if (!code || strcmp(code, ECSQ_CODE) != 0)
        return H->error(ctx, HVQ_E_INPUT,
                        "ecsq: attribute code '%.40s' is not %s (written by a newer hvqconv?)",
                        code ? code : "(missing)", ECSQ_CODE);
    *n = hvq_parallel_chunks(rows, stream_rows(cols));
    const hvq_component *sc = H->enc_get(enc, "step"), *lc = H->enc_get(enc, "lengths");
    const hvq_component *st = H->enc_get(enc, "streams");
    if (!sc || sc->dtype != HVQ_DTYPE_F32 || sc->nbytes != 4 || !lc ||
        lc->dtype != HVQ_DTYPE_U32 || lc->nbytes != 4 * *n || !st || st->dtype != HVQ_DTYPE_U8)
        return H->error(ctx, HVQ_E_INPUT,
                        "ecsq: components step, lengths or streams missing or of the wrong "
                        "size for a %llux%llu matrix",
                        (unsigned long long)rows, (unsigned long long)cols);
    return HVQ_OK;
}

static hvq_status ecsq_check(hvq_ctx *ctx, const hvq_encoded *enc, uint64_t rows, uint64_t cols)
{
    uint64_t n;
    float *cg;
    hvq_status st = ecsq_layout(ctx, enc, rows, cols, &n);
    return st == HVQ_OK ? hvq_col_gains_load(ctx, enc, cols, "ecsq", 1, &cg) : st;
}

/* offs[0..n] from the stored lengths; -1 when they do not add up to the
 * streams' bytes. */
static int stream_offsets(const hvq_component *lc, const hvq_component *sc, uint64_t n,
                          uint64_t *offs)
{
    offs[0] = 0;
    for (uint64_t s = 0; s < n; s++) {
        const uint8_t *b = (const uint8_t *)lc->data + 4 * s;
        offs[s + 1] = offs[s] + ((uint64_t)b[0] | (uint64_t)b[1] << 8 | (uint64_t)b[2] << 16 |
                                 (uint64_t)b[3] << 24);
    }
    return offs[n] == sc->nbytes ? 0 : -1;
}

static hvq_status ecsq_decode_tensor(hvq_ctx *ctx, const hvq_encoded *enc, uint64_t rows,
                                     uint64_t cols, float *recon)
{
    const hvq_host *H = ctx->host;
    uint64_t n;
    hvq_status st = ecsq_layout(ctx, enc, rows, cols, &n);
    if (st != HVQ_OK)
        return st;
    const hvq_component *sc = H->enc_get(enc, "step"), *lc = H->enc_get(enc, "lengths");
    const hvq_component *bc = H->enc_get(enc, "streams");
    if (!sc->data || (n && !lc->data) || (bc->nbytes && !bc->data))
        return H->error(ctx, HVQ_E_INPUT, "ecsq: a component has no data");
    ecsq_job j = {.cols = cols, .per = stream_rows(cols), .recon = recon, .data = bc->data};
    memcpy(&j.step, sc->data, sizeof j.step);
    if (!isfinite(j.step) || j.step <= 0.0f)
        return H->error(ctx, HVQ_E_INPUT, "ecsq: the step %g is not a positive number",
                        (double)j.step);
    float *cg;
    if ((st = hvq_col_gains_load(ctx, enc, cols, "ecsq", 0, &cg)) != HVQ_OK)
        return st;
    uint64_t *offs = malloc((size_t)(n + 1) * sizeof *offs);
    j.fail = calloc((size_t)(n ? n : 1), sizeof *j.fail);
    if (!offs || !j.fail)
        st = H->error(ctx, HVQ_E_NOMEM, "ecsq: out of memory");
    else if (stream_offsets(lc, bc, n, offs) != 0)
        st = H->error(ctx, HVQ_E_INPUT, "ecsq: the stream lengths do not add up to %llu bytes",
                      (unsigned long long)bc->nbytes);
    if (st == HVQ_OK) {
        j.offs = offs;
        hvq_host_parallel_for(ctx, rows, j.per, decode_stream, &j);
        for (uint64_t s = 0; s < n && st == HVQ_OK; s++)
            if (j.fail[s])
                st = j.fail[s] == 1 ? H->error(ctx, HVQ_E_NOMEM, "ecsq: out of memory")
                                    : H->error(ctx, HVQ_E_INPUT,
                                               "ecsq: stream %llu of %llu is corrupt",
                                               (unsigned long long)s, (unsigned long long)n);
    }
    if (st == HVQ_OK && cg)
        unscale_columns(recon, rows, cols, cg);
    uint64_t bad = st == HVQ_OK ? hvq_first_nonfinite(recon, rows * cols) : 0;
    if (st == HVQ_OK && bad < rows * cols)
        st = H->error(ctx, HVQ_E_INPUT, "ecsq: decoded value %llu is beyond what a float holds",
                      (unsigned long long)bad);
    free(cg);
    free(offs);
    free(j.fail);
    return st;
}

static const hvq_plugin ecsq_plugin = {
    HVQ_PLUGIN_HEADER,
    .kinds = HVQ_KIND_CLUSTERER,
    .flags = HVQ_CLUSTERER_RAW,
    .name = "ecsq",
    .version = "1.0.0",
    .summary = "entropy-coded scalar quantization: one uniform step per tensor, range-coded "
               "levels, optional GPTQ feedback or column gains",
    .license = "MIT",
    .params = ecsq_params,
    .cluster_encode = ecsq_encode_tensor,
    .cluster_decode = ecsq_decode_tensor,
    .cluster_check = ecsq_check,
};

HVQ_REGISTER_PLUGIN(ecsq_plugin)
