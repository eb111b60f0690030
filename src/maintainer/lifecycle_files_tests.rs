//! Files and unwind tables in the process table: entries wait for their file's table, get it
//! (or lose it to an eviction) without a re-read of the maps, and a table built for a file
//! released meanwhile is unloaded. Against the fixtures of `lifecycle_tests.rs`.

use std::time::Duration;

use super::super::tests::{World, APP, OTHER};
use super::super::{ProcessTable, FILE_GRACE, REBUILD_AFTER};
use crate::layout::{consts, TableRef};
use crate::pipeline::Trigger;
use crate::process::files::SharedFile;
use crate::stats::Stats;
use crate::tables::TableStore;

/// A table store whose tables arrive later, when the test says so.
#[derive(Clone, Default)]
struct Deferred {
    built: std::sync::Arc<std::sync::Mutex<Vec<u32>>>,
    evicted: std::sync::Arc<std::sync::Mutex<Vec<u32>>>,
    unloaded: std::sync::Arc<std::sync::Mutex<Vec<(u32, u32)>>>,
}

impl TableStore for Deferred {
    fn request(&mut self, _: &SharedFile, _: &Stats) -> Option<TableRef> {
        None
    }
    fn ready(&mut self, _: Duration, _: &Stats) -> Vec<(u32, TableRef)> {
        let ids: Vec<u32> = self.built.lock().unwrap().drain(..).collect();
        ids.into_iter()
            .map(|id| {
                let table = TableRef {
                    first: id * 10,
                    direct: 1,
                    base: 0,
                };
                (id, table)
            })
            .chain(
                self.evicted
                    .lock()
                    .unwrap()
                    .drain(..)
                    .map(|id| (id, TableRef::default())),
            )
            .collect()
    }
    fn unload(&mut self, id: u32, table: TableRef, _: &Stats) {
        self.unloaded.lock().unwrap().push((id, table.direct));
    }
}

#[test]
fn entries_wait_for_their_table_then_get_it_without_a_resync() {
    let tables = Deferred::default();
    let mut w = World::new();
    w.table = ProcessTable::with_tables(Box::new(tables.clone()));
    w.src.spawn(10, 100, APP);
    w.report(10, Trigger::UnknownPid);
    let pending = consts::MAPPING_TABLE_PENDING as u16;
    let files = w.map.file_ids();
    assert!(!files.is_empty() && w.table.tables_pending());
    assert!(
        w.map
            .entries
            .values()
            .filter(|v| v.file_id != 0)
            .all(|v| v.flags & pending != 0),
        "while the tables are built the sampler must not guess with frame pointers"
    );
    w.ops();
    let syncs = w.counter(&w.stats.syncs);
    tables.built.lock().unwrap().extend(files.iter().copied());
    w.table.tables_ready(Duration::ZERO, &w.stats);
    w.flush();
    assert!(!w.table.tables_pending());
    for v in w.map.entries.values().filter(|v| v.file_id != 0) {
        assert_eq!(v.flags & pending, 0);
        assert_eq!((v.table.first, v.table.direct), (v.file_id * 10, 1));
    }
    assert_eq!(w.counter(&w.stats.syncs), syncs, "no re-read of the maps");
    assert!(
        w.table.take_live_deletes(),
        "the sampler's caches are dropped"
    );
    assert_eq!(w.table.audit(&w.map).unwrap(), (0, 0));
    // One table evicted: its entries stop naming its buckets before they are reused.
    let evicted = files[0];
    tables.evicted.lock().unwrap().push(evicted);
    w.table.tables_ready(Duration::ZERO, &w.stats);
    w.flush();
    for v in w.map.entries.values().filter(|v| v.file_id != 0) {
        let want = if v.file_id == evicted { 0 } else { 1 };
        assert_eq!(v.table.direct, want, "file {}", v.file_id);
    }
    assert!(w.table.take_live_deletes());
    assert_eq!(w.table.audit(&w.map).unwrap(), (0, 0));
    // Sampled again: soon after the eviction nothing happens, later it is built again.
    w.table.on_files_used(&[(evicted, 3)], &w.stats, w.now);
    assert!(
        !w.table.tables_pending(),
        "not rebuilt right after its eviction"
    );
    let later = w.now + REBUILD_AFTER + Duration::from_secs(1);
    w.table.on_files_used(&[(evicted, 3)], &w.stats, later);
    assert!(w.table.tables_pending());
    w.flush();
    let of_evicted = || w.map.entries.values().filter(|v| v.file_id == evicted);
    assert!(
        of_evicted().all(|v| v.flags & pending != 0),
        "pending while it is built"
    );
    tables.built.lock().unwrap().push(evicted);
    w.table.tables_ready(Duration::ZERO, &w.stats);
    w.flush();
    for v in w.map.entries.values().filter(|v| v.file_id == evicted) {
        assert_eq!(
            (v.flags & pending, v.table.direct),
            (0, 1),
            "its table is back"
        );
    }
    assert_eq!(w.table.audit(&w.map).unwrap(), (0, 0));
}

#[test]
fn a_table_built_for_a_file_released_meanwhile_is_unloaded() {
    let tables = Deferred::default();
    let mut w = World::new();
    w.table = ProcessTable::with_tables(Box::new(tables.clone()));
    w.src.spawn(10, 100, OTHER);
    w.report(10, Trigger::UnknownPid);
    let id = w
        .map
        .entries
        .values()
        .map(|v| v.file_id)
        .find(|&id| id != 0)
        .unwrap();
    w.src.kill(10);
    w.exit(10);
    w.table.expire(&w.stats, w.now + FILE_GRACE);
    tables.built.lock().unwrap().push(id);
    w.table.tables_ready(Duration::ZERO, &w.stats);
    // Released without a table, then the table that arrived is unloaded at once.
    assert_eq!(*tables.unloaded.lock().unwrap(), vec![(id, 0), (id, 1)]);
    assert!(!w.table.tables_pending());
}

#[test]
fn an_executed_binary_is_registered_once_without_a_reference() {
    use std::os::unix::fs::MetadataExt;
    let mut w = World::new();
    let meta = std::fs::metadata("/bin/sh").unwrap();
    w.table.on_executed(
        "/bin/sh",
        meta.dev(),
        meta.ino() + 1,
        &w.src,
        &w.stats,
        w.now,
    );
    assert!(
        w.table.take_new_files().is_empty(),
        "another inode: not this file"
    );
    w.table
        .on_executed("sh", meta.dev(), meta.ino(), &w.src, &w.stats, w.now);
    assert!(
        w.table.take_new_files().is_empty(),
        "a relative path names nothing we can open"
    );
    for _ in 0..2 {
        w.table
            .on_executed("/bin/sh", meta.dev(), meta.ino(), &w.src, &w.stats, w.now);
    }
    let new = w.table.take_new_files();
    assert_eq!(new.len(), 1, "registered once");
    assert_eq!(w.table.files.refs(new[0].id), Some(0), "held by no process");
    let later = w.now + FILE_GRACE;
    assert_eq!(
        w.table.expire(&w.stats, later),
        vec![new[0].id],
        "released after the grace"
    );
}
