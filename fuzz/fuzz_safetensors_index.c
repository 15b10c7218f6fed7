/* Fuzz target: a sharded safetensors model, opened as a directory the way
 * `input: DIR` is: its model.safetensors.index.json and the shards that
 * index names. The input is the index followed by up to three shards,
 * separated by the line "#HVQ-SHARD" (see fuzz/README.md):
 *
 *   INDEX JSON \n#HVQ-SHARD\n a.safetensors \n#HVQ-SHARD\n b.safetensors ...
 *
 * written as model/model.safetensors.index.json, model/a.safetensors,
 * model/b.safetensors and model/c.safetensors (a shard that is not in the
 * input is absent). Every tensor is then read as by `hvqconv run`. */
#include "config.h"

#include "fuzz.h"

#include <string.h>
#include <sys/stat.h>

#define SEP "\n#HVQ-SHARD\n"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    static const char *const plugins[] = {"formats/.libs/safetensors.so", NULL};
    hvq_fuzz_init(plugins);
    mkdir(hvq_fuzz_path("model"), 0700);
    return 0;
}

static const unsigned char *find_sep(const unsigned char *p, size_t n)
{
    size_t m = sizeof SEP - 1;
    for (size_t i = 0; i + m <= n; i++)
        if (p[i] == '\n' && memcmp(p + i, SEP, m) == 0)
            return p + i;
    return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const names[] = {"model/model.safetensors.index.json",
                                        "model/a.safetensors", "model/b.safetensors",
                                        "model/c.safetensors"};
    const unsigned char *p = data, *end = data + size;
    size_t k = 0;
    for (; k < 4 && p != NULL; k++) {
        const unsigned char *s = find_sep(p, (size_t)(end - p));
        size_t len = s ? (size_t)(s - p) : (size_t)(end - p);
        hvq_fuzz_write(names[k], p, len);
        p = s ? s + sizeof SEP - 1 : NULL;
    }
    for (; k < 4; k++)
        hvq_fuzz_unlink(names[k]);
    hvq_fuzz_read_model("safetensors", hvq_fuzz_path("model"));
    return 0;
}
