//! Assembling a file's unwind rows: the per-FDE rows read by `dwarf.rs` (keyed by virtual
//! address) become one sorted, gap-explicit, merged list keyed by file offset, with
//! `.eh_frame` preferred over `.debug_frame`, outermost frames (sized `_start` symbols) and
//! code-byte signal trampolines marked. It does not read ELF or CFI bytes itself (`crate::elf`,
//! `dwarf.rs`) and does not know the BPF encoding (`crate::unwind::compact`).

use super::dwarf::{CfiRows, Span};
use crate::elf::ElfImage;
use crate::unwind_rows::{
    lookup_packed, partition_point_in, CfaRule, PackedRows, RaRule, RegRule, RowKind, UnwindRow,
};

/// Counters [`assemble`] keeps.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct AssembleStats {
    pub fdes_outside_text: u32,
    pub fdes_overlapping: u32,
    pub debug_frame_fdes_used: u32,
    pub signal_trampolines_by_code: u32,
}

/// A span's range in file offsets, with what converts its rows' addresses.
#[derive(Clone, Copy, Debug)]
struct Piece {
    start: u64,
    end: u64,
    /// File offset of the span's first address (`span.start`, a virtual address).
    origin: u64,
    /// 0 = `.eh_frame`, 1 = `.debug_frame`.
    source: usize,
    span: Span,
}

/// What the symbol tables say that assembling needs, read before the CFI so the symbol pages
/// can leave the resident set before the rows grow (libLLVM's `.symtab` and `.strtab` are
/// 24 MB).
#[derive(Clone, Debug, Default)]
pub(crate) struct SymbolFacts {
    /// Sized `_start` symbols (virtual address ranges).
    start_symbols: Vec<(u64, u64)>,
    may_define_sigaction: bool,
}

impl SymbolFacts {
    pub(crate) fn of(image: &ElfImage<'_>) -> Self {
        let mut start_symbols = image.start_symbols();
        start_symbols.truncate(MAX_MARKS);
        Self {
            start_symbols,
            may_define_sigaction: image.may_define_sigaction(),
        }
    }
}

/// Builds the final row list from `.eh_frame` and `.debug_frame` rows. `.debug_frame` only
/// fills ranges `.eh_frame` does not cover; overlapping FDEs of one source are clipped (the
/// one starting first wins); every range without CFI starts with an explicit "no info" row.
pub(crate) fn assemble(
    image: &ElfImage<'_>,
    sources: [CfiRows; 2],
    symbols: &SymbolFacts,
    stats: &mut AssembleStats,
) -> PackedRows {
    let eh = to_pieces(image, &sources[0], 0, stats);
    let debug = disjoint(to_pieces(image, &sources[1], 1, stats), stats);
    let mut pieces = uncovered(&eh, &debug);
    stats.debug_frame_fdes_used = pieces.len() as u32;
    pieces.extend_from_slice(&eh);
    pieces.sort_by_key(|p| (p.start, p.source));

    // Each piece adds its rows and at most one gap row.
    let capacity = sources.iter().map(|s| s.rows.len()).sum::<usize>() + pieces.len() + 1;
    let mut rows = PackedRows::with_capacity(capacity);
    let mut covered_until = 0;
    for piece in &pieces {
        let start = piece.start.max(covered_until);
        if start >= piece.end {
            stats.fdes_overlapping += 1;
            continue;
        }
        if start > covered_until && !rows.is_empty() {
            push(&mut rows, UnwindRow::no_info(covered_until));
        }
        let source = &sources[piece.source].rows;
        let (first_row, row_end) = (piece.span.first_row, piece.span.row_end);
        // Monotonic in the (sorted) row addresses; past any piece's end when out of range.
        let to_offset = |vaddr: u64| {
            vaddr
                .checked_sub(piece.span.start)
                .and_then(|delta| piece.origin.checked_add(delta))
                .unwrap_or(u64::MAX)
        };
        let first = partition_point_in(first_row, row_end, |i| {
            to_offset(source.get(i).offset) <= start
        });
        let Some(in_effect) = first.checked_sub(1).filter(|&i| i >= first_row) else {
            continue;
        };
        let in_effect = source.get(in_effect);
        push(
            &mut rows,
            UnwindRow {
                offset: start,
                ..in_effect
            },
        );
        for row in (first..row_end).map(|i| source.get(i)) {
            let offset = to_offset(row.offset);
            if offset >= piece.end {
                break;
            }
            push(&mut rows, UnwindRow { offset, ..row });
        }
        covered_until = piece.end;
    }
    if !rows.is_empty() {
        push(&mut rows, UnwindRow::no_info(covered_until));
    }

    // The marks below rewrite the table: the per-FDE rows are no longer needed.
    drop((pieces, sources));
    mark_outermost(image, &symbols.start_symbols, &mut rows);
    stats.signal_trampolines_by_code =
        mark_signal_trampolines(image, symbols.may_define_sigaction, &mut rows);
    rows
}

/// Converts spans to file-offset pieces, dropping those outside executable segments and
/// clipping each to the segment holding its start.
fn to_pieces(
    image: &ElfImage<'_>,
    cfi: &CfiRows,
    source: usize,
    stats: &mut AssembleStats,
) -> Vec<Piece> {
    let mut pieces: Vec<Piece> = cfi
        .spans
        .iter()
        .filter_map(|span| {
            let Some((start, segment_end)) = image.vaddr_to_offset(span.start) else {
                stats.fdes_outside_text += 1;
                return None;
            };
            let end = start + (span.end.min(segment_end) - span.start);
            Some(Piece {
                start,
                end,
                origin: start,
                source,
                span: *span,
            })
        })
        .collect();
    pieces.sort_by_key(|p| p.start);
    pieces
}

/// Pieces (sorted by start) clipped so none overlaps an earlier one: the one starting first
/// wins. Keeps [`uncovered`] linear even when hostile FDEs all span the whole text.
fn disjoint(pieces: Vec<Piece>, stats: &mut AssembleStats) -> Vec<Piece> {
    let mut covered_until = 0;
    let mut out = Vec::with_capacity(pieces.len());
    for piece in pieces {
        let start = piece.start.max(covered_until);
        if start >= piece.end {
            stats.fdes_overlapping += 1;
            continue;
        }
        covered_until = piece.end;
        out.push(Piece { start, ..piece });
    }
    out
}

/// The parts of `candidates` (disjoint, sorted) that no piece of `covered` (sorted by start)
/// overlaps.
fn uncovered(covered: &[Piece], candidates: &[Piece]) -> Vec<Piece> {
    // Covered ranges merged into disjoint sorted intervals, so one binary search finds the
    // first that can overlap a candidate.
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(covered.len());
    for p in covered {
        match merged.last_mut() {
            Some(last) if p.start <= last.1 => last.1 = last.1.max(p.end),
            _ => merged.push((p.start, p.end)),
        }
    }
    let mut out = Vec::new();
    for c in candidates {
        let mut start = c.start;
        let first = merged.partition_point(|&(_, end)| end <= start);
        for &(s, e) in &merged[first..] {
            if s >= c.end {
                break;
            }
            if s > start {
                out.push(Piece {
                    start,
                    end: s,
                    ..*c
                });
            }
            start = start.max(e);
        }
        if start < c.end {
            out.push(Piece { start, ..*c });
        }
    }
    out
}

/// Appends a row, replacing a row at the same offset and dropping one identical to its
/// predecessor.
fn push(rows: &mut PackedRows, row: UnwindRow) {
    if rows.last().is_some_and(|last| last.offset >= row.offset) {
        rows.pop();
    }
    if !rows.last().is_some_and(|last| last.same_rule(&row)) {
        rows.push(row);
    }
}

/// Rewrites the rows covering `[start, end)` with `change`, keeping what follows `end` intact.
pub(crate) fn overlay(
    rows: &mut PackedRows,
    start: u64,
    end: u64,
    change: impl Fn(&mut UnwindRow),
) {
    if start >= end {
        return;
    }
    let at = |offset| lookup_packed(rows, offset).unwrap_or(UnwindRow::no_info(offset));
    let (mut head, tail) = (
        UnwindRow {
            offset: start,
            ..at(start)
        },
        UnwindRow {
            offset: end,
            ..at(end)
        },
    );
    change(&mut head);
    let from = rows.partition_point(|o| o < start);
    let to = rows.partition_point(|o| o < end);
    let mut middle = vec![head];
    middle.extend(
        (from..to)
            .map(|i| rows.get(i))
            .filter(|r| r.offset > start)
            .map(|mut r| {
                change(&mut r);
                r
            }),
    );
    if !(to < rows.len() && rows.get(to).offset == end) {
        middle.push(tail);
    }
    rows.splice(from..to, middle);
    // Re-merge: the edit may have made neighbours identical (offsets stay strictly ordered).
    rows.dedup_same_rule();
}

/// Marks sized `_start` symbols as the outermost frame. glibc's `_start` already says so in
/// its CFI; this also covers binaries whose `_start` has none or says otherwise. `clone` and
/// `clone3` are left to their CFI: only their child path is outermost, and glibc marks it.
fn mark_outermost(image: &ElfImage<'_>, start_symbols: &[(u64, u64)], rows: &mut PackedRows) {
    // Each mark rewrites the table: a hostile symbol table must not make that quadratic.
    for &(vaddr, vend) in start_symbols.iter().take(MAX_MARKS) {
        let Some((start, segment_end)) = image.vaddr_to_offset(vaddr) else {
            continue;
        };
        let end = start + (vend.min(segment_end) - vaddr);
        overlay(rows, start, end, |r| r.ra = RaRule::Outermost);
    }
}

/// Outermost or signal-frame marks applied per file at most (real files have one or two).
const MAX_MARKS: usize = 8;

/// `mov $15, %rax; syscall` (rt_sigreturn): glibc's `__restore_rt`.
const RESTORE_RT_CODE: [u8; 9] = [0x48, 0xc7, 0xc0, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05];

/// Finds `__restore_rt`-style trampolines in code no CFI covers and marks them as signal
/// frames, from one byte before (a caller looks up `return address - 1`, and the kernel makes
/// the handler "return" to the trampoline's first byte) to the end of the `syscall`.
///
/// Only files that define `sigaction` or are static are scanned, and only when no CFI already
/// marks a signal frame: reading the gaps of every library would touch most of its text pages.
fn mark_signal_trampolines(
    image: &ElfImage<'_>,
    may_define_sigaction: bool,
    rows: &mut PackedRows,
) -> u32 {
    if !may_define_sigaction || rows.iter().any(|r| r.ra == RaRule::SignalFrame) {
        return 0;
    }
    let mut found = Vec::new();
    for (code_start, code_end) in image.code_ranges() {
        for (start, end) in gaps(rows, code_start, code_end) {
            let Some(code) = image.data.get(start as usize..end as usize) else {
                continue;
            };
            let mut from = 0;
            while let Some(i) = code[from..].iter().position(|&b| b == RESTORE_RT_CODE[0]) {
                let i = from + i;
                if code[i..].starts_with(&RESTORE_RT_CODE) && found.len() < MAX_MARKS {
                    let at = start + i as u64;
                    found.push((at.saturating_sub(1).max(start), at + 9));
                }
                from = i + 1;
            }
        }
    }
    for &(start, end) in &found {
        overlay(rows, start, end, |r| {
            *r = UnwindRow {
                offset: r.offset,
                cfa: CfaRule::DerefRsp {
                    offset: 160,
                    add: 0,
                },
                rbp: RegRule::Unsupported,
                ra: RaRule::SignalFrame,
            }
        });
    }
    found.len() as u32
}

/// Ranges of `[start, end)` where no row gives information.
fn gaps(rows: &PackedRows, start: u64, end: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let first = rows.partition_point(|o| o <= start);
    // The row in effect at `start`, then every row starting inside the range.
    let mut at = start;
    let mut no_info = first == 0 || rows.get(first - 1).kind() == RowKind::NoInfo;
    for row in (first..rows.len())
        .map(|i| rows.get(i))
        .take_while(|r| r.offset < end)
    {
        if no_info && row.offset > at {
            out.push((at, row.offset));
        }
        at = row.offset;
        no_info = row.kind() == RowKind::NoInfo;
    }
    if no_info && at < end {
        out.push((at, end));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unwind_rows::{lookup, rsp_row as row};

    #[test]
    fn push_merges_identical_neighbours_and_replaces_same_offset() {
        let mut rows = PackedRows::default();
        push(&mut rows, row(0, 8));
        push(&mut rows, row(4, 8));
        push(&mut rows, row(8, 16));
        push(&mut rows, row(8, 8));
        assert_eq!(rows.to_rows(), vec![row(0, 8)]);
    }

    #[test]
    fn overlay_changes_only_the_range() {
        let mut rows = PackedRows::from(&[row(0, 8), row(10, 16), UnwindRow::no_info(20)][..]);
        overlay(&mut rows, 5, 15, |r| r.ra = RaRule::Outermost);
        let kinds: Vec<_> = rows.iter().map(|r| (r.offset, r.kind())).collect();
        let rows = rows.to_rows();
        assert_eq!(
            kinds,
            vec![
                (0, RowKind::Frame),
                (5, RowKind::Outermost),
                // Kept apart: the CFA differs (describe shows it).
                (10, RowKind::Outermost),
                (15, RowKind::Frame),
                (20, RowKind::NoInfo),
            ]
        );
        assert_eq!(
            lookup(&rows, 12).map(|r| r.cfa),
            Some(CfaRule::RspOffset(16))
        );
        assert_eq!(
            lookup(&rows, 15).map(|r| r.cfa),
            Some(CfaRule::RspOffset(16))
        );
    }

    #[test]
    fn gaps_cover_no_info_and_before_the_first_row() {
        let rows = PackedRows::from(
            &[
                row(10, 8),
                UnwindRow::no_info(20),
                row(30, 8),
                UnwindRow::no_info(40),
            ][..],
        );
        assert_eq!(gaps(&rows, 0, 50), vec![(0, 10), (20, 30), (40, 50)]);
    }

    #[test]
    fn display_matches_the_documented_format() {
        let r = UnwindRow {
            offset: 0x26000,
            cfa: CfaRule::RspOffset(16),
            rbp: RegRule::AtCfaOffset(-16),
            ra: RaRule::AtCfaMinus8,
        };
        assert_eq!(r.to_string(), "0x26000  cfa=rsp+16  rbp=cfa-16  ra=cfa-8");
        assert_eq!(UnwindRow::no_info(0x10).to_string(), "0x10  no unwind info");
    }
}
