//! Placeholder; see benches/README.md.
fn main() {}
