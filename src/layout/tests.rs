//! Decoding tests for `layout`: records built byte by byte as the BPF side lays them out.

use super::*;
use libc::makedev;

fn header(record_type: u64, n_kernel: u16, n_user: u16) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&(record_type as u32).to_ne_bytes());
    b.extend_from_slice(&42u32.to_ne_bytes());
    b.extend_from_slice(&43u32.to_ne_bytes());
    b.extend_from_slice(&1u32.to_ne_bytes());
    b.extend_from_slice(&123_456u64.to_ne_bytes());
    b.extend_from_slice(b"worker\0\0\0\0\0\0\0\0\0\0");
    b.extend_from_slice(&n_kernel.to_ne_bytes());
    b.extend_from_slice(&n_user.to_ne_bytes());
    b.extend_from_slice(&(consts::TRACE_KERNEL_MODE as u32).to_ne_bytes());
    b
}

fn trace_bytes(kernel: &[u64], user: &[UserFrame], padding: usize) -> Vec<u8> {
    let mut b = header(consts::RECORD_TRACE, kernel.len() as u16, user.len() as u16);
    for a in kernel {
        b.extend_from_slice(&a.to_ne_bytes());
    }
    for f in user {
        b.extend_from_slice(&f.address.to_ne_bytes());
        b.extend_from_slice(&(u64::from(f.file_id) | u64::from(f.flags) << 32).to_ne_bytes());
    }
    b.resize(b.len() + padding, 0xAA);
    b
}

const RESOLVED: u32 = consts::FRAME_RESOLVED as u32;

#[test]
fn decodes_a_trace_with_padding() {
    let user = [
        UserFrame {
            address: 0x1234,
            file_id: 7,
            flags: RESOLVED,
        },
        UserFrame {
            address: 0x7f00_0000_1000,
            file_id: 0,
            flags: consts::FRAME_NO_PID as u32,
        },
    ];
    let rec = decode(&trace_bytes(&[0xffff_ffff_8100_0000], &user, 4)).unwrap();
    let Record::Trace(t) = rec else {
        panic!("not a trace")
    };
    assert_eq!((t.pid, t.tid, t.cpu, t.ktime_ns), (42, 43, 1, 123_456));
    assert_eq!(t.comm(), "worker");
    assert_eq!(t.kernel, vec![0xffff_ffff_8100_0000]);
    assert_eq!(t.user, user);
    assert!(t.user[0].is_resolved() && !t.user[1].is_resolved());
    assert!(t.has_raw_frames());
    assert_eq!(t.flags as u64, consts::TRACE_KERNEL_MODE);
}

#[test]
fn rejects_truncated_and_unknown_records() {
    let full = trace_bytes(
        &[1, 2],
        &[UserFrame {
            address: 3,
            file_id: 0,
            flags: 0,
        }],
        0,
    );
    assert!(matches!(
        decode(&full[..full.len() - 1]),
        Err(DecodeError::TooShort { .. })
    ));
    assert!(matches!(
        decode(&full[..10]),
        Err(DecodeError::TooShort { .. })
    ));
    assert_eq!(decode(&[99, 0, 0, 0]), Err(DecodeError::UnknownType(99)));
    assert!(decode(&[]).is_err());
    let mut bad = trace_bytes(&[], &[], 0);
    bad[40] = 0xff; // n_kernel = 255
    assert!(matches!(
        decode(&bad),
        Err(DecodeError::TooManyFrames { .. })
    ));
}

fn proc_event(record_type: u64, addr: u64) -> Vec<u8> {
    let mut b = (record_type as u32).to_ne_bytes().to_vec();
    b.extend_from_slice(&7u32.to_ne_bytes());
    b.extend_from_slice(&99u64.to_ne_bytes());
    b.extend_from_slice(&addr.to_ne_bytes());
    b.extend_from_slice(&4242u64.to_ne_bytes());
    b.extend_from_slice(&4343u64.to_ne_bytes());
    b
}

#[test]
fn decodes_process_events_and_reports() {
    assert_eq!(
        decode(&proc_event(consts::RECORD_EXIT, 0)),
        Ok(Record::Exit {
            pid: 7,
            start_ns: 4242,
            ktime_ns: 99
        })
    );
    assert_eq!(
        decode(&proc_event(consts::RECORD_UNKNOWN_PID, 0)),
        Ok(Record::UnknownPid {
            pid: 7,
            start_ns: 4242,
            exec_gen: 4343,
            ktime_ns: 99
        })
    );
    assert_eq!(
        decode(&proc_event(consts::RECORD_UNKNOWN_MAPPING, 0x5000)),
        Ok(Record::UnknownMapping {
            pid: 7,
            start_ns: 4242,
            exec_gen: 4343,
            ktime_ns: 99,
            addr: 0x5000
        })
    );
    assert!(decode(&proc_event(consts::RECORD_EXIT, 0)[..36]).is_err());
}

#[test]
fn decodes_exec_with_a_short_path() {
    let mut b = (consts::RECORD_EXEC as u32).to_ne_bytes().to_vec();
    b.extend_from_slice(&7u32.to_ne_bytes());
    b.extend_from_slice(&99u64.to_ne_bytes());
    b.extend_from_slice(&4242u64.to_ne_bytes());
    b.extend_from_slice(&4343u64.to_ne_bytes());
    b.extend_from_slice(&1234u64.to_ne_bytes());
    b.extend_from_slice(&((8u32 << 20) | 2).to_ne_bytes());
    b.extend_from_slice(&10u32.to_ne_bytes());
    b.extend_from_slice(b"/bin/true\0");
    let Ok(Record::Exec(e)) = decode(&b) else {
        panic!("not an exec")
    };
    assert_eq!(
        (
            e.pid,
            e.start_ns,
            e.exec_gen,
            e.inode,
            e.dev,
            e.path.as_str()
        ),
        (7, 4242, 4343, 1234, makedev(8, 2), "/bin/true")
    );
    assert!(
        decode(&b[..b.len() - 1]).is_err(),
        "path shorter than path_len"
    );
}

#[test]
fn decodes_vma_records() {
    let mut b = (consts::RECORD_VMA as u32).to_ne_bytes().to_vec();
    b.extend_from_slice(&7u32.to_ne_bytes());
    for v in [99u64, 0x1000, 0x3000, 0x2000, 55] {
        b.extend_from_slice(&v.to_ne_bytes());
    }
    b.extend_from_slice(&((0xfd << 20) | 1u32).to_ne_bytes());
    b.extend_from_slice(&1u32.to_ne_bytes());
    let Ok(Record::Vma(v)) = decode(&b) else {
        panic!("not a vma")
    };
    assert_eq!(
        (v.start, v.end, v.file_offset, v.inode, v.dev),
        (0x1000, 0x3000, 0x2000, 55, makedev(0xfd, 1))
    );
}

#[test]
fn mapping_keys_and_values_round_trip() {
    let key = PidMappingKey::new(0x0102_0304, 0x7f00_0000_1000, 96);
    let bytes = key.to_bytes();
    assert_eq!(&bytes[4..8], &[1, 2, 3, 4], "PID is big-endian");
    assert_eq!(bytes[8], 0, "address is big-endian");
    assert_eq!(PidMappingKey::from_bytes(&bytes), Some(key));
    assert_eq!((key.pid(), key.addr()), (0x0102_0304, 0x7f00_0000_1000));
    let value = PidMappingValue {
        file_id: 3,
        flags: 2,
        prefixlen: 80,
        bias: 0x7f00_0000_0000,
        prefix_addr: 0x1000,
        exec_gen: 9,
        table: TableRef {
            first: 5,
            direct: 6,
            base: 0x7000,
        },
        map_start: 0x7f00_0000_1000,
        map_end: 0x7f00_0000_9000,
    };
    assert_eq!(PidMappingValue::from_bytes(&value.to_bytes()), Some(value));
}

#[test]
fn generated_constants_match_the_header() {
    assert_eq!(
        consts::MAX_FRAME_WORDS,
        consts::MAX_KERNEL_FRAMES + 2 * consts::MAX_USER_FRAMES
    );
    assert_eq!(consts::TRACE_USTACK_FAILED, 8);
    assert_eq!(
        consts::COUNTER_FRAMES_FIRST_SIGHT,
        consts::COUNTER_UNWIND_BASE + consts::UNWIND_OUTCOMES,
        "the outcome counters end where the first-sight ones begin"
    );
    assert_eq!(consts::COUNTER_MAX, consts::COUNTER_MAPPINGS_SENT + 1);
    assert_eq!(consts::PID_MAPPING_KEY_BITS, 96);
}

#[test]
fn file_table_keys_use_the_kernel_device_encoding() {
    for (major, minor) in [(8, 1), (0, 25), (259, 3), (4095, 0xfffff), (253, 300)] {
        let key = FileTableKey::new(makedev(major, minor), 77);
        assert_eq!(
            kernel_dev(key.dev),
            makedev(major, minor),
            "{major}:{minor}"
        );
        assert_eq!(key.dev, (major << 20) | minor);
    }
    let bytes = FileTableKey::new(makedev(8, 1), 0x1122).to_bytes();
    assert_eq!(
        u32::from_ne_bytes(bytes[0..4].try_into().unwrap()),
        (8 << 20) | 1
    );
    assert_eq!(u64::from_ne_bytes(bytes[8..16].try_into().unwrap()), 0x1122);
    let original = FileTableValue::new(
        5,
        TableRef {
            first: 10,
            direct: 20,
            base: 0x1000,
        },
        true,
    );
    let value = original.to_bytes();
    assert_eq!(FileTableValue::from_bytes(&value), original);
    assert_eq!(value[0..4], 5u32.to_ne_bytes());
    assert_eq!(value[8..12], 20u32.to_ne_bytes());
    assert_eq!(
        value[12..16],
        (consts::MAPPING_TABLE_PENDING as u32).to_ne_bytes()
    );
    assert_eq!(value[16..24], 0x1000u64.to_ne_bytes());
}

#[test]
fn decodes_stack_records_and_rejects_short_ones() {
    let mut b = Vec::new();
    for word in [consts::RECORD_STACK as u32, 7, 8, 16] {
        b.extend_from_slice(&word.to_ne_bytes()); // type, pid, tid, len
    }
    for word in [99u64, 0x401000, 0x7ffc_0000, 0x7ffc_0100] {
        b.extend_from_slice(&word.to_ne_bytes()); // ktime, pc, sp, bp
    }
    b.extend_from_slice(&1u32.to_ne_bytes()); // pc_exact
    b.extend_from_slice(&1u32.to_ne_bytes()); // n_vmas
    let mut vmas = vec![0u8; PROC_VMA_SLOTS * 40];
    vmas[0..8].copy_from_slice(&0x400000u64.to_ne_bytes());
    vmas[8..16].copy_from_slice(&0x500000u64.to_ne_bytes());
    vmas[16..24].copy_from_slice(&0x1000u64.to_ne_bytes());
    vmas[24..32].copy_from_slice(&42u64.to_ne_bytes());
    vmas[32..36].copy_from_slice(&((8u32 << 20) | 1).to_ne_bytes());
    b.extend_from_slice(&vmas);
    b.extend_from_slice(&[0xab; 16]);
    let Ok(Record::Stack(s)) = decode(&b) else {
        panic!("not a stack record")
    };
    assert_eq!(
        (s.pid, s.tid, s.ktime_ns, s.pc, s.sp, s.bp),
        (7, 8, 99, 0x401000, 0x7ffc_0000, 0x7ffc_0100)
    );
    assert!(s.pc_exact);
    assert_eq!(s.vmas.len(), 1);
    assert_eq!(
        (s.vmas[0].start, s.vmas[0].offset, s.vmas[0].inode),
        (0x400000, 0x1000, 42)
    );
    assert_eq!(s.stack, vec![0xab; 16]);
    assert!(
        decode(&b[..b.len() - 1]).is_err(),
        "fewer stack bytes than len"
    );
}

#[test]
fn decodes_mappings_records_and_rejects_short_ones() {
    let mut b = Vec::new();
    // type, pid, n (more than the slots: only the slots count), flags
    for word in [consts::RECORD_MAPPINGS as u32, 9, 99, 1] {
        b.extend_from_slice(&word.to_ne_bytes());
    }
    let mut vmas = vec![0u8; PROC_VMA_SLOTS * 40];
    for (i, slot) in vmas.chunks_mut(40).enumerate() {
        slot[0..8].copy_from_slice(&(0x400000 + 0x1000 * i as u64).to_ne_bytes());
        slot[24..32].copy_from_slice(&(100 + i as u64).to_ne_bytes());
    }
    b.extend_from_slice(&vmas);
    let Ok(Record::Mappings(m)) = decode(&b) else {
        panic!("not a mappings record")
    };
    assert_eq!(m.pid, 9);
    assert_eq!(m.vmas.len(), PROC_VMA_SLOTS);
    assert_eq!((m.vmas[1].start, m.vmas[1].inode), (0x401000, 101));
    assert!(decode(&b[..b.len() - 1]).is_err(), "a slot cut short");
}
