//! Counting distinct stacks, and turning them into a symbolized `Profile` at the end.
//!
//! Stacks are kept as raw frames (kernel address, or file + offset, or an address no mapping
//! covered) so aggregation is cheap; each distinct frame is symbolized once, at flush time.

use std::collections::HashMap;
use std::path::PathBuf;

use crate::process::maps::Mapping;
use crate::process::ProcessSnapshot;
use crate::profile::{Frame, Profile, StackSample};
use crate::stats::Stats;
use crate::symbolize::{FileRef, Symbolizer};
use crate::sys::bpf::layout::{consts, RawTrace};

/// Index into `Aggregator::files`.
type FileIndex = u32;

/// A frame before symbolization.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RawFrame {
    Kernel(u64),
    File {
        file: FileIndex,
        offset: u64,
    },
    /// A user address in no known mapping (or of a process with no snapshot).
    Unmapped(u64),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct StackKey {
    pid: u32,
    thread_name: String,
    frames: Box<[RawFrame]>,
}

/// A file frames point into, and where it can be opened.
#[derive(Clone, Debug)]
struct FileInfo {
    path: String,
    dev: u64,
    inode: u64,
    /// A few (pid, start, end) mappings of it, for `/proc/PID/map_files/START-END` (works for
    /// deleted files) and `/proc/PID/root/PATH` (other mount namespaces).
    seen_in: Vec<(u32, u64, u64)>,
}

/// The stacks of one session or window.
#[derive(Default)]
pub struct Aggregator {
    stacks: HashMap<StackKey, u64>,
    files: Vec<FileInfo>,
    file_index: HashMap<(u64, u64, String), FileIndex>,
}

impl Aggregator {
    /// Adds one sample, translating user addresses through the process's snapshot.
    pub fn add(&mut self, trace: &RawTrace, snapshot: Option<&ProcessSnapshot>, stats: &Stats) {
        let kernel_mode = trace.flags as u64 & consts::TRACE_KERNEL_MODE != 0;
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
        for (i, &addr) in trace.user.iter().enumerate() {
            let lookup = if i == 0 && !kernel_mode {
                addr
            } else {
                addr.saturating_sub(1)
            };
            match snapshot.and_then(|s| s.maps.find(lookup).map(|m| (s.pid, m))) {
                Some((pid, mapping)) => {
                    resolved += 1;
                    frames.push(self.file_frame(pid, mapping, lookup));
                }
                None => {
                    unresolved += 1;
                    frames.push(RawFrame::Unmapped(addr));
                }
            }
        }
        Stats::add(&stats.raw_frames_resolved, resolved);
        Stats::add(&stats.raw_frames_unresolved, unresolved);
        let key = StackKey {
            pid: trace.pid,
            thread_name: trace.comm(),
            frames: frames.into(),
        };
        *self.stacks.entry(key).or_insert(0) += 1;
    }

    fn file_frame(&mut self, pid: u32, mapping: &Mapping, addr: u64) -> RawFrame {
        let Some(path) = mapping.name() else {
            return RawFrame::Unmapped(addr); // anonymous executable memory (JIT)
        };
        let key = (mapping.dev, mapping.inode, path.to_string());
        let files = &mut self.files;
        let index = *self.file_index.entry(key).or_insert_with(|| {
            files.push(FileInfo {
                path: path.to_string(),
                dev: mapping.dev,
                inode: mapping.inode,
                seen_in: Vec::new(),
            });
            (files.len() - 1) as FileIndex
        });
        let info = &mut self.files[index as usize];
        if info.seen_in.len() < 3 && !info.seen_in.iter().any(|&(p, ..)| p == pid) {
            info.seen_in.push((pid, mapping.start, mapping.end));
        }
        RawFrame::File {
            file: index,
            offset: mapping.file_offset(addr),
        }
    }

    /// Distinct stacks so far.
    pub fn len(&self) -> usize {
        self.stacks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.stacks.is_empty()
    }

    /// Symbolizes every distinct frame once and builds the profile.
    pub fn into_profile(self, symbolizer: &mut Symbolizer, mut profile: Profile) -> Profile {
        let refs: Vec<FileRef> = self.files.iter().map(file_ref).collect();
        let mut cache: HashMap<RawFrame, Frame> = HashMap::new();
        let mut samples = Vec::with_capacity(self.stacks.len());
        for (key, count) in self.stacks {
            let frames = key
                .frames
                .iter()
                .map(|raw| {
                    cache
                        .entry(*raw)
                        .or_insert_with(|| match *raw {
                            RawFrame::Kernel(addr) => symbolizer.kernel_frame(addr),
                            RawFrame::File { file, offset } => {
                                symbolizer.native_frame(&refs[file as usize], offset)
                            }
                            RawFrame::Unmapped(addr) => symbolizer.unknown_frame(addr),
                        })
                        .clone()
                })
                .collect();
            samples.push(StackSample {
                pid: key.pid,
                thread_name: key.thread_name,
                frames,
                count,
            });
        }
        samples.sort_by(|a, b| b.count.cmp(&a.count).then(a.pid.cmp(&b.pid)));
        profile.samples = samples;
        profile
    }
}

fn file_ref(info: &FileInfo) -> FileRef {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if info.path.starts_with('/') {
        for &(pid, start, end) in &info.seen_in {
            candidates.push(PathBuf::from(format!("/proc/{pid}/map_files/{start:x}-{end:x}")));
            candidates.push(PathBuf::from(format!("/proc/{pid}/root{}", info.path)));
        }
        candidates.push(PathBuf::from(&info.path));
    }
    FileRef {
        path: info.path.clone(),
        dev: info.dev,
        inode: info.inode,
        candidates,
    }
}
