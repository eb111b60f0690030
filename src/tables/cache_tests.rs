//! The table cache: what is stored comes back only for the same file, whole and unchanged, and
//! the directory keeps to its bound and its owner.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::*;
use crate::cfi::tests::{scratch, LIBC};

fn libc_table() -> CompactTable {
    let table = crate::cfi::extract(Path::new(LIBC)).expect("extract libc");
    CompactTable::encode(&table.rows).expect("encode")
}

fn key(n: u64) -> FileKey {
    FileKey {
        dev: 0x801,
        inode: 1000 + n,
        size: 4096,
        mtime_ns: 1_700_000_000_000_000_000,
        ctime_ns: 1_700_000_000_000_000_001,
    }
}

fn same(a: &CompactTable, b: &CompactTable) -> bool {
    a.base() == b.base() && a.direct_buckets() == b.direct_buckets() && a.buckets() == b.buckets()
}

#[test]
fn a_stored_table_comes_back_for_the_same_file_only() {
    let dir = scratch("table-cache");
    let cache = TableCache::open(&dir, MAX_BYTES).expect("open");
    let table = libc_table();
    assert!(cache.load(&key(1)).is_none(), "nothing stored yet");
    cache.store(&key(1), &table).expect("store");
    let back = cache.load(&key(1)).expect("a hit");
    assert!(same(&back, &table));
    assert_eq!(back.stats().rows, table.stats().rows);
    for other in [
        FileKey {
            mtime_ns: key(1).mtime_ns + 1,
            ..key(1)
        },
        FileKey {
            size: 4097,
            ..key(1)
        },
        key(2),
    ] {
        assert!(cache.load(&other).is_none(), "{other:?}");
    }
}

#[test]
fn a_damaged_entry_is_ignored() {
    let dir = scratch("table-cache-damaged");
    let cache = TableCache::open(&dir, MAX_BYTES).expect("open");
    let table = libc_table();
    cache.store(&key(1), &table).expect("store");
    let path = dir.join(key(1).file_name());
    let good = std::fs::read(&path).unwrap();
    let flip = |at: usize| {
        let mut bad = good.clone();
        bad[at] ^= 1;
        bad
    };
    for bad in [
        flip(good.len() - 1),              // a bucket byte: the checksum
        flip(0),                           // the magic
        flip(8),                           // the version
        flip(60),                          // the base (a multiple of 1 KiB still)
        flip(HEADER_BYTES - 12),           // the bucket count
        good[..good.len() - 256].to_vec(), // one bucket short
        good[..10].to_vec(),
        Vec::new(),
    ] {
        std::fs::write(&path, &bad).unwrap();
        assert!(cache.load(&key(1)).is_none());
    }
    std::fs::write(&path, &good).unwrap();
    assert!(cache.load(&key(1)).is_some(), "the good bytes still load");
}

#[test]
fn the_least_recently_used_entries_go_past_the_bound() {
    let dir = scratch("table-cache-bound");
    let table = libc_table();
    let entry = entry_len(&table);
    let cache = TableCache::open(&dir, 2 * entry).expect("open");
    let aged = |n: u64, secs: u64| {
        let file = File::options()
            .write(true)
            .open(dir.join(key(n).file_name()))
            .unwrap();
        file.set_modified(SystemTime::now() - Duration::from_secs(secs))
            .unwrap();
    };
    cache.store(&key(1), &table).unwrap();
    aged(1, 300);
    cache.store(&key(2), &table).unwrap();
    aged(2, 200);
    assert!(
        cache.load(&key(1)).is_some(),
        "a hit makes 1 the most recent"
    );
    cache.store(&key(3), &table).unwrap();
    assert!(cache.load(&key(2)).is_none(), "2 was used least recently");
    assert!(cache.load(&key(1)).is_some());
    assert!(cache.load(&key(3)).is_some());
    let names: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(names.len(), 2, "no temporary files left: {names:?}");
}

#[test]
fn a_directory_others_may_write_is_refused() {
    let dir = scratch("table-cache-open");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = TableCache::open(&dir, MAX_BYTES).expect_err("world-writable");
    assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
    let nested = dir.join("a/b");
    let cache = TableCache::open(&nested, MAX_BYTES).expect("created");
    let mode = std::fs::metadata(&cache.dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
}

#[test]
fn parts_that_cannot_be_a_table_are_refused() {
    let table = libc_table();
    let parts = |base: u64, direct: u32| {
        CompactTable::from_parts(base, direct, table.buckets().to_vec(), Default::default())
    };
    assert!(parts(table.base(), table.direct_buckets()).is_some());
    assert!(parts(table.base() + 1, table.direct_buckets()).is_none());
    assert!(parts(table.base(), table.buckets().len() as u32 + 1).is_none());
    // A redirect out of the table.
    let mut buckets = table.buckets().to_vec();
    buckets.truncate(table.direct_buckets() as usize);
    let redirects = buckets.iter().any(|b| {
        b.rule
            .iter()
            .any(|r| r.kind & 0xf == crate::unwind::compact::KIND_REDIRECT)
    });
    assert!(redirects, "libc's table has overflow buckets");
    let direct = table.direct_buckets();
    assert!(CompactTable::from_parts(table.base(), direct, buckets, Default::default()).is_none());
}
