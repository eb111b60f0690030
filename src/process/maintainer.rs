//! The maintainer thread (T2): owns the process table. It takes a `/proc` snapshot when a PID is
//! first seen and again after an exec, and forgets a process a grace period after its exit.
//!
//! Every event is applied to the process's current state; one that does not fit (a duplicate
//! "seen", an exit for an unknown PID) is a no-op, never an error.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::snapshot::{read_snapshot, SnapshotError};
use crate::pipeline::{MaintainerMsg, ReportMsg};
use crate::stats::Stats;

/// How long an exited process stays in the table (late events for it are still recognised).
const EXIT_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Live,
    Exited { since: Instant },
}

#[derive(Debug)]
struct Entry {
    state: State,
}

/// The process table and what it needs to talk to the reporter.
pub struct Maintainer {
    table: HashMap<u32, Entry>,
    /// Monotonic time of the last exit per PID: the start of validity for the next process
    /// that reuses it.
    last_exit_ktime: HashMap<u32, u64>,
    reporter: SyncSender<ReportMsg>,
    stats: Arc<Stats>,
}

impl Maintainer {
    pub fn new(reporter: SyncSender<ReportMsg>, stats: Arc<Stats>) -> Self {
        Self {
            table: HashMap::new(),
            last_exit_ktime: HashMap::new(),
            reporter,
            stats,
        }
    }

    /// Runs until every sender of `inbox` is gone.
    pub fn run(mut self, inbox: Receiver<MaintainerMsg>) {
        loop {
            match inbox.recv_timeout(Duration::from_secs(1)) {
                Ok(msg) => self.handle(msg),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.expire(Instant::now());
        }
    }

    pub fn handle(&mut self, msg: MaintainerMsg) {
        match msg {
            MaintainerMsg::Seen { pid } => {
                if matches!(self.table.get(&pid), Some(Entry { state: State::Live })) {
                    return; // already known and alive
                }
                Stats::inc(&self.stats.pids_seen);
                let valid_from = self.last_exit_ktime.get(&pid).copied().unwrap_or(0);
                self.sync(pid, valid_from);
            }
            MaintainerMsg::Exec { pid, ktime_ns } => {
                if !self.table.contains_key(&pid) {
                    Stats::inc(&self.stats.pids_seen);
                }
                self.sync(pid, ktime_ns);
            }
            MaintainerMsg::Exit { pid, ktime_ns } => {
                self.last_exit_ktime.insert(pid, ktime_ns);
                if let Some(entry) = self.table.get_mut(&pid) {
                    if entry.state == State::Live {
                        entry.state = State::Exited {
                            since: Instant::now(),
                        };
                        Stats::inc(&self.stats.pids_exited);
                    }
                }
            }
        }
    }

    fn sync(&mut self, pid: u32, valid_from_ktime: u64) {
        let msg = match read_snapshot(pid, valid_from_ktime) {
            Ok(snapshot) => {
                Stats::inc(&self.stats.syncs);
                self.table.insert(pid, Entry { state: State::Live });
                ReportMsg::Snapshot(Arc::new(snapshot))
            }
            Err(err) => {
                Stats::inc(&self.stats.sync_failures);
                if !matches!(err, SnapshotError::Gone) {
                    crate::log::debug(&format!("cannot read /proc/{pid}: {err}"));
                }
                ReportMsg::SnapshotFailed {
                    pid,
                    valid_from_ktime,
                }
            }
        };
        // A send fails only when the reporter has ended, i.e. during shutdown.
        let _ = self.reporter.send(msg);
    }

    /// Forgets processes whose exit grace period is over.
    pub fn expire(&mut self, now: Instant) {
        self.table.retain(|_, entry| match entry.state {
            State::Live => true,
            State::Exited { since } => now.duration_since(since) < EXIT_GRACE,
        });
    }

    /// Processes in the table (live or within their exit grace period).
    pub fn tracked(&self) -> usize {
        self.table.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::sync_channel;

    #[test]
    fn seen_twice_syncs_once_and_exit_then_reuse_resyncs() {
        let (tx, rx) = sync_channel(16);
        let stats = Arc::new(Stats::default());
        let mut m = Maintainer::new(tx, stats.clone());
        let me = std::process::id();
        m.handle(MaintainerMsg::Seen { pid: me });
        m.handle(MaintainerMsg::Seen { pid: me });
        assert!(
            matches!(rx.try_recv(), Ok(ReportMsg::Snapshot(s)) if s.pid == me && s.valid_from_ktime == 0)
        );
        assert!(
            rx.try_recv().is_err(),
            "a second Seen for a live process does nothing"
        );
        m.handle(MaintainerMsg::Exit {
            pid: me,
            ktime_ns: 500,
        });
        m.handle(MaintainerMsg::Exit {
            pid: me,
            ktime_ns: 500,
        });
        assert_eq!(
            Stats::get(&stats.pids_exited),
            1,
            "a duplicate exit is a no-op"
        );
        m.handle(MaintainerMsg::Seen { pid: me });
        assert!(matches!(rx.try_recv(), Ok(ReportMsg::Snapshot(s)) if s.valid_from_ktime == 500));
        assert_eq!(Stats::get(&stats.pids_seen), 2);
    }

    #[test]
    fn vanished_process_reports_failure() {
        let (tx, rx) = sync_channel(16);
        let stats = Arc::new(Stats::default());
        let mut m = Maintainer::new(tx, stats.clone());
        m.handle(MaintainerMsg::Exec {
            pid: u32::MAX - 1,
            ktime_ns: 7,
        });
        assert!(matches!(
            rx.try_recv(),
            Ok(ReportMsg::SnapshotFailed {
                valid_from_ktime: 7,
                ..
            })
        ));
        assert_eq!(Stats::get(&stats.sync_failures), 1);
    }

    #[test]
    fn exited_processes_expire_after_the_grace_period() {
        let (tx, _rx) = sync_channel(16);
        let mut m = Maintainer::new(tx, Arc::new(Stats::default()));
        m.handle(MaintainerMsg::Seen {
            pid: std::process::id(),
        });
        m.handle(MaintainerMsg::Exit {
            pid: std::process::id(),
            ktime_ns: 1,
        });
        m.expire(Instant::now());
        assert_eq!(m.tracked(), 1);
        m.expire(Instant::now() + EXIT_GRACE + Duration::from_secs(1));
        assert_eq!(m.tracked(), 0);
    }
}
