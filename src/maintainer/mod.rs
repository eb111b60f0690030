//! The maintainer thread (T2): owns the process table and is the only writer of `pid_mappings`.
//! It applies the poller's messages to the table, announces new files to the reporter, flushes
//! the batched map writes (evicting when the map is full), and periodically sweeps for missed
//! exits, expires what is past its grace period, and audits the map against the table.
//!
//! Below it, in this module: the process table and its lifecycle (`lifecycle.rs`, with the
//! files and tables its processes map in `lifecycle_files.rs`) and the batched map writes
//! (`batcher.rs`), the one path by which anything reaches `pid_mappings`. The leaves it uses:
//! what the entries are (`crate::pid_mappings`: prefixes, the entries a process needs and the
//! writes to get there), the unwind tables it loads (`crate::tables`, built on their extractor
//! thread), and processes as `crate::process` reads them (maps, identity, the file registry).

pub mod batcher;
#[cfg(test)]
mod fake_map;
pub mod lifecycle;
pub mod python;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::pipeline::{MaintainerMsg, ReportMsg};
use crate::process::source::ProcSource;
pub use crate::sampler::CacheInvalidator;
use crate::stats::Stats;
use crate::tables::TableStore;
use batcher::MapBackend;
use lifecycle::ProcessTable;

/// How often exited processes and unused files are forgotten after their grace periods.
const EXPIRE_INTERVAL: Duration = Duration::from_secs(5);
/// How often every live process is looked up in `/proc`, to catch exits the hooks missed:
/// that costs a read per process, and exits arrive from BPF for every process we synced, so
/// this is a safety net, run sooner (at the next expiry) only when events were lost.
const SWEEP_INTERVAL: Duration = Duration::from_secs(30);
/// How often built tables are picked up while some are due.
const TABLE_POLL: Duration = Duration::from_millis(5);
/// How long the end of a session waits at most for tables still being built, unless told
/// otherwise ([`Maintainer::settle_limit`]).
pub const TABLE_DEADLINE: Duration = Duration::from_secs(10);
const AUDIT_INTERVAL: Duration = Duration::from_secs(30);

pub struct Maintainer<M: MapBackend, S: ProcSource, C: CacheInvalidator> {
    pub table: ProcessTable,
    map: M,
    source: S,
    caches: C,
    reporter: SyncSender<Vec<ReportMsg>>,
    stats: Arc<Stats>,
    /// Milliseconds the end of the session may wait for tables (set when the session ends).
    settle_ms: Arc<AtomicU64>,
    /// Marks CPython processes for the Python walk (`None`: not walked).
    python: Option<python::PythonMarking>,
}

impl<M: MapBackend, S: ProcSource, C: CacheInvalidator> Maintainer<M, S, C> {
    pub fn new(
        map: M,
        source: S,
        caches: C,
        reporter: SyncSender<Vec<ReportMsg>>,
        stats: Arc<Stats>,
    ) -> Self {
        Self {
            table: ProcessTable::default(),
            map,
            source,
            caches,
            reporter,
            stats,
            settle_ms: Arc::new(AtomicU64::new(TABLE_DEADLINE.as_millis() as u64)),
            python: None,
        }
    }

    /// Where to say how long the end may wait for tables still being built: walks cut at their
    /// files are finished with them, which is worth seconds after a command's end but not
    /// after a `--duration` or Ctrl-C, when the user waits for the output.
    pub fn settle_limit(&self) -> Arc<AtomicU64> {
        self.settle_ms.clone()
    }

    /// Finds CPython processes and marks them in `marks` for the Python walk.
    pub fn with_python(mut self, marks: Box<dyn crate::sampler::PythonMarks + Send>) -> Self {
        self.python = Some(python::PythonMarking::new(marks));
        self
    }

    /// Loads unwind tables into `tables` for every new file.
    pub fn with_tables(mut self, tables: Box<dyn TableStore>) -> Self {
        self.table = ProcessTable::with_tables(tables);
        self
    }

    /// Syncs processes at their exec, before they are sampled (for small targets).
    pub fn sync_on_exec(mut self, yes: bool) -> Self {
        self.table.sync_on_exec = yes;
        self
    }

    /// Runs until every sender of `inbox` is gone, then settles and audits once more.
    pub fn run(mut self, inbox: Receiver<Vec<MaintainerMsg>>) {
        let (mut last_expire, mut last_sweep) = (Instant::now(), Instant::now());
        let mut last_audit = Instant::now();
        let mut losses = self.losses();
        loop {
            // Built tables are picked up between messages: wake often while some are due.
            // Otherwise nothing is due before the next expiry (each wakeup costs tens of µs).
            let python_next = self.python.as_ref().and_then(|p| p.next_retry());
            let timeout = if self.table.tables_pending() {
                TABLE_POLL
            } else {
                let expire = EXPIRE_INTERVAL.saturating_sub(last_expire.elapsed());
                let python = python_next.map(|at| at.saturating_duration_since(Instant::now()));
                python.map_or(expire, |p| p.min(expire))
            };
            match inbox.recv_timeout(timeout) {
                Ok(batch) => {
                    // Apply everything queued before one flush: map batches stay large.
                    for msg in batch.into_iter().chain(inbox.try_iter().take(64).flatten()) {
                        self.handle(msg);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.table.tables_ready(Duration::ZERO, &self.stats);
            self.flush();
            if let Some(python) = &mut self.python {
                python.retry(&self.reporter, &self.stats);
            }
            let now = Instant::now();
            if now.duration_since(last_expire) >= EXPIRE_INTERVAL {
                let lost = self.losses();
                if lost != losses || now.duration_since(last_sweep) >= SWEEP_INTERVAL {
                    self.table.sweep(&self.source, &self.stats, now);
                    (losses, last_sweep) = (lost, now);
                }
                let released: Vec<ReportMsg> = self
                    .table
                    .expire(&self.stats, now)
                    .into_iter()
                    .map(ReportMsg::FileReleased)
                    .collect();
                if !released.is_empty() {
                    let _ = self.reporter.send(released);
                }
                self.flush();
                last_expire = now;
            }
            if now.duration_since(last_audit) >= AUDIT_INTERVAL {
                self.audit();
                last_audit = now;
            }
        }
        self.settle();
    }

    /// Records lost on the way from the hooks (an exit among them would leave a process live).
    fn losses(&self) -> u64 {
        let s = &self.stats;
        [
            &s.samples_lost,
            &s.process_events_lost,
            &s.events_queue_dropped,
            &s.maintainer_queue_dropped,
        ]
        .into_iter()
        .map(Stats::get)
        .sum()
    }

    pub fn handle(&mut self, msg: MaintainerMsg) {
        let now = Instant::now();
        match msg {
            MaintainerMsg::Report {
                pid,
                start_ns,
                exec_gen,
                trigger,
            } => {
                self.table.on_report(
                    pid,
                    start_ns,
                    exec_gen,
                    trigger,
                    &self.source,
                    &self.stats,
                    now,
                );
                if let Some(python) = &mut self.python {
                    let new_file = trigger == crate::pipeline::Trigger::NewFile;
                    python.on_report(pid, start_ns, new_file, &self.reporter, &self.stats);
                }
            }
            MaintainerMsg::Exit { pid, start_ns } => {
                self.table.on_exit(pid, start_ns, &self.stats, now);
                if let Some(python) = &mut self.python {
                    python.on_exit(pid, start_ns);
                }
            }
            MaintainerMsg::Sampled(pids) => {
                self.table.on_sampled(&pids, now);
                if let Some(python) = &mut self.python {
                    for &pid in &pids {
                        if let Some(p) = self.table.get(pid) {
                            python.on_sampled(pid, p.start_ns, &self.reporter, &self.stats);
                        }
                    }
                }
            }
            MaintainerMsg::FilesUsed(files) => self.table.on_files_used(&files, &self.stats, now),
            MaintainerMsg::Executed { path, dev, inode } => {
                self.table
                    .on_executed(&path, dev, inode, &self.source, &self.stats, now)
            }
        }
    }

    /// Announces new files, then writes the map (a file is always known before it is named).
    pub fn flush(&mut self) {
        let mut news: Vec<ReportMsg> = Vec::new();
        let files = self.table.take_new_files();
        for file in &files {
            Stats::inc(&self.stats.files_loaded);
            news.push(ReportMsg::File(file.clone()));
        }
        for (pid, exe) in self.table.take_new_processes() {
            news.push(ReportMsg::Process { pid, exe });
        }
        if !news.is_empty() {
            let _ = self.reporter.send(news);
        }
        self.table.publish(&files, &self.stats);
        let report = self.table.batcher.flush(&mut self.map, &self.stats);
        if !report.rejected_full.is_empty() {
            let keep: Vec<u32> = report.rejected_full.iter().map(|(k, _)| k.pid()).collect();
            let freed = self.table.evict(
                report.rejected_full.len(),
                &keep,
                &self.stats,
                Instant::now(),
            );
            if freed > 0 {
                for (key, value) in report.rejected_full {
                    self.table.batcher.upsert(key, value);
                }
                let again = self.table.batcher.flush(&mut self.map, &self.stats);
                Stats::add(
                    &self.stats.map_update_errors,
                    again.rejected_full.len() as u64,
                );
            } else {
                Stats::add(
                    &self.stats.map_update_errors,
                    report.rejected_full.len() as u64,
                );
            }
        }
        if self.table.take_live_deletes() {
            self.caches.invalidate();
        }
        Stats::set(
            &self.stats.pid_map_entries,
            self.table.batcher.entries() as u64,
        );
    }

    /// Compares the map with the table and `/proc`; the results land in the counters.
    pub fn audit(&mut self) {
        match self.table.audit(&self.map) {
            Ok((stale, missing)) => {
                Stats::set(&self.stats.stale_pid_entries, stale as u64);
                Stats::set(&self.stats.missing_pid_entries, missing as u64);
            }
            Err(err) => crate::log::warn(&format!("pid_mappings audit failed: {err}")),
        }
        Stats::set(&self.stats.leaked_files, self.table.leaked_files() as u64);
        Stats::set(
            &self.stats.expected_pid_entries,
            self.table.expected_entries() as u64,
        );
        if let Ok(keys) = self.map.keys() {
            Stats::set(&self.stats.pid_map_entries, keys.len() as u64);
        }
    }

    /// End of session: the tables still being built (walks cut at their files are finished
    /// with them), one last sweep for exits in flight, a flush, and the final audit.
    pub fn settle(&mut self) {
        let limit = Duration::from_millis(self.settle_ms.load(Ordering::Relaxed));
        let deadline = Instant::now() + limit.min(TABLE_DEADLINE);
        while self.table.tables_pending() && Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            self.table
                .tables_ready(left.min(TABLE_POLL * 10), &self.stats);
        }
        let now = Instant::now();
        self.table.sweep(&self.source, &self.stats, now);
        self.flush();
        self.audit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maintainer::fake_map::FakeMap;
    use crate::pipeline::Trigger;
    use crate::process::source::{ProcSource, Procfs, NS_PER_TICK};
    use std::sync::mpsc::sync_channel;

    #[derive(Default)]
    struct Count(usize);
    impl CacheInvalidator for &mut Count {
        fn invalidate(&mut self) {
            self.0 += 1;
        }
    }

    #[test]
    fn files_are_announced_before_the_entries_that_name_them() {
        let (tx, rx) = sync_channel(1024);
        let stats = Arc::new(Stats::default());
        let mut count = Count::default();
        let source = Procfs;
        let me = std::process::id();
        let start_ns = source.identity(me).unwrap().start_time * NS_PER_TICK;
        let mut m = Maintainer::new(FakeMap::new(100_000), source, &mut count, tx, stats.clone());
        m.handle(MaintainerMsg::Report {
            pid: me,
            start_ns,
            exec_gen: start_ns,
            trigger: Trigger::UnknownPid,
        });
        assert!(rx.try_recv().is_err(), "nothing announced before the flush");
        m.flush();
        let announced: Vec<u32> = rx
            .try_iter()
            .flatten()
            .filter_map(|msg| match msg {
                ReportMsg::File(f) => Some(f.id),
                ReportMsg::Process { .. } => None,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert!(!announced.is_empty());
        let named: std::collections::BTreeSet<u32> = m.map.file_ids().into_iter().collect();
        assert!(
            named.iter().all(|id| announced.contains(id)),
            "{named:?} vs {announced:?}"
        );
        m.audit();
        assert_eq!(Stats::get(&stats.stale_pid_entries), 0);
        assert_eq!(
            Stats::get(&stats.pid_map_entries),
            m.map.entries.len() as u64
        );
        assert_eq!(Stats::get(&stats.leaked_files), 0);
    }
}
