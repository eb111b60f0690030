//! Line numbers from a code object's line table, which changed format in 3.11:
//!
//! - 3.10 (`co_linetable`, PEP 626): pairs of (bytes of code: unsigned, line delta: signed,
//!   -128 meaning "no line"), from line `co_firstlineno` and offset 0.
//! - 3.11+ (the location table, CPython's `Objects/locations.md`): entries starting with a
//!   byte with bit 7 set: bits 3-6 a code, bits 0-2 the length - 1 in code units. Code 15: no
//!   location; 14: long form (signed varint line delta, then end line, column and end column
//!   varints); 13: no columns (signed varint line delta); 10-12: one line, delta code - 10,
//!   then two column bytes; 0-9: short form, same line, one column byte.
//!
//! Both take the position in bytes of code from the start of the bytecode and return the line,
//! or `None` where the table has none.

/// The line of byte offset `offset` in a 3.10 `co_linetable`.
pub fn line_310(table: &[u8], first_line: u32, offset: u64) -> Option<u32> {
    let (mut start, mut line) = (0u64, i64::from(first_line));
    for pair in table.chunks_exact(2) {
        let end = start + u64::from(pair[0]);
        let delta = pair[1] as i8;
        let current = if delta == -128 {
            None
        } else {
            line += i64::from(delta);
            Some(line)
        };
        if start <= offset && offset < end {
            return current.and_then(|l| u32::try_from(l).ok());
        }
        start = end;
    }
    None
}

/// The line of byte offset `offset` in a 3.11+ location table.
pub fn line_311(table: &[u8], first_line: u32, offset: u64) -> Option<u32> {
    let unit = offset / 2;
    let mut at = 0usize;
    let mut line = i64::from(first_line);
    let mut start = 0u64;
    while at < table.len() {
        let first = table[at];
        if first & 0x80 == 0 {
            return None; // not at an entry's start: a table this reader does not follow
        }
        at += 1;
        let code = (first >> 3) & 15;
        let length = u64::from(first & 7) + 1;
        let mut this_line = Some(());
        match code {
            15 => this_line = None,
            14 => {
                line += signed_varint(table, &mut at)?;
                for _ in 0..3 {
                    varint(table, &mut at)?;
                }
            }
            13 => line += signed_varint(table, &mut at)?,
            10..=12 => {
                line += i64::from(code) - 10;
                at += 2;
            }
            _ => at += 1,
        }
        if start <= unit && unit < start + length {
            return this_line.and_then(|()| u32::try_from(line).ok());
        }
        start += length;
    }
    None
}

fn varint(table: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    let mut shift = 0;
    loop {
        let b = *table.get(*at)?;
        *at += 1;
        value |= u64::from(b & 63) << shift;
        if b & 64 == 0 || shift > 56 {
            return Some(value);
        }
        shift += 6;
    }
}

fn signed_varint(table: &[u8], at: &mut usize) -> Option<i64> {
    let v = varint(table, at)?;
    let magnitude = (v >> 1) as i64;
    Some(if v & 1 != 0 { -magnitude } else { magnitude })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pep_626_pairs() {
        // 4 bytes on line 10 (first line), 6 bytes at +2 (12), 2 bytes with no line, 4 at -1 (11)
        let table = [4, 0, 6, 2, 2, 0x80, 4, 0xff];
        assert_eq!(line_310(&table, 10, 0), Some(10));
        assert_eq!(line_310(&table, 10, 5), Some(12));
        assert_eq!(line_310(&table, 10, 10), None);
        assert_eq!(line_310(&table, 10, 13), Some(11));
        assert_eq!(line_310(&table, 10, 16), None);
    }

    #[test]
    fn location_table_entries() {
        let table = [
            0x80 | (13 << 3) | 1, // 2 units, no columns, line +2
            4,                    // svarint 2
            0x80 | (11 << 3),     // 1 unit, one line, +1
            0,
            5,
            0x80 | (15 << 3) | 2, // 3 units, no location
            0x80 | (14 << 3),     // 1 unit, long form, line -1
            3,
            0,
            1,
            1,
            0x80 | 2, // short form, same line
            7,
        ];
        assert_eq!(line_311(&table, 20, 0), Some(22));
        assert_eq!(line_311(&table, 20, 2), Some(22));
        assert_eq!(line_311(&table, 20, 4), Some(23));
        assert_eq!(line_311(&table, 20, 6), None);
        assert_eq!(line_311(&table, 20, 12), Some(22));
        assert_eq!(line_311(&table, 20, 14), Some(22));
        assert_eq!(line_311(&table, 20, 16), Some(22));
        assert_eq!(line_311(&table, 20, 20), None);
    }
}
