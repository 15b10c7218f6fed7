/* The allocation pass of a size target: every candidate measured on every
 * selected tensor, then one chosen per tensor (core/alloc.h). */
#include "config.h"

#include "alloc.h"
#include "ctx.h"
#include "dtype.h"
#include "driver_int.h"
#include "util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The earlier candidate whose effective settings for this tensor are
 * those of candidate c (an override may pin some stages), or -1. */
static long same_settings(const hvq_pipeline *p, const char *name, size_t c)
{
    for (size_t e = 0; e < c; e++) {
        int same = 1;
        for (int s = 0; s < HVQ_STAGE_WRITER && same; s++)
            same = hvq_pipeline_cfg_for(p, s, name, (long)e) ==
                   hvq_pipeline_cfg_for(p, s, name, (long)c);
        if (same)
            return (long)e;
    }
    return -1;
}

/* What a tensor is measured on: itself, or (target.sample = S rows, for a
 * tensor of more than 2S rows) two nested samples of its rows: t[0] holds
 * S rows spread evenly (row i * rows / S), t[1] every other one of those.
 * The size of the whole tensor is extrapolated along the line through the
 * two samples' sizes (exact for sizes affine in the rows: blocks, scales
 * and gains per row plus codebooks per tensor), its errors scaled from
 * t[0] by rows / S. */
typedef struct sample_set {
    int n;              /* 0: the whole tensor; 2: samples */
    uint64_t rows, r[2];
    hvq_tensor t[2];
    void *buf[2];
} sample_set;

static void samples_free(sample_set *ss)
{
    free(ss->buf[0]);
    free(ss->buf[1]);
    memset(ss, 0, sizeof *ss);
}

static hvq_status samples_make(hvq_ctx *ctx, const hvq_tensor *t, uint64_t s, sample_set *ss)
{
    memset(ss, 0, sizeof *ss);
    uint64_t rows = t->info.ndim > 0 ? (uint64_t)t->info.shape[0] : 0;
    if (s == 0 || rows <= 2 * s || t->info.nbytes % rows)
        return HVQ_OK;
    size_t rb = (size_t)(t->info.nbytes / rows);
    ss->rows = rows;
    ss->r[0] = s;
    ss->r[1] = (s + 1) / 2;
    for (int k = 0; k < 2; k++) {
        if (!(ss->buf[k] = malloc((size_t)ss->r[k] * rb + 1))) {
            samples_free(ss);
            return hvq_error(ctx, HVQ_E_NOMEM, "out of memory");
        }
        for (uint64_t i = 0; i < ss->r[k]; i++) {
            uint64_t src = (k ? 2 * i : i) * rows / s; /* t[1]: the even rows of t[0] */
            memcpy((char *)ss->buf[k] + i * rb, (const char *)t->data + src * rb, rb);
        }
        ss->t[k].info = t->info;
        ss->t[k].info.shape[0] = (int64_t)ss->r[k];
        ss->t[k].info.nbytes = ss->r[k] * rb;
        ss->t[k].data = ss->buf[k];
    }
    ss->n = 2;
    return HVQ_OK;
}

/* One compression with setting cand: its true size and error sums. */
static hvq_status compress_sizes(run_state *rs, const hvq_tensor *t, long cand, work *wk,
                                 uint64_t *bytes, double *herr2, double *hw2)
{
    hvq_tensor_report tr;
    hvq_encoded cenc, renc;
    hvq_result res;
    memset(&tr, 0, sizeof tr);
    memset(&res, 0, sizeof res);
    hvq_encoded_init(&cenc);
    hvq_encoded_init(&renc);
    hvq_status st = hvq_compress_tensor(rs, t, cand, wk, &tr, &cenc, &renc, &res);
    hvq_encoded_clear(&cenc);
    hvq_encoded_clear(&renc);
    *bytes = tr.stored_bytes;
    *herr2 = tr.herr2;
    *hw2 = tr.hw2;
    return st;
}

/* Compresses t (or its samples) with setting cand (-1: the pipeline's
 * stages) and keeps only the true size and the error the metric weighs. */
static hvq_status measure_once(run_state *rs, const sample_set *ss, const hvq_tensor *t,
                               long cand, work *wk, hvq_alloc_option *o)
{
    uint64_t b[2] = {0, 0};
    double e[2] = {0, 0}, w[2] = {0, 0};
    hvq_status st = compress_sizes(rs, ss->n ? &ss->t[0] : t, cand, wk, &b[0], &e[0], &w[0]);
    if (st == HVQ_OK && ss->n)
        st = compress_sizes(rs, &ss->t[1], cand, wk, &b[1], &e[1], &w[1]);
    o->feasible = st == HVQ_OK;
    o->bytes = b[0];
    if (ss->n) {
        double slope = b[0] > b[1] ? (double)(b[0] - b[1]) / (double)(ss->r[0] - ss->r[1]) : 0;
        double f = (double)ss->rows / (double)ss->r[0];
        o->bytes = b[0] + (uint64_t)llround(slope * (double)(ss->rows - ss->r[0]));
        e[0] *= f;
        w[0] *= f;
    }
    /* metric: relative weighs each tensor's error by its own Hessian-
     * weighted norm, so every tensor's relative error counts alike */
    o->err = rs->p->target.relative && w[0] > 0 ? e[0] / w[0] : e[0];
    return st;
}

/* measure_once for a candidate: one that cannot encode the tensor (bad
 * input for it, or unsupported) is infeasible, not a failure; the reason
 * goes to *why (the first one kept) and the error is cleared. */
static hvq_status measure(run_state *rs, const sample_set *ss, const hvq_tensor *t, long cand,
                          work *wk, hvq_alloc_option *o, char **why)
{
    hvq_status st = measure_once(rs, ss, t, cand, wk, o);
    if (st != HVQ_E_INPUT && st != HVQ_E_UNSUPPORTED)
        return st;
    if (!*why)
        *why = strdup(hvq_ctx_error(rs->ctx));
    hvq_ctx_clear_error(rs->ctx);
    return HVQ_OK;
}

/* Every candidate of tensor i, or the pipeline's stages when none fits
 * (then option 0 holds that measurement and *fallback is set). */
static hvq_status measure_tensor(run_state *rs, const hvq_tensor *t, work *wk,
                                 hvq_alloc_option *o, int *fallback)
{
    const hvq_pipeline *p = rs->p;
    const char *name = t->info.name;
    char *why = NULL;
    int any = 0;
    sample_set ss;
    hvq_status st = samples_make(rs->ctx, t, p->target.sample, &ss);
    for (size_t c = 0; c < p->n_candidates && st == HVQ_OK; c++) {
        long same = same_settings(p, name, c);
        if (same >= 0)
            o[c] = o[same];
        else
            st = measure(rs, &ss, t, (long)c, wk, &o[c], &why);
        any |= o[c].feasible;
    }
    *fallback = st == HVQ_OK && !any;
    if (*fallback) {
        hvq_log(rs->ctx, HVQ_LOG_WARN,
                "tensor '%s': no candidate can encode it (%s); it uses the pipeline's "
                "stages: instead", name, why ? why : "?");
        st = measure_once(rs, &ss, t, -1, wk, &o[0]);
    }
    samples_free(&ss);
    free(why);
    return st;
}

/* The bytes allowed for the compressed tensors: target.bpw over their
 * parameters, or target.size less the tensors stored as they are. */
static hvq_status alloc_budget(hvq_ctx *ctx, const hvq_pipeline *p, hvq_run_report *rep,
                               const hvq_tensor_info *infos, const unsigned char *selected,
                               size_t n)
{
    uint64_t params = 0, pass = 0;
    for (size_t i = 0; i < n; i++) {
        if (selected[i])
            params += hvq_numel(&infos[i]);
        else
            pass += infos[i].nbytes;
    }
    rep->alloc_passthrough = pass;
    if (p->target.bpw > 0) {
        rep->alloc_budget = (uint64_t)floor(p->target.bpw * (double)params / 8.0);
        return HVQ_OK;
    }
    if (p->target.bytes <= pass)
        return hvq_error(ctx, HVQ_E_INPUT,
                         "%s: the target size of %llu bytes cannot be met: the tensors "
                         "stored as they are take %llu bytes already",
                         p->input, (unsigned long long)p->target.bytes,
                         (unsigned long long)pass);
    rep->alloc_budget = p->target.bytes - pass;
    return HVQ_OK;
}

/* The error for a target below the smallest reachable size. */
static hvq_status alloc_unreachable(hvq_ctx *ctx, const hvq_pipeline *p,
                                    const hvq_run_report *rep, uint64_t params)
{
    double min_bpw = params ? (double)rep->alloc_min_bytes * 8.0 / (double)params : 0.0;
    if (p->target.bpw > 0)
        return hvq_error(ctx, HVQ_E_INPUT,
                         "%s: the target of %.4g bits per weight cannot be met: the smallest "
                         "reachable with these candidates is %.4f bits per weight (%llu "
                         "bytes for the compressed tensors)",
                         p->input, p->target.bpw, min_bpw,
                         (unsigned long long)rep->alloc_min_bytes);
    return hvq_error(ctx, HVQ_E_INPUT,
                     "%s: the target size of %llu bytes cannot be met: the smallest "
                     "reachable with these candidates is %llu bytes (%llu for the "
                     "compressed tensors at %.4f bits per weight, %llu stored as they are)",
                     p->input, (unsigned long long)p->target.bytes,
                     (unsigned long long)(rep->alloc_min_bytes + rep->alloc_passthrough),
                     (unsigned long long)rep->alloc_min_bytes, min_bpw,
                     (unsigned long long)rep->alloc_passthrough);
}

struct hvq_alloc_plan {
    const hvq_pipeline *p;
    size_t n_sel, m;
    hvq_alloc_option *opt; /* [n_sel * m] */
    size_t *idx;           /* k-th measured tensor -> tensor index */
    size_t *pick;          /* k -> option chosen */
    int *fb;               /* k -> no candidate fits: option 0, the stages */
};

void hvq_alloc_plan_free(hvq_alloc_plan *plan)
{
    if (!plan)
        return;
    free(plan->opt);
    free(plan->idx);
    free(plan->pick);
    free(plan->fb);
    free(plan);
}

/* The choices of plan into choice[] and the tensor reports, from k0 on. */
static void apply_choice(const hvq_alloc_plan *plan, size_t k0, hvq_run_report *rep,
                         long *choice)
{
    for (size_t k = k0; k < plan->n_sel; k++) {
        hvq_tensor_report *tr = &rep->t[plan->idx[k]];
        const hvq_alloc_option *o = &plan->opt[k * plan->m + plan->pick[k]];
        choice[plan->idx[k]] = plan->fb[k] ? -1 : (long)plan->pick[k];
        snprintf(tr->candidate, sizeof tr->candidate, "%s",
                 plan->fb[k] ? "(stages)" : plan->p->candidates[plan->pick[k]].match);
        tr->est_bytes = o->bytes;
        tr->est_err = o->err;
    }
}

void hvq_alloc_settle(hvq_alloc_plan *plan, size_t i, uint64_t bytes, hvq_run_report *rep,
                      long *choice)
{
    if (!plan || !plan->p->target.sample)
        return; /* measured on whole tensors: nothing to correct */
    size_t k = 0, m = plan->m, bad;
    while (k < plan->n_sel && plan->idx[k] != i)
        k++;
    if (k == plan->n_sel)
        return;
    for (size_t c = 0; c < m; c++) /* tensor k is done: one option, its true size */
        plan->opt[k * m + c].feasible = c == plan->pick[k];
    plan->opt[k * m + plan->pick[k]].bytes = bytes;
    uint64_t mb;
    if (hvq_alloc_solve(plan->opt, plan->n_sel, m, rep->alloc_budget, plan->pick, &mb, &bad) == 0)
        apply_choice(plan, k + 1, rep, choice);
}

hvq_status hvq_allocate(run_state *rs, const hvq_loaded_plugin *src, void *sstate,
                        const hvq_tensor_info *infos, const unsigned char *selected, size_t n,
                        work *wk, hvq_run_report *rep, long *choice, hvq_alloc_plan **planp)
{
    hvq_ctx *ctx = rs->ctx;
    const hvq_pipeline *p = rs->p;
    size_t m = p->n_candidates, n_sel = 0;
    double t0 = hvq_now();
    hvq_status st = alloc_budget(ctx, p, rep, infos, selected, n);
    if (st != HVQ_OK)
        return st;
    hvq_alloc_plan *plan = calloc(1, sizeof *plan);
    hvq_alloc_option *opt = calloc(n * m + 1, sizeof *opt);
    size_t *idx = calloc(n + 1, sizeof *idx), *pick = calloc(n + 1, sizeof *pick);
    int *fb = calloc(n + 1, sizeof *fb);
    *planp = plan;
    if (plan)
        *plan = (hvq_alloc_plan){.p = p, .m = m, .opt = opt, .idx = idx, .pick = pick, .fb = fb};
    if (!plan || !opt || !idx || !pick || !fb) {
        if (!plan) {
            free(opt);
            free(idx);
            free(pick);
            free(fb);
        }
        return hvq_error(ctx, HVQ_E_NOMEM, "out of memory");
    }
    uint64_t params = 0;
    for (size_t i = 0; i < n && st == HVQ_OK; i++) {
        choice[i] = -1;
        if (!selected[i])
            continue;
        hvq_tensor t;
        if (hvq_interrupted)
            st = hvq_interrupt_error(ctx);
        else if ((st = src->desc.source_read(ctx, sstate, i, &t)) == HVQ_OK &&
                 (st = hvq_tensor_check(ctx, p->input, src->desc.name, &infos[i], &t)) == HVQ_OK)
            st = measure_tensor(rs, &t, wk, opt + n_sel * m, &fb[n_sel]);
        if (st != HVQ_OK && !strstr(hvq_ctx_error(ctx), p->input))
            hvq_error_prefix(ctx, "%s", p->input);
        hvq_log(ctx, HVQ_LOG_DEBUG, "allocation: measured %s", infos[i].name);
        params += hvq_numel(&infos[i]);
        rep->alloc_fallbacks += (size_t)fb[n_sel];
        idx[n_sel++] = i;
    }
    plan->n_sel = n_sel;
    if (st != HVQ_OK)
        return st;
    for (size_t k = 0; k < n_sel; k++) /* a fallback has only its option 0 */
        for (size_t c = 1; fb[k] && c < m; c++)
            opt[k * m + c].feasible = 0;
    size_t bad = 0;
    int rc = hvq_alloc_solve(opt, n_sel, m, rep->alloc_budget, pick, &rep->alloc_min_bytes, &bad);
    if (rc < 0 || rc == 2)
        st = hvq_error(ctx, rc < 0 ? HVQ_E_NOMEM : HVQ_E_INTERNAL,
                       rc < 0 ? "out of memory" : "allocation: no option for a tensor");
    else if (rc == 1)
        st = alloc_unreachable(ctx, p, rep, params);
    if (st == HVQ_OK)
        apply_choice(plan, 0, rep, choice);
    rep->allocated = st == HVQ_OK;
    rep->alloc_seconds = hvq_now() - t0;
    return st;
}

