//! The interactive flame graph: one self-contained SVG document (no network, no external
//! script) drawing a [`Tree`] of frames, with its stylesheet (`flame.css`) and script
//! (`flame.js`) inlined.
//!
//! This module owns the layout (pixel geometry, text fitting, colours) and the markup. The
//! document draws the flame graph by itself, so it shows in any SVG viewer; the script adds
//! search, zoom, tooltips, the icicle layout and the reversed (callers) view, which is a second,
//! hidden tree. Frames narrower than a tenth of a pixel are left out and counted in the subtitle,
//! so 50,000 distinct stacks still make a document a browser draws at once.

use std::fmt::Write as _;

use super::tree::{Class, Direction, Tree};
use crate::profile::Profile;
use crate::summary::percent;

/// Width of the drawing, in pixels.
pub const WIDTH: f64 = 1200.0;
/// Height of one frame.
const FRAME: f64 = 16.0;
/// Space above the frames (title, subtitle, controls) and below them (details line).
const TOP: f64 = 64.0;
const BOTTOM: f64 = 28.0;
const SIDE: f64 = 10.0;
/// Frames narrower than this many pixels are not drawn.
const MIN_PIXELS: f64 = 0.1;
/// Average width of a character of the 12 px font, to fit names in frames.
const CHAR: f64 = 7.0;

const SCRIPT: &str = include_str!("flame.js");
const STYLE: &str = include_str!("flame.css");

/// A colour per node, chosen by the caller (by class and name, or by change in a diff).
pub type Colours<'a> = &'a dyn Fn(Direction, &Tree, usize) -> String;
/// A tooltip's second line per node (samples and share, and for a diff the change).
pub type Notes<'a> = &'a dyn Fn(Direction, &Tree, usize) -> String;

/// What to draw.
pub struct Drawing<'a> {
    pub title: String,
    pub subtitle: String,
    pub flame: Tree,
    pub callers: Tree,
    pub colour: Colours<'a>,
    pub note: Notes<'a>,
}

/// The flame graph of `profile`, coloured by frame class.
pub fn flame_graph(profile: &Profile, title: &str) -> String {
    let flame = Tree::build(profile, Direction::Callees);
    let callers = Tree::build(profile, Direction::Callers);
    let subtitle = format!(
        "{} samples, {} distinct stacks",
        group(flame.total()),
        group(profile.samples.len() as u64)
    );
    render(&Drawing {
        title: title.to_owned(),
        subtitle,
        flame,
        callers,
        colour: &|_, tree, at| class_colour(tree, at),
        note: &|_, tree, at| share_note(tree, at),
    })
}

/// "1,234 samples, 12.34%".
pub fn share_note(tree: &Tree, at: usize) -> String {
    let node = &tree.nodes[at];
    format!(
        "{} samples, {:.2}%",
        group(node.total),
        percent(node.total, tree.total())
    )
}

/// The SVG document for `drawing`.
pub fn render(drawing: &Drawing) -> String {
    let views = [
        ("flame", &drawing.flame, ""),
        ("callers", &drawing.callers, " style=\"display:none\""),
    ];
    let min_total = |tree: &Tree| (tree.total() as f64 * MIN_PIXELS / (WIDTH - 2.0 * SIDE)) as u64;
    let depth = views
        .iter()
        .map(|(_, tree, _)| {
            let mut deepest = 0;
            tree.visit_wide(min_total(tree), |at, _| {
                deepest = deepest.max(tree.nodes[at].depth)
            });
            deepest
        })
        .max()
        .unwrap_or(0);
    let height = TOP + f64::from(depth + 1) * FRAME + BOTTOM;
    let mut svg = String::with_capacity(1 << 16);
    let _ = write!(
        svg,
        "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"no\"?>\n\
         <svg version=\"1.1\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" \
         height=\"{height}\" viewBox=\"0 0 {WIDTH} {height}\" data-top=\"{TOP}\" \
         data-frame=\"{FRAME}\" data-depth=\"{depth}\" data-side=\"{SIDE}\">\n\
         <style type=\"text/css\"><![CDATA[\n{STYLE}]]></style>\n\
         <script type=\"text/ecmascript\"><![CDATA[\n{SCRIPT}]]></script>\n\
         <rect class=\"background\" x=\"0\" y=\"0\" width=\"100%\" height=\"100%\"/>\n\
         <text id=\"title\" x=\"{}\" y=\"22\">{}</text>\n",
        WIDTH / 2.0,
        escape(&drawing.title),
    );
    let mut dropped = (0, 0);
    for (id, tree, hidden) in views {
        let _ = writeln!(svg, "<g id=\"{id}\"{hidden}>");
        let direction = match id {
            "flame" => Direction::Callees,
            _ => Direction::Callers,
        };
        let (nodes, samples) = draw_tree(&mut svg, drawing, direction, min_total(tree), depth);
        if id == "flame" {
            dropped = (nodes, samples);
        }
        svg.push_str("</g>\n");
    }
    let mut subtitle = drawing.subtitle.clone();
    if dropped.0 > 0 {
        let _ = write!(
            subtitle,
            "; {} frames narrower than {MIN_PIXELS} px left out ({} samples)",
            group(dropped.0),
            group(dropped.1)
        );
    }
    let _ = write!(
        svg,
        "<text id=\"subtitle\" x=\"{}\" y=\"40\">{}</text>\n\
         <text id=\"reset\" class=\"button\" x=\"{SIDE}\" y=\"58\">Reset zoom</text>\n\
         <text id=\"search\" class=\"button\" x=\"110\" y=\"58\">Search</text>\n\
         <text id=\"icicle\" class=\"button\" x=\"180\" y=\"58\">Icicle</text>\n\
         <text id=\"invert\" class=\"button\" x=\"240\" y=\"58\">Callers</text>\n\
         <text id=\"matched\" x=\"{}\" y=\"58\"> </text>\n\
         <text id=\"details\" x=\"{SIDE}\" y=\"{}\"> </text>\n\
         </svg>\n",
        WIDTH / 2.0,
        escape(&subtitle),
        WIDTH - SIDE,
        height - 10.0,
    );
    svg
}

/// Draws the wide enough nodes of `tree` as `<g>` elements; returns what was left out.
fn draw_tree(
    svg: &mut String,
    drawing: &Drawing,
    direction: Direction,
    min_total: u64,
    depth: u32,
) -> (u64, u64) {
    let tree = match direction {
        Direction::Callees => &drawing.flame,
        Direction::Callers => &drawing.callers,
    };
    let total = tree.total().max(1) as f64;
    let scale = (WIDTH - 2.0 * SIDE) / total;
    tree.visit_wide(min_total, |at, x| {
        let node = &tree.nodes[at];
        let left = SIDE + x as f64 * scale;
        let width = node.total as f64 * scale;
        let y = TOP + f64::from(depth - node.depth) * FRAME;
        let name = escape(&node.name);
        let _ = write!(
            svg,
            "<g class=\"{}\" data-x=\"{x}\" data-w=\"{}\" data-d=\"{}\">\
             <title>{name}\n{}</title>\
             <rect x=\"{left:.2}\" y=\"{y}\" width=\"{width:.2}\" height=\"{}\" fill=\"{}\"/>\
             <text x=\"{:.2}\" y=\"{}\">{}</text></g>\n",
            node.class.css(),
            node.total,
            node.depth,
            escape(&(drawing.note)(direction, tree, at)),
            FRAME - 1.0,
            (drawing.colour)(direction, tree, at),
            left + 3.0,
            y + FRAME - 4.5,
            escape(&fit(&node.name, width)),
        );
    })
}

/// `name` cut to fit `width` pixels, ending in `..` when cut; empty when not even 3 fit.
fn fit(name: &str, width: f64) -> String {
    let room = ((width - 6.0) / CHAR).floor();
    if room < 3.0 {
        return String::new();
    }
    let room = room as usize;
    if name.chars().count() <= room {
        return name.to_owned();
    }
    let mut cut: String = name.chars().take(room - 2).collect();
    cut.push_str("..");
    cut
}

/// The colour of a node by its class, varied by a hash of its name (the same name always
/// gets the same colour): red-yellow user code, orange kernel, aqua inlined, green Python,
/// grey for the root and thread names.
pub fn class_colour(tree: &Tree, at: usize) -> String {
    let node = &tree.nodes[at];
    let (v1, v2) = name_hash(&node.name);
    let (r, g, b) = match node.class {
        Class::User => (200.0 + 55.0 * v1, 50.0 + 100.0 * v2, 50.0 + 30.0 * v1),
        Class::Kernel => (225.0 + 30.0 * v2, 140.0 + 50.0 * v1, 30.0 + 30.0 * v2),
        Class::Inlined => (50.0 + 60.0 * v1, 190.0 + 40.0 * v2, 190.0 + 40.0 * v1),
        Class::Python => (50.0 + 60.0 * v1, 180.0 + 50.0 * v2, 50.0 + 60.0 * v2),
        Class::Meta => (190.0 + 20.0 * v1, 190.0 + 20.0 * v1, 200.0 + 20.0 * v1),
    };
    format!("rgb({},{},{})", r as u8, g as u8, b as u8)
}

/// Two numbers in [0, 1) from `name` (FNV-1a), to vary colours.
fn name_hash(name: &str) -> (f64, f64) {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    (
        (hash & 0xffff) as f64 / 65536.0,
        ((hash >> 16) & 0xffff) as f64 / 65536.0,
    )
}

/// `1234567` as `1,234,567`.
pub fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Text safe in XML character data and attribute values: markup characters as entities, and
/// the control characters XML 1.0 forbids as `?`.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' | '\t' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
#[path = "svg_tests.rs"]
mod tests;
