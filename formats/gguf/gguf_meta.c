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

/* A scalar (fixed-size or string) value as bare JSON. */
static hvq_status gg_scalar_to_json(gg_reader *r, uint32_t type,
                                    const char *what, hvq_buf *out)
{
    unsigned n = gg_vtype_size(type);
    const unsigned char *p;
    char tmp[40];
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
        snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)u);
        break;
    case GG_INT8:
        snprintf(tmp, sizeof tmp, "%d", (int)(int8_t)(uint8_t)u);
        break;
    case GG_INT16:
        snprintf(tmp, sizeof tmp, "%d", (int)(int16_t)(uint16_t)u);
        break;
    case GG_INT32:
        snprintf(tmp, sizeof tmp, "%ld", (long)(int32_t)(uint32_t)u);
        break;
    case GG_INT64: {
        int64_t s;
        memcpy(&s, &u, sizeof s);
        snprintf(tmp, sizeof tmp, "%lld", (long long)s);
        break;
    }
    case GG_FLOAT32: {
        uint32_t b32 = (uint32_t)u;
        float f;
        memcpy(&f, &b32, sizeof f);
        tmp[0] = '\0';
        gg_json_float(out, (double)f, 1);
        break;
    }
    case GG_FLOAT64: {
        double d;
        memcpy(&d, &u, sizeof d);
        tmp[0] = '\0';
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
        snprintf(tmp, sizeof tmp, "%s", u ? "true" : "false");
        break;
    default:
        return gg_fail(r->ctx, HVQ_E_INTERNAL, r->path,
                       "%s: unexpected value type %u", r->where,
                       (unsigned)type);
    }
    hvq_buf_puts(out, tmp);
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
    char what[64];

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
    for (i = 0; i < count; i++) {
        if (i)
            hvq_buf_append(out, ",", 1);
        if (it == GG_ARRAY) {
            st = gg_array_to_json(r, out, depth + 1);
        } else {
            snprintf(what, sizeof what, "array item %llu",
                     (unsigned long long)i);
            st = gg_scalar_to_json(r, it, what, out);
        }
        if (st != HVQ_OK)
            return st;
        if (out->oom)
            return gg_fail(r->ctx, HVQ_E_NOMEM, r->path,
                           "%s: out of memory", r->where);
    }
    hvq_buf_puts(out, "]}");
    return HVQ_OK;
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
 * ---------------------------------------------------------------------- */
typedef struct gg_enc {
    hvq_ctx *ctx;
    const char *path;
    const char *key;
    hvq_buf *out;
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

/* "item 3 of " or "" for messages. */
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
    gg_at(at, sizeof at, item);
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
                           e->key, at, tn, s);
    }
    if (v->type != HVQ_JSON_NUMBER)
        return GG_ENC_FAIL(e,
                           "metadata '%.200s'%s: the %s value is a %s, "
                           "expected a number",
                           e->key, at, tn, hvq_json_kind(v));
    errno = 0;
    if (is_f32) {
        float f = strtof(v->str, NULL);
        uint32_t b;
        if (isinf(f))
            return GG_ENC_FAIL(e,
                               "metadata '%.200s'%s: %.60s is out of range "
                               "for float32",
                               e->key, at, v->str);
        memcpy(&b, &f, sizeof b);
        gg_put_bytes(e->out, b, 4);
    } else {
        double d = strtod(v->str, NULL);
        uint64_t b;
        if (isinf(d))
            return GG_ENC_FAIL(e,
                               "metadata '%.200s'%s: %.60s is out of range "
                               "for float64",
                               e->key, at, v->str);
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
    gg_at(at, sizeof at, item);
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
                               e->key, at, hvq_json_kind(v));
        gg_put_bytes(e->out, (uint64_t)b, 1);
        return HVQ_OK;
    }
    case GG_STRING:
        if (v->type != HVQ_JSON_STRING)
            return GG_ENC_FAIL(e,
                               "metadata '%.200s'%s: the string value is a "
                               "%s, expected a string",
                               e->key, at, hvq_json_kind(v));
        gg_put_u64(e->out, (uint64_t)v->len);
        hvq_buf_append(e->out, v->str, v->len);
        return HVQ_OK;
    case GG_UINT64: {
        uint64_t u;
        if (v->type != HVQ_JSON_NUMBER || hvq_json_uint64(v, &u) != 0)
            return GG_ENC_FAIL(e,
                               "metadata '%.200s'%s: the uint64 value %.60s "
                               "is not an integer in 0..18446744073709551615",
                               e->key, at,
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
                                   e->key, at,
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
                               e->key, at, tn,
                               v->type == HVQ_JSON_NUMBER ? v->str
                                                          : hvq_json_kind(v),
                               lo[t], hi[t]);
        gg_put_bytes(e->out, (uint64_t)x, gg_vtype_size(t));
        return HVQ_OK;
    }
    }
}

/* Checks that obj has exactly the members gguf_type, value (and item_type
 * when it is an array); gives the type id, the value and the item type. */
static hvq_status gg_enc_header(gg_enc *e, const hvq_json_value *obj,
                                int *type, const hvq_json_value **value,
                                int *item_type, long long item)
{
    const hvq_json_value *gt, *it, *val;
    const hvq_json_member *dup;
    char at[48];
    size_t i, want;
    int t, nomem;

    gg_at(at, sizeof at, item);
    if (obj->type != HVQ_JSON_OBJECT)
        return GG_ENC_FAIL(e,
                           "metadata '%.200s'%s: an item of an array of "
                           "arrays is a %s, expected an object "
                           "{\"gguf_type\":\"array\",\"item_type\":...,"
                           "\"value\":[...]}",
                           e->key, at, hvq_json_kind(obj));
    dup = hvq_json_object_duplicate(obj, &nomem);
    if (nomem)
        return gg_fail(e->ctx, HVQ_E_NOMEM, e->path, "out of memory");
    if (dup != NULL)
        return GG_ENC_FAIL(e, "metadata '%.200s'%s: \"%.40s\" appears twice",
                           e->key, at, dup->key);
    gt = hvq_json_get(obj, "gguf_type");
    if (gt == NULL || gt->type != HVQ_JSON_STRING)
        return GG_ENC_FAIL(e,
                           "metadata '%.200s'%s: \"gguf_type\" is %s%s, "
                           "expected a type name",
                           e->key, at, gt == NULL ? "" : "a ",
                           hvq_json_kind(gt));
    t = gg_vtype_by_name(gt->str);
    if (t < 0)
        return GG_ENC_FAIL(e,
                           "metadata '%.200s'%s: unknown gguf_type \"%.40s\" "
                           "(expected uint8, int8, uint16, int16, uint32, "
                           "int32, uint64, int64, float32, float64, bool, "
                           "string or array)",
                           e->key, at, gt->str);
    val = hvq_json_get(obj, "value");
    if (val == NULL)
        return GG_ENC_FAIL(e, "metadata '%.200s'%s: no \"value\"", e->key,
                           at);
    want = 2;
    *item_type = -1;
    if (t == GG_ARRAY) {
        it = hvq_json_get(obj, "item_type");
        if (it == NULL || it->type != HVQ_JSON_STRING)
            return GG_ENC_FAIL(e,
                               "metadata '%.200s'%s: an array needs "
                               "\"item_type\" naming a gguf type (it is "
                               "%s%s)",
                               e->key, at, it == NULL ? "" : "a ",
                               hvq_json_kind(it));
        *item_type = gg_vtype_by_name(it->str);
        if (*item_type < 0)
            return GG_ENC_FAIL(e,
                               "metadata '%.200s'%s: unknown item_type "
                               "\"%.40s\"",
                               e->key, at, it->str);
        if (val->type != HVQ_JSON_ARRAY)
            return GG_ENC_FAIL(e,
                               "metadata '%.200s'%s: the array's \"value\" "
                               "is a %s, expected a JSON array",
                               e->key, at, hvq_json_kind(val));
        want = 3;
    }
    if (obj->count != want) {
        for (i = 0; i < obj->count; i++) {
            const char *k = obj->members[i].key;
            if (strcmp(k, "gguf_type") != 0 && strcmp(k, "value") != 0 &&
                (t != GG_ARRAY || strcmp(k, "item_type") != 0))
                break;
        }
        return GG_ENC_FAIL(e,
                           "metadata '%.200s'%s: unexpected member "
                           "\"%.40s\" in a typed %s value",
                           e->key, at,
                           i < obj->count ? obj->members[i].key : "?",
                           gt->str);
    }
    *type = t;
    *value = val;
    return HVQ_OK;
}

/* An array value (item type, count, items) from its typed object. */
static hvq_status gg_enc_array(gg_enc *e, int item_type,
                               const hvq_json_value *arr, int depth)
{
    size_t i;
    hvq_status st;
    if (depth > GG_MAX_NESTING)
        return gg_fail(e->ctx, HVQ_E_UNSUPPORTED, e->path,
                       "metadata '%.200s': arrays nested more than %d "
                       "levels deep",
                       e->key, GG_MAX_NESTING);
    gg_put_u32(e->out, (uint32_t)item_type);
    gg_put_u64(e->out, (uint64_t)arr->count);
    for (i = 0; i < arr->count; i++) {
        const hvq_json_value *v = arr->items[i];
        if (item_type == GG_ARRAY) {
            const hvq_json_value *inner = NULL;
            int t = -1, it2 = -1;
            st = gg_enc_header(e, v, &t, &inner, &it2, (long long)i);
            if (st != HVQ_OK)
                return st;
            if (t != GG_ARRAY)
                return GG_ENC_FAIL(e,
                                   "metadata '%.200s' (array item %zu): an "
                                   "item of an array of arrays has "
                                   "gguf_type \"%s\", expected \"array\"",
                                   e->key, i, gg_vtype_name((uint32_t)t));
            st = gg_enc_array(e, it2, inner, depth + 1);
        } else {
            st = gg_enc_scalar(e, (uint32_t)item_type, v, (long long)i);
        }
        if (st != HVQ_OK)
            return st;
    }
    return HVQ_OK;
}

/* Whether text is meant as the typed encoding: a JSON object with a
 * "gguf_type" member. *doc gets the parsed document then (else NULL). */
static int gg_is_typed(const char *text, hvq_json_doc **doc, int *nomem)
{
    hvq_json_error err;
    const hvq_json_value *root;
    size_t n = strlen(text);
    *doc = NULL;
    *nomem = 0;
    /* Cheap pre-check: only an object can be typed. */
    while (n > 0 && (*text == ' ' || *text == '\t' || *text == '\n' ||
                     *text == '\r')) {
        text++;
        n--;
    }
    if (n == 0 || *text != '{')
        return 0;
    *doc = hvq_json_parse(text, n, 0, &err);
    if (*doc == NULL) {
        *nomem = err.status == HVQ_JSON_E_NOMEM;
        return 0;
    }
    root = hvq_json_root(*doc);
    if (root->type == HVQ_JSON_OBJECT && hvq_json_get(root, "gguf_type"))
        return 1;
    hvq_json_free(*doc);
    *doc = NULL;
    return 0;
}

hvq_status gg_meta_from_text(hvq_ctx *ctx, const char *path,
                             const hvq_meta *m, hvq_buf *out,
                             uint32_t *alignment)
{
    gg_enc e;
    hvq_json_doc *doc = NULL;
    const hvq_json_value *val = NULL;
    int t = -1, it = -1, nomem = 0;
    int is_align = strcmp(m->key, GG_ALIGNMENT_KEY) == 0;
    size_t klen = strlen(m->key);
    hvq_status st;

    e.ctx = ctx;
    e.path = path;
    e.key = m->key;
    e.out = out;
    if (klen == 0)
        return gg_fail(ctx, HVQ_E_INPUT, path, "a metadata key is empty");
    if (klen > GG_MAX_KEY)
        return gg_fail(ctx, HVQ_E_UNSUPPORTED, path,
                       "metadata key '%.60s...' is %zu bytes, more than "
                       "GGUF's limit of %u",
                       m->key, klen, GG_MAX_KEY);
    gg_put_u64(out, (uint64_t)klen);
    hvq_buf_append(out, m->key, klen);

    if (!gg_is_typed(m->value, &doc, &nomem)) {
        if (nomem)
            return gg_fail(ctx, HVQ_E_NOMEM, path, "out of memory");
        if (is_align)
            return gg_fail(ctx, HVQ_E_INPUT, path,
                           "metadata '%s' is the plain string \"%.40s\"; "
                           "it must be a uint32 "
                           "({\"gguf_type\":\"uint32\",\"value\":N})",
                           GG_ALIGNMENT_KEY, m->value);
        /* A plain string. */
        gg_put_u32(out, GG_STRING);
        gg_put_u64(out, (uint64_t)strlen(m->value));
        hvq_buf_append(out, m->value, strlen(m->value));
        return out->oom ? gg_fail(ctx, HVQ_E_NOMEM, path, "out of memory")
                        : HVQ_OK;
    }
    st = gg_enc_header(&e, hvq_json_root(doc), &t, &val, &it, -1);
    if (st != HVQ_OK)
        goto done;
    if (is_align) {
        int64_t a;
        if (t != GG_UINT32) {
            st = gg_fail(ctx, HVQ_E_INPUT, path,
                         "metadata '%s' has type %s; it must be a uint32",
                         GG_ALIGNMENT_KEY, gg_vtype_name((uint32_t)t));
            goto done;
        }
        if (val->type != HVQ_JSON_NUMBER || hvq_json_int64(val, &a) != 0 ||
            a <= 0 || a > 0xffffffffLL || (a & (a - 1)) != 0) {
            st = gg_fail(ctx, HVQ_E_INPUT, path,
                         "metadata '%s' is %.40s; it must be a power of two "
                         "that fits in a uint32",
                         GG_ALIGNMENT_KEY,
                         val->type == HVQ_JSON_NUMBER ? val->str
                                                      : hvq_json_kind(val));
            goto done;
        }
        *alignment = (uint32_t)a;
    }
    gg_put_u32(out, (uint32_t)t);
    if (t == GG_ARRAY)
        st = gg_enc_array(&e, it, val, 1);
    else
        st = gg_enc_scalar(&e, (uint32_t)t, val, -1);
    if (st == HVQ_OK && out->oom)
        st = gg_fail(ctx, HVQ_E_NOMEM, path, "out of memory");
done:
    hvq_json_free(doc);
    return st;
}
