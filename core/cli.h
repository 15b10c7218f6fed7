/* What the commands (main.c, cmd_container.c, cmd_eval.c) share: the exit
 * status of a result and the plugin registry a command loads. */
#ifndef HVQ_CORE_CLI_H
#define HVQ_CORE_CLI_H

#include "ctx.h"
#include "registry.h"

#include <stddef.h>
#include <stdio.h>

/* Exit statuses: 0 done (warnings included), 2 bad input (the user's
 * files or options: HVQ_E_INPUT, UNSUPPORTED, NOTFOUND), 1 anything else
 * (the machine: memory, I/O, an internal error). */
enum { HVQ_EXIT_OK = 0, HVQ_EXIT_OTHER = 1, HVQ_EXIT_BAD_INPUT = 2 };
int hvq_exit_for(hvq_status st);

/* The plugins of the default directories and dirs[0..n), set as ctx's
 * registry; NULL after printing why. */
hvq_registry *hvq_cli_registry(hvq_ctx *ctx, const char *const *dirs, size_t n);

/* The commands that take their options from getopt (decode, inspect,
 * verify, convert): --plugin-dir's option value, the plugin directories
 * (the global ones, then the command's own), the options every command
 * shares (-1 to go on, else an exit status), and the run: a context
 * (threads defaulting to every core) and the registry, fn, its error
 * printed, everything freed (d included); returns the exit status. */
enum { HVQ_CLI_OPT_PLUGIN_DIR = 1000 };
typedef struct hvq_cli_dirs {
    const char **v;
    size_t n;
} hvq_cli_dirs;
int hvq_cli_dirs_add(hvq_cli_dirs *d, const char *dir);
int hvq_cli_common_opt(int c, hvq_cli_dirs *d, hvq_ctx_opts *o, const char *cmd,
                       void (*usage)(FILE *));
typedef hvq_status (*hvq_cli_run_fn)(hvq_ctx *ctx, const hvq_registry *reg, const void *args);
int hvq_cli_run(hvq_ctx_opts *opts, hvq_cli_dirs *d, hvq_cli_run_fn fn, const void *args);

/* The `convert` command (cmd_convert.c). */
int hvq_cmd_convert(int argc, char **argv, const char *const *plugin_dirs, size_t n_plugin_dirs,
                    const hvq_ctx_opts *gopts);

/* Whether a and b exist and are one file. */
int hvq_cli_same_file(const char *a, const char *b);

/* The architecture a Hugging Face config.json names into arch: its
 * model_type, else the first of architectures without its class suffix
 * ("LlamaForCausalLM": "llama"); "" when neither; je->message set when the
 * text is not JSON (core/cmd_convert.c). */
struct hvq_json_error;
void hvq_config_model_type(const char *text, char *arch, size_t len, struct hvq_json_error *je);

#endif
