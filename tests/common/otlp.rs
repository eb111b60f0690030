//! OTLP profiles for the tests: the sample profile the encoder tests start from, and reading
//! messages back as text (dictionary lookups, attributes, stacks), down to the window of one
//! process that a daemon sent.

use std::collections::HashMap;
use std::sync::Arc;

use profiler::encode::otlp::{self, OtlpContext};
use profiler::profile::{Frame, FrameKind, Module, Profile, StackSample};
use profiler::proto::otlp::{
    any_value::Value, AnyValue, ExportProfilesServiceRequest, ProfilesData, ProfilesDictionary,
    ResourceProfiles,
};

use super::otlp_check;
use super::receiver::Request;

// ---------------------------------------------------------------------------------------------
// Building

pub const KERNEL_BASE: u64 = 0xffff_ffff_8100_0000;

pub fn module(path: &str, build_id: Option<&str>) -> Arc<Module> {
    Arc::new(Module {
        path: path.into(),
        build_id: build_id.map(Into::into),
    })
}

pub fn frame(function: &str, kind: FrameKind, module: Option<&Arc<Module>>, address: u64) -> Frame {
    Frame::new(kind, function.into(), module.cloned(), address)
}

pub fn stack_sample(pid: u32, thread: &str, frames: Vec<Frame>, count: u64) -> StackSample {
    StackSample {
        pid,
        tid: 0,
        thread_name: thread.into(),
        frames,
        count,
    }
}

/// Three processes and a fourth sampled zero times. Separate `Arc`s for equal modules on
/// purpose: identity is by value.
pub fn sample_profile() -> Profile {
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
    let kernel_stack = vec![vfs, syscall, write.clone(), work.clone(), main.clone()];
    Profile {
        start_unix_ns: 1_700_000_000_000_000_000,
        duration_ns: 5_000_000_000,
        period_ns: 10_101_010,
        executables: Default::default(),
        cgroups: Default::default(),
        samples: vec![
            stack_sample(300, "gone", vec![write], 0),
            stack_sample(200, "other", vec![libc_raw, unknown, main.clone()], 1),
            stack_sample(100, "app", kernel_stack, 3),
            // Recursion: the same frame twice is the same location twice.
            stack_sample(100, "worker", vec![work.clone(), work, main], 2),
        ],
    }
}

/// The context of [`sample_profile`]: host `host-1`, service `svc`, pid 100 is `/usr/bin/app`.
pub fn context() -> OtlpContext {
    OtlpContext {
        executables: HashMap::from([(100, "/usr/bin/app".to_owned())]),
        ..OtlpContext::for_this_profiler("host-1".into(), "svc".into())
    }
}

/// [`sample_profile`] as `ProfilesData`.
pub fn sample_data() -> ProfilesData {
    otlp::to_profiles_data(&sample_profile(), &context())
}

// ---------------------------------------------------------------------------------------------
// Reading

/// `table[index]`; panics on a negative index.
pub fn at<T>(table: &[T], index: i32) -> &T {
    &table[usize::try_from(index).expect("non-negative index")]
}

pub fn string(d: &ProfilesDictionary, index: i32) -> &str {
    d.string_table
        .get(index as usize)
        .map(String::as_str)
        .unwrap_or("<bad string index>")
}

/// An attribute value as text (strings as they are, numbers in decimal).
pub fn value_text(d: &ProfilesDictionary, value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::StringValueStrindex(i)) => string(d, *i).to_owned(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(f)) => f.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

/// Dictionary attributes `indices` as (key, value) text pairs.
pub fn attributes(d: &ProfilesDictionary, indices: &[i32]) -> Vec<(String, String)> {
    indices
        .iter()
        .map(|&i| {
            let kv = at(&d.attribute_table, i);
            (
                string(d, kv.key_strindex).to_owned(),
                value_text(d, kv.value.as_ref()),
            )
        })
        .collect()
}

/// A resource's attributes as (key, value) text pairs.
pub fn resource_attributes(d: &ProfilesDictionary, rp: &ResourceProfiles) -> Vec<(String, String)> {
    rp.resource
        .iter()
        .flat_map(|r| &r.attributes)
        .map(|kv| {
            let key = if kv.key.is_empty() {
                string(d, kv.key_strindex).to_owned()
            } else {
                kv.key.clone()
            };
            (key, value_text(d, kv.value.as_ref()))
        })
        .collect()
}

/// (key, value) pairs as `key=value` lines.
pub fn key_values(pairs: &[(String, String)]) -> Vec<String> {
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

pub fn get<'a>(attributes: &'a [(String, String)], key: &str) -> Option<&'a str> {
    attributes
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// A location's function names, innermost first (`?` when it has none).
pub fn location_names(d: &ProfilesDictionary, index: i32) -> Vec<String> {
    let location = at(&d.location_table, index);
    if location.lines.is_empty() {
        return vec!["?".to_owned()];
    }
    location
        .lines
        .iter()
        .map(|line| string(d, at(&d.function_table, line.function_index).name_strindex).to_owned())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// One process's window, as a daemon sent it

/// One sample of the fixture: its frames' function names leaf first (`?` when unsymbolized),
/// its attributes and its count.
#[derive(Debug)]
pub struct FixtureSample {
    pub names: Vec<String>,
    pub attributes: Vec<(String, String)>,
    pub count: i64,
}

/// One window as the receiver got it.
#[derive(Debug)]
pub struct Window {
    /// `time_unix_nano` / `duration_nano` of its profiles (0 when it has none).
    pub start_ns: u64,
    pub duration_ns: u64,
    /// The fixture process's resource attributes (empty if it is not in the window).
    pub resource: Vec<(String, String)>,
    pub samples: Vec<FixtureSample>,
}

impl Window {
    pub fn total(&self) -> i64 {
        self.samples.iter().map(|s| s.count).sum()
    }

    /// Samples whose stack holds c, b, a, main in that order (leaf first), consecutively.
    pub fn symbolized(&self) -> i64 {
        let want = ["c", "b", "a", "main"];
        self.samples
            .iter()
            .filter(|s| s.names.windows(4).any(|w| w == want))
            .map(|s| s.count)
            .sum()
    }
}

/// Decodes `request`, holds it to the dictionary rules, and extracts the window of `pid`.
pub fn window(request: &Request, pid: u32) -> Window {
    let decoded = request
        .export_request()
        .unwrap_or_else(|e| panic!("not an ExportProfilesServiceRequest ({e})"));
    if let Err(errors) = otlp_check::check_request(&decoded) {
        panic!("the request breaks the dictionary rules:\n{errors}");
    }
    window_of(&decoded.resource_profiles, decoded.dictionary.as_ref(), pid)
}

pub fn window_of(
    resource_profiles: &[ResourceProfiles],
    dictionary: Option<&ProfilesDictionary>,
    pid: u32,
) -> Window {
    let d = dictionary.expect("a dictionary");
    let mut window = Window {
        start_ns: 0,
        duration_ns: 0,
        resource: Vec::new(),
        samples: Vec::new(),
    };
    for rp in resource_profiles {
        for profile in rp.scope_profiles.iter().flat_map(|s| &s.profiles) {
            window.start_ns = profile.time_unix_nano;
            window.duration_ns = profile.duration_nano;
        }
        let resource = resource_attributes(d, rp);
        if get(&resource, "process.pid") != Some(&pid.to_string()) {
            continue;
        }
        window.resource = resource;
        for profile in rp.scope_profiles.iter().flat_map(|s| &s.profiles) {
            for sample in &profile.samples {
                let stack = at(&d.stack_table, sample.stack_index);
                let names = stack
                    .location_indices
                    .iter()
                    .flat_map(|&l| location_names(d, l))
                    .collect();
                window.samples.push(FixtureSample {
                    names,
                    attributes: attributes(d, &sample.attribute_indices),
                    count: sample.values.iter().sum(),
                });
            }
        }
    }
    window
}

/// The profiles' `time_unix_nano` of a request (its identity), whatever processes it holds.
pub fn start_of(request: &Request) -> u64 {
    span_of(request).0
}

/// The profiles' `time_unix_nano` and `duration_nano` of a request ((0, 0) if it has none).
pub fn span_of(request: &Request) -> (u64, u64) {
    let decoded: ExportProfilesServiceRequest =
        request.export_request().expect("an export request");
    decoded
        .resource_profiles
        .iter()
        .flat_map(|rp| &rp.scope_profiles)
        .flat_map(|sp| &sp.profiles)
        .map(|p| (p.time_unix_nano, p.duration_nano))
        .next()
        .unwrap_or((0, 0))
}

pub fn statuses(requests: &[Request]) -> Vec<u16> {
    requests.iter().map(|r| r.status).collect()
}
