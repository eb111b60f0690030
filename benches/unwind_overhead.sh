#!/usr/bin/env bash
# unwind_overhead.sh — what does unwinding user stacks from .eh_frame in BPF cost (issue 4,
# "Benchmark")?
#
# a. BPF run time per sample of `on_sample` by user stack depth. A C fixture built here with
#    `gcc -O2 -fomit-frame-pointer` (no frame pointers) recurses (noinline, work after each
#    call: no tail calls) so that its stacks are ~13, ~30 and ~300 frames deep, and spins at
#    the bottom, one copy per CPU. For each depth: `profiler record -F $FREQ_A -d $DURATION_A
#    -p <the copies>` with BPF run-time stats on; prints run_time_ns / run_cnt of
#    on_sample, the same per complete walk (see below), the frames of the stacks in the
#    output, and how the walks ended (`unwind_*` counters of --stats-json).
# b. W1-like workload: `xz -9 -T1` compressing generated data and python3.11 running a
#    recursive pure-Python function (Debian's binaries, no frame pointers) keep both CPUs busy.
#    `profiler record -a -F 19 -d $DURATION_W1` (BPF stats on), then `perf record --call-graph
#    dwarf -F 19 -a -- sleep $DURATION_W1` on the same workload, then `perf script` over its
#    data with the workload stopped. Side by side: user+sys CPU as % of one core (whole run
#    from /usr/bin/time's rusage; steady state from the threads' schedstat run time, from
#    WARMUP s after the first sample until sampling stops, for perf from WARMUP s after its
#    start to the end of its `sleep`), BPF time per sample and as % of one core, peak RSS,
#    output size, the share of xz and python3.11 stacks that reach `_start`, and perf script's
#    cost; for the profiler also its steady CPU by thread and the time to its first sample.
#
# BPF time "per walk": on_sample also runs for the idle task and, with -p, for every other
# process's sample (it then returns at once), and the fixture's first samples end early (its
# tables are not loaded yet). With the machine otherwise idle nearly all runs are full walks;
# with other work on it, the script counts the other runs at the cost measured in a baseline
# session (-p on a sleeping process while the fixture spins): per walk = (run_time_ns -
# (run_cnt - complete) * baseline) / complete, complete = unwind_outermost + unwind_fp_end.
#
# Usage (root; build first with `cargo build --release`):
#   sudo benches/unwind_overhead.sh
#   PROFILER=/path/to/profiler DURATION_A=10 DURATION_W1=30 sudo -E benches/unwind_overhead.sh
#   PARTS=a (or PARTS=b) runs one part only. W1_SCOPE=pids profiles only the workload's two
#   processes (-p) in part b, instead of the whole system (-a): on a machine where other work
#   runs, its processes' tables and samples would otherwise count in our figures and perf's.
# Run it on an otherwise idle machine (it warns if the CPUs are > 10% busy before it starts).
# Needs: bash 5, gcc, xz, python3.11, perf (part b's comparison; skipped without it),
# /usr/bin/time (optional). Not run by CI. Takes about 4 x (DURATION_A + 3) + 2 x DURATION_W1
# + 30 s (defaults: about 2.5 minutes); `perf script` alone can take minutes when perf.data also
# holds samples of other programs with large debug info (addr2line for inlined frames).
# The targets: <= 5 us of BPF time per sample at ~13 frames; <= 0.05% of one core in total
# at 19 Hz on W1 with 100% of stacks complete.
set -euo pipefail

FREQ_A=${FREQ_A:-999}
DURATION_A=${DURATION_A:-10}
FRAMES=${FRAMES:-13 30 300}   # user frames per stack in part a
FREQ_W1=${FREQ_W1:-19}
DURATION_W1=${DURATION_W1:-30}
WARMUP=${WARMUP:-5}          # seconds after the first sample before the steady state
POLL=${POLL:-0.1}            # seconds between /proc readings
PARTS=${PARTS:-ab}
W1_SCOPE=${W1_SCOPE:-all}    # b: all (-a, like the peers' figures) or pids (-p xz, python)
[[ $W1_SCOPE == all || $W1_SCOPE == pids ]] || { echo "W1_SCOPE: all or pids" >&2; exit 1; }
# shellcheck source=benches/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bench_checks
need_cmd gcc
if [[ $PARTS == *b* ]]; then
    need_w1
    command -v perf >/dev/null || echo "note: perf not found: no perf comparison" >&2
fi
bench_setup
check_idle

# --- polling ---------------------------------------------------------------------------------
# poll PID [bpf] [SECONDS]: until PID exits (or turns zombie), keep its last reading (read_pid in
# lib.sh: HWM_KB, NS — the on-CPU time of all its threads, threads that have exited still
# count — TASK_NS by thread, with "bpf" RUN_NS / RUN_CNT of on_sample, T_LAST). The steady state:
# from the first reading WARMUP s after the first sample ("bpf"; T_SAMPLING: when run_cnt was
# first > 0) or after the start (mark 0), to the last reading at which run_cnt still grew
# ("bpf": sampling has stopped after it, the rest is end-of-run work) or before SECONDS after
# the start (mark 1). Only builtins in the loop.
warmup_us=$(awk -v w="$WARMUP" 'BEGIN { printf "%d", w * 1e6 }')
poll() {
    local pid=$1 want_bpf=${2:-} scan=${2:+scan} warm_at="" end_at="" last_cnt=0 in_window
    poll_reset
    T_SAMPLING=""
    if [[ -z $want_bpf ]]; then
        warm_at=$((NOW_US + warmup_us))
        [[ -n ${3:-} ]] && end_at=$((NOW_US + ${3} * 1000000))
    fi
    while read_pid "$pid" "$scan"; do
        [[ -z $BPF_SAMPLE_FD ]] || scan=""          # on_sample found: no more looking
        if [[ -z $warm_at && $RUN_CNT -gt 0 ]]; then
            T_SAMPLING=$T_LAST warm_at=$((NOW_US + warmup_us))
        fi
        if [[ -z $T0 && -n $warm_at && $NOW_US -ge $warm_at ]]; then mark 0; fi
        if [[ -n $want_bpf ]]; then                 # still sampling?
            in_window=$((RUN_CNT > last_cnt))
        else
            in_window=$((${end_at:-$NOW_US} >= NOW_US))
        fi
        if [[ -n $T0 ]] && ((in_window)); then mark 1; fi
        last_cnt=$RUN_CNT
        nap "$POLL"
    done
}

# measure NAME [bpf] [SECONDS] CMD...: run CMD (under /usr/bin/time if installed), poll() it, and
# set WALL (s), CPU (user+sys % of one core over the whole run: rusage, else schedstat),
# CPU_STEADY (schedstat over the steady state, see poll), STEADY (its length, s), RSS (MB),
# BPF_US / BPF_US_STEADY (µs per on_sample run), BPF_PCT / BPF_PCT_STEADY (% of one core),
# START_S (s from start to the first on_sample run, to the poll's resolution). The tool's
# stderr is in $tmp/NAME.err.
measure() {
    local name=$1 bpf=$2 seconds=$3; shift 3
    tool_start "$name" "$@"
    poll "$TOOL_PID" "$bpf" "$seconds"
    tool_wait "$name failed"
    run_figures 3
    START_S=$(awk -v a="$T_START" -v b="${T_SAMPLING:-0}" 'BEGIN { if (b > 0) printf "%.1f", b - a; else print "?" }')
    # shellcheck disable=SC2034  # BPF_PCT (whole run): one of the figures measure sets
    read -r CPU_STEADY BPF_US BPF_US_STEADY BPF_PCT BPF_PCT_STEADY < <(awk \
        -v n0="$NS0" -v n1="$NS1" -v r="$RUN_NS" -v r0="$RUN_NS0" -v r1="$RUN_NS1" \
        -v c="$RUN_CNT" -v c0="$RUN_CNT0" -v c1="$RUN_CNT1" -v st="$STEADY" -v w="$WALL" 'BEGIN {
            cpu = "?"; us = "-"; us_st = "-"; pct_st = "?"
            if (st > 0) cpu = sprintf("%.3f", 100 * (n1 - n0) / 1e9 / st)
            if (c > 0) us = sprintf("%.2f", r / c / 1000)
            if (c1 > c0) us_st = sprintf("%.2f", (r1 - r0) / (c1 - c0) / 1000)
            if (st > 0) pct_st = sprintf("%.4f", 100 * (r1 - r0) / 1e9 / st)
            printf "%s %s %s %.4f %s\n", cpu, us, us_st, 100 * r / 1e9 / w, pct_st }')
}

# BPF run-time stats (run_time_ns, run_cnt in a program's fdinfo): held on by the helper of
# lib.sh (a BPF_ENABLE_STATS fd), which counts apart from kernel.bpf_stats_enabled: another
# script restoring that sysctl meanwhile cannot turn them off under us. Without the helper, the
# sysctl is used (and checked afterwards).
bpf_stats_helper

# thread_ms: the steady-state CPU of the last measured tool's threads, by name, in ms per second.
thread_ms() {
    local t out=""
    local -A n0=() n1=()
    by_comm TASK_NS0 n0
    by_comm TASK_NS1 n1
    for t in "${!n1[@]}"; do
        out+=$(awk -v c="$t" -v n="$((${n1[$t]} - ${n0[$t]:-0}))" -v st="$STEADY" \
            'BEGIN { if (st > 0) printf "%s %.2f, ", c, n / 1e6 / st }')
    done
    echo "${out%, }"
}
# walks JSON: "complete% (outermost + fp_end of all walks) detail"
walks() {
    local j=$1 k list="" total=0 n
    for k in outermost fp_end no_mapping no_info bad_cfa read_fault depth_limit unsupported; do
        n=$(json_num "unwind_$k" "$j"); n=${n:-0}
        total=$((total + n)); list+="$k=$n "
    done
    awk -v o="$(json_num unwind_outermost "$j")" -v f="$(json_num unwind_fp_end "$j")" \
        -v t="$total" -v l="$list" 'BEGIN { printf "%s%% of %d walks complete (%s)",
            t ? sprintf("%.1f", 100 * (o + f) / t) : "?", t, l }'
}
# mean_frames FOLDED COMM [rooted]: mean frames per sample of COMM (thread name excluded) in
# folded output; with "rooted", over the stacks that reach _start only.
mean_frames() {
    awk -v comm="$2" -v rooted="${3:-}" '{ c = $NF; s = $0; sub(/ [0-9]+$/, "", s)
        n = split(s, f, ";"); if (f[1] != comm || (rooted != "" && f[2] != "_start")) next
        t += c; fr += c * (n - 1) }
        END { if (t) printf "%.1f", fr / t; else print "-" }' "$1"
}
# The outermost frame of a complete stack is the return address in _start: `_start` by name,
# or, in a stripped executable, an address within 64 bytes after its ELF entry point.
entry() { readelf -h "$1" 2>/dev/null | awk '/Entry point/ { print $NF }'; }
AWK_HEX='function hex(s,   i, v) { s = tolower(s); sub(/^0x/, "", s); v = 0
    for (i = 1; i <= length(s); i++) v = v * 16 + index("0123456789abcdef", substr(s, i, 1)) - 1
    return v }
function at_start(addr) { return entry != "" && hex(addr) >= hex(entry) && hex(addr) < hex(entry) + 64 }'
# root_share FOLDED COMM EXE: % of COMM's samples in folded output whose outermost frame is _start.
root_share() {
    awk -v comm="$2" -v mod="$(basename "$3")" -v entry="$(entry "$3")" "$AWK_HEX"'
        { c = $NF; s = $0; sub(/ [0-9]+$/, "", s); split(s, f, ";")
          if (f[1] != comm) next; t += c
          if (f[2] == "_start" || (index(f[2], mod "+0x") == 1 && at_start(substr(f[2], length(mod) + 2)))) r += c }
        END { if (t) printf "%.1f%% of %d", 100 * r / t, t; else printf "no samples" }' "$1"
}
# root_share_perf SCRIPT_OUTPUT COMM EXE: the same over `perf script` output, where a sample is a
# header line (comm first), one line per frame (innermost first), and a blank line.
root_share_perf() {
    awk -v comm="$2" -v exe="$(readlink -f "$3")" -v entry="$(entry "$3")" "$AWK_HEX"'
        function done() { if (cur == comm) { t++
                if (last ~ / _start\+/ || (index(last, "(" exe ")") && at_start(lastaddr))) r++ }
            cur = "" }
        /^[^ \t]/ { cur = $1; last = ""; next }
        /^[ \t]+[0-9a-f]+ / { last = $0; lastaddr = $1; next }
        /^$/ { done() }
        END { done(); if (t) printf "%.1f%% of %d", 100 * r / t, t; else printf "no samples" }' "$1"
}

# --- a. BPF time per sample by stack depth ------------------------------------------------------
cat >"$tmp/deep.c" <<'EOF'
/* Recurses DEPTH frames (noinline; work after each call, so no tail calls), then spins at the
 * bottom for SECONDS. With COPIES > 1 it forks COPIES - 1 more copies first. Its stacks are
 * DEPTH + 6 frames: spin, recurse x (DEPTH + 1), main, __libc_start_call_main,
 * __libc_start_main, _start.  Usage: deep DEPTH SECONDS [COPIES] */
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>

static volatile unsigned long sink;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline)) static void spin(double end)
{
	while (now() < end)
		for (unsigned long i = 0; i < 2000000; i++)
			sink += i * i;
}

__attribute__((noinline)) static unsigned long recurse(int n, double end)
{
	if (n <= 0) {
		spin(end);
		return sink;
	}
	unsigned long r = recurse(n - 1, end);
	sink += r + n;
	return r ^ (unsigned long)n;
}

int main(int argc, char **argv)
{
	int depth = argc > 1 ? atoi(argv[1]) : 10;
	double seconds = argc > 2 ? atof(argv[2]) : 10;
	int copies = argc > 3 ? atoi(argv[3]) : 1;
	double end = now() + seconds;
	for (int i = 1; i < copies; i++)
		if (fork() == 0)
			break;
	recurse(depth, end);
	while (wait(NULL) > 0)
		;
	return 0;
}
EOF

# start_deep FRAMES SECONDS: one fixture copy per CPU; sets DEEP_PIDS (-p arguments).
start_deep() {
    local p c
    "$tmp/deep" $(($1 - 6)) "$2" "$(nproc)" & p=$!; pids+=("$p")
    sleep 1   # the copies forked and spinning at full depth
    DEEP_PIDS=(-p "$p")
    for c in $(pgrep -P "$p" || true); do DEEP_PIDS+=(-p "$c"); pids+=("$c"); done
}

part_a() {
    local frames base complete per_walk j
    gcc -O2 -fomit-frame-pointer -o "$tmp/deep" "$tmp/deep.c"
    bpf_stats_on
    echo "== a. baseline: -p on a sleeping process while the fixture spins ..." >&2
    sleep 1000 & pids+=($!)
    local sleeper=$!
    start_deep 13 $((DURATION_A + 3))
    measure base bpf "" "$PROFILER" record -F "$FREQ_A" -d "$DURATION_A" -p "$sleeper" \
        -o "$tmp/base.folded" --stats-json "$tmp/base.json"
    stop_workload
    base=$(awk -v r="$RUN_NS" -v c="$RUN_CNT" 'BEGIN { printf "%.0f", c ? r / c : 0 }')
    A_ROWS=() A_NOTES=()
    for frames in $FRAMES; do
        echo "== a. ${frames} frames: profiler record -F $FREQ_A -d $DURATION_A -p ..." >&2
        start_deep "$frames" $((DURATION_A + 3))
        j=$tmp/a$frames.json
        measure "a$frames" bpf "" "$PROFILER" record -F "$FREQ_A" -d "$DURATION_A" "${DEEP_PIDS[@]}" \
            -o "$tmp/a$frames.folded" --stats-json "$j"
        stop_workload
        complete=$(($(json_num unwind_outermost "$j") + $(json_num unwind_fp_end "$j")))
        per_walk=$(awk -v r="$RUN_NS" -v c="$RUN_CNT" -v w="$complete" -v b="$base" \
            'BEGIN { if (w > 0) printf "%.2f", (r - (c - w) * b) / w / 1000; else print "-" }')
        A_ROWS+=("$(printf '%-8s %10s %10s %10s %12s %12s %10s' "$frames" "$RUN_CNT" "$complete" \
            "$(mean_frames "$tmp/a$frames.folded" deep rooted)" "$BPF_US" "$per_walk" \
            "$(awk -v o="$(json_num unwind_outermost "$j")" -v s="$(json_num samples "$j")" \
                'BEGIN { printf "%.1f%%", s ? 100 * o / s : 0 }')")")
        A_NOTES+=("  ${frames} frames: $(walks "$j")")
        ((RUN_CNT >= $(json_num bpf_samples "$j"))) ||
            A_NOTES+=("    (run_cnt read before the last samples: the per-walk figure is approximate)")
    done
    bpf_stats_off
    echo
    echo "a. BPF time of on_sample by user stack depth: fixture without frame pointers, one copy per"
    echo "   CPU ($(nproc)), profiler record -F $FREQ_A -d $DURATION_A -p <copies>, warm caches"
    printf '%-8s %10s %10s %10s %12s %12s %10s\n' frames runs complete "frames" "us per run" \
        "us per walk" "reach root"
    printf '%s\n' "${A_ROWS[@]}"
    echo "   frames: mean frames of the output's stacks that reach _start (kernel frames of the rare"
    echo "   kernel-mode samples included); runs: on_sample run_cnt (idle task, other processes and"
    echo "   the fixture's samples before its tables were loaded included); complete: walks that"
    echo "   reached the outermost frame; us per walk: BPF time per complete walk, the other runs"
    echo "   counted at the baseline's $(awk -v b="$base" 'BEGIN { printf "%.2f", b / 1000 }') us" \
        "(-p on a sleeping process; an upper bound);"
    echo "   reach root: unwind_outermost / samples. Walk endings (--stats-json):"
    printf '%s\n' "${A_NOTES[@]}"
    echo "   target: <= 5 us per sample at ~13 frames (at 19 Hz under load: see b)"
}

# --- b. W1: xz + python3.11 at 19 Hz, profiler vs perf --call-graph dwarf ---------------------------
# The workload, started afresh for each tool: start_w1 (lib.sh).
part_b() {
    local ours=() theirs=() ps_wall="-" ps_user="-" ps_sys="-" j=$tmp/w1.json pycomm
    local ps_ni_wall="-" ps_ni_user="-" ps_ni_sys="-"
    local -a scope_ours scope_perf
    pycomm=$(basename "$PYTHON")
    echo "== b. W1: profiler record -F $FREQ_W1 -d $DURATION_W1 ($W1_SCOPE) ..." >&2
    start_w1
    if [[ $W1_SCOPE == pids ]]; then   # the loop too, so that a restarted xz is followed
        scope_ours=(-p "$W1_LOOP" -p "${W1_PIDS[0]}" -p "${W1_PIDS[1]}")
    else
        scope_ours=(-a)
    fi
    bpf_stats_on
    measure w1 bpf "" "$PROFILER" record "${scope_ours[@]}" -F "$FREQ_W1" -d "$DURATION_W1" \
        -o "$tmp/w1.folded" --stats-json "$j"
    bpf_stats_off
    stop_workload
    ours=("$CPU" "$CPU_STEADY" "$BPF_PCT_STEADY"
        "$(awk -v a="$CPU_STEADY" -v b="$BPF_PCT_STEADY" 'BEGIN { printf "%.3f", a + b }')"
        "$BPF_US_STEADY" "$RSS" "$(size_h "$tmp/w1.folded")")
    local ours_samples ours_bpf_whole=$BPF_US ours_frames ours_start=$START_S ours_threads
    ours_threads=$(thread_ms)
    ours_samples=$(json_num samples "$j")
    ours_frames="xz $(mean_frames "$tmp/w1.folded" xz), $pycomm $(mean_frames "$tmp/w1.folded" "$pycomm")"
    local ours_root
    ours_root="xz $(root_share "$tmp/w1.folded" xz "$XZ");"
    ours_root+=" $pycomm $(root_share "$tmp/w1.folded" "$pycomm" "$PYTHON")"

    local perf_root="-" perf_samples="-"
    if command -v perf >/dev/null; then
        echo "== b. W1: perf record --call-graph dwarf -F $FREQ_W1 ($W1_SCOPE) -- sleep $DURATION_W1 ..." >&2
        start_w1
        if [[ $W1_SCOPE == pids ]]; then
            scope_perf=(-p "${W1_PIDS[0]},${W1_PIDS[1]}")
        else
            scope_perf=(-a)
        fi
        export PERF_BUILDID_DIR=$tmp/buildid   # keep perf's build-id cache out of ~/.debug
        measure perf "" "$DURATION_W1" perf record --call-graph dwarf -F "$FREQ_W1" "${scope_perf[@]}" \
            -o "$tmp/perf.data" -- sleep "$DURATION_W1"
        theirs=("$CPU" "$CPU_STEADY" "-" "$CPU_STEADY" "-" "$RSS" "$(size_h "$tmp/perf.data")")
        perf_samples=$(sed -n 's/.*(\([0-9]*\) samples).*/\1/p' "$tmp/perf.err")
        stop_workload   # perf script on idle CPUs
        TIMEFORMAT='%R %U %S'
        { time perf script -i "$tmp/perf.data" >"$tmp/perf.txt" 2>/dev/null; } 2>"$tmp/script.time"
        read -r ps_wall ps_user ps_sys <"$tmp/script.time"
        { time perf script --no-inline -i "$tmp/perf.data" >/dev/null 2>&1; } 2>"$tmp/script.time"
        read -r ps_ni_wall ps_ni_user ps_ni_sys <"$tmp/script.time"
        perf_root="xz $(root_share_perf "$tmp/perf.txt" xz "$XZ");"
        perf_root+=" $pycomm $(root_share_perf "$tmp/perf.txt" "$pycomm" "$PYTHON")"
    fi
    stop_workload

    echo
    echo "b. W1-like: xz -9 -T1 + $pycomm (recursive pure Python) on $(nproc) CPUs, ${FREQ_W1} Hz," \
        "${DURATION_W1}s per tool, ${scope_ours[0]}$([[ $W1_SCOPE == pids ]] && echo " (xz, $pycomm)")"
    local fmt='%-22s %10s %10s %9s %10s %10s %8s %9s\n'
    # shellcheck disable=SC2059
    {
        printf "$fmt" tool "CPU% total" "CPU% stdy" "BPF%" "stdy+BPF" "BPF us/smp" "RSS MB" data
        printf "$fmt" "profiler record" "${ours[@]}"
        ((${#theirs[@]})) && printf "$fmt" "perf record dwarf" "${theirs[@]}"
    }
    echo "   CPU% = user+sys of the tool's process as % of one core. total: whole run (rusage at exit,"
    echo "   includes start-up table extraction and end-of-run symbolization); stdy: steady state"
    echo "   (schedstat of its threads) from ${WARMUP}s after the first sample until sampling stopped;"
    echo "   perf: from ${WARMUP}s after its start to the end of its sleep. BPF% and BPF us/smp: on_sample"
    echo "   over the steady state (whole run: ${ours_bpf_whole} us per run)."
    echo "   The profiler took ${ours_start}s from its start to its first sample."
    echo "   target: stdy+BPF <= 0.05% of one core with 100% of stacks complete."
    echo "   profiler: ${ours_samples} samples; $(walks "$j")"
    echo "             steady CPU by thread, ms per s: ${ours_threads}"
    echo "             $(json_num pids_seen "$j") processes seen, $(json_num unwind_tables_loaded "$j")" \
        "unwind tables loaded ($(json_num unwind_buckets_used "$j") buckets), $(json_num syncs "$j") map syncs"
    echo "             frames per sample: ${ours_frames}"
    echo "             stacks reaching _start: ${ours_root}"
    if ((${#theirs[@]})); then
        echo "   perf:     ${perf_samples} samples; stacks reaching _start: ${perf_root}"
        echo "             'perf script' over perf.data (idle CPUs): ${ps_wall}s wall, ${ps_user}s user +" \
            "${ps_sys}s sys;"
        echo "             with --no-inline (no addr2line for inlined frames): ${ps_ni_wall}s wall," \
            "${ps_ni_user}s user + ${ps_ni_sys}s sys."
        echo "             perf's in-kernel cost per sample (stack walk, 8 KB stack copy into the ring"
        echo "             buffer) is not visible from user space: its CPU% is the perf process."
    fi
}

echo
echo "unwind overhead: kernel $(uname -r), $(nproc) CPUs, CPUs ${BUSY0}% busy before start"
[[ $PARTS == *a* ]] && part_a
[[ $PARTS == *b* ]] && part_b
exit 0
