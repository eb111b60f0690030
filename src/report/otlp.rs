//! Reading OTLP profiles (`ProfilesData`, binary protobuf, as `record --format otlp` and the
//! daemon's `--output-dir` write them) back into a [`Profile`]: the inverse of
//! `crate::encode::otlp`. Every resource's profiles are read; its `process.pid` and
//! `process.executable.path` name the process, `thread.name`/`thread.id` sample attributes the
//! thread, and the `profile.frame.type` location attribute the kind of frame.

use std::sync::Arc;

use prost::Message;

use super::{kind_of, location_frames};
use crate::profile::{Frame, FrameKind, Module, Profile, StackSample};
use crate::proto::otlp::{self as proto, any_value::Value};

/// Whether `bytes` decode as a `ProfilesData` with a dictionary and some resources.
pub fn looks_otlp(bytes: &[u8]) -> bool {
    proto::ProfilesData::decode(bytes)
        .is_ok_and(|d| d.dictionary.is_some() && !d.resource_profiles.is_empty())
}

pub fn parse(bytes: &[u8]) -> Result<Profile, String> {
    let data = proto::ProfilesData::decode(bytes)
        .map_err(|e| format!("not a valid OTLP ProfilesData message: {e}"))?;
    let dictionary = data.dictionary.unwrap_or_default();
    let reader = Reader::new(&dictionary)?;
    let mut profile = Profile::default();
    let (mut start, mut end) = (u64::MAX, 0u64);
    for resource in &data.resource_profiles {
        let attributes = resource
            .resource
            .as_ref()
            .map_or(&[][..], |r| &r.attributes);
        let pid = attributes
            .iter()
            .find(|kv| kv.key == "process.pid")
            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                Value::IntValue(pid) => u32::try_from(*pid).ok(),
                _ => None,
            })
            .unwrap_or(0);
        let executable = attributes
            .iter()
            .find(|kv| kv.key == "process.executable.path")
            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                Value::StringValue(path) => Some(path.clone()),
                _ => None,
            });
        if let Some(path) = executable {
            profile.executables.insert(pid, path);
        }
        for p in resource.scope_profiles.iter().flat_map(|s| &s.profiles) {
            start = start.min(p.time_unix_nano);
            end = end.max(p.time_unix_nano.saturating_add(p.duration_nano));
            profile.period_ns = u64::try_from(p.period).unwrap_or(0);
            for sample in &p.samples {
                profile.samples.push(reader.sample(pid, sample)?);
            }
        }
    }
    if start <= end {
        profile.start_unix_ns = start;
        profile.duration_ns = end - start;
    }
    Ok(profile)
}

/// The dictionary, checked once, and its locations turned into frames.
struct Reader<'a> {
    dictionary: &'a proto::ProfilesDictionary,
    locations: Vec<Vec<Frame>>,
}

/// `table[index]`, or an error naming the table.
fn entry<'t, T>(table: &'t [T], index: i32, what: &str) -> Result<&'t T, String> {
    usize::try_from(index)
        .ok()
        .and_then(|i| table.get(i))
        .ok_or_else(|| format!("{what} index {index} is outside the dictionary"))
}

impl<'a> Reader<'a> {
    fn new(dictionary: &'a proto::ProfilesDictionary) -> Result<Self, String> {
        let mut reader = Reader {
            dictionary,
            locations: Vec::with_capacity(dictionary.location_table.len()),
        };
        let modules = dictionary
            .mapping_table
            .iter()
            .map(|m| reader.module(m))
            .collect::<Result<Vec<_>, String>>()?;
        for location in &dictionary.location_table {
            let frames = reader.frames(location, &modules)?;
            reader.locations.push(frames);
        }
        Ok(reader)
    }

    fn string(&self, index: i32) -> Result<&'a str, String> {
        entry(&self.dictionary.string_table, index, "string").map(String::as_str)
    }

    /// The string value of attribute `index` if its key is `key`.
    fn attribute(&self, index: i32, key: &str) -> Result<Option<&'a Value>, String> {
        let kv = entry(&self.dictionary.attribute_table, index, "attribute")?;
        Ok((self.string(kv.key_strindex)? == key)
            .then(|| kv.value.as_ref().and_then(|v| v.value.as_ref()))
            .flatten())
    }

    fn module(&self, mapping: &proto::Mapping) -> Result<Option<Arc<Module>>, String> {
        let path = self.string(mapping.filename_strindex)?;
        let mut build_id = None;
        for &index in &mapping.attribute_indices {
            if let Some(Value::StringValue(id)) =
                self.attribute(index, "process.executable.build_id.gnu")?
            {
                build_id = Some(id.clone());
            }
        }
        Ok((!path.is_empty()).then(|| {
            Arc::new(Module {
                path: path.to_owned(),
                build_id,
            })
        }))
    }

    fn frames(
        &self,
        location: &proto::Location,
        modules: &[Option<Arc<Module>>],
    ) -> Result<Vec<Frame>, String> {
        let module = match location.mapping_index {
            0 => None,
            index => entry(modules, index, "mapping")?.clone(),
        };
        let mut kind = kind_of(module.as_ref().map_or("", |m| m.path.as_str()));
        for &index in &location.attribute_indices {
            if let Some(Value::StringValue(t)) = self.attribute(index, "profile.frame.type")? {
                kind = match t.as_str() {
                    "kernel" => FrameKind::Kernel,
                    "cpython" | "python" => FrameKind::Python,
                    _ => FrameKind::Native,
                };
            }
        }
        let names = location
            .lines
            .iter()
            .map(|line| {
                let function = entry(
                    &self.dictionary.function_table,
                    line.function_index,
                    "function",
                )?;
                self.string(function.name_strindex)
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(location_frames(kind, module, location.address, names))
    }

    fn sample(&self, pid: u32, sample: &proto::Sample) -> Result<StackSample, String> {
        let stack = entry(&self.dictionary.stack_table, sample.stack_index, "stack")?;
        let mut frames = Vec::with_capacity(stack.location_indices.len());
        for &index in &stack.location_indices {
            frames.extend(entry(&self.locations, index, "location")?.iter().cloned());
        }
        let (mut thread_name, mut tid) = (String::new(), 0);
        for &index in &sample.attribute_indices {
            match self.attribute(index, "thread.name")? {
                Some(Value::StringValue(name)) => thread_name = name.clone(),
                _ => {
                    if let Some(Value::IntValue(id)) = self.attribute(index, "thread.id")? {
                        tid = u32::try_from(*id).unwrap_or(0);
                    }
                }
            }
        }
        let count = match sample.values.first() {
            Some(&value) => u64::try_from(value).unwrap_or(0),
            None => sample.timestamps_unix_nano.len() as u64,
        };
        Ok(StackSample {
            pid,
            tid,
            thread_name,
            frames,
            count,
        })
    }
}
