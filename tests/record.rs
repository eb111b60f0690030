//! End-to-end tests of `profiler record` on the real kernel path (root; see common::bpf_available).

mod common;

use std::process::{Command, Stdio};

use common::*;

const FP_FLAGS: &[&str] = &["-O1", "-fno-omit-frame-pointer"];

/// `profiler record -F 199 -o DIR/FILE -- COMMAND` in `test`'s directory, which must exit 0:
/// its folded lines.
fn record_command(test: &KernelTest, file: &str, command: &[&str]) -> Vec<(String, u64)> {
    let recorded = Record::new(&test.dir, file)
        .args(&["-F", "199"])
        .command(command)
        .run();
    recorded.assert_success();
    recorded.folded()
}

#[test]
fn frame_pointer_fixture_shows_main_a_b_c() {
    let Some((test, abc)) = KernelTest::start_with(
        "frame_pointer_fixture_shows_main_a_b_c",
        Fixture::c("abc", FP_FLAGS),
    ) else {
        return;
    };
    let lines = record_command(&test, "abc.folded", &[arg(&abc), "3"]);
    let total = count_where(&lines, |s| s.starts_with("abc;"));
    let good = count_where(&lines, |s| {
        s.starts_with("abc;") && s.contains(";main;a;b;c")
    });
    assert!(
        total > 300,
        "expected ~600 samples of abc, got {total}: {lines:?}"
    );
    assert!(
        good * 100 >= total * 90,
        "only {good} of {total} samples show main;a;b;c: {lines:?}"
    );
}

#[test]
fn syscall_fixture_has_symbolized_kernel_frames_above_user_frames() {
    let test = "syscall_fixture_has_symbolized_kernel_frames_above_user_frames";
    let Some((test, exe)) = KernelTest::start_with(test, Fixture::c("readzero", FP_FLAGS)) else {
        return;
    };
    let lines = record_command(&test, "rz.folded", &[arg(&exe), "2"]);
    let total = count_where(&lines, |s| s.starts_with("readzero;"));
    // Kernel frames come after (above) the user frames in root-to-leaf order.
    let in_kernel_read = count_where(&lines, |s| {
        // read_loop itself is invisible: libc's read() keeps no frame pointer.
        let Some(user) = s.find(";main;") else {
            return false;
        };
        s[user..].contains(";ksys_read") || s[user..].contains(";vfs_read")
    });
    assert!(total > 100, "too few samples: {lines:?}");
    assert!(
        in_kernel_read * 2 > total,
        "{in_kernel_read} of {total} in ksys_read/vfs_read: {lines:?}"
    );
}

#[test]
fn command_mode_follows_forked_children_and_returns_the_exit_status() {
    let test = "command_mode_follows_forked_children_and_returns_the_exit_status";
    let Some((test, exe)) = KernelTest::start_with(test, Fixture::c("forker", FP_FLAGS)) else {
        return;
    };
    let recorded = Record::new(&test.dir, "fk.folded")
        .args(&["-F", "199"])
        .command(&[arg(&exe), "2", "7"])
        .run();
    assert_eq!(recorded.code(), Some(7), "{}", recorded.log);
    let lines = recorded.folded();
    let child = count_where(&lines, |s| s.contains(";main;child_work;spin_until"));
    let parent = count_where(&lines, |s| s.contains(";main;parent_work;spin_until"));
    assert!(
        child > 50 && parent > 50,
        "child {child}, parent {parent}: {lines:?}"
    );
    let others = count_where(&lines, |s| !s.starts_with("forker;"));
    assert!(
        others * 20 <= child + parent,
        "samples of other processes leaked in: {lines:?}"
    );
}

#[test]
fn pid_mode_records_only_that_process() {
    let Some((test, exe)) = KernelTest::start_with(
        "pid_mode_records_only_that_process",
        Fixture::c("abc", FP_FLAGS),
    ) else {
        return;
    };
    let wanted = Guard::spawn(Command::new(&exe).arg("4"));
    let other = Guard::spawn(Command::new(&exe).arg("4"));
    let pid = wanted.pid();
    let recorded = Record::new(&test.dir, "p.pb.gz")
        .args(&["-p", &pid.to_string(), "-d", "2"])
        .run();
    drop((wanted, other));
    recorded.assert_success();
    let profile = recorded.pprof();
    let pid_key = profile
        .string_table
        .iter()
        .position(|s| s == "pid")
        .unwrap() as i64;
    let mut samples = 0;
    for sample in &profile.sample {
        let label = sample
            .label
            .iter()
            .find(|l| l.key == pid_key)
            .expect("pid label");
        assert_eq!(label.num, pid as i64, "a sample of another process");
        samples += sample.value[0];
    }
    // ~198 on a quiet machine; other CPU-bound work may halve it.
    assert!(samples > 50, "{samples} samples");
}

#[test]
fn pprof_output_decodes_and_a_real_pprof_reads_it() {
    let Some((test, exe)) = KernelTest::start_with(
        "pprof_output_decodes_and_a_real_pprof_reads_it",
        Fixture::c("abc", FP_FLAGS),
    ) else {
        return;
    };
    let recorded = Record::new(&test.dir, "abc.pb.gz")
        .command(&[arg(&exe), "2"])
        .run();
    recorded.assert_success();
    let profile = recorded.pprof();
    let strings = &profile.string_table;
    assert_eq!(strings[0], "");
    let types: Vec<_> = profile
        .sample_type
        .iter()
        .map(|t| (&strings[t.r#type as usize], &strings[t.unit as usize]))
        .collect();
    assert_eq!(
        types,
        [
            (&"samples".to_string(), &"count".to_string()),
            (&"cpu".to_string(), &"nanoseconds".to_string())
        ]
    );
    assert_eq!(profile.period, 1_000_000_000 / 99);
    let names: Vec<&str> = profile
        .function
        .iter()
        .map(|f| strings[f.name as usize].as_str())
        .collect();
    for f in ["main", "a", "b", "c"] {
        assert!(names.contains(&f), "{f} missing from {names:?}");
    }
    assert!(profile
        .mapping
        .iter()
        .any(|m| strings[m.filename as usize].ends_with("/abc")));

    let pprof = std::env::var("PPROF").unwrap_or_else(|_| "pprof".into());
    match Command::new(&pprof)
        .args(["-top", "-nodecount=5"])
        .arg(recorded.output())
        .stderr(Stdio::piped())
        .output()
    {
        Ok(run) => {
            assert!(
                run.status.success(),
                "pprof rejected the file: {}",
                String::from_utf8_lossy(&run.stderr)
            );
            assert!(
                String::from_utf8_lossy(&run.stdout).contains(" c\n"),
                "{}",
                String::from_utf8_lossy(&run.stdout)
            );
        }
        Err(e) => profiler::testing::skip(
            "pprof reader",
            &format!("no pprof reader ({pprof}: {e}); CI builds one, see .ci/run"),
        ),
    }
}

#[test]
fn busy_system_sample_count_matches_the_frequency_and_nothing_is_lost() {
    let test = "busy_system_sample_count_matches_the_frequency_and_nothing_is_lost";
    let Some((test, exe)) = KernelTest::start_with(test, Fixture::c("abc", FP_FLAGS)) else {
        return;
    };
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let burners: Vec<Guard> = (0..cpus)
        .map(|_| Guard::spawn(Command::new(&exe).arg("13")))
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let recorded = Record::new(&test.dir, "busy.folded")
        .args(&["-a", "-F", "99", "-d", "10"])
        .stats("stats.json")
        .run();
    drop(burners);
    recorded.assert_success();
    let stats = recorded.stats();
    let expected = 99.0 * cpus as f64 * stat(&stats, "duration_seconds");
    let samples = stat(&stats, "samples");
    assert!(
        (samples - expected).abs() <= expected * 0.10,
        "{samples} samples, expected ~{expected}"
    );
    let lost = [
        "samples_lost",
        "samples_send_failed",
        "samples_queue_dropped",
    ];
    assert_stats(&stats, &lost.map(|name| (name, 0.0)));
    let written: u64 = recorded.folded().iter().map(|(_, c)| c).sum();
    assert_eq!(
        written as f64, samples,
        "every sample received is in the output"
    );
}

/// The maintainer holds the executables it registered open, so a binary deleted (or a process
/// gone) before symbolization is still read; without that, frames fall back to file+offset.
#[test]
fn a_binary_deleted_before_symbolization_is_still_symbolized() {
    let test = "a_binary_deleted_before_symbolization_is_still_symbolized";
    let Some((test, abc)) = KernelTest::start_with(test, Fixture::c("abc", FP_FLAGS)) else {
        return;
    };
    let gone = test.dir.join("gone");
    let script = format!(
        "cp {0} {1} && {1} 1; rm -f {1}",
        abc.display(),
        gone.display()
    );
    let lines = record_command(&test, "v.folded", &["sh", "-c", &script]);
    assert!(!gone.exists());
    let in_gone = count_where(&lines, |s| s.starts_with("gone;"));
    let named = count_where(&lines, |s| {
        s.starts_with("gone;") && s.contains(";main;a;b;c")
    });
    assert!(in_gone > 50, "{lines:?}");
    assert!(
        named * 10 >= in_gone * 9,
        "frames of the deleted file: {lines:?}"
    );
}

#[test]
fn a_process_with_twenty_thousand_mappings_is_handled_quietly() {
    let test = "a_process_with_twenty_thousand_mappings_is_handled_quietly";
    let Some((test, exe)) = KernelTest::start_with(test, Fixture::c("manymaps", FP_FLAGS)) else {
        return;
    };
    // Profile it once its mappings exist, so the first sync sees all of them.
    let target = Guard::spawn(Command::new(&exe).args(["20000", "6"]));
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let recorded = Record::new(&test.dir, "m.folded")
        .args(&["-F", "199", "-d", "2", "-p", &target.pid().to_string()])
        .stats("m.json")
        .run();
    drop(target);
    let log = &recorded.log;
    recorded.assert_success();
    assert!(log.lines().count() < 40, "a flood of messages: {log}");
    assert!(!log.contains("warning") && !log.contains("error"), "{log}");
    let stats = recorded.stats();
    assert!(stat(&stats, "syncs") >= 1.0);
    assert!(
        stat(&stats, "map_updates") >= 20_000.0,
        "every mapping got its entries"
    );
    let errors = [
        "map_update_errors",
        "map_delete_errors",
        "stale_pid_entries",
        "missing_pid_entries",
    ];
    assert_stats(&stats, &errors.map(|name| (name, 0.0)));
    let lines = recorded.folded();
    let total = count_where(&lines, |s| s.starts_with("manymaps;"));
    let named = count_where(&lines, |s| {
        s.starts_with("manymaps;") && s.contains(";main;spin_among_many_mappings")
    });
    assert!(named * 10 >= total * 8, "{named} of {total}: {lines:?}");
}

#[test]
fn unwind_tables_are_kept_between_sessions_and_serve_the_next() {
    let Some((test, abc)) = KernelTest::start_with(
        "unwind_tables_are_kept_between_sessions_and_serve_the_next",
        Fixture::c("abc", &["-O1", "-fomit-frame-pointer"]),
    ) else {
        return;
    };
    let cache = test.dir.join("cache");
    let session = |n: usize, cache: &std::path::Path| {
        let recorded = Record::new(&test.dir, &format!("abc{n}.folded"))
            .args(&["-F", "199"])
            .stats(&format!("abc{n}.json"))
            .env("PROFILER_TABLE_CACHE", cache)
            .command(&[arg(&abc), "1"])
            .run();
        recorded.assert_success();
        let lines = recorded.folded();
        let total = count_where(&lines, |s| s.starts_with("abc;"));
        let good = count_where(&lines, |s| {
            s.starts_with("abc;") && s.contains("__libc_start_main;") && s.contains(";main;a;b;c")
        });
        assert!(total > 100, "{total} samples: {lines:?}");
        assert!(good * 100 >= total * 90, "{good} of {total}: {lines:?}");
        stat(&recorded.stats(), "unwind_tables_cached")
    };
    assert_eq!(session(1, &cache), 0.0, "an empty cache");
    let entries = std::fs::read_dir(&cache)
        .expect("the cache was made")
        .count();
    assert!(
        entries >= 2,
        "the fixture's and libc's tables at least: {entries}"
    );
    let cached = session(2, &cache);
    assert!(cached >= 2.0, "the second session loads them: {cached}");
    // Turned off, nothing is read or written.
    let off = test.dir.join("off");
    assert_eq!(session(3, std::path::Path::new("off")), 0.0);
    assert!(!off.exists() && !std::path::Path::new("off").exists());
}
