//! Which processes run CPython 3.10 to 3.13, and where their interpreter is.
//!
//! A file is CPython when it defines `_PyRuntime` and `_PyEval_EvalFrameDefault` (the
//! executable itself, or libpython for shared builds); never judged by the command's name.
//! Its version comes from `Py_Version` (3.11+: the `PY_VERSION_HEX` the file was built as) or,
//! for 3.10, the `PY_VERSION` string in its read-only data. Offsets come from 3.13's
//! `_Py_DebugOffsets` or the per-version table (`super::offsets`), and are checked against the
//! live process: the interpreter's first thread state must point back at the interpreter.
//! A CPython of another version is reported once per file and profiled as native.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::sync::Arc;

use object::read::elf::ElfFile64;
use object::{Endianness, Object, ObjectSection, ObjectSegment, ObjectSymbol};

use super::offsets::{self, Offsets};
use super::Memory;
use crate::layout::PythonProc;
use crate::process::maps::{Backing, Mapping};

/// What a file's symbols say about it (link-time addresses).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interpreter {
    pub minor: u32,
    pub runtime: u64,
    /// `_PyEval_EvalFrameDefault`: start and size.
    pub eval: (u64, u64),
    /// `PyCode_Type`: what a code object's `ob_type` is.
    pub code_type: u64,
    pub offsets: Offsets,
}

/// The verdict on one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inspected {
    NotPython,
    Python(Interpreter),
    /// CPython, but not a version (or build) the walk knows.
    Unsupported(String),
}

/// Looks at an ELF image.
pub fn inspect(data: &[u8]) -> Inspected {
    let Ok(elf) = ElfFile64::<Endianness>::parse(data) else {
        return Inspected::NotPython;
    };
    let mut runtime = None;
    let mut eval = None;
    let mut code_type = None;
    let mut py_version = None;
    for sym in elf.dynamic_symbols().chain(elf.symbols()) {
        if sym.is_undefined() {
            continue;
        }
        match sym.name() {
            Ok("_PyRuntime") => runtime = Some(sym.address()),
            Ok("_PyEval_EvalFrameDefault") if sym.size() > 0 => {
                eval = Some((sym.address(), sym.size()))
            }
            Ok("PyCode_Type") => code_type = Some(sym.address()),
            Ok("Py_Version") => py_version = Some(sym.address()),
            _ => {}
        }
    }
    let (Some(runtime), Some(eval), Some(code_type)) = (runtime, eval, code_type) else {
        return Inspected::NotPython;
    };
    let version = match py_version {
        Some(addr) => bytes_at(&elf, addr, 4)
            .and_then(|b| b.try_into().ok())
            .map(|b: [u8; 4]| u32::from_le_bytes(b))
            .map(|hex| ((hex >> 24) & 0xff, (hex >> 16) & 0xff)),
        None => version_string(&elf),
    };
    let Some((major, minor)) = version else {
        return Inspected::Unsupported("CPython of an unknown version".into());
    };
    if major != 3 {
        return Inspected::Unsupported(format!("CPython {major}.{minor}"));
    }
    let debug = bytes_at(&elf, runtime, 72 * 8).and_then(|b| offsets::from_debug_offsets(b, minor));
    match debug.or_else(|| offsets::table(minor)) {
        Some(offsets) => Inspected::Python(Interpreter {
            minor,
            runtime,
            eval,
            code_type,
            offsets,
        }),
        None => {
            Inspected::Unsupported(format!("CPython 3.{minor} (only 3.10 to 3.13 are unwound)"))
        }
    }
}

/// `len` bytes of initialised data at link-time address `addr`.
fn bytes_at<'a>(elf: &ElfFile64<'a, Endianness>, addr: u64, len: u64) -> Option<&'a [u8]> {
    elf.sections().find_map(|s| {
        let delta = addr.checked_sub(s.address())?;
        if delta + len > s.size() {
            return None;
        }
        let data = s.data().ok()?;
        data.get(delta as usize..(delta + len) as usize)
    })
}

/// 3.10 has no `Py_Version`: its `PY_VERSION` ("3.10.13") is in .rodata, on its own or as
/// the tail of a longer string the linker merged it into (a prefix path ending in the version).
fn version_string(elf: &ElfFile64<'_, Endianness>) -> Option<(u32, u32)> {
    let rodata = elf.section_by_name(".rodata")?.data().ok()?;
    rodata.split(|&b| b == 0).find_map(|s| {
        let text = std::str::from_utf8(s).ok()?;
        let tail = text.rsplit(['/', ' ', '-']).next()?;
        parse_version(tail)
    })
}

/// "3.MINOR.PATCH" with an optional release tag ("3.10.0rc1", "3.10.13+").
fn parse_version(text: &str) -> Option<(u32, u32)> {
    let mut parts = text.splitn(3, '.');
    let (major, minor, rest) = (parts.next()?, parts.next()?, parts.next()?);
    let patch_digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let tail_ok = rest[patch_digits..]
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'+');
    let minor_ok = minor.len() == 2 && minor.bytes().all(|b| b.is_ascii_digit());
    (major == "3" && minor_ok && patch_digits > 0 && tail_ok)
        .then(|| Some((3, minor.parse().ok()?)))?
}

/// A CPython process: its interpreter, at the addresses of this process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PythonProcess {
    pub pid: u32,
    pub start_ns: u64,
    /// The file holding the interpreter.
    pub path: String,
    pub minor: u32,
    pub runtime: u64,
    pub eval_start: u64,
    pub eval_end: u64,
    pub code_type: u64,
    pub offsets: Offsets,
}

impl PythonProcess {
    /// The sampler's `python_procs` value.
    pub fn to_bpf(&self) -> PythonProc {
        let o = &self.offsets;
        PythonProc {
            start_ns: self.start_ns,
            runtime: self.runtime,
            eval_start: self.eval_start,
            eval_end: self.eval_end,
            minor: self.minor,
            interpreters_head: o.interpreters_head,
            threads_head: o.threads_head,
            tstate_next: o.tstate_next,
            tstate_thread_id: o.tstate_thread_id,
            tstate_frame: o.tstate_frame,
            cframe_frame: o
                .cframe_frame
                .unwrap_or(crate::layout::consts::PYTHON_NO_CFRAME as u16),
            frame_previous: o.frame_previous,
            frame_code: o.frame_code,
            frame_instr: o.frame_instr,
            frame_owner: o.frame_owner,
        }
    }

    /// Whether the offsets fit the live process: the first thread state of the first
    /// interpreter points back at it. `None`: the interpreter has no thread yet.
    pub fn check(&self, memory: &dyn Memory) -> Option<bool> {
        let o = &self.offsets;
        let interp = memory.word(self.runtime + u64::from(o.interpreters_head))?;
        if interp == 0 {
            return None;
        }
        let tstate = memory.word(interp + u64::from(o.threads_head))?;
        if tstate == 0 {
            return None;
        }
        Some(memory.word(tstate + u64::from(o.tstate_interp))? == interp)
    }
}

/// Finds CPython in processes, remembering each file's verdict.
#[derive(Default)]
pub struct Detector {
    files: HashMap<(u64, u64), Arc<Inspected>>,
    /// Files already reported as an unsupported CPython.
    reported: HashSet<(u64, u64)>,
}

impl Detector {
    /// The CPython interpreter mapped in `pid`, if any, from its executable mappings.
    /// `Err` carries a message to log (once per file).
    pub fn detect(
        &mut self,
        pid: u32,
        start_ns: u64,
        mappings: &[Mapping],
    ) -> Result<Option<PythonProcess>, String> {
        for mapping in mappings.iter().filter(|m| m.executable) {
            let Backing::File { path, .. } = &mapping.backing else {
                continue;
            };
            let key = (mapping.dev, mapping.inode);
            let verdict = match self.files.get(&key) {
                Some(v) => v.clone(),
                None => {
                    let map_file = format!(
                        "/proc/{pid}/map_files/{:x}-{:x}",
                        mapping.start, mapping.end
                    );
                    let Ok(file) = File::open(&map_file).or_else(|_| File::open(path)) else {
                        continue;
                    };
                    let Ok(data) = crate::sys::mmap::map_readonly(&file) else {
                        continue;
                    };
                    let verdict = Arc::new(inspect(&data));
                    self.files.insert(key, verdict.clone());
                    verdict
                }
            };
            match &*verdict {
                Inspected::NotPython => continue,
                Inspected::Unsupported(why) => {
                    if self.reported.insert(key) {
                        return Err(format!("{path}: {why}: profiled as native code"));
                    }
                    return Ok(None);
                }
                Inspected::Python(interp) => {
                    let Some(bias) = load_bias(path, pid, mapping) else {
                        continue;
                    };
                    return Ok(Some(PythonProcess {
                        pid,
                        start_ns,
                        path: path.clone(),
                        minor: interp.minor,
                        runtime: interp.runtime.wrapping_add(bias),
                        eval_start: interp.eval.0.wrapping_add(bias),
                        eval_end: (interp.eval.0 + interp.eval.1).wrapping_add(bias),
                        code_type: interp.code_type.wrapping_add(bias),
                        offsets: interp.offsets,
                    }));
                }
            }
        }
        Ok(None)
    }
}

/// What to add to a link-time address of the file mapped by `mapping` (executable) to get
/// its address in the process: from the `PT_LOAD` segment holding the mapping's file offset.
fn load_bias(path: &str, pid: u32, mapping: &Mapping) -> Option<u64> {
    let map_file = format!(
        "/proc/{pid}/map_files/{:x}-{:x}",
        mapping.start, mapping.end
    );
    let file = File::open(&map_file).or_else(|_| File::open(path)).ok()?;
    let data = crate::sys::mmap::map_readonly(&file).ok()?;
    let elf = ElfFile64::<Endianness>::parse(&*data).ok()?;
    elf.segments().find_map(|seg| {
        let (offset, size) = seg.file_range();
        let delta = mapping.offset.checked_sub(offset)?;
        (delta < size.max(1)).then(|| mapping.start.wrapping_sub(seg.address() + delta))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_the_interpreter_is_not_python() {
        let data = std::fs::read("/proc/self/exe").unwrap();
        assert_eq!(inspect(&data), Inspected::NotPython);
        assert_eq!(inspect(b"not an ELF file"), Inspected::NotPython);
    }

    #[test]
    fn version_strings() {
        assert_eq!(parse_version("3.10.13"), Some((3, 10)));
        assert_eq!(parse_version("3.10.0rc1"), Some((3, 10)));
        assert_eq!(parse_version("3.10.13+"), Some((3, 10)));
        assert_eq!(parse_version("3.10"), None);
        assert_eq!(parse_version("3.1.x"), None);
        assert_eq!(parse_version("2.7.18"), None);
    }
}
