/* What the commands (main.c, cmd_container.c, cmd_eval.c) share: the exit
 * status of a result and the plugin registry a command loads. */
#ifndef HVQ_CORE_CLI_H
#define HVQ_CORE_CLI_H

#include "ctx.h"
#include "registry.h"

#include <stddef.h>

/* Exit statuses: 0 done (warnings included), 2 bad input (the user's
 * files or options: HVQ_E_INPUT, UNSUPPORTED, NOTFOUND), 1 anything else
 * (the machine: memory, I/O, an internal error). */
enum { HVQ_EXIT_OK = 0, HVQ_EXIT_OTHER = 1, HVQ_EXIT_BAD_INPUT = 2 };
int hvq_exit_for(hvq_status st);

/* The plugins of the default directories and dirs[0..n), set as ctx's
 * registry; NULL after printing why. */
hvq_registry *hvq_cli_registry(hvq_ctx *ctx, const char *const *dirs, size_t n);

#endif
