//! Call-frame information: an ELF file's CFI turned into generic unwind rows
//! (`crate::unwind_rows`), keyed by file offset. A leaf beside the BPF table format
//! (`crate::unwind`, which encodes the rows): it reads ELF images through `crate::elf`, maps
//! files through `crate::sys`, and knows nothing of the BPF encoding or of maps.
//!
//! What this module owns:
//! - [`extract`]: an ELF file's `.eh_frame` (with `.eh_frame_hdr`), its `.debug_frame` for the
//!   ranges `.eh_frame` lacks, and, when the file has no `.eh_frame`, the `.debug_frame` of its
//!   separate debug file (build ID, then `.gnu_debuglink`), as one sorted list of generic
//!   [`UnwindRow`]s keyed by **file offset** (what the BPF side computes as `pc - load bias`).
//!   Gaps between FDEs are explicit "no info" rows, identical neighbours are merged, outermost
//!   frames (`_start`, `clone`'s child path) and signal trampolines (`__restore_rt`) are marked.
//! - [`describe`]: the rows in words, for `profiler unwind-info FILE [--addr ADDR]`.
//!
//! What it does not own: the row types (`crate::unwind_rows`), the BPF encoding and the
//! stepper (`crate::unwind`), loading tables into maps (`crate::tables`, which also tests
//! extraction and encoding together), or the BPF unwinder itself (bpf/).
//!
//! Layout: `dwarf.rs` evaluates CFI with gimli, `assemble.rs` turns its per-FDE rows into one
//! table, `debug_file.rs` finds and maps separate debug files; `readelf.rs` (tests only) is the
//! ground truth the tests compare with.

mod assemble;
pub(crate) mod debug_file;
mod dwarf;

#[cfg(test)]
mod readelf;
#[cfg(test)]
pub(crate) mod tests;

use std::fmt::{self, Write as _};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// For the property test in `crate::tables`, which grows a CIE past the cap.
#[cfg(test)]
pub(crate) use dwarf::MAX_CIE_BYTES;

use crate::elf::{ElfError, ElfImage};
use crate::unwind_rows::{self, CfaRule, PackedRows, RaRule, RegRule, RowKind, UnwindRow};
use debug_file::DEBUG_ROOT;
use dwarf::{CfiRows, CfiStats};

/// Why a file's unwind table could not be extracted. A file that simply has no CFI is not an
/// error: its table is empty.
#[derive(Debug)]
pub enum UnwindError {
    /// Opening or mapping the file failed.
    Io { path: PathBuf, source: io::Error },
    /// The file is not an ELF file.
    NotElf { path: PathBuf },
    /// The ELF headers are malformed or truncated.
    Corrupt { path: PathBuf, reason: String },
    /// A valid ELF file this unwinder has no rules for (32-bit, not x86_64).
    Unsupported { path: PathBuf, reason: String },
    /// [`describe`] was given an address no executable segment holds.
    AddressNotInCode { path: PathBuf, addr: u64 },
}

impl UnwindError {
    /// Why the ELF image of `file` was refused.
    fn elf(err: ElfError, file: &Path) -> Self {
        let path = file.to_path_buf();
        match err {
            ElfError::NotElf => Self::NotElf { path },
            ElfError::Corrupt(reason) => Self::Corrupt { path, reason },
            ElfError::Unsupported(reason) => Self::Unsupported { path, reason },
        }
    }
}

impl fmt::Display for UnwindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { path, source } => write!(f, "cannot read {}: {source}", path.display()),
            Self::NotElf { path } => write!(f, "{} is not an ELF file", path.display()),
            Self::Corrupt { path, reason } => {
                write!(f, "{} is a malformed ELF file: {reason}", path.display())
            }
            Self::Unsupported { path, reason } => {
                write!(f, "{}: no unwind rules for {reason}", path.display())
            }
            Self::AddressNotInCode { path, addr } => write!(
                f,
                "{}: address {addr:#x} is not in an executable segment (give an ELF virtual \
                 address as objdump or nm print it)",
                path.display()
            ),
        }
    }
}

impl std::error::Error for UnwindError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// What extraction found and dropped. Row counts are over the final table; the size of the
/// BPF encoding is `crate::unwind::CompactTable::bytes`.
#[derive(Clone, Debug, Default)]
pub struct UnwindStats {
    /// Rows in the table, "no info" rows included.
    pub rows: usize,
    /// FDEs read from `.eh_frame`, from `.debug_frame` (own and separate debug file).
    pub eh_frame_fdes: u32,
    pub debug_frame_fdes: u32,
    /// `.debug_frame` FDE pieces used (ranges `.eh_frame` lacks).
    pub debug_frame_pieces_used: u32,
    /// FDEs found only through `.eh_frame_hdr`.
    pub fdes_from_eh_frame_hdr: u32,
    /// CFI entries that failed to parse or evaluate (skipped).
    pub cfi_errors: u32,
    /// FDEs whose start lies in no executable segment (dropped).
    pub fdes_outside_text: u32,
    /// FDEs entirely covered by an earlier one (dropped).
    pub fdes_overlapping: u32,
    /// FDEs cut short by the per-FDE row cap.
    pub fdes_limited: u32,
    /// The per-file row cap was reached: the table is partial.
    pub truncated: bool,
    /// Rows per kind.
    pub frame_rows: usize,
    pub outermost_rows: usize,
    pub signal_rows: usize,
    pub unsupported_rows: usize,
    /// Frame rows whose CFA is the PLT rule or a dereference.
    pub plt_rows: usize,
    pub deref_rows: usize,
    /// Rows whose CFA rule, rbp rule or return address could not be expressed.
    pub cfa_unsupported: usize,
    pub rbp_unsupported: usize,
    pub ra_unsupported: usize,
    /// Signal trampolines found by their code bytes (outside any CFI).
    pub signal_trampolines_by_code: u32,
    /// CFI sections skipped because they are compressed.
    pub compressed_sections_skipped: u32,
    /// The separate debug file whose `.debug_frame` was read.
    pub debug_file: Option<PathBuf>,
    pub elapsed: Duration,
}

/// One file's unwind rows, sorted by file offset.
#[derive(Clone, Debug, Default)]
pub struct UnwindTable {
    pub rows: Vec<UnwindRow>,
    pub stats: UnwindStats,
}

impl UnwindTable {
    /// The row in effect at a file offset (a "no info" row in gaps), `None` before the first.
    pub fn lookup(&self, offset: u64) -> Option<&UnwindRow> {
        unwind_rows::lookup(&self.rows, offset)
    }
}

/// One file's unwind rows as extraction builds them: packed (16 bytes a row, half an
/// [`UnwindTable`]'s), what the profiler encodes, so a file with millions of rows never holds
/// them unpacked.
#[derive(Clone, Debug, Default)]
pub struct PackedTable {
    pub rows: PackedRows,
    pub stats: UnwindStats,
}

impl From<PackedTable> for UnwindTable {
    fn from(table: PackedTable) -> Self {
        Self {
            rows: table.rows.to_rows(),
            stats: table.stats,
        }
    }
}

/// Extracts the unwind table of the ELF file at `path`.
pub fn extract(path: &Path) -> Result<UnwindTable, UnwindError> {
    extract_packed(path).map(UnwindTable::from)
}

/// [`extract`], the rows left packed.
pub fn extract_packed(path: &Path) -> Result<PackedTable, UnwindError> {
    extract_with_debug_roots(path, &[PathBuf::from(DEBUG_ROOT)])
}

/// [`extract`], looking for separate debug files under `roots` instead of `/usr/lib/debug`.
pub(crate) fn extract_with_debug_roots(
    path: &Path,
    roots: &[PathBuf],
) -> Result<PackedTable, UnwindError> {
    let started = Instant::now();
    let map = map_file(path)?;
    let mut image = ElfImage::parse(&map).map_err(|e| UnwindError::elf(e, path))?;
    let release = || crate::sys::mmap::release(&map);
    Ok(extract_image(
        &mut image,
        Some((path, roots)),
        &release,
        started,
    ))
}

/// Maps the file at `path` for reading, an I/O error naming it.
fn map_file(path: &Path) -> Result<memmap2::Mmap, UnwindError> {
    debug_file::map_file(path).map_err(|source| UnwindError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Extracts the unwind table of an ELF image in memory (no separate debug file is looked for).
pub fn extract_from_bytes(data: &[u8]) -> Result<UnwindTable, UnwindError> {
    extract_packed_from_bytes(data).map(UnwindTable::from)
}

/// [`extract_from_bytes`], the rows left packed.
pub fn extract_packed_from_bytes(data: &[u8]) -> Result<PackedTable, UnwindError> {
    let started = Instant::now();
    let mut image =
        ElfImage::parse(data).map_err(|e| UnwindError::elf(e, Path::new("<memory>")))?;
    Ok(extract_image(&mut image, None, &|| {}, started))
}

fn extract_image(
    image: &mut ElfImage<'_>,
    debug_search: Option<(&Path, &[PathBuf])>,
    release_pages: &dyn Fn(),
    started: Instant,
) -> PackedTable {
    let mut stats = UnwindStats::default();
    // Each pass over the mapped file is followed by `release_pages`, so the file pages one pass
    // read (symbol tables, then CFI) are not resident while the rows of the next one grow.
    let symbols = assemble::SymbolFacts::of(image);
    release_pages();
    let (mut eh, mut eh_stats) = (CfiRows::default(), CfiStats::default());
    let eh_section = image.section(".eh_frame").filter(|s| !s.data.is_empty());
    if let Some(section) = eh_section {
        dwarf::read_eh_frame(image, section, &mut eh, &mut eh_stats);
    }
    let (mut debug, mut debug_stats) = (CfiRows::default(), CfiStats::default());
    if let Some(section) = image.section(".debug_frame") {
        dwarf::read_debug_frame(section, &mut debug, &mut debug_stats);
    }
    // A separate debug file only matters when the binary ships no `.eh_frame` (built with
    // -fno-asynchronous-unwind-tables): its `.debug_frame` then went to the debug file.
    let debug_file = match (eh_section, debug_search) {
        (None, Some((path, roots))) => debug_file::find_debug_file(path, image, roots),
        _ => None,
    };
    if let Some(file) = &debug_file {
        if let Ok(mut debug_image) = ElfImage::parse(&file.map) {
            if let Some(section) = debug_image.section(".debug_frame") {
                dwarf::read_debug_frame(section, &mut debug, &mut debug_stats);
            }
            stats.compressed_sections_skipped += debug_image.compressed_skipped;
        }
        stats.debug_file = Some(file.path.clone());
    }

    release_pages();
    let mut assembled = assemble::AssembleStats::default();
    let rows = assemble::assemble(image, [eh, debug], &symbols, &mut assembled);
    stats.eh_frame_fdes = eh_stats.fdes;
    stats.debug_frame_fdes = debug_stats.fdes;
    stats.fdes_from_eh_frame_hdr = eh_stats.fdes_from_hdr;
    stats.cfi_errors = eh_stats.errors + debug_stats.errors;
    stats.fdes_limited = eh_stats.fdes_limited + debug_stats.fdes_limited;
    stats.truncated = eh_stats.truncated || debug_stats.truncated;
    stats.debug_frame_pieces_used = assembled.debug_frame_fdes_used;
    stats.fdes_outside_text = assembled.fdes_outside_text;
    stats.fdes_overlapping = assembled.fdes_overlapping;
    stats.signal_trampolines_by_code = assembled.signal_trampolines_by_code;
    stats.compressed_sections_skipped += image.compressed_skipped;
    count_rows(&rows, &mut stats);
    stats.elapsed = started.elapsed();
    PackedTable { rows, stats }
}

fn count_rows(rows: &PackedRows, stats: &mut UnwindStats) {
    stats.rows = rows.len();
    for row in rows.iter() {
        match row.kind() {
            RowKind::NoInfo => continue,
            RowKind::Frame => stats.frame_rows += 1,
            RowKind::Outermost => stats.outermost_rows += 1,
            RowKind::SignalFrame => stats.signal_rows += 1,
            RowKind::Unsupported => stats.unsupported_rows += 1,
        }
        match row.cfa {
            CfaRule::Plt { .. } => stats.plt_rows += 1,
            CfaRule::DerefRsp { .. } | CfaRule::DerefRbp { .. } => stats.deref_rows += 1,
            CfaRule::Unsupported => stats.cfa_unsupported += 1,
            _ => {}
        }
        stats.rbp_unsupported += usize::from(row.rbp == RegRule::Unsupported);
        stats.ra_unsupported += usize::from(row.ra == RaRule::Unsupported);
    }
}

/// The unwind rows of the file at `path` in words, one per line
/// (`0x<offset>  cfa=rsp+16  rbp=cfa-16  ra=cfa-8`), after a `#` summary.
///
/// `addr`, when given, is an ELF **virtual address** as objdump, nm and readelf print it (what a
/// user has at hand); it is converted to the file offset the table is keyed by through the
/// executable `PT_LOAD` segments, and only the row covering it is printed. A frame shown as
/// `module+0xOFFSET` already carries a file offset: for most shared libraries the two coincide,
/// and the summary line prints both.
pub fn describe(path: &Path, addr: Option<u64>) -> Result<String, UnwindError> {
    let started = Instant::now();
    let map = map_file(path)?;
    let mut image = ElfImage::parse(&map).map_err(|e| UnwindError::elf(e, path))?;
    let target = match addr {
        Some(addr) => match image.vaddr_to_offset(addr) {
            Some((offset, _)) => Some((addr, offset)),
            None => {
                return Err(UnwindError::AddressNotInCode {
                    path: path.to_path_buf(),
                    addr,
                })
            }
        },
        None => None,
    };
    let roots = [PathBuf::from(DEBUG_ROOT)];
    let release = || crate::sys::mmap::release(&map);
    let table = UnwindTable::from(extract_image(
        &mut image,
        Some((path, &roots)),
        &release,
        started,
    ));
    let s = &table.stats;
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "# {}: {} rows from {} .eh_frame and {} .debug_frame FDEs{}; {} unsupported, {} \
         outermost, {} signal-frame rows; {} CFI errors",
        path.display(),
        s.rows,
        s.eh_frame_fdes,
        s.debug_frame_fdes,
        s.debug_file
            .as_ref()
            .map(|p| format!(" (debug file {})", p.display()))
            .unwrap_or_default(),
        s.unsupported_rows,
        s.outermost_rows,
        s.signal_rows,
        s.cfi_errors,
    );
    let _ = writeln!(
        out,
        "# offsets are file offsets; cfa= is the value of the CFA, rbp= and ra= where the \
         caller's value is saved"
    );
    match target {
        Some((vaddr, offset)) => {
            let _ = writeln!(out, "# vaddr {vaddr:#x} = file offset {offset:#x}");
            match table.lookup(offset) {
                Some(row) => {
                    let _ = writeln!(out, "{row}");
                }
                None => {
                    let _ = writeln!(out, "{offset:#x}  no unwind info");
                }
            }
        }
        None => {
            for row in &table.rows {
                let _ = writeln!(out, "{row}");
            }
        }
    }
    Ok(out)
}
