//! Helpers shared by the integration tests. This file owns the small pieces every kind of test
//! uses: privilege gating (through `profiler::testing::skip`), the serial lock, scratch
//! directories, running the profiler binary, reading folded and `--stats-json` output, bounded
//! waits, and child processes killed on drop. The larger pieces are its submodules:
//! [`fixture`] (programs built from `tests/fixtures`), [`record`] (`profiler record` sessions),
//! [`daemon`] (`profiler daemon` processes), [`receiver`] (the loopback OTLP/HTTP collector),
//! [`otlp`] (sample profiles and reading OTLP messages back), [`otlp_check`] (the dictionary
//! rules), [`python`] (the OpenTelemetry project's own classes reading our bytes), [`cpython`]
//! (the CPython interpreters installed, for the Python frame tests), [`unwind`] (sessions and
//! stacks as the unwinding tests read them) and [`view`] (the frames of a drawn flame graph).
#![allow(dead_code)]

pub mod cpython;
pub mod daemon;
pub mod fixture;
pub mod otlp;
pub mod otlp_check;
pub mod python;
pub mod receiver;
pub mod record;
pub mod unwind;
pub mod view;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

// The two builders most tests use, at hand with `use common::*` (not every test uses both).
#[allow(unused_imports)]
pub use fixture::Fixture;
#[allow(unused_imports)]
pub use record::Record;

/// The profiler binary cargo built for these tests.
pub const PROFILER: &str = env!("CARGO_BIN_EXE_profiler");

/// Tests that measure CPU samples must not compete for the CPUs: each holds this while it runs.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Takes the serial lock (a test that panicked while holding it does not poison the rest).
pub fn serial() -> MutexGuard<'static, ()> {
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

/// A test of the real kernel path that measures samples: it runs as root, alone, in a scratch
/// directory of its own.
pub struct KernelTest {
    /// The test's name, for skips.
    pub name: &'static str,
    pub dir: PathBuf,
    _serial: MutexGuard<'static, ()>,
}

impl KernelTest {
    /// Root (or a skip through `profiler::testing::skip`), then the serial lock and a scratch
    /// directory named after the test.
    pub fn start(name: &'static str) -> Option<KernelTest> {
        if !bpf_available(name) {
            return None;
        }
        let serial = serial();
        Some(KernelTest {
            name,
            dir: scratch(name),
            _serial: serial,
        })
    }

    /// [`KernelTest::start`], then builds `fixture`: the test and its program.
    pub fn start_with(name: &'static str, fixture: Fixture) -> Option<(KernelTest, PathBuf)> {
        let test = KernelTest::start(name)?;
        let program = test.build(fixture)?;
        Some((test, program))
    }

    /// Builds `fixture`; `None` once the test is skipped for want of its compiler.
    pub fn build(&self, fixture: Fixture) -> Option<PathBuf> {
        fixture.build(self.name)
    }
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

/// `path` as the `&str` a command line takes.
pub fn arg(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
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

/// Runs `profiler ARGS` and checks that it exits `code` with `message` on stderr, not panicking.
pub fn expect_exit(args: &[&str], code: i32, message: &str) {
    let out = profiler(args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
    assert!(
        err.contains(message),
        "{args:?}: expected {message:?} in: {err}"
    );
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
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

/// The samples of the folded `lines` whose stack passes `f`.
pub fn count_where(lines: &[(String, u64)], f: impl Fn(&str) -> bool) -> u64 {
    lines.iter().filter(|(s, _)| f(s)).map(|(_, c)| c).sum()
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

/// Checks that each counter named in `expected` has its value in `stats`.
pub fn assert_stats(stats: &[(String, f64)], expected: &[(&str, f64)]) {
    for &(name, value) in expected {
        assert_eq!(stat(stats, name), value, "counter {name}");
    }
}

/// Polls `done` every 50 ms for at most `timeout`; true if it became true.
pub fn eventually(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child killed (and reaped) when dropped, so a failing test leaves nothing running; `drop`
/// it to stop it at a given point.
pub struct Guard(pub Child);

impl Guard {
    /// Starts `command`.
    pub fn spawn(command: &mut Command) -> Guard {
        Guard(command.spawn().expect("start a child process"))
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
