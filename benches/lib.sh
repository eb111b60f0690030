# shellcheck shell=bash disable=SC2034
# benches/lib.sh — what the benchmark scripts (*_overhead.sh) share. Each sources it after
# `set -euo pipefail` (`. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"`); sourcing only defines
# functions and variables, nothing runs until a script calls them.
#
# Conventions: $tmp is the script's temp dir (removed at exit); pids the workload's processes
# (stopped by stop_workload, and at exit), PGROUPS the process groups of workload loops whose
# children have children (stopped whole); tool the measured command, or /usr/bin/time around it,
# while it runs (TOOL_PID the command itself); AUX_PIDS other helpers to stop at exit; fd 4 a FIFO
# nobody writes, so that nap sleeps without a fork. The readings of a polled process (read_pid)
# land in global variables, and the functions that take them use bash builtins only, to stay out
# of the measurement.
#
# Checks and set-up
#   die MSG...           prints "NAME: MSG" (NAME = the script's name) to stderr and exits 1
#   bench_checks         dies unless root, bash is 5 or newer and (unless NO_PROFILER is set)
#                        $PROFILER is executable
#   need_cmd CMD...      dies unless every CMD is on PATH ("CMD not found")
#   need_w1              dies unless start_w1 can run: sets XZ (xz on PATH), checks $PYTHON
#   bench_setup          makes $tmp, fd 4 and the exit trap; keeps kernel.bpf_stats_enabled
#   bench_cleanup        the exit trap: stops tool, workload, AUX_PIDS, the stats helper, restores
#   nap SECONDS          sleeps without a fork (read -t on fd 4)
# The machine's load
#   cpu_times            prints the all-CPUs line of /proc/stat (without its "cpu" label)
#   busy_between A B     prints the % of all CPUs' time spent busy between two cpu_times
#   busy_pct             prints the % of all CPUs' time spent busy over the next second
#   check_idle           sets BUSY0 (busy_pct) and warns on stderr when it is over 10%
# Workloads (their pids in pids)
#   start_spin N         starts N CPU-bound processes: spin.c (nested noinline functions, frame
#                        pointers kept) built with cc, else shell loops; SPIN = the command
#   start_w1             W1: xz -9 -T1 in a loop ($XZ) + a recursive pure-Python fib ($PYTHON);
#                        W1_LOOP = the loop, W1_PIDS = (xz, python)
#   start_churn RATE     W2's churn: a loop starting RATE /bin/true per second, paced with nap
#                        (it forks nothing else); its count lands in $tmp/churn.count
#   churn_read           CHURN_N, CHURN_T (µs): the churn loop's last count and when it was written
#   start_cc N           N loops compiling a generated C file with `gcc -O2 -c` (cc1, as: processes
#                        that live well under a second), each in its own process group (PGROUPS)
#   start_w2 RATE        W2: start_w1's CPU load + start_churn RATE + start_cc 2
#   stop_workload        stops pids (and the children of the loops) and PGROUPS, waits for them,
#                        empties pids and PGROUPS
# BPF run-time stats
#   bpf_stats_helper     builds $tmp/bpfstats (with gcc, when there): it holds a BPF_ENABLE_STATS fd
#   bpf_stats_on         stats on: through the helper when built (another script that restores
#                        the sysctl cannot turn them off under us), else kernel.bpf_stats_enabled=1
#   bpf_stats_off        stats off: the helper stopped, or the sysctl restored (with a warning if
#                        someone set it to 0 during the run)
# The measured tool
#   tool_start NAME CMD... runs CMD in the background (stdout to /dev/null, stderr to
#                        $tmp/NAME.err) under /usr/bin/time -o $tmp/NAME.time when installed
#                        (TIMED=1); sets tool and TOOL_PID (CMD itself, time's child)
#   tool_wait MESSAGE    waits for it (dies with MESSAGE and its last stderr lines if it failed);
#                        with TIMED, TIME_WALL, TIME_USER, TIME_SYS (s) and TIME_KB (max RSS)
# Polling a process
#   poll_reset           clears all readings, T_START = T_LAST = now
#   read_pid PID [scan]  one reading; fails once PID is gone, a zombie or exiting (see below)
#   bpf_scan PID         adds PID's BPF program fds not seen yet to BPF_FDS (see below)
#   bpf_read PID         reads run_time_ns / run_cnt of the programs in BPF_FDS (see below)
#   mark 0|1             keeps the current reading as one end of the steady state (see below)
#   copy_map SRC DST     copies the associative array SRC to DST (by name)
#   by_comm SRC DST      DST[thread name] = the sum of SRC[thread id] over the threads of that name
#   run_figures DECIMALS WALL, CPU (% of one core), RSS (MB) of the run, STEADY (s): see below
# Figures
#   pct PART WHOLE [DECIMALS] prints 100 * PART / WHOLE (3 decimals; "?" when WHOLE is not > 0)
#   mb KB                prints KB in MB, one decimal
#   size_h FILE          prints FILE's size, human-readable (numfmt --to=iec)
#   json_num KEY FILE    prints the first number after "KEY": in FILE (a --stats-json file)
# Stacks: each tool's output as lines "COMM<tab>COUNT<tab>FRAME;FRAME;..." (frame order as the
# tool prints it; a frame is its symbol, or an address when unknown)
#   folded_stacks FILE   from folded output (profiler record -o X.folded)
#   perf_stacks FILE     from `perf script` output
#   bpftrace_stacks FILE from a printed bpftrace map keyed [comm, kstack, ustack] (any key order
#                        of one comm and stacks), counts as values
#   stack_count          reads such lines, prints the sum of COUNT (samples)
#   stack_share REGEX    reads such lines, prints "PCT/N": N samples of the processes whose COMM
#                        matches REGEX (whole), PCT the % of them complete, i.e. with a frame
#                        `_start` or `__libc_start_main` (or its `_impl` / versioned alias); "-"
#                        when there are none
#
# A reading (read_pid) sets: TICKS (utime+stime of the process, clock ticks), HWM_KB (VmHWM),
# T_LAST (EPOCHREALTIME) and NOW_US (the same in µs); per thread id TASK_NS (on-CPU ns from
# schedstat), TASK_TICKS (utime+stime), TASK_SW (voluntary context switches: how often it slept
# and was woken), TASK_COMM (its name) — threads that have exited keep their last reading —
# and NS, the sum of TASK_NS; with "scan" it first calls bpf_scan; then bpf_read. bpf_scan looks
# at the fdinfo of each fd not yet known as a program: a program (prog_type) goes to BPF_FDS with
# BPF_TYPE[fd] and BPF_ID[fd] (BPF_SAMPLE_FD: the perf_event one, prog_type 7, on_sample); a
# perf_event link's program id goes to BPF_LINK_ID. bpf_read sets BPF_NS[fd] and BPF_CNT[fd]
# (run_time_ns, run_cnt; an fd that cannot be read keeps its last values), ALL_NS (their sum)
# and RUN_NS / RUN_CNT (the sums over its perf_event programs: the profiler's on_sample; bpftrace's
# profile and interval probes). mark N copies T_LAST, TICKS, NS, RUN_NS, RUN_CNT and ALL_NS
# to TN, TICKSN, NSN, RUN_NSN, RUN_CNTN, ALL_NSN, and the maps TASK_NS, TASK_TICKS, TASK_SW,
# BPF_NS and BPF_CNT to the same names with N appended. run_figures: WALL from T_START to T_LAST,
# CPU = NS over WALL, RSS from HWM_KB, or with TIMED /usr/bin/time's wall, (user+sys) / wall and
# max RSS; STEADY = T1 - T0 (0 unless both are set and T1 > T0).

BENCHES=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BENCH_NAME=${BASH_SOURCE[-1]##*/}
BENCH_NAME=${BENCH_NAME%.sh}
PROFILER=${PROFILER:-$BENCHES/../target/release/profiler}
PYTHON=${PYTHON:-/usr/bin/python3.11}   # W1's python (start_w1)

declare -ga pids=() PGROUPS=() AUX_PIDS=() BPF_FDS=() SPIN=() W1_PIDS=()
declare -gA TASK_NS=() TASK_TICKS=() TASK_SW=() TASK_COMM=() BPF_TYPE=() BPF_ID=() BPF_NS=() \
    BPF_CNT=() TASK_NS0=() TASK_TICKS0=() TASK_SW0=() BPF_NS0=() BPF_CNT0=() TASK_NS1=() \
    TASK_TICKS1=() TASK_SW1=() BPF_NS1=() BPF_CNT1=()
tmp="" tool="" TOOL_PID="" TOOL_NAME="" TIMED="" stats_pid="" stats_sysctl="" old_bpf_stats=""

# --- checks and set-up ----------------------------------------------------------------------------
die() { echo "$BENCH_NAME: $*" >&2; exit 1; }
bench_checks() {
    [[ $EUID -eq 0 ]] || die "run as root"
    [[ -n ${NO_PROFILER:-} || -x $PROFILER ]] || die "no profiler at $PROFILER (cargo build --release)"
    ((BASH_VERSINFO[0] >= 5)) || die "needs bash 5 (EPOCHREALTIME)"
}
need_cmd() { local c; for c; do command -v "$c" >/dev/null || die "$c not found"; done; }
need_w1() {
    XZ=$(command -v xz) || die "xz not found"
    [[ -x $PYTHON ]] || die "no $PYTHON (set PYTHON=)"
}
bench_setup() {
    tmp=$(mktemp -d "/tmp/$BENCH_NAME.XXXXXX")
    old_bpf_stats=$(cat /proc/sys/kernel/bpf_stats_enabled)
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
    mkfifo "$tmp/never"
    exec 4<>"$tmp/never"
}
bench_cleanup() {
    local p
    set +e   # every step, whatever fails: under -e, bash may leave a trap early after a signal
    if [[ -n $tool ]]; then kill "$TOOL_PID" "$tool" 2>/dev/null || true; fi
    stop_workload
    for p in "${AUX_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    if [[ -n $stats_pid ]]; then kill "$stats_pid" 2>/dev/null || true; fi
    wait 2>/dev/null || true
    if [[ -n $stats_sysctl ]]; then sysctl -qw kernel.bpf_stats_enabled="$old_bpf_stats" || true; fi
    rm -rf "$tmp"
}
nap() { read -r -t "$1" -u 4 _ || true; }

# --- the machine's load ---------------------------------------------------------------------------
cpu_times() { local -a a; read -ra a </proc/stat; echo "${a[*]:1}"; }
busy_between() {
    awk -v a="$1" -v b="$2" 'BEGIN { n = split(a, x); split(b, y)
        for (i = 1; i <= n; i++) t += y[i] - x[i]
        printf "%.0f", t ? 100 * (1 - (y[4] - x[4] + y[5] - x[5]) / t) : 0 }'
}
busy_pct() { local a; a=$(cpu_times); sleep 1; busy_between "$a" "$(cpu_times)"; }
check_idle() {
    BUSY0=$(busy_pct)
    ((BUSY0 <= 10)) ||
        echo "warning: CPUs ${BUSY0}% busy before start; other work on the machine skews the figures" >&2
}

# --- workloads ------------------------------------------------------------------------------------
start_spin() {
    local i
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
        cc -O1 -fno-omit-frame-pointer -mno-omit-leaf-frame-pointer -o "$tmp/spin" "$tmp/spin.c"
        SPIN=("$tmp/spin")
    else
        SPIN=(bash -c 'while :; do :; done')
    fi
    for ((i = 0; i < $1; i++)); do "${SPIN[@]}" & pids+=("$!"); done
}
start_w1() {
    # ~100 MB of data that keeps xz busy for minutes (it restarts if it ever ends).
    [[ -f $tmp/data ]] || head -c 75M /dev/urandom | base64 -w 76 >"$tmp/data"
    (while :; do "$XZ" -9 -T1 -c "$tmp/data" >/dev/null; done) & W1_LOOP=$!
    pids+=("$W1_LOOP")
    "$PYTHON" -c '
def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)
while True:
    fib(27)
' & pids+=("$!")
    sleep 2   # both on a CPU
    W1_PIDS=("$(pgrep -P "$W1_LOOP" || true)" "$!")
}
start_churn() {
    local rate=$1
    # Paced against a schedule (t0 + n/RATE), sleeping with nap (`read -t` on a FIFO nobody
    # writes), so the loop itself forks nothing but /bin/true. The count lands in churn.count
    # every 20 runs.
    churn() {
        local n=0 t0 next now d s step=$((1000000 / rate))
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
                nap "$s"
            fi
        done
    }
    churn & pids+=("$!")
}
churn_read() {
    local i n t
    for i in 1 2 3 4 5; do   # the loop may be rewriting the file: retry an empty read
        n="" t=""
        read -r n t 2>/dev/null <"$tmp/churn.count" || true
        [[ -n $n && -n $t ]] && break
        nap 0.01
    done
    CHURN_N=${n:-0} CHURN_T=${t:-${EPOCHREALTIME/./}}
}
start_cc() {
    local i
    # A small translation unit that keeps cc1 busy for a fraction of a second at -O2.
    [[ -f $tmp/unit.c ]] || for ((i = 0; i < 40; i++)); do
        printf 'static double t%d[64];\n' "$i"
        printf 'double f%d(int n) { double s = 0; for (int j = 0; j < n; j++) { t%d[j & 63] += j * %d.5;' "$i" "$i" "$i"
        printf ' s += t%d[(j * 7) & 63] / (j + 1); if (s > 1e9) s = s / 3; } return s; }\n' "$i"
    done >"$tmp/unit.c"
    for ((i = 0; i < $1; i++)); do
        # setsid: a process group of its own (the loop, gcc, cc1, as), stopped whole
        # shellcheck disable=SC2016  # $1, $2: the inner bash's arguments
        setsid bash -c 'while :; do gcc -O2 -c -o "$2" "$1"; done' cc "$tmp/unit.c" "$tmp/unit$i.o" \
            </dev/null >/dev/null 2>&1 &
        PGROUPS+=("$!")
    done
}
start_w2() {
    start_w1
    start_churn "$1"
    start_cc 2
    sleep 1   # the churn and the compilers running
}
stop_workload() {
    local p c kids
    for p in "${PGROUPS[@]}"; do kill -- "-$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do
        kids=$(pgrep -P "$p" || true)   # a loop's xz: stop the loop first, then it
        kill "$p" 2>/dev/null || true
        for c in $kids; do kill "$c" 2>/dev/null || true; done
    done
    for p in "${pids[@]}" "${PGROUPS[@]}"; do wait "$p" 2>/dev/null || true; done
    pids=() PGROUPS=()
}

# --- BPF run-time stats ---------------------------------------------------------------------------
bpf_stats_helper() {
    cat >"$tmp/bpfstats.c" <<'EOF'
#include <linux/bpf.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(void)
{
	union bpf_attr attr = { .enable_stats = { .type = BPF_STATS_RUN_TIME } };
	if (syscall(__NR_bpf, BPF_ENABLE_STATS, &attr, sizeof(attr)) < 0) {
		perror("BPF_ENABLE_STATS");
		return 1;
	}
	puts("on");
	fflush(stdout);
	pause(); /* the stats stay on until this process ends */
	return 0;
}
EOF
    if ! command -v gcc >/dev/null || ! gcc -O2 -o "$tmp/bpfstats" "$tmp/bpfstats.c" 2>/dev/null; then
        rm -f "$tmp/bpfstats"
    fi
}
bpf_stats_on() {
    if [[ -x $tmp/bpfstats ]]; then
        "$tmp/bpfstats" >"$tmp/bpfstats.out" 2>&1 & stats_pid=$!
        until [[ -s $tmp/bpfstats.out ]]; do kill -0 "$stats_pid" 2>/dev/null || break; nap 0.01; done
        [[ $(<"$tmp/bpfstats.out") == on ]] && return
        stats_pid=""
    fi
    sysctl -qw kernel.bpf_stats_enabled=1
    stats_sysctl=1
}
bpf_stats_off() {
    if [[ -n $stats_pid ]]; then
        kill "$stats_pid" 2>/dev/null || true
        wait "$stats_pid" 2>/dev/null || true
        stats_pid=""
        return
    fi
    [[ $(cat /proc/sys/kernel/bpf_stats_enabled) == 1 ]] ||
        echo "warning: kernel.bpf_stats_enabled was turned off during the run: BPF figures too low" >&2
    sysctl -qw kernel.bpf_stats_enabled="$old_bpf_stats"
    stats_sysctl=""
}

# --- the measured tool ----------------------------------------------------------------------------
tool_start() {
    local -a wrap=()
    TOOL_NAME=$1 TIMED=""
    shift
    if [[ -x /usr/bin/time ]]; then
        wrap=(/usr/bin/time -f '%e %U %S %M' -o "$tmp/$TOOL_NAME.time") TIMED=1
    fi
    "${wrap[@]}" "$@" >/dev/null 2>"$tmp/$TOOL_NAME.err" &
    tool=$! TOOL_PID=$!
    if [[ -n $TIMED ]]; then   # the tool is time's child
        until TOOL_PID=$(pgrep -o -P "$tool"); do kill -0 "$tool" 2>/dev/null || break; nap 0.01; done
        TOOL_PID=${TOOL_PID:-$tool}
    fi
}
tool_wait() {
    wait "$tool" || { tail -n 20 "$tmp/$TOOL_NAME.err" >&2; die "$1"; }
    tool="" TOOL_PID=""
    [[ -z $TIMED ]] || read -r TIME_WALL TIME_USER TIME_SYS TIME_KB <"$tmp/$TOOL_NAME.time"
}

# --- polling a process ----------------------------------------------------------------------------
poll_reset() {
    TICKS=0 HWM_KB=0 NS=0 RUN_NS=0 RUN_CNT=0 ALL_NS=0 T_START=$EPOCHREALTIME T_LAST=$EPOCHREALTIME
    NOW_US=${T_LAST/./} BPF_SAMPLE_FD="" BPF_LINK_ID="" T0="" T1=""
    TICKS0=0 NS0=0 RUN_NS0=0 RUN_CNT0=0 ALL_NS0=0 TICKS1=0 NS1=0 RUN_NS1=0 RUN_CNT1=0 ALL_NS1=0
    TASK_NS=() TASK_TICKS=() TASK_SW=() TASK_COMM=() TASK_NS0=() TASK_TICKS0=() TASK_SW0=()
    TASK_NS1=() TASK_TICKS1=() TASK_SW1=() BPF_FDS=() BPF_TYPE=() BPF_ID=() BPF_NS=() BPF_CNT=()
    BPF_NS0=() BPF_CNT0=() BPF_NS1=() BPF_CNT1=()
}
read_pid() {
    local pid=$1 t id line k v hwm=""
    local -a fs
    [[ -r /proc/$pid/stat ]] || return 1
    read -r line 2>/dev/null <"/proc/$pid/stat" || return 1
    read -ra fs <<<"${line##*) }"                    # fs[0] = field 3 (state)
    [[ ${fs[0]} != Z ]] || return 1
    while read -r k v _; do [[ $k == VmHWM: ]] && hwm=$v; done 2>/dev/null <"/proc/$pid/status" || true
    [[ -n $hwm ]] || return 1                        # exiting: its mm already gone
    TICKS=$((fs[11] + fs[12])) HWM_KB=$hwm           # fields 14, 15: utime, stime
    T_LAST=$EPOCHREALTIME NOW_US=${EPOCHREALTIME/./}
    for t in "/proc/$pid/task/"*; do
        id=${t##*/}
        read -r v _ 2>/dev/null <"$t/schedstat" || continue
        TASK_NS[$id]=$v
        read -r "TASK_COMM[$id]" 2>/dev/null <"$t/comm" || true
        if read -r line 2>/dev/null <"$t/stat"; then
            read -ra fs <<<"${line##*) }"
            TASK_TICKS[$id]=$((fs[11] + fs[12]))
        fi
        while read -r k v; do
            [[ $k == voluntary_ctxt_switches: ]] && TASK_SW[$id]=$v
        done 2>/dev/null <"$t/status" || true
    done
    NS=0
    for v in "${TASK_NS[@]}"; do NS=$((NS + v)); done
    [[ -z ${2:-} ]] || bpf_scan "$pid"
    bpf_read "$pid"
}
bpf_scan() {
    local f fd k v typ id link
    for f in "/proc/$1/fdinfo/"*; do
        fd=${f##*/}
        [[ -z ${BPF_TYPE[$fd]:-} ]] || continue
        typ="" id="" link=""
        while IFS=$': \t' read -r k v; do
            case $k in prog_type) typ=$v ;; prog_id) id=$v ;; link_type) link=$v ;; esac
        done 2>/dev/null <"$f" || true
        if [[ -n $typ && -n $id ]]; then
            BPF_FDS+=("$fd") BPF_TYPE[$fd]=$typ BPF_ID[$fd]=$id
            [[ $typ != 7 ]] || BPF_SAMPLE_FD=$fd
        elif [[ $link == perf && -n $id ]]; then
            BPF_LINK_ID=$id
        fi
    done
}
bpf_read() {
    local fd k v
    ALL_NS=0
    for fd in "${BPF_FDS[@]}"; do
        while IFS=$': \t' read -r k v; do
            case $k in run_time_ns) BPF_NS[$fd]=$v ;; run_cnt) BPF_CNT[$fd]=$v ;; esac
        done 2>/dev/null <"/proc/$1/fdinfo/$fd" || true
        ALL_NS=$((ALL_NS + ${BPF_NS[$fd]:-0}))
    done
    RUN_NS=0 RUN_CNT=0
    for fd in "${BPF_FDS[@]}"; do
        [[ ${BPF_TYPE[$fd]} == 7 ]] || continue
        RUN_NS=$((RUN_NS + ${BPF_NS[$fd]:-0})) RUN_CNT=$((RUN_CNT + ${BPF_CNT[$fd]:-0}))
    done
}
mark() {
    local n=$1 m
    printf -v "T$n" %s "$T_LAST"
    printf -v "TICKS$n" %s "$TICKS"
    printf -v "NS$n" %s "$NS"
    printf -v "RUN_NS$n" %s "$RUN_NS"
    printf -v "RUN_CNT$n" %s "$RUN_CNT"
    printf -v "ALL_NS$n" %s "$ALL_NS"
    for m in TASK_NS TASK_TICKS TASK_SW BPF_NS BPF_CNT; do copy_map "$m" "$m$n"; done
}
copy_map() {
    local -n _src=$1
    local -n _dst=$2
    local _k
    _dst=()
    for _k in "${!_src[@]}"; do _dst["$_k"]=${_src["$_k"]}; done
}
by_comm() {
    local -n _tids=$1
    local -n _names=$2
    local _t _c
    _names=()
    for _t in "${!_tids[@]}"; do
        _c=${TASK_COMM[$_t]:-?}
        _names["$_c"]=$((${_names["$_c"]:-0} + ${_tids["$_t"]}))
    done
}
run_figures() {
    local f="%.$1f"
    WALL=$(awk -v a="$T_START" -v b="$T_LAST" 'BEGIN { print b - a }')
    CPU=$(awk -v n="$NS" -v w="$WALL" -v f="$f" 'BEGIN { printf f, 100 * n / 1e9 / w }')
    RSS=$(mb "$HWM_KB")
    if [[ -n $TIMED ]]; then
        WALL=$TIME_WALL RSS=$(mb "$TIME_KB")
        CPU=$(awk -v u="$TIME_USER" -v s="$TIME_SYS" -v e="$TIME_WALL" -v f="$f" \
            'BEGIN { printf f, 100 * (u + s) / e }')
    fi
    STEADY=$(awk -v a="${T0:-0}" -v b="${T1:-0}" 'BEGIN { print (a > 0 && b > a) ? b - a : 0 }')
}

# --- figures --------------------------------------------------------------------------------------
pct() {
    awk -v s="$1" -v w="$2" -v f="%.${3:-3}f" 'BEGIN { if (w > 0) printf f, 100 * s / w; else print "?" }'
}
mb() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
size_h() { numfmt --to=iec --suffix=B "$(stat -c %s "$1")"; }
json_num() { sed -n "s/.*\"$1\": *\\([0-9.]*\\).*/\\1/p" "$2" | head -1; }

# --- stacks ---------------------------------------------------------------------------------------
folded_stacks() {   # "comm;frame;...;frame COUNT", frames may hold spaces
    awk '{ c = $NF; s = $0; sub(/ [0-9]+$/, "", s); i = index(s, ";")
        if (i) print substr(s, 1, i - 1) "\t" c "\t" substr(s, i + 1); else print s "\t" c "\t" }' "$1"
}
perf_stacks() {   # a header line (comm, pid, [cpu], ...), a line per frame (addr sym+off (dso)), a blank
    awk 'function flush() { if (comm != "") print comm "\t1\t" frames; comm = "" }
        /^[^ \t]/ { flush(); comm = $0; sub(/^ */, "", comm)
            if (match(comm, / +[0-9]+(\/[0-9]+)? +\[[0-9]+\]/)) comm = substr(comm, 1, RSTART - 1)
            else sub(/ .*/, "", comm)
            frames = ""; next }
        /^[ \t]+[0-9a-f]+ / { f = $2; sub(/\+0x[0-9a-f]+$/, "", f); frames = frames (frames == "" ? "" : ";") f; next }
        /^$/ { flush() }
        END { flush() }' "$1"
}
bpftrace_stacks() {   # @[comm, \n frames \n, \n frames \n]: COUNT (an empty stack: ", , " on one line)
    awk '/^@[A-Za-z_0-9]*\[/ { s = $0; sub(/^@[A-Za-z_0-9]*\[/, "", s); sub(/, .*$/, "", s)
            comm = s; frames = ""; on = 1; next }
        on && /^\]: [0-9]+$/ { print comm "\t" $2 "\t" frames; on = 0; next }
        on && /^ +[^ ]/ { f = $1; sub(/\+[0-9]+$/, "", f); frames = frames (frames == "" ? "" : ";") f }' "$1"
}
stack_count() { awk -F '\t' '{ n += $2 } END { print n + 0 }'; }
stack_share() {
    awk -F '\t' -v re="$1" '$1 ~ re { t += $2; n = split($3, f, ";")
            for (i = 1; i <= n; i++)
                if (f[i] ~ /^(_start|__libc_start_main(_impl)?)(@.*)?$/) { r += $2; break } }
        END { if (t) printf "%.1f/%d\n", 100 * r / t, t; else print "-" }'
}
