//! `profiler diff`: a function made twice as slow is red in the differential flame graph and
//! first in the table of movers.

mod common;

use common::view::{flame_frames, record_slowfast, rgb, slowfast, widest};
use common::*;

#[test]
fn a_function_made_slower_is_red_and_first() {
    let name = "a_function_made_slower_is_red_and_first";
    let Some((test, program)) = KernelTest::start_with(name, slowfast()) else {
        return;
    };
    let before = record_slowfast(&test, &program, "before.pb.gz", "2", "1");
    let after = record_slowfast(&test, &program, "after.folded", "2", "2");
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
