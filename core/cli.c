/* What the commands share (see cli.h). */
#include "config.h"

#include "cli.h"

#include "util.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

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

int hvq_cli_dirs_add(hvq_cli_dirs *d, const char *dir)
{
    const char **v = realloc(d->v, (d->n + 1) * sizeof *v);
    if (!v)
        return 0;
    v[d->n++] = dir;
    d->v = v;
    return 1;
}

int hvq_cli_common_opt(int c, hvq_cli_dirs *d, hvq_ctx_opts *o, const char *cmd,
                       void (*usage)(FILE *))
{
    switch (c) {
    case HVQ_CLI_OPT_PLUGIN_DIR: return hvq_cli_dirs_add(d, optarg) ? -1 : HVQ_EXIT_OTHER;
    case 'q': o->quiet = 1; return -1;
    case 'v': o->verbose = 1; return -1;
    case 'h': usage(stdout); return HVQ_EXIT_OK;
    case 'V': printf("hvqconv %s (plugin ABI %d)\n", PACKAGE_VERSION, HVQ_ABI_VERSION); return HVQ_EXIT_OK;
    default:
        fprintf(stderr, "Try 'hvqconv %s --help'.\n", cmd);
        return HVQ_EXIT_BAD_INPUT;
    }
}

int hvq_cli_run(hvq_ctx_opts *opts, hvq_cli_dirs *d, hvq_cli_run_fn fn, const void *args)
{
    int rc = HVQ_EXIT_OTHER;
    if (opts->threads < 1)
        opts->threads = hvq_default_threads();
    hvq_ctx *ctx = hvq_ctx_new(opts);
    hvq_registry *reg = ctx ? hvq_cli_registry(ctx, d->v, d->n) : NULL;
    if (reg) {
        hvq_status st = fn(ctx, reg, args);
        if (st != HVQ_OK)
            hvq_ctx_print_error(ctx);
        rc = hvq_exit_for(st);
    }
    hvq_ctx_free(ctx);
    hvq_registry_free(reg);
    free(d->v);
    return rc;
}

int hvq_cli_same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}
