/* Pipelines: the YAML file, command-line overrides, and validation against
 * the plugins' declared parameters. */
#ifndef HVQ_CORE_PIPELINE_H
#define HVQ_CORE_PIPELINE_H

#include "plugin.h"
#include "registry.h"

#include <stdint.h>

/* Where a value came from: a file position (1-based line and column) or,
 * when file is NULL, the command-line --set text in origin. */
typedef struct hvq_mark {
    const char *file;   /* points at the pipeline's path; NULL for --set */
    const char *origin; /* the --set argument, when file is NULL */
    int line, col;
} hvq_mark;

enum {
    HVQ_STAGE_HESSIAN = 0,
    HVQ_STAGE_IMPORTANCE,
    HVQ_STAGE_CLUSTERER,
    HVQ_STAGE_RESIDUAL,
    HVQ_STAGE_WRITER,
    HVQ_STAGE_COUNT
};

/* "hessian", "importance", ... and the plugin kind of each stage. */
const char *hvq_stage_name(int stage);
uint32_t hvq_stage_kind(int stage);
/* The plugin a stage uses when the pipeline names none (NULL: required). */
const char *hvq_stage_default_plugin(int stage);

/* One `key: value` inside a stage mapping. */
typedef struct hvq_setting {
    char *key;
    char *value;            /* scalar text */
    hvq_mark key_mark, value_mark;
} hvq_setting;

typedef struct hvq_stage_cfg {
    int present;            /* the stage appears (in the file or by --set) */
    char *plugin;           /* NULL when not given */
    hvq_mark mark;          /* of the stage key (or of plugin:) */
    hvq_setting *settings;  /* parameters other than plugin */
    size_t n_settings;
    /* Filled by hvq_pipeline_validate: */
    const hvq_loaded_plugin *resolved;
    hvq_value *values;      /* one per declared parameter */
    size_t n_values;
} hvq_stage_cfg;

/* on_error: what a tensor whose compression fails does to the run (see
 * hvq_pipeline_passthrough). */
enum {
    HVQ_ON_ERROR_UNSET = 0,   /* an override: the pipeline's; the pipeline:
                                 abort */
    HVQ_ON_ERROR_ABORT,       /* the run stops (exit 2), nothing written */
    HVQ_ON_ERROR_PASSTHROUGH  /* the tensor is written unchanged, with a
                                 warning, and the run goes on */
};

typedef struct hvq_override {
    char *match;            /* glob on tensor names; for a candidate, its
                               name (given by name:, else "cN") */
    hvq_mark mark;
    int on_error;           /* HVQ_ON_ERROR_*; overrides only */
    hvq_stage_cfg stages[HVQ_STAGE_COUNT]; /* writer may not be overridden */
} hvq_override;

/* evaluate: the perplexity measurement a pipeline declares (used by
 * `compare`, and by `run --eval`): windows of ctx tokens from the start of
 * the token file, as `hvqconv eval` cuts them. */
#define HVQ_EVAL_DEFAULT_CTX 256
#define HVQ_EVAL_MAX_CTX 1048576
#define HVQ_EVAL_MAX_WINDOWS 1000000000
typedef struct hvq_eval_cfg {
    int present;            /* the pipeline has an evaluate: mapping */
    char *tokens;           /* token file (NULL only while incomplete) */
    int64_t ctx;            /* tokens per window (default 256) */
    int64_t windows;        /* windows to score; 0: every full window */
    hvq_mark mark;          /* of the evaluate: key (or the --set) */
} hvq_eval_cfg;

/* target: the size the allocator fits the compressed tensors to, choosing
 * one of the pipeline's candidates per tensor (see core/alloc.h). One of:
 *   bpw:  bits per weight of the compressed tensors (every stored byte of
 *         their components and scales, over their parameters);
 *   size: bytes of every tensor stored (compressed ones as their
 *         components, the others as they are in the input).
 * and what is minimised (metric:). */
typedef struct hvq_target_cfg {
    int present;            /* bpw or size given */
    int in_file;            /* the file has target: (perhaps only metric:
                               or sample:, the size left to --target-bpw) */
    double bpw;             /* > 0 when given */
    uint64_t bytes;         /* > 0 when given */
    int relative;           /* metric: 0 absolute (default): the sum over
                               tensors of sum_j H_j sum_i e_ij^2, so the
                               model's pooled Hessian-weighted error is
                               smallest; 1 relative: the sum of each
                               tensor's Hessian-weighted relative error */
    uint64_t sample;        /* 0: candidates measured on whole tensors;
                               S: on samples of S rows of tensors with
                               more than 2S rows (core/measure.c) */
    hvq_mark mark;          /* of the target: key (or the --set) */
} hvq_target_cfg;

typedef struct hvq_pipeline {
    char *path;             /* the YAML file ("<none>" when built in code) */
    char *dir;              /* its directory, for relative paths */
    char *name;
    char *input, *output, *report;
    hvq_mark input_mark, output_mark, report_mark;
    uint64_t seed;
    char **include; size_t n_include;
    char **exclude; size_t n_exclude;
    hvq_stage_cfg stages[HVQ_STAGE_COUNT];
    hvq_override *overrides; size_t n_overrides;
    /* candidates: settings the allocator chooses from per tensor; each
     * is an override without a match (its stages replace the base stages
     * where given; a matching override still takes precedence). */
    hvq_override *candidates; size_t n_candidates;
    hvq_target_cfg target;
    char **set_args; size_t n_set_args; /* copies of the --set arguments;
                                           --set marks point into them */
    hvq_eval_cfg evaluate;
    int on_error;           /* HVQ_ON_ERROR_*: UNSET and ABORT abort */
} hvq_pipeline;

/* An empty pipeline built in code (path "<none>"), to be filled with
 * hvq_pipeline_set. */
hvq_status hvq_pipeline_new(hvq_ctx *ctx, hvq_pipeline **out);

/* Parses the YAML file. Structural errors (YAML syntax, unknown top-level
 * or select keys, wrong node types, unknown stage names, a bad seed) fail
 * here with "FILE:LINE:COL: message" and HVQ_E_INPUT. */
hvq_status hvq_pipeline_load(hvq_ctx *ctx, const char *path,
                             hvq_pipeline **out);

/* Applies one --set KEY=VALUE, KEY being a dotted path: input, output,
 * report, seed, name, select.include, select.exclude (the list becomes
 * that one glob; empty clears it), stages.STAGE.plugin, stages.STAGE.PARAM,
 * evaluate.tokens, evaluate.ctx, evaluate.windows (evaluate= with no value
 * removes the evaluation), target.bpw, target.size, target.metric
 * (target= removes the target), on_error (abort or passthrough).
 * Changing a stage's plugin drops the parameters the file gave that stage.
 * Errors read "--set KEY=VALUE: ...". Forgets a previous validation. */
hvq_status hvq_pipeline_set(hvq_ctx *ctx, hvq_pipeline *p,
                            const char *assignment);

/* Resolves every stage's plugin (defaults: hessian uniform, importance
 * magnitude, residual none; clusterer and writer are required) and checks
 * every parameter of stages and overrides against the declared specs, and
 * that an evaluate: has its tokens.
 * Errors read: "FILE:LINE:COL: stage 'clusterer' (plugin 'rtn'): unknown
 * parameter 'group_sise'; did you mean 'group_size'?" */
hvq_status hvq_pipeline_validate(hvq_ctx *ctx, hvq_pipeline *p,
                                 const hvq_registry *reg);

/* The writer for p's output (called by hvq_pipeline_validate): when the
 * output's extension names a format the pipeline's writer does not write
 * (its writer_formats), the first writer that writes the pipeline's
 * encodings into that format as they are (writer_keeps) takes its place,
 * set as by --set and said in one INFO line; when none does, HVQ_E_INPUT
 * naming the output, the writer and the way out. */
hvq_status hvq_pipeline_fit_writer(hvq_ctx *ctx, hvq_pipeline *p,
                                   const hvq_registry *reg);

/* The effective plugin and parameters of stage for one tensor, with
 * overrides applied (first match wins). values points into storage owned
 * by the pipeline; valid until hvq_pipeline_free (or the next
 * hvq_pipeline_set or hvq_pipeline_validate). HVQ_E_INTERNAL when the
 * pipeline was not validated. */
hvq_status hvq_pipeline_stage_for(hvq_ctx *ctx, const hvq_pipeline *p,
                                  int stage, const char *tensor,
                                  const hvq_loaded_plugin **plugin,
                                  hvq_params *params);

/* hvq_pipeline_stage_for with candidate cand (-1: none) in effect: an
 * override matching the tensor first, then the candidate's stage, then
 * the base stage. */
hvq_status hvq_pipeline_stage_cand(hvq_ctx *ctx, const hvq_pipeline *p,
                                   int stage, const char *tensor, long cand,
                                   const hvq_loaded_plugin **plugin,
                                   hvq_params *params);

/* The effective stage configuration (as above), for comparing two
 * candidates of one tensor: equal pointers mean equal settings. */
const hvq_stage_cfg *hvq_pipeline_cfg_for(const hvq_pipeline *p, int stage,
                                          const char *tensor, long cand);

/* Whether a tensor is selected for compression: matches an include glob
 * (all tensors when there is none) and no exclude glob. */
int hvq_pipeline_selects(const hvq_pipeline *p, const char *tensor);

/* Whether a failed compression of tensor passes it through unchanged
 * (on_error: passthrough) rather than stopping the run: the on_error of
 * the first override matching the tensor that sets one, else the
 * pipeline's. */
int hvq_pipeline_passthrough(const hvq_pipeline *p, const char *tensor);

/* The effective pipeline as YAML text (malloc'd), recorded in outputs. */
char *hvq_pipeline_to_yaml(const hvq_pipeline *p);

/* The pipeline as an output records it (malloc'd): everything that decides
 * the output's bytes (name, seed, select, every stage's plugin and every
 * parameter's effective value, overrides), the input as given (what
 * `hvqconv eval` looks beside for the model's config.json), a comment
 * naming the hvqconv version and every plugin used with its version
 * (source_plugin and source_version: the source that read the input; may
 * be NULL), and nothing else: no output or report path, no evaluate:, not
 * the pipeline file's name. So the same input, pipeline and seed give the
 * same bytes whatever the output is called. */
char *hvq_pipeline_record(const hvq_pipeline *p, const char *source_plugin,
                          const char *source_version);

void hvq_pipeline_free(hvq_pipeline *p);

#endif
