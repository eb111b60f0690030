//! Unwind tables in the kernel: each executable file's table (from `crate::unwind`) is loaded
//! once into the `unwind_buckets` array, shared by every process that maps the file, and freed
//! when the file is released. Each registered file is also published in `file_tables`, by inode,
//! so the sampler can unwind processes it meets before they are synced (first sight). The
//! maintainer thread is the only writer of both, like for `pid_mappings`. Tables are built on
//! the extractor thread (`extractor.rs`): a file's table is pending until `ready` loads it.

use std::collections::BTreeMap;
use std::time::Duration;

use super::extractor::Extractor;
use super::files::{FileInfo, SharedFile};
use crate::stats::Stats;
use crate::sys::bpf::layout::{FileTableKey, FileTableValue, TableRef, UNWIND_BUCKET_BYTES};
use crate::sys::bpf::Map;
use crate::unwind::compact::CompactTable;

/// Where tables go; a real BPF array or nothing (tests, or a map that could not be created).
pub trait TableStore: Send {
    /// Starts on the table of a newly registered file. `Some` when it is settled at once;
    /// `None` while it is built elsewhere (`ready` hands it over). `TableRef::default()` (no
    /// buckets): the file has no usable call-frame information or there is no room, and frames
    /// in it are walked with frame pointers.
    fn request(&mut self, file: &SharedFile, stats: &Stats) -> Option<TableRef>;
    /// Tables built since the last call, loaded into the kernel, by file ID. Waits up to `wait`
    /// for one when some are on the way and none is ready.
    fn ready(&mut self, _wait: Duration, _stats: &Stats) -> Vec<(u32, TableRef)> {
        Vec::new()
    }
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
#[derive(Debug)]
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
    /// Buckets (direct and overflow) of each loaded table, by first bucket.
    sizes: std::collections::HashMap<u32, u32>,
    vdso: Option<TableRef>,
    /// `None`: the thread could not be started; tables are built here.
    extractor: Option<Extractor>,
}

impl BpfTables {
    pub fn new(buckets: Map, file_tables: Option<Map>) -> Self {
        let allocator = BucketAllocator::new(buckets.max_entries());
        Self {
            buckets,
            file_tables,
            published: Default::default(),
            allocator,
            sizes: Default::default(),
            vdso: None,
            extractor: Extractor::spawn()
                .map_err(|e| crate::log::warn(&format!("tables are built on the maintainer: {e}")))
                .ok(),
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
            return; // no map, or no inode ([vdso]): the mmap hook never names it
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

    /// Loads a built table into `unwind_buckets`.
    fn install(
        &mut self,
        file: &FileInfo,
        built: Result<CompactTable, String>,
        stats: &Stats,
    ) -> TableRef {
        let table = match built {
            Ok(table) if table.direct_buckets() > 0 => table,
            Ok(_) => {
                Stats::inc(&stats.unwind_tables_empty);
                return TableRef::default();
            }
            Err(err) => {
                Stats::inc(&stats.unwind_tables_empty);
                crate::log::debug(&format!("no unwind table for {}: {err}", file.path));
                return TableRef::default();
            }
        };
        let n = table.buckets().len() as u32;
        let Some(first) = self.allocator.alloc(n) else {
            Stats::inc(&stats.unwind_tables_no_room);
            return TableRef::default();
        };
        if let Err(err) = self.write(first, &table) {
            crate::log::warn(&format!("{}: {err}", file.path));
            self.allocator.free(first, n);
            return TableRef::default();
        }
        self.sizes.insert(first, n);
        Stats::inc(&stats.unwind_tables_loaded);
        Stats::set(&stats.unwind_buckets_used, u64::from(self.allocator.used()));
        TableRef {
            first,
            direct: table.direct_buckets(),
            base: table.base(),
        }
    }
}

impl TableStore for BpfTables {
    fn request(&mut self, file: &SharedFile, stats: &Stats) -> Option<TableRef> {
        if file.path == "[vdso]" {
            if self.vdso.is_none() {
                // Tiny, and shared by every process: built here, once, never unloaded.
                let built = super::extractor::extract(file);
                self.vdso = Some(self.install(file, built, stats));
            }
            return self.vdso;
        }
        if let Some(extractor) = &mut self.extractor {
            if extractor.request(file.clone()) {
                return None;
            }
        }
        let built = super::extractor::extract(file);
        Some(self.install(file, built, stats))
    }

    fn ready(&mut self, wait: Duration, stats: &Stats) -> Vec<(u32, TableRef)> {
        let Some(extractor) = &mut self.extractor else {
            return Vec::new();
        };
        let built = extractor.ready(wait);
        built
            .into_iter()
            .map(|(file, table)| (file.id, self.install(&file, table, stats)))
            .collect()
    }

    fn publish(&mut self, file: &FileInfo, table: TableRef, pending: bool, stats: &Stats) {
        self.publish_file(file, table, pending, stats);
    }

    fn unload(&mut self, file_id: u32, table: TableRef, stats: &Stats) {
        self.withdraw(file_id, stats);
        if table.direct == 0 || Some(table) == self.vdso {
            return;
        }
        if let Some(n) = self.sizes.remove(&table.first) {
            self.allocator.free(table.first, n);
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
