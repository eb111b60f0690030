#!/usr/bin/env bash
# record_overhead.sh — what does `profiler record -a` cost, compared with `perf record -a -g`?
#
# With both CPUs kept busy by two CPU-bound processes (a small C program compiled
# here, hot loop under nested functions, frame pointers kept), it runs, one after
# the other and for DURATION seconds each at FREQ Hz:
#   1. profiler record -a -F $FREQ -d $DURATION  (kernel.bpf_stats_enabled=1 meanwhile)
#   2. perf record -F $FREQ -a -g -- sleep $DURATION, then `perf script` over its data
# and prints, per tool: samples, lost samples, user+sys CPU as % of one core over
# its wall time (whole run from /usr/bin/time's rusage, and up to just before exit
# from /proc/<pid>/stat polled every POLL s), peak RSS, output size; for ours the
# BPF run time per sample of `on_sample` (run_time_ns / run_cnt, read from the
# fdinfo of the profiler's BPF program fd just before it exits); for perf the cost
# of `perf script` over its perf.data.
#
# Usage (root, from anywhere; build first with `cargo build --release`):
#   sudo benches/record_overhead.sh
#   DURATION=10 FREQ=99 PROFILER=/path/to/profiler sudo -E benches/record_overhead.sh
# Run it on an otherwise idle machine (it warns if the CPUs are > 10% busy before it starts).
# Needs: cc, perf; /usr/bin/time (optional); python3 only if the kernel hides the program fd (fallback).
# Not run by CI. Takes about 2 x DURATION + a few seconds.
set -euo pipefail

DURATION=${DURATION:-30}
FREQ=${FREQ:-99}
POLL=${POLL:-0.25}   # seconds between /proc samples
# shellcheck source=benches/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bench_checks
need_cmd cc perf
bench_setup
check_idle

# --- workload -----------------------------------------------------------------
start_spin 2
sleep 1   # let them settle on both CPUs

# --- /proc polling --------------------------------------------------------------
bpf_by_id() { # prog id -> "run_time_ns run_cnt", via BPF_PROG_GET_FD_BY_ID + /proc/self/fdinfo
    python3 - "$1" <<'EOF'
import ctypes, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
attr = ctypes.create_string_buffer(struct.pack("IIII", int(sys.argv[1]), 0, 0, 0), 128)
fd = libc.syscall(321, 13, attr, 128)  # __NR_bpf (x86_64), BPF_PROG_GET_FD_BY_ID
if fd < 0: sys.exit(1)
kv = dict(l.split(":", 1) for l in open(f"/proc/self/fdinfo/{fd}") if ":" in l)
print(kv["run_time_ns"].strip(), kv["run_cnt"].strip())
EOF
}
# poll PID [bpf]: until PID exits (or turns zombie), keep its last reading (read_pid in lib.sh:
# TICKS, HWM_KB, T_LAST) and, with "bpf", RUN_NS / RUN_CNT of the perf_event program
# (prog_type 7) and its PROG_ID (asked by id, through its perf link, if its fd is not found).
# Only bash builtins in the loop (besides bpf_by_id), to stay out of the measurement.
poll() {
    local pid=$1 want_bpf=${2:-} scan=${2:+scan}
    poll_reset
    PROG_ID=""
    while read_pid "$pid" "$scan"; do
        if [[ -n $BPF_SAMPLE_FD ]]; then
            scan="" PROG_ID=${BPF_ID[$BPF_SAMPLE_FD]}
        elif [[ -n $want_bpf && -n $BPF_LINK_ID ]]; then   # program fd closed: ask by id
            PROG_ID=$BPF_LINK_ID
            read -r RUN_NS RUN_CNT < <(bpf_by_id "$PROG_ID" || echo "$RUN_NS $RUN_CNT")
        fi
        nap "$POLL"
    done
}
hz=$(getconf CLK_TCK)

# measure NAME [bpf] CMD...: run CMD in the background (under /usr/bin/time if
# installed: rusage at exit counts the tool's end-of-run work too), poll() it,
# and set CPU (% of one core, whole run), CPU_REC (/proc, up to the last poll
# before exit), RSS (MB), WALL (s).
measure() {
    local name=$1 bpf=$2 t0=$EPOCHREALTIME; shift 2
    tool_start "$name" "$@"
    poll "$TOOL_PID" "$bpf"
    tool_wait "$name failed"
    WALL=$(awk -v a="$t0" -v b="$T_LAST" 'BEGIN { print b - a }')
    CPU_REC=$(pct "$(awk -v t="$TICKS" -v hz="$hz" 'BEGIN { print t / hz }')" "$WALL" 2)
    CPU=$CPU_REC RSS=$(mb "$HWM_KB")
    if [[ -n $TIMED ]]; then
        WALL=$TIME_WALL RSS=$(mb "$TIME_KB")
        CPU=$(pct "$(awk -v u="$TIME_USER" -v s="$TIME_SYS" 'BEGIN { print u + s }')" "$TIME_WALL" 2)
    fi
}

echo "workload: 2 x spin (pids ${pids[*]}) on $(nproc) CPUs; ${DURATION}s per tool at ${FREQ} Hz" >&2

# --- 1. our profiler ------------------------------------------------------------------
echo "== profiler record -a ..." >&2
bpf_stats_on
measure profiler bpf "$PROFILER" record -a -F "$FREQ" -d "$DURATION" \
    -o "$tmp/out.folded" --stats-json "$tmp/stats.json"
bpf_stats_off
ours=("$(json_num samples "$tmp/stats.json")" "$(json_num samples_lost "$tmp/stats.json")"
      "$CPU" "$CPU_REC")
[[ $RUN_CNT -gt 0 ]] || echo "warning: no on_sample run stats (prog id ${PROG_ID:-?})" >&2
bpf_us=$(awk -v n="$RUN_NS" -v c="$RUN_CNT" 'BEGIN { if (c) printf "%.2f", n / c / 1000; else print "?" }')
bpf_pct=$(pct "$(awk -v n="$RUN_NS" 'BEGIN { print n / 1e9 }')" "$WALL" 2)
ours+=("$bpf_us" "$RSS" "$(size_h "$tmp/out.folded")")
ours_runs=$RUN_CNT ours_wall=$(printf %.1f "$WALL")

# --- 2. perf record -a -g, then perf script ---------------------------------------------
echo "== perf record -a -g ..." >&2
export PERF_BUILDID_DIR=$tmp/buildid   # keep perf's build-id cache out of ~/.debug
measure perf "" perf record -F "$FREQ" -a -g -o "$tmp/perf.data" -- sleep "$DURATION"
stop_workload   # perf script: idle CPUs
perf_lost=$(perf report -i "$tmp/perf.data" --stats 2>/dev/null |
    awk '$1 == "LOST" && $2 == "events:" { n += $3 } $1 == "LOST_SAMPLES" { n += $3 } END { print n + 0 }')
theirs=("$(sed -n 's/.*(\([0-9]*\) samples).*/\1/p' "$tmp/perf.err")" "$perf_lost"
        "$CPU" "$CPU_REC" "n/a" "$RSS" "$(size_h "$tmp/perf.data")")
TIMEFORMAT='%R %U %S'
{ time perf script -i "$tmp/perf.data" >/dev/null 2>&1; } 2>"$tmp/script.time"
read -r ps_wall ps_user ps_sys <"$tmp/script.time"

# --- report ----------------------------------------------------------------------------------
echo
echo "record overhead: 2 CPU-bound processes on $(nproc) CPUs, ${DURATION}s per tool at ${FREQ} Hz,"
echo "kernel $(uname -r), CPUs ${BUSY0}% busy before start"
fmt='%-16s %8s %5s %10s %9s %11s %7s %7s\n'
# shellcheck disable=SC2059
{
    printf "$fmt" tool samples lost "CPU% total" "CPU% rec" "BPF us/smp" "RSS MB" data
    printf "$fmt" "profiler record" "${ours[@]}"
    printf "$fmt" "perf record -g" "${theirs[@]}"
}
echo
echo "CPU% = the tool's own user+sys time as % of one core over its wall time. 'total': rusage at"
echo "exit (/usr/bin/time), includes end-of-run work (symbolization/writing; perf: build-ids)."
echo "'rec': /proc/<pid>/stat read every ${POLL}s, up to the last read before exit. RSS MB = peak RSS."
[[ -x /usr/bin/time ]] || echo "(no /usr/bin/time here: 'total' = 'rec', and RSS MB = the last VmHWM read)"
echo "profiler: on_sample ran $ours_runs times, ${bpf_us} us each = ${bpf_pct}% of one core in BPF"
echo "          over ${ours_wall}s (bpf_stats adds two clock reads per run); data = folded output."
echo "perf:     'perf script' over perf.data: ${ps_wall}s wall, ${ps_user}s user + ${ps_sys}s sys (idle CPUs)."
echo "          perf's kernel-side cost per sample (stack walk, ring-buffer copy) is not measurable"
echo "          from user space, so its CPU% is the perf process alone."
