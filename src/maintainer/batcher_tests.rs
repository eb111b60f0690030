//! Batcher tests against the fake map: coalescing, existence-checked deletes, resuming after a
//! missing key, and a full map.

use super::*;
use crate::maintainer::fake_map::{FakeMap, Op};

fn key(pid: u32, addr: u64) -> PidMappingKey {
    PidMappingKey::new(pid, addr, 84)
}

fn value(addr: u64) -> PidMappingValue {
    PidMappingValue {
        file_id: 1,
        flags: 0,
        prefixlen: 84,
        bias: 0,
        prefix_addr: addr,
        exec_gen: 0,
        table: Default::default(),
        map_start: addr,
        map_end: addr + 0x1000,
    }
}

#[test]
fn insert_then_delete_before_a_flush_cancels_out() {
    let (mut b, mut map, stats) = (Batcher::default(), FakeMap::new(100), Stats::default());
    b.upsert(key(1, 0x1000), value(0x1000));
    b.delete(key(1, 0x1000));
    b.flush(&mut map, &stats);
    assert!(map.ops.is_empty(), "{:?}", map.ops);
}

#[test]
fn deletes_only_keys_that_exist_and_counts_the_rest() {
    let (mut b, mut map, stats) = (Batcher::default(), FakeMap::new(100), Stats::default());
    for a in [0x1000, 0x2000, 0x3000] {
        b.upsert(key(1, a), value(a));
    }
    b.flush(&mut map, &stats);
    map.entries.remove(&key(1, 0x2000)); // gone behind our back
    for a in [0x1000, 0x2000, 0x3000] {
        b.delete(key(1, a));
    }
    b.flush(&mut map, &stats);
    assert_eq!(
        map.deleted(),
        vec![key(1, 0x1000), key(1, 0x3000)],
        "the absent key is not sent"
    );
    assert!(map.entries.is_empty());
    assert_eq!(Stats::get(&stats.map_delete_absent), 1);
    assert_eq!(Stats::get(&stats.map_delete_errors), 0);
    assert_eq!(Stats::get(&stats.map_deletes), 2);
}

/// A map that loses a key between the existence check and the batch delete: the batch stops
/// there, and the batcher must resume behind it.
struct Racy(FakeMap);

impl MapBackend for Racy {
    fn update_batch(&mut self, k: &[PidMappingKey], v: &[PidMappingValue]) -> BatchOutcome {
        self.0.update_batch(k, v)
    }
    fn delete_batch(&mut self, keys: &[PidMappingKey]) -> BatchOutcome {
        self.0.entries.remove(&key(1, 0x2000));
        self.0.delete_batch(keys)
    }
    fn get_exact(&self, k: &PidMappingKey) -> io::Result<Option<PidMappingValue>> {
        self.0.get_exact(k)
    }
    fn keys(&self) -> io::Result<Vec<PidMappingKey>> {
        self.0.keys()
    }
    fn capacity(&self) -> usize {
        self.0.capacity
    }
}

#[test]
fn a_batch_delete_that_hits_a_missing_key_resumes_behind_it() {
    let (mut b, stats) = (Batcher::default(), Stats::default());
    let mut map = Racy(FakeMap::new(100));
    for a in [0x1000, 0x2000, 0x3000, 0x4000] {
        b.upsert(key(1, a), value(a));
    }
    b.flush(&mut map, &stats);
    for a in [0x1000, 0x2000, 0x3000, 0x4000] {
        b.delete(key(1, a));
    }
    b.flush(&mut map, &stats);
    assert!(
        map.0.entries.is_empty(),
        "nothing is left behind: {:?}",
        map.0.entries
    );
    assert_eq!(
        Stats::get(&stats.map_delete_errors),
        1,
        "the failure is counted"
    );
    assert_eq!(
        map.0.ops[1..],
        [
            Op::Delete(vec![
                key(1, 0x1000),
                key(1, 0x2000),
                key(1, 0x3000),
                key(1, 0x4000)
            ]),
            Op::Delete(vec![key(1, 0x3000), key(1, 0x4000)])
        ]
    );
}

#[test]
fn a_full_map_rejects_the_rest_without_failing_the_batch() {
    let (mut b, mut map, stats) = (Batcher::default(), FakeMap::new(2), Stats::default());
    for a in [0x1000, 0x2000, 0x3000, 0x4000] {
        b.upsert(key(1, a), value(a));
    }
    let report = b.flush(&mut map, &stats);
    assert_eq!(map.entries.len(), 2);
    assert_eq!(
        report
            .rejected_full
            .iter()
            .map(|(k, _)| *k)
            .collect::<Vec<_>>(),
        vec![key(1, 0x3000), key(1, 0x4000)]
    );
    assert_eq!(b.entries(), 2);
}

#[test]
fn large_queues_flush_in_bounded_batches() {
    let (mut b, mut map, stats) = (Batcher::default(), FakeMap::new(10_000), Stats::default());
    for i in 0..1300u64 {
        b.upsert(key(1, i << 12), value(i << 12));
    }
    b.flush(&mut map, &stats);
    let sizes: Vec<usize> = map
        .ops
        .iter()
        .map(|op| match op {
            Op::Update(k) | Op::Delete(k) => k.len(),
        })
        .collect();
    assert_eq!(sizes, vec![512, 512, 276]);
    assert_eq!(Stats::get(&stats.map_updates), 1300);
}
