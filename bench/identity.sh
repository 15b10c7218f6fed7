#!/usr/bin/env bash
# Byte-identity of two builds: runs the same jobs with OLD/hvqconv and
# NEW/hvqconv (each a configured build tree, using its own plugins) and
# compares every file they write byte for byte, and the reports and the
# printed tables with their timings and memory figures masked (those vary
# from run to run). For a refactoring that must not change any output:
#
#   bench/identity.sh /tmp/ref /work/main     # prints one line per job
#
# Jobs: every pipeline of pipelines/ on the demo model (2 threads, and 1
# for two of them), each container decoded to safetensors, GGUF and npz,
# inspect and verify, eval of the model and of a container, the imatrix
# Hessian from the legacy .dat and (when ../shared/data is present) GGUF,
# the calibrate and file Hessians, and sharded outputs. Exit 1 when any
# job differs. Not a test: it needs two builds.
set -u
OLD=$(cd "$1" && pwd) NEW=$(cd "$2" && pwd)
SRC=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${HVQ_SHARED_DATA:-$SRC/../shared/data}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/hvq-identity-XXXXXX")
if [ -n "${HVQ_IDENTITY_KEEP:-}" ]; then echo "work directory: $WORK"; else
    trap 'rm -rf "$WORK"' EXIT; fi
M=$SRC/models/stories260K
fails=0

# The report and the printout (file $1, written in directory $2) without
# what varies between runs: timings, memory, and the directory itself.
normalize() {
    python3 - "$1" "$2" <<'PY'
import json, re, sys
p, d = sys.argv[1], sys.argv[2]
text = open(p, encoding="utf-8", errors="replace").read().replace(d, "@")
try:
    def strip(o):
        if isinstance(o, dict):
            return {k: strip(v) for k, v in o.items()
                    if not re.search(r"seconds|per_second|rss|memory|elapsed|^time", k)}
        if isinstance(o, list):
            return [strip(v) for v in o]
        return o
    print(json.dumps(strip(json.loads(text)), sort_keys=True, indent=1))
except ValueError:
    for line in text.splitlines():
        line = re.sub(r"^(  time: ).*", r"\1-", line)
        line = re.sub(r"^(  seconds per stage: ).*", r"\1-", line)
        line = re.sub(r"(\S+\s+\S+\s+\S+\s+\S+\s+\S+\s+\S+\s+\S+)\s+[0-9.]+$", r"\1", line)
        line = re.sub(r"\b[0-9]+\.[0-9]+ s\b", "- s", line)
        print(line)
PY
}

# job NAME ARGS...: runs hvqconv ARGS with OLD and NEW in directories of
# their own (@ in an argument stands for that directory) and compares.
job() {
    local name=$1; shift
    local rc=()
    for side in old new; do
        local dir=$WORK/$name/$side bin
        [ $side = old ] && bin=$OLD/hvqconv || bin=$NEW/hvqconv
        mkdir -p "$dir"
        local args=("${@//@/$dir}")
        (cd "$dir" && "$bin" "${args[@]}" >"$WORK/$name/$side.out" 2>"$WORK/$name/$side.err")
        rc+=($?)
    done
    local why=""
    [ "${rc[0]}" = "${rc[1]}" ] || why="exit ${rc[0]} vs ${rc[1]}"
    diff -q <(normalize "$WORK/$name/old.out" "$WORK/$name/old") \
        <(normalize "$WORK/$name/new.out" "$WORK/$name/new") >/dev/null ||
        why="$why stdout"
    (cd "$WORK/$name/old" && find . -type f | sort) >"$WORK/$name/old.list"
    (cd "$WORK/$name/new" && find . -type f | sort) >"$WORK/$name/new.list"
    cmp -s "$WORK/$name/old.list" "$WORK/$name/new.list" || why="$why files"
    while read -r f; do
        [ -f "$WORK/$name/new/$f" ] || continue
        case $f in
        *.json) diff -q <(normalize "$WORK/$name/old/$f" "$WORK/$name/old") \
                    <(normalize "$WORK/$name/new/$f" "$WORK/$name/new") >/dev/null ||
                    why="$why $f" ;;
        *) cmp -s "$WORK/$name/old/$f" "$WORK/$name/new/$f" || why="$why $f" ;;
        esac
    done <"$WORK/$name/old.list"
    if [ -n "$why" ]; then
        echo "DIFFERS $name:$why"
        fails=$((fails + 1))
    else
        echo "same    $name (exit ${rc[0]}, $(wc -l <"$WORK/$name/old.list") files)"
    fi
}

for p in "$SRC"/pipelines/*.yaml; do
    n=$(basename "$p" .yaml)
    out=$(sed -n 's/^output: *//p' "$p")
    target=() # the pipelines that choose per tensor need a size
    grep -q candidates "$p" && target=(--target-bpw 4.8)
    job "run-$n" run -q "$p" --input "$M" --output "@/${out##*/}" --report @/report.json -t 2 \
        "${target[@]}"
done
job run-mid-t1 run -q "$SRC/pipelines/mid.yaml" --input "$M" --output @/m.hvq --report @/r.json -t 1
job run-high-t1 run -q "$SRC/pipelines/high-fidelity.yaml" --input "$M" --output @/h.hvq \
    --report @/r.json -t 1

# Containers decoded, inspected, verified, evaluated.
for n in mid high-fidelity best; do
    c=$WORK/run-$n/new/$(sed -n 's/^output: *//p' "$SRC/pipelines/$n.yaml" | sed 's#.*/##')
    [ -f "$c" ] || continue
    cp "$c" "$WORK/$n.hvq"
    job "decode-$n-st" decode "$WORK/$n.hvq" -o @/d.safetensors
    job "decode-$n-f16" decode "$WORK/$n.hvq" -o @/d.safetensors --dtype f16
    job "decode-$n-gguf" decode "$WORK/$n.hvq" -o @/d.gguf --dtype f32
    job "decode-$n-npz" decode "$WORK/$n.hvq" -o @/d.npz --dtype f32
    job "inspect-$n" inspect "$WORK/$n.hvq"
    job "inspect-$n-json" inspect --json "$WORK/$n.hvq"
    job "verify-$n" verify "$WORK/$n.hvq"
    job "eval-$n" eval "$WORK/$n.hvq" --tokens "$M/tinystories-10k.tok512.npy" --ctx 64 \
        --max-windows 4 --json
done
job eval-model eval "$M" --tokens "$M/tinystories-10k.tok512.npy" --ctx 64 --max-windows 6 --json

# Hessians.
mid=$SRC/pipelines/mid.yaml
job hess-imatrix-dat run -q "$mid" --input "$M" --output @/m.hvq --report @/r.json \
    --set stages.hessian.plugin=imatrix \
    --set "stages.hessian.path=$SRC/tests/data/imatrix/stories260K.imatrix.dat"
if [ -f "$SHARED/stories260K/imatrix.gguf" ]; then
    job hess-imatrix-gguf run -q "$mid" --input "$M" --output @/m.hvq --report @/r.json \
        --set stages.hessian.plugin=imatrix --set "stages.hessian.path=$SHARED/stories260K/imatrix.gguf"
fi
job hess-calibrate run -q "$mid" --input "$M" --output @/m.hvq --report @/r.json \
    --set stages.hessian.plugin=calibrate \
    --set "stages.hessian.tokens=$M/tinystories-calib.tok512.npy"

# Shards.
job shard-hvq run -q "$mid" --input "$M" --output @/m.hvq --report @/r.json \
    --set stages.writer.max_shard_size=200KB
job shard-dequant run -q "$SRC/pipelines/int4-rtn.yaml" --input "$M" --output @/m.safetensors \
    --report @/r.json --set stages.writer.max_shard_size=300KB

echo "$fails job(s) differ"
[ "$fails" = 0 ]
