//! `profiler daemon` as the daemon tests run it: a busy fixture to profile, the daemon process
//! (its standard error in a log file, started with info logging and no proxy), waiting for it
//! to sample, and signalling it to stop within a bound.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use profiler::sys::process::send_signal;

use super::{arg, Fixture, Guard, KernelTest, PROFILER};

/// How long a daemon may take to load its BPF programs and start sampling (a loaded machine).
const READY: Duration = Duration::from_secs(60);
/// How long a daemon may take to exit after SIGTERM: the 10 s flush deadline plus slack.
const EXIT: Duration = Duration::from_secs(20);
/// The fixture runs at least this long; it is killed when the test ends.
const FIXTURE_SECONDS: &str = "300";
/// `-O2`, as the brief says: no frame pointers, so stacks come from .eh_frame unwinding.
const FIXTURE_FLAGS: &[&str] = &["-O2"];

/// A daemon test: root, the serial lock, a scratch directory, and the busy fixture
/// (main -> a -> b -> c) running until the test ends.
pub struct Setup {
    /// The fixture process (dropped first: killed before the lock is released).
    pub fixture: Guard,
    pub exe: PathBuf,
    pub pid: u32,
    pub pid_arg: String,
    pub test: KernelTest,
}

impl Setup {
    /// Everything a daemon test needs, or `None` once `test` is skipped.
    pub fn start(test: &'static str) -> Option<Setup> {
        let test = KernelTest::start(test)?;
        let exe = test.build(Fixture::c("abc", FIXTURE_FLAGS))?;
        let fixture = Guard::spawn(Command::new(&exe).arg(FIXTURE_SECONDS).stdin(Stdio::null()));
        let pid = fixture.pid();
        Some(Setup {
            fixture,
            exe,
            pid,
            pid_arg: pid.to_string(),
            test,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.test.dir
    }

    /// Where `--stats-json` goes.
    pub fn stats_path(&self) -> PathBuf {
        self.test.dir.join("stats.json")
    }

    /// `profiler daemon ARGS -p FIXTURE`, started and sampling.
    pub fn daemon(&self, args: &[&str]) -> Daemon {
        let mut args = args.to_vec();
        args.extend(["-p", &self.pid_arg]);
        let mut daemon = Daemon::start(self.dir(), &args);
        daemon.wait_ready();
        daemon
    }

    /// [`Setup::daemon`] with `--stats-json` to [`Setup::stats_path`] after `args`.
    pub fn daemon_with_stats(&self, args: &[&str]) -> Daemon {
        let stats = self.stats_path();
        let mut args = args.to_vec();
        args.extend(["--stats-json", arg(&stats)]);
        self.daemon(&args)
    }
}

/// A running `profiler daemon`, its standard error going to a file.
pub struct Daemon {
    child: Guard,
    log: PathBuf,
}

/// How a daemon ended.
pub struct Ended {
    pub code: Option<i32>,
    pub log: String,
    /// From the signal to the exit.
    pub took: Duration,
}

impl Daemon {
    /// Starts `profiler daemon ARGS` with info logging, stderr in `dir/daemon-N.log`.
    pub fn start(dir: &Path, args: &[&str]) -> Daemon {
        let mut n = 0;
        let log = loop {
            let candidate = dir.join(format!("daemon-{n}.log"));
            if !candidate.exists() {
                break candidate;
            }
            n += 1;
        };
        let stderr = std::fs::File::create(&log).expect("create the daemon's log");
        let child = Command::new(PROFILER)
            .arg("daemon")
            .args(args)
            .env("PROFILER_LOG", "info")
            // Loopback only: a proxy from the environment (ureq reads these) must not intercept.
            .env_remove("ALL_PROXY")
            .env_remove("all_proxy")
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start profiler daemon");
        Daemon {
            child: Guard(child),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the "profiling ..." line: the programs are attached and sampling has begun.
    pub fn wait_ready(&mut self) {
        let until = Instant::now() + READY;
        loop {
            let log = self.log();
            if log.contains("info: profiling ") {
                return;
            }
            if let Ok(Some(status)) = self.child.0.try_wait() {
                panic!("the daemon exited before sampling ({status}):\n{log}");
            }
            assert!(Instant::now() < until, "the daemon never started:\n{log}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends `signal` and waits (at most [`EXIT`]) for the daemon to exit.
    pub fn signal_and_wait(mut self, signal: i32) -> Ended {
        let sent = Instant::now();
        send_signal(self.pid(), signal).expect("signal the daemon");
        loop {
            if let Some(status) = self.child.0.try_wait().expect("wait for the daemon") {
                return Ended {
                    code: status.code(),
                    log: self.log(),
                    took: sent.elapsed(),
                };
            }
            if sent.elapsed() > EXIT {
                let log = self.log();
                let _ = self.child.0.kill();
                panic!("the daemon did not exit within {EXIT:?} of signal {signal}:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then checks it exited 0; returns its log.
    pub fn terminate(self) -> String {
        let ended = self.signal_and_wait(libc::SIGTERM);
        assert_eq!(ended.code, Some(0), "daemon exit status:\n{}", ended.log);
        assert!(
            !ended.log.contains("panicked"),
            "the daemon panicked:\n{}",
            ended.log
        );
        ended.log
    }
}

pub fn now_unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_nanos() as u64
}
