//! Unit tests of the transport's pure pieces: URLs, validation, backoff, `Retry-After`, the PRNG,
//! log throttling and the drop-oldest queue. The HTTP path is tested in `tests/transport.rs`.

use super::*;

const S: fn(u64) -> Duration = Duration::from_secs;

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
    config.queue_capacity = 0;
    assert!(config.validate().unwrap_err().contains("queue capacity"));
    let mut config = TransportConfig::new("http://h");
    config.request_timeout = Duration::ZERO;
    assert!(config.validate().unwrap_err().contains("request timeout"));
}

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

#[test]
fn excerpt_is_short_and_printable() {
    assert_eq!(excerpt(b""), "(empty body)");
    assert_eq!(excerpt(b"bad request\n"), "bad request\\n");
    let long = vec![b'x'; 500];
    let text = excerpt(&long);
    assert_eq!(text.chars().filter(|c| *c == 'x').count(), BODY_EXCERPT);
    assert!(text.ends_with('…'));
    assert_eq!(excerpt(&[0xff, b'a']), "\u{fffd}a");
}
