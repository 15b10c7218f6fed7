/* Fuzz target: a llama.cpp importance matrix read by the hessian plugin
 * "imatrix" as a pipeline's `hessian: { plugin: imatrix, path: ... }`
 * does: GGUF when the host's detection says so (read by the gguf source
 * format), else the legacy .dat (read by the imatrix-dat source format),
 * validated whole at open; then a few diagonals looked up. */
#include "config.h"

#include "fuzz.h"
#include "params.h"

#include <stdio.h>
#include <string.h>

static const hvq_plugin *g_imx;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    static const char *const plugins[] = {"plugins/.libs/hessian_imatrix.so",
                                          "formats/.libs/gguf.so",
                                          "formats/.libs/imatrix_dat.so", NULL};
    hvq_fuzz_init(plugins);
    const hvq_loaded_plugin *pl =
        hvq_registry_find(hvq_fuzz_registry(), HVQ_KIND_HESSIAN, "imatrix");
    if (!pl)
        hvq_fuzz_fail("the imatrix plugin is not loaded");
    g_imx = &pl->desc;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    hvq_fuzz_begin();
    hvq_ctx *ctx = hvq_fuzz_ctx();
    char path[4096];
    snprintf(path, sizeof path, "%s", hvq_fuzz_write("input.imatrix", data, size));

    /* The parameters as a pipeline gives them: path set, the rest default. */
    hvq_value values[8];
    size_t n = hvq_param_count(g_imx->params);
    if (n > sizeof values / sizeof values[0])
        hvq_fuzz_fail("imatrix declares %zu parameters", n);
    for (size_t i = 0; i < n; i++) {
        const hvq_param_spec *sp = &g_imx->params[i];
        const char *text = strcmp(sp->name, "path") == 0 ? path : sp->default_value;
        char why[256];
        if (!text || hvq_param_parse(sp, text, &values[i], why, sizeof why) != HVQ_OK)
            hvq_fuzz_fail("imatrix parameter '%s': %s", sp->name, text ? why : "no value");
        values[i].is_default = text != path;
    }
    hvq_params params = {n, values, g_imx->params};

    void *state = NULL;
    hvq_status st = g_imx->hessian_open(ctx, &params, "model.safetensors", &state);
    if (st != HVQ_OK) {
        hvq_fuzz_check_error(st, "input.imatrix");
    } else {
        static const char *const names[] = {"blk.0.attn_q.weight",
                                            "model.layers.0.self_attn.q_proj.weight",
                                            "output.weight"};
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
            hvq_tensor_info info = {.name = names[i], .dtype = HVQ_DTYPE_F32, .ndim = 2,
                                    .shape = {48, 64}, .nbytes = 48 * 64 * 4};
            float h[64];
            st = g_imx->hessian_get(ctx, state, &info, 48, 64, h);
            if (st != HVQ_OK)
                hvq_fuzz_check_error(st, "input.imatrix");
        }
    }
    g_imx->hessian_close(ctx, state);
    hvq_fuzz_end();
    return 0;
}
