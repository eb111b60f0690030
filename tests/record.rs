//! End-to-end tests of `profiler record` on the real kernel path (root; see common::bpf_available).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::*;
use profiler::proto::pprof as pprof_proto;
use prost::Message;

const FP_FLAGS: &[&str] = &["-O1", "-fno-omit-frame-pointer"];

fn count_where(lines: &[(String, u64)], f: impl Fn(&str) -> bool) -> u64 {
    lines.iter().filter(|(s, _)| f(s)).map(|(_, c)| c).sum()
}

#[test]
fn frame_pointer_fixture_shows_main_a_b_c() {
    if !bpf_available("frame_pointer_fixture_shows_main_a_b_c") {
        return;
    }
    let _serial = serial();
    let dir = scratch("abc");
    let abc = build_fixture(&dir, "abc", FP_FLAGS);
    let out_path = dir.join("abc.folded");
    let out = profiler(&[
        "record",
        "-F",
        "199",
        "-o",
        out_path.to_str().unwrap(),
        "--",
        abc.to_str().unwrap(),
        "3",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = folded(&out_path);
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
    if !bpf_available("syscall_fixture_has_symbolized_kernel_frames_above_user_frames") {
        return;
    }
    let _serial = serial();
    let dir = scratch("readzero");
    let exe = build_fixture(&dir, "readzero", FP_FLAGS);
    let out_path = dir.join("rz.folded");
    let out = profiler(&[
        "record",
        "-F",
        "199",
        "-o",
        out_path.to_str().unwrap(),
        "--",
        exe.to_str().unwrap(),
        "2",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = folded(&out_path);
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
    if !bpf_available("command_mode_follows_forked_children_and_returns_the_exit_status") {
        return;
    }
    let _serial = serial();
    let dir = scratch("forker");
    let exe = build_fixture(&dir, "forker", FP_FLAGS);
    let out_path = dir.join("fk.folded");
    let out = profiler(&[
        "record",
        "-F",
        "199",
        "-o",
        out_path.to_str().unwrap(),
        "--",
        exe.to_str().unwrap(),
        "2",
        "7",
    ]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let lines = folded(&out_path);
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
    if !bpf_available("pid_mode_records_only_that_process") {
        return;
    }
    let _serial = serial();
    let dir = scratch("pid");
    let exe = build_fixture(&dir, "abc", FP_FLAGS);
    let mut wanted = Command::new(&exe).arg("4").spawn().unwrap();
    let mut other = Command::new(&exe).arg("4").spawn().unwrap();
    let out_path = dir.join("p.pb.gz");
    let pid = wanted.id().to_string();
    let out = profiler(&[
        "record",
        "-p",
        &pid,
        "-d",
        "2",
        "-o",
        out_path.to_str().unwrap(),
    ]);
    let _ = (wanted.kill(), other.kill(), wanted.wait(), other.wait());
    assert!(out.status.success(), "{}", stderr(&out));
    let profile = read_pprof(&out_path);
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
        assert_eq!(label.num, wanted.id() as i64, "a sample of another process");
        samples += sample.value[0];
    }
    // ~198 on a quiet machine; other CPU-bound work may halve it.
    assert!(samples > 50, "{samples} samples");
}

fn read_pprof(path: &Path) -> pprof_proto::Profile {
    let bytes = std::fs::read(path).unwrap();
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut raw)
        .expect("gzip");
    pprof_proto::Profile::decode(&raw[..]).expect("a valid pprof protobuf")
}

#[test]
fn pprof_output_decodes_and_a_real_pprof_reads_it() {
    if !bpf_available("pprof_output_decodes_and_a_real_pprof_reads_it") {
        return;
    }
    let _serial = serial();
    let dir = scratch("pprof");
    let exe = build_fixture(&dir, "abc", FP_FLAGS);
    let out_path = dir.join("abc.pb.gz");
    let out = profiler(&[
        "record",
        "-o",
        out_path.to_str().unwrap(),
        "--",
        exe.to_str().unwrap(),
        "2",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let profile = read_pprof(&out_path);
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
        .arg(&out_path)
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
    if !bpf_available("busy_system_sample_count_matches_the_frequency_and_nothing_is_lost") {
        return;
    }
    let _serial = serial();
    let dir = scratch("busy");
    let exe = build_fixture(&dir, "abc", FP_FLAGS);
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut burners: Vec<_> = (0..cpus)
        .map(|_| Command::new(&exe).arg("13").spawn().unwrap())
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (out_path, stats_path) = (dir.join("busy.folded"), dir.join("stats.json"));
    let out = profiler(&[
        "record",
        "-a",
        "-F",
        "99",
        "-d",
        "10",
        "-o",
        out_path.to_str().unwrap(),
        "--stats-json",
        stats_path.to_str().unwrap(),
    ]);
    for b in &mut burners {
        let _ = (b.kill(), b.wait());
    }
    assert!(out.status.success(), "{}", stderr(&out));
    let stats = stats(&stats_path);
    let expected = 99.0 * cpus as f64 * stat(&stats, "duration_seconds");
    let samples = stat(&stats, "samples");
    assert!(
        (samples - expected).abs() <= expected * 0.10,
        "{samples} samples, expected ~{expected}"
    );
    assert_eq!(stat(&stats, "samples_lost"), 0.0);
    assert_eq!(stat(&stats, "samples_send_failed"), 0.0);
    assert_eq!(stat(&stats, "samples_queue_dropped"), 0.0);
    let written: u64 = folded(&out_path).iter().map(|(_, c)| c).sum();
    assert_eq!(
        written as f64, samples,
        "every sample received is in the output"
    );
}

/// The maintainer holds the executables it registered open, so a binary deleted (or a process
/// gone) before symbolization is still read; without that, frames fall back to file+offset.
#[test]
fn a_binary_deleted_before_symbolization_is_still_symbolized() {
    if !bpf_available("a_binary_deleted_before_symbolization_is_still_symbolized") {
        return;
    }
    let _serial = serial();
    let dir = scratch("vanish");
    let abc = build_fixture(&dir, "abc", FP_FLAGS);
    let gone = dir.join("gone");
    let script = format!(
        "cp {0} {1} && {1} 1; rm -f {1}",
        abc.display(),
        gone.display()
    );
    let out_path = dir.join("v.folded");
    let out = profiler(&[
        "record",
        "-F",
        "199",
        "-o",
        out_path.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        &script,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!gone.exists());
    let lines = folded(&out_path);
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
    if !bpf_available("a_process_with_twenty_thousand_mappings_is_handled_quietly") {
        return;
    }
    let _serial = serial();
    let dir = scratch("manymaps");
    let exe = build_fixture(&dir, "manymaps", FP_FLAGS);
    // Profile it once its mappings exist, so the first sync sees all of them.
    let mut target = Command::new(&exe).args(["20000", "6"]).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let (out_path, stats_path) = (dir.join("m.folded"), dir.join("m.json"));
    let pid = target.id().to_string();
    let out = profiler(&[
        "record",
        "-F",
        "199",
        "-d",
        "2",
        "-p",
        &pid,
        "-o",
        out_path.to_str().unwrap(),
        "--stats-json",
        stats_path.to_str().unwrap(),
    ]);
    let _ = (target.kill(), target.wait());
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.lines().count() < 40, "a flood of messages: {log}");
    assert!(!log.contains("warning") && !log.contains("error"), "{log}");
    let stats = stats(&stats_path);
    assert!(stat(&stats, "syncs") >= 1.0);
    assert!(
        stat(&stats, "map_updates") >= 20_000.0,
        "every mapping got its entries"
    );
    for counter in [
        "map_update_errors",
        "map_delete_errors",
        "stale_pid_entries",
        "missing_pid_entries",
    ] {
        assert_eq!(stat(&stats, counter), 0.0, "{counter}");
    }
    let lines = folded(&out_path);
    let total = count_where(&lines, |s| s.starts_with("manymaps;"));
    let named = count_where(&lines, |s| {
        s.starts_with("manymaps;") && s.contains(";main;spin_among_many_mappings")
    });
    assert!(named * 10 >= total * 8, "{named} of {total}: {lines:?}");
}
