/* Strict JSON DOM parser; see json.h for the contract. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include "json.h"

#include <locale.h>
#include <stdalign.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------
 * Arena: every allocation of a document comes from a list of malloc'd
 * chunks released together.
 * ---------------------------------------------------------------------- */
typedef struct arena_chunk {
    struct arena_chunk *next;
    size_t cap;  /* usable bytes after the header */
    size_t used;
} arena_chunk;

#define ARENA_ALIGN (alignof(max_align_t))
#define ARENA_HDR                                                             \
    ((sizeof(arena_chunk) + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1))
#define ARENA_FIRST 4096u
#define ARENA_MAX_STEP (1u << 20)

struct hvq_json_doc {
    arena_chunk *chunks;   /* head has the free space in use */
    size_t next_cap;       /* size of the next ordinary chunk */
    hvq_json_value *root;
};

static void *arena_alloc(hvq_json_doc *doc, size_t n)
{
    arena_chunk *c = doc->chunks;
    size_t cap;
    if (n == 0)
        n = 1;
    if (n > SIZE_MAX - ARENA_HDR - ARENA_ALIGN)
        return NULL;
    n = (n + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    if (c != NULL && c->cap - c->used >= n) {
        void *p = (char *)c + ARENA_HDR + c->used;
        c->used += n;
        return p;
    }
    if (n > doc->next_cap / 4) {
        /* A large block gets a chunk of its own, linked behind the head so
         * the head keeps its free space. */
        arena_chunk *big = malloc(ARENA_HDR + n);
        if (big == NULL)
            return NULL;
        big->cap = n;
        big->used = n;
        if (c != NULL) {
            big->next = c->next;
            c->next = big;
        } else {
            big->next = NULL;
            doc->chunks = big;
        }
        return (char *)big + ARENA_HDR;
    }
    cap = doc->next_cap;
    c = malloc(ARENA_HDR + cap);
    if (c == NULL)
        return NULL;
    c->cap = cap;
    c->used = n;
    c->next = doc->chunks;
    doc->chunks = c;
    if (doc->next_cap < ARENA_MAX_STEP)
        doc->next_cap *= 2;
    return (char *)c + ARENA_HDR;
}

/* Frees every chunk of the arena. */
static void arena_release(hvq_json_doc *doc)
{
    arena_chunk *c, *next;
    for (c = doc->chunks; c != NULL; c = next) {
        next = c->next;
        free(c);
    }
    doc->chunks = NULL;
}

void hvq_json_free(hvq_json_doc *doc)
{
    if (doc == NULL)
        return;
    arena_release(doc);
    free(doc);
}

/* Empties the arena for reuse: the head chunk stays (its space free
 * again), every other chunk is released. */
static void arena_reset(hvq_json_doc *doc)
{
    arena_chunk *c = doc->chunks, *next;
    if (c == NULL)
        return;
    for (arena_chunk *x = c->next; x != NULL; x = next) {
        next = x->next;
        free(x);
    }
    c->next = NULL;
    c->used = 0;
}

const hvq_json_value *hvq_json_root(const hvq_json_doc *doc)
{
    return doc != NULL ? doc->root : NULL;
}

/* ------------------------------------------------------------------------
 * UTF-8.
 * ---------------------------------------------------------------------- */

/* Length of the valid multi-byte sequence at s (s[0] >= 0x80, n >= 1
 * bytes available), or 0 when it is not valid UTF-8. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    unsigned lo = 0x80, hi = 0xBF;
    size_t len, i;
    if (c < 0xC2)
        return 0; /* stray continuation byte or overlong 2-byte form */
    if (c < 0xE0)
        len = 2;
    else if (c < 0xF0) {
        len = 3;
        if (c == 0xE0)
            lo = 0xA0; /* overlong */
        else if (c == 0xED)
            hi = 0x9F; /* UTF-16 surrogates */
    } else if (c < 0xF5) {
        len = 4;
        if (c == 0xF0)
            lo = 0x90; /* overlong */
        else if (c == 0xF4)
            hi = 0x8F; /* above U+10FFFF */
    } else
        return 0;
    if (n < len)
        return 0;
    if (s[1] < lo || s[1] > hi)
        return 0;
    for (i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    return len;
}

int hvq_json_utf8_valid(const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    if (s == NULL)
        return len == 0;
    while (i < len) {
        if (u[i] < 0x80) {
            i++;
        } else {
            size_t n = utf8_seq(u + i, len - i);
            if (n == 0)
                return 0;
            i += n;
        }
    }
    return 1;
}

static size_t utf8_put(unsigned char *out, unsigned long cp)
{
    if (cp < 0x80) {
        out[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (unsigned char)(0xC0 | (cp >> 6));
        out[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (unsigned char)(0xE0 | (cp >> 12));
        out[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (unsigned char)(0xF0 | (cp >> 18));
    out[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* ------------------------------------------------------------------------
 * The parser.
 * ---------------------------------------------------------------------- */
typedef struct parser {
    const unsigned char *s;
    size_t len, pos;
    unsigned flags;
    int depth;
    hvq_json_doc *doc;
    hvq_json_error *err;
    int failed;
    /* Checking only: the items and members of containers are not kept,
     * and the arena is emptied after each one (hvq_json_validate). */
    int discard;
    hvq_json_value scratch; /* what a value is when discarded */
    /* Scratch stacks for the items/members of the open containers. */
    hvq_json_value **vstack;
    size_t vlen, vcap;
    hvq_json_member *mstack;
    size_t mlen, mcap;
} parser;

static void fail(parser *p, hvq_json_status st, size_t offset,
                 const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

static void fail(parser *p, hvq_json_status st, size_t offset,
                 const char *fmt, ...)
{
    va_list ap;
    if (p->failed)
        return;
    p->failed = 1;
    if (p->err == NULL)
        return;
    p->err->status = st;
    p->err->offset = offset;
    va_start(ap, fmt);
    vsnprintf(p->err->reason, sizeof p->err->reason, fmt, ap);
    va_end(ap);
    snprintf(p->err->message, sizeof p->err->message, "%s at byte %zu",
             p->err->reason, offset);
}

static void fail_nomem(parser *p)
{
    fail(p, HVQ_JSON_E_NOMEM, p->pos, "out of memory");
}

/* Describes the byte at pos for "unexpected ..." messages. */
static void fail_unexpected(parser *p, const char *expected)
{
    if (p->pos >= p->len) {
        if (expected != NULL)
            fail(p, HVQ_JSON_E_SYNTAX, p->pos,
                 "unexpected end of input, expected %s", expected);
        else
            fail(p, HVQ_JSON_E_SYNTAX, p->pos, "unexpected end of input");
        return;
    }
    {
        unsigned c = p->s[p->pos];
        char what[32];
        if (c >= 0x20 && c < 0x7F && c != '\'')
            snprintf(what, sizeof what, "'%c'", (char)c);
        else
            snprintf(what, sizeof what, "byte 0x%02X", c);
        if (expected != NULL)
            fail(p, HVQ_JSON_E_SYNTAX, p->pos, "expected %s, found %s",
                 expected, what);
        else
            fail(p, HVQ_JSON_E_SYNTAX, p->pos, "unexpected %s", what);
    }
}

static void skip_ws(parser *p)
{
    while (p->pos < p->len) {
        unsigned char c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            break;
        p->pos++;
    }
}

static hvq_json_value *new_value(parser *p, hvq_json_type t, size_t offset)
{
    hvq_json_value *v;
    if (p->discard)
        return &p->scratch; /* kept by nobody */
    v = arena_alloc(p->doc, sizeof *v);
    if (v == NULL) {
        fail_nomem(p);
        return NULL;
    }
    memset(v, 0, sizeof *v);
    v->type = t;
    v->offset = offset;
    return v;
}

static int push_value(parser *p, hvq_json_value *v)
{
    if (p->vlen == p->vcap) {
        size_t cap = p->vcap ? p->vcap * 2 : 64;
        hvq_json_value **n;
        if (cap > SIZE_MAX / sizeof *n)
            return -1;
        n = realloc(p->vstack, cap * sizeof *n);
        if (n == NULL)
            return -1;
        p->vstack = n;
        p->vcap = cap;
    }
    p->vstack[p->vlen++] = v;
    return 0;
}

static int push_member(parser *p, const hvq_json_member *m)
{
    if (p->mlen == p->mcap) {
        size_t cap = p->mcap ? p->mcap * 2 : 64;
        hvq_json_member *n;
        if (cap > SIZE_MAX / sizeof *n)
            return -1;
        n = realloc(p->mstack, cap * sizeof *n);
        if (n == NULL)
            return -1;
        p->mstack = n;
        p->mcap = cap;
    }
    p->mstack[p->mlen++] = *m;
    return 0;
}

static int hex4(const unsigned char *s, unsigned long *out)
{
    unsigned long v = 0;
    int i;
    for (i = 0; i < 4; i++) {
        unsigned c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= c - '0';
        else if (c >= 'a' && c <= 'f')
            v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            v |= c - 'A' + 10;
        else
            return -1;
    }
    *out = v;
    return 0;
}

/* Parses the string at p->pos (which is '"'). On success the decoded,
 * NUL-terminated bytes are in *out (arena) and p->pos is past the closing
 * quote. */
/* The \uXXXX escape at *i (a surrogate pair takes two), its code point in
 * *cp; *i moves past it. */
static int parse_u_escape(parser *p, size_t *i, size_t end, int is_key, unsigned long *cp)
{
    unsigned long lo;
    size_t at = *i;
    if (end - at < 6 || hex4(p->s + at + 2, cp) != 0) {
        fail(p, HVQ_JSON_E_SYNTAX, at, "invalid \\u escape (need 4 hex digits)");
        return -1;
    }
    if (*cp >= 0xDC00 && *cp <= 0xDFFF) {
        fail(p, HVQ_JSON_E_SYNTAX, at, "lone low surrogate \\u%04lX", *cp);
        return -1;
    }
    if (*cp >= 0xD800 && *cp <= 0xDBFF) {
        if (end - at < 12 || p->s[at + 6] != '\\' || p->s[at + 7] != 'u' ||
            hex4(p->s + at + 8, &lo) != 0 || lo < 0xDC00 || lo > 0xDFFF) {
            fail(p, HVQ_JSON_E_SYNTAX, at, "lone high surrogate \\u%04lX", *cp);
            return -1;
        }
        *cp = 0x10000 + ((*cp - 0xD800) << 10) + (lo - 0xDC00);
        *i += 12;
        return 0;
    }
    if (*cp == 0 && is_key) {
        fail(p, HVQ_JSON_E_SYNTAX, at, "\\u0000 in an object key");
        return -1;
    }
    *i += 6;
    return 0;
}

/* The escape at *i decoded into buf at *n; both move past it. */
static int parse_escape(parser *p, size_t *i, size_t end, int is_key, unsigned char *buf,
                        size_t *n)
{
    static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
    unsigned e = p->s[*i + 1];
    const char *k = e ? strchr(from, (int)e) : NULL;
    if (k) {
        buf[(*n)++] = (unsigned char)to[k - from];
        *i += 2;
        return 0;
    }
    if (e == 'u') {
        unsigned long cp;
        if (parse_u_escape(p, i, end, is_key, &cp) != 0)
            return -1;
        *n += utf8_put(buf + *n, cp);
        return 0;
    }
    if (e >= 0x20 && e < 0x7F && e != '\'')
        fail(p, HVQ_JSON_E_SYNTAX, *i, "invalid escape '\\%c'", (char)e);
    else
        fail(p, HVQ_JSON_E_SYNTAX, *i, "invalid escape (backslash before byte 0x%02X)", e);
    return -1;
}

static int parse_string(parser *p, int is_key, const char **out,
                        size_t *out_len)
{
    size_t start = p->pos;
    size_t i, end;
    unsigned char *buf;
    size_t n = 0;

    /* Pass 1: find the closing quote (an escape always covers the byte
     * after the backslash). */
    i = start + 1;
    while (i < p->len && p->s[i] != '"') {
        if (p->s[i] == '\\')
            i++;
        i++;
    }
    if (i >= p->len) {
        fail(p, HVQ_JSON_E_SYNTAX, start, "unterminated string");
        return -1;
    }
    end = i;
    /* Decoded bytes never outnumber the raw ones. */
    buf = arena_alloc(p->doc, end - start);
    if (buf == NULL) {
        fail_nomem(p);
        return -1;
    }

    /* Pass 2: validate and decode. */
    i = start + 1;
    while (i < end) {
        unsigned c = p->s[i];
        if (c == '\\') {
            if (parse_escape(p, &i, end, is_key, buf, &n) != 0)
                return -1;
        } else if (c < 0x20) {
            fail(p, HVQ_JSON_E_SYNTAX, i,
                 "unescaped control character 0x%02X in string", c);
            return -1;
        } else if (c < 0x80) {
            buf[n++] = (unsigned char)c;
            i++;
        } else {
            size_t k = utf8_seq(p->s + i, end - i);
            if (k == 0) {
                fail(p, HVQ_JSON_E_SYNTAX, i, "invalid UTF-8 in string");
                return -1;
            }
            memcpy(buf + n, p->s + i, k);
            n += k;
            i += k;
        }
    }
    buf[n] = '\0';
    p->pos = end + 1;
    *out = (const char *)buf;
    *out_len = n;
    return 0;
}

static int is_digit(parser *p)
{
    return p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9';
}

static hvq_json_value *parse_number(parser *p)
{
    size_t start = p->pos;
    size_t n;
    int is_int = 1;
    char *text;
    hvq_json_value *v;
    const char *dp;

    if (p->s[p->pos] == '-')
        p->pos++;
    if (!is_digit(p)) {
        fail_unexpected(p, "a digit");
        return NULL;
    }
    if (p->s[p->pos] == '0') {
        p->pos++;
        if (is_digit(p)) {
            fail(p, HVQ_JSON_E_SYNTAX, p->pos - 1,
                 "leading zero in number");
            return NULL;
        }
    } else {
        while (is_digit(p))
            p->pos++;
    }
    if (p->pos < p->len && p->s[p->pos] == '.') {
        is_int = 0;
        p->pos++;
        if (!is_digit(p)) {
            fail_unexpected(p, "a digit after '.'");
            return NULL;
        }
        while (is_digit(p))
            p->pos++;
    }
    if (p->pos < p->len && (p->s[p->pos] == 'e' || p->s[p->pos] == 'E')) {
        is_int = 0;
        p->pos++;
        if (p->pos < p->len && (p->s[p->pos] == '+' || p->s[p->pos] == '-'))
            p->pos++;
        if (!is_digit(p)) {
            fail_unexpected(p, "a digit in the exponent");
            return NULL;
        }
        while (is_digit(p))
            p->pos++;
    }
    n = p->pos - start;
    v = new_value(p, HVQ_JSON_NUMBER, start);
    if (v == NULL || p->discard)
        return v; /* checking only: no text, no conversion */
    text = arena_alloc(p->doc, n + 1);
    if (text == NULL) {
        fail_nomem(p);
        return NULL;
    }
    memcpy(text, p->s + start, n);
    text[n] = '\0';
    v->str = text;
    v->len = n;
    v->is_integer = is_int;

    /* strtod follows LC_NUMERIC: when it stops early (at the '.'), the
     * program set a locale with another decimal point; hand it that. */
    {
        char *end;
        v->num = strtod(text, &end);
        if (*end == '\0')
            return v;
    }
    dp = localeconv()->decimal_point;
    if (dp == NULL || strcmp(dp, ".") == 0) {
        fail(p, HVQ_JSON_E_SYNTAX, start, "cannot convert number");
        return NULL;
    } else {
        size_t dl = strlen(dp), k, o = 0;
        char *tmp = malloc(n + dl + 1);
        if (tmp == NULL) {
            fail_nomem(p);
            return NULL;
        }
        for (k = 0; k < n; k++) {
            if (text[k] == '.') {
                memcpy(tmp + o, dp, dl);
                o += dl;
            } else {
                tmp[o++] = text[k];
            }
        }
        tmp[o] = '\0';
        v->num = strtod(tmp, NULL);
        free(tmp);
    }
    return v;
}

static hvq_json_value *parse_value(parser *p);

/* Enters an array or object (at its opening bracket): 0, or -1 past the
 * depth limit. Then 1 when it is empty (the closing bracket consumed). */
static int open_nested(parser *p, char close)
{
    size_t start = p->pos;
    p->pos++;
    if (++p->depth > HVQ_JSON_MAX_DEPTH) {
        fail(p, HVQ_JSON_E_DEPTH, start, "nesting deeper than %d levels",
             HVQ_JSON_MAX_DEPTH);
        return -1;
    }
    skip_ws(p);
    if (p->pos < p->len && p->s[p->pos] == close) {
        p->pos++;
        return 1;
    }
    return 0;
}

/* After an item of an array or object: 1 at a ',' (another follows), 0 at
 * the closing bracket (consumed), -1 otherwise. */
static int next_item(parser *p, char close, const char *expected)
{
    skip_ws(p);
    if (p->pos < p->len && p->s[p->pos] == ',') {
        p->pos++;
        return 1;
    }
    if (p->pos < p->len && p->s[p->pos] == close) {
        p->pos++;
        return 0;
    }
    fail_unexpected(p, expected);
    return -1;
}

/* The n items of a finished array or object, from the parser's stack
 * (items base.. of it; the stack may be NULL when n is 0) into the arena
 * (NULL when n is 0, or on no memory: *nomem set). */
static void *stack_copy(parser *p, const void *stack, size_t base, size_t n, size_t size,
                        int *nomem)
{
    void *out = NULL;
    *nomem = 0;
    if (n == 0)
        return NULL;
    if ((out = arena_alloc(p->doc, n * size)) == NULL) {
        fail_nomem(p);
        *nomem = 1;
        return NULL;
    }
    memcpy(out, (const char *)stack + base * size, n * size);
    return out;
}

static hvq_json_value *parse_array(parser *p)
{
    size_t start = p->pos;
    size_t base = p->vlen;
    hvq_json_value *v;
    int more = open_nested(p, ']'), nomem;

    if (more < 0)
        return NULL;
    for (more = !more; more > 0;) {
        hvq_json_value *item = parse_value(p);
        if (item == NULL)
            return NULL;
        if (p->discard) {
            arena_reset(p->doc);
        } else if (push_value(p, item) != 0) {
            fail_nomem(p);
            return NULL;
        }
        if ((more = next_item(p, ']', "',' or ']'")) < 0)
            return NULL;
    }
    p->depth--;
    v = new_value(p, HVQ_JSON_ARRAY, start);
    if (v == NULL)
        return NULL;
    v->count = p->vlen - base;
    v->items = stack_copy(p, p->vstack, base, v->count, sizeof *v->items, &nomem);
    if (nomem)
        return NULL;
    p->vlen = base;
    return v;
}

/* One "key": value member of an object into m. */
static int parse_member(parser *p, hvq_json_member *m)
{
    skip_ws(p);
    if (p->pos >= p->len || p->s[p->pos] != '"') {
        fail_unexpected(p, "a string key");
        return -1;
    }
    m->key_offset = p->pos;
    if (parse_string(p, 1, &m->key, &m->key_len) != 0)
        return -1;
    skip_ws(p);
    if (p->pos >= p->len || p->s[p->pos] != ':') {
        fail_unexpected(p, "':'");
        return -1;
    }
    p->pos++;
    m->value = parse_value(p);
    return m->value ? 0 : -1;
}

static hvq_json_value *parse_object(parser *p)
{
    size_t start = p->pos;
    size_t base = p->mlen;
    hvq_json_value *v;
    int more = open_nested(p, '}'), oom;

    if (more < 0)
        return NULL;
    for (more = !more; more > 0;) {
        hvq_json_member m;
        if (parse_member(p, &m) != 0)
            return NULL;
        if (p->discard) {
            arena_reset(p->doc);
        } else if (push_member(p, &m) != 0) {
            fail_nomem(p);
            return NULL;
        }
        if ((more = next_item(p, '}', "',' or '}'")) < 0)
            return NULL;
    }
    p->depth--;
    v = new_value(p, HVQ_JSON_OBJECT, start);
    if (v == NULL)
        return NULL;
    v->count = p->mlen - base;
    v->members = stack_copy(p, p->mstack, base, v->count, sizeof *v->members, &oom);
    if (oom)
        return NULL;
    p->mlen = base;
    if (p->flags & HVQ_JSON_NO_DUPLICATES) {
        int nomem = 0;
        const hvq_json_member *d = hvq_json_object_duplicate(v, &nomem);
        if (nomem) {
            fail_nomem(p);
            return NULL;
        }
        if (d != NULL) {
            fail(p, HVQ_JSON_E_DUPLICATE, d->key_offset,
                 "duplicate key '%.60s'", d->key);
            return NULL;
        }
    }
    return v;
}

static hvq_json_value *parse_literal(parser *p, const char *word,
                                     hvq_json_type t)
{
    size_t n = strlen(word);
    size_t start = p->pos;
    if (p->len - p->pos < n || memcmp(p->s + p->pos, word, n) != 0) {
        fail(p, HVQ_JSON_E_SYNTAX, start, "invalid literal (expected %s)",
             word);
        return NULL;
    }
    p->pos += n;
    return new_value(p, t, start);
}

static hvq_json_value *parse_value(parser *p)
{
    unsigned c;
    skip_ws(p);
    if (p->pos >= p->len) {
        fail_unexpected(p, "a value");
        return NULL;
    }
    c = p->s[p->pos];
    switch (c) {
    case '{':
        return parse_object(p);
    case '[':
        return parse_array(p);
    case '"': {
        size_t start = p->pos;
        hvq_json_value *v;
        const char *s;
        size_t n;
        if (parse_string(p, 0, &s, &n) != 0)
            return NULL;
        v = new_value(p, HVQ_JSON_STRING, start);
        if (v == NULL)
            return NULL;
        v->str = s;
        v->len = n;
        return v;
    }
    case 't':
        return parse_literal(p, "true", HVQ_JSON_TRUE);
    case 'f':
        return parse_literal(p, "false", HVQ_JSON_FALSE);
    case 'n':
        return parse_literal(p, "null", HVQ_JSON_NULL);
    default:
        if (c == '-' || (c >= '0' && c <= '9'))
            return parse_number(p);
        fail_unexpected(p, "a value");
        return NULL;
    }
}

/* One value filling the input but for whitespace around it. */
static hvq_json_value *parse_document(parser *p)
{
    hvq_json_value *root;
    skip_ws(p);
    if (p->pos >= p->len) {
        fail(p, HVQ_JSON_E_SYNTAX, p->pos, "empty input");
        return NULL;
    }
    root = parse_value(p);
    if (root != NULL) {
        skip_ws(p);
        if (p->pos < p->len) {
            fail(p, HVQ_JSON_E_SYNTAX, p->pos,
                 "unexpected data after the JSON value");
            root = NULL;
        }
    }
    return root;
}

/* Readies p for text[0..len), *err cleared; -1 (*err filled) when there
 * is no text. */
static int parser_init(parser *p, const char *text, size_t len,
                       unsigned flags, hvq_json_error *err)
{
    memset(p, 0, sizeof *p);
    p->err = err;
    if (err != NULL)
        memset(err, 0, sizeof *err);
    if (text == NULL && len > 0) {
        fail(p, HVQ_JSON_E_SYNTAX, 0, "no input");
        return -1;
    }
    p->s = (const unsigned char *)text;
    p->len = len;
    p->flags = flags;
    return 0;
}

hvq_json_doc *hvq_json_parse(const char *text, size_t len, unsigned flags,
                             hvq_json_error *err)
{
    parser p;
    hvq_json_doc *doc;
    hvq_json_value *root;

    if (parser_init(&p, text, len, flags, err) != 0)
        return NULL;
    doc = calloc(1, sizeof *doc);
    if (doc == NULL) {
        fail(&p, HVQ_JSON_E_NOMEM, 0, "out of memory");
        return NULL;
    }
    doc->next_cap = ARENA_FIRST;
    p.doc = doc;

    root = parse_document(&p);
    free(p.vstack);
    free(p.mstack);
    if (root == NULL) {
        hvq_json_free(doc);
        return NULL;
    }
    doc->root = root;
    return doc;
}

/* ------------------------------------------------------------------------
 * Piece by piece: hvq_json_validate and the cursor.
 * ---------------------------------------------------------------------- */
struct hvq_json_cursor {
    parser p;
    hvq_json_doc doc; /* the arena of the value last parsed */
};

hvq_json_cursor *hvq_json_cursor_new(const char *text, size_t len)
{
    hvq_json_cursor *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->doc.next_cap = ARENA_FIRST;
    c->p.s = (const unsigned char *)(text != NULL ? text : "");
    c->p.len = text != NULL ? len : 0;
    c->p.doc = &c->doc;
    return c;
}

void hvq_json_cursor_free(hvq_json_cursor *c)
{
    if (c == NULL)
        return;
    arena_release(&c->doc);
    free(c->p.vstack);
    free(c->p.mstack);
    free(c);
}

/* Readies the cursor's parser for one more call. */
static parser *cursor_begin(hvq_json_cursor *c, hvq_json_error *err,
                            int discard)
{
    arena_reset(&c->doc);
    c->p.err = err; /* filled on a failure only */
    c->p.failed = 0;
    c->p.depth = 0;
    c->p.vlen = c->p.mlen = 0;
    c->p.discard = discard;
    return &c->p;
}

int hvq_json_validate(const char *text, size_t len, hvq_json_error *err)
{
    parser p;
    hvq_json_doc doc;
    int ok;

    if (parser_init(&p, text, len, 0, err) != 0)
        return -1;
    memset(&doc, 0, sizeof doc);
    doc.next_cap = ARENA_FIRST;
    p.doc = &doc;
    p.discard = 1; /* the stacks stay unused */
    ok = parse_document(&p) != NULL;
    arena_release(&doc);
    return ok ? 0 : -1;
}

int hvq_json_cursor_peek(hvq_json_cursor *c)
{
    skip_ws(&c->p);
    return c->p.pos < c->p.len ? c->p.s[c->p.pos] : 0;
}

int hvq_json_cursor_take(hvq_json_cursor *c, char ch)
{
    if (hvq_json_cursor_peek(c) != (unsigned char)ch || ch == 0)
        return 0;
    c->p.pos++;
    return 1;
}

const hvq_json_value *hvq_json_cursor_value(hvq_json_cursor *c,
                                            hvq_json_error *err)
{
    return parse_value(cursor_begin(c, err, 0));
}

int hvq_json_cursor_skip(hvq_json_cursor *c, hvq_json_error *err)
{
    return parse_value(cursor_begin(c, err, 1)) != NULL ? 0 : -1;
}

size_t hvq_json_cursor_pos(const hvq_json_cursor *c) { return c->p.pos; }

void hvq_json_cursor_seek(hvq_json_cursor *c, size_t pos)
{
    c->p.pos = pos < c->p.len ? pos : c->p.len;
}

/* ------------------------------------------------------------------------
 * Accessors.
 * ---------------------------------------------------------------------- */
const char *hvq_json_type_name(hvq_json_type t)
{
    switch (t) {
    case HVQ_JSON_NULL: return "null";
    case HVQ_JSON_FALSE: return "false";
    case HVQ_JSON_TRUE: return "true";
    case HVQ_JSON_NUMBER: return "number";
    case HVQ_JSON_STRING: return "string";
    case HVQ_JSON_ARRAY: return "array";
    case HVQ_JSON_OBJECT: return "object";
    }
    return "unknown";
}

const char *hvq_json_kind(const hvq_json_value *v)
{
    if (v == NULL)
        return "missing";
    if (v->type == HVQ_JSON_TRUE || v->type == HVQ_JSON_FALSE)
        return "boolean";
    return hvq_json_type_name(v->type);
}

size_t hvq_json_count(const hvq_json_value *v)
{
    if (v == NULL || (v->type != HVQ_JSON_ARRAY && v->type != HVQ_JSON_OBJECT))
        return 0;
    return v->count;
}

const hvq_json_value *hvq_json_item(const hvq_json_value *v, size_t i)
{
    if (v == NULL || v->type != HVQ_JSON_ARRAY || i >= v->count)
        return NULL;
    return v->items[i];
}

const hvq_json_member *hvq_json_member_at(const hvq_json_value *v, size_t i)
{
    if (v == NULL || v->type != HVQ_JSON_OBJECT || i >= v->count)
        return NULL;
    return &v->members[i];
}

const hvq_json_value *hvq_json_get(const hvq_json_value *obj, const char *key)
{
    size_t i;
    if (obj == NULL || obj->type != HVQ_JSON_OBJECT || key == NULL)
        return NULL;
    for (i = 0; i < obj->count; i++)
        if (strcmp(obj->members[i].key, key) == 0)
            return obj->members[i].value;
    return NULL;
}

const char *hvq_json_string(const hvq_json_value *v, size_t *len)
{
    if (v == NULL || v->type != HVQ_JSON_STRING)
        return NULL;
    if (len != NULL)
        *len = v->len;
    return v->str;
}

int hvq_json_bool(const hvq_json_value *v)
{
    if (v == NULL)
        return -1;
    if (v->type == HVQ_JSON_TRUE)
        return 1;
    if (v->type == HVQ_JSON_FALSE)
        return 0;
    return -1;
}

int hvq_json_double(const hvq_json_value *v, double *out)
{
    if (v == NULL || v->type != HVQ_JSON_NUMBER)
        return -1;
    if (out != NULL)
        *out = v->num;
    return 0;
}

/* Magnitude of an integer literal (digits after an optional '-'), with
 * overflow detection against limit. */
static int int_magnitude(const char *s, uint64_t limit, uint64_t *out)
{
    uint64_t m = 0;
    for (; *s; s++) {
        unsigned d = (unsigned)(*s - '0');
        if (d > 9)
            return -1;
        if (m > (limit - d) / 10)
            return -1;
        m = m * 10 + d;
    }
    *out = m;
    return 0;
}

int hvq_json_int64(const hvq_json_value *v, int64_t *out)
{
    uint64_t m;
    if (v == NULL || v->type != HVQ_JSON_NUMBER || !v->is_integer)
        return -1;
    if (v->str[0] == '-') {
        if (int_magnitude(v->str + 1, (uint64_t)INT64_MAX + 1u, &m) != 0)
            return -1;
        if (out != NULL)
            *out = m == (uint64_t)INT64_MAX + 1u ? INT64_MIN
                                                 : -(int64_t)m;
        return 0;
    }
    if (int_magnitude(v->str, (uint64_t)INT64_MAX, &m) != 0)
        return -1;
    if (out != NULL)
        *out = (int64_t)m;
    return 0;
}

int hvq_json_uint64(const hvq_json_value *v, uint64_t *out)
{
    uint64_t m;
    if (v == NULL || v->type != HVQ_JSON_NUMBER || !v->is_integer)
        return -1;
    if (v->str[0] == '-') {
        /* "-0" is zero; any other negative number fails. */
        if (int_magnitude(v->str + 1, UINT64_MAX, &m) != 0 || m != 0)
            return -1;
    } else if (int_magnitude(v->str, UINT64_MAX, &m) != 0) {
        return -1;
    }
    if (out != NULL)
        *out = m;
    return 0;
}

typedef struct dup_entry {
    const char *key;
    size_t index;
} dup_entry;

static int dup_cmp(const void *a, const void *b)
{
    const dup_entry *x = a, *y = b;
    int c = strcmp(x->key, y->key);
    if (c != 0)
        return c;
    return x->index < y->index ? -1 : x->index > y->index;
}

const hvq_json_member *hvq_json_object_duplicate(const hvq_json_value *v,
                                                 int *nomem)
{
    dup_entry *e;
    size_t i, best = SIZE_MAX;
    if (nomem != NULL)
        *nomem = 0;
    if (v == NULL || v->type != HVQ_JSON_OBJECT || v->count < 2)
        return NULL;
    if (v->count == 2) {
        return strcmp(v->members[0].key, v->members[1].key) == 0
                   ? &v->members[1]
                   : NULL;
    }
    if (v->count > SIZE_MAX / sizeof *e) {
        if (nomem != NULL)
            *nomem = 1;
        return NULL;
    }
    e = malloc(v->count * sizeof *e);
    if (e == NULL) {
        if (nomem != NULL)
            *nomem = 1;
        return NULL;
    }
    for (i = 0; i < v->count; i++) {
        e[i].key = v->members[i].key;
        e[i].index = i;
    }
    qsort(e, v->count, sizeof *e, dup_cmp);
    /* Within a run of equal keys the second entry is the earliest repeat. */
    for (i = 1; i < v->count; i++) {
        if (strcmp(e[i].key, e[i - 1].key) == 0 &&
            (i < 2 || strcmp(e[i - 1].key, e[i - 2].key) != 0) &&
            e[i].index < best)
            best = e[i].index;
    }
    free(e);
    return best == SIZE_MAX ? NULL : &v->members[best];
}
