//! Processes: reading `/proc`, the process table with its lifecycle, and the maintenance of the
//! per-PID BPF map (`pid_mappings`) that it owns (DESIGN.md, "T2").

pub mod batcher;
pub mod extractor;
#[cfg(test)]
mod fake_map;
pub mod files;
pub mod lifecycle;
pub mod maintainer;
pub mod maps;
pub mod prefixes;
pub mod source;
pub mod table_lru;
pub mod tables;
