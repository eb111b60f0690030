//! Symbolization: turning kernel addresses and (file, offset) pairs into [`Frame`]s.
//!
//! This module owns the [`Symbolizer`], which caches one index per file ([`ElfSymbols`], keyed
//! by device, inode and path) and per kernel ([`KernelSymbols`]), shares one `Arc<Module>` per
//! file and one `Arc<str>` per function and source file among all frames, and counts what it
//! found and missed. A frame is never dropped: an address without a symbol becomes
//! `module+0xOFFSET`, and one without even a module becomes `[unknown]`.
//!
//! Native frames get their source lines and inlined calls from DWARF (`dwarf.rs`, through the
//! `addr2line` crate), found in the file or in separate debug information (`debug_info.rs`:
//! build ID, `.gnu_debuglink`, MiniDebugInfo, debuginfod); one offset can so give several
//! frames (`native.rs`). DWARF is read lazily from a mapping, for a bounded number of files.
//!
//! It does not read `/proc/PID/maps` or decide which files a process mapped (the process table
//! does, and hands over a [`FileRef`]), and does not adjust return addresses (callers pass the
//! address they want named).
//! The vDSO is the one pseudo-path it symbolizes, from this process's own copy (`vdso.rs`).

mod debug_info;
mod debuginfod;
mod demangle;
mod dwarf;
mod elf;
mod error;
mod kallsyms;
mod names;
mod native;
mod vdso;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

pub use self::debug_info::DebugSearch;
pub use self::debuginfod::Debuginfod;
pub use self::demangle::demangle;
pub use self::elf::{ElfSymbols, LoadSegment};
pub use self::error::SymbolizeError;
pub use self::kallsyms::{KernelSymbol, KernelSymbols, KALLSYMS_PATH};
pub use self::native::FileRef;
pub use self::vdso::{own_vdso_image, VDSO_PATH};

use self::kallsyms::CORE_ID;
use self::names::Names;
use self::native::{DwarfCache, FileEntry};

use crate::profile::{Frame, FrameKind, Module};

pub use crate::profile::KERNEL_MODULE;

/// The function name of a frame nothing is known about.
pub const UNKNOWN: &str = "[unknown]";

/// What the symbolizer did so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SymbolizerStats {
    /// Files opened and indexed.
    pub files_opened: u64,
    /// Failed attempts to open and index a file (see [`Symbolizer::failures`]). A failed file is
    /// tried again only when a later [`FileRef`] offers other candidate paths.
    pub files_failed: u64,
    /// Opened files whose DWARF was found (in the file, a debug file or through debuginfod).
    pub debug_files_found: u64,
    /// Frames (kernel and native) given a symbol name.
    pub symbols_found: u64,
    /// Frames shown as `module+0xOFFSET` or `[unknown]`.
    pub symbols_missed: u64,
}

/// Symbolizes frames, caching every file and name it has seen.
#[derive(Debug)]
pub struct Symbolizer {
    kernel: Option<KernelSymbols>,
    /// Names of kernel frames by module id (`CORE_ID` for the core kernel).
    kernel_names: HashMap<u16, Names>,
    /// Files by (dev, inode); several paths may share one inode (hard links, pseudo-paths).
    files: HashMap<(u64, u64), Vec<FileEntry>>,
    /// Where separate debug information is looked for.
    search: DebugSearch,
    /// The DWARF of the files used last.
    dwarf: DwarfCache,
    /// The id of the next file entry.
    next_file_id: u64,
    stats: SymbolizerStats,
}

impl Symbolizer {
    /// A symbolizer; without kernel symbols every kernel frame is `[kernel.kallsyms]+0xADDR`.
    /// Debug information is looked for under `/usr/lib/debug` and through `DEBUGINFOD_URLS`.
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
            search: DebugSearch::default(),
            dwarf: DwarfCache::default(),
            next_file_id: 0,
            stats: SymbolizerStats::default(),
        }
    }

    /// Looks for separate debug information as `search` says (for files opened from now on).
    pub fn with_debug_search(mut self, search: DebugSearch) -> Self {
        self.search = search;
        self
    }

    /// Keeps this process's RSS near `bytes` while symbolizing: before DWARF is parsed for one
    /// more file, the contexts already parsed are dropped if RSS is above it. Callers that
    /// symbolize one file's offsets together (see [`Symbolizer::native_frames`]) then parse each
    /// file once.
    pub fn with_debug_info_budget(mut self, bytes: u64) -> Self {
        self.dwarf.rss_budget = Some(bytes);
        self
    }

    /// Drops every parsed DWARF context and its mapping; files keep where their debug
    /// information is, and the next frame that needs it maps and parses it again. For callers
    /// that keep memory bounded between reports.
    pub fn release_debug_info(&mut self) {
        self.dwarf.clear();
        crate::sys::process::trim_heap();
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
        let Some((_, module_id, sym)) = self.kernel.as_ref().and_then(|k| k.find(addr)) else {
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
        let named = names.symbol(sym.name);
        let mut frame = frame(FrameKind::Kernel, named.function, &names.module, addr);
        frame.system_name = named.system_name;
        frame
    }

    /// Pushes the frames of an offset in a mapped file onto `out`: with DWARF, the functions
    /// inlined there innermost first (each `inlined`, with its source line), then the function
    /// the code was compiled into; without, the one frame of its symbol. At least one frame is
    /// always pushed.
    pub fn native_frames(&mut self, file: &FileRef, file_offset: u64, out: &mut Vec<Frame>) {
        let entries = self.files.entry((file.dev, file.inode)).or_default();
        let entry = match entries.iter().position(|e| e.path == file.path) {
            Some(position) => {
                let entry = &mut entries[position];
                entry.retry(file, &mut self.search, &mut self.stats);
                entry
            }
            None => {
                let id = self.next_file_id;
                self.next_file_id += 1;
                entries.push(FileEntry::open(file, id, &mut self.search, &mut self.stats));
                let last = entries.len() - 1;
                &mut entries[last]
            }
        };
        if entry.frames(file_offset, &mut self.dwarf, out) {
            self.stats.symbols_found += 1;
        } else {
            self.stats.symbols_missed += 1;
        }
    }

    /// The frames of an offset in a mapped file, as [`Symbolizer::native_frames`] pushes them.
    pub fn native_frame_chain(&mut self, file: &FileRef, file_offset: u64) -> Vec<Frame> {
        let mut out = Vec::with_capacity(1);
        self.native_frames(file, file_offset, &mut out);
        out
    }

    /// A frame for an address outside every known mapping.
    pub fn unknown_frame(&mut self, addr: u64) -> Frame {
        self.stats.symbols_missed += 1;
        Frame::new(FrameKind::Native, Arc::from(UNKNOWN), None, addr)
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
