/* The NPY array format: prefix, header dictionary, dtypes, byte order and
 * Fortran order. No I/O; see npy.h. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include "npy.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------
 * dtypes
 * ---------------------------------------------------------------------- */

/* Every dtype this plugin reads and writes, in the spelling numpy writes
 * (np.dtype(...).str on a little-endian machine). */
static const npy_type npy_types[] = {
    {"<f4", HVQ_DTYPE_F32, 4},  {"<f2", HVQ_DTYPE_F16, 2},
    {"<f8", HVQ_DTYPE_F64, 8},  {"|i1", HVQ_DTYPE_I8, 1},
    {"|u1", HVQ_DTYPE_U8, 1},   {"<i2", HVQ_DTYPE_I16, 2},
    {"<u2", HVQ_DTYPE_U16, 2},  {"<i4", HVQ_DTYPE_I32, 4},
    {"<u4", HVQ_DTYPE_U32, 4},  {"<i8", HVQ_DTYPE_I64, 8},
    {"<u8", HVQ_DTYPE_U64, 8},  {"|b1", HVQ_DTYPE_BOOL, 1},
};
#define NPY_N_TYPES (sizeof npy_types / sizeof npy_types[0])

const npy_type *npy_type_of(hvq_dtype t)
{
    size_t i;
    for (i = 0; i < NPY_N_TYPES; i++)
        if (npy_types[i].dtype == t)
            return &npy_types[i];
    return NULL;
}

/* descr[0..len) as a type: '<' and '>' for every type, '|' (no byte
 * order) for the one-byte types only. */
static const npy_type *npy_type_by_descr(const char *d, size_t len,
                                         int *swap)
{
    size_t i;
    if (len != 3 || (d[0] != '<' && d[0] != '>' && d[0] != '|'))
        return NULL;
    for (i = 0; i < NPY_N_TYPES; i++) {
        const npy_type *t = &npy_types[i];
        if (memcmp(t->descr + 1, d + 1, 2) != 0)
            continue;
        if (d[0] == '|' && t->size != 1)
            return NULL;
        *swap = d[0] == '>' && t->size > 1;
        return t;
    }
    return NULL;
}

/* ------------------------------------------------------------------------
 * Messages
 * ---------------------------------------------------------------------- */
int npy_fail(char *why, size_t len, const char *fmt, ...)
{
    va_list ap;
    if (why != NULL && len > 0) {
        va_start(ap, fmt);
        vsnprintf(why, len, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* Up to max bytes of p[0..n) as printable text: other bytes as \xNN, and
 * "..." when cut. */
static const char *npy_show(char *buf, size_t len, const char *p, size_t n,
                            size_t max)
{
    size_t i, o = 0;
    for (i = 0; i < n && i < max && o + 5 < len; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c >= 0x20 && c < 0x7f && c != '\\')
            buf[o++] = (char)c;
        else
            o += (size_t)snprintf(buf + o, len - o, "\\x%02x", c);
    }
    if (i < n && o + 4 < len) {
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o < len ? o : len - 1] = '\0';
    return buf;
}

const char *npy_shape_text(char *buf, size_t len, int ndim,
                           const int64_t *shape)
{
    size_t o;
    int d;
    o = (size_t)snprintf(buf, len, "(");
    for (d = 0; d < ndim && o < len; d++)
        o += (size_t)snprintf(buf + o, len - o, "%s%lld", d ? ", " : "",
                              (long long)shape[d]);
    if (o < len)
        snprintf(buf + o, len - o, "%s)", ndim == 1 ? "," : "");
    return buf;
}

/* ------------------------------------------------------------------------
 * Prefix
 * ---------------------------------------------------------------------- */
int npy_read_prefix(const unsigned char *p, size_t n, npy_header *h,
                    size_t *need, char *why, size_t why_len)
{
    char show[64];
    uint64_t hlen;
    size_t lenbytes;

    *need = 0;
    if (n < NPY_MAGIC_LEN || memcmp(p, NPY_MAGIC, NPY_MAGIC_LEN) != 0)
        return npy_fail(why, why_len,
                        "bad NPY magic: expected \\x93NUMPY, found '%s'",
                        npy_show(show, sizeof show, (const char *)p,
                                 n < NPY_MAGIC_LEN ? n : NPY_MAGIC_LEN, 8));
    if (n < 8)
        return npy_fail(why, why_len,
                        "truncated NPY prefix: %zu bytes, too short for the "
                        "version",
                        n);
    h->major = p[6];
    h->minor = p[7];
    if (h->minor != 0 || h->major < 1 || h->major > 3)
        return npy_fail(why, why_len,
                        "unsupported NPY version %d.%d (1.0, 2.0 and 3.0 "
                        "are supported)",
                        h->major, h->minor);
    lenbytes = h->major == 1 ? 2 : 4;
    *need = 8 + lenbytes;
    if (n < *need)
        return npy_fail(why, why_len,
                        "truncated NPY prefix: %zu bytes, too short for the "
                        "header length of version %d.0",
                        n, h->major);
    if (lenbytes == 2)
        hlen = (uint64_t)p[8] | (uint64_t)p[9] << 8;
    else
        hlen = (uint64_t)p[8] | (uint64_t)p[9] << 8 | (uint64_t)p[10] << 16 |
               (uint64_t)p[11] << 24;
    h->prefix_len = 8 + lenbytes + hlen;
    return 0;
}

/* ------------------------------------------------------------------------
 * Header dictionary: a strict parser for exactly what numpy writes and
 * reads with ast.literal_eval:
 *   dict   := '{' ws [ item (ws ',' ws item)* [ws ','] ] ws '}' ws* '\n'
 *   item   := string ws ':' ws value
 *   string := '...' | "..." (no escapes, no control characters)
 *   value  := string | 'True' | 'False' | tuple
 *   tuple  := '(' ws ')' | '(' ws int ws ',' ws ')'
 *           | '(' ws int (ws ',' ws int)+ [ws ','] ws ')'
 *   int    := '0' | [1-9][0-9]*          (Python forbids leading zeros)
 *   ws     := (' ' | '\t')*
 * with exactly the keys 'descr', 'fortran_order' and 'shape', each once.
 * ---------------------------------------------------------------------- */
typedef struct npy_parser {
    const char *p, *end, *start;
    size_t base;               /* offset of start in the file or member */
    char *why;
    size_t why_len;
} npy_parser;

static size_t npy_pos(const npy_parser *ps)
{
    return ps->base + (size_t)(ps->p - ps->start);
}

static void npy_ws(npy_parser *ps)
{
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t'))
        ps->p++;
}

/* "found 'x'" or "found the end of the header" for messages. */
static const char *npy_found(const npy_parser *ps, char *buf, size_t len)
{
    char show[48];
    if (ps->p >= ps->end)
        return "the end of the header";
    snprintf(buf, len, "'%s'",
             npy_show(show, sizeof show, ps->p, (size_t)(ps->end - ps->p),
                      ps->p[0] == '\n' ? 1 : 8));
    return buf;
}

static int npy_expected(npy_parser *ps, const char *what)
{
    char f[64];
    return npy_fail(ps->why, ps->why_len,
                    "malformed NPY header: expected %s, found %s at byte %zu",
                    what, npy_found(ps, f, sizeof f), npy_pos(ps));
}

/* A quoted string; *s and *len point into the text. */
static int npy_string(npy_parser *ps, const char **s, size_t *len,
                      const char *what)
{
    char q;
    const char *b;
    if (ps->p >= ps->end || (*ps->p != '\'' && *ps->p != '"'))
        return npy_expected(ps, what);
    q = *ps->p++;
    b = ps->p;
    while (ps->p < ps->end && *ps->p != q) {
        unsigned char c = (unsigned char)*ps->p;
        if (c == '\\')
            return npy_fail(ps->why, ps->why_len,
                            "malformed NPY header: escape sequences in "
                            "strings are not supported (byte %zu)",
                            npy_pos(ps));
        if (c < 0x20 || c == 0x7f)
            return npy_fail(ps->why, ps->why_len,
                            "malformed NPY header: control character 0x%02x "
                            "in a string at byte %zu",
                            c, npy_pos(ps));
        ps->p++;
    }
    if (ps->p >= ps->end)
        return npy_fail(ps->why, ps->why_len,
                        "malformed NPY header: unterminated string starting "
                        "at byte %zu",
                        ps->base + (size_t)(b - 1 - ps->start));
    *s = b;
    *len = (size_t)(ps->p - b);
    ps->p++;
    return 0;
}

/* An identifier (True, False, or anything else, for the message). */
static size_t npy_ident_len(const npy_parser *ps)
{
    const char *q = ps->p;
    while (q < ps->end &&
           ((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') ||
            (*q >= '0' && *q <= '9') || *q == '_'))
        q++;
    return (size_t)(q - ps->p);
}

static int npy_bool(npy_parser *ps, int *out)
{
    size_t n = npy_ident_len(ps);
    if (n == 4 && memcmp(ps->p, "True", 4) == 0)
        *out = 1;
    else if (n == 5 && memcmp(ps->p, "False", 5) == 0)
        *out = 0;
    else
        return npy_expected(ps, "True or False for 'fortran_order'");
    ps->p += n;
    return 0;
}

static int npy_int(npy_parser *ps, int64_t *out)
{
    const char *b = ps->p;
    uint64_t v = 0;
    if (ps->p >= ps->end || *ps->p < '0' || *ps->p > '9')
        return npy_expected(ps, "a non-negative integer in 'shape'");
    if (*ps->p == '0' && ps->p + 1 < ps->end && ps->p[1] >= '0' &&
        ps->p[1] <= '9')
        return npy_fail(ps->why, ps->why_len,
                        "malformed NPY header: integer with a leading zero "
                        "in 'shape' at byte %zu",
                        npy_pos(ps));
    while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') {
        unsigned d = (unsigned)(*ps->p - '0');
        if (v > ((uint64_t)INT64_MAX - d) / 10)
            return npy_fail(ps->why, ps->why_len,
                            "shape dimension at byte %zu does not fit in 63 "
                            "bits",
                            ps->base + (size_t)(b - ps->start));
        v = v * 10 + d;
        ps->p++;
    }
    if (ps->p < ps->end && (*ps->p == '.' || *ps->p == 'e' || *ps->p == 'E' ||
                            *ps->p == 'L' || *ps->p == 'x' || *ps->p == '_'))
        return npy_fail(ps->why, ps->why_len,
                        "malformed NPY header: 'shape' holds something other "
                        "than a plain integer at byte %zu",
                        ps->base + (size_t)(b - ps->start));
    *out = (int64_t)v;
    return 0;
}

static int npy_shape(npy_parser *ps, npy_header *h)
{
    int n = 0;
    int comma = 0; /* a ',' followed the last integer */
    size_t open;
    if (ps->p >= ps->end || *ps->p != '(') {
        if (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9')
            return npy_fail(ps->why, ps->why_len,
                            "malformed NPY header: 'shape' must be a tuple "
                            "such as (3,) or (2, 3), found an integer at "
                            "byte %zu",
                            npy_pos(ps));
        return npy_expected(ps, "a tuple for 'shape'");
    }
    open = npy_pos(ps);
    ps->p++;
    npy_ws(ps);
    for (;;) {
        int64_t v = 0;
        if (ps->p < ps->end && *ps->p == ')')
            break;
        if (n > 0 && !comma)
            return npy_expected(ps, "',' or ')' in 'shape'");
        if (n == HVQ_MAX_DIMS)
            return npy_fail(ps->why, ps->why_len,
                            "'shape' has more than %d dimensions (the "
                            "maximum)",
                            HVQ_MAX_DIMS);
        if (npy_int(ps, &v) != 0)
            return -1;
        h->shape[n++] = v;
        npy_ws(ps);
        comma = 0;
        if (ps->p < ps->end && *ps->p == ',') {
            comma = 1;
            ps->p++;
            npy_ws(ps);
        }
    }
    if (n == 1 && !comma)
        return npy_fail(ps->why, ps->why_len,
                        "malformed NPY header: 'shape' at byte %zu is a "
                        "parenthesized integer, not a tuple (a 1-D shape is "
                        "written (n,))",
                        open);
    ps->p++; /* ')' */
    h->ndim = n;
    return 0;
}

/* Skips a bracketed value ([...] or (...)) for the message about it. */
static size_t npy_bracket_len(const npy_parser *ps)
{
    const char *q = ps->p;
    int depth = 0;
    char quote = 0;
    for (; q < ps->end; q++) {
        if (quote) {
            if (*q == quote)
                quote = 0;
            continue;
        }
        if (*q == '\'' || *q == '"')
            quote = *q;
        else if (*q == '[' || *q == '(' || *q == '{')
            depth++;
        else if ((*q == ']' || *q == ')' || *q == '}') && --depth == 0)
            return (size_t)(q + 1 - ps->p);
    }
    return (size_t)(ps->end - ps->p);
}

static int npy_descr(npy_parser *ps, npy_header *h)
{
    const char *s;
    size_t len;
    char show[96];
    if (ps->p < ps->end && *ps->p == '[') {
        size_t n = npy_bracket_len(ps);
        return npy_fail(ps->why, ps->why_len,
                        "structured dtype %s is not supported (plain "
                        "numeric and bool arrays only)",
                        npy_show(show, sizeof show, ps->p, n, 60));
    }
    if (npy_string(ps, &s, &len, "a string for 'descr'") != 0)
        return -1;
    h->type = npy_type_by_descr(s, len, &h->swap);
    if (h->type != NULL)
        return 0;
    npy_show(show, sizeof show, s, len, 40);
    if (len == 0)
        return npy_fail(ps->why, ps->why_len, "empty dtype descr ''");
    if (len == 2 && (s[0] == '|' || s[0] == '<' || s[0] == '>') &&
        s[1] == 'O')
        return npy_fail(ps->why, ps->why_len,
                        "dtype '%s' is a Python object array, which cannot "
                        "be read without pickle (not supported)",
                        show);
    if (len >= 2 && strchr("SUVcMma", s[1]) != NULL &&
        (s[0] == '|' || s[0] == '<' || s[0] == '>'))
        return npy_fail(ps->why, ps->why_len,
                        "dtype '%s' is not supported (%s)", show,
                        s[1] == 'c'   ? "complex numbers"
                        : s[1] == 'M' ? "datetimes"
                        : s[1] == 'm' ? "timedeltas"
                        : s[1] == 'V' ? "raw void records"
                                      : "strings");
    return npy_fail(ps->why, ps->why_len,
                    "unknown dtype '%s' (supported: <f4 <f2 <f8 |i1 |u1 "
                    "<i2 <u2 <i4 <u4 <i8 <u8 |b1, and '>' for big-endian)",
                    show);
}

/* The three keys of the header dictionary, in the order messages name
 * them. */
static const char *const npy_keys[3] = {"descr", "fortran_order", "shape"};

/* One "key: value" entry of the header dictionary; seen counts each key. */
static int npy_entry(npy_parser *ps, npy_header *h, int seen[3])
{
    const char *key;
    size_t klen, kpos = npy_pos(ps);
    int k;
    if (npy_string(ps, &key, &klen, "a quoted key or '}'") != 0)
        return -1;
    npy_ws(ps);
    if (ps->p >= ps->end || *ps->p != ':')
        return npy_expected(ps, "':' after a key");
    ps->p++;
    npy_ws(ps);
    for (k = 0; k < 3; k++)
        if (klen == strlen(npy_keys[k]) && memcmp(key, npy_keys[k], klen) == 0)
            break;
    if (k == 3) {
        char show[64];
        return npy_fail(ps->why, ps->why_len,
                        "malformed NPY header: unexpected key '%s' at "
                        "byte %zu (the keys are 'descr', "
                        "'fortran_order' and 'shape')",
                        npy_show(show, sizeof show, key, klen, 40), kpos);
    }
    if (seen[k]++)
        return npy_fail(ps->why, ps->why_len,
                        "malformed NPY header: key '%s' appears twice (byte %zu)",
                        npy_keys[k], kpos);
    return k == 0 ? npy_descr(ps, h) : k == 1 ? npy_bool(ps, &h->fortran) : npy_shape(ps, h);
}

/* The element count and byte size of the shape, within 64 bits. */
static int npy_sizes(npy_header *h, char *why, size_t why_len)
{
    uint64_t numel = 1;
    char shape[256];
    if (!hvq_shape_numel(h->ndim, h->shape, &numel))
        return npy_fail(why, why_len,
                        "shape overflow: the non-zero dimensions of %s "
                        "multiply past 63 bits",
                        npy_shape_text(shape, sizeof shape, h->ndim, h->shape));
    if (numel > UINT64_MAX / h->type->size)
        return npy_fail(why, why_len,
                        "shape overflow: the byte size of %s with %u-byte "
                        "elements does not fit in 64 bits",
                        npy_shape_text(shape, sizeof shape, h->ndim, h->shape),
                        h->type->size);
    h->numel = numel;
    h->nbytes = numel * h->type->size;
    return 0;
}

int npy_parse_header(const char *text, size_t hlen, size_t base,
                     npy_header *h, char *why, size_t why_len)
{
    npy_parser ps;
    int seen[3] = {0, 0, 0};

    ps.p = ps.start = text;
    ps.end = text + hlen;
    ps.base = base;
    ps.why = why;
    ps.why_len = why_len;
    h->type = NULL;
    h->swap = 0;
    h->fortran = 0;
    h->ndim = 0;

    if (hlen == 0 || text[hlen - 1] != '\n')
        return npy_fail(why, why_len,
                        "malformed NPY header: it does not end with a "
                        "newline");
    ps.end--; /* the newline */
    npy_ws(&ps);
    if (ps.p >= ps.end || *ps.p != '{')
        return npy_expected(&ps, "'{'");
    ps.p++;
    for (;;) {
        npy_ws(&ps);
        if (ps.p < ps.end && *ps.p == '}')
            break;
        if (npy_entry(&ps, h, seen) != 0)
            return -1;
        npy_ws(&ps);
        if (ps.p < ps.end && *ps.p == ',') {
            ps.p++;
            continue;
        }
        if (ps.p < ps.end && *ps.p == '}')
            break;
        return npy_expected(&ps, "',' or '}'");
    }
    ps.p++; /* '}' */
    while (ps.p < ps.end && *ps.p == ' ')
        ps.p++;
    if (ps.p < ps.end)
        return npy_expected(&ps, "only spaces and a newline after '}'");
    for (int k = 0; k < 3; k++)
        if (!seen[k])
            return npy_fail(why, why_len, "malformed NPY header: the key '%s' is missing",
                            npy_keys[k]);
    return npy_sizes(h, why, why_len);
}

/* ------------------------------------------------------------------------
 * Writing
 * ---------------------------------------------------------------------- */
#define NPY_ALIGN 64
#define NPY_GROWTH_DIGITS 21 /* numpy's GROWTH_AXIS_MAX_DIGITS */

size_t npy_build_header(const npy_type *t, int ndim, const int64_t *shape,
                        unsigned char **out)
{
    char dict[512];
    size_t dlen, lenbytes, hlen, pad, total, i;
    int d, major;
    unsigned char *b;

    *out = NULL;
    dlen = (size_t)snprintf(dict, sizeof dict,
                            "{'descr': '%s', 'fortran_order': False, "
                            "'shape': (",
                            t->descr);
    for (d = 0; d < ndim; d++)
        dlen += (size_t)snprintf(dict + dlen, sizeof dict - dlen, "%s%lld",
                                 d ? ", " : "", (long long)shape[d]);
    dlen += (size_t)snprintf(dict + dlen, sizeof dict - dlen, "%s), }",
                             ndim == 1 ? "," : "");
    /* numpy leaves room for the first axis to grow to 21 digits. */
    if (ndim > 0) {
        char digits[32];
        size_t nd = (size_t)snprintf(digits, sizeof digits, "%lld",
                                     (long long)shape[0]);
        if (nd < NPY_GROWTH_DIGITS)
            dlen += NPY_GROWTH_DIGITS - nd; /* spaces, added below */
    }
    /* Version 1.0 when the padded header fits a u16, else 2.0. */
    major = 1;
    lenbytes = 2;
    pad = NPY_ALIGN - ((NPY_MAGIC_LEN + 2 + lenbytes + dlen + 1) % NPY_ALIGN);
    hlen = dlen + pad + 1;
    if (hlen > 65535) {
        major = 2;
        lenbytes = 4;
        pad = NPY_ALIGN -
              ((NPY_MAGIC_LEN + 2 + lenbytes + dlen + 1) % NPY_ALIGN);
        hlen = dlen + pad + 1;
    }
    total = NPY_MAGIC_LEN + 2 + lenbytes + hlen;
    b = malloc(total);
    if (b == NULL)
        return 0;
    memcpy(b, NPY_MAGIC, NPY_MAGIC_LEN);
    b[6] = (unsigned char)major;
    b[7] = 0;
    for (i = 0; i < lenbytes; i++)
        b[8 + i] = (unsigned char)(hlen >> (8 * i));
    {
        size_t text = strlen(dict);
        unsigned char *h = b + 8 + lenbytes;
        memcpy(h, dict, text);
        memset(h + text, ' ', hlen - 1 - text);
        h[hlen - 1] = '\n';
    }
    *out = b;
    return total;
}

/* ------------------------------------------------------------------------
 * Data
 * ---------------------------------------------------------------------- */
void npy_swap(void *data, uint64_t n, unsigned size)
{
    unsigned char *p = data;
    uint64_t i;
    unsigned a;
    if (size < 2)
        return;
    for (i = 0; i < n; i++, p += size)
        for (a = 0; a < size / 2; a++) {
            unsigned char t = p[a];
            p[a] = p[size - 1 - a];
            p[size - 1 - a] = t;
        }
}

/* Copies count elements from src with a stride of step elements. */
#define NPY_GATHER(T)                                                         \
    do {                                                                      \
        T *o = (T *)(void *)out;                                              \
        const unsigned char *s = in;                                          \
        for (j = 0; j < count; j++)                                           \
            memcpy(&o[j], s + j * step * sizeof(T), sizeof(T));               \
    } while (0)

static void npy_gather(unsigned char *out, const unsigned char *in,
                       uint64_t count, uint64_t step, unsigned size)
{
    uint64_t j;
    switch (size) {
    case 1: NPY_GATHER(uint8_t); break;
    case 2: NPY_GATHER(uint16_t); break;
    case 4: NPY_GATHER(uint32_t); break;
    case 8: NPY_GATHER(uint64_t); break;
    default:
        for (j = 0; j < count; j++)
            memcpy(out + j * size, in + j * step * size, size);
    }
}

void npy_fortran_to_c(void *dst, const void *src, int ndim,
                      const int64_t *shape, unsigned size)
{
    /* In Fortran order element (i0, ..., i[n-1]) is at sum ik * fs[k] with
     * fs[0] = 1 and fs[k] = fs[k-1] * shape[k-1]. Walk dst in C order: the
     * last index varies fastest, with a source step of fs[n-1]. */
    uint64_t fs[HVQ_MAX_DIMS], idx[HVQ_MAX_DIMS], numel = 1, inner, rows,
        r, base = 0;
    unsigned char *out = dst;
    const unsigned char *in = src;
    int k;

    for (k = 0; k < ndim; k++)
        numel *= (uint64_t)shape[k];
    if (numel == 0)
        return;
    if (ndim < 2) {
        memcpy(dst, src, numel * size);
        return;
    }
    fs[0] = 1;
    for (k = 1; k < ndim; k++)
        fs[k] = fs[k - 1] * (uint64_t)shape[k - 1];
    memset(idx, 0, sizeof idx);
    inner = (uint64_t)shape[ndim - 1];
    rows = numel / inner;
    for (r = 0; r < rows; r++) {
        npy_gather(out, in + base * size, inner, fs[ndim - 1], size);
        out += inner * size;
        /* Next index over the outer axes, last of them fastest. */
        for (k = ndim - 2; k >= 0; k--) {
            idx[k]++;
            base += fs[k];
            if (idx[k] < (uint64_t)shape[k])
                break;
            base -= fs[k] * (uint64_t)shape[k];
            idx[k] = 0;
        }
    }
}
