/* The driver's internals shared by its files: driver.c (the run, one
 * tensor's compression) and measure.c (the allocation pass of a size
 * target). Not for plugins or other parts of the core. */
#ifndef HVQ_CORE_DRIVER_INT_H
#define HVQ_CORE_DRIVER_INT_H

#include "driver.h"

/* One Hessian instance per plugin and parameter set, opened on first
 * use. */
typedef struct hess_inst {
    const hvq_loaded_plugin *plugin;
    const hvq_value *values;
    void *state;
} hess_inst;

typedef struct run_state {
    hvq_ctx *ctx;
    const hvq_pipeline *p;
    hess_inst hess[16];
    size_t n_hess;
} run_state;

/* Buffers of one tensor, grown to the largest. */
typedef struct work {
    float *w, *recon, *h, *x, *score, *scale, *target;
    uint64_t *pos;
    size_t cap;   /* elements allocated in the matrix-sized buffers */
    size_t hcap;  /* elements in h */
    size_t scap;  /* elements in scale */
    uint64_t *cbad; /* per-chunk scratch of the parallel loops */
    float *cval;
    double *csum;
    size_t ccap;  /* chunks allocated */
} work;

/* Compresses one tensor with candidate cand of the pipeline (-1: its
 * stages: with overrides), filling tr, the two encodings and res. */
hvq_status hvq_compress_tensor(run_state *rs, const hvq_tensor *t, long cand, work *wk,
                               hvq_tensor_report *tr, hvq_encoded *cenc, hvq_encoded *renc,
                               hvq_result *res);

/* The allocation pass of a size target (pipeline target: and candidates:):
 * measures every candidate on every selected tensor of the source and
 * chooses one per tensor (core/alloc.h); choice[i] is the candidate of
 * tensor i, -1 for the pipeline's stages. Fills rep's allocation fields
 * and each tensor report's candidate; *plan keeps the measurements for
 * hvq_alloc_settle (free it with hvq_alloc_plan_free, also on failure). */
typedef struct hvq_alloc_plan hvq_alloc_plan;
hvq_status hvq_allocate(run_state *rs, const hvq_loaded_plugin *src, void *sstate,
                        const hvq_tensor_info *infos, const unsigned char *selected, size_t n,
                        work *wk, hvq_run_report *rep, long *choice, hvq_alloc_plan **plan);

/* Tensor i was compressed with its choice and took bytes. When the sizes
 * were estimated on samples (target.sample), the tensors not yet
 * compressed are chosen again for the budget that is left, so that the
 * estimates' errors do not add up. */
void hvq_alloc_settle(hvq_alloc_plan *plan, size_t i, uint64_t bytes, hvq_run_report *rep,
                      long *choice);
void hvq_alloc_plan_free(hvq_alloc_plan *plan);

#endif
