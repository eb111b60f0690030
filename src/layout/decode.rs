//! Decoding the records the BPF programs send (perf buffer payloads) into owned Rust values:
//! safe code over byte slices, every length checked.

use std::mem::{offset_of, size_of};

use super::*;

/// What the kernel said about the VMA behind an address the trie could not resolve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmaRecord {
    pub pid: u32,
    pub ktime_ns: u64,
    pub start: u64,
    pub end: u64,
    pub file_offset: u64,
    pub inode: u64,
    /// `makedev` encoding, comparable with `stat` and `/proc/PID/maps`.
    pub dev: u64,
}

/// An exec: the process's new executable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecRecord {
    pub pid: u32,
    pub ktime_ns: u64,
    /// The process's identity next to its PID (see `Record`).
    pub start_ns: u64,
    /// The new image's address-space generation (see `Record`).
    pub exec_gen: u64,
    pub inode: u64,
    pub dev: u64,
    /// As execve named it (possibly relative); empty when unreadable.
    pub path: String,
}

/// Anything the BPF programs send through the `events` perf buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
///
/// Process events carry the process's identity next to its PID: `start_ns`, when its thread
/// group leader started (`start_boottime`; /proc shows the same instant in clock ticks).
/// Reports and execs also carry `exec_gen`, which of the process's images (address spaces)
/// they are about: the value pid_mappings entries for that image must hold (the sampler
/// computes it from the start and the kernel's exec count; nothing else can read it).
pub enum Record {
    Trace(RawTrace),
    Exec(ExecRecord),
    Exit {
        pid: u32,
        start_ns: u64,
        ktime_ns: u64,
    },
    UnknownPid {
        pid: u32,
        start_ns: u64,
        exec_gen: u64,
        ktime_ns: u64,
    },
    UnknownMapping {
        pid: u32,
        start_ns: u64,
        exec_gen: u64,
        ktime_ns: u64,
        addr: u64,
    },
    Vma(VmaRecord),
    Stack(Box<StackRecord>),
    Mappings(MappingsRecord),
}

/// Why a record could not be decoded (a bug or a version mismatch; counted, never fatal).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    TooShort { len: usize, need: usize },
    UnknownType(u32),
    TooManyFrames { n_kernel: usize, n_user: usize },
}

fn need(bytes: &[u8], need: usize) -> Result<(), DecodeError> {
    if bytes.len() < need {
        return Err(DecodeError::TooShort {
            len: bytes.len(),
            need,
        });
    }
    Ok(())
}

/// Decodes one record. Trailing bytes (perf's padding) are ignored.
pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
    need(bytes, 4)?;
    let record_type = u64::from(u32_at(bytes, 0));
    match record_type {
        consts::RECORD_TRACE => decode_trace(bytes).map(Record::Trace),
        consts::RECORD_EXEC => decode_exec(bytes).map(Record::Exec),
        consts::RECORD_VMA => decode_vma(bytes).map(Record::Vma),
        consts::RECORD_STACK => decode_stack(bytes).map(|s| Record::Stack(Box::new(s))),
        consts::RECORD_MAPPINGS => decode_mappings(bytes).map(Record::Mappings),
        consts::RECORD_EXIT | consts::RECORD_UNKNOWN_PID | consts::RECORD_UNKNOWN_MAPPING => {
            need(bytes, size_of::<ProcEvent>())?;
            let pid = u32_at(bytes, offset_of!(ProcEvent, pid));
            let ktime_ns = u64_at(bytes, offset_of!(ProcEvent, ktime_ns));
            let addr = u64_at(bytes, offset_of!(ProcEvent, addr));
            let start_ns = u64_at(bytes, offset_of!(ProcEvent, start_ns));
            let exec_gen = u64_at(bytes, offset_of!(ProcEvent, exec_gen));
            Ok(match record_type {
                consts::RECORD_EXIT => Record::Exit {
                    pid,
                    start_ns,
                    ktime_ns,
                },
                consts::RECORD_UNKNOWN_PID => Record::UnknownPid {
                    pid,
                    start_ns,
                    exec_gen,
                    ktime_ns,
                },
                _ => Record::UnknownMapping {
                    pid,
                    start_ns,
                    exec_gen,
                    ktime_ns,
                    addr,
                },
            })
        }
        other => Err(DecodeError::UnknownType(other as u32)),
    }
}

fn decode_trace(bytes: &[u8]) -> Result<RawTrace, DecodeError> {
    let header = size_of::<TraceHeader>();
    need(bytes, header)?;
    let n_kernel = u16_at(bytes, offset_of!(TraceHeader, n_kernel)) as usize;
    let n_user = u16_at(bytes, offset_of!(TraceHeader, n_user)) as usize;
    if n_kernel > MAX_KERNEL_FRAMES || n_user > MAX_USER_FRAMES {
        return Err(DecodeError::TooManyFrames { n_kernel, n_user });
    }
    need(bytes, header + 8 * (n_kernel + 2 * n_user))?;
    let word = |i: usize| u64_at(bytes, header + 8 * i);
    let kernel = (0..n_kernel).map(word).collect();
    let user = (0..n_user)
        .map(|i| {
            let meta = word(n_kernel + 2 * i + 1);
            UserFrame {
                address: word(n_kernel + 2 * i),
                file_id: meta as u32,
                flags: (meta >> 32) as u32,
            }
        })
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
        kernel,
        user,
    })
}

fn decode_exec(bytes: &[u8]) -> Result<ExecRecord, DecodeError> {
    let path_at = offset_of!(ExecEvent, path);
    need(bytes, path_at)?;
    let path_len = (u32_at(bytes, offset_of!(ExecEvent, path_len)) as usize).min(PATH_LEN);
    need(bytes, path_at + path_len)?;
    let raw = &bytes[path_at..path_at + path_len];
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    Ok(ExecRecord {
        pid: u32_at(bytes, offset_of!(ExecEvent, pid)),
        ktime_ns: u64_at(bytes, offset_of!(ExecEvent, ktime_ns)),
        start_ns: u64_at(bytes, offset_of!(ExecEvent, start_ns)),
        exec_gen: u64_at(bytes, offset_of!(ExecEvent, exec_gen)),
        inode: u64_at(bytes, offset_of!(ExecEvent, inode)),
        dev: kernel_dev(u32_at(bytes, offset_of!(ExecEvent, dev))),
        path: String::from_utf8_lossy(&raw[..end]).into_owned(),
    })
}

/// The `n` used of the `PROC_VMA_SLOTS` mappings at `at` (the caller checked they are there).
fn proc_vmas_at(bytes: &[u8], at: usize, n: u32) -> Vec<ProcVma> {
    (0..(n as usize).min(PROC_VMA_SLOTS))
        .map(|i| {
            let at = at + i * size_of::<ProcVma>();
            ProcVma {
                start: u64_at(bytes, at),
                end: u64_at(bytes, at + 8),
                offset: u64_at(bytes, at + 16),
                inode: u64_at(bytes, at + 24),
                dev: u32_at(bytes, at + offset_of!(ProcVma, dev)),
                _pad: 0,
            }
        })
        .collect()
}

fn decode_mappings(bytes: &[u8]) -> Result<MappingsRecord, DecodeError> {
    let header = size_of::<MappingsHeader>();
    need(bytes, header + PROC_VMA_SLOTS * size_of::<ProcVma>())?;
    Ok(MappingsRecord {
        pid: u32_at(bytes, offset_of!(MappingsHeader, pid)),
        vmas: proc_vmas_at(bytes, header, u32_at(bytes, offset_of!(MappingsHeader, n))),
    })
}

fn decode_stack(bytes: &[u8]) -> Result<StackRecord, DecodeError> {
    let header = size_of::<StackHeader>();
    let vmas_end = header + PROC_VMA_SLOTS * size_of::<ProcVma>();
    need(bytes, vmas_end)?;
    let len = (u32_at(bytes, offset_of!(StackHeader, len)) as usize).min(STACK_COPY_BYTES);
    need(bytes, vmas_end + len)?;
    let n_vmas = u32_at(bytes, offset_of!(StackHeader, n_vmas));
    let vmas = proc_vmas_at(bytes, header, n_vmas);
    Ok(StackRecord {
        pid: u32_at(bytes, offset_of!(StackHeader, pid)),
        tid: u32_at(bytes, offset_of!(StackHeader, tid)),
        ktime_ns: u64_at(bytes, offset_of!(StackHeader, ktime_ns)),
        pc: u64_at(bytes, offset_of!(StackHeader, pc)),
        sp: u64_at(bytes, offset_of!(StackHeader, sp)),
        bp: u64_at(bytes, offset_of!(StackHeader, bp)),
        pc_exact: u32_at(bytes, offset_of!(StackHeader, pc_exact)) != 0,
        vmas,
        stack: bytes[vmas_end..vmas_end + len].to_vec(),
    })
}

fn decode_vma(bytes: &[u8]) -> Result<VmaRecord, DecodeError> {
    need(bytes, size_of::<VmaEvent>())?;
    Ok(VmaRecord {
        pid: u32_at(bytes, offset_of!(VmaEvent, pid)),
        ktime_ns: u64_at(bytes, offset_of!(VmaEvent, ktime_ns)),
        start: u64_at(bytes, offset_of!(VmaEvent, start)),
        end: u64_at(bytes, offset_of!(VmaEvent, end)),
        file_offset: u64_at(bytes, offset_of!(VmaEvent, file_offset)),
        inode: u64_at(bytes, offset_of!(VmaEvent, inode)),
        dev: kernel_dev(u32_at(bytes, offset_of!(VmaEvent, dev))),
    })
}
