//! End-to-end tests of in-kernel `.eh_frame` unwinding of our fixtures (root; see
//! common::bpf_available): C, C++ with exceptions and Rust without frame pointers, a 300-deep
//! recursion, and gdb as ground truth. The completeness of stacks of Debian binaries is in
//! `unwind_debian.rs`.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::unwind::{frames, record, unwind_counters, Recorded};
use common::*;

const NOFP_C: &[&str] = &["-O2", "-fomit-frame-pointer", "-fno-inline"];

/// True when `chain` occurs in `stack` as consecutive frames; the last one may carry a GCC
/// suffix (`compute(unsigned long) [clone .cold]` matches `compute(unsigned long)`).
fn has_chain(stack: &str, chain: &[&str]) -> bool {
    let f = frames(stack);
    let (last, head) = chain.split_last().unwrap();
    let suffixed = format!("{last} [");
    f.windows(chain.len()).any(|w| {
        w[..head.len()] == *head && (w[head.len()] == *last || w[head.len()].starts_with(&suffixed))
    })
}

fn comm_total(lines: &[(String, u64)], comm: &str) -> u64 {
    count(lines, comm, |_| true)
}

fn count(lines: &[(String, u64)], comm: &str, f: impl Fn(&str) -> bool) -> u64 {
    let prefix = format!("{comm};");
    lines
        .iter()
        .filter(|(s, _)| s.starts_with(&prefix) && f(s))
        .map(|(_, c)| c)
        .sum()
}

/// The stacks of `comm` that fail `ok`, most frequent first (for failure messages).
fn misses(lines: &[(String, u64)], comm: &str, ok: impl Fn(&str) -> bool) -> Vec<String> {
    let mut bad: Vec<_> = lines
        .iter()
        .filter(|(s, _)| s.starts_with(&format!("{comm};")) && !ok(s))
        .collect();
    bad.sort_by_key(|(_, c)| std::cmp::Reverse(*c));
    bad.iter()
        .take(8)
        .map(|(s, c)| format!("{c} {}", s.chars().take(300).collect::<String>()))
        .collect()
}

/// A complete walk from `_start` that shows `chain` (main first) as consecutive frames.
fn complete_with(stack: &str, chain: &[&str]) -> bool {
    frames(stack).get(1) == Some(&"_start") && has_chain(stack, chain)
}

/// Runs a fixture for 5 s (its first samples, taken before it is synced, stay well under 1%)
/// and checks that ≥ 99% of its samples are complete walks from `_start` that show `chain`.
fn assert_chain(dir: &Path, exe: &Path, comm: &str, chain: &[&str]) -> Recorded {
    let (lines, stats) = record(dir, comm, &[exe.to_str().unwrap(), "5"], &[0]);
    let total = comm_total(&lines, comm);
    let good = count(&lines, comm, |s| complete_with(s, chain));
    eprintln!(
        "{comm}: {good} of {total} samples ({:.2}%) show _start;...;{}; {}",
        100.0 * good as f64 / total.max(1) as f64,
        chain.join(";"),
        unwind_counters(&stats)
    );
    assert!(total >= 200, "only {total} samples of {comm}: {lines:?}");
    assert!(
        good * 100 >= total * 99,
        "{good} of {total} samples show {chain:?} from _start; {}; others: {:#?}",
        unwind_counters(&stats),
        misses(&lines, comm, |s| complete_with(s, chain))
    );
    assert!(stat(&stats, "frames_unwound_by_table") > 0.0);
    (lines, stats)
}

#[test]
fn c_without_frame_pointers_reaches_main_with_the_full_chain() {
    let test = "c_without_frame_pointers_reaches_main_with_the_full_chain";
    let Some((test, exe)) = KernelTest::start_with(test, Fixture::c("unw_deep", NOFP_C)) else {
        return;
    };
    let (_, stats) = assert_chain(&test.dir, &exe, "unw_deep", &["main", "a", "b", "c"]);
    assert!(
        stat(&stats, "frames_unwound_by_table") > stat(&stats, "frames_unwound_by_fp") * 10.0,
        "{}",
        unwind_counters(&stats)
    );
}

#[test]
fn cpp_with_exceptions_reaches_main_with_the_full_chain() {
    let Some(test) = KernelTest::start("cpp_with_exceptions_reaches_main_with_the_full_chain")
    else {
        return;
    };
    let Some(exe) = test.build(Fixture::new("unw_cpp.cpp").flags(&["-O2"])) else {
        return;
    };
    // Below step: compute (or its [clone .cold] throwing part), or the catch handler's
    // __cxa_begin_catch / exception destructor.
    let chain = [
        "main",
        "unw::Worker::run(double)",
        "unw::Worker::step(unsigned long)",
    ];
    let (lines, stats) = assert_chain(&test.dir, &exe, "unw_cpp", &chain);
    // Samples taken while an exception is in flight: the walk goes through libstdc++ and
    // libgcc_s's own unwinder and must still reach main.
    let throwing = count(&lines, "unw_cpp", |s| s.contains(";__cxa_throw"));
    let throwing_good = count(&lines, "unw_cpp", |s| {
        s.contains(";__cxa_throw") && complete_with(s, &chain)
    });
    eprintln!(
        "unw_cpp: {throwing_good} of {throwing} samples inside __cxa_throw show the chain; {}",
        unwind_counters(&stats)
    );
    let others = misses(&lines, "unw_cpp", |s| complete_with(s, &chain));
    assert!(throwing > 0, "no sample inside __cxa_throw: {lines:?}");
    assert!(
        throwing_good * 10 >= throwing * 9,
        "{throwing_good} of {throwing}; others: {others:#?}"
    );
}

#[test]
fn rust_release_binary_without_frame_pointers_reaches_main() {
    let test = "rust_release_binary_without_frame_pointers_reaches_main";
    let Some(test) = KernelTest::start(test) else {
        return;
    };
    let flags = [
        "-Copt-level=2",
        "-Cforce-frame-pointers=no",
        "-Cdebuginfo=0",
    ];
    let Some(exe) = test.build(Fixture::new("unw_rust.rs").flags(&flags)) else {
        return;
    };
    let chain = [
        "unw_rust::main",
        "unw_rust::alpha",
        "unw_rust::beta",
        "unw_rust::gamma",
    ];
    let (lines, stats) = assert_chain(&test.dir, &exe, "unw_rust", &chain);
    // From _start through the C `main` and the runtime's frames down to `unw_rust::main`.
    let from_start = |s: &str| {
        let f = frames(s);
        let c_main = f.iter().position(|x| *x == "main");
        let rust_main = f.iter().position(|x| *x == "unw_rust::main");
        matches!((c_main, rust_main), (Some(c), Some(r)) if c < r && f[1] == "_start")
    };
    let via_c_main = count(&lines, "unw_rust", from_start);
    let total = comm_total(&lines, "unw_rust");
    assert!(
        via_c_main * 100 >= total * 99,
        "{via_c_main} of {total} from _start via main: {:#?} {}",
        misses(&lines, "unw_rust", from_start),
        unwind_counters(&stats)
    );
}

#[test]
fn recursion_300_deep_is_recorded_at_full_depth() {
    let Some((test, exe)) = KernelTest::start_with(
        "recursion_300_deep_is_recorded_at_full_depth",
        Fixture::c("unw_recurse", NOFP_C),
    ) else {
        return;
    };
    let (lines, stats) = record(&test.dir, "rec", &[exe.to_str().unwrap(), "4", "300"], &[0]);
    let depth = |s: &str| frames(s).iter().filter(|f| **f == "rec").count();
    let total = comm_total(&lines, "unw_recurse");
    let full_depth = |s: &str| {
        depth(s) >= 300 && complete_with(s, &["main", "rec"]) && has_chain(s, &["rec", "bottom"])
    };
    let full = count(&lines, "unw_recurse", full_depth);
    let deepest = lines.iter().map(|(s, _)| depth(s)).max().unwrap_or(0);
    eprintln!(
        "unw_recurse: {full} of {total} samples ({:.2}%) have all 300 rec frames (deepest {deepest}); {}",
        100.0 * full as f64 / total.max(1) as f64,
        unwind_counters(&stats)
    );
    assert!(total >= 200, "only {total} samples");
    assert!(
        full * 100 >= total * 95,
        "{full} of {total} at full depth; others: {:#?}",
        misses(&lines, "unw_recurse", full_depth)
    );
    assert_eq!(stat(&stats, "unwind_depth_limit"), 0.0);
}

/// Function names of gdb's `bt` (innermost first), from lines `#N  0x... in NAME (...)`.
fn gdb_backtrace(pid: u32) -> (Vec<String>, String) {
    let out = Command::new("gdb")
        .args(["-nx", "-batch", "-iex", "set debuginfod enabled off"])
        .args(["-iex", "set backtrace past-main on", "-p"])
        .arg(pid.to_string())
        .args(["-ex", "bt"])
        .stdin(Stdio::null())
        .output()
        .expect("run gdb");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let names = text
        .lines()
        .filter(|l| l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.split_once(char::is_whitespace)?.1.trim_start();
            let rest = match rest.split_once(" in ") {
                Some((addr, name)) if addr.starts_with("0x") => name,
                _ => rest,
            };
            Some(rest.split(" (").next()?.trim().to_string())
        })
        .collect();
    (names, text)
}

/// The pid of the child of `parent` whose command name is `comm`.
fn child_named(parent: u32, comm: &str) -> Option<u32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let ppid = stat[close + 2..]
            .split(' ')
            .nth(1)
            .and_then(|p| p.parse().ok());
        if &stat[open + 1..close] == comm && ppid == Some(parent) {
            return Some(pid);
        }
    }
    None
}

#[test]
fn unwound_stacks_equal_gdb_backtraces() {
    let Some(test) = KernelTest::start("unwound_stacks_equal_gdb_backtraces") else {
        return;
    };
    let gdb = Command::new("gdb").arg("--version").output();
    if !gdb.is_ok_and(|out| out.status.success()) {
        profiler::testing::skip(test.name, "no gdb on PATH");
        return;
    }
    let Some(exe) = test.build(Fixture::c("unw_gdb", &["-O2", "-fomit-frame-pointer"])) else {
        return;
    };
    let session = Record::new(&test.dir, "gdb.folded")
        .args(&["-F", "199"])
        .command(&[arg(&exe), "7"])
        .spawn();
    let started = Instant::now();
    let pid = loop {
        if let Some(pid) = child_named(session.pid(), "unw_gdb") {
            break pid;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "no unw_gdb child"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    // Past startup; then stop it at random moments.
    std::thread::sleep(Duration::from_millis(800));
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
        | 1;
    let fixture_fns = ["main", "outer", "middle", "side", "leaf"];
    let mut snapshots: BTreeMap<Vec<String>, u32> = BTreeMap::new();
    let mut transcripts = Vec::new();
    let mut taken = 0;
    while taken < 3 && transcripts.len() < 8 && started.elapsed() < Duration::from_millis(5500) {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(100 + seed % 500));
        let (names, text) = gdb_backtrace(pid);
        transcripts.push(text);
        // Only stops inside the fixture's own hot function are compared (not in the clock).
        if names.first().map(String::as_str) == Some("leaf") && names.iter().any(|n| n == "main") {
            taken += 1;
            *snapshots.entry(names).or_default() += 1;
        }
    }
    let recorded = session.wait();
    recorded.assert_success();
    assert!(taken >= 2, "too few usable gdb stops: {transcripts:#?}");
    let lines = recorded.folded();
    for gdb in snapshots.keys() {
        // gdb: innermost first, past main down to _start. Folded: thread, root ... leaf, kernel.
        let root_first: Vec<&str> = gdb.iter().rev().map(String::as_str).collect();
        let main_at = root_first.iter().position(|f| *f == "main").unwrap();
        let (above_main, main_to_leaf) = root_first.split_at(main_at);
        let matching = count(&lines, "unw_gdb", |s| {
            let f = &frames(s)[1..];
            let Some(m) = f.iter().position(|x| *x == "main") else {
                return false;
            };
            let end = m + main_to_leaf.len();
            end <= f.len()
                && f[m..end] == *main_to_leaf
                && f[end..].iter().all(|x| !fixture_fns.contains(x))
                && m == above_main.len()
                && f[0] == above_main[0]
        });
        eprintln!(
            "gdb stack {} ({} frames above main, seen in {} gdb stops): {matching} profiler \
             samples match it",
            main_to_leaf.join(";"),
            above_main.len(),
            snapshots[gdb]
        );
        assert!(
            matching > 0,
            "no recorded stack equals gdb's {root_first:?}: {lines:#?}"
        );
    }
    let total = comm_total(&lines, "unw_gdb");
    let known = count(&lines, "unw_gdb", |s| {
        has_chain(s, &["main", "outer", "middle", "leaf"])
            || has_chain(s, &["main", "side", "leaf"])
    });
    eprintln!("unw_gdb: {known} of {total} samples are main;outer;middle;leaf or main;side;leaf");
    assert!(known * 100 >= total * 97, "{known} of {total}: {lines:#?}");
}

/// A process tearing down a big address space after `main` returned: the samples taken in
/// `exit_mmap` have no user memory left to walk, and keep the stack the sampler walked as the
/// process began to exit (`exit_walks`, `exit_stacks_used`).
#[test]
fn samples_during_exit_teardown_keep_the_stack_from_start() {
    let test = "samples_during_exit_teardown_keep_the_stack_from_start";
    let fixture = Fixture::c("exit_teardown", NOFP_C);
    let Some((test, exe)) = KernelTest::start_with(test, fixture) else {
        return;
    };
    let script = format!("for i in 1 2 3 4 5 6; do {} 512; done", exe.display());
    let recorded = Record::new(&test.dir, "teardown.folded")
        .args(&["-F", "999"])
        .stats("teardown.json")
        .command(&["sh", "-c", &script])
        .run();
    recorded.assert_success();
    let (lines, stats) = (recorded.folded(), recorded.stats());
    let comm = "exit_teardown";
    let in_teardown = |s: &str| s.contains("exit_mmap");
    let total = count(&lines, comm, in_teardown);
    let whole = |s: &str| in_teardown(s) && frames(s).get(1) == Some(&"_start");
    let good = count(&lines, comm, |s| {
        whole(s) && s.contains("__libc_start_main")
    });
    eprintln!(
        "{good} of {total} samples in exit_mmap walk from _start; exit_walks {} \
         exit_stacks_used {}; {}",
        stat(&stats, "exit_walks"),
        stat(&stats, "exit_stacks_used"),
        unwind_counters(&stats)
    );
    assert!(
        total >= 30,
        "only {total} samples in exit_mmap: {:#?}",
        misses(&lines, comm, |_| false)
    );
    assert!(stat(&stats, "exit_walks") >= 1.0);
    assert!(
        good * 100 >= total * 95,
        "{good} of {total} teardown samples walk from _start: {:#?}",
        misses(&lines, comm, |s| !in_teardown(s) || whole(s))
    );
}
