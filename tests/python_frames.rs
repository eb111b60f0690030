//! CPython frames walked in the kernel (issue 13), for every CPython 3.10 to 3.13 installed
//! here (`common::cpython`): a known chain of Python functions above the native entry, a
//! recursion 200 deep, threads, a C builtin calling back into Python (`sorted` with a key
//! function) and a generator consumed by a C builtin, with the native frames between.
//!
//! An interpreter that is not installed is left out with a message; the test is skipped
//! (a failure under `PROFILER_REQUIRE_BPF=1`) only when none is.

mod common;

use std::path::{Path, PathBuf};

use common::cpython::{interpreters, Interpreter};
use common::{arg, folded, stat, KernelTest, Record};

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/python")
        .join(name)
}

/// Stacks as frame lists (root first) with their sample counts.
type Stacks = Vec<(Vec<String>, u64)>;

/// The stacks of a folded file as frame lists (root first, thread name dropped), with counts.
fn stacks(path: &Path) -> Stacks {
    folded(path)
        .into_iter()
        .map(|(stack, count)| {
            let frames = stack.split(';').skip(1).map(str::to_string).collect();
            (frames, count)
        })
        .collect()
}

fn position(frames: &[String], name: &str) -> Option<usize> {
    frames.iter().position(|f| f == name)
}

/// Whether `names` appear in `frames` in this order, with none of them missing or repeated
/// in between (other frames may sit between them).
fn has_run(frames: &[String], names: &[&str]) -> bool {
    // Only the chain's own names: native frames sit between Python ones (the eval loop, and
    // with debug info the functions inlined into it, such as `call_function` in 3.10).
    let python: Vec<&String> = frames
        .iter()
        .filter(|f| names.contains(&f.as_str()))
        .collect();
    python
        .windows(names.len())
        .any(|w| w.iter().zip(names).all(|(f, n)| *f == n))
}

/// Runs `script` under `interp` for 2 seconds; its folded stacks and counters.
fn record(
    test: &KernelTest,
    interp: &Interpreter,
    script_name: &str,
) -> (Stacks, Vec<(String, f64)>) {
    let tag = format!(
        "{}-{}",
        script_name.trim_end_matches(".py"),
        interp.path.to_string_lossy().replace('/', "_")
    );
    let recorded = Record::new(&test.dir, &format!("{tag}.folded"))
        .args(&["-F", "499"])
        .stats(&format!("{tag}.json"))
        .command(&[arg(&interp.path), arg(&script(script_name)), "2"])
        .run();
    assert!(
        recorded.status.success(),
        "profiler record: {}",
        recorded.log
    );
    (stacks(recorded.output()), recorded.stats())
}

/// The chain `<module> -> main -> outer -> middle -> leaf` above the native entry
/// (`Py_RunMain`) in at least 95% of the samples of the script: those under the native
/// `_PyRun_SimpleFileObject` (which leaves out the interpreter's start and end) running the
/// eval loop. Walks cut until the interpreter's unwind table is built keep their Python
/// frames (the sampler sends them after the native ones; user space places them).
fn check_chain(test: &KernelTest, interp: &Interpreter) -> Result<(), String> {
    let chain = ["<module>", "main", "outer", "middle", "leaf"];
    let (stacks, counters) = record(test, interp, "chain.py");
    let running: Vec<_> = stacks
        .iter()
        .filter(|(frames, _)| {
            position(frames, "_PyRun_SimpleFileObject").is_some()
                && position(frames, "_PyEval_EvalFrameDefault").is_some()
        })
        .collect();
    let sum = |f: &dyn Fn(&[String]) -> bool| -> u64 {
        running.iter().filter(|(s, _)| f(s)).map(|(_, c)| c).sum()
    };
    let total = sum(&|_| true);
    let with_python = sum(&|f| position(f, "<module>").is_some());
    let full = sum(&|f| has_run(f, &chain) && position(f, "Py_RunMain") < position(f, "<module>"));
    eprintln!(
        "python_frames: {total} samples ran the script, {with_python} with Python frames, \
         {full} with the full chain"
    );
    if total < 100 {
        return Err(format!("only {total} samples ran the script"));
    }
    if (full as f64) < 0.95 * total as f64 {
        let worst: Vec<String> = running
            .iter()
            .filter(|(f, _)| !has_run(f, &chain))
            .take(3)
            .map(|(f, c)| format!("{} {c}", f.join(";")))
            .collect();
        return Err(format!(
            "the full chain in {full} of {total} samples ({with_python} with Python frames); \
             e.g.\n{}",
            worst.join("\n")
        ));
    }
    if stat(&counters, "python_processes") < 1.0 || stat(&counters, "python_frames") < 1.0 {
        return Err("the counters saw no Python process or frame".into());
    }
    Ok(())
}

/// Recursion, threads, a C builtin calling back into Python, a generator.
fn check_mixed(test: &KernelTest, interp: &Interpreter) -> Result<(), String> {
    let (stacks, _) = record(test, interp, "mixed.py");
    let mut problems = Vec::new();
    // 3.10 spends three frames per Python call (the Python frame, _PyEval_EvalFrameDefault and
    // _PyEval_Vector), so MAX_USER_FRAMES (512) holds about 170 levels of it.
    let want_depth = if interp.minor == 10 { 150 } else { 200 };
    let depth = stacks
        .iter()
        .map(|(f, _)| f.iter().filter(|n| *n == "recurse").count())
        .max()
        .unwrap_or(0);
    if depth < want_depth {
        problems.push(format!(
            "recursion: at most {depth} `recurse` frames in a sample"
        ));
    }
    // Every worker thread's stack is walked from its own thread state.
    for work in ["key_function", "numbers", "spin"] {
        let in_thread = stacks.iter().any(|(f, _)| {
            position(f, work).is_some()
                && position(f, "worker") < position(f, work)
                && f.iter().any(|n| n.ends_with("_bootstrap"))
        });
        if !in_thread {
            problems.push(format!(
                "threads: no `_bootstrap .. worker .. {work}` stack"
            ));
        }
    }
    // sorted() calls key_function from C: native frames sit between the two Python frames.
    let callback = stacks.iter().any(|(f, _)| {
        let (Some(outer), Some(key)) = (position(f, "sort_outer"), position(f, "key_function"))
        else {
            return false;
        };
        let between = &f[outer.min(key)..key.max(outer)];
        outer < key
            && between
                .iter()
                .any(|n| n.contains("PyObject_Call") || n.contains("sort"))
            && between.iter().any(|n| n == "_PyEval_EvalFrameDefault")
    });
    if !callback {
        problems.push("sorted: no `sort_outer .. PyObject_Call/sort .. key_function`".into());
    }
    let generator = stacks.iter().any(|(f, _)| {
        let (Some(consumer), Some(gen)) = (position(f, "consume"), position(f, "numbers")) else {
            return false;
        };
        consumer < gen
    });
    if !generator {
        problems.push("generator: no `consume .. numbers` stack".into());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

#[test]
fn python_frames_of_every_installed_cpython() {
    let Some(test) = KernelTest::start("python_frames_of_every_installed_cpython") else {
        return;
    };
    let mut found = Vec::new();
    for minor in 10..=13 {
        let list = interpreters(minor);
        if list.is_empty() {
            eprintln!("python_frames: CPython 3.{minor} is not installed here: left out");
        }
        found.extend(list);
    }
    if found.is_empty() {
        profiler::testing::skip(test.name, "no CPython 3.10 to 3.13 on PATH or in pyenv");
        return;
    }
    let mut failures = Vec::new();
    for interp in &found {
        eprintln!(
            "python_frames: {} (3.{})",
            interp.path.display(),
            interp.minor
        );
        for check in [check_chain, check_mixed] {
            if let Err(why) = check(&test, interp) {
                failures.push(format!(
                    "{} (3.{}): {why}",
                    interp.path.display(),
                    interp.minor
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
