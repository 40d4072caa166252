//! Streams apart from connections.
//!
//! A [`Stream`] (tenant, name) owns its playlist state; a connection only feeds it through a
//! [`Publisher`]. The lifecycle of PRODUCT.md lives here:
//!
//! ```text
//!   begin_publish ──▶ Live ──(publisher gone)──▶ Reconnecting ──(window passes)──▶ Ended
//!        ▲                                          │                               │
//!        └──────────── Resumed (same playlist, ◀────┘                               │
//!                       EXT-X-DISCONTINUITY)          new playlist (sequence goes on) ◀┘
//! ```
//!
//! Media path: the connection task runs the [`Segmenter`] (cheap, synchronous) and hands its
//! outputs to the stream's writer task over a bounded channel, so a slow store pushes back on
//! the publisher instead of growing memory. The writer stores the object first, then
//! compare-and-sets the stream record on the epoch it holds, then swaps the rendered playlist
//! that the origin serves. A writer whose epoch was superseded stops at once.

mod writer;

use std::collections::HashMap;
use std::sync::{Arc, Mutex as SyncMutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tidegate_media::MediaEvent;
use tidegate_packager::{Container, PlaylistState, Segmenter, SegmenterConfig, SegmenterOutput};
use tokio::sync::{mpsc, Mutex};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::metrics::Metrics;
use crate::store::{MediaStore, StateStore, StoreError, StreamId, StreamRecord};
use crate::unix_ms;

/// Settings every stream of this worker shares.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// Segment container.
    pub container: Container,
    /// Target segment duration, 90 kHz ticks.
    pub segment_ticks: u64,
    /// Target segment duration.
    pub segment_duration: Duration,
    /// Segments in the sliding window.
    pub playlist_window: usize,
    /// How long a stream waits for its publisher.
    pub reconnect_window: Duration,
    /// This worker's name (recorded as the owner of the epochs it holds).
    pub worker_id: String,
}

impl StreamSettings {
    /// How long a segment stays fetchable after it left the playlist.
    pub fn delete_grace(&self) -> Duration {
        self.segment_duration * 4 + Duration::from_secs(10)
    }
}

/// Why a publish was refused.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// A publisher is live on this key.
    #[error("stream is already live")]
    AlreadyLive,
    /// The worker is shutting down.
    #[error("worker is draining")]
    Draining,
    /// The state store failed or another worker holds the stream.
    #[error("state store: {0}")]
    Store(#[from] StoreError),
}

impl PublishError {
    /// Metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::AlreadyLive => "already_live",
            Self::Draining => "draining",
            Self::Store(StoreError::Conflict { .. }) => "conflict",
            Self::Store(_) => "store_error",
        }
    }
}

/// Rendered playlists, swapped whole on every change.
#[derive(Debug, Default, Clone)]
pub struct Rendered {
    /// The media playlist.
    pub media: Bytes,
    /// The multivariant playlist, once codecs are known.
    pub multivariant: Option<Bytes>,
}

/// One stream: its record and its publisher, if any.
pub struct Stream {
    id: StreamId,
    inner: Mutex<StreamInner>,
    rendered: SyncMutex<Rendered>,
}

struct StreamInner {
    record: Option<StreamRecord>,
    /// Bumped on every publish; a reconnect timer ends the stream only if it is unchanged.
    generation: u64,
    live: bool,
}

impl Stream {
    /// The stream's id.
    pub fn id(&self) -> &StreamId {
        &self.id
    }

    /// The playlists as last rendered.
    pub fn rendered(&self) -> Rendered {
        self.rendered.lock().map(|r| r.clone()).unwrap_or_default()
    }

    fn set_rendered(&self, playlist: &PlaylistState) {
        let media = Bytes::from(playlist.render_media_playlist());
        let multivariant = playlist
            .render_multivariant_playlist("index.m3u8")
            .map(Bytes::from);
        if let Ok(mut r) = self.rendered.lock() {
            *r = Rendered {
                media,
                multivariant,
            };
        }
    }
}

/// The registry of streams known to this worker, and the stores behind them.
pub struct Streams {
    streams: Mutex<HashMap<StreamId, Arc<Stream>>>,
    state: Arc<dyn StateStore>,
    media: Arc<dyn MediaStore>,
    settings: StreamSettings,
    metrics: Arc<Metrics>,
    draining: CancellationToken,
}

impl Streams {
    /// A registry over the given stores.
    pub fn new(
        state: Arc<dyn StateStore>,
        media: Arc<dyn MediaStore>,
        settings: StreamSettings,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            streams: Mutex::default(),
            state,
            media,
            settings,
            metrics,
            draining: CancellationToken::new(),
        })
    }

    /// The media store (the origin reads segments from it).
    pub fn media(&self) -> &Arc<dyn MediaStore> {
        &self.media
    }

    /// Refuses new publishers from now on.
    pub fn start_draining(&self) {
        self.draining.cancel();
    }

    /// Loads every stored stream: a stream whose publisher died with a previous incarnation of
    /// this worker enters the reconnect window for what is left of it, or ends.
    pub async fn recover(self: &Arc<Self>) -> Result<usize, StoreError> {
        let ids = self.state.list().await?;
        let now = unix_ms();
        let window = i64::try_from(self.settings.reconnect_window.as_millis()).unwrap_or(i64::MAX);
        let mut n = 0;
        for id in ids {
            let Some(mut record) = self.state.load(&id).await? else {
                continue;
            };
            let stream = self.get_or_insert(&id).await;
            let mut inner = stream.inner.lock().await;
            if !record.playlist.ended {
                let left = record.publisher_left_ms.unwrap_or(record.updated_ms);
                let remaining = window.saturating_sub(now.saturating_sub(left));
                if remaining <= 0 {
                    let epoch = record.playlist.epoch;
                    record.playlist.end();
                    record.updated_ms = now;
                    if let Err(e) = self.state.compare_and_set(Some(epoch), &record).await {
                        warn!(stream = %id, error = %e, "could not end a stale stream");
                    }
                    info!(stream = %id, "stream ended while the worker was down");
                } else {
                    if record.publisher_left_ms.is_none() {
                        record.publisher_left_ms = Some(left);
                    }
                    let remaining = Duration::from_millis(u64::try_from(remaining).unwrap_or(0));
                    info!(stream = %id, remaining_ms = remaining.as_millis() as u64, "stream recovered; waiting for its publisher");
                    self.arm_reconnect_timer(&stream, inner.generation, remaining);
                    n += 1;
                }
            }
            stream.set_rendered(&record.playlist);
            inner.record = Some(record);
        }
        Ok(n)
    }

    async fn get_or_insert(&self, id: &StreamId) -> Arc<Stream> {
        let mut streams = self.streams.lock().await;
        streams
            .entry(id.clone())
            .or_insert_with(|| {
                Arc::new(Stream {
                    id: id.clone(),
                    inner: Mutex::new(StreamInner {
                        record: None,
                        generation: 0,
                        live: false,
                    }),
                    rendered: SyncMutex::default(),
                })
            })
            .clone()
    }

    /// The stream, if this worker knows it.
    pub async fn get(&self, id: &StreamId) -> Option<Arc<Stream>> {
        self.streams.lock().await.get(id).cloned()
    }

    /// Every stream this worker knows, with whether a publisher is live.
    pub async fn list(&self) -> Vec<(StreamId, bool, Option<StreamRecord>)> {
        let streams: Vec<_> = self.streams.lock().await.values().cloned().collect();
        let mut out = Vec::with_capacity(streams.len());
        for s in streams {
            let inner = s.inner.lock().await;
            out.push((s.id.clone(), inner.live, inner.record.clone()));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// A publisher arrives for `id`: takes the stream's next epoch and starts (or resumes) its
    /// playlist. Refused while another publisher is live.
    pub async fn begin_publish(self: &Arc<Self>, id: StreamId) -> Result<Publisher, PublishError> {
        if self.draining.is_cancelled() {
            return Err(PublishError::Draining);
        }
        let stream = self.get_or_insert(&id).await;
        let mut inner = stream.inner.lock().await;
        if inner.live {
            return Err(PublishError::AlreadyLive);
        }
        let stored = match &inner.record {
            Some(r) => Some(r.clone()),
            None => self.state.load(&id).await?,
        };
        let now = unix_ms();
        let window = i64::try_from(self.settings.reconnect_window.as_millis()).unwrap_or(i64::MAX);
        let mut stale_objects = Vec::new();
        let (expected, mut record) = match stored {
            None => {
                let playlist = PlaylistState::new(
                    self.settings.container,
                    self.settings.playlist_window,
                    target_secs(self.settings.segment_duration),
                );
                let record = StreamRecord {
                    id: id.clone(),
                    playlist,
                    updated_ms: now,
                    publisher_left_ms: None,
                    owner: self.settings.worker_id.clone(),
                };
                (None, record)
            }
            Some(mut r) => {
                let expected = Some(r.playlist.epoch);
                let left = r.publisher_left_ms.unwrap_or(r.updated_ms);
                let expired = now.saturating_sub(left) > window;
                let resumable = !r.playlist.ended
                    && !expired
                    && r.playlist.container == self.settings.container;
                if !resumable {
                    // A new playlist at the same URL; numbering goes on so no player that
                    // still holds the old one sees the sequence go back.
                    stale_objects = r.playlist.reset_for_new_stream();
                    r.playlist.container = self.settings.container;
                    r.playlist.window = self.settings.playlist_window;
                    info!(stream = %id, "new playlist (previous one ended)");
                } else if !r.playlist.segments.is_empty() {
                    info!(stream = %id, "publisher back within the reconnect window; resuming");
                }
                r.publisher_left_ms = None;
                r.owner = self.settings.worker_id.clone();
                r.updated_ms = now;
                (expected, r)
            }
        };
        record.playlist.begin_session();
        self.state.compare_and_set(expected, &record).await?;
        let epoch = record.playlist.epoch;
        stream.set_rendered(&record.playlist);
        inner.record = Some(record.clone());
        inner.generation += 1;
        inner.live = true;
        drop(inner);
        self.metrics.live_streams.inc();
        for entry in stale_objects {
            let media = self.media.clone();
            let path = format!("{}/{}", id.prefix(), entry.uri);
            tokio::spawn(async move {
                let _ = media.delete(&path).await;
            });
        }

        let (tx, rx) = mpsc::channel(writer::QUEUE_DEPTH);
        let fenced = CancellationToken::new();
        let task = tokio::spawn(writer::run(writer::Writer {
            streams: self.clone(),
            stream: stream.clone(),
            epoch,
            record,
            rx,
            fenced: fenced.clone(),
            map_uri: None,
        }));
        let config = SegmenterConfig {
            container: self.settings.container,
            target_duration: self.settings.segment_ticks,
            ..SegmenterConfig::default()
        };
        Ok(Publisher {
            id,
            epoch,
            segmenter: Segmenter::new(config),
            tx,
            fenced,
            task: Some(task),
        })
    }

    fn arm_reconnect_timer(
        self: &Arc<Self>,
        stream: &Arc<Stream>,
        generation: u64,
        after: Duration,
    ) {
        let this = self.clone();
        let stream = stream.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            this.end_if_abandoned(&stream, generation).await;
        });
    }

    async fn end_if_abandoned(&self, stream: &Arc<Stream>, generation: u64) {
        let mut inner = stream.inner.lock().await;
        if inner.generation != generation || inner.live {
            return;
        }
        let Some(record) = inner.record.as_mut() else {
            return;
        };
        if record.playlist.ended {
            return;
        }
        let epoch = record.playlist.epoch;
        let mut next = record.clone();
        next.playlist.end();
        next.updated_ms = unix_ms();
        match self.state.compare_and_set(Some(epoch), &next).await {
            Ok(()) => {
                info!(stream = %stream.id, "no publisher for the reconnect window; stream ended");
                stream.set_rendered(&next.playlist);
                *record = next;
            }
            Err(e) => {
                self.metrics.store_error("put_state");
                warn!(stream = %stream.id, error = %e, "could not end the stream");
            }
        }
    }

    /// Called by the writer when its publisher has gone and everything is flushed.
    async fn publisher_gone(self: &Arc<Self>, stream: &Arc<Stream>, record: StreamRecord) {
        let mut inner = stream.inner.lock().await;
        inner.record = Some(record);
        inner.live = false;
        self.metrics.live_streams.dec();
        let generation = inner.generation;
        drop(inner);
        info!(stream = %stream.id, window_s = self.settings.reconnect_window.as_secs_f64(), "publisher gone; stream reconnecting");
        self.arm_reconnect_timer(stream, generation, self.settings.reconnect_window);
    }
}

fn target_secs(d: Duration) -> u32 {
    u32::try_from(d.as_millis().div_ceil(1000))
        .unwrap_or(u32::MAX)
        .max(1)
}

/// Messages from a publisher's connection to its stream's writer.
#[derive(Debug)]
enum WriterMsg {
    /// What the segmenter produced, when it was cut, and (for segments) what the multivariant
    /// playlist should say about the stream.
    Output(SegmenterOutput, Instant, Option<StreamInfo>),
    Finish,
}

/// Codec and resolution of the media, for `EXT-X-STREAM-INF`.
#[derive(Debug)]
struct StreamInfo {
    codecs: Option<String>,
    resolution: Option<(u32, u32)>,
}

/// A live publish session's handle: feed it media; end it when the connection ends.
pub struct Publisher {
    id: StreamId,
    epoch: u64,
    segmenter: Segmenter,
    tx: mpsc::Sender<WriterMsg>,
    fenced: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// The publisher lost its stream or its writer failed; the connection must close.
#[derive(Debug, thiserror::Error)]
#[error("publish session ended: {0}")]
pub struct PublisherClosed(pub &'static str);

impl Publisher {
    /// The stream.
    pub fn id(&self) -> &StreamId {
        &self.id
    }

    /// The epoch this session holds.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Cancelled when this session lost its stream (fenced) or its writer stopped.
    pub fn closed(&self) -> CancellationToken {
        self.fenced.clone()
    }

    /// Feeds one media event through the segmenter and hands what it cut to the writer.
    pub async fn handle_media(
        &mut self,
        event: MediaEvent,
        metrics: &Metrics,
    ) -> Result<(), PublisherClosed> {
        if matches!(event, MediaEvent::TimestampJump { .. }) {
            metrics.timestamp_jumps.inc();
        }
        if let Err(e) = self.segmenter.handle_event(event, unix_ms()) {
            // The segmenter drops what it cannot use (a frame going backwards, a segment
            // the muxer refused) and carries on; the publisher is not cut off for it.
            metrics.frames_dropped.inc();
            tracing::debug!(stream = %self.id, error = %e, "packager dropped media");
        }
        self.drain().await
    }

    async fn drain(&mut self) -> Result<(), PublisherClosed> {
        while let Some(out) = self.segmenter.poll_output() {
            let info = matches!(out, SegmenterOutput::Segment(_)).then(|| StreamInfo {
                codecs: self.segmenter.codecs(),
                resolution: self.segmenter.resolution(),
            });
            if self
                .tx
                .send(WriterMsg::Output(out, Instant::now(), info))
                .await
                .is_err()
            {
                return Err(PublisherClosed("writer stopped"));
            }
        }
        Ok(())
    }

    /// The publisher is gone: closes the segment in progress, waits until it is stored and
    /// listed, and puts the stream into its reconnect window.
    pub async fn finish(mut self) {
        self.segmenter.finish();
        if let Some(e) = self.segmenter.take_error() {
            warn!(stream = %self.id, error = %e, "the last segment could not be packaged");
        }
        let _ = self.drain().await;
        let _ = self.tx.send(WriterMsg::Finish).await;
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}
