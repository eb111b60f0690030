//! `profiler record`: one profiling session of the whole system, some PIDs, or a command, written
//! to a file, with a summary on stderr.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::Arc;
use std::time::{Duration, Instant};

use argh::FromArgs;

use crate::output_file::PendingFile;

use super::progress::Progress;
use super::{exit, Fatal};
use crate::encode::otlp::{self, OtlpContext};
use crate::encode::{folded, write_profile, OutputFormat};
use crate::exporter::{Exporter, TransportConfig};
use crate::process::targets::Targets;
use crate::profile::Profile;
use crate::sampler::Target;
use crate::session::{Session, SessionConfig};
use crate::stats::Stats;
use crate::summary;
use crate::sys::{process, signal};

/// Highest sampling frequency accepted.
pub const MAX_FREQUENCY_HZ: u64 = 10_000;
const DEFAULT_OUTPUT: &str = "profile.folded";

#[derive(FromArgs, Debug)]
/// Record a CPU profile of the whole system, of some processes (-p), or of a command and its
/// children (-- CMD ARGS...), and write it to a file.
#[argh(subcommand, name = "record")]
pub struct RecordArgs {
    /// sampling frequency in Hz per CPU, 1 to 10000 (default 99)
    #[argh(option, short = 'F', default = "99")]
    pub frequency: u64,

    /// stop after this many seconds (decimals allowed); default: until Ctrl-C, SIGTERM, or
    /// the end of the command or of every -p process
    #[argh(option, short = 'd', from_str_fn(parse_duration))]
    pub duration: Option<Duration>,

    /// profile only this process and the processes it starts (repeatable)
    #[argh(option, short = 'p')]
    pub pid: Vec<u32>,

    /// profile the whole system (the default without -p and without a command)
    #[argh(switch, short = 'a')]
    pub all: bool,

    /// output file (default profile.folded); the format follows the extension
    #[argh(option, short = 'o')]
    pub output: Option<PathBuf>,

    /// output format: folded, pprof, otlp or svg (default: from the output file's extension)
    #[argh(option, from_str_fn(parse_format))]
    pub format: Option<OutputFormat>,

    /// in folded output, follow each frame with its source file and line,
    /// as `function (file.c:12)` (pprof and OTLP always carry lines)
    #[argh(switch)]
    pub lines: bool,

    /// also write the session's counters as JSON to this file
    #[argh(option)]
    pub stats_json: Option<PathBuf>,

    /// also send the profile to this OpenTelemetry collector (base URL, e.g.
    /// http://localhost:4318; OTLP/HTTP to URL/v1development/profiles)
    #[argh(option)]
    pub endpoint: Option<String>,

    /// show no progress line while recording (it is shown only on a terminal)
    #[argh(switch, short = 'q')]
    pub quiet: bool,

    /// the command to run and profile, after `--`
    #[argh(positional, greedy)]
    pub command: Vec<String>,
}

pub(super) fn parse_duration(value: &str) -> Result<Duration, String> {
    let secs: f64 = value
        .parse()
        .map_err(|_| format!("invalid duration {value:?}: expected a number of seconds"))?;
    if !secs.is_finite() || secs <= 0.0 || secs > 365.0 * 86_400.0 {
        return Err(format!(
            "invalid duration {value:?}: must be more than 0 and at most a year of seconds"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_format(value: &str) -> Result<OutputFormat, String> {
    OutputFormat::from_name(value).ok_or_else(|| {
        format!("unknown format {value:?}: expected one of folded, pprof, otlp, svg")
    })
}

/// Everything `run` needs, validated.
#[derive(Debug)]
struct Plan {
    target: Target,
    frequency_hz: u64,
    duration: Option<Duration>,
    output: PathBuf,
    format: OutputFormat,
    /// Source lines in folded output (`--lines`).
    lines: bool,
    stats_json: Option<PathBuf>,
    endpoint: Option<TransportConfig>,
    command: Vec<String>,
    quiet: bool,
}

/// Checks a sampling frequency against our range and the kernel's limit.
pub(super) fn check_frequency(hz: u64) -> Result<(), Fatal> {
    if hz == 0 || hz > MAX_FREQUENCY_HZ {
        return Err(Fatal::usage(format!(
            "invalid frequency {hz} Hz: must be between 1 and {MAX_FREQUENCY_HZ}"
        )));
    }
    if let Some(limit) = max_sample_rate().filter(|&l| hz > l) {
        return Err(Fatal::usage(format!(
            "frequency {hz} Hz is above the kernel's limit of {limit} Hz \
             (/proc/sys/kernel/perf_event_max_sample_rate)"
        )));
    }
    Ok(())
}

fn plan(args: RecordArgs) -> Result<Plan, Fatal> {
    check_frequency(args.frequency)?;
    let modes = usize::from(args.all)
        + usize::from(!args.pid.is_empty())
        + usize::from(!args.command.is_empty());
    if modes > 1 {
        return Err(Fatal::usage(
            "choose one of -a, -p PID, or a command after --",
        ));
    }
    for &pid in &args.pid {
        if pid == 0 || !process::exists(pid) {
            return Err(Fatal::usage(format!("no process with PID {pid}")));
        }
    }
    let output = args.output.unwrap_or_else(|| PathBuf::from(DEFAULT_OUTPUT));
    let format = match args.format.or_else(|| OutputFormat::from_path(&output)) {
        Some(format) => format,
        None => {
            return Err(Fatal::usage(format!(
            "cannot tell the format of {} from its extension: use --format folded|pprof|otlp|svg \
                 or an extension .folded, .txt, .pb, .pb.gz, .pprof, .otlp, .svg",
            output.display()
        )))
        }
    };
    let endpoint = match &args.endpoint {
        Some(url) => {
            let config = TransportConfig::new(url.clone());
            config
                .validate()
                .map_err(|e| Fatal::usage(format!("invalid --endpoint: {e}")))?;
            Some(config)
        }
        None => None,
    };
    let target = if args.pid.is_empty() && args.command.is_empty() {
        Target::System
    } else {
        Target::Pids(args.pid.clone())
    };
    Ok(Plan {
        target,
        frequency_hz: args.frequency,
        duration: args.duration,
        output,
        format,
        lines: args.lines,
        stats_json: args.stats_json,
        endpoint,
        command: args.command,
        quiet: args.quiet,
    })
}

fn max_sample_rate() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/kernel/perf_event_max_sample_rate")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Opens the temporary file of an output, or says why it cannot be written (before sampling).
fn pending(target: &Path) -> Result<PendingFile, Fatal> {
    PendingFile::create(target)
        .map_err(|e| Fatal::usage(format!("cannot write {}: {e}", target.display())))
}

/// Runs `record`; returns the exit code (the command's own, when there is one).
pub fn run(args: RecordArgs) -> Result<i32, Fatal> {
    let plan = plan(args)?;
    let output = pending(&plan.output)?;
    let stats_file = plan.stats_json.as_deref().map(pending).transpose()?;
    super::prepare_to_profile()?;

    let stats = Arc::new(Stats::default());
    let config = SessionConfig {
        target: plan.target.clone(),
        frequency_hz: plan.frequency_hz,
        window: None,
        filter: Default::default(),
    };
    let (profile_tx, profile_rx) = std::sync::mpsc::channel();
    let sink = move |profile: Profile| {
        let _ = profile_tx.send(profile);
    };
    let mut session = Session::load(&config, stats.clone(), sink).map_err(load_error)?;
    session.start().map_err(load_error)?;
    let mut child = match plan.command.is_empty() {
        true => None,
        false => Some(start_command(&session, &plan.command)?),
    };

    let mut progress = Progress::new(plan.quiet, plan.duration);
    let every = progress.refresh_every().unwrap_or(IDLE_CHECK);
    let ended_by = wait(&plan, &session, child.as_mut(), every, |_| {
        progress.show(&stats)
    });
    progress.clear();
    let status = child.as_mut().map(finish_command);
    // After a command's end, waiting for its files' tables completes its last walks; after the
    // duration or a signal the user waits for the output, which must follow within a second.
    let settle = match ended_by {
        EndedBy::CommandExited | EndedBy::TargetsExited => crate::maintainer::TABLE_DEADLINE,
        _ => SETTLE_AFTER_DURATION,
    };
    session
        .finish(settle)
        .map_err(|e| Fatal::failure(e.to_string()))?;
    let profile = profile_rx
        .try_recv()
        .map_err(|_| Fatal::failure("the reporter produced no profile"))?;

    output
        .commit(|w| match plan.format {
            OutputFormat::Folded if plan.lines => folded::write_with(&profile, true, w),
            format => write_profile(format, &profile, w),
        })
        .map_err(|e| Fatal::failure(format!("cannot write {}: {e}", plan.output.display())))?;
    let delivered = plan
        .endpoint
        .clone()
        .map(|config| send(config, &profile, &stats));
    print_summary(&plan, &profile, &stats, &ended_by);
    if let Some(file) = stats_file {
        let json = stats.to_json(&[
            ("duration_seconds", profile.duration_ns as f64 / 1e9),
            ("frequency_hz", plan.frequency_hz as f64),
            ("stacks", profile.samples.len() as f64),
        ]);
        file.commit(|w| w.write_all(json.as_bytes()))
            .map_err(|e| Fatal::failure(format!("cannot write the stats file: {e}")))?;
    }
    if let Some(Err(message)) = delivered {
        return Err(Fatal::failure(message));
    }
    Ok(match status {
        Some(Some(status)) => exit_code_of(status),
        Some(None) => exit::FAILURE,
        None => exit::OK,
    })
}

/// Sends the session's profile to a collector, waiting (a bounded time) for the outcome.
fn send(config: TransportConfig, profile: &Profile, stats: &Arc<Stats>) -> Result<(), String> {
    let url = config.url();
    let exporter = Exporter::start(config, stats.clone())
        .map_err(|e| format!("cannot export to {url}: {e}"))?;
    let ctx = OtlpContext::for_profile(profile, crate::encode::SERVICE_NAME);
    exporter.submit(otlp::encode_request(profile, &ctx));
    let report = exporter.shutdown(Duration::from_secs(30));
    if report.delivered == 1 {
        eprintln!("profiler: sent the profile to {url}");
        Ok(())
    } else {
        Err(format!("the profile could not be delivered to {url} (see the warnings above); the file was written"))
    }
}

pub(super) fn load_error(err: io::Error) -> Fatal {
    let code = match err.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => exit::UNSUPPORTED,
        _ => exit::FAILURE,
    };
    Fatal {
        code,
        message: format!("cannot start sampling: {err}"),
    }
}

/// Starts the command with the profiler's own PID marked "follow children" in the PID filter,
/// so the child is profiled from its first instruction, then removes the mark.
fn start_command(session: &Session, command: &[String]) -> Result<Child, Fatal> {
    let me = std::process::id();
    session
        .sampler()
        .follow_children_of(me)
        .map_err(|e| Fatal::failure(e.to_string()))?;
    signal::install_child_wakeup().map_err(|e| Fatal::failure(e.to_string()))?;
    let spawned = Command::new(&command[0]).args(&command[1..]).spawn();
    let _ = session.sampler().unfollow(me);
    spawned.map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => Fatal {
            code: exit::NOT_FOUND,
            message: format!("command not found: {}", command[0]),
        },
        io::ErrorKind::PermissionDenied => Fatal {
            code: exit::CANNOT_EXECUTE,
            message: format!("cannot execute {}: {e}", command[0]),
        },
        _ => Fatal {
            code: exit::CANNOT_EXECUTE,
            message: format!("cannot start {}: {e}", command[0]),
        },
    })
}

/// Why the session ended.
#[derive(Debug)]
enum EndedBy {
    Duration,
    Signal(i32),
    CommandExited,
    TargetsExited,
    PollerFailed,
}

/// How long the end of a session cut by `--duration` or a signal waits for unwind tables.
const SETTLE_AFTER_DURATION: Duration = Duration::from_millis(300);

/// The main thread sleeps until something wakes it: a signal, the command's exit (SIGCHLD), a
/// target's pidfd, the poller stopping, or the end of the duration; this only bounds the sleep
/// (each wakeup costs tens of µs on a VM).
const IDLE_CHECK: Duration = Duration::from_secs(10);

/// Waits for the session's end, calling `tick` at every wake-up (at least every `every`).
fn wait(
    plan: &Plan,
    session: &Session,
    mut child: Option<&mut Child>,
    every: Duration,
    mut tick: impl FnMut(&Session),
) -> EndedBy {
    let started = Instant::now();
    let mut targets = match &plan.target {
        Target::Pids(pids) if child.is_none() && !pids.is_empty() => Some(Targets::new(pids)),
        _ => None,
    };
    loop {
        tick(session);
        let left = plan.duration.map(|d| d.saturating_sub(started.elapsed()));
        let check = targets
            .as_ref()
            .and_then(Targets::probe_interval)
            .map_or(every, |probe| probe.min(every));
        let fds = targets.as_ref().map(Targets::fds).unwrap_or_default();
        if let Some(sig) = signal::wait_or(left.map_or(check, |l| l.min(check)), &fds) {
            if let Some(child) = child.as_deref_mut() {
                // Ctrl-C reaches the command through the terminal; SIGTERM must be passed on.
                let _ = process::send_signal(child.id(), sig);
            }
            return EndedBy::Signal(sig);
        }
        if plan.duration.is_some_and(|d| started.elapsed() >= d) {
            return EndedBy::Duration;
        }
        if let Some(child) = child.as_deref_mut() {
            if !matches!(child.try_wait(), Ok(None)) {
                return EndedBy::CommandExited;
            }
        } else if let Some(targets) = targets.as_mut() {
            if targets.refresh() {
                return EndedBy::TargetsExited;
            }
        }
        if session.poller_failed() {
            return EndedBy::PollerFailed;
        }
    }
}

/// Waits (a bounded time) for the command to end and returns its status.
fn finish_command(child: &mut Child) -> Option<ExitStatus> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                crate::log::warn(&format!(
                    "command (PID {}) still running; leaving it",
                    child.id()
                ));
                return None;
            }
            Err(_) => return None,
        }
    }
}

fn exit_code_of(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

fn print_summary(plan: &Plan, profile: &Profile, stats: &Stats, ended_by: &EndedBy) {
    let get = |c: &std::sync::atomic::AtomicU64| Stats::get(c);
    let secs = profile.duration_ns as f64 / 1e9;
    let why = match ended_by {
        EndedBy::Duration => "duration reached".to_string(),
        EndedBy::Signal(sig) => format!("{} received", process::signal_name(*sig)),
        EndedBy::CommandExited => "command exited".to_string(),
        EndedBy::TargetsExited => "every target process exited".to_string(),
        EndedBy::PollerFailed => "reading samples failed".to_string(),
    };
    let lost = get(&stats.samples_lost)
        + get(&stats.samples_send_failed)
        + get(&stats.samples_queue_dropped);
    let processes: std::collections::HashSet<u32> = profile.samples.iter().map(|s| s.pid).collect();
    let mut text = format!(
        "profiler: recorded {secs:.1} s at {} Hz ({why}): {} samples, {} lost, {} processes\n",
        plan.frequency_hz,
        get(&stats.samples),
        lost,
        processes.len(),
    );
    text += &format!(
        "profiler: process maps: {} syncs, {} entries written, {} deleted ({} already gone, {} \
         failed), {} in use of {}, {} stale\n",
        get(&stats.syncs),
        get(&stats.map_updates),
        get(&stats.map_deletes),
        get(&stats.map_delete_absent),
        get(&stats.map_delete_errors),
        get(&stats.pid_map_entries),
        get(&stats.pid_map_capacity),
        get(&stats.stale_pid_entries),
    );
    // Walks the kernel cut at a file without a table and user space finished later are
    // counted once, as completed later.
    let later = get(&stats.samples_completed_later);
    let walks = [
        (
            "complete in the kernel",
            get(&stats.unwind_outermost) + get(&stats.unwind_fp_end),
        ),
        ("completed later", later),
        (
            "cut: no mapping or table yet",
            get(&stats.unwind_no_mapping).saturating_sub(later),
        ),
        ("no unwind info", get(&stats.unwind_no_info)),
        ("bad CFA", get(&stats.unwind_bad_cfa)),
        ("read fault", get(&stats.unwind_read_fault)),
        ("too deep", get(&stats.unwind_depth_limit)),
        ("unsupported CFI", get(&stats.unwind_unsupported)),
    ];
    let walked: u64 = walks.iter().map(|(_, n)| n).sum();
    if walked > 0 {
        let parts: Vec<String> = walks
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(what, n)| format!("{:.1}% {what}", *n as f64 * 100.0 / walked as f64))
            .collect();
        text += &format!(
            "profiler: user stacks: {walked} walked: {}\n",
            parts.join(", ")
        );
    }
    let size = std::fs::metadata(&plan.output).map_or(0, |m| m.len());
    text += &format!(
        "profiler: wrote {} ({}, {} distinct stacks, {})\n",
        plan.output.display(),
        plan.format.name(),
        profile.samples.len(),
        super::progress::size(size)
    );
    let total = profile.total_samples();
    let (by_self, by_total) = summary::top_functions(profile, 10);
    text += &summary::format_top("Top functions by self samples:", &by_self, total);
    text += &summary::format_top("Top functions by total samples:", &by_total, total);
    eprint!("{}", text.trim_end_matches('\n').to_string() + "\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<RecordArgs, argh::EarlyExit> {
        RecordArgs::from_args(&["record"], list)
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("nan").is_err());
        assert!(parse_duration("abc").is_err());
    }

    #[test]
    fn plans_and_rejections() {
        let p = plan(args(&["-o", "x.pb.gz"]).unwrap()).unwrap();
        assert_eq!(
            (p.target.clone(), p.format, p.frequency_hz),
            (Target::System, OutputFormat::Pprof, 99)
        );
        let p = plan(args(&["--", "true", "-x"]).unwrap()).unwrap();
        assert_eq!(p.command, vec!["true", "-x"]);
        assert_eq!(p.target, Target::Pids(vec![]));
        for bad in [
            &["-F", "0"][..],
            &["-F", "100000"],
            &["-o", "x.png"],
            &["-a", "--", "true"],
        ] {
            let err = plan(args(bad).unwrap()).unwrap_err();
            assert_eq!(err.code, exit::USAGE, "{bad:?}: {}", err.message);
        }
        assert!(args(&["--format", "png"]).is_err());
        assert!(args(&["-d", "-1"]).is_err());
    }

    #[test]
    fn an_output_in_a_missing_directory_is_a_usage_error() {
        let err = pending(Path::new("/nonexistent-dir/x.folded"))
            .err()
            .unwrap();
        assert_eq!(err.code, exit::USAGE);
        assert!(err
            .message
            .contains("cannot write /nonexistent-dir/x.folded"));
    }
}
