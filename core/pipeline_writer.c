/* Pipelines: which writer writes the output (hvq_pipeline_fit_writer).
 *
 * The rule (docs/plugins.md, "Which writer writes an output"): the output's
 * extension names a sink format (the sink whose extensions match); a
 * writer that declares writer_formats writes only those. When the
 * pipeline's writer does not write the output's format, each writer of the
 * registry that has writer_keeps is asked, in registry order, whether it
 * writes the pipeline's encodings into that format as they are; the first
 * that does replaces the pipeline's writer (stages.writer set as by
 * --set, so the recorded pipeline names it), with one INFO line. When none
 * does, the run is refused with a message naming the way out. */
#include "config.h"

#include "pipeline_int.h"

#include "ctx.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int writes(const hvq_plugin *w, const char *format)
{
    return !HVQ_PLUGIN_HAS(w, writer_formats) || hvq_list_has_word(w->writer_formats, format);
}

/* writer_keeps' view of the pipeline: configuration k of a stage is the
 * stage's own (k = 0), then each override's and candidate's that sets
 * it. */
static const hvq_stage_cfg *config_at(const hvq_pipeline *p, int s, size_t k)
{
    if (k == 0)
        return &p->stages[s];
    for (size_t j = 0; j < p->n_overrides + p->n_candidates; j++) {
        const hvq_override *o =
            j < p->n_overrides ? &p->overrides[j] : &p->candidates[j - p->n_overrides];
        if (o->stages[s].present && o->stages[s].resolved && --k == 0)
            return &o->stages[s];
    }
    return NULL;
}

static const char *config_param(void *ud, const char *stage, size_t k, const char *key)
{
    const hvq_pipeline *p = ud;
    int s = 0;
    while (s < HVQ_STAGE_WRITER && strcmp(hvq_stage_name(s), stage) != 0)
        s++;
    const hvq_stage_cfg *c = s < HVQ_STAGE_WRITER ? config_at(p, s, k) : NULL;
    if (!c || !c->resolved)
        return NULL;
    if (!key)
        return c->resolved->desc.name;
    const hvq_param_spec *spec = c->resolved->desc.params;
    for (size_t j = 0; spec && j < c->n_values && spec[j].name; j++)
        if (strcmp(spec[j].name, key) == 0)
            return c->values[j].s;
    return NULL;
}

/* Sets stages.writer to writer w with settings, and validates again. */
static hvq_status substitute(hvq_ctx *ctx, hvq_pipeline *p, const hvq_registry *reg,
                             const char *w, const char *const *settings)
{
    char kv[512];
    snprintf(kv, sizeof kv, "stages.writer.plugin=%s", w);
    hvq_status st = hvq_pipeline_set(ctx, p, kv);
    for (size_t i = 0; st == HVQ_OK && settings[i]; i++) {
        snprintf(kv, sizeof kv, "stages.writer.%s", settings[i]);
        st = hvq_pipeline_set(ctx, p, kv);
    }
    return st == HVQ_OK ? hvq_pipeline_validate(ctx, p, reg) : st;
}

/* "'kmeans', 'ggml'": the clusterers the pipeline uses, into buf. */
static void clusterers(const hvq_pipeline *p, char *buf, size_t len)
{
    size_t at = 0;
    buf[0] = '\0';
    for (size_t k = 0; at < len; k++) {
        const char *name = config_param((void *)p, "clusterer", k, NULL);
        if (!name)
            break;
        if (strstr(buf, name))
            continue;
        at += (size_t)snprintf(buf + at, len - at, "%s'%s'", at ? ", " : "", name);
    }
}

hvq_status hvq_pipeline_fit_writer(hvq_ctx *ctx, hvq_pipeline *p, const hvq_registry *reg)
{
    const hvq_loaded_plugin *wp = p->stages[HVQ_STAGE_WRITER].resolved;
    const hvq_loaded_plugin *sink = p->output && *p->output ? hvq_registry_sink_of(reg, p->output)
                                                            : NULL;
    const char *format = sink ? sink->desc.name : NULL;
    if (!wp || !format || writes(&wp->desc, format))
        return HVQ_OK;
    for (size_t i = 0; i < hvq_registry_count(reg); i++) {
        const hvq_plugin *d = &hvq_registry_at(reg, i)->desc;
        if (!(d->kinds & HVQ_KIND_WRITER) || d == &wp->desc || !writes(d, format) ||
            !HVQ_PLUGIN_HAS(d, writer_keeps))
            continue;
        const char *const *settings = d->writer_keeps(ctx, format, config_param, p);
        if (!settings)
            continue;
        char said[256] = "";
        for (size_t j = 0, at = 0; settings[j] && at < sizeof said; j++)
            at += (size_t)snprintf(said + at, sizeof said - at, ", %s", settings[j]);
        hvq_log(ctx, HVQ_LOG_INFO,
                "%s: writer '%s' does not write %s; writing it with writer '%s'%s, which "
                "keeps the pipeline's encodings as they are",
                p->output, wp->desc.name, format, d->name, said);
        return substitute(ctx, p, reg, d->name, settings);
    }
    char used[256];
    clusterers(p, used, sizeof used);
    return hvq_error(ctx, HVQ_E_INPUT,
                     "%s: writer '%s' does not write %s (it writes %s), and no writer writes "
                     "this pipeline's encodings (clusterer %s) into %s without decompressing "
                     "them%s%s",
                     p->output, wp->desc.name, format, wp->desc.writer_formats, used, format,
                     HVQ_PLUGIN_HAS(&wp->desc, writer_elsewhere) ? ". " : "",
                     HVQ_PLUGIN_HAS(&wp->desc, writer_elsewhere) ? wp->desc.writer_elsewhere
                                                                 : "");
}
