//! The kernel's own answers about addresses the sampler could not resolve (VMA reports), per
//! process, and the exec/exit boundaries after which they no longer apply. This is how samples
//! of processes that lived too briefly for the maintainer to read `/proc` are still attributed
//! to their files.

use std::collections::HashMap;

use crate::layout::VmaRecord;

/// VMA reports kept per process (oldest dropped first).
const MAX_PER_PID: usize = 256;

#[derive(Default)]
struct PidVmas {
    /// In arrival order (and so in time order, per CPU).
    records: Vec<VmaRecord>,
    /// Times of execs and exits: a record does not apply across one.
    boundaries: Vec<u64>,
}

/// Where an address was, according to a VMA report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmaHit {
    pub dev: u64,
    pub inode: u64,
    pub file_offset: u64,
}

#[derive(Default)]
pub struct Vmas {
    pids: HashMap<u32, PidVmas>,
}

impl Vmas {
    pub fn add(&mut self, record: VmaRecord) {
        let entry = self.pids.entry(record.pid).or_default();
        if entry.records.len() >= MAX_PER_PID {
            entry.records.remove(0);
        }
        entry.records.push(record);
    }

    /// The address space of `pid` changes (exec) or ends (exit) at `ktime_ns`.
    pub fn boundary(&mut self, pid: u32, ktime_ns: u64) {
        if let Some(entry) = self.pids.get_mut(&pid) {
            entry.boundaries.push(ktime_ns);
        }
    }

    /// The file and offset of `addr` in `pid` at `ktime_ns`, if a report covers it.
    pub fn lookup(&self, pid: u32, addr: u64, ktime_ns: u64) -> Option<VmaHit> {
        let entry = self.pids.get(&pid)?;
        let crosses = |from: u64| entry.boundaries.iter().any(|&b| from < b && b <= ktime_ns);
        entry
            .records
            .iter()
            .rev()
            .filter(|r| r.start <= addr && addr < r.end && r.inode != 0)
            .filter(|r| r.ktime_ns <= ktime_ns && !crosses(r.ktime_ns))
            .map(|r| VmaHit {
                dev: r.dev,
                inode: r.inode,
                file_offset: r.file_offset + (addr - r.start),
            })
            .next()
    }

    /// Drops what is known of `pid` up to `ktime_ns` (its exit): long-running sessions.
    pub fn forget_until(&mut self, pid: u32, ktime_ns: u64) {
        if let Some(entry) = self.pids.get_mut(&pid) {
            entry.records.retain(|r| r.ktime_ns > ktime_ns);
            entry.boundaries.retain(|&b| b > ktime_ns);
            if entry.records.is_empty() {
                self.pids.remove(&pid);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.pids.values().map(|p| p.records.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(pid: u32, ktime_ns: u64, start: u64, inode: u64) -> VmaRecord {
        VmaRecord {
            pid,
            ktime_ns,
            start,
            end: start + 0x1000,
            file_offset: 0x2000,
            inode,
            dev: 8,
        }
    }

    #[test]
    fn a_report_resolves_its_range_until_an_exec() {
        let mut v = Vmas::default();
        v.add(record(1, 100, 0x400000, 7));
        assert_eq!(
            v.lookup(1, 0x400010, 100),
            Some(VmaHit {
                dev: 8,
                inode: 7,
                file_offset: 0x2010
            })
        );
        assert_eq!(
            v.lookup(1, 0x400010, 150),
            Some(VmaHit {
                dev: 8,
                inode: 7,
                file_offset: 0x2010
            })
        );
        assert_eq!(v.lookup(1, 0x401000, 150), None, "outside the VMA");
        assert_eq!(v.lookup(2, 0x400010, 150), None, "another process");
        assert_eq!(v.lookup(1, 0x400010, 50), None, "before the report");
        v.boundary(1, 200);
        assert_eq!(v.lookup(1, 0x400010, 199).map(|h| h.inode), Some(7));
        assert_eq!(
            v.lookup(1, 0x400010, 250),
            None,
            "after an exec the old VMA does not apply"
        );
        v.add(record(1, 300, 0x400000, 9));
        assert_eq!(v.lookup(1, 0x400010, 300).map(|h| h.inode), Some(9));
    }

    #[test]
    fn anonymous_vmas_resolve_nothing_and_lists_are_bounded() {
        let mut v = Vmas::default();
        v.add(record(1, 1, 0x1000, 0));
        assert_eq!(v.lookup(1, 0x1000, 5), None);
        for i in 0..1000 {
            v.add(record(1, i, i << 12, 1));
        }
        assert_eq!(v.len(), MAX_PER_PID);
    }
}
