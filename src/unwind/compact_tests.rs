//! Tests of the BPF encoding: every rule round-trips, overflowing KiBs resolve through one
//! redirect, and a lookup agrees with the generic rows at every offset.

use super::*;
use crate::unwind::rng::Rng;
use crate::unwind_rows::RaRule;

fn frame(offset: u64, cfa: CfaRule, rbp: RegRule) -> UnwindRow {
    UnwindRow {
        offset,
        cfa,
        rbp,
        ra: RaRule::AtCfaMinus8,
    }
}

#[test]
fn every_representable_rule_round_trips() {
    let cfas = [
        CfaRule::RspOffset(8),
        CfaRule::RspOffset(195_680),
        CfaRule::RspOffset(-8),
        CfaRule::RbpOffset(16),
        CfaRule::Plt {
            rsp_offset: 8,
            threshold: 11,
        },
        CfaRule::DerefRsp {
            offset: 152,
            add: 8,
        },
        CfaRule::DerefRbp {
            offset: -40,
            add: 0,
        },
    ];
    let rbps = [
        RegRule::Unchanged,
        RegRule::AtCfaOffset(-16),
        RegRule::AtCfaOffset(-1024),
        RegRule::AtRbpOffset(0),
        RegRule::Unsupported,
    ];
    for cfa in cfas {
        for rbp in rbps {
            let row = frame(0, cfa, rbp);
            assert_eq!(
                CompactRow::of(&row),
                Some(CompactRow::Frame { cfa, rbp }),
                "{row:?}"
            );
        }
    }
    let mark = |ra| UnwindRow {
        ra,
        ..frame(0, CfaRule::RspOffset(8), RegRule::Unchanged)
    };
    assert_eq!(
        CompactRow::of(&mark(RaRule::Outermost)),
        Some(CompactRow::Outermost)
    );
    assert_eq!(
        CompactRow::of(&mark(RaRule::SignalFrame)),
        Some(CompactRow::SignalFrame)
    );
    assert_eq!(
        CompactRow::of(&mark(RaRule::Unsupported)),
        Some(CompactRow::Unsupported)
    );
    assert_eq!(CompactRow::of(&UnwindRow::no_info(0)), None);
}

#[test]
fn unencodable_operands_degrade_safely() {
    // rbp slots must be multiples of 8 within ±1 KiB; otherwise rbp becomes unknown.
    for rbp in [RegRule::AtCfaOffset(-12), RegRule::AtCfaOffset(-2048)] {
        let row = frame(0, CfaRule::RspOffset(8), rbp);
        assert_eq!(
            CompactRow::of(&row),
            Some(CompactRow::Frame {
                cfa: CfaRule::RspOffset(8),
                rbp: RegRule::Unsupported
            })
        );
    }
    // CFA offsets are stored in eighths: 16 bits for rsp/rbp (18 for a large rsp frame), 8
    // bits in the two-operand kinds.
    for cfa in [
        CfaRule::RspOffset(12),
        CfaRule::RspOffset(2_097_152),
        CfaRule::RspOffset(300_004),
        CfaRule::RbpOffset(300_000),
        CfaRule::DerefRsp {
            offset: 40_000,
            add: 8,
        },
        CfaRule::DerefRbp {
            offset: -40,
            add: 4,
        },
        CfaRule::Unsupported,
    ] {
        let row = frame(0, cfa, RegRule::Unchanged);
        assert_eq!(
            CompactRow::of(&row),
            Some(CompactRow::Unsupported),
            "{cfa:?}"
        );
    }
}

#[test]
fn large_rsp_frames_use_the_wide_kind() {
    // rustc's run_compiler closure: cfa=rsp+540080 with rbp at cfa-16 (beyond i16 eighths).
    for (cfa, kind) in [
        (262_136, KIND_RSP),
        (262_144, KIND_RSP_WIDE),
        (540_080, KIND_RSP_WIDE),
        (2_097_144, KIND_RSP_WIDE),
    ] {
        let row = frame(0, CfaRule::RspOffset(cfa), RegRule::AtCfaOffset(-16));
        let rule = Rule::encode(&row);
        assert_eq!(rule.kind & 0xf, kind, "{cfa}");
        assert_eq!((rule.kind >> RBP_SHIFT) & 3, RBP_AT_CFA, "{cfa}");
        assert_eq!(
            rule.decode(),
            Some(CompactRow::Frame {
                cfa: CfaRule::RspOffset(cfa),
                rbp: RegRule::AtCfaOffset(-16)
            }),
            "{cfa}"
        );
    }
    // The bits BPF reads: (kind >> 6) << 16 | (u16)cfa, in eighths.
    let rule = Rule::encode(&frame(0, CfaRule::RspOffset(540_080), RegRule::Unchanged));
    let units = u32::from(rule.kind >> 6) << 16 | u32::from(rule.cfa as u16);
    assert_eq!(u64::from(units) * 8, 540_080);
}

#[test]
fn buckets_have_the_documented_bytes() {
    let rsp = |offset, cfa| frame(offset, CfaRule::RspOffset(cfa), RegRule::AtCfaOffset(-16));
    let rows = [
        rsp(0x1000, 8),
        rsp(0x1004, 16),
        rsp(0x1008, 8),
        UnwindRow::no_info(0x1010),
    ];
    let table = CompactTable::encode(&rows).expect("encode");
    assert_eq!((table.base(), table.direct_buckets()), (0x1000, 1));
    let bytes = table.buckets()[0].to_bytes();
    assert_eq!(Bucket::from_bytes(&bytes), table.buckets()[0]);
    // Keys (pc << 5 | rule): 0|0, 4|1, 8|0 (the first rule again), 16|2, then padding.
    assert_eq!(&bytes[..10], &[0, 0, 0x81, 0, 0, 1, 2, 2, 0xff, 0xff]);
    // Rules: kind RSP | RBP_AT_CFA << 4, rbp slot -16 / 8, CFA 8 / 8; then 16 / 8; no info.
    assert_eq!(
        &bytes[128..140],
        &[0x11, 0xfe, 1, 0, 0x11, 0xfe, 2, 0, 0, 0, 0, 0]
    );

    // 40 distinct rules in one KiB: the direct bucket redirects to overflow buckets 1 and 2,
    // the second starting at row 32 (pc 32 * 7 = 224).
    let rows: Vec<UnwindRow> = (0..40)
        .map(|i| rsp(0x1000 + i * 7, 8 + 8 * i as i32))
        .chain([UnwindRow::no_info(0x1200)])
        .collect();
    let table = CompactTable::encode(&rows).expect("encode");
    assert_eq!(table.buckets().len(), 3);
    let bytes = table.buckets()[0].to_bytes();
    assert_eq!(&bytes[..6], &[0, 0, 0x01, 0x1c, 0xff, 0xff]);
    assert_eq!(&bytes[128..136], &[9, 1, 0, 0, 9, 2, 0, 0]);
    for bucket in table.buckets() {
        assert_eq!(Bucket::from_bytes(&bucket.to_bytes()), *bucket);
    }
    for (i, row) in rows.iter().enumerate().take(40) {
        assert_eq!(table.lookup(row.offset), CompactRow::of(row), "row {i}");
    }
}

/// Sorted rows with random rules and densities from sparse to one per byte.
fn random_rows(rng: &mut Rng, base: u64, kib: u64) -> Vec<UnwindRow> {
    let mut rows = Vec::new();
    let mut offset = base + rng.below(3000);
    while offset < base + kib * 1024 {
        let row = match rng.below(12) {
            0 => UnwindRow::no_info(offset),
            1 => UnwindRow {
                ra: RaRule::Outermost,
                ..frame(offset, CfaRule::RspOffset(8), RegRule::Unchanged)
            },
            2 => frame(offset, CfaRule::RbpOffset(16), RegRule::AtCfaOffset(-16)),
            3 => frame(
                offset,
                CfaRule::Plt {
                    rsp_offset: 8,
                    threshold: 11,
                },
                RegRule::Unchanged,
            ),
            _ => frame(
                offset,
                CfaRule::RspOffset(8 * (1 + rng.below(40) as i32)),
                RegRule::AtCfaOffset(-8 * rng.below(6) as i32),
            ),
        };
        if rows.last().map(|r: &UnwindRow| (r.cfa, r.rbp, r.ra)) != Some((row.cfa, row.rbp, row.ra))
        {
            rows.push(row);
        }
        // Dense stretches (one row per byte) force overflow buckets.
        let dense = (offset / 4096) % 3 == 0;
        offset += if dense { 1 } else { 1 + rng.below(200) };
    }
    rows.push(UnwindRow::no_info(offset));
    rows
}

#[test]
fn one_distinct_rule_per_byte_fills_two_levels() {
    let rows: Vec<UnwindRow> = (0..1024u64)
        .map(|i| {
            frame(
                0x4000 + i,
                CfaRule::RspOffset(8 * (1 + i as i32)),
                RegRule::Unchanged,
            )
        })
        .chain([UnwindRow::no_info(0x4400)])
        .collect();
    let table = CompactTable::encode(&rows).expect("encode");
    assert_eq!(table.buckets().len(), 1 + 32);
    for row in &rows {
        assert_eq!(table.lookup(row.offset), CompactRow::of(row));
    }
}

#[test]
fn lookup_agrees_with_rows_everywhere_including_overflow() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..6 {
        let base = 0x1000 * round + rng.below(4096);
        let rows = random_rows(&mut rng, base, 24);
        let table = CompactTable::encode(&rows).expect("encode");
        assert!(
            table.stats().overflowing_kib > 0,
            "round {round} has dense KiBs"
        );
        assert!(table.stats().max_rows_per_kib <= 1024);
        let (first, last) = (rows[0].offset, rows[rows.len() - 1].offset);
        for offset in first.saturating_sub(1100)..last + 1100 {
            let expected = crate::unwind_rows::lookup(&rows, offset).and_then(CompactRow::of);
            assert_eq!(
                table.lookup(offset),
                expected,
                "round {round}, offset {offset:#x}"
            );
        }
    }
}

#[test]
fn one_row_per_byte_fits_two_levels() {
    let rows: Vec<UnwindRow> = (0..1024u64)
        .map(|i| {
            frame(
                0x4000 + i,
                CfaRule::RspOffset(8 + 8 * (i % 2) as i32),
                RegRule::Unchanged,
            )
        })
        .chain([UnwindRow::no_info(0x4400)])
        .collect();
    let table = CompactTable::encode(&rows).expect("encode");
    assert_eq!(table.direct_buckets(), 1);
    // Two rules alternate: chunks of 64 rows.
    assert_eq!(table.buckets().len(), 1 + 16);
    for i in 0..1024u64 {
        let want = CompactRow::Frame {
            cfa: CfaRule::RspOffset(8 + 8 * (i % 2) as i32),
            rbp: RegRule::Unchanged,
        };
        assert_eq!(table.lookup(0x4000 + i), Some(want));
    }
    assert_eq!(table.lookup(0x4400), None);
}

#[test]
fn empty_and_unsorted_input() {
    let table = CompactTable::encode(&[]).expect("encode");
    assert_eq!(table.lookup(0), None);
    assert_eq!(table.bytes(), 0);
    let table = CompactTable::encode(&[UnwindRow::no_info(5)]).expect("encode");
    assert_eq!(table.lookup(5), None);
    let far = [
        frame(0, CfaRule::RspOffset(8), RegRule::Unchanged),
        UnwindRow::no_info(u64::MAX / 2),
    ];
    assert!(matches!(
        CompactTable::encode(&far),
        Err(CompactError::TooLarge { .. })
    ));
}
