/* hessian "file": per-tensor Hessian diagonals from a model-format file
 * (safetensors now; any format hvqconv reads), one 1-D float tensor per
 * weight, keyed by the weight's name. A key without the ".weight" suffix
 * (a module name, as PyTorch forward hooks see it) is accepted too.
 *
 * What a PyTorch user exports, H being {module name: mean of x^2 per input
 * column} collected with forward hooks:
 *
 *   from safetensors.torch import save_file
 *   save_file({k: v.float().contiguous() for k, v in H.items()}, "hessian.safetensors")
 *
 * A tensor without a diagonal gets H = 1 (missing: uniform; one warning at
 * the end lists them) or stops the run (missing: error). A diagonal whose
 * length is not the tensor's input dimension, or holding a negative, NaN or
 * infinite value, is an error naming both.
 */
#include "plugin.h"

#include "checked.h"
#include "names.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

enum { P_PATH, P_MISSING };

static const char *const missing_choices[] = {"error", "uniform", NULL};

static const hvq_param_spec file_params[] = {
    {"path", HVQ_PARAM_PATH, NULL, 0, 0, NULL,
     "file of diagonals: one 1-D tensor per weight, named like the weight"},
    {"missing", HVQ_PARAM_CHOICE, "error", 0, 0, missing_choices,
     "a tensor with no diagonal in the file: stop (error) or use H = 1 (uniform)"},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

typedef struct file_state {
    hvq_model *model;
    char *path;
    int uniform_if_missing;
    hvq_names missing; /* tensors without H */
} file_state;

static void file_close(hvq_ctx *ctx, void *state);

static hvq_status file_open(hvq_ctx *ctx, const hvq_params *params, const char *model_path,
                            void **state)
{
    const hvq_host *H = ctx->host;
    (void)model_path;
    file_state *s = H->calloc(ctx, 1, sizeof *s);
    if (!s)
        return HVQ_E_NOMEM;
    *state = s;
    s->uniform_if_missing = strcmp(params->values[P_MISSING].s, "uniform") == 0;
    if (!(s->path = H->strdup(ctx, params->values[P_PATH].s)))
        return HVQ_E_NOMEM;
    if (!(s->model = H->model_open(ctx, s->path))) {
        hvq_status st = H->status(ctx);
        return st == HVQ_OK ? HVQ_E_INPUT : st;
    }
    return HVQ_OK;
}

static hvq_status file_get(hvq_ctx *ctx, void *state, const hvq_tensor_info *t, uint64_t rows,
                           uint64_t cols, float *h)
{
    const hvq_host *H = ctx->host;
    file_state *s = state;
    (void)rows;
    hvq_tensor d;
    hvq_status st = H->model_find(ctx, s->model, t->name, &d);
    size_t n = strlen(t->name);
    if (st == HVQ_E_NOTFOUND && n > 7 && hvq_ends_with(t->name, ".weight")) {
        char key[1024];
        snprintf(key, sizeof key, "%.*s", (int)(n - 7), t->name);
        st = H->model_find(ctx, s->model, key, &d);
    }
    if (st == HVQ_E_NOTFOUND) {
        if (!s->uniform_if_missing)
            return H->error(ctx, HVQ_E_INPUT,
                            "%s: no Hessian diagonal for tensor '%s' (set missing: uniform "
                            "to use H = 1 for it)",
                            s->path, t->name);
        if ((st = hvq_names_add(ctx, &s->missing, t->name)) != HVQ_OK)
            return st;
        for (uint64_t j = 0; j < cols; j++)
            h[j] = 1.0f;
        return HVQ_OK;
    }
    if (st != HVQ_OK)
        return st;
    uint64_t len = d.info.ndim == 1 ? (uint64_t)d.info.shape[0] : 0;
    if (d.info.ndim != 1 || len != cols)
        return H->error(ctx, HVQ_E_INPUT,
                        "%s: the diagonal for tensor '%s' has %llu values in %d dimension(s); "
                        "the tensor has %llu input columns",
                        s->path, t->name, (unsigned long long)hvq_numel(&d.info), d.info.ndim,
                        (unsigned long long)cols);
    if (H->convert(ctx, HVQ_DTYPE_F32, h, d.info.dtype, d.data, (size_t)cols) != HVQ_OK)
        return H->error(ctx, HVQ_E_INPUT,
                        "%s: the diagonal for tensor '%s' is %s, not a float type", s->path,
                        t->name, d.info.dtype_name ? d.info.dtype_name : "?");
    for (uint64_t j = 0; j < cols; j++)
        if (!(h[j] >= 0.0f) || isinf(h[j]))
            return H->error(ctx, HVQ_E_INPUT,
                            "%s: the diagonal for tensor '%s' has the invalid value %g at %llu",
                            s->path, t->name, (double)h[j], (unsigned long long)j);
    return HVQ_OK;
}

static void file_close(hvq_ctx *ctx, void *state)
{
    file_state *s = state;
    if (!s)
        return;
    if (s->missing.n) {
        char list[10 * 160 + 64];
        hvq_names_list(&s->missing, 10, list, sizeof list);
        ctx->host->log(ctx, HVQ_LOG_WARN,
                       "%s: no Hessian diagonal for %zu tensor(s), H = 1 used: %s", s->path,
                       s->missing.n, list);
    }
    if (s->model)
        ctx->host->model_close(ctx, s->model);
    hvq_names_free(ctx, &s->missing);
    ctx->host->free(s->path);
    ctx->host->free(s);
}

static const hvq_plugin file_plugin = {
    HVQ_PLUGIN_HEADER,
    .kinds = HVQ_KIND_HESSIAN,
    .name = "file",
    .version = "1.0.0",
    .summary = "Hessian diagonals from a file of 1-D tensors keyed by weight name",
    .license = "MIT",
    .params = file_params,
    .hessian_open = file_open,
    .hessian_get = file_get,
    .hessian_close = file_close,
};

HVQ_REGISTER_PLUGIN(file_plugin)
