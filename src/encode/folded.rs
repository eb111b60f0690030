//! Folded stacks, the text format of Brendan Gregg's FlameGraph tools.
//!
//! One line per distinct stack: `thread;root;...;leaf COUNT`, exactly one space before the count.
//! The first element is the sampled thread's name (`comm`). Names are written as they are, with
//! no `_[k]` kernel annotation, as `perf script | stackcollapse-perf.pl` does by default: that
//! is what speedscope, inferno and flamegraph.pl expect.
//!
//! A function inlined at a sampled address is a frame of its own, as perf shows it. With
//! `lines` (`record --lines`), each frame whose source position is known reads
//! `function (file.c:LINE)`: the file name without its directory, and the line in that function
//! (for a caller, the line of the call). Without, names are written alone.
//!
//! This module owns the line syntax only: escaping names so that `;`, the final space and the
//! newline keep their meaning, merging stacks that fold to the same text, and a deterministic
//! (sorted) order.

use std::collections::BTreeMap;
use std::io::{self, Write};

use crate::profile::{Frame, Profile, SourceLine};

/// What an empty name becomes, so a line never has an empty element.
const UNKNOWN: &str = "[unknown]";

/// Folds `profile` into `(stack, count)` pairs: one per distinct folded text, counts summed,
/// sorted by text. Stacks sampled zero times are left out.
pub fn fold(profile: &Profile) -> Vec<(String, u64)> {
    fold_with(profile, false)
}

/// [`fold`], with each frame's source position when `lines` is set.
pub fn fold_with(profile: &Profile, with_lines: bool) -> Vec<(String, u64)> {
    let mut lines: BTreeMap<String, u64> = BTreeMap::new();
    for sample in profile.samples.iter().filter(|s| s.count > 0) {
        let stack = fold_stack(&sample.thread_name, &sample.frames, with_lines);
        let count = lines.entry(stack).or_insert(0);
        *count = count.saturating_add(sample.count);
    }
    lines.into_iter().collect()
}

/// The whole profile as folded text, one `\n`-terminated line per stack.
pub fn encode(profile: &Profile) -> String {
    encode_with(profile, false)
}

/// [`encode`], with each frame's source position when `lines` is set.
pub fn encode_with(profile: &Profile, lines: bool) -> String {
    let mut text = String::new();
    for (stack, count) in fold_with(profile, lines) {
        text.push_str(&stack);
        text.push(' ');
        text.push_str(&count.to_string());
        text.push('\n');
    }
    text
}

/// Writes the folded text of `profile` to `out`.
pub fn write(profile: &Profile, out: &mut dyn Write) -> io::Result<()> {
    out.write_all(encode(profile).as_bytes())
}

/// Writes [`encode_with`]'s text to `out`.
pub fn write_with(profile: &Profile, lines: bool, out: &mut dyn Write) -> io::Result<()> {
    out.write_all(encode_with(profile, lines).as_bytes())
}

/// `thread;root;...;leaf`, from frames given leaf first.
fn fold_stack(thread_name: &str, frames: &[Frame], lines: bool) -> String {
    let mut stack = String::with_capacity(16 + frames.len() * 24);
    push_name(&mut stack, thread_name);
    for frame in frames.iter().rev() {
        stack.push(';');
        match frame.source.as_ref().filter(|_| lines) {
            Some(source) => push_name(&mut stack, &with_source(&frame.function, source)),
            None => push_name(&mut stack, &frame.function),
        }
    }
    stack
}

/// `function (file.c:LINE)`, or `function (file.c)` when the line is unknown.
fn with_source(function: &str, source: &SourceLine) -> String {
    let file = source.file.rsplit('/').next().unwrap_or(&source.file);
    match source.line {
        0 => format!("{function} ({file})"),
        line => format!("{function} ({file}:{line})"),
    }
}

/// Appends `name` with the characters that would break the line syntax replaced: `;` separates
/// frames (becomes `:`), and a newline, carriage return or tab would end or misalign the line
/// (becomes a space). An empty name becomes `[unknown]`.
fn push_name(out: &mut String, name: &str) {
    if name.is_empty() {
        out.push_str(UNKNOWN);
        return;
    }
    out.extend(name.chars().map(|c| match c {
        ';' => ':',
        '\n' | '\r' | '\t' => ' ',
        c => c,
    }));
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::profile::{FrameKind, Module, StackSample};

    fn native(name: &str) -> Frame {
        let module = Arc::new(Module {
            path: "/usr/bin/app".into(),
            build_id: None,
        });
        Frame::new(FrameKind::Native, name.into(), Some(module), 0x1000)
    }

    fn kernel(name: &str) -> Frame {
        let module = Arc::new(Module {
            path: "[kernel.kallsyms]".into(),
            build_id: None,
        });
        Frame::new(
            FrameKind::Kernel,
            name.into(),
            Some(module),
            0xffff_ffff_8100_0000,
        )
    }

    fn sample(thread: &str, frames: Vec<Frame>, count: u64) -> StackSample {
        StackSample {
            pid: 42,
            tid: 0,
            thread_name: thread.into(),
            frames,
            count,
        }
    }

    fn profile(samples: Vec<StackSample>) -> Profile {
        Profile {
            samples,
            executables: Default::default(),
            cgroups: Default::default(),
            ..Profile::default()
        }
    }

    #[test]
    fn orders_root_to_leaf_after_thread() {
        // Leaf first, as the profile stores them: kernel frames, then user frames.
        let frames = vec![kernel("do_syscall_64"), native("write"), native("main")];
        let text = encode(&profile(vec![sample("app", frames, 3)]));
        assert_eq!(text, "app;main;write;do_syscall_64 3\n");
    }

    #[test]
    fn escapes_separators_and_whitespace() {
        let frames = vec![native("a;b"), native("line\nbreak\r\ttab")];
        let text = encode(&profile(vec![sample("my;thread\n", frames, 1)]));
        assert_eq!(text, "my:thread ;line break  tab;a:b 1\n");
        assert_eq!(text.matches('\n').count(), 1);
    }

    #[test]
    fn empty_names_become_unknown() {
        let frames = vec![native(""), native("main")];
        let text = encode(&profile(vec![sample("", frames, 1)]));
        assert_eq!(text, "[unknown];main;[unknown] 1\n");
        assert!(!text.contains(";;"));
    }

    #[test]
    fn stack_without_frames_is_just_the_thread() {
        let text = encode(&profile(vec![sample("idle", vec![], 2)]));
        assert_eq!(text, "idle 2\n");
    }

    #[test]
    fn merges_identical_lines_and_sorts() {
        let samples = vec![
            sample("b", vec![native("f")], 1),
            // Differ only by a character that escaping maps onto the same text.
            sample("a", vec![native("x;y")], 2),
            sample("a", vec![native("x:y")], 3),
            sample("b", vec![native("f")], 4),
            // A different pid does not make a different folded line.
            StackSample {
                pid: 7,
                tid: 0,
                ..sample("b", vec![native("f")], 5)
            },
        ];
        let text = encode(&profile(samples));
        assert_eq!(text, "a;x:y 5\nb;f 10\n");
    }

    #[test]
    fn kernel_and_native_frames_are_written_alike() {
        let samples = vec![
            sample("t", vec![native("f")], 1),
            sample("t", vec![kernel("f")], 1),
        ];
        let text = encode(&profile(samples));
        assert_eq!(text, "t;f 2\n");
    }

    #[test]
    fn count_formatting() {
        let samples = vec![
            sample("big", vec![native("f")], u64::MAX),
            sample("big", vec![native("f")], 1),
            sample("one", vec![native("f")], 1),
            sample("zero", vec![native("f")], 0),
        ];
        let text = encode(&profile(samples));
        // Saturates rather than wrapping; zero-count stacks are dropped; one space, no padding.
        assert_eq!(text, format!("big;f {}\none;f 1\n", u64::MAX));
    }

    #[test]
    fn write_matches_encode() {
        let p = profile(vec![sample("t", vec![native("main")], 9)]);
        let mut out = Vec::new();
        write(&p, &mut out).expect("write to a Vec");
        assert_eq!(out, encode(&p).into_bytes());
    }

    #[test]
    fn empty_profile_is_empty_text() {
        assert_eq!(encode(&Profile::default()), "");
    }

    #[test]
    fn inlined_frames_and_source_lines() {
        let mut helper = native("helper");
        helper.inlined = true;
        helper.source = Some(SourceLine {
            file: "/src/dir/lib.h".into(),
            line: 7,
        });
        let mut work = native("work");
        work.source = Some(SourceLine {
            file: "/src/work.c".into(),
            line: 12,
        });
        let mut main = native("main");
        main.source = Some(SourceLine {
            file: "/src/work.c".into(),
            line: 0,
        });
        let p = profile(vec![sample("app", vec![helper, work, main], 2)]);
        assert_eq!(encode(&p), "app;main;work;helper 2\n");
        assert_eq!(
            encode_with(&p, true),
            "app;main (work.c);work (work.c:12);helper (lib.h:7) 2\n"
        );
    }
}
