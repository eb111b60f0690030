//! Reading profiles back: folded stacks, pprof (gzip-compressed or not) and OTLP `ProfilesData`
//! files turned into [`Profile`]s, merged, and filtered by process and time, for `profiler
//! report` and `profiler diff`.
//!
//! This module owns recognising a file's format and the readers (one per format, the inverse of
//! `crate::encode`'s writers); bad input is an error naming the file, never a panic. It imports
//! `profile`, `proto`, `process::filter` and `log` only.

pub mod folded;
pub mod otlp;
pub mod pprof;

use std::io::Read;
use std::path::Path;

use flate2::read::GzDecoder;

use crate::process::filter::ProcessFilter;
use std::sync::Arc;

use crate::profile::{Frame, FrameKind, Module, Profile, KERNEL_MODULE};

/// A file format `read` understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputFormat {
    Folded,
    Pprof,
    Otlp,
}

/// Reads and parses the profile in `path`, whatever its format.
pub fn read(path: &Path) -> Result<(InputFormat, Profile), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse(&bytes, &path.to_string_lossy()).map_err(|e| format!("{}: {e}", path.display()))
}

/// Parses a profile: gzip is pprof; text is folded stacks; otherwise the name says (`.otlp`)
/// or the protobuf's shape (an OTLP `ProfilesData` has a dictionary; a pprof a string table).
pub fn parse(bytes: &[u8], name: &str) -> Result<(InputFormat, Profile), String> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut raw = Vec::new();
        GzDecoder::new(bytes)
            .read_to_end(&mut raw)
            .map_err(|e| format!("not a valid gzip file: {e}"))?;
        return Ok((InputFormat::Pprof, pprof::parse(&raw)?));
    }
    if bytes.is_empty() {
        return Err("the file is empty".into());
    }
    let lower = name.to_ascii_lowercase();
    let binary_name = [".pb", ".pprof", ".otlp"]
        .iter()
        .any(|s| lower.ends_with(s));
    if let Ok(text) = std::str::from_utf8(bytes) {
        if !binary_name || text.lines().next().is_some_and(folded::looks_folded) {
            let profile = folded::parse(text)
                .map_err(|e| format!("not folded stacks, pprof or OTLP: {e}"))?;
            return Ok((InputFormat::Folded, profile));
        }
    }
    if lower.ends_with(".otlp") || (!lower.ends_with(".pb") && otlp::looks_otlp(bytes)) {
        return Ok((InputFormat::Otlp, otlp::parse(bytes)?));
    }
    match pprof::parse(bytes) {
        Ok(profile) => Ok((InputFormat::Pprof, profile)),
        // An OTLP file named like a pprof one.
        Err(_) if otlp::looks_otlp(bytes) => Ok((InputFormat::Otlp, otlp::parse(bytes)?)),
        Err(e) => Err(e),
    }
}

/// Reads every file in `paths`, keeps what `selection` selects, and merges the rest; says on
/// stderr what each file held.
pub fn load(paths: &[std::path::PathBuf], selection: &Selection) -> Result<Profile, String> {
    let mut profiles = Vec::with_capacity(paths.len());
    for path in paths {
        let (format, profile) = read(path)?;
        let read_samples = profile.total_samples();
        let profile = selection
            .apply(format, profile)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        crate::log::info(&format!(
            "read {} ({format:?}): {read_samples} samples, {} selected",
            path.display(),
            profile.total_samples()
        ));
        profiles.push(profile);
    }
    Ok(merge(profiles))
}

/// One profile holding every sample of `profiles`: from the earliest start to the latest end.
pub fn merge(profiles: Vec<Profile>) -> Profile {
    let start = profiles
        .iter()
        .filter(|p| p.start_unix_ns > 0)
        .map(|p| p.start_unix_ns)
        .min()
        .unwrap_or(0);
    let end = profiles
        .iter()
        .map(|p| p.start_unix_ns.saturating_add(p.duration_ns))
        .max()
        .unwrap_or(0);
    let mut merged = Profile {
        start_unix_ns: start,
        duration_ns: end.saturating_sub(start),
        period_ns: profiles
            .iter()
            .map(|p| p.period_ns)
            .find(|&p| p > 0)
            .unwrap_or(0),
        ..Profile::default()
    };
    for profile in profiles {
        merged.samples.extend(profile.samples);
        merged.executables.extend(profile.executables);
        merged.cgroups.extend(profile.cgroups);
    }
    merged
}

/// Which samples a report keeps.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// Thread or executable names (as the daemon's `--comm`).
    pub comms: Vec<String>,
    pub pids: Vec<u32>,
    /// Unix nanoseconds: profiles that end before `since` or start after `until` are left out.
    pub since: Option<u64>,
    pub until: Option<u64>,
}

impl Selection {
    /// Applies the selection to one file's profile. A time window on a format without times
    /// (folded), or a PID on a format without PIDs, is an error rather than a silent no-op.
    pub fn apply(&self, format: InputFormat, mut profile: Profile) -> Result<Profile, String> {
        if format == InputFormat::Folded {
            if self.since.is_some() || self.until.is_some() {
                return Err("folded stacks keep no time: --since/--until cannot apply".into());
            }
            if !self.pids.is_empty() {
                return Err("folded stacks keep no process IDs: --pid cannot apply".into());
            }
        }
        let end = profile.start_unix_ns.saturating_add(profile.duration_ns);
        let outside = self.since.is_some_and(|since| end < since)
            || self
                .until
                .is_some_and(|until| profile.start_unix_ns > until);
        if outside {
            profile.samples.clear();
        }
        let names = ProcessFilter {
            comms: self.comms.clone(),
            ..ProcessFilter::default()
        };
        let executables = profile.executables.clone();
        profile.samples.retain(|s| {
            (self.pids.is_empty() || self.pids.contains(&s.pid))
                && names.keeps(
                    &s.thread_name,
                    executables.get(&s.pid).map(String::as_str),
                    None,
                )
        });
        Ok(profile)
    }
}

/// The kind of a frame in a mapping of this file name.
fn kind_of(mapping: &str) -> FrameKind {
    if mapping == KERNEL_MODULE || mapping.starts_with("[kernel") {
        FrameKind::Kernel
    } else {
        FrameKind::Native
    }
}

/// The frames of one location: `names` innermost first (each but the last inlined into the
/// next), or, without names, one frame named as the symbolizer names frames it cannot resolve:
/// `FILE+0xOFFSET`, or `[unknown]` without a mapping.
fn location_frames(
    kind: FrameKind,
    module: Option<Arc<Module>>,
    address: u64,
    names: Vec<&str>,
) -> Vec<Frame> {
    if names.is_empty() {
        let name = match module.as_deref().map(|m| m.path.as_str()) {
            Some(path) if !path.is_empty() => {
                let file = path.rsplit('/').next().unwrap_or(path);
                format!("{file}+0x{address:x}")
            }
            _ => "[unknown]".to_owned(),
        };
        return vec![Frame::new(kind, name.into(), module, address)];
    }
    let last = names.len() - 1;
    names
        .into_iter()
        .enumerate()
        .map(|(i, name)| {
            let mut frame = Frame::new(kind, Arc::from(name), module.clone(), address);
            frame.inlined = i < last;
            frame
        })
        .collect()
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
