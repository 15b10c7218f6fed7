/* The `convert` command: a model from one format to another without
 * compression (safetensors file, shards or Hugging Face directory, GGUF,
 * npz), every floating-point tensor in the type --dtype asks for. Between
 * Hugging Face and llama.cpp layouts the model plugin of the architecture
 * maps names, rows and metadata (its convert_* callbacks); the core only
 * moves tensors, converts element types and writes atomically. */
#include "config.h"

#include "cli.h"
#include "driver.h"
#include "dtype.h"
#include "json.h"
#include "meta.h"
#include "file.h"
#include "ggml_native.h"
#include "params.h"
#include "util.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum { OPT_DTYPE = HVQ_CLI_OPT_PLUGIN_DIR + 1, OPT_FORMAT, OPT_MAX_SHARD, OPT_TOKENIZER,
       OPT_CONFIG, OPT_RAW };

/* --dtype: the one table of choices. A type a sink cannot write yet would
 * be listed with the reason. q8_0: llama.cpp's blocks (GGUF only), for
 * the weight matrices, with libhvqggml's quantizers (those of decode
 * --dtype q8_0 and of the ggml clusterer); the other tensors keep their
 * type, as llama-quantize keeps them. */
static const struct conv_dtype {
    const char *name;
    hvq_dtype type;           /* OPAQUE: each tensor keeps its own */
    const char *unavailable;  /* why it cannot be chosen, or NULL */
    const char *ggml;         /* a llama.cpp block type for the weights, or NULL */
} conv_dtypes[] = {
    {"same", HVQ_DTYPE_OPAQUE, NULL, NULL},
    {"f32", HVQ_DTYPE_F32, NULL, NULL},
    {"f16", HVQ_DTYPE_F16, NULL, NULL},
    {"bf16", HVQ_DTYPE_BF16, NULL, NULL},
    {"q8_0", HVQ_DTYPE_OPAQUE, NULL, "q8_0"},
};

/* The --dtype entry named name, or NULL after printing why. */
static const struct conv_dtype *conv_dtype_parse(const char *name)
{
    for (size_t i = 0; i < sizeof conv_dtypes / sizeof conv_dtypes[0]; i++)
        if (strcmp(conv_dtypes[i].name, name) == 0) {
            if (!conv_dtypes[i].unavailable)
                return &conv_dtypes[i];
            fprintf(stderr, "hvqconv: error: --dtype %s: %s\n", name, conv_dtypes[i].unavailable);
            return NULL;
        }
    fprintf(stderr, "hvqconv: error: --dtype %s: expected same, f32, f16, bf16 or (GGUF "
            "output) q8_0\n", name);
    return NULL;
}

typedef struct conv_args {
    const char *in, *out, *format, *tokenizer, *config;
    const struct conv_dtype *dtype;
    int64_t max_shard;
    int raw;
} conv_args;

/* The files a Hugging Face directory carries beside its weights, copied
 * into a directory output from the input's directory. */
static const char *const conv_side_files[] = {
    "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
    "tokenizer.model", "special_tokens_map.json", "added_tokens.json", "vocab.json",
    "merges.txt", NULL};

/* One conversion. */
typedef struct conv_job {
    hvq_ctx *ctx;
    const hvq_registry *reg;
    const conv_args *a;
    int dir_out;               /* the output is a model directory */
    char *out_dir, *tensor_path; /* the directory (or NULL), the weights' file */
    const char *sink;          /* the sink's name */
    const char *src_format;    /* the source's name */
    char *model_dir;           /* the input's directory (config, tokenizer) */
    hvq_model *m;
    size_t n;
    hvq_tensor_info *in_info, *out_info;
    unsigned char *reorder;    /* per tensor: rows through convert_rows */
    unsigned char *drop;       /* per tensor: not written */
    size_t n_out;
    const hvq_plugin *mp;      /* the model plugin mapping layouts, or NULL */
    void *ms;                  /* its convert state */
    int to_gguf;
    char *config_text, *config_path;
    hvq_sink_handle *sk;
    /* --dtype a llama.cpp block type: per output tensor, whether it is
     * quantized and its type after llama-quantize's fallback (NULL: F16) */
    unsigned char *as_ggml;
    const hvq_ggml_type **gtypes;
    const hvq_ggml_type *gmain; /* the type of the most parameters */
    hvq_ggml_fallbacks fb;
    hvq_ggml_mix mix;
    hvq_ggml_meta gmeta;        /* the metadata with general.file_type */
} conv_job;

static int is_dir(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* Where the tensors go and which sink writes them. */
static hvq_status conv_paths(conv_job *j)
{
    hvq_ctx *ctx = j->ctx;
    const char *out = j->a->out;
    size_t len = strlen(out);
    j->dir_out = (len && out[len - 1] == '/') || is_dir(out);
    if (j->dir_out) {
        while (len > 1 && out[len - 1] == '/')
            len--;
        if (!(j->out_dir = strndup(out, len)) ||
            !(j->tensor_path = hvq_path_join(j->out_dir, "model.safetensors")))
            return hvq_error(ctx, HVQ_E_NOMEM, "out of memory");
        if (hvq_cli_same_file(j->a->in, j->out_dir))
            return hvq_error(ctx, HVQ_E_INPUT, "%s: the output directory is the input", out);
    } else if (!(j->tensor_path = strdup(out))) {
        return hvq_error(ctx, HVQ_E_NOMEM, "out of memory");
    }
    if (hvq_cli_same_file(j->a->in, j->tensor_path))
        return hvq_error(ctx, HVQ_E_INPUT, "%s: the output may not be the input", j->tensor_path);
    const hvq_loaded_plugin *pl;
    if (j->a->format)
        pl = hvq_registry_find(j->reg, HVQ_KIND_SINK, j->a->format);
    else
        pl = j->dir_out ? hvq_registry_find(j->reg, HVQ_KIND_SINK, "safetensors")
                        : hvq_registry_sink_for(j->reg, ctx, j->tensor_path);
    if (!pl)
        return hvq_ctx_status(ctx) ? hvq_ctx_status(ctx)
                                   : hvq_error(ctx, HVQ_E_INPUT, "--format %s: no such output "
                                               "format (see hvqconv list-plugins)", j->a->format);
    j->sink = pl->desc.name;
    return HVQ_OK;
}

/* The input: opened, its tensors listed, its directory found. */
static hvq_status conv_input(conv_job *j)
{
    hvq_ctx *ctx = j->ctx;
    const hvq_host *H = ctx->host;
    hvq_ctx_add_input(ctx, j->a->in);
    if (!(j->src_format = H->detect(ctx, j->a->in)))
        return hvq_ctx_status(ctx) ? hvq_ctx_status(ctx)
                                   : hvq_error(ctx, HVQ_E_INPUT, "%s: not a model file any "
                                               "format reads (see hvqconv list-plugins)",
                                               j->a->in);
    if (!(j->m = H->model_open(ctx, j->a->in)))
        return hvq_ctx_status(ctx) ? hvq_ctx_status(ctx) : HVQ_E_INPUT;
    j->n = H->model_count(j->m);
    j->in_info = hvq_calloc(ctx, j->n ? j->n : 1, sizeof *j->in_info);
    j->out_info = hvq_calloc(ctx, j->n ? j->n : 1, sizeof *j->out_info);
    j->reorder = hvq_calloc(ctx, j->n ? j->n : 1, 1);
    j->drop = hvq_calloc(ctx, j->n ? j->n : 1, 1);
    j->as_ggml = hvq_calloc(ctx, j->n ? j->n : 1, 1);
    j->gtypes = hvq_calloc(ctx, j->n ? j->n : 1, sizeof *j->gtypes);
    if (!j->in_info || !j->out_info || !j->reorder || !j->drop || !j->as_ggml || !j->gtypes)
        return HVQ_E_NOMEM;
    for (size_t i = 0; i < j->n; i++) {
        hvq_status st = H->model_info(j->m, i, &j->in_info[i]);
        if (st != HVQ_OK)
            return st;
    }
    if (is_dir(j->a->in))
        j->model_dir = strdup(j->a->in);
    else if (strcmp(j->src_format, "gguf") != 0) {
        const char *slash = strrchr(j->a->in, '/');
        j->model_dir = slash ? strndup(j->a->in, (size_t)(slash - j->a->in)) : strdup(".");
    }
    if (strcmp(j->src_format, "gguf") != 0 && !j->model_dir)
        return hvq_error(ctx, HVQ_E_NOMEM, "out of memory");
    return HVQ_OK;
}

/* config.json: --config, else in the input's directory; NULL text when
 * there is none. */
static hvq_status conv_config(conv_job *j)
{
    const char *given = j->a->config;
    if (given)
        j->config_path = strdup(given);
    else if (j->model_dir)
        j->config_path = hvq_path_join(j->model_dir, "config.json");
    if (!j->config_path)
        return hvq_error(j->ctx, HVQ_E_NOMEM, "out of memory");
    struct stat sb;
    if (!given && stat(j->config_path, &sb) != 0)
        return HVQ_OK;
    unsigned char *text = NULL;
    size_t len;
    hvq_status st = hvq_slurp_input(j->ctx, j->config_path, 64u << 20, "a configuration",
                                    &text, &len);
    j->config_text = (char *)text;
    return st;
}

/* The architecture config.json names: model_type, else the first of
 * architectures without its class suffix ("LlamaForCausalLM": "llama"). */
void hvq_config_model_type(const char *text, char *arch, size_t len, hvq_json_error *je)
{
    hvq_json_doc *doc = hvq_json_parse(text, strlen(text), 0, je);
    const hvq_json_value *r = doc ? hvq_json_root(doc) : NULL;
    const char *mt = hvq_json_string(hvq_json_get(r, "model_type"), NULL);
    const char *cls = hvq_json_string(hvq_json_item(hvq_json_get(r, "architectures"), 0), NULL);
    arch[0] = '\0';
    if (mt)
        snprintf(arch, len, "%s", mt);
    else if (cls) {
        const char *end = strstr(cls, "For");
        size_t n = end ? (size_t)(end - cls) : strlen(cls);
        for (size_t i = 0; i < n && i + 1 < len; i++)
            arch[i] = (char)(cls[i] >= 'A' && cls[i] <= 'Z' ? cls[i] - 'A' + 'a' : cls[i]);
        arch[n < len ? n : len - 1] = '\0';
    }
    hvq_json_free(doc);
}

/* The weights' type the output declares (general.file_type): --dtype, else
 * the first floating-point matrix's. */
static hvq_dtype conv_weight_type(const conv_job *j)
{
    if (j->a->dtype->type != HVQ_DTYPE_OPAQUE)
        return j->a->dtype->type;
    for (size_t i = 0; i < j->n; i++)
        if (j->in_info[i].ndim == 2 && hvq_dtype_is_float(j->in_info[i].dtype))
            return j->in_info[i].dtype;
    return HVQ_DTYPE_F32;
}

/* The architecture of a conversion between Hugging Face and llama.cpp
 * layouts (to_gguf: from config.json, which must exist), or "" after a
 * warning when there is none. */
static hvq_status conv_arch(conv_job *j, char *arch, size_t len)
{
    const hvq_meta *meta;
    size_t n_meta;
    arch[0] = '\0';
    if (!j->to_gguf) {
        j->ctx->host->model_meta(j->m, &meta, &n_meta);
        if (!hvq_meta_string(meta, n_meta, "general.architecture", arch, len))
            hvq_log(j->ctx, HVQ_LOG_WARN, "%s: no general.architecture: the tensors keep "
                    "llama.cpp's names", j->a->in);
        return HVQ_OK;
    }
    hvq_status st = conv_config(j);
    if (st != HVQ_OK)
        return st;
    if (!j->config_text)
        return hvq_error(j->ctx, HVQ_E_INPUT, "%s: no config.json (looked for %s): a GGUF file "
                         "for llama.cpp needs the model's configuration; give it with --config "
                         "FILE, or convert the tensors as they are with --raw", j->a->in,
                         j->config_path);
    hvq_json_error je = {0};
    hvq_config_model_type(j->config_text, arch, len, &je);
    if (je.message[0])
        return hvq_error(j->ctx, HVQ_E_INPUT, "%s: not valid JSON: %s", j->config_path,
                         je.message);
    if (!arch[0])
        hvq_log(j->ctx, HVQ_LOG_WARN, "%s: names no model_type or architectures: the tensors "
                "are written as they are, and the GGUF file has no architecture llama.cpp "
                "knows", j->config_path);
    return HVQ_OK;
}

/* Between Hugging Face and llama.cpp layouts (not with --raw): the model
 * plugin of the architecture, its conversion opened. Without one, a
 * warning, and the tensors go as they are. */
static hvq_status conv_mapping(conv_job *j)
{
    hvq_ctx *ctx = j->ctx;
    int src_gguf = strcmp(j->src_format, "gguf") == 0, dst_gguf = strcmp(j->sink, "gguf") == 0;
    if ((j->a->tokenizer || j->a->config) && (j->a->raw || src_gguf || !dst_gguf))
        hvq_log(ctx, HVQ_LOG_WARN, "%s ignored: it serves a Hugging Face model's conversion to "
                "GGUF", j->a->tokenizer ? "--tokenizer" : "--config");
    if (j->a->raw || src_gguf == dst_gguf)
        return HVQ_OK;
    j->to_gguf = dst_gguf;
    char arch[128];
    hvq_status st = conv_arch(j, arch, sizeof arch);
    if (st != HVQ_OK || !arch[0])
        return st;
    const hvq_plugin *mp = ctx->host->model_plugin(ctx, NULL, arch);
    if (!mp || !mp->convert_open) {
        hvq_ctx_clear_error(ctx);
        hvq_log(ctx, HVQ_LOG_WARN, "%s: architecture '%s': no model plugin maps it %s; the "
                "tensors are written as they are%s", j->a->in, arch,
                j->to_gguf ? "to llama.cpp's layout" : "to Hugging Face's layout",
                j->to_gguf ? ", and the GGUF file has no architecture llama.cpp knows"
                           : ", with llama.cpp's names");
        return HVQ_OK;
    }
    hvq_convert_setup su = {j->to_gguf, j->a->in, j->config_text, j->config_path, NULL, 0,
                            j->model_dir, j->a->tokenizer, j->in_info, j->n,
                            conv_weight_type(j)};
    if (!j->to_gguf)
        ctx->host->model_meta(j->m, &su.meta, &su.n_meta);
    j->mp = mp;
    hvq_log(ctx, HVQ_LOG_INFO, "%s: %s model, mapped by the model plugin '%s'", j->a->in, arch,
            mp->name);
    return mp->convert_open(ctx, &su, &j->ms);
}

/* --dtype a llama.cpp block type: output tensor k, when llama-quantize
 * would quantize it (a floating-point matrix whose name ends in "weight"),
 * declared as that type's blocks, or its fallback. */
static void conv_declare_ggml(conv_job *j, size_t k)
{
    hvq_tensor_info *o = &j->out_info[k];
    size_t len = strlen(o->name);
    if (!hvq_dtype_is_float(o->dtype) || o->ndim < 2 || len < 6 ||
        strcmp(o->name + len - 6, "weight") != 0)
        return;
    const hvq_ggml_type *t = hvq_ggml_type_find(j->a->dtype->ggml);
    j->as_ggml[k] = 1;
    j->gtypes[k] = hvq_ggml_declare(o, t);
    hvq_ggml_fallback_note(&j->fb, o->name, o->shape[o->ndim - 1], t, j->gtypes[k]);
    hvq_ggml_mix_add(&j->mix, t, hvq_numel(o));
}

/* The output's tensors: names (mapped or as they are), dropped ones left
 * out, every floating-point tensor in --dtype's type unless the mapping
 * keeps it in another. */
static hvq_status conv_declare(conv_job *j)
{
    for (size_t i = 0; i < j->n; i++) {
        hvq_convert_tensor ct = {j->in_info[i].name, 0, HVQ_DTYPE_OPAQUE};
        if (j->mp) {
            hvq_status st = j->mp->convert_tensor(j->ctx, j->ms, &j->in_info[i], &ct);
            if (st != HVQ_OK)
                return st;
        }
        if (!ct.name) {
            j->drop[i] = 1;
            hvq_log(j->ctx, HVQ_LOG_INFO, "%s: tensor '%s' left out (the other layout has no "
                    "place for it)", j->a->in, j->in_info[i].name);
            continue;
        }
        hvq_tensor_info *o = &j->out_info[j->n_out++];
        *o = j->in_info[i];
        o->name = ct.name;
        j->reorder[i] = (unsigned char)ct.reorder;
        if (!hvq_dtype_is_float(o->dtype))
            continue;
        hvq_dtype t = ct.keep != HVQ_DTYPE_OPAQUE ? ct.keep : j->a->dtype->type;
        if (t != HVQ_DTYPE_OPAQUE && t != o->dtype) {
            o->dtype = t;
            o->dtype_name = hvq_dtype_name(t);
            o->nbytes = hvq_numel(o) * hvq_dtype_size(t);
        }
        if (j->a->dtype->ggml && ct.keep == HVQ_DTYPE_OPAQUE)
            conv_declare_ggml(j, j->n_out - 1);
    }
    if (j->a->dtype->ggml) {
        hvq_ggml_fallback_warn(j->ctx, &j->fb, j->tensor_path);
        j->gmain = hvq_ggml_mix_main(&j->mix);
    }
    return HVQ_OK;
}

/* The output's metadata: the mapping's (GGUF), Hugging Face's {"format":
 * "pt"} after a mapping to it, else the input's. */
static hvq_status conv_meta(conv_job *j, const hvq_meta **meta, size_t *n)
{
    static const hvq_meta pt[] = {{"format", "pt"}};
    if (j->gmain) { /* blocks: general.file_type theirs */
        j->gmain = NULL;
        hvq_status st = conv_meta(j, meta, n);
        if (st == HVQ_OK && !hvq_ggml_meta_init(&j->gmeta, *meta, *n, hvq_ggml_mix_main(&j->mix)))
            st = hvq_error(j->ctx, HVQ_E_NOMEM, "out of memory");
        *meta = j->gmeta.meta;
        *n = j->gmeta.n;
        return st;
    }
    if (j->mp && j->to_gguf)
        return j->mp->convert_meta(j->ctx, j->ms, meta, n);
    if (j->mp) { /* safetensors' own; other formats get none */
        *meta = pt;
        *n = strcmp(j->sink, "safetensors") == 0;
        return HVQ_OK;
    }
    j->ctx->host->model_meta(j->m, meta, n);
    return HVQ_OK;
}

/* Input tensor i as output tensor k: rows reordered by the mapping, then
 * converted (through F32 between two other types), then written. */
static hvq_status conv_tensor(conv_job *j, size_t i, size_t k)
{
    hvq_ctx *ctx = j->ctx;
    const hvq_host *H = ctx->host;
    hvq_tensor t;
    hvq_status st = H->model_find(ctx, j->m, j->in_info[i].name, &t);
    if (st != HVQ_OK)
        return st;
    const hvq_tensor_info *o = &j->out_info[k];
    uint64_t numel = hvq_numel(&t.info);
    const void *src = t.data;
    void *rows = NULL, *mid = NULL, *conv = NULL, *blocks = NULL;
    if (j->reorder[i]) {
        if (!(rows = hvq_alloc(ctx, t.info.nbytes ? t.info.nbytes : 1)))
            return HVQ_E_NOMEM;
        st = j->mp->convert_rows(ctx, j->ms, &t, rows);
        src = rows;
    }
    hvq_dtype from = t.info.dtype, to = j->as_ggml[k] ? HVQ_DTYPE_F32 : o->dtype;
    if (st == HVQ_OK && from != to) {
        if (from != HVQ_DTYPE_F32 && to != HVQ_DTYPE_F32) {
            if (!(mid = hvq_alloc(ctx, numel * 4 + 1)))
                st = HVQ_E_NOMEM;
            else if ((st = H->convert(ctx, HVQ_DTYPE_F32, mid, from, src, numel)) == HVQ_OK) {
                src = mid;
                from = HVQ_DTYPE_F32;
            }
        }
        if (st == HVQ_OK && !(conv = hvq_alloc(ctx, numel * hvq_dtype_size(to) + 1)))
            st = HVQ_E_NOMEM;
        if (st == HVQ_OK && (st = H->convert(ctx, to, conv, from, src, numel)) == HVQ_OK)
            src = conv;
    }
    if (st == HVQ_OK && j->as_ggml[k]) { /* F32 by now: into blocks */
        if (!(blocks = hvq_alloc(ctx, o->nbytes + 1)))
            st = HVQ_E_NOMEM;
        else if ((st = hvq_ggml_quantize(ctx, o, j->gtypes[k], src, blocks)) == HVQ_OK)
            src = blocks;
    }
    if (st == HVQ_OK) {
        hvq_tensor out = {*o, src};
        st = H->sink_write(ctx, j->sk, &out);
    }
    free(rows);
    free(mid);
    free(conv);
    free(blocks);
    return st;
}

/* The tensors through the sink. */
static hvq_status conv_tensors(conv_job *j)
{
    hvq_ctx *ctx = j->ctx;
    const hvq_meta *meta;
    size_t n_meta;
    hvq_status st = conv_meta(j, &meta, &n_meta);
    if (st != HVQ_OK)
        return st;
    char shard_opt[64];
    const char *options[2] = {NULL, NULL};
    if (j->a->max_shard > 0) {
        snprintf(shard_opt, sizeof shard_opt, "max_shard_size=%lld", (long long)j->a->max_shard);
        options[0] = shard_opt;
    }
    j->sk = ctx->host->sink_open_params(ctx, j->sink, j->tensor_path, options, meta, n_meta,
                                        j->out_info, j->n_out);
    if (!j->sk)
        return hvq_ctx_status(ctx) ? hvq_ctx_status(ctx) : HVQ_E_IO;
    for (size_t i = 0, k = 0; i < j->n && st == HVQ_OK; i++) {
        if (hvq_interrupted)
            return hvq_interrupt_error(ctx);
        if (!j->drop[i])
            st = conv_tensor(j, i, k++);
    }
    return st == HVQ_OK ? ctx->host->sink_finish(ctx, j->sk) : st;
}

static hvq_status conv_write_file(conv_job *j, const char *name, const void *data, size_t len)
{
    char *path = hvq_path_join(j->out_dir, name);
    if (!path)
        return hvq_error(j->ctx, HVQ_E_NOMEM, "out of memory");
    hvq_output *o = j->ctx->host->output_open(j->ctx, path);
    hvq_status st = o ? j->ctx->host->output_write(j->ctx, o, data, len) : hvq_ctx_status(j->ctx);
    free(path);
    return st;
}

/* A directory output's other files: written by the mapping (from GGUF),
 * else copied from the input's directory. */
static hvq_status conv_files(conv_job *j)
{
    hvq_status st = HVQ_OK;
    if (!j->dir_out && j->mp && !j->to_gguf)
        hvq_log(j->ctx, HVQ_LOG_WARN, "%s: config.json and tokenizer files are written only "
                "into a directory output (OUT/)", j->a->out);
    if (!j->dir_out)
        return HVQ_OK;
    if (j->mp && !j->to_gguf) {
        const char *name;
        const void *data;
        size_t len;
        for (size_t k = 0; st == HVQ_OK &&
                           j->mp->convert_file(j->ctx, j->ms, k, &name, &data, &len) == HVQ_OK;
             k++)
            st = conv_write_file(j, name, data, len);
        return st;
    }
    for (size_t k = 0; j->model_dir && conv_side_files[k] && st == HVQ_OK; k++) {
        char *path = hvq_path_join(j->model_dir, conv_side_files[k]);
        struct stat sb;
        unsigned char *data = NULL;
        size_t len = 0;
        if (!path)
            return hvq_error(j->ctx, HVQ_E_NOMEM, "out of memory");
        if (stat(path, &sb) == 0 && S_ISREG(sb.st_mode) &&
            (st = hvq_slurp_input(j->ctx, path, 1u << 30, "a model file", &data, &len)) == HVQ_OK)
            st = conv_write_file(j, conv_side_files[k], data, len);
        free(data);
        free(path);
    }
    return st;
}

static void conv_free(conv_job *j)
{
    if (j->mp && j->mp->convert_close)
        j->mp->convert_close(j->ctx, j->ms);
    if (j->sk)
        j->ctx->host->sink_close(j->ctx, j->sk);
    if (j->m)
        j->ctx->host->model_close(j->ctx, j->m);
    free(j->in_info);
    free(j->out_info);
    free(j->reorder);
    free(j->drop);
    free(j->as_ggml);
    free(j->gtypes);
    hvq_ggml_meta_free(&j->gmeta);
    free(j->out_dir);
    free(j->tensor_path);
    free(j->model_dir);
    free(j->config_text);
    free(j->config_path);
}

static hvq_status convert_run(hvq_ctx *ctx, const hvq_registry *reg, const void *args)
{
    conv_job j = {.ctx = ctx, .reg = reg, .a = args};
    hvq_status st = conv_paths(&j);
    if (st == HVQ_OK && j.dir_out && strcmp(j.sink, "safetensors") != 0)
        st = hvq_error(ctx, HVQ_E_INPUT, "%s: a directory output is a Hugging Face model, "
                       "whose weights are safetensors (not --format %s)", j.a->out, j.sink);
    if (st == HVQ_OK && j.a->dtype->ggml && strcmp(j.sink, "gguf") != 0)
        st = hvq_error(ctx, HVQ_E_INPUT, "%s: --dtype %s writes llama.cpp blocks, which only "
                       "GGUF stores, and this output is %s", j.a->out, j.a->dtype->name, j.sink);
    if (st == HVQ_OK) {
        hvq_ctx_name_output(ctx, j.tensor_path);
        st = conv_input(&j);
    }
    if (st == HVQ_OK && (st = conv_mapping(&j)) == HVQ_OK && (st = conv_declare(&j)) == HVQ_OK &&
        (st = conv_tensors(&j)) == HVQ_OK && (st = conv_files(&j)) == HVQ_OK)
        st = hvq_outputs_commit(ctx);
    if (st == HVQ_OK)
        hvq_log(ctx, HVQ_LOG_INFO, "%s: %zu tensors from %s (%s), format %s%s", j.tensor_path,
                j.n_out, j.a->in, j.src_format, j.sink,
                j.mp ? (j.to_gguf ? ", llama.cpp layout" : ", Hugging Face layout") : "");
    else
        hvq_outputs_abort(ctx);
    conv_free(&j);
    return st;
}

static void usage_convert(FILE *f)
{
    fputs("Usage: hvqconv convert IN OUT [OPTION]...\n"
          "       hvqconv convert IN -o OUT [OPTION]...\n"
          "Convert a model between formats without compressing it: a safetensors file,\n"
          "sharded safetensors (an index) or a Hugging Face directory, GGUF, npz. The\n"
          "output format comes from OUT's extension (.safetensors, .gguf, .npz) or\n"
          "--format. OUT ending in '/' or naming a directory is a Hugging Face model\n"
          "directory: model.safetensors (or shards and their index), with config.json,\n"
          "generation_config.json and tokenizer files copied from the input's directory\n"
          "(or written from a GGUF file's metadata). Missing parent directories are\n"
          "created; nothing is left behind on failure.\n"
          "\n"
          "Between a Hugging Face model and GGUF, a Llama-family model (config.json's\n"
          "model_type, GGUF's general.architecture) is mapped by its model plugin:\n"
          "llama.cpp's tensor names, q/k rows in llama.cpp's order, the architecture\n"
          "metadata and the tokenizer (tokenizer.model or tokenizer.json in the input's\n"
          "directory, or --tokenizer), so that llama.cpp loads the result; and back.\n"
          "Other architectures convert as they are, with a warning.\n"
          "\n"
          "  -o, --output PATH     the output (instead of the second argument)\n"
          "      --dtype TYPE      every floating-point tensor as: same (default), f32,\n"
          "                        f16 or bf16 (rounded to nearest even); GGUF norms stay\n"
          "                        F32 as llama.cpp's converter keeps them; q8_0 (GGUF\n"
          "                        output): the weight matrices as llama.cpp's Q8_0\n"
          "                        blocks (llama-quantize's rounding; rows that fit no\n"
          "                        block of 32 as F16), the other tensors as they are\n"
          "      --format NAME     output format (a sink plugin); default: OUT's extension\n"
          "      --max-shard-size SIZE\n"
          "                        write shards of at most SIZE bytes and an index (500MB)\n"
          "      --tokenizer FILE  a llama2.c tokenizer.bin for the GGUF vocabulary\n"
          "      --config FILE     the config.json to use (default: the input's)\n"
          "      --raw             no layout mapping: tensors and names as they are\n"
          "  -t, --threads N       worker threads (default: all cores)\n"
          "  -f, --force           replace existing output files\n"
          "      --plugin-dir DIR, -q, -v, -h as for every command\n",
          f);
}

/* --max-shard-size's value, or -1 after printing why. */
static int64_t conv_size_opt(const char *arg)
{
    static const hvq_param_spec spec = {"max-shard-size", HVQ_PARAM_SIZE, "0", 0, 0, NULL, NULL};
    hvq_value v;
    char why[256];
    if (hvq_param_parse(&spec, arg, &v, why, sizeof why) == HVQ_OK)
        return v.i;
    fprintf(stderr, "hvqconv: error: --max-shard-size %s: %s\n", arg, why);
    return -1;
}

/* One option of convert's own; -1 to go on, else an exit status. */
static int conv_opt(int c, conv_args *a, hvq_ctx_opts *opts, hvq_cli_dirs *d)
{
    switch (c) {
    case 'o': a->out = optarg; return -1;
    case 't': return hvq_parse_threads(optarg, &opts->threads) ? -1 : HVQ_EXIT_BAD_INPUT;
    case 'f': opts->force = 1; return -1;
    case OPT_FORMAT: a->format = optarg; return -1;
    case OPT_TOKENIZER: a->tokenizer = optarg; return -1;
    case OPT_CONFIG: a->config = optarg; return -1;
    case OPT_RAW: a->raw = 1; return -1;
    case OPT_MAX_SHARD: return (a->max_shard = conv_size_opt(optarg)) < 0 ? HVQ_EXIT_BAD_INPUT
                                                                          : -1;
    case OPT_DTYPE: return (a->dtype = conv_dtype_parse(optarg)) ? -1 : HVQ_EXIT_BAD_INPUT;
    default: return hvq_cli_common_opt(c, d, opts, "convert", usage_convert);
    }
}

int hvq_cmd_convert(int argc, char **argv, const char *const *plugin_dirs, size_t n_plugin_dirs,
                    const hvq_ctx_opts *gopts)
{
    static const struct option lo[] = {
        {"output", required_argument, 0, 'o'}, {"dtype", required_argument, 0, OPT_DTYPE},
        {"format", required_argument, 0, OPT_FORMAT}, {"force", no_argument, 0, 'f'},
        {"max-shard-size", required_argument, 0, OPT_MAX_SHARD},
        {"tokenizer", required_argument, 0, OPT_TOKENIZER},
        {"config", required_argument, 0, OPT_CONFIG}, {"raw", no_argument, 0, OPT_RAW},
        {"threads", required_argument, 0, 't'},
        {"plugin-dir", required_argument, 0, HVQ_CLI_OPT_PLUGIN_DIR},
        {"quiet", no_argument, 0, 'q'}, {"verbose", no_argument, 0, 'v'},
        {"help", no_argument, 0, 'h'}, {"version", no_argument, 0, 'V'}, {0, 0, 0, 0}};
    hvq_ctx_opts opts = *gopts;
    opts.make_dirs = 1;
    hvq_cli_dirs d = {0};
    conv_args a = {.dtype = &conv_dtypes[0]};
    int c, rc = -1;
    for (size_t i = 0; i < n_plugin_dirs; i++)
        if (!hvq_cli_dirs_add(&d, plugin_dirs[i]))
            rc = HVQ_EXIT_OTHER;
    while (rc < 0 && (c = getopt_long(argc, argv, "o:t:fqvhV", lo, NULL)) != -1)
        rc = conv_opt(c, &a, &opts, &d);
    if (rc < 0 && optind < argc)
        a.in = argv[optind++];
    if (rc < 0 && !a.out && optind < argc)
        a.out = argv[optind++];
    if (rc < 0 && (!a.in || !a.out || optind < argc)) {
        fprintf(stderr, "hvqconv: error: %s\nTry 'hvqconv convert --help'.\n",
                !a.in ? "convert needs an input and an output"
                : !a.out ? "convert needs an output (OUT or -o PATH)"
                         : "convert takes one input and one output");
        rc = HVQ_EXIT_BAD_INPUT;
    }
    if (rc >= 0) {
        free(d.v);
        return rc;
    }
    return hvq_cli_run(&opts, &d, convert_run, &a);
}
