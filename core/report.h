/* The report of a run: a table for people, JSON for programs. */
#ifndef HVQ_CORE_REPORT_H
#define HVQ_CORE_REPORT_H

#include "driver.h"
#include "util.h"

#include <stdio.h>

/* The table printed after a run. */
void hvq_report_print(FILE *f, const hvq_run_report *rep);

/* The JSON document written to `report:`. */
void hvq_report_json(hvq_buf *b, const hvq_run_report *rep);

/* Bits per parameter of the compressed tensors alone (paper accounting),
 * of the whole model with pass-through tensors at 16 bits (how the paper
 * counts its fp16 lm_head and embeddings), and of the files written. */
double hvq_report_bpp_paper(const hvq_run_report *rep);
double hvq_report_bpp_paper_model(const hvq_run_report *rep);
double hvq_report_bpp_stored(const hvq_run_report *rep);

/* Errors over all compressed tensors together. */
double hvq_report_rel_fro(const hvq_run_report *rep);
double hvq_report_rel_hessian(const hvq_run_report *rep);
double hvq_report_sqnr_db(const hvq_run_report *rep);

/* The perplexity column of `hvqconv compare` (like the paper's Table 1):
 * a first row for the uncompressed input, then one value per run. */
typedef struct hvq_compare_ppl {
    const char *input;       /* the uncompressed model */
    double input_ppl;        /* NAN where not measured */
    double input_bpp_file;   /* its bytes * 8 / parameters */
    const double *ppl;       /* one per run, NAN where not measured */
    const char *tokens;      /* the token file scored */
    int ctx_len;
    uint64_t n_windows, n_scored;
} hvq_compare_ppl;

/* One table, one row per run, for `hvqconv compare`; with ppl (else NULL)
 * an "uncompressed" row first and a PPL column. */
void hvq_report_compare(FILE *f, const hvq_run_report *const *reps, size_t n,
                        const hvq_compare_ppl *ppl);
double hvq_report_bpp_file(const hvq_run_report *rep);

#endif
