//! Unwind tables in the kernel: each executable file's table (read by `crate::cfi`, encoded by
//! `crate::unwind`) is loaded once into the `unwind_buckets` array, shared by every process that
//! maps the file, and freed when the file is released. Each registered file is also published in
//! `file_tables`, by inode, so the sampler can unwind processes it meets before they are synced
//! (first sight).
//!
//! This module owns the bookkeeping of which files' tables are loaded where ([`TableStore`],
//! [`BpfTables`], [`BucketAllocator`]), the build queue and the eviction order (`lru.rs`), and
//! the extractor thread that builds tables (`extractor.rs`): a file's table is pending until
//! `ready` loads it. When bucket space runs out, the tables of the least recently sampled files
//! are evicted: `ready` reports them with no table, so their entries stop naming the buckets,
//! and only the next call frees the buckets and loads the new table there.
//!
//! A leaf below the maintainer thread, which owns the one [`TableStore`] and so is the only
//! writer of both maps, like for `pid_mappings`; it decides when tables are requested and
//! rewrites the entries that name them. Nothing here imports a thread module. Building a table
//! takes both `crate::cfi` and `crate::unwind`, so the tests of the two together live here
//! (`encode_tests.rs`, `fuzz_tests.rs`).

pub mod cache;
pub mod extractor;
pub mod lru;

#[cfg(test)]
mod encode_tests;
#[cfg(test)]
mod fuzz_tests;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::layout::{FileTableKey, FileTableValue, TableRef, UNWIND_BUCKET_BYTES};
use crate::process::files::{FileInfo, SharedFile};
use crate::stats::Stats;
use crate::sys::bpf::Map;
use crate::unwind::compact::CompactTable;
use extractor::Extractor;
use lru::TableLru;

/// Where tables go; a real BPF array or nothing (tests, or a map that could not be created).
pub trait TableStore: Send {
    /// Starts on the table of a newly registered file. `Some` when it is settled at once;
    /// `None` while it is built elsewhere (`ready` hands it over). `TableRef::default()` (no
    /// buckets): the file has no usable call-frame information or there is no room, and frames
    /// in it are walked with frame pointers.
    fn request(&mut self, file: &SharedFile, stats: &Stats) -> Option<TableRef>;
    /// Tables built since the last call, loaded into the kernel, by file ID, and files whose
    /// tables were evicted to make room (no buckets). Waits up to `wait` for one when some are
    /// on the way and none is ready.
    fn ready(&mut self, _wait: Duration, _stats: &Stats) -> Vec<(u32, TableRef)> {
        Vec::new()
    }
    /// Samples named these files (`(file, samples)`): they are built first and evicted last.
    fn sampled(&mut self, _files: &[(u32, u32)]) {}
    /// Makes a file known to first sight (once user space can name it), with its table or as
    /// pending.
    fn publish(&mut self, _file: &FileInfo, _table: TableRef, _pending: bool, _stats: &Stats) {}
    /// Frees a released file's table buckets and withdraws the file from first sight.
    fn unload(&mut self, file_id: u32, table: TableRef, stats: &Stats);
}

/// No tables at all.
pub struct NoTables;

impl TableStore for NoTables {
    fn request(&mut self, _: &SharedFile, _: &Stats) -> Option<TableRef> {
        Some(TableRef::default())
    }
    fn unload(&mut self, _: u32, _: TableRef, _: &Stats) {}
}

/// First-fit allocation of contiguous bucket ranges in a fixed array.
#[derive(Debug, Clone)]
pub struct BucketAllocator {
    /// Free ranges: start → length, never adjacent (merged on free).
    free: BTreeMap<u32, u32>,
    capacity: u32,
}

impl BucketAllocator {
    pub fn new(capacity: u32) -> Self {
        let mut free = BTreeMap::new();
        if capacity > 0 {
            free.insert(0, capacity);
        }
        Self { free, capacity }
    }

    pub fn alloc(&mut self, n: u32) -> Option<u32> {
        if n == 0 {
            return None;
        }
        let (&start, &len) = self.free.iter().find(|(_, &len)| len >= n)?;
        self.free.remove(&start);
        if len > n {
            self.free.insert(start + n, len - n);
        }
        Some(start)
    }

    /// Whether `n` contiguous buckets are free.
    pub fn fits(&self, n: u32) -> bool {
        n == 0 || self.free.values().any(|&len| len >= n)
    }

    pub fn free(&mut self, start: u32, n: u32) {
        if n == 0 || start.checked_add(n).is_none_or(|end| end > self.capacity) {
            return;
        }
        let (mut start, mut n) = (start, n);
        if let Some((&prev, &len)) = self.free.range(..start).next_back() {
            if prev + len == start {
                self.free.remove(&prev);
                start = prev;
                n += len;
            }
        }
        if let Some(&len) = self.free.get(&(start + n)) {
            self.free.remove(&(start + n));
            n += len;
        }
        self.free.insert(start, n);
    }

    /// Buckets in use.
    pub fn used(&self) -> u32 {
        self.capacity - self.free.values().sum::<u32>()
    }
}

/// Tables in the sampler's `unwind_buckets` array, files in its `file_tables` hash.
pub struct BpfTables {
    buckets: Map,
    /// None: first sight is off (the sampler has no such map).
    file_tables: Option<Map>,
    /// The `file_tables` key of each published file, by file ID.
    published: std::collections::HashMap<u32, FileTableKey>,
    allocator: BucketAllocator,
    vdso: Option<TableRef>,
    /// `None`: the thread could not be started; tables are built here.
    extractor: Option<Extractor>,
    lru: TableLru,
    /// Buckets of evicted tables, freed at the next `ready` (once no entry names them).
    evicted: Vec<(u32, u32)>,
    /// Built tables waiting for the evicted buckets.
    deferred: Vec<(SharedFile, CompactTable)>,
}

/// What became of a built table.
enum Install {
    Loaded(TableRef),
    /// These files' tables make room for it at the next call.
    Evicting(Vec<u32>, CompactTable),
}

impl BpfTables {
    pub fn new(buckets: Map, file_tables: Option<Map>) -> Self {
        let allocator = BucketAllocator::new(buckets.max_entries());
        Self {
            buckets,
            file_tables,
            published: Default::default(),
            allocator,
            vdso: None,
            extractor: Extractor::spawn(cache::TableCache::from_env())
                .map_err(|e| crate::log::warn(&format!("tables are built on the maintainer: {e}")))
                .ok(),
            lru: TableLru::default(),
            evicted: Vec::new(),
            deferred: Vec::new(),
        }
    }

    fn write(&self, first: u32, table: &CompactTable) -> Result<(), String> {
        let buckets = table.buckets();
        for (chunk_index, chunk) in buckets.chunks(512).enumerate() {
            let start = first + (chunk_index * 512) as u32;
            let keys: Vec<u8> = (0..chunk.len() as u32)
                .flat_map(|i| (start + i).to_ne_bytes())
                .collect();
            let values: Vec<u8> = chunk.iter().flat_map(|b| b.to_bytes()).collect();
            debug_assert_eq!(values.len(), chunk.len() * UNWIND_BUCKET_BYTES);
            let outcome = self.buckets.update_batch(&keys, &values, chunk.len(), 0);
            if let Some(err) = outcome.error {
                return Err(format!("writing unwind buckets: {err}"));
            }
        }
        Ok(())
    }
}

impl BpfTables {
    /// Makes the file (and its table, if any) known to first sight.
    fn publish_file(&mut self, file: &FileInfo, table: TableRef, pending: bool, stats: &Stats) {
        let (Some(map), false) = (&self.file_tables, file.key.inode == 0) else {
            return; // no map, or no inode ([vdso]): first sight never names it
        };
        let key = FileTableKey::new(file.key.dev, file.key.inode);
        let value = FileTableValue::new(file.id, table, pending);
        match map.update(&key.to_bytes(), &value.to_bytes(), 0) {
            Ok(()) => {
                self.published.insert(file.id, key);
                Stats::inc(&stats.map_updates);
            }
            Err(err) => {
                Stats::inc(&stats.map_update_errors);
                crate::log::warn(&format!("file_tables: {}: {err}", file.path));
            }
        }
    }

    /// Withdraws a released file, if it was published. A key can only be missing if the map
    /// was changed behind our back: counted, never an error.
    fn withdraw(&mut self, file_id: u32, stats: &Stats) {
        let (Some(map), Some(key)) = (&self.file_tables, self.published.remove(&file_id)) else {
            return;
        };
        // Another file may have taken the inode since (a file replaced in place).
        if self.published.values().any(|k| *k == key) {
            return;
        }
        match map.delete(&key.to_bytes()) {
            Ok(true) => Stats::inc(&stats.map_deletes),
            Ok(false) => Stats::inc(&stats.map_delete_absent),
            Err(_) => Stats::inc(&stats.map_delete_errors),
        }
    }

    /// The table a build produced, or none.
    fn built(
        file: &FileInfo,
        built: Result<CompactTable, String>,
        stats: &Stats,
    ) -> Option<CompactTable> {
        match built {
            Ok(table) if table.direct_buckets() > 0 => Some(table),
            Ok(_) => {
                Stats::inc(&stats.unwind_tables_empty);
                None
            }
            Err(err) => {
                Stats::inc(&stats.unwind_tables_empty);
                crate::log::debug(&format!("no unwind table for {}: {err}", file.path));
                None
            }
        }
    }

    /// Loads a built table into `unwind_buckets`, or picks the tables to evict for it.
    fn install(&mut self, file: &FileInfo, table: CompactTable, stats: &Stats) -> Install {
        let n = table.buckets().len() as u32;
        let Some(first) = self.allocator.alloc(n) else {
            let victims = self.lru.victims(n, &self.allocator);
            if victims.is_empty() {
                Stats::inc(&stats.unwind_tables_no_room);
                return Install::Loaded(TableRef::default());
            }
            return Install::Evicting(victims, table);
        };
        if let Err(err) = self.write(first, &table) {
            crate::log::warn(&format!("{}: {err}", file.path));
            self.allocator.free(first, n);
            return Install::Loaded(TableRef::default());
        }
        self.lru.loaded(file.id, first, n, Instant::now());
        Stats::inc(&stats.unwind_tables_loaded);
        Stats::set(&stats.unwind_buckets_used, u64::from(self.allocator.used()));
        Install::Loaded(TableRef {
            first,
            direct: table.direct_buckets(),
            base: table.base(),
        })
    }

    /// Loads what it can of `built`; evicted files come out with no table.
    fn install_all(
        &mut self,
        built: Vec<(SharedFile, CompactTable)>,
        stats: &Stats,
    ) -> Vec<(u32, TableRef)> {
        let mut out = Vec::new();
        for (file, table) in built {
            if !self.evicted.is_empty() {
                self.deferred.push((file, table)); // after the evicted buckets are freed
                continue;
            }
            match self.install(&file, table, stats) {
                Install::Loaded(table) => out.push((file.id, table)),
                Install::Evicting(victims, table) => {
                    for victim in victims {
                        if let Some((first, n)) = self.lru.remove(victim) {
                            self.evicted.push((first, n));
                            Stats::inc(&stats.unwind_tables_evicted);
                            out.push((victim, TableRef::default()));
                        }
                    }
                    self.deferred.push((file, table));
                }
            }
        }
        out
    }
}

impl TableStore for BpfTables {
    fn request(&mut self, file: &SharedFile, stats: &Stats) -> Option<TableRef> {
        if file.path == "[vdso]" {
            if self.vdso.is_none() {
                // Tiny, and shared by every process: built here, once, never unloaded.
                let table = Self::built(file, extractor::extract(file), stats);
                let table = table.and_then(|t| match self.install(file, t, stats) {
                    Install::Loaded(table) => Some(table),
                    Install::Evicting(..) => None,
                });
                if let Some(table) = table {
                    self.lru.remove(file.id); // never evicted
                    self.vdso = Some(table);
                }
            }
            return Some(self.vdso.unwrap_or_default());
        }
        if let Some(extractor) = &mut self.extractor {
            if extractor.request(file.clone()) {
                return None;
            }
        }
        let Some(table) = Self::built(file, extractor::extract(file), stats) else {
            return Some(TableRef::default());
        };
        match self.install(file, table, stats) {
            Install::Loaded(table) => Some(table),
            Install::Evicting(..) => {
                Stats::inc(&stats.unwind_tables_no_room);
                Some(TableRef::default())
            }
        }
    }

    fn ready(&mut self, wait: Duration, stats: &Stats) -> Vec<(u32, TableRef)> {
        // The entries that named the evicted buckets were rewritten since the last call.
        for (first, n) in std::mem::take(&mut self.evicted) {
            self.allocator.free(first, n);
            Stats::set(&stats.unwind_buckets_used, u64::from(self.allocator.used()));
        }
        let mut built = std::mem::take(&mut self.deferred);
        let wait = if built.is_empty() {
            wait
        } else {
            Duration::ZERO
        };
        let mut out = Vec::new();
        if let Some(extractor) = &mut self.extractor {
            for (file, table, cached) in extractor.ready(wait) {
                if cached {
                    Stats::inc(&stats.unwind_tables_cached);
                }
                match Self::built(&file, table, stats) {
                    Some(table) => built.push((file, table)),
                    None => out.push((file.id, TableRef::default())),
                }
            }
        }
        out.extend(self.install_all(built, stats));
        out
    }

    fn sampled(&mut self, files: &[(u32, u32)]) {
        self.lru.used(files, Instant::now());
        if let Some(extractor) = &mut self.extractor {
            extractor.sampled(files);
        }
    }

    fn publish(&mut self, file: &FileInfo, table: TableRef, pending: bool, stats: &Stats) {
        self.publish_file(file, table, pending, stats);
    }

    fn unload(&mut self, file_id: u32, table: TableRef, stats: &Stats) {
        self.withdraw(file_id, stats);
        if table.direct == 0 || Some(table) == self.vdso {
            return;
        }
        // The LRU knows every loaded table but the vDSO's (never unloaded).
        if let Some((first, n)) = self.lru.remove(file_id) {
            self.allocator.free(first, n);
            Stats::inc(&stats.unwind_tables_unloaded);
            Stats::set(&stats.unwind_buckets_used, u64::from(self.allocator.used()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_first_fit_and_merges_freed_ranges() {
        let mut a = BucketAllocator::new(100);
        assert_eq!(a.alloc(10), Some(0));
        assert_eq!(a.alloc(20), Some(10));
        assert_eq!(a.alloc(30), Some(30));
        assert_eq!(a.used(), 60);
        a.free(10, 20);
        assert_eq!(a.alloc(50), None, "40 free at the end, 20 in the middle");
        assert_eq!(a.alloc(15), Some(10), "first fit");
        a.free(0, 10);
        a.free(10, 15);
        a.free(30, 30);
        assert_eq!(a.used(), 0);
        assert_eq!(
            a.alloc(100),
            Some(0),
            "everything merged back into one range"
        );
        assert_eq!(a.alloc(1), None);
        a.free(90, 20); // out of range: ignored
    }
}
