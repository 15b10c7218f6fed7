/* k-means core: Lloyd training with dead-unit revival (see
 * kmeans_core.h). */
#include "km_private.h"

/* ------------------------------------------------------------------------
 * Training
 * ---------------------------------------------------------------------- */

typedef struct km_ranked {
    float d;
    uint32_t pad;
    uint64_t pos;
} km_ranked;

/* Largest distance first; equal distances by position. */
static int km_ranked_cmp(const void *pa, const void *pb)
{
    const km_ranked *a = pa, *b = pb;
    if (a->d != b->d)
        return a->d > b->d ? -1 : 1;
    return a->pos < b->pos ? -1 : a->pos > b->pos;
}

static double km_sum(const float *d, uint64_t n)
{
    double s = 0.0;
    for (uint64_t i = 0; i < n; i++)
        s += d[i];
    return s;
}

/* Moves the dead centroids (counts == 0) to the subset vectors worst served
 * by the live ones; returns the number moved, or -1 when out of memory. */
static int64_t km_revive(const float *sample, uint64_t m, const km_train_opts *o, km_rng *r,
                         float *cent, const uint64_t *counts, const float *lo, const float *hi)
{
    const int b = o->b;
    const uint32_t k = o->k;
    uint32_t nlive = 0;
    for (uint32_t q = 0; q < k; q++)
        nlive += counts[q] != 0;
    uint64_t nd = k - nlive, rs = o->revival < m ? o->revival : m;
    int64_t moved = -1;
    km_codebook live = {0};
    float *lv = malloc((size_t)nlive * (size_t)b * sizeof *lv + 1);
    uint64_t *pos = malloc((size_t)rs * sizeof *pos + 1);
    float *vec = malloc((size_t)rs * (size_t)b * sizeof *vec + 1);
    float *dist = malloc((size_t)rs * sizeof *dist + 1);
    uint32_t *lab = malloc((size_t)rs * sizeof *lab + 1);
    km_ranked *rank = malloc((size_t)rs * sizeof *rank + 1);
    if (!lv || !pos || !vec || !dist || !lab || !rank || km_codebook_init(&live, b, nlive))
        goto out;
    for (uint32_t q = 0, l = 0; q < k; q++)
        if (counts[q])
            memcpy(lv + (size_t)l++ * b, cent + (size_t)q * b, (size_t)b * sizeof *lv);
    km_codebook_set(&live, lv);
    /* (an index costs more than it saves on a small subset) */
    if (rs >= 100000)
        km_codebook_index(&live, lv, lo, hi, o->accel, o->ctx);
    if (km_sample(r, m, rs, pos))
        goto out;
    for (uint64_t s = 0; s < rs; s++)
        memcpy(vec + s * (size_t)b, sample + pos[s] * (size_t)b, (size_t)b * sizeof *vec);
    km_assign_parallel(vec, (size_t)rs, &live, lab, dist, o->ctx);
    for (uint64_t s = 0; s < rs; s++) {
        rank[s].d = isnan(dist[s]) ? -INFINITY : dist[s];
        rank[s].pad = 0;
        rank[s].pos = s;
    }
    qsort(rank, (size_t)rs, sizeof *rank, km_ranked_cmp);
    uint64_t nmove = nd < rs ? nd : rs, q2 = 0;
    for (uint32_t q = 0; q < k && q2 < nmove; q++)
        if (!counts[q])
            memcpy(cent + (size_t)q * b, vec + rank[q2++].pos * (size_t)b,
                   (size_t)b * sizeof *cent);
    moved = (int64_t)nmove;
out:
    km_codebook_free(&live);
    free(lv);
    free(pos);
    free(vec);
    free(dist);
    free(lab);
    free(rank);
    return moved;
}

/* The E-step: labels (and dist) of the m sample vectors for the centroids
 * cent (in cb). full: a full search (the index or brute force); else
 * guided search where it pays, from the previous labels, or from the k-d
 * tree's guesses when first. */
static void km_estep(const km_train_opts *o, const float *sample, uint64_t m, km_codebook *cb,
                     km_nbrs *nb, const float *cent, int full, int first, uint32_t *labels,
                     float *dist)
{
    if (full || !km_guided_ok(o->b, o->k, o->accel) ||
        km_nbrs_build(nb, cent, o->k, o->b, o->ctx)) {
        km_assign_parallel(sample, (size_t)m, cb, labels, dist, o->ctx);
        return;
    }
    if (first) /* no previous centroids */
        memset(labels, 0xff, (size_t)m * sizeof *labels);
    km_assign_guided(sample, (size_t)m, cb, nb, labels, dist, o->ctx);
}

/* The M-step's sums and counts per centroid, in sample order (independent
 * of the threads); returns the number of dead units (count 0). */
static uint64_t km_msums(const float *sample, uint64_t m, int b, uint32_t k,
                         const uint32_t *labels, double *sums, uint64_t *counts)
{
    memset(sums, 0, (size_t)k * (size_t)b * sizeof *sums);
    memset(counts, 0, (size_t)k * sizeof *counts);
    for (uint64_t i = 0; i < m; i++) {
        uint32_t q = labels[i];
        const float *v = sample + i * (size_t)b;
        double *s = sums + (size_t)q * b;
        counts[q]++;
        for (int j = 0; j < b; j++)
            s[j] += v[j];
    }
    uint64_t dead = 0;
    for (uint32_t q = 0; q < k; q++)
        dead += counts[q] == 0;
    return dead;
}

int km_train(const float *sample, uint64_t m, const km_train_opts *o, km_rng *r, float *cent)
{
    const int b = o->b;
    const uint32_t k = o->k;
    int rc = -1;
    if (k < 1 || k > m || b < 1 || b > KM_MAX_BLOCK)
        return -1;
    km_codebook cb = {0};
    km_nbrs nb = {0};
    uint64_t *perm = malloc((size_t)k * sizeof *perm);
    uint32_t *labels = malloc((size_t)m * sizeof *labels);
    float *dist = o->objective ? malloc((size_t)m * sizeof *dist) : NULL;
    double *sums = malloc((size_t)k * (size_t)b * sizeof *sums);
    uint64_t *counts = malloc((size_t)k * sizeof *counts);
    if (!perm || !labels || (o->objective && !dist) || !sums || !counts ||
        km_codebook_init(&cb, b, k))
        goto out;
    /* The box of the queries, for the index. */
    float lo[KM_MAX_BLOCK], hi[KM_MAX_BLOCK];
    km_bounds(sample, (size_t)m, b, lo, hi);

    /* Initialization: k distinct sample vectors chosen at random. */
    if (km_sample(r, m, k, perm))
        goto out;
    for (uint32_t q = 0; q < k; q++)
        memcpy(cent + (size_t)q * b, sample + perm[q] * (size_t)b, (size_t)b * sizeof *cent);
    km_codebook_set(&cb, cent);
    km_codebook_index(&cb, cent, lo, hi, o->accel, o->ctx);

    for (int it = 0; it < o->iterations; it++) {
        /* E-step: a full search first where the index serves it; then each
         * vector's previous centroid, certified by the centroids'
         * neighbours */
        int full = it == 0 && cb.grid && km_codebook_index_load(&cb) > 0;
        km_estep(o, sample, m, &cb, &nb, cent, full, it == 0, labels, dist);
        if (o->objective)
            o->objective[it] = km_sum(dist, m);
        uint64_t dead = km_msums(sample, m, b, k, labels, sums, counts);
        int64_t moved = 0;
        /* Dead units first: their distances are to the live centroids as
         * they were before this update. */
        if (dead && (moved = km_revive(sample, m, o, r, cent, counts, lo, hi)) < 0)
            goto out;
        if (o->revived)
            o->revived[it] = (uint64_t)moved;
        for (uint32_t q = 0; q < k; q++)
            if (counts[q])
                for (int j = 0; j < b; j++)
                    cent[(size_t)q * b + j] =
                        (float)(sums[(size_t)q * b + j] / (double)counts[q]);
        km_codebook_set(&cb, cent);
        if (o->progress)
            o->progress(o->progress_arg, (uint64_t)it + 1, (uint64_t)o->iterations);
    }
    if (o->labels && o->iterations > 0)
        memcpy(o->labels, labels, (size_t)m * sizeof *labels);
    if (o->objective) {
        km_estep(o, sample, m, &cb, &nb, cent, o->iterations == 0, 0, labels, dist);
        o->objective[o->iterations] = km_sum(dist, m);
    }
    rc = 0;
out:
    km_codebook_free(&cb);
    km_nbrs_free(&nb);
    free(perm);
    free(labels);
    free(dist);
    free(sums);
    free(counts);
    return rc;
}
