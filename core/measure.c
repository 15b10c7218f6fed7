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

/* Compresses t with setting cand (-1: the pipeline's stages) and keeps
 * only its true size and Hessian-weighted error. */
static hvq_status measure_once(run_state *rs, const hvq_tensor *t, long cand, work *wk,
                               hvq_alloc_option *o)
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
    o->feasible = st == HVQ_OK;
    o->bytes = tr.stored_bytes;
    /* metric: relative weighs each tensor's error by its own Hessian-
     * weighted norm, so every tensor's relative error counts alike */
    o->err = rs->p->target.relative && tr.hw2 > 0 ? tr.herr2 / tr.hw2 : tr.herr2;
    return st;
}

/* measure_once for a candidate: one that cannot encode the tensor (bad
 * input for it, or unsupported) is infeasible, not a failure; the reason
 * goes to *why (the first one kept) and the error is cleared. */
static hvq_status measure(run_state *rs, const hvq_tensor *t, long cand, work *wk,
                          hvq_alloc_option *o, char **why)
{
    hvq_status st = measure_once(rs, t, cand, wk, o);
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
    hvq_status st = HVQ_OK;
    for (size_t c = 0; c < p->n_candidates && st == HVQ_OK; c++) {
        long same = same_settings(p, name, c);
        if (same >= 0)
            o[c] = o[same];
        else
            st = measure(rs, t, (long)c, wk, &o[c], &why);
        any |= o[c].feasible;
    }
    *fallback = st == HVQ_OK && !any;
    if (*fallback) {
        hvq_log(rs->ctx, HVQ_LOG_WARN,
                "tensor '%s': no candidate can encode it (%s); it uses the pipeline's "
                "stages: instead", name, why ? why : "?");
        st = measure_once(rs, t, -1, wk, &o[0]);
    }
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

hvq_status hvq_allocate(run_state *rs, const hvq_loaded_plugin *src, void *sstate,
                        const hvq_tensor_info *infos, const unsigned char *selected, size_t n,
                        work *wk, hvq_run_report *rep, long *choice)
{
    hvq_ctx *ctx = rs->ctx;
    const hvq_pipeline *p = rs->p;
    size_t m = p->n_candidates, n_sel = 0;
    double t0 = hvq_now();
    hvq_status st = alloc_budget(ctx, p, rep, infos, selected, n);
    if (st != HVQ_OK)
        return st;
    hvq_alloc_option *opt = calloc(n * m + 1, sizeof *opt);
    size_t *idx = calloc(n + 1, sizeof *idx), *pick = calloc(n + 1, sizeof *pick);
    int *fb = calloc(n + 1, sizeof *fb);
    if (!opt || !idx || !pick || !fb) {
        st = hvq_error(ctx, HVQ_E_NOMEM, "out of memory");
        goto done;
    }
    uint64_t params = 0;
    for (size_t i = 0; i < n && st == HVQ_OK; i++) {
        choice[i] = -1;
        if (!selected[i])
            continue;
        hvq_tensor t;
        if (hvq_interrupted)
            st = hvq_error(ctx, HVQ_E_IO, "interrupted");
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
    if (st != HVQ_OK)
        goto done;
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
    for (size_t k = 0; k < n_sel && st == HVQ_OK; k++) {
        choice[idx[k]] = fb[k] ? -1 : (long)pick[k];
        snprintf(rep->t[idx[k]].candidate, sizeof rep->t[idx[k]].candidate, "%s",
                 fb[k] ? "(stages)" : p->candidates[pick[k]].match);
    }
    rep->allocated = st == HVQ_OK;
    rep->alloc_seconds = hvq_now() - t0;
done:
    free(opt);
    free(idx);
    free(pick);
    free(fb);
    return st;
}

