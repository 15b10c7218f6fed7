/* Pipelines: the tree of a pipeline file into a hvq_pipeline
 * (hvq_pipeline_load). */
#include "config.h"

#include "pipeline_int.h"

#include "ctx.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const top_keys[] = {"name",   "input",  "output",
                                       "report", "seed",   "select",
                                       "stages", "overrides", "evaluate",
                                       "target", "candidates", "on_error"};
#define N_TOP_KEYS (sizeof top_keys / sizeof top_keys[0])

static const char *const select_keys[] = {"include", "exclude"};

static const char *const override_keys[] = {
    "match", "hessian", "importance", "clusterer", "residual", "on_error"};
#define N_OVERRIDE_KEYS (sizeof override_keys / sizeof override_keys[0])

static const char *const candidate_keys[] = {
    "name", "hessian", "importance", "clusterer", "residual"};


/* name, input, output, report: a scalar; null leaves it unset. */
static hvq_status load_string(loader *L, const ynode *v, const char *name,
                              char **dst, hvq_mark *mark)
{
    hvq_status st = hvq_pl_want_scalar(L, v, name);
    if (st != HVQ_OK)
        return st;
    free(*dst);
    *dst = NULL;
    if (mark)
        *mark = v->mark;
    if (hvq_pl_is_null(v))
        return HVQ_OK;
    *dst = hvq_pl_strdup(v->text);
    return *dst ? HVQ_OK : hvq_pl_nomem(L->ctx);
}

/* select.include / select.exclude: a glob or a sequence of globs. */
static hvq_status load_globs(loader *L, const ynode *v, const char *name,
                             char ***list, size_t *n)
{
    size_t k;
    if (v->kind == YN_MAP)
        return hvq_pl_mark_error(L->ctx, HVQ_E_INPUT, L->p, &v->mark,
                                 "'select.%s' must be a glob or a sequence of globs, "
                                 "not a mapping",
                                 name);
    if (v->kind == YN_SCALAR) {
        if (hvq_pl_is_null(v))
            return HVQ_OK;
        return hvq_pl_list_push(list, n, v->text) ? HVQ_OK : hvq_pl_nomem(L->ctx);
    }
    for (k = 0; k < v->n; k++) {
        const ynode *it = v->kids[k];
        if (it->kind != YN_SCALAR)
            return hvq_pl_mark_error(L->ctx, HVQ_E_INPUT, L->p, &it->mark,
                                     "each entry of 'select.%s' must be a glob, "
                                     "not %s",
                                     name, hvq_pl_kind_name(it));
        if (!hvq_pl_list_push(list, n, it->text))
            return hvq_pl_nomem(L->ctx);
    }
    return HVQ_OK;
}

/* select: and stages:, a mapping with unique keys or null (nothing). */
static hvq_status want_map(loader *L, const ynode *v, const char *name)
{
    if (hvq_pl_is_null(v))
        return HVQ_OK;
    if (v->kind != YN_MAP)
        return hvq_pl_mark_error(L->ctx, HVQ_E_INPUT, L->p, &v->mark,
                                 "'%s' must be a mapping, not %s", name,
                                 hvq_pl_kind_name(v));
    return hvq_pl_check_keys(L, v);
}

static hvq_status load_select(loader *L, const ynode *v)
{
    size_t i;
    hvq_status st;
    st = want_map(L, v, "select");
    if (st != HVQ_OK || v->kind != YN_MAP)
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
            st = hvq_pl_unknown_key(L, k, "key", " in 'select'", select_keys, 2);
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
        hvq_pl_is_null(v))
        return hvq_pl_mark_error(L->ctx, HVQ_E_INPUT, L->p, &v->mark,
                                 "stage '%s' must be a plugin name or a mapping with "
                                 "'plugin:', not %s",
                                 hvq_pl_stage_names[s],
                                 v->kind == YN_SEQ ? "a sequence" : "empty");
    if (v->kind == YN_SCALAR) {
        c->plugin = hvq_pl_strdup(v->text);
        c->mark = v->mark;
        return c->plugin ? HVQ_OK : hvq_pl_nomem(L->ctx);
    }
    st = hvq_pl_check_keys(L, v);
    if (st != HVQ_OK)
        return st;
    for (i = 0; i < v->n; i += 2) {
        const ynode *k = v->kids[i], *val = v->kids[i + 1];
        if (strcmp(k->text, "plugin") == 0) {
            if (val->kind != YN_SCALAR || hvq_pl_is_null(val) || !val->text[0])
                return hvq_pl_mark_error(L->ctx, HVQ_E_INPUT, L->p, &val->mark,
                                         "'plugin' of stage '%s' must be a plugin "
                                         "name, not %s",
                                         hvq_pl_stage_names[s],
                                         val->kind != YN_SCALAR ? hvq_pl_kind_name(val)
                                                         : "empty");
            c->plugin = hvq_pl_strdup(val->text);
            if (!c->plugin)
                return hvq_pl_nomem(L->ctx);
            c->mark = val->mark;
            continue;
        }
        if (val->kind != YN_SCALAR)
            return hvq_pl_mark_error(L->ctx, HVQ_E_INPUT, L->p, &val->mark,
                                     "parameter '%s' of stage '%s' must be a scalar, "
                                     "not %s",
                                     k->text, hvq_pl_stage_names[s], hvq_pl_kind_name(val));
        st = hvq_pl_stage_set(L->ctx, c, k->text, val->text, &k->mark, &val->mark, 0);
        if (st != HVQ_OK)
            return st;
    }
    return HVQ_OK;
}

static hvq_status load_stages(loader *L, const ynode *v)
{
    size_t i;
    hvq_status st;
    st = want_map(L, v, "stages");
    if (st != HVQ_OK || v->kind != YN_MAP)
        return st;
    for (i = 0; i < v->n; i += 2) {
        const ynode *k = v->kids[i];
        int s = hvq_pl_stage_index(k->text);
        if (s < 0)
            return hvq_pl_unknown_key(L, k, "stage", "", hvq_pl_stage_names,
                                      HVQ_STAGE_COUNT);
        st = load_stage(L, &L->p->stages[s], s, k, v->kids[i + 1]);
        if (st != HVQ_OK)
            return st;
    }
    return HVQ_OK;
}

/* on_error: abort or passthrough, into *out. */
static hvq_status load_on_error(loader *L, const ynode *v, int *out)
{
    hvq_status st = hvq_pl_want_scalar(L, v, "on_error");
    if (st == HVQ_OK && !hvq_pl_parse_on_error(v->text, out))
        st = hvq_pl_mark_error(L->ctx, HVQ_E_INPUT, L->p, &v->mark, HVQ_PL_ON_ERROR_WANT,
                               v->text);
    return st;
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
        return hvq_pl_mark_error(L->ctx, HVQ_E_INPUT, L->p, &v->mark,
                                 cand ? "each entry of 'candidates' must be a mapping "
                                 "of stages (clusterer:, residual:, ...), not %s"
                               : "each entry of 'overrides' must be a mapping "
                                 "with 'match:', not %s",
                                 hvq_pl_kind_name(v));
    st = hvq_pl_check_keys(L, v);
    if (st != HVQ_OK)
        return st;
    for (i = 0; i < v->n; i += 2) {
        const ynode *k = v->kids[i], *val = v->kids[i + 1];
        int s;
        if (strcmp(k->text, label) == 0) {
            if (val->kind != YN_SCALAR || hvq_pl_is_null(val) || !val->text[0])
                return hvq_pl_mark_error(L->ctx, HVQ_E_INPUT, L->p, &val->mark,
                                         "'%s' must be %s, not %s", label,
                                         cand ? "a name" : "a glob",
                                         val->kind != YN_SCALAR ? hvq_pl_kind_name(val)
                                                         : "empty");
            o->match = hvq_pl_strdup(val->text);
            if (!o->match)
                return hvq_pl_nomem(L->ctx);
            o->mark = k->mark;
            continue;
        }
        if (!cand && strcmp(k->text, "on_error") == 0) {
            st = load_on_error(L, val, &o->on_error);
            if (st != HVQ_OK)
                return st;
            continue;
        }
        s = hvq_pl_stage_index(k->text);
        if (s == HVQ_STAGE_WRITER)
            return hvq_pl_mark_error(L->ctx, HVQ_E_INPUT, L->p, &k->mark,
                                     "stage 'writer' may not be %s per tensor",
                                     cand ? "chosen" : "overridden");
        if (s < 0)
            return hvq_pl_unknown_key(L, k, "key", cand ? " in candidate" : " in override",
                                      keys, n_keys);
        st = load_stage(L, &o->stages[s], s, k, val);
        if (st != HVQ_OK)
            return st;
    }
    if (!o->match && !cand)
        return hvq_pl_mark_error(L->ctx, HVQ_E_INPUT, L->p, &v->mark,
                                 "override without 'match: GLOB'");
    if (!o->match) {
        char name[32];
        snprintf(name, sizeof name, "c%zu", index + 1);
        if (!(o->match = hvq_pl_strdup(name)))
            return hvq_pl_nomem(L->ctx);
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
    if (hvq_pl_is_null(v))
        return HVQ_OK;
    if (v->kind != YN_SEQ)
        return hvq_pl_mark_error(L->ctx, HVQ_E_INPUT, L->p, &v->mark,
                                 "'%s' must be a sequence, not %s",
                                 cand ? "candidates" : "overrides", hvq_pl_kind_name(v));
    if (v->n == 0)
        return HVQ_OK;
    *list = calloc(v->n, sizeof **list);
    if (!*list)
        return hvq_pl_nomem(L->ctx);
    for (i = 0; i < v->n; i++) {
        *n = i + 1;
        st = load_override(L, &(*list)[i], v->kids[i], cand, i);
        if (st != HVQ_OK)
            return st;
        for (j = 0; cand && j < i; j++)
            if (strcmp((*list)[j].match, (*list)[i].match) == 0)
                return hvq_pl_mark_error(L->ctx, HVQ_E_INPUT, L->p, &(*list)[i].mark,
                                         "two candidates are named '%s'", (*list)[i].match);
    }
    return HVQ_OK;
}


/* target: { bpw: X } or { size: S }, optionally with metric: and
 * sample:; with candidates, metric: and sample: alone (the size from the
 * command line); null: none. */
static hvq_status load_target(loader *L, const ynode *key, const ynode *v)
{
    hvq_target_cfg *t = &L->p->target;
    char why[512];
    memset(t, 0, sizeof *t);
    if (hvq_pl_is_null(v))
        return HVQ_OK;
    hvq_status st = v->kind == YN_MAP ? hvq_pl_check_keys(L, v) : HVQ_OK;
    if (st != HVQ_OK)
        return st;
    if (v->kind != YN_MAP)
        return hvq_pl_mark_error(L->ctx, HVQ_E_INPUT, L->p, &v->mark,
                                 "'target' must be a mapping with bpw: or size: (e.g. target: "
                                 "{ bpw: 4.8 }), and optionally metric:");
    for (size_t i = 0; i < v->n; i += 2) {
        const ynode *k = v->kids[i], *val = v->kids[i + 1];
        if (strcmp(k->text, "bpw") != 0 && strcmp(k->text, "size") != 0 &&
            strcmp(k->text, "metric") != 0 && strcmp(k->text, "sample") != 0)
            return hvq_pl_unknown_key(L, k, "key", " in 'target'", hvq_pl_target_keys, 4);
        int sets_size = strcmp(k->text, "bpw") == 0 || strcmp(k->text, "size") == 0;
        if (sets_size && (t->bpw > 0 || t->bytes > 0))
            return hvq_pl_mark_error(L->ctx, HVQ_E_INPUT, L->p, &k->mark,
                                     "'target' takes one of bpw: and size:, not both");
        if (val->kind != YN_SCALAR || !hvq_pl_parse_target(t, k->text, val->text, why, sizeof why))
            return hvq_pl_mark_error(L->ctx, HVQ_E_INPUT, L->p, &val->mark, "%s",
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
    if (hvq_pl_is_null(v))
        return HVQ_OK;
    if (v->kind != YN_MAP)
        return hvq_pl_mark_error(L->ctx, HVQ_E_INPUT, L->p, &v->mark,
                                 "'evaluate' must be a mapping (tokens:, ctx:, "
                                 "windows:), not %s",
                                 hvq_pl_kind_name(v));
    st = hvq_pl_check_keys(L, v);
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
            return hvq_pl_unknown_key(L, k, "key", " in 'evaluate'", hvq_pl_eval_keys,
                                      N_EVAL_KEYS);
        if (val->kind != YN_SCALAR || hvq_pl_is_null(val) || !val->text[0])
            return hvq_pl_mark_error(L->ctx, HVQ_E_INPUT, L->p, &val->mark,
                                     "'evaluate.%s' must be %s, not %s", k->text,
                                     k->text[0] == 't' ? "a path" : "an integer",
                                     val->kind != YN_SCALAR ? hvq_pl_kind_name(val)
                                                     : "empty");
        if (k->text[0] == 't') {
            e->tokens = hvq_pl_strdup(val->text);
            if (!e->tokens)
                return hvq_pl_nomem(L->ctx);
            continue;
        }
        hvq_pl_eval_range(k->text, &min, &max);
        if (!hvq_pl_parse_eval_int(val->text, min, max,
                                   k->text[0] == 'c' ? &e->ctx : &e->windows))
            return hvq_pl_mark_error(L->ctx, HVQ_E_INPUT, L->p, &val->mark,
                                     "'evaluate.%s' must be an integer from %lld to "
                                     "%lld, got '%s'",
                                     k->text, (long long)min, (long long)max,
                                     val->text);
    }
    if (!e->tokens)
        return hvq_pl_mark_error(L->ctx, HVQ_E_INPUT, L->p, &key->mark,
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
        return hvq_pl_mark_error(L->ctx, HVQ_E_INPUT, p, &root->mark,
                                 "a pipeline must be a mapping (name:, input:, "
                                 "output:, stages:, ...), not %s",
                                 hvq_pl_kind_name(root));
    st = hvq_pl_check_keys(L, root);
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
            st = hvq_pl_want_scalar(L, v, key);
            if (st == HVQ_OK && !hvq_pl_parse_seed(v->text, &p->seed))
                st = hvq_pl_mark_error(L->ctx, HVQ_E_INPUT, p, &v->mark,
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
        else if (strcmp(key, "on_error") == 0)
            st = load_on_error(L, v, &p->on_error);
        else
            st = hvq_pl_unknown_key(L, k, "key", "", top_keys, N_TOP_KEYS);
        if (st != HVQ_OK)
            return st;
    }
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
    st = hvq_pl_read_file(ctx, path, &L.buf, &L.len);
    if (st != HVQ_OK)
        return st;
    L.p = hvq_pl_pipeline_alloc(path);
    if (!L.p) {
        free(L.buf);
        return hvq_pl_nomem(ctx);
    }
    if (!yaml_parser_initialize(&L.parser)) {
        free(L.buf);
        hvq_pipeline_free(L.p);
        return hvq_pl_nomem(ctx);
    }
    yaml_parser_set_input_string(&L.parser, L.buf, L.len);

    st = hvq_pl_parse_document(&L, &root);
    if (st == HVQ_OK && (!root || hvq_pl_is_null(root))) {
        hvq_mark m = {L.p->path, NULL, 1, 1};
        if (root)
            m = root->mark;
        st = hvq_pl_mark_error(ctx, HVQ_E_INPUT, L.p, &m,
                               "the pipeline is empty (expected a mapping with "
                               "'stages:')");
    }
    if (st == HVQ_OK)
        st = load_root(&L, root);

    hvq_pl_ynode_free(root);
    yaml_parser_delete(&L.parser);
    free(L.buf);
    if (st != HVQ_OK) {
        hvq_pipeline_free(L.p);
        return st;
    }
    *out = L.p;
    return HVQ_OK;
}
