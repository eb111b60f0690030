//! Why a symbol source could not be used.
//!
//! This module owns [`SymbolizeError`]. An address that simply has no symbol is not an error (the
//! lookups return `None` and the frame falls back to `module+0xOFFSET`); these errors say why a
//! whole source (an ELF file, `/proc/kallsyms`) is unusable, in words a user can act on.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// A symbol source (file or kernel symbol list) that could not be read or indexed.
#[derive(Debug)]
pub enum SymbolizeError {
    /// Opening, statting, mapping or reading the file failed.
    Io { path: PathBuf, source: io::Error },
    /// The file is readable but is not an ELF file (or not a regular file).
    NotElf { path: PathBuf },
    /// The file starts like ELF but its headers or tables are malformed or truncated.
    CorruptElf { path: PathBuf, reason: String },
    /// The file at this path is not the one the process mapped (different inode).
    FileReplaced {
        path: PathBuf,
        expected_inode: u64,
        found_inode: u64,
    },
    /// `/proc/kallsyms` lists symbols, but every address reads as zero.
    KernelAddressesHidden { path: PathBuf },
    /// `/proc/kallsyms` (or the given file) lists no kernel text symbol at all.
    NoKernelSymbols { path: PathBuf },
}

impl fmt::Display for SymbolizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { path, source } => write!(f, "cannot read {}: {source}", path.display()),
            Self::NotElf { path } => write!(f, "{} is not an ELF file", path.display()),
            Self::CorruptElf { path, reason } => {
                write!(f, "{} is a malformed ELF file: {reason}", path.display())
            }
            Self::FileReplaced {
                path,
                expected_inode,
                found_inode,
            } => write!(
                f,
                "{} is not the mapped file (inode {found_inode}, expected {expected_inode}): \
                 it was replaced after the process mapped it",
                path.display()
            ),
            Self::KernelAddressesHidden { path } => write!(
                f,
                "{}: kernel addresses are hidden (all read as 0, see sysctl kernel.kptr_restrict); \
                 run as root or with CAP_SYSLOG to symbolize kernel frames",
                path.display()
            ),
            Self::NoKernelSymbols { path } => {
                write!(f, "{} lists no kernel text symbols", path.display())
            }
        }
    }
}

impl std::error::Error for SymbolizeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
