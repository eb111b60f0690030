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
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PROFILER=${PROFILER:-$here/../target/release/profiler}

die() { echo "churn_overhead: $*" >&2; exit 1; }
[[ $EUID -eq 0 ]] || die "run as root"
[[ -x $PROFILER ]] || die "no profiler at $PROFILER (cargo build --release)"
((BASH_VERSINFO[0] >= 5)) || die "needs bash 5 (EPOCHREALTIME)"

tmp=$(mktemp -d /tmp/churn_overhead.XXXXXX)
old_bpf_stats=$(cat /proc/sys/kernel/bpf_stats_enabled)
pids=()   # workload and churn loop
tool=""   # the profiler (or /usr/bin/time around it)
cleanup() {
    local p
    [[ -n $tool ]] && kill "$tool" 2>/dev/null || true
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
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
forks() { local k v; while read -r k v; do if [[ $k == processes ]]; then echo "$v"; fi; done </proc/stat; }
busy0=$(busy_pct)
((busy0 <= 10)) ||
    echo "warning: CPUs ${busy0}% busy before start; other work on the machine skews the figures" >&2

# --- workload: two CPU-bound processes ----------------------------------------------------
if command -v cc >/dev/null; then
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
    spin=("$tmp/spin")
else
    spin=(bash -c 'while :; do :; done')
fi
for _ in 1 2; do "${spin[@]}" & pids+=($!); done

# --- churn: RATE x /bin/true per second ---------------------------------------------------
# Paced against a schedule (t0 + n/RATE), sleeping with `read -t` on a FIFO nobody writes, so
# the loop itself forks nothing but /bin/true. The count lands in churn.count every 20 runs.
mkfifo "$tmp/never"
churn() {
    local n=0 t0 next now d s step=$((1000000 / RATE))
    exec 3<>"$tmp/never"
    t0=${EPOCHREALTIME/./}
    while :; do
        /bin/true
        n=$((n + 1))
        ((n % 20)) || echo "$n ${EPOCHREALTIME/./}" >"$tmp/churn.count"
        next=$((t0 + n * step)) now=${EPOCHREALTIME/./}
        d=$((next - now))
        if ((d > 0)); then
            ((d > 999999)) && d=999999
            printf -v s '0.%06d' "$d"
            read -r -t "$s" -u 3 _ || true
        fi
    done
}
churn & pids+=($!)
# churn_read: CHURN_N, CHURN_T (µs) = the loop's last count and when it was written.
churn_read() {
    local i n t
    for i in 1 2 3 4 5; do   # the loop may be rewriting the file: retry an empty read
        n="" t=""
        read -r n t 2>/dev/null <"$tmp/churn.count" || true
        [[ -n $n && -n $t ]] && break
        read -r -t 0.01 -u 4 _ || true
    done
    CHURN_N=${n:-0} CHURN_T=${t:-${EPOCHREALTIME/./}}
}
exec 4<>"$tmp/never"   # builtin sleeps for this shell too: read -t S -u 4
sleep 1   # let the workload and the churn settle

# --- polling -----------------------------------------------------------------------------------
hz=$(getconf CLK_TCK)
declare -A THREAD_TICKS=() THREAD0=() THREAD_NS=() THREAD_NS0=() THREAD_SW=() THREAD_SW0=() PROG_TYPE=() PROG_NS=() PROG_CNT=() PROG_NS0=() PROG_CNT0=()
# poll PID: until PID exits (or turns zombie), keep the last readings: TICKS (utime+stime of
# the process), HWM_KB (VmHWM), THREAD_TICKS[comm] (utime+stime of each thread, in clock
# ticks), THREAD_NS[comm] (its on-CPU time in ns from schedstat) and THREAD_SW[comm] (its
# voluntary context switches: how often it went to sleep and was woken), PROG_NS/PROG_CNT[prog id]
# (BPF run stats), T_LAST; and the same readings at the first poll after WARMUP s (…0).
# Only bash builtins in the loop (it sleeps with read -t), to stay out of the measurement.
poll() {
    local pid=$1 line rest k v f t comm hwm st fd id typ
    local -a fs progfds=()
    local t_start=$EPOCHREALTIME warm_at have_warm=""
    warm_at=$(awk -v a="$t_start" -v w="$WARMUP" 'BEGIN { printf "%.6f", a + w }')
    TICKS=0 HWM_KB=0 T_LAST=$EPOCHREALTIME TICKS0="" T0=""
    while [[ -r /proc/$pid/stat ]]; do
        read -r line 2>/dev/null </proc/$pid/stat || break
        rest=${line##*) }; read -ra fs <<<"$rest"   # fs[0] = field 3 (state)
        [[ ${fs[0]} == Z ]] && break
        st=$((fs[11] + fs[12]))                     # fields 14, 15: utime, stime
        hwm=""
        while read -r k v _; do [[ $k == VmHWM: ]] && hwm=$v; done 2>/dev/null </proc/$pid/status || true
        [[ -n $hwm ]] || break                      # exiting: mm already gone
        TICKS=$st HWM_KB=$hwm T_LAST=$EPOCHREALTIME
        for t in /proc/$pid/task/*; do
            read -r comm 2>/dev/null <"$t/comm" || continue
            read -r line 2>/dev/null <"$t/stat" || continue
            rest=${line##*) }; read -ra fs <<<"$rest"
            THREAD_TICKS[$comm]=$((fs[11] + fs[12]))
            read -r k _ 2>/dev/null <"$t/schedstat" && THREAD_NS[$comm]=$k
            while read -r k v; do
                [[ $k == voluntary_ctxt_switches: ]] && THREAD_SW[$comm]=$v
            done 2>/dev/null <"$t/status" || true
        done
        if ((${#progfds[@]} == 0)); then            # locate the BPF programs once
            local found7=""
            for f in /proc/$pid/fdinfo/*; do
                typ="" id=""
                while IFS=$': \t' read -r k v; do
                    case $k in prog_type) typ=$v ;; prog_id) id=$v ;; esac
                done 2>/dev/null <"$f" || true
                [[ -n $typ && -n $id ]] || continue
                progfds+=("${f##*/}:$id"); PROG_TYPE[$id]=$typ
                [[ $typ == 7 ]] && found7=1
            done
            [[ -n $found7 ]] || progfds=()          # not loaded yet: look again next time
        fi
        for fd in "${progfds[@]}"; do
            id=${fd#*:}
            while IFS=$': \t' read -r k v; do
                case $k in run_time_ns) PROG_NS[$id]=$v ;; run_cnt) PROG_CNT[$id]=$v ;; esac
            done 2>/dev/null </proc/$pid/fdinfo/${fd%%:*} || true
        done
        if [[ -z $have_warm && ${EPOCHREALTIME/./} -ge ${warm_at/./} && ${#progfds[@]} -gt 0 ]]; then
            have_warm=1 TICKS0=$TICKS T0=$T_LAST
            for k in "${!THREAD_TICKS[@]}"; do THREAD0[$k]=${THREAD_TICKS[$k]}; done
            for k in "${!THREAD_NS[@]}"; do THREAD_NS0[$k]=${THREAD_NS[$k]}; done
            for k in "${!THREAD_SW[@]}"; do THREAD_SW0[$k]=${THREAD_SW[$k]}; done
            for k in "${!PROG_NS[@]}"; do PROG_NS0[$k]=${PROG_NS[$k]} PROG_CNT0[$k]=${PROG_CNT[$k]:-0}; done
        fi
        read -r -t "$POLL" -u 4 _ || true   # sleep without a fork
    done
}
pct() { awk -v s="$1" -v w="$2" 'BEGIN { if (w > 0) printf "%.3f", 100 * s / w; else print "?" }'; }
ticks_pct() { awk -v t="$1" -v hz="$hz" -v w="$2" 'BEGIN { if (w > 0) printf "%.3f", 100 * t / hz / w; else print "?" }'; }
json_num() { sed -n "s/.*\"$1\": *\\([0-9.]*\\).*/\\1/p" "$2"; }

# --- the profiler ----------------------------------------------------------------------------
echo "workload: 2 x ${spin[*]##*/} (pids ${pids[*]:0:2}) on $(nproc) CPUs, churn loop at ${RATE}/s" \
    "(pid ${pids[2]}); profiler at ${FREQ} Hz for ${DURATION}s" >&2
sysctl -qw kernel.bpf_stats_enabled=1
wrap=()
[[ -x /usr/bin/time ]] && wrap=(/usr/bin/time -f '%e %U %S %M' -o "$tmp/time")
churn_read; churn_n0=$CHURN_N churn_t0=$CHURN_T
forks_a=$(forks) t_a=${EPOCHREALTIME/./}
"${wrap[@]}" "$PROFILER" record -a -F "$FREQ" -d "$DURATION" -o "$tmp/out.folded" \
    --stats-json "$tmp/stats.json" >/dev/null 2>"$tmp/err" &
w=$! pid=$!; tool=$w
if ((${#wrap[@]})); then   # the profiler is time's child
    until pid=$(pgrep -o -P "$w"); do kill -0 "$w" 2>/dev/null || break; sleep 0.02; done
    pid=${pid:-$w}
fi
t_start=$EPOCHREALTIME
poll "$pid"
wait "$w" || { cat "$tmp/err" >&2; die "profiler failed"; }
tool=""
forks_b=$(forks) t_b=${EPOCHREALTIME/./}
churn_read; churn_n1=$CHURN_N churn_t1=$CHURN_T
sysctl -qw kernel.bpf_stats_enabled="$old_bpf_stats"
for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
wait 2>/dev/null || true
pids=()

# --- figures -----------------------------------------------------------------------------------
wall_rec=$(awk -v a="$t_start" -v b="$T_LAST" 'BEGIN { print b - a }')
steady=$(awk -v a="${T0:-0}" -v b="$T_LAST" 'BEGIN { print (a > 0) ? b - a : 0 }')
churn_rate=$(awk -v n0="$churn_n0" -v n1="$churn_n1" -v a="$churn_t0" -v b="$churn_t1" \
    'BEGIN { printf "%.0f", (b > a) ? (n1 - n0) * 1e6 / (b - a) : 0 }')
fork_rate=$(awk -v f0="$forks_a" -v f1="$forks_b" -v a="$t_a" -v b="$t_b" \
    'BEGIN { printf "%.0f", (f1 - f0) * 1e6 / (b - a) }')
cpu_rec=$(ticks_pct "$TICKS" "$wall_rec")
cpu_steady=$(ticks_pct $((TICKS - ${TICKS0:-0})) "$steady")
if ((${#wrap[@]})); then
    read -r e u s m <"$tmp/time"
    wall=$e cpu_total=$(pct "$(awk -v u="$u" -v s="$s" 'BEGIN { print u + s }')" "$e")
    rss=$(awk -v k="$m" 'BEGIN { printf "%.1f", k / 1024 }')
else
    wall=$wall_rec cpu_total=$cpu_rec rss=$(awk -v k="$HWM_KB" 'BEGIN { printf "%.1f", k / 1024 }')
fi

echo
echo "churn overhead: profiler record -a -F $FREQ for ${DURATION}s; 2 CPU-bound processes + /bin/true churn"
echo "kernel $(uname -r), $(nproc) CPUs, CPUs ${busy0}% busy before start"
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
    for id in "${!PROG_NS[@]}"; do
        bpf_ns=$((bpf_ns + PROG_NS[$id]))
        bpf_ns_steady=$((bpf_ns_steady + PROG_NS[$id] - ${PROG_NS0[$id]:-0}))
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
for id in $(printf '%s\n' "${!PROG_NS[@]}" | sort -n); do
    cnt=${PROG_CNT[$id]:-0} ns=${PROG_NS[$id]:-0}
    awk -v id="$id" -v t="${PROG_TYPE[$id]}" -v c="$cnt" -v n="$ns" -v w="$wall_rec" 'BEGIN {
        printf "  prog %-6s type %-3s %9d runs  %8.2f us/run  %6.1f runs/s  %.4f%% of one core\n",
            id, t, c, c ? n / c / 1000 : 0, c / w, 100 * n / 1e9 / w }'
done
((${#PROG_NS[@]})) || echo "  (no BPF program fds found in /proc/$pid/fdinfo)"
echo
echo "peak RSS: ${rss} MB (VmHWM at the last poll before exit: $(awk -v k="$HWM_KB" 'BEGIN { printf "%.1f", k / 1024 }') MB)"
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
echo "profiler error/warning lines: $(grep -cE '^profiler: (error|warning):' "$tmp/err" || true)"
grep -E '^profiler: (error|warning):' "$tmp/err" | head -5 | sed 's/^/  /' || true
