//! The differential view of two profiles: a flame graph of AFTER whose colours say how each
//! frame's share of all samples changed since BEFORE (red: a larger share, slower; blue: a
//! smaller one, faster; white: unchanged), and the table of the functions that moved most.
//!
//! Shares, not sample counts, are compared, so two recordings of different lengths or
//! frequencies compare fairly.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use super::svg::{self, group, Drawing};
use super::tree::{Direction, Tree};
use crate::profile::Profile;
use crate::summary::percent;

/// For every node of `after`, its share (in %) minus the share of the same path in `before`.
fn changes(after: &Tree, before: &Tree) -> Vec<f64> {
    let matched = after.match_in(before);
    after
        .nodes
        .iter()
        .zip(matched)
        .map(|(node, there)| {
            let was = there.map_or(0, |at| before.nodes[at].total);
            percent(node.total, after.total()) - percent(was, before.total())
        })
        .collect()
}

/// The differential flame graph of `before` → `after`.
pub fn diff_graph(before: &Profile, after: &Profile, title: &str) -> String {
    let flame = Tree::build(after, Direction::Callees);
    let callers = Tree::build(after, Direction::Callers);
    let flame_changes = changes(&flame, &Tree::build(before, Direction::Callees));
    let callers_changes = changes(&callers, &Tree::build(before, Direction::Callers));
    let of = |direction: Direction| match direction {
        Direction::Callees => &flame_changes,
        Direction::Callers => &callers_changes,
    };
    // The largest change (outside the root) is full colour; at least 1 point, so noise stays pale.
    let strongest = flame_changes
        .iter()
        .chain(&callers_changes)
        .skip(1)
        .fold(1.0_f64, |m, c| m.max(c.abs()));
    let colour = |direction, _: &Tree, at: usize| change_colour(of(direction)[at], strongest);
    let note = |direction, tree: &Tree, at: usize| {
        let change = of(direction)[at];
        let now = percent(tree.nodes[at].total, tree.total());
        format!(
            "{} samples, {now:.2}% (was {:.2}%, {change:+.2} points)",
            group(tree.nodes[at].total),
            now - change,
        )
    };
    let subtitle = format!(
        "widths: after ({} samples); colours: change in share since before ({} samples), \
         red larger, blue smaller",
        group(after.total_samples()),
        group(before.total_samples())
    );
    svg::render(&Drawing {
        title: title.to_owned(),
        subtitle,
        flame,
        callers,
        colour: &colour,
        note: &note,
    })
}

/// Red for a larger share, blue for a smaller one, as strong as `change` is against `strongest`.
pub fn change_colour(change: f64, strongest: f64) -> String {
    let t = (change.abs() / strongest).clamp(0.0, 1.0);
    let fade = (255.0 - 200.0 * t) as u8;
    if change > 0.0 {
        format!("rgb(255,{fade},{fade})")
    } else if change < 0.0 {
        format!("rgb({fade},{fade},255)")
    } else {
        "rgb(250,250,250)".to_owned()
    }
}

/// A function whose share of self samples changed.
#[derive(Clone, Debug, PartialEq)]
pub struct Mover {
    pub name: String,
    /// Share of all samples where the CPU was in this function, in %.
    pub before: f64,
    pub after: f64,
}

impl Mover {
    pub fn change(&self) -> f64 {
        self.after - self.before
    }
}

/// The `n` functions whose share of self samples changed most (either way), largest first.
pub fn movers(before: &Profile, after: &Profile, n: usize) -> Vec<Mover> {
    let shares = |profile: &Profile| {
        let mut own: HashMap<&str, u64> = HashMap::new();
        for sample in profile.samples.iter() {
            let name = sample.frames.first().map_or("[unknown]", |f| &f.function);
            *own.entry(name).or_default() += sample.count;
        }
        let total = profile.total_samples();
        own.into_iter()
            .map(|(name, count)| (name.to_owned(), percent(count, total)))
            .collect::<BTreeMap<String, f64>>()
    };
    let (was, now) = (shares(before), shares(after));
    let mut rows: Vec<Mover> = was
        .keys()
        .chain(now.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|name| Mover {
            name: name.clone(),
            before: was.get(name).copied().unwrap_or(0.0),
            after: now.get(name).copied().unwrap_or(0.0),
        })
        .collect();
    rows.sort_by(|a, b| {
        b.change()
            .abs()
            .total_cmp(&a.change().abs())
            .then_with(|| a.name.cmp(&b.name))
    });
    rows.truncate(n);
    rows
}

/// The movers as a table: share before, after, change in points, function.
pub fn format_movers(rows: &[Mover]) -> String {
    let mut text = String::from("Biggest changes in self share (before -> after):\n");
    if rows.is_empty() {
        text.push_str("  (no samples)\n");
        return text;
    }
    let _ = writeln!(
        text,
        "  {:>7}  {:>7}  {:>7}  FUNCTION",
        "BEFORE", "AFTER", "CHANGE"
    );
    for row in rows {
        let _ = writeln!(
            text,
            "  {:>6.2}%  {:>6.2}%  {:>+7.2}  {}",
            row.before,
            row.after,
            row.change(),
            row.name
        );
    }
    text
}
