//! The accept loop of `--http-listen`, in place of `axum::serve` (which has no header-read
//! or idle timeout and no connection cap: idle connections could take every descriptor).
//!
//! For each accepted socket the [`ConnectionLimiter`] (total, per source address, the
//! descriptor reserve) admits it or it is closed at once, counted by reason and logged
//! within the `http` area's [`LogLimiter`]. An admitted connection is served by hyper's
//! HTTP/1 server with [`crate::origin::App`] as its service (the playback fast path, then
//! the router), under a watchdog that closes it when
//!
//! - a request's head has not arrived in full [`HttpLimits::header_timeout`] after the
//!   connection opened or after the first byte of the request (phase `header`), or
//! - nothing moved either way for [`HttpLimits::idle_timeout`] (phase `idle`): a keep-alive
//!   connection between requests, or a client that stopped reading its answer. While the
//!   router is still producing an answer (an LL-HLS blocking request is held, up to three
//!   target durations, by its handler: `crate::llhls`), the idle clock does not run: the
//!   handler bounds its own time, and the connection still counts against the caps.
//!
//! When accepting fails for want of descriptors or memory, the loop waits (doubling up to
//! a second) instead of retrying at once, and logs once a second at most ([`AcceptBackoff`],
//! shared with the RTMP listener). On `stop` it stops
//! accepting; every connection finishes the request it is serving, then closes.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::metrics::{HttpPhase as Phase, LogArea, Metrics};
use crate::origin::App;
use tidegate_limits::{
    AcceptBackoff, ConnectionGuard, ConnectionLimiter, FdBudget, LogLimiter, LOG_WINDOW,
};

/// The largest request head (request line and headers) a client may send; hyper answers
/// 431 past it. Also bounds what a slow client can make a connection buffer.
pub const MAX_REQUEST_HEAD_BYTES: usize = 64 * 1024;
/// The `area` label of the HTTP listener's rate-limited log lines.
const LOG_AREA: &str = "http";
/// Refusal lines a second: one (a flood of viewers' connections is common and each
/// refusal is counted by reason in the metrics), then the rest are summed up.
const LOG_LINES_PER_SECOND: u32 = 1;

/// The caps and timeouts of the HTTP listener (from `--http-*`).
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Connections open at once from one source address.
    pub max_connections_per_ip: usize,
    /// Time a request's head may take.
    pub header_timeout: Duration,
    /// Time a connection may move nothing (between requests, or while a client does not
    /// read its answer).
    pub idle_timeout: Duration,
}

impl HttpLimits {
    /// The limits `config` asks for.
    pub fn from_config(config: &tidegate_config::HttpConfig) -> Self {
        Self {
            max_connections: config.max_connections,
            max_connections_per_ip: config.max_connections_per_ip,
            header_timeout: config.header_timeout,
            idle_timeout: config.idle_timeout,
        }
    }
}

/// Serves `app` on `listener` until `stop` is cancelled, then waits for the connections
/// to finish their current request (the caller bounds that wait).
pub async fn serve(
    listener: TcpListener,
    app: App,
    limits: HttpLimits,
    fds: Arc<FdBudget>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let limiter = ConnectionLimiter::new(
        limits.max_connections,
        limits.max_connections_per_ip,
        Some(fds),
    );
    let connections = TaskTracker::new();
    let log = LogLimiter::new(
        LOG_AREA,
        LOG_LINES_PER_SECOND,
        metrics.log_suppressed(LogArea::Http),
    );
    let mut accept = AcceptBackoff::new("HTTP", LOG_AREA, metrics.log_suppressed(LogArea::Http));
    let mut summary = tokio::time::interval(LOG_WINDOW);
    summary.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            _ = summary.tick() => {
                let now = Instant::now();
                log.flush(now);
                accept.flush(now);
                continue;
            }
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) if accept.pause(&e, &stop).await => continue,
            Err(_) => break,
        };
        accept.accepted();
        match limiter.try_acquire(peer.ip()) {
            Ok(guard) => {
                connections.spawn(connection(
                    stream,
                    peer,
                    app.clone(),
                    guard,
                    limits,
                    metrics.clone(),
                    stop.clone(),
                ));
            }
            Err(refusal) => {
                // A reset, not a FIN: the peer learns at once, and this side keeps no
                // TIME_WAIT for it.
                let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                drop(stream);
                metrics.http_refused(refusal);
                if log.allow(Instant::now()) {
                    warn!(%peer, reason = refusal.as_str(), "HTTP connection refused");
                }
            }
        }
    }
    drop(listener);
    // The last summary, though its window has not ended.
    log.flush(Instant::now() + LOG_WINDOW);
    connections.close();
    connections.wait().await;
}

/// No request head is under way.
const NO_HEAD: u64 = u64::MAX;

/// What one connection did last, as the watchdog sees it. Times are milliseconds since
/// the connection was accepted. Written by the socket wrapper and the service, which run
/// in the connection's task; atomics only because the types must be `Send`.
#[derive(Debug)]
struct Activity {
    start: Instant,
    header_timeout: Duration,
    idle_timeout: Duration,
    /// Requests whose answer is being produced or sent.
    in_flight: AtomicU32,
    /// Requests whose answer the router is still producing (a held LL-HLS request).
    producing: AtomicU32,
    /// When a byte last moved either way (or an answer was finished).
    last_progress: AtomicU64,
    /// When the head of the coming request started ([`NO_HEAD`] when none is under way).
    /// A fresh connection starts in this phase: its first request must come in time.
    head_started: AtomicU64,
}

impl Activity {
    fn new(start: Instant, limits: &HttpLimits) -> Self {
        Self {
            start,
            header_timeout: limits.header_timeout,
            idle_timeout: limits.idle_timeout,
            in_flight: AtomicU32::new(0),
            producing: AtomicU32::new(0),
            last_progress: AtomicU64::new(0),
            head_started: AtomicU64::new(0),
        }
    }

    fn ms(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.start).as_millis()).unwrap_or(NO_HEAD - 1)
    }

    fn at(&self, ms: u64) -> Instant {
        self.start + Duration::from_millis(ms)
    }

    /// Bytes came in.
    fn handle_read(&self, now: Instant) {
        let t = self.ms(now);
        self.last_progress.store(t, Ordering::Relaxed);
        if self.in_flight.load(Ordering::Relaxed) == 0 {
            // The first byte of a request after the last answer starts its head's clock;
            // later bytes do not move it (a trickle gains nothing).
            let _ = self.head_started.compare_exchange(
                NO_HEAD,
                t,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// Bytes went out.
    fn handle_write(&self, now: Instant) {
        self.last_progress.store(self.ms(now), Ordering::Relaxed);
    }

    /// A request's head arrived in full; its answer is being produced.
    fn handle_request(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_started.store(NO_HEAD, Ordering::Relaxed);
    }

    /// The router is producing a request's answer.
    fn handle_producing(&self) {
        self.producing.fetch_add(1, Ordering::Relaxed);
    }

    /// The router produced a request's answer (or gave up on it): from now on its sending
    /// is timed as idle.
    fn handle_produced(&self, now: Instant) {
        self.producing.fetch_sub(1, Ordering::Relaxed);
        self.last_progress.store(self.ms(now), Ordering::Relaxed);
    }

    /// A request's answer is finished (or abandoned).
    fn handle_answered(&self, now: Instant) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.last_progress.store(self.ms(now), Ordering::Relaxed);
    }

    /// The next deadline, or the phase whose deadline has passed at `now`.
    fn poll_deadline(&self, now: Instant) -> Result<Instant, Phase> {
        let idle = if self.producing.load(Ordering::Relaxed) > 0 {
            // The handler bounds its own time; check back an idle timeout from now.
            now + self.idle_timeout
        } else {
            self.at(self.last_progress.load(Ordering::Relaxed)) + self.idle_timeout
        };
        let mut next = (idle, Phase::Idle);
        let head = self.head_started.load(Ordering::Relaxed);
        if head != NO_HEAD {
            let header = self.at(head) + self.header_timeout;
            if header < next.0 {
                next = (header, Phase::Header);
            }
        }
        if now >= next.0 {
            Err(next.1)
        } else {
            Ok(next.0)
        }
    }
}

/// The socket with the watchdog's view of it.
struct Watched {
    io: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.handle_read(Instant::now());
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.handle_write(Instant::now());
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.handle_write(Instant::now());
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// One request whose answer the router is producing; produced when dropped (the router
/// returned, or the connection went first and dropped its future).
struct Producing(Arc<Activity>);

impl Producing {
    fn new(activity: Arc<Activity>) -> Self {
        activity.handle_producing();
        Self(activity)
    }
}

impl Drop for Producing {
    fn drop(&mut self) {
        self.0.handle_produced(Instant::now());
    }
}

/// One request in flight; answered when dropped (with its answer's body, or with the
/// handler's future when the connection goes first).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(activity: Arc<Activity>) -> Self {
        activity.handle_request();
        Self(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.handle_answered(Instant::now());
    }
}

/// An answer's body that keeps its request in flight until hyper has taken all of it.
struct TrackedBody {
    body: Body,
    _in_flight: InFlight,
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The HTTP connections open now (the gauge), for as long as this lives.
struct OpenConnection(Arc<Metrics>);

impl OpenConnection {
    fn new(metrics: Arc<Metrics>) -> Self {
        metrics.http_connections_open.inc();
        Self(metrics)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.http_connections_open.dec();
    }
}

/// Serves one admitted connection until it ends, times out or is told to stop.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: App,
    guard: ConnectionGuard,
    limits: HttpLimits,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let _open = OpenConnection::new(metrics.clone());
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity::new(Instant::now(), &limits));
    let io = TokioIo::new(Watched {
        io: stream,
        activity: activity.clone(),
    });
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            let in_flight = InFlight::new(activity.clone());
            let producing = Producing::new(activity.clone());
            let app = app.clone();
            async move {
                // Playback first (`crate::origin::Playback`): the same answer as the
                // router's, for a fraction of its cost.
                let fast = app
                    .playback
                    .answer(
                        request.method(),
                        request.uri().path(),
                        request.uri().query(),
                    )
                    .await;
                let response = match fast {
                    Some(r) => r,
                    None => {
                        // Who is asking, for the log lines of refused admin credentials.
                        request
                            .extensions_mut()
                            .insert(axum::extract::ConnectInfo(peer));
                        let mut router = app.router;
                        // The router is always ready and never fails (`Infallible`).
                        match tower_service::Service::call(&mut router, request).await {
                            Ok(r) => r,
                            Err(never) => match never {},
                        }
                    }
                };
                drop(producing);
                Ok::<_, Infallible>(response.map(|body| TrackedBody {
                    body,
                    _in_flight: in_flight,
                }))
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .keep_alive(true)
        // The watchdog times heads, so that hyper's clock (which also runs between
        // requests) does not stand in for the idle timeout.
        .header_read_timeout(None)
        .max_header_size(MAX_REQUEST_HEAD_BYTES)
        .max_buf_size(MAX_REQUEST_HEAD_BYTES);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        let deadline = match activity.poll_deadline(Instant::now()) {
            Ok(d) => d,
            Err(phase) => {
                metrics.http_timeout(phase);
                debug!(%peer, phase = phase.as_str(), "HTTP connection timed out");
                break;
            }
        };
        tokio::select! {
            ended = conn.as_mut() => {
                if let Err(e) = ended {
                    if e.is_parse() {
                        // hyper answered a malformed or oversized head itself (400, 414,
                        // 431): the router never saw it, so count it here.
                        metrics.http_answer(http::StatusCode::BAD_REQUEST);
                    }
                    debug!(%peer, error = %e, "HTTP connection ended with an error");
                }
                break;
            }
            () = tokio::time::sleep_until(deadline.into()) => {}
            () = stop.cancelled(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
    drop(guard);
}

/// Logs the HTTP limits in force once at start.
pub fn log_limits(limits: &HttpLimits, fds: &FdBudget) {
    info!(
        max_connections = limits.max_connections,
        max_connections_per_ip = limits.max_connections_per_ip,
        header_timeout_s = limits.header_timeout.as_secs_f64(),
        idle_timeout_s = limits.idle_timeout.as_secs_f64(),
        fd_limit = fds.limit(),
        fd_reserve = fds.reserve(),
        "HTTP connection limits"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(header_s: u64, idle_s: u64) -> HttpLimits {
        HttpLimits {
            max_connections: 10,
            max_connections_per_ip: 10,
            header_timeout: Duration::from_secs(header_s),
            idle_timeout: Duration::from_secs(idle_s),
        }
    }

    fn secs(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    #[test]
    fn a_silent_new_connection_gets_the_header_timeout() {
        let t0 = Instant::now();
        let a = Activity::new(t0, &limits(10, 60));
        assert_eq!(a.poll_deadline(t0), Ok(secs(t0, 10)));
        assert_eq!(a.poll_deadline(secs(t0, 10)), Err(Phase::Header));
    }

    #[test]
    fn a_trickled_head_does_not_move_its_deadline() {
        let t0 = Instant::now();
        let a = Activity::new(t0, &limits(10, 60));
        for s in 1..10 {
            a.handle_read(secs(t0, s));
        }
        assert_eq!(a.poll_deadline(secs(t0, 10)), Err(Phase::Header));
    }

    #[test]
    fn between_requests_the_idle_timeout_counts_from_the_last_answer() {
        let t0 = Instant::now();
        let a = Activity::new(t0, &limits(10, 60));
        a.handle_read(secs(t0, 1));
        a.handle_request();
        // Answering takes long but moves bytes: no timeout while it does.
        a.handle_write(secs(t0, 30));
        a.handle_write(secs(t0, 80));
        a.handle_answered(secs(t0, 81));
        assert_eq!(a.poll_deadline(secs(t0, 100)), Ok(secs(t0, 141)));
        assert_eq!(a.poll_deadline(secs(t0, 141)), Err(Phase::Idle));
        // The next request's first byte starts its header clock.
        a.handle_read(secs(t0, 120));
        assert_eq!(a.poll_deadline(secs(t0, 125)), Ok(secs(t0, 130)));
        assert_eq!(a.poll_deadline(secs(t0, 130)), Err(Phase::Header));
    }

    #[test]
    fn a_client_that_stops_reading_its_answer_times_out_as_idle() {
        let t0 = Instant::now();
        let a = Activity::new(t0, &limits(10, 60));
        a.handle_read(secs(t0, 1));
        a.handle_request();
        a.handle_write(secs(t0, 2));
        assert_eq!(a.poll_deadline(secs(t0, 61)), Ok(secs(t0, 62)));
        assert_eq!(a.poll_deadline(secs(t0, 62)), Err(Phase::Idle));
    }

    #[test]
    fn bytes_read_while_answering_do_not_start_a_head() {
        let t0 = Instant::now();
        let a = Activity::new(t0, &limits(10, 60));
        a.handle_read(secs(t0, 1));
        a.handle_request();
        a.handle_read(secs(t0, 2));
        assert_eq!(a.poll_deadline(secs(t0, 20)), Ok(secs(t0, 62)));
    }

    /// An LL-HLS blocking request is held by its handler for up to three target durations
    /// with nothing moving: the idle timeout must not cut it short, and runs again once
    /// the answer is produced.
    #[test]
    fn a_request_held_by_its_handler_is_not_idle() {
        let t0 = Instant::now();
        let a = Activity::new(t0, &limits(10, 5));
        a.handle_read(secs(t0, 1));
        a.handle_request();
        a.handle_producing();
        assert_eq!(a.poll_deadline(secs(t0, 30)), Ok(secs(t0, 35)));
        a.handle_produced(secs(t0, 31));
        a.handle_write(secs(t0, 31));
        assert_eq!(a.poll_deadline(secs(t0, 32)), Ok(secs(t0, 36)));
        a.handle_answered(secs(t0, 31));
        assert_eq!(a.poll_deadline(secs(t0, 36)), Err(Phase::Idle));
    }

    #[test]
    fn the_earlier_of_header_and_idle_deadlines_wins() {
        let t0 = Instant::now();
        let a = Activity::new(t0, &limits(30, 5));
        assert_eq!(a.poll_deadline(secs(t0, 5)), Err(Phase::Idle));
    }
}
