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

/* One table, one row per run, for `hvqconv compare`. */
void hvq_report_compare(FILE *f, const hvq_run_report *const *reps, size_t n);
double hvq_report_bpp_file(const hvq_run_report *rep);

#endif
