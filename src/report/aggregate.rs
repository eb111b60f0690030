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
            candidates.push(PathBuf::from(format!(
                "/proc/{pid}/map_files/{start:x}-{end:x}"
            )));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::maps::parse_maps;
    use crate::profile::FrameKind;

    fn snapshot(maps: &str) -> ProcessSnapshot {
        ProcessSnapshot {
            pid: 9,
            start_time: 1,
            valid_from_ktime: 0,
            comm: "app".into(),
            exe: None,
            maps: parse_maps(maps).executable,
            bad_map_lines: 0,
        }
    }

    fn trace(kernel: Vec<u64>, user: Vec<u64>, flags: u64) -> RawTrace {
        let mut comm = [0u8; 16];
        comm[..3].copy_from_slice(b"app");
        RawTrace {
            pid: 9,
            tid: 10,
            cpu: 0,
            ktime_ns: 5,
            comm,
            flags: flags as u32,
            kernel,
            user,
        }
    }

    const MAPS: &str = "1000-2000 r-xp 00003000 fd:01 42 /bin/app\n";

    #[test]
    fn user_addresses_become_file_offsets_and_callers_are_looked_up_one_byte_back() {
        let stats = Stats::default();
        let mut agg = Aggregator::default();
        let snap = snapshot(MAPS);
        agg.add(
            &trace(vec![], vec![0x1100, 0x1200, 0x9000], 0),
            Some(&snap),
            &stats,
        );
        agg.add(
            &trace(vec![], vec![0x1100, 0x1200, 0x9000], 0),
            Some(&snap),
            &stats,
        );
        assert_eq!(agg.len(), 1, "identical stacks aggregate");
        let (key, count) = agg.stacks.iter().next().unwrap();
        assert_eq!(*count, 2);
        assert_eq!(
            &key.frames[..],
            &[
                RawFrame::File {
                    file: 0,
                    offset: 0x3100
                }, // the leaf, as sampled
                RawFrame::File {
                    file: 0,
                    offset: 0x31ff
                }, // a return address, minus one
                RawFrame::Unmapped(0x9000),
            ]
        );
        assert_eq!(Stats::get(&stats.raw_frames_resolved), 4);
        assert_eq!(Stats::get(&stats.raw_frames_unresolved), 2);
        assert_eq!(key.thread_name, "app");
    }

    #[test]
    fn in_kernel_mode_the_user_leaf_is_a_return_address_too() {
        let stats = Stats::default();
        let mut agg = Aggregator::default();
        let snap = snapshot(MAPS);
        agg.add(
            &trace(
                vec![0xffff_ffff_8100_0010, 0xffff_ffff_8100_0020],
                vec![0x1100],
                consts::TRACE_KERNEL_MODE,
            ),
            Some(&snap),
            &stats,
        );
        let key = agg.stacks.keys().next().unwrap();
        assert_eq!(
            &key.frames[..],
            &[
                RawFrame::Kernel(0xffff_ffff_8100_0010),
                RawFrame::Kernel(0xffff_ffff_8100_001f),
                RawFrame::File {
                    file: 0,
                    offset: 0x30ff
                },
            ]
        );
    }

    #[test]
    fn without_a_snapshot_frames_stay_raw_and_become_unknown() {
        let stats = Stats::default();
        let mut agg = Aggregator::default();
        agg.add(&trace(vec![], vec![0x1100], 0), None, &stats);
        let mut symbolizer = Symbolizer::new(None);
        let profile = agg.into_profile(&mut symbolizer, Profile::default());
        assert_eq!(profile.samples.len(), 1);
        let frame = &profile.samples[0].frames[0];
        assert_eq!(
            (&*frame.function, frame.kind),
            ("[unknown]", FrameKind::Native)
        );
        assert_eq!(Stats::get(&stats.raw_frames_unresolved), 1);
    }

    #[test]
    fn an_unreadable_file_gives_module_plus_offset_frames() {
        let stats = Stats::default();
        let mut agg = Aggregator::default();
        let snap = snapshot("1000-2000 r-xp 00003000 fd:01 42 /nonexistent/app\n");
        agg.add(&trace(vec![], vec![0x1100], 0), Some(&snap), &stats);
        let profile = agg.into_profile(&mut Symbolizer::new(None), Profile::default());
        let frame = &profile.samples[0].frames[0];
        assert_eq!(&*frame.function, "app+0x3100");
        assert_eq!(frame.module.as_ref().unwrap().path, "/nonexistent/app");
    }
}
