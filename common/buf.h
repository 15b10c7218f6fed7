/* A growable text buffer with JSON string escaping, shared by the core and
 * plugins (linked statically into each). Memory comes from malloc and is
 * released by hvq_buf_free; after an allocation failure the buffer stays
 * as it was, sets oom, and ignores further appends. */
#ifndef HVQ_COMMON_BUF_H
#define HVQ_COMMON_BUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct hvq_buf {
    char *data; /* NUL-terminated after any successful append; NULL before */
    size_t len, cap;
    int oom;    /* set once an allocation failed */
} hvq_buf;

void hvq_buf_init(hvq_buf *b);
void hvq_buf_free(hvq_buf *b);
void hvq_buf_append(hvq_buf *b, const char *s, size_t n);
void hvq_buf_puts(hvq_buf *b, const char *s);
void hvq_buf_putu(hvq_buf *b, unsigned long long v);
void hvq_buf_printf(hvq_buf *b, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* s (NUL-terminated, or n bytes) as a JSON string literal, quotes included;
 * control characters are escaped, other bytes copied (s must be UTF-8). */
void hvq_buf_json_string(hvq_buf *b, const char *s);
void hvq_buf_json_stringn(hvq_buf *b, const char *s, size_t n);

/* Length of s[0..n) once escaped as the content of a JSON string. */
uint64_t hvq_json_escaped_len(const char *s, size_t n);

#endif
