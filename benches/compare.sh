#!/usr/bin/env bash
# compare.sh — the project's own side-by-side (issue 10): what profiler, `perf record
# --call-graph dwarf` and `bpftrace` cost on the same workloads, in the same run, and how many of
# their stacks are complete.
#
# Workloads (docs/performance.md), started once per workload and round, the tools run one after
# the other on it:
#   W1  `xz -9 -T1` compressing generated data + python3.11 running a recursive pure-Python
#       function (start_w1 in lib.sh): both CPUs busy with frame-pointer-less Debian binaries;
#   W2  W1's CPU load + a loop starting RATE `/bin/true` per second + two loops compiling a small
#       C file with `gcc -O2 -c` (cc1, as), each starting its next compile when one ends
#       (start_w2 in lib.sh).
# Tools, each at FREQ Hz on all CPUs for DURATION s, when installed (TOOLS= picks some):
#   profiler  `profiler record -a -F FREQ -d DURATION -o X.folded`;
#   perf      `perf record --call-graph dwarf -a -F FREQ -- sleep DURATION`, then, once the
#             workload is stopped, `perf script` over its data (its own row: post-processing);
#   bpftrace  `profile:hz:FREQ { @[comm, kstack, ustack] = count(); }` plus an interval probe
#             that exits after DURATION s (frame pointers only: user stacks of Debian binaries
#             end after a frame or two).
# With ROUNDS=N the whole set runs N times, the tools in reverse order every other round.
#
# Per workload x tool it prints one row:
#   ready      launch to the first sample (BPF tools: the first run of their perf_event
#              programs) or, for perf, to the exec of its `sleep` (perf starts it once its events
#              are enabled); to the resolution of the polling (20 ms) — perf's figure is an
#              upper bound of its attach time, not of its first sample;
#   CPU% stdy  user+sys of the tool's process as % of one core in the steady state: its threads'
#              schedstat run time from WARMUP s after ready until sampling stopped (BPF tools:
#              the last reading at which their programs' run count still grew; perf: while its
#              `sleep` lives);
#   CPU% run   user+sys over the whole run incl. start-up and the final output (rusage from
#              /usr/bin/time: symbolization, perf's build-id pass, bpftrace's map print), and
#              CPU s the same in seconds;
#   BPF us     run_time_ns / run_cnt of the tool's perf_event programs (profiler: on_sample;
#              bpftrace: its profile probe and the one run of its interval probe) in the steady
#              state; BPF% all its BPF programs (profiler: the fork/exec/exit hooks too) as % of
#              one core; total% = CPU% stdy + BPF%. perf's in-kernel work per sample (the stack
#              copy into its ring buffer) is not visible from user space: its total is its CPU;
#   RSS MB     peak RSS (max RSS from /usr/bin/time, else VmHWM);
#   samples    the samples in the tool's output (all processes, idle included where recorded);
#   xz, python3, cc1  "PCT/N": N samples of that target, PCT the % that are complete, i.e. reach
#              `__libc_start_main` or `_start` (profiler: the folded output; perf: `perf script`;
#              bpftrace: its printed stacks).
#
# Usage (root; build first with `cargo build --release`):
#   sudo benches/compare.sh
#   DURATION=30 FREQ=19 RATE=200 WARMUP=5 TOOLS="profiler bpftrace" WORKLOADS=W1 ROUNDS=2 \
#       PROFILER=/path/to/profiler sudo -E benches/compare.sh
#   PERF_SCRIPT_ARGS=--no-inline passes options to `perf script` (with other work on the machine,
#   its addr2line pass over their large binaries can take minutes); KEEP=DIR keeps the outputs
#   (folded, perf script text, bpftrace map, the stacks as read, the tools' stderr) in DIR.
# Run it on an otherwise idle machine (it warns if the CPUs are > 10% busy before it starts).
# Needs: bash 5, gcc, xz, python3.11, setsid; perf and bpftrace for their rows (skipped with a
# note when missing); /usr/bin/time (optional: whole-run figures). Not run by CI. Takes about
# ROUNDS x workloads x tools x (DURATION + 4) s plus perf script (up to minutes for W2).
set -euo pipefail

DURATION=${DURATION:-30}
FREQ=${FREQ:-19}
RATE=${RATE:-200}   # W2: /bin/true per second
WARMUP=${WARMUP:-$((DURATION >= 15 ? 5 : DURATION / 3))}   # s after ready before the steady state
POLL=${POLL:-0.25}  # s between /proc readings once the tool is ready
ROUNDS=${ROUNDS:-1}
PERF_SCRIPT_ARGS=${PERF_SCRIPT_ARGS:-}   # e.g. --no-inline: no addr2line for inlined frames
KEEP=${KEEP:-}      # a directory: the tools' outputs are copied there
TOOLS=${TOOLS:-profiler perf bpftrace}
WORKLOADS=${WORKLOADS:-W1 W2}
for t in $TOOLS; do
    [[ $t == profiler || $t == perf || $t == bpftrace ]] || { echo "TOOLS: profiler, perf, bpftrace" >&2; exit 1; }
done
for w in $WORKLOADS; do
    [[ $w == W1 || $w == W2 ]] || { echo "WORKLOADS: W1, W2" >&2; exit 1; }
done
[[ " $TOOLS " == *" profiler "* ]] || NO_PROFILER=1
# shellcheck source=benches/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bench_checks
need_w1
need_cmd gcc setsid
USE=()
for t in $TOOLS; do
    if [[ $t == profiler ]] || command -v "$t" >/dev/null; then USE+=("$t"); else
        echo "note: $t not found: no $t rows" >&2
    fi
done
((${#USE[@]})) || die "none of the tools ($TOOLS) is installed"
[[ -z $KEEP ]] || mkdir -p "$KEEP"
bench_setup
check_idle
bpf_stats_helper
export PERF_BUILDID_DIR=$tmp/buildid   # keep perf's build-id cache out of ~/.debug

# --- polling -------------------------------------------------------------------------------------
warmup_us=$(awk -v w="$WARMUP" 'BEGIN { printf "%d", w * 1e6 }')
# perf_sleeping: perf's child (the `sleep` it starts once its events are enabled) has exec'd.
perf_sleeping() {
    local c="" comm
    # the file holds "PID " without a newline: read fails at its end but sets c
    read -r c _ 2>/dev/null <"/proc/$TOOL_PID/task/$TOOL_PID/children" || true
    [[ -n $c ]] && read -r comm 2>/dev/null <"/proc/$c/comm" && [[ $comm == sleep ]]
}
# watch bpf|perf: reads the tool (TOOL_PID, read_pid in lib.sh) until it exits, every 20 ms until
# it is ready (T_READY: see the header), every POLL s after. Its BPF programs are looked for until
# then. mark 0 at the first reading WARMUP s after ready, mark 1 at each reading while it samples.
# Only builtins in the loop.
watch() {
    local kind=$1 scan="" warm_at="" last=0 sampling step=0.02
    [[ $kind == bpf ]] && scan=scan
    poll_reset
    T_READY=""
    while read_pid "$TOOL_PID" "$scan"; do
        if [[ $kind == bpf ]]; then
            sampling=$((RUN_CNT > last)) last=$RUN_CNT
        elif perf_sleeping; then sampling=1; else sampling=0; fi
        if [[ -z $T_READY ]] && ((sampling)); then
            T_READY=$T_LAST warm_at=$((NOW_US + warmup_us)) step=$POLL scan=""
        fi
        if [[ -z $T0 && -n $warm_at ]] && ((NOW_US >= warm_at)); then mark 0; fi
        if [[ -n $T0 ]] && ((sampling)); then mark 1; fi
        nap "$step"
    done
}

# run_tool NAME bpf|perf CMD...: runs CMD (tool_start), watches it, waits for it; sets FIG to
# "ready|CPU% stdy|CPU% run|CPU s|BPF us|BPF%|total%|RSS MB" and RUNS (its perf_event programs'
# runs, whole run).
run_tool() {
    local name=$1 kind=$2 launch=$EPOCHREALTIME cpu_s
    shift 2
    tool_start "$name" "$@"
    watch "$kind"
    tool_wait "$name failed"
    run_figures 3
    cpu_s=$(awk -v n="$NS" 'BEGIN { printf "%.2f", n / 1e9 }')
    [[ -z $TIMED ]] || cpu_s=$(awk -v u="$TIME_USER" -v s="$TIME_SYS" 'BEGIN { printf "%.2f", u + s }')
    RUNS=$RUN_CNT
    FIG=$(awk -v kind="$kind" -v l="$launch" -v r="${T_READY:-0}" -v st="$STEADY" -v n0="$NS0" \
        -v n1="$NS1" -v r0="$RUN_NS0" -v r1="$RUN_NS1" -v c0="$RUN_CNT0" -v c1="$RUN_CNT1" \
        -v a0="$ALL_NS0" -v a1="$ALL_NS1" -v cpu="$CPU" -v cs="$cpu_s" -v rss="$RSS" 'BEGIN {
            ready = r > 0 ? sprintf("%.2f", r - l) : "?"
            stdy = "?"; us = "-"; bpf = "-"; total = "?"
            if (st > 0) stdy = sprintf("%.3f", 100 * (n1 - n0) / 1e9 / st)
            if (kind == "bpf" && c1 > c0) us = sprintf("%.2f", (r1 - r0) / (c1 - c0) / 1000)
            if (kind == "bpf" && st > 0) bpf = sprintf("%.4f", 100 * (a1 - a0) / 1e9 / st)
            if (st > 0) total = sprintf("%.3f", stdy + bpf)
            printf "%s|%s|%s|%s|%s|%s|%s|%s", ready, stdy, cpu, cs, us, bpf, total, rss }')
}

# --- one workload, every tool --------------------------------------------------------------------
ROWS=() NOTES=()
TARGETS=('^xz$' '^python3' '^cc1$')
# shares STACKS_FILE: "samples|xz|python3|cc1"
shares() {
    local t out
    out=$(stack_count <"$1")
    for t in "${TARGETS[@]}"; do out+="|$(stack_share "$t" <"$1")"; done
    echo "$out"
}
# run_workload LABEL W1|W2 TOOL...
run_workload() {
    local label=$1 w=$2 t id n0 t0 rate
    local -A fig=() runs=() churn=()
    shift 2
    echo "== $label: starting $w ..." >&2
    if [[ $w == W1 ]]; then start_w1; else start_w2 "$RATE"; fi
    for t; do
        id=$label.$t
        echo "== $label: $t at $FREQ Hz for ${DURATION}s ..." >&2
        [[ $w == W1 ]] || { churn_read; n0=$CHURN_N t0=$CHURN_T; }
        case $t in
        profiler)
            run_tool "$id" bpf "$PROFILER" record -a -F "$FREQ" -d "$DURATION" -o "$tmp/$id.folded"
            ;;
        perf)
            run_tool "$id" perf perf record --call-graph dwarf -a -F "$FREQ" -o "$tmp/$id.data" \
                -- sleep "$DURATION"
            ;;
        bpftrace)
            run_tool "$id" bpf bpftrace -o "$tmp/$id.bt" -e "profile:hz:$FREQ { @[comm, kstack, ustack] = count(); }
                interval:s:$DURATION { exit(); }"
            ;;
        esac
        fig[$t]=$FIG runs[$t]=$RUNS
        if [[ $w == W2 ]]; then
            churn_read
            churn[$t]=$(awk -v n="$((CHURN_N - n0))" -v a="$t0" -v b="$CHURN_T" \
                'BEGIN { printf "%.0f", (b > a ? n * 1e6 / (b - a) : 0) }')
        fi
        sleep 1
    done
    stop_workload
    # the outputs, read with the workload stopped
    for t; do
        id=$label.$t
        case $t in
        profiler) folded_stacks "$tmp/$id.folded" >"$tmp/$id.stacks" ;;
        bpftrace) bpftrace_stacks "$tmp/$id.bt" >"$tmp/$id.stacks" ;;
        perf)
            echo "== $label: perf script ..." >&2
            # shellcheck disable=SC2016  # $1, $2: the inner shell's arguments
            # shellcheck disable=SC2086  # PERF_SCRIPT_ARGS: words
            tool_start "$id.script" sh -c 'd=$1 o=$2; shift 2; exec perf script "$@" -i "$d" >"$o"' sh \
                "$tmp/$id.data" "$tmp/$id.txt" $PERF_SCRIPT_ARGS
            tool_wait "perf script failed"
            perf_stacks "$tmp/$id.txt" >"$tmp/$id.stacks"
            ;;
        esac
        ROWS+=("$label|$t|${fig[$t]}|$(shares "$tmp/$id.stacks")")
        [[ -z $KEEP ]] || cp "$tmp/$id".{folded,txt,bt,stacks,err} "$KEEP"/ 2>/dev/null || true
        if [[ $t == perf ]]; then
            if [[ -n $TIMED ]]; then
                ROWS+=("$label|perf script|-|-|-|$(awk -v u="$TIME_USER" -v s="$TIME_SYS" \
                    'BEGIN { printf "%.2f", u + s }')|-|-|-|$(mb "$TIME_KB")|-|-|-|-")
            fi
            NOTES+=("$label perf: $(sed -n 's/.*perf record: Captured and wrote \(.*\) \]$/\1/p' \
                "$tmp/$id.err" | tail -1)${TIMED:+; perf script ${TIME_WALL}s wall}")
        else
            NOTES+=("$label $t: ${runs[$t]} perf_event program runs")
        fi
        [[ -z ${churn[$t]:-} ]] || NOTES[-1]+="; churn ${churn[$t]} /bin/true per second (target $RATE)"
    done
}

echo "compare: tools ${USE[*]}; workloads $WORKLOADS; $FREQ Hz, ${DURATION}s each, $ROUNDS round(s)" >&2
bpf_stats_on
for ((r = 1; r <= ROUNDS; r++)); do
    order=("${USE[@]}")
    if ((r % 2 == 0)); then
        order=()
        for ((i = ${#USE[@]} - 1; i >= 0; i--)); do order+=("${USE[i]}"); done
    fi
    for w in $WORKLOADS; do
        label=$w
        ((ROUNDS == 1)) || label=$w.$r
        run_workload "$label" "$w" "${order[@]}"
    done
done
bpf_stats_off

# --- the table -----------------------------------------------------------------------------------
echo
echo "compare: kernel $(uname -r), $(nproc) CPUs, CPUs ${BUSY0}% busy before start; ${FREQ} Hz, ${DURATION}s" \
    "per tool, steady state from ${WARMUP}s after ready"
echo "W1: xz -9 -T1 + $(basename "$PYTHON") (recursive pure Python); W2: W1 + ${RATE} /bin/true per second" \
    "+ 2 loops of gcc -O2 -c"
fmt='%-5s %-11s %6s %9s %8s %6s %7s %7s %7s %7s %7s %11s %11s %11s\n'
# shellcheck disable=SC2059
{
    printf "$fmt" load tool "ready" "CPU%stdy" "CPU%run" "CPU s" "BPF us" "BPF%" "total%" "RSS MB" \
        samples "xz" "python3" "cc1"
    for row in "${ROWS[@]}"; do
        IFS='|' read -ra f <<<"$row"
        printf "$fmt" "${f[@]}"
    done
}
echo "ready: s from launch to the first sample (perf: to the exec of its sleep, once attached)."
echo "CPU%stdy: the tool's user+sys as % of one core, steady state; CPU%run and CPU s: whole run incl."
echo "start-up and final output; BPF us: per run of its perf_event programs; BPF%: all its BPF"
echo "programs, % of one core; total% = CPU%stdy + BPF% (perf's in-kernel stack copies not counted)."
echo "xz, python3, cc1: % of that target's samples whose stack reaches __libc_start_main or _start /"
echo "its samples. perf script: post-processing of perf.data, run with the workload stopped."
echo "bpftrace prints addresses for processes gone by its exit (cc1): their stacks cannot be judged."
printf '%s\n' "${NOTES[@]}"
grep -hE '^(profiler: (error|warning)|WARNING|Warning)' "$tmp"/*.err 2>/dev/null | sort | uniq -c | head -5 || true
