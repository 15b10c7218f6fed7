/* Pipelines: what the files of core/pipeline*.c share (see the list at
 * the top of pipeline.c). Private to them; the API is pipeline.h. */
#ifndef HVQ_CORE_PIPELINE_INT_H
#define HVQ_CORE_PIPELINE_INT_H

#include "pipeline.h"

#include "buf.h"

#include <stddef.h>
#include <stdint.h>
#include <yaml.h>

/* ---- pipeline.c: tables ---- */

extern const char *const hvq_pl_stage_names[HVQ_STAGE_COUNT];
extern const uint32_t hvq_pl_stage_kinds[HVQ_STAGE_COUNT];
/* The plugin a stage uses when the pipeline names none (NULL: required). */
extern const char *const hvq_pl_stage_defaults[HVQ_STAGE_COUNT];

#define N_EVAL_KEYS 3
extern const char *const hvq_pl_eval_keys[N_EVAL_KEYS];     /* tokens ctx windows */
#define N_TARGET_KEYS 4
extern const char *const hvq_pl_target_keys[N_TARGET_KEYS]; /* bpw size metric sample */

/* The stage called name, or -1. */
int hvq_pl_stage_index(const char *name);

/* ---- pipeline.c: small helpers ---- */

char *hvq_pl_strdup(const char *s);
/* Sets "out of memory"; returns HVQ_E_NOMEM. */
hvq_status hvq_pl_nomem(hvq_ctx *ctx);
/* Grows *arr (of elements of size elem) so that it holds at least need
 * elements; *cap tracks the capacity. Returns 0 when out of memory. */
int hvq_pl_grow(void **arr, size_t *cap, size_t need, size_t elem);
/* Appends a copy of s to a string list; 0 when out of memory. */
int hvq_pl_list_push(char ***list, size_t *n, const char *s);
void hvq_pl_list_free(char ***list, size_t *n);
/* hvq_nearest, without suggestions that share nothing with the word. */
const char *hvq_pl_nearest(const char *word, const char *const *cand, size_t n);
/* "a, b, c" into b. */
void hvq_pl_join(hvq_buf *b, const char *const *items, size_t n);

/* ---- pipeline.c: messages ---- */

/* The location prefix of a message: "FILE:LINE:COL: ", "--set ARG: ", or
 * "FILE: " when the mark carries no position. */
void hvq_pl_mark_prefix(hvq_buf *b, const hvq_pipeline *p, const hvq_mark *m);
/* Sets the ctx error to the contents of b (which it frees). */
hvq_status hvq_pl_buf_error(hvq_ctx *ctx, hvq_status st, hvq_buf *b);
/* Sets the error "PREFIX message" (the prefix as hvq_pl_mark_prefix). */
hvq_status hvq_pl_mark_error(hvq_ctx *ctx, hvq_status st, const hvq_pipeline *p,
                             const hvq_mark *m, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* ---- pipeline.c: building and freeing ---- */

/* An empty pipeline whose path is path (its dir derived from it). */
hvq_pipeline *hvq_pl_pipeline_alloc(const char *path);
void hvq_pl_stage_free(hvq_stage_cfg *c);
/* Forgets everything hvq_pipeline_validate computed. */
void hvq_pl_invalidate(hvq_pipeline *p);
/* Adds (or, with replace, replaces) a setting of a stage. Copies key and
 * value. */
hvq_status hvq_pl_stage_set(hvq_ctx *ctx, hvq_stage_cfg *c, const char *key,
                            const char *value, const hvq_mark *key_mark,
                            const hvq_mark *value_mark, int replace);

/* ---- pipeline.c: values shared by the file and --set ---- */

/* Seeds are decimal, unsigned, 64-bit. */
int hvq_pl_parse_seed(const char *text, uint64_t *out);
/* on_error: "abort" or "passthrough" into *out (HVQ_ON_ERROR_*). */
int hvq_pl_parse_on_error(const char *text, int *out);
#define HVQ_PL_ON_ERROR_WANT "'on_error' must be abort or passthrough, got '%s'"
/* evaluate.ctx and evaluate.windows: a decimal integer in [min, max]. */
int hvq_pl_parse_eval_int(const char *text, int64_t min, int64_t max, int64_t *out);
/* The range of evaluate.KEY, for messages and checks. */
void hvq_pl_eval_range(const char *key, int64_t *min, int64_t *max);
/* target.bpw / size / metric / sample from text into t; why gets the
 * reason on failure (returns 0). */
int hvq_pl_parse_target(hvq_target_cfg *t, const char *key, const char *text,
                        char *why, size_t why_len);

/* ---- pipeline_yaml.c: the tree ---- */

enum { YN_SCALAR, YN_SEQ, YN_MAP };

typedef struct ynode {
    int kind;
    char *text;         /* scalars */
    int plain;          /* a plain (unquoted) scalar */
    hvq_mark mark;
    struct ynode **kids; /* sequences: items; mappings: key, value, ... */
    size_t n, cap;
} ynode;

typedef struct loader {
    hvq_ctx *ctx;
    hvq_pipeline *p;
    yaml_parser_t parser;
    unsigned char *buf;
    size_t len;
} loader;

void hvq_pl_ynode_free(ynode *n);
/* Reads a whole file; sets the error on failure. */
hvq_status hvq_pl_read_file(hvq_ctx *ctx, const char *path, unsigned char **data,
                            size_t *len);
/* Parses L's buffer into one document's root node; *root is NULL for an
 * empty stream. */
hvq_status hvq_pl_parse_document(loader *L, ynode **root);

/* "a scalar", "a sequence", "a mapping". */
const char *hvq_pl_kind_name(const ynode *n);
/* A plain empty, ~ or null scalar. */
int hvq_pl_is_null(const ynode *n);
/* Keys are scalars and unique (the duplicate reported is the first one
 * in the file). */
hvq_status hvq_pl_check_keys(loader *L, const ynode *map);
/* "unknown WHAT 'x'WHERE; did you mean 'y'?" or a list of the valid
 * keys when none is close. */
hvq_status hvq_pl_unknown_key(loader *L, const ynode *k, const char *what,
                              const char *where, const char *const *valid,
                              size_t n);
/* "'NAME' must be a scalar, not ..." unless v is one. */
hvq_status hvq_pl_want_scalar(loader *L, const ynode *v, const char *name);

#endif
