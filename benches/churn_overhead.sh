#!/usr/bin/env bash
# churn_overhead.sh — what does `profiler record -a` cost under process churn, and how much of
# it is the maintainer thread (issue 3, "Benchmark")?
#
# Workload, W2-like: two CPU-bound processes (a small C program compiled here, or shell loops
# without cc) keep both CPUs busy, while a shell loop starts RATE new short-lived processes
# per second (`/bin/true`, paced with a builtin timed read, so the pacing forks nothing).
# Meanwhile `profiler record -a -F $FREQ -d $DURATION` runs with kernel.bpf_stats_enabled=1.
#
# Prints: the achieved churn rate (the loop's own count, and all forks on the machine from
# /proc/stat), the profiler's user+sys CPU as % of one core (whole run from /usr/bin/time's
# rusage; and from /proc/<pid>/stat polled every POLL s, both over the whole run and over the
# steady state after WARMUP s), the same per thread (poller, maintainer, reporter, main) from
# /proc/<pid>/task/<tid>/schedstat (ns; the maintainer also from utime+stime in .../stat) with
# each thread's wakeups per second, the run time of each of its BPF programs (run_time_ns/run_cnt
# from the fdinfo of its program fds; the perf_event one, prog_type 7, is `on_sample`, so its
# run count is the sample count), peak RSS, and the stats JSON counters of the maintainer.
#
# Usage (root; build first with `cargo build --release`):
#   sudo benches/churn_overhead.sh
#   DURATION=30 FREQ=19 RATE=200 PROFILER=/path/to/profiler sudo -E benches/churn_overhead.sh
# Run it on an otherwise idle machine (it warns if the CPUs are > 10% busy before it starts).
# Needs: bash 5, /usr/bin/time (optional), cc (optional). Not run by CI. Takes DURATION + ~5 s.
set -euo pipefail

DURATION=${DURATION:-30}
FREQ=${FREQ:-19}
RATE=${RATE:-200}     # new processes per second
POLL=${POLL:-0.5}     # seconds between /proc readings
WARMUP=${WARMUP:-3}   # seconds after the profiler's start before the steady-state window
# shellcheck source=benches/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bench_checks
bench_setup
check_idle
forks() { local k v; while read -r k v; do if [[ $k == processes ]]; then echo "$v"; fi; done </proc/stat; }

# --- workload: two CPU-bound processes ----------------------------------------------------
start_spin 2

# --- churn: RATE x /bin/true per second (start_churn, churn_read: lib.sh) ----------------------
start_churn "$RATE"
sleep 1   # let the workload and the churn settle

# --- polling -----------------------------------------------------------------------------------
hz=$(getconf CLK_TCK)
warmup_us=$(awk -v w="$WARMUP" 'BEGIN { printf "%d", w * 1e6 }')
# poll PID: until PID exits (or turns zombie), keep its last reading (read_pid in lib.sh: the
# process's and each thread's CPU, VmHWM, its BPF programs' run stats; they are looked for until
# on_sample is among them), and mark 0 at the first reading WARMUP s after the start at which
# on_sample was found. Only builtins in the loop (it sleeps with nap), to stay out of the
# measurement.
poll() {
    local pid=$1 scan=scan warm_at
    poll_reset
    warm_at=$((${T_START/./} + warmup_us))
    while read_pid "$pid" "$scan"; do
        [[ -z $BPF_SAMPLE_FD ]] || scan=""
        if [[ -z $T0 && -n $BPF_SAMPLE_FD ]] && ((NOW_US >= warm_at)); then mark 0; fi
        nap "$POLL"
    done
}
ticks_pct() { awk -v t="$1" -v hz="$hz" -v w="$2" 'BEGIN { if (w > 0) printf "%.3f", 100 * t / hz / w; else print "?" }'; }

# --- the profiler ----------------------------------------------------------------------------
echo "workload: 2 x ${SPIN[*]##*/} (pids ${pids[*]:0:2}) on $(nproc) CPUs, churn loop at ${RATE}/s" \
    "(pid ${pids[2]}); profiler at ${FREQ} Hz for ${DURATION}s" >&2
bpf_stats_on
churn_read; churn_n0=$CHURN_N churn_t0=$CHURN_T
forks_a=$(forks) t_a=${EPOCHREALTIME/./}
tool_start profiler "$PROFILER" record -a -F "$FREQ" -d "$DURATION" -o "$tmp/out.folded" \
    --stats-json "$tmp/stats.json"
pid=$TOOL_PID
poll "$pid"
tool_wait "profiler failed"
forks_b=$(forks) t_b=${EPOCHREALTIME/./}
churn_read; churn_n1=$CHURN_N churn_t1=$CHURN_T
bpf_stats_off
stop_workload

# --- figures -----------------------------------------------------------------------------------
# by thread name: the threads' readings (THREAD0: utime+stime at mark 0)
declare -A THREAD_TICKS=() THREAD0=() THREAD_NS=() THREAD_NS0=() THREAD_SW=() THREAD_SW0=()
by_comm TASK_TICKS THREAD_TICKS; by_comm TASK_TICKS0 THREAD0
by_comm TASK_NS THREAD_NS; by_comm TASK_NS0 THREAD_NS0
by_comm TASK_SW THREAD_SW; by_comm TASK_SW0 THREAD_SW0
wall_rec=$(awk -v a="$T_START" -v b="$T_LAST" 'BEGIN { print b - a }')
steady=$(awk -v a="${T0:-0}" -v b="$T_LAST" 'BEGIN { print (a > 0) ? b - a : 0 }')
churn_rate=$(awk -v n0="$churn_n0" -v n1="$churn_n1" -v a="$churn_t0" -v b="$churn_t1" \
    'BEGIN { printf "%.0f", (b > a) ? (n1 - n0) * 1e6 / (b - a) : 0 }')
fork_rate=$(awk -v f0="$forks_a" -v f1="$forks_b" -v a="$t_a" -v b="$t_b" \
    'BEGIN { printf "%.0f", (f1 - f0) * 1e6 / (b - a) }')
cpu_rec=$(ticks_pct "$TICKS" "$wall_rec")
cpu_steady=$(ticks_pct $((TICKS - TICKS0)) "$steady")
if [[ -n $TIMED ]]; then
    wall=$TIME_WALL rss=$(mb "$TIME_KB")
    cpu_total=$(pct "$(awk -v u="$TIME_USER" -v s="$TIME_SYS" 'BEGIN { print u + s }')" "$TIME_WALL")
else
    wall=$wall_rec cpu_total=$cpu_rec rss=$(mb "$HWM_KB")
fi

echo
echo "churn overhead: profiler record -a -F $FREQ for ${DURATION}s; 2 CPU-bound processes + /bin/true churn"
echo "kernel $(uname -r), $(nproc) CPUs, CPUs ${BUSY0}% busy before start"
echo "churn: ${churn_rate} /bin/true per second achieved (target ${RATE}); all forks on the machine:" \
    "${fork_rate}/s"
echo
ns_pct() { awk -v n="$1" -v w="$2" 'BEGIN { if (w > 0) printf "%.3f", 100 * n / 1e9 / w; else print "?" }'; }
fmt='  %-40s %12s %12s %s\n'
# shellcheck disable=SC2059
{
    printf "$fmt" "CPU as % of one core" "whole run" "steady" "  steady wakeups/s"
    printf "$fmt" "profiler, user+sys (/usr/bin/time)" "$cpu_total" "-"
    printf "$fmt" "profiler, user+sys (/proc/PID/stat)" "$cpu_rec" "$cpu_steady"
    sum_ns=0 sum_ns0=0
    for comm in "${!THREAD_NS[@]}"; do
        sum_ns=$((sum_ns + THREAD_NS[$comm])) sum_ns0=$((sum_ns0 + ${THREAD_NS0[$comm]:-0}))
    done
    printf "$fmt" "profiler, threads' schedstat run time" "$(ns_pct "$sum_ns" "$wall_rec")" \
        "$(ns_pct $((sum_ns - sum_ns0)) "$steady")"
    for comm in maintainer poller reporter profiler; do
        [[ -n ${THREAD_NS[$comm]:-} ]] || continue
        printf "$fmt" "  thread $comm (schedstat)" "$(ns_pct "${THREAD_NS[$comm]}" "$wall_rec")" \
            "$(ns_pct $((THREAD_NS[$comm] - ${THREAD_NS0[$comm]:-0})) "$steady")" \
            "$(awk -v n=$((${THREAD_SW[$comm]:-0} - ${THREAD_SW0[$comm]:-0})) -v w="$steady" \
                'BEGIN { printf "%12.1f", (w > 0) ? n / w : 0 }')"
    done
    [[ -n ${THREAD_TICKS[maintainer]:-} ]] &&
        printf "$fmt" "  thread maintainer (utime+stime, ticks)" \
            "$(ticks_pct "${THREAD_TICKS[maintainer]}" "$wall_rec")" \
            "$(ticks_pct $((THREAD_TICKS[maintainer] - ${THREAD0[maintainer]:-0})) "$steady")"
    bpf_ns=0 bpf_ns_steady=0
    for fd in "${BPF_FDS[@]}"; do
        bpf_ns=$((bpf_ns + ${BPF_NS[$fd]:-0}))
        bpf_ns_steady=$((bpf_ns_steady + ${BPF_NS[$fd]:-0} - ${BPF_NS0[$fd]:-0}))
    done
    bpf_pct=$(pct "$(awk -v n="$bpf_ns" 'BEGIN { print n / 1e9 }')" "$wall_rec")
    bpf_pct_steady=$(pct "$(awk -v n="$bpf_ns_steady" 'BEGIN { print n / 1e9 }')" "$steady")
    printf "$fmt" "BPF programs, all" "$bpf_pct" "$bpf_pct_steady"
    printf "$fmt" "total (schedstat + BPF)" \
        "$(awk -v a="$(ns_pct "$sum_ns" "$wall_rec")" -v b="$bpf_pct" 'BEGIN { printf "%.3f", a + b }')" \
        "$(awk -v a="$(ns_pct $((sum_ns - sum_ns0)) "$steady")" -v b="$bpf_pct_steady" \
            'BEGIN { printf "%.3f", a + b }')"
}
echo "  (maintainer thread: $(ns_pct $((${THREAD_NS[maintainer]:-0} - ${THREAD_NS0[maintainer]:-0})) "$steady")% steady" \
    "= $(awk -v n=$((${THREAD_NS[maintainer]:-0} - ${THREAD_NS0[maintainer]:-0})) -v w="$steady" \
        'BEGIN { printf "%.2f", (w > 0) ? n / 1e6 / w : 0 }') ms of CPU per second)"
echo "  (whole run = start to the last poll before exit, ${wall_rec}s; /usr/bin/time: to exit, ${wall}s,"
echo "   including end-of-run symbolization; steady = from ${WARMUP}s after start, ${steady}s."
echo "   /proc/PID/stat ticks are ${hz}/s, too coarse per thread: threads are shown by schedstat ns;"
echo "   wakeups/s = voluntary context switches per second: how often the thread slept and was woken)"
echo
echo "BPF programs (run_time_ns / run_cnt over the whole run; prog_type 7 = perf_event on_sample):"
for fd in "${BPF_FDS[@]}"; do echo "${BPF_ID[$fd]} $fd"; done | sort -n | while read -r id fd; do
    cnt=${BPF_CNT[$fd]:-0} ns=${BPF_NS[$fd]:-0}
    awk -v id="$id" -v t="${BPF_TYPE[$fd]}" -v c="$cnt" -v n="$ns" -v w="$wall_rec" 'BEGIN {
        printf "  prog %-6s type %-3s %9d runs  %8.2f us/run  %6.1f runs/s  %.4f%% of one core\n",
            id, t, c, c ? n / c / 1000 : 0, c / w, 100 * n / 1e9 / w }'
done
((${#BPF_FDS[@]})) || echo "  (no BPF program fds found in /proc/$pid/fdinfo)"
echo
echo "peak RSS: ${rss} MB (VmHWM at the last poll before exit: $(mb "$HWM_KB") MB)"
echo
echo "stats JSON:"
for k in samples samples_lost pids_seen pids_exited syncs resyncs sync_failures \
    unknown_pid_reports unknown_mapping_reports events_ignored maintainer_queue_dropped \
    map_updates map_deletes map_delete_absent map_delete_errors map_update_errors \
    pid_map_entries expected_pid_entries stale_pid_entries missing_pid_entries \
    files_loaded files_unloaded leaked_files vma_reports raw_frames_resolved raw_frames_unresolved \
    unwind_tables_loaded unwind_tables_unloaded unwind_tables_empty unwind_buckets_used; do
    v=$(json_num "$k" "$tmp/stats.json")
    if [[ -n $v ]]; then printf '  %-26s %s\n' "$k" "$v"; fi   # absent in this version: left out
done
echo "profiler error/warning lines: $(grep -cE '^profiler: (error|warning):' "$tmp/profiler.err" || true)"
grep -E '^profiler: (error|warning):' "$tmp/profiler.err" | head -5 | sed 's/^/  /' || true
