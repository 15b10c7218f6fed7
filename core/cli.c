/* What the commands share (see cli.h). */
#include "config.h"

#include "cli.h"

#include <stdio.h>

int hvq_exit_for(hvq_status st)
{
    switch (st) {
    case HVQ_OK: case HVQ_WARN: return HVQ_EXIT_OK;
    case HVQ_E_INPUT: case HVQ_E_UNSUPPORTED: case HVQ_E_NOTFOUND: return HVQ_EXIT_BAD_INPUT;
    default: return HVQ_EXIT_OTHER;
    }
}

hvq_registry *hvq_cli_registry(hvq_ctx *ctx, const char *const *dirs, size_t n)
{
    hvq_registry *reg = hvq_registry_new();
    if (!reg) {
        fprintf(stderr, "hvqconv: error: out of memory\n");
        return NULL;
    }
    if (hvq_registry_load_default(reg, ctx, dirs, n) != HVQ_OK) {
        hvq_ctx_print_error(ctx);
        hvq_registry_free(reg);
        return NULL;
    }
    hvq_ctx_set_registry(ctx, reg);
    return reg;
}
