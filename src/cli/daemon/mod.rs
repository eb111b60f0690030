//! `profiler daemon`: continuous profiling. One profile per interval, sent as OTLP/HTTP to a
//! collector (through the exporter thread, which retries and queues), and/or written to a
//! directory with a size cap; periodic counters in the log and, with `--metrics`, on a
//! Prometheus endpoint; readiness told to systemd; SIGHUP re-reads the header file and reopens
//! the output directory; SIGTERM/SIGINT end it cleanly with the last partial window delivered,
//! and the last log line and stats file written after that, so they agree.
//!
//! The settings (flags over the `OTEL_*` environment) are `plan.rs`; the window files
//! `output_dir.rs`.

mod output_dir;
mod plan;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use argh::FromArgs;

use super::{exit, Fatal};
use crate::encode::otlp::{self, OtlpContext};
use crate::exporter::otel_env::OtelEnv;
use crate::exporter::Exporter;
use crate::metrics::{exposition, MetricsServer};
use crate::output_file::write_atomically;
use crate::process::targets::Targets;
use crate::profile::Profile;
use crate::sampler::Target;
use crate::session::{Session, SessionConfig};
use crate::stats::Stats;
use crate::sys::{notify, process, signal};
use output_dir::OutputDir;
use plan::Plan;

/// How long the last window may take to reach the collector after a stop signal.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);
/// How long the last window waits for unwind tables still being built.
const SHUTDOWN_SETTLE: Duration = Duration::from_secs(1);

#[derive(FromArgs, Debug)]
/// Profile continuously and export a profile per interval to an OpenTelemetry collector
/// (OTLP/HTTP) and/or to files. Reads the OTEL_EXPORTER_OTLP_* environment; flags override it.
#[argh(subcommand, name = "daemon")]
pub struct DaemonArgs {
    /// collector base URL; profiles are POSTed to URL/v1development/profiles (default:
    /// OTEL_EXPORTER_OTLP_ENDPOINT, else http://localhost:4318)
    #[argh(option)]
    pub endpoint: Option<String>,

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

    /// keep only processes whose thread or executable has this name (repeatable)
    #[argh(option)]
    pub comm: Vec<String>,

    /// keep only processes in this cgroup or below it, e.g. /system.slice (repeatable)
    #[argh(option)]
    pub cgroup: Vec<String>,

    /// extra HTTP header KEY=VALUE for every export (repeatable; visible in ps: prefer
    /// --header-file or OTEL_EXPORTER_OTLP_HEADERS for credentials)
    #[argh(option)]
    pub header: Vec<String>,

    /// read extra headers from FILE, one KEY: VALUE per line; it must not be readable by
    /// group or others; re-read on SIGHUP
    #[argh(option)]
    pub header_file: Option<PathBuf>,

    /// gzip request bodies (Content-Encoding: gzip; default: OTEL_EXPORTER_OTLP_COMPRESSION)
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

    /// service.name of the exported profiles (default: OTEL_SERVICE_NAME, else profiler)
    #[argh(option)]
    pub service_name: Option<String>,

    /// write the counters as JSON to FILE after every window and at exit
    #[argh(option)]
    pub stats_json: Option<PathBuf>,

    /// serve the counters in the Prometheus text format at http://ADDR/metrics; ADDR is PORT
    /// (on 127.0.0.1) or IP:PORT
    #[argh(option)]
    pub metrics: Option<String>,
}

/// Runs the daemon until a stop signal; returns the exit code.
pub fn run(args: DaemonArgs) -> Result<i32, Fatal> {
    crate::log::show_info();
    let env = OtelEnv::from_process().map_err(Fatal::usage)?;
    let plan = plan::plan(args, env)?;
    if let Some(dir) = &plan.output_dir {
        reopen_output_dir(dir)?;
    }
    super::prepare_to_profile()?;
    signal::install_reload_handler()
        .map_err(|e| Fatal::failure(format!("cannot install the SIGHUP handler: {e}")))?;

    let stats = Arc::new(Stats::default());
    let exporter = match plan.transport.clone() {
        Some(config) => Some(Arc::new(
            Exporter::start(config, stats.clone())
                .map_err(|e| Fatal::failure(format!("cannot start the exporter: {e}")))?,
        )),
        None => None,
    };
    let metrics = match plan.metrics {
        Some(addr) => Some(start_metrics(addr, stats.clone())?),
        None => None,
    };
    let sink = window_sink(&plan, exporter.clone(), stats.clone());
    let config = SessionConfig {
        target: plan.target.clone(),
        frequency_hz: plan.frequency_hz,
        window: Some(plan.interval),
        filter: plan.filter.clone(),
    };
    let mut session =
        Session::load(&config, stats.clone(), sink).map_err(super::record::load_error)?;
    session.start().map_err(super::record::load_error)?;
    let what = match &plan.target {
        Target::System => "the whole system".to_string(),
        Target::Pids(pids) => format!("PIDs {pids:?}"),
    };
    crate::log::info(&format!(
        "profiling {what} at {} Hz, a profile every {} s to {}",
        plan.frequency_hz,
        plan.interval.as_secs(),
        describe_outputs(&plan, exporter.as_deref()),
    ));
    tell_systemd(&format!("READY=1\nSTATUS=profiling {what}"));

    let reason = wait_for_stop(&plan, &session, exporter.as_deref());
    tell_systemd(&format!("STOPPING=1\nSTATUS={reason}"));
    crate::log::info(&format!("{reason}: flushing the last window"));
    // Systemd waits for a stopping daemon; the last window should not wait on tables long.
    let finished = session.finish(SHUTDOWN_SETTLE);
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
    if let Some(metrics) = metrics {
        metrics.stop();
    }
    // Last words, after everything has ended: the log line and the stats file agree.
    write_stats(plan.stats_json.as_deref(), &stats);
    crate::log::info(&format!("stopped: {}", counters_line(&stats)));
    Ok(code)
}

fn start_metrics(addr: std::net::SocketAddr, stats: Arc<Stats>) -> Result<MetricsServer, Fatal> {
    let render = Box::new(move || exposition::render(&stats, process::own_usage().ok()));
    let server = MetricsServer::start(addr, render)
        .map_err(|e| Fatal::failure(format!("cannot serve metrics on {addr}: {e}")))?;
    crate::log::info(&format!(
        "serving metrics on http://{}/metrics",
        server.local_addr()
    ));
    Ok(server)
}

/// Tells systemd (when it started us with `Type=notify`); a failure is only logged.
fn tell_systemd(state: &str) {
    if let Err(err) = notify::notify(state) {
        crate::log::warn(&format!("cannot notify systemd: {err}"));
    }
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
    let resource_attributes = plan.resource_attributes.clone();
    let mut output = plan.output_dir.clone().map(|dir| OutputDir {
        dir,
        max_bytes: plan.max_dir_bytes,
        sequence: 0,
    });
    let stats_json = plan.stats_json.clone();
    move |profile: Profile| {
        Stats::inc(&stats.windows);
        let mut ctx = OtlpContext::for_profile(&profile, &service);
        ctx.resource_attributes.clone_from(&resource_attributes);
        if let Some(exporter) = &exporter {
            exporter.submit(otlp::encode_request(&profile, &ctx));
        }
        if let Some(output) = output.as_mut() {
            output.write(&profile, &ctx, &stats);
        }
        write_stats(stats_json.as_deref(), &stats);
        crate::log::info(&counters_line(&stats));
    }
}

/// The counters a log line shows.
fn counters_line(stats: &Stats) -> String {
    let get = |c: &std::sync::atomic::AtomicU64| Stats::get(c);
    let lost = get(&stats.samples_lost)
        + get(&stats.samples_send_failed)
        + get(&stats.samples_queue_dropped);
    let later = get(&stats.samples_completed_later);
    format!(
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
    )
}

fn write_stats(path: Option<&Path>, stats: &Stats) {
    if let Some(path) = path {
        if let Err(err) = write_atomically(path, stats.to_json(&[]).as_bytes()) {
            crate::log::warn(&format!("cannot write {}: {err}", path.display()));
        }
    }
}

/// Creates the output directory if needed and removes the temporary files of a killed run.
fn reopen_output_dir(dir: &Path) -> Result<(), Fatal> {
    let removed = output_dir::open(dir)?;
    if removed > 0 {
        crate::log::info(&format!(
            "removed {removed} temporary files a stopped run left in {}",
            dir.display()
        ));
    }
    Ok(())
}

/// SIGHUP: re-reads the header file and reopens the output directory. What fails is logged
/// (without header values) and the previous state kept.
fn reload(plan: &Plan, exporter: Option<&Exporter>) {
    tell_systemd(&format!(
        "RELOADING=1\nMONOTONIC_USEC={}",
        notify::monotonic_usec()
    ));
    let mut done = Vec::new();
    if let (Some(path), Some(exporter)) = (&plan.header_file, exporter) {
        match plan.headers().and_then(|h| exporter.set_headers(h)) {
            Ok(()) => done.push(format!("re-read {}", path.display())),
            Err(err) => crate::log::error(&format!("SIGHUP: keeping the previous headers: {err}")),
        }
    }
    if let Some(dir) = &plan.output_dir {
        match reopen_output_dir(dir) {
            Ok(()) => done.push(format!("reopened {}", dir.display())),
            Err(err) => crate::log::error(&format!("SIGHUP: {}", err.message)),
        }
    }
    if done.is_empty() {
        done.push("nothing to reload".into());
    }
    crate::log::info(&format!("SIGHUP: {}", done.join(", ")));
    tell_systemd("READY=1");
}

/// Waits for a stop signal (or the end of every target), reloading on SIGHUP and refreshing
/// the BPF-side counters once per interval so the windows' log lines and stats files show them.
fn wait_for_stop(plan: &Plan, session: &Session, exporter: Option<&Exporter>) -> String {
    let mut last_counters = Instant::now();
    let mut targets = match &plan.target {
        Target::Pids(pids) => Some(Targets::new(pids)),
        _ => None,
    };
    loop {
        // A signal, a target's end (its pidfd) or the poller stopping ends the wait at once;
        // otherwise nothing needs the main thread before the next counters refresh.
        let refresh = plan.interval.saturating_sub(last_counters.elapsed());
        let check = targets
            .as_ref()
            .and_then(Targets::probe_interval)
            .map_or(refresh, |probe| probe.min(refresh));
        let fds = targets.as_ref().map(Targets::fds).unwrap_or_default();
        if let Some(sig) = signal::wait_or(check, &fds) {
            return format!("{} received", process::signal_name(sig));
        }
        if signal::take_reload() {
            reload(plan, exporter);
        }
        if session.poller_failed() {
            return "reading samples failed".to_string();
        }
        if targets.as_mut().is_some_and(Targets::refresh) {
            return "every target process exited".to_string();
        }
        if last_counters.elapsed() >= plan.interval {
            session.refresh_counters();
            last_counters = Instant::now();
        }
    }
}
