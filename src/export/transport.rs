//! OTLP/HTTP transport: ships encoded `ExportProfilesServiceRequest`s to a collector from a
//! thread of its own, so a slow or unreachable collector never stalls aggregation.
//!
//! This module owns the export queue, the HTTP exchange (`POST {endpoint}/v1development/profiles`,
//! protobuf, optional gzip, extra headers, HTTPS through ureq's rustls) and the retry policy:
//! 429/502/503/504 and connection failures are retried with exponential backoff and jitter,
//! honouring `Retry-After`; every other failure status is final. It does not build payloads
//! (that is [`super::otlp`]).
//!
//! The queue holds at most `queue_capacity` windows, counting the one being sent or retried; when
//! a new window arrives at a full queue the oldest goes, even if it is the one being retried, so
//! that recent data wins after an outage. Every window ends exactly once in one of the counters
//! `export_delivered`, `export_rejected` or `export_dropped`.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flate2::write::GzEncoder;
use flate2::Compression;
use prost::Message;

use super::otlp_proto::ExportProfilesServiceResponse;
use crate::log;
use crate::stats::Stats;

/// The OTLP/HTTP path of the profiles signal (`profiles_service_http.yaml`).
pub const PROFILES_PATH: &str = "/v1development/profiles";

/// A failure repeated in a row is logged the first time and then every this many times.
const LOG_EVERY: u64 = 10;
/// How much of a rejected request's response body a warning quotes.
const BODY_EXCERPT: usize = 200;
/// The most of a response body read: a collector's answer is a few bytes.
const MAX_RESPONSE: u64 = 64 * 1024;
/// Headers the transport sets itself, which `--header` must not override.
const RESERVED_HEADERS: [&str; 5] = [
    "content-type",
    "content-encoding",
    "content-length",
    "transfer-encoding",
    "host",
];

/// Where and how to send windows.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// The collector's base URL (`http://localhost:4318`); [`PROFILES_PATH`] is appended unless
    /// the URL already ends with it.
    pub endpoint: String,
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
        profiles_url(&self.endpoint)
    }

    /// Checks everything a request could later fail on, with a message the user can act on.
    pub fn validate(&self) -> Result<(), String> {
        validate_endpoint(&self.endpoint)?;
        for (name, value) in &self.headers {
            validate_header(name, value)?;
        }
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

/// The wait before retry number `retry + 1` (0-based): `initial` doubled per retry, at most `max`.
pub(crate) fn backoff(retry: u32, initial: Duration, max: Duration) -> Duration {
    let factor = 1u32.checked_shl(retry).unwrap_or(u32::MAX);
    initial.saturating_mul(factor).min(max)
}

/// `delay` scaled by a factor in [0.8, 1.2), from `unit` in [0, 1): retrying exporters spread out.
pub(crate) fn jittered(delay: Duration, unit: f64) -> Duration {
    delay.mul_f64(0.8 + 0.4 * unit.clamp(0.0, 1.0))
}

/// A `Retry-After` value as a wait from `now`: delay-seconds, or an IMF-fixdate HTTP-date (a date
/// in the past means "now"). Obsolete date formats are `None`: the caller's backoff applies.
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = parse_http_date(value)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Parses `Sun, 06 Nov 1994 08:49:37 GMT` (RFC 9110 IMF-fixdate).
fn parse_http_date(value: &str) -> Option<SystemTime> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let parts: Vec<&str> = value.split_ascii_whitespace().collect();
    let [weekday, day, month, year, time, "GMT"] = parts[..] else {
        return None;
    };
    weekday.strip_suffix(',')?;
    let day: u32 = day.parse().ok()?;
    let month = MONTHS.iter().position(|m| *m == month)? as u32 + 1;
    let year: i64 = year.parse().ok()?;
    let hms: Vec<u64> = time
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [hour, minute, second] = hms[..] else {
        return None;
    };
    if !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let days = u64::try_from(days_from_civil(year, month, day)).ok()?;
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second;
    Some(UNIX_EPOCH + Duration::from_secs(seconds))
}

/// Days from 1970-01-01 to the given proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = i64::from((month + 9) % 12);
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// A tiny xorshift64* generator for jitter: no cryptographic needs, no dependency.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        // splitmix64 spreads a poor seed (e.g. a timestamp) over all bits; xorshift needs non-zero.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn from_time() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Rng::new(nanos ^ u64::from(std::process::id()).rotate_left(32))
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A uniform value in [0, 1).
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Decides which of a run of same-kind failures to log: the first, then every [`LOG_EVERY`]th.
#[derive(Debug)]
pub(crate) struct Throttle<K> {
    current: Option<K>,
    count: u64,
}

impl<K: PartialEq> Throttle<K> {
    pub(crate) fn new() -> Self {
        Throttle {
            current: None,
            count: 0,
        }
    }

    /// Notes one occurrence; returns its number in the run when it should be logged.
    pub(crate) fn note(&mut self, kind: K) -> Option<u64> {
        if self.current.as_ref() == Some(&kind) {
            self.count += 1;
        } else {
            self.current = Some(kind);
            self.count = 1;
        }
        (self.count == 1 || self.count % LOG_EVERY == 0).then_some(self.count)
    }

    /// Ends the run; returns how long it was.
    pub(crate) fn clear(&mut self) -> u64 {
        self.current = None;
        std::mem::take(&mut self.count)
    }
}

/// A window waiting for (or in) delivery; `seq` tells windows apart across evictions.
struct Window {
    seq: u64,
    payload: Arc<Vec<u8>>,
}

/// What [`WindowQueue::push`] had to drop to make room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Evicted {
    Nothing,
    /// A window not yet sent: it is dropped.
    Queued,
    /// The window being sent: dropped unless the attempt under way delivers it.
    InFlight,
}

/// The bounded FIFO of unsent windows. The window being sent stays at the front until it ends.
pub(crate) struct WindowQueue {
    windows: VecDeque<Window>,
    capacity: usize,
    next_seq: u64,
    in_flight: Option<u64>,
}

impl WindowQueue {
    pub(crate) fn new(capacity: usize) -> Self {
        WindowQueue {
            windows: VecDeque::new(),
            capacity: capacity.max(1),
            next_seq: 0,
            in_flight: None,
        }
    }

    /// Appends a window, dropping the oldest first when the queue is full.
    pub(crate) fn push(&mut self, payload: Vec<u8>) -> Evicted {
        let mut evicted = Evicted::Nothing;
        if self.windows.len() >= self.capacity {
            if let Some(oldest) = self.windows.pop_front() {
                evicted = if self.in_flight == Some(oldest.seq) {
                    Evicted::InFlight
                } else {
                    Evicted::Queued
                };
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let payload = Arc::new(payload);
        self.windows.push_back(Window { seq, payload });
        evicted
    }

    /// Marks the oldest window as being sent and hands it out.
    pub(crate) fn take(&mut self) -> Option<(u64, Arc<Vec<u8>>)> {
        let front = self.windows.front()?;
        self.in_flight = Some(front.seq);
        Some((front.seq, Arc::clone(&front.payload)))
    }

    /// True while window `seq` is still queued (it was not evicted).
    pub(crate) fn holds(&self, seq: u64) -> bool {
        self.windows.front().is_some_and(|w| w.seq == seq)
    }

    /// Window `seq`, handed out by [`Self::take`], has ended.
    pub(crate) fn finish(&mut self, seq: u64) {
        if self.holds(seq) {
            self.windows.pop_front();
        }
        self.in_flight = None;
    }

    /// Windows not yet ended: those queued, plus an evicted one whose attempt is under way.
    pub(crate) fn outstanding(&self) -> u64 {
        let evicted_in_flight = self.in_flight.is_some_and(|seq| !self.holds(seq));
        self.windows.len() as u64 + u64::from(evicted_in_flight)
    }

    /// Forgets every window; returns how many had not ended.
    pub(crate) fn clear(&mut self) -> u64 {
        let outstanding = self.outstanding();
        self.windows.clear();
        self.in_flight = None;
        outstanding
    }
}

/// How a window ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// Accepted (2xx); the bytes sent.
    Delivered(usize),
    /// Refused for good, or failed in a way a retry cannot fix.
    Rejected,
    /// Evicted by a newer window, or given up at shutdown.
    Dropped,
}

/// Windows ended by this exporter, by how.
#[derive(Clone, Copy, Debug, Default)]
struct Totals {
    delivered: u64,
    rejected: u64,
    dropped: u64,
}

struct State {
    queue: WindowQueue,
    totals: Totals,
    /// No more windows will come; set with the deadline by shutdown (or drop).
    closed: bool,
    deadline: Option<Instant>,
    /// Shutdown's deadline passed with the thread still busy: it must not count anything more.
    abandoned: bool,
    /// The export thread has returned.
    finished: bool,
    overflow: Throttle<()>,
}

impl State {
    fn end(&mut self, stats: &Stats, end: End, windows: u64) {
        match end {
            End::Delivered(bytes) => {
                self.totals.delivered += windows;
                self.overflow.clear();
                Stats::add(&stats.export_delivered, windows);
                Stats::add(&stats.export_bytes, bytes as u64);
            }
            End::Rejected => {
                self.totals.rejected += windows;
                Stats::add(&stats.export_rejected, windows);
            }
            End::Dropped => {
                self.totals.dropped += windows;
                Stats::add(&stats.export_dropped, windows);
            }
        }
    }

    /// Ends window `seq`, unless shutdown already gave up on it.
    fn end_window(&mut self, stats: &Stats, seq: u64, end: End) {
        if !self.abandoned {
            self.queue.finish(seq);
            self.end(stats, end, 1);
        }
    }
}

/// The queue and its flags, shared by the submitting side and the export thread.
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for a change, at most `timeout`.
    fn wait<'a>(&self, guard: MutexGuard<'a, State>, timeout: Duration) -> MutexGuard<'a, State> {
        match self.wake.wait_timeout(guard, timeout) {
            Ok((guard, _)) => guard,
            Err(poisoned) => poisoned.into_inner().0,
        }
    }
}

/// What [`Exporter::shutdown`] achieved with the windows outstanding when it was called:
/// `delivered + rejected + dropped == pending`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Windows queued (including one being sent) when shutdown began.
    pub pending: u64,
    /// Of those, accepted by the collector before the deadline.
    pub delivered: u64,
    /// Refused by the collector (non-retryable status).
    pub rejected: u64,
    /// Still unsent at the deadline, given up.
    pub dropped: u64,
}

/// The export thread and its queue. Dropping it without [`Exporter::shutdown`] gives up on
/// whatever is queued.
pub struct Exporter {
    shared: Arc<Shared>,
    stats: Arc<Stats>,
    url: String,
    thread: Option<JoinHandle<()>>,
}

impl Exporter {
    /// Validates `config` and starts the export thread.
    pub fn start(config: TransportConfig, stats: Arc<Stats>) -> io::Result<Exporter> {
        config
            .validate()
            .map_err(|message| io::Error::new(io::ErrorKind::InvalidInput, message))?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: WindowQueue::new(config.queue_capacity),
                totals: Totals::default(),
                closed: false,
                deadline: None,
                abandoned: false,
                finished: false,
                overflow: Throttle::new(),
            }),
            wake: Condvar::new(),
        });
        let url = config.url();
        let sender = Sender::new(config, Arc::clone(&shared), Arc::clone(&stats));
        let thread = std::thread::Builder::new()
            .name("otlp-export".into())
            .spawn(move || sender.run())?;
        Ok(Exporter {
            shared,
            stats,
            url,
            thread: Some(thread),
        })
    }

    /// The URL windows are posted to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Windows not yet delivered, rejected or dropped (queued or being sent).
    pub fn pending(&self) -> u64 {
        self.shared.lock().queue.outstanding()
    }

    /// Queues one encoded `ExportProfilesServiceRequest`; never waits for the network. A full
    /// queue drops its oldest window.
    pub fn submit(&self, payload: Vec<u8>) {
        let mut state = self.shared.lock();
        let evicted = state.queue.push(payload);
        if evicted == Evicted::Queued {
            state.end(&self.stats, End::Dropped, 1);
        }
        let log_overflow = match evicted {
            Evicted::Nothing => None,
            _ => state.overflow.note(()),
        };
        let capacity = state.queue.capacity;
        drop(state);
        self.shared.wake.notify_all();
        if let Some(n) = log_overflow {
            log::warn(&format!(
                "OTLP export queue full ({capacity} windows): dropped the oldest window \
                 ({n} since the last delivery)"
            ));
        }
    }

    /// Stops accepting windows and tries to deliver the queued ones (the one being retried
    /// first) until `deadline` has passed; what is left is counted as dropped.
    pub fn shutdown(mut self, deadline: Duration) -> ShutdownReport {
        let until = Instant::now() + deadline;
        let mut state = self.shared.lock();
        state.closed = true;
        state.deadline = Some(until);
        let before = state.totals;
        let pending = state.queue.outstanding();
        self.shared.wake.notify_all();
        while !state.finished {
            let now = Instant::now();
            if now >= until {
                break;
            }
            state = self.shared.wait(state, until - now);
        }
        if !state.finished {
            // The thread is stuck in a request: it will see `abandoned` and count nothing more.
            let left = state.queue.clear();
            state.end(&self.stats, End::Dropped, left);
            state.abandoned = true;
        }
        let (finished, after) = (state.finished, state.totals);
        drop(state);
        if let Some(thread) = self.thread.take() {
            if finished && thread.join().is_err() {
                log::error("the OTLP export thread panicked");
            }
        }
        ShutdownReport {
            pending,
            delivered: after.delivered - before.delivered,
            rejected: after.rejected - before.rejected,
            dropped: after.dropped - before.dropped,
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let mut state = self.shared.lock();
            state.closed = true;
            state.deadline = Some(Instant::now());
            drop(state);
            self.shared.wake.notify_all();
        }
    }
}

/// What one HTTP attempt means for its window.
enum Outcome {
    Ended(End),
    /// Retry, after the collector's `Retry-After` if it gave one.
    Retry(Option<Duration>),
}

/// Failure kinds, for log throttling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Status(u16),
    Connection,
    Timeout,
    PartialSuccess,
    Local,
}

/// The export thread: takes windows off the queue and sends them, one at a time.
struct Sender {
    shared: Arc<Shared>,
    stats: Arc<Stats>,
    agent: ureq::Agent,
    config: TransportConfig,
    url: String,
    rng: Rng,
    /// Retryable failures since the last response that ended a window.
    transient: Throttle<Kind>,
    /// Windows refused or partly refused since the last clean delivery.
    refusals: Throttle<Kind>,
    retries_since_ok: u64,
}

impl Sender {
    fn new(config: TransportConfig, shared: Arc<Shared>, stats: Arc<Stats>) -> Self {
        let agent_config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(config.request_timeout))
            .max_redirects(0)
            .user_agent(concat!("profiler/", env!("CARGO_PKG_VERSION")))
            .build();
        Sender {
            shared,
            stats,
            agent: ureq::Agent::new_with_config(agent_config),
            url: config.url(),
            config,
            rng: Rng::from_time(),
            transient: Throttle::new(),
            refusals: Throttle::new(),
            retries_since_ok: 0,
        }
    }

    fn run(mut self) {
        while let Some((seq, payload)) = self.next_window() {
            self.deliver(seq, &payload);
        }
        self.shared.lock().finished = true;
        self.shared.wake.notify_all();
    }

    /// Waits for a window; `None` once closed and drained, or past the shutdown deadline.
    fn next_window(&self) -> Option<(u64, Arc<Vec<u8>>)> {
        let mut state = self.shared.lock();
        loop {
            if state.abandoned {
                return None;
            }
            if state.deadline.is_some_and(|d| Instant::now() >= d) {
                let left = state.queue.clear();
                state.end(&self.stats, End::Dropped, left);
                return None;
            }
            if let Some(window) = state.queue.take() {
                return Some(window);
            }
            if state.closed {
                return None;
            }
            state = self.shared.wait(state, Duration::from_secs(3600));
        }
    }

    /// Sends window `seq` until it ends: delivered, rejected, evicted or given up.
    fn deliver(&mut self, seq: u64, payload: &[u8]) {
        let (body, gzipped) = self.encode(payload);
        let mut retry = 0;
        let mut last_chance = false;
        loop {
            let outcome = match self.attempt_timeout() {
                Some(timeout) => self.attempt(&body, gzipped, timeout),
                None => Outcome::Ended(End::Dropped),
            };
            let retry_after = match outcome {
                Outcome::Ended(end) => {
                    self.shared.lock().end_window(&self.stats, seq, end);
                    return;
                }
                Outcome::Retry(retry_after) => retry_after,
            };
            let delay = retry_after
                .unwrap_or_else(|| {
                    let base = backoff(retry, self.config.initial_backoff, self.config.max_backoff);
                    jittered(base, self.rng.unit())
                })
                .min(self.config.max_backoff);
            if !self.wait_to_retry(seq, delay, &mut last_chance) {
                return;
            }
            retry += 1;
            self.retries_since_ok += 1;
            Stats::inc(&self.stats.export_retries);
        }
    }

    /// The body to send, gzipped if configured (and if that works: else plain).
    fn encode<'a>(&self, payload: &'a [u8]) -> (Cow<'a, [u8]>, bool) {
        if !self.config.gzip {
            return (Cow::Borrowed(payload), false);
        }
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        match encoder.write_all(payload).and_then(|()| encoder.finish()) {
            Ok(compressed) => (Cow::Owned(compressed), true),
            Err(error) => {
                log::warn(&format!(
                    "gzip failed ({error}): sending the window uncompressed"
                ));
                (Cow::Borrowed(payload), false)
            }
        }
    }

    /// The time the next attempt may take: `None` once the shutdown deadline has passed.
    fn attempt_timeout(&self) -> Option<Duration> {
        let state = self.shared.lock();
        let limit = match state.deadline {
            _ if state.abandoned => return None,
            Some(deadline) => deadline.saturating_duration_since(Instant::now()),
            None => self.config.request_timeout,
        };
        (!limit.is_zero()).then(|| limit.min(self.config.request_timeout))
    }

    /// Waits `delay` before retrying window `seq`; false if the window ended meanwhile (evicted,
    /// or past the shutdown deadline). Shutdown cuts a long wait short for one last attempt.
    fn wait_to_retry(&self, seq: u64, delay: Duration, last_chance: &mut bool) -> bool {
        let mut until = Instant::now() + delay;
        let mut state = self.shared.lock();
        loop {
            if state.abandoned {
                return false;
            }
            if !state.queue.holds(seq) {
                state.end_window(&self.stats, seq, End::Dropped);
                return false;
            }
            if let Some(deadline) = state.deadline.filter(|d| until > *d) {
                if *last_chance || Instant::now() >= deadline {
                    state.end_window(&self.stats, seq, End::Dropped);
                    return false;
                }
                *last_chance = true;
                until = Instant::now();
            }
            let now = Instant::now();
            if now >= until {
                return true;
            }
            state = self.shared.wait(state, until - now);
        }
    }

    fn attempt(&mut self, body: &[u8], gzipped: bool, timeout: Duration) -> Outcome {
        Stats::inc(&self.stats.export_attempts);
        let mut request = self
            .agent
            .post(&self.url)
            .header("Content-Type", "application/x-protobuf");
        if gzipped {
            request = request.header("Content-Encoding", "gzip");
        }
        for (name, value) in &self.config.headers {
            request = request.header(name, value);
        }
        let result = request
            .config()
            .timeout_global(Some(timeout))
            .build()
            .send(body);
        match result {
            Ok(response) => self.on_response(response, body.len()),
            Err(error) => self.on_error(error),
        }
    }

    fn on_response(
        &mut self,
        mut response: ureq::http::Response<ureq::Body>,
        sent: usize,
    ) -> Outcome {
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| parse_retry_after(value, SystemTime::now()));
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE)
            .read_to_vec()
            .unwrap_or_default();
        match status {
            200..=299 => {
                self.reachable();
                self.check_partial_success(&body);
                Outcome::Ended(End::Delivered(sent))
            }
            429 | 502 | 503 | 504 => {
                self.transient_failure(Kind::Status(status), &format!("HTTP {status}"));
                Outcome::Retry(retry_after)
            }
            _ => {
                self.reachable();
                let message = format!(
                    "the collector at {} refused a window with HTTP {status} (not retried): {}",
                    self.url,
                    excerpt(&body)
                );
                self.refusal(Kind::Status(status), &message);
                Outcome::Ended(End::Rejected)
            }
        }
    }

    fn on_error(&mut self, error: ureq::Error) -> Outcome {
        let kind = match &error {
            ureq::Error::Timeout(_) => Kind::Timeout,
            ureq::Error::Io(io) if io.kind() == io::ErrorKind::TimedOut => Kind::Timeout,
            ureq::Error::Io(_)
            | ureq::Error::ConnectionFailed
            | ureq::Error::HostNotFound
            | ureq::Error::Protocol(_) => Kind::Connection,
            _ => {
                let message = format!("OTLP export to {} failed: {error} (not retried)", self.url);
                self.refusal(Kind::Local, &message);
                return Outcome::Ended(End::Rejected);
            }
        };
        self.transient_failure(kind, &error.to_string());
        Outcome::Retry(None)
    }

    fn transient_failure(&mut self, kind: Kind, what: &str) {
        let Some(n) = self.transient.note(kind) else {
            return;
        };
        let queued = self.shared.lock().queue.outstanding();
        let message = if n == 1 {
            format!(
                "OTLP export to {} failed ({what}); retrying with backoff",
                self.url
            )
        } else {
            format!(
                "OTLP export to {} still failing ({what}, {n} times in a row)",
                self.url
            )
        };
        log::warn(&format!("{message}; {queued} windows queued"));
    }

    /// A response that ends the window arrived: the collector is reachable.
    fn reachable(&mut self) {
        if self.transient.clear() > 0 {
            log::info(&format!(
                "collector reachable again after {} retries",
                self.retries_since_ok
            ));
        }
        self.retries_since_ok = 0;
    }

    fn refusal(&mut self, kind: Kind, message: &str) {
        if let Some(n) = self.refusals.note(kind) {
            let repeat = if n > 1 {
                format!(" ({n} in a row)")
            } else {
                String::new()
            };
            log::warn(&format!("{message}{repeat}"));
        }
    }

    /// Logs and counts a 2xx answer that reports rejected profiles; a clean one ends the run of
    /// refusals.
    fn check_partial_success(&mut self, body: &[u8]) {
        let response = ExportProfilesServiceResponse::decode(body).unwrap_or_else(|error| {
            log::debug(&format!(
                "undecodable OTLP export response ({error}): ignored"
            ));
            ExportProfilesServiceResponse::default()
        });
        let Some(partial) = response
            .partial_success
            .filter(|p| p.rejected_profiles > 0 || !p.error_message.is_empty())
        else {
            self.refusals.clear();
            return;
        };
        Stats::inc(&self.stats.export_partial_success);
        let message = format!(
            "the collector at {} accepted a window partly: {} profiles rejected: {}",
            self.url, partial.rejected_profiles, partial.error_message
        );
        self.refusal(Kind::PartialSuccess, &message);
    }
}

/// The start of a response body for a log line: lossy UTF-8, control characters escaped.
pub(crate) fn excerpt(body: &[u8]) -> String {
    if body.is_empty() {
        return "(empty body)".into();
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(BODY_EXCERPT)]);
    let mut out = String::new();
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if body.len() > BODY_EXCERPT {
        out.push('…');
    }
    out
}

#[cfg(test)]
#[path = "transport_tests.rs"]
mod tests;
