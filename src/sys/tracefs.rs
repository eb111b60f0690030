//! tracefs: where the kernel lists the IDs of its tracepoints, which attaching a classic
//! tracepoint program needs (libbpf reads them from `/sys/kernel/tracing`). Many systems mount
//! it at boot; where none did, the profiler mounts it, as perf does.

use std::io;
use std::path::Path;

const MOUNT_POINT: &str = "/sys/kernel/tracing";

/// Makes sure tracefs is mounted at `/sys/kernel/tracing`. `Ok(true)` when this call mounted
/// it.
pub fn ensure_mounted() -> io::Result<bool> {
    if Path::new(MOUNT_POINT).join("events").is_dir() {
        return Ok(false);
    }
    // SAFETY: every pointer is a NUL-terminated string literal that outlives the call; no data
    // argument is passed.
    let ret = unsafe {
        libc::mount(
            c"tracefs".as_ptr(),
            c"/sys/kernel/tracing".as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(true)
}
