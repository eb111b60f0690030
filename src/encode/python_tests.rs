//! Python frames in the encoded profiles: pprof and OTLP carry each frame's source file (on its
//! function) and line (on its location's line); OTLP marks the frame type `cpython`.

use std::sync::Arc;

use crate::profile::{Frame, FrameKind, Module, Profile, SourceLine, StackSample};

fn python_profile() -> Profile {
    let file: Arc<str> = "/srv/app/jobs.py".into();
    let module = Arc::new(Module {
        path: file.to_string(),
        build_id: None,
    });
    let mut frame = Frame::new(FrameKind::Python, "Job.run".into(), Some(module), 0x40);
    frame.source = Some(SourceLine { file, line: 17 });
    Profile {
        period_ns: 10_000_000,
        samples: vec![StackSample {
            pid: 7,
            tid: 7,
            thread_name: "python3".into(),
            frames: vec![frame],
            count: 2,
        }],
        ..Default::default()
    }
}

#[test]
fn pprof_carries_file_and_line() {
    let p = super::pprof::to_proto(&python_profile());
    let string = |i: i64| p.string_table[usize::try_from(i).expect("an index")].clone();
    let line = &p.location[0].line[0];
    assert_eq!(line.line, 17);
    let function = p
        .function
        .iter()
        .find(|f| f.id == line.function_id)
        .expect("the line's function");
    assert_eq!(string(function.name), "Job.run");
    assert_eq!(string(function.filename), "/srv/app/jobs.py");
}

#[test]
fn otlp_carries_file_line_and_frame_type() {
    let ctx = super::otlp::OtlpContext::for_this_profiler(String::new(), String::new());
    let data = super::otlp::to_profiles_data(&python_profile(), &ctx);
    let d = data.dictionary.expect("a dictionary");
    let string = |i: i32| d.string_table[usize::try_from(i).expect("an index")].clone();
    let location = d
        .location_table
        .iter()
        .find(|l| !l.lines.is_empty())
        .expect("a location with a line");
    let line = &location.lines[0];
    assert_eq!(line.line, 17);
    let function = &d.function_table[usize::try_from(line.function_index).expect("an index")];
    assert_eq!(string(function.name_strindex), "Job.run");
    assert_eq!(string(function.filename_strindex), "/srv/app/jobs.py");
    let types: Vec<String> = location
        .attribute_indices
        .iter()
        .map(|&i| &d.attribute_table[usize::try_from(i).expect("an index")])
        .filter(|a| string(a.key_strindex) == "profile.frame.type")
        .map(|a| format!("{:?}", a.value))
        .collect();
    assert!(
        types.len() == 1 && types[0].contains("cpython"),
        "{types:?}"
    );
}
