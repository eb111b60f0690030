//! Reading folded stacks (`thread;root;...;leaf COUNT` lines, as `crate::encode::folded` and
//! FlameGraph's stackcollapse scripts write them). The format keeps no process IDs, modules or
//! times: frames come back as native code of unknown module, except names with perf's `_[k]`
//! kernel annotation.

use std::sync::Arc;

use crate::profile::{Frame, FrameKind, Profile, StackSample};

/// Whether `line` has the shape of a folded line: text, one space, a count.
pub fn looks_folded(line: &str) -> bool {
    line.rsplit_once(' ')
        .is_some_and(|(stack, count)| !stack.is_empty() && count.parse::<u64>().is_ok())
}

/// Parses folded text; the first element of each stack is the thread name.
pub fn parse(text: &str) -> Result<Profile, String> {
    let mut profile = Profile::default();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let bad = || format!("line {}: expected `STACK COUNT`, got {line:?}", number + 1);
        let (stack, count) = line.rsplit_once(' ').ok_or_else(bad)?;
        let count: u64 = count.parse().map_err(|_| bad())?;
        let mut names = stack.split(';');
        let thread_name = names.next().unwrap_or_default().to_owned();
        let mut frames: Vec<Frame> = names.map(frame).collect();
        frames.reverse();
        profile.samples.push(StackSample {
            pid: 0,
            tid: 0,
            thread_name,
            frames,
            count,
        });
    }
    Ok(profile)
}

fn frame(name: &str) -> Frame {
    match name.strip_suffix("_[k]") {
        Some(kernel) => Frame::new(FrameKind::Kernel, Arc::from(kernel), None, 0),
        None => Frame::new(FrameKind::Native, Arc::from(name), None, 0),
    }
}
