//! The one home of `unsafe`: safe wrappers over libbpf (`bpf`) and the few raw system calls the
//! profiler needs (`signal`, `process`, `poll`, `tracefs`). Everything outside `sys` is safe code.

pub mod bpf;
pub mod mmap;
pub mod poll;
pub mod process;
pub mod signal;
pub mod tracefs;
