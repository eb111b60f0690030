//! The symbolized, aggregated profile: what the reporter hands to every exporter.
//!
//! This module owns only the data model. Building it (aggregation and symbolization) lives in
//! `crate::reporter`; turning it into bytes lives in `crate::encode`.

use std::sync::Arc;

/// Where a frame's code lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FrameKind {
    /// Kernel text (symbolized through `/proc/kallsyms`).
    Kernel,
    /// User-space native code in an ELF file (or an anonymous region).
    Native,
    /// A CPython function: `module` is the script's file, `address` the instruction offset.
    Python,
}

/// The module name of core kernel frames (perf's name for them).
pub const KERNEL_MODULE: &str = "[kernel.kallsyms]";

/// The file a frame's code was loaded from, shared by every frame of that file.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Module {
    /// Path as the process saw it (from `/proc/PID/maps`), or `[kernel.kallsyms]`, `[vdso]`, ...
    pub path: String,
    /// GNU build ID, lowercase hex, when the file has one.
    pub build_id: Option<String>,
}

/// A position in a source file.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceLine {
    pub file: Arc<str>,
    /// 1-based; 0 when only the file is known.
    pub line: u32,
}

/// One symbolized frame.
///
/// A sampled address inside inlined code gives several frames with the same `module` and
/// `address`: the innermost inlined function first, each with `inlined` set, then the function
/// the code was compiled into (not inlined). Encoders that have a notion of inlining (pprof and
/// OTLP lines) fold such a run back into one location; folded output shows each as a frame.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Frame {
    /// Display name: a demangled symbol, or `module+0xOFFSET`, or `[unknown]`. Never empty.
    pub function: Arc<str>,
    pub kind: FrameKind,
    /// `None` only when not even the mapping is known (`[unknown]`).
    pub module: Option<Arc<Module>>,
    /// Kernel frames: the kernel address. Native frames: the offset in `module`'s file (or the raw
    /// address when `module` is `None`).
    pub address: u64,
    /// The symbol as the file spells it (mangled), when it differs from `function`.
    pub system_name: Option<Arc<str>>,
    /// Where in the source this frame was, when debug info says.
    pub source: Option<SourceLine>,
    /// This function was inlined into the next frame's function at this address.
    pub inlined: bool,
}

impl Frame {
    /// A frame with no source position, not inlined, and no separate system name.
    pub fn new(
        kind: FrameKind,
        function: Arc<str>,
        module: Option<Arc<Module>>,
        address: u64,
    ) -> Self {
        Frame {
            function,
            kind,
            module,
            address,
            system_name: None,
            source: None,
            inlined: false,
        }
    }
}

/// One distinct stack and how often it was sampled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackSample {
    pub pid: u32,
    /// The sampled thread (0 where unknown).
    pub tid: u32,
    /// The sampled thread's name (`comm`).
    pub thread_name: String,
    /// Leaf first: `frames[0]` is where the CPU was; kernel frames come before user frames.
    pub frames: Vec<Frame>,
    pub count: u64,
}

/// A whole session's (or window's) profile.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Profile {
    /// Wall-clock start, nanoseconds since the Unix epoch.
    pub start_unix_ns: u64,
    pub duration_ns: u64,
    /// Nanoseconds of CPU time one sample stands for (1e9 / frequency).
    pub period_ns: u64,
    pub samples: Vec<StackSample>,
    /// The executable of each process in `samples`, where known.
    pub executables: std::collections::BTreeMap<u32, String>,
    /// The cgroup (and container) of each process in `samples`, where known.
    pub cgroups: std::collections::BTreeMap<u32, crate::process::cgroup::Cgroup>,
}

impl Profile {
    pub fn total_samples(&self) -> u64 {
        self.samples.iter().map(|s| s.count).sum()
    }
}

/// Whether a frame name is a real symbol rather than one of the fallbacks the symbolizer
/// writes when it has none: `[unknown]`, or `FILE+0xOFFSET` naming the frame's own module (by
/// path or file name). Exporters use it to say which frames a backend could still symbolize.
pub fn is_symbolized(function: &str, module_path: Option<&str>) -> bool {
    if function.is_empty() || function == "[unknown]" {
        return false;
    }
    let (Some((prefix, offset)), Some(path)) = (function.rsplit_once("+0x"), module_path) else {
        return true;
    };
    let is_offset = !offset.is_empty() && offset.bytes().all(|b| b.is_ascii_hexdigit());
    let file_name = path.rsplit('/').next().unwrap_or(path);
    !(is_offset && (prefix == path || prefix == file_name))
}

/// Splits leaf-first `frames` into the runs that share one code address: the frames inlined
/// there (innermost first, each `inlined`) followed by the frame of the function they were
/// inlined into. A frame that is not inlined is a run of its own. Encoders with a notion of
/// inlining (pprof and OTLP locations with several lines) write one location per run.
pub fn code_locations(frames: &[Frame]) -> impl Iterator<Item = &[Frame]> {
    let mut rest = frames;
    std::iter::from_fn(move || {
        let first = rest.first()?;
        let mut len = 1;
        while let (Some(prev), Some(next)) = (rest.get(len - 1), rest.get(len)) {
            if !prev.inlined || next.address != first.address || next.module != first.module {
                break;
            }
            len += 1;
        }
        let (run, tail) = rest.split_at(len);
        rest = tail;
        Some(run)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(name: &str, address: u64, inlined: bool) -> Frame {
        let mut frame = Frame::new(FrameKind::Native, name.into(), None, address);
        frame.inlined = inlined;
        frame
    }

    #[test]
    fn code_locations_group_inlined_runs() {
        let frames = [
            frame("inner", 0x10, true),
            frame("middle", 0x10, true),
            frame("outer", 0x10, false),
            frame("caller", 0x20, false),
            // An inlined frame whose container is missing stays alone.
            frame("orphan", 0x30, true),
            frame("other", 0x40, false),
        ];
        let runs: Vec<Vec<&str>> = code_locations(&frames)
            .map(|run| run.iter().map(|f| &*f.function).collect())
            .collect();
        assert_eq!(
            runs,
            [
                vec!["inner", "middle", "outer"],
                vec!["caller"],
                vec!["orphan"],
                vec!["other"]
            ]
        );
    }
}
