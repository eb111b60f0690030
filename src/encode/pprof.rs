//! pprof output: a [`Profile`] as a gzip-compressed `perftools.profiles.Profile`.
//!
//! This module owns the mapping from our data model onto pprof's deduplicated tables: one
//! `Mapping` per distinct [`Module`], one `Function` per distinct (name, system name, source
//! file, module), one `Location` per distinct (module, address, lines), every string once in the
//! string table. Frames inlined at one address become one `Location` with several `Line`s,
//! innermost first, as pprof expects. The wire layout itself lives in [`crate::proto::pprof`].
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

use crate::profile::{code_locations, is_symbolized, Frame, Module, Profile};
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
        let location_id = code_locations(&stack.frames)
            .map(|run| builder.location(run))
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
    function_ids: HashMap<FunctionKey<'a>, u64>,
    locations: Vec<proto::Location>,
    location_ids: HashMap<LocationKey, u64>,
}

impl<'a> Builder<'a> {
    fn value_type(&mut self, r#type: &str, unit: &str) -> proto::ValueType {
        proto::ValueType {
            r#type: self.strings.intern(r#type),
            unit: self.strings.intern(unit),
        }
    }

    /// The id of the location of `run` (frames at one address, innermost inlined function
    /// first, see [`code_locations`]), created with its mapping and functions on first sight.
    fn location(&mut self, run: &'a [Frame]) -> u64 {
        let Some(frame) = run.last() else {
            return 0;
        };
        let mapping_id = frame
            .module
            .as_deref()
            .map_or(0, |module| self.mapping(module, frame));
        let lines: Vec<(u64, i64)> = run
            .iter()
            .map(|f| {
                let line = f.source.as_ref().map_or(0, |s| i64::from(s.line));
                (self.function(f), line)
            })
            .collect();
        let key = (mapping_id, frame.address, lines);
        if let Some(&id) = self.location_ids.get(&key) {
            return id;
        }
        let id = next_id(self.locations.len());
        self.locations.push(proto::Location {
            id,
            mapping_id,
            address: frame.address,
            line: key
                .2
                .iter()
                .map(|&(function_id, line)| proto::Line {
                    function_id,
                    line,
                    ..Default::default()
                })
                .collect(),
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
        let key = FunctionKey {
            name: &frame.function,
            system_name: frame.system_name.as_deref(),
            file: frame.source.as_ref().map(|s| &*s.file),
            module: frame.module.as_deref(),
        };
        if let Some(&id) = self.function_ids.get(&key) {
            return id;
        }
        let id = next_id(self.functions.len());
        let name = self.strings.intern(&frame.function);
        let system_name = key.system_name.map_or(name, |s| self.strings.intern(s));
        let filename = key.file.map_or(0, |f| self.strings.intern(f));
        self.functions.push(proto::Function {
            id,
            name,
            system_name,
            filename,
            ..Default::default()
        });
        self.function_ids.insert(key, id);
        id
    }
}

/// A location's identity: mapping id, address, lines as (function id, line).
type LocationKey = (u64, u64, Vec<(u64, i64)>);

/// What makes two frames the same pprof `Function`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct FunctionKey<'a> {
    name: &'a str,
    system_name: Option<&'a str>,
    file: Option<&'a str>,
    module: Option<&'a Module>,
}

/// The 1-based id of the entry about to be pushed onto a table of `len` entries.
fn next_id(len: usize) -> u64 {
    len as u64 + 1
}

#[cfg(test)]
#[path = "pprof_tests.rs"]
mod tests;
