//! The daemon's `--output-dir`: one OTLP `ProfilesData` file per window, written atomically,
//! with the oldest deleted beyond the size cap; temporary files a killed daemon left are
//! removed at start and on SIGHUP, when the directory is also created again if it was removed.

use std::path::{Path, PathBuf};

use crate::encode::otlp::{self, OtlpContext};
use crate::output_file::{remove_stale_in, write_atomically};
use crate::profile::Profile;
use crate::stats::Stats;

/// The start of every window file's name.
const PREFIX: &str = "profile-";

/// Writes windows into a directory and keeps it under a size cap.
pub struct OutputDir {
    pub dir: PathBuf,
    pub max_bytes: u64,
    pub sequence: u64,
}

/// (Re)opens `dir`: creates it if it is missing, checks that it is writable and removes the
/// temporary files of dead writers. Returns how many were removed.
pub fn open(dir: &Path) -> Result<usize, crate::cli::Fatal> {
    super::plan::check_writable_dir(dir)?;
    Ok(remove_stale_in(dir, PREFIX))
}

impl OutputDir {
    pub fn write(&mut self, profile: &Profile, ctx: &OtlpContext, stats: &Stats) {
        let stamp = crate::log::rfc3339(profile.start_unix_ns / 1_000_000_000).replace(':', "");
        self.sequence += 1;
        let path = self
            .dir
            .join(format!("{PREFIX}{stamp}-{:06}.otlp", self.sequence));
        let mut bytes = Vec::new();
        let written =
            otlp::write(profile, ctx, &mut bytes).and_then(|()| write_atomically(&path, &bytes));
        match written {
            Ok(()) => Stats::inc(&stats.output_files_written),
            Err(err) => {
                Stats::inc(&stats.output_files_failed);
                crate::log::warn(&format!("cannot write {}: {err}", path.display()));
            }
        }
        self.rotate(stats);
    }

    /// Deletes the oldest profile files while the directory is over its cap.
    pub fn rotate(&self, stats: &Stats) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut files: Vec<(String, u64)> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let is_ours = name.starts_with(PREFIX) && name.ends_with(".otlp");
                is_ours.then(|| (name, e.metadata().map(|m| m.len()).unwrap_or(0)))
            })
            .collect();
        files.sort();
        let mut total: u64 = files.iter().map(|(_, len)| len).sum();
        for (name, len) in files {
            if total <= self.max_bytes {
                break;
            }
            if std::fs::remove_file(self.dir.join(&name)).is_ok() {
                total -= len;
                Stats::inc(&stats.output_files_rotated);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_dir_rotation_keeps_the_newest_under_the_cap() {
        let dir = std::env::temp_dir().join(format!("profiler-rotate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..5 {
            std::fs::write(dir.join(format!("profile-{i}.otlp")), vec![0u8; 1000]).unwrap();
        }
        std::fs::write(dir.join("unrelated.txt"), vec![0u8; 5000]).unwrap();
        let stats = Stats::default();
        OutputDir {
            dir: dir.clone(),
            max_bytes: 2500,
            sequence: 0,
        }
        .rotate(&stats);
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            vec!["profile-3.otlp", "profile-4.otlp", "unrelated.txt"]
        );
        assert_eq!(Stats::get(&stats.output_files_rotated), 3);
        std::fs::remove_dir_all(&dir).unwrap();
        // Opening again creates it, and sweeps a dead writer's temporary file.
        assert_eq!(open(&dir).unwrap(), 0);
        std::fs::write(dir.join(".profile-x.otlp.4194304.tmp"), b"").unwrap();
        assert_eq!(open(&dir).unwrap(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
