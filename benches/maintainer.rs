//! Maintainer benchmarks (issue 3, "Benchmark"): what the maintainer thread's work costs, on
//! real processes and a real kernel LPM trie. A plain `main` that prints figures; no harness.
//!
//!   CARGO_TARGET_DIR=/tmp/target-bench cargo bench --bench maintainer
//!
//! Needs root (BPF maps, other processes' /proc/PID/map_files); as any other user it prints a
//! note and exits 0. Sections:
//!   a. process syncs: `ProcessTable::on_report` + `Batcher::flush` into a real LPM trie for
//!      ~50 live processes (`sleep`, and `python3` with extension modules if available): first
//!      sync, unchanged re-sync, exit; µs per operation, syncs/s, entries per process; plus a
//!      process with thousands of executable mappings.
//!   b. map operations on a real LPM trie, 100k keys: batched (512 per syscall, raw and through
//!      the `Batcher`) vs one syscall per key, for inserts and deletes; exact lookups; key
//!      iteration (what an audit costs).
//!   c. the pieces of a sync: reading /proc/PID/stat, reading and parsing /proc/PID/maps,
//!      opening a mapped file, `prefixes::cover`.
//!
//! Environment: BENCH_ROUNDS (sync rounds, default 20), BENCH_KEYS (map keys, default 100000),
//! BENCH_REPS (map-op repetitions, default 5).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use profiler::layout::{consts, PidMappingKey, PidMappingValue};
use profiler::maintainer::batcher::{Batcher, MapBackend, BATCH_SIZE};
use profiler::maintainer::lifecycle::ProcessTable;
use profiler::pid_mappings::prefixes::{cover, marker_key};
use profiler::pipeline::Trigger;
use profiler::process::maps::{parse_maps, Mapping};
use profiler::process::source::{read_identity, ProcSource, Procfs, NS_PER_TICK};
use profiler::stats::Stats;
use profiler::sys::bpf::{Map, MapKind};

const KEY_SIZE: usize = std::mem::size_of::<PidMappingKey>();

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Children killed (and reaped) when dropped, also on panic.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
        }
        for child in &mut self.0 {
            let _ = child.wait();
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Sleep,
    Python,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Sleep => "sleep",
            Kind::Python => "python3",
        }
    }
}

/// Python that maps many shared libraries (C extension modules), says "ready", then sleeps.
const PY_LIBS: &str = "import importlib, sys, time
for m in ('ssl', 'sqlite3', 'ctypes', 'decimal', 'hashlib', 'zlib', 'lzma', 'bz2', 'json',
          'socket', 'select', 'array', 'math', 'datetime', 'csv', 'pyexpat', 'readline',
          'curses', 'uuid', 'multiprocessing', 'unicodedata', 'struct', 'binascii'):
    try:
        importlib.import_module(m)
    except Exception:
        pass
print('ready', flush=True)
time.sleep(600)";

/// Python that maps /bin/true (read + exec) N times as separate mappings, then sleeps.
const PY_MANY_MAPPINGS: &str = "import mmap, os, sys, time
n = int(sys.argv[1])
fd = os.open('/bin/true', os.O_RDONLY)
keep = [mmap.mmap(fd, 0, prot=mmap.PROT_READ | mmap.PROT_EXEC, flags=mmap.MAP_PRIVATE)
        for _ in range(n)]
print('ready', flush=True)
time.sleep(600)";

/// Starts `cmd`, waits for it to print its first line when `ready` (python), returns it.
fn spawn(mut cmd: Command, wait_ready: bool) -> Option<Child> {
    cmd.stdin(Stdio::null()).stderr(Stdio::null());
    cmd.stdout(if wait_ready {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = cmd.spawn().ok()?;
    if wait_ready {
        let mut line = String::new();
        let out = child.stdout.take()?;
        let ok = BufReader::new(out).read_line(&mut line).is_ok() && line.contains("ready");
        if !ok {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
    }
    Some(child)
}

fn python() -> Option<String> {
    // The real interpreter, not a shim script (pyenv): ask it.
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .ok()?;
    let path = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !path.is_empty()).then_some(path)
}

/// Durations → (median, mean, p90) in µs.
fn summary(d: &[Duration]) -> (f64, f64, f64) {
    if d.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let mut us: Vec<f64> = d.iter().map(|d| d.as_secs_f64() * 1e6).collect();
    us.sort_by(|a, b| a.total_cmp(b));
    let mean = us.iter().sum::<f64>() / us.len() as f64;
    let at = |q: f64| us[((us.len() - 1) as f64 * q).round() as usize];
    (at(0.5), mean, at(0.9))
}

fn row(label: &str, d: &[Duration]) {
    let (med, mean, p90) = summary(d);
    println!(
        "  {label:<44} {med:>9.1} {mean:>9.1} {p90:>9.1} {:>10.0} {:>7}",
        1e6 / mean,
        d.len()
    );
}

fn header() {
    println!(
        "  {:<44} {:>9} {:>9} {:>9} {:>10} {:>7}",
        "", "median µs", "mean µs", "p90 µs", "per s", "n"
    );
}

fn lpm_trie(name: &str, max_entries: u32) -> Map {
    Map::create(
        MapKind::LpmTrie,
        name,
        KEY_SIZE as u32,
        PidMappingValue::SIZE as u32,
        max_entries,
    )
    .unwrap_or_else(|e| panic!("creating an LPM trie: {e}"))
}

// ---------------------------------------------------------------------------------------------
// a. process syncs

fn bench_syncs(procs: &[(u32, Kind)], many: Option<(u32, usize)>, rounds: usize) {
    println!(
        "\n== a. process syncs: ProcessTable::on_report + Batcher::flush into a real LPM trie"
    );
    let n_sleep = procs.iter().filter(|p| p.1 == Kind::Sleep).count();
    let n_py = procs.len() - n_sleep;
    println!(
        "   {} live processes ({n_sleep} sleep, {n_py} python3), {rounds} rounds; each round a fresh \
         table: first sync of every process, {RESYNCS} unchanged re-syncs of each, then exit of each",
        procs.len()
    );
    const RESYNCS: usize = 5;
    let mut map = lpm_trie("bench_sync", 1 << 20);
    let src = Procfs;
    let stats = Stats::default();
    let kinds = [Kind::Sleep, Kind::Python];
    let mut first = [Vec::new(), Vec::new()];
    let mut first_cold = [Vec::new(), Vec::new()];
    let mut resync = [Vec::new(), Vec::new()];
    let mut exit = [Vec::new(), Vec::new()];
    let mut entries = [Vec::new(), Vec::new()];
    let mut mappings = [Vec::new(), Vec::new()];
    let mut round_first = Vec::new();
    let ki = |k: Kind| kinds.iter().position(|&x| x == k).unwrap_or(0);
    for round in 0..rounds {
        let mut table = ProcessTable::default();
        let mut seen = [false, false];
        // Alternate the order so that neither kind always comes first (opens the shared files).
        let order: Vec<(u32, Kind)> = if round % 2 == 0 {
            procs.to_vec()
        } else {
            procs.iter().rev().copied().collect()
        };
        let t_round = Instant::now();
        for &(pid, kind) in &order {
            let t = Instant::now();
            report(&mut table, pid, &src, &stats, t);
            let _ = table.take_new_files();
            table.batcher.flush(&mut map, &stats);
            let d = t.elapsed();
            let k = ki(kind);
            if seen[k] {
                first[k].push(d);
            } else {
                first_cold[k].push(d);
                seen[k] = true;
            }
            if round == 0 {
                entries[k].push(table.entries_of(pid).map_or(0, |e| e.len()));
                mappings[k].push(src.maps(pid).map_or(0, |m| m.len()));
            }
        }
        round_first.push(t_round.elapsed());
        for _ in 0..RESYNCS {
            for &(pid, kind) in &order {
                let t = Instant::now();
                report(&mut table, pid, &src, &stats, t);
                table.batcher.flush(&mut map, &stats);
                resync[ki(kind)].push(t.elapsed());
            }
        }
        for &(pid, kind) in &order {
            let t = Instant::now();
            table.on_exit(pid, start_ns(pid), &stats, t);
            table.batcher.flush(&mut map, &stats);
            exit[ki(kind)].push(t.elapsed());
        }
    }
    header();
    for k in 0..2 {
        if first[k].is_empty() && first_cold[k].is_empty() {
            continue;
        }
        let name = kinds[k].name();
        row(&format!("first sync, {name}, files known"), &first[k]);
        row(
            &format!("first sync, {name}, first of its kind (opens)"),
            &first_cold[k],
        );
        row(
            &format!("re-sync, {name}, unchanged (no writes)"),
            &resync[k],
        );
        row(&format!("exit, {name} (checked batch delete)"), &exit[k]);
    }
    let all_first: Vec<Duration> = first
        .iter()
        .chain(first_cold.iter())
        .flatten()
        .copied()
        .collect();
    let (_, mean, _) = summary(&all_first);
    let (_, round_mean, _) = summary(&round_first);
    println!(
        "  first syncs of all {} processes in one round: {:.2} ms ({:.0} syncs/s; mean {:.1} µs)",
        procs.len(),
        round_mean / 1e3,
        procs.len() as f64 / (round_mean / 1e6),
        mean
    );
    for k in 0..2 {
        if entries[k].is_empty() {
            continue;
        }
        let avg = |v: &[usize]| v.iter().sum::<usize>() as f64 / v.len() as f64;
        println!(
            "  {:<8} executable mappings per process {:>5.1}, map entries per process {:>5.1} (max {})",
            kinds[k].name(),
            avg(&mappings[k]),
            avg(&entries[k]),
            entries[k].iter().max().unwrap_or(&0)
        );
    }
    let left = map.keys().map(|k| k.len()).unwrap_or(usize::MAX);
    println!(
        "  after all rounds: map entries left {left}, map_updates {}, map_deletes {}, \
         map_delete_absent {}, map_delete_errors {}, sync_failures {}",
        Stats::get(&stats.map_updates),
        Stats::get(&stats.map_deletes),
        Stats::get(&stats.map_delete_absent),
        Stats::get(&stats.map_delete_errors),
        Stats::get(&stats.sync_failures)
    );

    if let Some((pid, n)) = many {
        let mut first = Vec::new();
        let mut resync = Vec::new();
        let mut exit = Vec::new();
        let mut n_entries = 0;
        for _ in 0..rounds.clamp(1, 5) {
            let mut table = ProcessTable::default();
            let t = Instant::now();
            report(&mut table, pid, &src, &stats, t);
            let _ = table.take_new_files();
            table.batcher.flush(&mut map, &stats);
            first.push(t.elapsed());
            n_entries = table.entries_of(pid).map_or(0, |e| e.len());
            let t = Instant::now();
            report(&mut table, pid, &src, &stats, t);
            table.batcher.flush(&mut map, &stats);
            resync.push(t.elapsed());
            let t = Instant::now();
            table.on_exit(pid, start_ns(pid), &stats, t);
            table.batcher.flush(&mut map, &stats);
            exit.push(t.elapsed());
        }
        let n_maps = src.maps(pid).map_or(0, |m| m.len());
        println!(
            "  a process with {n_maps} executable mappings ({n} x /bin/true mmapped), {n_entries} map entries:"
        );
        header();
        row("first sync", &first);
        row("re-sync, unchanged", &resync);
        row("exit", &exit);
        let (_, mean, _) = summary(&first);
        println!(
            "  = {:.2} µs per mapping on first sync",
            mean / n_maps.max(1) as f64
        );
    }
}

// ---------------------------------------------------------------------------------------------
// b. map operations

/// `n` realistic keys: per PID a marker plus the cover of page-aligned mappings of varied sizes.
fn make_keys(n: usize) -> Vec<(PidMappingKey, PidMappingValue)> {
    let mut out = Vec::with_capacity(n);
    let mut pid = 100_000u32;
    'outer: loop {
        pid += 1;
        out.push((
            marker_key(pid),
            PidMappingValue {
                flags: consts::MAPPING_MARKER as u16,
                prefixlen: consts::PID_MAPPING_MARKER_PREFIX as u16,
                ..Default::default()
            },
        ));
        let mut base = 0x7f12_3456_0000u64 + (u64::from(pid) << 24);
        for m in 0..24u64 {
            let len = 0x1000 * (1 + (m * 7 + u64::from(pid)) % 61);
            for block in cover(base + 0x1000, base + 0x1000 + len) {
                if out.len() == n {
                    break 'outer;
                }
                let key = block.key(pid);
                out.push((
                    key,
                    PidMappingValue {
                        file_id: m as u32 + 1,
                        prefixlen: key.prefixlen as u16,
                        prefix_addr: block.start,
                        bias: base,
                        ..Default::default()
                    },
                ));
            }
            base += 0x20_0000;
        }
        if out.len() >= n {
            break;
        }
    }
    out.truncate(n);
    out
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn bench_map_ops(n: usize, reps: usize) {
    println!(
        "\n== b. map operations on a real LPM trie (16-byte keys, {}-byte values, BPF_F_NO_PREALLOC)",
        PidMappingValue::SIZE
    );
    let kv = make_keys(n);
    let pids = kv
        .iter()
        .filter(|(k, _)| k.prefixlen == consts::PID_MAPPING_MARKER_PREFIX as u32)
        .count();
    println!(
        "   {n} keys ({pids} PIDs: a marker plus ~{} blocks each), batches of {BATCH_SIZE}, \
         median of {reps} runs, each on an empty map",
        n / pids.max(1) - 1
    );
    let keys: Vec<PidMappingKey> = kv.iter().map(|(k, _)| *k).collect();
    let kbytes: Vec<[u8; 16]> = kv.iter().map(|(k, _)| k.to_bytes()).collect();
    let vbytes: Vec<[u8; PidMappingValue::SIZE]> = kv.iter().map(|(_, v)| v.to_bytes()).collect();
    let kflat: Vec<u8> = kbytes.iter().flatten().copied().collect();
    let vflat: Vec<u8> = vbytes.iter().flatten().copied().collect();
    let mut map = lpm_trie("bench_ops", (n + n / 4) as u32);
    let stats = Stats::default();
    let mut r: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
    let mut record = |name: &'static str, v: f64| r.entry(name).or_default().push(v);
    let count = |map: &Map| map.keys().map(|k| k.len()).unwrap_or(usize::MAX);
    for _ in 0..reps {
        // Raw batches, no existence check.
        let t = Instant::now();
        for (kc, vc) in kflat
            .chunks(KEY_SIZE * BATCH_SIZE)
            .zip(vflat.chunks(PidMappingValue::SIZE * BATCH_SIZE))
        {
            let o = map.update_batch(kc, vc, kc.len() / KEY_SIZE, 0);
            assert!(o.error.is_none(), "update_batch: {:?}", o.error);
        }
        record("insert, update_batch (raw)", rate(n, t.elapsed()));
        let t = Instant::now();
        for kc in kflat.chunks(KEY_SIZE * BATCH_SIZE) {
            let o = map.delete_batch(kc, kc.len() / KEY_SIZE);
            assert!(o.error.is_none(), "delete_batch: {:?}", o.error);
        }
        record(
            "delete, delete_batch (raw, unchecked)",
            rate(n, t.elapsed()),
        );
        assert_eq!(count(&map), 0);

        // One syscall per key.
        let t = Instant::now();
        for (k, v) in kbytes.iter().zip(&vbytes) {
            map.update(k, v, 0).expect("update");
        }
        record("insert, Map::update per key", rate(n, t.elapsed()));
        let t = Instant::now();
        let mut hits = 0usize;
        for k in &keys {
            hits += usize::from(matches!(map.get_exact(k), Ok(Some(_))));
        }
        record("lookup, get_exact per key", rate(n, t.elapsed()));
        assert_eq!(hits, n);
        let t = Instant::now();
        let listed = count(&map);
        record("iterate, Map::keys (audit)", rate(listed, t.elapsed()));
        assert_eq!(listed, n);
        let t = Instant::now();
        for k in &kbytes {
            assert!(map.delete(k).expect("delete"));
        }
        record("delete, Map::delete per key", rate(n, t.elapsed()));
        assert_eq!(count(&map), 0);

        // Through the Batcher, as the maintainer does it (queue + coalesce + byte conversion;
        // deletes existence-checked with one lookup per key, then batched).
        let mut batcher = Batcher::default();
        let t = Instant::now();
        for (k, v) in &kv {
            batcher.upsert(*k, *v);
        }
        let report = batcher.flush(&mut map, &stats);
        record("insert, Batcher upsert + flush", rate(n, t.elapsed()));
        assert!(report.rejected_full.is_empty());
        let t = Instant::now();
        for k in &keys {
            batcher.delete(*k);
        }
        batcher.flush(&mut map, &stats);
        record(
            "delete, Batcher delete + flush (checked)",
            rate(n, t.elapsed()),
        );
        assert_eq!(count(&map), 0);
    }
    assert_eq!(Stats::get(&stats.map_delete_errors), 0);
    println!("  {:<44} {:>12} {:>12}", "", "ops/s", "µs per op");
    let order = [
        "insert, update_batch (raw)",
        "insert, Batcher upsert + flush",
        "insert, Map::update per key",
        "delete, delete_batch (raw, unchecked)",
        "delete, Batcher delete + flush (checked)",
        "delete, Map::delete per key",
        "lookup, get_exact per key",
        "iterate, Map::keys (audit)",
    ];
    let med: std::collections::BTreeMap<&str, f64> =
        r.into_iter().map(|(k, v)| (k, median(v))).collect();
    for name in order {
        let v = med[name];
        println!("  {name:<44} {v:>12.0} {:>12.3}", 1e6 / v);
    }
    let ratio = |a: &str, b: &str| med[a] / med[b];
    println!(
        "  batched / single: insert raw {:.2}x, via Batcher {:.2}x; delete raw {:.2}x, \
         via Batcher (checked) {:.2}x",
        ratio("insert, update_batch (raw)", "insert, Map::update per key"),
        ratio(
            "insert, Batcher upsert + flush",
            "insert, Map::update per key"
        ),
        ratio(
            "delete, delete_batch (raw, unchecked)",
            "delete, Map::delete per key"
        ),
        ratio(
            "delete, Batcher delete + flush (checked)",
            "delete, Map::delete per key"
        ),
    );
    println!(
        "  an audit of a map holding {n} entries spends ~{:.1} ms listing its keys",
        n as f64 / med["iterate, Map::keys (audit)"] * 1e3
    );
}

// ---------------------------------------------------------------------------------------------
// c. the pieces of a sync

fn time_per<T>(iters: usize, mut f: impl FnMut() -> T) -> Duration {
    let t = Instant::now();
    for _ in 0..iters {
        std::hint::black_box(f());
    }
    t.elapsed() / iters as u32
}

fn bench_pieces(procs: &[(u32, Kind)]) {
    println!("\n== c. the pieces of a sync (mean per call)");
    let src = Procfs;
    for kind in [Kind::Sleep, Kind::Python] {
        let Some(&(pid, _)) = procs.iter().find(|p| p.1 == kind) else {
            continue;
        };
        let text = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
        let exec: Vec<Mapping> = parse_maps(&text).executable.iter().cloned().collect();
        let lines = text.lines().count();
        let stat = time_per(2000, || read_identity(pid));
        let read = time_per(1000, || {
            std::fs::read_to_string(format!("/proc/{pid}/maps"))
        });
        let parse = time_per(1000, || parse_maps(&text));
        let file_backed: Vec<(&Mapping, &str)> = exec
            .iter()
            .filter_map(|m| Some((m, m.name()?)))
            .filter(|(_, n)| n.starts_with('/'))
            .collect();
        let open = if file_backed.is_empty() {
            Duration::ZERO
        } else {
            let iters = 200;
            let t = Instant::now();
            for _ in 0..iters {
                for (m, path) in &file_backed {
                    std::hint::black_box(src.open(pid, m, path));
                }
            }
            t.elapsed() / (iters * file_backed.len()) as u32
        };
        let blocks: usize = exec.iter().map(|m| cover(m.start, m.end).len()).sum();
        let cov = time_per(20_000, || {
            exec.iter()
                .map(|m| cover(m.start, m.end).len())
                .sum::<usize>()
        });
        println!(
            "  {:<8} maps: {lines} lines, {} executable ({} file-backed), {blocks} blocks",
            kind.name(),
            exec.len(),
            file_backed.len()
        );
        println!(
            "           read /proc/PID/stat {:.1} µs | read /proc/PID/maps {:.1} µs | parse {:.1} µs \
             | open a mapped file (map_files) {:.1} µs | cover all mappings {:.2} µs ({:.0} ns per mapping)",
            stat.as_secs_f64() * 1e6,
            read.as_secs_f64() * 1e6,
            parse.as_secs_f64() * 1e6,
            open.as_secs_f64() * 1e6,
            cov.as_secs_f64() * 1e6,
            cov.as_secs_f64() * 1e9 / exec.len().max(1) as f64
        );
    }
    // cover() over many synthetic unaligned ranges: the worst case is ~2 blocks per address bit.
    let ranges: Vec<(u64, u64)> = (0..4096u64)
        .map(|i| {
            let start = 0x7f00_0000_0000 + i * 0x10_0000 + (i % 255 + 1) * 0x1000;
            (start, start + 0x1000 * (1 + i * 37 % 200))
        })
        .collect();
    let blocks: usize = ranges.iter().map(|&(s, e)| cover(s, e).len()).sum();
    let t = time_per(50, || {
        ranges
            .iter()
            .map(|&(s, e)| cover(s, e).len())
            .sum::<usize>()
    });
    println!(
        "  cover(), 4096 page-aligned ranges of 1-200 pages: {:.0} ns per mapping, {:.2} blocks per mapping",
        t.as_secs_f64() * 1e9 / ranges.len() as f64,
        blocks as f64 / ranges.len() as f64
    );
}

fn busy_pct() -> Option<f64> {
    let read = || -> Option<Vec<u64>> {
        let s = std::fs::read_to_string("/proc/stat").ok()?;
        let line = s.lines().next()?;
        line.split_whitespace()
            .skip(1)
            .map(|x| x.parse().ok())
            .collect()
    };
    let a = read()?;
    std::thread::sleep(Duration::from_millis(500));
    let b = read()?;
    let total: u64 = b.iter().zip(&a).map(|(y, x)| y - x).sum();
    let idle = (b[3] - a[3]) + (b[4] - a[4]);
    (total > 0).then(|| 100.0 * (1.0 - idle as f64 / total as f64))
}

fn main() {
    if !profiler::sys::process::is_root() {
        println!("maintainer bench: needs root (BPF maps, /proc/PID/map_files); skipped");
        return;
    }
    let rounds = env_usize("BENCH_ROUNDS", 20).max(1);
    let n_keys = env_usize("BENCH_KEYS", 100_000).max(BATCH_SIZE);
    let reps = env_usize("BENCH_REPS", 5).max(1);
    let busy = busy_pct();
    println!(
        "maintainer bench: kernel {}, {} CPUs, CPUs {} busy before start{}",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        busy.map_or("?".into(), |b| format!("{b:.0}%")),
        if busy.is_some_and(|b| b > 10.0) {
            " (other work on the machine: figures are noisy)"
        } else {
            ""
        }
    );

    let mut children = Children(Vec::new());
    let mut procs = Vec::new();
    let py = python();
    let n_py = if py.is_some() { 5 } else { 0 };
    for _ in 0..(50 - n_py) {
        let mut cmd = Command::new("sleep");
        cmd.arg("600");
        if let Some(child) = spawn(cmd, false) {
            procs.push((child.id(), Kind::Sleep));
            children.0.push(child);
        }
    }
    let mut many = None;
    if let Some(py) = &py {
        for _ in 0..n_py {
            let mut cmd = Command::new(py);
            cmd.args(["-c", PY_LIBS]);
            if let Some(child) = spawn(cmd, true) {
                procs.push((child.id(), Kind::Python));
                children.0.push(child);
            }
        }
        let n = 2000;
        let mut cmd = Command::new(py);
        cmd.args(["-c", PY_MANY_MAPPINGS, &n.to_string()]);
        if let Some(child) = spawn(cmd, true) {
            many = Some((child.id(), n));
            children.0.push(child);
        }
    } else {
        println!("(no python3: only sleep processes)");
    }
    // Let the sleeps finish exec'ing and loading their libraries.
    std::thread::sleep(Duration::from_millis(300));

    bench_syncs(&procs, many, rounds);
    bench_map_ops(n_keys, reps);
    bench_pieces(&procs);
    drop(children);
}

/// The identity the sampler's events would carry for a live process.
fn start_ns(pid: u32) -> u64 {
    read_identity(pid).map_or(0, |(_, ticks)| ticks * NS_PER_TICK)
}

/// A report of an unknown PID about `pid`'s only image (its start, no exec).
fn report(table: &mut ProcessTable, pid: u32, src: &dyn ProcSource, stats: &Stats, t: Instant) {
    let start = start_ns(pid);
    table.on_report(pid, start, start, Trigger::UnknownPid, src, stats, t);
}
