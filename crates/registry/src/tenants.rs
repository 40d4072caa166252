//! The tenant directory: which stream a presented key publishes, as this worker knows it.
//!
//! [`KeyIndex`] is the pure part: built from the tenant records, it answers
//! [`KeyIndex::resolve`] (a key → its tenant and stream, or why not) without I/O, and says
//! which streams lost their key between two versions ([`KeyIndex::revoked_since`]).
//!
//! [`Tenants`] keeps the current index for the ingest listeners: [`Tenants::refresh`] reads
//! every tenant from the state store, swaps the index in, and kicks the publishers (on this
//! worker) whose key was revoked or whose tenant was deleted — their streams go
//! `reconnecting`, then `ended`, since the key no longer admits them. A rotation changes a
//! key's secret, not its id, so its live publisher keeps streaming. The server calls
//! `refresh` at start, on every [`Change::Tenant`](crate::store::Change) of the change feed
//! (Redis pub/sub: within a second on every worker), after each write this worker makes,
//! and every [`TENANT_REFRESH_INTERVAL`] (the embedded store has no feed; a lost
//! subscription drops notifications).
//!
//! **Open mode**: with no tenant in the shared state, any key `K` publishes stream `K` of
//! tenant [`OPEN_TENANT`], as before tenants existed. Once one tenant exists, a key that maps
//! to no tenant is refused.
//!
//! **Pools**: a tenant may name a dedicated pool, and a worker started with `--pool NAME`
//! serves only that pool. After a key resolves, [`Tenants::check_pool`] asks the pure
//! [`pool_refusal`] whether this worker's pool takes the tenant: a shared worker refuses a
//! pooled tenant, a pooled worker refuses every tenant of another pool or of the shared one
//! (and, in open mode, everyone: there is no tenant of its pool). A change of a tenant's
//! pool applies to its next publish; a live publisher keeps streaming.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tidegate_model::{
    unix_ms, valid_tenant_name, KeyId, KeyRecord, Quotas, StreamKey, TenantSettings, OPEN_TENANT,
};
use tracing::{info, warn};

use crate::quotas::{self as quota, PublishRates, QuotaRefusal};
use crate::store::{StateStore, StoreError, StreamId, TenantRecord, MAX_KEYS_PER_TENANT};
use crate::stream::Streams;

// Tenant admin tokens (issue #12 item 5).
pub mod tokens;
use tokens::TokenIndex;

/// How many times a change is tried again when another worker changed the same tenant in
/// between (a compare-and-set conflict).
const MAX_WRITE_ATTEMPTS: usize = 8;

/// Why a change to the tenants was not made.
#[derive(Debug, thiserror::Error)]
pub enum ManageError {
    /// No such tenant, or no such key of it.
    #[error("{0}")]
    NotFound(&'static str),
    /// A tenant of that name exists.
    #[error("a tenant of that name exists")]
    Exists,
    /// A name or a value that cannot be.
    #[error("{0}")]
    Invalid(String),
    /// The tenant holds [`MAX_KEYS_PER_TENANT`] keys.
    #[error("the tenant has its maximum of {MAX_KEYS_PER_TENANT} stream keys; revoke one first")]
    TooManyKeys,
    /// The tenant holds its maximum of admin tokens.
    #[error(
        "the tenant has its maximum of {} admin tokens; revoke one first",
        crate::store::MAX_TOKENS_PER_TENANT
    )]
    TooManyTokens,
    /// The operating system gave no randomness for a key.
    #[error(transparent)]
    NoRandomness(#[from] tidegate_model::NoRandomness),
    /// The state store failed, or other writers kept winning.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A key as made or rotated: its record and, once, its secret.
#[derive(Debug)]
pub struct IssuedKey {
    /// The stored record (its hash, not the secret).
    pub record: KeyRecord,
    /// The whole key: shown once, never stored.
    pub key: StreamKey,
}

/// How often the directory is read again without a notification.
pub const TENANT_REFRESH_INTERVAL: Duration = Duration::from_secs(5);

/// Why a key admits no stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRefusal {
    /// Open mode: the key is not a valid stream name (empty, too long, a character outside
    /// `[A-Za-z0-9._-]`, a leading dot).
    BadKey,
    /// Tenants exist and the key is none of theirs (wrong, revoked, or of another format).
    /// Which of these is not told: a guesser learns nothing from the refusal.
    UnknownKey,
    /// The directory could not be read yet (the state store did not answer at start).
    Unavailable,
}

impl KeyRefusal {
    /// What the encoder is told.
    pub fn text(self) -> &'static str {
        match self {
            Self::BadKey => {
                "invalid stream key: 1 to 128 of A-Z a-z 0-9 . _ -, not starting with a dot"
            }
            Self::UnknownKey => "unknown stream key",
            Self::Unavailable => "stream keys cannot be checked right now; try again",
        }
    }
}

/// What a key admits: a stream, and the key's id (none in open mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// The stream it publishes.
    pub id: StreamId,
    /// The key that admitted it.
    pub key: Option<KeyId>,
    /// The tenant's dedicated pool; `None` for the shared pool (and in open mode).
    pub pool: Option<String>,
}

/// One key as the index holds it.
#[derive(Debug, Clone)]
struct Entry {
    tenant: String,
    key: tidegate_model::KeyRecord,
}

/// Every key of every tenant, by key id. Pure: no I/O, no clock.
#[derive(Debug, Clone, Default)]
pub struct KeyIndex {
    /// The tenants that name a dedicated pool, with it.
    pools: HashMap<String, String>,
    tenants: BTreeSet<String>,
    by_id: HashMap<KeyId, Vec<Entry>>,
    /// The tenants' admin tokens, swapped in with their keys.
    tokens: TokenIndex,
    /// Each tenant's quotas.
    quotas: HashMap<String, Quotas>,
}

impl KeyIndex {
    /// The index of `tenants`' keys. A key whose stream is not a valid name is left out.
    pub fn new(tenants: &[TenantRecord]) -> Self {
        let mut index = Self {
            tokens: TokenIndex::new(tenants),
            ..Self::default()
        };
        for t in tenants {
            index.tenants.insert(t.name.clone());
            index
                .quotas
                .insert(t.name.clone(), t.settings.quotas.clone());
            for key in &t.keys {
                if StreamId::new(&t.name, &key.stream).is_none() {
                    continue;
                }
                index.by_id.entry(key.id.clone()).or_default().push(Entry {
                    tenant: t.name.clone(),
                    key: key.clone(),
                });
            }
            if let Some(pool) = &t.settings.pool {
                index.pools.insert(t.name.clone(), pool.clone());
            }
        }
        index
    }

    /// Whether no tenant exists (open mode).
    pub fn is_open(&self) -> bool {
        self.tenants.is_empty()
    }

    /// How many tenants there are.
    pub fn tenant_count(&self) -> usize {
        self.tenants.len()
    }

    /// The quotas of `tenant` (`None` for no such tenant, open mode's included).
    pub fn quotas(&self, tenant: &str) -> Option<&Quotas> {
        self.quotas.get(tenant)
    }

    /// The stream `presented` publishes. Costs one parse, one lookup and one SHA-256 per
    /// key with that id (one, barring a 64-bit collision), compared in constant time.
    pub fn resolve(&self, presented: &str) -> Result<Admission, KeyRefusal> {
        if self.is_open() {
            return StreamId::new(OPEN_TENANT, presented)
                .map(|id| Admission {
                    id,
                    key: None,
                    pool: None,
                })
                .ok_or(KeyRefusal::BadKey);
        }
        let key = StreamKey::parse(presented).ok_or(KeyRefusal::UnknownKey)?;
        let candidates = self.by_id.get(key.id()).ok_or(KeyRefusal::UnknownKey)?;
        candidates
            .iter()
            .find(|e| e.key.hash.matches(&key))
            .and_then(|e| StreamId::new(&e.tenant, &e.key.stream))
            .map(|id| Admission {
                pool: self.pool_of(&id.tenant).map(str::to_owned),
                id,
                key: Some(key.id().clone()),
            })
            .ok_or(KeyRefusal::UnknownKey)
    }

    /// Tenant `tenant`'s dedicated pool; `None` for the shared pool (or no such tenant).
    pub fn pool_of(&self, tenant: &str) -> Option<&str> {
        self.pools.get(tenant).map(String::as_str)
    }

    /// The keys of `previous` (with the stream each published) that `self` no longer has
    /// for that stream: revoked keys, deleted tenants. A rotated key keeps its id and
    /// stream, so it is not listed.
    pub fn revoked_since(&self, previous: &KeyIndex) -> Vec<(StreamId, KeyId)> {
        let mut out = BTreeSet::new();
        for (id, entries) in &previous.by_id {
            for e in entries {
                let kept = self.by_id.get(id).is_some_and(|now| {
                    now.iter()
                        .any(|n| n.tenant == e.tenant && n.key.stream == e.key.stream)
                });
                if !kept {
                    if let Some(stream) = StreamId::new(&e.tenant, &e.key.stream) {
                        out.insert((stream, id.clone()));
                    }
                }
            }
        }
        out.into_iter().collect()
    }
}

/// The directory this worker's listeners ask; see the module documentation.
pub struct Tenants {
    state: Arc<dyn StateStore>,
    streams: Arc<Streams>,
    /// The pool this worker serves (`--pool`), set once at start ([`Tenants::set_pool`]);
    /// unset for the shared pool.
    pool: std::sync::OnceLock<String>,
    /// `None` until the first successful read.
    index: RwLock<Option<Arc<KeyIndex>>>,
    /// Serialises refreshes, so two of them cannot swap an older index over a newer one.
    refreshing: tokio::sync::Mutex<()>,
    /// The keys each stream was admitted with here: a revocation disconnects a stream's
    /// publisher only when the key was one of them (a stream may have several keys, e.g.
    /// one per encoder). A key admitted but then refused (the stream was live) stays
    /// listed: a revocation must never miss the key a live publisher came with, and at
    /// worst it disconnects one that reconnects at once. Bounded by the keys that exist.
    admitted: std::sync::Mutex<HashMap<StreamId, BTreeSet<KeyId>>>,
    /// The server's values the tenants' settings are laid over (`settings.rs`).
    defaults: crate::settings::Defaults,
    /// Every tenant's settings as last read (for [`Tenants::srt_for`]).
    settings: RwLock<HashMap<String, TenantSettings>>,
    /// Tenants whose webhooks have no secret to be signed with (warned about once).
    unsigned: std::sync::Mutex<BTreeSet<String>>,
    /// Signed playback: which tenants require a token, with their keys (`crate::playback`).
    playback: crate::playback::PlaybackState,
    /// Each tenant's publish-attempt bucket on this worker (`max_publish_rate`).
    rates: PublishRates,
    /// Unix ms of the last "could not be counted" warning: one every
    /// [`QUOTA_WARN_INTERVAL_MS`] through a store outage, not one per attempt.
    quota_warned_ms: std::sync::atomic::AtomicI64,
}

/// The shortest interval between two warnings that a tenant's live streams could not be
/// counted (publish attempts keep coming through a store outage).
const QUOTA_WARN_INTERVAL_MS: i64 = 10_000;

impl std::fmt::Debug for Tenants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tenants").finish_non_exhaustive()
    }
}

impl Tenants {
    /// A directory over `state`, empty until [`Tenants::refresh`] succeeds once.
    pub fn new(state: Arc<dyn StateStore>, streams: Arc<Streams>) -> Arc<Self> {
        Self::with_defaults(state, streams, crate::settings::Defaults::default())
    }

    /// A directory whose tenants' settings are laid over `defaults` (the server's SRT
    /// settings and webhook secret).
    pub fn with_defaults(
        state: Arc<dyn StateStore>,
        streams: Arc<Streams>,
        defaults: crate::settings::Defaults,
    ) -> Arc<Self> {
        Arc::new(Self {
            state,
            streams,
            pool: std::sync::OnceLock::new(),
            index: RwLock::new(None),
            refreshing: tokio::sync::Mutex::new(()),
            admitted: std::sync::Mutex::new(HashMap::new()),
            defaults,
            settings: RwLock::default(),
            unsigned: std::sync::Mutex::default(),
            playback: crate::playback::PlaybackState::default(),
            rates: PublishRates::default(),
            quota_warned_ms: std::sync::atomic::AtomicI64::new(i64::MIN),
        })
    }

    /// The SRT settings a caller publishing to `tenant` is checked against: the tenant's,
    /// else the server's.
    pub fn srt_for(&self, tenant: &str) -> crate::settings::SrtSettings {
        match self
            .settings
            .read()
            .ok()
            .and_then(|s| s.get(tenant).cloned())
        {
            Some(t) => self.defaults.srt.for_tenant(&t),
            None => self.defaults.srt.clone(),
        }
    }

    /// Hands the tenants' settings to the parts that apply them (see `settings.rs`).
    fn apply_settings(&self, records: &[TenantRecord]) {
        let settings: HashMap<String, TenantSettings> = records
            .iter()
            .map(|r| (r.name.clone(), r.settings.clone()))
            .collect();
        let hooks = crate::settings::tenant_hooks(&settings, self.defaults.webhook_secret.as_ref());
        // Webhooks with neither the tenant's secret nor the server's are never sent unsigned.
        let unsigned: BTreeSet<String> = settings
            .iter()
            .filter(|(name, t)| !t.webhooks.is_empty() && !hooks.contains_key(*name))
            .map(|(name, _)| name.clone())
            .collect();
        if let Ok(mut known) = self.unsigned.lock() {
            for name in unsigned.difference(&known) {
                warn!(tenant = %name, "the tenant's webhooks are not sent: they need a webhook_secret (the tenant's, or the server's --webhook-secret)");
            }
            *known = unsigned;
        }
        self.streams.telemetry().set_tenant_hooks(hooks);
        self.streams.set_tenant_settings(settings.clone());
        if let Ok(mut s) = self.settings.write() {
            *s = settings;
        }
    }

    pub(crate) fn playback_state(&self) -> &crate::playback::PlaybackState {
        &self.playback
    }

    fn current(&self) -> Option<Arc<KeyIndex>> {
        self.index.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether open mode holds (no tenant), `None` before the first read.
    pub fn is_open(&self) -> Option<bool> {
        self.current().map(|i| i.is_open())
    }

    /// The stream `presented` publishes, with the index as it is now.
    pub fn resolve(&self, presented: &str) -> Result<Admission, KeyRefusal> {
        let admission = match self.current() {
            Some(index) => index.resolve(presented)?,
            None => return Err(KeyRefusal::Unavailable),
        };
        if let Some(key) = &admission.key {
            self.admitted()
                .entry(admission.id.clone())
                .or_default()
                .insert(key.clone());
        }
        Ok(admission)
    }

    fn admitted(&self) -> std::sync::MutexGuard<'_, HashMap<StreamId, BTreeSet<KeyId>>> {
        self.admitted.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads every tenant from the state store, swaps the index in, and kicks the
    /// publishers on this worker whose key is gone. On failure the previous index stays.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let _one = self.refreshing.lock().await;
        let records = self.state.tenants().await?;
        self.apply_settings(&records);
        let next = Arc::new(KeyIndex::new(&records));
        // Signed playback: the refused-playback series of deleted tenants go with them.
        for gone in self
            .playback
            .set(crate::playback::PlaybackIndex::new(&records))
        {
            self.streams.metrics().forget_playback_tenant(&gone);
        }
        let previous = {
            let mut slot = self.index.write().unwrap_or_else(|e| e.into_inner());
            slot.replace(next.clone())
        };
        self.rates.retain(|t| next.quotas(t).is_some());
        self.apply_bitrate_quotas(&next).await;
        // The first read is reported by the server's start line.
        match &previous {
            None => {}
            Some(p) if p.is_open() != next.is_open() => {
                if next.is_open() {
                    warn!("open mode: the last tenant is gone; any stream name publishes again");
                } else {
                    info!(
                        tenants = next.tenant_count(),
                        "tenants exist: stream keys are required from now on"
                    );
                }
            }
            Some(_) => {}
        }
        if let Some(previous) = previous {
            let revoked: Vec<StreamId> = {
                let mut admitted = self.admitted();
                next.revoked_since(&previous)
                    .into_iter()
                    .filter(|(stream, key)| {
                        let Some(keys) = admitted.get_mut(stream) else {
                            return false;
                        };
                        let its_key = keys.remove(key);
                        if keys.is_empty() {
                            admitted.remove(stream);
                        }
                        its_key
                    })
                    .map(|(stream, _)| stream)
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect()
            };
            for id in revoked {
                if self.streams.kick(&id).await {
                    info!(stream = %id, "publisher disconnected: its stream key was revoked");
                }
            }
        }
        Ok(())
    }
}

/// Quotas (see [`crate::quotas`]).
impl Tenants {
    /// The quotas of `tenant`, as the directory knows them now.
    pub fn quotas(&self, tenant: &str) -> Option<Quotas> {
        self.current()?.quotas(tenant).cloned()
    }

    /// Counts a publish attempt for `id` against its tenant's `max_publish_rate`: first a
    /// bucket of the tenant's own on this worker (a flood is refused there, at no store
    /// cost), then, for an attempt that passed it, the tenant's count of this second across
    /// the cluster (Redis; the embedded store has no other worker). Call it once per
    /// attempt, right after the key resolved. A store that does not answer admits.
    pub async fn check_rate(&self, id: &StreamId, now: Instant) -> Result<(), QuotaRefusal> {
        let Some(rate) = self.quotas(&id.tenant).and_then(|q| q.max_publish_rate) else {
            return Ok(());
        };
        if !self.rates.allow(&id.tenant, rate, now) {
            return Err(QuotaRefusal::Rate { max_per_s: rate });
        }
        let second = unix_ms().div_euclid(1000);
        match self.state.count_publish_attempt(&id.tenant, second).await {
            Ok(Some(count)) if count > u64::from(rate) => {
                Err(QuotaRefusal::Rate { max_per_s: rate })
            }
            Ok(_) => Ok(()),
            Err(e) => {
                self.warn_uncounted(&id.tenant, "publish attempts", &e);
                Ok(())
            }
        }
    }

    /// Says (at most every [`QUOTA_WARN_INTERVAL_MS`]) that a quota could not be counted in
    /// the state store and the attempt was admitted.
    fn warn_uncounted(&self, tenant: &str, what: &str, e: &StoreError) {
        use std::sync::atomic::Ordering::Relaxed;
        let now = unix_ms();
        let last = self.quota_warned_ms.load(Relaxed);
        if now.saturating_sub(last) >= QUOTA_WARN_INTERVAL_MS
            && self
                .quota_warned_ms
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_ok()
        {
            warn!(tenant, error = %e, "quotas: the tenant's {what} could not be counted; admitting (said at most every 10 s)");
        }
    }

    /// Whether `id`'s tenant may have it live: its live streams (`max_streams`) and their
    /// bitrate together (`max_total_bitrate_bps`), counted across the cluster from the state
    /// store and this worker's sessions; `id` itself never counts. A state store that does
    /// not answer admits (the publish that follows needs the store and fails by itself).
    pub async fn check_live(&self, id: &StreamId) -> Result<(), QuotaRefusal> {
        let Some(quotas) = self.quotas(&id.tenant).filter(Quotas::counts_live_streams) else {
            return Ok(());
        };
        let stored = match self.stored_live(&id.tenant).await {
            Ok(s) => s,
            Err(e) => {
                self.warn_uncounted(&id.tenant, "live streams", &e);
                Vec::new()
            }
        };
        let live = quota::merge_live(stored, self.streams.live_here_of(&id.tenant).await);
        quota::admit(&quotas, &id.name, &live)
    }

    /// The live streams of `tenant` the state store's active index holds.
    async fn stored_live(&self, tenant: &str) -> Result<Vec<quota::LiveStream>, StoreError> {
        let records = self.state.active_records_of(tenant).await?;
        Ok(quota::live_from_records(&records, unix_ms()))
    }

    /// Sets the bitrate cap of one stream's telemetry from its tenant's quotas (a publish
    /// session starting).
    pub fn apply_bitrate_quota(
        &self,
        id: &StreamId,
        telemetry: &crate::telemetry::StreamTelemetry,
    ) {
        let quotas = self.quotas(&id.tenant).unwrap_or_default();
        apply_bitrate_quota(&quotas, telemetry);
    }

    /// Sets every live stream's bitrate cap from `index` (a tenant's quotas changed).
    async fn apply_bitrate_quotas(&self, index: &KeyIndex) {
        for (id, telemetry) in self.streams.live_telemetry().await {
            let quotas = index.quotas(&id.tenant).cloned().unwrap_or_default();
            apply_bitrate_quota(&quotas, &telemetry);
        }
    }
}

fn apply_bitrate_quota(quotas: &Quotas, telemetry: &crate::telemetry::StreamTelemetry) {
    let cap = quotas
        .max_bitrate_bps
        .map(|max_bps| tidegate_health::BitrateCap {
            max_bps,
            over_for_ms: u64::try_from(quotas.over_bitrate_for().as_millis()).unwrap_or(u64::MAX),
        });
    telemetry.set_bitrate_quota(cap, quotas.disconnect_over_bitrate);
}

impl Tenants {
    /// Every tenant, from the state store.
    pub async fn list(&self) -> Result<Vec<TenantRecord>, StoreError> {
        self.state.tenants().await
    }

    /// One tenant, from the state store.
    pub async fn get(&self, name: &str) -> Result<Option<TenantRecord>, StoreError> {
        if !valid_tenant_name(name) {
            return Ok(None);
        }
        self.state.load_tenant(name).await
    }

    /// Writes the tenants the configuration file declares: each is created if absent, and
    /// its settings set to the file's if they differ (its keys are kept).
    pub async fn declare(&self, declared: &[(String, TenantSettings)]) -> Result<(), ManageError> {
        for (name, settings) in declared {
            check_settings(settings)?;
            self.change(name, true, |t| {
                t.settings = settings.clone();
                Ok(())
            })
            .await?;
        }
        if !declared.is_empty() {
            self.refresh().await?;
        }
        Ok(())
    }

    /// Creates a tenant without keys.
    pub async fn create(
        &self,
        name: &str,
        settings: TenantSettings,
    ) -> Result<TenantRecord, ManageError> {
        check_tenant_name(name)?;
        check_settings(&settings)?;
        let record = TenantRecord::new(name, settings);
        match self.state.put_tenant(None, &record).await {
            Ok(()) => {}
            Err(StoreError::Conflict { .. }) => return Err(ManageError::Exists),
            Err(e) => return Err(e.into()),
        }
        self.refresh_after_write().await;
        Ok(record)
    }

    /// Changes a tenant's settings with `edit`.
    pub async fn update(
        &self,
        name: &str,
        edit: impl Fn(&mut TenantSettings),
    ) -> Result<TenantRecord, ManageError> {
        let record = self
            .change(name, false, |t| {
                edit(&mut t.settings);
                check_settings(&t.settings)
            })
            .await?;
        self.refresh_after_write().await;
        Ok(record)
    }

    /// Deletes a tenant and its keys; its publishers are disconnected.
    pub async fn delete(&self, name: &str) -> Result<TenantRecord, ManageError> {
        for _ in 0..MAX_WRITE_ATTEMPTS {
            let current = self
                .get(name)
                .await?
                .ok_or(ManageError::NotFound("no such tenant"))?;
            if self.state.delete_tenant(name, current.revision).await? {
                self.refresh_after_write().await;
                return Ok(current);
            }
        }
        Err(contended())
    }

    /// Makes a new key for stream `stream` of tenant `name`.
    pub async fn add_key(&self, name: &str, stream: &str) -> Result<IssuedKey, ManageError> {
        if StreamId::new(OPEN_TENANT, stream).is_none() {
            return Err(ManageError::Invalid(
                "invalid stream name: 1 to 128 of A-Z a-z 0-9 . _ -, not starting with a dot"
                    .into(),
            ));
        }
        let key = StreamKey::generate()?;
        let record = KeyRecord {
            id: key.id().clone(),
            stream: stream.to_owned(),
            hash: key.hash(),
            created_ms: unix_ms(),
            rotated_ms: None,
        };
        self.change(name, false, |t| {
            if t.keys.len() >= MAX_KEYS_PER_TENANT {
                return Err(ManageError::TooManyKeys);
            }
            t.keys.push(record.clone());
            Ok(())
        })
        .await?;
        self.refresh_after_write().await;
        Ok(IssuedKey { record, key })
    }

    /// Gives key `id` of tenant `name` a new secret; the old one stops working at once, a
    /// publisher connected with it keeps streaming.
    pub async fn rotate_key(&self, name: &str, id: &str) -> Result<IssuedKey, ManageError> {
        let id: KeyId = id
            .parse()
            .map_err(|_| ManageError::NotFound("no such key"))?;
        let key = StreamKey::generate_for(id.clone())?;
        let now = unix_ms();
        let updated = self
            .change(name, false, |t| {
                let k = t
                    .keys
                    .iter_mut()
                    .find(|k| k.id == id)
                    .ok_or(ManageError::NotFound("no such key"))?;
                k.hash = key.hash();
                k.rotated_ms = Some(now);
                Ok(())
            })
            .await?;
        self.refresh_after_write().await;
        let record = updated
            .key(&id)
            .cloned()
            .ok_or(ManageError::NotFound("no such key"))?;
        Ok(IssuedKey { record, key })
    }

    /// Revokes key `id` of tenant `name`; a publisher using it is disconnected.
    pub async fn revoke_key(&self, name: &str, id: &str) -> Result<KeyRecord, ManageError> {
        let id: KeyId = id
            .parse()
            .map_err(|_| ManageError::NotFound("no such key"))?;
        let mut revoked = None;
        self.change(name, false, |t| {
            let at = t
                .keys
                .iter()
                .position(|k| k.id == id)
                .ok_or(ManageError::NotFound("no such key"))?;
            revoked = Some(t.keys.remove(at));
            Ok(())
        })
        .await?;
        self.refresh_after_write().await;
        revoked.ok_or(ManageError::NotFound("no such key"))
    }

    /// Reads tenant `name`, applies `edit`, and stores it at the next revision, again from
    /// a fresh read when another writer came in between. With `create`, an absent tenant
    /// is created (with default settings before `edit`).
    pub(crate) async fn change(
        &self,
        name: &str,
        create: bool,
        mut edit: impl FnMut(&mut TenantRecord) -> Result<(), ManageError>,
    ) -> Result<TenantRecord, ManageError> {
        check_tenant_name(name)?;
        for _ in 0..MAX_WRITE_ATTEMPTS {
            let current = self.state.load_tenant(name).await?;
            let (expected, mut next) = match current {
                Some(t) => (Some(t.revision), t.next_revision()),
                None if create => (None, TenantRecord::new(name, TenantSettings::default())),
                None => return Err(ManageError::NotFound("no such tenant")),
            };
            let before = next.clone();
            edit(&mut next)?;
            if expected.is_some() && next == before {
                // Nothing to change (a declaration the store already holds).
                return Ok(next);
            }
            match self.state.put_tenant(expected, &next).await {
                Ok(()) => return Ok(next),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(contended())
    }

    /// After a write of this worker: the embedded store announces nothing, so the index is
    /// read again here (a failure leaves it to the next periodic refresh).
    pub(crate) async fn refresh_after_write(&self) {
        if let Err(e) = self.refresh().await {
            warn!(error = %e, "tenant directory not refreshed after a change");
        }
    }
}

fn contended() -> ManageError {
    ManageError::Store(StoreError::Unavailable(
        "other workers kept changing this tenant; try again".into(),
    ))
}

// --- Dedicated pools (issue #12, item 4) ---

/// Why this worker does not take a tenant's publishers: the tenant's pool is not the
/// worker's. What the encoder is told is [`PoolRefusal::text`] (RTMP
/// `NetStream.Publish.Rejected` with it as the description; SRT `SRT_REJX_FORBIDDEN`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolRefusal {
    /// A worker of the shared pool, a tenant of a dedicated pool.
    Dedicated {
        /// The tenant.
        tenant: String,
        /// Its pool.
        pool: String,
    },
    /// A worker of a dedicated pool, a tenant of another pool (`tenant_pool`) or of the
    /// shared pool (`None`).
    OtherPool {
        /// The tenant.
        tenant: String,
        /// Its pool; `None` for the shared pool.
        tenant_pool: Option<String>,
        /// This worker's pool.
        worker_pool: String,
    },
    /// A worker of a dedicated pool in open mode: no tenant exists, so none is of its pool.
    OpenMode {
        /// This worker's pool.
        worker_pool: String,
    },
}

impl PoolRefusal {
    /// What the encoder is told (and the log says).
    pub fn text(&self) -> String {
        match self {
            Self::Dedicated { tenant, pool } => {
                format!("tenant {tenant} publishes to pool {pool}: use its ingest address")
            }
            Self::OtherPool {
                tenant,
                tenant_pool: Some(pool),
                worker_pool,
            } => format!(
                "tenant {tenant} publishes to pool {pool}, this worker serves pool \
                 {worker_pool}: use pool {pool}'s ingest address"
            ),
            Self::OtherPool {
                tenant,
                tenant_pool: None,
                worker_pool,
            } => format!(
                "tenant {tenant} publishes to the shared pool, this worker serves pool \
                 {worker_pool}: use the shared ingest address"
            ),
            Self::OpenMode { worker_pool } => format!(
                "this worker serves pool {worker_pool} and no tenant exists (open mode): \
                 use the shared ingest address"
            ),
        }
    }
}

impl std::fmt::Display for PoolRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text())
    }
}

/// Whether a worker of `worker_pool` (`None`: the shared pool) takes the publishers of
/// `tenant`, whose pool is `tenant_pool` (`None`: the shared pool); `open` is open mode (no
/// tenant exists). Pure: the whole pool rule is here.
///
/// - a shared worker takes the shared pool's tenants (and everyone in open mode), and
///   refuses a tenant that names a pool;
/// - a pooled worker takes exactly its pool's tenants: it refuses the shared pool's, another
///   pool's, and in open mode everyone (no tenant is of its pool).
pub fn pool_refusal(
    open: bool,
    tenant: &str,
    tenant_pool: Option<&str>,
    worker_pool: Option<&str>,
) -> Option<PoolRefusal> {
    match (worker_pool, tenant_pool) {
        (None, None) => None,
        (None, Some(pool)) => Some(PoolRefusal::Dedicated {
            tenant: tenant.to_owned(),
            pool: pool.to_owned(),
        }),
        (Some(worker), _) if open => Some(PoolRefusal::OpenMode {
            worker_pool: worker.to_owned(),
        }),
        (Some(worker), Some(pool)) if worker == pool => None,
        (Some(worker), tenant_pool) => Some(PoolRefusal::OtherPool {
            tenant: tenant.to_owned(),
            tenant_pool: tenant_pool.map(str::to_owned),
            worker_pool: worker.to_owned(),
        }),
    }
}

impl Admission {
    /// Whether a worker of `worker_pool` takes this publisher ([`pool_refusal`]; an
    /// admission without a key is open mode's).
    pub fn check_pool(&self, worker_pool: Option<&str>) -> Result<(), PoolRefusal> {
        match pool_refusal(
            self.key.is_none(),
            &self.id.tenant,
            self.pool.as_deref(),
            worker_pool,
        ) {
            None => Ok(()),
            Some(refusal) => Err(refusal),
        }
    }
}

impl Tenants {
    /// Makes this a worker of `pool` (`--pool`; `None`: the shared pool, as before the
    /// call). Set once, at start, before the listeners run; a second pool is ignored.
    pub fn set_pool(&self, pool: Option<String>) {
        if let Some(pool) = pool {
            let _ = self.pool.set(pool);
        }
    }

    /// The pool this worker serves; `None` for the shared pool.
    pub fn pool(&self) -> Option<&str> {
        self.pool.get().map(String::as_str)
    }

    /// Whether this worker's pool takes the publisher `admission` (from
    /// [`Tenants::resolve`]) came with.
    pub fn check_pool(&self, admission: &Admission) -> Result<(), PoolRefusal> {
        admission.check_pool(self.pool())
    }

    /// Whether this worker's pool takes stream `id`'s tenant, as the directory is now: for
    /// the streams no key admits (SRT pulls, which publish to tenant `default`). Before the
    /// first read of the directory only the shared pool's workers take it.
    pub fn check_pool_of(&self, id: &StreamId) -> Result<(), PoolRefusal> {
        let (open, tenant_pool) = match self.current() {
            Some(index) => (
                index.is_open(),
                index.pool_of(&id.tenant).map(str::to_owned),
            ),
            None => (true, None),
        };
        match pool_refusal(open, &id.tenant, tenant_pool.as_deref(), self.pool()) {
            None => Ok(()),
            Some(refusal) => Err(refusal),
        }
    }

    /// The tenants whose pool is this worker's (none for the shared pool's workers, whose
    /// tenants are all that name no pool): for the start-up line.
    pub fn pool_tenants(&self) -> Vec<String> {
        let (Some(pool), Some(index)) = (self.pool(), self.current()) else {
            return Vec::new();
        };
        let mut out: Vec<String> = index
            .pools
            .iter()
            .filter(|(_, p)| p.as_str() == pool)
            .map(|(t, _)| t.clone())
            .collect();
        out.sort();
        out
    }
}

fn check_tenant_name(name: &str) -> Result<(), ManageError> {
    if valid_tenant_name(name) {
        Ok(())
    } else {
        Err(ManageError::Invalid(
            "invalid tenant name: 1 to 63 of a-z 0-9 _ -, starting with a letter or a digit".into(),
        ))
    }
}

/// The largest bitrate quota accepted: 2^53 - 1 bits per second, the largest integer every
/// JSON reader (JavaScript's included) reads exactly; far above any real stream.
pub const MAX_QUOTA_BITRATE_BPS: u64 = (1 << 53) - 1;

fn check_settings(settings: &TenantSettings) -> Result<(), ManageError> {
    if let Some(pool) = &settings.pool {
        if !valid_tenant_name(pool) {
            return Err(ManageError::Invalid(
                "invalid pool name: 1 to 63 of a-z 0-9 _ -, starting with a letter or a digit"
                    .into(),
            ));
        }
    }
    if settings
        .quotas
        .max_bitrate_bps
        .is_some_and(|b| b > MAX_QUOTA_BITRATE_BPS)
    {
        return Err(ManageError::Invalid(format!(
            "max_bitrate_bps must be at most {MAX_QUOTA_BITRATE_BPS}"
        )));
    }
    // SRT, webhooks, segments, reconnect window, health (issue #12 item 3).
    tidegate_model::check_stream_settings(settings).map_err(ManageError::Invalid)?;
    check_quotas(&settings.quotas)?;
    Ok(())
}

/// The quotas added with their enforcement (`crate::quotas`): in range.
fn check_quotas(q: &Quotas) -> Result<(), ManageError> {
    q.check().map_err(ManageError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidegate_model::{KeyRecord, TenantSettings};

    fn tenant(name: &str, keys: &[(&StreamKey, &str)]) -> TenantRecord {
        let mut t = TenantRecord::new(name, TenantSettings::default());
        for (key, stream) in keys {
            t.keys.push(KeyRecord {
                id: key.id().clone(),
                stream: (*stream).to_owned(),
                hash: key.hash(),
                created_ms: 0,
                rotated_ms: None,
            });
        }
        t
    }

    fn id(tenant: &str, stream: &str) -> StreamId {
        StreamId::new(tenant, stream).unwrap()
    }

    #[test]
    fn with_no_tenant_any_valid_name_publishes_to_the_default_tenant() {
        let index = KeyIndex::new(&[]);
        assert!(index.is_open());
        assert_eq!(
            index.resolve("cam-1"),
            Ok(Admission {
                id: id("default", "cam-1"),
                key: None,
                pool: None,
            })
        );
        for bad in ["", ".x", "a/b", "a b"] {
            assert_eq!(index.resolve(bad), Err(KeyRefusal::BadKey), "{bad}");
        }
    }

    #[test]
    fn with_tenants_only_a_current_key_publishes_and_only_its_stream() {
        let main = StreamKey::generate().unwrap();
        let backup = StreamKey::generate().unwrap();
        let other = StreamKey::generate().unwrap();
        let index = KeyIndex::new(&[
            tenant("acme", &[(&main, "main"), (&backup, "backup")]),
            tenant("beta", &[(&other, "main")]),
            tenant("empty", &[]),
        ]);
        assert!(!index.is_open());
        let admitted = index.resolve(main.expose()).unwrap();
        assert_eq!(admitted.id, id("acme", "main"));
        assert_eq!(admitted.key.as_ref(), Some(main.id()));
        assert_eq!(
            index.resolve(backup.expose()).unwrap().id,
            id("acme", "backup")
        );
        assert_eq!(
            index.resolve(other.expose()).unwrap().id,
            id("beta", "main")
        );
        // The open-mode name, a guessed secret for a known id, an unknown id, garbage:
        // all the same refusal.
        let guess = StreamKey::generate_for(main.id().clone()).unwrap();
        let unknown = StreamKey::generate().unwrap();
        for bad in ["main", guess.expose(), unknown.expose(), "", "tgk_"] {
            assert_eq!(index.resolve(bad), Err(KeyRefusal::UnknownKey), "{bad}");
        }
    }

    #[test]
    fn revocation_lists_the_stream_and_rotation_does_not() {
        let main = StreamKey::generate().unwrap();
        let backup = StreamKey::generate().unwrap();
        let other = StreamKey::generate().unwrap();
        let before = KeyIndex::new(&[
            tenant("acme", &[(&main, "main"), (&backup, "backup")]),
            tenant("beta", &[(&other, "main")]),
        ]);
        // Rotation of main (same id, new secret), revocation of backup, beta deleted.
        let rotated = StreamKey::generate_for(main.id().clone()).unwrap();
        let after = KeyIndex::new(&[tenant("acme", &[(&rotated, "main")])]);
        assert_eq!(
            after.revoked_since(&before),
            vec![
                (id("acme", "backup"), backup.id().clone()),
                (id("beta", "main"), other.id().clone())
            ]
        );
        assert!(
            after.resolve(main.expose()).is_err(),
            "the old secret is gone"
        );
        assert_eq!(
            after.resolve(rotated.expose()).unwrap().id,
            id("acme", "main")
        );
        assert!(before.revoked_since(&before).is_empty());
    }

    #[test]
    fn revoking_one_of_a_streams_keys_names_that_key_only() {
        let first = StreamKey::generate().unwrap();
        let second = StreamKey::generate().unwrap();
        let before = KeyIndex::new(&[tenant("acme", &[(&first, "main"), (&second, "main")])]);
        let after = KeyIndex::new(&[tenant("acme", &[(&first, "main")])]);
        assert_eq!(
            after.revoked_since(&before),
            vec![(id("acme", "main"), second.id().clone())]
        );
        assert_eq!(
            after.resolve(first.expose()).unwrap().id,
            id("acme", "main")
        );
    }

    fn in_pool(name: &str, pool: Option<&str>, keys: &[(&StreamKey, &str)]) -> TenantRecord {
        let mut t = tenant(name, keys);
        t.settings.pool = pool.map(str::to_owned);
        t
    }

    #[test]
    fn a_shared_worker_takes_only_the_shared_pools_tenants_and_a_pooled_one_only_its_own() {
        let acme = StreamKey::generate().unwrap();
        let gold = StreamKey::generate().unwrap();
        let beta = StreamKey::generate().unwrap();
        let index = KeyIndex::new(&[
            in_pool("acme", Some("premium"), &[(&acme, "main")]),
            in_pool("gold", Some("gold"), &[(&gold, "main")]),
            in_pool("beta", None, &[(&beta, "main")]),
        ]);
        let acme = index.resolve(acme.expose()).unwrap();
        let gold = index.resolve(gold.expose()).unwrap();
        let beta = index.resolve(beta.expose()).unwrap();
        assert_eq!(acme.pool.as_deref(), Some("premium"));
        assert_eq!(beta.pool, None);

        // The shared pool's workers: the shared tenant only.
        assert_eq!(beta.check_pool(None), Ok(()));
        let refused = acme.check_pool(None).unwrap_err();
        assert_eq!(
            refused,
            PoolRefusal::Dedicated {
                tenant: "acme".into(),
                pool: "premium".into()
            }
        );
        assert_eq!(
            refused.text(),
            "tenant acme publishes to pool premium: use its ingest address"
        );
        assert!(gold.check_pool(None).is_err());

        // A premium worker: premium's tenant only.
        assert_eq!(acme.check_pool(Some("premium")), Ok(()));
        let other = gold.check_pool(Some("premium")).unwrap_err();
        assert!(
            other.text().contains("tenant gold publishes to pool gold")
                && other.text().contains("this worker serves pool premium"),
            "{other}"
        );
        let shared = beta.check_pool(Some("premium")).unwrap_err();
        assert_eq!(
            shared,
            PoolRefusal::OtherPool {
                tenant: "beta".into(),
                tenant_pool: None,
                worker_pool: "premium".into()
            }
        );
        assert!(
            shared.text().contains("use the shared ingest address"),
            "{shared}"
        );
    }

    #[test]
    fn in_open_mode_a_pooled_worker_refuses_everyone_and_a_shared_one_no_one() {
        let index = KeyIndex::new(&[]);
        let cam = index.resolve("cam").unwrap();
        assert_eq!(cam.check_pool(None), Ok(()), "open mode as before pools");
        let refused = cam.check_pool(Some("premium")).unwrap_err();
        assert_eq!(
            refused,
            PoolRefusal::OpenMode {
                worker_pool: "premium".into()
            }
        );
        assert!(refused.text().contains("open mode"), "{refused}");
    }

    #[test]
    fn the_pool_rule_is_the_same_for_streams_no_key_admits() {
        // SRT pulls publish to tenant `default`: the rule reads its pool by name.
        assert_eq!(pool_refusal(true, "default", None, None), None);
        assert!(pool_refusal(true, "default", None, Some("premium")).is_some());
        assert_eq!(pool_refusal(false, "default", None, None), None);
        assert!(pool_refusal(false, "default", Some("premium"), None).is_some());
        assert_eq!(
            pool_refusal(false, "default", Some("premium"), Some("premium")),
            None
        );
        assert!(pool_refusal(false, "default", None, Some("premium")).is_some());
        let index = KeyIndex::new(&[in_pool("default", Some("premium"), &[])]);
        assert_eq!(index.pool_of("default"), Some("premium"));
        assert_eq!(index.pool_of("nobody"), None);
    }

    #[test]
    fn refusals_tell_the_encoder_why() {
        assert_eq!(KeyRefusal::UnknownKey.text(), "unknown stream key");
        assert!(KeyRefusal::BadKey.text().contains("invalid stream key"));
    }

    #[tokio::test]
    async fn keys_are_made_rotated_and_revoked_through_the_embedded_store() {
        let (dir, streams) = crate::stream::test_streams("tenants", "state");
        let state: Arc<dyn StateStore> =
            Arc::new(crate::store::fs::FsStateStore::new(dir.join("state")));
        let tenants = Tenants::new(state.clone(), streams);
        assert_eq!(tenants.resolve("cam"), Err(KeyRefusal::Unavailable));
        tenants.refresh().await.unwrap();
        assert_eq!(tenants.is_open(), Some(true));
        assert_eq!(tenants.resolve("cam").unwrap().id, id("default", "cam"));

        tenants
            .create("acme", TenantSettings::default())
            .await
            .unwrap();
        assert!(matches!(
            tenants.create("acme", TenantSettings::default()).await,
            Err(ManageError::Exists)
        ));
        assert!(matches!(
            tenants.create("Acme", TenantSettings::default()).await,
            Err(ManageError::Invalid(_))
        ));
        assert_eq!(tenants.is_open(), Some(false), "a tenant ends open mode");
        assert_eq!(tenants.resolve("cam"), Err(KeyRefusal::UnknownKey));

        let issued = tenants.add_key("acme", "main").await.unwrap();
        assert!(matches!(
            tenants.add_key("nobody", "main").await,
            Err(ManageError::NotFound(_))
        ));
        assert!(matches!(
            tenants.add_key("acme", "../x").await,
            Err(ManageError::Invalid(_))
        ));
        let admitted = tenants.resolve(issued.key.expose()).unwrap();
        assert_eq!(admitted.id, id("acme", "main"));
        // Only the hash is on disk.
        let stored = std::fs::read_to_string(dir.join("state/.tenants/acme.json")).unwrap();
        assert!(!stored.contains(issued.key.expose()));

        let rotated = tenants
            .rotate_key("acme", issued.record.id.as_str())
            .await
            .unwrap();
        assert_eq!(rotated.record.id, issued.record.id);
        assert_eq!(
            tenants.resolve(issued.key.expose()),
            Err(KeyRefusal::UnknownKey)
        );
        assert_eq!(
            tenants.resolve(rotated.key.expose()).unwrap().id,
            id("acme", "main")
        );

        let revoked = tenants
            .revoke_key("acme", issued.record.id.as_str())
            .await
            .unwrap();
        assert_eq!(revoked.stream, "main");
        assert_eq!(
            tenants.resolve(rotated.key.expose()),
            Err(KeyRefusal::UnknownKey)
        );
        assert!(matches!(
            tenants.revoke_key("acme", issued.record.id.as_str()).await,
            Err(ManageError::NotFound(_))
        ));

        // The file's declaration updates settings and keeps keys; an unchanged one writes
        // nothing.
        let kept = tenants.add_key("acme", "backup").await.unwrap();
        let settings = TenantSettings {
            pool: Some("premium".into()),
            ..TenantSettings::default()
        };
        let declared = [("acme".to_owned(), settings.clone())];
        tenants.declare(&declared).await.unwrap();
        let acme = tenants.get("acme").await.unwrap().unwrap();
        assert_eq!(acme.settings, settings);
        assert!(acme.verify(&kept.key).is_some());
        tenants.declare(&declared).await.unwrap();
        assert_eq!(
            tenants.get("acme").await.unwrap().unwrap().revision,
            acme.revision
        );

        tenants.delete("acme").await.unwrap();
        assert!(matches!(
            tenants.delete("acme").await,
            Err(ManageError::NotFound(_))
        ));
        assert_eq!(
            tenants.is_open(),
            Some(true),
            "the last tenant gone: open again"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_tenants_live_streams_are_counted_from_the_store_and_its_own_never() {
        use crate::store::StreamRecord;
        use tidegate_packager::{Container, PlaylistState};
        let (dir, streams) = crate::stream::test_streams("quota-live", "state");
        let state: Arc<dyn StateStore> =
            Arc::new(crate::store::fs::FsStateStore::new(dir.join("state")));
        let tenants = Tenants::new(state.clone(), streams);
        tenants.refresh().await.unwrap();
        let settings = |max_streams| TenantSettings {
            quotas: Quotas {
                max_streams,
                ..Quotas::default()
            },
            ..TenantSettings::default()
        };
        tenants.create("acme", settings(Some(1))).await.unwrap();
        tenants.create("beta", settings(None)).await.unwrap();
        // Stream acme/a live on another worker: its record, with a fresh lease.
        let now = unix_ms();
        let mut record = StreamRecord {
            id: id("acme", "a"),
            playlist: PlaylistState::new(Container::Fmp4, 6, 2),
            updated_ms: now,
            publisher_left_ms: None,
            owner: "another-worker".into(),
            last_media_ms: Some(now),
            takeovers: Vec::new(),
            session_started_ms: Some(now),
            holder: None,
        };
        state.compare_and_set(None, &record).await.unwrap();
        assert_eq!(
            tenants.check_live(&id("acme", "b")).await,
            Err(QuotaRefusal::Streams { live: 1, max: 1 })
        );
        assert_eq!(
            tenants.check_live(&id("acme", "a")).await,
            Ok(()),
            "its own stream"
        );
        assert_eq!(
            tenants.check_live(&id("beta", "b")).await,
            Ok(()),
            "another tenant"
        );
        // Its publisher gone (reconnecting): its place is free.
        record.publisher_left_ms = Some(now);
        let epoch = record.playlist.epoch;
        state.compare_and_set(Some(epoch), &record).await.unwrap();
        assert_eq!(tenants.check_live(&id("acme", "b")).await, Ok(()));
        // The rate: a bucket per tenant.
        tenants
            .update("acme", |s| s.quotas.max_publish_rate = Some(1))
            .await
            .unwrap();
        let t0 = std::time::Instant::now();
        assert_eq!(tenants.check_rate(&id("acme", "a"), t0).await, Ok(()));
        assert_eq!(
            tenants.check_rate(&id("acme", "a"), t0).await,
            Err(QuotaRefusal::Rate { max_per_s: 1 })
        );
        assert_eq!(tenants.check_rate(&id("beta", "a"), t0).await, Ok(()));
        let _ = std::fs::remove_dir_all(dir);
    }
}
