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
