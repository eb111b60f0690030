//! A loopback OTLP/HTTP collector stand-in for integration tests: a std `TcpListener` on
//! 127.0.0.1 answering HTTP/1.1 from a scripted plan, recording every request it gets.
//!
//! One request per connection (every response says `Connection: close`), each connection on a
//! thread of its own, so a reply scripted to hang does not hold up the next request. Bodies are
//! read by `Content-Length` (or chunked), and gzip bodies are decoded before they are recorded.
//! After its plan runs out the receiver answers `200` with an empty
//! `ExportProfilesServiceResponse`. [`Receiver::stop`] closes the listener, so connections are
//! refused until [`Receiver::restart`] binds the same port again.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flate2::read::GzDecoder;
use prost::Message;

use profiler::proto::otlp::{
    ExportProfilesPartialSuccess, ExportProfilesServiceRequest, ExportProfilesServiceResponse,
};

/// How long a connection may stay silent before the receiver gives up on it.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the accept loop looks at the stop flag.
const POLL: Duration = Duration::from_millis(5);

/// One scripted answer.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Wait this long before answering (to make the client time out).
    pub delay: Duration,
}

impl Reply {
    /// An answer with `status`, no extra headers and an empty body.
    pub fn new(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            delay: Duration::ZERO,
        }
    }

    /// `200` with an empty `ExportProfilesServiceResponse` (what follows the plan).
    pub fn ok() -> Reply {
        let response = ExportProfilesServiceResponse::default();
        Reply::new(200)
            .header("Content-Type", "application/x-protobuf")
            .body(response.encode_to_vec())
    }

    /// `200` reporting `rejected` profiles in `partial_success`.
    pub fn partial_success(rejected: i64, message: &str) -> Reply {
        let response = ExportProfilesServiceResponse {
            partial_success: Some(ExportProfilesPartialSuccess {
                rejected_profiles: rejected,
                error_message: message.into(),
            }),
        };
        Reply::ok().body(response.encode_to_vec())
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Reply {
        self.body = body.into();
        self
    }

    pub fn delay(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

/// One request as received.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// The body, gzip-decoded when `Content-Encoding: gzip`.
    pub body: Vec<u8>,
    /// The body's size on the wire.
    pub wire_len: usize,
    /// The status the receiver answered with.
    pub status: u16,
    /// When the request was complete.
    pub at: Instant,
}

impl Request {
    /// The value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as an OTLP export request.
    pub fn export_request(&self) -> Result<ExportProfilesServiceRequest, prost::DecodeError> {
        ExportProfilesServiceRequest::decode(self.body.as_slice())
    }
}

/// A running (or stopped) receiver; `addr` stays the same across [`Receiver::restart`].
pub struct Receiver {
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<Request>>>,
    server: Option<Server>,
}

struct Server {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Receiver {
    /// Starts on a free loopback port.
    pub fn start(plan: Vec<Reply>) -> Receiver {
        Receiver::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), plan)
            .expect("bind a loopback port")
    }

    /// Starts on `addr` (port 0 for any), with a fresh request log.
    pub fn start_on(addr: SocketAddr, plan: Vec<Reply>) -> io::Result<Receiver> {
        let log = Arc::new(Mutex::new(Vec::new()));
        let (addr, server) = serve(addr, plan, Arc::clone(&log))?;
        Ok(Receiver {
            addr,
            log,
            server: Some(server),
        })
    }

    /// The base URL to give the exporter (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes the listener: connections are refused from now on.
    pub fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop.store(true, Ordering::Relaxed);
            let _ = server.thread.join();
        }
    }

    /// Listens on the same address again with a new plan, keeping the request log.
    pub fn restart(&mut self, plan: Vec<Reply>) -> io::Result<()> {
        self.stop();
        let (_, server) = serve(self.addr, plan, Arc::clone(&self.log))?;
        self.server = Some(server);
        Ok(())
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits until at least `n` requests arrived (at most `timeout`); returns them all.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Request> {
        let until = Instant::now() + timeout;
        loop {
            let requests = self.requests();
            if requests.len() >= n || Instant::now() >= until {
                return requests;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Binds `addr` (retrying briefly: a port just closed may still be busy) and starts serving.
fn serve(
    addr: SocketAddr,
    plan: Vec<Reply>,
    log: Arc<Mutex<Vec<Request>>>,
) -> io::Result<(SocketAddr, Server)> {
    let deadline = Instant::now() + Duration::from_secs(2);
    let listener = loop {
        match TcpListener::bind(addr) {
            Ok(listener) => break listener,
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e),
        }
    };
    let addr = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let plan = Arc::new(Mutex::new(VecDeque::from(plan)));
    let thread = std::thread::Builder::new()
        .name("otlp-receiver".into())
        .spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (plan, log, flag) = (plan.clone(), log.clone(), flag.clone());
                        // A connection of its own thread: a hung reply does not block the next.
                        std::thread::spawn(move || {
                            if let Err(e) = handle(stream, &plan, &log, &flag) {
                                eprintln!("receiver: connection failed: {e}");
                            }
                        });
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(POLL),
                    Err(e) => {
                        eprintln!("receiver: accept failed: {e}");
                        std::thread::sleep(POLL);
                    }
                }
            }
        })?;
    Ok((addr, Server { stop, thread }))
}

/// Reads one request, records it, then answers with the next reply of `plan` and closes the
/// connection. A connection closed before a full request arrived is not recorded, and uses up
/// no reply.
fn handle(
    stream: TcpStream,
    plan: &Mutex<VecDeque<Reply>>,
    log: &Mutex<Vec<Request>>,
    stop: &AtomicBool,
) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let Some(mut request) = read_request(&mut reader)? else {
        return Ok(());
    };
    // Plan and log advance together, so replies go out in the order requests arrived.
    let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
    let reply = plan
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .pop_front()
        .unwrap_or_else(Reply::ok);
    request.status = reply.status;
    log.push(request);
    drop(log);
    let until = Instant::now() + reply.delay;
    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(POLL);
    }
    write_response(stream, &reply)
}

fn read_request(reader: &mut impl BufRead) -> io::Result<Option<Request>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (method, path) = match (parts.next(), parts.next()) {
        (Some(method), Some(path)) => (method.to_string(), path.to_string()),
        _ => return Err(invalid(format!("bad request line {line:?}"))),
    };
    let mut headers = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let header = line.trim_end_matches(['\r', '\n']);
        if header.is_empty() {
            break;
        }
        let (name, value) = header
            .split_once(':')
            .ok_or_else(|| invalid(format!("bad header line {header:?}")))?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    let mut request = Request {
        method,
        path,
        headers,
        body: Vec::new(),
        wire_len: 0,
        status: 0,
        at: Instant::now(),
    };
    let wire = read_body(reader, &request)?;
    request.wire_len = wire.len();
    request.body = match request.header("Content-Encoding") {
        Some(encoding) if encoding.eq_ignore_ascii_case("gzip") => {
            let mut decoded = Vec::new();
            GzDecoder::new(wire.as_slice()).read_to_end(&mut decoded)?;
            decoded
        }
        _ => wire,
    };
    request.at = Instant::now();
    Ok(Some(request))
}

fn read_body(reader: &mut impl BufRead, request: &Request) -> io::Result<Vec<u8>> {
    let chunked = request
        .header("Transfer-Encoding")
        .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
    if chunked {
        return read_chunked(reader);
    }
    let length = match request.header("Content-Length") {
        Some(value) => value
            .parse::<usize>()
            .map_err(|_| invalid(format!("bad Content-Length {value:?}")))?,
        None => 0,
    };
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(body)
}

fn read_chunked(reader: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let size = line.trim().split(';').next().unwrap_or("");
        let size = usize::from_str_radix(size, 16)
            .map_err(|_| invalid(format!("bad chunk size {line:?}")))?;
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                line.clear();
                if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        line.clear();
        reader.read_line(&mut line)?;
    }
}

fn write_response(mut stream: TcpStream, reply: &Reply) -> io::Result<()> {
    let mut head = format!("HTTP/1.1 {} {}\r\n", reply.status, reason(reply.status));
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        reply.body.len()
    ));
    stream.write_all(head.as_bytes())?;
    stream.write_all(&reply.body)?;
    stream.flush()?;
    // The client may still be sending when it is answered early; ignore that.
    let _ = stream.shutdown(std::net::Shutdown::Write);
    Ok(())
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}
