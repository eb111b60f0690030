//! The one home of `unsafe`: safe wrappers over libbpf (`bpf`) and the few raw system calls the
//! profiler needs (`signal`, `process`, `poll`, `random`, `notify`, `terminal`). Everything
//! outside `sys` is safe code.

pub mod bpf;
pub mod mmap;
pub mod notify;
pub mod poll;
pub mod process;
pub mod random;
pub mod signal;
pub mod terminal;
