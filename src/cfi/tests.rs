//! Extraction tests against readelf's interpretation of fixtures built at test time and of the
//! system's libc. Extraction time and table sizes: `benches/unwind_tables.rs`. The fixture
//! helpers are shared with the tests of extraction and encoding together (`crate::tables`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use super::debug_file::{hex, map_file};
use super::readelf;
use super::*;
use crate::elf::ElfImage;

pub(crate) const LIBC: &str = "/lib/x86_64-linux-gnu/libc.so.6";

/// A fresh scratch directory.
pub(crate) fn scratch(name: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "profiler-unwind-{}-{name}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Compiles `tests/fixtures/NAME.c` into `dir/out` with `flags`.
pub(crate) fn build(dir: &Path, name: &str, out: &str, flags: &[&str]) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.c"));
    let out = dir.join(out);
    let status = Command::new("cc")
        .args(flags)
        .arg("-o")
        .arg(&out)
        .arg(&source)
        .status()
        .expect("run cc");
    assert!(status.success(), "cc failed for {name}");
    out
}

fn run(program: &str, args: &[&std::ffi::OsStr]) {
    let status = Command::new(program).args(args).status().expect("run tool");
    assert!(status.success(), "{program} {args:?} failed");
}

/// Symbol name → virtual address, from `nm`.
fn symbols(path: &Path) -> Vec<(String, u64)> {
    let out = Command::new("nm").arg(path).output().expect("run nm");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let addr = u64::from_str_radix(it.next()?, 16).ok()?;
            let _kind = it.next()?;
            Some((it.next()?.to_string(), addr))
        })
        .collect()
}

fn symbol(path: &Path, name: &str) -> u64 {
    symbols(path)
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, a)| a)
        .unwrap_or_else(|| panic!("no symbol {name} in {}", path.display()))
}

/// The table and a lookup by virtual address.
struct Fixture {
    path: PathBuf,
    table: UnwindTable,
}

impl Fixture {
    fn new(path: PathBuf) -> Self {
        let table = extract_with_debug_roots(&path, &[])
            .map(UnwindTable::from)
            .expect("extract");
        Self { path, table }
    }

    fn at(&self, vaddr: u64) -> UnwindRow {
        let map = map_file(&self.path).expect("map");
        let image = ElfImage::parse(&map).expect("parse");
        let (offset, _) = image.vaddr_to_offset(vaddr).expect("vaddr in text");
        *self.table.lookup(offset).expect("a row")
    }

    fn at_symbol(&self, name: &str, delta: u64) -> UnwindRow {
        self.at(symbol(&self.path, name) + delta)
    }

    /// Compares with readelf; returns rows checked.
    fn compare(&self, section: &str, skip: impl Fn(u64) -> bool) -> usize {
        let map = map_file(&self.path).expect("map");
        let image = ElfImage::parse(&map).expect("parse");
        let fdes = readelf::frames(&self.path);
        let (checked, mismatches) = readelf::compare(&image, &self.table, &fdes, section, skip);
        assert!(
            mismatches.is_empty(),
            "{}: {} of {checked} rows disagree with readelf, first: {:#?}",
            self.path.display(),
            mismatches.len(),
            &mismatches[..mismatches.len().min(5)]
        );
        checked
    }
}

pub(crate) const O2: &[&str] = &["-O2", "-fomit-frame-pointer"];

#[test]
fn fixture_rows_match_readelf() {
    let dir = scratch("readelf");
    for (out, extra) in [("pie", &[][..]), ("nopie", &["-no-pie"][..])] {
        let flags: Vec<&str> = O2.iter().chain(extra).copied().collect();
        let fx = Fixture::new(build(&dir, "unwind_prologues", out, &flags));
        let checked = fx.compare(".eh_frame", |_| false);
        assert!(checked > 60, "only {checked} rows checked");
        assert_eq!(fx.table.stats.cfi_errors, 0);
    }
}

#[test]
fn fixture_prologues_give_the_expected_rules() {
    let dir = scratch("prologues");
    let fx = Fixture::new(build(&dir, "unwind_prologues", "fx", O2));
    let frame = |row: UnwindRow| (row.cfa, row.rbp, row.ra);
    assert_eq!(
        frame(fx.at_symbol("leaf", 0)),
        (
            CfaRule::RspOffset(8),
            RegRule::Unchanged,
            RaRule::AtCfaMinus8
        )
    );
    let big = symbol(&fx.path, "big_frame");
    assert!(
        (big..big + 64).any(|a| matches!(fx.at(a).cfa, CfaRule::RspOffset(o) if o > 70_000)),
        "big_frame has no CFA beyond 70000"
    );
    let alloca = symbol(&fx.path, "with_alloca");
    assert!((alloca..alloca + 64).any(|a| {
        let r = fx.at(a);
        r.cfa == CfaRule::RbpOffset(16) && r.rbp == RegRule::AtCfaOffset(-16)
    }));
    let realigned = symbol(&fx.path, "realigned");
    assert!((realigned..realigned + 64).any(|a| {
        let r = fx.at(a);
        matches!(r.cfa, CfaRule::DerefRbp { add: 0, .. }) && r.rbp == RegRule::AtRbpOffset(0)
    }));
    // `_start`: its CFI says the return address is undefined, and it is marked by name too.
    assert_eq!(fx.at_symbol("_start", 0).kind(), RowKind::Outermost);
    assert_eq!(fx.at_symbol("_start", 8).kind(), RowKind::Outermost);
    assert_eq!(fx.at_symbol("main", 0).kind(), RowKind::Frame);
}

#[test]
fn plt_entries_get_the_plt_rule() {
    let dir = scratch("plt");
    let fx = Fixture::new(build(&dir, "unwind_prologues", "fx", O2));
    let out = Command::new("readelf")
        .arg("-SW")
        .arg(&fx.path)
        .output()
        .expect("readelf");
    let plt = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.contains(" .plt "))
        .and_then(|l| {
            let after = l.split(".plt").nth(1)?;
            u64::from_str_radix(after.split_whitespace().nth(1)?, 16).ok()
        })
        .expect("a .plt section");
    // PLT0 (push; jmp) has its own rows; the entries after it share the expression.
    let rule = fx.at(plt + 16).cfa;
    assert_eq!(
        rule,
        CfaRule::Plt {
            rsp_offset: 8,
            threshold: 11
        }
    );
    assert!(fx.table.stats.plt_rows >= 1);
}

#[test]
fn gaps_between_fdes_have_no_info() {
    let dir = scratch("gaps");
    let fx = Fixture::new(build(&dir, "unwind_prologues", "fx", O2));
    let mut fdes = readelf::frames(&fx.path);
    fdes.sort_by_key(|f| f.start);
    let mut gaps = 0;
    for pair in fdes.windows(2) {
        if pair[0].end < pair[1].start {
            gaps += 1;
            assert_eq!(fx.at(pair[0].end).kind(), RowKind::NoInfo);
            assert_eq!(fx.at(pair[1].start - 1).kind(), RowKind::NoInfo);
        }
    }
    assert!(gaps > 0, "the fixture has padding between functions");
}

#[test]
fn code_without_cfi_gets_outermost_and_signal_rules_by_name_and_bytes() {
    let dir = scratch("nocfi");
    let fx = Fixture::new(build(
        &dir,
        "unwind_nocfi",
        "nocfi",
        &[
            "-O2",
            "-static",
            "-nostdlib",
            "-fno-asynchronous-unwind-tables",
        ],
    ));
    for delta in [0, 1, 4] {
        assert_eq!(fx.at_symbol("_start", delta).kind(), RowKind::Outermost);
    }
    let restore = symbol(&fx.path, "my_restore_rt");
    for vaddr in [restore - 1, restore, restore + 8] {
        assert_eq!(fx.at(vaddr).kind(), RowKind::SignalFrame, "at {vaddr:#x}");
    }
    assert_eq!(fx.at(restore + 9).kind(), RowKind::NoInfo);
    assert_eq!(fx.table.stats.signal_trampolines_by_code, 1);
}

#[test]
fn debug_frame_fills_what_eh_frame_lacks() {
    let dir = scratch("debug-frame");
    let flags = [
        "-O2",
        "-fomit-frame-pointer",
        "-g",
        "-fno-asynchronous-unwind-tables",
    ];
    let fx = Fixture::new(build(&dir, "unwind_prologues", "fd", &flags));
    assert!(fx.table.stats.debug_frame_fdes >= 5);
    assert!(
        fx.table.stats.eh_frame_fdes >= 1,
        "crt files bring .eh_frame"
    );
    // `.debug_frame` rows are checked where `.eh_frame` has none.
    let map = map_file(&fx.path).expect("map");
    let image = ElfImage::parse(&map).expect("parse");
    let eh: Vec<(u64, u64)> = readelf::frames(&fx.path)
        .iter()
        .filter(|f| f.section == ".eh_frame")
        .filter_map(|f| {
            Some((
                image.vaddr_to_offset(f.start)?.0,
                image.vaddr_to_offset(f.end - 1)?.0,
            ))
        })
        .collect();
    let checked = fx.compare(".debug_frame", |o| {
        eh.iter().any(|&(s, e)| s <= o && o <= e)
    });
    assert!(checked > 40, "only {checked} rows checked");
    assert_eq!(fx.at_symbol("with_alloca", 0).cfa, CfaRule::RspOffset(8));
}

#[test]
fn separate_debug_file_is_found_by_debuglink_and_build_id() {
    let dir = scratch("debuglink");
    let flags = [
        "-O2",
        "-fomit-frame-pointer",
        "-g",
        "-fno-asynchronous-unwind-tables",
    ];
    let full = build(&dir, "unwind_prologues", "fd", &flags);
    let debug = dir.join("fd.debug");
    let stripped = dir.join("fd.stripped");
    run(
        "objcopy",
        &["--only-keep-debug".as_ref(), full.as_ref(), debug.as_ref()],
    );
    let link = format!("--add-gnu-debuglink={}", debug.display());
    run(
        "objcopy",
        &[
            "--strip-debug".as_ref(),
            "--remove-section=.eh_frame".as_ref(),
            "--remove-section=.eh_frame_hdr".as_ref(),
            link.as_ref(),
            full.as_ref(),
            stripped.as_ref(),
        ],
    );
    let reference = Fixture::new(full.clone());
    let alloca = symbol(&full, "with_alloca");

    let by_link = Fixture::new(stripped.clone());
    assert_eq!(
        by_link.table.stats.debug_file.as_deref(),
        Some(debug.as_path())
    );
    assert_eq!(by_link.at(alloca + 1), reference.at(alloca + 1));

    // By build ID under a debug root, once the debuglink target is gone.
    let map = map_file(&stripped).expect("map");
    let id = hex(ElfImage::parse(&map)
        .expect("parse")
        .build_id()
        .expect("build id"));
    let root = dir.join("root");
    let by_id = root.join(format!(".build-id/{}/{}.debug", &id[..2], &id[2..]));
    std::fs::create_dir_all(by_id.parent().expect("parent")).expect("mkdir");
    std::fs::rename(&debug, &by_id).expect("move debug file");
    let table = extract_with_debug_roots(&stripped, std::slice::from_ref(&root))
        .map(UnwindTable::from)
        .expect("extract");
    assert_eq!(table.stats.debug_file.as_deref(), Some(by_id.as_path()));
    assert!(table.stats.debug_frame_fdes >= 5);

    // A debug file with another build ID is refused.
    let other = build(
        &dir,
        "unwind_nocfi",
        "other",
        &["-O2", "-static", "-nostdlib", "-g"],
    );
    std::fs::rename(&other, &by_id).expect("replace debug file");
    let table = extract_with_debug_roots(&stripped, &[root])
        .map(UnwindTable::from)
        .expect("extract");
    assert_eq!(table.stats.debug_file, None);
}

#[test]
fn libc_rows_match_readelf() {
    let fx = Fixture::new(PathBuf::from(LIBC));
    let checked = fx.compare(".eh_frame", |_| false);
    assert!(checked > 10_000, "only {checked} rows checked");
    assert_eq!(fx.table.stats.cfi_errors, 0);
    assert!(
        fx.table.stats.plt_rows >= 1,
        "libc's .plt has the PLT expression"
    );
    // clone and clone3 mark their child path as the outermost frame.
    assert!(fx.table.stats.outermost_rows >= 2);
}

#[test]
fn describe_prints_rows_and_converts_addresses() {
    let dir = scratch("describe");
    let fx = build(
        &dir,
        "unwind_prologues",
        "fx",
        &["-O2", "-fomit-frame-pointer", "-no-pie"],
    );
    let text = describe(&fx, None).expect("describe");
    assert!(text.lines().filter(|l| l.starts_with("0x")).count() > 30);
    let leaf = symbol(&fx, "leaf");
    let one = describe(&fx, Some(leaf)).expect("describe");
    let offset = leaf - 0x400000;
    assert!(
        one.contains(&format!("# vaddr {leaf:#x} = file offset {offset:#x}")),
        "{one}"
    );
    assert!(one.contains("cfa=rsp+8  rbp=same  ra=cfa-8"), "{one}");
    assert!(matches!(
        describe(&fx, Some(0x10)),
        Err(UnwindError::AddressNotInCode { .. })
    ));
}
