//! The BPF table search (`find_rule` in bpf/table_search.h, the code the sampler runs) against
//! its Rust reference (`CompactTable::find_rule`) on the same tables (root): tables the Rust
//! encoder built from generated rows (overflow buckets, redirects past bucket 255, gaps, a base
//! beyond 4 GiB) and from this test's own executable, stored in the test program's map between
//! poison buckets, searched with `BPF_PROG_TEST_RUN` at every offset of them and 0.1-3 KiB
//! around them, and both answers compared: found or not, which bucket, which rule.

mod common;

use common::bpf_available;
use profiler::layout::TableRef;
use profiler::sys::bpf::{LoadedObject, Map, OpenObject};
use profiler::unwind::compact::{KEY_PAD, KIND_REDIRECT, KIND_RSP};
use profiler::unwind::{Bucket, CompactTable, Rule};
use profiler::unwind_rows::{CfaRule, RaRule, RegRule, UnwindRow};

static OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/table_search_test.bpf.o"));
const PROGRAM: &str = "search_table";
/// Buckets in the test program's map: room for every table below.
const MAP_BUCKETS: u32 = 1 << 16;

/// A rule no encoder writes (CFA = rsp + 0x7777 * 8, 8-aligned but never this large in the
/// generated rows): any bucket the search reads by mistake answers with it.
const POISON: Rule = Rule {
    kind: KIND_RSP,
    rbp: 0x55,
    cfa: 0x7777,
};

/// `struct table_search_run` (bpf/profiler.h), 40 bytes in native byte order: only this test
/// and its program use it, so it is mirrored here rather than in layout.rs.
struct Run {
    table: TableRef,
    offset: u64,
}

impl Run {
    fn to_bytes(&self) -> [u8; 40] {
        let mut b = [0u8; 40];
        b[0..4].copy_from_slice(&self.table.first.to_ne_bytes());
        b[4..8].copy_from_slice(&self.table.direct.to_ne_bytes());
        b[8..16].copy_from_slice(&self.table.base.to_ne_bytes());
        b[16..24].copy_from_slice(&self.offset.to_ne_bytes());
        // found = 2, bucket = u32::MAX: values the program must overwrite.
        b[24..28].copy_from_slice(&2u32.to_ne_bytes());
        b[28..32].copy_from_slice(&u32::MAX.to_ne_bytes());
        b
    }

    /// The program's answer: the absolute bucket index and the rule, if found.
    fn answer(b: &[u8; 40]) -> Option<(u32, Rule)> {
        let word = |at: usize| u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        match word(24) {
            0 => {
                assert_eq!(word(28), 0, "bucket of a miss");
                None
            }
            1 => Some((
                word(28),
                Rule {
                    kind: b[32],
                    rbp: b[33] as i8,
                    cfa: i16::from_ne_bytes([b[34], b[35]]),
                },
            )),
            other => panic!("the program left found = {other}"),
        }
    }
}

/// The test program loaded, with its map full of poison buckets.
struct Harness {
    object: LoadedObject,
    buckets: Map,
    /// The next free bucket index: each table is stored after a gap of poison.
    next: u32,
}

impl Harness {
    fn load() -> Self {
        let mut open = OpenObject::open("table_search_test", OBJECT).expect("open the object");
        open.set_max_entries("unwind_buckets", MAP_BUCKETS)
            .expect("size unwind_buckets");
        let object = open.load().expect("load the test program");
        let buckets = object.map("unwind_buckets").expect("unwind_buckets");
        let poison = Bucket {
            key: [0; 64],
            rule: [POISON; 32],
        }
        .to_bytes();
        let keys: Vec<u8> = (0..MAP_BUCKETS).flat_map(u32::to_ne_bytes).collect();
        let values = poison.repeat(MAP_BUCKETS as usize);
        let outcome = buckets.update_batch(&keys, &values, MAP_BUCKETS as usize, 0);
        assert!(outcome.error.is_none(), "poison: {:?}", outcome.error);
        Self {
            object,
            buckets,
            next: 3,
        }
    }

    /// Stores `buckets` from the next free index; returns that index.
    fn store(&mut self, buckets: &[Bucket]) -> u32 {
        let first = self.next;
        for (i, bucket) in buckets.iter().enumerate() {
            let key = (first + i as u32).to_ne_bytes();
            self.buckets
                .update(&key, &bucket.to_bytes(), 0)
                .expect("store a bucket");
        }
        self.next = first + buckets.len() as u32 + 5;
        assert!(self.next < MAP_BUCKETS, "the map is too small");
        first
    }

    fn place(&mut self, table: &CompactTable) -> TableRef {
        TableRef {
            first: self.store(table.buckets()),
            direct: table.direct_buckets(),
            base: table.base(),
        }
    }

    /// What the BPF search finds at `offset`.
    fn search(&self, table: TableRef, offset: u64) -> Option<(u32, Rule)> {
        let mut ctx = Run { table, offset }.to_bytes();
        let ret = self.object.test_run(PROGRAM, &mut ctx).expect("test run");
        assert_eq!(ret, 0);
        Run::answer(&ctx)
    }

    /// Encodes `rows`, stores the table and compares BPF with Rust at every offset from
    /// `before` bytes ahead of the table to `after` bytes past its direct buckets.
    fn check_rows(&mut self, rows: &[UnwindRow], before: u64, after: u64) -> (Seen, usize) {
        let table = CompactTable::encode(rows).expect("encode");
        let at = self.place(&table);
        let end = at.base + u64::from(at.direct) * 1024;
        let offsets: Vec<u64> = (at.base.saturating_sub(before)..end + after).collect();
        (self.compare(&table, at, &offsets), table.buckets().len())
    }

    /// Compares BPF with `CompactTable::find_rule` at every offset, and says what was seen.
    fn compare(&self, table: &CompactTable, at: TableRef, offsets: &[u64]) -> Seen {
        let mut seen = Seen::default();
        for &offset in offsets {
            let expected = table.find_rule(offset).map(|(i, r)| (at.first + i, r));
            let got = self.search(at, offset);
            assert_eq!(got, expected, "offset {offset:#x} of table {at:?}");
            match expected {
                None => seen.misses += 1,
                Some((_, rule)) if rule.kind == 0 => seen.no_info += 1,
                Some((i, _)) if i - at.first >= at.direct => {
                    seen.redirected += 1;
                    seen.max_redirect = seen.max_redirect.max(i - at.first);
                }
                Some(_) => seen.direct += 1,
            }
        }
        eprintln!("{at:?}: {} offsets agree: {seen:?}", offsets.len());
        seen
    }
}

/// What a comparison covered, so each test can insist its edge cases were reached.
#[derive(Debug, Default)]
struct Seen {
    misses: usize,
    no_info: usize,
    direct: usize,
    redirected: usize,
    /// The largest bucket index (from the table's first) a redirect led to.
    max_redirect: u32,
}

/// xorshift64: reproducible rows without a dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn frame(offset: u64, cfa: CfaRule, rbp: RegRule, ra: RaRule) -> UnwindRow {
    UnwindRow {
        offset,
        cfa,
        rbp,
        ra,
    }
}

/// Rows from `start` for `kib` KiB: sparse stretches with gaps, and the KiBs `dense` picks
/// with a row (of many distinct rules) at every byte, which spill into overflow buckets.
fn rows(rng: &mut Rng, start: u64, kib: u64, dense: impl Fn(u64) -> bool) -> Vec<UnwindRow> {
    let mut out: Vec<UnwindRow> = Vec::new();
    let mut offset = start;
    while offset < start + kib * 1024 {
        let rbp = RegRule::AtCfaOffset(-8 * rng.below(4) as i32);
        let row = match rng.below(16) {
            0 | 1 => UnwindRow::no_info(offset),
            2 => frame(offset, CfaRule::RspOffset(8), rbp, RaRule::Outermost),
            3 => frame(offset, CfaRule::RspOffset(8), rbp, RaRule::SignalFrame),
            4 => frame(offset, CfaRule::RbpOffset(16), rbp, RaRule::AtCfaMinus8),
            5 => frame(
                offset,
                CfaRule::RspOffset(540_080),
                rbp,
                RaRule::AtCfaMinus8,
            ),
            6 => frame(offset, CfaRule::Unsupported, rbp, RaRule::AtCfaMinus8),
            7 => {
                let plt = CfaRule::Plt {
                    rsp_offset: 8,
                    threshold: 11,
                };
                frame(offset, plt, RegRule::Unchanged, RaRule::AtCfaMinus8)
            }
            _ => {
                let cfa = CfaRule::RspOffset(8 * (1 + rng.below(48) as i32));
                frame(offset, cfa, rbp, RaRule::AtCfaMinus8)
            }
        };
        let same = out
            .last()
            .is_some_and(|r| (r.cfa, r.rbp, r.ra) == (row.cfa, row.rbp, row.ra));
        if !same {
            out.push(row);
        }
        offset += if dense((offset - start) / 1024) {
            1
        } else {
            1 + rng.below(300)
        };
    }
    out.push(UnwindRow::no_info(offset));
    out
}

/// The loaded harness, or `None` when BPF is unavailable (the test is skipped).
fn harness(test: &str) -> Option<Harness> {
    bpf_available(test).then(Harness::load)
}

#[test]
fn bpf_and_rust_agree_at_every_offset_of_generated_tables() {
    let Some(mut harness) = harness("bpf_and_rust_agree_at_every_offset_of_generated_tables")
    else {
        return;
    };
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    // The first row mid-KiB (offsets of bucket 0 before it are "no info"), KiBs 2, 5-7 and
    // 13 at one row per byte; a second table with the same rows 4 TiB further on.
    for start in [0x3_1234, (1 << 42) + 0x3_1234] {
        let rows = rows(&mut rng, start, 16, |k| matches!(k, 2 | 5..=7 | 13));
        let (seen, _) = harness.check_rows(&rows, 3000, 3000);
        assert!(seen.misses >= 6000, "{seen:?}");
        assert!(seen.no_info > 0 && seen.direct > 0, "{seen:?}");
        assert!(seen.redirected > 4 * 1024, "{seen:?}");
    }
}

#[test]
fn bpf_and_rust_agree_on_redirects_past_bucket_255() {
    let Some(mut harness) = harness("bpf_and_rust_agree_on_redirects_past_bucket_255") else {
        return;
    };
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // 300 KiB: a redirect's index needs its high byte (the rule's cfa), every one of them.
    let rows = rows(&mut rng, 0x40_0000, 300, |k| k % 37 == 3);
    let (seen, _) = harness.check_rows(&rows, 1100, 2100);
    assert!(seen.max_redirect > 300, "{seen:?}");
    assert!(seen.misses >= 3000 && seen.no_info > 0, "{seen:?}");

    // One distinct rule per byte: a direct bucket redirecting into all 32 slots.
    let rows: Vec<UnwindRow> = (0..1024u64)
        .map(|i| {
            let cfa = CfaRule::RspOffset(8 * (1 + i as i32));
            frame(0x9000 + i, cfa, RegRule::Unchanged, RaRule::AtCfaMinus8)
        })
        .chain([UnwindRow::no_info(0x9400)])
        .collect();
    let (seen, buckets) = harness.check_rows(&rows, 100, 100);
    assert_eq!(buckets, 33);
    assert_eq!((seen.redirected, seen.max_redirect), (1024, 32), "{seen:?}");
}

#[test]
fn bpf_and_rust_agree_on_this_executables_table() {
    let Some(mut harness) = harness("bpf_and_rust_agree_on_this_executables_table") else {
        return;
    };
    let exe = std::env::current_exe().expect("current_exe");
    let image = std::fs::read(&exe).expect("read this test's executable");
    let rows = profiler::cfi::extract_from_bytes(&image)
        .expect("extract")
        .rows;
    // Every offset of its text, and beyond both ends.
    let (seen, _) = harness.check_rows(&rows, 2048, 2048);
    assert!(seen.direct > 100_000 && seen.misses >= 4096, "{seen:?}");
    assert!(seen.redirected > 0, "{seen:?}");
}

#[test]
fn bpf_misses_where_the_documented_search_misses() {
    let Some(mut harness) = harness("bpf_misses_where_the_documented_search_misses") else {
        return;
    };
    let redirect = |index: u32| Rule {
        kind: KIND_REDIRECT,
        rbp: index as u8 as i8,
        cfa: (index >> 8) as i16,
    };
    let frame = Rule {
        kind: KIND_RSP,
        rbp: 0,
        cfa: 2,
    };
    let mut key = [KEY_PAD; 64];
    key[0] = 0;
    let bucket = |rule: Rule| Bucket {
        key,
        rule: [rule; 32],
    };
    // Bucket 0 redirects to 1, which redirects again (the encoder never does): a miss, though
    // a third hop would reach a rule. Buckets 1 and 3 redirect to 4, a rule; bucket 2 past the
    // end of the map: a miss.
    let first = harness.store(&[
        bucket(redirect(1)),
        bucket(redirect(4)),
        bucket(redirect(MAP_BUCKETS)),
        bucket(redirect(4)),
        bucket(frame),
    ]);
    let table = |direct| TableRef {
        first,
        direct,
        base: 0x1000,
    };
    for offset in [0x1000, 0x1001, 0x13ff, 0x1800, 0x1bff] {
        assert_eq!(harness.search(table(4), offset), None, "{offset:#x}");
    }
    for offset in [0x1400, 0x17ff, 0x1c00, 0x1fff] {
        let found = harness.search(table(4), offset);
        assert_eq!(found, Some((first + 4, frame)), "{offset:#x}");
    }
    // Past the direct buckets (bucket 4 is an overflow bucket here) and before the base.
    for offset in [0x2000, 0x23ff, 0xfff, 0, u64::MAX] {
        assert_eq!(harness.search(table(4), offset), None, "{offset:#x}");
    }
    // No table at all.
    assert_eq!(harness.search(table(0), 0x1000), None);
}
