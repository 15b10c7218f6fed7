/* Typed parameter parsing against a plugin's declared specs. */
#include "params.h"

#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

/* Formats a reason into why (which may be NULL) and returns HVQ_E_INPUT. */
static hvq_status reason(char *why, size_t why_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static hvq_status reason(char *why, size_t why_len, const char *fmt, ...)
{
    if (why && why_len > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, why_len, fmt, ap);
        va_end(ap);
    }
    return HVQ_E_INPUT;
}

static int bounded(const hvq_param_spec *spec)
{
    return !(spec->min == 0.0 && spec->max == 0.0);
}

static hvq_status parse_int(const hvq_param_spec *spec, const char *text,
                            hvq_value *out, char *why, size_t why_len)
{
    const char *p = text;
    char *end;
    long long v;

    if (*p == '+' || *p == '-')
        p++;
    if (!isdigit((unsigned char)*p))
        return reason(why, why_len, "expected an integer, got '%s'", text);
    while (isdigit((unsigned char)*p))
        p++;
    if (*p != '\0')
        return reason(why, why_len, "expected an integer, got '%s'", text);

    errno = 0;
    v = strtoll(text, &end, 10);
    if (errno == ERANGE)
        return reason(why, why_len, "%s is out of the range of a 64-bit integer",
                      text);
    if (bounded(spec)) {
        if ((double)v < spec->min)
            return reason(why, why_len, "%lld is below the minimum %.0f", v,
                          spec->min);
        if ((double)v > spec->max)
            return reason(why, why_len, "%lld is above the maximum %.0f", v,
                          spec->max);
    }
    out->i = (int64_t)v;
    out->f = (double)v;
    return HVQ_OK;
}

/* A byte count: digits, optional spaces, an optional unit (B; K, M, G, T
 * decimal; Ki, Mi, Gi, Ti binary; any case, an optional trailing B). */
static hvq_status parse_size(const hvq_param_spec *spec, const char *text,
                             hvq_value *out, char *why, size_t why_len)
{
    static const struct { const char *unit; uint64_t mult; } units[] = {
        {"", 1}, {"b", 1},
        {"k", 1000ull}, {"kb", 1000ull}, {"ki", 1ull << 10}, {"kib", 1ull << 10},
        {"m", 1000000ull}, {"mb", 1000000ull}, {"mi", 1ull << 20}, {"mib", 1ull << 20},
        {"g", 1000000000ull}, {"gb", 1000000000ull}, {"gi", 1ull << 30}, {"gib", 1ull << 30},
        {"t", 1000000000000ull}, {"tb", 1000000000000ull}, {"ti", 1ull << 40},
        {"tib", 1ull << 40},
    };
    const char *p = text;
    uint64_t v = 0;
    if (!isdigit((unsigned char)*p))
        return reason(why, why_len, "expected a size such as 4096, 500MB or 5GB, got '%s'",
                      text);
    for (; isdigit((unsigned char)*p); p++) {
        if (v > (UINT64_MAX - 9) / 10)
            return reason(why, why_len, "%s is too large", text);
        v = v * 10 + (uint64_t)(*p - '0');
    }
    while (*p == ' ')
        p++;
    char unit[8];
    size_t n = strlen(p);
    if (n >= sizeof unit)
        return reason(why, why_len, "expected a size such as 4096, 500MB or 5GB, got '%s'",
                      text);
    for (size_t i = 0; i <= n; i++)
        unit[i] = (char)tolower((unsigned char)p[i]);
    for (size_t u = 0; u < sizeof units / sizeof units[0]; u++)
        if (strcmp(unit, units[u].unit) == 0) {
            if (v > (uint64_t)INT64_MAX / units[u].mult)
                return reason(why, why_len, "%s is too large", text);
            v *= units[u].mult;
            if (bounded(spec) && ((double)v < spec->min || (double)v > spec->max))
                return reason(why, why_len, "%s (%llu bytes) is outside %.0f..%.0f", text,
                              (unsigned long long)v, spec->min, spec->max);
            out->i = (int64_t)v;
            out->f = (double)v;
            return HVQ_OK;
        }
    return reason(why, why_len, "unknown size unit '%s' in '%s' (use B, KB, MB, GB, TB or "
                  "KiB, MiB, GiB, TiB)", p, text);
}

static hvq_status parse_float(const hvq_param_spec *spec, const char *text,
                              hvq_value *out, char *why, size_t why_len)
{
    size_t n = strlen(text), k;
    int percent = 0, digits = 0;
    char buf[128];
    char *end;
    double v;

    if (n > 0 && text[n - 1] == '%') {
        percent = 1;
        n--;
    }
    /* Only plain decimal notation: no hex floats, no inf/nan, no spaces. */
    for (k = 0; k < n; k++) {
        char c = text[k];
        if (isdigit((unsigned char)c))
            digits = 1;
        else if (c != '+' && c != '-' && c != '.' && c != 'e' && c != 'E')
            break;
    }
    if (n == 0 || k < n || !digits || n >= sizeof buf)
        return reason(why, why_len, "expected a number, got '%s'", text);
    memcpy(buf, text, n);
    buf[n] = '\0';

    errno = 0;
    v = strtod(buf, &end);
    if (*end != '\0' || end == buf)
        return reason(why, why_len, "expected a number, got '%s'", text);
    if (!isfinite(v))
        return reason(why, why_len, "expected a finite number, got '%s'", text);
    if (percent)
        v /= 100.0;
    if (bounded(spec)) {
        if (v < spec->min) {
            if (percent)
                return reason(why, why_len, "%s (%g) is below the minimum %g",
                              text, v, spec->min);
            return reason(why, why_len, "%g is below the minimum %g", v,
                          spec->min);
        }
        if (v > spec->max) {
            if (percent)
                return reason(why, why_len, "%s (%g) is above the maximum %g",
                              text, v, spec->max);
            return reason(why, why_len, "%g is above the maximum %g", v,
                          spec->max);
        }
    }
    out->f = v;
    out->i = 0;
    return HVQ_OK;
}

static hvq_status parse_bool(const char *text, hvq_value *out, char *why,
                             size_t why_len)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    size_t k;

    for (k = 0; k < sizeof yes / sizeof yes[0]; k++) {
        if (strcasecmp(text, yes[k]) == 0) {
            out->i = 1;
            out->f = 1.0;
            return HVQ_OK;
        }
        if (strcasecmp(text, no[k]) == 0) {
            out->i = 0;
            out->f = 0.0;
            return HVQ_OK;
        }
    }
    return reason(why, why_len,
                  "expected a boolean (true/false, yes/no, on/off, 1/0), "
                  "got '%s'",
                  text);
}

static hvq_status parse_choice(const hvq_param_spec *spec, const char *text,
                               hvq_value *out, char *why, size_t why_len)
{
    hvq_buf b;
    const char *near;
    size_t n = 0, k;
    hvq_status st;

    if (!spec->choices)
        return reason(why, why_len, "the parameter declares no choices");
    for (k = 0; spec->choices[k]; k++) {
        if (strcmp(spec->choices[k], text) == 0) {
            out->i = (int64_t)k;
            out->f = (double)k;
            return HVQ_OK;
        }
    }
    n = k;

    hvq_buf_init(&b);
    hvq_buf_puts(&b, "expected one of: ");
    for (k = 0; k < n; k++) {
        if (k)
            hvq_buf_puts(&b, ", ");
        hvq_buf_puts(&b, spec->choices[k]);
    }
    hvq_buf_printf(&b, "; got '%s'", text);
    near = hvq_nearest(text, (const char *const *)spec->choices, n);
    /* No suggestion that shares nothing with the text ('64' -> '32'). */
    if (near && hvq_edit_distance(text, near, strlen(text)) >= strlen(text))
        near = NULL;
    if (near)
        hvq_buf_printf(&b, "; did you mean '%s'?", near);
    st = reason(why, why_len, "%s",
                b.oom || !b.data ? "not one of the declared choices" : b.data);
    hvq_buf_free(&b);
    return st;
}

hvq_status hvq_param_parse(const hvq_param_spec *spec, const char *text,
                           hvq_value *out, char *why, size_t why_len)
{
    hvq_value v;
    hvq_status st;

    if (why && why_len)
        why[0] = '\0';
    if (!spec || !out)
        return reason(why, why_len, "no parameter specification");
    if (!text)
        return reason(why, why_len, "no value given");

    memset(&v, 0, sizeof v);
    v.type = spec->type;
    v.s = text;

    switch (spec->type) {
    case HVQ_PARAM_INT:
        st = parse_int(spec, text, &v, why, why_len);
        break;
    case HVQ_PARAM_FLOAT:
        st = parse_float(spec, text, &v, why, why_len);
        break;
    case HVQ_PARAM_BOOL:
        st = parse_bool(text, &v, why, why_len);
        break;
    case HVQ_PARAM_STRING:
        st = HVQ_OK;
        break;
    case HVQ_PARAM_CHOICE:
        st = parse_choice(spec, text, &v, why, why_len);
        break;
    case HVQ_PARAM_SIZE:
        st = parse_size(spec, text, &v, why, why_len);
        break;
    case HVQ_PARAM_PATH:
        st = text[0] ? HVQ_OK
                     : reason(why, why_len, "expected a path, got an empty "
                                            "string");
        break;
    default:
        st = reason(why, why_len, "unknown parameter type %d",
                    (int)spec->type);
        break;
    }
    if (st == HVQ_OK)
        *out = v;
    return st;
}

size_t hvq_param_count(const hvq_param_spec *specs)
{
    size_t n = 0;
    if (!specs)
        return 0;
    while (specs[n].name)
        n++;
    return n;
}

long hvq_param_index(const hvq_param_spec *specs, const char *name)
{
    long k;
    if (!specs || !name)
        return -1;
    for (k = 0; specs[k].name; k++)
        if (strcmp(specs[k].name, name) == 0)
            return k;
    return -1;
}

const char *hvq_param_type_name(hvq_param_type t)
{
    switch (t) {
    case HVQ_PARAM_INT: return "int";
    case HVQ_PARAM_FLOAT: return "float";
    case HVQ_PARAM_BOOL: return "bool";
    case HVQ_PARAM_STRING: return "string";
    case HVQ_PARAM_CHOICE: return "choice";
    case HVQ_PARAM_PATH: return "path";
    case HVQ_PARAM_SIZE: return "size";
    }
    return "unknown";
}

const hvq_value *hvq_param_lookup(const hvq_params *p, const char *name)
{
    size_t k;
    if (!p || !p->specs || !p->values || !name)
        return NULL;
    for (k = 0; k < p->count && p->specs[k].name; k++)
        if (strcmp(p->specs[k].name, name) == 0)
            return &p->values[k];
    return NULL;
}
