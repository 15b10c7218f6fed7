/* Fuzz target: an .npz archive (zip of .npy members, stored or deflated, through libarchive), read
 * through the npz source plugin exactly as `hvqconv run` reads a model:
 * detection, open, every tensor listed and read in order, converted to
 * float32 when it is a float type, close. */
#include "config.h"

#include "fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    static const char *const plugins[] = {"formats/.libs/npz.so", NULL};
    hvq_fuzz_init(plugins);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    hvq_fuzz_read_model("npz", hvq_fuzz_write("input.npz", data, size));
    return 0;
}
