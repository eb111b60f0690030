//! Generic unwind rows: the x86_64 rules one address range follows, keyed by file offset.
//!
//! This module owns the row types ([`UnwindRow`], [`CfaRule`], [`RegRule`], [`RaRule`]), how
//! they print, and the lookup of the row at an offset: the vocabulary shared by the module that
//! reads CFI into rows (`crate::cfi`) and the one that encodes and steps them
//! (`crate::unwind`). A leaf with no imports from the crate, so those two stay independent.

use std::fmt;

/// How to compute the canonical frame address (the caller's rsp) at a pc.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CfaRule {
    /// No call-frame information covers this address (a gap between FDEs, or past the last).
    NoInfo,
    /// CFA = rsp + offset.
    RspOffset(i32),
    /// CFA = rbp + offset.
    RbpOffset(i32),
    /// The PLT expression glibc and binutils emit:
    /// CFA = rsp + rsp_offset + ((pc & 15) >= threshold ? 8 : 0).
    Plt { rsp_offset: i32, threshold: u8 },
    /// CFA = *(rsp + offset) + add (hand-written assembly, signal frames).
    DerefRsp { offset: i32, add: i32 },
    /// CFA = *(rbp + offset) + add (GCC's stack realignment through a DRAP register).
    DerefRbp { offset: i32, add: i32 },
    /// Another register or a DWARF expression this unwinder does not evaluate.
    Unsupported,
}

/// Where the caller's rbp is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RegRule {
    /// rbp still holds the caller's value (also DWARF "undefined", which gimli does not tell
    /// apart from "no rule").
    Unchanged,
    /// Saved at CFA + offset.
    AtCfaOffset(i32),
    /// Saved at rbp + offset (GCC's stack realignment).
    AtRbpOffset(i32),
    /// Saved in a way this unwinder does not follow: the caller's rbp is unknown.
    Unsupported,
}

/// Where the return address is, and whether there is a caller at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RaRule {
    /// At CFA - 8, as every normal x86_64 frame has it.
    AtCfaMinus8,
    /// The return address is undefined: the outermost frame (`_start`, a thread's entry in
    /// `clone`/`clone3`). The walk ends here successfully.
    Outermost,
    /// A signal trampoline (`__restore_rt`): rsp points at a `ucontext_t`, whose saved
    /// registers give the interrupted rip, rsp and rbp.
    SignalFrame,
    /// Anywhere else: the walk cannot continue.
    Unsupported,
}

/// The rules in effect from `offset` up to the next row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnwindRow {
    /// File offset where the row starts.
    pub offset: u64,
    pub cfa: CfaRule,
    pub rbp: RegRule,
    pub ra: RaRule,
}

/// What an unwinder does with a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowKind {
    NoInfo,
    Frame,
    Outermost,
    SignalFrame,
    Unsupported,
}

impl UnwindRow {
    /// A row saying "no unwind information from here on".
    pub fn no_info(offset: u64) -> Self {
        Self {
            offset,
            cfa: CfaRule::NoInfo,
            rbp: RegRule::Unchanged,
            ra: RaRule::Unsupported,
        }
    }

    /// Outermost and signal-frame marks win over the CFA rule; then "no info", then
    /// "unsupported" for a CFA or return address that cannot be followed.
    pub fn kind(&self) -> RowKind {
        match (self.ra, self.cfa) {
            (RaRule::Outermost, _) => RowKind::Outermost,
            (RaRule::SignalFrame, _) => RowKind::SignalFrame,
            (_, CfaRule::NoInfo) => RowKind::NoInfo,
            (RaRule::Unsupported, _) | (_, CfaRule::Unsupported) => RowKind::Unsupported,
            (RaRule::AtCfaMinus8, _) => RowKind::Frame,
        }
    }

    pub(crate) fn same_rule(&self, other: &Self) -> bool {
        (self.cfa, self.rbp, self.ra) == (other.cfa, other.rbp, other.ra)
    }
}

impl fmt::Display for CfaRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NoInfo => f.write_str("none"),
            Self::RspOffset(o) => write!(f, "rsp{o:+}"),
            Self::RbpOffset(o) => write!(f, "rbp{o:+}"),
            Self::Plt {
                rsp_offset,
                threshold,
            } => write!(f, "rsp{rsp_offset:+}+(pc&15>={threshold}?8:0)"),
            Self::DerefRsp { offset, add: 0 } => write!(f, "[rsp{offset:+}]"),
            Self::DerefRbp { offset, add: 0 } => write!(f, "[rbp{offset:+}]"),
            Self::DerefRsp { offset, add } => write!(f, "[rsp{offset:+}]{add:+}"),
            Self::DerefRbp { offset, add } => write!(f, "[rbp{offset:+}]{add:+}"),
            Self::Unsupported => f.write_str("unsupported"),
        }
    }
}

impl fmt::Display for RegRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Unchanged => f.write_str("same"),
            Self::AtCfaOffset(o) => write!(f, "cfa{o:+}"),
            Self::AtRbpOffset(o) => write!(f, "rbp{o:+}"),
            Self::Unsupported => f.write_str("unsupported"),
        }
    }
}

impl fmt::Display for RaRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::AtCfaMinus8 => "cfa-8",
            Self::Outermost => "undefined (outermost frame)",
            Self::SignalFrame => "signal frame (ucontext at rsp)",
            Self::Unsupported => "unsupported",
        })
    }
}

/// One line: `0x<offset>  cfa=rsp+16  rbp=cfa-16  ra=cfa-8`. The rbp and ra columns name the
/// address the caller's value is saved at.
impl fmt::Display for UnwindRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}  ", self.offset)?;
        match self.kind() {
            RowKind::NoInfo => f.write_str("no unwind info"),
            RowKind::SignalFrame => write!(f, "cfa={}  ra={}", self.cfa, self.ra),
            _ => write!(f, "cfa={}  rbp={}  ra={}", self.cfa, self.rbp, self.ra),
        }
    }
}

/// The row in effect at `offset`, if any row starts at or before it.
pub(crate) fn lookup(rows: &[UnwindRow], offset: u64) -> Option<&UnwindRow> {
    let end = rows.partition_point(|r| r.offset <= offset);
    end.checked_sub(1).map(|i| &rows[i])
}
