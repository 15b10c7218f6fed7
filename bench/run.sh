#!/bin/sh
# The whole-model benchmark: a synthetic model of SmolLM2-1.7B's shapes
# (bench/synth_model.c), compressed with the High, Mid and INT4 pipelines
# and with best.yaml and best-fast.yaml sized to 4.8 bits per weight
# (candidates measured on 256- and 32-row samples), and the High container
# decoded back to F16. Prints wall time, parameters
# per second, peak resident memory and output size per step. Not a test:
# nothing here runs in `make check`. See bench/README.md.
#
#   bench/run.sh [--small] [--layers N] [--threads N] [--dir DIR] [--seed S]
#                [--only high,mid,int4,best,best-fast,decode]
#
#   --small       2 layers (0.23 B parameters) instead of 24 (1.71 B)
#   --threads N   hvqconv's --threads (default: every core)
#   --dir DIR     where the model, the outputs and a build go
#                 (default /tmp/hvqconv-bench; the model is reused when there)
#   HVQCONV=path  use that hvqconv instead of building one
set -eu

SRC=$(cd "$(dirname "$0")/.." && pwd)
DIR=/tmp/hvqconv-bench
LAYERS=24
SEED=1
THREADS=
ONLY=high,mid,int4,best,best-fast,decode
while [ $# -gt 0 ]; do
    case $1 in
    --small) LAYERS=2 ;;
    --layers) LAYERS=$2; shift ;;
    --threads) THREADS=$2; shift ;;
    --dir) DIR=$2; shift ;;
    --seed) SEED=$2; shift ;;
    --only) ONLY=$2; shift ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench/run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
. "$SRC/bench/lib.sh"
bench_init
bench_hvqconv   # sets HVQCONV (building one unless given)
bench_synth     # sets SYNTH

# ---- the model ---------------------------------------------------------------
MODEL=$DIR/model-L$LAYERS-s$SEED
bench_model "$MODEL" --layers "$LAYERS" --seed "$SEED" --threads "$THREADS"
OUT=$DIR/out-L$LAYERS
mkdir -p "$OUT"

# ---- timing ------------------------------------------------------------------
TIMEV=
if [ -x /usr/bin/time ] && /usr/bin/time -v true >/dev/null 2>&1; then
    TIMEV=/usr/bin/time
fi
ROWS=

# timed NAME OUTPUT REPORT CMD...: runs CMD, appends a row to the table.
timed() {
    name=$1 output=$2 report=$3
    shift 3
    log=$OUT/$name.log
    echo "== $name: $*" >&2
    t0=$(date +%s.%N)
    if [ -n "$TIMEV" ]; then
        $TIMEV -v -o "$OUT/$name.time" "$@" >"$log" 2>&1 || {
            echo "bench/run.sh: $name failed, see $log" >&2; tail -5 "$log" >&2; exit 1; }
    else
        "$@" >"$log" 2>&1 || {
            echo "bench/run.sh: $name failed, see $log" >&2; tail -5 "$log" >&2; exit 1; }
    fi
    t1=$(date +%s.%N)
    wall=$(awk "BEGIN { printf \"%.2f\", $t1 - $t0 }")
    rss=-
    if [ -n "$TIMEV" ]; then
        kb=$(sed -n 's/.*Maximum resident set size (kbytes): *//p' "$OUT/$name.time")
        [ -n "$kb" ] && rss=$(awk "BEGIN { printf \"%.0f\", $kb / 1024 }")
    elif [ -n "$report" ] && [ -f "$report" ]; then
        rss=$(sed -n 's/.*"peak_rss_mib": \([0-9.]*\).*/\1/p' "$report" | cut -d. -f1)
    fi
    size=$(wc -c <"$output" 2>/dev/null || echo 0)
    extra=
    if [ -n "$report" ] && [ -f "$report" ]; then
        tot=$(grep '"totals"' "$report")
        bpp=$(echo "$tot" | sed -n 's/.*"bpp_paper_model": \([0-9.e+-]*\).*/\1/p')
        herr=$(echo "$tot" | sed -n 's/.*"rel_hessian_error": \([0-9.e+-]*\).*/\1/p')
        stages=$(echo "$tot" | sed -n 's/.*"stage_seconds": {\([^}]*\)}.*/\1/p' | tr -d '"' |
                 awk -F', ' '{ for (i = 1; i <= NF; i++) { split($i, kv, ": "); printf "%s%s %.1f", (i > 1 ? ", " : ""), kv[1], kv[2] } }')
        extra="bpp(model) $bpp, H-err $herr; stages: $stages"
    fi
    ROWS="$ROWS$name|$wall|$size|$rss|$extra
"
}

HESS="--set stages.hessian.plugin=file --set stages.hessian.path=$MODEL/hessian.safetensors"
case ",$ONLY," in *,high,*|*,decode,*)
    # shellcheck disable=SC2086
    timed high "$OUT/high.hvq" "$OUT/high.json" "$HVQCONV" run "$SRC/pipelines/high-fidelity.yaml" \
        --input "$MODEL/model.safetensors" --output "$OUT/high.hvq" -r "$OUT/high.json" \
        --threads "$THREADS" --force $HESS ;;
esac
case ",$ONLY," in *,mid,*)
    # shellcheck disable=SC2086
    timed mid "$OUT/mid.hvq" "$OUT/mid.json" "$HVQCONV" run "$SRC/pipelines/mid.yaml" \
        --input "$MODEL/model.safetensors" --output "$OUT/mid.hvq" -r "$OUT/mid.json" \
        --threads "$THREADS" --force $HESS ;;
esac
case ",$ONLY," in *,int4,*)
    timed int4-rtn "$OUT/int4-rtn.safetensors" "$OUT/int4-rtn.json" "$HVQCONV" run \
        "$SRC/pipelines/int4-rtn.yaml" --input "$MODEL/model.safetensors" \
        --output "$OUT/int4-rtn.safetensors" -r "$OUT/int4-rtn.json" --threads "$THREADS" --force ;;
esac
case ",$ONLY," in *,best,*)
    # the size allocator: every candidate of best.yaml measured on 256-row
    # samples of each tensor, then the chosen one run on the whole tensor
    # shellcheck disable=SC2086
    timed best-4.8 "$OUT/best.hvq" "$OUT/best.json" "$HVQCONV" run "$SRC/pipelines/best.yaml" \
        --input "$MODEL/model.safetensors" --output "$OUT/best.hvq" -r "$OUT/best.json" \
        --target-bpw 4.8 --set target.sample=256 --threads "$THREADS" --force $HESS ;;
esac
case ",$ONLY," in *,best-fast,*)
    # best-fast.yaml: the entropy-coded candidates only, on 32-row samples
    # shellcheck disable=SC2086
    timed best-fast-4.8 "$OUT/best-fast.hvq" "$OUT/best-fast.json" "$HVQCONV" run \
        "$SRC/pipelines/best-fast.yaml" --input "$MODEL/model.safetensors" \
        --output "$OUT/best-fast.hvq" -r "$OUT/best-fast.json" --target-bpw 4.8 \
        --threads "$THREADS" --force $HESS ;;
esac
case ",$ONLY," in *,decode,*)
    timed decode-high-f16 "$OUT/high-f16.safetensors" "" "$HVQCONV" decode -v "$OUT/high.hvq" \
        -o "$OUT/high-f16.safetensors" --dtype f16 --threads "$THREADS" --force ;;
esac

# ---- the table ---------------------------------------------------------------
PARAMS=$(grep -h '"totals"' "$OUT"/*.json 2>/dev/null | head -1 |
         sed -n 's/.*"totals": {"params": \([0-9]*\).*/\1/p')
[ -n "$PARAMS" ] || PARAMS=0
CPU=$(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo 2>/dev/null | head -1)
echo
echo "hvqconv benchmark: $LAYERS layers, $PARAMS parameters, seed $SEED, $THREADS threads"
echo "machine: $NCPU CPUs${CPU:+, $CPU}; hvqconv: $HVQCONV"
if [ -n "$TIMEV" ]; then
    echo "peak RSS from /usr/bin/time -v"
else
    echo "peak RSS from the reports (peak_rss_mib; none for the decode)"
fi
echo
printf '%-16s %9s %12s %10s %12s\n' step "wall s" "Mparams/s" "peak MiB" "output MB"
printf '%s' "$ROWS" | while IFS='|' read -r name wall size rss extra; do
    if [ -z "$name" ]; then
        continue
    fi
    rate=$(awk "BEGIN { printf \"%.1f\", $PARAMS / $wall / 1e6 }")
    mb=$(awk "BEGIN { printf \"%.0f\", $size / 1e6 }")
    printf '%-16s %9s %12s %10s %12s\n' "$name" "$wall" "$rate" "$rss" "$mb"
done
echo
printf '%s' "$ROWS" | while IFS='|' read -r name wall size rss extra; do
    if [ -n "$name" ] && [ -n "$extra" ]; then
        echo "$name: $extra"
    fi
done
if [ -f "$OUT/decode-high-f16.log" ]; then
    sed -n 's/^hvqconv: debug: \(.* s on .*\)/decode-high-f16: \1/p' "$OUT/decode-high-f16.log"
fi
echo
echo "outputs and logs: $OUT"
