//! The process table's side of files and their unwind tables: every file a process maps is
//! registered once and referenced once per mapping; a new file's table is requested from the
//! [`TableStore`](crate::tables::TableStore), and until it is built the entries naming the file carry
//! `MAPPING_TABLE_PENDING`. When a table arrives or is evicted, every live entry naming the file
//! is rewritten in place (no re-read of the maps), and the file is published again.
//!
//! Part of [`ProcessTable`] (a child of `lifecycle.rs`, sharing its fields); what the entries
//! are is `crate::pid_mappings`'s, and the tables themselves are `crate::tables`'.

use std::time::{Duration, Instant};

use super::{ProcessTable, PENDING, REBUILD_AFTER};
use crate::layout::{consts, TableRef};
use crate::pid_mappings::wanted::Target;
use crate::process::files::{FileKey, SharedFile};
use crate::process::maps::{Backing, Mapping};
use crate::process::source::ProcSource;
use crate::stats::Stats;

impl ProcessTable {
    pub fn take_new_files(&mut self) -> Vec<SharedFile> {
        std::mem::take(&mut self.new_files)
    }

    /// Makes announced files known to the sampler's first sight. Only after the announcement:
    /// a sample may name a file as soon as it is published.
    pub fn publish(&mut self, files: &[SharedFile], stats: &Stats) {
        let again: Vec<SharedFile> = std::mem::take(&mut self.republish)
            .into_iter()
            .filter_map(|id| self.files.info(id))
            .collect();
        for file in files.iter().chain(&again) {
            let table = self.files.table(file.id);
            let pending = self.pending_tables.contains(&file.id);
            self.tables.publish(file, table, pending, stats);
        }
    }

    /// Whether tables are being built.
    pub fn tables_pending(&self) -> bool {
        !self.pending_tables.is_empty()
    }

    /// Takes the tables built since the last call (waiting up to `wait` for one) and the files
    /// whose tables were evicted: every live entry naming them gets the table (or none), and
    /// the files are published again.
    pub fn tables_ready(&mut self, wait: Duration, stats: &Stats) {
        for (id, table) in self.tables.ready(wait, stats) {
            self.pending_tables.remove(&id);
            if self.files.info(id).is_none() {
                // Released while it was built.
                self.tables.unload(id, table, stats);
                continue;
            }
            if table.direct == 0 && self.files.table(id).direct > 0 {
                self.evicted.insert(id, Instant::now());
            }
            self.retable(id, table, false);
        }
    }

    /// Gives every live entry naming file `id` its table (none: evicted), or marks them
    /// pending; the sampler's per-CPU caches are dropped and the file is published again.
    fn retable(&mut self, id: u32, table: TableRef, pending: bool) {
        self.files.set_table(id, table);
        let flag = if pending { PENDING } else { 0 };
        for process in self.procs.values_mut() {
            for (key, value) in process.entries.iter_mut() {
                if value.file_id == id && (value.flags & PENDING != flag || value.table != table) {
                    value.table = table;
                    value.flags = (value.flags & !PENDING) | flag;
                    self.batcher.upsert(*key, *value);
                }
            }
        }
        self.live_deletes = true;
        self.republish.push(id);
    }

    /// A binary was exec'd. It is registered (without a reference: samples naming it keep it)
    /// so first sight can unwind the processes running it even when none of them lives long
    /// enough to be synced (a shell loop's `true` or `date`).
    pub fn on_executed(
        &mut self,
        path: &str,
        dev: u64,
        inode: u64,
        src: &dyn ProcSource,
        stats: &Stats,
        now: Instant,
    ) {
        if self.files.find_by_inode(dev, inode).is_some() {
            return;
        }
        let Some((key, file)) = src.open_executed(path, dev, inode) else {
            return;
        };
        let acquired = self.files.acquire(key, path, (dev, inode), || Some(file));
        self.register(acquired.new);
        self.files.release(acquired.id, now);
        self.load_new_tables(stats);
    }

    /// The file ID (0 for none) and mapping flags of one executable mapping.
    pub(super) fn file_of(
        &mut self,
        pid: u32,
        mapping: &Mapping,
        src: &dyn ProcSource,
    ) -> (u32, u16) {
        let anon = (0, consts::MAPPING_ANON as u16);
        let (path, key) = match &mapping.backing {
            Backing::File { path, .. } => {
                if let Some(id) = self.files.find_by_inode(mapping.dev, mapping.inode) {
                    self.files.add_ref(id);
                    return (id, 0);
                }
                let fallback = FileKey {
                    dev: mapping.dev,
                    inode: mapping.inode,
                    size: 0,
                    mtime_ns: 0,
                };
                match src.open(pid, mapping, path) {
                    Some((key, file)) => {
                        let acquired =
                            self.files
                                .acquire(key, path, (mapping.dev, mapping.inode), || Some(file));
                        self.register(acquired.new);
                        return (acquired.id, 0);
                    }
                    None => (path.clone(), fallback),
                }
            }
            Backing::Special(name) if name == "[vdso]" => (
                name.clone(),
                FileKey {
                    dev: 0,
                    inode: 0,
                    size: 0,
                    mtime_ns: 0,
                },
            ),
            _ => return anon,
        };
        let acquired = self
            .files
            .acquire(key, &path, (key.dev, key.inode), || None);
        self.register(acquired.new);
        (acquired.id, 0)
    }

    /// A file seen for the first time: its table is loaded (`load_new_tables`) and it is
    /// announced.
    fn register(&mut self, new: Option<SharedFile>) {
        if let Some(file) = new {
            self.tables_to_load.push(file.clone());
            self.new_files.push(file);
        }
    }

    pub(super) fn load_new_tables(&mut self, stats: &Stats) {
        for file in std::mem::take(&mut self.tables_to_load) {
            match self.tables.request(&file, stats) {
                Some(table) => self.files.set_table(file.id, table),
                None => {
                    self.pending_tables.insert(file.id);
                }
            }
        }
    }

    /// What the entries of a mapping of file `file_id` (0: none) with `flags` name: the file's
    /// table, or the pending flag while it is built.
    pub(super) fn target(&self, file_id: u32, flags: u16) -> Target {
        let pending = if self.pending_tables.contains(&file_id) {
            PENDING
        } else {
            0
        };
        Target {
            file_id,
            flags: flags | pending,
            table: self.files.table(file_id),
        }
    }

    /// Samples named these files (`(file, samples)`): they stay registered, and their tables
    /// are built first and evicted last.
    /// A file whose table was evicted is built again when it is sampled after `REBUILD_AFTER`
    /// (not at once: two hot files that do not fit together would evict each other forever).
    pub fn on_files_used(&mut self, files: &[(u32, u32)], stats: &Stats, now: Instant) {
        let ids: Vec<u32> = files.iter().map(|&(id, _)| id).collect();
        self.files.touch(&ids, now);
        self.tables.sampled(files);
        self.evicted.retain(|&id, _| self.files.info(id).is_some());
        for id in ids {
            let due = self
                .evicted
                .get(&id)
                .is_some_and(|&at| now >= at + REBUILD_AFTER);
            let Some(file) = self.files.info(id).filter(|_| due) else {
                continue;
            };
            self.evicted.remove(&id);
            match self.tables.request(&file, stats) {
                None => {
                    self.pending_tables.insert(id);
                    self.retable(id, TableRef::default(), true);
                }
                Some(table) => self.retable(id, table, false),
            }
        }
    }
}

#[cfg(test)]
#[path = "lifecycle_files_tests.rs"]
mod tests;
