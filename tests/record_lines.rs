//! `profiler record` shows inlined frames with their source lines (root; see
//! common::bpf_available): folded output with `--lines`, and pprof read back by a real pprof
//! (`pprof -traces -lines`; CI builds one, see .ci/run), on a fixture whose hot loop is two
//! levels of `always_inline` helpers; and pprof shows a Rust trait method's full name.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::*;

/// The 1-based line of `tests/fixtures/inline_lines.c` holding `text`.
fn source_line(text: &str) -> u32 {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/inline_lines.c");
    let source = std::fs::read_to_string(path).expect("read the fixture source");
    let index = source
        .lines()
        .position(|l| l.contains(text))
        .unwrap_or_else(|| panic!("{text:?} in the fixture"));
    index as u32 + 1
}

/// `pprof ARGS FILE`'s output, or `None` (the test skipped) without a pprof reader.
fn pprof(test: &str, args: &[&str], file: &Path) -> Option<String> {
    let pprof = std::env::var("PPROF").unwrap_or_else(|_| "pprof".into());
    match Command::new(&pprof)
        .args(args)
        .arg(file)
        .stderr(Stdio::piped())
        .output()
    {
        Ok(run) => {
            let err = String::from_utf8_lossy(&run.stderr);
            assert!(run.status.success(), "pprof rejected the file: {err}");
            Some(String::from_utf8_lossy(&run.stdout).into_owned())
        }
        Err(e) => {
            let why = format!("no pprof reader ({pprof}: {e}); CI builds one, see .ci/run");
            profiler::testing::skip(test, &why);
            None
        }
    }
}

#[test]
fn record_shows_inlined_frames_with_their_lines() {
    let test = "record_shows_inlined_frames_with_their_lines";
    let fixture = Fixture::c("inline_lines", &["-O2", "-g"]);
    let Some((test, exe)) = KernelTest::start_with(test, fixture) else {
        return;
    };
    let (work, spin) = (source_line("spin(2000000);"), source_line("mix(i);"));
    let mix = [
        source_line("sink += i * i;"),
        source_line("sink ^= i >> 3;"),
    ];

    // Folded, with --lines: each inlined call is a frame of its own, with its line.
    let recorded = Record::new(&test.dir, "lines.folded")
        .args(&["--lines", "-F", "199"])
        .command(&[arg(&exe), "1"])
        .run();
    recorded.assert_success();
    let folded = recorded.folded();
    let total: u64 = folded.iter().map(|(_, n)| n).sum();
    let prefix = format!(";work (inline_lines.c:{work});spin (inline_lines.c:{spin});mix ");
    let in_mix = count_where(&folded, |stack| {
        stack.contains(&prefix)
            && mix
                .iter()
                .any(|l| stack.ends_with(&format!("{prefix}(inline_lines.c:{l})")))
    });
    assert!(
        in_mix * 4 >= total,
        "{in_mix} of {total} samples in mix: {folded:#?}"
    );

    // pprof: one location with three lines, innermost first, read back by pprof itself.
    let recorded = Record::new(&test.dir, "lines.pb.gz")
        .args(&["-F", "199"])
        .command(&[arg(&exe), "1"])
        .run();
    recorded.assert_success();
    let profile = recorded.pprof();
    let name = |id: u64| {
        let function = profile.function.iter().find(|f| f.id == id).unwrap();
        profile.string_table[function.name as usize].as_str()
    };
    let nested = profile.location.iter().find(|l| {
        let names: Vec<&str> = l.line.iter().map(|line| name(line.function_id)).collect();
        names == ["mix", "spin", "work"]
    });
    let nested = nested.expect("a location with mix inlined into spin inlined into work");
    assert!(mix.contains(&(nested.line[0].line as u32)));
    assert_eq!(nested.line[1].line, i64::from(spin));
    assert_eq!(nested.line[2].line, i64::from(work));

    let Some(traces) = pprof(test.name, &["-traces", "-lines"], recorded.output()) else {
        return;
    };
    let rows: Vec<&str> = traces.lines().map(str::trim).collect();
    let shown = rows.windows(3).any(|w| {
        mix.iter()
            .any(|l| w[0].ends_with(&format!("inline_lines.c:{l} (inline)")))
            && w[0].contains("mix ")
            && w[1].starts_with("spin ")
            && w[1].ends_with(&format!("inline_lines.c:{spin} (inline)"))
            && w[2].starts_with("work ")
            && w[2].ends_with(&format!("inline_lines.c:{work}"))
    });
    assert!(shown, "no mix → spin → work trace with lines in:\n{traces}");
}

#[test]
fn pprof_shows_rust_trait_methods_with_full_names() {
    let test = "pprof_shows_rust_trait_methods_with_full_names";
    let fixture = Fixture::new("trait_names.rs").flags(&["-O", "-g"]);
    let Some((test, exe)) = KernelTest::start_with(test, fixture) else {
        return;
    };
    let recorded = Record::new(&test.dir, "trait.pb.gz")
        .args(&["-F", "199"])
        .command(&[arg(&exe), "1"])
        .run();
    recorded.assert_success();
    let method = "<trait_names::Interner as trait_names::Intern>::intern_ty";
    let profile = recorded.pprof();
    let strings = &profile.string_table;
    let function = profile
        .function
        .iter()
        .find(|f| strings[f.name as usize] == method)
        .unwrap_or_else(|| panic!("no function {method}"));
    // The mangled name as the system name, so pprof does not demangle the demangled name.
    let system_name = &strings[function.system_name as usize];
    assert!(
        system_name.starts_with("_ZN") || system_name.starts_with("_R"),
        "{system_name}"
    );

    let Some(top) = pprof(test.name, &["-top", "-nodecount=3"], recorded.output()) else {
        return;
    };
    assert!(top.contains(&format!(" {method}\n")), "{top}");
}
