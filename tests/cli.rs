//! The command line's contract: bad input to `record` and `daemon` gets a clear message and the
//! documented exit code, and the man pages describe every flag `--help` shows.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

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
    expect_exit(&["record", "--format", "png"], 2, "unknown format \"png\"");
    expect_exit(
        &["record", "-o", &format!("{out}.png")],
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
    expect_exit(&["top", "-s", "cpu"], 2, "unknown sort \"cpu\"");
    expect_exit(&["top", "-F", "0"], 2, "invalid frequency 0 Hz");
    expect_exit(&["top", "-d", "1"], 2, "top needs a terminal");
    expect_exit(
        &["diff", "only-one.pb.gz"],
        2,
        "Required positional arguments not provided",
    );
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

/// Refused before anything is loaded, so no root needed.
#[test]
fn bad_daemon_input_is_a_usage_error_with_a_clear_message() {
    for (args, message) in [
        (
            &["--endpoint", "ftp://x"][..],
            "scheme \"ftp\" is not supported",
        ),
        (&["--endpoint", "localhost:4318"], "has no scheme"),
        (&["--interval", "0"], "invalid interval 0 s"),
        (&["--interval", "3601"], "invalid interval 3601 s"),
        (&["--interval", "x"], "--interval"),
        (&["-F", "0"], "invalid frequency 0 Hz"),
        (&["--queue", "0"], "--queue must be at least 1"),
        (
            &["--header", "novalue"],
            "invalid --header (the 1st): expected KEY=VALUE",
        ),
        (
            &["--header", "Content-Type=text/plain"],
            "cannot be overridden",
        ),
        (&["--no-endpoint"], "--no-endpoint needs --output-dir"),
        (&["-p", "99999999"], "no process with PID 99999999"),
        (
            &["--no-endpoint", "--output-dir", "/proc/no/such/dir"],
            "cannot create /proc/no/such/dir",
        ),
        (
            &["--stats-json", "/nonexistent-dir/s.json"],
            "cannot write /nonexistent-dir/s.json",
        ),
        (&["--bogus"], "Unrecognized argument: --bogus"),
    ] {
        let mut full = vec!["daemon"];
        full.extend_from_slice(args);
        let started = Instant::now();
        expect_exit(&full, 2, message);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{full:?} took {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn a_missing_command_exits_127() {
    let Some(test) = KernelTest::start("a_missing_command_exits_127") else {
        return;
    };
    let out = test.dir.join("x.folded");
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

/// The flags in a text: whole words `-x` or `--word` (so `--pid` does not count as `-p`).
fn flag_words(text: &str) -> std::collections::BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|w| {
            let name = w.strip_prefix("--").or_else(|| w.strip_prefix('-'));
            name.is_some_and(|n| n.starts_with(|c: char| c.is_ascii_alphabetic()))
                && (w.starts_with("--") || w.len() == 2)
        })
        .map(str::to_string)
        .collect()
}

/// The flags of `--help`'s option list (`  -p, --pid   ...` lines, and `Commands:` names).
fn help_flags(help: &str) -> std::collections::BTreeSet<String> {
    let options = help.split("Options:").nth(1).unwrap_or("");
    options
        .lines()
        .filter(|l| l.starts_with("  -"))
        .flat_map(|l| flag_words(l.split("  ").find(|p| !p.is_empty()).unwrap_or("")))
        .collect()
}

/// The flags a man page documents: the item headings (the line after `.TP`) of OPTIONS.
fn man_flags(man: &str) -> std::collections::BTreeSet<String> {
    let options = man.split(".SH OPTIONS").nth(1).unwrap_or("");
    let options = options.split("\n.SH ").next().unwrap_or(options);
    let lines: Vec<&str> = options
        .lines()
        .take_while(|l| !l.starts_with(".SH "))
        .collect();
    lines
        .windows(2)
        .filter(|pair| pair[0] == ".TP")
        .flat_map(|pair| flag_words(&pair[1].replace("\\-", "-")))
        .collect()
}

/// Every flag of `--help`, short and long, is an item of the man page's OPTIONS, and every
/// item there is a flag of `--help`.
#[test]
fn man_pages_document_every_flag() {
    let root = env!("CARGO_MANIFEST_DIR");
    for (args, page) in [
        (&["--help"][..], "man/profiler.1"),
        (&["record", "--help"], "man/profiler-record.1"),
        (&["daemon", "--help"], "man/profiler-daemon.1"),
        (&["unwind-info", "--help"], "man/profiler-unwind-info.1"),
        (&["report", "--help"], "man/profiler-report.1"),
        (&["diff", "--help"], "man/profiler-diff.1"),
        (&["top", "--help"], "man/profiler-top.1"),
    ] {
        let help = String::from_utf8_lossy(&profiler(args).stdout).into_owned();
        let man = std::fs::read_to_string(format!("{root}/{page}"))
            .unwrap_or_else(|e| panic!("{page}: {e}"));
        let in_help = help_flags(&help);
        let in_man = man_flags(&man);
        assert!(!in_help.is_empty(), "no flags found in {args:?}");
        let undocumented: Vec<_> = in_help.difference(&in_man).collect();
        assert!(undocumented.is_empty(), "{page} lacks {undocumented:?}");
        let unknown: Vec<_> = in_man.difference(&in_help).collect();
        assert!(
            unknown.is_empty(),
            "{page} documents {unknown:?}, which --help does not show"
        );
    }
}

#[test]
fn flag_extraction_tells_short_flags_from_long_ones() {
    let help = "Usage: x\n\nOptions:\n  -p, --pid         profile -a pid\n  --help, help  usage\n";
    let want: Vec<&str> = vec!["--help", "--pid", "-p"];
    assert_eq!(
        help_flags(help)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        want
    );
    let man = ".SH OPTIONS\n.TP\n.BI \\-\\-pid \" pid\"\ntext -p\n.TP\n.B \\-\\-help\n.SH EXIT\n.TP\n.B \\-z\n";
    let found: Vec<String> = man_flags(man).into_iter().collect();
    assert_eq!(
        found,
        vec!["--help", "--pid"],
        "-p only in prose, -z outside OPTIONS"
    );
}
