//! Output files readers never see half-written, for `record` and the daemon: each is written
//! to `.NAME.PID.tmp` beside its target, synced, then renamed over the target. A temporary
//! file that a killed run left behind (its PID no longer exists) is removed by the next run
//! that writes the same target, or, for names that change with every file, by a sweep of the
//! directory at start ([`remove_stale_in`]).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// A file being written; dropped without `commit`, it leaves nothing behind.
pub struct PendingFile {
    target: PathBuf,
    temp: PathBuf,
    file: Option<File>,
}

/// `NAME` of a target path.
fn name_of(target: &Path) -> String {
    target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Removes the temporary files of `target` whose writer's PID is gone.
fn remove_stale(target: &Path) {
    let name = name_of(target);
    let dir = match target.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    remove_stale_where(dir, |target_name| target_name == name);
}

/// Removes the temporary files in `dir` of targets whose name starts with `prefix` (a run that
/// writes a new name each time, like the daemon's window files) whose writer's PID is gone;
/// returns how many.
pub fn remove_stale_in(dir: &Path, prefix: &str) -> usize {
    remove_stale_where(dir, |target_name| target_name.starts_with(prefix))
}

fn remove_stale_where(dir: &Path, is_ours: impl Fn(&str) -> bool) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        // `.NAME.PID.tmp`
        let parsed = file_name
            .strip_prefix('.')
            .and_then(|rest| rest.strip_suffix(".tmp"))
            .and_then(|rest| rest.rsplit_once('.'))
            .and_then(|(name, pid)| Some((name, pid.parse::<u32>().ok()?)));
        let Some((name, pid)) = parsed else {
            continue;
        };
        if is_ours(name)
            && pid != std::process::id()
            && !crate::sys::process::exists(pid)
            && std::fs::remove_file(entry.path()).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

impl PendingFile {
    /// Creates the temporary file for `target` (after removing stale ones).
    pub fn create(target: &Path) -> io::Result<Self> {
        if target.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                "is a directory",
            ));
        }
        remove_stale(target);
        let temp =
            target.with_file_name(format!(".{}.{}.tmp", name_of(target), std::process::id()));
        let file = File::create(&temp)?;
        Ok(Self {
            target: target.to_path_buf(),
            temp,
            file: Some(file),
        })
    }

    /// Writes the content, syncs it and renames it over the target.
    pub fn commit(
        mut self,
        write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> io::Result<()> {
        let file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("already written"))?;
        let written = (|| {
            let mut out = BufWriter::new(file);
            write(&mut out)?;
            out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            std::fs::rename(&self.temp, &self.target)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&self.temp);
        }
        written
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// Writes `bytes` to `path` through a [`PendingFile`].
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    PendingFile::create(path)?.commit(|out| out.write_all(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("profiler-out-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn commits_by_rename_and_leaves_nothing_when_dropped() {
        let dir = scratch("commit");
        let target = dir.join("p.folded");
        let pending = PendingFile::create(&target).unwrap();
        assert_eq!(
            entries(&dir),
            vec![format!(".p.folded.{}.tmp", std::process::id())]
        );
        pending.commit(|out| out.write_all(b"a;b 1\n")).unwrap();
        assert_eq!(entries(&dir), vec!["p.folded"]);
        assert_eq!(std::fs::read(&target).unwrap(), b"a;b 1\n");
        drop(PendingFile::create(&target).unwrap());
        assert_eq!(
            entries(&dir),
            vec!["p.folded"],
            "an abandoned write leaves no file"
        );
        write_atomically(&target, b"x").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"x");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_killed_runs_temporary_file_is_removed_by_the_next_run() {
        let dir = scratch("stale");
        let target = dir.join("p.pb.gz");
        // PID 4194304 is above the kernel's maximum (pid_max <= 2^22): never running. PID 1
        // always runs. Another target's leftovers are not ours to remove.
        for name in [
            ".p.pb.gz.4194304.tmp",
            ".p.pb.gz.1.tmp",
            ".q.pb.gz.4194304.tmp",
        ] {
            std::fs::write(dir.join(name), b"partial").unwrap();
        }
        write_atomically(&target, b"ok").unwrap();
        assert_eq!(
            entries(&dir),
            vec![".p.pb.gz.1.tmp", ".q.pb.gz.4194304.tmp", "p.pb.gz"]
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_sweep_removes_the_dead_writers_files_of_a_prefix() {
        let dir = scratch("sweep");
        let names = [
            ".profile-1.otlp.4194304.tmp",
            ".profile-2.otlp.1.tmp",
            ".other.otlp.4194304.tmp",
            "profile-3.otlp",
            ".profile-4.otlp.x.tmp",
        ];
        for name in names {
            std::fs::write(dir.join(name), b"partial").unwrap();
        }
        assert_eq!(remove_stale_in(&dir, "profile-"), 1);
        assert_eq!(entries(&dir), {
            let mut left = names[1..].to_vec();
            left.sort();
            left
        });
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_directory_is_refused() {
        let dir = scratch("dir");
        assert!(PendingFile::create(&dir).is_err());
        let _ = std::fs::remove_dir_all(dir);
    }
}
