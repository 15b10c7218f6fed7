/* The index code of clusterer "ecsq": signed integers (the levels of a
 * uniform quantizer) as an adaptive binary range-coded byte stream (the
 * layout is in docs/FORMAT.md, "clusterer ecsq").
 *
 * The coder is a carry-propagating binary range coder: 32-bit range, 12-bit
 * probabilities, each adapted by 1/64 of its distance to the bit just coded
 * (the scheme of LZMA's range coder). A level q is binarized as
 *   a zero flag (q != 0); for q != 0 a sign bit (q < 0), then v = |q| as
 *   an Elias-gamma-like pair: k = the bit length of v minus 1 in unary (k
 *   ones and a zero, each with its own context; k < ECSQ_MAX_EXP), then
 *   the k bits of v below its leading one, most significant first: the
 *   first two adaptive (context: k and the bits so far), the rest at
 *   probability 1/2.
 * The levels are coded in row-major order, one stream per call. It starts
 * with every probability at 1/2 and the decoder mirrors every step, so a
 * level costs about its information content under the statistics learnt
 * so far: within 0.02-0.12 bits of the empirical entropy on 64x64
 * Gaussian matrices, less on large ones. (Context sets chosen by the
 * magnitudes of the levels before it in the row, and faster adaptation
 * (1/32), cost more than they saved on such matrices, with and without
 * rows of different scales.)
 *
 * Plain C, no host: compiled into the plugin and into its test. */
#ifndef HVQ_ECSQ_CODE_H
#define HVQ_ECSQ_CODE_H

#include <stddef.h>
#include <stdint.h>

/* The largest |q| is 2^ECSQ_MAX_EXP - 1: the unary exponent never runs
 * longer, so a corrupt stream cannot make a decoder loop. */
#define ECSQ_MAX_EXP 24
#define ECSQ_MAX_LEVEL ((1 << ECSQ_MAX_EXP) - 1)

/* Encodes rows x cols levels (row-major, |q| <= ECSQ_MAX_LEVEL) into a
 * malloc'd buffer: *out, *len bytes. Returns 0, or -1 when out of memory
 * (*out NULL). */
int ecsq_encode(const int32_t *q, uint64_t rows, uint64_t cols, uint8_t **out, size_t *len);

/* Decodes rows x cols levels from buf[0..len). Returns 0, or -1 when the
 * stream is not one ecsq_encode wrote for that many levels (it ends early
 * or codes an exponent of ECSQ_MAX_EXP): q is then partly written. A
 * stream that decodes is accepted whatever its bytes. */
int ecsq_decode(const uint8_t *buf, size_t len, uint64_t rows, uint64_t cols, int32_t *q);

/* Decodes count levels from buf[0..len) as out[i] = (float)q[i] * step,
 * the float32 product of the format. Returns 0, -1 when the stream is
 * corrupt (as ecsq_decode; out is then partly written or not at all), -2
 * when out of memory. The plugin's decoder and, exported from the plugin
 * under this name with this signature (a stable entry point, no host
 * needed), python/hvqconv.py's through ctypes. */
int hvq_ecsq_decode_f32(const uint8_t *buf, size_t len, uint64_t count, float step, float *out);

#endif
