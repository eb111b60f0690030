//! Leveled log lines on stderr. Quiet by default: warnings and errors only, debug
//! lines with `PROFILER_LOG=debug`.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Once;

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
            _ => WARN,
        };
        LEVEL.store(level, Ordering::Relaxed);
    });
    level <= LEVEL.load(Ordering::Relaxed)
}

fn emit(level: u8, tag: &str, message: &str) {
    if enabled(level) {
        eprintln!("profiler: {tag}: {message}");
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
