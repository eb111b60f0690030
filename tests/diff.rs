//! `profiler diff`: a function made twice as slow is red in the differential flame graph and
//! first in the table of movers.

mod common;

use common::view::{flame_frames, rgb, slowfast, widest};
use common::*;
use std::path::{Path, PathBuf};

/// Records slowfast with steady and other one unit each, so slow's gain in share is taken from
/// both alike (+17 points against -8 each). With steady at two units (the default) the gain is only
/// 1.5× steady's loss, which 400 samples did not always tell apart (a CI run ranked steady first).
fn record(test: &KernelTest, program: &Path, file: &str, factor: &str) -> PathBuf {
    let recorded = Record::new(&test.dir, file)
        .args(&["-F", "499"])
        .command(&[arg(program), "2", factor, "1"])
        .run();
    recorded.assert_success();
    recorded.output().to_path_buf()
}

#[test]
fn a_function_made_slower_is_red_and_first() {
    let name = "a_function_made_slower_is_red_and_first";
    let Some((test, program)) = KernelTest::start_with(name, slowfast()) else {
        return;
    };
    let before = record(&test, &program, "before.pb.gz", "1");
    let after = record(&test, &program, "after.folded", "2");
    let svg = test.dir.join("diff.svg");
    let out = profiler(&["diff", arg(&before), arg(&after), "-o", arg(&svg)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    let first = table.lines().nth(2).expect("a first mover");
    assert!(first.ends_with("  slow"), "slow moved most: {table}");
    assert!(first.contains(" +"), "slow's share grew: {table}");

    let frames = flame_frames(&std::fs::read_to_string(&svg).expect("read diff.svg"));
    let slow = widest(&frames, "slow").expect("slow drawn");
    let (r, g, b) = rgb(&slow.fill).expect("an rgb fill");
    assert!(r == 255 && g < 200 && b < 200, "slow is red: {slow:?}");
    let steady = widest(&frames, "steady").expect("steady drawn");
    let (r, _, b) = rgb(&steady.fill).expect("an rgb fill");
    assert!(
        b == 255 && r < 255,
        "steady, a smaller share now, is blue: {steady:?}"
    );
}
