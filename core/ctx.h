/* The host side of a context: error message, logging, threads, atomic
 * outputs, and the host function table handed to plugins. */
#ifndef HVQ_CORE_CTX_H
#define HVQ_CORE_CTX_H

#include "plugin.h"

#include <stdio.h>

struct hvq_registry;

/* Options the CLI sets on a context. */
typedef struct hvq_ctx_opts {
    int quiet;    /* no progress, no INFO logs */
    int verbose;  /* DEBUG logs */
    int threads;  /* >= 1 */
    int force;    /* allow replacing an existing output */
} hvq_ctx_opts;

/* A new context with the host table attached; NULL only when out of
 * memory. Free with hvq_ctx_free (which aborts any output still open). */
hvq_ctx *hvq_ctx_new(const hvq_ctx_opts *opts);
void hvq_ctx_free(hvq_ctx *ctx);

/* The host table the core hands to plugins. */
const hvq_host *hvq_host_table(void);

/* The last error (empty string when none) and its status. */
const char *hvq_ctx_error(const hvq_ctx *ctx);
hvq_status hvq_ctx_status(hvq_ctx *ctx);
void hvq_ctx_clear_error(hvq_ctx *ctx);
const hvq_ctx_opts *hvq_ctx_options(const hvq_ctx *ctx);

/* Registry the host's sink_open looks formats up in (not owned). */
void hvq_ctx_set_registry(hvq_ctx *ctx, const struct hvq_registry *reg);
const struct hvq_registry *hvq_ctx_registry(const hvq_ctx *ctx);

/* Convenience wrappers of the host table for core code. */
hvq_status hvq_error(hvq_ctx *ctx, hvq_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prefixes the current error message with "prefix: " (e.g. a file name). */
void hvq_error_prefix(hvq_ctx *ctx, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void hvq_log(hvq_ctx *ctx, hvq_log_level lvl, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void *hvq_alloc(hvq_ctx *ctx, size_t n);
void *hvq_calloc(hvq_ctx *ctx, size_t count, size_t size);
char *hvq_strdup(hvq_ctx *ctx, const char *s);

/* Atomic outputs: every output opened on ctx (through the host table or
 * directly) is renamed into place by commit, after fsync, or removed by
 * abort. commit refuses to replace an existing file unless opts.force. */
hvq_output *hvq_output_open(hvq_ctx *ctx, const char *final_path);
/* With opts.force, commit also removes the stale forms of each replaced
 * output (NAME.EXT, or its shards NAME-ddddd-of-ddddd.EXT and index
 * NAME.EXT.index.json) that the run did not write, except in directories
 * the run read an input from. */
hvq_status hvq_outputs_commit(hvq_ctx *ctx);
/* Records a path the run reads (a file, a directory, an index): its
 * directory is then never cleaned by commit. model_open records its paths
 * itself. */
void hvq_ctx_add_input(hvq_ctx *ctx, const char *path);
void hvq_outputs_abort(hvq_ctx *ctx);

/* Encoded-component sets. */
void hvq_encoded_init(hvq_encoded *enc);
void hvq_encoded_clear(hvq_encoded *enc);
/* Appends a component with its dtype, shape and size but no data (NULL):
 * the layout a clusterer's cluster_check looks at. */
hvq_status hvq_encoded_add_layout(hvq_ctx *ctx, hvq_encoded *enc, const char *name,
                                  hvq_dtype dtype, int ndim, const int64_t *shape);


/* Total size in bytes of the outputs opened so far and not yet committed:
 * those of output `of` (the file NAME.EXT, or its shards and index; other
 * files a run writes, such as a calibration's saved imatrix, are not part
 * of it), or all of them when of is NULL. */
uint64_t hvq_outputs_size(hvq_ctx *ctx, const char *of);

/* Marks that a progress line is on the terminal (logs clear it first). */
void hvq_ctx_line_dirty(hvq_ctx *ctx, int dirty);

#endif
