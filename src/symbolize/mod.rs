//! Symbolization: turning kernel addresses and (file, offset) pairs into [`Frame`]s.
//!
//! This module owns the [`Symbolizer`], which caches one index per file ([`ElfSymbols`], keyed
//! by device, inode and path) and per kernel ([`KernelSymbols`]), shares one `Arc<Module>` per
//! file and one `Arc<str>` per function among all frames, and counts what it found and missed.
//! A frame is never dropped: an address without a symbol becomes `module+0xOFFSET`, and one
//! without even a module becomes `[unknown]`.
//!
//! It does not read `/proc/PID/maps` or decide which files a process mapped (the process table
//! does, and hands over a [`FileRef`]), does not adjust return addresses (callers pass the
//! address they want named), and reads no DWARF yet.
//! The vDSO is the one pseudo-path it symbolizes, from this process's own copy (`vdso.rs`).

mod demangle;
mod elf;
mod error;
mod kallsyms;
mod vdso;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use self::demangle::demangle;
pub use self::elf::{ElfSymbols, LoadSegment};
pub use self::error::SymbolizeError;
pub use self::kallsyms::{KernelSymbol, KernelSymbols, KALLSYMS_PATH};
pub use self::vdso::{own_vdso_image, VDSO_PATH};

use self::kallsyms::CORE_ID;

use crate::profile::{Frame, FrameKind, Module};

pub use crate::profile::KERNEL_MODULE;

/// The function name of a frame nothing is known about.
pub const UNKNOWN: &str = "[unknown]";

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

/// What the symbolizer did so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SymbolizerStats {
    /// Files opened and indexed.
    pub files_opened: u64,
    /// Failed attempts to open and index a file (see [`Symbolizer::failures`]). A failed file is
    /// tried again only when a later [`FileRef`] offers other candidate paths.
    pub files_failed: u64,
    /// Frames (kernel and native) given a symbol name.
    pub symbols_found: u64,
    /// Frames shown as `module+0xOFFSET` or `[unknown]`.
    pub symbols_missed: u64,
}

/// Names and module of one symbol source, shared by every frame that resolves into it.
#[derive(Debug)]
struct Names {
    module: Arc<Module>,
    /// The display prefix of fallback names (`libc.so.6` in `libc.so.6+0x1234`).
    label: String,
    /// Demangled names by symbol index: one `Arc<str>` per function.
    by_symbol: HashMap<usize, Arc<str>>,
    /// Fallback names by address, so a repeated miss does not allocate.
    by_address: HashMap<u64, Arc<str>>,
}

impl Names {
    fn new(module: Module, label: String) -> Self {
        Names {
            module: Arc::new(module),
            label,
            by_symbol: HashMap::new(),
            by_address: HashMap::new(),
        }
    }

    fn symbol(&mut self, index: usize, raw: &str) -> Arc<str> {
        self.by_symbol
            .entry(index)
            .or_insert_with(|| Arc::from(demangle(raw)))
            .clone()
    }

    fn fallback(&mut self, address: u64) -> Arc<str> {
        let label = &self.label;
        self.by_address
            .entry(address)
            .or_insert_with(|| {
                let mut name = String::with_capacity(label.len() + 19);
                // SANITY: writing to a String cannot fail.
                let _ = write!(name, "{label}+{address:#x}");
                Arc::from(name)
            })
            .clone()
    }
}

/// One mapped file: its index (when it could be read) and its names.
#[derive(Debug)]
struct FileEntry {
    path: String,
    symbols: Option<ElfSymbols>,
    /// Why the last attempt to open the file failed, and which paths it tried.
    error: Option<(SymbolizeError, Vec<PathBuf>)>,
    names: Names,
}

impl FileEntry {
    /// Opens and indexes `file`, counting the outcome; pseudo-paths other than the vDSO are not
    /// opened.
    fn open(file: &FileRef, stats: &mut SymbolizerStats) -> Self {
        let label = display_label(&file.path);
        let module = Module {
            path: file.path.clone(),
            build_id: None,
        };
        let mut entry = FileEntry {
            path: file.path.clone(),
            symbols: None,
            error: None,
            names: Names::new(module, label),
        };
        if file.path == VDSO_PATH || !is_pseudo_path(&file.path) {
            entry.try_open(file, stats);
        }
        entry
    }

    /// A failed file is tried again when another process offers other paths to it (the first
    /// process may have exited, taking `/proc/PID/root` with it).
    fn retry(&mut self, file: &FileRef, stats: &mut SymbolizerStats) {
        let retry = match &self.error {
            Some((SymbolizeError::Io { .. } | SymbolizeError::FileReplaced { .. }, tried)) => {
                *tried != file.candidates
            }
            _ => false,
        };
        if retry {
            self.try_open(file, stats);
        }
    }

    fn try_open(&mut self, file: &FileRef, stats: &mut SymbolizerStats) {
        let opened = if file.path == VDSO_PATH {
            vdso::own_vdso()
        } else {
            open_candidates(file)
        };
        match opened {
            Ok(symbols) => {
                stats.files_opened += 1;
                if let Some(build_id) = symbols.build_id() {
                    let module = Module {
                        path: file.path.clone(),
                        build_id: Some(build_id.into()),
                    };
                    self.names.module = Arc::new(module);
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
}

/// Symbolizes frames, caching every file and name it has seen.
#[derive(Debug)]
pub struct Symbolizer {
    kernel: Option<KernelSymbols>,
    /// Names of kernel frames by module id (`CORE_ID` for the core kernel).
    kernel_names: HashMap<u16, Names>,
    /// Files by (dev, inode); several paths may share one inode (hard links, pseudo-paths).
    files: HashMap<(u64, u64), Vec<FileEntry>>,
    stats: SymbolizerStats,
}

impl Symbolizer {
    /// A symbolizer; without kernel symbols every kernel frame is `[kernel.kallsyms]+0xADDR`.
    pub fn new(kernel: Option<KernelSymbols>) -> Self {
        let mut core = kernel_names(None);
        if let Some(build_id) = kernel.as_ref().and_then(|k| k.build_id()) {
            let module = Module {
                path: KERNEL_MODULE.to_owned(),
                build_id: Some(build_id.into()),
            };
            core.module = Arc::new(module);
        }
        Symbolizer {
            kernel,
            kernel_names: HashMap::from([(CORE_ID, core)]),
            files: HashMap::new(),
            stats: SymbolizerStats::default(),
        }
    }

    /// The counts so far.
    pub fn stats(&self) -> SymbolizerStats {
        self.stats
    }

    /// Files that could not be used and why, by path as in `/proc/PID/maps`.
    pub fn failures(&self) -> impl Iterator<Item = (&str, &SymbolizeError)> {
        let entries = self.files.values().flatten();
        entries.filter_map(|e| e.error.as_ref().map(|(err, _)| (e.path.as_str(), err)))
    }

    /// A frame for a kernel address.
    pub fn kernel_frame(&mut self, addr: u64) -> Frame {
        let Some((index, module_id, sym)) = self.kernel.as_ref().and_then(|k| k.find(addr)) else {
            self.stats.symbols_missed += 1;
            let names = self
                .kernel_names
                .entry(CORE_ID)
                .or_insert_with(|| kernel_names(None));
            return frame(FrameKind::Kernel, names.fallback(addr), &names.module, addr);
        };
        self.stats.symbols_found += 1;
        let names = self
            .kernel_names
            .entry(module_id)
            .or_insert_with(|| kernel_names(sym.module));
        frame(
            FrameKind::Kernel,
            names.symbol(index, sym.name),
            &names.module,
            addr,
        )
    }

    /// A frame for an offset in a mapped file.
    pub fn native_frame(&mut self, file: &FileRef, file_offset: u64) -> Frame {
        let entry = self.file_entry(file);
        let hit = entry
            .symbols
            .as_ref()
            .and_then(|s| s.find_file_offset(file_offset));
        let (function, found) = match hit {
            Some((index, name, _)) => (entry.names.symbol(index, name), true),
            None => (entry.names.fallback(file_offset), false),
        };
        let frame = frame(
            FrameKind::Native,
            function,
            &entry.names.module,
            file_offset,
        );
        if found {
            self.stats.symbols_found += 1;
        } else {
            self.stats.symbols_missed += 1;
        }
        frame
    }

    /// A frame for an address outside every known mapping.
    pub fn unknown_frame(&mut self, addr: u64) -> Frame {
        self.stats.symbols_missed += 1;
        Frame::new(FrameKind::Native, Arc::from(UNKNOWN), None, addr)
    }

    /// The cached entry for `file`, opening and indexing it on first use.
    fn file_entry(&mut self, file: &FileRef) -> &mut FileEntry {
        let entries = self.files.entry((file.dev, file.inode)).or_default();
        match entries.iter().position(|e| e.path == file.path) {
            Some(position) => {
                let entry = &mut entries[position];
                entry.retry(file, &mut self.stats);
                entry
            }
            None => {
                entries.push(FileEntry::open(file, &mut self.stats));
                let last = entries.len() - 1;
                &mut entries[last]
            }
        }
    }
}

/// Names for the core kernel (`None`) or a kernel module.
fn kernel_names(module: Option<&str>) -> Names {
    let path = module.map_or_else(|| KERNEL_MODULE.to_owned(), |m| format!("[{m}]"));
    Names::new(
        Module {
            path: path.clone(),
            build_id: None,
        },
        path,
    )
}

fn frame(kind: FrameKind, function: Arc<str>, module: &Arc<Module>, address: u64) -> Frame {
    Frame::new(kind, function, Some(Arc::clone(module)), address)
}

/// Tries each candidate path in order; the first that is the mapped file wins. The error of the
/// last failing candidate is returned when none is usable.
fn open_candidates(file: &FileRef) -> Result<ElfSymbols, SymbolizeError> {
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
            Ok(symbols) => return Ok(symbols),
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
fn open_checked(path: &Path, inode: u64) -> Result<ElfSymbols, SymbolizeError> {
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
    ElfSymbols::from_file(&file, path)
}

/// Mappings with no file to open: `[vdso]`, `[vsyscall]`, `[anon:...]`, anonymous memory.
fn is_pseudo_path(path: &str) -> bool {
    !path.starts_with('/')
}

/// The short name used in fallback frames: the file name, without a ` (deleted)` suffix.
fn display_label(path: &str) -> String {
    if path.is_empty() {
        return "[anon]".to_owned();
    }
    if path.starts_with('[') {
        return path.to_owned();
    }
    let path = path.strip_suffix(" (deleted)").unwrap_or(path);
    let base = path
        .rsplit('/')
        .next()
        .filter(|b| !b.is_empty())
        .unwrap_or(path);
    base.to_owned()
}

/// Lowercase hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        // SANITY: writing to a String cannot fail.
        let _ = write!(out, "{byte:02x}");
    }
    out
}

#[cfg(test)]
mod tests;
