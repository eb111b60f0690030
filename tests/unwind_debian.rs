//! The completeness of stacks of Debian binaries (root; see common::bpf_available): python,
//! xz, gzip, sha256sum and sort profiled through in-kernel `.eh_frame` unwinding, the share of
//! samples whose walk reaches the outermost frame (`_start`, a thread entry, or an FDE that
//! marks the return address undefined), also on a saturated machine. Figures go to stderr.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::unwind::{frames, record, unwind_counters};
use common::*;

/// A program of the distribution: found on the system's default PATH (`getconf PATH`), not
/// the user's, so a pyenv or ~/.local build (with other compiler flags) cannot stand in for
/// it. Resolved through symlinks (`python3` → `python3.11`: the name the kernel shows).
fn system_program(test: &str, name: &str) -> Option<PathBuf> {
    let found = Command::new("getconf")
        .arg("PATH")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|dirs| {
            dirs.trim()
                .split(':')
                .map(|dir| Path::new(dir).join(name))
                .find(|p| p.is_file())
        })
        .and_then(|p| p.canonicalize().ok());
    if found.is_none() {
        profiler::testing::skip(test, &format!("no system {name} (getconf PATH)"));
    }
    found
}

/// The directory of the C library this test runs with (where the distribution's shared
/// libraries are).
fn library_dir() -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .find(|path| path.ends_with("/libc.so.6"))
        .and_then(|path| Path::new(path).parent().map(Path::to_path_buf))
}

/// The ranges of `.eh_frame` FDEs that mark the return address undefined (glibc's `_start`,
/// `clone`, `clone3` thread start) and the entry point: the frames where a complete walk ends.
struct Outermost {
    /// (file offset, address, size) of each segment, to turn `file+0xOFFSET` into an address.
    segments: Vec<(u64, u64, u64)>,
    ranges: Vec<(u64, u64)>,
}

fn outermost(path: &Path) -> Option<Outermost> {
    use gimli::{CallFrameInstruction, CieOrFde, EhFrame, UnwindSection};
    use object::{Object, ObjectSection, ObjectSegment};
    let data = std::fs::read(path).ok()?;
    let file = object::File::parse(&*data).ok()?;
    let segments = file
        .segments()
        .map(|s| (s.file_range().0, s.address(), s.file_range().1))
        .collect();
    let section = file.section_by_name(".eh_frame")?;
    let eh = EhFrame::new(section.data().ok()?, gimli::LittleEndian);
    let mut bases = gimli::BaseAddresses::default().set_eh_frame(section.address());
    if let Some(text) = file.section_by_name(".text") {
        bases = bases.set_text(text.address());
    }
    let undefined_ra = |mut it: gimli::CallFrameInstructionIter<_>| loop {
        match it.next() {
            Ok(Some(CallFrameInstruction::Undefined { register }))
                if register == gimli::X86_64::RA =>
            {
                return true
            }
            Ok(Some(_)) => {}
            _ => return false,
        }
    };
    let mut ranges = Vec::new();
    let mut entries = eh.entries(&bases);
    while let Ok(Some(entry)) = entries.next() {
        let CieOrFde::Fde(partial) = entry else {
            continue;
        };
        let Ok(fde) = partial.parse(EhFrame::cie_from_offset) else {
            continue;
        };
        if undefined_ra(fde.instructions(&eh, &bases))
            || undefined_ra(fde.cie().instructions(&eh, &bases))
        {
            ranges.push((fde.initial_address(), fde.initial_address() + fde.len()));
        }
    }
    // The entry point itself (ld.so's `_start` has no FDE at all): a walk that got there is
    // complete even if the unwinder could not tell.
    ranges.push((file.entry(), file.entry() + 0x30));
    Some(Outermost { segments, ranges })
}

impl Outermost {
    fn covers_offset(&self, offset: u64) -> bool {
        let Some(&(start, addr, _)) = self
            .segments
            .iter()
            .find(|(start, _, size)| (*start..start + size).contains(&offset))
        else {
            return false;
        };
        let addr = addr + (offset - start);
        // The root is a return address (or one byte before it).
        self.ranges
            .iter()
            .any(|(lo, hi)| (*lo..=*hi).contains(&addr))
    }
}

const OUTERMOST_NAMES: &[&str] = &["_start", "__clone3", "clone3", "__clone", "clone"];

/// Whether a root frame is where a complete walk ends: `_start` or a thread entry by name, or
/// an unsymbolized `file+0xOFFSET` inside an FDE with an undefined return address.
fn is_outermost(root: &str, exe: &Path, cache: &mut HashMap<String, Option<Outermost>>) -> bool {
    if OUTERMOST_NAMES.contains(&root) {
        return true;
    }
    let Some((file, offset)) = root.rsplit_once("+0x") else {
        return false;
    };
    let Ok(offset) = u64::from_str_radix(offset, 16) else {
        return false;
    };
    let info = cache.entry(file.to_string()).or_insert_with(|| {
        let candidates = [
            Some(exe.with_file_name(file)),
            library_dir().map(|d| d.join(file)),
        ];
        let path = candidates.into_iter().flatten().find(|p| p.exists())?;
        outermost(&path)
    });
    info.as_ref().is_some_and(|o| o.covers_offset(offset))
}

/// Profiles `cmd` (whose samples are under thread name `comm`, executable `exe`), prints the
/// share of samples whose stack reaches the outermost frame and what stops the others.
fn completeness(tag: &str, comm: &str, exe: &str, cmd: &[&str], dir: &Path) {
    completeness_at_least(95.0, tag, comm, exe, cmd, dir)
}

fn completeness_at_least(min: f64, tag: &str, comm: &str, exe: &str, cmd: &[&str], dir: &Path) {
    let (lines, stats) = record(dir, tag, cmd, &[0, 124]);
    let mut cache = HashMap::new();
    let exe = Path::new(exe);
    let (mut total, mut complete) = (0, 0);
    let mut stops: BTreeMap<String, u64> = BTreeMap::new();
    let mut roots: BTreeMap<&str, u64> = BTreeMap::new();
    for (stack, n) in &lines {
        let f = frames(stack);
        if f[0] != comm {
            continue;
        }
        total += n;
        if f.len() > 1 && is_outermost(f[1], exe, &mut cache) {
            complete += n;
            *roots.entry(f[1]).or_default() += n;
        } else {
            let user: Vec<_> = f[1..].iter().take(3).copied().collect();
            *stops.entry(user.join(";")).or_default() += n;
        }
    }
    let share = 100.0 * complete as f64 / total.max(1) as f64;
    let mut stops: Vec<_> = stops.into_iter().collect();
    stops.sort_by_key(|(_, c)| std::cmp::Reverse(*c));
    eprintln!(
        "COMPLETENESS {comm}: {complete} of {total} samples ({share:.2}%) reach the outermost \
         frame; stats: outermost {} of {} samples; {}",
        stat(&stats, "unwind_outermost"),
        stat(&stats, "samples"),
        unwind_counters(&stats)
    );
    eprintln!("  complete stacks by root: {roots:?}");
    for (root, n) in stops.iter().take(6) {
        eprintln!("  truncated ({n}): {root}");
    }
    assert!(total >= 200, "only {total} samples of {comm}");
    assert!(
        share >= min,
        "{comm}: {share:.2}% complete (at least {min}% wanted); truncated roots: {stops:?}"
    );
}

/// ~40 MB of text lines: words from a small vocabulary and numbers (compressible and sortable).
fn generate_text(path: &Path) {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let words: Vec<String> = (0..4000)
        .map(|_| {
            let len = 3 + next() % 8;
            (0..len)
                .map(|_| (b'a' + (next() % 26) as u8) as char)
                .collect()
        })
        .collect();
    let mut text = String::with_capacity(41 << 20);
    while text.len() < 40 << 20 {
        for _ in 0..5 {
            text.push_str(&words[(next() % 4000) as usize]);
            text.push(' ');
        }
        text.push_str(&(next() % 1_000_000_000).to_string());
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

/// Runs `timeout 4 BINARY ARGS DATA...` with the generated data file `copies` times.
fn debian_binary(test: &str, binary: &str, args: &[&str], copies: usize) {
    debian_binary_at_least(test, 95.0, binary, args, copies)
}

fn debian_binary_at_least(test: &str, min: f64, binary: &str, args: &[&str], copies: usize) {
    let Some(exe) = system_program(test, binary) else {
        return;
    };
    let exe = exe.to_str().unwrap();
    let dir = scratch(binary);
    let data = dir.join("data");
    generate_text(&data);
    let data = data.to_str().unwrap();
    // Through sh only to send the output to /dev/null; sh execs timeout, which runs the binary.
    let script = format!("exec timeout 4 {exe} {} \"$@\" > /dev/null", args.join(" "));
    let mut cmd = vec!["sh", "-c", script.as_str(), "sh"];
    cmd.extend(std::iter::repeat_n(data, copies));
    completeness_at_least(min, binary, binary, exe, &cmd, &dir);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The distribution's python3 (path, and the name its samples carry).
fn system_python(test: &str) -> Option<(String, String)> {
    let exe = system_program(test, "python3")?;
    let comm = exe.file_name()?.to_str()?.to_owned();
    Some((exe.to_str()?.to_owned(), comm))
}

/// Four seconds of a recursive pure-Python function.
const PYTHON_FIB: &str = "import time\n\
                          def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n\
                          end = time.time() + 4\n\
                          while time.time() < end:\n    fib(18)\n";

#[test]
fn debian_python_stacks_are_complete() {
    let name = "debian_python_stacks_are_complete";
    let Some(test) = KernelTest::start(name) else {
        return;
    };
    let Some((exe, comm)) = system_python(name) else {
        return;
    };
    completeness("python", &comm, &exe, &[&exe, "-c", PYTHON_FIB], &test.dir);
}

macro_rules! debian_test {
    ($name:ident, $binary:literal, $args:expr, $copies:literal) => {
        #[test]
        fn $name() {
            let Some(_test) = KernelTest::start(stringify!($name)) else {
                return;
            };
            debian_binary(stringify!($name), $binary, $args, $copies);
        }
    };
}

debian_test!(debian_xz_stacks_are_complete, "xz", &["-9", "-T1", "-c"], 1);
debian_test!(debian_gzip_stacks_are_complete, "gzip", &["-9", "-c"], 8);
debian_test!(debian_sha256sum_stacks_are_complete, "sha256sum", &[], 200);
// sort has helper threads: their stacks end in libc's clone3, not in _start.
debian_test!(debian_sort_stacks_are_complete, "sort", &[], 4);

/// Two unrelated CPU-bound processes, one per CPU of the test machine, for as long as they
/// live: the profiler's threads then compete for the CPUs, as on a busy machine.
fn load() -> Vec<Guard> {
    (0..2)
        .map(|_| Guard::spawn(Command::new("sh").args(["-c", "while :; do :; done"])))
        .collect()
}

/// On a saturated machine the maintainer syncs late; first sight keeps the stacks complete.
#[test]
fn debian_stacks_stay_complete_on_a_saturated_machine() {
    let name = "debian_stacks_stay_complete_on_a_saturated_machine";
    let Some(test) = KernelTest::start(name) else {
        return;
    };
    let Some((exe, comm)) = system_python(name) else {
        return;
    };
    let _load = load();
    let cmd = [exe.as_str(), "-c", PYTHON_FIB];
    completeness_at_least(LOADED_MIN, "python-loaded", &comm, &exe, &cmd, &test.dir);
    debian_binary_at_least(name, LOADED_MIN, "xz", &["-9", "-T1", "-c"], 1);
    debian_binary_at_least(name, LOADED_MIN, "sort", &[], 4);
}

/// The share of samples that must be complete under load.
const LOADED_MIN: f64 = 99.0;
