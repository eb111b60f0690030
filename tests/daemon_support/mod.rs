//! What the production-daemon tests (`daemon_otel_env`, `daemon_metrics`, `containers`,
//! `daemon_systemd`) share beyond `common`: a `profiler daemon` child with an environment of
//! its own whose log is a file, killed if a test fails; reading the resources out of an export
//! request; and the gate for tools. Each includes it after `mod common;`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use super::common::PROFILER;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use profiler::proto::otlp::{any_value::Value, ExportProfilesServiceRequest};
use profiler::sys::process::send_signal;

/// Loading and attaching the BPF programs on a loaded 2-CPU machine.
pub const READY: Duration = Duration::from_secs(60);
/// The 10 s flush deadline plus slack.
pub const EXIT: Duration = Duration::from_secs(25);

/// True when `tool` runs (`tool ARGS` exits 0); otherwise skips through the gate.
pub fn tool_works(test: &str, tool: &str, args: &[&str]) -> bool {
    let works = Command::new(tool)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !works {
        profiler::testing::skip(
            test,
            &format!("`{tool} {}` does not run here", args.join(" ")),
        );
    }
    works
}

/// A running `profiler daemon`; killed when dropped.
pub struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// `profiler daemon ARGS` with `env` added to a clean copy of this environment (no proxy,
    /// no OTEL_ variables of the caller's), its log in `dir/daemon.log`.
    pub fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let log = dir.join("daemon.log");
        let stderr = std::fs::File::create(&log).expect("create the daemon's log");
        let mut command = Command::new(PROFILER);
        command.arg("daemon").args(args);
        for (name, _) in std::env::vars() {
            if name.starts_with("OTEL_") || name.to_ascii_lowercase().ends_with("_proxy") {
                command.env_remove(name);
            }
        }
        let child = command
            .env_remove("NOTIFY_SOCKET")
            .env("PROFILER_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start profiler daemon");
        Daemon { child, log }
    }

    /// `profiler daemon --interval 1 --endpoint URL EXTRA...`, with no environment of its own.
    pub fn sending_to(dir: &Path, url: &str, extra: &[&str]) -> Daemon {
        let mut args = vec!["--interval", "1", "--endpoint", url];
        args.extend_from_slice(extra);
        Daemon::start(dir, &args, &[])
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log holds `text` (the daemon still running); panics with the log if it
    /// exits or `timeout` passes first.
    pub fn wait_for_log(&mut self, text: &str, timeout: Duration) -> String {
        let until = Instant::now() + timeout;
        loop {
            let log = self.log();
            if log.contains(text) {
                return log;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the daemon exited ({status}) before logging {text:?}:\n{log}");
            }
            assert!(Instant::now() < until, "no {text:?} in the log:\n{log}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until sampling has begun.
    pub fn wait_ready(&mut self) {
        self.wait_for_log("info: profiling ", READY);
    }

    pub fn signal(&self, signal: i32) {
        send_signal(self.pid(), signal).expect("signal the daemon");
    }

    /// SIGTERM, then the exit status (0 expected) and the whole log.
    pub fn stop(mut self) -> String {
        self.signal(libc::SIGTERM);
        let until = Instant::now() + EXIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for the daemon") {
                break status;
            }
            assert!(
                Instant::now() < until,
                "no exit after SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let log = self.log();
        assert_eq!(status.code(), Some(0), "the daemon's exit:\n{log}");
        assert!(!log.contains("panicked"), "{log}");
        log
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A child process killed when dropped.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Each resource of `request` as its (key, value) attributes, values as text.
pub fn resources(request: &ExportProfilesServiceRequest) -> Vec<Vec<(String, String)>> {
    request
        .resource_profiles
        .iter()
        .map(|rp| {
            rp.resource
                .iter()
                .flat_map(|r| &r.attributes)
                .map(|kv| {
                    let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                        Some(Value::StringValue(s)) => s.clone(),
                        Some(Value::IntValue(i)) => i.to_string(),
                        other => format!("{other:?}"),
                    };
                    (kv.key.clone(), value)
                })
                .collect()
        })
        .collect()
}

/// The value of `key` among `attributes`.
pub fn attribute<'a>(attributes: &'a [(String, String)], key: &str) -> Option<&'a str> {
    attributes
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}
