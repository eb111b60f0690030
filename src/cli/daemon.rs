//! `profiler daemon`: continuous profiling. One profile per interval, sent as OTLP/HTTP to a
//! collector (through the exporter thread, which retries and queues), and/or written to a
//! directory with a size cap; periodic counters in the log; SIGTERM/SIGINT end it cleanly with
//! the last partial window delivered.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argh::FromArgs;

use super::{exit, Fatal};
use crate::encode::otlp::{self, OtlpContext};
use crate::encode::SERVICE_NAME;
use crate::exporter::{Exporter, TransportConfig};
use crate::output_file::write_atomically;
use crate::profile::Profile;
use crate::sampler::Target;
use crate::session::{Session, SessionConfig};
use crate::stats::Stats;
use crate::sys::{process, signal};

/// How long the last window may take to reach the collector after a stop signal.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

#[derive(FromArgs, Debug)]
/// Profile continuously and export a profile per interval to an OpenTelemetry collector
/// (OTLP/HTTP) and/or to files.
#[argh(subcommand, name = "daemon")]
pub struct DaemonArgs {
    /// collector base URL; profiles are POSTed to URL/v1development/profiles (default
    /// http://localhost:4318)
    #[argh(option, default = "String::from(\"http://localhost:4318\")")]
    pub endpoint: String,

    /// do not send to a collector (use with --output-dir)
    #[argh(switch)]
    pub no_endpoint: bool,

    /// seconds per profile window, 1 to 3600 (default 10)
    #[argh(option, default = "10")]
    pub interval: u64,

    /// sampling frequency in Hz per CPU, 1 to 10000 (default 19)
    #[argh(option, short = 'F', default = "19")]
    pub frequency: u64,

    /// profile only this process and the processes it starts (repeatable)
    #[argh(option, short = 'p')]
    pub pid: Vec<u32>,

    /// extra HTTP header KEY=VALUE for every export, e.g. for authentication (repeatable)
    #[argh(option)]
    pub header: Vec<String>,

    /// gzip request bodies (Content-Encoding: gzip)
    #[argh(switch)]
    pub gzip: bool,

    /// windows kept for the collector while it is unreachable; the oldest is dropped first
    /// (default 16)
    #[argh(option, default = "16")]
    pub queue: usize,

    /// also write each window to DIR as an OTLP ProfilesData file
    #[argh(option)]
    pub output_dir: Option<PathBuf>,

    /// size cap of --output-dir in MiB; the oldest files are deleted beyond it (default 256)
    #[argh(option, default = "256")]
    pub max_dir_size: u64,

    /// service.name of the exported profiles (default profiler)
    #[argh(option, default = "String::from(SERVICE_NAME)")]
    pub service_name: String,

    /// write the counters as JSON to FILE after every window and at exit
    #[argh(option)]
    pub stats_json: Option<PathBuf>,
}

/// Validated settings.
struct Plan {
    target: Target,
    frequency_hz: u64,
    interval: Duration,
    transport: Option<TransportConfig>,
    output_dir: Option<PathBuf>,
    max_dir_bytes: u64,
    service_name: String,
    stats_json: Option<PathBuf>,
}

fn plan(args: DaemonArgs) -> Result<Plan, Fatal> {
    super::record::check_frequency(args.frequency)?;
    if args.interval == 0 || args.interval > 3600 {
        return Err(Fatal::usage(format!(
            "invalid interval {} s: must be between 1 and 3600",
            args.interval
        )));
    }
    if args.max_dir_size == 0 {
        return Err(Fatal::usage("--max-dir-size must be at least 1 (MiB)"));
    }
    if args.queue == 0 {
        return Err(Fatal::usage("--queue must be at least 1"));
    }
    for &pid in &args.pid {
        if pid == 0 || !process::exists(pid) {
            return Err(Fatal::usage(format!("no process with PID {pid}")));
        }
    }
    let transport = if args.no_endpoint {
        None
    } else {
        let mut config = TransportConfig::new(args.endpoint.clone());
        config.gzip = args.gzip;
        config.queue_capacity = args.queue;
        for header in &args.header {
            let (key, value) = header.split_once('=').ok_or_else(|| {
                Fatal::usage(format!("invalid --header {header:?}: expected KEY=VALUE"))
            })?;
            config
                .headers
                .push((key.trim().to_string(), value.trim().to_string()));
        }
        config
            .validate()
            .map_err(|e| Fatal::usage(format!("invalid --endpoint or --header: {e}")))?;
        Some(config)
    };
    if transport.is_none() && args.output_dir.is_none() {
        return Err(Fatal::usage(
            "--no-endpoint needs --output-dir: profiles would go nowhere",
        ));
    }
    if let Some(dir) = &args.output_dir {
        check_writable_dir(dir)?;
    }
    if let Some(path) = &args.stats_json {
        write_atomically(path, b"{}\n")
            .map_err(|e| Fatal::usage(format!("cannot write {}: {e}", path.display())))?;
    }
    Ok(Plan {
        target: if args.pid.is_empty() {
            Target::System
        } else {
            Target::Pids(args.pid)
        },
        frequency_hz: args.frequency,
        interval: Duration::from_secs(args.interval),
        transport,
        output_dir: args.output_dir,
        max_dir_bytes: args.max_dir_size.saturating_mul(1 << 20),
        service_name: args.service_name,
        stats_json: args.stats_json,
    })
}

fn check_writable_dir(dir: &Path) -> Result<(), Fatal> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Fatal::usage(format!("cannot create {}: {e}", dir.display())))?;
    let probe = dir.join(format!(".profiler-probe-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .map_err(|e| Fatal::usage(format!("cannot write in {}: {e}", dir.display())))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// Writes windows into a directory and keeps it under a size cap.
struct OutputDir {
    dir: PathBuf,
    max_bytes: u64,
    sequence: u64,
}

impl OutputDir {
    fn write(&mut self, profile: &Profile, ctx: &OtlpContext, stats: &Stats) {
        let stamp = crate::log::rfc3339(profile.start_unix_ns / 1_000_000_000).replace(':', "");
        self.sequence += 1;
        let path = self
            .dir
            .join(format!("profile-{stamp}-{:06}.otlp", self.sequence));
        let mut bytes = Vec::new();
        let written =
            otlp::write(profile, ctx, &mut bytes).and_then(|()| write_atomically(&path, &bytes));
        match written {
            Ok(()) => Stats::inc(&stats.output_files_written),
            Err(err) => {
                Stats::inc(&stats.output_files_failed);
                crate::log::warn(&format!("cannot write {}: {err}", path.display()));
            }
        }
        self.rotate(stats);
    }

    /// Deletes the oldest profile files while the directory is over its cap.
    fn rotate(&self, stats: &Stats) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut files: Vec<(String, u64)> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let is_ours = name.starts_with("profile-") && name.ends_with(".otlp");
                is_ours.then(|| (name, e.metadata().map(|m| m.len()).unwrap_or(0)))
            })
            .collect();
        files.sort();
        let mut total: u64 = files.iter().map(|(_, len)| len).sum();
        for (name, len) in files {
            if total <= self.max_bytes {
                break;
            }
            if std::fs::remove_file(self.dir.join(&name)).is_ok() {
                total -= len;
                Stats::inc(&stats.output_files_rotated);
            }
        }
    }
}

/// Runs the daemon until a stop signal; returns the exit code.
pub fn run(args: DaemonArgs) -> Result<i32, Fatal> {
    crate::log::show_info();
    let plan = plan(args)?;
    super::prepare_to_profile()?;

    let stats = Arc::new(Stats::default());
    let exporter = match plan.transport.clone() {
        Some(config) => Some(Arc::new(
            Exporter::start(config, stats.clone())
                .map_err(|e| Fatal::failure(format!("cannot start the exporter: {e}")))?,
        )),
        None => None,
    };
    let sink = window_sink(&plan, exporter.clone(), stats.clone());
    let config = SessionConfig {
        target: plan.target.clone(),
        frequency_hz: plan.frequency_hz,
        window: Some(plan.interval),
    };
    let mut session =
        Session::load(&config, stats.clone(), sink).map_err(super::record::load_error)?;
    session.start().map_err(super::record::load_error)?;
    crate::log::info(&format!(
        "profiling {} at {} Hz, a profile every {} s to {}",
        match &plan.target {
            Target::System => "the whole system".to_string(),
            Target::Pids(pids) => format!("PIDs {pids:?}"),
        },
        plan.frequency_hz,
        plan.interval.as_secs(),
        describe_outputs(&plan, exporter.as_deref()),
    ));

    let reason = wait_for_stop(&plan, &session);
    crate::log::info(&format!("{reason}: flushing the last window"));
    let finished = session.finish();
    let mut code = exit::OK;
    if let Err(err) = finished {
        crate::log::error(&format!("{err}"));
        code = exit::FAILURE;
    }
    if let Some(exporter) = exporter.and_then(|e| Arc::try_unwrap(e).ok()) {
        let report = exporter.shutdown(SHUTDOWN_DEADLINE);
        if report.dropped > 0 || report.rejected > 0 {
            crate::log::warn(&format!(
                "at exit: {} windows delivered, {} rejected, {} dropped",
                report.delivered, report.rejected, report.dropped
            ));
        }
    }
    write_stats(plan.stats_json.as_deref(), &stats);
    Ok(code)
}

fn describe_outputs(plan: &Plan, exporter: Option<&Exporter>) -> String {
    let mut outputs = Vec::new();
    if let Some(exporter) = exporter {
        outputs.push(exporter.url().to_string());
    }
    if let Some(dir) = &plan.output_dir {
        outputs.push(dir.display().to_string());
    }
    outputs.join(" and ")
}

/// What the reporter does with each window: OTLP to the exporter's queue, a file, the stats.
fn window_sink(
    plan: &Plan,
    exporter: Option<Arc<Exporter>>,
    stats: Arc<Stats>,
) -> impl FnMut(Profile) + Send + 'static {
    let service = plan.service_name.clone();
    let mut output = plan.output_dir.clone().map(|dir| OutputDir {
        dir,
        max_bytes: plan.max_dir_bytes,
        sequence: 0,
    });
    let stats_json = plan.stats_json.clone();
    let last_log = Mutex::new(Instant::now());
    move |profile: Profile| {
        Stats::inc(&stats.windows);
        let ctx = OtlpContext::for_profile(&profile, &service);
        if let Some(exporter) = &exporter {
            exporter.submit(otlp::encode_request(&profile, &ctx));
        }
        if let Some(output) = output.as_mut() {
            output.write(&profile, &ctx, &stats);
        }
        write_stats(stats_json.as_deref(), &stats);
        if let Ok(mut last) = last_log.lock() {
            *last = Instant::now();
        }
        log_counters(&stats);
    }
}

fn log_counters(stats: &Stats) {
    let get = |c: &std::sync::atomic::AtomicU64| Stats::get(c);
    let lost = get(&stats.samples_lost)
        + get(&stats.samples_send_failed)
        + get(&stats.samples_queue_dropped);
    let later = get(&stats.samples_completed_later);
    crate::log::info(&format!(
        "windows {}: samples {}, lost {}, user stacks complete in the kernel {}, completed later \
         {later}, cut {}, processes synced {}, map entries {}, exports delivered {}, retried {}, \
         rejected {}, dropped {}, bytes {}",
        get(&stats.windows),
        get(&stats.samples),
        lost,
        get(&stats.unwind_outermost) + get(&stats.unwind_fp_end),
        (get(&stats.unwind_no_mapping).saturating_sub(later))
            + get(&stats.unwind_no_info)
            + get(&stats.unwind_bad_cfa)
            + get(&stats.unwind_read_fault)
            + get(&stats.unwind_depth_limit)
            + get(&stats.unwind_unsupported),
        get(&stats.pids_seen),
        get(&stats.pid_map_entries),
        get(&stats.export_delivered),
        get(&stats.export_retries),
        get(&stats.export_rejected),
        get(&stats.export_dropped),
        get(&stats.export_bytes),
    ));
}

fn write_stats(path: Option<&Path>, stats: &Stats) {
    if let Some(path) = path {
        if let Err(err) = write_atomically(path, stats.to_json(&[]).as_bytes()) {
            crate::log::warn(&format!("cannot write {}: {err}", path.display()));
        }
    }
}

/// Waits for a stop signal (or the end of every target), refreshing the BPF-side counters once
/// per interval so the windows' log lines and stats files show them.
fn wait_for_stop(plan: &Plan, session: &Session) -> String {
    let mut last_counters = Instant::now();
    loop {
        // A signal or the poller stopping ends the wait at once; target processes are looked
        // at a few times a second, nothing else needs the main thread sooner.
        let check = match plan.target {
            Target::Pids(_) => Duration::from_millis(250),
            _ => Duration::from_secs(1),
        };
        if let Some(sig) = signal::wait(check) {
            return format!("{} received", process::signal_name(sig));
        }
        if session.poller_failed() {
            return "reading samples failed".to_string();
        }
        if let Target::Pids(pids) = &plan.target {
            if pids.iter().all(|&pid| !process::exists(pid)) {
                return "every target process exited".to_string();
            }
        }
        if last_counters.elapsed() >= plan.interval {
            session.refresh_counters();
            last_counters = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> DaemonArgs {
        DaemonArgs::from_args(&["daemon"], list).unwrap()
    }

    #[test]
    fn defaults_and_validation() {
        let p = plan(args(&[])).unwrap();
        assert_eq!((p.frequency_hz, p.interval), (19, Duration::from_secs(10)));
        assert_eq!(
            p.transport.unwrap().url(),
            "http://localhost:4318/v1development/profiles"
        );
        for bad in [
            &["-F", "0"][..],
            &["--interval", "0"],
            &["--endpoint", "ftp://x"],
            &["--header", "novalue"],
            &["--no-endpoint"],
            &["--queue", "0"],
            &["-p", "99999999"],
        ] {
            let err = plan(args(bad)).err().unwrap();
            assert_eq!(err.code, exit::USAGE, "{bad:?}: {}", err.message);
        }
    }

    #[test]
    fn output_dir_rotation_keeps_the_newest_under_the_cap() {
        let dir = std::env::temp_dir().join(format!("profiler-rotate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..5 {
            std::fs::write(dir.join(format!("profile-{i}.otlp")), vec![0u8; 1000]).unwrap();
        }
        std::fs::write(dir.join("unrelated.txt"), vec![0u8; 5000]).unwrap();
        let stats = Stats::default();
        OutputDir {
            dir: dir.clone(),
            max_bytes: 2500,
            sequence: 0,
        }
        .rotate(&stats);
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            vec!["profile-3.otlp", "profile-4.otlp", "unrelated.txt"]
        );
        assert_eq!(Stats::get(&stats.output_files_rotated), 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
