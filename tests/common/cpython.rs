//! The CPython interpreters installed here, for the Python frame tests: every ELF `python3.M`
//! (M from 10 to 13) on PATH, and pyenv's builds under `$(pyenv root)/versions` (pyenv itself
//! found on PATH). pyenv's shims are scripts and are left out; one interpreter reached through
//! several paths counts once.

use std::path::{Path, PathBuf};
use std::process::Command;

/// One interpreter: its minor version (3.M) and executable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interpreter {
    pub minor: u32,
    pub path: PathBuf,
}

fn is_elf(path: &Path) -> bool {
    std::fs::read(path).is_ok_and(|bytes| bytes.starts_with(b"\x7fELF"))
}

fn pyenv_versions() -> Vec<PathBuf> {
    let Ok(out) = Command::new("pyenv").arg("root").output() else {
        return Vec::new();
    };
    let root = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let Ok(entries) = std::fs::read_dir(root.join("versions")) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    dirs.sort();
    dirs
}

/// Every CPython 3.`minor` found.
pub fn interpreters(minor: u32) -> Vec<Interpreter> {
    let name = format!("python3.{minor}");
    let mut found: Vec<PathBuf> = Vec::new();
    let path_dirs = std::env::var_os("PATH").unwrap_or_default();
    let on_path = std::env::split_paths(&path_dirs).map(|dir| dir.join(&name));
    let prefix = format!("3.{minor}.");
    let in_pyenv = pyenv_versions()
        .into_iter()
        .filter(|dir| {
            dir.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix))
        })
        .map(|dir| dir.join("bin").join(&name));
    for candidate in on_path.chain(in_pyenv) {
        if !is_elf(&candidate) {
            continue;
        }
        let Ok(real) = candidate.canonicalize() else {
            continue;
        };
        if !found.contains(&real) {
            found.push(real);
        }
    }
    found
        .into_iter()
        .map(|path| Interpreter { minor, path })
        .collect()
}
