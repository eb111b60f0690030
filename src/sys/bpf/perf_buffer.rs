//! Per-CPU perf ring buffers fed by `bpf_perf_event_output`, read through libbpf.

use std::ffi::{c_int, c_void};
use std::io;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;

use super::{check, context, last_error, Map};

/// What receives the records read from a perf buffer.
pub trait PerfHandler {
    /// One record as the BPF program sent it (perf may append up to 7 bytes of padding).
    fn sample(&mut self, cpu: i32, data: &[u8]);
    /// The kernel dropped `count` records on `cpu` because the ring was full.
    fn lost(&mut self, cpu: i32, count: u64);
}

/// When a ring wakes its reader. Waking it costs the BPF program that writes the record ~5 µs
/// (docs/performance.md, "Wakeups"), so rings that are not urgent wake it rarely and the reader's
/// poll timeout picks up the rest.
#[derive(Clone, Copy, Debug)]
pub enum Wakeup {
    /// After this many records.
    Records(u32),
    /// When this many bytes are waiting: whatever the records' sizes, before the ring fills.
    Bytes(u32),
}

/// The reader side of a `BPF_MAP_TYPE_PERF_EVENT_ARRAY`: one mmap'ed ring per CPU.
pub struct PerfBuffer<H: PerfHandler> {
    pb: NonNull<libbpf_sys::perf_buffer>,
    // Leaked from a Box so its address, handed to libbpf as the callback context, never moves
    // and is never retagged; freed in Drop.
    handler: NonNull<H>,
}

/// Dispatches one raw perf record to the handler.
unsafe extern "C" fn on_event<H: PerfHandler>(
    ctx: *mut c_void,
    cpu: c_int,
    event: *mut libbpf_sys::perf_event_header,
) -> libbpf_sys::bpf_perf_event_ret {
    // SAFETY: `ctx` is the leaked handler registered in `PerfBuffer::new`; libbpf calls back
    // only from poll/consume, which take `&mut self`, so no other reference to it is live.
    let handler = unsafe { &mut *ctx.cast::<H>() };
    // SAFETY: libbpf hands us one whole record (copied out if it wrapped around the ring),
    // `header.size` bytes long, valid during the callback.
    let record = unsafe {
        let size = (*event).size as usize;
        std::slice::from_raw_parts(event.cast::<u8>(), size)
    };
    let header = std::mem::size_of::<libbpf_sys::perf_event_header>();
    let word = |at: usize, n: usize| -> Option<u64> {
        let bytes = record.get(at..at + n)?;
        Some(
            bytes
                .iter()
                .rev()
                .fold(0u64, |v, &b| (v << 8) | u64::from(b)),
        )
    };
    // SAFETY: `event` points at a whole header (see above).
    match unsafe { (*event).type_ } {
        libbpf_sys::PERF_RECORD_SAMPLE => {
            // PERF_SAMPLE_RAW only: a u32 size, then the bytes the BPF program sent.
            if let Some(size) = word(header, 4) {
                let start = header + 4;
                if let Some(data) = record.get(start..start + size as usize) {
                    handler.sample(cpu, data);
                }
            }
        }
        libbpf_sys::PERF_RECORD_LOST => {
            // A u64 id, then the number of records lost.
            if let Some(lost) = word(header + 8, 8) {
                handler.lost(cpu, lost);
            }
        }
        _ => {}
    }
    libbpf_sys::LIBBPF_PERF_EVENT_CONT
}

impl<H: PerfHandler> PerfBuffer<H> {
    /// Opens a ring of `pages_per_cpu` pages (a power of two) on every CPU of `map`, waking
    /// its reader as `wakeup` says.
    pub fn new(map: &Map, pages_per_cpu: usize, wakeup: Wakeup, handler: H) -> io::Result<Self> {
        let mut attr = libbpf_sys::perf_event_attr {
            type_: libbpf_sys::PERF_TYPE_SOFTWARE,
            size: std::mem::size_of::<libbpf_sys::perf_event_attr>() as u32,
            config: libbpf_sys::PERF_COUNT_SW_BPF_OUTPUT as u64,
            sample_type: libbpf_sys::PERF_SAMPLE_RAW as u64,
            ..Default::default()
        };
        attr.__bindgen_anon_1.sample_period = 1;
        match wakeup {
            Wakeup::Records(n) => attr.__bindgen_anon_2.wakeup_events = n.max(1),
            Wakeup::Bytes(n) => {
                attr.set_watermark(1);
                attr.__bindgen_anon_2.wakeup_watermark = n.max(1);
            }
        }
        let opts = libbpf_sys::perf_buffer_raw_opts {
            sz: std::mem::size_of::<libbpf_sys::perf_buffer_raw_opts>() as _,
            ..Default::default()
        };
        // Owned through a raw pointer from here on (freed in Drop): libbpf keeps a copy of it,
        // so it must never be retagged by moving a Box.
        let handler = NonNull::from(Box::leak(Box::new(handler)));
        let ctx: *mut H = handler.as_ptr();
        // SAFETY: the map fd is open for the call; `attr` and `opts` are initialized and live
        // for the call (libbpf copies what it keeps); the callback matches libbpf's signature
        // and `ctx` stays valid as long as `self` (the Box is never moved out while `pb` lives).
        let pb = unsafe {
            libbpf_sys::perf_buffer__new_raw(
                map.fd().as_raw_fd(),
                pages_per_cpu as _,
                &mut attr,
                Some(on_event::<H>),
                ctx.cast(),
                &opts,
            )
        };
        let Some(pb) = NonNull::new(pb) else {
            let err = last_error();
            // SAFETY: libbpf failed and kept no copy of `ctx`; the pointer came from Box::leak.
            drop(unsafe { Box::from_raw(handler.as_ptr()) });
            return Err(context(
                err,
                format!("cannot open perf buffer {}", map.name()),
            ));
        };
        Ok(Self { pb, handler })
    }

    /// Waits up to `timeout_ms` for a wakeup and handles what is ready; returns the number of
    /// records handled. EINTR counts as zero records.
    pub fn poll(&mut self, timeout_ms: i32) -> io::Result<usize> {
        // SAFETY: `pb` is live; callbacks get exclusive access to the handler (see on_sample).
        let ret = unsafe { libbpf_sys::perf_buffer__poll(self.pb.as_ptr(), timeout_ms) };
        match check(ret) {
            Ok(n) => Ok(n as usize),
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Reads everything in every ring, whether or not a wakeup happened.
    pub fn consume(&mut self) -> io::Result<()> {
        // SAFETY: as in `poll`.
        check(unsafe { libbpf_sys::perf_buffer__consume(self.pb.as_ptr()) }).map(|_| ())
    }

    /// An fd that polls readable when a ring has woken the reader.
    pub fn epoll_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        // SAFETY: `pb` is live; the epoll fd it returns stays open until `perf_buffer__free`,
        // which cannot happen while the returned borrow of `self` lives.
        unsafe {
            let fd = libbpf_sys::perf_buffer__epoll_fd(self.pb.as_ptr());
            std::os::fd::BorrowedFd::borrow_raw(fd)
        }
    }

    pub fn handler(&self) -> &H {
        // SAFETY: the handler lives until Drop; callbacks (the only other users) run only
        // inside `poll`/`consume`, which take `&mut self`, so none runs during this borrow.
        unsafe { self.handler.as_ref() }
    }

    pub fn handler_mut(&mut self) -> &mut H {
        // SAFETY: as in `handler`, and `&mut self` makes this the only reference.
        unsafe { self.handler.as_mut() }
    }
}

impl<H: PerfHandler> Drop for PerfBuffer<H> {
    fn drop(&mut self) {
        // SAFETY: we own `pb`; after this no callback can run, so the handler (from Box::leak
        // in `new`) can be freed.
        unsafe {
            libbpf_sys::perf_buffer__free(self.pb.as_ptr());
            drop(Box::from_raw(self.handler.as_ptr()));
        }
    }
}
