/* llama.cpp's block types written natively into GGUF (ggml_native.h). */
#include "ggml_native.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* llama-quantize's fallback for a row that fits no block of t, by name;
 * LLAMA_FTYPE_MOSTLY_* of t. */
static const struct {
    const char *name, *fallback;
    uint32_t ftype;
} native[] = {
    {"q4_0", NULL, 2},       {"q4_1", NULL, 3},       {"q8_0", NULL, 7},
    {"q5_0", NULL, 8},       {"q5_1", NULL, 9},       {"iq4_nl", NULL, 25},
    {"q2_K", "q4_0", 10},    {"q3_K", "q4_0", 11},    {"q4_K", "q5_0", 14},
    {"q5_K", "q5_1", 16},    {"q6_K", "q8_0", 18},    {"iq4_xs", "iq4_nl", 30},
};

static size_t native_index(const hvq_ggml_type *t)
{
    for (size_t i = 0; i < sizeof native / sizeof native[0]; i++)
        if (strcmp(native[i].name, t->name) == 0)
            return i;
    return 0; /* every type of ggml_quants.c is listed */
}

const hvq_ggml_type *hvq_ggml_fallback(const hvq_ggml_type *t, int64_t row)
{
    if (row % t->block == 0)
        return t;
    const char *fb = native[native_index(t)].fallback;
    const hvq_ggml_type *f = fb ? hvq_ggml_type_find(fb) : NULL;
    return f && row % f->block == 0 ? f : NULL;
}

uint32_t hvq_ggml_ftype(const hvq_ggml_type *t)
{
    return native[native_index(t)].ftype;
}

const hvq_ggml_type *hvq_ggml_declare(hvq_tensor_info *o, const hvq_ggml_type *t)
{
    int64_t row = o->ndim > 0 ? o->shape[o->ndim - 1] : 1;
    const hvq_ggml_type *ft = hvq_ggml_fallback(t, row);
    uint64_t numel = hvq_numel(o);
    if (ft) {
        o->dtype = HVQ_DTYPE_OPAQUE;
        o->dtype_name = ft->ggml;
        o->nbytes = numel / (uint64_t)ft->block * ft->block_bytes;
    } else {
        o->dtype = HVQ_DTYPE_F16;
        o->dtype_name = "F16";
        o->nbytes = numel * 2;
    }
    return ft;
}

typedef struct quant_job {
    const hvq_ggml_type *t;
    const float *x;
    uint8_t *out;
    int64_t row;
    size_t row_bytes;
} quant_job;

static void quant_rows(void *arg, uint64_t chunk, uint64_t r0, uint64_t r1)
{
    const quant_job *j = arg;
    (void)chunk;
    for (uint64_t r = r0; r < r1; r++)
        j->t->quantize_row(j->x + r * (uint64_t)j->row, NULL, j->out + r * j->row_bytes, j->row);
}

hvq_status hvq_ggml_quantize(hvq_ctx *ctx, const hvq_tensor_info *o, const hvq_ggml_type *ft,
                             const float *x, void *out)
{
    uint64_t numel = hvq_numel(o);
    if (!ft)
        return ctx->host->convert(ctx, HVQ_DTYPE_F16, out, HVQ_DTYPE_F32, x, (size_t)numel);
    int64_t row = o->shape[o->ndim - 1];
    if (row == 0 || numel == 0)
        return HVQ_OK;
    quant_job j = {ft, x, out, row, (size_t)row / (size_t)ft->block * ft->block_bytes};
    hvq_host_parallel_for(ctx, numel / (uint64_t)row, hvq_par_rows((uint64_t)row), quant_rows,
                          &j);
    return HVQ_OK;
}

void hvq_ggml_mix_add(hvq_ggml_mix *m, const hvq_ggml_type *t, uint64_t params)
{
    size_t k = 0;
    while (k < 15 && m->type[k] && m->type[k] != t)
        k++;
    m->type[k] = t;
    m->params[k] += params;
}

const hvq_ggml_type *hvq_ggml_mix_main(const hvq_ggml_mix *m)
{
    const hvq_ggml_type *best = NULL;
    uint64_t most = 0;
    for (size_t k = 0; k < 16 && m->type[k]; k++)
        if (!best || m->params[k] > most) {
            most = m->params[k];
            best = m->type[k];
        }
    return best;
}

#define KEY_FTYPE "general.file_type"
#define KEY_QVERSION "general.quantization_version"

int hvq_ggml_meta_init(hvq_ggml_meta *g, const hvq_meta *meta, size_t n, const hvq_ggml_type *t)
{
    int has_ftype = 0, has_qv = 0;
    snprintf(g->ftype, sizeof g->ftype, "{\"gguf_type\":\"uint32\",\"value\":%u}",
             (unsigned)hvq_ggml_ftype(t));
    g->n = 0;
    g->meta = malloc((n + 2) * sizeof *g->meta);
    if (!g->meta)
        return 0;
    for (size_t i = 0; i < n; i++) {
        g->meta[g->n] = meta[i];
        if (strcmp(meta[i].key, KEY_FTYPE) == 0) {
            g->meta[g->n].value = g->ftype;
            has_ftype = 1;
        }
        has_qv |= strcmp(meta[i].key, KEY_QVERSION) == 0;
        g->n++;
    }
    if (!has_ftype)
        g->meta[g->n++] = (hvq_meta){KEY_FTYPE, g->ftype};
    if (!has_qv) /* GGML_QNT_VERSION */
        g->meta[g->n++] = (hvq_meta){KEY_QVERSION, "{\"gguf_type\":\"uint32\",\"value\":2}"};
    return 1;
}

void hvq_ggml_meta_free(hvq_ggml_meta *g)
{
    free(g->meta);
    g->meta = NULL;
    g->n = 0;
}

void hvq_ggml_fallback_note(hvq_ggml_fallbacks *f, const char *name, int64_t row,
                            const hvq_ggml_type *t, const hvq_ggml_type *ft)
{
    f->n_total++;
    if (ft == t)
        return;
    const char *type = ft ? ft->ggml : "F16";
    size_t k = 0;
    while (k < 4 && f->type[k] && strcmp(f->type[k], type) != 0)
        k++;
    if (k < 4) {
        f->type[k] = type;
        f->count[k]++;
    }
    if (f->n++ == 0) {
        f->example = name;
        f->example_row = row;
        f->example_type = t;
    }
}

void hvq_ggml_fallback_warn(hvq_ctx *ctx, const hvq_ggml_fallbacks *f, const char *what)
{
    if (f->n == 0)
        return;
    char as[160] = "";
    size_t len = 0;
    for (size_t k = 0; k < 4 && f->type[k]; k++)
        len += (size_t)snprintf(as + len, sizeof as - len, "%s%s (%zu)", k ? ", " : "",
                                f->type[k], f->count[k]);
    ctx->host->log(ctx, HVQ_LOG_WARN,
                   "%s: %zu of %zu quantized tensors have rows that fit no %s block of %d "
                   "(e.g. '%s', rows of %lld); written as %s instead, as llama-quantize "
                   "falls back",
                   what, f->n, f->n_total, f->example_type->ggml, f->example_type->block,
                   f->example,
                   (long long)f->example_row, as);
}
