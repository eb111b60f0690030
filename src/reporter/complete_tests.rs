//! Finishing cut walks: waits for the file's table, then walks the copied stack with it.

use std::cell::RefCell;

use super::*;
use crate::layout::STACK_COPY_BYTES;
use crate::unwind::compact::CompactTable;
use crate::unwind_rows::{CfaRule, RaRule, RegRule, UnwindRow};

const SP: u64 = 0x7ffd_0000;
const DEV: u32 = (8 << 20) | 1;

/// One published file (or none yet) with the table of `rows`.
struct Fake {
    published: RefCell<bool>,
    table: CompactTable,
}

impl Tables for Fake {
    fn file(&self, dev: u32, inode: u64) -> Option<FileTableValue> {
        (*self.published.borrow() && dev == DEV && inode == 42).then(|| FileTableValue {
            file_id: 7,
            table_first: 0,
            table_direct: self.table.direct_buckets(),
            flags: 0,
            table_base: self.table.base(),
        })
    }
    fn bucket(&self, index: u32) -> Option<Bucket> {
        self.table.buckets().get(index as usize).copied()
    }
}

fn fake() -> Fake {
    let rows = [
        UnwindRow {
            offset: 0x100,
            cfa: CfaRule::RspOffset(16),
            rbp: RegRule::Unchanged,
            ra: RaRule::AtCfaMinus8,
        },
        UnwindRow {
            offset: 0x200,
            cfa: CfaRule::NoInfo,
            rbp: RegRule::Unchanged,
            ra: RaRule::Outermost,
        },
        // A frame larger than the copy.
        UnwindRow {
            offset: 0x300,
            cfa: CfaRule::RspOffset(72_000),
            rbp: RegRule::Unchanged,
            ra: RaRule::AtCfaMinus8,
        },
    ];
    Fake {
        published: RefCell::new(false),
        table: CompactTable::encode(&rows).unwrap(),
    }
}

/// A process whose memory cannot be read (gone).
struct NoMemory;

impl Memory for NoMemory {
    fn read(&mut self, _: u32, _: u64, _: &mut [u8]) -> usize {
        0
    }
    fn mapping_end(&mut self, _: u32, _: u64) -> Option<u64> {
        None
    }
    fn code_mappings(&mut self, _: u32) -> Vec<ProcVma> {
        Vec::new()
    }
}

/// A live process whose only memory worth reading is its list of code mappings.
struct OnlyMappings(Vec<ProcVma>);

impl Memory for OnlyMappings {
    fn read(&mut self, _: u32, _: u64, _: &mut [u8]) -> usize {
        0
    }
    fn mapping_end(&mut self, _: u32, _: u64) -> Option<u64> {
        None
    }
    fn code_mappings(&mut self, pid: u32) -> Vec<ProcVma> {
        assert_eq!(pid, 5);
        self.0.clone()
    }
}

/// A live stack holding one return address, `ra`, at `at`.
struct OneWord {
    at: u64,
    ra: u64,
}

impl Memory for OneWord {
    fn mapping_end(&mut self, _: u32, _: u64) -> Option<u64> {
        Some(SP + (1 << 20))
    }
    fn code_mappings(&mut self, _: u32) -> Vec<ProcVma> {
        cut_sample().1.vmas
    }
    fn read(&mut self, pid: u32, addr: u64, buf: &mut [u8]) -> usize {
        assert_eq!(pid, 5);
        let n = buf.len().min(64 * 1024);
        buf[..n].fill(0);
        if let Some(i) = self.at.checked_sub(addr).filter(|&i| i + 8 <= n as u64) {
            buf[i as usize..i as usize + 8].copy_from_slice(&self.ra.to_ne_bytes());
        }
        n
    }
}

/// A walk cut at its leaf, 0x400150 (offset 0x150 of the file mapped at 0x400000), whose
/// caller returns to 0x400205 (in the outermost function).
fn cut_sample() -> (RawTrace, StackRecord) {
    let trace = RawTrace {
        pid: 5,
        tid: 6,
        cpu: 0,
        ktime_ns: 1000,
        comm: [0; 16],
        flags: consts::TRACE_HAS_STACK as u32
            | (consts::UNWIND_DONE_NO_MAPPING as u32) << consts::TRACE_UNWIND_SHIFT,
        kernel: vec![],
        user: vec![UserFrame {
            address: 0x400150,
            file_id: 0,
            flags: consts::FRAME_NO_PID as u32,
        }],
    };
    let mut stack = vec![0u8; 32];
    stack[8..16].copy_from_slice(&0x400205u64.to_ne_bytes());
    let record = StackRecord {
        pid: 5,
        tid: 6,
        ktime_ns: 1000,
        pc: 0x400150,
        sp: SP,
        bp: 0,
        pc_exact: true,
        vmas: vec![ProcVma {
            start: 0x400000,
            end: 0x401000,
            offset: 0,
            inode: 42,
            dev: DEV,
            _pad: 0,
        }],
        stack,
    };
    (trace, record)
}

/// `cut_sample` with a record that lists only the process's executable (at 0x500000), not the
/// file the walk is in; also returns the file's mapping and the executable's.
fn cut_in_an_unlisted_file() -> (RawTrace, StackRecord, ProcVma, ProcVma) {
    let (trace, mut stack) = cut_sample();
    let file = stack.vmas.pop().unwrap();
    let exe = ProcVma {
        start: 0x500000,
        end: 0x501000,
        inode: 43,
        ..file
    };
    stack.vmas = vec![exe];
    (trace, stack, file, exe)
}

#[test]
fn a_cut_walk_waits_for_its_table_then_is_finished_with_it() {
    let (tables, stats) = (fake(), Stats::default());
    let mut c = Completer::default();
    let (trace, stack) = cut_sample();
    c.on_stack(stack, &mut NoMemory, &stats);
    assert!(c.on_trace(trace, &stats).is_empty(), "it waits");
    assert!(
        c.retry(&tables, &|_| true, false, &stats).is_empty(),
        "no table yet"
    );
    *tables.published.borrow_mut() = true;
    assert!(
        c.retry(&tables, &|_| false, false, &stats).is_empty(),
        "published, but the reporter has not been told about the file yet"
    );
    let done = c.retry(&tables, &|_| true, false, &stats);
    assert_eq!(done.len(), 1);
    let frames: Vec<(u64, u32)> = done[0]
        .user
        .iter()
        .map(|f| (f.address, f.file_id))
        .collect();
    assert_eq!(frames, vec![(0x150, 7), (0x205, 7)]);
    assert!(done[0].user.iter().all(|f| f.is_resolved()));
    assert_eq!(done[0].unwind_outcome(), consts::UNWIND_DONE_OUTERMOST);
    assert_eq!(Stats::get(&stats.samples_completed_later), 1);
    assert_eq!(c.waiting(), 0);
}

/// `trace`, handed to `c` after its stack record, as it comes out once the table is there (or,
/// if it waits for mappings that never come, at the end).
fn finished(c: &mut Completer, trace: RawTrace, tables: &Fake, stats: &Stats) -> RawTrace {
    let mut done = c.on_trace(trace, stats);
    if done.is_empty() {
        done = c.retry(tables, &|_| true, false, stats);
    }
    if done.is_empty() {
        done = c.retry(tables, &|_| true, true, stats);
    }
    assert_eq!(done.len(), 1);
    done.remove(0)
}

#[test]
fn a_file_the_sampler_never_learned_is_found_in_the_live_process_list() {
    let (tables, stats) = (fake(), Stats::default());
    *tables.published.borrow_mut() = true;
    let mut c = Completer::default();
    let (trace, mut stack) = cut_sample();
    let mapping = stack.vmas.pop().unwrap();
    // Without it the walk cannot go on from the cut.
    c.on_stack(stack.clone(), &mut NoMemory, &stats);
    c.on_trace(trace.clone(), &stats);
    let cut = c.retry(&tables, &|_| true, true, &stats);
    assert_eq!(cut[0].user.len(), 1);
    assert!(!cut[0].user[0].is_resolved());
    // With the process's own list it reaches the outermost frame.
    c.on_stack(stack, &mut OnlyMappings(vec![mapping]), &stats);
    let done = finished(&mut c, trace, &tables, &stats);
    assert!(done.user.iter().all(|f| f.is_resolved()));
    assert_eq!(done.unwind_outcome(), consts::UNWIND_DONE_OUTERMOST);
}

#[test]
fn a_record_that_comes_after_its_process_exited_uses_the_list_an_earlier_one_brought() {
    let (tables, stats) = (fake(), Stats::default());
    *tables.published.borrow_mut() = true;
    let mut c = Completer::default();
    // The sampler recorded only the executable; the process showed both.
    let (trace, mut stack, file, exe) = cut_in_an_unlisted_file();
    let resolved = |t: RawTrace| t.user.iter().all(|f| f.is_resolved());
    c.on_stack(stack.clone(), &mut OnlyMappings(vec![exe, file]), &stats);
    assert!(resolved(finished(&mut c, trace.clone(), &tables, &stats)));
    // Gone now: the earlier list still serves the same image.
    c.on_stack(stack.clone(), &mut NoMemory, &stats);
    assert!(resolved(finished(&mut c, trace.clone(), &tables, &stats)));
    assert_eq!(Stats::get(&stats.stack_maps_from_earlier), 1);
    // Another image on the same PID (its executable elsewhere) does not get it.
    stack.vmas[0].start = 0x600000;
    stack.vmas[0].end = 0x601000;
    c.on_stack(stack, &mut NoMemory, &stats);
    assert!(!finished(&mut c, trace, &tables, &stats).user[0].is_resolved());
    assert_eq!(Stats::get(&stats.stack_maps_gone), 1);
}

#[test]
fn a_waiting_walk_uses_a_library_a_later_record_of_its_process_learned() {
    let (tables, stats) = (fake(), Stats::default());
    let mut c = Completer::default();
    // The first record knows only the executable, and the process is gone when it arrives.
    let (trace, early, file, exe) = cut_in_an_unlisted_file();
    c.on_stack(early.clone(), &mut NoMemory, &stats);
    assert!(c.on_trace(trace.clone(), &stats).is_empty(), "it waits");
    // A later sample of the same image learned the library.
    let mut later = early;
    later.ktime_ns += 1;
    later.vmas = vec![exe, file];
    c.on_stack(later, &mut NoMemory, &stats);
    *tables.published.borrow_mut() = true;
    let done = c.retry(&tables, &|_| true, false, &stats);
    assert_eq!(done.len(), 1);
    assert!(done[0].user.iter().all(|f| f.is_resolved()));
    assert_eq!(done[0].unwind_outcome(), consts::UNWIND_DONE_OUTERMOST);
}

#[test]
fn a_walk_into_a_library_no_record_knew_waits_for_its_process_list_at_exit() {
    let (tables, stats) = (fake(), Stats::default());
    *tables.published.borrow_mut() = true;
    let mut c = Completer::default();
    let (trace, stack, file, exe) = cut_in_an_unlisted_file();
    // The process is gone when the record arrives.
    c.on_stack(stack, &mut NoMemory, &stats);
    assert!(c.on_trace(trace, &stats).is_empty());
    assert!(
        c.retry(&tables, &|_| true, false, &stats).is_empty(),
        "it waits"
    );
    assert!(!c.retry_due(Instant::now()));
    assert!(c.retry_due(Instant::now() + MAPPINGS_WAIT), "not for ever");
    // The list of another image on the same PID says nothing about it.
    let mut other = vec![exe, file];
    other[0].start = 0x600000;
    other[0].end = 0x601000;
    assert!(!c.on_mappings(MappingsRecord {
        pid: 5,
        vmas: other
    }));
    assert!(c.retry(&tables, &|_| true, false, &stats).is_empty());
    // Its own list, sent as it exited, holds the library.
    let list = MappingsRecord {
        pid: 5,
        vmas: vec![exe, file],
    };
    assert!(c.on_mappings(list), "a walk of it waits");
    let done = c.retry(&tables, &|_| true, false, &stats);
    assert_eq!(done.len(), 1);
    assert!(done[0].user.iter().all(|f| f.is_resolved()));
    assert_eq!(done[0].unwind_outcome(), consts::UNWIND_DONE_OUTERMOST);
}

#[test]
fn a_walk_of_a_process_seen_alive_does_not_wait_for_more_mappings() {
    let (tables, stats) = (fake(), Stats::default());
    *tables.published.borrow_mut() = true;
    let mut c = Completer::default();
    let (trace, stack, _, exe) = cut_in_an_unlisted_file();
    // /proc showed the executable only: the leaf's address is in nothing it maps.
    c.on_stack(stack, &mut OnlyMappings(vec![exe]), &stats);
    let done = c.on_trace(trace, &stats);
    let done = if done.is_empty() {
        c.retry(&tables, &|_| true, false, &stats)
    } else {
        done
    };
    assert_eq!(done.len(), 1, "it goes out at once, cut");
    assert!(!done[0].user[0].is_resolved());
    assert_eq!(Stats::get(&stats.completion_cut), 1);
}

#[test]
fn at_the_end_a_walk_without_tables_goes_out_as_it_was() {
    let (tables, stats) = (fake(), Stats::default());
    let mut c = Completer::default();
    let (trace, stack) = cut_sample();
    c.on_stack(stack, &mut NoMemory, &stats);
    assert!(c.on_trace(trace, &stats).is_empty());
    let done = c.retry(&tables, &|_| true, true, &stats);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].user.len(), 1);
    assert!(!done[0].user[0].is_resolved());
    assert_eq!(Stats::get(&stats.completion_cut), 1);
}

#[test]
fn traces_without_a_stack_pass_through_and_a_lost_stack_is_counted() {
    let stats = Stats::default();
    let (tables, mut c) = (fake(), Completer::default());
    let (mut trace, _) = cut_sample();
    assert!(
        c.on_trace(trace.clone(), &stats).is_empty(),
        "it waits for its stack record"
    );
    assert_eq!(c.waiting(), 1);
    let done = c.retry(&tables, &|_| true, true, &stats);
    assert_eq!(
        done.len(),
        1,
        "its stack never came: out as it was at the end"
    );
    assert_eq!(Stats::get(&stats.completion_stack_missing), 1);
    trace.flags = 0;
    assert_eq!(
        c.on_trace(trace, &stats).len(),
        1,
        "no stack: passes at once"
    );
    assert_eq!(c.waiting(), 0);
}

#[test]
fn a_trace_that_arrives_before_its_stack_record_waits_for_it() {
    let (tables, stats) = (fake(), Stats::default());
    *tables.published.borrow_mut() = true;
    let mut c = Completer::default();
    let (trace, stack) = cut_sample();
    assert!(c.on_trace(trace, &stats).is_empty());
    assert!(c.on_stack(stack, &mut NoMemory, &stats).is_empty());
    let done = c.retry(&tables, &|_| true, false, &stats);
    let frames: Vec<u64> = done[0].user.iter().map(|f| f.address).collect();
    assert_eq!(frames, vec![0x150, 0x205]);
    assert_eq!(Stats::get(&stats.samples_completed_later), 1);
    assert_eq!(Stats::get(&stats.completion_stack_missing), 0);
}

#[test]
fn a_stack_copy_that_ends_early_keeps_the_frames_found() {
    let (tables, stats) = (fake(), Stats::default());
    *tables.published.borrow_mut() = true;
    let mut c = Completer::default();
    let (trace, mut stack) = cut_sample();
    stack.stack.truncate(8); // the return address is past the copy
    c.on_stack(stack, &mut NoMemory, &stats);
    assert!(c.on_trace(trace, &stats).is_empty());
    let done = c.retry(&tables, &|_| true, true, &stats);
    assert_eq!(done[0].user.len(), 1);
    assert!(
        done[0].user[0].is_resolved(),
        "the leaf is resolved even so"
    );
    assert_eq!(Stats::get(&stats.completion_cut), 1);
}

/// A full copy whose leaf (0x400350) has a 72,000-byte frame: its return address lies beyond
/// the 60 KiB copy, where the live stack holds `ra`.
fn deep_sample(ra: u64, stats: &Stats) -> (Completer, RawTrace) {
    let (mut trace, mut stack) = cut_sample();
    trace.user[0].address = 0x400350;
    stack.pc = 0x400350;
    stack.stack = vec![0; STACK_COPY_BYTES];
    let mut c = Completer::default();
    let mut memory = OneWord {
        at: SP + 72_000 - 8,
        ra,
    };
    c.on_stack(stack, &mut memory, stats);
    assert_eq!(Stats::get(&stats.stacks_read_live), 1);
    assert!(c.on_trace(trace.clone(), stats).is_empty());
    (c, trace)
}

#[test]
fn a_full_copy_is_finished_through_the_live_stack_when_that_reaches_the_root() {
    let (tables, stats) = (fake(), Stats::default());
    *tables.published.borrow_mut() = true;
    let (mut c, _) = deep_sample(0x400205, &stats);
    let done = c.retry(&tables, &|_| true, false, &stats);
    let frames: Vec<u64> = done[0].user.iter().map(|f| f.address).collect();
    assert_eq!(frames, vec![0x350, 0x205]);
    assert_eq!(done[0].unwind_outcome(), consts::UNWIND_DONE_OUTERMOST);
    assert_eq!(Stats::get(&stats.samples_completed_later), 1);
    assert_eq!(Stats::get(&stats.completed_with_live_stack), 1);
}

#[test]
fn frames_from_a_live_stack_that_leads_nowhere_are_dropped() {
    let (tables, stats) = (fake(), Stats::default());
    *tables.published.borrow_mut() = true;
    // The live stack has changed since the sample: its word points outside every mapping.
    let (mut c, _) = deep_sample(0x900_000, &stats);
    let done = c.retry(&tables, &|_| true, false, &stats);
    let frames: Vec<u64> = done[0].user.iter().map(|f| f.address).collect();
    assert_eq!(frames, vec![0x350], "only what the copy showed");
    assert_eq!(Stats::get(&stats.completion_cut), 1);
    assert_eq!(Stats::get(&stats.completed_with_live_stack), 0);
}

#[test]
fn a_stack_record_whose_trace_never_comes_is_dropped_with_its_pages() {
    let stats = Stats::default();
    let mut c = Completer::default();
    let (_, stack) = cut_sample();
    let mut memory = OneWord { at: SP + 64, ra: 1 };
    assert!(c.on_stack(stack, &mut memory, &stats).is_empty());
    assert!(c.pages.held() > 0, "its live pages are held");
    let later = Instant::now() + ORPHAN_WAIT;
    assert!(c.expire_orphans(later, &stats).is_empty());
    assert_eq!(c.pages.held(), 0);
    assert_eq!(Stats::get(&stats.completion_stack_missing), 1);
    assert_eq!(c.waiting(), 0);
}
