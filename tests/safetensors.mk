# The JSON parser and the typed-metadata lookups (common/).
check_PROGRAMS += tests/test_json
tests_test_json_SOURCES = tests/test_json.c
tests_test_json_CFLAGS = $(HVQ_TEST_CFLAGS)
tests_test_json_LDADD = libhvqjson.la $(HVQ_TEST_LIBS)
TESTS += tests/test_json

# The safetensors plugin.
check_PROGRAMS += tests/test_safetensors
tests_test_safetensors_SOURCES = tests/test_safetensors.c
tests_test_safetensors_CFLAGS = $(HVQ_TEST_CFLAGS)
tests_test_safetensors_LDADD = libhvqjson.la $(HVQ_TEST_LIBS)
TESTS += tests/test_safetensors

EXTRA_DIST += tests/data/safetensors

# Sharded outputs: the safetensors sink, the dequant and hvq writers, decode.
check_PROGRAMS += tests/test_shard
tests_test_shard_SOURCES = tests/test_shard.c
tests_test_shard_CFLAGS = $(HVQ_TEST_CFLAGS)
tests_test_shard_LDADD = libhvqjson.la $(HVQ_TEST_LIBS)
TESTS += tests/test_shard
