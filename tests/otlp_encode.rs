//! The OTLP encoder (`profiler::encode::otlp`) through its public API: a request and a
//! `ProfilesData` file round-trip and hold to the dictionary rules (checked by
//! `common::otlp_check`), one resource per process with its attributes, the profile header,
//! samples leaf first, locations, mappings and functions deduplicated, and edge cases; and the
//! dictionary checker itself, which must reject what breaks the rules.

mod common;

use prost::Message;

use common::otlp::{
    at, attributes, context, frame, key_values, module, resource_attributes, sample_data,
    sample_profile, stack_sample, KERNEL_BASE,
};
use common::otlp_check::{check_dictionary, check_request, table_lens};
use profiler::encode::otlp::{encode_request, to_profiles_data, to_request, write, OtlpContext};
use profiler::profile::{FrameKind, Profile};
use profiler::proto::otlp::{self as proto, any_value::Value};

fn dict(data: &proto::ProfilesData) -> &proto::ProfilesDictionary {
    data.dictionary.as_ref().expect("dictionary")
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

/// Dictionary attributes as `key=value` text.
fn attribute_text(d: &proto::ProfilesDictionary, indices: &[i32]) -> Vec<String> {
    key_values(&attributes(d, indices))
}

/// A resource's attributes as `key=value` text.
fn resource_text(data: &proto::ProfilesData, resource: usize) -> Vec<String> {
    key_values(&resource_attributes(
        dict(data),
        &data.resource_profiles[resource],
    ))
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
    let data = sample_data();
    // pid 300 was sampled zero times.
    assert_eq!(data.resource_profiles.len(), 2);
    assert_eq!(
        resource_text(&data, 0),
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
        resource_text(&data, 1),
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
fn empty_host_and_service_are_left_out() {
    let data = to_profiles_data(&sample_profile(), &OtlpContext::default());
    assert_eq!(
        resource_text(&data, 1),
        ["process.pid=200", "process.executable.name=other"]
    );
}

#[test]
fn profile_header() {
    let data = sample_data();
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
    let data = sample_data();
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
    assert_eq!(
        attribute_text(d, &first.attribute_indices),
        ["thread.name=app"]
    );

    let recursive = &p.samples[1];
    assert_eq!(stack(d, recursive), ["work", "work", "main"]);
    let locations = &at(&d.stack_table, recursive.stack_index).location_indices;
    assert_eq!(locations[0], locations[1]);
    assert_eq!(
        attribute_text(d, &recursive.attribute_indices),
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
    let data = sample_data();
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
        attribute_text(d, &d.mapping_table[3].attribute_indices),
        ["process.executable.build_id.gnu=abcd1234"]
    );
    assert!(d.mapping_table[1].attribute_indices.is_empty());
    // main, work, vfs_write, do_syscall_64, write; the two placeholders have no function.
    assert_eq!(d.function_table.len(), 1 + 5);
    assert_eq!(d.location_table.len(), 1 + 7);

    for location in &d.location_table[1..] {
        let kind = attribute_text(d, &location.attribute_indices);
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
fn empty_profile_has_only_zero_entries() {
    let data = to_profiles_data(&Profile::default(), &context());
    check_dictionary(&data).expect("valid");
    assert!(data.resource_profiles.is_empty());
    let d = dict(&data);
    assert_eq!(d.string_table, [""]);
    assert_eq!(table_lens(d), [1; 7], "every table only its zero entry");
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
    assert!(resource_text(&data, 0).contains(&"process.pid=4294967295".to_owned()));
}

/// Breaks a valid message with `edit` and expects `check_dictionary` to say `expected`.
fn rejects(edit: impl FnOnce(&mut proto::ProfilesData), expected: &str) {
    let mut data = sample_data();
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
    let mut data = sample_data();
    dict_mut(&mut data).link_table[0] = proto::Link::default();
    check_dictionary(&data).expect("empty IDs are a zero link too");
}

#[test]
fn cgroup_container_and_user_attributes_and_profile_ids() {
    let id = "ab".repeat(32);
    let mut ctx = context();
    let cgroup = profiler::process::cgroup::parse(&format!("0::/system.slice/docker-{id}.scope"));
    ctx.cgroups.insert(200, cgroup.expect("a cgroup"));
    ctx.resource_attributes = vec![
        ("deployment.environment".into(), "test".into()),
        ("process.pid".into(), "1".into()),
    ];
    ctx.profile_id_base = [0xff; 16];
    let data = to_profiles_data(&sample_profile(), &ctx);
    let attributes: Vec<String> = resource_attributes(dict(&data), &data.resource_profiles[1])
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
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
