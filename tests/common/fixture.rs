//! The fixture builder: programs compiled from `tests/fixtures/` for the tests to profile. Each
//! is built once per source text, compiler, flags and name, and kept in cargo's
//! `CARGO_TARGET_TMPDIR`, so later tests and later runs reuse it. A compiler missing from PATH
//! skips the test through `profiler::testing::skip` (a failure under `PROFILER_REQUIRE_BPF=1`).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, PoisonError};

/// One build at a time in this process; other processes are kept apart by the rename.
static BUILDING: Mutex<()> = Mutex::new(());

/// A program to build from `tests/fixtures/SOURCE`.
#[derive(Clone, Debug)]
pub struct Fixture {
    source: String,
    compiler: &'static str,
    flags: Vec<String>,
    /// The program's file name: its command name in the profiles.
    name: String,
}

impl Fixture {
    /// `tests/fixtures/SOURCE`, compiled by `cc` (`.c`), `g++` (`.cpp`) or `rustc` (`.rs`) into
    /// a program named after the source without its extension.
    pub fn new(source: &str) -> Fixture {
        let (stem, extension) = source.rsplit_once('.').expect("a source file name");
        let compiler = match extension {
            "c" => "cc",
            "cpp" => "g++",
            "rs" => "rustc",
            _ => panic!("no compiler known for {source}"),
        };
        Fixture {
            source: source.to_owned(),
            compiler,
            flags: Vec::new(),
            name: stem.to_owned(),
        }
    }

    /// `tests/fixtures/NAME.c`, compiled by `cc` with `flags`.
    pub fn c(name: &str, flags: &[&str]) -> Fixture {
        Fixture::new(&format!("{name}.c")).flags(flags)
    }

    /// `tests/fixtures/reuse_child.c` as `child_K`: `main;outer_K;work_K`, frame pointers off.
    pub fn tagged_child(k: usize) -> Fixture {
        Fixture::new("reuse_child.c")
            .flags(&["-O2", "-fomit-frame-pointer", &format!("-DTAG={k}")])
            .named(&format!("child_{k}"))
    }

    pub fn flags(mut self, flags: &[&str]) -> Fixture {
        self.flags.extend(flags.iter().map(|f| f.to_string()));
        self
    }

    /// Names the program `name` rather than after its source.
    pub fn named(mut self, name: &str) -> Fixture {
        self.name = name.to_owned();
        self
    }

    /// The built program, or `None` once `test` is skipped because the compiler is missing.
    pub fn build(&self, test: &str) -> Option<PathBuf> {
        let source = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(&self.source);
        let text = std::fs::read(&source)
            .unwrap_or_else(|e| panic!("read the fixture {}: {e}", source.display()));
        let mut hasher = DefaultHasher::new();
        (self.compiler, &self.flags, &self.name, &text).hash(&mut hasher);
        let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fixtures");
        let key = format!("{}-{:016x}", self.name, hasher.finish());
        let home = cache.join(&key);
        let program = home.join(&self.name);

        let _building = BUILDING.lock().unwrap_or_else(PoisonError::into_inner);
        if program.is_file() {
            return Some(program);
        }
        // Built in a directory of its own, then moved into place whole: a program in the cache
        // is complete.
        let partial = cache.join(format!("{key}.{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&partial);
        std::fs::create_dir_all(&partial).expect("create the fixture cache");
        let run = Command::new(self.compiler)
            .args(&self.flags)
            .arg("-o")
            .arg(partial.join(&self.name))
            .arg(&source)
            .status();
        let status = match run {
            Ok(status) => status,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let _ = std::fs::remove_dir_all(&partial);
                let why = format!("no {} on PATH to build {}", self.compiler, self.source);
                profiler::testing::skip(test, &why);
                return None;
            }
            Err(e) => panic!("run {}: {e}", self.compiler),
        };
        assert!(
            status.success(),
            "{} failed for {}",
            self.compiler,
            self.source
        );
        if let Err(e) = std::fs::rename(&partial, &home) {
            // Another test binary got there first with the same program.
            let _ = std::fs::remove_dir_all(&partial);
            assert!(program.is_file(), "cache {}: {e}", home.display());
        }
        Some(program)
    }
}
