//! Separate debug files: the file holding the `.debug_frame` a binary built without
//! `.eh_frame` left out, found by build ID under the debug roots, then by `.gnu_debuglink`, and
//! mapped. The one part of extraction that looks at the file system besides the file itself.
//! Symbolization (`crate::symbolize`) finds the debug file holding a binary's DWARF lines here
//! too, so both follow one search order and one staleness check.

use std::fmt::Write as _;
use std::fs::File;
use std::path::{Path, PathBuf};

use crate::elf::ElfImage;
use crate::sys::mmap::Mmap;

/// Where the separate debug files live (`<root>/.build-id/xx/yyyy.debug`, `<root>/<dir>/name`).
pub(crate) const DEBUG_ROOT: &str = "/usr/lib/debug";

/// A separate debug file, mapped.
pub(crate) struct DebugFile {
    pub path: PathBuf,
    pub map: Mmap,
}

/// Finds the separate debug file of the ELF file at `path`: by build ID under each root, then by
/// `.gnu_debuglink` next to the file, in its `.debug/` subdirectory and under each root. A
/// candidate must carry the same build ID (or, when the file has none, match the debuglink's
/// CRC-32), so a stale debug file is never used.
pub(crate) fn find_debug_file(
    path: &Path,
    image: &mut ElfImage<'_>,
    roots: &[PathBuf],
) -> Option<DebugFile> {
    let build_id = image.build_id();
    let mut candidates = Vec::new();
    if let Some(id) = build_id.filter(|id| id.len() >= 2) {
        let hex = hex(id);
        for root in roots {
            candidates.push(root.join(format!(".build-id/{}/{}.debug", &hex[..2], &hex[2..])));
        }
    }
    let link = image.debuglink();
    if let Some((name, _)) = link {
        let name = Path::new(std::str::from_utf8(name).ok()?);
        let dir = path.parent().unwrap_or(Path::new("/"));
        candidates.push(dir.join(name));
        candidates.push(dir.join(".debug").join(name));
        let relative = dir.strip_prefix("/").unwrap_or(dir);
        for root in roots {
            candidates.push(root.join(relative).join(name));
        }
    }
    let own = std::fs::canonicalize(path).ok();
    candidates.into_iter().find_map(|candidate| {
        if std::fs::canonicalize(&candidate).ok() == own {
            return None;
        }
        let map = map_file(&candidate).ok()?;
        let matches = match (build_id, link) {
            (Some(id), _) => ElfImage::parse(&map).ok()?.build_id() == Some(id),
            (None, Some((_, crc))) => crc32fast::hash(&map) == crc,
            (None, None) => false,
        };
        matches.then_some(DebugFile {
            path: candidate,
            map,
        })
    })
}

/// Maps a file read-only.
pub(crate) fn map_file(path: &Path) -> std::io::Result<Mmap> {
    crate::sys::mmap::map_readonly(&File::open(path)?)
}

/// Lowercase hex of bytes.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn debuglink_crc_is_the_ieee_crc32() {
        // What .gnu_debuglink stores (objcopy's CRC-32): the IEEE check value.
        assert_eq!(crc32fast::hash(b"123456789"), 0xcbf4_3926);
    }
}
