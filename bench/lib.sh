# Shared by the bench scripts (sourced once SRC is set; bench_init once
# DIR is).

nl='
'

# The options rd_matrices.sh and rd_model.sh share, each with a value:
# bench_rd_opt "$@" sets its variable and returns 0 when $1 is one.
bench_rd_opt() {
    case $1 in
    --hvq) HVQ_LIST="$HVQ_LIST$2$nl" ;;
    --types) TYPES=$2 ;;
    --llamacpp) LLAMACPP_BIN=$2 ;;
    --threads) THREADS=$2 ;;
    --dir) DIR=$2 ;;
    *) return 1 ;;
    esac
}

# After the options: the default pipelines, and "none" for no pipelines or
# no llama.cpp types.
bench_rd_defaults() {
    [ -n "$HVQ_LIST" ] || HVQ_LIST="pipelines/mid.yaml${nl}pipelines/high-fidelity.yaml${nl}pipelines/int4-g32.yaml$nl"
    [ "$HVQ_LIST" != "none$nl" ] || HVQ_LIST=
    [ "$TYPES" != none ] || TYPES=
}

# NCPU (the online CPUs), THREADS (when not given: NCPU), and DIR made and
# absolute.
bench_init() {
    NCPU=$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)
    [ -n "${THREADS:-}" ] || THREADS=$NCPU
    mkdir -p "$DIR"
    DIR=$(cd "$DIR" && pwd)
}

# HVQCONV: the given one, else a build: in the source tree when it is
# configured there, else in $DIR/build (configured on first use; make is
# incremental, so a second run only checks).
bench_hvqconv() {
    if [ -n "${HVQCONV:-}" ]; then
        :
    elif [ -f "$SRC/config.status" ]; then
        echo "== building hvqconv in $SRC" >&2
        make -C "$SRC" -j"$NCPU" >"$DIR/build.log" 2>&1 ||
            { echo "bench: build failed, see $DIR/build.log" >&2; exit 1; }
        HVQCONV=$SRC/hvqconv
    else
        echo "== building hvqconv in $DIR/build" >&2
        mkdir -p "$DIR/build"
        (
            cd "$DIR/build"
            [ -x "$SRC/configure" ] || (cd "$SRC" && autoreconf -fi)
            [ -f Makefile ] || "$SRC/configure" -q
            make -j"$NCPU"
        ) >"$DIR/build.log" 2>&1 ||
            { echo "bench: build failed, see $DIR/build.log" >&2; exit 1; }
        HVQCONV=$DIR/build/hvqconv
    fi
    [ -x "$HVQCONV" ] || { echo "bench: no hvqconv at $HVQCONV" >&2; exit 1; }
}

# SYNTH: bench/synth_model.c compiled with cc (not by make).
bench_synth() {
    SYNTH=$DIR/synth_model
    if [ ! -x "$SYNTH" ] || [ "$SRC/bench/synth_model.c" -nt "$SYNTH" ]; then
        ${CC:-cc} -O2 -std=c11 -pthread "$SRC/bench/synth_model.c" -o "$SYNTH" -lm ||
            { echo "bench: cannot compile bench/synth_model.c" >&2; exit 1; }
    fi
}

# bench_model DIR SYNTH-OPTIONS...: synthesizes DIR unless it holds a model
# made by the same generator source with the same options (DIR/synth.stamp).
bench_model() {
    mdir=$1
    shift
    stamp="$(cksum <"$SRC/bench/synth_model.c") $*"
    if [ -f "$mdir/model.safetensors" ] && [ -f "$mdir/hessian.safetensors" ] &&
        [ "$(cat "$mdir/synth.stamp" 2>/dev/null)" = "$stamp" ]; then
        return 0
    fi
    echo "== synthesizing $mdir" >&2
    rm -f "$mdir/synth.stamp"
    t0=$(date +%s.%N)
    "$SYNTH" "$@" "$mdir" >&2 || { echo "bench: synth_model failed" >&2; exit 1; }
    t1=$(date +%s.%N)
    echo "$stamp" >"$mdir/synth.stamp"
    echo "   synthesized in $(awk "BEGIN { printf \"%.1f\", $t1 - $t0 }") s" >&2
}

# ---- for the rate-distortion benchmarks (rd_matrices.sh, rd_model.sh) ----

# PY: a python3 that imports numpy ($PYTHON, else python3, else
# /usr/bin/python3); exits when there is none.
bench_numpy() {
    PY=
    for p in ${PYTHON:-} python3 /usr/bin/python3; do
        if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import numpy' 2>/dev/null; then
            PY=$p
            break
        fi
    done
    [ -n "$PY" ] || { echo "bench: needs python3 with numpy (apt-get install python3-numpy)" >&2; exit 1; }
}

# PY as bench_numpy sets it, with llama.cpp's gguf-py importable: $GGUF_PY, else
# $LLAMACPP_BIN/../src/gguf-py (where build_llamacpp_tools.sh puts the
# source), else an installed gguf package (pip install gguf).
bench_python() {
    bench_numpy
    gp=${GGUF_PY:-$LLAMACPP_BIN/../src/gguf-py}
    if [ -d "$gp/gguf" ]; then
        PYTHONPATH=$(cd "$gp" && pwd)${PYTHONPATH:+:$PYTHONPATH}
        export PYTHONPATH
    fi
    "$PY" -c 'import gguf, gguf.quants' 2>/dev/null || {
        echo "bench: needs llama.cpp's gguf-py: set GGUF_PY=LLAMACPP_SRC/gguf-py," >&2
        echo "       or build llama.cpp with ../shared/tools/build_llamacpp_tools.sh DIR" >&2
        echo "       and set LLAMACPP_BIN=DIR/bin, or pip install gguf" >&2
        exit 1
    }
    "$PY" -c 'import matplotlib' 2>/dev/null ||
        echo "bench: no matplotlib, no plot (apt-get install python3-matplotlib)" >&2
}

# HAVE_LLAMA=1 when $LLAMACPP_BIN holds llama-quantize and llama-perplexity
# (../shared/tools/build_llamacpp_tools.sh DIR builds them into DIR/bin).
bench_llamacpp() {
    HAVE_LLAMA=0
    if [ -x "$LLAMACPP_BIN/llama-quantize" ] && [ -x "$LLAMACPP_BIN/llama-perplexity" ]; then
        HAVE_LLAMA=1
    else
        echo "bench: no llama.cpp tools in $LLAMACPP_BIN (set LLAMACPP_BIN or --llamacpp DIR;" >&2
        echo "       build them with ../shared/tools/build_llamacpp_tools.sh DIR): llama.cpp rows skipped" >&2
    fi
}

# rd_hvq SPEC INPUT IMATRIX OUTDIR: runs `hvqconv run` with SPEC (a
# pipeline file and extra `hvqconv run` arguments, split like a shell
# command line) on INPUT with the imatrix as its Hessian, and leaves in
# OUTDIR/$RD_TAG.json the report and in RD_DECODED a GGUF F32 of the result
# (decoded from the container, or written so by a dequant writer). Sets
# RD_LABEL (the method's name for the table), RD_TAG (a file name) and
# RD_CONTAINER (the container written, empty for a dequant writer).
rd_hvq() {
    spec=$1 input=$2 imatrix=$3 outdir=$4
    eval "set -- $spec"
    [ $# -ge 1 ] || { echo "bench: empty --hvq" >&2; return 1; }
    pipe=$1
    shift
    [ -f "$pipe" ] || [ ! -f "$SRC/$pipe" ] || pipe=$SRC/$pipe
    [ -f "$pipe" ] || { echo "bench: no pipeline $pipe (--hvq '$spec')" >&2; return 1; }
    RD_LABEL=$("$PY" "$SRC/bench/rd_tool.py" label "$pipe" "$@")
    RD_TAG=$(printf '%s' "$RD_LABEL" | tr -c 'A-Za-z0-9._-' '_')
    writer=$("$PY" "$SRC/bench/rd_tool.py" writer "$pipe" "$@")
    RD_DECODED=$outdir/$RD_TAG.dec.gguf
    RD_CONTAINER=
    log=$outdir/$RD_TAG.log
    rm -f "$RD_DECODED"
    # the imatrix first, so that the spec's own stages.hessian.* settings
    # (missing=error, ...) apply to it; a spec that names its own Hessian
    # plugin (calibrate with full=true, ...) gets none
    set -- --set stages.hessian.plugin=imatrix --set "stages.hessian.path=$imatrix" "$@"
    case " $* " in
    *" stages.hessian.plugin="*" stages.hessian.plugin="*) shift 4 ;;
    esac
    case $writer in
    hvq)
        "$HVQCONV" run "$pipe" --input "$input" --output "$outdir/$RD_TAG.hvq" \
            -r "$outdir/$RD_TAG.json" --threads "$THREADS" --force \
            "$@" >"$log" 2>&1 ||
            { echo "bench: hvqconv run failed ($spec), see $log" >&2; return 1; }
        RD_CONTAINER=$outdir/$RD_TAG.hvq
        "$HVQCONV" decode -q "$outdir/$RD_TAG.hvq" -o "$RD_DECODED" --dtype f32 \
            --threads "$THREADS" --force >>"$log" 2>&1 ||
            { echo "bench: hvqconv decode failed, see $log" >&2; return 1; }
        ;;
    dequant)
        # F32, so that nothing is rounded after the run measured its error
        "$HVQCONV" run "$pipe" --input "$input" --output "$RD_DECODED" \
            -r "$outdir/$RD_TAG.json" --threads "$THREADS" --force \
            "$@" --set stages.writer.dtype=f32 --set stages.writer.format=gguf \
            >"$log" 2>&1 ||
            { echo "bench: hvqconv run failed ($spec), see $log" >&2; return 1; }
        ;;
    *)
        echo "bench: $spec: cannot tell the writer (got '$writer'): want hvq or dequant" >&2
        return 1
        ;;
    esac
}
