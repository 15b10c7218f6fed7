/* Fuzz target: the tokenizer files `hvqconv convert` reads into a GGUF
 * vocabulary, through the llama model plugin's convert_open as convert
 * calls it for a Hugging Face directory: an input that starts with '{' is
 * the directory's tokenizer.json (byte-level BPE), anything else its
 * tokenizer.model (a SentencePiece protobuf). Then the metadata the GGUF
 * output would get is listed. */
#include "config.h"

#include "fuzz.h"

#include <stdio.h>
#include <string.h>

static const hvq_plugin *g_llama;

static const char CONFIG[] =
    "{\"model_type\": \"llama\", \"hidden_size\": 64, \"intermediate_size\": 172, "
    "\"num_hidden_layers\": 1, \"num_attention_heads\": 8, \"num_key_value_heads\": 4, "
    "\"vocab_size\": 512, \"bos_token_id\": 1, \"eos_token_id\": 2}";

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    static const char *const plugins[] = {"plugins/.libs/model_llama.so", NULL};
    hvq_fuzz_init(plugins);
    const hvq_loaded_plugin *pl = hvq_registry_find(hvq_fuzz_registry(), HVQ_KIND_MODEL, "llama");
    if (!pl || !pl->desc.convert_open)
        hvq_fuzz_fail("the llama model plugin (with convert) is not loaded");
    g_llama = &pl->desc;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    hvq_fuzz_begin();
    hvq_ctx *ctx = hvq_fuzz_ctx();
    int json = size > 0 && data[0] == '{';
    hvq_fuzz_unlink("tokenizer.json");
    hvq_fuzz_unlink("tokenizer.model");
    const char *file = json ? "tokenizer.json" : "tokenizer.model";
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", hvq_fuzz_write(file, data, size));
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = '\0';
    hvq_convert_setup su = {1, dir, CONFIG, "config.json", NULL, 0, dir, NULL, NULL, 0,
                            HVQ_DTYPE_F32};
    void *state = NULL;
    hvq_status st = g_llama->convert_open(ctx, &su, &state);
    if (st != HVQ_OK) {
        hvq_fuzz_check_error(st, file);
    } else {
        const hvq_meta *meta;
        size_t n;
        if (g_llama->convert_meta(ctx, state, &meta, &n) != HVQ_OK)
            hvq_fuzz_fail("convert_meta failed after convert_open succeeded");
        for (size_t i = 0; i < n; i++)
            if (!meta[i].key || !meta[i].value)
                hvq_fuzz_fail("metadata entry %zu is incomplete", i);
    }
    g_llama->convert_close(ctx, state);
    hvq_fuzz_end();
    return 0;
}
