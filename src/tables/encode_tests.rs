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

/// The first ELF file called `name` on PATH (skipping script shims), resolved.
fn on_path(name: &str) -> Option<std::path::PathBuf> {
    let dirs = std::env::var_os("PATH")?;
    std::env::split_paths(&dirs)
        .filter_map(|dir| dir.join(name).canonicalize().ok())
        .find(|p| {
            let mut magic = [0u8; 4];
            std::fs::File::open(p)
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
                .is_ok_and(|()| magic == *b"\x7fELF")
        })
}

/// The extractor's path (rows kept packed, encoded without unpacking, file pages released
/// between passes) gives the same rows and the same bucket bytes as the whole-table path
/// (every row unpacked into a `Vec<UnwindRow>`, encoded from the slice), on real files.
#[test]
fn packed_extraction_encodes_the_same_buckets_as_unpacked_rows() {
    let mut files = vec![Path::new(LIBC).to_path_buf()];
    files.push(std::env::current_exe().expect("own path"));
    match on_path("python3.11").or_else(|| on_path("python3")) {
        Some(python) => files.push(python),
        None => crate::testing::skip("packed_extraction", "no python3 on PATH"),
    }
    for path in &files {
        let packed = crate::cfi::extract_packed(path).expect("extract packed");
        let fast = CompactTable::encode_packed(&packed.rows).expect("encode packed");
        let rows = extract(path).expect("extract").rows;
        assert!(rows.len() > 1000, "{}: {} rows", path.display(), rows.len());
        assert_eq!(packed.rows.to_rows(), rows, "{}", path.display());
        let whole = CompactTable::encode(&rows).expect("encode");
        assert_eq!(
            (fast.base(), fast.direct_buckets()),
            (whole.base(), whole.direct_buckets()),
            "{}",
            path.display()
        );
        assert!(
            fast.buckets()
                .iter()
                .map(|b| b.to_bytes())
                .eq(whole.buckets().iter().map(|b| b.to_bytes())),
            "{}: bucket bytes differ",
            path.display()
        );
        assert_eq!(fast.stats(), whole.stats(), "{}", path.display());
    }
}
