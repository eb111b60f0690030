//! SVG output: the profile as an interactive flame graph (drawn by `crate::view::svg`).

use std::io::{self, Write};

use crate::profile::Profile;
use crate::view::svg::flame_graph;

/// The title of flame graphs written by `record` and `report`.
pub const TITLE: &str = "CPU flame graph";

/// Writes the flame graph of `profile` to `out`.
pub fn write(profile: &Profile, out: &mut dyn Write) -> io::Result<()> {
    out.write_all(flame_graph(profile, TITLE).as_bytes())
}
