//! The command line: argument definitions (argh), dispatch, and the exit-code contract that the
//! man pages document. Each subcommand lives in its own file.

pub mod daemon;
pub mod diff;
mod progress;
pub mod record;
pub mod report;
pub mod top;
pub mod unwind_info;

use argh::FromArgs;

/// Exit codes shared by every subcommand (see man/profiler.1, EXIT STATUS).
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// The session failed at run time (BPF load, I/O, writing the output).
    pub const FAILURE: i32 = 1;
    /// Invalid usage: an unknown flag, a bad value, an unwritable output, a missing PID.
    pub const USAGE: i32 = 2;
    /// The system cannot profile: missing capabilities or a kernel without BTF.
    pub const UNSUPPORTED: i32 = 3;
    /// The command to profile exists but cannot be executed.
    pub const CANNOT_EXECUTE: i32 = 126;
    /// The command to profile was not found.
    pub const NOT_FOUND: i32 = 127;
}

#[derive(FromArgs, Debug)]
/// A whole-system eBPF CPU profiler for Linux: samples every CPU, unwinds kernel and user
/// stacks in the kernel (no frame pointers needed), symbolizes them on the host, and writes
/// folded stacks, pprof, OTLP or a flame graph, or sends OTLP to a collector.
pub struct Cli {
    /// print the version and exit
    #[argh(switch, short = 'V')]
    pub version: bool,

    #[argh(subcommand)]
    pub command: Option<Command>,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum Command {
    Record(record::RecordArgs),
    Daemon(daemon::DaemonArgs),
    UnwindInfo(unwind_info::UnwindInfoArgs),
    Report(report::ReportArgs),
    Diff(diff::DiffArgs),
    Top(top::TopArgs),
}

/// An error that ends the program with a specific exit code.
#[derive(Debug)]
pub struct Fatal {
    pub code: i32,
    pub message: String,
}

impl Fatal {
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            code: exit::USAGE,
            message: message.into(),
        }
    }

    pub fn failure(message: impl Into<String>) -> Self {
        Self {
            code: exit::FAILURE,
            message: message.into(),
        }
    }
}

/// What every profiling subcommand checks and sets up before loading BPF: the privileges and
/// the kernel (exit code 3 when missing), and the handlers that turn SIGINT/SIGTERM/SIGHUP into
/// an orderly stop.
pub fn prepare_to_profile() -> Result<(), Fatal> {
    let degraded = crate::privileges::check().map_err(|missing| Fatal {
        code: exit::UNSUPPORTED,
        message: missing.to_string(),
    })?;
    for note in degraded {
        crate::log::warn(&format!("without {note}"));
    }
    crate::sys::signal::install_termination_handlers()
        .map_err(|e| Fatal::failure(format!("cannot install signal handlers: {e}")))
}

/// Parses the arguments and runs; returns the process exit code.
pub fn main() -> i32 {
    let args: Vec<String> = std::env::args().collect();
    let program = args.first().map(String::as_str).unwrap_or("profiler");
    let program = program.rsplit('/').next().unwrap_or(program);
    let rest: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    let cli = match Cli::from_args(&[program], &rest) {
        Ok(cli) => cli,
        Err(early) => {
            return match early.status {
                Ok(()) => {
                    println!("{}", early.output);
                    exit::OK
                }
                Err(()) => {
                    eprintln!("{}", early.output.trim_end());
                    eprintln!("Run `{program} help` for usage.");
                    exit::USAGE
                }
            };
        }
    };
    if cli.version {
        println!("profiler {}", env!("CARGO_PKG_VERSION"));
        return exit::OK;
    }
    let result = match cli.command {
        Some(Command::Record(args)) => record::run(args),
        Some(Command::Daemon(args)) => daemon::run(args),
        Some(Command::UnwindInfo(args)) => unwind_info::run(args),
        Some(Command::Report(args)) => report::run(args),
        Some(Command::Diff(args)) => diff::run(args),
        Some(Command::Top(args)) => top::run(args),
        None => {
            eprintln!("profiler: no subcommand given. Run `{program} help` for usage.");
            return exit::USAGE;
        }
    };
    match result {
        Ok(code) => code,
        Err(fatal) => {
            eprintln!("profiler: error: {}", fatal.message);
            fatal.code
        }
    }
}
