/* The allocator behind --target-bpw and --target-size: given, for every
 * compressed tensor, the true size and the Hessian-weighted squared error
 * of each candidate setting, it chooses one setting per tensor so that the
 * sum of the errors is smallest while the sum of the sizes stays within a
 * budget (a multiple-choice knapsack).
 *
 * The method: each tensor's options are reduced to those no other option
 * beats in both size and error (the Pareto front), and to the lower convex
 * hull of that front. Every tensor starts at its smallest option; then the
 * hull step with the largest error reduction per byte that still fits is
 * taken, again and again (the Lagrangian solution at every budget it
 * passes through); last, any single switch to a front option that fits
 * the bytes left and lowers the error is taken, best first, until none
 * remains. Pure arithmetic in a fixed order, ties to the lower tensor and
 * option index: the same input gives the same choice on any machine. */
#ifndef HVQ_CORE_ALLOC_H
#define HVQ_CORE_ALLOC_H

#include <stddef.h>
#include <stdint.h>

typedef struct hvq_alloc_option {
    uint64_t bytes;   /* true size: every stored byte of the tensor */
    double err;       /* sum_j H_j sum_i (W - W_hat)_ij^2 */
    int feasible;     /* 0: the setting cannot encode this tensor */
} hvq_alloc_option;

/* opt[i * n_opt + j] is option j of tensor i. choice[i] gets the option
 * chosen for tensor i. Returns 0 on success; 1 when even the smallest
 * feasible option of every tensor exceeds budget (*min_bytes is then that
 * smallest total, and choice holds the smallest options); 2 when a tensor
 * has no feasible option (*bad_tensor names it); -1 out of memory. */
int hvq_alloc_solve(const hvq_alloc_option *opt, size_t n_tensors, size_t n_opt,
                    uint64_t budget, size_t *choice, uint64_t *min_bytes,
                    size_t *bad_tensor);

#endif
