/* The project's one thread pool, the deterministic parallel loop (plugins
 * reach it as host->parallel_for; see plugin.h for its contract), and fast
 * dtype conversion. */
#ifndef HVQ_CORE_PARALLEL_H
#define HVQ_CORE_PARALLEL_H

#include "plugin.h"

#include <pthread.h>

#include <stdint.h>

/* Runs fn over every chunk on up to threads (>= 1) threads, the caller
 * included; returns when all are done. chunk 0 is taken as 1. With one
 * thread, or one chunk, everything runs in the caller, in chunk order. */
void hvq_parallel_for_n(int threads, uint64_t n_items, uint64_t chunk, hvq_chunk_fn fn,
                        void *arg);

/* A thread of its own for work beside the loop (decode's writer): the one
 * other place the project starts threads. 1 when it started (join it with
 * hvq_thread_join), 0 when it could not (the caller does the work itself). */
int hvq_thread_start(pthread_t *tid, void *(*fn)(void *), void *arg);
void hvq_thread_join(pthread_t tid);

/* The same on hvq_ctx_options(ctx)->threads (ctx may be NULL: one
 * thread); host->parallel_for. */
void hvq_parallel_for(hvq_ctx *ctx, uint64_t n_items, uint64_t chunk, hvq_chunk_fn fn,
                      void *arg);

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
