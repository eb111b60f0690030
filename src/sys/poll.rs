//! Waiting for several file descriptors at once (poll(2)), and a [`Waker`] another thread
//! raises to end such a wait at once.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

/// A flag that also makes a file descriptor readable: a thread that sleeps in
/// [`wait_readable`] with [`Waker::fd`] among its descriptors wakes as soon as another thread
/// raises it, so it can sleep for long stretches instead of polling a flag.
pub struct Waker {
    raised: AtomicBool,
    reader: OwnedFd,
    writer: OwnedFd,
}

/// A non-blocking, close-on-exec pipe: (read end, write end).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 just returned these descriptors, owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Writes one byte to a pipe, ignoring the result (a full pipe is readable already).
/// Async-signal-safe.
pub fn poke(fd: libc::c_int) {
    let byte = 1u8;
    // SAFETY: writes one byte from a live stack variable; the fd is the caller's pipe.
    let _ = unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
}

impl Waker {
    pub fn new() -> io::Result<Self> {
        let (reader, writer) = pipe()?;
        Ok(Self {
            raised: AtomicBool::new(false),
            reader,
            writer,
        })
    }

    /// Raises the flag and wakes the waiter (once: the pipe then stays readable).
    pub fn raise(&self) {
        if !self.raised.swap(true, Ordering::AcqRel) {
            poke(self.writer.as_raw_fd());
        }
    }

    pub fn is_raised(&self) -> bool {
        self.raised.load(Ordering::Acquire)
    }

    /// Readable once the flag is raised.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.reader.as_fd()
    }
}

/// Waits until one of `fds` is readable or `timeout_ms` passes; returns which are readable.
/// An interrupted wait (a signal) returns no fd as readable.
pub fn wait_readable(fds: &[BorrowedFd<'_>], timeout_ms: i32) -> io::Result<Vec<bool>> {
    let mut polls: Vec<libc::pollfd> = fds
        .iter()
        .map(|fd| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: `polls` is a valid array of `polls.len()` pollfd structs for the call's duration.
    let ret = unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, timeout_ms) };
    if ret < 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EINTR) {
            return Ok(vec![false; fds.len()]);
        }
        return Err(err);
    }
    Ok(polls
        .iter()
        .map(|p| p.revents & libc::POLLIN != 0)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsFd;

    #[test]
    fn a_raised_waker_ends_the_wait() {
        let waker = Waker::new().unwrap();
        assert!(!waker.is_raised());
        assert_eq!(wait_readable(&[waker.fd()], 0).unwrap(), vec![false]);
        waker.raise();
        waker.raise();
        assert!(waker.is_raised());
        assert_eq!(wait_readable(&[waker.fd()], 10_000).unwrap(), vec![true]);
    }

    #[test]
    fn reports_which_fd_is_readable() {
        let (reader, mut writer) = std::io::pipe().unwrap();
        let (idle, _idle_writer) = std::io::pipe().unwrap();
        assert_eq!(
            wait_readable(&[reader.as_fd(), idle.as_fd()], 0).unwrap(),
            vec![false, false]
        );
        writer.write_all(b"x").unwrap();
        assert_eq!(
            wait_readable(&[reader.as_fd(), idle.as_fd()], 100).unwrap(),
            vec![true, false]
        );
    }
}
