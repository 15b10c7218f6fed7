/* Fuzz target: an hvq container (docs/FORMAT.md) read the way `hvqconv
 * inspect` and `hvqconv decode` read it: opened and validated by the source
 * plugin "hvq" (the whole "hvq.tensors" index against the stored
 * tensors), every tensor's CRC-32 checked, pass-through tensors read raw,
 * and every tensor decoded to float32 (compressed ones through the
 * clusterer and residual plugins the container names).
 *
 * An input holding the line "#HVQ-SHARD" is a sharded container: the
 * index, then up to three shards, each after a separator line,
 *
 *   INDEX JSON \n#HVQ-SHARD\n shard 1 \n#HVQ-SHARD\n shard 2 ...
 *
 * written as shards/m.hvq.index.json and shards/m-0000K-of-0000N.hvq
 * (N: the number of shards in the input) and opened as hvqconv opens the
 * directory. */
#include "config.h"

#include "container.h"
#include "dtype.h"
#include "fuzz.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    static const char *const plugins[] = {
        "formats/.libs/safetensors.so",      "formats/.libs/hvq_reader.so",
        "plugins/.libs/clusterer_rtn.so",
        "plugins/.libs/clusterer_kmeans.so", "plugins/.libs/residual_coo16.so",
        "plugins/.libs/residual_none.so",    "plugins/.libs/clusterer_ecsq.so",
        NULL};
    hvq_fuzz_init(plugins);
    mkdir(hvq_fuzz_path("shards"), 0700);
    return 0;
}

/* The input as one file (input.hvq) or as a sharded container (shards/);
 * returns the path to open and sets *what to the name every message about
 * it must contain. */
static const char *write_input(const uint8_t *data, size_t size, const char **what)
{
    const unsigned char *piece[4];
    size_t len[4], n = hvq_fuzz_split(data, size, 4, piece, len);
    /* Shards of an earlier input. */
    char name[64];
    for (int t = 1; t <= 3; t++)
        for (int k = 1; k <= t; k++) {
            snprintf(name, sizeof name, "shards/m-%05d-of-%05d.hvq", k, t);
            hvq_fuzz_unlink(name);
        }
    if (n == 1) {
        *what = "input.hvq";
        return hvq_fuzz_write("input.hvq", data, size);
    }
    for (size_t k = 1; k < n; k++) {
        snprintf(name, sizeof name, "shards/m-%05zu-of-%05zu.hvq", k, n - 1);
        hvq_fuzz_write(name, piece[k], len[k]);
    }
    *what = "shards/m";
    return hvq_fuzz_write("shards/m.hvq.index.json", piece[0], len[0]);
}

static volatile float g_sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    hvq_fuzz_begin();
    hvq_ctx *ctx = hvq_fuzz_ctx();
    hvq_container *c = NULL;
    const char *what;
    const char *path = write_input(data, size, &what);
    hvq_status st = hvq_container_open(ctx, hvq_fuzz_registry(), path, &c);
    if (st != HVQ_OK) {
        if (c)
            hvq_fuzz_fail("hvq_container_open failed but returned a container");
        hvq_fuzz_check_error(st, what);
        hvq_fuzz_end();
        return 0;
    }
    /* What inspect prints. */
    static const char *const keys[] = {"hvq.producer", "hvq.pipeline", "hvq.plugins", NULL};
    size_t sum = 0;
    for (size_t k = 0; keys[k]; k++) {
        const char *v = hvq_container_meta(c, keys[k]);
        sum += v ? strlen(v) : 0;
    }
    const hvq_meta *meta;
    size_t nm;
    hvq_container_source_meta(c, &meta, &nm);
    for (size_t i = 0; i < nm; i++)
        sum += strlen(meta[i].key) + strlen(meta[i].value);
    (void)hvq_container_file_size(c);

    size_t n = hvq_container_count(c);
    for (size_t i = 0; i < n; i++) {
        const hvq_container_tensor *t = hvq_container_info(c, i);
        if (!t || !t->name || !t->dtype_name)
            hvq_fuzz_fail("tensor %zu of %zu has no description", i, n);
        sum += strlen(t->name) + strlen(t->dtype_name) + t->n_stored;
        if (t->compressed) {
            sum += strlen(t->clusterer.plugin) + strlen(t->residual.plugin);
            for (size_t a = 0; a < t->clusterer.n_attrs; a++)
                sum += strlen(t->clusterer.attrs[a].value);
            for (size_t a = 0; a < t->residual.n_attrs; a++)
                sum += strlen(t->residual.attrs[a].value);
        }
        st = hvq_container_verify(ctx, c, i);
        if (st != HVQ_OK) {
            hvq_fuzz_check_error(st, what);
            continue;
        }
        if (!t->compressed) {
            hvq_tensor raw;
            if ((st = hvq_container_read_raw(ctx, c, i, &raw)) != HVQ_OK) {
                hvq_fuzz_check_error(st, what);
                continue;
            }
            hvq_fuzz_check_tensor(&raw.info, raw.data, 1);
            if (!hvq_dtype_is_float(raw.info.dtype))
                continue;
        }
        /* decode allocates numel floats per tensor, as here */
        float *out = malloc((size_t)(t->numel ? t->numel : 1) * sizeof *out);
        if (!out)
            hvq_fuzz_fail("tensor '%s': cannot allocate %llu floats", t->name,
                          (unsigned long long)t->numel);
        st = hvq_container_read_decoded(ctx, c, i, out);
        if (st != HVQ_OK)
            hvq_fuzz_check_error(st, what);
        else if (t->numel)
            g_sink = out[0] + out[t->numel - 1];
        free(out);
    }
    g_sink = (float)sum;
    hvq_container_close(ctx, c);
    hvq_fuzz_end();
    return 0;
}
