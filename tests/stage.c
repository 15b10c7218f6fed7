/* The stage harness (see stage.h). */
#include "config.h"

#include "stage.h"

#include <math.h>
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
    if (s->open && s->kind == HVQ_KIND_HESSIAN)
        s->d->hessian_close(s->ctx, s->state);
    if (s->open && s->kind == HVQ_KIND_WRITER)
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
    ck_assert(s->kind == HVQ_KIND_HESSIAN && !s->open);
    hvq_status st = s->d->hessian_open(s->ctx, &s->tp.p, model_path, &s->state);
    if (st != HVQ_OK) /* the host closes a failed open too */
        s->d->hessian_close(s->ctx, s->state);
    s->open = st == HVQ_OK;
    if (!s->open)
        s->state = NULL;
    return st;
}

hvq_status th_stage_hessian(th_stage *s, const hvq_tensor_info *t, uint64_t rows,
                            uint64_t cols, float *h)
{
    ck_assert(s->kind == HVQ_KIND_HESSIAN && s->open);
    return s->d->hessian_get(s->ctx, s->state, t, rows, cols, h);
}

hvq_status th_stage_writer_open(th_stage *s, const hvq_writer_setup *setup)
{
    ck_assert(s->kind == HVQ_KIND_WRITER && !s->open);
    hvq_status st = s->d->writer_open(s->ctx, &s->tp.p, setup, &s->state);
    if (st != HVQ_OK) /* the host closes a failed open too */
        s->d->writer_close(s->ctx, s->state);
    s->open = st == HVQ_OK;
    if (!s->open)
        s->state = NULL;
    return st;
}

hvq_status th_stage_writer_tensor(th_stage *s, const hvq_result *r)
{
    ck_assert(s->kind == HVQ_KIND_WRITER && s->open);
    return s->d->writer_tensor(s->ctx, s->state, r);
}

hvq_status th_stage_writer_finish(th_stage *s)
{
    ck_assert(s->kind == HVQ_KIND_WRITER && s->open);
    hvq_status st = s->d->writer_finish(s->ctx, s->state);
    return st == HVQ_OK ? hvq_outputs_commit(s->ctx) : st;
}

static th_stage g_env;

void th_env_setup(void)
{
    g_env.ctx = th_ctx();
    g_env.reg = th_registry(g_env.ctx);
}

void th_env_teardown(void)
{
    hvq_ctx_free(g_env.ctx);
    hvq_registry_free(g_env.reg);
    memset(&g_env, 0, sizeof g_env);
}

hvq_ctx *th_env_ctx(void) { return g_env.ctx; }

const hvq_plugin *th_env_plugin(uint32_t kind, const char *name)
{
    return th_plugin(g_env.reg, kind, name);
}

uint64_t th_rng_state;

double th_urand(void)
{
    th_rng_state = th_rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return ((th_rng_state >> 11) + 0.5) / 9007199254740992.0;
}

float th_heavy(void)
{
    double u1 = th_urand(), u2 = th_urand(), u3 = th_urand(), u4 = th_urand();
    double z = sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2);
    double w = sqrt(-2 * log(u3)) * cos(6.283185307179586 * u4);
    double v = z / (0.5 + fabs(w)) * 0.02;
    return (float)(v > 1 ? 1 : v < -1 ? -1 : v);
}

void th_fill_heavy(float *x, size_t n, uint64_t seed)
{
    th_rng_state = seed;
    for (size_t i = 0; i < n; i++)
        x[i] = th_heavy();
}

void th_importance_matches(const char *name, float (*ref)(float w, float h))
{
    enum { R = 7, C = 13 };
    float w[R * C], h[C], s[R * C];
    th_fill_heavy(w, R * C, 1);
    for (int j = 0; j < C; j++)
        h[j] = j == 3 ? 0.0f : (float)(0.25 * (j + 1)); /* one column below the floor */
    th_stage st;
    th_stage_init(&st, HVQ_KIND_IMPORTANCE, name, NULL);
    ck_assert_int_eq(th_stage_score(&st, w, R, C, h, s), HVQ_OK);
    for (int i = 0; i < R * C; i++) {
        float hj = h[i % C] > 1e-6f ? h[i % C] : 1e-6f; /* the default h_floor */
        ck_assert_msg(s[i] == ref(w[i], hj), "%s[%d]: %g != reference %g", name, i, s[i],
                      ref(w[i], hj));
    }
    th_stage_fini(&st);
}
