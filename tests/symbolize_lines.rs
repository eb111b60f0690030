//! Source lines and inlined frames, checked against binutils `addr2line -i -f -C` (the oracle):
//! a fixture built with `-O2 -g` whose hot code is `always_inline` helpers; the same fixture
//! stripped, with its debug info found by build ID (under a debug root in a scratch directory),
//! by `.gnu_debuglink` (with its CRC) or through debuginfod (a loopback server); MiniDebugInfo
//! made as Fedora makes it; Debian's libc through libc6-dbg when it is installed. No BPF needed:
//! these drive the library's `Symbolizer` directly.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use common::*;
use profiler::profile::Frame;
use profiler::symbolize::{DebugSearch, Debuginfod, ElfSymbols, FileRef, Symbolizer};

/// One frame as compared: function, source file name (without directory), line.
type Line = (String, String, u32);

/// The inlined fixture, built with debug info (and `extra` flags).
fn fixture(test: &str, extra: &[&str]) -> Option<PathBuf> {
    let mut flags = vec!["-O2", "-g"];
    flags.extend_from_slice(extra);
    Fixture::c("inline_lines", &flags).build(test)
}

/// Whether `tool` runs; the test is skipped otherwise.
fn have(test: &str, tool: &str) -> bool {
    let found = Command::new(tool).arg("--version").output().is_ok();
    if !found {
        profiler::testing::skip(test, &format!("no {tool} on PATH"));
    }
    found
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().expect(program);
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn file_ref(path: &Path) -> FileRef {
    let meta = std::fs::metadata(path).expect("stat the fixture");
    FileRef {
        path: path.to_str().expect("UTF-8 path").to_owned(),
        dev: meta.dev(),
        inode: meta.ino(),
        candidates: Vec::new(),
    }
}

/// A symbolizer looking for debug files only under `roots`, without debuginfod.
fn symbolizer(roots: &[&Path]) -> Symbolizer {
    Symbolizer::new(None).with_debug_search(DebugSearch {
        roots: roots.iter().map(|r| r.to_path_buf()).collect(),
        debuginfod: None,
    })
}

fn file_name(path: &str) -> String {
    path.rsplit('/').next().unwrap_or(path).to_owned()
}

/// Our chain at link-time address `vaddr` of `exe` (which `layout` describes).
fn ours(sym: &mut Symbolizer, exe: &Path, layout: &ElfSymbols, vaddr: u64) -> Vec<Frame> {
    let segment = layout
        .segments()
        .iter()
        .find(|s| s.executable && s.vaddr <= vaddr && vaddr < s.vaddr + s.file_size)
        .expect("an executable segment holds the address");
    sym.native_frame_chain(&file_ref(exe), vaddr - segment.vaddr + segment.offset)
}

fn lines(frames: &[Frame]) -> Vec<Line> {
    frames
        .iter()
        .map(|f| {
            let (file, line) = f
                .source
                .as_ref()
                .map_or((String::new(), 0), |s| (file_name(&s.file), s.line));
            (f.function.to_string(), file, line)
        })
        .collect()
}

/// binutils' answer for each address: the chain innermost first.
fn oracle(exe: &Path, addrs: &[u64]) -> Vec<Vec<Line>> {
    let mut args: Vec<String> = ["-i", "-f", "-C", "-a", "-e"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.push(arg(exe).to_owned());
    args.extend(addrs.iter().map(|a| format!("{a:#x}")));
    let out = Command::new("addr2line")
        .args(&args)
        .output()
        .expect("addr2line");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let mut chains: Vec<Vec<Line>> = Vec::new();
    let mut rows = text.lines();
    while let Some(row) = rows.next() {
        if row.starts_with("0x") {
            chains.push(Vec::new());
            continue;
        }
        let location = rows.next().expect("a location after each function");
        let location = location.split(" (discriminator").next().unwrap_or(location);
        let (file, line) = location.rsplit_once(':').expect("file:line");
        let chain = chains.last_mut().expect("an address first");
        chain.push((row.to_owned(), file_name(file), line.parse().unwrap_or(0)));
    }
    chains
}

/// The address range of function `name` in `exe`'s symbol table (`nm -S`).
fn function_range(exe: &Path, name: &str) -> (u64, u64) {
    let out = Command::new("nm").arg("-S").arg(exe).output().expect("nm");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [addr, size, kind, sym] = fields[..] else {
                return None;
            };
            (sym == name && kind.eq_ignore_ascii_case("t")).then(|| {
                let start = u64::from_str_radix(addr, 16).unwrap();
                (start, start + u64::from_str_radix(size, 16).unwrap())
            })
        })
        .unwrap_or_else(|| panic!("{name} in nm -S {}", exe.display()))
}

/// Every byte address of `work` and `main`.
fn hot_addresses(exe: &Path) -> Vec<u64> {
    let (work, work_end) = function_range(exe, "work");
    let (main, main_end) = function_range(exe, "main");
    (work..work_end).chain(main..main_end).collect()
}

/// Our chains for `addrs` of `exe`, as compared.
fn our_chains(sym: &mut Symbolizer, exe: &Path, addrs: &[u64]) -> Vec<Vec<Line>> {
    let layout = ElfSymbols::open(exe).expect("index the fixture");
    addrs
        .iter()
        .map(|&a| lines(&ours(sym, exe, &layout, a)))
        .collect()
}

#[test]
fn inlined_frames_match_binutils_addr2line() {
    let test = "inlined_frames_match_binutils_addr2line";
    if !have(test, "addr2line") || !have(test, "nm") {
        return;
    }
    // Plain DWARF, then zlib-compressed sections (SHF_COMPRESSED; GNU's older .zdebug_* is
    // left out: binutils 2.40 itself reads no lines from it).
    for flags in [&[][..], &["-gz=zlib"]] {
        let Some(exe) = fixture(test, flags) else {
            return;
        };
        check_against_oracle(&exe, flags);
    }
    // zstd-compressed sections, which gcc here cannot write but objcopy can.
    let (Some(exe), true) = (fixture(test, &[]), have(test, "objcopy")) else {
        return;
    };
    let zstd = scratch(test).join("inline_lines");
    let compress = "--compress-debug-sections=zstd";
    run("objcopy", &[compress, arg(&exe), arg(&zstd)]);
    check_against_oracle(&zstd, &[compress]);
}

fn check_against_oracle(exe: &Path, flags: &[&str]) {
    let addrs = hot_addresses(exe);
    let expected = oracle(exe, &addrs);
    let mut sym = symbolizer(&[]);
    let layout = ElfSymbols::open(exe).unwrap();
    let mut deepest = 0;
    for (addr, expected) in addrs.iter().zip(&expected) {
        let frames = ours(&mut sym, exe, &layout, *addr);
        assert_eq!(lines(&frames), *expected, "{flags:?} at {addr:#x}");
        let (last, inlined) = frames.split_last().unwrap();
        assert!(!last.inlined && inlined.iter().all(|f| f.inlined));
        assert!(frames.iter().all(|f| f.address == frames[0].address));
        deepest = deepest.max(frames.len());
    }
    // mix inside spin inside work.
    assert!(
        deepest >= 3,
        "{flags:?}: no address in two levels of inlining"
    );
    let chain = expected.iter().find(|c| c.len() >= 3).unwrap();
    assert_eq!(
        [&chain[0].0, &chain[1].0, &chain[2].0],
        ["mix", "spin", "work"]
    );
}

/// The fixture's debug info (`objcopy --only-keep-debug`) and the fixture stripped of every
/// symbol and DWARF, in `dir`.
fn split(exe: &Path, dir: &Path) -> (PathBuf, PathBuf) {
    let debug = dir.join("inline_lines.debug");
    let stripped = dir.join("inline_lines");
    run("objcopy", &["--only-keep-debug", arg(exe), arg(&debug)]);
    run("strip", &["--strip-all", "-o", arg(&stripped), arg(exe)]);
    (debug, stripped)
}

/// The fixture (built with `extra` flags) and, in a scratch directory, its split: (fixture,
/// directory, debug file, stripped program). `None` when a tool is missing (the test skipped).
fn split_fixture(test: &str, extra: &[&str]) -> Option<(PathBuf, PathBuf, PathBuf, PathBuf)> {
    let exe = fixture(test, extra)?;
    for tool in ["objcopy", "strip", "nm"] {
        if !have(test, tool) {
            return None;
        }
    }
    let dir = scratch(test);
    let (debug, stripped) = split(&exe, &dir);
    Some((exe, dir, debug, stripped))
}

fn build_id(path: &Path) -> String {
    let symbols = ElfSymbols::open(path).expect("index");
    symbols.build_id().expect("a build ID").to_owned()
}

#[test]
fn stripped_fixture_symbolizes_through_build_id() {
    let test = "stripped_fixture_symbolizes_through_build_id";
    let Some((exe, dir, debug, stripped)) = split_fixture(test, &[]) else {
        return;
    };
    let id = build_id(&stripped);
    let root = dir.join("debug-root");
    let linked = root.join(format!(".build-id/{}/{}.debug", &id[..2], &id[2..]));
    std::fs::create_dir_all(linked.parent().unwrap()).unwrap();
    std::fs::rename(&debug, &linked).unwrap();

    let addrs = hot_addresses(&exe);
    let expected = our_chains(&mut symbolizer(&[]), &exe, &addrs);
    let mut sym = symbolizer(&[&root]);
    assert_eq!(our_chains(&mut sym, &stripped, &addrs), expected);
    assert_eq!(sym.stats().debug_files_found, 1);

    // The control: without the debug root, the stripped file has no names and no lines.
    let bare = our_chains(&mut symbolizer(&[&dir.join("empty")]), &stripped, &addrs);
    assert!(bare.iter().all(|c| c.len() == 1 && c[0].2 == 0));
    assert!(bare.iter().all(|c| c[0].0.starts_with("inline_lines+0x")));
}

#[test]
fn stripped_fixture_symbolizes_through_debuglink_with_its_crc() {
    let test = "stripped_fixture_symbolizes_through_debuglink_with_its_crc";
    // Without a build ID the link's CRC is what ties the debug file to the binary.
    let Some((exe, dir, debug, stripped)) = split_fixture(test, &["-Wl,--build-id=none"]) else {
        return;
    };
    let link = format!("--add-gnu-debuglink={}", arg(&debug));
    run("objcopy", &[&link, arg(&stripped)]);
    let empty = dir.join("empty");

    let addrs = hot_addresses(&exe);
    let expected = our_chains(&mut symbolizer(&[]), &exe, &addrs);
    assert!(expected.iter().any(|c| c.len() >= 3));
    let mut sym = symbolizer(&[&empty]);
    assert_eq!(our_chains(&mut sym, &stripped, &addrs), expected);

    // A debug file under the linked name that is not the linked one (its CRC differs) is not
    // used.
    let mut changed = std::fs::read(&debug).unwrap();
    changed.extend_from_slice(b"different");
    std::fs::write(&debug, changed).unwrap();
    let mut sym = symbolizer(&[&empty]);
    let chains = our_chains(&mut sym, &stripped, &addrs);
    assert!(chains.iter().all(|c| c.len() == 1 && c[0].2 == 0));
    assert_eq!(sym.stats().debug_files_found, 0);
}

#[test]
fn mini_debug_info_names_functions_of_a_stripped_fixture() {
    let test = "mini_debug_info_names_functions_of_a_stripped_fixture";
    if !have(test, "xz") {
        return;
    }
    let Some((exe, dir, debug, stripped)) = split_fixture(test, &[]) else {
        return;
    };
    // As Fedora does: the symbols strip removed, without DWARF, xz-compressed, added to the
    // stripped binary as .gnu_debugdata.
    let mini = dir.join("mini_debuginfo");
    run("objcopy", &["--strip-debug", arg(&debug), arg(&mini)]);
    run("xz", &["--keep", "--force", arg(&mini)]);
    let section = format!(".gnu_debugdata={}.xz", arg(&mini));
    run("objcopy", &["--add-section", &section, arg(&stripped)]);
    std::fs::remove_file(&debug).unwrap();

    let (work, _) = function_range(&exe, "work");
    let (main, _) = function_range(&exe, "main");
    let mut sym = symbolizer(&[&dir.join("empty")]);
    for (addr, name) in [(work + 1, "work"), (main + 1, "main")] {
        let chain = our_chains(&mut sym, &stripped, &[addr]).remove(0);
        // Names but no lines: MiniDebugInfo has no DWARF.
        assert_eq!(chain, [(name.to_owned(), String::new(), 0)]);
    }
}

/// The libc this test process runs with, from its own mappings.
fn own_libc() -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| file_name(p).starts_with("libc.so"))
        .map(PathBuf::from)
}

#[test]
fn libc_frames_read_libc_start_call_main_with_lines() {
    let test = "libc_frames_read_libc_start_call_main_with_lines";
    if !have(test, "addr2line") || !have(test, "nm") {
        return;
    }
    let Some(libc) = own_libc() else {
        return profiler::testing::skip(test, "no libc.so mapped by this test");
    };
    let id = build_id(&libc);
    let debug = PathBuf::from(format!(
        "/usr/lib/debug/.build-id/{}/{}.debug",
        &id[..2],
        &id[2..]
    ));
    if !debug.is_file() {
        let why = format!("no {} (install libc6-dbg)", debug.display());
        return profiler::testing::skip(test, &why);
    }
    let (start, end) = function_range(&debug, "__libc_start_call_main");
    let addrs: Vec<u64> = (start..end).step_by(7).collect();
    let expected = oracle(&libc, &addrs);
    // The system's debug root, as the profiler uses it.
    let mut sym = symbolizer(&[Path::new("/usr/lib/debug")]);
    let chains = our_chains(&mut sym, &libc, &addrs);
    // Functions and lines as binutils says. Not its file: binutils 2.40 reads this DWARF 5 line
    // table's file index as the unit's primary file (`libc-start.c`), where gdb and
    // llvm-addr2line say, as we do, that the function lives in `libc_start_call_main.h`.
    let without_files = |chains: &[Vec<Line>]| -> Vec<Vec<(String, u32)>> {
        let strip = |c: &Vec<Line>| c.iter().map(|(f, _, l)| (f.clone(), *l)).collect();
        chains.iter().map(strip).collect()
    };
    assert_eq!(without_files(&chains), without_files(&expected));
    let outer = chains.iter().map(|c| c.last().unwrap());
    for (function, file, line) in outer {
        assert_eq!(function, "__libc_start_call_main");
        assert_eq!(file, "libc_start_call_main.h");
        assert!(*line > 0);
    }

    // Without the debug file, frames read as the symbol tables alone make them.
    let layout = ElfSymbols::open(&libc).unwrap();
    let mut bare = symbolizer(&[Path::new("/nonexistent-debug-root")]);
    for &addr in &addrs {
        let frames = ours(&mut bare, &libc, &layout, addr);
        assert_eq!(frames.len(), 1);
        assert!(frames[0].source.is_none());
        assert_ne!(&*frames[0].function, "__libc_start_call_main");
    }
}

/// A debuginfod server on loopback serving one debug file; counts the requests it answered.
fn serve(build_id: String, body: Vec<u8>) -> (String, Arc<AtomicU32>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let url = format!("http://{}", listener.local_addr().unwrap());
    let served = Arc::new(AtomicU32::new(0));
    let counter = served.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(&stream);
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            let mut header = String::new();
            while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                header.clear();
            }
            let wanted = format!("GET /buildid/{build_id}/debuginfo ");
            let mut stream = &stream;
            if request.starts_with(&wanted) {
                counter.fetch_add(1, Ordering::SeqCst);
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&body);
            } else {
                let _ = stream.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        }
    });
    (url, served)
}

#[test]
fn debuginfod_serves_debug_info_of_a_stripped_fixture() {
    let test = "debuginfod_serves_debug_info_of_a_stripped_fixture";
    let Some((exe, dir, debug, stripped)) = split_fixture(test, &[]) else {
        return;
    };
    let id = build_id(&stripped);
    let (url, served) = serve(id.clone(), std::fs::read(&debug).unwrap());
    std::fs::remove_file(&debug).unwrap();
    let cache = dir.join("cache");
    let search = |urls: Vec<String>| DebugSearch {
        roots: vec![dir.join("empty")],
        debuginfod: Debuginfod::new(urls, cache.clone()),
    };

    let addrs = hot_addresses(&exe);
    let expected = our_chains(&mut symbolizer(&[]), &exe, &addrs);
    let mut sym = Symbolizer::new(None).with_debug_search(search(vec![url]));
    assert_eq!(our_chains(&mut sym, &stripped, &addrs), expected);
    assert_eq!(served.load(Ordering::SeqCst), 1);
    assert!(cache.join(&id).join("debuginfo").is_file());

    // A later run reads the cache, even with the server gone (nothing listens on port 9 of
    // loopback: the discard port is not served here).
    let mut sym =
        Symbolizer::new(None).with_debug_search(search(vec!["http://127.0.0.1:9".into()]));
    assert_eq!(our_chains(&mut sym, &stripped, &addrs), expected);
    assert_eq!(served.load(Ordering::SeqCst), 1);
}
