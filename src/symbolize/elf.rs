//! Function symbols of one ELF file, looked up by file offset.
//!
//! This module owns reading an ELF file once into an [`ElfSymbols`] index: its function symbols
//! (`.symtab` and `.dynsym`), its loadable segments (to turn a file offset, which is what samples
//! carry, into an ELF virtual address) and its GNU build ID. The file is mapped only while
//! indexing; names are copied into one owned `String`, so the index borrows nothing.
//!
//! It does not read DWARF (`super::dwarf`), find separate debug files (`super::debug_info`),
//! or demangle (the caller does). 32- and 64-bit ELF of either byte order are supported.

use std::fs::File;
use std::path::Path;

use object::elf::{
    FileHeader32, FileHeader64, EM_ARM, NT_GNU_BUILD_ID, PF_X, PT_LOAD, SHF_EXECINSTR, SHT_DYNSYM,
    SHT_SYMTAB, STB_GLOBAL, STB_WEAK, STT_FUNC, STT_GNU_IFUNC, STT_NOTYPE,
};
use object::read::elf::{
    FileHeader, NoteIterator, ProgramHeader, SectionHeader, SectionTable, Sym,
};
use object::{Endianness, FileKind};

use super::error::SymbolizeError;

/// How far a zero-size symbol may extend when nothing else bounds it.
const MAX_UNSIZED_EXTENT: u64 = 1 << 20;

/// How many preceding symbols a lookup tries when the nearest one does not cover the address
/// (a function that contains a smaller, separately named entry point).
const OVERLAP_LOOKBACK: usize = 8;

/// One `PT_LOAD` program header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadSegment {
    /// `p_offset`: where the segment starts in the file.
    pub offset: u64,
    /// `p_vaddr`: where it is linked in memory.
    pub vaddr: u64,
    /// `p_filesz`: bytes backed by the file.
    pub file_size: u64,
    /// `p_memsz`: bytes in memory (the rest is zero-filled).
    pub mem_size: u64,
    /// Whether `PF_X` is set.
    pub executable: bool,
}

impl LoadSegment {
    /// The virtual address of `offset` if the file bytes of this segment hold it.
    fn vaddr_of(&self, offset: u64) -> Option<u64> {
        let delta = offset.checked_sub(self.offset)?;
        (delta < self.file_size).then_some(())?;
        self.vaddr.checked_add(delta)
    }
}

/// One indexed function symbol.
#[derive(Clone, Copy, Debug)]
struct Entry {
    addr: u64,
    size: u64,
    name_start: u32,
    name_len: u32,
}

/// A symbol found while reading, before deduplication and sizing.
#[derive(Clone, Copy, Debug)]
struct Candidate<'data> {
    addr: u64,
    size: u64,
    /// End of the symbol's section, bounding a zero-size symbol.
    limit: u64,
    name: &'data [u8],
    /// Lower wins a tie at one address: `.symtab` over `.dynsym`, functions over labels,
    /// global over weak over local.
    rank: u8,
    is_label: bool,
}

/// The function symbols, load segments and build ID of one ELF file.
#[derive(Debug, Default)]
pub struct ElfSymbols {
    names: String,
    syms: Vec<Entry>,
    segments: Vec<LoadSegment>,
    build_id: Option<String>,
    has_symtab: bool,
}

impl ElfSymbols {
    /// Opens, maps and indexes the ELF file at `path`.
    pub fn open(path: &Path) -> Result<Self, SymbolizeError> {
        let file = File::open(path).map_err(|source| SymbolizeError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_file(&file, path)
    }

    /// Indexes an already opened file. `path` only names it in errors.
    pub fn from_file(file: &File, path: &Path) -> Result<Self, SymbolizeError> {
        let io_err = |source| SymbolizeError::Io {
            path: path.to_path_buf(),
            source,
        };
        let metadata = file.metadata().map_err(io_err)?;
        if !metadata.is_file() || metadata.len() == 0 {
            return Err(SymbolizeError::NotElf {
                path: path.to_path_buf(),
            });
        }
        // Only until `parse` returns: the index copies what it keeps.
        let map = crate::sys::mmap::map_readonly(file).map_err(io_err)?;
        Self::parse(&map, path)
    }

    /// Indexes an ELF image held in memory. `path` only names it in errors.
    pub fn parse(data: &[u8], path: &Path) -> Result<Self, SymbolizeError> {
        let corrupt = |err: object::Error| SymbolizeError::CorruptElf {
            path: path.to_path_buf(),
            reason: err.to_string(),
        };
        match FileKind::parse(data) {
            Ok(FileKind::Elf64) => parse_elf::<FileHeader64<Endianness>>(data).map_err(corrupt),
            Ok(FileKind::Elf32) => parse_elf::<FileHeader32<Endianness>>(data).map_err(corrupt),
            _ if data.starts_with(&object::elf::ELFMAG) => Err(SymbolizeError::CorruptElf {
                path: path.to_path_buf(),
                reason: "unknown ELF class or truncated header".to_owned(),
            }),
            _ => Err(SymbolizeError::NotElf {
                path: path.to_path_buf(),
            }),
        }
    }

    /// The number of indexed function symbols.
    pub fn len(&self) -> usize {
        self.syms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.syms.is_empty()
    }

    /// Whether the file has a `.symtab` (is not stripped).
    pub fn has_symtab(&self) -> bool {
        self.has_symtab
    }

    /// The GNU build ID as lowercase hex.
    pub fn build_id(&self) -> Option<&str> {
        self.build_id.as_deref()
    }

    /// The `PT_LOAD` segments in file order.
    pub fn segments(&self) -> &[LoadSegment] {
        &self.segments
    }

    /// The ELF virtual address of a file offset, if a loadable segment maps it.
    pub fn file_offset_to_vaddr(&self, offset: u64) -> Option<u64> {
        file_offset_to_vaddr(&self.segments, offset)
    }

    /// The symbol covering a virtual address and the address's offset in it.
    pub fn lookup_vaddr(&self, vaddr: u64) -> Option<(&str, u64)> {
        self.find_vaddr(vaddr)
            .map(|(_, name, offset)| (name, offset))
    }

    /// The symbol covering a file offset and the offset's distance from the symbol's start.
    pub fn lookup_file_offset(&self, offset: u64) -> Option<(&str, u64)> {
        self.find_file_offset(offset)
            .map(|(_, name, offset)| (name, offset))
    }

    /// Like [`lookup_file_offset`](Self::lookup_file_offset), also giving the symbol's index
    /// (stable for the lifetime of `self`), which callers use to cache per-symbol data.
    pub(crate) fn find_file_offset(&self, offset: u64) -> Option<(usize, &str, u64)> {
        self.find_vaddr(self.file_offset_to_vaddr(offset)?)
    }

    fn find_vaddr(&self, vaddr: u64) -> Option<(usize, &str, u64)> {
        let end = self.syms.partition_point(|e| e.addr <= vaddr);
        let first = end.saturating_sub(OVERLAP_LOOKBACK);
        let index = (first..end).rev().find(|&i| {
            let entry = &self.syms[i];
            vaddr - entry.addr < entry.size
        })?;
        let entry = &self.syms[index];
        Some((index, self.name(entry), vaddr - entry.addr))
    }

    fn name(&self, entry: &Entry) -> &str {
        let start = entry.name_start as usize;
        self.names
            .get(start..start + entry.name_len as usize)
            .unwrap_or("")
    }

    /// Sorts, deduplicates and sizes the candidates, copying their names.
    fn index(&mut self, mut candidates: Vec<Candidate<'_>>) {
        candidates.sort_by(|a, b| a.addr.cmp(&b.addr).then(a.rank.cmp(&b.rank)));
        // The best-ranked name per address wins; the largest size seen there is kept.
        candidates.dedup_by(|later, kept| {
            let same = later.addr == kept.addr;
            if same {
                kept.size = kept.size.max(later.size);
                kept.is_label &= later.is_label;
            }
            same
        });
        // Labels inside a sized function are jump targets, not functions.
        let mut covered_until = 0;
        candidates.retain(|c| {
            if c.is_label && c.addr < covered_until {
                return false;
            }
            covered_until = covered_until.max(c.addr.saturating_add(c.size));
            true
        });
        self.syms.reserve_exact(candidates.len());
        for (i, c) in candidates.iter().enumerate() {
            let size = if c.size > 0 {
                c.size
            } else {
                let next = candidates.get(i + 1).map_or(u64::MAX, |n| n.addr);
                let limit = c
                    .limit
                    .min(next)
                    .min(c.addr.saturating_add(MAX_UNSIZED_EXTENT));
                limit.saturating_sub(c.addr).max(1)
            };
            self.push(c.addr, size, c.name);
        }
    }

    fn push(&mut self, addr: u64, size: u64, name: &[u8]) {
        let name = String::from_utf8_lossy(name);
        let (Ok(name_start), Ok(name_len)) =
            (u32::try_from(self.names.len()), u32::try_from(name.len()))
        else {
            return;
        };
        self.names.push_str(&name);
        self.syms.push(Entry {
            addr,
            size,
            name_start,
            name_len,
        });
    }
}

/// The virtual address of `offset`, preferring executable segments (samples are code).
fn file_offset_to_vaddr(segments: &[LoadSegment], offset: u64) -> Option<u64> {
    let exec = segments.iter().filter(|s| s.executable);
    let other = segments.iter().filter(|s| !s.executable);
    exec.chain(other).find_map(|s| s.vaddr_of(offset))
}

fn parse_elf<Elf: FileHeader<Endian = Endianness>>(data: &[u8]) -> object::Result<ElfSymbols> {
    let header = Elf::parse(data)?;
    let endian = header.endian()?;
    let program_headers = header.program_headers(endian, data)?;
    let sections = header.sections(endian, data)?;
    let thumb = header.e_machine(endian) == EM_ARM;

    let mut symbols = ElfSymbols {
        segments: program_headers
            .iter()
            .filter(|ph| ph.p_type(endian) == PT_LOAD)
            .map(|ph| LoadSegment {
                offset: ph.p_offset(endian).into(),
                vaddr: ph.p_vaddr(endian).into(),
                file_size: ph.p_filesz(endian).into(),
                mem_size: ph.p_memsz(endian).into(),
                executable: ph.p_flags(endian) & PF_X != 0,
            })
            .collect(),
        build_id: build_id(endian, data, &sections, program_headers),
        ..ElfSymbols::default()
    };

    let mut candidates = Vec::new();
    let symtab = sections.symbols(endian, data, SHT_SYMTAB)?;
    symbols.has_symtab = !symtab.is_empty();
    for (table, source_rank) in [
        (symtab, 0),
        (sections.symbols(endian, data, SHT_DYNSYM)?, 6),
    ] {
        for (index, sym) in table.enumerate().skip(1) {
            let Some(section) = table.symbol_section(endian, sym, index)? else {
                continue;
            };
            let Ok(header) = sections.section(section) else {
                continue;
            };
            let Some(mut c) =
                candidate::<Elf>(endian, sym, header, table.symbol_name(endian, sym)?)
            else {
                continue;
            };
            if thumb {
                c.addr &= !1;
            }
            c.rank += source_rank;
            candidates.push(c);
        }
    }
    symbols.index(candidates);
    Ok(symbols)
}

/// A function symbol (or a label in executable code), else `None`.
fn candidate<'data, Elf: FileHeader<Endian = Endianness>>(
    endian: Endianness,
    sym: &Elf::Sym,
    section: &Elf::SectionHeader,
    name: &'data [u8],
) -> Option<Candidate<'data>> {
    let in_text = section.sh_flags(endian).into() & u64::from(SHF_EXECINSTR) != 0;
    let is_label = match sym.st_type() {
        STT_FUNC | STT_GNU_IFUNC => false,
        STT_NOTYPE if in_text => true,
        _ => return None,
    };
    let addr: u64 = sym.st_value(endian).into();
    // `$x`/`$d` are ARM mapping symbols, `.L` are assembler locals.
    if addr == 0 || name.is_empty() || name.starts_with(b"$") || name.starts_with(b".L") {
        return None;
    }
    let bind_rank = match sym.st_bind() {
        STB_GLOBAL => 0,
        STB_WEAK => 1,
        _ => 2,
    };
    let section_start: u64 = section.sh_addr(endian).into();
    let limit = section_start.saturating_add(section.sh_size(endian).into());
    Some(Candidate {
        addr,
        size: sym.st_size(endian).into(),
        limit: if limit > addr { limit } else { u64::MAX },
        name,
        rank: u8::from(is_label) * 3 + bind_rank,
        is_label,
    })
}

/// The GNU build ID from a note section, or from a `PT_NOTE` segment when sections are gone.
fn build_id<'data, Elf: FileHeader<Endian = Endianness>>(
    endian: Endianness,
    data: &'data [u8],
    sections: &SectionTable<'data, Elf, &'data [u8]>,
    program_headers: &'data [Elf::ProgramHeader],
) -> Option<String> {
    let from_sections = sections
        .iter()
        .filter_map(|s| s.notes(endian, data).ok().flatten());
    let from_segments = program_headers
        .iter()
        .filter_map(|p| p.notes(endian, data).ok().flatten());
    from_sections
        .chain(from_segments)
        .find_map(|notes| gnu_build_id(endian, notes))
}

fn gnu_build_id<Elf: FileHeader<Endian = Endianness>>(
    endian: Endianness,
    mut notes: NoteIterator<'_, Elf>,
) -> Option<String> {
    while let Ok(Some(note)) = notes.next() {
        if note.name() == b"GNU"
            && note.n_type(endian) == NT_GNU_BUILD_ID
            && !note.desc().is_empty()
        {
            return Some(super::hex(note.desc()));
        }
    }
    None
}

#[cfg(test)]
#[path = "elf_tests.rs"]
mod tests;
