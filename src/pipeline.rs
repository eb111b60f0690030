//! The messages that wire the threads together (DESIGN.md, "Data flow"):
//!
//! ```text
//! poller (T1) ──ReportMsg::Trace/Exec/Exit──▶ reporter (T3)
//!      └──────MaintainerMsg──▶ maintainer (T2) ──ReportMsg::Snapshot──┘
//! ```
//! The poller never blocks: its sends use `try_send` and a full queue is a counted drop. The
//! maintainer's snapshots use a blocking send, so none is ever lost.

use crate::process::SharedSnapshot;
use crate::sys::bpf::layout::RawTrace;

/// To the maintainer (T2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MaintainerMsg {
    /// A sample came from a PID the poller had not seen since its last exit.
    Seen { pid: u32 },
    /// The process replaced its address space.
    Exec { pid: u32, ktime_ns: u64 },
    /// The whole process exited.
    Exit { pid: u32, ktime_ns: u64 },
}

/// To the reporter (T3).
#[derive(Debug)]
pub enum ReportMsg {
    Trace(RawTrace),
    Exec {
        pid: u32,
        ktime_ns: u64,
    },
    Exit {
        pid: u32,
        ktime_ns: u64,
    },
    /// A fresh view of a process, valid for its samples from `valid_from_ktime` on.
    Snapshot(SharedSnapshot),
    /// No snapshot could be taken (the process is gone): pending samples resolve without one.
    SnapshotFailed {
        pid: u32,
        valid_from_ktime: u64,
    },
}

/// Queue sizes: enough for several seconds of samples at the highest frequency on a big
/// machine, small enough to bound memory when the reporter stalls.
pub const REPORT_QUEUE: usize = 65_536;
pub const MAINTAINER_QUEUE: usize = 65_536;
