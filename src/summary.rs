//! The "top functions" summary printed at the end of a recording.
//!
//! This module owns counting samples per function (by self time and by total time) and rendering
//! the result as a small aligned text table. It does not print anything; the caller decides where
//! the text goes.
//!
//! A function is identified by its name and where it lives: `name (libc.so.6)` for native code,
//! `name [kernel]` for kernel code, so that two functions of the same name in different files are
//! not added up.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use crate::profile::{Frame, FrameKind, Profile};

/// How many samples a function accounts for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionCount {
    /// Display identity, e.g. `memcpy (libc.so.6)` or `do_syscall_64 [kernel]`.
    pub name: String,
    pub samples: u64,
}

/// What a stack without frames is attributed to, so its samples do not disappear.
const UNKNOWN: &str = "[unknown]";

/// The `n` functions with the most samples, counted two ways: by self (the function was the leaf,
/// where the CPU was) and by total (the function was anywhere on the stack, counted once per
/// stack even when it recurses). Both are sorted by count, descending, then by name.
pub fn top_functions(profile: &Profile, n: usize) -> (Vec<FunctionCount>, Vec<FunctionCount>) {
    top_functions_by(profile, n, identity)
}

/// [`top_functions`] with functions told apart by `name_of` (e.g. by name alone, for formats
/// that do not keep modules).
pub fn top_functions_by(
    profile: &Profile,
    n: usize,
    name_of: impl Fn(&Frame) -> String,
) -> (Vec<FunctionCount>, Vec<FunctionCount>) {
    let counts = function_counts(profile, name_of);
    let by_self = counts
        .iter()
        .filter(|(_, (own, _))| *own > 0)
        .map(|(name, (own, _))| (name.clone(), *own))
        .collect();
    let by_total = counts
        .into_iter()
        .map(|(name, (_, total))| (name, total))
        .collect();
    (top(by_self, n), top(by_total, n))
}

/// Every function's (self, total) samples, functions named by `name_of`.
pub fn function_counts(
    profile: &Profile,
    name_of: impl Fn(&Frame) -> String,
) -> HashMap<String, (u64, u64)> {
    let mut counts: HashMap<String, (u64, u64)> = HashMap::new();
    let mut on_stack: HashSet<String> = HashSet::new();
    for sample in profile.samples.iter().filter(|s| s.count > 0) {
        let leaf = sample
            .frames
            .first()
            .map_or_else(|| UNKNOWN.to_owned(), &name_of);
        let own = &mut counts.entry(leaf).or_default().0;
        *own = own.saturating_add(sample.count);

        on_stack.clear();
        on_stack.extend(sample.frames.iter().map(&name_of));
        if on_stack.is_empty() {
            on_stack.insert(UNKNOWN.to_owned());
        }
        for name in on_stack.drain() {
            let total = &mut counts.entry(name).or_default().1;
            *total = total.saturating_add(sample.count);
        }
    }
    counts
}

/// Renders `rows` under `title` as a table of samples, share of `total_samples`, and function:
///
/// ```text
/// Top functions by self samples:
///   SAMPLES       %  FUNCTION
///       532   43.1%  memcpy (libc.so.6)
/// ```
pub fn format_top(title: &str, rows: &[FunctionCount], total_samples: u64) -> String {
    let mut text = format!("{title}\n");
    if rows.is_empty() {
        text.push_str("  (no samples)\n");
        return text;
    }
    let width = rows
        .iter()
        .map(|row| row.samples.to_string().len())
        .chain([SAMPLES_HEADER.len()])
        .max()
        .unwrap_or(SAMPLES_HEADER.len());
    // Writing to a `String` cannot fail, so the `fmt::Result`s below are ignored.
    let _ = writeln!(text, "  {SAMPLES_HEADER:>width$}  {:>6}  FUNCTION", "%");
    for row in rows {
        let share = percent(row.samples, total_samples);
        let _ = writeln!(
            text,
            "  {:>width$}  {share:>5.1}%  {}",
            row.samples, row.name
        );
    }
    text
}

const SAMPLES_HEADER: &str = "SAMPLES";

/// `part` as a percentage of `whole`; 0 when there is nothing to divide by.
pub fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    part as f64 * 100.0 / whole as f64
}

/// A frame's function identity: `name [kernel]`, `name (module file name)`, or just `name` when
/// not even the module is known.
pub fn identity(frame: &Frame) -> String {
    let name = if frame.function.is_empty() {
        UNKNOWN
    } else {
        &frame.function
    };
    match (frame.kind, &frame.module) {
        (FrameKind::Kernel, _) => format!("{name} [kernel]"),
        (FrameKind::Native | FrameKind::Python, Some(module)) => {
            format!("{name} ({})", file_name(&module.path))
        }
        (FrameKind::Native | FrameKind::Python, None) => name.to_owned(),
    }
}

/// The last component of a path (`/usr/lib/libc.so.6` → `libc.so.6`); `[vdso]` stays `[vdso]`.
fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The `n` largest counts, descending, ties broken by name so the output is stable.
fn top(counts: HashMap<String, u64>, n: usize) -> Vec<FunctionCount> {
    let mut rows: Vec<FunctionCount> = counts
        .into_iter()
        .map(|(name, samples)| FunctionCount { name, samples })
        .collect();
    rows.sort_unstable_by(|a, b| b.samples.cmp(&a.samples).then_with(|| a.name.cmp(&b.name)));
    rows.truncate(n);
    rows
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::profile::{Module, StackSample};

    fn module(path: &str) -> Option<Arc<Module>> {
        Some(Arc::new(Module {
            path: path.into(),
            build_id: None,
        }))
    }

    fn native(name: &str, path: &str) -> Frame {
        Frame::new(FrameKind::Native, name.into(), module(path), 0)
    }

    fn kernel(name: &str) -> Frame {
        Frame::new(
            FrameKind::Kernel,
            name.into(),
            module("[kernel.kallsyms]"),
            0,
        )
    }

    fn sample(frames: Vec<Frame>, count: u64) -> StackSample {
        StackSample {
            pid: 1,
            tid: 0,
            thread_name: "t".into(),
            frames,
            count,
        }
    }

    fn rows(rows: &[(&str, u64)]) -> Vec<FunctionCount> {
        rows.iter()
            .map(|&(name, samples)| FunctionCount {
                name: name.into(),
                samples,
            })
            .collect()
    }

    fn profile(samples: Vec<StackSample>) -> Profile {
        Profile {
            samples,
            executables: Default::default(),
            ..Profile::default()
        }
    }

    #[test]
    fn self_and_total() {
        let main = native("main", "/usr/bin/app");
        let work = native("work", "/usr/bin/app");
        let memcpy = native("memcpy", "/usr/lib/libc.so.6");
        let p = profile(vec![
            sample(vec![memcpy.clone(), work.clone(), main.clone()], 5),
            sample(vec![kernel("do_syscall_64"), memcpy, main.clone()], 2),
            sample(vec![work, main], 4),
        ]);
        let (by_self, by_total) = top_functions(&p, 10);
        assert_eq!(
            by_self,
            rows(&[
                ("memcpy (libc.so.6)", 5),
                ("work (app)", 4),
                ("do_syscall_64 [kernel]", 2)
            ])
        );
        assert_eq!(
            by_total,
            rows(&[
                ("main (app)", 11),
                ("work (app)", 9),
                ("memcpy (libc.so.6)", 7),
                ("do_syscall_64 [kernel]", 2),
            ])
        );
    }

    #[test]
    fn recursion_counts_once_per_stack() {
        let f = native("f", "/bin/x");
        let p = profile(vec![sample(vec![f.clone(), f.clone(), f], 3)]);
        let (by_self, by_total) = top_functions(&p, 10);
        assert_eq!(by_self, rows(&[("f (x)", 3)]));
        assert_eq!(by_total, rows(&[("f (x)", 3)]));
    }

    #[test]
    fn same_name_different_modules_stay_apart() {
        let p = profile(vec![
            sample(vec![native("init", "/a/liba.so")], 1),
            sample(vec![native("init", "/b/libb.so")], 1),
            sample(vec![kernel("init")], 1),
        ]);
        let (by_self, _) = top_functions(&p, 10);
        assert_eq!(
            by_self,
            rows(&[
                ("init (liba.so)", 1),
                ("init (libb.so)", 1),
                ("init [kernel]", 1)
            ])
        );
    }

    #[test]
    fn sorted_by_count_then_name_and_truncated() {
        let p = profile(vec![
            sample(vec![native("b", "/m")], 2),
            sample(vec![native("a", "/m")], 2),
            sample(vec![native("c", "/m")], 7),
            sample(vec![native("d", "/m")], 1),
        ]);
        let (by_self, by_total) = top_functions(&p, 3);
        assert_eq!(by_self, rows(&[("c (m)", 7), ("a (m)", 2), ("b (m)", 2)]));
        assert_eq!(by_total, by_self);
        assert!(top_functions(&p, 0).0.is_empty());
    }

    #[test]
    fn unknown_module_empty_stack_and_zero_counts() {
        let unknown = Frame::new(FrameKind::Native, "[unknown]".into(), None, 0x1234);
        let p = profile(vec![
            sample(vec![unknown], 1),
            sample(vec![], 2),
            sample(vec![native("never", "/m")], 0),
        ]);
        let (by_self, by_total) = top_functions(&p, 10);
        assert_eq!(by_self, rows(&[("[unknown]", 3)]));
        assert_eq!(by_total, rows(&[("[unknown]", 3)]));
    }

    #[test]
    fn format_table() {
        let table = format_top(
            "Top functions by self samples:",
            &rows(&[("memcpy (libc.so.6)", 12345678), ("main (app)", 1)]),
            24691356,
        );
        assert_eq!(
            table,
            "Top functions by self samples:\n\
             \x20  SAMPLES       %  FUNCTION\n\
             \x20 12345678   50.0%  memcpy (libc.so.6)\n\
             \x20        1    0.0%  main (app)\n"
        );
    }

    #[test]
    fn format_narrow_and_edge_cases() {
        let table = format_top("T", &rows(&[("f", 1)]), 3);
        assert_eq!(
            table,
            "T\n  SAMPLES       %  FUNCTION\n        1   33.3%  f\n"
        );
        let all = format_top("T", &rows(&[("f", 4)]), 4);
        assert!(all.contains("  100.0%  f\n"), "{all}");
        // No division by zero.
        assert!(format_top("T", &rows(&[("f", 4)]), 0).contains("    0.0%  f\n"));
        assert_eq!(format_top("T", &[], 0), "T\n  (no samples)\n");
    }

    #[test]
    fn an_inlined_call_is_a_function_of_its_own() {
        // The CPU was in `helper`, inlined into `work` at the same address.
        let mut helper = native("helper", "/usr/bin/app");
        helper.inlined = true;
        let work = native("work", "/usr/bin/app");
        let main = native("main", "/usr/bin/app");
        let p = profile(vec![sample(vec![helper, work, main], 3)]);
        let (by_self, by_total) = top_functions(&p, 10);
        assert_eq!(by_self, rows(&[("helper (app)", 3)]));
        assert_eq!(
            by_total,
            rows(&[("helper (app)", 3), ("main (app)", 3), ("work (app)", 3)])
        );
    }
}
