# Shared by bench/run.sh and bench/matrix_bench.sh (sourced; needs SRC, DIR
# and NCPU set).

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
