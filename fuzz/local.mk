# Fuzz targets for every parser of untrusted input (see fuzz/README.md).
# With configure --enable-fuzzing (clang) they are libFuzzer programs built
# by `make` (or `make fuzz`) and run by fuzz/run.sh; otherwise `make check`
# builds them with fuzz/standalone.c and runs each over its committed seeds
# (fuzz/corpus/NAME/) and every input that once crashed it
# (fuzz/regress/NAME/).
FUZZ_PROGS = \
	fuzz/fuzz_safetensors \
	fuzz/fuzz_safetensors_index \
	fuzz/fuzz_gguf \
	fuzz/fuzz_npy \
	fuzz/fuzz_npz \
	fuzz/fuzz_imatrix \
	fuzz/fuzz_yaml \
	fuzz/fuzz_hvq \
	fuzz/fuzz_tokenizer

# Shared by every target; no per-target compiler flags, so each object is
# built once.
FUZZ_COMMON = fuzz/fuzz.c fuzz/fuzz.h
if FUZZING
noinst_PROGRAMS += $(FUZZ_PROGS)
else
FUZZ_COMMON += fuzz/standalone.c
check_PROGRAMS += $(FUZZ_PROGS)
TESTS += $(FUZZ_PROGS)
endif
FUZZ_LDADD = libhvqcore.la

fuzz_fuzz_safetensors_SOURCES = fuzz/fuzz_safetensors.c $(FUZZ_COMMON)
fuzz_fuzz_safetensors_LDADD = $(FUZZ_LDADD)
fuzz_fuzz_safetensors_LDFLAGS = $(FUZZ_LDFLAGS)
fuzz_fuzz_safetensors_index_SOURCES = fuzz/fuzz_safetensors_index.c $(FUZZ_COMMON)
fuzz_fuzz_safetensors_index_LDADD = $(FUZZ_LDADD)
fuzz_fuzz_safetensors_index_LDFLAGS = $(FUZZ_LDFLAGS)
fuzz_fuzz_gguf_SOURCES = fuzz/fuzz_gguf.c $(FUZZ_COMMON)
fuzz_fuzz_gguf_LDADD = $(FUZZ_LDADD)
fuzz_fuzz_gguf_LDFLAGS = $(FUZZ_LDFLAGS)
fuzz_fuzz_npy_SOURCES = fuzz/fuzz_npy.c $(FUZZ_COMMON)
fuzz_fuzz_npy_LDADD = $(FUZZ_LDADD)
fuzz_fuzz_npy_LDFLAGS = $(FUZZ_LDFLAGS)
fuzz_fuzz_npz_SOURCES = fuzz/fuzz_npz.c $(FUZZ_COMMON)
fuzz_fuzz_npz_LDADD = $(FUZZ_LDADD)
fuzz_fuzz_npz_LDFLAGS = $(FUZZ_LDFLAGS)
fuzz_fuzz_imatrix_SOURCES = fuzz/fuzz_imatrix.c $(FUZZ_COMMON)
fuzz_fuzz_imatrix_LDADD = $(FUZZ_LDADD)
fuzz_fuzz_imatrix_LDFLAGS = $(FUZZ_LDFLAGS)
fuzz_fuzz_yaml_SOURCES = fuzz/fuzz_yaml.c $(FUZZ_COMMON)
fuzz_fuzz_yaml_LDADD = $(FUZZ_LDADD)
fuzz_fuzz_yaml_LDFLAGS = $(FUZZ_LDFLAGS)
fuzz_fuzz_hvq_SOURCES = fuzz/fuzz_hvq.c $(FUZZ_COMMON)
fuzz_fuzz_hvq_LDADD = $(FUZZ_LDADD)
fuzz_fuzz_hvq_LDFLAGS = $(FUZZ_LDFLAGS)
fuzz_fuzz_tokenizer_SOURCES = fuzz/fuzz_tokenizer.c $(FUZZ_COMMON)
fuzz_fuzz_tokenizer_LDADD = $(FUZZ_LDADD)
fuzz_fuzz_tokenizer_LDFLAGS = $(FUZZ_LDFLAGS)

# `make fuzz`: the targets and the plugins they load.
fuzz: $(plugin_LTLIBRARIES) $(FUZZ_PROGS:=$(EXEEXT))
.PHONY: fuzz

EXTRA_DIST += fuzz/README.md fuzz/run.sh fuzz/make_seeds.py fuzz/corpus fuzz/regress \
	fuzz/safetensors.dict fuzz/gguf.dict fuzz/npy.dict fuzz/yaml.dict fuzz/hvq.dict
