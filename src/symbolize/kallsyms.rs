//! Kernel symbols from `/proc/kallsyms`.
//!
//! This module owns parsing the kernel's symbol list and answering "which kernel function holds
//! this address". It keeps only text symbols (`t`, `T`, `w`, `W`), core kernel and modules alike
//! (`name [module]` lines, including `[bpf]` programs), indexed once and sorted by address.
//! Names live in one `String`; each entry is 24 bytes, so 200k symbols cost about 8 MB.
//!
//! kallsyms gives start addresses only. A symbol's extent is the gap to the next symbol, capped
//! at [`MAX_EXTENT`], and section end markers such as `_etext` have no extent, so an address past
//! the end of kernel text or of a module is not charged to a far-away function.
//!
//! It does not read `/proc/modules` or `/proc/kcore` (neither is assumed to exist) and does not
//! demangle (the caller does).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use object::elf::{FileHeader64, NT_GNU_BUILD_ID};
use object::read::elf::NoteIterator;
use object::NativeEndian;

use super::error::SymbolizeError;

/// Where the kernel lists its symbols.
pub const KALLSYMS_PATH: &str = "/proc/kallsyms";

/// Where the running kernel exposes its ELF notes (among them its GNU build ID).
const KERNEL_NOTES_PATH: &str = "/sys/kernel/notes";

/// The largest extent given to a symbol: no kernel function is this long, so a longer gap to the
/// next symbol means the address is past the end of a text region.
pub const MAX_EXTENT: u64 = 1 << 20;

/// The module id of the core kernel (module ids start at 1).
pub(crate) const CORE_ID: u16 = 0;

/// One kernel symbol covering a looked-up address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelSymbol<'a> {
    /// The raw (not demangled) symbol name.
    pub name: &'a str,
    /// How far the address is past the symbol's start.
    pub offset: u64,
    /// The module name without brackets (`nf_tables`, `bpf`), or `None` for the core kernel.
    pub module: Option<&'a str>,
}

/// One indexed symbol. `rank` is only used to choose among symbols sharing an address.
#[derive(Clone, Copy, Debug)]
struct Entry {
    addr: u64,
    name_start: u32,
    /// Bytes covered from `addr`; 0 for section end markers.
    size: u32,
    name_len: u16,
    module: u16,
    rank: u8,
}

/// The kernel's text symbols, sorted by address.
#[derive(Debug, Default)]
pub struct KernelSymbols {
    names: String,
    modules: Vec<Box<str>>,
    syms: Vec<Entry>,
    build_id: Option<String>,
}

/// Counts from one parse, used to tell "addresses hidden" apart from "no symbols".
#[derive(Debug, Default)]
struct ParseCounts {
    zero_addresses: usize,
}

impl KernelSymbols {
    /// Loads the running kernel's symbols from `/proc/kallsyms`, and its build ID from
    /// `/sys/kernel/notes` when readable.
    ///
    /// Fails with [`SymbolizeError::KernelAddressesHidden`] when every address reads as zero
    /// (not root, or `kernel.kptr_restrict` forbids it).
    pub fn load() -> Result<Self, SymbolizeError> {
        let mut symbols = Self::from_path(Path::new(KALLSYMS_PATH))?;
        symbols.build_id = std::fs::read(KERNEL_NOTES_PATH)
            .ok()
            .and_then(|notes| gnu_build_id_from_notes(&notes));
        Ok(symbols)
    }

    /// Loads symbols from a file in `/proc/kallsyms` format.
    pub fn from_path(path: &Path) -> Result<Self, SymbolizeError> {
        let io_err = |source| SymbolizeError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io_err)?;
        // kallsyms is generated a page at a time; a large buffer means fewer read calls.
        let reader = BufReader::with_capacity(1 << 18, file);
        Self::from_reader(reader, path)
    }

    /// Parses `/proc/kallsyms`-format text. `path` only names the source in errors.
    pub fn from_reader<R: BufRead>(reader: R, path: &Path) -> Result<Self, SymbolizeError> {
        let (symbols, counts) = Self::parse(reader).map_err(|source| SymbolizeError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if !symbols.is_empty() {
            return Ok(symbols);
        }
        let path = PathBuf::from(path);
        if counts.zero_addresses > 0 {
            Err(SymbolizeError::KernelAddressesHidden { path })
        } else {
            Err(SymbolizeError::NoKernelSymbols { path })
        }
    }

    /// Parses and indexes; junk lines are skipped, only read errors fail.
    fn parse<R: BufRead>(mut reader: R) -> io::Result<(Self, ParseCounts)> {
        let mut symbols = Self::default();
        let mut counts = ParseCounts::default();
        let mut module_ids: HashMap<Box<str>, u16> = HashMap::new();
        let mut line = Vec::with_capacity(256);
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            let Some(parsed) = parse_line(&line) else {
                continue;
            };
            if !is_text(parsed.kind) {
                continue;
            }
            if parsed.addr == 0 {
                counts.zero_addresses += 1;
                continue;
            }
            let module = match parsed.module {
                None => CORE_ID,
                Some(name) => match symbols.module_id(&mut module_ids, name) {
                    Some(id) => id,
                    None => continue,
                },
            };
            symbols.push(parsed, module);
        }
        symbols.index();
        Ok((symbols, counts))
    }

    /// Interns a module name; `None` only past 65535 distinct modules.
    fn module_id(&mut self, ids: &mut HashMap<Box<str>, u16>, name: &str) -> Option<u16> {
        if let Some(&id) = ids.get(name) {
            return Some(id);
        }
        let id = u16::try_from(self.modules.len() + 1).ok()?;
        self.modules.push(name.into());
        ids.insert(name.into(), id);
        Some(id)
    }

    fn push(&mut self, line: Line<'_>, module: u16) {
        let (Ok(name_start), Ok(name_len)) = (
            u32::try_from(self.names.len()),
            u16::try_from(line.name.len()),
        ) else {
            return;
        };
        self.names.push_str(line.name);
        let rank = if is_end_marker(line.name) {
            END_MARKER_RANK
        } else {
            kind_rank(line.kind)
        };
        self.syms.push(Entry {
            addr: line.addr,
            name_start,
            size: 0,
            name_len,
            module,
            rank,
        });
    }

    /// Sorts, keeps the best symbol per address and computes extents.
    fn index(&mut self) {
        let names = &self.names;
        // Stable: among equal addresses and ranks the file order decides.
        self.syms.sort_by(|a, b| {
            a.addr
                .cmp(&b.addr)
                .then(a.rank.cmp(&b.rank))
                .then_with(|| leading_underscores(names, a).cmp(&leading_underscores(names, b)))
        });
        self.syms.dedup_by_key(|e| e.addr);
        for i in 0..self.syms.len() {
            let next = self.syms.get(i + 1).map(|e| e.addr);
            let entry = &mut self.syms[i];
            if entry.rank == END_MARKER_RANK {
                continue;
            }
            let gap = next.map_or(MAX_EXTENT, |next| next - entry.addr);
            // SANITY: min(_, MAX_EXTENT) fits in u32.
            entry.size = gap.min(MAX_EXTENT) as u32;
        }
        // Kept for the session: give back what doubling the vectors left unused (up to half).
        self.syms.shrink_to_fit();
        self.names.shrink_to_fit();
    }

    /// The number of indexed symbols.
    pub fn len(&self) -> usize {
        self.syms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.syms.is_empty()
    }

    /// The running kernel's GNU build ID (lowercase hex), when [`load`](Self::load) read it.
    pub fn build_id(&self) -> Option<&str> {
        self.build_id.as_deref()
    }

    /// The symbol covering `addr`, or `None` when no symbol is within its extent.
    pub fn lookup(&self, addr: u64) -> Option<KernelSymbol<'_>> {
        self.find(addr).map(|(_, _, sym)| sym)
    }

    /// Like [`lookup`](Self::lookup), also giving the symbol's index and module id (both stable
    /// for the lifetime of `self`), which callers use to cache per-symbol data.
    pub(crate) fn find(&self, addr: u64) -> Option<(usize, u16, KernelSymbol<'_>)> {
        let index = self
            .syms
            .partition_point(|e| e.addr <= addr)
            .checked_sub(1)?;
        let entry = &self.syms[index];
        let offset = addr - entry.addr;
        if offset >= u64::from(entry.size) {
            return None;
        }
        let module = match entry.module {
            CORE_ID => None,
            id => self.modules.get(usize::from(id) - 1).map(|m| &**m),
        };
        Some((
            index,
            entry.module,
            KernelSymbol {
                name: self.name(entry),
                offset,
                module,
            },
        ))
    }

    fn name(&self, entry: &Entry) -> &str {
        let start = entry.name_start as usize;
        self.names
            .get(start..start + usize::from(entry.name_len))
            .unwrap_or("")
    }
}

/// One well-formed kallsyms line.
#[derive(Debug, PartialEq, Eq)]
struct Line<'a> {
    addr: u64,
    kind: u8,
    name: &'a str,
    module: Option<&'a str>,
}

/// Parses `ADDR TYPE NAME` or `ADDR TYPE NAME\t[MODULE]`; `None` for anything else.
fn parse_line(line: &[u8]) -> Option<Line<'_>> {
    let (addr, rest) = next_field(line)?;
    let (kind, rest) = next_field(rest)?;
    let (name, rest) = next_field(rest)?;
    let module = match next_field(rest) {
        None => None,
        Some((module, rest)) => {
            if next_field(rest).is_some() {
                return None;
            }
            Some(
                module
                    .strip_prefix(b"[")?
                    .strip_suffix(b"]")
                    .filter(|m| !m.is_empty())?,
            )
        }
    };
    let &[kind] = kind else { return None };
    Some(Line {
        addr: parse_hex(addr)?,
        kind,
        name: std::str::from_utf8(name).ok()?,
        module: module.map(std::str::from_utf8).transpose().ok()?,
    })
}

/// The first whitespace-separated field of `text` and what follows it.
fn next_field(text: &[u8]) -> Option<(&[u8], &[u8])> {
    let start = text.iter().position(|b| !b.is_ascii_whitespace())?;
    let text = &text[start..];
    let end = text
        .iter()
        .position(u8::is_ascii_whitespace)
        .unwrap_or(text.len());
    Some(text.split_at(end))
}

/// A 1 to 16 digit hexadecimal number, without prefix or sign.
fn parse_hex(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    digits.iter().try_fold(0u64, |value, &digit| {
        let digit = char::from(digit).to_digit(16)?;
        Some(value << 4 | u64::from(digit))
    })
}

fn is_text(kind: u8) -> bool {
    matches!(kind, b't' | b'T' | b'w' | b'W')
}

/// Lower wins a tie at one address: global over weak over local.
fn kind_rank(kind: u8) -> u8 {
    match kind {
        b'T' => 0,
        b'W' => 1,
        b't' => 2,
        _ => 3,
    }
}

/// The rank of end markers: they lose every tie and cover nothing.
const END_MARKER_RANK: u8 = 4;

/// Labels that mark where a text region ends rather than where a function starts.
fn is_end_marker(name: &str) -> bool {
    matches!(name, "_etext" | "_einittext" | "__indirect_thunk_end")
        || (name.starts_with("__") && name.ends_with("_text_end"))
}

fn leading_underscores(names: &str, entry: &Entry) -> usize {
    let start = entry.name_start as usize;
    let name = names
        .as_bytes()
        .get(start..start + usize::from(entry.name_len))
        .unwrap_or(&[]);
    name.iter().take_while(|&&b| b == b'_').count()
}

/// Finds the GNU build ID among ELF notes as the kernel lays them out in `/sys/kernel/notes`.
fn gnu_build_id_from_notes(data: &[u8]) -> Option<String> {
    let mut notes = NoteIterator::<FileHeader64<NativeEndian>>::new(NativeEndian, 4, data).ok()?;
    while let Ok(Some(note)) = notes.next() {
        if note.name() == b"GNU" && note.n_type(NativeEndian) == NT_GNU_BUILD_ID {
            return Some(super::hex(note.desc()));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    fn parse(text: &str) -> Result<KernelSymbols, SymbolizeError> {
        KernelSymbols::from_reader(Cursor::new(text), Path::new("test"))
    }

    const SAMPLE: &str = "\
ffffffff81000000 T _stext
ffffffff81000000 T _text
ffffffff81000000 t srso_alias_untrain_ret
ffffffff81001000 T do_syscall_64
ffffffff81001200 t helper.cold
ffffffff81001300 D some_data
ffffffff81002000 W weak_fn
ffffffff81002100 T _etext
ffffffff82400000 D __start_rodata
ffffffffc0a00000 t nft_do_chain\t[nf_tables]
ffffffffc0a00400 T nft_register\t[nf_tables]
ffffffffc0b00000 t bpf_prog_6deef7357e7b4530_sd_fw_ingress\t[bpf]
";

    #[test]
    fn parses_lines() {
        assert_eq!(
            parse_line(b"ffffffffc0a00000 t nft_do_chain\t[nf_tables]\n"),
            Some(Line {
                addr: 0xffffffffc0a00000,
                kind: b't',
                name: "nft_do_chain",
                module: Some("nf_tables")
            })
        );
        assert_eq!(
            parse_line(b"0000000000000000 A fixed_percpu_data"),
            Some(Line {
                addr: 0,
                kind: b'A',
                name: "fixed_percpu_data",
                module: None
            })
        );
        for junk in [
            &b""[..],
            b"\n",
            b"ffffffff81000000 T",
            b"zzzz T name",
            b"ffffffff81000000 TT name",
            b"ffffffff81000000 T name [mod] extra",
            b"ffffffff81000000 T name [mod",
            b"ffffffff81000000 T name []",
            b"1ffffffff81000000 T name",
            b"ffffffff81000000 T \xff\xfe",
        ] {
            assert_eq!(parse_line(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn looks_up_core_symbols() {
        let syms = parse(SAMPLE).unwrap();
        // Three names at 0xffffffff81000000 collapse into one; `D` lines are dropped.
        assert_eq!(syms.len(), 8);
        let hit = syms.lookup(0xffffffff81000010).unwrap();
        assert_eq!(
            hit,
            KernelSymbol {
                name: "_stext",
                offset: 0x10,
                module: None
            }
        );
        let hit = syms.lookup(0xffffffff81001234).unwrap();
        assert_eq!(
            hit,
            KernelSymbol {
                name: "helper.cold",
                offset: 0x34,
                module: None
            }
        );
        assert_eq!(
            syms.lookup(0xffffffff81001000).unwrap().name,
            "do_syscall_64"
        );
        assert_eq!(syms.lookup(0xffffffff810020ff).unwrap().name, "weak_fn");
        assert_eq!(syms.lookup(0xffffffff80ffffff), None);
        assert_eq!(syms.lookup(0), None);
    }

    #[test]
    fn end_of_text_is_not_attributed() {
        let syms = parse(SAMPLE).unwrap();
        assert_eq!(syms.lookup(0xffffffff81002100), None);
        assert_eq!(syms.lookup(0xffffffff81002200), None);
        assert_eq!(syms.lookup(0xffffffff82400010), None);
    }

    #[test]
    fn module_symbols_keep_their_module() {
        let syms = parse(SAMPLE).unwrap();
        let hit = syms.lookup(0xffffffffc0a00404).unwrap();
        assert_eq!(
            hit,
            KernelSymbol {
                name: "nft_register",
                offset: 4,
                module: Some("nf_tables")
            }
        );
        let hit = syms.lookup(0xffffffffc0b00010).unwrap();
        assert_eq!(hit.module, Some("bpf"));
        // The last symbol of a module extends at most MAX_EXTENT.
        assert!(syms.lookup(0xffffffffc0a00400 + MAX_EXTENT - 1).is_some());
        assert_eq!(syms.lookup(0xffffffffc0b00000 + MAX_EXTENT), None);
        assert_eq!(syms.lookup(u64::MAX), None);
    }

    #[test]
    fn capped_gap_between_far_symbols() {
        let syms = parse("0000000000001000 T a\n0000000010000000 T b\n").unwrap();
        assert_eq!(syms.lookup(0x1000 + MAX_EXTENT - 1).unwrap().name, "a");
        assert_eq!(syms.lookup(0x1000 + MAX_EXTENT), None);
        assert_eq!(syms.lookup(0x10000000).unwrap().name, "b");
    }

    #[test]
    fn unsorted_input_is_sorted() {
        let syms = parse("3000 t c\n1000 T a\n2000 t b [m]\n").unwrap();
        assert_eq!(syms.lookup(0x1fff).unwrap().name, "a");
        assert_eq!(syms.lookup(0x2000).unwrap().module, Some("m"));
        assert_eq!(syms.lookup(0x3001).unwrap().name, "c");
    }

    #[test]
    fn ties_prefer_global_then_fewer_underscores() {
        let syms =
            parse("1000 t local\n1000 T __global\n1000 T global\n2000 T _etext\n2000 t real\n")
                .unwrap();
        assert_eq!(syms.lookup(0x1000).unwrap().name, "global");
        // An end marker loses a tie against a real function.
        assert_eq!(syms.lookup(0x2000).unwrap().name, "real");
    }

    #[test]
    fn zero_addresses_mean_hidden() {
        let text = "0000000000000000 T _stext\n0000000000000000 t foo\t[mod]\n";
        let err = parse(text).unwrap_err();
        assert!(
            matches!(err, SymbolizeError::KernelAddressesHidden { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("kptr_restrict"));
        assert!(err.to_string().contains("CAP_SYSLOG"));
    }

    #[test]
    fn junk_only_means_no_symbols() {
        let err = parse("garbage\n\nffffffff81000000 D data\n").unwrap_err();
        assert!(
            matches!(err, SymbolizeError::NoKernelSymbols { .. }),
            "{err}"
        );
        assert!(parse("").is_err());
    }

    #[test]
    fn junk_lines_are_skipped() {
        let syms = parse("junk\n1000 T a\nnot hex T b\n\n2000 T c [mod] x\n3000 t d\n").unwrap();
        assert_eq!(syms.len(), 2);
        assert_eq!(syms.lookup(0x1500).unwrap().name, "a");
        assert_eq!(syms.lookup(0x3000).unwrap().name, "d");
    }

    #[test]
    fn no_trailing_newline() {
        let syms = parse("1000 T a").unwrap();
        assert_eq!(syms.lookup(0x1000).unwrap().name, "a");
    }

    #[test]
    fn build_id_from_notes() {
        let mut notes = Vec::new();
        // An unrelated note first, then the GNU build ID.
        for (name, kind, desc) in [
            (&b"Xen\0"[..], 1u32, &[9u8, 9, 9, 9][..]),
            (b"GNU\0", 3, &[0xab, 0x01, 0xff]),
        ] {
            notes.extend_from_slice(&(name.len() as u32).to_ne_bytes());
            notes.extend_from_slice(&(desc.len() as u32).to_ne_bytes());
            notes.extend_from_slice(&kind.to_ne_bytes());
            notes.extend_from_slice(name);
            notes.extend_from_slice(desc);
            notes.resize(notes.len().next_multiple_of(4), 0);
        }
        assert_eq!(gnu_build_id_from_notes(&notes).as_deref(), Some("ab01ff"));
        assert_eq!(gnu_build_id_from_notes(&notes[..7]), None);
        assert_eq!(gnu_build_id_from_notes(&[]), None);
    }

    /// Runs against the real `/proc/kallsyms` when its addresses are visible.
    #[test]
    fn loads_real_kallsyms() {
        let start = std::time::Instant::now();
        let syms = match KernelSymbols::load() {
            Ok(syms) => syms,
            Err(err) => return eprintln!("skipped: {err}"),
        };
        eprintln!(
            "loaded {} kernel symbols in {:?}",
            syms.len(),
            start.elapsed()
        );
        assert!(syms.len() > 1000);
        let text = std::fs::read_to_string(KALLSYMS_PATH).unwrap();
        let line = text
            .lines()
            .find(|l| l.ends_with(" T _stext") || l.ends_with(" T _text"));
        if let Some(addr) = line.and_then(|l| u64::from_str_radix(&l[..16], 16).ok()) {
            let hit = syms.lookup(addr + 1).unwrap();
            assert_eq!(hit.offset, 1);
            assert_eq!(hit.module, None);
        }
    }
}
