//! The rest of a deep stack, read from the live process. The sampler copies at most
//! `STACK_COPY_BYTES` (60 KiB) above the registers of a walk it cut; some threads keep more
//! than that between the sample and their root (rustc's compiler thread has a 527 KiB frame).
//! The stack above each copy, up to the end of its mapping, is read from the process as soon
//! as the record arrives (it comes on the prompt buffer: about a millisecond after the sample)
//! and kept sparsely: pages of zeros are not stored,
//! and equal pages (a thread's outer frames, read again for each of its samples) are stored
//! once ([`PagePool`]).
//!
//! Those bytes were read after the sample, so they are trusted only for frames the thread was
//! still inside: `complete.rs` keeps frames found through them only when the walk goes on to
//! the thread's outermost frame with a valid rule at every step, and drops them otherwise.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::layout::{kernel_dev_encoding, ProcVma};
use crate::process::maps::parse_maps;

const PAGE: usize = 4096;
/// Bytes read per system call.
const CHUNK: usize = 64 * 1024;

/// Where another process's memory is read (a fake in tests).
pub trait Memory {
    /// Reads `buf.len()` bytes at `addr`; returns how many from the start could be read.
    fn read(&mut self, pid: u32, addr: u64, buf: &mut [u8]) -> usize;
    /// The end of the mapping holding `addr`: a thread's stack may lie just below another
    /// mapping (a malloc arena), which is no part of it.
    fn mapping_end(&mut self, pid: u32, addr: u64) -> Option<u64>;
    /// The process's executable file mappings as it shows them now (empty when it is gone).
    fn code_mappings(&mut self, pid: u32) -> Vec<ProcVma>;
}

/// How long a process's mapping list is reused.
const MAPS_TTL: Duration = Duration::from_millis(200);
/// How old a list must be to be read again after a miss.
const MAPS_REREAD: Duration = Duration::from_millis(20);

/// The running processes, through `process_vm_readv` and `/proc/PID/maps`.
#[derive(Default)]
pub struct ProcessMemory {
    /// What each process's maps file said, with when it was read.
    maps: HashMap<u32, ReadMaps>,
}

/// One read of a maps file: every mapping's range, and the executable file mappings.
struct ReadMaps {
    at: Instant,
    ranges: Vec<(u64, u64)>,
    code: Vec<ProcVma>,
}

impl ProcessMemory {
    /// The process's maps, read again unless the last read is younger than `MAPS_REREAD`;
    /// `None` when the process is gone. One read serves both questions about a stack record.
    fn maps(&mut self, pid: u32) -> Option<&ReadMaps> {
        let now = Instant::now();
        self.maps
            .retain(|_, read| now.duration_since(read.at) < MAPS_TTL);
        let fresh = self
            .maps
            .get(&pid)
            .is_some_and(|read| now.duration_since(read.at) < MAPS_REREAD);
        if !fresh {
            let text = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
            let code = code_mappings(&text);
            let ranges = ranges(&text);
            self.maps.insert(
                pid,
                ReadMaps {
                    at: now,
                    ranges,
                    code,
                },
            );
        }
        self.maps.get(&pid)
    }
}

impl Memory for ProcessMemory {
    fn read(&mut self, pid: u32, addr: u64, buf: &mut [u8]) -> usize {
        crate::sys::process::read_memory(pid, addr, buf)
    }

    fn mapping_end(&mut self, pid: u32, addr: u64) -> Option<u64> {
        let find = |read: &ReadMaps| {
            read.ranges
                .iter()
                .find(|&&(start, end)| start <= addr && addr < end)
                .map(|&(_, end)| end)
        };
        // A miss in a list read a while ago may be a thread started since: read again.
        let live = |read: &&ReadMaps| read.at.elapsed() < MAPS_TTL;
        if let Some(end) = self.maps.get(&pid).filter(live).and_then(find) {
            return Some(end);
        }
        self.maps(pid).and_then(find)
    }

    fn code_mappings(&mut self, pid: u32) -> Vec<ProcVma> {
        self.maps(pid)
            .map(|read| read.code.clone())
            .unwrap_or_default()
    }
}

/// The executable file mappings of a maps file, as the sampler records them.
fn code_mappings(maps: &str) -> Vec<ProcVma> {
    parse_maps(maps)
        .executable
        .iter()
        .filter(|m| m.inode != 0)
        .map(|m| ProcVma {
            start: m.start,
            end: m.end,
            offset: m.offset,
            inode: m.inode,
            dev: kernel_dev_encoding(m.dev),
            _pad: 0,
        })
        .collect()
}

/// The `start-end` ranges of a maps file.
fn ranges(maps: &str) -> Vec<(u64, u64)> {
    maps.lines()
        .filter_map(|line| {
            let (start, end) = line.split_whitespace().next()?.split_once('-')?;
            Some((
                u64::from_str_radix(start, 16).ok()?,
                u64::from_str_radix(end, 16).ok()?,
            ))
        })
        .collect()
}

/// Pages of live stacks, each distinct content stored once.
#[derive(Debug, Default)]
pub struct PagePool {
    pages: HashMap<u64, Arc<[u8]>>,
}

impl PagePool {
    fn intern(&mut self, page: &[u8]) -> Arc<[u8]> {
        let mut hasher = DefaultHasher::new();
        page.hash(&mut hasher);
        let entry = self
            .pages
            .entry(hasher.finish())
            .or_insert_with(|| page.into());
        if **entry == *page {
            entry.clone()
        } else {
            page.into() // a hash collision: not shared
        }
    }

    /// Forgets pages no stack uses any more.
    pub fn prune(&mut self) {
        self.pages.retain(|_, page| Arc::strong_count(page) > 1);
    }

    /// Bytes held by the pool's pages.
    pub fn held(&self) -> usize {
        self.pages.values().map(|p| p.len()).sum()
    }
}

/// Bytes `[start, end)` of a stack, read from the live process; absent pages hold zeros.
#[derive(Debug, Default)]
pub struct LiveStack {
    start: u64,
    end: u64,
    /// Non-zero pages by index from `start`.
    pages: HashMap<usize, Arc<[u8]>>,
}

impl LiveStack {
    /// Reads up to `max` bytes at `start`, stopping where the stack's mapping ends.
    pub fn read(
        memory: &mut dyn Memory,
        pid: u32,
        start: u64,
        max: u64,
        pool: &mut PagePool,
    ) -> Self {
        let mut live = Self {
            start,
            end: start,
            pages: HashMap::new(),
        };
        let Some(end) = memory.mapping_end(pid, start) else {
            return live;
        };
        let max = end.saturating_sub(start).min(max) as usize;
        let mut buf = vec![0u8; CHUNK];
        let mut offset = 0;
        while offset < max {
            let want = CHUNK.min(max - offset);
            let n = memory.read(pid, start + offset as u64, &mut buf[..want]);
            for (i, page) in buf[..n].chunks(PAGE).enumerate() {
                if page.iter().any(|&b| b != 0) {
                    live.pages.insert(offset / PAGE + i, pool.intern(page));
                }
            }
            offset += n;
            live.end = start + offset as u64;
            if n < want {
                break;
            }
        }
        live
    }

    /// Bytes read (zeros included).
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// The 8 bytes at `addr`, if they were read.
    pub fn word(&self, addr: u64) -> Option<u64> {
        if addr < self.start || addr.checked_add(8)? > self.end {
            return None;
        }
        let mut bytes = [0u8; 8];
        for (i, byte) in bytes.iter_mut().enumerate() {
            let at = (addr - self.start) as usize + i;
            if let Some(page) = self.pages.get(&(at / PAGE)) {
                *byte = page.get(at % PAGE).copied().unwrap_or(0);
            }
        }
        Some(u64::from_ne_bytes(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stack of `len` bytes at 0x10_000 with one non-zero word every 100 KiB, in a mapping
    /// that ends at `end` (where readable memory goes on).
    struct Fake {
        len: u64,
        end: u64,
    }

    impl Memory for Fake {
        fn mapping_end(&mut self, pid: u32, addr: u64) -> Option<u64> {
            assert_eq!(pid, 9);
            (addr < self.end).then_some(self.end)
        }
        fn code_mappings(&mut self, _: u32) -> Vec<ProcVma> {
            Vec::new()
        }
        fn read(&mut self, pid: u32, addr: u64, buf: &mut [u8]) -> usize {
            assert_eq!(pid, 9);
            let left = 0x10_000 + self.len - addr.min(0x10_000 + self.len);
            let n = buf.len().min(left as usize);
            for (i, b) in buf[..n].iter_mut().enumerate() {
                let at = addr + i as u64 - 0x10_000;
                *b = if at % 102_400 < 8 {
                    (at / 102_400) as u8 + 1
                } else {
                    0
                };
            }
            n
        }
    }

    /// Reads the 300,000-byte fake stack, up to `max` bytes.
    fn read_fake(max: u64, pool: &mut PagePool) -> LiveStack {
        let mut fake = Fake {
            len: 300_000,
            end: 1 << 40,
        };
        LiveStack::read(&mut fake, 9, 0x10_000, max, pool)
    }

    #[test]
    fn reads_to_the_end_of_the_mapping_and_keeps_only_non_zero_pages() {
        let mut pool = PagePool::default();
        let live = read_fake(1 << 20, &mut pool);
        assert_eq!(live.len(), 300_000);
        assert_eq!(pool.held(), 3 * PAGE, "pages at 0, 100 and 200 KiB");
        let again = read_fake(1 << 20, &mut pool);
        assert_eq!(pool.held(), 3 * PAGE, "equal pages are stored once");
        drop(again);
        pool.prune();
        assert_eq!(pool.held(), 3 * PAGE, "still used by the first stack");
        let word = live.word(0x10_000);
        drop(live);
        pool.prune();
        assert_eq!(pool.held(), 0);
        assert_eq!(word, Some(u64::from_ne_bytes([1; 8])));
        let live = read_fake(1 << 20, &mut pool);
        assert_eq!(
            live.word(0x10_000 + 204_800),
            Some(u64::from_ne_bytes([3; 8]))
        );
        assert_eq!(
            live.word(0x10_000 + 8),
            Some(0),
            "a zero page reads as zeros"
        );
        assert_eq!(live.word(0x10_000 + 300_000 - 8), Some(0));
        assert_eq!(live.word(0x10_000 + 300_000 - 4), None, "past the end");
        assert_eq!(live.word(0xfff8), None, "before the start");
    }

    #[test]
    fn stops_where_the_mapping_ends() {
        let mut pool = PagePool::default();
        let mut fake = Fake {
            len: 300_000,
            end: 0x10_000 + 150_000,
        };
        let live = LiveStack::read(&mut fake, 9, 0x10_000, 1 << 20, &mut pool);
        assert_eq!(live.len(), 150_000);
        let live = LiveStack::read(&mut fake, 9, 0x10_000 + 150_000, 1 << 20, &mut pool);
        assert!(live.is_empty(), "not in a mapping");
    }

    #[test]
    fn parses_maps_ranges() {
        let maps = "7eff1d600000-7eff1d800000 rw-p 00000000 00:00 0 \n\
                    7ffd0000-7ffe0000 rw-p 00000000 00:00 0      [stack]\nbad line\n";
        assert_eq!(
            ranges(maps),
            vec![(0x7eff1d600000, 0x7eff1d800000), (0x7ffd0000, 0x7ffe0000)]
        );
    }

    #[test]
    fn stops_at_the_limit() {
        let mut pool = PagePool::default();
        let live = read_fake(100_000, &mut pool);
        assert_eq!(live.len(), 100_000);
        assert_eq!(live.word(0x10_000 + 102_400), None);
    }
}
