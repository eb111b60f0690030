//! `profiler report`: one recording read back from all three formats prints one top table;
//! bad input is a clear error, never a panic.

mod common;

use common::view::{record_slowfast, slowfast};
use common::*;

#[test]
fn every_format_of_one_recording_prints_the_same_top_table() {
    let name = "every_format_of_one_recording_prints_the_same_top_table";
    let Some((test, program)) = KernelTest::start_with(name, slowfast()) else {
        return;
    };
    let otlp = record_slowfast(&test, &program, "r.otlp", "1", "1");
    let pprof = test.dir.join("r.pb.gz");
    let folded = test.dir.join("r.folded");
    for converted in [&pprof, &folded] {
        let out = profiler(&["report", arg(&otlp), "-o", arg(converted)]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let tables: Vec<String> = [&otlp, &pprof, &folded]
        .iter()
        .map(|file| {
            let out = profiler(&["report", "-n", "8", arg(file)]);
            assert!(out.status.success(), "{}: {}", file.display(), stderr(&out));
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
        .collect();
    assert!(
        tables[0].contains("Top functions by self samples:"),
        "{}",
        tables[0]
    );
    assert!(tables[0].contains("  steady\n"), "{}", tables[0]);
    assert_eq!(tables[0], tables[1], "OTLP and pprof");
    assert_eq!(tables[0], tables[2], "OTLP and folded");

    // Merging two files doubles every count; selecting the fixture by name keeps all of it.
    let merged = profiler(&["report", "--comm", "slowfast", arg(&pprof), arg(&folded)]);
    assert!(merged.status.success(), "{}", stderr(&merged));
    let merged = String::from_utf8_lossy(&merged.stdout);
    let steady = |table: &str| -> u64 {
        let line = table
            .lines()
            .find(|l| l.ends_with("  steady"))
            .expect("steady");
        line.split_whitespace().next().unwrap().parse().unwrap()
    };
    assert_eq!(steady(&merged), 2 * steady(&tables[0]), "{merged}");
}

#[test]
fn bad_input_is_a_clear_error() {
    let dir = scratch("report_bad_input");
    let text = dir.join("notes.txt");
    std::fs::write(&text, "hello world\n").unwrap();
    let truncated = dir.join("cut.pb.gz");
    std::fs::write(&truncated, [0x1f, 0x8b, 8, 0, 0, 0]).unwrap();
    let junk = dir.join("junk.otlp");
    std::fs::write(&junk, [0xff; 40]).unwrap();
    let folded = dir.join("ok.folded");
    std::fs::write(&folded, "app;main;work 3\n").unwrap();
    expect_exit(
        &["report", arg(&text)],
        1,
        "not folded stacks, pprof or OTLP",
    );
    expect_exit(&["report", arg(&truncated)], 1, "gzip");
    expect_exit(&["report", arg(&junk)], 1, "not a valid OTLP");
    expect_exit(
        &["report", "/nonexistent/p.pb.gz"],
        1,
        "cannot read /nonexistent/p.pb.gz",
    );
    expect_exit(
        &["report", "-p", "1", arg(&folded)],
        1,
        "keep no process IDs",
    );
    expect_exit(
        &["report", "--since", "tomorrow", arg(&folded)],
        2,
        "invalid time",
    );
    expect_exit(&["report"], 2, "no profile given");
    let out = profiler(&["report", arg(&folded)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("3  100.0%  work"));
}
