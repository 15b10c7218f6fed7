/* The report of a run: a table for people, JSON for programs. */
#include "config.h"

#include "report.h"
#include "util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

double hvq_report_bpp_paper(const hvq_run_report *rep)
{
    return rep->compressed_params ? rep->paper_bits_compressed / (double)rep->compressed_params
                                  : 0.0;
}

double hvq_report_bpp_paper_model(const hvq_run_report *rep)
{
    if (!rep->total_params)
        return 0.0;
    double passthrough = (double)(rep->total_params - rep->compressed_params) * 16.0;
    return (rep->paper_bits_compressed + passthrough) / (double)rep->total_params;
}

double hvq_report_rel_fro(const hvq_run_report *rep)
{
    return rep->w2 > 0 ? sqrt(rep->err2 / rep->w2) : 0.0;
}

double hvq_report_rel_hessian(const hvq_run_report *rep)
{
    return rep->hw2 > 0 ? rep->herr2 / rep->hw2 : 0.0;
}

double hvq_report_sqnr_db(const hvq_run_report *rep)
{
    return rep->err2 > 0 ? 10.0 * log10(rep->w2 / rep->err2) : INFINITY;
}

double hvq_report_bpp_stored(const hvq_run_report *rep)
{
    return rep->compressed_params
               ? (double)rep->stored_bytes_compressed * 8.0 / (double)rep->compressed_params
               : 0.0;
}

double hvq_report_bpp_file(const hvq_run_report *rep)
{
    return rep->total_params ? (double)rep->output_bytes * 8.0 / (double)rep->total_params : 0.0;
}

static void shape_text(const hvq_tensor_report *t, char *buf, size_t len)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int d = 0; d < t->ndim && used < len; d++)
        used += (size_t)snprintf(buf + used, len - used, "%s%lld", d ? "x" : "",
                                 (long long)t->shape[d]);
    if (t->ndim == 0)
        snprintf(buf, len, "scalar");
}

/* One line per stage not at its default (another plugin than the stage's
 * default, or parameters the pipeline set): the plugin and those
 * parameters, e.g. "  hessian: calibrate (tokens t.npy, windows 16)". */
static void print_stages(FILE *f, const hvq_pipeline *p)
{
    for (int s = 0; s < HVQ_STAGE_COUNT; s++) {
        const hvq_stage_cfg *c = &p->stages[s];
        const char *def = hvq_stage_default_plugin(s);
        size_t set = 0;
        if (!c->resolved)
            continue;
        for (size_t k = 0; k < c->n_values; k++)
            set += !c->values[k].is_default;
        if (!set && def && strcmp(def, c->resolved->desc.name) == 0)
            continue;
        fprintf(f, "  %s: %s", hvq_stage_name(s), c->resolved->desc.name);
        for (size_t k = 0, shown = 0; k < c->n_values; k++)
            if (!c->values[k].is_default)
                fprintf(f, "%s%s %s", shown++ ? ", " : " (", c->resolved->desc.params[k].name,
                        c->values[k].s ? c->values[k].s : "");
        fputs(set ? ")\n" : "\n", f);
    }
}

void hvq_report_print(FILE *f, const hvq_run_report *rep)
{
    const hvq_pipeline *p = rep->pipeline;
    fprintf(f, "%-44s %-10s %-10s %8s %9s %9s %8s %8s\n", "tensor", "shape", "method",
            "bpp", "rel.err", "H-err", "SQNR dB", "time s");
    size_t passed = 0;
    for (size_t i = 0; i < rep->n; i++) {
        const hvq_tensor_report *t = &rep->t[i];
        if (!t->compressed) {
            passed++;
            continue;
        }
        char shape[64];
        shape_text(t, shape, sizeof shape);
        char shown[512];
        fprintf(f, "%-44s %-10s %-10s %8.4f %9.3e %9.3e %8.2f %8.3f\n",
                hvq_printable(t->name, shown, sizeof shown), shape,
                t->candidate[0] ? t->candidate : t->clusterer, t->paper_bits / (double)t->params, t->rel_fro, t->rel_hessian,
                t->sqnr_db, t->seconds);
    }
    fprintf(f, "\n%s: %s -> %s (%s, writer %s)\n", p->name ? p->name : p->path, p->input,
            p->output, rep->source_format, rep->writer);
    print_stages(f, p);
    fprintf(f, "  tensors: %zu compressed, %zu passed through; parameters: %llu of %llu "
               "compressed\n",
            rep->n - passed, passed, (unsigned long long)rep->compressed_params,
            (unsigned long long)rep->total_params);
    fprintf(f, "  bits per parameter, compressed tensors: %.4f paper accounting, %.4f as "
               "stored (%llu bytes of components and scales)\n",
            hvq_report_bpp_paper(rep), hvq_report_bpp_stored(rep),
            (unsigned long long)rep->stored_bytes_compressed);
    fprintf(f, "  bits per parameter, whole model: %.4f paper accounting (pass-through at "
               "16 bits), %.4f file written (%llu bytes)\n",
            hvq_report_bpp_paper_model(rep), hvq_report_bpp_file(rep),
            (unsigned long long)rep->output_bytes);
    if (rep->allocated) {
        const hvq_target_cfg *tg = &p->target;
        fprintf(f, "  size target: ");
        if (tg->bpw > 0)
            fprintf(f, "%.4g bits per weight of the compressed tensors", tg->bpw);
        else
            fprintf(f, "%llu bytes of tensors", (unsigned long long)tg->bytes);
        fprintf(f, " (%llu bytes for the compressed ones, %.4f bpw); achieved %.4f bpw; "
                   "%zu candidates measured in %.2f s",
                (unsigned long long)rep->alloc_budget,
                rep->compressed_params ? (double)rep->alloc_budget * 8.0 /
                                             (double)rep->compressed_params : 0.0,
                hvq_report_bpp_stored(rep), p->n_candidates, rep->alloc_seconds);
        if (rep->alloc_fallbacks)
            fprintf(f, "; %zu tensor%s fit no candidate", rep->alloc_fallbacks,
                    rep->alloc_fallbacks == 1 ? "" : "s");
        fputc('\n', f);
    }
    fprintf(f, "  errors, compressed tensors: relative Frobenius %.4e, Hessian-weighted %.4e, "
               "SQNR %.2f dB\n",
            hvq_report_rel_fro(rep), hvq_report_rel_hessian(rep), hvq_report_sqnr_db(rep));
    fprintf(f, "  time: %.2f s on %d thread%s; peak resident memory %.0f MiB\n", rep->seconds,
            rep->threads, rep->threads == 1 ? "" : "s", rep->peak_rss_mib);
    fprintf(f, "  seconds per stage:");
    for (int s = 0; s < HVQ_TIME_STAGES; s++)
        fprintf(f, " %s %.2f", hvq_time_stage_names[s], rep->stage_seconds[s]);
    fputc('\n', f);
}

static void json_num(hvq_buf *b, double v)
{
    if (isfinite(v))
        hvq_buf_printf(b, "%.9g", v);
    else
        hvq_buf_puts(b, "null");
}

/* , "key": value (null when not finite). */
static void json_key_num(hvq_buf *b, const char *key, double v)
{
    hvq_buf_printf(b, ", \"%s\": ", key);
    json_num(b, v);
}

/* "stage_seconds": {"convert": ..., ...}; only the writer's for a tensor
 * passed through. */
static void json_stages(hvq_buf *b, const double *sec, int writer_only)
{
    hvq_buf_puts(b, "\"stage_seconds\": {");
    for (int s = writer_only ? HVQ_TIME_WRITER : 0; s < HVQ_TIME_STAGES; s++) {
        hvq_buf_printf(b, "%s\"%s\": ", s > (writer_only ? HVQ_TIME_WRITER : 0) ? ", " : "",
                       hvq_time_stage_names[s]);
        hvq_buf_printf(b, "%.6f", sec[s]);
    }
    hvq_buf_puts(b, "}");
}

/* The report's head: the pipeline, its input and output, the effective
 * YAML. */
static void json_head(hvq_buf *b, const hvq_run_report *rep)
{
    const hvq_pipeline *p = rep->pipeline;
    hvq_buf_puts(b, "{\n  \"hvqconv\": \"" PACKAGE_VERSION "\",\n  \"pipeline\": ");
    hvq_buf_json_string(b, p->name ? p->name : "");
    hvq_buf_puts(b, ",\n  \"pipeline_file\": ");
    hvq_buf_json_string(b, p->path);
    hvq_buf_puts(b, ",\n  \"input\": ");
    hvq_buf_json_string(b, p->input);
    hvq_buf_puts(b, ",\n  \"output\": ");
    hvq_buf_json_string(b, p->output);
    hvq_buf_puts(b, ",\n  \"source_format\": ");
    hvq_buf_json_string(b, rep->source_format ? rep->source_format : "");
    hvq_buf_puts(b, ",\n  \"writer\": ");
    hvq_buf_json_string(b, rep->writer ? rep->writer : "");
    char *yaml = hvq_pipeline_to_yaml(p); /* the effective pipeline */
    hvq_buf_puts(b, ",\n  \"pipeline_yaml\": ");
    hvq_buf_json_string(b, yaml ? yaml : "");
    free(yaml);
    hvq_buf_printf(b, ",\n  \"seed\": %llu,\n  \"threads\": %d,\n  \"tensors\": [",
                   (unsigned long long)p->seed, rep->threads);
}

/* One tensor's entry (its braces included). */
static void json_tensor(hvq_buf *b, const hvq_tensor_report *t)
{
    hvq_buf_puts(b, "{\"name\": ");
    hvq_buf_json_string(b, t->name);
    hvq_buf_puts(b, ", \"dtype\": ");
    hvq_buf_json_string(b, t->dtype);
    hvq_buf_puts(b, ", \"shape\": [");
    for (int d = 0; d < t->ndim; d++)
        hvq_buf_printf(b, "%s%lld", d ? ", " : "", (long long)t->shape[d]);
    hvq_buf_printf(b, "], \"params\": %llu, \"compressed\": %s",
                   (unsigned long long)t->params, t->compressed ? "true" : "false");
    if (!t->compressed) {
        hvq_buf_puts(b, ", \"passed_through\": ");
        hvq_buf_json_string(b, t->why_passed ? t->why_passed : "");
        if (t->error) { /* on_error: passthrough */
            hvq_buf_puts(b, ", \"fallback\": \"passthrough\", \"error\": ");
            hvq_buf_json_string(b, t->error);
        }
        hvq_buf_puts(b, ", ");
        json_stages(b, t->stage_seconds, 1);
        hvq_buf_puts(b, "}");
        return;
    }
    hvq_buf_puts(b, ", \"hessian\": ");
    hvq_buf_json_string(b, t->hessian);
    hvq_buf_puts(b, ", \"importance\": ");
    hvq_buf_json_string(b, t->importance);
    hvq_buf_puts(b, ", \"clusterer\": ");
    hvq_buf_json_string(b, t->clusterer);
    hvq_buf_puts(b, ", \"residual\": ");
    hvq_buf_json_string(b, t->residual);
    if (t->candidate[0]) {
        hvq_buf_puts(b, ", \"candidate\": ");
        hvq_buf_json_string(b, t->candidate);
        hvq_buf_printf(b, ", \"estimated_bytes\": %llu, \"estimated_error\": ",
                       (unsigned long long)t->est_bytes);
        json_num(b, t->est_err);
    }
    hvq_buf_printf(b, ", \"rows\": %llu, \"cols\": %llu, \"sparse_entries\": %llu",
                   (unsigned long long)t->rows, (unsigned long long)t->cols,
                   (unsigned long long)t->n_sparse);
    json_key_num(b, "paper_bits", t->paper_bits);
    json_key_num(b, "bpp_paper", t->paper_bits / (double)t->params);
    hvq_buf_printf(b, ", \"stored_bytes\": %llu, \"bpp_stored\": ",
                   (unsigned long long)t->stored_bytes);
    json_num(b, (double)t->stored_bytes * 8.0 / (double)t->params);
    json_key_num(b, "rel_frobenius_error", t->rel_fro);
    json_key_num(b, "rel_hessian_error", t->rel_hessian);
    json_key_num(b, "sqnr_db", t->sqnr_db);
    json_key_num(b, "max_abs_error_sparse", t->max_abs_err_sparse);
    json_key_num(b, "seconds", t->seconds);
    hvq_buf_puts(b, ", ");
    json_stages(b, t->stage_seconds, 0);
    hvq_buf_puts(b, "}");
}

/* The totals over every tensor. */
static void json_totals(hvq_buf *b, const hvq_run_report *rep)
{
    hvq_buf_printf(b, "\n  ],\n  \"totals\": {\"params\": %llu, \"compressed_params\": %llu, "
                      "\"output_bytes\": %llu, \"bpp_paper\": ",
                   (unsigned long long)rep->total_params,
                   (unsigned long long)rep->compressed_params,
                   (unsigned long long)rep->output_bytes);
    json_num(b, hvq_report_bpp_paper(rep));
    hvq_buf_printf(b, ", \"stored_bytes_compressed\": %llu, \"bpp_stored\": ",
                   (unsigned long long)rep->stored_bytes_compressed);
    json_num(b, hvq_report_bpp_stored(rep));
    json_key_num(b, "bpp_paper_model", hvq_report_bpp_paper_model(rep));
    json_key_num(b, "bpp_file", hvq_report_bpp_file(rep));
    json_key_num(b, "rel_frobenius_error", hvq_report_rel_fro(rep));
    json_key_num(b, "rel_hessian_error", hvq_report_rel_hessian(rep));
    json_key_num(b, "sqnr_db", hvq_report_sqnr_db(rep));
    json_key_num(b, "seconds", rep->seconds);
    hvq_buf_puts(b, ", ");
    json_stages(b, rep->stage_seconds, 0);
    json_key_num(b, "peak_rss_mib", rep->peak_rss_mib);
    hvq_buf_puts(b, "}");
}

/* The size allocation (--target-bpw/--target-size), when there was one. */
static void json_allocation(hvq_buf *b, const hvq_run_report *rep)
{
    const hvq_pipeline *p = rep->pipeline;
    if (rep->allocated) {
        hvq_buf_puts(b, ",\n  \"allocation\": {\"target_bpw\": ");
        json_num(b, p->target.bpw > 0 ? p->target.bpw : NAN);
        hvq_buf_printf(b, ", \"target_bytes\": %llu, \"budget_bytes\": %llu, "
                          "\"min_bytes\": %llu, \"passthrough_bytes\": %llu, "
                          "\"achieved_bytes\": %llu, \"candidates\": %zu, "
                          "\"fallbacks\": %zu, \"seconds\": ",
                       (unsigned long long)p->target.bytes,
                       (unsigned long long)rep->alloc_budget,
                       (unsigned long long)rep->alloc_min_bytes,
                       (unsigned long long)rep->alloc_passthrough,
                       (unsigned long long)rep->stored_bytes_compressed, p->n_candidates,
                       rep->alloc_fallbacks);
        json_num(b, rep->alloc_seconds);
        hvq_buf_puts(b, "}");
    }
}

void hvq_report_json(hvq_buf *b, const hvq_run_report *rep)
{
    json_head(b, rep);
    for (size_t i = 0; i < rep->n; i++) {
        hvq_buf_puts(b, i ? ",\n    " : "\n    ");
        json_tensor(b, &rep->t[i]);
    }
    json_totals(b, rep);
    json_allocation(b, rep);
    hvq_buf_puts(b, "\n}\n");
}

/* A perplexity cell: the value, or "-" when not measured. */
static void ppl_cell(FILE *f, double v)
{
    if (isfinite(v))
        fprintf(f, " %9.4f", v);
    else
        fprintf(f, " %9s", "-");
}

void hvq_report_compare(FILE *f, const hvq_run_report *const *reps, size_t n,
                        const hvq_compare_ppl *ppl)
{
    fprintf(f, "%-22s %-10s %9s %9s %9s %9s %10s %10s %8s %8s", "pipeline", "clusterer",
            "bpp", "bpp", "bpp", "bpp", "rel.err", "H-err", "SQNR", "time");
    fputs(ppl ? "       PPL\n" : "\n", f);
    fprintf(f, "%-22s %-10s %9s %9s %9s %9s %10s %10s %8s %8s\n", "", "",
            "paper", "stored", "model", "file", "", "", "dB", "s");
    if (ppl) { /* the input as it is: 16 bits per parameter in the paper's accounting */
        fprintf(f, "%-22s %-10s %9.4f %9s %9.4f %9.4f %10s %10s %8s %8s", "uncompressed", "-",
                16.0, "-", 16.0, ppl->input_bpp_file, "-", "-", "-", "-");
        ppl_cell(f, ppl->input_ppl);
        fputc('\n', f);
    }
    for (size_t i = 0; i < n; i++) {
        const hvq_run_report *r = reps[i];
        const hvq_pipeline *p = r->pipeline;
        /* the clusterer of the first compressed tensor; "allocated" when a
         * size target chose each tensor's */
        const char *clus = r->allocated ? "allocated" : "-";
        for (size_t t = 0; t < r->n && !r->allocated; t++)
            if (r->t[t].compressed) {
                clus = r->t[t].clusterer;
                break;
            }
        fprintf(f, "%-22.22s %-10.10s %9.4f %9.4f %9.4f %9.4f %10.3e %10.3e %8.2f %8.2f",
                p->name && *p->name ? p->name : p->path, clus, hvq_report_bpp_paper(r),
                hvq_report_bpp_stored(r), hvq_report_bpp_paper_model(r),
                hvq_report_bpp_file(r), hvq_report_rel_fro(r), hvq_report_rel_hessian(r),
                hvq_report_sqnr_db(r), r->seconds);
        if (ppl)
            ppl_cell(f, ppl->ppl[i]);
        fputc('\n', f);
    }
    fputs("\nbpp paper: the paper's accounting over the compressed tensors; stored: their\n"
          "components and scales as written; model: the paper's accounting over every\n"
          "tensor, pass-through ones at 16 bits; file: bytes written * 8 / parameters.\n"
          "Errors are over all compressed tensors together (H-err weights columns by H).\n",
          f);
    if (ppl)
        fprintf(f, "PPL: perplexity of each output, and of the input as it is (uncompressed:\n"
                   "%s), on %llu tokens (%llu windows of %d) of\n%s.\n",
                ppl->input, (unsigned long long)ppl->n_scored,
                (unsigned long long)ppl->n_windows, ppl->ctx_len, ppl->tokens);
}
