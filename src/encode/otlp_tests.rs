//! Tests of `super` (the OTLP encoder) and of its dictionary checker.

use std::sync::Arc;

use super::*;
use crate::profile::Module;

const KERNEL_BASE: u64 = 0xffff_ffff_8100_0000;

fn module(path: &str, build_id: Option<&str>) -> Arc<Module> {
    Arc::new(Module {
        path: path.into(),
        build_id: build_id.map(Into::into),
    })
}

fn frame(function: &str, kind: FrameKind, module: Option<&Arc<Module>>, address: u64) -> Frame {
    Frame {
        function: function.into(),
        kind,
        module: module.cloned(),
        address,
    }
}

fn stack_sample(pid: u32, thread: &str, frames: Vec<Frame>, count: u64) -> StackSample {
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

fn context() -> OtlpContext {
    OtlpContext {
        executables: HashMap::from([(100, "/usr/bin/app".to_owned())]),
        ..OtlpContext::for_this_profiler("host-1".into(), "svc".into())
    }
}

fn data() -> proto::ProfilesData {
    to_profiles_data(&sample_profile(), &context())
}

fn dict(data: &proto::ProfilesData) -> &proto::ProfilesDictionary {
    data.dictionary.as_ref().expect("dictionary")
}

fn at<T>(table: &[T], index: i32) -> &T {
    &table[usize::try_from(index).expect("non-negative index")]
}

fn first_profile(data: &proto::ProfilesData, resource: usize) -> &proto::Profile {
    &data.resource_profiles[resource].scope_profiles[0].profiles[0]
}

/// A location as text: its functions (innermost first), or `file+0xADDR` when unsymbolized.
fn location_name(d: &proto::ProfilesDictionary, index: i32) -> String {
    let location = at(&d.location_table, index);
    if location.lines.is_empty() {
        let mapping = at(&d.mapping_table, location.mapping_index);
        let file = at(&d.string_table, mapping.filename_strindex);
        return format!("{file}+0x{:x}", location.address);
    }
    let names: Vec<_> = location
        .lines
        .iter()
        .map(|line| {
            at(
                &d.string_table,
                at(&d.function_table, line.function_index).name_strindex,
            )
        })
        .collect();
    names
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join("|")
}

fn stack(d: &proto::ProfilesDictionary, sample: &proto::Sample) -> Vec<String> {
    let stack = at(&d.stack_table, sample.stack_index);
    stack
        .location_indices
        .iter()
        .map(|&i| location_name(d, i))
        .collect()
}

/// Attributes as `key=value` text.
fn attributes(d: &proto::ProfilesDictionary, indices: &[i32]) -> Vec<String> {
    let text = |value: &Option<proto::AnyValue>| match value.as_ref().and_then(|v| v.value.as_ref())
    {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        other => format!("{other:?}"),
    };
    indices
        .iter()
        .map(|&i| at(&d.attribute_table, i))
        .map(|a| format!("{}={}", at(&d.string_table, a.key_strindex), text(&a.value)))
        .collect()
}

fn resource_attributes(resource: &proto::ResourceProfiles) -> Vec<String> {
    let attributes = &resource.resource.as_ref().expect("resource").attributes;
    attributes
        .iter()
        .map(
            |kv| match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => format!("{}={s}", kv.key),
                Some(Value::IntValue(i)) => format!("{}={i}", kv.key),
                other => format!("{}={other:?}", kv.key),
            },
        )
        .collect()
}

#[test]
fn round_trips_and_is_deterministic() {
    let (profile, ctx) = (sample_profile(), context());
    let bytes = encode_request(&profile, &ctx);
    assert_eq!(bytes, encode_request(&profile, &ctx));
    let request = proto::ExportProfilesServiceRequest::decode(bytes.as_slice()).expect("decodes");
    assert_eq!(request, to_request(&profile, &ctx));
    check_request(&request).expect("valid request");

    let mut file = Vec::new();
    write(&profile, &ctx, &mut file).expect("write to a Vec");
    // ProfilesData and the request share fields 1 and 2: the same bytes.
    assert_eq!(file, bytes);
    let data = proto::ProfilesData::decode(file.as_slice()).expect("decodes");
    assert_eq!(data, to_profiles_data(&profile, &ctx));
    check_dictionary(&data).expect("valid data");
}

#[test]
fn one_resource_per_process_with_attributes() {
    let data = data();
    // pid 300 was sampled zero times.
    assert_eq!(data.resource_profiles.len(), 2);
    assert_eq!(
        resource_attributes(&data.resource_profiles[0]),
        [
            "host.name=host-1",
            "service.name=svc",
            "process.pid=100",
            "process.executable.name=app",
            "process.executable.path=/usr/bin/app",
        ]
    );
    // No executable known: named after its thread, no path.
    assert_eq!(
        resource_attributes(&data.resource_profiles[1]),
        [
            "host.name=host-1",
            "service.name=svc",
            "process.pid=200",
            "process.executable.name=other",
        ]
    );
    for resource in &data.resource_profiles {
        let scope = resource.scope_profiles[0].scope.as_ref().expect("scope");
        assert_eq!(scope.name, "profiler");
        assert_eq!(scope.version, env!("CARGO_PKG_VERSION"));
    }
}

#[test]
fn cgroup_container_and_user_attributes_and_profile_ids() {
    let id = "ab".repeat(32);
    let mut ctx = context();
    let cgroup = crate::process::cgroup::parse(&format!("0::/system.slice/docker-{id}.scope"));
    ctx.cgroups.insert(200, cgroup.expect("a cgroup"));
    ctx.resource_attributes = vec![
        ("deployment.environment".into(), "test".into()),
        ("process.pid".into(), "1".into()),
    ];
    ctx.profile_id_base = [0xff; 16];
    let data = to_profiles_data(&sample_profile(), &ctx);
    let attributes = resource_attributes(&data.resource_profiles[1]);
    assert_eq!(
        attributes[3..],
        [
            "process.executable.name=other".to_owned(),
            format!("process.linux.cgroup=0::/system.slice/docker-{id}.scope"),
            format!("container.id={id}"),
            "deployment.environment=test".to_owned(),
        ],
        "the profiler's own process.pid wins"
    );
    let ids: Vec<&[u8]> = data
        .resource_profiles
        .iter()
        .map(|rp| rp.scope_profiles[0].profiles[0].profile_id.as_slice())
        .collect();
    // The base plus 0 and plus 1 (wrapping past all ones, and never all zero).
    assert_eq!(
        ids,
        [
            &[0xff; 16][..],
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1][..]
        ]
    );
    let fresh = OtlpContext::for_profile(&sample_profile(), "svc");
    assert_ne!(fresh.profile_id_base, [0; 16]);
    assert_ne!(
        fresh.profile_id_base,
        OtlpContext::for_profile(&sample_profile(), "svc").profile_id_base
    );
}

#[test]
fn empty_host_and_service_are_left_out() {
    let data = to_profiles_data(&sample_profile(), &OtlpContext::default());
    assert_eq!(
        resource_attributes(&data.resource_profiles[1]),
        ["process.pid=200", "process.executable.name=other"]
    );
}

#[test]
fn profile_header() {
    let data = data();
    let d = dict(&data);
    let p = first_profile(&data, 0);
    let value_type = |t: &Option<proto::ValueType>| {
        let t = t.as_ref().expect("value type");
        let (ty, unit) = (
            at(&d.string_table, t.type_strindex),
            at(&d.string_table, t.unit_strindex),
        );
        format!("{ty}/{unit}")
    };
    assert_eq!(value_type(&p.sample_type), "samples/count");
    assert_eq!(value_type(&p.period_type), "cpu/nanoseconds");
    assert_eq!(p.period, 10_101_010);
    assert_eq!(p.time_unix_nano, 1_700_000_000_000_000_000);
    assert_eq!(p.duration_nano, 5_000_000_000);
}

#[test]
fn samples_are_leaf_first_with_values_and_attributes() {
    let data = data();
    let d = dict(&data);
    let p = first_profile(&data, 0);
    assert_eq!(p.samples.len(), 2);
    let first = &p.samples[0];
    assert_eq!(
        stack(d, first),
        ["vfs_write", "do_syscall_64", "write", "work", "main"]
    );
    assert_eq!(first.values, [3]);
    assert!(first.timestamps_unix_nano.is_empty());
    assert_eq!(attributes(d, &first.attribute_indices), ["thread.name=app"]);

    let recursive = &p.samples[1];
    assert_eq!(stack(d, recursive), ["work", "work", "main"]);
    let locations = &at(&d.stack_table, recursive.stack_index).location_indices;
    assert_eq!(locations[0], locations[1]);
    assert_eq!(
        attributes(d, &recursive.attribute_indices),
        ["thread.name=worker"]
    );

    let other = &first_profile(&data, 1).samples[0];
    assert_eq!(
        stack(d, other),
        ["/usr/lib/libc.so.6+0x777", "+0x7f0000001234", "main"]
    );
    assert_eq!(other.values, [1]);
}

#[test]
fn locations_mappings_and_functions() {
    let data = data();
    let d = dict(&data);
    // In first-seen order: kernel, libc, app (two equal Arcs); after the zero entry.
    let files: Vec<_> = d
        .mapping_table
        .iter()
        .map(|m| at(&d.string_table, m.filename_strindex))
        .collect();
    assert_eq!(
        files,
        [
            "",
            "[kernel.kallsyms]",
            "/usr/lib/libc.so.6",
            "/usr/bin/app"
        ]
    );
    assert_eq!(
        attributes(d, &d.mapping_table[3].attribute_indices),
        ["process.executable.build_id.gnu=abcd1234"]
    );
    assert!(d.mapping_table[1].attribute_indices.is_empty());
    // main, work, vfs_write, do_syscall_64, write; the two placeholders have no function.
    assert_eq!(d.function_table.len(), 1 + 5);
    assert_eq!(d.location_table.len(), 1 + 7);

    for location in &d.location_table[1..] {
        let kind = attributes(d, &location.attribute_indices);
        let mapping = at(&d.mapping_table, location.mapping_index);
        let file = at(&d.string_table, mapping.filename_strindex);
        let expected = if file == "[kernel.kallsyms]" {
            "kernel"
        } else {
            "native"
        };
        assert_eq!(kind, [format!("profile.frame.type={expected}")]);
        if location.mapping_index != 0 {
            assert!(
                mapping.memory_start <= location.address && location.address < mapping.memory_limit
            );
            assert_eq!(mapping.file_offset, 0);
        }
    }
    assert_eq!(d.mapping_table[1].memory_limit, KERNEL_BASE + 0x81);
    let unknown = d
        .location_table
        .iter()
        .find(|l| l.address == 0x7f00_0000_1234)
        .expect("unknown");
    assert_eq!((unknown.mapping_index, unknown.lines.len()), (0, 0));
}

#[test]
fn kernel_frames_without_module_get_the_kernel_mapping() {
    let profile = Profile {
        samples: vec![stack_sample(
            1,
            "t",
            vec![frame("schedule", FrameKind::Kernel, None, KERNEL_BASE)],
            1,
        )],
        ..Profile::default()
    };
    let data = to_profiles_data(&profile, &OtlpContext::default());
    check_dictionary(&data).expect("valid");
    let d = dict(&data);
    assert_eq!(d.location_table[1].mapping_index, 1);
    assert_eq!(
        at(&d.string_table, d.mapping_table[1].filename_strindex),
        "[kernel.kallsyms]"
    );
}

#[test]
fn equal_samples_are_merged_and_attributes_shared() {
    let lib = module("/lib/x.so", None);
    let f = frame("f", FrameKind::Native, Some(&lib), 0x10);
    let profile = Profile {
        samples: vec![
            stack_sample(1, "t", vec![f.clone()], 2),
            stack_sample(2, "t", vec![f.clone()], 1),
            stack_sample(1, "t", vec![f], 5),
        ],
        ..Profile::default()
    };
    let data = to_profiles_data(&profile, &OtlpContext::default());
    check_dictionary(&data).expect("valid");
    assert_eq!(first_profile(&data, 0).samples.len(), 1);
    assert_eq!(first_profile(&data, 0).samples[0].values, [7]);
    let d = dict(&data);
    // zero, thread.name=t, profile.frame.type=native: each once though used by both processes.
    assert_eq!(d.attribute_table.len(), 3);
    assert_eq!(d.stack_table.len(), 2);
}

#[test]
fn thread_id_comes_first_when_known() {
    let mut builder = Builder::default();
    let with = builder.sample_attributes("t", Some(42));
    let without = builder.sample_attributes("t", None);
    assert_eq!(with.len(), 2);
    assert_eq!(without, with[1..]);
    let d = builder.finish();
    assert_eq!(attributes(&d, &with), ["thread.id=42", "thread.name=t"]);
}

#[test]
fn empty_profile_has_only_zero_entries() {
    let data = to_profiles_data(&Profile::default(), &context());
    check_dictionary(&data).expect("valid");
    assert!(data.resource_profiles.is_empty());
    let d = dict(&data);
    assert_eq!(d.string_table, [""]);
    let lens = [
        d.mapping_table.len(),
        d.location_table.len(),
        d.function_table.len(),
        d.link_table.len(),
        d.attribute_table.len(),
        d.stack_table.len(),
    ];
    assert_eq!(lens, [1; 6]);
    assert_eq!(d.link_table[0], proto::Link::default(), "an empty link");
}

#[test]
fn empty_stacks_and_saturated_values() {
    let profile = Profile {
        start_unix_ns: u64::MAX,
        period_ns: u64::MAX,
        samples: vec![stack_sample(u32::MAX, "", vec![], u64::MAX)],
        executables: Default::default(),
        cgroups: Default::default(),
        ..Profile::default()
    };
    let data = to_profiles_data(&profile, &OtlpContext::default());
    check_dictionary(&data).expect("valid");
    let p = first_profile(&data, 0);
    assert_eq!(
        (p.samples[0].stack_index, p.samples[0].values[0]),
        (0, i64::MAX)
    );
    assert_eq!((p.period, p.time_unix_nano), (i64::MAX, u64::MAX));
    assert!(resource_attributes(&data.resource_profiles[0])
        .contains(&"process.pid=4294967295".to_owned()));
}

#[test]
fn placeholders_are_not_symbols() {
    let path = Some("/usr/lib/libfoo.so.1");
    assert!(!is_symbolized("[unknown]", path));
    assert!(!is_symbolized("", None));
    assert!(!is_symbolized("libfoo.so.1+0x1a2B", path));
    assert!(!is_symbolized("/usr/lib/libfoo.so.1+0x10", path));
    assert!(is_symbolized("foo", path));
    assert!(is_symbolized("other.so+0x10", path));
    assert!(is_symbolized("libfoo.so.1+0xzz", path));
    assert!(is_symbolized("libfoo.so.1+0x10", None));
}

/// Breaks a valid message with `edit` and expects `check_dictionary` to say `expected`.
fn rejects(edit: impl FnOnce(&mut proto::ProfilesData), expected: &str) {
    let mut data = data();
    edit(&mut data);
    let error = check_dictionary(&data).expect_err(expected);
    assert!(error.contains(expected), "{expected:?} not in {error:?}");
}

fn dict_mut(data: &mut proto::ProfilesData) -> &mut proto::ProfilesDictionary {
    data.dictionary.as_mut().expect("dictionary")
}

fn sample_mut(data: &mut proto::ProfilesData) -> &mut proto::Sample {
    &mut data.resource_profiles[0].scope_profiles[0].profiles[0].samples[0]
}

#[test]
fn checker_rejects_broken_dictionaries() {
    rejects(|d| d.dictionary = None, "no dictionary");
    rejects(
        |d| dict_mut(d).string_table[0] = "x".into(),
        "string_table[0] must be",
    );
    rejects(|d| dict_mut(d).link_table.clear(), "link_table[0] must be");
    rejects(
        |d| {
            dict_mut(d).stack_table.remove(0);
        },
        "stack_table[0] must be",
    );
    rejects(
        |d| dict_mut(d).function_table.push(proto::Function::default()),
        "function_table[6] duplicates function_table[0]",
    );
    rejects(
        |d| {
            let copy = dict_mut(d).string_table[1].clone();
            dict_mut(d).string_table.push(copy);
        },
        "duplicates string_table[1]",
    );
    rejects(
        |d| sample_mut(d).stack_index = 99,
        "Stack index 99 out of range",
    );
    rejects(
        |d| sample_mut(d).stack_index = -1,
        "Stack index -1 out of range",
    );
    rejects(
        |d| sample_mut(d).link_index = 1,
        "Link index 1 out of range",
    );
    rejects(
        |d| sample_mut(d).values.clear(),
        "no values and no timestamps",
    );
    rejects(
        |d| sample_mut(d).timestamps_unix_nano = vec![1, 2],
        "1 values but 2 timestamps",
    );
    rejects(
        |d| sample_mut(d).attribute_indices.push(0),
        "Attribute index 0",
    );
    rejects(
        |d| {
            let repeated = sample_mut(d).attribute_indices[0];
            sample_mut(d).attribute_indices.push(repeated);
        },
        "attribute key repeated",
    );
    rejects(
        |d| dict_mut(d).stack_table[1].location_indices.push(0),
        "Location index 0",
    );
    rejects(
        |d| {
            dict_mut(d).string_table.push("orphan".into());
            dict_mut(d).function_table.push(proto::Function {
                name_strindex: 1,
                start_line: 7,
                ..Default::default()
            });
        },
        "Function entries never referenced: [6]",
    );
    rejects(
        |d| dict_mut(d).function_table[1].name_strindex = 0,
        "function_table[1]: no name",
    );
    rejects(
        |d| dict_mut(d).location_table[1].mapping_index = 4,
        "location_table[1]: Mapping index 4 out of range",
    );
    rejects(
        |d| {
            let last = i32::try_from(dict_mut(d).string_table.len()).expect("small");
            dict_mut(d).attribute_table[1].value = Some(proto::AnyValue {
                value: Some(Value::StringValueStrindex(last)),
            });
        },
        "attribute_table[1]: String index",
    );
}

#[test]
fn checker_accepts_either_zero_link() {
    let mut data = data();
    dict_mut(&mut data).link_table[0] = proto::Link::default();
    check_dictionary(&data).expect("empty IDs are a zero link too");
}
