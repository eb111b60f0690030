//! Reading pprof profiles (`perftools.profiles.Profile`, already uncompressed) back into a
//! [`Profile`]: the inverse of `crate::encode::pprof`, and tolerant of other producers (any
//! value type; without a `samples` value the first one is used).
//!
//! A location's lines are its frames, innermost first: all but the last were inlined into the
//! last. A location without lines is named from its mapping, as the symbolizer names frames it
//! cannot resolve. Numeric `pid`/`tid` and string `thread` labels give the sample's process and
//! thread.

use std::collections::HashMap;
use std::sync::Arc;

use prost::Message;

use super::{kind_of, location_frames};
use crate::profile::{Frame, Module, Profile, StackSample};
use crate::proto::pprof as proto;

pub fn parse(bytes: &[u8]) -> Result<Profile, String> {
    let message =
        proto::Profile::decode(bytes).map_err(|e| format!("not a valid pprof profile: {e}"))?;
    convert(&message)
}

fn convert(p: &proto::Profile) -> Result<Profile, String> {
    if p.string_table.first().map(String::as_str) != Some("") {
        return Err("not a valid pprof profile: its string table does not start with \"\"".into());
    }
    let string = |index: i64| -> Result<&str, String> {
        usize::try_from(index)
            .ok()
            .and_then(|i| p.string_table.get(i))
            .map(String::as_str)
            .ok_or_else(|| format!("string index {index} is outside the string table"))
    };
    let value_index = p
        .sample_type
        .iter()
        .position(|t| string(t.r#type).is_ok_and(|s| s == "samples"))
        .unwrap_or(0);
    let mut modules: HashMap<u64, Arc<Module>> = HashMap::new();
    for mapping in &p.mapping {
        let build_id = string(mapping.build_id)?;
        modules.insert(
            mapping.id,
            Arc::new(Module {
                path: string(mapping.filename)?.to_owned(),
                build_id: (!build_id.is_empty()).then(|| build_id.to_owned()),
            }),
        );
    }
    let functions: HashMap<u64, &proto::Function> = p.function.iter().map(|f| (f.id, f)).collect();
    let mut locations: HashMap<u64, Vec<Frame>> = HashMap::new();
    for location in &p.location {
        let module = match location.mapping_id {
            0 => None,
            id => Some(
                modules
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| format!("location {} names no mapping {id}", location.id))?,
            ),
        };
        let kind = kind_of(module.as_ref().map_or("", |m| m.path.as_str()));
        let names = location
            .line
            .iter()
            .map(|line| {
                let function = functions.get(&line.function_id).ok_or_else(|| {
                    format!(
                        "location {} names no function {}",
                        location.id, line.function_id
                    )
                })?;
                string(function.name)
            })
            .collect::<Result<Vec<_>, String>>()?;
        let frames = location_frames(kind, module, location.address, names);
        locations.insert(location.id, frames);
    }
    let mut samples = Vec::with_capacity(p.sample.len());
    for sample in &p.sample {
        let count = sample.value.get(value_index).copied().unwrap_or(0);
        let mut stack = StackSample {
            pid: 0,
            tid: 0,
            thread_name: String::new(),
            frames: Vec::with_capacity(sample.location_id.len()),
            count: u64::try_from(count).unwrap_or(0),
        };
        for id in &sample.location_id {
            let frames = locations
                .get(id)
                .ok_or_else(|| format!("a sample names no location {id}"))?;
            stack.frames.extend(frames.iter().cloned());
        }
        for label in &sample.label {
            match string(label.key)? {
                "pid" => stack.pid = u32::try_from(label.num).unwrap_or(0),
                "tid" => stack.tid = u32::try_from(label.num).unwrap_or(0),
                "thread" => stack.thread_name = string(label.str)?.to_owned(),
                _ => {}
            }
        }
        samples.push(stack);
    }
    Ok(Profile {
        start_unix_ns: u64::try_from(p.time_nanos).unwrap_or(0),
        duration_ns: u64::try_from(p.duration_nanos).unwrap_or(0),
        period_ns: u64::try_from(p.period).unwrap_or(0),
        samples,
        ..Profile::default()
    })
}
