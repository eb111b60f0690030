//! The OTLP/HTTP transport's configuration: [`TransportConfig`], the URL it posts to
//! ([`profiles_url`], [`PROFILES_PATH`]) and [`TransportConfig::validate`], which catches a bad
//! endpoint, header or limit before the export thread starts. It does no I/O; sending is
//! [`super`] (the exporter thread).

use std::time::Duration;

/// The OTLP/HTTP path of the profiles signal (`profiles_service_http.yaml`).
pub const PROFILES_PATH: &str = "/v1development/profiles";

/// Headers the transport sets itself, which `--header` must not override.
const RESERVED_HEADERS: [&str; 5] = [
    "content-type",
    "content-encoding",
    "content-length",
    "transfer-encoding",
    "host",
];

/// Where and how to send windows. Its `Debug` form leaves out the header values.
#[derive(Clone)]
pub struct TransportConfig {
    /// The collector's base URL (`http://localhost:4318`); [`PROFILES_PATH`] is appended unless
    /// the URL already ends with it, or `exact_url` is set.
    pub endpoint: String,
    /// `endpoint` is the whole URL to post to (`OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT`).
    pub exact_url: bool,
    /// Extra request headers (authentication), sent as given.
    pub headers: Vec<(String, String)>,
    /// Gzip request bodies (`Content-Encoding: gzip`).
    pub gzip: bool,
    /// Windows kept while the collector is slow or down, including the one being retried.
    pub queue_capacity: usize,
    /// The longest one request may take, from DNS lookup to the end of the response.
    pub request_timeout: Duration,
    /// The wait before the first retry; it doubles with each further retry.
    pub initial_backoff: Duration,
    /// The longest wait between retries, also the cap on a collector's `Retry-After`.
    pub max_backoff: Duration,
}

impl TransportConfig {
    /// The defaults for `endpoint`: no extra headers, no gzip, 16 windows, 10 s per request,
    /// backoff from 1 s up to 30 s.
    pub fn new(endpoint: impl Into<String>) -> Self {
        TransportConfig {
            endpoint: endpoint.into(),
            exact_url: false,
            headers: Vec::new(),
            gzip: false,
            queue_capacity: 16,
            request_timeout: Duration::from_secs(10),
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
        }
    }

    /// The URL requests are posted to.
    pub fn url(&self) -> String {
        if self.exact_url {
            self.endpoint.trim().to_owned()
        } else {
            profiles_url(&self.endpoint)
        }
    }

    /// Checks everything a request could later fail on, with a message the user can act on.
    pub fn validate(&self) -> Result<(), String> {
        validate_endpoint(&self.endpoint)?;
        validate_headers(&self.headers)?;
        let zero = [
            (self.queue_capacity == 0, "the export queue capacity"),
            (self.request_timeout.is_zero(), "the request timeout"),
            (self.initial_backoff.is_zero(), "the initial backoff"),
            (self.max_backoff.is_zero(), "the maximum backoff"),
        ];
        match zero.into_iter().find(|(is_zero, _)| *is_zero) {
            Some((_, what)) => Err(format!("{what} must be greater than zero")),
            None => Ok(()),
        }
    }
}

/// `endpoint` with [`PROFILES_PATH`] appended, unless it already ends with it; trailing slashes
/// are ignored.
pub fn profiles_url(endpoint: &str) -> String {
    let base = endpoint.trim().trim_end_matches('/');
    if base.ends_with(PROFILES_PATH) {
        base.to_string()
    } else {
        format!("{base}{PROFILES_PATH}")
    }
}

fn validate_endpoint(endpoint: &str) -> Result<(), String> {
    let hint = "expected http://HOST:PORT or https://HOST:PORT, e.g. http://localhost:4318";
    let Some((scheme, _)) = endpoint.trim().split_once("://") else {
        return Err(format!("endpoint {endpoint:?} has no scheme: {hint}"));
    };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(format!(
            "endpoint {endpoint:?}: scheme {scheme:?} is not supported: {hint}"
        ));
    }
    let uri: ureq::http::Uri = profiles_url(endpoint)
        .parse()
        .map_err(|error| format!("endpoint {endpoint:?} is not a valid URL ({error}): {hint}"))?;
    match uri.host() {
        Some(host) if !host.is_empty() => Ok(()),
        _ => Err(format!("endpoint {endpoint:?} has no host: {hint}")),
    }
}

impl std::fmt::Debug for TransportConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("TransportConfig")
            .field("url", &self.url())
            .field("header_names", &names)
            .field("gzip", &self.gzip)
            .field("queue_capacity", &self.queue_capacity)
            .field("request_timeout", &self.request_timeout)
            .field("initial_backoff", &self.initial_backoff)
            .field("max_backoff", &self.max_backoff)
            .finish()
    }
}

/// Checks extra headers: valid HTTP names and values, none the exporter sets itself. The
/// errors name the header, never its value.
pub fn validate_headers(headers: &[(String, String)]) -> Result<(), String> {
    headers
        .iter()
        .try_for_each(|(name, value)| validate_header(name, value))
}

fn validate_header(name: &str, value: &str) -> Result<(), String> {
    if ureq::http::HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Err(format!(
            "header name {name:?} is not a valid HTTP header name"
        ));
    }
    if RESERVED_HEADERS
        .iter()
        .any(|r| r.eq_ignore_ascii_case(name))
    {
        return Err(format!(
            "header {name:?} is set by the exporter and cannot be overridden"
        ));
    }
    if ureq::http::HeaderValue::from_str(value).is_err() {
        return Err(format!(
            "the value of header {name:?} has characters HTTP does not allow"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_appends_the_profiles_path_once() {
        let cases = [
            (
                "http://localhost:4318",
                "http://localhost:4318/v1development/profiles",
            ),
            (
                "http://localhost:4318/",
                "http://localhost:4318/v1development/profiles",
            ),
            (
                "https://otel.example:443//",
                "https://otel.example:443/v1development/profiles",
            ),
            ("http://h/prefix", "http://h/prefix/v1development/profiles"),
            (
                "http://h/v1development/profiles",
                "http://h/v1development/profiles",
            ),
            (
                "http://h/v1development/profiles/",
                "http://h/v1development/profiles",
            ),
            (" http://h ", "http://h/v1development/profiles"),
        ];
        for (endpoint, url) in cases {
            assert_eq!(profiles_url(endpoint), url, "{endpoint}");
            assert_eq!(TransportConfig::new(endpoint).url(), url, "{endpoint}");
        }
    }

    #[test]
    fn validation_accepts_http_and_https() {
        for endpoint in [
            "http://localhost:4318",
            "https://collector:4318/",
            "HTTP://[::1]:4318",
        ] {
            assert_eq!(
                TransportConfig::new(endpoint).validate(),
                Ok(()),
                "{endpoint}"
            );
        }
    }

    #[test]
    fn validation_rejects_other_urls_clearly() {
        let cases = [
            ("localhost:4318", "has no scheme"),
            ("grpc://localhost:4317", "scheme \"grpc\" is not supported"),
            ("ftp://host", "is not supported"),
            ("http://", "http://HOST:PORT"),
            ("http://bad host", "not a valid URL"),
            ("", "has no scheme"),
        ];
        for (endpoint, expected) in cases {
            let error = TransportConfig::new(endpoint)
                .validate()
                .expect_err(endpoint);
            assert!(error.contains(expected), "{endpoint}: {error}");
        }
    }

    #[test]
    fn validation_checks_headers_and_sizes() {
        let with_header = |name: &str, value: &str| {
            let mut config = TransportConfig::new("http://h");
            config.headers.push((name.into(), value.into()));
            config.validate()
        };
        assert_eq!(with_header("Authorization", "Bearer abc"), Ok(()));
        assert_eq!(with_header("x-scope-orgid", "tenant-1"), Ok(()));
        assert!(with_header("bad name", "v")
            .unwrap_err()
            .contains("not a valid HTTP header name"));
        assert!(with_header("", "v").is_err());
        assert!(with_header("X-A", "a\r\nb")
            .unwrap_err()
            .contains("characters"));
        assert!(with_header("Content-Type", "text/plain")
            .unwrap_err()
            .contains("set by the exporter"));
        assert!(with_header("content-encoding", "br").is_err());

        let mut config = TransportConfig::new("http://h");
        config
            .headers
            .push(("Authorization".into(), "Bearer s3cret".into()));
        assert!(!format!("{config:?}").contains("s3cret"));
        config.exact_url = true;
        config.endpoint = "http://h/custom ".into();
        assert_eq!(config.url(), "http://h/custom");
        config.queue_capacity = 0;
        assert!(config.validate().unwrap_err().contains("queue capacity"));
        let mut config = TransportConfig::new("http://h");
        config.request_timeout = Duration::ZERO;
        assert!(config.validate().unwrap_err().contains("request timeout"));
    }
}
