/* A small deterministic parallel loop for the core.
 *
 * hvq_parallel_for cuts [0, n_items) into fixed-size chunks (the last one
 * shorter) and runs fn once per chunk on up to hvq_ctx_options(ctx)->threads
 * threads, the calling thread included. The chunking depends only on n_items
 * and chunk, never on the thread count, so a caller that keeps one partial
 * result per chunk (indexed by the chunk number fn receives) and combines
 * them in chunk order gets byte-identical results whatever the number of
 * threads. Chunks run in no particular order and fn must not touch another
 * chunk's data. With one thread, or one chunk, everything runs inline in
 * the caller, in chunk order.
 *
 * The loop cannot fail: when a worker thread cannot be started, the
 * threads already running (at least the caller) take its chunks.
 */
#ifndef HVQ_CORE_PARALLEL_H
#define HVQ_CORE_PARALLEL_H

#include "plugin.h"

#include <stdint.h>

/* Called once per chunk: chunk is its number (0-based), [begin, end) its
 * items. */
typedef void (*hvq_chunk_fn)(void *arg, uint64_t chunk, uint64_t begin, uint64_t end);

/* The number of chunks [0, n_items) is cut into (0 when n_items is 0). */
uint64_t hvq_parallel_chunks(uint64_t n_items, uint64_t chunk);

/* Runs fn over every chunk; returns when all are done. chunk 0 is taken as
 * 1. Threads: hvq_ctx_options(ctx)->threads (ctx may be NULL: one thread). */
void hvq_parallel_for(hvq_ctx *ctx, uint64_t n_items, uint64_t chunk, hvq_chunk_fn fn,
                      void *arg);

/* The same with an explicit thread count (>= 1), for code without a ctx. */
void hvq_parallel_for_n(int threads, uint64_t n_items, uint64_t chunk, hvq_chunk_fn fn,
                        void *arg);

/* Rows per chunk for a row-wise loop over a rows x cols matrix: about
 * HVQ_PAR_ELEMS elements per chunk, at least one row. Depends only on cols. */
#define HVQ_PAR_ELEMS 32768u
uint64_t hvq_par_rows(uint64_t cols);

/* Converts n elements exactly as hvq_convert does (the same values, bit
 * for bit, NaN payloads included), with fast kernels for F16 and BF16 to
 * and from F32: a table for F16 -> F32, integer rounding without calls
 * for F32 -> F16/BF16. Other pairs go to hvq_convert (ctx may be NULL). */
hvq_status hvq_convert_fast(hvq_ctx *ctx, hvq_dtype dst_type, void *dst, hvq_dtype src_type,
                            const void *src, size_t n);

/* Builds hvq_convert_fast's table (once; later calls return at once).
 * Call it before starting threads that convert: they then see the table
 * through the thread creation, which tools like helgrind can follow (a
 * pthread_once inside the threads is correct too, but they cannot). */
void hvq_convert_fast_init(void);

/* The same in parallel chunks on the ctx's threads. */
hvq_status hvq_convert_parallel(hvq_ctx *ctx, hvq_dtype dst_type, void *dst,
                                hvq_dtype src_type, const void *src, uint64_t n);

#endif
