/* Values the instances of one run share (host->shared_get/shared_put): a
 * small list of (key, value, release) on the context, emptied when the
 * run ends (hvq_ctx_shared_clear) or the context is freed. */
#include "config.h"

#include "ctx_int.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct hvq_shared_value {
    char *key;
    void *value;
    void (*release)(void *value);
};

/* One lock for every context: the list is short and rarely touched. */
static pthread_mutex_t shared_mu = PTHREAD_MUTEX_INITIALIZER;

void *hvq_shared_get(hvq_ctx *ctx, const char *key)
{
    ctx_private *p = priv(ctx);
    void *v = NULL;
    pthread_mutex_lock(&shared_mu);
    for (size_t i = 0; i < p->n_shared && !v; i++)
        if (strcmp(p->shared[i].key, key) == 0)
            v = p->shared[i].value;
    pthread_mutex_unlock(&shared_mu);
    return v;
}

hvq_status hvq_shared_put(hvq_ctx *ctx, const char *key, void *value,
                          void (*release)(void *value))
{
    ctx_private *p = priv(ctx);
    if (!key || !release)
        return hvq_error(ctx, HVQ_E_INTERNAL, "shared_put: no key or no release function");
    if (hvq_shared_get(ctx, key))
        return hvq_error(ctx, HVQ_E_INPUT, "shared_put: the key '%s' is taken in this run", key);
    char *k = strdup(key);
    pthread_mutex_lock(&shared_mu);
    hvq_shared_value *grown = k ? realloc(p->shared, (p->n_shared + 1) * sizeof *grown) : NULL;
    if (grown) {
        p->shared = grown;
        grown[p->n_shared++] = (hvq_shared_value){k, value, release};
    }
    pthread_mutex_unlock(&shared_mu);
    if (!grown) {
        free(k);
        return hvq_error(ctx, HVQ_E_NOMEM, "out of memory");
    }
    return HVQ_OK;
}

void hvq_ctx_shared_clear(hvq_ctx *ctx)
{
    ctx_private *p = priv(ctx);
    pthread_mutex_lock(&shared_mu);
    hvq_shared_value *list = p->shared;
    size_t n = p->n_shared;
    p->shared = NULL;
    p->n_shared = 0;
    pthread_mutex_unlock(&shared_mu);
    /* released newest first: a later value may borrow from an earlier one */
    while (n-- > 0) {
        list[n].release(list[n].value);
        free(list[n].key);
    }
    free(list);
}
