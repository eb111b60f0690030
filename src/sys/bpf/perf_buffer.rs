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

/// The reader side of a `BPF_MAP_TYPE_PERF_EVENT_ARRAY`: one mmap'ed ring per CPU.
pub struct PerfBuffer<H: PerfHandler> {
    pb: NonNull<libbpf_sys::perf_buffer>,
    // Leaked from a Box so its address, handed to libbpf as the callback context, never moves
    // and is never retagged; freed in Drop.
    handler: NonNull<H>,
}

unsafe extern "C" fn on_sample<H: PerfHandler>(
    ctx: *mut c_void,
    cpu: c_int,
    data: *mut c_void,
    size: u32,
) {
    // SAFETY: `ctx` is the leaked handler registered in `PerfBuffer::new`; libbpf calls back
    // only from poll/consume, which take `&mut self`, so no other reference to it is live.
    let handler = unsafe { &mut *ctx.cast::<H>() };
    // SAFETY: libbpf hands us `size` readable bytes of the record, valid during the callback.
    let bytes = unsafe { std::slice::from_raw_parts(data.cast::<u8>(), size as usize) };
    handler.sample(cpu, bytes);
}

unsafe extern "C" fn on_lost<H: PerfHandler>(ctx: *mut c_void, cpu: c_int, count: u64) {
    // SAFETY: as in `on_sample`.
    let handler = unsafe { &mut *ctx.cast::<H>() };
    handler.lost(cpu, count);
}

impl<H: PerfHandler> PerfBuffer<H> {
    /// Opens a ring of `pages_per_cpu` pages (a power of two) on every CPU of `map`. Readers are
    /// woken once per `wakeup_events` records rather than on each one, which is far cheaper for
    /// the sampled program; `poll` with a timeout plus `consume` picks up the rest.
    pub fn new(
        map: &Map,
        pages_per_cpu: usize,
        wakeup_events: u32,
        handler: H,
    ) -> io::Result<Self> {
        // Owned through a raw pointer from here on (freed in Drop): libbpf keeps a copy of it,
        // so it must never be retagged by moving a Box.
        let handler = NonNull::from(Box::leak(Box::new(handler)));
        let opts = libbpf_sys::perf_buffer_opts {
            sz: std::mem::size_of::<libbpf_sys::perf_buffer_opts>() as _,
            sample_period: wakeup_events.max(1),
            ..Default::default()
        };
        let ctx: *mut H = handler.as_ptr();
        // SAFETY: the map fd is open for the call; the callbacks match libbpf's signatures and
        // `ctx` stays valid as long as `self` (the Box is never moved out while `pb` lives).
        let pb = unsafe {
            libbpf_sys::perf_buffer__new(
                map.fd().as_raw_fd(),
                pages_per_cpu as _,
                Some(on_sample::<H>),
                Some(on_lost::<H>),
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
