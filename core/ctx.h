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
    int make_dirs; /* create an output's missing parent directories (and
                      remove them again when the run fails) */
} hvq_ctx_opts;

/* A new context with the host table attached; NULL only when out of
 * memory. Free with hvq_ctx_free (which aborts any output still open). */
hvq_ctx *hvq_ctx_new(const hvq_ctx_opts *opts);
void hvq_ctx_free(hvq_ctx *ctx);

/* Releases the values the run's instances shared (host->shared_put): the
 * driver calls it when a run ends, hvq_ctx_free for what is left. */
void hvq_ctx_shared_clear(hvq_ctx *ctx);

/* The host table the core hands to plugins. */
const hvq_host *hvq_host_table(void);

/* The last error (empty string when none) and its status. */
const char *hvq_ctx_error(const hvq_ctx *ctx);
hvq_status hvq_ctx_status(hvq_ctx *ctx);
void hvq_ctx_clear_error(hvq_ctx *ctx);
/* Prints the error to stderr as "hvqconv: error: MESSAGE" on a line of its
 * own (after a progress line), control characters escaped. */
void hvq_ctx_print_error(hvq_ctx *ctx);
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

/* Atomic outputs (core/output.c). An output is written to an anonymous
 * file (O_TMPFILE) in the directory of its final name, or to a hidden
 * temporary .NAME.tmp-XXXXXX there where the filesystem has no O_TMPFILE.
 * An output may never write or remove a file the run reads (an input: the
 * same file, the same path once links are resolved, or for the name first
 * opened a shard or index of its name's forms), nor replace a directory,
 * a symbolic link, a FIFO or a device; an existing file only with
 * opts.force. Refused with HVQ_E_INPUT when opened, renamed, and again at
 * commit (inputs read later). */
hvq_output *hvq_output_open(hvq_ctx *ctx, const char *final_path);
/* Puts every output in place or none, under an exclusive lock of each
 * output directory (concurrent runs take turns). Each destination is
 * checked before the first rename; with opts.force an existing file is
 * replaced only when it is the name an output was opened under, or is
 * listed (with the index itself) in an index NAME.EXT.index.json that
 * hvqconv wrote ("written_by": "hvqconv"). The files replaced keep a second
 * name until all renames succeed; a failed rename puts every destination
 * back as it was. After success, the files of that kind the run did not
 * write again (an earlier output's other shards or index, the named file
 * where shards now are) are removed; anything else of the name's forms is
 * left alone with a warning. */
hvq_status hvq_outputs_commit(hvq_ctx *ctx);
/* Records a file the run reads (hvq_ctx_add_input; the host's input_open
 * records what plugins open; a directory is not recorded, the files read
 * in it are). */
void hvq_ctx_add_input(hvq_ctx *ctx, const char *path);
/* Records an output path the user gave (-o, --report) for the next commit
 * (or abort): with opts.force the file of that name may be replaced, or
 * removed where the output is now written as shards. Shard and index names a writer makes up are never
 * replaced on this ground. */
void hvq_ctx_name_output(hvq_ctx *ctx, const char *path);
void hvq_outputs_abort(hvq_ctx *ctx);
/* For a fatal signal's handler (async-signal-safe): unlinks every hidden
 * temporary of the open outputs. */
void hvq_outputs_unlink_temporaries(void);

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
