//! Tables built from real files (a fixture built at test time and the system's libc), as the
//! extractor builds them: the BPF encoding's lookup agrees with the extracted rows at every
//! offset.

use std::path::Path;

use crate::cfi::extract;
use crate::cfi::tests::{build, scratch, LIBC, O2};
use crate::unwind::{CompactRow, CompactTable};
use crate::unwind_rows::RowKind;

#[test]
fn libc_restore_rt_is_a_signal_frame() {
    let data = std::fs::read(LIBC).expect("read libc");
    let code = [0x48, 0xc7, 0xc0, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05];
    let at = data
        .windows(code.len())
        .position(|w| w == code)
        .expect("__restore_rt's code in libc") as u64;
    let table = extract(Path::new(LIBC)).expect("extract");
    for offset in [at - 1, at, at + 8] {
        let row = table.lookup(offset).expect("row");
        assert_eq!(row.kind(), RowKind::SignalFrame, "at {offset:#x}: {row}");
    }
    assert_eq!(
        table.stats.signal_trampolines_by_code, 0,
        "libc's has CFI ('S')"
    );
    let compact = CompactTable::encode(&table.rows).expect("compact");
    assert_eq!(compact.lookup(at), Some(CompactRow::SignalFrame));
}

#[test]
fn compact_lookup_agrees_with_rows_on_every_offset() {
    let dir = scratch("compact");
    let fixture = build(&dir, "unwind_prologues", "fx", O2);
    for path in [fixture.as_path(), Path::new(LIBC)] {
        let table = extract(path).expect("extract");
        let compact = CompactTable::encode(&table.rows).expect("compact");
        let (first, last) = (
            table.rows[0].offset,
            table.rows[table.rows.len() - 1].offset,
        );
        for offset in first.saturating_sub(2048)..last + 2048 {
            let expected = table.lookup(offset).and_then(CompactRow::of);
            assert_eq!(
                compact.lookup(offset),
                expected,
                "{}: {offset:#x}",
                path.display()
            );
        }
    }
}
