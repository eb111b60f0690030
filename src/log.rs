//! Leveled, timestamped log lines on stderr (`profiler: 2026-11-26T17:55:03Z warning: ...`).
//! Warnings and errors by default; `PROFILER_LOG=info` adds the daemon's periodic lines and
//! `debug` everything.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Once;
use std::time::{SystemTime, UNIX_EPOCH};

const ERROR: u8 = 0;
const WARN: u8 = 1;
const INFO: u8 = 2;
const DEBUG: u8 = 3;

static LEVEL: AtomicU8 = AtomicU8::new(WARN);
static INIT: Once = Once::new();

fn enabled(level: u8) -> bool {
    INIT.call_once(|| {
        let level = match std::env::var("PROFILER_LOG").as_deref() {
            Ok("debug") => DEBUG,
            Ok("info") => INFO,
            Ok("error") => ERROR,
            _ => LEVEL.load(Ordering::Relaxed),
        };
        LEVEL.store(level, Ordering::Relaxed);
    });
    level <= LEVEL.load(Ordering::Relaxed)
}

/// Shows info lines unless `PROFILER_LOG` says otherwise (the daemon's default).
pub fn show_info() {
    if std::env::var_os("PROFILER_LOG").is_none() {
        LEVEL.store(INFO, Ordering::Relaxed);
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the Unix epoch (UTC).
pub fn rfc3339(unix_secs: u64) -> String {
    let (days, rem) = (unix_secs / 86_400, unix_secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn emit(level: u8, tag: &str, message: &str) {
    if enabled(level) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        eprintln!("profiler: {} {tag}: {message}", rfc3339(now));
    }
}

pub fn error(message: &str) {
    emit(ERROR, "error", message);
}

pub fn warn(message: &str) {
    emit(WARN, "warning", message);
}

pub fn info(message: &str) {
    emit(INFO, "info", message);
}

pub fn debug(message: &str) {
    emit(DEBUG, "debug", message);
}

#[cfg(test)]
mod tests {
    use super::rfc3339;

    #[test]
    fn formats_utc_timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_142_896), "2026-12-01T16:34:56Z");
    }
}
