/* Perplexity evaluation (`hvqconv eval`) on a model plugin
 * (HVQ_KIND_MODEL, e.g. "llama"); see eval.h. */
#include "config.h"

#include "cli.h"
#include "container.h"
#include "driver.h"
#include "eval.h"
#include "file.h"
#include "finite.h"
#include "buf.h"
#include "json.h"
#include "meta.h"
#include "tokens.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <yaml.h>

/* ------------------------------------------------------------------------
 * Small helpers
 * ---------------------------------------------------------------------- */

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int is_dir(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static int is_file(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* The directory part of path ("." when none), malloc'd. */
static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return strdup(".");
    if (slash == path)
        return strdup("/");
    char *d = malloc((size_t)(slash - path) + 1);
    if (d) {
        memcpy(d, path, (size_t)(slash - path));
        d[slash - path] = '\0';
    }
    return d;
}

/* The config.json that belongs to a model path (a directory: inside it; a
 * file: beside it), malloc'd, or NULL when there is none. */
static char *config_for(const char *model)
{
    char *dir = is_dir(model) ? strdup(model) : dir_of(model);
    char *p = dir ? hvq_path_join(dir, "config.json") : NULL;
    free(dir);
    if (p && !is_file(p)) {
        free(p);
        p = NULL;
    }
    return p;
}

/* Reads a whole text file of at most max bytes, NUL-terminated. */
static hvq_status read_text(hvq_ctx *ctx, const char *path, long max, char **out, size_t *len)
{
    *out = NULL;
    int odd;
    FILE *f = hvq_fopen_input(ctx, path, &odd);
    if (!f)
        return hvq_error(ctx, odd || errno == ENOENT ? HVQ_E_INPUT : HVQ_E_IO,
                         "%s: cannot open: %s", path,
                         odd ? "not a regular file (a FIFO, a device?)" : strerror(errno));
    long size = -1;
    if (fseek(f, 0, SEEK_END) == 0)
        size = ftell(f);
    if (size < 0 || size > max || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return hvq_error(ctx, HVQ_E_INPUT, "%s: not a readable file of at most %ld MiB", path,
                         max >> 20);
    }
    char *text = hvq_alloc(ctx, (size_t)size + 1);
    if (!text) {
        fclose(f);
        return HVQ_E_NOMEM;
    }
    size_t got = fread(text, 1, (size_t)size, f);
    fclose(f);
    if (got != (size_t)size) {
        free(text);
        return hvq_error(ctx, HVQ_E_IO, "%s: read error", path);
    }
    text[size] = '\0';
    *out = text;
    if (len)
        *len = (size_t)size;
    return HVQ_OK;
}

/* The top-level scalar `key` of a YAML document, malloc'd, or NULL. */
static char *yaml_top_scalar(const char *text, const char *key)
{
    if (!text)
        return NULL;
    char *val = NULL;
    yaml_parser_t p;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&p))
        return NULL;
    yaml_parser_set_input_string(&p, (const unsigned char *)text, strlen(text));
    if (yaml_parser_load(&p, &doc)) {
        yaml_node_t *root = yaml_document_get_root_node(&doc);
        if (root && root->type == YAML_MAPPING_NODE)
            for (yaml_node_pair_t *q = root->data.mapping.pairs.start;
                 q < root->data.mapping.pairs.top && !val; q++) {
                yaml_node_t *k = yaml_document_get_node(&doc, q->key);
                yaml_node_t *v = yaml_document_get_node(&doc, q->value);
                if (k && v && k->type == YAML_SCALAR_NODE && v->type == YAML_SCALAR_NODE &&
                    strcmp((const char *)k->data.scalar.value, key) == 0)
                    val = strdup((const char *)v->data.scalar.value);
            }
        yaml_document_delete(&doc);
    }
    yaml_parser_delete(&p);
    return val;
}

/* ------------------------------------------------------------------------
 * Tokens
 * ---------------------------------------------------------------------- */

hvq_status hvq_eval_read_tokens(hvq_ctx *ctx, const char *path, int32_t **ids, uint64_t *n)
{
    return hvq_tokens_read(ctx, path, ids, n);
}

/* ------------------------------------------------------------------------
 * Tensor supplier for a container (a model file is read by the model
 * plugin itself, through host->model_find)
 * ---------------------------------------------------------------------- */

typedef struct src_container {
    hvq_container *c;
} src_container;

static hvq_status get_from_container(void *ud, hvq_ctx *ctx, const char *name, float **data,
                                     int *ndim, int64_t shape[HVQ_MAX_DIMS])
{
    src_container *s = ud;
    size_t n = hvq_container_count(s->c);
    for (size_t i = 0; i < n; i++) {
        const hvq_container_tensor *t = hvq_container_info(s->c, i);
        if (strcmp(t->name, name) != 0)
            continue;
        float *out = hvq_alloc(ctx, (size_t)(t->numel ? t->numel : 1) * sizeof *out);
        if (!out)
            return HVQ_E_NOMEM;
        hvq_status st = hvq_container_read_decoded(ctx, s->c, i, out);
        if (st != HVQ_OK) {
            free(out);
            return st;
        }
        *data = out;
        *ndim = t->ndim;
        memcpy(shape, t->shape, sizeof t->shape);
        return HVQ_OK;
    }
    return HVQ_E_NOTFOUND;
}

/* ------------------------------------------------------------------------
 * Opening a model
 * ---------------------------------------------------------------------- */

/* Whether a path names an hvq container without opening it: *.hvq,
 * *.hvq.index.json, or a directory with such a file and no safetensors
 * model. */
static int container_by_name(const char *path)
{
    if (hvq_ends_with(path, ".hvq") || hvq_ends_with(path, ".hvq.index.json"))
        return 1;
    if (!is_dir(path))
        return 0;
    DIR *d = opendir(path);
    if (!d)
        return 0;
    int hvq = 0, st = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (hvq_ends_with(e->d_name, ".hvq") || hvq_ends_with(e->d_name, ".hvq.index.json"))
            hvq = 1;
        if (hvq_ends_with(e->d_name, ".safetensors") || hvq_ends_with(e->d_name, ".safetensors.index.json"))
            st = 1;
    }
    closedir(d);
    return hvq && !st;
}

char *hvq_container_config_path(hvq_container *c, const char *path)
{
    char *input = yaml_top_scalar(hvq_container_meta(c, "hvq.pipeline"), "input");
    char *found = NULL;
    if (input && *input) {
        found = config_for(input);
        if (!found && input[0] != '/') {
            char *cdir = is_dir(path) ? strdup(path) : dir_of(path);
            char *rel = cdir ? hvq_path_join(cdir, input) : NULL;
            if (rel)
                found = config_for(rel);
            free(rel);
            free(cdir);
        }
    }
    free(input);
    if (!found)
        found = config_for(path);
    return found;
}

/* ------------------------------------------------------------------------
 * Evaluation
 * ---------------------------------------------------------------------- */

/* One evaluation: what is open, released by eval_release. */
typedef struct eval_run {
    hvq_ctx *ctx;
    const hvq_registry *reg;
    const char *model_path;
    const char *tokens_path, *text_path; /* one of them */
    hvq_container *cont;
    src_container sc;
    hvq_model *model;
    const hvq_meta *meta;
    size_t n_meta;
    char *config_text, *found_config;
    const hvq_plugin *mp; /* the model plugin */
    void *state;          /* its model */
    int32_t *ids;
    uint64_t n_ids;
} eval_run;

static void eval_release(eval_run *r)
{
    if (r->state)
        r->mp->model_close(r->ctx, r->state);
    if (r->model)
        r->ctx->host->model_close(r->ctx, r->model);
    hvq_container_close(r->ctx, r->cont);
    free(r->ids);
    free(r->config_text);
    free(r->found_config);
}

/* The model: a container, else any model file a source plugin reads; its
 * metadata, and the kind res reports. */
static hvq_status eval_open_model(eval_run *r, hvq_eval_result *res)
{
    hvq_ctx *ctx = r->ctx;
    int is_container = container_by_name(r->model_path);
    if (!is_container) {
        r->model = ctx->host->model_open(ctx, r->model_path);
        if (!r->model)
            return hvq_ctx_status(ctx) ? hvq_ctx_status(ctx) : HVQ_E_INPUT;
        ctx->host->model_meta(r->model, &r->meta, &r->n_meta);
        const char *fmt = hvq_meta_find(r->meta, r->n_meta, "format");
        if (fmt && strcmp(fmt, "hvq") == 0) {
            ctx->host->model_close(ctx, r->model);
            r->model = NULL;
            r->meta = NULL;
            r->n_meta = 0;
            is_container = 1;
        }
    }
    if (is_container) {
        hvq_status st = hvq_container_open(ctx, r->reg, r->model_path, &r->cont);
        if (st != HVQ_OK)
            return st;
        hvq_container_source_meta(r->cont, &r->meta, &r->n_meta);
        snprintf(res->kind, sizeof res->kind, "hvq container");
        r->sc.c = r->cont;
        return HVQ_OK;
    }
    const char *fmt = ctx->host->detect(ctx, r->model_path);
    snprintf(res->kind, sizeof res->kind, "%s", fmt ? fmt : "model");
    hvq_ctx_clear_error(ctx);
    return HVQ_OK;
}

/* The model plugin: the one that runs the GGUF metadata's architecture,
 * else "llama" (which reports a configuration it cannot run). */
static hvq_status eval_pick_plugin(eval_run *r)
{
    hvq_ctx *ctx = r->ctx;
    char arch[64];
    r->mp = NULL;
    if (hvq_meta_string(r->meta, r->n_meta, "general.architecture", arch, sizeof arch)) {
        r->mp = ctx->host->model_plugin(ctx, NULL, arch);
        hvq_ctx_clear_error(ctx);
    }
    if (!r->mp)
        r->mp = ctx->host->model_plugin(ctx, "llama", NULL);
    return r->mp ? HVQ_OK : hvq_ctx_status(ctx);
}

/* Tokens from a text file: a tokenizer file (llama2.c's for "llama"), else
 * the vocabulary in the model's GGUF metadata. */
static hvq_status eval_tokenize(eval_run *r, const char *tokenizer_path)
{
    hvq_ctx *ctx = r->ctx;
    const hvq_plugin *mp = r->mp;
    if (!mp->tokenizer_open || !mp->tokenizer_encode_text || !mp->tokenizer_close)
        return hvq_error(ctx, HVQ_E_UNSUPPORTED, "%s: the model plugin '%s' has no tokenizer; "
                         "give --tokens", r->text_path, mp->name);
    void *tok = NULL;
    hvq_status st = mp->tokenizer_open(ctx, tokenizer_path, r->meta, r->n_meta, r->model_path,
                                       &tok);
    char *text = NULL;
    size_t len = 0, cnt = 0;
    if (st == HVQ_OK && (st = read_text(ctx, r->text_path, 1L << 30, &text, &len)) == HVQ_OK)
        st = mp->tokenizer_encode_text(ctx, tok, text, len, &r->ids, &cnt);
    r->n_ids = cnt;
    free(text);
    if (tok)
        mp->tokenizer_close(ctx, tok);
    if (st == HVQ_OK && cnt == 0)
        st = hvq_error(ctx, HVQ_E_INPUT, "%s: no text", r->text_path);
    return st;
}

/* The configuration: --config, else GGUF metadata, else a config.json
 * found beside the model (or the model a container's pipeline read). */
static hvq_status eval_config(eval_run *r, const char *config_path, hvq_model_input *in)
{
    hvq_ctx *ctx = r->ctx;
    hvq_status st;
    if (config_path) {
        if ((st = read_text(ctx, config_path, 64L << 20, &r->config_text, NULL)) != HVQ_OK)
            return st;
        in->config_json = r->config_text;
        return HVQ_OK;
    }
    if (hvq_meta_find(r->meta, r->n_meta, "general.architecture")) {
        in->meta = r->meta;
        in->n_meta = r->n_meta;
        return HVQ_OK;
    }
    r->found_config = r->cont ? hvq_container_config_path(r->cont, r->model_path)
                              : config_for(r->model_path);
    if (!r->found_config)
        return hvq_error(ctx, HVQ_E_INPUT,
                         "%s: no model configuration: no config.json %s and no GGUF metadata; "
                         "give one with --config", r->model_path,
                         r->cont ? "beside the container or the model its pipeline read"
                                 : (is_dir(r->model_path) ? "in the directory"
                                                          : "beside the file"));
    if ((st = read_text(ctx, r->found_config, 64L << 20, &r->config_text, NULL)) != HVQ_OK)
        return st;
    in->config_json = r->config_text;
    hvq_log(ctx, HVQ_LOG_DEBUG, "%s: configuration from %s", r->model_path, r->found_config);
    return HVQ_OK;
}

/* Builds the model with the plugin; the files are closed once it has its
 * own copies of the weights. Checks the tokens against its vocabulary. */
static hvq_status eval_load(eval_run *r, const hvq_model_input *in, hvq_eval_result *res)
{
    hvq_ctx *ctx = r->ctx;
    hvq_status st = r->mp->model_open(ctx, NULL, in, &r->state);
    if (st != HVQ_OK)
        return st;
    if (r->mp->model_set_stop)
        r->mp->model_set_stop(r->state, &hvq_interrupted); /* a window stops within a tile */
    r->mp->model_info(r->state, &res->config);
    if (r->model) {
        ctx->host->model_close(ctx, r->model);
        r->model = NULL;
    }
    if (r->cont) {
        hvq_container_close(ctx, r->cont);
        r->cont = NULL;
    }
    for (uint64_t i = 0; i < r->n_ids; i++)
        if (r->ids[i] >= res->config.vocab)
            return hvq_error(ctx, HVQ_E_INPUT,
                             "%s: token %llu has id %d, outside the model's vocabulary of %d "
                             "(tokens from another tokenizer?)",
                             r->tokens_path ? r->tokens_path : r->text_path,
                             (unsigned long long)i, (int)r->ids[i], res->config.vocab);
    hvq_log(ctx, HVQ_LOG_DEBUG,
            "%s (%s): %d layers, hidden %d, MLP %d, %d heads (%d key/value), vocabulary %d%s",
            r->model_path, res->kind, res->config.n_layers, res->config.hidden,
            res->config.intermediate, res->config.n_heads, res->config.n_kv_heads,
            res->config.vocab, res->config.tied ? ", tied output" : "");
    return HVQ_OK;
}

/* Runs the windows, with progress on a terminal; fills res. */
static hvq_status eval_windows(eval_run *r, uint64_t windows, int ctx_len, hvq_eval_result *res)
{
    hvq_ctx *ctx = r->ctx;
    double t1 = now_seconds(), nll = 0;
    uint64_t scored = 0;
    hvq_status st = HVQ_OK;
    /* Progress on a terminal: the window and the perplexity so far. */
    int tty = !hvq_ctx_options(ctx)->quiet && isatty(2);
    for (uint64_t w = 0; w < windows; w++) {
        if (hvq_interrupted) {
            st = hvq_interrupt_error(ctx);
            break;
        }
        st = r->mp->model_window(ctx, r->state, r->ids + w * (uint64_t)ctx_len, ctx_len, &nll,
                                 &scored);
        if (st != HVQ_OK)
            break;
        if (tty) {
            double el = now_seconds() - t1;
            fprintf(stderr, "\r\033[Keval: window %llu/%llu, PPL so far %.4f, ETA %.0fs",
                    (unsigned long long)(w + 1), (unsigned long long)windows,
                    exp(nll / (double)scored), el / (double)(w + 1) * (double)(windows - w - 1));
            fflush(stderr);
            hvq_ctx_line_dirty(ctx, 1);
        }
    }
    if (tty) {
        fputs("\r\033[K", stderr);
        hvq_ctx_line_dirty(ctx, 0);
    }
    /* A signal during the last window, after its last check, still fails. */
    if (st == HVQ_OK && hvq_interrupted)
        st = hvq_interrupt_error(ctx);
    if (st != HVQ_OK)
        return st;
    res->seconds = now_seconds() - t1;
    res->n_windows = windows;
    res->n_scored = scored;
    res->nll = nll / (double)scored;
    res->ppl = exp(res->nll);
    if (!isfinite(res->nll))
        return hvq_error(ctx, HVQ_E_INPUT, "%s: the loss is not finite (the forward pass "
                         "overflows with these weights)", r->model_path);
    return HVQ_OK;
}

/* Everything up to the windows: tokens, model, plugin, configuration. */
static hvq_status eval_prepare(eval_run *r, const char *tokenizer_path, int ctx_len,
                               int max_windows, const char *config_path, hvq_eval_result *res,
                               uint64_t *windows)
{
    hvq_ctx *ctx = r->ctx;
    hvq_status st;
    if (r->tokens_path &&
        (st = hvq_eval_read_tokens(ctx, r->tokens_path, &r->ids, &r->n_ids)) != HVQ_OK)
        return st;
    if ((st = eval_open_model(r, res)) != HVQ_OK || (st = eval_pick_plugin(r)) != HVQ_OK)
        return st;
    /* The tokens of a text, once the model's vocabulary is at hand. */
    if (!r->tokens_path && (st = eval_tokenize(r, tokenizer_path)) != HVQ_OK)
        return st;
    res->n_tokens = r->n_ids;
    *windows = r->n_ids / (uint64_t)ctx_len;
    if (max_windows > 0 && *windows > (uint64_t)max_windows)
        *windows = (uint64_t)max_windows;
    if (*windows == 0)
        return hvq_error(ctx, HVQ_E_INPUT, "%s: %llu tokens is less than one window of %d",
                         r->tokens_path ? r->tokens_path : r->text_path,
                         (unsigned long long)r->n_ids, ctx_len);
    hvq_model_input in = {.path = r->model_path, .model = r->model};
    if (r->cont) {
        in.get = get_from_container;
        in.get_ud = &r->sc;
    }
    if ((st = eval_config(r, config_path, &in)) != HVQ_OK)
        return st;
    return eval_load(r, &in, res);
}

static hvq_status eval_core(hvq_ctx *ctx, const hvq_registry *reg, const char *model_path,
                            const char *tokens_path, const char *text_path,
                            const char *tokenizer_path, int ctx_len, int max_windows,
                            const char *config_path, hvq_eval_result *res)
{
    memset(res, 0, sizeof *res);
    if (ctx_len < 2)
        return hvq_error(ctx, HVQ_E_INPUT, "the context length must be at least 2 tokens (got "
                         "%d): the first token of a window is not scored", ctx_len);
    if (max_windows < 0)
        return hvq_error(ctx, HVQ_E_INPUT, "the number of windows may not be negative");
    const hvq_registry *saved = hvq_ctx_registry(ctx);
    hvq_ctx_set_registry(ctx, reg);
    double t0 = now_seconds();
    eval_run r = {.ctx = ctx, .reg = reg, .model_path = model_path, .tokens_path = tokens_path,
                  .text_path = text_path};
    res->ctx_len = ctx_len;
    uint64_t windows = 0;
    hvq_status st =
        eval_prepare(&r, tokenizer_path, ctx_len, max_windows, config_path, res, &windows);
    if (st == HVQ_OK) {
        res->load_seconds = now_seconds() - t0;
        st = eval_windows(&r, windows, ctx_len, res);
    }
    eval_release(&r);
    hvq_ctx_set_registry(ctx, saved);
    return st;
}

hvq_status hvq_eval_model(hvq_ctx *ctx, const hvq_registry *reg, const char *model_path,
                          const char *tokens_path, int ctx_len, int max_windows,
                          const char *config_path, hvq_eval_result *res)
{
    return eval_core(ctx, reg, model_path, tokens_path, NULL, NULL, ctx_len, max_windows,
                     config_path, res);
}

hvq_status hvq_eval_model_text(hvq_ctx *ctx, const hvq_registry *reg, const char *model_path,
                               const char *text_path, const char *tokenizer_path, int ctx_len,
                               int max_windows, const char *config_path, hvq_eval_result *res)
{
    return eval_core(ctx, reg, model_path, NULL, text_path, tokenizer_path, ctx_len, max_windows,
                     config_path, res);
}

/* ------------------------------------------------------------------------
 * The command
 * ---------------------------------------------------------------------- */

enum { OPT_PLUGIN_DIR = 1000, OPT_JSON, OPT_CONFIG, OPT_TEXT, OPT_TOKENIZER };

static void usage_eval(FILE *f)
{
    fputs("Usage: hvqconv eval MODEL --tokens FILE [OPTION]...\n"
          "       hvqconv eval MODEL --text FILE [--tokenizer tokenizer.bin] [OPTION]...\n"
          "Perplexity of a Llama-family model (Llama 1/2/3, TinyLlama, SmolLM2, Mistral)\n"
          "on a token file, with a built-in CPU forward pass in float32. The stream is cut\n"
          "into consecutive windows of --ctx tokens from its start (a last partial window\n"
          "is dropped); every token after the first of each window is scored. Prints the\n"
          "mean negative log-likelihood (nats per token) and its exponential, the\n"
          "perplexity.\n"
          "\n"
          "MODEL is a safetensors file or model directory (with config.json beside it or\n"
          "in it), a GGUF file (configuration from its metadata), or an hvq container\n"
          "(decoded while loading; configuration from the source GGUF's metadata, else\n"
          "config.json beside the model the pipeline read or beside the container).\n"
          "\n"
          "  -k, --tokens FILE     token ids: a 1-D integer .npy, or raw little-endian int32\n"
          "                        in a .bin file (required)\n"
          "      --text FILE       a text instead: paragraphs (separated by blank lines),\n"
          "                        each tokenized with BOS and a leading space, by\n"
          "      --tokenizer FILE  a llama2.c tokenizer.bin; default: the SentencePiece\n"
          "                        vocabulary in the model's GGUF metadata\n"
          "  -c, --ctx N           tokens per window (default 256, at least 2)\n"
          "  -w, --max-windows N   evaluate at most N windows (default: all)\n"
          "      --config FILE     a Hugging Face config.json to use (tensors then have\n"
          "                        Hugging Face names)\n"
          "  -t, --threads N       worker threads (default: all cores); the result does\n"
          "                        not depend on it\n"
          "      --json            print the result as one JSON object\n"
          "      --plugin-dir DIR, -q, -v, -h as for every command\n",
          f);
}

static volatile sig_atomic_t eval_signal_seen;
static void eval_on_signal(int sig)
{
    if (eval_signal_seen) {
        signal(sig, SIG_DFL);
        raise(sig);
    }
    eval_signal_seen = 1;
    hvq_interrupted = sig; /* the signal's number: any nonzero value means interrupted */
}

/* What eval prints: the result as text or as one JSON object. */
typedef struct eval_args {
    const char *model, *tokens, *text, *tokenizer, *config;
    int ctx_len, max_windows, json;
} eval_args;

static void print_result(const eval_args *a, const hvq_eval_result *rp, int threads)
{
    const hvq_eval_result r = *rp;
    const char *model = a->model, *tokens = a->tokens, *text = a->text,
               *tokenizer = a->tokenizer;
    int json = a->json;
    uint64_t processed = r.n_windows * (uint64_t)r.ctx_len;
    double tps = r.seconds > 0 ? (double)processed / r.seconds : 0.0;
    if (json) {
        hvq_buf b;
        hvq_buf_init(&b);
        hvq_buf_puts(&b, "{\"model\": ");
        hvq_buf_json_string(&b, model);
        hvq_buf_puts(&b, ", \"kind\": ");
        hvq_buf_json_string(&b, r.kind);
        hvq_buf_puts(&b, tokens ? ", \"tokens_file\": " : ", \"text_file\": ");
        hvq_buf_json_string(&b, tokens ? tokens : text);
        if (text) {
            hvq_buf_puts(&b, ", \"tokenizer\": ");
            hvq_buf_json_string(&b, tokenizer ? tokenizer : "gguf");
        }
        hvq_buf_printf(&b, ", \"tokens_in_file\": %llu, \"ctx\": %d, \"windows\": %llu, "
                       "\"tokens_scored\": %llu, \"nll\": %.17g, \"ppl\": %.17g, "
                       "\"seconds\": %.6f, \"load_seconds\": %.6f, "
                       "\"tokens_per_second\": %.1f, \"threads\": %d}\n",
                       (unsigned long long)r.n_tokens, r.ctx_len,
                       (unsigned long long)r.n_windows, (unsigned long long)r.n_scored, r.nll,
                       r.ppl, r.seconds, r.load_seconds, tps, threads);
        if (!b.oom)
            fwrite(b.data, 1, b.len, stdout);
        hvq_buf_free(&b);
    } else {
        printf("model:  %s (%s; %d layers, hidden %d, vocabulary %d)\n", model, r.kind,
               r.config.n_layers, r.config.hidden, r.config.vocab);
        if (tokens)
            printf("tokens: %s (%llu tokens; %llu windows of %d, %llu scored)\n", tokens,
                   (unsigned long long)r.n_tokens, (unsigned long long)r.n_windows,
                   r.ctx_len, (unsigned long long)r.n_scored);
        else
            printf("text:   %s (%llu tokens by %s; %llu windows of %d, %llu scored)\n",
                   text, (unsigned long long)r.n_tokens,
                   tokenizer ? tokenizer : "the model's vocabulary",
                   (unsigned long long)r.n_windows, r.ctx_len,
                   (unsigned long long)r.n_scored);
        printf("mean NLL %.6f nats/token\n", r.nll);
        printf("PPL %.4f over %llu tokens (%llu windows of %d)\n", r.ppl,
               (unsigned long long)r.n_scored, (unsigned long long)r.n_windows, r.ctx_len);
        printf("time: %.2f s (%.0f tokens/s, %d threads; loading %.2f s)\n", r.seconds, tps,
               threads, r.load_seconds);
    }
    fflush(stdout);
}

/* Parses eval's options into a, opts and dirs; returns -1 to go on, else
 * the exit status (after --help, --version or a usage error). */
static int parse_eval_args(int argc, char **argv, eval_args *a, hvq_ctx_opts *opts,
                           const char **dirs, size_t *n_dirs)
{
    static const struct option lo[] = {
        {"tokens", required_argument, 0, 'k'},      {"ctx", required_argument, 0, 'c'},
        {"text", required_argument, 0, OPT_TEXT},   {"tokenizer", required_argument, 0, OPT_TOKENIZER},
        {"max-windows", required_argument, 0, 'w'}, {"config", required_argument, 0, OPT_CONFIG},
        {"threads", required_argument, 0, 't'},     {"json", no_argument, 0, OPT_JSON},
        {"plugin-dir", required_argument, 0, OPT_PLUGIN_DIR},
        {"quiet", no_argument, 0, 'q'},             {"verbose", no_argument, 0, 'v'},
        {"help", no_argument, 0, 'h'},              {"version", no_argument, 0, 'V'},
        {0, 0, 0, 0}};
    int c, rc = -1;
    while (rc < 0 && (c = getopt_long(argc, argv, "k:c:w:t:qvhV", lo, NULL)) != -1) {
        switch (c) {
        case 'k': a->tokens = optarg; break;
        case OPT_CONFIG: a->config = optarg; break;
        case OPT_TEXT: a->text = optarg; break;
        case OPT_TOKENIZER: a->tokenizer = optarg; break;
        case OPT_JSON: a->json = 1; break;
        case 'c':
            if (!hvq_parse_count("--ctx", optarg, 2, 1 << 20, &a->ctx_len))
                rc = HVQ_EXIT_BAD_INPUT;
            break;
        case 'w':
            if (!hvq_parse_count("--max-windows", optarg, 1, 1L << 30, &a->max_windows))
                rc = HVQ_EXIT_BAD_INPUT;
            break;
        case 't':
            if (!hvq_parse_threads(optarg, &opts->threads))
                rc = HVQ_EXIT_BAD_INPUT;
            break;
        case OPT_PLUGIN_DIR: dirs[(*n_dirs)++] = optarg; break;
        case 'q': opts->quiet = 1; break;
        case 'v': opts->verbose = 1; break;
        case 'h': usage_eval(stdout); rc = HVQ_EXIT_OK; break;
        case 'V':
            printf("hvqconv %s (plugin ABI %d)\n", PACKAGE_VERSION, HVQ_ABI_VERSION);
            rc = HVQ_EXIT_OK;
            break;
        default:
            fprintf(stderr, "Try 'hvqconv eval --help'.\n");
            rc = HVQ_EXIT_BAD_INPUT;
        }
    }
    if (rc >= 0)
        return rc;
    if (optind >= argc) {
        fprintf(stderr, "hvqconv: error: eval needs a model\nTry 'hvqconv eval --help'.\n");
        return HVQ_EXIT_BAD_INPUT;
    }
    if (optind + 1 < argc) {
        fprintf(stderr, "hvqconv: error: unexpected argument '%s'\nTry 'hvqconv eval --help'.\n",
                argv[optind + 1]);
        return HVQ_EXIT_BAD_INPUT;
    }
    if (!a->tokens == !a->text) {
        fprintf(stderr, "hvqconv: error: eval needs %s\nTry 'hvqconv eval --help'.\n",
                a->tokens ? "either --tokens or --text, not both"
                          : "a token file (--tokens FILE) or a text (--text FILE)");
        return HVQ_EXIT_BAD_INPUT;
    }
    if (a->tokenizer && !a->text) {
        fprintf(stderr, "hvqconv: error: --tokenizer goes with --text\n"
                        "Try 'hvqconv eval --help'.\n");
        return HVQ_EXIT_BAD_INPUT;
    }
    a->model = argv[optind];
    return -1;
}

int hvq_cmd_eval(int argc, char **argv, const char *const *plugin_dirs, size_t n_plugin_dirs,
                 const hvq_ctx_opts *gopts)
{
    hvq_ctx_opts opts = *gopts;
    opts.threads = 0;
    const char **dirs = calloc(n_plugin_dirs + (size_t)argc + 1, sizeof *dirs);
    size_t n_dirs = 0;
    if (!dirs)
        return HVQ_EXIT_OTHER;
    for (size_t i = 0; i < n_plugin_dirs; i++)
        dirs[n_dirs++] = plugin_dirs[i];
    eval_args a = {.ctx_len = 256};
    int rc = parse_eval_args(argc, argv, &a, &opts, dirs, &n_dirs);
    if (rc >= 0) {
        free(dirs);
        return rc;
    }
    if (!opts.threads)
        opts.threads = hvq_default_threads();
    hvq_ctx *ctx = hvq_ctx_new(&opts);
    hvq_registry *reg = ctx ? hvq_registry_new() : NULL;
    if (!ctx || !reg) {
        fprintf(stderr, "hvqconv: error: out of memory\n");
        hvq_registry_free(reg);
        hvq_ctx_free(ctx);
        free(dirs);
        return HVQ_EXIT_OTHER;
    }
    if (hvq_registry_load_default(reg, ctx, dirs, n_dirs) != HVQ_OK) {
        hvq_ctx_print_error(ctx);
        hvq_registry_free(reg);
        hvq_ctx_free(ctx);
        free(dirs);
        return HVQ_EXIT_OTHER;
    }
    hvq_ctx_set_registry(ctx, reg);
    hvq_eval_result r;
    signal(SIGINT, eval_on_signal);
    signal(SIGTERM, eval_on_signal);
    hvq_status st =
        a.tokens ? hvq_eval_model(ctx, reg, a.model, a.tokens, a.ctx_len, a.max_windows,
                                  a.config, &r)
                 : hvq_eval_model_text(ctx, reg, a.model, a.text, a.tokenizer, a.ctx_len,
                                       a.max_windows, a.config, &r);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    if (hvq_interrupted) /* stopped anywhere, or between the last check and here */
        st = hvq_interrupt_error(ctx);
    if (st == HVQ_OK)
        print_result(&a, &r, opts.threads);
    else
        hvq_ctx_print_error(ctx);
    hvq_registry_free(reg);
    hvq_ctx_free(ctx);
    free(dirs);
    return hvq_exit_for(st);
}
