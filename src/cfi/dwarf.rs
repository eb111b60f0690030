//! Reading `.eh_frame` and `.debug_frame` with gimli into per-FDE rows.
//!
//! This module owns walking a CFI section's entries, evaluating each FDE's instructions with
//! gimli, and classifying every gimli row into the x86_64 rules of `rows.rs` (including the PLT
//! and dereferencing DWARF expressions). Rows here are keyed by virtual address;
//! `assemble.rs` turns them into file offsets and one table.
//!
//! Hostile input is bounded: entries are found by their length fields (a bad entry is skipped,
//! not fatal), a CIE longer than [`MAX_CIE_BYTES`] is refused (its instructions are replayed for
//! every FDE), an FDE yields at most [`MAX_ROWS_PER_FDE`] rows and a file at most [`MAX_ROWS`].
//! Every instruction consumes input bytes and gimli bounds the remember-state stack and the
//! register set, so evaluation always ends.

use std::collections::HashMap;

use gimli::{
    BaseAddresses, CallFrameInstruction, CommonInformationEntry, DebugFrame, EhFrame, EhFrameHdr,
    EndianSlice, LittleEndian, Operation, Reader, RegisterRule, UnwindContext, UnwindOffset,
    UnwindSection, X86_64,
};

use crate::elf::{ElfImage, SectionData};
use crate::unwind_rows::{CfaRule, PackedRows, RaRule, RegRule, UnwindRow};

/// Rows kept per file at most; the rest of the file's CFI is dropped and counted.
pub const MAX_ROWS: usize = 1 << 22;
/// Rows kept per FDE at most (real FDEs have at most a few thousand).
pub const MAX_ROWS_PER_FDE: usize = 1 << 16;
/// CIEs longer than this are refused (real ones are about 20 bytes).
pub const MAX_CIE_BYTES: usize = 1024;
/// Operations in a DWARF expression worth matching against the known patterns.
const MAX_EXPRESSION_OPS: usize = 12;

type R<'data> = EndianSlice<'data, LittleEndian>;

/// The rows of one FDE: `rows[first_row..row_end]` of its [`CfiRows`], covering
/// `[start, end)` (virtual addresses).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Span {
    pub start: u64,
    pub end: u64,
    pub first_row: usize,
    pub row_end: usize,
}

/// Rows read from CFI sections, `offset` holding the virtual address; packed, as a big file
/// has millions.
#[derive(Debug, Default)]
pub(crate) struct CfiRows {
    pub rows: PackedRows,
    pub spans: Vec<Span>,
}

/// What reading CFI counted.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CfiStats {
    pub fdes: u32,
    /// FDEs found only through `.eh_frame_hdr` (the section walk stopped before them).
    pub fdes_from_hdr: u32,
    /// Entries that failed to parse or evaluate (skipped).
    pub errors: u32,
    /// FDEs cut short by [`MAX_ROWS_PER_FDE`].
    pub fdes_limited: u32,
    /// [`MAX_ROWS`] was reached: later FDEs are missing.
    pub truncated: bool,
}

/// Reads `.eh_frame`, also the FDEs `.eh_frame_hdr` lists that the section walk did not reach.
pub(crate) fn read_eh_frame(
    image: &mut ElfImage<'_>,
    section: SectionData<'_>,
    out: &mut CfiRows,
    stats: &mut CfiStats,
) {
    let mut bases = BaseAddresses::default().set_eh_frame(section.addr);
    for (name, set) in [
        (".text", BaseAddresses::set_text as fn(_, _) -> _),
        (".got", BaseAddresses::set_got),
    ] {
        if let Some(addr) = image.section_addr(name) {
            bases = set(bases, addr);
        }
    }
    let hdr = image.section(".eh_frame_hdr");
    if let Some(hdr) = hdr {
        bases = bases.set_eh_frame_hdr(hdr.addr);
    }
    let mut eh = EhFrame::new(section.data, LittleEndian);
    eh.set_address_size(8);
    let mut offsets = entry_offsets(section.data, true, stats);
    if let Some(hdr) = hdr {
        let from_hdr = hdr_offsets(hdr.data, &bases, section.addr, &offsets);
        stats.fdes_from_hdr = from_hdr.len() as u32;
        offsets.extend(from_hdr);
    }
    read_fdes(&eh, &bases, &offsets, out, stats);
    out.rows.shrink_to_fit();
}

/// Reads `.debug_frame`.
pub(crate) fn read_debug_frame(section: SectionData<'_>, out: &mut CfiRows, stats: &mut CfiStats) {
    let mut debug = DebugFrame::new(section.data, LittleEndian);
    debug.set_address_size(8);
    let offsets = entry_offsets(section.data, false, stats);
    read_fdes(&debug, &BaseAddresses::default(), &offsets, out, stats);
    out.rows.shrink_to_fit();
}

/// Offsets of the FDEs in a CFI section, found by walking the entries' length fields.
/// `.eh_frame` ends at a zero length; in `.debug_frame` that is skipped.
fn entry_offsets(data: &[u8], is_eh: bool, stats: &mut CfiStats) -> Vec<usize> {
    let read = |at: usize, n: usize| -> Option<u64> {
        let bytes = data.get(at..at.checked_add(n)?)?;
        Some(bytes.iter().rev().fold(0, |v, &b| v << 8 | u64::from(b)))
    };
    let mut fdes = Vec::new();
    let mut at = 0;
    while let Some(length) = read(at, 4) {
        let (length, header, id_size) = match length {
            0xffff_ffff => match read(at + 4, 8) {
                Some(length) => (length, 12, 8),
                None => break,
            },
            _ => (length, 4, 4),
        };
        if length == 0 {
            if is_eh {
                break;
            }
            at += header;
            continue;
        }
        let end = usize::try_from(length)
            .ok()
            .and_then(|len| (at + header).checked_add(len))
            .filter(|&end| end <= data.len());
        let (Some(end), Some(id)) = (end, read(at + header, id_size)) else {
            stats.errors += 1;
            break;
        };
        let is_cie = if is_eh {
            id == 0
        } else {
            id == 0xffff_ffff || id == u64::MAX
        };
        if !is_cie {
            fdes.push(at);
        }
        at = end;
    }
    fdes
}

/// FDE offsets listed in `.eh_frame_hdr`'s search table but absent from `seen` (sorted).
fn hdr_offsets(hdr: &[u8], bases: &BaseAddresses, eh_frame: u64, seen: &[usize]) -> Vec<usize> {
    let Ok(parsed) = EhFrameHdr::new(hdr, LittleEndian).parse(bases, 8) else {
        return Vec::new();
    };
    let Some(table) = parsed.table() else {
        return Vec::new();
    };
    let mut iter = table.iter(bases);
    let mut extra = Vec::new();
    // Each table entry takes at least 2 bytes, which bounds a hostile `fde_count`.
    for _ in 0..hdr.len() / 2 {
        let Ok(Some((_, fde))) = iter.next() else {
            break;
        };
        // Not `pointer_to_offset`: it subtracts without checking.
        let offset = fde.direct().ok().and_then(|p| p.checked_sub(eh_frame));
        let Some(offset) = offset.and_then(|o| usize::try_from(o).ok()) else {
            continue;
        };
        if seen.binary_search(&offset).is_err() {
            extra.push(offset);
        }
    }
    extra.sort_unstable();
    extra.dedup();
    extra
}

/// Parses and evaluates the FDEs at `offsets`.
fn read_fdes<'data, S>(
    section: &S,
    bases: &BaseAddresses,
    offsets: &[usize],
    out: &mut CfiRows,
    stats: &mut CfiStats,
) where
    S: UnwindSection<R<'data>>,
{
    let mut cies: HashMap<usize, Option<CommonInformationEntry<R<'data>>>> = HashMap::new();
    let mut get_cie = |section: &S, bases: &BaseAddresses, offset: S::Offset| {
        let key = UnwindOffset::into(offset);
        let cie = cies.entry(key).or_insert_with(|| {
            let cie = section.cie_from_offset(bases, offset).ok()?;
            (cie.entry_len() <= MAX_CIE_BYTES).then_some(cie)
        });
        cie.clone().ok_or(gimli::Error::NoEntryAtGivenOffset)
    };
    let mut ctx = Box::new(UnwindContext::new());
    for &offset in offsets {
        if out.rows.len() >= MAX_ROWS {
            stats.truncated = true;
            return;
        }
        let Ok(fde) = section.fde_from_offset(bases, S::Offset::from(offset), &mut get_cie) else {
            stats.errors += 1;
            continue;
        };
        let (start, end) = (fde.initial_address(), fde.end_address());
        if end <= start {
            stats.errors += 1;
            continue;
        }
        let first_row = out.rows.len();
        match fde_rows(section, bases, &mut ctx, &fde, out, stats) {
            Ok(()) if out.rows.len() > first_row => {
                stats.fdes += 1;
                out.spans.push(Span {
                    start,
                    end,
                    first_row,
                    row_end: out.rows.len(),
                });
            }
            Ok(()) => {}
            Err(_) => {
                stats.errors += 1;
                out.rows.truncate(first_row);
            }
        }
    }
}

/// Evaluates one FDE, appending its rows (merged, clipped to the FDE) to `out.rows`.
fn fde_rows<'data, S>(
    section: &S,
    bases: &BaseAddresses,
    ctx: &mut UnwindContext<usize>,
    fde: &gimli::FrameDescriptionEntry<R<'data>>,
    out: &mut CfiRows,
    stats: &mut CfiStats,
) -> gimli::Result<()>
where
    S: UnwindSection<R<'data>>,
{
    let (start, end) = (fde.initial_address(), fde.end_address());
    let first_row = out.rows.len();
    let signal = fde.is_signal_trampoline();
    let ra_column_ok = fde.cie().return_address_register() == X86_64::RA;
    let encoding = fde.cie().encoding();
    let mut undefined_ra = None;
    let mut table = gimli::UnwindTable::new(section, bases, ctx, fde)?;
    while let Some(row) = table.next_row()? {
        if row.start_address() >= end {
            break;
        }
        if row.end_address() <= row.start_address() {
            continue;
        }
        if out.rows.len() - first_row >= MAX_ROWS_PER_FDE {
            stats.fdes_limited += 1;
            break;
        }
        let ra = if signal {
            RaRule::SignalFrame
        } else if !ra_column_ok {
            RaRule::Unsupported
        } else {
            match row.register(X86_64::RA) {
                RegisterRule::Offset(-8) => RaRule::AtCfaMinus8,
                RegisterRule::Undefined => {
                    let explicit = *undefined_ra
                        .get_or_insert_with(|| ra_explicitly_undefined(section, bases, fde));
                    if explicit {
                        RaRule::Outermost
                    } else {
                        RaRule::Unsupported
                    }
                }
                _ => RaRule::Unsupported,
            }
        };
        let new = UnwindRow {
            offset: row.start_address().max(start),
            cfa: cfa_rule(row.cfa(), section, encoding),
            rbp: rbp_rule(row.register(X86_64::RBP), section, encoding),
            ra,
        };
        let same = (out.rows.len() > first_row)
            .then(|| out.rows.last())
            .flatten()
            .is_some_and(|l| (l.cfa, l.rbp, l.ra) == (new.cfa, new.rbp, new.ra));
        if !same {
            out.rows.push(new);
        }
    }
    Ok(())
}

/// Whether the CIE or FDE says `DW_CFA_undefined` for the return address (gimli reports a
/// missing rule the same way, which is not an outermost frame but broken CFI).
fn ra_explicitly_undefined<'data, S>(
    section: &S,
    bases: &BaseAddresses,
    fde: &gimli::FrameDescriptionEntry<R<'data>>,
) -> bool
where
    S: UnwindSection<R<'data>>,
{
    let is_undefined_ra = |i: &CallFrameInstruction<usize>| matches!(i, CallFrameInstruction::Undefined { register } if *register == X86_64::RA);
    let mut cie = fde.cie().instructions(section, bases);
    let mut own = fde.instructions(section, bases);
    while let Ok(Some(i)) = cie.next() {
        if is_undefined_ra(&i) {
            return true;
        }
    }
    while let Ok(Some(i)) = own.next() {
        if is_undefined_ra(&i) {
            return true;
        }
    }
    false
}

fn cfa_rule<'data, S>(
    cfa: &gimli::CfaRule<usize>,
    section: &S,
    encoding: gimli::Encoding,
) -> CfaRule
where
    S: UnwindSection<R<'data>>,
{
    match *cfa {
        gimli::CfaRule::RegisterAndOffset { register, offset } => {
            match (register, i32::try_from(offset)) {
                (X86_64::RSP, Ok(o)) => CfaRule::RspOffset(o),
                (X86_64::RBP, Ok(o)) => CfaRule::RbpOffset(o),
                _ => CfaRule::Unsupported,
            }
        }
        gimli::CfaRule::Expression(e) => match e.get(section) {
            Ok(e) => cfa_expression(&operations(e.0, encoding)),
            Err(_) => CfaRule::Unsupported,
        },
    }
}

/// Recognises the PLT expression and `breg; deref [; plus_uconst]`.
pub(crate) fn cfa_expression(ops: &[Operation<R<'_>>]) -> CfaRule {
    use Operation as Op;
    let constant = |op: &Op<R<'_>>, want: Option<u64>| match *op {
        Op::UnsignedConstant { value } if want.is_none_or(|w| w == value) => Some(value),
        _ => None,
    };
    match ops {
        [Op::RegisterOffset {
            register: X86_64::RSP,
            offset,
            ..
        }, Op::RegisterOffset {
            register: rip,
            offset: 0,
            ..
        }, fifteen, Op::And, threshold, Op::Ge, three, Op::Shl, Op::Plus]
            if rip.0 == 16
                && constant(fifteen, Some(15)).is_some()
                && constant(three, Some(3)).is_some() =>
        {
            match (i32::try_from(*offset), constant(threshold, None)) {
                (Ok(rsp_offset), Some(t @ 0..=15)) => CfaRule::Plt {
                    rsp_offset,
                    threshold: t as u8,
                },
                _ => CfaRule::Unsupported,
            }
        }
        [Op::RegisterOffset {
            register, offset, ..
        }, Op::Deref {
            size: 8,
            space: false,
            ..
        }, rest @ ..] => {
            let add = match rest {
                [] => Some(0),
                [Op::PlusConstant { value }] => i32::try_from(*value).ok(),
                _ => None,
            };
            match (*register, i32::try_from(*offset), add) {
                (X86_64::RSP, Ok(offset), Some(add)) => CfaRule::DerefRsp { offset, add },
                (X86_64::RBP, Ok(offset), Some(add)) => CfaRule::DerefRbp { offset, add },
                _ => CfaRule::Unsupported,
            }
        }
        _ => CfaRule::Unsupported,
    }
}

fn rbp_rule<'data, S>(rule: RegisterRule<usize>, section: &S, encoding: gimli::Encoding) -> RegRule
where
    S: UnwindSection<R<'data>>,
{
    match rule {
        RegisterRule::Undefined | RegisterRule::SameValue => RegRule::Unchanged,
        RegisterRule::Offset(o) => {
            i32::try_from(o).map_or(RegRule::Unsupported, RegRule::AtCfaOffset)
        }
        RegisterRule::Expression(e) => {
            let Ok(e) = e.get(section) else {
                return RegRule::Unsupported;
            };
            match operations(e.0, encoding).as_slice() {
                [Operation::RegisterOffset {
                    register: X86_64::RBP,
                    offset,
                    ..
                }] => i32::try_from(*offset).map_or(RegRule::Unsupported, RegRule::AtRbpOffset),
                _ => RegRule::Unsupported,
            }
        }
        _ => RegRule::Unsupported,
    }
}

/// The operations of an expression; empty if it does not parse or is longer than any pattern.
fn operations(mut bytes: R<'_>, encoding: gimli::Encoding) -> Vec<Operation<R<'_>>> {
    let mut ops = Vec::new();
    while !bytes.is_empty() {
        match Operation::parse(&mut bytes, encoding) {
            Ok(op) if ops.len() < MAX_EXPRESSION_OPS => ops.push(op),
            _ => return Vec::new(),
        }
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(bytes: &[u8]) -> Vec<Operation<R<'_>>> {
        let encoding = gimli::Encoding {
            address_size: 8,
            format: gimli::Format::Dwarf32,
            version: 1,
        };
        operations(EndianSlice::new(bytes, LittleEndian), encoding)
    }

    #[test]
    fn recognises_the_plt_expression() {
        // breg7 8; breg16 0; lit15; and; lit11; ge; lit3; shl; plus
        let plt = [0x77, 8, 0x80, 0, 0x3f, 0x1a, 0x3b, 0x2a, 0x33, 0x24, 0x22];
        assert_eq!(
            cfa_expression(&ops(&plt)),
            CfaRule::Plt {
                rsp_offset: 8,
                threshold: 11
            }
        );
        let mut lit10 = plt;
        lit10[6] = 0x3a;
        assert_eq!(
            cfa_expression(&ops(&lit10)),
            CfaRule::Plt {
                rsp_offset: 8,
                threshold: 10
            }
        );
        let mut other = plt;
        other[9] = 0x25; // shr
        assert_eq!(cfa_expression(&ops(&other)), CfaRule::Unsupported);
    }

    #[test]
    fn recognises_dereferencing_expressions() {
        // breg6 -40; deref
        assert_eq!(
            cfa_expression(&ops(&[0x76, 0x58, 0x06])),
            CfaRule::DerefRbp {
                offset: -40,
                add: 0
            }
        );
        // breg7 152; deref; plus_uconst 8
        assert_eq!(
            cfa_expression(&ops(&[0x77, 0x98, 0x01, 0x06, 0x23, 8])),
            CfaRule::DerefRsp {
                offset: 152,
                add: 8
            }
        );
        // breg9 0; deref: another register
        assert_eq!(cfa_expression(&ops(&[0x79, 0, 0x06])), CfaRule::Unsupported);
        // truncated
        assert_eq!(cfa_expression(&ops(&[0x77])), CfaRule::Unsupported);
    }

    #[test]
    fn entry_walk_stops_at_bad_lengths() {
        let mut stats = CfiStats::default();
        // A CIE (id 0) of 8 bytes, then an FDE with a length running past the end.
        let data = [
            8, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 0xff, 0, 0, 0, 9, 0, 0, 0,
        ];
        assert!(entry_offsets(&data, true, &mut stats).is_empty());
        assert_eq!(stats.errors, 1);
    }
}
