//! Lifecycle tests against a scripted `/proc` and the fake map: one per case the design names,
//! each asserting the exact map operations issued. The fixtures (`FakeProc`, `World`) serve
//! the tests of files and tables too (`lifecycle_files_tests.rs`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;

use super::*;
use crate::maintainer::fake_map::{FakeMap, Op};
use crate::pid_mappings::prefixes::marker_key;
use crate::process::files::FileKey;
use crate::process::maps::{parse_maps, Mapping};
use crate::process::source::NS_PER_TICK;

#[derive(Default)]
pub(super) struct FakeProc {
    procs: RefCell<HashMap<u32, (Identity, String)>>,
    /// Identity answers, but the maps read fails as if the process just exited.
    dies_mid_sync: RefCell<Option<u32>>,
    exec_gens: RefCell<HashMap<u32, u64>>,
    /// The start (ns) of the last process spawned on each PID: what its events carry.
    starts: RefCell<HashMap<u32, u64>>,
}

impl FakeProc {
    /// A process `pid` started at `start_time` ticks (events see `start_time * NS_PER_TICK`).
    pub(super) fn spawn(&self, pid: u32, start_time: u64, maps: &str) {
        let id = Identity {
            comm: format!("p{pid}"),
            start_time,
        };
        self.procs.borrow_mut().insert(pid, (id, maps.to_string()));
        self.starts
            .borrow_mut()
            .insert(pid, start_time * NS_PER_TICK);
    }
    fn start_of(&self, pid: u32) -> u64 {
        self.starts.borrow().get(&pid).copied().unwrap_or(0)
    }
    pub(super) fn kill(&self, pid: u32) {
        self.procs.borrow_mut().remove(&pid);
    }
}

impl ProcSource for FakeProc {
    fn identity(&self, pid: u32) -> Result<Identity, ProcError> {
        self.procs
            .borrow()
            .get(&pid)
            .map(|(id, _)| id.clone())
            .ok_or(ProcError::Gone)
    }
    fn maps(&self, pid: u32) -> Result<Vec<Mapping>, ProcError> {
        if *self.dies_mid_sync.borrow() == Some(pid) {
            return Err(ProcError::Gone);
        }
        let procs = self.procs.borrow();
        let (_, maps) = procs.get(&pid).ok_or(ProcError::Gone)?;
        Ok(parse_maps(maps).executable.iter().cloned().collect())
    }
    fn open(&self, _: u32, _: &Mapping, _: &str) -> Option<(FileKey, File)> {
        None
    }
}

pub(super) const APP: &str = "\
400000-402000 r-xp 00000000 08:01 11 /bin/app
7f0000000000-7f0000003000 r-xp 00000000 08:01 22 /lib/libc.so.6
";
pub(super) const OTHER: &str = "500000-501000 r-xp 00000000 08:01 33 /bin/other\n";

pub(super) struct World {
    pub(super) table: ProcessTable,
    pub(super) map: FakeMap,
    pub(super) src: FakeProc,
    pub(super) stats: Stats,
    pub(super) now: Instant,
}

impl World {
    pub(super) fn new() -> Self {
        Self {
            table: ProcessTable::default(),
            map: FakeMap::new(10_000),
            src: FakeProc::default(),
            stats: Stats::default(),
            now: Instant::now(),
        }
    }
    /// A report about the last process spawned on `pid`.
    pub(super) fn report(&mut self, pid: u32, trigger: Trigger) {
        self.report_as(pid, self.src.start_of(pid), trigger);
    }
    /// A report about the last process spawned on `pid`, its map writes left queued.
    fn report_unflushed(&mut self, pid: u32) {
        let start = self.src.start_of(pid);
        let (src, stats) = (&self.src, &self.stats);
        let now = self.now;
        self.table
            .on_report(pid, start, start, Trigger::UnknownPid, src, stats, now);
    }
    fn report_as(&mut self, pid: u32, start_ns: u64, trigger: Trigger) {
        // As the sampler would: the image's generation (here scripted: the last exec's, or
        // the start without one).
        let exec_gen = self.src.exec_gens.borrow().get(&pid).copied();
        let exec_gen = exec_gen.unwrap_or(start_ns);
        self.table.on_report(
            pid,
            start_ns,
            exec_gen,
            trigger,
            &self.src,
            &self.stats,
            self.now,
        );
        self.flush();
    }
    /// The exit of the last process spawned on `pid`.
    pub(super) fn exit(&mut self, pid: u32) {
        self.exit_as(pid, self.src.start_of(pid));
    }
    fn exit_as(&mut self, pid: u32, start_ns: u64) {
        self.table.on_exit(pid, start_ns, &self.stats, self.now);
        self.flush();
    }
    pub(super) fn flush(&mut self) {
        let report = self.table.batcher.flush(&mut self.map, &self.stats);
        assert!(report.rejected_full.is_empty());
    }
    pub(super) fn ops(&mut self) -> Vec<Op> {
        std::mem::take(&mut self.map.ops)
    }
    pub(super) fn counter(&self, c: &AtomicU64) -> u64 {
        Stats::get(c)
    }
}

/// Marker + /bin/app (one 8 KiB block) + libc (4 KiB + 8 KiB blocks).
fn app_keys(pid: u32) -> Vec<PidMappingKey> {
    let mut keys = vec![
        marker_key(pid),
        PidMappingKey::new(pid, 0x400000, 96 - 13),
        PidMappingKey::new(pid, 0x7f00_0000_0000, 96 - 13),
        PidMappingKey::new(pid, 0x7f00_0000_2000, 96 - 12),
    ];
    keys.sort();
    keys
}

#[test]
fn a_new_process_gets_a_marker_and_its_prefixes_in_one_batch() {
    let mut w = World::new();
    w.src.spawn(10, 100, APP);
    w.report(10, Trigger::UnknownPid);
    assert_eq!(w.ops(), vec![Op::Update(app_keys(10))]);
    let marker = w.map.entries[&marker_key(10)];
    assert_eq!(marker.flags as u64, consts::MAPPING_MARKER);
    let libc = w.map.entries[&PidMappingKey::new(10, 0x7f00_0000_2000, 84)];
    assert_eq!(
        (libc.bias, libc.prefix_addr, libc.prefixlen),
        (0x7f00_0000_0000, 0x7f00_0000_2000, 84)
    );
    assert_eq!(w.counter(&w.stats.pids_seen), 1);
    assert_eq!(w.table.files.len(), 2);
}

#[test]
fn a_duplicate_exit_deletes_nothing_twice() {
    let mut w = World::new();
    w.src.spawn(10, 100, APP);
    w.report(10, Trigger::UnknownPid);
    w.ops();
    w.src.kill(10);
    w.exit(10);
    assert_eq!(w.ops(), vec![Op::Delete(app_keys(10))]);
    w.exit(10);
    assert_eq!(w.ops(), vec![], "the second exit issues nothing");
    assert_eq!(w.counter(&w.stats.events_ignored), 1);
    assert_eq!(w.counter(&w.stats.map_delete_absent), 0);
    assert!(w.map.entries.is_empty());
}

#[test]
fn a_stale_report_after_exit_is_a_no_op() {
    let mut w = World::new();
    w.src.spawn(10, 100, APP);
    w.report(10, Trigger::UnknownPid);
    w.exit(10); // the process is exiting but /proc still shows it (a zombie)
    w.ops();
    w.report(10, Trigger::UnknownPid);
    assert_eq!(w.ops(), vec![]);
    w.src.kill(10);
    w.report(10, Trigger::UnknownPid);
    assert_eq!(w.ops(), vec![]);
    assert_eq!(w.counter(&w.stats.events_ignored), 2);
}

#[test]
fn unreadable_maps_are_a_counted_failure_that_writes_nothing() {
    struct Denied(FakeProc);
    impl ProcSource for Denied {
        fn identity(&self, pid: u32) -> Result<Identity, ProcError> {
            self.0.identity(pid)
        }
        fn maps(&self, _: u32) -> Result<Vec<Mapping>, ProcError> {
            Err(ProcError::Denied(std::io::Error::from_raw_os_error(
                libc::EACCES,
            )))
        }
        fn open(&self, pid: u32, m: &Mapping, path: &str) -> Option<(FileKey, File)> {
            self.0.open(pid, m, path)
        }
    }
    let mut w = World::new();
    w.src.spawn(10, 100, APP);
    let denied = Denied(std::mem::take(&mut w.src));
    let start = denied.0.start_of(10);
    w.table.on_report(
        10,
        start,
        start,
        Trigger::UnknownPid,
        &denied,
        &w.stats,
        w.now,
    );
    w.flush();
    assert_eq!(w.ops(), vec![]);
    assert!(w.table.get(10).is_none());
    assert_eq!(w.counter(&w.stats.sync_failures), 1);
}

#[test]
fn a_process_that_vanishes_mid_sync_leaves_nothing() {
    let mut w = World::new();
    w.src.spawn(10, 100, APP);
    *w.src.dies_mid_sync.borrow_mut() = Some(10);
    w.report(10, Trigger::UnknownPid);
    assert_eq!(w.ops(), vec![]);
    assert!(w.table.get(10).is_none());
    w.exit(10);
    assert_eq!(w.ops(), vec![], "its exit then finds nothing to delete");
    assert_eq!(w.counter(&w.stats.sync_failures), 1);
}

#[test]
fn a_reused_pid_replaces_the_old_process_entries() {
    let mut w = World::new();
    w.src.spawn(10, 100, APP);
    w.report(10, Trigger::UnknownPid);
    w.ops();
    w.src.spawn(10, 200, OTHER); // the old one died unseen; a new one got its PID
    w.report(10, Trigger::UnknownPid);
    let mut stale: Vec<_> = app_keys(10)
        .into_iter()
        .filter(|k| *k != marker_key(10))
        .collect();
    stale.sort();
    let mut fresh = vec![marker_key(10), PidMappingKey::new(10, 0x500000, 84)];
    fresh.sort();
    assert_eq!(w.ops(), vec![Op::Delete(stale), Op::Update(fresh)]);
    assert_eq!(w.table.get(10).unwrap().start_ns, 200 * NS_PER_TICK);
    assert_eq!(w.counter(&w.stats.pid_reuses), 1);
    assert_eq!(w.counter(&w.stats.pids_exited), 1);
}

#[test]
fn an_exec_inside_a_live_process_rewrites_only_what_changed() {
    let mut w = World::new();
    w.src.spawn(10, 100, APP);
    w.report(10, Trigger::UnknownPid);
    w.ops();
    let new_maps = "\
500000-501000 r-xp 00000000 08:01 33 /bin/other
7f0000000000-7f0000003000 r-xp 00000000 08:01 22 /lib/libc.so.6
";
    w.src.spawn(10, 100, new_maps); // same process (start time), new image
    w.src.exec_gens.borrow_mut().insert(10, 555);
    w.report(10, Trigger::Exec);
    let ops = w.ops();
    assert_eq!(
        ops[0],
        Op::Delete(vec![PidMappingKey::new(10, 0x400000, 83)])
    );
    let Op::Update(updated) = &ops[1] else {
        panic!("{ops:?}")
    };
    assert_eq!(
        updated.len(),
        4,
        "the marker and libc carry the new exec_gen, /bin/other is new"
    );
    assert!(w.map.entries.values().all(|v| v.exec_gen == 555));
    assert!(
        w.table.take_live_deletes(),
        "the sampler's caches must be invalidated"
    );
}

#[test]
fn an_exec_of_an_unknown_process_needs_nothing() {
    let mut w = World::new();
    w.src.spawn(10, 100, APP);
    w.report(10, Trigger::Exec);
    assert_eq!(w.ops(), vec![]);
    assert!(w.table.get(10).is_none());
}

#[test]
fn with_sync_on_exec_an_exec_syncs_a_new_process_at_once() {
    let mut w = World::new();
    w.table.sync_on_exec = true;
    w.src.spawn(10, 100, APP);
    w.report(10, Trigger::Exec);
    assert_eq!(w.ops(), vec![Op::Update(app_keys(10))]);
}

#[test]
fn a_leader_exiting_while_threads_live_keeps_the_process() {
    // The sampler reports no exit for it (signal->live > 0); the process keeps its PID and
    // start time, so a sweep and a later report keep its entries.
    let mut w = World::new();
    w.src.spawn(10, 100, APP);
    w.report(10, Trigger::UnknownPid);
    w.ops();
    w.table.sweep(&w.src, &w.stats, w.now);
    w.report(10, Trigger::UnknownMapping);
    assert_eq!(
        w.counter(&w.stats.resyncs),
        0,
        "synced moments ago: not again"
    );
    w.now += UNKNOWN_MAPPING_RESYNC;
    w.report(10, Trigger::UnknownMapping);
    assert_eq!(w.ops(), vec![], "a resync of unchanged maps writes nothing");
    assert_eq!(w.counter(&w.stats.resyncs), 1);
    assert_eq!(w.table.get(10).unwrap().state, State::Live);
}

#[test]
fn the_sweep_catches_a_missed_exit_once() {
    let mut w = World::new();
    w.src.spawn(10, 100, APP);
    w.report(10, Trigger::UnknownPid);
    w.ops();
    w.src.kill(10);
    w.table.sweep(&w.src, &w.stats, w.now);
    w.table.sweep(&w.src, &w.stats, w.now);
    w.flush();
    assert_eq!(w.ops(), vec![Op::Delete(app_keys(10))]);
    assert_eq!(w.counter(&w.stats.exits_by_sweep), 1);
    w.exit(10); // the late exit event
    assert_eq!(w.ops(), vec![]);
}

#[test]
fn shared_files_are_released_when_the_last_process_goes() {
    let mut w = World::new();
    w.src.spawn(10, 100, APP);
    w.src.spawn(11, 101, APP);
    w.report(10, Trigger::UnknownPid);
    w.report(11, Trigger::UnknownPid);
    assert_eq!(w.table.files.len(), 2, "shared, not duplicated");
    w.exit(10);
    w.exit(11);
    assert_eq!(w.table.leaked_files(), 0);
    w.table.expire(&w.stats, w.now + FILE_GRACE + EXIT_GRACE);
    assert!(w.table.files.is_empty());
    assert!(w.table.is_empty());
    assert_eq!(w.counter(&w.stats.files_unloaded), 2);
}

#[test]
fn audits_find_stale_and_missing_entries() {
    let mut w = World::new();
    w.src.spawn(10, 100, APP);
    w.report(10, Trigger::UnknownPid);
    assert_eq!(w.table.audit(&w.map).unwrap(), (0, 0));
    assert_eq!(w.table.expected_entries(), 4);
    let stray = PidMappingKey::new(99, 0x1000, 84);
    w.map.entries.insert(stray, PidMappingValue::default());
    w.map.entries.remove(&marker_key(10));
    assert_eq!(w.table.audit(&w.map).unwrap(), (1, 1));
}

#[test]
fn a_full_map_evicts_the_least_recently_sampled_process() {
    let mut w = World::new();
    w.map.capacity = 8;
    w.src.spawn(10, 100, APP);
    w.src.spawn(11, 101, OTHER);
    w.report(10, Trigger::UnknownPid);
    w.now += Duration::from_secs(1);
    w.report_unflushed(11);
    let report = w.table.batcher.flush(&mut w.map, &w.stats);
    assert_eq!(report.rejected_full.len(), 0);
    w.src.spawn(12, 102, APP);
    w.now += Duration::from_secs(1);
    w.table.on_sampled(&[10], w.now);
    w.report_unflushed(12);
    let report = w.table.batcher.flush(&mut w.map, &w.stats);
    assert!(!report.rejected_full.is_empty());
    let freed = w
        .table
        .evict(report.rejected_full.len(), &[12], &w.stats, w.now);
    assert!(freed >= report.rejected_full.len());
    assert!(w.table.get(11).is_none(), "11 was sampled least recently");
    assert!(w.table.get(10).is_some(), "10 was sampled recently: kept");
    for (key, value) in report.rejected_full {
        w.table.batcher.upsert(key, value);
    }
    w.flush();
    assert_eq!(w.map.keys_of(12).len(), 4);
    assert_eq!(w.counter(&w.stats.map_full_evictions), 1);
}

/// Every order in which one PID's events can reach the maintainer when process A exits and
/// process B gets its PID at once (per-CPU buffers keep no order between CPUs): B ends up live
/// with exactly its own entries, A's are gone, and nothing is deleted twice.
#[test]
fn a_reused_pid_ends_the_same_in_every_event_order() {
    #[derive(Clone, Copy, Debug)]
    enum Ev {
        AExec,
        AExit,
        BExec,
        BReport,
        Sweep,
    }
    let events = [Ev::AExec, Ev::AExit, Ev::BExec, Ev::BReport, Ev::Sweep];
    let (a, b) = (100 * NS_PER_TICK + 7, 250 * NS_PER_TICK + 3);
    let mut orders = Vec::new();
    permutations(&mut events.to_vec(), 0, &mut orders);
    assert_eq!(orders.len(), 120);
    for sync_on_exec in [false, true] {
        for order in &orders {
            let mut w = World::new();
            w.table.sync_on_exec = sync_on_exec;
            w.src.spawn(10, 100, APP);
            w.report_as(10, a, Trigger::UnknownPid);
            w.ops();
            // In the kernel A has exited and B runs on PID 10, exec'd at 555.
            w.src.kill(10);
            w.src.spawn(10, 250, OTHER);
            w.src.exec_gens.borrow_mut().insert(10, 555);
            for ev in order {
                match ev {
                    Ev::AExec => w.report_as(10, a, Trigger::Exec),
                    Ev::AExit => w.exit_as(10, a),
                    Ev::BExec => w.report_as(10, b, Trigger::Exec),
                    Ev::BReport => w.report_as(10, b, Trigger::UnknownPid),
                    Ev::Sweep => {
                        w.table.sweep(&w.src, &w.stats, w.now);
                        w.flush();
                    }
                }
            }
            let why = format!("order {order:?}, sync_on_exec {sync_on_exec}");
            let process = w.table.get(10).expect(&why);
            assert_eq!((process.start_ns, process.state), (b, State::Live), "{why}");
            let mut want = vec![marker_key(10), PidMappingKey::new(10, 0x500000, 84)];
            want.sort();
            assert_eq!(w.map.keys_of(10), want, "{why}");
            assert!(
                w.map.entries.values().all(|v| v.exec_gen == 555),
                "{why}: an entry of A's address space survived"
            );
            assert_eq!(w.table.audit(&w.map).unwrap(), (0, 0), "{why}");
            assert_eq!(w.counter(&w.stats.map_delete_absent), 0, "{why}");
            assert_eq!(w.counter(&w.stats.map_delete_errors), 0, "{why}");
            assert_eq!(w.counter(&w.stats.pid_reuses), 1, "{why}");
            assert_eq!(w.counter(&w.stats.pids_exited), 1, "{why}: A exits once");
        }
    }
}

fn permutations<T: Copy>(items: &mut Vec<T>, k: usize, out: &mut Vec<Vec<T>>) {
    if k == items.len() {
        out.push(items.clone());
        return;
    }
    for i in k..items.len() {
        items.swap(k, i);
        permutations(items, k + 1, out);
        items.swap(k, i);
    }
}

#[test]
fn an_exit_or_report_of_another_identity_never_touches_the_live_process() {
    let mut w = World::new();
    w.src.spawn(10, 250, OTHER);
    let b = 250 * NS_PER_TICK;
    w.report_as(10, b, Trigger::UnknownPid);
    w.ops();
    // A late exit and a late report of the PID's previous holder.
    w.exit_as(10, 100 * NS_PER_TICK);
    w.report_as(10, 100 * NS_PER_TICK, Trigger::UnknownPid);
    assert_eq!(w.ops(), vec![], "nothing of B's is deleted");
    assert_eq!(w.counter(&w.stats.events_ignored), 2);
    assert_eq!(w.table.get(10).unwrap().state, State::Live);
    // A report from a process that /proc no longer shows (already replaced) syncs nothing.
    w.report_as(10, 300 * NS_PER_TICK, Trigger::UnknownPid);
    assert_eq!(w.ops(), vec![]);
    assert_eq!(w.table.get(10).unwrap().start_ns, b);
}

#[test]
fn a_report_within_the_exit_grace_starts_the_new_process() {
    let mut w = World::new();
    w.src.spawn(10, 100, APP);
    w.report(10, Trigger::UnknownPid);
    w.src.kill(10);
    w.exit(10);
    w.ops();
    w.src.spawn(10, 101, OTHER); // 10 ms later, well within EXIT_GRACE
    w.report(10, Trigger::UnknownPid);
    let mut fresh = vec![marker_key(10), PidMappingKey::new(10, 0x500000, 84)];
    fresh.sort();
    assert_eq!(w.ops(), vec![Op::Update(fresh)]);
    assert_eq!(w.counter(&w.stats.pid_reuses), 1);
}

#[test]
fn a_library_mapped_since_the_last_sync_is_synced_at_once() {
    // An unknown mapping right after a sync is taken for a stray address and waits; one where
    // the kernel's record shows a file (a library dlopen'd or mapped by ld.so since) does not.
    let mut w = World::new();
    w.src.spawn(10, 100, APP);
    w.report(10, Trigger::UnknownPid);
    w.ops();
    let more = format!("{APP}500000-501000 r-xp 00000000 08:01 33 /bin/other\n");
    w.src.spawn(10, 100, &more);
    w.report(10, Trigger::UnknownMapping);
    assert_eq!(w.counter(&w.stats.resyncs), 0, "a stray address waits");
    w.report(10, Trigger::NewFile);
    assert_eq!(w.counter(&w.stats.resyncs), 1, "a new file does not");
    assert!(
        w.map
            .keys_of(10)
            .contains(&PidMappingKey::new(10, 0x500000, 84)),
        "the new library's entry is written"
    );
}
