//! Test support: `readelf --debug-dump=frames-interp` as ground truth for extracted rows.
//!
//! This module owns parsing readelf's interpreted CFI tables and comparing them row by row with
//! an [`UnwindTable`]. It is compiled for tests only.

use std::path::Path;
use std::process::Command;

use super::UnwindTable;
use crate::elf::ElfImage;
use crate::unwind_rows::{CfaRule, RaRule, RegRule, UnwindRow};

/// One row as readelf prints it: the CFA column and the rbp and ra columns (absent when the
/// FDE never mentions the register).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadelfRow {
    pub addr: u64,
    pub cfa: String,
    pub rbp: Option<String>,
    pub ra: Option<String>,
}

/// One FDE with its rows (the CIE's initial row when readelf printed none).
#[derive(Clone, Debug)]
pub struct ReadelfFde {
    /// `.eh_frame` or `.debug_frame`.
    pub section: String,
    pub start: u64,
    pub end: u64,
    pub rows: Vec<ReadelfRow>,
}

/// Runs readelf on `path` and parses every FDE of every CFI section.
pub fn frames(path: &Path) -> Vec<ReadelfFde> {
    let output = Command::new("readelf")
        .args(["-W", "--debug-dump=frames-interp"])
        .arg(path)
        .output()
        .expect("run readelf");
    parse(&String::from_utf8_lossy(&output.stdout))
}

pub fn parse(text: &str) -> Vec<ReadelfFde> {
    let mut fdes = Vec::new();
    let mut cie_rows: Vec<(String, ReadelfRow)> = Vec::new();
    let mut section = String::new();
    // The entry being read: an FDE (index into `fdes`) or a CIE (its offset).
    let mut current: Option<Result<usize, String>> = None;
    let mut columns: Vec<String> = Vec::new();
    for line in text.lines() {
        // A register-rule cell can hold a space (`r10 (r10)`): glue `(...)` to its cell.
        let mut tokens: Vec<String> = Vec::new();
        for token in line.split_whitespace() {
            match tokens.last_mut() {
                Some(last) if token.starts_with('(') => {
                    last.push(' ');
                    last.push_str(token);
                }
                _ => tokens.push(token.to_string()),
            }
        }
        let tokens: Vec<&str> = tokens.iter().map(String::as_str).collect();
        if let Some(rest) = line.strip_prefix("Contents of the ") {
            section = rest.split_whitespace().next().unwrap_or("").to_string();
            // CIE offsets are per section.
            cie_rows.clear();
            continue;
        }
        match tokens.as_slice() {
            [offset, _, _, "CIE", ..] => {
                current = Some(Err((*offset).to_string()));
                columns.clear();
            }
            [_, _, _, "FDE", cie, pc, ..] => {
                let cie = cie.trim_start_matches("cie=");
                let (start, end) = pc
                    .trim_start_matches("pc=")
                    .split_once("..")
                    .expect("pc range");
                let start = u64::from_str_radix(start, 16).expect("hex");
                let end = u64::from_str_radix(end, 16).expect("hex");
                let initial = cie_rows
                    .iter()
                    .find(|(o, _)| o.trim_start_matches('0') == cie.trim_start_matches('0'));
                fdes.push(ReadelfFde {
                    section: section.clone(),
                    start,
                    end,
                    rows: Vec::new(),
                });
                if let Some((_, row)) = initial {
                    // Replaced by the printed rows, if any.
                    fdes.last_mut().expect("pushed").rows.push(ReadelfRow {
                        addr: start,
                        ..row.clone()
                    });
                }
                current = Some(Ok(fdes.len() - 1));
                columns.clear();
            }
            ["LOC", rest @ ..] => columns = rest.iter().map(|s| s.to_string()).collect(),
            [addr, cells @ ..] if addr.len() == 16 && !columns.is_empty() => {
                let Ok(addr) = u64::from_str_radix(addr, 16) else {
                    continue;
                };
                let cell = |name: &str| {
                    let i = columns.iter().position(|c| c == name)?;
                    cells.get(i).map(|s| s.to_string())
                };
                let row = ReadelfRow {
                    addr,
                    cfa: cell("CFA").unwrap_or_default(),
                    rbp: cell("rbp"),
                    ra: cell("ra"),
                };
                match &current {
                    Some(Ok(i)) => {
                        let fde = &mut fdes[*i];
                        if fde.rows.first().is_some_and(|r| r.addr == addr) && fde.rows.len() == 1 {
                            fde.rows.clear();
                        }
                        fde.rows.push(row);
                    }
                    Some(Err(cie)) if !cie_rows.iter().any(|(o, _)| o == cie) => {
                        cie_rows.push((cie.clone(), row));
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    fdes
}

/// Whether our row agrees with readelf's.
pub fn agrees(ours: &UnwindRow, theirs: &ReadelfRow) -> bool {
    let cfa = match (ours.cfa, theirs.cfa.as_str()) {
        (CfaRule::RspOffset(o), s) => s == format!("rsp+{o}") || s == format!("rsp{o}"),
        (CfaRule::RbpOffset(o), s) => s == format!("rbp+{o}") || s == format!("rbp{o}"),
        (CfaRule::Plt { .. } | CfaRule::DerefRsp { .. } | CfaRule::DerefRbp { .. }, s) => {
            s == "exp"
        }
        (CfaRule::Unsupported, s) => !s.starts_with("rsp") && !s.starts_with("rbp"),
        (CfaRule::NoInfo, _) => false,
    };
    let rbp = match (ours.rbp, theirs.rbp.as_deref()) {
        (RegRule::Unchanged, None | Some("u" | "s")) => true,
        (RegRule::AtCfaOffset(o), Some(s)) => s == format!("c{o:+}"),
        (RegRule::AtRbpOffset(_), Some(s)) => s == "exp",
        (RegRule::Unsupported, Some(s)) => !s.starts_with('c') && s != "u" && s != "s",
        _ => false,
    };
    let ra = match (ours.ra, theirs.ra.as_deref()) {
        (RaRule::AtCfaMinus8, Some("c-8")) => true,
        (RaRule::Outermost, None | Some("u")) => true,
        (RaRule::SignalFrame, Some("exp")) => return theirs.cfa == "exp",
        (RaRule::Unsupported, Some(s)) => s != "c-8",
        _ => false,
    };
    cfa && rbp && ra
}

/// Compares every row readelf prints for `section` with `table`, at the row's first and last
/// byte. Returns the number of rows checked and a description of each disagreement. Rows in
/// ranges `skip` says are ours to override (outermost by name, FDEs shadowed by another) are
/// left out.
pub fn compare(
    image: &ElfImage<'_>,
    table: &UnwindTable,
    fdes: &[ReadelfFde],
    section: &str,
    skip: impl Fn(u64) -> bool,
) -> (usize, Vec<String>) {
    let mut checked = 0;
    let mut mismatches = Vec::new();
    for fde in fdes.iter().filter(|f| f.section == section) {
        for (i, row) in fde.rows.iter().enumerate() {
            let next = fde.rows.get(i + 1).map_or(fde.end, |r| r.addr).min(fde.end);
            if row.addr >= next {
                continue;
            }
            for vaddr in [row.addr, next - 1] {
                let Some((offset, _)) = image.vaddr_to_offset(vaddr) else {
                    continue;
                };
                if skip(offset) {
                    continue;
                }
                checked += 1;
                match table.lookup(offset) {
                    Some(ours) if agrees(ours, row) => {}
                    ours => mismatches.push(format!(
                        "{section} vaddr {vaddr:#x} (offset {offset:#x}): ours {ours:?}, \
                         readelf {row:?}"
                    )),
                }
            }
        }
    }
    (checked, mismatches)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cie_defaults_and_fde_tables() {
        let text = "\
Contents of the .eh_frame section:

00000000 0000000000000014 00000000 CIE \"zR\" cf=1 df=-8 ra=16
   LOC           CFA      ra    
0000000000000000 rsp+8    c-8   

00000018 0000000000000024 0000001c FDE cie=00000000 pc=0000000000026000..0000000000026360
   LOC           CFA      rbp   ra    
0000000000026000 rsp+16   u     c-8   
0000000000026006 rsp+24   c-16  c-8   

00000040 0000000000000014 00000044 FDE cie=00000000 pc=0000000000026360..0000000000026370
";
        let fdes = parse(text);
        assert_eq!(fdes.len(), 2);
        assert_eq!(fdes[0].section, ".eh_frame");
        assert_eq!(fdes[0].rows.len(), 2);
        assert_eq!(fdes[0].rows[1].rbp.as_deref(), Some("c-16"));
        assert_eq!(fdes[1].rows.len(), 1);
        assert_eq!(fdes[1].rows[0].addr, 0x26360);
        assert_eq!(fdes[1].rows[0].cfa, "rsp+8");
        assert_eq!(fdes[1].rows[0].ra.as_deref(), Some("c-8"));
    }
}
