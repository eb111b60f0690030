//! `profiler`: a whole-system eBPF CPU profiler. The binary (`src/main.rs`) is a thin CLI over
//! this library; the modules are laid out as the architecture in DESIGN.md.

pub mod export;
pub mod profile;
pub mod symbolize;
