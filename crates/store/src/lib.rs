//! What must outlive a worker, behind two small traits:
//!
//! - [`StateStore`]: per stream, one [`StreamRecord`] (the playlist state and its fencing
//!   epoch). Every write is a compare-and-set on the epoch the writer holds, so a worker that
//!   lost a stream can never write it again. The embedded implementation keeps one JSON file
//!   per stream under `<data-dir>/state`, replaced atomically; a Redis implementation (the
//!   cluster issue) keeps the same records with a Lua compare-and-set.
//! - [`MediaStore`]: segment, init and playlist objects by path. Names are unique per epoch,
//!   so nothing is ever overwritten but the playlist; a reader never sees a half-written
//!   object. The embedded implementation writes files under `<data-dir>/media` via a temporary
//!   file and a rename; an S3 implementation puts objects.
//!
//! The state store also keeps the cluster's member list: each worker registers at start
//! ([`StateStore::register_worker`] counts its incarnations), then refreshes a
//! [`WorkerRecord`] every [`WORKER_HEARTBEAT`] that expires after [`WORKER_TTL`], so a
//! worker that died without a word drops out of [`StateStore::workers`] on its own.
//!
//! [`open`] builds both from the configuration: `--state` unset → [`fs::FsStateStore`] under
//! `<data-dir>/state`, `redis://` or `rediss://` → [`redis::RedisStateStore`]; `--storage`
//! unset → [`fs::FsMediaStore`] under `<data-dir>/media`, `file:///path` → the same at that
//! path, `s3://bucket[/prefix]` → [`s3::S3MediaStore`]. The URLs arrive parsed
//! ([`StateUrl`], [`StorageUrl`] from `tidegate-model`), so `ServeConfig::validate` refuses
//! exactly what [`open`] could not build.
//!
//! The state store also holds the tenants: one [`TenantRecord`] per tenant (its settings and
//! its stream keys, hashed), written with a compare-and-set on its revision like the stream
//! records on their epoch, and announced on the same change feed ([`Change::Tenant`]), so
//! every worker of a cluster sees a new, rotated or revoked key within a second.
//!
//! [`changes`] follows what other workers write: a [`ChangeFeed`] of [`Change`]s (Redis
//! pub/sub for a Redis state store; an embedded store has no other writer, so its feed is
//! silent).
#![deny(missing_docs)]

pub mod fs;
pub mod redis;
pub mod s3;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tidegate_config::StoreConfig;
use tidegate_model::unix_ms;
pub use tidegate_model::{
    valid_name, valid_tenant_name, KeyId, KeyRecord, StateUrl, StorageUrl, StreamId, StreamKey,
    TenantSettings, MAX_NAME_LEN,
};
// Tenant admin tokens (issue #12 item 5).
pub use tidegate_model::{AdminToken, TokenRecord, TokenScope};
use tidegate_packager::PlaylistState;

/// The durable record of one stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamRecord {
    /// The stream.
    pub id: StreamId,
    /// Playlist state (epoch, sequences, segment list).
    pub playlist: PlaylistState,
    /// Unix ms of the last write: a record that is not ended and older than the reconnect
    /// window belongs to a stream whose publisher never came back.
    pub updated_ms: i64,
    /// Unix ms when the publisher of the current epoch left, or `None` while one is live.
    pub publisher_left_ms: Option<i64>,
    /// The worker that holds the current epoch.
    pub owner: String,
    /// Unix ms when the current epoch's publisher last delivered media (renewed about once a
    /// second while live: the liveness lease another worker checks before taking over).
    #[serde(default)]
    pub last_media_ms: Option<i64>,
    /// Unix ms of recent takeovers (newest last, at most [`MAX_TAKEOVER_HISTORY`]): two
    /// encoders fighting over one key show up here.
    #[serde(default)]
    pub takeovers: Vec<i64>,
    /// Unix ms when the current epoch's publisher connected (`None` in records written
    /// before this field existed): the stream's uptime, as every worker can see it.
    #[serde(default)]
    pub session_started_ms: Option<i64>,
    /// What the worker with the live publisher measured, renewed with the lease (`None`
    /// while no publisher is connected): other workers answer for the stream with these
    /// instead of figures they do not have. A value this version cannot read (written by
    /// a newer one) reads as `None`, not as a corrupt record.
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub holder: Option<HolderFigures>,
}

/// A live stream's figures as the worker holding its publisher measured them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HolderFigures {
    /// Unix ms when they were measured.
    pub at_ms: i64,
    /// `healthy` or `warning`.
    pub status: tidegate_health::Status,
    /// Why `warning`.
    pub reasons: Vec<tidegate_health::Reason>,
    /// Incoming bitrate over the last seconds.
    pub bitrate_bps: u64,
    /// `rtmp` or `srt`.
    pub protocol: Option<String>,
    /// Cumulative SRT packet counters (zero for RTMP).
    pub packets: tidegate_health::PacketTotals,
    /// Publisher reconnects the holder saw.
    pub reconnects: u64,
    /// Unix ms since which the status holds.
    pub status_since_ms: u64,
}

/// `Some` when the value reads as a `T`, `None` otherwise (unknown variants of a newer
/// version included).
fn lenient<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let v = serde_json::Value::deserialize(d)?;
    Ok(serde_json::from_value(v).ok())
}

/// How often a worker refreshes its [`WorkerRecord`].
pub const WORKER_HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(2);

/// How long a [`WorkerRecord`] stays listed without a refresh: a few heartbeats, so one slow
/// store call does not drop a live worker, and a dead one is gone within seconds.
pub const WORKER_TTL: std::time::Duration = std::time::Duration::from_secs(10);

/// What a worker is doing, as its record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerState {
    /// Taking publishers.
    Ready,
    /// Told to stop: takes no new publishers and lets its own finish or move.
    Draining,
}

/// A worker's load, sampled at each heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerLoad {
    /// Publishers live on this worker.
    pub live_publishers: u64,
    /// Bits per second received from all its publishers since the previous heartbeat.
    pub ingest_bitrate_bps: u64,
    /// CPU used by the process since the previous heartbeat, in percent of one core
    /// (`None` where the platform does not say).
    pub cpu_percent: Option<f64>,
    /// Resident memory of the process in bytes (`None` where the platform does not say).
    pub rss_bytes: Option<u64>,
}

/// Addresses a worker advertises (`host:port`; the listen address, with an unspecified IP
/// replaced by the pod IP or the host name).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerAddresses {
    /// HTTP: playback origin, API, metrics.
    pub http: String,
    /// RTMP publishers.
    pub rtmp: String,
    /// SRT publishers (UDP).
    pub srt: String,
}

/// One member of the cluster, as the shared state lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerRecord {
    /// The worker id: stable across restarts of the same worker (see `--worker-id`), a
    /// valid name ([`valid_name`]).
    pub id: String,
    /// The tidegate version it runs.
    pub version: String,
    /// Its dedicated tenant pool, `None` for the shared pool.
    pub pool: Option<String>,
    /// Where to reach it.
    pub addresses: WorkerAddresses,
    /// Unix ms when this incarnation started.
    pub started_ms: i64,
    /// How many times a worker with this id started, this incarnation included, as the
    /// shared state counted them.
    pub incarnations: u64,
    /// Unix ms of its latest heartbeat.
    pub heartbeat_ms: i64,
    /// Ready or draining.
    pub state: WorkerState,
    /// Its load at the latest heartbeat.
    pub load: WorkerLoad,
}

pub use tidegate_ownership::MAX_TAKEOVER_HISTORY;

/// Most stream keys one tenant may hold: the record is read whole by every worker, so it
/// stays small (a key is about 150 bytes of JSON).
pub const MAX_KEYS_PER_TENANT: usize = 1000;

/// Most admin tokens one tenant may hold (one per person or tool that manages it is
/// plenty; the record stays small).
pub const MAX_TOKENS_PER_TENANT: usize = 100;

/// One tenant as the shared state holds it: its settings and its stream keys (hashes only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TenantRecord {
    /// Its name ([`valid_tenant_name`]).
    pub name: String,
    /// Pool, quotas, playback.
    #[serde(default)]
    pub settings: TenantSettings,
    /// Its stream keys, in creation order.
    #[serde(default)]
    pub keys: Vec<KeyRecord>,
    /// Its tenant admin tokens (hashes only), in creation order (issue #12 item 5).
    #[serde(default)]
    pub tokens: Vec<TokenRecord>,
    /// Counts the writes of this record: [`StateStore::put_tenant`] compares it, so two
    /// workers changing one tenant at once cannot lose either change.
    pub revision: u64,
    /// Unix ms of the last write.
    pub updated_ms: i64,
    // --- signed playback (issue #12) ---
    /// Its playback signing keys, newest first (at most
    /// [`tidegate_model::MAX_PLAYBACK_KEYS`]): secrets, kept here so every worker of the
    /// cluster verifies playback tokens without configuration. Never shown by the API.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub playback_keys: Vec<tidegate_model::PlaybackKey>,
}

impl TenantRecord {
    /// A new tenant without keys, at revision 1.
    pub fn new(name: &str, settings: TenantSettings) -> Self {
        Self {
            name: name.to_owned(),
            settings,
            keys: Vec::new(),
            tokens: Vec::new(),
            revision: 1,
            updated_ms: unix_ms(),
            playback_keys: Vec::new(),
        }
    }

    /// The key with id `id`.
    pub fn key(&self, id: &KeyId) -> Option<&KeyRecord> {
        self.keys.iter().find(|k| &k.id == id)
    }

    /// The key record `presented` is the current secret of, if any: looked up by its id,
    /// then its hash compared in constant time.
    pub fn verify(&self, presented: &StreamKey) -> Option<&KeyRecord> {
        self.key(presented.id())
            .filter(|k| k.hash.matches(presented))
    }

    /// The same tenant at the next revision (what a writer stores with the current revision
    /// as the expected one).
    pub fn next_revision(&self) -> Self {
        Self {
            revision: self.revision.saturating_add(1),
            updated_ms: unix_ms(),
            ..self.clone()
        }
    }
}

/// Errors of either store. `Conflict` is the fencing outcome, not a fault.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another writer holds a newer epoch: this writer lost the stream.
    #[error("epoch conflict: stored epoch {stored}, writer holds {held}")]
    Conflict {
        /// The epoch in the store.
        stored: u64,
        /// The epoch the writer held.
        held: u64,
    },
    /// The backend failed (disk, network).
    #[error("store I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A stored record could not be decoded.
    #[error("corrupt record {what}: {reason}")]
    Corrupt {
        /// Which record.
        what: String,
        /// Why.
        reason: String,
    },
    /// A path that is not a safe object name.
    #[error("invalid object path {0:?}")]
    InvalidPath(String),
    /// A network backend (Redis, S3) could not be reached or did not answer in time. The
    /// call may be retried; the backends reconnect on their own.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

impl StoreError {
    /// Whether the backend could not be reached or timed out (as opposed to a refusal such as
    /// a conflict or an invalid path): the caller may retry later.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// Shared stream state with epoch fencing.
#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    /// The record of `id`, if any.
    async fn load(&self, id: &StreamId) -> Result<Option<StreamRecord>, StoreError>;
    /// Stores `record` if the stored epoch is `expected_epoch` (or there is no record and
    /// `expected_epoch` is `None`). A newer stored epoch yields [`StoreError::Conflict`].
    async fn compare_and_set(
        &self,
        expected_epoch: Option<u64>,
        record: &StreamRecord,
    ) -> Result<(), StoreError>;
    /// Every stream with a record.
    async fn list(&self) -> Result<Vec<StreamId>, StoreError>;
    /// Streams whose record is not ended: the sweeper's working set, read every second, so
    /// its cost follows the live and reconnecting streams, not the history. Kept by
    /// [`StateStore::compare_and_set`] in an index (a Redis set, marker files); it may
    /// still name a record that ended or went since (the reader checks the record), and
    /// may miss a record written by a version without the index (the sweeper's rarer full
    /// pass over [`StateStore::list`] finds those).
    async fn list_active(&self) -> Result<Vec<StreamId>, StoreError>;
    /// Counts one publish attempt of tenant `tenant` in the unix second `second` across
    /// the cluster and returns the count of that second so far (the tenant's
    /// `max_publish_rate` quota); `None` when this store has no other worker to share the
    /// count with (the embedded store: the worker's own count is the whole count).
    async fn count_publish_attempt(
        &self,
        _tenant: &str,
        _second: i64,
    ) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }
    /// The records of tenant `tenant`'s streams in the index of
    /// [`StateStore::list_active`] (a tenant's quotas count its live streams from them).
    /// A record gone since, or one that does not read, is left out.
    async fn active_records_of(&self, tenant: &str) -> Result<Vec<StreamRecord>, StoreError> {
        let mut out = Vec::new();
        for id in self.list_active().await? {
            if id.tenant != tenant {
                continue;
            }
            match self.load(&id).await {
                Ok(Some(r)) => out.push(r),
                Ok(None) | Err(StoreError::Corrupt { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
    /// Deletes the record of `id` if it is ended and its epoch is still `epoch` (an ended
    /// stream past its retention); `false` when it is not (gone already, restarted by a
    /// new publisher, or not ended). With no record, it drops `id` from the index of
    /// [`StateStore::list_active`] (an entry left by a crash between index and record).
    async fn delete(&self, id: &StreamId, epoch: u64) -> Result<bool, StoreError>;
    /// Counts a start of worker `worker_id` and returns how many starts the store has seen
    /// for it, this one included (so the restarts are this minus one).
    async fn register_worker(&self, worker_id: &str) -> Result<u64, StoreError>;
    /// Writes (or refreshes) a worker's record; it is listed until `ttl` passes without
    /// another call.
    async fn put_worker(
        &self,
        record: &WorkerRecord,
        ttl: std::time::Duration,
    ) -> Result<(), StoreError>;
    /// Removes a worker's record (a clean exit); absent is fine.
    async fn remove_worker(&self, worker_id: &str) -> Result<(), StoreError>;
    /// Every worker whose record has not expired, sorted by id.
    async fn workers(&self) -> Result<Vec<WorkerRecord>, StoreError>;
    /// Every tenant, sorted by name. A record this version cannot read is skipped (and
    /// logged), not fatal: one odd tenant must not refuse every other tenant's keys.
    async fn tenants(&self) -> Result<Vec<TenantRecord>, StoreError>;
    /// The tenant `name`, if it exists.
    async fn load_tenant(&self, name: &str) -> Result<Option<TenantRecord>, StoreError>;
    /// Stores `record` if the stored revision is `expected_revision` (or there is no
    /// record and `expected_revision` is `None`), else [`StoreError::Conflict`] (`stored`
    /// and `held` are revisions). Announced as [`Change::Tenant`].
    async fn put_tenant(
        &self,
        expected_revision: Option<u64>,
        record: &TenantRecord,
    ) -> Result<(), StoreError>;
    /// Deletes the tenant `name` if its stored revision is still `revision`; `false` when it
    /// is not (gone already, or changed since). Announced as [`Change::Tenant`].
    async fn delete_tenant(&self, name: &str, revision: u64) -> Result<bool, StoreError>;
}

/// Media objects by path (`TENANT/STREAM/FILE`).
#[async_trait]
pub trait MediaStore: Send + Sync + 'static {
    /// Writes an object; readers see the old or the new content, never a mix.
    async fn put(&self, path: &str, data: Bytes) -> Result<(), StoreError>;
    /// Reads an object; `None` when absent.
    async fn get(&self, path: &str) -> Result<Option<Bytes>, StoreError>;
    /// Removes an object; absent is fine.
    async fn delete(&self, path: &str) -> Result<(), StoreError>;
    /// Object names (file part only) under a stream's prefix.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError>;
    /// Removes what is left of a stream's prefix once its objects are deleted (the
    /// embedded store's empty directory); nothing to do for an object store.
    async fn remove_prefix(&self, _prefix: &str) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Builds the configured state and media stores. A Redis backend is pinged once (within
/// [`redis::CALL_TIMEOUT`]) so that a wrong address fails at start with a clear error; an S3
/// backend is only built (credentials and endpoint from the AWS environment variables).
pub async fn open(
    config: &StoreConfig,
) -> Result<(Arc<dyn StateStore>, Arc<dyn MediaStore>), StoreError> {
    let state: Arc<dyn StateStore> = match &config.state {
        None => Arc::new(fs::FsStateStore::new(config.data_dir.join("state"))),
        Some(StateUrl::Redis(url)) => Arc::new(redis::RedisStateStore::connect(url).await?),
        Some(StateUrl::Sentinel(spec)) => {
            Arc::new(redis::RedisStateStore::connect_sentinel(spec).await?)
        }
    };
    let media: Arc<dyn MediaStore> = match &config.storage {
        None => Arc::new(fs::FsMediaStore::new(config.media_root.clone())),
        Some(StorageUrl::File(root)) => Arc::new(fs::FsMediaStore::new(root.clone())),
        Some(StorageUrl::S3 { bucket, prefix }) => {
            Arc::new(s3::S3MediaStore::from_env(bucket, prefix)?)
        }
    };
    Ok((state, media))
}

/// What a change feed reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// This stream's record was written (by any worker, this one included).
    Stream(StreamId),
    /// This tenant was created, changed (settings, keys) or deleted.
    Tenant(String),
    /// The subscription was (re)established. Notifications published while it was down are
    /// lost, so a consumer should refresh everything it caches when it sees this; it is
    /// also the first item, once the subscription is live.
    Subscribed,
    /// The subscription was lost (connection closed, or the server stopped answering its
    /// liveness probe): until the next [`Change::Subscribed`], writes go unannounced, so a
    /// consumer must not trust its caches for longer than it would without notifications.
    Lost,
}

/// Changes to the stream records, as the state store announces them.
#[async_trait]
pub trait ChangeFeed: Send + 'static {
    /// The next change; `None` once the feed has ended.
    async fn next(&mut self) -> Option<Change>;
}

#[async_trait]
impl ChangeFeed for tokio::sync::mpsc::Receiver<Change> {
    async fn next(&mut self) -> Option<Change> {
        self.recv().await
    }
}

/// The embedded store's feed: it has no other writer to announce, so it never yields (a
/// consumer keeps its caches on their own expiry, as without notifications).
struct Silent;

#[async_trait]
impl ChangeFeed for Silent {
    async fn next(&mut self) -> Option<Change> {
        std::future::pending().await
    }
}

/// The change feed of the configured state store: Redis pub/sub
/// ([`redis::subscribe_changes`]) or the embedded store's silent one.
pub fn changes(config: &StoreConfig) -> Result<Box<dyn ChangeFeed>, StoreError> {
    match &config.state {
        None => Ok(Box::new(Silent)),
        Some(StateUrl::Redis(url)) => Ok(Box::new(redis::subscribe_changes(url)?)),
        Some(StateUrl::Sentinel(spec)) => Ok(Box::new(redis::subscribe_changes_sentinel(spec))),
    }
}
