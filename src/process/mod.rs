//! Processes as the system shows them: `/proc/PID/maps` parsing (`maps.rs`), process identity
//! and reading through `/proc` (`source.rs`), the registry of executable files shared by
//! processes (`files.rs`), each process's cgroup and container (`cgroup.rs`) and which
//! processes a session keeps (`filter.rs`), the `-p` targets and when they end (`targets.rs`). Leaf concepts: the maintainer
//! (`crate::maintainer`) and the reporter build on them.

pub mod cgroup;
pub mod files;
pub mod filter;
pub mod maps;
pub mod source;
pub mod targets;
