//! The BPF encoding of an unwind table: fixed 256-byte buckets, one per KiB of text.
//!
//! This module owns the byte layout the BPF unwinder searches, [`CompactTable::encode`] from
//! generic rows, and [`CompactTable::find_rule`] (decoded by [`CompactTable::lookup`]), which
//! is the BPF search (`find_rule` in bpf/table_search.h) step for step, so it can be tested
//! against the generic rows, and the BPF code against it (tests/table_search.rs). It does not
//! load maps.
//!
//! # Why this layout
//! docs/performance.md: measurements showed that a frame's lookup costs dependent cache misses, not
//! instructions: the cheapest layout kept each lookup inside one 256-byte bucket per KiB of
//! text, found by index arithmetic from a base stored in the mapping entry (no hash lookup, no
//! page index). Real CFI is denser than its synthetic tables: libc, python3.11, libstdc++,
//! libLLVM-15, gdb and libcrypto have 14-31 rows per KiB at the median, 78-117 at p99 and up
//! to 236, so 32 eight-byte rows per KiB overflowed 26-48% of KiBs. Rules within a KiB repeat
//! (median 8-14 distinct, p99 20-32), and every CFA and rbp offset seen is a multiple of 8, so a
//! bucket stores 64 two-byte keys (pc and rule index) and a dictionary of 32 four-byte rules:
//! still 256 bytes, the keys in the first two cache lines (one 128-byte pair, which the L2
//! adjacent-line prefetcher fetches together), the rule in one more line, one page. A KiB with
//! more than 64 rows or 32 distinct rules (3-17% of KiBs) spills into overflow buckets through
//! one redirect, so a lookup reads at most two buckets with 2 x 6 comparisons and never loses a
//! row.
//!
//! # Byte layout (all little-endian; mirror exactly in C)
//! A file's table is `direct + overflow` buckets, stored consecutively from the file's first
//! bucket index `first` in one `BPF_MAP_TYPE_ARRAY` whose value is one bucket:
//! ```c
//! struct unwind_rule {      /* 4 bytes, align 2 */
//!     __u8  kind;           /* bits 0-3: CFA kind (KIND_*), bits 4-5: rbp kind (RBP_*) */
//!     __s8  rbp;            /* caller's rbp save slot, in units of 8 bytes */
//!     __s16 cfa;            /* CFA operand, meaning per kind (below) */
//! };
//! struct unwind_bucket {    /* 256 bytes: one KiB of text (or one overflow chunk) */
//!     __u16 key[64];        /* bytes 0..128: (pc_in_kib << 5) | rule_index, ascending;
//!                              key[0] >> 5 == 0 in a direct bucket; unused keys 0xffff */
//!     struct unwind_rule rule[32];   /* bytes 128..256: the bucket's distinct rules */
//! };
//! ```
//! Per file, the mapping entry (or a per-file record) carries `first` (u32), `base` (u64, the
//! file offset bucket 0 starts at, a multiple of 1024) and `direct` (u32, buckets indexed by
//! KiB; overflow buckets follow them).
//!
//! CFA kinds (`kind & 0xf`); `lo = (s8)(cfa & 0xff)`, `hi = (s8)(cfa >> 8)`; the return
//! address is at CFA - 8 for kinds 1-5:
//! - 0 `KIND_NO_INFO`: no CFI here (fall back to frame pointers or stop).
//! - 1 `KIND_RSP`: CFA = rsp + cfa * 8.
//! - 2 `KIND_RBP`: CFA = rbp + cfa * 8.
//! - 3 `KIND_PLT`: CFA = rsp + lo * 8 + (((pc & 15) >= (u8)hi) ? 8 : 0). `pc` may be the
//!   address or the file offset: PLT entries are 16-byte aligned and segments keep
//!   `vaddr % 16 == offset % 16`.
//! - 4 `KIND_DEREF_RSP`: CFA = *(u64 *)(rsp + lo * 8) + hi * 8.
//! - 5 `KIND_DEREF_RBP`: CFA = *(u64 *)(rbp + lo * 8) + hi * 8.
//! - 6 `KIND_OUTERMOST`: the walk ends here, successfully (`_start`, thread entry).
//! - 7 `KIND_SIGNAL`: signal trampoline; rsp points at a `ucontext_t`: the interrupted rbp,
//!   rsp, rip are at rsp + 120, rsp + 160, rsp + 168 ([`SIGFRAME_RBP`], [`SIGFRAME_RSP`],
//!   [`SIGFRAME_RIP`]). The next frame's pc is exact (interrupted, not a return address):
//!   look it up without the `- 1`.
//! - 8 `KIND_UNSUPPORTED`: CFI exists but cannot be followed (stop, count).
//! - 9 `KIND_REDIRECT`: overflow; `(u8)rbp | (u16)cfa << 8` is a bucket index relative to
//!   `first`; search that bucket the same way (it never redirects again).
//! - 10 `KIND_RSP_WIDE`: CFA = rsp + ((kind >> 6) << 16 | (u16)cfa) * 8, for frames beyond
//!   `KIND_RSP`'s 256 KiB (up to 2 MiB; rustc's and LLVM's largest are ~530 KiB). Bits 6-7 of
//!   `kind` are zero for every other kind.
//!
//! rbp kinds (`(kind >> 4) & 3`), the caller's rbp: 0 `RBP_UNCHANGED`: rbp itself;
//! 1 `RBP_AT_CFA`: *(u64 *)(CFA + rbp * 8); 2 `RBP_AT_RBP`: *(u64 *)(rbp + rbp * 8), the
//! callee's rbp; 3 `RBP_UNKNOWN`: unknown from here on.
//!
//! # Lookup (BPF)
//! For `off = pc - load_bias` (for a caller frame use `return address - 1`, so a call that ends
//! a function finds that function):
//! 1. `if (off < base) miss; k = (off - base) >> 10; if (k >= direct) miss;`
//! 2. `b = array[first + k]; want = ((off & 1023) << 5) | 31; i = 0;` then for `s` in 32, 16,
//!    8, 4, 2, 1: `if (b->key[i + s] <= want) i += s;` (key[0] <= want always, padding is
//!    0xffff, so `i` ends at the last row starting at or before the offset; `i + s <= 63`).
//! 3. `r = b->rule[b->key[i] & 31]; if ((r.kind & 0xf) == KIND_REDIRECT) { b = array[first +
//!    index]; repeat step 2 on it }`.

use std::fmt;
use std::mem::size_of;

use crate::unwind_rows::{partition_point_in, CfaRule, PackedRows, RegRule, RowKind, UnwindRow};

/// log2 of the text bytes one direct bucket covers.
pub const BUCKET_TEXT_SHIFT: u32 = 10;
pub const BUCKET_TEXT_BYTES: u64 = 1 << BUCKET_TEXT_SHIFT;
/// Rows (keys) per bucket.
pub const KEYS_PER_BUCKET: usize = 64;
/// Distinct rules per bucket.
pub const RULES_PER_BUCKET: usize = 32;
pub const BUCKET_BYTES: usize = 256;
/// Bits of a key holding the rule index.
pub const KEY_RULE_BITS: u32 = 5;
/// An unused key: above every real key.
pub const KEY_PAD: u16 = 0xffff;
/// Direct buckets per file at most (1 GiB of text, 256 MiB of table).
pub const MAX_DIRECT_BUCKETS: u64 = 1 << 20;

pub const KIND_NO_INFO: u8 = 0;
pub const KIND_RSP: u8 = 1;
pub const KIND_RBP: u8 = 2;
pub const KIND_PLT: u8 = 3;
pub const KIND_DEREF_RSP: u8 = 4;
pub const KIND_DEREF_RBP: u8 = 5;
pub const KIND_OUTERMOST: u8 = 6;
pub const KIND_SIGNAL: u8 = 7;
pub const KIND_UNSUPPORTED: u8 = 8;
pub const KIND_REDIRECT: u8 = 9;
pub const KIND_RSP_WIDE: u8 = 10;
/// Where `KIND_RSP_WIDE` keeps bits 16-17 of its operand.
pub const WIDE_SHIFT: u8 = 6;

pub const RBP_SHIFT: u8 = 4;
pub const RBP_UNCHANGED: u8 = 0;
pub const RBP_AT_CFA: u8 = 1;
pub const RBP_AT_RBP: u8 = 2;
pub const RBP_UNKNOWN: u8 = 3;

/// Where a signal frame's `ucontext_t` (at rsp) holds the interrupted registers
/// (`uc_mcontext` at 40, then glibc's `REG_RBP` = 10, `REG_RSP` = 15, `REG_RIP` = 16).
pub const SIGFRAME_RBP: u64 = 120;
pub const SIGFRAME_RSP: u64 = 160;
pub const SIGFRAME_RIP: u64 = 168;

/// One rule as BPF reads it: `struct unwind_rule`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Rule {
    pub kind: u8,
    pub rbp: i8,
    pub cfa: i16,
}

/// One bucket as BPF reads it: `struct unwind_bucket`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bucket {
    pub key: [u16; KEYS_PER_BUCKET],
    pub rule: [Rule; RULES_PER_BUCKET],
}

const _: () = assert!(size_of::<Rule>() == 4);
const _: () = assert!(size_of::<Bucket>() == BUCKET_BYTES);

/// What the BPF unwinder does at a pc: the decoded form of a [`Rule`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompactRow {
    /// A normal frame: return address at CFA - 8.
    Frame {
        cfa: CfaRule,
        rbp: RegRule,
    },
    Outermost,
    SignalFrame,
    Unsupported,
}

impl CompactRow {
    /// What the encoding keeps of a generic row (`None` for "no info").
    pub fn of(row: &UnwindRow) -> Option<Self> {
        Rule::encode(row).decode()
    }
}

/// `v / 8` if `v` is a multiple of 8 that fits `T`.
fn eighths<T: TryFrom<i32>>(v: i32) -> Option<T> {
    (v % 8 == 0).then(|| T::try_from(v / 8).ok()).flatten()
}

/// Two signed bytes in one operand: `lo | hi << 8`.
fn bytes(lo: i8, hi: i8) -> i16 {
    i16::from_le_bytes([lo as u8, hi as u8])
}

impl Rule {
    fn of_kind(kind: u8) -> Self {
        Self {
            kind,
            ..Self::default()
        }
    }

    fn redirect(index: u32) -> Self {
        Self {
            kind: KIND_REDIRECT,
            rbp: index as u8 as i8,
            cfa: (index >> 8) as u16 as i16,
        }
    }

    fn bits(self) -> u32 {
        let [lo, hi] = self.cfa.to_le_bytes();
        u32::from_le_bytes([self.kind, self.rbp as u8, lo, hi])
    }

    pub fn redirect_index(self) -> u32 {
        u32::from(self.rbp as u8) | u32::from(self.cfa as u16) << 8
    }

    /// The encoding of a generic row. Operands that do not fit make the row unsupported (CFA) or
    /// rbp unknown.
    pub fn encode(row: &UnwindRow) -> Self {
        match row.kind() {
            RowKind::NoInfo => return Self::of_kind(KIND_NO_INFO),
            RowKind::Outermost => return Self::of_kind(KIND_OUTERMOST),
            RowKind::SignalFrame => return Self::of_kind(KIND_SIGNAL),
            RowKind::Unsupported => return Self::of_kind(KIND_UNSUPPORTED),
            RowKind::Frame => {}
        }
        let pair = |a: i32, b: Option<i8>| Some(bytes(eighths(a)?, b?));
        let mut wide = 0;
        let cfa = match row.cfa {
            CfaRule::RspOffset(o) => match eighths::<i16>(o) {
                Some(c) => Some((KIND_RSP, c)),
                None => eighths::<u32>(o).filter(|&c| c < 1 << 18).map(|c| {
                    wide = (c >> 16) as u8;
                    (KIND_RSP_WIDE, c as u16 as i16)
                }),
            },
            CfaRule::RbpOffset(o) => eighths(o).map(|c| (KIND_RBP, c)),
            CfaRule::Plt {
                rsp_offset,
                threshold,
            } => pair(rsp_offset, i8::try_from(threshold).ok()).map(|c| (KIND_PLT, c)),
            CfaRule::DerefRsp { offset, add } => {
                pair(offset, eighths(add)).map(|c| (KIND_DEREF_RSP, c))
            }
            CfaRule::DerefRbp { offset, add } => {
                pair(offset, eighths(add)).map(|c| (KIND_DEREF_RBP, c))
            }
            CfaRule::NoInfo | CfaRule::Unsupported => None,
        };
        let Some((cfa_kind, cfa)) = cfa else {
            return Self::of_kind(KIND_UNSUPPORTED);
        };
        let (rbp_kind, rbp) = match row.rbp {
            RegRule::Unchanged => (RBP_UNCHANGED, 0),
            RegRule::AtCfaOffset(o) => eighths(o).map_or((RBP_UNKNOWN, 0), |s| (RBP_AT_CFA, s)),
            RegRule::AtRbpOffset(o) => eighths(o).map_or((RBP_UNKNOWN, 0), |s| (RBP_AT_RBP, s)),
            RegRule::Unsupported => (RBP_UNKNOWN, 0),
        };
        Self {
            kind: cfa_kind | rbp_kind << RBP_SHIFT | wide << WIDE_SHIFT,
            rbp,
            cfa,
        }
    }

    /// What BPF does with this rule; `None` for "no info" (and a redirect, which a lookup
    /// resolves first).
    pub fn decode(self) -> Option<CompactRow> {
        let [lo, hi] = self.cfa.to_le_bytes();
        let (lo, hi) = (i32::from(lo as i8) * 8, i32::from(hi as i8));
        let cfa = match self.kind & 0xf {
            KIND_NO_INFO | KIND_REDIRECT => return None,
            KIND_OUTERMOST => return Some(CompactRow::Outermost),
            KIND_SIGNAL => return Some(CompactRow::SignalFrame),
            KIND_RSP => CfaRule::RspOffset(i32::from(self.cfa) * 8),
            KIND_RSP_WIDE => {
                let units = u32::from(self.kind >> WIDE_SHIFT) << 16 | u32::from(self.cfa as u16);
                CfaRule::RspOffset(units as i32 * 8)
            }
            KIND_RBP => CfaRule::RbpOffset(i32::from(self.cfa) * 8),
            KIND_PLT => CfaRule::Plt {
                rsp_offset: lo,
                threshold: hi as u8,
            },
            KIND_DEREF_RSP => CfaRule::DerefRsp {
                offset: lo,
                add: hi * 8,
            },
            KIND_DEREF_RBP => CfaRule::DerefRbp {
                offset: lo,
                add: hi * 8,
            },
            _ => return Some(CompactRow::Unsupported),
        };
        let slot = i32::from(self.rbp) * 8;
        let rbp = match (self.kind >> RBP_SHIFT) & 3 {
            RBP_UNCHANGED => RegRule::Unchanged,
            RBP_AT_CFA => RegRule::AtCfaOffset(slot),
            RBP_AT_RBP => RegRule::AtRbpOffset(slot),
            _ => RegRule::Unsupported,
        };
        Some(CompactRow::Frame { cfa, rbp })
    }
}

impl Bucket {
    fn empty() -> Self {
        Self {
            key: [KEY_PAD; KEYS_PER_BUCKET],
            rule: [Rule::default(); RULES_PER_BUCKET],
        }
    }

    /// Packs the leading rows (`(pc in KiB, rule)`, ascending) that fit one bucket: at most 64,
    /// with at most 32 distinct rules. Returns the bucket, how many rows it took and how many
    /// distinct rules they have.
    fn pack(entries: &[(u16, Rule)]) -> (Self, usize, usize) {
        let mut bucket = Self::empty();
        // Rules compared as one u32 each: a short linear scan the compiler vectorises.
        let mut seen = [u32::MAX; RULES_PER_BUCKET];
        let mut rules = 0;
        for (n, &(pc, rule)) in entries.iter().enumerate() {
            if n == KEYS_PER_BUCKET {
                return (bucket, n, rules);
            }
            let bits = rule.bits();
            let index = match seen[..rules].iter().position(|&r| r == bits) {
                Some(index) => index,
                None if rules == RULES_PER_BUCKET => return (bucket, n, rules),
                None => {
                    seen[rules] = bits;
                    bucket.rule[rules] = rule;
                    rules += 1;
                    rules - 1
                }
            };
            bucket.key[n] = pc << KEY_RULE_BITS | index as u16;
        }
        (bucket, entries.len(), rules)
    }

    /// The key index of the last row starting at or before in-KiB offset `t`: 6 comparisons,
    /// as in BPF.
    pub fn search(&self, t: u16) -> usize {
        let want = t << KEY_RULE_BITS | ((1 << KEY_RULE_BITS) - 1);
        let mut i = 0;
        for step in [32, 16, 8, 4, 2, 1] {
            if self.key[i + step] <= want {
                i += step;
            }
        }
        i
    }

    /// The rule of the row at in-KiB offset `t`.
    pub fn rule_at(&self, t: u16) -> Rule {
        self.rule[usize::from(self.key[self.search(t)]) & (RULES_PER_BUCKET - 1)]
    }

    /// The bytes BPF maps hold.
    pub fn to_bytes(&self) -> [u8; BUCKET_BYTES] {
        let mut out = [0u8; BUCKET_BYTES];
        for (i, key) in self.key.iter().enumerate() {
            out[2 * i..2 * i + 2].copy_from_slice(&key.to_le_bytes());
        }
        for (i, r) in self.rule.iter().enumerate() {
            let at = 2 * KEYS_PER_BUCKET + 4 * i;
            out[at] = r.kind;
            out[at + 1] = r.rbp as u8;
            out[at + 2..at + 4].copy_from_slice(&r.cfa.to_le_bytes());
        }
        out
    }

    /// The inverse of [`to_bytes`](Self::to_bytes).
    pub fn from_bytes(bytes: &[u8; BUCKET_BYTES]) -> Self {
        let pair = |at: usize| [bytes[at], bytes[at + 1]];
        let mut bucket = Self::empty();
        for (i, key) in bucket.key.iter_mut().enumerate() {
            *key = u16::from_le_bytes(pair(2 * i));
        }
        for (i, rule) in bucket.rule.iter_mut().enumerate() {
            let at = 2 * KEYS_PER_BUCKET + 4 * i;
            *rule = Rule {
                kind: bytes[at],
                rbp: bytes[at + 1] as i8,
                cfa: i16::from_le_bytes(pair(at + 2)),
            };
        }
        bucket
    }
}

/// Whether encoding lost part of a frame row (stored as unsupported, or rbp unknown).
fn lossy(row: &UnwindRow, rule: Rule) -> bool {
    row.kind() == RowKind::Frame
        && (rule.kind == KIND_UNSUPPORTED
            || ((rule.kind >> RBP_SHIFT) & 3 == RBP_UNKNOWN && row.rbp != RegRule::Unsupported))
}

/// Why a table could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompactError {
    /// The rows span more text than [`MAX_DIRECT_BUCKETS`] KiB.
    TooLarge { text_bytes: u64 },
    /// More than 1,024 distinct rows in one KiB (rows not sorted or not deduplicated).
    UnsortedRows { kib: u64 },
}

impl fmt::Display for CompactError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge { text_bytes } => write!(
                f,
                "unwind rows span {text_bytes} bytes of text, more than the {} KiB a table holds",
                MAX_DIRECT_BUCKETS
            ),
            Self::UnsortedRows { kib } => {
                write!(f, "unwind rows of KiB {kib} are not sorted and merged")
            }
        }
    }
}

impl std::error::Error for CompactError {}

/// How the encoding went.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactStats {
    /// Rows stored (after re-merging neighbours that encode alike), redirects excluded.
    pub rows: usize,
    /// Frame rows whose operands did not fit (stored as unsupported or with rbp unknown).
    pub unencodable: usize,
    /// KiBs whose rows did not fit one bucket.
    pub overflowing_kib: u32,
    /// The most rows, and distinct rules, one KiB needed.
    pub max_rows_per_kib: u32,
    pub max_rules_per_kib: u32,
    /// `histogram[n]`: KiBs with `n` rows (the last slot counts 128 and more).
    pub histogram: Vec<u32>,
}

/// A file's table in the BPF layout.
#[derive(Clone, Debug, Default)]
pub struct CompactTable {
    base: u64,
    direct: u32,
    buckets: Vec<Bucket>,
    stats: CompactStats,
}

impl CompactTable {
    /// Encodes sorted, merged rows (as [`crate::cfi::extract`] returns them).
    pub fn encode(rows: &[UnwindRow]) -> Result<Self, CompactError> {
        Self::encode_with(rows.len(), |i| rows[i])
    }

    /// [`encode`](Self::encode) from packed rows (as [`crate::cfi::extract_packed`] returns
    /// them), never unpacking more than one row at a time.
    pub fn encode_packed(rows: &PackedRows) -> Result<Self, CompactError> {
        Self::encode_with(rows.len(), |i| rows.get(i))
    }

    /// Encodes the `n` rows `at(0..n)`.
    fn encode_with(n: usize, at: impl Fn(usize) -> UnwindRow) -> Result<Self, CompactError> {
        let get = |i: usize| (i < n).then(|| at(i));
        let mut stats = CompactStats {
            histogram: vec![0; 129],
            ..CompactStats::default()
        };
        let (Some(first), Some(last)) = (
            (0..n).map(&at).find(|r| r.kind() != RowKind::NoInfo),
            n.checked_sub(1).map(&at),
        ) else {
            return Ok(Self {
                stats,
                ..Self::default()
            });
        };
        let base = first.offset & !(BUCKET_TEXT_BYTES - 1);
        let end = match last.kind() {
            RowKind::NoInfo => last.offset,
            _ => last.offset.saturating_add(1),
        };
        let text_bytes = end.saturating_sub(base);
        let direct = text_bytes.div_ceil(BUCKET_TEXT_BYTES);
        if direct > MAX_DIRECT_BUCKETS {
            return Err(CompactError::TooLarge { text_bytes });
        }
        let mut buckets = Vec::with_capacity(direct as usize);
        let mut overflow = Vec::new();
        let mut entries: Vec<(u16, Rule)> = Vec::with_capacity(128);
        let mut next = partition_point_in(0, n, |i| at(i).offset <= base);
        for kib in 0..direct {
            let start = base + kib * BUCKET_TEXT_BYTES;
            while get(next).is_some_and(|r| r.offset <= start) {
                next += 1;
            }
            let in_effect = next
                .checked_sub(1)
                .map_or(Rule::of_kind(KIND_NO_INFO), |i| Rule::encode(&at(i)));
            entries.clear();
            entries.push((0, in_effect));
            while let Some(row) = get(next).filter(|r| r.offset < start + BUCKET_TEXT_BYTES) {
                let rule = Rule::encode(&row);
                stats.unencodable += usize::from(lossy(&row, rule));
                if entries.last().map(|e| e.1) != Some(rule) {
                    entries.push(((row.offset - start) as u16, rule));
                }
                next += 1;
            }
            let (bucket, taken, rules) = Bucket::pack(&entries);
            stats.rows += entries.len();
            stats.histogram[entries.len().min(128)] += 1;
            stats.max_rows_per_kib = stats.max_rows_per_kib.max(entries.len() as u32);
            if taken == entries.len() {
                stats.max_rules_per_kib = stats.max_rules_per_kib.max(rules as u32);
                buckets.push(bucket);
                continue;
            }
            stats.overflowing_kib += 1;
            stats.max_rules_per_kib = stats.max_rules_per_kib.max(distinct_rules(&entries));
            let mut redirects = Vec::new();
            let mut rest = &entries[..];
            while !rest.is_empty() {
                if redirects.len() == RULES_PER_BUCKET {
                    return Err(CompactError::UnsortedRows { kib });
                }
                let (bucket, taken, _) = Bucket::pack(rest);
                let index = direct + overflow.len() as u64;
                redirects.push((rest[0].0, Rule::redirect(index as u32)));
                overflow.push(bucket);
                rest = &rest[taken..];
            }
            buckets.push(Bucket::pack(&redirects).0);
        }
        buckets.append(&mut overflow);
        Ok(Self {
            base,
            direct: direct as u32,
            buckets,
            stats,
        })
    }

    /// The rule at a file offset, exactly as the BPF unwinder finds it; `None` for no info.
    pub fn lookup(&self, offset: u64) -> Option<CompactRow> {
        self.find_rule(offset)?.1.decode()
    }

    /// What `find_rule` in bpf/table_search.h returns for a file offset: the index of the
    /// bucket holding the rule (from the table's first bucket) and the rule, a "no info" rule
    /// included; `None` outside the direct buckets or when a redirect leads to a redirect.
    pub fn find_rule(&self, offset: u64) -> Option<(u32, Rule)> {
        let relative = offset.checked_sub(self.base)?;
        let kib = relative >> BUCKET_TEXT_SHIFT;
        if kib >= u64::from(self.direct) {
            return None;
        }
        let t = (relative & (BUCKET_TEXT_BYTES - 1)) as u16;
        let mut index = kib as u32;
        let mut rule = self.buckets.get(kib as usize)?.rule_at(t);
        if rule.kind & 0xf == KIND_REDIRECT {
            index = rule.redirect_index();
            rule = self.buckets.get(index as usize)?.rule_at(t);
        }
        (rule.kind & 0xf != KIND_REDIRECT).then_some((index, rule))
    }

    /// File offset of the first byte bucket 0 covers (a multiple of 1 KiB).
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Buckets indexed directly by KiB; the overflow buckets follow them.
    pub fn direct_buckets(&self) -> u32 {
        self.direct
    }

    /// All buckets, in the order they are stored from the file's first bucket index.
    pub fn buckets(&self) -> &[Bucket] {
        &self.buckets
    }

    /// Bytes the table occupies in BPF maps.
    pub fn bytes(&self) -> usize {
        self.buckets.len() * BUCKET_BYTES
    }

    pub fn stats(&self) -> &CompactStats {
        &self.stats
    }

    /// A table from its parts, as [`base`](Self::base), [`direct_buckets`](Self::direct_buckets)
    /// and [`buckets`](Self::buckets) gave them (a stored copy). `None` when they cannot be a
    /// table: a base off a KiB boundary, more direct buckets than buckets, or a redirect that
    /// leads outside the table.
    pub fn from_parts(
        base: u64,
        direct: u32,
        buckets: Vec<Bucket>,
        stats: CompactStats,
    ) -> Option<Self> {
        let n = buckets.len();
        let redirects_inside = buckets.iter().all(|b| {
            b.rule
                .iter()
                .filter(|r| r.kind & 0xf == KIND_REDIRECT)
                .all(|r| (r.redirect_index() as usize) < n)
        });
        (base % BUCKET_TEXT_BYTES == 0 && direct as usize <= n && redirects_inside).then_some(
            Self {
                base,
                direct,
                buckets,
                stats,
            },
        )
    }
}

fn distinct_rules(entries: &[(u16, Rule)]) -> u32 {
    let mut bits: Vec<u32> = entries.iter().map(|e| e.1.bits()).collect();
    bits.sort_unstable();
    bits.dedup();
    bits.len() as u32
}

#[cfg(test)]
#[path = "compact_tests.rs"]
mod tests;
