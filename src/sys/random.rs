//! Random bytes from the kernel (`getrandom(2)`), for identifiers that must not repeat across
//! runs or hosts (OTLP `profile_id`). Not for secrets of our own: we have none.

use std::io;

/// Fills `buf` with random bytes from the kernel's pool (blocking only until the pool is
/// initialised at boot).
pub fn fill(buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: the kernel writes at most `rest.len()` bytes into `rest`, a live, writable
        // slice that outlives the call.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(error);
        }
        done += n as usize;
    }
    Ok(())
}

/// 16 random bytes.
pub fn bytes16() -> io::Result<[u8; 16]> {
    let mut id = [0u8; 16];
    fill(&mut id)?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    #[test]
    fn two_draws_differ() {
        let (a, b) = (super::bytes16().unwrap(), super::bytes16().unwrap());
        assert_ne!(a, [0; 16]);
        assert_ne!(a, b);
    }
}
