/* `hvqconv convert` and the Llama mapping behind it (plugins/model-llama
 * convert.c, convert_plugin.c, tok_gguf.c, compiled in):
 *   - the q/k row permutation against a scalar reference written from
 *     llama.cpp's definition (reshape to [heads, 2, head_dim/2, cols], swap
 *     the middle axes), both ways;
 *   - tensor names both ways, and names that are not Llama's;
 *   - GGUF metadata from a config.json, config.json from GGUF metadata;
 *   - the tokenizers: llama2.c's tokenizer.bin, a SentencePiece protobuf
 *     and a byte-level BPE tokenizer.json, small fixtures written here;
 *   - the binary: the demo model to GGUF, back to a Hugging Face directory
 *     and to GGUF again (the same bytes), --dtype, formats, shards, and
 *     every bad input (exit status 2, the file named, nothing left);
 *   - with ../shared/data: the result equals llama.cpp's own
 *     stories260K.f32.gguf / .f16.gguf tensor for tensor. */
#include "config.h"

#include "convert.h"
#include "ctx.h"
#include "harness.h"
#include "meta.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MODEL "models/stories260K"
#define TOKENIZER "tests/data/eval/tok512.bin"

/* ---- the permutation ----------------------------------------------------- */

/* llama.cpp's permute on a [rows, cols] matrix, index by index: row
 * (h, i, j) of the view [heads, head_dim/2, 2] comes from row (h, j, i) of
 * the view [heads, 2, head_dim/2]. */
static void permute_ref(float *out, const float *in, int heads, int rows, int cols)
{
    int hd = rows / heads, half = hd / 2;
    for (int h = 0; h < heads; h++)
        for (int i = 0; i < half; i++)
            for (int j = 0; j < 2; j++)
                for (int c = 0; c < cols; c++)
                    out[((h * half + i) * 2 + j) * cols + c] = in[((h * 2 + j) * half + i) * cols + c];
}

START_TEST(test_permute)
{
    static const int shapes[][3] = {{8, 64, 5}, {4, 32, 3}, {1, 2, 1}, {9, 576, 2}, {3, 192, 4}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int heads = shapes[s][0], rows = shapes[s][1], cols = shapes[s][2];
        size_t n = (size_t)rows * (size_t)cols;
        float *w = malloc(n * sizeof *w), *ref = malloc(n * sizeof *ref);
        float *got = malloc(n * sizeof *got), *back = malloc(n * sizeof *back);
        for (size_t k = 0; k < n; k++)
            w[k] = (float)k;
        permute_ref(ref, w, heads, rows, cols);
        hvq_llama_permute_rows(got, w, heads, rows, (size_t)cols * sizeof(float), 1);
        ck_assert_int_eq(memcmp(got, ref, n * sizeof *got), 0);
        hvq_llama_permute_rows(back, got, heads, rows, (size_t)cols * sizeof(float), 0);
        ck_assert_int_eq(memcmp(back, w, n * sizeof *w), 0);
        free(w);
        free(ref);
        free(got);
        free(back);
    }
}
END_TEST

/* ---- names --------------------------------------------------------------- */

START_TEST(test_names)
{
    static const char *const pairs[][2] = {
        {"model.embed_tokens.weight", "token_embd.weight"},
        {"model.norm.weight", "output_norm.weight"},
        {"lm_head.weight", "output.weight"},
        {"model.layers.0.input_layernorm.weight", "blk.0.attn_norm.weight"},
        {"model.layers.12.post_attention_layernorm.weight", "blk.12.ffn_norm.weight"},
        {"model.layers.3.self_attn.q_proj.weight", "blk.3.attn_q.weight"},
        {"model.layers.3.self_attn.k_proj.weight", "blk.3.attn_k.weight"},
        {"model.layers.3.self_attn.v_proj.weight", "blk.3.attn_v.weight"},
        {"model.layers.3.self_attn.o_proj.weight", "blk.3.attn_output.weight"},
        {"model.layers.31.mlp.gate_proj.weight", "blk.31.ffn_gate.weight"},
        {"model.layers.31.mlp.up_proj.weight", "blk.31.ffn_up.weight"},
        {"model.layers.31.mlp.down_proj.weight", "blk.31.ffn_down.weight"},
    };
    char buf[128];
    int rows;
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        ck_assert(hvq_llama_map_name(1, pairs[i][0], buf, sizeof buf, &rows));
        ck_assert_str_eq(buf, pairs[i][1]);
        int want = strstr(pairs[i][0], "q_proj")   ? HVQ_LLAMA_ROWS_Q
                   : strstr(pairs[i][0], "k_proj") ? HVQ_LLAMA_ROWS_K
                                                   : HVQ_LLAMA_ROWS_KEEP;
        ck_assert_int_eq(rows, want);
        ck_assert(hvq_llama_map_name(0, pairs[i][1], buf, sizeof buf, &rows));
        ck_assert_str_eq(buf, pairs[i][0]);
        ck_assert_int_eq(rows, want);
    }
    static const char *const not_llama[] = {
        "model.layers.01.mlp.up_proj.weight", "model.layers..mlp.up_proj.weight",
        "model.layers.1.mlp.up_proj.bias", "blk.1.attn_qkv.weight", "token_embd.weight.x",
        "model.layers.1234567.mlp.up_proj.weight", "rope_freqs.weight"};
    for (size_t i = 0; i < sizeof not_llama / sizeof not_llama[0]; i++) {
        ck_assert(!hvq_llama_map_name(1, not_llama[i], buf, sizeof buf, &rows));
        ck_assert(!hvq_llama_map_name(0, not_llama[i], buf, sizeof buf, &rows));
    }
    ck_assert(!hvq_llama_map_name(1, "model.norm.weight", buf, 8, &rows)); /* too long */
}
END_TEST

/* ---- metadata ------------------------------------------------------------ */

static const char *meta_value(const hvq_meta *m, size_t n, const char *key)
{
    const char *v = hvq_meta_find(m, n, key);
    ck_assert_msg(v != NULL, "no %s", key);
    return v;
}

/* convert_open refuses su as bad input, naming needle. */
static void open_fails(hvq_ctx *ctx, const hvq_convert_setup *su, const char *needle)
{
    void *st = NULL;
    ck_assert_int_eq(hvq_llama_convert_open(ctx, su, &st), HVQ_E_INPUT);
    ck_assert_ptr_nonnull(strstr(hvq_ctx_error(ctx), needle));
    hvq_llama_convert_close(ctx, st);
}

START_TEST(test_meta_from_config)
{
    hvq_ctx *ctx = th_ctx();
    static const char cfg[] =
        "{\"model_type\": \"llama\", \"hidden_size\": 64, \"intermediate_size\": 172, "
        "\"num_hidden_layers\": 5, \"num_attention_heads\": 8, \"num_key_value_heads\": 4, "
        "\"max_position_embeddings\": 512, \"rms_norm_eps\": 1e-05, \"rope_theta\": 10000.0, "
        "\"vocab_size\": 512, \"bos_token_id\": 1, \"eos_token_id\": [2, 3]}";
    hvq_convert_setup su = {1, "m", cfg, "m/config.json", NULL, 0, NULL, NULL, NULL, 0,
                            HVQ_DTYPE_F16};
    void *st = NULL;
    ck_assert_int_eq(hvq_llama_convert_open(ctx, &su, &st), HVQ_OK);
    const hvq_meta *m;
    size_t n;
    ck_assert_int_eq(hvq_llama_convert_meta(ctx, st, &m, &n), HVQ_OK);
    ck_assert_str_eq(meta_value(m, n, "general.architecture"),
                     "{\"gguf_type\":\"string\",\"value\":\"llama\"}");
    ck_assert_str_eq(meta_value(m, n, "general.file_type"), "{\"gguf_type\":\"uint32\",\"value\":1}");
    ck_assert_str_eq(meta_value(m, n, "llama.block_count"), "{\"gguf_type\":\"uint32\",\"value\":5}");
    ck_assert_str_eq(meta_value(m, n, "llama.attention.head_count_kv"),
                     "{\"gguf_type\":\"uint32\",\"value\":4}");
    ck_assert_str_eq(meta_value(m, n, "llama.rope.dimension_count"),
                     "{\"gguf_type\":\"uint32\",\"value\":8}");
    ck_assert_str_eq(meta_value(m, n, "llama.context_length"),
                     "{\"gguf_type\":\"uint32\",\"value\":512}");
    ck_assert_str_eq(meta_value(m, n, "llama.attention.layer_norm_rms_epsilon"),
                     "{\"gguf_type\":\"float32\",\"value\":9.99999975e-06}");
    ck_assert_ptr_null(hvq_meta_find(m, n, "llama.attention.key_length")); /* 64 / 8 */
    hvq_llama_convert_close(ctx, st);

    /* a missing key and broken JSON name the file */
    static const char *const bad[] = {"{\"hidden_size\": 64}", "{\"hidden_size\": ",
                                      "{\"num_hidden_layers\": 2, \"hidden_size\": 64, "
                                      "\"intermediate_size\": 8, \"num_attention_heads\": 3}"};
    for (size_t i = 0; i < 3; i++) {
        su.config_json = bad[i];
        open_fails(ctx, &su, "m/config.json");
    }
    hvq_ctx_free(ctx);
}
END_TEST

START_TEST(test_config_from_meta)
{
    hvq_ctx *ctx = th_ctx();
    static const hvq_meta meta[] = {
        {"general.architecture", "{\"gguf_type\":\"string\",\"value\":\"llama\"}"},
        {"llama.block_count", "{\"gguf_type\":\"uint32\",\"value\":2}"},
        {"llama.embedding_length", "{\"gguf_type\":\"uint32\",\"value\":64}"},
        {"llama.feed_forward_length", "{\"gguf_type\":\"uint32\",\"value\":128}"},
        {"llama.attention.head_count", "{\"gguf_type\":\"uint32\",\"value\":4}"},
        {"llama.attention.head_count_kv", "{\"gguf_type\":\"uint32\",\"value\":2}"},
        {"llama.rope.freq_base", "{\"gguf_type\":\"float32\",\"value\":100000}"},
        {"llama.attention.layer_norm_rms_epsilon", "{\"gguf_type\":\"float32\",\"value\":9.99999975e-06}"},
        {"tokenizer.ggml.bos_token_id", "{\"gguf_type\":\"uint32\",\"value\":1}"},
    };
    hvq_tensor_info t[2] = {{.name = "token_embd.weight", .ndim = 2, .shape = {100, 64}},
                            {.name = "output.weight", .ndim = 2, .shape = {100, 64}}};
    hvq_convert_setup su = {0, "m.gguf", NULL, NULL, meta, 9, NULL, NULL, t, 2, HVQ_DTYPE_BF16};
    void *st = NULL;
    ck_assert_int_eq(hvq_llama_convert_open(ctx, &su, &st), HVQ_OK);
    const char *name;
    const void *data;
    size_t len;
    ck_assert_int_eq(hvq_llama_convert_file(ctx, st, 0, &name, &data, &len), HVQ_OK);
    ck_assert_str_eq(name, "config.json");
    char *text = strndup(data, len);
    static const char *const want[] = {
        "\"num_hidden_layers\": 2,", "\"hidden_size\": 64,", "\"intermediate_size\": 128,",
        "\"num_key_value_heads\": 2,", "\"head_dim\": 16,", "\"vocab_size\": 100,",
        "\"rms_norm_eps\": 1e-05,", "\"rope_theta\": 100000.0,", "\"bos_token_id\": 1,",
        "\"tie_word_embeddings\": false,", "\"torch_dtype\": \"bfloat16\""};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        ck_assert_msg(strstr(text, want[i]) != NULL, "%s not in %s", want[i], text);
    ck_assert_ptr_null(strstr(text, "eos_token_id"));
    free(text);
    ck_assert_int_eq(hvq_llama_convert_file(ctx, st, 1, &name, &data, &len), HVQ_OK);
    ck_assert_str_eq(name, "generation_config.json");
    ck_assert_int_eq(hvq_llama_convert_file(ctx, st, 2, &name, &data, &len), HVQ_E_NOTFOUND);
    hvq_llama_convert_close(ctx, st);
    su.n_meta = 3; /* no feed-forward width */
    open_fails(ctx, &su, "llama.feed_forward_length");
    hvq_ctx_free(ctx);
}
END_TEST

/* ---- tokenizers ---------------------------------------------------------- */

/* The items of a typed array entry, parsed (free doc). */
static const hvq_json_value *meta_array(const hvq_llama_meta *m, const char *key,
                                        hvq_json_doc **doc)
{
    const hvq_json_value *v = hvq_meta_typed(m->v, m->n, key, doc, NULL, NULL);
    ck_assert_msg(v && v->type == HVQ_JSON_ARRAY, "%s is not an array", key);
    return v;
}

static const char *item_str(const hvq_json_value *a, size_t i)
{
    return hvq_json_string(hvq_json_item(a, i), NULL);
}

static int64_t item_int(const hvq_json_value *a, size_t i)
{
    int64_t v = -99;
    hvq_json_int64(hvq_json_item(a, i), &v);
    return v;
}

START_TEST(test_tok_llama2c)
{
    hvq_ctx *ctx = th_ctx();
    hvq_llama_meta m = {0};
    ck_assert_int_eq(hvq_llama_tok_llama2c(ctx, th_src(TOKENIZER), &m), HVQ_OK);
    hvq_json_doc *dt = NULL, *dy = NULL;
    const hvq_json_value *tok = meta_array(&m, "tokenizer.ggml.tokens", &dt);
    const hvq_json_value *typ = meta_array(&m, "tokenizer.ggml.token_type", &dy);
    ck_assert_uint_eq(hvq_json_count(tok), 512);
    ck_assert_str_eq(item_str(tok, 0), "<unk>");
    ck_assert_str_eq(item_str(tok, 1), "<s>");
    ck_assert_str_eq(item_str(tok, 2), "</s>");
    ck_assert_str_eq(item_str(tok, 3), "<0x00>");
    ck_assert_int_eq(item_int(typ, 0), 2);
    ck_assert_int_eq(item_int(typ, 1), 3);
    ck_assert_int_eq(item_int(typ, 3), 6);
    ck_assert_int_eq(item_int(typ, 300), 1);
    /* spaces are SentencePiece's U+2581 */
    int found = 0;
    for (size_t i = 259; i < 512; i++)
        found += strncmp(item_str(tok, i), "\xe2\x96\x81", 3) == 0;
    ck_assert_int_gt(found, 10);
    hvq_json_free(dt);
    hvq_json_free(dy);
    hvq_llama_meta_free(&m);
    hvq_ctx_free(ctx);
}
END_TEST

static void pb_varint(char *b, size_t *n, uint64_t v)
{
    do {
        b[(*n)++] = (char)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
}

static void pb_bytes(char *b, size_t *n, int field, const char *s, size_t len)
{
    pb_varint(b, n, (uint64_t)field << 3 | 2);
    pb_varint(b, n, len);
    memcpy(b + *n, s, len);
    *n += len;
}

/* A SentencePiece message: piece, score (fixed32), type (omitted: 1). */
static void pb_piece(char *b, size_t *n, const char *piece, float score, int type)
{
    char m[64];
    size_t k = 0;
    uint32_t u;
    pb_bytes(m, &k, 1, piece, strlen(piece));
    memcpy(&u, &score, 4);
    m[k++] = (char)(2 << 3 | 5);
    for (int i = 0; i < 4; i++)
        m[k++] = (char)(u >> (8 * i));
    if (type != 1) {
        pb_varint(m, &k, 3 << 3);
        pb_varint(m, &k, (uint64_t)type);
    }
    pb_bytes(b, n, 1, m, k);
}

START_TEST(test_tok_spm)
{
    hvq_ctx *ctx = th_ctx();
    char *dir = th_tmpdir("convert-spm");
    char b[512], sub[32];
    size_t n = 0, k = 0;
    pb_piece(b, &n, "<unk>", 0, 2);
    pb_piece(b, &n, "<s>", 0, 3);
    pb_piece(b, &n, "</s>", 0, 3);
    pb_piece(b, &n, "\xe2\x96\x81" "a", -1.5f, 1);
    pb_varint(sub, &k, 41 << 3); /* trainer_spec.bos_id = 1, pad_id = 3 */
    pb_varint(sub, &k, 1);
    pb_varint(sub, &k, 43 << 3);
    pb_varint(sub, &k, 3);
    pb_bytes(b, &n, 2, sub, k);
    k = 0;
    pb_varint(sub, &k, 3 << 3); /* normalizer_spec.add_dummy_prefix = false */
    pb_varint(sub, &k, 0);
    pb_bytes(b, &n, 3, sub, k);
    th_write_file(th_join(dir, "tokenizer.model"), b, n);
    hvq_llama_meta m = {0};
    ck_assert_int_eq(hvq_llama_tok_spm(ctx, th_join(dir, "tokenizer.model"), &m), HVQ_OK);
    hvq_json_doc *dt = NULL, *ds = NULL, *dy = NULL;
    const hvq_json_value *tok = meta_array(&m, "tokenizer.ggml.tokens", &dt);
    const hvq_json_value *sc = meta_array(&m, "tokenizer.ggml.scores", &ds);
    const hvq_json_value *typ = meta_array(&m, "tokenizer.ggml.token_type", &dy);
    ck_assert_uint_eq(hvq_json_count(tok), 4);
    ck_assert_str_eq(item_str(tok, 3), "\xe2\x96\x81" "a");
    double s3;
    ck_assert_int_eq(hvq_json_double(hvq_json_item(sc, 3), &s3), 0);
    ck_assert(s3 == -1.5);
    ck_assert_int_eq(item_int(typ, 0), 2);
    ck_assert_int_eq(item_int(typ, 3), 1);
    ck_assert_str_eq(meta_value(m.v, m.n, "tokenizer.ggml.model"),
                     "{\"gguf_type\":\"string\",\"value\":\"llama\"}");
    ck_assert_str_eq(meta_value(m.v, m.n, "tokenizer.ggml.padding_token_id"),
                     "{\"gguf_type\":\"uint32\",\"value\":3}");
    ck_assert_str_eq(meta_value(m.v, m.n, "tokenizer.ggml.add_space_prefix"),
                     "{\"gguf_type\":\"bool\",\"value\":false}");
    hvq_json_free(dt);
    hvq_json_free(ds);
    hvq_json_free(dy);
    /* written back as tokenizer.model and read again: the same metadata */
    hvq_buf back;
    hvq_buf_init(&back);
    ck_assert_int_eq(hvq_llama_tok_model(ctx, m.v, m.n, "m.gguf", &back), HVQ_OK);
    th_write_file(th_join(dir, "back.model"), back.data, back.len);
    hvq_buf_free(&back);
    hvq_llama_meta m2 = {0};
    ck_assert_int_eq(hvq_llama_tok_spm(ctx, th_join(dir, "back.model"), &m2), HVQ_OK);
    ck_assert_uint_eq(m2.n, m.n);
    for (size_t i = 0; i < m.n; i++) {
        ck_assert_str_eq(m2.v[i].key, m.v[i].key);
        ck_assert_str_eq(m2.v[i].value, m.v[i].value);
    }
    hvq_llama_meta_free(&m2);
    hvq_llama_meta_free(&m);
    /* cut inside a piece: refused, the file named */
    th_write_file(th_join(dir, "cut.model"), b, 9);
    ck_assert_int_eq(hvq_llama_tok_spm(ctx, th_join(dir, "cut.model"), &m), HVQ_E_INPUT);
    ck_assert_ptr_nonnull(strstr(hvq_ctx_error(ctx), "cut.model"));
    hvq_llama_meta_free(&m);
    th_rmtree(dir);
    free(dir);
    hvq_ctx_free(ctx);
}
END_TEST

static const char BPE_JSON[] =
    "{\"added_tokens\": [{\"id\": 4, \"content\": \"<|endoftext|>\", \"special\": true}],"
    " \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Digits\","
    " \"individual_digits\": true}, {\"type\": \"ByteLevel\"}]},"
    " \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2, \"\\u0120a\": 3,"
    " \"<|endoftext|>\": 4}, \"merges\": [\"a b\", [\"\\u0120\", \"a\"]]}}";

START_TEST(test_tok_bpe)
{
    hvq_ctx *ctx = th_ctx();
    char *dir = th_tmpdir("convert-bpe");
    const char *p = th_join(dir, "tokenizer.json");
    th_write_file(p, BPE_JSON, strlen(BPE_JSON));
    hvq_llama_meta m = {0};
    const int64_t ids[3] = {4, 4, -1};
    ck_assert_int_eq(hvq_llama_tok_bpe(ctx, p, ids, &m), HVQ_OK);
    hvq_json_doc *dt = NULL, *dy = NULL, *dm = NULL;
    const hvq_json_value *tok = meta_array(&m, "tokenizer.ggml.tokens", &dt);
    const hvq_json_value *typ = meta_array(&m, "tokenizer.ggml.token_type", &dy);
    const hvq_json_value *mg = meta_array(&m, "tokenizer.ggml.merges", &dm);
    ck_assert_uint_eq(hvq_json_count(tok), 5);
    ck_assert_str_eq(item_str(tok, 2), "ab");
    ck_assert_int_eq(item_int(typ, 4), 3);
    ck_assert_int_eq(item_int(typ, 0), 1);
    ck_assert_str_eq(item_str(mg, 0), "a b");
    ck_assert_str_eq(item_str(mg, 1), "\xc4\xa0 a");
    ck_assert_str_eq(meta_value(m.v, m.n, "tokenizer.ggml.pre"),
                     "{\"gguf_type\":\"string\",\"value\":\"smollm\"}");
    ck_assert_ptr_null(hvq_meta_find(m.v, m.n, "tokenizer.ggml.padding_token_id"));
    /* and back: the same vocabulary, merges and special token */
    hvq_buf b;
    hvq_buf_init(&b);
    ck_assert_int_eq(hvq_llama_tok_json(ctx, m.v, m.n, "m.gguf", &b), HVQ_OK);
    hvq_json_doc *back = hvq_json_parse(b.data, b.len, 0, NULL);
    ck_assert_ptr_nonnull(back);
    const hvq_json_value *r = hvq_json_root(back);
    int64_t id;
    ck_assert_int_eq(hvq_json_int64(hvq_json_get(hvq_json_get(hvq_json_get(r, "model"), "vocab"),
                                                 "\xc4\xa0" "a"), &id), 0);
    ck_assert_int_eq(id, 3);
    ck_assert_str_eq(item_str(hvq_json_get(hvq_json_get(r, "model"), "merges"), 1), "\xc4\xa0 a");
    ck_assert_str_eq(hvq_json_string(hvq_json_get(hvq_json_item(hvq_json_get(r, "added_tokens"),
                                                                0), "content"), NULL),
                     "<|endoftext|>");
    hvq_json_free(back);
    hvq_buf_free(&b);
    hvq_json_free(dt);
    hvq_json_free(dy);
    hvq_json_free(dm);
    hvq_llama_meta_free(&m);
    /* broken: not JSON, a gap in the ids, not BPE; each names the file */
    static const char *const bad[] = {
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {",
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 2}, \"merges\": []}}",
        "{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}"};
    for (size_t i = 0; i < 3; i++) {
        th_write_file(p, bad[i], strlen(bad[i]));
        hvq_status st = hvq_llama_tok_bpe(ctx, p, ids, &m);
        ck_assert(st == HVQ_E_INPUT || st == HVQ_E_UNSUPPORTED);
        ck_assert_ptr_nonnull(strstr(hvq_ctx_error(ctx), "tokenizer.json"));
        hvq_llama_meta_free(&m);
    }
    th_rmtree(dir);
    free(dir);
    hvq_ctx_free(ctx);
}
END_TEST

/* ---- the binary ---------------------------------------------------------- */

/* Every tensor of a is in b under the same name with the same type, shape
 * and bytes, and b has no other. */
static void assert_same_tensors(const char *a, const char *b)
{
    hvq_ctx *ctx = th_ctx();
    hvq_registry *reg = th_registry(ctx);
    const hvq_host *H = ctx->host;
    hvq_model *ma = H->model_open(ctx, a), *mb = H->model_open(ctx, b);
    ck_assert_msg(ma && mb, "%s", hvq_ctx_error(ctx));
    ck_assert_uint_eq(H->model_count(ma), H->model_count(mb));
    for (size_t i = 0; i < H->model_count(ma); i++) {
        hvq_tensor_info info;
        hvq_tensor ta, tb;
        ck_assert_int_eq(H->model_info(ma, i, &info), HVQ_OK);
        ck_assert_int_eq(H->model_find(ctx, mb, info.name, &tb), HVQ_OK);
        void *copy = malloc(tb.info.nbytes + 1);
        memcpy(copy, tb.data, tb.info.nbytes);
        ck_assert_int_eq(H->model_find(ctx, ma, info.name, &ta), HVQ_OK);
        ck_assert_int_eq(ta.info.dtype, tb.info.dtype);
        ck_assert_int_eq(ta.info.ndim, tb.info.ndim);
        ck_assert_uint_eq(ta.info.nbytes, tb.info.nbytes);
        ck_assert_msg(memcmp(ta.data, copy, ta.info.nbytes) == 0, "%s differs", info.name);
        free(copy);
    }
    H->model_close(ctx, ma);
    H->model_close(ctx, mb);
    hvq_registry_free(reg);
    hvq_ctx_free(ctx);
}

/* The type of tensor name in the model at path. */
static hvq_dtype tensor_type(const char *path, const char *name)
{
    hvq_ctx *ctx = th_ctx();
    hvq_registry *reg = th_registry(ctx);
    hvq_model *m = ctx->host->model_open(ctx, path);
    hvq_tensor t;
    ck_assert_ptr_nonnull(m);
    ck_assert_int_eq(ctx->host->model_find(ctx, m, name, &t), HVQ_OK);
    hvq_dtype d = t.info.dtype;
    ctx->host->model_close(ctx, m);
    hvq_registry_free(reg);
    hvq_ctx_free(ctx);
    return d;
}

static void convert_ok(const char *in, const char *out, const char *opt, const char *val)
{
    char *err = NULL;
    int rc = th_hvq(NULL, &err, "convert", "-q", in, out, opt, val, (const char *)NULL);
    ck_assert_msg(rc == 0, "convert %s %s: %s", in, out, err);
    free(err);
}

START_TEST(test_cli_roundtrip)
{
    char *dir = th_tmpdir("convert-rt");
    char g1[512], g2[512], hf[512];
    snprintf(g1, sizeof g1, "%s/new/dirs/stories260K.gguf", dir);
    snprintf(hf, sizeof hf, "%s/stories260K/", dir);
    snprintf(g2, sizeof g2, "%s/again.gguf", dir);
    /* Hugging Face -> GGUF (parents made) -> Hugging Face -> GGUF again */
    convert_ok(th_src(MODEL), g1, "--tokenizer", th_src(TOKENIZER));
    convert_ok(g1, hf, NULL, NULL);
    th_assert_dir_holds(th_join(dir, "stories260K"), "config.json", "generation_config.json",
                        "model.safetensors", "tokenizer.model", (const char *)NULL);
    assert_same_tensors(th_src(MODEL), th_join(dir, "stories260K"));
    convert_ok(th_join(dir, "stories260K"), g2, NULL, NULL); /* its tokenizer.model */
    ck_assert(th_same_bytes(g1, g2));
    /* --dtype: weights f16, GGUF norms kept F32 */
    convert_ok(th_src(MODEL), th_join(dir, "h.gguf"), "--dtype", "f16");
    ck_assert_int_eq(tensor_type(th_join(dir, "h.gguf"), "blk.0.attn_q.weight"), HVQ_DTYPE_F16);
    ck_assert_int_eq(tensor_type(th_join(dir, "h.gguf"), "blk.0.attn_norm.weight"), HVQ_DTYPE_F32);
    /* npz (which has no bf16) and back: f16, then f32 */
    convert_ok(th_src(MODEL), th_join(dir, "m.npz"), "--dtype", "f16");
    ck_assert_int_eq(tensor_type(th_join(dir, "m.npz"), "model.norm.weight"), HVQ_DTYPE_F16);
    convert_ok(th_join(dir, "m.npz"), th_join(dir, "m.safetensors"), "--dtype", "f32");
    ck_assert_int_eq(tensor_type(th_join(dir, "m.safetensors"), "model.norm.weight"),
                     HVQ_DTYPE_F32);
    /* a directory output in shards, the input's config.json copied */
    convert_ok(th_src(MODEL), th_join(dir, "sh/"), "--max-shard-size", "300KB");
    ck_assert(th_exists(th_join(dir, "sh/model.safetensors.index.json")));
    ck_assert(th_same_bytes(th_join(dir, "sh/config.json"), th_src(MODEL "/config.json")));
    assert_same_tensors(th_src(MODEL), th_join(dir, "sh"));
    th_rmtree(dir);
    free(dir);
}
END_TEST

/* Tensors names[0..n) of models a and b have the same type, size and
 * bytes. */
static void assert_same_named(hvq_ctx *ctx, hvq_model *ma, hvq_model *mb,
                              const char *const *names, size_t n)
{
    const hvq_host *H = ctx->host;
    for (size_t i = 0; i < n; i++) {
        hvq_tensor a, b;
        ck_assert_int_eq(H->model_find(ctx, mb, names[i], &b), HVQ_OK);
        void *copy = malloc(b.info.nbytes + 1);
        memcpy(copy, b.data, b.info.nbytes);
        ck_assert_int_eq(H->model_find(ctx, ma, names[i], &a), HVQ_OK);
        ck_assert_int_eq(a.info.dtype, b.info.dtype);
        ck_assert_uint_eq(a.info.nbytes, b.info.nbytes);
        ck_assert_msg(memcmp(a.data, copy, a.info.nbytes) == 0, "%s differs", names[i]);
        free(copy);
    }
}

/* --dtype q8_0: the weight matrices (the embedding too) as Q8_0 blocks,
 * the very blocks the ggml clusterer gives (pipelines/q8_0.yaml to a GGUF
 * output, on the F32 GGUF of the same model), the down projections (rows
 * of 172) F16 with one warning, the norms F32, general.file_type 7. */
START_TEST(test_cli_q8_0)
{
    char *dir = th_tmpdir("convert-q8");
    char *err = NULL;
    convert_ok(th_src(MODEL), th_join(dir, "f.gguf"), "--tokenizer", th_src(TOKENIZER));
    ck_assert_int_eq(th_hvq(NULL, &err, "convert", th_src(MODEL), th_join(dir, "q.gguf"),
                            "--tokenizer", th_src(TOKENIZER), "--dtype", "q8_0",
                            (const char *)NULL), 0);
    th_assert_contains(err, "5 of 36 quantized tensors have rows that fit no Q8_0 block of 32 "
                            "(e.g. 'blk.0.ffn_down.weight', rows of 172); written as F16 (5)");
    free(err);
    ck_assert_int_eq(th_hvq(NULL, &err, "run", th_src("pipelines/q8_0.yaml"), "-q", "--input",
                            th_join(dir, "f.gguf"), "--output", th_join(dir, "r.gguf"),
                            "--report", "", (const char *)NULL), 0);
    free(err);
    static const char *const same[] = {"blk.0.attn_q.weight", "blk.2.attn_k.weight",
                                       "blk.4.ffn_up.weight", "blk.3.ffn_gate.weight"};
    hvq_ctx *ctx = th_ctx();
    hvq_registry *reg = th_registry(ctx);
    const hvq_host *H = ctx->host;
    hvq_model *q = H->model_open(ctx, th_join(dir, "q.gguf"));
    hvq_model *r = H->model_open(ctx, th_join(dir, "r.gguf"));
    ck_assert_msg(q && r, "%s", hvq_ctx_error(ctx));
    assert_same_named(ctx, q, r, same, sizeof same / sizeof same[0]);
    ck_assert_str_eq(th_model_meta(ctx, q, "general.file_type"),
                     "{\"gguf_type\":\"uint32\",\"value\":7}");
    H->model_close(ctx, q);
    H->model_close(ctx, r);
    hvq_registry_free(reg);
    hvq_ctx_free(ctx);
    ck_assert_int_eq(tensor_type(th_join(dir, "q.gguf"), "blk.1.ffn_down.weight"), HVQ_DTYPE_F16);
    ck_assert_int_eq(tensor_type(th_join(dir, "q.gguf"), "blk.1.ffn_norm.weight"), HVQ_DTYPE_F32);
    th_rmtree(dir);
    free(dir);
}
END_TEST

/* decode to .gguf of a container compressed from the Hugging Face model
 * (pipelines/q8_0.yaml; its config.json found beside the input the
 * pipeline recorded): the llama model plugin's mapping, the same that
 * convert applies, so decoding to safetensors and converting that gives
 * the same tensors (q/k rows permuted, the stored Q8_0 blocks' rows too
 * with --dtype q8_0) and the same architecture and tokenizer metadata
 * (general.name aside: decode names the model by its directory). A bad
 * --config is refused with exit 2, nothing left. */
START_TEST(test_decode_hf_container_to_gguf)
{
    char *dir = th_tmpdir("convert-dec");
    char *err = NULL;
    ck_assert_int_eq(th_hvq(NULL, &err, "run", th_src("pipelines/q8_0.yaml"), "-q", "--input",
                            th_src(MODEL), "--output", th_join(dir, "c.hvq"), "--report", "",
                            (const char *)NULL), 0);
    free(err);
    ck_assert_int_eq(th_hvq(NULL, &err, "decode", "-q", th_join(dir, "c.hvq"), "-o",
                            th_join(dir, "c.safetensors"), (const char *)NULL), 0);
    free(err);
    static const char *const dtypes[] = {"same", "q8_0"};
    for (int k = 0; k < 2; k++) {
        char d[512], g[512];
        snprintf(d, sizeof d, "%s/d-%s.gguf", dir, dtypes[k]);
        snprintf(g, sizeof g, "%s/g-%s.gguf", dir, dtypes[k]);
        ck_assert_int_eq(th_hvq(NULL, &err, "decode", th_join(dir, "c.hvq"), "-o", d, "--dtype",
                                dtypes[k], "--tokenizer", th_src(TOKENIZER), (const char *)NULL),
                         0);
        th_assert_contains(err, "mapped to llama.cpp's layout by the model plugin 'llama'");
        free(err);
        ck_assert_int_eq(th_hvq(NULL, &err, "convert", "-q", th_join(dir, "c.safetensors"), g,
                                "--config", th_src(MODEL "/config.json"), "--tokenizer",
                                th_src(TOKENIZER), "--dtype", k ? "q8_0" : "same",
                                (const char *)NULL), 0);
        free(err);
        if (!k) /* q8_0: decode quantizes the compressed tensors, convert all weights */
            assert_same_tensors(d, g);
        hvq_ctx *ctx = th_ctx();
        hvq_registry *reg = th_registry(ctx);
        hvq_model *md = ctx->host->model_open(ctx, d), *mg = ctx->host->model_open(ctx, g);
        ck_assert_msg(md && mg, "%s", hvq_ctx_error(ctx));
        static const char *const qk[] = {"blk.0.attn_q.weight", "blk.3.attn_k.weight",
                                         "blk.1.attn_v.weight", "blk.4.ffn_up.weight",
                                         "blk.2.attn_norm.weight"};
        assert_same_named(ctx, md, mg, qk, sizeof qk / sizeof qk[0]);
        static const char *const keys[] = {"general.architecture", "llama.block_count",
                                           "llama.rope.dimension_count", "tokenizer.ggml.model",
                                           "tokenizer.ggml.tokens", "general.file_type"};
        for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
            const char *a = th_model_meta(ctx, md, keys[i]);
            ck_assert_msg(a != NULL, "%s", keys[i]);
            ck_assert_str_eq(a, th_model_meta(ctx, mg, keys[i]));
        }
        ctx->host->model_close(ctx, md);
        ctx->host->model_close(ctx, mg);
        hvq_registry_free(reg);
        hvq_ctx_free(ctx);
    }
    th_write_file(th_join(dir, "bad.json"), "{\"model_type\": ", 15);
    ck_assert_int_eq(th_hvq(NULL, &err, "decode", th_join(dir, "c.hvq"), "-o",
                            th_join(dir, "x.gguf"), "--config", th_join(dir, "bad.json"),
                            (const char *)NULL), 2);
    th_assert_contains(err, "bad.json: not valid JSON");
    free(err);
    ck_assert(!th_exists(th_join(dir, "x.gguf")));
    th_rmtree(dir);
    free(dir);
}
END_TEST

/* convert exits with status 2, saying needle, and leaves nothing. */
static void convert_fails(const char *needle, const char *const *args)
{
    const char *argv[16] = {"convert", "-q"};
    size_t n = 2;
    for (size_t i = 0; args[i] && n < 15; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    char *err = NULL;
    int rc = th_hvq(NULL, &err, argv[0], argv[1], argv[2], argv[3], argv[4], argv[5], argv[6],
                    argv[7], argv[8], (const char *)NULL);
    ck_assert_msg(rc == 2, "exit status %d, stderr %s", rc, err);
    th_assert_contains(err, needle);
    free(err);
}

START_TEST(test_cli_errors)
{
    char *dir = th_tmpdir("convert-err");
    char *src = strdup(th_join(dir, "src"));
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "mkdir -p %s && cp %s %s %s/", src, th_src(MODEL "/model.safetensors"),
             th_src(MODEL "/config.json"), src);
    ck_assert_int_eq(system(cmd), 0);
    const char *st = th_join(src, "model.safetensors");
    /* no config.json: named, with the ways out */
    char *nocfg = strdup(th_join(dir, "nocfg"));
    snprintf(cmd, sizeof cmd, "mkdir -p %s && cp %s %s/", nocfg, st, nocfg);
    ck_assert_int_eq(system(cmd), 0);
    convert_fails("config.json", (const char *const[]){nocfg, th_join(dir, "o1/x.gguf"), NULL});
    convert_fails("--raw", (const char *const[]){nocfg, th_join(dir, "o1/x.gguf"), NULL});
    /* --dtype */
    convert_fails("x.safetensors: --dtype q8_0 writes llama.cpp blocks, which only GGUF "
                  "stores, and this output is safetensors",
                  (const char *const[]){src, th_join(dir, "o1/x.safetensors"), "--dtype", "q8_0",
                                        NULL});
    convert_fails("expected same, f32, f16, bf16 or (GGUF output) q8_0",
                  (const char *const[]){src, th_join(dir, "o1/x.gguf"), "--dtype", "int4", NULL});
    /* a corrupt tokenizer.json or config.json, named */
    th_write_file(th_join(src, "tokenizer.json"), "{\"model\": [", 11);
    convert_fails("tokenizer.json: not valid JSON",
                  (const char *const[]){src, th_join(dir, "o1/deeper/x.gguf"), NULL});
    remove(th_join(src, "tokenizer.json"));
    char *cfg = th_read_file(th_join(src, "config.json"), NULL);
    th_write_file(th_join(src, "config.json"), "{\"hidden_size\": 64", 18);
    convert_fails("config.json: not valid JSON",
                  (const char *const[]){src, th_join(dir, "o1/x.gguf"), NULL});
    th_write_file(th_join(src, "config.json"), cfg, strlen(cfg));
    free(cfg);
    /* the output is the input, or its directory */
    convert_fails("may not be the input", (const char *const[]){st, st, NULL});
    convert_fails("output directory is the input", (const char *const[]){src, src, NULL});
    convert_fails("needs an output", (const char *const[]){src, NULL});
    /* nothing left: no o1, the input as it was */
    th_assert_dir_holds(dir, "src", "nocfg", (const char *)NULL);
    th_assert_dir_holds(src, "model.safetensors", "config.json", (const char *)NULL);
    ck_assert(th_same_bytes(st, th_src(MODEL "/model.safetensors")));
    /* another architecture: as it is, with one warning */
    th_write_file(th_join(nocfg, "config.json"), "{\"model_type\": \"qwen2\"}", 23);
    char *err = NULL;
    ck_assert_int_eq(th_hvq(NULL, &err, "convert", nocfg, th_join(dir, "q.gguf"),
                            (const char *)NULL), 0);
    th_assert_contains(err, "no architecture llama.cpp knows");
    free(err);
    ck_assert_int_eq(tensor_type(th_join(dir, "q.gguf"), "model.norm.weight"), HVQ_DTYPE_F32);
    free(nocfg);
    free(src);
    th_rmtree(dir);
    free(dir);
}
END_TEST

/* Directories an output made are removed when the run fails, kept when it
 * succeeds; without make_dirs a missing directory is an error. */
START_TEST(test_make_dirs)
{
    char *dir = th_tmpdir("convert-dirs");
    hvq_ctx_opts o = {.quiet = 1, .threads = 1, .make_dirs = 1};
    for (int commit = 0; commit < 2; commit++) {
        hvq_ctx *ctx = hvq_ctx_new(&o);
        hvq_output *out = ctx->host->output_open(ctx, th_join(dir, "a/b/c/f.bin"));
        ck_assert_msg(out != NULL, "%s", hvq_ctx_error(ctx));
        ck_assert_int_eq(ctx->host->output_write(ctx, out, "x", 1), HVQ_OK);
        if (commit) {
            ck_assert_int_eq(hvq_outputs_commit(ctx), HVQ_OK);
            ck_assert(th_exists(th_join(dir, "a/b/c/f.bin")));
        } else {
            hvq_outputs_abort(ctx);
            th_assert_dir_holds(dir, (const char *)NULL);
        }
        hvq_ctx_free(ctx);
    }
    o.make_dirs = 0;
    hvq_ctx *ctx = hvq_ctx_new(&o);
    ck_assert_ptr_null(ctx->host->output_open(ctx, th_join(dir, "x/f.bin")));
    ck_assert_int_eq(hvq_ctx_status(ctx), HVQ_E_INPUT);
    hvq_ctx_free(ctx);
    th_rmtree(dir);
    free(dir);
}
END_TEST

/* llama.cpp's own files for stories260K: the same tensors, F32 and F16. */
START_TEST(test_shared_reference)
{
    const char *s = th_shared_data();
    if (!s)
        return;
    char hf[512], tok[512], f32[512], f16[512];
    snprintf(hf, sizeof hf, "%s/stories260K/hf", s);
    snprintf(tok, sizeof tok, "%s/stories260K/tok512.bin", s);
    snprintf(f32, sizeof f32, "%s/stories260K/stories260K.f32.gguf", s);
    snprintf(f16, sizeof f16, "%s/stories260K/stories260K.f16.gguf", s);
    char *dir = th_tmpdir("convert-shared");
    char *cmd[2] = {strdup(th_join(dir, "a.gguf")), strdup(th_join(dir, "b.gguf"))};
    char *err = NULL;
    ck_assert_int_eq(th_hvq(NULL, &err, "convert", "-q", hf, cmd[0], "--tokenizer", tok,
                            (const char *)NULL), 0);
    free(err);
    ck_assert_int_eq(th_hvq(NULL, &err, "convert", "-q", hf, cmd[1], "--tokenizer", tok,
                            "--dtype", "f16", (const char *)NULL), 0);
    free(err);
    assert_same_tensors(cmd[0], f32);
    assert_same_tensors(cmd[1], f16);
    free(cmd[0]);
    free(cmd[1]);
    th_rmtree(dir);
    free(dir);
}
END_TEST

static Suite *convert_suite(void)
{
    Suite *s = suite_create("convert");
    TCase *tc = tcase_create("convert");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_permute);
    tcase_add_test(tc, test_names);
    tcase_add_test(tc, test_meta_from_config);
    tcase_add_test(tc, test_config_from_meta);
    tcase_add_test(tc, test_tok_llama2c);
    tcase_add_test(tc, test_tok_spm);
    tcase_add_test(tc, test_tok_bpe);
    tcase_add_test(tc, test_cli_roundtrip);
    tcase_add_test(tc, test_cli_q8_0);
    tcase_add_test(tc, test_decode_hf_container_to_gguf);
    tcase_add_test(tc, test_cli_errors);
    tcase_add_test(tc, test_make_dirs);
    tcase_add_test(tc, test_shared_reference);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return th_run_suite(convert_suite()); }
