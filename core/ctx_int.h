/* The context's private state, shared by the files of the host side:
 * ctx.c (errors, logging, the host table, models), output.c (inputs and
 * atomic outputs), sink.c (sinks) and shared.c (values shared in a run). Nothing outside those includes it. */
#ifndef HVQ_CORE_CTX_INT_H
#define HVQ_CORE_CTX_INT_H

#include "ctx.h"

#include <sys/types.h>

/* A file the run reads (hvq_ctx_add_input, the host's input_open). */
typedef struct hvq_input_file {
    dev_t dev;
    ino_t ino;
    char *real; /* its path with every symbolic link resolved */
} hvq_input_file;

/* A value shared by the instances of a run (shared.c). */
typedef struct hvq_shared_value hvq_shared_value;

typedef struct ctx_private {
    hvq_ctx pub;
    hvq_ctx_opts opts;
    hvq_status status;
    char msg[4096];
    hvq_output *outputs;
    const struct hvq_registry *registry;
    int line_dirty; /* a progress line is on the terminal */
    hvq_input_file *inputs;
    size_t n_inputs;
    char **named; /* output paths the user gave (hvq_ctx_name_output) */
    size_t n_named;
    hvq_shared_value *shared; /* host->shared_put's values (shared.c) */
    char **made_dirs; /* directories output_open created, outermost first;
                         removed again when the run's outputs are abandoned */
    size_t n_made_dirs;
    size_t n_shared;
} ctx_private;

static inline ctx_private *priv(const hvq_ctx *ctx) { return (ctx_private *)ctx->host_private; }

/* output.c: the host table's slots for outputs and inputs. */
hvq_status hvq_output_write(hvq_ctx *ctx, hvq_output *o, const void *buf, size_t n);
hvq_status hvq_output_pwrite(hvq_ctx *ctx, hvq_output *o, const void *buf, size_t n,
                             uint64_t off);
uint64_t hvq_output_tell(hvq_output *o);
hvq_status hvq_output_rename(hvq_ctx *ctx, hvq_output *o, const char *final_path);
int hvq_input_open(hvq_ctx *ctx, const char *path);

/* sink.c: the host table's sink slots. */
hvq_sink_handle *hvq_sink_open_params(hvq_ctx *ctx, const char *format, const char *path,
                                      const char *const *options, const hvq_meta *meta,
                                      size_t n_meta, const hvq_tensor_info *tensors, size_t n);
hvq_sink_handle *hvq_sink_open(hvq_ctx *ctx, const char *format, const char *path,
                               const hvq_meta *meta, size_t n_meta,
                               const hvq_tensor_info *tensors, size_t n);
hvq_status hvq_sink_write(hvq_ctx *ctx, hvq_sink_handle *h, const hvq_tensor *t);
hvq_status hvq_sink_finish(hvq_ctx *ctx, hvq_sink_handle *h);
hvq_status hvq_sink_pass_control(hvq_ctx *ctx, hvq_sink_handle *h, hvq_sink_control *c);
void hvq_sink_close(hvq_ctx *ctx, hvq_sink_handle *h);
/* shared.c: the host table's shared_get and shared_put. */
void *hvq_shared_get(hvq_ctx *ctx, const char *key);
hvq_status hvq_shared_put(hvq_ctx *ctx, const char *key, void *value,
                          void (*release)(void *value));
/* Frees what output.c keeps on the context: inputs, named outputs. */
void hvq_inputs_free(hvq_ctx *ctx);

#endif
