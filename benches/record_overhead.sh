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
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PROFILER=${PROFILER:-$here/../target/release/profiler}

die() { echo "record_overhead: $*" >&2; exit 1; }
[[ $EUID -eq 0 ]] || die "run as root"
[[ -x $PROFILER ]] || die "no profiler at $PROFILER (cargo build --release)"
for c in cc perf; do command -v "$c" >/dev/null || die "$c not found"; done

tmp=$(mktemp -d /tmp/record_overhead.XXXXXX)
old_bpf_stats=$(cat /proc/sys/kernel/bpf_stats_enabled)
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done   # workload, tools
    wait 2>/dev/null || true
    sysctl -qw kernel.bpf_stats_enabled="$old_bpf_stats" || true
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

busy_pct() { # % of all CPUs' time spent busy over the next second, from /proc/stat
    local -a a b
    read -ra a </proc/stat; sleep 1; read -ra b </proc/stat
    awk -v a="${a[*]:1}" -v b="${b[*]:1}" 'BEGIN { n = split(a, x); split(b, y)
        for (i = 1; i <= n; i++) t += y[i] - x[i]
        printf "%.0f", 100 * (1 - (y[4] - x[4] + y[5] - x[5]) / t) }'
}
busy0=$(busy_pct)
((busy0 <= 10)) ||
    echo "warning: CPUs ${busy0}% busy before start; other work on the machine skews the figures" >&2

# --- workload -----------------------------------------------------------------
cat >"$tmp/spin.c" <<'EOF'
static volatile unsigned long sink;
__attribute__((noinline)) static unsigned long leaf(unsigned long x) {
    for (int i = 0; i < 1000; i++) x = x * 6364136223846793005UL + 1442695040888963407UL;
    return x;
}
__attribute__((noinline)) static unsigned long middle(unsigned long x) { return leaf(x) ^ leaf(x + 1); }
__attribute__((noinline)) static unsigned long outer(unsigned long x) { return middle(x) + 1; }
int main(void) { unsigned long x = 1; for (;;) { x = outer(x); sink = x; } }
EOF
cc -O1 -fno-omit-frame-pointer -mno-omit-leaf-frame-pointer -o "$tmp/spin" "$tmp/spin.c"
for _ in 1 2; do "$tmp/spin" & pids+=($!); done
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
# poll PID [bpf]: until PID exits (or turns zombie), keep the last readings in
# TICKS (utime+stime), HWM_KB (VmHWM), T_LAST (time of that reading) and, with
# "bpf", RUN_NS / RUN_CNT of the perf_event program (prog_type 7) and its PROG_ID.
# Only bash builtins in the loop (besides sleep), to stay out of the measurement.
poll() {
    local pid=$1 want_bpf=${2:-} line rest k v f prog_fd="" link_prog="" hwm st
    local -a fs
    TICKS=0 HWM_KB=0 RUN_NS=0 RUN_CNT=0 PROG_ID="" T_LAST=$EPOCHREALTIME
    while [[ -r /proc/$pid/stat ]]; do
        read -r line 2>/dev/null </proc/$pid/stat || break
        rest=${line##*) }; read -ra fs <<<"$rest"   # fs[0] = field 3 (state)
        [[ ${fs[0]} == Z ]] && break
        st=$((fs[11] + fs[12]))                     # fields 14, 15: utime, stime
        hwm=""
        while read -r k v _; do [[ $k == VmHWM: ]] && hwm=$v; done 2>/dev/null </proc/$pid/status || true
        [[ -n $hwm ]] || break                      # exiting: mm already gone
        TICKS=$st HWM_KB=$hwm T_LAST=$EPOCHREALTIME
        if [[ -n $want_bpf ]]; then
            if [[ -z $prog_fd ]]; then              # locate the program (or its link) once
                for f in /proc/$pid/fdinfo/*; do
                    declare -A kv=()
                    while IFS=$': \t' read -r k v; do kv[$k]=$v; done 2>/dev/null <"$f" || true
                    if [[ ${kv[prog_type]:-} == 7 ]]; then prog_fd=${f##*/}; PROG_ID=${kv[prog_id]}; break; fi
                    [[ ${kv[link_type]:-} == perf ]] && link_prog=${kv[prog_id]}
                    unset kv
                done
                [[ -z $prog_fd && -n $link_prog ]] && PROG_ID=$link_prog
            fi
            if [[ -n $prog_fd ]]; then
                while IFS=$': \t' read -r k v; do
                    case $k in run_time_ns) RUN_NS=$v ;; run_cnt) RUN_CNT=$v ;; esac
                done 2>/dev/null </proc/$pid/fdinfo/$prog_fd || true
            elif [[ -n $PROG_ID ]]; then            # program fd closed: ask by id
                read -r RUN_NS RUN_CNT < <(bpf_by_id "$PROG_ID" || echo "$RUN_NS $RUN_CNT")
            fi
        fi
        sleep "$POLL"
    done
}
hz=$(getconf CLK_TCK)
pct() { awk -v s="$1" -v w="$2" 'BEGIN { printf "%.2f", 100 * s / w }'; }
mb() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
size_h() { numfmt --to=iec --suffix=B "$(stat -c %s "$1")"; }
json_num() { sed -n "s/.*\"$1\": *\\([0-9]*\\).*/\\1/p" "$2"; }

# measure NAME [bpf] CMD...: run CMD in the background (under /usr/bin/time if
# installed: rusage at exit counts the tool's end-of-run work too), poll() it,
# and set CPU (% of one core, whole run), CPU_REC (/proc, up to the last poll
# before exit), RSS (MB), WALL (s).
measure() {
    local name=$1 bpf=$2 t0=$EPOCHREALTIME w pid e u s m; shift 2
    local -a wrap=()
    [[ -x /usr/bin/time ]] && wrap=(/usr/bin/time -f '%e %U %S %M' -o "$tmp/$name.time")
    "${wrap[@]}" "$@" >/dev/null 2>"$tmp/$name.err" &
    w=$! pid=$!; pids+=("$w")
    if ((${#wrap[@]})); then   # the tool is time's child
        until pid=$(pgrep -o -P "$w"); do kill -0 "$w" 2>/dev/null || break; sleep 0.02; done
        pids[-1]=${pid:-$w}   # cleanup stops the tool itself; time then exits with it
    fi
    poll "${pid:-$w}" "$bpf"
    wait "$w" || { cat "$tmp/$name.err" >&2; die "$name failed"; }
    pids=("${pids[@]:0:2}")    # the tool is gone; only the workload is left to stop
    WALL=$(awk -v a="$t0" -v b="$T_LAST" 'BEGIN { print b - a }')
    CPU_REC=$(pct "$(awk -v t="$TICKS" -v hz="$hz" 'BEGIN { print t / hz }')" "$WALL")
    CPU=$CPU_REC RSS=$(mb "$HWM_KB")
    if ((${#wrap[@]})); then
        read -r e u s m <"$tmp/$name.time"
        WALL=$e CPU=$(pct "$(awk -v u="$u" -v s="$s" 'BEGIN { print u + s }')" "$e") RSS=$(mb "$m")
    fi
}

echo "workload: 2 x spin (pids ${pids[*]}) on $(nproc) CPUs; ${DURATION}s per tool at ${FREQ} Hz" >&2

# --- 1. our profiler ------------------------------------------------------------------
echo "== profiler record -a ..." >&2
sysctl -qw kernel.bpf_stats_enabled=1
measure profiler bpf "$PROFILER" record -a -F "$FREQ" -d "$DURATION" \
    -o "$tmp/out.folded" --stats-json "$tmp/stats.json"
sysctl -qw kernel.bpf_stats_enabled="$old_bpf_stats"
ours=("$(json_num samples "$tmp/stats.json")" "$(json_num samples_lost "$tmp/stats.json")"
      "$CPU" "$CPU_REC")
[[ $RUN_CNT -gt 0 ]] || echo "warning: no on_sample run stats (prog id ${PROG_ID:-?})" >&2
bpf_us=$(awk -v n="$RUN_NS" -v c="$RUN_CNT" 'BEGIN { if (c) printf "%.2f", n / c / 1000; else print "?" }')
bpf_pct=$(pct "$(awk -v n="$RUN_NS" 'BEGIN { print n / 1e9 }')" "$WALL")
ours+=("$bpf_us" "$RSS" "$(size_h "$tmp/out.folded")")
ours_runs=$RUN_CNT ours_wall=$(printf %.1f "$WALL")

# --- 2. perf record -a -g, then perf script ---------------------------------------------
echo "== perf record -a -g ..." >&2
export PERF_BUILDID_DIR=$tmp/buildid   # keep perf's build-id cache out of ~/.debug
measure perf "" perf record -F "$FREQ" -a -g -o "$tmp/perf.data" -- sleep "$DURATION"
kill "${pids[@]}"; wait "${pids[@]}" 2>/dev/null || true; pids=()   # perf script: idle CPUs
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
echo "kernel $(uname -r), CPUs ${busy0}% busy before start"
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
