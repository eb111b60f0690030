//! Stacks as the unwinding tests read them: a `profiler record` session of a command at 199 Hz
//! with its folded lines and counters, the frames of a folded stack, and the counters that say
//! why walks ended.

use std::path::Path;

use super::Record;

/// Folded lines and `--stats-json` counters of one session.
pub type Recorded = (Vec<(String, u64)>, Vec<(String, f64)>);

/// `profiler record -F 199 -- CMD`, returning the folded lines and the counters. The command's
/// exit status must be one of `codes`.
pub fn record(dir: &Path, tag: &str, cmd: &[&str], codes: &[i32]) -> Recorded {
    let recorded = Record::new(dir, &format!("{tag}.folded"))
        .args(&["-F", "199"])
        .stats(&format!("{tag}.json"))
        .command(cmd)
        .run();
    let code = recorded.code().unwrap_or(-1);
    assert!(codes.contains(&code), "exit {code}: {}", recorded.log);
    (recorded.folded(), recorded.stats())
}

/// The frames of a folded stack, the thread name first.
pub fn frames(stack: &str) -> Vec<&str> {
    stack.split(';').collect()
}

/// The walk-ending counters that are not zero, and the process-map ones that explain a run of
/// `unwind_no_mapping` (a mapping missing from `pid_mappings` until a re-sync), for messages.
pub fn unwind_counters(stats: &[(String, f64)]) -> String {
    let sync = [
        "syncs",
        "resyncs",
        "unknown_mapping_reports",
        "events_ignored",
    ];
    stats
        .iter()
        .filter(|(n, v)| {
            (n.starts_with("unwind_") || n.starts_with("frames_unwound") || sync.contains(&&**n))
                && *v > 0.0
        })
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}
