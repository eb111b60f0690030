//! Aggregator tests: frame translation, return-address adjustment, VMA fallback, naming.

use std::sync::Arc;

use super::*;
use crate::layout::{UserFrame, VmaRecord};
use crate::process::files::{FileInfo, FileKey};
use crate::profile::FrameKind;

const RESOLVED: u32 = consts::FRAME_RESOLVED as u32;
const NO_PID: u32 = consts::FRAME_NO_PID as u32;

fn trace(kernel: Vec<u64>, user: Vec<UserFrame>, flags: u64) -> RawTrace {
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

fn resolved(file_id: u32, address: u64) -> UserFrame {
    UserFrame {
        address,
        file_id,
        flags: RESOLVED,
    }
}

fn raw(address: u64) -> UserFrame {
    UserFrame {
        address,
        file_id: 0,
        flags: NO_PID,
    }
}

fn file(id: u32, path: &str, inode: u64) -> SharedFile {
    let key = FileKey {
        dev: 1,
        inode,
        size: 0,
        mtime_ns: 0,
    };
    Arc::new(FileInfo {
        id,
        key,
        path: path.into(),
        handle: None,
    })
}

#[test]
fn resolved_frames_use_their_file_and_callers_are_looked_up_one_byte_back() {
    let (stats, vmas) = (Stats::default(), Vmas::default());
    let mut agg = Aggregator::default();
    agg.on_file(file(3, "/bin/app", 42));
    let t = trace(
        vec![],
        vec![resolved(3, 0x3100), resolved(3, 0x3200), raw(0x9000)],
        0,
    );
    agg.add(&t, &vmas, &stats);
    agg.add(&t, &vmas, &stats);
    assert_eq!(agg.len(), 1, "identical stacks aggregate");
    let (key, count) = agg.stacks.iter().next().unwrap();
    assert_eq!(*count, 2);
    assert_eq!(
        &key.frames[..],
        &[
            RawFrame::File {
                slot: 0,
                offset: 0x3100
            }, // the leaf, as sampled
            RawFrame::File {
                slot: 0,
                offset: 0x31ff
            }, // a return address, minus one
            RawFrame::Unmapped(0x9000),
        ]
    );
    assert_eq!(Stats::get(&stats.raw_frames_unresolved), 2);
    assert_eq!(key.thread_name, "app");
}

#[test]
fn in_kernel_mode_the_user_leaf_is_a_return_address_too() {
    let (stats, vmas) = (Stats::default(), Vmas::default());
    let mut agg = Aggregator::default();
    agg.on_file(file(3, "/bin/app", 42));
    let kernel = vec![0xffff_ffff_8100_0010, 0xffff_ffff_8100_0020];
    agg.add(
        &trace(kernel, vec![resolved(3, 0x3100)], consts::TRACE_KERNEL_MODE),
        &vmas,
        &stats,
    );
    let key = agg.stacks.keys().next().unwrap();
    assert_eq!(
        &key.frames[..],
        &[
            RawFrame::Kernel(0xffff_ffff_8100_0010),
            RawFrame::Kernel(0xffff_ffff_8100_001f),
            RawFrame::File {
                slot: 0,
                offset: 0x30ff
            },
        ]
    );
}

#[test]
fn raw_frames_resolve_through_vma_reports_named_by_exec() {
    let stats = Stats::default();
    let mut vmas = Vmas::default();
    vmas.add(VmaRecord {
        pid: 9,
        ktime_ns: 5,
        start: 0x400000,
        end: 0x401000,
        file_offset: 0x1000,
        inode: 77,
        dev: 1,
    });
    let mut agg = Aggregator::default();
    agg.on_exec(&ExecRecord {
        pid: 9,
        ktime_ns: 1,
        start_ns: 1,
        exec_gen: 1,
        inode: 77,
        dev: 1,
        path: "/nonexistent/true".into(),
    });
    agg.add(&trace(vec![], vec![raw(0x400010)], 0), &vmas, &stats);
    assert_eq!(Stats::get(&stats.raw_frames_resolved), 1);
    let profile = agg.flush(&mut Symbolizer::new(None), Profile::default());
    let frame = &profile.samples[0].frames[0];
    assert_eq!(
        &*frame.function, "true+0x1010",
        "unreadable file: module+offset"
    );
    assert_eq!(frame.module.as_ref().unwrap().path, "/nonexistent/true");
}

#[test]
fn unresolved_frames_become_unknown_and_never_vanish() {
    let (stats, vmas) = (Stats::default(), Vmas::default());
    let mut agg = Aggregator::default();
    agg.add(
        &trace(vec![], vec![raw(0x1100), resolved(99, 0x10)], 0),
        &vmas,
        &stats,
    );
    assert_eq!(agg.unknown_file_ids, 1);
    let profile = agg.flush(&mut Symbolizer::new(None), Profile::default());
    let frames = &profile.samples[0].frames;
    assert_eq!(frames.len(), 2);
    assert!(frames
        .iter()
        .all(|f| &*f.function == "[unknown]" && f.kind == FrameKind::Native));
}

#[test]
fn files_known_by_id_and_by_vma_share_one_slot() {
    let stats = Stats::default();
    let mut vmas = Vmas::default();
    vmas.add(VmaRecord {
        pid: 9,
        ktime_ns: 5,
        start: 0x7000,
        end: 0x8000,
        file_offset: 0,
        inode: 42,
        dev: 1,
    });
    let mut agg = Aggregator::default();
    agg.add(&trace(vec![], vec![raw(0x7010)], 0), &vmas, &stats);
    agg.on_file(file(3, "/lib/libc.so.6", 42));
    agg.add(&trace(vec![], vec![resolved(3, 0x10)], 0), &vmas, &stats);
    assert_eq!(agg.files.len(), 1);
    assert_eq!(agg.len(), 1, "the same frame either way");
}

#[test]
fn exec_names_of_processes_never_sampled_are_forgotten_after_the_retention() {
    let stats = Stats::default();
    let exec = |pid| ExecRecord {
        pid,
        ktime_ns: 1,
        start_ns: 1,
        exec_gen: 1,
        inode: 77,
        dev: 1,
        path: format!("/bin/p{pid}"),
    };
    let mut agg = Aggregator::default();
    agg.on_exec(&exec(1));
    agg.on_exec(&exec(2));
    agg.add(
        &trace(vec![], vec![raw(0x1100)], 0),
        &Vmas::default(),
        &stats,
    ); // pid 9
    agg.add(
        &RawTrace {
            pid: 2,
            ..trace(vec![], vec![raw(0x1100)], 0)
        },
        &Vmas::default(),
        &stats,
    );
    let retention = Duration::from_secs(60);
    agg.forget_unsampled(Instant::now(), retention);
    assert_eq!(agg.executables.len(), 2, "within the retention both stay");
    agg.forget_unsampled(Instant::now() + retention, retention);
    assert!(
        !agg.executables.contains_key(&1),
        "never sampled: forgotten"
    );
    assert_eq!(agg.executables.get(&2).map(String::as_str), Some("/bin/p2"));
}

#[test]
fn stacks_a_filter_refuses_are_counted_and_left_out() {
    let (stats, vmas) = (Stats::default(), Vmas::default());
    let mut agg = Aggregator::default();
    agg.on_process(9, "/usr/bin/app".into());
    for _ in 0..3 {
        agg.add(
            &trace(vec![0xffff_ffff_8100_0000], vec![], 0),
            &vmas,
            &stats,
        );
    }
    let seen = std::cell::RefCell::new(Vec::new());
    let keep = |pid: u32, thread: &str, exe: Option<&str>| {
        seen.borrow_mut()
            .push((pid, thread.to_owned(), exe.map(str::to_owned)));
        false
    };
    let mut dropped = 0;
    let profile = agg.flush_kept(
        &mut Symbolizer::new(None),
        Profile::default(),
        &keep,
        &mut dropped,
    );
    assert!(profile.samples.is_empty());
    assert_eq!(dropped, 3);
    assert_eq!(
        seen.into_inner(),
        [(9, "app".to_owned(), Some("/usr/bin/app".to_owned()))]
    );
}
