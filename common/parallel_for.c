/* The deterministic parallel loop (see parallel_for.h).
 *
 * Workers are started per call and take chunks from a shared atomic
 * counter; the caller works too and then joins them. Starting two or three
 * threads costs some tens of microseconds, nothing beside the per-tensor
 * loops this serves (a 2048x2048 matrix is 128 chunks), and it keeps no
 * state between calls: nothing to shut down, nothing shared between
 * contexts. */
#include "config.h"

#include "parallel_for.h"

#include <pthread.h>
#include <stdatomic.h>

#define HVQ_PAR_MAX_THREADS 256

typedef struct par_job {
    hvq_chunk_fn fn;
    void *arg;
    uint64_t n_items, chunk, n_chunks;
    atomic_uint_fast64_t next;
} par_job;

static void par_work(par_job *job)
{
    for (;;) {
        uint64_t c = atomic_fetch_add_explicit(&job->next, 1, memory_order_relaxed);
        if (c >= job->n_chunks)
            return;
        uint64_t begin = c * job->chunk;
        uint64_t end = job->n_items - begin > job->chunk ? begin + job->chunk : job->n_items;
        job->fn(job->arg, c, begin, end);
    }
}

static void *par_thread(void *p)
{
    par_work(p);
    return NULL;
}

uint64_t hvq_parallel_chunks(uint64_t n_items, uint64_t chunk)
{
    if (chunk == 0)
        chunk = 1;
    return n_items / chunk + (n_items % chunk != 0);
}

uint64_t hvq_par_rows(uint64_t cols)
{
    return cols >= HVQ_PAR_ELEMS ? 1 : HVQ_PAR_ELEMS / (cols ? cols : 1);
}

void hvq_parallel_for_n(int threads, uint64_t n_items, uint64_t chunk, hvq_chunk_fn fn,
                        void *arg)
{
    if (chunk == 0)
        chunk = 1;
    uint64_t n_chunks = hvq_parallel_chunks(n_items, chunk);
    if (n_chunks == 0)
        return;
    if (threads > HVQ_PAR_MAX_THREADS)
        threads = HVQ_PAR_MAX_THREADS;
    if (threads <= 1 || n_chunks == 1) {
        for (uint64_t c = 0; c < n_chunks; c++) {
            uint64_t begin = c * chunk;
            fn(arg, c, begin, n_items - begin > chunk ? begin + chunk : n_items);
        }
        return;
    }
    if ((uint64_t)threads > n_chunks)
        threads = (int)n_chunks;
    par_job job = {.fn = fn, .arg = arg, .n_items = n_items, .chunk = chunk,
                   .n_chunks = n_chunks};
    atomic_init(&job.next, 0);
    pthread_t tid[HVQ_PAR_MAX_THREADS];
    int started = 0;
    for (int t = 1; t < threads; t++) {
        if (pthread_create(&tid[started], NULL, par_thread, &job) != 0)
            break; /* the others (and the caller) take its chunks */
        started++;
    }
    par_work(&job);
    for (int t = 0; t < started; t++)
        pthread_join(tid[t], NULL);
}
