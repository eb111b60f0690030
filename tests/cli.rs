//! The command line's contract: bad input gets a clear message and the documented exit code, and
//! the man pages describe every flag `--help` shows.

mod common;

use std::process::Command;

use common::*;

fn expect_exit(args: &[&str], code: i32, message: &str) {
    let out = profiler(args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
    assert!(
        err.contains(message),
        "{args:?}: expected {message:?} in: {err}"
    );
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
}

#[test]
fn invalid_values_are_usage_errors() {
    let dir = scratch("cli");
    let out = dir.join("x.folded");
    let out = out.to_str().unwrap();
    expect_exit(
        &["record", "-F", "0", "-o", out],
        2,
        "invalid frequency 0 Hz",
    );
    expect_exit(
        &["record", "-F", "100000", "-o", out],
        2,
        "invalid frequency 100000 Hz",
    );
    expect_exit(&["record", "-F", "x"], 2, "-F");
    expect_exit(&["record", "-d", "-1"], 2, "invalid duration \"-1\"");
    expect_exit(&["record", "-d", "0"], 2, "invalid duration");
    expect_exit(&["record", "--format", "svg"], 2, "unknown format \"svg\"");
    expect_exit(
        &["record", "-o", &format!("{out}.svg")],
        2,
        "cannot tell the format",
    );
    expect_exit(
        &["record", "-p", "99999999", "-o", out],
        2,
        "no process with PID 99999999",
    );
    expect_exit(&["record", "-p", "1", "--", "true"], 2, "choose one of");
    expect_exit(&["record", "--bogus"], 2, "Unrecognized argument: --bogus");
    expect_exit(&["frobnicate"], 2, "Unrecognized argument: frobnicate");
    expect_exit(&[], 2, "no subcommand");
    assert!(
        std::fs::read_dir(&dir).unwrap().next().is_none(),
        "nothing left behind"
    );
}

#[test]
fn an_unwritable_output_is_refused_before_sampling() {
    expect_exit(
        &["record", "-o", "/nonexistent-dir/x.folded"],
        2,
        "cannot write /nonexistent-dir/x.folded",
    );
    let dir = scratch("dir-output");
    expect_exit(
        &["record", "--format", "folded", "-o", dir.to_str().unwrap()],
        2,
        "is a directory",
    );
}

#[test]
fn version_and_help() {
    let out = profiler(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("profiler {}", env!("CARGO_PKG_VERSION"))
    );
    for args in [
        &["help"][..],
        &["--help"],
        &["record", "--help"],
        &["record", "help"],
    ] {
        let out = profiler(args);
        assert!(out.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage: profiler"),
            "{args:?}"
        );
    }
}

#[test]
fn a_kernel_without_btf_is_reported() {
    let dir = scratch("btf");
    let out = Command::new(PROFILER)
        .args(["record", "-d", "1", "-o"])
        .arg(dir.join("x.folded"))
        .env("PROFILER_KERNEL_BTF", "/nonexistent/vmlinux")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("CONFIG_DEBUG_INFO_BTF"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn running_without_privileges_names_the_missing_capabilities() {
    if !bpf_available("running_without_privileges_names_the_missing_capabilities") {
        return; // dropping privileges needs them first
    }
    let dir = scratch("nopriv");
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(PROFILER)
        .args(["record", "-d", "1", "-o"])
        .arg(dir.join("x.folded"))
        .output()
        .expect("setpriv (util-linux) runs");
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("CAP_BPF, CAP_PERFMON"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_missing_command_exits_127() {
    if !bpf_available("a_missing_command_exits_127") {
        return;
    }
    let _serial = serial();
    let dir = scratch("nocmd");
    let out = dir.join("x.folded");
    expect_exit(
        &[
            "record",
            "-o",
            out.to_str().unwrap(),
            "--",
            "/nonexistent/command",
        ],
        127,
        "command not found: /nonexistent/command",
    );
    assert!(!out.exists(), "no output for a session that never ran");
}

/// Every flag shown by `--help` appears in the man page, and vice versa for the long ones.
#[test]
fn man_pages_document_every_flag() {
    let root = env!("CARGO_MANIFEST_DIR");
    for (args, page) in [
        (&["--help"][..], "man/profiler.1"),
        (&["record", "--help"], "man/profiler-record.1"),
        (&["daemon", "--help"], "man/profiler-daemon.1"),
        (&["unwind-info", "--help"], "man/profiler-unwind-info.1"),
    ] {
        let help = String::from_utf8_lossy(&profiler(args).stdout).into_owned();
        let man = std::fs::read_to_string(format!("{root}/{page}"))
            .unwrap_or_else(|e| panic!("{page}: {e}"));
        let man_text = man
            .replace("\\-", "-")
            .replace("\\fB", "")
            .replace("\\fR", "")
            .replace("\\fI", "");
        let flags: Vec<&str> = help
            .split(|c: char| c.is_whitespace() || ",[]()".contains(c))
            .filter(|w| w.starts_with('-') && w.len() > 1 && w != &"--")
            .collect();
        assert!(!flags.is_empty(), "no flags found in {args:?} --help");
        for flag in flags {
            assert!(man_text.contains(flag), "{page} does not mention {flag}");
        }
    }
}
