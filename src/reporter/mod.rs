//! The reporter thread (T3): receives samples, file and process news and the kernel's VMA
//! reports, aggregates stacks, and at the end of each window (or of the session) symbolizes
//! them into a `Profile` handed to a sink (a file writer, the OTLP exporter). Windows never wait
//! on the sink's I/O: network export runs on its own thread (`crate::exporter`).

pub mod aggregate;
pub mod complete;
pub mod live_stack;
pub mod python_tail;
pub mod vmas;

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::pipeline::ReportMsg;
use crate::process::cgroup::{self, Cgroup};
use crate::process::filter::ProcessFilter;
use crate::profile::Profile;
use crate::stats::Stats;
use crate::symbolize::{KernelSymbols, Symbolizer};
use aggregate::Aggregator;
use complete::{Completer, Tables};
use vmas::Vmas;

/// Windows after which the symbolizer (and its caches, and the kernel's symbol table, which
/// changes when modules load) is rebuilt.
const SYMBOLIZER_WINDOWS: u32 = 10;
/// Past this resident size at the end of a report, the DWARF parsed for it is released (it is
/// parsed again when a later report needs it): stacks in LLVM-sized binaries would otherwise keep
/// tens of MB of line tables and inline trees. Past it while a report is symbolized, a file's
/// DWARF is dropped before the next file's is parsed, so the contexts do not add up.
const DEBUG_INFO_RSS_BUDGET: u64 = 32 << 20;
/// How long what is known about an exited process is kept.
const EXITED_RETENTION: Duration = Duration::from_secs(60);

/// How the reporter cuts time into profiles.
#[derive(Clone, Copy, Debug)]
pub struct Windows {
    /// `None`: one profile for the whole session.
    pub interval: Option<Duration>,
    /// Nanoseconds of CPU time one sample stands for.
    pub period_ns: u64,
}

pub fn unix_now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

struct Reporter {
    aggregator: Aggregator,
    vmas: Vmas,
    symbolizer: Option<Symbolizer>,
    windows_since_symbolizer: u32,
    /// Misses and unreadable files of the symbolizers already dropped.
    symbolizer_totals: (u64, u64),
    exited: Vec<(u32, u64, Instant)>,
    window_start: (Instant, u64),
    /// When sampling stopped, once it has.
    stopped: Option<Instant>,
    stats: Arc<Stats>,
    windows: Windows,
    completer: Completer,
    /// Where the completer reads the rest of deep stacks.
    memory: live_stack::ProcessMemory,
    /// Where the completer reads tables; `None`: walks are never finished here.
    tables: Option<Box<dyn Tables + Send>>,
    /// Files were announced (or a process's mappings came) since the completer last tried.
    retry_now: bool,
    /// Each process's cgroup, read when its first sample arrives and again after an exec.
    cgroups: HashMap<u32, Option<Cgroup>>,
    /// Which processes' samples the profiles keep.
    filter: ProcessFilter,
}

impl Reporter {
    fn handle(&mut self, msg: ReportMsg) {
        match msg {
            ReportMsg::Trace(trace) => {
                self.cgroups
                    .entry(trace.pid)
                    .or_insert_with(|| cgroup::read(trace.pid));
                for trace in self.completer.on_trace(trace, &self.stats) {
                    self.aggregator.add(&trace, &self.vmas, &self.stats);
                }
            }
            ReportMsg::Stack(stack) => {
                let done = self
                    .completer
                    .on_stack(*stack, &mut self.memory, &self.stats);
                for trace in done {
                    self.aggregator.add(&trace, &self.vmas, &self.stats);
                }
            }
            ReportMsg::Vma(record) => self.vmas.add(record),
            ReportMsg::Mappings(record) => {
                if self.completer.on_mappings(record) {
                    self.retry_now = true;
                }
            }
            ReportMsg::File(file) => {
                self.aggregator.on_file(file);
                self.retry_now = true;
            }
            ReportMsg::FileReleased(id) => self.aggregator.on_file_released(id),
            ReportMsg::Process { pid, exe } => self.aggregator.on_process(pid, exe),
            ReportMsg::Python(process) => self.aggregator.on_python(process),
            ReportMsg::Exec(exec) => {
                self.vmas.boundary(exec.pid, exec.ktime_ns);
                self.aggregator.on_exec(&exec);
                // A container runtime moves its process into the container's cgroup just
                // before it executes the container's program.
                if self.cgroups.contains_key(&exec.pid) {
                    self.cgroups.insert(exec.pid, cgroup::read(exec.pid));
                }
            }
            ReportMsg::Exit { pid, ktime_ns } => {
                self.vmas.boundary(pid, ktime_ns);
                self.exited.push((pid, ktime_ns, Instant::now()));
            }
            ReportMsg::Start { unix_ns, at } => {
                self.window_start = (at, unix_ns);
                // Read the kernel's symbols now, while sampling, not after the end (a few
                // hundred ms of /proc/kallsyms that the user would otherwise wait for).
                self.symbolizer.get_or_insert_with(new_symbolizer);
            }
            ReportMsg::Stop { at } => self.stopped = Some(at),
        }
    }

    /// Finishes the waiting walks whose tables now exist (all of them, as far as possible,
    /// when `last`).
    fn complete(&mut self, last: bool) {
        let due = last || self.retry_now || self.completer.retry_due(Instant::now());
        if self.completer.waiting() == 0 || !due {
            return;
        }
        self.retry_now = false;
        let Some(tables) = self.tables.as_deref() else {
            return;
        };
        let aggregator = &self.aggregator;
        let done = self
            .completer
            .retry(tables, &|id| aggregator.knows_file(id), last, &self.stats);
        for trace in done {
            self.aggregator.add(&trace, &self.vmas, &self.stats);
        }
    }

    /// Symbolizes the current window into a profile and starts the next one.
    fn flush(&mut self) -> Profile {
        let now = self.stopped.unwrap_or_else(Instant::now);
        let (started, start_unix_ns) = self.window_start;
        let duration_ns = now.duration_since(started).as_nanos() as u64;
        let template = Profile {
            start_unix_ns,
            duration_ns,
            period_ns: self.windows.period_ns,
            ..Profile::default()
        };
        if self.windows_since_symbolizer >= SYMBOLIZER_WINDOWS {
            if let Some(old) = self.symbolizer.take() {
                let counts = old.stats();
                self.symbolizer_totals.0 += counts.symbols_missed;
                self.symbolizer_totals.1 += counts.files_failed;
            }
            self.windows_since_symbolizer = 0;
        }
        let symbolizer = self.symbolizer.get_or_insert_with(new_symbolizer);
        let (cgroups, filter) = (&self.cgroups, &self.filter);
        let cgroup_of = |pid: u32| cgroups.get(&pid).and_then(Option::as_ref);
        let keep = |pid: u32, thread: &str, exe: Option<&str>| {
            filter.keeps_all() || filter.keeps(thread, exe, cgroup_of(pid))
        };
        let mut filtered = 0;
        let mut profile = self
            .aggregator
            .flush_kept(symbolizer, template, &keep, &mut filtered);
        Stats::add(&self.stats.samples_filtered, filtered);
        for sample in &profile.samples {
            if let Some(cgroup) = cgroup_of(sample.pid) {
                profile.cgroups.insert(sample.pid, cgroup.clone());
            }
        }
        if crate::sys::process::own_usage().is_ok_and(|(rss, _)| rss > DEBUG_INFO_RSS_BUDGET) {
            symbolizer.release_debug_info();
        }
        let counts = symbolizer.stats();
        Stats::set(
            &self.stats.symbolization_misses,
            self.symbolizer_totals.0 + counts.symbols_missed,
        );
        Stats::set(
            &self.stats.symbol_files_unreadable,
            self.symbolizer_totals.1 + counts.files_failed,
        );
        self.window_start = (now, start_unix_ns + duration_ns);
        self.windows_since_symbolizer += 1;
        self.forget_exited(now);
        profile
    }

    fn forget_exited(&mut self, now: Instant) {
        let (old, recent): (Vec<_>, Vec<_>) = self
            .exited
            .drain(..)
            .partition(|(_, _, at)| now.duration_since(*at) >= EXITED_RETENTION);
        self.exited = recent;
        for (pid, ktime_ns, _) in old {
            self.vmas.forget_until(pid, ktime_ns);
            self.aggregator.forget_process(pid);
            self.cgroups.remove(&pid);
        }
        self.aggregator.forget_unsampled(now, EXITED_RETENTION);
    }
}

fn new_symbolizer() -> Symbolizer {
    let kernel = match KernelSymbols::load() {
        Ok(symbols) => Some(symbols),
        Err(err) => {
            crate::log::warn(&format!("kernel frames will not be symbolized: {err}"));
            None
        }
    };
    Symbolizer::new(kernel).with_debug_info_budget(DEBUG_INFO_RSS_BUDGET)
}

/// Runs the reporter until every sender is gone: one profile per window (or one for the whole
/// session), each handed to `sink`, the last one after the queues are drained.
pub fn run(
    inbox: Receiver<Vec<ReportMsg>>,
    stats: Arc<Stats>,
    windows: Windows,
    tables: Option<Box<dyn Tables + Send>>,
    filter: ProcessFilter,
    mut sink: impl FnMut(Profile),
) {
    let mut reporter = Reporter {
        aggregator: Aggregator::default(),
        vmas: Vmas::default(),
        symbolizer: None,
        windows_since_symbolizer: 0,
        symbolizer_totals: (0, 0),
        exited: Vec::new(),
        window_start: (Instant::now(), unix_now_ns()),
        stopped: None,
        stats: stats.clone(),
        windows,
        completer: Completer::default(),
        memory: Default::default(),
        tables,
        retry_now: false,
        cgroups: HashMap::new(),
        filter,
    };
    loop {
        let timeout = match windows.interval {
            Some(interval) => interval.saturating_sub(reporter.window_start.0.elapsed()),
            None => Duration::from_secs(3600),
        };
        match inbox.recv_timeout(timeout) {
            Ok(batch) => {
                batch.into_iter().for_each(|msg| reporter.handle(msg));
                reporter.complete(false);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if windows
            .interval
            .is_some_and(|i| reporter.window_start.0.elapsed() >= i)
        {
            sink(reporter.flush());
        }
    }
    reporter.complete(true);
    let profile = reporter.flush();
    if reporter.aggregator.unknown_file_ids > 0 {
        crate::log::warn(&format!(
            "{} frames named a file never announced",
            reporter.aggregator.unknown_file_ids
        ));
    }
    sink(profile);
}
