//! OTLP profiles (opentelemetry-proto v1.11.0, `v1development`) as hand-written prost messages.
//!
//! This module owns only the wire layout: field numbers and types mirror opentelemetry-proto
//! v1.11.0's `profiles.proto`, `profiles_service.proto`, `common.proto` and `resource.proto`
//! exactly. v1.10.0 and v1.11.0 are wire-identical; v1.9.0 and older are not (the `Sample`
//! fields were renumbered), so do not "fix" a tag to match an older copy.
//! Filling the messages in is `crate::encode::otlp`'s job. The types are public so tests and receivers
//! can decode what we send.
//!
//! Every `i32` named `*_strindex` or `*_index` refers to a table of the one
//! [`ProfilesDictionary`] of the enclosing message; `0` means "none" (the table's zero entry).

/// The body of `POST /v1development/profiles` (package
/// `opentelemetry.proto.collector.profiles.v1development`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExportProfilesServiceRequest {
    #[prost(message, repeated, tag = "1")]
    pub resource_profiles: Vec<ResourceProfiles>,
    /// Shared by every profile of the request.
    #[prost(message, optional, tag = "2")]
    pub dictionary: Option<ProfilesDictionary>,
}

/// The collector's answer to an export.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExportProfilesServiceResponse {
    /// Set when part of the request was rejected; unset means everything was accepted.
    #[prost(message, optional, tag = "1")]
    pub partial_success: Option<ExportProfilesPartialSuccess>,
}

/// What a collector rejected, and why.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExportProfilesPartialSuccess {
    #[prost(int64, tag = "1")]
    pub rejected_profiles: i64,
    #[prost(string, tag = "2")]
    pub error_message: String,
}

/// Profiles at rest (a file): the same fields 1 and 2, and wire format, as the request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProfilesData {
    #[prost(message, repeated, tag = "1")]
    pub resource_profiles: Vec<ResourceProfiles>,
    #[prost(message, optional, tag = "2")]
    pub dictionary: Option<ProfilesDictionary>,
}

/// The tables every profile of a message refers into. Each table's entry 0 is its zero value.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProfilesDictionary {
    #[prost(message, repeated, tag = "1")]
    pub mapping_table: Vec<Mapping>,
    #[prost(message, repeated, tag = "2")]
    pub location_table: Vec<Location>,
    #[prost(message, repeated, tag = "3")]
    pub function_table: Vec<Function>,
    #[prost(message, repeated, tag = "4")]
    pub link_table: Vec<Link>,
    #[prost(string, repeated, tag = "5")]
    pub string_table: Vec<String>,
    #[prost(message, repeated, tag = "6")]
    pub attribute_table: Vec<KeyValueAndUnit>,
    #[prost(message, repeated, tag = "7")]
    pub stack_table: Vec<Stack>,
}

/// The profiles of one resource (for us: one process).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ResourceProfiles {
    #[prost(message, optional, tag = "1")]
    pub resource: Option<Resource>,
    #[prost(message, repeated, tag = "2")]
    pub scope_profiles: Vec<ScopeProfiles>,
    #[prost(string, tag = "3")]
    pub schema_url: String,
}

/// The profiles one instrumentation scope (for us: this profiler) produced.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ScopeProfiles {
    #[prost(message, optional, tag = "1")]
    pub scope: Option<InstrumentationScope>,
    #[prost(message, repeated, tag = "2")]
    pub profiles: Vec<Profile>,
    #[prost(string, tag = "3")]
    pub schema_url: String,
}

/// One profile: a sample type and the samples measured in it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Profile {
    /// What every `Sample::values` entry measures.
    #[prost(message, optional, tag = "1")]
    pub sample_type: Option<ValueType>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
    #[prost(fixed64, tag = "3")]
    pub time_unix_nano: u64,
    #[prost(uint64, tag = "4")]
    pub duration_nano: u64,
    /// The kind of events between sampled occurrences.
    #[prost(message, optional, tag = "5")]
    pub period_type: Option<ValueType>,
    #[prost(int64, tag = "6")]
    pub period: i64,
    /// 16 bytes, or empty.
    #[prost(bytes = "vec", tag = "7")]
    pub profile_id: Vec<u8>,
    #[prost(uint32, tag = "8")]
    pub dropped_attributes_count: u32,
    #[prost(string, tag = "9")]
    pub original_payload_format: String,
    #[prost(bytes = "vec", tag = "10")]
    pub original_payload: Vec<u8>,
    /// Indices into `attribute_table`.
    #[prost(int32, repeated, tag = "11")]
    pub attribute_indices: Vec<i32>,
}

/// A pointer from a sample to a trace span.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Link {
    /// 16 bytes.
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    /// 8 bytes.
    #[prost(bytes = "vec", tag = "2")]
    pub span_id: Vec<u8>,
}

/// A measured quantity, e.g. `cpu` in `nanoseconds`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ValueType {
    #[prost(int32, tag = "1")]
    pub type_strindex: i32,
    #[prost(int32, tag = "2")]
    pub unit_strindex: i32,
}

/// One stack (with its attributes) and what was measured there.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    #[prost(int32, tag = "1")]
    pub stack_index: i32,
    #[prost(int32, repeated, tag = "2")]
    pub attribute_indices: Vec<i32>,
    /// `0`: no link.
    #[prost(int32, tag = "3")]
    pub link_index: i32,
    /// In `Profile::sample_type` units.
    #[prost(int64, repeated, tag = "4")]
    pub values: Vec<i64>,
    #[prost(fixed64, repeated, tag = "5")]
    pub timestamps_unix_nano: Vec<u64>,
}

/// A region of memory and the file it was loaded from.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Mapping {
    #[prost(uint64, tag = "1")]
    pub memory_start: u64,
    #[prost(uint64, tag = "2")]
    pub memory_limit: u64,
    /// The file offset `memory_start` corresponds to.
    #[prost(uint64, tag = "3")]
    pub file_offset: u64,
    #[prost(int32, tag = "4")]
    pub filename_strindex: i32,
    #[prost(int32, repeated, tag = "5")]
    pub attribute_indices: Vec<i32>,
}

/// A call stack as locations, leaf first.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Stack {
    #[prost(int32, repeated, tag = "1")]
    pub location_indices: Vec<i32>,
}

/// An instruction address and the function(s) it belongs to.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Location {
    /// `0`: unknown mapping.
    #[prost(int32, tag = "1")]
    pub mapping_index: i32,
    #[prost(uint64, tag = "2")]
    pub address: u64,
    /// Innermost (inlined) function first, the caller last. Empty when unsymbolized.
    #[prost(message, repeated, tag = "3")]
    pub lines: Vec<Line>,
    #[prost(int32, repeated, tag = "4")]
    pub attribute_indices: Vec<i32>,
}

/// A source position inside a function.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Line {
    #[prost(int32, tag = "1")]
    pub function_index: i32,
    /// 1-based; `0` when unknown.
    #[prost(int64, tag = "2")]
    pub line: i64,
    /// 1-based; `0` when unknown.
    #[prost(int64, tag = "3")]
    pub column: i64,
}

/// A function. At least one of the three names must be set.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Function {
    /// The display (demangled) name.
    #[prost(int32, tag = "1")]
    pub name_strindex: i32,
    /// The name as the linker knows it (mangled).
    #[prost(int32, tag = "2")]
    pub system_name_strindex: i32,
    /// The source file.
    #[prost(int32, tag = "3")]
    pub filename_strindex: i32,
    #[prost(int64, tag = "4")]
    pub start_line: i64,
}

/// An attribute in the dictionary: a key (by string index), a value and an optional UCUM unit.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValueAndUnit {
    #[prost(int32, tag = "1")]
    pub key_strindex: i32,
    #[prost(message, optional, tag = "2")]
    pub value: Option<AnyValue>,
    /// `0`: implicit or no unit.
    #[prost(int32, tag = "3")]
    pub unit_strindex: i32,
}

/// `opentelemetry.proto.common.v1.AnyValue`: unset `value` is the "empty" value.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AnyValue {
    #[prost(oneof = "any_value::Value", tags = "1, 2, 3, 4, 5, 6, 7, 8")]
    pub value: Option<any_value::Value>,
}

/// The variants of [`AnyValue`].
pub mod any_value {
    /// One of `AnyValue`'s typed values.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        #[prost(string, tag = "1")]
        StringValue(String),
        #[prost(bool, tag = "2")]
        BoolValue(bool),
        #[prost(int64, tag = "3")]
        IntValue(i64),
        #[prost(double, tag = "4")]
        DoubleValue(f64),
        #[prost(message, tag = "5")]
        ArrayValue(super::ArrayValue),
        #[prost(message, tag = "6")]
        KvlistValue(super::KeyValueList),
        #[prost(bytes = "vec", tag = "7")]
        BytesValue(Vec<u8>),
        /// Profiles only: an index into `ProfilesDictionary::string_table`.
        #[prost(int32, tag = "8")]
        StringValueStrindex(i32),
    }
}

/// A list of values (a message because a oneof cannot hold a repeated field).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ArrayValue {
    #[prost(message, repeated, tag = "1")]
    pub values: Vec<AnyValue>,
}

/// A list of key/value pairs with unique keys.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValueList {
    #[prost(message, repeated, tag = "1")]
    pub values: Vec<KeyValue>,
}

/// A key/value pair; the key is either `key` or (profiles only) `key_strindex`, never both.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<AnyValue>,
    #[prost(int32, tag = "3")]
    pub key_strindex: i32,
}

/// The library (for us: this profiler) that produced the data.
#[derive(Clone, PartialEq, prost::Message)]
pub struct InstrumentationScope {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub version: String,
    #[prost(message, repeated, tag = "3")]
    pub attributes: Vec<KeyValue>,
    #[prost(uint32, tag = "4")]
    pub dropped_attributes_count: u32,
}

/// A reference from a resource to an entity (by attribute keys).
#[derive(Clone, PartialEq, prost::Message)]
pub struct EntityRef {
    #[prost(string, tag = "1")]
    pub schema_url: String,
    #[prost(string, tag = "2")]
    pub r#type: String,
    #[prost(string, repeated, tag = "3")]
    pub id_keys: Vec<String>,
    #[prost(string, repeated, tag = "4")]
    pub description_keys: Vec<String>,
}

/// The entity the telemetry is about, described by attributes with unique keys.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Resource {
    #[prost(message, repeated, tag = "1")]
    pub attributes: Vec<KeyValue>,
    #[prost(uint32, tag = "2")]
    pub dropped_attributes_count: u32,
    #[prost(message, repeated, tag = "3")]
    pub entity_refs: Vec<EntityRef>,
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    // Pins field numbers and encodings against the v1.11.0 protos, byte for byte.
    #[test]
    fn sample_wire_layout() {
        // v1.10 renumbered Sample: values is 4 and timestamps 5 (fixed64, packed).
        let sample = Sample {
            stack_index: 1,
            attribute_indices: vec![2, 3],
            link_index: 4,
            values: vec![5],
            timestamps_unix_nano: vec![6],
        };
        assert_eq!(
            sample.encode_to_vec(),
            [
                0x08, 1, // stack_index = 1
                0x12, 2, 2, 3, // attribute_indices = [2, 3], packed
                0x18, 4, // link_index = 4
                0x22, 1, 5, // values = [5], packed
                0x2a, 8, 6, 0, 0, 0, 0, 0, 0, 0, // timestamps = [6], packed fixed64
            ]
        );
    }

    #[test]
    fn profile_wire_layout() {
        let profile = Profile {
            sample_type: Some(ValueType {
                type_strindex: 1,
                unit_strindex: 2,
            }),
            time_unix_nano: 1,
            duration_nano: 2,
            period: 3,
            attribute_indices: vec![7],
            ..Profile::default()
        };
        let bytes = profile.encode_to_vec();
        assert_eq!(
            bytes,
            [
                0x0a, 4, 0x08, 1, 0x10, 2, // sample_type
                0x19, 1, 0, 0, 0, 0, 0, 0, 0, // time_unix_nano: fixed64
                0x20, 2, // duration_nano
                0x30, 3, // period
                0x5a, 1, 7, // attribute_indices
            ]
        );
        assert_eq!(Profile::decode(bytes.as_slice()).ok(), Some(profile));
    }

    #[test]
    fn dictionary_wire_layout() {
        let dictionary = ProfilesDictionary {
            string_table: vec![String::new(), "a".into()],
            stack_table: vec![Stack {
                location_indices: vec![1],
            }],
            ..ProfilesDictionary::default()
        };
        assert_eq!(
            dictionary.encode_to_vec(),
            [0x2a, 0, 0x2a, 1, b'a', 0x3a, 3, 0x0a, 1, 1]
        );
        let data = ProfilesData {
            resource_profiles: vec![],
            dictionary: Some(ProfilesDictionary::default()),
        };
        assert_eq!(data.encode_to_vec(), [0x12, 0]);
    }

    #[test]
    fn common_wire_layout() {
        let attribute = KeyValueAndUnit {
            key_strindex: 1,
            value: Some(AnyValue {
                value: Some(any_value::Value::IntValue(2)),
            }),
            unit_strindex: 3,
        };
        assert_eq!(
            attribute.encode_to_vec(),
            [0x08, 1, 0x12, 2, 0x18, 2, 0x18, 3]
        );
        let indexed = AnyValue {
            value: Some(any_value::Value::StringValueStrindex(9)),
        };
        assert_eq!(indexed.encode_to_vec(), [0x40, 9]);
        let key_value = KeyValue {
            key: "k".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue("v".into())),
            }),
            key_strindex: 0,
        };
        assert_eq!(
            key_value.encode_to_vec(),
            [0x0a, 1, b'k', 0x12, 3, 0x0a, 1, b'v']
        );
        let location = Location {
            mapping_index: 1,
            address: 2,
            lines: vec![Line {
                function_index: 3,
                line: 0,
                column: 0,
            }],
            attribute_indices: vec![4],
        };
        assert_eq!(
            location.encode_to_vec(),
            [0x08, 1, 0x10, 2, 0x1a, 2, 0x08, 3, 0x22, 1, 4]
        );
        let mapping = Mapping {
            filename_strindex: 1,
            attribute_indices: vec![2],
            ..Mapping::default()
        };
        assert_eq!(mapping.encode_to_vec(), [0x20, 1, 0x2a, 1, 2]);
    }

    #[test]
    fn response_round_trips() {
        let response = ExportProfilesServiceResponse {
            partial_success: Some(ExportProfilesPartialSuccess {
                rejected_profiles: 2,
                error_message: "x".into(),
            }),
        };
        let bytes = response.encode_to_vec();
        assert_eq!(bytes, [0x0a, 5, 0x08, 2, 0x12, 1, b'x']);
        assert_eq!(
            ExportProfilesServiceResponse::decode(bytes.as_slice()).ok(),
            Some(response)
        );
    }
}
