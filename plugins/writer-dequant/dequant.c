/* writer "dequant": writes the reconstructed model, W_hat for every
 * compressed tensor and every other tensor byte for byte, through any sink
 * (safetensors, ...), so the result loads wherever the original loaded.
 *
 * dtype a llama.cpp block type (q8_0, q4_0, ..., q4_K; GGUF output only):
 * the compressed tensors are written as ggml blocks of that type, so
 * llama.cpp runs the file at its compressed size. dtype native: each
 * tensor the ggml clusterer encodes in the clusterer's type for it (asked
 * of the host at open: host->writer_stage_param, overrides applied), the
 * others in their source type, as with same. A tensor the ggml clusterer
 * encoded as exactly its declared type (no column gains, no residual) is
 * written as its blocks, byte for byte; any other is quantized from its
 * reconstruction with the same quantizers (ggml's reference, without
 * importance weights). Rows that fit no block fall back as llama-quantize
 * does (ggml_native.h), with one warning; general.file_type is set to the
 * type that holds the most parameters. */
#include "plugin.h"
#include "ggml_native.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum { P_DTYPE, P_FORMAT, P_MAX_SHARD, P_SINK_OPTIONS };

enum { MAX_SINK_OPTIONS = 16 };

static const char *const dtype_choices[] = {"same", "f32",  "f16",  "bf16", "native",
                                            "q4_0", "q4_1", "q5_0", "q5_1", "q8_0",
                                            "iq4_nl", "q2_K", "q3_K", "q4_K", "q5_K",
                                            "q6_K", "iq4_xs", NULL};

static const hvq_param_spec dequant_params[] = {
    {"dtype", HVQ_PARAM_CHOICE, "same", 0, 0, dtype_choices,
     "element type of reconstructed tensors; same = the source tensor's; a llama.cpp "
     "block type (q8_0, q4_0, q4_K, ...) writes ggml blocks (GGUF output only); native = "
     "the ggml clusterer's own type for the tensors it encodes (GGUF only), same for others"},
    {"format", HVQ_PARAM_STRING, "", 0, 0, NULL,
     "output format (a sink plugin name); empty = from the output's extension"},
    {"max_shard_size", HVQ_PARAM_SIZE, "0", 0, 0, NULL,
     "split the output into shards of at most this many bytes (500MB, 5GB), passed to the "
     "sink as its max_shard_size option (safetensors: Hugging Face shards and index); "
     "0 = one file"},
    {"sink_options", HVQ_PARAM_STRING, "", 0, 0, NULL,
     "further options for the output format, comma-separated key=value (e.g. "
     "\"compress=true\" for npz); checked against the format's declared parameters"},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

typedef struct dequant_state {
    hvq_sink_handle *sink;
    hvq_tensor_info *infos; /* what the sink was told, per tensor */
    size_t n, next;
    void *buf;              /* conversion buffer */
    size_t buf_len;
    /* dtype a ggml type, or native: */
    int ggml_out;                /* the output is GGUF blocks */
    const hvq_ggml_type **types; /* per tensor, after fallback (NULL: F16) */
    unsigned char *as_ggml;      /* per tensor: written by types[i] */
    const hvq_ggml_type *main;   /* the type of the most parameters */
    hvq_ggml_meta meta;          /* the metadata with general.file_type */
    size_t n_blocks, n_quantized; /* written as the clusterer's blocks, or not */
} dequant_state;

static hvq_dtype out_dtype(const char *choice, hvq_dtype src)
{
    if (strcmp(choice, "f32") == 0) return HVQ_DTYPE_F32;
    if (strcmp(choice, "f16") == 0) return HVQ_DTYPE_F16;
    if (strcmp(choice, "bf16") == 0) return HVQ_DTYPE_BF16;
    if (src == HVQ_DTYPE_F16 || src == HVQ_DTYPE_BF16 || src == HVQ_DTYPE_F32)
        return src;
    return HVQ_DTYPE_F32; /* F64 sources come back as F32 */
}

static void dequant_close(hvq_ctx *ctx, void *state);

/* The ggml type tensor i is written in: dtype's, or with native the ggml
 * clusterer's type for it (NULL: not encoded by it, or no such host). */
static const hvq_ggml_type *target(hvq_ctx *ctx, const char *dtype,
                                   const hvq_writer_setup *setup, size_t i)
{
    if (strcmp(dtype, "native") != 0)
        return hvq_ggml_type_find(dtype);
    const hvq_host *H = ctx->host;
    if (!HVQ_HOST_HAS(H, writer_stage_param))
        return NULL;
    const char *pl = H->writer_stage_param(ctx, setup, i, "clusterer", NULL);
    if (!pl || strcmp(pl, "ggml") != 0)
        return NULL;
    const char *type = H->writer_stage_param(ctx, setup, i, "clusterer", "type");
    return type ? hvq_ggml_type_find(type) : NULL;
}

/* What the sink is told of every tensor: compressed ones as ggml blocks of
 * their target (after fallback, with one warning), or in the output
 * dtype; s->main, the target of the most parameters. */
static hvq_status declare(hvq_ctx *ctx, dequant_state *s, const char *dtype,
                          const hvq_writer_setup *setup)
{
    const hvq_host *H = ctx->host;
    hvq_ggml_fallbacks fb = {0};
    hvq_ggml_mix mix = {{NULL}, {0}};
    if (!(s->types = H->calloc(ctx, s->n ? s->n : 1, sizeof *s->types)) ||
        !(s->as_ggml = H->calloc(ctx, s->n ? s->n : 1, 1)))
        return HVQ_E_NOMEM;
    for (size_t i = 0; i < s->n; i++) {
        hvq_tensor_info *o = &s->infos[i];
        *o = setup->tensors[i];
        const hvq_ggml_type *t = setup->compressed[i] ? target(ctx, dtype, setup, i) : NULL;
        if (t) {
            s->as_ggml[i] = 1;
            s->types[i] = hvq_ggml_declare(o, t);
            hvq_ggml_fallback_note(&fb, o->name, o->ndim ? o->shape[o->ndim - 1] : 1, t,
                                   s->types[i]);
            hvq_ggml_mix_add(&mix, t, hvq_numel(o));
        } else if (setup->compressed[i]) {
            hvq_dtype dt = out_dtype(dtype, setup->tensors[i].dtype);
            o->dtype = dt;
            o->dtype_name = H->dtype_name(dt);
            o->nbytes = hvq_numel(o) * H->dtype_size(dt);
        }
    }
    s->main = hvq_ggml_mix_main(&mix);
    hvq_ggml_fallback_warn(ctx, &fb, setup->output_path);
    return HVQ_OK;
}

/* The sink's options: max_shard_size when set (so sinks without such an
 * option still work unsharded; one that lacks it when it is set is
 * reported by the host), then sink_options "a=1, b=2" split in place in
 * extra (the host validates them). */
static hvq_status sink_options(hvq_ctx *ctx, const hvq_params *params, char *shard_opt,
                               size_t shard_len, char *extra, const char **options)
{
    size_t n_opt = 0;
    if (params->values[P_MAX_SHARD].i > 0) {
        snprintf(shard_opt, shard_len, "max_shard_size=%lld",
                 (long long)params->values[P_MAX_SHARD].i);
        options[n_opt++] = shard_opt;
    }
    for (char *tok = extra; tok && *tok;) {
        char *comma = strchr(tok, ',');
        if (comma)
            *comma = '\0';
        while (*tok == ' ')
            tok++;
        size_t len = strlen(tok);
        while (len > 0 && tok[len - 1] == ' ')
            tok[--len] = '\0';
        if (*tok) {
            if (n_opt == MAX_SINK_OPTIONS)
                return ctx->host->error(ctx, HVQ_E_INPUT, "dequant: more than %d sink_options",
                                        MAX_SINK_OPTIONS);
            options[n_opt++] = tok;
        }
        tok = comma ? comma + 1 : NULL;
    }
    return HVQ_OK;
}

/* A ggml dtype needs a GGUF output: format gguf, or a .gguf path. */
static hvq_status check_gguf(hvq_ctx *ctx, const char *dtype, const char *fmt, const char *path)
{
    size_t n = strlen(path);
    int gguf = fmt[0] ? strcmp(fmt, "gguf") == 0 : n >= 5 && strcasecmp(path + n - 5, ".gguf") == 0;
    if (gguf)
        return HVQ_OK;
    return ctx->host->error(ctx, HVQ_E_INPUT,
                            "%s: writer dequant: dtype %s writes llama.cpp blocks, which only "
                            "GGUF stores; write a .gguf file (or set format: gguf), or choose "
                            "f32, f16 or bf16",
                            path, dtype);
}

static hvq_status dequant_open(hvq_ctx *ctx, const hvq_params *params,
                               const hvq_writer_setup *setup, void **state)
{
    const hvq_host *H = ctx->host;
    const char *dtype = params->values[P_DTYPE].s, *fmt = params->values[P_FORMAT].s;
    dequant_state *s = H->calloc(ctx, 1, sizeof *s);
    if (!s)
        return HVQ_E_NOMEM;
    *state = s; /* the host closes it, also after a failure */
    s->n = setup->n_tensors;
    s->ggml_out = hvq_ggml_type_find(dtype) || strcmp(dtype, "native") == 0;
    hvq_status st = s->ggml_out ? check_gguf(ctx, dtype, fmt, setup->output_path) : HVQ_OK;
    if (st != HVQ_OK)
        return st;
    if (!(s->infos = H->calloc(ctx, s->n ? s->n : 1, sizeof *s->infos)))
        return HVQ_E_NOMEM;
    if ((st = declare(ctx, s, dtype, setup)) != HVQ_OK)
        return st;
    const hvq_meta *meta = setup->source_meta;
    size_t n_meta = setup->n_source_meta;
    if (s->main) {
        if (!hvq_ggml_meta_init(&s->meta, meta, n_meta, s->main))
            return H->error(ctx, HVQ_E_NOMEM, "dequant: out of memory");
        meta = s->meta.meta;
        n_meta = s->meta.n;
    }
    char shard_opt[64];
    const char *options[MAX_SINK_OPTIONS + 2] = {NULL};
    char *extra = H->strdup(ctx, params->values[P_SINK_OPTIONS].s);
    if (!extra)
        return HVQ_E_NOMEM;
    st = sink_options(ctx, params, shard_opt, sizeof shard_opt, extra, options);
    if (st == HVQ_OK)
        s->sink = H->sink_open_params(ctx, fmt[0] ? fmt : NULL, setup->output_path, options,
                                      meta, n_meta, s->infos, s->n);
    H->free(extra);
    if (st == HVQ_OK && !s->sink) {
        st = H->status(ctx);
        st = st != HVQ_OK ? st : HVQ_E_INPUT; /* the sink set the message */
    }
    return st;
}

/* The clusterer's own blocks of r, when they are exactly what tensor i is
 * declared as: the ggml clusterer's type ft, no column gains, no residual
 * correction on top. NULL otherwise. */
static const void *own_blocks(hvq_ctx *ctx, const hvq_result *r, const hvq_ggml_type *ft,
                              uint64_t nbytes)
{
    const hvq_host *H = ctx->host;
    if (!ft || !r->clusterer || strcmp(r->clusterer, "ggml") != 0 || !r->cluster_enc ||
        (r->residual_enc && r->residual_enc->n_components > 0))
        return NULL;
    const char *type = H->enc_attr_get(r->cluster_enc, "type");
    const hvq_component *c = H->enc_get(r->cluster_enc, "blocks");
    if (!type || strcmp(type, ft->name) != 0 || !c || c->nbytes != nbytes || !c->data ||
        H->enc_get(r->cluster_enc, "col_gains"))
        return NULL;
    return c->data;
}

static hvq_status dequant_tensor(hvq_ctx *ctx, void *state, const hvq_result *r)
{
    const hvq_host *H = ctx->host;
    dequant_state *s = state;
    if (s->next >= s->n)
        return H->error(ctx, HVQ_E_INTERNAL, "dequant: more tensors than declared");
    size_t i = s->next++;
    const hvq_tensor_info *info = &s->infos[i];
    if (!r->compressed)
        return H->sink_write(ctx, s->sink, &r->original);
    hvq_tensor t;
    t.info = *info;
    if (s->as_ggml[i] && (t.data = own_blocks(ctx, r, s->types[i], info->nbytes)) != NULL) {
        s->n_blocks++;
        return H->sink_write(ctx, s->sink, &t);
    }
    size_t need = (size_t)info->nbytes;
    if (need > s->buf_len) {
        void *b = H->realloc(ctx, s->buf, need);
        if (!b)
            return HVQ_E_NOMEM;
        s->buf = b;
        s->buf_len = need;
    }
    hvq_status st;
    if (s->as_ggml[i]) {
        st = hvq_ggml_quantize(ctx, info, s->types[i], r->recon, s->buf);
        s->n_quantized++;
    } else {
        st = H->convert(ctx, info->dtype, s->buf, HVQ_DTYPE_F32, r->recon,
                        (size_t)(r->rows * r->cols));
    }
    if (st != HVQ_OK)
        return st;
    t.data = s->buf;
    return H->sink_write(ctx, s->sink, &t);
}

static hvq_status dequant_finish(hvq_ctx *ctx, void *state)
{
    dequant_state *s = state;
    if (s->main)
        ctx->host->log(ctx, HVQ_LOG_INFO,
                       "dequant: %zu tensors written as the ggml clusterer's blocks, %zu "
                       "quantized from their reconstruction (mostly %s)",
                       s->n_blocks, s->n_quantized, s->main->ggml);
    return ctx->host->sink_finish(ctx, s->sink);
}

static void dequant_close(hvq_ctx *ctx, void *state)
{
    dequant_state *s = state;
    if (!s)
        return;
    if (s->sink)
        ctx->host->sink_close(ctx, s->sink);
    ctx->host->free(s->infos);
    ctx->host->free(s->types);
    ctx->host->free(s->as_ggml);
    hvq_ggml_meta_free(&s->meta);
    ctx->host->free(s->buf);
    ctx->host->free(s);
}

/* writer_keeps: into GGUF, dtype native writes every compressed tensor as
 * its blocks, byte for byte, when every clusterer the pipeline may use is
 * ggml without column gains and no residual correction is added on top. */
static const char *const *dequant_keeps(hvq_ctx *ctx, const char *format,
                                        const char *(*config)(void *ud, const char *stage,
                                                              size_t k, const char *key),
                                        void *ud)
{
    static const char *const native[] = {"dtype=native", NULL};
    (void)ctx;
    if (strcmp(format, "gguf") != 0)
        return NULL;
    const char *pl;
    for (size_t k = 0; (pl = config(ud, "clusterer", k, NULL)); k++) {
        const char *a = config(ud, "clusterer", k, "col_exponent");
        if (strcmp(pl, "ggml") != 0 || (a && strtod(a, NULL) != 0.0))
            return NULL;
    }
    for (size_t k = 0; (pl = config(ud, "residual", k, NULL)); k++)
        if (strcmp(pl, "none") != 0)
            return NULL;
    return native;
}

static const hvq_plugin dequant_plugin = {
    HVQ_PLUGIN_HEADER,
    .kinds = HVQ_KIND_WRITER,
    .name = "dequant",
    .version = "1.0.0",
    .summary = "write the reconstructed model (F16/BF16/F32, or llama.cpp blocks into GGUF) "
               "through any sink format",
    .license = "MIT",
    .params = dequant_params,
    .writer_open = dequant_open,
    .writer_tensor = dequant_tensor,
    .writer_finish = dequant_finish,
    .writer_close = dequant_close,
    .writer_keeps = dequant_keeps,
};

HVQ_REGISTER_PLUGIN(dequant_plugin)
