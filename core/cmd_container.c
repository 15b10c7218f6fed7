/* The `decode` and `inspect` commands: hvq containers back to a model file,
 * and a description of a container with its checksums verified. */
#include "config.h"

#include "cli.h"
#include "container.h"
#include "driver.h"
#include "dtype.h"
#include "ggml_native.h"
#include "file.h"
#include "json.h"
#include "parallel.h"
#include "params.h"
#include "util.h"

#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

enum { OPT_PLUGIN_DIR = HVQ_CLI_OPT_PLUGIN_DIR, OPT_DTYPE, OPT_FORMAT, OPT_JSON, OPT_MAX_SHARD, OPT_THREADS,
       OPT_CONFIG, OPT_TOKENIZER, OPT_RAW };

/* ---- decode -------------------------------------------------------------- */

static void usage_decode(FILE *f)
{
    fputs("Usage: hvqconv decode CONTAINER -o OUTPUT [OPTION]...\n"
          "Decode an hvq container into a model file: every tensor under its original name\n"
          "and shape, compressed tensors reconstructed bit for bit as the compressing run\n"
          "measured them, the others byte for byte, with the source model's metadata.\n"
          "CONTAINER is a .hvq file, or a sharded container's NAME.hvq.index.json or its\n"
          "directory.\n"
          "\n"
          "  -o, --output PATH     the file to write (required)\n"
          "      --dtype TYPE      element type of reconstructed tensors: same (default:\n"
          "                        the original's when F32, F16 or BF16, else F32), f32,\n"
          "                        f16 or bf16 (rounded to nearest even); or, for a GGUF\n"
          "                        output, a llama.cpp block type: q8_0 (8.5 bits per\n"
          "                        weight), q4_0, q4_1, q5_0, q5_1, iq4_nl, q2_K..q6_K,\n"
          "                        iq4_xs, quantized as llama-quantize does without an\n"
          "                        importance matrix (rows that fit no block fall back\n"
          "                        as llama-quantize's do, with one warning); tensors\n"
          "                        the ggml clusterer stored in that type are written\n"
          "                        as its blocks; native: each tensor the ggml\n"
          "                        clusterer stored as its blocks, the others as same\n"
          "      --config FILE     GGUF output of a container made from a Hugging Face\n"
          "                        model: its config.json (default: beside or in the\n"
          "                        model the pipeline read); a Llama-family model is\n"
          "                        then mapped to llama.cpp's layout as `convert` maps it\n"
          "      --tokenizer FILE  with it, a llama2.c tokenizer.bin (default: the\n"
          "                        tokenizer.model or tokenizer.json beside config.json)\n"
          "      --raw             GGUF output: the tensors' names and rows as the\n"
          "                        container has them (no mapping)\n"
          "      --format NAME     output format (a sink plugin, e.g. safetensors);\n"
          "                        default: from OUTPUT's extension, else the container's\n"
          "                        source format\n"
          "      --max-shard-size SIZE\n"
          "                        write shards of at most SIZE bytes (500MB, 5GB) and an\n"
          "                        index, as Hugging Face does (the output format's\n"
          "                        max_shard_size option); default 0: one file\n"
          "  -t, --threads N       worker threads (default: all cores)\n"
          "  -f, --force           replace an existing output file\n"
          "      --plugin-dir DIR, -q, -v, -h as for every command\n"
          "\n"
          "Every checksum is verified; a mismatch fails with exit status 2 and no output.\n",
          f);
}

static hvq_dtype decode_dtype(const char *choice, hvq_dtype orig)
{
    if (strcmp(choice, "same") != 0)
        return hvq_dtype_parse_float(choice);
    if (orig == HVQ_DTYPE_F32 || orig == HVQ_DTYPE_F16 || orig == HVQ_DTYPE_BF16)
        return orig;
    return HVQ_DTYPE_F32;
}

static const hvq_loaded_plugin *choose_sink(hvq_ctx *ctx, const hvq_registry *reg,
                                            const hvq_container *c, const char *out,
                                            const char *format)
{
    const hvq_loaded_plugin *pl;
    if (format) {
        pl = hvq_registry_find(reg, HVQ_KIND_SINK, format);
        if (!pl) {
            const char *near = hvq_registry_suggest(reg, HVQ_KIND_SINK, format);
            hvq_error(ctx, HVQ_E_INPUT, "--format %s: no such output format%s%s%s", format,
                      near ? "; did you mean '" : "", near ? near : "", near ? "'?" : "");
        }
        return pl;
    }
    pl = hvq_registry_sink_for(reg, ctx, out);
    if (pl)
        return pl;
    const char *sf = hvq_container_meta(c, "hvq.source_format");
    const hvq_loaded_plugin *alt = sf ? hvq_registry_find(reg, HVQ_KIND_SINK, sf) : NULL;
    if (alt)
        hvq_ctx_clear_error(ctx);
    return alt;
}

/* The writer thread of decode: writes one reconstructed tensor to the sink
 * while the main thread reconstructs the next, so the run takes about as
 * long as the slower of the two rather than their sum. One tensor at a
 * time, in order: the output is the same as without it. It has a context
 * of its own (sinks report errors on the ctx they are called with), and
 * the main thread hands it a tensor only when it is idle; pass-through
 * tensors, whose data lives in the container's mapping only until the
 * next read, are written by the main thread once the writer is idle. The
 * sink opened its files when created, on the main context. */
typedef struct out_thread {
    pthread_t tid;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int busy, stop;
    hvq_tensor job;
    hvq_ctx *ctx;
    hvq_sink_handle *sink;
    hvq_status st;          /* the first failure */
    double seconds;         /* spent writing */
} out_thread;

static void *out_main(void *arg)
{
    out_thread *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->busy && !w->stop)
            pthread_cond_wait(&w->cv, &w->mu);
        if (!w->busy)
            break;
        hvq_tensor t = w->job;
        hvq_status prev = w->st;
        pthread_mutex_unlock(&w->mu);
        double t0 = hvq_now();
        hvq_status st = prev == HVQ_OK ? w->ctx->host->sink_write(w->ctx, w->sink, &t) : prev;
        double dt = hvq_now() - t0;
        pthread_mutex_lock(&w->mu);
        w->seconds += dt;
        if (w->st == HVQ_OK)
            w->st = st;
        w->busy = 0;
        pthread_cond_broadcast(&w->cv);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* Waits until the writer is idle; its status, its message moved to ctx. */
static hvq_status out_wait(hvq_ctx *ctx, out_thread *w)
{
    pthread_mutex_lock(&w->mu);
    while (w->busy)
        pthread_cond_wait(&w->cv, &w->mu);
    hvq_status st = w->st;
    pthread_mutex_unlock(&w->mu);
    if (st != HVQ_OK)
        hvq_error(ctx, st, "%s", hvq_ctx_error(w->ctx));
    return st;
}

static void out_post(out_thread *w, const hvq_tensor *t)
{
    pthread_mutex_lock(&w->mu);
    w->job = *t;
    w->busy = 1;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* One decode: the container, what the sink is told, the buffers, the
 * writer thread and the seconds spent (-v). */
typedef struct dec_job {
    hvq_ctx *ctx;
    const hvq_registry *reg;
    hvq_container *c;
    const char *outp;
    const hvq_loaded_plugin *sp;
    hvq_tensor_info *infos;
    int ggml_out;                /* --dtype native or a llama.cpp block type */
    const hvq_ggml_type **types; /* per tensor, after fallback (NULL: F16) */
    unsigned char *how;          /* per tensor: DEC_FLOAT, DEC_QUANT, DEC_BLOCKS */
    const hvq_ggml_type *main;   /* the ggml type of the most parameters */
    size_t n, n_comp, cap, conv_cap;
    int two;                  /* two sets of buffers (a writer thread) */
    float *buf[2];
    void *conv[2];            /* a tensor converted to F16 or BF16 */
    hvq_sink_handle *sink;
    out_thread w;
    int writer, threaded, slot; /* the writer thread runs, ran; the slot */
    hvq_ggml_meta meta;       /* with --dtype a ggml type */
    double t_crc, t_dec, t_conv, t_write, t_wait;
    /* GGUF from a Hugging Face source: the model plugin's mapping */
    const hvq_plugin *mp;
    void *ms;
    unsigned char *reorder;   /* per tensor: rows through convert_rows */
    char *map_config, *map_text; /* the configuration read, kept until close */
    hvq_tensor_info *src_infos; /* the tensors as the source had them */
} dec_job;

enum { DEC_FLOAT, DEC_QUANT, DEC_BLOCKS };

/* The value of attribute key of a container stage, or NULL. */
static const char *stage_attr(const hvq_container_stage *s, const char *key)
{
    for (size_t a = 0; a < s->n_attrs; a++)
        if (strcmp(s->attrs[a].key, key) == 0)
            return s->attrs[a].value;
    return NULL;
}

/* The ggml type compressed tensor t is written in (NULL: a float dtype):
 * --dtype's, or with native the type the ggml clusterer stored it in. */
static const hvq_ggml_type *dec_target(const hvq_container_tensor *t, const char *dtype)
{
    if (strcmp(dtype, "native") != 0)
        return hvq_ggml_type_find(dtype);
    const char *type = strcmp(t->clusterer.plugin, "ggml") == 0
                           ? stage_attr(&t->clusterer, "type") : NULL;
    return type ? hvq_ggml_type_find(type) : NULL;
}

/* Whether t's stored blocks are what it is declared as (type ft): the ggml
 * clusterer's, of that type, without column gains or a residual. */
static int own_blocks(const hvq_container_tensor *t, const hvq_ggml_type *ft)
{
    const char *type = stage_attr(&t->clusterer, "type");
    return ft && strcmp(t->clusterer.plugin, "ggml") == 0 && type &&
           strcmp(type, ft->name) == 0 && !stage_attr(&t->clusterer, "col_exponent") &&
           t->residual.n_components == 0;
}

/* What the sink is told: every tensor with its output dtype, or as ggml
 * blocks (after llama-quantize's fallback, with one warning); j->main. */
static void dec_declare(dec_job *j, const char *dtype)
{
    hvq_ggml_fallbacks fb = {0};
    hvq_ggml_mix mix = {{NULL}, {0}};
    for (size_t i = 0; i < j->n; i++) {
        const hvq_container_tensor *t = hvq_container_info(j->c, i);
        hvq_tensor_info *o = &j->infos[i];
        o->name = o->name ? o->name : t->name; /* the mapping's, when set */
        o->ndim = t->ndim;
        memcpy(o->shape, t->shape, sizeof o->shape);
        const hvq_ggml_type *tt = t->compressed && j->ggml_out ? dec_target(t, dtype) : NULL;
        if (tt) {
            j->types[i] = hvq_ggml_declare(o, tt);
            j->how[i] = own_blocks(t, j->types[i]) ? DEC_BLOCKS : DEC_QUANT;
            hvq_ggml_fallback_note(&fb, o->name, o->ndim ? o->shape[o->ndim - 1] : 1, tt,
                                   j->types[i]);
            hvq_ggml_mix_add(&mix, tt, t->numel);
        } else if (t->compressed) {
            o->dtype = decode_dtype(strcmp(dtype, "native") == 0 ? "same" : dtype, t->dtype);
            o->dtype_name = hvq_dtype_name(o->dtype);
            o->nbytes = t->numel * hvq_dtype_size(o->dtype);
        } else {
            o->dtype = t->dtype;
            o->dtype_name = t->dtype_name;
            o->nbytes = t->stored_bytes;
        }
        if (t->compressed) {
            if (t->numel > j->cap)
                j->cap = (size_t)t->numel;
            /* conv holds 2 bytes a value: F16, BF16, and every ggml type
             * offered (Q8_0, the widest, 34 bytes per 32 values) */
            if (o->dtype != HVQ_DTYPE_F32 && t->numel > j->conv_cap)
                j->conv_cap = (size_t)t->numel;
            j->n_comp++;
        }
    }
    j->main = hvq_ggml_mix_main(&mix);
    hvq_ggml_fallback_warn(j->ctx, &fb, j->outp);
}

/* The options decode passes to the mapping. */
typedef struct dec_map_args {
    const char *config, *tokenizer;
    int raw;                  /* --raw: names and rows as they are */
} dec_map_args;

/* The configuration of a container's source: --config, else config.json
 * beside or in the model its pipeline read; NULL text when none. */
static hvq_status dec_config(dec_job *j, const char *in, const dec_map_args *m, char **path,
                             char **text)
{
    *text = NULL;
    *path = m->config ? strdup(m->config) : hvq_container_config_path(j->c, in);
    if (!*path)
        return HVQ_OK;
    unsigned char *t = NULL;
    size_t len;
    hvq_status st = hvq_slurp_input(j->ctx, *path, 64u << 20, "a configuration", &t, &len);
    *text = (char *)t;
    return st;
}

/* The mapping opened (mp's convert_open on the source's tensors), then
 * every tensor's name and row order; a tensor it drops is refused. */
static hvq_status dec_map_open(dec_job *j, const char *in, const hvq_plugin *mp,
                               const char *tokenizer)
{
    hvq_ctx *ctx = j->ctx;
    if (!(j->src_infos = hvq_calloc(ctx, j->n ? j->n : 1, sizeof *j->src_infos)) ||
        !(j->reorder = hvq_calloc(ctx, j->n ? j->n : 1, 1)))
        return HVQ_E_NOMEM;
    for (size_t i = 0; i < j->n; i++) {
        const hvq_container_tensor *t = hvq_container_info(j->c, i);
        hvq_tensor_info *o = &j->src_infos[i];
        o->name = t->name;
        o->dtype = t->dtype;
        o->dtype_name = t->dtype_name;
        o->ndim = t->ndim;
        memcpy(o->shape, t->shape, sizeof o->shape);
        o->nbytes = t->compressed ? t->numel * hvq_dtype_size(t->dtype) : t->stored_bytes;
    }
    char *dir = strdup(j->map_config);
    char *slash = dir ? strrchr(dir, '/') : NULL;
    if (slash)
        *slash = '\0';
    hvq_convert_setup su = {1, in, j->map_text, j->map_config, NULL, 0,
                            slash ? dir : ".", tokenizer, j->src_infos, j->n, HVQ_DTYPE_F32};
    hvq_status st = mp->convert_open(ctx, &su, &j->ms);
    free(dir);
    if (st != HVQ_OK)
        return st;
    j->mp = mp;
    hvq_log(ctx, HVQ_LOG_INFO, "%s: a %s model (%s), mapped to llama.cpp's layout by the model "
            "plugin '%s'", in, mp->name, j->map_config, mp->name);
    return HVQ_OK;
}

/* The declared tensors under the mapping's names. */
static hvq_status dec_rename(dec_job *j)
{
    for (size_t i = 0; j->mp && i < j->n; i++) {
        hvq_convert_tensor ct = {j->src_infos[i].name, 0, HVQ_DTYPE_OPAQUE};
        hvq_status st = j->mp->convert_tensor(j->ctx, j->ms, &j->src_infos[i], &ct);
        if (st != HVQ_OK)
            return st;
        if (!ct.name)
            return hvq_error(j->ctx, HVQ_E_UNSUPPORTED, "%s: tensor '%s' has no place in "
                             "llama.cpp's layout; decode to safetensors and convert that",
                             hvq_container_path(j->c), j->src_infos[i].name);
        j->infos[i].name = ct.name;
        j->reorder[i] = (unsigned char)ct.reorder;
    }
    return HVQ_OK;
}

/* Tensor i's rows in the mapping's order (data: info's bytes, any dtype
 * or blocks) into *out (malloc'd; NULL when its rows stay as they are). */
static hvq_status dec_reorder(dec_job *j, size_t i, const hvq_tensor_info *info,
                              const void *data, void **out)
{
    *out = NULL;
    if (!j->mp || !j->reorder[i])
        return HVQ_OK;
    if (!(*out = hvq_alloc(j->ctx, info->nbytes ? info->nbytes : 1)))
        return HVQ_E_NOMEM;
    hvq_tensor in = {*info, data};
    in.info.name = j->src_infos[i].name; /* the mapping knows it by the source's name */
    return j->mp->convert_rows(j->ctx, j->ms, &in, *out);
}

/* The same for compressed tensor i decoded into buf (F32), in place. */
static hvq_status dec_reorder_f32(dec_job *j, size_t i, float *buf)
{
    hvq_tensor_info info = j->src_infos ? j->src_infos[i] : (hvq_tensor_info){0};
    info.dtype = HVQ_DTYPE_F32;
    info.nbytes = hvq_numel(&info) * sizeof *buf;
    void *rows = NULL;
    hvq_status st = dec_reorder(j, i, &info, buf, &rows);
    if (rows && st == HVQ_OK)
        memcpy(buf, rows, info.nbytes);
    free(rows);
    return st;
}

/* Decoding to GGUF a container read from a Hugging Face model: its
 * architecture's model plugin maps names, q/k rows and metadata, the very
 * convert callbacks `hvqconv convert` calls. Without a configuration or a
 * plugin that maps the architecture, the tensors go as they are. */
static hvq_status dec_mapping(dec_job *j, const char *in, const dec_map_args *m)
{
    hvq_ctx *ctx = j->ctx;
    const char *src = hvq_container_meta(j->c, "hvq.source_format");
    if (m->raw || strcmp(j->sp->desc.name, "gguf") != 0 || (src && strcmp(src, "gguf") == 0))
        return HVQ_OK;
    char arch[128] = "";
    hvq_status st = dec_config(j, in, m, &j->map_config, &j->map_text);
    const char *path = j->map_config, *text = j->map_text;
    hvq_json_error je = {0};
    if (st == HVQ_OK && text)
        hvq_config_model_type(text, arch, sizeof arch, &je);
    if (st == HVQ_OK && je.message[0])
        st = hvq_error(ctx, HVQ_E_INPUT, "%s: not valid JSON: %s", path, je.message);
    const hvq_plugin *mp = st == HVQ_OK && arch[0] ? ctx->host->model_plugin(ctx, NULL, arch)
                                                   : NULL;
    if (st == HVQ_OK)
        hvq_ctx_clear_error(ctx);
    if (st == HVQ_OK && (!mp || !HVQ_PLUGIN_HAS(mp, convert_open)))
        hvq_log(ctx, HVQ_LOG_WARN, "%s: %s; the tensors keep the source's names and the GGUF "
                "file has no architecture llama.cpp knows (give the model's config.json with "
                "--config FILE)", in, !text ? "no config.json beside the model the container "
                "was made from" : "no model plugin maps its architecture to llama.cpp's layout");
    else if (st == HVQ_OK)
        st = dec_map_open(j, in, mp, m->tokenizer);
    return st;
}

/* The buffers, the sink and, with threads, the writer thread. */
static hvq_status dec_open(dec_job *j, int64_t max_shard)
{
    hvq_ctx *ctx = j->ctx;
    /* With the writer thread, two sets of buffers: one being written, one
     * being filled. */
    j->two = hvq_ctx_options(ctx)->threads > 1 && j->n_comp > 1;
    for (int b = 0; b <= j->two; b++)
        if ((j->cap && !(j->buf[b] = hvq_alloc(ctx, j->cap * sizeof *j->buf[b]))) ||
            (j->conv_cap && !(j->conv[b] = hvq_alloc(ctx, j->conv_cap * 2))))
            return HVQ_E_NOMEM;
    const hvq_meta *meta;
    size_t n_meta;
    hvq_container_source_meta(j->c, &meta, &n_meta);
    hvq_status st = j->mp ? j->mp->convert_meta(ctx, j->ms, &meta, &n_meta) : HVQ_OK;
    if (st != HVQ_OK)
        return st;
    if (j->main) { /* general.file_type */
        if (!hvq_ggml_meta_init(&j->meta, meta, n_meta, j->main))
            return hvq_error(ctx, HVQ_E_NOMEM, "out of memory");
        meta = j->meta.meta;
        n_meta = j->meta.n;
    }
    /* The shard size is an option of the sink only when given, so formats
     * without it still decode; the host names a format that lacks it. */
    char shard_opt[64];
    const char *options[2] = {NULL, NULL};
    if (max_shard > 0) {
        snprintf(shard_opt, sizeof shard_opt, "max_shard_size=%lld", (long long)max_shard);
        options[0] = shard_opt;
    }
    j->sink = ctx->host->sink_open_params(ctx, j->sp->desc.name, j->outp, options, meta, n_meta,
                                          j->infos, j->n);
    if (!j->sink)
        return hvq_ctx_status(ctx) ? hvq_ctx_status(ctx) : HVQ_E_IO;
    if (j->two) {
        hvq_ctx_opts wo = *hvq_ctx_options(ctx);
        j->w.sink = j->sink;
        if ((j->w.ctx = hvq_ctx_new(&wo)) != NULL) {
            hvq_ctx_set_registry(j->w.ctx, j->reg);
            pthread_mutex_init(&j->w.mu, NULL);
            pthread_cond_init(&j->w.cv, NULL);
            j->writer = hvq_thread_start(&j->w.tid, out_main, &j->w);
            if (!j->writer) {
                pthread_mutex_destroy(&j->w.mu);
                pthread_cond_destroy(&j->w.cv);
            }
        }
    }
    j->threaded = j->writer;
    return HVQ_OK;
}

/* Tensor i: checked, then copied or reconstructed (and converted), then
 * written or handed to the writer thread. */
static hvq_status dec_tensor(dec_job *j, size_t i)
{
    hvq_ctx *ctx = j->ctx;
    const hvq_container_tensor *t = hvq_container_info(j->c, i);
    hvq_tensor out;
    hvq_status st;
    if (hvq_interrupted)
        return hvq_interrupt_error(ctx);
    double tl = hvq_now();
    if ((st = hvq_container_verify(ctx, j->c, i)) != HVQ_OK)
        return st;
    j->t_crc += hvq_now() - tl;
    tl = hvq_now();
    if (!t->compressed || j->how[i] == DEC_BLOCKS) { /* the stored bytes */
        if (j->writer && (st = out_wait(ctx, &j->w)) != HVQ_OK)
            return st;
        j->t_wait += hvq_now() - tl;
        tl = hvq_now();
        st = t->compressed ? hvq_container_read_component(ctx, j->c, i, "blocks", &out)
                           : hvq_container_read_raw(ctx, j->c, i, &out);
        if (st == HVQ_OK && out.info.nbytes != j->infos[i].nbytes)
            st = hvq_error(ctx, HVQ_E_INPUT, "%s: tensor '%s': its blocks are %llu bytes, "
                           "not the %llu its type needs", hvq_container_path(j->c), t->name,
                           (unsigned long long)out.info.nbytes,
                           (unsigned long long)j->infos[i].nbytes);
        void *rows = NULL;
        if (st == HVQ_OK && (st = dec_reorder(j, i, &j->infos[i], out.data, &rows)) == HVQ_OK) {
            out.info = j->infos[i]; /* as declared to the sink */
            out.data = rows ? rows : out.data;
            st = ctx->host->sink_write(ctx, j->sink, &out);
        }
        free(rows);
        j->t_write += hvq_now() - tl;
        return st;
    }
    float *buf = j->buf[j->slot];
    if ((st = hvq_container_read_decoded(ctx, j->c, i, buf)) != HVQ_OK ||
        (st = dec_reorder_f32(j, i, buf)) != HVQ_OK)
        return st;
    j->t_dec += hvq_now() - tl;
    tl = hvq_now();
    const void *data = buf;
    if (j->how[i] == DEC_QUANT) {
        st = hvq_ggml_quantize(ctx, &j->infos[i], j->types[i], buf, j->conv[j->slot]);
        data = j->conv[j->slot];
    } else if (j->infos[i].dtype != HVQ_DTYPE_F32) {
        st = hvq_convert_parallel(ctx, j->infos[i].dtype, j->conv[j->slot], HVQ_DTYPE_F32, buf,
                                  t->numel);
        data = j->conv[j->slot];
    }
    j->t_conv += hvq_now() - tl;
    tl = hvq_now();
    out.info = j->infos[i];
    out.data = data;
    if (st == HVQ_OK && j->writer) {
        if ((st = out_wait(ctx, &j->w)) == HVQ_OK) /* the other slot is written */
            out_post(&j->w, &out);
        j->t_wait += hvq_now() - tl;
        j->slot = j->two - j->slot;
    } else if (st == HVQ_OK) {
        st = ctx->host->sink_write(ctx, j->sink, &out);
        j->t_write += hvq_now() - tl;
    }
    hvq_log(ctx, HVQ_LOG_DEBUG, "decoded '%s'", t->name);
    return st;
}

/* Waits for the writer thread and ends it; st is the run's status so far. */
static hvq_status dec_stop_writer(dec_job *j, hvq_status st)
{
    hvq_status ws = out_wait(j->ctx, &j->w);
    if (st == HVQ_OK)
        st = ws;
    pthread_mutex_lock(&j->w.mu);
    j->w.stop = 1;
    pthread_cond_broadcast(&j->w.cv);
    pthread_mutex_unlock(&j->w.mu);
    hvq_thread_join(j->w.tid);
    pthread_mutex_destroy(&j->w.mu);
    pthread_cond_destroy(&j->w.cv);
    j->writer = 0;
    j->t_write += j->w.seconds;
    /* Outputs belong to the context that opened them, and the writer's is
     * never committed: a sink that opens a file while writing (none of
     * hvqconv's do: they open every file at create) would lose it here, so
     * that fails instead. */
    if (st == HVQ_OK && hvq_outputs_size(j->w.ctx, NULL) > 0)
        st = hvq_error(j->ctx, HVQ_E_UNSUPPORTED,
                       "%s: the %s sink opened a file while writing; decode it with "
                       "--threads 1", j->outp, j->sp->desc.name);
    return st;
}

/* Finishes the sink and commits the outputs. */
static hvq_status dec_finish(dec_job *j, hvq_status st, double t0)
{
    hvq_ctx *ctx = j->ctx;
    if (st == HVQ_OK)
        st = ctx->host->sink_finish(ctx, j->sink);
    ctx->host->sink_close(ctx, j->sink);
    j->sink = NULL;
    double tl = hvq_now();
    if (st == HVQ_OK)
        st = hvq_outputs_commit(ctx);
    if (st == HVQ_OK) {
        int threads = hvq_ctx_options(ctx)->threads;
        hvq_log(ctx, HVQ_LOG_INFO, "%s: %zu tensors (%zu reconstructed, %zu copied), format %s",
                j->outp, j->n, j->n_comp, j->n - j->n_comp, j->sp->desc.name);
        hvq_log(ctx, HVQ_LOG_DEBUG,
                "%.2f s on %d thread%s: checksums %.2f, reconstruction %.2f, conversion %.2f, "
                "writing %.2f%s (waited %.2f for it), commit (fsync, rename) %.2f",
                hvq_now() - t0, threads, threads == 1 ? "" : "s", j->t_crc, j->t_dec, j->t_conv,
                j->t_write, j->threaded ? " in a thread of its own" : "", j->t_wait,
                hvq_now() - tl);
    }
    return st;
}

static hvq_status decode_run(hvq_ctx *ctx, const hvq_registry *reg, const char *in,
                             const char *outp, const char *dtype, const char *format,
                             int64_t max_shard, const dec_map_args *map)
{
    if (hvq_cli_same_file(in, outp))
        return hvq_error(ctx, HVQ_E_INPUT, "%s: the output may not be the input", outp);
    hvq_ctx_add_input(ctx, in);
    hvq_ctx_name_output(ctx, outp);
    dec_job j = {.ctx = ctx, .reg = reg, .outp = outp, .w = {.st = HVQ_OK}};
    hvq_status st = hvq_container_open(ctx, reg, in, &j.c);
    if (st != HVQ_OK)
        return st;
    j.n = hvq_container_count(j.c);
    j.ggml_out = hvq_ggml_type_find(dtype) || strcmp(dtype, "native") == 0;
    if (!(j.infos = hvq_calloc(ctx, j.n ? j.n : 1, sizeof *j.infos)) ||
        !(j.types = hvq_calloc(ctx, j.n ? j.n : 1, sizeof *j.types)) ||
        !(j.how = hvq_calloc(ctx, j.n ? j.n : 1, 1)))
        st = HVQ_E_NOMEM;
    if (st == HVQ_OK && !(j.sp = choose_sink(ctx, reg, j.c, outp, format)))
        st = hvq_ctx_status(ctx) ? hvq_ctx_status(ctx) : HVQ_E_INPUT;
    if (st == HVQ_OK && j.ggml_out && strcmp(j.sp->desc.name, "gguf") != 0)
        st = hvq_error(ctx, HVQ_E_INPUT, "%s: --dtype %s writes llama.cpp blocks, which only "
                       "GGUF stores, and this output is %s; write a .gguf file (or --format "
                       "gguf), or choose f32, f16 or bf16", outp, dtype, j.sp->desc.name);
    if (st == HVQ_OK)
        st = dec_mapping(&j, in, map);
    if (st == HVQ_OK) {
        if ((st = dec_rename(&j)) == HVQ_OK) {
            dec_declare(&j, dtype);
            st = dec_open(&j, max_shard);
        }
    }
    double t0 = hvq_now();
    for (size_t i = 0; i < j.n && st == HVQ_OK; i++)
        st = dec_tensor(&j, i);
    if (j.writer)
        st = dec_stop_writer(&j, st);
    if (j.sink)
        st = dec_finish(&j, st, t0);
    if (st != HVQ_OK)
        hvq_outputs_abort(ctx);
    for (int b = 0; b < 2; b++) {
        free(j.buf[b]);
        free(j.conv[b]);
    }
    if (j.w.ctx)
        hvq_ctx_free(j.w.ctx);
    free(j.infos);
    free(j.types);
    free(j.how);
    hvq_ggml_meta_free(&j.meta);
    if (j.mp)
        j.mp->convert_close(ctx, j.ms);
    free(j.reorder);
    free(j.src_infos);
    free(j.map_config);
    free(j.map_text);
    hvq_container_close(ctx, j.c);
    return st;
}

typedef struct {
    const char *in, *out, *dtype, *format;
    int64_t max_shard;
    dec_map_args map;
} decode_args;

static hvq_status decode_cmd(hvq_ctx *ctx, const hvq_registry *reg, const void *args)
{
    const decode_args *a = args;
    return decode_run(ctx, reg, a->in, a->out, a->dtype, a->format, a->max_shard, &a->map);
}

/* Whether --dtype names a choice of decode's; else says why. */
static int decode_dtype_ok(const char *dtype)
{
    if (strcmp(dtype, "same") == 0 || strcmp(dtype, "f32") == 0 || strcmp(dtype, "f16") == 0 ||
        strcmp(dtype, "bf16") == 0 || strcmp(dtype, "native") == 0 || hvq_ggml_type_find(dtype))
        return 1;
    fprintf(stderr, "hvqconv: error: --dtype %s: expected same, f32, f16, bf16, or for GGUF "
                    "native or a llama.cpp block type (q8_0, q4_0, q4_1, q5_0, q5_1, iq4_nl, "
                    "q2_K, q3_K, q4_K, q5_K, q6_K, iq4_xs)\n",
            dtype);
    return 0;
}

int hvq_cmd_decode(int argc, char **argv, const char *const *plugin_dirs, size_t n_plugin_dirs,
                   const hvq_ctx_opts *gopts)
{
    static const struct option lo[] = {
        {"output", required_argument, 0, 'o'}, {"dtype", required_argument, 0, OPT_DTYPE},
        {"format", required_argument, 0, OPT_FORMAT}, {"force", no_argument, 0, 'f'},
        {"max-shard-size", required_argument, 0, OPT_MAX_SHARD},
        {"config", required_argument, 0, OPT_CONFIG},
        {"tokenizer", required_argument, 0, OPT_TOKENIZER},
        {"raw", no_argument, 0, OPT_RAW},
        {"threads", required_argument, 0, 't'},
        {"plugin-dir", required_argument, 0, OPT_PLUGIN_DIR},
        {"quiet", no_argument, 0, 'q'}, {"verbose", no_argument, 0, 'v'},
        {"help", no_argument, 0, 'h'}, {"version", no_argument, 0, 'V'}, {0, 0, 0, 0}};
    hvq_ctx_opts opts = *gopts;
    hvq_cli_dirs d = {0};
    const char *out = NULL, *dtype = "same", *format = NULL;
    dec_map_args map = {NULL, NULL, 0};
    int64_t max_shard = 0;
    int c, rc = -1;
    for (size_t i = 0; i < n_plugin_dirs; i++)
        if (!hvq_cli_dirs_add(&d, plugin_dirs[i]))
            rc = HVQ_EXIT_OTHER;
    while (rc < 0 && (c = getopt_long(argc, argv, "o:t:fqvhV", lo, NULL)) != -1) {
        switch (c) {
        case 'o': out = optarg; break;
        case 't':
            if (!hvq_parse_threads(optarg, &opts.threads))
                rc = HVQ_EXIT_BAD_INPUT;
            break;
        case 'f': opts.force = 1; break;
        case OPT_FORMAT: format = optarg; break;
        case OPT_CONFIG: map.config = optarg; break;
        case OPT_TOKENIZER: map.tokenizer = optarg; break;
        case OPT_RAW: map.raw = 1; break;
        case OPT_MAX_SHARD: {
            static const hvq_param_spec spec = {"max-shard-size", HVQ_PARAM_SIZE, "0", 0, 0,
                                                NULL, NULL};
            hvq_value v;
            char why[256];
            if (hvq_param_parse(&spec, optarg, &v, why, sizeof why) != HVQ_OK) {
                fprintf(stderr, "hvqconv: error: --max-shard-size %s: %s\n", optarg, why);
                rc = HVQ_EXIT_BAD_INPUT;
            } else {
                max_shard = v.i;
            }
            break;
        }
        case OPT_DTYPE:
            if (!decode_dtype_ok(dtype = optarg))
                rc = HVQ_EXIT_BAD_INPUT;
            break;
        default: rc = hvq_cli_common_opt(c, &d, &opts, "decode", usage_decode);
        }
    }
    if (rc < 0 && optind >= argc) {
        fprintf(stderr, "hvqconv: error: decode needs a container\nTry 'hvqconv decode --help'.\n");
        rc = HVQ_EXIT_BAD_INPUT;
    } else if (rc < 0 && optind + 1 < argc) {
        fprintf(stderr, "hvqconv: error: unexpected argument '%s'\nTry 'hvqconv decode --help'.\n",
                argv[optind + 1]);
        rc = HVQ_EXIT_BAD_INPUT;
    } else if (rc < 0 && !out) {
        fprintf(stderr, "hvqconv: error: decode needs an output (-o PATH)\n"
                        "Try 'hvqconv decode --help'.\n");
        rc = HVQ_EXIT_BAD_INPUT;
    }
    if (rc >= 0) {
        free(d.v);
        return rc;
    }
    const decode_args a = {argv[optind], out, dtype, format, max_shard, map};
    return hvq_cli_run(&opts, &d, decode_cmd, &a);
}

/* ---- inspect ------------------------------------------------------------- */

static void usage_inspect(FILE *f)
{
    fputs("Usage: hvqconv inspect CONTAINER [OPTION]...\n"
          "Describe an hvq container: format version, producer, source format, pipeline,\n"
          "and per tensor its shape, dtype, encoding, clusterer and residual (with their\n"
          "attributes), stored bytes and bits per parameter; then totals. Every checksum is\n"
          "verified: the last line says OK or names the first mismatch (exit status 2).\n"
          "CONTAINER is a .hvq file, or a sharded container's NAME.hvq.index.json or its\n"
          "directory.\n"
          "\n"
          "      --json            print the description as one JSON object\n"
          "      --plugin-dir DIR, -q, -v, -h as for every command\n",
          f);
}

/* The top-level "name" of the pipeline YAML, malloc'd, or NULL. */
static char *pipeline_name(const char *yaml)
{
    if (!yaml)
        return NULL;
    char *name = NULL;
    yaml_parser_t p;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&p))
        return NULL;
    yaml_parser_set_input_string(&p, (const unsigned char *)yaml, strlen(yaml));
    if (yaml_parser_load(&p, &doc)) {
        yaml_node_t *root = yaml_document_get_root_node(&doc);
        if (root && root->type == YAML_MAPPING_NODE)
            for (yaml_node_pair_t *q = root->data.mapping.pairs.start;
                 q < root->data.mapping.pairs.top && !name; q++) {
                yaml_node_t *k = yaml_document_get_node(&doc, q->key);
                yaml_node_t *v = yaml_document_get_node(&doc, q->value);
                if (k && v && k->type == YAML_SCALAR_NODE && v->type == YAML_SCALAR_NODE &&
                    strcmp((const char *)k->data.scalar.value, "name") == 0)
                    name = strdup((const char *)v->data.scalar.value);
            }
        yaml_document_delete(&doc);
    }
    yaml_parser_delete(&p);
    return name;
}

static void shape_text(char *buf, size_t len, const hvq_container_tensor *t)
{
    size_t o = (size_t)snprintf(buf, len, "[");
    for (int d = 0; d < t->ndim && o < len; d++)
        o += (size_t)snprintf(buf + o, len - o, "%s%lld", d ? ", " : "", (long long)t->shape[d]);
    if (o < len)
        snprintf(buf + o, len - o, "]");
}

/* "rtn group_size=0 mode=symmetric" */
static void stage_text(hvq_buf *b, const hvq_container_stage *s)
{
    hvq_buf_puts(b, s->plugin);
    for (size_t a = 0; a < s->n_attrs; a++)
        hvq_buf_printf(b, " %s=%s", s->attrs[a].key, s->attrs[a].value);
}

static void json_stage(hvq_buf *b, const hvq_container_stage *s)
{
    hvq_buf_puts(b, "{\"plugin\": ");
    hvq_buf_json_string(b, s->plugin);
    hvq_buf_puts(b, ", \"version\": ");
    hvq_buf_json_string(b, s->version);
    hvq_buf_puts(b, ", \"attrs\": {");
    for (size_t a = 0; a < s->n_attrs; a++) {
        hvq_buf_puts(b, a ? ", " : "");
        hvq_buf_json_string(b, s->attrs[a].key);
        hvq_buf_puts(b, ": ");
        hvq_buf_json_string(b, s->attrs[a].value);
    }
    hvq_buf_printf(b, "}, \"components\": %zu}", s->n_components);
}

static double ratio(double a, double b) { return b > 0 ? a / b : 0.0; }

static void json_num(hvq_buf *b, double v) { hvq_buf_printf(b, "%.6g", v); }

/* What inspect reports about an open container. */
typedef struct insp {
    hvq_container *c;
    const char *in;
    size_t n, n_comp, width;
    unsigned char *ok;        /* per tensor: its checksum matched */
    hvq_status bad;           /* the first checksum failure */
    char *first_bad;          /* and its message */
    uint64_t total, comp_params, comp_bytes, raw_bytes, paper, fsize;
    int all_paper;
    const char *ver, *producer, *srcfmt;
    char *pname;
    unsigned long long n_shards;
} insp;

/* Checksums first, so each line can say how its tensor fared. */
static void insp_checksums(hvq_ctx *ctx, insp *s)
{
    for (size_t i = 0; i < s->n; i++) {
        hvq_status vs = hvq_container_verify(ctx, s->c, i);
        s->ok[i] = vs == HVQ_OK;
        if (vs != HVQ_OK && s->bad == HVQ_OK) {
            s->bad = vs;
            s->first_bad = strdup(hvq_ctx_error(ctx));
        }
        if (vs != HVQ_OK && vs != HVQ_E_INPUT)
            break; /* an I/O error: stop */
    }
}

/* The totals and the container's metadata. */
static void insp_totals(insp *s)
{
    s->width = 4;
    s->all_paper = 1;
    for (size_t i = 0; i < s->n; i++) {
        const hvq_container_tensor *t = hvq_container_info(s->c, i);
        s->total += t->numel;
        if (strlen(t->name) > s->width)
            s->width = strlen(t->name);
        if (t->compressed) {
            s->n_comp++;
            s->comp_params += t->numel;
            s->comp_bytes += t->stored_bytes;
            s->paper += t->paper_bits;
            s->all_paper &= t->has_paper_bits;
        } else {
            s->raw_bytes += t->stored_bytes;
        }
    }
    s->ver = hvq_container_meta(s->c, "hvq.format_version");
    s->producer = hvq_container_meta(s->c, "hvq.producer");
    s->srcfmt = hvq_container_meta(s->c, "hvq.source_format");
    s->pname = pipeline_name(hvq_container_meta(s->c, "hvq.pipeline"));
    s->fsize = hvq_container_file_size(s->c);
    /* Sharded containers: "hvq.shard" is "1 of N" (the reader checked it). */
    const char *shard = hvq_container_meta(s->c, "hvq.shard");
    unsigned long long shard_k = 1;
    s->n_shards = 1;
    if (shard && sscanf(shard, "%llu of %llu", &shard_k, &s->n_shards) != 2)
        s->n_shards = 1;
}

/* One tensor of inspect --json. */
static void insp_json_tensor(hvq_buf *b, const hvq_container_tensor *t, int ok, int first)
{
    hvq_buf_puts(b, first ? "\n  {\"name\": " : ",\n  {\"name\": ");
    hvq_buf_json_string(b, t->name);
    hvq_buf_puts(b, ", \"shape\": [");
    for (int d = 0; d < t->ndim; d++)
        hvq_buf_printf(b, "%s%lld", d ? ", " : "", (long long)t->shape[d]);
    hvq_buf_puts(b, "], \"dtype\": ");
    hvq_buf_json_string(b, t->dtype_name);
    hvq_buf_printf(b, ", \"params\": %llu, \"encoding\": \"%s\", \"stored_bytes\": %llu, "
                   "\"bpp_stored\": ", (unsigned long long)t->numel,
                   t->compressed ? "hvq" : "raw", (unsigned long long)t->stored_bytes);
    json_num(b, ratio(8.0 * (double)t->stored_bytes, (double)t->numel));
    if (t->compressed) {
        hvq_buf_printf(b, ", \"rows\": %llu, \"cols\": %llu, \"row_scales\": %s",
                       (unsigned long long)t->rows, (unsigned long long)t->cols,
                       t->has_scales ? "true" : "false");
        if (t->has_paper_bits) {
            hvq_buf_printf(b, ", \"paper_bits\": %llu, \"bpp_paper\": ",
                           (unsigned long long)t->paper_bits);
            json_num(b, ratio((double)t->paper_bits, (double)t->numel));
        }
        hvq_buf_puts(b, ", \"clusterer\": ");
        json_stage(b, &t->clusterer);
        hvq_buf_puts(b, ", \"residual\": ");
        json_stage(b, &t->residual);
    }
    hvq_buf_printf(b, ", \"crc32\": %lu, \"checksum_ok\": %s}", (unsigned long)t->crc32,
                   ok ? "true" : "false");
}

static void insp_json(hvq_buf *b, const insp *s)
{
    hvq_buf_puts(b, "{\"file\": ");
    hvq_buf_json_string(b, s->in);
    hvq_buf_printf(b, ", \"file_bytes\": %llu, \"shards\": %llu, \"format_version\": %s, "
                   "\"producer\": ", (unsigned long long)s->fsize, s->n_shards, s->ver);
    hvq_buf_json_string(b, s->producer ? s->producer : "");
    hvq_buf_puts(b, ", \"source_format\": ");
    hvq_buf_json_string(b, s->srcfmt ? s->srcfmt : "");
    hvq_buf_puts(b, ", \"pipeline\": ");
    if (s->pname)
        hvq_buf_json_string(b, s->pname);
    else
        hvq_buf_puts(b, "null");
    hvq_buf_puts(b, ", \"tensors\": [");
    for (size_t i = 0; i < s->n; i++)
        insp_json_tensor(b, hvq_container_info(s->c, i), s->ok[i], i == 0);
    hvq_buf_printf(b, "\n], \"totals\": {\"tensors\": %zu, \"compressed\": %zu, "
                   "\"params\": %llu, \"compressed_params\": %llu, "
                   "\"stored_bytes_compressed\": %llu, \"stored_bytes_raw\": %llu, "
                   "\"bpp_stored_compressed\": ", s->n, s->n_comp, (unsigned long long)s->total,
                   (unsigned long long)s->comp_params, (unsigned long long)s->comp_bytes,
                   (unsigned long long)s->raw_bytes);
    json_num(b, ratio(8.0 * (double)s->comp_bytes, (double)s->comp_params));
    if (s->all_paper && s->n_comp) {
        hvq_buf_puts(b, ", \"bpp_paper_compressed\": ");
        json_num(b, ratio((double)s->paper, (double)s->comp_params));
    }
    hvq_buf_puts(b, ", \"bpp_file\": ");
    json_num(b, ratio(8.0 * (double)s->fsize, (double)s->total));
    hvq_buf_printf(b, "}, \"checksums\": \"%s\"", s->bad == HVQ_OK ? "ok" : "mismatch");
    if (s->first_bad) {
        hvq_buf_puts(b, ", \"checksum_error\": ");
        hvq_buf_json_string(b, s->first_bad);
    }
    hvq_buf_puts(b, "}\n");
}

/* One line of the table. */
static void insp_text_tensor(hvq_buf *b, const insp *s, size_t i)
{
    const hvq_container_tensor *t = hvq_container_info(s->c, i);
    char shape[160];
    shape_text(shape, sizeof shape, t);
    char shown[512];
    hvq_buf_printf(b, "  %-*s %-14s %-5s %-4s %12llu %7.3f  ", (int)s->width,
                   hvq_printable(t->name, shown, sizeof shown), shape, t->dtype_name,
                   t->compressed ? "hvq" : "raw", (unsigned long long)t->stored_bytes,
                   ratio(8.0 * (double)t->stored_bytes, (double)t->numel));
    if (t->compressed) {
        stage_text(b, &t->clusterer);
        hvq_buf_puts(b, " + ");
        stage_text(b, &t->residual);
        if (!t->has_scales)
            hvq_buf_puts(b, " (no row scales)");
    } else {
        hvq_buf_puts(b, "-");
    }
    hvq_buf_puts(b, s->ok[i] ? "\n" : "  CHECKSUM MISMATCH\n");
}

static void insp_text(hvq_buf *b, const insp *s)
{
    hvq_buf_printf(b, "%s: hvq container, format version %s, %llu bytes", s->in, s->ver,
                   (unsigned long long)s->fsize);
    if (s->n_shards > 1)
        hvq_buf_printf(b, " in %llu shards and an index", s->n_shards);
    hvq_buf_puts(b, "\n");
    hvq_buf_printf(b, "  producer:       %s\n", s->producer ? s->producer : "(not recorded)");
    hvq_buf_printf(b, "  source format:  %s\n", s->srcfmt ? s->srcfmt : "(not recorded)");
    hvq_buf_printf(b, "  pipeline:       %s\n", s->pname ? s->pname : "(unnamed)");
    hvq_buf_printf(b, "  tensors:        %zu (%zu compressed, %zu stored raw)\n\n", s->n,
                   s->n_comp, s->n - s->n_comp);
    hvq_buf_printf(b, "  %-*s %-14s %-5s %-4s %12s %7s  %s\n", (int)s->width, "NAME", "SHAPE",
                   "DTYPE", "ENC", "STORED B", "BPP", "CLUSTERER + RESIDUAL");
    for (size_t i = 0; i < s->n; i++)
        insp_text_tensor(b, s, i);
    hvq_buf_printf(b, "\n  parameters:     %llu (%llu in compressed tensors)\n",
                   (unsigned long long)s->total, (unsigned long long)s->comp_params);
    hvq_buf_printf(b, "  compressed:     %llu bytes stored, %.4f bits per parameter",
                   (unsigned long long)s->comp_bytes,
                   ratio(8.0 * (double)s->comp_bytes, (double)s->comp_params));
    if (s->all_paper && s->n_comp)
        hvq_buf_printf(b, " (%.4f in the paper's accounting)",
                       ratio((double)s->paper, (double)s->comp_params));
    hvq_buf_printf(b, "\n  raw:            %llu bytes\n", (unsigned long long)s->raw_bytes);
    hvq_buf_printf(b, "  file:           %llu bytes, %.4f bits per parameter\n",
                   (unsigned long long)s->fsize, ratio(8.0 * (double)s->fsize, (double)s->total));
    if (s->bad == HVQ_OK)
        hvq_buf_printf(b, "  checksums:      OK (%zu tensors)\n", s->n);
    else
        hvq_buf_printf(b, "  checksums:      FAILED: %s\n", s->first_bad ? s->first_bad : "");
}

static hvq_status inspect_run(hvq_ctx *ctx, const hvq_registry *reg, const char *in, int json)
{
    insp s = {.in = in, .bad = HVQ_OK};
    hvq_status st = hvq_container_open(ctx, reg, in, &s.c);
    if (st != HVQ_OK)
        return st;
    s.n = hvq_container_count(s.c);
    if (!(s.ok = calloc(s.n ? s.n : 1, 1))) {
        hvq_container_close(ctx, s.c);
        return hvq_error(ctx, HVQ_E_NOMEM, "out of memory");
    }
    insp_checksums(ctx, &s);
    insp_totals(&s);
    hvq_buf b;
    hvq_buf_init(&b);
    if (json)
        insp_json(&b, &s);
    else
        insp_text(&b, &s);
    if (b.oom)
        st = hvq_error(ctx, HVQ_E_NOMEM, "out of memory");
    else
        fwrite(b.data, 1, b.len, stdout);
    hvq_buf_free(&b);
    if (st == HVQ_OK && s.bad != HVQ_OK)
        st = hvq_error(ctx, s.bad, "%s", s.first_bad ? s.first_bad : "checksum verification failed");
    free(s.first_bad);
    free(s.pname);
    free(s.ok);
    hvq_container_close(ctx, s.c);
    return st;
}

/* The arguments of inspect and verify. */
typedef struct {
    const char *in;
    int json;
} file_args;

static hvq_status inspect_cmd(hvq_ctx *ctx, const hvq_registry *reg, const void *args)
{
    const file_args *a = args;
    return inspect_run(ctx, reg, a->in, a->json);
}

/* inspect and verify: the options (lo, shorts: --json, and --threads where
 * the table has it), one container, then cmd on it. */
static int container_command(int argc, char **argv, const char *const *plugin_dirs,
                             size_t n_plugin_dirs, const hvq_ctx_opts *gopts, const char *name,
                             const struct option *lo, const char *shorts,
                             void (*usage)(FILE *), hvq_cli_run_fn cmd)
{
    hvq_ctx_opts opts = *gopts;
    hvq_cli_dirs d = {0};
    int c, rc = -1, json = 0;
    for (size_t i = 0; i < n_plugin_dirs; i++)
        if (!hvq_cli_dirs_add(&d, plugin_dirs[i]))
            rc = HVQ_EXIT_OTHER;
    while (rc < 0 && (c = getopt_long(argc, argv, shorts, lo, NULL)) != -1) {
        if (c == OPT_JSON) {
            json = 1;
        } else if (c == 't') {
            if (!hvq_parse_threads(optarg, &opts.threads))
                rc = HVQ_EXIT_BAD_INPUT;
        } else {
            rc = hvq_cli_common_opt(c, &d, &opts, name, usage);
        }
    }
    if (rc < 0 && optind + 1 != argc) {
        fprintf(stderr, "hvqconv: error: %s %s\nTry 'hvqconv %s --help'.\n", name,
                optind >= argc ? "needs a container" : "takes one container", name);
        rc = HVQ_EXIT_BAD_INPUT;
    }
    if (rc >= 0) {
        free(d.v);
        return rc;
    }
    const file_args a = {argv[optind], json};
    return hvq_cli_run(&opts, &d, cmd, &a);
}

int hvq_cmd_inspect(int argc, char **argv, const char *const *plugin_dirs, size_t n_plugin_dirs,
                    const hvq_ctx_opts *gopts)
{
    static const struct option lo[] = {
        {"json", no_argument, 0, OPT_JSON}, {"plugin-dir", required_argument, 0, OPT_PLUGIN_DIR},
        {"quiet", no_argument, 0, 'q'}, {"verbose", no_argument, 0, 'v'},
        {"help", no_argument, 0, 'h'}, {"version", no_argument, 0, 'V'}, {0, 0, 0, 0}};
    return container_command(argc, argv, plugin_dirs, n_plugin_dirs, gopts, "inspect", lo, "qvhV",
                             usage_inspect, inspect_cmd);
}

/* ---- verify -------------------------------------------------------------- */

static void usage_verify(FILE *f)
{
    fputs("Usage: hvqconv verify CONTAINER [OPTION]...\n"
          "Check an hvq container: its header and metadata, every stored tensor's dtype,\n"
          "shape and offsets, the tensor index, a sharded container's index and every\n"
          "shard, the CRC-32 of every tensor, and that every compressed tensor's\n"
          "components decode (with the plugins that wrote them, when installed).\n"
          "Stops at the first problem and prints it (the file, the tensor, what is\n"
          "wrong), exit status 2; otherwise prints a one-line OK summary.\n"
          "CONTAINER is a .hvq file, or a sharded container's NAME.hvq.index.json or its\n"
          "directory.\n"
          "\n"
          "      --json            print the result as one JSON object on stdout\n"
          "  -t, --threads N       worker threads (default: all cores)\n"
          "      --plugin-dir DIR, -q, -v, -h as for every command\n",
          f);
}

static void verify_json(const char *in, hvq_status st, const char *problem, size_t n,
                        size_t n_comp, size_t n_decoded, uint64_t fsize)
{
    hvq_buf b;
    hvq_buf_init(&b);
    hvq_buf_puts(&b, "{\"file\": ");
    hvq_buf_json_string(&b, in);
    hvq_buf_printf(&b, ", \"ok\": %s", st == HVQ_OK ? "true" : "false");
    if (st == HVQ_OK)
        hvq_buf_printf(&b, ", \"file_bytes\": %llu, \"tensors\": %zu, \"compressed\": %zu, "
                       "\"decoded\": %zu", (unsigned long long)fsize, n, n_comp, n_decoded);
    else {
        hvq_buf_puts(&b, ", \"error\": ");
        hvq_buf_json_string(&b, problem ? problem : "");
    }
    hvq_buf_puts(&b, "}\n");
    if (!b.oom)
        fwrite(b.data, 1, b.len, stdout);
    hvq_buf_free(&b);
}

/* Opens (the structural checks of hvq_container_open), then per tensor:
 * the CRC, then for a compressed tensor a full decode, which checks the
 * components against their plugin's layout. The first failure ends it. */
static hvq_status verify_run(hvq_ctx *ctx, const hvq_registry *reg, const char *in, int json)
{
    hvq_container *c = NULL;
    size_t n = 0, n_comp = 0, n_decoded = 0, n_missing = 0;
    uint64_t fsize = 0;
    float *buf = NULL;
    size_t cap = 0;
    const char *missing_plugin_tensor = NULL;
    hvq_status st = hvq_container_open(ctx, reg, in, &c);
    if (st == HVQ_OK) {
        n = hvq_container_count(c);
        fsize = hvq_container_file_size(c);
    }
    for (size_t i = 0; st == HVQ_OK && i < n; i++) {
        const hvq_container_tensor *t = hvq_container_info(c, i);
        if ((st = hvq_container_verify(ctx, c, i)) != HVQ_OK)
            break;
        if (!t->compressed)
            continue;
        n_comp++;
        if (t->numel > cap) {
            float *nb = hvq_alloc(ctx, (size_t)t->numel * sizeof *nb);
            if (!nb) {
                st = HVQ_E_NOMEM;
                break;
            }
            free(buf);
            buf = nb;
            cap = (size_t)t->numel;
        }
        st = hvq_container_read_decoded(ctx, c, i, buf);
        if (st == HVQ_E_NOTFOUND) { /* a plugin this hvqconv lacks: not the file's fault */
            hvq_log(ctx, HVQ_LOG_WARN, "%s", hvq_ctx_error(ctx));
            hvq_ctx_clear_error(ctx);
            if (!missing_plugin_tensor)
                missing_plugin_tensor = t->name;
            n_missing++;
            st = HVQ_OK;
        } else if (st == HVQ_OK) {
            n_decoded++;
        }
    }
    if (json) {
        verify_json(in, st, st == HVQ_OK ? NULL : hvq_ctx_error(ctx), n, n_comp, n_decoded,
                    fsize);
    } else if (st == HVQ_OK) {
        printf("%s: OK: hvq container, %zu tensors (%zu compressed), %llu bytes; structure and "
               "every checksum verified", in, n, n_comp, (unsigned long long)fsize);
        if (n_missing)
            printf("; %zu compressed tensor%s not decoded (plugin not installed, first '%s')",
                   n_missing, n_missing == 1 ? "" : "s", missing_plugin_tensor);
        printf("\n");
    }
    free(buf);
    hvq_container_close(ctx, c);
    return st;
}

static hvq_status verify_cmd(hvq_ctx *ctx, const hvq_registry *reg, const void *args)
{
    const file_args *a = args;
    return verify_run(ctx, reg, a->in, a->json);
}

int hvq_cmd_verify(int argc, char **argv, const char *const *plugin_dirs, size_t n_plugin_dirs,
                   const hvq_ctx_opts *gopts)
{
    static const struct option lo[] = {
        {"json", no_argument, 0, OPT_JSON}, {"threads", required_argument, 0, 't'},
        {"plugin-dir", required_argument, 0, OPT_PLUGIN_DIR},
        {"quiet", no_argument, 0, 'q'}, {"verbose", no_argument, 0, 'v'},
        {"help", no_argument, 0, 'h'}, {"version", no_argument, 0, 'V'}, {0, 0, 0, 0}};
    return container_command(argc, argv, plugin_dirs, n_plugin_dirs, gopts, "verify", lo,
                             "t:qvhV", usage_verify, verify_cmd);
}
