/* Fuzz target: a sharded safetensors model, opened as a directory the way
 * `input: DIR` is: its model.safetensors.index.json and the shards that
 * index names. The input is the index followed by up to three shards,
 * separated by the line "#HVQ-SHARD" (see fuzz/README.md):
 *
 *   INDEX JSON \n#HVQ-SHARD\n a.safetensors \n#HVQ-SHARD\n b.safetensors ...
 *
 * written as model/model.safetensors.index.json, model/a.safetensors,
 * model/b.safetensors and model/c.safetensors (a shard that is not in the
 * input is absent). Every tensor is then read as by `hvqconv run`. The
 * index text also checks the streaming JSON readers against the parser:
 * hvq_json_validate (the GGUF sink's metadata check) gives the parser's
 * verdict and message, and a cursor skips exactly the texts it parses. */
#include "config.h"

#include "fuzz.h"
#include "json.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    static const char *const plugins[] = {"formats/.libs/safetensors.so", NULL};
    hvq_fuzz_init(plugins);
    mkdir(hvq_fuzz_path("model"), 0700);
    return 0;
}

static void json_readers_agree(const char *text, size_t len)
{
    hvq_json_error pe, ve, ce;
    hvq_json_doc *doc = hvq_json_parse(text, len, 0, &pe);
    int valid = hvq_json_validate(text, len, &ve) == 0;
    if (valid != (doc != NULL) || (!valid && strcmp(pe.message, ve.message) != 0))
        abort();
    hvq_json_cursor *c = hvq_json_cursor_new(text, len);
    if (c && doc && (hvq_json_cursor_skip(c, &ce) != 0 || hvq_json_cursor_peek(c) != 0))
        abort();
    hvq_json_cursor_free(c);
    hvq_json_free(doc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const names[] = {"model/model.safetensors.index.json",
                                        "model/a.safetensors", "model/b.safetensors",
                                        "model/c.safetensors"};
    const unsigned char *piece[4];
    size_t len[4], n = hvq_fuzz_split(data, size, 4, piece, len), k;
    if (n > 0)
        json_readers_agree((const char *)piece[0], len[0]);
    for (k = 0; k < n; k++)
        hvq_fuzz_write(names[k], piece[k], len[k]);
    for (; k < 4; k++)
        hvq_fuzz_unlink(names[k]);
    hvq_fuzz_read_model("safetensors", hvq_fuzz_path("model"));
    return 0;
}
