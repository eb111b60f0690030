//! Code objects read from a CPython process: qualified name (`co_qualname`, 3.11+; `co_name`
//! in 3.10), file, first line and line table, cached per (PID, code object address) so each is
//! read once, while its process lives, and kept after it exits.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::offsets::{self, Offsets};
use super::{lines, Memory, PythonProcess};

/// Strings longer than this are cut (names and paths are far shorter).
const MAX_STRING: u64 = 4096;
/// Line tables longer than this are not read (lines then come out as the first line).
const MAX_LINE_TABLE: u64 = 1 << 20;
/// Code objects remembered at most; past it the cache starts over.
const MAX_CODES: usize = 1 << 16;

/// What a frame needs from its code object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeInfo {
    pub name: Arc<str>,
    pub file: Arc<str>,
    pub first_line: u32,
    pub line_table: Arc<[u8]>,
    pub minor: u32,
    pub code_start: u16,
    /// The code object's name, file and first line fields as read: a code object freed and
    /// another allocated at the same address differs here.
    identity: Box<[u8]>,
}

impl CodeInfo {
    /// The line executing at `position`, as the sampler recorded it (3.10: `f_lasti`, in code
    /// units; 3.11+: the instruction's byte offset from the code object's address).
    pub fn line(&self, position: u32) -> u32 {
        let line = if self.minor == 10 {
            let lasti = position as i32;
            if lasti < 0 {
                return self.first_line;
            }
            lines::line_310(
                &self.line_table,
                self.first_line,
                u64::from(lasti as u32) * 2,
            )
        } else {
            let Some(offset) = u64::from(position).checked_sub(u64::from(self.code_start)) else {
                return self.first_line; // the frame has not run its first instruction yet
            };
            lines::line_311(&self.line_table, self.first_line, offset)
        };
        line.unwrap_or(self.first_line)
    }
}

/// The bytes from the first to the last of the code object's name, file and first line
/// fields.
fn identity(memory: &dyn Memory, o: &Offsets, addr: u64) -> Option<Box<[u8]>> {
    let fields = [
        o.co_firstlineno,
        o.co_filename,
        o.co_qualname.unwrap_or(o.co_name),
    ];
    let (lo, hi) = (fields.iter().min()?, fields.iter().max()?);
    let mut bytes = vec![0u8; usize::from(hi - lo) + 8];
    memory
        .read(addr + u64::from(*lo), &mut bytes)
        .then(|| bytes.into())
}

/// Reads the code object at `addr`; `None` when it is not one or cannot be read.
pub fn read_code(memory: &dyn Memory, process: &PythonProcess, addr: u64) -> Option<CodeInfo> {
    let o = &process.offsets;
    if memory.word(addr + offsets::OB_TYPE)? != process.code_type {
        return None;
    }
    let identity = identity(memory, o, addr)?;
    let field = |off: u16| memory.word(addr + u64::from(off));
    let name = read_str(memory, o, field(o.co_qualname.unwrap_or(o.co_name))?)?;
    let file = read_str(memory, o, field(o.co_filename)?)?;
    let mut first = [0u8; 4];
    if !memory.read(addr + u64::from(o.co_firstlineno), &mut first) {
        return None;
    }
    let table_addr = field(o.co_linetable)?;
    let len = memory.word(table_addr + offsets::BYTES_SIZE)?;
    let mut table = vec![
        0u8;
        if len <= MAX_LINE_TABLE {
            len as usize
        } else {
            0
        }
    ];
    if !memory.read(table_addr + offsets::BYTES_DATA, &mut table) {
        table.clear();
    }
    Some(CodeInfo {
        name: name.into(),
        file: file.into(),
        first_line: u32::try_from(i32::from_le_bytes(first)).unwrap_or(0),
        line_table: table.into(),
        minor: process.minor,
        code_start: o.co_code_adaptive,
        identity,
    })
}

/// A compact `str` object's text.
fn read_str(memory: &dyn Memory, o: &Offsets, addr: u64) -> Option<String> {
    let mut state = [0u8; 4];
    if addr == 0 || !memory.read(addr + offsets::UNICODE_STATE, &mut state) {
        return None;
    }
    let state = u32::from_le_bytes(state);
    let (kind, compact, ascii) = ((state >> 2) & 7, state >> 5 & 1 != 0, state >> 6 & 1 != 0);
    let length = memory.word(addr + offsets::UNICODE_LENGTH)?.min(MAX_STRING);
    if !compact || !matches!(kind, 1 | 2 | 4) {
        return None;
    }
    let data = addr + u64::from(if ascii { o.ascii_size } else { o.compact_size });
    let mut bytes = vec![0u8; (length * u64::from(kind)) as usize];
    if !memory.read(data, &mut bytes) {
        return None;
    }
    Some(match kind {
        1 => bytes.iter().map(|&b| char::from(b)).collect(),
        2 => bytes
            .chunks_exact(2)
            .map(|c| char::from_u32(u32::from(u16::from_le_bytes([c[0], c[1]]))).unwrap_or('?'))
            .collect(),
        _ => bytes
            .chunks_exact(4)
            .map(|c| char::from_u32(u32::from_le_bytes([c[0], c[1], c[2], c[3]])).unwrap_or('?'))
            .collect(),
    })
}

/// Code objects by (PID, address), and the CPython processes they belong to.
#[derive(Default)]
pub struct CodeCache {
    processes: HashMap<u32, Arc<PythonProcess>>,
    codes: HashMap<(u32, u64), KnownCode>,
}

/// A code object as read (`None`: unreadable), and when it was last compared with the
/// process's memory.
type KnownCode = (Option<Arc<CodeInfo>>, Instant);

/// How often a known code object is compared with what its address holds now. Each comparison
/// is a `process_vm_readv`; once per trace cost a busy Python process ~10 µs per sample. Code
/// objects are freed and their addresses reused mostly while modules are imported; a frame
/// named after the old one for at most this long is the price.
const RECHECK: Duration = Duration::from_millis(500);

impl CodeCache {
    /// The maintainer found a CPython process.
    pub fn on_process(&mut self, process: Arc<PythonProcess>) {
        if self
            .processes
            .get(&process.pid)
            .is_some_and(|p| p.start_ns != process.start_ns)
        {
            // Another process got the PID: its code objects are others.
            self.codes.retain(|&(pid, _), _| pid != process.pid);
        }
        self.processes.insert(process.pid, process);
    }

    /// The code object at `addr` in `pid`, read on first sight (the process must be alive
    /// then); `None` when it could not be read. With `check`, a known one is compared with
    /// what the address holds now (a code object freed and another made in its place is read
    /// again, at most every [`RECHECK`]); once the process is gone, what was read is kept.
    pub fn get(
        &mut self,
        pid: u32,
        addr: u64,
        memory: &dyn Memory,
        check: bool,
    ) -> Option<Arc<CodeInfo>> {
        let process = self.processes.get(&pid)?;
        let now = Instant::now();
        if let Some((known, checked)) = self.codes.get_mut(&(pid, addr)) {
            let due = check && now.duration_since(*checked) >= RECHECK;
            let replaced = due
                && known.as_ref().is_some_and(|info| {
                    identity(memory, &process.offsets, addr).is_some_and(|now| now != info.identity)
                });
            if due {
                *checked = now;
            }
            if !replaced {
                return known.clone();
            }
        }
        let info = read_code(memory, process, addr).map(Arc::new);
        if self.codes.len() >= MAX_CODES {
            self.codes.clear();
        }
        self.codes.insert((pid, addr), (info.clone(), now));
        info
    }

    /// Whether `pid` is a CPython process the maintainer announced.
    pub fn knows(&self, pid: u32) -> bool {
        self.processes.contains_key(&pid)
    }
}
