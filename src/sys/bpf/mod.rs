//! Safe wrappers over libbpf (through `libbpf-sys`) and the perf-event syscalls.
//!
//! Every libbpf resource has an owning type that frees it in `Drop` (`LoadedObject`, `Link`,
//! `PerfBuffer`, `Map` holds its own duplicated fd), so a crash or early return leaves nothing
//! attached: nothing is pinned, and the kernel detaches programs when the last fd closes.

mod link;
mod log;
mod map;
mod object;
mod perf_buffer;
mod test_run;

pub use link::{online_cpus, open_cpu_clock, Link};
pub use map::{possible_cpus, BatchOutcome, Map, MapKind};
pub use object::{LoadedObject, OpenObject};
pub use perf_buffer::{PerfBuffer, PerfHandler, Wakeup};

use std::io;

/// Turns libbpf's "negative errno" return convention into an `io::Result`.
fn check(ret: i32) -> io::Result<i32> {
    if ret < 0 {
        Err(io::Error::from_raw_os_error(-ret))
    } else {
        Ok(ret)
    }
}

/// The error of a libbpf call that returned NULL and set errno.
fn last_error() -> io::Error {
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(0) | None => io::Error::other("libbpf call failed without an error code"),
        Some(_) => err,
    }
}

/// Adds what was being done to an I/O error, keeping its kind.
pub(crate) fn context(err: io::Error, what: impl std::fmt::Display) -> io::Error {
    io::Error::new(err.kind(), format!("{what}: {err}"))
}

/// Kinds of BPF objects the kernel numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectKind {
    Prog,
    Map,
    Link,
}

/// Whether the kernel still has the BPF object `kind` number `id` (used to check that nothing
/// outlives a session).
pub fn object_exists(kind: ObjectKind, id: u32) -> bool {
    // SAFETY: these take an ID and return a new fd or a negative error; no pointers.
    let fd = unsafe {
        match kind {
            ObjectKind::Prog => libbpf_sys::bpf_prog_get_fd_by_id(id),
            ObjectKind::Map => libbpf_sys::bpf_map_get_fd_by_id(id),
            ObjectKind::Link => libbpf_sys::bpf_link_get_fd_by_id(id),
        }
    };
    if fd < 0 {
        return false;
    }
    // SAFETY: fd was just returned to us and is closed once.
    unsafe { libc::close(fd) };
    true
}
