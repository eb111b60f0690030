//! PID reuse: a process that gets a just-freed PID is a new process. Its identity (PID and
//! start time) travels on every event, so it is synced at once, with entries of its own, even
//! when its predecessor's exit is read after its first report. Each round here frees a PID and
//! hands it straight to a different binary through `/proc/sys/kernel/ns_last_pid` (root).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use common::*;

const ROUNDS: usize = 20;
/// How long each process runs: at 499 Hz about 250 samples.
const CHILD_SECONDS: &str = "0.5";
const MIN_COMPLETE: f64 = 0.95;

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

#[test]
fn every_process_on_an_immediately_reused_pid_is_complete_and_its_own() {
    let test = "every_process_on_an_immediately_reused_pid_is_complete_and_its_own";
    let Some(test) = KernelTest::start(test) else {
        return;
    };
    let Some(children) = (0..ROUNDS)
        .map(|k| test.build(Fixture::tagged_child(k)))
        .collect::<Option<Vec<PathBuf>>>()
    else {
        return;
    };
    let session = Record::new(&test.dir, "reuse.folded")
        .args(&["-a", "-F", "499"])
        .stats("stats.json")
        .spawn();
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
    let recorded = session.interrupt();
    let log = &recorded.log;
    recorded.assert_success();

    let lines = recorded.folded();
    let stats = recorded.stats();
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
            // (By the fixture's own frames: kernel names such as `__put_user_8` end in digits.)
            .filter(|(s, _)| {
                let theirs = |f: &str| {
                    (0..ROUNDS)
                        .any(|j| j != k && (f == format!("outer_{j}") || f == format!("work_{j}")))
                };
                s.split(';').any(theirs)
            })
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
    assert_stats(
        &stats,
        &[("map_delete_errors", 0.0), ("stale_pid_entries", 0.0)],
    );
}
