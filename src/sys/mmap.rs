//! Read-only mappings of executable files (ELF parsing for unwind tables and symbols), and
//! [`SharedBytes`]: a mapping (or decompressed bytes) shared by the readers of long-lived
//! debug information.

use std::fs::File;
use std::ops::Deref;
use std::sync::Arc;

pub use memmap2::Mmap;

/// Maps `file` read-only.
///
/// The mapping is only read. The risk is the file being truncated under us, which would turn
/// a read into SIGBUS; it is accepted because the files are executables, libraries and their
/// debug files, which package managers replace by rename (leaving the mapped inode intact)
/// rather than rewrite in place. Symbol tables copy out what they keep within milliseconds;
/// DWARF readers keep their mapping (see [`SharedBytes`]) so lines are parsed lazily.
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

/// What [`SharedBytes`] points into.
#[derive(Debug)]
enum Backing {
    Map(Mmap),
    Owned(Vec<u8>),
}

/// Read-only bytes shared by reference count: a file mapping or an owned buffer (decompressed
/// sections). Cloning is cheap and every clone sees the same address, which is what lets gimli's
/// `EndianReader` keep sub-slices of it without copying.
#[derive(Clone, Debug)]
pub struct SharedBytes(Arc<Backing>);

impl SharedBytes {
    /// Shares a mapping.
    pub fn from_map(map: Mmap) -> Self {
        SharedBytes(Arc::new(Backing::Map(map)))
    }

    /// Shares an owned buffer.
    pub fn from_vec(bytes: Vec<u8>) -> Self {
        SharedBytes(Arc::new(Backing::Owned(bytes)))
    }
}

impl Deref for SharedBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &*self.0 {
            Backing::Map(map) => map,
            Backing::Owned(bytes) => bytes,
        }
    }
}

// SAFETY: `deref` returns bytes owned by the `Arc`'s heap allocation (a mapping that is never
// remapped, or a `Vec` that is never mutated after construction), so the address is the same
// for as long as any clone lives, whether `self` moves or not.
unsafe impl stable_deref_trait::StableDeref for SharedBytes {}
// SAFETY: clones share one `Arc`, hence one backing, hence the same address.
unsafe impl stable_deref_trait::CloneStableDeref for SharedBytes {}

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

    #[test]
    fn shared_bytes_clones_see_one_address() {
        let bytes = super::SharedBytes::from_vec(b"abc".to_vec());
        let clone = bytes.clone();
        assert_eq!(bytes.as_ptr(), clone.as_ptr());
        assert_eq!(&*clone, b"abc");
    }
}
