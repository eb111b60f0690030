//! A handle on one BPF map (its own duplicated fd): single and batched lookups, updates and
//! deletes over byte slices whose sizes are checked against the map's definition.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use super::check;

/// One BPF map. Cheap to move between threads; the map lives while any handle is open.
#[derive(Debug)]
pub struct Map {
    name: String,
    fd: OwnedFd,
    map_type: libbpf_sys::bpf_map_type,
    key_size: usize,
    value_size: usize,
    max_entries: u32,
}

/// How far a batch operation got: `done` elements were processed before `error` (if any).
#[derive(Debug)]
pub struct BatchOutcome {
    pub done: usize,
    pub error: Option<io::Error>,
}

/// Number of possible CPUs: the element count of every per-CPU value.
pub fn possible_cpus() -> io::Result<usize> {
    // SAFETY: a plain query with no arguments.
    let n = check(unsafe { libbpf_sys::libbpf_num_possible_cpus() })?;
    Ok(n as usize)
}

impl Map {
    pub(super) fn new(
        name: &str,
        fd: OwnedFd,
        map_type: libbpf_sys::bpf_map_type,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
    ) -> Self {
        Self {
            name: name.to_string(),
            fd,
            map_type,
            key_size: key_size as usize,
            value_size: value_size as usize,
            max_entries,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_size(&self) -> usize {
        self.key_size
    }

    pub fn value_size(&self) -> usize {
        self.value_size
    }

    pub fn max_entries(&self) -> u32 {
        self.max_entries
    }

    fn is_percpu(&self) -> bool {
        matches!(
            self.map_type,
            libbpf_sys::BPF_MAP_TYPE_PERCPU_ARRAY
                | libbpf_sys::BPF_MAP_TYPE_PERCPU_HASH
                | libbpf_sys::BPF_MAP_TYPE_LRU_PERCPU_HASH
        )
    }

    /// Bytes of one value as user space sees it (per-CPU maps hold one slot per possible CPU).
    pub fn user_value_size(&self) -> io::Result<usize> {
        if self.is_percpu() {
            Ok(self.value_size.next_multiple_of(8) * possible_cpus()?)
        } else {
            Ok(self.value_size)
        }
    }

    fn check_sizes(&self, keys: &[u8], key_count: usize, values: Option<&[u8]>) -> io::Result<()> {
        let values_ok = match values {
            Some(v) => v.len() == key_count * self.user_value_size()?,
            None => true,
        };
        if keys.len() != key_count * self.key_size || !values_ok {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("map {}: key or value buffer of the wrong size", self.name),
            ));
        }
        Ok(())
    }

    /// Reads the value of `key` into `value`; `Ok(false)` when the key is absent.
    pub fn lookup_into(&self, key: &[u8], value: &mut [u8]) -> io::Result<bool> {
        self.check_sizes(key, 1, Some(value))?;
        // SAFETY: both buffers have the sizes the kernel will read and write (checked above).
        let ret = unsafe {
            libbpf_sys::bpf_map_lookup_elem(
                self.fd.as_raw_fd(),
                key.as_ptr().cast(),
                value.as_mut_ptr().cast(),
            )
        };
        match check_errno(ret) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether `key` is present.
    pub fn contains(&self, key: &[u8]) -> io::Result<bool> {
        let mut value = vec![0u8; self.user_value_size()?];
        self.lookup_into(key, &mut value)
    }

    /// Inserts or replaces one element (`flags`: BPF_ANY, BPF_NOEXIST, BPF_EXIST).
    pub fn update(&self, key: &[u8], value: &[u8], flags: u64) -> io::Result<()> {
        self.check_sizes(key, 1, Some(value))?;
        // SAFETY: both buffers have the sizes the kernel will read (checked above).
        let ret = unsafe {
            libbpf_sys::bpf_map_update_elem(
                self.fd.as_raw_fd(),
                key.as_ptr().cast(),
                value.as_ptr().cast(),
                flags,
            )
        };
        check_errno(ret)
    }

    /// Deletes one element; `Ok(false)` when it was not there.
    pub fn delete(&self, key: &[u8]) -> io::Result<bool> {
        self.check_sizes(key, 1, None)?;
        // SAFETY: `key` has the map's key size (checked above).
        let ret =
            unsafe { libbpf_sys::bpf_map_delete_elem(self.fd.as_raw_fd(), key.as_ptr().cast()) };
        match check_errno(ret) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Updates `count` elements: `keys` and `values` are packed back to back.
    pub fn update_batch(
        &self,
        keys: &[u8],
        values: &[u8],
        count: usize,
        flags: u64,
    ) -> BatchOutcome {
        if let Err(error) = self.check_sizes(keys, count, Some(values)) {
            return BatchOutcome {
                done: 0,
                error: Some(error),
            };
        }
        let opts = batch_opts(flags);
        let mut n = count as u32;
        // SAFETY: `keys`/`values` hold exactly `count` packed elements (checked above); the
        // kernel writes back through `n` how many it processed.
        let ret = unsafe {
            libbpf_sys::bpf_map_update_batch(
                self.fd.as_raw_fd(),
                keys.as_ptr().cast(),
                values.as_ptr().cast(),
                &mut n,
                &opts,
            )
        };
        BatchOutcome {
            done: n.min(count as u32) as usize,
            error: check_errno(ret).err(),
        }
    }

    /// Deletes `count` packed keys. The kernel stops at the first failure (ENOENT for an absent
    /// key); `done` says how many were deleted before it.
    pub fn delete_batch(&self, keys: &[u8], count: usize) -> BatchOutcome {
        if let Err(error) = self.check_sizes(keys, count, None) {
            return BatchOutcome {
                done: 0,
                error: Some(error),
            };
        }
        let opts = batch_opts(0);
        let mut n = count as u32;
        // SAFETY: `keys` holds exactly `count` packed keys (checked above).
        let ret = unsafe {
            libbpf_sys::bpf_map_delete_batch(
                self.fd.as_raw_fd(),
                keys.as_ptr().cast(),
                &mut n,
                &opts,
            )
        };
        BatchOutcome {
            done: n.min(count as u32) as usize,
            error: check_errno(ret).err(),
        }
    }

    /// The key after `key` (or the first key when `key` is None); `Ok(None)` at the end.
    pub fn next_key(&self, key: Option<&[u8]>) -> io::Result<Option<Vec<u8>>> {
        if let Some(k) = key {
            self.check_sizes(k, 1, None)?;
        }
        let mut next = vec![0u8; self.key_size];
        let key_ptr = key.map_or(std::ptr::null(), |k| k.as_ptr().cast());
        // SAFETY: `key_ptr` is NULL or a key of the map's size; `next` has room for one key.
        let ret = unsafe {
            libbpf_sys::bpf_map_get_next_key(self.fd.as_raw_fd(), key_ptr, next.as_mut_ptr().cast())
        };
        match check_errno(ret) {
            Ok(()) => Ok(Some(next)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every key in the map (a snapshot; the map may change meanwhile).
    pub fn keys(&self) -> io::Result<Vec<Vec<u8>>> {
        let mut keys = Vec::new();
        let mut cursor: Option<Vec<u8>> = None;
        while let Some(next) = self.next_key(cursor.as_deref())? {
            keys.push(next.clone());
            cursor = Some(next);
            if keys.len() > self.max_entries as usize * 2 + 16 {
                return Err(io::Error::other(format!(
                    "map {}: key iteration does not end",
                    self.name
                )));
            }
        }
        Ok(keys)
    }

    /// Sum over CPUs of a per-CPU u64 value.
    pub fn sum_percpu_u64(&self, key: &[u8]) -> io::Result<u64> {
        let mut value = vec![0u8; self.user_value_size()?];
        if !self.lookup_into(key, &mut value)? {
            return Ok(0);
        }
        let stride = self.value_size.next_multiple_of(8);
        Ok(value
            .chunks_exact(stride)
            .map(|slot| u64::from_ne_bytes(slot[..8].try_into().unwrap_or([0; 8])))
            .fold(0u64, u64::wrapping_add))
    }
}

fn batch_opts(elem_flags: u64) -> libbpf_sys::bpf_map_batch_opts {
    libbpf_sys::bpf_map_batch_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_map_batch_opts>() as _,
        elem_flags,
        flags: 0,
    }
}

/// libbpf's map calls return a negative errno (libbpf 1.0 mode).
fn check_errno(ret: i32) -> io::Result<()> {
    check(ret).map(|_| ())
}

impl Map {
    pub(super) fn fd(&self) -> &OwnedFd {
        &self.fd
    }
}

/// The kinds of standalone maps `Map::create` makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapKind {
    Hash,
    LpmTrie,
}

impl Map {
    /// Creates a standalone map, outside any object (tests and benchmarks exercise the real
    /// kernel's map semantics with it). LPM tries get BPF_F_NO_PREALLOC, which they require.
    pub fn create(
        kind: MapKind,
        name: &str,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
    ) -> io::Result<Map> {
        let (map_type, map_flags) = match kind {
            MapKind::Hash => (libbpf_sys::BPF_MAP_TYPE_HASH, 0),
            MapKind::LpmTrie => (
                libbpf_sys::BPF_MAP_TYPE_LPM_TRIE,
                libbpf_sys::BPF_F_NO_PREALLOC,
            ),
        };
        let opts = libbpf_sys::bpf_map_create_opts {
            sz: std::mem::size_of::<libbpf_sys::bpf_map_create_opts>() as _,
            map_flags,
            ..Default::default()
        };
        let cname = std::ffi::CString::new(name)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in map name"))?;
        // SAFETY: the name is a valid C string and `opts` a zeroed options struct of its size;
        // on success the returned fd is new and ours.
        let fd = check(unsafe {
            libbpf_sys::bpf_map_create(
                map_type,
                cname.as_ptr(),
                key_size,
                value_size,
                max_entries,
                &opts,
            )
        })?;
        // SAFETY: `fd` was just created and nobody else owns it.
        let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        Ok(Map::new(
            name,
            fd,
            map_type,
            key_size,
            value_size,
            max_entries,
        ))
    }
}
