//! The kernel's own map semantics, on real BPF maps (root): what a batch delete does with a
//! missing key, that the batcher leaves nothing behind anyway, and that the LPM prefixes of a
//! mapping cover exactly its bytes.

mod common;

use common::bpf_available;
use profiler::layout::{consts, PidMappingKey, PidMappingValue};
use profiler::maintainer::batcher::{Batcher, MapBackend};
use profiler::pid_mappings::prefixes::{cover, marker_key};
use profiler::stats::Stats;
use profiler::sys::bpf::{Map, MapKind};

fn trie() -> Map {
    Map::create(
        MapKind::LpmTrie,
        "test_trie",
        16,
        PidMappingValue::SIZE as u32,
        4096,
    )
    .expect("create an LPM trie")
}

fn value_for(key: &PidMappingKey, file_id: u32) -> PidMappingValue {
    PidMappingValue {
        file_id,
        flags: 0,
        prefixlen: key.prefixlen as u16,
        bias: 0x1000,
        prefix_addr: key.addr(),
        exec_gen: 0,
        ..Default::default()
    }
}

fn lookup(map: &Map, pid: u32, addr: u64) -> Option<PidMappingValue> {
    let key = PidMappingKey::new(pid, addr, consts::PID_MAPPING_KEY_BITS as u32);
    let mut value = [0u8; PidMappingValue::SIZE];
    map.lookup_into(&key.to_bytes(), &mut value)
        .unwrap()
        .then(|| PidMappingValue::from_bytes(&value).unwrap())
}

#[test]
fn the_kernel_batch_delete_stops_at_the_first_missing_key() {
    if !bpf_available("the_kernel_batch_delete_stops_at_the_first_missing_key") {
        return;
    }
    let mut map = trie();
    let keys: Vec<PidMappingKey> = (0..6)
        .map(|i| PidMappingKey::new(1, 0x10000 * (i + 1), 84))
        .collect();
    let values: Vec<PidMappingValue> = keys.iter().map(|k| value_for(k, 1)).collect();
    assert!(MapBackend::update_batch(&mut map, &keys, &values)
        .error
        .is_none());
    map.delete(&keys[2].to_bytes()).unwrap();
    let outcome = MapBackend::delete_batch(&mut map, &keys);
    assert_eq!(
        outcome.done, 2,
        "deleted the two keys before the missing one"
    );
    assert_eq!(outcome.error.unwrap().raw_os_error(), Some(libc::ENOENT));
    assert_eq!(
        MapBackend::keys(&map).unwrap().len(),
        3,
        "the keys after it are left: the seed's leak"
    );
}

#[test]
fn the_batcher_removes_every_present_key_when_some_are_missing() {
    if !bpf_available("the_batcher_removes_every_present_key_when_some_are_missing") {
        return;
    }
    let (mut map, mut batcher, stats) = (trie(), Batcher::default(), Stats::default());
    let keys: Vec<PidMappingKey> = (0..10)
        .map(|i| PidMappingKey::new(7, 0x10000 * (i + 1), 84))
        .collect();
    batcher.upsert(
        marker_key(7),
        PidMappingValue {
            flags: consts::MAPPING_MARKER as u16,
            prefixlen: 32,
            ..Default::default()
        },
    );
    for key in &keys {
        batcher.upsert(*key, value_for(key, 3));
    }
    batcher.flush(&mut map, &stats);
    assert_eq!(MapBackend::keys(&map).unwrap().len(), 11);
    // Two keys in the middle vanish behind the batcher's back (as with a double delete).
    map.delete(&keys[3].to_bytes()).unwrap();
    map.delete(&keys[7].to_bytes()).unwrap();
    for key in &keys {
        batcher.delete(*key);
    }
    batcher.delete(marker_key(7));
    batcher.flush(&mut map, &stats);
    assert!(
        MapBackend::keys(&map).unwrap().is_empty(),
        "nothing left behind"
    );
    assert_eq!(
        Stats::get(&stats.map_delete_absent),
        2,
        "absent keys were detected, not sent"
    );
    assert_eq!(Stats::get(&stats.map_delete_errors), 0);
    assert_eq!(Stats::get(&stats.map_deletes), 9);
}

#[test]
fn an_absent_key_is_told_apart_from_the_marker_that_matches_its_address() {
    if !bpf_available("an_absent_key_is_told_apart_from_the_marker_that_matches_its_address") {
        return;
    }
    let (mut map, mut batcher, stats) = (trie(), Batcher::default(), Stats::default());
    let marker = PidMappingValue {
        flags: consts::MAPPING_MARKER as u16,
        prefixlen: 32,
        ..Default::default()
    };
    batcher.upsert(marker_key(7), marker);
    batcher.flush(&mut map, &stats);
    let absent = PidMappingKey::new(7, 0x40_0000, 84);
    assert!(
        lookup(&map, 7, 0x40_0000).is_some(),
        "an LPM lookup finds the marker"
    );
    assert_eq!(
        map.get_exact(&absent).unwrap(),
        None,
        "but the exact key is absent"
    );
    assert_eq!(map.get_exact(&marker_key(7)).unwrap(), Some(marker));
}

#[test]
fn prefixes_cover_exactly_the_bytes_of_a_mapping() {
    if !bpf_available("prefixes_cover_exactly_the_bytes_of_a_mapping") {
        return;
    }
    let (mut map, mut batcher, stats) = (trie(), Batcher::default(), Stats::default());
    let (pid, start, end) = (4242u32, 0x55d0_c8a0_2000u64, 0x55d0_c8a9_5000u64);
    for block in cover(start, end) {
        let key = block.key(pid);
        batcher.upsert(key, value_for(&key, 9));
    }
    batcher.flush(&mut map, &stats);
    assert_eq!(
        lookup(&map, pid, start).map(|v| v.file_id),
        Some(9),
        "first byte"
    );
    assert_eq!(
        lookup(&map, pid, end - 1).map(|v| v.file_id),
        Some(9),
        "last byte"
    );
    assert_eq!(
        lookup(&map, pid, (start + end) / 2).map(|v| v.file_id),
        Some(9),
        "middle"
    );
    assert_eq!(lookup(&map, pid, start - 1), None, "one byte before");
    assert_eq!(lookup(&map, pid, end), None, "one byte after");
    assert_eq!(lookup(&map, pid + 1, start), None, "another PID");
    assert_eq!(lookup(&map, pid - 1, end - 1), None, "another PID");
    // Every entry's value names its own prefix, and the bias turns addresses into offsets.
    let hit = lookup(&map, pid, start + 0x123).unwrap();
    assert!(hit.prefix_addr <= start + 0x123);
    assert_eq!(start + 0x123 - hit.bias, start + 0x123 - 0x1000);
}
