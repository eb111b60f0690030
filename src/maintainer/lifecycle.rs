//! The process table: every process the sampler has asked about, tracked through an explicit
//! lifecycle, and the `pid_mappings` entries each one owns.
//!
//! ```text
//!   report ──▶ Syncing ──▶ Live ──exit──▶ Exiting(at) ──grace──▶ Gone (removed)
//!                 │          ▲ │
//!                 │   resync └─┘ (unknown PID/mapping reported, exec seen)
//!                 └── vanished mid-sync ──▶ Gone
//! ```
//! Identity is (PID, start time), so a reused PID is a new process. Each transition happens
//! once, on the maintainer thread, which is the only writer of the map: an event that does not
//! fit the current state (a second exit, a late report about a dead process) is a counted no-op,
//! and a process's entries are deleted exactly once, when it leaves `Live`.
//!
//! A sync computes the entries the process needs (`crate::pid_mappings::wanted`, pure) and
//! applies the difference to those it has through the batcher (`apply`): only
//! keys it wrote are deleted, and the batcher checks that they exist before deleting them. The
//! files processes map and their unwind tables are the table's other half
//! (`lifecycle_files.rs`).

#[path = "lifecycle_files.rs"]
mod files;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use super::batcher::{Batcher, MapBackend};
use crate::layout::{consts, PidMappingKey, PidMappingValue};
use crate::pid_mappings::wanted::{changes, wanted, Changes, Target};
use crate::pipeline::Trigger;
use crate::process::files::{FileTable, SharedFile};
use crate::process::source::{Identity, ProcError, ProcSource};
use crate::stats::Stats;
use crate::tables::{NoTables, TableStore};

const PENDING: u16 = consts::MAPPING_TABLE_PENDING as u16;

/// How long an exited process is remembered (late events about it are recognised as late).
pub const EXIT_GRACE: Duration = Duration::from_secs(10);
/// How long an unused file stays registered: samples in flight may still name it, and the
/// next short-lived process running it reuses its unwind table instead of rebuilding it.
pub const FILE_GRACE: Duration = Duration::from_secs(60);
/// Minimum time between two re-syncs of a process for an unknown mapping. Frame-pointer walks
/// through code without frame pointers produce addresses in no mapping, and each would
/// otherwise cost a read of the maps.
pub const UNKNOWN_MAPPING_RESYNC: Duration = Duration::from_secs(1);
/// How long after its eviction a sampled file's table is built again.
pub const REBUILD_AFTER: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Live,
    Exiting { since: Instant },
}

#[derive(Debug)]
pub struct Process {
    /// The identity next to the PID: when the process's leader started (`start_boottime`).
    pub start_ns: u64,
    pub comm: String,
    pub state: State,
    pub exec_gen: u64,
    /// The map entries this process owns, exactly as written.
    entries: BTreeMap<PidMappingKey, PidMappingValue>,
    /// One reference per mapping on each file.
    files: Vec<u32>,
    pub last_sampled: Instant,
    last_sync: Instant,
    /// The last sync was at exec time, before the dynamic loader mapped the libraries: the
    /// next unknown-mapping report is expected and re-syncs at once.
    synced_at_exec: bool,
}

/// The table plus the batcher, file registry and unwind tables it drives.
pub struct ProcessTable {
    procs: HashMap<u32, Process>,
    pub files: FileTable,
    pub batcher: Batcher,
    /// Files registered since the last `take_new_files`: announce them before flushing.
    new_files: Vec<SharedFile>,
    /// Files registered whose tables are not requested yet.
    tables_to_load: Vec<SharedFile>,
    /// Files whose tables are being built: their entries carry `MAPPING_TABLE_PENDING`.
    pending_tables: std::collections::HashSet<u32>,
    /// Files whose tables arrived: published again, with the table, at the next flush.
    republish: Vec<u32>,
    /// The newest identity any event showed for each PID, and when: a newer one on the same
    /// PID is a reuse (counted whether or not either process was ever synced; first sight
    /// unwinds most short-lived processes without a sync).
    identities: HashMap<u32, (u64, Instant)>,
    /// Processes synced for the first time since the last `take_new_processes`, with their
    /// executables.
    new_processes: Vec<(u32, String)>,
    /// Entries of a live process were deleted: the sampler's per-CPU caches must be dropped.
    live_deletes: bool,
    /// Files whose tables were evicted, with when: built again once sampled after a while.
    evicted: HashMap<u32, Instant>,
    tables: Box<dyn TableStore>,
    /// Sync a process at its exec even before it is sampled: when only a few processes are
    /// profiled (-p, a command), so their first samples already unwind fully.
    pub sync_on_exec: bool,
}

impl Default for ProcessTable {
    fn default() -> Self {
        Self::with_tables(Box::new(NoTables))
    }
}

fn inc(counter: &AtomicU64) {
    Stats::inc(counter)
}

impl ProcessTable {
    pub fn with_tables(tables: Box<dyn TableStore>) -> Self {
        Self {
            procs: HashMap::new(),
            files: FileTable::default(),
            batcher: Batcher::default(),
            new_files: Vec::new(),
            tables_to_load: Vec::new(),
            pending_tables: Default::default(),
            republish: Vec::new(),
            identities: HashMap::new(),
            new_processes: Vec::new(),
            live_deletes: false,
            evicted: HashMap::new(),
            tables,
            sync_on_exec: false,
        }
    }

    pub fn get(&self, pid: u32) -> Option<&Process> {
        self.procs.get(&pid)
    }

    pub fn len(&self) -> usize {
        self.procs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }

    pub fn take_new_processes(&mut self) -> Vec<(u32, String)> {
        std::mem::take(&mut self.new_processes)
    }

    /// Whether entries of a live process were deleted since the last call.
    pub fn take_live_deletes(&mut self) -> bool {
        std::mem::take(&mut self.live_deletes)
    }

    /// The sampler could not resolve an address of the process `(pid, start_ns)`, or it
    /// exec'd. Decided by identity, never by PID alone, so the outcome does not depend on the
    /// order in which the per-CPU buffers deliver one process's exit and the next one's report.
    #[allow(clippy::too_many_arguments)]
    pub fn on_report(
        &mut self,
        pid: u32,
        start_ns: u64,
        exec_gen: u64,
        trigger: Trigger,
        src: &dyn ProcSource,
        stats: &Stats,
        now: Instant,
    ) {
        match trigger {
            Trigger::UnknownPid => inc(&stats.unknown_pid_reports),
            Trigger::UnknownMapping | Trigger::NewFile => inc(&stats.unknown_mapping_reports),
            Trigger::Exec => {}
        }
        self.note_identity(pid, start_ns, stats, now);
        let known = self.procs.get(&pid).map(|p| (p.state, p.start_ns));
        let same_live = known == Some((State::Live, start_ns));
        match known {
            // About an earlier holder of the PID, already replaced: late.
            Some((_, start)) if start_ns < start => return inc(&stats.events_ignored),
            // About a process that has exited: late.
            Some((State::Exiting { .. }, start)) if start == start_ns => {
                return inc(&stats.events_ignored)
            }
            _ => {}
        }
        if trigger == Trigger::Exec && !self.sync_on_exec && !same_live {
            // Only processes the sampler has asked about get entries; the exec of any other
            // process needs nothing (the sampler reports it when it is sampled).
            return;
        }
        let synced_recently = self.procs.get(&pid).is_some_and(|p| {
            !p.synced_at_exec && now.saturating_duration_since(p.last_sync) < UNKNOWN_MAPPING_RESYNC
        });
        if trigger == Trigger::UnknownMapping && same_live && synced_recently {
            return inc(&stats.events_ignored);
        }
        let identity = match src.identity(pid) {
            Ok(identity) if identity.is(start_ns) => identity,
            other => {
                // The process the event is about is gone: exited (we may not have read its
                // exit yet), or its PID already belongs to a newer process, which reports
                // itself when it is sampled.
                if same_live {
                    self.exit(pid, stats, now);
                } else {
                    inc(&stats.events_ignored);
                }
                if let Err(ProcError::Denied(_) | ProcError::Other(_)) = other {
                    inc(&stats.sync_failures);
                }
                return;
            }
        };
        match known {
            Some((_, start)) if start == start_ns => inc(&stats.resyncs),
            Some((state, _)) => {
                // The PID now belongs to another, newer process.
                if state == State::Live {
                    self.exit(pid, stats, now);
                }
                self.procs.remove(&pid);
            }
            None => {}
        }
        self.sync(pid, start_ns, exec_gen, identity, trigger, src, stats, now);
    }

    /// Whole-process exit of `(pid, start_ns)`: the entries go, once. Most exits are of
    /// processes never sampled, which own nothing: those are not worth a count.
    pub fn on_exit(&mut self, pid: u32, start_ns: u64, stats: &Stats, now: Instant) {
        self.note_identity(pid, start_ns, stats, now);
        match self.procs.get(&pid).map(|p| (p.state, p.start_ns)) {
            Some((State::Live, start)) if start == start_ns => self.exit(pid, stats, now),
            // A newer process with this PID exited, so the tracked one is long gone.
            Some((State::Live, start)) if start < start_ns => self.exit(pid, stats, now),
            // A duplicate, or the exit of an earlier holder of the PID read late.
            Some(_) => inc(&stats.events_ignored),
            None => {}
        }
    }

    /// Counts a PID seen with a newer identity than before (`pid_reuses`).
    fn note_identity(&mut self, pid: u32, start_ns: u64, stats: &Stats, now: Instant) {
        match self.identities.get_mut(&pid) {
            Some((seen, at)) if *seen == start_ns => *at = now,
            Some((seen, _)) if *seen > start_ns => {} // about an earlier holder, read late
            Some(entry) => {
                *entry = (start_ns, now);
                inc(&stats.pid_reuses);
            }
            None => {
                self.identities.insert(pid, (start_ns, now));
            }
        }
    }

    fn exit(&mut self, pid: u32, stats: &Stats, now: Instant) {
        let Some(process) = self.procs.get_mut(&pid) else {
            return;
        };
        for key in std::mem::take(&mut process.entries).into_keys() {
            self.batcher.delete(key);
        }
        for id in std::mem::take(&mut process.files) {
            self.files.release(id, now);
        }
        process.state = State::Exiting { since: now };
        inc(&stats.pids_exited);
    }

    /// Syncing: reads the maps and brings the process's entries up to date: the entries it
    /// needs are computed, then the difference to those it has is applied.
    #[allow(clippy::too_many_arguments)]
    fn sync(
        &mut self,
        pid: u32,
        start_ns: u64,
        exec_gen: u64,
        identity: Identity,
        trigger: Trigger,
        src: &dyn ProcSource,
        stats: &Stats,
        now: Instant,
    ) {
        // The image the event was about, as the sampler computes it. Learnt before the maps
        // are read: if the process exec'd since, the entries name an older image than the
        // maps they hold, the sampler does not use them, and reports the process again.
        let maps = match src.maps(pid) {
            Ok(maps) => maps,
            Err(err) => {
                inc(&stats.sync_failures);
                if matches!(err, ProcError::Gone)
                    && self.procs.get(&pid).is_some_and(|p| p.state == State::Live)
                {
                    self.exit(pid, stats, now); // vanished mid-sync
                }
                return;
            }
        };
        inc(&stats.syncs);
        // Open every file first, while the process still lives (its /proc/PID/map_files go
        // with it); only then build the new files' tables, which can take a while.
        let opened: Vec<(u32, u16)> = maps
            .iter()
            .map(|mapping| self.file_of(pid, mapping, src))
            .collect();
        self.load_new_tables(stats);
        let targets: Vec<Target> = opened
            .iter()
            .map(|&(file_id, flags)| self.target(file_id, flags))
            .collect();
        let files: Vec<u32> = opened
            .iter()
            .map(|&(file_id, _)| file_id)
            .filter(|&file_id| file_id != 0)
            .collect();
        let desired = wanted(pid, exec_gen, maps.iter().zip(targets));
        let old = match self.procs.remove(&pid) {
            Some(p) if p.state == State::Live => Some(p),
            _ => None,
        };
        let (old_entries, old_files, last_sampled) = match old {
            Some(p) => (p.entries, p.files, p.last_sampled),
            None => {
                inc(&stats.pids_seen);
                if let Some(exe) = src.exe(pid) {
                    self.new_processes.push((pid, exe));
                }
                (BTreeMap::new(), Vec::new(), now)
            }
        };
        self.apply(changes(&old_entries, &desired));
        for id in old_files {
            self.files.release(id, now);
        }
        self.procs.insert(
            pid,
            Process {
                start_ns,
                comm: identity.comm,
                state: State::Live,
                exec_gen,
                entries: desired,
                files,
                last_sampled,
                last_sync: now,
                synced_at_exec: trigger == Trigger::Exec,
            },
        );
    }

    /// Queues a sync's writes. Deleting entries of a live process also drops the sampler's
    /// per-CPU caches (`take_live_deletes`).
    fn apply(&mut self, changes: Changes) {
        for key in changes.deletes {
            self.batcher.delete(key);
            self.live_deletes = true;
        }
        for (key, value) in changes.upserts {
            self.batcher.upsert(key, value);
        }
    }

    /// The sampler saw these processes: they are the last to be evicted when the map is full.
    pub fn on_sampled(&mut self, pids: &[u32], now: Instant) {
        for pid in pids {
            if let Some(p) = self.procs.get_mut(pid) {
                p.last_sampled = now;
            }
        }
    }

    /// Catches exits the hooks missed: a live process whose PID is gone or reused.
    pub fn sweep(&mut self, src: &dyn ProcSource, stats: &Stats, now: Instant) {
        let live: Vec<(u32, u64)> = self
            .procs
            .iter()
            .filter(|(_, p)| p.state == State::Live)
            .map(|(&pid, p)| (pid, p.start_ns))
            .collect();
        for (pid, start_ns) in live {
            let alive = src.identity(pid).is_ok_and(|id| id.is(start_ns));
            if !alive {
                inc(&stats.exits_by_sweep);
                self.exit(pid, stats, now);
            }
        }
    }

    /// Forgets exited processes and unused files after their grace periods; returns the IDs of
    /// the files released.
    pub fn expire(&mut self, stats: &Stats, now: Instant) -> Vec<u32> {
        self.identities
            .retain(|_, (_, at)| now.duration_since(*at) < EXIT_GRACE);
        self.procs.retain(|_, p| match p.state {
            State::Live => true,
            State::Exiting { since } => now.duration_since(since) < EXIT_GRACE,
        });
        let released = self.files.expire(now, FILE_GRACE);
        Stats::add(&stats.files_unloaded, released.len() as u64);
        for (id, table) in &released {
            self.tables.unload(*id, *table, stats);
        }
        released.into_iter().map(|(id, _)| id).collect()
    }

    /// When the map is full: drops the entries of the least recently sampled live processes
    /// (at least `needed` entries' worth, never `keep`), which are re-synced if sampled again.
    pub fn evict(&mut self, needed: usize, keep: &[u32], stats: &Stats, now: Instant) -> usize {
        let mut candidates: Vec<(Instant, u32)> = self
            .procs
            .iter()
            .filter(|(pid, p)| {
                p.state == State::Live && !p.entries.is_empty() && !keep.contains(pid)
            })
            .map(|(&pid, p)| (p.last_sampled, pid))
            .collect();
        candidates.sort();
        let mut freed = 0;
        for (_, pid) in candidates {
            if freed >= needed {
                break;
            }
            freed += self.procs.get(&pid).map_or(0, |p| p.entries.len());
            self.exit(pid, stats, now);
            self.procs.remove(&pid); // evicted, not exited: forget it so a report re-syncs it
            inc(&stats.map_full_evictions);
        }
        freed
    }

    /// The entries the live processes need (what the map must hold, exactly).
    pub fn expected_entries(&self) -> usize {
        self.procs.values().map(|p| p.entries.len()).sum()
    }

    /// Audit: compares the map with the table. Returns (stale, missing): entries the map holds
    /// that no live process owns, and entries live processes own that the map lacks.
    pub fn audit(&self, map: &dyn MapBackend) -> std::io::Result<(usize, usize)> {
        let keys = map.keys()?;
        let mut owned: HashMap<PidMappingKey, ()> = HashMap::new();
        for (pid, p) in &self.procs {
            for key in p.entries.keys() {
                debug_assert_eq!(key.pid(), *pid);
                owned.insert(*key, ());
            }
        }
        let present: std::collections::HashSet<PidMappingKey> = keys.iter().copied().collect();
        let stale = keys.iter().filter(|k| !owned.contains_key(k)).count();
        let missing = owned.keys().filter(|k| !present.contains(k)).count();
        Ok((stale, missing))
    }

    /// Files whose reference count disagrees with the live processes' mappings.
    pub fn leaked_files(&self) -> usize {
        let mut refs: HashMap<u32, u32> = HashMap::new();
        for p in self.procs.values() {
            for id in &p.files {
                *refs.entry(*id).or_default() += 1;
            }
        }
        self.files
            .ref_counts()
            .filter(|(id, n)| refs.get(id).copied().unwrap_or(0) != *n)
            .count()
    }

    /// PIDs and entry counts, for tests and debugging.
    pub fn entries_of(&self, pid: u32) -> Option<&BTreeMap<PidMappingKey, PidMappingValue>> {
        self.procs.get(&pid).map(|p| &p.entries)
    }
}

#[cfg(test)]
#[path = "lifecycle_tests.rs"]
mod tests;
