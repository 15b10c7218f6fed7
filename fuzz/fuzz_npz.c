/* Fuzz target: an .npz archive (zip of .npy members, stored or deflated, through libarchive), read
 * through the npz source plugin exactly as `hvqconv run` reads a model:
 * detection, open, every tensor listed and read in order, converted to
 * float32 when it is a float type, close. */
#include "config.h"

#include "fuzz.h"

HVQ_FUZZ_READ_TARGET("formats/.libs/npz.so", "npz", "input.npz")
