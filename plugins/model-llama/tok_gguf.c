/* Tokenizer files <-> GGUF's tokenizer.ggml.* keys (convert.h):
 *   - llama2.c's tokenizer.bin (read by llama_tok.c): a SentencePiece-style
 *     vocabulary, tokenizer.ggml.model "llama";
 *   - SentencePiece's tokenizer.model, a protobuf ModelProto: pieces (field
 *     1: piece 1, score 2, type 3), trainer_spec (field 2: unk_id 40,
 *     bos_id 41, eos_id 42, pad_id 43), normalizer_spec (field 3:
 *     add_dummy_prefix 3); "llama";
 *   - Hugging Face tokenizer.json of a byte-level BPE (model.vocab,
 *     model.merges, added_tokens), "gpt2", with tokenizer.ggml.pre named
 *     from its pre-tokenizer as llama.cpp's converter names it; and back.
 * Token types are llama.cpp's (SentencePiece's numbering): 1 normal, 2
 * unknown, 3 control, 4 user-defined, 5 unused, 6 byte. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include "convert.h"
#include "file.h"
#include "json.h"
#include "llama_tok.h"
#include "meta.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOK_MAX_FILE (256u << 20)

/* An array value being built: {"gguf_type":"array","item_type":T,"value":[. */
static void tok_array_begin(hvq_buf *b, const char *item_type)
{
    hvq_buf_init(b);
    hvq_buf_printf(b, "{\"gguf_type\":\"array\",\"item_type\":\"%s\",\"value\":[", item_type);
}

static void tok_array_end(hvq_llama_meta *m, const char *key, hvq_buf *b)
{
    hvq_buf_puts(b, "]}");
    hvq_llama_meta_put(m, key, b);
}

/* The ids every vocabulary names; id < 0: absent. */
static void tok_ids(hvq_llama_meta *m, int64_t bos, int64_t eos, int64_t unk, int64_t pad)
{
    if (bos >= 0)
        hvq_llama_meta_u32(m, "tokenizer.ggml.bos_token_id", (uint32_t)bos);
    if (eos >= 0)
        hvq_llama_meta_u32(m, "tokenizer.ggml.eos_token_id", (uint32_t)eos);
    if (unk >= 0)
        hvq_llama_meta_u32(m, "tokenizer.ggml.unknown_token_id", (uint32_t)unk);
    if (pad >= 0)
        hvq_llama_meta_u32(m, "tokenizer.ggml.padding_token_id", (uint32_t)pad);
}

static int tok_is_byte_piece(const char *p, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    return n == 6 && memcmp(p, "<0x", 3) == 0 && p[5] == '>' && p[3] && p[4] &&
           strchr(hex, p[3]) && strchr(hex, p[4]);
}

/* A piece with its spaces as SentencePiece's U+2581, as a JSON string. */
static void tok_put_piece(hvq_buf *b, const char *p, size_t n)
{
    hvq_buf esc;
    hvq_buf_init(&esc);
    for (size_t i = 0; i < n; i++) {
        if (p[i] == ' ')
            hvq_buf_puts(&esc, "\xe2\x96\x81");
        else
            hvq_buf_append(&esc, p + i, 1);
    }
    hvq_buf_json_stringn(b, esc.data ? esc.data : "", esc.len);
    if (esc.oom)
        b->oom = 1;
    hvq_buf_free(&esc);
}

hvq_status hvq_llama_tok_llama2c(hvq_ctx *ctx, const char *path, hvq_llama_meta *m)
{
    hvq_tokenizer *t = NULL;
    hvq_status st = hvq_tokenizer_load_llama2c(ctx, path, &t);
    if (st != HVQ_OK)
        return st;
    int n = hvq_tokenizer_size(t);
    hvq_buf tokens, scores, types;
    tok_array_begin(&tokens, "string");
    tok_array_begin(&scores, "float32");
    tok_array_begin(&types, "int32");
    for (int id = 0; id < n; id++) {
        size_t len;
        const char *p = hvq_tokenizer_piece(t, id, &len);
        const char *sep = id ? "," : "";
        if (len >= 2 && p[0] == '\n' && p[len - 1] == '\n' &&
            (strcmp(p, "\n<s>\n") == 0 || strcmp(p, "\n</s>\n") == 0)) {
            p++; /* llama2.c writes BOS and EOS as "\n<s>\n", "\n</s>\n" */
            len -= 2;
        }
        int type = len == 5 && memcmp(p, "<unk>", 5) == 0                          ? 2
                   : (len == 3 && memcmp(p, "<s>", 3) == 0) || (len == 4 && memcmp(p, "</s>", 4) == 0) ? 3
                   : tok_is_byte_piece(p, len)                                      ? 6
                                                                                    : 1;
        hvq_buf_puts(&tokens, sep);
        tok_put_piece(&tokens, p, len);
        hvq_buf_printf(&scores, "%s%.9g", sep, (double)hvq_tokenizer_score(t, id));
        hvq_buf_printf(&types, "%s%d", sep, type);
    }
    hvq_tokenizer_free(t);
    hvq_llama_meta_str(m, "tokenizer.ggml.model", "llama");
    tok_array_end(m, "tokenizer.ggml.tokens", &tokens);
    tok_array_end(m, "tokenizer.ggml.scores", &scores);
    tok_array_end(m, "tokenizer.ggml.token_type", &types);
    tok_ids(m, 1, 2, 0, -1); /* llama2.c's */
    return m->oom ? ctx->host->error(ctx, HVQ_E_NOMEM, "out of memory") : HVQ_OK;
}

/* ------------------------------------------------------------------------
 * SentencePiece tokenizer.model (protobuf)
 * ---------------------------------------------------------------------- */

typedef struct pb {
    const unsigned char *p, *end;
    int bad;
} pb;

static uint64_t pb_varint(pb *r)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (r->p >= r->end)
            break;
        unsigned char c = *r->p++;
        v |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80))
            return v;
    }
    r->bad = 1;
    return 0;
}

/* The next field: its number and wire type; for a length-delimited one,
 * its bytes in *sub; for fixed32 the value in *v, for a varint too. 0 at
 * the end or on a malformed field (r->bad). */
static int pb_field(pb *r, int *num, pb *sub, uint64_t *v)
{
    if (r->p >= r->end || r->bad)
        return 0;
    uint64_t key = pb_varint(r);
    *num = (int)(key >> 3);
    switch (key & 7) {
    case 0: *v = pb_varint(r); break;
    case 1:
        if (r->end - r->p < 8)
            r->bad = 1;
        else
            r->p += 8;
        break;
    case 2: {
        uint64_t n = pb_varint(r);
        if (r->bad || n > (uint64_t)(r->end - r->p)) {
            r->bad = 1;
            break;
        }
        sub->p = r->p;
        sub->end = r->p + n;
        sub->bad = 0;
        r->p += n;
        break;
    }
    case 5:
        if (r->end - r->p < 4) {
            r->bad = 1;
            break;
        }
        *v = (uint64_t)r->p[0] | (uint64_t)r->p[1] << 8 | (uint64_t)r->p[2] << 16 |
             (uint64_t)r->p[3] << 24;
        r->p += 4;
        break;
    default: r->bad = 1;
    }
    return !r->bad;
}

/* One SentencePiece message into the three arrays. */
static int spm_piece(pb *r, hvq_buf *tokens, hvq_buf *scores, hvq_buf *types, int first)
{
    pb sub = {0}, piece = {0};
    uint64_t v = 0;
    int num, type = 1, have = 0;
    float score = 0;
    while (pb_field(r, &num, &sub, &v)) {
        if (num == 1) {
            piece = sub;
            have = 1;
        } else if (num == 2) {
            uint32_t u = (uint32_t)v;
            memcpy(&score, &u, sizeof score);
        } else if (num == 3) {
            type = (int)v;
        }
    }
    if (r->bad || !have || type < 1 || type > 6)
        return 0;
    const char *sep = first ? "" : ",";
    hvq_buf_puts(tokens, sep);
    hvq_buf_json_stringn(tokens, (const char *)piece.p, (size_t)(piece.end - piece.p));
    hvq_buf_printf(scores, "%s%.9g", sep, (double)score);
    hvq_buf_printf(types, "%s%d", sep, type);
    return 1;
}

/* trainer_spec's ids (int32 varints; -1 is ten bytes). */
static void spm_trainer(pb *r, int64_t ids[4])
{
    pb sub;
    uint64_t v = 0;
    int num;
    while (pb_field(r, &num, &sub, &v))
        if (num >= 40 && num <= 43)
            ids[num - 40] = (int64_t)(int32_t)(uint32_t)v;
}

static int spm_normalizer(pb *r)
{
    pb sub;
    uint64_t v = 1;
    int num, prefix = 1;
    while (pb_field(r, &num, &sub, &v))
        if (num == 3)
            prefix = v != 0;
    return prefix;
}

hvq_status hvq_llama_tok_spm(hvq_ctx *ctx, const char *path, hvq_llama_meta *m)
{
    unsigned char *data = NULL;
    size_t len = 0;
    hvq_status st = hvq_slurp_input(ctx, path, TOK_MAX_FILE, "a tokenizer file", &data, &len);
    if (st != HVQ_OK)
        return st;
    pb r = {data, data + len, 0}, sub = {0};
    uint64_t v;
    int num, n = 0, prefix = 1, ok = 1;
    int64_t ids[4] = {0, 1, 2, -1}; /* SentencePiece's defaults */
    hvq_buf tokens, scores, types;
    tok_array_begin(&tokens, "string");
    tok_array_begin(&scores, "float32");
    tok_array_begin(&types, "int32");
    while (ok && pb_field(&r, &num, &sub, &v)) {
        if (num == 1)
            ok = spm_piece(&sub, &tokens, &scores, &types, n++ == 0);
        else if (num == 2)
            spm_trainer(&sub, ids);
        else if (num == 3)
            prefix = spm_normalizer(&sub);
    }
    ctx->host->free(data);
    if (!ok || r.bad || n == 0) {
        hvq_buf_free(&tokens);
        hvq_buf_free(&scores);
        hvq_buf_free(&types);
        return ctx->host->error(ctx, HVQ_E_INPUT, "%s: not a SentencePiece model (%s)", path,
                                n == 0 ? "no pieces" : "a malformed protobuf field");
    }
    hvq_llama_meta_str(m, "tokenizer.ggml.model", "llama");
    tok_array_end(m, "tokenizer.ggml.tokens", &tokens);
    tok_array_end(m, "tokenizer.ggml.scores", &scores);
    tok_array_end(m, "tokenizer.ggml.token_type", &types);
    tok_ids(m, ids[1], ids[2], ids[0], ids[3]);
    if (!prefix)
        hvq_llama_meta_bool(m, "tokenizer.ggml.add_space_prefix", 0);
    return m->oom ? ctx->host->error(ctx, HVQ_E_NOMEM, "out of memory") : HVQ_OK;
}

/* ------------------------------------------------------------------------
 * Hugging Face tokenizer.json (byte-level BPE)
 * ---------------------------------------------------------------------- */

/* tokenizer.ggml.pre as llama.cpp's converter sets it, from the
 * pre-tokenizer: SmolLM's (digits one by one, then byte-level) is
 * "smollm"; Llama 3's split pattern is "llama-bpe"; else "default". */
static const char *bpe_pre(const hvq_json_value *root)
{
    const hvq_json_value *pt = hvq_json_get(root, "pre_tokenizer");
    const hvq_json_value *seq = hvq_json_get(pt, "pretokenizers");
    int digits = 0, bytelevel = 0, llama3 = 0;
    for (size_t i = 0; seq && i < hvq_json_count(seq); i++) {
        const hvq_json_value *p = hvq_json_item(seq, i);
        const char *type = hvq_json_string(hvq_json_get(p, "type"), NULL);
        const char *re = hvq_json_string(hvq_json_get(hvq_json_get(p, "pattern"), "Regex"), NULL);
        if (type && strcmp(type, "Digits") == 0 &&
            hvq_json_bool(hvq_json_get(p, "individual_digits")) == 1)
            digits = 1;
        else if (type && strcmp(type, "ByteLevel") == 0)
            bytelevel = 1;
        else if (type && strcmp(type, "Split") == 0 && re && strstr(re, "\\p{N}{1,3}") &&
                 strstr(re, "(?i:'s|'t|'re|'ve|'m|'ll|'d)"))
            llama3 = 1;
    }
    return digits && bytelevel ? "smollm" : llama3 && bytelevel ? "llama-bpe" : "default";
}

/* The vocabulary ordered by id (every id 0..n-1 once) and the added
 * tokens' types; 0 with a reason when it is not. */
static const char *bpe_order(const hvq_json_value *vocab, const hvq_json_value *added,
                             const char **piece, size_t *plen, int *type, size_t n)
{
    for (size_t i = 0; i < hvq_json_count(vocab); i++) {
        const hvq_json_member *mb = hvq_json_member_at(vocab, i);
        int64_t id;
        if (hvq_json_int64(mb->value, &id) != 0 || id < 0 || (uint64_t)id >= n || piece[id])
            return "model.vocab: the ids are not 0 to N-1, each once";
        piece[id] = mb->key;
        plen[id] = mb->key_len;
        type[id] = 1;
    }
    for (size_t i = 0; added && i < hvq_json_count(added); i++) {
        const hvq_json_value *a = hvq_json_item(added, i);
        int64_t id;
        size_t len;
        const char *content = hvq_json_string(hvq_json_get(a, "content"), &len);
        if (hvq_json_int64(hvq_json_get(a, "id"), &id) != 0 || id < 0 || (uint64_t)id >= n ||
            !content)
            return "added_tokens: an entry without an id in the vocabulary or a content";
        piece[id] = content;
        plen[id] = len;
        type[id] = hvq_json_bool(hvq_json_get(a, "special")) == 1 ? 3 : 4;
    }
    for (size_t id = 0; id < n; id++)
        if (!piece[id])
            return "the ids of model.vocab and added_tokens leave a gap";
    return NULL;
}

/* The merges, "a b" strings or ["a", "b"] pairs, as a string array. */
static const char *bpe_merges(const hvq_json_value *merges, hvq_buf *b)
{
    tok_array_begin(b, "string");
    for (size_t i = 0; i < hvq_json_count(merges); i++) {
        const hvq_json_value *mg = hvq_json_item(merges, i);
        size_t la, lb;
        const char *a = hvq_json_string(mg, &la), *c = NULL;
        if (i)
            hvq_buf_puts(b, ",");
        if (a) {
            hvq_buf_json_stringn(b, a, la);
            continue;
        }
        a = hvq_json_count(mg) == 2 ? hvq_json_string(hvq_json_item(mg, 0), &la) : NULL;
        c = a ? hvq_json_string(hvq_json_item(mg, 1), &lb) : NULL;
        if (!c)
            return "model.merges: an entry is neither \"a b\" nor [\"a\", \"b\"]";
        hvq_buf pair;
        hvq_buf_init(&pair);
        hvq_buf_append(&pair, a, la);
        hvq_buf_append(&pair, " ", 1);
        hvq_buf_append(&pair, c, lb);
        hvq_buf_json_stringn(b, pair.data ? pair.data : "", pair.len);
        hvq_buf_free(&pair);
    }
    return NULL;
}

/* Tokens and types as arrays, then the merges. */
static const char *bpe_meta(const hvq_json_value *root, const hvq_json_value *model,
                            hvq_llama_meta *m)
{
    const hvq_json_value *vocab = hvq_json_get(model, "vocab");
    const hvq_json_value *added = hvq_json_get(root, "added_tokens");
    size_t n = hvq_json_count(vocab), extra = 0;
    for (size_t i = 0; added && i < hvq_json_count(added); i++) {
        int64_t id;
        if (hvq_json_int64(hvq_json_get(hvq_json_item(added, i), "id"), &id) == 0 &&
            id >= 0 && (uint64_t)id >= n + extra)
            extra = (size_t)id + 1 - n;
    }
    n += extra;
    const char **piece = calloc(n ? n : 1, sizeof *piece);
    size_t *plen = calloc(n ? n : 1, sizeof *plen);
    int *type = calloc(n ? n : 1, sizeof *type);
    const char *why = !piece || !plen || !type ? "out of memory"
                                               : bpe_order(vocab, added, piece, plen, type, n);
    hvq_buf tokens, types, merges;
    tok_array_begin(&tokens, "string");
    tok_array_begin(&types, "int32");
    for (size_t id = 0; !why && id < n; id++) {
        hvq_buf_puts(&tokens, id ? "," : "");
        hvq_buf_json_stringn(&tokens, piece[id], plen[id]);
        hvq_buf_printf(&types, "%s%d", id ? "," : "", type[id]);
    }
    free(piece);
    free(plen);
    free(type);
    if (!why)
        why = bpe_merges(hvq_json_get(model, "merges"), &merges);
    else
        hvq_buf_init(&merges);
    if (why) {
        hvq_buf_free(&tokens);
        hvq_buf_free(&types);
        hvq_buf_free(&merges);
        return why;
    }
    hvq_llama_meta_str(m, "tokenizer.ggml.model", "gpt2");
    hvq_llama_meta_str(m, "tokenizer.ggml.pre", bpe_pre(root));
    tok_array_end(m, "tokenizer.ggml.tokens", &tokens);
    tok_array_end(m, "tokenizer.ggml.token_type", &types);
    tok_array_end(m, "tokenizer.ggml.merges", &merges);
    return NULL;
}

hvq_status hvq_llama_tok_bpe(hvq_ctx *ctx, const char *path, const int64_t ids[3],
                             hvq_llama_meta *m)
{
    unsigned char *data = NULL;
    size_t len = 0;
    hvq_status st = hvq_slurp_input(ctx, path, TOK_MAX_FILE, "a tokenizer file", &data, &len);
    if (st != HVQ_OK)
        return st;
    hvq_json_error je;
    hvq_json_doc *doc = hvq_json_parse((const char *)data, len, 0, &je);
    ctx->host->free(data);
    if (!doc)
        return ctx->host->error(ctx, HVQ_E_INPUT, "%s: not valid JSON: %s", path, je.message);
    const hvq_json_value *root = hvq_json_root(doc);
    const hvq_json_value *model = hvq_json_get(root, "model");
    const char *type = hvq_json_string(hvq_json_get(model, "type"), NULL);
    const char *why = NULL;
    if (!type || strcmp(type, "BPE") != 0)
        st = ctx->host->error(ctx, HVQ_E_UNSUPPORTED, "%s: model.type is %s; only a BPE "
                              "tokenizer converts to GGUF", path, type ? type : "missing");
    else if (!hvq_json_get(model, "vocab") || hvq_json_get(model, "vocab")->type !=
                                                  HVQ_JSON_OBJECT)
        why = "model.vocab is missing or not an object";
    else
        why = bpe_meta(root, model, m);
    if (why)
        st = ctx->host->error(ctx, HVQ_E_INPUT, "%s: %s", path, why);
    else if (st == HVQ_OK && strcmp(bpe_pre(root), "default") == 0)
        ctx->host->log(ctx, HVQ_LOG_WARN, "%s: a pre-tokenizer llama.cpp's converter does not "
                       "name from its shape; tokenizer.ggml.pre is \"default\"", path);
    hvq_json_free(doc);
    if (st == HVQ_OK)
        tok_ids(m, ids[0], ids[1], -1, ids[2]);
    return st == HVQ_OK && m->oom ? ctx->host->error(ctx, HVQ_E_NOMEM, "out of memory") : st;
}

/* ------------------------------------------------------------------------
 * GGUF "gpt2" vocabulary -> tokenizer.json
 * ---------------------------------------------------------------------- */

static void tj_pre(hvq_buf *b, const char *pre)
{
    static const char bl[] = "{\"type\": \"ByteLevel\", \"add_prefix_space\": false, "
                             "\"trim_offsets\": true, \"use_regex\": true}";
    if (strcmp(pre, "smollm") == 0)
        hvq_buf_printf(b, "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Digits\", "
                       "\"individual_digits\": true}, %s]}", bl);
    else
        hvq_buf_puts(b, bl);
}

/* The added tokens (control and user-defined types) and the vocabulary. */
static void tj_tokens(hvq_buf *b, const hvq_json_value *tokens, const hvq_json_value *types)
{
    size_t n = hvq_json_count(tokens);
    int first = 1;
    hvq_buf_puts(b, "  \"added_tokens\": [");
    for (size_t i = 0; i < n; i++) {
        int64_t t = 1;
        if (hvq_json_int64(hvq_json_item(types, i), &t) != 0 || (t != 3 && t != 4))
            continue;
        size_t len;
        const char *s = hvq_json_string(hvq_json_item(tokens, i), &len);
        hvq_buf_printf(b, "%s\n    {\"id\": %zu, \"content\": ", first ? "" : ",", i);
        hvq_buf_json_stringn(b, s ? s : "", s ? len : 0);
        hvq_buf_printf(b, ", \"single_word\": false, \"lstrip\": false, \"rstrip\": false, "
                       "\"normalized\": false, \"special\": %s}", t == 3 ? "true" : "false");
        first = 0;
    }
    hvq_buf_puts(b, "\n  ],\n");
}

hvq_status hvq_llama_tok_json(hvq_ctx *ctx, const hvq_meta *meta, size_t n, const char *what,
                              hvq_buf *b)
{
    char model[16], pre[64];
    if (!hvq_meta_string(meta, n, "tokenizer.ggml.model", model, sizeof model) ||
        strcmp(model, "gpt2") != 0)
        return HVQ_E_NOTFOUND;
    if (!hvq_meta_string(meta, n, "tokenizer.ggml.pre", pre, sizeof pre))
        strcpy(pre, "default");
    hvq_json_doc *dt = NULL, *dy = NULL, *dm = NULL;
    const hvq_json_value *tokens = hvq_meta_typed(meta, n, "tokenizer.ggml.tokens", &dt, NULL, NULL);
    const hvq_json_value *types = hvq_meta_typed(meta, n, "tokenizer.ggml.token_type", &dy, NULL,
                                                 NULL);
    const hvq_json_value *merges = hvq_meta_typed(meta, n, "tokenizer.ggml.merges", &dm, NULL,
                                                  NULL);
    hvq_status st = HVQ_OK;
    if (!tokens || tokens->type != HVQ_JSON_ARRAY || !merges || merges->type != HVQ_JSON_ARRAY)
        st = ctx->host->error(ctx, HVQ_E_INPUT, "%s: a \"gpt2\" vocabulary without "
                              "tokenizer.ggml.tokens or tokenizer.ggml.merges", what);
    if (st == HVQ_OK) {
        hvq_buf_puts(b, "{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n"
                        "  \"padding\": null,\n");
        tj_tokens(b, tokens, types);
        hvq_buf_puts(b, "  \"normalizer\": null,\n  \"pre_tokenizer\": ");
        tj_pre(b, pre);
        hvq_buf_puts(b, ",\n  \"post_processor\": null,\n  \"decoder\": {\"type\": \"ByteLevel\", "
                        "\"add_prefix_space\": true, \"trim_offsets\": true, \"use_regex\": "
                        "true},\n  \"model\": {\"type\": \"BPE\", \"dropout\": null, "
                        "\"unk_token\": null, \"continuing_subword_prefix\": null, "
                        "\"end_of_word_suffix\": null, \"fuse_unk\": false, "
                        "\"byte_fallback\": false, \"ignore_merges\": false,\n    \"vocab\": {");
        for (size_t i = 0; i < hvq_json_count(tokens); i++) {
            size_t len;
            const char *s = hvq_json_string(hvq_json_item(tokens, i), &len);
            hvq_buf_puts(b, i ? ",\n      " : "\n      ");
            hvq_buf_json_stringn(b, s ? s : "", s ? len : 0);
            hvq_buf_printf(b, ": %zu", i);
        }
        hvq_buf_puts(b, "\n    },\n    \"merges\": [");
        for (size_t i = 0; i < hvq_json_count(merges); i++) {
            size_t len;
            const char *s = hvq_json_string(hvq_json_item(merges, i), &len);
            hvq_buf_puts(b, i ? ",\n      " : "\n      ");
            hvq_buf_json_stringn(b, s ? s : "", s ? len : 0);
        }
        hvq_buf_puts(b, "\n    ]\n  }\n}\n");
    }
    hvq_json_free(dt);
    hvq_json_free(dy);
    hvq_json_free(dm);
    return st;
}

/* ------------------------------------------------------------------------
 * GGUF "llama" vocabulary -> SentencePiece tokenizer.model
 * ---------------------------------------------------------------------- */

static void pbw_varint(hvq_buf *b, uint64_t v)
{
    do {
        char c = (char)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        hvq_buf_append(b, &c, 1);
        v >>= 7;
    } while (v);
}

static void pbw_int(hvq_buf *b, int field, int64_t v)
{
    pbw_varint(b, (uint64_t)field << 3);
    pbw_varint(b, (uint64_t)v); /* negative int32: ten bytes, as protobuf does */
}

static void pbw_bytes(hvq_buf *b, int field, const char *s, size_t n)
{
    pbw_varint(b, (uint64_t)field << 3 | 2);
    pbw_varint(b, n);
    hvq_buf_append(b, s, n);
}

/* One SentencePiece message: piece 1, score 2 (fixed32), type 3. */
static void spm_write_piece(hvq_buf *b, const char *piece, size_t n, double score, int64_t type)
{
    hvq_buf m;
    hvq_buf_init(&m);
    pbw_bytes(&m, 1, piece, n);
    float f = (float)score;
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    pbw_varint(&m, 2 << 3 | 5);
    for (int i = 0; i < 4; i++) {
        char c = (char)(u >> (8 * i));
        hvq_buf_append(&m, &c, 1);
    }
    if (type != 1) /* NORMAL, protobuf's default, is left out */
        pbw_int(&m, 3, type);
    pbw_bytes(b, 1, m.data ? m.data : "", m.len);
    if (m.oom)
        b->oom = 1;
    hvq_buf_free(&m);
}

/* trainer_spec (BPE, byte fallback, the ids) and normalizer_spec (identity,
 * the dummy prefix as the metadata says, whitespace kept and escaped). */
static void spm_write_specs(hvq_buf *b, const hvq_meta *meta, size_t n)
{
    static const char *const keys[4] = {"tokenizer.ggml.unknown_token_id",
                                        "tokenizer.ggml.bos_token_id",
                                        "tokenizer.ggml.eos_token_id",
                                        "tokenizer.ggml.padding_token_id"};
    static const int64_t defaults[4] = {0, 1, 2, -1};
    hvq_buf t;
    hvq_buf_init(&t);
    pbw_int(&t, 3, 2);  /* model_type BPE */
    pbw_int(&t, 35, 1); /* byte_fallback */
    for (int i = 0; i < 4; i++) {
        hvq_json_doc *doc = NULL;
        int64_t id = defaults[i];
        if (hvq_json_int64(hvq_meta_typed(meta, n, keys[i], &doc, NULL, NULL), &id) != 0)
            id = defaults[i];
        hvq_json_free(doc);
        pbw_int(&t, 40 + i, id);
    }
    pbw_bytes(b, 2, t.data ? t.data : "", t.len);
    hvq_buf_free(&t);
    hvq_json_doc *doc = NULL;
    const hvq_json_value *sp = hvq_meta_typed(meta, n, "tokenizer.ggml.add_space_prefix", &doc,
                                              NULL, NULL);
    hvq_buf_init(&t);
    pbw_bytes(&t, 1, "identity", 8);
    pbw_int(&t, 3, hvq_json_bool(sp) != 0); /* absent: true */
    pbw_int(&t, 4, 0);
    pbw_int(&t, 5, 1);
    hvq_json_free(doc);
    pbw_bytes(b, 3, t.data ? t.data : "", t.len);
    hvq_buf_free(&t);
}

hvq_status hvq_llama_tok_model(hvq_ctx *ctx, const hvq_meta *meta, size_t n, const char *what,
                               hvq_buf *b)
{
    char model[16];
    if (!hvq_meta_string(meta, n, "tokenizer.ggml.model", model, sizeof model) ||
        strcmp(model, "llama") != 0)
        return HVQ_E_NOTFOUND;
    hvq_json_doc *dt = NULL, *ds = NULL, *dy = NULL;
    const hvq_json_value *tok = hvq_meta_typed(meta, n, "tokenizer.ggml.tokens", &dt, NULL, NULL);
    const hvq_json_value *sc = hvq_meta_typed(meta, n, "tokenizer.ggml.scores", &ds, NULL, NULL);
    const hvq_json_value *ty = hvq_meta_typed(meta, n, "tokenizer.ggml.token_type", &dy, NULL,
                                              NULL);
    size_t count = hvq_json_count(tok);
    hvq_status st = HVQ_OK;
    if (!tok || tok->type != HVQ_JSON_ARRAY || hvq_json_count(sc) != count ||
        hvq_json_count(ty) != count)
        st = ctx->host->error(ctx, HVQ_E_INPUT, "%s: a \"llama\" vocabulary whose tokens, scores "
                              "and token types do not match", what);
    for (size_t i = 0; st == HVQ_OK && i < count; i++) {
        size_t len;
        const char *p = hvq_json_string(hvq_json_item(tok, i), &len);
        double score = 0;
        int64_t type = 1;
        if (!p || hvq_json_double(hvq_json_item(sc, i), &score) != 0 ||
            hvq_json_int64(hvq_json_item(ty, i), &type) != 0 || type < 1 || type > 6)
            st = ctx->host->error(ctx, HVQ_E_INPUT, "%s: token %zu of the vocabulary is not a "
                                  "string with a score and a type", what, i);
        else
            spm_write_piece(b, p, len, score, type);
    }
    if (st == HVQ_OK)
        spm_write_specs(b, meta, n);
    hvq_json_free(dt);
    hvq_json_free(ds);
    hvq_json_free(dy);
    return st;
}
