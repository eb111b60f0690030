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

#[cfg(test)]
mod tests {
    #[test]
    fn maps_a_file_read_only() {
        let file = std::fs::File::open("/proc/self/exe").unwrap();
        let map = super::map_readonly(&file).unwrap();
        assert_eq!(&map[..4], b"\x7fELF");
    }
}
