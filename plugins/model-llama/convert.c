/* Llama-family conversion between Hugging Face and llama.cpp layouts: the
 * names, the q/k row permutation and the metadata (convert.h). */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include "convert.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Hugging Face and llama.cpp names; "%d" stands for the block number. */
static const struct lc_name {
    const char *hf, *gguf;
    int rows;
} lc_names[] = {
    {"model.embed_tokens.weight", "token_embd.weight", HVQ_LLAMA_ROWS_KEEP},
    {"model.norm.weight", "output_norm.weight", HVQ_LLAMA_ROWS_KEEP},
    {"lm_head.weight", "output.weight", HVQ_LLAMA_ROWS_KEEP},
    {"model.layers.%d.input_layernorm.weight", "blk.%d.attn_norm.weight", HVQ_LLAMA_ROWS_KEEP},
    {"model.layers.%d.post_attention_layernorm.weight", "blk.%d.ffn_norm.weight",
     HVQ_LLAMA_ROWS_KEEP},
    {"model.layers.%d.self_attn.q_proj.weight", "blk.%d.attn_q.weight", HVQ_LLAMA_ROWS_Q},
    {"model.layers.%d.self_attn.k_proj.weight", "blk.%d.attn_k.weight", HVQ_LLAMA_ROWS_K},
    {"model.layers.%d.self_attn.v_proj.weight", "blk.%d.attn_v.weight", HVQ_LLAMA_ROWS_KEEP},
    {"model.layers.%d.self_attn.o_proj.weight", "blk.%d.attn_output.weight",
     HVQ_LLAMA_ROWS_KEEP},
    {"model.layers.%d.mlp.gate_proj.weight", "blk.%d.ffn_gate.weight", HVQ_LLAMA_ROWS_KEEP},
    {"model.layers.%d.mlp.up_proj.weight", "blk.%d.ffn_up.weight", HVQ_LLAMA_ROWS_KEEP},
    {"model.layers.%d.mlp.down_proj.weight", "blk.%d.ffn_down.weight", HVQ_LLAMA_ROWS_KEEP},
};

/* Whether name matches pattern (at most one "%d": a block number of 1 to 6
 * digits); *layer gets the number (-1 without one). */
static int lc_match(const char *pattern, const char *name, int *layer)
{
    const char *d = strstr(pattern, "%d");
    *layer = -1;
    if (!d)
        return strcmp(pattern, name) == 0;
    size_t pre = (size_t)(d - pattern);
    if (strncmp(pattern, name, pre) != 0)
        return 0;
    const char *p = name + pre;
    int n = 0, digits = 0;
    while (*p >= '0' && *p <= '9' && digits < 7) {
        n = n * 10 + (*p++ - '0');
        digits++;
    }
    if (digits == 0 || digits > 6 || (digits > 1 && name[pre] == '0'))
        return 0;
    *layer = n;
    return strcmp(p, d + 2) == 0;
}

int hvq_llama_map_name(int to_gguf, const char *name, char *buf, size_t len, int *rows)
{
    for (size_t i = 0; i < sizeof lc_names / sizeof lc_names[0]; i++) {
        const char *from = to_gguf ? lc_names[i].hf : lc_names[i].gguf;
        const char *to = to_gguf ? lc_names[i].gguf : lc_names[i].hf;
        int layer;
        if (!lc_match(from, name, &layer))
            continue;
        int w = layer < 0 ? snprintf(buf, len, "%s", to) : snprintf(buf, len, to, layer);
        if (w < 0 || (size_t)w >= len)
            return 0;
        *rows = lc_names[i].rows;
        return 1;
    }
    return 0;
}

void hvq_llama_permute_rows(void *out, const void *in, int n_head, int64_t rows,
                            size_t row_bytes, int to_gguf)
{
    int64_t hd = rows / n_head, half = hd / 2;
    for (int64_t h = 0; h < n_head; h++)
        for (int64_t i = 0; i < half; i++)
            for (int64_t j = 0; j < 2; j++) {
                int64_t inter = h * hd + 2 * i + j, rot = h * hd + j * half + i;
                int64_t dst = to_gguf ? inter : rot, src = to_gguf ? rot : inter;
                memcpy((char *)out + (size_t)dst * row_bytes,
                       (const char *)in + (size_t)src * row_bytes, row_bytes);
            }
}

/* ------------------------------------------------------------------------
 * Metadata being built
 * ---------------------------------------------------------------------- */

void hvq_llama_meta_free(hvq_llama_meta *m)
{
    for (size_t i = 0; i < m->n; i++) {
        if (m->owned[i])
            free((char *)m->v[i].key);
        free((char *)m->v[i].value);
    }
    free(m->v);
    free(m->owned);
    memset(m, 0, sizeof *m);
}

void hvq_llama_meta_put(hvq_llama_meta *m, const char *key, hvq_buf *b)
{
    if (m->n == m->cap) {
        size_t cap = m->cap ? 2 * m->cap : 32;
        hvq_meta *v = realloc(m->v, cap * sizeof *v);
        unsigned char *o = v ? realloc(m->owned, cap) : NULL;
        if (v)
            m->v = v;
        if (o)
            m->owned = o;
        if (!v || !o) {
            m->oom = 1;
            hvq_buf_free(b);
            return;
        }
        m->cap = cap;
    }
    hvq_buf_append(b, "", 1); /* the terminating NUL */
    if (b->oom) {
        m->oom = 1;
        hvq_buf_free(b);
        return;
    }
    m->v[m->n].key = key;
    m->v[m->n].value = b->data; /* the buffer's, now ours */
    m->owned[m->n++] = 0;
}

static void lc_scalar(hvq_llama_meta *m, const char *key, const char *type, const char *fmt,
                      double v)
{
    hvq_buf b;
    hvq_buf_init(&b);
    hvq_buf_printf(&b, "{\"gguf_type\":\"%s\",\"value\":", type);
    hvq_buf_printf(&b, fmt, v);
    hvq_buf_puts(&b, "}");
    hvq_llama_meta_put(m, key, &b);
}

void hvq_llama_meta_u32(hvq_llama_meta *m, const char *key, uint32_t v)
{
    lc_scalar(m, key, "uint32", "%.0f", (double)v);
}

void hvq_llama_meta_f32(hvq_llama_meta *m, const char *key, double v)
{
    lc_scalar(m, key, "float32", "%.9g", (double)(float)v);
}

void hvq_llama_meta_str(hvq_llama_meta *m, const char *key, const char *s)
{
    hvq_buf b;
    hvq_buf_init(&b);
    hvq_buf_puts(&b, "{\"gguf_type\":\"string\",\"value\":");
    hvq_buf_json_string(&b, s);
    hvq_buf_puts(&b, "}");
    hvq_llama_meta_put(m, key, &b);
}

void hvq_llama_meta_bool(hvq_llama_meta *m, const char *key, int v)
{
    hvq_buf b;
    hvq_buf_init(&b);
    hvq_buf_printf(&b, "{\"gguf_type\":\"bool\",\"value\":%s}", v ? "true" : "false");
    hvq_llama_meta_put(m, key, &b);
}
