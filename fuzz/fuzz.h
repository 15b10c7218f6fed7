/* Shared code of the fuzz targets (fuzz/fuzz_*.c): one quiet context, a
 * registry holding only the plugins a target drives (loaded from the build
 * tree, as `hvqconv` loads them), a private scratch directory (on /dev/shm
 * when it is there) the input is written to, and the loop that reads a
 * model through a source plugin the way the driver does.
 *
 * Every target defines LLVMFuzzerInitialize (loads its plugins before the
 * first input, so libFuzzer sees their coverage) and
 * LLVMFuzzerTestOneInput. They run under libFuzzer (configure
 * --enable-fuzzing) or under fuzz/standalone.c, which replays the committed
 * seeds and regression inputs in `make check`.
 *
 * A target aborts (a crash the fuzzer records) when a parser breaks its
 * contract without a memory error: a failure without an error message, a
 * message that does not name the file, a tensor whose size does not match
 * its dtype and shape. */
#ifndef HVQ_FUZZ_H
#define HVQ_FUZZ_H

#include "ctx.h"
#include "registry.h"

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Creates the context, the scratch directory and a registry with the
 * plugins named (file names of the build tree relative to its top, e.g.
 * "formats/.libs/gguf.so"; NULL-terminated; NULL loads every plugin of the
 * build tree). Exits the process when that fails: the harness is broken,
 * not the input. */
void hvq_fuzz_init(const char *const *plugins);

/* The context of the current input: hvq_fuzz_begin creates it (with the
 * registry), hvq_fuzz_end frees it; every input runs between the two. */
void hvq_fuzz_begin(void);
void hvq_fuzz_end(void);
hvq_ctx *hvq_fuzz_ctx(void);
hvq_registry *hvq_fuzz_registry(void);

/* "SCRATCH/name" (static buffer, valid until the next call). */
const char *hvq_fuzz_path(const char *name);

/* Writes n bytes to SCRATCH/name and returns its path (as hvq_fuzz_path). */
const char *hvq_fuzz_write(const char *name, const void *data, size_t n);

/* Removes SCRATCH/name if it exists. */
void hvq_fuzz_unlink(const char *name);

/* Inputs of several files (a sharded model): the pieces are separated by
 * this line. */
#define HVQ_FUZZ_SEP "\n#HVQ-SHARD\n"

/* Splits data at HVQ_FUZZ_SEP into at most max (>= 1) pieces, dropping
 * whatever follows a separator after the last one; returns how many, at
 * least 1. */
size_t hvq_fuzz_split(const unsigned char *data, size_t size, size_t max,
                      const unsigned char **piece, size_t *len);

/* Checks what a failed call left on the context: a status that is one of
 * the documented ones and a message naming `what` (a file name). Aborts
 * with the message otherwise. Clears the error. */
void hvq_fuzz_check_error(hvq_status st, const char *what);

/* Checks one tensor description (ndim, shape, nbytes against dtype and
 * shape, a name) and, when has_data, touches every byte of data (so a
 * read past the data faults under ASan or as SIGSEGV). */
void hvq_fuzz_check_tensor(const hvq_tensor_info *info, const void *data, int has_data);

/* Opens path with the loaded source plugin `name` (probe, source_open,
 * count, info, meta, every tensor read in order, each converted to float32
 * when it is a float type, close), as the driver reads a model; in a
 * context of its own (it calls hvq_fuzz_begin and hvq_fuzz_end). */
void hvq_fuzz_read_model(const char *source, const char *path);

/* A target that reads one file of a format as `hvqconv run` does: loads
 * the plugin (a file of the build tree), writes the input as SCRATCH/name
 * and reads it with hvq_fuzz_read_model. */
#define HVQ_FUZZ_READ_TARGET(plugin_file, format, name)                      \
    int LLVMFuzzerInitialize(int *argc, char ***argv)                         \
    {                                                                         \
        (void)argc;                                                           \
        (void)argv;                                                           \
        static const char *const plugins[] = {plugin_file, NULL};             \
        hvq_fuzz_init(plugins);                                               \
        return 0;                                                             \
    }                                                                         \
    int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)              \
    {                                                                         \
        hvq_fuzz_read_model(format, hvq_fuzz_write(name, data, size));        \
        return 0;                                                             \
    }

/* Aborts with a message (a contract violation found by a target). */
void hvq_fuzz_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#endif
