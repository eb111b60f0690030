//! The table extractor thread: builds unwind tables from files' call-frame information off the
//! maintainer thread, so a big file (libLLVM: ~0.1-0.5 s) never holds up the syncs of other
//! processes. It only computes: the maintainer loads what it returns into the kernel, as the
//! only writer of the maps. One file is handed over at a time, the most sampled first
//! ([`BuildQueue`]).

use std::path::Path;
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use super::cache::{FileKey, TableCache};
use super::lru::BuildQueue;
use crate::process::files::{FileInfo, SharedFile};
use crate::unwind::compact::CompactTable;

/// A built table (or why there is none), for the file with this ID, and whether it came from
/// the on-disk cache.
pub type Built = (SharedFile, Result<CompactTable, String>, bool);

/// The extractor as the maintainer sees it. Dropping it ends the thread (see `Drop`).
pub struct Extractor {
    requests: Option<Sender<SharedFile>>,
    results: Receiver<Built>,
    thread: Option<JoinHandle<()>>,
    /// Files not handed to the thread yet.
    queue: BuildQueue,
    /// Whether the thread is building one.
    busy: bool,
}

/// The table of one file: its `.eh_frame` (and `.debug_frame`), or our own vDSO image.
pub fn extract(file: &FileInfo) -> Result<CompactTable, String> {
    let table = if file.path == "[vdso]" {
        let image = crate::symbolize::own_vdso_image().map_err(|e| e.to_string())?;
        crate::cfi::extract_packed_from_bytes(&image)
    } else {
        let handle = file.handle.as_ref().ok_or("not open")?;
        let path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(handle));
        crate::cfi::extract_packed(Path::new(&path))
    };
    let table = table.map_err(|e| e.to_string())?;
    CompactTable::encode_packed(&table.rows).map_err(|e| e.to_string())
}

/// [`extract`] through `cache`: a file's stored table when one matches it, else the table built
/// and then stored. Returns whether it came from the cache.
pub fn extract_cached(
    file: &FileInfo,
    cache: Option<&TableCache>,
) -> (Result<CompactTable, String>, bool) {
    let key = cache
        .zip(file.handle.as_ref())
        .and_then(|(cache, handle)| Some((cache, FileKey::of(handle).ok()?)));
    if let Some(table) = key.as_ref().and_then(|(cache, key)| cache.load(key)) {
        return (Ok(table), true);
    }
    let built = extract(file);
    if let (Some((cache, key)), Ok(table)) = (&key, &built) {
        if table.direct_buckets() > 0 {
            if let Err(err) = cache.store(key, table) {
                crate::log::debug(&format!("caching the table of {}: {err}", file.path));
            }
        }
    }
    (built, false)
}

impl Extractor {
    /// Starts the thread; it keeps what it builds in `cache`, when there is one.
    pub fn spawn(cache: Option<TableCache>) -> std::io::Result<Self> {
        let (requests, inbox) = channel::<SharedFile>();
        let (outbox, results) = channel();
        let thread = std::thread::Builder::new()
            .name("extractor".into())
            .spawn(move || {
                for file in inbox {
                    let (table, cached) = extract_cached(&file, cache.as_ref());
                    if outbox.send((file, table, cached)).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Self {
            requests: Some(requests),
            results,
            thread: Some(thread),
            queue: BuildQueue::default(),
            busy: false,
        })
    }

    /// Queues a file; `false` when the thread is gone (the caller builds it itself).
    pub fn request(&mut self, file: SharedFile) -> bool {
        if self.requests.is_none() || self.thread.as_ref().is_none_or(|t| t.is_finished()) {
            return false;
        }
        self.queue.push(file);
        self.dispatch();
        true
    }

    /// Samples named these files (`(file, samples)`): they move up the queue.
    pub fn sampled(&mut self, files: &[(u32, u32)]) {
        self.queue.sampled(files);
    }

    /// Hands the thread the next file when it is idle.
    fn dispatch(&mut self) {
        if self.busy {
            return;
        }
        if let (Some(requests), Some(file)) = (&self.requests, self.queue.pop()) {
            self.busy = requests.send(file).is_ok();
        }
    }

    /// Tables requested and not handed over yet.
    pub fn outstanding(&self) -> usize {
        self.queue.len() + usize::from(self.busy)
    }

    /// What is built; waits up to `wait` for the first result when nothing is ready.
    pub fn ready(&mut self, wait: Duration) -> Vec<Built> {
        let mut out: Vec<Built> = self.results.try_iter().collect();
        if out.is_empty() && self.busy && !wait.is_zero() {
            match self.results.recv_timeout(wait) {
                Ok(built) => out.push(built),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {}
            }
            out.extend(self.results.try_iter());
        }
        if !out.is_empty() {
            self.busy = false;
            self.dispatch();
        }
        out
    }
}

impl Drop for Extractor {
    /// Ends the thread's loop. A table still being built is not waited for (libLLVM's takes
    /// up to a second): nobody wants it any more, and the end of a session must not wait on
    /// it. The thread drops it and ends by itself, or with the process.
    fn drop(&mut self) {
        self.requests = None;
        if let Some(thread) = self.thread.take() {
            if !self.busy {
                let _ = thread.join();
            }
        }
    }
}
