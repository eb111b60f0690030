//! The daemon's retry policy seen from the collector's side, on a loopback receiver: a 503 with
//! `Retry-After` is retried and delivered exactly once, a 400 is counted and not retried while
//! later windows arrive, and a 30 s outage keeps sampling and then delivers the newest queued
//! windows in order. Root (see `common::bpf_available`); every wait is bounded, and the outage
//! test takes about 45 s.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::daemon::{now_unix_ns, Setup};
use common::otlp::{span_of, start_of, statuses};
use common::receiver::{Receiver, Reply};
use common::{assert_stats, eventually, stat, stats};

#[test]
fn service_unavailable_then_ok_delivers_the_window_exactly_once() {
    let Some(s) = Setup::start("service_unavailable_then_ok_delivers_the_window_exactly_once")
    else {
        return;
    };
    let receiver = Receiver::start(vec![Reply::new(503).header("Retry-After", "1")]);
    let url = receiver.url();
    let daemon = s.daemon_with_stats(&["--endpoint", &url, "--interval", "2", "-F", "99"]);
    let got = receiver.wait_for(3, Duration::from_secs(30));
    assert!(got.len() >= 3, "{:?}:\n{}", statuses(&got), daemon.log());
    let log = daemon.terminate();

    let requests = receiver.requests();
    assert_eq!(requests[0].status, 503, "{:?}", statuses(&requests));
    assert!(
        requests[1..].iter().all(|r| r.status == 200),
        "{:?}",
        statuses(&requests)
    );
    assert_eq!(
        requests[1].body, requests[0].body,
        "the 503'd window is retried first"
    );
    let gap = requests[1].at - requests[0].at;
    assert!(
        gap >= Duration::from_millis(900) && gap < Duration::from_secs(5),
        "Retry-After: 1 honoured: retried after {gap:?}"
    );
    let first = &requests[0].body;
    assert_eq!(
        requests.iter().filter(|r| &r.body == first).count(),
        2,
        "the window is sent twice (503, 200) and no more"
    );
    let delivered: Vec<&Vec<u8>> = requests[1..].iter().map(|r| &r.body).collect();
    let distinct: HashSet<&Vec<u8>> = delivered.iter().copied().collect();
    assert_eq!(distinct.len(), delivered.len(), "a window delivered twice");
    let starts: Vec<u64> = requests[1..].iter().map(start_of).collect();
    assert!(
        starts.windows(2).all(|w| w[0] < w[1]),
        "windows delivered in order: {starts:?}"
    );

    let counters = stats(&s.stats_path());
    assert_eq!(stat(&counters, "export_retries"), 1.0, "{log}");
    let delivered = delivered.len() as f64;
    assert_stats(
        &counters,
        &[
            ("export_delivered", delivered),
            ("export_attempts", requests.len() as f64),
            ("export_rejected", 0.0),
            ("export_dropped", 0.0),
            ("windows", delivered),
        ],
    );
}

#[test]
fn bad_request_is_counted_not_retried_and_later_windows_arrive() {
    let Some(s) = Setup::start("bad_request_is_counted_not_retried_and_later_windows_arrive")
    else {
        return;
    };
    let receiver = Receiver::start(vec![Reply::new(400).body("unknown field 99")]);
    let stats_path = s.stats_path();
    let url = receiver.url();
    let daemon = s.daemon_with_stats(&["--endpoint", &url, "--interval", "1", "-F", "99"]);
    let got = receiver.wait_for(3, Duration::from_secs(30));
    assert!(got.len() >= 3, "{:?}:\n{}", statuses(&got), daemon.log());
    // Still running after the rejection, and counting it.
    assert!(
        eventually(Duration::from_secs(5), || {
            std::fs::read_to_string(&stats_path).is_ok_and(|t| t.contains("export_rejected"))
                && stat(&stats(&stats_path), "export_rejected") == 1.0
        }),
        "export_rejected in {}",
        std::fs::read_to_string(&stats_path).unwrap_or_default()
    );
    let log = daemon.terminate();

    let requests = receiver.requests();
    assert_eq!(requests[0].status, 400);
    assert!(
        requests[1..].iter().all(|r| r.status == 200),
        "{:?}",
        statuses(&requests)
    );
    let rejected = &requests[0].body;
    assert!(
        requests[1..].iter().all(|r| &r.body != rejected),
        "the rejected window was sent again"
    );
    assert!(
        log.contains("HTTP 400") && log.contains("not retried"),
        "the rejection is logged:\n{log}"
    );
    let counters = stats(&stats_path);
    assert_stats(
        &counters,
        &[
            ("export_rejected", 1.0),
            ("export_retries", 0.0),
            ("export_dropped", 0.0),
            ("export_delivered", (requests.len() - 1) as f64),
            ("windows", requests.len() as f64),
        ],
    );
}

#[test]
fn outage_keeps_sampling_then_delivers_the_newest_queued_windows() {
    let Some(s) = Setup::start("outage_keeps_sampling_then_delivers_the_newest_queued_windows")
    else {
        return;
    };
    let mut receiver = Receiver::start(Vec::new());
    receiver.stop();
    let stats_path = s.stats_path();
    let url = receiver.url();
    let args = [
        "--endpoint",
        &url,
        "--interval",
        "1",
        "--queue",
        "3",
        "-F",
        "99",
    ];
    let daemon = s.daemon_with_stats(&args);
    let down_since = Instant::now();

    // During the outage: sampling goes on, windows are cut, the oldest ones are dropped.
    let read = |name: &str| stat(&stats(&stats_path), name);
    std::thread::sleep(Duration::from_secs(10));
    let (samples_early, windows_early) = (read("samples"), read("windows"));
    std::thread::sleep(Duration::from_secs(15));
    let (samples_late, windows_late) = (read("samples"), read("windows"));
    assert!(
        samples_late > samples_early && samples_early > 0.0,
        "samples {samples_early} then {samples_late} during the outage"
    );
    assert!(
        windows_late >= windows_early + 5.0,
        "windows {windows_early} then {windows_late} in 15 s at --interval 1"
    );
    assert!(
        read("export_dropped") >= 10.0,
        "export_dropped {} after ~25 s down with --queue 3",
        read("export_dropped")
    );
    assert_eq!(read("export_delivered"), 0.0);
    assert!(receiver.requests().is_empty());
    let left = Duration::from_secs(30).saturating_sub(down_since.elapsed());
    std::thread::sleep(left);

    let windows_before = read("windows");
    let restarted_ns = now_unix_ns();
    let restarted = Instant::now();
    receiver.restart(Vec::new()).expect("rebind the port");
    let got = receiver.wait_for(4, Duration::from_secs(20));
    let recovered_in = got.first().map(|r| r.at - restarted);
    assert!(got.len() >= 4, "{} requests after recovery", got.len());
    let ended = daemon.signal_and_wait(libc::SIGTERM);
    assert_eq!(ended.code, Some(0), "{}", ended.log);

    let requests = receiver.requests();
    assert!(requests.iter().all(|r| r.status == 200));
    let starts: Vec<u64> = requests.iter().map(start_of).collect();
    assert!(
        starts.iter().all(|&s| s > 0),
        "every window has the fixture's samples"
    );
    assert!(
        starts.windows(2).all(|w| w[0] < w[1]),
        "delivered in order, each once: {starts:?}"
    );
    // What was queued when the collector came back: at most 3 windows, the newest ones. A
    // window counts as queued if it had ended half a second before the restart (it was cut
    // and submitted by then); the one being recorded at the restart does not.
    let spans: Vec<(u64, u64)> = requests.iter().map(span_of).collect();
    let queued: Vec<u64> = spans
        .iter()
        .filter(|&&(start, duration)| start + duration + 500_000_000 <= restarted_ns)
        .map(|&(start, _)| start)
        .collect();
    assert!(
        !queued.is_empty() && queued.len() <= 3,
        "{} windows from before the recovery delivered (--queue 3): (start, duration) \
         {spans:?}, restart at {restarted_ns}",
        queued.len()
    );
    let oldest_age = Duration::from_nanos(restarted_ns.saturating_sub(starts[0]));
    assert!(
        oldest_age < Duration::from_secs(8),
        "the oldest window delivered began {oldest_age:?} before the recovery: not among \
         the newest 3"
    );
    let counters = stats(&stats_path);
    let (windows, delivered, dropped) = (
        stat(&counters, "windows"),
        stat(&counters, "export_delivered"),
        stat(&counters, "export_dropped"),
    );
    assert_eq!(delivered, requests.len() as f64);
    assert_eq!(stat(&counters, "export_rejected"), 0.0);
    assert_eq!(
        windows,
        delivered + dropped,
        "every window delivered or counted as dropped"
    );
    assert!(
        dropped >= windows_before - 3.0 - 1.0 && dropped <= windows_before,
        "{dropped} dropped of {windows_before} windows cut during the outage"
    );
    let ended_before = spans
        .iter()
        .filter(|&&(start, duration)| start + duration <= restarted_ns)
        .count();
    eprintln!(
        "outage: {windows_before} windows cut during 30 s down, {dropped} dropped, \
         {ended_before} delivered that had ended before the restart, first delivery \
         {recovered_in:?} after the restart"
    );
}
