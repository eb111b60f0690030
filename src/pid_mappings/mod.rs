//! What the BPF `pid_mappings` LPM trie should hold, computed without touching it: how an
//! address range becomes trie keys (`prefixes.rs`), and which entries a process with given
//! mappings needs and which writes bring its current entries there (`wanted.rs`).
//!
//! A leaf (it imports `crate::process::maps` and `crate::layout` only). Everything
//! here is pure: the maintainer thread applies the writes through its batcher, as the only
//! writer of the map, and decides when a process's entries are computed (its lifecycle).

pub mod prefixes;
pub mod wanted;
