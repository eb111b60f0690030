//! `--metrics`: what `curl 127.0.0.1:PORT/metrics` returns parses as Prometheus text with the
//! official Python client's parser (`prometheus_client`, pinned in .ci/install-deps), every
//! family has HELP and TYPE, the families an operator needs are there, and the delete-error and
//! stale-entry values are those of `--stats-json`. Then the daemon's last words: its final log
//! line, the stats file and the collector agree on the windows delivered. Root (BPF), curl and
//! python3 with prometheus_client, through the gate.

mod common;
mod daemon_support;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::receiver::Receiver;
use common::{bpf_available, scratch, stat, stats, Guard};
use daemon_support::{tool_works, Daemon};

/// Prints each family as `FAMILY name type help` and each sample as
/// `SAMPLE name {labels} value`, from the official parser.
const PARSE: &str = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
for family in text_string_to_metric_families(open(sys.argv[1]).read()):
    print("FAMILY", family.name, family.type, family.documentation)
    for sample in family.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
        print("SAMPLE", sample.name, "{" + labels + "}", repr(float(sample.value)))
"#;

/// One parsed family.
#[derive(Debug, Default)]
struct Family {
    kind: String,
    help: String,
    /// `name{labels}` -> value.
    samples: BTreeMap<String, f64>,
}

fn parse_with_prometheus_client(text_file: &std::path::Path) -> BTreeMap<String, Family> {
    let out = Command::new("python3")
        .args(["-c", PARSE])
        .arg(text_file)
        .output()
        .expect("run python3");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "prometheus_client refused the text: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut families = BTreeMap::new();
    let mut current = String::new();
    for line in printed.lines() {
        let mut words = line.splitn(4, ' ');
        match (words.next(), words.next(), words.next(), words.next()) {
            (Some("FAMILY"), Some(name), Some(kind), help) => {
                current = name.to_owned();
                let family = Family {
                    kind: kind.to_owned(),
                    help: help.unwrap_or("").to_owned(),
                    ..Default::default()
                };
                families.insert(current.clone(), family);
            }
            (Some("SAMPLE"), Some(name), Some(labels), Some(value)) => {
                let family = families
                    .get_mut(&current)
                    .expect("a sample after its family");
                let value = value.parse().expect("a float");
                let key = if labels == "{}" {
                    name.to_owned()
                } else {
                    format!("{name}{labels}")
                };
                family.samples.insert(key, value);
            }
            _ => panic!("unexpected line {line:?}"),
        }
    }
    families
}

fn python_has_prometheus_client(test: &str) -> bool {
    tool_works(test, "python3", &["-c", "import prometheus_client.parser"])
}

#[test]
fn metrics_parse_as_prometheus_text_and_match_the_stats_file() {
    let test = "metrics_parse_as_prometheus_text_and_match_the_stats_file";
    if !bpf_available(test)
        || !tool_works(test, "curl", &["--version"])
        || !python_has_prometheus_client(test)
    {
        return;
    }
    let dir = scratch("metrics");
    let stats_file = dir.join("stats.json");
    // Something to sample: an idle machine gives a window no samples.
    let _busy = Guard::spawn(Command::new("sh").args(["-c", "while :; do :; done"]));
    let receiver = Receiver::start(vec![]);
    let extra = [
        "--metrics",
        "127.0.0.1:0",
        "--stats-json",
        stats_file.to_str().unwrap(),
    ];
    let mut daemon = Daemon::sending_to(&dir, &receiver.url(), &extra);
    let log = daemon.wait_for_log("info: serving metrics on http://", daemon_support::READY);
    let url = log
        .split("serving metrics on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the metrics URL")
        .to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "loopback: {url}");
    daemon.wait_ready();
    let until = Instant::now() + Duration::from_secs(60);
    // The file holds `{}` until the first window.
    let windows = || {
        let json = stats(&stats_file);
        json.iter()
            .find(|(n, _)| n == "windows")
            .map_or(0.0, |(_, v)| *v)
    };
    while windows() < 2.0 {
        assert!(
            Instant::now() < until,
            "no second window:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let text_file = dir.join("metrics.txt");
    let curl = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-o"])
        .arg(&text_file)
        .arg(&url)
        .output()
        .expect("run curl");
    assert!(
        curl.status.success(),
        "{}",
        String::from_utf8_lossy(&curl.stderr)
    );
    let json = stats(&stats_file);
    let families = parse_with_prometheus_client(&text_file);
    let wanted = [
        ("profiler_samples", "counter"),
        ("profiler_samples_lost", "counter"),
        ("profiler_unwind_walks", "counter"),
        ("profiler_map_writes", "counter"),
        ("profiler_map_delete_errors", "counter"),
        ("profiler_stale_pid_entries", "gauge"),
        ("profiler_syncs", "counter"),
        ("profiler_exports", "counter"),
        ("profiler_export_queue_depth", "gauge"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_cpu_seconds", "counter"),
    ];
    for (name, kind) in wanted {
        let family = families
            .get(name)
            .unwrap_or_else(|| panic!("no {name}: {families:?}"));
        assert_eq!(family.kind, kind, "{name}");
        assert!(!family.samples.is_empty(), "{name} has no sample");
    }
    for (name, family) in &families {
        assert!(family.help.len() > 10, "{name} has no HELP");
        assert!(
            ["counter", "gauge"].contains(&family.kind.as_str()),
            "{name}"
        );
    }
    let value = |family: &str, sample: &str| families[family].samples[sample];
    assert_eq!(
        value(
            "profiler_map_delete_errors",
            "profiler_map_delete_errors_total"
        ),
        stat(&json, "map_delete_errors")
    );
    assert_eq!(
        value("profiler_stale_pid_entries", "profiler_stale_pid_entries"),
        stat(&json, "stale_pid_entries")
    );
    assert!(value("profiler_samples", "profiler_samples_total") > 0.0);
    // (Whether the maintainer wrote entries yet depends on the machine: processes that first
    // sight unwinds whole are never synced.)
    assert!(families["profiler_map_writes"]
        .samples
        .contains_key("profiler_map_writes_total{kind=update}"));
    assert!(
        value(
            "process_resident_memory_bytes",
            "process_resident_memory_bytes"
        ) > 1e6
    );
    assert!(value("process_cpu_seconds", "process_cpu_seconds_total") > 0.0);
    let not_found = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
        ])
        .arg(url.replace("/metrics", "/other"))
        .output()
        .expect("run curl");
    assert_eq!(String::from_utf8_lossy(&not_found.stdout), "404");

    // Last words: the final log line, written after the exporter's shutdown, and the stats
    // file agree with each other and with what the collector received.
    let log = daemon.stop();
    let last = log.lines().last().unwrap_or("");
    let json = stats(&stats_file);
    let delivered = stat(&json, "export_delivered");
    let windows = stat(&json, "windows");
    assert!(last.contains("info: stopped: "), "{log}");
    assert!(
        last.contains(&format!("windows {windows}: ")),
        "{last} vs {windows}"
    );
    assert!(
        last.contains(&format!("exports delivered {delivered}, ")),
        "{last}"
    );
    assert_eq!(delivered, windows, "every window delivered:\n{log}");
    assert_eq!(receiver.requests().len() as f64, delivered);
}
