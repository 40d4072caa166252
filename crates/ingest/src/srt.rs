//! The SRT listener and its connection drivers.
//!
//! One UDP socket. The *router* task receives in batches (`recvmmsg` and GRO through
//! `quinn-udp`), answers handshakes with the sans-IO [`Listener`] (stateless SYN cookies, so
//! a handshake flood costs nothing), and hands every other datagram to the task that owns
//! its connection, by destination socket ID *and* source address ([`tidegate_srt::Routes`]:
//! a connection hears only its own peer, as in libsrt), over a bounded channel (a full
//! channel drops the datagram, exactly like a full socket buffer would; SRT retransmits
//! it). What is dropped is counted in `tidegate_srt_packets_ignored_total{reason}`.
//!
//! What a caller can make the router hold before it is admitted is bounded: nothing for an
//! induction (SYN cookie); once its cookie is valid, a connection slot (the ingest
//! [`ConnectionLimiter`](tidegate_limits::ConnectionLimiter) RTMP shares: `--max-connections`,
//! `--max-connections-per-ip`, the descriptor reserve), a publisher slot (`--max-publishers`,
//! also shared with RTMP) and a pending request in the listener (at most
//! [`tidegate_srt::listener::MAX_PENDING_REQUESTS`]); one of [`MAX_PUBLISH_CHECKS`]
//! on-publish checks. Refusals name the rule in one WARN line each, at most
//! [`LOG_LINES_PER_SECOND`] a second (the rest are counted and summed up by the `srt`
//! area's [`LogLimiter`]). An admitted connection holds at most [`CONNECTION_QUEUE`]
//! queued datagrams of at most [`tidegate_srt::packet::MAX_PACKET_SIZE`] bytes and its
//! receive buffer ([`tidegate_srt::connection::RECV_BUFFER_PACKETS`] packets).
//!
//! One task per connection owns one [`Connection`] (ARQ, TSBPD), one [`TsDemuxer`] and one
//! [`Publisher`]. Its loop: datagram in → `handle_datagram` → send every `poll_transmit` →
//! payloads from `poll_event` into the demuxer → media events into the publisher → re-arm
//! the one timer from `poll_timeout`.
//!
//! The same driver runs pulled connections ([`super::srt_pull`]): there the task owns its
//! own socket instead of a routed channel ([`Inbox`]).

use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use quinn_udp::{RecvMeta, UdpSockRef, UdpSocketState};
use tidegate_mpegts::TsDemuxer;
use tidegate_srt::{
    AcceptParams, Connection, ConnectionRequest, Event, Listener, ListenerConfig, ListenerOutput,
    RejectReason, Route,
};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, warn, Instrument};

use super::limits::{Slot, MAX_PUBLISHERS_RULE, TOO_MANY_BAD_KEYS};
use super::reason::ErrorReason;
use super::srt_pull::PullSocket;
use crate::metrics::{
    ConnectionErrorReason as Reason, IgnoredReason, LogArea, Metrics, Protocol, ProtocolLabels,
    PublishRefusal, ReasonOnlyLabels,
};
use crate::store::{StoreError, StreamId};
use crate::stream::{PublishError, Publisher};
use crate::webhooks::Verdict;
use crate::Context;
use tidegate_limits::{ConnectionGuard, LogLimiter, Refusal, LOG_LINES_PER_SECOND, LOG_WINDOW};
use tidegate_registry::quotas::QuotaRefusal;
use tidegate_registry::tenants::{KeyRefusal, Tenants};

/// Datagrams read per `recvmmsg` call.
const BATCH: usize = 32;
/// Largest datagram (SRT live payloads are 1316 bytes + 16 header; room for GRO batches).
const DATAGRAM_BUF: usize = 64 * 1024;
/// Datagrams queued per connection before the router drops (as a full socket would).
pub const CONNECTION_QUEUE: usize = 1024;
/// Kernel receive buffer for the shared listener socket: one buffer for every connection,
/// sized for about 1 Gbit/s of SRT with a 250 ms stall of the receive task (libsrt gives each
/// connection 11.5 MB of its own instead). Linux counts its bookkeeping against the buffer
/// (about twice a 1.3 KB datagram's size on loopback), hence the headroom.
pub const LISTENER_RECV_BUFFER: usize = 32 << 20;
/// Kernel receive buffer of a pull (caller) socket: one stream.
pub const PULL_RECV_BUFFER: usize = 4 << 20;
/// Kernel send buffer (ACKs, NAKs and handshakes only).
const SOCKET_SEND_BUFFER: usize = 1 << 20;

/// The listener's routing table: connection socket ID → (peer address, datagram queue).
type Routes = Arc<Mutex<tidegate_srt::Routes<mpsc::Sender<Bytes>>>>;

/// 32 random bytes from the operating system, for SYN cookies, socket IDs, initial
/// sequence numbers and key material. `Err` when the OS cannot give any; the worker then
/// refuses to start rather than run SRT on guessable cookies and keys.
pub fn os_secret() -> Result<[u8; 32], getrandom::Error> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret)?;
    Ok(secret)
}

/// What a stream ID asks for.
#[derive(Debug, PartialEq, Eq)]
pub struct StreamRequest {
    /// The stream key.
    pub key: String,
    /// The user name (`u=`), if any.
    pub user: Option<String>,
}

/// Why a stream ID cannot be published to: the rule it breaks. libsrt callers only see
/// the rejection code (most print "Input/output error"), so the server's log line and the
/// `reason` label of `tidegate_publish_refused_total` are the user's clue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamIdError {
    /// No stream ID (`streamid=` not set), or an empty one.
    Missing,
    /// `#!::` syntax with an element that is not `key=value`.
    Syntax,
    /// `#!::` syntax without an `r=` resource, or a resource with an empty key.
    NoKey,
    /// `m=request`: the caller wants to play, and this server only takes publishers.
    Playback,
    /// A mode other than `publish` or `request`.
    UnknownMode,
    /// The key has characters outside `[A-Za-z0-9._-]`, starts with `.`, or is longer than
    /// 128 characters.
    BadKey,
    /// Tenants exist and the key is none of theirs.
    UnknownKey,
    /// The tenant directory could not be read yet.
    KeysUnavailable,
}

impl From<KeyRefusal> for StreamIdError {
    fn from(r: KeyRefusal) -> Self {
        match r {
            KeyRefusal::BadKey => Self::BadKey,
            KeyRefusal::UnknownKey => Self::UnknownKey,
            KeyRefusal::Unavailable => Self::KeysUnavailable,
        }
    }
}

impl StreamIdError {
    /// The `reason` label.
    pub fn label(self) -> PublishRefusal {
        match self {
            Self::Missing => PublishRefusal::MissingStreamid,
            Self::Syntax | Self::NoKey | Self::UnknownMode => PublishRefusal::BadStreamid,
            Self::Playback => PublishRefusal::PlaybackRefused,
            Self::BadKey => PublishRefusal::BadKey,
            Self::UnknownKey => PublishRefusal::UnknownKey,
            Self::KeysUnavailable => PublishRefusal::KeysUnavailable,
        }
    }

    /// The rejection code sent to the caller.
    pub fn code(self) -> RejectReason {
        match self {
            Self::Playback | Self::UnknownMode => RejectReason::BAD_MODE,
            Self::Missing | Self::Syntax | Self::NoKey | Self::BadKey => RejectReason::BAD_REQUEST,
            Self::UnknownKey => RejectReason::UNAUTHORIZED,
            Self::KeysUnavailable => RejectReason::DOWN,
        }
    }

    /// The rule, for the log.
    pub fn rule(self) -> &'static str {
        match self {
            Self::Missing => "no stream id: set streamid=KEY or streamid=#!::r=KEY,m=publish",
            Self::Syntax => "stream id `#!::` elements must be key=value pairs separated by commas",
            Self::NoKey => "stream id `#!::` syntax without a key: give r=KEY (or r=live/KEY)",
            Self::Playback => {
                "stream id asks to play (m=request): this server only takes publishers, play over HLS"
            }
            Self::UnknownMode => "stream id mode is not m=publish",
            Self::BadKey => {
                "stream key must be 1 to 128 of [A-Za-z0-9._-] and must not start with `.`"
            }
            Self::UnknownKey => KeyRefusal::UnknownKey.text(),
            Self::KeysUnavailable => KeyRefusal::Unavailable.text(),
        }
    }
}

/// Parses an SRT stream ID: the access-control syntax `#!::r=live/KEY,m=publish` (keys `r`,
/// `m`, `u`, `s`, `h`, `t`; `r` may carry an application prefix) or a bare `KEY`.
/// `m=request` (playback) and unknown modes are refused.
pub fn parse_stream_id(sid: &str) -> Result<StreamRequest, StreamIdError> {
    let Some(body) = sid.strip_prefix("#!::") else {
        if sid.is_empty() {
            return Err(StreamIdError::Missing);
        }
        let key = sid.strip_prefix("live/").unwrap_or(sid);
        return if key.is_empty() {
            Err(StreamIdError::NoKey)
        } else {
            Ok(StreamRequest {
                key: key.to_owned(),
                user: None,
            })
        };
    };
    let mut resource = None;
    let mut user = None;
    let mut mode = None;
    for pair in body.split(',') {
        let (k, v) = pair.split_once('=').ok_or(StreamIdError::Syntax)?;
        match k {
            "r" => resource = Some(v),
            "u" => user = Some(v.to_owned()),
            "m" => mode = Some(v),
            _ => {}
        }
    }
    match mode {
        None | Some("publish") => {}
        Some("request") => return Err(StreamIdError::Playback),
        Some(_) => return Err(StreamIdError::UnknownMode),
    }
    let resource = resource.ok_or(StreamIdError::NoKey)?;
    // `r=live/KEY` or `r=KEY`: the last path component is the key.
    let key = resource.rsplit('/').next().unwrap_or(resource);
    if key.is_empty() {
        return Err(StreamIdError::NoKey);
    }
    Ok(StreamRequest {
        key: key.to_owned(),
        user,
    })
}

/// What a log line may show of a stream key (or a stream ID that holds one): at most its
/// first 4 characters (never more than half of it) and a short hash of the whole, so an
/// operator can match a refusal to an encoder without the log holding the key. Characters
/// that are not printable ASCII show as `?`.
pub fn key_hint(key: &str) -> String {
    use sha2::Digest as _;
    let n = key.chars().count();
    let shown: String = key
        .chars()
        .take((n / 2).min(4))
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect();
    let digest = sha2::Sha256::digest(key.as_bytes());
    let mut hint = shown;
    hint.push_str("...#");
    for b in digest.iter().take(4) {
        hint.push_str(&format!("{b:02x}"));
    }
    hint
}

/// The part of a stream ID that names the key, for [`key_hint`]: the last path component
/// of `r=` in the `#!::` syntax, else the whole ID.
fn stream_id_key_part(sid: &str) -> &str {
    let Some(body) = sid.strip_prefix("#!::") else {
        return sid;
    };
    body.split(',')
        .find_map(|pair| pair.strip_prefix("r="))
        .map(|r| r.rsplit('/').next().unwrap_or(r))
        .unwrap_or(body)
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

/// Serves SRT publishers on `socket` until `shutdown` is cancelled. `secret` keys the SYN
/// cookies, socket IDs and sequence numbers ([`os_secret`]).
pub async fn serve(
    socket: UdpSocket,
    secret: [u8; 32],
    ctx: Arc<Context>,
    shutdown: CancellationToken,
) {
    let socket = Arc::new(socket);
    let state = match UdpSocketState::new(UdpSockRef::from(&*socket)) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            warn!(error = %e, "srt: cannot set up the UDP socket");
            return;
        }
    };
    let mut config = ListenerConfig::new(secret);
    config.latency = ctx.config.srt_latency;
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
    let log = LogLimiter::new(
        "srt",
        LOG_LINES_PER_SECOND,
        ctx.metrics.log_suppressed(LogArea::Srt),
    );
    // The line that starts an address's back-off for wrong keys, on a budget of its own.
    let bad_key_log = LogLimiter::new(
        "srt",
        LOG_LINES_PER_SECOND,
        ctx.metrics.log_suppressed(LogArea::Srt),
    );
    let ignored = Ignored::new(&ctx.metrics);
    let mut router = Router {
        listener: Listener::new(Instant::now(), config),
        routes: Arc::default(),
        tracker: tokio_util::task::TaskTracker::new(),
        shutdown: shutdown.clone(),
        decided: decided_tx,
        checks: Arc::new(Semaphore::new(MAX_PUBLISH_CHECKS)),
        log,
        bad_key_log,
        ignored,
        socket: socket.clone(),
        state: state.clone(),
        ctx,
    };
    let mut summary = tokio::time::interval(LOG_WINDOW);
    summary.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let n = tokio::select! {
            r = socket.async_io(Interest::READABLE, || {
                let mut slices: Vec<IoSliceMut<'_>> =
                    bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
                state.recv(UdpSockRef::from(&*socket), &mut slices, &mut meta)
            }) => r,
            Some(d) = decided_rx.recv() => {
                router.on_decided(d).await;
                continue;
            }
            _ = summary.tick() => {
                router.log.flush(Instant::now());
                router.bad_key_log.flush(Instant::now());
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
                router.route(now, m.addr, datagram).await;
            }
        }
    }
    router.tracker.close();
    router.tracker.wait().await;
}

/// The counters of datagrams dropped before any connection saw them, resolved once (the
/// router counts per datagram).
struct Ignored {
    unknown_socket: Counter,
    wrong_peer: Counter,
    bad_cookie: Counter,
    malformed: Counter,
}

impl Ignored {
    fn new(metrics: &Metrics) -> Self {
        let c = |reason| {
            metrics
                .srt_packets_ignored
                .get_or_create(&ReasonOnlyLabels { reason })
                .clone()
        };
        Ignored {
            unknown_socket: c(IgnoredReason::UnknownSocket),
            wrong_peer: c(IgnoredReason::WrongPeer),
            bad_cookie: c(IgnoredReason::BadCookie),
            malformed: c(IgnoredReason::Malformed),
        }
    }
}

/// The router task's state: the listener, the routing table, and what callers that are
/// not admitted yet may hold ([`Held`] slots each, on-publish checks in flight) or log.
struct Router {
    ctx: Arc<Context>,
    socket: Arc<UdpSocket>,
    state: Arc<UdpSocketState>,
    listener: Listener,
    routes: Routes,
    tracker: tokio_util::task::TaskTracker,
    shutdown: CancellationToken,
    decided: mpsc::Sender<Decided>,
    checks: Arc<Semaphore>,
    log: LogLimiter,
    /// The budget of the line that starts an address's back-off for wrong keys.
    bad_key_log: LogLimiter,
    ignored: Ignored,
}

impl Router {
    fn send(&self, to: SocketAddr, data: &[u8]) {
        send(&self.socket, &self.state, to, data);
    }

    /// One datagram from `from`: to its connection (only from that connection's peer), to
    /// the listener (socket ID 0), or counted and dropped.
    async fn route(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        {
            let routes = self
                .routes
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match routes.route(from, datagram) {
                Route::Listener => {}
                Route::Connection(tx) => {
                    // A full queue drops the datagram, as a full socket buffer would.
                    let _ = tx.try_send(Bytes::copy_from_slice(datagram));
                    return;
                }
                Route::UnknownSocket => {
                    self.ignored.unknown_socket.inc();
                    return;
                }
                Route::WrongPeer => {
                    self.ignored.wrong_peer.inc();
                    return;
                }
                Route::Malformed => {
                    self.ignored.malformed.inc();
                    return;
                }
            }
        }
        match self.listener.handle_datagram(now, from, datagram) {
            Ok(ListenerOutput::Nothing) => {}
            Ok(ListenerOutput::BadCookie) => {
                self.ignored.bad_cookie.inc();
            }
            Ok(ListenerOutput::Transmit(resp)) => self.send(from, &resp),
            Ok(ListenerOutput::Request(req)) => self.on_request(now, req).await,
            Err(e) => {
                self.ignored.malformed.inc();
                debug!(peer = %from, error = %e, "srt: bad handshake datagram");
            }
        }
    }

    /// A caller that passed the cookie exchange: a connection slot, a stream ID, the
    /// on-publish callback (when configured), then [`Router::admit`].
    async fn on_request(&mut self, now: Instant, req: ConnectionRequest) {
        let peer = req.peer_addr();
        // An address that presented too many wrong keys is refused before its stream ID is
        // looked at (no slot, no parse, no hash) until its back-off ends.
        if self
            .ctx
            .ingest_limits
            .bad_keys
            .check(peer.ip(), now)
            .is_err()
        {
            let reason = PublishRefusal::TooManyBadKeys;
            self.ctx.metrics.refused(Protocol::Srt, reason);
            self.reject(
                now,
                req,
                reason.as_str(),
                RejectReason::OVERLOAD,
                TOO_MANY_BAD_KEYS,
                None,
            );
            return;
        }
        let connection =
            match self
                .ctx
                .ingest_limits
                .connection(Protocol::Srt, peer.ip(), &self.ctx.metrics)
            {
                Ok(guard) => guard,
                Err(refusal) => {
                    let (code, rule) = match refusal {
                        Refusal::MaxConnections => (
                            RejectReason::BACKLOG,
                            "--max-connections ingest connections are open",
                        ),
                        Refusal::PerSource => (
                            RejectReason::OVERLOAD,
                            "--max-connections-per-ip connections from this address are open",
                        ),
                        Refusal::FdReserve => (
                            RejectReason::RESOURCE,
                            "the file descriptors left are kept for storage and state",
                        ),
                    };
                    self.reject(now, req, refusal.as_str(), code, rule, None);
                    return;
                }
            };
        let id = match request_stream(&req, &self.ctx.tenants) {
            Ok(admitted) => {
                // A dedicated pool's tenant publishes only to its pool's workers, and a
                // pooled worker takes only its pool's tenants.
                if let Err(refusal) = self.ctx.tenants.check_pool(&admitted) {
                    let hint = req.stream_id().map(|s| key_hint(stream_id_key_part(s)));
                    let rule = format!("stream {}: {refusal}", admitted.id);
                    self.ctx.metrics.refused_for(
                        Protocol::Srt,
                        &admitted.id.tenant,
                        PublishRefusal::Pool,
                    );
                    self.reject(
                        now,
                        req,
                        PublishRefusal::Pool.as_str(),
                        POOL_REJECTION,
                        &rule,
                        hint,
                    );
                    return;
                }
                admitted.id
            }
            Err(e) => {
                self.ctx.metrics.refused(Protocol::Srt, e.label());
                if e == StreamIdError::UnknownKey {
                    self.bad_key(now, peer);
                }
                self.reject_stream_id(now, req, e);
                return;
            }
        };
        // The tenant's attempts a second, before anything costs more.
        if let Err(q) = self.ctx.tenants.check_rate(&id, now).await {
            self.reject_quota(now, req, &id, q);
            return;
        }
        // The worker's publisher cap (counted as `max_publishers`), before anything costs
        // more (the on-publish callback, the state store).
        let Some(publisher) = self
            .ctx
            .ingest_limits
            .publisher(Protocol::Srt, &self.ctx.metrics)
        else {
            self.reject(
                now,
                req,
                "max_publishers",
                RejectReason::OVERLOAD,
                MAX_PUBLISHERS_RULE,
                Some(key_hint(&id.name)),
            );
            return;
        };
        let slot = Held {
            _connection: connection,
            _publisher: publisher,
        };
        // The tenant's live streams and their bitrate, across the cluster.
        if let Err(q) = self.ctx.tenants.check_live(&id).await {
            self.reject_quota(now, req, &id, q);
            return;
        }
        if self.ctx.on_publish.is_some() {
            let Ok(permit) = self.checks.clone().try_acquire_owned() else {
                self.ctx.metrics.refused_for(
                    Protocol::Srt,
                    &id.tenant,
                    PublishRefusal::OnPublishBusy,
                );
                self.reject(
                    now,
                    req,
                    "on_publish_busy",
                    RejectReason::BACKLOG,
                    "too many on-publish checks in flight",
                    Some(key_hint(&id.name)),
                );
                return;
            };
            let ctx = self.ctx.clone();
            let decided = self.decided.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let Some(hook) = &ctx.on_publish else { return };
                let verdict = hook.check(&id, Protocol::Srt, None, peer).await;
                // A full queue or a stopped router: the caller times out and retries.
                let _ = decided
                    .send(Decided {
                        req,
                        id,
                        verdict,
                        slot,
                    })
                    .await;
            });
            return;
        }
        self.admit(now, req, id, slot).await;
    }

    /// The on-publish callback's verdict on a request.
    async fn on_decided(&mut self, d: Decided) {
        let now = Instant::now();
        if d.verdict == Verdict::Accept {
            self.admit(now, d.req, d.id, d.slot).await;
            return;
        }
        let code = match d.verdict {
            Verdict::Unavailable => RejectReason::ISE,
            _ => RejectReason::FORBIDDEN,
        };
        let rule = match d.verdict {
            Verdict::Unavailable => "the on-publish callback did not answer in time",
            _ => "the on-publish callback refused it",
        };
        self.ctx
            .metrics
            .refused_for(Protocol::Srt, &d.id.tenant, d.verdict.reason());
        self.reject(
            now,
            d.req,
            d.verdict.reason().as_str(),
            code,
            rule,
            Some(key_hint(&d.id.name)),
        );
    }

    /// Answers `req` with `code` and logs (within the log budget) the rule it broke. The
    /// caller counts the refusal: `tidegate_publish_refused_total{protocol="srt",reason}`,
    /// or the ingest limits' `tidegate_connections_refused_total`.
    fn reject(
        &mut self,
        now: Instant,
        req: ConnectionRequest,
        label: &'static str,
        code: RejectReason,
        rule: &str,
        key: Option<String>,
    ) {
        let peer = req.peer_addr();
        self.log_refusal(now, peer, label, code, rule, key);
        let resp = self.listener.reject(now, req, code);
        self.send(peer, &resp);
    }

    /// [`Router::reject`] for a stream ID refused for `e`; the key's hint (a hash) is
    /// computed only for a line that is written, so a wrong key costs its one check's hash.
    fn reject_stream_id(&mut self, now: Instant, req: ConnectionRequest, e: StreamIdError) {
        let peer = req.peer_addr();
        if self.log.allow(now) {
            let key = req
                .stream_id()
                .filter(|s| !s.is_empty())
                .map_or_else(|| "-".to_owned(), |s| key_hint(stream_id_key_part(s)));
            let (reason, code, rule) = (e.label().as_str(), e.code(), e.rule());
            warn!(peer = %peer, reason, code = %code, key = %key, "srt: refused: {rule}");
        }
        let resp = self.listener.reject(now, req, e.code());
        self.send(peer, &resp);
    }

    /// Counts a wrong key against `peer`'s address; says so (within the log budget) when
    /// it starts the address's back-off.
    fn bad_key(&self, now: Instant, peer: SocketAddr) {
        let limiter = &self.ctx.ingest_limits.bad_keys;
        if let Some(blocked) = limiter.failed(peer.ip(), now) {
            if self.bad_key_log.allow(now) {
                warn!(
                    backoff_s = blocked.remaining.as_secs(),
                    "srt: too many wrong stream keys from {}: its callers are refused for {:?} \
                     (--bad-key-limit, --bad-key-backoff)",
                    peer.ip(),
                    blocked.remaining
                );
            }
        }
    }

    /// Refuses a caller over one of its tenant's quotas with [`QUOTA_REJECTION`], counted
    /// with the tenant and logged with the quota in words.
    fn reject_quota(
        &mut self,
        now: Instant,
        req: ConnectionRequest,
        id: &StreamId,
        q: QuotaRefusal,
    ) {
        let label = q.reason();
        self.ctx
            .metrics
            .refused_for(Protocol::Srt, &id.tenant, label);
        self.reject(
            now,
            req,
            label.as_str(),
            QUOTA_REJECTION,
            &q.text(&id.tenant),
            Some(key_hint(&id.name)),
        );
    }

    /// One WARN line about a caller that was not admitted, unless the `srt` area's budget
    /// is spent (then it is counted in `tidegate_log_lines_suppressed_total{area="srt"}`).
    fn log_refusal(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        label: &'static str,
        code: RejectReason,
        rule: &str,
        key: Option<String>,
    ) {
        if !self.log.allow(now) {
            return;
        }
        let key = key.unwrap_or_else(|| "-".to_owned());
        warn!(peer = %peer, reason = label, code = %code, key = %key, "srt: refused: {rule}");
    }

    /// Decides on a connection request for `id`: handshake (passphrase, key length) →
    /// publish slot → accept. A caller refused at the handshake leaves no trace in the
    /// stream state; one refused for its stream (busy, draining) gets a rejection code too.
    ///
    /// The passphrase, key length and latency are those of the stream's tenant (its
    /// settings, else the server's `--srt-passphrase`, `--srt-pbkeylen`, `--srt-latency`):
    /// the listener hands the conclusion handshake over with its stream id and its key
    /// material (KMREQ) unopened, so the key material is opened here with the passphrase of
    /// the tenant the stream id names, as libsrt's listener callback does.
    async fn admit(&mut self, now: Instant, req: ConnectionRequest, id: StreamId, slot: Held) {
        let peer = req.peer_addr();
        let caller_key = req.key_length();
        let srt = self.ctx.tenants.srt_for(&id.tenant);
        let params = AcceptParams {
            passphrase: srt.passphrase.as_ref().map(|p| p.expose().to_owned()),
            latency: Some(srt.latency),
            enforce_key_length: tidegate_srt::KeyLength::from_bytes(usize::from(srt.pbkeylen)),
        };
        let verified = match self.listener.verify(now, req, &params) {
            Ok(v) => v,
            Err(rejection) => {
                let (label, mut rule) = handshake_refusal(
                    rejection.reason,
                    caller_key,
                    srt.passphrase.is_some(),
                    srt.pbkeylen,
                );
                if srt.tenant_encryption && label == PublishRefusal::Passphrase {
                    rule = format!(
                        "{rule} (tenant {}: its own srt-passphrase / srt-pbkeylen apply)",
                        id.tenant
                    );
                }
                self.ctx
                    .metrics
                    .refused_for(Protocol::Srt, &id.tenant, label);
                self.log_refusal(
                    now,
                    peer,
                    label.as_str(),
                    rejection.reason,
                    &rule,
                    Some(key_hint(&id.name)),
                );
                self.send(peer, &rejection.response);
                return;
            }
        };
        let publisher = match self
            .ctx
            .streams
            .begin_publish(id.clone(), Protocol::Srt)
            .await
        {
            Ok(p) => p,
            Err(e) => {
                let (label, code) = publish_refusal(&e);
                let rule = format!("stream {id}: {e}");
                self.ctx
                    .metrics
                    .refused_for(Protocol::Srt, &id.tenant, label);
                self.reject(
                    Instant::now(),
                    verified.into_request(),
                    label.as_str(),
                    code,
                    &rule,
                    Some(key_hint(&id.name)),
                );
                return;
            }
        };
        self.ctx
            .tenants
            .apply_bitrate_quota(&id, publisher.telemetry());
        let (conn, resp) = self.listener.complete(Instant::now(), verified);
        let (tx, rx) = mpsc::channel(CONNECTION_QUEUE);
        let socket_id = conn.socket_id();
        self.routes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(socket_id, peer, tx);
        self.ctx
            .metrics
            .connections
            .get_or_create(&ProtocolLabels {
                protocol: Protocol::Srt,
            })
            .inc();
        info!(stream = %id, peer = %peer, socket = socket_id, epoch = publisher.epoch(), latency_ms = conn.latency().as_millis() as u64, encrypted = conn.is_encrypted(), "srt: publishing");
        let driver = ConnectionDriver::new(
            self.ctx.clone(),
            self.socket.clone(),
            self.state.clone(),
            conn,
            publisher,
            Inbox::Routed(rx),
        );
        let route = RouteGuard {
            routes: self.routes.clone(),
            socket_id,
        };
        let shutdown = self.shutdown.clone();
        let span = info_span!("srt", socket = socket_id, peer = %peer);
        self.tracker.spawn(
            async move {
                let _slot = slot;
                // Dropped after the driver, also when it panics: no route outlives it.
                let _route = route;
                driver.run(shutdown).await;
            }
            .instrument(span),
        );
        self.send(peer, &resp);
    }
}

/// Removes a connection's route when dropped (its driver returned or panicked).
struct RouteGuard {
    routes: Routes,
    socket_id: u32,
}

impl Drop for RouteGuard {
    fn drop(&mut self) {
        self.routes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(self.socket_id);
    }
}

/// The rejection code of a caller over one of its tenant's quotas: 1402
/// `SRT_REJX_OVERLOAD`, which libsrt documents as "the server is too heavily loaded, or you
/// have exceeded credits for accessing the service and the resource".
pub const QUOTA_REJECTION: RejectReason = RejectReason::OVERLOAD;

/// The `reason` label and the rule of a caller refused at the handshake.
fn handshake_refusal(
    code: RejectReason,
    caller_key: Option<tidegate_srt::KeyLength>,
    passphrase_set: bool,
    pbkeylen: u8,
) -> (PublishRefusal, String) {
    let rule = match code {
        RejectReason::BADSECRET => "wrong passphrase".to_owned(),
        RejectReason::UNSECURE => match caller_key {
            None => "a passphrase is required (--srt-passphrase) and the caller does not encrypt"
                .to_owned(),
            Some(_) if !passphrase_set => {
                "the caller encrypts but this server has no --srt-passphrase".to_owned()
            }
            Some(k) => format!(
                "key length mismatch: the caller uses pbkeylen={}, this server requires {pbkeylen}",
                k.bytes()
            ),
        },
        other => {
            return (
                PublishRefusal::Handshake,
                format!("handshake refused ({other}): malformed key material"),
            )
        }
    };
    (PublishRefusal::Passphrase, rule)
}

/// The `reason` label and the rejection code of a caller whose stream cannot be published.
fn publish_refusal(e: &PublishError) -> (PublishRefusal, RejectReason) {
    match e {
        PublishError::AlreadyLive | PublishError::Store(StoreError::Conflict { .. }) => {
            (PublishRefusal::Busy, RejectReason::CONFLICT)
        }
        PublishError::Competing(_) => (e.reason(), RejectReason::CONFLICT),
        PublishError::Draining => (e.reason(), RejectReason::DOWN),
        PublishError::Store(_) => (e.reason(), RejectReason::ISE),
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

/// The stream a connection request asks to publish: its key as the tenant directory
/// resolves it (open mode: tenant `default`, stream KEY).
fn request_stream(
    req: &ConnectionRequest,
    tenants: &Tenants,
) -> Result<tidegate_registry::tenants::Admission, StreamIdError> {
    let r = parse_stream_id(req.stream_id().unwrap_or_default())?;
    Ok(tenants.resolve(&r.key)?)
}

/// The rejection code of a caller whose tenant's pool is not this worker's:
/// `SRT_REJX_FORBIDDEN` (1403): the key is good, this worker may not take it.
pub const POOL_REJECTION: RejectReason = RejectReason::FORBIDDEN;

/// What an admitted caller holds until its connection ends (or it is refused): its place
/// under the ingest connection caps and a publisher slot, both shared with RTMP.
struct Held {
    _connection: ConnectionGuard,
    _publisher: Slot,
}

/// A connection request, its slots, and the on-publish callback's verdict on it.
struct Decided {
    req: ConnectionRequest,
    id: StreamId,
    verdict: Verdict,
    slot: Held,
}

/// Verdicts waiting for the router.
const DECIDED_QUEUE: usize = 64;
/// on-publish callbacks in flight at once; beyond, callers are refused with
/// `SRT_REJ_BACKLOG` (a handshake flood must not become a flood of HTTP calls).
const MAX_PUBLISH_CHECKS: usize = 256;

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
        let end: Result<&'static str, (Reason, String)> = loop {
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
                    break Err((Reason::Superseded, "the stream was taken over or its writer stopped".into()));
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
            Err((kind, _)) => kind.as_str(),
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
                warn!(peer = %peer, reason = kind.as_str(), error = %msg, "srt: connection ended");
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
    /// connection closed (or was closed here because the worker drains).
    async fn drain_events(&mut self) -> Result<Option<&'static str>, (Reason, String)> {
        while let Some(ev) = self.conn.poll_event() {
            match ev {
                Event::Payload(data) => {
                    self.demux
                        .handle_input(&data)
                        .map_err(|e| (e.reason(), e.to_string()))?;
                    while let Some(m) = self.demux.poll_event() {
                        if let Some(p) = self.publisher.as_mut() {
                            let Err(e) = p.handle_media(m, &self.ctx.metrics).await else {
                                continue;
                            };
                            if e.is_drain() {
                                // Draining worker, segment boundary reached: leave so the
                                // encoder reconnects elsewhere.
                                self.conn.close(Instant::now());
                                let _ = self.flush();
                                return Ok(Some("worker draining"));
                            }
                            return Err((Reason::Packager, e.to_string()));
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
        let err = |s: &str| parse_stream_id(s).unwrap_err();
        assert_eq!(err("#!::r=live/cam,m=request"), StreamIdError::Playback);
        // The mode wins over a missing resource: a player is told it cannot play.
        assert_eq!(err("#!::m=request"), StreamIdError::Playback);
        assert_eq!(err("#!::r=cam,m=bidirectional"), StreamIdError::UnknownMode);
        assert_eq!(err("#!::m=publish"), StreamIdError::NoKey);
        assert_eq!(err("#!::r=live/"), StreamIdError::NoKey);
        assert_eq!(err("live/"), StreamIdError::NoKey);
        assert_eq!(err("#!::garbage"), StreamIdError::Syntax);
        assert_eq!(err(""), StreamIdError::Missing);
    }

    #[test]
    fn every_stream_id_refusal_has_a_contract_label_and_an_srt_code() {
        for (e, label, code) in [
            (StreamIdError::Missing, "missing_streamid", 1400),
            (StreamIdError::Syntax, "bad_streamid", 1400),
            (StreamIdError::NoKey, "bad_streamid", 1400),
            (StreamIdError::UnknownMode, "bad_streamid", 1405),
            (StreamIdError::Playback, "playback_refused", 1405),
            (StreamIdError::BadKey, "bad_key", 1400),
        ] {
            assert_eq!(e.label().as_str(), label, "{e:?}");
            assert_eq!(e.code().0, code, "{e:?}");
            assert!(!e.rule().is_empty());
        }
        let (label, code) = publish_refusal(&PublishError::AlreadyLive);
        assert_eq!((label.as_str(), code), ("busy", RejectReason::CONFLICT));
        assert_eq!(
            publish_refusal(&PublishError::Draining).1,
            RejectReason::DOWN
        );
    }

    #[test]
    fn handshake_refusals_name_the_rule() {
        use tidegate_srt::KeyLength;
        let (label, rule) =
            handshake_refusal(RejectReason::BADSECRET, Some(KeyLength::Aes128), true, 0);
        assert_eq!(
            (label.as_str(), rule.as_str()),
            ("passphrase", "wrong passphrase")
        );
        let (label, rule) = handshake_refusal(RejectReason::UNSECURE, None, true, 0);
        assert_eq!(label.as_str(), "passphrase");
        assert!(rule.contains("does not encrypt"), "{rule}");
        let (_, rule) =
            handshake_refusal(RejectReason::UNSECURE, Some(KeyLength::Aes128), false, 0);
        assert!(rule.contains("no --srt-passphrase"), "{rule}");
        let (_, rule) =
            handshake_refusal(RejectReason::UNSECURE, Some(KeyLength::Aes128), true, 32);
        assert!(
            rule.contains("pbkeylen=16") && rule.contains("requires 32"),
            "{rule}"
        );
        assert_eq!(
            handshake_refusal(RejectReason::ROGUE, None, true, 0)
                .0
                .as_str(),
            "handshake"
        );
    }

    #[test]
    fn key_hints_show_little_of_the_key() {
        let h = key_hint("supersecretkey123");
        assert!(h.starts_with("supe...#"), "{h}");
        assert_eq!(h.len(), "supe...#".len() + 8);
        assert!(!h.contains("secret"));
        // Short keys show at most half of themselves; control characters never reach the log.
        assert!(key_hint("abc").starts_with("a...#"));
        assert!(key_hint("").starts_with("...#"));
        assert!(key_hint("\n\x1b[1mkey").starts_with("??[1...#"));
        assert_ne!(key_hint("key-a"), key_hint("key-b"));
        assert_eq!(stream_id_key_part("#!::r=live/cam9,m=request"), "cam9");
        assert_eq!(stream_id_key_part("#!::m=request"), "m=request");
        assert_eq!(stream_id_key_part("bad key"), "bad key");
    }

    /// A connection task that panics takes its route with it: datagrams for its socket ID
    /// are no longer routed to a dead inbox.
    #[tokio::test]
    async fn a_panicking_connection_task_leaves_no_route() {
        let routes: Routes = Arc::default();
        let (tx, _rx) = mpsc::channel(1);
        let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
        routes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(7, peer, tx);
        let route = RouteGuard {
            routes: routes.clone(),
            socket_id: 7,
        };
        let task = tokio::spawn(async move {
            let _route = route;
            panic!("driver bug");
        });
        assert!(task.await.is_err_and(|e| e.is_panic()));
        let left = routes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len();
        assert_eq!(left, 0);
    }
}
