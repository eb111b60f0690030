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

/// The rules of a row without its offset: what [`PackedRows`] keeps once per distinct value.
type RuleKey = (CfaRule, RegRule, RaRule);

/// Rows kept compactly: each row is the low 32 bits of its offset and the index of its rules
/// in a dictionary of the file's distinct rules (a few thousand even in libLLVM): 8 bytes a
/// row instead of the 32 of an [`UnwindRow`]. The high 32 bits of the offsets are kept once
/// per run of rows sharing them (one run in any real file). What extraction holds per file
/// while it builds a table, so a file with millions of rows costs a quarter of the memory.
#[derive(Clone, Debug, Default)]
pub struct PackedRows {
    rows: Vec<(u32, u32)>,
    /// `(first row, high 32 bits of the offset)` for each run of rows, by first row.
    highs: Vec<(usize, u32)>,
    rules: Vec<RuleKey>,
    index: std::collections::HashMap<RuleKey, u32, FxBuild>,
    /// The rules interned last, and their index: consecutive rows often share them.
    recent: Option<(RuleKey, u32)>,
}

/// A multiply-rotate hasher for the rule dictionary (keys are a few small integers; SipHash
/// made packing rows several times slower).
#[derive(Clone, Copy, Debug, Default)]
struct FxBuild;

#[derive(Clone, Copy, Debug, Default)]
struct FxHasher(u64);

impl std::hash::BuildHasher for FxBuild {
    type Hasher = FxHasher;
    fn build_hasher(&self) -> FxHasher {
        FxHasher(0)
    }
}

impl std::hash::Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u8(&mut self, v: u8) {
        self.write_u64(u64::from(v));
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }
    fn write_i32(&mut self, v: i32) {
        self.write_u64(u64::from(v as u32));
    }
    fn write_isize(&mut self, v: isize) {
        self.write_u64(v as u64);
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

impl PackedRows {
    pub fn with_capacity(rows: usize) -> Self {
        Self {
            rows: Vec::with_capacity(rows),
            ..Self::default()
        }
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The high 32 bits of row `i`'s offset.
    fn high(&self, i: usize) -> u32 {
        match self.highs.as_slice() {
            [(_, high)] => *high,
            highs => {
                let run = highs.partition_point(|&(first, _)| first <= i);
                run.checked_sub(1).map_or(0, |r| highs[r].1)
            }
        }
    }

    /// The row at `i`; panics past the end, like slice indexing.
    pub fn get(&self, i: usize) -> UnwindRow {
        let (low, rule) = self.rows[i];
        let (cfa, rbp, ra) = self.rules[rule as usize];
        UnwindRow {
            offset: u64::from(self.high(i)) << 32 | u64::from(low),
            cfa,
            rbp,
            ra,
        }
    }

    pub fn last(&self) -> Option<UnwindRow> {
        self.len().checked_sub(1).map(|i| self.get(i))
    }

    pub fn iter(&self) -> impl Iterator<Item = UnwindRow> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }

    /// The dictionary index of a row's rules, added when new.
    fn intern(&mut self, row: &UnwindRow) -> u32 {
        let key = (row.cfa, row.rbp, row.ra);
        if let Some((recent, index)) = self.recent {
            if recent == key {
                return index;
            }
        }
        let index = *self.index.entry(key).or_insert_with(|| {
            self.rules.push(key);
            (self.rules.len() - 1) as u32
        });
        self.recent = Some((key, index));
        index
    }

    pub fn push(&mut self, row: UnwindRow) {
        let rule = self.intern(&row);
        let high = (row.offset >> 32) as u32;
        if self.highs.last().is_none_or(|&(_, h)| h != high) {
            self.highs.push((self.rows.len(), high));
        }
        self.rows.push((row.offset as u32, rule));
    }

    pub fn pop(&mut self) {
        self.truncate(self.len().saturating_sub(1));
    }

    pub fn truncate(&mut self, len: usize) {
        self.rows.truncate(len);
        while self.highs.last().is_some_and(|&(first, _)| first >= len) {
            self.highs.pop();
        }
    }

    pub fn shrink_to_fit(&mut self) {
        self.rows.shrink_to_fit();
    }

    /// The index of the first row whose offset fails `pred` (offsets ascending).
    pub fn partition_point(&self, pred: impl Fn(u64) -> bool) -> usize {
        partition_point_in(0, self.len(), |i| pred(self.get(i).offset))
    }

    /// Replaces rows `range` with `with` (rewrites what follows: for a few edits per file).
    pub fn splice(&mut self, range: std::ops::Range<usize>, with: Vec<UnwindRow>) {
        if let [(0, high)] = self.highs[..] {
            if with.iter().all(|r| (r.offset >> 32) as u32 == high) {
                // One run before and after: only the packed rows move.
                let packed: Vec<(u32, u32)> = with
                    .iter()
                    .map(|row| (row.offset as u32, self.intern(row)))
                    .collect();
                self.rows.splice(range, packed);
                return;
            }
        }
        let tail: Vec<UnwindRow> = (range.end..self.len()).map(|i| self.get(i)).collect();
        self.truncate(range.start);
        for row in with.into_iter().chain(tail) {
            self.push(row);
        }
    }

    /// Drops each row whose rules equal its predecessor's.
    pub fn dedup_same_rule(&mut self) {
        if self.highs.len() <= 1 {
            self.rows.dedup_by(|later, kept| later.1 == kept.1);
            return;
        }
        let rows: Vec<UnwindRow> = self.iter().collect();
        self.truncate(0);
        for row in rows {
            if !self.last().is_some_and(|last| last.same_rule(&row)) {
                self.push(row);
            }
        }
    }

    pub fn to_rows(&self) -> Vec<UnwindRow> {
        self.iter().collect()
    }
}

impl From<&[UnwindRow]> for PackedRows {
    fn from(rows: &[UnwindRow]) -> Self {
        let mut packed = Self::with_capacity(rows.len());
        for row in rows {
            packed.push(*row);
        }
        packed
    }
}

/// The row in effect at `offset` in packed rows, if any row starts at or before it.
pub(crate) fn lookup_packed(rows: &PackedRows, offset: u64) -> Option<UnwindRow> {
    let end = rows.partition_point(|o| o <= offset);
    end.checked_sub(1).map(|i| rows.get(i))
}

/// The first index in `lo..hi` where `pred` (true, then false) fails: a slice's
/// `partition_point` over indices, for rows not held in a slice.
pub fn partition_point_in(mut lo: usize, mut hi: usize, pred: impl Fn(usize) -> bool) -> usize {
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// A normal frame row with CFA = rsp + `cfa`, for tests.
#[cfg(test)]
pub(crate) fn rsp_row(offset: u64, cfa: i32) -> UnwindRow {
    UnwindRow {
        offset,
        cfa: CfaRule::RspOffset(cfa),
        rbp: RegRule::Unchanged,
        ra: RaRule::AtCfaMinus8,
    }
}

#[cfg(test)]
mod tests {
    use super::{rsp_row as row, *};

    #[test]
    fn packed_rows_keep_offsets_past_4_gib_and_edit_like_a_vec() {
        let rows = vec![
            row(0x10, 8),
            row(0x1_0000_0000, 16),
            row(0x1_0000_0008, 16),
            row(0x2_0000_0000, 8),
        ];
        let mut packed = PackedRows::from(&rows[..]);
        assert_eq!(packed.to_rows(), rows);
        assert_eq!(packed.partition_point(|o| o < 0x1_0000_0008), 2);
        packed.dedup_same_rule();
        assert_eq!(packed.to_rows(), [rows[0], rows[1], rows[3]]);
        packed.splice(1..2, vec![row(0x20, 24), row(0x30, 8)]);
        assert_eq!(
            packed.to_rows(),
            [rows[0], row(0x20, 24), row(0x30, 8), rows[3]]
        );
        packed.pop();
        assert_eq!(packed.last(), Some(row(0x30, 8)));
        // One run: the in-place paths.
        let mut low = PackedRows::from(&[row(0, 8), row(4, 8), row(8, 16)][..]);
        low.dedup_same_rule();
        low.splice(1..1, vec![row(2, 32)]);
        assert_eq!(low.to_rows(), [row(0, 8), row(2, 32), row(8, 16)]);
    }
}
