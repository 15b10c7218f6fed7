/* The model plugin's convert_* callbacks (include/hvqconv/plugin.h): a
 * Llama-family model from a Hugging Face directory to a GGUF file that
 * llama.cpp loads, and back. Names and rows: convert.c; tokenizers:
 * tok_gguf.c. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include "convert.h"
#include "json.h"
#include "meta.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* The shape of a model, from config.json or GGUF metadata. */
typedef struct lc_cfg {
    int64_t n_layers, hidden, inter, n_heads, n_kv, head_dim, vocab, ctx_len;
    double eps, theta;
    int tied;
    int64_t ids[3]; /* bos, eos, pad; -1 when absent */
} lc_cfg;

typedef struct lc_file {
    const char *name;
    char *data;
    size_t len;
} lc_file;

typedef struct lc_state {
    int to_gguf;
    char *what;
    lc_cfg c;
    hvq_llama_meta meta;
    char **names;
    size_t n_names;
    lc_file files[3];
    size_t n_files;
} lc_state;

/* ------------------------------------------------------------------------
 * Hugging Face config.json -> GGUF metadata
 * ---------------------------------------------------------------------- */

/* config.json's key as a whole number >= min; def when absent (def < 0:
 * required). */
static hvq_status lc_json_int(hvq_ctx *ctx, const char *path, const hvq_json_value *root,
                              const char *key, int64_t min, int64_t def, int64_t *out)
{
    const hvq_json_value *v = hvq_json_get(root, key);
    if (!v || v->type == HVQ_JSON_NULL) {
        if (def < 0)
            return ctx->host->error(ctx, HVQ_E_INPUT, "%s: \"%s\" is missing (a Llama "
                                    "configuration needs it)", path, key);
        *out = def;
        return HVQ_OK;
    }
    if (hvq_json_int64(v, out) != 0 || *out < min || *out > (int64_t)1 << 31)
        return ctx->host->error(ctx, HVQ_E_INPUT, "%s: \"%s\" is %s, not a whole number of at "
                                "least %lld", path, key, hvq_json_kind(v), (long long)min);
    return HVQ_OK;
}

static hvq_status lc_json_num(hvq_ctx *ctx, const char *path, const hvq_json_value *root,
                              const char *key, double def, double *out)
{
    const hvq_json_value *v = hvq_json_get(root, key);
    *out = def;
    if (!v || v->type == HVQ_JSON_NULL)
        return HVQ_OK;
    if (hvq_json_double(v, out) != 0 || !(*out > 0))
        return ctx->host->error(ctx, HVQ_E_INPUT, "%s: \"%s\" is not a positive number", path,
                                key);
    return HVQ_OK;
}

static hvq_status lc_cfg_json(hvq_ctx *ctx, const hvq_convert_setup *s, lc_cfg *c)
{
    hvq_json_error je;
    const char *path = s->config_path ? s->config_path : s->path;
    hvq_json_doc *doc = hvq_json_parse(s->config_json, strlen(s->config_json), 0, &je);
    if (!doc)
        return ctx->host->error(ctx, HVQ_E_INPUT, "%s: not valid JSON: %s", path, je.message);
    const hvq_json_value *r = hvq_json_root(doc);
    hvq_status st = HVQ_OK;
    if (r->type != HVQ_JSON_OBJECT)
        st = ctx->host->error(ctx, HVQ_E_INPUT, "%s: not a JSON object", path);
    if (st == HVQ_OK &&
        ((st = lc_json_int(ctx, path, r, "num_hidden_layers", 1, -1, &c->n_layers)) != HVQ_OK ||
         (st = lc_json_int(ctx, path, r, "hidden_size", 1, -1, &c->hidden)) != HVQ_OK ||
         (st = lc_json_int(ctx, path, r, "intermediate_size", 1, -1, &c->inter)) != HVQ_OK ||
         (st = lc_json_int(ctx, path, r, "num_attention_heads", 1, -1, &c->n_heads)) != HVQ_OK ||
         (st = lc_json_int(ctx, path, r, "num_key_value_heads", 1, c->n_heads, &c->n_kv)) !=
             HVQ_OK ||
         (st = lc_json_int(ctx, path, r, "head_dim", 2, c->hidden / c->n_heads, &c->head_dim)) !=
             HVQ_OK ||
         (st = lc_json_int(ctx, path, r, "vocab_size", 1, 0, &c->vocab)) != HVQ_OK ||
         (st = lc_json_int(ctx, path, r, "max_position_embeddings", 1, 0, &c->ctx_len)) !=
             HVQ_OK ||
         (st = lc_json_num(ctx, path, r, "rms_norm_eps", 1e-6, &c->eps)) != HVQ_OK ||
         (st = lc_json_num(ctx, path, r, "rope_theta", 10000.0, &c->theta)) != HVQ_OK))
        goto done;
    static const char *const id_keys[3] = {"bos_token_id", "eos_token_id", "pad_token_id"};
    for (int i = 0; i < 3; i++) /* a list (several eos ids) or null: none */
        if (hvq_json_int64(hvq_json_get(r, id_keys[i]), &c->ids[i]) != 0 || c->ids[i] < 0)
            c->ids[i] = -1;
    const hvq_json_value *rs = hvq_json_get(r, "rope_scaling");
    if (st == HVQ_OK && rs && rs->type != HVQ_JSON_NULL)
        ctx->host->log(ctx, HVQ_LOG_WARN, "%s: \"rope_scaling\" is not carried into the GGUF "
                       "metadata; llama.cpp will run the model without it", path);
    if (st == HVQ_OK && (c->n_heads % c->n_kv != 0 || c->head_dim % 2 != 0))
        st = ctx->host->error(ctx, HVQ_E_INPUT, "%s: %lld attention heads, %lld key/value heads "
                              "of %lld dimensions: heads must be a multiple of key/value heads "
                              "and the head dimension even", path, (long long)c->n_heads,
                              (long long)c->n_kv, (long long)c->head_dim);
done:
    hvq_json_free(doc);
    return st;
}

/* GGUF's general.file_type for the output's weights (llama.cpp's
 * LLAMA_FTYPE_*): all F32 0, mostly F16 1, mostly BF16 32. */
static uint32_t lc_file_type(hvq_dtype t)
{
    return t == HVQ_DTYPE_F16 ? 1u : t == HVQ_DTYPE_BF16 ? 32u : 0u;
}

/* The name of the model: the last component of its directory. */
static void lc_general_name(hvq_llama_meta *m, const hvq_convert_setup *s)
{
    const char *p = s->model_dir ? s->model_dir : s->path;
    char name[256];
    size_t n = strlen(p);
    while (n > 1 && p[n - 1] == '/')
        n--;
    size_t b = n;
    while (b > 0 && p[b - 1] != '/')
        b--;
    snprintf(name, sizeof name, "%.*s", (int)(n - b), p + b);
    hvq_llama_meta_str(m, "general.name", name);
}

static void lc_arch_meta(hvq_llama_meta *m, const lc_cfg *c, const hvq_convert_setup *s)
{
    hvq_llama_meta_str(m, "general.architecture", "llama");
    lc_general_name(m, s);
    hvq_llama_meta_u32(m, "general.file_type", lc_file_type(s->dtype));
    if (c->ctx_len)
        hvq_llama_meta_u32(m, "llama.context_length", (uint32_t)c->ctx_len);
    hvq_llama_meta_u32(m, "llama.embedding_length", (uint32_t)c->hidden);
    hvq_llama_meta_u32(m, "llama.block_count", (uint32_t)c->n_layers);
    hvq_llama_meta_u32(m, "llama.feed_forward_length", (uint32_t)c->inter);
    hvq_llama_meta_u32(m, "llama.rope.dimension_count", (uint32_t)c->head_dim);
    hvq_llama_meta_u32(m, "llama.attention.head_count", (uint32_t)c->n_heads);
    hvq_llama_meta_u32(m, "llama.attention.head_count_kv", (uint32_t)c->n_kv);
    if (c->head_dim * c->n_heads != c->hidden) {
        hvq_llama_meta_u32(m, "llama.attention.key_length", (uint32_t)c->head_dim);
        hvq_llama_meta_u32(m, "llama.attention.value_length", (uint32_t)c->head_dim);
    }
    hvq_llama_meta_f32(m, "llama.attention.layer_norm_rms_epsilon", c->eps);
    hvq_llama_meta_f32(m, "llama.rope.freq_base", c->theta);
    if (c->vocab)
        hvq_llama_meta_u32(m, "llama.vocab_size", (uint32_t)c->vocab);
}

/* dir/name when it is a regular file (malloc'd), else NULL. */
static char *lc_in_dir(const char *dir, const char *name)
{
    struct stat sb;
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = dir ? malloc(n) : NULL;
    if (!p)
        return NULL;
    snprintf(p, n, "%s/%s", dir, name);
    if (stat(p, &sb) == 0 && S_ISREG(sb.st_mode))
        return p;
    free(p);
    return NULL;
}

/* The tokenizer: --tokenizer (llama2.c), else the directory's
 * tokenizer.model (SentencePiece, as llama.cpp's converter prefers it),
 * else its tokenizer.json; a warning when there is none. */
static hvq_status lc_tokenizer_meta(hvq_ctx *ctx, lc_state *s, const hvq_convert_setup *su)
{
    if (su->tokenizer)
        return hvq_llama_tok_llama2c(ctx, su->tokenizer, &s->meta);
    char *p = su->model_dir ? lc_in_dir(su->model_dir, "tokenizer.model") : NULL;
    if (p) {
        hvq_status st = hvq_llama_tok_spm(ctx, p, &s->meta);
        free(p);
        return st;
    }
    if ((p = su->model_dir ? lc_in_dir(su->model_dir, "tokenizer.json") : NULL)) {
        hvq_status st = hvq_llama_tok_bpe(ctx, p, s->c.ids, &s->meta);
        free(p);
        return st;
    }
    ctx->host->log(ctx, HVQ_LOG_WARN, "%s: no tokenizer (no tokenizer.model or tokenizer.json "
                   "in the model's directory, no --tokenizer): the GGUF file has no vocabulary "
                   "and llama.cpp will not load it", su->path);
    return HVQ_OK;
}

/* The token embedding's rows: the vocabulary when config.json has none. */
static int64_t lc_embed_rows(const hvq_convert_setup *s, const char *name)
{
    for (size_t i = 0; i < s->n_tensors; i++)
        if (strcmp(s->tensors[i].name, name) == 0 && s->tensors[i].ndim == 2)
            return s->tensors[i].shape[0];
    return 0;
}

static hvq_status lc_open_to_gguf(hvq_ctx *ctx, lc_state *s, const hvq_convert_setup *su)
{
    hvq_status st = lc_cfg_json(ctx, su, &s->c);
    if (st != HVQ_OK)
        return st;
    if (!s->c.vocab)
        s->c.vocab = lc_embed_rows(su, "model.embed_tokens.weight");
    lc_arch_meta(&s->meta, &s->c, su);
    if ((st = lc_tokenizer_meta(ctx, s, su)) != HVQ_OK)
        return st;
    return s->meta.oom ? ctx->host->error(ctx, HVQ_E_NOMEM, "out of memory") : HVQ_OK;
}

/* ------------------------------------------------------------------------
 * GGUF metadata -> Hugging Face config.json
 * ---------------------------------------------------------------------- */

/* A number of the GGUF metadata, def when absent (required: an error). */
static hvq_status lc_meta_num(hvq_ctx *ctx, const hvq_convert_setup *s, const char *key,
                              int required, double def, double *out)
{
    hvq_json_doc *doc = NULL;
    const hvq_json_value *v = hvq_meta_typed(s->meta, s->n_meta, key, &doc, NULL, NULL);
    int bad = v && hvq_json_double(v, out) != 0;
    hvq_json_free(doc);
    if (bad || (!v && required))
        return ctx->host->error(ctx, HVQ_E_INPUT, "%s: metadata '%s' is %s", s->path, key,
                                bad ? "not a number" : "missing (a llama model needs it)");
    if (!v)
        *out = def;
    return HVQ_OK;
}

static hvq_status lc_cfg_meta(hvq_ctx *ctx, const hvq_convert_setup *s, lc_cfg *c)
{
    static const struct { const char *key; double def; } keys[] = {
        {"llama.block_count", -1}, {"llama.embedding_length", -1},
        {"llama.feed_forward_length", -1}, {"llama.attention.head_count", -1},
        {"llama.attention.head_count_kv", 0}, {"llama.rope.dimension_count", 0},
        {"llama.context_length", 0}, {"llama.vocab_size", 0},
        {"tokenizer.ggml.bos_token_id", -2}, {"tokenizer.ggml.eos_token_id", -2},
        {"tokenizer.ggml.padding_token_id", -2},
    };
    int64_t *dst[] = {&c->n_layers, &c->hidden, &c->inter, &c->n_heads, &c->n_kv, &c->head_dim,
                      &c->ctx_len, &c->vocab, &c->ids[0], &c->ids[1], &c->ids[2]};
    hvq_status st = HVQ_OK;
    for (size_t i = 0; i < sizeof keys / sizeof keys[0] && st == HVQ_OK; i++) {
        double v;
        double def = keys[i].def < 0 ? -1 : keys[i].def;
        st = lc_meta_num(ctx, s, keys[i].key, keys[i].def == -1, def, &v);
        if (st == HVQ_OK && (v != (double)(int64_t)v || v > 2147483647.0 ||
                             (keys[i].def == -1 && v < 1) || (keys[i].def != -2 && v < 0)))
            st = ctx->host->error(ctx, HVQ_E_INPUT, "%s: metadata '%s' is %g, not a positive "
                                  "whole number", s->path, keys[i].key, v);
        *dst[i] = (int64_t)v;
    }
    if (st == HVQ_OK &&
        (st = lc_meta_num(ctx, s, "llama.attention.layer_norm_rms_epsilon", 0, 1e-5, &c->eps)) ==
            HVQ_OK)
        st = lc_meta_num(ctx, s, "llama.rope.freq_base", 0, 10000.0, &c->theta);
    if (st != HVQ_OK)
        return st;
    if (!c->n_kv)
        c->n_kv = c->n_heads;
    if (!c->head_dim)
        c->head_dim = c->hidden / c->n_heads;
    if (c->n_heads % c->n_kv != 0 || c->head_dim % 2 != 0)
        return ctx->host->error(ctx, HVQ_E_INPUT, "%s: %lld heads, %lld key/value heads of %lld "
                                "dimensions: not a Llama attention", s->path,
                                (long long)c->n_heads, (long long)c->n_kv, (long long)c->head_dim);
    return HVQ_OK;
}

static const char *lc_torch_dtype(hvq_dtype t)
{
    return t == HVQ_DTYPE_F16 ? "float16" : t == HVQ_DTYPE_BF16 ? "bfloat16" : "float32";
}

/* A float32 value with the fewest digits that read back to it (1e-05,
 * not 9.99999975e-06). */
static void lc_put_f32(hvq_buf *b, double v)
{
    char t[32];
    if (v == (double)(int64_t)v && v > -1e15 && v < 1e15) {
        hvq_buf_printf(b, "%.1f", v); /* 10000.0 */
        return;
    }
    for (int digits = 1; digits <= 9; digits++) {
        snprintf(t, sizeof t, "%.*g", digits, v);
        if ((float)strtod(t, NULL) == (float)v)
            break;
    }
    hvq_buf_puts(b, t);
}

static void lc_config_json(hvq_buf *b, const lc_cfg *c, hvq_dtype dtype)
{
    hvq_buf_puts(b, "{\n  \"architectures\": [\"LlamaForCausalLM\"],\n"
                    "  \"model_type\": \"llama\",\n  \"hidden_act\": \"silu\",\n");
    hvq_buf_printf(b, "  \"hidden_size\": %lld,\n  \"intermediate_size\": %lld,\n"
                   "  \"num_hidden_layers\": %lld,\n  \"num_attention_heads\": %lld,\n"
                   "  \"num_key_value_heads\": %lld,\n  \"head_dim\": %lld,\n",
                   (long long)c->hidden, (long long)c->inter, (long long)c->n_layers,
                   (long long)c->n_heads, (long long)c->n_kv, (long long)c->head_dim);
    if (c->vocab)
        hvq_buf_printf(b, "  \"vocab_size\": %lld,\n", (long long)c->vocab);
    if (c->ctx_len)
        hvq_buf_printf(b, "  \"max_position_embeddings\": %lld,\n", (long long)c->ctx_len);
    hvq_buf_puts(b, "  \"rms_norm_eps\": ");
    lc_put_f32(b, c->eps);
    hvq_buf_puts(b, ",\n  \"rope_theta\": ");
    lc_put_f32(b, c->theta);
    hvq_buf_puts(b, ",\n");
    static const char *const id_keys[3] = {"bos_token_id", "eos_token_id", "pad_token_id"};
    for (int i = 0; i < 3; i++)
        if (c->ids[i] >= 0)
            hvq_buf_printf(b, "  \"%s\": %lld,\n", id_keys[i], (long long)c->ids[i]);
    hvq_buf_printf(b, "  \"tie_word_embeddings\": %s,\n  \"torch_dtype\": \"%s\"\n}\n",
                   c->tied ? "true" : "false", lc_torch_dtype(dtype));
}

/* Takes b's text as output file name. */
static hvq_status lc_add_file(hvq_ctx *ctx, lc_state *s, const char *name, hvq_buf *b)
{
    if (b->oom) {
        hvq_buf_free(b);
        return ctx->host->error(ctx, HVQ_E_NOMEM, "out of memory");
    }
    lc_file *f = &s->files[s->n_files++];
    f->name = name;
    f->len = b->len;
    f->data = b->data;
    return HVQ_OK;
}

static hvq_status lc_open_to_hf(hvq_ctx *ctx, lc_state *s, const hvq_convert_setup *su)
{
    hvq_status st = lc_cfg_meta(ctx, su, &s->c);
    if (st != HVQ_OK)
        return st;
    s->c.tied = lc_embed_rows(su, "output.weight") == 0;
    if (!s->c.vocab)
        s->c.vocab = lc_embed_rows(su, "token_embd.weight");
    hvq_buf b;
    hvq_buf_init(&b);
    lc_config_json(&b, &s->c, su->dtype);
    if ((st = lc_add_file(ctx, s, "config.json", &b)) != HVQ_OK)
        return st;
    hvq_buf_init(&b);
    hvq_buf_puts(&b, "{\n");
    if (s->c.ids[0] >= 0)
        hvq_buf_printf(&b, "  \"bos_token_id\": %lld,\n", (long long)s->c.ids[0]);
    if (s->c.ids[1] >= 0)
        hvq_buf_printf(&b, "  \"eos_token_id\": %lld,\n", (long long)s->c.ids[1]);
    hvq_buf_puts(&b, "  \"_from_model_config\": true\n}\n");
    if ((st = lc_add_file(ctx, s, "generation_config.json", &b)) != HVQ_OK)
        return st;
    /* the vocabulary as the file its kind has: tokenizer.json for a
     * byte-level BPE, tokenizer.model for a SentencePiece one */
    static const char *const names[2] = {"tokenizer.json", "tokenizer.model"};
    for (int k = 0; k < 2; k++) {
        hvq_buf_init(&b);
        st = (k ? hvq_llama_tok_model : hvq_llama_tok_json)(ctx, su->meta, su->n_meta, su->path,
                                                             &b);
        if (st == HVQ_OK)
            return lc_add_file(ctx, s, names[k], &b);
        hvq_buf_free(&b);
        if (st != HVQ_E_NOTFOUND)
            return st;
    }
    ctx->host->log(ctx, HVQ_LOG_WARN, "%s: no vocabulary written (tokenizer.ggml.model is "
                   "neither \"gpt2\" nor \"llama\"): copy the model's tokenizer files beside "
                   "the output", su->path);
    return HVQ_OK;
}

/* ------------------------------------------------------------------------
 * The callbacks
 * ---------------------------------------------------------------------- */

void hvq_llama_convert_close(hvq_ctx *ctx, void *state)
{
    (void)ctx;
    lc_state *s = state;
    if (!s)
        return;
    hvq_llama_meta_free(&s->meta);
    for (size_t i = 0; i < s->n_names; i++)
        free(s->names[i]);
    free(s->names);
    for (size_t i = 0; i < s->n_files; i++)
        free(s->files[i].data);
    free(s->what);
    free(s);
}

hvq_status hvq_llama_convert_open(hvq_ctx *ctx, const hvq_convert_setup *su, void **state)
{
    lc_state *s = calloc(1, sizeof *s);
    *state = s;
    if (!s || !(s->what = strdup(su->path ? su->path : "model")))
        return ctx->host->error(ctx, HVQ_E_NOMEM, "out of memory");
    s->to_gguf = su->to_gguf;
    if (su->to_gguf && !su->config_json)
        return ctx->host->error(ctx, HVQ_E_INTERNAL, "%s: no configuration", su->path);
    return su->to_gguf ? lc_open_to_gguf(ctx, s, su) : lc_open_to_hf(ctx, s, su);
}

/* Checks that a q or k projection has the rows its heads need. */
static hvq_status lc_check_rows(hvq_ctx *ctx, const lc_state *s, const hvq_tensor_info *t,
                                int rows, int64_t *n_head)
{
    *n_head = rows == HVQ_LLAMA_ROWS_Q ? s->c.n_heads : s->c.n_kv;
    if (t->ndim == 2 && t->shape[0] == *n_head * s->c.head_dim)
        return HVQ_OK;
    return ctx->host->error(ctx, HVQ_E_INPUT, "%s: tensor '%s' has %lld rows; %lld heads of "
                            "%lld dimensions need %lld", s->what, t->name,
                            (long long)(t->ndim ? t->shape[0] : 0), (long long)*n_head,
                            (long long)s->c.head_dim, (long long)(*n_head * s->c.head_dim));
}

hvq_status hvq_llama_convert_tensor(hvq_ctx *ctx, void *state, const hvq_tensor_info *in,
                                    hvq_convert_tensor *out)
{
    lc_state *s = state;
    char buf[256];
    int rows;
    memset(out, 0, sizeof *out);
    if (!hvq_llama_map_name(s->to_gguf, in->name, buf, sizeof buf, &rows)) {
        size_t n = strlen(in->name);
        if (n >= 20 && strcmp(in->name + n - 20, ".rotary_emb.inv_freq") == 0)
            return HVQ_OK; /* recomputed by every runtime: dropped, as llama.cpp does */
        return ctx->host->error(ctx, HVQ_E_UNSUPPORTED, "%s: tensor '%s' has no place in a %s "
                                "Llama model", s->what, in->name,
                                s->to_gguf ? "llama.cpp" : "Hugging Face");
    }
    int64_t n_head;
    hvq_status st = rows ? lc_check_rows(ctx, s, in, rows, &n_head) : HVQ_OK;
    if (st != HVQ_OK)
        return st;
    char **v = realloc(s->names, (s->n_names + 1) * sizeof *v);
    if (!v || !(v[s->n_names] = strdup(buf))) {
        if (v)
            s->names = v;
        return ctx->host->error(ctx, HVQ_E_NOMEM, "out of memory");
    }
    s->names = v;
    out->name = v[s->n_names++];
    out->reorder = rows != HVQ_LLAMA_ROWS_KEEP;
    /* llama.cpp keeps norms (vectors) in F32, whatever the weights' type */
    out->keep = s->to_gguf && in->ndim == 1 ? HVQ_DTYPE_F32 : HVQ_DTYPE_OPAQUE;
    return HVQ_OK;
}

hvq_status hvq_llama_convert_rows(hvq_ctx *ctx, void *state, const hvq_tensor *in, void *out)
{
    lc_state *s = state;
    char buf[256];
    int rows = 0;
    int64_t n_head;
    hvq_llama_map_name(s->to_gguf, in->info.name, buf, sizeof buf, &rows);
    hvq_status st = rows ? lc_check_rows(ctx, s, &in->info, rows, &n_head)
                         : ctx->host->error(ctx, HVQ_E_INTERNAL, "%s: tensor '%s' keeps its "
                                            "rows", s->what, in->info.name);
    if (st == HVQ_OK)
        hvq_llama_permute_rows(out, in->data, (int)n_head, in->info.shape[0],
                               (size_t)(in->info.nbytes / (uint64_t)in->info.shape[0]),
                               s->to_gguf);
    return st;
}

hvq_status hvq_llama_convert_meta(hvq_ctx *ctx, void *state, const hvq_meta **meta, size_t *n)
{
    (void)ctx;
    lc_state *s = state;
    *meta = s->meta.v;
    *n = s->meta.n;
    return HVQ_OK;
}

hvq_status hvq_llama_convert_file(hvq_ctx *ctx, void *state, size_t k, const char **name,
                                  const void **data, size_t *len)
{
    (void)ctx;
    lc_state *s = state;
    if (k >= s->n_files)
        return HVQ_E_NOTFOUND;
    *name = s->files[k].name;
    *data = s->files[k].data;
    *len = s->files[k].len;
    return HVQ_OK;
}
