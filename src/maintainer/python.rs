//! The maintainer's part of the Python walk (issue 13): finds the CPython processes
//! (`crate::python::Detector`), announces each to the reporter, then marks it in the sampler's
//! `python_procs` (so the announcement precedes the first Python frame), and unmarks it at
//! its exit.
//!
//! A process is looked at when it is reported (a new PID, a newly mapped file such as
//! libpython) and the first time it is sampled. A CPython whose interpreter is not initialised
//! yet (no thread state) is kept with what was found and only its memory is read again: every
//! 10 ms for its first second (an interpreter starts in tens of ms and each sample before the
//! mark lacks its Python frames), then less and less often.

use std::collections::{HashMap, HashSet};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::pipeline::ReportMsg;
use crate::process::maps::parse_maps;
use crate::python::{Detector, LiveMemory, PythonProcess};
use crate::sampler::PythonMarks;
use crate::stats::Stats;

/// How long a CPython process is waited for to initialise its interpreter.
const INIT_WAIT: Duration = Duration::from_secs(30);
/// How soon the maintainer looks again at a CPython process that is not initialised (its first
/// Python frames are only walked once it is marked). A look is three reads of its memory. After
/// [`FAST_RETRIES_FOR`] the delay doubles after each look, up to [`MAX_RETRY_DELAY`]: a Python
/// process may stay without a thread state for long (one waiting in a subprocess's exec), and
/// each look wakes the maintainer.
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(10);
const FAST_RETRIES_FOR: Duration = Duration::from_secs(1);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(2);
/// Processes remembered as looked at, at most (past it the set starts over).
const MAX_SEEN: usize = 1 << 16;

struct Pending {
    process: PythonProcess,
    since: Instant,
    next: Instant,
    delay: Duration,
}

pub struct PythonMarking {
    marks: Box<dyn PythonMarks + Send>,
    detector: Detector,
    /// Marked processes: PID and start time.
    marked: HashMap<u32, u64>,
    /// CPython processes whose interpreter had no thread yet: start time, since when, when to
    /// look next and the delay after that.
    pending: HashMap<u32, Pending>,
    /// Processes looked at because they were sampled (once each).
    seen: HashSet<(u32, u64)>,
}

impl PythonMarking {
    pub fn new(marks: Box<dyn PythonMarks + Send>) -> Self {
        Self {
            marks,
            detector: Detector::default(),
            marked: HashMap::new(),
            pending: HashMap::new(),
            seen: HashSet::new(),
        }
    }

    /// Looks at a process that was reported: the first time, and again when it mapped a new
    /// file (libpython may be one). Other reports say nothing new about the interpreter, and a
    /// look reads the whole of /proc/PID/maps.
    pub fn on_report(
        &mut self,
        pid: u32,
        start_ns: u64,
        new_file: bool,
        reporter: &SyncSender<Vec<ReportMsg>>,
        stats: &Stats,
    ) {
        let first = self.seen.insert((pid, start_ns));
        if self.marked.get(&pid) != Some(&start_ns) && (first || new_file) {
            self.check(pid, start_ns, reporter, stats);
        }
    }

    /// Looks at a sampled process the first time it is sampled.
    pub fn on_sampled(
        &mut self,
        pid: u32,
        start_ns: u64,
        reporter: &SyncSender<Vec<ReportMsg>>,
        stats: &Stats,
    ) {
        if self.seen.len() >= MAX_SEEN {
            self.seen.clear();
        }
        if self.marked.get(&pid) != Some(&start_ns) && self.seen.insert((pid, start_ns)) {
            self.check(pid, start_ns, reporter, stats);
        }
    }

    /// When the next CPython process waiting for its interpreter is due for a look.
    pub fn next_retry(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.next).min()
    }

    /// Looks again at the CPython processes that were not initialised yet.
    pub fn retry(&mut self, reporter: &SyncSender<Vec<ReportMsg>>, stats: &Stats) {
        if self.pending.is_empty() {
            return;
        }
        let now = Instant::now();
        self.pending
            .retain(|_, p| now.duration_since(p.since) < INIT_WAIT);
        let due: Vec<u32> = (self.pending.iter())
            .filter(|(_, p)| p.next <= now)
            .map(|(&pid, _)| pid)
            .collect();
        for pid in due {
            if let Some(pending) = self.pending.remove(&pid) {
                let wait = (pending.since, pending.delay);
                self.verify(pending.process, Some(wait), reporter, stats);
            }
        }
    }

    pub fn on_exit(&mut self, pid: u32, start_ns: u64) {
        self.pending.remove(&pid);
        self.seen.remove(&(pid, start_ns));
        if self.marked.get(&pid) == Some(&start_ns) {
            self.marked.remove(&pid);
            if let Err(err) = self.marks.unmark(pid) {
                crate::log::warn(&format!("python_procs: cannot unmark PID {pid}: {err}"));
            }
        }
    }

    fn check(
        &mut self,
        pid: u32,
        start_ns: u64,
        reporter: &SyncSender<Vec<ReportMsg>>,
        stats: &Stats,
    ) {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
            self.pending.remove(&pid);
            return;
        };
        let mappings: Vec<_> = parse_maps(&text).executable.iter().cloned().collect();
        let process = match self.detector.detect(pid, start_ns, &mappings) {
            Ok(Some(process)) => process,
            Ok(None) => return,
            Err(message) => {
                crate::log::warn(&message);
                return;
            }
        };
        let earlier = (self.pending.remove(&pid))
            .filter(|p| p.process.start_ns == start_ns)
            .map(|p| (p.since, p.delay));
        self.verify(process, earlier, reporter, stats);
    }

    /// Marks `process` if its interpreter's layout checks out; keeps it in `pending` while the
    /// interpreter has no thread yet (`earlier`: since when it waits, and the next delay).
    fn verify(
        &mut self,
        process: PythonProcess,
        earlier: Option<(Instant, Duration)>,
        reporter: &SyncSender<Vec<ReportMsg>>,
        stats: &Stats,
    ) {
        let pid = process.pid;
        let verdict = process.check(&LiveMemory(pid));
        match verdict {
            Some(true) => {}
            Some(false) => {
                crate::log::warn(&format!(
                    "{}: CPython 3.{}: the interpreter's layout does not match the offsets known \
                     for it; PID {pid} is profiled as native code",
                    process.path, process.minor
                ));
                return;
            }
            None => {
                let now = Instant::now();
                let (since, delay) = earlier.unwrap_or((now, FIRST_RETRY_DELAY));
                let next_delay = if now.duration_since(since) < FAST_RETRIES_FOR {
                    delay
                } else {
                    (delay * 2).min(MAX_RETRY_DELAY)
                };
                self.pending.insert(
                    pid,
                    Pending {
                        process,
                        since,
                        next: now + delay,
                        delay: next_delay,
                    },
                );
                return;
            }
        }
        let start_ns = process.start_ns;
        let value = process.to_bpf();
        let _ = reporter.send(vec![ReportMsg::Python(Arc::new(process))]);
        match self.marks.mark(pid, &value) {
            Ok(()) => {
                self.marked.insert(pid, start_ns);
                Stats::inc(&stats.python_processes);
            }
            Err(err) => crate::log::warn(&format!("python_procs: cannot mark PID {pid}: {err}")),
        }
    }
}
