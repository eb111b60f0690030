//! Views of a profile for people: the interactive flame graph (`svg`, over the merged stacks
//! of `tree`), the differential flame graph and its table of movers (`diff`), and the live
//! table of `profiler top` (`top_table`).
//!
//! This module owns turning a [`crate::profile::Profile`] into something to look at; it reads
//! no files and writes nowhere (callers hand the text to a file or a terminal). It sits with
//! the encoders: it imports only `profile` and `summary`.

pub mod diff;
pub mod svg;
pub mod top_table;
pub mod tree;
