/* clusterer "sign": 1-bit quantization with a per-row scale.
 *
 * An example of an out-of-tree hvqconv plugin: it includes the public
 * header alone, links against nothing from hvqconv and gets everything it
 * needs (memory, errors, fp16 conversion, components) through ctx->host.
 *
 * The clusterer gets the normalized body x (each row divided by its
 * fp16 max-magnitude s_i; entries taken by the sparse residual are 0) and
 * keeps one bit per weight, its sign, plus one fp16 scale per row:
 *
 *     a_i = mean over the row's non-sparse entries of |x_ij|
 *     x_hat_ij = +a_i if x_ij >= 0, else -a_i
 *
 * For a fixed sign pattern, the mean magnitude is the scale that minimizes
 * the squared error of the row (as in BinaryConnect / XNOR-Net). The host
 * multiplies back by s_i, so W_hat_ij = s_i * a_i * sign(x_ij).
 *
 * Components:
 *   "signs"  U8 [ceil(rows*cols / 8)]: bit (k % 8) of byte k / 8 is 1 when
 *            flat entry k is reconstructed as +a_i; 1 bit per weight.
 *   "scales" F16 [rows]: a_i; 16 bits per row.
 *
 * Build: see the Makefile beside this file (pkg-config hvqconv-plugin). */
#include <hvqconv/plugin.h>

static float magnitude(float v) { return v < 0.0f ? -v : v; }

static hvq_status sign_encode(hvq_ctx *ctx, const hvq_params *params,
                              const hvq_cluster_input *in, float *recon, hvq_encoded *enc)
{
    const hvq_host *H = ctx->host;
    uint64_t rows = in->rows, cols = in->cols, numel = rows * cols;
    uint64_t next_sparse = 0; /* index into in->sparse_pos (sorted) */
    int64_t bshape[1], sshape[1];
    hvq_component *bits, *sc;
    uint8_t *b;
    uint16_t *scales;
    uint64_t r, c;

    (void)params; /* no parameters */
    bshape[0] = (int64_t)((numel + 7) / 8);
    sshape[0] = (int64_t)rows;
    bits = H->enc_add(ctx, enc, "signs", HVQ_DTYPE_U8, 1, bshape, numel);
    if (!bits)
        return HVQ_E_NOMEM;
    sc = H->enc_add(ctx, enc, "scales", HVQ_DTYPE_F16, 1, sshape, 16 * rows);
    if (!sc)
        return HVQ_E_NOMEM;
    b = bits->data;        /* zero-filled by enc_add */
    scales = sc->data;

    for (r = 0; r < rows; r++) {
        const float *x = in->x + r * cols;
        double sum = 0.0;
        uint64_t kept = 0;
        float a, a16;
        for (c = 0; c < cols; c++) {
            uint64_t k = r * cols + c;
            if (next_sparse < in->n_sparse && in->sparse_pos[next_sparse] == k) {
                next_sparse++; /* taken by the residual: not part of the body */
                continue;
            }
            sum += (double)magnitude(x[c]);
            kept++;
        }
        a = kept ? (float)(sum / (double)kept) : 0.0f;
        /* Store the scale as fp16 and reconstruct with the stored value, so
         * that decode gives exactly the same matrix. */
        H->convert(ctx, HVQ_DTYPE_F16, &scales[r], HVQ_DTYPE_F32, &a, 1);
        H->convert(ctx, HVQ_DTYPE_F32, &a16, HVQ_DTYPE_F16, &scales[r], 1);
        for (c = 0; c < cols; c++) {
            uint64_t k = r * cols + c;
            if (x[c] >= 0.0f) {
                b[k >> 3] = (uint8_t)(b[k >> 3] | (1u << (k & 7)));
                recon[k] = a16;
            } else {
                recon[k] = -a16;
            }
        }
    }
    return HVQ_OK;
}

/* The components' layout for a rows x cols matrix, without reading their
 * data: the optional cluster_check, which hvqconv calls when a container
 * is opened (before it allocates the decoded tensor), and the first step
 * of decode. */
static hvq_status sign_check(hvq_ctx *ctx, const hvq_encoded *enc, uint64_t rows,
                             uint64_t cols)
{
    const hvq_host *H = ctx->host;
    const hvq_component *bits = H->enc_get(enc, "signs");
    const hvq_component *sc = H->enc_get(enc, "scales");
    uint64_t numel = rows * cols; /* the host guarantees it fits in memory */

    if (!bits || !sc || bits->dtype != HVQ_DTYPE_U8 || sc->dtype != HVQ_DTYPE_F16 ||
        bits->nbytes != (numel + 7) / 8 || sc->nbytes != 2 * rows)
        return H->error(ctx, HVQ_E_INPUT,
                        "sign: components 'signs' and 'scales' missing or of the wrong "
                        "size for a %llux%llu matrix",
                        (unsigned long long)rows, (unsigned long long)cols);
    return HVQ_OK;
}

static hvq_status sign_decode(hvq_ctx *ctx, const hvq_encoded *enc, uint64_t rows,
                              uint64_t cols, float *recon)
{
    const hvq_host *H = ctx->host;
    const hvq_component *sc = H->enc_get(enc, "scales");
    uint64_t r, c;
    const uint8_t *b;
    hvq_status st = sign_check(ctx, enc, rows, cols);

    if (st != HVQ_OK)
        return st;
    b = H->enc_get(enc, "signs")->data;
    for (r = 0; r < rows; r++) {
        float a;
        H->convert(ctx, HVQ_DTYPE_F32, &a, HVQ_DTYPE_F16, (const uint16_t *)sc->data + r, 1);
        for (c = 0; c < cols; c++) {
            uint64_t k = r * cols + c;
            recon[k] = (b[k >> 3] >> (k & 7)) & 1u ? a : -a;
        }
    }
    return HVQ_OK;
}

static const hvq_plugin sign_plugin = {
    HVQ_PLUGIN_HEADER, /* ABI version and struct size */
    .kinds = HVQ_KIND_CLUSTERER,
    .name = "sign",
    .version = "1.0.0",
    .summary = "1-bit sign quantization with a per-row scale",
    .license = "MIT",
    .cluster_encode = sign_encode,
    .cluster_decode = sign_decode,
    .cluster_check = sign_check, /* optional */
};

HVQ_REGISTER_PLUGIN(sign_plugin)
