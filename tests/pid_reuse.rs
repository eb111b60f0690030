//! PID reuse: a process that gets a just-freed PID is a new process. Its identity (PID and
//! start time) travels on every event, so it is synced at once, with entries of its own, even
//! when its predecessor's exit is read after its first report. Each round here frees a PID and
//! hands it straight to a different binary through `/proc/sys/kernel/ns_last_pid` (root).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

const ROUNDS: usize = 20;
/// How long each process runs: at 499 Hz about 250 samples.
const CHILD_SECONDS: &str = "0.5";
const MIN_COMPLETE: f64 = 0.95;

fn build_child(dir: &Path, k: usize) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reuse_child.c");
    let out = dir.join(format!("child_{k}"));
    let status = Command::new("cc")
        .args(["-O2", "-fomit-frame-pointer", &format!("-DTAG={k}"), "-o"])
        .arg(&out)
        .arg(&source)
        .status()
        .expect("run cc");
    assert!(status.success(), "cc failed for child {k}");
    out
}

/// Starts `exe` on PID `pid`, which must be free. Other processes may take it first: then the
/// child is waited for and the next try goes on. `None` after a few tries.
fn spawn_on_pid(exe: &Path, pid: u32) -> Option<Child> {
    for _ in 0..20 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", format!("{}", pid - 1)).ok()?;
        let mut child = Command::new(exe).arg(CHILD_SECONDS).spawn().ok()?;
        if child.id() == pid {
            return Some(child);
        }
        let _ = (child.kill(), child.wait());
    }
    None
}

/// Stops the profiler if the test fails before it does.
struct Session(Option<Child>);

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = (child.kill(), child.wait());
        }
    }
}

#[test]
fn every_process_on_an_immediately_reused_pid_is_complete_and_its_own() {
    if !bpf_available("pid_reuse") {
        return;
    }
    let _serial = serial();
    let dir = scratch("pid-reuse");
    let children: Vec<PathBuf> = (0..ROUNDS).map(|k| build_child(&dir, k)).collect();
    let (out_path, stats_path) = (dir.join("reuse.folded"), dir.join("stats.json"));
    let mut session = Session(Some(
        Command::new(PROFILER)
            .args([
                "record",
                "-a",
                "-F",
                "499",
                "-o",
                out_path.to_str().unwrap(),
            ])
            .args(["--stats-json", stats_path.to_str().unwrap()])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    std::thread::sleep(Duration::from_secs(3));

    // The first process picks its PID freely; each next one gets the PID just freed.
    let mut child = Command::new(&children[0])
        .arg(CHILD_SECONDS)
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut reused = 0;
    for exe in &children[1..] {
        assert!(child.wait().unwrap().success());
        child = spawn_on_pid(exe, pid).expect("could not get the freed PID back");
        reused += 1;
    }
    assert!(child.wait().unwrap().success());
    std::thread::sleep(Duration::from_secs(2)); // let the last exits reach the maintainer
    let profiler = session.0.take().unwrap();
    profiler::sys::process::send_signal(profiler.id(), libc::SIGINT).unwrap();
    let output = profiler.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{log}");

    let lines = folded(&out_path);
    let stats = stats(&stats_path);
    let mut report = Vec::new();
    for k in 0..ROUNDS {
        let comm = format!("child_{k}");
        let own = format!("main;outer_{k};work_{k}");
        let mine: Vec<&(String, u64)> = lines
            .iter()
            .filter(|(s, _)| s.starts_with(&format!("{comm};")))
            .collect();
        let total: u64 = mine.iter().map(|(_, c)| c).sum();
        let complete: u64 = mine
            .iter()
            .filter(|(s, _)| s.contains(&own) && s.contains("__libc_start_main"))
            .map(|(_, c)| c)
            .sum();
        let foreign: Vec<&str> = mine
            .iter()
            .filter(|(s, _)| (0..ROUNDS).any(|j| j != k && s.contains(&format!("_{j};"))))
            .map(|(s, _)| s.as_str())
            .collect();
        report.push(format!("{comm} {complete}/{total}"));
        assert!(total >= 50, "{comm}: only {total} samples\n{log}");
        assert!(
            complete as f64 >= MIN_COMPLETE * total as f64,
            "{comm}: {complete} of {total} complete; misses: {:?}\n{log}",
            mine.iter()
                .filter(|(s, _)| !s.contains(&own))
                .take(5)
                .collect::<Vec<_>>()
        );
        assert!(
            foreign.is_empty(),
            "{comm} carries another process's frames: {foreign:?}"
        );
    }
    eprintln!("pid reuse, PID {pid}: {}", report.join(", "));
    assert!(
        stat(&stats, "pid_reuses") >= reused as f64,
        "pid_reuses {} < {reused}",
        stat(&stats, "pid_reuses")
    );
    assert_eq!(stat(&stats, "map_delete_errors"), 0.0);
    assert_eq!(stat(&stats, "stale_pid_entries"), 0.0);
}
