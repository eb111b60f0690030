//! The one home of `unsafe`: safe wrappers over libbpf (`bpf`) and the few raw system calls the
//! profiler needs (`signal`, `process`). Everything outside `sys` is safe code.

pub mod bpf;
pub mod process;
pub mod signal;
