//! The OpenTelemetry project's own generated Python classes (PyPI `opentelemetry-proto`) reading
//! our OTLP bytes, through `tests/tools/otlp_check.py`, which prints what it decoded and checks
//! the dictionary rules. Without python3 and the classes, the tests that need them skip
//! through `profiler::testing::skip` (a failure under `PROFILER_REQUIRE_BPF=1`, as in CI).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The version CI installs; it is generated from opentelemetry-proto v1.10.0, wire-identical to
/// the v1.11.0 layout we write.
pub const PIP_INSTALL: &str = "pip install opentelemetry-proto==1.45.2";

fn tool() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/otlp_check.py")
}

/// True when python3, the classes and the tool are there; otherwise skips `test`.
pub fn available(test: &str) -> bool {
    let import = "import opentelemetry.proto.collector.profiles.v1development.profiles_service_pb2";
    let problem = match Command::new("python3").args(["-c", import]).output() {
        Err(e) => format!("cannot run python3: {e}"),
        Ok(out) if !out.status.success() => format!(
            "python3 lacks opentelemetry-proto ({}); run `{PIP_INSTALL}`",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Ok(_) if !tool().is_file() => format!("{} is missing", tool().display()),
        Ok(_) => return true,
    };
    profiler::testing::skip(test, &format!("otlp_check.py: {problem}"));
    false
}

/// What otlp_check.py said.
pub struct Checked {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Checked {
    /// Panics, with what the tool printed, unless it exited 0.
    pub fn assert_ok(&self) {
        assert_eq!(
            self.code,
            Some(0),
            "otlp_check.py failed:\n{}\n{}",
            self.stdout,
            self.stderr
        );
    }
}

/// Runs otlp_check.py with `args` on `bytes`, written to `dir/payload.bin`.
pub fn check(dir: &Path, bytes: &[u8], args: &[&str]) -> Checked {
    let file = dir.join("payload.bin");
    std::fs::write(&file, bytes).expect("write the payload");
    let out = Command::new("python3")
        .arg(tool())
        .arg(&file)
        .args(args)
        .output()
        .expect("run otlp_check.py");
    Checked {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
