//! Captures libbpf's own messages (verifier logs, warnings) instead of letting them spill onto
//! stderr. They are kept in a bounded buffer so a failed load can show the relevant lines.

use std::ffi::{c_char, c_int};
use std::sync::{Mutex, Once};

const MAX_LINES: usize = 400;

static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());
static INSTALL: Once = Once::new();

extern "C" {
    fn vsnprintf(
        buf: *mut c_char,
        len: usize,
        fmt: *const c_char,
        ap: *mut libbpf_sys::__va_list_tag,
    ) -> c_int;
}

unsafe extern "C" fn capture(
    level: libbpf_sys::libbpf_print_level,
    fmt: *const c_char,
    ap: *mut libbpf_sys::__va_list_tag,
) -> c_int {
    if level == libbpf_sys::LIBBPF_DEBUG {
        return 0;
    }
    // Verifier logs arrive as one message of up to a few hundred KiB; libbpf prints rarely.
    let mut buf = vec![0u8; 1 << 20];
    // SAFETY: `buf` is writable for its whole length; `fmt` and `ap` come from libbpf and form a
    // valid printf format with its arguments; vsnprintf never writes past `len` and always
    // NUL-terminates.
    let written = unsafe { vsnprintf(buf.as_mut_ptr().cast(), buf.len(), fmt, ap) };
    if written <= 0 {
        return written;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let text = String::from_utf8_lossy(&buf[..end]);
    if let Ok(mut lines) = LINES.lock() {
        for line in text.lines() {
            if lines.len() >= MAX_LINES {
                lines.remove(0);
            }
            lines.push(line.to_string());
        }
    }
    written
}

/// Routes libbpf's messages into the capture buffer (idempotent).
pub(super) fn install() {
    INSTALL.call_once(|| {
        // SAFETY: `capture` matches libbpf_print_fn_t and only touches the Mutex-guarded buffer.
        unsafe {
            libbpf_sys::libbpf_set_print(Some(capture));
        }
    });
}

/// Takes the captured lines (the most recent ones, at most `limit`).
pub(super) fn take(limit: usize) -> Vec<String> {
    let mut lines = LINES
        .lock()
        .map(|mut l| std::mem::take(&mut *l))
        .unwrap_or_default();
    if lines.len() > limit {
        lines.drain(..lines.len() - limit);
    }
    lines
}
