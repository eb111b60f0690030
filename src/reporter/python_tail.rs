//! The Python frames of a walk the sampler cut short (issue 13). When the native walk stops at
//! a file without a table, the eval loops above the cut are not reached in the kernel, so the
//! sampler sends their interpreter frames after the native ones (`FRAME_PY_EVAL`, then
//! `FRAME_PY_LATER` frames in runs ended by `FRAME_PY_SPLIT`). Owns taking that tail off a
//! trace and handing out one run per eval-loop frame as the walk is finished in user space,
//! so Python -> C -> Python keeps its order there too.

use std::collections::VecDeque;
use std::ops::Range;

use crate::layout::{consts, UserFrame};

/// Flags of the entries that are not frames yet.
const TAIL_FLAGS: u32 =
    (consts::FRAME_PY_EVAL | consts::FRAME_PY_LATER | consts::FRAME_PY_SPLIT) as u32;

/// Whether `frame` is part of a tail (to place, or to leave out if never placed).
pub fn is_tail(frame: &UserFrame) -> bool {
    frame.flags & TAIL_FLAGS != 0
}

/// The interpreter frames of the eval-loop calls the kernel did not reach, outermost last.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PythonTail {
    /// `_PyEval_EvalFrameDefault` in the process.
    eval: Range<u64>,
    /// One run of frames (innermost first) per eval-loop call, innermost call first.
    runs: VecDeque<Vec<UserFrame>>,
}

impl PythonTail {
    /// Takes the tail off the end of `user`, if there is one.
    pub fn take(user: &mut Vec<UserFrame>) -> Option<PythonTail> {
        let start = user.iter().position(is_tail)?;
        let entries = user.split_off(start);
        let mut tail = PythonTail::default();
        let mut run = Vec::new();
        for entry in entries {
            let flags = u64::from(entry.flags);
            if flags & consts::FRAME_PY_EVAL != 0 {
                tail.eval = entry.address..entry.address.saturating_add(entry.file_id.into());
            } else if flags & consts::FRAME_PY_SPLIT != 0 {
                tail.runs.push_back(std::mem::take(&mut run));
            } else if flags & consts::FRAME_PY_LATER != 0 {
                run.push(UserFrame {
                    flags: entry.flags & !(consts::FRAME_PY_LATER as u32),
                    ..entry
                });
            }
        }
        // A run cut by the entry limit is still the innermost part of its call.
        if !run.is_empty() {
            tail.runs.push_back(run);
        }
        Some(tail)
    }

    /// The frames to place above a native frame at `lookup` (the address looked up for it):
    /// the next run when it is a call of the eval loop.
    pub fn run_for(&mut self, lookup: u64) -> Vec<UserFrame> {
        if !self.eval.contains(&lookup) {
            return Vec::new();
        }
        self.runs.pop_front().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(address: u64, file_id: u32, flags: u64) -> UserFrame {
        UserFrame {
            address,
            file_id,
            flags: flags as u32,
        }
    }

    fn python(code: u64) -> UserFrame {
        entry(code, 7, consts::FRAME_PYTHON | consts::FRAME_PY_LATER)
    }

    #[test]
    fn runs_come_out_per_eval_loop_call_in_order() {
        let native = entry(0x10, 1, consts::FRAME_RESOLVED);
        let split = entry(0, 0, consts::FRAME_PY_SPLIT);
        let mut user = vec![
            native,
            entry(0x5000, 0x100, consts::FRAME_PY_EVAL),
            python(0xa),
            python(0xb),
            split,
            python(0xc),
            split,
        ];
        let mut tail = PythonTail::take(&mut user).expect("a tail");
        assert_eq!(user, vec![native]);
        assert!(tail.run_for(0x4fff).is_empty(), "not the eval loop");
        let first = tail.run_for(0x5010);
        let codes: Vec<u64> = first.iter().map(|f| f.address).collect();
        assert_eq!(codes, [0xa, 0xb]);
        assert!(first.iter().all(|f| f.is_python() && !is_tail(f)));
        assert_eq!(tail.run_for(0x50ff)[0].address, 0xc);
        assert!(tail.run_for(0x5010).is_empty(), "no run left");
        assert!(tail.run_for(0x5100).is_empty(), "past the end");
    }

    #[test]
    fn a_trace_without_a_tail_is_left_alone() {
        let mut user = vec![entry(0x10, 1, consts::FRAME_RESOLVED), python(0xa)];
        user[1].flags &= !(consts::FRAME_PY_LATER as u32);
        let before = user.clone();
        assert_eq!(PythonTail::take(&mut user), None);
        assert_eq!(user, before);
    }

    #[test]
    fn a_run_cut_by_the_limit_still_counts() {
        let mut user = vec![entry(0x5000, 0x100, consts::FRAME_PY_EVAL), python(0xa)];
        let mut tail = PythonTail::take(&mut user).expect("a tail");
        assert!(user.is_empty());
        assert_eq!(tail.run_for(0x5000).len(), 1);
    }
}
