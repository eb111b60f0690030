//! `record -o x.svg`: the flame graph is well-formed XML holding the fixture's frames, and in
//! headless Chromium it draws, and its search and zoom work.

mod common;

use std::path::Path;
use std::process::Command;

use common::view::{flame_frames, record_slowfast, slowfast, widest};
use common::*;

/// The names of every `<title>` of the SVG, as Python's XML parser reads them.
fn parsed_titles(svg: &Path) -> Vec<String> {
    let script = "import sys, xml.etree.ElementTree as E\n\
                  root = E.parse(sys.argv[1]).getroot()\n\
                  for t in root.iter('{http://www.w3.org/2000/svg}title'):\n\
                  \x20   print(t.text.split('\\n')[0])\n";
    let out = Command::new("python3")
        .args(["-c", script, arg(svg)])
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "the XML parser refused the SVG: {}",
        stderr(&out)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Chromium (Debian's `chromium`), headless, on `url`, with `args`; `None` when absent.
fn chromium(test: &str, args: &[&str], url: &str) -> Option<std::process::Output> {
    let run = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--virtual-time-budget=5000",
        ])
        .args(args)
        .arg(url)
        .output();
    match run {
        Ok(out) => Some(out),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            profiler::testing::skip(test, "no chromium on PATH");
            None
        }
        Err(e) => panic!("run chromium: {e}"),
    }
}

/// Pixels of a PNG in the flame graph's warm colours (red to yellow), decoded by python3.
fn warm_pixels(png: &Path) -> u64 {
    let script = r#"
import sys, zlib, struct
data = open(sys.argv[1], 'rb').read()
pos, idat, width, height = 8, b'', 0, 0
while pos < len(data):
    n, kind = struct.unpack('>I4s', data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + n]
    if kind == b'IHDR':
        width, height, depth, colour = struct.unpack('>IIBB', body[:10])
        assert depth == 8 and colour in (2, 6), (depth, colour)
        bpp = 4 if colour == 6 else 3
    elif kind == b'IDAT':
        idat += body
    pos += 12 + n
raw, stride, prev, warm = zlib.decompress(idat), width * bpp, bytearray(width * bpp), 0
for y in range(height):
    kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
    for i in range(stride):
        a = line[i - bpp] if i >= bpp else 0
        b, c = prev[i], prev[i - bpp] if i >= bpp else 0
        if kind == 1: line[i] = (line[i] + a) & 255
        elif kind == 2: line[i] = (line[i] + b) & 255
        elif kind == 3: line[i] = (line[i] + (a + b) // 2) & 255
        elif kind == 4:
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    for x in range(0, stride, bpp):
        r, g, bl = line[x], line[x + 1], line[x + 2]
        if r > 190 and bl < 110 and g < 200:
            warm += 1
    prev = line
print(warm)
"#;
    let out = Command::new("python3")
        .args(["-c", script, arg(png)])
        .output()
        .expect("run python3");
    assert!(out.status.success(), "decode the PNG: {}", stderr(&out));
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a count")
}

#[test]
fn record_writes_a_flame_graph_that_draws_searches_and_zooms() {
    let name = "record_writes_a_flame_graph_that_draws_searches_and_zooms";
    let Some((test, program)) = KernelTest::start_with(name, slowfast()) else {
        return;
    };
    let svg_path = record_slowfast(&test, &program, "x.svg", "2", "1");
    let titles = parsed_titles(&svg_path);
    for frame in ["main", "steady", "other", "slow", "slowfast"] {
        assert!(titles.iter().any(|t| t == frame), "{frame} in {titles:?}");
    }

    let url = format!("file://{}", svg_path.display());
    let png = test.dir.join("shot.png");
    let screenshot = format!("--screenshot={}", png.display());
    let Some(shot) = chromium(name, &[&screenshot, "--window-size=1200,400"], &url) else {
        return;
    };
    assert!(png.is_file(), "no screenshot: {}", stderr(&shot));
    let warm = warm_pixels(&png);
    assert!(
        warm > 20_000,
        "the screenshot shows no flame graph: {warm} warm pixels"
    );

    // Search for steady and zoom into slow, through the address's fragment.
    let Some(dump) = chromium(
        name,
        &["--dump-dom"],
        &format!("{url}#search=%5Esteady%24&zoom=slow"),
    ) else {
        return;
    };
    let dom = String::from_utf8_lossy(&dump.stdout).into_owned();
    let matched = dom
        .split("id=\"matched\"")
        .nth(1)
        .and_then(|s| s.split("Matched: ").nth(1))
        .and_then(|s| s.split('%').next())
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no matched share in the DOM: {dom}"));
    assert!((20.0..80.0).contains(&matched), "steady matched {matched}%");
    let frames = flame_frames(&dom);
    let steady = widest(&frames, "steady").expect("steady drawn");
    assert!(steady.classes.contains("match"), "{steady:?}");
    assert!(
        steady.classes.contains("hide"),
        "zoomed into slow, steady is hidden: {steady:?}"
    );
    let slow = widest(&frames, "slow").expect("slow drawn");
    assert_eq!(
        slow.width, 1180.0,
        "slow fills the width once zoomed into: {slow:?}"
    );
    let main = widest(&frames, "main").expect("main drawn");
    assert!(
        !main.classes.contains("hide"),
        "main, below slow, stays: {main:?}"
    );
}
