//! Self-test for the fault-injecting proxy in `support/fault_proxy.rs`.
//!
//! A tiny std-only HTTP/1.1 backend stands in for the registry here (the real one is started by the
//! registry harness), and a tiny std-only client talks to the proxy so that truncation, stalls and
//! connection reuse can be observed exactly.

use crate::support::fault_proxy;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use fault_proxy::{Fault, FaultProxy, Rule};

const BLOB_LEN: usize = 1 << 20;
const CHUNKED_LEN: usize = 100_000;
const EOF_LEN: usize = 50_000;

/// 1 MiB of deterministic pseudo-random bytes.
fn blob() -> &'static [u8] {
    static BLOB: OnceLock<Vec<u8>> = OnceLock::new();
    BLOB.get_or_init(|| {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        (0..BLOB_LEN)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    })
}

// ---------------------------------------------------------------------------------------------------
// Shared HTTP bits for the test backend and client.

type Headers = Vec<(String, String)>;

/// Reads a start line and headers; None if the connection closed before a message began.
fn read_head(r: &mut impl BufRead) -> io::Result<Option<(String, Headers)>> {
    let mut start = None;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return match start {
                None => Ok(None),
                Some(_) => Err(io::ErrorKind::UnexpectedEof.into()),
            };
        }
        let line = line.trim_end_matches(['\r', '\n']);
        match (&start, line.is_empty()) {
            (None, true) => {}
            (None, false) => start = Some(line.to_string()),
            (Some(_), false) => {
                let (name, value) = line.split_once(':').expect("header line");
                headers.push((name.trim().to_string(), value.trim().to_string()));
            }
            (Some(_), true) => return Ok(Some((start.unwrap(), headers))),
        }
    }
}

fn find<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

// ---------------------------------------------------------------------------------------------------
// Test backend.

/// A request as the backend saw it.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    headers: Headers,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        find(&self.headers, name)
    }
}

struct Backend {
    host: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
}

impl Backend {
    /// Serves `/blob` (with `Range: bytes=N-`), `/chunked`, `/eof` (read-to-EOF body), `/redirect` (307)
    /// and `/echo` (POST body echoed) on an ephemeral port, with keep-alive.
    fn start() -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let (seen2, connections2, host2) = (seen.clone(), connections.clone(), host.clone());
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                connections2.fetch_add(1, Ordering::SeqCst);
                let (seen, host) = (seen2.clone(), host2.clone());
                thread::spawn(move || {
                    let _ = backend_conn(stream, &seen, &host);
                });
            }
        });
        Backend {
            host,
            seen,
            connections,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn backend_conn(stream: TcpStream, seen: &Mutex<Vec<Seen>>, host: &str) -> io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    while let Some((start, headers)) = read_head(&mut reader)? {
        let mut parts = start.split(' ');
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("").to_string();
        let mut req_body = vec![0; find(&headers, "content-length").map_or(0, |v| v.parse().unwrap())];
        reader.read_exact(&mut req_body)?;
        let close = find(&headers, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let range = find(&headers, "range").map(str::to_string);
        seen.lock().unwrap().push(Seen {
            method: method.clone(),
            path: path.clone(),
            headers,
        });
        let head_only = method == "HEAD";
        let conn = if close { "Connection: close\r\n" } else { "" };
        match path.as_str() {
            "/blob" => {
                let from = range
                    .as_deref()
                    .and_then(|r| r.strip_prefix("bytes=")?.strip_suffix('-')?.parse::<usize>().ok());
                let (status, extra, body) = match from {
                    Some(n) => (
                        "206 Partial Content",
                        format!("Content-Range: bytes {n}-{}/{BLOB_LEN}\r\n", BLOB_LEN - 1),
                        &blob()[n..],
                    ),
                    None => ("200 OK", String::new(), blob()),
                };
                write!(
                    out,
                    "HTTP/1.1 {status}\r\nContent-Type: application/octet-stream\r\n{extra}\
                     Content-Length: {}\r\n{conn}\r\n",
                    body.len()
                )?;
                if !head_only {
                    out.write_all(body)?;
                }
            }
            "/chunked" => {
                write!(out, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n{conn}\r\n")?;
                let body = &blob()[..CHUNKED_LEN];
                let mut at = 0;
                for (i, size) in [1, 999, 7, 30_000, CHUNKED_LEN - 31_007].into_iter().enumerate() {
                    // One chunk carries an extension, which must be tolerated.
                    let ext = if i == 2 { ";name=value" } else { "" };
                    write!(out, "{size:x}{ext}\r\n")?;
                    out.write_all(&body[at..at + size])?;
                    out.write_all(b"\r\n")?;
                    at += size;
                }
                out.write_all(b"0\r\nX-Trailer: yes\r\n\r\n")?;
            }
            "/eof" => {
                write!(out, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")?;
                out.write_all(&blob()[..EOF_LEN])?;
                return Ok(());
            }
            "/redirect" => {
                write!(
                    out,
                    "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://{host}/blob\r\nContent-Length: 0\r\n{conn}\r\n"
                )?;
            }
            "/echo" => {
                write!(
                    out,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n{conn}\r\n",
                    req_body.len()
                )?;
                out.write_all(&req_body)?;
            }
            _ => {
                write!(
                    out,
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 10\r\n{conn}\r\nnot found\n"
                )?;
            }
        }
        out.flush()?;
        if close {
            return Ok(());
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// Test client.

#[derive(Debug)]
struct Response {
    status: u16,
    headers: Headers,
    body: Vec<u8>,
    /// Set when the body could not be read completely; `body` then holds what arrived.
    body_error: Option<io::ErrorKind>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        find(&self.headers, name)
    }
}

/// One keep-alive client connection.
struct Client {
    reader: BufReader<TcpStream>,
    out: TcpStream,
}

impl Client {
    fn connect(host: &str) -> Client {
        let out = TcpStream::connect(host).unwrap();
        out.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Client {
            reader: BufReader::new(out.try_clone().unwrap()),
            out,
        }
    }

    fn get(&mut self, path: &str) -> Response {
        self.request("GET", path, &[]).unwrap()
    }

    fn request(&mut self, method: &str, path: &str, headers: &[(&str, &str)]) -> io::Result<Response> {
        self.request_with_body(method, path, headers, b"")
    }

    fn request_with_body(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Response> {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: registry.test\r\n");
        for (name, value) in headers {
            req += &format!("{name}: {value}\r\n");
        }
        if !body.is_empty() {
            req += &format!("Content-Length: {}\r\n", body.len());
        }
        req += "\r\n";
        self.out.write_all(req.as_bytes())?;
        self.out.write_all(body)?;
        let (start, headers) = read_head(&mut self.reader)?.ok_or(io::ErrorKind::UnexpectedEof)?;
        // Strict on purpose: stray body bytes left over from an earlier response would show up here.
        let status = start
            .strip_prefix("HTTP/1.1 ")
            .and_then(|s| s.get(..3)?.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {start:?}"));
        let mut resp = Response {
            status,
            headers,
            body: Vec::new(),
            body_error: None,
        };
        if method != "HEAD" {
            if let Err(e) = self.read_body(&mut resp) {
                resp.body_error = Some(e.kind());
            }
        }
        Ok(resp)
    }

    fn read_body(&mut self, resp: &mut Response) -> io::Result<()> {
        if resp.header("transfer-encoding") == Some("chunked") {
            loop {
                let mut line = String::new();
                if self.reader.read_line(&mut line)? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                let size = usize::from_str_radix(line.trim_end().split(';').next().unwrap(), 16).unwrap();
                if size == 0 {
                    // Skip the trailer section, up to its empty line.
                    loop {
                        let mut trailer = String::new();
                        if self.reader.read_line(&mut trailer)? == 0 || trailer.trim_end().is_empty() {
                            return Ok(());
                        }
                    }
                }
                self.read_n(size, &mut resp.body)?;
                self.read_n(2, &mut Vec::new())?;
            }
        } else if let Some(len) = resp.header("content-length") {
            self.read_n(len.parse().unwrap(), &mut resp.body)
        } else {
            self.reader.read_to_end(&mut resp.body).map(drop)
        }
    }

    /// Appends exactly `n` bytes to `buf`, keeping whatever arrived if the stream ends or fails early.
    fn read_n(&mut self, n: usize, buf: &mut Vec<u8>) -> io::Result<()> {
        let mut piece = [0; 16 * 1024];
        let mut left = n;
        while left > 0 {
            let want = left.min(piece.len());
            let k = self.reader.read(&mut piece[..want])?;
            if k == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            buf.extend_from_slice(&piece[..k]);
            left -= k;
        }
        Ok(())
    }
}

fn setup() -> (Backend, FaultProxy) {
    let backend = Backend::start();
    let proxy = FaultProxy::start(&backend.host);
    (backend, proxy)
}

/// [`setup`] with `rules` on the proxy, and a client connected to it.
fn connected<const N: usize>(rules: [Rule; N]) -> (Backend, FaultProxy, Client) {
    let (backend, proxy) = setup();
    for rule in rules {
        proxy.add_rule(rule);
    }
    let client = Client::connect(&proxy.host());
    (backend, proxy, client)
}

// ---------------------------------------------------------------------------------------------------
// Tests.

#[test]
fn forwards_get_and_head_byte_exact_over_one_keep_alive_connection() {
    let (backend, _proxy, mut client) = connected([]);

    let resp = client.get("/blob");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-length"), Some(BLOB_LEN.to_string().as_str()));
    assert_eq!(resp.header("content-type"), Some("application/octet-stream"));
    assert!(resp.body == blob(), "body differs");

    let resp = client.request("HEAD", "/blob", &[]).unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-length"), Some(BLOB_LEN.to_string().as_str()));

    // Had the HEAD response carried body bytes, this response would be garbled.
    let resp = client.get("/blob");
    assert_eq!(resp.status, 200);
    assert!(resp.body == blob(), "body differs after HEAD");

    let resp = client.get("/missing");
    assert_eq!((resp.status, resp.body.as_slice()), (404, &b"not found\n"[..]));

    // One client connection, but a fresh backend connection per request, with Host rewritten.
    assert_eq!(backend.connections.load(Ordering::SeqCst), 4);
    let seen = backend.seen();
    let requests: Vec<(&str, &str)> = seen
        .iter()
        .map(|s| (s.method.as_str(), s.path.as_str()))
        .collect();
    assert_eq!(
        requests,
        [
            ("GET", "/blob"),
            ("HEAD", "/blob"),
            ("GET", "/blob"),
            ("GET", "/missing")
        ]
    );
    for seen in seen {
        assert_eq!(seen.header("host"), Some(backend.host.as_str()));
        assert_eq!(seen.header("connection"), Some("close"));
    }
}

#[test]
fn forwards_request_bodies() {
    let (_backend, _proxy, mut client) = connected([]);
    let resp = client
        .request_with_body("POST", "/echo", &[], b"hello, registry")
        .unwrap();
    assert_eq!(
        (resp.status, resp.body.as_slice()),
        (200, &b"hello, registry"[..])
    );
    assert_eq!(client.get("/blob").body.len(), BLOB_LEN);
}

#[test]
fn serves_concurrent_connections() {
    let (_backend, proxy) = setup();
    let host = proxy.host();
    let workers: Vec<_> = (0..4)
        .map(|i| {
            let host = host.clone();
            thread::spawn(move || {
                let mut client = Client::connect(&host);
                for _ in 0..2 {
                    let from = i * 1000;
                    let range = format!("bytes={from}-");
                    let resp = client.request("GET", "/blob", &[("Range", &range)]).unwrap();
                    assert_eq!(resp.status, 206);
                    assert!(resp.body == blob()[from..], "body differs");
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    assert_eq!(proxy.requests().len(), 8);
}

#[test]
fn passes_ranges_through() {
    let (_backend, proxy, mut client) = connected([]);
    let resp = client
        .request("GET", "/blob", &[("Range", "bytes=1000-")])
        .unwrap();
    assert_eq!(resp.status, 206);
    assert_eq!(
        resp.header("content-range"),
        Some(format!("bytes 1000-{}/{BLOB_LEN}", BLOB_LEN - 1).as_str())
    );
    assert!(resp.body == blob()[1000..], "body differs");
    assert_eq!(proxy.requests()[0].range.as_deref(), Some("bytes=1000-"));
}

#[test]
fn passes_chunked_and_read_to_eof_bodies_through() {
    let (_backend, proxy, mut client) = connected([]);
    let resp = client.get("/chunked");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("transfer-encoding"), Some("chunked"));
    assert_eq!(resp.body_error, None);
    assert!(resp.body == blob()[..CHUNKED_LEN], "chunked body differs");

    // Still usable after a chunked response; a read-to-EOF response then ends the connection.
    let resp = client.get("/eof");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("connection"), Some("close"));
    assert_eq!(resp.body_error, None);
    assert!(resp.body == blob()[..EOF_LEN], "eof body differs");
    assert!(client.request("GET", "/blob", &[]).is_err());
    assert_eq!(proxy.body_bytes_sent("/chunked"), CHUNKED_LEN as u64);
    assert_eq!(proxy.body_bytes_sent("/eof"), EOF_LEN as u64);
}

#[test]
fn drop_after_truncates_and_closes() {
    let (_backend, proxy, mut client) = connected([Rule::new("/blob", Fault::DropAfter(5000))]);
    let resp = client.get("/blob");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-length"), Some(BLOB_LEN.to_string().as_str()));
    assert_eq!(resp.body_error, Some(io::ErrorKind::UnexpectedEof));
    assert!(resp.body == blob()[..5000], "prefix differs");
    assert!(
        client.request("GET", "/blob", &[]).is_err(),
        "connection should be closed"
    );

    // Chunked: the terminating chunk never arrives.
    proxy.add_rule(Rule::new("/chunked", Fault::DropAfter(3000)));
    let mut client = Client::connect(&proxy.host());
    let resp = client.get("/chunked");
    assert_eq!(resp.body_error, Some(io::ErrorKind::UnexpectedEof));
    assert!(resp.body == blob()[..3000], "chunked prefix differs");

    // Zero bytes: head only, then the connection closes.
    proxy.clear_rules();
    proxy.add_rule(Rule::new("/blob", Fault::DropAfter(0)));
    let mut client = Client::connect(&proxy.host());
    let resp = client.get("/blob");
    assert_eq!((resp.status, resp.body.len()), (200, 0));
    assert_eq!(resp.body_error, Some(io::ErrorKind::UnexpectedEof));
    assert_eq!(proxy.body_bytes_sent("/blob"), 5000);
}

/// GETs `/blob` through a `StallAfter(after, stall)` rule, the client reading with `timeout`
/// if given (else [`Client::connect`]'s): the proxy, the response and how long the GET took.
fn get_stalled(
    after: u64,
    stall: Duration,
    timeout: Option<Duration>,
) -> (Backend, FaultProxy, Response, Duration) {
    let (backend, proxy, mut client) = connected([Rule::new("/blob", Fault::StallAfter(after, stall))]);
    if let Some(timeout) = timeout {
        client.out.set_read_timeout(Some(timeout)).unwrap();
    }
    let started = Instant::now();
    let resp = client.get("/blob");
    (backend, proxy, resp, started.elapsed())
}

#[test]
fn stall_after_stalls_until_the_client_times_out() {
    let (_backend, proxy, resp, took) =
        get_stalled(2000, Duration::from_secs(30), Some(Duration::from_millis(300)));
    assert_eq!(resp.status, 200);
    assert!(
        matches!(
            resp.body_error,
            Some(io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
        ),
        "{:?}",
        resp.body_error
    );
    assert!(resp.body == blob()[..2000], "prefix differs");
    assert!(took >= Duration::from_millis(300));
    assert_eq!(proxy.body_bytes_sent("/blob"), 2000);
}

#[test]
fn stall_after_closes_when_the_stall_ends() {
    let (_backend, _proxy, resp, took) = get_stalled(100, Duration::from_millis(200), None);
    assert_eq!(resp.body_error, Some(io::ErrorKind::UnexpectedEof));
    assert_eq!(resp.body.len(), 100);
    assert!(took >= Duration::from_millis(200));
}

#[test]
fn status_faults_answer_without_forwarding() {
    let (backend, _proxy, mut client) = connected([
        Rule::new("/blob", Fault::status(500, &[], "boom")).times(1),
        Rule::new("/blob", Fault::status(429, &[("Retry-After", "2")], "slow down")).times(2),
    ]);

    let resp = client.get("/blob");
    assert_eq!((resp.status, resp.body.as_slice()), (500, &b"boom"[..]));
    assert_eq!(resp.header("content-length"), Some("4"));

    let resp = client.get("/blob");
    assert_eq!((resp.status, resp.body.as_slice()), (429, &b"slow down"[..]));
    assert_eq!(resp.header("retry-after"), Some("2"));
    assert_eq!(resp.header("content-length"), Some("9"));

    // HEAD gets the Content-Length but no body; the connection stays usable.
    let resp = client.request("HEAD", "/blob", &[]).unwrap();
    assert_eq!((resp.status, resp.header("content-length")), (429, Some("9")));

    let resp = client.get("/blob");
    assert_eq!(resp.status, 200);
    assert!(resp.body == blob(), "body differs");
    assert_eq!(
        backend.seen().len(),
        1,
        "faulted requests must not reach the backend"
    );
}

#[test]
fn flip_byte_changes_exactly_one_byte() {
    let (_backend, proxy) = setup();
    proxy.add_rule(Rule::new("/blob", Fault::FlipByte(12345)));
    // Offset 1000 is the first byte of the backend's second chunk.
    proxy.add_rule(Rule::new("/chunked", Fault::FlipByte(1000)));
    let mut client = Client::connect(&proxy.host());

    let resp = client.get("/blob");
    assert_eq!(resp.body.len(), BLOB_LEN);
    let diffs: Vec<usize> = (0..BLOB_LEN).filter(|&i| resp.body[i] != blob()[i]).collect();
    assert_eq!(diffs, [12345]);
    assert_eq!(resp.body[12345], blob()[12345] ^ 0xff);

    let resp = client.get("/chunked");
    assert_eq!(resp.body.len(), CHUNKED_LEN);
    let diffs: Vec<usize> = (0..CHUNKED_LEN).filter(|&i| resp.body[i] != blob()[i]).collect();
    assert_eq!(diffs, [1000]);
}

#[test]
fn ignore_range_returns_the_whole_body() {
    let (backend, proxy, mut client) = connected([Rule::new("/blob", Fault::IgnoreRange)]);
    let resp = client
        .request("GET", "/blob", &[("Range", "bytes=1000-"), ("If-Range", "\"x\"")])
        .unwrap();
    assert_eq!(resp.status, 200);
    assert!(resp.body == blob(), "body differs");
    let seen = backend.seen();
    assert_eq!(seen[0].header("range"), None);
    assert_eq!(seen[0].header("if-range"), None);
    let log = proxy.requests();
    assert_eq!(
        (log[0].range.as_deref(), log[0].status),
        (Some("bytes=1000-"), 200)
    );
}

#[test]
fn times_limits_how_often_a_rule_applies() {
    let (_backend, proxy, mut client) =
        connected([Rule::new("/blob", Fault::status(500, &[], "once")).times(1)]);
    assert_eq!(client.get("/blob").status, 500);
    assert_eq!(client.get("/blob").status, 200);
    assert_eq!(client.get("/blob").status, 200);
    let statuses: Vec<u16> = proxy.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [500, 200, 200]);
}

#[test]
fn method_filter_only_matches_that_method() {
    let (_backend, _proxy, mut client) =
        connected([Rule::new("/blob", Fault::status(503, &[], "")).method("head")]);
    assert_eq!(client.request("HEAD", "/blob", &[]).unwrap().status, 503);
    assert_eq!(client.get("/blob").status, 200);
}

#[test]
fn throttle_slows_the_body() {
    let (_backend, _proxy, mut client) = connected([Rule::new("/blob", Fault::Throttle(200_000))]);
    let from = BLOB_LEN - 100_000;
    let range = format!("bytes={from}-");
    let started = Instant::now();
    let resp = client.request("GET", "/blob", &[("Range", &range)]).unwrap();
    let elapsed = started.elapsed();
    assert_eq!(resp.status, 206);
    assert!(resp.body == blob()[from..], "body differs");
    // 100 kB at 200 kB/s is about 0.5 s; only a loose lower bound is asserted.
    assert!(elapsed >= Duration::from_millis(350), "took only {elapsed:?}");
}

#[test]
fn append_bytes_lengthens_the_body() {
    let (_backend, proxy, mut client) = connected([
        Rule::new("/blob", Fault::AppendBytes(10)),
        Rule::new("/chunked", Fault::AppendBytes(70_000)),
    ]);

    let resp = client.get("/blob");
    assert_eq!(
        resp.header("content-length"),
        Some((BLOB_LEN + 10).to_string().as_str())
    );
    assert_eq!(resp.body.len(), BLOB_LEN + 10);
    assert!(resp.body[..BLOB_LEN] == *blob(), "prefix differs");

    let resp = client.request("HEAD", "/blob", &[]).unwrap();
    assert_eq!(
        resp.header("content-length"),
        Some((BLOB_LEN + 10).to_string().as_str())
    );

    let resp = client.get("/chunked");
    assert_eq!((resp.status, resp.body_error), (200, None));
    assert_eq!(resp.body.len(), CHUNKED_LEN + 70_000);
    assert!(
        resp.body[..CHUNKED_LEN] == blob()[..CHUNKED_LEN],
        "chunked prefix differs"
    );
    assert_eq!(proxy.body_bytes_sent("/blob"), BLOB_LEN as u64 + 10);
}

#[test]
fn redirects_pass_through_unchanged() {
    let (backend, _proxy, mut client) = connected([]);
    let resp = client.get("/redirect");
    assert_eq!(resp.status, 307);
    assert_eq!(
        resp.header("location"),
        Some(format!("http://{}/blob", backend.host).as_str())
    );
    assert_eq!(resp.header("content-length"), Some("0"));
    assert_eq!(client.get("/blob").body.len(), BLOB_LEN);
}

#[test]
fn logs_requests_and_counts_body_bytes() {
    let (_backend, proxy, mut client) = connected([Rule::new("/blob", Fault::DropAfter(4096)).times(1)]);
    assert_eq!(client.get("/blob").body.len(), 4096);
    let mut client = Client::connect(&proxy.host());
    let resp = client
        .request("GET", "/blob", &[("Range", "bytes=4096-")])
        .unwrap();
    assert!(resp.body == blob()[4096..], "resumed body differs");
    client.request("HEAD", "/blob", &[]).unwrap();
    client.get("/chunked");

    let log = proxy.requests();
    let summary: Vec<(&str, &str, Option<&str>, u16, u64)> = log
        .iter()
        .map(|r| {
            (
                r.method.as_str(),
                r.path.as_str(),
                r.range.as_deref(),
                r.status,
                r.body_bytes,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("GET", "/blob", None, 200, 4096),
            ("GET", "/blob", Some("bytes=4096-"), 206, (BLOB_LEN - 4096) as u64),
            ("HEAD", "/blob", None, 200, 0),
            ("GET", "/chunked", None, 200, CHUNKED_LEN as u64),
        ]
    );
    assert!(matches!(log[0].fault, Some(Fault::DropAfter(4096))));
    assert!(log[1].fault.is_none());
    assert_eq!(proxy.body_bytes_sent("/blob"), BLOB_LEN as u64);
    assert_eq!(proxy.body_bytes_sent("/"), (BLOB_LEN + CHUNKED_LEN) as u64);
    assert_eq!(proxy.body_bytes_sent("/nothing"), 0);
}

#[test]
fn unreachable_backend_gives_502() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let proxy = FaultProxy::start(&format!("127.0.0.1:{port}"));
    let mut client = Client::connect(&proxy.host());
    let resp = client.get("/blob");
    assert_eq!(resp.status, 502);
    assert_eq!(client.request("HEAD", "/blob", &[]).unwrap().status, 502);
}

#[test]
fn dropping_the_proxy_stops_it() {
    let (_backend, proxy) = setup();
    let host = proxy.host();
    let mut client = Client::connect(&host);
    assert_eq!(client.get("/blob").status, 200);
    drop(proxy);
    assert!(
        client.request("GET", "/blob", &[]).is_err(),
        "open connections are closed"
    );
    assert!(TcpStream::connect(&host).is_err(), "listener is closed");
}

#[test]
fn works_with_reqwest() {
    let (_backend, proxy) = setup();
    // reqwest is built without a default TLS provider; it insists on one even for plain HTTP.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let url = format!("http://{}/blob", proxy.host());
    for _ in 0..2 {
        let resp = http.get(&url).send().unwrap();
        assert_eq!(resp.status(), 200);
        assert!(resp.bytes().unwrap() == blob(), "body differs");
    }
    let resp = http.get(&url).header("Range", "bytes=10-").send().unwrap();
    assert_eq!(resp.status(), 206);
    assert!(resp.bytes().unwrap() == blob()[10..], "range body differs");

    proxy.add_rule(Rule::new("/blob", Fault::DropAfter(1000)).times(1));
    let resp = http.get(&url).send().unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.bytes().is_err(), "truncated body must be an error");
    // The pooled connection was closed; the next request still succeeds.
    assert!(
        http.get(&url).send().unwrap().bytes().unwrap() == blob(),
        "body differs"
    );

    let resp = http
        .get(format!("http://{}/redirect", proxy.host()))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 307);
}
