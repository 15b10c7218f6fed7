/* Internal declarations of the GGUF plugin (formats/gguf/): the ggml tensor
 * type table, the metadata value types, the bounds-checked reader of the
 * source and the metadata <-> JSON encoding. Nothing here is exported; the
 * plugin's only exported symbol is hvq_plugin_entry (gguf.c). */
#ifndef HVQ_FORMATS_GGUF_LOCAL_H
#define HVQ_FORMATS_GGUF_LOCAL_H

#include "plugin.h"
#include "buf.h"

#include <stddef.h>
#include <stdint.h>

#define GG_MAGIC "GGUF"
#define GG_VERSION_WRITTEN 3u
#define GG_MAX_DIMS 4                 /* GGML_MAX_DIMS */
#define GG_DEFAULT_ALIGNMENT 32u      /* GGUF_DEFAULT_ALIGNMENT */
#define GG_ALIGNMENT_KEY "general.alignment"
#define GG_MAX_KEY 65535u             /* the GGUF spec's limit on keys */
#define GG_MAX_NAME 65535u            /* what the source accepts */
#define GG_MAX_NAME_WRITTEN 63u       /* GGML_MAX_NAME - 1: llama.cpp's limit */
#define GG_MAX_STRING (1ull << 30)    /* a sane cap on one string value */
#define GG_MAX_NESTING 16             /* arrays of arrays of ... */
#define GG_MSG 2048

/* Minimum bytes of one metadata entry (8-byte key length, 4-byte type,
 * a 1-byte value) and of one tensor info (8-byte name length, 4-byte
 * n_dims, 4-byte type, 8-byte offset). */
#define GG_MIN_KV_BYTES 13u
#define GG_MIN_TENSOR_BYTES 24u

/* Metadata value types (gguf_type). */
enum {
    GG_UINT8 = 0,
    GG_INT8 = 1,
    GG_UINT16 = 2,
    GG_INT16 = 3,
    GG_UINT32 = 4,
    GG_INT32 = 5,
    GG_FLOAT32 = 6,
    GG_BOOL = 7,
    GG_STRING = 8,
    GG_ARRAY = 9,
    GG_UINT64 = 10,
    GG_INT64 = 11,
    GG_FLOAT64 = 12,
    GG_N_VTYPES = 13
};

/* "uint8", ... "float64"; NULL for an unknown id. */
const char *gg_vtype_name(uint32_t t);
/* The id of a type name, or -1. */
int gg_vtype_by_name(const char *name);
/* Bytes of a fixed-size value; 0 for string and array. */
unsigned gg_vtype_size(uint32_t t);
/* The fewest bytes a value of type t can take in a file. */
unsigned gg_vtype_min_size(uint32_t t);

/* A ggml tensor type: numel elements take numel / blck * size bytes and a
 * row (ne[0]) must be a multiple of blck. */
typedef struct gg_type {
    uint32_t id;
    const char *name;   /* the GGML_TYPE_ name: "F32", "Q4_K", "IQ2_XXS" */
    uint32_t blck;      /* elements per block */
    uint32_t size;      /* bytes per block */
    hvq_dtype dtype;    /* hvq type when the data is exposed as is (F32,
                           F16, BF16, F64, I8..I64), else OPAQUE */
} gg_type;

#define GG_TYPE_F32 0u
#define GG_TYPE_F16 1u
#define GG_TYPE_Q4_0 2u
#define GG_TYPE_Q8_0 8u

const gg_type *gg_type_by_id(uint32_t id);
/* By name, case-insensitively ("Q4_K", "q4_K"). */
const gg_type *gg_type_by_name(const char *name);
/* The native ggml type of an hvq dtype, or NULL (unsigned, bool, opaque). */
const gg_type *gg_type_by_dtype(hvq_dtype t);
/* The name of a type id ggml used once and removed ("Q4_2"), or NULL. */
const char *gg_removed_type_name(uint32_t id);

/* Sets the ctx error "PATH: MESSAGE" and returns st. */
hvq_status gg_fail(hvq_ctx *ctx, hvq_status st, const char *path,
                   const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

/* Bounds-checked little-endian reading of a mapped file. Every failure
 * sets the ctx error (naming the path, what was being read and where) and
 * returns HVQ_E_INPUT. */
typedef struct gg_reader {
    hvq_ctx *ctx;
    const char *path;
    const unsigned char *p;  /* the file (NULL when it is empty) */
    uint64_t size;
    uint64_t pos;
    char where[400];         /* "metadata entry 3 ('general.name')" */
    int mapped;              /* p is a private read-only mapping */
    uint64_t released;       /* its first bytes dropped (whole pages) */
} gg_reader;

/* Once GG_RELEASE_STEP more bytes have been read (with all, at once),
 * drops the mapped pages wholly before r->pos: what they held has been
 * converted (a tokenizer's tens of megabytes of metadata) and is not read
 * again. The mapping is private and read-only, so the pages are only
 * dropped from memory, and read again from the file if ever touched. */
#define GG_RELEASE_STEP (4u << 20)
void gg_release(gg_reader *r, int all);

hvq_status gg_need(gg_reader *r, uint64_t n, const char *what);
hvq_status gg_read_u32(gg_reader *r, const char *what, uint32_t *v);
hvq_status gg_read_u64(gg_reader *r, const char *what, uint64_t *v);
/* A string: its 8-byte length (at most cap) and its bytes, which stay in
 * the mapping (*s points there, not NUL-terminated). */
hvq_status gg_read_str(gg_reader *r, const char *what, uint64_t cap,
                       const unsigned char **s, uint64_t *len);

/* Little-endian stores into a byte buffer. */
void gg_put_u32(hvq_buf *b, uint32_t v);
void gg_put_u64(hvq_buf *b, uint64_t v);

/* Where the sink's header goes. Bytes are appended to b; gg_out_drain
 * writes them to out once GG_DRAIN of them have gathered (all of them when
 * asked), or only counts them when out is NULL: the first pass, which
 * checks everything before the file is created. */
typedef struct gg_out {
    hvq_ctx *ctx;
    const char *path;
    hvq_output *out;
    hvq_buf b;
    uint64_t drained;        /* bytes drained before b's first */
} gg_out;

#define GG_DRAIN (64u << 10)

hvq_status gg_out_drain(gg_out *o, int all);
/* Stores v at byte offset at of the output (already appended): in b when
 * it is still there, else with output_pwrite; nothing when counting. */
hvq_status gg_out_patch_u64(gg_out *o, uint64_t at, uint64_t v);

/* Source: the value of type `type` at r (a metadata entry's value, after
 * its type) as the JSON text of the documented encoding, appended to out:
 * {"gguf_type":"uint32","value":32}, or for arrays
 * {"gguf_type":"array","item_type":"string","value":["a","b"]}. */
hvq_status gg_meta_to_json(gg_reader *r, uint32_t type, hvq_buf *out);

/* Sink: one metadata entry as a GGUF key/value (key, type, value) to o.
 * A value in the typed JSON encoding keeps its type; any other text
 * becomes a string. For general.alignment, *alignment receives the value
 * (which must be a uint32 power of two); otherwise it is untouched. The
 * memory used is that of the largest leaf of the value, not the value's.
 * *typed is -1 the first time (the text is then checked to be JSON) and
 * keeps the answer, 0 or 1, for another call on the same entry. */
hvq_status gg_meta_from_text(hvq_ctx *ctx, const char *path,
                             const hvq_meta *m, gg_out *o,
                             uint32_t *alignment, signed char *typed);

/* IEEE half to single precision, exact: hvq_f16_to_f32. */
#include "f16.h"

#endif
