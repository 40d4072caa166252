//! The RTMP listener and its connection driver.
//!
//! One task per TCP connection owns one [`ServerSession`] (RTMP) and, once publishing, one
//! [`FlvDemuxer`] and one [`Publisher`]. Its loop: read into the buffer → `handle_input` →
//! write every `poll_transmit` → act on every `poll_event` → re-arm one timer from
//! `poll_timeout` and the idle deadline.
//!
//! What a peer can make a connection hold, and for how long:
//! - a connection slot (`--max-connections`, `--max-connections-per-ip`, shared with SRT,
//!   and the descriptor reserve; refused at accept) and, once publishing, a publisher slot
//!   (`--max-publishers`, shared with SRT);
//! - until it publishes, 64 KiB of unfinished messages (the session's before-publish limits)
//!   and a read buffer of [`READ_CHUNK_BEFORE_PUBLISH`]; across connections, a share of
//!   [`INGEST_BUFFER_BUDGET_BYTES`](super::limits::INGEST_BUFFER_BUDGET_BYTES);
//! - until it has a publish accepted, twice the handshake timeout counted from its accept (or
//!   its last unpublish), however it trickles bytes; then every read has the idle deadline;
//!   every write `--rtmp-write-timeout`; a kick closes the socket at once, even while a write
//!   is stuck;
//! - across connections, an accepted publisher within its fair share of the budget (budget /
//!   `--max-publishers`) is never the one closed for passing it;
//! - its kernel send buffer is [`SEND_BUFFER_BYTES`] (the server only sends small replies).
//!
//! RTMPS ([`super::rtmps`]) runs the same accept loop and the same driver over a TLS stream:
//! the TLS handshake happens in the connection's task, holding its connection slot, within
//! the handshake timeout and inside the same before-publish budget counted from the accept.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tidegate_flv::FlvDemuxer;
use tidegate_media::{MediaEvent, TrackKind};
use tidegate_rtmp::{Amf0Value, Event, ServerSession, SessionConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, warn, Instrument};

use super::limits::{BudgetShare, Slot, MAX_PUBLISHERS_RULE, TOO_MANY_BAD_KEYS};
use super::reason::ErrorReason;
use super::rtmps::{self, Certificate};
use super::KeyHint;
use crate::metrics::{
    ConnectionErrorReason as Reason, LogArea, Protocol, ProtocolLabels, PublishRefusal,
};
use crate::stream::{Publisher, PublisherClosed};
use crate::webhooks::Verdict;
use crate::Context;
use tidegate_limits::{
    AcceptBackoff, ConnectionGuard, LogLimiter, LOG_LINES_PER_SECOND, LOG_WINDOW,
};
use tidegate_registry::quotas::QuotaRefusal;
use tidegate_registry::tenants::KeyRefusal;
use tidegate_store::StreamId;

/// Bytes read from the socket at once while publishing.
const READ_CHUNK: usize = 64 * 1024;
/// Bytes read at once before: the handshake is 1537 + 1536 bytes and the commands before
/// `publish` are a few hundred.
const READ_CHUNK_BEFORE_PUBLISH: usize = 8 * 1024;
/// The kernel send buffer of an RTMP connection. The server only sends small replies
/// (acknowledgements, status, ping responses), so this is plenty, and a peer that stops
/// reading pins at most this much kernel memory on our side.
const SEND_BUFFER_BYTES: usize = 64 * 1024;
/// How long closing a connection may wait to send its last bytes (TLS: the close_notify
/// alert) to a peer that reads nothing.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

static CONNECTION_IDS: AtomicU64 = AtomicU64::new(1);

/// Accepts RTMP connections until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, ctx: Arc<Context>, shutdown: CancellationToken) {
    accept_loop(listener, ctx, None, shutdown).await;
}

/// The accept loop of RTMP (`tls` unset) and RTMPS: the same caps, the same driver.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    ctx: Arc<Context>,
    tls: Option<Arc<Certificate>>,
    shutdown: CancellationToken,
) {
    let tracker = tokio_util::task::TaskTracker::new();
    let (protocol, area, name, upper) = match &tls {
        None => (Protocol::Rtmp, LogArea::Rtmp, "rtmp", "RTMP"),
        Some(_) => (Protocol::Rtmps, LogArea::Rtmps, "rtmps", "RTMPS"),
    };
    // Per-connection lines (a connection that never published ending, a refusal): a flood
    // of connections gets one summary line a second beyond them.
    let log = Arc::new(LogLimiter::new(
        name,
        LOG_LINES_PER_SECOND,
        ctx.metrics.log_suppressed(area),
    ));
    // The line that says an address's back-off for wrong keys starts (once per address and
    // back-off) has a budget of its own, so that the refusals before it cannot hide it.
    let bad_key_log = Arc::new(LogLimiter::new(
        name,
        LOG_LINES_PER_SECOND,
        ctx.metrics.log_suppressed(area),
    ));
    let mut accept = AcceptBackoff::new(upper, name, ctx.metrics.log_suppressed(area));
    let mut summary = tokio::time::interval(LOG_WINDOW);
    summary.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = summary.tick() => {
                let now = Instant::now();
                log.flush(now);
                bad_key_log.flush(now);
                accept.flush(now);
                continue;
            }
            () = shutdown.cancelled() => break,
        };
        let (sock, peer) = match accepted {
            Ok(a) => a,
            Err(e) if accept.pause(&e, &shutdown).await => continue,
            Err(_) => break,
        };
        accept.accepted();
        let permit = match ctx
            .ingest_limits
            .connection(protocol, peer.ip(), &ctx.metrics)
        {
            Ok(permit) => permit,
            Err(refusal) => {
                if log.allow(Instant::now()) {
                    warn!(%peer, reason = refusal.as_str(), "{name} connection refused");
                }
                // Dropping the socket closes it at once.
                continue;
            }
        };
        let id = CONNECTION_IDS.fetch_add(1, Ordering::Relaxed);
        let ctx = ctx.clone();
        let shutdown = shutdown.clone();
        let log = log.clone();
        let bad_key_log = bad_key_log.clone();
        let tls = tls.clone();
        let span = match tls {
            None => info_span!("rtmp", conn = id, peer = %peer),
            Some(_) => info_span!("rtmps", conn = id, peer = %peer),
        };
        tracker.spawn(
            async move {
                let _ = sock.set_nodelay(true);
                let _ = socket2::SockRef::from(&sock).set_send_buffer_size(SEND_BUFFER_BYTES);
                // The connection counts, and its clocks start, at the accept: before any
                // TLS handshake.
                ctx.metrics
                    .connections
                    .get_or_create(&ProtocolLabels { protocol })
                    .inc();
                let conn = Connection::new(ctx, peer, protocol, permit, log, bad_key_log);
                match tls {
                    None => conn.run(sock, shutdown).await,
                    Some(cert) => {
                        let deadline = Instant::now() + conn.ctx.config.rtmp_handshake_timeout;
                        match rtmps::handshake(sock, &cert, deadline, &shutdown).await {
                            Ok(Some(stream)) => conn.run(stream, shutdown).await,
                            Ok(None) => debug!("connection closed: worker shutting down"),
                            Err(failure) => failure.report(&conn.ctx.metrics, &conn.log),
                        }
                    }
                }
            }
            .instrument(span),
        );
    }
    tracker.close();
    tracker.wait().await;
}

struct Publishing {
    stream_id: u32,
    publisher: Publisher,
    flv: FlvDemuxer,
    closed: CancellationToken,
    /// This worker's publisher slot, given back when the publish ends.
    _slot: Slot,
}

struct Connection {
    ctx: Arc<Context>,
    /// RTMP, or RTMPS over TLS (the `protocol` label of its metrics).
    protocol: Protocol,
    session: ServerSession,
    publishing: Option<Publishing>,
    /// Whether a publish was accepted on this connection (its lines are never suppressed).
    published: bool,
    last_input: Instant,
    /// When the connection was accepted or its publish last ended: until it publishes, it
    /// must do so within twice the handshake timeout of this, however it trickles input.
    not_publishing_since: Instant,
    peer: SocketAddr,
    /// Bytes this connection holds, as a share of the budget across connections.
    buffered: BudgetShare,
    log: Arc<LogLimiter>,
    /// The budget of the line that starts an address's back-off for wrong keys (the
    /// listener's).
    bad_key_log: Arc<LogLimiter>,
    /// The connection slot, given back when the task ends.
    _permit: ConnectionGuard,
}

/// Why a connection ended, for the log and the metric.
enum End {
    PeerClosed,
    Shutdown,
    /// The API kicked the publisher.
    Kicked,
    Error(Reason, String),
}

impl From<PublisherClosed> for End {
    /// A publisher told to go by a drain ends the connection as a shutdown; anything else
    /// is the packager's error.
    fn from(e: PublisherClosed) -> Self {
        if e.is_drain() {
            Self::Shutdown
        } else {
            Self::Error(Reason::Packager, e.to_string())
        }
    }
}

/// How a flush ended when it did not finish.
enum FlushEnd {
    Failed(std::io::Error),
    TimedOut,
    Closed,
}

impl Connection {
    fn new(
        ctx: Arc<Context>,
        peer: SocketAddr,
        protocol: Protocol,
        permit: ConnectionGuard,
        log: Arc<LogLimiter>,
        bad_key_log: Arc<LogLimiter>,
    ) -> Self {
        let now = Instant::now();
        let config = SessionConfig {
            handshake_timeout: ctx.config.rtmp_handshake_timeout,
            ..SessionConfig::default()
        };
        let buffered = ctx.ingest_limits.buffers.share();
        Self {
            ctx,
            protocol,
            session: ServerSession::new(config, now),
            publishing: None,
            published: false,
            last_input: now,
            not_publishing_since: now,
            peer,
            buffered,
            log,
            bad_key_log,
            _permit: permit,
        }
    }

    async fn run<S>(mut self, mut sock: S, shutdown: CancellationToken)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let protocol = self.protocol;
        let metrics = self.ctx.metrics.clone();
        let ingest = metrics
            .ingest_bytes
            .get_or_create(&ProtocolLabels { protocol })
            .clone();
        debug!("connection accepted");
        let mut buf = BytesMut::with_capacity(READ_CHUNK_BEFORE_PUBLISH);
        let end = loop {
            if let Err(end) = self.flush(&mut sock).await {
                break end;
            }
            let (idle, idle_deadline) = if self.publishing.is_some() {
                let idle = self.ctx.config.rtmp_idle_timeout;
                (idle, self.last_input + idle)
            } else {
                // Before publishing (and after an unpublish), the whole connection gets the
                // handshake budget twice, counted from a fixed start: a client that never
                // publishes is a stalled client, however it trickles bytes.
                let idle = self.ctx.config.rtmp_handshake_timeout * 2;
                (idle, self.not_publishing_since + idle)
            };
            let deadline = self
                .session
                .poll_timeout()
                .map_or(idle_deadline, |t| t.min(idle_deadline));
            let closed = self
                .publishing
                .as_ref()
                .map(|p| p.closed.clone())
                .unwrap_or_default();
            buf.reserve(if self.publishing.is_some() {
                READ_CHUNK
            } else {
                READ_CHUNK_BEFORE_PUBLISH
            });
            tokio::select! {
                r = sock.read_buf(&mut buf) => match r {
                    Ok(0) => break End::PeerClosed,
                    Ok(n) => {
                        ingest.inc_by(n as u64);
                        if let Some(p) = &self.publishing {
                            p.publisher.telemetry().note_bytes(n as u64);
                        }
                        self.last_input = Instant::now();
                        if let Err(end) = self.take_input(&mut buf).await {
                            break end;
                        }
                    }
                    // TLS: the peer closed the socket without a close_notify alert, as
                    // encoders (GStreamer, ffmpeg) do; RTMP frames its own messages, so a
                    // truncation is no attack here. A TCP read never says this.
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                        break End::PeerClosed
                    }
                    Err(e) => break End::Error(Reason::Read, e.to_string()),
                },
                () = tokio::time::sleep_until(deadline.into()) => {
                    let now = Instant::now();
                    if now >= idle_deadline {
                        break End::Error(
                            Reason::Timeout,
                            if self.publishing.is_some() {
                                format!("no data for {idle:?}")
                            } else {
                                format!("no accepted publish within {idle:?}")
                            },
                        );
                    }
                    if let Err(e) = self.session.handle_timeout(now) {
                        break End::Error(e.reason(), e.to_string());
                    }
                },
                () = closed.cancelled(), if self.publishing.is_some() => {
                    break self.closed_end();
                },
                () = shutdown.cancelled() => break End::Shutdown,
            }
            if let Err(end) = self.handle_events().await {
                break end;
            }
        };
        let now = Instant::now();
        match &end {
            End::PeerClosed => debug!("connection closed by peer"),
            End::Shutdown if self.published => info!("connection closed: worker shutting down"),
            End::Shutdown => debug!("connection closed: worker shutting down"),
            End::Kicked => {
                metrics.connection_error(protocol, Reason::Kicked);
                info!("connection closed: publisher kicked");
            }
            End::Error(kind, msg) => {
                metrics.connection_error(protocol, *kind);
                // A connection that never published is anyone: a flood of them must not
                // flood the log.
                if self.published || self.log.allow(now) {
                    warn!(reason = kind.as_str(), error = %msg, "connection ended");
                }
            }
        }
        if matches!(end, End::Shutdown) {
            // Tell the publisher we are going so it can reconnect elsewhere (bounded by the
            // write timeout like every write).
            if let Some(p) = &self.publishing {
                self.session.end_publish(p.stream_id);
                let _ = self.flush(&mut sock).await;
            }
        }
        // Let the peer go before the last segment is stored: a kicked or stuck peer is
        // closed at once, not after the store answers.
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, sock.shutdown()).await;
        drop(sock);
        self.buffered.set(0).ok();
        if let Some(p) = self.publishing.take() {
            p.publisher.finish().await;
        }
    }

    /// Parses what `buf` holds and acts on it. The session stops parsing behind a `publish`
    /// until it is answered (answering happens in `handle_events`), so this parses again
    /// while that makes progress: media sent right behind `publish` flows once accepted.
    async fn take_input(&mut self, buf: &mut BytesMut) -> Result<(), End> {
        loop {
            let before = buf.len();
            self.session
                .handle_input(Instant::now(), buf)
                .map_err(|e| End::Error(e.reason(), e.to_string()))?;
            let holding = self.session.pending_bytes().saturating_add(buf.len());
            // An accepted publisher within its fair share of the budget is never the one
            // let go: the budget refuses connections that are not publishing and
            // publishers above their share instead.
            let fair_share = if self.publishing.is_some() {
                let limits = &self.ctx.ingest_limits;
                limits.buffers.max() / limits.publishers.max().max(1)
            } else {
                0
            };
            self.buffered.set_within(holding, fair_share).map_err(|e| {
                End::Error(
                    Reason::BufferTotal,
                    format!("unfinished messages across connections: {e}"),
                )
            })?;
            self.handle_events().await?;
            if buf.len() == before || buf.is_empty() {
                return Ok(());
            }
        }
    }

    /// Why the publisher's `closed` token fired.
    fn closed_end(&self) -> End {
        if self
            .publishing
            .as_ref()
            .is_some_and(|p| p.publisher.was_kicked())
        {
            End::Kicked
        } else {
            End::Error(
                Reason::Superseded,
                "the stream was taken over or its writer stopped".into(),
            )
        }
    }

    /// Writes what the session has to send, within the write timeout; a kick ends it at once
    /// even while the peer reads nothing.
    async fn flush<S: AsyncWrite + Unpin>(&mut self, sock: &mut S) -> Result<(), End> {
        let timeout = self.ctx.config.rtmp_write_timeout;
        let closed = self.publishing.as_ref().map(|p| p.closed.clone());
        let session = &mut self.session;
        let write = async {
            while let Some(data) = session.poll_transmit() {
                sock.write_all(&data).await?;
            }
            // TLS holds records until flushed (a no-op on TCP).
            sock.flush().await?;
            Ok::<(), std::io::Error>(())
        };
        let outcome = tokio::select! {
            r = tokio::time::timeout(timeout, write) => match r {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => FlushEnd::Failed(e),
                Err(_) => FlushEnd::TimedOut,
            },
            () = async {
                match &closed {
                    Some(c) => c.cancelled().await,
                    None => std::future::pending().await,
                }
            } => FlushEnd::Closed,
        };
        Err(match outcome {
            FlushEnd::Failed(e) => End::Error(Reason::Write, e.to_string()),
            FlushEnd::TimedOut => End::Error(
                Reason::WriteTimeout,
                format!("could not send our replies within {timeout:?}: the peer is not reading"),
            ),
            FlushEnd::Closed => self.closed_end(),
        })
    }

    async fn handle_events(&mut self) -> Result<(), End> {
        while let Some(event) = self.session.poll_event() {
            match event {
                Event::Connect { app, .. } => debug!(app = %app, "rtmp connect"),
                Event::PublishRequest {
                    stream_id,
                    app,
                    stream_key,
                    ..
                } => self.publish(stream_id, &app, &stream_key).await,
                Event::Metadata { stream_id, data } => {
                    debug!("metadata");
                    if let Some(p) = self
                        .publishing
                        .as_mut()
                        .filter(|p| p.stream_id == stream_id && declares_video(&data))
                    {
                        // Health then expects a sequence header (`no_video` otherwise).
                        p.publisher
                            .handle_media(MediaEvent::VideoDeclared, &self.ctx.metrics)
                            .await
                            .map_err(End::from)?;
                    }
                }
                Event::Video {
                    stream_id,
                    timestamp,
                    data,
                } => {
                    self.media(stream_id, TrackKind::Video, timestamp, data)
                        .await?
                }
                Event::Audio {
                    stream_id,
                    timestamp,
                    data,
                } => {
                    self.media(stream_id, TrackKind::Audio, timestamp, data)
                        .await?
                }
                Event::Unpublish { stream_id }
                    if self
                        .publishing
                        .as_ref()
                        .is_some_and(|p| p.stream_id == stream_id) =>
                {
                    if let Some(p) = self.publishing.take() {
                        self.not_publishing_since = Instant::now();
                        info!(stream = %p.publisher.id(), "publisher unpublished");
                        p.publisher.finish().await;
                    }
                }
                #[allow(unreachable_patterns)]
                _ => {}
            }
        }
        Ok(())
    }

    /// One FLV video or audio tag on the publishing stream: demuxed, its frames passed on. A
    /// tag for another message stream id is not ours and is dropped.
    async fn media(
        &mut self,
        stream_id: u32,
        track: TrackKind,
        timestamp: u32,
        data: Bytes,
    ) -> Result<(), End> {
        let Some(p) = self
            .publishing
            .as_mut()
            .filter(|p| p.stream_id == stream_id)
        else {
            return Ok(());
        };
        match track {
            TrackKind::Video => p.flv.handle_video(timestamp, data),
            TrackKind::Audio => p.flv.handle_audio(timestamp, data),
        }
        .map_err(|e| End::Error(e.reason(), e.to_string()))?;
        self.forward_media().await
    }

    async fn forward_media(&mut self) -> Result<(), End> {
        let Some(p) = self.publishing.as_mut() else {
            return Ok(());
        };
        while let Some(ev) = p.flv.poll_event() {
            p.publisher
                .handle_media(ev, &self.ctx.metrics)
                .await
                .map_err(End::from)?;
        }
        Ok(())
    }

    async fn publish(&mut self, stream_id: u32, app: &str, key: &str) {
        let metrics = self.ctx.metrics.clone();
        let now = Instant::now();
        // The key is a secret: a refusal names only its hint (hashed only for a line that
        // is written).
        let hint = KeyHint(key);
        if self.publishing.is_some() {
            metrics.refused(self.protocol, PublishRefusal::SecondPublish);
            self.session.reject_publish(
                stream_id,
                "NetStream.Publish.BadName",
                "this connection already publishes",
            );
            return;
        }
        // An address that presented too many wrong keys is refused before its key is
        // looked at (no parse, no hash) until its back-off ends.
        if let Err(blocked) = self.ctx.ingest_limits.bad_keys.check(self.peer.ip(), now) {
            metrics.refused(self.protocol, PublishRefusal::TooManyBadKeys);
            if self.log.allow(now) {
                warn!(
                    retry_in_s = blocked.remaining.as_secs(),
                    "publish refused: {TOO_MANY_BAD_KEYS}"
                );
            }
            self.session
                .reject_publish(stream_id, "NetStream.Publish.Rejected", TOO_MANY_BAD_KEYS);
            return;
        }
        // The key as the tenant directory resolves it (open mode: any key K is tenant
        // `default`, stream K). The app name is not used (README: `rtmp://HOST/APP/KEY`,
        // APP ignored).
        let id = match self.ctx.tenants.resolve(key) {
            Ok(admitted) => {
                // A dedicated pool's tenant publishes only to its pool's workers, and a
                // pooled worker takes only its pool's tenants.
                if let Err(refusal) = self.ctx.tenants.check_pool(&admitted) {
                    metrics.refused_for(self.protocol, &admitted.id.tenant, PublishRefusal::Pool);
                    let text = refusal.text();
                    if self.log.allow(now) {
                        warn!(key = %hint, stream = %admitted.id, "publish refused: {text}");
                    }
                    self.session
                        .reject_publish(stream_id, "NetStream.Publish.Rejected", &text);
                    return;
                }
                admitted.id
            }
            Err(refusal) => {
                let (reason, status, text) = match refusal {
                    KeyRefusal::BadKey if key.is_empty() => (
                        PublishRefusal::BadKey,
                        "NetStream.Publish.BadName",
                        "no stream key: publish to rtmp://HOST/live/KEY",
                    ),
                    KeyRefusal::BadKey => (
                        PublishRefusal::BadKey,
                        "NetStream.Publish.BadName",
                        refusal.text(),
                    ),
                    KeyRefusal::UnknownKey => (
                        PublishRefusal::UnknownKey,
                        "NetStream.Publish.BadName",
                        refusal.text(),
                    ),
                    KeyRefusal::Unavailable => (
                        PublishRefusal::KeysUnavailable,
                        "NetStream.Publish.Rejected",
                        refusal.text(),
                    ),
                };
                metrics.refused(self.protocol, reason);
                if self.log.allow(now) {
                    warn!(key = %hint, app, "publish refused: {text}");
                }
                if refusal == KeyRefusal::UnknownKey {
                    self.bad_key(now);
                }
                self.session.reject_publish(stream_id, status, text);
                return;
            }
        };
        // The tenant's attempts a second, before anything costs more.
        if let Err(q) = self.ctx.tenants.check_rate(&id, now).await {
            self.refuse_quota(stream_id, &id, q, now);
            return;
        }
        // The worker's publisher cap, before anything costs more (the on-publish callback,
        // the state store).
        let Some(slot) = self.ctx.ingest_limits.publisher(self.protocol, &metrics) else {
            if self.log.allow(now) {
                warn!(
                    key = %hint,
                    max_publishers = self.ctx.ingest_limits.publishers.max(),
                    "publish refused: {MAX_PUBLISHERS_RULE}"
                );
            }
            self.session.reject_publish(
                stream_id,
                "NetStream.Publish.Rejected",
                "this worker has its maximum of publishers; try another one",
            );
            return;
        };
        // The tenant's live streams and their bitrate, across the cluster.
        if let Err(q) = self.ctx.tenants.check_live(&id).await {
            self.refuse_quota(stream_id, &id, q, now);
            return;
        }
        if let Some(hook) = &self.ctx.on_publish {
            let verdict = hook.check(&id, self.protocol, Some(app), self.peer).await;
            if verdict != Verdict::Accept {
                metrics.refused_for(self.protocol, &id.tenant, verdict.reason());
                if self.log.allow(now) {
                    warn!(key = %hint, reason = verdict.reason().as_str(), "publish refused by the on-publish callback");
                }
                let text = match verdict {
                    Verdict::Unavailable => "authorisation callback unavailable",
                    _ => "not authorised to publish",
                };
                self.session
                    .reject_publish(stream_id, "NetStream.Publish.Unauthorized", text);
                return;
            }
        }
        match self
            .ctx
            .streams
            .begin_publish(id.clone(), self.protocol)
            .await
        {
            Ok(publisher) => {
                info!(stream = %id, epoch = publisher.epoch(), peer = %self.peer, "publishing");
                self.ctx
                    .tenants
                    .apply_bitrate_quota(&id, publisher.telemetry());
                let closed = publisher.closed();
                self.publishing = Some(Publishing {
                    stream_id,
                    publisher,
                    flv: FlvDemuxer::new(),
                    closed,
                    _slot: slot,
                });
                self.published = true;
                self.session.accept_publish(stream_id);
            }
            Err(e) => {
                metrics.refused_for(self.protocol, &id.tenant, e.reason());
                if self.log.allow(now) {
                    warn!(key = %hint, reason = e.reason().as_str(), "publish refused: {e}");
                }
                self.session
                    .reject_publish(stream_id, "NetStream.Publish.BadName", &e.to_string());
            }
        }
    }

    /// Counts a wrong key against this connection's address; says so (within the log
    /// budget) when it starts the address's back-off.
    fn bad_key(&self, now: Instant) {
        let limiter = &self.ctx.ingest_limits.bad_keys;
        if let Some(blocked) = limiter.failed(self.peer.ip(), now) {
            if self.bad_key_log.allow(now) {
                warn!(
                    backoff_s = blocked.remaining.as_secs(),
                    "too many wrong stream keys from {}: its publishes are refused for {:?} \
                     (--bad-key-limit, --bad-key-backoff)",
                    self.peer.ip(),
                    blocked.remaining
                );
            }
        }
    }
}

impl Connection {
    /// Refuses a publish over one of its tenant's quotas: `NetStream.Publish.Rejected` with
    /// the quota in words (ffmpeg prints it), counted with the tenant and logged.
    fn refuse_quota(&mut self, stream_id: u32, id: &StreamId, q: QuotaRefusal, now: Instant) {
        let text = q.text(&id.tenant);
        self.ctx
            .metrics
            .refused_for(self.protocol, &id.tenant, q.reason());
        if self.log.allow(now) {
            warn!(stream = %id, reason = q.reason().as_str(), "publish refused: {text}");
        }
        self.session
            .reject_publish(stream_id, "NetStream.Publish.Rejected", &text);
    }
}

/// Whether `onMetaData` names a video codec (`videocodecid`: a number such as 7, or an
/// Enhanced RTMP FourCC such as `"hvc1"`), i.e. the publisher declares a video track.
fn declares_video(metadata: &Amf0Value) -> bool {
    match metadata.get("videocodecid") {
        Some(Amf0Value::Number(n)) => *n > 0.0,
        Some(Amf0Value::String(s)) => !s.is_empty(),
        _ => false,
    }
}
