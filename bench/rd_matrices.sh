#!/bin/sh
# Rate-distortion on production-shaped matrices: hvqconv's pipelines against
# llama.cpp's own quantization types, with the same real importance matrix,
# at their true sizes. Not a test. See bench/README.md.
#
#   bench/rd_matrices.sh [--hvq 'PIPELINE [ARGS]']... [--types 'Q4_K_M Q6_K ...']
#                        [--layers 0,11,21] [--seed S] [--imatrix FILE]
#                        [--llamacpp DIR] [--no-llama] [--threads N] [--dir DIR]
#
# The matrices: the seven linear weights (attn_q/k/v/output, ffn_gate/up/down)
# of layers 0, 11 and 21 of a TinyLlama-1.1B-shaped model (hidden 2048, FFN
# 5632, k/v 256x2048), synthesized by bench/synth_model.c (Student-t(5), row
# scales, rare outliers; deterministic from --seed), stored as F16 in a GGUF
# with llama.cpp's names; the Hessian: the real llama.cpp importance matrix
# ../shared/data/imatrix/tinyllama-1.1b.imatrix.dat (H = values / ncall).
#
#   --hvq 'PIPELINE [ARGS]'  an hvqconv pipeline and extra `hvqconv run`
#               arguments (--set KEY=VALUE ...), repeatable; default:
#               pipelines/mid.yaml, pipelines/high-fidelity.yaml and
#               pipelines/int4-g32.yaml; --hvq none runs no hvqconv pipeline
#   --types T   llama.cpp types (default: Q3_K_S Q3_K_M Q4_0 Q4_K_S Q4_K_M
#               IQ4_XS Q5_K_S Q5_K_M Q6_K Q8_0; none: no llama.cpp type)
#   --layers L  the full-size layers (default 0,11,21)
#   --imatrix F default ../shared/data/imatrix/tinyllama-1.1b.imatrix.dat
#   --llamacpp DIR  llama.cpp's tools (default $LLAMACPP_BIN, else
#               /tmp/llamacpp-tools/bin; ../shared/tools/build_llamacpp_tools.sh
#               DIR builds them into DIR/bin); without them the llama.cpp
#               rows are skipped
#   --no-llama  skip llama.cpp's types
#   --threads N threads of hvqconv and llama-quantize (default 2)
#   --dir DIR   work directory (default /tmp/hvqconv-rd); the results go to
#               DIR/rd-matrices.{md,csv,png}
#   HVQCONV=path  use that hvqconv instead of building one
#   PYTHON=path   a python3 with numpy (and matplotlib for the plot)
#   GGUF_PY=dir   llama.cpp's gguf-py (default LLAMACPP_BIN/../src/gguf-py)
set -eu

SRC=$(cd "$(dirname "$0")/.." && pwd)
DIR=/tmp/hvqconv-rd
SEED=1
LAYERS=0,11,21
THREADS=2
TYPES="Q3_K_S Q3_K_M Q4_0 Q4_K_S Q4_K_M IQ4_XS Q5_K_S Q5_K_M Q6_K Q8_0"
IMATRIX=
LLAMACPP_BIN=${LLAMACPP_BIN:-/tmp/llamacpp-tools/bin}
NO_LLAMA=0
HVQ_LIST=
. "$SRC/bench/lib.sh"
while [ $# -gt 0 ]; do
    ! bench_rd_opt "$@" || { shift 2; continue; }
    case $1 in
    --layers) LAYERS=$2; shift ;;
    --seed) SEED=$2; shift ;;
    --imatrix) IMATRIX=$2; shift ;;
    --no-llama) NO_LLAMA=1 ;;
    -h|--help) sed -n '2,$p' "$0" | sed '/^set -eu/,$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench/rd_matrices.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
bench_rd_defaults
[ -n "$IMATRIX" ] || IMATRIX=$SRC/../shared/data/imatrix/tinyllama-1.1b.imatrix.dat
[ -f "$IMATRIX" ] || { echo "bench: no importance matrix $IMATRIX (--imatrix FILE)" >&2; exit 1; }
IMATRIX=$(cd "$(dirname "$IMATRIX")" && pwd)/$(basename "$IMATRIX")
bench_init
bench_python
if [ "$NO_LLAMA" = 1 ]; then HAVE_LLAMA=0; else bench_llamacpp; fi
[ -z "$HVQ_LIST" ] || bench_hvqconv
bench_synth
T0=$(date +%s)

# The model: all 22 layers under llama.cpp's names, so that llama-quantize
# picks each tensor's type exactly as for the real model (the _S/_M mixes
# count layers); the layers not measured have 32 output rows only. hvqconv
# reads the measured layers alone (H.gguf, the same bytes).
M=$DIR/matrices-L$(printf '%s' "$LAYERS" | tr ',' '-')-s$SEED
mkdir -p "$M"
"$PY" "$SRC/bench/rd_tool.py" spec --layers "$LAYERS" >"$M/spec.txt.new"
stamp="$(cksum <"$SRC/bench/synth_model.c") $(cksum <"$SRC/bench/rd_tool.py") $(cksum <"$M/spec.txt.new") $SEED"
if [ ! -f "$M/Q.gguf" ] || [ ! -f "$M/H.gguf" ] || [ "$(cat "$M/stamp" 2>/dev/null)" != "$stamp" ]; then
    rm -f "$M/stamp"
    mv "$M/spec.txt.new" "$M/spec.txt"
    echo "== synthesizing $M" >&2
    "$SYNTH" --spec "$M/spec.txt" --seed "$SEED" --threads "$THREADS" "$M/st" >/dev/null
    "$PY" "$SRC/bench/rd_tool.py" gguf --model "$M/st/model.safetensors" --layers "$LAYERS" \
        --quant-out "$M/Q.gguf" --hvq-out "$M/H.gguf"
    rm -rf "$M/st"
    echo "$stamp" >"$M/stamp"
else
    rm -f "$M/spec.txt.new"
fi

OUT=$DIR/out-matrices
rm -rf "$OUT"
mkdir -p "$OUT/res"
measure() { "$PY" "$SRC/bench/rd_tool.py" measure --ref "$M/H.gguf" --imatrix "$IMATRIX" "$@"; }

if [ "$HAVE_LLAMA" = 1 ]; then
    for t in $TYPES; do
        q=$OUT/$t.gguf
        "$LLAMACPP_BIN/llama-quantize" --imatrix "$IMATRIX" "$M/Q.gguf" "$q" "$t" "$THREADS" \
            >"$OUT/$t.log" 2>&1 ||
            { echo "bench: llama-quantize $t failed, see $OUT/$t.log" >&2; exit 1; }
        measure --gguf "$q" --method "$t" --out "$OUT/res/llama-$t.json"
        rm -f "$q"
    done
fi

printf '%s' "$HVQ_LIST" | while IFS= read -r spec; do
    [ -n "$spec" ] || continue
    rd_hvq "$spec" "$M/H.gguf" "$IMATRIX" "$OUT"
    measure --hvq-report "$OUT/$RD_TAG.json" --decoded "$RD_DECODED" --method "$RD_LABEL" \
        ${RD_CONTAINER:+--container "$RD_CONTAINER"} \
        --out "$OUT/res/hvq-$RD_TAG.json"
    rm -f "$RD_DECODED" "$OUT/$RD_TAG.hvq"
done

set -- "$OUT"/res/*.json
[ -f "$1" ] || { echo "bench: nothing measured" >&2; exit 1; }
echo >&2
"$PY" "$SRC/bench/rd_tool.py" table --y herr \
    --title "TinyLlama-1.1B-shaped layers $LAYERS (synthetic, seed $SEED), real imatrix" \
    --md "$DIR/rd-matrices.md" --csv "$DIR/rd-matrices.csv" --png "$DIR/rd-matrices.png" "$@"
echo >&2
echo "wrote $DIR/rd-matrices.md, .csv, .png in $(( $(date +%s) - T0 )) s" >&2
