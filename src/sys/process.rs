//! Process-level system calls: sending signals, probing whether a PID exists, and reading
//! another process's memory.

use std::io;

/// Sends `signal` to `pid`.
pub fn send_signal(pid: u32, signal: i32) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "PID out of range"))?;
    // SAFETY: kill has no memory-safety preconditions.
    if unsafe { libc::kill(pid, signal) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A pidfd for `pid`: it polls readable once the process has exited. `None` when the kernel has
/// no pidfds or the process is already gone (the caller then falls back to probing).
pub fn pidfd(pid: u32) -> Option<std::os::fd::OwnedFd> {
    let pid = libc::pid_t::try_from(pid).ok()?;
    // SAFETY: pidfd_open takes a PID and flags and returns a new fd or -1; no memory is passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = libc::c_int::try_from(fd).ok().filter(|&fd| fd >= 0)?;
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    Some(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// This process's effective UID.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Whether this process runs as root (effective UID 0).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Whether a process with this PID exists (it may belong to another user).
pub fn exists(pid: u32) -> bool {
    match send_signal(pid, 0) {
        Ok(()) => true,
        Err(e) => e.raw_os_error() == Some(libc::EPERM),
    }
}

/// Gives the heap memory that was freed back to the kernel (glibc keeps freed memory for reuse
/// otherwise): after dropping large parsed structures, so the resident size shows it.
pub fn trim_heap() {
    // SAFETY: malloc_trim only walks the allocator's own free lists; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// This process's resident memory (bytes) and the CPU time it used (user + system, seconds).
pub fn own_usage() -> io::Result<(u64, f64)> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad /proc/self/statm"))?;
    // SAFETY: sysconf has no memory-safety preconditions.
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    // SAFETY: a zeroed rusage is a valid value for the kernel to overwrite; the pointer is to
    // a live local.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return Err(io::Error::last_os_error());
        }
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok((
        pages * page_size.max(0) as u64,
        seconds(usage.ru_utime) + seconds(usage.ru_stime),
    ))
}

/// The name of a signal number, e.g. "SIGTERM".
pub fn signal_name(signal: i32) -> String {
    match signal {
        libc::SIGINT => "SIGINT".into(),
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGHUP => "SIGHUP".into(),
        libc::SIGKILL => "SIGKILL".into(),
        other => format!("signal {other}"),
    }
}

/// Reads `pid`'s memory at `addr` into `buf`, page by page; returns how many bytes from the
/// start were read (fewer than asked where a mapping ends or the process is gone).
pub fn read_memory(pid: u32, addr: u64, buf: &mut [u8]) -> usize {
    const PAGE: usize = 4096;
    const IOV_MAX: usize = 64;
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return 0;
    };
    let mut done = 0;
    while done < buf.len() {
        // One remote iovec per page: a partial transfer stops at the first unreadable one.
        let mut remote = Vec::with_capacity(IOV_MAX);
        let mut at = done;
        while at < buf.len() && remote.len() < IOV_MAX {
            let len = (PAGE - (addr as usize + at) % PAGE).min(buf.len() - at);
            remote.push(libc::iovec {
                iov_base: (addr as usize + at) as *mut libc::c_void,
                iov_len: len,
            });
            at += len;
        }
        let local = libc::iovec {
            iov_base: buf[done..at].as_mut_ptr().cast(),
            iov_len: at - done,
        };
        // SAFETY: `local` covers `buf[done..at]`, which is valid for writes and outlives the
        // call; the remote iovecs are only read by the kernel (another address space), and
        // `remote` outlives the call.
        let n = unsafe {
            libc::process_vm_readv(pid, &local, 1, remote.as_ptr(), remote.len() as _, 0)
        };
        if n <= 0 {
            break;
        }
        done += n as usize;
        if done < at {
            break;
        }
    }
    done
}
