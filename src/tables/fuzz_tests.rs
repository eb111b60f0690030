//! Property test of building a table from an untrusted file, as the extractor does (extract,
//! then encode): truncated, corrupt and hostile CFI never panics, never hangs and stays within
//! memory bounds proportional to the file, and the encoded lookup agrees with the rows.

use std::time::{Duration, Instant};

use crate::cfi::tests::{build, scratch, LIBC};
use crate::cfi::{extract_from_bytes, MAX_CIE_BYTES};
use crate::elf::ElfImage;
use crate::unwind::rng::Rng;
use crate::unwind::{CompactRow, CompactTable};

/// File ranges of the CFI sections of an ELF image.
fn cfi_ranges(data: &[u8]) -> Vec<(usize, usize)> {
    let mut image = ElfImage::parse(data).expect("parse");
    [".eh_frame", ".eh_frame_hdr", ".debug_frame"]
        .iter()
        .filter_map(|name| image.section(name))
        .map(|s| {
            let start = s.data.as_ptr() as usize - data.as_ptr() as usize;
            (start, start + s.data.len())
        })
        .filter(|(s, e)| e > s)
        .collect()
}

/// One random corruption of `data` inside `ranges`, or (when `truncate`) of the whole file.
fn mutate(rng: &mut Rng, data: &mut Vec<u8>, ranges: &[(usize, usize)], truncate: bool) {
    let (start, end) = ranges[rng.below(ranges.len() as u64) as usize];
    let at = |rng: &mut Rng| start + rng.below((end - start) as u64) as usize;
    match rng.below(if truncate { 6 } else { 5 }) {
        // Flip a few bytes.
        0 => {
            for _ in 0..1 + rng.below(8) {
                let i = at(rng);
                data[i] ^= 1 << rng.below(8);
            }
        }
        // Random bytes over a stretch.
        1 => {
            let i = at(rng);
            for b in data
                .iter_mut()
                .take(end)
                .skip(i)
                .take(1 + rng.below(64) as usize)
            {
                *b = rng.next() as u8;
            }
        }
        // A length field (or anything 4-aligned) becomes huge, zero or off by a little.
        2 => {
            let i = at(rng) & !3;
            let value: u32 = match rng.below(4) {
                0 => 0xffff_ffff,
                1 => 0,
                2 => rng.next() as u32,
                _ => {
                    u32::from_le_bytes(data[i..i + 4].try_into().unwrap_or([0; 4])).wrapping_add(4)
                }
            };
            if i + 4 <= end {
                data[i..i + 4].copy_from_slice(&value.to_le_bytes());
            }
        }
        // The section ends early (zeroed tail).
        3 => {
            let i = at(rng);
            data[i..end].fill(0);
        }
        // A chunk copied over another place (duplicate, overlapping FDEs).
        4 => {
            let (from, to) = (at(rng), at(rng));
            let len = (1 + rng.below(256) as usize).min(end - from).min(end - to);
            data.copy_within(from..from + len, to);
        }
        // The whole file truncated.
        _ => data.truncate(rng.below(data.len() as u64) as usize),
    }
}

/// Extracts from `data`, checking time and size bounds, and that the compact lookup agrees.
fn check(rng: &mut Rng, data: &[u8], limit: Duration) {
    let started = Instant::now();
    let Ok(table) = extract_from_bytes(data) else {
        return;
    };
    assert!(
        started.elapsed() < limit,
        "extraction took {:?}",
        started.elapsed()
    );
    assert!(
        table.rows.len() <= data.len() + 2,
        "{} rows",
        table.rows.len()
    );
    assert!(
        table.rows.windows(2).all(|w| w[0].offset < w[1].offset),
        "rows sorted"
    );
    let Ok(compact) = CompactTable::encode(&table.rows) else {
        return;
    };
    let direct = compact.direct_buckets() as usize;
    assert!(direct <= data.len() / 1024 + 2);
    assert!(compact.buckets().len() <= direct + table.rows.len() / 16 + 1);
    let (Some(first), Some(last)) = (table.rows.first(), table.rows.last()) else {
        return;
    };
    for _ in 0..200 {
        let offset = first.offset.saturating_sub(64) + rng.below(last.offset - first.offset + 128);
        assert_eq!(
            compact.lookup(offset),
            table.lookup(offset).and_then(CompactRow::of)
        );
    }
}

#[test]
fn corrupt_cfi_never_panics_or_hangs() {
    let dir = scratch("fuzz");
    let path = build(
        &dir,
        "unwind_prologues",
        "fx",
        &["-O2", "-fomit-frame-pointer", "-g"],
    );
    let original = std::fs::read(path).expect("read fixture");
    let ranges = cfi_ranges(&original);
    assert!(ranges.len() >= 2);
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    let started = Instant::now();
    for round in 0..4000 {
        let mut data = original.clone();
        // Most rounds stack several corruptions.
        for _ in 0..1 + rng.below(4) {
            if data.len() < original.len() {
                break;
            }
            mutate(&mut rng, &mut data, &ranges, true);
        }
        check(&mut rng, &data, Duration::from_secs(2));
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "stuck at round {round}"
        );
    }
}

#[test]
fn corrupt_libc_cfi_never_panics_or_hangs() {
    let original = std::fs::read(LIBC).expect("read libc");
    let ranges = cfi_ranges(&original);
    let mut rng = Rng(0xfeed_f00d_dead_beef);
    for _ in 0..24 {
        let mut data = original.clone();
        for _ in 0..1 + rng.below(16) {
            mutate(&mut rng, &mut data, &ranges, false);
        }
        check(&mut rng, &data, Duration::from_secs(10));
    }
}

#[test]
fn hostile_cfi_is_bounded() {
    let dir = scratch("hostile");
    let path = build(
        &dir,
        "unwind_prologues",
        "fx",
        &["-O2", "-fomit-frame-pointer"],
    );
    let original = std::fs::read(path).expect("read fixture");
    let mut image = ElfImage::parse(&original).expect("parse");
    let eh = image.section(".eh_frame").expect(".eh_frame");
    let start = eh.data.as_ptr() as usize - original.as_ptr() as usize;
    let len = eh.data.len();

    // Every FDE claims the whole address space: rows stay inside the text segment.
    let mut data = original.clone();
    let mut at = start;
    while at + 24 <= start + len {
        let length = u32::from_le_bytes(data[at..at + 4].try_into().unwrap_or([0; 4])) as usize;
        let id = u32::from_le_bytes(data[at + 4..at + 8].try_into().unwrap_or([0; 4]));
        if length == 0 {
            break;
        }
        if id != 0 {
            // pcrel|sdata4 initial location stays; the range (sdata4) becomes huge.
            data[at + 12..at + 16].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
        }
        at += 4 + length;
    }
    let table = extract_from_bytes(&data).expect("extract");
    assert!(table.rows.len() < 1000);
    let compact = CompactTable::encode(&table.rows).expect("compact");
    assert!(compact.bytes() <= 256 * (original.len() / 1024 + 2));

    // A CIE full of instructions (DW_CFA_nop) replayed by every FDE is refused beyond the cap.
    let mut data = original.clone();
    let cie_len = u32::from_le_bytes(data[start..start + 4].try_into().unwrap_or([0; 4])) as usize;
    let grown = (len - 8).min(MAX_CIE_BYTES + 64);
    if grown > cie_len {
        data[start..start + 4].copy_from_slice(&(grown as u32).to_le_bytes());
        data[start + 4 + cie_len..start + 4 + grown].fill(0);
    }
    let started = Instant::now();
    let _ = extract_from_bytes(&data);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn eh_frame_hdr_recovers_fdes_after_an_early_terminator() {
    let dir = scratch("hdr");
    let path = build(
        &dir,
        "unwind_prologues",
        "fx",
        &["-O2", "-fomit-frame-pointer"],
    );
    let original = std::fs::read(path).expect("read fixture");
    let reference = extract_from_bytes(&original).expect("extract");
    assert_eq!(reference.stats.fdes_from_eh_frame_hdr, 0);

    // The first entry is a CIE; zero the length of the FDE after it: a terminator.
    let mut image = ElfImage::parse(&original).expect("parse");
    let eh = image.section(".eh_frame").expect(".eh_frame");
    let start = eh.data.as_ptr() as usize - original.as_ptr() as usize;
    let cie_len = u32::from_le_bytes(eh.data[..4].try_into().unwrap_or([0; 4])) as usize;
    let fde = start + 4 + cie_len;
    let mut data = original.clone();
    data[fde..fde + 4].fill(0);

    let table = extract_from_bytes(&data).expect("extract");
    assert!(table.stats.fdes_from_eh_frame_hdr >= 5, "{:?}", table.stats);
    assert_eq!(table.stats.eh_frame_fdes + 1, reference.stats.eh_frame_fdes);
    // Everything but the cut FDE's range reads as before.
    let lost = reference
        .rows
        .iter()
        .filter(|r| table.lookup(r.offset) != Some(r))
        .count();
    assert!(lost <= 2, "{lost} rows differ");
}
