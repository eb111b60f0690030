//! The user-space step against the encoding and a hand-made stack.

use super::*;
use crate::unwind::compact::CompactTable;
use crate::unwind_rows::{RaRule, UnwindRow};

fn frame(offset: u64, cfa: CfaRule, rbp: RegRule) -> UnwindRow {
    UnwindRow {
        offset,
        cfa,
        rbp,
        ra: RaRule::AtCfaMinus8,
    }
}

/// A stack of 8-byte words from `sp` up.
fn reader(sp: u64, words: &[u64]) -> impl Fn(u64) -> Option<u64> + '_ {
    move |addr| {
        let i = addr.checked_sub(sp)?;
        (i % 8 == 0).then(|| words.get((i / 8) as usize).copied())?
    }
}

fn table_ref(t: &CompactTable) -> TableRef {
    TableRef {
        first: 0,
        direct: t.direct_buckets(),
        base: t.base(),
    }
}

#[test]
fn finds_the_same_row_as_the_table_lookup_including_redirects() {
    // 200 rows in one KiB overflow its bucket: the lookup must follow the redirect.
    let mut rows: Vec<UnwindRow> = (0..200)
        .map(|i| {
            frame(
                0x1000 + i * 5,
                CfaRule::RspOffset(8 + 8 * (i as i32 % 40)),
                RegRule::Unchanged,
            )
        })
        .collect();
    rows.push(frame(
        0x1400,
        CfaRule::RbpOffset(16),
        RegRule::AtCfaOffset(-16),
    ));
    rows.push(UnwindRow {
        offset: 0x1800,
        cfa: CfaRule::NoInfo,
        rbp: RegRule::Unchanged,
        ra: RaRule::Outermost,
    });
    let table = CompactTable::encode(&rows).unwrap();
    let buckets = table.buckets().to_vec();
    let bucket = |i: u32| buckets.get(i as usize).copied();
    for offset in 0xf00..0x1900 {
        assert_eq!(
            find_row(table_ref(&table), offset, &bucket),
            table.lookup(offset),
            "offset {offset:#x}"
        );
    }
}

#[test]
fn steps_like_the_sampler() {
    let sp = 0x7ff0_0000;
    // [sp]: local, [sp+8]: saved rbp, [sp+16]: return address, then the caller's frame.
    let words = [0x11, 0xbbbb_0000, 0x40_1234, 0, 0];
    let read = reader(sp, &words);
    let regs = Regs {
        pc: 0x40_0100,
        sp,
        bp: 0x5,
        pc_exact: true,
    };
    let row = CompactRow::Frame {
        cfa: CfaRule::RspOffset(24),
        rbp: RegRule::AtCfaOffset(-16),
    };
    assert_eq!(
        step(Some(row), regs, 0x100, &read),
        Step::Caller(Regs {
            pc: 0x40_1234,
            sp: sp + 24,
            bp: 0xbbbb_0000,
            pc_exact: false
        })
    );
    // A CFA that does not move up, a read past the copy, the outermost marker, no info.
    let bad = CompactRow::Frame {
        cfa: CfaRule::RspOffset(0),
        rbp: RegRule::Unchanged,
    };
    assert_eq!(step(Some(bad), regs, 0, &read), Step::Stop(Stop::BadCfa));
    let far = CompactRow::Frame {
        cfa: CfaRule::RspOffset(4096),
        rbp: RegRule::Unchanged,
    };
    assert_eq!(step(Some(far), regs, 0, &read), Step::Stop(Stop::ReadFault));
    assert_eq!(
        step(Some(CompactRow::Outermost), regs, 0, &read),
        Step::Outermost
    );
    // Without a rule: frame pointers, as in BPF ([bp] = next bp, [bp+8] = return address).
    let fp = Regs { bp: sp + 8, ..regs };
    assert_eq!(
        step(None, fp, 0, &read),
        Step::Caller(Regs {
            pc: 0x40_1234,
            sp: sp + 24,
            bp: 0xbbbb_0000,
            pc_exact: false
        })
    );
    assert_eq!(
        step(None, Regs { bp: 0, ..regs }, 0, &read),
        Step::Stop(Stop::FpEnd)
    );
    // A zero return address ends the walk.
    let zero_ra = [0u64, 0, 0];
    let read = reader(sp, &zero_ra);
    let row = CompactRow::Frame {
        cfa: CfaRule::RspOffset(8),
        rbp: RegRule::Unchanged,
    };
    assert_eq!(step(Some(row), regs, 0, &read), Step::Outermost);
}

#[test]
fn plt_rule_depends_on_the_offset_in_the_entry() {
    let sp = 0x1000;
    let words = [0x10, 0x20, 0x30];
    let read = reader(sp, &words);
    let regs = Regs {
        pc: 0,
        sp,
        bp: 0,
        pc_exact: true,
    };
    let row = CompactRow::Frame {
        cfa: CfaRule::Plt {
            rsp_offset: 8,
            threshold: 11,
        },
        rbp: RegRule::Unchanged,
    };
    let Step::Caller(before) = step(Some(row), regs, 0x20 + 10, &read) else {
        panic!()
    };
    let Step::Caller(after) = step(Some(row), regs, 0x20 + 11, &read) else {
        panic!()
    };
    assert_eq!((before.sp, before.pc), (sp + 8, 0x10));
    assert_eq!((after.sp, after.pc), (sp + 16, 0x20));
}
