//! Our OTLP profiles output, decoded by the OpenTelemetry project's own generated Python classes
//! (PyPI `opentelemetry-proto`) through `tests/tools/otlp_check.py`, which also checks the
//! dictionary invariants. Needs `python3` with `opentelemetry-proto` installed: without it the
//! tests are skipped, except under `PROFILER_REQUIRE_BPF=1` (CI), where they fail.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use profiler::encode::otlp::{self, OtlpContext};
use profiler::profile::{Frame, FrameKind, Module, Profile, StackSample};
use profiler::proto::otlp as proto;
use prost::Message;

/// The version CI installs; it is generated from opentelemetry-proto v1.10.0, wire-identical to
/// the v1.11.0 layout we write.
const PIP_INSTALL: &str = "pip install opentelemetry-proto==1.45.2";

fn dump_tool() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/otlp_check.py")
}

/// True when the tool and the Python classes are there; otherwise skips, or fails in CI.
fn python_available(test: &str) -> bool {
    let import = "import opentelemetry.proto.collector.profiles.v1development.profiles_service_pb2";
    let status = Command::new("python3").args(["-c", import]).output();
    let problem = match status {
        Err(e) => format!("cannot run python3: {e}"),
        Ok(out) if !out.status.success() => format!(
            "python3 lacks opentelemetry-proto ({}); run `{PIP_INSTALL}`",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Ok(_) if !dump_tool().is_file() => format!("{} is missing", dump_tool().display()),
        Ok(_) => return true,
    };
    profiler::testing::skip(test, &problem);
    false
}

/// Runs the dump tool on `bytes`; returns (exit code, stdout, stderr).
fn dump(test: &str, bytes: &[u8], args: &[&str]) -> (Option<i32>, String, String) {
    let file = common::scratch(test).join("payload.bin");
    std::fs::write(&file, bytes).expect("write payload");
    let out = Command::new("python3")
        .arg(dump_tool())
        .arg(&file)
        .args(args)
        .output()
        .expect("run otlp_check.py");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code(), stdout, stderr)
}

fn frame(function: &str, kind: FrameKind, module: Option<&Arc<Module>>, address: u64) -> Frame {
    Frame {
        function: function.into(),
        kind,
        module: module.cloned(),
        address,
    }
}

fn sample_profile() -> Profile {
    let module = |path: &str, build_id: Option<&str>| {
        Arc::new(Module {
            path: path.into(),
            build_id: build_id.map(Into::into),
        })
    };
    let app = module("/usr/bin/app", Some("abcd1234"));
    let libc = module("/usr/lib/libc.so.6", None);
    let kernel = module("[kernel.kallsyms]", None);
    let main = frame("main", FrameKind::Native, Some(&app), 0x1100);
    let work = frame("work", FrameKind::Native, Some(&app), 0x1200);
    let write = frame("write", FrameKind::Native, Some(&libc), 0x9_0000);
    let libc_raw = frame("libc.so.6+0x777", FrameKind::Native, Some(&libc), 0x777);
    let kbase = 0xffff_ffff_8100_0000;
    let syscall = frame("do_syscall_64", FrameKind::Kernel, Some(&kernel), kbase);
    let vfs = frame("vfs_write", FrameKind::Kernel, None, kbase + 0x80);
    let unknown = frame("[unknown]", FrameKind::Native, None, 0x7f00_0000_1234);
    let sample = |pid, thread: &str, frames, count| StackSample {
        pid,
        tid: 0,
        thread_name: thread.into(),
        frames,
        count,
    };
    Profile {
        start_unix_ns: 1_700_000_000_000_000_000,
        duration_ns: 5_000_000_000,
        period_ns: 10_101_010,
        executables: Default::default(),
        cgroups: Default::default(),
        samples: vec![
            sample(
                100,
                "app",
                vec![vfs, syscall, write, work.clone(), main.clone()],
                3,
            ),
            sample(100, "worker", vec![work.clone(), work, main.clone()], 2),
            sample(200, "other", vec![libc_raw, unknown, main], 1),
        ],
    }
}

fn context() -> OtlpContext {
    let mut ctx = OtlpContext::for_this_profiler("host-1".into(), "svc".into());
    ctx.executables.insert(100, "/usr/bin/app".into());
    ctx
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

fn assert_dump_ok(code: Option<i32>, stdout: &str, stderr: &str) {
    assert_eq!(code, Some(0), "otlp_check.py failed:\n{stdout}\n{stderr}");
    for line in EXPECTED_LINES {
        assert!(
            stdout.lines().any(|l| l == line),
            "missing line {line:?} in:\n{stdout}"
        );
    }
}

#[test]
fn request_decodes_with_official_classes() {
    if !python_available("request_decodes_with_official_classes") {
        return;
    }
    let bytes = otlp::encode_request(&sample_profile(), &context());
    let (code, stdout, stderr) = dump("otlp-request", &bytes, &[]);
    assert_dump_ok(code, &stdout, &stderr);
}

#[test]
fn profiles_data_file_decodes_with_official_classes() {
    if !python_available("profiles_data_file_decodes_with_official_classes") {
        return;
    }
    let mut bytes = Vec::new();
    otlp::write(&sample_profile(), &context(), &mut bytes).expect("write to a Vec");
    let (code, stdout, stderr) = dump("otlp-data", &bytes, &["--data"]);
    assert_dump_ok(code, &stdout, &stderr);
}

#[test]
fn gzip_request_decodes_with_official_classes() {
    if !python_available("gzip_request_decodes_with_official_classes") {
        return;
    }
    use std::io::Write;
    let bytes = otlp::encode_request(&sample_profile(), &context());
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gzip.write_all(&bytes).expect("gzip into a Vec");
    let gzipped = gzip.finish().expect("gzip into a Vec");
    let (code, stdout, stderr) = dump("otlp-gzip", &gzipped, &[]);
    assert_dump_ok(code, &stdout, &stderr);
}

#[test]
fn empty_profile_decodes_with_official_classes() {
    if !python_available("empty_profile_decodes_with_official_classes") {
        return;
    }
    let bytes = otlp::encode_request(&Profile::default(), &context());
    let (code, stdout, stderr) = dump("otlp-empty", &bytes, &[]);
    assert_eq!(code, Some(0), "otlp_check.py failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("total Sample messages: 0"), "{stdout}");
}

/// The tool's exit status means something: a broken dictionary makes it fail, and our own
/// checker agrees.
#[test]
fn broken_dictionary_is_rejected_by_both_checkers() {
    if !python_available("broken_dictionary_is_rejected_by_both_checkers") {
        return;
    }
    let mut request = otlp::to_request(&sample_profile(), &context());
    let dictionary = request.dictionary.as_mut().expect("dictionary");
    dictionary.stack_table[1].location_indices.push(99);
    assert!(otlp::check_request(&request).is_err());
    let bytes = request.encode_to_vec();
    assert!(proto::ExportProfilesServiceRequest::decode(bytes.as_slice()).is_ok());
    let (code, stdout, _) = dump("otlp-broken", &bytes, &[]);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains("location index 99 out of range"),
        "{stdout}"
    );
}
