#!/bin/sh
# Rate-distortion on a real model: stories260K (../shared/data/stories260K)
# quantized by llama.cpp's own types and by hvqconv's pipelines with the same
# importance matrix, every result judged by the same llama-perplexity
# command, sizes by the true stored bytes of the 35 linear weight matrices.
# Not a test. See bench/README.md.
#
#   bench/rd_model.sh [--hvq 'PIPELINE [ARGS]']... [--types 'Q4_0 Q4_K_M ...']
#                     [--data DIR] [--llamacpp DIR] [--ctx N] [--threads N] [--dir DIR]
#
#   --hvq 'PIPELINE [ARGS]'  an hvqconv pipeline and extra `hvqconv run`
#               arguments (--set KEY=VALUE ...), repeatable; default:
#               pipelines/mid.yaml, pipelines/high-fidelity.yaml and
#               pipelines/int4-g32.yaml; --hvq none runs none
#   --types T   llama.cpp types (default: Q3_K_M Q4_0 Q4_K_M Q5_K_M Q6_K Q8_0;
#               none: only the F32 reference and hvqconv)
#   --data DIR  the shared data (default ../shared/data beside the source tree)
#   --llamacpp DIR  llama.cpp's tools (default $LLAMACPP_BIN, else
#               /tmp/llamacpp-tools/bin; ../shared/tools/build_llamacpp_tools.sh
#               DIR builds them into DIR/bin). Needed: the perplexity is
#               llama-perplexity's
#   --ctx N     llama-perplexity's context (default 256)
#   --threads N threads of hvqconv and llama-quantize (default 2);
#               llama-perplexity always runs with -t 1
#   --dir DIR   work directory (default /tmp/hvqconv-rd); the results go to
#               DIR/rd-model.{md,csv,png}
#   HVQCONV, PYTHON, GGUF_PY as for bench/rd_matrices.sh
set -eu

SRC=$(cd "$(dirname "$0")/.." && pwd)
DIR=/tmp/hvqconv-rd
DATA=
CTX=256
THREADS=2
TYPES="Q3_K_M Q4_0 Q4_K_M Q5_K_M Q6_K Q8_0"
LLAMACPP_BIN=${LLAMACPP_BIN:-/tmp/llamacpp-tools/bin}
HVQ_LIST=
. "$SRC/bench/lib.sh"
while [ $# -gt 0 ]; do
    ! bench_rd_opt "$@" || { shift 2; continue; }
    case $1 in
    --data) DATA=$2; shift ;;
    --ctx) CTX=$2; shift ;;
    -h|--help) sed -n '2,$p' "$0" | sed '/^set -eu/,$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench/rd_model.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
bench_rd_defaults
[ -n "$DATA" ] || DATA=$SRC/../shared/data
MODEL=$DATA/stories260K/stories260K.f32.gguf
IMATRIX=$DATA/stories260K/imatrix.gguf
TEXT=$DATA/text/tinystories.txt
for f in "$MODEL" "$IMATRIX" "$TEXT"; do
    [ -f "$f" ] || { echo "bench: no $f (--data DIR: the shared data folder)" >&2; exit 1; }
done
MODEL=$(cd "$(dirname "$MODEL")" && pwd)/$(basename "$MODEL")
IMATRIX=$(dirname "$MODEL")/imatrix.gguf
bench_init
bench_python
[ -x "$LLAMACPP_BIN/llama-perplexity" ] && [ -x "$LLAMACPP_BIN/llama-quantize" ] || {
    echo "bench: rd_model.sh needs llama.cpp's llama-perplexity and llama-quantize in $LLAMACPP_BIN" >&2
    echo "       (set LLAMACPP_BIN or --llamacpp DIR; ../shared/tools/build_llamacpp_tools.sh DIR builds them)" >&2
    exit 1
}
[ -z "$HVQ_LIST" ] || bench_hvqconv
T0=$(date +%s)

OUT=$DIR/out-model
rm -rf "$OUT"
mkdir -p "$OUT/res"

# ppl GGUF LOG: llama-perplexity's final estimate, one thread (-t 1: two
# threads spin against each other on a 2-core machine). llama.cpp's logger
# writes from a thread of its own and sometimes loses the last lines at exit
# (seen here under load: the log stops a chunk short of the estimate, exit
# status 0); then the run is repeated, up to three times in all.
ppl() {
    n=0
    while [ $n -lt 3 ]; do
        n=$((n + 1))
        "$LLAMACPP_BIN/llama-perplexity" -m "$1" -f "$TEXT" -c "$CTX" -t 1 >"$2" 2>&1 ||
            { echo "bench: llama-perplexity failed on $1, see $2" >&2; return 1; }
        v=$(sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p' "$2" | tail -n 1)
        if [ -n "$v" ]; then
            echo "$v"
            return 0
        fi
        echo "bench: no final estimate in $2 (run $n of 3)" >&2
    done
    return 1
}
measure() { "$PY" "$SRC/bench/rd_tool.py" measure --ref "$MODEL" --imatrix "$IMATRIX" "$@"; }

REF_PPL=$(ppl "$MODEL" "$OUT/f32.ppl.log")
echo "F32                                      PPL $REF_PPL" >&2

for t in $TYPES; do
    q=$OUT/$t.gguf
    "$LLAMACPP_BIN/llama-quantize" --imatrix "$IMATRIX" "$MODEL" "$q" "$t" "$THREADS" \
        >"$OUT/$t.log" 2>&1 ||
        { echo "bench: llama-quantize $t failed, see $OUT/$t.log" >&2; exit 1; }
    p=$(ppl "$q" "$OUT/$t.ppl.log")
    measure --gguf "$q" --method "$t" --ppl "$p" --out "$OUT/res/llama-$t.json"
done

printf '%s' "$HVQ_LIST" | while IFS= read -r spec; do
    [ -n "$spec" ] || continue
    rd_hvq "$spec" "$MODEL" "$IMATRIX" "$OUT"
    p=$(ppl "$RD_DECODED" "$OUT/$RD_TAG.ppl.log")
    measure --hvq-report "$OUT/$RD_TAG.json" --decoded "$RD_DECODED" --method "$RD_LABEL" \
        ${RD_CONTAINER:+--container "$RD_CONTAINER"} \
        --ppl "$p" --out "$OUT/res/hvq-$RD_TAG.json"
done

set -- "$OUT"/res/*.json
[ -f "$1" ] || { echo "bench: nothing measured" >&2; exit 1; }
echo >&2
"$PY" "$SRC/bench/rd_tool.py" table --y ppl --ref-ppl "$REF_PPL" \
    --title "stories260K, imatrix.gguf, llama-perplexity -c $CTX on tinystories.txt" \
    --md "$DIR/rd-model.md" --csv "$DIR/rd-model.csv" --png "$DIR/rd-model.png" "$@"
echo >&2
echo "wrote $DIR/rd-model.md, .csv, .png in $(( $(date +%s) - T0 )) s" >&2
