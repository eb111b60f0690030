//! All writes to `pid_mappings` go through here: queued, coalesced per key, and flushed in
//! bounded batches. Deletes are existence-checked first, so a key that is already gone is a
//! counted no-op and never stops a batch; if a batch delete still hits a missing key, the
//! batch resumes right after it, so nothing behind it is left in the map.

use std::collections::{BTreeMap, HashSet};
use std::io;

use crate::layout::{PidMappingKey, PidMappingValue};
use crate::stats::Stats;
use crate::sys::bpf::{BatchOutcome, Map};

/// Elements per batch syscall: bounds the kernel's time with the map locked and our buffers.
pub const BATCH_SIZE: usize = 512;

/// The operations the batcher needs from a map; a real BPF map or a fake in tests.
pub trait MapBackend {
    fn update_batch(&mut self, keys: &[PidMappingKey], values: &[PidMappingValue]) -> BatchOutcome;
    fn delete_batch(&mut self, keys: &[PidMappingKey]) -> BatchOutcome;
    /// The entry with exactly this key, if present (not merely a shorter prefix matching it).
    fn get_exact(&self, key: &PidMappingKey) -> io::Result<Option<PidMappingValue>>;
    /// Every key in the map (for audits).
    fn keys(&self) -> io::Result<Vec<PidMappingKey>>;
    fn capacity(&self) -> usize;
}

/// Whether an LPM lookup result is the entry of `key` itself. A lookup returns the longest
/// prefix matching the key's address, which for an absent key may be the PID's marker; each
/// value records its own prefix, which tells them apart.
pub fn is_entry_of(key: &PidMappingKey, value: &PidMappingValue) -> bool {
    u32::from(value.prefixlen) == key.prefixlen && value.prefix_addr == key.addr()
}

impl MapBackend for Map {
    fn update_batch(&mut self, keys: &[PidMappingKey], values: &[PidMappingValue]) -> BatchOutcome {
        let k: Vec<u8> = keys.iter().flat_map(|k| k.to_bytes()).collect();
        let v: Vec<u8> = values.iter().flat_map(|v| v.to_bytes()).collect();
        Map::update_batch(self, &k, &v, keys.len(), 0)
    }

    fn delete_batch(&mut self, keys: &[PidMappingKey]) -> BatchOutcome {
        let k: Vec<u8> = keys.iter().flat_map(|k| k.to_bytes()).collect();
        Map::delete_batch(self, &k, keys.len())
    }

    fn get_exact(&self, key: &PidMappingKey) -> io::Result<Option<PidMappingValue>> {
        let mut value = [0u8; PidMappingValue::SIZE];
        if !self.lookup_into(&key.to_bytes(), &mut value)? {
            return Ok(None);
        }
        Ok(PidMappingValue::from_bytes(&value).filter(|v| is_entry_of(key, v)))
    }

    fn keys(&self) -> io::Result<Vec<PidMappingKey>> {
        Ok(Map::keys(self)?
            .iter()
            .filter_map(|k| PidMappingKey::from_bytes(k))
            .collect())
    }

    fn capacity(&self) -> usize {
        self.max_entries() as usize
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pending {
    Upsert(PidMappingValue),
    Delete,
}

/// What a flush did, for the caller's capacity handling.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Keys that could not be inserted because the map is full, in the order queued.
    pub rejected_full: Vec<(PidMappingKey, PidMappingValue)>,
}

/// Queue of pending map writes, coalesced per key.
#[derive(Default)]
pub struct Batcher {
    pending: BTreeMap<PidMappingKey, Pending>,
    /// Keys this batcher believes are in the map (it is the only writer).
    written: HashSet<PidMappingKey>,
}

impl Batcher {
    pub fn upsert(&mut self, key: PidMappingKey, value: PidMappingValue) {
        self.pending.insert(key, Pending::Upsert(value));
    }

    /// Queues a delete. A key inserted and deleted before any flush cancels out.
    pub fn delete(&mut self, key: PidMappingKey) {
        if self.written.contains(&key) {
            self.pending.insert(key, Pending::Delete);
        } else {
            self.pending.remove(&key);
        }
    }

    pub fn queued(&self) -> usize {
        self.pending.len()
    }

    /// Entries written and not deleted, as far as this batcher knows.
    pub fn entries(&self) -> usize {
        self.written.len()
    }

    /// Applies everything queued: deletes first (they make room), then updates.
    pub fn flush(&mut self, map: &mut dyn MapBackend, stats: &Stats) -> FlushReport {
        let pending = std::mem::take(&mut self.pending);
        let mut deletes = Vec::new();
        let mut upserts = Vec::new();
        for (key, op) in pending {
            match op {
                Pending::Delete => deletes.push(key),
                Pending::Upsert(value) => upserts.push((key, value)),
            }
        }
        self.delete_checked(map, &deletes, stats);
        self.update(map, upserts, stats)
    }

    fn delete_checked(&mut self, map: &mut dyn MapBackend, keys: &[PidMappingKey], stats: &Stats) {
        let mut present = Vec::with_capacity(keys.len());
        for key in keys {
            self.written.remove(key);
            match map.get_exact(key) {
                Ok(Some(_)) => present.push(*key),
                Ok(None) => Stats::inc(&stats.map_delete_absent),
                Err(err) => {
                    Stats::inc(&stats.map_delete_errors);
                    crate::log::warn(&format!("pid_mappings lookup before delete failed: {err}"));
                }
            }
        }
        for chunk in present.chunks(BATCH_SIZE) {
            let mut rest = chunk;
            while !rest.is_empty() {
                let outcome = map.delete_batch(rest);
                Stats::add(&stats.map_deletes, outcome.done as u64);
                let Some(err) = outcome.error else { break };
                // The kernel stopped at rest[done]; skip it and carry on behind it.
                Stats::inc(&stats.map_delete_errors);
                crate::log::warn(&format!("pid_mappings batch delete stopped early: {err}"));
                rest = rest.get(outcome.done + 1..).unwrap_or(&[]);
            }
        }
    }

    fn update(
        &mut self,
        map: &mut dyn MapBackend,
        upserts: Vec<(PidMappingKey, PidMappingValue)>,
        stats: &Stats,
    ) -> FlushReport {
        let mut report = FlushReport::default();
        for chunk in upserts.chunks(BATCH_SIZE) {
            let mut rest = chunk;
            while !rest.is_empty() {
                let keys: Vec<_> = rest.iter().map(|(k, _)| *k).collect();
                let values: Vec<_> = rest.iter().map(|(_, v)| *v).collect();
                let outcome = map.update_batch(&keys, &values);
                Stats::add(&stats.map_updates, outcome.done as u64);
                self.written.extend(keys[..outcome.done].iter().copied());
                let Some(err) = outcome.error else { break };
                let failed = rest[outcome.done];
                if is_full(&err) {
                    report.rejected_full.push(failed);
                } else {
                    Stats::inc(&stats.map_update_errors);
                    crate::log::warn(&format!("pid_mappings update failed: {err}"));
                }
                rest = &rest[outcome.done + 1..];
            }
        }
        report
    }
}

/// The errors a full map answers with (E2BIG for hash maps, ENOSPC for LPM tries).
pub fn is_full(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::E2BIG) | Some(libc::ENOSPC) | Some(libc::ENOMEM)
    )
}

#[cfg(test)]
#[path = "batcher_tests.rs"]
mod tests;
