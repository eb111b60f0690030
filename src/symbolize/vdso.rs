//! The vDSO's symbols, read from this process's own copy.
//!
//! This module owns finding `[vdso]` in `/proc/self/maps` and reading its image through
//! `/proc/self/mem` (no `unsafe`, no raw pointers). Every 64-bit process of one kernel maps the
//! same vDSO image at file offset 0, so its symbols serve all of them; 32-bit processes have a
//! different vDSO, which this does not read.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::elf::ElfSymbols;
use super::error::SymbolizeError;

/// The pseudo-path of the vDSO in `/proc/PID/maps`.
pub const VDSO_PATH: &str = "[vdso]";

/// The largest vDSO image this will read; real ones are a few pages.
const MAX_VDSO_SIZE: u64 = 1 << 20;

/// Indexes this process's vDSO.
pub fn own_vdso() -> Result<ElfSymbols, SymbolizeError> {
    let image = own_vdso_image().map_err(io_error(Path::new("/proc/self/mem")))?;
    ElfSymbols::parse(&image, Path::new(VDSO_PATH))
}

/// The bytes of this process's vDSO image (an ELF file; also what its unwind table is built
/// from).
pub fn own_vdso_image() -> io::Result<Vec<u8>> {
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    let (start, end) = vdso_range(&maps)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no [vdso] mapping"))?;
    let len = end.saturating_sub(start).min(MAX_VDSO_SIZE);
    let mem = File::open("/proc/self/mem")?;
    // SANITY: `len` is at most MAX_VDSO_SIZE, which fits in usize.
    let mut image = vec![0; len as usize];
    mem.read_exact_at(&mut image, start)?;
    Ok(image)
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> SymbolizeError + '_ {
    move |source| SymbolizeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The address range of the `[vdso]` line of a maps file.
fn vdso_range(maps: &str) -> Option<(u64, u64)> {
    let line = maps
        .lines()
        .find(|l| l.split_ascii_whitespace().nth(5) == Some(VDSO_PATH))?;
    let (start, end) = line.split_ascii_whitespace().next()?.split_once('-')?;
    let start = u64::from_str_radix(start, 16).ok()?;
    let end = u64::from_str_radix(end, 16).ok()?;
    (start < end).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_vdso_line() {
        let maps = "\
7ffd1000-7ffd2000 rw-p 00000000 00:00 0                          [stack]
7ffd3000-7ffd5000 r-xp 00000000 00:00 0                          [vdso]
";
        assert_eq!(vdso_range(maps), Some((0x7ffd3000, 0x7ffd5000)));
        assert_eq!(
            vdso_range("7ffd1000-7ffd2000 rw-p 00000000 00:00 0 [stack]\n"),
            None
        );
        assert_eq!(
            vdso_range("zz-7ffd5000 r-xp 00000000 00:00 0 [vdso]\n"),
            None
        );
    }

    #[test]
    fn reads_own_vdso() {
        let vdso = match own_vdso() {
            Ok(vdso) => vdso,
            Err(err) => return eprintln!("skipped: {err}"),
        };
        assert!(!vdso.is_empty());
        // The image starts at file offset 0, so its text holds a clock function.
        let text = vdso.segments().iter().find(|s| s.executable).unwrap();
        let names: Vec<&str> = (text.offset..text.offset + text.file_size)
            .filter_map(|off| vdso.lookup_file_offset(off).map(|(name, _)| name))
            .collect();
        assert!(
            names.iter().any(|n| n.contains("clock_gettime")),
            "{names:?}"
        );
    }
}
