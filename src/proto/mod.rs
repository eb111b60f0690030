//! Wire messages, written by hand with prost: OTLP `profiles.proto` (`otlp.rs`) and pprof's
//! `profile.proto` (`pprof.rs`). Leaf: filled in by `crate::encode`, read by tests.

pub mod otlp;
pub mod pprof;
