//! DWARF lines and inlined calls of one file, through the `addr2line` crate over gimli.
//!
//! This module owns [`DwarfLines`]: an `addr2line::Context` whose readers point into one
//! [`SharedBytes`] (a mapping of the file holding the DWARF), so sections are never copied and
//! units, line programs and inline trees are parsed only when an address in them is asked for.
//! Compressed sections (`SHF_COMPRESSED`, zlib or zstd) are the one exception: they are
//! inflated once, when the context is built.
//!
//! It does not find the file (`super::debug_info`), turn names into `Frame`s or cache contexts
//! (`super`).

use std::io::Read;

use addr2line::Context;
use gimli::{EndianReader, RunTimeEndian, SectionId};
use object::{CompressionFormat, Object, ObjectSection};

use crate::sys::mmap::SharedBytes;

type Reader = EndianReader<RunTimeEndian, SharedBytes>;

/// The largest section we inflate; a bigger one is treated as absent.
const MAX_INFLATED: u64 = 1 << 30;

/// Sections `gimli::Dwarf::load` asks for that names and lines never read: variable locations
/// and macros. Not loading them saves inflating them (libc6-dbg's `.debug_loclists` alone
/// inflates to several MB).
const UNREAD_SECTIONS: [SectionId; 4] = [
    SectionId::DebugLoc,
    SectionId::DebugLocLists,
    SectionId::DebugMacinfo,
    SectionId::DebugMacro,
];

/// One frame of an address: the function (raw, as DWARF names it) and where in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DwarfFrame<'a> {
    /// The linkage (mangled) name when DWARF has one, else the plain name.
    pub name: Option<&'a str>,
    pub file: Option<&'a str>,
    /// 0 when unknown.
    pub line: u32,
}

/// The DWARF of one file, parsed lazily.
pub(crate) struct DwarfLines {
    context: Context<Reader>,
}

impl std::fmt::Debug for DwarfLines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DwarfLines")
    }
}

/// Whether the ELF image in `bytes` has DWARF debug info (`.debug_info`, plain or compressed).
pub(crate) fn has_dwarf(bytes: &[u8]) -> bool {
    object::File::parse(bytes)
        .ok()
        .and_then(|file| file.section_by_name(".debug_info").map(|s| s.size() > 0))
        .unwrap_or(false)
}

impl DwarfLines {
    /// Builds a context over the DWARF sections of the ELF image in `bytes`; `None` when it has
    /// no `.debug_info` or its headers are unreadable.
    pub fn load(bytes: SharedBytes) -> Option<DwarfLines> {
        let file = object::File::parse(&*bytes).ok()?;
        file.section_by_name(".debug_info")?;
        let endian = if file.is_little_endian() {
            RunTimeEndian::Little
        } else {
            RunTimeEndian::Big
        };
        let empty = SharedBytes::from_vec(Vec::new());
        let load = |id: SectionId| -> Result<Reader, gimli::Error> {
            let section = (!UNREAD_SECTIONS.contains(&id))
                .then(|| file.section_by_name(id.name()))
                .flatten()
                .and_then(|s| section_reader(&bytes, &s, endian));
            Ok(section.unwrap_or_else(|| EndianReader::new(empty.clone(), endian)))
        };
        let mut dwarf = gimli::Dwarf::load(load).ok()?;
        // Units that share an abbreviation table (most of a Rust binary's: 1,175 units over 219
        // tables in ours; dwz's partial units in Debian's debug files) share one parsed copy;
        // addr2line parses every unit's header and abbreviations up front.
        dwarf.populate_abbreviations_cache(gimli::AbbreviationsCacheStrategy::Duplicates);
        let context = Context::from_dwarf(dwarf).ok()?;
        Some(DwarfLines { context })
    }

    /// Calls `each` for the frames at link-time address `vaddr`, innermost inlined function
    /// first and the function the code was compiled into last. Nothing when DWARF does not cover
    /// the address.
    pub fn frames(&self, vaddr: u64, mut each: impl FnMut(DwarfFrame<'_>)) {
        let Ok(mut frames) = self.context.find_frames(vaddr).skip_all_loads() else {
            return;
        };
        while let Ok(Some(frame)) = frames.next() {
            let name = frame.function.as_ref().and_then(|f| f.raw_name().ok());
            let location = frame.location.as_ref();
            each(DwarfFrame {
                name: name.as_deref(),
                file: location.and_then(|l| l.file),
                line: location.and_then(|l| l.line).unwrap_or(0),
            });
        }
    }
}

/// A reader over `section`: a sub-range of `bytes`, or its inflated copy when compressed.
fn section_reader(
    bytes: &SharedBytes,
    section: &object::Section<'_, '_>,
    endian: RunTimeEndian,
) -> Option<Reader> {
    let compressed = section.compressed_data().ok()?;
    match compressed.format {
        CompressionFormat::None => {
            let start = (compressed.data.as_ptr() as usize).checked_sub(bytes.as_ptr() as usize)?;
            let end = start.checked_add(compressed.data.len())?;
            (end <= bytes.len()).then(|| EndianReader::new(bytes.clone(), endian).range(start..end))
        }
        format @ (CompressionFormat::Zlib | CompressionFormat::Zstandard)
            if compressed.uncompressed_size <= MAX_INFLATED =>
        {
            let mut out = Vec::with_capacity(usize::try_from(compressed.uncompressed_size).ok()?);
            if format == CompressionFormat::Zlib {
                flate2::read::ZlibDecoder::new(compressed.data)
                    .read_to_end(&mut out)
                    .ok()?;
            } else {
                ruzstd::decoding::StreamingDecoder::new(compressed.data)
                    .ok()?
                    .read_to_end(&mut out)
                    .ok()?;
            }
            Some(EndianReader::new(SharedBytes::from_vec(out), endian))
        }
        _ => None,
    }
}
