//! Where the fields the Python walk reads sit in CPython's structures, per minor version
//! (x86_64, default non-debug, GIL builds). 3.13 says it itself: `_PyRuntime` starts with
//! `_Py_DebugOffsets` ([`from_debug_offsets`]); 3.10 to 3.12 use the table here, measured with
//! `offsetof` against each version's internal headers and checked at run time against the
//! process (`crate::python::detect` follows the interpreter's thread list with them).

/// Offsets of the fields the walk (BPF) and the code object reader (user space) use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offsets {
    /// `_PyRuntime.interpreters.head`.
    pub interpreters_head: u16,
    /// `PyInterpreterState.threads.head` (3.10: `tstate_head`).
    pub threads_head: u16,
    pub tstate_next: u16,
    /// `PyThreadState.interp`: the check that the offsets fit the process.
    pub tstate_interp: u16,
    pub tstate_thread_id: u16,
    /// 3.10: `frame`; 3.11, 3.12: `cframe`; 3.13: `current_frame`.
    pub tstate_frame: u16,
    /// `_PyCFrame.current_frame` (3.11, 3.12).
    pub cframe_frame: Option<u16>,
    /// 3.10: `PyFrameObject.f_back`; later `_PyInterpreterFrame.previous`.
    pub frame_previous: u16,
    pub frame_code: u16,
    /// 3.10: `f_lasti`; 3.11, 3.12: `prev_instr`; 3.13: `instr_ptr`.
    pub frame_instr: u16,
    /// 3.11: `is_entry`; 3.12+: `owner`; 3.10: none (0).
    pub frame_owner: u16,
    pub co_filename: u16,
    pub co_name: u16,
    /// `co_qualname` (3.11+).
    pub co_qualname: Option<u16>,
    pub co_firstlineno: u16,
    pub co_linetable: u16,
    /// Where the bytecode starts in the code object (3.11+); 0 for 3.10.
    pub co_code_adaptive: u16,
    /// `sizeof(PyASCIIObject)`: where a compact ASCII string's characters start.
    pub ascii_size: u16,
    /// `sizeof(PyCompactUnicodeObject)`: where other compact strings' characters start.
    pub compact_size: u16,
}

/// Where a `PyBytesObject`'s size and bytes are (every version).
pub const BYTES_SIZE: u64 = 16;
pub const BYTES_DATA: u64 = 32;
/// `PyASCIIObject`: `length`, `state` (every version).
pub const UNICODE_LENGTH: u64 = 16;
pub const UNICODE_STATE: u64 = 32;
/// `ob_type` of every object.
pub const OB_TYPE: u64 = 8;

/// The table for 3.`minor`, when it has one.
pub fn table(minor: u32) -> Option<Offsets> {
    let o = match minor {
        10 => Offsets {
            interpreters_head: 32,
            threads_head: 8,
            tstate_next: 8,
            tstate_interp: 16,
            tstate_thread_id: 176,
            tstate_frame: 24,
            cframe_frame: None,
            frame_previous: 24,
            frame_code: 32,
            frame_instr: 96,
            frame_owner: 0,
            co_filename: 104,
            co_name: 112,
            co_qualname: None,
            co_firstlineno: 40,
            co_linetable: 120,
            co_code_adaptive: 0,
            ascii_size: 48,
            compact_size: 72,
        },
        11 => Offsets {
            interpreters_head: 40,
            threads_head: 16,
            tstate_next: 8,
            tstate_interp: 16,
            tstate_thread_id: 152,
            tstate_frame: 56,
            cframe_frame: Some(8),
            frame_previous: 48,
            frame_code: 32,
            frame_instr: 56,
            frame_owner: 68,
            co_filename: 112,
            co_name: 120,
            co_qualname: Some(128),
            co_firstlineno: 72,
            co_linetable: 136,
            co_code_adaptive: 184,
            ascii_size: 48,
            compact_size: 72,
        },
        12 => Offsets {
            interpreters_head: 40,
            threads_head: 72,
            tstate_next: 8,
            tstate_interp: 16,
            tstate_thread_id: 136,
            tstate_frame: 56,
            cframe_frame: Some(0),
            frame_previous: 8,
            frame_code: 0,
            frame_instr: 56,
            frame_owner: 70,
            co_filename: 112,
            co_name: 120,
            co_qualname: Some(128),
            co_firstlineno: 68,
            co_linetable: 136,
            co_code_adaptive: 192,
            ascii_size: 40,
            compact_size: 56,
        },
        // 3.13 moved the thread list and the current frame; the frame and code object fields
        // kept their places.
        13 => Offsets {
            interpreters_head: 632,
            threads_head: 7344,
            tstate_thread_id: 152,
            tstate_frame: 72,
            cframe_frame: None,
            co_code_adaptive: 200,
            ..table(12)?
        },
        _ => return None,
    };
    Some(o)
}

/// The `_Py_DebugOffsets` cookie at the start of `_PyRuntime` (3.13+).
const DEBUG_COOKIE: &[u8; 8] = b"xdebugpy";

/// Reads 3.13's `_Py_DebugOffsets` (the first bytes of `_PyRuntime`, as initialised in the
/// file). `None` when the cookie or the version does not match, or a value is out of range.
pub fn from_debug_offsets(bytes: &[u8], minor: u32) -> Option<Offsets> {
    if minor != 13 || bytes.get(..8)? != DEBUG_COOKIE {
        return None;
    }
    let word = |i: usize| -> Option<u16> {
        let b = bytes.get(i * 8..i * 8 + 8)?;
        u16::try_from(u64::from_le_bytes(b.try_into().ok()?)).ok()
    };
    let version = u64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?);
    if (version >> 16) & 0xffff != 0x030d || word(2)? != 0 {
        return None; // another version, or a free-threaded build
    }
    // Word indexes of _Py_DebugOffsets (3.13): runtime_state from 3, interpreter_state from
    // 6, thread_state from 19, interpreter_frame from 28, code_object from 34, pyobject from
    // 44, type_object from 46, tuple 50, list 53, dict 56, float 59, long 61, bytes 64,
    // unicode_object from 67 (size, state, length, asciiobject_size).
    let fallback = table(13)?;
    Some(Offsets {
        interpreters_head: word(5)?,
        threads_head: word(9)?,
        tstate_next: word(21)?,
        tstate_interp: word(22)?,
        tstate_thread_id: word(24)?,
        tstate_frame: word(23)?,
        frame_previous: word(29)?,
        frame_code: word(30)?,
        frame_instr: word(31)?,
        frame_owner: word(33)?,
        co_filename: word(35)?,
        co_name: word(36)?,
        co_linetable: word(38)?,
        co_firstlineno: word(39)?,
        co_code_adaptive: word(43)?,
        ascii_size: word(70)?,
        // Not in the debug offsets: PyCompactUnicodeObject adds utf8_length and utf8 to
        // PyASCIIObject.
        compact_size: word(70)?.checked_add(16).unwrap_or(fallback.compact_size),
        co_qualname: Some(word(37)?),
        cframe_frame: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_offsets_are_read_by_position() {
        let mut bytes = vec![0u8; 72 * 8];
        bytes[..8].copy_from_slice(DEBUG_COOKIE);
        bytes[8..16].copy_from_slice(&0x030d00f0u64.to_le_bytes());
        let t = table(13).unwrap();
        #[rustfmt::skip]
        let fields = [
            (5, t.interpreters_head), (9, t.threads_head), (21, t.tstate_next),
            (22, t.tstate_interp), (23, t.tstate_frame), (24, t.tstate_thread_id),
            (29, t.frame_previous), (30, t.frame_code), (31, t.frame_instr), (33, t.frame_owner),
            (35, t.co_filename), (36, t.co_name), (37, t.co_qualname.unwrap()),
            (38, t.co_linetable), (39, t.co_firstlineno), (43, t.co_code_adaptive),
            (70, t.ascii_size),
        ];
        for (i, v) in fields {
            bytes[i * 8..i * 8 + 8].copy_from_slice(&u64::from(v).to_le_bytes());
        }
        assert_eq!(from_debug_offsets(&bytes, 13), Some(t));
        assert_eq!(from_debug_offsets(&bytes, 12), None);
        bytes[0] = b'y';
        assert_eq!(from_debug_offsets(&bytes, 13), None);
    }
}
