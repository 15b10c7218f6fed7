/* GGUF metadata values <-> the JSON text hvqconv carries them as.
 *
 * The encoding is documented at the top of gguf.c. Reading writes each
 * value as it is in the file; writing parses that text back, checks every
 * value against its type, and emits the same bytes. Floats are printed
 * with enough digits to round-trip (float32 %.9g, float64 %.17g) and read
 * back with strtof/strtod, so every finite value survives exactly; 64-bit
 * integers are printed and parsed as integers, never through a double. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include "gguf_local.h"
#include "json.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------
 * Source: file bytes -> JSON
 * ---------------------------------------------------------------------- */
static void gg_json_float(hvq_buf *out, double v, int is_f32)
{
    char tmp[40];
    if (isnan(v)) {
        hvq_buf_puts(out, "\"nan\"");
    } else if (isinf(v)) {
        hvq_buf_puts(out, v > 0 ? "\"inf\"" : "\"-inf\"");
    } else {
        snprintf(tmp, sizeof tmp, is_f32 ? "%.9g" : "%.17g", v);
        hvq_buf_puts(out, tmp);
    }
}

static void gg_json_int(hvq_buf *out, int64_t v)
{
    if (v < 0)
        hvq_buf_append(out, "-", 1);
    hvq_buf_putu(out, v < 0 ? 0ull - (unsigned long long)v
                            : (unsigned long long)v);
}

/* A scalar (fixed-size or string) value as bare JSON. */
static hvq_status gg_scalar_to_json(gg_reader *r, uint32_t type,
                                    const char *what, hvq_buf *out)
{
    unsigned n = gg_vtype_size(type);
    const unsigned char *p;
    uint64_t u = 0;
    hvq_status st;
    unsigned i;

    if (type == GG_STRING) {
        const unsigned char *s;
        uint64_t len;
        st = gg_read_str(r, what, GG_MAX_STRING, &s, &len);
        if (st != HVQ_OK)
            return st;
        if (!hvq_json_utf8_valid((const char *)s, (size_t)len))
            return gg_fail(r->ctx, HVQ_E_UNSUPPORTED, r->path,
                           "%s: %s at byte %llu is not valid UTF-8",
                           r->where, what,
                           (unsigned long long)(r->pos - len));
        hvq_buf_json_stringn(out, (const char *)s, (size_t)len);
        return HVQ_OK;
    }
    st = gg_need(r, n, what);
    if (st != HVQ_OK)
        return st;
    p = r->p + r->pos;
    for (i = n; i-- > 0;)
        u = (u << 8) | p[i];
    switch (type) {
    case GG_UINT8:
    case GG_UINT16:
    case GG_UINT32:
    case GG_UINT64:
        hvq_buf_putu(out, (unsigned long long)u);
        break;
    case GG_INT8:
        gg_json_int(out, (int8_t)(uint8_t)u);
        break;
    case GG_INT16:
        gg_json_int(out, (int16_t)(uint16_t)u);
        break;
    case GG_INT32:
        gg_json_int(out, (int32_t)(uint32_t)u);
        break;
    case GG_INT64: {
        int64_t s;
        memcpy(&s, &u, sizeof s);
        gg_json_int(out, s);
        break;
    }
    case GG_FLOAT32: {
        uint32_t b32 = (uint32_t)u;
        float f;
        memcpy(&f, &b32, sizeof f);
        gg_json_float(out, (double)f, 1);
        break;
    }
    case GG_FLOAT64: {
        double d;
        memcpy(&d, &u, sizeof d);
        gg_json_float(out, d, 0);
        break;
    }
    case GG_BOOL:
        if (u > 1)
            return gg_fail(r->ctx, HVQ_E_INPUT, r->path,
                           "%s: %s at byte %llu is a bool of value %llu "
                           "(only 0 and 1 are valid)",
                           r->where, what, (unsigned long long)r->pos,
                           (unsigned long long)u);
        hvq_buf_puts(out, u ? "true" : "false");
        break;
    default:
        return gg_fail(r->ctx, HVQ_E_INTERNAL, r->path,
                       "%s: unexpected value type %u", r->where,
                       (unsigned)type);
    }
    r->pos += n;
    return HVQ_OK;
}

/* An array value (after its outer type tag) as the typed object. */
static hvq_status gg_array_to_json(gg_reader *r, hvq_buf *out, int depth)
{
    uint32_t it;
    uint64_t count, i, at;
    unsigned min;
    hvq_status st;
    hvq_buf what;

    if (depth > GG_MAX_NESTING)
        return gg_fail(r->ctx, HVQ_E_UNSUPPORTED, r->path,
                       "%s: arrays nested more than %d levels deep at byte "
                       "%llu",
                       r->where, GG_MAX_NESTING, (unsigned long long)r->pos);
    at = r->pos;
    st = gg_read_u32(r, "the array item type", &it);
    if (st != HVQ_OK)
        return st;
    if (gg_vtype_name(it) == NULL)
        return gg_fail(r->ctx, HVQ_E_INPUT, r->path,
                       "%s: unknown array item type %u at byte %llu",
                       r->where, (unsigned)it, (unsigned long long)at);
    at = r->pos;
    st = gg_read_u64(r, "the array length", &count);
    if (st != HVQ_OK)
        return st;
    min = gg_vtype_min_size(it);
    if (count > (r->size - r->pos) / min)
        return gg_fail(r->ctx, HVQ_E_INPUT, r->path,
                       "%s: the array of %llu %s items at byte %llu goes "
                       "beyond the end of the file (each item needs at "
                       "least %u bytes and %llu remain; truncated or "
                       "corrupt?)",
                       r->where, (unsigned long long)count,
                       gg_vtype_name(it), (unsigned long long)at, min,
                       (unsigned long long)(r->size - r->pos));
    hvq_buf_puts(out, "{\"gguf_type\":\"array\",\"item_type\":\"");
    hvq_buf_puts(out, gg_vtype_name(it));
    hvq_buf_puts(out, "\",\"value\":[");
    hvq_buf_init(&what);
    for (i = 0; i < count && st == HVQ_OK; i++) {
        if (i)
            hvq_buf_append(out, ",", 1);
        if (it == GG_ARRAY) {
            st = gg_array_to_json(r, out, depth + 1);
        } else {
            what.len = 0; /* "array item 12", without printf's cost */
            hvq_buf_puts(&what, "array item ");
            hvq_buf_putu(&what, (unsigned long long)i);
            st = gg_scalar_to_json(r, it, what.oom ? "an array item"
                                                   : what.data, out);
        }
        if (st == HVQ_OK && out->oom)
            st = gg_fail(r->ctx, HVQ_E_NOMEM, r->path,
                         "%s: out of memory", r->where);
        gg_release(r, 0);
    }
    hvq_buf_free(&what);
    if (st == HVQ_OK)
        hvq_buf_puts(out, "]}");
    return st;
}

hvq_status gg_meta_to_json(gg_reader *r, uint32_t type, hvq_buf *out)
{
    hvq_status st;
    if (type == GG_ARRAY) {
        st = gg_array_to_json(r, out, 1);
    } else {
        hvq_buf_puts(out, "{\"gguf_type\":\"");
        hvq_buf_puts(out, gg_vtype_name(type));
        hvq_buf_puts(out, "\",\"value\":");
        st = gg_scalar_to_json(r, type, "the value", out);
        hvq_buf_append(out, "}", 1);
    }
    if (st == HVQ_OK && out->oom)
        st = gg_fail(r->ctx, HVQ_E_NOMEM, r->path, "%s: out of memory",
                     r->where);
    return st;
}

/* ------------------------------------------------------------------------
 * Sink: JSON -> file bytes
 *
 * The text is never parsed into one DOM: that costs about 100 bytes a
 * value, so a tokenizer's arrays (10 MB of GGUF) took a gigabyte. It is
 * checked with hvq_json_validate, then walked with a cursor that parses
 * one leaf at a time, and the bytes go to a gg_out drained between items.
 * An array's count is written as 0 and patched once its items are known.
 * ---------------------------------------------------------------------- */
typedef struct gg_enc {
    hvq_ctx *ctx;
    const char *path;
    const char *key;
    gg_out *o;
    hvq_buf *out;            /* &o->b */
    hvq_json_cursor *cur;    /* over the value text */
} gg_enc;

#define GG_ENC_FAIL(e, ...)                                                   \
    gg_fail((e)->ctx, HVQ_E_INPUT, (e)->path, __VA_ARGS__)

static void gg_put_bytes(hvq_buf *b, uint64_t v, unsigned n)
{
    char c[8];
    unsigned i;
    for (i = 0; i < n; i++)
        c[i] = (char)(unsigned char)(v >> (8 * i));
    hvq_buf_append(b, c, n);
}

/* " (array item 3)" or "" for messages (formatted only for one). */
static const char *gg_at(char *buf, size_t len, long long item)
{
    if (item < 0)
        buf[0] = '\0';
    else
        snprintf(buf, len, " (array item %lld)", item);
    return buf;
}

/* A float from a JSON number or "nan"/"inf"/"-inf". */
static hvq_status gg_enc_float(gg_enc *e, const hvq_json_value *v,
                               int is_f32, long long item)
{
    char at[48];
    const char *tn = is_f32 ? "float32" : "float64";
    if (v->type == HVQ_JSON_STRING) {
        const char *s = v->str;
        if (strcmp(s, "nan") == 0) {
            if (is_f32)
                gg_put_bytes(e->out, 0x7fc00000u, 4);
            else
                gg_put_bytes(e->out, 0x7ff8000000000000ull, 8);
            return HVQ_OK;
        }
        if (strcmp(s, "inf") == 0 || strcmp(s, "-inf") == 0) {
            uint64_t sign = s[0] == '-';
            if (is_f32)
                gg_put_bytes(e->out, 0x7f800000u | (uint32_t)(sign << 31), 4);
            else
                gg_put_bytes(e->out, 0x7ff0000000000000ull | (sign << 63), 8);
            return HVQ_OK;
        }
        return GG_ENC_FAIL(e,
                           "metadata '%.200s'%s: the %s value is the string "
                           "\"%.40s\"; expected a number, \"nan\", \"inf\" "
                           "or \"-inf\"",
                           e->key, gg_at(at, sizeof at, item), tn, s);
    }
    if (v->type != HVQ_JSON_NUMBER)
        return GG_ENC_FAIL(e,
                           "metadata '%.200s'%s: the %s value is a %s, "
                           "expected a number",
                           e->key, gg_at(at, sizeof at, item), tn,
                           hvq_json_kind(v));
    errno = 0;
    /* strtof's float is exact as a double and back */
    double d = is_f32 ? (double)strtof(v->str, NULL) : strtod(v->str, NULL);
    if (isinf(d))
        return GG_ENC_FAIL(e,
                           "metadata '%.200s'%s: %.60s is out of range "
                           "for %s",
                           e->key, gg_at(at, sizeof at, item), v->str,
                           is_f32 ? "float32" : "float64");
    if (is_f32) {
        float f = (float)d;
        uint32_t b;
        memcpy(&b, &f, sizeof b);
        gg_put_bytes(e->out, b, 4);
    } else {
        uint64_t b;
        memcpy(&b, &d, sizeof b);
        gg_put_bytes(e->out, b, 8);
    }
    return HVQ_OK;
}

/* A bare value of scalar type t. */
static hvq_status gg_enc_scalar(gg_enc *e, uint32_t t, const hvq_json_value *v,
                                long long item)
{
    char at[48];
    const char *tn = gg_vtype_name(t);
    switch (t) {
    case GG_FLOAT32:
    case GG_FLOAT64:
        return gg_enc_float(e, v, t == GG_FLOAT32, item);
    case GG_BOOL: {
        int b = hvq_json_bool(v);
        if (b < 0)
            return GG_ENC_FAIL(e,
                               "metadata '%.200s'%s: the bool value is a "
                               "%s, expected true or false",
                               e->key, gg_at(at, sizeof at, item),
                               hvq_json_kind(v));
        gg_put_bytes(e->out, (uint64_t)b, 1);
        return HVQ_OK;
    }
    case GG_STRING:
        if (v->type != HVQ_JSON_STRING)
            return GG_ENC_FAIL(e,
                               "metadata '%.200s'%s: the string value is a "
                               "%s, expected a string",
                               e->key, gg_at(at, sizeof at, item),
                               hvq_json_kind(v));
        gg_put_u64(e->out, (uint64_t)v->len);
        hvq_buf_append(e->out, v->str, v->len);
        return HVQ_OK;
    case GG_UINT64: {
        uint64_t u;
        if (v->type != HVQ_JSON_NUMBER || hvq_json_uint64(v, &u) != 0)
            return GG_ENC_FAIL(e,
                               "metadata '%.200s'%s: the uint64 value %.60s "
                               "is not an integer in 0..18446744073709551615",
                               e->key, gg_at(at, sizeof at, item),
                               v->type == HVQ_JSON_NUMBER ? v->str
                                                          : hvq_json_kind(v));
        gg_put_u64(e->out, u);
        return HVQ_OK;
    }
    default: {
        /* The signed types and the small unsigned ones. */
        static const long long lo[] = {0, -128, 0, -32768, 0, -2147483647LL - 1};
        static const long long hi[] = {255, 127, 65535, 32767, 4294967295LL,
                                       2147483647LL};
        int64_t x;
        if (t == GG_INT64) {
            if (v->type != HVQ_JSON_NUMBER || hvq_json_int64(v, &x) != 0)
                return GG_ENC_FAIL(e,
                                   "metadata '%.200s'%s: the int64 value "
                                   "%.60s is not an integer in "
                                   "-9223372036854775808.."
                                   "9223372036854775807",
                                   e->key, gg_at(at, sizeof at, item),
                                   v->type == HVQ_JSON_NUMBER
                                       ? v->str
                                       : hvq_json_kind(v));
            gg_put_u64(e->out, (uint64_t)x);
            return HVQ_OK;
        }
        if (t > GG_INT32)
            return gg_fail(e->ctx, HVQ_E_INTERNAL, e->path,
                           "metadata '%.200s': unexpected type %u", e->key,
                           (unsigned)t);
        if (v->type != HVQ_JSON_NUMBER || hvq_json_int64(v, &x) != 0 ||
            x < lo[t] || x > hi[t])
            return GG_ENC_FAIL(e,
                               "metadata '%.200s'%s: the %s value %.60s is "
                               "not an integer in %lld..%lld",
                               e->key, gg_at(at, sizeof at, item), tn,
                               v->type == HVQ_JSON_NUMBER ? v->str
                                                          : hvq_json_kind(v),
                               lo[t], hi[t]);
        gg_put_bytes(e->out, (uint64_t)x, gg_vtype_size(t));
        return HVQ_OK;
    }
    }
}

/* The kind of the JSON value at the cursor, from its first byte (the text
 * is valid JSON), for messages. */
static const char *gg_kind_at(gg_enc *e)
{
    switch (hvq_json_cursor_peek(e->cur)) {
    case '{': return "object";
    case '[': return "array";
    case '"': return "string";
    case 't': case 'f': return "boolean";
    case 'n': return "null";
    default: return "number";
    }
}

static hvq_status gg_cursor_fail(gg_enc *e, const hvq_json_error *err)
{
    if (err->status == HVQ_JSON_E_NOMEM)
        return gg_fail(e->ctx, HVQ_E_NOMEM, e->path, "out of memory");
    return GG_ENC_FAIL(e, "metadata '%.200s': %s", e->key, err->message);
}

/* The leaf at the cursor, parsed (and passed). An array or object where a
 * leaf belongs is an error for the caller to report: it comes back
 * unparsed as an empty value of its kind in *shell. */
static hvq_status gg_leaf(gg_enc *e, const hvq_json_value **v,
                          hvq_json_value *shell)
{
    hvq_json_error err;
    int c = hvq_json_cursor_peek(e->cur);
    if (c == '[' || c == '{') {
        memset(shell, 0, sizeof *shell);
        shell->type = c == '[' ? HVQ_JSON_ARRAY : HVQ_JSON_OBJECT;
        *v = shell;
        return HVQ_OK;
    }
    *v = hvq_json_cursor_value(e->cur, &err);
    return *v != NULL ? HVQ_OK : gg_cursor_fail(e, &err);
}

/* What an object of the typed encoding holds, read member by member. A
 * repeated member is found when it is one of the three names; any other
 * name is unexpected anyway. */
typedef struct gg_typed {
    unsigned seen;             /* bit k: member k (gguf_type, item_type,
                                  value) is present */
    const char *kind[3];       /* their JSON kinds (first occurrence) */
    char name[2][48];          /* gguf_type and item_type when strings */
    int type, item_type;       /* their ids, or -1 */
    size_t value_at;           /* where "value" starts */
    long item_type_index, extra_index; /* member indexes, or -1 */
    char dup[48], extra[48];   /* the first repeat, the first other name */
    size_t end;                /* just past the object */
} gg_typed;

static const char *const gg_members[3] = {"gguf_type", "item_type", "value"};

/* One member's value: recorded when it is the first of its name, else
 * skipped. */
static hvq_status gg_walk_member(gg_enc *e, gg_typed *h, int k, int first)
{
    hvq_json_error err;
    const hvq_json_value *v;
    if (first && k < 3)
        h->kind[k] = gg_kind_at(e);
    if (first && k == 2)
        h->value_at = hvq_json_cursor_pos(e->cur);
    if (!first || k > 1 || strcmp(h->kind[k], "string") != 0)
        return hvq_json_cursor_skip(e->cur, &err) == 0
                   ? HVQ_OK
                   : gg_cursor_fail(e, &err);
    v = hvq_json_cursor_value(e->cur, &err);
    if (v == NULL)
        return gg_cursor_fail(e, &err);
    snprintf(h->name[k], sizeof h->name[k], "%s", v->str);
    if (k == 0)
        h->type = gg_vtype_by_name(v->str);
    else
        h->item_type = gg_vtype_by_name(v->str);
    return HVQ_OK;
}

/* Reads the members of the object at the cursor into h; the cursor ends
 * past the object. */
static hvq_status gg_walk_typed(gg_enc *e, gg_typed *h)
{
    hvq_json_error err;
    hvq_status st;
    long i;

    memset(h, 0, sizeof *h);
    h->type = h->item_type = -1;
    h->item_type_index = h->extra_index = -1;
    hvq_json_cursor_take(e->cur, '{');
    for (i = 0; !hvq_json_cursor_take(e->cur, '}'); i++) {
        const hvq_json_value *key;
        int k = 0;
        hvq_json_cursor_take(e->cur, ',');
        key = hvq_json_cursor_value(e->cur, &err);
        if (key == NULL)
            return gg_cursor_fail(e, &err);
        while (k < 3 && strcmp(key->str, gg_members[k]) != 0)
            k++;
        if (k < 3 && (h->seen & (1u << k)) && !h->dup[0])
            snprintf(h->dup, sizeof h->dup, "%s", key->str);
        if (k == 3 && h->extra_index < 0) {
            h->extra_index = i;
            snprintf(h->extra, sizeof h->extra, "%s", key->str);
        }
        if (k == 1 && h->item_type_index < 0)
            h->item_type_index = i;
        hvq_json_cursor_take(e->cur, ':');
        st = gg_walk_member(e, h, k, k < 3 && !(h->seen & (1u << k)));
        if (st != HVQ_OK)
            return st;
        if (k < 3)
            h->seen |= 1u << k;
    }
    h->end = hvq_json_cursor_pos(e->cur);
    return HVQ_OK;
}

/* Checks that the object h describes has exactly the members gguf_type,
 * value (and item_type when it is an array), each valid. */
static hvq_status gg_check_typed(gg_enc *e, const gg_typed *h, long long item)
{
    char at[48];
    const char *tk = h->seen & 1u ? h->kind[0] : "missing";
    const char *ik = h->seen & 2u ? h->kind[1] : "missing";
    int is_array = h->type == GG_ARRAY;

    gg_at(at, sizeof at, item);
    if (h->dup[0])
        return GG_ENC_FAIL(e, "metadata '%.200s'%s: \"%.40s\" appears twice",
                           e->key, at, h->dup);
    if (strcmp(tk, "string") != 0)
        return GG_ENC_FAIL(e,
                           "metadata '%.200s'%s: \"gguf_type\" is %s%s, "
                           "expected a type name",
                           e->key, at, h->seen & 1u ? "a " : "", tk);
    if (h->type < 0)
        return GG_ENC_FAIL(e,
                           "metadata '%.200s'%s: unknown gguf_type \"%.40s\" "
                           "(expected uint8, int8, uint16, int16, uint32, "
                           "int32, uint64, int64, float32, float64, bool, "
                           "string or array)",
                           e->key, at, h->name[0]);
    if (!(h->seen & 4u))
        return GG_ENC_FAIL(e, "metadata '%.200s'%s: no \"value\"", e->key,
                           at);
    if (is_array && strcmp(ik, "string") != 0)
        return GG_ENC_FAIL(e,
                           "metadata '%.200s'%s: an array needs "
                           "\"item_type\" naming a gguf type (it is %s%s)",
                           e->key, at, h->seen & 2u ? "a " : "", ik);
    if (is_array && h->item_type < 0)
        return GG_ENC_FAIL(e,
                           "metadata '%.200s'%s: unknown item_type \"%.40s\"",
                           e->key, at, h->name[1]);
    if (is_array && strcmp(h->kind[2], "array") != 0)
        return GG_ENC_FAIL(e,
                           "metadata '%.200s'%s: the array's \"value\" is a "
                           "%s, expected a JSON array",
                           e->key, at, h->kind[2]);
    if (h->extra_index >= 0 || (!is_array && h->item_type_index >= 0)) {
        int first_item = !is_array && h->item_type_index >= 0 &&
                         (h->extra_index < 0 ||
                          h->item_type_index < h->extra_index);
        return GG_ENC_FAIL(e,
                           "metadata '%.200s'%s: unexpected member "
                           "\"%.40s\" in a typed %s value",
                           e->key, at, first_item ? "item_type" : h->extra,
                           h->name[0]);
    }
    return HVQ_OK;
}

static hvq_status gg_enc_array(gg_enc *e, int item_type, int depth);

/* Item i of an array of arrays: an object of the typed array form. */
static hvq_status gg_enc_nested(gg_enc *e, size_t i, int depth)
{
    char at[48];
    gg_typed h;
    hvq_status st;

    if (hvq_json_cursor_peek(e->cur) != '{')
        return GG_ENC_FAIL(e,
                           "metadata '%.200s'%s: an item of an array of "
                           "arrays is a %s, expected an object "
                           "{\"gguf_type\":\"array\",\"item_type\":...,"
                           "\"value\":[...]}",
                           e->key, gg_at(at, sizeof at, (long long)i),
                           gg_kind_at(e));
    st = gg_walk_typed(e, &h);
    if (st == HVQ_OK)
        st = gg_check_typed(e, &h, (long long)i);
    if (st != HVQ_OK)
        return st;
    if (h.type != GG_ARRAY)
        return GG_ENC_FAIL(e,
                           "metadata '%.200s' (array item %zu): an item of "
                           "an array of arrays has gguf_type \"%s\", "
                           "expected \"array\"",
                           e->key, i, gg_vtype_name((uint32_t)h.type));
    hvq_json_cursor_seek(e->cur, h.value_at);
    st = gg_enc_array(e, h.item_type, depth + 1);
    hvq_json_cursor_seek(e->cur, h.end);
    return st;
}

/* The array at the cursor (item type, count, items). */
static hvq_status gg_enc_array(gg_enc *e, int item_type, int depth)
{
    uint64_t count_at;
    size_t i;
    hvq_status st;
    if (depth > GG_MAX_NESTING)
        return gg_fail(e->ctx, HVQ_E_UNSUPPORTED, e->path,
                       "metadata '%.200s': arrays nested more than %d "
                       "levels deep",
                       e->key, GG_MAX_NESTING);
    gg_put_u32(e->out, (uint32_t)item_type);
    count_at = e->o->drained + e->out->len;
    gg_put_u64(e->out, 0);
    hvq_json_cursor_take(e->cur, '[');
    for (i = 0; !hvq_json_cursor_take(e->cur, ']'); i++) {
        hvq_json_cursor_take(e->cur, ',');
        if (item_type == GG_ARRAY) {
            st = gg_enc_nested(e, i, depth);
        } else {
            const hvq_json_value *v;
            hvq_json_value shell;
            st = gg_leaf(e, &v, &shell);
            if (st == HVQ_OK)
                st = gg_enc_scalar(e, (uint32_t)item_type, v, (long long)i);
        }
        if (st == HVQ_OK)
            st = gg_out_drain(e->o, 0);
        if (st != HVQ_OK)
            return st;
    }
    return gg_out_patch_u64(e->o, count_at, (uint64_t)i);
}

/* Whether text is meant as the typed encoding: valid JSON whose root is
 * an object with a "gguf_type" member; *typed < 0 asks, 0 or 1 is the
 * answer of an earlier call on the same text. When typed, *h describes
 * the root. */
static hvq_status gg_is_typed(gg_enc *e, const char *text, gg_typed *h,
                              signed char *typed)
{
    hvq_json_error err;
    hvq_status st;
    if (*typed == 0 || hvq_json_cursor_peek(e->cur) != '{') {
        *typed = 0;
        return HVQ_OK;
    }
    if (*typed < 0 && hvq_json_validate(text, strlen(text), &err) != 0) {
        *typed = 0;
        return err.status == HVQ_JSON_E_NOMEM
                   ? gg_fail(e->ctx, HVQ_E_NOMEM, e->path, "out of memory")
                   : HVQ_OK;
    }
    st = gg_walk_typed(e, h);
    *typed = st == HVQ_OK && (h->seen & 1u);
    return st;
}

/* general.alignment: a uint32 power of two, into *alignment. */
static hvq_status gg_enc_alignment(gg_enc *e, const gg_typed *h,
                                   uint32_t *alignment)
{
    const hvq_json_value *val;
    hvq_json_value shell;
    int64_t a;
    hvq_status st;
    if (h->type != GG_UINT32)
        return gg_fail(e->ctx, HVQ_E_INPUT, e->path,
                       "metadata '%s' has type %s; it must be a uint32",
                       GG_ALIGNMENT_KEY, gg_vtype_name((uint32_t)h->type));
    hvq_json_cursor_seek(e->cur, h->value_at);
    st = gg_leaf(e, &val, &shell);
    if (st != HVQ_OK)
        return st;
    if (val->type != HVQ_JSON_NUMBER || hvq_json_int64(val, &a) != 0 ||
        a <= 0 || a > 0xffffffffLL || (a & (a - 1)) != 0)
        return gg_fail(e->ctx, HVQ_E_INPUT, e->path,
                       "metadata '%s' is %.40s; it must be a power of two "
                       "that fits in a uint32",
                       GG_ALIGNMENT_KEY,
                       val->type == HVQ_JSON_NUMBER ? val->str
                                                    : hvq_json_kind(val));
    *alignment = (uint32_t)a;
    return HVQ_OK;
}

/* The value of a typed entry: its type, then the value. */
static hvq_status gg_enc_typed(gg_enc *e, const gg_typed *h,
                               uint32_t *alignment)
{
    const hvq_json_value *val;
    hvq_json_value shell;
    hvq_status st = gg_check_typed(e, h, -1);
    if (st == HVQ_OK && strcmp(e->key, GG_ALIGNMENT_KEY) == 0)
        st = gg_enc_alignment(e, h, alignment);
    if (st != HVQ_OK)
        return st;
    gg_put_u32(e->out, (uint32_t)h->type);
    hvq_json_cursor_seek(e->cur, h->value_at);
    if (h->type == GG_ARRAY)
        return gg_enc_array(e, h->item_type, 1);
    st = gg_leaf(e, &val, &shell);
    return st != HVQ_OK ? st : gg_enc_scalar(e, (uint32_t)h->type, val, -1);
}

hvq_status gg_meta_from_text(hvq_ctx *ctx, const char *path,
                             const hvq_meta *m, gg_out *o,
                             uint32_t *alignment, signed char *typed)
{
    gg_enc e;
    gg_typed h;
    size_t klen = strlen(m->key);
    hvq_status st;

    e.ctx = ctx;
    e.path = path;
    e.key = m->key;
    e.o = o;
    e.out = &o->b;
    if (klen == 0)
        return gg_fail(ctx, HVQ_E_INPUT, path, "a metadata key is empty");
    if (klen > GG_MAX_KEY)
        return gg_fail(ctx, HVQ_E_UNSUPPORTED, path,
                       "metadata key '%.60s...' is %zu bytes, more than "
                       "GGUF's limit of %u",
                       m->key, klen, GG_MAX_KEY);
    gg_put_u64(e.out, (uint64_t)klen);
    hvq_buf_append(e.out, m->key, klen);
    e.cur = hvq_json_cursor_new(m->value, strlen(m->value));
    if (e.cur == NULL)
        return gg_fail(ctx, HVQ_E_NOMEM, path, "out of memory");
    st = gg_is_typed(&e, m->value, &h, typed);
    if (st == HVQ_OK && *typed) {
        st = gg_enc_typed(&e, &h, alignment);
    } else if (st == HVQ_OK && strcmp(m->key, GG_ALIGNMENT_KEY) == 0) {
        st = gg_fail(ctx, HVQ_E_INPUT, path,
                     "metadata '%s' is the plain string \"%.40s\"; it must "
                     "be a uint32 ({\"gguf_type\":\"uint32\",\"value\":N})",
                     GG_ALIGNMENT_KEY, m->value);
    } else if (st == HVQ_OK) {
        /* A plain string. */
        gg_put_u32(e.out, GG_STRING);
        gg_put_u64(e.out, (uint64_t)strlen(m->value));
        hvq_buf_append(e.out, m->value, strlen(m->value));
    }
    hvq_json_cursor_free(e.cur);
    return st != HVQ_OK ? st : gg_out_drain(o, 0);
}
