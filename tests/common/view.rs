//! Reading the flame graphs the profiler draws: the frames of the flame view of an SVG (or of
//! the DOM a browser dumps after running its script), each with its name, CSS classes, box
//! width and fill, and the slowfast fixture the view tests profile.

use std::path::{Path, PathBuf};

use super::{arg, Fixture, KernelTest, Record};

/// `tests/fixtures/slowfast.c` with frame pointers: `main;steady`, `main;other`, `main;slow`.
pub fn slowfast() -> Fixture {
    Fixture::c("slowfast", &["-O1", "-fno-omit-frame-pointer"])
}

/// `profiler record -F 199 -o DIR/FILE -- slowfast SECONDS FACTOR` in `test`'s directory, which
/// must succeed: the output's path.
pub fn record_slowfast(
    test: &KernelTest,
    program: &Path,
    file: &str,
    seconds: &str,
    factor: &str,
) -> PathBuf {
    let recorded = Record::new(&test.dir, file)
        .args(&["-F", "199"])
        .command(&[arg(program), seconds, factor])
        .run();
    recorded.assert_success();
    recorded.output().to_path_buf()
}

/// One drawn frame of the flame view.
#[derive(Debug)]
pub struct Frame {
    pub name: String,
    pub classes: String,
    pub width: f64,
    pub fill: String,
}

fn attribute<'a>(element: &'a str, name: &str) -> Option<&'a str> {
    let start = element.find(&format!(" {name}=\""))? + name.len() + 3;
    element[start..].split('"').next()
}

/// The frames of the flame view (`<g id="flame">`, not the callers view), in document order.
pub fn flame_frames(svg: &str) -> Vec<Frame> {
    let flame = svg.split("<g id=\"flame\"").nth(1).unwrap_or("");
    let flame = flame.split("<g id=\"callers\"").next().unwrap_or(flame);
    flame
        .split("<g class=\"")
        .skip(1)
        .filter_map(|chunk| {
            let classes = chunk.split('"').next()?.to_owned();
            let name = chunk
                .split("<title>")
                .nth(1)?
                .split('\n')
                .next()?
                .to_owned();
            let rect = chunk.split("<rect").nth(1)?.split('>').next()?;
            Some(Frame {
                name,
                classes,
                width: attribute(rect, "width")?.parse().ok()?,
                fill: attribute(rect, "fill").unwrap_or("").to_owned(),
            })
        })
        .collect()
}

/// The widest frame called `name`.
pub fn widest<'a>(frames: &'a [Frame], name: &str) -> Option<&'a Frame> {
    frames
        .iter()
        .filter(|f| f.name == name)
        .max_by(|a, b| a.width.total_cmp(&b.width))
}

/// `rgb(R,G,B)` as numbers.
pub fn rgb(fill: &str) -> Option<(u8, u8, u8)> {
    let inner = fill.strip_prefix("rgb(")?.strip_suffix(')')?;
    let mut parts = inner.split(',').map(|p| p.trim().parse::<u8>().ok());
    Some((parts.next()??, parts.next()??, parts.next()??))
}
