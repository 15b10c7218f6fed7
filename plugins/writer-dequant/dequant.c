/* writer "dequant": writes the reconstructed model, W_hat for every
 * compressed tensor and every other tensor byte for byte, through any sink
 * (safetensors, ...), so the result loads wherever the original loaded. */
#include "plugin.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

enum { P_DTYPE, P_FORMAT, P_MAX_SHARD, P_SINK_OPTIONS };

enum { MAX_SINK_OPTIONS = 16 };

static const char *const dtype_choices[] = {"same", "f32", "f16", "bf16", NULL};

static const hvq_param_spec dequant_params[] = {
    {"dtype", HVQ_PARAM_CHOICE, "same", 0, 0, dtype_choices,
     "element type of reconstructed tensors; same = the source tensor's"},
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

static hvq_status dequant_open(hvq_ctx *ctx, const hvq_params *params,
                               const hvq_writer_setup *setup, void **state)
{
    const hvq_host *H = ctx->host;
    dequant_state *s = H->calloc(ctx, 1, sizeof *s);
    if (!s)
        return HVQ_E_NOMEM;
    s->n = setup->n_tensors;
    s->infos = H->calloc(ctx, s->n ? s->n : 1, sizeof *s->infos);
    if (!s->infos) {
        H->free(s);
        return HVQ_E_NOMEM;
    }
    for (size_t i = 0; i < s->n; i++) {
        s->infos[i] = setup->tensors[i];
        if (setup->compressed[i]) {
            hvq_dtype dt = out_dtype(params->values[P_DTYPE].s, setup->tensors[i].dtype);
            s->infos[i].dtype = dt;
            s->infos[i].dtype_name = H->dtype_name(dt);
            s->infos[i].nbytes = hvq_numel(&s->infos[i]) * H->dtype_size(dt);
        }
    }
    const char *fmt = params->values[P_FORMAT].s;
    /* The shard size goes to the sink as an option only when set, so sinks
     * without such an option still work unsharded; one that lacks it when
     * it is set is reported by the host. */
    char shard_opt[64];
    const char *options[MAX_SINK_OPTIONS + 2] = {NULL};
    size_t n_opt = 0;
    if (params->values[P_MAX_SHARD].i > 0) {
        snprintf(shard_opt, sizeof shard_opt, "max_shard_size=%lld",
                 (long long)params->values[P_MAX_SHARD].i);
        options[n_opt++] = shard_opt;
    }
    /* sink_options: "a=1, b=2" -> "a=1", "b=2" (the host validates them) */
    char *extra = H->strdup(ctx, params->values[P_SINK_OPTIONS].s);
    if (!extra) {
        dequant_close(ctx, s);
        return HVQ_E_NOMEM;
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
            if (n_opt == MAX_SINK_OPTIONS) {
                H->free(extra);
                dequant_close(ctx, s);
                return H->error(ctx, HVQ_E_INPUT, "dequant: more than %d sink_options",
                                MAX_SINK_OPTIONS);
            }
            options[n_opt++] = tok;
        }
        tok = comma ? comma + 1 : NULL;
    }
    s->sink = H->sink_open_params(ctx, fmt[0] ? fmt : NULL, setup->output_path, options,
                                  setup->source_meta, setup->n_source_meta, s->infos, s->n);
    H->free(extra);
    if (!s->sink) {
        hvq_status st = H->status(ctx);
        dequant_close(ctx, s);
        return st != HVQ_OK ? st : HVQ_E_INPUT; /* the sink set the message */
    }
    *state = s;
    return HVQ_OK;
}

static hvq_status dequant_tensor(hvq_ctx *ctx, void *state, const hvq_result *r)
{
    const hvq_host *H = ctx->host;
    dequant_state *s = state;
    if (s->next >= s->n)
        return H->error(ctx, HVQ_E_INTERNAL, "dequant: more tensors than declared");
    const hvq_tensor_info *info = &s->infos[s->next++];
    if (!r->compressed)
        return H->sink_write(ctx, s->sink, &r->original);
    size_t need = (size_t)info->nbytes;
    if (need > s->buf_len) {
        void *b = H->realloc(ctx, s->buf, need);
        if (!b)
            return HVQ_E_NOMEM;
        s->buf = b;
        s->buf_len = need;
    }
    hvq_status st = H->convert(ctx, info->dtype, s->buf, HVQ_DTYPE_F32, r->recon,
                               (size_t)(r->rows * r->cols));
    if (st != HVQ_OK)
        return st;
    hvq_tensor t;
    t.info = *info;
    t.data = s->buf;
    return H->sink_write(ctx, s->sink, &t);
}

static hvq_status dequant_finish(hvq_ctx *ctx, void *state)
{
    dequant_state *s = state;
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
    ctx->host->free(s->buf);
    ctx->host->free(s);
}

static const hvq_plugin dequant_plugin = {
    HVQ_PLUGIN_HEADER,
    .kinds = HVQ_KIND_WRITER,
    .name = "dequant",
    .version = "1.0.0",
    .summary = "write the reconstructed model (F16/BF16/F32) through any sink format",
    .license = "MIT",
    .params = dequant_params,
    .writer_open = dequant_open,
    .writer_tensor = dequant_tensor,
    .writer_finish = dequant_finish,
    .writer_close = dequant_close,
};

HVQ_REGISTER_PLUGIN(dequant_plugin)
