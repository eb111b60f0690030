//! The profile builder: a `profiler record` session with the arguments a test gives, writing to
//! a file in the test's directory (its extension picks the format) and, when asked, its
//! `--stats-json` counters beside it; run to its end, or in the background until interrupted;
//! and what it wrote, read back (folded lines, a gzipped pprof, the counters).

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use prost::Message;

use profiler::proto::pprof;

use super::{folded, stats, Guard, PROFILER};

/// A session to run: `profiler record ARGS -o OUTPUT [--stats-json STATS] [-- COMMAND]`.
pub struct Record {
    args: Vec<OsString>,
    output: PathBuf,
    stats: Option<PathBuf>,
    command: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
}

impl Record {
    /// A session writing `dir/FILE` (`.folded`, `.pb.gz`, ...).
    pub fn new(dir: &Path, file: &str) -> Record {
        Record {
            args: Vec::new(),
            output: dir.join(file),
            stats: None,
            command: Vec::new(),
            env: Vec::new(),
        }
    }

    /// Sets an environment variable for the profiler.
    pub fn env(mut self, key: &str, value: impl Into<OsString>) -> Record {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Adds `args` (`-F 199`, `-p PID`, `-a`, `-d 2`, ...).
    pub fn args(mut self, args: &[&str]) -> Record {
        self.args.extend(args.iter().map(OsString::from));
        self
    }

    /// Also writes the counters to `dir/FILE` (the output's directory).
    pub fn stats(mut self, file: &str) -> Record {
        let dir = self.output.parent().expect("the output's directory");
        self.stats = Some(dir.join(file));
        self
    }

    /// Profiles `command` (after `--`).
    pub fn command(mut self, command: &[&str]) -> Record {
        self.command = command.iter().map(OsString::from).collect();
        self
    }

    fn to_command(&self) -> Command {
        let mut command = Command::new(PROFILER);
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command
            .arg("record")
            .args(&self.args)
            .arg("-o")
            .arg(&self.output);
        if let Some(stats) = &self.stats {
            command.arg("--stats-json").arg(stats);
        }
        if !self.command.is_empty() {
            command.arg("--").args(&self.command);
        }
        command
    }

    /// Runs the session to its end.
    pub fn run(self) -> Recorded {
        let out = self.to_command().output().expect("run profiler record");
        Recorded {
            status: out.status,
            log: String::from_utf8_lossy(&out.stderr).into_owned(),
            output: self.output,
            stats: self.stats,
        }
    }

    /// Starts the session in the background, its standard error captured.
    pub fn spawn(self) -> Recording {
        let child = self
            .to_command()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start profiler record");
        Recording {
            child: Guard(child),
            output: self.output,
            stats: self.stats,
        }
    }
}

/// A session running in the background; killed if dropped.
pub struct Recording {
    child: Guard,
    output: PathBuf,
    stats: Option<PathBuf>,
}

impl Recording {
    /// The profiler's PID.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Stops the session with SIGINT and waits for it to write its output.
    pub fn interrupt(self) -> Recorded {
        profiler::sys::process::send_signal(self.pid(), libc::SIGINT).expect("signal profiler");
        self.wait()
    }

    /// Waits for the session to end (a profiled command exited).
    pub fn wait(self) -> Recorded {
        let Recording {
            mut child,
            output,
            stats,
        } = self;
        let mut log = String::new();
        if let Some(mut stderr) = child.0.stderr.take() {
            stderr
                .read_to_string(&mut log)
                .expect("read the profiler's stderr");
        }
        let status = child.0.wait().expect("wait for profiler record");
        Recorded {
            status,
            log,
            output,
            stats,
        }
    }
}

/// A session that ended, and what it wrote.
pub struct Recorded {
    pub status: ExitStatus,
    /// Its standard error.
    pub log: String,
    output: PathBuf,
    stats: Option<PathBuf>,
}

impl Recorded {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Panics, with the session's log, unless it exited 0.
    pub fn assert_success(&self) {
        assert!(self.status.success(), "{}", self.log);
    }

    pub fn output(&self) -> &Path {
        &self.output
    }

    /// The output as folded (stack, count) lines.
    pub fn folded(&self) -> Vec<(String, u64)> {
        folded(&self.output)
    }

    /// The output as a gzipped pprof profile.
    pub fn pprof(&self) -> pprof::Profile {
        let bytes = std::fs::read(&self.output).expect("read the pprof output");
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut raw)
            .expect("gzip");
        pprof::Profile::decode(&raw[..]).expect("a valid pprof protobuf")
    }

    /// The `--stats-json` counters.
    pub fn stats(&self) -> Vec<(String, f64)> {
        stats(
            self.stats
                .as_ref()
                .expect("a session run with Record::stats"),
        )
    }
}
