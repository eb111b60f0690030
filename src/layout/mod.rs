//! The records and constants shared with the BPF programs, mirrored from `bpf/profiler.h`.
//!
//! The numbers are generated from the header by build.rs; the struct layouts are written out
//! here and pinned by compile-time assertions that match the `_Static_assert`s in the header.
//! Decoding is safe code over byte slices.

use std::mem::{offset_of, size_of};

/// Constants generated from `bpf/profiler.h`.
pub mod consts {
    include!(concat!(env!("OUT_DIR"), "/bpf_constants.rs"));
}

pub const COMM_LEN: usize = consts::COMM_LEN as usize;
pub const PATH_LEN: usize = consts::PATH_LEN as usize;
pub const MAX_KERNEL_FRAMES: usize = consts::MAX_KERNEL_FRAMES as usize;
pub const MAX_USER_FRAMES: usize = consts::MAX_USER_FRAMES as usize;

/// `struct trace_header`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TraceHeader {
    pub record_type: u32,
    pub pid: u32,
    pub tid: u32,
    pub cpu: u32,
    pub ktime_ns: u64,
    pub comm: [u8; COMM_LEN],
    pub n_kernel: u16,
    pub n_user: u16,
    pub flags: u32,
}
const _: () = assert!(size_of::<TraceHeader>() == 48);
const _: () = assert!(offset_of!(TraceHeader, ktime_ns) == 16);
const _: () = assert!(offset_of!(TraceHeader, comm) == 24);
const _: () = assert!(offset_of!(TraceHeader, n_kernel) == 40);
const _: () = assert!(offset_of!(TraceHeader, n_user) == 42);
const _: () = assert!(offset_of!(TraceHeader, flags) == 44);

/// `struct proc_event`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcEvent {
    pub record_type: u32,
    pub pid: u32,
    pub ktime_ns: u64,
    pub addr: u64,
    pub start_ns: u64,
    pub exec_gen: u64,
}
const _: () = assert!(size_of::<ProcEvent>() == 40);
const _: () = assert!(offset_of!(ProcEvent, ktime_ns) == 8);
const _: () = assert!(offset_of!(ProcEvent, addr) == 16);
const _: () = assert!(offset_of!(ProcEvent, start_ns) == 24);
const _: () = assert!(offset_of!(ProcEvent, exec_gen) == 32);

/// `struct exec_event`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecEvent {
    pub record_type: u32,
    pub pid: u32,
    pub ktime_ns: u64,
    pub start_ns: u64,
    pub exec_gen: u64,
    pub inode: u64,
    pub dev: u32,
    pub path_len: u32,
    pub path: [u8; PATH_LEN],
}
const _: () = assert!(size_of::<ExecEvent>() == 48 + PATH_LEN);
const _: () = assert!(offset_of!(ExecEvent, start_ns) == 16);
const _: () = assert!(offset_of!(ExecEvent, exec_gen) == 24);
const _: () = assert!(offset_of!(ExecEvent, inode) == 32);
const _: () = assert!(offset_of!(ExecEvent, dev) == 40);
const _: () = assert!(offset_of!(ExecEvent, path_len) == 44);
const _: () = assert!(offset_of!(ExecEvent, path) == 48);

/// `struct vma_event`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct VmaEvent {
    pub record_type: u32,
    pub pid: u32,
    pub ktime_ns: u64,
    pub start: u64,
    pub end: u64,
    pub file_offset: u64,
    pub inode: u64,
    pub dev: u32,
    pub flags: u32,
}
const _: () = assert!(size_of::<VmaEvent>() == 56);
const _: () = assert!(offset_of!(VmaEvent, start) == 16);
const _: () = assert!(offset_of!(VmaEvent, inode) == 40);
const _: () = assert!(offset_of!(VmaEvent, dev) == 48);

/// `struct stack_header`, the start of a RECORD_STACK.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct StackHeader {
    pub record_type: u32,
    pub pid: u32,
    pub tid: u32,
    pub len: u32,
    pub ktime_ns: u64,
    pub pc: u64,
    pub sp: u64,
    pub bp: u64,
    pub pc_exact: u32,
    pub n_vmas: u32,
}
const _: () = assert!(size_of::<StackHeader>() == 56);
const _: () = assert!(offset_of!(StackHeader, ktime_ns) == 16);
const _: () = assert!(offset_of!(StackHeader, pc_exact) == 48);

/// `struct proc_vma`: where a file is mapped (first sight's record of a process).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcVma {
    pub start: u64,
    pub end: u64,
    /// File offset of `start`.
    pub offset: u64,
    pub inode: u64,
    /// Kernel encoding.
    pub dev: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<ProcVma>() == 40);
const _: () = assert!(offset_of!(ProcVma, dev) == 32);
pub const PROC_VMA_SLOTS: usize = consts::PROC_VMA_SLOTS as usize;

/// The start of `struct proc_vmas`, a RECORD_MAPPINGS: `n` of the `PROC_VMA_SLOTS` mappings
/// that follow are used (the struct's last field, `mm`, is not sent).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MappingsHeader {
    pub record_type: u32,
    pub pid: u32,
    pub n: u32,
    pub flags: u32,
}
const _: () = assert!(size_of::<MappingsHeader>() == 16);
pub const STACK_COPY_BYTES: usize = consts::STACK_COPY_BYTES as usize;

/// A RECORD_MAPPINGS, decoded: the first-sight list of a process that exited with walks cut
/// (what finishing them may need beyond their own records).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MappingsRecord {
    pub pid: u32,
    /// Oldest first, as in a stack record.
    pub vmas: Vec<ProcVma>,
}

/// A RECORD_STACK, decoded: what finishing a cut walk in user space needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackRecord {
    pub pid: u32,
    pub tid: u32,
    /// The trace's, which follows this record.
    pub ktime_ns: u64,
    /// Registers of the frame where the walk stopped.
    pub pc: u64,
    pub sp: u64,
    pub bp: u64,
    pub pc_exact: bool,
    /// The process's code mappings, oldest first.
    pub vmas: Vec<ProcVma>,
    /// The stack from `sp` up.
    pub stack: Vec<u8>,
}

/// `struct pid_mapping_key`: prefix length, then the big-endian PID and address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PidMappingKey {
    pub prefixlen: u32,
    pub pid_be: u32,
    pub addr_be: u64,
}
const _: () = assert!(size_of::<PidMappingKey>() == 16);

impl PidMappingKey {
    pub fn new(pid: u32, addr: u64, prefixlen: u32) -> Self {
        Self {
            prefixlen,
            pid_be: pid.to_be(),
            addr_be: addr.to_be(),
        }
    }

    pub fn pid(&self) -> u32 {
        u32::from_be(self.pid_be)
    }

    pub fn addr(&self) -> u64 {
        u64::from_be(self.addr_be)
    }

    pub fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..4].copy_from_slice(&self.prefixlen.to_ne_bytes());
        b[4..8].copy_from_slice(&self.pid_be.to_ne_bytes());
        b[8..].copy_from_slice(&self.addr_be.to_ne_bytes());
        b
    }

    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        (b.len() == 16).then(|| Self {
            prefixlen: u32_at(b, 0),
            pid_be: u32_at(b, 4),
            addr_be: u64_at(b, 8),
        })
    }
}

/// `struct pid_mapping_value`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PidMappingValue {
    pub file_id: u32,
    pub flags: u16,
    pub prefixlen: u16,
    pub bias: u64,
    pub prefix_addr: u64,
    pub exec_gen: u64,
    pub table: TableRef,
    /// The whole mapping the entry's block belongs to (0, 0 for markers).
    pub map_start: u64,
    pub map_end: u64,
}
const _: () = assert!(size_of::<PidMappingValue>() == 64);
const _: () = assert!(offset_of!(PidMappingValue, bias) == 8);
const _: () = assert!(offset_of!(PidMappingValue, prefix_addr) == 16);
const _: () = assert!(offset_of!(PidMappingValue, exec_gen) == 24);
const _: () = assert!(offset_of!(PidMappingValue, table) == 32);
const _: () = assert!(offset_of!(PidMappingValue, map_start) == 48);
const _: () = assert!(offset_of!(PidMappingValue, map_end) == 56);

/// `struct table_ref`: where a file's unwind table lives in `unwind_buckets` (also the last
/// three fields of `struct pid_mapping_value`). `direct == 0`: no table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TableRef {
    pub first: u32,
    pub direct: u32,
    pub base: u64,
}
const _: () = assert!(size_of::<TableRef>() == 16);

/// `struct file_table_key`: a file as the kernel identifies its inode.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FileTableKey {
    /// Kernel encoding (major << 20 | minor).
    pub dev: u32,
    pub _pad: u32,
    pub inode: u64,
}
const _: () = assert!(size_of::<FileTableKey>() == 16);
const _: () = assert!(offset_of!(FileTableKey, inode) == 8);

impl FileTableKey {
    /// From user space's `st_dev` (glibc's `makedev` encoding) and inode.
    pub fn new(dev: u64, inode: u64) -> Self {
        let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
        let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
        Self {
            dev: ((major << 20) | (minor & 0xf_ffff)) as u32,
            _pad: 0,
            inode,
        }
    }

    pub fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..4].copy_from_slice(&self.dev.to_ne_bytes());
        b[8..16].copy_from_slice(&self.inode.to_ne_bytes());
        b
    }
}

/// `struct file_table_value`: a file's ID and unwind table, for first sight.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileTableValue {
    pub file_id: u32,
    pub table_first: u32,
    pub table_direct: u32,
    /// `MAPPING_TABLE_PENDING`: the table is being built.
    pub flags: u32,
    pub table_base: u64,
}
const _: () = assert!(size_of::<FileTableValue>() == 24);
const _: () = assert!(offset_of!(FileTableValue, table_base) == 16);

impl FileTableValue {
    pub fn new(file_id: u32, table: TableRef, pending: bool) -> Self {
        Self {
            file_id,
            table_first: table.first,
            table_direct: table.direct,
            flags: if pending {
                consts::MAPPING_TABLE_PENDING as u32
            } else {
                0
            },
            table_base: table.base,
        }
    }

    pub fn to_bytes(self) -> [u8; 24] {
        let mut b = [0u8; 24];
        b[0..4].copy_from_slice(&self.file_id.to_ne_bytes());
        b[4..8].copy_from_slice(&self.table_first.to_ne_bytes());
        b[8..12].copy_from_slice(&self.table_direct.to_ne_bytes());
        b[12..16].copy_from_slice(&self.flags.to_ne_bytes());
        b[16..24].copy_from_slice(&self.table_base.to_ne_bytes());
        b
    }

    pub fn from_bytes(b: &[u8; 24]) -> Self {
        Self {
            file_id: u32_at(b, 0),
            table_first: u32_at(b, 4),
            table_direct: u32_at(b, 8),
            flags: u32_at(b, 12),
            table_base: u64_at(b, 16),
        }
    }
}

/// Bytes of one `struct unwind_bucket`.
pub const UNWIND_BUCKET_BYTES: usize = 256;
const _: () = assert!(consts::UNWIND_KEYS * 2 + consts::UNWIND_RULES * 4 == 256);

impl PidMappingValue {
    pub const SIZE: usize = size_of::<Self>();

    pub fn to_bytes(self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[..4].copy_from_slice(&self.file_id.to_ne_bytes());
        b[4..6].copy_from_slice(&self.flags.to_ne_bytes());
        b[6..8].copy_from_slice(&self.prefixlen.to_ne_bytes());
        b[8..16].copy_from_slice(&self.bias.to_ne_bytes());
        b[16..24].copy_from_slice(&self.prefix_addr.to_ne_bytes());
        b[24..32].copy_from_slice(&self.exec_gen.to_ne_bytes());
        b[32..36].copy_from_slice(&self.table.first.to_ne_bytes());
        b[36..40].copy_from_slice(&self.table.direct.to_ne_bytes());
        b[40..48].copy_from_slice(&self.table.base.to_ne_bytes());
        b[48..56].copy_from_slice(&self.map_start.to_ne_bytes());
        b[56..64].copy_from_slice(&self.map_end.to_ne_bytes());
        b
    }

    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        (b.len() == Self::SIZE).then(|| Self {
            file_id: u32_at(b, 0),
            flags: u16_at(b, 4),
            prefixlen: u16_at(b, 6),
            bias: u64_at(b, 8),
            prefix_addr: u64_at(b, 16),
            exec_gen: u64_at(b, 24),
            table: TableRef {
                first: u32_at(b, 32),
                direct: u32_at(b, 36),
                base: u64_at(b, 40),
            },
            map_start: u64_at(b, 48),
            map_end: u64_at(b, 56),
        })
    }
}

/// `struct python_proc`: a CPython process for the sampler's Python walk (bpf/python.h).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PythonProc {
    pub start_ns: u64,
    pub runtime: u64,
    pub eval_start: u64,
    pub eval_end: u64,
    pub minor: u32,
    pub interpreters_head: u16,
    pub threads_head: u16,
    pub tstate_next: u16,
    pub tstate_thread_id: u16,
    pub tstate_frame: u16,
    pub cframe_frame: u16,
    pub frame_previous: u16,
    pub frame_code: u16,
    pub frame_instr: u16,
    pub frame_owner: u16,
}
const _: () = assert!(size_of::<PythonProc>() == 56);
const _: () = assert!(offset_of!(PythonProc, minor) == 32);
const _: () = assert!(offset_of!(PythonProc, frame_owner) == 54);

impl PythonProc {
    pub fn to_bytes(self) -> [u8; 56] {
        let mut b = [0u8; 56];
        for (i, v) in [self.start_ns, self.runtime, self.eval_start, self.eval_end]
            .into_iter()
            .enumerate()
        {
            b[i * 8..i * 8 + 8].copy_from_slice(&v.to_ne_bytes());
        }
        b[32..36].copy_from_slice(&self.minor.to_ne_bytes());
        let halves = [
            self.interpreters_head,
            self.threads_head,
            self.tstate_next,
            self.tstate_thread_id,
            self.tstate_frame,
            self.cframe_frame,
            self.frame_previous,
            self.frame_code,
            self.frame_instr,
            self.frame_owner,
        ];
        for (i, v) in halves.into_iter().enumerate() {
            b[36 + i * 2..38 + i * 2].copy_from_slice(&v.to_ne_bytes());
        }
        b
    }
}

/// The sampler's `.rodata`: `const volatile __u32 filter_pids`.
pub const SAMPLER_RODATA_SIZE: usize = 4;
/// The sampler's `.bss`: `volatile __u64 mappings_generation`.
pub const SAMPLER_BSS_SIZE: usize = 8;

/// One user frame as the sampler resolved it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UserFrame {
    /// A file offset in `file_id` when `flags` has FRAME_RESOLVED, else the raw address.
    pub address: u64,
    pub file_id: u32,
    pub flags: u32,
}

impl UserFrame {
    pub fn is_resolved(&self) -> bool {
        self.flags as u64 & consts::FRAME_RESOLVED != 0
    }

    /// A CPython frame: `address` is the code object, `file_id` the instruction position.
    pub fn is_python(&self) -> bool {
        self.flags as u64 & consts::FRAME_PYTHON != 0
    }
}

/// A decoded stack sample. Frames are leaf first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawTrace {
    pub pid: u32,
    pub tid: u32,
    pub cpu: u32,
    pub ktime_ns: u64,
    pub comm: [u8; COMM_LEN],
    pub flags: u32,
    pub kernel: Vec<u64>,
    pub user: Vec<UserFrame>,
}

impl RawTrace {
    /// How the user stack walk ended (`consts::UNWIND_DONE_*`; 0 when there was none).
    pub fn unwind_outcome(&self) -> u64 {
        (u64::from(self.flags) >> consts::TRACE_UNWIND_SHIFT) & 0xf
    }

    /// The thread name, up to its NUL.
    pub fn comm(&self) -> String {
        let end = self.comm.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
        String::from_utf8_lossy(&self.comm[..end]).into_owned()
    }

    /// Whether some user frame still needs user space to find its mapping.
    pub fn has_raw_frames(&self) -> bool {
        self.user.iter().any(|f| {
            let not_raw = consts::FRAME_ANON | consts::FRAME_PYTHON | consts::FRAME_PY_EVAL;
            !f.is_resolved() && f.flags as u64 & (not_raw | consts::FRAME_PY_SPLIT) == 0
        })
    }
}

pub(crate) fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}
pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_ne_bytes(a)
}

/// The kernel's `dev_t` (major << 20 | minor) in the `makedev` encoding user space uses.
pub fn kernel_dev(dev: u32) -> u64 {
    libc::makedev(dev >> 20, dev & 0xf_ffff)
}

/// The kernel's encoding of a `makedev` device number (the inverse of [`kernel_dev`]).
pub fn kernel_dev_encoding(dev: u64) -> u32 {
    (libc::major(dev) << 20) | (libc::minor(dev) & 0xf_ffff)
}

mod decode;
pub use decode::{decode, DecodeError, ExecRecord, Record, VmaRecord};

#[cfg(test)]
mod tests;
