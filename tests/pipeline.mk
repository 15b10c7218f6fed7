# Pipelines: YAML loading, --set, validation, overrides, typed parameters.
check_PROGRAMS += tests/test_pipeline
tests_test_pipeline_SOURCES = tests/test_pipeline.c
tests_test_pipeline_CFLAGS = $(HVQ_TEST_CFLAGS)
tests_test_pipeline_LDADD = $(HVQ_TEST_LIBS)
TESTS += tests/test_pipeline
EXTRA_DIST += \
	tests/data/pipelines/full.yaml \
	tests/data/pipelines/minimal.yaml \
	tests/data/pipelines/syntax-error.yaml \
	tests/data/pipelines/unknown-key.yaml \
	tests/data/pipelines/writer-override.yaml
