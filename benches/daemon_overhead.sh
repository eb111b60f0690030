#!/usr/bin/env bash
# daemon_overhead.sh — what does `profiler daemon` cost, always on at its default rate, and how
# many bytes does it send per window (issue 5, "Benchmark")?
#
# A loopback collector (a small python3 http.server written here, on 127.0.0.1, a free port)
# answers every OTLP/HTTP POST with 200 and an empty body, counting requests and body bytes (and,
# for gzip bodies, their size once decompressed). Against it, one after the other:
#   1. idle:        profiler daemon --endpoint http://127.0.0.1:PORT --interval $INTERVAL
#                   (default -F 19, or $FREQ) for DURATION s, nothing else started by us;
#   2. idle --gzip: the same with --gzip, for GZIP_DURATION s;
#   3. busy:        1. while `xz -9 -T1` (compressing generated data, in a loop) and python3.11
#                   (a recursive pure-Python function) keep both CPUs busy (W1, docs/performance.md);
#   4. busy --gzip: 2. on the same workload.
# Each run has --stats-json and BPF run-time stats on (a BPF_ENABLE_STATS fd held by a helper
# compiled here, else kernel.bpf_stats_enabled=1, restored after), and ends with SIGTERM (the
# daemon then exports its last, partial window). Per run it prints:
#   - CPU %: the daemon's user+sys time as % of one core in the steady state (from the
#     on-CPU time of all its threads, /proc/PID/task/TID/schedstat, from WARMUP s after its
#     first sample to the last reading before SIGTERM), and over the whole run incl. start-up
#     and the final export (rusage from /usr/bin/time, else schedstat);
#   - BPF us/smp: run_time_ns / run_cnt of on_sample (the perf_event program, prog_type 7) over
#     the steady state; BPF %: the run time of all its BPF programs (on_sample and the
#     fork/exec/exit hooks) as % of one core over the steady state;
#   - total %: steady CPU % + BPF % (how docs/performance.md counts a profiler's cost);
#   - peak RSS (VmHWM; /usr/bin/time's max RSS when it is installed), samples and lost samples,
#     windows (counters of --stats-json at exit);
#   - bytes/window: export_bytes / export_delivered from the last --stats-json written before
#     SIGTERM (complete windows only; after gzip for the --gzip runs), and the collector's own
#     count over the whole run (incl. the last, partial window) as a cross-check.
#
# Usage (root; build first with `cargo build --release`):
#   sudo benches/daemon_overhead.sh
#   DURATION=120 GZIP_DURATION=60 PROFILER=/path/to/profiler sudo -E benches/daemon_overhead.sh
#   CASES="idle busy" (default "idle idle-gzip busy busy-gzip") picks runs; FREQ=, INTERVAL=.
# Run it on an otherwise idle machine: the "idle" cases are only idle if nothing else runs. Before
# each idle case it waits up to QUIET_WAIT (300) s for the CPUs to be <= 10% busy, and every
# row says how busy the CPUs were during the run (all work, ours included).
# Needs: bash 5, python3, xz and python3.11 (busy cases), gcc (optional: the stats helper),
# /usr/bin/time (optional). Not run by CI. Takes about 2 x (DURATION + GZIP_DURATION) + 30 s
# (defaults: 300 s and 60 s, about 12.5 minutes).
# The targets: <= 0.05% of one core in total at 19 Hz on a busy machine (W1); peak RSS
# <= 30 MB.
set -euo pipefail

DURATION=${DURATION:-300}
GZIP_DURATION=${GZIP_DURATION:-$((DURATION < 60 ? DURATION : 60))}
INTERVAL=${INTERVAL:-10}
FREQ=${FREQ:-}                # empty: the daemon's default (19 Hz)
WARMUP=${WARMUP:-10}          # seconds after the first sample before the steady state
POLL=${POLL:-1}               # seconds between /proc readings
QUIET_WAIT=${QUIET_WAIT:-300} # seconds to wait for a quiet machine before an idle case
CASES=${CASES:-idle idle-gzip busy busy-gzip}
# shellcheck source=benches/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bench_checks
command -v python3 >/dev/null || die "python3 not found (the collector)"
for c in $CASES; do
    case $c in
    idle | idle-gzip) ;;
    busy | busy-gzip)
        need_w1
        ;;
    *) die "unknown case '$c' (idle, idle-gzip, busy, busy-gzip)" ;;
    esac
done
bench_setup

# --- helpers ----------------------------------------------------------------------------------
# wait_quiet: up to QUIET_WAIT s for the CPUs to be <= 10% busy (over 2 s); sets BUSY_BEFORE.
wait_quiet() {
    local t0=$SECONDS a warned=""
    while :; do
        a=$(cpu_times); sleep 2; BUSY_BEFORE=$(busy_between "$a" "$(cpu_times)")
        ((BUSY_BEFORE <= 10)) && return
        if ((SECONDS - t0 >= QUIET_WAIT)); then
            echo "warning: CPUs still ${BUSY_BEFORE}% busy after ${QUIET_WAIT}s; measuring anyway" >&2
            return
        fi
        [[ -n $warned ]] || echo "   CPUs ${BUSY_BEFORE}% busy: waiting up to ${QUIET_WAIT}s for a quiet machine ..." >&2
        warned=1
    done
}
# proc_ticks FILE: "pid ticks comm" (utime+stime) of every process now, to FILE.
proc_ticks() {
    local f l rest
    local -a fs
    for f in /proc/[0-9]*/stat; do
        read -r l 2>/dev/null <"$f" || continue
        rest=${l##*) }; read -ra fs <<<"$rest"
        l=${l#* (}; l=${l%) *}
        echo "${f//[^0-9]/} $((fs[11] + fs[12])) ${l// /_}"
    done >"$1"
}
# busiest BEFORE AFTER SECONDS: the 4 processes that used the most CPU between two proc_ticks
# (processes that began and ended in between are missed), as % of one core.
busiest() {
    awk -v hz="$(getconf CLK_TCK)" -v s="$3" 'NR == FNR { t0[$1] = $2; next }
        { d[$3 "[" $1 "]"] = $2 - t0[$1] }
        END {
            for (k in d) if (d[k] > 0) printf "%s %.1f%%\n", k, 100 * d[k] / hz / s }' "$1" "$2" |
        sort -k2 -rn | head -4 | paste -sd, - | sed 's/,/, /g'
}

# --- the collector ------------------------------------------------------------------------------
cat >"$tmp/collector.py" <<'EOF'
# A loopback OTLP/HTTP sink: 200 with an empty body for every POST. Keeps "requests bytes
# gzip_requests gzip_plain_bytes" in the file argv[1] (rewritten atomically after each request)
# and prints its port on stdout.
import http.server, os, sys, threading, zlib
out = sys.argv[1]
lock = threading.Lock()
n = {"requests": 0, "bytes": 0, "gzip": 0, "plain": 0}

def save():
    with open(out + ".tmp", "w") as f:
        f.write("%(requests)d %(bytes)d %(gzip)d %(plain)d\n" % n)
    os.replace(out + ".tmp", out)

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"   # keep-alive, as a real collector

    def body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_POST(self):
        data = self.body()
        with lock:
            n["requests"] += 1
            n["bytes"] += len(data)
            if self.headers.get("Content-Encoding", "").lower() == "gzip":
                n["gzip"] += 1
                try:
                    n["plain"] += len(zlib.decompress(data, 31))
                except zlib.error:
                    pass
            save()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with lock:
    save()
print(server.server_address[1], flush=True)
server.serve_forever()
EOF
python3 "$tmp/collector.py" "$tmp/collector.counts" >"$tmp/collector.port" 2>"$tmp/collector.err" &
AUX_PIDS+=("$!")
for _ in $(seq 100); do [[ -s $tmp/collector.port ]] && break; nap 0.05; done
PORT=$(<"$tmp/collector.port") || true
[[ $PORT =~ ^[0-9]+$ ]] || { cat "$tmp/collector.err" >&2; die "the collector did not start"; }
ENDPOINT=http://127.0.0.1:$PORT
collector_counts() { cat "$tmp/collector.counts"; }   # requests bytes gzip_requests gzip_plain

# --- BPF run-time stats -------------------------------------------------------------------------
# Held on by the helper of lib.sh (a BPF_ENABLE_STATS fd), which counts apart from
# kernel.bpf_stats_enabled: another script restoring that sysctl meanwhile cannot turn them off
# under us. Without the helper (no gcc, old kernel), the sysctl is used (and checked afterwards).
bpf_stats_helper

# --- polling ------------------------------------------------------------------------------------
# poll PID SECONDS STATS_JSON: read the daemon every POLL s until SECONDS after the start, then
# copy STATS_JSON to STATS_JSON.before (the counters of the windows cut so far) and return.
# Keeps its last reading (read_pid in lib.sh: HWM_KB, NS, RUN_NS / RUN_CNT of on_sample and
# ALL_NS of all its BPF programs). The steady state: from the first reading WARMUP s after the
# first one at which on_sample's run_cnt was > 0 (mark 0) to the last reading (mark 1). Its BPF
# program fds are looked for until the steady state starts (the hooks and on_sample load
# together, before sampling starts). Only builtins in the loop (and nap).
warmup_us=$(awk -v w="$WARMUP" 'BEGIN { printf "%d", w * 1e6 }')
poll() {
    local pid=$1 end_at scan=scan warm_at=""
    poll_reset
    end_at=$((NOW_US + $2 * 1000000))
    while read_pid "$pid" "$scan"; do
        if [[ -z $warm_at && $RUN_CNT -gt 0 ]]; then
            warm_at=$((NOW_US + warmup_us))
        fi
        if [[ -z $T0 && -n $warm_at && $NOW_US -ge $warm_at ]]; then mark 0; scan=""; fi
        [[ -z $T0 ]] || mark 1
        ((NOW_US < end_at)) || break
        nap "$POLL"
    done
    cp "$3" "$3.before" 2>/dev/null || true
}

# measure NAME SECONDS DAEMON_ARGS...: run the daemon for SECONDS (under /usr/bin/time if
# installed), poll() it, stop it with SIGTERM, and set WALL (s), CPU (% of one core over the
# whole run), CPU_STEADY, STEADY (s), BPF_US (µs per on_sample run, steady), BPF_PCT (all
# programs, % of one core, steady), RSS (MB). Its stderr is in $tmp/NAME.err, its counters in
# $tmp/NAME.json (at exit) and $tmp/NAME.json.before (last written before SIGTERM).
measure() {
    local name=$1 seconds=$2; shift 2
    tool_start "$name" "$PROFILER" daemon "$@" --stats-json "$tmp/$name.json"
    poll "$TOOL_PID" "$seconds" "$tmp/$name.json"
    kill -TERM "$TOOL_PID" 2>/dev/null || true
    tool_wait "$name: the daemon failed"
    run_figures 4
    read -r CPU_STEADY BPF_US BPF_PCT < <(awk -v n0="$NS0" -v n1="$NS1" -v r0="$RUN_NS0" \
        -v r1="$RUN_NS1" -v c0="$RUN_CNT0" -v c1="$RUN_CNT1" -v a0="$ALL_NS0" -v a1="$ALL_NS1" \
        -v st="$STEADY" 'BEGIN {
            cpu = "?"; us = "-"; pct = "?"
            if (st > 0) cpu = sprintf("%.4f", 100 * (n1 - n0) / 1e9 / st)
            if (c1 > c0) us = sprintf("%.2f", (r1 - r0) / (c1 - c0) / 1000)
            if (st > 0) pct = sprintf("%.4f", 100 * (a1 - a0) / 1e9 / st)
            print cpu, us, pct }')
    [[ -n $BPF_SAMPLE_FD ]] || echo "warning: $name: no perf_event BPF program fd found" >&2
}

# --- runs ---------------------------------------------------------------------------------------
declare -A ROW=() BYTES=() NOTE=() RATIO=()
run_case() {
    local c=$1 secs=$DURATION busy0="" a cc0 cc1 r0 b0 r1 b1 p1 p0 j before d dl bpw
    local -a args=(--endpoint "$ENDPOINT" --interval "$INTERVAL")
    [[ -n $FREQ ]] && args+=(-F "$FREQ")
    [[ $c == *-gzip ]] && { args+=(--gzip); secs=$GZIP_DURATION; }
    echo "== $c: profiler daemon ${args[*]} for ${secs}s ..." >&2
    if [[ $c == idle* ]]; then wait_quiet; busy0=$BUSY_BEFORE; else start_w1; fi
    cc0=$(collector_counts); proc_ticks "$tmp/ticks0"; a=$(cpu_times)
    bpf_stats_on
    measure "$c" "$secs" "${args[@]}"
    bpf_stats_off
    d=$(busy_between "$a" "$(cpu_times)"); cc1=$(collector_counts); proc_ticks "$tmp/ticks1"
    local others
    others=$(busiest "$tmp/ticks0" "$tmp/ticks1" "$WALL")
    [[ $c == busy* ]] && stop_workload
    j=$tmp/$c.json before=$tmp/$c.json.before
    read -r r0 b0 _ p0 <<<"$cc0"; read -r r1 b1 _ p1 <<<"$cc1"
    dl=$(json_num export_delivered "$before"); dl=${dl:-0}
    bpw=$(awk -v b="$(json_num export_bytes "$before")" -v n="$dl" \
        'BEGIN { if (n > 0) printf "%.0f", b / n; else print "-" }')
    BYTES[$c]=$bpw
    RATIO[$c]=$(awk -v b="$((b1 - b0))" -v p="$((p1 - p0))" 'BEGIN { if (p > 0) printf "%.0f", 100 * b / p }')
    ROW[$c]=$(printf '%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s' "$c" "$CPU_STEADY" "$CPU" "$BPF_US" \
        "$BPF_PCT" "$(awk -v a="$CPU_STEADY" -v b="$BPF_PCT" 'BEGIN { printf "%.4f", a + b }')" \
        "$RSS" "$(json_num samples "$j")" "$(json_num samples_lost "$j")" "$(json_num windows "$j")" \
        "$bpw" "$d")
    NOTE[$c]=$(awk -v w="$WALL" -v st="$STEADY" -v del="$(json_num export_delivered "$j")" \
        -v att="$(json_num export_attempts "$j")" -v rej="$(json_num export_rejected "$j")" \
        -v drp="$(json_num export_dropped "$j")" -v eb="$(json_num export_bytes "$j")" \
        -v r="$((r1 - r0))" -v b="$((b1 - b0))" -v p="$((p1 - p0))" -v dl="$dl" \
        -v busy0="${busy0:--}" -v others="$others" 'BEGIN {
            printf "%.0fs run, %.0fs steady; exports: %d delivered, %d attempts, %d rejected, %d dropped, %d bytes; ", w, st, del, att, rej, drp, eb
            printf "collector: %d requests, %d bytes (%.0f per request)", r, b, r ? b / r : 0
            if (p > 0) printf ", %d bytes unzipped (%.0f per request, gzip to %.0f%%)", p, p / r, 100 * b / p
            printf "; bytes/window from %d complete windows", dl
            if (busy0 != "-") printf "; CPUs %s%% busy just before", busy0
            if (others != "") printf "; busiest processes (%% of one core): %s", others }')
}

echo "daemon overhead: $(nproc) CPUs, kernel $(uname -r), collector at $ENDPOINT," \
    "${DURATION}s per main case, ${GZIP_DURATION}s per gzip case, interval ${INTERVAL}s," \
    "${FREQ:-default (19)} Hz" >&2
for c in $CASES; do run_case "$c"; done

# --- report -------------------------------------------------------------------------------------
echo
echo "profiler daemon overhead: $(nproc) CPUs, kernel $(uname -r), -F ${FREQ:-19 (default)}," \
    "--interval $INTERVAL, loopback collector;"
echo "main cases ${DURATION}s, gzip cases ${GZIP_DURATION}s; busy = xz -9 -T1 + $(basename "$PYTHON") fib (W1)"
fmt='%-10s %9s %9s %8s %8s %9s %7s %8s %5s %7s %8s %6s\n'
# shellcheck disable=SC2059
{
    printf "$fmt" case "CPU%" "CPU% run" "BPF us" "BPF%" "total%" "RSS MB" samples lost windows \
        "B/window" "busy%"
    for c in $CASES; do
        IFS='|' read -ra f <<<"${ROW[$c]}"
        printf "$fmt" "${f[@]}"
    done
}
echo
for c in $CASES; do echo "$c: ${NOTE[$c]}"; done
for b in idle busy; do
    [[ -n ${BYTES[$b]:-} && -n ${BYTES[$b-gzip]:-} ]] || continue
    awk -v b="$b" -v p="${BYTES[$b]}" -v g="${BYTES[$b-gzip]}" -v r="${RATIO[$b-gzip]}" 'BEGIN {
        printf "bytes per window, %s: plain %s, gzip %s", b, p, g
        if (p + 0 > 0 && g + 0 > 0) printf " (%.0f%% of plain: separate runs, loads may differ)", 100 * g / p
        if (r != "") printf "; within the gzip run, bodies are %s%% of their unzipped size", r
        printf "\n" }'
done
echo
echo "CPU% = the daemon's user+sys time as % of one core, steady state (its threads' schedstat, from"
echo "${WARMUP}s after the first sample to just before SIGTERM); 'CPU% run' = the whole run incl. start-up"
echo "and the last export (rusage via /usr/bin/time, else schedstat). BPF us = on_sample run time per"
echo "run (= per sample) and BPF% = all its BPF programs' run time as % of one core, steady state"
echo "(bpf_stats adds two clock reads per run). total% = CPU% + BPF%. RSS MB = peak RSS. samples, lost,"
echo "windows: --stats-json at exit. B/window = export_bytes / export_delivered (complete windows, after"
echo "gzip). busy% = all CPUs' busy time during the run (everything on the machine, the workload too)."
echo "Targets (docs/performance.md): total <= 0.05% of one core at 19 Hz on a busy machine; RSS <= 30 MB."
