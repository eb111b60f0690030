//! The daemon's metrics endpoint (`--metrics ADDR`): a tiny HTTP/1.1 server on a std
//! `TcpListener`, on a thread of its own, answering `GET /metrics` with the session's counters
//! in the Prometheus text format (`exposition.rs`).
//!
//! It is built to be harmless: loopback unless told otherwise, at most [`MAX_CONNECTIONS`]
//! connections served at once (more are closed at once), a request head of at most
//! [`MAX_REQUEST`] bytes, and [`IO_TIMEOUT`] per read or write and [`CONNECTION_DEADLINE`] per
//! connection, so a slow or hostile client cannot hold it up. One request per connection.

pub mod exposition;

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Connections served at the same time.
pub const MAX_CONNECTIONS: usize = 4;
/// The largest request head read.
pub const MAX_REQUEST: usize = 8 * 1024;
/// The longest one read or write may wait.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a connection may take in all.
pub const CONNECTION_DEADLINE: Duration = Duration::from_secs(10);

/// What the server answers `/metrics` with: the text, computed at each request.
pub type Render = dyn Fn() -> String + Send + Sync;

/// Parses `--metrics`: `HOST:PORT` with an IP address or `localhost`, or just `PORT` (or
/// `:PORT`), which listens on 127.0.0.1.
pub fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    let bad = || {
        format!(
            "invalid --metrics {text:?}: expected PORT or ADDRESS:PORT, e.g. 127.0.0.1:9464 \
             (0.0.0.0:9464 to listen on every interface)"
        )
    };
    let port_only = text.strip_prefix(':').unwrap_or(text);
    if let Ok(port) = port_only.parse::<u16>() {
        return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    }
    if let Some(port) = text.strip_prefix("localhost:") {
        let port = port.parse::<u16>().map_err(|_| bad())?;
        return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    }
    text.parse().map_err(|_| bad())
}

/// A running metrics server; [`MetricsServer::stop`] ends it.
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Listens on `addr` and serves `render`'s text from a thread of its own.
    pub fn start(addr: SocketAddr, render: Box<Render>) -> io::Result<MetricsServer> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let render: Arc<Render> = Arc::from(render);
        let thread = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || accept_loop(listener, &flag, render))?;
        Ok(MetricsServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The address it listens on (with the port chosen when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting connections and waits for the accepting thread.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept with a connection of our own.
        let _ = TcpStream::connect_timeout(&self.addr, IO_TIMEOUT);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn accept_loop(listener: TcpListener, stop: &AtomicBool, render: Arc<Render>) {
    let active = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else {
            // A connection that failed before it was accepted (reset, out of descriptors):
            // wait a little instead of spinning.
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::SeqCst);
            let _ = stream.shutdown(Shutdown::Both);
            continue;
        }
        let (slot, render) = (Arc::clone(&active), Arc::clone(&render));
        let spawned = std::thread::Builder::new()
            .name("metrics-conn".into())
            .spawn(move || {
                let _ = serve(stream, render.as_ref());
                slot.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            active.fetch_sub(1, Ordering::SeqCst);
            crate::log::warn("metrics: cannot start a connection thread");
        }
    }
}

/// Reads one request and answers it.
fn serve(mut stream: TcpStream, render: &Render) -> io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let head = read_head(&mut stream)?;
    let (status, content_type, body) = respond(&head, render);
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(response.as_bytes())?;
    if !head.starts_with("HEAD ") {
        stream.write_all(body.as_bytes())?;
    }
    stream.flush()?;
    stream.shutdown(Shutdown::Write)
}

/// The request head, up to the empty line (at most [`MAX_REQUEST`] bytes, within
/// [`CONNECTION_DEADLINE`]).
fn read_head(stream: &mut TcpStream) -> io::Result<String> {
    let started = Instant::now();
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        if head.len() > MAX_REQUEST || started.elapsed() > CONNECTION_DEADLINE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request too long",
            ));
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// (status line, content type, body) for a request head.
fn respond(head: &str, render: &Render) -> (&'static str, &'static str, String) {
    let mut words = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    const TEXT: &str = "text/plain; charset=utf-8";
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => ("200 OK", exposition::CONTENT_TYPE, render()),
        ("GET" | "HEAD", "/") => (
            "200 OK",
            TEXT,
            "profiler daemon: the counters are at /metrics\n".into(),
        ),
        ("GET" | "HEAD", _) => ("404 Not Found", TEXT, "not found: try /metrics\n".into()),
        _ => ("405 Method Not Allowed", TEXT, "only GET and HEAD\n".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_default_to_loopback() {
        let local = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        assert_eq!(parse_addr("9464"), Ok(local(9464)));
        assert_eq!(parse_addr(":9464"), Ok(local(9464)));
        assert_eq!(parse_addr("localhost:9464"), Ok(local(9464)));
        assert_eq!(parse_addr("0.0.0.0:1").unwrap().to_string(), "0.0.0.0:1");
        assert_eq!(parse_addr("[::1]:9464").unwrap().to_string(), "[::1]:9464");
        for bad in ["", "host:9464", "127.0.0.1", "70000", "localhost:x"] {
            assert!(
                parse_addr(bad).unwrap_err().contains("invalid --metrics"),
                "{bad}"
            );
        }
    }

    fn get(addr: SocketAddr, request: &str) -> String {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    }

    #[test]
    fn serves_metrics_and_refuses_the_rest() {
        let render: Box<Render> = Box::new(|| "# HELP x y\n# TYPE x gauge\nx 1\n".to_string());
        let server = MetricsServer::start("127.0.0.1:0".parse().unwrap(), render).unwrap();
        let addr = server.local_addr();
        let answer = get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(
            answer.contains("Content-Type: text/plain; version=0.0.4"),
            "{answer}"
        );
        assert!(
            answer.ends_with("\r\n\r\n# HELP x y\n# TYPE x gauge\nx 1\n"),
            "{answer}"
        );
        let head = get(addr, "HEAD /metrics HTTP/1.1\r\n\r\n");
        assert!(
            head.ends_with("Content-Length: 30\r\nConnection: close\r\n\r\n"),
            "{head}"
        );
        assert!(get(addr, "GET /nope HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(get(addr, "POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        let huge = format!(
            "GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(MAX_REQUEST * 2)
        );
        let mut stream = TcpStream::connect(addr).unwrap();
        let _ = stream.write_all(huge.as_bytes());
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        assert!(
            answer.is_empty(),
            "an oversized request is closed unanswered"
        );
        server.stop();
        // Stopped: nothing serves these metrics there any more. A connection alone proves
        // nothing (a test running alongside may have been given the freed port).
        if let Ok(mut stream) = TcpStream::connect(addr) {
            stream
                .set_read_timeout(Some(std::time::Duration::from_secs(1)))
                .unwrap();
            let _ = stream.write_all(b"GET /metrics HTTP/1.1\r\n\r\n");
            let mut answer = String::new();
            let _ = stream.read_to_string(&mut answer);
            assert!(!answer.contains("x 1"), "still served after stop: {answer}");
        }
    }
}
