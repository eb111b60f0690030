//! Finding a mapped file's debug information, wherever the distribution put it.
//!
//! This module owns the search order for one file: its own DWARF; a separate debug file under
//! each debug root by build ID (`ROOT/.build-id/xx/rest.debug`), then by `.gnu_debuglink` (next
//! to the file, in its `.debug/`, under each root plus the file's directory; a candidate must
//! carry the file's build ID, or match the link's CRC-32 when the file has none); MiniDebugInfo
//! (`.gnu_debugdata`, an xz-compressed ELF with the symbols `strip` removed, as Fedora ships);
//! and debuginfod when configured. The search runs once per file, when it is first opened.
//!
//! What it finds is where the DWARF lives (read lazily later, `super::dwarf`) and, for a file
//! stripped of `.symtab`, the fuller symbol table of the debug file or MiniDebugInfo. It does
//! not read DWARF itself.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::debuginfod::Debuginfod;
use super::dwarf::has_dwarf;
use super::elf::ElfSymbols;
use crate::cfi::debug_file::{find_debug_file, map_file, DEBUG_ROOT};
use crate::elf::ElfImage;

/// The largest MiniDebugInfo accepted, decompressed.
const MAX_MINI_DEBUG_INFO: u64 = 256 << 20;

/// Where to look for separate debug information.
#[derive(Debug)]
pub struct DebugSearch {
    /// Roots holding `.build-id/` and mirrored directories (`/usr/lib/debug`).
    pub roots: Vec<PathBuf>,
    /// The debuginfod client, when `DEBUGINFOD_URLS` (or a caller) configured one.
    pub debuginfod: Option<Debuginfod>,
}

impl Default for DebugSearch {
    /// The system's debug root and the debuginfod servers of `DEBUGINFOD_URLS`.
    fn default() -> Self {
        DebugSearch {
            roots: vec![PathBuf::from(DEBUG_ROOT)],
            debuginfod: Debuginfod::from_env(),
        }
    }
}

/// Where a file's DWARF lives.
#[derive(Debug)]
pub(crate) enum DwarfSource {
    /// In the mapped file itself (kept open, mapped again when needed).
    Own(File),
    /// In a separate debug file at this path.
    Separate(PathBuf),
}

/// What the search found for one file.
#[derive(Debug, Default)]
pub(crate) struct Found {
    pub dwarf: Option<DwarfSource>,
    /// Symbols of a debug file or MiniDebugInfo, for a file without `.symtab`.
    pub symbols: Option<ElfSymbols>,
}

/// Searches the debug information of `file` (mapped as `data`); `path` is where the process
/// mapped it (its directory is where `.gnu_debuglink` points).
pub(crate) fn locate(
    file: &File,
    data: &[u8],
    path: &Path,
    has_symtab: bool,
    build_id: Option<&str>,
    search: &mut DebugSearch,
) -> Found {
    let mut found = Found::default();
    if has_dwarf(data) {
        found.dwarf = file.try_clone().ok().map(DwarfSource::Own);
        return found;
    }
    let Ok(mut image) = ElfImage::parse(data) else {
        return found;
    };
    if let Some(debug) = find_debug_file(path, &mut image, &search.roots) {
        if !has_symtab {
            found.symbols = symbols_of(&debug.map, &debug.path);
        }
        if has_dwarf(&debug.map) {
            found.dwarf = Some(DwarfSource::Separate(debug.path));
            return found;
        }
    }
    if found.symbols.is_none() && !has_symtab {
        found.symbols = image
            .section(".gnu_debugdata")
            .and_then(|s| mini_debug_info(s.data, path));
    }
    let fetched = build_id.and_then(|id| search.debuginfod.as_mut()?.debuginfo(id));
    if let Some(debug_path) = fetched {
        let Ok(map) = map_file(&debug_path) else {
            return found;
        };
        let same_build = ElfImage::parse(&map)
            .ok()
            .and_then(|i| i.build_id().map(super::hex))
            .as_deref()
            == build_id;
        if same_build && has_dwarf(&map) {
            if found.symbols.is_none() && !has_symtab {
                found.symbols = symbols_of(&map, &debug_path);
            }
            found.dwarf = Some(DwarfSource::Separate(debug_path));
        }
    }
    found
}

/// The symbol table of a debug file, when it has one.
fn symbols_of(data: &[u8], path: &Path) -> Option<ElfSymbols> {
    ElfSymbols::parse(data, path)
        .ok()
        .filter(|s| s.has_symtab() && !s.is_empty())
}

/// The symbols of a `.gnu_debugdata` section: an xz stream holding an ELF file.
pub(crate) fn mini_debug_info(xz: &[u8], path: &Path) -> Option<ElfSymbols> {
    let mut elf = Vec::new();
    xz4rust::XzReader::new(std::io::Cursor::new(xz.to_vec()))
        .take(MAX_MINI_DEBUG_INFO)
        .read_to_end(&mut elf)
        .ok()?;
    symbols_of(&elf, path)
}
