/* Error feedback for scalar k-means (block_size 1, gptq: on): the codebook
 * is trained as without it, then each row's values are assigned column by
 * column to their nearest codebook level, each value's error spread over
 * the columns after it (common/gptq.h). The body is row-normalized (W / s_i);
 * the error of a row scales by s_i alike in every column, so the feedback
 * in the normalized domain is that of the raw weights. Sparse entries (kept
 * exactly by the residual coder) keep their index, take no updates and
 * spread no error. Rows are independent: they run on the host's threads in
 * fixed chunks, the same bytes for any count. */
#include "kmeans_gptq.h"

#include "gptq.h"
#include "kmeans_core.h"

#include <stdlib.h>
#include <string.h>

typedef struct level {
    float v;
    uint32_t i;
} level;

static int cmp_level(const void *a, const void *b)
{
    const level *x = a, *y = b;
    if (x->v != y->v)
        return x->v < y->v ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

/* The first of the levels equal to lv[p] in the sorted order (the lowest
 * index among them). */
static uint32_t first_equal(const level *lv, uint32_t p)
{
    while (p > 0 && lv[p - 1].v == lv[p].v)
        p--;
    return p;
}

/* The level nearest x (ties: the lower codebook index). */
static uint32_t nearest(const level *lv, uint32_t k, float x)
{
    uint32_t lo = 0, hi = k;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (lv[mid].v < x)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == k)
        return lv[first_equal(lv, k - 1)].i;
    if (lo == 0)
        return lv[0].i;
    uint32_t a = first_equal(lv, lo - 1);
    float da = x - lv[a].v, db = lv[lo].v - x;
    if (da < db)
        return lv[a].i;
    if (db < da)
        return lv[lo].i;
    return lv[a].i < lv[lo].i ? lv[a].i : lv[lo].i;
}

typedef struct gptq_job {
    const hvq_cluster_input *in;
    const float *cent; /* k values, the codebook as stored */
    const level *lv;
    uint32_t k;
    const double *u;
    uint32_t *idx;     /* rows * cols */
    float *recon;
    int *nomem;        /* per chunk */
} gptq_job;

static void gptq_rows(void *arg, uint64_t chunk, uint64_t r0, uint64_t r1)
{
    const gptq_job *j = arg;
    const uint64_t n = j->in->cols;
    int sparse = j->in->sparse_pos && j->in->n_sparse;
    float *w = malloc((size_t)n * sizeof *w);
    unsigned char *skip = sparse ? malloc((size_t)n) : NULL;
    j->nomem[chunk] = !w || (sparse && !skip);
    for (uint64_t r = r0; r < r1 && !j->nomem[chunk]; r++) {
        memcpy(w, j->in->x + r * n, (size_t)n * sizeof *w);
        if (skip)
            hvq_gptq_row_skip(j->in->sparse_pos, j->in->n_sparse, r, n, skip);
        for (uint64_t c = 0; c < n; c++) {
            if (skip && skip[c])
                continue; /* the index of the plain assignment stays */
            uint32_t q = nearest(j->lv, j->k, w[c]);
            j->idx[r * n + c] = q;
            j->recon[r * n + c] = j->cent[q];
            const double *uc = j->u + c * n;
            double e = ((double)w[c] - (double)j->cent[q]) / uc[c];
            for (uint64_t d = c + 1; d < n; d++)
                if (!skip || !skip[d])
                    w[d] = (float)((double)w[d] - e * uc[d]);
        }
    }
    free(w);
    free(skip);
}

int km_gptq_scalar(hvq_ctx *ctx, const hvq_cluster_input *in, const float *cent, uint32_t k,
                   unsigned bits, const double *u, uint8_t *packed, float *recon)
{
    uint64_t numel = in->rows * in->cols, per = hvq_par_rows(in->cols);
    uint64_t chunks = hvq_parallel_chunks(in->rows, per);
    level *lv = malloc((size_t)k * sizeof *lv);
    uint32_t *idx = malloc((size_t)numel * sizeof *idx + 1);
    int *nomem = calloc((size_t)(chunks ? chunks : 1), sizeof *nomem);
    int rc = lv && idx && nomem ? 0 : -1;
    if (rc == 0) {
        for (uint32_t i = 0; i < k; i++)
            lv[i] = (level){cent[i], i};
        qsort(lv, k, sizeof *lv, cmp_level);
        /* the plain assignment's indices, kept at the sparse entries */
        km_unpack(packed, (size_t)numel, bits, idx);
        gptq_job j = {in, cent, lv, k, u, idx, recon, nomem};
        hvq_host_parallel_for(ctx, in->rows, per, gptq_rows, &j);
        for (uint64_t c = 0; c < chunks; c++)
            rc |= nomem[c] ? -1 : 0;
    }
    if (rc == 0) {
        memset(packed, 0, (size_t)km_packed_bytes(numel, bits));
        km_pack(packed, idx, (size_t)numel, bits);
    }
    free(lv);
    free(idx);
    free(nomem);
    return rc;
}
