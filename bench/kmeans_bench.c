/* Benchmark of the "kmeans" clusterer on one random matrix (never part of
 * make check).
 *
 * Build from a configured build tree BUILD (after make):
 *   cc -O2 -std=c11 -ffp-contract=off -I SRC/core -I SRC/plugins/clusterer-kmeans \
 *      SRC/bench/kmeans_bench.c SRC/plugins/clusterer-kmeans/km_*.c \
 *      BUILD/.libs/libhvqcore.a -lyaml -ldl -lm -lpthread -o kmeans_bench
 * Run:
 *   ./kmeans_bench BUILD/plugins/.libs/clusterer_kmeans.so [rows cols b K stability
 *                  iterations threads accel]
 * Defaults: 2048 2048 4 2048 200 15, every CPU, accel "both". The matrix is
 * Student-t (4 degrees of freedom) with each row divided by its largest
 * magnitude, as the body of an LLM weight looks after the paper's
 * normalization.
 *
 * For accel auto, none (brute force) or both, it prints two lines:
 *   plugin  the whole clusterer, run through the plugin (cluster_encode),
 *           wall and CPU time (CPU: every thread of the process);
 *   stages  the same steps run from the km_*.c core with timers around the
 *           training (sample + Lloyd iterations) and the final assignment
 *           (index or neighbour lists built, every vector against the fp16
 *           codebook, packing), the final assignment's rate in vectors/s and
 *           the search it used.
 * With "both", it also checks that the two runs wrote the same bytes.
 */
#define _POSIX_C_SOURCE 200809L
#include "ctx.h"
#include "kmeans_core.h"
#include "params.h"
#include "registry.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double cpu(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double unif(km_rng *r) { return (double)(km_rng_next(r) >> 11) * 0x1.0p-53; }
static double gauss(km_rng *r)
{
    double u = unif(r), v = unif(r);
    return sqrt(-2.0 * log(1.0 - u)) * cos(6.283185307179586 * v);
}

typedef struct run {
    hvq_encoded enc;
    float *recon;
    double wall, cpu;
} run;

static const hvq_component *comp(const hvq_encoded *enc, const char *name)
{
    for (size_t i = 0; i < enc->n_components; i++)
        if (strcmp(enc->components[i].name, name) == 0)
            return &enc->components[i];
    return NULL;
}

/* The plugin's steps (see kmeans.c) with timers. */
static int stages(hvq_ctx *ctx, const float *x, uint64_t numel, const long *a, int accel,
                  const hvq_encoded *check)
{
    const int b = (int)a[2];
    const uint32_t k = (uint32_t)a[3];
    const uint64_t n = (numel + (uint64_t)b - 1) / (uint64_t)b;
    const uint64_t m = n < (uint64_t)k * (uint64_t)a[4] ? n : (uint64_t)k * (uint64_t)a[4];
    const unsigned bits = km_index_bits(k);
    uint64_t *pos = malloc(m * sizeof *pos);
    float *sample = malloc(m * (uint64_t)b * sizeof *sample);
    float *cent = malloc((size_t)k * b * sizeof *cent), *recon = malloc(numel * sizeof *recon);
    uint16_t *half = malloc((size_t)k * b * sizeof *half);
    uint8_t *packed = calloc(km_packed_bytes(n, bits) + 1, 1);
    if (!pos || !sample || !cent || !recon || !half || !packed)
        return -1;
    double w0 = now(), c0 = cpu();
    km_rng rng;
    km_rng_seed(&rng, 42);
    km_sample(&rng, n, m, pos);
    for (uint64_t s = 0; s < m; s++) {
        uint64_t p = pos[s] * (uint64_t)b;
        for (int j = 0; j < b; j++)
            sample[s * (uint64_t)b + (uint64_t)j] = p + (uint64_t)j < numel ? x[p + (uint64_t)j] : 0;
    }
    /* as the plugin does: training's labels are the final pass's first
     * guesses for block sizes above 2 */
    uint32_t *labels = NULL, *guess = NULL;
    if (accel != KM_ACCEL_NONE && b > 2 && a[5] > 0) {
        labels = malloc(m * sizeof *labels);
        guess = malloc(n * sizeof *guess);
    }
    km_train_opts o = {.b = b, .k = k, .iterations = (int)a[5], .revival = 10000,
                       .ctx = ctx, .accel = accel, .labels = labels};
    if (km_train(sample, m, &o, &rng, cent))
        return -1;
    if (guess) {
        memset(guess, 0xff, n * sizeof *guess);
        for (uint64_t s = 0; s < m; s++)
            guess[pos[s]] = labels[s];
    }
    double w1 = now(), c1 = cpu();
    const hvq_host *H = hvq_host_table();
    H->convert(ctx, HVQ_DTYPE_F16, half, HVQ_DTYPE_F32, cent, (size_t)k * b);
    H->convert(ctx, HVQ_DTYPE_F32, cent, HVQ_DTYPE_F16, half, (size_t)k * b);
    km_codebook cb;
    if (km_codebook_init(&cb, b, k))
        return -1;
    km_codebook_set(&cb, cent);
    double w2 = now(), c2 = cpu();
    km_encode_all(x, numel, &cb, cent, bits, packed, recon, ctx, accel, guess);
    double w3 = now(), c3 = cpu();
    const hvq_component *cc = comp(check, "codebook"), *ic = comp(check, "indices");
    int same = cc && ic && memcmp(cc->data, half, (size_t)k * b * 2) == 0 &&
               memcmp(ic->data, packed, ic->nbytes) == 0;
    double load = km_codebook_index_load(&cb);
    char how[64];
    if (load > 0)
        snprintf(how, sizeof how, "index, %.1f candidates per leaf", load);
    else
        snprintf(how, sizeof how, "%s", accel == KM_ACCEL_NONE || b > 4 ? "brute force"
                                                                        : "guided");
    printf("  stages %-4s train %7.3f s wall %7.3f s CPU | final assign %7.3f s wall %7.3f s "
           "CPU, %7.1f M vectors/s (%s)%s\n",
           accel == KM_ACCEL_NONE ? "none" : "auto", w1 - w0, c1 - c0, w3 - w2, c3 - c2,
           (double)n / (w3 - w2) / 1e6, how, same ? "" : "  (differs from the plugin's output!)");
    km_codebook_free(&cb);
    free(labels);
    free(guess);
    free(pos);
    free(sample);
    free(cent);
    free(recon);
    free(half);
    free(packed);
    return same ? 0 : -1;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr,
                "usage: %s PLUGIN.so [rows cols b K stability iterations threads "
                "auto|none|both]\n",
                argv[0]);
        return 2;
    }
    long a[7] = {2048, 2048, 4, 2048, 200, 15, sysconf(_SC_NPROCESSORS_ONLN)};
    for (int i = 0; i < 7 && i + 2 < argc; i++)
        a[i] = atol(argv[i + 2]);
    const char *which = argc > 9 ? argv[9] : "both";
    uint64_t rows = (uint64_t)a[0], cols = (uint64_t)a[1], numel = rows * cols;

    hvq_ctx_opts o = {.quiet = 1, .threads = (int)a[6]};
    hvq_ctx *ctx = hvq_ctx_new(&o);
    hvq_registry *reg = hvq_registry_new();
    if (!ctx || !reg || hvq_registry_load_file(reg, ctx, argv[1]) != HVQ_OK) {
        fprintf(stderr, "%s\n", ctx ? hvq_ctx_error(ctx) : "out of memory");
        return 1;
    }
    const hvq_loaded_plugin *p = hvq_registry_find(reg, HVQ_KIND_CLUSTERER, "kmeans");
    if (!p) {
        fprintf(stderr, "no kmeans clusterer in %s\n", argv[1]);
        return 1;
    }
    size_t np = hvq_param_count(p->desc.params);
    if (np > 8) {
        fprintf(stderr, "unexpected parameters\n");
        return 1;
    }

    float *x = malloc(numel * sizeof *x);
    km_rng r;
    km_rng_seed(&r, 1);
    for (uint64_t i = 0; i < rows; i++) {
        float m = 0;
        for (uint64_t j = 0; j < cols; j++) {
            double c = 0;
            for (int k = 0; k < 4; k++) {
                double g = gauss(&r);
                c += g * g;
            }
            float v = (float)(gauss(&r) / sqrt(c / 4));
            x[i * cols + j] = v;
            m = fabsf(v) > m ? fabsf(v) : m;
        }
        for (uint64_t j = 0; j < cols; j++)
            x[i * cols + j] /= m;
    }
    uint64_t n = (numel + (uint64_t)a[2] - 1) / (uint64_t)a[2];
    printf("%llux%llu b=%ld K=%ld stability=%ld iterations=%ld threads=%ld kernel=%s, "
           "%llu vectors\n",
           (unsigned long long)rows, (unsigned long long)cols, a[2], a[3], a[4], a[5], a[6],
           km_kernel_name(km_kernel_count() - 1), (unsigned long long)n);

    run runs[2];
    int nrun = 0, rc = 0;
    for (int pass = 0; pass < 2; pass++) {
        const char *accel = pass == 0 ? "auto" : "none";
        if (strcmp(which, "both") != 0 && strcmp(which, accel) != 0)
            continue;
        char text[8][32];
        const char *given[8] = {NULL};
        snprintf(text[0], 32, "%ld", a[2]);
        snprintf(text[1], 32, "%ld", a[3]);
        snprintf(text[2], 32, "%ld", a[5]);
        snprintf(text[3], 32, "%ld", a[4]);
        for (int i = 0; i < 4; i++)
            given[i] = text[i];
        given[6] = accel;
        hvq_value vals[8];
        char why[128];
        for (size_t i = 0; i < np; i++) {
            const char *t = given[i] ? given[i] : p->desc.params[i].default_value;
            if (hvq_param_parse(&p->desc.params[i], t, &vals[i], why, sizeof why)) {
                fprintf(stderr, "%s: %s\n", p->desc.params[i].name, why);
                return 1;
            }
        }
        hvq_params params = {np, vals, p->desc.params};
        hvq_cluster_input in = {.tensor_name = "bench", .x = x, .rows = rows, .cols = cols,
                                .seed = 42};
        run *R = &runs[nrun++];
        R->recon = malloc(numel * sizeof *R->recon);
        hvq_encoded_init(&R->enc);
        double t0 = now(), c0 = cpu();
        hvq_status st = p->desc.cluster_encode(ctx, &params, &in, R->recon, &R->enc);
        R->wall = now() - t0;
        R->cpu = cpu() - c0;
        if (st != HVQ_OK) {
            fprintf(stderr, "encode: %s\n", hvq_ctx_error(ctx));
            return 1;
        }
        double e2 = 0, w2 = 0;
        for (uint64_t i = 0; i < numel; i++) {
            double e = (double)x[i] - R->recon[i];
            e2 += e * e;
            w2 += (double)x[i] * x[i];
        }
        printf("  plugin %-4s %7.3f s wall %7.3f s CPU, rel_fro %.5f\n", accel, R->wall,
               R->cpu, sqrt(e2 / w2));
        fflush(stdout);
        if (stages(ctx, x, numel, a, pass == 0 ? KM_ACCEL_AUTO : KM_ACCEL_NONE, &R->enc))
            rc = 1;
        fflush(stdout);
    }
    if (nrun == 2) {
        int same = runs[0].enc.n_components == runs[1].enc.n_components &&
                   memcmp(runs[0].recon, runs[1].recon, numel * sizeof(float)) == 0;
        for (size_t i = 0; same && i < runs[0].enc.n_components; i++)
            same = runs[0].enc.components[i].nbytes == runs[1].enc.components[i].nbytes &&
                   memcmp(runs[0].enc.components[i].data, runs[1].enc.components[i].data,
                          runs[0].enc.components[i].nbytes) == 0;
        printf("  auto vs none: %s; speed-up %.2fx wall, %.2fx CPU\n",
               same ? "identical output" : "OUTPUT DIFFERS", runs[1].wall / runs[0].wall,
               runs[1].cpu / runs[0].cpu);
        rc |= !same;
    }
    for (int i = 0; i < nrun; i++) {
        hvq_encoded_clear(&runs[i].enc);
        free(runs[i].recon);
    }
    free(x);
    hvq_registry_free(reg);
    hvq_ctx_free(ctx);
    return rc;
}
