//! The systemd readiness protocol (`sd_notify(3)`) without libsystemd: one datagram of
//! `KEY=VALUE` lines to the socket named by `NOTIFY_SOCKET` (a path, or an abstract name
//! written with a leading `@`). Outside systemd (no `NOTIFY_SOCKET`) every call does nothing.

use std::io;
use std::os::unix::net::UnixDatagram;

/// Sends `state` (e.g. `"READY=1\nSTATUS=profiling"`) to the service manager. `Ok(false)`
/// when there is none to tell.
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let target = target.to_string_lossy().into_owned();
    let socket = UnixDatagram::unbound()?;
    let sent = match target.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            socket.send_to_addr(state.as_bytes(), &addr)?
        }
        None if target.starts_with('/') => socket.send_to(state.as_bytes(), &target)?,
        None => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("NOTIFY_SOCKET {target:?} is neither a path nor an abstract name"),
            ))
        }
    };
    if sent != state.len() {
        return Err(io::Error::other("the notification was truncated"));
    }
    Ok(true)
}

/// `CLOCK_MONOTONIC` in microseconds, as `RELOADING=1` wants it in `MONOTONIC_USEC`.
pub fn monotonic_usec() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a live, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    let ret = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    if ret != 0 {
        return 0;
    }
    (now.tv_sec as u64) * 1_000_000 + (now.tv_nsec as u64) / 1_000
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_monotonic_clock_does_not_go_back() {
        let a = super::monotonic_usec();
        assert!(a > 0 && super::monotonic_usec() >= a);
    }
}
