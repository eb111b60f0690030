//! Unwind tables as the BPF unwinder reads them: each executable's rows (`crate::unwind_rows`,
//! read by `crate::cfi`) in the compact bucket layout loaded into BPF maps, and the same walk
//! step in Rust for walks finished in user space. x86_64 user stacks are walked without frame
//! pointers this way. A leaf: it imports only the row types and `crate::sys`'s BPF layouts.
//!
//! What this module owns:
//! - [`CompactTable`] (`compact.rs`): the bucket layout loaded into BPF maps (256 bytes per KiB
//!   of text: a 2-byte key per row, rules shared within the bucket), with a lookup that is the
//!   BPF algorithm, written once more in Rust so it can be tested.
//! - [`step`]: one step of a walk as the sampler takes it, for walks finished in user space.
//!
//! What it does not own: reading CFI into rows (`crate::cfi`), loading tables into maps and
//! refcounting them per `file_id` (`crate::tables`, where extraction and encoding are also
//! tested together), or the BPF unwinder itself (bpf/).

pub mod compact;
pub mod step;

#[cfg(test)]
pub(crate) mod rng;

pub use compact::{Bucket, CompactError, CompactRow, CompactStats, CompactTable, Rule};
