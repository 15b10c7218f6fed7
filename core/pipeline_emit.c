/* Pipelines: the effective pipeline as YAML text (hvq_pipeline_to_yaml,
 * hvq_pipeline_record), written by hand: libyaml's emitter cannot give
 * these bytes (see the note above plain_safe), and outputs record them. */
#include "config.h"

#include "pipeline_int.h"

#include "json.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ------------------------------------------------------------------------
 * Back to YAML.
 * ---------------------------------------------------------------------- */

/* Why not libyaml's emitter (yaml_emitter_t, 0.2.5): outputs record this
 * text, so it must stay byte for byte what it was, and no configuration of
 * libyaml's emitter (indent 2, width -1, unicode on, the scalar style and
 * flow or block style chosen per node) gives these bytes back:
 *   - a block sequence inside a mapping is written indentless
 *     ("overrides:\n- match: ..."), here indented ("  - match: ...");
 *   - a flow mapping has no spaces inside its braces ("{bpw: 4.8, ...}"),
 *     here "target: { bpw: 4.8, ... }";
 *   - an empty mapping under a key is written on the key's line
 *     ("hessian: {}"), here on the next ("  hessian:\n    {}");
 *   - in double quotes it escapes U+0007/08/0B/0C/1B as \a \b \v \f \e,
 *     U+0085 as \N, U+2028/2029 as \L \P, and every character past U+FFFF
 *     as \UXXXXXXXX; here \x07 \x08 \x0B \x0C \x1B \x85 \u2028 \u2029 and
 *     the character itself (a name "caf\u00e9 \U0001F680" stays readable);
 *   - a plain scalar starting with "..." ("...x") is refused and written
 *     single-quoted; plain_safe allows it here;
 *   - it writes no comments (the header lines are ours either way).
 * tests/test_pipeline.c (emit_golden) holds this text byte for byte. */

/* Whether s can be written as a plain scalar that reads back as the same
 * text (and not as a null). */
static int plain_safe(const char *s)
{
    const char *q;
    if (!s[0] || strcmp(s, "~") == 0 || strcasecmp(s, "null") == 0)
        return 0;
    if (!((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z') ||
          (s[0] >= '0' && s[0] <= '9'))) {
        /* "-1", "+2", ".5" */
        if (!(s[0] == '-' || s[0] == '+' || s[0] == '.') ||
            !((s[1] >= '0' && s[1] <= '9') || s[1] == '.'))
            return 0;
    }
    for (q = s; *q; q++) {
        char c = *q;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-' ||
              c == '+' || c == '/' || c == '%'))
            return 0;
    }
    return 1;
}

/* Whether YAML lets code point c appear unescaped (its c-printable set,
 * without the line breaks and tab a quoted scalar would fold). */
static int yaml_printable(uint32_t c)
{
    return (c >= 0x20 && c <= 0x7E) || c == 0x85 ||
           (c >= 0xA0 && c <= 0xD7FF) || (c >= 0xE000 && c <= 0xFFFD) ||
           (c >= 0x10000 && c <= 0x10FFFF);
}

/* The code point of the UTF-8 sequence at s into *cp and its length, or 0
 * when it is not valid UTF-8 (hvq_json_utf8_valid decides; s is
 * NUL-terminated, so a short sequence stops at the NUL). */
static size_t utf8_next(const unsigned char *s, uint32_t *cp)
{
    size_t n = s[0] < 0x80 ? 1 : s[0] < 0xE0 ? 2 : s[0] < 0xF0 ? 3 : 4;
    uint32_t c = n == 1 ? s[0] : s[0] & (0x7Fu >> n);
    size_t k;
    if (!hvq_json_utf8_valid((const char *)s, n))
        return 0;
    for (k = 1; k < n; k++)
        c = (c << 6) | (s[k] & 0x3Fu);
    *cp = c;
    return n;
}

/* A YAML double-quoted scalar: reads back as exactly s (s is valid UTF-8:
 * it came from a YAML file or a checked --set). */
static void put_quoted(hvq_buf *b, const char *s)
{
    const unsigned char *q = (const unsigned char *)s;
    hvq_buf_puts(b, "\"");
    while (*q) {
        uint32_t c;
        size_t n = utf8_next(q, &c);
        if (n == 0) { /* cannot happen; keep the output readable YAML */
            hvq_buf_printf(b, "\\x%02X", *q);
            q++;
            continue;
        }
        if (c == '"')
            hvq_buf_puts(b, "\\\"");
        else if (c == '\\')
            hvq_buf_puts(b, "\\\\");
        else if (c == '\n')
            hvq_buf_puts(b, "\\n");
        else if (c == '\t')
            hvq_buf_puts(b, "\\t");
        else if (c == '\r')
            hvq_buf_puts(b, "\\r");
        else if (c == 0x85 || c == 0x2028 || c == 0x2029 || c == 0xFEFF ||
                 !yaml_printable(c))
            hvq_buf_printf(b, c < 0x100 ? "\\x%02X" : "\\u%04X", (unsigned)c);
        else
            hvq_buf_append(b, (const char *)q, n);
        q += n;
    }
    hvq_buf_puts(b, "\"");
}

static void put_scalar(hvq_buf *b, const char *s)
{
    if (plain_safe(s))
        hvq_buf_puts(b, s);
    else
        put_quoted(b, s);
}

/* "KEY: "VALUE"\n" at indent (nothing when value is NULL). */
static void put_quoted_key(hvq_buf *b, int indent, const char *key, const char *value)
{
    if (!value)
        return;
    hvq_buf_printf(b, "%*s%s: ", indent, "", key);
    put_quoted(b, value);
    hvq_buf_puts(b, "\n");
}

static void put_globs(hvq_buf *b, const char *key, char **list, size_t n)
{
    size_t k;
    hvq_buf_printf(b, "  %s: [", key);
    for (k = 0; k < n; k++) {
        if (k)
            hvq_buf_puts(b, ", ");
        put_quoted(b, list[k]);
    }
    hvq_buf_puts(b, "]\n");
}

/* The body of a stage at indent: plugin: and every parameter. */
static void put_stage(hvq_buf *b, const hvq_stage_cfg *c, const char *plugin,
                      int indent)
{
    size_t k;
    if (plugin) {
        hvq_buf_printf(b, "%*splugin: ", indent, "");
        put_scalar(b, plugin);
        hvq_buf_puts(b, "\n");
    }
    if (c->resolved && c->values) {
        const hvq_param_spec *specs = c->resolved->desc.params;
        for (k = 0; k < c->n_values; k++) {
            hvq_buf_printf(b, "%*s%s: ", indent, "", specs[k].name);
            put_scalar(b, c->values[k].s ? c->values[k].s : "");
            hvq_buf_puts(b, "\n");
        }
    } else {
        for (k = 0; k < c->n_settings; k++) {
            hvq_buf_printf(b, "%*s", indent, "");
            put_scalar(b, c->settings[k].key);
            hvq_buf_puts(b, ": ");
            put_scalar(b, c->settings[k].value);
            hvq_buf_puts(b, "\n");
        }
    }
}

/* "# plugins: ..." of a recorded pipeline: each plugin it uses (stages,
 * then overrides' swaps, each once) with its version. */
static void put_plugin_versions(hvq_buf *b, const hvq_pipeline *p, const char *src_name,
                                const char *src_version)
{
    const hvq_loaded_plugin *seen[HVQ_STAGE_COUNT * 8];
    size_t n_seen = 0, k;
    int s;
    hvq_buf_puts(b, "# plugins:");
    if (src_name)
        hvq_buf_printf(b, " source %s %s;", src_name, src_version ? src_version : "?");
    for (k = 0; k <= p->n_overrides + p->n_candidates; k++)
        for (s = 0; s < HVQ_STAGE_COUNT; s++) {
            const hvq_stage_cfg *c = k == 0                ? &p->stages[s]
                                     : k <= p->n_overrides ? &p->overrides[k - 1].stages[s]
                                                           : &p->candidates[k - 1 - p->n_overrides]
                                                                  .stages[s];
            size_t j;
            if (!c->resolved)
                continue;
            for (j = 0; j < n_seen && seen[j] != c->resolved; j++)
                ;
            if (j < n_seen)
                continue;
            if (n_seen < sizeof seen / sizeof seen[0])
                seen[n_seen++] = c->resolved;
            hvq_buf_printf(b, " %s %s %s;", hvq_pl_stage_names[s], c->resolved->desc.name,
                           c->resolved->desc.version);
        }
    if (b->len && b->data[b->len - 1] == ';')
        b->len--;
    hvq_buf_puts(b, "\n");
}

/* overrides: or candidates: (key), each entry led by label (match: or
 * name:), its stages naming the plugin only where it swaps the base's. */
static void put_overrides(hvq_buf *b, const hvq_pipeline *p, const hvq_override *list,
                          size_t n, const char *key, const char *label)
{
    if (n == 0)
        return;
    hvq_buf_printf(b, "%s:\n", key);
    for (size_t k = 0; k < n; k++) {
        const hvq_override *o = &list[k];
        hvq_buf_printf(b, "  - ");
        put_quoted_key(b, 0, label, o->match ? o->match : "");
        if (o->on_error != HVQ_ON_ERROR_UNSET)
            hvq_buf_printf(b, "    on_error: %s\n",
                           o->on_error == HVQ_ON_ERROR_ABORT ? "abort" : "passthrough");
        for (int s = 0; s < HVQ_STAGE_COUNT; s++) {
            const hvq_stage_cfg *c = &o->stages[s];
            const hvq_stage_cfg *base = &p->stages[s];
            const char *plugin = c->plugin;
            if (!c->present)
                continue;
            if (c->resolved && base->resolved && c->resolved == base->resolved)
                plugin = NULL;
            else if (c->resolved)
                plugin = c->resolved->desc.name;
            if (!plugin && c->n_settings == 0 && !(c->resolved && c->n_values)) {
                hvq_buf_printf(b, "    %s: {}\n", hvq_pl_stage_names[s]);
                continue;
            }
            hvq_buf_printf(b, "    %s:\n", hvq_pl_stage_names[s]);
            put_stage(b, c, plugin, 6);
        }
    }
}

/* The leading comment: the source file's name, or for a recorded
 * pipeline the version of hvqconv and of every plugin it uses. */
static void put_header(hvq_buf *b, const hvq_pipeline *p, int recorded,
                       const char *src_name, const char *src_version)
{
    const char *q;
    if (recorded) {
        hvq_buf_puts(b, "# effective pipeline, recorded by hvqconv " PACKAGE_VERSION
                        " (output and report paths left out)\n");
        put_plugin_versions(b, p, src_name, src_version);
        return;
    }
    hvq_buf_puts(b, "# effective pipeline");
    if (p->path && strcmp(p->path, "<none>") != 0) {
        hvq_buf_puts(b, " (from ");
        for (q = p->path; *q; q++) /* printable ASCII only in a comment */
            hvq_buf_append(b, *q >= 0x20 && *q < 0x7F ? q : "?", 1);
        hvq_buf_puts(b, ")");
    }
    hvq_buf_puts(b, "\n");
}

/* stages: each stage present, with its plugin and parameters. */
static void put_stages(hvq_buf *b, const hvq_pipeline *p)
{
    int s;
    hvq_buf_puts(b, "stages:\n");
    for (s = 0; s < HVQ_STAGE_COUNT; s++) {
        const hvq_stage_cfg *c = &p->stages[s];
        const char *plugin = c->resolved ? c->resolved->desc.name : c->plugin;
        if (!plugin && !c->present)
            continue;
        hvq_buf_printf(b, "  %s:\n", hvq_pl_stage_names[s]);
        if (!plugin && c->n_settings == 0)
            hvq_buf_puts(b, "    {}\n");
        else
            put_stage(b, c, plugin, 4);
    }
}

static void put_target(hvq_buf *b, const hvq_target_cfg *t)
{
    if (!t->present)
        return;
    if (t->bpw > 0)
        hvq_buf_printf(b, "target: { bpw: %.17g", t->bpw);
    else
        hvq_buf_printf(b, "target: { size: %llu", (unsigned long long)t->bytes);
    hvq_buf_printf(b, ", metric: %s", t->relative ? "relative" : "absolute");
    if (t->sample)
        hvq_buf_printf(b, ", sample: %llu", (unsigned long long)t->sample);
    hvq_buf_puts(b, " }\n");
}

static void put_evaluate(hvq_buf *b, const hvq_eval_cfg *e)
{
    if (!e->present)
        return;
    hvq_buf_puts(b, "evaluate:\n");
    put_quoted_key(b, 2, "tokens", e->tokens ? e->tokens : "");
    hvq_buf_printf(b, "  ctx: %lld\n", (long long)e->ctx);
    if (e->windows)
        hvq_buf_printf(b, "  windows: %lld\n", (long long)e->windows);
}

/* recorded: the text an output records (hvq_pipeline_record). */
static char *to_yaml(const hvq_pipeline *p, int recorded, const char *src_name,
                     const char *src_version)
{
    hvq_buf b;

    hvq_buf_init(&b);
    put_header(&b, p, recorded, src_name, src_version);
    put_quoted_key(&b, 0, "name", p->name);
    put_quoted_key(&b, 0, "input", p->input);
    if (!recorded) {
        put_quoted_key(&b, 0, "output", p->output);
        put_quoted_key(&b, 0, "report", p->report);
    }
    hvq_buf_printf(&b, "seed: %llu\n", (unsigned long long)p->seed);
    if (p->on_error == HVQ_ON_ERROR_PASSTHROUGH) /* abort, the default, is not written */
        hvq_buf_puts(&b, "on_error: passthrough\n");
    if (p->n_include || p->n_exclude) {
        hvq_buf_puts(&b, "select:\n");
        if (p->n_include)
            put_globs(&b, "include", p->include, p->n_include);
        if (p->n_exclude)
            put_globs(&b, "exclude", p->exclude, p->n_exclude);
    }
    put_stages(&b, p);
    put_overrides(&b, p, p->overrides, p->n_overrides, "overrides", "match");
    put_target(&b, &p->target);
    put_overrides(&b, p, p->candidates, p->n_candidates, "candidates", "name");
    if (!recorded)
        put_evaluate(&b, &p->evaluate);

    if (b.oom || !b.data) {
        hvq_buf_free(&b);
        return NULL;
    }
    return b.data;
}

char *hvq_pipeline_to_yaml(const hvq_pipeline *p) { return to_yaml(p, 0, NULL, NULL); }

char *hvq_pipeline_record(const hvq_pipeline *p, const char *source_plugin,
                          const char *source_version)
{
    return to_yaml(p, 1, source_plugin, source_version);
}
