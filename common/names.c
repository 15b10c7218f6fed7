/* A set of tensor names reported once (see names.h). */
#include "names.h"

#include <stdio.h>
#include <string.h>

hvq_status hvq_names_add(hvq_ctx *ctx, hvq_names *l, const char *name)
{
    const hvq_host *H = ctx->host;
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->v[i], name) == 0)
            return HVQ_OK;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 8;
        char **v = H->realloc(ctx, l->v, cap * sizeof *v);
        if (!v)
            return HVQ_E_NOMEM;
        l->v = v;
        l->cap = cap;
    }
    if (!(l->v[l->n] = H->strdup(ctx, name)))
        return HVQ_E_NOMEM;
    l->n++;
    return HVQ_OK;
}

void hvq_names_list(const hvq_names *l, size_t show, char *out, size_t cap)
{
    size_t used = 0, shown = l->n < show ? l->n : show;
    out[0] = '\0';
    for (size_t i = 0; i < shown; i++) {
        int n = snprintf(out + used, cap - used, "%s'%.120s'", i ? ", " : "", l->v[i]);
        if (n < 0 || (size_t)n >= cap - used)
            break;
        used += (size_t)n;
    }
    if (l->n > shown && used < cap)
        snprintf(out + used, cap - used, " and %zu more", l->n - shown);
}

void hvq_names_free(hvq_ctx *ctx, hvq_names *l)
{
    for (size_t i = 0; i < l->n; i++)
        ctx->host->free(l->v[i]);
    ctx->host->free(l->v);
    memset(l, 0, sizeof *l);
}
