//! An in-memory stand-in for the `pid_mappings` trie that behaves like the kernel's batch calls
//! (a batch delete stops at the first missing key; a full map refuses inserts) and records
//! every operation, so tests can assert exactly what was issued.

use std::collections::BTreeMap;
use std::io;

use super::batcher::MapBackend;
use crate::layout::{PidMappingKey, PidMappingValue};
use crate::sys::bpf::BatchOutcome;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Update(Vec<PidMappingKey>),
    Delete(Vec<PidMappingKey>),
}

#[derive(Debug)]
pub struct FakeMap {
    pub entries: BTreeMap<PidMappingKey, PidMappingValue>,
    pub ops: Vec<Op>,
    pub capacity: usize,
}

impl FakeMap {
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: BTreeMap::new(),
            ops: Vec::new(),
            capacity,
        }
    }

    /// Every key deleted so far, in order.
    pub fn deleted(&self) -> Vec<PidMappingKey> {
        self.ops
            .iter()
            .filter_map(|op| match op {
                Op::Delete(keys) => Some(keys.clone()),
                Op::Update(_) => None,
            })
            .flatten()
            .collect()
    }

    /// The file IDs the entries name.
    pub fn file_ids(&self) -> Vec<u32> {
        let ids = self.entries.values().map(|v| v.file_id);
        ids.filter(|&id| id != 0).collect()
    }

    pub fn keys_of(&self, pid: u32) -> Vec<PidMappingKey> {
        self.entries
            .keys()
            .filter(|k| k.pid() == pid)
            .copied()
            .collect()
    }
}

impl MapBackend for FakeMap {
    fn update_batch(&mut self, keys: &[PidMappingKey], values: &[PidMappingValue]) -> BatchOutcome {
        self.ops.push(Op::Update(keys.to_vec()));
        for (i, (k, v)) in keys.iter().zip(values).enumerate() {
            if !self.entries.contains_key(k) && self.entries.len() >= self.capacity {
                return BatchOutcome {
                    done: i,
                    error: Some(io::Error::from_raw_os_error(libc::ENOSPC)),
                };
            }
            self.entries.insert(*k, *v);
        }
        BatchOutcome {
            done: keys.len(),
            error: None,
        }
    }

    fn delete_batch(&mut self, keys: &[PidMappingKey]) -> BatchOutcome {
        self.ops.push(Op::Delete(keys.to_vec()));
        for (i, k) in keys.iter().enumerate() {
            if self.entries.remove(k).is_none() {
                return BatchOutcome {
                    done: i,
                    error: Some(io::Error::from_raw_os_error(libc::ENOENT)),
                };
            }
        }
        BatchOutcome {
            done: keys.len(),
            error: None,
        }
    }

    fn get_exact(&self, key: &PidMappingKey) -> io::Result<Option<PidMappingValue>> {
        Ok(self.entries.get(key).copied())
    }

    fn keys(&self) -> io::Result<Vec<PidMappingKey>> {
        Ok(self.entries.keys().copied().collect())
    }

    fn capacity(&self) -> usize {
        self.capacity
    }
}
