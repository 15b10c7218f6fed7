/* Pipelines: validation against the plugins' declared parameters
 * (hvq_pipeline_validate). */
#include "config.h"

#include "pipeline_int.h"

#include "ctx.h"
#include "params.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
        hvq_buf_printf(b, "(no %s plugins are loaded)", hvq_pl_stage_names[s]);
        return;
    }
    hvq_buf_puts(b, "(available: ");
    hvq_pl_join(b, names, n);
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

    pl = hvq_registry_find(reg, hvq_pl_stage_kinds[s], name);
    if (pl) {
        *out = pl;
        return HVQ_OK;
    }
    names = plugins_of(reg, hvq_pl_stage_kinds[s], &n);
    if (!names)
        return hvq_pl_nomem(ctx);
    hvq_buf_init(&b);
    hvq_pl_mark_prefix(&b, p, m);
    hvq_buf_printf(&b, "%sstage '%s': ", where, hvq_pl_stage_names[s]);
    other = hvq_registry_find_any(reg, name);
    near = hvq_pl_nearest(name, names, n);
    if (is_default) {
        hvq_buf_printf(&b, "the default plugin '%s' is not available ", name);
    } else if (other) {
        char kinds[128];
        hvq_buf_printf(&b, "'%s' is a %s plugin, not a %s plugin ", name,
                       hvq_kind_names(other->desc.kinds, kinds, sizeof kinds),
                       hvq_pl_stage_names[s]);
    } else if (near) {
        hvq_buf_printf(&b, "unknown plugin '%s'; did you mean '%s'? ", name,
                       near);
    } else {
        hvq_buf_printf(&b, "unknown plugin '%s' ", name);
    }
    append_available(&b, names, n, s);
    free(names);
    return hvq_pl_buf_error(ctx, HVQ_E_INPUT, &b);
}

/* The declared defaults of plugin pl into vals (n of them); required
 * parameters are left unset. */
static hvq_status default_values(hvq_ctx *ctx, const hvq_loaded_plugin *pl,
                                 hvq_value *vals, size_t n)
{
    const hvq_param_spec *specs = pl->desc.params;
    char why[1024];
    size_t i;
    for (i = 0; i < n; i++) {
        vals[i].type = specs[i].type;
        if (!specs[i].default_value)
            continue; /* required; checked by resolve_values */
        if (hvq_param_parse(&specs[i], specs[i].default_value, &vals[i],
                            why, sizeof why) != HVQ_OK)
            return hvq_error(ctx, HVQ_E_INTERNAL,
                             "plugin '%s' (%s): the default value '%s' of "
                             "parameter '%s' is invalid: %s (a bug in "
                             "the plugin)",
                             pl->desc.name, pl->path ? pl->path : "built in",
                             specs[i].default_value, specs[i].name, why);
        vals[i].is_default = 1;
    }
    return HVQ_OK;
}

/* "PREFIX: WHEREstage 'S' (plugin 'P'): unknown parameter 'x'; did you
 * mean 'y'?" (or the list of the plugin's parameters). */
static hvq_status unknown_param(hvq_ctx *ctx, const hvq_pipeline *p, int s,
                                const char *where, const hvq_loaded_plugin *pl,
                                const hvq_setting *set)
{
    const hvq_param_spec *specs = pl->desc.params;
    size_t n = hvq_param_count(specs), k;
    const char **names = malloc((n ? n : 1) * sizeof *names);
    const char *near;
    hvq_buf b;
    if (!names)
        return hvq_pl_nomem(ctx);
    for (k = 0; k < n; k++)
        names[k] = specs[k].name;
    near = hvq_pl_nearest(set->key, names, n);
    hvq_buf_init(&b);
    hvq_pl_mark_prefix(&b, p, &set->key_mark);
    hvq_buf_printf(&b, "%sstage '%s' (plugin '%s'): unknown parameter '%s'",
                   where, hvq_pl_stage_names[s], pl->desc.name, set->key);
    if (near) {
        hvq_buf_printf(&b, "; did you mean '%s'?", near);
    } else if (n == 0) {
        hvq_buf_puts(&b, "; the plugin takes no parameters");
    } else {
        hvq_buf_puts(&b, " (parameters: ");
        hvq_pl_join(&b, names, n);
        hvq_buf_puts(&b, ")");
    }
    free(names);
    return hvq_pl_buf_error(ctx, HVQ_E_INPUT, &b);
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
    hvq_status st = HVQ_OK;
    char why[1024];

    vals = calloc(n ? n : 1, sizeof *vals);
    if (!vals)
        return hvq_pl_nomem(ctx);
    if (base)
        memcpy(vals, base, n * sizeof *vals);
    else
        st = default_values(ctx, pl, vals, n);

    for (i = 0; st == HVQ_OK && i < c->n_settings; i++) {
        const hvq_setting *set = &c->settings[i];
        long idx = hvq_param_index(specs, set->key);
        if (idx < 0)
            st = unknown_param(ctx, p, s, where, pl, set);
        else if (hvq_param_parse(&specs[idx], set->value, &vals[idx], why,
                                 sizeof why) != HVQ_OK)
            st = hvq_pl_mark_error(ctx, HVQ_E_INPUT, p, &set->value_mark,
                                   "%sstage '%s' (plugin '%s'): parameter '%s': %s",
                                   where, hvq_pl_stage_names[s], pname, set->key,
                                   why);
        else
            vals[idx].is_default = 0;
    }
    for (i = 0; st == HVQ_OK && i < n; i++)
        if (!vals[i].s)
            st = hvq_pl_mark_error(
                ctx, HVQ_E_INPUT, p, stage_mark,
                "%sstage '%s' (plugin '%s'): missing required parameter '%s'",
                where, hvq_pl_stage_names[s], pname, specs[i].name);
    if (st != HVQ_OK) {
        free(vals);
        return st;
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
    const char *name = c->plugin ? c->plugin : hvq_pl_stage_defaults[s];
    const hvq_loaded_plugin *pl;
    hvq_mark none = {NULL, NULL, 0, 0};
    hvq_status st;

    if (!name) {
        const char **names;
        size_t n;
        hvq_buf b;
        names = plugins_of(reg, hvq_pl_stage_kinds[s], &n);
        if (!names)
            return hvq_pl_nomem(ctx);
        hvq_buf_init(&b);
        if (c->present) {
            hvq_pl_mark_prefix(&b, p, &c->mark);
            hvq_buf_printf(&b, "stage '%s' names no plugin; ",
                           hvq_pl_stage_names[s]);
        } else {
            hvq_pl_mark_prefix(&b, p, &none);
            hvq_buf_printf(&b, "missing stage '%s'; ", hvq_pl_stage_names[s]);
        }
        if (n) {
            hvq_buf_printf(&b, "available %s plugins: ", hvq_pl_stage_names[s]);
            hvq_pl_join(&b, names, n);
        } else {
            hvq_buf_printf(&b, "no %s plugins are loaded", hvq_pl_stage_names[s]);
        }
        free(names);
        return hvq_pl_buf_error(ctx, HVQ_E_INPUT, &b);
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
        return hvq_pl_mark_error(ctx, HVQ_E_INPUT, p, &p->target.mark,
                                 "'target' needs bpw: or size: (e.g. target: { bpw: 4.8 })");
    if (p->target.present && p->n_candidates == 0)
        return hvq_pl_mark_error(ctx, HVQ_E_INPUT, p, &p->target.mark,
                                 "a size target needs 'candidates:', the settings to choose "
                                 "from per tensor (see pipelines/best.yaml)");
    if (!p->target.present && p->n_candidates > 0)
        return hvq_pl_mark_error(ctx, HVQ_E_INPUT, p, &none,
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

    hvq_pl_invalidate(p);
    if (p->evaluate.present && !p->evaluate.tokens)
        return hvq_pl_mark_error(ctx, HVQ_E_INPUT, p, &p->evaluate.mark,
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
                st = hvq_pl_mark_error(ctx, HVQ_E_INPUT, p, &o->stages[s].mark,
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
    if (st == HVQ_OK)
        st = hvq_pipeline_fit_writer(ctx, p, reg);
    if (st != HVQ_OK)
        goto fail;
    return HVQ_OK;

fail:
    hvq_pl_invalidate(p);
    return st;
}
