//! `/proc/PID/maps`: parsing lines and translating addresses through the executable mappings.
//!
//! Pure code over text, so every odd line the kernel can print is unit-tested here.

use std::fmt;

/// What a mapping is backed by.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Backing {
    /// A file; `deleted` when the kernel appended ` (deleted)` (the file was unlinked or
    /// replaced after it was mapped).
    File { path: String, deleted: bool },
    /// `[vdso]`, `[vsyscall]`, `[heap]`, `[stack]`, `[anon:name]`, ...
    Special(String),
    /// No name at all (anonymous memory, JIT code).
    Anonymous,
}

/// One line of `/proc/PID/maps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub readable: bool,
    pub writable: bool,
    pub executable: bool,
    /// File offset of `start`.
    pub offset: u64,
    /// Device as `makedev(major, minor)` with the kernel's encoding.
    pub dev: u64,
    pub inode: u64,
    pub backing: Backing,
}

/// A line that is not in the kernel's format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub line: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unexpected /proc/PID/maps line: {:?}", self.line)
    }
}

impl std::error::Error for ParseError {}

/// `makedev` as glibc encodes it (libc's), so it compares equal to `stat`'s `st_dev`.
pub fn makedev(major: u64, minor: u64) -> u64 {
    libc::makedev(major as libc::c_uint, minor as libc::c_uint)
}

impl Mapping {
    /// Parses `start-end perms offset major:minor inode   path`. The path may contain spaces
    /// and is everything after the inode column, minus the padding.
    pub fn parse(line: &str) -> Result<Self, ParseError> {
        let err = || ParseError {
            line: line.to_string(),
        };
        let mut rest = line;
        let mut field = || -> Option<&str> {
            let trimmed = rest.trim_start_matches(' ');
            let end = trimmed.find(' ').unwrap_or(trimmed.len());
            let (f, r) = trimmed.split_at(end);
            rest = r;
            (!f.is_empty()).then_some(f)
        };
        let range = field().ok_or_else(err)?;
        let perms = field().ok_or_else(err)?.as_bytes();
        let offset = field().ok_or_else(err)?;
        let dev = field().ok_or_else(err)?;
        let inode = field().ok_or_else(err)?;
        let (start, end) = range.split_once('-').ok_or_else(err)?;
        let hex = |s: &str| u64::from_str_radix(s, 16).map_err(|_| err());
        let (major, minor) = dev.split_once(':').ok_or_else(err)?;
        if perms.len() != 4 {
            return Err(err());
        }
        let path = rest.trim_start_matches(' ');
        let backing = if path.is_empty() {
            Backing::Anonymous
        } else if path.starts_with('[') && path.ends_with(']') {
            Backing::Special(path.to_string())
        } else if let Some(stripped) = path.strip_suffix(" (deleted)") {
            Backing::File {
                path: stripped.to_string(),
                deleted: true,
            }
        } else {
            Backing::File {
                path: path.to_string(),
                deleted: false,
            }
        };
        let mapping = Mapping {
            start: hex(start)?,
            end: hex(end)?,
            readable: perms[0] == b'r',
            writable: perms[1] == b'w',
            executable: perms[2] == b'x',
            offset: hex(offset)?,
            dev: makedev(hex(major)?, hex(minor)?),
            inode: inode.parse().map_err(|_| err())?,
            backing,
        };
        if mapping.end < mapping.start {
            return Err(err());
        }
        Ok(mapping)
    }

    pub fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }

    /// Offset in the backing file of the byte at `addr` (which must be inside the mapping).
    pub fn file_offset(&self, addr: u64) -> u64 {
        addr - self.start + self.offset
    }

    /// The path of a file-backed mapping, or the special name (`[vdso]`).
    pub fn name(&self) -> Option<&str> {
        match &self.backing {
            Backing::File { path, .. } => Some(path),
            Backing::Special(name) => Some(name),
            Backing::Anonymous => None,
        }
    }
}

/// The executable mappings of one process, sorted by address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecutableMappings {
    mappings: Vec<Mapping>,
}

/// What parsing a whole maps file gave.
#[derive(Debug, Default)]
pub struct ParsedMaps {
    pub executable: ExecutableMappings,
    /// Lines that did not parse (counted, not fatal).
    pub bad_lines: usize,
}

/// Parses a whole maps file, keeping the executable mappings.
pub fn parse_maps(text: &str) -> ParsedMaps {
    let mut parsed = ParsedMaps::default();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match Mapping::parse(line) {
            Ok(m) if m.executable => parsed.executable.mappings.push(m),
            Ok(_) => {}
            Err(_) => parsed.bad_lines += 1,
        }
    }
    parsed.executable.mappings.sort_by_key(|m| m.start);
    parsed
}

impl ExecutableMappings {
    pub fn from_mappings(mut mappings: Vec<Mapping>) -> Self {
        mappings.retain(|m| m.executable);
        mappings.sort_by_key(|m| m.start);
        Self { mappings }
    }

    /// The mapping containing `addr`, if any.
    pub fn find(&self, addr: u64) -> Option<&Mapping> {
        let i = self.mappings.partition_point(|m| m.start <= addr);
        let candidate = self.mappings.get(i.checked_sub(1)?)?;
        candidate.contains(addr).then_some(candidate)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Mapping> {
        self.mappings.iter()
    }

    pub fn len(&self) -> usize {
        self.mappings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.mappings.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0c8a00000-55d0c8a02000 r--p 00000000 fd:01 1234   /usr/bin/my app
55d0c8a02000-55d0c8a05000 r-xp 00002000 fd:01 1234   /usr/bin/my app
7f0000000000-7f0000100000 r-xp 00028000 08:02 99     /usr/lib/x86_64-linux-gnu/libc.so.6
7f0000200000-7f0000201000 r-xp 00000000 00:01 77     /memfd:jit (deleted)
7f0000300000-7f0000301000 r-xp 00000000 00:00 0      [anon:v8 code]
7f0000400000-7f0000401000 rwxp 00000000 00:00 0
7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0      [vdso]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
";

    #[test]
    fn parses_paths_with_spaces_and_deleted_files() {
        let parsed = parse_maps(MAPS);
        assert_eq!(parsed.bad_lines, 0);
        let m = parsed.executable.find(0x55d0c8a02010).unwrap();
        assert_eq!(
            m.backing,
            Backing::File {
                path: "/usr/bin/my app".into(),
                deleted: false
            }
        );
        assert_eq!(m.file_offset(0x55d0c8a02010), 0x2010);
        assert_eq!(m.inode, 1234);
        assert_eq!(m.dev, makedev(0xfd, 1));
        let memfd = parsed.executable.find(0x7f0000200000).unwrap();
        assert_eq!(
            memfd.backing,
            Backing::File {
                path: "/memfd:jit".into(),
                deleted: true
            }
        );
    }

    #[test]
    fn special_and_anonymous_mappings() {
        let parsed = parse_maps(MAPS);
        let anon = parsed.executable.find(0x7f0000300000).unwrap();
        assert_eq!(anon.backing, Backing::Special("[anon:v8 code]".into()));
        assert_eq!(
            parsed.executable.find(0x7f0000400fff).unwrap().backing,
            Backing::Anonymous
        );
        assert_eq!(
            parsed.executable.find(0x7ffd00000010).unwrap().name(),
            Some("[vdso]")
        );
        assert_eq!(
            parsed.executable.len(),
            7,
            "only executable mappings are kept"
        );
    }

    #[test]
    fn address_lookup_boundaries() {
        let parsed = parse_maps(MAPS);
        let maps = &parsed.executable;
        assert!(
            maps.find(0x55d0c8a01fff).is_none(),
            "non-executable mapping"
        );
        assert!(maps.find(0x55d0c8a02000).is_some(), "first byte");
        assert!(maps.find(0x55d0c8a04fff).is_some(), "last byte");
        assert!(maps.find(0x55d0c8a05000).is_none(), "one past the end");
        assert!(maps.find(0).is_none());
        assert!(maps.find(u64::MAX).is_none());
    }

    #[test]
    fn bad_lines_are_counted_not_fatal() {
        let parsed = parse_maps("garbage\n1000-2000 r-xp zz 00:00 0\n2000-1000 r-xp 0 00:00 0\n1000-2000 r-xp 0 00:00 0 /x\n");
        assert_eq!(parsed.bad_lines, 3);
        assert_eq!(parsed.executable.len(), 1);
    }

    #[test]
    fn makedev_matches_glibc() {
        assert_eq!(makedev(8, 2), 0x802);
        assert_eq!(makedev(0xfd, 1), 0xfd01);
        assert_eq!(makedev(0x1234, 0x56789), 0x1000_5672_3489);
    }

    #[test]
    fn real_maps_agree_with_stat() {
        use std::os::unix::fs::MetadataExt;
        let text = std::fs::read_to_string("/proc/self/maps").unwrap();
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let parsed = parse_maps(&text);
        assert_eq!(parsed.bad_lines, 0);
        let ours = parsed
            .executable
            .iter()
            .find(|m| m.name() == exe.to_str())
            .expect("the test binary maps itself executable");
        let meta = std::fs::metadata(&exe).unwrap();
        assert_eq!((ours.dev, ours.inode), (meta.dev(), meta.ino()));
    }
}
