//! Tests of `super` (the OTLP encoder) that need its private parts. The rest, through the public
//! API and held to the dictionary rules, are in `tests/otlp_encode.rs`.

use super::*;

/// Attributes as `key=value` text.
fn attributes(d: &proto::ProfilesDictionary, indices: &[i32]) -> Vec<String> {
    let text = |value: &Option<proto::AnyValue>| match value.as_ref().and_then(|v| v.value.as_ref())
    {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        other => format!("{other:?}"),
    };
    let at = |i: i32| &d.attribute_table[usize::try_from(i).expect("non-negative index")];
    indices
        .iter()
        .map(|&i| at(i))
        .map(|a| {
            let key = &d.string_table[usize::try_from(a.key_strindex).expect("an index")];
            format!("{key}={}", text(&a.value))
        })
        .collect()
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

#[test]
fn inlined_frames_are_one_location_with_lines() {
    use crate::profile::{Module, SourceLine};
    use std::sync::Arc;
    let app = Arc::new(Module {
        path: "/usr/bin/app".into(),
        build_id: None,
    });
    let at = |name: &str, line, inlined| {
        let mut frame = Frame::new(FrameKind::Native, name.into(), Some(app.clone()), 0x1100);
        frame.source = Some(SourceLine {
            file: "/src/app.c".into(),
            line,
        });
        frame.inlined = inlined;
        frame
    };
    let mut work = at("app::work", 12, false);
    work.system_name = Some("_ZN3app4work17h0123456789abcdefE".into());
    let frames = [at("helper", 7, true), work];
    let mut builder = Builder::default();
    let stack = builder.stack(&frames);
    let d = builder.finish();
    let locations = &d.stack_table[usize::try_from(stack).unwrap()].location_indices;
    assert_eq!(locations.len(), 1);
    let location = &d.location_table[usize::try_from(locations[0]).unwrap()];
    let string = |i: i32| d.string_table[usize::try_from(i).unwrap()].as_str();
    let lines: Vec<(&str, &str, &str, i64)> = location
        .lines
        .iter()
        .map(|l| {
            let f = &d.function_table[usize::try_from(l.function_index).unwrap()];
            let names = (string(f.name_strindex), string(f.system_name_strindex));
            (names.0, names.1, string(f.filename_strindex), l.line)
        })
        .collect();
    assert_eq!(
        lines,
        [
            ("helper", "", "/src/app.c", 7),
            (
                "app::work",
                "_ZN3app4work17h0123456789abcdefE",
                "/src/app.c",
                12
            )
        ]
    );
}
