//! CPython 3.10 to 3.13 (issue 13): which processes run it and where their interpreter's
//! structures are (`detect`, `offsets`), and, from a frame the sampler recorded (a code object's
//! address and an instruction position), the function's qualified name, file and line (`code`,
//! `lines`). The kernel side of the walk is `bpf/python.h`; the maintainer marks processes in
//! the sampler's `python_procs` map and the reporter names the frames.

pub mod code;
pub mod detect;
pub mod lines;
pub mod offsets;

pub use code::{CodeCache, CodeInfo};
pub use detect::{Detector, PythonProcess};

/// Another process's memory (live through `process_vm_readv`, or a fake in tests).
pub trait Memory {
    /// Fills all of `buf` from `addr`; false when any of it could not be read.
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool;

    fn word(&self, addr: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b).then(|| u64::from_le_bytes(b))
    }
}

/// A live process's memory.
pub struct LiveMemory(pub u32);

impl Memory for LiveMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        crate::sys::process::read_memory(self.0, addr, buf) == buf.len()
    }
}
