//! The `profiler` binary: everything lives in the library; see `profiler::cli`.

fn main() {
    std::process::exit(profiler::cli::main());
}
