//! Tests of `super` (reading folded, pprof and OTLP files back into profiles, merging and
//! selecting them).

use std::sync::Arc;

use super::*;
use crate::encode::{write_profile, OutputFormat};
use crate::profile::{Frame, Module, StackSample};
use crate::summary::top_functions_by;

fn module(path: &str) -> Option<Arc<Module>> {
    Some(Arc::new(Module {
        path: path.into(),
        build_id: Some("abcd".into()),
    }))
}

fn recording() -> Profile {
    let app = module("/usr/bin/app");
    let libc = module("/usr/lib/libc.so.6");
    let kernel = module(KERNEL_MODULE);
    let main = Frame::new(FrameKind::Native, "main".into(), app.clone(), 0x1100);
    let work = Frame::new(FrameKind::Native, "work".into(), app, 0x1200);
    let raw = Frame::new(FrameKind::Native, "libc.so.6+0x777".into(), libc, 0x777);
    let vfs = Frame::new(
        FrameKind::Kernel,
        "vfs_read".into(),
        kernel,
        0xffff_ffff_8100_0040,
    );
    let unknown = Frame::new(
        FrameKind::Native,
        "[unknown]".into(),
        None,
        0x7f00_0000_0000,
    );
    let sample = |pid, thread: &str, frames: Vec<Frame>, count| StackSample {
        pid,
        tid: pid,
        thread_name: thread.into(),
        frames,
        count,
    };
    Profile {
        start_unix_ns: 1_700_000_000_000_000_000,
        duration_ns: 2_000_000_000,
        period_ns: 10_101_010,
        samples: vec![
            sample(10, "app", vec![vfs, raw, work.clone(), main.clone()], 5),
            sample(10, "app", vec![work, main.clone()], 7),
            sample(20, "other", vec![unknown, main], 2),
        ],
        ..Profile::default()
    }
}

fn encoded(format: OutputFormat, profile: &Profile) -> Vec<u8> {
    let mut out = Vec::new();
    write_profile(format, profile, &mut out).expect("write to a Vec");
    out
}

fn by_name(profile: &Profile) -> (Vec<String>, Vec<String>) {
    let (own, total) = top_functions_by(profile, 10, |f| f.function.to_string());
    let show = |rows: Vec<crate::summary::FunctionCount>| {
        rows.into_iter()
            .map(|r| format!("{} {}", r.samples, r.name))
            .collect()
    };
    (show(own), show(total))
}

#[test]
fn every_format_reads_back_the_same_functions() {
    let original = recording();
    let expected = by_name(&original);
    for (format, name, kind) in [
        (OutputFormat::Folded, "x.folded", InputFormat::Folded),
        (OutputFormat::Pprof, "x.pb.gz", InputFormat::Pprof),
        (OutputFormat::Otlp, "x.otlp", InputFormat::Otlp),
    ] {
        let (read_as, profile) = parse(&encoded(format, &original), name).expect(name);
        assert_eq!(read_as, kind);
        assert_eq!(by_name(&profile), expected, "{name}");
        assert_eq!(profile.total_samples(), 14, "{name}");
    }
}

#[test]
fn formats_are_recognised_without_their_extension() {
    let original = recording();
    for (format, kind) in [
        (OutputFormat::Folded, InputFormat::Folded),
        (OutputFormat::Pprof, InputFormat::Pprof),
        (OutputFormat::Otlp, InputFormat::Otlp),
    ] {
        let (read_as, _) = parse(&encoded(format, &original), "profile").expect("parse");
        assert_eq!(read_as, kind);
    }
}

#[test]
fn uncompressed_pprof_and_misnamed_otlp_are_read() {
    let original = recording();
    let raw = prost::Message::encode_to_vec(&crate::encode::pprof::to_proto(&original));
    let (format, p) = parse(&raw, "cpu.pb").expect("uncompressed pprof");
    assert_eq!((format, p.total_samples()), (InputFormat::Pprof, 14));
    let otlp = encoded(OutputFormat::Otlp, &original);
    let (format, p) = parse(&otlp, "cpu.pb").expect("OTLP named .pb");
    assert_eq!((format, p.total_samples()), (InputFormat::Otlp, 14));
}

#[test]
fn pprof_and_otlp_keep_processes_kinds_and_times() {
    let original = recording();
    for (format, name) in [
        (OutputFormat::Pprof, "x.pb.gz"),
        (OutputFormat::Otlp, "x.otlp"),
    ] {
        let (_, p) = parse(&encoded(format, &original), name).expect(name);
        assert_eq!(p.start_unix_ns, original.start_unix_ns, "{name}");
        assert_eq!(p.duration_ns, original.duration_ns, "{name}");
        let kernel = p
            .samples
            .iter()
            .flat_map(|s| &s.frames)
            .find(|f| &*f.function == "vfs_read");
        assert_eq!(kernel.map(|f| f.kind), Some(FrameKind::Kernel), "{name}");
        let pids: Vec<u32> = p.samples.iter().map(|s| s.pid).collect();
        assert!(pids.contains(&10) && pids.contains(&20), "{name}: {pids:?}");
    }
}

#[test]
fn inlined_lines_become_inlined_frames() {
    use crate::proto::pprof as proto;
    let message = proto::Profile {
        string_table: vec!["".into(), "inner".into(), "outer".into()],
        function: vec![
            proto::Function {
                id: 1,
                name: 1,
                ..Default::default()
            },
            proto::Function {
                id: 2,
                name: 2,
                ..Default::default()
            },
        ],
        location: vec![proto::Location {
            id: 1,
            line: vec![
                proto::Line {
                    function_id: 1,
                    ..Default::default()
                },
                proto::Line {
                    function_id: 2,
                    ..Default::default()
                },
            ],
            ..Default::default()
        }],
        sample: vec![proto::Sample {
            location_id: vec![1],
            value: vec![3],
            label: vec![],
        }],
        ..Default::default()
    };
    let p = pprof::parse(&prost::Message::encode_to_vec(&message)).expect("parse");
    let frames: Vec<(&str, bool)> = p.samples[0]
        .frames
        .iter()
        .map(|f| (&*f.function, f.inlined))
        .collect();
    assert_eq!(frames, [("inner", true), ("outer", false)]);
}

#[test]
fn corrupt_input_is_an_error_not_a_panic() {
    let good = encoded(OutputFormat::Otlp, &recording());
    let pprof = encoded(OutputFormat::Pprof, &recording());
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (Vec::new(), "x.pb"),
        (b"main;a notanumber\n".to_vec(), "x.folded"),
        (vec![0x1f, 0x8b, 0, 1, 2], "x.pb.gz"),
        (pprof[..pprof.len() / 2].to_vec(), "x.pb.gz"),
        (good[..good.len() / 2].to_vec(), "x.otlp"),
        (vec![0xff; 64], "x.otlp"),
        (vec![0x0a, 0x05, 0x08, 0x01, 0x10, 0x99, 0x01], "x.pb"),
    ];
    for (bytes, name) in cases {
        assert!(parse(&bytes, name).is_err(), "{name}: {bytes:?}");
    }
}

#[test]
fn selection_by_process_and_time() {
    let p = recording();
    let only = |selection: Selection, format| {
        selection
            .apply(format, p.clone())
            .map(|p| p.total_samples())
    };
    let pid = Selection {
        pids: vec![20],
        ..Selection::default()
    };
    assert_eq!(only(pid.clone(), InputFormat::Pprof), Ok(2));
    assert!(only(pid, InputFormat::Folded).is_err());
    let comm = Selection {
        comms: vec!["app".into()],
        ..Selection::default()
    };
    assert_eq!(only(comm, InputFormat::Folded), Ok(12));
    let start = p.start_unix_ns;
    let after = Selection {
        since: Some(start + 3_000_000_000),
        ..Selection::default()
    };
    assert_eq!(only(after, InputFormat::Otlp), Ok(0));
    let during = Selection {
        since: Some(start + 1),
        until: Some(start + 2),
        ..Selection::default()
    };
    assert_eq!(only(during, InputFormat::Otlp), Ok(14));
}

#[test]
fn merging_adds_samples_and_spans_both() {
    let a = recording();
    let mut b = recording();
    b.start_unix_ns += 10_000_000_000;
    let merged = merge(vec![a.clone(), b]);
    assert_eq!(merged.total_samples(), 2 * a.total_samples());
    assert_eq!(merged.start_unix_ns, a.start_unix_ns);
    assert_eq!(merged.duration_ns, 12_000_000_000);
}
