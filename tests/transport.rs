//! The OTLP/HTTP transport against a loopback receiver: what goes on the wire, which answers are
//! retried and which are not, the drop-oldest queue during an outage, and shutdown deadlines.
//! No root needed; every test runs in a few seconds.

mod common;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;

use common::receiver::{Receiver, Reply};
use profiler::exporter::{Exporter, TransportConfig};
use profiler::proto::otlp::{ExportProfilesServiceRequest, ProfilesDictionary};
use profiler::stats::Stats;

const WAIT: Duration = Duration::from_secs(10);

/// A config for `receiver` with test-sized backoffs.
fn config(receiver: &Receiver) -> TransportConfig {
    let mut config = TransportConfig::new(receiver.url());
    config.initial_backoff = Duration::from_millis(50);
    config.max_backoff = Duration::from_millis(200);
    config.request_timeout = Duration::from_secs(2);
    config
}

/// A small, compressible export request naming window `n`.
fn window(n: usize) -> Vec<u8> {
    let mut strings = vec![String::new(), format!("window-{n}")];
    strings.extend((0..50).map(|i| format!("function_{i}")));
    ExportProfilesServiceRequest {
        resource_profiles: Vec::new(),
        dictionary: Some(ProfilesDictionary {
            string_table: strings,
            ..Default::default()
        }),
    }
    .encode_to_vec()
}

fn window_name(body: &[u8]) -> String {
    let request = ExportProfilesServiceRequest::decode(body).expect("an export request");
    request.dictionary.expect("a dictionary").string_table[1].clone()
}

fn start(config: TransportConfig) -> (Exporter, Arc<Stats>) {
    let stats = Arc::new(Stats::default());
    let exporter = Exporter::start(config, Arc::clone(&stats)).expect("start the exporter");
    (exporter, stats)
}

/// Waits until `counter` reaches `value`; true if it did within [`WAIT`].
fn reaches(counter: &AtomicU64, value: u64) -> bool {
    let until = Instant::now() + WAIT;
    while Instant::now() < until {
        if Stats::get(counter) >= value {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// Gives a wrongly retrying exporter the chance to send once more.
fn settle() {
    std::thread::sleep(Duration::from_millis(400));
}

#[test]
fn window_is_posted_with_path_content_type_and_headers() {
    let receiver = Receiver::start(Vec::new());
    let mut config = config(&receiver);
    config.headers = vec![
        ("Authorization".into(), "Bearer secret".into()),
        ("X-Scope-OrgID".into(), "tenant-1".into()),
    ];
    let (exporter, stats) = start(config);
    assert_eq!(
        exporter.url(),
        format!("{}/v1development/profiles", receiver.url())
    );
    let payload = window(1);
    exporter.submit(payload.clone());
    assert!(reaches(&stats.export_delivered, 1));

    let requests = receiver.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/v1development/profiles");
    assert_eq!(
        request.header("content-type"),
        Some("application/x-protobuf")
    );
    assert_eq!(request.header("content-encoding"), None);
    assert_eq!(request.header("authorization"), Some("Bearer secret"));
    assert_eq!(request.header("x-scope-orgid"), Some("tenant-1"));
    assert_eq!(request.body, payload);
    assert!(request.export_request().is_ok());
    assert_eq!(Stats::get(&stats.export_bytes), payload.len() as u64);
    assert_eq!(Stats::get(&stats.export_attempts), 1);
    assert_eq!(Stats::get(&stats.export_retries), 0);

    let report = exporter.shutdown(Duration::from_secs(1));
    assert_eq!(report.pending, 0);
}

#[test]
fn gzip_bodies_are_compressed_and_counted_after_compression() {
    let receiver = Receiver::start(Vec::new());
    let mut config = config(&receiver);
    config.gzip = true;
    let (exporter, stats) = start(config);
    let payload = window(7);
    exporter.submit(payload.clone());
    assert!(reaches(&stats.export_delivered, 1));

    let request = &receiver.requests()[0];
    assert_eq!(request.header("content-encoding"), Some("gzip"));
    assert_eq!(
        request.header("content-type"),
        Some("application/x-protobuf")
    );
    assert_eq!(request.body, payload, "the receiver decodes gzip");
    assert!(
        request.wire_len < payload.len(),
        "{} bytes on the wire",
        request.wire_len
    );
    assert_eq!(Stats::get(&stats.export_bytes), request.wire_len as u64);
    exporter.shutdown(Duration::from_secs(1));
}

#[test]
fn service_unavailable_with_retry_after_is_delivered_exactly_once() {
    let plan = vec![Reply::new(503).header("Retry-After", "1")];
    let receiver = Receiver::start(plan);
    let (exporter, stats) = start(config(&receiver));
    exporter.submit(window(1));
    assert!(reaches(&stats.export_delivered, 1));
    settle();

    let requests = receiver.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].status, 503);
    assert_eq!(requests[1].status, 200);
    assert_eq!(requests[0].body, requests[1].body);
    let gap = requests[1].at - requests[0].at;
    assert!(
        gap >= Duration::from_millis(150),
        "Retry-After honoured (capped): {gap:?}"
    );
    assert_eq!(Stats::get(&stats.export_delivered), 1);
    assert_eq!(Stats::get(&stats.export_attempts), 2);
    assert_eq!(Stats::get(&stats.export_retries), 1);
    exporter.shutdown(Duration::from_secs(1));
}

#[test]
fn retry_after_is_waited_for_when_under_the_cap() {
    let plan = vec![Reply::new(503).header("Retry-After", "1")];
    let receiver = Receiver::start(plan);
    let mut config = config(&receiver);
    config.max_backoff = Duration::from_secs(5);
    let (exporter, stats) = start(config);
    exporter.submit(window(1));
    assert!(reaches(&stats.export_delivered, 1));

    let requests = receiver.requests();
    assert_eq!(requests.len(), 2);
    let gap = requests[1].at - requests[0].at;
    assert!(
        gap >= Duration::from_millis(950),
        "waited {gap:?}, not the 50 ms backoff"
    );
    assert!(gap < Duration::from_secs(3), "waited {gap:?}");
    exporter.shutdown(Duration::from_secs(1));
}

#[test]
fn bad_request_is_rejected_not_retried() {
    let receiver = Receiver::start(vec![Reply::new(400).body("unknown field 99")]);
    let (exporter, stats) = start(config(&receiver));
    exporter.submit(window(1));
    assert!(reaches(&stats.export_rejected, 1));
    settle();
    assert_eq!(receiver.requests().len(), 1);
    assert_eq!(Stats::get(&stats.export_delivered), 0);
    assert_eq!(Stats::get(&stats.export_retries), 0);
    assert_eq!(Stats::get(&stats.export_dropped), 0);

    // The next window goes through: a rejection does not stall the queue.
    exporter.submit(window(2));
    assert!(reaches(&stats.export_delivered, 1));
    exporter.shutdown(Duration::from_secs(1));
}

#[test]
fn internal_server_error_is_not_retried() {
    let receiver = Receiver::start(vec![Reply::new(500), Reply::new(401)]);
    let (exporter, stats) = start(config(&receiver));
    exporter.submit(window(1));
    exporter.submit(window(2));
    assert!(reaches(&stats.export_rejected, 2));
    settle();
    assert_eq!(receiver.requests().len(), 2);
    assert_eq!(Stats::get(&stats.export_retries), 0);
    exporter.shutdown(Duration::from_secs(1));
}

#[test]
fn too_many_requests_is_retried_until_delivered() {
    let receiver = Receiver::start(vec![Reply::new(429), Reply::new(429)]);
    let (exporter, stats) = start(config(&receiver));
    exporter.submit(window(1));
    assert!(reaches(&stats.export_delivered, 1));
    settle();
    let statuses: Vec<u16> = receiver.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [429, 429, 200]);
    assert_eq!(Stats::get(&stats.export_retries), 2);
    assert_eq!(Stats::get(&stats.export_attempts), 3);
    assert_eq!(Stats::get(&stats.export_delivered), 1);
    exporter.shutdown(Duration::from_secs(1));
}

#[test]
fn partial_success_is_counted_not_retried() {
    let receiver = Receiver::start(vec![Reply::partial_success(3, "bad sample")]);
    let (exporter, stats) = start(config(&receiver));
    exporter.submit(window(1));
    assert!(reaches(&stats.export_partial_success, 1));
    settle();
    assert_eq!(receiver.requests().len(), 1);
    assert_eq!(Stats::get(&stats.export_delivered), 1);
    assert_eq!(Stats::get(&stats.export_rejected), 0);
    assert_eq!(Stats::get(&stats.export_retries), 0);
    exporter.shutdown(Duration::from_secs(1));
}

#[test]
fn timeouts_are_retried() {
    let plan = vec![Reply::ok().delay(Duration::from_millis(1500))];
    let receiver = Receiver::start(plan);
    let mut config = config(&receiver);
    config.request_timeout = Duration::from_millis(300);
    let (exporter, stats) = start(config);
    exporter.submit(window(1));
    assert!(reaches(&stats.export_delivered, 1));
    assert_eq!(Stats::get(&stats.export_retries), 1);
    assert_eq!(receiver.wait_for(2, WAIT).len(), 2);
    exporter.shutdown(Duration::from_secs(1));
}

#[test]
fn outage_keeps_the_newest_windows_and_delivers_them_in_order() {
    let mut receiver = Receiver::start(Vec::new());
    receiver.stop();
    let mut config = config(&receiver);
    config.queue_capacity = 2;
    let (exporter, stats) = start(config);
    for n in 1..=5 {
        exporter.submit(window(n));
        std::thread::sleep(Duration::from_millis(30));
    }
    assert!(reaches(&stats.export_dropped, 3));
    // Down a while longer: the exporter keeps retrying, and keeps what it has.
    std::thread::sleep(Duration::from_secs(2));
    assert!(Stats::get(&stats.export_retries) >= 5);
    assert_eq!(exporter.pending(), 2);
    assert_eq!(Stats::get(&stats.export_dropped), 3);

    receiver
        .restart(Vec::new())
        .expect("rebind the receiver's port");
    assert!(reaches(&stats.export_delivered, 2));
    settle();
    let names: Vec<String> = receiver
        .requests()
        .iter()
        .map(|r| window_name(&r.body))
        .collect();
    assert_eq!(names, ["window-4", "window-5"]);
    assert_eq!(Stats::get(&stats.export_dropped), 3);
    assert_eq!(Stats::get(&stats.export_rejected), 0);
    let report = exporter.shutdown(Duration::from_secs(1));
    assert_eq!(report.pending, 0);
}

#[test]
fn shutdown_flushes_what_is_queued() {
    let receiver = Receiver::start(vec![Reply::new(503)]);
    let (exporter, stats) = start(config(&receiver));
    for n in 1..=3 {
        exporter.submit(window(n));
    }
    let report = exporter.shutdown(Duration::from_secs(5));
    assert_eq!(report.pending, 3);
    assert_eq!(report.delivered, 3, "{report:?}");
    assert_eq!(report.dropped, 0);
    let names: Vec<String> = receiver
        .requests()
        .iter()
        .map(|r| window_name(&r.body))
        .collect();
    assert_eq!(names, ["window-1", "window-1", "window-2", "window-3"]);
    assert_eq!(Stats::get(&stats.export_delivered), 3);
}

#[test]
fn shutdown_while_collector_down_returns_by_the_deadline() {
    let mut receiver = Receiver::start(Vec::new());
    receiver.stop();
    let mut config = config(&receiver);
    config.max_backoff = Duration::from_secs(5);
    let (exporter, stats) = start(config);
    for n in 1..=3 {
        exporter.submit(window(n));
    }
    let started = Instant::now();
    let report = exporter.shutdown(Duration::from_millis(1500));
    let took = started.elapsed();
    assert!(took < Duration::from_millis(1800), "shutdown took {took:?}");
    assert_eq!(report.pending, 3);
    assert_eq!(report.dropped, 3, "{report:?}");
    assert_eq!(report.delivered, 0);
    assert_eq!(Stats::get(&stats.export_dropped), 3);
    assert!(receiver.requests().is_empty());
}

#[test]
fn shutdown_does_not_wait_for_a_hung_request() {
    let receiver = Receiver::start(vec![Reply::ok().delay(Duration::from_secs(5))]);
    let mut config = config(&receiver);
    config.request_timeout = Duration::from_secs(10);
    let (exporter, stats) = start(config);
    exporter.submit(window(1));
    assert_eq!(receiver.wait_for(1, WAIT).len(), 1);
    let started = Instant::now();
    let report = exporter.shutdown(Duration::from_millis(500));
    let took = started.elapsed();
    assert!(took < Duration::from_millis(1000), "shutdown took {took:?}");
    assert_eq!(report.pending, 1);
    assert_eq!(report.dropped, 1, "{report:?}");
    assert_eq!(Stats::get(&stats.export_dropped), 1);
    assert_eq!(Stats::get(&stats.export_delivered), 0);
}

#[test]
fn invalid_config_is_refused_at_start() {
    let stats = Arc::new(Stats::default());
    let error = Exporter::start(TransportConfig::new("localhost:4318"), stats)
        .err()
        .expect("no scheme");
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
    assert!(error.to_string().contains("http://"), "{error}");
}
