/* Fuzz target: a GGUF file (v2/v3: header, metadata, tensor infos, data; quantized types dequantized on read), read
 * through the gguf source plugin exactly as `hvqconv run` reads a model:
 * detection, open, every tensor listed and read in order, converted to
 * float32 when it is a float type, close. */
#include "config.h"

#include "fuzz.h"

HVQ_FUZZ_READ_TARGET("formats/.libs/gguf.so", "gguf", "input.gguf")
