/* hvqconv: the command-line interface. */
#include "config.h"

#include "cli.h"
#include "container.h"
#include "ctx.h"
#include "file.h"
#include "signals.h"
#include "driver.h"
#include "eval.h"
#include "params.h"
#include "pipeline.h"
#include "registry.h"
#include "report.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct cli {
    const char **plugin_dirs;
    size_t n_plugin_dirs;
    hvq_ctx_opts opts;
} cli;

static void usage_main(FILE *f)
{
    fputs("Usage: hvqconv [OPTION]... COMMAND [ARG]...\n"
          "Compress the weights of a large language model with HAS-VQ (Hessian-adaptive\n"
          "sparse vector quantization) or a baseline, as a YAML pipeline describes.\n"
          "\n"
          "Commands:\n"
          "  run PIPELINE        run a pipeline (compress a model)\n"
          "  compare PIPELINE... run several pipelines on one input, one table\n"
          "  list-plugins        list the plugins found, with kind, version and origin\n"
          "  describe NAME       show a plugin's parameters (type, default, range, help)\n"
          "  decode FILE.hvq     decode an hvq container into a model file (-o OUTPUT)\n"
          "  convert IN OUT      convert a model between formats and layouts, uncompressed\n"
          "  inspect FILE.hvq    describe an hvq container and verify its checksums\n"
          "  verify FILE.hvq     check an hvq container's structure and every checksum\n"
          "  eval MODEL          perplexity of a Llama-family model on a token file\n"
          "\n"
          "Options for every command:\n"
          "      --plugin-dir DIR  load plugins from DIR before the others (repeatable)\n"
          "  -q, --quiet           no progress or informational messages\n"
          "  -v, --verbose         debugging messages\n"
          "  -h, --help            this help (or COMMAND --help)\n"
          "  -V, --version         the version\n"
          "\n"
          "Plugins are loaded from --plugin-dir, then each directory of $HVQ_PLUGIN_PATH\n"
          "(colon-separated), then the build tree when run uninstalled, else " HVQ_PLUGINDIR
          ".\n"
          "\n"
          "Exit status: 0 on success, 2 for bad input (a file, a pipeline, an argument),\n"
          "1 for any other failure.\n",
          f);
}

static void usage_run(FILE *f)
{
    fputs("Usage: hvqconv run PIPELINE.yaml [OPTION]...\n"
          "Run a pipeline: read the input model, compress the selected tensors, pass the\n"
          "others through, write the output atomically and print a report.\n"
          "\n"
          "  -i, --input PATH      the model to read (overrides input:)\n"
          "  -o, --output PATH     the file to write (overrides output:)\n"
          "  -r, --report PATH     also write the report as JSON (overrides report:)\n"
          "  -s, --set KEY=VALUE   override any pipeline value, validated like the file:\n"
          "                        seed=7, stages.clusterer.group_size=128,\n"
          "                        stages.hessian.plugin=uniform (repeatable)\n"
          "  -t, --threads N       worker threads (default: all cores)\n"
          "  -f, --force           replace existing output files\n"
          "      --eval            then print the output's perplexity, measured as the\n"
          "                        pipeline's evaluate: declares\n"
          "      --target-bpw X    choose each tensor's setting among the pipeline's\n"
          "                        candidates: so that the compressed tensors take at most\n"
          "                        X bits per weight (every stored byte) with the least\n"
          "                        Hessian-weighted error (target.bpw=X)\n"
          "      --target-size S   the same for a size of every tensor stored: 900MB, 2GiB\n"
          "                        (target.size=S)\n"
          "      --plugin-dir DIR, -q, -v, -h as for every command\n",
          f);
}

static void usage_compare(FILE *f)
{
    fputs("Usage: hvqconv compare PIPELINE.yaml... [OPTION]...\n"
          "Run several pipelines on the same input and print their sizes and errors side\n"
          "by side. Every pipeline is validated before the first one starts. Outputs go\n"
          "to a temporary directory and are deleted afterwards (their sizes are measured\n"
          "first) unless --keep DIR is given.\n"
          "\n"
          "When a pipeline declares evaluate: (a token file, ctx, windows), the table gets\n"
          "a PPL column: the first such pipeline's evaluation is applied to every output\n"
          "and to the uncompressed input, shown as a first row.\n"
          "\n"
          "  -i, --input PATH      the model every pipeline reads (default: each one's input:)\n"
          "  -s, --set KEY=VALUE   override a value in every pipeline (repeatable)\n"
          "  -r, --report PATH     also write every run's report as one JSON document\n"
          "  -k, --keep DIR        write the outputs into DIR (an existing directory) and keep them\n"
          "  -t, --threads N       worker threads (default: all cores)\n"
          "  -f, --force           replace existing files (with --keep, --report)\n"
          "      --no-eval         no perplexity column, whatever the pipelines declare\n"
          "      --target-bpw X, --target-size S\n"
          "                        the size target of the pipelines that declare candidates:\n"
          "      --plugin-dir DIR, -q, -v, -h as for every command\n",
          f);
}

static void usage_list(FILE *f)
{
    fputs("Usage: hvqconv list-plugins [--plugin-dir DIR]...\n"
          "List every plugin found: kind, name, version, summary and the file it came from.\n"
          "Plugins that were refused are reported on stderr with the reason.\n",
          f);
}

static void usage_describe(FILE *f)
{
    fputs("Usage: hvqconv describe NAME [--plugin-dir DIR]...\n"
          "Show a plugin's kind, version, licence, origin and every parameter with its\n"
          "type, default, range or choices, and help.\n",
          f);
}

static hvq_registry *load_registry(hvq_ctx *ctx, const cli *c)
{
    return hvq_cli_registry(ctx, c->plugin_dirs, c->n_plugin_dirs);
}

static int add_plugin_dir(cli *c, const char *dir)
{
    hvq_cli_dirs d = {c->plugin_dirs, c->n_plugin_dirs};
    if (!hvq_cli_dirs_add(&d, dir))
        return 0;
    c->plugin_dirs = d.v;
    c->n_plugin_dirs = d.n;
    return 1;
}

enum { OPT_PLUGIN_DIR = 1000, OPT_EVAL, OPT_NO_EVAL, OPT_TARGET_BPW, OPT_TARGET_SIZE };

/* --target-bpw X / --target-size S as the --set they stand for. */
static int target_option(int c, const char *arg, char *buf, size_t len)
{
    if (c != OPT_TARGET_BPW && c != OPT_TARGET_SIZE)
        return 0;
    snprintf(buf, len, "target.%s=%s", c == OPT_TARGET_BPW ? "bpw" : "size", arg);
    return 1;
}

/* Parses the options common to every command plus the command's own.
 * Returns -1 to continue, else an exit status. */
static int parse_common(int c, cli *cl, const char *cmd, void (*usage)(FILE *))
{
    switch (c) {
    case OPT_PLUGIN_DIR:
        if (!add_plugin_dir(cl, optarg))
            return HVQ_EXIT_OTHER;
        return -1;
    case 'q': cl->opts.quiet = 1; return -1;
    case 'v': cl->opts.verbose = 1; return -1;
    case 'h': usage(stdout); return HVQ_EXIT_OK;
    case 'V': printf("hvqconv %s (plugin ABI %d)\n", PACKAGE_VERSION, HVQ_ABI_VERSION); return HVQ_EXIT_OK;
    default:
        fprintf(stderr, "Try 'hvqconv %s --help'.\n", cmd);
        return HVQ_EXIT_BAD_INPUT;
    }
}

static hvq_status run_eval(hvq_ctx *ctx, const hvq_registry *reg, const hvq_pipeline *p);

/* --set KEY=DIRVALUE for a path of any length (DIR may be "" or "DIR/"). */
static hvq_status set_path(hvq_ctx *ctx, hvq_pipeline *p, const char *key, const char *dir,
                           const char *value)
{
    size_t n = strlen(key) + strlen(dir) + strlen(value) + 2;
    char *kv = malloc(n);
    if (!kv)
        return hvq_error(ctx, HVQ_E_NOMEM, "out of memory");
    snprintf(kv, n, "%s=%s%s", key, dir, value);
    hvq_status st = hvq_pipeline_set(ctx, p, kv);
    free(kv);
    return st;
}

/* The options run and compare share (each command's table says which it
 * takes). */
typedef struct job_args {
    const char *input, *output, *report, *keep;
    const char **sets;   /* --set, in order */
    size_t n_sets;
    char target[512];    /* --target-bpw/--target-size as a --set */
    int eval, no_eval;
} job_args;

/* The options of cmd: the shared ones, its own two (mine) and its short
 * options; -1 to go on, else an exit status. */
static int job_args_parse(int argc, char **argv, cli *cl, const char *cmd,
                          const struct option mine[2], const char *shorts,
                          void (*usage)(FILE *), job_args *a)
{
    struct option lo[] = {
        {"input", required_argument, 0, 'i'},   {"report", required_argument, 0, 'r'},
        {"set", required_argument, 0, 's'},     {"threads", required_argument, 0, 't'},
        {"force", no_argument, 0, 'f'},         {"plugin-dir", required_argument, 0, OPT_PLUGIN_DIR},
        {"quiet", no_argument, 0, 'q'},         {"verbose", no_argument, 0, 'v'},
        {"help", no_argument, 0, 'h'},          {"version", no_argument, 0, 'V'},
        {"target-bpw", required_argument, 0, OPT_TARGET_BPW},
        {"target-size", required_argument, 0, OPT_TARGET_SIZE},
        mine[0], mine[1], {0, 0, 0, 0}};
    int c, rc = -1;
    if (!(a->sets = calloc((size_t)argc + 1, sizeof *a->sets)))
        return HVQ_EXIT_OTHER;
    cl->opts.threads = 0;
    while (rc < 0 && (c = getopt_long(argc, argv, shorts, lo, NULL)) != -1) {
        switch (c) {
        case 'i': a->input = optarg; break;
        case 'o': a->output = optarg; break;
        case 'r': a->report = optarg; break;
        case 'k': a->keep = optarg; break;
        case 's': a->sets[a->n_sets++] = optarg; break;
        case 'f': cl->opts.force = 1; break;
        case OPT_EVAL: a->eval = 1; break;
        case OPT_NO_EVAL: a->no_eval = 1; break;
        case OPT_TARGET_BPW:
        case OPT_TARGET_SIZE: target_option(c, optarg, a->target, sizeof a->target); break;
        case 't':
            if (!hvq_parse_threads(optarg, &cl->opts.threads))
                rc = HVQ_EXIT_BAD_INPUT;
            break;
        default: rc = parse_common(c, cl, cmd, usage);
        }
    }
    if (rc < 0 && !cl->opts.threads)
        cl->opts.threads = hvq_default_threads();
    return rc;
}

/* Applies the user's paths, --set and the size target to p, then
 * validates it. */
static hvq_status run_configure(hvq_ctx *ctx, const hvq_registry *reg, const job_args *a,
                                hvq_pipeline *p)
{
    hvq_status st = HVQ_OK;
    if (a->input)
        st = set_path(ctx, p, "input", "", a->input);
    if (st == HVQ_OK && a->output)
        st = set_path(ctx, p, "output", "", a->output);
    if (st == HVQ_OK && a->report)
        st = set_path(ctx, p, "report", "", a->report);
    for (size_t i = 0; st == HVQ_OK && i < a->n_sets; i++)
        st = hvq_pipeline_set(ctx, p, a->sets[i]);
    if (st == HVQ_OK && a->target[0])
        st = hvq_pipeline_set(ctx, p, a->target);
    if (st == HVQ_OK)
        st = hvq_pipeline_validate(ctx, p, reg);
    if (st == HVQ_OK && a->eval && !p->evaluate.present)
        st = hvq_error(ctx, HVQ_E_INPUT, "%s: --eval: the pipeline declares no evaluate: (add "
                       "one, or --set evaluate.tokens=PATH)", p->path);
    return st;
}

static int cmd_run(int argc, char **argv, cli *cl)
{
    static const struct option mine[] = {
        {"output", required_argument, 0, 'o'}, {"eval", no_argument, 0, OPT_EVAL}};
    job_args a;
    memset(&a, 0, sizeof a);
    int rc = job_args_parse(argc, argv, cl, "run", mine, "i:o:r:s:t:fqvhV", usage_run, &a);
    if (rc < 0 && optind >= argc) {
        fprintf(stderr, "hvqconv: error: run needs a pipeline file\nTry 'hvqconv run --help'.\n");
        rc = HVQ_EXIT_BAD_INPUT;
    } else if (rc < 0 && optind + 1 < argc) {
        fprintf(stderr, "hvqconv: error: unexpected argument '%s'\nTry 'hvqconv run --help'.\n",
                argv[optind + 1]);
        rc = HVQ_EXIT_BAD_INPUT;
    }
    hvq_ctx *ctx = rc < 0 ? hvq_ctx_new(&cl->opts) : NULL;
    if (rc >= 0 || !ctx) {
        free(a.sets);
        return rc >= 0 ? rc : HVQ_EXIT_OTHER;
    }
    hvq_registry *reg = load_registry(ctx, cl);
    hvq_pipeline *p = NULL;
    hvq_status st = reg ? hvq_pipeline_load(ctx, argv[optind], &p) : HVQ_E_INTERNAL;
    if (st == HVQ_OK)
        st = run_configure(ctx, reg, &a, p);
    hvq_run_report rep;
    memset(&rep, 0, sizeof rep);
    if (st == HVQ_OK) {
        hvq_signals_polling(1);
        st = hvq_run_pipeline(ctx, reg, p, &rep);
        hvq_signals_polling(0);
        if (st == HVQ_OK)
            hvq_report_print(stdout, &rep);
    }
    if (st == HVQ_OK && a.eval)
        st = run_eval(ctx, reg, p);
    if (st != HVQ_OK && reg)
        hvq_ctx_print_error(ctx);
    hvq_run_report_free(&rep);
    hvq_pipeline_free(p);
    hvq_ctx_free(ctx);
    hvq_registry_free(reg);
    free(a.sets);
    return hvq_exit_for(st);
}

/* ---- perplexity: compare's PPL column and run --eval ---------------------- */

/* The config.json outputs of a pipeline on input are evaluated with: the
 * input's (in its directory, or beside the file), since a dequantized file
 * written elsewhere has none beside it. NULL for a GGUF input (its outputs
 * carry llama.cpp metadata) or when there is none (malloc'd). */
static char *input_config(hvq_ctx *ctx, const hvq_registry *reg, const char *input)
{
    struct stat st;
    char *cfg = NULL;
    if (!input || stat(input, &st) != 0)
        return NULL;
    size_t n = strlen(input) + sizeof "/config.json";
    if (!(cfg = malloc(n)))
        return NULL;
    if (S_ISDIR(st.st_mode)) {
        snprintf(cfg, n, "%s/config.json", input);
    } else {
        /* the host's detection says what the file is */
        const hvq_loaded_plugin *pl = hvq_registry_detect(reg, ctx, input);
        const char *slash = strrchr(input, '/');
        if (!pl)
            hvq_ctx_clear_error(ctx);
        if (pl && strcmp(pl->desc.name, "gguf") == 0)
            cfg[0] = '\0';
        else if (slash)
            snprintf(cfg, n, "%.*s/config.json", (int)(slash - input), input);
        else
            snprintf(cfg, n, "config.json");
    }
    if (!cfg[0] || stat(cfg, &st) != 0 || !S_ISREG(st.st_mode)) {
        free(cfg);
        return NULL;
    }
    return cfg;
}

/* Bytes of an input model: the file, or the .safetensors files of a
 * directory (what the paper's "file" size counts; config.json and the
 * like are not weights). */
static uint64_t input_bytes(const char *input)
{
    struct stat st;
    if (stat(input, &st) != 0)
        return 0;
    if (!S_ISDIR(st.st_mode))
        return (uint64_t)st.st_size;
    uint64_t total = 0;
    DIR *d = opendir(input);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len < 12 || strcmp(e->d_name + len - 12, ".safetensors") != 0)
            continue;
        char path[8192];
        snprintf(path, sizeof path, "%s/%s", input, e->d_name);
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode))
            total += (uint64_t)st.st_size;
    }
    if (d)
        closedir(d);
    return total;
}

/* The perplexity of model as ev declares it. */
static hvq_status eval_model(hvq_ctx *ctx, const hvq_registry *reg, const char *model,
                             const hvq_eval_cfg *ev, const char *config, hvq_eval_result *res)
{
    memset(res, 0, sizeof *res);
    return hvq_eval_model(ctx, reg, model, ev->tokens, (int)ev->ctx, (int)ev->windows, config,
                          res);
}

/* run --eval: the output's perplexity, after the report. */
static hvq_status run_eval(hvq_ctx *ctx, const hvq_registry *reg, const hvq_pipeline *p)
{
    hvq_eval_result res;
    char *cfg = input_config(ctx, reg, p->input);
    hvq_status st = eval_model(ctx, reg, p->output, &p->evaluate, cfg, &res);
    free(cfg);
    if (st == HVQ_OK)
        printf("  perplexity of the output: %.4f on %llu tokens (%llu windows of %d from %s)\n",
               res.ppl, (unsigned long long)res.n_scored, (unsigned long long)res.n_windows,
               res.ctx_len, p->evaluate.tokens);
    return st;
}

/* The evaluation compare applies to every row: the first pipeline's that
 * declares one (NULL: none); warns about pipelines declaring another. */
static const hvq_eval_cfg *compare_eval(hvq_ctx *ctx, hvq_pipeline *const *ps, size_t n)
{
    const hvq_eval_cfg *ev = NULL;
    size_t first = 0;
    for (size_t i = 0; i < n; i++) {
        const hvq_eval_cfg *e = &ps[i]->evaluate;
        if (!e->present)
            continue;
        if (!ev) {
            ev = e;
            first = i;
        } else if (strcmp(e->tokens, ev->tokens) != 0 || e->ctx != ev->ctx ||
                   e->windows != ev->windows) {
            hvq_log(ctx, HVQ_LOG_WARN, "%s declares another evaluate: than %s; every row is "
                    "measured as %s declares, so that the rows compare", ps[i]->path,
                    ps[first]->path, ps[first]->path);
        }
    }
    for (size_t i = 0; ev && i < n; i++)
        if (strcmp(ps[i]->input, ps[0]->input) != 0)
            hvq_log(ctx, HVQ_LOG_WARN, "%s reads another input (%s) than %s (%s); the "
                    "uncompressed row is the latter", ps[i]->path, ps[i]->input, ps[0]->path,
                    ps[0]->input);
    return ev;
}

/* "perplexity": {...} of compare's JSON report. */
static void compare_ppl_json(hvq_buf *b, const hvq_compare_ppl *c, size_t n)
{
    hvq_buf_puts(b, ",\n \"perplexity\": {\"tokens\": ");
    hvq_buf_json_string(b, c->tokens);
    hvq_buf_printf(b, ", \"ctx\": %d, \"windows\": %llu, \"scored_tokens\": %llu, "
                      "\"uncompressed\": {\"input\": ", c->ctx_len,
                   (unsigned long long)c->n_windows, (unsigned long long)c->n_scored);
    hvq_buf_json_string(b, c->input);
    hvq_buf_printf(b, isfinite(c->input_ppl) ? ", \"ppl\": %.6f" : ", \"ppl\": null",
                   c->input_ppl);
    hvq_buf_printf(b, ", \"bpp_file\": %.6f}, \"runs\": [", c->input_bpp_file);
    for (size_t i = 0; i < n; i++)
        hvq_buf_printf(b, isfinite(c->ppl[i]) ? "%s%.6f" : "%snull", i ? ", " : "", c->ppl[i]);
    hvq_buf_puts(b, "]}");
}

/* Removes the temporary directory compare made for the outputs, with
 * every file in it (all written there by its runs: files, shards and
 * indexes). */
static void remove_outputs(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        char *path = strcmp(e->d_name, ".") && strcmp(e->d_name, "..")
                         ? hvq_path_join(dir, e->d_name)
                         : NULL;
        struct stat sb;
        if (path && lstat(path, &sb) == 0 && S_ISREG(sb.st_mode))
            unlink(path);
        free(path);
    }
    if (d)
        closedir(d);
    rmdir(dir);
}

/* What compare works on: its options, the pipelines and their results. */
typedef struct compare_job {
    job_args a;
    size_t n;                /* pipelines */
    char *const *paths;
    hvq_ctx *ctx;
    hvq_registry *reg;
    hvq_pipeline **ps;
    hvq_run_report *reps;
    const hvq_run_report **rp;
    double *ppl;
    char dir[4096];          /* where the outputs go */
    int made_dir;            /* dir is a temporary one, removed at the end */
    const hvq_eval_cfg *ev;  /* the perplexity column, or NULL */
    hvq_compare_ppl cppl;
} compare_job;

/* compare's options into j; -1 to go on, else an exit status. */
static int compare_args(int argc, char **argv, cli *cl, compare_job *j)
{
    static const struct option mine[] = {
        {"keep", required_argument, 0, 'k'}, {"no-eval", no_argument, 0, OPT_NO_EVAL}};
    int rc = job_args_parse(argc, argv, cl, "compare", mine, "i:s:r:k:t:fqvhV", usage_compare,
                            &j->a);
    if (rc >= 0)
        return rc;
    j->n = (size_t)(argc - optind);
    j->paths = argv + optind;
    if (j->n == 0) {
        fprintf(stderr, "hvqconv: error: compare needs at least one pipeline file\n"
                        "Try 'hvqconv compare --help'.\n");
        return HVQ_EXIT_BAD_INPUT;
    }
    if (j->a.keep && !j->a.keep[0]) {
        fprintf(stderr, "hvqconv: error: --keep needs a directory, not an empty name\n"
                        "Try 'hvqconv compare --help'.\n");
        return HVQ_EXIT_BAD_INPUT;
    }
    return -1;
}

/* The directory the outputs go to: --keep's, or a new temporary one. */
static hvq_status compare_workdir(compare_job *j)
{
    if (j->a.keep) {
        snprintf(j->dir, sizeof j->dir, "%s", j->a.keep);
        return HVQ_OK;
    }
    const char *tmp = getenv("TMPDIR");
    snprintf(j->dir, sizeof j->dir, "%s/hvqconv-compare-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(j->dir))
        return hvq_error(j->ctx, HVQ_E_IO, "%s: cannot create: %s", j->dir, strerror(errno));
    j->made_dir = 1;
    return HVQ_OK;
}

/* Pipeline i loaded with compare's overrides, its output numbered in the
 * work directory, no report of its own, and validated. */
static hvq_status compare_load(compare_job *j, size_t i)
{
    hvq_ctx *ctx = j->ctx;
    hvq_status st = hvq_pipeline_load(ctx, j->paths[i], &j->ps[i]);
    hvq_pipeline *p = j->ps[i];
    if (st == HVQ_OK && j->a.input)
        st = set_path(ctx, p, "input", "", j->a.input);
    for (size_t k = 0; st == HVQ_OK && k < j->a.n_sets; k++)
        st = hvq_pipeline_set(ctx, p, j->a.sets[k]);
    if (st == HVQ_OK && j->a.target[0] && p->n_candidates) /* those that allocate */
        st = hvq_pipeline_set(ctx, p, j->a.target);
    if (st == HVQ_OK) {
        const char *out = p->output && *p->output ? p->output : "out";
        const char *base = strrchr(out, '/');
        base = base ? base + 1 : out;
        char *prefix = malloc(strlen(j->dir) + 32);
        if (prefix)
            sprintf(prefix, "%s/%zu-", j->dir, i + 1);
        st = prefix ? set_path(ctx, p, "output", prefix, base)
                    : hvq_error(ctx, HVQ_E_NOMEM, "out of memory");
        free(prefix);
    }
    if (st == HVQ_OK)
        st = hvq_pipeline_set(ctx, p, "report=");
    if (st == HVQ_OK)
        st = hvq_pipeline_validate(ctx, p, j->reg);
    return st;
}

/* The uncompressed input's perplexity, first, so a bad token file stops
 * compare before any pipeline runs. */
static hvq_status compare_eval_input(compare_job *j)
{
    hvq_eval_result eres;
    j->cppl = (hvq_compare_ppl){.ppl = j->ppl, .input_ppl = NAN};
    if (!j->ev)
        return HVQ_OK;
    hvq_status st = eval_model(j->ctx, j->reg, j->ps[0]->input, j->ev, NULL, &eres);
    j->cppl.input = j->ps[0]->input;
    j->cppl.input_ppl = eres.ppl;
    j->cppl.tokens = j->ev->tokens;
    j->cppl.ctx_len = (int)j->ev->ctx;
    j->cppl.n_windows = eres.n_windows;
    j->cppl.n_scored = eres.n_scored;
    return st;
}

/* Each output as written (an hvq container is decoded on the fly); one
 * that cannot be evaluated gets "-" and a warning. */
static void compare_eval_outputs(compare_job *j)
{
    hvq_eval_result eres;
    for (size_t i = 0; j->ev && i < j->n; i++) {
        char *cfg = input_config(j->ctx, j->reg, j->ps[i]->input);
        j->ppl[i] = NAN;
        if (eval_model(j->ctx, j->reg, j->ps[i]->output, j->ev, cfg, &eres) == HVQ_OK)
            j->ppl[i] = eres.ppl;
        else
            hvq_log(j->ctx, HVQ_LOG_WARN, "no perplexity for %s: %s", j->ps[i]->path,
                    hvq_ctx_error(j->ctx));
        free(cfg);
    }
    if (j->ev && j->reps[0].total_params)
        j->cppl.input_bpp_file =
            (double)input_bytes(j->ps[0]->input) * 8.0 / (double)j->reps[0].total_params;
}

/* --report: every run's report and the perplexity column, as one file. */
static hvq_status compare_write_report(compare_job *j)
{
    hvq_ctx *ctx = j->ctx;
    hvq_ctx_name_output(ctx, j->a.report);
    hvq_output *o = hvq_output_open(ctx, j->a.report);
    if (!o)
        return hvq_ctx_status(ctx);
    hvq_buf b;
    hvq_buf_init(&b);
    hvq_buf_puts(&b, "{\"runs\": [\n");
    for (size_t i = 0; i < j->n; i++) {
        if (i)
            hvq_buf_puts(&b, ",\n");
        hvq_report_json(&b, &j->reps[i]);
    }
    hvq_buf_puts(&b, "]");
    if (j->ev)
        compare_ppl_json(&b, &j->cppl, j->n);
    hvq_buf_puts(&b, "}\n");
    hvq_status st = b.oom ? hvq_error(ctx, HVQ_E_NOMEM, "out of memory")
                          : ctx->host->output_write(ctx, o, b.data, b.len);
    hvq_buf_free(&b);
    return st == HVQ_OK ? hvq_outputs_commit(ctx) : st;
}

/* Every pipeline loaded and validated before any runs; then the input's
 * perplexity, the runs, the outputs' perplexities and the report. */
static hvq_status compare_all(compare_job *j, const cli *cl)
{
    hvq_status st = compare_workdir(j);
    for (size_t i = 0; st == HVQ_OK && i < j->n; i++)
        st = compare_load(j, i);
    j->ev = st == HVQ_OK && !j->a.no_eval ? compare_eval(j->ctx, j->ps, j->n) : NULL;
    if (st == HVQ_OK)
        st = compare_eval_input(j);
    hvq_signals_polling(st == HVQ_OK);
    for (size_t i = 0; st == HVQ_OK && i < j->n; i++) {
        if (!cl->opts.quiet)
            fprintf(stderr, "hvqconv: [%zu/%zu] %s\n", i + 1, j->n, j->ps[i]->path);
        st = hvq_run_pipeline(j->ctx, j->reg, j->ps[i], &j->reps[i]);
        j->rp[i] = &j->reps[i];
    }
    hvq_signals_polling(0);
    if (st == HVQ_OK)
        compare_eval_outputs(j);
    if (st == HVQ_OK && j->a.report && *j->a.report)
        st = compare_write_report(j);
    return st;
}

static int cmd_compare(int argc, char **argv, cli *cl)
{
    compare_job j;
    memset(&j, 0, sizeof j);
    int rc = compare_args(argc, argv, cl, &j);
    if (rc >= 0) {
        free(j.a.sets);
        return rc;
    }
    j.ctx = hvq_ctx_new(&cl->opts);
    j.ps = calloc(j.n, sizeof *j.ps);
    j.reps = calloc(j.n, sizeof *j.reps);
    j.rp = calloc(j.n, sizeof *j.rp);
    j.ppl = calloc(j.n, sizeof *j.ppl);
    hvq_status st = HVQ_E_NOMEM;
    if (j.ctx && j.ps && j.reps && j.rp && j.ppl) {
        j.reg = load_registry(j.ctx, cl);
        st = j.reg ? compare_all(&j, cl) : HVQ_E_INTERNAL;
        if (st == HVQ_OK)
            hvq_report_compare(stdout, j.rp, j.n, j.ev ? &j.cppl : NULL);
        else if (j.reg)
            hvq_ctx_print_error(j.ctx);
    }
    if (j.made_dir)
        remove_outputs(j.dir);
    for (size_t i = 0; j.ps && j.reps && i < j.n; i++) {
        hvq_run_report_free(&j.reps[i]);
        hvq_pipeline_free(j.ps[i]);
    }
    free(j.ps);
    free(j.reps);
    free(j.rp);
    free(j.ppl);
    free(j.a.sets);
    hvq_ctx_free(j.ctx);
    hvq_registry_free(j.reg);
    return !j.ctx || !j.ps || !j.reps || !j.rp || !j.ppl ? HVQ_EXIT_OTHER : hvq_exit_for(st);
}

/* The options of a command that takes only the common ones; -1 to go on,
 * else an exit status. */
static int common_args(int argc, char **argv, cli *cl, const char *cmd, void (*usage)(FILE *))
{
    static const struct option lo[] = {
        {"plugin-dir", required_argument, 0, OPT_PLUGIN_DIR}, {"quiet", no_argument, 0, 'q'},
        {"verbose", no_argument, 0, 'v'}, {"help", no_argument, 0, 'h'},
        {"version", no_argument, 0, 'V'}, {0, 0, 0, 0}};
    int c, rc = -1;
    while (rc < 0 && (c = getopt_long(argc, argv, "qvhV", lo, NULL)) != -1)
        rc = parse_common(c, cl, cmd, usage);
    return rc;
}

/* A context and the plugins, for the commands that only list them; NULL
 * (nothing to free) when either cannot be made. */
static hvq_registry *ctx_and_registry(cli *cl, hvq_ctx **ctx)
{
    hvq_registry *reg = NULL;
    if ((*ctx = hvq_ctx_new(&cl->opts)) && !(reg = load_registry(*ctx, cl))) {
        hvq_ctx_free(*ctx);
        *ctx = NULL;
    }
    return reg;
}

static int cmd_list(int argc, char **argv, cli *cl)
{
    int rc = common_args(argc, argv, cl, "list-plugins", usage_list);
    if (rc >= 0)
        return rc;
    if (optind < argc) {
        fprintf(stderr, "hvqconv: error: unexpected argument '%s'\n", argv[optind]);
        return HVQ_EXIT_BAD_INPUT;
    }
    hvq_ctx *ctx;
    hvq_registry *reg = ctx_and_registry(cl, &ctx);
    if (!reg)
        return HVQ_EXIT_OTHER;
    printf("%-12s %-14s %-8s %-58s %s\n", "KIND", "NAME", "VERSION", "SUMMARY", "FROM");
    static const uint32_t order[] = {HVQ_KIND_SOURCE, HVQ_KIND_SINK, HVQ_KIND_HESSIAN,
                                     HVQ_KIND_IMPORTANCE, HVQ_KIND_CLUSTERER,
                                     HVQ_KIND_RESIDUAL, HVQ_KIND_WRITER, HVQ_KIND_MODEL};
    for (size_t o = 0; o < sizeof order / sizeof order[0]; o++)
        for (size_t i = 0; i < hvq_registry_count(reg); i++) {
            const hvq_loaded_plugin *lp = hvq_registry_at(reg, i);
            /* list each plugin once, under its lowest kind */
            if (!(lp->desc.kinds & order[o]) || (lp->desc.kinds & (order[o] - 1)))
                continue;
            char kinds[64];
            printf("%-12s %-14s %-8s %-58s %s\n", hvq_kind_names(lp->desc.kinds, kinds, sizeof kinds),
                   lp->desc.name, lp->desc.version, lp->desc.summary, lp->path);
        }
    hvq_registry_free(reg);
    hvq_ctx_free(ctx);
    return HVQ_EXIT_OK;
}

static void describe_one(const hvq_loaded_plugin *lp)
{
    char kinds[64];
    printf("%s (%s) %s\n  %s\n  licence: %s\n  loaded from: %s\n", lp->desc.name,
           hvq_kind_names(lp->desc.kinds, kinds, sizeof kinds), lp->desc.version,
           lp->desc.summary, lp->desc.license ? lp->desc.license : "unknown", lp->path);
    if (lp->desc.kinds & HVQ_KIND_SINK && lp->desc.extensions)
        printf("  extensions: %s\n", lp->desc.extensions);
    if (lp->desc.kinds & HVQ_KIND_MODEL && lp->desc.architectures)
        printf("  architectures: %s\n", lp->desc.architectures);
    if (lp->desc.flags & HVQ_CLUSTERER_RAW)
        printf("  works on raw weights: no row normalization, no sparse residual\n");
    const hvq_param_spec *ps = lp->desc.params;
    if (!ps || !ps[0].name) {
        printf("  parameters: none\n");
        return;
    }
    printf("  parameters:\n");
    for (size_t i = 0; ps[i].name; i++) {
        const hvq_param_spec *s = &ps[i];
        printf("    %-14s %-7s default: %s", s->name, hvq_param_type_name(s->type),
               s->default_value ? (*s->default_value ? s->default_value : "\"\"")
                                : "(required)");
        if ((s->type == HVQ_PARAM_INT || s->type == HVQ_PARAM_FLOAT || s->type == HVQ_PARAM_SIZE) &&
            !(s->min == 0 && s->max == 0))
            printf(s->type != HVQ_PARAM_FLOAT ? "  range: %.0f..%.0f" : "  range: %g..%g",
                   s->min, s->max);
        if (s->type == HVQ_PARAM_CHOICE) {
            printf("  choices:");
            for (size_t k = 0; s->choices[k]; k++)
                printf("%s%s", k ? "|" : " ", s->choices[k]);
        }
        printf("\n        %s\n", s->help ? s->help : "");
    }
}

static int cmd_describe(int argc, char **argv, cli *cl)
{
    int rc = common_args(argc, argv, cl, "describe", usage_describe);
    if (rc >= 0)
        return rc;
    if (optind + 1 != argc) {
        fprintf(stderr, "hvqconv: error: describe needs one plugin name\n"
                        "Try 'hvqconv describe --help'.\n");
        return HVQ_EXIT_BAD_INPUT;
    }
    const char *name = argv[optind];
    hvq_ctx *ctx;
    hvq_registry *reg = ctx_and_registry(cl, &ctx);
    if (!reg)
        return HVQ_EXIT_OTHER;
    int found = 0;
    for (size_t i = 0; i < hvq_registry_count(reg); i++) {
        const hvq_loaded_plugin *lp = hvq_registry_at(reg, i);
        if (strcmp(lp->desc.name, name) == 0) {
            if (found++)
                putchar('\n');
            describe_one(lp);
        }
    }
    if (!found) {
        const char *near = hvq_registry_suggest(reg, ~0u, name);
        fprintf(stderr, "hvqconv: error: no plugin named '%s'%s%s%s (see hvqconv list-plugins)\n",
                name, near ? "; did you mean '" : "", near ? near : "", near ? "'?" : "");
    }
    hvq_registry_free(reg);
    hvq_ctx_free(ctx);
    return found ? HVQ_EXIT_OK : HVQ_EXIT_BAD_INPUT;
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {
        {"plugin-dir", required_argument, 0, OPT_PLUGIN_DIR}, {"quiet", no_argument, 0, 'q'},
        {"verbose", no_argument, 0, 'v'}, {"help", no_argument, 0, 'h'},
        {"version", no_argument, 0, 'V'}, {0, 0, 0, 0}};
    cli cl;
    memset(&cl, 0, sizeof cl);
    int c, rc = -1;
    hvq_signals_install();
    while (rc < 0 && (c = getopt_long(argc, argv, "+qvhV", lo, NULL)) != -1) {
        if (c == 'h') {
            usage_main(stdout);
            rc = HVQ_EXIT_OK;
        } else {
            rc = parse_common(c, &cl, "", usage_main);
        }
    }
    if (rc < 0 && optind >= argc) {
        usage_main(stderr);
        rc = HVQ_EXIT_BAD_INPUT;
    }
    if (rc < 0) {
        const char *cmd = argv[optind];
        int sub_argc = argc - optind;
        char **sub_argv = argv + optind;
        optind = 0; /* reinitialize getopt for the command's own arguments */
        if (strcmp(cmd, "run") == 0)
            rc = cmd_run(sub_argc, sub_argv, &cl);
        else if (strcmp(cmd, "compare") == 0)
            rc = cmd_compare(sub_argc, sub_argv, &cl);
        else if (strcmp(cmd, "list-plugins") == 0)
            rc = cmd_list(sub_argc, sub_argv, &cl);
        else if (strcmp(cmd, "describe") == 0)
            rc = cmd_describe(sub_argc, sub_argv, &cl);
        else if (strcmp(cmd, "decode") == 0) {
            hvq_signals_polling(1);
            rc = hvq_cmd_decode(sub_argc, sub_argv, cl.plugin_dirs, cl.n_plugin_dirs, &cl.opts);
            hvq_signals_polling(0);
        }
        else if (strcmp(cmd, "convert") == 0) {
            hvq_signals_polling(1);
            rc = hvq_cmd_convert(sub_argc, sub_argv, cl.plugin_dirs, cl.n_plugin_dirs, &cl.opts);
            hvq_signals_polling(0);
        }
        else if (strcmp(cmd, "inspect") == 0)
            rc = hvq_cmd_inspect(sub_argc, sub_argv, cl.plugin_dirs, cl.n_plugin_dirs, &cl.opts);
        else if (strcmp(cmd, "verify") == 0)
            rc = hvq_cmd_verify(sub_argc, sub_argv, cl.plugin_dirs, cl.n_plugin_dirs, &cl.opts);
        else if (strcmp(cmd, "eval") == 0)
            rc = hvq_cmd_eval(sub_argc, sub_argv, cl.plugin_dirs, cl.n_plugin_dirs, &cl.opts);
        else {
            fprintf(stderr, "hvqconv: error: unknown command '%s'\nTry 'hvqconv --help'.\n", cmd);
            rc = HVQ_EXIT_BAD_INPUT;
        }
    }
    free(cl.plugin_dirs);
    return hvq_signals_exit(rc);
}
