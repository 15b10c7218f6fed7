/* The driver: runs a validated pipeline over a model, one tensor at a time. */
#ifndef HVQ_CORE_DRIVER_H
#define HVQ_CORE_DRIVER_H

#include "pipeline.h"
#include "registry.h"

#include <signal.h>

/* The stages whose seconds the report gives per tensor and in total. */
enum {
    HVQ_TIME_CONVERT,    /* reading the source, conversion to f32, finite check */
    HVQ_TIME_HESSIAN,    /* the Hessian diagonal */
    HVQ_TIME_NORMALIZE,  /* row scales and W / s */
    HVQ_TIME_IMPORTANCE, /* importance scores, top-k selection, body split */
    HVQ_TIME_CLUSTERER,  /* cluster_encode */
    HVQ_TIME_RESIDUAL,   /* residual_encode */
    HVQ_TIME_METRICS,    /* reconstruction (times s) and the error sums */
    HVQ_TIME_WRITER,     /* writer_tensor */
    HVQ_TIME_STAGES
};

/* Their names in the JSON report ("stage_seconds") and the summary. */
extern const char *const hvq_time_stage_names[HVQ_TIME_STAGES];

/* What happened to one tensor. */
typedef struct hvq_tensor_report {
    char *name;
    char dtype[16];
    int ndim;
    int64_t shape[HVQ_MAX_DIMS];
    uint64_t params;         /* elements */
    int compressed;
    const char *why_passed;  /* static text, for pass-through tensors */
    char *error;             /* on_error: passthrough: the message of the
                                compression that failed (malloc'd; NULL
                                otherwise) */
    /* Compressed tensors only: */
    char clusterer[64], residual[64], hessian[64], importance[64];
    char candidate[64];      /* with a size target: the candidate chosen
                                ("" without one; "(stages)" for a tensor no
                                candidate could encode) */
    uint64_t est_bytes;      /* its size and error (the metric's) as the */
    double est_err;          /* allocation measured or estimated them */
    uint64_t rows, cols, n_sparse;
    double paper_bits;       /* components + row scales, paper accounting */
    uint64_t stored_bytes;   /* bytes of the components + fp16 row scales as
                                a container stores them */
    double rel_fro;          /* ||W - W_hat||_F / ||W||_F */
    double rel_hessian;      /* sum_j H_j sum_i err^2 / sum_j H_j sum_i W^2 */
    double sqnr_db;          /* 10 log10(||W||^2 / ||err||^2); INFINITY if exact */
    double max_abs_err_sparse; /* max |err| at the sparse positions (0 if none) */
    double err2, w2, herr2, hw2; /* sums behind the ratios above */
    double seconds;          /* compression (every stage but the writer) */
    double stage_seconds[HVQ_TIME_STAGES]; /* the writer's for every tensor */
} hvq_tensor_report;

typedef struct hvq_run_report {
    const hvq_pipeline *pipeline;
    char *source_format;
    char *writer;
    int threads;
    hvq_tensor_report *t;
    size_t n;
    uint64_t total_params, compressed_params;
    uint64_t output_bytes;   /* bytes of every file written (report excluded) */
    double paper_bits_compressed;
    uint64_t stored_bytes_compressed;
    double err2, w2, herr2, hw2; /* sums over the compressed tensors */
    double seconds;
    double stage_seconds[HVQ_TIME_STAGES]; /* over every tensor */
    double peak_rss_mib;     /* the process's peak resident set (getrusage) */
    /* With a size target (pipeline target:): */
    int allocated;
    uint64_t alloc_budget;   /* bytes allowed for the compressed tensors */
    uint64_t alloc_min_bytes;/* the smallest reachable (every tensor at its
                                smallest candidate) */
    uint64_t alloc_passthrough; /* bytes of the tensors not compressed */
    size_t alloc_fallbacks;  /* tensors no candidate could encode */
    double alloc_seconds;    /* measuring every candidate */
} hvq_run_report;

/* The peak resident set size of this process so far, in MiB (0 when the
 * system does not tell). */
double hvq_peak_rss_mib(void);

/* Set to the number of a signal (by its handler) to stop a run between
 * tensors; the run then fails with hvq_interrupt_error's message and
 * leaves no output. */
extern volatile sig_atomic_t hvq_interrupted;
/* "interrupted (SIGINT); no output was written" (HVQ_E_IO); in signals.c,
 * beside the signals it names. */
hvq_status hvq_interrupt_error(hvq_ctx *ctx);

/* Runs p (already validated against reg). On success every output is in
 * place and rep is filled; on failure no output exists and ctx holds the
 * message. rep must be freed with hvq_run_report_free either way. */
hvq_status hvq_run_pipeline(hvq_ctx *ctx, const hvq_registry *reg,
                            const hvq_pipeline *p, hvq_run_report *rep);
void hvq_run_report_free(hvq_run_report *rep);

/* The seed of one tensor: the pipeline seed mixed with the tensor name, so
 * results do not depend on order or thread count. */
uint64_t hvq_tensor_seed(uint64_t seed, const char *name);

/* Selects the k entries of highest score (ties: lower flat index first) and
 * writes their positions to pos in ascending order: an exact radix select
 * on the scores' order-preserving integer keys, in parallel on the ctx's
 * threads with the same result for any count. HVQ_E_INPUT when a score is
 * NaN (naming the first). */
hvq_status hvq_top_k(hvq_ctx *ctx, const float *score, uint64_t n, uint64_t k,
                     uint64_t *pos);

/* host->hessian_full: the full Hessian of the tensor whose cluster input
 * (as the driver made it) is in, from the pipeline's hessian stage. */
hvq_status hvq_cluster_hessian_full(hvq_ctx *ctx, const hvq_cluster_input *in, float *h);

/* host->writer_stage_param: what the run will use for a compressed tensor,
 * asked from within writer_open. */
const char *hvq_writer_stage_param(hvq_ctx *ctx, const hvq_writer_setup *setup, size_t i,
                                   const char *stage, const char *key);

#endif
