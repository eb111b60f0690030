//! Waiting for several file descriptors at once (poll(2)).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

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
