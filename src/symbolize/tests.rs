//! Tests of the [`Symbolizer`]: frames, caching, sharing and fallbacks.

use std::io::Cursor;

use std::path::{Path, PathBuf};

use super::*;

/// The frame of the function the code at `offset` belongs to (the last of its chain).
fn outermost(sym: &mut Symbolizer, file: &FileRef, offset: u64) -> Frame {
    let mut chain = sym.native_frame_chain(file, offset);
    assert!(chain[..chain.len() - 1].iter().all(|f| f.inlined));
    chain.pop().unwrap()
}

const KALLSYMS: &str = "\
ffffffff81000000 T _text
ffffffff81001000 T do_syscall_64
ffffffff81002000 t _RNvNtCs1234_6kernel4sync4lock
ffffffff81003000 T _etext
ffffffffc0a00000 t nft_do_chain\t[nf_tables]
";

fn kernel() -> KernelSymbols {
    KernelSymbols::from_reader(Cursor::new(KALLSYMS), Path::new("test")).unwrap()
}

#[test]
fn kernel_frames() {
    let mut sym = Symbolizer::new(Some(kernel()));
    let frame = sym.kernel_frame(0xffffffff81001010);
    assert_eq!(&*frame.function, "do_syscall_64");
    assert_eq!(frame.kind, FrameKind::Kernel);
    assert_eq!(frame.address, 0xffffffff81001010);
    assert_eq!(frame.module.as_ref().unwrap().path, KERNEL_MODULE);

    assert_eq!(
        &*sym.kernel_frame(0xffffffff81002004).function,
        "kernel::sync::lock"
    );

    let frame = sym.kernel_frame(0xffffffffc0a00010);
    assert_eq!(&*frame.function, "nft_do_chain");
    assert_eq!(frame.module.as_ref().unwrap().path, "[nf_tables]");

    let frame = sym.kernel_frame(0xffffffff81003008);
    assert_eq!(&*frame.function, "[kernel.kallsyms]+0xffffffff81003008");
    assert_eq!(frame.module.as_ref().unwrap().path, KERNEL_MODULE);
    assert_eq!(frame.address, 0xffffffff81003008);

    let stats = sym.stats();
    assert_eq!((stats.symbols_found, stats.symbols_missed), (3, 1));
}

#[test]
fn kernel_frames_without_kallsyms() {
    let mut sym = Symbolizer::new(None);
    let frame = sym.kernel_frame(0xffffffff81001010);
    assert_eq!(&*frame.function, "[kernel.kallsyms]+0xffffffff81001010");
    assert_eq!(frame.kind, FrameKind::Kernel);
    assert_eq!(sym.stats().symbols_missed, 1);
}

#[test]
fn frames_share_names_and_modules() {
    let mut sym = Symbolizer::new(Some(kernel()));
    let a = sym.kernel_frame(0xffffffff81001010);
    let b = sym.kernel_frame(0xffffffff81001020);
    assert!(Arc::ptr_eq(&a.function, &b.function));
    assert!(Arc::ptr_eq(
        a.module.as_ref().unwrap(),
        b.module.as_ref().unwrap()
    ));
    let c = sym.kernel_frame(0xffffffffc0a00010);
    let d = sym.kernel_frame(0xffffffffc0a00020);
    assert!(Arc::ptr_eq(
        c.module.as_ref().unwrap(),
        d.module.as_ref().unwrap()
    ));
}

#[test]
fn unknown_frames() {
    let mut sym = Symbolizer::new(None);
    let frame = sym.unknown_frame(0x1234);
    assert_eq!(&*frame.function, UNKNOWN);
    assert_eq!(frame.module, None);
    assert_eq!(frame.address, 0x1234);
    assert_eq!(sym.stats().symbols_missed, 1);
}

#[inline(never)]
fn symbolizer_marker(x: u64) -> u64 {
    std::hint::black_box(x.wrapping_add(7))
}

/// The mapping of this test binary that holds `symbolizer_marker`, as a `FileRef` and the
/// marker's file offset.
fn own_file() -> (FileRef, u64) {
    symbolizer_marker(1);
    let addr = symbolizer_marker as *const () as usize as u64;
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [range, _, offset, dev, inode, path] = fields[..] else {
                return None;
            };
            let (start, end) = range.split_once('-')?;
            let start = u64::from_str_radix(start, 16).ok()?;
            let end = u64::from_str_radix(end, 16).ok()?;
            if !(start <= addr && addr < end) {
                return None;
            }
            let (major, minor) = dev.split_once(':')?;
            let dev = (u64::from_str_radix(major, 16).ok()? << 8)
                | u64::from_str_radix(minor, 16).ok()?;
            let file = FileRef {
                path: path.to_owned(),
                dev,
                inode: inode.parse().ok()?,
                candidates: vec![PathBuf::from("/proc/self/exe")],
            };
            Some((file, addr - start + u64::from_str_radix(offset, 16).ok()?))
        })
        .unwrap()
}

#[test]
fn native_frames_from_own_binary() {
    let (file, offset) = own_file();
    let mut sym = Symbolizer::new(None);
    let frame = outermost(&mut sym, &file, offset);
    assert!(
        frame.function.ends_with("symbolizer_marker"),
        "{}",
        frame.function
    );
    assert_eq!(frame.kind, FrameKind::Native);
    assert_eq!(frame.address, offset);
    assert!(!frame.inlined);
    // Release test builds carry line tables (`debug = 1`): the marker's own file.
    let source = frame.source.clone().expect("a source line from DWARF");
    assert!(source.file.ends_with("symbolize/tests.rs"), "{source:?}");
    assert!(source.line > 0);
    assert!(
        frame
            .system_name
            .as_deref()
            .is_some_and(|s| s.starts_with("_ZN") || s.starts_with("_R")),
        "{:?}",
        frame.system_name
    );
    assert_eq!(sym.stats().debug_files_found, 1);
    let module = frame.module.clone().unwrap();
    assert_eq!(module.path, file.path);

    let again = outermost(&mut sym, &file, offset + 1);
    assert!(Arc::ptr_eq(&frame.function, &again.function));
    assert!(Arc::ptr_eq(&module, again.module.as_ref().unwrap()));
    let stats = sym.stats();
    assert_eq!(
        (stats.files_opened, stats.files_failed, stats.symbols_found),
        (1, 0, 2)
    );
}

#[test]
fn candidates_are_tried_in_order() {
    let (mut file, offset) = own_file();
    file.candidates
        .insert(0, PathBuf::from("/nonexistent/profiler-test"));
    let mut sym = Symbolizer::new(None);
    assert!(outermost(&mut sym, &file, offset)
        .function
        .ends_with("symbolizer_marker"));
    assert_eq!(sym.stats().files_failed, 0);
}

#[test]
fn replaced_file_is_not_used() {
    let (mut file, offset) = own_file();
    file.inode += 1;
    let mut sym = Symbolizer::new(None);
    let frame = outermost(&mut sym, &file, offset);
    let base = file.path.rsplit('/').next().unwrap();
    assert_eq!(&*frame.function, format!("{base}+{offset:#x}"));
    assert_eq!(frame.module.as_ref().unwrap().build_id, None);
    assert_eq!(sym.stats().files_failed, 1);
    let failures: Vec<_> = sym.failures().collect();
    assert_eq!(failures.len(), 1);
    assert!(
        matches!(failures[0].1, SymbolizeError::FileReplaced { .. }),
        "{}",
        failures[0].1
    );

    // The same candidates are not tried again for every frame.
    outermost(&mut sym, &file, offset);
    assert_eq!(sym.stats().files_failed, 1);
}

#[test]
fn failed_file_is_retried_with_other_candidates() {
    let (mut file, offset) = own_file();
    let good = std::mem::replace(&mut file.candidates, vec![PathBuf::from("/nonexistent/a")]);
    let mut sym = Symbolizer::new(None);
    assert!(outermost(&mut sym, &file, offset).function.contains("+0x"));
    assert_eq!(sym.stats().files_failed, 1);
    file.candidates = good;
    assert!(outermost(&mut sym, &file, offset)
        .function
        .ends_with("symbolizer_marker"));
    assert_eq!(sym.stats().files_opened, 1);
    assert_eq!(sym.failures().count(), 0);
}

#[test]
fn unreadable_files_fall_back_to_basename() {
    let file = FileRef {
        path: "/usr/lib/libgone.so.1 (deleted)".to_owned(),
        dev: 1,
        inode: 99,
        candidates: vec![],
    };
    let mut sym = Symbolizer::new(None);
    let frame = outermost(&mut sym, &file, 0x1a2b);
    assert_eq!(&*frame.function, "libgone.so.1+0x1a2b");
    assert_eq!(frame.module.as_ref().unwrap().path, file.path);
    assert_eq!(frame.address, 0x1a2b);
    assert_eq!(sym.stats().files_failed, 1);
    assert_eq!(sym.stats().symbols_missed, 1);
    let again = outermost(&mut sym, &file, 0x1a2b);
    assert!(Arc::ptr_eq(&frame.function, &again.function));
}

#[test]
fn non_elf_file_is_a_failure() {
    let file = FileRef {
        path: "/proc/self/status".to_owned(),
        dev: 0,
        inode: 0,
        candidates: vec![],
    };
    let mut sym = Symbolizer::new(None);
    assert_eq!(&*outermost(&mut sym, &file, 0x10).function, "status+0x10");
    let (_, err) = sym.failures().next().unwrap();
    assert!(matches!(err, SymbolizeError::NotElf { .. }), "{err}");
}

#[test]
fn pseudo_paths_are_not_opened() {
    let mut sym = Symbolizer::new(None);
    for (path, expected) in [
        ("[vsyscall]", "[vsyscall]+0x120"),
        ("", "[anon]+0x120"),
        ("[anon:jit]", "[anon:jit]+0x120"),
    ] {
        let file = FileRef {
            path: path.to_owned(),
            dev: 0,
            inode: 0,
            candidates: vec![],
        };
        let frame = outermost(&mut sym, &file, 0x120);
        assert_eq!(&*frame.function, expected);
        assert_eq!(frame.module.as_ref().unwrap().path, path);
    }
    let stats = sym.stats();
    assert_eq!(
        (stats.files_opened, stats.files_failed, stats.symbols_missed),
        (0, 0, 3)
    );
}

#[test]
fn labels() {
    assert_eq!(
        display_label("/usr/lib/x86_64-linux-gnu/libc.so.6"),
        "libc.so.6"
    );
    assert_eq!(display_label("/tmp/a.out (deleted)"), "a.out");
    assert_eq!(display_label("[vdso]"), "[vdso]");
    assert_eq!(display_label(""), "[anon]");
    assert_eq!(display_label("/"), "/");
}

#[test]
fn hex_is_lowercase() {
    assert_eq!(hex(&[0x00, 0xab, 0x0f, 0xff]), "00ab0fff");
    assert_eq!(hex(&[]), "");
}

#[test]
fn vdso_frames() {
    let Ok(vdso) = vdso::own_vdso() else {
        return eprintln!("skipped: no vDSO");
    };
    let text = vdso.segments().iter().find(|s| s.executable).unwrap();
    let offset = (text.offset..text.offset + text.file_size)
        .find(|&off| vdso.lookup_file_offset(off).is_some())
        .unwrap();
    let (name, _) = vdso.lookup_file_offset(offset).unwrap();
    let file = FileRef {
        path: VDSO_PATH.to_owned(),
        dev: 0,
        inode: 0,
        candidates: vec![],
    };
    let mut sym = Symbolizer::new(None);
    let frame = outermost(&mut sym, &file, offset);
    assert_eq!(&*frame.function, name);
    let module = frame.module.unwrap();
    assert_eq!(module.path, VDSO_PATH);
    assert_eq!(module.build_id.as_deref(), vdso.build_id());
    assert_eq!(sym.stats().files_opened, 1);
}

#[test]
fn released_debug_info_is_read_again() {
    let (file, offset) = own_file();
    let mut sym = Symbolizer::new(None);
    let before = sym.native_frame_chain(&file, offset);
    assert!(before.iter().all(|f| f.source.is_some()));
    sym.release_debug_info();
    assert_eq!(sym.native_frame_chain(&file, offset), before);
    assert_eq!(sym.stats().files_opened, 1);
}

#[test]
fn over_the_budget_one_files_dwarf_is_dropped_before_the_next_is_parsed() {
    let (file, offset) = own_file();
    // The same inode under a second path is a second entry, with DWARF of its own.
    let other = FileRef {
        path: "/proc/self/exe".to_owned(),
        candidates: vec![],
        ..file.clone()
    };
    let alternate = |sym: &mut Symbolizer| {
        let named = |frames: Vec<Frame>| -> Vec<_> {
            frames.into_iter().map(|f| (f.function, f.source)).collect()
        };
        let first = sym.native_frame_chain(&file, offset);
        let second = sym.native_frame_chain(&other, offset);
        assert_eq!(named(second), named(first.clone()));
        assert!(!sym.native_frame_chain(&file, offset + 1).is_empty());
        assert!(first.iter().all(|f| f.source.is_some()), "{first:?}");
    };
    let mut unbounded = Symbolizer::new(None);
    alternate(&mut unbounded);
    assert_eq!(unbounded.dwarf.loads, 2, "both contexts stay cached");
    // Any process is above one byte: each new file's DWARF replaces the last.
    let mut bounded = Symbolizer::new(None).with_debug_info_budget(1);
    alternate(&mut bounded);
    assert_eq!(bounded.dwarf.loads, 3, "the first file was parsed again");
}
