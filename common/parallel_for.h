/* A deterministic parallel loop over fixed chunks, shared by the core and
 * plugins (no dependency beyond pthreads).
 *
 * hvq_parallel_for_n cuts [0, n_items) into fixed-size chunks (the last one
 * shorter) and runs fn once per chunk on up to `threads` threads, the
 * calling thread included. The chunking depends only on n_items and chunk,
 * never on the thread count, so a caller that keeps one partial result per
 * chunk (indexed by the chunk number fn receives) and combines them in
 * chunk order gets byte-identical results whatever the number of threads.
 * Chunks run in no particular order and fn must not touch another chunk's
 * data. With one thread, or one chunk, everything runs inline in the
 * caller, in chunk order.
 *
 * The loop cannot fail: when a worker thread cannot be started, the
 * threads already running (at least the caller) take its chunks.
 */
#ifndef HVQ_COMMON_PARALLEL_FOR_H
#define HVQ_COMMON_PARALLEL_FOR_H

#include <stdint.h>

/* Called once per chunk: chunk is its number (0-based), [begin, end) its
 * items. */
typedef void (*hvq_chunk_fn)(void *arg, uint64_t chunk, uint64_t begin, uint64_t end);

/* The number of chunks [0, n_items) is cut into (0 when n_items is 0). */
uint64_t hvq_parallel_chunks(uint64_t n_items, uint64_t chunk);

/* Runs fn over every chunk on up to threads (>= 1) threads; returns when
 * all are done. chunk 0 is taken as 1. */
void hvq_parallel_for_n(int threads, uint64_t n_items, uint64_t chunk, hvq_chunk_fn fn,
                        void *arg);

/* Rows per chunk for a row-wise loop over a rows x cols matrix: about
 * HVQ_PAR_ELEMS elements per chunk, at least one row. Depends only on cols. */
#define HVQ_PAR_ELEMS 32768u
uint64_t hvq_par_rows(uint64_t cols);

#endif
