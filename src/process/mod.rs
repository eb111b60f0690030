//! Processes as the system shows them: `/proc/PID/maps` parsing (`maps.rs`), process identity
//! and reading through `/proc` (`source.rs`), and the registry of executable files shared by
//! processes (`files.rs`). Leaf concepts: the maintainer (`crate::maintainer`) builds on them.

pub mod files;
pub mod maps;
pub mod source;
