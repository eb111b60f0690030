//! Symbolization (to be written).
