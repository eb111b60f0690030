//! The one gate every test skip goes through: a test that cannot run here (no root, a tool
//! missing) is skipped with a message, except under `PROFILER_REQUIRE_BPF=1` (CI), where the
//! skip is a failure. Used by the unit tests and by `tests/` alike.

/// Skips `test` because of `why`, or panics when `PROFILER_REQUIRE_BPF=1`.
pub fn skip(test: &str, why: &str) {
    if std::env::var("PROFILER_REQUIRE_BPF").as_deref() == Ok("1") {
        panic!("{test}: {why} (PROFILER_REQUIRE_BPF=1 is set: a skip is a failure)");
    }
    eprintln!("{test}: skipped: {why} (set PROFILER_REQUIRE_BPF=1 to make this a failure)");
}
