# The `convert` command (core): a model between formats and layouts without
# compression; the Llama mapping is the model plugin's (plugins/model-llama,
# convert*.c and tok_gguf.c). Its tests run the real binary and, compiled
# in like test_eval does, the plugin's mapping pieces.
libhvqcore_la_SOURCES += core/cmd_convert.c
