//! Tests of `super` (the flame graph's layout, colours and self-contained SVG).

use std::time::Instant;

use super::*;
use crate::view::tree::tests::profile;

fn titles(svg: &str) -> Vec<&str> {
    svg.split("<title>")
        .skip(1)
        .filter_map(|s| s.split('\n').next())
        .collect()
}

#[test]
fn draws_every_frame_with_its_share() {
    let p = profile(&[(&["main", "a", "b"], 3), (&["main", "c"], 1)]);
    let svg = flame_graph(&p, "t<1>");
    let names = titles(&svg);
    for name in ["all", "t", "main", "a", "b", "c"] {
        // In the flame graph and in the callers view (where callers repeat per callee).
        assert!(names.iter().filter(|n| **n == name).count() >= 2, "{name}");
    }
    assert!(svg.contains("<title>a\n3 samples, 75.00%</title>"), "{svg}");
    assert!(svg.contains("t&lt;1&gt;"));
    assert!(svg.contains("<script type=\"text/ecmascript\"><![CDATA["));
    assert!(!svg.contains("http://") || !svg.contains("src=\"http"));
}

#[test]
fn root_spans_the_width_and_children_share_it() {
    let p = profile(&[(&["main", "a"], 1), (&["main", "b"], 1)]);
    let svg = flame_graph(&p, "x");
    let full = format!("width=\"{:.2}\"", WIDTH - 2.0 * SIDE);
    let half = format!("width=\"{:.2}\"", (WIDTH - 2.0 * SIDE) / 2.0);
    assert!(svg.contains(&full), "{svg}");
    // a and b in the flame graph; a, b and their callers (main, t twice) in the callers view.
    assert_eq!(svg.matches(&half).count(), 8);
}

#[test]
fn names_are_escaped_and_fitted() {
    assert_eq!(escape("a<b>&\"c\"\u{1}"), "a&lt;b&gt;&amp;&quot;c&quot;?");
    assert_eq!(fit("abcdef", 100.0), "abcdef");
    assert_eq!(fit("abcdefghijklmnop", 6.0 + 5.0 * CHAR), "abc..");
    assert_eq!(fit("abcdef", 10.0), "");
    assert_eq!(group(1234567), "1,234,567");
    assert_eq!(group(12), "12");
}

#[test]
fn classes_get_their_own_colours() {
    let p = profile(&[(&["main"], 1)]);
    let tree = Tree::build(&p, Direction::Callees);
    let colour = class_colour(&tree, 2);
    assert!(
        colour.starts_with("rgb(2"),
        "user code is red-yellow: {colour}"
    );
    assert_eq!(colour, class_colour(&tree, 2), "stable");
}

/// 50,000 distinct stacks, most of them tiny: narrow frames are dropped and counted, and the
/// document stays small.
#[test]
fn fifty_thousand_stacks_stay_small() {
    let names: Vec<String> = (0..50_000).map(|i| format!("leaf_{i}")).collect();
    let mids: Vec<String> = (0..500).map(|i| format!("mid_{i}")).collect();
    let stacks: Vec<(Vec<&str>, u64)> = names
        .iter()
        .enumerate()
        .map(|(i, leaf)| {
            let count = if i % 1000 == 0 { 5_000 } else { 1 };
            (vec!["main", mids[i % 500].as_str(), leaf.as_str()], count)
        })
        .collect();
    let borrowed: Vec<(&[&str], u64)> = stacks.iter().map(|(s, c)| (&s[..], *c)).collect();
    let p = profile(&borrowed);
    let started = Instant::now();
    let svg = flame_graph(&p, "big");
    let frames = svg.matches("<g class=").count();
    assert!(frames < 5_000, "{frames} frames drawn");
    assert!(svg.contains("frames narrower than 0.1 px left out"));
    assert!(svg.contains("leaf_0\n"), "the wide leaves are drawn");
    assert!(!svg.contains("leaf_1\n"));
    eprintln!(
        "{} bytes, {frames} frames in {:?}",
        svg.len(),
        started.elapsed()
    );
}
