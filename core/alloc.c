/* The allocator: one candidate setting per tensor within a size budget
 * (the method is described in alloc.h). */
#include "alloc.h"

#include <stdlib.h>

/* Error reduction per byte from option a to option b (b larger). */
static double gain(const hvq_alloc_option *a, const hvq_alloc_option *b)
{
    return (a->err - b->err) / (double)(b->bytes - a->bytes);
}

/* The lower convex hull of one tensor's feasible options in hull[] (option
 * indices, increasing bytes, decreasing error, decreasing gain per byte);
 * returns its length. order[] is scratch of m entries. */
static size_t tensor_hull(const hvq_alloc_option *o, size_t m, size_t *order, size_t *hull)
{
    size_t n = 0, h = 0;
    /* feasible options by bytes, then error, then index (m is small) */
    for (size_t j = 0; j < m; j++) {
        if (!o[j].feasible)
            continue;
        size_t k = n++;
        while (k > 0 && (o[order[k - 1]].bytes > o[j].bytes ||
                         (o[order[k - 1]].bytes == o[j].bytes && o[order[k - 1]].err > o[j].err))) {
            order[k] = order[k - 1];
            k--;
        }
        order[k] = j;
    }
    for (size_t k = 0; k < n; k++) {
        const hvq_alloc_option *c = &o[order[k]];
        if (h > 0 && !(c->err < o[hull[h - 1]].err))
            continue; /* not on the front: no smaller error for more bytes */
        while (h >= 2 && gain(&o[hull[h - 2]], &o[hull[h - 1]]) <= gain(&o[hull[h - 1]], c))
            h--; /* hull[h-1] lies above the segment: never the best step */
        hull[h++] = order[k];
    }
    return h;
}

/* Hull steps, largest gain per byte first, while one fits. */
static uint64_t climb_hull(const hvq_alloc_option *opt, size_t n, size_t m, const size_t *hull,
                           const size_t *hn, size_t *pos, size_t *choice, uint64_t total,
                           uint64_t budget)
{
    for (;;) {
        size_t best = n;
        double best_gain = -1.0;
        for (size_t i = 0; i < n; i++) {
            if (pos[i] + 1 >= hn[i])
                continue;
            const hvq_alloc_option *a = &opt[i * m + hull[i * m + pos[i]]];
            const hvq_alloc_option *b = &opt[i * m + hull[i * m + pos[i] + 1]];
            if (b->bytes - a->bytes > budget - total)
                continue;
            double g = gain(a, b);
            if (g > best_gain) {
                best_gain = g;
                best = i;
            }
        }
        if (best == n)
            return total;
        const hvq_alloc_option *a = &opt[best * m + choice[best]];
        pos[best]++;
        choice[best] = hull[best * m + pos[best]];
        total += opt[best * m + choice[best]].bytes - a->bytes;
    }
}

/* Single switches to any feasible option that fits the bytes left and
 * lowers the error, largest reduction first. */
static void polish(const hvq_alloc_option *opt, size_t n, size_t m, size_t *choice,
                   uint64_t total, uint64_t budget)
{
    for (;;) {
        size_t bi = n, bj = 0;
        double best = 0.0;
        for (size_t i = 0; i < n; i++) {
            const hvq_alloc_option *c = &opt[i * m + choice[i]];
            for (size_t j = 0; j < m; j++) {
                const hvq_alloc_option *o = &opt[i * m + j];
                if (!o->feasible || !(o->err < c->err) ||
                    (o->bytes > c->bytes && o->bytes - c->bytes > budget - total))
                    continue;
                if (c->err - o->err > best) {
                    best = c->err - o->err;
                    bi = i;
                    bj = j;
                }
            }
        }
        if (bi == n)
            return;
        total = total - opt[bi * m + choice[bi]].bytes + opt[bi * m + bj].bytes;
        choice[bi] = bj;
    }
}

int hvq_alloc_solve(const hvq_alloc_option *opt, size_t n, size_t m, uint64_t budget,
                    size_t *choice, uint64_t *min_bytes, size_t *bad_tensor)
{
    size_t *hull = malloc((n * m != 0 ? n * m : 1) * sizeof *hull);
    size_t *hn = malloc((n ? n : 1) * sizeof *hn), *pos = malloc((n ? n : 1) * sizeof *pos);
    size_t *order = malloc((m ? m : 1) * sizeof *order);
    int rc = 0;
    if (!hull || !hn || !pos || !order) {
        rc = -1;
        goto done;
    }
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        hn[i] = tensor_hull(opt + i * m, m, order, hull + i * m);
        if (hn[i] == 0) {
            *bad_tensor = i;
            rc = 2;
            goto done;
        }
        pos[i] = 0;
        choice[i] = hull[i * m];
        total += opt[i * m + choice[i]].bytes;
    }
    *min_bytes = total;
    if (total > budget) {
        rc = 1;
        goto done;
    }
    total = climb_hull(opt, n, m, hull, hn, pos, choice, total, budget);
    polish(opt, n, m, choice, total, budget);
done:
    free(hull);
    free(hn);
    free(pos);
    free(order);
    return rc;
}
