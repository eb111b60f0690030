//! One step of a user stack walk, taken exactly as the BPF sampler takes it (`find_rule` in
//! bpf/table_search.h, `step_rule` in bpf/sampler.bpf.c), for walks finished in user space
//! over a copied stack: a sample whose walk stopped at a file the sampler had no table for yet.
//!
//! Pure: the table's buckets and the stack's words come through closures, so the rules are
//! tested without BPF or a process.

use super::compact::{Bucket, CompactRow, KIND_REDIRECT, SIGFRAME_RBP, SIGFRAME_RIP, SIGFRAME_RSP};
use crate::layout::TableRef;
use crate::unwind_rows::{CfaRule, RegRule};

/// The registers a walk carries from frame to frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Regs {
    pub pc: u64,
    pub sp: u64,
    pub bp: u64,
    /// `pc` is where execution is (the leaf, a signal frame), not a return address.
    pub pc_exact: bool,
}

impl Regs {
    /// The address whose rule applies: a return address points after the call.
    pub fn lookup(&self) -> u64 {
        if self.pc_exact {
            self.pc
        } else {
            self.pc.wrapping_sub(1)
        }
    }
}

/// Where a step led.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Caller(Regs),
    /// The walk is complete.
    Outermost,
    /// It cannot go on: no rule and no frame pointer, a CFA that does not move up, CFI this
    /// unwinder does not follow, or a read outside the copied stack.
    Stop(Stop),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    NoInfo,
    BadCfa,
    ReadFault,
    Unsupported,
    /// A frame-pointer walk reached a zero frame pointer.
    FpEnd,
}

/// The rule at file offset `offset` of a table, read bucket by bucket; `None`: no rule.
pub fn find_row(
    table: TableRef,
    offset: u64,
    bucket: &dyn Fn(u32) -> Option<Bucket>,
) -> Option<CompactRow> {
    let relative = offset.checked_sub(table.base)?;
    let kib = relative >> 10;
    if kib >= u64::from(table.direct) {
        return None;
    }
    let t = (offset & 1023) as u16;
    let mut rule = bucket(table.first + kib as u32)?.rule_at(t);
    if rule.kind & 0xf == KIND_REDIRECT {
        rule = bucket(table.first + rule.redirect_index())?.rule_at(t);
    }
    rule.decode()
}

/// Steps from `regs` (in a file where `row` applies at `offset`) to the caller. `None` for
/// `row` walks frame pointers, as the sampler does in files without a rule.
pub fn step(
    row: Option<CompactRow>,
    regs: Regs,
    offset: u64,
    read: &dyn Fn(u64) -> Option<u64>,
) -> Step {
    let (cfa_rule, rbp_rule) = match row {
        None => return frame_pointer(regs, read),
        Some(CompactRow::Outermost) => return Step::Outermost,
        Some(CompactRow::Unsupported) => return Step::Stop(Stop::Unsupported),
        Some(CompactRow::SignalFrame) => return signal_frame(regs, read),
        Some(CompactRow::Frame { cfa, rbp }) => (cfa, rbp),
    };
    let at = |base: u64, off: i32| base.wrapping_add_signed(i64::from(off));
    let cfa = match cfa_rule {
        CfaRule::RspOffset(o) => at(regs.sp, o),
        CfaRule::RbpOffset(o) => at(regs.bp, o),
        CfaRule::Plt {
            rsp_offset,
            threshold,
        } => {
            at(regs.sp, rsp_offset)
                + if (offset & 15) as u8 >= threshold {
                    8
                } else {
                    0
                }
        }
        CfaRule::DerefRsp { offset: o, add } => match read(at(regs.sp, o)) {
            Some(v) => at(v, add),
            None => return Step::Stop(Stop::ReadFault),
        },
        CfaRule::DerefRbp { offset: o, add } => match read(at(regs.bp, o)) {
            Some(v) => at(v, add),
            None => return Step::Stop(Stop::ReadFault),
        },
        CfaRule::NoInfo => return frame_pointer(regs, read),
        CfaRule::Unsupported => return Step::Stop(Stop::Unsupported),
    };
    if cfa <= regs.sp {
        return Step::Stop(Stop::BadCfa);
    }
    let Some(ra) = read(cfa - 8) else {
        return Step::Stop(Stop::ReadFault);
    };
    let bp = match rbp_rule {
        RegRule::Unchanged => Some(regs.bp),
        RegRule::AtCfaOffset(o) => read(at(cfa, o)),
        RegRule::AtRbpOffset(o) => read(at(regs.bp, o)),
        RegRule::Unsupported => Some(0),
    };
    let Some(bp) = bp else {
        return Step::Stop(Stop::ReadFault);
    };
    caller(ra, cfa, bp)
}

fn caller(ra: u64, sp: u64, bp: u64) -> Step {
    if ra == 0 {
        return Step::Outermost;
    }
    Step::Caller(Regs {
        pc: ra,
        sp,
        bp,
        pc_exact: false,
    })
}

/// `[bp]` is the caller's bp, `[bp + 8]` the return address.
fn frame_pointer(regs: Regs, read: &dyn Fn(u64) -> Option<u64>) -> Step {
    if regs.bp == 0 {
        return Step::Stop(Stop::FpEnd);
    }
    if regs.bp < regs.sp || regs.bp & 7 != 0 {
        return Step::Stop(Stop::NoInfo);
    }
    match (read(regs.bp), read(regs.bp + 8)) {
        (Some(next_bp), Some(ra)) => caller(ra, regs.bp + 16, next_bp),
        _ => Step::Stop(Stop::ReadFault),
    }
}

/// A signal trampoline: the interrupted registers are in the `ucontext_t` at sp.
fn signal_frame(regs: Regs, read: &dyn Fn(u64) -> Option<u64>) -> Step {
    let get = |off: u64| read(regs.sp + off);
    match (get(SIGFRAME_RIP), get(SIGFRAME_RSP), get(SIGFRAME_RBP)) {
        (Some(pc), Some(sp), Some(bp)) => Step::Caller(Regs {
            pc,
            sp,
            bp,
            pc_exact: true,
        }),
        _ => Step::Stop(Stop::ReadFault),
    }
}

#[cfg(test)]
#[path = "step_tests.rs"]
mod tests;
