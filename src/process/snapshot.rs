//! Reading what the profiler needs to know about one process from `/proc`: its identity
//! (PID + start time), name, executable and executable mappings.

use std::io;
use std::sync::Arc;

use super::maps::{parse_maps, ExecutableMappings};

/// One process as seen at one moment. Immutable and shared (`Arc`) once taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessSnapshot {
    pub pid: u32,
    /// Start time in clock ticks after boot (`/proc/PID/stat` field 22): with the PID, the
    /// process's identity, so a reused PID is never mistaken for the old process.
    pub start_time: u64,
    /// Samples taken at or after this monotonic time (ns) belong to this snapshot: 0 for the
    /// first one, the exec time after an exec, the previous owner's exit time after PID reuse.
    pub valid_from_ktime: u64,
    pub comm: String,
    /// `/proc/PID/exe`, when readable.
    pub exe: Option<String>,
    pub maps: ExecutableMappings,
    /// Lines of the maps file that did not parse.
    pub bad_map_lines: usize,
}

pub type SharedSnapshot = Arc<ProcessSnapshot>;

/// Why a snapshot could not be taken.
#[derive(Debug)]
pub enum SnapshotError {
    /// The process exited (ENOENT/ESRCH on its /proc files): normal under churn.
    Gone,
    /// `/proc/PID/maps` is not readable by us.
    Denied(io::Error),
    Other(io::Error),
}

impl std::fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SnapshotError::Gone => write!(f, "process exited"),
            SnapshotError::Denied(e) => write!(f, "permission denied: {e}"),
            SnapshotError::Other(e) => write!(f, "{e}"),
        }
    }
}

fn classify(err: io::Error) -> SnapshotError {
    match err.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ESRCH) => SnapshotError::Gone,
        Some(libc::EACCES) | Some(libc::EPERM) => SnapshotError::Denied(err),
        _ => SnapshotError::Other(err),
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
pub fn read_identity(pid: u32) -> Result<(String, u64), SnapshotError> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(classify)?;
    parse_stat(&stat).ok_or_else(|| {
        SnapshotError::Other(io::Error::new(
            io::ErrorKind::InvalidData,
            "bad /proc/PID/stat",
        ))
    })
}

/// Takes a snapshot of a live process.
pub fn read_snapshot(pid: u32, valid_from_ktime: u64) -> Result<ProcessSnapshot, SnapshotError> {
    let (comm, start_time) = read_identity(pid)?;
    let maps_text = std::fs::read_to_string(format!("/proc/{pid}/maps")).map_err(classify)?;
    // The process may have exited between the two reads and the PID been reused: the identity
    // must still be the same for the maps to be its maps.
    let (_, start_after) = read_identity(pid)?;
    if start_after != start_time {
        return Err(SnapshotError::Gone);
    }
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .map(|p| {
            p.to_string_lossy()
                .trim_end_matches(" (deleted)")
                .to_string()
        });
    let parsed = parse_maps(&maps_text);
    Ok(ProcessSnapshot {
        pid,
        start_time,
        valid_from_ktime,
        comm,
        exe,
        maps: parsed.executable,
        bad_map_lines: parsed.bad_lines,
    })
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
    fn snapshot_of_self_and_of_a_missing_process() {
        let me = std::process::id();
        let snap = read_snapshot(me, 0).unwrap();
        assert_eq!(snap.pid, me);
        assert!(snap.start_time > 0);
        assert!(!snap.maps.is_empty());
        assert!(snap.exe.is_some());
        // PIDs are at most 2^22: this one cannot exist.
        assert!(matches!(
            read_snapshot(u32::MAX - 1, 0),
            Err(SnapshotError::Gone)
        ));
    }
}
