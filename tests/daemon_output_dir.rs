//! `profiler daemon --output-dir` with `--max-dir-size`: every window becomes a `ProfilesData`
//! file that holds to the dictionary rules, written whole (no temporary files left), and the
//! oldest of our files are rotated away so the directory stays under its cap, while files that
//! are not ours are never touched. Root (see `common::bpf_available`); every wait is bounded.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use prost::Message;

use common::daemon::Setup;
use common::otlp::window_of;
use common::otlp_check::check_dictionary;
use common::{arg, assert_stats, eventually, stat, stats};
use profiler::proto::otlp::ProfilesData;

/// Our window files in `out` (`profile-*.otlp`), sorted, with their sizes.
fn ours(out: &Path) -> Vec<(String, u64)> {
    let mut files: Vec<(String, u64)> = std::fs::read_dir(out)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name, e.metadata().map(|m| m.len()).unwrap_or(0))
        })
        .filter(|(n, _)| n.starts_with("profile-") && n.ends_with(".otlp"))
        .collect();
    files.sort();
    files
}

#[test]
fn output_dir_gets_window_files_and_stays_under_its_cap() {
    let Some(s) = Setup::start("output_dir_gets_window_files_and_stays_under_its_cap") else {
        return;
    };
    let out = s.dir().join("windows");
    std::fs::create_dir_all(&out).unwrap();
    // Older window files (names sort first) that already fill the 1 MiB cap, so the first
    // window written makes the daemon rotate; and a file that is not ours, never touched.
    const OLD: usize = 700 * 1024;
    let old = [
        "profile-0000-old-000001.otlp",
        "profile-0000-old-000002.otlp",
    ];
    for name in old {
        std::fs::write(out.join(name), vec![0u8; OLD]).unwrap();
    }
    std::fs::write(out.join("notes.txt"), vec![b'x'; 2 << 20]).unwrap();
    let stats_path = s.stats_path();
    let daemon = s.daemon_with_stats(&[
        "--no-endpoint",
        "--output-dir",
        arg(&out),
        "--max-dir-size",
        "1",
        "--interval",
        "1",
        "-F",
        "99",
    ]);
    // The daemon rotates after writing a window (not at start): from the first window's
    // counters on (written after the file and the rotation), the directory is under the cap
    // at every look, while windows keep coming.
    assert!(
        eventually(Duration::from_secs(20), || {
            std::fs::read_to_string(&stats_path).is_ok_and(|t| t.contains("\"windows\""))
                && stat(&stats(&stats_path), "windows") >= 1.0
        }),
        "no window within 20 s:\n{}",
        daemon.log()
    );
    let mut looks = 0;
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        let total: u64 = ours(&out).iter().map(|(_, len)| len).sum();
        assert!(total <= 1 << 20, "{total} bytes of profiles in a 1 MiB dir");
        looks += 1;
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(looks > 5);
    let log = daemon.terminate();

    let files = ours(&out);
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        !names.contains(&old[0]),
        "the oldest file was not rotated away: {names:?}"
    );
    assert!(
        names.contains(&old[1]),
        "rotation deleted more than it had to: {names:?}"
    );
    assert!(
        out.join("notes.txt").exists(),
        "a file not ours was deleted"
    );
    let total: u64 = files.iter().map(|(_, len)| len).sum();
    assert!(total <= 1 << 20, "{total} bytes at exit");
    let windows: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| !n.starts_with("profile-0000-old"))
        .collect();
    assert!(
        windows.len() >= 3,
        "window files after ~5 s at --interval 1: {names:?}\n{log}"
    );
    let mut with_fixture = 0;
    for name in &windows {
        let bytes = std::fs::read(out.join(name)).unwrap();
        let data = ProfilesData::decode(bytes.as_slice())
            .unwrap_or_else(|e| panic!("{name} is not a ProfilesData: {e}"));
        if let Err(errors) = check_dictionary(&data) {
            panic!("{name} breaks the dictionary rules:\n{errors}");
        }
        let w = window_of(&data.resource_profiles, data.dictionary.as_ref(), s.pid);
        if w.symbolized() > 0 {
            with_fixture += 1;
        }
    }
    assert!(with_fixture >= 2, "{with_fixture} files with the fixture");
    let leftovers: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    let counters = stats(&stats_path);
    assert_stats(
        &counters,
        &[
            ("output_files_rotated", 1.0),
            ("output_files_written", windows.len() as f64),
            ("output_files_failed", 0.0),
            ("windows", windows.len() as f64),
        ],
    );
}
