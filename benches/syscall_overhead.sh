#!/usr/bin/env bash
# syscall_overhead.sh — what does a running profiler add to every system call on the machine?
#
# A tool that enables any syscall tracepoint (`syscalls/*`, `raw_syscalls/*`) puts every task on
# the kernel's slow syscall path while it is attached, whichever syscall it watches: that cost
# lands on the profiled workload, not on the tool, so the tool's own CPU figures never show it.
# This bench times a tight loop of `getppid` (ROUNDS times LOOPS calls, a C program built here)
# with nothing attached, then with each tool attached in turn (`profiler record -a -F $FREQ`;
# `perf record -a -g` and a bpftrace `syscalls:sys_exit_mmap` probe when installed, for
# comparison), interleaved round by round, and prints the median ns per call and its ratio to
# the baseline.
#
# Usage (root; build first with `cargo build --release`):
#   sudo benches/syscall_overhead.sh
#   ROUNDS=5 FREQ=19 PROFILER=/path/to/profiler sudo -E benches/syscall_overhead.sh
# Needs: bash 5, cc. Not run by CI. Takes about ROUNDS x 15 s.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
LOOPS=${LOOPS:-5000000}
FREQ=${FREQ:-19}
# shellcheck source=benches/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bench_checks
need_cmd cc
bench_setup
check_idle

cat >"$tmp/calls.c" <<'C'
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 5000000;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++)
        syscall(SYS_getppid);
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%.1f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n);
    return 0;
}
C
cc -O2 -o "$tmp/calls" "$tmp/calls.c"

declare -A runs=()
# measure NAME CMD...: starts CMD (unless NAME is "none"), waits for it to attach, times the loop.
measure() {
    local name=$1 ns
    shift
    if [[ $name != none ]]; then
        "$@" >/dev/null 2>"$tmp/$name.err" &
        tool=$!
        sleep 3   # loaded and attached
    fi
    ns=$("$tmp/calls" "$LOOPS")
    if [[ $name != none ]]; then
        kill -INT "$tool" 2>/dev/null || true
        wait "$tool" 2>/dev/null || true
        tool=""
    fi
    runs[$name]+="$ns "
}

tools=(none profiler)
command -v perf >/dev/null && tools+=(perf)
command -v bpftrace >/dev/null && tools+=(bpftrace)
for ((r = 1; r <= ROUNDS; r++)); do
    for t in "${tools[@]}"; do
        case $t in
        none) measure none ;;
        profiler) measure profiler "$PROFILER" record -a -F "$FREQ" -d 60 -o "$tmp/out.folded" ;;
        perf) measure perf perf record -a -g -F "$FREQ" -o "$tmp/perf.data" -- sleep 60 ;;
        bpftrace) measure bpftrace bpftrace -e 'tracepoint:syscalls:sys_exit_mmap { @n = count(); }' ;;
        esac
    done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
base=$(echo "${runs[none]}" | median)
echo "syscall overhead: getppid x $LOOPS, $ROUNDS rounds, kernel $(uname -r), CPUs ${BUSY0}% busy before start"
printf '  %-10s %12s %8s   %s\n' tool "ns/call" ratio "runs (ns/call)"
for t in "${tools[@]}"; do
    m=$(echo "${runs[$t]}" | median)
    printf '  %-10s %12s %8s   %s\n' "$t" "$m" "$(awk -v a="$m" -v b="$base" 'BEGIN { printf "%.2f", a / b }')" "${runs[$t]}"
done
