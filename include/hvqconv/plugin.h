/* hvqconv plugin contract.
 *
 * This header is the whole interface between hvqconv and its plugins. A
 * plugin includes it alone, links against nothing from hvqconv, and exports
 * one function, hvq_plugin_entry(), that returns a pointer to a constant
 * descriptor (struct hvq_plugin). Everything the plugin needs from the host
 * (memory, error reporting, logging, progress, output files, dtype
 * conversion, other plugins) comes through the function table reachable
 * from every context: ctx->host.
 *
 * Versioning
 *   HVQ_ABI_VERSION changes when an existing field changes meaning or
 *   position; the host refuses plugins built for another ABI version. Within
 *   one ABI version, structs only grow at the end: the host copies as many
 *   bytes of the descriptor as the plugin declares in struct_size and treats
 *   every field past that as absent (zero). Status codes, kinds, dtypes and
 *   parameter types only ever get new values appended.
 *
 * Ownership, in one sentence per rule:
 *   - Strings and arrays in a descriptor are the plugin's, static, and must
 *     live as long as the shared object is loaded.
 *   - Pointers the host passes into a callback are the host's and are valid
 *     only for the duration of that call unless the field says otherwise.
 *   - Memory a plugin hands to the host (component arrays, metadata) is
 *     allocated with ctx->host->alloc and becomes the host's to free.
 *   - Per-instance state (void *state) is the plugin's; the host passes it
 *     back untouched and calls the matching close callback exactly once,
 *     also after a failed call, so close must free a half-built state.
 *
 * Threads: callbacks of one instance are never called concurrently. A
 * plugin may run its own threads inside a callback, up to
 * ctx->host->threads(ctx), and must give the same result whatever the count.
 *
 * This header is C99 and C++ compatible and has no dependency beyond the
 * C standard headers below.
 */
#ifndef HVQ_PLUGIN_H
#define HVQ_PLUGIN_H

#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ABI version of this header. A plugin whose descriptor carries another
 * value is refused with a message naming both numbers. */
#define HVQ_ABI_VERSION 1

/* The one symbol a plugin exports. */
#define HVQ_PLUGIN_ENTRY_SYMBOL "hvq_plugin_entry"

/* The largest number of dimensions a tensor may have. */
#define HVQ_MAX_DIMS 8

/* ------------------------------------------------------------------------
 * Status codes. Zero is success; the ladder follows libarchive: a warning
 * still produced a result, an error in "this item" lets a caller carry on
 * with the next item, the rest abort the operation. Values only grow.
 * ---------------------------------------------------------------------- */
typedef enum hvq_status {
    HVQ_OK = 0,
    HVQ_WARN = 1,        /* done, but something was adapted; logged */
    HVQ_E_INPUT = 2,     /* bad input: a file, a pipeline, an argument */
    HVQ_E_NOMEM = 3,     /* out of memory */
    HVQ_E_IO = 4,        /* a read or write failed (disk full, EIO, ...) */
    HVQ_E_UNSUPPORTED = 5, /* valid input this plugin cannot handle */
    HVQ_E_NOTFOUND = 6,  /* a looked-up item does not exist */
    HVQ_E_INTERNAL = 7   /* a bug or an impossible state */
} hvq_status;

/* ------------------------------------------------------------------------
 * Plugin kinds. A descriptor declares one or more kinds as a bit set; only
 * SOURCE and SINK may be combined (a file format usually reads and writes).
 * MODEL was appended after the first release (see "Model plugins" below).
 * ---------------------------------------------------------------------- */
typedef enum hvq_kind {
    HVQ_KIND_SOURCE = 1u << 0,     /* reads a model file or directory */
    HVQ_KIND_SINK = 1u << 1,       /* writes a model file */
    HVQ_KIND_HESSIAN = 1u << 2,    /* gives the Hessian diagonal of a tensor */
    HVQ_KIND_IMPORTANCE = 1u << 3, /* scores the entries of a tensor */
    HVQ_KIND_CLUSTERER = 1u << 4,  /* quantizes the dense body */
    HVQ_KIND_RESIDUAL = 1u << 5,   /* encodes the sparse correction */
    HVQ_KIND_WRITER = 1u << 6,     /* writes the result of a pipeline */
    HVQ_KIND_MODEL = 1u << 7       /* runs a model architecture's forward
                                      pass (eval, calibration) */
} hvq_kind;

/* ------------------------------------------------------------------------
 * Element types. Values only grow. HVQ_DTYPE_OPAQUE is any type the host
 * does not interpret; such tensors carry their format's type name in
 * hvq_tensor_info.dtype_name and are copied byte for byte.
 * ---------------------------------------------------------------------- */
typedef enum hvq_dtype {
    HVQ_DTYPE_OPAQUE = 0,
    HVQ_DTYPE_F32 = 1,
    HVQ_DTYPE_F16 = 2,
    HVQ_DTYPE_BF16 = 3,
    HVQ_DTYPE_F64 = 4,
    HVQ_DTYPE_I8 = 5,
    HVQ_DTYPE_U8 = 6,
    HVQ_DTYPE_I16 = 7,
    HVQ_DTYPE_U16 = 8,
    HVQ_DTYPE_I32 = 9,
    HVQ_DTYPE_U32 = 10,
    HVQ_DTYPE_I64 = 11,
    HVQ_DTYPE_U64 = 12,
    HVQ_DTYPE_BOOL = 13
} hvq_dtype;

typedef enum hvq_log_level {
    HVQ_LOG_ERROR = 0,
    HVQ_LOG_WARN = 1,
    HVQ_LOG_INFO = 2,
    HVQ_LOG_DEBUG = 3
} hvq_log_level;

/* ------------------------------------------------------------------------
 * Parameters. A plugin declares its parameters as a NULL-name-terminated
 * array of hvq_param_spec. The host validates every pipeline value against
 * the spec before any work starts, applies defaults, and hands the plugin
 * resolved values in declaration order (hvq_params.values[i] belongs to
 * params[i]). Unknown keys are errors, never ignored.
 * ---------------------------------------------------------------------- */
typedef enum hvq_param_type {
    HVQ_PARAM_INT = 1,    /* int64, bounded by [min, max] */
    HVQ_PARAM_FLOAT = 2,  /* double, bounded by [min, max], finite */
    HVQ_PARAM_BOOL = 3,   /* true/false, yes/no, on/off, 1/0 */
    HVQ_PARAM_STRING = 4, /* any string */
    HVQ_PARAM_CHOICE = 5, /* one of choices[] */
    HVQ_PARAM_PATH = 6,   /* a file path; relative paths are relative to
                             the current directory, like input: */
    HVQ_PARAM_SIZE = 7    /* a byte count: 4096, 500MB, 5GB, 2GiB (K/M/G/T
                             decimal, Ki/Mi/Gi/Ti binary); in .i, bounded
                             by [min, max] like INT */
} hvq_param_type;

typedef struct hvq_param_spec {
    const char *name;           /* [a-z][a-z0-9_]*; NULL ends the list */
    hvq_param_type type;
    const char *default_value;  /* in the same text form a user writes;
                                   NULL means the parameter is required */
    double min, max;            /* INT and FLOAT: inclusive bounds; both
                                   0 means unbounded */
    const char *const *choices; /* CHOICE: NULL-terminated list */
    const char *help;           /* one line, shown by `hvqconv describe` */
} hvq_param_spec;

typedef struct hvq_value {
    hvq_param_type type; /* copy of the spec's type */
    int64_t i;           /* INT, BOOL (0/1) */
    double f;            /* FLOAT (INT values are mirrored here too) */
    const char *s;       /* STRING, CHOICE, PATH; the text for every type */
    int is_default;      /* 1 when no pipeline value was given */
} hvq_value;

/* Resolved parameters of one stage for one tensor. Owned by the host, valid
 * for the duration of the callback (or of the instance, for open calls). */
typedef struct hvq_params {
    size_t count;             /* number of declared parameters */
    const hvq_value *values;  /* values[i] belongs to the plugin's params[i] */
    const hvq_param_spec *specs; /* the plugin's params (for lookups) */
} hvq_params;

/* ------------------------------------------------------------------------
 * Tensors and metadata.
 * ---------------------------------------------------------------------- */
typedef struct hvq_tensor_info {
    const char *name;       /* unique within a model */
    hvq_dtype dtype;
    const char *dtype_name; /* the format's own name, e.g. "F32", "F8_E4M3" */
    int ndim;               /* 0..HVQ_MAX_DIMS; 0 is a scalar */
    int64_t shape[HVQ_MAX_DIMS]; /* outermost first: a weight is
                                    [out, in], rows are outputs */
    uint64_t nbytes;        /* size of the data in bytes */
} hvq_tensor_info;

typedef struct hvq_tensor {
    hvq_tensor_info info;
    const void *data;       /* little-endian, C order, info.nbytes long */
} hvq_tensor;

/* One metadata entry. A format stores its own metadata as strings (e.g.
 * safetensors' __metadata__); typed formats encode values as JSON text. */
typedef struct hvq_meta {
    const char *key;
    const char *value;
} hvq_meta;

/* ------------------------------------------------------------------------
 * Opaque handles and the context.
 * ---------------------------------------------------------------------- */
typedef struct hvq_host hvq_host;
typedef struct hvq_output hvq_output;   /* a file being written atomically */
typedef struct hvq_sink_handle hvq_sink_handle; /* an opened sink plugin */
typedef struct hvq_component hvq_component;     /* defined below */
typedef struct hvq_encoded hvq_encoded;         /* defined below */
typedef struct hvq_cluster_input hvq_cluster_input; /* defined below */
typedef struct hvq_model hvq_model;             /* a model file opened for a
                                                   plugin by the host */
typedef struct hvq_sink_control hvq_sink_control; /* defined below */
struct hvq_writer_setup;                        /* defined below (the
                                                   typedef hvq_writer_setup) */

/* Called by host->parallel_for once per chunk: chunk is its number
 * (0-based), [begin, end) its items. */
typedef void (*hvq_chunk_fn)(void *arg, uint64_t chunk, uint64_t begin, uint64_t end);

/* The context passed to every callback. Created and owned by the host; a
 * plugin must not keep it past the call that received it (an instance may
 * keep the ctx given to its open call until its close call). */
typedef struct hvq_ctx {
    const hvq_host *host;   /* the host function table; never NULL */
    void *host_private;     /* the host's; plugins must not touch it */
} hvq_ctx;

/* The host function table. Functions are appended, never reordered. */
struct hvq_host {
    uint32_t abi_version;   /* HVQ_ABI_VERSION of the host */
    uint32_t struct_size;   /* sizeof(hvq_host) in the host */

    /* Memory. alloc/calloc/realloc set an HVQ_E_NOMEM error on the ctx and
     * return NULL on failure. free(NULL) is a no-op. */
    void *(*alloc)(hvq_ctx *ctx, size_t n);
    void *(*calloc)(hvq_ctx *ctx, size_t count, size_t size);
    void *(*realloc)(hvq_ctx *ctx, void *p, size_t n);
    void (*free)(void *p);
    char *(*strdup)(hvq_ctx *ctx, const char *s);

    /* Errors. Sets the ctx's error message (printf format) and returns
     * status, so a plugin writes: return ctx->host->error(ctx, HVQ_E_INPUT,
     * "%s: bad header", path). Messages name the file and the problem. */
    hvq_status (*error)(hvq_ctx *ctx, hvq_status status, const char *fmt, ...)
#if defined(__GNUC__)
        __attribute__((format(printf, 3, 4)))
#endif
        ;
    /* Logging to the user (stderr); ERROR and WARN always shown, INFO unless
     * --quiet, DEBUG with --verbose. */
    void (*log)(hvq_ctx *ctx, hvq_log_level level, const char *fmt, ...)
#if defined(__GNUC__)
        __attribute__((format(printf, 3, 4)))
#endif
        ;
    /* Progress inside a long callback: done out of total units. */
    void (*progress)(hvq_ctx *ctx, uint64_t done, uint64_t total);

    /* Worker threads a plugin may use inside a callback (>= 1). */
    int (*threads)(hvq_ctx *ctx);

    /* Atomic output files. output_open creates a temporary file next to
     * final_path; the host renames every output of the run into place only
     * after the whole run succeeded (after fsync), and deletes them all on
     * any failure. The handle is the host's; plugins never close it. */
    hvq_output *(*output_open)(hvq_ctx *ctx, const char *final_path);
    hvq_status (*output_write)(hvq_ctx *ctx, hvq_output *out, const void *buf,
                               size_t n);
    hvq_status (*output_pwrite)(hvq_ctx *ctx, hvq_output *out, const void *buf,
                                size_t n, uint64_t offset);
    /* Bytes written so far (output_write's position). Kept for plugins
     * built against ABI 1: hvqconv's own plugins no longer call it (the
     * table's entries are never removed or moved). */
    uint64_t (*output_tell)(hvq_output *out);

    /* dtype conversion of n elements; F32 <-> F16/BF16/F64 in both
     * directions (round to nearest even). Returns HVQ_E_UNSUPPORTED for
     * other pairs. */
    hvq_status (*convert)(hvq_ctx *ctx, hvq_dtype dst_type, void *dst,
                          hvq_dtype src_type, const void *src, size_t n);
    size_t (*dtype_size)(hvq_dtype t);      /* 0 for OPAQUE */
    const char *(*dtype_name)(hvq_dtype t); /* "F32", "F16", ... */

    /* Sinks for writers: open the sink plugin `format` (NULL: chosen from
     * the extension of path) to write path. tensors[] declares every tensor
     * in write order; sink_write must then be called once per tensor in
     * that order. sink_finish completes the file; sink_close releases the
     * handle (and, without a finish, abandons the output). sink_open is
     * sink_open_params (below) without options. */
    hvq_sink_handle *(*sink_open)(hvq_ctx *ctx, const char *format,
                                  const char *path, const hvq_meta *meta,
                                  size_t n_meta, const hvq_tensor_info *tensors,
                                  size_t n_tensors);
    hvq_status (*sink_write)(hvq_ctx *ctx, hvq_sink_handle *h,
                             const hvq_tensor *t);
    hvq_status (*sink_finish)(hvq_ctx *ctx, hvq_sink_handle *h);
    void (*sink_close)(hvq_ctx *ctx, hvq_sink_handle *h);

    /* Parameter lookup by name (NULL when the plugin declares no such
     * parameter). values[] in declaration order is the fast path. */
    const hvq_value *(*param)(const hvq_params *p, const char *name);

    /* Encoded components. enc_add appends a component named name with the
     * given type and shape, allocates its zero-filled data (returned in
     * ->data) and records paper_bits; NULL on failure (error set). enc_attr
     * records a string attribute (copied). The getters return NULL when
     * absent. */
    hvq_component *(*enc_add)(hvq_ctx *ctx, hvq_encoded *enc, const char *name,
                              hvq_dtype dtype, int ndim, const int64_t *shape,
                              uint64_t paper_bits);
    hvq_status (*enc_attr)(hvq_ctx *ctx, hvq_encoded *enc, const char *key,
                           const char *value);
    const hvq_component *(*enc_get)(const hvq_encoded *enc, const char *name);
    const char *(*enc_attr_get)(const hvq_encoded *enc, const char *key);

    /* The status of the error last set on ctx (HVQ_OK when none): lets a
     * plugin pass on why a host call that returned NULL failed. */
    hvq_status (*status)(hvq_ctx *ctx);

    /* Reading another model file (e.g. a file of Hessian diagonals) through
     * whichever source plugin recognises it. model_find looks a tensor up by
     * name: HVQ_E_NOTFOUND (no message set) when absent; t->data stays valid
     * until the next model_find or model_close. model_count/model_info
     * enumerate the tensors. */
    hvq_model *(*model_open)(hvq_ctx *ctx, const char *path);
    hvq_status (*model_find)(hvq_ctx *ctx, hvq_model *m, const char *name,
                             hvq_tensor *t);
    size_t (*model_count)(hvq_model *m);
    hvq_status (*model_info)(hvq_model *m, size_t i, hvq_tensor_info *info);
    void (*model_close)(hvq_ctx *ctx, hvq_model *m);

    /* sink_open with options for the sink, "key=value" strings (NULL-
     * terminated list, or NULL), validated against the sink's declared
     * parameters like a pipeline's (unknown keys are errors). */
    hvq_sink_handle *(*sink_open_params)(hvq_ctx *ctx, const char *format,
                                         const char *path,
                                         const char *const *options,
                                         const hvq_meta *meta, size_t n_meta,
                                         const hvq_tensor_info *tensors,
                                         size_t n_tensors);

    /* Changes the name an output will get when the run commits (e.g. a
     * shard whose count was unknown when it was opened). */
    hvq_status (*output_rename)(hvq_ctx *ctx, hvq_output *out,
                                const char *final_path);

    /* The metadata of a model opened with model_open (valid until
     * model_close); the format's own encoding (see the source plugin). */
    void (*model_meta)(hvq_model *m, const hvq_meta **meta, size_t *n);

    /* The full input Hessian of the tensor a clusterer is encoding, for
     * error feedback (GPTQ): fills h[0..cols*cols) row-major with the
     * matrix the pipeline's hessian stage gives for in->tensor_name (its
     * hessian_get_full, e.g. calibrate's mean x x^T over the calibration
     * tokens). in must be the input the host passed to cluster_encode.
     * HVQ_E_NOTFOUND (no message set) when the stage gives none. Check
     * struct_size before calling: older hosts lack it. */
    hvq_status (*hessian_full)(hvq_ctx *ctx, const hvq_cluster_input *in, float *h);

    /* Opens path for reading as an input of the run, as
     * open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK) does (the caller checks
     * the file type and clears O_NONBLOCK), and records the file: no output
     * of the run may then write or remove it (the host refuses with
     * HVQ_E_INPUT). -1 with errno set when it cannot be opened. Every file
     * a plugin reads is opened through here. Check struct_size before
     * calling: older hosts lack it. */
    int (*input_open)(hvq_ctx *ctx, const char *path);

    /* The deterministic parallel loop, the project's one thread pool.
     * Cuts [0, n_items) into chunks of `chunk` items (0 is taken as 1; the
     * last chunk shorter) and runs fn once per chunk on the run's threads
     * (host->threads), the caller included; returns when all are done.
     * The chunking depends only on n_items and chunk, never on the thread
     * count: a caller that keeps one partial result per chunk and combines
     * them in chunk order gets the same bytes whatever the threads. Chunks
     * run in no particular order and fn must not touch another chunk's
     * data. It cannot fail (a thread that cannot start leaves its chunks to
     * the others). Older hosts lack it: call hvq_host_parallel_for (below),
     * which falls back to a loop in the caller. */
    void (*parallel_for)(hvq_ctx *ctx, uint64_t n_items, uint64_t chunk,
                         hvq_chunk_fn fn, void *arg);

    /* The name of the source format that recognises path (a file or a
     * directory) best, as the host chooses an input's format: the one
     * place where magic bytes are sniffed. NULL when no format recognises
     * it (no error set), or when it cannot be read (an HVQ_E_INPUT error
     * set). Check HVQ_HOST_HAS before calling: older hosts lack it. */
    const char *(*detect)(hvq_ctx *ctx, const char *path);

    /* model_open with the source format named instead of detected: for a
     * format without magic bytes that a plugin knows it is given (e.g.
     * llama.cpp's legacy imatrix .dat, "imatrix-dat"). NULL with an error
     * set when there is no such source format or it cannot open path.
     * Check HVQ_HOST_HAS before calling. */
    hvq_model *(*model_open_as)(hvq_ctx *ctx, const char *path, const char *format);

    /* The model plugin (HVQ_KIND_MODEL) to run a model with: the one named
     * name when name is not NULL, else the first (in registry order) whose
     * `architectures` lists architecture (e.g. "llama", GGUF's
     * general.architecture or config.json's model_type). Returns the
     * descriptor as the host keeps it (valid for the whole run, fields past
     * the plugin's struct_size zero, struct_size what the copy holds: check
     * an appended member with HVQ_PLUGIN_HAS); the caller then calls its
     * model_* and tokenizer_* callbacks itself, passing its own ctx, and
     * closes what it opened. NULL with an error set (HVQ_E_NOTFOUND for an unknown name,
     * HVQ_E_UNSUPPORTED for an architecture no plugin runs; the message
     * names it). Check HVQ_HOST_HAS before calling: older hosts lack it. */
    const struct hvq_plugin *(*model_plugin)(hvq_ctx *ctx, const char *name,
                                             const char *architecture);

    /* Tells a sink opened in streaming mode (safetensors: the option
     * streaming=true) what the tensors alone do not: where an item (e.g.
     * an original tensor stored as several tensors) begins, how much
     * header it may still need, and text to append to the value of the
     * last metadata key (e.g. a container's index of tensors, known only
     * as tensors arrive). See hvq_sink_control. HVQ_E_UNSUPPORTED when the
     * sink has no sink_control. Check struct_size before calling: older
     * hosts lack it. */
    hvq_status (*sink_control)(hvq_ctx *ctx, hvq_sink_handle *h, hvq_sink_control *c);

    /* Values shared by the instances one run opens, under a key the
     * plugin makes up (begin it with the plugin's name): e.g. statistics a
     * Hessian source computed once for the several parameter sets of a
     * pipeline's overrides. shared_get gives the value stored under key in
     * this run, or NULL. shared_put stores value under key (HVQ_E_INPUT
     * when the key is taken, HVQ_E_NOMEM); from then on the value is the
     * host's: it calls release(value) when the run ends, after every
     * instance of the run closed, and instances only borrow it. Both may
     * be called from any thread. Check HVQ_HOST_HAS before calling. */
    void *(*shared_get)(hvq_ctx *ctx, const char *key);
    hvq_status (*shared_put)(hvq_ctx *ctx, const char *key, void *value,
                             void (*release)(void *value));

    /* For a writer that declares its output before the tensors arrive
     * (e.g. the clusterer's own block types into GGUF): what the run will
     * use for compressed tensor i of the setup its writer_open call
     * received (overrides and a size target's choice applied), as text:
     * the plugin of stage `stage` ("hessian", "importance", "clusterer",
     * "residual") when key is NULL, else the resolved value of that
     * plugin's parameter key. NULL (no error set) when tensor i is not
     * compressed, there is no such stage or parameter, or setup is not the
     * one of the writer_open call running on this thread. Valid for the
     * run. Check HVQ_HOST_HAS before calling: older hosts lack it. */
    const char *(*writer_stage_param)(hvq_ctx *ctx, const struct hvq_writer_setup *setup,
                                      size_t i, const char *stage, const char *key);
};

/* Whether the host a plugin runs in has the slot `field` (a host built
 * before the slot was appended has a shorter table): a plugin checks it
 * before calling any slot appended after the first release (hessian_full
 * and later). */
#define HVQ_HOST_HAS(host, field)                                             \
    ((host)->struct_size >= offsetof(hvq_host, field) + sizeof((host)->field) \
     && (host)->field != NULL)

/* ------------------------------------------------------------------------
 * Stage inputs and outputs.
 * ---------------------------------------------------------------------- */

/* A named array a clusterer or residual coder produces: what the container
 * stores for a tensor (codebook, indices, scales, ...). data is allocated
 * with host->alloc and is the host's after the callback returns. */
struct hvq_component {
    char name[32];          /* e.g. "codebook", "indices"; unique per stage */
    hvq_dtype dtype;        /* element type of data */
    int ndim;
    int64_t shape[HVQ_MAX_DIMS];
    void *data;
    uint64_t nbytes;
    uint64_t paper_bits;    /* this component's size in the paper's
                               accounting (e.g. ceil(log2 K) bits per index
                               even when stored in whole bytes) */
};

/* Output of a clusterer or residual coder: components and string
 * attributes (e.g. "block_size" = "4") a decoder needs. The arrays are
 * the host's; a plugin appends through host->enc_add and host->enc_attr
 * and reads through host->enc_get and host->enc_attr_get. */
struct hvq_encoded {
    hvq_component *components; /* host-owned array, grown by add_component */
    size_t n_components;
    hvq_meta *attrs;           /* host-owned; keys and values host->strdup'd */
    size_t n_attrs;
    size_t host_reserved[2];   /* the host's; plugins must not touch it */
};

/* What a clusterer gets for one tensor. The matrix is rows x cols,
 * row-major float32. Unless the clusterer sets HVQ_CLUSTERER_RAW, x is the
 * normalized body B (W / s with the sparse entries set to 0) and the
 * reconstruction is in the normalized domain too; with HVQ_CLUSTERER_RAW it
 * is the original W (with the sparse entries, if the residual keeps any,
 * set to 0) and the reconstruction is W_hat itself. */
struct hvq_cluster_input {
    const char *tensor_name;
    const float *x;          /* rows * cols values; host-owned */
    uint64_t rows, cols;
    const float *hessian;    /* cols values (H_j), never NULL (1 if none) */
    const float *row_scale;  /* rows values s_i (NULL with RAW) */
    const uint64_t *sparse_pos; /* sorted flat positions removed into the
                                   residual (n_sparse of them) */
    uint64_t n_sparse;
    uint64_t seed;           /* derived from the pipeline seed and the
                                tensor name; use it for every random draw */
};

/* What a residual coder gets for one tensor: the positions chosen by the
 * importance stage (sorted ascending, flat row-major), the exact target
 * values there (normalized W), and the clusterer's reconstruction, which the
 * coder must update in place at those positions to exactly what its
 * decoder will produce. */
typedef struct hvq_residual_input {
    const char *tensor_name;
    uint64_t rows, cols;
    const uint64_t *pos;     /* n positions, ascending */
    const float *target;     /* n values: W_norm at pos */
    uint64_t n;
    float *recon;            /* rows * cols, in/out */
} hvq_residual_input;

/* What the writer gets for each tensor, in source order. */
typedef struct hvq_result {
    hvq_tensor original;     /* as read from the source; data valid for the
                                call */
    int compressed;          /* 0: pass-through; 1: compressed */
    /* For compressed tensors only: */
    const float *recon;      /* rows * cols, the reconstruction W_hat the
                                report measured */
    uint64_t rows, cols;     /* the matrix view: rows = shape[0] */
    const float *row_scale;  /* fp16-representable s_i (NULL with RAW) */
    const char *clusterer, *residual; /* plugin names */
    const char *clusterer_version, *residual_version;
    const hvq_encoded *cluster_enc;   /* components of the clusterer */
    const hvq_encoded *residual_enc;  /* components of the residual coder */
} hvq_result;

/* What the writer is told before the first tensor. */
typedef struct hvq_writer_setup {
    const char *output_path;        /* final path; open via output_open or
                                       sink_open */
    const char *source_path;
    const char *source_format;      /* name of the source plugin */
    const hvq_meta *source_meta;    /* the model's metadata, as read */
    size_t n_source_meta;
    const hvq_tensor_info *tensors; /* every tensor, in the order writer_tensor
                                       will receive them */
    const unsigned char *compressed;/* per tensor: 1 if it will be compressed */
    size_t n_tensors;
    const char *pipeline_yaml;      /* the effective pipeline, as text */
} hvq_writer_setup;

/* ------------------------------------------------------------------------
 * Model plugins (HVQ_KIND_MODEL): one architecture's forward pass, used by
 * `hvqconv eval` (perplexity) and by Hessian sources that run the model
 * (calibrate), which reach it through host->model_plugin.
 * ---------------------------------------------------------------------- */

/* Supplies one tensor by name as float32: *data allocated with
 * ctx->host->alloc (the model plugin releases it with ctx->host->free),
 * its shape in *ndim and shape[] ([out, in] for a weight). HVQ_E_NOTFOUND,
 * no message needed, when there is no such tensor. */
typedef hvq_status (*hvq_model_get_fn)(void *ud, hvq_ctx *ctx, const char *name,
                                       float **data, int *ndim,
                                       int64_t shape[HVQ_MAX_DIMS]);

/* What model_open gets. The weights come from `model` (a model file opened
 * with host->model_open: the plugin looks tensors up with host->model_find
 * and converts them to what it computes in) or, when model is NULL, from
 * get (e.g. the host decoding a compressed container tensor by tensor).
 * The configuration is config_json (Hugging Face config.json text) when
 * not NULL, else the metadata meta[0..n_meta) (GGUF keys, values as the
 * gguf source gives them: typed JSON text). Everything is the caller's and
 * is valid for the model_open call only: the plugin copies what it keeps. */
typedef struct hvq_model_input {
    const char *path;           /* the model, for messages */
    hvq_model *model;           /* or NULL: then get */
    hvq_model_get_fn get;
    void *get_ud;
    const char *config_json;    /* or NULL */
    const hvq_meta *meta;
    size_t n_meta;
} hvq_model_input;

/* The shape of an opened model, as model_info reports it. */
typedef struct hvq_model_info {
    const char *architecture;   /* e.g. "llama"; static */
    int n_layers;
    int hidden;                 /* model width */
    int intermediate;           /* MLP width */
    int n_heads, n_kv_heads, head_dim;
    int vocab;
    int tied;                   /* output head is the token embedding */
    int gguf_names;             /* tensors have llama.cpp (GGUF) names,
                                   else Hugging Face names */
} hvq_model_info;

/* The linear layers of one block, in the order the plugin numbers them (a
 * static table in the descriptor, ended by short_name NULL). Layers with
 * the same `input` multiply the same activations (q, k and v; gate and
 * up). Names are printf formats taking the block number once. */
typedef struct hvq_model_linear {
    const char *short_name;     /* "q", "gate", ... */
    const char *hf_name;        /* "model.layers.%d.self_attn.q_proj.weight" */
    const char *gguf_name;      /* "blk.%d.attn_q.weight" */
    int input;                  /* 0-based; equal for shared inputs */
} hvq_model_linear;

/* Called by a model's forward pass, when set, with the activations that
 * enter linear layer `linear` (an index into model_linears) of block
 * `layer`: x is n_tokens rows of in_dim float32 values (row-major), valid
 * for the call. Layers that share an input each get the call. */
typedef void (*hvq_model_hook_fn)(void *ud, int layer, int linear, const float *x,
                                  int n_tokens, int in_dim);

/* What a writer tells a streaming sink through host->sink_control (the
 * sink's own sink_control gets it unchanged). A streaming sink learns its
 * tensors one sink_write at a time, so it reserves header room, writes the
 * data, and fills the header in at the end. Every field is read on every
 * call; in this order the sink: takes meta_reserve and meta_pending; when
 * item is set, begins that item; when meta_append is set, appends it and
 * fills item_header. */
struct hvq_sink_control {
    uint32_t struct_size;      /* sizeof(hvq_sink_control) of the caller */
    /* A new item begins (NULL: the current one goes on). Its name, its
     * position among n_items, named in messages and used to suggest a
     * header reservation. */
    const char *item;
    size_t item_index, n_items;
    /* The data bytes the item's tensors will take together: with shards,
     * they start the next shard when they fit in one but not in what the
     * current one has left (0: no such rule). */
    uint64_t item_bytes;
    /* An upper bound of the header bytes this item and every later one
     * will add (their entries and appended metadata): the room the sink
     * reserves when it must fix a header's size before the end. */
    uint64_t header_to_come;
    /* Bytes the last metadata value will still grow by before the end,
     * counted in every header size from now on. */
    uint64_t meta_reserve;
    /* Bytes the current item is about to append to the last metadata
     * value, counted when the sink checks that a header still has room. */
    uint64_t meta_pending;
    /* Text appended to the value of the last metadata key (the first file
     * of a sharded output), or NULL. The metadata given to sink_open must
     * not be empty. */
    const char *meta_append;
    size_t meta_append_len;
    /* Out: the header bytes the current item has added so far (its
     * entries in every file and its escaped metadata text). */
    uint64_t item_header;
};

/* Containers: a SOURCE that reads a container of compressed tensors (the
 * hvq format, docs/FORMAT.md) describes it with these, through its
 * container_view and container_part callbacks; the host decodes, checks
 * the checksums and writes. Strings and arrays are the source's, valid
 * until source_close. */

/* The clusterer or residual stage of a compressed tensor. */
typedef struct hvq_container_stage {
    const char *plugin;      /* plugin name, e.g. "rtn" */
    const char *version;     /* the version that wrote it */
    const hvq_meta *attrs;   /* string attributes, in stored order */
    size_t n_attrs;
    size_t n_components;
} hvq_container_stage;

/* One original tensor of a container. */
typedef struct hvq_container_tensor {
    const char *name;
    const char *dtype_name;  /* the original dtype ("F32", "BF16", "F8_E4M3") */
    hvq_dtype dtype;         /* OPAQUE when hvqconv does not interpret it */
    int ndim;
    int64_t shape[HVQ_MAX_DIMS];
    uint64_t numel;
    int compressed;          /* 0: stored raw, 1: compressed */
    uint32_t crc32;          /* as recorded */
    uint64_t stored_bytes;   /* bytes of every stored tensor of this one */
    size_t n_stored;         /* its stored tensors (container_part k) */
    /* Compressed tensors only: */
    uint64_t rows, cols;
    int has_scales;          /* row scales present (not a raw clusterer) */
    hvq_container_stage clusterer, residual;
    int has_paper_bits;
    uint64_t paper_bits;     /* the paper's accounting, when recorded */
} hvq_container_tensor;

/* A whole container, as container_view gives it. */
typedef struct hvq_container_view {
    const hvq_container_tensor *tensors; /* every original tensor, in order */
    size_t n;
    const hvq_meta *meta;          /* the container's own metadata */
    size_t n_meta;
    const hvq_meta *source_meta;   /* the original model's metadata */
    size_t n_source_meta;
    uint64_t file_size;            /* bytes of all its files */
} hvq_container_view;

/* The roles of a stored tensor (container_part). */
#define HVQ_PART_DATA 0      /* a raw tensor's bytes, or the row scales */
#define HVQ_PART_CLUSTERER 1 /* a component of the clusterer */
#define HVQ_PART_RESIDUAL 2  /* a component of the residual coder */

/* Descriptor flags. */
#define HVQ_CLUSTERER_RAW (1u << 0) /* works on the raw weights: no row
                                       normalization (the sparse entries a
                                       residual keeps, chosen on the
                                       normalized scores, are set to 0 and
                                       corrected in the raw domain) */

/* ------------------------------------------------------------------------
 * Conversion between model layouts (`hvqconv convert`), offered by a model
 * plugin: Hugging Face names and rotate-half q/k rows on one side,
 * llama.cpp's names, interleaved q/k rows and GGUF metadata on the other.
 * ---------------------------------------------------------------------- */

/* What convert_open gets; the caller's, valid for the convert_open call
 * only (the plugin copies what it keeps). */
typedef struct hvq_convert_setup {
    int to_gguf;                /* 1: Hugging Face -> llama.cpp (GGUF);
                                   0: llama.cpp (GGUF) -> Hugging Face */
    const char *path;           /* the input, for messages */
    const char *config_json;    /* to_gguf: config.json text (never NULL) */
    const char *config_path;    /* where it was read, for messages */
    const hvq_meta *meta;       /* !to_gguf: the GGUF metadata */
    size_t n_meta;
    const char *model_dir;      /* to_gguf: the directory that may hold
                                   tokenizer.json / tokenizer.model (NULL:
                                   none) */
    const char *tokenizer;      /* a tokenizer file given by the user
                                   (the plugin's own format), or NULL */
    const hvq_tensor_info *tensors; /* the input's tensors */
    size_t n_tensors;
    hvq_dtype dtype;            /* the output's weight type (general.file_type) */
} hvq_convert_setup;

/* What convert_tensor says about one input tensor. */
typedef struct hvq_convert_tensor {
    const char *name;           /* output name; the plugin's, valid until
                                   convert_close; NULL: drop the tensor */
    int reorder;                /* 1: its rows go through convert_rows */
    hvq_dtype keep;             /* OPAQUE: the type --dtype asks for; else
                                   this type (e.g. F32 for GGUF norms) */
} hvq_convert_tensor;

/* ------------------------------------------------------------------------
 * The descriptor. Fields are grouped by kind; a plugin fills the header,
 * the metadata and the callbacks of its kind(s). Mandatory callbacks per
 * kind are marked [M]; the host refuses a plugin that lacks one.
 * ---------------------------------------------------------------------- */
typedef struct hvq_plugin {
    /* Header, stamped by HVQ_PLUGIN_HEADER. */
    uint32_t abi_version;       /* HVQ_ABI_VERSION the plugin was built with */
    uint32_t struct_size;       /* sizeof(hvq_plugin) the plugin was built
                                   with */

    /* Metadata. */
    uint32_t kinds;             /* bit set of hvq_kind */
    uint32_t flags;             /* HVQ_CLUSTERER_RAW, ... */
    const char *name;           /* [a-z][a-z0-9_-]*, unique per kind */
    const char *version;        /* the plugin's own version, e.g. "1.0.0" */
    const char *summary;        /* one line */
    const char *license;        /* SPDX identifier, e.g. "MIT" */
    const hvq_param_spec *params; /* NULL-name-terminated, or NULL */

    /* SOURCE. probe returns 0..100: how sure it is that path (a file, whose
     * first head_len bytes are head, or a directory, head_len == 0) is its
     * format. The host reads the head (4096 bytes, or all of a shorter
     * file); a probe does not read the file itself. */
    int (*probe)(const char *path, const unsigned char *head, size_t head_len);
    hvq_status (*source_open)(hvq_ctx *ctx, const char *path,
                              void **state);                        /* [M] */
    size_t (*source_count)(void *state);                            /* [M] */
    /* Info of tensor i; the pointers in *info stay valid until close. */
    hvq_status (*source_info)(void *state, size_t i,
                              hvq_tensor_info *info);               /* [M] */
    /* Data of tensor i; t->data stays valid until the next source_read or
     * source_close of this instance (mmap-backed sources: until close). */
    hvq_status (*source_read)(hvq_ctx *ctx, void *state, size_t i,
                              hvq_tensor *t);                       /* [M] */
    /* The model's metadata; valid until close. */
    void (*source_meta)(void *state, const hvq_meta **meta, size_t *n);
    void (*source_close)(hvq_ctx *ctx, void *state); /* [M] */

    /* SINK. Declares every tensor (and the order of writes) up front, so a
     * format can write its header first and stream the data. Writes go
     * through host->output_open so they are atomic. */
    hvq_status (*sink_create)(hvq_ctx *ctx, const char *path,
                              const hvq_meta *meta, size_t n_meta,
                              const hvq_tensor_info *tensors, size_t n,
                              void **state);                        /* [M] */
    hvq_status (*sink_write)(hvq_ctx *ctx, void *state,
                             const hvq_tensor *t);                  /* [M] */
    hvq_status (*sink_finish)(hvq_ctx *ctx, void *state);           /* [M] */
    void (*sink_close)(hvq_ctx *ctx, void *state); /* [M] */
    const char *extensions;     /* e.g. ".safetensors" (space-separated) */

    /* HESSIAN. get fills h[0..cols) with the diagonal for a tensor whose
     * matrix view is rows x cols; HVQ_E_NOTFOUND when it has none. */
    hvq_status (*hessian_open)(hvq_ctx *ctx, const hvq_params *params,
                               const char *model_path, void **state); /* [M] */
    hvq_status (*hessian_get)(hvq_ctx *ctx, void *state,
                              const hvq_tensor_info *t, uint64_t rows,
                              uint64_t cols, float *h);             /* [M] */
    void (*hessian_close)(hvq_ctx *ctx, void *state); /* [M] */

    /* IMPORTANCE. score[i*cols+j] for the normalized matrix w, given the
     * Hessian diagonal h (cols values). Higher means more important. */
    hvq_status (*importance_score)(hvq_ctx *ctx, const hvq_params *params,
                                   const float *w, uint64_t rows,
                                   uint64_t cols, const float *h,
                                   float *score);                   /* [M] */

    /* CLUSTERER. Fills recon (rows * cols) with the decoded body and
     * appends its components to enc. */
    hvq_status (*cluster_encode)(hvq_ctx *ctx, const hvq_params *params,
                                 const hvq_cluster_input *in, float *recon,
                                 hvq_encoded *enc);                 /* [M] */
    /* Rebuilds recon from components alone (used by decode). */
    hvq_status (*cluster_decode)(hvq_ctx *ctx, const hvq_encoded *enc,
                                 uint64_t rows, uint64_t cols,
                                 float *recon);                     /* [M] */

    /* RESIDUAL. count: how many entries this coder keeps for a tensor of
     * numel entries (e.g. floor(sparsity * numel)). */
    uint64_t (*residual_count)(const hvq_params *params,
                               uint64_t numel);                     /* [M] */
    hvq_status (*residual_encode)(hvq_ctx *ctx, const hvq_params *params,
                                  hvq_residual_input *in,
                                  hvq_encoded *enc);                /* [M] */
    /* Applies the stored correction to recon (used by decode). */
    hvq_status (*residual_decode)(hvq_ctx *ctx, const hvq_encoded *enc,
                                  uint64_t rows, uint64_t cols,
                                  float *recon);                    /* [M] */

    /* WRITER. */
    hvq_status (*writer_open)(hvq_ctx *ctx, const hvq_params *params,
                              const hvq_writer_setup *setup,
                              void **state);                        /* [M] */
    hvq_status (*writer_tensor)(hvq_ctx *ctx, void *state,
                                const hvq_result *r);               /* [M] */
    hvq_status (*writer_finish)(hvq_ctx *ctx, void *state);         /* [M] */
    void (*writer_close)(hvq_ctx *ctx, void *state); /* [M] */

    /* SINK, optional: sink_create with the sink's declared parameters
     * resolved (e.g. safetensors' max_shard_size). The host calls it, when
     * present, instead of sink_create. */
    hvq_status (*sink_create_params)(hvq_ctx *ctx, const char *path,
                                     const hvq_params *params,
                                     const hvq_meta *meta, size_t n_meta,
                                     const hvq_tensor_info *tensors, size_t n,
                                     void **state);

    /* CLUSTERER, optional: checks, without decoding, that enc is a
     * well-formed encoding of a rows x cols matrix: the attributes and the
     * components' dtype, ndim, shape and nbytes, everything cluster_decode
     * would refuse before reading a value. Component data is NULL here.
     * The host calls it when a container is opened, before it allocates
     * any decoded tensor, so a file whose few bytes claim a huge tensor is
     * refused as bad input (HVQ_E_INPUT with a message) rather than by an
     * allocation failing. cluster_decode must still check on its own.
     * Absent: only cluster_decode checks. */
    hvq_status (*cluster_check)(hvq_ctx *ctx, const hvq_encoded *enc,
                                uint64_t rows, uint64_t cols);

    /* HESSIAN, optional: the full matrix for a tensor whose matrix view is
     * rows x cols, h[0..cols*cols) row-major (symmetric, what hessian_get
     * gives on its diagonal); HVQ_E_NOTFOUND, with no message, when this
     * instance has none (e.g. calibrate without full: true). The host calls
     * it only when a clusterer asks (host->hessian_full). */
    hvq_status (*hessian_get_full)(hvq_ctx *ctx, void *state, const hvq_tensor_info *t,
                                   uint64_t rows, uint64_t cols, float *h);

    /* MODEL (appended after the first release; the host refuses a model
     * plugin whose descriptor stops before tokenizer_close). */
    const char *architectures;  /* space-separated, e.g. "llama mistral" */
    const hvq_model_linear *model_linears; /* a block's linear layers */
    /* Builds a model from in (configuration, then every weight, checked
     * against it); errors name in->path and the tensor or key. params: the
     * plugin's declared parameters resolved, or NULL when it declares
     * none. */
    hvq_status (*model_open)(hvq_ctx *ctx, const hvq_params *params,
                             const hvq_model_input *in, void **state); /* [M] */
    void (*model_info)(void *state, hvq_model_info *info);           /* [M] */
    /* Runs one window of n tokens (n >= 1; ids checked against the
     * vocabulary) from an empty cache; adds to *nll the negative
     * log-likelihood (natural log) of tokens[1..n-1] given their prefixes
     * and n-1 to *n_scored. The same bits whatever host->threads says.
     * Stopped (model_set_stop): HVQ_E_IO "interrupted", *nll and *n_scored
     * untouched. */
    hvq_status (*model_window)(hvq_ctx *ctx, void *state, const int32_t *tokens,
                               int n, double *nll, uint64_t *n_scored); /* [M] */
    /* The activation hook (NULL: none). */
    void (*model_set_hook)(void *state, hvq_model_hook_fn fn, void *ud);
    /* When set, a window stops soon after *flag becomes nonzero (a signal
     * handler's flag). NULL: windows run to the end. */
    void (*model_set_stop)(void *state, const volatile sig_atomic_t *flag);
    void (*model_close)(hvq_ctx *ctx, void *state);                  /* [M] */
    /* The model's tokenizer: from the file path when not NULL (the
     * plugin's own tokenizer file format), else from the model's metadata
     * meta[0..n) (what names the model in messages); HVQ_E_NOTFOUND with
     * a message when there is none. encode_text encodes a whole text as
     * the plugin's architecture does for evaluation, into *ids allocated
     * with host->alloc (*n of them). vocab: the number of tokens. */
    hvq_status (*tokenizer_open)(hvq_ctx *ctx, const char *path, const hvq_meta *meta,
                                 size_t n, const char *what, void **tok);
    hvq_status (*tokenizer_encode_text)(hvq_ctx *ctx, void *tok, const char *text,
                                        size_t len, int32_t **ids, size_t *n);
    int (*tokenizer_vocab)(void *tok);
    void (*tokenizer_close)(hvq_ctx *ctx, void *tok);

    /* SINK, optional: what host->sink_control passes on (streaming
     * sinks). */
    hvq_status (*sink_control)(hvq_ctx *ctx, void *state, hvq_sink_control *c);

    /* SOURCE, optional (container formats): the container, validated at
     * source_open (every stored tensor listed once, dtypes, shapes and
     * sizes consistent); valid until source_close. */
    const hvq_container_view *(*container_view)(void *state);
    /* Stored tensor k (0 .. n_stored) of original tensor i: its role
     * (HVQ_PART_*), its component name for roles CLUSTERER and RESIDUAL
     * (else NULL), and its description, a raw tensor's as the original
     * (name, dtype, shape); with read, also its data, valid until the next
     * call or source_close (without, t->data is NULL). */
    hvq_status (*container_part)(hvq_ctx *ctx, void *state, size_t i, size_t k, int read,
                                 hvq_tensor *t, int *role, const char **component);

    /* SINK, optional (sinks that write an output in shards): the files an
     * earlier output's index lists. An output written in shards is
     * NAME-#####-of-#####.EXT with an index NAME.EXT.index.json beside
     * them; --force replaces such files only when hvqconv wrote them.
     * Given such an index, calls add(ud, name) for every file name it
     * lists and returns 1 when it is this sink's kind of index and hvqconv
     * wrote it (its metadata says so); else returns 0 and adds nothing.
     * The index is read without being recorded as an input of the run. */
    int (*sink_index_lists)(hvq_ctx *ctx, const char *index_path,
                            void (*add)(void *ud, const char *name), void *ud);

    /* MODEL, optional: calibration layer-major (check HVQ_PLUGIN_HAS
     * before calling either; a plugin that has model_open_lazy has
     * model_windows too). */
    /* model_open, except that the weights of the blocks and of the output
     * head are not read here but by model_windows (and model_window) when
     * the pass reaches them, converted then and freed after: in->model
     * (or in->get and in->get_ud) is kept and must stay valid, the file
     * open, until model_close; the rest of *in is copied as model_open
     * does. The configuration and what the pass needs first (for llama,
     * the token embedding) are read here, so model_info is complete but
     * for `tied` when the configuration does not say it (known after the
     * first pass); an error in a later tensor is reported by the pass that
     * reaches it, with model_open's message. */
    hvq_status (*model_open_lazy)(hvq_ctx *ctx, const hvq_params *params,
                                  const hvq_model_input *in, void **state);
    /* Runs n_windows windows of n tokens each, window w being
     * tokens[w*n .. w*n+n), layer-major: block l for every window in
     * window order, then block l + 1; the output head last. The hook
     * sees block l's inputs for window 0, then window 1, ... . Adds to
     * *nll each window's negative log-likelihood in window order, and
     * n_windows * (n - 1) to *n_scored: the same bits as model_window
     * called for each window in turn. Holds n_windows * n * hidden
     * activations; a model opened with model_open_lazy holds the weights
     * of one block at a time (or the embedding, or the head). Errors and
     * stopping as model_window. */
    hvq_status (*model_windows)(hvq_ctx *ctx, void *state, const int32_t *tokens,
                                int n_windows, int n, double *nll, uint64_t *n_scored);

    /* MODEL, optional (convert; all six or none): one architecture's
     * conversion between Hugging Face and llama.cpp layouts.
     * convert_open parses the configuration (and the tokenizer) of
     * setup; convert_tensor maps one input tensor (HVQ_E_UNSUPPORTED with
     * a message for a tensor it cannot place); convert_rows writes in's
     * rows in their new order to out (in->info.nbytes bytes, any dtype: a
     * row is nbytes / shape[0] bytes); convert_meta gives the output's
     * metadata (GGUF keys as typed JSON text; for Hugging Face output,
     * none); convert_file gives extra file k of the output directory
     * (config.json, tokenizer files: a name and its bytes, valid until
     * convert_close), HVQ_E_NOTFOUND past the last. */
    hvq_status (*convert_open)(hvq_ctx *ctx, const hvq_convert_setup *setup, void **state);
    hvq_status (*convert_tensor)(hvq_ctx *ctx, void *state, const hvq_tensor_info *in,
                                 hvq_convert_tensor *out);
    hvq_status (*convert_rows)(hvq_ctx *ctx, void *state, const hvq_tensor *in, void *out);
    hvq_status (*convert_meta)(hvq_ctx *ctx, void *state, const hvq_meta **meta, size_t *n);
    hvq_status (*convert_file)(hvq_ctx *ctx, void *state, size_t k, const char **name,
                               const void **data, size_t *len);
    void (*convert_close)(hvq_ctx *ctx, void *state);

    /* WRITER, optional: which outputs a writer writes, and which writer
     * the host runs instead when the output is not one of them (see
     * docs/plugins.md, "Which writer writes an output").
     * writer_formats: the output formats (sink plugin names,
     * space-separated) this writer writes; an output whose extension is
     * another sink's is not this writer's. NULL: any. */
    const char *writer_formats;
    /* What a user whose output is in another format can do instead (one
     * sentence, for the host's error); NULL: nothing to add. */
    const char *writer_elsewhere;
    /* Whether this writer writes, into an output of sink format `format`,
     * the encodings a pipeline's stages give AS THEY ARE (without
     * decompressing them): the settings of stages.writer (KEY=VALUE,
     * NULL-terminated, static) that do so, or NULL. The pipeline is read
     * through config: for stage "clusterer", "residual", ... and k = 0, 1,
     * ..., every configuration that stage may take for a compressed tensor
     * (the stage's own, each candidate's and each override's): the
     * plugin's name when key is NULL, else the effective value of its
     * parameter key as text (NULL when it has none); NULL past the last
     * k. */
    const char *const *(*writer_keeps)(hvq_ctx *ctx, const char *format,
                                       const char *(*config)(void *ud, const char *stage,
                                                             size_t k, const char *key),
                                       void *ud);

    /* New fields are appended here. */
} hvq_plugin;

/* The smallest descriptor the host accepts for ABI 1: up to and including
 * writer_close. */
#define HVQ_PLUGIN_MIN_SIZE                                                   \
    (offsetof(hvq_plugin, writer_close) + sizeof(void (*)(hvq_ctx *, void *)))

/* Whether a descriptor (a plugin's, or the copy host->model_plugin
 * returns) has the member `field` set: a caller checks it before calling
 * a member appended after the first release (the model members past
 * tokenizer_close and later). */
#define HVQ_PLUGIN_HAS(desc, field)                                           \
    ((desc)->struct_size >= offsetof(hvq_plugin, field) + sizeof((desc)->field) \
     && (desc)->field != NULL)

/* Put first in a descriptor's initializer. */
#define HVQ_PLUGIN_HEADER                                                     \
    HVQ_ABI_VERSION, (uint32_t)sizeof(hvq_plugin)

#if defined(_WIN32)
#define HVQ_EXPORT __declspec(dllexport)
#elif defined(__GNUC__)
#define HVQ_EXPORT __attribute__((visibility("default")))
#else
#define HVQ_EXPORT
#endif

/* The entry point's type and the registration macro:
 *   static const hvq_plugin my_plugin = { HVQ_PLUGIN_HEADER, ... };
 *   HVQ_REGISTER_PLUGIN(my_plugin)
 */
typedef const hvq_plugin *(*hvq_plugin_entry_fn)(void);

#ifdef __cplusplus
#define HVQ_REGISTER_PLUGIN(desc)                                             \
    extern "C" HVQ_EXPORT const hvq_plugin *hvq_plugin_entry(void);           \
    extern "C" HVQ_EXPORT const hvq_plugin *hvq_plugin_entry(void)            \
    {                                                                         \
        return &(desc);                                                       \
    }
#else
#define HVQ_REGISTER_PLUGIN(desc)                                             \
    HVQ_EXPORT const hvq_plugin *hvq_plugin_entry(void);                      \
    HVQ_EXPORT const hvq_plugin *hvq_plugin_entry(void) { return &(desc); }
#endif

/* ------------------------------------------------------------------------
 * Small helpers (header-only, no host state).
 * ---------------------------------------------------------------------- */

/* The rule every shape obeys, in readers and in the host alike: no
 * dimension is negative, and the non-zero dimensions multiply to at most
 * INT64_MAX. So any product of some of the dimensions, in any order (rows,
 * columns, a block), fits in 63 bits, even for a tensor with a zero
 * dimension. Returns 1 and the element count in *numel (0 when a dimension
 * is 0), or 0 when the shape breaks the rule. */
static inline int hvq_shape_numel(int ndim, const int64_t *shape, uint64_t *numel)
{
    uint64_t nz = 1;
    int d, zero = 0;
    if (ndim < 0 || ndim > HVQ_MAX_DIMS)
        return 0;
    for (d = 0; d < ndim; d++) {
        if (shape[d] < 0)
            return 0;
        if (shape[d] == 0) {
            zero = 1;
            continue;
        }
        if ((uint64_t)shape[d] > (uint64_t)INT64_MAX / nz)
            return 0;
        nz *= (uint64_t)shape[d];
    }
    *numel = zero ? 0 : nz;
    return 1;
}

/* Number of elements of a tensor (1 for a scalar). The caller has
 * validated the shape (hvq_shape_numel; the host does so for every
 * tensor a source lists). */
static inline uint64_t hvq_numel(const hvq_tensor_info *t)
{
    uint64_t n = 1;
    int d;
    for (d = 0; d < t->ndim; d++)
        n *= (uint64_t)t->shape[d];
    return n;
}

/* The number of chunks host->parallel_for cuts [0, n_items) into (0 when
 * n_items is 0; chunk 0 is taken as 1). */
static inline uint64_t hvq_parallel_chunks(uint64_t n_items, uint64_t chunk)
{
    if (chunk == 0)
        chunk = 1;
    return n_items / chunk + (n_items % chunk != 0);
}

/* Rows per chunk for a row-wise loop over a rows x cols matrix: about
 * HVQ_PAR_ELEMS elements per chunk, at least one row. Depends only on
 * cols, so the results do not depend on the thread count. */
#define HVQ_PAR_ELEMS 32768u
static inline uint64_t hvq_par_rows(uint64_t cols)
{
    return cols >= HVQ_PAR_ELEMS ? 1 : HVQ_PAR_ELEMS / (cols ? cols : 1);
}

/* host->parallel_for where the host has it, else the same chunks one
 * after the other in the caller (same results). */
static inline void hvq_host_parallel_for(hvq_ctx *ctx, uint64_t n_items, uint64_t chunk,
                                         hvq_chunk_fn fn, void *arg)
{
    if (HVQ_HOST_HAS(ctx->host, parallel_for)) {
        ctx->host->parallel_for(ctx, n_items, chunk, fn, arg);
        return;
    }
    if (chunk == 0)
        chunk = 1;
    for (uint64_t c = 0, n = hvq_parallel_chunks(n_items, chunk); c < n; c++) {
        uint64_t begin = c * chunk;
        fn(arg, c, begin, n_items - begin > chunk ? begin + chunk : n_items);
    }
}

#ifdef __cplusplus
}
#endif

#endif /* HVQ_PLUGIN_H */
