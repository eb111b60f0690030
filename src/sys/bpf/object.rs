//! A BPF object file embedded in the binary: opened, configured, loaded into the kernel, and
//! closed (with all its programs and maps) when dropped.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::ptr::NonNull;

use super::{check, context, last_error, log, Link, Map};

/// An object opened from memory but not loaded yet: the moment to set read-only data and sizes.
pub struct OpenObject {
    obj: NonNull<libbpf_sys::bpf_object>,
    name: String,
}

/// A loaded object: its programs are verified and its maps exist in the kernel.
pub struct LoadedObject {
    obj: NonNull<libbpf_sys::bpf_object>,
    name: String,
}

fn cstring(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in name"))
}

impl OpenObject {
    /// Opens an object file image. `bytes` is copied by libbpf.
    pub fn open(name: &str, bytes: &[u8]) -> io::Result<Self> {
        log::install();
        let cname = cstring(name)?;
        let opts = libbpf_sys::bpf_object_open_opts {
            sz: std::mem::size_of::<libbpf_sys::bpf_object_open_opts>() as _,
            object_name: cname.as_ptr(),
            ..Default::default()
        };
        // SAFETY: `bytes` is valid for its length and libbpf copies it; `opts` is a properly
        // sized, zero-initialised options struct whose name pointer outlives the call.
        let obj = unsafe {
            libbpf_sys::bpf_object__open_mem(bytes.as_ptr().cast(), bytes.len() as _, &opts)
        };
        let obj = NonNull::new(obj)
            .ok_or_else(|| context(last_error(), format!("cannot open BPF object {name}")))?;
        Ok(Self {
            obj,
            name: name.to_string(),
        })
    }

    fn find_map(&self, name: &str) -> io::Result<NonNull<libbpf_sys::bpf_map>> {
        let cname = cstring(name)?;
        // SAFETY: `self.obj` is a live object; the name is a valid C string.
        let map =
            unsafe { libbpf_sys::bpf_object__find_map_by_name(self.obj.as_ptr(), cname.as_ptr()) };
        NonNull::new(map).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{}: no map named {name}", self.name),
            )
        })
    }

    /// The initial contents of the object's `.rodata` section (its `const volatile` globals),
    /// writable until load.
    pub fn rodata_mut(&mut self) -> io::Result<&mut [u8]> {
        // libbpf names the map "<object name, truncated>.rodata"; find it by its suffix.
        let mut map: *mut libbpf_sys::bpf_map = std::ptr::null_mut();
        loop {
            // SAFETY: iterating the maps of a live object, starting from NULL.
            map = unsafe { libbpf_sys::bpf_object__next_map(self.obj.as_ptr(), map) };
            let Some(current) = NonNull::new(map) else {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    "object has no .rodata",
                ));
            };
            // SAFETY: `current` is a map of the live object; the name is a NUL-terminated
            // string owned by libbpf for the object's lifetime.
            let name = unsafe { CStr::from_ptr(libbpf_sys::bpf_map__name(current.as_ptr())) };
            if name.to_bytes().ends_with(b".rodata") {
                break;
            }
        }
        let mut size: libbpf_sys::size_t = 0;
        // SAFETY: `map` is a map of the live object; `size` is a valid out-pointer.
        let data = unsafe { libbpf_sys::bpf_map__initial_value(map, &mut size) };
        if data.is_null() {
            return Err(io::Error::other(".rodata has no initial value"));
        }
        // SAFETY: libbpf owns `size` bytes at `data` until the object is closed; the returned
        // slice borrows `self` mutably, so nothing else can touch them or close the object.
        Ok(unsafe { std::slice::from_raw_parts_mut(data.cast::<u8>(), size as usize) })
    }

    /// Sets a map's capacity before it is created.
    pub fn set_max_entries(&mut self, map: &str, entries: u32) -> io::Result<()> {
        let map = self.find_map(map)?;
        // SAFETY: `map` belongs to this open, not yet loaded object.
        check(unsafe { libbpf_sys::bpf_map__set_max_entries(map.as_ptr(), entries) })?;
        Ok(())
    }

    /// Verifies and loads every program and creates every map. On failure the error carries the
    /// tail of libbpf's log (the verifier's complaint).
    pub fn load(self) -> io::Result<LoadedObject> {
        log::take(0);
        // SAFETY: `self.obj` is a live, opened object.
        let ret = unsafe { libbpf_sys::bpf_object__load(self.obj.as_ptr()) };
        let obj = self.obj;
        let name = self.name.clone();
        std::mem::forget(self);
        let loaded = LoadedObject { obj, name };
        if let Err(err) = check(ret) {
            let log = log::take(40).join("\n");
            return Err(io::Error::new(
                err.kind(),
                format!(
                    "cannot load BPF object {}: {err}\nlibbpf said:\n{log}",
                    loaded.name
                ),
            ));
        }
        Ok(loaded)
    }
}

impl Drop for OpenObject {
    fn drop(&mut self) {
        // SAFETY: we own the object and nothing borrows it any more.
        unsafe { libbpf_sys::bpf_object__close(self.obj.as_ptr()) }
    }
}

impl LoadedObject {
    pub(super) fn program(&self, name: &str) -> io::Result<NonNull<libbpf_sys::bpf_program>> {
        let cname = cstring(name)?;
        // SAFETY: `self.obj` is live; the name is a valid C string.
        let prog = unsafe {
            libbpf_sys::bpf_object__find_program_by_name(self.obj.as_ptr(), cname.as_ptr())
        };
        NonNull::new(prog).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{}: no program {name}", self.name),
            )
        })
    }

    /// A handle on one of the object's maps, independent of the object's lifetime.
    pub fn map(&self, name: &str) -> io::Result<Map> {
        let cname = cstring(name)?;
        // SAFETY: `self.obj` is live; the name is a valid C string.
        let map =
            unsafe { libbpf_sys::bpf_object__find_map_by_name(self.obj.as_ptr(), cname.as_ptr()) };
        let map = NonNull::new(map).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{}: no map {name}", self.name),
            )
        })?;
        self.handle(map, name)
    }

    /// The map libbpf made for a global-variable section (`.bss`, `.data`), whose name is the
    /// object name (truncated) plus the section name.
    pub fn section_map(&self, section: &str) -> io::Result<Map> {
        let mut map: *mut libbpf_sys::bpf_map = std::ptr::null_mut();
        loop {
            // SAFETY: iterating the maps of a live object, starting from NULL.
            map = unsafe { libbpf_sys::bpf_object__next_map(self.obj.as_ptr(), map) };
            let Some(current) = NonNull::new(map) else {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no {section} map"),
                ));
            };
            // SAFETY: `current` belongs to the live object; libbpf owns the NUL-terminated name.
            let name = unsafe { CStr::from_ptr(libbpf_sys::bpf_map__name(current.as_ptr())) };
            if name.to_bytes().ends_with(section.as_bytes()) {
                let name = name.to_string_lossy().into_owned();
                return self.handle(current, &name);
            }
        }
    }

    /// A handle (its own fd) on a map of this loaded object.
    fn handle(&self, map: NonNull<libbpf_sys::bpf_map>, name: &str) -> io::Result<Map> {
        // SAFETY: `map` belongs to the live, loaded object, so its fd is open.
        let fd = check(unsafe { libbpf_sys::bpf_map__fd(map.as_ptr()) })?;
        // SAFETY: F_DUPFD_CLOEXEC on an open fd returns a new fd that we then own.
        let dup = check(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) })
            .map_err(|_| io::Error::last_os_error())?;
        // SAFETY: `dup` is a fresh fd owned by nobody else.
        let owned = unsafe { OwnedFd::from_raw_fd(dup) };
        // SAFETY: `map` is live; these getters only read its definition.
        let (key_size, value_size, map_type, max_entries) = unsafe {
            (
                libbpf_sys::bpf_map__key_size(map.as_ptr()),
                libbpf_sys::bpf_map__value_size(map.as_ptr()),
                libbpf_sys::bpf_map__type(map.as_ptr()),
                libbpf_sys::bpf_map__max_entries(map.as_ptr()),
            )
        };
        Ok(Map::new(
            name,
            owned,
            map_type,
            key_size,
            value_size,
            max_entries,
        ))
    }

    /// Attaches a `perf_event` program to an open perf event; the link takes the event's fd.
    pub fn attach_perf_event(&self, program: &str, event: OwnedFd) -> io::Result<Link> {
        let prog = self.program(program)?;
        let raw = std::os::fd::IntoRawFd::into_raw_fd(event);
        // SAFETY: `prog` belongs to the live loaded object; on success libbpf owns `raw` and
        // closes it when the link is destroyed.
        let link = unsafe { libbpf_sys::bpf_program__attach_perf_event(prog.as_ptr(), raw) };
        match NonNull::new(link) {
            Some(link) => Ok(Link::new(link)),
            None => {
                let err = last_error();
                // SAFETY: attach failed, so `raw` is still ours to close.
                unsafe { libc::close(raw) };
                Err(context(
                    err,
                    format!("cannot attach {program} to a perf event"),
                ))
            }
        }
    }

    /// Attaches a program the way its section name says (`tp_btf/...`).
    pub fn attach(&self, program: &str) -> io::Result<Link> {
        let prog = self.program(program)?;
        // SAFETY: `prog` belongs to the live loaded object.
        let link = unsafe { libbpf_sys::bpf_program__attach(prog.as_ptr()) };
        NonNull::new(link)
            .map(Link::new)
            .ok_or_else(|| context(last_error(), format!("cannot attach {program}")))
    }
}

impl Drop for LoadedObject {
    fn drop(&mut self) {
        // SAFETY: we own the object; links and map fds hold their own kernel references.
        unsafe { libbpf_sys::bpf_object__close(self.obj.as_ptr()) }
    }
}
