//! pprof's `profile.proto` (package `perftools.profiles`) as hand-written prost messages.
//!
//! This module owns only the wire layout: field numbers and types mirror pprof's
//! `profile.proto` (github.com/google/pprof, `proto/profile.proto`) exactly, so any pprof reader
//! decodes what we write.
//! Filling the messages in is `crate::encode::pprof`'s job. The types are public so integration tests can
//! decode our output.
//!
//! Every `i64` documented as "index" refers to `Profile::string_table`; `0` means "none" (the
//! empty string).

/// The whole profile.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Profile {
    /// What each entry of `Sample::value` measures.
    #[prost(message, repeated, tag = "1")]
    pub sample_type: Vec<ValueType>,
    #[prost(message, repeated, tag = "2")]
    pub sample: Vec<Sample>,
    #[prost(message, repeated, tag = "3")]
    pub mapping: Vec<Mapping>,
    #[prost(message, repeated, tag = "4")]
    pub location: Vec<Location>,
    #[prost(message, repeated, tag = "5")]
    pub function: Vec<Function>,
    /// Every string the profile refers to; `string_table[0]` must be `""`.
    #[prost(string, repeated, tag = "6")]
    pub string_table: Vec<String>,
    /// Index: frames matching this regex are dropped.
    #[prost(int64, tag = "7")]
    pub drop_frames: i64,
    /// Index: frames matching this regex are kept even if `drop_frames` matches.
    #[prost(int64, tag = "8")]
    pub keep_frames: i64,
    /// When the profile was collected, nanoseconds since the Unix epoch.
    #[prost(int64, tag = "9")]
    pub time_nanos: i64,
    #[prost(int64, tag = "10")]
    pub duration_nanos: i64,
    /// The kind of events between sampled occurrences.
    #[prost(message, optional, tag = "11")]
    pub period_type: Option<ValueType>,
    #[prost(int64, tag = "12")]
    pub period: i64,
    /// Indices of free-form comments.
    #[prost(int64, repeated, tag = "13")]
    pub comment: Vec<i64>,
    /// Index of the `ValueType::type` a viewer should show first.
    #[prost(int64, tag = "14")]
    pub default_sample_type: i64,
    /// Index of a URL documenting this profile's sample types.
    #[prost(int64, tag = "15")]
    pub doc_url: i64,
}

/// A measured quantity, e.g. `cpu` in `nanoseconds`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ValueType {
    /// Index.
    #[prost(int64, tag = "1")]
    pub r#type: i64,
    /// Index.
    #[prost(int64, tag = "2")]
    pub unit: i64,
}

/// One stack and its measured values.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    /// Leaf first: `location_id[0]` is where the CPU was.
    #[prost(uint64, repeated, tag = "1")]
    pub location_id: Vec<u64>,
    /// One value per `Profile::sample_type`.
    #[prost(int64, repeated, tag = "2")]
    pub value: Vec<i64>,
    #[prost(message, repeated, tag = "3")]
    pub label: Vec<Label>,
}

/// A key with either a string (`str`) or a numeric (`num`) value.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    /// Index.
    #[prost(int64, tag = "1")]
    pub key: i64,
    /// Index.
    #[prost(int64, tag = "2")]
    pub str: i64,
    #[prost(int64, tag = "3")]
    pub num: i64,
    /// Index.
    #[prost(int64, tag = "4")]
    pub num_unit: i64,
}

/// A region of memory and the file it was loaded from.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Mapping {
    /// Nonzero and unique.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(uint64, tag = "2")]
    pub memory_start: u64,
    #[prost(uint64, tag = "3")]
    pub memory_limit: u64,
    /// The file offset `memory_start` corresponds to.
    #[prost(uint64, tag = "4")]
    pub file_offset: u64,
    /// Index.
    #[prost(int64, tag = "5")]
    pub filename: i64,
    /// Index.
    #[prost(int64, tag = "6")]
    pub build_id: i64,
    #[prost(bool, tag = "7")]
    pub has_functions: bool,
    #[prost(bool, tag = "8")]
    pub has_filenames: bool,
    #[prost(bool, tag = "9")]
    pub has_line_numbers: bool,
    #[prost(bool, tag = "10")]
    pub has_inline_frames: bool,
}

/// An instruction address and the function(s) it belongs to.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Location {
    /// Nonzero and unique.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// `0` when the mapping is unknown.
    #[prost(uint64, tag = "2")]
    pub mapping_id: u64,
    #[prost(uint64, tag = "3")]
    pub address: u64,
    /// Innermost (inlined) function first, the caller last.
    #[prost(message, repeated, tag = "4")]
    pub line: Vec<Line>,
    #[prost(bool, tag = "5")]
    pub is_folded: bool,
}

/// A source position inside a function.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Line {
    #[prost(uint64, tag = "1")]
    pub function_id: u64,
    /// `0` when unknown.
    #[prost(int64, tag = "2")]
    pub line: i64,
    #[prost(int64, tag = "3")]
    pub column: i64,
}

/// A function, shared by every location inside it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Function {
    /// Nonzero and unique.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// Index: the display (demangled) name.
    #[prost(int64, tag = "2")]
    pub name: i64,
    /// Index: the name as the linker knows it.
    #[prost(int64, tag = "3")]
    pub system_name: i64,
    /// Index: the source file.
    #[prost(int64, tag = "4")]
    pub filename: i64,
    #[prost(int64, tag = "5")]
    pub start_line: i64,
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    // Pins a few field numbers and encodings against profile.proto, byte for byte.
    #[test]
    fn wire_layout() {
        let value_type = ValueType { r#type: 1, unit: 2 };
        assert_eq!(value_type.encode_to_vec(), [0x08, 1, 0x10, 2]);

        // Repeated scalars are packed (proto3 default): tag 1, wire type 2.
        let sample = Sample {
            location_id: vec![1, 2],
            value: vec![3],
            label: vec![],
        };
        assert_eq!(sample.encode_to_vec(), [0x0a, 2, 1, 2, 0x12, 1, 3]);

        let profile = Profile {
            string_table: vec![String::new(), "cpu".into()],
            period: 5,
            default_sample_type: 1,
            ..Profile::default()
        };
        let bytes = profile.encode_to_vec();
        assert_eq!(
            bytes,
            [0x32, 0, 0x32, 3, b'c', b'p', b'u', 0x60, 5, 0x70, 1]
        );
        assert_eq!(Profile::decode(bytes.as_slice()).ok(), Some(profile));
    }
}
