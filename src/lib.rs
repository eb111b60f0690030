//! `profiler`: a whole-system eBPF CPU profiler. The binary (`src/main.rs`) is a thin CLI over
//! this library; the modules are laid out as the architecture in DESIGN.md.

pub mod cli;
pub mod encode;
pub mod exporter;
pub mod log;
pub mod maintainer;
pub mod metrics;
pub mod output_file;
pub mod pipeline;
pub mod poller;
pub mod privileges;
pub mod process;
pub mod profile;
pub mod proto;
pub mod reporter;
pub mod sampler;
pub mod session;
pub mod stats;
pub mod summary;
pub mod symbolize;
pub mod sys;
#[doc(hidden)]
pub mod testing;
pub mod unwind;
