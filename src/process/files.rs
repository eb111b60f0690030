//! Executable files shared by processes: each distinct file (by device, inode, size and
//! modification time) gets a `FileId` once, is reference-counted across every process that maps
//! it, and is released a grace period after its last user is gone (samples in flight may still
//! name it). IDs are never reused, so a late sample can never name the wrong file.

use std::collections::HashMap;
use std::fs::File;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::layout::TableRef;

/// A file's identity: a replaced file (new inode or new mtime/size) is a new file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileKey {
    pub dev: u64,
    pub inode: u64,
    pub size: u64,
    pub mtime_ns: i64,
}

/// What the reporter needs to symbolize a file: where it was and an open handle to it (which
/// keeps working after the file is deleted or its process has exited).
#[derive(Debug)]
pub struct FileInfo {
    pub id: u32,
    pub key: FileKey,
    /// As `/proc/PID/maps` showed it, without ` (deleted)`.
    pub path: String,
    pub handle: Option<File>,
}

pub type SharedFile = Arc<FileInfo>;

#[derive(Debug)]
struct Entry {
    info: SharedFile,
    refs: u32,
    unused_since: Option<Instant>,
    /// Where its unwind table is loaded (no buckets: none).
    table: TableRef,
}

/// The registry. Owned by the maintainer thread.
#[derive(Debug, Default)]
pub struct FileTable {
    by_key: HashMap<FileKey, u32>,
    /// (dev, inode) as `/proc/PID/maps` shows them: a known file is recognised without opening
    /// it again, which keeps syncs cheap under process churn.
    by_maps_inode: HashMap<(u64, u64), u32>,
    entries: HashMap<u32, Entry>,
    last_id: u32,
}

/// Result of acquiring a file.
pub struct Acquired {
    pub id: u32,
    /// Set when the file is new: announce it before any map entry names it.
    pub new: Option<SharedFile>,
}

impl FileTable {
    /// Takes a reference on the file, registering it if it is new. `maps_inode` is the
    /// (dev, inode) the maps file showed for it.
    pub fn acquire(
        &mut self,
        key: FileKey,
        path: &str,
        maps_inode: (u64, u64),
        handle: impl FnOnce() -> Option<File>,
    ) -> Acquired {
        if let Some(&id) = self.by_key.get(&key) {
            if self.add_ref(id) {
                self.by_maps_inode.insert(maps_inode, id);
                return Acquired { id, new: None };
            }
        }
        self.last_id += 1;
        let id = self.last_id;
        let info = Arc::new(FileInfo {
            id,
            key,
            path: path.to_string(),
            handle: handle(),
        });
        self.by_key.insert(key, id);
        self.by_maps_inode.insert(maps_inode, id);
        self.entries.insert(
            id,
            Entry {
                info: info.clone(),
                refs: 1,
                unused_since: None,
                table: TableRef::default(),
            },
        );
        Acquired {
            id,
            new: Some(info),
        }
    }

    /// The file registered for a (dev, inode) from a maps line, if any.
    pub fn find_by_inode(&self, dev: u64, inode: u64) -> Option<u32> {
        self.by_maps_inode
            .get(&(dev, inode))
            .copied()
            .filter(|id| self.entries.contains_key(id))
    }

    /// Takes one more reference on a registered file; false if it is not registered.
    pub fn add_ref(&mut self, id: u32) -> bool {
        match self.entries.get_mut(&id) {
            Some(entry) => {
                entry.refs += 1;
                entry.unused_since = None;
                true
            }
            None => false,
        }
    }

    /// Samples named these files: an unused one (only processes never synced run it, unwound
    /// by first sight) starts its grace period again instead of being released under them.
    pub fn touch(&mut self, ids: &[u32], now: Instant) {
        for id in ids {
            if let Some(entry) = self.entries.get_mut(id) {
                if entry.unused_since.is_some() {
                    entry.unused_since = Some(now);
                }
            }
        }
    }

    /// Drops a reference; the file stays registered for the grace period after its last one.
    pub fn release(&mut self, id: u32, now: Instant) {
        if let Some(entry) = self.entries.get_mut(&id) {
            entry.refs = entry.refs.saturating_sub(1);
            if entry.refs == 0 {
                entry.unused_since = Some(now);
            }
        }
    }

    /// Forgets files unused for longer than `grace`; returns their IDs.
    /// The registered file with this ID.
    pub fn info(&self, id: u32) -> Option<SharedFile> {
        self.entries.get(&id).map(|e| e.info.clone())
    }

    /// Records where a file's unwind table was loaded.
    pub fn set_table(&mut self, id: u32, table: TableRef) {
        if let Some(entry) = self.entries.get_mut(&id) {
            entry.table = table;
        }
    }

    /// Where a file's unwind table is (no buckets: none).
    pub fn table(&self, id: u32) -> TableRef {
        self.entries.get(&id).map(|e| e.table).unwrap_or_default()
    }

    /// Forgets files unused for longer than `grace`; returns their IDs and tables.
    pub fn expire(&mut self, now: Instant, grace: Duration) -> Vec<(u32, TableRef)> {
        let expired: Vec<u32> = self
            .entries
            .iter()
            .filter(|(_, e)| {
                e.unused_since
                    .is_some_and(|t| now.duration_since(t) >= grace)
            })
            .map(|(&id, _)| id)
            .collect();
        let mut released = Vec::with_capacity(expired.len());
        for id in expired {
            if let Some(entry) = self.entries.remove(&id) {
                self.by_key.remove(&entry.info.key);
                released.push((id, entry.table));
            }
        }
        self.by_maps_inode
            .retain(|_, id| self.entries.contains_key(id));
        released
    }

    pub fn refs(&self, id: u32) -> Option<u32> {
        self.entries.get(&id).map(|e| e.refs)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// (id, refs) of every registered file, for audits.
    pub fn ref_counts(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.entries.iter().map(|(&id, e)| (id, e.refs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(inode: u64) -> FileKey {
        FileKey {
            dev: 1,
            inode,
            size: 10,
            mtime_ns: 5,
        }
    }

    #[test]
    fn shared_files_are_refcounted_and_released_after_a_grace_period() {
        let mut t = FileTable::default();
        let a = t.acquire(key(1), "/lib/libc.so.6", (1, 1), || None);
        assert!(a.new.is_some());
        let b = t.acquire(key(1), "/lib/libc.so.6", (1, 1), || None);
        assert!(b.new.is_none());
        assert_eq!(a.id, b.id);
        assert_eq!(t.refs(a.id), Some(2));
        assert_eq!(t.find_by_inode(1, 1), Some(a.id));
        let now = Instant::now();
        t.release(a.id, now);
        t.release(a.id, now);
        assert!(
            t.expire(now, Duration::from_secs(5)).is_empty(),
            "grace period"
        );
        let expired = t.expire(now + Duration::from_secs(5), Duration::from_secs(5));
        assert_eq!(expired, vec![(a.id, TableRef::default())]);
        assert!(t.is_empty());
    }

    #[test]
    fn a_file_samples_still_name_is_not_released() {
        let mut t = FileTable::default();
        let a = t.acquire(key(1), "/usr/lib/gcc/cc1", (1, 1), || None).id;
        let now = Instant::now();
        t.release(a, now); // the synced process exited; unsynced ones still run it
        let later = now + Duration::from_secs(4);
        t.touch(&[a, 999], later);
        assert!(t
            .expire(now + Duration::from_secs(5), Duration::from_secs(5))
            .is_empty());
        let expired = t.expire(later + Duration::from_secs(5), Duration::from_secs(5));
        assert_eq!(
            expired.len(),
            1,
            "released once no sample named it for the grace"
        );
        let b = t.acquire(key(2), "/bin/b", (1, 2), || None).id;
        t.touch(&[b], later);
        assert_eq!(
            t.refs(b),
            Some(1),
            "a file in use by synced processes is untouched"
        );
        assert!(t
            .expire(later + Duration::from_secs(99), Duration::from_secs(5))
            .is_empty());
    }

    #[test]
    fn ids_are_never_reused_and_a_changed_file_is_a_new_file() {
        let mut t = FileTable::default();
        let a = t.acquire(key(1), "/bin/x", (1, 1), || None).id;
        t.release(a, Instant::now());
        t.expire(
            Instant::now() + Duration::from_secs(60),
            Duration::from_secs(1),
        );
        let b = t.acquire(key(1), "/bin/x", (1, 1), || None).id;
        assert_ne!(a, b);
        let changed = FileKey {
            mtime_ns: 6,
            ..key(1)
        };
        assert_ne!(t.acquire(changed, "/bin/x", (1, 1), || None).id, b);
    }

    #[test]
    fn reacquiring_during_the_grace_period_keeps_the_file() {
        let mut t = FileTable::default();
        let now = Instant::now();
        let a = t.acquire(key(1), "/bin/x", (1, 1), || None).id;
        t.release(a, now);
        assert_eq!(t.acquire(key(1), "/bin/x", (1, 1), || None).id, a);
        assert!(t
            .expire(now + Duration::from_secs(60), Duration::from_secs(1))
            .is_empty());
    }
}
