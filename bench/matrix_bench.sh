#!/bin/sh
# The per-matrix benchmark: one 2048x2048 and one 8192x2048 matrix (the
# synthetic model's statistics, bench/synth_model.c --matrix) compressed with
# the Mid and High settings, printing the seconds of every stage of the
# driver from the report JSON, so the next optimisation has a target. Not a
# test. See bench/README.md.
#
#   bench/matrix_bench.sh [--threads N] [--dir DIR] [--seed S] [--repeat N]
#
#   --threads N   hvqconv's --threads (default: every core)
#   --dir DIR     default /tmp/hvqconv-bench (matrices reused when there)
#   --repeat N    runs per case; the fastest is shown (default 1)
#   HVQCONV=path  use that hvqconv instead of building one
set -eu

SRC=$(cd "$(dirname "$0")/.." && pwd)
DIR=/tmp/hvqconv-bench
SEED=1
THREADS=
REPEAT=1
while [ $# -gt 0 ]; do
    case $1 in
    --threads) THREADS=$2; shift ;;
    --dir) DIR=$2; shift ;;
    --seed) SEED=$2; shift ;;
    --repeat) REPEAT=$2; shift ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench/matrix_bench.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
. "$SRC/bench/lib.sh"
bench_init
bench_hvqconv
bench_synth

OUT=$DIR/out-matrix
mkdir -p "$OUT"
STAGES="convert hessian normalize importance clusterer residual metrics writer"
printf '%-10s %-5s %7s' matrix set "total"
for s in $STAGES; do printf ' %10s' "$s"; done
printf ' %7s %9s\n' bpp H-err

for shape in 2048x2048 8192x2048; do
    M=$DIR/matrix-$shape-s$SEED
    bench_model "$M" --matrix "$shape" --seed "$SEED" --threads "$THREADS" 2>/dev/null
    for set in mid high; do
        pipe=$SRC/pipelines/mid.yaml
        [ "$set" = high ] && pipe=$SRC/pipelines/high-fidelity.yaml
        best=
        r=0
        while [ "$r" -lt "$REPEAT" ]; do
            r=$((r + 1))
            json=$OUT/$shape-$set-$r.json
            "$HVQCONV" run -v "$pipe" --input "$M/model.safetensors" \
                --output "$OUT/$shape-$set.hvq" -r "$json" --threads "$THREADS" --force \
                --set stages.hessian.plugin=file --set "stages.hessian.path=$M/hessian.safetensors" \
                >"$OUT/$shape-$set-$r.log" 2>&1 ||
                { echo "bench: $shape $set failed, see $OUT/$shape-$set-$r.log" >&2; exit 1; }
            secs=$(sed -n 's/.*"compressed": true.*"seconds": \([0-9.e+-]*\),.*/\1/p' "$json")
            if [ -z "$best" ] || awk "BEGIN { exit !($secs < $best) }"; then
                best=$secs
                bestjson=$json
            fi
        done
        line=$(grep '"compressed": true' "$bestjson")
        printf '%-10s %-5s %7.3f' "$shape" "$set" "$best"
        for s in $STAGES; do
            v=$(echo "$line" | sed -n "s/.*\"stage_seconds\": {[^}]*\"$s\": \([0-9.e+-]*\).*/\1/p")
            printf ' %10.3f' "${v:-0}"
        done
        bpp=$(echo "$line" | sed -n 's/.*"bpp_paper": \([0-9.e+-]*\).*/\1/p')
        herr=$(echo "$line" | sed -n 's/.*"rel_hessian_error": \([0-9.e+-]*\).*/\1/p')
        printf ' %7.4f %9.3e\n' "$bpp" "$herr"
        # The clusterer's own account of its time, when it gives one (-v).
        grep -i 'debug: .*\(kmeans\|clusterer\).*[0-9] s' "${bestjson%.json}.log" |
            sed 's/^hvqconv: debug: /    /' || true
    done
done
echo
echo "seconds per stage of the driver (total: the tensor's compression, writer excluded;"
echo "importance includes the top-k selection); $THREADS threads; reports in $OUT"
