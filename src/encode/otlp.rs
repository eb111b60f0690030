//! OTLP profiles output: a [`Profile`] as an `ExportProfilesServiceRequest` (the OTLP/HTTP body)
//! or a `ProfilesData` (a file), both with one shared [`proto::ProfilesDictionary`].
//!
//! This module owns the mapping from our data model onto OTLP's resources and dictionary tables.
//! The wire layout lives in [`crate::proto::otlp`]; sending is the transport's job, not this
//! module's. The dictionary rules of `profiles.proto` are checked by the tests
//! (`tests/common/otlp_check.rs`), on this module's output and on what a receiver got.
//!
//! Layout: one `ResourceProfiles` per process (sorted by pid), each with one `ScopeProfiles`
//! (this profiler) holding one `Profile` of `samples/count` values, period `cpu/nanoseconds`.
//! Dictionary entries are value-deduplicated and created only when referenced, so every table is
//! its zero entry plus exactly what the profiles use, in first-seen order: the same input always
//! encodes to the same bytes.
//!
//! Addresses follow `super::pprof`: a native frame's address is already a file offset, so its
//! mapping starts at 0 with file offset 0 and ends past the highest address seen. Kernel frames
//! keep their kernel address in a `[kernel.kallsyms]` mapping laid out the same way. Frames the
//! symbolizer could not name (`[unknown]`, `module+0xOFFSET`) get a location with no lines, so a
//! backend can symbolize them from the mapping's build ID.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::io::{self, Write};

use prost::Message;

use crate::process::cgroup::Cgroup;
use crate::profile::is_symbolized;
use crate::profile::KERNEL_MODULE;
use crate::profile::{Frame, FrameKind, Profile, StackSample};
use crate::proto::otlp::{self as proto, any_value::Value};

/// What the profile alone does not say: who sent it, from where, about which executables.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OtlpContext {
    /// `host.name` of every resource; left out when empty.
    pub host_name: String,
    /// `service.name` of every resource; left out when empty.
    pub service_name: String,
    /// The instrumentation scope: this profiler's name and version.
    pub scope_name: String,
    pub scope_version: String,
    /// Each process's executable path (e.g. `/proc/PID/exe` from a process snapshot), giving
    /// `process.executable.path` and, as its file name, `process.executable.name`. A process
    /// missing here is named after the thread name of its first sample (its main thread's name
    /// is the executable's, truncated to 15 bytes, unless the program renamed it), and has no
    /// path.
    pub executables: HashMap<u32, String>,
    /// Each process's cgroup, giving `process.linux.cgroup` and, in a container, `container.id`.
    pub cgroups: HashMap<u32, Cgroup>,
    /// More attributes for every resource (`OTEL_RESOURCE_ATTRIBUTES`); those this profiler
    /// sets itself (`process.pid`, `host.name`...) win over them.
    pub resource_attributes: Vec<(String, String)>,
    /// Where the profiles' `profile_id`s come from: the `i`th profile of a message gets this
    /// number plus `i`. All zero: no IDs (the same input then encodes to the same bytes).
    pub profile_id_base: [u8; 16],
}

impl OtlpContext {
    /// A context whose scope is this crate's name and version, with no executables known yet.
    pub fn for_this_profiler(host_name: String, service_name: String) -> Self {
        OtlpContext {
            host_name,
            service_name,
            scope_name: env!("CARGO_PKG_NAME").to_owned(),
            scope_version: env!("CARGO_PKG_VERSION").to_owned(),
            executables: HashMap::new(),
            cgroups: HashMap::new(),
            resource_attributes: Vec::new(),
            profile_id_base: [0; 16],
        }
    }

    /// This host's context for `profile`, with the executables and cgroups the profile knows
    /// and fresh random profile IDs.
    pub fn for_profile(profile: &Profile, service_name: &str) -> Self {
        let mut ctx = Self::for_this_profiler(host_name(), service_name.to_owned());
        ctx.executables = profile
            .executables
            .iter()
            .map(|(&pid, exe)| (pid, exe.clone()))
            .collect();
        ctx.cgroups = profile
            .cgroups
            .iter()
            .map(|(&pid, cgroup)| (pid, cgroup.clone()))
            .collect();
        // Without the kernel's randomness the profiles go without IDs (an empty ID is valid).
        ctx.profile_id_base = crate::sys::random::bytes16().unwrap_or([0; 16]);
        ctx
    }

    /// The `profile_id` of the `index`th profile of a message (empty without a base).
    fn profile_id(&self, index: usize) -> Vec<u8> {
        if self.profile_id_base == [0; 16] {
            return Vec::new();
        }
        let id = u128::from_be_bytes(self.profile_id_base).wrapping_add(index as u128);
        // All zero is an invalid ID.
        let id = if id == 0 { 1 } else { id };
        id.to_be_bytes().to_vec()
    }
}

/// The kernel's host name (`host.name`).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

/// The OTLP/HTTP request body for `profile`, uncompressed.
pub fn encode_request(profile: &Profile, ctx: &OtlpContext) -> Vec<u8> {
    to_request(profile, ctx).encode_to_vec()
}

/// Writes `profile` as an uncompressed `ProfilesData` message (the `.otlp` file format).
pub fn write(profile: &Profile, ctx: &OtlpContext, out: &mut dyn Write) -> io::Result<()> {
    out.write_all(&to_profiles_data(profile, ctx).encode_to_vec())
}

/// The profile as an `ExportProfilesServiceRequest`.
pub fn to_request(profile: &Profile, ctx: &OtlpContext) -> proto::ExportProfilesServiceRequest {
    let data = to_profiles_data(profile, ctx);
    proto::ExportProfilesServiceRequest {
        resource_profiles: data.resource_profiles,
        dictionary: data.dictionary,
    }
}

/// The profile as a `ProfilesData`. Stacks sampled zero times, and processes with no other
/// stacks, are left out.
pub fn to_profiles_data(profile: &Profile, ctx: &OtlpContext) -> proto::ProfilesData {
    let mut by_pid: BTreeMap<u32, Vec<&StackSample>> = BTreeMap::new();
    for sample in profile.samples.iter().filter(|s| s.count > 0) {
        by_pid.entry(sample.pid).or_default().push(sample);
    }
    let mut builder = Builder::default();
    let resource_profiles = by_pid
        .into_iter()
        .enumerate()
        .map(|(index, (pid, samples))| {
            let mut rp = resource_profiles(&mut builder, profile, ctx, pid, &samples);
            for p in rp.scope_profiles.iter_mut().flat_map(|s| &mut s.profiles) {
                p.profile_id = ctx.profile_id(index);
            }
            rp
        })
        .collect();
    proto::ProfilesData {
        resource_profiles,
        dictionary: Some(builder.finish()),
    }
}

/// One process's resource, scope and profile. `samples` is non-empty.
fn resource_profiles<'a>(
    builder: &mut Builder<'a>,
    profile: &Profile,
    ctx: &OtlpContext,
    pid: u32,
    samples: &[&'a StackSample],
) -> proto::ResourceProfiles {
    let otlp_profile = proto::Profile {
        sample_type: Some(builder.value_type("samples", "count")),
        samples: otlp_samples(builder, samples),
        time_unix_nano: profile.start_unix_ns,
        duration_nano: profile.duration_ns,
        period_type: Some(builder.value_type("cpu", "nanoseconds")),
        period: saturating_i64(profile.period_ns),
        ..Default::default()
    };
    let fallback_name = samples.first().map_or("", |s| s.thread_name.as_str());
    proto::ResourceProfiles {
        resource: Some(resource(ctx, pid, fallback_name)),
        scope_profiles: vec![proto::ScopeProfiles {
            scope: Some(proto::InstrumentationScope {
                name: ctx.scope_name.clone(),
                version: ctx.scope_version.clone(),
                ..Default::default()
            }),
            profiles: vec![otlp_profile],
            schema_url: String::new(),
        }],
        schema_url: String::new(),
    }
}

/// One `Sample` per distinct identity (stack and attributes), each with its summed count as
/// its one value.
fn otlp_samples<'a>(builder: &mut Builder<'a>, samples: &[&'a StackSample]) -> Vec<proto::Sample> {
    let mut merged: Vec<proto::Sample> = Vec::with_capacity(samples.len());
    let mut identities: HashMap<(i32, Vec<i32>), usize> = HashMap::new();
    for sample in samples {
        let stack_index = builder.stack(&sample.frames);
        let attribute_indices = builder.sample_attributes(&sample.thread_name, thread_id(sample));
        let count = saturating_i64(sample.count);
        match identities.entry((stack_index, attribute_indices.clone())) {
            Entry::Occupied(slot) => {
                let value = merged
                    .get_mut(*slot.get())
                    .and_then(|s| s.values.first_mut());
                if let Some(value) = value {
                    *value = value.saturating_add(count);
                }
            }
            Entry::Vacant(slot) => {
                slot.insert(merged.len());
                merged.push(proto::Sample {
                    stack_index,
                    attribute_indices,
                    values: vec![count],
                    ..Default::default()
                });
            }
        }
    }
    merged
}

/// The sampled thread's id (0: unknown).
fn thread_id(sample: &StackSample) -> Option<u32> {
    (sample.tid != 0).then_some(sample.tid)
}

/// A process's resource: host, service, pid, executable, cgroup and container, then the
/// user's attributes.
fn resource(ctx: &OtlpContext, pid: u32, fallback_name: &str) -> proto::Resource {
    let mut attributes = Vec::with_capacity(7 + ctx.resource_attributes.len());
    let mut push = |key: &str, value: Value| attributes.push(key_value(key, value));
    if !ctx.host_name.is_empty() {
        push("host.name", Value::StringValue(ctx.host_name.clone()));
    }
    if !ctx.service_name.is_empty() {
        push("service.name", Value::StringValue(ctx.service_name.clone()));
    }
    push("process.pid", Value::IntValue(i64::from(pid)));
    match ctx.executables.get(&pid) {
        Some(path) => {
            let name = path.rsplit('/').next().unwrap_or(path);
            push(
                "process.executable.name",
                Value::StringValue(name.to_owned()),
            );
            push("process.executable.path", Value::StringValue(path.clone()));
        }
        None => push(
            "process.executable.name",
            Value::StringValue(fallback_name.to_owned()),
        ),
    }
    if let Some(cgroup) = ctx.cgroups.get(&pid) {
        push(
            "process.linux.cgroup",
            Value::StringValue(cgroup.entry.clone()),
        );
        if let Some(id) = &cgroup.container_id {
            push("container.id", Value::StringValue(id.clone()));
        }
    }
    for (key, value) in &ctx.resource_attributes {
        if !attributes.iter().any(|kv| kv.key == *key) {
            attributes.push(key_value(key, Value::StringValue(value.clone())));
        }
    }
    proto::Resource {
        attributes,
        ..Default::default()
    }
}

fn key_value(key: &str, value: Value) -> proto::KeyValue {
    proto::KeyValue {
        key: key.to_owned(),
        value: Some(proto::AnyValue { value: Some(value) }),
        key_strindex: 0,
    }
}

/// OTLP values are signed; our counters are not. Anything past `i64::MAX` is clamped.
fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A dictionary table: the zero entry at index 0, then one entry per distinct key.
struct Table<K, V> {
    entries: Vec<V>,
    index: HashMap<K, i32>,
}

impl<K: Eq + Hash, V: Default> Table<K, V> {
    /// A table whose zero entry is also what `zero_key` interns to, if given.
    fn new(zero_key: Option<K>) -> Self {
        Table {
            entries: vec![V::default()],
            index: zero_key.into_iter().map(|key| (key, 0)).collect(),
        }
    }

    /// The index of `key`'s entry, made by `make` on first sight.
    fn intern(&mut self, key: K, make: impl FnOnce() -> V) -> i32 {
        if let Some(&index) = self.index.get(&key) {
            return index;
        }
        // SANITY: 2^31 dictionary entries would not fit in a message (2 GiB) anyway.
        let index = i32::try_from(self.entries.len()).unwrap_or(i32::MAX);
        self.entries.push(make());
        self.index.insert(key, index);
        index
    }
}

/// An attribute value, hashable (unlike `AnyValue`, which may hold a float).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum AttributeValue<'a> {
    Str(&'a str),
    Int(i64),
}

impl AttributeValue<'_> {
    fn to_proto(self) -> proto::AnyValue {
        let value = match self {
            AttributeValue::Str(s) => Value::StringValue(s.to_owned()),
            AttributeValue::Int(i) => Value::IntValue(i),
        };
        proto::AnyValue { value: Some(value) }
    }
}

/// A mapping's identity: the module's path and build ID.
type MappingKey<'a> = (&'a str, Option<&'a str>);
/// A location's identity: mapping, address, function (`None`: unsymbolized), frame-type attribute.
type LocationKey = (i32, u64, Option<i32>, i32);

/// The dictionary under construction. Strings come from the profile or are constants.
struct Builder<'a> {
    strings: Table<&'a str, String>,
    mappings: Table<MappingKey<'a>, proto::Mapping>,
    locations: Table<LocationKey, proto::Location>,
    functions: Table<(i32, i32), proto::Function>,
    attributes: Table<(i32, AttributeValue<'a>), proto::KeyValueAndUnit>,
    stacks: Table<Vec<i32>, proto::Stack>,
}

impl Default for Builder<'_> {
    fn default() -> Self {
        Builder {
            strings: Table::new(Some("")),
            mappings: Table::new(None),
            locations: Table::new(None),
            functions: Table::new(None),
            attributes: Table::new(None),
            // An empty stack is the zero stack.
            stacks: Table::new(Some(Vec::new())),
        }
    }
}

impl<'a> Builder<'a> {
    fn finish(self) -> proto::ProfilesDictionary {
        proto::ProfilesDictionary {
            mapping_table: self.mappings.entries,
            location_table: self.locations.entries,
            function_table: self.functions.entries,
            // The zero link: no trace, no span (empty IDs, as `Link::default()`).
            link_table: vec![proto::Link::default()],
            string_table: self.strings.entries,
            attribute_table: self.attributes.entries,
            stack_table: self.stacks.entries,
        }
    }

    fn string(&mut self, s: &'a str) -> i32 {
        self.strings.intern(s, || s.to_owned())
    }

    fn value_type(&mut self, r#type: &'a str, unit: &'a str) -> proto::ValueType {
        proto::ValueType {
            type_strindex: self.string(r#type),
            unit_strindex: self.string(unit),
        }
    }

    fn attribute(&mut self, key: &'a str, value: AttributeValue<'a>) -> i32 {
        let key_strindex = self.string(key);
        self.attributes
            .intern((key_strindex, value), || proto::KeyValueAndUnit {
                key_strindex,
                value: Some(value.to_proto()),
                unit_strindex: 0,
            })
    }

    /// `thread.id` (when known) and `thread.name`, in that order.
    fn sample_attributes(&mut self, thread_name: &'a str, tid: Option<u32>) -> Vec<i32> {
        let tid = tid.map(|tid| self.attribute("thread.id", AttributeValue::Int(tid.into())));
        let name = self.attribute("thread.name", AttributeValue::Str(thread_name));
        tid.into_iter().chain([name]).collect()
    }

    /// The stack of `frames` (leaf first).
    fn stack(&mut self, frames: &'a [Frame]) -> i32 {
        let location_indices: Vec<i32> = frames.iter().map(|f| self.location(f)).collect();
        self.stacks
            .intern(location_indices.clone(), || proto::Stack {
                location_indices,
            })
    }

    fn location(&mut self, frame: &'a Frame) -> i32 {
        let module = match (&frame.module, frame.kind) {
            (Some(module), _) => Some((module.path.as_str(), module.build_id.as_deref())),
            (None, FrameKind::Kernel) => Some((KERNEL_MODULE, None)),
            (None, FrameKind::Native | FrameKind::Python) => None,
        };
        let mapping_index = module.map_or(0, |m| self.mapping(m, frame.address));
        let file = frame.source.as_ref().map(|s| &*s.file);
        let function_index = is_symbolized(&frame.function, module.map(|(path, _)| path))
            .then(|| self.function(&frame.function, file));
        let frame_type = match frame.kind {
            FrameKind::Kernel => "kernel",
            FrameKind::Native => "native",
            FrameKind::Python => "cpython",
        };
        let type_index = self.attribute("profile.frame.type", AttributeValue::Str(frame_type));
        let key = (mapping_index, frame.address, function_index, type_index);
        self.locations.intern(key, || proto::Location {
            mapping_index,
            address: frame.address,
            lines: function_index
                .map(|function_index| proto::Line {
                    function_index,
                    line: frame.source.as_ref().map_or(0, |s| i64::from(s.line)),
                    ..Default::default()
                })
                .into_iter()
                .collect(),
            attribute_indices: vec![type_index],
        })
    }

    /// The index of the module's mapping, widened to cover `address`.
    fn mapping(&mut self, key: MappingKey<'a>, address: u64) -> i32 {
        let (path, build_id) = key;
        let filename_strindex = self.string(path);
        let build_id = build_id
            .map(|b| self.attribute("process.executable.build_id.gnu", AttributeValue::Str(b)));
        let index = self.mappings.intern(key, || proto::Mapping {
            filename_strindex,
            attribute_indices: build_id.into_iter().collect(),
            ..Default::default()
        });
        if let Some(mapping) = usize::try_from(index)
            .ok()
            .and_then(|i| self.mappings.entries.get_mut(i))
        {
            mapping.memory_limit = mapping.memory_limit.max(address.saturating_add(1));
        }
        index
    }

    /// A function by name and source file (Python functions of the same name in two files
    /// are two functions).
    fn function(&mut self, name: &'a str, file: Option<&'a str>) -> i32 {
        let name_strindex = self.string(name);
        let filename_strindex = file.map_or(0, |f| self.string(f));
        self.functions
            .intern((name_strindex, filename_strindex), || proto::Function {
                name_strindex,
                filename_strindex,
                ..Default::default()
            })
    }
}

#[cfg(test)]
#[path = "otlp_tests.rs"]
mod tests;
