//! Tests of [`ElfSymbols`] against small C programs built here with `cc`, the test binary
//! itself, hand-made headers and corrupted input.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

/// Where the fixture's first segment is linked, so file offsets and addresses differ.
const BASE: u64 = 0x1000_0000;

const SOURCE: &str = r#"
__attribute__((noinline)) int alpha(int x) { return x * 3 + 1; }
__attribute__((noinline)) int beta(int x) { return alpha(x) ^ 7; }
__attribute__((noinline)) static int gamma_local(int x) { return beta(x) + 2; }
__asm__(".text\n.globl asm_label\nasm_label:\n nop\n nop\n nop\n ret\n");
int main(int argc, char **argv) { (void)argv; return gamma_local(argc); }
"#;

/// A C program compiled into a fresh temporary directory, removed on drop.
struct Fixture {
    dir: PathBuf,
    binary: PathBuf,
    /// Symbol addresses as `nm` reports them.
    nm: HashMap<String, u64>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Fixture {
    /// Builds the fixture, or `None` (the test is skipped) when `cc` or `nm` is missing.
    fn build() -> Option<Fixture> {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("profiler-elf-test-{}-{n}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let source = dir.join("prog.c");
        let binary = dir.join("prog");
        fs::write(&source, SOURCE).unwrap();
        let status = Command::new("cc")
            .args(["-O0", "-no-pie", "-rdynamic", "-o"])
            .arg(&binary)
            .arg(&source)
            .arg(format!("-Wl,-Ttext-segment={BASE:#x}"))
            .arg("-Wl,--build-id=0x0123456789abcdef")
            .status();
        let mut fixture = Fixture {
            dir,
            binary,
            nm: HashMap::new(),
        };
        if !matches!(status, Ok(s) if s.success()) {
            crate::testing::skip("symbolize::elf_tests", "cannot build the C fixture with cc");
            return None;
        }
        let Ok(output) = Command::new("nm").arg(&fixture.binary).output() else {
            crate::testing::skip("symbolize::elf_tests", "cannot run nm");
            return None;
        };
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let mut fields = line.split_whitespace();
            if let (Some(addr), Some(_), Some(name)) = (fields.next(), fields.next(), fields.next())
            {
                if let Ok(addr) = u64::from_str_radix(addr, 16) {
                    fixture.nm.insert(name.to_owned(), addr);
                }
            }
        }
        Some(fixture)
    }

    fn addr(&self, name: &str) -> u64 {
        self.nm[name]
    }
}

#[test]
fn finds_functions_by_file_offset() {
    let Some(fx) = Fixture::build() else { return };
    let elf = ElfSymbols::open(&fx.binary).unwrap();
    assert!(elf.has_symtab());
    for name in ["alpha", "beta", "gamma_local", "main"] {
        let vaddr = fx.addr(name);
        assert_eq!(elf.lookup_vaddr(vaddr), Some((name, 0)));
        // With the first segment at file offset 0, file offset = vaddr - BASE.
        assert_eq!(elf.file_offset_to_vaddr(vaddr - BASE), Some(vaddr));
        assert_eq!(elf.lookup_file_offset(vaddr - BASE + 3), Some((name, 3)));
    }
}

#[test]
fn labels_in_text_extend_to_the_next_symbol() {
    let Some(fx) = Fixture::build() else { return };
    let elf = ElfSymbols::open(&fx.binary).unwrap();
    let label = fx.addr("asm_label");
    assert_eq!(elf.lookup_vaddr(label + 2), Some(("asm_label", 2)));
}

#[test]
fn build_id_is_lowercase_hex() {
    let Some(fx) = Fixture::build() else { return };
    let elf = ElfSymbols::open(&fx.binary).unwrap();
    assert_eq!(elf.build_id(), Some("0123456789abcdef"));
}

#[test]
fn segments_are_recorded() {
    let Some(fx) = Fixture::build() else { return };
    let elf = ElfSymbols::open(&fx.binary).unwrap();
    let exec: Vec<_> = elf.segments().iter().filter(|s| s.executable).collect();
    assert_eq!(exec.len(), 1, "{:?}", elf.segments());
    let text = exec[0];
    assert!(text.vaddr >= BASE && text.mem_size >= text.file_size);
    assert!(text.vaddr_of(text.offset).is_some());
    assert_eq!(elf.file_offset_to_vaddr(u64::MAX), None);
}

#[test]
fn stripped_file_falls_back_to_dynsym() {
    let Some(fx) = Fixture::build() else { return };
    let stripped = fx.dir.join("prog.stripped");
    let ok = Command::new("strip")
        .arg("-o")
        .arg(&stripped)
        .arg(&fx.binary)
        .status();
    if !matches!(ok, Ok(s) if s.success()) {
        return crate::testing::skip("stripped_file_falls_back_to_dynsym", "strip failed");
    }
    let elf = ElfSymbols::open(&stripped).unwrap();
    assert!(!elf.has_symtab());
    // Exported through -rdynamic:
    assert_eq!(elf.lookup_vaddr(fx.addr("alpha") + 1), Some(("alpha", 1)));
    // A static function is gone with .symtab; the sized function before it must not claim it.
    assert_eq!(elf.lookup_vaddr(fx.addr("gamma_local")), None);
    assert_eq!(elf.build_id(), Some("0123456789abcdef"));
}

#[inline(never)]
fn symbolize_self_marker(x: u64) -> u64 {
    std::hint::black_box(x.wrapping_mul(31))
}

/// Symbolizes one of this test binary's own functions the way the profiler will: runtime address
/// → mapping in /proc/self/maps → file offset → symbol.
#[test]
fn symbolizes_own_function_through_proc_maps() {
    symbolize_self_marker(1);
    let addr = symbolize_self_marker as *const () as usize as u64;
    let maps = fs::read_to_string("/proc/self/maps").unwrap();
    let (offset, path) = maps
        .lines()
        .find_map(|line| {
            let mut fields = line.split_whitespace();
            let (range, _perms, offset) = (fields.next()?, fields.next()?, fields.next()?);
            let path = fields.nth(2)?;
            let (start, end) = range.split_once('-')?;
            let start = u64::from_str_radix(start, 16).ok()?;
            let end = u64::from_str_radix(end, 16).ok()?;
            let offset = u64::from_str_radix(offset, 16).ok()?;
            (start <= addr && addr < end).then(|| (addr - start + offset, PathBuf::from(path)))
        })
        .unwrap();
    let elf = ElfSymbols::open(&path).unwrap();
    let (name, off) = elf.lookup_file_offset(offset).unwrap();
    assert_eq!(off, 0);
    assert!(
        super::super::demangle::demangle(name).ends_with("symbolize_self_marker"),
        "{name}"
    );
}

#[test]
fn offset_translation_prefers_code() {
    let segments = [
        LoadSegment {
            offset: 0,
            vaddr: 0x40_0000,
            file_size: 0x800,
            mem_size: 0x800,
            executable: false,
        },
        LoadSegment {
            offset: 0x1000,
            vaddr: 0x40_1000,
            file_size: 0x500,
            mem_size: 0x500,
            executable: true,
        },
        LoadSegment {
            offset: 0x1400,
            vaddr: 0x60_2400,
            file_size: 0x200,
            mem_size: 0x4000,
            executable: false,
        },
    ];
    assert_eq!(file_offset_to_vaddr(&segments, 0x10), Some(0x40_0010));
    assert_eq!(file_offset_to_vaddr(&segments, 0x1234), Some(0x40_1234));
    // Covered by both the code and the data segment: code wins.
    assert_eq!(file_offset_to_vaddr(&segments, 0x1450), Some(0x40_1450));
    assert_eq!(file_offset_to_vaddr(&segments, 0x1550), Some(0x60_2550));
    // Between segments, and in the zero-filled part of the last one.
    assert_eq!(file_offset_to_vaddr(&segments, 0x900), None);
    assert_eq!(file_offset_to_vaddr(&segments, 0x1600), None);
    assert_eq!(file_offset_to_vaddr(&[], 0), None);
    let overflow = LoadSegment {
        offset: 0,
        vaddr: u64::MAX,
        file_size: 16,
        mem_size: 16,
        executable: true,
    };
    assert_eq!(file_offset_to_vaddr(&[overflow], 8), None);
}

/// An ELF32 little-endian header with one executable `PT_LOAD` segment and no sections.
fn elf32_image() -> Vec<u8> {
    let mut image = vec![0x7f, b'E', b'L', b'F', 1, 1, 1];
    image.resize(16, 0);
    for half in [2u16, 3] {
        image.extend_from_slice(&half.to_le_bytes()); // e_type = EXEC, e_machine = 386
    }
    for word in [1u32, 0x0804_9000, 52, 0, 0] {
        image.extend_from_slice(&word.to_le_bytes()); // version, entry, phoff, shoff, flags
    }
    for half in [52u16, 32, 1, 40, 0, 0] {
        image.extend_from_slice(&half.to_le_bytes()); // ehsize, phentsize, phnum, shentsize..
    }
    for word in [
        1u32,
        0x1000,
        0x0804_9000,
        0x0804_9000,
        0x100,
        0x100,
        5,
        0x1000,
    ] {
        image.extend_from_slice(&word.to_le_bytes()); // the PT_LOAD program header
    }
    image
}

#[test]
fn elf32_is_supported() {
    let image = elf32_image();
    let elf = ElfSymbols::parse(&image, Path::new("elf32")).unwrap();
    assert!(elf.is_empty());
    assert_eq!(elf.file_offset_to_vaddr(0x1010), Some(0x0804_9010));
    assert_eq!(elf.lookup_file_offset(0x1010), None);
    for len in 0..image.len() {
        let _ = ElfSymbols::parse(&image[..len], Path::new("elf32"));
    }
}

#[test]
fn non_elf_input_is_an_error() {
    let path = Path::new("x");
    assert!(matches!(
        ElfSymbols::parse(b"", path),
        Err(SymbolizeError::NotElf { .. })
    ));
    assert!(matches!(
        ElfSymbols::parse(b"#!/bin/sh\n", path),
        Err(SymbolizeError::NotElf { .. })
    ));
    let err = ElfSymbols::parse(b"\x7fELF", path).unwrap_err();
    assert!(matches!(err, SymbolizeError::CorruptElf { .. }), "{err}");
    let err = ElfSymbols::open(Path::new("/nonexistent/lib.so")).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/lib.so"), "{err}");
    assert!(matches!(
        ElfSymbols::open(Path::new("/")),
        Err(SymbolizeError::NotElf { .. })
    ));
    assert!(matches!(
        ElfSymbols::open(Path::new("/proc/self/status")),
        Err(SymbolizeError::NotElf { .. })
    ));
}

/// A small deterministic generator, so failures reproduce.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Parses and, if that succeeds, exercises lookups; only a panic fails the test.
fn poke(data: &[u8]) {
    if let Ok(elf) = ElfSymbols::parse(data, Path::new("fuzz")) {
        for offset in (0..data.len() as u64 + 64).step_by(61) {
            let _ = elf.lookup_file_offset(offset);
        }
        let _ = elf.lookup_vaddr(u64::MAX);
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for round in 0..400 {
        let len = (rng.next() % 4096) as usize;
        let mut data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if round % 2 == 0 && len >= 6 {
            // Make half of them look like ELF so the header parser runs.
            data[..6].copy_from_slice(&[0x7f, b'E', b'L', b'F', 1 + (round % 4 == 0) as u8, 1]);
        }
        poke(&data);
    }
}

#[test]
fn truncated_and_damaged_elf_never_panics() {
    let Some(fx) = Fixture::build() else { return };
    let image = fs::read(&fx.binary).unwrap();
    for len in (0..256).chain((256..image.len()).step_by(97)) {
        poke(&image[..len]);
    }
    // Truncation that loses the section headers (they are at the end) is reported.
    let err = ElfSymbols::parse(&image[..image.len() / 2], Path::new("half")).unwrap_err();
    assert!(matches!(err, SymbolizeError::CorruptElf { .. }), "{err}");
    let mut rng = XorShift(42);
    for _ in 0..600 {
        let mut damaged = image.clone();
        for _ in 0..1 + rng.next() % 4 {
            // Mostly the headers and tables, where a bad value steers the parser.
            let at = match rng.next() % 3 {
                0 => rng.next() as usize % 64,
                1 => image.len() - 1 - rng.next() as usize % 2048.min(image.len()),
                _ => rng.next() as usize % image.len(),
            };
            damaged[at] = rng.next() as u8;
        }
        poke(&damaged);
    }
}
