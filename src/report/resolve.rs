//! Matching each sample with the process snapshot that was valid when it was taken.
//!
//! Samples can reach the reporter before the maintainer's snapshot of their process (a new PID,
//! an exec, a reused PID). Such samples wait here, per PID, until the snapshot (or the news that
//! none can be taken) arrives; nothing is resolved against the wrong address space and nothing
//! is dropped. At the end everything still waiting is released with the best snapshot known.

use std::collections::HashMap;

use crate::process::SharedSnapshot;
use crate::sys::bpf::layout::RawTrace;

/// Samples held back per PID before they are released with what is known.
const MAX_PENDING_PER_PID: usize = 4096;

#[derive(Default)]
struct PidState {
    /// Sorted by `valid_from_ktime`.
    snapshots: Vec<SharedSnapshot>,
    /// Samples from this time on need a snapshot that has not arrived yet.
    awaiting_since: Option<u64>,
    pending: Vec<RawTrace>,
}

impl PidState {
    fn best_snapshot(&self, ktime: u64) -> Option<SharedSnapshot> {
        let i = self
            .snapshots
            .partition_point(|s| s.valid_from_ktime <= ktime);
        i.checked_sub(1).map(|i| self.snapshots[i].clone())
    }

    fn must_wait(&self, ktime: u64) -> bool {
        self.awaiting_since.is_some_and(|since| ktime >= since)
    }

    fn expect(&mut self, since: u64) {
        self.awaiting_since = Some(self.awaiting_since.map_or(since, |s| s.max(since)));
    }

    /// Releases the pending samples that no longer need to wait.
    fn release(&mut self, out: &mut Vec<(RawTrace, Option<SharedSnapshot>)>) {
        let pending = std::mem::take(&mut self.pending);
        for trace in pending {
            if self.must_wait(trace.ktime_ns) {
                self.pending.push(trace);
            } else {
                let snapshot = self.best_snapshot(trace.ktime_ns);
                out.push((trace, snapshot));
            }
        }
    }
}

/// Per-PID snapshots and waiting samples.
#[derive(Default)]
pub struct Resolver {
    pids: HashMap<u32, PidState>,
}

/// A sample ready to aggregate, with the snapshot of its process if one exists.
pub type Resolved = (RawTrace, Option<SharedSnapshot>);

impl Resolver {
    pub fn on_trace(&mut self, trace: RawTrace, out: &mut Vec<Resolved>) {
        let state = self.pids.entry(trace.pid).or_default();
        if state.snapshots.is_empty() && state.awaiting_since.is_none() {
            state.awaiting_since = Some(0); // first sighting: the maintainer is taking one
        }
        if state.must_wait(trace.ktime_ns) && state.pending.len() < MAX_PENDING_PER_PID {
            state.pending.push(trace);
            return;
        }
        let snapshot = state.best_snapshot(trace.ktime_ns);
        out.push((trace, snapshot));
    }

    /// The address space changes at `ktime_ns`: later samples wait for the new snapshot.
    pub fn on_exec(&mut self, pid: u32, ktime_ns: u64) {
        self.pids.entry(pid).or_default().expect(ktime_ns);
    }

    /// The process is gone: a later sample with this PID is another process.
    pub fn on_exit(&mut self, pid: u32, ktime_ns: u64) {
        if let Some(state) = self.pids.get_mut(&pid) {
            state.expect(ktime_ns);
        }
    }

    pub fn on_snapshot(&mut self, snapshot: SharedSnapshot, out: &mut Vec<Resolved>) {
        let pid = snapshot.pid;
        let from = snapshot.valid_from_ktime;
        let state = self.pids.entry(pid).or_default();
        let at = state
            .snapshots
            .partition_point(|s| s.valid_from_ktime <= from);
        state.snapshots.insert(at, snapshot);
        self.settle(pid, from, out);
    }

    /// No snapshot valid from `valid_from_ktime` will come: release what waited for it.
    pub fn on_snapshot_failed(&mut self, pid: u32, valid_from_ktime: u64, out: &mut Vec<Resolved>) {
        self.settle(pid, valid_from_ktime, out);
    }

    /// The maintainer answered for samples from `from` on: stop waiting if that was the answer
    /// awaited, and release what no longer needs to wait.
    fn settle(&mut self, pid: u32, from: u64, out: &mut Vec<Resolved>) {
        if let Some(state) = self.pids.get_mut(&pid) {
            if state.awaiting_since.is_some_and(|since| from >= since) {
                state.awaiting_since = None;
            }
            state.release(out);
        }
    }

    /// Releases every waiting sample with the best snapshot known (end of session).
    pub fn drain(&mut self, out: &mut Vec<Resolved>) {
        for state in self.pids.values_mut() {
            state.awaiting_since = None;
            state.release(out);
        }
    }

    /// Samples waiting for a snapshot.
    pub fn pending(&self) -> usize {
        self.pids.values().map(|s| s.pending.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::maps::ExecutableMappings;
    use crate::process::ProcessSnapshot;
    use std::sync::Arc;

    fn trace(pid: u32, ktime_ns: u64) -> RawTrace {
        RawTrace {
            pid,
            tid: pid,
            cpu: 0,
            ktime_ns,
            comm: [0; 16],
            flags: 0,
            kernel: vec![],
            user: vec![0x1000],
        }
    }

    fn snap(pid: u32, valid_from_ktime: u64) -> SharedSnapshot {
        Arc::new(ProcessSnapshot {
            pid,
            start_time: valid_from_ktime + 1,
            valid_from_ktime,
            comm: "x".into(),
            exe: None,
            maps: ExecutableMappings::default(),
            bad_map_lines: 0,
        })
    }

    fn from_of(r: &Resolved) -> Option<u64> {
        r.1.as_ref().map(|s| s.valid_from_ktime)
    }

    #[test]
    fn first_samples_wait_for_the_first_snapshot() {
        let mut r = Resolver::default();
        let mut out = vec![];
        r.on_trace(trace(1, 10), &mut out);
        r.on_trace(trace(1, 20), &mut out);
        assert!(out.is_empty());
        assert_eq!(r.pending(), 2);
        r.on_snapshot(snap(1, 0), &mut out);
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|r| from_of(r) == Some(0)));
        r.on_trace(trace(1, 30), &mut out);
        assert_eq!(out.len(), 3, "later samples resolve at once");
    }

    #[test]
    fn samples_after_an_exec_wait_for_the_new_address_space() {
        let mut r = Resolver::default();
        let mut out = vec![];
        r.on_snapshot(snap(1, 0), &mut out);
        r.on_exec(1, 100);
        r.on_trace(trace(1, 50), &mut out); // before the exec: the old snapshot
        r.on_trace(trace(1, 150), &mut out); // after: waits
        assert_eq!(out.len(), 1);
        assert_eq!(from_of(&out[0]), Some(0));
        r.on_snapshot(snap(1, 100), &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(from_of(&out[1]), Some(100));
    }

    #[test]
    fn a_reused_pid_gets_its_own_snapshot_and_late_samples_the_old_one() {
        let mut r = Resolver::default();
        let mut out = vec![];
        r.on_snapshot(snap(7, 0), &mut out);
        r.on_exit(7, 1000);
        r.on_trace(trace(7, 2000), &mut out); // the new process
        r.on_trace(trace(7, 900), &mut out); // a late sample of the old one
        assert_eq!(out.len(), 1);
        assert_eq!(from_of(&out[0]), Some(0));
        r.on_snapshot(snap(7, 1000), &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(from_of(&out[1]), Some(1000));
    }

    #[test]
    fn a_failed_snapshot_releases_samples_without_one() {
        let mut r = Resolver::default();
        let mut out = vec![];
        r.on_trace(trace(3, 10), &mut out);
        r.on_snapshot_failed(3, 0, &mut out);
        assert_eq!(out.len(), 1);
        assert!(out[0].1.is_none());
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn an_older_snapshot_does_not_release_samples_awaiting_a_newer_one() {
        let mut r = Resolver::default();
        let mut out = vec![];
        r.on_trace(trace(1, 10), &mut out);
        r.on_exec(1, 100);
        r.on_trace(trace(1, 150), &mut out);
        r.on_snapshot(snap(1, 0), &mut out);
        assert_eq!(out.len(), 1, "only the pre-exec sample is released");
        r.drain(&mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(
            from_of(&out[1]),
            Some(0),
            "released with the best snapshot known"
        );
    }

    #[test]
    fn pending_is_bounded_per_pid() {
        let mut r = Resolver::default();
        let mut out = vec![];
        for i in 0..(MAX_PENDING_PER_PID as u64 + 10) {
            r.on_trace(trace(1, i), &mut out);
        }
        assert_eq!(r.pending(), MAX_PENDING_PER_PID);
        assert_eq!(out.len(), 10);
    }
}
