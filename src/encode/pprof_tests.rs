//! Tests of `super` (the pprof encoder).

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

#[test]
fn inlined_frames_are_one_location_with_lines_innermost_first() {
    let app = module("/usr/bin/app", None);
    let source = |line| {
        Some(crate::profile::SourceLine {
            file: "/src/app.c".into(),
            line,
        })
    };
    let mut helper = frame("helper", FrameKind::Native, Some(&app), 0x1100);
    helper.inlined = true;
    helper.source = source(7);
    let mut work = frame("app::work", FrameKind::Native, Some(&app), 0x1100);
    work.source = source(12);
    work.system_name = Some("_ZN3app4work17h0123456789abcdefE".into());
    let main = frame("main", FrameKind::Native, Some(&app), 0x1200);
    let p = to_proto(&one_stack(vec![helper, work, main]));
    let sample = &p.sample[0];
    assert_eq!(sample.location_id.len(), 2);
    let inlined = location(&p, sample.location_id[0]);
    assert_eq!(inlined.address, 0x1100);
    let lines: Vec<(String, i64)> = inlined
        .line
        .iter()
        .map(|l| {
            let f = p.function.iter().find(|f| f.id == l.function_id).unwrap();
            (string(&p, f.name).to_owned(), l.line)
        })
        .collect();
    assert_eq!(lines, [("helper".into(), 7), ("app::work".into(), 12)]);
    let work = p
        .function
        .iter()
        .find(|f| string(&p, f.name) == "app::work");
    let work = work.expect("work's function");
    assert_eq!(
        string(&p, work.system_name),
        "_ZN3app4work17h0123456789abcdefE"
    );
    assert_eq!(string(&p, work.filename), "/src/app.c");
    let main = p.function.iter().find(|f| string(&p, f.name) == "main");
    assert_eq!(main.map(|f| string(&p, f.system_name)), Some("main"));
}
