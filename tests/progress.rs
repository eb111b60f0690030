//! `record`'s progress line: shown on a terminal before the session ends, never otherwise.

mod common;

use std::process::Command;

use common::*;

#[test]
fn progress_shows_on_a_terminal_only() {
    let Some(test) = KernelTest::start("progress_shows_on_a_terminal_only") else {
        return;
    };
    let output = test.dir.join("y.folded");
    let command = format!("'{PROFILER}' record -d 3 -o '{}'", output.display());
    let run = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .output();
    let out = match run {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            profiler::testing::skip(test.name, "no script (util-linux) on PATH");
            return;
        }
        Err(e) => panic!("run script: {e}"),
    };
    assert!(out.status.success(), "{}", stderr(&out));
    let transcript = String::from_utf8_lossy(&out.stdout).into_owned();
    let progress = transcript
        .find("profiler: recording ")
        .unwrap_or_else(|| panic!("no progress line: {transcript}"));
    let summary = transcript.find("profiler: recorded ").expect("the summary");
    assert!(
        progress < summary,
        "progress comes before the end: {transcript}"
    );
    let line = &transcript[progress..summary];
    assert!(
        line.contains(" samples, ") && line.contains(" stacks"),
        "{transcript}"
    );

    // Without a terminal (stderr is a pipe here), and with --quiet on one, no progress line.
    let recorded = Record::new(&test.dir, "z.folded").args(&["-d", "1"]).run();
    recorded.assert_success();
    assert!(!recorded.log.contains("recording "), "{}", recorded.log);
    let quiet = format!("'{PROFILER}' record -q -d 1 -o '{}'", output.display());
    let out = Command::new("script")
        .args(["-qec", &quiet, "/dev/null"])
        .output()
        .expect("run script");
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(transcript.contains("profiler: recorded "), "{transcript}");
    assert!(!transcript.contains("profiler: recording "), "{transcript}");
}
