#!/bin/sh
# The Python loader's speed (python/hvqconv.py): a synthetic model of
# SmolLM2-1.7B's shapes (bench/synth_model.c, 2 layers by default: 0.23 B
# parameters, of which 134 M in compressed matrices and the 100 M of the
# F16 embedding passed through), compressed with each pipeline (the
# model's Hessian file as the Hessian; int4-* with the hvq writer instead
# of their dequant writer; best and best-fast sized to 4.8 bits per
# weight), then loaded with hvqconv.load() and decoded with `hvqconv decode
# --dtype f32`, one after the other (never in parallel), and the two
# compared bit for bit. Prints per pipeline: the seconds of load() (best
# of three), the weights per second over the whole model and over the
# compressed tensors alone (their decoding timed apart),
# the seconds of `hvqconv decode` (which also writes its output; --threads
# as given), and whether every tensor is identical.
# Not a test: nothing here runs in `make check`. See bench/README.md.
#
#   bench/pyload.sh [--layers N] [--threads N] [--dir DIR] [--seed S]
#                   [--only int4-rtn,q4_0,...] [--no-check]
#
#   --layers N    the model's layers (default 2: 0.23 B parameters)
#   --threads N   hvqconv's --threads (default: every core)
#   --only LIST   the pipelines (default: every one but best, whose
#                 tensors are ecsq as best-fast's; ecsq decodes through the
#                 ecsq plugin's C decoder, or with HVQCONV_PURE_PYTHON=1 in
#                 plain Python, about 0.5 M weights a second)
#   --no-check    skip hvqconv decode and the comparison
#   --dir DIR     where the model, containers and a build go
#                 (default /tmp/hvqconv-bench; reused when there)
#   HVQCONV=path  use that hvqconv instead of building one; PYTHON=path a
#                 python3 with numpy
set -eu

SRC=$(cd "$(dirname "$0")/.." && pwd)
DIR=/tmp/hvqconv-bench LAYERS=2 SEED=1 CHECK=1
ONLY=int4-rtn,int4-g32,int4-g128,q4_0,q4_1,q8_0,mid,high-fidelity,best-fast
NCPU=$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)
THREADS=$NCPU
while [ $# -gt 0 ]; do
    case $1 in
    --layers | --threads | --dir | --seed | --only)
        [ $# -ge 2 ] || { echo "bench/pyload.sh: $1 needs a value" >&2; exit 2; }
        opt=$(echo "${1#--}" | tr a-z A-Z)
        eval "$opt=\$2"
        shift ;;
    --no-check) CHECK=0 ;;
    -h | --help) sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench/pyload.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
mkdir -p "$DIR" && DIR=$(cd "$DIR" && pwd)

. "$SRC/bench/lib.sh"
bench_hvqconv   # sets HVQCONV
bench_synth     # sets SYNTH
bench_numpy     # sets PY

MODEL=$DIR/model-L$LAYERS-s$SEED
bench_model "$MODEL" --layers "$LAYERS" --seed "$SEED" --threads "$THREADS"
OUT=$DIR/pyload-L$LAYERS
mkdir -p "$OUT"

printf '%-14s %8s %10s %14s %16s %10s %s\n' pipeline "GB" "load s" "M weights/s" "compressed M/s" \
    "decode s" "identical"
for p in $(echo "$ONLY" | tr ',' ' '); do
    [ -f "$SRC/pipelines/$p.yaml" ] || { echo "bench/pyload.sh: no pipelines/$p.yaml" >&2; exit 2; }
    c=$OUT/$p.hvq
    if [ ! -f "$c" ] || [ "$MODEL/model.safetensors" -nt "$c" ]; then
        set -- --set stages.hessian.plugin=file --set "stages.hessian.path=$MODEL/hessian.safetensors"
        case $p in
        int4-*) set -- "$@" --set stages.writer.plugin=hvq ;;
        best) set -- "$@" --target-bpw 4.8 --set target.sample=256 ;;
        best-fast) set -- "$@" --target-bpw 4.8 ;;
        esac
        echo "== compressing with $p" >&2
        "$HVQCONV" run "$SRC/pipelines/$p.yaml" -i "$MODEL/model.safetensors" -o "$c" \
            -r "$OUT/$p.json" --threads "$THREADS" -f -q "$@" >"$OUT/$p.run.log" 2>&1 ||
            { echo "bench/pyload.sh: $p failed, see $OUT/$p.run.log" >&2; exit 1; }
    fi
    # load() timed alone (what it runs: open, then get() each tensor, the
    # compressed ones' share timed apart), best of 3 as the machine may be
    # shared (once when it takes more than 20 s)
    line=$("$PY" - "$SRC/python" "$c" <<'EOF'
import sys, time
sys.path.insert(0, sys.argv[1])
import hvqconv
best = comp_best = float("inf")
for _ in range(3):
    t0 = time.perf_counter()
    tc = comp = 0
    with hvqconv.Container(sys.argv[2]) as c:
        w = {}
        for e in c.entries:
            t1 = time.perf_counter()
            w[e["name"]] = c.get(e["name"])
            if e["encoding"] == "hvq":
                tc += time.perf_counter() - t1
                comp += w[e["name"]].size
    t = time.perf_counter() - t0
    best, comp_best = min(best, t), min(comp_best, tc)
    total, gb = sum(a.size for a in w.values()), sum(a.nbytes for a in w.values()) / 1e9
    del w
    if t > 20:  # ecsq in plain Python (the fallback): once is enough
        break
print("%.2f %.3f %.1f %.1f" % (gb, best, total / best / 1e6, comp / comp_best / 1e6))
EOF
    ) || { echo "bench/pyload.sh: load of $c failed" >&2; exit 1; }
    dec=- same=-
    if [ "$CHECK" = 1 ]; then
        t0=$(date +%s.%N)
        "$HVQCONV" decode "$c" -o "$OUT/$p.f32.safetensors" --dtype f32 --threads "$THREADS" -f -q
        t1=$(date +%s.%N)
        dec=$(awk "BEGIN { printf \"%.3f\", $t1 - $t0 }")
        if HVQ_TOP_SRCDIR=$SRC "$PY" "$SRC/tests/pyload_check.py" compare "$c" \
            "$OUT/$p.f32.safetensors" >"$OUT/$p.compare.log" 2>&1; then
            same=yes
        else
            same="NO (see $OUT/$p.compare.log)"
        fi
        rm -f "$OUT/$p.f32.safetensors"
    fi
    set -- $line
    printf '%-14s %8s %10s %14s %16s %10s %s\n' "$p" "$1" "$2" "$3" "$4" "$dec" "$same"
done
