/* Benchmark of the "kmeans" clusterer on one random matrix (never part of
 * make check).
 *
 * Build from a configured build tree BUILD (after make):
 *   cc -O2 -std=c11 -ffp-contract=off -I SRC/core -I SRC/plugins/clusterer-kmeans \
 *      SRC/bench/kmeans_bench.c SRC/plugins/clusterer-kmeans/kmeans_core.c \
 *      BUILD/.libs/libhvqcore.a -lyaml -ldl -lm -lpthread -o kmeans_bench
 * (kmeans_core.c only for its random numbers and the kernel's name: the
 * clusterer itself runs from the plugin.)
 * Run:
 *   ./kmeans_bench BUILD/plugins/.libs/clusterer_kmeans.so [rows cols b K stability
 *                  iterations threads]
 * Defaults: 2048 2048 4 2048 200 15 and every CPU. The matrix is Student-t
 * (4 degrees of freedom) with each row divided by its largest magnitude, as
 * the body of an LLM weight looks after the paper's normalization.
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

static double unif(km_rng *r) { return (double)(km_rng_next(r) >> 11) * 0x1.0p-53; }
static double gauss(km_rng *r)
{
    double u = unif(r), v = unif(r);
    return sqrt(-2.0 * log(1.0 - u)) * cos(6.283185307179586 * v);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s PLUGIN.so [rows cols b K stability iterations threads]\n",
                argv[0]);
        return 2;
    }
    long a[7] = {2048, 2048, 4, 2048, 200, 15, sysconf(_SC_NPROCESSORS_ONLN)};
    for (int i = 0; i < 7 && i + 2 < argc; i++)
        a[i] = atol(argv[i + 2]);
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

    char text[6][32];
    snprintf(text[0], 32, "%ld", a[2]);
    snprintf(text[1], 32, "%ld", a[3]);
    snprintf(text[2], 32, "%ld", a[5]);
    snprintf(text[3], 32, "%ld", a[4]);
    snprintf(text[4], 32, "error");
    snprintf(text[5], 32, "10000");
    hvq_value vals[6];
    char why[128];
    for (int i = 0; i < 6; i++)
        if (hvq_param_parse(&p->desc.params[i], text[i], &vals[i], why, sizeof why)) {
            fprintf(stderr, "%s: %s\n", p->desc.params[i].name, why);
            return 1;
        }
    hvq_params params = {6, vals, p->desc.params};

    float *x = malloc(numel * sizeof *x), *recon = malloc(numel * sizeof *recon);
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

    hvq_cluster_input in = {.tensor_name = "bench", .x = x, .rows = rows, .cols = cols,
                            .seed = 42};
    hvq_encoded enc;
    hvq_encoded_init(&enc);
    double t0 = now(), c0 = (double)clock() / CLOCKS_PER_SEC;
    hvq_status st = p->desc.cluster_encode(ctx, &params, &in, recon, &enc);
    double t1 = now(), c1 = (double)clock() / CLOCKS_PER_SEC;
    if (st != HVQ_OK) {
        fprintf(stderr, "encode: %s\n", hvq_ctx_error(ctx));
        return 1;
    }
    double e2 = 0, w2 = 0;
    for (uint64_t i = 0; i < numel; i++) {
        double e = (double)x[i] - recon[i];
        e2 += e * e;
        w2 += (double)x[i] * x[i];
    }
    uint64_t n = (numel + (uint64_t)a[2] - 1) / (uint64_t)a[2];
    uint64_t m = n < (uint64_t)a[3] * (uint64_t)a[4] ? n : (uint64_t)a[3] * (uint64_t)a[4];
    double pairs = ((double)m * (double)a[5] + (double)n) * (double)a[3];
    printf("%llux%llu b=%ld K=%ld stability=%ld iterations=%ld threads=%ld kernel=%s: "
           "%.3f s wall, %.3f s CPU, %.2f G vector-centroid pairs/s, rel_fro %.5f\n",
           (unsigned long long)rows, (unsigned long long)cols, a[2], a[3], a[4], a[5], a[6],
           km_kernel_name(km_kernel_count() - 1), t1 - t0, c1 - c0, pairs / (t1 - t0) / 1e9,
           sqrt(e2 / w2));
    hvq_encoded_clear(&enc);
    free(x);
    free(recon);
    hvq_registry_free(reg);
    hvq_ctx_free(ctx);
    return 0;
}
