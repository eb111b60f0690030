//! The OpenTelemetry SDK's environment variables, as every OTel component reads them:
//! `OTEL_EXPORTER_OTLP_[PROFILES_]ENDPOINT`, `_HEADERS`, `_COMPRESSION`, `_TIMEOUT`,
//! `_PROTOCOL`, and `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`.
//!
//! This module only reads and checks them into [`OtelEnv`]; the daemon decides what a flag
//! overrides. The signal-specific `OTEL_EXPORTER_OTLP_PROFILES_*` variable wins over the
//! generic one (a profiles endpoint is used as it is, a generic one gets the profiles path
//! appended; profiles headers replace the generic headers, they are not merged). Lists are
//! comma-separated `key=value` pairs whose keys and values are percent-decoded and trimmed.
//! Header values never appear in an error message.

use std::time::Duration;

/// What the environment asks for; `None` / empty where it says nothing.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct OtelEnv {
    /// The endpoint, and whether it is the full URL (`…_PROFILES_ENDPOINT`) rather than a base
    /// URL to append the profiles path to.
    pub endpoint: Option<(String, bool)>,
    pub headers: Vec<(String, String)>,
    pub gzip: Option<bool>,
    pub timeout: Option<Duration>,
    pub service_name: Option<String>,
    /// `OTEL_RESOURCE_ATTRIBUTES`, without `service.name` (which is in `service_name` unless
    /// `OTEL_SERVICE_NAME` is set).
    pub resource_attributes: Vec<(String, String)>,
}

impl std::fmt::Debug for OtelEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("OtelEnv")
            .field("endpoint", &self.endpoint)
            .field("header_names", &names)
            .field("gzip", &self.gzip)
            .field("timeout", &self.timeout)
            .field("service_name", &self.service_name)
            .field("resource_attributes", &self.resource_attributes)
            .finish()
    }
}

const PREFIX: &str = "OTEL_EXPORTER_OTLP_";

impl OtelEnv {
    /// Reads the process's environment.
    pub fn from_process() -> Result<OtelEnv, String> {
        Self::read(|name| std::env::var(name).ok())
    }

    /// Reads the variables through `var` (the environment, or a test's map). Empty variables
    /// count as unset.
    pub fn read(var: impl Fn(&str) -> Option<String>) -> Result<OtelEnv, String> {
        let var = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        // The profiles variable if set, else the generic one: (name, value).
        let pick = |setting: &str| {
            let specific = format!("{PREFIX}PROFILES_{setting}");
            let generic = format!("{PREFIX}{setting}");
            var(&specific)
                .map(|v| (specific, v, true))
                .or_else(|| var(&generic).map(|v| (generic, v, false)))
        };
        let mut env = OtelEnv::default();
        if let Some((_, url, exact)) = pick("ENDPOINT") {
            env.endpoint = Some((url.trim().to_owned(), exact));
        }
        if let Some((name, value, _)) = pick("HEADERS") {
            env.headers = parse_list(&name, &value, true)?;
        }
        if let Some((name, value, _)) = pick("COMPRESSION") {
            env.gzip = Some(match value.trim() {
                "gzip" => true,
                "none" => false,
                other => return Err(format!("{name}={other:?}: expected gzip or none")),
            });
        }
        if let Some((name, value, _)) = pick("TIMEOUT") {
            let ms: u64 = value
                .trim()
                .parse()
                .ok()
                .filter(|&ms| ms > 0)
                .ok_or_else(|| format!("{name}={value:?}: expected milliseconds, above 0"))?;
            env.timeout = Some(Duration::from_millis(ms));
        }
        if let Some((name, value, _)) = pick("PROTOCOL") {
            if value.trim() != "http/protobuf" {
                return Err(format!(
                    "{name}={value:?}: this profiler speaks only http/protobuf (OTLP/HTTP)"
                ));
            }
        }
        if let Some(attributes) = var("OTEL_RESOURCE_ATTRIBUTES") {
            for (key, value) in parse_list("OTEL_RESOURCE_ATTRIBUTES", &attributes, false)? {
                if key == "service.name" {
                    env.service_name = Some(value);
                } else {
                    env.resource_attributes.push((key, value));
                }
            }
        }
        if let Some(name) = var("OTEL_SERVICE_NAME") {
            env.service_name = Some(name.trim().to_owned());
        }
        Ok(env)
    }
}

/// Parses `k1=v1,k2=v2` (W3C Baggage style, percent-encoded). With `secret`, errors never quote
/// a value.
fn parse_list(var: &str, text: &str, secret: bool) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    for (i, item) in text.split(',').enumerate() {
        if item.trim().is_empty() {
            continue;
        }
        let entry = i + 1;
        let Some((key, value)) = item.split_once('=') else {
            return Err(format!("{var}: entry {entry} is not key=value"));
        };
        let key = percent_decode(key.trim())
            .filter(|k| !k.is_empty())
            .ok_or_else(|| format!("{var}: entry {entry} has an empty or badly encoded key"))?;
        let value = percent_decode(value.trim()).ok_or_else(|| {
            let shown = if secret {
                String::new()
            } else {
                format!(" {value:?}")
            };
            format!("{var}: the value{shown} of {key:?} is not valid percent-encoded UTF-8")
        })?;
        pairs.retain(|(k, _): &(String, String)| *k != key);
        pairs.push((key, value));
    }
    Ok(pairs)
}

/// Decodes `%XX` escapes; `None` on a bad escape or bytes that are not UTF-8.
pub fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn read(vars: &[(&str, &str)]) -> Result<OtelEnv, String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        OtelEnv::read(|name| map.get(name).cloned())
    }

    #[test]
    fn nothing_set_is_all_defaults() {
        assert_eq!(read(&[]).unwrap(), OtelEnv::default());
        assert_eq!(
            read(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]).unwrap(),
            OtelEnv::default()
        );
    }

    #[test]
    fn the_profiles_variables_win_over_the_generic_ones() {
        let env = read(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:4318"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "a=1,b=2"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
        ])
        .unwrap();
        assert_eq!(env.endpoint, Some(("http://generic:4318".into(), false)));
        assert_eq!(
            env.headers,
            [("a".into(), "1".into()), ("b".into(), "2".into())]
        );
        assert_eq!(env.gzip, Some(true));
        assert_eq!(env.timeout, Some(Duration::from_millis(2500)));
        let env = read(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:4318"),
            (
                "OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT",
                "http://p:4318/custom",
            ),
            ("OTEL_EXPORTER_OTLP_HEADERS", "a=1"),
            ("OTEL_EXPORTER_OTLP_PROFILES_HEADERS", "c=3"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            ("OTEL_EXPORTER_OTLP_PROFILES_COMPRESSION", "none"),
        ])
        .unwrap();
        assert_eq!(env.endpoint, Some(("http://p:4318/custom".into(), true)));
        assert_eq!(
            env.headers,
            [("c".into(), "3".into())],
            "replaced, not merged"
        );
        assert_eq!(env.gzip, Some(false));
    }

    #[test]
    fn lists_are_percent_decoded_and_trimmed() {
        let env = read(&[
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                " Authorization = Bearer%20abc%3D%3D , x-tenant=t%2C1,,",
            ),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=test,service.name=from-attrs,k=%C3%A9",
            ),
        ])
        .unwrap();
        assert_eq!(
            env.headers,
            [
                ("Authorization".into(), "Bearer abc==".into()),
                ("x-tenant".into(), "t,1".into())
            ]
        );
        assert_eq!(env.service_name.as_deref(), Some("from-attrs"));
        assert_eq!(
            env.resource_attributes,
            [
                ("deployment.environment".into(), "test".into()),
                ("k".into(), "é".into())
            ]
        );
        let env = read(&[
            ("OTEL_RESOURCE_ATTRIBUTES", "service.name=a"),
            ("OTEL_SERVICE_NAME", "b"),
        ])
        .unwrap();
        assert_eq!(
            env.service_name.as_deref(),
            Some("b"),
            "OTEL_SERVICE_NAME wins"
        );
    }

    #[test]
    fn bad_values_name_the_variable_and_never_a_header_value() {
        let cases = [
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "authorization=s3cret%ZZ",
                "not valid percent",
            ),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "justs3cret",
                "entry 1 is not key=value",
            ),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "=s3cret",
                "empty or badly encoded key",
            ),
            (
                "OTEL_EXPORTER_OTLP_COMPRESSION",
                "zstd",
                "expected gzip or none",
            ),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s", "expected milliseconds"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc", "only http/protobuf"),
            ("OTEL_RESOURCE_ATTRIBUTES", "a=%FF", "\"%FF\""),
        ];
        for (name, value, expected) in cases {
            let error = read(&[(name, value)]).expect_err(value);
            assert!(error.starts_with(name), "{error}");
            assert!(error.contains(expected), "{error}");
            assert!(!error.contains("s3cret"), "{error}");
        }
        assert!(read(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")]).is_ok());
    }
}
