/* GPTQ's factor and the full Hessian from the host: see gptq.h. */
#include "gptq.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

const char *const hvq_gptq_modes[] = {"off", "on", "auto", NULL};

/* Lower Cholesky factor of a (n x n, overwritten): 0, or -1 when a is not
 * positive definite. */
static int cholesky_lower(double *a, uint64_t n)
{
    for (uint64_t j = 0; j < n; j++) {
        double s = a[j * n + j];
        for (uint64_t k = 0; k < j; k++)
            s -= a[j * n + k] * a[j * n + k];
        if (!(s > 0.0) || !isfinite(s))
            return -1;
        double d = sqrt(s);
        a[j * n + j] = d;
        for (uint64_t i = j + 1; i < n; i++) {
            double v = a[i * n + j];
            for (uint64_t k = 0; k < j; k++)
                v -= a[i * n + k] * a[j * n + k];
            a[i * n + j] = v / d;
        }
        for (uint64_t k = j + 1; k < n; k++)
            a[j * n + k] = 0.0;
    }
    return 0;
}

/* The inverse of the lower triangular l, transposed, into inv_t (both
 * n x n): inv_t[c][i] = (l^-1)[i][c], so that both operands of the inner
 * products run along rows. */
static void invert_lower_t(const double *l, uint64_t n, double *inv_t)
{
    memset(inv_t, 0, (size_t)(n * n) * sizeof *inv_t);
    for (uint64_t c = 0; c < n; c++) {
        double *col = inv_t + c * n;
        col[c] = 1.0 / l[c * n + c];
        for (uint64_t i = c + 1; i < n; i++) {
            const double *li = l + i * n;
            double s = 0.0;
            for (uint64_t k = c; k < i; k++)
                s += li[k] * col[k];
            col[i] = -s / li[i];
        }
    }
}

/* With P the order-reversing permutation, P H P = L L^T gives
 * H^-1 = (P L^-1 P)^T (P L^-1 P), and P L^-1 P is upper triangular with a
 * positive diagonal: the factor U, from one Cholesky factorization and one
 * triangular inverse. */
int hvq_gptq_factor(const float *h, uint64_t n, double damp, double *u)
{
    double *a = malloc((size_t)(n * n) * sizeof *a + 1), *li = malloc((size_t)(n * n) * sizeof *li + 1);
    int rc = a && li ? -1 : -2;
    double mean = 0.0;
    for (uint64_t j = 0; j < n; j++)
        mean += h[j * n + j] > 0.0f ? h[j * n + j] : 1.0;
    mean = n ? mean / (double)n : 1.0;
    /* The damping rises tenfold while H + damp I is not numerically
     * positive definite. */
    for (int attempt = 0; attempt < 6 && rc == -1; attempt++, damp *= 10.0) {
        for (uint64_t i = 0; i < n; i++)
            for (uint64_t j = 0; j < n; j++) {
                double v = h[(n - 1 - i) * n + (n - 1 - j)];
                if (i == j)
                    v = (v > 0.0 ? v : 1.0) + damp * mean;
                a[i * n + j] = v;
            }
        rc = cholesky_lower(a, n);
    }
    if (rc == 0) {
        invert_lower_t(a, n, li);
        for (uint64_t i = 0; i < n; i++)
            for (uint64_t j = 0; j < n; j++)
                u[i * n + j] = li[(n - 1 - j) * n + (n - 1 - i)];
    }
    free(a);
    free(li);
    return rc;
}

void hvq_gptq_row_skip(const uint64_t *pos, uint64_t n, uint64_t r, uint64_t cols,
                       unsigned char *skip)
{
    memset(skip, 0, (size_t)cols);
    uint64_t lo = 0, hi = n, start = r * cols;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        if (pos[mid] < start)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (; lo < n && pos[lo] < start + cols; lo++)
        skip[pos[lo] - start] = 1;
}

hvq_status hvq_gptq_prepare(hvq_ctx *ctx, const hvq_cluster_input *in, const char *mode,
                            double damp, double **u)
{
    const hvq_host *H = ctx->host;
    *u = NULL;
    if (strcmp(mode, "off") == 0)
        return HVQ_OK;
    uint64_t n = in->cols;
    if (n > HVQ_GPTQ_MAX_COLS)
        return H->error(ctx, HVQ_E_INPUT,
                        "tensor '%s': rows of %llu columns are too wide for gptq (at most %u)",
                        in->tensor_name, (unsigned long long)n, HVQ_GPTQ_MAX_COLS);
    int has = H->struct_size >= offsetof(hvq_host, hessian_full) + sizeof H->hessian_full &&
              H->hessian_full;
    float *h = has ? malloc((size_t)(n * n) * sizeof *h + 1) : NULL;
    if (has && !h)
        return H->error(ctx, HVQ_E_NOMEM, "gptq: out of memory");
    hvq_status st = has ? H->hessian_full(ctx, in, h) : HVQ_E_NOTFOUND;
    if (st == HVQ_E_NOTFOUND && strcmp(mode, "auto") == 0) {
        free(h);
        return HVQ_OK;
    }
    if (st == HVQ_E_NOTFOUND)
        st = H->error(ctx, HVQ_E_INPUT,
                      "tensor '%s': gptq: on needs the full Hessian, and the hessian stage gives "
                      "only its diagonal (use the calibrate stage with full: true, or gptq: auto)",
                      in->tensor_name);
    if (st == HVQ_OK && !(*u = malloc((size_t)(n * n) * sizeof **u + 1)))
        st = H->error(ctx, HVQ_E_NOMEM, "gptq: out of memory");
    int rc = st == HVQ_OK ? hvq_gptq_factor(h, n, damp, *u) : 0;
    if (rc == -2)
        st = H->error(ctx, HVQ_E_NOMEM, "gptq: out of memory");
    else if (rc == -1)
        st = H->error(ctx, HVQ_E_INPUT,
                      "tensor '%s': its full Hessian is not positive definite even with the "
                      "damping raised 100000-fold",
                      in->tensor_name);
    free(h);
    if (st != HVQ_OK) {
        free(*u);
        *u = NULL;
    }
    return st;
}
