//! Read-only mappings of executable files (ELF parsing for unwind tables and symbols).

use std::fs::File;

pub use memmap2::Mmap;

/// Maps `file` read-only.
///
/// The mapping is only read. The risk is the file being truncated under us, which would turn
/// a read into SIGBUS; it is accepted because the files are executables and libraries that
/// package managers replace by rename (leaving the mapped inode intact) rather than rewrite in
/// place, and callers copy out what they keep within milliseconds.
pub fn map_readonly(file: &File) -> std::io::Result<Mmap> {
    // SAFETY: see above: the map is never written, and a concurrent truncation of an
    // executable is the accepted (SIGBUS) risk every ELF reader that maps files takes.
    unsafe { Mmap::map(file) }
}

/// Takes the pages of `map` read so far out of this process's resident set. They stay in the
/// page cache and come back on the next access, so this only frees memory: for a big file
/// (libLLVM's `.eh_frame` and symbol tables are tens of MB) the pages one pass touched do not
/// count in the profiler's RSS while the next pass runs.
pub fn release(map: &Mmap) {
    // SAFETY: `map` is a private read-only mapping of a file (`map_readonly`); DONTNEED on it
    // discards no data (there are no private modifications) and later reads fault the file's
    // pages back in. Nothing holds a reference that could observe a difference.
    let _ = unsafe { map.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
}

#[cfg(test)]
mod tests {
    #[test]
    fn maps_a_file_read_only() {
        let file = std::fs::File::open("/proc/self/exe").unwrap();
        let map = super::map_readonly(&file).unwrap();
        assert_eq!(&map[..4], b"\x7fELF");
        super::release(&map);
        assert_eq!(&map[..4], b"\x7fELF", "released pages read back the same");
    }
}
