//! Symbolization benchmark (issue 11): what turning 10,000 distinct (file, offset) frames of a
//! large binary into frames costs, cold (the file opened, its symbols indexed, its DWARF
//! context built and the units touched parsed) and warm (the same frames again, as the next
//! report of a long session asks them), and the process's peak RSS after each file (and its RSS
//! once the DWARF contexts are released, as the reporter does past its budget). A plain
//! `main` that prints figures; no harness.
//!
//!   cargo bench --bench symbolize [-- FILE...]
//!
//! Each file is measured in a process of its own. Without arguments it takes rustc's `librustc_driver` (a large Rust library with a symbol
//! table and no DWARF; found through `rustc --print sysroot`), this benchmark's own binary (Rust
//! with line tables and much inlining, as `debug = 1` builds it), and the libc this process
//! runs with (DWARF through `/usr/lib/debug` when libc6-dbg is installed). Frames are spread
//! evenly over each file's executable segments. Environment: BENCH_FRAMES (default 10000).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use profiler::profile::Frame;
use profiler::symbolize::{ElfSymbols, FileRef, Symbolizer};

fn default_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    let sysroot = Command::new("rustc").args(["--print", "sysroot"]).output();
    if let Ok(out) = sysroot {
        let lib = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("lib");
        if let Ok(entries) = std::fs::read_dir(&lib) {
            let driver = entries.flatten().map(|e| e.path()).find(|p| {
                let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
                name.is_some_and(|n| n.starts_with("librustc_driver") && n.ends_with(".so"))
            });
            files.extend(driver);
        }
    }
    files.extend(std::env::current_exe().ok());
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let libc = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| {
            p.rsplit('/')
                .next()
                .is_some_and(|n| n.starts_with("libc.so"))
        });
    files.extend(libc.map(PathBuf::from));
    files
}

/// `VmHWM` and `VmRSS` of this process, in MiB.
fn rss_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// `frames` file offsets spread evenly over the executable segments of `path`.
fn offsets(path: &Path, frames: u64) -> Vec<u64> {
    let Ok(symbols) = ElfSymbols::open(path) else {
        return Vec::new();
    };
    let code: Vec<_> = symbols.segments().iter().filter(|s| s.executable).collect();
    let total: u64 = code.iter().map(|s| s.file_size).sum();
    let step = (total / frames.max(1)).max(1);
    let mut out = Vec::new();
    for segment in code {
        let mut at = 0;
        while at < segment.file_size && (out.len() as u64) < frames {
            out.push(segment.offset + at);
            at += step;
        }
    }
    out
}

struct Pass {
    ms: f64,
    frames: usize,
    with_lines: usize,
    inlined: usize,
}

fn pass(sym: &mut Symbolizer, file: &FileRef, offsets: &[u64]) -> Pass {
    let mut out: Vec<Frame> = Vec::with_capacity(8);
    let (mut frames, mut with_lines, mut inlined) = (0, 0, 0);
    let start = Instant::now();
    for &offset in offsets {
        out.clear();
        sym.native_frames(file, offset, &mut out);
        frames += out.len();
        with_lines += out.iter().filter(|f| f.source.is_some()).count();
        inlined += out.iter().filter(|f| f.inlined).count();
    }
    Pass {
        ms: start.elapsed().as_secs_f64() * 1e3,
        frames,
        with_lines,
        inlined,
    }
}

fn main() {
    let frames: u64 = std::env::var("BENCH_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let args: Vec<PathBuf> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .map(PathBuf::from)
        .collect();
    if args.is_empty() {
        // One process per file, so each peak RSS is that file's alone.
        println!("symbolize: {frames} distinct offsets per file, one process per file");
        let Ok(me) = std::env::current_exe() else {
            return;
        };
        for file in default_files() {
            let _ = Command::new(&me).arg(file).status();
        }
        return;
    }
    for path in args {
        let Ok(meta) = std::fs::metadata(&path) else {
            println!("{}: cannot stat, skipped", path.display());
            continue;
        };
        let offsets = offsets(&path, frames);
        let file = FileRef {
            path: path.to_string_lossy().into_owned(),
            dev: meta.dev(),
            inode: meta.ino(),
            candidates: Vec::new(),
        };
        let mut sym = Symbolizer::new(None);
        let cold = pass(&mut sym, &file, &offsets);
        let warm = pass(&mut sym, &file, &offsets);
        let (hwm, rss) = rss_mib();
        sym.release_debug_info();
        let (_, released) = rss_mib();
        println!(
            "{} ({:.0} MiB): {} offsets -> {} frames ({} with lines, {} inlined); \
             cold {:.1} ms, warm {:.1} ms ({:.2} us/offset); debug info found: {}; \
             peak RSS {hwm:.1} MiB, RSS {rss:.1} MiB, {released:.1} MiB once DWARF is released",
            path.display(),
            meta.len() as f64 / (1 << 20) as f64,
            offsets.len(),
            cold.frames,
            cold.with_lines,
            cold.inlined,
            cold.ms,
            warm.ms,
            warm.ms * 1e3 / offsets.len().max(1) as f64,
            sym.stats().debug_files_found,
        );
        debug_assert_eq!(cold.frames, warm.frames);
    }
}
