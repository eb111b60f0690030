#!/usr/bin/env bash
# record_overhead.sh — what does `profiler record -a` cost, compared with `perf record -a -g`?
#
# With both CPUs kept busy by two CPU-bound processes (a small C program compiled
# here, hot loop under nested functions, frame pointers kept), it runs, one after
# the other and for DURATION seconds each at FREQ Hz:
#   1. profiler record -a -F $FREQ -d $DURATION  (kernel.bpf_stats_enabled=1 meanwhile)
#   2. perf record -F $FREQ -a -g -- sleep $DURATION, then `perf script` over its data
# and prints, per tool: samples, lost samples, user+sys CPU as % of one core
# (/proc/<pid>/stat polled until just before exit, over the wall time), peak RSS
# (VmHWM), output size; for ours the BPF run time per sample of `on_sample`
# (run_time_ns / run_cnt, from the fdinfo of the profiler's BPF program fd).
#
# Usage (root, from anywhere; build first with `cargo build --release`):
#   sudo benches/record_overhead.sh
#   DURATION=10 FREQ=99 PROFILER=/path/to/profiler sudo -E benches/record_overhead.sh
# Needs: cc, perf; python3 only if the kernel hides the program fd (fallback).
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
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    sysctl -qw kernel.bpf_stats_enabled="$old_bpf_stats" || true
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

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
cc -O1 -fno-omit-frame-pointer -o "$tmp/spin" "$tmp/spin.c"
for _ in 1 2; do "$tmp/spin" & pids+=($!); done
sleep 1   # let them settle on both CPUs

# --- /proc polling --------------------------------------------------------------
# poll PID [bpf]: until PID exits (or turns zombie), keep the last readings in
# TICKS (utime+stime), HWM_KB (VmHWM), T_LAST (time of that reading) and, with
# "bpf", RUN_NS / RUN_CNT of the perf_event program (prog_type 7) and its PROG_ID.
# Only bash builtins in the loop (besides sleep), to stay out of the measurement.
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
cpu_pct() { awk -v t="$TICKS" -v hz="$hz" -v w="$1" 'BEGIN { printf "%.2f", 100 * t / hz / w }'; }
mb() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
size_h() { numfmt --to=iec --suffix=B "$(stat -c %s "$@" | awk '{ s += $1 } END { print s }')"; }
json_num() { sed -n "s/.*\"$1\": *\\([0-9]*\\).*/\\1/p" "$2"; }

echo "workload: 2 x spin (pids ${pids[*]}) on $(nproc) CPUs; ${DURATION}s per tool at ${FREQ} Hz" >&2

# --- 1. our profiler ------------------------------------------------------------------
sysctl -qw kernel.bpf_stats_enabled=1
echo "== profiler record -a ..." >&2
t0=$EPOCHREALTIME
"$PROFILER" record -a -F "$FREQ" -d "$DURATION" -o "$tmp/out.folded" \
    --stats-json "$tmp/stats.json" 2>"$tmp/profiler.err" >/dev/null &
ppid=$!; pids+=("$ppid")
poll "$ppid" bpf
wait "$ppid" || { cat "$tmp/profiler.err" >&2; die "profiler failed"; }
sysctl -qw kernel.bpf_stats_enabled="$old_bpf_stats"
wall=$(awk -v a="$t0" -v b="$T_LAST" 'BEGIN { print b - a }')
ours_cpu=$(cpu_pct "$wall") ours_rss=$(mb "$HWM_KB")
ours_samples=$(json_num samples "$tmp/stats.json")
ours_lost=$(json_num samples_lost "$tmp/stats.json")
ours_size=$(size_h "$tmp/out.folded")
[[ $RUN_CNT -gt 0 ]] || echo "warning: no on_sample run stats (prog id ${PROG_ID:-?})" >&2
bpf_us=$(awk -v n="$RUN_NS" -v c="$RUN_CNT" 'BEGIN { if (c) printf "%.2f", n / c / 1000; else print "?" }')
bpf_pct=$(awk -v n="$RUN_NS" -v w="$wall" 'BEGIN { printf "%.3f", n / 1e9 / w * 100 }')
ours_runs=$RUN_CNT ours_wall=$wall

# --- 2. perf record -a -g, then perf script ---------------------------------------------
echo "== perf record -a -g ..." >&2
export PERF_BUILDID_DIR=$tmp/buildid   # keep perf's build-id cache out of ~/.debug
t0=$EPOCHREALTIME
perf record -F "$FREQ" -a -g -o "$tmp/perf.data" -- sleep "$DURATION" \
    >/dev/null 2>"$tmp/perf.err" &
fpid=$!; pids+=("$fpid")
poll "$fpid"
wait "$fpid" || { cat "$tmp/perf.err" >&2; die "perf record failed"; }
wall=$(awk -v a="$t0" -v b="$T_LAST" 'BEGIN { print b - a }')
perf_cpu=$(cpu_pct "$wall") perf_rss=$(mb "$HWM_KB")
perf_samples=$(sed -n 's/.*(\([0-9]*\) samples).*/\1/p' "$tmp/perf.err")
perf_lost=$(perf report -i "$tmp/perf.data" --stats 2>/dev/null |
    awk '$1 == "LOST" && $2 == "events:" { n += $3 } $1 == "LOST_SAMPLES" { n += $3 } END { print n + 0 }')
perf_size=$(size_h "$tmp/perf.data")
TIMEFORMAT='%R %U %S'
{ time perf script -i "$tmp/perf.data" >/dev/null 2>&1; } 2>"$tmp/script.time"
read -r ps_wall ps_user ps_sys <"$tmp/script.time"

# --- report ----------------------------------------------------------------------------------
echo
echo "record overhead: 2 CPU-bound processes on $(nproc) CPUs, ${DURATION}s at ${FREQ} Hz, $(uname -r)"
fmt='%-18s %8s %6s %10s %12s %9s %9s\n'
# shellcheck disable=SC2059
{
    printf "$fmt" tool samples lost "CPU%/core" "BPF us/smp" "RSS MB" data
    printf "$fmt" "profiler record" "$ours_samples" "$ours_lost" "$ours_cpu" "$bpf_us" "$ours_rss" "$ours_size"
    printf "$fmt" "perf record -g" "$perf_samples" "$perf_lost" "$perf_cpu" "n/a" "$perf_rss" "$perf_size"
}
echo
echo "profiler: on_sample ran $ours_runs times, ${bpf_us} us each = ${bpf_pct}% of one core in BPF over ${ours_wall}s"
echo "          (bpf_stats_enabled adds its own clock reads to each run; data = folded output)"
echo "perf:     post-processing 'perf script': ${ps_wall}s wall, ${ps_user}s user + ${ps_sys}s sys"
echo "          perf's kernel-side sampling cost (stack walk + ring buffer copy per sample) is not"
echo "          measurable from user space here, so its CPU% is the perf process alone."
echo "CPU% = user+sys ticks of the tool's own process (/proc/<pid>/stat, read every ${POLL}s until it"
echo "exits) / its wall time; the work it does in its last <${POLL}s is not counted."
