//! SRT caller (pull): a configured stream pulls from a remote SRT listener (an encoder or
//! contribution gateway that only listens, e.g. ffmpeg `mode=listener`).
//!
//! One task per `[[pull]]` entry. Each attempt binds a fresh UDP socket, runs the sans-IO
//! [`Caller`] handshake, then hands the established [`tidegate_srt::Connection`] to the same
//! [`ConnectionDriver`] the listener uses (SRT → MPEG-TS demuxer → publisher). When the
//! connection fails or ends, the task tries again with capped exponential backoff
//! ([`BACKOFF_MIN`] → [`BACKOFF_MAX`]); meanwhile the stream follows the normal lifecycle
//! (reconnecting, resumed with a discontinuity, ended after the reconnect window).
//!
//! In a cluster every replica may carry the same `[[pull]]` list: before calling its
//! source a worker looks at the stream's lease, and while another worker holds it live it
//! stands by (polls every [`STANDBY_POLL`]) instead of calling. A pull never takes a stream
//! from a live holder ([`crate::stream::Streams::begin_pull`]). When the pulling worker dies
//! or drains, its lease lapses (or says the publisher left) and a standing-by worker calls
//! the source and continues the playlist.
//!
//! Pools: a pulled stream belongs to tenant `default`; a worker whose pool does not serve
//! that tenant (a pooled worker, unless `default` is a tenant of its pool; a shared worker
//! when `default` names a pool) stands by without calling the source.

use std::collections::VecDeque;
use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use quinn_udp::{RecvMeta, UdpSockRef, UdpSocketState};
use tidegate_srt::{Caller, CallerConfig, Error as SrtError};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tracing::{info, info_span, warn, Instrument};

use super::srt::{os_secret, send, ConnectionDriver, Inbox};
use crate::metrics::{ConnectionErrorReason as Reason, Protocol, ProtocolLabels, PublishRefusal};
use crate::Context;
use tidegate_config::Pull;
use tidegate_model::{SrtSource, StreamId};

/// First wait after a failed attempt.
pub const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// Longest wait between attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often a standing-by worker looks at the lease of the worker that pulls.
pub const STANDBY_POLL: Duration = Duration::from_secs(1);
/// Largest datagram read (SRT live packets are 1332 bytes; room for GRO batches).
const DATAGRAM_BUF: usize = 64 * 1024;

/// A UDP socket owned by one pulled connection, read in batches through `quinn-udp` (GRO
/// may coalesce datagrams, which are split again here).
pub(crate) struct PullSocket {
    socket: Arc<UdpSocket>,
    state: Arc<UdpSocketState>,
    buf: Vec<u8>,
    pending: VecDeque<(SocketAddr, Bytes)>,
    ingest: Counter,
}

impl PullSocket {
    /// The next datagram and its sender. Cancel-safe.
    pub(crate) async fn recv(&mut self) -> std::io::Result<(SocketAddr, Bytes)> {
        loop {
            if let Some(d) = self.pending.pop_front() {
                return Ok(d);
            }
            let mut meta = [RecvMeta::default()];
            let socket = &self.socket;
            let state = &self.state;
            let buf = &mut self.buf;
            socket
                .async_io(Interest::READABLE, || {
                    let mut slices = [IoSliceMut::new(buf)];
                    state.recv(UdpSockRef::from(&**socket), &mut slices, &mut meta)
                })
                .await?;
            let [m] = meta;
            let stride = m.stride.max(1);
            let data = self.buf.get(..m.len).unwrap_or(&[]);
            self.ingest.inc_by(data.len() as u64);
            for d in data.chunks(stride) {
                self.pending.push_back((m.addr, Bytes::copy_from_slice(d)));
            }
        }
    }
}

/// Runs one `[[pull]]` entry until `shutdown` is cancelled or the worker drains.
pub async fn run(ctx: Arc<Context>, pull: Pull, shutdown: CancellationToken) {
    let Pull { stream: id, source } = pull;
    let span = info_span!("srt_pull", stream = %id, remote = %source.remote());
    run_source(ctx, id, source, shutdown).instrument(span).await;
}

async fn run_source(
    ctx: Arc<Context>,
    id: StreamId,
    source: SrtSource,
    shutdown: CancellationToken,
) {
    let mut backoff = BACKOFF_MIN;
    let mut attempt: u64 = 0;
    let mut standing_by: Option<String> = None;
    // Replicas started together would all find the lease free and call the source at
    // once; a random wait of up to one standby poll lets the first one's lease show.
    // Without OS randomness (the worker checked it at start) there is no jitter.
    let secret = os_secret().unwrap_or_default();
    let jitter = u64::from(u16::from_le_bytes([secret[0], secret[1]]));
    let first_wait = STANDBY_POLL.mul_f64(jitter as f64 / f64::from(u16::MAX));
    tokio::select! {
        () = tokio::time::sleep(first_wait) => {}
        () = shutdown.cancelled() => return,
    }
    let mut refused_by_pool: Option<String> = None;
    while !shutdown.is_cancelled() {
        // A pull respects pools as a publisher does: a worker whose pool does not serve the
        // stream's tenant stands by without calling the source (one line and one refusal
        // counted each time the reason changes), and pulls once the tenant's pool is its.
        match ctx.tenants.check_pool_of(&id) {
            Err(refusal) => {
                let text = refusal.text();
                if refused_by_pool.as_deref() != Some(text.as_str()) {
                    warn!("srt pull: not pulling here: {text}");
                    ctx.metrics
                        .refused_for(Protocol::Srt, &id.tenant, PublishRefusal::Pool);
                    refused_by_pool = Some(text);
                }
                tokio::select! {
                    () = tokio::time::sleep(STANDBY_POLL) => {}
                    () = shutdown.cancelled() => break,
                }
                continue;
            }
            Ok(()) => {
                if refused_by_pool.take().is_some() {
                    info!("srt pull: this worker's pool serves the stream now; pulling");
                }
            }
        }
        // Another worker pulls this stream (same `[[pull]]` on every replica): stand by
        // without calling the source, and take over once that worker's lease lapses.
        match ctx.streams.held_elsewhere(&id).await {
            Ok(Some(owner)) => {
                if standing_by.as_deref() != Some(owner.as_str()) {
                    info!(worker = %owner, "srt pull: standing by; another worker pulls this stream");
                    standing_by = Some(owner);
                }
                tokio::select! {
                    () = tokio::time::sleep(STANDBY_POLL) => {}
                    () = shutdown.cancelled() => break,
                }
                continue;
            }
            Ok(None) => {
                if standing_by.take().is_some() {
                    info!("srt pull: the other worker let go; pulling");
                    backoff = BACKOFF_MIN;
                    attempt = 0;
                }
            }
            // The store is down: pulling anyway keeps the stream going on this worker;
            // the epoch still fences a second puller once the store is back.
            Err(e) => warn!(error = %e, "srt pull: cannot tell whether another worker pulls"),
        }
        attempt += 1;
        let outcome = tokio::select! {
            o = attempt_once(&ctx, &id, &source, &shutdown) => o,
            () = shutdown.cancelled() => break,
        };
        match outcome {
            Attempt::Stop => break,
            Attempt::Streamed => {
                // It worked for a while: the next failure starts from the shortest wait.
                backoff = BACKOFF_MIN;
                attempt = 0;
                continue;
            }
            Attempt::Failed => {}
        }
        info!(
            attempt,
            retry_in_ms = backoff.as_millis() as u64,
            "srt pull: retrying"
        );
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = shutdown.cancelled() => break,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
    info!("srt pull: stopped");
}

enum Attempt {
    /// Delivered media for a while, then ended: reconnect at once.
    Streamed,
    /// Could not connect or publish: wait, then try again.
    Failed,
    /// The worker is draining: stop pulling.
    Stop,
}

async fn attempt_once(
    ctx: &Arc<Context>,
    id: &StreamId,
    source: &SrtSource,
    shutdown: &CancellationToken,
) -> Attempt {
    let metrics = &ctx.metrics;
    let remote = match tokio::net::lookup_host((source.host.as_str(), source.port)).await {
        Ok(mut addrs) => match addrs.next() {
            Some(a) => a,
            None => {
                metrics.connection_error(Protocol::Srt, Reason::PullResolve);
                warn!("srt pull: host has no address");
                return Attempt::Failed;
            }
        },
        Err(e) => {
            metrics.connection_error(Protocol::Srt, Reason::PullResolve);
            warn!(error = %e, "srt pull: cannot resolve the host");
            return Attempt::Failed;
        }
    };
    let local: SocketAddr = if remote.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    // Connected: only the remote's datagrams arrive, and an ICMP "port unreachable" (nobody
    // listens) fails the attempt at once instead of after the connect timeout.
    let socket = match super::srt::bind(local, super::srt::PULL_RECV_BUFFER) {
        Ok(s) => match s.connect(remote).await {
            Ok(()) => Arc::new(s),
            Err(e) => {
                metrics.connection_error(Protocol::Srt, Reason::PullSocket);
                warn!(error = %e, "srt pull: cannot open a UDP socket");
                return Attempt::Failed;
            }
        },
        Err(e) => {
            metrics.connection_error(Protocol::Srt, Reason::PullSocket);
            warn!(error = %e, "srt pull: cannot open a UDP socket");
            return Attempt::Failed;
        }
    };
    let state = match UdpSocketState::new(UdpSockRef::from(&*socket)) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            metrics.connection_error(Protocol::Srt, Reason::PullSocket);
            warn!(error = %e, "srt pull: cannot set up the UDP socket");
            return Attempt::Failed;
        }
    };
    let mut sock = PullSocket {
        socket: socket.clone(),
        state: state.clone(),
        buf: vec![0u8; DATAGRAM_BUF],
        pending: VecDeque::new(),
        ingest: metrics
            .ingest_bytes
            .get_or_create(&ProtocolLabels {
                protocol: Protocol::Srt,
            })
            .clone(),
    };
    let secret = match os_secret() {
        Ok(s) => s,
        Err(e) => {
            metrics.connection_error(Protocol::Srt, Reason::Random);
            warn!(error = %e, "srt pull: no random bytes from the operating system");
            return Attempt::Failed;
        }
    };
    let mut config = CallerConfig::new(secret);
    config.stream_id = source.stream_id.clone();
    config.passphrase = source.passphrase.clone();
    config.key_length = source.key_length;
    config.latency = source.latency.unwrap_or(ctx.config.srt_latency);
    config.connect_timeout = source.connect_timeout;
    config.peer_idle_timeout = source.peer_idle_timeout;
    let conn = match handshake(&mut sock, remote, config).await {
        Ok(conn) => conn,
        Err((reason, e)) => {
            metrics.connection_error(Protocol::Srt, reason);
            warn!(peer = %remote, error = %e, "srt pull: cannot connect");
            return Attempt::Failed;
        }
    };
    metrics
        .connections
        .get_or_create(&ProtocolLabels {
            protocol: Protocol::Srt,
        })
        .inc();
    let publisher = match ctx.streams.begin_pull(id.clone()).await {
        Ok(p) => p,
        Err(e) => {
            metrics.refused_for(Protocol::Srt, &id.tenant, e.reason());
            let mut conn = conn;
            let now = Instant::now();
            conn.close(now);
            while let Some(d) = conn.poll_transmit(now) {
                send(&socket, &state, remote, &d);
            }
            if matches!(e, crate::stream::PublishError::Draining) {
                info!("srt pull: worker draining, not publishing");
                return Attempt::Stop;
            }
            warn!(
                reason = e.reason().as_str(),
                "srt pull: publish refused: {e}"
            );
            return Attempt::Failed;
        }
    };
    info!(
        peer = %remote,
        epoch = publisher.epoch(),
        latency_ms = conn.latency().as_millis() as u64,
        encrypted = conn.is_encrypted(),
        "srt pull: connected, publishing"
    );
    let driver = ConnectionDriver::new(
        ctx.clone(),
        socket,
        state,
        conn,
        publisher,
        Inbox::Own(sock),
    );
    let started = Instant::now();
    let end = driver.run(shutdown.clone()).await;
    if end.reason == "worker draining" {
        return Attempt::Stop;
    }
    // A source that accepts and drops at once must not make us spin.
    if end.delivered > 0 && started.elapsed() >= BACKOFF_MAX {
        Attempt::Streamed
    } else {
        Attempt::Failed
    }
}

/// Runs the caller handshake on `sock` until it connects or fails (metric reason and
/// message).
async fn handshake(
    sock: &mut PullSocket,
    remote: SocketAddr,
    config: CallerConfig,
) -> Result<tidegate_srt::Connection, (Reason, String)> {
    let failed = |e: SrtError| {
        let reason = match e {
            SrtError::HandshakeTimeout => Reason::PullTimeout,
            SrtError::Rejected(_) => Reason::PullRejected,
            _ => Reason::PullHandshake,
        };
        (reason, e.to_string())
    };
    let mut caller = Caller::new(Instant::now(), remote, config).map_err(failed)?;
    loop {
        let now = Instant::now();
        caller.handle_timeout(now);
        if let Some(outcome) = caller.poll_outcome() {
            return outcome.map_err(failed);
        }
        while let Some(d) = caller.poll_transmit(now) {
            // The socket is connected to `remote`; unlike quinn-udp's send, tokio's reports
            // the ICMP refusal.
            match sock.socket.try_send(&d) {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    return Err((
                        Reason::PullRefused,
                        "connection refused (nobody listens)".into(),
                    ));
                }
                _ => {}
            }
        }
        let deadline = caller.poll_timeout().unwrap_or(now + BACKOFF_MIN);
        tokio::select! {
            r = sock.recv() => match r {
                Ok((from, d)) if from == remote => {
                    // Malformed handshake answers are ignored; the timeout decides.
                    let _ = caller.handle_datagram(Instant::now(), &d);
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    return Err((Reason::PullRefused, "connection refused (nobody listens)".into()));
                }
                Err(_) => tokio::time::sleep_until(deadline.into()).await,
            },
            () = tokio::time::sleep_until(deadline.into()) => {}
        }
    }
}
