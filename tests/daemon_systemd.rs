//! The daemon as a systemd service: `dist/profiler.service` passes `systemd-analyze verify`
//! (systemd-analyze found on PATH, through the gate) and asks for no more than it needs; the
//! daemon tells the service manager it is ready, reloading and stopping through the
//! `NOTIFY_SOCKET` datagram protocol (checked with a socket of the test's own, as systemd would
//! listen; root for BPF, through the gate).

mod common;
mod daemon_support;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{bpf_available, scratch, PROFILER};
use daemon_support::{tool_works, Daemon, READY};

fn unit_file() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("dist/profiler.service");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The value of `key=` in the unit (its first occurrence).
fn directive<'a>(unit: &'a str, key: &str) -> Option<&'a str> {
    unit.lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
}

#[test]
fn the_unit_file_passes_systemd_analyze_verify() {
    let test = "the_unit_file_passes_systemd_analyze_verify";
    let unit = unit_file();
    // What the unit must say, whether or not systemd is here to check the syntax.
    for (key, value) in [
        ("Type", "notify"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("StateDirectory", "profiler"),
        // ProtectSystem=strict leaves /var/cache read-only: the unwind table cache needs it.
        ("CacheDirectory", "profiler"),
        ("EnvironmentFile", "-/etc/profiler/env"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
    ] {
        assert_eq!(directive(&unit, key), Some(value), "{key}");
    }
    let capabilities = "CAP_BPF CAP_PERFMON CAP_SYS_PTRACE CAP_SYSLOG CAP_DAC_READ_SEARCH";
    assert_eq!(
        directive(&unit, "CapabilityBoundingSet"),
        Some(capabilities)
    );
    assert_eq!(directive(&unit, "AmbientCapabilities"), Some(capabilities));
    let exec_start = directive(&unit, "ExecStart").expect("ExecStart");
    assert!(
        exec_start.contains("--output-dir /var/lib/profiler/"),
        "{exec_start}"
    );

    // The daemon accepts ExecStart's flags (checked up to its usage errors: --help stops first).
    let flags: Vec<&str> = exec_start.split_whitespace().skip(2).collect();
    let out = Command::new(PROFILER)
        .arg("daemon")
        .args(&flags)
        .arg("--help")
        .output()
        .expect("run the profiler");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    if !tool_works(test, "systemd-analyze", &["--version"]) {
        return;
    }
    // verify also checks that ExecStart's program exists: point it at the one cargo built.
    let dir = scratch("unit");
    let copy = dir.join("profiler.service");
    std::fs::write(&copy, unit.replace("/usr/local/bin/profiler", PROFILER)).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .expect("run systemd-analyze");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{said}"
    );
    assert!(
        !said.contains("profiler.service"),
        "warnings about the unit:\n{said}"
    );
}

#[test]
fn readiness_reload_and_stop_reach_the_notify_socket() {
    let test = "readiness_reload_and_stop_reach_the_notify_socket";
    if !bpf_available(test) {
        return;
    }
    let dir = scratch("notify");
    let socket_path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    socket.set_read_timeout(Some(READY)).unwrap();
    let receive = || {
        let mut buf = [0u8; 4096];
        let n = socket.recv(&mut buf).expect("a notification in time");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let output_dir = dir.join("windows");
    let mut daemon = Daemon::start(
        &dir,
        &[
            "--no-endpoint",
            "--output-dir",
            output_dir.to_str().unwrap(),
            "--interval",
            "1",
        ],
        &[("NOTIFY_SOCKET", socket_path.to_str().unwrap())],
    );
    let ready = receive();
    assert!(ready.starts_with("READY=1\nSTATUS=profiling "), "{ready:?}");
    assert!(
        daemon.log().contains("info: profiling "),
        "ready once sampling runs"
    );

    daemon.signal(libc::SIGHUP);
    let reloading = receive();
    let usec: u64 = reloading
        .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{reloading:?}"));
    assert!(usec > 0);
    assert_eq!(receive(), "READY=1");
    daemon.wait_for_log("info: SIGHUP: reopened", Duration::from_secs(10));

    daemon.signal(libc::SIGTERM);
    let stopping = receive();
    assert_eq!(stopping, "STOPPING=1\nSTATUS=SIGTERM received");
    let log = daemon.stop();
    assert!(log.contains("info: stopped: windows "), "{log}");
}
