/* Tests of the JSON parser (common/json.c) and of the typed-metadata
 * lookups built on it (common/meta.c). */
#include "config.h"

#include "harness.h"
#include "json.h"
#include "meta.h"

#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ========================================================================
 * JSON parser
 * ====================================================================== */

/* Parses a NUL-terminated literal (without the terminator). */
static hvq_json_doc *parse(const char *s, hvq_json_error *err)
{
    return hvq_json_parse(s, strlen(s), 0, err);
}

START_TEST(json_valid_document)
{
    const char *text =
        " {\"name\": \"x\", \"n\": -12.5e1, \"ok\": true, \"no\": false,\n"
        "  \"nil\": null, \"list\": [1, [2, {}], []], \"obj\": {\"k\": \"v\"}} ";
    hvq_json_error err;
    hvq_json_doc *doc = parse(text, &err);
    const hvq_json_value *root, *list, *v;
    const hvq_json_member *m;
    double d;

    ck_assert_msg(doc != NULL, "%s", err.message);
    ck_assert_int_eq(err.status, HVQ_JSON_OK);
    root = hvq_json_root(doc);
    ck_assert_int_eq(root->type, HVQ_JSON_OBJECT);
    ck_assert_uint_eq(hvq_json_count(root), 7);
    ck_assert_uint_eq(root->offset, 1);
    /* Insertion order. */
    ck_assert_str_eq(hvq_json_member_at(root, 0)->key, "name");
    ck_assert_str_eq(hvq_json_member_at(root, 6)->key, "obj");
    m = hvq_json_member_at(root, 1);
    ck_assert_str_eq(m->key, "n");
    ck_assert_uint_eq(m->key_offset, 15);
    ck_assert_ptr_null(hvq_json_member_at(root, 7));

    ck_assert_str_eq(hvq_json_string(hvq_json_get(root, "name"), NULL), "x");
    v = hvq_json_get(root, "n");
    ck_assert_int_eq(hvq_json_double(v, &d), 0);
    ck_assert(d == -125.0);
    ck_assert_str_eq(v->str, "-12.5e1");
    ck_assert_int_eq(v->is_integer, 0);
    ck_assert_int_eq(hvq_json_bool(hvq_json_get(root, "ok")), 1);
    ck_assert_int_eq(hvq_json_bool(hvq_json_get(root, "no")), 0);
    ck_assert_int_eq(hvq_json_bool(hvq_json_get(root, "nil")), -1);
    ck_assert_int_eq(hvq_json_get(root, "nil")->type, HVQ_JSON_NULL);
    ck_assert_ptr_null(hvq_json_get(root, "absent"));
    ck_assert_str_eq(hvq_json_kind(hvq_json_get(root, "ok")), "boolean");
    ck_assert_str_eq(hvq_json_kind(NULL), "missing");

    list = hvq_json_get(root, "list");
    ck_assert_int_eq(list->type, HVQ_JSON_ARRAY);
    ck_assert_uint_eq(hvq_json_count(list), 3);
    ck_assert_uint_eq(hvq_json_count(hvq_json_item(list, 1)), 2);
    ck_assert_int_eq(hvq_json_item(hvq_json_item(list, 1), 1)->type,
                     HVQ_JSON_OBJECT);
    ck_assert_uint_eq(hvq_json_count(hvq_json_item(list, 2)), 0);
    ck_assert_ptr_null(hvq_json_item(list, 3));
    ck_assert_str_eq(
        hvq_json_string(hvq_json_get(hvq_json_get(root, "obj"), "k"), NULL),
        "v");
    /* Wrong-type accessors fail softly. */
    ck_assert_ptr_null(hvq_json_string(list, NULL));
    ck_assert_int_eq(hvq_json_double(list, &d), -1);
    ck_assert_ptr_null(hvq_json_get(list, "k"));
    hvq_json_free(doc);

    /* Scalars at the root, and input that is not NUL-terminated. */
    doc = hvq_json_parse("42]garbage", 2, 0, &err);
    ck_assert_msg(doc != NULL, "%s", err.message);
    ck_assert_str_eq(hvq_json_root(doc)->str, "42");
    hvq_json_free(doc);
    doc = parse("\"\"", &err);
    ck_assert_ptr_nonnull(doc);
    ck_assert_uint_eq(hvq_json_root(doc)->len, 0);
    hvq_json_free(doc);
    hvq_json_free(NULL);
}
END_TEST

typedef struct bad_json {
    const char *text;
    size_t len;      /* 0: strlen(text) */
    const char *reason;
    size_t offset;
} bad_json;

static const bad_json bad_jsons[] = {
    {"{\"a\" 1}", 0, "expected ':'", 5},
    {"{\"a\":1,}", 0, "expected a string key", 7},
    {"{\"a\":1 \"b\":2}", 0, "expected ',' or '}'", 7},
    {"[1 2]", 0, "expected ',' or ']'", 3},
    {"[1,]", 0, "expected a value", 3},
    {"{1:2}", 0, "expected a string key", 1},
    {"", 0, "empty input", 0},
    {"   ", 0, "empty input", 3},
    {"{} x", 0, "unexpected data after the JSON value", 3},
    {"[1", 0, "unexpected end of input", 2},
    {"{\"a\":", 0, "unexpected end of input", 5},
    {"01", 0, "leading zero", 0},
    {"-", 0, "expected a digit", 1},
    {"1.", 0, "expected a digit after '.'", 2},
    {"1e", 0, "expected a digit in the exponent", 2},
    {"+1", 0, "expected a value", 0},
    {".5", 0, "expected a value", 0},
    {"NaN", 0, "expected a value", 0},
    {"tru", 0, "invalid literal", 0},
    {"nulL", 0, "invalid literal", 0},
    {"\"abc", 0, "unterminated string", 0},
    {"\"a\\\"", 0, "unterminated string", 0},
    {"\"a\x01\"", 0, "unescaped control character 0x01", 2},
    {"\"a\tb\"", 0, "unescaped control character 0x09", 2},
    {"\"\\x\"", 0, "invalid escape '\\x'", 1},
    {"\"\\u12\"", 0, "invalid \\u escape", 1},
    {"\"\\u12g4\"", 0, "invalid \\u escape", 1},
    {"\"\xff\"", 0, "invalid UTF-8", 1},
    {"\"\xc0\x80\"", 0, "invalid UTF-8", 1},         /* overlong NUL */
    {"\"\xe0\x80\xaf\"", 0, "invalid UTF-8", 1},     /* overlong '/' */
    {"\"\xed\xa0\x80\"", 0, "invalid UTF-8", 1},     /* UTF-8 surrogate */
    {"\"\xf4\x90\x80\x80\"", 0, "invalid UTF-8", 1}, /* > U+10FFFF */
    {"\"\xe2\x82\"", 0, "invalid UTF-8", 1},         /* cut sequence */
    {"\"ab\x80\"", 0, "invalid UTF-8", 3},           /* stray continuation */
    {"[1,\0 2]", 7, "expected a value, found byte 0x00", 3},
    {"\xef\xbb\xbf{}", 0, "expected a value", 0},    /* BOM */
    {"{\"a\":1}/*c*/", 0, "unexpected data", 7},
    {"[1,2,]", 0, "expected a value", 5},
    {"'a'", 0, "expected a value", 0},
};

START_TEST(json_invalid)
{
    const bad_json *b = &bad_jsons[_i];
    size_t len = b->len ? b->len : strlen(b->text);
    hvq_json_error err;
    char want[64];
    hvq_json_doc *doc = hvq_json_parse(b->text, len, 0, &err);
    ck_assert_msg(doc == NULL, "case %d parsed but should fail", _i);
    ck_assert_int_eq(err.status, HVQ_JSON_E_SYNTAX);
    th_assert_contains(err.reason, b->reason);
    ck_assert_msg(err.offset == b->offset, "case %d: offset %zu, want %zu (%s)",
                  _i, err.offset, b->offset, err.message);
    snprintf(want, sizeof want, " at byte %zu", b->offset);
    th_assert_contains(err.message, want);
    th_assert_contains(err.message, b->reason);
    /* NULL err is allowed. */
    ck_assert_ptr_null(hvq_json_parse(b->text, len, 0, NULL));
    /* hvq_json_validate says the same, word for word. */
    {
        hvq_json_error verr;
        ck_assert_int_eq(hvq_json_validate(b->text, len, &verr), -1);
        ck_assert_int_eq(verr.status, err.status);
        ck_assert_uint_eq(verr.offset, err.offset);
        ck_assert_str_eq(verr.message, err.message);
        ck_assert_int_eq(hvq_json_validate(b->text, len, NULL), -1);
    }
}
END_TEST

START_TEST(json_error_message_format)
{
    hvq_json_error err;
    const char *text = "{\"key\": 1, \"other\" 2}";
    ck_assert_ptr_null(parse(text, &err));
    ck_assert_str_eq(err.message, "expected ':', found '2' at byte 19");
    ck_assert_str_eq(err.reason, "expected ':', found '2'");
    ck_assert_uint_eq(err.offset, 19);
}
END_TEST

START_TEST(json_escapes)
{
    hvq_json_error err;
    hvq_json_doc *doc;
    const hvq_json_value *r;
    size_t len;
    const char *s;

    doc = parse("\"q\\\"b\\\\s\\/ \\b\\f\\n\\r\\t\"", &err);
    ck_assert_msg(doc != NULL, "%s", err.message);
    ck_assert_str_eq(hvq_json_root(doc)->str, "q\"b\\s/ \b\f\n\r\t");
    hvq_json_free(doc);

    /* \u escapes of 1, 2 and 3 UTF-8 bytes, upper and lower case hex. */
    doc = parse("\"\\u0041\\u00e9\\u20AC\\u00E9\"", &err);
    ck_assert_msg(doc != NULL, "%s", err.message);
    ck_assert_str_eq(hvq_json_root(doc)->str, "A\xc3\xa9\xe2\x82\xac\xc3\xa9");
    hvq_json_free(doc);

    /* Raw UTF-8 of every length passes through. */
    doc = parse("\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf\"", &err);
    ck_assert_msg(doc != NULL, "%s", err.message);
    ck_assert_uint_eq(hvq_json_root(doc)->len, 13);
    hvq_json_free(doc);

    /* \u0000 is kept in values (length counts it). */
    doc = parse("[\"a\\u0000b\"]", &err);
    ck_assert_msg(doc != NULL, "%s", err.message);
    s = hvq_json_string(hvq_json_item(hvq_json_root(doc), 0), &len);
    ck_assert_uint_eq(len, 3);
    ck_assert(memcmp(s, "a\0b", 4) == 0);
    hvq_json_free(doc);

    /* ... but refused in keys. */
    ck_assert_ptr_null(parse("{\"a\\u0000b\": 1}", &err));
    ck_assert_int_eq(err.status, HVQ_JSON_E_SYNTAX);
    th_assert_contains(err.message, "\\u0000 in an object key at byte 3");

    /* Escaped keys are decoded. */
    doc = parse("{\"\\u0061\\n\": 1}", &err);
    ck_assert_msg(doc != NULL, "%s", err.message);
    r = hvq_json_root(doc);
    ck_assert_str_eq(r->members[0].key, "a\n");
    ck_assert_uint_eq(r->members[0].key_len, 2);
    ck_assert_ptr_nonnull(hvq_json_get(r, "a\n"));
    hvq_json_free(doc);
}
END_TEST

START_TEST(json_surrogates)
{
    hvq_json_error err;
    hvq_json_doc *doc;

    doc = parse("\"\\uD83D\\uDE00\"", &err); /* U+1F600 */
    ck_assert_msg(doc != NULL, "%s", err.message);
    ck_assert_str_eq(hvq_json_root(doc)->str, "\xf0\x9f\x98\x80");
    hvq_json_free(doc);
    doc = parse("\"x\\udbff\\udfff\"", &err); /* U+10FFFF */
    ck_assert_msg(doc != NULL, "%s", err.message);
    ck_assert_str_eq(hvq_json_root(doc)->str, "x\xf4\x8f\xbf\xbf");
    hvq_json_free(doc);
    doc = parse("\"\\uD800\\uDC00\"", &err); /* U+10000 */
    ck_assert_msg(doc != NULL, "%s", err.message);
    ck_assert_str_eq(hvq_json_root(doc)->str, "\xf0\x90\x80\x80");
    hvq_json_free(doc);

    ck_assert_ptr_null(parse("\"\\uD83D\"", &err));
    th_assert_contains(err.message, "lone high surrogate \\uD83D at byte 1");
    ck_assert_ptr_null(parse("\"ab\\uDE00\"", &err));
    th_assert_contains(err.message, "lone low surrogate \\uDE00 at byte 3");
    ck_assert_ptr_null(parse("\"\\uD83Dx\"", &err));
    th_assert_contains(err.message, "lone high surrogate");
    ck_assert_ptr_null(parse("\"\\uD83D\\u0041\"", &err));
    th_assert_contains(err.message, "lone high surrogate");
    ck_assert_ptr_null(parse("\"\\uD83D\\uD83D\"", &err));
    th_assert_contains(err.message, "lone high surrogate");
    ck_assert_ptr_null(parse("{\"\\uDFFF\": 1}", &err));
    th_assert_contains(err.message, "lone low surrogate");
}
END_TEST

START_TEST(json_depth)
{
    char buf[2 * (HVQ_JSON_MAX_DEPTH + 1) + 1];
    hvq_json_error err;
    hvq_json_doc *doc;
    const hvq_json_value *v;
    int i, d;

    /* Exactly the limit: fine. */
    for (i = 0; i < HVQ_JSON_MAX_DEPTH; i++) {
        buf[i] = '[';
        buf[2 * HVQ_JSON_MAX_DEPTH - 1 - i] = ']';
    }
    doc = hvq_json_parse(buf, 2 * HVQ_JSON_MAX_DEPTH, 0, &err);
    ck_assert_msg(doc != NULL, "%s", err.message);
    for (d = 1, v = hvq_json_root(doc); hvq_json_count(v) == 1; d++)
        v = hvq_json_item(v, 0);
    ck_assert_int_eq(d, HVQ_JSON_MAX_DEPTH);
    hvq_json_free(doc);

    /* One more: refused, pointing at the opening bracket too many. */
    for (i = 0; i <= HVQ_JSON_MAX_DEPTH; i++) {
        buf[i] = '[';
        buf[2 * HVQ_JSON_MAX_DEPTH + 1 - i] = ']';
    }
    ck_assert_ptr_null(
        hvq_json_parse(buf, 2 * (HVQ_JSON_MAX_DEPTH + 1), 0, &err));
    ck_assert_int_eq(err.status, HVQ_JSON_E_DEPTH);
    ck_assert_uint_eq(err.offset, HVQ_JSON_MAX_DEPTH);
    th_assert_contains(err.message, "nesting deeper than 64 levels");
    ck_assert_int_eq(hvq_json_validate(buf, 2 * (HVQ_JSON_MAX_DEPTH + 1), &err), -1);
    ck_assert_int_eq(err.status, HVQ_JSON_E_DEPTH);
    ck_assert_uint_eq(err.offset, HVQ_JSON_MAX_DEPTH);
    ck_assert_int_eq(hvq_json_validate(buf + 1, 2 * HVQ_JSON_MAX_DEPTH, &err), 0);

    /* Objects count too; a deep unterminated input fails cleanly. */
    {
        static char deep[10000];
        memset(deep, '[', sizeof deep);
        ck_assert_ptr_null(hvq_json_parse(deep, sizeof deep, 0, &err));
        ck_assert_int_eq(err.status, HVQ_JSON_E_DEPTH);
        for (i = 0; i < 100; i++)
            memcpy(deep + 5 * i, "{\"a\":", 5);
        ck_assert_ptr_null(hvq_json_parse(deep, 500, 0, &err));
        ck_assert_int_eq(err.status, HVQ_JSON_E_DEPTH);
    }
}
END_TEST

START_TEST(json_duplicates)
{
    hvq_json_error err;
    hvq_json_doc *doc;
    const hvq_json_value *r;
    const hvq_json_member *d;
    int nomem = 7;

    doc = parse("{\"a\":1,\"b\":2,\"c\":3}", &err);
    ck_assert_ptr_nonnull(doc);
    ck_assert_ptr_null(hvq_json_object_duplicate(hvq_json_root(doc), &nomem));
    ck_assert_int_eq(nomem, 0);
    hvq_json_free(doc);

    /* Kept in order; get() returns the first; the earliest repeat wins. */
    doc = parse("{\"b\":1,\"a\":2,\"a\":3,\"b\":4,\"a\":5}", &err);
    ck_assert_ptr_nonnull(doc);
    r = hvq_json_root(doc);
    ck_assert_uint_eq(hvq_json_count(r), 5);
    ck_assert_str_eq(hvq_json_get(r, "a")->str, "2");
    d = hvq_json_object_duplicate(r, NULL);
    ck_assert_ptr_eq(d, &r->members[2]);
    ck_assert_str_eq(d->key, "a");
    ck_assert_uint_eq(d->key_offset, 13);
    hvq_json_free(doc);

    doc = parse("{\"x\":1,\"x\":2}", &err);
    ck_assert_ptr_eq(hvq_json_object_duplicate(hvq_json_root(doc), NULL),
                     &hvq_json_root(doc)->members[1]);
    hvq_json_free(doc);
    doc = parse("[1]", &err);
    ck_assert_ptr_null(hvq_json_object_duplicate(hvq_json_root(doc), NULL));
    hvq_json_free(doc);

    /* Nested objects are checked by the flag, with the key's offset. */
    ck_assert_ptr_null(hvq_json_parse(
        "{\"o\":{\"k\":1,\"k\":2}}", 19, HVQ_JSON_NO_DUPLICATES, &err));
    ck_assert_int_eq(err.status, HVQ_JSON_E_DUPLICATE);
    ck_assert_str_eq(err.message, "duplicate key 'k' at byte 12");
    doc = hvq_json_parse("{\"o\":{\"k\":1,\"l\":2}}", 19,
                         HVQ_JSON_NO_DUPLICATES, &err);
    ck_assert_ptr_nonnull(doc);
    hvq_json_free(doc);
}
END_TEST

static int64_t int_of(const char *text, int *rc)
{
    hvq_json_doc *doc = parse(text, NULL);
    int64_t v = 12345;
    ck_assert_msg(doc != NULL, "cannot parse %s", text);
    *rc = hvq_json_int64(hvq_json_root(doc), &v);
    hvq_json_free(doc);
    return v;
}

static uint64_t uint_of(const char *text, int *rc)
{
    hvq_json_doc *doc = parse(text, NULL);
    uint64_t v = 12345;
    ck_assert_msg(doc != NULL, "cannot parse %s", text);
    *rc = hvq_json_uint64(hvq_json_root(doc), &v);
    hvq_json_free(doc);
    return v;
}

START_TEST(json_int64_exact)
{
    int rc;
    ck_assert(int_of("0", &rc) == 0 && rc == 0);
    ck_assert(int_of("-0", &rc) == 0 && rc == 0);
    ck_assert(int_of("123", &rc) == 123 && rc == 0);
    ck_assert(int_of("-42", &rc) == -42 && rc == 0);
    ck_assert(int_of("9223372036854775807", &rc) == INT64_MAX && rc == 0);
    ck_assert(int_of("-9223372036854775808", &rc) == INT64_MIN && rc == 0);
    /* 2^53 + 1 is not representable as a double but is exact here. */
    ck_assert(int_of("9007199254740993", &rc) == 9007199254740993LL &&
              rc == 0);
    int_of("9223372036854775808", &rc);
    ck_assert_int_eq(rc, -1);
    int_of("-9223372036854775809", &rc);
    ck_assert_int_eq(rc, -1);
    int_of("99999999999999999999999", &rc);
    ck_assert_int_eq(rc, -1);
    int_of("1.0", &rc);
    ck_assert_int_eq(rc, -1);
    int_of("1.5", &rc);
    ck_assert_int_eq(rc, -1);
    int_of("1e3", &rc);
    ck_assert_int_eq(rc, -1);
    int_of("\"7\"", &rc);
    ck_assert_int_eq(rc, -1);
    int_of("true", &rc);
    ck_assert_int_eq(rc, -1);
    ck_assert_int_eq(hvq_json_int64(NULL, NULL), -1);

    ck_assert(uint_of("18446744073709551615", &rc) == UINT64_MAX && rc == 0);
    ck_assert(uint_of("-0", &rc) == 0 && rc == 0);
    uint_of("18446744073709551616", &rc);
    ck_assert_int_eq(rc, -1);
    uint_of("-1", &rc);
    ck_assert_int_eq(rc, -1);
    uint_of("2.0", &rc);
    ck_assert_int_eq(rc, -1);
}
END_TEST

START_TEST(json_numbers)
{
    hvq_json_doc *doc = parse("[0, -0.0, 1.5E+3, 2e-2, 1e400, -1e400, "
                              "123456789012345678901234567890]",
                              NULL);
    const hvq_json_value *r;
    double d;
    ck_assert_ptr_nonnull(doc);
    r = hvq_json_root(doc);
    ck_assert_int_eq(hvq_json_item(r, 0)->is_integer, 1);
    ck_assert_int_eq(hvq_json_item(r, 1)->is_integer, 0);
    hvq_json_double(hvq_json_item(r, 2), &d);
    ck_assert(d == 1500.0);
    ck_assert_str_eq(hvq_json_item(r, 2)->str, "1.5E+3");
    hvq_json_double(hvq_json_item(r, 3), &d);
    ck_assert(d == 0.02);
    hvq_json_double(hvq_json_item(r, 4), &d);
    ck_assert(isinf(d) && d > 0);
    hvq_json_double(hvq_json_item(r, 5), &d);
    ck_assert(isinf(d) && d < 0);
    hvq_json_double(hvq_json_item(r, 6), &d);
    ck_assert(fabs(d - 1.2345678901234568e29) < 1e15);
    ck_assert_int_eq(hvq_json_int64(hvq_json_item(r, 6), NULL), -1);
    hvq_json_free(doc);
}
END_TEST

START_TEST(json_utf8_valid)
{
    ck_assert_int_eq(hvq_json_utf8_valid("abc", 3), 1);
    ck_assert_int_eq(hvq_json_utf8_valid("a\0b", 3), 1);
    ck_assert_int_eq(hvq_json_utf8_valid("\xc3\xa9", 2), 1);
    ck_assert_int_eq(hvq_json_utf8_valid("\xc3", 1), 0);
    ck_assert_int_eq(hvq_json_utf8_valid("\xed\xbf\xbf", 3), 0);
    ck_assert_int_eq(hvq_json_utf8_valid("\xf5\x80\x80\x80", 4), 0);
    ck_assert_int_eq(hvq_json_utf8_valid(NULL, 0), 1);
}
END_TEST

/* Validation without a DOM, and a cursor walking containers by hand. */
START_TEST(json_cursor)
{
    const char *text = " {\"a\": [1, \"two\", [3, {\"x\": null}], true] ,\"b\":-0.5} ";
    hvq_json_cursor *c;
    const hvq_json_value *v;
    hvq_json_error err;
    size_t at;

    ck_assert_int_eq(hvq_json_validate(text, strlen(text), &err), 0);
    ck_assert_int_eq(err.status, HVQ_JSON_OK);
    ck_assert_int_eq(hvq_json_validate(NULL, 0, &err), -1);
    th_assert_contains(err.message, "empty input at byte 0");
    ck_assert_int_eq(hvq_json_validate("[1,2] x", 7, &err), -1);
    th_assert_contains(err.message, "unexpected data after the JSON value at byte 6");

    c = hvq_json_cursor_new(text, strlen(text));
    ck_assert_ptr_nonnull(c);
    ck_assert_int_eq(hvq_json_cursor_peek(c), '{');
    ck_assert_int_eq(hvq_json_cursor_take(c, '['), 0);
    ck_assert_int_eq(hvq_json_cursor_take(c, '{'), 1);
    v = hvq_json_cursor_value(c, &err);
    ck_assert_ptr_nonnull(v);
    ck_assert_str_eq(hvq_json_string(v, NULL), "a");
    ck_assert_int_eq(hvq_json_cursor_take(c, ':'), 1);
    at = hvq_json_cursor_pos(c);
    ck_assert_int_eq(hvq_json_cursor_take(c, '['), 1);
    v = hvq_json_cursor_value(c, &err);
    ck_assert_str_eq(v->str, "1");
    ck_assert_int_eq(hvq_json_cursor_take(c, ','), 1);
    v = hvq_json_cursor_value(c, &err);
    ck_assert_str_eq(hvq_json_string(v, NULL), "two");
    ck_assert_int_eq(hvq_json_cursor_take(c, ','), 1);
    /* a whole container as one value, then one skipped */
    v = hvq_json_cursor_value(c, &err);
    ck_assert_uint_eq(hvq_json_count(v), 2);
    ck_assert_int_eq(hvq_json_get(hvq_json_item(v, 1), "x")->type, HVQ_JSON_NULL);
    ck_assert_int_eq(hvq_json_cursor_take(c, ','), 1);
    ck_assert_int_eq(hvq_json_cursor_skip(c, &err), 0);
    ck_assert_int_eq(hvq_json_cursor_take(c, ']'), 1);
    ck_assert_int_eq(hvq_json_cursor_take(c, ','), 1);
    ck_assert_str_eq(hvq_json_cursor_value(c, &err)->str, "b");
    ck_assert_int_eq(hvq_json_cursor_take(c, ':'), 1);
    v = hvq_json_cursor_value(c, &err);
    ck_assert(v->num == -0.5);
    ck_assert_int_eq(hvq_json_cursor_take(c, '}'), 1);
    ck_assert_int_eq(hvq_json_cursor_peek(c), 0);
    ck_assert_int_eq(hvq_json_cursor_take(c, 0), 0);
    /* back to the array: skipped whole */
    hvq_json_cursor_seek(c, at);
    ck_assert_int_eq(hvq_json_cursor_skip(c, &err), 0);
    ck_assert_int_eq(hvq_json_cursor_take(c, ','), 1);
    /* a bad leaf fails with the parser's message */
    hvq_json_cursor_free(c);
    c = hvq_json_cursor_new("[01]", 4);
    ck_assert_int_eq(hvq_json_cursor_take(c, '['), 1);
    ck_assert_ptr_null(hvq_json_cursor_value(c, &err));
    th_assert_contains(err.message, "leading zero in number at byte 1");
    hvq_json_cursor_seek(c, 1);
    ck_assert_int_eq(hvq_json_cursor_skip(c, &err), -1);
    th_assert_contains(err.message, "leading zero");
    hvq_json_cursor_free(c);
    hvq_json_cursor_free(NULL);
}
END_TEST

START_TEST(json_large)
{
    /* Many members and long strings exercise the arena and stacks. */
    size_t n = 20000, i, cap = n * 32 + 64, o = 0;
    char *text = malloc(cap);
    hvq_json_doc *doc;
    const hvq_json_value *r;
    char *big;
    ck_assert_ptr_nonnull(text);
    text[o++] = '{';
    for (i = 0; i < n; i++)
        o += (size_t)snprintf(text + o, cap - o, "%s\"t%zu\":[%zu,%zu]",
                              i ? "," : "", i, i, i + 1);
    text[o++] = '}';
    doc = hvq_json_parse(text, o, HVQ_JSON_NO_DUPLICATES, NULL);
    ck_assert_ptr_nonnull(doc);
    ck_assert_int_eq(hvq_json_validate(text, o, NULL), 0);
    r = hvq_json_root(doc);
    ck_assert_uint_eq(hvq_json_count(r), n);
    ck_assert_str_eq(r->members[n - 1].key, "t19999");
    ck_assert_str_eq(hvq_json_item(r->members[n - 1].value, 1)->str, "20000");
    hvq_json_free(doc);
    free(text);

    big = malloc(1 << 20);
    ck_assert_ptr_nonnull(big);
    memset(big, 'x', 1 << 20);
    big[0] = '"';
    big[(1 << 20) - 1] = '"';
    doc = hvq_json_parse(big, 1 << 20, 0, NULL);
    ck_assert_ptr_nonnull(doc);
    ck_assert_uint_eq(hvq_json_root(doc)->len, (1 << 20) - 2);
    hvq_json_free(doc);
    ck_assert_int_eq(hvq_json_validate(big, 1 << 20, NULL), 0);
    free(big);
}
END_TEST

/* ---- typed metadata (common/meta.c) ---------------------------------------- */

START_TEST(meta_lookup)
{
    const hvq_meta meta[] = {
        {"general.architecture", "{\"gguf_type\":\"string\",\"value\":\"llama\"}"},
        {"llama.block_count", "{\"gguf_type\":\"uint32\",\"value\":22}"},
        {"format", "pt"},
        {NULL, "ignored"},
        {"untyped", "{\"value\":\"x\"}"},
    };
    size_t n = sizeof meta / sizeof meta[0];
    ck_assert_str_eq(hvq_meta_find(meta, n, "format"), "pt");
    ck_assert_ptr_null(hvq_meta_find(meta, n, "absent"));
    ck_assert_ptr_null(hvq_meta_find(meta, 2, "format")); /* only the first n */

    char buf[16];
    ck_assert_int_eq(hvq_meta_string(meta, n, "general.architecture", buf, sizeof buf), 1);
    ck_assert_str_eq(buf, "llama");
    ck_assert_int_eq(hvq_meta_string(meta, n, "general.architecture", buf, 5), 0); /* too long */
    ck_assert_str_eq(buf, "");
    ck_assert_int_eq(hvq_meta_string(meta, n, "llama.block_count", buf, sizeof buf), 0);
    ck_assert_int_eq(hvq_meta_string(meta, n, "absent", buf, sizeof buf), 0);

    hvq_json_doc *doc;
    const char *type;
    int bad;
    const hvq_json_value *v =
        hvq_meta_typed(meta, n, "llama.block_count", &doc, &type, &bad);
    ck_assert_ptr_nonnull(v);
    ck_assert_str_eq(type, "uint32");
    ck_assert_int_eq(bad, 0);
    ck_assert(v->type == HVQ_JSON_NUMBER && v->num == 22);
    hvq_json_free(doc);
    /* not typed: no value, and said so; absent: not bad */
    ck_assert_ptr_null(hvq_meta_typed(meta, n, "untyped", &doc, &type, &bad));
    ck_assert_int_eq(bad, 1);
    hvq_json_free(doc);
    ck_assert_ptr_null(hvq_meta_typed(meta, n, "format", &doc, NULL, &bad));
    ck_assert_int_eq(bad, 1);
    hvq_json_free(doc);
    ck_assert_ptr_null(hvq_meta_typed(meta, n, "absent", &doc, NULL, &bad));
    ck_assert_int_eq(bad, 0);
    ck_assert_ptr_null(doc);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("json");
    TCase *tj = tcase_create("json");
    tcase_add_test(tj, json_valid_document);
    tcase_add_loop_test(tj, json_invalid, 0,
                        (int)(sizeof bad_jsons / sizeof bad_jsons[0]));
    tcase_add_test(tj, json_error_message_format);
    tcase_add_test(tj, json_escapes);
    tcase_add_test(tj, json_surrogates);
    tcase_add_test(tj, json_depth);
    tcase_add_test(tj, json_duplicates);
    tcase_add_test(tj, json_int64_exact);
    tcase_add_test(tj, json_numbers);
    tcase_add_test(tj, json_utf8_valid);
    tcase_add_test(tj, json_cursor);
    tcase_add_test(tj, json_large);
    tcase_add_test(tj, meta_lookup);
    suite_add_tcase(s, tj);
    return s;
}

int main(void) { return th_run_suite(suite()); }
