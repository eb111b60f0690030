//! The on-disk cache of built unwind tables. Building a big file's table (librustc_driver,
//! libLLVM: 0.1-1 s) is repeated by every session, and a short process that runs in one (rustc
//! takes 0.3 s here) is over before its table exists: its walks are all finished later, in user
//! space, or cut. With the table on disk, a later session loads it in milliseconds.
//!
//! One file per table, named after its key and holding it in full: the file's device, inode,
//! size, modification and change times (a file replaced or rewritten in place gets a new entry),
//! then the table's buckets with a CRC-32. Anything that does not match (another key, another
//! format version, a wrong length or checksum) is ignored and rebuilt. Entries are written to a
//! temporary name and renamed, so a reader never sees half of one. The directory holds at most
//! `MAX_BYTES`: past that, the entries used least recently (by modification time, which a hit
//! refreshes) are removed. It must belong to the user running the profiler and be writable by
//! nobody else (it is created with mode 0700): a table decides which stack slots the unwinder
//! reads.
//!
//! Owns only the files under its directory; the extractor thread is its one user.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::unwind::compact::{Bucket, CompactStats, CompactTable, BUCKET_BYTES};

/// The environment variable naming the directory, or `off`.
pub const ENV: &str = "PROFILER_TABLE_CACHE";
/// Bytes the directory's entries may take at most.
pub const MAX_BYTES: u64 = 512 << 20;
const MAGIC: &[u8; 8] = b"PRFUNW\0\0";
/// Bumped whenever the entry or the bucket layout changes.
const VERSION: u32 = 1;
const HEADER_BYTES: usize = 8 + 4 + 4 + 5 * 8 + 8 + 4 + 4 + 4 + 4;

/// What identifies a file's contents without reading them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileKey {
    pub dev: u64,
    pub inode: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

impl FileKey {
    pub fn of(file: &File) -> io::Result<Self> {
        let m = file.metadata()?;
        let ns = |s: i64, n: i64| s.saturating_mul(1_000_000_000).saturating_add(n);
        Ok(Self {
            dev: m.dev(),
            inode: m.ino(),
            size: m.size(),
            mtime_ns: ns(m.mtime(), m.mtime_nsec()),
            ctime_ns: ns(m.ctime(), m.ctime_nsec()),
        })
    }

    fn words(&self) -> [u64; 5] {
        [
            self.dev,
            self.inode,
            self.size,
            self.mtime_ns as u64,
            self.ctime_ns as u64,
        ]
    }

    fn file_name(&self) -> String {
        let hash = crc32fast::hash(&self.words().map(u64::to_le_bytes).concat());
        format!("{:x}-{:x}-{hash:08x}.unw", self.dev, self.inode)
    }
}

/// The cache directory, checked.
#[derive(Clone, Debug)]
pub struct TableCache {
    dir: PathBuf,
    max_bytes: u64,
}

impl TableCache {
    /// The cache `PROFILER_TABLE_CACHE` names (`off` or empty: none), else
    /// `$XDG_CACHE_HOME/profiler/unwind` or `/var/cache/profiler/unwind`. `None`, with a
    /// warning, when the directory cannot be made or is not safe to use.
    pub fn from_env() -> Option<Self> {
        let dir = match std::env::var_os(ENV) {
            Some(v) if v.is_empty() || v == "off" => return None,
            Some(v) => PathBuf::from(v),
            None => match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
                Some(base) => PathBuf::from(base).join("profiler/unwind"),
                None => PathBuf::from("/var/cache/profiler/unwind"),
            },
        };
        match Self::open(&dir, MAX_BYTES) {
            Ok(cache) => Some(cache),
            Err(err) => {
                crate::log::warn(&format!(
                    "unwind tables are not cached ({ENV}={}): {err}",
                    dir.display()
                ));
                None
            }
        }
    }

    /// Opens (creating it, mode 0700) a cache directory that holds at most `max_bytes`.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<Self> {
        DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        let meta = fs::symlink_metadata(dir)?;
        let unsafe_dir = |why: &str| io::Error::new(io::ErrorKind::PermissionDenied, why);
        if !meta.is_dir() {
            return Err(unsafe_dir("not a directory"));
        }
        if meta.uid() != crate::sys::process::euid() {
            return Err(unsafe_dir("owned by another user"));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(unsafe_dir("writable by other users"));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            max_bytes,
        })
    }

    /// The table cached for `key`, if a valid entry holds it (a hit marks it used).
    pub fn load(&self, key: &FileKey) -> Option<CompactTable> {
        let path = self.dir.join(key.file_name());
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .ok()?;
        let len = file.metadata().ok()?.len();
        let table = decode(&mut io::BufReader::with_capacity(1 << 16, &file), len, key)?;
        let _ = file.set_modified(SystemTime::now());
        Some(table)
    }

    /// Stores `table` for `key`, then trims the directory to its bound. Errors are for the
    /// caller to count; nothing depends on the cache.
    pub fn store(&self, key: &FileKey, table: &CompactTable) -> io::Result<()> {
        if entry_len(table) > self.max_bytes {
            return Ok(()); // bigger than the whole cache
        }
        let name = key.file_name();
        let tmp = self.dir.join(format!(".{name}.{}", std::process::id()));
        let written = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .and_then(|f| write_entry(&mut io::BufWriter::with_capacity(1 << 16, f), key, table));
        if let Err(err) = written.and_then(|()| fs::rename(&tmp, self.dir.join(&name))) {
            let _ = fs::remove_file(&tmp);
            return Err(err);
        }
        self.trim();
        Ok(())
    }

    /// Removes the least recently used entries until the rest fit `max_bytes`.
    fn trim(&self) {
        let Ok(dir) = fs::read_dir(&self.dir) else {
            return;
        };
        let mut entries: Vec<(SystemTime, u64, PathBuf)> = dir
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".unw"))
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                Some((meta.modified().ok()?, meta.len(), e.path()))
            })
            .collect();
        let mut total: u64 = entries.iter().map(|e| e.1).sum();
        entries.sort();
        for (_, len, path) in entries {
            if total <= self.max_bytes {
                break;
            }
            if fs::remove_file(&path).is_ok() {
                total -= len;
            }
        }
    }
}

/// Bytes of the entry holding `table`.
fn entry_len(table: &CompactTable) -> u64 {
    (HEADER_BYTES + table.buckets().len() * BUCKET_BYTES) as u64
}

/// Writes the entry for `table` (the buckets are encoded twice, once for the checksum, rather
/// than held twice).
fn write_entry(out: &mut impl Write, key: &FileKey, table: &CompactTable) -> io::Result<()> {
    let buckets = table.buckets();
    let mut header = Vec::with_capacity(HEADER_BYTES);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&VERSION.to_le_bytes());
    header.extend_from_slice(&(BUCKET_BYTES as u32).to_le_bytes());
    for word in key.words() {
        header.extend_from_slice(&word.to_le_bytes());
    }
    header.extend_from_slice(&table.base().to_le_bytes());
    header.extend_from_slice(&table.direct_buckets().to_le_bytes());
    header.extend_from_slice(&(buckets.len() as u32).to_le_bytes());
    header.extend_from_slice(&(table.stats().rows as u32).to_le_bytes());
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header);
    for bucket in buckets {
        hasher.update(&bucket.to_bytes());
    }
    header.extend_from_slice(&hasher.finalize().to_le_bytes());
    debug_assert_eq!(header.len(), HEADER_BYTES);
    out.write_all(&header)?;
    for bucket in buckets {
        out.write_all(&bucket.to_bytes())?;
    }
    out.flush()
}

/// The table in an entry of `len` bytes read from `input`, if it is a valid entry for `key`.
/// Read bucket by bucket: a table is never held twice.
fn decode(input: &mut impl Read, len: u64, key: &FileKey) -> Option<CompactTable> {
    let mut header = [0u8; HEADER_BYTES];
    input.read_exact(&mut header).ok()?;
    let u32_at = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().unwrap());
    let u64_at = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().unwrap());
    if &header[..8] != MAGIC || u32_at(8) != VERSION || u32_at(12) as usize != BUCKET_BYTES {
        return None;
    }
    if (0..5).map(|i| u64_at(16 + 8 * i)).ne(key.words()) {
        return None;
    }
    let (base, direct, n, rows, crc) = (u64_at(56), u32_at(64), u32_at(68), u32_at(72), u32_at(76));
    if len != (HEADER_BYTES + n as usize * BUCKET_BYTES) as u64 || direct > n {
        return None;
    }
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header[..HEADER_BYTES - 4]);
    let mut buckets = Vec::with_capacity(n as usize);
    let mut bytes = [0u8; BUCKET_BYTES];
    for _ in 0..n {
        input.read_exact(&mut bytes).ok()?;
        hasher.update(&bytes);
        buckets.push(Bucket::from_bytes(&bytes));
    }
    if hasher.finalize() != crc {
        return None;
    }
    let stats = CompactStats {
        rows: rows as usize,
        ..CompactStats::default()
    };
    CompactTable::from_parts(base, direct, buckets, stats)
}

#[cfg(test)]
#[path = "cache_tests.rs"]
mod tests;
