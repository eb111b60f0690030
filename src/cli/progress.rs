//! `record`'s progress line: on a terminal, one line on stderr rewritten in place (elapsed and
//! planned time, samples, lost samples, processes seen, distinct stacks so far: the profile's
//! size, which is written only at the end), erased before the summary. Nothing
//! when stderr is not a terminal or with `--quiet`.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use crate::stats::Stats;

pub struct Progress {
    shown: bool,
    enabled: bool,
    started: Instant,
    duration: Option<Duration>,
}

impl Progress {
    pub fn new(quiet: bool, duration: Option<Duration>) -> Progress {
        Progress {
            shown: false,
            enabled: !quiet && std::io::stderr().is_terminal(),
            started: Instant::now(),
            duration,
        }
    }

    /// How often the line wants rewriting: once a second on a terminal, never otherwise (the
    /// main thread then sleeps until something ends the session).
    pub fn refresh_every(&self) -> Option<Duration> {
        self.enabled.then_some(Duration::from_secs(1))
    }

    /// The line for the counters now.
    pub fn line(&self, stats: &Stats) -> String {
        let get = |c: &std::sync::atomic::AtomicU64| Stats::get(c);
        let elapsed = self.started.elapsed().as_secs_f64();
        let time = match self.duration {
            Some(d) => format!("{elapsed:.0}/{:.0} s", d.as_secs_f64()),
            None => format!("{elapsed:.0} s (Ctrl-C stops)"),
        };
        let lost = get(&stats.samples_lost)
            + get(&stats.samples_send_failed)
            + get(&stats.samples_queue_dropped);
        format!(
            "profiler: recording {time}: {} samples, {lost} lost, {} processes, {} stacks",
            get(&stats.samples),
            get(&stats.pids_seen),
            get(&stats.window_stacks)
        )
    }

    /// Rewrites the line (on a terminal only).
    pub fn show(&mut self, stats: &Stats) {
        if self.enabled {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r{}\x1b[K", self.line(stats));
            let _ = err.flush();
            self.shown = true;
        }
    }

    /// Erases the line, so what follows starts on a clean line.
    pub fn clear(&mut self) {
        if self.shown {
            eprint!("\r\x1b[K");
            self.shown = false;
        }
    }
}

/// A file size for people: `512 bytes`, `12.3 KiB`, `4.0 MiB`.
pub fn size(bytes: u64) -> String {
    match bytes {
        0..=1023 => format!("{bytes} bytes"),
        1024..=1_048_575 => format!("{:.1} KiB", bytes as f64 / 1024.0),
        _ => format!("{:.1} MiB", bytes as f64 / 1_048_576.0),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes() {
        assert_eq!(super::size(512), "512 bytes");
        assert_eq!(super::size(12_595), "12.3 KiB");
        assert_eq!(super::size(4 << 20), "4.0 MiB");
    }
}
