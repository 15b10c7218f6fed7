/* Pipelines: --set KEY=VALUE (hvq_pipeline_set). */
#include "config.h"

#include "pipeline_int.h"

#include "ctx.h"
#include "json.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const set_keys[] = {
    "input",  "output",         "report",         "seed",
    "name",   "select.include", "select.exclude", "stages",
    "evaluate.tokens", "evaluate.ctx", "evaluate.windows",
    "target.bpw", "target.size", "target.metric", "target.sample", "on_error"};

/* target=, target.bpw, target.size. */
static hvq_status set_target(hvq_ctx *ctx, hvq_pipeline *p, const hvq_mark *m,
                             const char *key, const char *value)
{
    const char *sub = key[6] == '.' ? key + 7 : NULL;
    char why[512];
    if (!key[6]) {
        if (value[0])
            return hvq_pl_mark_error(ctx, HVQ_E_INPUT, p, m,
                                     "expected target.bpw or target.size (or target= to "
                                     "remove the target)");
        memset(&p->target, 0, sizeof p->target);
        return HVQ_OK;
    }
    if (!sub || (strcmp(sub, "bpw") != 0 && strcmp(sub, "size") != 0 &&
                 strcmp(sub, "metric") != 0 && strcmp(sub, "sample") != 0)) {
        const char *near = sub ? hvq_pl_nearest(sub, hvq_pl_target_keys, 4) : NULL;
        if (near)
            return hvq_pl_mark_error(ctx, HVQ_E_INPUT, p, m,
                                     "unknown key '%s'; did you mean 'target.%s'?", key, near);
        return hvq_pl_mark_error(ctx, HVQ_E_INPUT, p, m,
                                 "unknown key '%s' (valid keys under target: bpw, size, metric, "
                                 "sample)", key);
    }
    if (!hvq_pl_parse_target(&p->target, sub, value, why, sizeof why))
        return hvq_pl_mark_error(ctx, HVQ_E_INPUT, p, m, "%s", why);
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
            return hvq_pl_mark_error(ctx, HVQ_E_INPUT, p, m,
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
            sub ? hvq_pl_nearest(sub, hvq_pl_eval_keys, N_EVAL_KEYS) : NULL;
        if (near)
            return hvq_pl_mark_error(ctx, HVQ_E_INPUT, p, m,
                                     "unknown key '%s'; did you mean 'evaluate.%s'?",
                                     key, near);
        return hvq_pl_mark_error(ctx, HVQ_E_INPUT, p, m,
                                 "unknown key '%s' (valid keys under evaluate: "
                                 "tokens, ctx, windows)",
                                 key);
    }
    if (!value[0])
        return hvq_pl_mark_error(ctx, HVQ_E_INPUT, p, m,
                                 "'evaluate.%s' must not be empty", sub);
    if (sub[0] == 't') {
        char *t = hvq_pl_strdup(value);
        if (!t)
            return hvq_pl_nomem(ctx);
        free(e->tokens);
        e->tokens = t;
    } else {
        hvq_pl_eval_range(sub, &min, &max);
        if (!hvq_pl_parse_eval_int(value, min, max, &v))
            return hvq_pl_mark_error(ctx, HVQ_E_INPUT, p, m,
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
        return hvq_pl_mark_error(ctx, HVQ_E_INPUT, p, m,
                                 "expected stages.STAGE.plugin or "
                                 "stages.STAGE.PARAMETER");
    memcpy(stage, rest, len);
    stage[len] = '\0';
    param = dot + 1;
    s = hvq_pl_stage_index(stage);
    if (s < 0) {
        const char *near = hvq_pl_nearest(stage, hvq_pl_stage_names, HVQ_STAGE_COUNT);
        if (near)
            return hvq_pl_mark_error(ctx, HVQ_E_INPUT, p, m,
                                     "unknown stage '%s'; did you mean '%s'?", stage,
                                     near);
        return hvq_pl_mark_error(ctx, HVQ_E_INPUT, p, m,
                                 "unknown stage '%s' (valid stages: hessian, "
                                 "importance, clusterer, residual, writer)",
                                 stage);
    }
    c = &p->stages[s];

    if (strcmp(param, "plugin") == 0) {
        const char *current = c->plugin ? c->plugin : hvq_pl_stage_defaults[s];
        char *np;
        if (!value[0])
            return hvq_pl_mark_error(ctx, HVQ_E_INPUT, p, m,
                                     "the plugin name is empty");
        np = hvq_pl_strdup(value);
        if (!np)
            return hvq_pl_nomem(ctx);
        if (current && strcmp(current, value) != 0)
            drop_file_settings(c);
        free(c->plugin);
        c->plugin = np;
        c->mark = *m;
        c->present = 1;
        return HVQ_OK;
    }
    c->present = 1;
    return hvq_pl_stage_set(ctx, c, param, value, m, m, 1);
}

/* input, output (not empty), report and name (empty: unset). */
static hvq_status set_string(hvq_ctx *ctx, hvq_pipeline *p, const hvq_mark *m,
                             const char *key, const char *value)
{
    if (strcmp(key, "input") == 0 || strcmp(key, "output") == 0) {
        char **dst = key[0] == 'i' ? &p->input : &p->output;
        hvq_mark *dm = key[0] == 'i' ? &p->input_mark : &p->output_mark;
        char *v;
        if (!value[0])
            return hvq_pl_mark_error(ctx, HVQ_E_INPUT, p, m,
                                     "'%s' must not be empty", key);
        v = hvq_pl_strdup(value);
        if (!v)
            return hvq_pl_nomem(ctx);
        free(*dst);
        *dst = v;
        *dm = *m;
        return HVQ_OK;
    }
    char **dst = key[0] == 'r' ? &p->report : &p->name;
    char *v = NULL;
    if (value[0] && !(v = hvq_pl_strdup(value)))
        return hvq_pl_nomem(ctx);
    free(*dst);
    *dst = v; /* empty: unset */
    if (key[0] == 'r')
        p->report_mark = *m;
    return HVQ_OK;
}

/* The error for a key --set does not know, with the nearest valid one. */
static hvq_status set_unknown(hvq_ctx *ctx, hvq_pipeline *p, const hvq_mark *m,
                              const char *key)
{
    const char *near =
        hvq_pl_nearest(key, set_keys, sizeof set_keys / sizeof set_keys[0]);
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
            h = hvq_pl_nearest(head, heads, 2);
            if (h && strcmp(h, "stages") == 0)
                return hvq_pl_mark_error(ctx, HVQ_E_INPUT, p, m,
                                         "unknown key '%s'; did you mean "
                                         "'stages%s'?",
                                         key, dot);
        }
    }
    if (near && strcmp(near, "stages") != 0)
        return hvq_pl_mark_error(ctx, HVQ_E_INPUT, p, m,
                                 "unknown key '%s'; did you mean '%s'?", key,
                                 near);
    return hvq_pl_mark_error(ctx, HVQ_E_INPUT, p, m,
                             "unknown key '%s' (valid keys: input, output, "
                             "report, seed, name, select.include, "
                             "select.exclude, stages.STAGE.plugin, "
                             "stages.STAGE.PARAMETER, evaluate.tokens, "
                             "evaluate.ctx, evaluate.windows, target.bpw, "
                             "target.size, target.metric, target.sample, "
                             "on_error)",
                             key);
}

hvq_status hvq_pipeline_set(hvq_ctx *ctx, hvq_pipeline *p,
                            const char *assignment)
{
    const char *arg, *eq, *value;
    char key[256];
    hvq_mark m;
    size_t klen;

    if (!hvq_pl_list_push(&p->set_args, &p->n_set_args, assignment))
        return hvq_pl_nomem(ctx);
    arg = p->set_args[p->n_set_args - 1];
    m.file = NULL;
    m.origin = arg;
    m.line = m.col = 0;

    hvq_pl_invalidate(p);
    if (!hvq_json_utf8_valid(arg, strlen(arg)))
        return hvq_pl_mark_error(ctx, HVQ_E_INPUT, p, &m, "not valid UTF-8 text");
    eq = strchr(arg, '=');
    klen = eq ? (size_t)(eq - arg) : 0;
    if (!eq || klen == 0)
        return hvq_pl_mark_error(ctx, HVQ_E_INPUT, p, &m, "expected KEY=VALUE");
    if (klen >= sizeof key)
        return hvq_pl_mark_error(ctx, HVQ_E_INPUT, p, &m, "key too long");
    memcpy(key, arg, klen);
    key[klen] = '\0';
    value = eq + 1;

    if (strcmp(key, "input") == 0 || strcmp(key, "output") == 0 ||
        strcmp(key, "report") == 0 || strcmp(key, "name") == 0)
        return set_string(ctx, p, &m, key, value);
    if (strcmp(key, "seed") == 0) {
        if (!hvq_pl_parse_seed(value, &p->seed))
            return hvq_pl_mark_error(ctx, HVQ_E_INPUT, p, &m,
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
        hvq_pl_list_free(list, n);
        if (value[0] && !hvq_pl_list_push(list, n, value))
            return hvq_pl_nomem(ctx);
        return HVQ_OK;
    }
    if (strcmp(key, "on_error") == 0) {
        if (!hvq_pl_parse_on_error(value, &p->on_error))
            return hvq_pl_mark_error(ctx, HVQ_E_INPUT, p, &m, HVQ_PL_ON_ERROR_WANT, value);
        return HVQ_OK;
    }
    if (strncmp(key, "stages.", 7) == 0)
        return set_stage(ctx, p, &m, key + 7, value);
    if (strncmp(key, "evaluate", 8) == 0 && (!key[8] || key[8] == '.'))
        return set_evaluate(ctx, p, &m, key, value);
    if (strncmp(key, "target", 6) == 0 && (!key[6] || key[6] == '.'))
        return set_target(ctx, p, &m, key, value);
    if (strcmp(key, "overrides") == 0 || strncmp(key, "overrides.", 10) == 0)
        return hvq_pl_mark_error(ctx, HVQ_E_INPUT, p, &m,
                                 "overrides cannot be set from the command line; "
                                 "edit the pipeline file");
    return set_unknown(ctx, p, &m, key);
}
