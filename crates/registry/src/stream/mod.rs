//! Streams apart from connections.
//!
//! A stream (tenant, name) owns its playlist state, kept in the [`StateStore`] as a
//! [`StreamRecord`]; a connection only feeds it through a [`Publisher`]. The lifecycle of
//! PRODUCT.md lives here:
//!
//! ```text
//!   begin_publish ──▶ Live ──(publisher gone)──▶ Reconnecting ──(window passes)──▶ Ended
//!        ▲                                          │                               │
//!        └──────────── Resumed (same playlist, ◀────┘                               │
//!                       EXT-X-DISCONTINUITY)          new playlist (sequence goes on) ◀┘
//! ```
//!
//! **Ownership.** Each publish session takes the stream's next *epoch* with a
//! compare-and-set; every later write of that session is a compare-and-set on it, so a
//! session that lost the stream (to a newer publisher, possibly on another worker) can never
//! write again: its writer sees the conflict on its next write or liveness renewal and closes
//! the connection. While live, the record's `last_media_ms` is renewed about once a second:
//! that is the lease other workers read before taking over (see [`TakeoverPolicy`]).
//!
//! **Media path.** The connection task runs the [`Segmenter`] (cheap, synchronous) and hands
//! what it cuts to the session's writer task (`writer.rs`) over a bounded channel. The writer
//! stores each object, then lists it; when a store is unreachable it keeps a bounded backlog
//! and retries, so an outage shorter than the reconnect window loses nothing.
//!
//! **Any worker is an origin.** A stream this worker publishes is rendered from its own
//! state at every change; any other stream is rendered from the state store on request and
//! cached for [`REMOTE_RENDER_TTL`] — or, while the state store's change notifications are
//! live (Redis pub/sub), until the owner's next write announces a change
//! ([`Streams::apply_change`], bounded by [`NOTIFIED_RENDER_TTL`]).
//!
//! **Waiting for a change** (LL-HLS blocking requests, issue #13): every stream has a
//! change signal ([`Streams::watch`] → [`StreamWatch`]) fired whenever the view this worker
//! serves may have changed: its own session listed something, a change notification came
//! from the feed, the stream ended or was forgotten. A waiter reads the view through its
//! watch (which marks the signal seen first, so a change between the read and the wait
//! is not missed), then awaits [`StreamWatch::changed`]. One change wakes every waiter of
//! the stream at once; reloads of the record are single-flight per stream, so N waiters
//! woken by a change cost one load of the state store, not N.
//!
//! **Ending.** A sweeper ([`Streams::sweep`], every [`SWEEP_INTERVAL`]) ends every stream
//! whose publisher has been gone — or whose owner has been silent — for the reconnect window,
//! whichever worker it was on; on a single node it also finishes what a killed process left.
//! Each tick it reads only the streams that are not ended ([`StateStore::list_active`]), so
//! its cost follows the live and reconnecting streams, not the history; a rarer full pass
//! ([`StreamSettings::full_sweep_interval`]) finds the rest and expires them.
//!
//! **Records.** A stream gets a record when its first media frame arrives, not when its
//! publisher connects: a connection that publishes and sends nothing (or only a handshake)
//! leaves no record, no media and no metric series behind, so a flood of them costs
//! nothing once they are gone. An ended stream keeps its record, its last playlist and its
//! listing for `--ended-retention`; then the sweeper deletes the record and the media of
//! its epochs ([`Sweep::Expire`]). A stream that comes back after that starts a new record: its
//! media sequence starts at 0 again, but its first epoch is taken from the clock
//! ([`first_epoch`]), so its segment names (`seg-EPOCH-N`) can never be those of an old
//! incarnation a CDN or player may still cache, and the old URLs are gone (404).
//!
//! **Decisions.** Who may publish, at which epoch, when a stream resumes, ends or expires,
//! and what a writer writes are the pure functions of [`tidegate_ownership`], fed with this
//! worker's view, the record ([`ownership_of`]) and the clock; this module reads and writes
//! the stores and carries the decisions out.

mod lookups;
mod published;
mod recent;
mod salvage;
mod writer;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex as SyncMutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tidegate_media::MediaEvent;
use tidegate_packager::{
    Container, PartRequest, PlaylistState, Segmenter, SegmenterConfig, SegmenterOutput,
};
use tokio::sync::{mpsc, watch, Mutex};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use tidegate_ownership::{self as ownership, Refusal, Start, Sweep, Takeover, ViewHolder};

use crate::config::TakeoverPolicy;
use crate::metrics::{Metrics, Protocol, PublishRefusal, RecordRestore, SnapshotLookup, StoreOp};
use crate::store::Change;
use crate::store::{MediaStore, StateStore, StoreError, StreamId, StreamRecord};
use crate::telemetry::{HealthSnapshot, StreamTelemetry, Telemetry};
use crate::unix_ms;

/// How often the sweeper ends abandoned streams.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
pub use tidegate_ownership::{first_epoch, FLAP_TAKEOVERS, FLAP_WINDOW_MS, LEASE_TIMEOUT_MS};
/// How long a stream rendered from the state store (owned by another worker, or by nobody)
/// is served before it is read again: a fraction of a segment.
pub const REMOTE_RENDER_TTL: Duration = Duration::from_millis(500);
/// The longest a view rendered from the state store is served while the state store's change
/// notifications are live (Redis pub/sub): a change drops the view at once, so this bound
/// only matters for a notification that never arrives.
pub const NOTIFIED_RENDER_TTL: Duration = Duration::from_secs(1);
/// While the change notifications are down (lost, resubscribing, or not yet on the current
/// primary), how long the view of a stream that LL-HLS requests wait on is trusted before it
/// is read again: the waiters learn a new part from the record itself, not from a feed that
/// is not there. Only streams with waiters are read this often (one load per period, shared).
pub const UNNOTIFIED_WATCH_POLL: Duration = Duration::from_millis(150);
/// The longest interval between two full passes of the sweeper (every record, for expiry
/// and for records no index lists); shorter with a short `--ended-retention`.
pub const MAX_FULL_SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// Settings every stream of this worker shares.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// Segment container.
    pub container: Container,
    /// Target segment duration, 90 kHz ticks.
    pub segment_ticks: u64,
    /// Target segment duration.
    pub segment_duration: Duration,
    /// LL-HLS part duration, 90 kHz ticks; `None`: no parts (fMP4 only).
    pub part_ticks: Option<u64>,
    /// Segments in the sliding window.
    pub playlist_window: usize,
    /// How long a stream waits for its publisher.
    pub reconnect_window: Duration,
    /// Who wins when a second publisher arrives.
    pub takeover_policy: TakeoverPolicy,
    /// This worker's name (recorded as the owner of the epochs it holds).
    pub worker_id: String,
    /// How long an ended stream keeps its record and media.
    pub ended_retention: Duration,
}

impl StreamSettings {
    /// How long a segment stays fetchable after it left the playlist.
    pub fn delete_grace(&self) -> Duration {
        self.segment_duration * 4 + Duration::from_secs(10)
    }

    /// The ownership rules of this worker, with `takeover` as the takeover policy.
    fn policy(&self, takeover: TakeoverPolicy) -> ownership::Policy {
        let takeover = match takeover {
            TakeoverPolicy::Newest => Takeover::Newest,
            TakeoverPolicy::Refuse => Takeover::Refuse,
        };
        ownership::Policy::new(takeover, self.reconnect_window, self.ended_retention)
    }

    /// How often the sweeper reads every record (not only the active ones): a quarter of
    /// the retention, between [`SWEEP_INTERVAL`] and [`MAX_FULL_SWEEP_INTERVAL`], so an
    /// ended stream goes at most that late.
    pub fn full_sweep_interval(&self) -> Duration {
        (self.ended_retention / 4).clamp(SWEEP_INTERVAL, MAX_FULL_SWEEP_INTERVAL)
    }
}

/// What the ownership decisions need of `record`.
pub fn ownership_of(record: &StreamRecord) -> ownership::Record {
    ownership::Record {
        epoch: record.playlist.epoch,
        owner: record.owner.clone(),
        ended: record.playlist.ended,
        updated_ms: record.updated_ms,
        publisher_left_ms: record.publisher_left_ms,
        last_media_ms: record.last_media_ms,
        takeovers: record.takeovers.clone(),
    }
}

/// The newer (by epoch) of the stored record and the media store's snapshot.
fn newest(stored: Option<StreamRecord>, snapshot: Option<StreamRecord>) -> Option<StreamRecord> {
    let rebuild = ownership::rebuild_from_snapshot(
        stored.as_ref().map(|r| r.playlist.epoch),
        snapshot.as_ref().map(|r| r.playlist.epoch),
    );
    if rebuild {
        snapshot
    } else {
        stored
    }
}

/// Writes what an ownership decision made of the record back into it.
fn set_ownership(record: &mut StreamRecord, decided: ownership::Record) {
    record.playlist.epoch = decided.epoch;
    record.playlist.ended = decided.ended;
    record.owner = decided.owner;
    record.updated_ms = decided.updated_ms;
    record.publisher_left_ms = decided.publisher_left_ms;
    record.last_media_ms = decided.last_media_ms;
    record.takeovers = decided.takeovers;
}

/// The epoch a media object's name carries (`seg-EPOCH-N.ext`, `init-EPOCH-ID.mp4`, and
/// the record snapshot `record-EPOCH.json`).
pub fn object_epoch(name: &str) -> Option<u64> {
    if let Some(epoch) = published::snapshot_epoch(name) {
        return Some(epoch);
    }
    let rest = name
        .strip_prefix("seg-")
        .or_else(|| name.strip_prefix("init-"))?;
    rest.split_once('-')?.0.parse().ok()
}

/// Why a publish was refused.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// A publisher is live on this key and keeps it.
    #[error("stream is already live")]
    AlreadyLive,
    /// Two encoders keep taking this key from each other; the newcomer is refused.
    #[error("competing publishers: this key changed hands {0} times in a minute")]
    Competing(usize),
    /// The worker is shutting down.
    #[error("worker is draining")]
    Draining,
    /// The state store failed or another worker won the race for the stream.
    #[error("state store: {0}")]
    Store(#[from] StoreError),
}

impl PublishError {
    /// Metric label.
    pub fn reason(&self) -> PublishRefusal {
        match self {
            Self::AlreadyLive => PublishRefusal::AlreadyLive,
            Self::Competing(_) => PublishRefusal::CompetingPublishers,
            Self::Draining => PublishRefusal::Draining,
            Self::Store(StoreError::Conflict { .. }) => PublishRefusal::Conflict,
            Self::Store(_) => PublishRefusal::StoreError,
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
    /// The state both were rendered from: the DASH MPD is rendered from it on request.
    pub state: Arc<PlaylistState>,
    /// The LL-HLS delta update of `state`, rendered by the first viewer that asks for it
    /// ([`Rendered::delta_update`]) and shared by the others.
    delta: Arc<std::sync::OnceLock<Bytes>>,
}

impl Rendered {
    fn of(playlist: &PlaylistState) -> Self {
        Self {
            media: Bytes::from(playlist.render_media_playlist()),
            multivariant: playlist
                .render_multivariant_playlist("index.m3u8")
                .map(Bytes::from),
            state: Arc::new(playlist.clone()),
            delta: Arc::default(),
        }
    }

    /// The Playlist Delta Update (`_HLS_skip=YES`) of the same state, rendered once.
    pub fn delta_update(&self) -> Bytes {
        self.delta
            .get_or_init(|| Bytes::from(self.state.render_delta_update()))
            .clone()
    }
}

/// The live publish session of a stream on this worker.
struct LiveSession {
    generation: u64,
    started_ms: i64,
    last_media_ms: Arc<AtomicI64>,
    fenced: CancellationToken,
    /// Set before `fenced` is cancelled by [`Streams::kick`], so the connection can tell a
    /// kick from a takeover.
    kicked: Arc<AtomicBool>,
}

impl LiveSession {
    fn last_activity_ms(&self) -> i64 {
        self.last_media_ms
            .load(Ordering::Relaxed)
            .max(self.started_ms)
    }
}

/// One stream this worker knows.
pub struct Stream {
    id: StreamId,
    inner: Mutex<StreamInner>,
    view: SyncMutex<View>,
    /// Bumped by every change notification, so a view fetched while a change arrived is not
    /// taken for fresh.
    changes: AtomicU64,
    telemetry: Arc<StreamTelemetry>,
    /// The change signal: its value is bumped whenever the view may have changed
    /// ([`Stream::signal_change`]); waiters hold receivers ([`StreamWatch`]).
    changed: watch::Sender<u64>,
    /// The same signal for the waiters of media (a hinted part, a segment being written),
    /// sent first: of one change's burst of answers, those with the media go out before the
    /// playlists ([`Streams::watch_media`]).
    changed_media: watch::Sender<u64>,
    /// Held while the record is loaded from the state store, so concurrent readers of a
    /// stale view wait for one load and share it ([`Streams::load_view`]).
    loading: Mutex<()>,
    /// Taken out of the registry: a waiter holding it must look the stream up again.
    gone: AtomicBool,
    /// Loads of the record started by [`Streams::load_view`], counted.
    loads: AtomicU64,
}

struct StreamInner {
    /// The last record this worker wrote or read.
    record: Option<StreamRecord>,
    /// Bumped on every publish session started here.
    generation: u64,
    live: Option<LiveSession>,
    /// Taken out of the registry (its record expired, or it never got one): a caller that
    /// found it just before must look the stream up again.
    removed: bool,
}

/// What the origin serves for a stream.
#[derive(Default)]
struct View {
    rendered: Rendered,
    /// When it was rendered from the state store; `None` while a session on this worker
    /// keeps it current.
    fetched: Option<Instant>,
    /// The publish session (its generation) that keeps the view current, if any, and the
    /// sessions that are over: a late write from one of their writers (a segment listed
    /// just before it learned it was fenced) must not take the view back.
    holder: ViewHolder,
    /// The number of the [`Streams::load_view`] load that produced `rendered`, if one did.
    loaded_by: Option<u64>,
}

impl Stream {
    fn new(id: StreamId, telemetry: Arc<StreamTelemetry>) -> Self {
        Stream {
            id,
            inner: Mutex::new(StreamInner {
                record: None,
                generation: 0,
                live: None,
                removed: false,
            }),
            view: SyncMutex::default(),
            changes: AtomicU64::new(0),
            telemetry,
            changed: watch::Sender::new(0),
            changed_media: watch::Sender::new(0),
            loading: Mutex::new(()),
            gone: AtomicBool::new(false),
            loads: AtomicU64::new(0),
        }
    }

    /// Wakes every waiter of the stream: the view may have changed. The media waiters
    /// first: woken tasks run about in the order they were woken, and a part's bytes are
    /// what a player waits for (the playlist that lists them only tells it what comes next).
    fn signal_change(&self) {
        self.changed_media.send_modify(|g| *g = g.wrapping_add(1));
        self.changed.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// Requests waiting for the stream's media ([`Streams::watch_media`]).
    fn media_waiters(&self) -> usize {
        self.changed_media.receiver_count()
    }

    /// Requests waiting on the stream's changes.
    fn waiters(&self) -> usize {
        self.changed.receiver_count() + self.changed_media.receiver_count()
    }

    /// The stream's id.
    pub fn id(&self) -> &StreamId {
        &self.id
    }

    /// Health and counters as this worker sees them.
    pub fn health(&self) -> HealthSnapshot {
        self.telemetry.snapshot()
    }

    /// Session `generation` shows `playlist`, unless that session is already over or a
    /// newer one owns the view.
    fn set_owned_view(&self, playlist: &PlaylistState, generation: u64) {
        if let Ok(mut v) = self.view.lock() {
            if !v.holder.show(generation) {
                return;
            }
            v.rendered = Rendered::of(playlist);
            v.fetched = None;
            v.loaded_by = None;
        }
        self.signal_change();
    }

    /// Every session up to `generation` is over. `current`: what the last of them showed
    /// is what the store holds (a session that ended itself), so it stays fresh for the
    /// usual time; otherwise the next request reads the store.
    fn release_view(&self, generation: u64, current: bool) {
        if let Ok(mut v) = self.view.lock() {
            if v.holder.release(generation) {
                v.fetched = current.then(Instant::now);
            }
        }
        // Waiters now read the view from the state store (and poll it).
        self.signal_change();
    }

    fn fresh_view(&self, ttl: Duration) -> Option<Rendered> {
        let v = self.view.lock().ok()?;
        if v.holder.owner.is_some() || v.fetched.is_some_and(|t| t.elapsed() < ttl) {
            Some(v.rendered.clone())
        } else {
            None
        }
    }

    fn change_generation(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    /// Keeps `playlist`, read from the state store when the change generation was
    /// `generation`, as the view; fresh only if no change was announced since.
    fn set_fetched_view(&self, playlist: &PlaylistState, generation: u64) {
        let rendered = Rendered::of(playlist);
        let mut moved = false;
        if let Ok(mut v) = self.view.lock() {
            if v.holder.owner.is_none() {
                let unchanged = self.change_generation() == generation;
                // An older copy (a snapshot read through a state-store outage, a promoted
                // replica that lost the last writes) never takes the view back: a part or
                // segment already served here stays listed.
                if !older_copy(playlist, &v.rendered.state) {
                    moved = v.rendered.media != rendered.media;
                    v.rendered = rendered;
                }
                v.fetched = unchanged.then(Instant::now);
                v.loaded_by = None;
            }
        }
        if moved {
            self.signal_change();
        }
    }

    /// The view, if a load numbered above `seen` produced it: a load that started after
    /// its reader found the view stale holds every change that reader knew of.
    fn view_loaded_after(&self, seen: u64) -> Option<Rendered> {
        let v = self.view.lock().ok()?;
        (v.holder.owner.is_none() && v.loaded_by.is_some_and(|n| n > seen))
            .then(|| v.rendered.clone())
    }

    /// Load number `load` produced the view (just set by [`Stream::set_fetched_view`]).
    fn mark_loaded(&self, load: u64) {
        if let Ok(mut v) = self.view.lock() {
            if v.holder.owner.is_none() {
                v.loaded_by = Some(load);
            }
        }
    }

    /// A publish session on this worker keeps the view current (no need to poll the store).
    fn owned(&self) -> bool {
        self.view.lock().is_ok_and(|v| v.holder.owner.is_some())
    }

    /// Forgets the cached view so the next request reads the state store (a change
    /// notification from another worker), and wakes the stream's waiters.
    pub fn invalidate(&self) {
        self.changes.fetch_add(1, Ordering::AcqRel);
        if let Ok(mut v) = self.view.lock() {
            if v.holder.owner.is_none() {
                v.fetched = None;
            }
        }
        self.signal_change();
    }
}

/// The newest URI `playlist` lists: its open segment's last part, else its last segment.
fn newest_uri(playlist: &PlaylistState) -> Option<&str> {
    playlist
        .open
        .as_ref()
        .and_then(|o| o.parts.last())
        .map(|p| p.uri.as_str())
        .or_else(|| playlist.segments.back().map(|s| s.uri.as_str()))
}

/// `candidate` is an older copy of `current`: its newest URI is listed in `current`, which
/// lists a newer one (names are never reused, so that URI places it in `current`'s past).
/// An ended playlist is never older: the end is always shown.
fn older_copy(candidate: &PlaylistState, current: &PlaylistState) -> bool {
    if candidate.ended || current.ended {
        return false;
    }
    let Some(newest) = newest_uri(candidate) else {
        return false;
    };
    if newest_uri(current) == Some(newest) {
        return false;
    }
    current.segments.iter().any(|s| s.uri == newest)
        || matches!(
            current.part_request(newest),
            PartRequest::Stored | PartRequest::InSegment { .. }
        )
}

/// One waiter's handle on a stream's changes (an LL-HLS blocking request): read the view
/// with [`Streams::view`], then await [`StreamWatch::changed`]. Costs a receiver of the
/// stream's signal, no task.
pub struct StreamWatch {
    stream: Arc<Stream>,
    rx: watch::Receiver<u64>,
    /// Woken with the media waiters ([`Streams::watch_media`]).
    media: bool,
    /// While the view comes from the state store: how long it is trusted, so a waiter looks
    /// again then even if no notification comes (notifications down, or none at all).
    poll: Option<Duration>,
}

impl StreamWatch {
    fn of(stream: Arc<Stream>, media: bool) -> Self {
        let rx = if media {
            stream.changed_media.subscribe()
        } else {
            stream.changed.subscribe()
        };
        Self {
            stream,
            rx,
            media,
            poll: None,
        }
    }

    /// The stream.
    pub fn id(&self) -> &StreamId {
        &self.stream.id
    }

    /// Resolves at the stream's next change after the last [`Streams::view`] through this
    /// watch (at once if one came since), or when a view read from the state store is due
    /// to be read again. The caller bounds the wait.
    pub async fn changed(&mut self) {
        let poll = self.poll;
        let sleep = async move {
            match poll {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = self.rx.changed() => {
                if changed.is_err() {
                    // The sender lives as long as the stream, which this watch holds.
                    std::future::pending::<()>().await;
                }
            }
            () = sleep => {}
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
    telemetry: Arc<Telemetry>,
    draining: CancellationToken,
    /// Cancelled when draining publishers must leave at their next segment boundary.
    close_at_boundary: CancellationToken,
    state_healthy: AtomicBool,
    media_healthy: AtomicBool,
    /// The state store's change notifications are live (see [`Streams::apply_change`]).
    notified: AtomicBool,
    /// When the sweeper last read every record.
    last_full_sweep: SyncMutex<Option<Instant>>,
    /// The tenants' settings, as [`Streams::set_tenant_settings`] last gave them: their
    /// segment format and duration and reconnect window replace `settings`' for their streams.
    tenant_settings: std::sync::RwLock<HashMap<String, tidegate_model::TenantSettings>>,
    /// The media objects the origin read last ([`Streams::media_object`]).
    recent: recent::RecentObjects,
    /// Viewers' snapshot lookups, bounded (lookups.rs).
    lookups: Arc<lookups::Lookups>,
    /// When a refused snapshot lookup was last logged, Unix ms.
    lookup_refusal_logged_ms: AtomicI64,
}

/// One row of [`Streams::list`].
#[derive(Debug, Clone)]
pub struct StreamSummary {
    /// The stream.
    pub id: StreamId,
    /// A publisher is live on this worker.
    pub live_here: bool,
    /// The record as last seen.
    pub record: Option<StreamRecord>,
    /// Health as this worker sees it (when it has seen the stream).
    pub health: Option<HealthSnapshot>,
}

impl Streams {
    /// A registry over the given stores.
    pub fn new(
        state: Arc<dyn StateStore>,
        media: Arc<dyn MediaStore>,
        settings: StreamSettings,
        metrics: Arc<Metrics>,
        telemetry: Arc<Telemetry>,
    ) -> Arc<Self> {
        Arc::new(Self {
            streams: Mutex::default(),
            state,
            media,
            settings,
            metrics,
            telemetry,
            draining: CancellationToken::new(),
            close_at_boundary: CancellationToken::new(),
            state_healthy: AtomicBool::new(true),
            media_healthy: AtomicBool::new(true),
            notified: AtomicBool::new(false),
            last_full_sweep: SyncMutex::new(None),
            tenant_settings: std::sync::RwLock::default(),
            recent: recent::RecentObjects::default(),
            lookups: Arc::default(),
            lookup_refusal_logged_ms: AtomicI64::new(0),
        })
    }

    /// The settings of `tenant`'s streams: this worker's, with the tenant's segment format
    /// and duration and reconnect window laid over them.
    pub fn settings_for(&self, tenant: &str) -> StreamSettings {
        match self
            .tenant_settings
            .read()
            .ok()
            .and_then(|t| t.get(tenant).cloned())
        {
            Some(t) => self.settings.for_tenant(&t),
            None => self.settings.clone(),
        }
    }

    /// Takes the tenants' settings (they changed, or were read again): their streams use
    /// their segment format and duration from their next publish session, and their
    /// reconnect window from the next sweep; their health thresholds go to telemetry.
    pub fn set_tenant_settings(&self, tenants: HashMap<String, tidegate_model::TenantSettings>) {
        let (health, refused) =
            crate::settings::tenant_health(self.telemetry.default_health(), &tenants);
        for name in refused {
            warn!(tenant = %name, "the tenant's health thresholds do not hold over this worker's [health]; the server's apply");
        }
        self.telemetry.set_tenant_health(health);
        if let Ok(mut t) = self.tenant_settings.write() {
            *t = tenants;
        }
    }

    /// The longest target segment duration of this worker's streams: the server's or a
    /// tenant's (the shutdown waits for a segment boundary that long).
    pub fn longest_segment_duration(&self) -> Duration {
        let tenants = self
            .tenant_settings
            .read()
            .map(|t| t.values().filter_map(|s| s.segment_duration).max())
            .unwrap_or_default();
        tenants.map_or(self.settings.segment_duration, |d| {
            d.max(self.settings.segment_duration)
        })
    }

    /// The telemetry hub (stream health, the event bus).
    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }

    /// How long a view rendered from the state store is served before it is read again.
    fn remote_render_ttl(&self) -> Duration {
        if self.notified.load(Ordering::Acquire) {
            NOTIFIED_RENDER_TTL
        } else {
            REMOTE_RENDER_TTL
        }
    }

    /// How long `stream`'s view read from the state store is trusted: shorter while the
    /// notifications are down and requests wait on it ([`UNNOTIFIED_WATCH_POLL`]).
    fn view_ttl(&self, stream: &Stream) -> Duration {
        if self.notified.load(Ordering::Acquire) {
            NOTIFIED_RENDER_TTL
        } else if stream.waiters() > 0 {
            UNNOTIFIED_WATCH_POLL
        } else {
            REMOTE_RENDER_TTL
        }
    }

    /// Takes a change notification of the state store (Redis pub/sub): the changed stream's
    /// cached view is dropped at once, so every worker serves a new segment as soon as it is
    /// listed. While notifications are down, views fall back to [`REMOTE_RENDER_TTL`].
    pub async fn apply_change(&self, change: Change) {
        match change {
            Change::Stream(id) => {
                if let Some(s) = self.get(&id).await {
                    s.invalidate();
                }
            }
            // Tenants are not streams: their consumer is the key directory.
            Change::Tenant(_) => {}
            Change::Subscribed | Change::Lost => {
                // Notifications sent while the subscription was down are lost: forget every
                // cached view either way.
                self.notified
                    .store(change == Change::Subscribed, Ordering::Release);
                let all: Vec<_> = self.streams.lock().await.values().cloned().collect();
                for s in all {
                    s.invalidate();
                }
            }
        }
    }

    /// The media store (the origin reads segments from it).
    pub fn media(&self) -> &Arc<dyn MediaStore> {
        &self.media
    }

    /// The media object at `path` for a viewer (a part or a segment: immutable once
    /// written), read from the media store once for all the requests that want it at the
    /// same time and kept while it is among the last objects read (`recent.rs`).
    pub async fn media_object(&self, path: &str) -> Result<Option<Bytes>, StoreError> {
        self.recent.get_or_load(path, || self.media.get(path)).await
    }

    /// The worker's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Refuses new publishers from now on.
    pub fn start_draining(&self) {
        self.draining.cancel();
    }

    /// Asks every live publisher to leave right after its next segment is cut, so no viewer
    /// loses a partial segment and the encoder reconnects elsewhere.
    pub fn close_publishers_at_boundary(&self) {
        self.close_at_boundary.cancel();
    }

    /// Publish sessions live on this worker.
    pub async fn live_count(&self) -> usize {
        let streams: Vec<_> = self.streams.lock().await.values().cloned().collect();
        let mut n = 0;
        for s in streams {
            if s.inner.lock().await.live.is_some() {
                n += 1;
            }
        }
        n
    }

    /// Whether the last state and media writes succeeded (`/readyz` fails otherwise).
    pub fn stores_healthy(&self) -> bool {
        self.state_healthy.load(Ordering::Relaxed) && self.media_healthy.load(Ordering::Relaxed)
    }

    fn note_state(&self, ok: bool) {
        self.state_healthy.store(ok, Ordering::Relaxed);
    }

    fn note_media(&self, ok: bool) {
        self.media_healthy.store(ok, Ordering::Relaxed);
    }

    /// Takes `stream` out of the registry (the caller holds its `inner`, which has no live
    /// session): its telemetry goes with it.
    async fn forget(&self, stream: &Arc<Stream>, inner: &mut StreamInner) {
        inner.removed = true;
        stream.gone.store(true, Ordering::Release);
        stream.signal_change();
        let mut streams = self.streams.lock().await;
        if streams
            .get(&stream.id)
            .is_some_and(|s| Arc::ptr_eq(s, stream))
        {
            streams.remove(&stream.id);
        }
    }

    async fn get_or_insert(&self, id: &StreamId) -> Arc<Stream> {
        let mut streams = self.streams.lock().await;
        streams
            .entry(id.clone())
            .or_insert_with(|| Arc::new(Stream::new(id.clone(), self.telemetry.stream(id))))
            .clone()
    }

    /// The stream, if this worker has seen it.
    pub async fn get(&self, id: &StreamId) -> Option<Arc<Stream>> {
        self.streams.lock().await.get(id).cloned()
    }

    /// Stores the snapshot of `record` in the media store (published.rs); a failure is
    /// counted and logged (the state store still has the record).
    async fn write_snapshot(&self, record: &StreamRecord) {
        if let Err(e) = published::write(&*self.media, &record.id.prefix(), record).await {
            self.metrics.store_error(StoreOp::PutSnapshot);
            warn!(stream = %record.id, error = %e, "could not store the record snapshot");
        }
    }

    /// What the media store holds of `id` (published.rs); nothing known when it cannot be
    /// read (the epochs are then the record's alone).
    async fn published(&self, id: &StreamId) -> published::Published {
        match published::read(&*self.media, &id.prefix()).await {
            Ok(p) => p,
            Err(e) => {
                self.metrics.store_error(StoreOp::ListMedia);
                warn!(stream = %id, error = %e, "could not list the stream's media objects");
                published::Published::default()
            }
        }
    }

    /// The record of `id` for a viewer: the state store's, or, while the state store has
    /// none or cannot answer (flushed, restarting, failing over), the last snapshot in the
    /// media store, so the playlist stays served. The state store's error when neither
    /// answers.
    async fn viewable_record(
        &self,
        id: &StreamId,
        max_age: Option<Duration>,
    ) -> Result<Option<StreamRecord>, StoreError> {
        let stored = match self.state.load(id).await {
            Ok(Some(r)) => return Ok(Some(r)),
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        };
        match self.viewer_snapshot(id, max_age).await {
            Some(r) => Ok(Some(r)),
            None => stored,
        }
    }

    /// The newest snapshot of `id` for a viewer, through the bounded lookups (lookups.rs):
    /// single-flight per stream, cached briefly (at most `max_age`, when given), at most a
    /// few at once (`None` beyond).
    async fn viewer_snapshot(
        &self,
        id: &StreamId,
        max_age: Option<Duration>,
    ) -> Option<StreamRecord> {
        loop {
            match self.lookups.begin(id, max_age) {
                lookups::Lookup::Cached(answer) => {
                    self.metrics.snapshot_lookup(SnapshotLookup::Cached);
                    return *answer;
                }
                lookups::Lookup::Wait(wait) => wait.done().await,
                lookups::Lookup::Refused => {
                    self.metrics.snapshot_lookup(SnapshotLookup::Refused);
                    let now = unix_ms();
                    let logged = self.lookup_refusal_logged_ms.load(Ordering::Relaxed);
                    if now.saturating_sub(logged) >= 10_000
                        && self
                            .lookup_refusal_logged_ms
                            .compare_exchange(logged, now, Ordering::Relaxed, Ordering::Relaxed)
                            .is_ok()
                    {
                        warn!(stream = %id, max = lookups::MAX_IN_FLIGHT, "too many snapshot lookups for streams without a record under way: answered from the state store alone (logged at most every 10 s; counted in tidegate_snapshot_lookups_total{{answer=\"refused\"}})");
                    }
                    return None;
                }
                lookups::Lookup::Run(flight) => {
                    self.metrics.snapshot_lookup(SnapshotLookup::Read);
                    let answer = match published::read(&*self.media, &id.prefix()).await {
                        Ok(p) => p.snapshot,
                        Err(e) => {
                            self.metrics.store_error(StoreOp::ListMedia);
                            warn!(stream = %id, error = %e, "could not read the stream's snapshot for a viewer");
                            None
                        }
                    };
                    flight.finish(answer.clone());
                    return answer;
                }
            }
        }
    }

    /// The playlists of `id` as a viewer should see them now: from this worker's own session
    /// when it publishes the stream, else from the state store (cached briefly; one load at
    /// a time per stream, shared by the requests that wait for it). `None` for an unknown
    /// stream.
    pub async fn rendered(&self, id: &StreamId) -> Result<Option<Rendered>, StoreError> {
        match self.get(id).await {
            Some(s) => self.load_view(&s).await,
            None => self.first_view(id).await,
        }
    }

    /// A stream this worker has not seen: reads its record (creating its entry only if it
    /// has one, so asking for names that do not exist leaves nothing behind).
    async fn first_view(&self, id: &StreamId) -> Result<Option<Rendered>, StoreError> {
        let ttl = self.remote_render_ttl();
        let Some(record) = self.viewable_record(id, None).await? else {
            return Ok(None);
        };
        let stream = self.get_or_insert(id).await;
        // A stream first seen now starts at generation 0 (one inserted meanwhile by another
        // reader may have seen a change since: its view is then not taken for fresh).
        stream.set_fetched_view(&record.playlist, 0);
        {
            let mut inner = stream.inner.lock().await;
            if inner.live.is_none() {
                inner.record = Some(record);
            }
        }
        Ok(stream
            .fresh_view(ttl)
            .or_else(|| stream.view.lock().ok().map(|v| v.rendered.clone())))
    }

    /// The view of a known stream: fresh as it is, or read from the state store. Single
    /// flight: a reader that finds the view stale waits for the load under way, and takes
    /// its result if that load started after the change that made the view stale.
    async fn load_view(&self, stream: &Arc<Stream>) -> Result<Option<Rendered>, StoreError> {
        let ttl = self.view_ttl(stream);
        if let Some(r) = stream.fresh_view(ttl) {
            return Ok(Some(r));
        }
        // Loads started so far: one started later began after this reader found the view
        // stale, so its result is as new as this reader needs.
        let seen = stream.loads.load(Ordering::Acquire);
        let _loading = stream.loading.lock().await;
        if let Some(r) = stream
            .fresh_view(ttl)
            .or_else(|| stream.view_loaded_after(seen))
        {
            return Ok(Some(r));
        }
        let load = stream.loads.fetch_add(1, Ordering::AcqRel) + 1;
        let generation = stream.change_generation();
        // A snapshot answers no older than the view may be: while the state store is down
        // and viewers wait for the next part, the owner stores a snapshot at each part
        // (writer.rs) and the waiters follow it every UNNOTIFIED_WATCH_POLL.
        let Some(record) = self.viewable_record(&stream.id, Some(ttl)).await? else {
            return Ok(None);
        };
        stream.set_fetched_view(&record.playlist, generation);
        stream.mark_loaded(load);
        {
            let mut inner = stream.inner.lock().await;
            if inner.live.is_none() {
                inner.record = Some(record);
            }
        }
        Ok(stream
            .fresh_view(ttl)
            .or_else(|| stream.view.lock().ok().map(|v| v.rendered.clone())))
    }

    /// A handle to wait for `id`'s changes (LL-HLS blocking requests); `None` for an
    /// unknown stream. Read the view with [`Streams::view`].
    pub async fn watch(&self, id: &StreamId) -> Result<Option<StreamWatch>, StoreError> {
        self.watch_kind(id, false).await
    }

    /// [`Streams::watch`] for a request that waits for media (the part a preload hint
    /// names, a segment being written): woken before the playlists' waiters.
    pub async fn watch_media(&self, id: &StreamId) -> Result<Option<StreamWatch>, StoreError> {
        self.watch_kind(id, true).await
    }

    async fn watch_kind(
        &self,
        id: &StreamId,
        media: bool,
    ) -> Result<Option<StreamWatch>, StoreError> {
        if let Some(s) = self.get(id).await {
            return Ok(Some(StreamWatch::of(s, media)));
        }
        if self.first_view(id).await?.is_none() {
            return Ok(None);
        }
        Ok(self.get(id).await.map(|s| StreamWatch::of(s, media)))
    }

    /// The playlists as [`Streams::rendered`] gives them, read through `watch`: a change
    /// after this read wakes [`StreamWatch::changed`]. `None` once the stream is unknown.
    pub async fn view(&self, watch: &mut StreamWatch) -> Result<Option<Rendered>, StoreError> {
        if watch.stream.gone.load(Ordering::Acquire) {
            // Forgotten (expired, or never recorded): look it up again.
            match self
                .watch_kind(&watch.stream.id.clone(), watch.media)
                .await?
            {
                Some(w) => *watch = w,
                None => return Ok(None),
            }
        }
        // Marked seen before the read: a change from here on wakes the waiter.
        watch.rx.borrow_and_update();
        let view = self.load_view(&watch.stream).await?;
        watch.poll = (!watch.stream.owned()).then(|| self.view_ttl(&watch.stream));
        Ok(view)
    }

    /// Every stream in the state store, with what this worker knows of it.
    pub async fn list(&self) -> Vec<StreamSummary> {
        let mut ids: Vec<StreamId> = self.state.list().await.unwrap_or_default();
        ids.extend(self.streams.lock().await.keys().cloned());
        ids.sort();
        ids.dedup();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.push(self.summary_of(id).await);
        }
        out
    }

    /// One stream as [`Streams::list`] shows it; `None` when neither this worker nor the
    /// state store knows it.
    pub async fn summary(&self, id: &StreamId) -> Option<StreamSummary> {
        let s = self.summary_of(id.clone()).await;
        (s.record.is_some() || s.health.is_some()).then_some(s)
    }

    async fn summary_of(&self, id: StreamId) -> StreamSummary {
        let local = self.get(&id).await;
        let (live_here, cached) = match &local {
            Some(s) => {
                let inner = s.inner.lock().await;
                (inner.live.is_some(), inner.record.clone())
            }
            None => (false, None),
        };
        let health = local.as_ref().map(|s| s.health());
        let record = self.state.load(&id).await.ok().flatten().or(cached);
        StreamSummary {
            id,
            live_here,
            record,
            health,
        }
    }

    /// The worker that holds `id` with a live lease, when that is another worker (its
    /// publisher is connected there and it renewed the lease within [`LEASE_TIMEOUT_MS`]).
    /// A pull asks this before it calls its source, so that of several workers configured
    /// with the same pull one pulls and the others stand by until its lease lapses.
    pub async fn held_elsewhere(&self, id: &StreamId) -> Result<Option<String>, StoreError> {
        if let Some(s) = self.get(id).await {
            if s.inner.lock().await.live.is_some() {
                return Ok(None);
            }
        }
        let stored = self.state.load(id).await?.map(|r| ownership_of(&r));
        let policy = self
            .settings_for(&id.tenant)
            .policy(self.settings.takeover_policy);
        Ok(ownership::stand_by_for(
            &self.settings.worker_id,
            false,
            stored.as_ref(),
            unix_ms(),
            &policy,
        )
        .map(str::to_owned))
    }

    /// A publisher arrives for `id`: takes the stream's next epoch and starts (or resumes) its
    /// playlist, or refuses (see [`TakeoverPolicy`]).
    pub async fn begin_publish(
        self: &Arc<Self>,
        id: StreamId,
        protocol: Protocol,
    ) -> Result<Publisher, PublishError> {
        self.begin_publish_as(id, protocol, self.settings.takeover_policy)
            .await
    }

    /// A pull (this worker called the source) arrives for `id`: like
    /// [`Streams::begin_publish`], but it never takes the stream from a live holder on
    /// another worker, whatever the takeover policy (two workers pulling one source
    /// would otherwise take it from each other for ever).
    pub async fn begin_pull(self: &Arc<Self>, id: StreamId) -> Result<Publisher, PublishError> {
        self.begin_publish_as(id, Protocol::Srt, TakeoverPolicy::Refuse)
            .await
    }

    async fn begin_publish_as(
        self: &Arc<Self>,
        id: StreamId,
        protocol: Protocol,
        policy: TakeoverPolicy,
    ) -> Result<Publisher, PublishError> {
        if self.draining.is_cancelled() {
            return Err(PublishError::Draining);
        }
        let stream = loop {
            let stream = self.get_or_insert(&id).await;
            if !stream.inner.lock().await.removed {
                break stream;
            }
        };
        let mut inner = stream.inner.lock().await;
        if inner.removed {
            // Forgotten between the two locks (a rare race): the caller may try again.
            return Err(PublishError::Store(StoreError::Unavailable(
                "stream was being removed; try again".to_owned(),
            )));
        }
        let now = unix_ms();
        let actual = self.state.load(&id).await?;
        let actual_epoch = actual.as_ref().map(|r| r.playlist.epoch);
        // What the media store holds (published.rs): the epochs used so far, and the last
        // snapshot of the record, which stands for a record the state store lost.
        let published = self.published(&id).await;
        let rebuilt = ownership::rebuild_from_snapshot(
            actual_epoch,
            published.snapshot.as_ref().map(|r| r.playlist.epoch),
        );
        let stored = if rebuilt {
            let snapshot = published.snapshot.clone();
            if let Some(r) = &snapshot {
                warn!(stream = %id, stored_epoch = ?actual_epoch, snapshot_epoch = r.playlist.epoch, next_sequence = r.playlist.next_sequence, "the state store lost this stream's last writes; its record is rebuilt from the media store");
            }
            snapshot
        } else {
            actual
        };
        // This worker's settings with the tenant's (segments, reconnect window).
        let settings = self.settings_for(&id.tenant);

        // Who holds the stream now, and may the newcomer have it?
        let here = ownership::Here {
            worker: &self.settings.worker_id,
            live_activity_ms: inner.live.as_ref().map(LiveSession::last_activity_ms),
            same_container: stored
                .as_ref()
                .is_some_and(|r| r.playlist.container == settings.container),
        };
        let view = stored.as_ref().map(ownership_of);
        let admission = match ownership::admit(&here, view.as_ref(), now, &settings.policy(policy))
        {
            // Never an epoch the media store has seen: names stay unique.
            Ok(a) => a.above_published(published.highest_epoch),
            Err(Refusal::LiveHere | Refusal::LiveElsewhere) => {
                // A second encoder on a key that is live here, or held elsewhere under
                // `refuse`.
                stream.telemetry.note_competing_publisher();
                return Err(PublishError::AlreadyLive);
            }
            Err(Refusal::Competing(recent)) => {
                self.metrics.competing_publishers.inc();
                warn!(stream = %id, takeovers = recent, "competing publishers: refusing the newcomer");
                return Err(PublishError::Competing(recent));
            }
        };

        let mut stale_objects = Vec::new();
        let mut record = match stored {
            None => StreamRecord {
                id: id.clone(),
                playlist: PlaylistState::new(
                    settings.container,
                    settings.playlist_window,
                    target_secs(settings.segment_duration),
                ),
                updated_ms: now,
                publisher_left_ms: None,
                owner: self.settings.worker_id.clone(),
                last_media_ms: None,
                takeovers: Vec::new(),
                session_started_ms: Some(now),
                holder: None,
            },
            Some(mut r) => {
                match admission.start {
                    Start::NewPlaylist => {
                        // A new playlist at the same URL; numbering goes on so no player that
                        // still holds the old one sees the sequence go back.
                        stale_objects = r.playlist.reset_for_new_stream();
                        r.playlist.container = settings.container;
                        r.playlist.window = settings.playlist_window;
                        info!(stream = %id, "new playlist (previous one ended)");
                    }
                    Start::Takeover => {
                        info!(stream = %id, from = %r.owner, "taking the stream over from its previous publisher");
                        self.metrics.takeovers.inc();
                    }
                    Start::Resume | Start::New => {
                        if !r.playlist.segments.is_empty() {
                            info!(stream = %id, "publisher back within the reconnect window; resuming");
                        }
                    }
                }
                r.session_started_ms = Some(now);
                r.holder = None;
                r
            }
        };
        // LL-HLS parts the previous session listed for a segment it never finished (its
        // worker died): that segment is listed whole from them when they can stand for it
        // (salvage.rs), else `begin_session` drops them. Either way their objects go after
        // the grace period (a listed segment serves its parts from its own bytes).
        let dead_parts: Vec<String> = record
            .playlist
            .open
            .as_ref()
            .map(|o| o.parts.iter().map(|p| p.uri.clone()).collect())
            .unwrap_or_default();
        let salvaged_evicted =
            salvage::salvage_open_segment(&*self.media, &id.prefix(), &mut record.playlist)
                .await
                .unwrap_or_default();
        record.playlist.begin_session();
        // Parts (LL-HLS) as this session cuts them: fMP4 only.
        let part_ticks = settings
            .part_ticks
            .filter(|_| settings.container == Container::Fmp4)
            .map(|t| {
                t.clamp(
                    tidegate_packager::MIN_PART_DURATION,
                    tidegate_packager::MAX_PART_DURATION,
                )
            });
        record.playlist.part_target_secs =
            part_ticks.map(|t| t as f64 / f64::from(tidegate_media::TIMESCALE));
        // The epoch, the owner, a fresh lease and the takeover history are the admission's.
        set_ownership(&mut record, admission.record);
        // A new stream is written when its first media frame arrives (the writer's first
        // commit, a compare-and-set on "no record"); a stream with a record (or a rebuilt
        // one) moves to the new epoch now, which fences any older session. The epoch is
        // claimed in the media store first (its snapshot), so that no later session can
        // take it again even if the state store loses this write. The compare-and-set
        // expects what the state store holds (nothing, for a rebuilt record).
        let stored = admission.expected_epoch.is_some();
        if stored {
            let prefix = id.prefix();
            self.write_snapshot(&record).await;
            if let Err(e) = self.state.compare_and_set(actual_epoch, &record).await {
                self.note_state(!e.is_unavailable());
                let snapshot = published::snapshot_name(record.playlist.epoch);
                self.delete_later(format!("{prefix}/{snapshot}"), Duration::ZERO);
                return Err(e.into());
            }
            self.note_state(true);
            if rebuilt {
                self.metrics.record_restored(RecordRestore::Rebuilt);
            }
            for old in published
                .snapshot_epochs
                .iter()
                .filter(|e| **e < record.playlist.epoch)
            {
                let snapshot = published::snapshot_name(*old);
                self.delete_later(format!("{prefix}/{snapshot}"), settings.delete_grace());
            }
        }
        // A local holder (hung connection) loses the stream now.
        if let Some(old) = inner.live.take() {
            old.fenced.cancel();
            self.metrics.live_streams.dec();
        }
        let epoch = record.playlist.epoch;
        inner.record = Some(record.clone());
        inner.generation += 1;
        let generation = inner.generation;
        stream.set_owned_view(&record.playlist, generation);
        let fenced = CancellationToken::new();
        let kicked = Arc::new(AtomicBool::new(false));
        let last_media_ms = Arc::new(AtomicI64::new(now));
        let media_seen = Arc::new(AtomicBool::new(false));
        inner.live = Some(LiveSession {
            generation,
            started_ms: now,
            last_media_ms: last_media_ms.clone(),
            fenced: fenced.clone(),
            kicked: kicked.clone(),
        });
        drop(inner);
        self.metrics.live_streams.inc();
        self.telemetry
            .session_started(&stream.telemetry, protocol, epoch);
        for entry in stale_objects {
            self.delete_later(format!("{}/{}", id.prefix(), entry.uri), Duration::ZERO);
        }
        for uri in dead_parts {
            self.delete_later(format!("{}/{uri}", id.prefix()), settings.delete_grace());
        }
        for entry in salvaged_evicted {
            self.delete_later(
                format!("{}/{}", id.prefix(), entry.uri),
                settings.delete_grace(),
            );
        }

        let (tx, rx) = mpsc::channel(writer::QUEUE_DEPTH);
        let task = tokio::spawn(writer::run(writer::Writer::new(
            self.clone(),
            stream.clone(),
            record,
            generation,
            rx,
            fenced.clone(),
            last_media_ms.clone(),
            stored,
            media_seen.clone(),
        )));
        let config = SegmenterConfig {
            container: settings.container,
            target_duration: settings.segment_ticks,
            part_duration: part_ticks,
            ..SegmenterConfig::default()
        };
        Ok(Publisher {
            id,
            epoch,
            telemetry: stream.telemetry.clone(),
            segmenter: Segmenter::new(config),
            tx,
            fenced,
            kicked,
            last_media_ms,
            media_seen,
            close_at_boundary: self.close_at_boundary.clone(),
            task: Some(task),
            video_seen: false,
        })
    }

    fn delete_later(&self, path: String, after: Duration) {
        let media = self.media.clone();
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            if media.delete(&path).await.is_err() {
                metrics.store_error(StoreOp::Delete);
            }
        });
    }

    /// Called by a writer when its session is over (publisher gone or fenced) and everything
    /// it could store is stored. `superseded`: it lost the stream to a newer epoch.
    /// `stored`: the stream has a record (a session that never delivered media to a stream
    /// without one leaves nothing: the stream is forgotten at once).
    async fn session_ended(
        &self,
        stream: &Arc<Stream>,
        generation: u64,
        record: StreamRecord,
        superseded: bool,
        stored: bool,
    ) {
        let mut inner = stream.inner.lock().await;
        if inner
            .live
            .as_ref()
            .is_some_and(|l| l.generation == generation)
        {
            inner.live = None;
            if !stored {
                self.metrics.live_streams.dec();
                stream.release_view(generation, false);
                self.forget(stream, &mut inner).await;
                drop(inner);
                self.telemetry.session_ended(&stream.telemetry, superseded);
                // A newcomer on another worker wrote the record first: the stream lives
                // on there, only this worker's series go.
                self.telemetry.stream_gone(&stream.telemetry, !superseded);
                info!(stream = %stream.id, "publisher gone before sending media; nothing kept");
                return;
            }
            inner.record = Some(record);
            self.metrics.live_streams.dec();
            stream.release_view(generation, true);
            drop(inner);
            self.telemetry.session_ended(&stream.telemetry, superseded);
            let window = self.settings_for(&stream.id.tenant).reconnect_window;
            info!(stream = %stream.id, window_s = window.as_secs_f64(), "publisher gone; stream reconnecting");
        } else {
            // Already replaced (a newer session here, or ended by request): whatever this
            // writer showed last is not what the store holds.
            stream.release_view(generation, false);
        }
    }

    /// Runs the sweeper until `stop` is cancelled.
    pub async fn run_sweeper(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(SWEEP_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.cancelled() => return,
            }
            self.tick_health().await;
            // The sweeper reads the state store every second, so readiness follows the
            // store even on a worker with no live stream (no writes to notice a failure).
            match self.sweep().await {
                Ok(_) => self.note_state(true),
                Err(e) => {
                    self.note_state(false);
                    warn!(error = %e, "sweeper: state store unavailable");
                }
            }
        }
    }

    /// Disconnects the publisher of `id` on this worker (the stream enters its reconnect
    /// window; the encoder will usually reconnect). `false` when none is live here.
    pub async fn kick(&self, id: &StreamId) -> bool {
        let Some(stream) = self.get(id).await else {
            return false;
        };
        let inner = stream.inner.lock().await;
        match &inner.live {
            Some(live) => {
                info!(stream = %id, "publisher kicked");
                live.kicked.store(true, Ordering::Release);
                live.fenced.cancel();
                true
            }
            None => false,
        }
    }

    /// Ends `id` now, wherever its publisher is: bumps the epoch past any live session (whose
    /// writer is fenced on its next write, closing its connection) and appends
    /// `EXT-X-ENDLIST`. `false` when the stream is unknown or already ended.
    pub async fn end_stream(&self, id: &StreamId) -> Result<bool, StoreError> {
        // A name nobody published leaves no trace (no registry entry, no telemetry).
        if self.get(id).await.is_none() && self.state.load(id).await?.is_none() {
            return Ok(false);
        }
        let stream = self.get_or_insert(id).await;
        let mut inner = stream.inner.lock().await;
        let stored = self.state.load(id).await?;
        let stored_epoch = stored.as_ref().map(|r| r.playlist.epoch);
        // A record the state store lost (or set back) is ended as the media store has it.
        let published = self.published(id).await;
        let Some(mut record) = newest(stored, published.snapshot) else {
            return Ok(false);
        };
        let Some(ending) = ownership::end(&ownership_of(&record), unix_ms()) else {
            return Ok(false);
        };
        let ending = ending.above_published(published.highest_epoch);
        set_ownership(&mut record, ending.record);
        record.holder = None;
        self.state.compare_and_set(stored_epoch, &record).await?;
        // The media store learns of the end too (a record rebuilt from it stays ended).
        self.write_snapshot(&record).await;
        if let Some(live) = inner.live.take() {
            live.fenced.cancel();
            self.metrics.live_streams.dec();
        }
        stream.release_view(inner.generation, false);
        stream.set_fetched_view(&record.playlist, stream.change_generation());
        inner.record = Some(record);
        drop(inner);
        info!(stream = %id, "stream ended by request");
        self.telemetry.stream_ended(&stream.telemetry);
        Ok(true)
    }

    async fn tick_health(&self) {
        let streams: Vec<_> = self.streams.lock().await.values().cloned().collect();
        for s in streams {
            // The tick under the stream's lock: a session that ends meanwhile removes its
            // series after the tick, not before it (a tick after the removal would set the
            // bitrate and status series of a stream that is gone, for good).
            let inner = s.inner.lock().await;
            if inner.live.is_none() {
                continue;
            }
            self.telemetry.tick(&s.telemetry);
            drop(inner);
            if s.telemetry.over_bitrate_to_disconnect() {
                self.disconnect_over_bitrate(&s).await;
            }
        }
    }

    /// Kicks the publisher of `stream`, which stayed over its tenant's per-stream bitrate
    /// quota for longer than allowed and whose tenant wants it disconnected then.
    async fn disconnect_over_bitrate(&self, stream: &Arc<Stream>) {
        let bitrate_bps = stream.telemetry.bitrate_bps();
        if self.kick(&stream.id).await {
            warn!(stream = %stream.id, bitrate_bps, "publisher disconnected: over its tenant's per-stream bitrate quota (max_bitrate_bps) for longer than over_bitrate_for_s");
            self.metrics
                .quota_disconnects
                .get_or_create(&crate::metrics::TenantLabels {
                    tenant: stream.id.tenant.clone(),
                })
                .inc();
        }
    }

    /// The streams of `tenant` with a publish session live on this worker, with their
    /// bitrate as measured here (a session that has no record yet included).
    pub async fn live_here_of(&self, tenant: &str) -> Vec<crate::quotas::LiveStream> {
        let streams: Vec<_> = self
            .streams
            .lock()
            .await
            .values()
            .filter(|s| s.id.tenant == tenant)
            .cloned()
            .collect();
        let mut out = Vec::new();
        for s in streams {
            if s.inner.lock().await.live.is_some() {
                out.push(crate::quotas::LiveStream {
                    name: s.id.name.clone(),
                    bitrate_bps: s.telemetry.bitrate_bps(),
                });
            }
        }
        out
    }

    /// Every stream with a publish session live on this worker, with its telemetry.
    pub async fn live_telemetry(&self) -> Vec<(StreamId, Arc<StreamTelemetry>)> {
        let streams: Vec<_> = self.streams.lock().await.values().cloned().collect();
        let mut out = Vec::new();
        for s in streams {
            if s.inner.lock().await.live.is_some() {
                out.push((s.id.clone(), s.telemetry.clone()));
            }
        }
        out
    }

    /// Ends every stream that has had no publisher for the reconnect window: one whose
    /// publisher left, or whose owner stopped renewing its lease (a dead worker, a stalled
    /// encoder). Any worker may do it; the compare-and-set on the epoch makes it safe, and
    /// the stream ends at the next epoch, which fences its last holder. Reads the streams that are
    /// not ended; every [`StreamSettings::full_sweep_interval`] (and on the first call) it
    /// reads every record instead, expires the ended streams past their retention, counts
    /// the records and forgets streams whose record went. Returns how many it ended.
    pub async fn sweep(&self) -> Result<usize, StoreError> {
        let full = self
            .last_full_sweep
            .lock()
            .map(|t| t.is_none_or(|t| t.elapsed() >= self.settings.full_sweep_interval()))
            .unwrap_or(true);
        let ids = if full {
            self.state.list().await?
        } else {
            self.state.list_active().await?
        };
        let now = unix_ms();
        let mut ended = 0;
        let mut records = ids.len();
        for id in &ids {
            if let Some(s) = self.get(id).await {
                if s.inner.lock().await.live.is_some() {
                    continue;
                }
            }
            let Some(mut record) = self.state.load(id).await? else {
                records = records.saturating_sub(1);
                // An index entry without a record (a crash between the two writes): drop
                // it, or it is read again every second for good.
                self.state.delete(id, 0).await?;
                continue;
            };
            // The tenant's reconnect window, as this worker knows its settings.
            let policy = self
                .settings_for(&id.tenant)
                .policy(self.settings.takeover_policy);
            let ending = match ownership::sweep(&ownership_of(&record), now, &policy) {
                Sweep::Keep => continue,
                Sweep::Expire { .. } => {
                    if full && self.expire(&record).await? {
                        records = records.saturating_sub(1);
                    }
                    continue;
                }
                Sweep::End(ending) => ending,
            };
            let epoch = ending.expected_epoch;
            // Before ending it, the media store: a newer snapshot means the record lost
            // writes (the stream may be live); the decision is taken on the snapshot, and
            // the end takes an epoch above every published one.
            let published = self.published(id).await;
            let snapshot_epoch = published.snapshot.as_ref().map(|r| r.playlist.epoch);
            let ending = if ownership::rebuild_from_snapshot(Some(epoch), snapshot_epoch) {
                let Some(snapshot) = published.snapshot else {
                    continue;
                };
                match ownership::sweep(&ownership_of(&snapshot), now, &policy) {
                    Sweep::End(ending) => {
                        record = snapshot;
                        ending
                    }
                    // Live (or ended) as the media store has it: its writer restores the
                    // record, not the sweeper.
                    Sweep::Keep | Sweep::Expire { .. } => continue,
                }
            } else {
                ending
            };
            let ending = ending.above_published(published.highest_epoch);
            // Ended at a new epoch, as by request: a holder that is still connected but went
            // silent (a stalled encoder: its figures are written every second without moving
            // the lease), or a writer still storing a session's last segments, is fenced by
            // its next write instead of writing the stream back to not ended.
            set_ownership(&mut record, ending.record);
            record.holder = None;
            match self.state.compare_and_set(Some(epoch), &record).await {
                Ok(()) => {
                    ended += 1;
                    info!(stream = %id, "no publisher for the reconnect window; stream ended");
                    self.write_snapshot(&record).await;
                    let stream = self.get_or_insert(id).await;
                    stream.set_fetched_view(&record.playlist, stream.change_generation());
                    stream.inner.lock().await.record = Some(record);
                    self.telemetry.stream_ended(&stream.telemetry);
                }
                // Someone published (or ended it) in the meantime.
                Err(StoreError::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        if full {
            self.forget_unrecorded(&ids).await;
            self.metrics
                .stream_records
                .set(i64::try_from(records).unwrap_or(i64::MAX));
            if let Ok(mut t) = self.last_full_sweep.lock() {
                *t = Some(Instant::now());
            }
        }
        Ok(ended)
    }

    /// Deletes an ended stream past its retention: its record (if it is still the ended
    /// one), then the media of its epochs (a newer epoch's objects belong to a stream that
    /// came back meanwhile). `false` when the record changed or went first.
    async fn expire(&self, record: &StreamRecord) -> Result<bool, StoreError> {
        let id = &record.id;
        let epoch = record.playlist.epoch;
        if !self.state.delete(id, epoch).await? {
            return Ok(false);
        }
        let prefix = id.prefix();
        match self.media.list(&prefix).await {
            Ok(names) => {
                for name in names {
                    if object_epoch(&name).is_some_and(|e| e <= epoch)
                        && self
                            .media
                            .delete(&format!("{prefix}/{name}"))
                            .await
                            .is_err()
                    {
                        self.metrics.store_error(StoreOp::Delete);
                    }
                }
                if self.media.remove_prefix(&prefix).await.is_err() {
                    self.metrics.store_error(StoreOp::Delete);
                }
            }
            Err(e) => {
                self.metrics.store_error(StoreOp::ListMedia);
                warn!(stream = %id, error = %e, "expired stream: could not list its media; left in place");
            }
        }
        if let Some(stream) = self.get(id).await {
            let mut inner = stream.inner.lock().await;
            if inner.live.is_none() {
                self.forget(&stream, &mut inner).await;
            }
        }
        self.metrics.stream_records_expired.inc();
        info!(stream = %id, retention_s = self.settings.ended_retention.as_secs_f64(), "ended stream expired; record and media deleted");
        Ok(true)
    }

    /// Forgets the streams this worker knows that have no live session here and no record
    /// any more (`ids`: every record; another worker expired them).
    async fn forget_unrecorded(&self, ids: &[StreamId]) {
        let recorded: std::collections::HashSet<&StreamId> = ids.iter().collect();
        let known: Vec<_> = self.streams.lock().await.values().cloned().collect();
        for stream in known {
            if recorded.contains(&stream.id) {
                continue;
            }
            let mut inner = stream.inner.lock().await;
            if inner.live.is_some() {
                continue;
            }
            // Listed before the record was written: ask the store itself. A stream whose
            // record the state store lost (its snapshot is still in the media store) is
            // kept: it is served from the snapshot until its record is back.
            let recorded = match self.state.load(&stream.id).await {
                Ok(Some(_)) | Err(_) => true,
                Ok(None) => matches!(
                    published::read(&*self.media, &stream.id.prefix()).await,
                    Ok(published::Published {
                        snapshot: Some(_),
                        ..
                    })
                ),
            };
            if !recorded {
                self.forget(&stream, &mut inner).await;
            }
        }
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
    /// The first media frame arrived: a new stream's record (and lease) is written now.
    FirstMedia,
    Finish,
}

/// Codec and resolution of the media, for `EXT-X-STREAM-INF`.
#[derive(Debug)]
struct StreamInfo {
    codecs: Option<String>,
    resolution: Option<(u32, u32)>,
    audio_sample_rate: Option<u32>,
}

/// A live publish session's handle: feed it media; end it when the connection ends.
pub struct Publisher {
    id: StreamId,
    epoch: u64,
    telemetry: Arc<StreamTelemetry>,
    segmenter: Segmenter,
    tx: mpsc::Sender<WriterMsg>,
    fenced: CancellationToken,
    kicked: Arc<AtomicBool>,
    last_media_ms: Arc<AtomicI64>,
    /// Set at the first media frame: the stream gets its record then.
    media_seen: Arc<AtomicBool>,
    close_at_boundary: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
    /// The session declared or sent video (health was told once).
    video_seen: bool,
}

/// The publish session must end: the worker is draining and a segment boundary was reached
/// ([`PublisherClosed::is_drain`]), or the writer stopped.
#[derive(Debug, thiserror::Error)]
#[error("publish session ended: {0}")]
pub struct PublisherClosed(pub &'static str);

impl PublisherClosed {
    /// The worker is draining and the session reached a segment boundary: the connection
    /// should say goodbye (so the encoder reconnects elsewhere), not report an error.
    pub fn is_drain(&self) -> bool {
        self.0 == "drain"
    }
}

/// Frames the segmenter dropped so far, for any reason.
fn dropped_frames(segmenter: &Segmenter) -> u64 {
    let s = segmenter.stats();
    s.dropped_before_keyframe
        .saturating_add(s.dropped_without_config)
        .saturating_add(s.dropped_backwards)
}

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

    /// Whether [`closed`](Self::closed) fired because the API kicked this publisher.
    pub fn was_kicked(&self) -> bool {
        self.kicked.load(Ordering::Acquire)
    }

    /// The stream's telemetry (drivers report bytes and packet counters to it).
    pub fn telemetry(&self) -> &Arc<StreamTelemetry> {
        &self.telemetry
    }

    /// Feeds one media event through the segmenter and hands what it cut to the writer.
    pub async fn handle_media(
        &mut self,
        event: MediaEvent,
        metrics: &Metrics,
    ) -> Result<(), PublisherClosed> {
        let mut video_frame = false;
        match &event {
            MediaEvent::TimestampJump { .. } => {
                metrics.timestamp_jumps.inc();
                self.telemetry.note_timestamp_jump();
            }
            MediaEvent::Frame(f) => {
                video_frame = f.track == tidegate_media::TrackKind::Video;
                if video_frame {
                    self.note_video_seen();
                }
                if !self.media_seen.swap(true, Ordering::Relaxed) {
                    // Best effort: a full queue wakes the writer anyway.
                    let _ = self.tx.try_send(WriterMsg::FirstMedia);
                }
                self.telemetry.note_frame(video_frame, f.keyframe);
            }
            MediaEvent::VideoDeclared => self.note_video_seen(),
            MediaEvent::VideoWithoutConfig => {
                // The demuxer dropped it: it can never be decoded.
                self.note_video_seen();
                self.telemetry.note_video_dropped(1);
            }
            MediaEvent::VideoConfig(_) => self.telemetry.note_video_config(),
            MediaEvent::AudioConfig(_) => {}
        }
        let now = unix_ms();
        self.last_media_ms.store(now, Ordering::Relaxed);
        let dropped_before = video_frame.then(|| dropped_frames(&self.segmenter));
        if let Err(e) = self.segmenter.handle_event(event, now) {
            // The segmenter drops what it cannot use (a frame going backwards, a segment
            // the muxer refused) and carries on; the publisher is not cut off for it.
            metrics.frames_dropped.inc();
            tracing::debug!(stream = %self.id, error = %e, "packager dropped media");
        }
        if let Some(before) = dropped_before {
            // Video the packager could not use (no keyframe to start from yet, going
            // backwards): it never reaches a playlist either.
            let n = dropped_frames(&self.segmenter).saturating_sub(before);
            if n > 0 {
                self.telemetry.note_video_dropped(n);
            }
        }
        self.drain().await
    }

    /// Tells health, once a session, that this session has a video track.
    fn note_video_seen(&mut self) {
        if !self.video_seen {
            self.video_seen = true;
            self.telemetry.note_video_track();
        }
    }

    async fn drain(&mut self) -> Result<(), PublisherClosed> {
        let mut cut = false;
        while let Some(out) = self.segmenter.poll_output() {
            cut |= matches!(out, SegmenterOutput::Segment(_));
            let info = matches!(out, SegmenterOutput::Segment(_)).then(|| StreamInfo {
                codecs: self.segmenter.codecs(),
                resolution: self.segmenter.resolution(),
                audio_sample_rate: self.segmenter.audio_sample_rate(),
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
        if cut && self.close_at_boundary.is_cancelled() {
            return Err(PublisherClosed("drain"));
        }
        Ok(())
    }

    /// The publisher is gone: closes the segment in progress, waits until it is stored and
    /// listed (or the writer gives up), and puts the stream into its reconnect window.
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

/// Settings for the unit tests: fMP4, 2 s segments, a window of 6, worker `here`, ended
/// streams kept for `ended_retention`.
#[cfg(test)]
pub(crate) fn test_settings(ended_retention: Duration) -> StreamSettings {
    StreamSettings {
        container: Container::Fmp4,
        segment_ticks: 180_000,
        segment_duration: Duration::from_secs(2),
        part_ticks: None,
        playlist_window: 6,
        reconnect_window: Duration::from_secs(30),
        takeover_policy: TakeoverPolicy::Newest,
        worker_id: "here".into(),
        ended_retention,
    }
}

/// A registry over embedded stores in a fresh directory under the system's temp dir (`tag`
/// names it), with the `state` root given relative to it; returns the directory too.
#[cfg(test)]
pub(crate) fn test_streams(tag: &str, state_root: &str) -> (std::path::PathBuf, Arc<Streams>) {
    use crate::store::fs::{FsMediaStore, FsStateStore};
    let dir = std::env::temp_dir().join(format!(
        "tidegate-{tag}-{}-{}",
        std::process::id(),
        unix_ms()
    ));
    let state: Arc<dyn StateStore> = Arc::new(FsStateStore::new(dir.join(state_root)));
    let media: Arc<dyn MediaStore> = Arc::new(FsMediaStore::new(dir.join("media")));
    let metrics = Arc::new(Metrics::new());
    let telemetry = Arc::new(Telemetry::new(
        metrics.clone(),
        tidegate_health::HealthConfig::default(),
        "here".into(),
    ));
    let settings = test_settings(Duration::from_secs(3600));
    (
        dir,
        Streams::new(state, media, settings, metrics, telemetry),
    )
}

#[cfg(test)]
mod change_tests {
    use super::*;

    fn record(id: &StreamId, epoch: u64, media_sequence: u64) -> StreamRecord {
        let mut playlist = PlaylistState::new(Container::Fmp4, 6, 2);
        playlist.epoch = epoch;
        playlist.media_sequence = media_sequence;
        StreamRecord {
            id: id.clone(),
            playlist,
            updated_ms: unix_ms(),
            publisher_left_ms: None,
            owner: "elsewhere".into(),
            last_media_ms: Some(unix_ms()),
            takeovers: Vec::new(),
            session_started_ms: None,
            holder: None,
        }
    }

    fn sequence_of(r: &Rendered) -> String {
        let text = String::from_utf8_lossy(&r.media).into_owned();
        text.lines()
            .find(|l| l.starts_with("#EXT-X-MEDIA-SEQUENCE:"))
            .unwrap_or_default()
            .to_owned()
    }

    /// A view read from the state store is served until a change notification drops it;
    /// without live notifications it is not trusted beyond [`REMOTE_RENDER_TTL`].
    #[tokio::test]
    async fn a_change_notification_drops_the_cached_view() {
        let (dir, streams) = test_streams("change-test", "state");
        let state = streams.state.clone();
        let id = StreamId::new("default", "watched").unwrap();

        streams.apply_change(Change::Subscribed).await;
        assert_eq!(streams.remote_render_ttl(), NOTIFIED_RENDER_TTL);
        state
            .compare_and_set(None, &record(&id, 1, 10))
            .await
            .unwrap();
        let first = streams.rendered(&id).await.unwrap().unwrap();
        assert_eq!(sequence_of(&first), "#EXT-X-MEDIA-SEQUENCE:10");

        // Another worker writes: until its notification arrives the cached view stands...
        state
            .compare_and_set(Some(1), &record(&id, 1, 11))
            .await
            .unwrap();
        let cached = streams.rendered(&id).await.unwrap().unwrap();
        assert_eq!(sequence_of(&cached), "#EXT-X-MEDIA-SEQUENCE:10");
        // ...and the notification makes the next request read the new state.
        streams.apply_change(Change::Stream(id.clone())).await;
        let fresh = streams.rendered(&id).await.unwrap().unwrap();
        assert_eq!(sequence_of(&fresh), "#EXT-X-MEDIA-SEQUENCE:11");

        // A change announced while a read is under way leaves that read's view stale.
        let stream = streams.get(&id).await.unwrap();
        let before = stream.change_generation();
        stream.invalidate();
        stream.set_fetched_view(&record(&id, 1, 11).playlist, before);
        assert!(stream.fresh_view(NOTIFIED_RENDER_TTL).is_none());

        // Notifications lost: back to the short TTL, and every cached view is dropped.
        streams.apply_change(Change::Lost).await;
        assert_eq!(streams.remote_render_ttl(), REMOTE_RENDER_TTL);
        assert!(stream.fresh_view(REMOTE_RENDER_TTL).is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A writer that lists one more segment after its session was ended by request (or
    /// replaced by a newer one on this worker) must not take the view back: viewers would
    /// be served that session's last playlist, without its `EXT-X-ENDLIST`, for good.
    #[test]
    fn a_late_write_from_an_ended_session_does_not_take_the_view_back() {
        let id = StreamId::new("default", "late").unwrap();
        let telemetry = Telemetry::new(
            Arc::new(Metrics::new()),
            tidegate_health::HealthConfig::default(),
            "here".into(),
        );
        let stream = Stream::new(id.clone(), telemetry.stream(&id));
        let live = record(&id, 2, 5).playlist;
        let mut ended = record(&id, 3, 5).playlist;
        ended.end();
        let ends = |r: &Rendered| String::from_utf8_lossy(&r.media).contains("#EXT-X-ENDLIST");

        // Session 1 publishes; the stream is ended by request; its writer lists a last
        // segment before it learns it was fenced.
        stream.set_owned_view(&live, 1);
        stream.release_view(1, false);
        stream.set_fetched_view(&ended, stream.change_generation());
        stream.set_owned_view(&live, 1);
        assert!(ends(&stream.fresh_view(NOTIFIED_RENDER_TTL).unwrap()));
        // Its end is reported after session 2 started here: session 2 keeps the view.
        stream.set_owned_view(&live, 2);
        stream.release_view(1, false);
        assert!(!ends(&stream.fresh_view(NOTIFIED_RENDER_TTL).unwrap()));
        // Session 2 ends by itself: what it showed stays fresh for the usual time.
        stream.release_view(2, true);
        assert!(stream.fresh_view(NOTIFIED_RENDER_TTL).is_some());
        // Session 3 is replaced here before its writer reports: the view is read again.
        stream.set_owned_view(&live, 3);
        stream.release_view(3, false);
        assert!(stream.fresh_view(NOTIFIED_RENDER_TTL).is_none());
    }
}

#[cfg(test)]
mod record_tests {
    use super::*;

    #[test]
    fn object_names_carry_their_epoch() {
        assert_eq!(object_epoch("seg-7-12.m4s"), Some(7));
        assert_eq!(
            object_epoch("seg-1796459589079-0.ts"),
            Some(1_796_459_589_079)
        );
        assert_eq!(object_epoch("init-3-0.mp4"), Some(3));
        for other in [
            "index.m3u8",
            "seg-x-1.m4s",
            "seg-.m4s",
            "init-4",
            "segment-1-2.m4s",
        ] {
            assert_eq!(object_epoch(other), None, "{other}");
        }
    }

    #[test]
    fn a_new_record_starts_above_every_epoch_of_an_expired_one() {
        // An incarnation created at t0 with a session every second for a day, expired an
        // hour after its last session: its successor starts above its last epoch.
        let t0 = 1_800_000_000_000_i64;
        let last = first_epoch(t0) + 86_400;
        let back = t0 + 86_400_000 + 3_600_000;
        assert!(first_epoch(back) > last);
        assert_eq!(first_epoch(-5), 1);
    }

    /// A holder still connected but silent (a stalled encoder) rewrites its figures every
    /// second at its epoch without moving the lease. Once another worker's sweeper ended the
    /// stream, that write must be refused, not write the stream back to not ended.
    #[tokio::test]
    async fn a_stream_ended_by_the_sweeper_fences_its_silent_holder() {
        let (dir, streams) = test_streams("sweep-fence", "state");
        let id = StreamId::new("default", "stalled").unwrap();
        let long_ago = unix_ms() - 120_000;
        let held = StreamRecord {
            id: id.clone(),
            playlist: PlaylistState::new(Container::Fmp4, 6, 2),
            updated_ms: long_ago,
            publisher_left_ms: None,
            owner: "elsewhere".into(),
            last_media_ms: Some(long_ago),
            takeovers: Vec::new(),
            session_started_ms: None,
            holder: None,
        };
        let epoch = held.playlist.epoch;
        streams.state.compare_and_set(None, &held).await.unwrap();
        assert_eq!(streams.sweep().await.unwrap(), 1);
        let ended = streams.state.load(&id).await.unwrap().unwrap();
        assert!(ended.playlist.ended);

        // The holder's next figures-only write (same epoch, lease not moved).
        let figures = held.clone();
        let refused = streams.state.compare_and_set(Some(epoch), &figures).await;
        assert!(
            matches!(refused, Err(StoreError::Conflict { .. })),
            "{refused:?}"
        );
        let stored = streams.state.load(&id).await.unwrap().unwrap();
        assert!(stored.playlist.ended, "the stream came back");
        assert_eq!(streams.sweep().await.unwrap(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// An active marker left without its record (a crash between the two) is dropped by
    /// the sweeper instead of being read every second for good.
    #[tokio::test]
    async fn the_sweeper_drops_an_index_entry_without_a_record() {
        let (dir, streams) = test_streams("sweep-stale", "state");
        let marker = dir.join("state/.active/default/ghost");
        std::fs::create_dir_all(marker.parent().unwrap()).unwrap();
        std::fs::write(&marker, b"").unwrap();
        assert_eq!(streams.state.list_active().await.unwrap().len(), 1);
        // The first pass reads the records; the next one the index.
        streams.sweep().await.unwrap();
        streams.sweep().await.unwrap();
        assert!(streams.state.list_active().await.unwrap().is_empty());
        assert!(!marker.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_full_pass_runs_a_quarter_of_the_retention_apart_within_bounds() {
        assert_eq!(
            test_settings(Duration::from_secs(3)).full_sweep_interval(),
            SWEEP_INTERVAL
        );
        assert_eq!(
            test_settings(Duration::from_secs(120)).full_sweep_interval(),
            Duration::from_secs(30)
        );
        assert_eq!(
            test_settings(Duration::from_secs(3600)).full_sweep_interval(),
            MAX_FULL_SWEEP_INTERVAL
        );
    }
}

#[cfg(test)]
mod watch_tests;

#[cfg(test)]
mod state_loss_tests;

#[cfg(test)]
mod older_copy_tests {
    use super::*;
    use tidegate_packager::{OpenSegmentEntry, PartEntry, SegmentEntry};

    fn playlist(segments: &[&str], parts: &[&str]) -> PlaylistState {
        let mut p = PlaylistState::new(Container::Fmp4, 6, 2);
        for uri in segments {
            let entry: SegmentEntry = serde_json::from_value(serde_json::json!({
                "sequence": 0, "uri": uri, "duration_secs": 2.0, "program_date_time_ms": 0,
                "discontinuity": false, "map_uri": null, "bytes": 1,
            }))
            .expect("a segment entry");
            p.push_segment(entry);
        }
        if !parts.is_empty() {
            p.open = Some(OpenSegmentEntry {
                parts: parts
                    .iter()
                    .map(|uri| PartEntry {
                        uri: (*uri).to_owned(),
                        duration_secs: 0.3,
                        independent: false,
                        gap: false,
                        offset: 0,
                        bytes: 1,
                    })
                    .collect(),
                ..OpenSegmentEntry::default()
            });
        }
        p
    }

    /// A copy whose newest URI the view lists among older ones never replaces the view; a
    /// newer one, one of another session, or an ended one always does.
    #[test]
    fn only_an_older_copy_of_the_view_is_refused() {
        let current = playlist(
            &["seg-5-0.m4s", "seg-5-1.m4s"],
            &["seg-5-2.0.m4s", "seg-5-2.1.m4s"],
        );
        let behind_a_part = playlist(&["seg-5-0.m4s", "seg-5-1.m4s"], &["seg-5-2.0.m4s"]);
        let behind_a_segment = playlist(&["seg-5-0.m4s"], &[]);
        assert!(older_copy(&behind_a_part, &current));
        assert!(older_copy(&behind_a_segment, &current));
        assert!(!older_copy(&current, &current));
        assert!(!older_copy(&current, &behind_a_part));
        let next_session = playlist(&["seg-5-0.m4s", "seg-5-1.m4s", "seg-6-2.m4s"], &[]);
        assert!(!older_copy(&next_session, &current));
        let mut ended = behind_a_segment.clone();
        ended.ended = true;
        assert!(!older_copy(&ended, &current));
        assert!(!older_copy(&PlaylistState::default(), &current));
    }
}
