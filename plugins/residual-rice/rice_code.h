/* The position code of the residual coder "rice": strictly ascending flat
 * positions of an n-element tensor as Rice-coded gaps in an LSB-first bit
 * stream (the layout is in docs/FORMAT.md, "residual rice").
 *
 * Gap i is pos[i] - pos[i-1] - 1 (gap 0 is pos[0]). With parameter k, a gap
 * g with q = g >> k below RICE_UNARY_MAX is q one bits, a zero bit, then the
 * k low bits of g; a larger one is an escape: RICE_UNARY_MAX one bits, then
 * g in w bits, w = rice_width(numel). So no code is longer than
 * RICE_UNARY_MAX + 64 bits and a reader never counts more than
 * RICE_UNARY_MAX ones.
 *
 * Plain C, no host: compiled into the plugin and into its test. */
#ifndef HVQ_RICE_CODE_H
#define HVQ_RICE_CODE_H

#include <stddef.h>
#include <stdint.h>

#define RICE_UNARY_MAX 32u

/* Bits of an escaped gap: the bit length of numel - 1, at least 1. */
unsigned rice_width(uint64_t numel);

/* Checks that pos[0..n) is strictly ascending and below numel and chooses
 * the k in 0..rice_width(numel) that makes the stream shortest (the
 * smallest such k on a tie). Returns 1 with *k and the stream's length in
 * *bits, or 0 with the first bad entry in *bad. */
int rice_plan(const uint64_t *pos, uint64_t n, uint64_t numel, unsigned *k, uint64_t *bits,
              uint64_t *bad);

/* The stream's length with parameter k, for valid positions. */
uint64_t rice_length(const uint64_t *pos, uint64_t n, uint64_t numel, unsigned k);

/* Writes the stream of valid positions with parameter k <= rice_width into
 * out, cap bytes, zero-filled by the caller. Returns the bits written, or
 * UINT64_MAX when the stream does not fit cap bytes (nothing is written past
 * out[cap - 1]). */
uint64_t rice_write(const uint64_t *pos, uint64_t n, uint64_t numel, unsigned k, uint8_t *out,
                    uint64_t cap);

typedef enum rice_err {
    RICE_OK = 0,
    RICE_BAD_K,         /* k above rice_width(numel) */
    RICE_BAD_LENGTH,    /* nbytes is not ceil(bits / 8), or too few bits for n */
    RICE_TRUNCATED,     /* an entry runs past the stream's bits */
    RICE_RANGE,         /* a position at or beyond numel */
    RICE_TRAILING       /* bits left over after the last entry, or padding not 0 */
} rice_err;

/* One line for an error ("truncated stream", ...). */
const char *rice_strerror(rice_err e);

/* Reads a stream without ever touching a byte past data[nbytes - 1]. */
typedef struct rice_reader {
    const uint8_t *data;
    uint64_t nbytes, bits; /* the stream: bits in nbytes = ceil(bits / 8) */
    uint64_t at;           /* the next bit to read */
    uint64_t numel, next;  /* next: the smallest position still allowed */
    unsigned k, w;
} rice_reader;

/* Checks k and the lengths for a stream of n entries. */
rice_err rice_reader_init(rice_reader *r, const uint8_t *data, uint64_t nbytes, uint64_t bits,
                          unsigned k, uint64_t numel, uint64_t n);

/* Reads the next m positions into pos[0..m); on an error pos is partly
 * filled and *done says how many entries were good. */
rice_err rice_read(rice_reader *r, uint64_t *pos, size_t m, size_t *done);

/* After the last entry: the stream must end exactly there, with zero
 * padding bits. */
rice_err rice_reader_end(const rice_reader *r);

#endif
