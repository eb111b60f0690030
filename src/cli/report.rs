//! `profiler report`: reads recorded profiles (folded, pprof or OTLP; several are merged),
//! keeps the processes and time asked for, and prints the top functions or writes the result
//! as folded stacks, pprof, OTLP or a flame graph.

use std::path::PathBuf;

use argh::FromArgs;

use super::{exit, Fatal};
use crate::encode::{write_profile, OutputFormat};
use crate::output_file::PendingFile;
use crate::profile::Profile;
use crate::report::{self, Selection};
use crate::summary::{format_top, top_functions_by};

#[derive(FromArgs, Debug)]
/// Read recorded profiles (folded, pprof or OTLP; several are merged) and print the top
/// functions, or write them in another format (-o).
#[argh(subcommand, name = "report")]
pub struct ReportArgs {
    /// keep only processes with this thread or executable name (repeatable)
    #[argh(option)]
    pub comm: Vec<String>,

    /// keep only this process (repeatable; pprof and OTLP files)
    #[argh(option, short = 'p')]
    pub pid: Vec<u32>,

    /// keep only profiles that end at or after this time: Unix seconds or
    /// YYYY-MM-DDTHH:MM:SSZ (pprof and OTLP files)
    #[argh(option, from_str_fn(parse_time))]
    pub since: Option<u64>,

    /// keep only profiles that start at or before this time (same forms as --since)
    #[argh(option, from_str_fn(parse_time))]
    pub until: Option<u64>,

    /// how many functions each table shows (default 20)
    #[argh(option, short = 'n', default = "20")]
    pub top: usize,

    /// write the merged profile to this file instead of printing the tables; the format
    /// follows the extension (.folded, .pb.gz, .otlp, .svg)
    #[argh(option, short = 'o')]
    pub output: Option<PathBuf>,

    /// output format: folded, pprof, otlp or svg (default: from the output file's extension)
    #[argh(option, from_str_fn(parse_format))]
    pub format: Option<OutputFormat>,

    /// the profiles to read
    #[argh(positional)]
    pub files: Vec<PathBuf>,
}

pub(super) fn parse_format(value: &str) -> Result<OutputFormat, String> {
    OutputFormat::from_name(value).ok_or_else(|| {
        format!("unknown format {value:?}: expected one of folded, pprof, otlp, svg")
    })
}

/// Unix seconds (decimals allowed) or `YYYY-MM-DDTHH:MM:SSZ`, as Unix nanoseconds.
fn parse_time(value: &str) -> Result<u64, String> {
    let bad = || format!("invalid time {value:?}: expected Unix seconds or YYYY-MM-DDTHH:MM:SSZ");
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && (0.0..1e10).contains(&secs))
            .then_some((secs * 1e9) as u64)
            .ok_or_else(bad);
    }
    let digits = |range: std::ops::Range<usize>| -> Result<i64, String> {
        let part = value.get(range).ok_or_else(bad)?;
        if !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        part.parse().map_err(|_| bad())
    };
    let shape = value.len() == 20
        && value.as_bytes().iter().enumerate().all(|(i, &b)| match i {
            4 | 7 => b == b'-',
            10 => b == b'T',
            13 | 16 => b == b':',
            19 => b == b'Z',
            _ => b.is_ascii_digit(),
        });
    if !shape {
        return Err(bad());
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err(bad());
    }
    // Howard Hinnant's days_from_civil.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second;
    u64::try_from(secs)
        .map(|s| s * 1_000_000_000)
        .map_err(|_| bad())
}

/// Writes `profile` to `path` (atomically) in `format`, or the format of its extension.
pub(super) fn write_to(
    path: &std::path::Path,
    format: Option<OutputFormat>,
    write: impl FnOnce(OutputFormat, &mut dyn std::io::Write) -> std::io::Result<()>,
) -> Result<(), Fatal> {
    let format = format
        .or_else(|| OutputFormat::from_path(path))
        .ok_or_else(|| {
            Fatal::usage(format!(
                "cannot tell the format of {} from its extension: use --format or an extension \
             .folded, .pb.gz, .otlp, .svg",
                path.display()
            ))
        })?;
    let file = PendingFile::create(path)
        .map_err(|e| Fatal::usage(format!("cannot write {}: {e}", path.display())))?;
    file.commit(|w| write(format, w))
        .map_err(|e| Fatal::failure(format!("cannot write {}: {e}", path.display())))
}

/// The two top tables (by self and by total samples), functions told apart by name alone, so
/// every format (folded keeps no modules) prints the same table for the same recording.
pub fn top_tables(profile: &Profile, n: usize) -> String {
    let total = profile.total_samples();
    let (by_self, by_total) = top_functions_by(profile, n, |f| f.function.to_string());
    format_top("Top functions by self samples:", &by_self, total)
        + &format_top("Top functions by total samples:", &by_total, total)
}

pub fn run(args: ReportArgs) -> Result<i32, Fatal> {
    if args.files.is_empty() {
        return Err(Fatal::usage("no profile given: profiler report FILE..."));
    }
    let selection = Selection {
        comms: args.comm,
        pids: args.pid,
        since: args.since,
        until: args.until,
    };
    let profile = report::load(&args.files, &selection).map_err(Fatal::failure)?;
    let processes: std::collections::HashSet<u32> = profile.samples.iter().map(|s| s.pid).collect();
    eprintln!(
        "profiler: {} file(s): {} samples, {} distinct stacks, {} processes",
        args.files.len(),
        profile.total_samples(),
        profile.samples.len(),
        processes.len()
    );
    match &args.output {
        Some(path) => {
            write_to(path, args.format, |format, w| {
                write_profile(format, &profile, w)
            })?;
            eprintln!("profiler: wrote {}", path.display());
        }
        None => print!("{}", top_tables(&profile, args.top)),
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_time("1.5"), Ok(1_500_000_000));
        assert_eq!(parse_time("1970-01-01T00:00:10Z"), Ok(10_000_000_000));
        assert_eq!(
            parse_time("2026-12-03T18:00:00Z"),
            Ok(1_796_320_800 * 1_000_000_000)
        );
        for bad in [
            "",
            "-1",
            "2026-13-01T00:00:00Z",
            "2026-12-03 18:00:00",
            "yesterday",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }
}
