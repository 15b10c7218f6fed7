/* A growable text buffer with JSON string escaping. */
#include "buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void hvq_buf_init(hvq_buf *b)
{
    b->data = NULL;
    b->len = b->cap = 0;
    b->oom = 0;
}

void hvq_buf_free(hvq_buf *b)
{
    free(b->data);
    hvq_buf_init(b);
}

static int buf_reserve(hvq_buf *b, size_t extra)
{
    if (b->oom)
        return 0;
    if (extra > SIZE_MAX - b->len - 1) {
        b->oom = 1;
        return 0;
    }
    if (b->len + extra + 1 <= b->cap)
        return 1;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1) {
        if (cap > SIZE_MAX / 2) {
            b->oom = 1;
            return 0;
        }
        cap *= 2;
    }
    char *d = realloc(b->data, cap);
    if (!d) {
        b->oom = 1;
        return 0;
    }
    b->data = d;
    b->cap = cap;
    return 1;
}

void hvq_buf_append(hvq_buf *b, const char *s, size_t n)
{
    if (!buf_reserve(b, n))
        return;
    if (n)
        memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void hvq_buf_puts(hvq_buf *b, const char *s) { hvq_buf_append(b, s, strlen(s)); }

void hvq_buf_putu(hvq_buf *b, unsigned long long v)
{
    char tmp[24];
    size_t i = sizeof tmp;
    do { /* by hand: snprintf costs more than the rest of a JSON number */
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    hvq_buf_append(b, tmp + i, sizeof tmp - i);
}

void hvq_buf_printf(hvq_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !buf_reserve(b, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* The escape of byte c inside a JSON string, or NULL when c stands as is. */
static const char *json_escape(unsigned char c, char tmp[8])
{
    switch (c) {
    case '"': return "\\\"";
    case '\\': return "\\\\";
    case '\n': return "\\n";
    case '\r': return "\\r";
    case '\t': return "\\t";
    case '\b': return "\\b";
    case '\f': return "\\f";
    default:
        if (c < 0x20) {
            snprintf(tmp, 8, "\\u%04x", c);
            return tmp;
        }
        return NULL;
    }
}

uint64_t hvq_json_escaped_len(const char *s, size_t n)
{
    uint64_t len = 0;
    char tmp[8];
    for (size_t i = 0; i < n; i++) {
        const char *e = json_escape((unsigned char)s[i], tmp);
        len += e ? strlen(e) : 1;
    }
    return len;
}

void hvq_buf_json_stringn(hvq_buf *b, const char *s, size_t n)
{
    char tmp[8];
    size_t run = 0;
    hvq_buf_append(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        const char *e = json_escape((unsigned char)s[i], tmp);
        if (e) {
            hvq_buf_append(b, s + run, i - run);
            hvq_buf_puts(b, e);
            run = i + 1;
        }
    }
    if (n > run) /* s may be NULL when n is 0 */
        hvq_buf_append(b, s + run, n - run);
    hvq_buf_append(b, "\"", 1);
}

void hvq_buf_json_string(hvq_buf *b, const char *s) { hvq_buf_json_stringn(b, s, strlen(s)); }
