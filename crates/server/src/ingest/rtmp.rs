//! The RTMP listener and its connection driver.
//!
//! One task per TCP connection owns one [`ServerSession`] (RTMP) and, once publishing, one
//! [`FlvDemuxer`] and one [`Publisher`]. Its loop: read into the buffer → `handle_input` →
//! write every `poll_transmit` → act on every `poll_event` → re-arm one timer from
//! `poll_timeout` and the idle deadline.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tidegate_flv::FlvDemuxer;
use tidegate_media::MediaEvent;
use tidegate_rtmp::{Amf0Value, Event, ServerSession, SessionConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::metrics::{Protocol, ProtocolLabels};
use crate::store::StreamId;
use crate::stream::Publisher;
use crate::webhooks::Verdict;
use crate::Context;

/// Bytes read from the socket at once.
const READ_CHUNK: usize = 64 * 1024;

static CONNECTION_IDS: AtomicU64 = AtomicU64::new(1);

/// Accepts RTMP connections until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, ctx: Arc<Context>, shutdown: CancellationToken) {
    let tracker = tokio_util::task::TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = shutdown.cancelled() => break,
        };
        let (sock, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                warn!(error = %e, "rtmp accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let id = CONNECTION_IDS.fetch_add(1, Ordering::Relaxed);
        let ctx = ctx.clone();
        let shutdown = shutdown.clone();
        let span = info_span!("rtmp", conn = id, peer = %peer);
        tracker.spawn(
            async move {
                Connection::new(ctx, peer).run(sock, shutdown).await;
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
}

struct Connection {
    ctx: Arc<Context>,
    session: ServerSession,
    publishing: Option<Publishing>,
    last_input: Instant,
    peer: SocketAddr,
}

/// Why a connection ended, for the log and the metric.
enum End {
    PeerClosed,
    Shutdown,
    Error(&'static str, String),
}

impl Connection {
    fn new(ctx: Arc<Context>, peer: SocketAddr) -> Self {
        let now = Instant::now();
        let config = SessionConfig {
            handshake_timeout: ctx.config.rtmp_handshake_timeout,
            ..SessionConfig::default()
        };
        Self {
            ctx,
            session: ServerSession::new(config, now),
            publishing: None,
            last_input: now,
            peer,
        }
    }

    async fn run(mut self, mut sock: TcpStream, shutdown: CancellationToken) {
        let _ = sock.set_nodelay(true);
        let metrics = self.ctx.metrics.clone();
        metrics
            .connections
            .get_or_create(&ProtocolLabels {
                protocol: Protocol::Rtmp,
            })
            .inc();
        let ingest = metrics
            .ingest_bytes
            .get_or_create(&ProtocolLabels {
                protocol: Protocol::Rtmp,
            })
            .clone();
        debug!("connection accepted");
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        let end = loop {
            if let Err(e) = self.flush(&mut sock).await {
                break End::Error("write", e.to_string());
            }
            let idle = if self.publishing.is_some() {
                self.ctx.config.rtmp_idle_timeout
            } else {
                // Before publishing, the whole connection gets the handshake budget twice:
                // a client that connects and never publishes is a stalled client.
                self.ctx.config.rtmp_handshake_timeout * 2
            };
            let idle_deadline = self.last_input + idle;
            let deadline = self
                .session
                .poll_timeout()
                .map_or(idle_deadline, |t| t.min(idle_deadline));
            let closed = self
                .publishing
                .as_ref()
                .map(|p| p.closed.clone())
                .unwrap_or_default();
            buf.reserve(READ_CHUNK);
            tokio::select! {
                r = sock.read_buf(&mut buf) => match r {
                    Ok(0) => break End::PeerClosed,
                    Ok(n) => {
                        ingest.inc_by(n as u64);
                        if let Some(p) = &self.publishing {
                            p.publisher.telemetry().note_bytes(n as u64);
                        }
                        let now = Instant::now();
                        self.last_input = now;
                        if let Err(e) = self.session.handle_input(now, &mut buf) {
                            break End::Error(e.kind(), e.to_string());
                        }
                    }
                    Err(e) => break End::Error("read", e.to_string()),
                },
                () = tokio::time::sleep_until(deadline.into()) => {
                    let now = Instant::now();
                    if now >= idle_deadline {
                        break End::Error("timeout", format!("no data for {idle:?}"));
                    }
                    if let Err(e) = self.session.handle_timeout(now) {
                        break End::Error(e.kind(), e.to_string());
                    }
                },
                () = closed.cancelled(), if self.publishing.is_some() => {
                    break End::Error("superseded", "the stream was taken over or its writer stopped".into());
                },
                () = shutdown.cancelled() => break End::Shutdown,
            }
            if let Err(end) = self.handle_events().await {
                break end;
            }
        };
        match &end {
            End::PeerClosed => debug!("connection closed by peer"),
            End::Shutdown => info!("connection closed: worker shutting down"),
            End::Error(kind, msg) => {
                metrics.connection_error(Protocol::Rtmp, kind);
                warn!(reason = kind, error = %msg, "connection ended");
            }
        }
        if matches!(end, End::Shutdown) {
            // Tell the publisher we are going so it can reconnect elsewhere.
            if let Some(p) = &self.publishing {
                self.session.end_publish(p.stream_id);
                let _ = self.flush(&mut sock).await;
            }
        }
        if let Some(p) = self.publishing.take() {
            p.publisher.finish().await;
        }
        let _ = sock.shutdown().await;
    }

    async fn flush(&mut self, sock: &mut TcpStream) -> std::io::Result<()> {
        while let Some(data) = self.session.poll_transmit() {
            sock.write_all(&data).await?;
        }
        Ok(())
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
                            .map_err(|e| {
                                if e.is_drain() {
                                    End::Shutdown
                                } else {
                                    End::Error("packager", e.to_string())
                                }
                            })?;
                    }
                }
                Event::Video {
                    stream_id,
                    timestamp,
                    data,
                } => {
                    if let Some(p) = self
                        .publishing
                        .as_mut()
                        .filter(|p| p.stream_id == stream_id)
                    {
                        p.flv
                            .handle_video(timestamp, data)
                            .map_err(|e| End::Error(e.kind(), e.to_string()))?;
                        self.forward_media().await?;
                    }
                }
                Event::Audio {
                    stream_id,
                    timestamp,
                    data,
                } => {
                    if let Some(p) = self
                        .publishing
                        .as_mut()
                        .filter(|p| p.stream_id == stream_id)
                    {
                        p.flv
                            .handle_audio(timestamp, data)
                            .map_err(|e| End::Error(e.kind(), e.to_string()))?;
                        self.forward_media().await?;
                    }
                }
                Event::Unpublish { stream_id }
                    if self
                        .publishing
                        .as_ref()
                        .is_some_and(|p| p.stream_id == stream_id) =>
                {
                    if let Some(p) = self.publishing.take() {
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

    async fn forward_media(&mut self) -> Result<(), End> {
        let Some(p) = self.publishing.as_mut() else {
            return Ok(());
        };
        while let Some(ev) = p.flv.poll_event() {
            p.publisher
                .handle_media(ev, &self.ctx.metrics)
                .await
                .map_err(|e| {
                    if e.is_drain() {
                        End::Shutdown
                    } else {
                        End::Error("packager", e.to_string())
                    }
                })?;
        }
        Ok(())
    }

    async fn publish(&mut self, stream_id: u32, app: &str, key: &str) {
        let metrics = &self.ctx.metrics;
        if self.publishing.is_some() {
            metrics.refused(Protocol::Rtmp, "second_publish");
            self.session.reject_publish(
                stream_id,
                "NetStream.Publish.BadName",
                "this connection already publishes",
            );
            return;
        }
        // Open mode: any key K is tenant `default`, stream K.
        let Some(id) = StreamId::new("default", key) else {
            metrics.refused(Protocol::Rtmp, "bad_key");
            warn!(app, "publish refused: stream key is not a valid name");
            self.session.reject_publish(
                stream_id,
                "NetStream.Publish.BadName",
                "invalid stream key",
            );
            return;
        };
        if let Some(hook) = &self.ctx.on_publish {
            let verdict = hook.check(&id, Protocol::Rtmp, Some(app), self.peer).await;
            if verdict != Verdict::Accept {
                metrics.refused(Protocol::Rtmp, verdict.reason());
                warn!(stream = %id, reason = verdict.reason(), "publish refused by the on-publish callback");
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
            .begin_publish(id.clone(), Protocol::Rtmp)
            .await
        {
            Ok(publisher) => {
                info!(stream = %id, epoch = publisher.epoch(), peer = %self.peer, "publishing");
                let closed = publisher.closed();
                self.publishing = Some(Publishing {
                    stream_id,
                    publisher,
                    flv: FlvDemuxer::new(),
                    closed,
                });
                self.session.accept_publish(stream_id);
            }
            Err(e) => {
                metrics.refused(Protocol::Rtmp, e.reason());
                warn!(stream = %id, reason = e.reason(), "publish refused: {e}");
                self.session
                    .reject_publish(stream_id, "NetStream.Publish.BadName", &e.to_string());
            }
        }
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
