/* A set of tensor names a stage reports once at its end, e.g. the tensors a
 * Hessian source had no diagonal for and gave H = 1: added as they come
 * (each once, in first-seen order), then listed in one warning as
 * "'a', 'b', ... and N more". Shared by the Hessian plugins (linked
 * statically, memory from the host). */
#ifndef HVQ_COMMON_NAMES_H
#define HVQ_COMMON_NAMES_H

#include "plugin.h"

typedef struct hvq_names {
    char **v;
    size_t n, cap;
} hvq_names;

/* Adds name unless it is there already; HVQ_E_NOMEM (set on ctx) on
 * failure. */
hvq_status hvq_names_add(hvq_ctx *ctx, hvq_names *l, const char *name);

/* The first `show` names quoted and comma-separated, then " and N more",
 * into out (always terminated, cut at cap). */
void hvq_names_list(const hvq_names *l, size_t show, char *out, size_t cap);

void hvq_names_free(hvq_ctx *ctx, hvq_names *l);

#endif
