/* The project's one thread pool: the deterministic parallel loop the
 * core runs on a ctx's threads and plugins reach as host->parallel_for
 * (see plugin.h), and fast dtype conversion (see parallel.h).
 *
 * Workers are started per call and take chunks from a shared atomic
 * counter; the caller works too and then joins them. Starting two or three
 * threads costs some tens of microseconds, nothing beside the per-tensor
 * loops this serves (a 2048x2048 matrix is 128 chunks), and it keeps no
 * state between calls: nothing to shut down, nothing shared between
 * contexts. */
#include "config.h"

#include "parallel.h"
#include "ctx.h"
#include "dtype.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define HVQ_PAR_MAX_THREADS 256

typedef struct par_job {
    hvq_chunk_fn fn;
    void *arg;
    uint64_t n_items, chunk, n_chunks;
    atomic_uint_fast64_t next;
} par_job;

int hvq_thread_start(pthread_t *tid, void *(*fn)(void *), void *arg)
{
    return pthread_create(tid, NULL, fn, arg) == 0;
}

void hvq_thread_join(pthread_t tid) { pthread_join(tid, NULL); }

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

void hvq_parallel_for_n(int threads, uint64_t n_items, uint64_t chunk, hvq_chunk_fn fn,
                        void *arg)
{
    if (chunk == 0)
        chunk = 1;
    uint64_t n_chunks = hvq_parallel_chunks(n_items, chunk);
    if (n_chunks == 0)
        return;
    if (threads < 1)
        threads = 1;
    if (threads > HVQ_PAR_MAX_THREADS)
        threads = HVQ_PAR_MAX_THREADS;
    if ((uint64_t)threads > n_chunks)
        threads = (int)n_chunks;
    par_job job = {.fn = fn, .arg = arg, .n_items = n_items, .chunk = chunk,
                   .n_chunks = n_chunks};
    atomic_init(&job.next, 0);
    pthread_t tid[HVQ_PAR_MAX_THREADS];
    int started = 0;
    for (int t = 1; t < threads; t++) {
        if (!hvq_thread_start(&tid[started], par_thread, &job))
            break; /* the others (and the caller) take its chunks */
        started++;
    }
    par_work(&job); /* with one thread: every chunk here, in order */
    for (int t = 0; t < started; t++)
        hvq_thread_join(tid[t]);
}

void hvq_parallel_for(hvq_ctx *ctx, uint64_t n_items, uint64_t chunk, hvq_chunk_fn fn,
                      void *arg)
{
    int threads = ctx ? hvq_ctx_options(ctx)->threads : 1;
    hvq_parallel_for_n(threads, n_items, chunk, fn, arg);
}

/* ---- fast dtype conversion ------------------------------------------- */

/* Every F16 value as F32, built once with the reference conversion. */
static float f16_table[65536];
static pthread_once_t f16_once = PTHREAD_ONCE_INIT;

static void f16_table_init(void)
{
    for (uint32_t h = 0; h < 65536; h++)
        f16_table[h] = hvq_f16_to_f32((uint16_t)h);
}

/* F32 bits to F16, round to nearest even, hvq_f32_to_f16's results (NaN
 * payloads included) without branches: all three cases are computed and
 * one is selected. A normal F16 takes the exponent rebias and integer
 * rounding; an F16 subnormal (or zero) is |x| + 0.5 in float arithmetic,
 * whose low mantissa bits are then |x| / 2^-24 rounded to nearest even by
 * the FPU (and 0x400, the smallest normal, when it rounds up to it); too
 * large values, infinities and NaNs go to 0x7c00 or a quiet NaN. */
static inline uint16_t f32_to_f16_bits(uint32_t x)
{
    uint32_t sign = (x >> 16) & 0x8000u, a = x & 0x7fffffffu;
    uint32_t nor = (a >> 13) - (112u << 10), rem = a & 0x1fffu;
    nor += (uint32_t)(rem > 0x1000u) | ((uint32_t)(rem == 0x1000u) & nor);
    float af, sf;
    memcpy(&af, &a, 4);
    sf = af + 0.5f;
    uint32_t sub;
    memcpy(&sub, &sf, 4);
    sub -= 0x3f000000u;
    uint32_t big = a > 0x7f800000u ? 0x7e00u | ((a & 0x7fffffu) >> 13) : 0x7c00u;
    uint32_t h = a < 0x38800000u ? sub : (a < 0x47800000u ? nor : big);
    return (uint16_t)(sign | h);
}

/* The same, four at a time, with the compilers' vector extensions. */
#if defined(__GNUC__) || defined(__clang__)
#define HVQ_VEC 1
typedef uint32_t v4u __attribute__((vector_size(16)));
typedef float v4f __attribute__((vector_size(16)));

static inline v4u f32_to_f16_v4(v4u x)
{
    v4u sign = (x >> 16) & 0x8000u, a = x & 0x7fffffffu;
    v4u nor = (a >> 13) - (112u << 10), rem = a & 0x1fffu;
    nor += ((v4u)(rem > 0x1000u) | ((v4u)(rem == 0x1000u) & nor)) & 1u;
    v4u sub = (v4u)((v4f)a + 0.5f) - 0x3f000000u;
    v4u is_nan = (v4u)(a > 0x7f800000u);
    v4u big = (is_nan & (((a & 0x7fffffu) >> 13) | 0x7e00u)) | (~is_nan & 0x7c00u);
    v4u is_sub = (v4u)(a < 0x38800000u);
    v4u is_nor = (v4u)(a < 0x47800000u) & ~is_sub;
    return sign | (is_sub & sub) | (is_nor & nor) | (~(is_sub | is_nor) & big);
}
#endif

static inline uint16_t f32_to_bf16_bits(uint32_t x)
{
    if ((x & 0x7fffffffu) > 0x7f800000u) /* NaN: keep it quiet */
        return (uint16_t)((x >> 16) | 0x40u);
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

void hvq_convert_fast_init(void) { pthread_once(&f16_once, f16_table_init); }

hvq_status hvq_convert_fast(hvq_ctx *ctx, hvq_dtype dt, void *dst, hvq_dtype st,
                            const void *src, size_t n)
{
    const unsigned char *s = src;
    unsigned char *d = dst;
    if (dt == HVQ_DTYPE_F32 && st == HVQ_DTYPE_F16) {
        pthread_once(&f16_once, f16_table_init);
        float *o = dst;
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, s + 2 * i, 2);
            o[i] = f16_table[h];
        }
        return HVQ_OK;
    }
    if (dt == HVQ_DTYPE_F32 && st == HVQ_DTYPE_BF16) {
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, s + 2 * i, 2);
            uint32_t u = (uint32_t)h << 16;
            memcpy(d + 4 * i, &u, 4);
        }
        return HVQ_OK;
    }
    if (st == HVQ_DTYPE_F32 && dt == HVQ_DTYPE_F16) {
        size_t i = 0;
#ifdef HVQ_VEC
        for (; i + 4 <= n; i += 4) {
            v4u x;
            memcpy(&x, s + 4 * i, 16);
            v4u h = f32_to_f16_v4(x);
            uint16_t o[4] = {(uint16_t)h[0], (uint16_t)h[1], (uint16_t)h[2], (uint16_t)h[3]};
            memcpy(d + 2 * i, o, 8);
        }
#endif
        for (; i < n; i++) {
            uint32_t x;
            memcpy(&x, s + 4 * i, 4);
            uint16_t h = f32_to_f16_bits(x);
            memcpy(d + 2 * i, &h, 2);
        }
        return HVQ_OK;
    }
    if (st == HVQ_DTYPE_F32 && dt == HVQ_DTYPE_BF16) {
        for (size_t i = 0; i < n; i++) {
            uint32_t x;
            memcpy(&x, s + 4 * i, 4);
            uint16_t h = f32_to_bf16_bits(x);
            memcpy(d + 2 * i, &h, 2);
        }
        return HVQ_OK;
    }
    return hvq_convert(ctx, dt, dst, st, src, n);
}

typedef struct conv_job {
    hvq_dtype dt, st;
    unsigned char *dst;
    const unsigned char *src;
    size_t dsize, ssize;
} conv_job;

static void conv_chunk(void *arg, uint64_t chunk, uint64_t begin, uint64_t end)
{
    (void)chunk;
    conv_job *j = arg;
    hvq_convert_fast(NULL, j->dt, j->dst + begin * j->dsize, j->st, j->src + begin * j->ssize,
                     (size_t)(end - begin));
}

hvq_status hvq_convert_parallel(hvq_ctx *ctx, hvq_dtype dt, void *dst, hvq_dtype st,
                                const void *src, uint64_t n)
{
    /* An unsupported pair fails here, with the message, before any work. */
    hvq_status r = hvq_convert(ctx, dt, dst, st, src, 0);
    if (r != HVQ_OK)
        return r;
    conv_job j = {dt, st, dst, src, hvq_dtype_size(dt), hvq_dtype_size(st)};
    hvq_convert_fast_init();
    hvq_parallel_for(ctx, n, HVQ_PAR_ELEMS, conv_chunk, &j);
    return HVQ_OK;
}
