/* The stage harness (see stage.h). */
#include "config.h"

#include "stage.h"

#include <string.h>

void th_stage_init(th_stage *s, uint32_t kind, const char *name, const char *const *kv)
{
    memset(s, 0, sizeof *s);
    s->ctx = th_ctx();
    s->reg = th_registry(s->ctx);
    s->d = th_plugin(s->reg, kind, name);
    s->kind = kind;
    th_params_make(&s->tp, s->d, kv);
}

void th_stage_fini(th_stage *s)
{
    if (s->state && s->kind == HVQ_KIND_HESSIAN)
        s->d->hessian_close(s->ctx, s->state);
    if (s->state && s->kind == HVQ_KIND_WRITER)
        s->d->writer_close(s->ctx, s->state);
    hvq_encoded_clear(&s->enc);
    hvq_ctx_free(s->ctx);
    hvq_registry_free(s->reg);
    memset(s, 0, sizeof *s);
}

const char *th_stage_error(const th_stage *s)
{
    const char *e = hvq_ctx_error(s->ctx);
    return e ? e : "";
}

hvq_status th_stage_score(th_stage *s, const float *w, uint64_t rows, uint64_t cols,
                          const float *h, float *score)
{
    ck_assert(s->kind == HVQ_KIND_IMPORTANCE);
    return s->d->importance_score(s->ctx, &s->tp.p, w, rows, cols, h, score);
}

hvq_status th_stage_encode(th_stage *s, const hvq_cluster_input *in, float *recon)
{
    ck_assert(s->kind == HVQ_KIND_CLUSTERER);
    hvq_encoded_clear(&s->enc);
    return s->d->cluster_encode(s->ctx, &s->tp.p, in, recon, &s->enc);
}

hvq_status th_stage_decode(th_stage *s, const hvq_encoded *enc, uint64_t rows, uint64_t cols,
                           float *recon)
{
    if (!enc)
        enc = &s->enc;
    if (s->kind == HVQ_KIND_RESIDUAL)
        return s->d->residual_decode(s->ctx, enc, rows, cols, recon);
    ck_assert(s->kind == HVQ_KIND_CLUSTERER);
    return s->d->cluster_decode(s->ctx, enc, rows, cols, recon);
}

uint64_t th_stage_count(th_stage *s, uint64_t numel)
{
    ck_assert(s->kind == HVQ_KIND_RESIDUAL);
    return s->d->residual_count(&s->tp.p, numel);
}

hvq_status th_stage_residual(th_stage *s, hvq_residual_input *in)
{
    ck_assert(s->kind == HVQ_KIND_RESIDUAL);
    hvq_encoded_clear(&s->enc);
    return s->d->residual_encode(s->ctx, &s->tp.p, in, &s->enc);
}

hvq_status th_stage_hessian_open(th_stage *s, const char *model_path)
{
    ck_assert(s->kind == HVQ_KIND_HESSIAN && !s->state);
    hvq_status st = s->d->hessian_open(s->ctx, &s->tp.p, model_path, &s->state);
    if (st != HVQ_OK && s->state) {
        s->d->hessian_close(s->ctx, s->state);
        s->state = NULL;
    }
    return st;
}

hvq_status th_stage_hessian(th_stage *s, const hvq_tensor_info *t, uint64_t rows,
                            uint64_t cols, float *h)
{
    ck_assert(s->kind == HVQ_KIND_HESSIAN && s->state);
    return s->d->hessian_get(s->ctx, s->state, t, rows, cols, h);
}

hvq_status th_stage_writer_open(th_stage *s, const hvq_writer_setup *setup)
{
    ck_assert(s->kind == HVQ_KIND_WRITER && !s->state);
    hvq_status st = s->d->writer_open(s->ctx, &s->tp.p, setup, &s->state);
    if (st != HVQ_OK && s->state) {
        s->d->writer_close(s->ctx, s->state);
        s->state = NULL;
    }
    return st;
}

hvq_status th_stage_writer_tensor(th_stage *s, const hvq_result *r)
{
    ck_assert(s->kind == HVQ_KIND_WRITER && s->state);
    return s->d->writer_tensor(s->ctx, s->state, r);
}

hvq_status th_stage_writer_finish(th_stage *s)
{
    ck_assert(s->kind == HVQ_KIND_WRITER && s->state);
    hvq_status st = s->d->writer_finish(s->ctx, s->state);
    return st == HVQ_OK ? hvq_outputs_commit(s->ctx) : st;
}
