//! Where the maintainer learns about processes: `/proc` (identity, maps, files) in production,
//! a scripted fake in tests.

use std::fs::File;
use std::os::unix::fs::MetadataExt;

use std::io;

use super::files::FileKey;
use super::maps::{parse_maps, Mapping};

/// Why `/proc` could not tell us about a process.
#[derive(Debug)]
pub enum ProcError {
    /// The process exited (ENOENT/ESRCH on its /proc files): normal under churn.
    Gone,
    /// `/proc/PID/maps` is not readable by us.
    Denied(io::Error),
    Other(io::Error),
}

impl std::fmt::Display for ProcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProcError::Gone => write!(f, "process exited"),
            ProcError::Denied(e) => write!(f, "permission denied: {e}"),
            ProcError::Other(e) => write!(f, "{e}"),
        }
    }
}

fn classify(err: io::Error) -> ProcError {
    match err.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ESRCH) => ProcError::Gone,
        Some(libc::EACCES) | Some(libc::EPERM) => ProcError::Denied(err),
        _ => ProcError::Other(err),
    }
}

/// Parses `/proc/PID/stat` into (comm, start_time). The comm is between the first `(` and the
/// last `)` and may itself contain spaces and parentheses.
pub fn parse_stat(stat: &str) -> Option<(String, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    // Fields after the comm start at field 3 (state); start_time is field 22.
    let start_time = stat
        .get(close + 1..)?
        .split_whitespace()
        .nth(22 - 3)?
        .parse()
        .ok()?;
    Some((comm, start_time))
}

/// Reads just the identity of a process: (comm, start_time).
pub fn read_identity(pid: u32) -> Result<(String, u64), ProcError> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(classify)?;
    parse_stat(&stat).ok_or_else(|| {
        ProcError::Other(io::Error::new(
            io::ErrorKind::InvalidData,
            "bad /proc/PID/stat",
        ))
    })
}

/// A process's identity: its PID is reused, its start time (with the PID) is not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub comm: String,
    /// In clock ticks since boot, as `/proc/PID/stat` shows it.
    pub start_time: u64,
}

/// Nanoseconds per `/proc` clock tick: USER_HZ, which is 100 on x86-64 whatever the kernel's
/// own HZ.
pub const NS_PER_TICK: u64 = 10_000_000;

impl Identity {
    /// Whether this is the process the sampler knows as starting at `start_ns` (its leader's
    /// `start_boottime`, which `/proc` shows rounded down to ticks).
    pub fn is(&self, start_ns: u64) -> bool {
        self.start_time == start_ns / NS_PER_TICK
    }
}

pub trait ProcSource {
    fn identity(&self, pid: u32) -> Result<Identity, ProcError>;
    /// The executable mappings, sorted by address.
    fn maps(&self, pid: u32) -> Result<Vec<Mapping>, ProcError>;
    /// Opens a mapping's file and identifies it; `None` when it cannot be opened.
    fn open(&self, pid: u32, mapping: &Mapping, path: &str) -> Option<(FileKey, File)>;
    /// Opens an executable by the absolute path exec named, if it is still the file with
    /// this (dev, inode).
    fn open_executed(&self, path: &str, dev: u64, inode: u64) -> Option<(FileKey, File)> {
        if !path.starts_with('/') {
            return None;
        }
        let file = File::open(path).ok()?;
        let meta = file.metadata().ok()?;
        if (meta.dev(), meta.ino()) != (dev, inode) {
            return None; // replaced since, or another mount namespace
        }
        let mtime_ns = meta.mtime() * 1_000_000_000 + meta.mtime_nsec();
        let key = FileKey {
            dev,
            inode,
            size: meta.size(),
            mtime_ns,
        };
        Some((key, file))
    }
    /// The process's executable, where readable.
    fn exe(&self, pid: u32) -> Option<String> {
        let path = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
        Some(
            path.to_string_lossy()
                .trim_end_matches(" (deleted)")
                .to_string(),
        )
    }
}

/// The real thing.
pub struct Procfs;

impl ProcSource for Procfs {
    fn identity(&self, pid: u32) -> Result<Identity, ProcError> {
        read_identity(pid).map(|(comm, start_time)| Identity { comm, start_time })
    }

    fn maps(&self, pid: u32) -> Result<Vec<Mapping>, ProcError> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/maps")).map_err(classify)?;
        Ok(parse_maps(&text).executable.iter().cloned().collect())
    }

    fn open(&self, pid: u32, mapping: &Mapping, path: &str) -> Option<(FileKey, File)> {
        let candidates = [
            format!(
                "/proc/{pid}/map_files/{:x}-{:x}",
                mapping.start, mapping.end
            ),
            format!("/proc/{pid}/root{path}"),
        ];
        candidates.iter().find_map(|candidate| {
            let file = File::open(candidate).ok()?;
            let meta = file.metadata().ok()?;
            if meta.ino() != mapping.inode {
                return None; // replaced since it was mapped
            }
            let mtime_ns = meta.mtime() * 1_000_000_000 + meta.mtime_nsec();
            let key = FileKey {
                dev: meta.dev(),
                inode: meta.ino(),
                size: meta.size(),
                mtime_ns,
            };
            Some((key, file))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_comm() {
        let stat =
            "1234 (a) b (c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 1 0 987654 1000 50";
        assert_eq!(parse_stat(stat), Some(("a) b (c)".to_string(), 987654)));
        assert_eq!(parse_stat("1 (x) S 1"), None);
        assert_eq!(parse_stat(""), None);
    }

    #[test]
    fn reads_itself_and_reports_a_missing_process_as_gone() {
        let procfs = Procfs;
        let me = std::process::id();
        assert!(procfs.identity(me).unwrap().start_time > 0);
        let maps = procfs.maps(me).unwrap();
        assert!(!maps.is_empty());
        let exe = maps
            .iter()
            .find(|m| m.name().is_some_and(|n| n.contains("profiler")))
            .unwrap();
        let path = exe.name().unwrap().to_string();
        let (key, _file) = procfs
            .open(me, exe, &path)
            .expect("opens its own executable");
        assert_eq!(key.inode, exe.inode);
        // PIDs are at most 2^22: this one cannot exist.
        assert!(matches!(
            procfs.identity(u32::MAX - 1),
            Err(ProcError::Gone)
        ));
        assert!(matches!(procfs.maps(u32::MAX - 1), Err(ProcError::Gone)));
    }
}
