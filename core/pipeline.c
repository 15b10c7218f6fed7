/* Pipelines: the YAML file, command-line overrides, and validation against
 * the plugins' declared parameters.
 *
 * Loading reads the whole file, turns libyaml's event stream into a small
 * tree that keeps the 1-based line:column of every node, and walks that
 * tree into a hvq_pipeline. Every error names FILE:LINE:COL (or, for
 * --set, the argument) and what was expected. */
#include "config.h"

#include "pipeline.h"
#include "file.h"

#include "ctx.h"
#include "params.h"
#include "util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

/* ------------------------------------------------------------------------
 * Stages.
 * ---------------------------------------------------------------------- */

static const char *const stage_names[HVQ_STAGE_COUNT] = {
    "hessian", "importance", "clusterer", "residual", "writer"};

static const uint32_t stage_kinds[HVQ_STAGE_COUNT] = {
    HVQ_KIND_HESSIAN, HVQ_KIND_IMPORTANCE, HVQ_KIND_CLUSTERER,
    HVQ_KIND_RESIDUAL, HVQ_KIND_WRITER};

/* The plugin a stage uses when the pipeline names none (NULL: required). */
static const char *const stage_defaults[HVQ_STAGE_COUNT] = {
    "uniform", "magnitude", NULL, "none", NULL};

static const char *const top_keys[] = {"name",   "input",  "output",
                                       "report", "seed",   "select",
                                       "stages", "overrides", "evaluate",
                                       "target", "candidates"};
#define N_TOP_KEYS (sizeof top_keys / sizeof top_keys[0])

static const char *const select_keys[] = {"include", "exclude"};

static const char *const eval_keys[] = {"tokens", "ctx", "windows"};
#define N_EVAL_KEYS (sizeof eval_keys / sizeof eval_keys[0])

static const char *const override_keys[] = {
    "match", "hessian", "importance", "clusterer", "residual"};
#define N_OVERRIDE_KEYS (sizeof override_keys / sizeof override_keys[0])

static const char *const candidate_keys[] = {
    "name", "hessian", "importance", "clusterer", "residual"};

static const char *const target_keys[] = {"bpw", "size", "metric", "sample"};

/* Deepest nesting accepted in a pipeline file (a real one needs 5). */
#define MAX_DEPTH 32
/* Largest pipeline file read. */
#define MAX_FILE_SIZE (16u << 20)

const char *hvq_stage_name(int stage)
{
    if (stage < 0 || stage >= HVQ_STAGE_COUNT)
        return "unknown";
    return stage_names[stage];
}

uint32_t hvq_stage_kind(int stage)
{
    if (stage < 0 || stage >= HVQ_STAGE_COUNT)
        return 0;
    return stage_kinds[stage];
}

const char *hvq_stage_default_plugin(int stage)
{
    if (stage < 0 || stage >= HVQ_STAGE_COUNT)
        return NULL;
    return stage_defaults[stage];
}

static int stage_index(const char *name)
{
    int s;
    for (s = 0; s < HVQ_STAGE_COUNT; s++)
        if (strcmp(stage_names[s], name) == 0)
            return s;
    return -1;
}

/* ------------------------------------------------------------------------
 * Small helpers.
 * ---------------------------------------------------------------------- */

static char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

static hvq_status nomem(hvq_ctx *ctx)
{
    return hvq_error(ctx, HVQ_E_NOMEM, "out of memory");
}

/* Grows *arr (of elements of size elem) so that it holds at least need
 * elements; *cap tracks the capacity. Returns 0 when out of memory. */
static int grow(void **arr, size_t *cap, size_t need, size_t elem)
{
    size_t ncap;
    void *n;
    if (need <= *cap)
        return 1;
    ncap = *cap ? *cap * 2 : 4;
    while (ncap < need)
        ncap *= 2;
    n = realloc(*arr, ncap * elem);
    if (!n)
        return 0;
    *arr = n;
    *cap = ncap;
    return 1;
}

/* Appends a copy of s to a string list. */
static int list_push(char ***list, size_t *n, const char *s)
{
    char **nl;
    char *d = xstrdup(s);
    if (!d)
        return 0;
    nl = realloc(*list, (*n + 1) * sizeof **list);
    if (!nl) {
        free(d);
        return 0;
    }
    nl[(*n)++] = d;
    *list = nl;
    return 1;
}

static void list_free(char ***list, size_t *n)
{
    size_t k;
    for (k = 0; k < *n; k++)
        free((*list)[k]);
    free(*list);
    *list = NULL;
    *n = 0;
}

/* hvq_nearest, without suggestions that share nothing with the word. */
static const char *nearest(const char *word, const char *const *cand,
                           size_t n)
{
    const char *near = hvq_nearest(word, cand, n);
    size_t len = strlen(word);
    if (near && hvq_edit_distance(word, near, len) >= len)
        return NULL;
    return near;
}

/* "a, b, c" into b. */
static void join(hvq_buf *b, const char *const *items, size_t n)
{
    size_t k;
    for (k = 0; k < n; k++) {
        if (k)
            hvq_buf_puts(b, ", ");
        hvq_buf_puts(b, items[k]);
    }
}

/* Decodes one UTF-8 sequence at s into *cp; returns its length, or 0 when
 * it is not valid UTF-8 (overlong forms, surrogates and values past
 * U+10FFFF included). */
static size_t utf8_next(const unsigned char *s, uint32_t *cp)
{
    uint32_t c;
    size_t n, k;
    if (s[0] < 0x80) {
        *cp = s[0];
        return 1;
    }
    if ((s[0] & 0xE0) == 0xC0) {
        n = 2;
        c = s[0] & 0x1Fu;
    } else if ((s[0] & 0xF0) == 0xE0) {
        n = 3;
        c = s[0] & 0x0Fu;
    } else if ((s[0] & 0xF8) == 0xF0) {
        n = 4;
        c = s[0] & 0x07u;
    } else {
        return 0;
    }
    for (k = 1; k < n; k++) {
        if ((s[k] & 0xC0) != 0x80)
            return 0;
        c = (c << 6) | (s[k] & 0x3Fu);
    }
    if ((n == 2 && c < 0x80) || (n == 3 && c < 0x800) ||
        (n == 4 && c < 0x10000) || c > 0x10FFFF ||
        (c >= 0xD800 && c <= 0xDFFF))
        return 0;
    *cp = c;
    return n;
}

static int utf8_valid(const char *s)
{
    const unsigned char *q = (const unsigned char *)s;
    uint32_t cp;
    while (*q) {
        size_t n = utf8_next(q, &cp);
        if (!n)
            return 0;
        q += n;
    }
    return 1;
}

/* The location prefix of a message: "FILE:LINE:COL: ", "--set ARG: ", or
 * "FILE: " when the mark carries no position. */
static void mark_prefix(hvq_buf *b, const hvq_pipeline *p, const hvq_mark *m)
{
    if (m && m->file && m->line > 0)
        hvq_buf_printf(b, "%s:%d:%d: ", m->file, m->line, m->col);
    else if (m && m->file)
        hvq_buf_printf(b, "%s: ", m->file);
    else if (m && m->origin)
        hvq_buf_printf(b, "--set %s: ", m->origin);
    else if (p && p->path)
        hvq_buf_printf(b, "%s: ", p->path);
}

/* Sets the ctx error to the contents of b (which it frees). */
static hvq_status buf_error(hvq_ctx *ctx, hvq_status st, hvq_buf *b)
{
    if (b->oom || !b->data) {
        hvq_buf_free(b);
        return nomem(ctx);
    }
    hvq_error(ctx, st, "%s", b->data);
    hvq_buf_free(b);
    return st;
}

static hvq_status mark_error(hvq_ctx *ctx, hvq_status st,
                             const hvq_pipeline *p, const hvq_mark *m,
                             const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static hvq_status mark_error(hvq_ctx *ctx, hvq_status st,
                             const hvq_pipeline *p, const hvq_mark *m,
                             const char *fmt, ...)
{
    char msg[2048];
    hvq_buf b;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    hvq_buf_init(&b);
    mark_prefix(&b, p, m);
    hvq_buf_puts(&b, msg);
    return buf_error(ctx, st, &b);
}

/* ------------------------------------------------------------------------
 * Freeing.
 * ---------------------------------------------------------------------- */

static void stage_clear_values(hvq_stage_cfg *c)
{
    free(c->values);
    c->values = NULL;
    c->n_values = 0;
    c->resolved = NULL;
}

static void stage_free(hvq_stage_cfg *c)
{
    size_t k;
    free(c->plugin);
    for (k = 0; k < c->n_settings; k++) {
        free(c->settings[k].key);
        free(c->settings[k].value);
    }
    free(c->settings);
    stage_clear_values(c);
    memset(c, 0, sizeof *c);
}

/* Forgets everything hvq_pipeline_validate computed. */
static void invalidate(hvq_pipeline *p)
{
    size_t k;
    int s;
    for (s = 0; s < HVQ_STAGE_COUNT; s++)
        stage_clear_values(&p->stages[s]);
    for (k = 0; k < p->n_overrides; k++)
        for (s = 0; s < HVQ_STAGE_COUNT; s++)
            stage_clear_values(&p->overrides[k].stages[s]);
    for (k = 0; k < p->n_candidates; k++)
        for (s = 0; s < HVQ_STAGE_COUNT; s++)
            stage_clear_values(&p->candidates[k].stages[s]);
}

static void overrides_free(hvq_override *o, size_t n)
{
    size_t k;
    int s;
    for (k = 0; k < n; k++) {
        free(o[k].match);
        for (s = 0; s < HVQ_STAGE_COUNT; s++)
            stage_free(&o[k].stages[s]);
    }
    free(o);
}

void hvq_pipeline_free(hvq_pipeline *p)
{
    int s;
    if (!p)
        return;
    free(p->path);
    free(p->dir);
    free(p->name);
    free(p->input);
    free(p->output);
    free(p->report);
    list_free(&p->include, &p->n_include);
    list_free(&p->exclude, &p->n_exclude);
    for (s = 0; s < HVQ_STAGE_COUNT; s++)
        stage_free(&p->stages[s]);
    overrides_free(p->overrides, p->n_overrides);
    overrides_free(p->candidates, p->n_candidates);
    list_free(&p->set_args, &p->n_set_args);
    free(p->evaluate.tokens);
    free(p);
}

static hvq_pipeline *pipeline_alloc(const char *path)
{
    hvq_pipeline *p = calloc(1, sizeof *p);
    const char *slash;
    if (!p)
        return NULL;
    p->path = xstrdup(path);
    slash = strrchr(path, '/');
    if (!slash)
        p->dir = xstrdup(".");
    else if (slash == path)
        p->dir = xstrdup("/");
    else {
        p->dir = malloc((size_t)(slash - path) + 1);
        if (p->dir) {
            memcpy(p->dir, path, (size_t)(slash - path));
            p->dir[slash - path] = '\0';
        }
    }
    if (!p->path || !p->dir) {
        hvq_pipeline_free(p);
        return NULL;
    }
    return p;
}

hvq_status hvq_pipeline_new(hvq_ctx *ctx, hvq_pipeline **out)
{
    *out = pipeline_alloc("<none>");
    return *out ? HVQ_OK : nomem(ctx);
}

/* Adds (or replaces) a setting of a stage. Copies key and value. */
static hvq_status stage_set(hvq_ctx *ctx, hvq_stage_cfg *c, const char *key,
                            const char *value, const hvq_mark *key_mark,
                            const hvq_mark *value_mark, int replace)
{
    hvq_setting *ns;
    char *k = NULL, *v;
    size_t i;

    v = xstrdup(value);
    if (!v)
        return nomem(ctx);
    if (replace) {
        for (i = 0; i < c->n_settings; i++) {
            if (strcmp(c->settings[i].key, key) == 0) {
                free(c->settings[i].value);
                c->settings[i].value = v;
                c->settings[i].key_mark = *key_mark;
                c->settings[i].value_mark = *value_mark;
                return HVQ_OK;
            }
        }
    }
    k = xstrdup(key);
    ns = k ? realloc(c->settings, (c->n_settings + 1) * sizeof *ns) : NULL;
    if (!ns) {
        free(k);
        free(v);
        return nomem(ctx);
    }
    c->settings = ns;
    ns[c->n_settings].key = k;
    ns[c->n_settings].value = v;
    ns[c->n_settings].key_mark = *key_mark;
    ns[c->n_settings].value_mark = *value_mark;
    c->n_settings++;
    return HVQ_OK;
}

/* Seeds are decimal, unsigned, 64-bit. */
static int parse_seed(const char *text, uint64_t *out)
{
    const char *q;
    unsigned long long v;
    char *end;
    if (!*text)
        return 0;
    for (q = text; *q; q++)
        if (*q < '0' || *q > '9')
            return 0;
    errno = 0;
    v = strtoull(text, &end, 10);
    if (errno == ERANGE || *end)
        return 0;
    *out = (uint64_t)v;
    return 1;
}

/* evaluate.ctx and evaluate.windows: a decimal integer in [min, max]. */
static int parse_eval_int(const char *text, int64_t min, int64_t max,
                          int64_t *out)
{
    uint64_t v;
    if (!parse_seed(text, &v) || v < (uint64_t)min || v > (uint64_t)max)
        return 0;
    *out = (int64_t)v;
    return 1;
}

/* The range of evaluate.KEY, for messages and checks. */
static void eval_range(const char *key, int64_t *min, int64_t *max)
{
    if (strcmp(key, "ctx") == 0) {
        *min = 2;
        *max = HVQ_EVAL_MAX_CTX;
    } else {
        *min = 1;
        *max = HVQ_EVAL_MAX_WINDOWS;
    }
}

/* ------------------------------------------------------------------------
 * YAML to a tree with positions.
 * ---------------------------------------------------------------------- */

enum { YN_SCALAR, YN_SEQ, YN_MAP };

typedef struct ynode {
    int kind;
    char *text;         /* scalars */
    int plain;          /* a plain (unquoted) scalar */
    hvq_mark mark;
    struct ynode **kids; /* sequences: items; mappings: key, value, ... */
    size_t n, cap;
} ynode;

static void ynode_free(ynode *n)
{
    size_t k;
    if (!n)
        return;
    for (k = 0; k < n->n; k++)
        ynode_free(n->kids[k]);
    free(n->kids);
    free(n->text);
    free(n);
}

typedef struct loader {
    hvq_ctx *ctx;
    hvq_pipeline *p;
    yaml_parser_t parser;
    unsigned char *buf;
    size_t len;
} loader;

static hvq_mark mark_of(const loader *L, yaml_mark_t m)
{
    hvq_mark r;
    r.file = L->p->path;
    r.origin = NULL;
    r.line = (int)m.line + 1;
    r.col = (int)m.column + 1;
    return r;
}

/* libyaml's own error, with its position and problem text. */
static hvq_status yaml_failure(loader *L)
{
    yaml_parser_t *ps = &L->parser;
    const char *problem = ps->problem ? ps->problem : "unknown error";
    hvq_mark m;
    hvq_buf b;

    if (ps->error == YAML_MEMORY_ERROR)
        return nomem(L->ctx);

    hvq_buf_init(&b);
    if (ps->error == YAML_READER_ERROR) {
        /* The reader reports a byte offset: turn it into line:col. */
        size_t k, off = ps->problem_offset;
        m.file = L->p->path;
        m.origin = NULL;
        m.line = 1;
        m.col = 1;
        for (k = 0; k < off && k < L->len; k++) {
            if (L->buf[k] == '\n') {
                m.line++;
                m.col = 1;
            } else if ((L->buf[k] & 0xC0) != 0x80) {
                m.col++;
            }
        }
        mark_prefix(&b, L->p, &m);
        hvq_buf_printf(&b, "invalid YAML text: %s", problem);
        if (ps->problem_value != -1)
            hvq_buf_printf(&b, " (byte 0x%02X)", (unsigned)ps->problem_value);
        return buf_error(L->ctx, HVQ_E_INPUT, &b);
    }

    m = mark_of(L, ps->problem_mark);
    mark_prefix(&b, L->p, &m);
    hvq_buf_printf(&b, "YAML syntax error: %s", problem);
    if (ps->context)
        hvq_buf_printf(&b, " (%s at line %d, column %d)", ps->context,
                       (int)ps->context_mark.line + 1,
                       (int)ps->context_mark.column + 1);
    return buf_error(L->ctx, HVQ_E_INPUT, &b);
}

static hvq_status next_event(loader *L, yaml_event_t *ev)
{
    if (!yaml_parser_parse(&L->parser, ev))
        return yaml_failure(L);
    return HVQ_OK;
}

/* Builds the node that starts with ev (consumed) into *out. */
static hvq_status build_node(loader *L, yaml_event_t *ev, int depth,
                             ynode **out)
{
    yaml_event_type_t end_type;
    const yaml_char_t *anchor = NULL;
    hvq_mark m = mark_of(L, ev->start_mark);
    ynode *n;
    hvq_status st;

    *out = NULL;
    switch (ev->type) {
    case YAML_ALIAS_EVENT:
        yaml_event_delete(ev);
        return mark_error(L->ctx, HVQ_E_INPUT, L->p, &m,
                          "YAML anchors and aliases are not supported in a "
                          "pipeline");
    case YAML_SCALAR_EVENT:
        anchor = ev->data.scalar.anchor;
        break;
    case YAML_SEQUENCE_START_EVENT:
        anchor = ev->data.sequence_start.anchor;
        break;
    case YAML_MAPPING_START_EVENT:
        anchor = ev->data.mapping_start.anchor;
        break;
    default:
        yaml_event_delete(ev);
        return mark_error(L->ctx, HVQ_E_INTERNAL, L->p, &m,
                          "unexpected YAML event %d", (int)ev->type);
    }
    if (anchor) {
        yaml_event_delete(ev);
        return mark_error(L->ctx, HVQ_E_INPUT, L->p, &m,
                          "YAML anchors and aliases are not supported in a "
                          "pipeline");
    }
    if (depth > MAX_DEPTH) {
        yaml_event_delete(ev);
        return mark_error(L->ctx, HVQ_E_INPUT, L->p, &m,
                          "nesting too deep for a pipeline");
    }

    n = calloc(1, sizeof *n);
    if (!n) {
        yaml_event_delete(ev);
        return nomem(L->ctx);
    }
    n->mark = m;

    if (ev->type == YAML_SCALAR_EVENT) {
        size_t len = ev->data.scalar.length;
        n->kind = YN_SCALAR;
        n->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
        if (memchr(ev->data.scalar.value, '\0', len)) {
            yaml_event_delete(ev);
            ynode_free(n);
            return mark_error(L->ctx, HVQ_E_INPUT, L->p, &m,
                              "a NUL character is not allowed in a value");
        }
        n->text = malloc(len + 1);
        if (!n->text) {
            yaml_event_delete(ev);
            ynode_free(n);
            return nomem(L->ctx);
        }
        memcpy(n->text, ev->data.scalar.value, len);
        n->text[len] = '\0';
        yaml_event_delete(ev);
        *out = n;
        return HVQ_OK;
    }

    if (ev->type == YAML_SEQUENCE_START_EVENT) {
        n->kind = YN_SEQ;
        end_type = YAML_SEQUENCE_END_EVENT;
    } else {
        n->kind = YN_MAP;
        end_type = YAML_MAPPING_END_EVENT;
    }
    yaml_event_delete(ev);

    for (;;) {
        yaml_event_t child_ev;
        ynode *child;
        st = next_event(L, &child_ev);
        if (st != HVQ_OK) {
            ynode_free(n);
            return st;
        }
        if (child_ev.type == end_type) {
            yaml_event_delete(&child_ev);
            break;
        }
        st = build_node(L, &child_ev, depth + 1, &child);
        if (st != HVQ_OK) {
            ynode_free(n);
            return st;
        }
        if (!grow((void **)&n->kids, &n->cap, n->n + 1, sizeof *n->kids)) {
            ynode_free(child);
            ynode_free(n);
            return nomem(L->ctx);
        }
        n->kids[n->n++] = child;
    }
    *out = n;
    return HVQ_OK;
}

/* Parses the buffer into one document's root node; *root is NULL for an
 * empty stream. */
static hvq_status parse_document(loader *L, ynode **root)
{
    yaml_event_t ev;
    hvq_status st;

    *root = NULL;
    st = next_event(L, &ev); /* STREAM-START */
    if (st != HVQ_OK)
        return st;
    yaml_event_delete(&ev);

    st = next_event(L, &ev);
    if (st != HVQ_OK)
        return st;
    if (ev.type == YAML_STREAM_END_EVENT) {
        yaml_event_delete(&ev);
        return HVQ_OK;
    }
    yaml_event_delete(&ev); /* DOCUMENT-START */

    st = next_event(L, &ev);
    if (st != HVQ_OK)
        return st;
    st = build_node(L, &ev, 0, root);
    if (st != HVQ_OK)
        return st;

    st = next_event(L, &ev); /* DOCUMENT-END */
    if (st != HVQ_OK)
        goto fail;
    yaml_event_delete(&ev);

    st = next_event(L, &ev);
    if (st != HVQ_OK)
        goto fail;
    if (ev.type == YAML_DOCUMENT_START_EVENT) {
        hvq_mark m = mark_of(L, ev.start_mark);
        yaml_event_delete(&ev);
        st = mark_error(L->ctx, HVQ_E_INPUT, L->p, &m,
                        "a second YAML document; a pipeline file holds "
                        "exactly one");
        goto fail;
    }
    yaml_event_delete(&ev);
    return HVQ_OK;

fail:
    ynode_free(*root);
    *root = NULL;
    return st;
}

/* ------------------------------------------------------------------------
 * The tree to a pipeline.
 * ---------------------------------------------------------------------- */

static const char *kind_name(const ynode *n)
{
    switch (n->kind) {
    case YN_SCALAR: return "a scalar";
    case YN_SEQ: return "a sequence";
    default: return "a mapping";
    }
}

/* A plain empty, ~ or null scalar. */
static int is_null(const ynode *n)
{
    if (n->kind != YN_SCALAR || !n->plain)
        return 0;
    return !n->text[0] || strcmp(n->text, "~") == 0 ||
           strcmp(n->text, "null") == 0 || strcmp(n->text, "Null") == 0 ||
           strcmp(n->text, "NULL") == 0;
}

typedef struct keyref {
    const char *text;
    size_t idx; /* position in the mapping's kids */
} keyref;

static int keyref_cmp(const void *a, const void *b)
{
    const keyref *x = a, *y = b;
    int c = strcmp(x->text, y->text);
    if (c)
        return c;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* Keys are scalars and unique. Sorting keeps this O(n log n) whatever the
 * size of the mapping; the duplicate reported is the first one in the
 * file. */
static hvq_status check_keys(loader *L, const ynode *map)
{
    size_t i, n = map->n / 2, best = (size_t)-1, first = 0;
    keyref *refs;

    for (i = 0; i < map->n; i += 2) {
        const ynode *k = map->kids[i];
        if (k->kind != YN_SCALAR)
            return mark_error(L->ctx, HVQ_E_INPUT, L->p, &k->mark,
                              "a mapping key must be a scalar, not %s",
                              kind_name(k));
    }
    if (n < 2)
        return HVQ_OK;
    refs = malloc(n * sizeof *refs);
    if (!refs)
        return nomem(L->ctx);
    for (i = 0; i < n; i++) {
        refs[i].text = map->kids[2 * i]->text;
        refs[i].idx = 2 * i;
    }
    qsort(refs, n, sizeof *refs, keyref_cmp);
    for (i = 1; i < n; i++) {
        if (strcmp(refs[i].text, refs[i - 1].text) == 0 &&
            (i < 2 || strcmp(refs[i - 1].text, refs[i - 2].text) != 0) &&
            refs[i].idx < best) {
            best = refs[i].idx;
            first = refs[i - 1].idx;
        }
    }
    free(refs);
    if (best != (size_t)-1) {
        const ynode *k = map->kids[best], *o = map->kids[first];
        return mark_error(L->ctx, HVQ_E_INPUT, L->p, &k->mark,
                          "duplicate key '%s' (first at line %d, column %d)",
                          k->text, o->mark.line, o->mark.col);
    }
    return HVQ_OK;
}

/* "unknown key 'x'[ in 'where']; did you mean 'y'?" or a list of the valid
 * keys when none is close. */
static hvq_status unknown_key(loader *L, const ynode *k, const char *what,
                              const char *where, const char *const *valid,
                              size_t n)
{
    const char *near = nearest(k->text, valid, n);
    hvq_buf b;
    hvq_buf_init(&b);
    mark_prefix(&b, L->p, &k->mark);
    hvq_buf_printf(&b, "unknown %s '%s'%s", what, k->text, where);
    if (near) {
        hvq_buf_printf(&b, "; did you mean '%s'?", near);
    } else {
        hvq_buf_printf(&b, " (valid %ss: ", what);
        join(&b, valid, n);
        hvq_buf_puts(&b, ")");
    }
    return buf_error(L->ctx, HVQ_E_INPUT, &b);
}

static hvq_status want_scalar(loader *L, const ynode *v, const char *name)
{
    if (v->kind == YN_SCALAR)
        return HVQ_OK;
    return mark_error(L->ctx, HVQ_E_INPUT, L->p, &v->mark,
                      "'%s' must be a scalar, not %s", name, kind_name(v));
}

/* name, input, output, report: a scalar; null leaves it unset. */
static hvq_status load_string(loader *L, const ynode *v, const char *name,
                              char **dst, hvq_mark *mark)
{
    hvq_status st = want_scalar(L, v, name);
    if (st != HVQ_OK)
        return st;
    free(*dst);
    *dst = NULL;
    if (mark)
        *mark = v->mark;
    if (is_null(v))
        return HVQ_OK;
    *dst = xstrdup(v->text);
    return *dst ? HVQ_OK : nomem(L->ctx);
}

/* select.include / select.exclude: a glob or a sequence of globs. */
static hvq_status load_globs(loader *L, const ynode *v, const char *name,
                             char ***list, size_t *n)
{
    size_t k;
    if (v->kind == YN_MAP)
        return mark_error(L->ctx, HVQ_E_INPUT, L->p, &v->mark,
                          "'select.%s' must be a glob or a sequence of globs, "
                          "not a mapping",
                          name);
    if (v->kind == YN_SCALAR) {
        if (is_null(v))
            return HVQ_OK;
        return list_push(list, n, v->text) ? HVQ_OK : nomem(L->ctx);
    }
    for (k = 0; k < v->n; k++) {
        const ynode *it = v->kids[k];
        if (it->kind != YN_SCALAR)
            return mark_error(L->ctx, HVQ_E_INPUT, L->p, &it->mark,
                              "each entry of 'select.%s' must be a glob, "
                              "not %s",
                              name, kind_name(it));
        if (!list_push(list, n, it->text))
            return nomem(L->ctx);
    }
    return HVQ_OK;
}

static hvq_status load_select(loader *L, const ynode *v)
{
    size_t i;
    hvq_status st;
    if (is_null(v))
        return HVQ_OK;
    if (v->kind != YN_MAP)
        return mark_error(L->ctx, HVQ_E_INPUT, L->p, &v->mark,
                          "'select' must be a mapping, not %s", kind_name(v));
    st = check_keys(L, v);
    if (st != HVQ_OK)
        return st;
    for (i = 0; i < v->n; i += 2) {
        const ynode *k = v->kids[i], *val = v->kids[i + 1];
        if (strcmp(k->text, "include") == 0)
            st = load_globs(L, val, "include", &L->p->include,
                            &L->p->n_include);
        else if (strcmp(k->text, "exclude") == 0)
            st = load_globs(L, val, "exclude", &L->p->exclude,
                            &L->p->n_exclude);
        else
            st = unknown_key(L, k, "key", " in 'select'", select_keys, 2);
        if (st != HVQ_OK)
            return st;
    }
    return HVQ_OK;
}

/* One stage: a plugin name, or a mapping with plugin: and parameters. */
static hvq_status load_stage(loader *L, hvq_stage_cfg *c, int s,
                             const ynode *key, const ynode *v)
{
    size_t i;
    hvq_status st;

    c->present = 1;
    c->mark = key->mark;
    if (v->kind == YN_SEQ || (v->kind == YN_SCALAR && !v->text[0]) ||
        is_null(v))
        return mark_error(L->ctx, HVQ_E_INPUT, L->p, &v->mark,
                          "stage '%s' must be a plugin name or a mapping with "
                          "'plugin:', not %s",
                          stage_names[s],
                          v->kind == YN_SEQ ? "a sequence" : "empty");
    if (v->kind == YN_SCALAR) {
        c->plugin = xstrdup(v->text);
        c->mark = v->mark;
        return c->plugin ? HVQ_OK : nomem(L->ctx);
    }
    st = check_keys(L, v);
    if (st != HVQ_OK)
        return st;
    for (i = 0; i < v->n; i += 2) {
        const ynode *k = v->kids[i], *val = v->kids[i + 1];
        if (strcmp(k->text, "plugin") == 0) {
            if (val->kind != YN_SCALAR || is_null(val) || !val->text[0])
                return mark_error(L->ctx, HVQ_E_INPUT, L->p, &val->mark,
                                  "'plugin' of stage '%s' must be a plugin "
                                  "name, not %s",
                                  stage_names[s],
                                  val->kind != YN_SCALAR ? kind_name(val)
                                                         : "empty");
            c->plugin = xstrdup(val->text);
            if (!c->plugin)
                return nomem(L->ctx);
            c->mark = val->mark;
            continue;
        }
        if (val->kind != YN_SCALAR)
            return mark_error(L->ctx, HVQ_E_INPUT, L->p, &val->mark,
                              "parameter '%s' of stage '%s' must be a scalar, "
                              "not %s",
                              k->text, stage_names[s], kind_name(val));
        st = stage_set(L->ctx, c, k->text, val->text, &k->mark, &val->mark, 0);
        if (st != HVQ_OK)
            return st;
    }
    return HVQ_OK;
}

static hvq_status load_stages(loader *L, const ynode *v)
{
    size_t i;
    hvq_status st;
    if (is_null(v))
        return HVQ_OK;
    if (v->kind != YN_MAP)
        return mark_error(L->ctx, HVQ_E_INPUT, L->p, &v->mark,
                          "'stages' must be a mapping, not %s", kind_name(v));
    st = check_keys(L, v);
    if (st != HVQ_OK)
        return st;
    for (i = 0; i < v->n; i += 2) {
        const ynode *k = v->kids[i];
        int s = stage_index(k->text);
        if (s < 0)
            return unknown_key(L, k, "stage", "", stage_names,
                               HVQ_STAGE_COUNT);
        st = load_stage(L, &L->p->stages[s], s, k, v->kids[i + 1]);
        if (st != HVQ_OK)
            return st;
    }
    return HVQ_OK;
}

/* An entry of overrides: (cand 0; match: GLOB required) or of candidates:
 * (cand 1; name: optional, "cN" by default for the N-th, from 1). */
static hvq_status load_override(loader *L, hvq_override *o, const ynode *v,
                                int cand, size_t index)
{
    const char *const *keys = cand ? candidate_keys : override_keys;
    const char *label = cand ? "name" : "match";
    size_t i, n_keys = cand ? sizeof candidate_keys / sizeof *candidate_keys
                            : N_OVERRIDE_KEYS;
    hvq_status st;

    o->mark = v->mark;
    if (v->kind != YN_MAP)
        return mark_error(L->ctx, HVQ_E_INPUT, L->p, &v->mark,
                          cand ? "each entry of 'candidates' must be a mapping "
                                 "of stages (clusterer:, residual:, ...), not %s"
                               : "each entry of 'overrides' must be a mapping "
                                 "with 'match:', not %s",
                          kind_name(v));
    st = check_keys(L, v);
    if (st != HVQ_OK)
        return st;
    for (i = 0; i < v->n; i += 2) {
        const ynode *k = v->kids[i], *val = v->kids[i + 1];
        int s;
        if (strcmp(k->text, label) == 0) {
            if (val->kind != YN_SCALAR || is_null(val) || !val->text[0])
                return mark_error(L->ctx, HVQ_E_INPUT, L->p, &val->mark,
                                  "'%s' must be %s, not %s", label,
                                  cand ? "a name" : "a glob",
                                  val->kind != YN_SCALAR ? kind_name(val)
                                                         : "empty");
            o->match = xstrdup(val->text);
            if (!o->match)
                return nomem(L->ctx);
            o->mark = k->mark;
            continue;
        }
        s = stage_index(k->text);
        if (s == HVQ_STAGE_WRITER)
            return mark_error(L->ctx, HVQ_E_INPUT, L->p, &k->mark,
                              "stage 'writer' may not be %s per tensor",
                              cand ? "chosen" : "overridden");
        if (s < 0)
            return unknown_key(L, k, "key", cand ? " in candidate" : " in override",
                               keys, n_keys);
        st = load_stage(L, &o->stages[s], s, k, val);
        if (st != HVQ_OK)
            return st;
    }
    if (!o->match && !cand)
        return mark_error(L->ctx, HVQ_E_INPUT, L->p, &v->mark,
                          "override without 'match: GLOB'");
    if (!o->match) {
        char name[32];
        snprintf(name, sizeof name, "c%zu", index + 1);
        if (!(o->match = xstrdup(name)))
            return nomem(L->ctx);
    }
    return HVQ_OK;
}

/* overrides: (cand 0) or candidates: (cand 1), a sequence of mappings. */
static hvq_status load_overrides(loader *L, const ynode *v, int cand)
{
    hvq_override **list = cand ? &L->p->candidates : &L->p->overrides;
    size_t *n = cand ? &L->p->n_candidates : &L->p->n_overrides;
    size_t i, j;
    hvq_status st;
    if (is_null(v))
        return HVQ_OK;
    if (v->kind != YN_SEQ)
        return mark_error(L->ctx, HVQ_E_INPUT, L->p, &v->mark,
                          "'%s' must be a sequence, not %s",
                          cand ? "candidates" : "overrides", kind_name(v));
    if (v->n == 0)
        return HVQ_OK;
    *list = calloc(v->n, sizeof **list);
    if (!*list)
        return nomem(L->ctx);
    for (i = 0; i < v->n; i++) {
        *n = i + 1;
        st = load_override(L, &(*list)[i], v->kids[i], cand, i);
        if (st != HVQ_OK)
            return st;
        for (j = 0; cand && j < i; j++)
            if (strcmp((*list)[j].match, (*list)[i].match) == 0)
                return mark_error(L->ctx, HVQ_E_INPUT, L->p, &(*list)[i].mark,
                                  "two candidates are named '%s'", (*list)[i].match);
    }
    return HVQ_OK;
}

/* target.bpw / target.size / target.metric from text: bpw in (0, 64],
 * size a byte count ("900MB", "2GiB"), metric relative or absolute. why
 * gets the reason on failure. */
static int parse_target(hvq_target_cfg *t, const char *key, const char *text,
                        char *why, size_t why_len)
{
    static const hvq_param_spec size_spec = {"size", HVQ_PARAM_SIZE, NULL, 0, 0, NULL, NULL};
    if (strcmp(key, "sample") == 0) {
        char *end;
        unsigned long long v = strtoull(text, &end, 10);
        if (end == text || *end || text[0] == '-' || v > (1ull << 40)) {
            snprintf(why, why_len, "'target.sample' must be a number of rows (0: whole "
                     "tensors), got '%s'", text);
            return 0;
        }
        t->sample = v;
        return 1;
    }
    if (strcmp(key, "metric") == 0) {
        if (strcmp(text, "relative") != 0 && strcmp(text, "absolute") != 0) {
            snprintf(why, why_len, "'target.metric' must be relative or absolute, got '%s'",
                     text);
            return 0;
        }
        t->relative = text[0] == 'r';
        return 1;
    }
    if (strcmp(key, "bpw") == 0) {
        char *end;
        double v = strtod(text, &end);
        if (end == text || *end || !(v > 0.0 && v <= 64.0)) {
            snprintf(why, why_len, "'target.bpw' must be a number of bits per weight "
                     "above 0 and at most 64, got '%s'", text);
            return 0;
        }
        t->bpw = v;
        t->bytes = 0;
        return 1;
    }
    hvq_value val = {0};
    char reason[256] = "it must be above 0";
    if (hvq_param_parse(&size_spec, text, &val, reason, sizeof reason) != HVQ_OK ||
        val.i <= 0) {
        snprintf(why, why_len, "'target.size' must be a byte count such as 900MB or 2GiB: %s",
                 reason);
        return 0;
    }
    t->bytes = (uint64_t)val.i;
    t->bpw = 0.0;
    return 1;
}

/* target: { bpw: X } or { size: S }, optionally with metric: and
 * sample:; with candidates, metric: and sample: alone (the size from the
 * command line); null: none. */
static hvq_status load_target(loader *L, const ynode *key, const ynode *v)
{
    hvq_target_cfg *t = &L->p->target;
    char why[512];
    memset(t, 0, sizeof *t);
    if (is_null(v))
        return HVQ_OK;
    hvq_status st = v->kind == YN_MAP ? check_keys(L, v) : HVQ_OK;
    if (st != HVQ_OK)
        return st;
    if (v->kind != YN_MAP)
        return mark_error(L->ctx, HVQ_E_INPUT, L->p, &v->mark,
                          "'target' must be a mapping with bpw: or size: (e.g. target: "
                          "{ bpw: 4.8 }), and optionally metric:");
    for (size_t i = 0; i < v->n; i += 2) {
        const ynode *k = v->kids[i], *val = v->kids[i + 1];
        if (strcmp(k->text, "bpw") != 0 && strcmp(k->text, "size") != 0 &&
            strcmp(k->text, "metric") != 0 && strcmp(k->text, "sample") != 0)
            return unknown_key(L, k, "key", " in 'target'", target_keys, 4);
        int sets_size = strcmp(k->text, "bpw") == 0 || strcmp(k->text, "size") == 0;
        if (sets_size && (t->bpw > 0 || t->bytes > 0))
            return mark_error(L->ctx, HVQ_E_INPUT, L->p, &k->mark,
                              "'target' takes one of bpw: and size:, not both");
        if (val->kind != YN_SCALAR || !parse_target(t, k->text, val->text, why, sizeof why))
            return mark_error(L->ctx, HVQ_E_INPUT, L->p, &val->mark, "%s",
                              val->kind != YN_SCALAR ? "'target' takes scalar values" : why);
    }
    /* without a size, metric: and sample: wait for --target-bpw or
     * --target-size (validate_target) */
    t->present = t->bpw > 0 || t->bytes > 0;
    t->in_file = 1;
    t->mark = key->mark;
    return HVQ_OK;
}

/* evaluate: { tokens: PATH, ctx: N, windows: N }; null: no evaluation. */
static hvq_status load_evaluate(loader *L, const ynode *key, const ynode *v)
{
    hvq_eval_cfg *e = &L->p->evaluate;
    size_t i;
    hvq_status st;

    free(e->tokens);
    memset(e, 0, sizeof *e);
    if (is_null(v))
        return HVQ_OK;
    if (v->kind != YN_MAP)
        return mark_error(L->ctx, HVQ_E_INPUT, L->p, &v->mark,
                          "'evaluate' must be a mapping (tokens:, ctx:, "
                          "windows:), not %s",
                          kind_name(v));
    st = check_keys(L, v);
    if (st != HVQ_OK)
        return st;
    e->present = 1;
    e->mark = key->mark;
    e->ctx = HVQ_EVAL_DEFAULT_CTX;
    for (i = 0; i < v->n; i += 2) {
        const ynode *k = v->kids[i], *val = v->kids[i + 1];
        int64_t min, max;
        if (strcmp(k->text, "tokens") != 0 && strcmp(k->text, "ctx") != 0 &&
            strcmp(k->text, "windows") != 0)
            return unknown_key(L, k, "key", " in 'evaluate'", eval_keys,
                               N_EVAL_KEYS);
        if (val->kind != YN_SCALAR || is_null(val) || !val->text[0])
            return mark_error(L->ctx, HVQ_E_INPUT, L->p, &val->mark,
                              "'evaluate.%s' must be %s, not %s", k->text,
                              k->text[0] == 't' ? "a path" : "an integer",
                              val->kind != YN_SCALAR ? kind_name(val)
                                                     : "empty");
        if (k->text[0] == 't') {
            e->tokens = xstrdup(val->text);
            if (!e->tokens)
                return nomem(L->ctx);
            continue;
        }
        eval_range(k->text, &min, &max);
        if (!parse_eval_int(val->text, min, max,
                            k->text[0] == 'c' ? &e->ctx : &e->windows))
            return mark_error(L->ctx, HVQ_E_INPUT, L->p, &val->mark,
                              "'evaluate.%s' must be an integer from %lld to "
                              "%lld, got '%s'",
                              k->text, (long long)min, (long long)max,
                              val->text);
    }
    if (!e->tokens)
        return mark_error(L->ctx, HVQ_E_INPUT, L->p, &key->mark,
                          "'evaluate' needs 'tokens: PATH' (the token file "
                          "perplexity is measured on)");
    return HVQ_OK;
}

static hvq_status load_root(loader *L, const ynode *root)
{
    hvq_pipeline *p = L->p;
    size_t i;
    hvq_status st;

    if (root->kind != YN_MAP)
        return mark_error(L->ctx, HVQ_E_INPUT, p, &root->mark,
                          "a pipeline must be a mapping (name:, input:, "
                          "output:, stages:, ...), not %s",
                          kind_name(root));
    st = check_keys(L, root);
    if (st != HVQ_OK)
        return st;
    for (i = 0; i < root->n; i += 2) {
        const ynode *k = root->kids[i], *v = root->kids[i + 1];
        const char *key = k->text;
        if (strcmp(key, "name") == 0)
            st = load_string(L, v, key, &p->name, NULL);
        else if (strcmp(key, "input") == 0)
            st = load_string(L, v, key, &p->input, &p->input_mark);
        else if (strcmp(key, "output") == 0)
            st = load_string(L, v, key, &p->output, &p->output_mark);
        else if (strcmp(key, "report") == 0)
            st = load_string(L, v, key, &p->report, &p->report_mark);
        else if (strcmp(key, "seed") == 0) {
            st = want_scalar(L, v, key);
            if (st == HVQ_OK && !parse_seed(v->text, &p->seed))
                st = mark_error(L->ctx, HVQ_E_INPUT, p, &v->mark,
                                "'seed' must be an unsigned 64-bit integer, "
                                "got '%s'",
                                v->text);
        } else if (strcmp(key, "select") == 0)
            st = load_select(L, v);
        else if (strcmp(key, "stages") == 0)
            st = load_stages(L, v);
        else if (strcmp(key, "overrides") == 0)
            st = load_overrides(L, v, 0);
        else if (strcmp(key, "candidates") == 0)
            st = load_overrides(L, v, 1);
        else if (strcmp(key, "target") == 0)
            st = load_target(L, k, v);
        else if (strcmp(key, "evaluate") == 0)
            st = load_evaluate(L, k, v);
        else
            st = unknown_key(L, k, "key", "", top_keys, N_TOP_KEYS);
        if (st != HVQ_OK)
            return st;
    }
    return HVQ_OK;
}

/* Reads a whole file; sets the error on failure. */
static hvq_status read_file(hvq_ctx *ctx, const char *path,
                            unsigned char **data, size_t *len)
{
    int odd;
    FILE *f = hvq_fopen_input(ctx, path, &odd);
    unsigned char *buf = NULL;
    size_t n = 0, cap = 0;
    int err;

    *data = NULL;
    *len = 0;
    if (!f)
        return hvq_error(ctx, HVQ_E_INPUT, "%s: cannot open pipeline: %s", path,
                         odd && errno != EISDIR ? "not a regular file (a FIFO, a device?)"
                                                : strerror(errno));
    for (;;) {
        size_t got;
        if (n == cap) {
            unsigned char *nb;
            if (cap >= MAX_FILE_SIZE) {
                fclose(f);
                free(buf);
                return hvq_error(ctx, HVQ_E_INPUT,
                                 "%s: too large for a pipeline file (over %u "
                                 "bytes)",
                                 path, (unsigned)MAX_FILE_SIZE);
            }
            cap = cap ? cap * 2 : 4096;
            nb = realloc(buf, cap + 1);
            if (!nb) {
                fclose(f);
                free(buf);
                return nomem(ctx);
            }
            buf = nb;
        }
        got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0)
            break;
    }
    err = ferror(f) ? errno : 0;
    fclose(f);
    if (err || !buf) {
        free(buf);
        return hvq_error(ctx, HVQ_E_INPUT, "%s: cannot read pipeline: %s",
                         path, strerror(err ? err : EIO));
    }
    buf[n] = '\0';
    *data = buf;
    *len = n;
    return HVQ_OK;
}

hvq_status hvq_pipeline_load(hvq_ctx *ctx, const char *path,
                             hvq_pipeline **out)
{
    loader L;
    ynode *root = NULL;
    hvq_status st;

    *out = NULL;
    memset(&L, 0, sizeof L);
    L.ctx = ctx;
    st = read_file(ctx, path, &L.buf, &L.len);
    if (st != HVQ_OK)
        return st;
    L.p = pipeline_alloc(path);
    if (!L.p) {
        free(L.buf);
        return nomem(ctx);
    }
    if (!yaml_parser_initialize(&L.parser)) {
        free(L.buf);
        hvq_pipeline_free(L.p);
        return nomem(ctx);
    }
    yaml_parser_set_input_string(&L.parser, L.buf, L.len);

    st = parse_document(&L, &root);
    if (st == HVQ_OK && (!root || is_null(root))) {
        hvq_mark m = {L.p->path, NULL, 1, 1};
        if (root)
            m = root->mark;
        st = mark_error(ctx, HVQ_E_INPUT, L.p, &m,
                        "the pipeline is empty (expected a mapping with "
                        "'stages:')");
    }
    if (st == HVQ_OK)
        st = load_root(&L, root);

    ynode_free(root);
    yaml_parser_delete(&L.parser);
    free(L.buf);
    if (st != HVQ_OK) {
        hvq_pipeline_free(L.p);
        return st;
    }
    *out = L.p;
    return HVQ_OK;
}

/* ------------------------------------------------------------------------
 * --set KEY=VALUE
 * ---------------------------------------------------------------------- */

static const char *const set_keys[] = {
    "input",  "output",         "report",         "seed",
    "name",   "select.include", "select.exclude", "stages",
    "evaluate.tokens", "evaluate.ctx", "evaluate.windows",
    "target.bpw", "target.size", "target.metric", "target.sample"};

/* target=, target.bpw, target.size. */
static hvq_status set_target(hvq_ctx *ctx, hvq_pipeline *p, const hvq_mark *m,
                             const char *key, const char *value)
{
    const char *sub = key[6] == '.' ? key + 7 : NULL;
    char why[512];
    if (!key[6]) {
        if (value[0])
            return mark_error(ctx, HVQ_E_INPUT, p, m,
                              "expected target.bpw or target.size (or target= to "
                              "remove the target)");
        memset(&p->target, 0, sizeof p->target);
        return HVQ_OK;
    }
    if (!sub || (strcmp(sub, "bpw") != 0 && strcmp(sub, "size") != 0 &&
                 strcmp(sub, "metric") != 0 && strcmp(sub, "sample") != 0)) {
        const char *near = sub ? nearest(sub, target_keys, 4) : NULL;
        if (near)
            return mark_error(ctx, HVQ_E_INPUT, p, m,
                              "unknown key '%s'; did you mean 'target.%s'?", key, near);
        return mark_error(ctx, HVQ_E_INPUT, p, m,
                          "unknown key '%s' (valid keys under target: bpw, size, metric, "
                          "sample)", key);
    }
    if (!parse_target(&p->target, sub, value, why, sizeof why))
        return mark_error(ctx, HVQ_E_INPUT, p, m, "%s", why);
    if (strcmp(sub, "bpw") == 0 || strcmp(sub, "size") == 0) {
        p->target.present = 1;
        p->target.mark = *m;
    }
    return HVQ_OK;
}

/* evaluate=, evaluate.tokens, evaluate.ctx, evaluate.windows. */
static hvq_status set_evaluate(hvq_ctx *ctx, hvq_pipeline *p,
                               const hvq_mark *m, const char *key,
                               const char *value)
{
    hvq_eval_cfg *e = &p->evaluate;
    const char *sub = key[8] == '.' ? key + 9 : NULL;
    int64_t min, max, v;

    if (!key[8]) {
        if (value[0])
            return mark_error(ctx, HVQ_E_INPUT, p, m,
                              "expected evaluate.tokens, evaluate.ctx or "
                              "evaluate.windows (or evaluate= to remove the "
                              "evaluation)");
        free(e->tokens);
        memset(e, 0, sizeof *e);
        return HVQ_OK;
    }
    if (!sub || (strcmp(sub, "tokens") != 0 && strcmp(sub, "ctx") != 0 &&
                 strcmp(sub, "windows") != 0)) {
        const char *near =
            sub ? nearest(sub, eval_keys, N_EVAL_KEYS) : NULL;
        if (near)
            return mark_error(ctx, HVQ_E_INPUT, p, m,
                              "unknown key '%s'; did you mean 'evaluate.%s'?",
                              key, near);
        return mark_error(ctx, HVQ_E_INPUT, p, m,
                          "unknown key '%s' (valid keys under evaluate: "
                          "tokens, ctx, windows)",
                          key);
    }
    if (!value[0])
        return mark_error(ctx, HVQ_E_INPUT, p, m,
                          "'evaluate.%s' must not be empty", sub);
    if (sub[0] == 't') {
        char *t = xstrdup(value);
        if (!t)
            return nomem(ctx);
        free(e->tokens);
        e->tokens = t;
    } else {
        eval_range(sub, &min, &max);
        if (!parse_eval_int(value, min, max, &v))
            return mark_error(ctx, HVQ_E_INPUT, p, m,
                              "'evaluate.%s' must be an integer from %lld to "
                              "%lld, got '%s'",
                              sub, (long long)min, (long long)max, value);
        if (sub[0] == 'c')
            e->ctx = v;
        else
            e->windows = v;
    }
    if (!e->present) {
        e->present = 1;
        e->mark = *m;
        if (!e->ctx)
            e->ctx = HVQ_EVAL_DEFAULT_CTX;
    }
    return HVQ_OK;
}

/* Drops the settings that came from the file (their plugin was replaced). */
static void drop_file_settings(hvq_stage_cfg *c)
{
    size_t i, j = 0;
    for (i = 0; i < c->n_settings; i++) {
        if (c->settings[i].value_mark.file) {
            free(c->settings[i].key);
            free(c->settings[i].value);
        } else {
            c->settings[j++] = c->settings[i];
        }
    }
    c->n_settings = j;
}

static hvq_status set_stage(hvq_ctx *ctx, hvq_pipeline *p, const hvq_mark *m,
                            const char *rest, const char *value)
{
    const char *dot = strchr(rest, '.');
    char stage[64];
    const char *param;
    hvq_stage_cfg *c;
    size_t len;
    int s;

    len = dot ? (size_t)(dot - rest) : strlen(rest);
    if (!dot || !dot[1] || len == 0 || len >= sizeof stage)
        return mark_error(ctx, HVQ_E_INPUT, p, m,
                          "expected stages.STAGE.plugin or "
                          "stages.STAGE.PARAMETER");
    memcpy(stage, rest, len);
    stage[len] = '\0';
    param = dot + 1;
    s = stage_index(stage);
    if (s < 0) {
        const char *near = nearest(stage, stage_names, HVQ_STAGE_COUNT);
        if (near)
            return mark_error(ctx, HVQ_E_INPUT, p, m,
                              "unknown stage '%s'; did you mean '%s'?", stage,
                              near);
        return mark_error(ctx, HVQ_E_INPUT, p, m,
                          "unknown stage '%s' (valid stages: hessian, "
                          "importance, clusterer, residual, writer)",
                          stage);
    }
    c = &p->stages[s];

    if (strcmp(param, "plugin") == 0) {
        const char *current = c->plugin ? c->plugin : stage_defaults[s];
        char *np;
        if (!value[0])
            return mark_error(ctx, HVQ_E_INPUT, p, m,
                              "the plugin name is empty");
        np = xstrdup(value);
        if (!np)
            return nomem(ctx);
        if (current && strcmp(current, value) != 0)
            drop_file_settings(c);
        free(c->plugin);
        c->plugin = np;
        c->mark = *m;
        c->present = 1;
        return HVQ_OK;
    }
    c->present = 1;
    return stage_set(ctx, c, param, value, m, m, 1);
}

hvq_status hvq_pipeline_set(hvq_ctx *ctx, hvq_pipeline *p,
                            const char *assignment)
{
    const char *arg, *eq, *value;
    char key[256];
    hvq_mark m;
    size_t klen;

    if (!list_push(&p->set_args, &p->n_set_args, assignment))
        return nomem(ctx);
    arg = p->set_args[p->n_set_args - 1];
    m.file = NULL;
    m.origin = arg;
    m.line = m.col = 0;

    invalidate(p);
    if (!utf8_valid(arg))
        return mark_error(ctx, HVQ_E_INPUT, p, &m, "not valid UTF-8 text");
    eq = strchr(arg, '=');
    klen = eq ? (size_t)(eq - arg) : 0;
    if (!eq || klen == 0)
        return mark_error(ctx, HVQ_E_INPUT, p, &m, "expected KEY=VALUE");
    if (klen >= sizeof key)
        return mark_error(ctx, HVQ_E_INPUT, p, &m, "key too long");
    memcpy(key, arg, klen);
    key[klen] = '\0';
    value = eq + 1;

    if (strcmp(key, "input") == 0 || strcmp(key, "output") == 0) {
        char **dst = key[0] == 'i' ? &p->input : &p->output;
        hvq_mark *dm = key[0] == 'i' ? &p->input_mark : &p->output_mark;
        char *v;
        if (!value[0])
            return mark_error(ctx, HVQ_E_INPUT, p, &m,
                              "'%s' must not be empty", key);
        v = xstrdup(value);
        if (!v)
            return nomem(ctx);
        free(*dst);
        *dst = v;
        *dm = m;
        return HVQ_OK;
    }
    if (strcmp(key, "report") == 0 || strcmp(key, "name") == 0) {
        char **dst = key[0] == 'r' ? &p->report : &p->name;
        char *v = NULL;
        if (value[0] && !(v = xstrdup(value)))
            return nomem(ctx);
        free(*dst);
        *dst = v; /* empty: unset */
        if (key[0] == 'r')
            p->report_mark = m;
        return HVQ_OK;
    }
    if (strcmp(key, "seed") == 0) {
        if (!parse_seed(value, &p->seed))
            return mark_error(ctx, HVQ_E_INPUT, p, &m,
                              "'seed' must be an unsigned 64-bit integer, "
                              "got '%s'",
                              value);
        return HVQ_OK;
    }
    if (strcmp(key, "select.include") == 0 ||
        strcmp(key, "select.exclude") == 0) {
        int inc = key[7] == 'i';
        char ***list = inc ? &p->include : &p->exclude;
        size_t *n = inc ? &p->n_include : &p->n_exclude;
        list_free(list, n);
        if (value[0] && !list_push(list, n, value))
            return nomem(ctx);
        return HVQ_OK;
    }
    if (strncmp(key, "stages.", 7) == 0)
        return set_stage(ctx, p, &m, key + 7, value);
    if (strncmp(key, "evaluate", 8) == 0 && (!key[8] || key[8] == '.'))
        return set_evaluate(ctx, p, &m, key, value);
    if (strncmp(key, "target", 6) == 0 && (!key[6] || key[6] == '.'))
        return set_target(ctx, p, &m, key, value);
    if (strcmp(key, "overrides") == 0 || strncmp(key, "overrides.", 10) == 0)
        return mark_error(ctx, HVQ_E_INPUT, p, &m,
                          "overrides cannot be set from the command line; "
                          "edit the pipeline file");
    {
        const char *near =
            nearest(key, set_keys, sizeof set_keys / sizeof set_keys[0]);
        const char *dot = strchr(key, '.');
        if (dot && !(dot - key == 6 && strncmp(key, "stages", 6) == 0)) {
            /* "stage.clusterer.plugin": a misspelt first component. */
            static const char *const heads[] = {"stages", "select"};
            char head[64];
            size_t hl = (size_t)(dot - key);
            if (hl < sizeof head) {
                const char *h;
                memcpy(head, key, hl);
                head[hl] = '\0';
                h = nearest(head, heads, 2);
                if (h && strcmp(h, "stages") == 0)
                    return mark_error(ctx, HVQ_E_INPUT, p, &m,
                                      "unknown key '%s'; did you mean "
                                      "'stages%s'?",
                                      key, dot);
            }
        }
        if (near && strcmp(near, "stages") != 0)
            return mark_error(ctx, HVQ_E_INPUT, p, &m,
                              "unknown key '%s'; did you mean '%s'?", key,
                              near);
        return mark_error(ctx, HVQ_E_INPUT, p, &m,
                          "unknown key '%s' (valid keys: input, output, "
                          "report, seed, name, select.include, "
                          "select.exclude, stages.STAGE.plugin, "
                          "stages.STAGE.PARAMETER, evaluate.tokens, "
                          "evaluate.ctx, evaluate.windows, target.bpw, "
                          "target.size, target.metric, target.sample)",
                          key);
    }
}

/* ------------------------------------------------------------------------
 * Validation.
 * ---------------------------------------------------------------------- */

/* The names of the plugins of one kind, in registry order, without
 * duplicates. names is malloc'd (the strings are the registry's). */
static const char **plugins_of(const hvq_registry *reg, uint32_t kind,
                               size_t *n_out)
{
    size_t n = hvq_registry_count(reg), k, j, m = 0;
    const char **names = malloc((n ? n : 1) * sizeof *names);
    if (!names)
        return NULL;
    for (k = 0; k < n; k++) {
        const hvq_loaded_plugin *pl = hvq_registry_at(reg, k);
        int dup = 0;
        if (!pl || !(pl->desc.kinds & kind) || !pl->desc.name)
            continue;
        for (j = 0; j < m; j++)
            if (strcmp(names[j], pl->desc.name) == 0)
                dup = 1;
        if (!dup)
            names[m++] = pl->desc.name;
    }
    *n_out = m;
    return names;
}

/* "(available: a, b)" or "(no KIND plugins are loaded)". */
static void append_available(hvq_buf *b, const char *const *names, size_t n,
                             int s)
{
    if (n == 0) {
        hvq_buf_printf(b, "(no %s plugins are loaded)", stage_names[s]);
        return;
    }
    hvq_buf_puts(b, "(available: ");
    join(b, names, n);
    hvq_buf_puts(b, ")");
}

/* Finds the plugin called name for stage s; on failure the error reads
 * "PREFIX: stage 'S': unknown plugin 'X'; did you mean 'Y'? (available:
 * ...)". is_default: the name is the stage's default, not the user's. */
static hvq_status find_plugin(hvq_ctx *ctx, const hvq_pipeline *p,
                              const hvq_registry *reg, int s, const char *name,
                              const hvq_mark *m, const char *where,
                              int is_default, const hvq_loaded_plugin **out)
{
    const hvq_loaded_plugin *pl, *other;
    const char **names;
    const char *near;
    size_t n;
    hvq_buf b;

    pl = hvq_registry_find(reg, stage_kinds[s], name);
    if (pl) {
        *out = pl;
        return HVQ_OK;
    }
    names = plugins_of(reg, stage_kinds[s], &n);
    if (!names)
        return nomem(ctx);
    hvq_buf_init(&b);
    mark_prefix(&b, p, m);
    hvq_buf_printf(&b, "%sstage '%s': ", where, stage_names[s]);
    other = hvq_registry_find_any(reg, name);
    near = nearest(name, names, n);
    if (is_default) {
        hvq_buf_printf(&b, "the default plugin '%s' is not available ", name);
    } else if (other) {
        char kinds[128];
        hvq_buf_printf(&b, "'%s' is a %s plugin, not a %s plugin ", name,
                       hvq_kind_names(other->desc.kinds, kinds, sizeof kinds),
                       stage_names[s]);
    } else if (near) {
        hvq_buf_printf(&b, "unknown plugin '%s'; did you mean '%s'? ", name,
                       near);
    } else {
        hvq_buf_printf(&b, "unknown plugin '%s' ", name);
    }
    append_available(&b, names, n, s);
    free(names);
    return buf_error(ctx, HVQ_E_INPUT, &b);
}

/* Resolves the values of one stage: starting from base (the base stage's
 * values, when an override keeps its plugin) or from the plugin's
 * defaults, then applying c's settings. Required parameters must be set
 * when starting from defaults. */
static hvq_status resolve_values(hvq_ctx *ctx, const hvq_pipeline *p, int s,
                                 const char *where,
                                 const hvq_loaded_plugin *pl,
                                 const hvq_value *base, hvq_stage_cfg *c,
                                 const hvq_mark *stage_mark)
{
    const hvq_param_spec *specs = pl->desc.params;
    const char *pname = pl->desc.name;
    size_t n = hvq_param_count(specs), i;
    hvq_value *vals;
    char why[1024];

    vals = calloc(n ? n : 1, sizeof *vals);
    if (!vals)
        return nomem(ctx);

    if (base) {
        memcpy(vals, base, n * sizeof *vals);
    } else {
        for (i = 0; i < n; i++) {
            vals[i].type = specs[i].type;
            if (!specs[i].default_value)
                continue; /* required; checked below */
            if (hvq_param_parse(&specs[i], specs[i].default_value, &vals[i],
                                why, sizeof why) != HVQ_OK) {
                free(vals);
                return hvq_error(ctx, HVQ_E_INTERNAL,
                                 "plugin '%s' (%s): the default value '%s' of "
                                 "parameter '%s' is invalid: %s (a bug in "
                                 "the plugin)",
                                 pname, pl->path ? pl->path : "built in",
                                 specs[i].default_value, specs[i].name, why);
            }
            vals[i].is_default = 1;
        }
    }

    for (i = 0; i < c->n_settings; i++) {
        const hvq_setting *set = &c->settings[i];
        long idx = hvq_param_index(specs, set->key);
        if (idx < 0) {
            const char **names = malloc((n ? n : 1) * sizeof *names);
            const char *near;
            size_t k;
            hvq_buf b;
            if (!names) {
                free(vals);
                return nomem(ctx);
            }
            for (k = 0; k < n; k++)
                names[k] = specs[k].name;
            near = nearest(set->key, names, n);
            hvq_buf_init(&b);
            mark_prefix(&b, p, &set->key_mark);
            hvq_buf_printf(&b, "%sstage '%s' (plugin '%s'): unknown parameter "
                               "'%s'",
                           where, stage_names[s], pname, set->key);
            if (near) {
                hvq_buf_printf(&b, "; did you mean '%s'?", near);
            } else if (n == 0) {
                hvq_buf_puts(&b, "; the plugin takes no parameters");
            } else {
                hvq_buf_puts(&b, " (parameters: ");
                join(&b, names, n);
                hvq_buf_puts(&b, ")");
            }
            free(names);
            free(vals);
            return buf_error(ctx, HVQ_E_INPUT, &b);
        }
        if (hvq_param_parse(&specs[idx], set->value, &vals[idx], why,
                            sizeof why) != HVQ_OK) {
            free(vals);
            return mark_error(ctx, HVQ_E_INPUT, p, &set->value_mark,
                              "%sstage '%s' (plugin '%s'): parameter '%s': %s",
                              where, stage_names[s], pname, set->key, why);
        }
        vals[idx].is_default = 0;
    }

    for (i = 0; i < n; i++) {
        if (!vals[i].s) {
            hvq_status st = mark_error(
                ctx, HVQ_E_INPUT, p, stage_mark,
                "%sstage '%s' (plugin '%s'): missing required parameter '%s'",
                where, stage_names[s], pname, specs[i].name);
            free(vals);
            return st;
        }
    }

    c->resolved = pl;
    c->values = vals;
    c->n_values = n;
    return HVQ_OK;
}

static hvq_status validate_base(hvq_ctx *ctx, hvq_pipeline *p,
                                const hvq_registry *reg, int s)
{
    hvq_stage_cfg *c = &p->stages[s];
    const char *name = c->plugin ? c->plugin : stage_defaults[s];
    const hvq_loaded_plugin *pl;
    hvq_mark none = {NULL, NULL, 0, 0};
    hvq_status st;

    if (!name) {
        const char **names;
        size_t n;
        hvq_buf b;
        names = plugins_of(reg, stage_kinds[s], &n);
        if (!names)
            return nomem(ctx);
        hvq_buf_init(&b);
        if (c->present) {
            mark_prefix(&b, p, &c->mark);
            hvq_buf_printf(&b, "stage '%s' names no plugin; ",
                           stage_names[s]);
        } else {
            mark_prefix(&b, p, &none);
            hvq_buf_printf(&b, "missing stage '%s'; ", stage_names[s]);
        }
        if (n) {
            hvq_buf_printf(&b, "available %s plugins: ", stage_names[s]);
            join(&b, names, n);
        } else {
            hvq_buf_printf(&b, "no %s plugins are loaded", stage_names[s]);
        }
        free(names);
        return buf_error(ctx, HVQ_E_INPUT, &b);
    }
    st = find_plugin(ctx, p, reg, s, name, c->plugin ? &c->mark : &none, "",
                     !c->plugin, &pl);
    if (st != HVQ_OK)
        return st;
    return resolve_values(ctx, p, s, "", pl, NULL, c,
                          c->present ? &c->mark : &none);
}

static hvq_status validate_override(hvq_ctx *ctx, hvq_pipeline *p,
                                    const hvq_registry *reg, hvq_override *o,
                                    int s, const char *what)
{
    hvq_stage_cfg *c = &o->stages[s];
    const hvq_stage_cfg *base = &p->stages[s];
    const hvq_loaded_plugin *pl = base->resolved;
    char where[512];
    hvq_status st;

    snprintf(where, sizeof where, "%s '%s': ", what, o->match);
    if (c->plugin && strcmp(c->plugin, base->resolved->desc.name) != 0) {
        st = find_plugin(ctx, p, reg, s, c->plugin, &c->mark, where, 0, &pl);
        if (st != HVQ_OK)
            return st;
        return resolve_values(ctx, p, s, where, pl, NULL, c, &c->mark);
    }
    return resolve_values(ctx, p, s, where, pl, base->values, c, &c->mark);
}

/* A target needs candidates to choose from, and candidates need a target
 * (the size they are chosen for). */
static hvq_status validate_target(hvq_ctx *ctx, const hvq_pipeline *p)
{
    hvq_mark none = {NULL, NULL, 0, 0};
    if (!p->target.present && p->target.in_file && p->n_candidates == 0)
        return mark_error(ctx, HVQ_E_INPUT, p, &p->target.mark,
                          "'target' needs bpw: or size: (e.g. target: { bpw: 4.8 })");
    if (p->target.present && p->n_candidates == 0)
        return mark_error(ctx, HVQ_E_INPUT, p, &p->target.mark,
                          "a size target needs 'candidates:', the settings to choose "
                          "from per tensor (see pipelines/best.yaml)");
    if (!p->target.present && p->n_candidates > 0)
        return mark_error(ctx, HVQ_E_INPUT, p, &none,
                          "the pipeline chooses among %zu candidates per tensor: give a "
                          "size target (--target-bpw X or --target-size SIZE, or "
                          "target: in the file)",
                          p->n_candidates);
    return HVQ_OK;
}

hvq_status hvq_pipeline_validate(hvq_ctx *ctx, hvq_pipeline *p,
                                 const hvq_registry *reg)
{
    hvq_status st;
    size_t k;
    int s;

    invalidate(p);
    if (p->evaluate.present && !p->evaluate.tokens)
        return mark_error(ctx, HVQ_E_INPUT, p, &p->evaluate.mark,
                          "'evaluate' needs 'tokens: PATH' (the token file "
                          "perplexity is measured on; --set "
                          "evaluate.tokens=PATH)");
    for (s = 0; s < HVQ_STAGE_COUNT; s++) {
        st = validate_base(ctx, p, reg, s);
        if (st != HVQ_OK)
            goto fail;
    }
    for (k = 0; k < p->n_overrides + p->n_candidates; k++) {
        int cand = k >= p->n_overrides;
        hvq_override *o = cand ? &p->candidates[k - p->n_overrides] : &p->overrides[k];
        for (s = 0; s < HVQ_STAGE_COUNT; s++) {
            if (!o->stages[s].present)
                continue;
            if (s == HVQ_STAGE_WRITER) {
                st = mark_error(ctx, HVQ_E_INPUT, p, &o->stages[s].mark,
                                "stage 'writer' may not be %s per tensor",
                                cand ? "chosen" : "overridden");
                goto fail;
            }
            st = validate_override(ctx, p, reg, o, s, cand ? "candidate" : "override");
            if (st != HVQ_OK)
                goto fail;
        }
    }
    st = validate_target(ctx, p);
    if (st != HVQ_OK)
        goto fail;
    return HVQ_OK;

fail:
    invalidate(p);
    return st;
}

/* ------------------------------------------------------------------------
 * Queries.
 * ---------------------------------------------------------------------- */

const hvq_stage_cfg *hvq_pipeline_cfg_for(const hvq_pipeline *p, int stage,
                                          const char *tensor, long cand)
{
    size_t k;
    if (stage < 0 || stage >= HVQ_STAGE_COUNT)
        return NULL;
    for (k = 0; k < p->n_overrides && tensor; k++) {
        const hvq_override *o = &p->overrides[k];
        if (o->stages[stage].present && o->stages[stage].resolved &&
            o->match && hvq_glob_match(o->match, tensor))
            return &o->stages[stage];
    }
    if (cand >= 0 && (size_t)cand < p->n_candidates &&
        p->candidates[cand].stages[stage].present &&
        p->candidates[cand].stages[stage].resolved)
        return &p->candidates[cand].stages[stage];
    return &p->stages[stage];
}

hvq_status hvq_pipeline_stage_for(hvq_ctx *ctx, const hvq_pipeline *p,
                                  int stage, const char *tensor,
                                  const hvq_loaded_plugin **plugin,
                                  hvq_params *params)
{
    return hvq_pipeline_stage_cand(ctx, p, stage, tensor, -1, plugin, params);
}

hvq_status hvq_pipeline_stage_cand(hvq_ctx *ctx, const hvq_pipeline *p,
                                   int stage, const char *tensor, long cand,
                                   const hvq_loaded_plugin **plugin,
                                   hvq_params *params)
{
    const hvq_stage_cfg *c;

    if (stage < 0 || stage >= HVQ_STAGE_COUNT)
        return hvq_error(ctx, HVQ_E_INTERNAL, "no stage %d", stage);
    if (!p->stages[stage].resolved)
        return hvq_error(ctx, HVQ_E_INTERNAL,
                         "%s: the pipeline was not validated", p->path);
    c = hvq_pipeline_cfg_for(p, stage, tensor, cand);
    if (plugin)
        *plugin = c->resolved;
    if (params) {
        params->count = c->n_values;
        params->values = c->values;
        params->specs = c->resolved->desc.params;
    }
    return HVQ_OK;
}

int hvq_pipeline_selects(const hvq_pipeline *p, const char *tensor)
{
    size_t k;
    int in = p->n_include == 0;
    for (k = 0; k < p->n_include && !in; k++)
        if (hvq_glob_match(p->include[k], tensor))
            in = 1;
    if (!in)
        return 0;
    for (k = 0; k < p->n_exclude; k++)
        if (hvq_glob_match(p->exclude[k], tensor))
            return 0;
    return 1;
}

/* ------------------------------------------------------------------------
 * Back to YAML.
 * ---------------------------------------------------------------------- */

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
            hvq_buf_printf(b, " %s %s %s;", stage_names[s], c->resolved->desc.name,
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
        hvq_buf_printf(b, "  - %s: ", label);
        put_quoted(b, o->match ? o->match : "");
        hvq_buf_puts(b, "\n");
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
                hvq_buf_printf(b, "    %s: {}\n", stage_names[s]);
                continue;
            }
            hvq_buf_printf(b, "    %s:\n", stage_names[s]);
            put_stage(b, c, plugin, 6);
        }
    }
}

/* recorded: the text an output records (hvq_pipeline_record). */
static char *to_yaml(const hvq_pipeline *p, int recorded, const char *src_name,
                     const char *src_version)
{
    hvq_buf b;
    int s;

    hvq_buf_init(&b);
    if (recorded) {
        hvq_buf_puts(&b, "# effective pipeline, recorded by hvqconv " PACKAGE_VERSION
                         " (output and report paths left out)\n");
        put_plugin_versions(&b, p, src_name, src_version);
    } else {
        hvq_buf_puts(&b, "# effective pipeline");
    }
    if (!recorded && p->path && strcmp(p->path, "<none>") != 0) {
        const char *q;
        hvq_buf_puts(&b, " (from ");
        for (q = p->path; *q; q++) /* printable ASCII only in a comment */
            hvq_buf_append(&b, *q >= 0x20 && *q < 0x7F ? q : "?", 1);
        hvq_buf_puts(&b, ")");
    }
    if (!recorded)
        hvq_buf_puts(&b, "\n");
    if (p->name) {
        hvq_buf_puts(&b, "name: ");
        put_quoted(&b, p->name);
        hvq_buf_puts(&b, "\n");
    }
    if (p->input) {
        hvq_buf_puts(&b, "input: ");
        put_quoted(&b, p->input);
        hvq_buf_puts(&b, "\n");
    }
    if (p->output && !recorded) {
        hvq_buf_puts(&b, "output: ");
        put_quoted(&b, p->output);
        hvq_buf_puts(&b, "\n");
    }
    if (p->report && !recorded) {
        hvq_buf_puts(&b, "report: ");
        put_quoted(&b, p->report);
        hvq_buf_puts(&b, "\n");
    }
    hvq_buf_printf(&b, "seed: %llu\n", (unsigned long long)p->seed);
    if (p->n_include || p->n_exclude) {
        hvq_buf_puts(&b, "select:\n");
        if (p->n_include)
            put_globs(&b, "include", p->include, p->n_include);
        if (p->n_exclude)
            put_globs(&b, "exclude", p->exclude, p->n_exclude);
    }

    hvq_buf_puts(&b, "stages:\n");
    for (s = 0; s < HVQ_STAGE_COUNT; s++) {
        const hvq_stage_cfg *c = &p->stages[s];
        const char *plugin = c->resolved ? c->resolved->desc.name : c->plugin;
        if (!plugin && !c->present)
            continue;
        hvq_buf_printf(&b, "  %s:\n", stage_names[s]);
        if (!plugin && c->n_settings == 0)
            hvq_buf_puts(&b, "    {}\n");
        else
            put_stage(&b, c, plugin, 4);
    }

    put_overrides(&b, p, p->overrides, p->n_overrides, "overrides", "match");
    if (p->target.present) {
        if (p->target.bpw > 0)
            hvq_buf_printf(&b, "target: { bpw: %.17g", p->target.bpw);
        else
            hvq_buf_printf(&b, "target: { size: %llu", (unsigned long long)p->target.bytes);
        hvq_buf_printf(&b, ", metric: %s", p->target.relative ? "relative" : "absolute");
        if (p->target.sample)
            hvq_buf_printf(&b, ", sample: %llu", (unsigned long long)p->target.sample);
        hvq_buf_puts(&b, " }\n");
    }
    put_overrides(&b, p, p->candidates, p->n_candidates, "candidates", "name");

    if (p->evaluate.present && !recorded) {
        hvq_buf_puts(&b, "evaluate:\n  tokens: ");
        put_quoted(&b, p->evaluate.tokens ? p->evaluate.tokens : "");
        hvq_buf_printf(&b, "\n  ctx: %lld\n", (long long)p->evaluate.ctx);
        if (p->evaluate.windows)
            hvq_buf_printf(&b, "  windows: %lld\n",
                           (long long)p->evaluate.windows);
    }

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
