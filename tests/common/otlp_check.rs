//! The dictionary rules of OTLP `profiles.proto`, checked on a decoded message. The tests check
//! our encoder's output, and what a receiver got, against them.
//!
//! This module owns [`check_dictionary`] and nothing else: it reads messages, it never builds
//! them. It lives with the tests, not in the library, which has no use for it.

use std::collections::{HashMap, HashSet};

use prost::Message;

use profiler::proto::otlp::{self as proto, any_value::Value};

/// Checks the dictionary rules of `profiles.proto` on a decoded message: every table present
/// with its zero value at index 0, no duplicate entries, every index in range, every entry past
/// index 0 referenced, every function named somehow, attribute keys unique within a list,
/// every sample with values or timestamps (as many if both). Also, stricter than the spec but
/// true of everything we send: stacks, lines and attribute lists never point at entry 0.
///
/// Returns every violation found (up to a limit), one per line.
pub fn check_dictionary(data: &proto::ProfilesData) -> Result<(), String> {
    check(&data.resource_profiles, data.dictionary.as_ref())
}

/// [`check_dictionary`] on a request (same fields, same rules).
pub fn check_request(request: &proto::ExportProfilesServiceRequest) -> Result<(), String> {
    check(&request.resource_profiles, request.dictionary.as_ref())
}

fn check(
    resource_profiles: &[proto::ResourceProfiles],
    dictionary: Option<&proto::ProfilesDictionary>,
) -> Result<(), String> {
    let Some(dictionary) = dictionary else {
        return Err("no dictionary".to_owned());
    };
    let mut checker = Checker::new(dictionary);
    checker.tables();
    for (r, resource) in resource_profiles.iter().enumerate() {
        for (s, scope) in resource.scope_profiles.iter().enumerate() {
            for (p, profile) in scope.profiles.iter().enumerate() {
                checker.profile(&format!("resource[{r}].scope[{s}].profile[{p}]"), profile);
            }
        }
    }
    checker.unreferenced();
    if checker.errors.is_empty() {
        return Ok(());
    }
    Err(checker.errors.join("\n"))
}

/// The length of each of the dictionary's tables, in [`TableId`] order.
pub fn table_lens(d: &proto::ProfilesDictionary) -> [usize; 7] {
    [
        d.string_table.len(),
        d.mapping_table.len(),
        d.location_table.len(),
        d.function_table.len(),
        d.link_table.len(),
        d.attribute_table.len(),
        d.stack_table.len(),
    ]
}

/// The dictionary's tables, as indices into [`Checker::used`].
#[derive(Clone, Copy, Debug)]
enum TableId {
    String,
    Mapping,
    Location,
    Function,
    Link,
    Attribute,
    Stack,
}

const TABLE_IDS: [TableId; 7] = [
    TableId::String,
    TableId::Mapping,
    TableId::Location,
    TableId::Function,
    TableId::Link,
    TableId::Attribute,
    TableId::Stack,
];

/// Reports past this many are dropped: one bad index tends to repeat thousands of times.
const MAX_ERRORS: usize = 50;

struct Checker<'d> {
    dictionary: &'d proto::ProfilesDictionary,
    /// Per table (by `TableId as usize`), whether each entry is referenced.
    used: [Vec<bool>; 7],
    errors: Vec<String>,
}

impl<'d> Checker<'d> {
    fn new(dictionary: &'d proto::ProfilesDictionary) -> Self {
        Checker {
            dictionary,
            used: table_lens(dictionary).map(|len| vec![false; len]),
            errors: Vec::new(),
        }
    }

    fn error(&mut self, message: String) {
        if self.errors.len() < MAX_ERRORS {
            self.errors.push(message);
        }
    }

    /// Marks `table[index]` referenced by `from`; `allow_zero` when 0 means "none" there.
    fn reference(
        &mut self,
        table: TableId,
        index: i32,
        allow_zero: bool,
        from: &dyn Fn() -> String,
    ) {
        let used = &mut self.used[table as usize];
        let len = used.len();
        let Some(flag) = usize::try_from(index).ok().and_then(|i| used.get_mut(i)) else {
            let message = format!("{table:?} index {index} out of range (table has {len})");
            return self.error(format!("{}: {message}", from()));
        };
        if index == 0 && !allow_zero {
            return self.error(format!("{}: {table:?} index 0 (the zero entry)", from()));
        }
        *flag = true;
    }

    /// `attribute_indices` of one message: in range, non-zero, keys unique.
    fn attributes(&mut self, indices: &[i32], from: &dyn Fn() -> String) {
        let mut keys = HashSet::new();
        for &index in indices {
            self.reference(TableId::Attribute, index, false, from);
            let attribute = usize::try_from(index)
                .ok()
                .and_then(|i| self.dictionary.attribute_table.get(i));
            if let Some(attribute) = attribute {
                if !keys.insert(attribute.key_strindex) {
                    self.error(format!("{}: attribute key repeated", from()));
                }
            }
        }
    }

    fn tables(&mut self) {
        let d = self.dictionary;
        self.zero_and_unique(
            "string_table",
            &d.string_table,
            |s| s.is_empty(),
            |s| s.as_bytes().to_vec(),
        );
        self.zero_and_unique("mapping_table", &d.mapping_table, is_default, encoded);
        self.zero_and_unique("location_table", &d.location_table, is_default, encoded);
        self.zero_and_unique("function_table", &d.function_table, is_default, encoded);
        self.zero_and_unique("link_table", &d.link_table, is_zero_link, encoded);
        self.zero_and_unique("attribute_table", &d.attribute_table, is_default, encoded);
        self.zero_and_unique("stack_table", &d.stack_table, is_default, encoded);

        for (i, m) in d.mapping_table.iter().enumerate() {
            let from = || format!("mapping_table[{i}]");
            self.reference(TableId::String, m.filename_strindex, true, &from);
            self.attributes(&m.attribute_indices, &from);
        }
        for (i, l) in d.location_table.iter().enumerate() {
            let from = || format!("location_table[{i}]");
            self.reference(TableId::Mapping, l.mapping_index, true, &from);
            for line in &l.lines {
                self.reference(TableId::Function, line.function_index, false, &from);
            }
            self.attributes(&l.attribute_indices, &from);
        }
        for (i, f) in d.function_table.iter().enumerate() {
            let from = || format!("function_table[{i}]");
            let named = f.name_strindex != 0 || f.system_name_strindex != 0;
            if i != 0 && !named && f.filename_strindex == 0 {
                self.error(format!("{}: no name, system name or file name", from()));
            }
            for index in [f.name_strindex, f.system_name_strindex, f.filename_strindex] {
                self.reference(TableId::String, index, true, &from);
            }
        }
        for (i, a) in d.attribute_table.iter().enumerate() {
            let from = || format!("attribute_table[{i}]");
            self.reference(TableId::String, a.key_strindex, true, &from);
            self.reference(TableId::String, a.unit_strindex, true, &from);
            if let Some(value) = &a.value {
                self.any_value(value, &from);
            }
        }
        for (i, s) in d.stack_table.iter().enumerate() {
            let from = || format!("stack_table[{i}]");
            for &index in &s.location_indices {
                self.reference(TableId::Location, index, false, &from);
            }
        }
    }

    /// String indices inside an attribute value, however deeply nested.
    fn any_value(&mut self, value: &proto::AnyValue, from: &dyn Fn() -> String) {
        match &value.value {
            Some(Value::StringValueStrindex(index)) => {
                self.reference(TableId::String, *index, true, from)
            }
            Some(Value::ArrayValue(array)) => {
                for value in &array.values {
                    self.any_value(value, from);
                }
            }
            Some(Value::KvlistValue(list)) => {
                for kv in &list.values {
                    self.reference(TableId::String, kv.key_strindex, true, from);
                    if let Some(value) = &kv.value {
                        self.any_value(value, from);
                    }
                }
            }
            _ => {}
        }
    }

    fn profile(&mut self, at: &str, profile: &proto::Profile) {
        let from = || at.to_owned();
        for value_type in [&profile.sample_type, &profile.period_type]
            .into_iter()
            .flatten()
        {
            self.reference(TableId::String, value_type.type_strindex, true, &from);
            self.reference(TableId::String, value_type.unit_strindex, true, &from);
        }
        self.attributes(&profile.attribute_indices, &from);
        for (i, sample) in profile.samples.iter().enumerate() {
            let from = || format!("{at}.samples[{i}]");
            self.reference(TableId::Stack, sample.stack_index, true, &from);
            self.reference(TableId::Link, sample.link_index, true, &from);
            self.attributes(&sample.attribute_indices, &from);
            let (values, timestamps) = (sample.values.len(), sample.timestamps_unix_nano.len());
            if values == 0 && timestamps == 0 {
                self.error(format!("{}: no values and no timestamps", from()));
            } else if values != 0 && timestamps != 0 && values != timestamps {
                self.error(format!(
                    "{}: {values} values but {timestamps} timestamps",
                    from()
                ));
            }
        }
    }

    /// `table[0]` present and zero, and no two entries equal (compared by their encoding).
    fn zero_and_unique<T>(
        &mut self,
        name: &str,
        table: &[T],
        is_zero: impl Fn(&T) -> bool,
        identity: impl Fn(&T) -> Vec<u8>,
    ) {
        if !table.first().is_some_and(&is_zero) {
            self.error(format!("{name}[0] must be present and the zero value"));
        }
        let mut seen = HashMap::new();
        for (i, entry) in table.iter().enumerate() {
            if let Some(first) = seen.insert(identity(entry), i) {
                self.error(format!("{name}[{i}] duplicates {name}[{first}]"));
            }
        }
    }

    fn unreferenced(&mut self) {
        for table in TABLE_IDS {
            let unused: Vec<usize> = self.used[table as usize]
                .iter()
                .enumerate()
                .skip(1)
                .filter_map(|(i, &used)| (!used).then_some(i))
                .collect();
            if !unused.is_empty() {
                self.error(format!("{table:?} entries never referenced: {unused:?}"));
            }
        }
    }
}

fn is_default<M: Message + Default + PartialEq>(message: &M) -> bool {
    *message == M::default()
}

fn encoded<M: Message>(message: &M) -> Vec<u8> {
    message.encode_to_vec()
}

/// Either zero link the spec allows: empty IDs, or all-zero 16- and 8-byte IDs.
fn is_zero_link(link: &proto::Link) -> bool {
    let zero =
        |id: &[u8], len: usize| id.is_empty() || (id.len() == len && id.iter().all(|&b| b == 0));
    zero(&link.trace_id, 16) && zero(&link.span_id, 8)
}
