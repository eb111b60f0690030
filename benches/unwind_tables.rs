//! What extracting unwind tables costs, and how big they are: for libc, the system Python,
//! libstdc++ and the largest shared library on the machine (or the files given as arguments),
//! the extraction time (`profiler::cfi::extract`, median of several runs), the encoding time
//! (`UnwindTable::compact`), the peak-RSS growth of one extraction, rows, and the bytes of the
//! BPF table per row.
//!
//! Each run is a fresh process (this binary re-run with `--child FILE`), so that the peak RSS
//! (`VmHWM`) before and after one extraction says what that extraction needed, and the time
//! includes mapping the file (in the page cache after the first run) the way the profiler does
//! it once per executable. The child prints one `key=value` line; the parent prints the table.
//!
//! Run: `cargo bench --bench unwind_tables` (a plain `main`, no harness; a few seconds once
//! built, most of them in the largest library).
//! `BENCH_RUNS` (default 7) sets the runs per file; file paths as arguments replace the list:
//! `cargo bench --bench unwind_tables -- /usr/bin/gdb`. No root needed.
//! The target: libc's table in <= 50 ms.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use object::elf::{PF_X, PT_LOAD};
use object::read::elf::{ElfFile64, ProgramHeader as _};
use object::Endianness;
use profiler::cfi::extract_packed;
use profiler::unwind::CompactTable;

const LIBC: &str = "/lib/x86_64-linux-gnu/libc.so.6";
const PYTHON: &str = "/usr/bin/python3.11";
const LIBSTDCXX: &str = "/usr/lib/x86_64-linux-gnu/libstdc++.so.6";
const LIBC_TARGET: Duration = Duration::from_millis(50);

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if let [flag, file] = &args[..] {
        if flag == "--child" {
            child(Path::new(file));
            return;
        }
    }
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7)
        .max(1);
    let files: Vec<PathBuf> = if args.is_empty() {
        let mut files: Vec<PathBuf> = [LIBC, PYTHON, LIBSTDCXX].map(PathBuf::from).into();
        files.extend(largest_shared_library());
        files
    } else {
        args.iter().map(PathBuf::from).collect()
    };

    let busy = busy_note();
    let me = std::env::current_exe().expect("own path");
    let mut results = Vec::new();
    for file in &files {
        if !file.exists() {
            println!("skipped {}: not on this machine", file.display());
            continue;
        }
        let mut samples = Vec::new();
        for _ in 0..runs {
            let out = Command::new(&me)
                .arg("--child")
                .arg(file)
                .output()
                .expect("run the bench binary as a child");
            if !out.status.success() {
                eprintln!(
                    "{}: child failed: {}",
                    file.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                break;
            }
            samples.push(parse(&String::from_utf8_lossy(&out.stdout)));
        }
        if !samples.is_empty() {
            results.push((file.clone(), samples));
        }
    }
    report(&results, runs, &busy);
}

/// One extraction in this (fresh) process; prints its figures as `key=value` pairs.
fn child(file: &Path) {
    let hwm0 = vm_hwm_kib();
    let started = Instant::now();
    // What the profiler's extractor thread does: packed rows, encoded without unpacking.
    let table = match extract_packed(file) {
        Ok(table) => table,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let extract_ns = started.elapsed().as_nanos();
    let hwm1 = vm_hwm_kib();
    let started = Instant::now();
    let compact = match CompactTable::encode_packed(&table.rows) {
        Ok(compact) => compact,
        Err(e) => {
            eprintln!("compact: {e}");
            std::process::exit(1);
        }
    };
    let encode_ns = started.elapsed().as_nanos();
    let hwm2 = vm_hwm_kib();

    let s = &table.stats;
    let c = compact.stats();
    let kib = u64::from(compact.direct_buckets());
    // Rows per KiB of text, at a quantile of the KiBs.
    let percentile = |q: f64| {
        let target = (kib as f64 * q) as u64;
        let mut seen = 0u64;
        c.histogram
            .iter()
            .position(|&n| {
                seen += u64::from(n);
                seen > target
            })
            .unwrap_or(0)
    };
    let over32: u64 = c.histogram[33..].iter().map(|&n| u64::from(n)).sum();
    let file_bytes = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    let fields: [(&str, u128); 29] = [
        ("extract_ns", extract_ns),
        ("encode_ns", encode_ns),
        ("hwm0_kib", hwm0.into()),
        ("hwm_extract_kib", hwm1.into()),
        ("hwm_encode_kib", hwm2.into()),
        ("file_bytes", file_bytes.into()),
        ("text_bytes", exec_segment_bytes(file).into()),
        ("rows", s.rows as u128),
        ("row_heap_bytes", (s.rows * 16) as u128),
        ("frame_rows", s.frame_rows as u128),
        ("unsupported_rows", s.unsupported_rows as u128),
        ("plt_rows", s.plt_rows as u128),
        ("deref_rows", s.deref_rows as u128),
        ("outermost_rows", s.outermost_rows as u128),
        ("signal_rows", s.signal_rows as u128),
        ("eh_frame_fdes", s.eh_frame_fdes.into()),
        ("debug_frame_fdes", s.debug_frame_fdes.into()),
        ("cfi_errors", s.cfi_errors.into()),
        ("stored_rows", c.rows as u128),
        ("unencodable", c.unencodable as u128),
        ("buckets", compact.buckets().len() as u128),
        ("direct_buckets", kib.into()),
        ("compact_bytes", compact.bytes() as u128),
        ("overflowing_kib", c.overflowing_kib.into()),
        ("over32_kib", over32.into()),
        ("rows_per_kib_p50", percentile(0.5) as u128),
        ("rows_per_kib_p99", percentile(0.99) as u128),
        ("max_rows_per_kib", c.max_rows_per_kib.into()),
        ("max_rules_per_kib", c.max_rules_per_kib.into()),
    ];
    let line: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("{}", line.join(" "));
    // Keep both tables alive until the peak has been read.
    drop((table, compact));
}

type Sample = BTreeMap<String, u128>;

fn parse(line: &str) -> Sample {
    line.split_whitespace()
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn report(results: &[(PathBuf, Vec<Sample>)], runs: usize, busy: &str) {
    let ms = |ns: u128| ns as f64 / 1e6;
    let mib = |bytes: u128| bytes as f64 / (1024.0 * 1024.0);
    println!(
        "unwind-table extraction, {runs} runs per file (each in a fresh process), medians; \
         {} CPUs, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        busy
    );
    println!();
    println!(
        "{:<26} {:>7} {:>7} {:>9} {:>9} {:>8} {:>9} {:>9} {:>9} {:>9} {:>6} {:>7}",
        "file",
        "file MB",
        "text MB",
        "extr ms",
        "(min)",
        "enc ms",
        "peak RSS",
        "rows",
        "stored",
        "table KB",
        "B/row",
        "% text"
    );
    for (file, samples) in results {
        let median = |key: &str| {
            let mut v: Vec<u128> = samples.iter().map(|s| s[key]).collect();
            v.sort_unstable();
            v[v.len() / 2]
        };
        let min = |key: &str| samples.iter().map(|s| s[key]).min().unwrap_or(0);
        let s = &samples[0];
        let peak_kib = median("hwm_encode_kib").saturating_sub(median("hwm0_kib"));
        let name = file.file_name().map_or_else(
            || file.display().to_string(),
            |n| n.to_string_lossy().into(),
        );
        println!(
            "{:<26} {:>7.1} {:>7.1} {:>9.1} {:>9.1} {:>8.2} {:>7.1}MB {:>9} {:>9} {:>9.0} {:>6.2} {:>6.1}%",
            name,
            mib(s["file_bytes"]),
            mib(s["text_bytes"]),
            ms(median("extract_ns")),
            ms(min("extract_ns")),
            ms(median("encode_ns")),
            peak_kib as f64 / 1024.0,
            s["rows"],
            s["stored_rows"],
            s["compact_bytes"] as f64 / 1024.0,
            s["compact_bytes"] as f64 / s["stored_rows"].max(1) as f64,
            100.0 * s["compact_bytes"] as f64 / s["text_bytes"].max(1) as f64,
        );
    }
    println!();
    println!(
        "extr ms: extract() (map, parse .eh_frame/.debug_frame, assemble rows); enc ms: compact().\n\
         peak RSS: VmHWM after both minus before, in the child (heap plus the file pages read).\n\
         rows: extract()'s rows (\"no info\" gaps included); stored: rows in the BPF buckets \
         (per KiB,\nneighbours that encode alike merged, the row in effect at each KiB start \
         repeated); table KB:\n256-byte buckets (direct + overflow); B/row = table bytes / \
         stored rows; % text = table / executable\nPT_LOAD bytes."
    );
    println!();
    for (file, samples) in results {
        let s = &samples[0];
        let kib = s["direct_buckets"].max(1) as f64;
        println!("{}", file.display());
        println!(
            "  rows: {} frame, {} unsupported, {} plt, {} deref, {} outermost, {} signal; \
             {} .eh_frame FDEs, {} .debug_frame FDEs, {} CFI errors; generic rows {:.1} MB in memory",
            s["frame_rows"],
            s["unsupported_rows"],
            s["plt_rows"],
            s["deref_rows"],
            s["outermost_rows"],
            s["signal_rows"],
            s["eh_frame_fdes"],
            s["debug_frame_fdes"],
            s["cfi_errors"],
            mib(s["row_heap_bytes"]),
        );
        println!(
            "  buckets: {} ({} direct KiB + {} overflow), {} unencodable rows; rows per KiB p50 {} \
             p99 {} max {}, max distinct rules per KiB {}",
            s["buckets"],
            s["direct_buckets"],
            s["buckets"] - s["direct_buckets"],
            s["unencodable"],
            s["rows_per_kib_p50"],
            s["rows_per_kib_p99"],
            s["max_rows_per_kib"],
            s["max_rules_per_kib"],
        );
        // The variable-size alternative: a u32 first-row index per KiB plus 8-byte rows.
        let variable = 4 * (s["direct_buckets"] + 1) + 8 * s["stored_rows"];
        println!(
            "  KiBs overflowing (> 64 rows or > 32 rules) {:.1}%, > 32 rows {:.1}%; a variable-size \
             layout (u32 index per KiB + 8-byte rows) would take {:.0} KB",
            100.0 * s["overflowing_kib"] as f64 / kib,
            100.0 * s["over32_kib"] as f64 / kib,
            variable as f64 / 1024.0,
        );
    }
    if let Some((_, samples)) = results.iter().find(|(f, _)| f == Path::new(LIBC)) {
        let mut v: Vec<u128> = samples.iter().map(|s| s["extract_ns"]).collect();
        v.sort_unstable();
        let t = Duration::from_nanos(v[v.len() / 2] as u64);
        println!();
        println!(
            "libc: {:.1} ms to extract (target <= {} ms): {}",
            t.as_secs_f64() * 1e3,
            LIBC_TARGET.as_millis(),
            if t <= LIBC_TARGET { "met" } else { "MISSED" }
        );
    }
}

/// The largest ELF shared library under /usr/lib (which holds /usr/lib/x86_64-linux-gnu).
fn largest_shared_library() -> Option<PathBuf> {
    let mut best: Option<(u64, PathBuf)> = None;
    let mut stack = vec![PathBuf::from("/usr/lib")];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let path = entry.path();
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() && entry.file_name().to_string_lossy().contains(".so") {
                let len = entry.metadata().map_or(0, |m| m.len());
                if best.as_ref().is_none_or(|(n, _)| len > *n) && is_elf(&path) {
                    best = Some((len, path));
                }
            }
        }
    }
    best.map(|(_, p)| p)
}

fn is_elf(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == *b"\x7fELF"
}

/// Bytes of the file's executable PT_LOAD segments (what the table covers at most).
fn exec_segment_bytes(path: &Path) -> u64 {
    let Ok(data) = std::fs::read(path) else {
        return 0;
    };
    let Ok(elf) = ElfFile64::<Endianness>::parse(&*data) else {
        return 0;
    };
    let endian = elf.endian();
    elf.elf_program_headers()
        .iter()
        .filter(|p| p.p_type(endian) == PT_LOAD && p.p_flags(endian) & PF_X != 0)
        .map(|p| p.p_filesz(endian))
        .sum()
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// "CPUs N% busy" over the next half second, from /proc/stat (other work skews the times).
fn busy_note() -> String {
    let read = || -> Option<Vec<u64>> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let cpu = stat.lines().next()?.strip_prefix("cpu ")?;
        Some(
            cpu.split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect(),
        )
    };
    let (Some(a), Some(b)) = (read(), {
        std::thread::sleep(Duration::from_millis(500));
        read()
    }) else {
        return "CPU load unknown".into();
    };
    let d: Vec<u64> = a.iter().zip(&b).map(|(x, y)| y - x).collect();
    let total: u64 = d.iter().sum();
    let idle = d.get(3).copied().unwrap_or(0) + d.get(4).copied().unwrap_or(0);
    format!(
        "CPUs {:.0}% busy before start",
        100.0 * (1.0 - idle as f64 / total.max(1) as f64)
    )
}
