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

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tidegate_model::{KeyId, StreamKey, OPEN_TENANT};
use tracing::{info, warn};

use crate::store::{StateStore, StoreError, StreamId, TenantRecord};
use crate::stream::Streams;

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
    tenants: BTreeSet<String>,
    by_id: HashMap<KeyId, Vec<Entry>>,
}

impl KeyIndex {
    /// The index of `tenants`' keys. A key whose stream is not a valid name is left out.
    pub fn new(tenants: &[TenantRecord]) -> Self {
        let mut index = Self::default();
        for t in tenants {
            index.tenants.insert(t.name.clone());
            for key in &t.keys {
                if StreamId::new(&t.name, &key.stream).is_none() {
                    continue;
                }
                index.by_id.entry(key.id.clone()).or_default().push(Entry {
                    tenant: t.name.clone(),
                    key: key.clone(),
                });
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

    /// The stream `presented` publishes. Costs one parse, one lookup and one SHA-256 per
    /// key with that id (one, barring a 64-bit collision), compared in constant time.
    pub fn resolve(&self, presented: &str) -> Result<Admission, KeyRefusal> {
        if self.is_open() {
            return StreamId::new(OPEN_TENANT, presented)
                .map(|id| Admission { id, key: None })
                .ok_or(KeyRefusal::BadKey);
        }
        let key = StreamKey::parse(presented).ok_or(KeyRefusal::UnknownKey)?;
        let candidates = self.by_id.get(key.id()).ok_or(KeyRefusal::UnknownKey)?;
        let hash = key.hash();
        candidates
            .iter()
            .find(|e| e.key.hash == hash && e.key.hash.matches(&key))
            .and_then(|e| StreamId::new(&e.tenant, &e.key.stream))
            .map(|id| Admission {
                id,
                key: Some(key.id().clone()),
            })
            .ok_or(KeyRefusal::UnknownKey)
    }

    /// The streams a key of `previous` published that no key of `self` with the same id
    /// publishes any more (revoked keys, deleted tenants, a key moved to another stream).
    /// A rotated key keeps its id and stream, so its stream is not listed.
    pub fn revoked_since(&self, previous: &KeyIndex) -> Vec<StreamId> {
        let mut out = BTreeSet::new();
        for (id, entries) in &previous.by_id {
            for e in entries {
                let kept = self.by_id.get(id).is_some_and(|now| {
                    now.iter()
                        .any(|n| n.tenant == e.tenant && n.key.stream == e.key.stream)
                });
                if !kept {
                    if let Some(stream) = StreamId::new(&e.tenant, &e.key.stream) {
                        out.insert(stream);
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
    /// `None` until the first successful read.
    index: RwLock<Option<Arc<KeyIndex>>>,
    /// Serialises refreshes, so two of them cannot swap an older index over a newer one.
    refreshing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Tenants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tenants").finish_non_exhaustive()
    }
}

impl Tenants {
    /// A directory over `state`, empty until [`Tenants::refresh`] succeeds once.
    pub fn new(state: Arc<dyn StateStore>, streams: Arc<Streams>) -> Arc<Self> {
        Arc::new(Self {
            state,
            streams,
            index: RwLock::new(None),
            refreshing: tokio::sync::Mutex::new(()),
        })
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
        match self.current() {
            Some(index) => index.resolve(presented),
            None => Err(KeyRefusal::Unavailable),
        }
    }

    /// Reads every tenant from the state store, swaps the index in, and kicks the
    /// publishers on this worker whose key is gone. On failure the previous index stays.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let _one = self.refreshing.lock().await;
        let records = self.state.tenants().await?;
        let next = Arc::new(KeyIndex::new(&records));
        let previous = {
            let mut slot = self.index.write().unwrap_or_else(|e| e.into_inner());
            slot.replace(next.clone())
        };
        match &previous {
            None if next.is_open() => warn!(
                "open mode: no tenant is configured, so anyone who reaches the ingest ports \
                 can publish under any stream name (create a tenant to require stream keys)"
            ),
            None => info!(tenants = next.tenant_count(), "stream keys required"),
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
            for id in next.revoked_since(&previous) {
                if self.streams.kick(&id).await {
                    info!(stream = %id, "publisher disconnected: its stream key was revoked");
                }
            }
        }
        Ok(())
    }
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
                key: None
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
            vec![id("acme", "backup"), id("beta", "main")]
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
    fn refusals_tell_the_encoder_why() {
        assert_eq!(KeyRefusal::UnknownKey.text(), "unknown stream key");
        assert!(KeyRefusal::BadKey.text().contains("invalid stream key"));
    }
}
