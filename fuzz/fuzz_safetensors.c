/* Fuzz target: a safetensors file (header and data), read
 * through the safetensors source plugin exactly as `hvqconv run` reads a model:
 * detection, open, every tensor listed and read in order, converted to
 * float32 when it is a float type, close. */
#include "config.h"

#include "fuzz.h"

HVQ_FUZZ_READ_TARGET("formats/.libs/safetensors.so", "safetensors", "input.safetensors")
