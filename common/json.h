/* A small, strict JSON (RFC 8259) DOM parser shared by the core and plugins.
 *
 * Input is a byte range (text, len); it need not be NUL-terminated and may
 * contain NUL bytes (which are errors outside strings, and must be escaped
 * inside them). The parser is strict:
 *   - exactly one value, surrounded by optional whitespace (space, tab, LF,
 *     CR); anything else after it is an error; no BOM, no comments, no
 *     trailing commas, no NaN/Infinity, no leading zeros or '+' signs;
 *   - strings must be valid UTF-8 (no overlong forms, no encoded
 *     surrogates, nothing above U+10FFFF) and may not contain raw control
 *     characters (< 0x20);
 *   - \uXXXX escapes are decoded to UTF-8; a surrogate pair becomes one
 *     code point and a lone or mismatched surrogate is an error;
 *   - \u0000 is accepted in string values (the decoded length then counts
 *     it) but refused in object keys, so every key is a plain C string;
 *   - arrays and objects nest at most HVQ_JSON_MAX_DEPTH levels.
 * Duplicate object keys are accepted and kept (in input order); callers
 * that must refuse them ask hvq_json_object_duplicate(), or pass
 * HVQ_JSON_NO_DUPLICATES to make the parse itself fail.
 *
 * Ownership: hvq_json_parse() returns a document that owns every value,
 * string and array reachable from it. All of it is released by one call to
 * hvq_json_free(); no pointer obtained from a document may be used after
 * that. The input text is not referenced after hvq_json_parse() returns.
 * Memory comes from malloc (one arena per document). The functions keep no
 * global state and are safe to call from several threads on different
 * documents; a document may be read concurrently.
 */
#ifndef HVQ_COMMON_JSON_H
#define HVQ_COMMON_JSON_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Deepest nesting of arrays/objects accepted ("[[1]]" has depth 2). */
#define HVQ_JSON_MAX_DEPTH 64

typedef enum hvq_json_type {
    HVQ_JSON_NULL = 0,
    HVQ_JSON_FALSE = 1,
    HVQ_JSON_TRUE = 2,
    HVQ_JSON_NUMBER = 3,
    HVQ_JSON_STRING = 4,
    HVQ_JSON_ARRAY = 5,
    HVQ_JSON_OBJECT = 6
} hvq_json_type;

typedef struct hvq_json_value hvq_json_value;

/* One member of an object. */
typedef struct hvq_json_member {
    const char *key;        /* decoded UTF-8, NUL-terminated, no NUL inside */
    size_t key_len;         /* strlen(key) */
    size_t key_offset;      /* byte offset of the key's opening quote */
    hvq_json_value *value;  /* never NULL */
} hvq_json_member;

/* A value. Every field is read-only for callers; all pointers belong to the
 * document. */
struct hvq_json_value {
    hvq_json_type type;
    size_t offset;          /* byte offset of the value's first byte */
    /* STRING: the decoded UTF-8 bytes, NUL-terminated (len excludes the
     * terminator; a string may contain NUL bytes from \u0000).
     * NUMBER: the literal exactly as written, NUL-terminated.
     * Other types: NULL / 0. */
    const char *str;
    size_t len;
    /* NUMBER: the value as a double (nearest; +-HUGE_VAL when it is out of
     * range, which is not an error). Other types: 0. */
    double num;
    /* NUMBER: 1 when the literal has no fraction and no exponent. */
    int is_integer;
    /* ARRAY: count items; OBJECT: count members, in input order. */
    size_t count;
    hvq_json_value **items;     /* ARRAY only, else NULL */
    hvq_json_member *members;   /* OBJECT only, else NULL */
};

/* A parsed document (opaque). */
typedef struct hvq_json_doc hvq_json_doc;

typedef enum hvq_json_status {
    HVQ_JSON_OK = 0,
    HVQ_JSON_E_SYNTAX = 1,  /* not valid JSON (including bad UTF-8) */
    HVQ_JSON_E_DEPTH = 2,   /* nested deeper than HVQ_JSON_MAX_DEPTH */
    HVQ_JSON_E_DUPLICATE = 3, /* duplicate key with HVQ_JSON_NO_DUPLICATES */
    HVQ_JSON_E_NOMEM = 4    /* out of memory */
} hvq_json_status;

/* Where and why a parse failed. Filled by hvq_json_parse() on failure (and
 * cleared on success). */
typedef struct hvq_json_error {
    hvq_json_status status;
    size_t offset;          /* byte offset of the problem in the input */
    char reason[96];        /* short, no offset: "expected ':'" */
    char message[128];      /* reason + " at byte N": "expected ':' at
                               byte 123" */
} hvq_json_error;

/* Flags for hvq_json_parse(). */
#define HVQ_JSON_NO_DUPLICATES (1u << 0) /* duplicate keys in any object are
                                            an error (E_DUPLICATE) */

/* Parses text[0..len). Returns the document, or NULL with *err filled
 * (err may be NULL). The caller owns the document: free it with
 * hvq_json_free(). */
hvq_json_doc *hvq_json_parse(const char *text, size_t len, unsigned flags,
                             hvq_json_error *err);

/* Releases the document and everything obtained from it. NULL is a no-op. */
void hvq_json_free(hvq_json_doc *doc);

/* The root value (never NULL for a parsed document). Owned by doc. */
const hvq_json_value *hvq_json_root(const hvq_json_doc *doc);

/* ------------------------------------------------------------------------
 * Accessors. They accept NULL and values of the wrong type, returning
 * NULL / 0 / -1 instead of crashing, so checks can be chained.
 * ---------------------------------------------------------------------- */

/* "null", "false", "true", "number", "string", "array", "object". */
const char *hvq_json_type_name(hvq_json_type t);

/* Shorthand for the JSON type name of v ("missing" for NULL); false and
 * true both give "boolean". For error messages. */
const char *hvq_json_kind(const hvq_json_value *v);

/* Number of items (array) or members (object); 0 otherwise. */
size_t hvq_json_count(const hvq_json_value *v);

/* Item i of an array, or NULL. */
const hvq_json_value *hvq_json_item(const hvq_json_value *v, size_t i);

/* Member i of an object, or NULL. */
const hvq_json_member *hvq_json_member_at(const hvq_json_value *v, size_t i);

/* The value of the first member named key, or NULL (linear search). */
const hvq_json_value *hvq_json_get(const hvq_json_value *obj,
                                   const char *key);

/* The decoded string of a STRING value (and its length in *len when len is
 * not NULL), or NULL for other types. Owned by the document. */
const char *hvq_json_string(const hvq_json_value *v, size_t *len);

/* 1 when v is true, 0 when false; -1 when v is not a boolean. */
int hvq_json_bool(const hvq_json_value *v);

/* The double of a NUMBER into *out: 0 on success, -1 for other types. */
int hvq_json_double(const hvq_json_value *v, double *out);

/* The exact integer of a NUMBER written without fraction or exponent and
 * within range: 0 on success, -1 otherwise ("1.0", "1e3", "1.5",
 * 9223372036854775808, strings, ... all fail). */
int hvq_json_int64(const hvq_json_value *v, int64_t *out);
int hvq_json_uint64(const hvq_json_value *v, uint64_t *out); /* also fails
                                                    for negative numbers */

/* The first duplicated key of an object: the member that repeats an
 * earlier key (the one appearing earliest in the input among all repeats),
 * or NULL when every key is unique or v is not an object. O(n log n);
 * returns NULL also when it cannot allocate its scratch space and
 * *nomem is then set to 1 (nomem may be NULL). */
const hvq_json_member *hvq_json_object_duplicate(const hvq_json_value *v,
                                                 int *nomem);

/* 1 when s[0..len) is valid UTF-8 by the same rules the parser applies to
 * strings (NUL bytes allowed), else 0. */
int hvq_json_utf8_valid(const char *s, size_t len);

/* ------------------------------------------------------------------------
 * A large document piece by piece. A DOM costs about 100 bytes a value,
 * whatever the value's size in the text: an array of ten million small
 * numbers takes a gigabyte. These read such a text with memory bounded by
 * its largest single leaf instead.
 * ---------------------------------------------------------------------- */

/* 0 when text[0..len) is one JSON value by exactly the rules of
 * hvq_json_parse() without flags (same errors, same *err), else -1. Keeps
 * nothing: the memory used is that of the longest string or number. */
int hvq_json_validate(const char *text, size_t len, hvq_json_error *err);

/* A cursor walks a text whose containers the caller steps through itself
 * (take '[', then one value after another, take ',' or ']'), each item
 * parsed on its own. It does not track nesting depth or check the
 * punctuation it is not asked for: validate the whole text first. The text
 * must outlive the cursor. NULL when out of memory. */
typedef struct hvq_json_cursor hvq_json_cursor;
hvq_json_cursor *hvq_json_cursor_new(const char *text, size_t len);
void hvq_json_cursor_free(hvq_json_cursor *c);

/* The next byte after whitespace (which is skipped), or 0 at the end. */
int hvq_json_cursor_peek(hvq_json_cursor *c);
/* Skips whitespace and consumes ch when it comes next: 1, else 0. */
int hvq_json_cursor_take(hvq_json_cursor *c, char ch);
/* Parses the value at the cursor and moves past it; NULL with *err filled
 * on an error (err may be NULL). The value and everything reachable from
 * it belong to the cursor and stay valid until its next value or skip. */
const hvq_json_value *hvq_json_cursor_value(hvq_json_cursor *c,
                                            hvq_json_error *err);
/* Moves past the value at the cursor, checking it and keeping nothing:
 * 0, or -1 with *err filled. */
int hvq_json_cursor_skip(hvq_json_cursor *c, hvq_json_error *err);
/* The byte offset of the cursor, and a move to one returned earlier. */
size_t hvq_json_cursor_pos(const hvq_json_cursor *c);
void hvq_json_cursor_seek(hvq_json_cursor *c, size_t pos);

#ifdef __cplusplus
}
#endif

#endif /* HVQ_COMMON_JSON_H */
