//! Walks finished in user space ("completed later"). When the sampler's walk stops at a file
//! user space has not built a table for yet (a process's first run of a big binary), it sends
//! the registers there, the process's code mappings and a copy of the stack above them (a
//! `RECORD_STACK`, just ahead of the trace). The trace waits here until the tables of the files
//! its remaining frames need are published, then the walk is finished with the sampler's own
//! rules (`unwind::step`) over the copied stack.
//!
//! Each copy is extended with the rest of the stack read from the live process
//! (`live_stack.rs`); frames found through those bytes are kept only when the walk reaches the
//! outermost frame.
//!
//! Owns the waiting traces, not the tables: those are read from the maps the maintainer writes
//! (`file_tables`, `unwind_buckets`), through [`Tables`].

use std::cell::Cell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::live_stack::{LiveStack, Memory, PagePool};
use super::python_tail::{is_tail, PythonTail};

use crate::layout::{
    consts, FileTableValue, MappingsRecord, ProcVma, RawTrace, StackRecord, TableRef, UserFrame,
    MAX_USER_FRAMES,
};
use crate::stats::Stats;
use crate::unwind::compact::Bucket;
use crate::unwind::step::{find_row, step, Regs, Step};

/// Traces waiting for tables, at most; past that the oldest go out as they are (counted).
const MAX_WAITING: usize = 4096;
/// How far above a full copy the live stack is read (never past the stack's mapping).
const LIVE_STACK_BYTES: u64 = 2 << 20;
/// Live stack bytes held by all records at most; past that, copies are not extended.
const MAX_LIVE_HELD: usize = 24 << 20;

/// Where published files and their tables are read.
pub trait Tables {
    /// The file's entry in `file_tables`, if user space has published it.
    fn file(&self, dev: u32, inode: u64) -> Option<FileTableValue>;
    fn bucket(&self, index: u32) -> Option<Bucket>;
}

/// How long a trace waits for its stack record and a stack record for its trace (they travel
/// on different buffers; one whose partner was lost is dropped after this).
const ORPHAN_WAIT: Duration = Duration::from_secs(1);
/// How long a process's code mappings are kept for its stack records that arrive after it
/// exited.
const CODE_KEPT: Duration = Duration::from_secs(5);
/// How long a walk that reached an address no known mapping covers waits for its process's
/// list of mappings, which comes when the process exits (a RECORD_MAPPINGS).
const MAPPINGS_WAIT: Duration = Duration::from_secs(2);

/// The code mappings known of a process's image.
struct Code {
    /// When last added to (they are dropped `CODE_KEPT` after).
    at: Instant,
    vmas: Vec<ProcVma>,
    /// Nothing more will come: the process's `/proc/PID/maps` was read (it shows every
    /// mapping), or it exited and its first-sight list came.
    whole: bool,
}

impl Code {
    fn new(at: Instant) -> Self {
        Self {
            at,
            vmas: Vec::new(),
            whole: false,
        }
    }

    /// Adds the mappings not known yet.
    fn merge<'a>(&mut self, vmas: impl IntoIterator<Item = &'a ProcVma>) {
        for vma in vmas {
            if !self.vmas.iter().any(|k| same_vma(k, vma)) {
                self.vmas.push(*vma);
            }
        }
    }
}

/// A trace with its stack record, waiting for tables (or for its process's mappings).
struct Waiting {
    trace: RawTrace,
    stack: StackRecord,
    live: LiveStack,
    since: Instant,
    /// For mappings, not tables (see `MAPPINGS_WAIT`).
    for_mappings: bool,
}

/// Stack records by (tid, ktime) until their trace arrives (and traces until their stack
/// record does), and traces waiting for tables.
#[derive(Default)]
pub struct Completer {
    stacks: HashMap<(u32, u64), (StackRecord, LiveStack, Instant)>,
    orphans: HashMap<(u32, u64), (RawTrace, Instant)>,
    waiting: Vec<Waiting>,
    /// The pages of the live stacks in `stacks` and `waiting`.
    pages: PagePool,
    /// The code mappings known of each process.
    code: HashMap<u32, Code>,
}

/// What finishing one walk came to.
#[derive(Debug, PartialEq, Eq)]
enum Finish {
    /// A file on the way has no table yet.
    Wait,
    /// An address on the way is in no mapping known yet.
    WaitMappings,
    /// Frames appended; whether the walk reached the outermost frame, and whether it kept
    /// frames found through the live stack.
    Done { complete: bool, used_live: bool },
}

impl Completer {
    /// A stack record; the stack above the copy is read from the live process right away (up
    /// to the end of its mapping: nothing when the copy reached it).
    /// Returns traces that are done waiting (see [`Self::on_trace`]).
    pub fn on_stack(
        &mut self,
        mut stack: StackRecord,
        memory: &mut dyn Memory,
        stats: &Stats,
    ) -> Vec<RawTrace> {
        self.add_code_mappings(&mut stack, memory, stats);
        let end = stack.sp + stack.stack.len() as u64;
        let live = if self.pages.held() >= MAX_LIVE_HELD {
            Stats::inc(&stats.stacks_live_skipped);
            LiveStack::default()
        } else {
            Stats::inc(&stats.stacks_read_live);
            LiveStack::read(memory, stack.pid, end, LIVE_STACK_BYTES, &mut self.pages)
        };
        let key = (stack.tid, stack.ktime_ns);
        let now = Instant::now();
        let mut out = self.expire_orphans(now, stats);
        match self.orphans.remove(&key) {
            Some((trace, _)) => out.extend(self.admit(trace, stack, live, stats)),
            None => {
                self.stacks.insert(key, (stack, live, now));
            }
        }
        out
    }

    /// The sampler's list holds what it learned so far (the executable, the loader, the
    /// libraries its walks reached); the frames beyond the cut may be in others. What the
    /// process shows now and what every record of the same image brought are merged per PID;
    /// a waiting walk looks there for what its own record lacks, so a later sample's
    /// knowledge serves an earlier one.
    fn add_code_mappings(
        &mut self,
        stack: &mut StackRecord,
        memory: &mut dyn Memory,
        stats: &Stats,
    ) {
        let now = Instant::now();
        self.code
            .retain(|_, code| now.duration_since(code.at) < CODE_KEPT);
        let shown = memory.code_mappings(stack.pid);
        let code = self.code.entry(stack.pid).or_insert_with(|| Code::new(now));
        if !same_image(&code.vmas, &stack.vmas) {
            // Another image on this PID (an exec, or a new process).
            code.vmas.clear();
            code.whole = false;
        }
        code.whole |= !shown.is_empty();
        if shown.is_empty() {
            // Gone already (a compiler's last samples).
            let counter = if code.vmas.is_empty() {
                &stats.stack_maps_gone
            } else {
                &stats.stack_maps_from_earlier
            };
            Stats::inc(counter);
        }
        code.merge(shown.iter().chain(&stack.vmas));
        code.at = now;
        // What the process shows now is this record's too (the sampler's entries, newer, win
        // where both cover an address).
        let mut vmas = shown;
        vmas.append(&mut stack.vmas);
        stack.vmas = vmas;
    }

    /// What is known of the code mappings of the image `stack` was taken in, and whether
    /// more may come.
    fn known_code(&self, stack: &StackRecord) -> (&[ProcVma], bool) {
        match self.code.get(&stack.pid) {
            Some(code) if same_image(&code.vmas, &stack.vmas) => (&code.vmas, !code.whole),
            _ => (&[], true),
        }
    }

    /// The first-sight list of a process that exited with walks cut: it holds the libraries
    /// its later samples and its exit walk reached. Returns whether walks of it wait for it.
    pub fn on_mappings(&mut self, record: MappingsRecord) -> bool {
        let Some(exe) = record.vmas.first() else {
            return false;
        };
        let now = Instant::now();
        let code = self
            .code
            .entry(record.pid)
            .or_insert_with(|| Code::new(now));
        // The list starts with what the exec hook recorded (the executable, at a randomized
        // address): the same entry says the same image.
        if !code.vmas.is_empty() && !code.vmas.iter().any(|k| same_vma(k, exe)) {
            return false; // a later image than the walks known here were taken in
        }
        code.merge(&record.vmas);
        code.at = now;
        code.whole = true;
        self.waiting.iter().any(|w| w.stack.pid == record.pid)
    }

    /// Whether a walk waiting for mappings has waited long enough (`retry` lets it go).
    pub fn retry_due(&self, now: Instant) -> bool {
        self.waiting
            .iter()
            .any(|w| w.for_mappings && now.duration_since(w.since) >= MAPPINGS_WAIT)
    }

    /// A trace from the sampler; returns the traces done waiting: this one at once unless it
    /// waits for its stack record or for tables, and those whose stack never came.
    pub fn on_trace(&mut self, trace: RawTrace, stats: &Stats) -> Vec<RawTrace> {
        if u64::from(trace.flags) & consts::TRACE_HAS_STACK == 0 {
            return vec![trace];
        }
        let now = Instant::now();
        let mut out = self.expire_orphans(now, stats);
        let key = (trace.tid, trace.ktime_ns);
        match self.stacks.remove(&key) {
            Some((stack, live, _)) => out.extend(self.admit(trace, stack, live, stats)),
            None if self.orphans.len() < MAX_WAITING => {
                self.orphans.insert(key, (trace, now));
            }
            None => {
                Stats::inc(&stats.completion_stack_missing);
                out.push(trace);
            }
        }
        out
    }

    /// Traces whose stack record has not come within `ORPHAN_WAIT` go out as they are; stack
    /// records whose trace has not come are dropped (with their live pages).
    fn expire_orphans(&mut self, now: Instant, stats: &Stats) -> Vec<RawTrace> {
        let stacks = self.stacks.len();
        self.stacks
            .retain(|_, (_, _, at)| now.duration_since(*at) < ORPHAN_WAIT);
        if self.stacks.len() < stacks {
            Stats::add(
                &stats.completion_stack_missing,
                (stacks - self.stacks.len()) as u64,
            );
            self.pages.prune();
        }
        if self.orphans.is_empty() {
            return Vec::new();
        }
        let old: Vec<(u32, u64)> = self
            .orphans
            .iter()
            .filter(|(_, (_, at))| now.duration_since(*at) >= ORPHAN_WAIT)
            .map(|(&key, _)| key)
            .collect();
        Stats::add(&stats.completion_stack_missing, old.len() as u64);
        old.iter()
            .filter_map(|key| self.orphans.remove(key))
            .map(|(trace, _)| trace)
            .collect()
    }

    /// A trace with its stack waits for tables; past `MAX_WAITING` the oldest goes out.
    fn admit(
        &mut self,
        trace: RawTrace,
        stack: StackRecord,
        live: LiveStack,
        stats: &Stats,
    ) -> Option<RawTrace> {
        self.waiting.push(Waiting {
            trace,
            stack,
            live,
            since: Instant::now(),
            for_mappings: false,
        });
        if self.waiting.len() > MAX_WAITING {
            Stats::inc(&stats.completion_gave_up);
            let trace = self.waiting.remove(0).trace;
            self.pages.prune();
            return Some(trace);
        }
        None
    }

    /// Traces held: waiting for tables or for their stack record.
    pub fn waiting(&self) -> usize {
        self.waiting.len() + self.orphans.len()
    }

    /// Finishes what can be finished now. With `last` (the end of the session), every waiting
    /// trace comes back, finished as far as the tables allow. `known` says whether the
    /// reporter has been told about a file ID (a completed frame must name a known file).
    pub fn retry(
        &mut self,
        tables: &dyn Tables,
        known: &dyn Fn(u32) -> bool,
        last: bool,
        stats: &Stats,
    ) -> Vec<RawTrace> {
        let mut out = Vec::new();
        let mut still = Vec::new();
        let now = Instant::now();
        for mut w in std::mem::take(&mut self.waiting) {
            let (code, more) = self.known_code(&w.stack);
            let patience = Patience {
                tables: !last,
                mappings: !last && more && now.duration_since(w.since) < MAPPINGS_WAIT,
            };
            match finish(
                &mut w.trace,
                &w.stack,
                code,
                &w.live,
                tables,
                known,
                patience,
            ) {
                Finish::Wait => still.push(w),
                Finish::WaitMappings => {
                    w.for_mappings = true;
                    still.push(w);
                }
                Finish::Done {
                    complete,
                    used_live,
                } => {
                    let counter = if complete {
                        &stats.samples_completed_later
                    } else {
                        &stats.completion_cut
                    };
                    Stats::inc(counter);
                    if used_live {
                        Stats::inc(&stats.completed_with_live_stack);
                    }
                    out.push(w.trace);
                }
            }
        }
        self.waiting = still;
        if last {
            Stats::add(&stats.completion_stack_missing, self.stacks.len() as u64);
            self.stacks.clear();
            Stats::add(&stats.completion_stack_missing, self.orphans.len() as u64);
            out.extend(self.orphans.drain().map(|(_, (trace, _))| trace));
        }
        self.pages.prune();
        out
    }
}

/// Whether `list`, what is known of a process, holds every mapping the sampler recorded for
/// the process of a stack record: then both are the same image of the same process (the
/// executable, recorded at exec, sits at a randomized address).
fn same_image(list: &[ProcVma], recorded: &[ProcVma]) -> bool {
    !recorded.is_empty() && recorded.iter().all(|r| list.iter().any(|l| same_vma(l, r)))
}

fn same_vma(a: &ProcVma, b: &ProcVma) -> bool {
    a.start == b.start && a.inode == b.inode && a.dev == b.dev
}

/// The mapping of `addr` in the process's record, newest first (as first sight reads it).
fn vma_of(vmas: &[ProcVma], addr: u64) -> Option<&ProcVma> {
    vmas.iter().rev().find(|v| v.start <= addr && addr < v.end)
}

/// What a walk being finished may still wait for.
#[derive(Clone, Copy, Debug)]
struct Patience {
    /// The table of a file on the way.
    tables: bool,
    /// The mapping of an address on the way.
    mappings: bool,
}

/// Finishes the walk of `trace` over `stack`, replacing its last (unresolved) frame.
fn finish(
    trace: &mut RawTrace,
    stack: &StackRecord,
    code: &[ProcVma],
    live: &LiveStack,
    tables: &dyn Tables,
    known: &dyn Fn(u32) -> bool,
    patience: Patience,
) -> Finish {
    let live_read = Cell::new(false);
    let read = |addr: u64| -> Option<u64> {
        let copied = || {
            let at = usize::try_from(addr.checked_sub(stack.sp)?).ok()?;
            let bytes = stack.stack.get(at..at.checked_add(8)?)?;
            Some(u64::from_ne_bytes(bytes.try_into().ok()?))
        };
        copied().or_else(|| {
            let word = live.word(addr)?;
            live_read.set(true);
            Some(word)
        })
    };
    // Frames before this index were found without the live stack.
    let mut trusted = None;
    let mut regs = Regs {
        pc: stack.pc,
        sp: stack.sp,
        bp: stack.bp,
        pc_exact: stack.pc_exact,
    };
    // The Python frames the sampler could not place follow the native ones (python_tail.rs).
    let native = trace
        .user
        .iter()
        .position(is_tail)
        .unwrap_or(trace.user.len());
    let mut python = PythonTail::take(&mut trace.user[native..].to_vec()).unwrap_or_default();
    let room = MAX_USER_FRAMES.saturating_sub(native.saturating_sub(1));
    let mut frames = Vec::new();
    let mut complete = false;
    while frames.len() < room {
        let lookup = regs.lookup();
        let pending = consts::MAPPING_TABLE_PENDING as u32;
        let vma = vma_of(&stack.vmas, lookup).or_else(|| vma_of(code, lookup));
        let file = vma
            .and_then(|v| Some((v, tables.file(v.dev, v.inode)?)))
            .filter(|(_, f)| known(f.file_id) && f.flags & pending == 0);
        let Some((vma, file)) = file else {
            if patience.tables && vma.is_some() {
                return Finish::Wait; // its file is not published yet
            }
            if patience.mappings && vma.is_none() {
                return Finish::WaitMappings; // its process's list may bring it
            }
            frames.push(UserFrame {
                address: regs.pc,
                file_id: 0,
                flags: consts::FRAME_NO_MAPPING as u32,
            });
            break;
        };
        if !frames.is_empty() {
            // (The first is the frame the sampler stopped at: its Python frames are placed.)
            let run = python.run_for(lookup);
            frames.extend(run.into_iter().take(room.saturating_sub(frames.len() + 1)));
        }
        let bias = vma.start.wrapping_sub(vma.offset);
        frames.push(UserFrame {
            address: regs.pc.wrapping_sub(bias),
            file_id: file.file_id,
            flags: consts::FRAME_RESOLVED as u32,
        });
        let offset = lookup.wrapping_sub(bias);
        let table = TableRef {
            first: file.table_first,
            direct: file.table_direct,
            base: file.table_base,
        };
        let row = find_row(table, offset, &|i| tables.bucket(i));
        let stepped = step(row, regs, offset, &read);
        if live_read.get() && trusted.is_none() {
            trusted = Some(frames.len());
        }
        match stepped {
            Step::Caller(next) => regs = next,
            Step::Outermost => {
                complete = true;
                break;
            }
            Step::Stop(_) => break,
        }
    }
    if let (false, Some(trusted)) = (complete, trusted) {
        frames.truncate(trusted); // bytes read after the sample led nowhere: not evidence
    }
    let used_live = complete && trusted.is_some();
    trace.user.truncate(native);
    trace.user.pop(); // the frame the sampler could not resolve, now the first of `frames`
    trace.user.extend(frames);
    trace.user.truncate(MAX_USER_FRAMES);
    if complete {
        let shift = consts::TRACE_UNWIND_SHIFT;
        trace.flags =
            (trace.flags & !(0xf << shift)) | ((consts::UNWIND_DONE_OUTERMOST as u32) << shift);
    }
    Finish::Done {
        complete,
        used_live,
    }
}

#[cfg(test)]
#[path = "complete_tests.rs"]
mod tests;

/// The maintainer's maps, read (never written) by the reporter.
pub struct MapTables {
    pub file_tables: crate::sys::bpf::Map,
    pub buckets: crate::sys::bpf::Map,
}

impl Tables for MapTables {
    fn file(&self, dev: u32, inode: u64) -> Option<FileTableValue> {
        let key = crate::layout::FileTableKey {
            dev,
            _pad: 0,
            inode,
        };
        let mut b = [0u8; 24];
        self.file_tables
            .lookup_into(&key.to_bytes(), &mut b)
            .ok()?
            .then(|| FileTableValue::from_bytes(&b))
    }

    fn bucket(&self, index: u32) -> Option<Bucket> {
        let mut b = [0u8; crate::unwind::compact::BUCKET_BYTES];
        self.buckets
            .lookup_into(&index.to_ne_bytes(), &mut b)
            .ok()?
            .then(|| Bucket::from_bytes(&b))
    }
}
