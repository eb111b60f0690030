//! The ELF facts unwind-table extraction needs, read from an image in memory. A leaf with no
//! imports from the crate: it touches no file (the caller maps them, `crate::cfi`).
//!
//! This module owns [`ElfImage`]: the executable `PT_LOAD` segments (to turn CFI virtual
//! addresses into the file offsets the BPF side works with), the CFI sections, the code
//! sections, `_start` symbols (outermost frames), whether the file defines `sigaction`, the GNU
//! build ID and `.gnu_debuglink`; [`ElfError`] says why an image was refused. It does not parse
//! CFI or look for separate debug files (`crate::cfi`), and it borrows everything from the
//! caller's bytes. Symbolization reads its own facts (symbol tables) in `crate::symbolize`.
//!
//! Only 64-bit little-endian x86_64 ELF is accepted: the rules produced are x86_64 register
//! rules.

use object::elf::{
    FileHeader64, EM_X86_64, NT_GNU_BUILD_ID, PF_X, PT_LOAD, SHF_COMPRESSED, SHF_EXECINSTR,
    SHN_UNDEF, SHT_DYNSYM, SHT_NOBITS, SHT_SYMTAB,
};
use object::read::elf::{FileHeader, ProgramHeader, SectionHeader, SectionTable, Sym};
use object::{Endianness, FileKind};

type Header = FileHeader64<Endianness>;

/// Executable segments considered per file at most.
const MAX_EXEC_SEGMENTS: usize = 16;

/// Executable sections scanned for signal trampolines per file at most.
const MAX_CODE_SECTIONS: usize = 64;

/// Why bytes are not an ELF image this reader accepts. The caller adds the path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ElfError {
    /// The bytes are not an ELF file.
    NotElf,
    /// The ELF headers are malformed or truncated.
    Corrupt(String),
    /// A valid ELF file these rules do not cover (32-bit, not x86_64).
    Unsupported(String),
}

/// One executable `PT_LOAD` segment, clipped to the bytes the file really holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ExecSegment {
    pub vaddr: u64,
    pub offset: u64,
    /// Bytes of the segment backed by the file (`p_filesz`, clipped to the file's length).
    pub size: u64,
}

/// A section's link-time address and bytes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SectionData<'data> {
    pub addr: u64,
    pub data: &'data [u8],
}

/// The parts of one ELF image that extraction uses, borrowed from its bytes.
pub(crate) struct ElfImage<'data> {
    pub data: &'data [u8],
    pub segments: Vec<ExecSegment>,
    endian: Endianness,
    sections: SectionTable<'data, Header, &'data [u8]>,
    /// Sections skipped because they are compressed (`SHF_COMPRESSED`).
    pub compressed_skipped: u32,
}

impl<'data> ElfImage<'data> {
    /// Parses the headers. Fails on anything but 64-bit little-endian x86_64 ELF.
    pub fn parse(data: &'data [u8]) -> Result<Self, ElfError> {
        match FileKind::parse(data) {
            Ok(FileKind::Elf64) => {}
            Ok(FileKind::Elf32) => return Err(ElfError::Unsupported("32-bit ELF".into())),
            _ if data.starts_with(&object::elf::ELFMAG) => {
                return Err(ElfError::Corrupt("truncated ELF header".into()))
            }
            _ => return Err(ElfError::NotElf),
        }
        let corrupt = |e: object::Error| ElfError::Corrupt(e.to_string());
        let header = Header::parse(data).map_err(corrupt)?;
        let endian = header.endian().map_err(corrupt)?;
        if endian != Endianness::Little || header.e_machine(endian) != EM_X86_64 {
            return Err(ElfError::Unsupported(format!(
                "machine {} (only x86_64 is supported)",
                header.e_machine(endian)
            )));
        }
        let phdrs = header.program_headers(endian, data).map_err(corrupt)?;
        let file_len = data.len() as u64;
        let segments = phdrs
            .iter()
            .filter(|p| p.p_type(endian) == PT_LOAD && p.p_flags(endian) & PF_X != 0)
            .filter_map(|p| {
                let offset = p.p_offset(endian);
                let size = p.p_filesz(endian).min(file_len.checked_sub(offset)?);
                (size > 0).then_some(ExecSegment {
                    vaddr: p.p_vaddr(endian),
                    offset,
                    size,
                })
            })
            // Real files have one or two; many would only multiply the per-segment work.
            .take(MAX_EXEC_SEGMENTS)
            .collect();
        Ok(Self {
            data,
            segments,
            endian,
            sections: header.sections(endian, data).map_err(corrupt)?,
            compressed_skipped: 0,
        })
    }

    /// The file offset of a virtual address and the end (exclusive, as a virtual address) of the
    /// executable segment holding it.
    pub fn vaddr_to_offset(&self, vaddr: u64) -> Option<(u64, u64)> {
        self.segments.iter().find_map(|s| {
            let delta = vaddr.checked_sub(s.vaddr)?;
            (delta < s.size).then_some((s.offset + delta, s.vaddr + s.size))
        })
    }

    /// A section with file-backed, uncompressed contents, by name.
    pub fn section(&mut self, name: &str) -> Option<SectionData<'data>> {
        let (_, shdr) = self
            .sections
            .section_by_name(self.endian, name.as_bytes())?;
        if shdr.sh_type(self.endian) == SHT_NOBITS {
            return None;
        }
        if shdr.sh_flags(self.endian) & u64::from(SHF_COMPRESSED) != 0 {
            self.compressed_skipped += 1;
            return None;
        }
        let data = shdr.data(self.endian, self.data).ok()?;
        Some(SectionData {
            addr: shdr.sh_addr(self.endian),
            data,
        })
    }

    /// File ranges holding code: the executable sections (`SHF_EXECINSTR`), clipped to the
    /// executable segments, or the segments themselves when the file has no section headers.
    /// (An executable segment often also holds `.rodata` and `.eh_frame`, which are not code.)
    pub fn code_ranges(&self) -> Vec<(u64, u64)> {
        let mut ranges: Vec<(u64, u64)> = self
            .sections
            .iter()
            .filter(|s| {
                s.sh_type(self.endian) != SHT_NOBITS
                    && s.sh_flags(self.endian) & u64::from(SHF_EXECINSTR) != 0
            })
            .filter_map(|s| {
                let (start, _) = self.vaddr_to_offset(s.sh_addr(self.endian))?;
                let (last, _) = self.vaddr_to_offset(
                    s.sh_addr(self.endian)
                        .checked_add(s.sh_size(self.endian))?
                        .checked_sub(1)?,
                )?;
                (last >= start).then_some((start, last + 1))
            })
            .take(MAX_CODE_SECTIONS)
            .collect();
        if ranges.is_empty() && self.sections.is_empty() {
            ranges = self
                .segments
                .iter()
                .map(|s| (s.offset, s.offset + s.size))
                .collect();
        }
        ranges
    }

    /// The address of a section, whatever its contents (for CFI base addresses).
    pub fn section_addr(&self, name: &str) -> Option<u64> {
        let (_, shdr) = self
            .sections
            .section_by_name(self.endian, name.as_bytes())?;
        Some(shdr.sh_addr(self.endian))
    }

    /// Virtual address ranges of sized `_start` symbols: code that is only ever the outermost
    /// frame. (The entry point is not used as a stand-in: `libc.so.6` is runnable, and its entry
    /// is an ordinary function with ordinary CFI.)
    pub fn start_symbols(&self) -> Vec<(u64, u64)> {
        let mut ranges = Vec::new();
        for kind in [SHT_SYMTAB, SHT_DYNSYM] {
            let Ok(table) = self.sections.symbols(self.endian, self.data, kind) else {
                continue;
            };
            for sym in table.iter() {
                let name = table.symbol_name(self.endian, sym).unwrap_or_default();
                let (addr, size) = (sym.st_value(self.endian), sym.st_size(self.endian));
                if name == b"_start" && addr != 0 && size != 0 {
                    ranges.push((addr, addr.saturating_add(size)));
                }
            }
        }
        ranges
    }

    /// Whether the file may hold a signal-return trampoline without CFI worth scanning the
    /// code for: it defines `sigaction` (a libc) or is statically linked.
    pub fn may_define_sigaction(&self) -> bool {
        let mut dynamic = false;
        for kind in [SHT_SYMTAB, SHT_DYNSYM] {
            let Ok(table) = self.sections.symbols(self.endian, self.data, kind) else {
                continue;
            };
            dynamic |= kind == SHT_DYNSYM && !table.is_empty();
            let defines = table.iter().any(|sym| {
                sym.st_shndx(self.endian) != SHN_UNDEF
                    && matches!(
                        table.symbol_name(self.endian, sym),
                        Ok(b"sigaction" | b"__sigaction" | b"__libc_sigaction" | b"__restore_rt")
                    )
            });
            if defines {
                return true;
            }
        }
        !dynamic
    }

    /// The GNU build ID bytes.
    pub fn build_id(&self) -> Option<&'data [u8]> {
        for shdr in self.sections.iter() {
            let Ok(Some(mut notes)) = shdr.notes(self.endian, self.data) else {
                continue;
            };
            while let Ok(Some(note)) = notes.next() {
                if note.name() == b"GNU"
                    && note.n_type(self.endian) == NT_GNU_BUILD_ID
                    && !note.desc().is_empty()
                {
                    return Some(note.desc());
                }
            }
        }
        None
    }

    /// The file name and CRC-32 from `.gnu_debuglink`.
    pub fn debuglink(&mut self) -> Option<(&'data [u8], u32)> {
        let section = self.section(".gnu_debuglink")?;
        let name_len = section.data.iter().position(|&b| b == 0)?;
        let crc_at = (name_len + 4) & !3;
        let crc = section.data.get(crc_at..crc_at + 4)?;
        let crc = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
        Some((&section.data[..name_len], crc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_non_elf_and_truncated_headers() {
        assert!(matches!(ElfImage::parse(b"hello"), Err(ElfError::NotElf)));
        assert!(matches!(
            ElfImage::parse(b"\x7fELF\x02\x01"),
            Err(ElfError::Corrupt(_))
        ));
    }
}
