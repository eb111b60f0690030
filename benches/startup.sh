#!/usr/bin/env bash
# startup.sh — how long from launching `profiler record -- CMD` until CMD runs (issue 9: at most
# 0.2 s)? CMD prints the time it started (`date +%s.%N`); the launch time is taken just before.
# Runs RUNS times and prints the median and the worst delay, next to `perf record -g -- CMD` (when
# installed), which starts its command once its events are open. The profiler execs the command
# only once sampling is on, so the delay covers loading and verifying the BPF programs.
#
# Usage (root; build first with `cargo build --release`):
#   sudo benches/startup.sh
#   RUNS=20 PROFILER=/path/to/profiler sudo -E benches/startup.sh
# Needs: bash 5. Not run by CI. Takes about RUNS x 0.5 s per tool.
set -euo pipefail

RUNS=${RUNS:-10}
# shellcheck source=benches/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bench_checks
bench_setup
check_idle

# delays NAME CMD...: RUNS launches of CMD -- sh -c 'date +%s.%N'; prints "NAME median max" (s).
delays() {
    local name=$1 i t0 t1
    shift
    local -a d=()
    for ((i = 0; i < RUNS; i++)); do
        t0=$EPOCHREALTIME
        t1=$("$@" -- sh -c 'date +%s.%N' 2>/dev/null | tail -1)
        d+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')")
    done
    printf '%s\n' "${d[@]}" | sort -g |
        awk -v n="$name" '{ v[NR] = $1 } END { printf "  %-10s %8s %8s\n", n, v[int((NR + 1) / 2)], v[NR] }'
}

echo "start-up: launch to the command's first instruction, $RUNS runs, kernel $(uname -r)"
printf '  %-10s %8s %8s\n' tool "median s" "max s"
delays profiler "$PROFILER" record -o "$tmp/out.folded"
if command -v perf >/dev/null; then delays perf perf record -q -g -o "$tmp/perf.data"; fi
