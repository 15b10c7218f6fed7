/* Fuzz target: a YAML pipeline, loaded and validated against the real
 * registry (every plugin of the build tree) as `hvqconv run` does before
 * any work starts; then the per-tensor stage resolution (overrides) and
 * the selection are queried, and the effective pipeline the outputs record
 * (hvq_pipeline_to_yaml) must load and validate again to the same text. */
#include "config.h"

#include "fuzz.h"
#include "pipeline.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    hvq_fuzz_init(NULL);
    return 0;
}

/* The text after the first line (the first line is a comment naming the
 * file the pipeline came from). */
static const char *body(const char *yaml)
{
    const char *nl = strchr(yaml, '\n');
    return nl ? nl + 1 : yaml;
}

static void query(hvq_ctx *ctx, const hvq_pipeline *p)
{
    static const char *const names[] = {"model.layers.0.mlp.down_proj.weight",
                                        "model.norm.weight", "lm_head.weight", ""};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        (void)hvq_pipeline_selects(p, names[i]);
        for (int s = 0; s < HVQ_STAGE_COUNT; s++) {
            const hvq_loaded_plugin *pl = NULL;
            hvq_params par;
            hvq_status st = hvq_pipeline_stage_for(ctx, p, s, names[i], &pl, &par);
            if (st != HVQ_OK)
                hvq_fuzz_fail("stage_for(%s, %s) of a validated pipeline: %s",
                              hvq_stage_name(s), names[i], hvq_ctx_error(ctx));
            if (!pl || (par.count && !par.values))
                hvq_fuzz_fail("stage_for(%s, %s): no plugin or values", hvq_stage_name(s),
                              names[i]);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    hvq_fuzz_begin();
    hvq_ctx *ctx = hvq_fuzz_ctx();
    hvq_pipeline *p = NULL;
    hvq_status st = hvq_pipeline_load(ctx, hvq_fuzz_write("input.yaml", data, size), &p);
    if (st != HVQ_OK) {
        if (p)
            hvq_fuzz_fail("hvq_pipeline_load failed but returned a pipeline");
        hvq_fuzz_check_error(st, "input.yaml");
        hvq_fuzz_end();
        return 0;
    }
    char *before = hvq_pipeline_to_yaml(p);
    st = hvq_pipeline_validate(ctx, p, hvq_fuzz_registry());
    if (st != HVQ_OK) {
        hvq_fuzz_check_error(st, "input.yaml");
        free(before);
        hvq_pipeline_free(p);
        hvq_fuzz_end();
        return 0;
    }
    query(ctx, p);
    char *yaml = hvq_pipeline_to_yaml(p);
    if (!yaml || !before)
        hvq_fuzz_fail("hvq_pipeline_to_yaml returned NULL");
    hvq_pipeline *q = NULL;
    st = hvq_pipeline_load(ctx, hvq_fuzz_write("effective.yaml", yaml, strlen(yaml)), &q);
    if (st == HVQ_OK)
        st = hvq_pipeline_validate(ctx, q, hvq_fuzz_registry());
    if (st != HVQ_OK)
        hvq_fuzz_fail("the effective pipeline does not load again: %s\n--- it reads:\n%s",
                      hvq_ctx_error(ctx), yaml);
    char *again = hvq_pipeline_to_yaml(q);
    if (!again || strcmp(body(again), body(yaml)) != 0)
        hvq_fuzz_fail("the effective pipeline changes when loaded again:\n--- first:\n%s\n"
                      "--- then:\n%s", yaml, again ? again : "(null)");
    free(again);
    free(yaml);
    free(before);
    hvq_pipeline_free(q);
    hvq_pipeline_free(p);
    hvq_fuzz_end();
    return 0;
}
