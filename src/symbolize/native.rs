//! Native frames: one mapped file's symbols and debug information, and the frames of an offset
//! in it.
//!
//! This module owns [`FileEntry`] (opening a mapped file through the paths a process offers,
//! indexing its symbols, finding its debug information once) and [`DwarfCache`] (the DWARF
//! contexts of the most recently used files, bounded, each mapped again when it is needed after
//! an eviction). An offset gives one frame per function: the inlined ones innermost first,
//! then the function they were compiled into, each with its source line where DWARF says.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::debug_info::{locate, DebugSearch, DwarfSource};
use super::dwarf::DwarfLines;
use super::elf::ElfSymbols;
use super::error::SymbolizeError;
use super::names::{FunctionNames, Names};
use super::{display_label, is_pseudo_path, vdso, SymbolizerStats, VDSO_PATH};
use crate::profile::{Frame, FrameKind, Module, SourceLine};
use crate::sys::mmap::{map_readonly, SharedBytes};

/// DWARF contexts kept at once (each holds a mapping and what was parsed of it).
pub(crate) const DWARF_CACHE_FILES: usize = 8;

/// A file as one process mapped it, and where it can be opened from here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRef {
    /// The path as in `/proc/PID/maps` (may end in ` (deleted)`, or be `[vdso]` and the like).
    pub path: String,
    /// The device as in `/proc/PID/maps`, `makedev(major, minor)`.
    pub dev: u64,
    /// The inode as in `/proc/PID/maps`; 0 when unknown (then no inode check is made).
    pub inode: u64,
    /// Paths to try opening, in order (for example `/proc/PID/map_files/...`,
    /// `/proc/PID/root/<path>`, `<path>`). When empty, `path` itself is tried.
    pub candidates: Vec<PathBuf>,
}

/// One mapped file: its index (when it could be read), its debug information and its names.
#[derive(Debug)]
pub(crate) struct FileEntry {
    pub path: String,
    /// Unique within one symbolizer: the key of its DWARF in the [`DwarfCache`].
    id: u64,
    symbols: Option<ElfSymbols>,
    /// The symbols of a debug file or MiniDebugInfo, when the file itself has no `.symtab`.
    extra_symbols: Option<ElfSymbols>,
    dwarf: Option<DwarfSource>,
    /// Why the last attempt to open the file failed, and which paths it tried.
    pub error: Option<(SymbolizeError, Vec<PathBuf>)>,
    names: Names,
}

impl FileEntry {
    /// Opens and indexes `file`, counting the outcome; pseudo-paths other than the vDSO are not
    /// opened.
    pub fn open(
        file: &FileRef,
        id: u64,
        search: &mut DebugSearch,
        stats: &mut SymbolizerStats,
    ) -> Self {
        let label = display_label(&file.path);
        let module = Module {
            path: file.path.clone(),
            build_id: None,
        };
        let mut entry = FileEntry {
            path: file.path.clone(),
            id,
            symbols: None,
            extra_symbols: None,
            dwarf: None,
            error: None,
            names: Names::new(module, label),
        };
        if file.path == VDSO_PATH || !is_pseudo_path(&file.path) {
            entry.try_open(file, search, stats);
        }
        entry
    }

    /// A failed file is tried again when another process offers other paths to it (the first
    /// process may have exited, taking `/proc/PID/root` with it).
    pub fn retry(&mut self, file: &FileRef, search: &mut DebugSearch, stats: &mut SymbolizerStats) {
        let retry = match &self.error {
            Some((SymbolizeError::Io { .. } | SymbolizeError::FileReplaced { .. }, tried)) => {
                *tried != file.candidates
            }
            _ => false,
        };
        if retry {
            self.try_open(file, search, stats);
        }
    }

    fn try_open(&mut self, file: &FileRef, search: &mut DebugSearch, stats: &mut SymbolizerStats) {
        let opened = if file.path == VDSO_PATH {
            vdso::own_vdso().map(|symbols| (symbols, None))
        } else {
            open_candidates(file)
        };
        match opened {
            Ok((symbols, opened)) => {
                stats.files_opened += 1;
                if let Some(build_id) = symbols.build_id() {
                    let module = Module {
                        path: file.path.clone(),
                        build_id: Some(build_id.into()),
                    };
                    self.names.module = Arc::new(module);
                }
                if let Some(opened) = opened {
                    let path =
                        Path::new(file.path.strip_suffix(" (deleted)").unwrap_or(&file.path));
                    if let Ok(map) = map_readonly(&opened) {
                        let found = locate(
                            &opened,
                            &map,
                            path,
                            symbols.has_symtab(),
                            symbols.build_id(),
                            search,
                        );
                        self.extra_symbols = found.symbols;
                        self.dwarf = found.dwarf;
                        stats.debug_files_found += u64::from(self.dwarf.is_some());
                    }
                }
                self.symbols = Some(symbols);
                self.error = None;
            }
            Err(err) => {
                stats.files_failed += 1;
                self.error = Some((err, file.candidates.clone()));
            }
        }
    }

    /// Pushes the frames of `file_offset` onto `out`: inlined functions innermost first (each
    /// `inlined`), then the function the code belongs to. Returns whether a name was found.
    pub fn frames(
        &mut self,
        file_offset: u64,
        dwarf: &mut DwarfCache,
        out: &mut Vec<Frame>,
    ) -> bool {
        let vaddr = self
            .symbols
            .as_ref()
            .and_then(|s| s.file_offset_to_vaddr(file_offset));
        let extra = self.extra_symbols.as_ref();
        let symbol = vaddr.and_then(|vaddr| {
            let from_extra = extra.and_then(|s| s.lookup_vaddr(vaddr));
            let main = self.symbols.as_ref();
            from_extra.or_else(|| main.and_then(|s| s.lookup_vaddr(vaddr)))
        });
        let symbol = symbol.map(|(name, _)| self.names.symbol(name));
        let start = out.len();
        let lines = match (&self.dwarf, vaddr) {
            (Some(source), Some(vaddr)) => dwarf.get(self.id, source).map(|d| (d, vaddr)),
            _ => None,
        };
        let module = Arc::clone(&self.names.module);
        if let Some((lines, vaddr)) = lines {
            let names = &mut self.names;
            lines.frames(vaddr, |found| {
                let named = found.name.map(|raw| names.symbol(raw));
                let source = found.file.map(|file| SourceLine {
                    file: names.file(file),
                    line: found.line,
                });
                let FunctionNames {
                    function,
                    system_name,
                } = match named.or_else(|| symbol.clone()) {
                    Some(named) => named,
                    None => FunctionNames {
                        function: names.fallback(file_offset),
                        system_name: None,
                    },
                };
                let mut frame = native(function, &module, file_offset);
                frame.system_name = system_name;
                frame.source = source;
                frame.inlined = true;
                out.push(frame);
            });
        }
        if let Some(outer) = out[start..].last_mut() {
            outer.inlined = false;
            // The symbol table's name for the function itself, as without DWARF (it keeps
            // suffixes such as `.cold` that DWARF leaves out).
            if let Some(symbol) = &symbol {
                outer.function = symbol.function.clone();
                outer.system_name = symbol.system_name.clone();
            }
            return true;
        }
        let found = symbol.is_some();
        let FunctionNames {
            function,
            system_name,
        } = symbol.unwrap_or_else(|| FunctionNames {
            function: self.names.fallback(file_offset),
            system_name: None,
        });
        let mut frame = native(function, &self.names.module, file_offset);
        frame.system_name = system_name;
        out.push(frame);
        found
    }
}

fn native(function: Arc<str>, module: &Arc<Module>, address: u64) -> Frame {
    Frame::new(
        FrameKind::Native,
        function,
        Some(Arc::clone(module)),
        address,
    )
}

/// The DWARF contexts of the files used last, least recently used first.
#[derive(Debug, Default)]
pub(crate) struct DwarfCache {
    loaded: VecDeque<(u64, Option<DwarfLines>)>,
    /// Contexts built so far (a file evicted and used again counts again).
    pub loads: u64,
    /// When this process's RSS is above it as a context is about to be built, every cached one
    /// is dropped first, so contexts follow one another instead of adding up.
    pub rss_budget: Option<u64>,
}

impl DwarfCache {
    /// The context of file `id`, built from `source` on first use or after an eviction. `None`
    /// when the DWARF cannot be read (remembered while the entry stays cached).
    fn get(&mut self, id: u64, source: &DwarfSource) -> Option<&DwarfLines> {
        match self.loaded.iter().position(|(loaded, _)| *loaded == id) {
            Some(position) => {
                let entry = self.loaded.remove(position)?;
                self.loaded.push_back(entry);
            }
            None => {
                if self.loaded.len() >= DWARF_CACHE_FILES {
                    self.loaded.pop_front();
                }
                if !self.loaded.is_empty() && self.over_budget() {
                    self.loaded.clear();
                    crate::sys::process::trim_heap();
                }
                self.loads += 1;
                self.loaded.push_back((id, load(source)));
            }
        }
        self.loaded.back().and_then(|(_, lines)| lines.as_ref())
    }

    /// Drops every context (the budget stays).
    pub fn clear(&mut self) {
        self.loaded = VecDeque::new();
    }

    fn over_budget(&self) -> bool {
        self.rss_budget.is_some_and(|budget| {
            crate::sys::process::own_usage().is_ok_and(|(rss, _)| rss > budget)
        })
    }
}

fn load(source: &DwarfSource) -> Option<DwarfLines> {
    let map = match source {
        DwarfSource::Own(file) => map_readonly(file).ok()?,
        DwarfSource::Separate(path) => map_readonly(&File::open(path).ok()?).ok()?,
    };
    DwarfLines::load(SharedBytes::from_map(map))
}

/// Tries each candidate path in order; the first that is the mapped file wins. The error of the
/// last failing candidate is returned when none is usable.
fn open_candidates(file: &FileRef) -> Result<(ElfSymbols, Option<File>), SymbolizeError> {
    let fallback = [PathBuf::from(
        file.path.strip_suffix(" (deleted)").unwrap_or(&file.path),
    )];
    let candidates = if file.candidates.is_empty() {
        &fallback[..]
    } else {
        &file.candidates
    };
    let mut last_error = None;
    for path in candidates {
        match open_checked(path, file.inode) {
            Ok((symbols, opened)) => return Ok((symbols, Some(opened))),
            // The right file, but unreadable as ELF: other paths to it will not do better.
            Err(err @ (SymbolizeError::NotElf { .. } | SymbolizeError::CorruptElf { .. })) => {
                return Err(err)
            }
            Err(err) => last_error = Some(err),
        }
    }
    Err(last_error.unwrap_or_else(|| SymbolizeError::Io {
        path: PathBuf::from(&file.path),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "no path to open"),
    }))
}

/// Opens `path` and indexes it if its inode is `inode` (or `inode` is 0).
fn open_checked(path: &Path, inode: u64) -> Result<(ElfSymbols, File), SymbolizeError> {
    let io_err = |source| SymbolizeError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io_err)?;
    let found_inode = file.metadata().map_err(io_err)?.ino();
    if inode != 0 && found_inode != inode {
        return Err(SymbolizeError::FileReplaced {
            path: path.to_path_buf(),
            expected_inode: inode,
            found_inode,
        });
    }
    let symbols = ElfSymbols::from_file(&file, path)?;
    Ok((symbols, file))
}
