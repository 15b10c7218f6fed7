#!/usr/bin/env bash
# Runs the fuzz targets with libFuzzer; see fuzz/README.md.
#
#   fuzz/run.sh [--seconds N] [--runs R] [--jobs J] [--build-dir DIR] [--no-build] [TARGET...]
#   fuzz/run.sh --totals [--build-dir DIR]
#
# Configures (first time only: clang, --enable-fuzzing) and builds DIR
# (default /tmp/hvqconv-fuzz), then runs each TARGET (default: all) for N
# seconds (default 60), or until R executions if --runs is given and they
# come first, with J fuzzing processes (default 1) over a working
# corpus DIR/corpus/TARGET, seeded from fuzz/corpus/TARGET and
# fuzz/regress/TARGET and kept between runs (the committed seeds are never
# written). Prints per target the executions, exec/s, coverage and whether
# it crashed; a crashing input is saved as DIR/crashes/TARGET/crash-* (or
# leak-*, timeout-*, oom-*), its report beside it (.log), and the exit
# status is 1. Every run is appended
# to DIR/campaign.tsv; --totals sums it per target. --no-build runs the
# targets already built in DIR (a long campaign, while the sources change).
set -euo pipefail

src=$(cd "$(dirname "$0")/.." && pwd)
seconds=60 runs=0 jobs=1 build=/tmp/hvqconv-fuzz totals=0 nobuild=0
all_targets="safetensors safetensors_index gguf npy npz imatrix yaml hvq tokenizer"
targets=""
while [ $# -gt 0 ]; do
    case $1 in
        --seconds) seconds=$2; shift 2 ;;
        --seconds=*) seconds=${1#*=}; shift ;;
        --runs) runs=$2; shift 2 ;;
        --runs=*) runs=${1#*=}; shift ;;
        --jobs) jobs=$2; shift 2 ;;
        --jobs=*) jobs=${1#*=}; shift ;;
        --build-dir) build=$2; shift 2 ;;
        --build-dir=*) build=${1#*=}; shift ;;
        --totals) totals=1; shift ;;
        --no-build) nobuild=1; shift ;;
        -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) case " $all_targets " in
               *" $1 "*) targets="$targets $1"; shift ;;
               *) echo "run.sh: unknown target '$1' (targets: $all_targets)" >&2; exit 2 ;;
           esac ;;
    esac
done
[ -n "$targets" ] || targets=$all_targets
mkdir -p "$build"
build=$(cd "$build" && pwd)

if [ $totals = 1 ]; then
    [ -f "$build/campaign.tsv" ] || { echo "no runs recorded in $build/campaign.tsv"; exit 0; }
    awk -F'\t' '{ s[$2] += $3; e[$2] += $4; if ($7 != "ok") c[$2]++; if (!($2 in o)) o[$2] = n++ }
        END { printf "%-18s %10s %14s %9s %8s\n", "target", "seconds", "executions", "exec/s", "crashes";
              for (t in o) printf "%-18s %10d %14d %9d %8d\n", t, s[t], e[t], s[t] ? e[t] / s[t] : 0, c[t] }' \
        "$build/campaign.tsv"
    exit 0
fi

# Build (configure once).
if [ $nobuild = 1 ]; then
    for t in $targets; do
        [ -x "$build/fuzz/fuzz_$t" ] || { echo "run.sh: $build/fuzz/fuzz_$t is not built" >&2; exit 2; }
    done
elif [ ! -f "$build/Makefile" ]; then
    if [ -f "$src/config.status" ]; then
        echo "run.sh: $src is configured in place, so it cannot be built out of tree;" \
             "run 'make distclean' there first" >&2
        exit 2
    fi
    echo "run.sh: configuring a clang libFuzzer build in $build"
    (cd "$build" && "$src/configure" -q CC=clang CXX=clang++ CFLAGS="-O1 -g" \
        --enable-fuzzing) > "$build/configure.log" 2>&1 ||
        { cat "$build/configure.log" >&2; exit 2; }
fi
if [ $nobuild = 0 ]; then
    echo "run.sh: building the fuzz targets in $build"
    make -C "$build" -j2 fuzz > "$build/make.log" 2>&1 || { tail -n 40 "$build/make.log" >&2; exit 2; }
fi

dict_of() {
    case $1 in
        safetensors|safetensors_index) echo safetensors ;;
        gguf|imatrix) echo gguf ;;
        npy|npz) echo npy ;;
        *) echo "$1" ;;
    esac
}

# The inputs libFuzzer saved in $1 that fail a run (not slow-unit-*, which
# only reports a slow input), newest first with -t.
artifacts() {
    ls ${2:-} "$1" | grep -E '^(crash|leak|timeout|oom)-' | grep -v '\.log$' || true
}

mkdir -p "$build/logs"
failed=0
summary=""
for t in $targets; do
    work=$build/corpus/$t crashes=$build/crashes/$t
    mkdir -p "$work" "$crashes"
    for d in "$src/fuzz/corpus/$t" "$src/fuzz/regress/$t"; do
        [ -d "$d" ] && find "$d" -maxdepth 1 -type f -exec cp -n {} "$work/" \;
    done
    dict=$src/fuzz/$(dict_of "$t").dict
    log=$build/logs/$t.log
    before=$(artifacts "$crashes" | wc -l)
    args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=512
          -close_fd_mask=3 -print_final_stats=1 -artifact_prefix="$crashes/")
    [ -f "$dict" ] && args+=(-dict="$dict")
    [ "$jobs" -gt 1 ] && args+=(-fork="$jobs")
    [ "$runs" -gt 0 ] && args+=(-runs="$runs")
    echo "run.sh: $t for ${seconds}s (log $log)"
    start=$(date +%s)
    rc=0
    HVQ_TOP_BUILDDIR=$build "$build/fuzz/fuzz_$t" "${args[@]}" "$work" > "$log" 2>&1 || rc=$?
    secs=$(( $(date +%s) - start ))
    # The last status line: "#N ... cov: C ft: F corp: K/S ... exec/s: E".
    last=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
    execs=$(grep -E '^stat::number_of_executed_units:' "$log" | awk '{print $2}' | tail -n 1)
    [ -n "$execs" ] || execs=$(echo "$last" | sed -E 's/^#([0-9]+).*/\1/')
    [ -n "$execs" ] || execs=0
    cov=$(echo "$last" | sed -nE 's/.*cov: ([0-9]+).*/\1/p')
    ft=$(echo "$last" | sed -nE 's/.*ft: ([0-9]+).*/\1/p')
    corp=$(ls "$work" | wc -l)
    rate=$(( secs > 0 ? execs / secs : execs ))
    after=$(artifacts "$crashes" | wc -l)
    result=ok
    if [ "$rc" -ne 0 ] || [ "$after" -gt "$before" ]; then
        new=$(artifacts "$crashes" -t | head -n 1)
        # keep the report beside the input (the next run rewrites $log)
        [ -n "$new" ] && cp "$log" "$crashes/$new.log"
        result="CRASH ${new:+$crashes/$new} (exit $rc; report ${new:+$crashes/$new.log})"
        failed=1
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%FT%TZ)" "$t" "$secs" "$execs" \
        "${cov:-?}" "${ft:-?}" "$result" >> "$build/campaign.tsv"
    summary+=$(printf '%-18s %6ss %12s execs %8s/s  cov %6s  ft %6s  corpus %5s  %s' \
        "$t" "$secs" "$execs" "$rate" "${cov:-?}" "${ft:-?}" "$corp" "$result")$'\n'
done
echo
printf '%s' "$summary"
exit $failed
