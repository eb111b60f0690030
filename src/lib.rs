//! `profiler`: a whole-system eBPF CPU profiler. The binary (`src/main.rs`) is a thin CLI over
//! this library; `docs/architecture.md` describes the design the modules follow.
//!
//! Imports point down only, no two modules import each other, and no chain of imports from
//! `main` is longer than six (main → cli → session → maintainer → pid_mappings → process →
//! sys is the longest). From the top:
//!
//! - Entry: [`cli`] (commands, exit codes) runs a [`session`], which loads the [`sampler`],
//!   starts the threads and shuts them down in order.
//! - Threads: [`poller`] (T1: perf buffers), [`maintainer`] (T2: the process table, the only
//!   writer of `pid_mappings` and of the unwind-table maps), [`reporter`] (T3: aggregation,
//!   symbolization, finishing walks in user space), [`exporter`] (OTLP/HTTP). They talk through
//!   [`pipeline`]'s messages. No leaf imports a thread.
//! - Below the maintainer: [`pid_mappings`] (what the LPM trie should hold: prefix covers, a
//!   process's wanted entries and the writes that get it there), [`tables`] (which files' unwind
//!   tables are loaded where, the build queue and its extractor thread, LRU eviction) and
//!   [`process`] (`/proc`, process identity, the shared file registry).
//! - Unwinding: [`cfi`] reads a file's call-frame information into rows ([`unwind_rows`], the
//!   vocabulary), with ELF images parsed by `elf`; [`unwind`] encodes rows in the BPF bucket
//!   format and takes a walk's step as the BPF unwinder does. `cfi` and `unwind` do not import
//!   each other; [`tables`] uses both.
//! - CPython: [`python`] finds CPython processes and their interpreter's layout, and names the
//!   Python frames the sampler records (code objects read from the live process).
//! - Output: [`symbolize`], [`profile`] (the data model), [`summary`], [`encode`] (folded,
//!   pprof, OTLP, SVG) over [`proto`]'s wire messages and [`view`] (flame graphs, `top`'s
//!   table), [`output_file`]; [`report`] reads the files back (for `report` and `diff`).
//! - Shared: [`layout`] (the records and map values shared with the BPF programs, mirrored
//!   from `bpf/profiler.h`, and their decoding), [`stats`], [`log`], [`privileges`], [`sys`]
//!   (the only `unsafe`: libbpf, mmap, system calls), `testing` (the one gate for test skips).

pub mod cfi;
pub mod cli;
pub(crate) mod elf;
pub mod encode;
pub mod exporter;
pub mod layout;
pub mod log;
pub mod maintainer;
pub mod metrics;
pub mod output_file;
pub mod pid_mappings;
pub mod pipeline;
pub mod poller;
pub mod privileges;
pub mod process;
pub mod profile;
pub mod proto;
pub mod python;
pub mod report;
pub mod reporter;
pub mod sampler;
pub mod session;
pub mod stats;
pub mod summary;
pub mod symbolize;
pub mod sys;
pub mod tables;
#[doc(hidden)]
pub mod testing;
pub mod unwind;
pub mod unwind_rows;
pub mod view;
