//! Running a loaded `SEC("syscall")` program once on a context the caller gives
//! (`BPF_PROG_TEST_RUN`), without attaching it anywhere: how BPF code is checked against its
//! Rust reference (tests/table_search.rs).

use std::io;

use super::{check, context, LoadedObject};

impl LoadedObject {
    /// Runs the syscall program `program` once with `ctx` (at most 65,535 bytes) as its
    /// context and returns the program's return value. What the program wrote into its context
    /// is copied back into `ctx`.
    pub fn test_run(&self, program: &str, ctx: &mut [u8]) -> io::Result<u32> {
        let size = u16::try_from(ctx.len()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{program}: a test-run context is at most 65,535 bytes"),
            )
        })?;
        let prog = self.program(program)?;
        // SAFETY: `prog` belongs to this live, loaded object; the getter only reads its fd.
        let fd = check(unsafe { libbpf_sys::bpf_program__fd(prog.as_ptr()) })?;
        let mut opts = libbpf_sys::bpf_test_run_opts {
            sz: std::mem::size_of::<libbpf_sys::bpf_test_run_opts>() as _,
            ctx_in: ctx.as_mut_ptr().cast_const().cast(),
            ctx_size_in: u32::from(size),
            ..Default::default()
        };
        // SAFETY: `opts` is a properly sized, zero-initialised options struct. The kernel reads
        // `ctx_size_in` bytes from `ctx_in` and, for a syscall program, writes the same number
        // of bytes back there: `ctx` is exclusively borrowed and exactly that long. Nothing
        // else in `opts` points anywhere.
        let ret = unsafe { libbpf_sys::bpf_prog_test_run_opts(fd, &mut opts) };
        check(ret).map_err(|e| context(e, format!("cannot test-run {program}")))?;
        Ok(opts.retval)
    }
}
