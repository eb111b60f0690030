//! Counting distinct stacks, and turning them into a symbolized `Profile` at the end.
//!
//! Stacks are kept as raw frames (kernel address, or file + offset, or an address nothing
//! resolved) so aggregation is cheap; each distinct frame is symbolized once, at flush time.
//! Files come from the maintainer (with an open handle, so they can be read after their
//! process is gone or the file deleted) or, for processes too short-lived for it, from the
//! kernel's VMA reports, named after the exec that loaded them.

use std::collections::{HashMap, HashSet, VecDeque};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::python_tail::is_tail;
use super::vmas::{VmaHit, Vmas};
use crate::layout::{consts, ExecRecord, RawTrace};
use crate::process::files::SharedFile;
use crate::profile::{Frame, FrameKind, Module, Profile, SourceLine, StackSample};
use crate::python::{CodeCache, LiveMemory, PythonProcess};
use crate::stats::Stats;
use crate::symbolize::{FileRef, Symbolizer};

/// Index into `Aggregator::files`.
type Slot = u32;

/// A frame before symbolization.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RawFrame {
    Kernel(u64),
    File {
        slot: Slot,
        offset: u64,
    },
    /// A user address nothing resolved.
    Unmapped(u64),
    /// A CPython frame: code object address in the process, instruction position.
    Python {
        pid: u32,
        code: u64,
        position: u32,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct StackKey {
    pid: u32,
    tid: u32,
    thread_name: String,
    frames: Box<[RawFrame]>,
}

/// A file frames point into.
#[derive(Clone, Debug, Default)]
struct FileEntry {
    path: Option<String>,
    dev: u64,
    inode: u64,
    /// The maintainer's registration, whose open handle keeps the file readable.
    registered: Option<SharedFile>,
}

/// The stacks of one session or window.
#[derive(Default)]
pub struct Aggregator {
    stacks: HashMap<StackKey, u64>,
    files: Vec<FileEntry>,
    by_file_id: HashMap<u32, Slot>,
    by_inode: HashMap<(u64, u64), Slot>,
    /// Executables by (dev, inode), as exec named them.
    exec_paths: HashMap<(u64, u64), String>,
    /// Each process's executable (from `/proc/PID/exe` when the maintainer synced it, else as
    /// exec named it).
    executables: HashMap<u32, String>,
    /// Processes named by their exec, oldest first: the exit of a process never sampled is not
    /// sent, so its name is dropped after a while unless it was sampled ([`Self::forget_unsampled`]).
    named_at_exec: VecDeque<(u32, Instant)>,
    /// Processes sampled since they were named.
    sampled: HashSet<u32>,
    /// Files the maintainer released: their handles are dropped after the next flush.
    released: Vec<u32>,
    /// Frames naming a file ID never announced (a bug if ever non-zero).
    pub unknown_file_ids: u64,
    /// CPython processes and their code objects, read when first sampled.
    python: CodeCache,
}

impl Aggregator {
    fn slot_for_inode(&mut self, dev: u64, inode: u64) -> Slot {
        if let Some(&slot) = self.by_inode.get(&(dev, inode)) {
            return slot;
        }
        self.files.push(FileEntry {
            dev,
            inode,
            ..Default::default()
        });
        let slot = (self.files.len() - 1) as Slot;
        self.by_inode.insert((dev, inode), slot);
        slot
    }

    /// The maintainer registered a file: frames with its ID resolve to it.
    pub fn on_file(&mut self, file: SharedFile) {
        let slot = self.slot_for_inode(file.key.dev, file.key.inode);
        self.by_file_id.insert(file.id, slot);
        let entry = &mut self.files[slot as usize];
        entry.path.get_or_insert_with(|| file.path.clone());
        entry.registered.get_or_insert(file);
    }

    pub fn on_exec(&mut self, exec: &ExecRecord) {
        if !exec.path.is_empty() {
            self.exec_paths
                .entry((exec.dev, exec.inode))
                .or_insert_with(|| exec.path.clone());
            self.executables.insert(exec.pid, exec.path.clone());
            self.named_at_exec.push_back((exec.pid, Instant::now()));
        }
    }

    /// The maintainer found a CPython process: its frames can be named from now on.
    pub fn on_python(&mut self, process: Arc<PythonProcess>) {
        self.python.on_process(process);
    }

    /// The maintainer read a process's executable.
    pub fn on_process(&mut self, pid: u32, exe: String) {
        self.executables.insert(pid, exe);
    }

    /// The maintainer no longer tracks a file; keep it until the stacks naming it are flushed.
    pub fn on_file_released(&mut self, id: u32) {
        self.released.push(id);
    }

    /// Forgets a process that exited long ago (long-running sessions).
    pub fn forget_process(&mut self, pid: u32) {
        self.executables.remove(&pid);
        self.sampled.remove(&pid);
    }

    /// Forgets the names of processes exec'd longer than `retention` ago and never sampled
    /// (their exits are not sent). One sampled later is named again by the maintainer's sync.
    pub fn forget_unsampled(&mut self, now: Instant, retention: Duration) {
        while let Some(&(pid, at)) = self.named_at_exec.front() {
            if now.saturating_duration_since(at) < retention {
                break;
            }
            self.named_at_exec.pop_front();
            if !self.sampled.contains(&pid) {
                self.executables.remove(&pid);
            }
        }
    }

    /// Adds one sample.
    /// Whether the maintainer announced this file (frames may name it).
    pub fn knows_file(&self, id: u32) -> bool {
        self.by_file_id.contains_key(&id)
    }

    pub fn add(&mut self, trace: &RawTrace, vmas: &Vmas, stats: &Stats) {
        self.sampled.insert(trace.pid);
        let kernel_mode = u64::from(trace.flags) & consts::TRACE_KERNEL_MODE != 0;
        let mut frames = Vec::with_capacity(trace.kernel.len() + trace.user.len());
        for (i, &addr) in trace.kernel.iter().enumerate() {
            // Past the leaf, addresses are return addresses: look up the call instruction.
            frames.push(RawFrame::Kernel(if i == 0 {
                addr
            } else {
                addr.saturating_sub(1)
            }));
        }
        let (mut resolved, mut unresolved) = (0, 0);
        let mut checked = HashSet::new();
        for (i, frame) in trace.user.iter().enumerate() {
            if is_tail(frame) {
                continue; // Python frames of a walk that was never finished: no place for them
            }
            if frame.is_python() {
                // Read the code object now, while the process is surely alive (checked once
                // per trace: the address may hold another code object than when first read).
                let (pid, code) = (trace.pid, frame.address);
                let check = checked.insert(code);
                if self
                    .python
                    .get(pid, code, &LiveMemory(pid), check)
                    .is_none()
                {
                    Stats::inc(&stats.python_code_unreadable);
                }
                frames.push(RawFrame::Python {
                    pid,
                    code,
                    position: frame.file_id,
                });
                continue;
            }
            let back = u64::from(i > 0 || kernel_mode);
            if frame.is_resolved() {
                match self.by_file_id.get(&frame.file_id) {
                    Some(&slot) => frames.push(RawFrame::File {
                        slot,
                        offset: frame.address.saturating_sub(back),
                    }),
                    None => {
                        self.unknown_file_ids += 1;
                        frames.push(RawFrame::Unmapped(frame.address));
                    }
                }
                continue;
            }
            match vmas.lookup(trace.pid, frame.address, trace.ktime_ns) {
                Some(VmaHit {
                    dev,
                    inode,
                    file_offset,
                }) => {
                    resolved += 1;
                    let slot = self.slot_for_inode(dev, inode);
                    frames.push(RawFrame::File {
                        slot,
                        offset: file_offset.saturating_sub(back),
                    });
                }
                None => {
                    unresolved += 1;
                    frames.push(RawFrame::Unmapped(frame.address));
                }
            }
        }
        Stats::add(&stats.raw_frames_resolved, resolved);
        Stats::add(&stats.raw_frames_unresolved, unresolved);
        let key = StackKey {
            pid: trace.pid,
            tid: trace.tid,
            thread_name: trace.comm(),
            frames: frames.into(),
        };
        *self.stacks.entry(key).or_insert(0) += 1;
        Stats::set(&stats.window_stacks, self.stacks.len() as u64);
    }

    /// Distinct stacks so far.
    pub fn len(&self) -> usize {
        self.stacks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.stacks.is_empty()
    }

    /// How to open a file for symbolization: the maintainer's handle first (through
    /// /proc/self/fd, which works for deleted files), then its path.
    fn file_ref(&self, entry: &FileEntry) -> FileRef {
        let path = entry
            .path
            .clone()
            .or_else(|| self.exec_paths.get(&(entry.dev, entry.inode)).cloned())
            .unwrap_or_else(|| format!("[inode {}]", entry.inode));
        let mut candidates = Vec::new();
        if let Some(handle) = entry.registered.as_ref().and_then(|f| f.handle.as_ref()) {
            candidates.push(PathBuf::from(format!(
                "/proc/self/fd/{}",
                handle.as_raw_fd()
            )));
        }
        if path.starts_with('/') {
            candidates.push(PathBuf::from(&path));
        }
        FileRef {
            path,
            dev: entry.dev,
            inode: entry.inode,
            candidates,
        }
    }

    /// Symbolizes every distinct frame of the stacks collected so far into `profile` (which
    /// carries times and period), and starts a new window. What is known about files and
    /// processes is kept for the next windows.
    pub fn flush(&mut self, symbolizer: &mut Symbolizer, profile: Profile) -> Profile {
        self.flush_kept(symbolizer, profile, &|_, _, _| true, &mut 0)
    }

    /// [`Aggregator::flush`], leaving out the stacks that `keep` (given the PID, the thread
    /// name and the executable) refuses; their samples are added to `dropped`.
    pub fn flush_kept(
        &mut self,
        symbolizer: &mut Symbolizer,
        mut profile: Profile,
        keep: &dyn Fn(u32, &str, Option<&str>) -> bool,
        dropped: &mut u64,
    ) -> Profile {
        let refs: Vec<FileRef> = self.files.iter().map(|f| self.file_ref(f)).collect();
        let mut kept = Vec::with_capacity(self.stacks.len());
        for (key, count) in std::mem::take(&mut self.stacks) {
            let executable = self.executables.get(&key.pid).map(String::as_str);
            if keep(key.pid, &key.thread_name, executable) {
                kept.push((key, count));
            } else {
                *dropped += count;
            }
        }
        // Each raw frame symbolizes once per flush; a native one may stand for several frames
        // (the functions inlined at its address, then its own).
        let mut cache: HashMap<RawFrame, Vec<Frame>> = HashMap::new();
        // File frames first, one file after another: each file's DWARF is then parsed once even
        // when the symbolizer must drop one file's before the next (its memory budget).
        let mut in_files: Vec<(Slot, u64)> = kept
            .iter()
            .flat_map(|(key, _)| key.frames.iter())
            .filter_map(|raw| match *raw {
                RawFrame::File { slot, offset } => Some((slot, offset)),
                _ => None,
            })
            .collect();
        in_files.sort_unstable_by_key(|&(slot, offset)| {
            let file = &refs[slot as usize];
            (file.dev, file.inode, slot, offset)
        });
        in_files.dedup();
        for (slot, offset) in in_files {
            let frames = symbolizer.native_frame_chain(&refs[slot as usize], offset);
            cache.insert(RawFrame::File { slot, offset }, frames);
        }
        let mut samples = Vec::with_capacity(kept.len());
        for (key, count) in kept {
            let mut frames = Vec::with_capacity(key.frames.len());
            for raw in &key.frames {
                let symbolized = cache.entry(*raw).or_insert_with(|| match *raw {
                    RawFrame::Kernel(addr) => vec![symbolizer.kernel_frame(addr)],
                    RawFrame::File { slot, offset } => {
                        symbolizer.native_frame_chain(&refs[slot as usize], offset)
                    }
                    RawFrame::Unmapped(addr) => vec![symbolizer.unknown_frame(addr)],
                    RawFrame::Python {
                        pid,
                        code,
                        position,
                    } => vec![python_frame(&mut self.python, pid, code, position)],
                });
                frames.extend_from_slice(symbolized);
            }
            if let Some(exe) = self.executables.get(&key.pid) {
                profile.executables.insert(key.pid, exe.clone());
            }
            samples.push(StackSample {
                pid: key.pid,
                tid: key.tid,
                thread_name: key.thread_name,
                frames,
                count,
            });
        }
        samples.sort_by(|a, b| b.count.cmp(&a.count).then(a.pid.cmp(&b.pid)));
        profile.samples = samples;
        for id in std::mem::take(&mut self.released) {
            if let Some(slot) = self.by_file_id.remove(&id) {
                self.files[slot as usize].registered = None;
            }
        }
        profile
    }
}

/// A CPython frame: the function's qualified name, its file as the module and the line.
fn python_frame(codes: &mut CodeCache, pid: u32, code: u64, position: u32) -> Frame {
    // Read when the frame was first added; a process gone since cannot be read again.
    let Some(info) = codes.get(pid, code, &LiveMemory(pid), false) else {
        return Frame::new(
            FrameKind::Python,
            format!("[python code 0x{code:x}]").into(),
            None,
            u64::from(position),
        );
    };
    let module = Arc::new(Module {
        path: info.file.to_string(),
        build_id: None,
    });
    let mut frame = Frame::new(
        FrameKind::Python,
        info.name.clone(),
        Some(module),
        u64::from(position),
    );
    frame.source = Some(SourceLine {
        file: info.file.clone(),
        line: info.line(position),
    });
    frame
}

#[cfg(test)]
#[path = "aggregate_tests.rs"]
mod tests;
