/* Pipelines: what the pieces share (the rest of pipeline.h's API).
 *
 *   pipeline.c        stage tables, helpers, messages, freeing, queries
 *   pipeline_yaml.c   libyaml's events to a tree that keeps positions
 *   pipeline_load.c   that tree to a hvq_pipeline (hvq_pipeline_load)
 *   pipeline_set.c    --set KEY=VALUE (hvq_pipeline_set)
 *   pipeline_check.c  validation against the plugins (hvq_pipeline_validate)
 *   pipeline_emit.c   the effective pipeline as YAML text
 *
 * Loading reads the whole file, turns libyaml's event stream into a small
 * tree that keeps the 1-based line:column of every node, and walks that
 * tree into a hvq_pipeline. Every error names FILE:LINE:COL (or, for
 * --set, the argument) and what was expected. */
#include "config.h"

#include "pipeline_int.h"

#include "ctx.h"
#include "params.h"
#include "util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------
 * Stages.
 * ---------------------------------------------------------------------- */

const char *const hvq_pl_stage_names[HVQ_STAGE_COUNT] = {
    "hessian", "importance", "clusterer", "residual", "writer"};

const uint32_t hvq_pl_stage_kinds[HVQ_STAGE_COUNT] = {
    HVQ_KIND_HESSIAN, HVQ_KIND_IMPORTANCE, HVQ_KIND_CLUSTERER,
    HVQ_KIND_RESIDUAL, HVQ_KIND_WRITER};

/* The plugin a stage uses when the pipeline names none (NULL: required). */
const char *const hvq_pl_stage_defaults[HVQ_STAGE_COUNT] = {
    "uniform", "magnitude", NULL, "none", NULL};

const char *const hvq_pl_eval_keys[N_EVAL_KEYS] = {"tokens", "ctx", "windows"};

const char *const hvq_pl_target_keys[N_TARGET_KEYS] = {"bpw", "size", "metric",
                                                       "sample"};

const char *hvq_stage_name(int stage)
{
    if (stage < 0 || stage >= HVQ_STAGE_COUNT)
        return "unknown";
    return hvq_pl_stage_names[stage];
}

uint32_t hvq_stage_kind(int stage)
{
    if (stage < 0 || stage >= HVQ_STAGE_COUNT)
        return 0;
    return hvq_pl_stage_kinds[stage];
}

const char *hvq_stage_default_plugin(int stage)
{
    if (stage < 0 || stage >= HVQ_STAGE_COUNT)
        return NULL;
    return hvq_pl_stage_defaults[stage];
}

int hvq_pl_stage_index(const char *name)
{
    int s;
    for (s = 0; s < HVQ_STAGE_COUNT; s++)
        if (strcmp(hvq_pl_stage_names[s], name) == 0)
            return s;
    return -1;
}

/* ------------------------------------------------------------------------
 * Small helpers.
 * ---------------------------------------------------------------------- */

char *hvq_pl_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

hvq_status hvq_pl_nomem(hvq_ctx *ctx)
{
    return hvq_error(ctx, HVQ_E_NOMEM, "out of memory");
}

/* Grows *arr (of elements of size elem) so that it holds at least need
 * elements; *cap tracks the capacity. Returns 0 when out of memory. */
int hvq_pl_grow(void **arr, size_t *cap, size_t need, size_t elem)
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
int hvq_pl_list_push(char ***list, size_t *n, const char *s)
{
    char **nl;
    char *d = hvq_pl_strdup(s);
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

void hvq_pl_list_free(char ***list, size_t *n)
{
    size_t k;
    for (k = 0; k < *n; k++)
        free((*list)[k]);
    free(*list);
    *list = NULL;
    *n = 0;
}

/* hvq_nearest, without suggestions that share nothing with the word. */
const char *hvq_pl_nearest(const char *word, const char *const *cand,
                           size_t n)
{
    const char *near = hvq_nearest(word, cand, n);
    size_t len = strlen(word);
    if (near && hvq_edit_distance(word, near, len) >= len)
        return NULL;
    return near;
}

/* "a, b, c" into b. */
void hvq_pl_join(hvq_buf *b, const char *const *items, size_t n)
{
    size_t k;
    for (k = 0; k < n; k++) {
        if (k)
            hvq_buf_puts(b, ", ");
        hvq_buf_puts(b, items[k]);
    }
}


/* The location prefix of a message: "FILE:LINE:COL: ", "--set ARG: ", or
 * "FILE: " when the mark carries no position. */
void hvq_pl_mark_prefix(hvq_buf *b, const hvq_pipeline *p, const hvq_mark *m)
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
hvq_status hvq_pl_buf_error(hvq_ctx *ctx, hvq_status st, hvq_buf *b)
{
    if (b->oom || !b->data) {
        hvq_buf_free(b);
        return hvq_pl_nomem(ctx);
    }
    hvq_error(ctx, st, "%s", b->data);
    hvq_buf_free(b);
    return st;
}

hvq_status hvq_pl_mark_error(hvq_ctx *ctx, hvq_status st,
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
    hvq_pl_mark_prefix(&b, p, m);
    hvq_buf_puts(&b, msg);
    return hvq_pl_buf_error(ctx, st, &b);
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

void hvq_pl_stage_free(hvq_stage_cfg *c)
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
void hvq_pl_invalidate(hvq_pipeline *p)
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
            hvq_pl_stage_free(&o[k].stages[s]);
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
    hvq_pl_list_free(&p->include, &p->n_include);
    hvq_pl_list_free(&p->exclude, &p->n_exclude);
    for (s = 0; s < HVQ_STAGE_COUNT; s++)
        hvq_pl_stage_free(&p->stages[s]);
    overrides_free(p->overrides, p->n_overrides);
    overrides_free(p->candidates, p->n_candidates);
    hvq_pl_list_free(&p->set_args, &p->n_set_args);
    free(p->evaluate.tokens);
    free(p);
}

hvq_pipeline *hvq_pl_pipeline_alloc(const char *path)
{
    hvq_pipeline *p = calloc(1, sizeof *p);
    const char *slash;
    if (!p)
        return NULL;
    p->path = hvq_pl_strdup(path);
    slash = strrchr(path, '/');
    if (!slash)
        p->dir = hvq_pl_strdup(".");
    else if (slash == path)
        p->dir = hvq_pl_strdup("/");
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
    *out = hvq_pl_pipeline_alloc("<none>");
    return *out ? HVQ_OK : hvq_pl_nomem(ctx);
}

/* Adds (or replaces) a setting of a stage. Copies key and value. */
hvq_status hvq_pl_stage_set(hvq_ctx *ctx, hvq_stage_cfg *c, const char *key,
                            const char *value, const hvq_mark *key_mark,
                            const hvq_mark *value_mark, int replace)
{
    hvq_setting *ns;
    char *k = NULL, *v;
    size_t i;

    v = hvq_pl_strdup(value);
    if (!v)
        return hvq_pl_nomem(ctx);
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
    k = hvq_pl_strdup(key);
    ns = k ? realloc(c->settings, (c->n_settings + 1) * sizeof *ns) : NULL;
    if (!ns) {
        free(k);
        free(v);
        return hvq_pl_nomem(ctx);
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
int hvq_pl_parse_seed(const char *text, uint64_t *out)
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

/* on_error: abort or passthrough. */
int hvq_pl_parse_on_error(const char *text, int *out)
{
    if (strcmp(text, "abort") == 0)
        *out = HVQ_ON_ERROR_ABORT;
    else if (strcmp(text, "passthrough") == 0)
        *out = HVQ_ON_ERROR_PASSTHROUGH;
    else
        return 0;
    return 1;
}

/* evaluate.ctx and evaluate.windows: a decimal integer in [min, max]. */
int hvq_pl_parse_eval_int(const char *text, int64_t min, int64_t max,
                          int64_t *out)
{
    uint64_t v;
    if (!hvq_pl_parse_seed(text, &v) || v < (uint64_t)min || v > (uint64_t)max)
        return 0;
    *out = (int64_t)v;
    return 1;
}

/* The range of evaluate.KEY, for messages and checks. */
void hvq_pl_eval_range(const char *key, int64_t *min, int64_t *max)
{
    if (strcmp(key, "ctx") == 0) {
        *min = 2;
        *max = HVQ_EVAL_MAX_CTX;
    } else {
        *min = 1;
        *max = HVQ_EVAL_MAX_WINDOWS;
    }
}

/* target.bpw / target.size / target.metric from text: bpw in (0, 64],
 * size a byte count ("900MB", "2GiB"), metric relative or absolute. why
 * gets the reason on failure. */
int hvq_pl_parse_target(hvq_target_cfg *t, const char *key, const char *text,
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

int hvq_pipeline_passthrough(const hvq_pipeline *p, const char *tensor)
{
    size_t k;
    for (k = 0; k < p->n_overrides && tensor; k++) {
        const hvq_override *o = &p->overrides[k];
        if (o->on_error != HVQ_ON_ERROR_UNSET && o->match && hvq_glob_match(o->match, tensor))
            return o->on_error == HVQ_ON_ERROR_PASSTHROUGH;
    }
    return p->on_error == HVQ_ON_ERROR_PASSTHROUGH;
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
