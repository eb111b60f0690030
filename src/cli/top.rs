//! `profiler top`: the hottest functions of the whole system (or of some processes), live on a
//! terminal, refreshed every second, as perf top and htop show them (q quits; s, t and n sort
//! by self samples, total samples and name).
//!
//! It runs the same session as `record` (same sampler, threads and symbolization), only with
//! one-second windows whose profiles come back through a channel instead of going to a file,
//! so it costs what `record` costs.

use std::io::{IsTerminal, Read, Write};
use std::os::fd::AsFd;
use std::sync::mpsc::channel;
use std::sync::Arc;
use std::time::{Duration, Instant};

use argh::FromArgs;

use super::record::{check_frequency, load_error, parse_duration};
use super::{exit, Fatal};
use crate::profile::Profile;
use crate::sampler::Target;
use crate::session::{Session, SessionConfig};
use crate::stats::Stats;
use crate::sys::{process, signal, terminal};
use crate::view::top_table::{render, SortBy};

#[derive(FromArgs, Debug)]
/// Show the hottest functions of the whole system, or of some processes (-p), live on the
/// terminal, refreshed every second. Keys: q quits; s, t and n sort by self samples, total
/// samples and name.
#[argh(subcommand, name = "top")]
pub struct TopArgs {
    /// sampling frequency in Hz per CPU, 1 to 10000 (default 99)
    #[argh(option, short = 'F', default = "99")]
    pub frequency: u64,

    /// show only this process and the processes it starts (repeatable)
    #[argh(option, short = 'p')]
    pub pid: Vec<u32>,

    /// stop after this many seconds (default: until q or Ctrl-C)
    #[argh(option, short = 'd', from_str_fn(parse_duration))]
    pub duration: Option<Duration>,

    /// the first sort order: self, total or name (default self)
    #[argh(option, short = 's', default = "SortBy::Own", from_str_fn(parse_sort))]
    pub sort: SortBy,
}

fn parse_sort(value: &str) -> Result<SortBy, String> {
    match value {
        "self" => Ok(SortBy::Own),
        "total" => Ok(SortBy::Total),
        "name" => Ok(SortBy::Name),
        _ => Err(format!(
            "unknown sort {value:?}: expected self, total or name"
        )),
    }
}

/// How often keys and signals are looked at.
const TICK: Duration = Duration::from_millis(100);

/// The terminal while `top` runs: raw input, the alternate screen, no cursor; all undone on
/// drop, even on an error.
struct Screen {
    _raw: Option<terminal::RawMode>,
}

impl Screen {
    fn enter() -> Screen {
        let stdin = std::io::stdin();
        let raw = match stdin.is_terminal() {
            true => terminal::RawMode::enter(stdin.as_fd()).ok(),
            false => None,
        };
        print!("\x1b[?1049h\x1b[?25l");
        let _ = std::io::stdout().flush();
        Screen { _raw: raw }
    }

    fn draw(&self, lines: &[String]) {
        let mut text = String::from("\x1b[H");
        for line in lines {
            text.push_str(line);
            text.push_str("\x1b[K\r\n");
        }
        text.push_str("\x1b[J");
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        print!("\x1b[?25h\x1b[?1049l");
        let _ = std::io::stdout().flush();
    }
}

/// The keys pressed since the last look (none when stdin is not a terminal).
fn keys() -> Vec<u8> {
    let mut buf = [0u8; 16];
    match std::io::stdin().lock().read(&mut buf) {
        Ok(n) => buf[..n].to_vec(),
        Err(_) => Vec::new(),
    }
}

pub fn run(args: TopArgs) -> Result<i32, Fatal> {
    check_frequency(args.frequency)?;
    for &pid in &args.pid {
        if pid == 0 || !process::exists(pid) {
            return Err(Fatal::usage(format!("no process with PID {pid}")));
        }
    }
    if !std::io::stdout().is_terminal() {
        return Err(Fatal::usage(
            "top needs a terminal on standard output; `profiler record` writes files",
        ));
    }
    super::prepare_to_profile()?;
    let stats = Arc::new(Stats::default());
    let config = SessionConfig {
        target: match args.pid.is_empty() {
            true => Target::System,
            false => Target::Pids(args.pid.clone()),
        },
        frequency_hz: args.frequency,
        window: Some(Duration::from_secs(1)),
        filter: Default::default(),
    };
    let (tx, windows) = channel::<Profile>();
    let sink = move |profile: Profile| {
        let _ = tx.send(profile);
    };
    let mut session = Session::load(&config, stats, sink).map_err(load_error)?;
    session.start().map_err(load_error)?;

    let screen = Screen::enter();
    let started = Instant::now();
    let mut sort = args.sort;
    let mut latest: Option<Profile> = None;
    let waiting = vec!["profiler top: sampling the first second... (q quits)".to_owned()];
    screen.draw(&waiting);
    loop {
        if signal::wait(TICK).is_some() || session.poller_failed() {
            break;
        }
        if args.duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        let (mut changed, mut quit) = (false, false);
        for key in keys() {
            match key {
                b'q' | b'Q' => quit = true,
                b's' | b'P' => sort = SortBy::Own,
                b't' | b'T' => sort = SortBy::Total,
                b'n' | b'N' => sort = SortBy::Name,
                _ => continue,
            }
            changed = true;
        }
        if quit {
            break;
        }
        while let Ok(profile) = windows.try_recv() {
            latest = Some(profile);
            changed = true;
        }
        if let (true, Some(profile)) = (changed, &latest) {
            let (rows, cols) = terminal::size(std::io::stdout().as_fd()).unwrap_or((24, 80));
            screen.draw(&render(profile, sort, usize::from(rows), usize::from(cols)));
        }
    }
    drop(screen);
    // Nobody reads a window after q: do not wait for tables still being built.
    session
        .finish(Duration::ZERO)
        .map_err(|e| Fatal::failure(e.to_string()))?;
    Ok(exit::OK)
}
