//! The entries one process needs in `pid_mappings` ([`wanted`]): its marker and, for each
//! executable mapping, the aligned blocks covering it, each carrying the mapping's file, flags,
//! load bias and unwind table; and the writes that turn the entries it has into those
//! ([`changes`]). Pure, so both are tested without a map; applying the writes is the
//! maintainer's.

use std::collections::BTreeMap;

use super::prefixes::{cover, marker_key};
use crate::layout::{consts, PidMappingKey, PidMappingValue, TableRef};
use crate::process::maps::Mapping;

/// A process's entries, by key.
pub type Entries = BTreeMap<PidMappingKey, PidMappingValue>;

/// What the entries of one mapping name besides its addresses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Target {
    /// The mapped file (0 for none: anonymous code).
    pub file_id: u32,
    /// `MAPPING_*` flags (anonymous, table pending).
    pub flags: u16,
    /// The file's unwind table (none: frames in it are walked with frame pointers).
    pub table: TableRef,
}

/// The entries of process `pid` (as of its exec `exec_gen`) with these executable mappings: the
/// marker, which matches every address no mapping covers, and the fewest aligned blocks
/// covering each mapping exactly.
pub fn wanted<'a>(
    pid: u32,
    exec_gen: u64,
    mappings: impl IntoIterator<Item = (&'a Mapping, Target)>,
) -> Entries {
    let mut entries = Entries::new();
    entries.insert(
        marker_key(pid),
        PidMappingValue {
            flags: consts::MAPPING_MARKER as u16,
            prefixlen: consts::PID_MAPPING_MARKER_PREFIX as u16,
            exec_gen,
            ..Default::default()
        },
    );
    for (mapping, target) in mappings {
        let bias = mapping.start.wrapping_sub(mapping.offset);
        for block in cover(mapping.start, mapping.end) {
            let key = block.key(pid);
            let value = PidMappingValue {
                file_id: target.file_id,
                flags: target.flags,
                prefixlen: key.prefixlen as u16,
                bias,
                prefix_addr: block.start,
                exec_gen,
                table: target.table,
                map_start: mapping.start,
                map_end: mapping.end,
            };
            entries.insert(key, value);
        }
    }
    entries
}

/// The map writes that turn a process's entries from `had` into `want`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Keys `had` holds and `want` lacks. Only keys of `had`, which were written: a key never
    /// written is never deleted.
    pub deletes: Vec<PidMappingKey>,
    /// Entries `had` lacks or holds with another value.
    pub upserts: Vec<(PidMappingKey, PidMappingValue)>,
}

/// The writes from `had` to `want`, in key order; none when they are equal.
pub fn changes(had: &Entries, want: &Entries) -> Changes {
    Changes {
        deletes: had
            .keys()
            .filter(|key| !want.contains_key(key))
            .copied()
            .collect(),
        upserts: want
            .iter()
            .filter(|(key, value)| had.get(key) != Some(value))
            .map(|(key, value)| (*key, *value))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::maps::parse_maps;

    /// Two executable file mappings, app (from file offset 0x1000) and libc.
    const MAPS: &str = "\
401000-402000 r-xp 00001000 08:01 11 /bin/app
7f0000000000-7f0000003000 r-xp 00000000 08:01 22 /lib/libc.so.6
";

    fn mappings() -> Vec<Mapping> {
        parse_maps(MAPS).executable.iter().cloned().collect()
    }

    fn target(file_id: u32) -> Target {
        Target {
            file_id,
            flags: 0,
            table: TableRef {
                first: file_id * 10,
                direct: 3,
                base: 0,
            },
        }
    }

    #[test]
    fn a_process_without_mappings_needs_only_its_marker() {
        let entries = wanted(7, 42, []);
        let marker = entries[&marker_key(7)];
        assert_eq!(entries.len(), 1);
        assert_eq!(u64::from(marker.flags), consts::MAPPING_MARKER);
        assert_eq!(
            u64::from(marker.prefixlen),
            consts::PID_MAPPING_MARKER_PREFIX
        );
        assert_eq!((marker.exec_gen, marker.file_id), (42, 0));
    }

    #[test]
    fn each_mapping_is_covered_exactly_by_entries_naming_its_file() {
        let maps = mappings();
        let entries = wanted(7, 42, maps.iter().zip([target(1), target(2)]));
        // Marker + app (one 4 KiB block) + libc (8 KiB + 4 KiB blocks).
        let keys: Vec<PidMappingKey> = entries.keys().copied().collect();
        let mut expected = vec![
            marker_key(7),
            PidMappingKey::new(7, 0x7f00_0000_0000, 96 - 13),
            PidMappingKey::new(7, 0x7f00_0000_2000, 96 - 12),
            PidMappingKey::new(7, 0x401000, 96 - 12),
        ];
        expected.sort();
        assert_eq!(keys, expected);
        for (mapping, id) in maps.iter().zip([1, 2]) {
            let mut covered = 0;
            for (key, value) in entries.iter().filter(|(_, v)| v.file_id == id) {
                assert_eq!((key.pid(), key.addr()), (7, value.prefix_addr));
                assert_eq!(u32::from(value.prefixlen), key.prefixlen);
                assert_eq!(value.bias, mapping.start - mapping.offset);
                assert_eq!((value.exec_gen, value.table), (42, target(id).table));
                covered += 1u64 << (96 - key.prefixlen);
            }
            assert_eq!(covered, mapping.end - mapping.start, "file {id}");
        }
        assert_eq!(entries[&PidMappingKey::new(7, 0x401000, 84)].bias, 0x400000);
    }

    #[test]
    fn changes_delete_only_what_was_had_and_write_only_what_differs() {
        let maps = mappings();
        let had = wanted(7, 42, maps.iter().zip([target(1), target(2)]));
        assert_eq!(changes(&had, &had), Changes::default());

        // libc's table arrived (other value), app was unmapped (its key goes).
        let mut libc = target(2);
        libc.table.direct = 9;
        let want = wanted(7, 42, maps.iter().skip(1).zip([libc]));
        let diff = changes(&had, &want);
        assert_eq!(diff.deletes, vec![PidMappingKey::new(7, 0x401000, 84)]);
        assert!(diff.deletes.iter().all(|key| had.contains_key(key)));
        let written: Vec<u32> = diff.upserts.iter().map(|(_, v)| v.file_id).collect();
        assert_eq!(written, vec![2, 2], "the two libc blocks, not the marker");
        assert!(diff.upserts.iter().all(|(key, value)| want[key] == *value));

        // From nothing: every entry is written, nothing deleted.
        let fresh = changes(&Entries::new(), &want);
        assert!(fresh.deletes.is_empty());
        assert_eq!(fresh.upserts.len(), want.len());
    }
}
