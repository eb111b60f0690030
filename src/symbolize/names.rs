//! The strings frames share: one `Arc<str>` per function name, system name, fallback name and
//! source file of one symbol source (a file, the kernel, a kernel module).
//!
//! This module owns [`Names`]: raw symbol names are demangled once, the raw (mangled) name is
//! kept as the system name when it differs, and repeated misses and source paths do not
//! allocate again. It does not look anything up.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;

use super::demangle::{demangle, strip_version};
use crate::profile::Module;

/// A function's display name and, when it differs, the name as the file spells it.
#[derive(Clone, Debug)]
pub(crate) struct FunctionNames {
    pub function: Arc<str>,
    pub system_name: Option<Arc<str>>,
}

/// Names and module of one symbol source, shared by every frame that resolves into it.
#[derive(Debug)]
pub(crate) struct Names {
    pub module: Arc<Module>,
    /// The display prefix of fallback names (`libc.so.6` in `libc.so.6+0x1234`).
    label: String,
    /// Names by raw symbol name.
    by_raw: HashMap<Arc<str>, FunctionNames>,
    /// Fallback names by address, so a repeated miss does not allocate.
    by_address: HashMap<u64, Arc<str>>,
    /// Source file paths.
    files: HashSet<Arc<str>>,
}

impl Names {
    pub fn new(module: Module, label: String) -> Self {
        Names {
            module: Arc::new(module),
            label,
            by_raw: HashMap::new(),
            by_address: HashMap::new(),
            files: HashSet::new(),
        }
    }

    /// The names of the raw (possibly mangled and versioned) symbol `raw`.
    pub fn symbol(&mut self, raw: &str) -> FunctionNames {
        if let Some(names) = self.by_raw.get(raw) {
            return names.clone();
        }
        let function: Arc<str> = Arc::from(demangle(raw));
        let system = strip_version(raw);
        let names = FunctionNames {
            system_name: (system != &*function).then(|| Arc::from(system)),
            function,
        };
        self.by_raw.insert(Arc::from(raw), names.clone());
        names
    }

    /// `label+0xADDRESS`, for an address without a symbol.
    pub fn fallback(&mut self, address: u64) -> Arc<str> {
        let label = &self.label;
        self.by_address
            .entry(address)
            .or_insert_with(|| {
                let mut name = String::with_capacity(label.len() + 19);
                // SANITY: writing to a String cannot fail.
                let _ = write!(name, "{label}+{address:#x}");
                Arc::from(name)
            })
            .clone()
    }

    /// The shared copy of a source file path.
    pub fn file(&mut self, path: &str) -> Arc<str> {
        if let Some(file) = self.files.get(path) {
            return file.clone();
        }
        let file: Arc<str> = Arc::from(path);
        self.files.insert(file.clone());
        file
    }
}
