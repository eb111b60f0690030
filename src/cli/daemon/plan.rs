//! The daemon's settings: its flags and the `OTEL_*` environment checked and combined into a
//! [`Plan`], before anything is loaded. A flag overrides the environment; the extra headers
//! (environment, then `--header-file`, then `--header`) are checked once, whatever the other
//! flags say, and never shown in a message.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::DaemonArgs;
use crate::cli::Fatal;
use crate::encode::SERVICE_NAME;
use crate::exporter::headers::{self, Headers};
use crate::exporter::otel_env::OtelEnv;
use crate::exporter::{validate_headers, TransportConfig};
use crate::output_file::write_atomically;
use crate::process::filter::ProcessFilter;
use crate::sampler::Target;
use crate::sys::process;

/// The collector when neither a flag nor the environment names one.
pub const DEFAULT_ENDPOINT: &str = "http://localhost:4318";

/// Validated settings.
pub struct Plan {
    pub target: Target,
    pub frequency_hz: u64,
    pub interval: Duration,
    pub transport: Option<TransportConfig>,
    /// Where the headers came from, for a reload: the environment's, the file, the flags'.
    pub env_headers: Headers,
    pub header_file: Option<PathBuf>,
    pub flag_headers: Headers,
    pub output_dir: Option<PathBuf>,
    pub max_dir_bytes: u64,
    pub service_name: String,
    pub resource_attributes: Vec<(String, String)>,
    pub stats_json: Option<PathBuf>,
    pub metrics: Option<SocketAddr>,
    pub filter: ProcessFilter,
}

impl Plan {
    /// The headers to send: every source combined (the file read again), checked.
    pub fn headers(&self) -> Result<Headers, String> {
        let file = match &self.header_file {
            Some(path) => headers::read_file(path)?,
            None => Vec::new(),
        };
        let merged = headers::merge([self.env_headers.clone(), file, self.flag_headers.clone()]);
        validate_headers(&merged)?;
        Ok(merged)
    }
}

pub fn plan(args: DaemonArgs, env: OtelEnv) -> Result<Plan, Fatal> {
    crate::cli::record::check_frequency(args.frequency)?;
    if args.interval == 0 || args.interval > 3600 {
        return Err(Fatal::usage(format!(
            "invalid interval {} s: must be between 1 and 3600",
            args.interval
        )));
    }
    if args.max_dir_size == 0 {
        return Err(Fatal::usage("--max-dir-size must be at least 1 (MiB)"));
    }
    if args.queue == 0 {
        return Err(Fatal::usage("--queue must be at least 1"));
    }
    for &pid in &args.pid {
        if pid == 0 || !process::exists(pid) {
            return Err(Fatal::usage(format!("no process with PID {pid}")));
        }
    }
    let flag_headers = args
        .header
        .iter()
        .enumerate()
        .map(|(i, header)| headers::parse_argument(header, i + 1))
        .collect::<Result<Headers, String>>()
        .map_err(Fatal::usage)?;
    let mut plan = Plan {
        target: if args.pid.is_empty() {
            Target::System
        } else {
            Target::Pids(args.pid)
        },
        frequency_hz: args.frequency,
        interval: Duration::from_secs(args.interval),
        transport: None,
        env_headers: env.headers.clone(),
        header_file: args.header_file,
        flag_headers,
        output_dir: args.output_dir,
        max_dir_bytes: args.max_dir_size.saturating_mul(1 << 20),
        service_name: args
            .service_name
            .or(env.service_name)
            .unwrap_or_else(|| SERVICE_NAME.to_owned()),
        resource_attributes: env.resource_attributes,
        stats_json: args.stats_json,
        metrics: args
            .metrics
            .as_deref()
            .map(crate::metrics::parse_addr)
            .transpose()
            .map_err(Fatal::usage)?,
        filter: ProcessFilter {
            comms: args.comm,
            cgroups: args
                .cgroup
                .iter()
                .map(|path| ProcessFilter::check_cgroup(path))
                .collect::<Result<_, _>>()
                .map_err(Fatal::usage)?,
        },
    };
    // One check of the headers, with or without a collector to send them to.
    let headers = plan
        .headers()
        .map_err(|e| Fatal::usage(format!("invalid header: {e}")))?;
    if !args.no_endpoint {
        let (endpoint, exact_url, source) = match (args.endpoint, env.endpoint) {
            (Some(url), _) => (url, false, "--endpoint"),
            (None, Some((url, exact))) => (url, exact, "the OTEL_EXPORTER_OTLP_ endpoint"),
            (None, None) => (DEFAULT_ENDPOINT.to_owned(), false, "--endpoint"),
        };
        let mut config = TransportConfig::new(endpoint);
        config.exact_url = exact_url;
        config.gzip = args.gzip || env.gzip == Some(true);
        config.queue_capacity = args.queue;
        config.headers = headers;
        if let Some(timeout) = env.timeout {
            config.request_timeout = timeout;
        }
        config
            .validate()
            .map_err(|e| Fatal::usage(format!("invalid {source}: {e}")))?;
        plan.transport = Some(config);
    }
    if plan.transport.is_none() && plan.output_dir.is_none() {
        return Err(Fatal::usage(
            "--no-endpoint needs --output-dir: profiles would go nowhere",
        ));
    }
    if let Some(dir) = &plan.output_dir {
        check_writable_dir(dir)?;
    }
    if let Some(path) = &plan.stats_json {
        write_atomically(path, b"{}\n")
            .map_err(|e| Fatal::usage(format!("cannot write {}: {e}", path.display())))?;
    }
    Ok(plan)
}

/// Creates `dir` if needed and checks that files can be written in it.
pub fn check_writable_dir(dir: &Path) -> Result<(), Fatal> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Fatal::usage(format!("cannot create {}: {e}", dir.display())))?;
    let probe = dir.join(format!(".profiler-probe-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .map_err(|e| Fatal::usage(format!("cannot write in {}: {e}", dir.display())))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::exit;
    use argh::FromArgs;

    fn args(list: &[&str]) -> DaemonArgs {
        DaemonArgs::from_args(&["daemon"], list).unwrap()
    }

    fn env(vars: &[(&str, &str)]) -> OtelEnv {
        OtelEnv::read(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
        .unwrap()
    }

    #[test]
    fn defaults_and_validation() {
        let p = plan(args(&[]), OtelEnv::default()).unwrap();
        assert_eq!((p.frequency_hz, p.interval), (19, Duration::from_secs(10)));
        assert_eq!(p.service_name, "profiler");
        assert_eq!(
            p.transport.unwrap().url(),
            "http://localhost:4318/v1development/profiles"
        );
        for bad in [
            &["-F", "0"][..],
            &["--interval", "0"],
            &["--endpoint", "ftp://x"],
            &["--header", "novalue"],
            &["--no-endpoint"],
            &["--queue", "0"],
            &["-p", "99999999"],
            &["--metrics", "nowhere"],
            &["--cgroup", "relative/path"],
            &["--header-file", "/nonexistent/headers"],
        ] {
            let err = plan(args(bad), OtelEnv::default()).err().unwrap();
            assert_eq!(err.code, exit::USAGE, "{bad:?}: {}", err.message);
        }
    }

    #[test]
    fn flags_override_the_environment() {
        let vars = [
            ("OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT", "http://env:4318/p"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "authorization=env,x-env=1"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "1500"),
            ("OTEL_SERVICE_NAME", "from-env"),
            ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test"),
        ];
        let p = plan(args(&[]), env(&vars)).unwrap();
        let t = p.transport.as_ref().unwrap();
        assert_eq!(
            t.url(),
            "http://env:4318/p",
            "a profiles endpoint is used as it is"
        );
        assert!(t.gzip);
        assert_eq!(t.request_timeout, Duration::from_millis(1500));
        assert_eq!(p.service_name, "from-env");
        assert_eq!(
            p.resource_attributes,
            [("deployment.environment".to_owned(), "test".to_owned())]
        );
        let flags = [
            "--endpoint",
            "http://flag:4318",
            "--header",
            "Authorization=flag",
            "--service-name",
            "from-flag",
        ];
        let p = plan(args(&flags), env(&vars)).unwrap();
        let t = p.transport.unwrap();
        assert_eq!(t.url(), "http://flag:4318/v1development/profiles");
        assert_eq!(
            t.headers,
            [
                ("x-env".to_owned(), "1".to_owned()),
                ("Authorization".to_owned(), "flag".to_owned())
            ]
        );
        assert_eq!(p.service_name, "from-flag");
    }

    #[test]
    fn headers_are_checked_even_without_a_collector() {
        let dir = std::env::temp_dir().join(format!("profiler-plan-{}", std::process::id()));
        let dir_arg = dir.to_str().unwrap();
        let reserved = [
            "--no-endpoint",
            "--output-dir",
            dir_arg,
            "--header",
            "Content-Type=x",
        ];
        let err = plan(args(&reserved), OtelEnv::default()).err().unwrap();
        assert!(
            err.message.contains("cannot be overridden"),
            "{}",
            err.message
        );
        let vars = [("OTEL_EXPORTER_OTLP_HEADERS", "host=s3cret")];
        let err = plan(args(&reserved[..3]), env(&vars)).err().unwrap();
        assert!(
            err.message.contains("\"host\"") && !err.message.contains("s3cret"),
            "{}",
            err.message
        );
        let bad_value = ["--header", "X-Token=s3cret\u{7f}"];
        let err = plan(args(&bad_value), OtelEnv::default()).err().unwrap();
        assert!(!err.message.contains("s3cret"), "{}", err.message);
        let _ = std::fs::remove_dir_all(dir);
    }
}
