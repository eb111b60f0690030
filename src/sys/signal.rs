//! Termination signals (SIGINT, SIGTERM, SIGHUP) turned into a flag, and a wait that a signal
//! ends at once whichever thread it was delivered to (a self-pipe), so the main thread can
//! sleep for long stretches instead of polling. A daemon may make SIGHUP a reload request
//! instead ([`install_reload_handler`], [`take_reload`]).

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

static RECEIVED: AtomicI32 = AtomicI32::new(0);
/// SIGHUPs received as reload requests and not yet taken.
static RELOADS: AtomicI32 = AtomicI32::new(0);
/// The self-pipe's write end (-1 until the handlers are installed).
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);
/// The self-pipe's read end.
static WAKE_READER: OnceLock<OwnedFd> = OnceLock::new();

extern "C" fn on_signal(signal: libc::c_int) {
    // An atomic store and a write(2): both async-signal-safe.
    RECEIVED.store(signal, Ordering::SeqCst);
    wake();
}

extern "C" fn on_reload(_signal: libc::c_int) {
    RELOADS.fetch_add(1, Ordering::SeqCst);
    wake();
}

extern "C" fn on_child(_signal: libc::c_int) {
    wake();
}

/// Ends a [`wait`] in progress (or the next one) at once, from any thread or a signal handler:
/// for news the waiter must look at, such as a thread that stopped. Async-signal-safe.
pub fn wake() {
    let fd = WAKE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        super::poll::poke(fd);
    }
}

/// Creates the self-pipe (once).
fn make_wake_pipe() -> std::io::Result<()> {
    if WAKE_READER.get().is_some() {
        return Ok(());
    }
    let (reader, writer) = super::poll::pipe()?;
    let _ = WAKE_READER.set(reader);
    // Kept open for the process's life.
    WAKE_FD.store(
        std::os::fd::IntoRawFd::into_raw_fd(writer),
        Ordering::SeqCst,
    );
    Ok(())
}

/// Sleeps up to `timeout`, or until a termination signal arrives; returns the signal received
/// (now or before), if any.
pub fn wait(timeout: Duration) -> Option<i32> {
    wait_or(timeout, &[])
}

/// Like [`wait`], and also wakes when one of `fds` polls readable (a pidfd whose process ended).
pub fn wait_or(timeout: Duration, fds: &[std::os::fd::BorrowedFd<'_>]) -> Option<i32> {
    if received().is_none() {
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        match WAKE_READER.get() {
            Some(reader) => {
                let mut all = vec![std::os::fd::AsFd::as_fd(reader)];
                all.extend_from_slice(fds);
                let woken = super::poll::wait_readable(&all, ms);
                if woken.is_ok_and(|w| w[0]) {
                    drain(reader);
                }
            }
            None if fds.is_empty() => std::thread::sleep(timeout),
            None => {
                let _ = super::poll::wait_readable(fds, ms);
            }
        }
    }
    received()
}

/// Empties the self-pipe, so the next wait sleeps until the next wake.
fn drain(reader: &OwnedFd) {
    let mut buf = [0u8; 64];
    loop {
        // SAFETY: reads into a live stack buffer of the given length from a non-blocking pipe
        // we own; returns at once when it is empty.
        let n = unsafe {
            libc::read(
                std::os::fd::AsRawFd::as_raw_fd(reader),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n < buf.len() as isize {
            return;
        }
    }
}

/// Installs handlers for SIGINT, SIGTERM and SIGHUP that record the signal instead of dying.
/// SA_RESTART is left off so a blocking wait in the main thread returns with EINTR.
pub fn install_termination_handlers() -> std::io::Result<()> {
    make_wake_pipe()?;
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        set_handler(signal, on_signal, 0)?;
    }
    Ok(())
}

/// Makes SIGHUP a reload request instead of a stop: it ends a [`wait`] at once and
/// [`take_reload`] reports it. Call after [`install_termination_handlers`].
pub fn install_reload_handler() -> std::io::Result<()> {
    make_wake_pipe()?;
    set_handler(libc::SIGHUP, on_reload, 0)
}

/// Whether a reload was requested (SIGHUP) since the last call.
pub fn take_reload() -> bool {
    RELOADS.swap(0, Ordering::SeqCst) > 0
}

/// Makes the end of a child process (SIGCHLD) end a [`wait`] at once, so the main thread need
/// not poll for its command's exit. SA_RESTART: other threads' system calls carry on.
pub fn install_child_wakeup() -> std::io::Result<()> {
    make_wake_pipe()?;
    set_handler(
        libc::SIGCHLD,
        on_child,
        libc::SA_RESTART | libc::SA_NOCLDSTOP,
    )
}

fn set_handler(
    signal: libc::c_int,
    handler: extern "C" fn(libc::c_int),
    flags: libc::c_int,
) -> std::io::Result<()> {
    // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value; we then set a
    // handler that is async-signal-safe (an atomic store and a write(2)).
    let ret = unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler as usize;
        action.sa_flags = flags;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(signal, &action, std::ptr::null_mut())
    };
    if ret != 0 {
        return Err(std::io::Error::last_os_error());
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
