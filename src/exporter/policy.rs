//! The OTLP/HTTP transport's pure policy pieces: the retry delay (exponential backoff, jitter, a
//! small PRNG to draw it, `Retry-After` parsing), throttling of repeated log lines, the bounded
//! drop-oldest queue of windows, and the excerpt of a response body a warning quotes. Nothing
//! here blocks, sleeps or touches the network; the export thread that uses them is [`super`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A failure repeated in a row is logged the first time and then every this many times.
const LOG_EVERY: u64 = 10;

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

    pub(crate) fn from_time() -> Self {
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
    pub(crate) capacity: usize,
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

/// How much of a rejected request's response body a warning quotes.
pub(super) const BODY_EXCERPT: usize = 200;

/// The start of a response body for a log line: lossy UTF-8, control characters escaped.
pub(super) fn excerpt(body: &[u8]) -> String {
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
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let delays: Vec<_> = (0..8).map(|retry| backoff(retry, S(1), S(30))).collect();
        assert_eq!(delays, [S(1), S(2), S(4), S(8), S(16), S(30), S(30), S(30)]);
        assert_eq!(backoff(100, S(1), S(30)), S(30));
        assert_eq!(backoff(u32::MAX, Duration::from_millis(1), S(5)), S(5));
        assert_eq!(backoff(0, S(10), S(3)), S(3));
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        assert_eq!(jittered(S(10), 0.0), S(8));
        assert_eq!(jittered(S(10), 0.5), S(10));
        assert!(jittered(S(10), 0.999_999) < S(12));
        assert!(jittered(S(10), 0.999_999) > Duration::from_millis(11_999));
        assert_eq!(
            jittered(S(10), 7.0),
            S(12),
            "out-of-range units are clamped"
        );
    }

    #[test]
    fn rng_is_uniform_enough_and_seed_dependent() {
        let mut rng = Rng::new(0);
        let units: Vec<f64> = (0..10_000).map(|_| rng.unit()).collect();
        assert!(units.iter().all(|u| (0.0..1.0).contains(u)));
        let mean = units.iter().sum::<f64>() / units.len() as f64;
        assert!((0.45..0.55).contains(&mean), "mean {mean}");
        let low = units.iter().filter(|u| **u < 0.2).count();
        assert!((1_700..2_300).contains(&low), "{low} below 0.2");
        assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
        assert_eq!(Rng::new(7).next_u64(), Rng::new(7).next_u64());
    }

    #[test]
    fn retry_after_seconds() {
        let now = SystemTime::now();
        assert_eq!(parse_retry_after("1", now), Some(S(1)));
        assert_eq!(parse_retry_after(" 120 ", now), Some(S(120)));
        assert_eq!(parse_retry_after("0", now), Some(Duration::ZERO));
        for bad in ["", "-1", "1.5", "soon", "1s"] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn retry_after_http_date() {
        // 1994-11-06T08:49:37Z is 784111777 s after the epoch.
        let date = UNIX_EPOCH + S(784_111_777);
        let value = "Sun, 06 Nov 1994 08:49:37 GMT";
        assert_eq!(parse_http_date(value), Some(date));
        assert_eq!(parse_retry_after(value, date - S(90)), Some(S(90)));
        assert_eq!(parse_retry_after(value, date + S(5)), Some(Duration::ZERO));
        assert_eq!(
            parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"),
            Some(UNIX_EPOCH)
        );
        assert_eq!(
            parse_http_date("Tue, 29 Feb 2028 23:59:59 GMT"),
            Some(UNIX_EPOCH + S(1_835_481_599))
        );
        let obsolete = [
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 06 Nov 1994 25:49:37 GMT",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49 GMT",
            "Wed, 31 Dec 1969 23:59:59 GMT",
        ];
        for value in obsolete {
            assert_eq!(parse_http_date(value), None, "{value}");
        }
    }

    #[test]
    fn throttle_logs_first_and_every_tenth_of_a_run() {
        let mut throttle = Throttle::new();
        let logged: Vec<u64> = (0..25).filter_map(|_| throttle.note("refused")).collect();
        assert_eq!(logged, [1, 10, 20]);
        assert_eq!(
            throttle.note("timeout"),
            Some(1),
            "a new kind starts a new run"
        );
        assert_eq!(throttle.note("refused"), Some(1));
        assert_eq!(throttle.clear(), 1);
        assert_eq!(throttle.clear(), 0);
        assert_eq!(throttle.note("refused"), Some(1));
    }

    fn take_all(queue: &mut WindowQueue) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some((seq, payload)) = queue.take() {
            out.push(payload[0]);
            queue.finish(seq);
        }
        out
    }

    #[test]
    fn queue_drops_the_oldest_when_full() {
        let mut queue = WindowQueue::new(2);
        assert_eq!(queue.push(vec![1]), Evicted::Nothing);
        assert_eq!(queue.push(vec![2]), Evicted::Nothing);
        assert_eq!(queue.push(vec![3]), Evicted::Queued);
        assert_eq!(queue.outstanding(), 2);
        assert_eq!(take_all(&mut queue), [2, 3]);
        assert_eq!(queue.outstanding(), 0);
    }

    #[test]
    fn queue_counts_the_window_in_flight() {
        let mut queue = WindowQueue::new(2);
        queue.push(vec![1]);
        let (first, _) = queue.take().expect("a window");
        queue.push(vec![2]);
        assert!(queue.holds(first));
        assert_eq!(
            queue.push(vec![3]),
            Evicted::InFlight,
            "the window being retried is the oldest"
        );
        assert!(!queue.holds(first));
        assert_eq!(
            queue.outstanding(),
            3,
            "the evicted attempt has not ended yet"
        );
        queue.finish(first);
        assert_eq!(queue.outstanding(), 2);
        assert_eq!(take_all(&mut queue), [2, 3]);
    }

    #[test]
    fn queue_outage_keeps_the_newest_windows_in_order() {
        // Window 1 is being retried while 2..=5 arrive: 1, 2 and 3 go, in that order.
        let mut queue = WindowQueue::new(2);
        queue.push(vec![1]);
        let (mut current, _) = queue.take().expect("a window");
        let mut evictions = Vec::new();
        for n in 2..=5 {
            let evicted = queue.push(vec![n]);
            if evicted == Evicted::InFlight {
                queue.finish(current);
                current = queue.take().expect("a window").0;
            }
            evictions.push(evicted);
        }
        use Evicted::{InFlight, Nothing};
        assert_eq!(evictions, [Nothing, InFlight, InFlight, InFlight]);
        assert_eq!(take_all(&mut queue), [4, 5]);
    }

    #[test]
    fn queue_clear_counts_what_had_not_ended() {
        let mut queue = WindowQueue::new(1);
        queue.push(vec![1]);
        queue.take();
        assert_eq!(queue.push(vec![2]), Evicted::InFlight);
        assert_eq!(queue.clear(), 2);
        assert_eq!(queue.outstanding(), 0);
        assert!(queue.take().is_none());
    }
}
