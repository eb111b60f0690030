//! The exporter thread (OTLP/HTTP transport): ships encoded `ExportProfilesServiceRequest`s to a collector from a
//! thread of its own, so a slow or unreachable collector never stalls aggregation.
//!
//! This module owns the export thread, the HTTP exchange (`POST {endpoint}/v1development/profiles`,
//! protobuf, optional gzip, extra headers, HTTPS through ureq's rustls) and the retry decision:
//! 429/502/503/504 and connection failures are retried with exponential backoff and jitter,
//! honouring `Retry-After`; every other failure status is final. The pure helpers (delays, log
//! throttling, the window queue) are in `policy.rs`, [`TransportConfig`] and its validation
//! in `config.rs`, the header sources in `headers.rs` and the `OTEL_*` environment in
//! `otel_env.rs`. It does not build payloads (that is [`crate::encode::otlp`]).
//!
//! The queue holds at most `queue_capacity` windows, counting the one being sent or retried; when
//! a new window arrives at a full queue the oldest goes, even if it is the one being retried, so
//! that recent data wins after an outage. Every window ends exactly once in one of the counters
//! `export_delivered`, `export_rejected` or `export_dropped`.

mod config;
pub mod headers;
pub mod otel_env;
mod policy;

use std::borrow::Cow;
use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use flate2::write::GzEncoder;
use flate2::Compression;
use prost::Message;

use crate::log;
use crate::proto::otlp::ExportProfilesServiceResponse;
use crate::stats::Stats;
#[cfg(test)]
use policy::BODY_EXCERPT;
use policy::{backoff, excerpt, jittered, parse_retry_after, Evicted, Rng, Throttle, WindowQueue};

pub use config::{profiles_url, validate_headers, TransportConfig, PROFILES_PATH};

/// The most of a response body read: a collector's answer is a few bytes.
const MAX_RESPONSE: u64 = 64 * 1024;

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
    /// The extra headers of the next request ([`Exporter::set_headers`] replaces them).
    headers: Arc<Vec<(String, String)>>,
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
        self.show_depth(stats);
    }

    fn show_depth(&self, stats: &Stats) {
        Stats::set(&stats.export_queue_depth, self.queue.outstanding());
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
                headers: Arc::new(config.headers.clone()),
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
        state.show_depth(&self.stats);
        drop(state);
        self.shared.wake.notify_all();
        if let Some(n) = log_overflow {
            log::warn(&format!(
                "OTLP export queue full ({capacity} windows): dropped the oldest window \
                 ({n} since the last delivery)"
            ));
        }
    }

    /// Replaces the extra headers from the next request on (a re-read header file), after
    /// checking them as [`TransportConfig::validate`] does.
    pub fn set_headers(&self, headers: Vec<(String, String)>) -> Result<(), String> {
        validate_headers(&headers)?;
        self.shared.lock().headers = Arc::new(headers);
        Ok(())
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
        let headers = Arc::clone(&self.shared.lock().headers);
        for (name, value) in headers.iter() {
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

#[cfg(test)]
mod tests;
