#!/bin/sh
# python/hvqconv.py against `hvqconv decode --dtype f32`, bit for bit: the
# demo model compressed with every pipeline in pipelines/ (int4-* with the
# hvq writer; best and best-fast sized to 4.8 bits per weight, which gives
# ecsq), and a small random model (tests/pyload_check.py synth, 512- and
# 768-column matrices, F16, BF16, F64, integer, bool and F8 tensors passing
# through, a Hessian file) with every ggml block type, rtn asymmetric with
# short last groups, k-means with per-group and column gains, ecsq with
# column gains, the rice and coo16 residuals, a 3x5 matrix, and a sharded
# container (through its index and its directory). Then bad input: a
# truncated file, a corrupt header, a checksum mismatch, a missing shard, a
# single shard, a plain safetensors file, a corrupt ecsq stream: each exits
# 2 with a message naming the file, without a traceback.
# ecsq decodes through the build tree's ecsq plugin (its C decoder, with
# ctypes: checked to be the one used), then again in plain Python (the
# fallback, forced with HVQCONV_PURE_PYTHON, and with no plugin to be
# found), which must give the same bits and warn once, saying why.
# Skipped (77) without python3 and numpy.
set -u
top=${HVQ_TOP_SRCDIR:-$(cd "$(dirname "$0")/.." && pwd)}
build=${HVQ_TOP_BUILDDIR:-$top}
hvq=$build/hvqconv
PY=
for p in ${PYTHON:-} python3 /usr/bin/python3; do
    "$p" -c 'import numpy' >/dev/null 2>&1 && { PY=$p; break; }
done
if [ -z "$PY" ]; then
    echo "SKIP: no python3 with numpy (apt-get install python3-numpy)"
    exit 77
fi
export HVQ_TOP_SRCDIR=$top
# where hvqconv.py finds the ecsq plugin (a VPATH build's is not beside
# python/); hvqconv itself is not given it (it finds the build tree)
pyenv="env HVQ_PLUGIN_PATH=$build/plugins/.libs"
# A sanitizer build's plugins need the ASan runtime loaded first, which a
# plain python3 lacks (loading one aborts the interpreter): there the
# loader is checked on its plain-Python ecsq path only.
native=yes
if [ "${HVQ_SANITIZED:-no}" = yes ]; then
    native=no
    pyenv="$pyenv HVQCONV_PURE_PYTHON=1"
fi
PYTHONDONTWRITEBYTECODE=1 # nothing written into the source tree
export PYTHONDONTWRITEBYTECODE
tmp=$(mktemp -d "${TMPDIR:-/tmp}/hvq-pyload-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail=0
check="$pyenv $PY $top/tests/pyload_check.py"
loader="$pyenv $PY $top/python/hvqconv.py"

# same NAME CONTAINER: decode, then compare
same() {
    if ! "$hvq" decode "$2" -o "$tmp/$1.dec.safetensors" --dtype f32 -f -q; then
        echo "FAIL: $1: hvqconv decode failed"
        fail=1
        return
    fi
    if out=$($check compare "$2" "$tmp/$1.dec.safetensors" 2>&1); then
        echo "PASS: $1: $out"
    else
        echo "FAIL: $1:"
        echo "$out"
        fail=1
    fi
    rm -f "$tmp/$1.dec.safetensors"
}

# compress NAME PIPELINE INPUT ARGS...
compress() {
    name=$1 pl=$2 in=$3
    shift 3
    if ! "$hvq" run "$pl" -i "$in" -o "$tmp/$name.hvq" -r "$tmp/$name.json" -f -q "$@" \
        >"$tmp/$name.log" 2>&1; then
        echo "FAIL: $name: hvqconv run failed:"
        cat "$tmp/$name.log"
        fail=1
        return 1
    fi
}

# ---- the demo model, every pipeline --------------------------------------
demo=$top/models/stories260K
for p in int4-rtn int4-g32 int4-g128 q4_0 q4_1 q8_0 mid high-fidelity best best-fast; do
    case $p in
    int4-*) set -- --set stages.writer.plugin=hvq ;;
    best*) set -- --target-bpw 4.8 ;;
    *) set -- ;;
    esac
    compress "$p" "$top/pipelines/$p.yaml" "$demo" "$@" && same "$p" "$tmp/$p.hvq"
done

# ---- a random model: the other encodings ---------------------------------
$PY "$top/tests/pyload_check.py" synth "$tmp/synth.safetensors" || exit 1
cat >"$tmp/base.yaml" <<EOF
name: pyload
input: in.safetensors
output: out.hvq
seed: 1
select:
  include: ["*proj.weight", "*half.weight"]
stages:
  hessian:    { plugin: file, path: "$tmp/synth.hessian.safetensors" }
  importance: { plugin: hasvq }
  clusterer:  { plugin: ggml, type: q4_0 }
  residual:   { plugin: none }
  writer:     { plugin: hvq }
EOF
S=$tmp/synth.safetensors
for t in q4_0 q4_1 q5_0 q5_1 q8_0 iq4_nl q2_K q3_K q4_K q5_K q6_K iq4_xs; do
    compress "ggml-$t" "$tmp/base.yaml" "$S" --set stages.clusterer.type=$t &&
        same "ggml-$t" "$tmp/ggml-$t.hvq"
done
C=stages.clusterer
compress q4_K-gains-rice "$tmp/base.yaml" "$S" --set $C.type=q4_K --set $C.col_exponent=0.5 \
    --set stages.residual.plugin=rice --set stages.residual.sparsity=0.01 &&
    same q4_K-gains-rice "$tmp/q4_K-gains-rice.hvq"
compress rtn-asym "$tmp/base.yaml" "$S" --set $C.plugin=rtn --set $C.mode=asymmetric \
    --set $C.group_size=96 && same rtn-asym "$tmp/rtn-asym.hvq"
compress rtn-coo16 "$tmp/base.yaml" "$S" --set $C.plugin=rtn --set $C.group_size=100 \
    --set stages.residual.plugin=coo16 && same rtn-coo16 "$tmp/rtn-coo16.hvq"
compress kmeans-gains "$tmp/base.yaml" "$S" --set $C.plugin=kmeans --set $C.block_size=4 \
    --set $C.centroids=512 --set $C.scale=rms --set $C.scale_group=64 \
    --set $C.col_exponent=0.25 --set $C.fit=shrink --set stages.residual.plugin=coo16 &&
    same kmeans-gains "$tmp/kmeans-gains.hvq"
compress kmeans-b3-rice "$tmp/base.yaml" "$S" --set $C.plugin=kmeans --set $C.block_size=3 \
    --set $C.centroids=100 --set $C.fit=shrink --set stages.residual.plugin=rice \
    --set stages.residual.sparsity=0.05 && same kmeans-b3-rice "$tmp/kmeans-b3-rice.hvq"
compress ecsq-gains "$tmp/base.yaml" "$S" --set $C.plugin=ecsq --set $C.bits=4 \
    --set $C.col_exponent=0.5 --set stages.residual.plugin=rice &&
    same ecsq-gains "$tmp/ecsq-gains.hvq"

# ---- ecsq: the C decoder is the one used; the plain Python fallback ------
if [ $native = no ]; then
    echo "SKIP: ecsq-native: a sanitizer build's plugin cannot be loaded into python3"
elif out=$($pyenv $PY -c '
import sys
sys.path.insert(0, sys.argv[1])
import hvqconv
fn = hvqconv._ecsq_native()
print("C decoder" if fn else "no C decoder: %s" % hvqconv._native["why"])
sys.exit(0 if fn else 1)
' "$top/python" 2>&1); then
    echo "PASS: ecsq-native: $out"
else
    echo "FAIL: ecsq-native: $out"
    fail=1
fi
mkdir -p "$tmp/py"
cp "$top/python/hvqconv.py" "$tmp/py/"
for n in best-fast ecsq-gains; do
    "$hvq" decode "$tmp/$n.hvq" -o "$tmp/$n.dec.safetensors" --dtype f32 -f -q
    for how in forced no-plugin; do
        if [ $how = forced ]; then
            out=$(HVQCONV_PURE_PYTHON=1 $check compare "$tmp/$n.hvq" "$tmp/$n.dec.safetensors" 2>&1)
            rc=$? why="HVQCONV_PURE_PYTHON is set"
        else
            out=$(HVQ_PYLOAD_MODULE_DIR=$tmp/py HVQ_PLUGIN_PATH=$tmp/none $PY \
                "$top/tests/pyload_check.py" compare "$tmp/$n.hvq" "$tmp/$n.dec.safetensors" 2>&1)
            rc=$? why="no clusterer_ecsq plugin in $tmp/none"
        fi
        if [ $rc -eq 0 ] && [ "$(echo "$out" | grep -c 'decode in plain Python')" = 1 ] &&
            echo "$out" | grep -q "$why" && echo "$out" | grep -q ", 0 differ"; then
            echo "PASS: $n-pure-$how: $(echo "$out" | tail -n 1)"
        else
            echo "FAIL: $n-pure-$how: exit $rc, expected one warning naming \"$why\":"
            echo "$out"
            fail=1
        fi
    done
    rm -f "$tmp/$n.dec.safetensors"
done
# a 3x5 matrix: an odd count (the last 2-value vector and the last byte
# of nibbles cut short)
sed 's/"\*proj.weight"/"*small.weight"/' "$tmp/base.yaml" >"$tmp/odd.yaml"
compress kmeans-odd "$tmp/odd.yaml" "$S" --set $C.plugin=kmeans --set $C.block_size=2 \
    --set $C.centroids=4 --set $C.fit=shrink && same kmeans-odd "$tmp/kmeans-odd.hvq"
compress rtn-odd "$tmp/odd.yaml" "$S" --set $C.plugin=rtn && same rtn-odd "$tmp/rtn-odd.hvq"
mkdir -p "$tmp/sharded"
compress sharded/m "$tmp/base.yaml" "$S" --set $C.type=q6_K \
    --set stages.writer.max_shard_size=20000 &&
    same sharded-index "$tmp/sharded/m.hvq.index.json" && same sharded-dir "$tmp/sharded"

# ---- bad input: exit 2, a message naming the file, no traceback ----------
# bad NAME FILE EXPECTED-TEXT
bad() {
    out=$($loader "$2" 2>&1)
    rc=$?
    if [ $rc -eq 2 ] && echo "$out" | grep -q "^hvqconv.py: error: $2: " &&
        echo "$out" | grep -q -- "$3" && ! echo "$out" | grep -q Traceback; then
        echo "PASS: $1: $out"
    else
        echo "FAIL: $1: exit $rc, expected 2 and \"$3\":"
        echo "$out"
        fail=1
    fi
}
c=$tmp/q4_0.hvq
size=$(wc -c <"$c")
head -c $((size - 1000)) "$c" >"$tmp/truncated.hvq"
bad truncated "$tmp/truncated.hvq" "truncated"
head -c 5 "$c" >"$tmp/short.hvq"
bad short "$tmp/short.hvq" "not a safetensors file"
cp "$c" "$tmp/header.hvq"
printf 'XXXX' | dd of="$tmp/header.hvq" bs=1 seek=20 conv=notrunc 2>/dev/null
bad corrupt-header "$tmp/header.hvq" "not valid JSON"
printf '\377\377\377\377\377\377\377\377' >"$tmp/huge.hvq"
bad huge-header "$tmp/huge.hvq" "exceeds the safetensors limit"
cp "$c" "$tmp/crc.hvq"
printf '\125' | dd of="$tmp/crc.hvq" bs=1 seek=$((size - 200000)) conv=notrunc 2>/dev/null
bad checksum "$tmp/crc.hvq" "checksum mismatch"
bad not-container "$S" "not an hvq container"
bad no-file "$tmp/none.hvq" "cannot open"
one=$(ls "$tmp"/sharded/m-00002-of-*.hvq)
bad one-shard "$one" "one shard of a sharded container"
rm -f "$one"
bad missing-shard "$tmp/sharded/m.hvq.index.json" "is missing"
# a corrupt ecsq stream (its checksum right): the C decoder and the plain
# Python one both refuse it
$check ecsq-corrupt "$tmp/ecsq-gains.hvq" "$tmp/ecsq-bad.hvq" >/dev/null
bad ecsq-corrupt "$tmp/ecsq-bad.hvq" "stream 0 of [0-9]* is corrupt"
HVQCONV_PURE_PYTHON=1
export HVQCONV_PURE_PYTHON
bad ecsq-corrupt-pure "$tmp/ecsq-bad.hvq" "stream 0 of [0-9]* is corrupt"
unset HVQCONV_PURE_PYTHON
# as a library: one exception class
if out=$($PY -c '
import sys
sys.path.insert(0, sys.argv[1])
import hvqconv
try:
    hvqconv.load(sys.argv[2])
except hvqconv.FormatError as e:
    print("FormatError:", e)
' "$top/python" "$tmp/truncated.hvq" 2>&1) && echo "$out" | grep -q "^FormatError: .*truncated"; then
    echo "PASS: library: $out"
else
    echo "FAIL: library: $out"
    fail=1
fi
exit $fail
