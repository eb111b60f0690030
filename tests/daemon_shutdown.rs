//! How a `profiler daemon` stops: SIGTERM delivers the last partial window, the flush on a
//! signal is bounded when the collector is down, and a `kill -9` leaves none of its BPF
//! programs, maps or links in the kernel, so the next session (record or daemon) works. Root
//! (see `common::bpf_available`); every wait is bounded.

mod common;

use std::path::Path;
use std::time::Duration;

use common::daemon::Setup;
use common::otlp::{statuses, window};
use common::receiver::Receiver;
use common::{assert_stats, count_where, eventually, stats, Record};

#[test]
fn sigterm_delivers_the_last_partial_window() {
    let Some(s) = Setup::start("sigterm_delivers_the_last_partial_window") else {
        return;
    };
    let receiver = Receiver::start(Vec::new());
    let url = receiver.url();
    let daemon = s.daemon(&["--endpoint", &url, "--interval", "60", "-F", "99"]);
    std::thread::sleep(Duration::from_secs(3));
    assert!(receiver.requests().is_empty(), "nothing before the signal");
    let ended = daemon.signal_and_wait(libc::SIGTERM);
    assert_eq!(ended.code, Some(0), "{}", ended.log);
    assert!(
        ended.took < Duration::from_secs(12),
        "exit took {:?}",
        ended.took
    );
    assert!(ended.log.contains("SIGTERM received"), "{}", ended.log);

    let requests = receiver.requests();
    assert_eq!(requests.len(), 1, "{:?}", statuses(&requests));
    let w = window(&requests[0], s.pid);
    assert!(w.total() >= 20, "{} samples in the last window", w.total());
    assert!(w.symbolized() > 0, "{:?}", w.samples);
    assert!(
        w.duration_ns >= 2_000_000_000 && w.duration_ns < 30_000_000_000,
        "a partial window of a few seconds: {} ns",
        w.duration_ns
    );
}

/// The flush on SIGTERM is bounded: with the collector down the daemon still exits 0 within the
/// 10 s deadline, counting the window it could not send as dropped.
#[test]
fn sigterm_with_the_collector_down_exits_by_the_deadline() {
    let Some(s) = Setup::start("sigterm_with_the_collector_down_exits_by_the_deadline") else {
        return;
    };
    let mut receiver = Receiver::start(Vec::new());
    receiver.stop();
    let url = receiver.url();
    // The default frequency.
    let daemon = s.daemon_with_stats(&["--endpoint", &url, "--interval", "60"]);
    std::thread::sleep(Duration::from_secs(2));
    let ended = daemon.signal_and_wait(libc::SIGINT);
    assert_eq!(ended.code, Some(0), "{}", ended.log);
    assert!(
        ended.took < Duration::from_secs(14),
        "exit took {:?}",
        ended.took
    );
    let counters = stats(&s.stats_path());
    let expected = [
        ("windows", 1.0),
        ("export_dropped", 1.0),
        ("export_delivered", 0.0),
    ];
    assert_stats(&counters, &expected);
    assert!(ended.log.contains("dropped"), "{}", ended.log);
}

/// The BPF objects (programs, maps, links) a process holds, by kind and ID, from its fdinfo.
fn bpf_objects(pid: u32) -> Vec<(&'static str, u32)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return found;
    };
    for entry in entries.filter_map(Result::ok) {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        // A link's fdinfo also names its program: take the object the fd itself is.
        let kind = ["link_id", "prog_id", "map_id"]
            .into_iter()
            .find(|key| text.lines().any(|l| l.starts_with(&format!("{key}:"))));
        let Some(kind) = kind else { continue };
        let id = text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{kind}:")))
            .and_then(|v| v.trim().parse().ok());
        if let Some(id) = id {
            found.push((kind, id));
        }
    }
    found.sort();
    found.dedup();
    found
}

/// Whether the kernel still has the BPF object `kind` `id`.
fn bpf_object_exists(kind: &str, id: u32) -> bool {
    use profiler::sys::bpf::{object_exists, ObjectKind};
    let kind = match kind {
        "prog_id" => ObjectKind::Prog,
        "map_id" => ObjectKind::Map,
        _ => ObjectKind::Link,
    };
    object_exists(kind, id)
}

#[test]
fn kill_9_leaves_nothing_behind_and_the_next_session_works() {
    let Some(s) = Setup::start("kill_9_leaves_nothing_behind_and_the_next_session_works") else {
        return;
    };
    let receiver = Receiver::start(Vec::new());
    let url = receiver.url();
    let args = ["--endpoint", url.as_str(), "--interval", "1", "-F", "99"];
    let daemon = s.daemon(&args);
    assert!(
        !receiver.wait_for(1, Duration::from_secs(20)).is_empty(),
        "{}",
        daemon.log()
    );
    let daemon_pid = daemon.pid();
    let held = bpf_objects(daemon_pid);
    let count = |kind: &str| held.iter().filter(|(k, _)| *k == kind).count();
    assert!(
        count("prog_id") >= 1 && count("map_id") >= 1 && count("link_id") >= 1,
        "the running daemon's BPF objects: {held:?}"
    );
    let ended = daemon.signal_and_wait(libc::SIGKILL);
    assert_eq!(ended.code, None, "killed by a signal");
    assert!(!Path::new(&format!("/proc/{daemon_pid}")).exists());

    // Nothing pinned, nothing attached: every program, map and link is freed by the kernel.
    let gone = eventually(Duration::from_secs(10), || {
        held.iter().all(|&(kind, id)| !bpf_object_exists(kind, id))
    });
    let left: Vec<_> = held
        .iter()
        .filter(|&&(kind, id)| bpf_object_exists(kind, id))
        .collect();
    assert!(gone, "still in the kernel after kill -9: {left:?}");

    // A record session works.
    let recorded = Record::new(s.dir(), "after.folded")
        .args(&["-d", "1", "-F", "99", "-p", &s.pid_arg])
        .run();
    recorded.assert_success();
    let lines = recorded.folded();
    let good = count_where(&lines, |s| s.contains(";main;a;b;c"));
    assert!(good >= 10, "record after kill -9: {lines:?}");

    // And a new daemon samples and delivers normally.
    let before = receiver.requests().len();
    let again = s.daemon(&args);
    let got = receiver.wait_for(before + 2, Duration::from_secs(20));
    let log = again.terminate();
    let fresh = &got[before.min(got.len())..];
    assert!(fresh.len() >= 2, "{} requests:\n{log}", fresh.len());
    let samples: i64 = fresh.iter().map(|r| window(r, s.pid).symbolized()).sum();
    assert!(samples >= 10, "{samples} symbolized samples:\n{log}");
}
