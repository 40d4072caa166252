//! A round-robin HTTP reverse proxy on loopback: the stand-in for a Kubernetes Service or a
//! CDN in front of several workers, with no stickiness. Every REQUEST goes to the next
//! backend in turn, also on one keep-alive connection of the client, so a player's
//! successive requests alternate between workers. The turn is kept per kind of request
//! (playlists and MPDs, media, the rest): one turn for all would lock into step with a
//! player's rhythm (playlist, segment, playlist, segment...) and send every playlist to one
//! worker and every segment to the other; per kind, each worker serves both, and a player's
//! successive playlists come from different workers. Request and response bodies are
//! streamed, not buffered: a held request (an LL-HLS blocking reload, a preload hint) waits
//! on its backend as long as that backend holds it, and a chunked answer reaches the client
//! chunk by chunk. Every request is logged with the backend that answered it, so a test can
//! assert which workers served what; a playlist's or MPD's answer (whole once its head
//! comes) is logged with its body too, so a test can show what a player was told.
//!
//! One tokio runtime (current-thread) on a thread of its own serves the proxy; dropping the
//! [`RoundRobinProxy`] stops it and drops the connections in flight.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderMap, HeaderName};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

/// How long a connection to a backend may take before the next backend is tried.
const BACKEND_CONNECT_TIMEOUT_MS: u64 = 2_000;

/// Hop-by-hop headers (RFC 9110 §7.6.1): they concern one connection, not the message, and
/// are never forwarded; each side of the proxy frames its own messages.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// What a request asked for, from its path's extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    /// An HLS playlist (`.m3u8`) or a DASH MPD (`.mpd`).
    Playlist,
    /// An init segment, a segment or a part (`.mp4`, `.m4s`, `.ts`, ...).
    Media,
    /// Anything else (`/dash/time`, the dashboard, the API).
    Other,
}

/// One request that went through the proxy.
#[derive(Clone, Debug)]
pub struct ProxiedRequest {
    /// The index (in [`RoundRobinProxy::backends`]) of the backend that answered, `None`
    /// when none could be reached (the client got a 502).
    pub backend: Option<usize>,
    /// The request method.
    pub method: String,
    /// Path and query, as the client sent them.
    pub path: String,
    /// The status the client got.
    pub status: u16,
    /// Milliseconds from the request to its response's head (a held request's hold).
    pub head_ms: u64,
    /// Backends tried first that refused the connection (a dead worker).
    pub refused: usize,
    /// Milliseconds from the proxy's start to the request's arrival.
    pub at_ms: u64,
    /// A playlist's or MPD's body as the client got it (answers of
    /// [`RequestKind::Playlist`] with a 2xx status; `None` for the rest): what a player
    /// saw, for a test to print or check.
    pub body: Option<String>,
}

impl ProxiedRequest {
    /// The path without its query.
    pub fn path_only(&self) -> &str {
        self.path.split('?').next().unwrap_or_default()
    }

    /// What it asked for.
    pub fn kind(&self) -> RequestKind {
        RequestKind::of(self.path_only())
    }
}

impl RequestKind {
    /// The kind of a request for `path` (without its query), from the extension.
    pub fn of(path: &str) -> RequestKind {
        let ext = path.rsplit_once('.').map(|(_, e)| e).unwrap_or_default();
        match ext {
            "m3u8" | "mpd" => RequestKind::Playlist,
            "mp4" | "m4s" | "ts" | "m4a" | "m4v" | "aac" | "cmfv" | "cmfa" => RequestKind::Media,
            _ => RequestKind::Other,
        }
    }
}

/// The proxy's shared state: its backends, the next turn, the request log.
struct Shared {
    backends: Vec<SocketAddr>,
    /// The next turn of each [`RequestKind`], in its declaration order.
    turns: [AtomicUsize; 3],
    log: Mutex<Vec<ProxiedRequest>>,
    started: Instant,
}

/// A round-robin HTTP/1.1 reverse proxy on a loopback port of its own (see the module
/// documentation). A backend that refuses the connection (a killed worker) is skipped for
/// that request, as a load balancer's retry on connect failure does (HAProxy's `option
/// redispatch`); one that fails after the request was sent answers the client 502.
pub struct RoundRobinProxy {
    /// Where clients connect: `http://ADDR/...`.
    pub addr: SocketAddr,
    /// The backends, in turn order.
    pub backends: Vec<SocketAddr>,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl RoundRobinProxy {
    /// Listens on a fresh loopback port and forwards to `backends` in turn.
    pub fn start(backends: &[SocketAddr]) -> RoundRobinProxy {
        assert!(!backends.is_empty(), "a proxy needs a backend");
        assert!(
            backends.iter().all(|b| b.ip().is_loopback()),
            "loopback backends only: {backends:?}"
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("the proxy's address");
        let shared = Arc::new(Shared {
            backends: backends.to_vec(),
            turns: Default::default(),
            log: Mutex::new(Vec::new()),
            started: Instant::now(),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let state = shared.clone();
        let thread = thread::Builder::new()
            .name(format!("rr-proxy-{}", addr.port()))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("the proxy's runtime");
                runtime.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    tokio::select! {
                        _ = stopped => {}
                        _ = accept_loop(listener, state) => {}
                    }
                });
                // Dropping the runtime drops every connection still open.
            })
            .expect("start the proxy thread");
        RoundRobinProxy {
            addr,
            backends: backends.to_vec(),
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `http://ADDR{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every request so far, in the order their responses began.
    pub fn requests(&self) -> Vec<ProxiedRequest> {
        self.shared
            .log
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default()
    }

    /// How many requests of `kind` backend `backend` answered with a 2xx.
    pub fn served(&self, backend: usize, kind: RequestKind) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.backend == Some(backend) && r.kind() == kind)
            .filter(|r| (200..300).contains(&r.status))
            .count()
    }

    /// One line per backend: requests answered by kind and status class, for messages.
    pub fn summary(&self) -> String {
        let requests = self.requests();
        let mut out = String::new();
        for (i, b) in self.backends.iter().enumerate() {
            let mine: Vec<&ProxiedRequest> =
                requests.iter().filter(|r| r.backend == Some(i)).collect();
            let count = |kind: RequestKind| mine.iter().filter(|r| r.kind() == kind).count();
            let failed = mine.iter().filter(|r| r.status >= 400).count();
            let longest_hold = mine.iter().map(|r| r.head_ms).max().unwrap_or(0);
            let _ = writeln!(
                out,
                "backend {i} ({b}): {} playlists, {} media, {} other, {failed} answered >= 400, \
                 longest time to the response head {longest_hold} ms",
                count(RequestKind::Playlist),
                count(RequestKind::Media),
                count(RequestKind::Other),
            );
        }
        let unanswered = requests.iter().filter(|r| r.backend.is_none()).count();
        let refused: usize = requests.iter().map(|r| r.refused).sum();
        let _ = writeln!(
            out,
            "{} requests, {unanswered} reached no backend, {refused} connections refused",
            requests.len()
        );
        out
    }
}

impl Drop for RoundRobinProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn accept_loop(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = client.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| forward(shared.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(client), service)
                .await;
        });
    }
}

type ProxyBody = BoxBody<Bytes, hyper::Error>;

fn text_response(status: StatusCode, text: String) -> Response<ProxyBody> {
    let mut resp = Response::new(
        Full::new(Bytes::from(text))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    resp
}

/// Copies `from` into `to` without the hop-by-hop headers.
fn copy_end_to_end(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            to.append(HeaderName::from(name), value.clone());
        }
    }
}

/// Forwards one request to the backend whose turn it is (or the next ones, while they
/// refuse the connection) and streams the answer back.
async fn forward(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let began = Instant::now();
    let n = shared.backends.len();
    let method = req.method().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".to_owned());
    let kind = RequestKind::of(req.uri().path());
    let turn = &shared.turns[kind as usize];
    let first = turn.fetch_add(1, Ordering::SeqCst) % n;
    let mut log = ProxiedRequest {
        backend: None,
        method,
        path,
        status: 502,
        head_ms: 0,
        refused: 0,
        at_ms: began.duration_since(shared.started).as_millis() as u64,
        body: None,
    };
    let mut connected = None;
    for attempt in 0..n {
        let i = (first + attempt) % n;
        let connect = tokio::net::TcpStream::connect(shared.backends[i]);
        match tokio::time::timeout(Duration::from_millis(BACKEND_CONNECT_TIMEOUT_MS), connect).await
        {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                connected = Some((i, stream));
                break;
            }
            _ => log.refused += 1,
        }
    }
    let resp = match connected {
        None => text_response(
            StatusCode::BAD_GATEWAY,
            "round-robin proxy: no backend accepted the connection\n".to_owned(),
        ),
        Some((i, stream)) => {
            log.backend = Some(i);
            match send(stream, req, &log.path).await {
                Ok(resp) => resp,
                Err(e) => text_response(
                    StatusCode::BAD_GATEWAY,
                    format!("round-robin proxy: backend {i}: {e}\n"),
                ),
            }
        }
    };
    log.status = resp.status().as_u16();
    log.head_ms = began.elapsed().as_millis() as u64;
    // A playlist is whole once its head is sent (a held request holds the head): keep a
    // copy of its body for the log.
    let resp = if kind == RequestKind::Playlist && resp.status().is_success() {
        let (parts, body) = resp.into_parts();
        match body.collect().await {
            Ok(collected) => {
                let bytes = collected.to_bytes();
                log.body = Some(String::from_utf8_lossy(&bytes).into_owned());
                Response::from_parts(
                    parts,
                    Full::new(bytes).map_err(|never| match never {}).boxed(),
                )
            }
            Err(e) => text_response(
                StatusCode::BAD_GATEWAY,
                format!("round-robin proxy: the playlist's body failed: {e}\n"),
            ),
        }
    } else {
        resp
    };
    if let Ok(mut l) = shared.log.lock() {
        l.push(log);
    }
    Ok(resp)
}

/// Sends `req` on a fresh connection to a backend; the answer's body streams from it.
async fn send(
    stream: tokio::net::TcpStream,
    req: Request<Incoming>,
    path: &str,
) -> Result<Response<ProxyBody>, hyper::Error> {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let (parts, body) = req.into_parts();
    let mut out = Request::builder()
        .method(parts.method)
        .version(hyper::Version::HTTP_11);
    out = out.uri(path);
    let mut out = match out.body(body) {
        Ok(r) => r,
        Err(_) => {
            return Ok(text_response(
                StatusCode::BAD_REQUEST,
                "round-robin proxy: a request target it cannot forward\n".to_owned(),
            ))
        }
    };
    copy_end_to_end(&parts.headers, out.headers_mut());
    let answer = sender.send_request(out).await?;
    let (parts, body) = answer.into_parts();
    let mut resp = Response::new(body.boxed());
    *resp.status_mut() = parts.status;
    copy_end_to_end(&parts.headers, resp.headers_mut());
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{TcpListener, TcpStream};

    /// A backend answering every request on its connection with `name`, keep-alive.
    fn named_backend(name: &'static str) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                thread::spawn(move || {
                    let mut reader = BufReader::new(conn.try_clone().unwrap());
                    let mut conn = conn;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let target = line.split(' ').nth(1).unwrap_or("").to_owned();
                        loop {
                            let mut h = String::new();
                            if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                                break;
                            }
                        }
                        let body = format!("{name} {target}");
                        let _ = write!(
                            conn,
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                    }
                });
            }
        });
        addr
    }

    /// Reads one response with a Content-Length body from `reader`: (status line, body).
    fn read_response(reader: &mut BufReader<TcpStream>) -> (String, String) {
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        let mut length = 0;
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).unwrap();
            if h == "\r\n" {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        (status, String::from_utf8(body).unwrap())
    }

    #[test]
    fn successive_requests_on_one_keep_alive_connection_alternate_backends() {
        let proxy = RoundRobinProxy::start(&[named_backend("a"), named_backend("b")]);
        let conn = TcpStream::connect(proxy.addr).unwrap();
        let mut writer = conn.try_clone().unwrap();
        let mut reader = BufReader::new(conn);
        let mut seen = Vec::new();
        for i in 0..4 {
            write!(
                writer,
                "GET /hls/x/{i}.m3u8?_HLS_msn={i} HTTP/1.1\r\nHost: example\r\n\r\n"
            )
            .unwrap();
            let (status, body) = read_response(&mut reader);
            assert!(status.starts_with("HTTP/1.1 200"), "{status}");
            seen.push(body);
        }
        assert_eq!(
            seen,
            [
                "a /hls/x/0.m3u8?_HLS_msn=0",
                "b /hls/x/1.m3u8?_HLS_msn=1",
                "a /hls/x/2.m3u8?_HLS_msn=2",
                "b /hls/x/3.m3u8?_HLS_msn=3"
            ]
        );
        assert_eq!(proxy.served(0, RequestKind::Playlist), 2);
        assert_eq!(proxy.served(1, RequestKind::Playlist), 2);
        let bodies: Vec<Option<String>> = proxy.requests().into_iter().map(|r| r.body).collect();
        assert_eq!(
            bodies,
            seen.into_iter().map(Some).collect::<Vec<_>>(),
            "a playlist is logged with the body the client got"
        );
    }

    #[test]
    fn playlists_and_media_each_alternate_even_when_they_interleave() {
        let proxy = RoundRobinProxy::start(&[named_backend("a"), named_backend("b")]);
        let mut seen = Vec::new();
        for path in ["/i.m3u8", "/s1.m4s", "/i.m3u8", "/s2.m4s"] {
            let r = ureq::get(&proxy.url(path)).call().unwrap();
            seen.push(r.into_string().unwrap());
        }
        assert_eq!(seen, ["a /i.m3u8", "a /s1.m4s", "b /i.m3u8", "b /s2.m4s"]);
        for backend in 0..2 {
            assert_eq!(proxy.served(backend, RequestKind::Playlist), 1);
            assert_eq!(proxy.served(backend, RequestKind::Media), 1);
        }
    }

    #[test]
    fn a_backend_that_refuses_connections_is_skipped() {
        let dead = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let proxy = RoundRobinProxy::start(&[named_backend("a"), dead]);
        for _ in 0..4 {
            let r = ureq::get(&proxy.url("/seg-1-2.m4s")).call().unwrap();
            assert_eq!(r.into_string().unwrap(), "a /seg-1-2.m4s");
        }
        let requests = proxy.requests();
        assert!(requests.iter().all(|r| r.backend == Some(0)));
        assert!(
            requests.iter().all(|r| r.body.is_none()),
            "media is not kept"
        );
        assert_eq!(requests.iter().map(|r| r.refused).sum::<usize>(), 2);
        assert_eq!(proxy.served(0, RequestKind::Media), 4);
    }

    #[test]
    fn a_chunked_answer_reaches_the_client_chunk_by_chunk() {
        // The backend sends one chunk, waits until the client has it, then the last one.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let backend = listener.local_addr().unwrap();
        let (got_first, wait_first) = std::sync::mpsc::channel::<()>();
        thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut conn = conn;
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
            }
            conn.write_all(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Part: 1\r\n\r\n5\r\nfirst\r\n",
            )
            .unwrap();
            // A proxy that buffered would have the client wait for the whole body: "LATE".
            let last: &[u8] = match wait_first.recv_timeout(Duration::from_secs(5)) {
                Ok(()) => b"4\r\nlast\r\n0\r\n\r\n",
                Err(_) => b"4\r\nLATE\r\n0\r\n\r\n",
            };
            conn.write_all(last).unwrap();
        });
        let proxy = RoundRobinProxy::start(&[backend]);
        let resp = ureq::get(&proxy.url("/hls/x/seg-0-1.m4s")).call().unwrap();
        assert_eq!(resp.header("x-part"), Some("1"));
        let mut body = resp.into_reader();
        let mut first = [0u8; 5];
        body.read_exact(&mut first).unwrap();
        assert_eq!(
            &first, b"first",
            "the first chunk arrives before the last is sent"
        );
        let _ = got_first.send(());
        let mut rest = String::new();
        body.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "last");
    }
}
