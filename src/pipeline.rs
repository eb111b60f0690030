//! The messages that wire the threads together (docs/architecture.md, "Threads and data flow"):
//!
//! ```text
//! poller (T1) ──ReportMsg: Trace, Stack, Vma, Exec, Exit───────▶ reporter (T3)
//!      └──MaintainerMsg: Report, Exit, Sampled──▶ maintainer (T2) ──ReportMsg::File──┘
//! ```
//! Messages travel in batches (`Vec`s), one per poll cycle, so each consumer wakes once per
//! cycle. The poller never blocks: its sends use `try_send` and a full queue is a counted drop. The
//! maintainer announces a file (blocking send) before it writes any map entry naming it, so in
//! the reporter's single queue the announcement always comes before the first sample using it.

use crate::layout::{ExecRecord, MappingsRecord, RawTrace, StackRecord, VmaRecord};
use crate::process::files::SharedFile;

/// Why the maintainer looks at a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    UnknownPid,
    UnknownMapping,
    /// An unknown mapping where the kernel's record shows a file the maintainer has not
    /// registered: a library mapped since the last sync, worth a re-sync at once.
    NewFile,
    Exec,
}

/// To the maintainer (T2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MaintainerMsg {
    /// The sampler could not resolve an address of the PID, or the PID exec'd.
    Report {
        pid: u32,
        start_ns: u64,
        /// Which image of the process (see `Record`): its entries must carry this value.
        exec_gen: u64,
        trigger: Trigger,
    },
    /// The whole process exited.
    Exit { pid: u32, start_ns: u64 },
    /// A binary was exec'd (as execve named it, and its device and inode).
    Executed { path: String, dev: u64, inode: u64 },
    /// PIDs sampled recently (for least-recently-sampled eviction).
    Sampled(Vec<u32>),
    /// Files the samples named recently, with how many samples named each (kept registered
    /// while in use; their tables are built first and evicted last).
    FilesUsed(Vec<(u32, u32)>),
}

/// To the reporter (T3).
#[derive(Debug)]
pub enum ReportMsg {
    Trace(RawTrace),
    /// What finishing a cut walk needs; ahead of its trace (which has `TRACE_HAS_STACK`).
    Stack(Box<StackRecord>),
    /// The code mappings of a process that exited with walks waiting (see `Stack`).
    Mappings(MappingsRecord),
    Vma(VmaRecord),
    Exec(ExecRecord),
    Exit {
        pid: u32,
        ktime_ns: u64,
    },
    /// A file the maintainer registered; map entries may name it from now on.
    File(SharedFile),
    /// The maintainer no longer tracks this file.
    FileReleased(u32),
    /// The maintainer read a process's executable.
    Process {
        pid: u32,
        exe: String,
    },
    /// A CPython process the maintainer found; sent before it is marked for the Python walk,
    /// so it precedes the first Python frame of the process.
    Python(std::sync::Arc<crate::python::PythonProcess>),
    /// Sampling started: the first window begins.
    Start {
        unix_ns: u64,
        at: std::time::Instant,
    },
    /// Sampling stopped: the last window ends here, whatever the end of the session still does
    /// (tables being built, symbolization).
    Stop {
        at: std::time::Instant,
    },
}

/// Queue sizes, in batches (one per poll cycle, at most 4096 messages each): tens of seconds of
/// cycles, so only a stalled consumer ever fills them.
pub const REPORT_QUEUE: usize = 1024;
pub const MAINTAINER_QUEUE: usize = 1024;
