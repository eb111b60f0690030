//! Helpers shared by the integration tests: privilege gating, fixture builds, running the
//! profiler binary and reading its outputs.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// The profiler binary cargo built for these tests.
pub const PROFILER: &str = env!("CARGO_BIN_EXE_profiler");

/// Tests that measure CPU samples must not compete for the CPUs: each holds this while it runs.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Takes the serial lock (a test that panicked while holding it does not poison the rest).
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// True when BPF tests can run. Without root they are skipped, except when
/// `PROFILER_REQUIRE_BPF=1` (CI), where a missing capability fails the test.
pub fn bpf_available(test: &str) -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("CapEff:"))
                .map(str::to_string)
        })
        .and_then(|l| u64::from_str_radix(l["CapEff:".len()..].trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 21) != 0 || caps & (3 << 38) == 3 << 38);
    if !root {
        profiler::testing::skip(test, "needs root (CAP_BPF + CAP_PERFMON)");
    }
    root
}

/// A fresh scratch directory for one test.
pub fn scratch(name: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "profiler-it-{}-{name}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Compiles `tests/fixtures/NAME.c` into `dir` with the given flags.
pub fn build_fixture(dir: &Path, name: &str, flags: &[&str]) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.c"));
    let out = dir.join(name);
    let status = Command::new("cc")
        .args(flags)
        .arg("-o")
        .arg(&out)
        .arg(&source)
        .status()
        .expect("run cc");
    assert!(status.success(), "cc failed for {name}");
    out
}

/// Runs the profiler with `args`, returning its output.
pub fn profiler(args: &[&str]) -> Output {
    Command::new(PROFILER)
        .args(args)
        .output()
        .expect("run profiler")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Parses folded text into (stack, count) lines.
pub fn folded(path: &Path) -> Vec<(String, u64)> {
    let text = std::fs::read_to_string(path).expect("read folded output");
    text.lines()
        .map(|line| {
            let (stack, count) = line.rsplit_once(' ').expect("a space before the count");
            (stack.to_string(), count.parse().expect("a numeric count"))
        })
        .collect()
}

/// Reads `--stats-json` output as (name, value) pairs (flat object of numbers).
pub fn stats(path: &Path) -> Vec<(String, f64)> {
    let text = std::fs::read_to_string(path).expect("read stats json");
    text.trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .split(',')
        .filter_map(|field| {
            let (name, value) = field.split_once(':')?;
            Some((
                name.trim().trim_matches('"').to_string(),
                value.trim().parse().ok()?,
            ))
        })
        .collect()
}

pub fn stat(stats: &[(String, f64)], name: &str) -> f64 {
    stats
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no counter {name}"))
}
