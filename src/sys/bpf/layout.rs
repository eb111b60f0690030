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
}
const _: () = assert!(size_of::<ProcEvent>() == 16);
const _: () = assert!(offset_of!(ProcEvent, ktime_ns) == 8);

/// The sampler's `.rodata`: `const volatile __u32 filter_pids`.
pub const SAMPLER_RODATA_SIZE: usize = 4;

/// A decoded stack sample. Addresses are leaf first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawTrace {
    pub pid: u32,
    pub tid: u32,
    pub cpu: u32,
    pub ktime_ns: u64,
    pub comm: [u8; COMM_LEN],
    pub flags: u32,
    pub kernel: Vec<u64>,
    pub user: Vec<u64>,
}

impl RawTrace {
    /// The thread name, up to its NUL.
    pub fn comm(&self) -> String {
        let end = self.comm.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
        String::from_utf8_lossy(&self.comm[..end]).into_owned()
    }
}

/// Anything the BPF programs send through the `events` perf buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Trace(RawTrace),
    Exec { pid: u32, ktime_ns: u64 },
    Exit { pid: u32, ktime_ns: u64 },
}

/// Why a record could not be decoded (a bug or a version mismatch; counted, never fatal).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    TooShort { len: usize, need: usize },
    UnknownType(u32),
    TooManyFrames { n_kernel: usize, n_user: usize },
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_ne_bytes(a)
}

/// Decodes one record. Trailing bytes (perf's padding) are ignored.
pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
    if bytes.len() < 4 {
        return Err(DecodeError::TooShort {
            len: bytes.len(),
            need: 4,
        });
    }
    let record_type = u32_at(bytes, 0) as u64;
    match record_type {
        consts::RECORD_TRACE => decode_trace(bytes).map(Record::Trace),
        consts::RECORD_EXEC | consts::RECORD_EXIT => {
            let need = size_of::<ProcEvent>();
            if bytes.len() < need {
                return Err(DecodeError::TooShort {
                    len: bytes.len(),
                    need,
                });
            }
            let pid = u32_at(bytes, offset_of!(ProcEvent, pid));
            let ktime_ns = u64_at(bytes, offset_of!(ProcEvent, ktime_ns));
            Ok(if record_type == consts::RECORD_EXEC {
                Record::Exec { pid, ktime_ns }
            } else {
                Record::Exit { pid, ktime_ns }
            })
        }
        other => Err(DecodeError::UnknownType(other as u32)),
    }
}

fn decode_trace(bytes: &[u8]) -> Result<RawTrace, DecodeError> {
    let header = size_of::<TraceHeader>();
    if bytes.len() < header {
        return Err(DecodeError::TooShort {
            len: bytes.len(),
            need: header,
        });
    }
    let n_kernel = u16_at(bytes, offset_of!(TraceHeader, n_kernel)) as usize;
    let n_user = u16_at(bytes, offset_of!(TraceHeader, n_user)) as usize;
    if n_kernel > MAX_KERNEL_FRAMES || n_user > MAX_USER_FRAMES {
        return Err(DecodeError::TooManyFrames { n_kernel, n_user });
    }
    let need = header + 8 * (n_kernel + n_user);
    if bytes.len() < need {
        return Err(DecodeError::TooShort {
            len: bytes.len(),
            need,
        });
    }
    let frames: Vec<u64> = (0..n_kernel + n_user)
        .map(|i| u64_at(bytes, header + 8 * i))
        .collect();
    let mut comm = [0u8; COMM_LEN];
    let comm_at = offset_of!(TraceHeader, comm);
    comm.copy_from_slice(&bytes[comm_at..comm_at + COMM_LEN]);
    Ok(RawTrace {
        pid: u32_at(bytes, offset_of!(TraceHeader, pid)),
        tid: u32_at(bytes, offset_of!(TraceHeader, tid)),
        cpu: u32_at(bytes, offset_of!(TraceHeader, cpu)),
        ktime_ns: u64_at(bytes, offset_of!(TraceHeader, ktime_ns)),
        comm,
        flags: u32_at(bytes, offset_of!(TraceHeader, flags)),
        kernel: frames[..n_kernel].to_vec(),
        user: frames[n_kernel..].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace_bytes(kernel: &[u64], user: &[u64], padding: usize) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&(consts::RECORD_TRACE as u32).to_ne_bytes());
        b.extend_from_slice(&42u32.to_ne_bytes());
        b.extend_from_slice(&43u32.to_ne_bytes());
        b.extend_from_slice(&1u32.to_ne_bytes());
        b.extend_from_slice(&123_456u64.to_ne_bytes());
        b.extend_from_slice(b"worker\0\0\0\0\0\0\0\0\0\0");
        b.extend_from_slice(&(kernel.len() as u16).to_ne_bytes());
        b.extend_from_slice(&(user.len() as u16).to_ne_bytes());
        b.extend_from_slice(&(consts::TRACE_KERNEL_MODE as u32).to_ne_bytes());
        for a in kernel.iter().chain(user) {
            b.extend_from_slice(&a.to_ne_bytes());
        }
        b.resize(b.len() + padding, 0xAA);
        b
    }

    #[test]
    fn decodes_a_trace_with_padding() {
        let rec = decode(&trace_bytes(
            &[0xffff_ffff_8100_0000],
            &[0x401000, 0x401100],
            4,
        ))
        .unwrap();
        let Record::Trace(t) = rec else {
            panic!("not a trace")
        };
        assert_eq!((t.pid, t.tid, t.cpu, t.ktime_ns), (42, 43, 1, 123_456));
        assert_eq!(t.comm(), "worker");
        assert_eq!(t.kernel, vec![0xffff_ffff_8100_0000]);
        assert_eq!(t.user, vec![0x401000, 0x401100]);
        assert_eq!(t.flags as u64, consts::TRACE_KERNEL_MODE);
    }

    #[test]
    fn rejects_truncated_and_unknown_records() {
        let full = trace_bytes(&[1, 2], &[3], 0);
        assert!(matches!(
            decode(&full[..full.len() - 1]),
            Err(DecodeError::TooShort { .. })
        ));
        assert!(matches!(
            decode(&full[..10]),
            Err(DecodeError::TooShort { .. })
        ));
        assert_eq!(decode(&[9, 0, 0, 0]), Err(DecodeError::UnknownType(9)));
        assert!(decode(&[]).is_err());
        let mut bad = trace_bytes(&[], &[], 0);
        bad[40] = 0xff; // n_kernel = 255
        assert!(matches!(
            decode(&bad),
            Err(DecodeError::TooManyFrames { .. })
        ));
    }

    #[test]
    fn decodes_process_events() {
        let mut b = (consts::RECORD_EXIT as u32).to_ne_bytes().to_vec();
        b.extend_from_slice(&7u32.to_ne_bytes());
        b.extend_from_slice(&99u64.to_ne_bytes());
        assert_eq!(
            decode(&b),
            Ok(Record::Exit {
                pid: 7,
                ktime_ns: 99
            })
        );
        b[0] = consts::RECORD_EXEC as u8;
        assert_eq!(
            decode(&b),
            Ok(Record::Exec {
                pid: 7,
                ktime_ns: 99
            })
        );
    }

    #[test]
    fn generated_constants_match_the_header() {
        assert_eq!(
            consts::MAX_FRAMES,
            consts::MAX_KERNEL_FRAMES + consts::MAX_USER_FRAMES
        );
        assert_eq!(consts::TRACE_USTACK_FAILED, 8);
        assert_eq!(consts::COUNTER_MAX, 8);
    }
}
