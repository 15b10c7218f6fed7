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
# The effective-pipeline text, byte for byte (tests/test_pipeline.c,
# emit_golden).
EXTRA_DIST += \
	tests/data/pipeline-emit/adversarial.yaml \
	tests/data/pipeline-emit/validated.yaml \
	tests/data/pipeline-emit/adversarial-set.expected \
	tests/data/pipeline-emit/adversarial.expected \
	tests/data/pipeline-emit/best-fast.expected \
	tests/data/pipeline-emit/best.expected \
	tests/data/pipeline-emit/full.expected \
	tests/data/pipeline-emit/high-fidelity.expected \
	tests/data/pipeline-emit/int4-g128.expected \
	tests/data/pipeline-emit/int4-g32.expected \
	tests/data/pipeline-emit/int4-rtn.expected \
	tests/data/pipeline-emit/mid.expected \
	tests/data/pipeline-emit/minimal-set.expected \
	tests/data/pipeline-emit/minimal.expected \
	tests/data/pipeline-emit/q4_0.expected \
	tests/data/pipeline-emit/q4_1.expected \
	tests/data/pipeline-emit/q8_0.expected \
	tests/data/pipeline-emit/validated.expected
