/* The NPY array format (numpy.lib.format), without any I/O: the fixed
 * prefix, the header dictionary, dtypes, and the two data transformations a
 * reader needs (byte swapping, Fortran to C order).
 *
 * An NPY file is the magic "\x93NUMPY", a major and a minor version byte, a
 * little-endian header length (u16 in version 1.0, u32 in 2.0 and 3.0), and
 * that many bytes of header: a Python dict literal such as
 *   {'descr': '<f4', 'fortran_order': False, 'shape': (64, 64), }
 * padded with spaces and ended by '\n' (latin-1 in 1.0 and 2.0, UTF-8 in
 * 3.0). The array data follows.
 *
 * Functions that can fail return 0 on success and -1 on failure, writing a
 * one-line reason (no file name) into why[0..why_len).
 */
#ifndef HVQ_NPY_H
#define HVQ_NPY_H

#include "plugin.h"

#include <stddef.h>
#include <stdint.h>

#define NPY_MAGIC "\x93NUMPY"
#define NPY_MAGIC_LEN 6
/* The bytes needed to read the header length of any version. */
#define NPY_PREFIX_MAX 12
/* The largest header this reader accepts (numpy's own writer never goes
 * past a few hundred bytes; its reader refuses more than 10000 by
 * default). */
#define NPY_MAX_HEADER (16u << 20)

typedef struct npy_type {
    const char *descr;  /* little-endian (or byte-order free) spelling */
    hvq_dtype dtype;
    unsigned size;      /* bytes per element */
} npy_type;

/* What a header says about the array that follows it. */
typedef struct npy_header {
    int major, minor;          /* 1.0, 2.0 or 3.0 */
    uint64_t prefix_len;       /* bytes before the data: magic, version,
                                  length field and header */
    const npy_type *type;
    int swap;                  /* big-endian data: swap on read */
    int fortran;               /* fortran_order: True */
    int ndim;
    int64_t shape[HVQ_MAX_DIMS];
    uint64_t numel;
    uint64_t nbytes;           /* numel * type->size */
} npy_header;

/* Formats the reason into why[0..len) (why may be NULL) and returns -1:
 * how the functions here, and zipdir.c's, fail. */
int npy_fail(char *why, size_t len, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* The type of an hvqconv dtype, or NULL when numpy has none (BF16, OPAQUE). */
const npy_type *npy_type_of(hvq_dtype t);

/* Reads the fixed prefix from p[0..n): needs 10 bytes, 12 for versions 2.0
 * and 3.0 (n smaller than needed fails with "short"). Fills h->major,
 * h->minor and h->prefix_len (magic + version + length field + header
 * length). *need is set to the number of prefix bytes required (10 or 12)
 * once the version is known, else 0. */
int npy_read_prefix(const unsigned char *p, size_t n, npy_header *h,
                    size_t *need, char *why, size_t why_len);

/* Parses the header text (the bytes after the length field, hlen of them;
 * base is the offset of its first byte in the file or member, used for the
 * byte positions in messages) into h: type, byte order, fortran_order,
 * shape, element and byte counts. */
int npy_parse_header(const char *text, size_t hlen, size_t base,
                     npy_header *h, char *why, size_t why_len);

/* Builds the NPY prefix and header numpy itself writes for an array of
 * type t and shape[0..ndim) in C order: version 1.0 (2.0 when the header
 * would not fit a u16), the dict in numpy's key order, room for the first
 * axis to grow, padding with spaces and a '\n' so the data starts at a
 * multiple of 64. Returns the length, or 0 when out of memory; *out is
 * malloc'd. */
size_t npy_build_header(const npy_type *t, int ndim, const int64_t *shape,
                        unsigned char **out);

/* "(2, 3)", "(5,)" or "()" into buf, as Python writes a shape. */
const char *npy_shape_text(char *buf, size_t len, int ndim,
                           const int64_t *shape);

/* In place: reverses the byte order of n elements of size bytes each. */
void npy_swap(void *data, uint64_t n, unsigned size);

/* dst (C order) from src (Fortran order) for shape[0..ndim); element size
 * bytes. dst and src do not overlap. */
void npy_fortran_to_c(void *dst, const void *src, int ndim,
                      const int64_t *shape, unsigned size);

#endif
