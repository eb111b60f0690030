//! Termination signals (SIGINT, SIGTERM, SIGHUP) turned into a flag, and a wait that a signal
//! ends at once whichever thread it was delivered to (a self-pipe), so the main thread can
//! sleep for long stretches instead of polling.

use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

static RECEIVED: AtomicI32 = AtomicI32::new(0);
/// The self-pipe's write end (-1 until the handlers are installed).
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);
/// The self-pipe's read end.
static WAKE_READER: OnceLock<OwnedFd> = OnceLock::new();

extern "C" fn on_signal(signal: libc::c_int) {
    // An atomic store and a write(2): both async-signal-safe.
    RECEIVED.store(signal, Ordering::SeqCst);
    let fd = WAKE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        let byte = 1u8;
        // SAFETY: writes one byte from a live stack variable to a pipe we own; the result is
        // ignored (a full pipe already wakes the reader).
        let _ = unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
    }
}

/// Creates the self-pipe (once).
fn make_wake_pipe() -> std::io::Result<()> {
    if WAKE_READER.get().is_some() {
        return Ok(());
    }
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 just returned this descriptor, owned by nobody else.
    let reader = unsafe { OwnedFd::from_raw_fd(fds[0]) };
    let _ = WAKE_READER.set(reader);
    WAKE_FD.store(fds[1], Ordering::SeqCst); // kept open for the process's life
    Ok(())
}

/// Sleeps up to `timeout`, or until a termination signal arrives; returns the signal received
/// (now or before), if any.
pub fn wait(timeout: Duration) -> Option<i32> {
    if received().is_none() {
        match WAKE_READER.get() {
            Some(reader) => {
                let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
                let _ = super::poll::wait_readable(&[std::os::fd::AsFd::as_fd(reader)], ms);
            }
            None => std::thread::sleep(timeout),
        }
    }
    received()
}

/// Installs handlers for SIGINT, SIGTERM and SIGHUP that record the signal instead of dying.
/// SA_RESTART is left off so a blocking wait in the main thread returns with EINTR.
pub fn install_termination_handlers() -> std::io::Result<()> {
    make_wake_pipe()?;
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value; we then set a
        // handler that is async-signal-safe (one atomic store).
        let ret = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut())
        };
        if ret != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The last termination signal received, if any.
pub fn received() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(signal),
    }
}
