//! A fault-injecting HTTP/1.1 proxy for integration tests.
//!
//! [`FaultProxy`] sits between rpull and a real registry spoken to over plain HTTP. It listens on an
//! ephemeral port on 127.0.0.1 and forwards every request to the backend over a fresh connection (sent
//! with `Connection: close` and the `Host` header rewritten to the backend), then streams the response
//! back over the client's keep-alive connection. Requests matching a [`Rule`] get its [`Fault`] applied:
//! truncated or stalled bodies, canned error statuses, flipped bytes, ignored ranges, throttling or
//! extra trailing bytes. Everything else, redirects included, passes through unchanged.
//!
//! Only std is used: one thread per client connection, bodies copied in 64 KiB pieces.
//!
//! ```ignore
//! let proxy = FaultProxy::start("127.0.0.1:5000");
//! proxy.add_rule(Rule::new("/blobs/", Fault::DropAfter(4096)).times(1));
//! // ... point rpull at proxy.host() ...
//! assert_eq!(proxy.requests()[1].range.as_deref(), Some("bytes=4096-"));
//! ```
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Size of the pieces bodies are copied in.
const BUF_SIZE: usize = 64 * 1024;
/// Largest accepted request or response head.
const MAX_HEAD: usize = 64 * 1024;
/// Connect, read and write timeout towards the backend, and write timeout towards clients.
const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// Headers that describe one connection and are never forwarded (RFC 9110, section 7.6.1).
const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

/// What to do to a matching request's response.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Send the first `n` bytes of the response body, then close the connection abruptly (truncated body /
    /// connection reset). The response head is sent unchanged, so the client sees a short body.
    DropAfter(u64),
    /// Send the first `n` body bytes, then stall (send nothing, keep the socket open) for `dur` before closing.
    StallAfter(u64, Duration),
    /// Answer with this status and body instead of forwarding (e.g. 500, or 429 with extra headers like
    /// Retry-After). The proxy sets Content-Length itself.
    Status {
        code: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
    /// Forward, but flip (xor 0xff) the body byte at this offset.
    FlipByte(u64),
    /// Forward but ignore the client's Range header (strip it), so the backend answers 200 with the whole body.
    IgnoreRange,
    /// Throttle the response body to roughly `bytes_per_sec`.
    Throttle(u64),
    /// Forward, but append `n` extra garbage bytes to the body (longer than declared); Content-Length is
    /// raised accordingly (also on HEAD responses), chunked bodies get an extra chunk.
    AppendBytes(u64),
    /// For a tag list (`/v2/<name>/tags/list`): serve it in pages of at most this many tags (or the
    /// client's `n`), starting after `last`, with an RFC 5988 `Link: <…>; rel="next"` header while
    /// more remain, as the distribution spec describes. Registry 2.8 does not paginate tags itself.
    PaginateTags(usize),
    /// Forward, but move the start of a 206's `Content-Range` one byte on (the body is unchanged),
    /// as a server that answers another range than the one asked for.
    WrongContentRange,
    /// Answer `307 Temporary Redirect` to this base URL followed by the request's path and query
    /// (e.g. `http://localhost:<port>` of a second server acting as a CDN).
    RedirectTo(String),
}

impl Fault {
    /// [`Fault::Status`] with `code`, the `headers` and `body`.
    pub fn status(code: u16, headers: &[(&str, &str)], body: &str) -> Fault {
        Fault::Status {
            code,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: body.to_string(),
        }
    }

    /// A registry's JSON error answer: `code` with `{"errors":[{"code":…,"message":…}]}`.
    pub fn registry_error(code: u16, error_code: &str, message: &str) -> Fault {
        let body = serde_json::json!({"errors": [{"code": error_code, "message": message}]});
        Fault::status(code, &[("Content-Type", "application/json")], &body.to_string())
    }

    /// A `200` answer serving `body` as an OCI image manifest.
    pub fn oci_manifest(body: &str) -> Fault {
        Fault::status(
            200,
            &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
            body,
        )
    }
}

/// Applies `fault` to requests whose path contains `path_contains` (and whose method is `method`, if
/// set). The first matching rule, in the order added, wins.
#[derive(Clone, Debug)]
pub struct Rule {
    pub method: Option<String>,
    pub path_contains: String,
    pub fault: Fault,
    /// Apply to the first N matching requests, None = always. Every matching request counts, HEAD
    /// included unless `method` says otherwise.
    pub times: Option<u32>,
}

impl Rule {
    /// A rule for any method, applied to every matching request.
    pub fn new(path_contains: &str, fault: Fault) -> Rule {
        Rule {
            method: None,
            path_contains: path_contains.to_string(),
            fault,
            times: None,
        }
    }

    /// A rule for GET requests only, applied to every matching one.
    pub fn get(path_contains: &str, fault: Fault) -> Rule {
        Rule::new(path_contains, fault).method("GET")
    }

    /// Only match requests with this method (compared case-insensitively).
    pub fn method(mut self, method: &str) -> Rule {
        self.method = Some(method.to_string());
        self
    }

    /// Only apply to the first `n` matching requests.
    pub fn times(mut self, n: u32) -> Rule {
        self.times = Some(n);
        self
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        self.times != Some(0)
            && self
                .method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method))
            && path.contains(&self.path_contains)
    }
}

/// One request the proxy received, in arrival order.
#[derive(Clone, Debug)]
pub struct RequestLog {
    pub method: String,
    /// The request target as sent by the client (path and query).
    pub path: String,
    /// The client's Range header, if any (even when an [`Fault::IgnoreRange`] rule stripped it).
    pub range: Option<String>,
    /// Status sent to the client; 0 until the response head has been sent.
    pub status: u16,
    /// Response body bytes sent to the client so far.
    pub body_bytes: u64,
    /// The fault applied to this request, if a rule matched.
    pub fault: Option<Fault>,
    /// The client's `Authorization` header, if any.
    pub authorization: Option<String>,
    /// When the request arrived.
    pub started: Instant,
    /// When its response was over (sent, cut or failed); `None` while it is going on.
    pub ended: Option<Instant>,
    /// Whether the request came in proxy form (`GET http://host/path`): the proxy also works
    /// as a forward proxy (`HTTP_PROXY`), sending every such request to its backend.
    pub proxied: Option<String>,
}

impl RequestLog {
    /// Did it carry `Authorization: Bearer …`?
    pub fn has_bearer_token(&self) -> bool {
        self.authorization
            .as_deref()
            .is_some_and(|a| a.starts_with("Bearer "))
    }
}

/// Panics unless none of `requests` carried an `Authorization` header: credentials crossed
/// `what` (e.g. "hosts") otherwise.
pub fn assert_no_authorization(requests: &[RequestLog], what: &str) {
    assert!(
        requests.iter().all(|q| q.authorization.is_none()),
        "Authorization crossed {what}: {requests:?}"
    );
}

/// A running proxy; dropping it stops accepting and closes all client connections.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

struct Shared {
    backend: String,
    rules: Mutex<Vec<Rule>>,
    log: Mutex<Vec<RequestLog>>,
    /// Open client connections, so that dropping the proxy can shut them down.
    conns: Mutex<HashMap<u64, TcpStream>>,
    next_conn: AtomicU64,
    stop: AtomicBool,
}

impl FaultProxy {
    /// Starts a proxy on 127.0.0.1 (ephemeral port) in front of `backend` ("host:port").
    pub fn start(backend: &str) -> FaultProxy {
        FaultProxy::start_at("127.0.0.1:0", backend)
    }

    /// Starts a proxy listening on `listen` (a loopback "ip:port", e.g. a default port such as
    /// `127.77.0.1:80`, which needs root) in front of `backend`.
    pub fn start_at(listen: &str, backend: &str) -> FaultProxy {
        let listener =
            TcpListener::bind(listen).unwrap_or_else(|e| panic!("fault proxy: bind {listen}: {e}"));
        let addr = listener.local_addr().expect("fault proxy: local address");
        let shared = Arc::new(Shared {
            backend: backend.to_string(),
            rules: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let state = Arc::clone(&shared);
        let accept = thread::Builder::new()
            .name("fault-proxy-accept".to_string())
            .spawn(move || accept_loop(listener, state))
            .expect("fault proxy: spawn accept thread");
        FaultProxy {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// The proxy's address as "127.0.0.1:PORT".
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn add_rule(&self, rule: Rule) {
        lock(&self.shared.rules).push(rule);
    }

    pub fn clear_rules(&self) {
        lock(&self.shared.rules).clear();
    }

    /// Requests seen so far, in arrival order.
    pub fn requests(&self) -> Vec<RequestLog> {
        lock(&self.shared.log).clone()
    }

    /// Requests whose path contains `needle`, in arrival order.
    pub fn requests_to(&self, needle: &str) -> Vec<RequestLog> {
        self.requests_where(|r| r.path.contains(needle))
    }

    /// GET requests whose path contains `needle`, in arrival order.
    pub fn gets(&self, needle: &str) -> Vec<RequestLog> {
        self.requests_where(|r| r.method == "GET" && r.path.contains(needle))
    }

    fn requests_where(&self, keep: impl Fn(&RequestLog) -> bool) -> Vec<RequestLog> {
        lock(&self.shared.log)
            .iter()
            .filter(|r| keep(r))
            .cloned()
            .collect()
    }

    /// Answers every blob GET with a `307` to the same path at `base_url` (another server
    /// acting as a CDN, see [`Fault::RedirectTo`]).
    pub fn redirect_blob_gets(&self, base_url: String) {
        self.add_rule(Rule::get("/blobs/", Fault::RedirectTo(base_url)));
    }

    /// The most requests whose path contains `needle` that were in progress at one instant.
    /// A request counts as still in progress only when it went on for 40 ms more: a client
    /// may start its next request on another connection an instant before the proxy logs the
    /// end of the one it just finished.
    pub fn max_concurrent(&self, needle: &str) -> usize {
        const MARGIN: Duration = Duration::from_millis(40);
        let log = lock(&self.shared.log);
        let spans: Vec<_> = log
            .iter()
            .filter(|r| r.path.contains(needle))
            .map(|r| (r.started, r.ended))
            .collect();
        spans
            .iter()
            .map(|&(at, _)| {
                spans
                    .iter()
                    .filter(|&&(s, e)| s <= at && e.is_none_or(|e| e > at + MARGIN))
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    /// Total response body bytes sent to clients (faulted responses included) for requests whose path
    /// contains `needle`.
    pub fn body_bytes_sent(&self, needle: &str) -> u64 {
        lock(&self.shared.log)
            .iter()
            .filter(|r| r.path.contains(needle))
            .map(|r| r.body_bytes)
            .sum()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for (_, conn) in lock(&self.shared.conns).drain() {
            let _ = conn.shutdown(Shutdown::Both);
        }
        // Wake the accept loop so it sees the flag; only wait for it if the wake-up got through.
        if TcpStream::connect_timeout(&self.addr, Duration::from_secs(2)).is_ok() {
            if let Some(handle) = self.accept.take() {
                let _ = handle.join();
            }
        }
    }
}

/// Locks a mutex, ignoring poisoning: a panic in one connection must not take the proxy down.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else {
            thread::sleep(Duration::from_millis(10)); // e.g. out of file descriptors
            continue;
        };
        let id = shared.next_conn.fetch_add(1, Ordering::SeqCst);
        {
            // Checked under the lock so Drop either sees this connection or we see its flag.
            let mut conns = lock(&shared.conns);
            if shared.stop.load(Ordering::SeqCst) {
                break;
            }
            let Ok(clone) = stream.try_clone() else { continue };
            conns.insert(id, clone);
        }
        let state = Arc::clone(&shared);
        let spawned = thread::Builder::new()
            .name(format!("fault-proxy-conn-{id}"))
            .spawn(move || {
                // An error only ends this connection.
                let _ = serve_client(&state, stream);
                lock(&state.conns).remove(&id);
            });
        if spawned.is_err() {
            lock(&shared.conns).remove(&id);
        }
    }
}

/// Serves requests on one client connection until either side closes it.
fn serve_client(shared: &Shared, client: TcpStream) -> io::Result<()> {
    client.set_nodelay(true)?;
    client.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut reader = BufReader::with_capacity(BUF_SIZE, client.try_clone()?);
    let mut out = client;
    while let Some(req) = read_request(&mut reader)? {
        if !handle_request(shared, &req, &mut out)? {
            let _ = out.shutdown(Shutdown::Both);
            break;
        }
    }
    Ok(())
}

#[derive(Clone)]
struct Request {
    method: String,
    target: String,
    version: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    proxied: Option<String>,
}

impl Request {
    fn keep_alive(&self) -> bool {
        if has_token(&self.headers, "connection", "close") {
            false
        } else {
            self.version != "HTTP/1.0" || has_token(&self.headers, "connection", "keep-alive")
        }
    }
}

fn read_request(r: &mut impl BufRead) -> io::Result<Option<Request>> {
    let Some(lines) = read_head(r)? else {
        return Ok(None);
    };
    let mut parts = lines[0].split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(invalid(format!("bad request line {:?}", lines[0])));
    };
    let headers = parse_headers(&lines[1..]);
    let mut target = target.to_string();
    let mut proxied = None;
    if let Some(rest) = target.strip_prefix("http://") {
        // Absolute form: we are someone's forward proxy. Keep the path, remember the host.
        let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        proxied = Some(host.to_string());
        target = if path.is_empty() {
            "/".into()
        } else {
            path.to_string()
        };
    }
    let framing = if is_chunked(&headers) {
        Framing::Chunked
    } else if let Some(n) = content_length(&headers)? {
        Framing::Length(n)
    } else {
        Framing::None
    };
    let mut body = Vec::new();
    copy_body(r, framing, |data| {
        body.extend_from_slice(data);
        Ok(ControlFlow::Continue(()))
    })?;
    Ok(Some(Request {
        method: method.to_string(),
        target,
        version: version.to_string(),
        headers,
        body,
        proxied,
    }))
}

/// Serves one request; returns whether the client connection stays open.
fn handle_request(shared: &Shared, req: &Request, out: &mut TcpStream) -> io::Result<bool> {
    let fault = lock(&shared.rules)
        .iter_mut()
        .find(|r| r.matches(&req.method, &req.target))
        .map(|rule| {
            if let Some(n) = &mut rule.times {
                *n -= 1;
            }
            rule.fault.clone()
        });
    let log_index = {
        let mut log = lock(&shared.log);
        log.push(RequestLog {
            method: req.method.clone(),
            path: req.target.clone(),
            range: header(&req.headers, "range").map(str::to_string),
            status: 0,
            body_bytes: 0,
            fault: fault.clone(),
            authorization: header(&req.headers, "authorization").map(str::to_string),
            started: Instant::now(),
            ended: None,
            proxied: req.proxied.clone(),
        });
        log.len() - 1
    };
    let log = LogEntry {
        shared,
        index: log_index,
    };
    let keep_alive = req.keep_alive();
    let head_only = req.method.eq_ignore_ascii_case("HEAD");

    if let Some(Fault::Status { code, headers, body }) = &fault {
        send_canned(out, &log, *code, headers, body, head_only, keep_alive)?;
        return Ok(keep_alive);
    }
    if let Some(Fault::RedirectTo(base)) = &fault {
        let location = vec![(
            "Location".to_string(),
            format!("{}{}", base.trim_end_matches('/'), req.target),
        )];
        send_canned(out, &log, 307, &location, "", head_only, keep_alive)?;
        return Ok(keep_alive);
    }
    if req.method.eq_ignore_ascii_case("CONNECT") {
        send_canned(
            out,
            &log,
            405,
            &[],
            "fault proxy: no CONNECT tunnels\n",
            false,
            false,
        )?;
        return Ok(false);
    }
    if let Some(Fault::PaginateTags(page)) = &fault {
        return paginate_tags(shared, req, out, &log, *page, head_only, keep_alive);
    }
    let strip_range = matches!(fault, Some(Fault::IgnoreRange));
    let mut resp = match forward(&shared.backend, req, strip_range) {
        Ok(resp) => resp,
        Err(e) => {
            let body = format!("fault proxy: backend {}: {e}\n", shared.backend);
            send_canned(out, &log, 502, &[], &body, head_only, keep_alive)?;
            return Ok(keep_alive);
        }
    };

    let in_framing = response_framing(head_only, resp.status, &resp.headers)?;
    let append = match fault {
        Some(Fault::AppendBytes(n)) => n,
        _ => 0,
    };
    let out_framing = match in_framing {
        Framing::Length(n) => Framing::Length(n + append),
        other => other,
    };
    // A body delimited by EOF can only be passed on the same way.
    let keep_alive = keep_alive && in_framing != Framing::Eof;

    let mut head = format!("HTTP/1.1 {} {}\r\n", resp.status, resp.reason);
    for (name, value) in &resp.headers {
        let lower = name.to_ascii_lowercase();
        if HOP_BY_HOP.contains(&lower.as_str()) {
            continue;
        }
        if lower == "content-range" && matches!(fault, Some(Fault::WrongContentRange)) {
            head += &format!("{name}: {}\r\n", shift_content_range(value));
            continue;
        }
        if in_framing == Framing::None {
            // No body follows, so the framing headers are informational: keep them.
            match value.trim().parse::<u64>() {
                Ok(n) if lower == "content-length" => head += &format!("{name}: {}\r\n", n + append),
                _ => head += &format!("{name}: {value}\r\n"),
            }
        } else if lower != "content-length" && lower != "transfer-encoding" {
            head += &format!("{name}: {value}\r\n");
        }
    }
    match out_framing {
        Framing::Length(n) => head += &format!("Content-Length: {n}\r\n"),
        Framing::Chunked => head += "Transfer-Encoding: chunked\r\n",
        Framing::None | Framing::Eof => {}
    }
    if !keep_alive {
        head += "Connection: close\r\n";
    }
    head += "\r\n";
    log.set_status(resp.status);
    out.write_all(head.as_bytes())?;

    let limit = match fault {
        Some(Fault::DropAfter(n) | Fault::StallAfter(n, _)) => Some(n),
        _ => None,
    };
    let flip = match fault {
        Some(Fault::FlipByte(offset)) => Some(offset),
        _ => None,
    };
    let throttle = match fault {
        Some(Fault::Throttle(bytes_per_sec)) => Some((bytes_per_sec.max(1), Instant::now())),
        _ => None,
    };
    let mut body = BodyWriter {
        out,
        log,
        chunked: out_framing == Framing::Chunked,
        sent: 0,
        throttle,
    };
    let mut cut = limit == Some(0);
    if !cut {
        let complete = copy_body(&mut resp.reader, in_framing, |data| {
            if let Some(offset) = flip {
                if offset >= body.sent && offset - body.sent < data.len() as u64 {
                    data[(offset - body.sent) as usize] ^= 0xff;
                }
            }
            let take = match limit {
                Some(n) => (n - body.sent).min(data.len() as u64) as usize,
                None => data.len(),
            };
            body.write(&data[..take])?;
            Ok(if limit == Some(body.sent) {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            })
        })?;
        cut = !complete;
    }
    if cut {
        if let Some(Fault::StallAfter(_, dur)) = fault {
            body.out.flush()?;
            pause(shared, dur);
        }
        let _ = body.out.shutdown(Shutdown::Both);
        return Ok(false);
    }
    let mut garbage = if in_framing == Framing::None { 0 } else { append };
    while garbage > 0 {
        const PATTERN: &[u8] = b"fault-proxy-garbage;";
        let piece: Vec<u8> = PATTERN
            .iter()
            .copied()
            .cycle()
            .take(garbage.min(BUF_SIZE as u64) as usize)
            .collect();
        body.write(&piece)?;
        garbage -= piece.len() as u64;
    }
    body.finish()?;
    Ok(keep_alive)
}

/// Serves one page of the backend's full tag list (see [`Fault::PaginateTags`]).
fn paginate_tags(
    shared: &Shared,
    req: &Request,
    out: &mut TcpStream,
    log: &LogEntry,
    page: usize,
    head_only: bool,
    keep_alive: bool,
) -> io::Result<bool> {
    let (path, query) = req.target.split_once('?').unwrap_or((&req.target, ""));
    let param = |key: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
            .map(str::to_string)
    };
    let n = param("n").and_then(|v| v.parse::<usize>().ok()).unwrap_or(page);
    let last = param("last");
    let whole = Request {
        target: path.to_string(),
        ..req.clone()
    };
    let mut resp = forward(&shared.backend, &whole, false)?;
    let framing = response_framing(false, resp.status, &resp.headers)?;
    let mut body = Vec::new();
    copy_body(&mut resp.reader, framing, |data| {
        body.extend_from_slice(data);
        Ok(ControlFlow::Continue(()))
    })?;
    let doc: serde_json::Value = serde_json::from_slice(&body).map_err(|e| invalid(e.to_string()))?;
    let mut tags: Vec<String> = doc["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_str().map(str::to_string))
        .collect();
    tags.sort();
    let start = match &last {
        Some(l) => tags.iter().position(|t| t > l).unwrap_or(tags.len()),
        None => 0,
    };
    let end = (start + n).min(tags.len());
    let page_doc = serde_json::json!({ "name": doc["name"], "tags": tags[start..end] });
    let mut headers = vec![("Content-Type".to_string(), "application/json".to_string())];
    if end < tags.len() && end > start {
        headers.push((
            "Link".to_string(),
            format!("<{path}?n={n}&last={}>; rel=\"next\"", tags[end - 1]),
        ));
    }
    send_canned(
        out,
        log,
        200,
        &headers,
        &page_doc.to_string(),
        head_only,
        keep_alive,
    )?;
    Ok(keep_alive)
}

/// Writes a locally generated response (a `Status` fault or a 502 for an unreachable backend).
fn send_canned(
    out: &mut TcpStream,
    log: &LogEntry,
    code: u16,
    headers: &[(String, String)],
    body: &str,
    head_only: bool,
    keep_alive: bool,
) -> io::Result<()> {
    let mut head = format!("HTTP/1.1 {code} {}\r\n", reason_phrase(code));
    for (name, value) in headers {
        if !name.eq_ignore_ascii_case("content-length") {
            head += &format!("{name}: {value}\r\n");
        }
    }
    head += &format!("Content-Length: {}\r\n", body.len());
    if !keep_alive {
        head += "Connection: close\r\n";
    }
    head += "\r\n";
    log.set_status(code);
    out.write_all(head.as_bytes())?;
    if !head_only {
        out.write_all(body.as_bytes())?;
        log.add_body_bytes(body.len() as u64);
    }
    out.flush()
}

fn reason_phrase(code: u16) -> &'static str {
    match code {
        200 => "OK",
        206 => "Partial Content",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Fault",
    }
}

/// Sleeps for `dur`, waking early when the proxy is dropped.
fn pause(shared: &Shared, dur: Duration) {
    let end = Instant::now() + dur;
    while !shared.stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        if now >= end {
            break;
        }
        thread::sleep((end - now).min(Duration::from_millis(20)));
    }
}

/// `bytes a-b/t` with `a` one larger (what a server answering another range would send).
fn shift_content_range(value: &str) -> String {
    let parsed = value
        .trim()
        .strip_prefix("bytes ")
        .and_then(|r| r.split_once('-'))
        .and_then(|(a, rest)| Some((a.parse::<u64>().ok()?, rest)));
    match parsed {
        Some((a, rest)) => format!("bytes {}-{rest}", a + 1),
        None => value.to_string(),
    }
}

/// A request's entry in the log, updated as its response goes out.
struct LogEntry<'a> {
    shared: &'a Shared,
    index: usize,
}

impl LogEntry<'_> {
    fn set_status(&self, status: u16) {
        lock(&self.shared.log)[self.index].status = status;
    }

    fn add_body_bytes(&self, n: u64) {
        lock(&self.shared.log)[self.index].body_bytes += n;
    }
}

impl Drop for LogEntry<'_> {
    fn drop(&mut self) {
        lock(&self.shared.log)[self.index].ended = Some(Instant::now());
    }
}

/// Writes a response body to the client, chunk-encoding and throttling as needed.
struct BodyWriter<'a> {
    out: &'a mut TcpStream,
    log: LogEntry<'a>,
    chunked: bool,
    sent: u64,
    /// Bytes per second and when the body started.
    throttle: Option<(u64, Instant)>,
}

impl BodyWriter<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        // Throttled bodies go out in pieces of about 50 ms each, so the rate stays smooth.
        let step = match self.throttle {
            Some((rate, _)) => (rate / 20).clamp(1, BUF_SIZE as u64) as usize,
            None => data.len().max(1),
        };
        for piece in data.chunks(step) {
            // Pace before each piece, never after the last: the log's end time is then when the
            // client has the whole body, and a client's next request does not seem to overlap it.
            if let Some((rate, start)) = self.throttle {
                let due = start + Duration::from_secs_f64(self.sent as f64 / rate as f64);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    thread::sleep(wait);
                }
            }
            if self.chunked {
                let mut frame = format!("{:x}\r\n", piece.len()).into_bytes();
                frame.extend_from_slice(piece);
                frame.extend_from_slice(b"\r\n");
                self.out.write_all(&frame)?;
            } else {
                self.out.write_all(piece)?;
            }
            self.sent += piece.len() as u64;
            self.log.add_body_bytes(piece.len() as u64);
        }
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        if self.chunked {
            self.out.write_all(b"0\r\n\r\n")?;
        }
        self.out.flush()
    }
}

/// The backend's response, with its body still unread.
struct BackendResponse {
    reader: BufReader<TcpStream>,
    status: u16,
    reason: String,
    headers: Vec<(String, String)>,
}

/// Sends `req` to the backend over a new connection and reads the (final) response head.
fn forward(backend: &str, req: &Request, strip_range: bool) -> io::Result<BackendResponse> {
    let stream = connect(backend)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;

    let mut head = format!("{} {} HTTP/1.1\r\nHost: {backend}\r\n", req.method, req.target);
    for (name, value) in &req.headers {
        let lower = name.to_ascii_lowercase();
        let skip = HOP_BY_HOP.contains(&lower.as_str())
            || ["host", "content-length", "transfer-encoding"].contains(&lower.as_str())
            || (strip_range && (lower == "range" || lower == "if-range"));
        if !skip {
            head += &format!("{name}: {value}\r\n");
        }
    }
    if !req.body.is_empty() || header(&req.headers, "content-length").is_some() {
        head += &format!("Content-Length: {}\r\n", req.body.len());
    }
    head += "Connection: close\r\n\r\n";
    let mut message = head.into_bytes();
    message.extend_from_slice(&req.body);
    (&stream).write_all(&message)?;

    let mut reader = BufReader::with_capacity(BUF_SIZE, stream);
    loop {
        let lines = read_head(&mut reader)?.ok_or_else(|| eof("backend closed without a response"))?;
        let mut parts = lines[0].splitn(3, ' ');
        let status = match (parts.next(), parts.next()) {
            (Some(version), Some(code)) if version.starts_with("HTTP/") => code.parse::<u16>().ok(),
            _ => None,
        };
        let status = status.ok_or_else(|| invalid(format!("bad status line {:?}", lines[0])))?;
        // Interim responses (100 Continue and the like) are not passed on.
        if (100..200).contains(&status) && status != 101 {
            continue;
        }
        let reason = parts.next().unwrap_or("").to_string();
        let headers = parse_headers(&lines[1..]);
        return Ok(BackendResponse {
            reader,
            status,
            reason,
            headers,
        });
    }
}

fn connect(backend: &str) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{backend}: no addresses"));
    for addr in backend.to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, IO_TIMEOUT) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// How a message body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    /// Until the connection closes.
    Eof,
}

fn response_framing(head_only: bool, status: u16, headers: &[(String, String)]) -> io::Result<Framing> {
    if head_only || (100..200).contains(&status) || status == 204 || status == 304 {
        Ok(Framing::None)
    } else if header(headers, "transfer-encoding").is_some() {
        Ok(if is_chunked(headers) {
            Framing::Chunked
        } else {
            Framing::Eof
        })
    } else {
        Ok(content_length(headers)?.map_or(Framing::Eof, Framing::Length))
    }
}

/// Reads a message body, handing the payload to `sink` piece by piece (the sink may modify it).
/// Returns true when the body was read completely, false when `sink` asked to stop early.
fn copy_body<R: BufRead>(
    r: &mut R,
    framing: Framing,
    mut sink: impl FnMut(&mut [u8]) -> io::Result<ControlFlow<()>>,
) -> io::Result<bool> {
    let mut buf = vec![0u8; BUF_SIZE];
    match framing {
        Framing::None => Ok(true),
        Framing::Length(n) => copy_exact(r, n, &mut buf, &mut sink),
        Framing::Eof => loop {
            let k = read_some(r, &mut buf)?;
            if k == 0 {
                return Ok(true);
            }
            if sink(&mut buf[..k])?.is_break() {
                return Ok(false);
            }
        },
        Framing::Chunked => loop {
            let line = read_line(r)?;
            let size = line.split(';').next().unwrap_or("").trim();
            let size =
                u64::from_str_radix(size, 16).map_err(|_| invalid(format!("bad chunk size {line:?}")))?;
            if size == 0 {
                // Skip the trailer section, up to its empty line.
                while !read_line(r)?.is_empty() {}
                return Ok(true);
            }
            if !copy_exact(r, size, &mut buf, &mut sink)? {
                return Ok(false);
            }
            if !read_line(r)?.is_empty() {
                return Err(invalid("chunk data not followed by CRLF"));
            }
        },
    }
}

fn copy_exact<R: Read>(
    r: &mut R,
    mut n: u64,
    buf: &mut [u8],
    sink: &mut impl FnMut(&mut [u8]) -> io::Result<ControlFlow<()>>,
) -> io::Result<bool> {
    while n > 0 {
        let want = n.min(buf.len() as u64) as usize;
        let k = read_some(r, &mut buf[..want])?;
        if k == 0 {
            return Err(eof("body ended early"));
        }
        n -= k as u64;
        if sink(&mut buf[..k])?.is_break() {
            return Ok(false);
        }
    }
    Ok(true)
}

fn read_some<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Reads one CRLF- (or LF-) terminated line, without the terminator.
fn read_line<R: BufRead>(r: &mut R) -> io::Result<String> {
    let mut line = Vec::new();
    r.take(MAX_HEAD as u64).read_until(b'\n', &mut line)?;
    if !line.ends_with(b"\n") {
        return Err(eof("connection closed inside a line"));
    }
    Ok(String::from_utf8_lossy(&line)
        .trim_end_matches(['\r', '\n'])
        .to_string())
}

/// Reads a message head (start line and header lines). None if the connection closed before it began.
fn read_head<R: BufRead>(r: &mut R) -> io::Result<Option<Vec<String>>> {
    let mut lines: Vec<String> = Vec::new();
    let mut total = 0;
    loop {
        if lines.is_empty() && r.fill_buf()?.is_empty() {
            return Ok(None);
        }
        let line = read_line(r)?;
        total += line.len() + 2;
        if total > MAX_HEAD {
            return Err(invalid("message head too large"));
        }
        if !line.is_empty() {
            lines.push(line);
        } else if !lines.is_empty() {
            return Ok(Some(lines));
        }
    }
}

fn parse_headers(lines: &[String]) -> Vec<(String, String)> {
    lines
        .iter()
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_string(), value.trim().to_string()))
        .collect()
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Whether any `name` header lists `token` among its comma-separated values.
fn has_token(headers: &[(String, String)], name: &str, token: &str) -> bool {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .flat_map(|(_, v)| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn is_chunked(headers: &[(String, String)]) -> bool {
    header(headers, "transfer-encoding")
        .and_then(|te| te.rsplit(',').next())
        .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
}

fn content_length(headers: &[(String, String)]) -> io::Result<Option<u64>> {
    header(headers, "content-length")
        .map(|v| {
            v.trim()
                .parse::<u64>()
                .map_err(|_| invalid(format!("bad Content-Length {v:?}")))
        })
        .transpose()
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn eof(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, msg.to_string())
}
