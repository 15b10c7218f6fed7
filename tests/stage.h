/* The stage harness: one plugin run in isolation, the way GStreamer's
 * GstHarness holds one element. th_stage_init loads the build tree's
 * plugins into a quiet context, finds the plugin by kind and name, and
 * resolves its parameters from the declared defaults and "key=value"
 * overrides, as a pipeline hands them over; the calls below then run its
 * callbacks on fixture tensors. A harness problem (no such plugin, a bad
 * override) aborts the test; what the plugin returns is the test's to
 * check. Everything a stage allocates (encodings, instances) is released
 * by th_stage_fini. */
#ifndef HVQ_TEST_STAGE_H
#define HVQ_TEST_STAGE_H

#include "harness.h"

typedef struct th_stage {
    hvq_ctx *ctx;
    hvq_registry *reg;
    const hvq_plugin *d;   /* the plugin under test */
    uint32_t kind;
    th_params tp;          /* its resolved parameters: &tp.p */
    void *state;           /* an open hessian or writer instance */
    int open;              /* whether that instance is open (state may be NULL) */
    hvq_encoded enc;       /* what the last encode produced */
} th_stage;

/* kv: NULL-terminated "key=value" overrides, or NULL. */
void th_stage_init(th_stage *s, uint32_t kind, const char *name, const char *const *kv);
void th_stage_fini(th_stage *s);

/* The context's last error message ("" when none). */
const char *th_stage_error(const th_stage *s);

/* IMPORTANCE: score[rows * cols] for w and the Hessian diagonal h. */
hvq_status th_stage_score(th_stage *s, const float *w, uint64_t rows, uint64_t cols,
                          const float *h, float *score);

/* CLUSTERER: encodes in into s->enc (cleared first) and recon; decodes an
 * encoding (s->enc when enc is NULL) into recon. */
hvq_status th_stage_encode(th_stage *s, const hvq_cluster_input *in, float *recon);
hvq_status th_stage_decode(th_stage *s, const hvq_encoded *enc, uint64_t rows, uint64_t cols,
                           float *recon);

/* RESIDUAL: how many entries it keeps, and its encoding of in into s->enc
 * (cleared first); th_stage_decode applies it. */
uint64_t th_stage_count(th_stage *s, uint64_t numel);
hvq_status th_stage_residual(th_stage *s, hvq_residual_input *in);

/* HESSIAN: open the instance (model_path as the driver passes it), get a
 * tensor's diagonal; th_stage_fini closes it. */
hvq_status th_stage_hessian_open(th_stage *s, const char *model_path);
hvq_status th_stage_hessian(th_stage *s, const hvq_tensor_info *t, uint64_t rows,
                            uint64_t cols, float *h);

/* WRITER: open, one result per tensor in order, finish (which commits the
 * outputs as a run does); th_stage_fini closes it. */
hvq_status th_stage_writer_open(th_stage *s, const hvq_writer_setup *setup);
hvq_status th_stage_writer_tensor(th_stage *s, const hvq_result *r);
hvq_status th_stage_writer_finish(th_stage *s);

/* For tests that drive a plugin's descriptor directly: one context with the
 * build tree's plugins, made and freed by a TCase's checked fixture
 * (tcase_add_checked_fixture(tc, th_env_setup, th_env_teardown)). */
void th_env_setup(void);
void th_env_teardown(void);
hvq_ctx *th_env_ctx(void);
const hvq_plugin *th_env_plugin(uint32_t kind, const char *name);

/* Deterministic test data: uniform in (0, 1) from th_rng_state (an LCG),
 * heavy-tailed values (a ratio of normals times 0.02, clipped to [-1, 1]:
 * finite and within fp16 range), and x[0..n) filled with them from seed. */
extern uint64_t th_rng_state;
double th_urand(void);
float th_heavy(void);
void th_fill_heavy(float *x, size_t n, uint64_t seed);

/* An importance plugin's scores on a 7 x 13 fixture (one column of H below
 * the default h_floor) equal, bit for bit, ref(w, max(h, 1e-6)) per entry. */
void th_importance_matches(const char *name, float (*ref)(float w, float h));

#endif
