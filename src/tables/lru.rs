//! Which unwind tables to evict when bucket space runs out, and in what order tables waiting
//! to be built are served. Both follow the samples: a table whose file was sampled least
//! recently goes first; a file sampled most goes to the extractor first (the smaller first
//! among equals, so a process's small libraries do not wait behind its big one).
//!
//! Pure bookkeeping over [`BucketAllocator`]: `mod.rs` frees the buckets and the maintainer's
//! process table rewrites the entries that named them.

use std::collections::HashMap;
use std::time::Instant;

use super::BucketAllocator;
use crate::process::files::SharedFile;

#[derive(Clone, Copy, Debug)]
struct Loaded {
    first: u32,
    buckets: u32,
    last_used: Instant,
}

/// Loaded tables with when their files were last sampled.
#[derive(Debug, Default)]
pub struct TableLru {
    loaded: HashMap<u32, Loaded>,
}

impl TableLru {
    /// A table was loaded for `file` (it counts as used now).
    pub fn loaded(&mut self, file: u32, first: u32, buckets: u32, now: Instant) {
        self.loaded.insert(
            file,
            Loaded {
                first,
                buckets,
                last_used: now,
            },
        );
    }

    /// Samples named these files.
    pub fn used(&mut self, files: &[(u32, u32)], now: Instant) {
        for (file, _) in files {
            if let Some(t) = self.loaded.get_mut(file) {
                t.last_used = now;
            }
        }
    }

    /// Forgets a file's table; returns its (first bucket, buckets).
    pub fn remove(&mut self, file: u32) -> Option<(u32, u32)> {
        self.loaded.remove(&file).map(|t| (t.first, t.buckets))
    }

    /// The files whose tables to evict, least recently used first, so that `need` contiguous
    /// buckets become free; empty when even evicting every table would not make room.
    pub fn victims(&self, need: u32, allocator: &BucketAllocator) -> Vec<u32> {
        let mut order: Vec<(&u32, &Loaded)> = self.loaded.iter().collect();
        order.sort_by_key(|(&file, t)| (t.last_used, file));
        let mut space = allocator.clone();
        let mut victims = Vec::new();
        for (&file, t) in order {
            if space.fits(need) {
                return victims;
            }
            space.free(t.first, t.buckets);
            victims.push(file);
        }
        if space.fits(need) {
            victims
        } else {
            Vec::new()
        }
    }
}

/// Files waiting for their tables, served most-sampled first.
#[derive(Debug, Default)]
pub struct BuildQueue {
    waiting: Vec<SharedFile>,
    samples: HashMap<u32, u64>,
}

impl BuildQueue {
    pub fn push(&mut self, file: SharedFile) {
        self.waiting.push(file);
    }

    /// Samples named these files (`(file, samples)`).
    pub fn sampled(&mut self, files: &[(u32, u32)]) {
        for &(file, n) in files {
            if self.waiting.iter().any(|f| f.id == file) {
                *self.samples.entry(file).or_default() += u64::from(n);
            }
        }
    }

    /// The next file to build: the most sampled, then the smallest, then the oldest request.
    pub fn pop(&mut self) -> Option<SharedFile> {
        let samples = |f: &SharedFile| self.samples.get(&f.id).copied().unwrap_or(0);
        let (at, _) = self
            .waiting
            .iter()
            .enumerate()
            .min_by_key(|(i, f)| (std::cmp::Reverse(samples(f)), f.key.size, *i))?;
        let file = self.waiting.remove(at);
        self.samples.remove(&file.id);
        Some(file)
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::files::{FileInfo, FileKey};
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn evicts_least_recently_sampled_tables_until_the_new_one_fits() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut space = BucketAllocator::new(100);
        let mut lru = TableLru::default();
        // Files 1..=4 with 25 buckets each, loaded at t = 1..4.
        for file in 1..=4 {
            let first = space.alloc(25).unwrap();
            lru.loaded(file, first, 25, at(u64::from(file)));
        }
        assert_eq!(lru.victims(0, &space), Vec::<u32>::new());
        // File 1 sampled at t = 10, file 3 at t = 9: 2 is the least recent, then 4.
        lru.used(&[(1, 5)], at(10));
        lru.used(&[(3, 1), (99, 1)], at(9));
        assert_eq!(lru.victims(20, &space), vec![2]);
        // 30 buckets need two adjacent tables' space or more: 2 (0-based 25..50) and 4
        // (75..100) are not adjacent, so eviction goes on to 3 (50..75), then it fits.
        assert_eq!(lru.victims(30, &space), vec![2, 4, 3]);
        assert_eq!(lru.victims(100, &space), vec![2, 4, 3, 1]);
        assert_eq!(lru.victims(101, &space), Vec::<u32>::new(), "never fits");
        assert_eq!(lru.remove(2), Some((25, 25)));
        space.free(25, 25);
        assert_eq!(lru.victims(25, &space), Vec::<u32>::new(), "fits already");
        assert_eq!(lru.victims(26, &space), vec![4, 3]);
    }

    fn file(id: u32, size: u64) -> SharedFile {
        Arc::new(FileInfo {
            id,
            key: FileKey {
                dev: 1,
                inode: u64::from(id),
                size,
                mtime_ns: 0,
            },
            path: format!("/f{id}"),
            handle: None,
        })
    }

    #[test]
    fn builds_the_most_sampled_file_first_then_the_smallest() {
        let mut q = BuildQueue::default();
        for (id, size) in [
            (1, 150_000_000),
            (2, 2_000_000),
            (3, 190_000_000),
            (4, 2_000_000),
        ] {
            q.push(file(id, size));
        }
        q.sampled(&[(3, 4), (1, 2), (7, 100)]);
        q.sampled(&[(1, 1)]);
        let order: Vec<u32> = std::iter::from_fn(|| q.pop()).map(|f| f.id).collect();
        assert_eq!(order, vec![3, 1, 2, 4]);
        assert!(q.is_empty());
    }
}
