//! End-to-end tests of `profiler daemon` against a loopback OTLP/HTTP receiver: what arrives
//! (decoded, checked, symbolized, with its attributes), gzip and extra headers, the retry policy
//! seen from the collector's side (503 then 200, 400, an outage of 30 s), the last window on
//! SIGTERM, the output directory and its size cap, usage errors, and that a `kill -9` leaves
//! nothing of ours in the kernel. Root for all but the usage errors (see
//! `common::bpf_available`). Every wait is bounded; the outage test takes about 45 s.

mod common;
#[path = "common/receiver.rs"]
mod receiver;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prost::Message;

use common::*;
use profiler::encode::otlp;
use profiler::proto::otlp::{
    any_value::Value, AnyValue, ProfilesData, ProfilesDictionary, ResourceProfiles,
};
use profiler::sys::process::send_signal;
use receiver::{Receiver, Reply, Request};

/// How long a daemon may take to load its BPF programs and start sampling (a loaded machine).
const READY: Duration = Duration::from_secs(60);
/// How long a daemon may take to exit after SIGTERM: the 10 s flush deadline plus slack.
const EXIT: Duration = Duration::from_secs(20);
/// The fixture runs at least this long; it is killed when the test ends.
const FIXTURE_SECONDS: &str = "300";
/// `-O2`, as the brief says: no frame pointers, so stacks come from .eh_frame unwinding.
const FIXTURE_FLAGS: &[&str] = &["-O2"];

// ---------------------------------------------------------------------------------------------
// Processes

/// A child killed (and reaped) when dropped, so a failing test leaves nothing running.
struct Guard(Child);

impl Guard {
    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The busy fixture (main -> a -> b -> c), compiled into `dir` and started.
fn busy_fixture(dir: &Path) -> (Guard, PathBuf) {
    let exe = build_fixture(dir, "abc", FIXTURE_FLAGS);
    let child = Command::new(&exe)
        .arg(FIXTURE_SECONDS)
        .stdin(Stdio::null())
        .spawn()
        .expect("start the abc fixture");
    (Guard(child), exe)
}

/// A running `profiler daemon`, its standard error going to a file.
struct Daemon {
    child: Guard,
    log: PathBuf,
}

/// How a daemon ended.
struct Ended {
    code: Option<i32>,
    log: String,
    /// From the signal to the exit.
    took: Duration,
}

impl Daemon {
    /// Starts `profiler daemon ARGS` with info logging, stderr in `dir/daemon-N.log`.
    fn start(dir: &Path, args: &[&str]) -> Daemon {
        let mut n = 0;
        let log = loop {
            let candidate = dir.join(format!("daemon-{n}.log"));
            if !candidate.exists() {
                break candidate;
            }
            n += 1;
        };
        let stderr = std::fs::File::create(&log).expect("create the daemon's log");
        let child = Command::new(PROFILER)
            .arg("daemon")
            .args(args)
            .env("PROFILER_LOG", "info")
            // Loopback only: a proxy from the environment (ureq reads these) must not intercept.
            .env_remove("ALL_PROXY")
            .env_remove("all_proxy")
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start profiler daemon");
        Daemon {
            child: Guard(child),
            log,
        }
    }

    fn pid(&self) -> u32 {
        self.child.pid()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the "profiling ..." line: the programs are attached and sampling has begun.
    fn wait_ready(&mut self) {
        let until = Instant::now() + READY;
        loop {
            let log = self.log();
            if log.contains("info: profiling ") {
                return;
            }
            if let Ok(Some(status)) = self.child.0.try_wait() {
                panic!("the daemon exited before sampling ({status}):\n{log}");
            }
            assert!(Instant::now() < until, "the daemon never started:\n{log}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends `signal` and waits (at most [`EXIT`]) for the daemon to exit.
    fn signal_and_wait(mut self, signal: i32) -> Ended {
        let sent = Instant::now();
        send_signal(self.pid(), signal).expect("signal the daemon");
        loop {
            if let Some(status) = self.child.0.try_wait().expect("wait for the daemon") {
                return Ended {
                    code: status.code(),
                    log: self.log(),
                    took: sent.elapsed(),
                };
            }
            if sent.elapsed() > EXIT {
                let log = self.log();
                let _ = self.child.0.kill();
                panic!("the daemon did not exit within {EXIT:?} of signal {signal}:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then checks it exited 0; returns its log.
    fn terminate(self) -> String {
        let ended = self.signal_and_wait(libc::SIGTERM);
        assert_eq!(ended.code, Some(0), "daemon exit status:\n{}", ended.log);
        assert!(
            !ended.log.contains("panicked"),
            "the daemon panicked:\n{}",
            ended.log
        );
        ended.log
    }
}

fn now_unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_nanos() as u64
}

/// Polls `done` every 50 ms for at most `timeout`; true if it became true.
fn eventually(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------------
// Reading what was sent

fn string(d: &ProfilesDictionary, index: i32) -> &str {
    d.string_table
        .get(index as usize)
        .map(String::as_str)
        .unwrap_or("<bad string index>")
}

/// An attribute value as text (strings as they are, numbers in decimal).
fn value_text(d: &ProfilesDictionary, value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::StringValueStrindex(i)) => string(d, *i).to_owned(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(f)) => f.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

/// Dictionary attributes `indices` as (key, value) text pairs.
fn attributes(d: &ProfilesDictionary, indices: &[i32]) -> Vec<(String, String)> {
    indices
        .iter()
        .map(|&i| {
            let kv = &d.attribute_table[i as usize];
            (
                string(d, kv.key_strindex).to_owned(),
                value_text(d, kv.value.as_ref()),
            )
        })
        .collect()
}

/// A resource's attributes as (key, value) text pairs.
fn resource_attributes(d: &ProfilesDictionary, rp: &ResourceProfiles) -> Vec<(String, String)> {
    rp.resource
        .iter()
        .flat_map(|r| &r.attributes)
        .map(|kv| {
            let key = if kv.key.is_empty() {
                string(d, kv.key_strindex).to_owned()
            } else {
                kv.key.clone()
            };
            (key, value_text(d, kv.value.as_ref()))
        })
        .collect()
}

fn get<'a>(attributes: &'a [(String, String)], key: &str) -> Option<&'a str> {
    attributes
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// One sample of the fixture: its frames' function names leaf first (`?` when unsymbolized),
/// its attributes and its count.
#[derive(Debug)]
struct FixtureSample {
    names: Vec<String>,
    attributes: Vec<(String, String)>,
    count: i64,
}

/// One window as the receiver got it.
#[derive(Debug)]
struct Window {
    /// `time_unix_nano` / `duration_nano` of its profiles (0 when it has none).
    start_ns: u64,
    duration_ns: u64,
    /// The fixture process's resource attributes (empty if it is not in the window).
    resource: Vec<(String, String)>,
    samples: Vec<FixtureSample>,
}

impl Window {
    fn total(&self) -> i64 {
        self.samples.iter().map(|s| s.count).sum()
    }

    /// Samples whose stack holds c, b, a, main in that order (leaf first), consecutively.
    fn symbolized(&self) -> i64 {
        let want = ["c", "b", "a", "main"];
        self.samples
            .iter()
            .filter(|s| s.names.windows(4).any(|w| w == want))
            .map(|s| s.count)
            .sum()
    }
}

/// Decodes `request`, checks it with the project's checker, and extracts the window of `pid`.
fn window(request: &Request, pid: u32) -> Window {
    let decoded = request
        .export_request()
        .unwrap_or_else(|e| panic!("not an ExportProfilesServiceRequest ({e})"));
    if let Err(errors) = otlp::check_request(&decoded) {
        panic!("the request breaks the dictionary rules:\n{errors}");
    }
    window_of(&decoded.resource_profiles, decoded.dictionary.as_ref(), pid)
}

fn window_of(
    resource_profiles: &[ResourceProfiles],
    dictionary: Option<&ProfilesDictionary>,
    pid: u32,
) -> Window {
    let d = dictionary.expect("a dictionary");
    let mut window = Window {
        start_ns: 0,
        duration_ns: 0,
        resource: Vec::new(),
        samples: Vec::new(),
    };
    for rp in resource_profiles {
        for profile in rp.scope_profiles.iter().flat_map(|s| &s.profiles) {
            window.start_ns = profile.time_unix_nano;
            window.duration_ns = profile.duration_nano;
        }
        let resource = resource_attributes(d, rp);
        if get(&resource, "process.pid") != Some(&pid.to_string()) {
            continue;
        }
        window.resource = resource;
        for profile in rp.scope_profiles.iter().flat_map(|s| &s.profiles) {
            for sample in &profile.samples {
                let stack = &d.stack_table[sample.stack_index as usize];
                let names = stack
                    .location_indices
                    .iter()
                    .flat_map(|&l| {
                        let location = &d.location_table[l as usize];
                        if location.lines.is_empty() {
                            return vec!["?".to_owned()];
                        }
                        location
                            .lines
                            .iter()
                            .map(|line| {
                                let f = &d.function_table[line.function_index as usize];
                                string(d, f.name_strindex).to_owned()
                            })
                            .collect()
                    })
                    .collect();
                window.samples.push(FixtureSample {
                    names,
                    attributes: attributes(d, &sample.attribute_indices),
                    count: sample.values.iter().sum(),
                });
            }
        }
    }
    window
}

/// The profiles' `time_unix_nano` of a request (its identity), whatever processes it holds.
fn start_of(request: &Request) -> u64 {
    span_of(request).0
}

/// The profiles' `time_unix_nano` and `duration_nano` of a request ((0, 0) if it has none).
fn span_of(request: &Request) -> (u64, u64) {
    let decoded = request.export_request().expect("an export request");
    decoded
        .resource_profiles
        .iter()
        .flat_map(|rp| &rp.scope_profiles)
        .flat_map(|sp| &sp.profiles)
        .map(|p| (p.time_unix_nano, p.duration_nano))
        .next()
        .unwrap_or((0, 0))
}

fn statuses(requests: &[Request]) -> Vec<u16> {
    requests.iter().map(|r| r.status).collect()
}

// ---------------------------------------------------------------------------------------------
// The OpenTelemetry project's Python classes (as in tests/otlp_python.rs)

fn dump_tool() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/otlp_check.py")
}

/// True when python3, opentelemetry-proto and the dump tool are there; otherwise skips that
/// part with a message, or fails under `PROFILER_REQUIRE_BPF=1` (CI).
fn python_available(test: &str) -> bool {
    let import = "import opentelemetry.proto.collector.profiles.v1development.profiles_service_pb2";
    let problem = match Command::new("python3").args(["-c", import]).output() {
        Err(e) => format!("cannot run python3: {e}"),
        Ok(out) if !out.status.success() => format!(
            "python3 lacks opentelemetry-proto ({}); run `pip install opentelemetry-proto`",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Ok(_) if !dump_tool().is_file() => format!("{} is missing", dump_tool().display()),
        Ok(_) => return true,
    };
    profiler::testing::skip(test, &format!("the otlp_check.py part: {problem}"));
    false
}

/// Runs otlp_check.py on `file`; returns (exit code, stdout, stderr).
fn dump(file: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new("python3")
        .arg(dump_tool())
        .arg(file)
        .args(args)
        .output()
        .expect("run otlp_check.py");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// ---------------------------------------------------------------------------------------------
// 1. Delivery and content

#[test]
fn windows_arrive_decoded_checked_symbolized_and_attributed() {
    let test = "windows_arrive_decoded_checked_symbolized_and_attributed";
    if !bpf_available(test) {
        return;
    }
    let _serial = serial();
    let dir = scratch("dmn-content");
    let (fixture, exe) = busy_fixture(&dir);
    let pid = fixture.pid();
    let receiver = Receiver::start(Vec::new());
    let url = receiver.url();
    let pid_arg = pid.to_string();
    let mut daemon = Daemon::start(
        &dir,
        &[
            "--endpoint",
            &url,
            "--interval",
            "2",
            "-F",
            "99",
            "-p",
            &pid_arg,
        ],
    );
    daemon.wait_ready();
    std::thread::sleep(Duration::from_secs(5));
    let log = daemon.terminate();

    let requests = receiver.requests();
    assert!(
        requests.len() >= 2,
        "{} requests in 5 s at --interval 2:\n{log}",
        requests.len()
    );
    let mut windows = Vec::new();
    for request in &requests {
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/v1development/profiles");
        assert_eq!(
            request.header("content-type"),
            Some("application/x-protobuf")
        );
        assert_eq!(request.header("content-encoding"), None, "no --gzip");
        assert_eq!(request.status, 200);
        windows.push(window(request, pid));
    }
    let starts: Vec<u64> = windows.iter().map(|w| w.start_ns).collect();
    assert!(
        starts.windows(2).all(|w| w[0] < w[1]),
        "windows in order, each once: {starts:?}"
    );

    // The same shape in every request: sample type, period, window length.
    for request in &requests {
        let decoded = request.export_request().unwrap();
        let d = decoded.dictionary.as_ref().unwrap();
        for rp in &decoded.resource_profiles {
            let scope = &rp.scope_profiles[0];
            assert_eq!(
                scope.scope.as_ref().map(|s| s.name.as_str()),
                Some("profiler")
            );
            for profile in &scope.profiles {
                let st = profile.sample_type.as_ref().expect("a sample type");
                let pt = profile.period_type.as_ref().expect("a period type");
                assert_eq!(
                    (string(d, st.type_strindex), string(d, st.unit_strindex)),
                    ("samples", "count")
                );
                assert_eq!(
                    (string(d, pt.type_strindex), string(d, pt.unit_strindex)),
                    ("cpu", "nanoseconds")
                );
                assert_eq!(profile.period, 1_000_000_000 / 99);
                assert!(
                    profile.duration_nano > 0 && profile.duration_nano < 10_000_000_000,
                    "duration {} ns at --interval 2",
                    profile.duration_nano
                );
            }
        }
        // Every location says what kind of frame it is.
        for (i, location) in d.location_table.iter().enumerate().skip(1) {
            let types: Vec<String> = attributes(d, &location.attribute_indices)
                .into_iter()
                .filter(|(k, _)| k == "profile.frame.type")
                .map(|(_, v)| v)
                .collect();
            assert!(
                types.len() == 1 && (types[0] == "native" || types[0] == "kernel"),
                "location {i} has profile.frame.type {types:?}"
            );
        }
    }

    // The fixture: resource attributes, symbolized stacks.
    let total: i64 = windows.iter().map(Window::total).sum();
    let symbolized: i64 = windows.iter().map(Window::symbolized).sum();
    assert!(
        total >= 50,
        "{total} samples of the fixture in ~5 s at 99 Hz"
    );
    assert!(
        symbolized * 10 >= total * 8,
        "{symbolized} of {total} fixture samples have c,b,a,main (leaf first): {:?}",
        windows
            .iter()
            .flat_map(|w| &w.samples)
            .map(|s| (&s.names, s.count))
            .collect::<Vec<_>>()
    );
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_owned();
    let exe_path = std::fs::canonicalize(&exe).unwrap();
    let mut with_fixture = 0;
    for window in windows.iter().filter(|w| !w.samples.is_empty()) {
        with_fixture += 1;
        let r = &window.resource;
        assert_eq!(get(r, "process.pid"), Some(pid_arg.as_str()), "{r:?}");
        assert_eq!(get(r, "process.executable.name"), Some("abc"), "{r:?}");
        assert_eq!(
            get(r, "process.executable.path"),
            exe_path.to_str(),
            "{r:?}"
        );
        assert_eq!(get(r, "host.name"), Some(host.as_str()), "{r:?}");
        assert_eq!(get(r, "service.name"), Some("profiler"), "{r:?}");
        for sample in &window.samples {
            assert_eq!(
                get(&sample.attributes, "thread.name"),
                Some("abc"),
                "{sample:?}"
            );
        }
    }
    assert!(with_fixture >= 2, "the fixture in {with_fixture} windows");

    // The fixture's mapping carries its GNU build ID.
    let bytes = std::fs::read(&exe).unwrap();
    let build_id = object::Object::build_id(&object::File::parse(bytes.as_slice()).unwrap())
        .unwrap()
        .expect("cc writes a build ID");
    let build_id: String = build_id.iter().map(|b| format!("{b:02x}")).collect();
    let decoded = requests[0].export_request().unwrap();
    let d = decoded.dictionary.as_ref().unwrap();
    let mapping = d
        .mapping_table
        .iter()
        .find(|m| string(d, m.filename_strindex) == exe_path.to_str().unwrap())
        .expect("a mapping for the fixture");
    assert_eq!(
        get(
            &attributes(d, &mapping.attribute_indices),
            "process.executable.build_id.gnu"
        ),
        Some(build_id.as_str())
    );

    // The OpenTelemetry project's own classes read it, and its checks pass.
    if python_available(test) {
        let request = requests
            .iter()
            .find(|r| window(r, pid).symbolized() > 0)
            .expect("a window with the fixture");
        let file = dir.join("payload.bin");
        std::fs::write(&file, &request.body).unwrap();
        let (code, stdout, stderr) = dump(&file, &[]);
        assert_eq!(code, Some(0), "otlp_check.py failed:\n{stdout}\n{stderr}");
        assert!(stdout.contains("main;a;b;c"), "{stdout}");
        assert!(
            stdout.contains(&format!("'process.pid': {pid}")),
            "{stdout}"
        );
        assert!(stdout.contains("thread.name=abc"), "{stdout}");
    }

    // Last, so that everything above is known to hold when this fails: the issue asks for
    // `thread.id` on every sample.
    let missing: Vec<&FixtureSample> = windows
        .iter()
        .flat_map(|w| &w.samples)
        .filter(|s| get(&s.attributes, "thread.id") != Some(pid_arg.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} fixture samples lack thread.id = {pid} (single-threaded fixture), e.g. {:?}",
        missing.len(),
        missing.first()
    );
}

// ---------------------------------------------------------------------------------------------
// 2. gzip, extra headers, service name

#[test]
fn gzip_and_extra_headers_reach_the_collector() {
    if !bpf_available("gzip_and_extra_headers_reach_the_collector") {
        return;
    }
    let _serial = serial();
    let dir = scratch("dmn-gzip");
    let (fixture, _) = busy_fixture(&dir);
    let pid = fixture.pid();
    let receiver = Receiver::start(Vec::new());
    let (url, pid_arg) = (receiver.url(), pid.to_string());
    let mut daemon = Daemon::start(
        &dir,
        &[
            "--endpoint",
            &url,
            "--interval",
            "1",
            "-F",
            "99",
            "-p",
            &pid_arg,
            "--gzip",
            "--header",
            "Authorization=Bearer x",
            "--header",
            "X-Scope-OrgID=tenant-1",
            "--service-name",
            "checkout",
        ],
    );
    daemon.wait_ready();
    let got = receiver.wait_for(2, Duration::from_secs(20));
    let log = daemon.terminate();
    assert!(got.len() >= 2, "{} requests:\n{log}", got.len());
    let requests = receiver.requests();
    let (wire, decoded): (usize, usize) = requests
        .iter()
        .fold((0, 0), |(w, d), r| (w + r.wire_len, d + r.body.len()));
    eprintln!(
        "gzip: {} requests, {wire} bytes on the wire for {decoded} bytes of protobuf",
        requests.len()
    );
    for request in requests {
        assert_eq!(request.header("content-encoding"), Some("gzip"));
        assert_eq!(
            request.header("content-type"),
            Some("application/x-protobuf")
        );
        assert_eq!(request.header("authorization"), Some("Bearer x"));
        assert_eq!(request.header("x-scope-orgid"), Some("tenant-1"));
        // The receiver gunzipped the body (it decodes below); it was smaller on the wire.
        assert!(
            request.wire_len < request.body.len(),
            "{} bytes on the wire for {} decoded",
            request.wire_len,
            request.body.len()
        );
        let w = window(&request, pid);
        if !w.samples.is_empty() {
            assert_eq!(get(&w.resource, "service.name"), Some("checkout"));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 3. 503 with Retry-After, then 200

#[test]
fn service_unavailable_then_ok_delivers_the_window_exactly_once() {
    if !bpf_available("service_unavailable_then_ok_delivers_the_window_exactly_once") {
        return;
    }
    let _serial = serial();
    let dir = scratch("dmn-503");
    let (fixture, _) = busy_fixture(&dir);
    let receiver = Receiver::start(vec![Reply::new(503).header("Retry-After", "1")]);
    let stats_path = dir.join("stats.json");
    let (url, pid_arg) = (receiver.url(), fixture.pid().to_string());
    let mut daemon = Daemon::start(
        &dir,
        &[
            "--endpoint",
            &url,
            "--interval",
            "2",
            "-F",
            "99",
            "-p",
            &pid_arg,
            "--stats-json",
            stats_path.to_str().unwrap(),
        ],
    );
    daemon.wait_ready();
    let got = receiver.wait_for(3, Duration::from_secs(30));
    assert!(got.len() >= 3, "{:?}:\n{}", statuses(&got), daemon.log());
    let log = daemon.terminate();

    let requests = receiver.requests();
    assert_eq!(requests[0].status, 503, "{:?}", statuses(&requests));
    assert!(
        requests[1..].iter().all(|r| r.status == 200),
        "{:?}",
        statuses(&requests)
    );
    assert_eq!(
        requests[1].body, requests[0].body,
        "the 503'd window is retried first"
    );
    let gap = requests[1].at - requests[0].at;
    assert!(
        gap >= Duration::from_millis(900) && gap < Duration::from_secs(5),
        "Retry-After: 1 honoured: retried after {gap:?}"
    );
    let first = &requests[0].body;
    assert_eq!(
        requests.iter().filter(|r| &r.body == first).count(),
        2,
        "the window is sent twice (503, 200) and no more"
    );
    let delivered: Vec<&Vec<u8>> = requests[1..].iter().map(|r| &r.body).collect();
    let distinct: HashSet<&Vec<u8>> = delivered.iter().copied().collect();
    assert_eq!(distinct.len(), delivered.len(), "a window delivered twice");
    let starts: Vec<u64> = requests[1..].iter().map(start_of).collect();
    assert!(
        starts.windows(2).all(|w| w[0] < w[1]),
        "windows delivered in order: {starts:?}"
    );

    let s = stats(&stats_path);
    assert_eq!(stat(&s, "export_retries"), 1.0, "{log}");
    assert_eq!(stat(&s, "export_delivered"), delivered.len() as f64);
    assert_eq!(stat(&s, "export_attempts"), requests.len() as f64);
    assert_eq!(stat(&s, "export_rejected"), 0.0);
    assert_eq!(stat(&s, "export_dropped"), 0.0);
    assert_eq!(stat(&s, "windows"), delivered.len() as f64);
}

// ---------------------------------------------------------------------------------------------
// 4. 400: rejected, counted, not retried, and the daemon carries on

#[test]
fn bad_request_is_counted_not_retried_and_later_windows_arrive() {
    if !bpf_available("bad_request_is_counted_not_retried_and_later_windows_arrive") {
        return;
    }
    let _serial = serial();
    let dir = scratch("dmn-400");
    let (fixture, _) = busy_fixture(&dir);
    let receiver = Receiver::start(vec![Reply::new(400).body("unknown field 99")]);
    let stats_path = dir.join("stats.json");
    let (url, pid_arg) = (receiver.url(), fixture.pid().to_string());
    let mut daemon = Daemon::start(
        &dir,
        &[
            "--endpoint",
            &url,
            "--interval",
            "1",
            "-F",
            "99",
            "-p",
            &pid_arg,
            "--stats-json",
            stats_path.to_str().unwrap(),
        ],
    );
    daemon.wait_ready();
    let got = receiver.wait_for(3, Duration::from_secs(30));
    assert!(got.len() >= 3, "{:?}:\n{}", statuses(&got), daemon.log());
    // Still running after the rejection, and counting it.
    assert!(
        eventually(Duration::from_secs(5), || {
            std::fs::read_to_string(&stats_path).is_ok_and(|t| t.contains("export_rejected"))
                && stat(&stats(&stats_path), "export_rejected") == 1.0
        }),
        "export_rejected in {}",
        std::fs::read_to_string(&stats_path).unwrap_or_default()
    );
    let log = daemon.terminate();

    let requests = receiver.requests();
    assert_eq!(requests[0].status, 400);
    assert!(
        requests[1..].iter().all(|r| r.status == 200),
        "{:?}",
        statuses(&requests)
    );
    let rejected = &requests[0].body;
    assert!(
        requests[1..].iter().all(|r| &r.body != rejected),
        "the rejected window was sent again"
    );
    assert!(
        log.contains("HTTP 400") && log.contains("not retried"),
        "the rejection is logged:\n{log}"
    );
    let s = stats(&stats_path);
    assert_eq!(stat(&s, "export_rejected"), 1.0);
    assert_eq!(stat(&s, "export_retries"), 0.0);
    assert_eq!(stat(&s, "export_dropped"), 0.0);
    assert_eq!(stat(&s, "export_delivered"), (requests.len() - 1) as f64);
    assert_eq!(stat(&s, "windows"), requests.len() as f64);
}

// ---------------------------------------------------------------------------------------------
// 5. Collector down for 30 s, then up

#[test]
fn outage_keeps_sampling_then_delivers_the_newest_queued_windows() {
    if !bpf_available("outage_keeps_sampling_then_delivers_the_newest_queued_windows") {
        return;
    }
    let _serial = serial();
    let dir = scratch("dmn-outage");
    let (fixture, _) = busy_fixture(&dir);
    let mut receiver = Receiver::start(Vec::new());
    receiver.stop();
    let stats_path = dir.join("stats.json");
    let (url, pid_arg) = (receiver.url(), fixture.pid().to_string());
    let mut daemon = Daemon::start(
        &dir,
        &[
            "--endpoint",
            &url,
            "--interval",
            "1",
            "--queue",
            "3",
            "-F",
            "99",
            "-p",
            &pid_arg,
            "--stats-json",
            stats_path.to_str().unwrap(),
        ],
    );
    daemon.wait_ready();
    let down_since = Instant::now();

    // During the outage: sampling goes on, windows are cut, the oldest ones are dropped.
    let read = |name: &str| stat(&stats(&stats_path), name);
    std::thread::sleep(Duration::from_secs(10));
    let (samples_early, windows_early) = (read("samples"), read("windows"));
    std::thread::sleep(Duration::from_secs(15));
    let (samples_late, windows_late) = (read("samples"), read("windows"));
    assert!(
        samples_late > samples_early && samples_early > 0.0,
        "samples {samples_early} then {samples_late} during the outage"
    );
    assert!(
        windows_late >= windows_early + 5.0,
        "windows {windows_early} then {windows_late} in 15 s at --interval 1"
    );
    assert!(
        read("export_dropped") >= 10.0,
        "export_dropped {} after ~25 s down with --queue 3",
        read("export_dropped")
    );
    assert_eq!(read("export_delivered"), 0.0);
    assert!(receiver.requests().is_empty());
    let left = Duration::from_secs(30).saturating_sub(down_since.elapsed());
    std::thread::sleep(left);

    let windows_before = read("windows");
    let restarted_ns = now_unix_ns();
    let restarted = Instant::now();
    receiver.restart(Vec::new()).expect("rebind the port");
    let got = receiver.wait_for(4, Duration::from_secs(20));
    let recovered_in = got.first().map(|r| r.at - restarted);
    assert!(got.len() >= 4, "{} requests after recovery", got.len());
    let ended = daemon.signal_and_wait(libc::SIGTERM);
    assert_eq!(ended.code, Some(0), "{}", ended.log);

    let requests = receiver.requests();
    assert!(requests.iter().all(|r| r.status == 200));
    let starts: Vec<u64> = requests.iter().map(start_of).collect();
    assert!(
        starts.iter().all(|&s| s > 0),
        "every window has the fixture's samples"
    );
    assert!(
        starts.windows(2).all(|w| w[0] < w[1]),
        "delivered in order, each once: {starts:?}"
    );
    // What was queued when the collector came back: at most 3 windows, the newest ones. A
    // window counts as queued if it had ended half a second before the restart (it was cut
    // and submitted by then); the one being recorded at the restart does not.
    let spans: Vec<(u64, u64)> = requests.iter().map(span_of).collect();
    let queued: Vec<u64> = spans
        .iter()
        .filter(|&&(start, duration)| start + duration + 500_000_000 <= restarted_ns)
        .map(|&(start, _)| start)
        .collect();
    assert!(
        !queued.is_empty() && queued.len() <= 3,
        "{} windows from before the recovery delivered (--queue 3): (start, duration) \
         {spans:?}, restart at {restarted_ns}",
        queued.len()
    );
    let oldest_age = Duration::from_nanos(restarted_ns.saturating_sub(starts[0]));
    assert!(
        oldest_age < Duration::from_secs(8),
        "the oldest window delivered began {oldest_age:?} before the recovery: not among \
         the newest 3"
    );
    let s = stats(&stats_path);
    let (windows, delivered, dropped) = (
        stat(&s, "windows"),
        stat(&s, "export_delivered"),
        stat(&s, "export_dropped"),
    );
    assert_eq!(delivered, requests.len() as f64);
    assert_eq!(stat(&s, "export_rejected"), 0.0);
    assert_eq!(
        windows,
        delivered + dropped,
        "every window delivered or counted as dropped"
    );
    assert!(
        dropped >= windows_before - 3.0 - 1.0 && dropped <= windows_before,
        "{dropped} dropped of {windows_before} windows cut during the outage"
    );
    let ended_before = spans
        .iter()
        .filter(|&&(start, duration)| start + duration <= restarted_ns)
        .count();
    eprintln!(
        "outage: {windows_before} windows cut during 30 s down, {dropped} dropped, \
         {ended_before} delivered that had ended before the restart, first delivery \
         {recovered_in:?} after the restart"
    );
}

// ---------------------------------------------------------------------------------------------
// 6. SIGTERM delivers the last partial window

#[test]
fn sigterm_delivers_the_last_partial_window() {
    if !bpf_available("sigterm_delivers_the_last_partial_window") {
        return;
    }
    let _serial = serial();
    let dir = scratch("dmn-sigterm");
    let (fixture, _) = busy_fixture(&dir);
    let pid = fixture.pid();
    let receiver = Receiver::start(Vec::new());
    let (url, pid_arg) = (receiver.url(), pid.to_string());
    let mut daemon = Daemon::start(
        &dir,
        &[
            "--endpoint",
            &url,
            "--interval",
            "60",
            "-F",
            "99",
            "-p",
            &pid_arg,
        ],
    );
    daemon.wait_ready();
    std::thread::sleep(Duration::from_secs(3));
    assert!(receiver.requests().is_empty(), "nothing before the signal");
    let ended = daemon.signal_and_wait(libc::SIGTERM);
    assert_eq!(ended.code, Some(0), "{}", ended.log);
    assert!(
        ended.took < Duration::from_secs(12),
        "exit took {:?}",
        ended.took
    );
    assert!(ended.log.contains("SIGTERM received"), "{}", ended.log);

    let requests = receiver.requests();
    assert_eq!(requests.len(), 1, "{:?}", statuses(&requests));
    let w = window(&requests[0], pid);
    assert!(w.total() >= 20, "{} samples in the last window", w.total());
    assert!(w.symbolized() > 0, "{:?}", w.samples);
    assert!(
        w.duration_ns >= 2_000_000_000 && w.duration_ns < 30_000_000_000,
        "a partial window of a few seconds: {} ns",
        w.duration_ns
    );
}

/// The flush on SIGTERM is bounded: with the collector down the daemon still exits 0 within the
/// 10 s deadline, counting the window it could not send as dropped.
#[test]
fn sigterm_with_the_collector_down_exits_by_the_deadline() {
    if !bpf_available("sigterm_with_the_collector_down_exits_by_the_deadline") {
        return;
    }
    let _serial = serial();
    let dir = scratch("dmn-deadline");
    let (fixture, _) = busy_fixture(&dir);
    let mut receiver = Receiver::start(Vec::new());
    receiver.stop();
    let stats_path = dir.join("stats.json");
    let (url, pid_arg) = (receiver.url(), fixture.pid().to_string());
    let mut daemon = Daemon::start(
        &dir,
        &[
            "--endpoint",
            &url,
            "--interval",
            "60",
            "-p",
            &pid_arg,
            "--stats-json",
            stats_path.to_str().unwrap(),
        ],
    );
    daemon.wait_ready();
    std::thread::sleep(Duration::from_secs(2));
    let ended = daemon.signal_and_wait(libc::SIGINT);
    assert_eq!(ended.code, Some(0), "{}", ended.log);
    assert!(
        ended.took < Duration::from_secs(14),
        "exit took {:?}",
        ended.took
    );
    let s = stats(&stats_path);
    assert_eq!(stat(&s, "windows"), 1.0);
    assert_eq!(stat(&s, "export_dropped"), 1.0);
    assert_eq!(stat(&s, "export_delivered"), 0.0);
    assert!(ended.log.contains("dropped"), "{}", ended.log);
}

// ---------------------------------------------------------------------------------------------
// 7. Output directory with a size cap

#[test]
fn output_dir_gets_window_files_and_stays_under_its_cap() {
    if !bpf_available("output_dir_gets_window_files_and_stays_under_its_cap") {
        return;
    }
    let _serial = serial();
    let dir = scratch("dmn-outdir");
    let (fixture, _) = busy_fixture(&dir);
    let pid = fixture.pid();
    let out = dir.join("windows");
    std::fs::create_dir_all(&out).unwrap();
    // Older window files (names sort first) that already fill the 1 MiB cap, so the first
    // window written makes the daemon rotate; and a file that is not ours, never touched.
    const OLD: usize = 700 * 1024;
    let old = [
        "profile-0000-old-000001.otlp",
        "profile-0000-old-000002.otlp",
    ];
    for name in old {
        std::fs::write(out.join(name), vec![0u8; OLD]).unwrap();
    }
    std::fs::write(out.join("notes.txt"), vec![b'x'; 2 << 20]).unwrap();
    let stats_path = dir.join("stats.json");
    let pid_arg = pid.to_string();
    let mut daemon = Daemon::start(
        &dir,
        &[
            "--no-endpoint",
            "--output-dir",
            out.to_str().unwrap(),
            "--max-dir-size",
            "1",
            "--interval",
            "1",
            "-F",
            "99",
            "-p",
            &pid_arg,
            "--stats-json",
            stats_path.to_str().unwrap(),
        ],
    );
    daemon.wait_ready();
    let ours = |out: &Path| -> Vec<(String, u64)> {
        let mut files: Vec<(String, u64)> = std::fs::read_dir(out)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                (name, e.metadata().map(|m| m.len()).unwrap_or(0))
            })
            .filter(|(n, _)| n.starts_with("profile-") && n.ends_with(".otlp"))
            .collect();
        files.sort();
        files
    };
    // The daemon rotates after writing a window (not at start): from the first window's
    // counters on (written after the file and the rotation), the directory is under the cap
    // at every look, while windows keep coming.
    assert!(
        eventually(Duration::from_secs(20), || {
            std::fs::read_to_string(&stats_path).is_ok_and(|t| t.contains("\"windows\""))
                && stat(&stats(&stats_path), "windows") >= 1.0
        }),
        "no window within 20 s:\n{}",
        daemon.log()
    );
    let mut looks = 0;
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        let total: u64 = ours(&out).iter().map(|(_, len)| len).sum();
        assert!(total <= 1 << 20, "{total} bytes of profiles in a 1 MiB dir");
        looks += 1;
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(looks > 5);
    let log = daemon.terminate();

    let files = ours(&out);
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        !names.contains(&old[0]),
        "the oldest file was not rotated away: {names:?}"
    );
    assert!(
        names.contains(&old[1]),
        "rotation deleted more than it had to: {names:?}"
    );
    assert!(
        out.join("notes.txt").exists(),
        "a file not ours was deleted"
    );
    let total: u64 = files.iter().map(|(_, len)| len).sum();
    assert!(total <= 1 << 20, "{total} bytes at exit");
    let windows: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| !n.starts_with("profile-0000-old"))
        .collect();
    assert!(
        windows.len() >= 3,
        "window files after ~5 s at --interval 1: {names:?}\n{log}"
    );
    let mut with_fixture = 0;
    for name in &windows {
        let bytes = std::fs::read(out.join(name)).unwrap();
        let data = ProfilesData::decode(bytes.as_slice())
            .unwrap_or_else(|e| panic!("{name} is not a ProfilesData: {e}"));
        if let Err(errors) = otlp::check_dictionary(&data) {
            panic!("{name} breaks the dictionary rules:\n{errors}");
        }
        let w = window_of(&data.resource_profiles, data.dictionary.as_ref(), pid);
        if w.symbolized() > 0 {
            with_fixture += 1;
        }
    }
    assert!(with_fixture >= 2, "{with_fixture} files with the fixture");
    let leftovers: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    let s = stats(&stats_path);
    assert_eq!(stat(&s, "output_files_rotated"), 1.0);
    assert_eq!(stat(&s, "output_files_written"), windows.len() as f64);
    assert_eq!(stat(&s, "output_files_failed"), 0.0);
    assert_eq!(stat(&s, "windows"), windows.len() as f64);
}

// ---------------------------------------------------------------------------------------------
// 8. Bad input (no root needed: it is refused before anything is loaded)

#[test]
fn bad_input_is_a_usage_error_with_a_clear_message() {
    for (args, message) in [
        (
            &["--endpoint", "ftp://x"][..],
            "scheme \"ftp\" is not supported",
        ),
        (&["--endpoint", "localhost:4318"], "has no scheme"),
        (&["--interval", "0"], "invalid interval 0 s"),
        (&["--interval", "3601"], "invalid interval 3601 s"),
        (&["--interval", "x"], "--interval"),
        (&["-F", "0"], "invalid frequency 0 Hz"),
        (&["--queue", "0"], "--queue must be at least 1"),
        (
            &["--header", "novalue"],
            "invalid --header (the 1st): expected KEY=VALUE",
        ),
        (
            &["--header", "Content-Type=text/plain"],
            "cannot be overridden",
        ),
        (&["--no-endpoint"], "--no-endpoint needs --output-dir"),
        (&["-p", "99999999"], "no process with PID 99999999"),
        (
            &["--no-endpoint", "--output-dir", "/proc/no/such/dir"],
            "cannot create /proc/no/such/dir",
        ),
        (
            &["--stats-json", "/nonexistent-dir/s.json"],
            "cannot write /nonexistent-dir/s.json",
        ),
        (&["--bogus"], "Unrecognized argument: --bogus"),
    ] {
        let mut full = vec!["daemon"];
        full.extend_from_slice(args);
        let started = Instant::now();
        let out = profiler(&full);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{full:?}: {err}");
        assert!(
            err.contains(message),
            "{full:?}: expected {message:?} in: {err}"
        );
        assert!(!err.contains("panicked"), "{full:?} panicked: {err}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{full:?} took {:?}",
            started.elapsed()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 9. Restart safety

/// The BPF objects (programs, maps, links) a process holds, by kind and ID, from its fdinfo.
fn bpf_objects(pid: u32) -> Vec<(&'static str, u32)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return found;
    };
    for entry in entries.filter_map(Result::ok) {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        // A link's fdinfo also names its program: take the object the fd itself is.
        let kind = ["link_id", "prog_id", "map_id"]
            .into_iter()
            .find(|key| text.lines().any(|l| l.starts_with(&format!("{key}:"))));
        let Some(kind) = kind else { continue };
        let id = text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{kind}:")))
            .and_then(|v| v.trim().parse().ok());
        if let Some(id) = id {
            found.push((kind, id));
        }
    }
    found.sort();
    found.dedup();
    found
}

/// Whether the kernel still has the BPF object `kind` `id`.
fn bpf_object_exists(kind: &str, id: u32) -> bool {
    use profiler::sys::bpf::{object_exists, ObjectKind};
    let kind = match kind {
        "prog_id" => ObjectKind::Prog,
        "map_id" => ObjectKind::Map,
        _ => ObjectKind::Link,
    };
    object_exists(kind, id)
}

#[test]
fn kill_9_leaves_nothing_behind_and_the_next_session_works() {
    if !bpf_available("kill_9_leaves_nothing_behind_and_the_next_session_works") {
        return;
    }
    let _serial = serial();
    let dir = scratch("dmn-kill9");
    let (fixture, _) = busy_fixture(&dir);
    let pid = fixture.pid();
    let receiver = Receiver::start(Vec::new());
    let (url, pid_arg) = (receiver.url(), pid.to_string());
    let args = [
        "--endpoint",
        url.as_str(),
        "--interval",
        "1",
        "-F",
        "99",
        "-p",
        pid_arg.as_str(),
    ];
    let mut daemon = Daemon::start(&dir, &args);
    daemon.wait_ready();
    assert!(
        !receiver.wait_for(1, Duration::from_secs(20)).is_empty(),
        "{}",
        daemon.log()
    );
    let daemon_pid = daemon.pid();
    let held = bpf_objects(daemon_pid);
    let count = |kind: &str| held.iter().filter(|(k, _)| *k == kind).count();
    assert!(
        count("prog_id") >= 1 && count("map_id") >= 1 && count("link_id") >= 1,
        "the running daemon's BPF objects: {held:?}"
    );
    let ended = daemon.signal_and_wait(libc::SIGKILL);
    assert_eq!(ended.code, None, "killed by a signal");
    assert!(!Path::new(&format!("/proc/{daemon_pid}")).exists());

    // Nothing pinned, nothing attached: every program, map and link is freed by the kernel.
    let gone = eventually(Duration::from_secs(10), || {
        held.iter().all(|&(kind, id)| !bpf_object_exists(kind, id))
    });
    let left: Vec<_> = held
        .iter()
        .filter(|&&(kind, id)| bpf_object_exists(kind, id))
        .collect();
    assert!(gone, "still in the kernel after kill -9: {left:?}");

    // A record session works.
    let folded = dir.join("after.folded");
    let out = profiler(&[
        "record",
        "-d",
        "1",
        "-F",
        "99",
        "-p",
        &pid_arg,
        "-o",
        folded.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = common::folded(&folded);
    let good: u64 = lines
        .iter()
        .filter(|(s, _)| s.contains(";main;a;b;c"))
        .map(|(_, c)| c)
        .sum();
    assert!(good >= 10, "record after kill -9: {lines:?}");

    // And a new daemon samples and delivers normally.
    let before = receiver.requests().len();
    let mut again = Daemon::start(&dir, &args);
    again.wait_ready();
    let got = receiver.wait_for(before + 2, Duration::from_secs(20));
    let log = again.terminate();
    let fresh = &got[before.min(got.len())..];
    assert!(fresh.len() >= 2, "{} requests:\n{log}", fresh.len());
    let samples: i64 = fresh.iter().map(|r| window(r, pid).symbolized()).sum();
    assert!(samples >= 10, "{samples} symbolized samples:\n{log}");
}
