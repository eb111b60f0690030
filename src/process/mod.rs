//! Processes: reading `/proc` (maps, identity) and the maintainer thread that owns the process
//! table. Later this is where the per-PID BPF map maintenance lives (DESIGN.md, "T2").

pub mod maintainer;
pub mod maps;
pub mod snapshot;

pub use snapshot::{ProcessSnapshot, SharedSnapshot};
