//! The SRT listener and its connection drivers.
//!
//! One UDP socket. The *router* task receives in batches (`recvmmsg` and GRO through
//! `quinn-udp`), answers handshakes with the sans-IO [`Listener`] (stateless SYN cookies, so
//! a handshake flood costs nothing), and hands every other datagram to the task that owns
//! its connection, by destination socket ID, over a bounded channel (a full channel drops
//! the datagram, exactly like a full socket buffer would; SRT retransmits it).
//!
//! One task per connection owns one [`Connection`] (ARQ, TSBPD), one [`TsDemuxer`] and one
//! [`Publisher`]. Its loop: datagram in → `handle_datagram` → send every `poll_transmit` →
//! payloads from `poll_event` into the demuxer → media events into the publisher → re-arm
//! the one timer from `poll_timeout`.
//!
//! The same driver runs pulled connections ([`super::srt_pull`]): there the task owns its
//! own socket instead of a routed channel ([`Inbox`]).

use std::collections::HashMap;
use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use quinn_udp::{RecvMeta, UdpSockRef, UdpSocketState};
use tidegate_mpegts::TsDemuxer;
use tidegate_srt::{
    peek_dest_socket_id, AcceptParams, Connection, ConnectionRequest, Event, Listener,
    ListenerConfig, ListenerOutput, RejectReason,
};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, warn, Instrument};

use super::srt_pull::PullSocket;
use crate::metrics::{Protocol, ProtocolLabels};
use crate::store::StreamId;
use crate::stream::Publisher;
use crate::webhooks::Verdict;
use crate::Context;

/// Datagrams read per `recvmmsg` call.
const BATCH: usize = 32;
/// Largest datagram (SRT live payloads are 1316 bytes + 16 header; room for GRO batches).
const DATAGRAM_BUF: usize = 64 * 1024;
/// Datagrams queued per connection before the router drops (as a full socket would).
const CONNECTION_QUEUE: usize = 1024;
/// Kernel receive buffer for the shared listener socket: one buffer for every connection,
/// sized for about 1 Gbit/s of SRT with a 250 ms stall of the receive task (libsrt gives each
/// connection 11.5 MB of its own instead). Linux counts its bookkeeping against the buffer
/// (about twice a 1.3 KB datagram's size on loopback), hence the headroom.
pub const LISTENER_RECV_BUFFER: usize = 32 << 20;
/// Kernel receive buffer of a pull (caller) socket: one stream.
pub const PULL_RECV_BUFFER: usize = 4 << 20;
/// Kernel send buffer (ACKs, NAKs and handshakes only).
const SOCKET_SEND_BUFFER: usize = 1 << 20;

type Routes = Arc<Mutex<HashMap<u32, mpsc::Sender<Bytes>>>>;

pub(crate) fn os_secret() -> [u8; 32] {
    let mut secret = [0u8; 32];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut secret);
    }
    // Mixed with the time and pid so a missing /dev/urandom still gives distinct secrets.
    let t = crate::unix_ms().to_le_bytes();
    let p = std::process::id().to_le_bytes();
    for (i, b) in t.iter().chain(p.iter()).enumerate() {
        secret[i] ^= b;
    }
    secret
}

/// What a stream ID asks for.
#[derive(Debug, PartialEq, Eq)]
pub struct StreamRequest {
    /// The stream key.
    pub key: String,
    /// The user name (`u=`), if any.
    pub user: Option<String>,
}

/// Parses an SRT stream ID: the access-control syntax `#!::r=live/KEY,m=publish` (keys `r`,
/// `m`, `u`, `s`, `h`, `t`; `r` may carry an application prefix) or a bare `KEY`.
/// `m=request` (playback) and unknown modes are refused with [`RejectReason::BAD_MODE`].
pub fn parse_stream_id(sid: &str) -> Result<StreamRequest, RejectReason> {
    let Some(body) = sid.strip_prefix("#!::") else {
        let key = sid.strip_prefix("live/").unwrap_or(sid);
        return if key.is_empty() {
            Err(RejectReason::BAD_REQUEST)
        } else {
            Ok(StreamRequest {
                key: key.to_owned(),
                user: None,
            })
        };
    };
    let mut resource = None;
    let mut user = None;
    for pair in body.split(',') {
        let (k, v) = pair.split_once('=').ok_or(RejectReason::BAD_REQUEST)?;
        match k {
            "r" => resource = Some(v),
            "u" => user = Some(v.to_owned()),
            "m" => match v {
                "publish" => {}
                _ => return Err(RejectReason::BAD_MODE),
            },
            _ => {}
        }
    }
    let resource = resource.ok_or(RejectReason::BAD_REQUEST)?;
    // `r=live/KEY` or `r=KEY`: the last path component is the key.
    let key = resource.rsplit('/').next().unwrap_or(resource);
    if key.is_empty() {
        return Err(RejectReason::BAD_REQUEST);
    }
    Ok(StreamRequest {
        key: key.to_owned(),
        user,
    })
}

/// Sets the socket's receive buffer to `want` bytes. When `net.core.rmem_max` caps it, tries
/// `SO_RCVBUFFORCE` (allowed with CAP_NET_ADMIN, e.g. as root), and says so when neither
/// works: a small buffer drops datagrams in bursts, which SRT then has to retransmit.
/// Returns the size the kernel reports (Linux reports twice what it was asked for).
fn size_recv_buffer(sock: &socket2::Socket, want: usize) -> usize {
    let _ = sock.set_recv_buffer_size(want);
    let got = sock.recv_buffer_size().unwrap_or(0);
    if got >= want {
        return got;
    }
    #[cfg(target_os = "linux")]
    {
        if rustix::net::sockopt::set_socket_recv_buffer_size_force(sock, want).is_ok() {
            let forced = sock.recv_buffer_size().unwrap_or(got);
            debug!(
                bytes = forced,
                "srt: receive buffer forced past net.core.rmem_max"
            );
            return forced;
        }
    }
    warn!(
        wanted = want,
        got,
        "srt: the kernel capped the UDP receive buffer (net.core.rmem_max); bursts of many \
         publishers may be dropped and retransmitted: raise net.core.rmem_max or grant \
         CAP_NET_ADMIN"
    );
    got
}

/// Binds an SRT socket with a receive buffer of `recv_buffer` bytes (see
/// [`LISTENER_RECV_BUFFER`], [`PULL_RECV_BUFFER`]).
pub fn bind(addr: SocketAddr, recv_buffer: usize) -> std::io::Result<UdpSocket> {
    let domain = if addr.is_ipv4() {
        socket2::Domain::IPV4
    } else {
        socket2::Domain::IPV6
    };
    let sock = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    sock.set_nonblocking(true)?;
    size_recv_buffer(&sock, recv_buffer);
    let _ = sock.set_send_buffer_size(SOCKET_SEND_BUFFER);
    sock.bind(&addr.into())?;
    UdpSocket::from_std(sock.into())
}

/// Serves SRT publishers on `socket` until `shutdown` is cancelled.
pub async fn serve(socket: UdpSocket, ctx: Arc<Context>, shutdown: CancellationToken) {
    let socket = Arc::new(socket);
    let state = match UdpSocketState::new(UdpSockRef::from(&*socket)) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            warn!(error = %e, "srt: cannot set up the UDP socket");
            return;
        }
    };
    let mut config = ListenerConfig::new(os_secret());
    config.latency = ctx.config.srt_latency;
    let mut listener = Listener::new(Instant::now(), config);
    let routes: Routes = Arc::default();
    let tracker = tokio_util::task::TaskTracker::new();
    let mut bufs: Vec<Vec<u8>> = (0..BATCH).map(|_| vec![0u8; DATAGRAM_BUF]).collect();
    let mut meta = vec![RecvMeta::default(); BATCH];
    let ingest = ctx
        .metrics
        .ingest_bytes
        .get_or_create(&ProtocolLabels {
            protocol: Protocol::Srt,
        })
        .clone();
    // Verdicts of the on-publish callback, which runs in its own task so that the router
    // never waits on it; the caller repeats its conclusion meanwhile (answered with
    // nothing by the listener, which keeps the request pending).
    let (decided_tx, mut decided_rx) = mpsc::channel::<Decided>(DECIDED_QUEUE);
    let checks = Arc::new(Semaphore::new(MAX_PUBLISH_CHECKS));
    loop {
        let n = tokio::select! {
            r = socket.async_io(Interest::READABLE, || {
                let mut slices: Vec<IoSliceMut<'_>> =
                    bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
                state.recv(UdpSockRef::from(&*socket), &mut slices, &mut meta)
            }) => r,
            Some(d) = decided_rx.recv() => {
                let now = Instant::now();
                let peer = d.req.peer_addr();
                let resp = if d.verdict == Verdict::Accept {
                    admit(
                        &ctx, &socket, &state, &mut listener, &routes, &tracker, &shutdown, now,
                        d.req, d.id,
                    )
                    .await
                } else {
                    let reason = d.verdict.reason();
                    ctx.metrics.refused(Protocol::Srt, reason);
                    warn!(stream = %d.id, peer = %peer, reason, "srt: publish refused by the on-publish callback");
                    let code = match d.verdict {
                        Verdict::Unavailable => RejectReason::ISE,
                        _ => RejectReason::FORBIDDEN,
                    };
                    listener.reject(now, d.req, code)
                };
                send(&socket, &state, peer, &resp);
                continue;
            }
            () = shutdown.cancelled() => break,
        };
        let n = match n {
            Ok(n) => n,
            Err(e) => {
                debug!(error = %e, "srt: recv failed");
                continue;
            }
        };
        let now = Instant::now();
        for (m, buf) in meta.iter().zip(bufs.iter()).take(n) {
            let stride = m.stride.max(1);
            let mut off = 0;
            while off < m.len {
                let end = (off + stride).min(m.len);
                let Some(datagram) = buf.get(off..end) else {
                    break;
                };
                off = end;
                ingest.inc_by(datagram.len() as u64);
                route(
                    &ctx,
                    &socket,
                    &state,
                    &mut listener,
                    &routes,
                    &tracker,
                    &shutdown,
                    &decided_tx,
                    &checks,
                    now,
                    m.addr,
                    datagram,
                )
                .await;
            }
        }
    }
    tracker.close();
    tracker.wait().await;
}

#[allow(clippy::too_many_arguments)]
async fn route(
    ctx: &Arc<Context>,
    socket: &Arc<UdpSocket>,
    state: &Arc<UdpSocketState>,
    listener: &mut Listener,
    routes: &Routes,
    tracker: &tokio_util::task::TaskTracker,
    shutdown: &CancellationToken,
    decided: &mpsc::Sender<Decided>,
    checks: &Arc<Semaphore>,
    now: Instant,
    from: SocketAddr,
    datagram: &[u8],
) {
    let Some(dest) = peek_dest_socket_id(datagram) else {
        ctx.metrics.connection_error(Protocol::Srt, "malformed");
        return;
    };
    if dest != 0 {
        let tx = routes.lock().ok().and_then(|r| r.get(&dest).cloned());
        if let Some(tx) = tx {
            let _ = tx.try_send(Bytes::copy_from_slice(datagram));
        }
        return;
    }
    match listener.handle_datagram(now, from, datagram) {
        Ok(ListenerOutput::Nothing) => {}
        Ok(ListenerOutput::Transmit(resp)) => send(socket, state, from, &resp),
        Ok(ListenerOutput::Request(req)) => {
            ctx.metrics
                .connections
                .get_or_create(&ProtocolLabels {
                    protocol: Protocol::Srt,
                })
                .inc();
            let id = match request_stream(&req) {
                Ok(id) => id,
                Err(reason) => {
                    ctx.metrics.refused(Protocol::Srt, "bad_stream_id");
                    warn!(peer = %from, reason = reason.0, "srt: publish refused: stream id not usable");
                    let resp = listener.reject(now, req, reason);
                    send(socket, state, from, &resp);
                    return;
                }
            };
            if ctx.on_publish.is_some() {
                let Ok(permit) = checks.clone().try_acquire_owned() else {
                    ctx.metrics.refused(Protocol::Srt, "on_publish_busy");
                    warn!(stream = %id, peer = %from, "srt: publish refused: too many on-publish checks in flight");
                    let resp = listener.reject(now, req, RejectReason::BACKLOG);
                    send(socket, state, from, &resp);
                    return;
                };
                let ctx = ctx.clone();
                let decided = decided.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    let Some(hook) = &ctx.on_publish else { return };
                    let verdict = hook.check(&id, Protocol::Srt, None, from).await;
                    // A full queue or a stopped router: the caller times out and retries.
                    let _ = decided.send(Decided { req, id, verdict }).await;
                });
                return;
            }
            let resp = admit(
                ctx, socket, state, listener, routes, tracker, shutdown, now, req, id,
            )
            .await;
            send(socket, state, from, &resp);
        }
        Err(e) => {
            ctx.metrics.connection_error(Protocol::Srt, "malformed");
            debug!(peer = %from, error = %e, "srt: bad handshake datagram");
        }
    }
}

pub(crate) fn send(socket: &UdpSocket, state: &UdpSocketState, to: SocketAddr, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let transmit = quinn_udp::Transmit {
        destination: to,
        ecn: None,
        contents: data,
        segment_size: None,
        src_ip: None,
    };
    // A full send buffer drops the datagram; SRT's ARQ recovers, as with any UDP loss.
    let _ = state.try_send(UdpSockRef::from(socket), &transmit);
}

/// The stream a connection request asks to publish (open mode: tenant `default`).
fn request_stream(req: &ConnectionRequest) -> Result<StreamId, RejectReason> {
    let r = parse_stream_id(req.stream_id().unwrap_or_default())?;
    StreamId::new("default", &r.key).ok_or(RejectReason::BAD_REQUEST)
}

/// A connection request and the on-publish callback's verdict on it.
struct Decided {
    req: ConnectionRequest,
    id: StreamId,
    verdict: Verdict,
}

/// Verdicts waiting for the router.
const DECIDED_QUEUE: usize = 64;
/// on-publish callbacks in flight at once; beyond, callers are refused with
/// `SRT_REJ_BACKLOG` (a handshake flood must not become a flood of HTTP calls).
const MAX_PUBLISH_CHECKS: usize = 256;

/// Decides on a connection request for `id`: handshake → publish slot → accept.
#[allow(clippy::too_many_arguments)]
async fn admit(
    ctx: &Arc<Context>,
    socket: &Arc<UdpSocket>,
    state: &Arc<UdpSocketState>,
    listener: &mut Listener,
    routes: &Routes,
    tracker: &tokio_util::task::TaskTracker,
    shutdown: &CancellationToken,
    now: Instant,
    req: ConnectionRequest,
    id: StreamId,
) -> Vec<u8> {
    let peer = req.peer_addr();
    let metrics = &ctx.metrics;
    // The handshake first (passphrase, key length, latency): a caller refused here leaves no
    // trace in the stream state.
    let params = AcceptParams {
        passphrase: ctx.config.srt_passphrase.clone(),
        latency: Some(ctx.config.srt_latency),
        enforce_key_length: tidegate_srt::KeyLength::from_bytes(usize::from(
            ctx.config.srt_pbkeylen,
        )),
    };
    let (mut conn, resp) = match listener.accept(now, req, params) {
        Ok(accepted) => accepted,
        Err(rejection) => {
            let reason = rejection.reason;
            let label = match reason {
                RejectReason::BADSECRET => "bad_passphrase",
                RejectReason::UNSECURE => "encryption_mismatch",
                _ => "handshake",
            };
            metrics.refused(Protocol::Srt, label);
            warn!(stream = %id, peer = %peer, reason = reason.0, "srt: handshake refused ({label})");
            return rejection.response;
        }
    };
    let publisher = match ctx.streams.begin_publish(id.clone(), Protocol::Srt).await {
        Ok(p) => p,
        Err(e) => {
            // The connection is up but may not publish: answer, then shut it down at once.
            metrics.refused(Protocol::Srt, e.reason());
            warn!(stream = %id, peer = %peer, reason = e.reason(), "srt: publish refused: {e}");
            send(socket, state, peer, &resp);
            conn.close(now);
            while let Some(d) = conn.poll_transmit(now) {
                send(socket, state, peer, &d);
            }
            return Vec::new();
        }
    };
    let (tx, rx) = mpsc::channel(CONNECTION_QUEUE);
    let socket_id = conn.socket_id();
    if let Ok(mut r) = routes.lock() {
        r.insert(socket_id, tx);
    }
    info!(stream = %id, peer = %peer, epoch = publisher.epoch(), latency_ms = conn.latency().as_millis() as u64, encrypted = conn.is_encrypted(), "srt: publishing");
    let driver = ConnectionDriver::new(
        ctx.clone(),
        socket.clone(),
        state.clone(),
        conn,
        publisher,
        Inbox::Routed(rx),
    );
    let routes = routes.clone();
    let shutdown = shutdown.clone();
    let span = info_span!("srt", socket = socket_id, peer = %peer);
    tracker.spawn(
        async move {
            driver.run(shutdown).await;
            if let Ok(mut r) = routes.lock() {
                r.remove(&socket_id);
            }
        }
        .instrument(span),
    );
    resp
}

/// Where a connection's datagrams come from.
pub(crate) enum Inbox {
    /// The listener's router, by destination socket ID.
    Routed(mpsc::Receiver<Bytes>),
    /// A socket of its own (a pulled connection); datagrams from anyone but the peer are
    /// ignored.
    Own(PullSocket),
}

/// How a connection ended.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DriverEnd {
    /// Why (a fixed phrase, logged).
    pub reason: &'static str,
    /// Payloads the connection delivered.
    pub delivered: u64,
}

/// One established connection feeding one publisher: SRT → MPEG-TS demuxer → stream.
pub(crate) struct ConnectionDriver {
    ctx: Arc<Context>,
    socket: Arc<UdpSocket>,
    state: Arc<UdpSocketState>,
    conn: Connection,
    demux: TsDemuxer,
    publisher: Option<Publisher>,
    inbox: Inbox,
    /// Counters as last reported to telemetry.
    reported: tidegate_srt::Stats,
    next_report: Instant,
}

/// How often a connection's SRT counters go to health and metrics.
const STATS_INTERVAL: Duration = Duration::from_secs(1);

impl ConnectionDriver {
    pub(crate) fn new(
        ctx: Arc<Context>,
        socket: Arc<UdpSocket>,
        state: Arc<UdpSocketState>,
        conn: Connection,
        publisher: Publisher,
        inbox: Inbox,
    ) -> Self {
        ConnectionDriver {
            ctx,
            socket,
            state,
            conn,
            demux: TsDemuxer::new(),
            publisher: Some(publisher),
            inbox,
            reported: tidegate_srt::Stats::default(),
            next_report: Instant::now() + STATS_INTERVAL,
        }
    }

    /// The next datagram from the peer; `Err(reason)` when no more can come.
    async fn recv(&mut self) -> Result<Bytes, &'static str> {
        let peer = self.conn.peer_addr();
        match &mut self.inbox {
            Inbox::Routed(rx) => rx.recv().await.ok_or("router closed"),
            Inbox::Own(sock) => loop {
                match sock.recv().await {
                    Ok((from, d)) if from == peer => return Ok(d),
                    Ok(_) => {}
                    // ICMP port unreachable on our connected socket: the remote is gone.
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                        return Err("peer unreachable");
                    }
                    // Anything else: the idle timeout decides.
                    Err(e) => {
                        debug!(error = %e, "srt: recv failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            },
        }
    }

    /// Runs until the connection ends, then finishes the publisher.
    pub(crate) async fn run(mut self, shutdown: CancellationToken) -> DriverEnd {
        let closed = self
            .publisher
            .as_ref()
            .map(|p| p.closed())
            .unwrap_or_default();
        let peer = self.conn.peer_addr();
        let end: Result<&'static str, (&'static str, String)> = loop {
            if !self.flush() {
                break Ok("peer unreachable");
            }
            let deadline = self
                .conn
                .poll_timeout()
                .map_or(self.next_report, |t| t.min(self.next_report));
            tokio::select! {
                d = self.recv() => match d {
                    Ok(d) => {
                        if let Some(p) = &self.publisher {
                            p.telemetry().note_bytes(d.len() as u64);
                        }
                        if let Err(e) = self.conn.handle_datagram(Instant::now(), &d) {
                            debug!(error = %e, "srt: bad datagram");
                        }
                    }
                    Err(reason) => break Ok(reason),
                },
                () = tokio::time::sleep_until(deadline.into()) => {
                    let now = Instant::now();
                    self.conn.handle_timeout(now);
                    if now >= self.next_report {
                        self.report_stats();
                        self.next_report = now + STATS_INTERVAL;
                    }
                },
                () = closed.cancelled() => {
                    self.conn.close(Instant::now());
                    let _ = self.flush();
                    break Err(("superseded", "the stream was taken over or its writer stopped".into()));
                },
                () = shutdown.cancelled() => {
                    self.conn.close(Instant::now());
                    let _ = self.flush();
                    break Ok("worker shutting down");
                },
            }
            match self.drain_events().await {
                Ok(None) => {}
                Ok(Some(reason)) => break Ok(reason),
                Err(("drain", _)) => {
                    // Draining worker, segment boundary reached: leave so the encoder
                    // reconnects elsewhere.
                    self.conn.close(Instant::now());
                    let _ = self.flush();
                    break Ok("worker draining");
                }
                Err(e) => {
                    self.conn.close(Instant::now());
                    let _ = self.flush();
                    break Err(e);
                }
            }
        };
        self.report_stats();
        let stats = self.conn.stats();
        let reason: &'static str = match &end {
            Ok(reason) => reason,
            Err((kind, _)) => kind,
        };
        match end {
            Ok(reason) => info!(
                peer = %peer,
                reason,
                received = stats.packets_received,
                lost = stats.packets_lost,
                retransmitted = stats.packets_retransmitted_received,
                dropped = stats.packets_dropped,
                "srt: connection closed"
            ),
            Err((kind, msg)) => {
                self.ctx.metrics.connection_error(Protocol::Srt, kind);
                warn!(peer = %peer, reason = kind, error = %msg, "srt: connection ended");
            }
        }
        if let Some(p) = self.publisher.take() {
            p.finish().await;
        }
        DriverEnd {
            reason,
            delivered: stats.packets_delivered,
        }
    }

    fn report_stats(&mut self) {
        let Some(p) = &self.publisher else { return };
        let now = self.conn.stats();
        let was = &self.reported;
        let delta = crate::telemetry::PacketDelta {
            received: now.packets_received.saturating_sub(was.packets_received),
            lost: now.packets_lost.saturating_sub(was.packets_lost),
            dropped: now.packets_dropped.saturating_sub(was.packets_dropped),
            retransmitted: now
                .packets_retransmitted_received
                .saturating_sub(was.packets_retransmitted_received),
        };
        p.telemetry()
            .note_packets(&self.ctx.metrics, delta, now.rtt);
        self.reported = now;
    }

    /// Sends everything due. `false` when the peer is known to be gone (our own connected
    /// socket got an ICMP "port unreachable" back).
    fn flush(&mut self) -> bool {
        let peer = self.conn.peer_addr();
        let mut reachable = true;
        while let Some(d) = self.conn.poll_transmit(Instant::now()) {
            match &self.inbox {
                Inbox::Routed(_) => send(&self.socket, &self.state, peer, &d),
                // A full send buffer drops the datagram, as any UDP loss; a refusal is final.
                Inbox::Own(_) => {
                    if let Err(e) = self.socket.try_send(&d) {
                        reachable &= e.kind() != std::io::ErrorKind::ConnectionRefused;
                    }
                }
            }
        }
        reachable
    }

    /// Payloads into the demuxer, media into the publisher. `Ok(Some(reason))` when the
    /// connection closed.
    async fn drain_events(&mut self) -> Result<Option<&'static str>, (&'static str, String)> {
        while let Some(ev) = self.conn.poll_event() {
            match ev {
                Event::Payload(data) => {
                    self.demux
                        .handle_input(&data)
                        .map_err(|e| (e.kind(), e.to_string()))?;
                    while let Some(m) = self.demux.poll_event() {
                        if let Some(p) = self.publisher.as_mut() {
                            p.handle_media(m, &self.ctx.metrics).await.map_err(|e| {
                                if e.is_drain() {
                                    ("drain", e.to_string())
                                } else {
                                    ("packager", e.to_string())
                                }
                            })?;
                        }
                    }
                }
                Event::Closed { reason } => {
                    return Ok(Some(match reason {
                        tidegate_srt::CloseReason::PeerShutdown => "peer shutdown",
                        tidegate_srt::CloseReason::Timeout => "peer idle timeout",
                        _ => "closed",
                    }));
                }
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids() {
        let ok = |s: &str, key: &str| assert_eq!(parse_stream_id(s).unwrap().key, key, "{s}");
        ok("#!::r=live/cam1,m=publish", "cam1");
        ok("#!::m=publish,r=cam2", "cam2");
        ok("#!::r=live/cam3,m=publish,u=alice,s=abc", "cam3");
        ok("#!::r=cam4", "cam4");
        ok("cam5", "cam5");
        ok("live/cam6", "cam6");
        assert_eq!(
            parse_stream_id("#!::r=live/cam,m=publish,u=bob")
                .unwrap()
                .user
                .as_deref(),
            Some("bob")
        );
        assert_eq!(
            parse_stream_id("#!::r=live/cam,m=request"),
            Err(RejectReason::BAD_MODE)
        );
        assert_eq!(
            parse_stream_id("#!::m=publish"),
            Err(RejectReason::BAD_REQUEST)
        );
        assert_eq!(
            parse_stream_id("#!::r=live/"),
            Err(RejectReason::BAD_REQUEST)
        );
        assert_eq!(
            parse_stream_id("#!::garbage"),
            Err(RejectReason::BAD_REQUEST)
        );
        assert_eq!(parse_stream_id(""), Err(RejectReason::BAD_REQUEST));
    }
}
