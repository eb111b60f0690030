//! The session's counters in the Prometheus text exposition format (version 0.0.4): a `# HELP`
//! and a `# TYPE` line for each family, then its samples. Names follow Prometheus' conventions:
//! `profiler_` prefix, counters ending in `_total`, outcomes as a label, and the standard
//! `process_resident_memory_bytes` and `process_cpu_seconds_total`.

use std::fmt::Write as _;
use std::sync::atomic::AtomicU64;

use crate::stats::{format_number, Stats};

/// The `Content-Type` of [`render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

struct Text(String);

impl Text {
    /// One family: `samples` are (label value, value), the label named `label` (none when
    /// `label` is empty).
    fn family(&mut self, name: &str, kind: Kind, help: &str, label: &str, samples: &[(&str, f64)]) {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (label_value, value) in samples {
            let value = format_number(*value);
            if label.is_empty() {
                let _ = writeln!(self.0, "{name} {value}");
            } else {
                let _ = writeln!(self.0, "{name}{{{label}=\"{label_value}\"}} {value}");
            }
        }
    }

    fn one(&mut self, name: &str, kind: Kind, help: &str, value: f64) {
        self.family(name, kind, help, "", &[("", value)]);
    }
}

/// The exposition of `stats`, with this process's resident memory (bytes) and CPU time
/// (seconds) when known.
pub fn render(stats: &Stats, usage: Option<(u64, f64)>) -> String {
    use Kind::{Counter, Gauge};
    let v = |counter: &AtomicU64| Stats::get(counter) as f64;
    let s = stats;
    let mut t = Text(String::new());
    t.one(
        "profiler_samples_total",
        Counter,
        "Stack samples received from the kernel.",
        v(&s.samples),
    );
    t.family(
        "profiler_samples_lost_total",
        Counter,
        "Samples lost before aggregation, by where.",
        "reason",
        &[
            ("perf_ring_full", v(&s.samples_lost)),
            ("bpf_send_failed", v(&s.samples_send_failed)),
            ("reporter_queue_full", v(&s.samples_queue_dropped)),
        ],
    );
    t.one(
        "profiler_samples_filtered_total",
        Counter,
        "Samples of processes the --comm/--cgroup filter left out.",
        v(&s.samples_filtered),
    );
    t.family(
        "profiler_unwind_walks_total",
        Counter,
        "User stack walks in the kernel, by how they ended.",
        "outcome",
        &[
            ("outermost", v(&s.unwind_outermost)),
            ("frame_pointer_end", v(&s.unwind_fp_end)),
            ("no_mapping", v(&s.unwind_no_mapping)),
            ("no_info", v(&s.unwind_no_info)),
            ("bad_cfa", v(&s.unwind_bad_cfa)),
            ("read_fault", v(&s.unwind_read_fault)),
            ("depth_limit", v(&s.unwind_depth_limit)),
            ("unsupported", v(&s.unwind_unsupported)),
        ],
    );
    t.one(
        "profiler_samples_completed_later_total",
        Counter,
        "Walks cut in the kernel and finished in user space to the outermost frame.",
        v(&s.samples_completed_later),
    );
    t.family(
        "profiler_map_writes_total",
        Counter,
        "Writes to the per-process mapping map, by kind.",
        "kind",
        &[("update", v(&s.map_updates)), ("delete", v(&s.map_deletes))],
    );
    t.one(
        "profiler_map_delete_absent_total",
        Counter,
        "Deletes skipped because the key was already absent.",
        v(&s.map_delete_absent),
    );
    t.one(
        "profiler_map_delete_errors_total",
        Counter,
        "Failed map deletes; must stay 0.",
        v(&s.map_delete_errors),
    );
    t.one(
        "profiler_map_update_errors_total",
        Counter,
        "Failed map updates.",
        v(&s.map_update_errors),
    );
    t.one(
        "profiler_map_full_evictions_total",
        Counter,
        "Processes whose map entries were dropped because the map was full.",
        v(&s.map_full_evictions),
    );
    t.one(
        "profiler_pid_map_entries",
        Gauge,
        "Entries in the per-process mapping map at the last audit.",
        v(&s.pid_map_entries),
    );
    t.one(
        "profiler_pid_map_capacity",
        Gauge,
        "Capacity of the per-process mapping map.",
        v(&s.pid_map_capacity),
    );
    t.one(
        "profiler_stale_pid_entries",
        Gauge,
        "Map entries no live process owns at the last audit; must be 0.",
        v(&s.stale_pid_entries),
    );
    t.one(
        "profiler_missing_pid_entries",
        Gauge,
        "Map entries live processes need that the map lacked at the last audit.",
        v(&s.missing_pid_entries),
    );
    t.one(
        "profiler_leaked_files",
        Gauge,
        "Files with inconsistent reference counts; must be 0.",
        v(&s.leaked_files),
    );
    t.one(
        "profiler_syncs_total",
        Counter,
        "Reads of /proc/PID/maps applied to the map.",
        v(&s.syncs),
    );
    t.one(
        "profiler_sync_failures_total",
        Counter,
        "Syncs that failed (process gone, permission).",
        v(&s.sync_failures),
    );
    t.one(
        "profiler_processes_seen_total",
        Counter,
        "Distinct processes seen.",
        v(&s.pids_seen),
    );
    t.one(
        "profiler_windows_total",
        Counter,
        "Profile windows cut.",
        v(&s.windows),
    );
    t.family(
        "profiler_exports_total",
        Counter,
        "Windows sent to the collector, by how they ended.",
        "outcome",
        &[
            ("delivered", v(&s.export_delivered)),
            ("rejected", v(&s.export_rejected)),
            ("dropped", v(&s.export_dropped)),
        ],
    );
    t.one(
        "profiler_export_retries_total",
        Counter,
        "OTLP/HTTP requests that were retries.",
        v(&s.export_retries),
    );
    t.one(
        "profiler_export_bytes_total",
        Counter,
        "Bytes sent in delivered requests (after gzip).",
        v(&s.export_bytes),
    );
    t.one(
        "profiler_export_queue_depth",
        Gauge,
        "Windows waiting for the collector, counting the one being sent.",
        v(&s.export_queue_depth),
    );
    t.family(
        "profiler_output_files_total",
        Counter,
        "Window files of --output-dir, by what became of them.",
        "outcome",
        &[
            ("written", v(&s.output_files_written)),
            ("failed", v(&s.output_files_failed)),
            ("rotated", v(&s.output_files_rotated)),
        ],
    );
    if let Some((rss, cpu)) = usage {
        t.one(
            "process_resident_memory_bytes",
            Gauge,
            "Resident memory size in bytes.",
            rss as f64,
        );
        t.one(
            "process_cpu_seconds_total",
            Counter,
            "Total user and system CPU time spent in seconds.",
            cpu,
        );
    }
    t.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_has_help_and_type_then_its_samples() {
        let stats = Stats::default();
        Stats::add(&stats.samples, 42);
        Stats::add(&stats.export_delivered, 3);
        Stats::set(&stats.stale_pid_entries, 2);
        let text = render(&stats, Some((4096, 1.25)));
        assert!(text.contains("# HELP profiler_samples_total Stack samples"));
        assert!(text.contains("# TYPE profiler_samples_total counter\nprofiler_samples_total 42\n"));
        assert!(text.contains("profiler_exports_total{outcome=\"delivered\"} 3\n"));
        assert!(text
            .contains("# TYPE profiler_stale_pid_entries gauge\nprofiler_stale_pid_entries 2\n"));
        assert!(text.contains("process_cpu_seconds_total 1.250000\n"));
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if let Some(name) = line
                .strip_prefix("# TYPE ")
                .and_then(|l| l.split(' ').next())
            {
                assert!(
                    lines[i - 1].starts_with(&format!("# HELP {name} ")),
                    "{name}"
                );
                assert!(lines[i + 1].starts_with(name), "{name} has a sample");
                let counter = line.ends_with(" counter");
                assert_eq!(counter, name.ends_with("_total"), "{name}");
            }
        }
        assert!(!render(&stats, None).contains("process_"));
    }
}
