//! The daemon configured the OpenTelemetry way: with only `OTEL_EXPORTER_OTLP_ENDPOINT` and
//! `OTEL_EXPORTER_OTLP_HEADERS` set it delivers to a loopback collector with the header, the
//! secret is in no process listing nor log, and `OTEL_RESOURCE_ATTRIBUTES` reaches every
//! resource; a `--header-file` must be private and is re-read on SIGHUP; headers are checked
//! once whatever the other flags, and their values are never shown. Root for the tests that
//! profile (through the gate of `common::bpf_available`).

mod common;
mod daemon_support;

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::receiver::{Receiver, Request};
use common::{bpf_available, scratch, Fixture, PROFILER};
use daemon_support::{attribute, resources, tool_works, Daemon, Running};
use profiler::proto::otlp::Link;

const SECRET: &str = "s3cr3t-t0ken";
/// How long a window may take to arrive (a loaded machine).
const ARRIVAL: Duration = Duration::from_secs(60);

/// The busy fixture, started for 300 s; killed when dropped.
fn busy(test: &str) -> Option<Running> {
    let exe = Fixture::c("abc", &["-O2"]).build(test)?;
    let child = Command::new(exe)
        .arg("300")
        .stdin(Stdio::null())
        .spawn()
        .expect("start the fixture");
    Some(Running(child))
}

/// The first request that holds a resource of `pid`, waiting at most [`ARRIVAL`].
fn request_with(receiver: &Receiver, pid: u32) -> Request {
    let pid = pid.to_string();
    let deadline = std::time::Instant::now() + ARRIVAL;
    loop {
        let found = receiver.requests().into_iter().find(|r| {
            r.export_request().is_ok_and(|decoded| {
                resources(&decoded)
                    .iter()
                    .any(|attrs| attribute(attrs, "process.pid") == Some(&pid))
            })
        });
        if let Some(request) = found {
            return request;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no window of PID {pid} arrived"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn otel_environment_alone_delivers_with_the_header_and_the_resource_attributes() {
    let test = "otel_environment_alone_delivers_with_the_header_and_the_resource_attributes";
    if !bpf_available(test) || !tool_works(test, "ps", &["-p", "1"]) {
        return;
    }
    let dir = scratch("otel-env");
    let Some(fixture) = busy(test) else {
        return;
    };
    let pid = fixture.0.id();
    let receiver = Receiver::start(vec![]);
    let url = receiver.url();
    let headers = format!("authorization=Bearer%20{SECRET},x-tenant=team%2C1");
    let mut daemon = Daemon::start(
        &dir,
        &["--interval", "1", "-p", &pid.to_string()],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", url.as_str()),
            ("OTEL_EXPORTER_OTLP_HEADERS", headers.as_str()),
            ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test"),
        ],
    );
    daemon.wait_ready();

    // What every user of the host can see of the running daemon.
    let ps = Command::new("ps")
        .args(["-eo", "pid,args"])
        .output()
        .expect("run ps");
    let listing = String::from_utf8_lossy(&ps.stdout);
    let ours = listing
        .lines()
        .find(|l| l.split_whitespace().next() == Some(&daemon.pid().to_string()))
        .unwrap_or_else(|| panic!("the daemon is not in ps:\n{listing}"));
    assert!(ours.contains("profiler daemon"), "{ours}");
    assert!(!listing.contains(SECRET), "ps shows the secret:\n{listing}");
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", daemon.pid())).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains(SECRET));

    let request = request_with(&receiver, pid);
    let log = daemon.stop();
    assert!(!log.contains(SECRET), "the log shows the secret:\n{log}");
    assert!(
        log.contains(&format!("to {url}/v1development/profiles")),
        "{log}"
    );

    assert_eq!(request.path, "/v1development/profiles");
    assert_eq!(
        request.header("authorization"),
        Some(&*format!("Bearer {SECRET}"))
    );
    assert_eq!(
        request.header("x-tenant"),
        Some("team,1"),
        "percent-decoded"
    );
    let decoded = request.export_request().expect("an export request");
    let all = resources(&decoded);
    let fixture_resource = all
        .iter()
        .find(|a| attribute(a, "process.pid") == Some(&*pid.to_string()))
        .expect("the fixture's resource");
    assert_eq!(
        attribute(fixture_resource, "deployment.environment"),
        Some("test")
    );
    assert_eq!(
        attribute(fixture_resource, "service.name"),
        Some("profiler")
    );
    assert_eq!(
        attribute(fixture_resource, "process.executable.name"),
        Some("abc")
    );

    // The OTLP details: an empty zero link, and a random 16-byte ID per profile.
    let dictionary = decoded.dictionary.as_ref().expect("a dictionary");
    assert_eq!(dictionary.link_table, [Link::default()]);
    let mut ids = HashSet::new();
    for request in receiver.requests() {
        let decoded = request.export_request().expect("an export request");
        for rp in &decoded.resource_profiles {
            for profile in rp.scope_profiles.iter().flat_map(|s| &s.profiles) {
                assert_eq!(profile.profile_id.len(), 16);
                assert_ne!(profile.profile_id, [0; 16]);
                assert!(
                    ids.insert(profile.profile_id.clone()),
                    "a profile_id repeats"
                );
                assert_eq!(profile.original_payload_format, "");
                assert!(profile.original_payload.is_empty());
            }
        }
    }
    assert!(!ids.is_empty());
}

#[test]
fn a_header_file_must_be_private_and_is_re_read_on_sighup() {
    let test = "a_header_file_must_be_private_and_is_re_read_on_sighup";
    let dir = scratch("header-file");
    let file = dir.join("headers");
    std::fs::write(&file, format!("# for the collector\nx-token: {SECRET}\n")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let file_arg = file.to_str().unwrap();
    let out = Command::new(PROFILER)
        .args(["daemon", "--header-file", file_arg])
        .output()
        .expect("run the profiler");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("readable by group or others (mode 0644)"),
        "{err}"
    );
    assert!(!err.contains(SECRET), "{err}");
    if !bpf_available(test) {
        return;
    }

    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let Some(fixture) = busy(test) else {
        return;
    };
    let pid = fixture.0.id();
    let receiver = Receiver::start(vec![]);
    let output_dir = dir.join("windows");
    let pid_arg = pid.to_string();
    let extra = [
        "-p",
        &pid_arg,
        "--header-file",
        file_arg,
        "--output-dir",
        output_dir.to_str().unwrap(),
    ];
    let mut daemon = Daemon::sending_to(&dir, &receiver.url(), &extra);
    daemon.wait_ready();
    let first = request_with(&receiver, pid);
    assert_eq!(first.header("x-token"), Some(SECRET));

    // A new token, and the directory gone (moved away by an operator): SIGHUP takes both up.
    std::fs::write(&file, "x-token: rotated\n").unwrap();
    std::fs::remove_dir_all(&output_dir).unwrap();
    daemon.signal(libc::SIGHUP);
    daemon.wait_for_log("info: SIGHUP: re-read", ARRIVAL);
    assert!(output_dir.is_dir(), "the output directory is created again");
    let before = receiver.requests().len();
    let after = receiver.wait_for(before + 2, ARRIVAL);
    let log = daemon.stop();
    assert!(
        after.len() >= before + 2,
        "windows kept coming after SIGHUP:\n{log}"
    );
    assert_eq!(
        after[before + 1].header("x-token"),
        Some("rotated"),
        "{log}"
    );
    assert!(!log.contains(SECRET) && !log.contains("rotated"), "{log}");
    assert!(
        log.contains(&format!("reopened {}", output_dir.display())),
        "{log}"
    );
}

/// Arguments, environment, and what the error must say.
type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);

#[test]
fn headers_are_checked_once_whatever_the_flags_and_never_shown() {
    let dir = scratch("header-checks");
    let out_dir = dir.to_str().unwrap();
    let bad_value = format!("X-Token={SECRET}\u{7f}");
    let cases: [Case; 6] = [
        (
            &[
                "--no-endpoint",
                "--output-dir",
                out_dir,
                "--header",
                "Content-Type=x",
            ],
            &[],
            "header \"Content-Type\" is set by the exporter",
        ),
        (
            &["--no-endpoint", "--output-dir", out_dir],
            &[("OTEL_EXPORTER_OTLP_HEADERS", "host=x")],
            "header \"host\" is set by the exporter",
        ),
        (
            &["--header", SECRET],
            &[],
            "invalid --header (the 1st): expected KEY=VALUE",
        ),
        (
            &["--header", &bad_value],
            &[],
            "characters HTTP does not allow",
        ),
        (
            &[],
            &[("OTEL_EXPORTER_OTLP_HEADERS", "authorization=s3cr3t-t0ken%Z")],
            "OTEL_EXPORTER_OTLP_HEADERS: the value of \"authorization\" is not valid",
        ),
        (
            &[],
            &[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")],
            "speaks only http/protobuf",
        ),
    ];
    for (args, env, expected) in cases {
        let out = Command::new(PROFILER)
            .arg("daemon")
            .args(args)
            .envs(env.iter().copied())
            .output()
            .expect("run the profiler");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {err}");
        assert!(
            err.contains(expected),
            "{args:?} {env:?}: expected {expected:?} in {err}"
        );
        assert!(
            !err.contains(SECRET),
            "{args:?} {env:?} shows the secret: {err}"
        );
    }
}
