//! A minimal HTTP/1.1 GET client with keep-alive connections, like a player's.
//!
//! Built for the generator's cost per answer, which must stay well below the server's or
//! the bench measures itself: 2,000 LL-HLS viewers get 4,000 answers within a few
//! milliseconds of each new part, and the bench takes them in turn on its one core. A
//! request is written and its answer read by the task that asks (no connection task, no
//! channel between the two, no pool lock held across I/O: hyper's pooled client took about
//! twice these steps per answer). Each [`HttpClient`] keeps its own idle connections; a
//! viewer that asks twice at once (a blocking playlist reload and a hinted part) has two.
//!
//! When an answer arrived is the kernel's receive time of its last byte (`SO_TIMESTAMPNS`
//! on the socket, read with each `recvmsg`), not when the bench's task got to it: with
//! thousands of answers in one burst on the bench's one core, the task's turn comes up to
//! tens of milliseconds after the bytes were there — the bench's queue, not the server's
//! delivery, which with viewers on their own machines nobody waits for. [`Timed::seen`]
//! keeps the task's time too.
//!
//! What it speaks: `GET` with `Host`, answers framed by `Content-Length`, chunked transfer
//! (a DASH segment being written) or the end of the connection; a kept connection that
//! the server closed meanwhile is replaced once, before anything of the answer came.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Time allowed for one GET, response body included.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response body read (a segment of a high-bitrate stream is a few MB).
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Largest response head (status line and headers), and largest chunk-size line.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Headers of one answer looked at (more is an error).
const MAX_HEADERS: usize = 64;
/// Bytes asked of the socket per read.
const READ_CHUNK_BYTES: usize = 16 * 1024;
/// Idle connections one client keeps (a viewer uses two at most at once).
const MAX_IDLE: usize = 4;

/// One client with its own idle connections; clones share them.
#[derive(Clone, Default)]
pub struct HttpClient {
    idle: Arc<Mutex<Vec<Connection>>>,
}

/// Why a GET failed before it produced a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GetError {
    /// Connect, send or receive failed.
    Transport,
    /// [`HTTP_TIMEOUT`] passed.
    Timeout,
    /// The URL could not be parsed or uses another scheme than `http://`.
    BadUrl,
    /// The body exceeded [`MAX_BODY_BYTES`].
    TooLarge,
}

impl GetError {
    /// The error kind as counted in the report.
    pub fn kind(self) -> &'static str {
        match self {
            GetError::Transport => "transport",
            GetError::Timeout => "timeout",
            GetError::BadUrl => "bad_url",
            GetError::TooLarge => "too_large",
        }
    }
}

/// A new client (HTTP only; the viewers play from the origin, not through TLS).
pub fn client() -> HttpClient {
    HttpClient::default()
}

/// GET `url`: the status and the body.
pub async fn get(client: &HttpClient, url: &str) -> Result<(u16, Bytes), GetError> {
    get_body(client, url, HTTP_TIMEOUT).await
}

/// GET `url` within `timeout` (a blocking playlist reload is held by the server): the
/// status and the body.
pub async fn get_body(
    client: &HttpClient,
    url: &str,
    timeout: Duration,
) -> Result<(u16, Bytes), GetError> {
    let a = exchange(client, url, timeout, true).await?;
    Ok((a.timed.status, a.body))
}

/// GET `url` within `timeout`: the status, the body, and when it arrived ([`Timed::done`]).
pub async fn get_body_at(
    client: &HttpClient,
    url: &str,
    timeout: Duration,
) -> Result<(u16, Bytes, Instant), GetError> {
    let a = exchange(client, url, timeout, true).await?;
    Ok((a.timed.status, a.body, a.timed.done))
}

/// A GET timed as a player sees it: when the response head and the first body bytes
/// arrived, and when the body was complete (a chunked response of a segment being written
/// delivers its first parts long before its end).
#[derive(Debug, Clone, Copy)]
pub struct Timed {
    /// The status.
    pub status: u16,
    /// Body bytes.
    pub bytes: u64,
    /// When the first body bytes (or the end of an empty body) arrived.
    pub first_byte: Instant,
    /// When the body was complete: the kernel's receive time of its last byte (the
    /// task's time where the kernel gave none).
    pub done: Instant,
    /// When the bench's task had the whole body (after its turn on the bench's core).
    pub seen: Instant,
}

/// GET `url`, reading the body as it arrives (not kept) and timing it; `timeout` bounds the
/// whole exchange.
pub async fn get_timed(
    client: &HttpClient,
    url: &str,
    timeout: Duration,
) -> Result<Timed, GetError> {
    Ok(exchange(client, url, timeout, false).await?.timed)
}

/// An answer: its timing, and its body when asked to keep it.
struct Answer {
    timed: Timed,
    body: Bytes,
}

/// How an exchange on one connection failed.
enum Failure {
    /// Nothing of the answer came (a kept connection the server had closed): a GET may be
    /// sent again on a new connection.
    NothingCame,
    /// Anything else.
    Get(GetError),
}

impl From<std::io::Error> for Failure {
    fn from(_: std::io::Error) -> Self {
        Failure::Get(GetError::Transport)
    }
}

async fn exchange(
    client: &HttpClient,
    url: &str,
    timeout: Duration,
    keep: bool,
) -> Result<Answer, GetError> {
    let uri: http::Uri = url.parse().map_err(|_| GetError::BadUrl)?;
    if uri.scheme_str() != Some("http") {
        return Err(GetError::BadUrl);
    }
    let Some(authority) = uri.authority() else {
        return Err(GetError::BadUrl);
    };
    let authority = authority.as_str();
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let port = uri.port_u16().unwrap_or(80);
    let host = uri.host().unwrap_or(authority);
    let fut = async {
        let reused = client.checkout(authority);
        let was_reused = reused.is_some();
        let mut conn = match reused {
            Some(c) => c,
            None => Connection::open(authority, host, port).await?,
        };
        let mut result = conn.request(path, keep).await;
        if was_reused && matches!(result, Err(Failure::NothingCame)) {
            conn = Connection::open(authority, host, port).await?;
            result = conn.request(path, keep).await;
        }
        match result {
            Ok((answer, reusable)) => {
                if reusable {
                    client.checkin(conn);
                }
                Ok(answer)
            }
            Err(Failure::NothingCame) => Err(GetError::Transport),
            Err(Failure::Get(e)) => Err(e),
        }
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| GetError::Timeout)?
}

impl HttpClient {
    fn checkout(&self, authority: &str) -> Option<Connection> {
        let mut idle = self.idle.lock().ok()?;
        let i = idle.iter().rposition(|c| c.authority == authority)?;
        Some(idle.swap_remove(i))
    }

    fn checkin(&self, conn: Connection) {
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < MAX_IDLE {
                idle.push(conn);
            }
        }
    }
}

/// How an answer's body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
    /// At the end of the connection.
    Close,
}

/// The head of an answer, as far as the client cares.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    status: u16,
    framing: Framing,
    /// The connection can carry the next request.
    keep_alive: bool,
}

/// `Ok(Some((head, its length)))` once `buf` holds a whole head.
fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, GetError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(GetError::Transport),
    };
    let status = resp.code.ok_or(GetError::Transport)?;
    let mut keep_alive = resp.version == Some(1);
    let mut length = None;
    let mut chunked = false;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value).map_err(|_| GetError::Transport)?;
            length = Some(v.trim().parse::<usize>().map_err(|_| GetError::Transport)?);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = h
                .value
                .split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            let v = h.value.trim_ascii();
            if v.eq_ignore_ascii_case(b"close") {
                keep_alive = false;
            } else if v.eq_ignore_ascii_case(b"keep-alive") {
                keep_alive = true;
            }
        }
    }
    let framing = if status == 204 || status == 304 || (100..200).contains(&status) {
        Framing::Length(0)
    } else if chunked {
        Framing::Chunked
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        keep_alive = false;
        Framing::Close
    };
    Ok(Some((
        Head {
            status,
            framing,
            keep_alive,
        },
        len,
    )))
}

/// Where a chunked body's next chunk-size line ends: `Ok(Some(size, line length))`.
fn parse_chunk_line(buf: &[u8]) -> Result<Option<(usize, usize)>, GetError> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() > MAX_HEAD_BYTES {
            Err(GetError::Transport)
        } else {
            Ok(None)
        };
    };
    let line = &buf[..end];
    let hex = line
        .split(|b| *b == b';')
        .next()
        .unwrap_or(line)
        .trim_ascii();
    let hex = std::str::from_utf8(hex).map_err(|_| GetError::Transport)?;
    let size = usize::from_str_radix(hex, 16).map_err(|_| GetError::Transport)?;
    Ok(Some((size, end + 2)))
}

/// The answer-head and chunk-line readers, for the fuzz target `bench_http_answer`: on any
/// bytes they return an error or a framing that stays within what `buf` can describe.
#[doc(hidden)]
pub mod fuzzing {
    /// `Ok(Some((status, head length)))` once `buf` holds a whole head.
    pub fn head(buf: &[u8]) -> Result<Option<(u16, usize)>, super::GetError> {
        Ok(super::parse_head(buf)?.map(|(head, len)| (head.status, len)))
    }

    /// `Ok(Some((chunk size, line length)))` once `buf` holds a whole chunk-size line.
    pub fn chunk_line(buf: &[u8]) -> Result<Option<(usize, usize)>, super::GetError> {
        super::parse_chunk_line(buf)
    }
}

/// One keep-alive connection and what it read past the last answer (nothing, normally).
struct Connection {
    authority: String,
    stream: TcpStream,
    buf: BytesMut,
    /// The kernel's receive time of the last byte read (the task's time without one).
    received: Instant,
}

/// The body of one answer as it comes: kept, or only counted.
struct BodySink {
    keep: Option<BytesMut>,
    bytes: usize,
    first_byte: Option<Instant>,
}

impl BodySink {
    /// `len` more bytes of the body came at `at`.
    fn count(&mut self, len: usize, at: Instant) -> Result<(), Failure> {
        if len == 0 {
            return Ok(());
        }
        self.first_byte.get_or_insert(at);
        self.bytes += len;
        if self.bytes > MAX_BODY_BYTES {
            return Err(Failure::Get(GetError::TooLarge));
        }
        Ok(())
    }

    /// These bytes of the body came at `at`: counted, and kept if asked.
    fn take(&mut self, data: BytesMut, at: Instant) -> Result<(), Failure> {
        self.count(data.len(), at)?;
        if let Some(k) = &mut self.keep {
            if k.is_empty() {
                *k = data;
            } else {
                k.extend_from_slice(&data);
            }
        }
        Ok(())
    }

    /// The first `len` bytes of `buf` are body that came at `at`: taken out of it.
    fn piece(&mut self, buf: &mut BytesMut, len: usize, at: Instant) -> Result<(), Failure> {
        if self.keep.is_some() {
            self.take(buf.split_to(len), at)
        } else {
            self.count(len, at)?;
            buf.advance(len);
            Ok(())
        }
    }
}

impl Connection {
    async fn open(authority: &str, host: &str, port: u16) -> Result<Self, GetError> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let stream = TcpStream::connect((host, port))
            .await
            .map_err(|_| GetError::Transport)?;
        let _ = stream.set_nodelay(true);
        rx_time::enable(&stream);
        Ok(Self {
            authority: authority.to_owned(),
            stream,
            buf: BytesMut::with_capacity(READ_CHUNK_BYTES),
            received: Instant::now(),
        })
    }

    /// Reads more into the buffer; `Ok(false)` at the end of the connection. Sets
    /// [`Connection::received`].
    async fn fill(&mut self) -> std::io::Result<bool> {
        let (n, at) = self
            .stream
            .async_io(tokio::io::Interest::READABLE, || {
                rx_time::recv(&self.stream, &mut self.buf)
            })
            .await?;
        self.received = at.map_or_else(Instant::now, rx_time::instant_of);
        Ok(n > 0)
    }

    /// Sends a GET for `path` and reads its answer: the answer, and whether the
    /// connection can carry the next request.
    async fn request(&mut self, path: &str, keep: bool) -> Result<(Answer, bool), Failure> {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: tidegate-bench\r\n\r\n",
            self.authority
        );
        if self.stream.write_all(request.as_bytes()).await.is_err() {
            return Err(Failure::NothingCame);
        }
        let mut came = !self.buf.is_empty();
        let (head, head_len) = loop {
            if let Some(h) = parse_head(&self.buf).map_err(Failure::Get)? {
                break h;
            }
            if self.buf.len() > MAX_HEAD_BYTES {
                return Err(Failure::Get(GetError::Transport));
            }
            match self.fill().await {
                Ok(true) => came = true,
                Ok(false) | Err(_) if !came => return Err(Failure::NothingCame),
                Ok(false) => return Err(Failure::Get(GetError::Transport)),
                Err(e) => return Err(e.into()),
            }
        };
        self.buf.advance(head_len);
        let mut sink = BodySink {
            keep: keep.then(BytesMut::new),
            bytes: 0,
            first_byte: None,
        };
        // The head (and what came with it) arrived with the last read.
        let now = self.received;
        match head.framing {
            Framing::Length(n) => {
                if n > MAX_BODY_BYTES {
                    return Err(Failure::Get(GetError::TooLarge));
                }
                let mut at = now;
                if keep {
                    // Kept whole: read into one piece, no copy.
                    self.buf.reserve(n.saturating_sub(self.buf.len()));
                    let mut first = (!self.buf.is_empty()).then_some(now);
                    while self.buf.len() < n {
                        if !self.fill().await? {
                            return Err(Failure::Get(GetError::Transport));
                        }
                        at = self.received;
                        first.get_or_insert(at);
                    }
                    sink.take(self.buf.split_to(n), first.unwrap_or(at))?;
                } else {
                    let mut left = n;
                    loop {
                        let take = left.min(self.buf.len());
                        sink.count(take, at)?;
                        self.buf.advance(take);
                        left -= take;
                        if left == 0 {
                            break;
                        }
                        if !self.fill().await? {
                            return Err(Failure::Get(GetError::Transport));
                        }
                        at = self.received;
                    }
                }
            }
            Framing::Chunked => loop {
                let (size, line) = loop {
                    if let Some(l) = parse_chunk_line(&self.buf).map_err(Failure::Get)? {
                        break l;
                    }
                    if !self.fill().await? {
                        return Err(Failure::Get(GetError::Transport));
                    }
                };
                self.buf.advance(line);
                if size == 0 {
                    // Trailers, if any, up to the empty line.
                    loop {
                        let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") else {
                            if self.buf.len() > MAX_HEAD_BYTES || !self.fill().await? {
                                return Err(Failure::Get(GetError::Transport));
                            }
                            continue;
                        };
                        self.buf.advance(end + 2);
                        if end == 0 {
                            break;
                        }
                    }
                    break;
                }
                if size > MAX_BODY_BYTES {
                    return Err(Failure::Get(GetError::TooLarge));
                }
                let mut left = size;
                let mut at = now;
                while left > 0 {
                    if self.buf.is_empty() {
                        if !self.fill().await? {
                            return Err(Failure::Get(GetError::Transport));
                        }
                        at = self.received;
                    }
                    let take = left.min(self.buf.len());
                    sink.piece(&mut self.buf, take, at)?;
                    left -= take;
                }
                while self.buf.len() < 2 {
                    if !self.fill().await? {
                        return Err(Failure::Get(GetError::Transport));
                    }
                }
                if &self.buf[..2] != b"\r\n" {
                    return Err(Failure::Get(GetError::Transport));
                }
                self.buf.advance(2);
            },
            Framing::Close => {
                let mut at = now;
                loop {
                    let len = self.buf.len();
                    sink.piece(&mut self.buf, len, at)?;
                    if !self.fill().await? {
                        break;
                    }
                    at = self.received;
                }
            }
        }
        let seen = Instant::now();
        let done = self.received;
        let reusable = head.keep_alive && head.framing != Framing::Close && self.buf.is_empty();
        let body = sink.keep.take().map_or_else(Bytes::new, BytesMut::freeze);
        Ok((
            Answer {
                timed: Timed {
                    status: head.status,
                    bytes: sink.bytes as u64,
                    first_byte: sink.first_byte.unwrap_or(done),
                    done,
                    seen,
                },
                body,
            },
            reusable,
        ))
    }
}

/// The kernel's receive timestamps of a TCP socket (`SO_TIMESTAMPNS`, socket(7)): each
/// `recvmsg` returns the receive time of the last segment it read (tcp_recv_timestamp).
mod rx_time {
    use std::io::IoSliceMut;
    use std::os::fd::AsRawFd;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use bytes::BytesMut;
    use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags};
    use tokio::net::TcpStream;
    use tokio::time::Instant;

    /// Bytes asked of the socket per read.
    const READ_BYTES: usize = super::READ_CHUNK_BYTES;

    /// Asks the kernel to time what `stream` receives (without it, reads are timed by the
    /// task).
    pub fn enable(stream: &TcpStream) {
        let _ = setsockopt(stream, sockopt::ReceiveTimestampns, &true);
    }

    /// One `recvmsg` onto the end of `buf`: the bytes read and their receive time.
    pub fn recv(
        stream: &TcpStream,
        buf: &mut BytesMut,
    ) -> std::io::Result<(usize, Option<SystemTime>)> {
        let start = buf.len();
        buf.resize(start + READ_BYTES, 0);
        let mut control = nix::cmsg_space!(nix::sys::time::TimeSpec);
        let read = {
            let mut iov = [IoSliceMut::new(&mut buf[start..])];
            recvmsg::<()>(
                stream.as_raw_fd(),
                &mut iov,
                Some(&mut control),
                MsgFlags::empty(),
            )
            .map(|msg| {
                let at = msg.cmsgs().ok().and_then(|mut c| {
                    c.find_map(|m| match m {
                        ControlMessageOwned::ScmTimestampns(ts) => Some(ts),
                        _ => None,
                    })
                });
                (msg.bytes, at)
            })
        };
        match read {
            Ok((n, at)) => {
                buf.truncate(start + n);
                let at = at
                    .filter(|ts| ts.tv_sec() > 0)
                    .map(|ts| UNIX_EPOCH + Duration::new(ts.tv_sec() as u64, ts.tv_nsec() as u32));
                Ok((n, at))
            }
            Err(e) => {
                buf.truncate(start);
                Err(std::io::Error::from(e))
            }
        }
    }

    /// The monotonic instant of a wall-clock receive time (now, if it seems to lie ahead).
    pub fn instant_of(at: SystemTime) -> Instant {
        let now = Instant::now();
        match SystemTime::now().duration_since(at) {
            Ok(age) => now.checked_sub(age).unwrap_or(now),
            Err(_) => now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn reads_carry_the_kernels_receive_time() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        rx_time::enable(&client);
        let (mut server, _) = listener.accept().await.unwrap();
        let before = std::time::SystemTime::now();
        server.write_all(b"answer").await.unwrap();
        client.readable().await.unwrap();
        let mut buf = BytesMut::new();
        let (n, at) = loop {
            match client.try_io(tokio::io::Interest::READABLE, || {
                rx_time::recv(&client, &mut buf)
            }) {
                Ok(r) => break r,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    client.readable().await.unwrap()
                }
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!((n, &buf[..]), (6, &b"answer"[..]));
        let at = at.expect("a receive timestamp");
        // Stamped when the bytes came: after the write began, not after now.
        assert!(
            at >= before - Duration::from_millis(1),
            "{at:?} < {before:?}"
        );
        assert!(at <= std::time::SystemTime::now());
    }

    #[test]
    fn heads_are_framed_by_length_chunks_or_the_end() {
        let h = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        let (head, len) = parse_head(h).unwrap().unwrap();
        assert_eq!(head.framing, Framing::Length(5));
        assert!(head.keep_alive);
        assert_eq!(&h[len..], b"hello");
        let h = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
        assert_eq!(parse_head(h).unwrap().unwrap().0.framing, Framing::Chunked);
        let h = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n";
        let head = parse_head(h).unwrap().unwrap().0;
        assert_eq!((head.framing, head.keep_alive), (Framing::Close, false));
        let h = b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        let head = parse_head(h).unwrap().unwrap().0;
        assert_eq!((head.status, head.keep_alive), (404, false));
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\nContent-"), Ok(None));
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
    }

    #[test]
    fn chunk_lines() {
        assert_eq!(parse_chunk_line(b"1a\r\n"), Ok(Some((26, 4))));
        assert_eq!(parse_chunk_line(b"0;x=y\r\n\r\n"), Ok(Some((0, 7))));
        assert_eq!(parse_chunk_line(b"1a"), Ok(None));
        assert!(parse_chunk_line(b"zz\r\n").is_err());
    }

    /// A server that answers each request on one connection with the next of `answers`,
    /// written in pieces, then closes.
    async fn serve(answers: Vec<&'static [u8]>) -> (String, tokio::task::JoinHandle<usize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut requests = 0;
            for a in answers {
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    let mut b = [0u8; 1];
                    if s.read(&mut b).await.unwrap() == 0 {
                        return requests;
                    }
                    head.push(b[0]);
                }
                requests += 1;
                for piece in a.chunks(7) {
                    s.write_all(piece).await.unwrap();
                    s.flush().await.unwrap();
                    tokio::task::yield_now().await;
                }
            }
            requests
        });
        (format!("http://{addr}/x.m3u8?a=1"), task)
    }

    #[tokio::test]
    async fn one_connection_carries_length_and_chunked_answers() {
        let (url, server) = serve(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6; e=1\r\n world\r\n0\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nno\n",
        ])
        .await;
        let c = client();
        assert_eq!(
            get(&c, &url).await.unwrap(),
            (200, Bytes::from_static(b"hello world"))
        );
        let t = get_timed(&c, &url, HTTP_TIMEOUT).await.unwrap();
        assert_eq!((t.status, t.bytes), (200, 11));
        assert!(t.first_byte <= t.done);
        assert_eq!(
            get(&c, &url).await.unwrap(),
            (404, Bytes::from_static(b"no\n"))
        );
        drop(c);
        assert_eq!(server.await.unwrap(), 3);
    }

    #[tokio::test]
    async fn a_body_to_the_end_of_the_connection() {
        let (url, _server) = serve(vec![
            b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it",
        ])
        .await;
        let c = client();
        assert_eq!(
            get(&c, &url).await.unwrap(),
            (200, Bytes::from_static(b"all of it"))
        );
    }

    #[tokio::test]
    async fn a_kept_connection_the_server_closed_is_replaced() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/a", listener.local_addr().unwrap());
        tokio::spawn(async move {
            // Each connection: one answer, then closed.
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut b = [0u8; 1024];
                let _ = s.read(&mut b).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
            }
        });
        let c = client();
        for _ in 0..3 {
            assert_eq!(
                get(&c, &url).await.unwrap(),
                (200, Bytes::from_static(b"ok"))
            );
        }
    }

    #[tokio::test]
    async fn urls_other_than_http_are_refused() {
        let c = client();
        assert_eq!(get(&c, "https://h/x").await, Err(GetError::BadUrl));
        assert_eq!(get(&c, "not a url").await, Err(GetError::BadUrl));
    }
}
