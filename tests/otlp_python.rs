//! Our OTLP profiles output, decoded by the OpenTelemetry project's own generated Python classes
//! (PyPI `opentelemetry-proto`) through `tests/tools/otlp_check.py`, which also checks the
//! dictionary invariants. Needs `python3` with `opentelemetry-proto` installed: without it the
//! tests are skipped, except under `PROFILER_REQUIRE_BPF=1` (CI), where they fail.

mod common;

use profiler::encode::otlp;
use profiler::profile::Profile;
use profiler::proto::otlp as proto;
use prost::Message;

use common::otlp::{context, sample_profile};
use common::otlp_check::check_request;
use common::python::{self, Checked};
use common::scratch;

/// Runs the tool on `bytes` in a scratch directory of `test`'s.
fn dump(test: &str, bytes: &[u8], args: &[&str]) -> Checked {
    python::check(&scratch(test), bytes, args)
}

/// What the tool must print for `sample_profile()`: stacks root first, with their attributes.
const EXPECTED_LINES: [&str; 8] = [
    "resource[0] {'host.name': 'host-1', 'service.name': 'svc', 'process.pid': 100, \
     'process.executable.name': 'app', 'process.executable.path': '/usr/bin/app'}",
    "  scope='profiler' profile[0] sample_type=samples/count samples=2 period=10101010 \
     time=1700000000000000000 dur=5000000000",
    "           3 main;work;write;do_syscall_64;vfs_write  ['thread.name=app']",
    "           2 main;work;work  ['thread.name=worker']",
    "resource[1] {'host.name': 'host-1', 'service.name': 'svc', 'process.pid': 200, \
     'process.executable.name': 'other'}",
    "           1 main;?+0x7f0000001234;/usr/lib/libc.so.6+0x777  ['thread.name=other']",
    "total Sample messages: 3",
    "dictionary: strings=16 mappings=4 locations=8 functions=6 stacks=4 attributes=7 links=1",
];

fn assert_dump_ok(checked: &Checked) {
    checked.assert_ok();
    let stdout = &checked.stdout;
    for line in EXPECTED_LINES {
        assert!(
            stdout.lines().any(|l| l == line),
            "missing line {line:?} in:\n{stdout}"
        );
    }
}

#[test]
fn request_decodes_with_official_classes() {
    if !python::available("request_decodes_with_official_classes") {
        return;
    }
    let bytes = otlp::encode_request(&sample_profile(), &context());
    assert_dump_ok(&dump("otlp-request", &bytes, &[]));
}

#[test]
fn profiles_data_file_decodes_with_official_classes() {
    if !python::available("profiles_data_file_decodes_with_official_classes") {
        return;
    }
    let mut bytes = Vec::new();
    otlp::write(&sample_profile(), &context(), &mut bytes).expect("write to a Vec");
    assert_dump_ok(&dump("otlp-data", &bytes, &["--data"]));
}

#[test]
fn gzip_request_decodes_with_official_classes() {
    if !python::available("gzip_request_decodes_with_official_classes") {
        return;
    }
    use std::io::Write;
    let bytes = otlp::encode_request(&sample_profile(), &context());
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gzip.write_all(&bytes).expect("gzip into a Vec");
    let gzipped = gzip.finish().expect("gzip into a Vec");
    assert_dump_ok(&dump("otlp-gzip", &gzipped, &[]));
}

#[test]
fn empty_profile_decodes_with_official_classes() {
    if !python::available("empty_profile_decodes_with_official_classes") {
        return;
    }
    let bytes = otlp::encode_request(&Profile::default(), &context());
    let checked = dump("otlp-empty", &bytes, &[]);
    checked.assert_ok();
    assert!(
        checked.stdout.contains("total Sample messages: 0"),
        "{}",
        checked.stdout
    );
}

/// The tool's exit status means something: a broken dictionary makes it fail, and our own
/// checker agrees.
#[test]
fn broken_dictionary_is_rejected_by_both_checkers() {
    if !python::available("broken_dictionary_is_rejected_by_both_checkers") {
        return;
    }
    let mut request = otlp::to_request(&sample_profile(), &context());
    let dictionary = request.dictionary.as_mut().expect("dictionary");
    dictionary.stack_table[1].location_indices.push(99);
    assert!(check_request(&request).is_err());
    let bytes = request.encode_to_vec();
    assert!(proto::ExportProfilesServiceRequest::decode(bytes.as_slice()).is_ok());
    let checked = dump("otlp-broken", &bytes, &[]);
    assert_eq!(checked.code, Some(1), "{}", checked.stdout);
    assert!(
        checked.stdout.contains("location index 99 out of range"),
        "{}",
        checked.stdout
    );
}
