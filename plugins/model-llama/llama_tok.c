/* SentencePiece-style tokenizer; see llama_tok.h. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include "llama_tok.h"
#include "file.h"
#include "json.h"
#include "meta.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOK_MAX_VOCAB (1 << 24)
#define TOK_MAX_PIECE 4096

struct hvq_tokenizer {
    int n;
    char **piece;        /* NUL-terminated (a piece holds no NUL) */
    size_t *len;
    float *score;
    unsigned char *mergeable; /* may a lookup return it */
    int byte_id[256];    /* <0xXX> tokens, -1 when absent */
    int bos, unk;
    int add_prefix;
    /* Open-addressing hash of the mergeable pieces: slot -> id + 1. */
    int32_t *slot;
    size_t n_slots;
};

static uint64_t fnv1a(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

/* The id of piece s[0..n), or -1. */
static int lookup(const hvq_tokenizer *t, const char *s, size_t n)
{
    size_t mask = t->n_slots - 1, i = (size_t)fnv1a(s, n) & mask;
    for (;;) {
        int32_t v = t->slot[i];
        if (!v)
            return -1;
        int id = v - 1;
        if (t->len[id] == n && memcmp(t->piece[id], s, n) == 0)
            return id;
        i = (i + 1) & mask;
    }
}

void hvq_tokenizer_free(hvq_tokenizer *t)
{
    if (!t)
        return;
    if (t->piece)
        for (int i = 0; i < t->n; i++)
            free(t->piece[i]);
    free(t->piece);
    free(t->len);
    free(t->score);
    free(t->mergeable);
    free(t->slot);
    free(t);
}

int hvq_tokenizer_size(const hvq_tokenizer *t) { return t->n; }
int hvq_tokenizer_bos(const hvq_tokenizer *t) { return t->bos; }

const char *hvq_tokenizer_piece(const hvq_tokenizer *t, int id, size_t *len)
{
    *len = t->len[id];
    return t->piece[id];
}

float hvq_tokenizer_score(const hvq_tokenizer *t, int id) { return t->score[id]; }
int hvq_tokenizer_lookup(const hvq_tokenizer *t, const char *s, size_t n)
{
    return lookup(t, s, n);
}
int hvq_tokenizer_space_prefix(const hvq_tokenizer *t) { return t->add_prefix; }

int hvq_tokenizer_byte(const hvq_tokenizer *t, unsigned char b)
{
    return t->byte_id[b] >= 0 ? t->byte_id[b] : t->unk;
}

static hvq_tokenizer *tok_new(int n)
{
    hvq_tokenizer *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->n = n;
    t->piece = calloc((size_t)n, sizeof *t->piece);
    t->len = calloc((size_t)n, sizeof *t->len);
    t->score = calloc((size_t)n, sizeof *t->score);
    t->mergeable = calloc((size_t)n, 1);
    if (!t->piece || !t->len || !t->score || !t->mergeable) {
        hvq_tokenizer_free(t);
        return NULL;
    }
    t->bos = 1;
    t->unk = 0;
    t->add_prefix = 1;
    return t;
}

/* "<0xXX>" -> XX, else -1. */
static int byte_piece(const char *s, size_t n)
{
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>')
        return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10
                : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

/* Byte tokens and the hash, once the pieces are in. */
static hvq_status tok_index(hvq_ctx *ctx, hvq_tokenizer *t)
{
    for (int b = 0; b < 256; b++)
        t->byte_id[b] = -1;
    for (int i = 0; i < t->n; i++) {
        int b = byte_piece(t->piece[i], t->len[i]);
        if (b >= 0) {
            if (t->byte_id[b] < 0)
                t->byte_id[b] = i;
            t->mergeable[i] = 0;
        }
    }
    size_t slots = 16;
    while (slots < (size_t)t->n * 2)
        slots *= 2;
    t->slot = calloc(slots, sizeof *t->slot);
    if (!t->slot)
        return ctx->host->error(ctx, HVQ_E_NOMEM, "out of memory");
    t->n_slots = slots;
    for (int i = 0; i < t->n; i++) {
        if (!t->mergeable[i] || lookup(t, t->piece[i], t->len[i]) >= 0)
            continue; /* the first of duplicates wins */
        size_t j = (size_t)fnv1a(t->piece[i], t->len[i]) & (slots - 1);
        while (t->slot[j])
            j = (j + 1) & (slots - 1);
        t->slot[j] = i + 1;
    }
    return HVQ_OK;
}

static hvq_status set_piece(hvq_ctx *ctx, hvq_tokenizer *t, int i, const char *s, size_t n,
                            const char *what)
{
    if (memchr(s, '\0', n))
        return ctx->host->error(ctx, HVQ_E_INPUT, "%s: token %d contains a NUL byte", what, i);
    t->piece[i] = malloc(n + 1);
    if (!t->piece[i])
        return ctx->host->error(ctx, HVQ_E_NOMEM, "out of memory");
    memcpy(t->piece[i], s, n);
    t->piece[i][n] = '\0';
    t->len[i] = n;
    return HVQ_OK;
}

/* ---- llama2.c tokenizer.bin ---------------------------------------------- */

hvq_status hvq_tokenizer_load_llama2c(hvq_ctx *ctx, const char *path, hvq_tokenizer **out)
{
    *out = NULL;
    int odd;
    FILE *f = hvq_fopen_input(ctx, path, &odd);
    if (!f)
        return ctx->host->error(ctx, odd || errno == ENOENT ? HVQ_E_INPUT : HVQ_E_IO,
                                "%s: cannot open: %s", path,
                                odd ? "not a regular file (a FIFO, a device?)" : strerror(errno));
    long size = -1;
    if (fseek(f, 0, SEEK_END) == 0)
        size = ftell(f);
    if (size < 4 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return ctx->host->error(ctx, HVQ_E_INPUT, "%s: not a llama2.c tokenizer", path);
    }
    unsigned char *d = malloc((size_t)size);
    if (!d) {
        fclose(f);
        return ctx->host->error(ctx, HVQ_E_NOMEM, "out of memory");
    }
    size_t got = fread(d, 1, (size_t)size, f);
    fclose(f);
    if (got != (size_t)size) {
        free(d);
        return ctx->host->error(ctx, HVQ_E_IO, "%s: read error", path);
    }
    /* Count the entries first: int32 max length, then (float, int32, bytes)*. */
    size_t o = 4;
    int n = 0;
    hvq_status st = HVQ_OK;
    while (o < (size_t)size) {
        int32_t len;
        if ((size_t)size - o < 8) {
            st = HVQ_E_INPUT;
            break;
        }
        memcpy(&len, d + o + 4, 4);
        if (len < 0 || len > TOK_MAX_PIECE || (size_t)size - o - 8 < (size_t)len ||
            n >= TOK_MAX_VOCAB) {
            st = HVQ_E_INPUT;
            break;
        }
        o += 8 + (size_t)len;
        n++;
    }
    if (st != HVQ_OK || n == 0) {
        free(d);
        return ctx->host->error(ctx, HVQ_E_INPUT, "%s: not a llama2.c tokenizer (entry %d is "
                                "truncated or malformed)", path, n);
    }
    hvq_tokenizer *t = tok_new(n);
    if (!t) {
        free(d);
        return ctx->host->error(ctx, HVQ_E_NOMEM, "out of memory");
    }
    o = 4;
    for (int i = 0; i < n && st == HVQ_OK; i++) {
        int32_t len;
        memcpy(&t->score[i], d + o, 4);
        memcpy(&len, d + o + 4, 4);
        st = set_piece(ctx, t, i, (const char *)d + o + 8, (size_t)len, path);
        o += 8 + (size_t)len;
        /* llama2.c: 0 <unk>, 1 BOS, 2 EOS; the rest are ordinary pieces. */
        t->mergeable[i] = i > 2;
    }
    free(d);
    if (st == HVQ_OK)
        st = tok_index(ctx, t);
    if (st != HVQ_OK) {
        hvq_tokenizer_free(t);
        return st;
    }
    *out = t;
    return HVQ_OK;
}

/* ---- GGUF metadata -------------------------------------------------------- */

/* The "value" of a typed GGUF entry, parsed; NULL when absent or bad. */
static const hvq_json_value *typed(const hvq_meta *meta, size_t n, const char *key,
                                   hvq_json_doc **doc)
{
    return hvq_meta_typed(meta, n, key, doc, NULL, NULL);
}

/* Token i of a GGUF vocabulary: its piece ("▁", U+2581, E2 96 81, is
 * SentencePiece's space), score and whether merges may produce it. */
static hvq_status gguf_token(hvq_ctx *ctx, hvq_tokenizer *t, size_t i,
                             const hvq_json_value *toks, const hvq_json_value *scores,
                             const hvq_json_value *types, const char *what)
{
    size_t len;
    const char *s = hvq_json_string(hvq_json_item(toks, i), &len);
    if (!s)
        return ctx->host->error(ctx, HVQ_E_INPUT, "%s: token %zu is not a string", what, i);
    char *buf = malloc(len + 1);
    if (!buf)
        return ctx->host->error(ctx, HVQ_E_NOMEM, "out of memory");
    size_t m = 0;
    for (size_t k = 0; k < len; k++) {
        if (k + 2 < len && (unsigned char)s[k] == 0xE2 && (unsigned char)s[k + 1] == 0x96 &&
            (unsigned char)s[k + 2] == 0x81) {
            buf[m++] = ' ';
            k += 2;
        } else {
            buf[m++] = s[k];
        }
    }
    hvq_status st = set_piece(ctx, t, (int)i, buf, m, what);
    free(buf);
    double sc = 0;
    if (scores && hvq_json_double(hvq_json_item(scores, i), &sc) != 0)
        sc = 0;
    t->score[i] = (float)sc;
    int64_t ty = 1;
    if (types && hvq_json_int64(hvq_json_item(types, i), &ty) != 0)
        ty = 1;
    /* 1 normal, 4 user-defined; 2 unknown, 3 control, 5 unused, 6 byte */
    t->mergeable[i] = ty == 1 || ty == 4;
    return st;
}

hvq_status hvq_tokenizer_from_gguf(hvq_ctx *ctx, const hvq_meta *meta, size_t n_meta,
                                   const char *what, hvq_tokenizer **out)
{
    *out = NULL;
    hvq_json_doc *dm = NULL, *dt = NULL, *ds = NULL, *dy = NULL, *dx = NULL;
    hvq_tokenizer *t = NULL;
    hvq_status st = HVQ_OK;
    const hvq_json_value *model = typed(meta, n_meta, "tokenizer.ggml.model", &dm);
    const hvq_json_value *toks = typed(meta, n_meta, "tokenizer.ggml.tokens", &dt);
    if (!model || !toks) {
        st = ctx->host->error(ctx, HVQ_E_NOTFOUND, "%s: the model's metadata holds no tokenizer "
                              "(give one with --tokenizer)", what);
        goto done;
    }
    const char *kind = hvq_json_string(model, NULL);
    if (!kind || strcmp(kind, "llama") != 0) {
        st = ctx->host->error(ctx, HVQ_E_UNSUPPORTED, "%s: tokenizer kind '%s' is not supported "
                              "(only SentencePiece-style 'llama' vocabularies are)", what,
                              kind ? kind : "?");
        goto done;
    }
    size_t n = hvq_json_count(toks);
    if (toks->type != HVQ_JSON_ARRAY || n == 0 || n > TOK_MAX_VOCAB) {
        st = ctx->host->error(ctx, HVQ_E_INPUT, "%s: tokenizer.ggml.tokens is not a list of "
                              "tokens", what);
        goto done;
    }
    const hvq_json_value *scores = typed(meta, n_meta, "tokenizer.ggml.scores", &ds);
    const hvq_json_value *types = typed(meta, n_meta, "tokenizer.ggml.token_type", &dy);
    if ((scores && hvq_json_count(scores) != n) || (types && hvq_json_count(types) != n)) {
        st = ctx->host->error(ctx, HVQ_E_INPUT, "%s: the tokenizer's scores or token types do "
                              "not match its %zu tokens", what, n);
        goto done;
    }
    if (!(t = tok_new((int)n))) {
        st = ctx->host->error(ctx, HVQ_E_NOMEM, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < n && st == HVQ_OK; i++)
        st = gguf_token(ctx, t, i, toks, scores, types, what);
    if (st != HVQ_OK)
        goto done;
    int64_t v;
    const hvq_json_value *bos = typed(meta, n_meta, "tokenizer.ggml.bos_token_id", &dx);
    if (bos && hvq_json_int64(bos, &v) == 0 && v >= 0 && v < (int64_t)n)
        t->bos = (int)v;
    hvq_json_free(dx);
    const hvq_json_value *pre = typed(meta, n_meta, "tokenizer.ggml.add_space_prefix", &dx);
    if (pre && hvq_json_bool(pre) == 0)
        t->add_prefix = 0;
    st = tok_index(ctx, t);
done:
    hvq_json_free(dm);
    hvq_json_free(dt);
    hvq_json_free(ds);
    hvq_json_free(dy);
    hvq_json_free(dx);
    if (st != HVQ_OK) {
        hvq_tokenizer_free(t);
        return st;
    }
    *out = t;
    return HVQ_OK;
}

/* ---- encoding ------------------------------------------------------------- */

static hvq_status push(hvq_ctx *ctx, int32_t **ids, size_t *n, size_t *cap, int32_t id)
{
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 256;
        int32_t *p = realloc(*ids, c * sizeof *p);
        if (!p)
            return ctx->host->error(ctx, HVQ_E_NOMEM, "out of memory");
        *ids = p;
        *cap = c;
    }
    (*ids)[(*n)++] = id;
    return HVQ_OK;
}

/* The best merge of tokens a and b: its id (score in *sc), or -1. */
static int pair_id(const hvq_tokenizer *t, int a, int b, char *buf, float *sc)
{
    size_t la = t->len[a], lb = t->len[b];
    if (la + lb > TOK_MAX_PIECE * 2)
        return -1;
    memcpy(buf, t->piece[a], la);
    memcpy(buf + la, t->piece[b], lb);
    int id = lookup(t, buf, la + lb);
    if (id >= 0)
        *sc = t->score[id];
    return id;
}

/* ---- merging -------------------------------------------------------------
 *
 * The rule (llama2.c's): merge the adjacent pair whose piece has the highest
 * score, the leftmost on ties, until no pair is a piece. Rescanning the
 * whole list for each merge is quadratic (a paragraph of 200 KB took half a
 * minute), so the symbols form a doubly linked list in text order, where a
 * merge folds symbol next[i] into symbol i and every symbol keeps its first
 * position, and the symbols whose pair (i, next[i]) is a piece sit in a
 * binary heap ordered by (score descending, i ascending). Since positions
 * keep the list's order, the top of the heap is exactly the pair the scan
 * picked; each merge changes two pairs, so a text of n bytes takes
 * O(n log n). A pair scoring -inf or NaN never won the scan (its test was
 * score > best, best starting at -inf), so it never enters the heap. */

typedef struct tok_syms {
    int32_t *mem;               /* the arrays below, one allocation */
    int32_t *tok, *prev, *next; /* -1: none */
    int32_t *pid;               /* the piece of (i, next[i]), valid in the heap */
    float *psc;                 /* its score */
    int32_t *heap, *slot;       /* slot[i]: i's index in heap, -1 when absent */
    size_t n_heap;
    uint64_t work;              /* pair lookups and heap steps, for the tests */
} tok_syms;

/* Is symbol a's pair merged before symbol b's? */
static int sym_first(const tok_syms *s, int32_t a, int32_t b)
{
    return s->psc[a] > s->psc[b] || (s->psc[a] == s->psc[b] && a < b);
}

static void heap_put(tok_syms *s, size_t k, int32_t i)
{
    s->heap[k] = i;
    s->slot[i] = (int32_t)k;
}

static void sift_up(tok_syms *s, size_t k)
{
    int32_t i = s->heap[k];
    while (k > 0) {
        size_t p = (k - 1) / 2;
        s->work++;
        if (!sym_first(s, i, s->heap[p]))
            break;
        heap_put(s, k, s->heap[p]);
        k = p;
    }
    heap_put(s, k, i);
}

static void sift_down(tok_syms *s, size_t k)
{
    int32_t i = s->heap[k];
    for (size_t c; (c = 2 * k + 1) < s->n_heap;) {
        s->work++;
        if (c + 1 < s->n_heap && sym_first(s, s->heap[c + 1], s->heap[c]))
            c++;
        if (!sym_first(s, s->heap[c], i))
            break;
        heap_put(s, k, s->heap[c]);
        k = c;
    }
    heap_put(s, k, i);
}

static void heap_remove(tok_syms *s, int32_t i)
{
    size_t k = (size_t)s->slot[i], last = --s->n_heap;
    s->slot[i] = -1;
    if (k == last)
        return;
    int32_t j = s->heap[last];
    heap_put(s, k, j);
    sift_up(s, k);
    sift_down(s, (size_t)s->slot[j]);
}

/* Looks up the pair of symbol i (with next[i]) and puts i in the heap, moves
 * it, or takes it out, accordingly. */
static void sym_pair(const hvq_tokenizer *t, tok_syms *s, int32_t i, char *buf)
{
    float sc = -INFINITY;
    int id = -1;
    if (s->next[i] >= 0) {
        id = pair_id(t, s->tok[i], s->tok[s->next[i]], buf, &sc);
        s->work++;
    }
    if (id < 0 || !(sc > -INFINITY)) {
        if (s->slot[i] >= 0)
            heap_remove(s, i);
        return;
    }
    s->pid[i] = id;
    s->psc[i] = sc;
    if (s->slot[i] < 0) {
        heap_put(s, s->n_heap++, i);
        sift_up(s, (size_t)s->slot[i]);
    } else {
        sift_up(s, (size_t)s->slot[i]);
        sift_down(s, (size_t)s->slot[i]);
    }
}

_Static_assert(sizeof(float) == sizeof(int32_t), "psc shares the int32 block");

/* Room for n symbols: seven arrays of n 32-bit values (psc's floats too). */
static int syms_alloc(tok_syms *s, size_t n)
{
    memset(s, 0, sizeof *s);
    if (!(s->mem = malloc(n * 7 * sizeof *s->mem)))
        return 0;
    s->tok = s->mem;
    s->prev = s->tok + n;
    s->next = s->prev + n;
    s->pid = s->next + n;
    s->heap = s->pid + n;
    s->slot = s->heap + n;
    s->psc = (float *)(void *)(s->slot + n);
    return 1;
}

/* The symbols before any merge: the dummy prefix, then per UTF-8 code point
 * its piece, or one byte token (else the unknown token) per byte. */
static size_t first_symbols(const hvq_tokenizer *t, const char *text, size_t len, int32_t *w)
{
    size_t m = 0;
    if (t->add_prefix) {
        int sp = lookup(t, " ", 1);
        if (sp >= 0)
            w[m++] = sp;
    }
    for (size_t i = 0; i < len;) {
        size_t cl = 1;
        while (cl < 4 && i + cl < len && ((unsigned char)text[i + cl] & 0xC0) == 0x80)
            cl++;
        int id = lookup(t, text + i, cl);
        if (id >= 0) {
            w[m++] = id;
        } else {
            for (size_t k = 0; k < cl; k++)
                w[m++] = hvq_tokenizer_byte(t, (unsigned char)text[i + k]);
        }
        i += cl;
    }
    return m;
}

/* Merges s's m symbols (tok filled) to the end. */
static void merge_all(const hvq_tokenizer *t, tok_syms *s, size_t m, char *buf)
{
    for (size_t i = 0; i < m; i++) {
        s->prev[i] = (int32_t)i - 1;
        s->next[i] = i + 1 < m ? (int32_t)i + 1 : -1;
        s->slot[i] = -1;
    }
    for (size_t i = 0; i + 1 < m; i++)
        sym_pair(t, s, (int32_t)i, buf);
    while (s->n_heap) {
        int32_t i = s->heap[0], j = s->next[i];
        s->tok[i] = s->pid[i];
        if (s->slot[j] >= 0)
            heap_remove(s, j);
        s->next[i] = s->next[j];
        if (s->next[j] >= 0)
            s->prev[s->next[j]] = i;
        if (s->prev[i] >= 0)
            sym_pair(t, s, s->prev[i], buf);
        sym_pair(t, s, i, buf);
    }
}

/* hvq_tokenizer_encode, adding to *work (when not NULL) the number of pair
 * lookups and heap steps the merging took. For the tests (declared there,
 * not in the header: internal). */
hvq_status hvq_tokenizer_encode_work(hvq_ctx *ctx, const hvq_tokenizer *t, const char *text,
                                     size_t len, int bos, int32_t **ids, size_t *n,
                                     size_t *cap, uint64_t *work);
hvq_status hvq_tokenizer_encode_work(hvq_ctx *ctx, const hvq_tokenizer *t, const char *text,
                                     size_t len, int bos, int32_t **ids, size_t *n,
                                     size_t *cap, uint64_t *work)
{
    hvq_status st = HVQ_OK;
    if (bos && (st = push(ctx, ids, n, cap, t->bos)) != HVQ_OK)
        return st;
    if (len == 0)
        return HVQ_OK;
    if (len > INT32_MAX - 1) /* symbols are int32: at most one per byte, plus the prefix */
        return ctx->host->error(ctx, HVQ_E_INPUT, "a paragraph of %zu bytes is too long to "
                                "tokenize (at most 2 GiB)", len);
    tok_syms s;
    char *buf = malloc(TOK_MAX_PIECE * 2 + 8);
    if (!syms_alloc(&s, len + 1) || !buf) {
        st = ctx->host->error(ctx, HVQ_E_NOMEM, "out of memory");
        goto done;
    }
    size_t m = first_symbols(t, text, len, s.tok);
    merge_all(t, &s, m, buf);
    for (int32_t i = 0; i >= 0 && st == HVQ_OK; i = s.next[i])
        st = push(ctx, ids, n, cap, s.tok[i]);
    if (work)
        *work += s.work;
done:
    free(s.mem);
    free(buf);
    return st;
}

hvq_status hvq_tokenizer_encode(hvq_ctx *ctx, const hvq_tokenizer *t, const char *text,
                                size_t len, int bos, int32_t **ids, size_t *n, size_t *cap)
{
    return hvq_tokenizer_encode_work(ctx, t, text, len, bos, ids, n, cap, NULL);
}

static int blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r')
            return 0;
    return 1;
}

hvq_status hvq_tokenizer_encode_text(hvq_ctx *ctx, const hvq_tokenizer *t, const char *text,
                                     size_t len, int32_t **ids, size_t *n)
{
    *ids = NULL;
    *n = 0;
    size_t cap = 0;
    char *para = malloc(len + 1);
    if (!para)
        return ctx->host->error(ctx, HVQ_E_NOMEM, "out of memory");
    size_t pl = 0;
    hvq_status st = HVQ_OK;
    for (size_t i = 0; i <= len && st == HVQ_OK;) {
        const char *nl = i < len ? memchr(text + i, '\n', len - i) : NULL;
        size_t e = nl ? (size_t)(nl - text) : len;
        size_t ll = e - i;
        if (ll && text[i + ll - 1] == '\r')
            ll--;
        if (i < len && !blank(text + i, ll)) {
            if (pl)
                para[pl++] = '\n';
            memcpy(para + pl, text + i, ll);
            pl += ll;
        } else if (pl) {
            st = hvq_tokenizer_encode(ctx, t, para, pl, 1, ids, n, &cap);
            pl = 0;
        }
        i = e + 1;
    }
    if (st == HVQ_OK && pl)
        st = hvq_tokenizer_encode(ctx, t, para, pl, 1, ids, n, &cap);
    free(para);
    if (st != HVQ_OK) {
        free(*ids);
        *ids = NULL;
        *n = 0;
    }
    return st;
}
