//! pprof output: a [`Profile`] as a gzip-compressed `perftools.profiles.Profile`.
//!
//! This module owns the mapping from our data model onto pprof's deduplicated tables: one
//! `Mapping` per distinct [`Module`], one `Function` per distinct (name, module), one `Location`
//! per distinct (module, address, function), every string once in the string table. The wire
//! layout itself lives in [`crate::proto::pprof`].
//!
//! Addresses: a native frame's address is already a file offset, so its mapping starts at 0 with
//! file offset 0, which makes pprof's `address - memory_start + file_offset` the file offset
//! again. Kernel frames keep their kernel address and their mapping (`[kernel.kallsyms]`) is laid
//! out the same way, so it covers them.

use std::collections::HashMap;
use std::io::{self, Write};

use flate2::write::GzEncoder;
use flate2::Compression;
use prost::Message;

use crate::profile::{is_symbolized, Frame, Module, Profile};
use crate::proto::pprof as proto;

/// The profile, serialized and gzip-compressed, as `go tool pprof` reads it.
pub fn encode(profile: &Profile) -> Vec<u8> {
    let mut out = Vec::new();
    // SANITY: writing to a `Vec` cannot fail, and the encoder has no other source of errors.
    write(profile, &mut out).expect("gzip into a Vec cannot fail");
    out
}

/// Writes [`encode`]'s bytes to `out`.
pub fn write(profile: &Profile, out: &mut dyn Write) -> io::Result<()> {
    let bytes = to_proto(profile).encode_to_vec();
    let mut gzip = GzEncoder::new(out, Compression::default());
    gzip.write_all(&bytes)?;
    gzip.finish()?;
    Ok(())
}

/// The profile as an uncompressed pprof message.
///
/// Sample types are `samples/count` and `cpu/nanoseconds`; each sample carries a `pid` (numeric)
/// and a `thread` (string) label. Stacks sampled zero times are left out. Table ids are assigned
/// in first-seen order, so the same profile always encodes to the same bytes.
pub fn to_proto(profile: &Profile) -> proto::Profile {
    let mut builder = Builder::default();
    let samples_type = builder.value_type("samples", "count");
    let cpu_type = builder.value_type("cpu", "nanoseconds");
    let pid_key = builder.strings.intern("pid");
    let thread_key = builder.strings.intern("thread");

    let mut samples = Vec::with_capacity(profile.samples.len());
    for stack in profile.samples.iter().filter(|s| s.count > 0) {
        let location_id = stack
            .frames
            .iter()
            .map(|frame| builder.location(frame))
            .collect();
        let cpu_ns = stack.count.saturating_mul(profile.period_ns);
        let thread_name = builder.strings.intern(&stack.thread_name);
        samples.push(proto::Sample {
            location_id,
            value: vec![saturating_i64(stack.count), saturating_i64(cpu_ns)],
            label: vec![
                proto::Label {
                    key: pid_key,
                    num: i64::from(stack.pid),
                    ..Default::default()
                },
                proto::Label {
                    key: thread_key,
                    str: thread_name,
                    ..Default::default()
                },
            ],
        });
    }

    proto::Profile {
        default_sample_type: cpu_type.r#type,
        sample_type: vec![samples_type, cpu_type.clone()],
        sample: samples,
        mapping: builder
            .mappings
            .into_iter()
            .map(MappingEntry::finish)
            .collect(),
        location: builder.locations,
        function: builder.functions,
        string_table: builder.strings.strings,
        time_nanos: saturating_i64(profile.start_unix_ns),
        duration_nanos: saturating_i64(profile.duration_ns),
        period_type: Some(cpu_type),
        period: saturating_i64(profile.period_ns),
        ..Default::default()
    }
}

/// pprof values are signed; our counters are not. Anything past `i64::MAX` is clamped.
fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The string table: index 0 is `""`, every other string appears once.
struct StringTable {
    strings: Vec<String>,
    index: HashMap<String, i64>,
}

impl Default for StringTable {
    fn default() -> Self {
        StringTable {
            strings: vec![String::new()],
            index: HashMap::from([(String::new(), 0)]),
        }
    }
}

impl StringTable {
    fn intern(&mut self, s: &str) -> i64 {
        if let Some(&index) = self.index.get(s) {
            return index;
        }
        let index = saturating_i64(self.strings.len() as u64);
        self.strings.push(s.to_owned());
        self.index.insert(s.to_owned(), index);
        index
    }
}

/// A mapping under construction: its limit and `has_functions` depend on every frame in it.
struct MappingEntry {
    mapping: proto::Mapping,
    max_address: u64,
}

impl MappingEntry {
    fn finish(self) -> proto::Mapping {
        proto::Mapping {
            memory_limit: self.max_address.saturating_add(1),
            ..self.mapping
        }
    }
}

/// The deduplicated tables, filled frame by frame. Ids are 1-based positions in each table.
#[derive(Default)]
struct Builder<'a> {
    strings: StringTable,
    mappings: Vec<MappingEntry>,
    mapping_ids: HashMap<&'a Module, u64>,
    functions: Vec<proto::Function>,
    function_ids: HashMap<(&'a str, Option<&'a Module>), u64>,
    locations: Vec<proto::Location>,
    /// Keyed by (mapping id, address, function id).
    location_ids: HashMap<(u64, u64, u64), u64>,
}

impl<'a> Builder<'a> {
    fn value_type(&mut self, r#type: &str, unit: &str) -> proto::ValueType {
        proto::ValueType {
            r#type: self.strings.intern(r#type),
            unit: self.strings.intern(unit),
        }
    }

    /// The id of `frame`'s location, created (with its mapping and function) on first sight.
    fn location(&mut self, frame: &'a Frame) -> u64 {
        let mapping_id = frame
            .module
            .as_deref()
            .map_or(0, |module| self.mapping(module, frame));
        let function_id = self.function(frame);
        let key = (mapping_id, frame.address, function_id);
        if let Some(&id) = self.location_ids.get(&key) {
            return id;
        }
        let id = next_id(self.locations.len());
        self.locations.push(proto::Location {
            id,
            mapping_id,
            address: frame.address,
            line: vec![proto::Line {
                function_id,
                line: frame.source.as_ref().map_or(0, |s| i64::from(s.line)),
                ..Default::default()
            }],
            is_folded: false,
        });
        self.location_ids.insert(key, id);
        id
    }

    /// The id of `module`'s mapping, widened to cover `frame`.
    fn mapping(&mut self, module: &'a Module, frame: &Frame) -> u64 {
        let id = match self.mapping_ids.get(module) {
            Some(&id) => id,
            None => self.new_mapping(module),
        };
        // SANITY: ids are 1-based positions in `self.mappings`, handed out by `new_mapping`.
        let entry = &mut self.mappings[(id - 1) as usize];
        entry.max_address = entry.max_address.max(frame.address);
        entry.mapping.has_functions |= is_symbolized(&frame.function, Some(&module.path));
        id
    }

    fn new_mapping(&mut self, module: &'a Module) -> u64 {
        let id = next_id(self.mappings.len());
        let filename = self.strings.intern(&module.path);
        let build_id = module
            .build_id
            .as_deref()
            .map_or(0, |b| self.strings.intern(b));
        self.mappings.push(MappingEntry {
            mapping: proto::Mapping {
                id,
                memory_start: 0,
                file_offset: 0,
                filename,
                build_id,
                ..Default::default()
            },
            max_address: 0,
        });
        self.mapping_ids.insert(module, id);
        id
    }

    fn function(&mut self, frame: &'a Frame) -> u64 {
        let key = (&*frame.function, frame.module.as_deref());
        if let Some(&id) = self.function_ids.get(&key) {
            return id;
        }
        let id = next_id(self.functions.len());
        let name = self.strings.intern(&frame.function);
        let filename = frame
            .source
            .as_ref()
            .map_or(0, |s| self.strings.intern(&s.file));
        self.functions.push(proto::Function {
            id,
            name,
            system_name: name,
            filename,
            ..Default::default()
        });
        self.function_ids.insert(key, id);
        id
    }
}

/// The 1-based id of the entry about to be pushed onto a table of `len` entries.
fn next_id(len: usize) -> u64 {
    len as u64 + 1
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::io::Read;
    use std::sync::Arc;

    use flate2::read::GzDecoder;

    use super::*;
    use crate::profile::{FrameKind, StackSample};

    const KERNEL_BASE: u64 = 0xffff_ffff_8100_0000;

    fn module(path: &str, build_id: Option<&str>) -> Arc<Module> {
        Arc::new(Module {
            path: path.into(),
            build_id: build_id.map(Into::into),
        })
    }

    fn frame(function: &str, kind: FrameKind, module: Option<&Arc<Module>>, address: u64) -> Frame {
        Frame::new(kind, function.into(), module.cloned(), address)
    }

    fn decode(bytes: &[u8]) -> proto::Profile {
        let mut raw = Vec::new();
        GzDecoder::new(bytes)
            .read_to_end(&mut raw)
            .expect("valid gzip");
        proto::Profile::decode(raw.as_slice()).expect("valid pprof")
    }

    /// A small whole-system profile. Separate `Arc`s for equal modules on purpose: identity is
    /// by value.
    fn sample_profile() -> Profile {
        let app = module("/usr/bin/app", Some("abcd1234"));
        let app_again = module("/usr/bin/app", Some("abcd1234"));
        let libc = module("/usr/lib/libc.so.6", None);
        let kernel = module("[kernel.kallsyms]", None);
        let main = frame("main", FrameKind::Native, Some(&app), 0x1100);
        let work = frame("work", FrameKind::Native, Some(&app_again), 0x1200);
        let write = frame("write", FrameKind::Native, Some(&libc), 0x9_0000);
        let libc_raw = frame("libc.so.6+0x777", FrameKind::Native, Some(&libc), 0x777);
        let syscall = frame(
            "do_syscall_64",
            FrameKind::Kernel,
            Some(&kernel),
            KERNEL_BASE + 0x40,
        );
        let vfs = frame(
            "vfs_write",
            FrameKind::Kernel,
            Some(&kernel),
            KERNEL_BASE + 0x80,
        );
        let unknown = frame("[unknown]", FrameKind::Native, None, 0x7f00_0000_1234);
        Profile {
            start_unix_ns: 1_700_000_000_000_000_000,
            duration_ns: 5_000_000_000,
            period_ns: 10_101_010,
            executables: Default::default(),
            cgroups: Default::default(),
            samples: vec![
                StackSample {
                    pid: 100,
                    tid: 0,
                    thread_name: "app".into(),
                    frames: vec![vfs, syscall, write.clone(), work.clone(), main.clone()],
                    count: 3,
                },
                StackSample {
                    pid: 100,
                    tid: 0,
                    thread_name: "worker".into(),
                    // Recursion: the same frame twice is the same location twice.
                    frames: vec![work.clone(), work, main.clone()],
                    count: 2,
                },
                StackSample {
                    pid: 200,
                    tid: 0,
                    thread_name: "other".into(),
                    frames: vec![libc_raw, unknown, main],
                    count: 1,
                },
                StackSample {
                    pid: 300,
                    tid: 0,
                    thread_name: "gone".into(),
                    frames: vec![write],
                    count: 0,
                },
            ],
        }
    }

    fn string(p: &proto::Profile, index: i64) -> &str {
        &p.string_table[usize::try_from(index).expect("non-negative index")]
    }

    fn location(p: &proto::Profile, id: u64) -> &proto::Location {
        p.location
            .iter()
            .find(|l| l.id == id)
            .expect("location id resolves")
    }

    fn mapping(p: &proto::Profile, id: u64) -> &proto::Mapping {
        p.mapping
            .iter()
            .find(|m| m.id == id)
            .expect("mapping id resolves")
    }

    fn function_name(p: &proto::Profile, location: &proto::Location) -> String {
        let function_id = location.line[0].function_id;
        let function = p
            .function
            .iter()
            .find(|f| f.id == function_id)
            .expect("function id");
        string(p, function.name).to_owned()
    }

    fn stack(p: &proto::Profile, sample: &proto::Sample) -> Vec<String> {
        sample
            .location_id
            .iter()
            .map(|&id| function_name(p, location(p, id)))
            .collect()
    }

    fn label<'p>(p: &'p proto::Profile, sample: &'p proto::Sample, key: &str) -> &'p proto::Label {
        sample
            .label
            .iter()
            .find(|l| string(p, l.key) == key)
            .expect("label present")
    }

    #[test]
    fn header_fields() {
        let bytes = encode(&sample_profile());
        assert_eq!(bytes, encode(&sample_profile()), "deterministic");
        let p = decode(&bytes);
        assert_eq!(p.string_table[0], "");
        let types: Vec<_> = p
            .sample_type
            .iter()
            .map(|t| (string(&p, t.r#type), string(&p, t.unit)))
            .collect();
        assert_eq!(types, [("samples", "count"), ("cpu", "nanoseconds")]);
        let period_type = p.period_type.as_ref().expect("period type");
        assert_eq!(string(&p, period_type.r#type), "cpu");
        assert_eq!(string(&p, period_type.unit), "nanoseconds");
        assert_eq!(string(&p, p.default_sample_type), "cpu");
        assert_eq!(p.period, 10_101_010);
        assert_eq!(p.time_nanos, 1_700_000_000_000_000_000);
        assert_eq!(p.duration_nanos, 5_000_000_000);
    }

    #[test]
    fn samples_are_leaf_first_with_values_and_labels() {
        let p = decode(&encode(&sample_profile()));
        // The zero-count stack is left out.
        assert_eq!(p.sample.len(), 3);
        let first = &p.sample[0];
        assert_eq!(
            stack(&p, first),
            ["vfs_write", "do_syscall_64", "write", "work", "main"]
        );
        assert_eq!(first.value, [3, 3 * 10_101_010]);
        assert_eq!(label(&p, first, "pid").num, 100);
        assert_eq!(string(&p, label(&p, first, "thread").str), "app");

        let recursive = &p.sample[1];
        assert_eq!(stack(&p, recursive), ["work", "work", "main"]);
        assert_eq!(recursive.location_id[0], recursive.location_id[1]);
        assert_eq!(string(&p, label(&p, recursive, "thread").str), "worker");

        let third = &p.sample[2];
        assert_eq!(stack(&p, third), ["libc.so.6+0x777", "[unknown]", "main"]);
        assert_eq!(label(&p, third, "pid").num, 200);
    }

    #[test]
    fn tables_are_deduplicated_with_valid_ids() {
        let p = decode(&encode(&sample_profile()));
        let ids = |ids: Vec<u64>| assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>());
        ids(p.mapping.iter().map(|m| m.id).collect());
        ids(p.function.iter().map(|f| f.id).collect());
        ids(p.location.iter().map(|l| l.id).collect());

        let strings: HashSet<_> = p.string_table.iter().collect();
        assert_eq!(strings.len(), p.string_table.len(), "strings are unique");

        // app (two equal Arcs), libc, kernel.
        let files: Vec<_> = p.mapping.iter().map(|m| string(&p, m.filename)).collect();
        assert_eq!(
            files,
            ["[kernel.kallsyms]", "/usr/lib/libc.so.6", "/usr/bin/app"]
        );
        // main, work, write, do_syscall_64, vfs_write, libc.so.6+0x777, [unknown]
        assert_eq!(p.function.len(), 7);
        assert_eq!(p.location.len(), 7);

        for location in &p.location {
            assert_eq!(location.line.len(), 1);
            if location.mapping_id != 0 {
                mapping(&p, location.mapping_id);
            }
        }
    }

    #[test]
    fn mappings_cover_their_addresses() {
        let p = decode(&encode(&sample_profile()));
        for location in p.location.iter().filter(|l| l.mapping_id != 0) {
            let m = mapping(&p, location.mapping_id);
            assert!(m.memory_start <= location.address && location.address < m.memory_limit);
            // pprof's file offset is the address we were given.
            assert_eq!(
                location.address - m.memory_start + m.file_offset,
                location.address
            );
        }
        let unknown = p
            .location
            .iter()
            .find(|l| function_name(&p, l) == "[unknown]");
        let unknown = unknown.expect("unknown location");
        assert_eq!(unknown.mapping_id, 0);
        assert_eq!(unknown.address, 0x7f00_0000_1234);

        let kernel = &p.mapping[0];
        assert_eq!(kernel.memory_limit, KERNEL_BASE + 0x81);
    }

    #[test]
    fn mapping_build_id_and_has_functions() {
        let p = decode(&encode(&sample_profile()));
        let by_file = |file: &str| {
            p.mapping
                .iter()
                .find(|m| string(&p, m.filename) == file)
                .expect("mapping")
        };
        let app = by_file("/usr/bin/app");
        assert_eq!(string(&p, app.build_id), "abcd1234");
        assert!(app.has_functions);
        let libc = by_file("/usr/lib/libc.so.6");
        assert_eq!(libc.build_id, 0);
        // `write` is a symbol even though `libc.so.6+0x777` is not.
        assert!(libc.has_functions);
        assert!(by_file("[kernel.kallsyms]").has_functions);
    }

    /// A profile of one stack, sampled once.
    fn one_stack(frames: Vec<Frame>) -> Profile {
        let stack = StackSample {
            pid: 1,
            tid: 0,
            thread_name: "t".into(),
            frames,
            count: 1,
        };
        Profile {
            samples: vec![stack],
            executables: Default::default(),
            cgroups: Default::default(),
            ..Profile::default()
        }
    }

    #[test]
    fn unsymbolized_module_has_no_functions() {
        let lib = module("/opt/lib/libx.so", None);
        let p = decode(&encode(&one_stack(vec![
            frame("libx.so+0x10", FrameKind::Native, Some(&lib), 0x10),
            frame("/opt/lib/libx.so+0x20", FrameKind::Native, Some(&lib), 0x20),
            frame("[unknown]", FrameKind::Native, Some(&lib), 0x30),
        ])));
        assert_eq!(p.mapping.len(), 1);
        assert!(!p.mapping[0].has_functions);
        assert_eq!(p.mapping[0].memory_limit, 0x31);
    }

    #[test]
    fn same_name_in_two_modules_is_two_functions() {
        let (a, b) = (module("/a", None), module("/b", None));
        let p = decode(&encode(&one_stack(vec![
            frame("init", FrameKind::Native, Some(&a), 0x10),
            frame("init", FrameKind::Native, Some(&b), 0x10),
        ])));
        assert_eq!(p.function.len(), 2);
        assert_eq!(p.function[0].name, p.function[1].name);
        assert_eq!(p.location.len(), 2);
        assert_ne!(p.location[0].mapping_id, p.location[1].mapping_id);
    }

    #[test]
    fn values_saturate() {
        let profile = Profile {
            start_unix_ns: u64::MAX,
            period_ns: u64::MAX,
            samples: vec![StackSample {
                pid: u32::MAX,
                tid: 0,
                thread_name: String::new(),
                frames: vec![],
                count: u64::MAX,
            }],
            ..Profile::default()
        };
        let p = to_proto(&profile);
        assert_eq!(p.sample[0].value, [i64::MAX, i64::MAX]);
        assert_eq!(p.time_nanos, i64::MAX);
        assert_eq!(p.sample[0].label[0].num, i64::from(u32::MAX));
        // An empty thread name is the empty string, index 0.
        assert_eq!(p.sample[0].label[1].str, 0);
    }

    #[test]
    fn empty_profile() {
        let p = decode(&encode(&Profile::default()));
        assert_eq!(p.string_table[0], "");
        assert!(p.sample.is_empty() && p.mapping.is_empty() && p.location.is_empty());
        assert_eq!(p.sample_type.len(), 2);
    }

    #[test]
    fn placeholders_are_not_symbols() {
        let m = Module {
            path: "/usr/lib/libfoo.so.1".into(),
            build_id: None,
        };
        assert!(!is_symbolized("[unknown]", Some(m.path.as_str())));
        assert!(!is_symbolized("", Some(m.path.as_str())));
        assert!(!is_symbolized("libfoo.so.1+0x1a2B", Some(m.path.as_str())));
        assert!(!is_symbolized(
            "/usr/lib/libfoo.so.1+0x10",
            Some(m.path.as_str())
        ));
        assert!(is_symbolized("foo", Some(m.path.as_str())));
        assert!(is_symbolized("other.so+0x10", Some(m.path.as_str())));
        assert!(is_symbolized("libfoo.so.1+0x", Some(m.path.as_str())));
        assert!(is_symbolized("libfoo.so.1+0xzz", Some(m.path.as_str())));
    }
}
