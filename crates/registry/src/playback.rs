//! Signed playback as the tenant directory knows it: which tenants require a token and the
//! keys that verify one ([`PlaybackIndex`], pure, rebuilt with the key index on every
//! [`Tenants::refresh`]), and the admin API's playback calls: mint a token, rotate the
//! signing key.
//!
//! A tenant's signing keys live in its record in the state store
//! ([`TenantRecord::playback_keys`]), newest first, so every worker of a cluster verifies
//! the tokens any of them minted. The first key is made when the first token is minted (or
//! at the first rotation); a rotation puts a new key first and keeps the previous one
//! (unless told not to), so tokens already handed out keep working until they expire.
//!
//! A token whose key this worker does not know yet (a rotation on another worker a moment
//! ago, before its change notification arrived) makes the directory read again, at most once
//! per [`UNKNOWN_KEY_REFRESH_MS`]: a stream of forged key ids costs one read a second.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use tidegate_model::{
    mint_token, unix_ms, valid_stream_pattern, KeyId, Playback, PlaybackClaims, PlaybackKey,
    MAX_PLAYBACK_KEYS, MAX_PLAYBACK_TTL_S,
};

use crate::store::TenantRecord;
use crate::tenants::{ManageError, Tenants};

/// The least time between two reads of the directory caused by tokens of unknown keys.
pub const UNKNOWN_KEY_REFRESH_MS: i64 = 1_000;

/// Who may watch one tenant's streams.
#[derive(Debug, Clone)]
pub enum PlaybackPolicy {
    /// Anyone with the URL (a public tenant, open mode, a tenant that does not exist).
    Public,
    /// Only with a token signed by one of these keys (newest first; none before the first
    /// token is minted, when every token is refused).
    Signed(Arc<[PlaybackKey]>),
}

/// Every signed tenant's verification keys. Pure: no I/O, no clock.
#[derive(Debug, Clone, Default)]
pub struct PlaybackIndex {
    signed: HashMap<String, Arc<[PlaybackKey]>>,
    /// Every tenant's name (signed or not).
    names: BTreeSet<String>,
}

impl PlaybackIndex {
    /// The index of `tenants`.
    pub fn new(tenants: &[TenantRecord]) -> Self {
        let signed = tenants
            .iter()
            .filter(|t| t.settings.playback == Playback::Signed)
            .map(|t| (t.name.clone(), Arc::from(t.playback_keys.as_slice())))
            .collect();
        let names = tenants.iter().map(|t| t.name.clone()).collect();
        Self { signed, names }
    }

    /// The tenants of `previous` that are gone from this one.
    pub fn gone_since(&self, previous: &PlaybackIndex) -> Vec<String> {
        previous.names.difference(&self.names).cloned().collect()
    }

    /// What tenant `tenant` asks of a viewer.
    pub fn policy(&self, tenant: &str) -> PlaybackPolicy {
        match self.signed.get(tenant) {
            Some(keys) => PlaybackPolicy::Signed(keys.clone()),
            None => PlaybackPolicy::Public,
        }
    }
}

/// A token as the API mints it.
#[derive(Debug, Clone)]
pub struct MintedToken {
    /// The token (`?token=` of the playback URL).
    pub token: String,
    /// What it grants.
    pub claims: PlaybackClaims,
    /// The signing key's id (the header's `kid`).
    pub key_id: KeyId,
}

/// The state [`Tenants`] keeps for playback.
#[derive(Debug, Default)]
pub(crate) struct PlaybackState {
    index: std::sync::RwLock<Option<Arc<PlaybackIndex>>>,
    /// Unix ms of the last read caused by an unknown key.
    last_unknown_key_refresh_ms: AtomicI64,
}

impl PlaybackState {
    /// Swaps `index` in; the tenants that are gone since the previous one.
    pub(crate) fn set(&self, index: PlaybackIndex) -> Vec<String> {
        let index = Arc::new(index);
        let previous = self
            .index
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .replace(index.clone());
        previous.map_or_else(Vec::new, |p| index.gone_since(&p))
    }

    fn get(&self) -> Option<Arc<PlaybackIndex>> {
        self.index.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Tenants {
    /// What tenant `tenant` asks of a viewer, as this worker knows it; `None` before the
    /// directory was first read (the origin then serves nothing).
    pub fn playback_policy(&self, tenant: &str) -> Option<PlaybackPolicy> {
        self.playback_state().get().map(|i| i.policy(tenant))
    }

    /// A token named a key this worker does not know: reads the directory again, unless
    /// that was done less than [`UNKNOWN_KEY_REFRESH_MS`] ago. Whether it read.
    pub async fn refresh_for_unknown_key(&self) -> bool {
        let now = unix_ms();
        let state = self.playback_state();
        let last = state.last_unknown_key_refresh_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) < UNKNOWN_KEY_REFRESH_MS
            || state
                .last_unknown_key_refresh_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return false;
        }
        match self.refresh().await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "tenant directory not read again for a playback key");
                false
            }
        }
    }

    /// Mints a token for stream `stream` (a name, or a prefix followed by `*`) of tenant
    /// `tenant`, valid for `ttl_s` seconds, signed with the tenant's newest key (made now
    /// when it has none).
    pub async fn mint_playback_token(
        &self,
        tenant: &str,
        stream: &str,
        ttl_s: u64,
    ) -> Result<MintedToken, ManageError> {
        if !valid_stream_pattern(stream) {
            return Err(ManageError::Invalid(
                "invalid stream: a stream name (1 to 128 of A-Z a-z 0-9 . _ -, not starting \
                 with a dot), or a prefix of one followed by `*`"
                    .into(),
            ));
        }
        if !(1..=MAX_PLAYBACK_TTL_S).contains(&ttl_s) {
            return Err(ManageError::Invalid(format!(
                "ttl_s must be 1 to {MAX_PLAYBACK_TTL_S} seconds"
            )));
        }
        let mut record = self
            .get(tenant)
            .await?
            .ok_or(ManageError::NotFound("no such tenant"))?;
        if record.playback_keys.is_empty() {
            record = self
                .change(tenant, false, |t| {
                    if t.playback_keys.is_empty() {
                        t.playback_keys.push(PlaybackKey::generate(unix_ms())?);
                    }
                    Ok(())
                })
                .await?;
            self.refresh_after_write().await;
        }
        let key = record
            .playback_keys
            .first()
            .ok_or(ManageError::NotFound("no playback key"))?;
        let exp = (unix_ms() / 1000).saturating_add(i64::try_from(ttl_s).unwrap_or(i64::MAX));
        let claims = PlaybackClaims {
            tenant: tenant.to_owned(),
            stream: stream.to_owned(),
            exp,
            nbf: None,
        };
        Ok(MintedToken {
            token: mint_token(key, &claims),
            claims,
            key_id: key.id.clone(),
        })
    }

    /// Makes a new signing key for tenant `tenant` and signs with it from now on. With
    /// `keep_previous`, the key it replaces still verifies (tokens already handed out keep
    /// working); without, only the new key does (a leaked secret). The new key, secret
    /// included: shown once.
    pub async fn rotate_playback_key(
        &self,
        tenant: &str,
        keep_previous: bool,
    ) -> Result<PlaybackKey, ManageError> {
        let key = PlaybackKey::generate(unix_ms())?;
        let keep = if keep_previous { MAX_PLAYBACK_KEYS } else { 1 };
        self.change(tenant, false, |t| {
            t.playback_keys.insert(0, key.clone());
            t.playback_keys.truncate(keep);
            Ok(())
        })
        .await?;
        self.refresh_after_write().await;
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StateStore;
    use tidegate_model::{verify_token, TenantSettings, TokenDenial};

    fn signed() -> TenantSettings {
        TenantSettings {
            playback: Playback::Signed,
            ..TenantSettings::default()
        }
    }

    fn now_s() -> i64 {
        unix_ms() / 1000
    }

    #[test]
    fn only_signed_tenants_ask_for_a_token() {
        let mut acme = TenantRecord::new("acme", signed());
        acme.playback_keys.push(PlaybackKey::generate(0).unwrap());
        let beta = TenantRecord::new("beta", TenantSettings::default());
        let index = PlaybackIndex::new(&[acme.clone(), beta]);
        match index.policy("acme") {
            PlaybackPolicy::Signed(keys) => assert_eq!(&*keys, acme.playback_keys.as_slice()),
            other => panic!("{other:?}"),
        }
        assert!(matches!(index.policy("beta"), PlaybackPolicy::Public));
        assert!(matches!(index.policy("default"), PlaybackPolicy::Public));
        assert!(matches!(
            PlaybackIndex::default().policy("acme"),
            PlaybackPolicy::Public
        ));
        let later = PlaybackIndex::new(&[acme]);
        assert_eq!(later.gone_since(&index), vec!["beta"]);
        assert!(index.gone_since(&later).is_empty());
    }

    #[tokio::test]
    async fn tokens_are_minted_and_keys_rotated_through_the_embedded_store() {
        let (dir, streams) = crate::stream::test_streams("playback", "state");
        let state: Arc<dyn StateStore> =
            Arc::new(crate::store::fs::FsStateStore::new(dir.join("state")));
        let tenants = Tenants::new(state.clone(), streams);
        tenants.refresh().await.unwrap();
        assert!(matches!(
            tenants.playback_policy("acme"),
            Some(PlaybackPolicy::Public)
        ));
        tenants.create("acme", signed()).await.unwrap();
        // Signed, but no key until the first token.
        match tenants.playback_policy("acme") {
            Some(PlaybackPolicy::Signed(keys)) => assert!(keys.is_empty()),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            tenants.mint_playback_token("nobody", "main", 60).await,
            Err(ManageError::NotFound(_))
        ));
        for (stream, ttl) in [("../x", 60), ("a*b", 60), ("main", 0)] {
            assert!(
                matches!(
                    tenants.mint_playback_token("acme", stream, ttl).await,
                    Err(ManageError::Invalid(_))
                ),
                "{stream} {ttl}"
            );
        }
        assert!(tenants
            .mint_playback_token("acme", "main", MAX_PLAYBACK_TTL_S + 1)
            .await
            .is_err());

        let first = tenants
            .mint_playback_token("acme", "main", 60)
            .await
            .unwrap();
        let keys = |t: &Tenants| match t.playback_policy("acme") {
            Some(PlaybackPolicy::Signed(keys)) => keys,
            other => panic!("{other:?}"),
        };
        assert_eq!(keys(&tenants).len(), 1);
        assert_eq!(keys(&tenants)[0].id, first.key_id);
        assert!(verify_token(&first.token, &keys(&tenants), "acme", "main", now_s()).is_ok());
        // The secret is in the record, so another worker verifies too; the API never shows
        // it (crates/origin).
        let stored = state.load_tenant("acme").await.unwrap().unwrap();
        assert_eq!(stored.playback_keys.len(), 1);
        // The embedded store's tenant records are the owner's only (they hold secrets).
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.join("state/.tenants"))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o700);
        // A second token uses the same key.
        let second = tenants
            .mint_playback_token("acme", "event-*", 60)
            .await
            .unwrap();
        assert_eq!(second.key_id, first.key_id);
        assert!(verify_token(&second.token, &keys(&tenants), "acme", "event-7", now_s()).is_ok());

        // Rotation keeps the previous key verifying; a second one drops the first.
        let rotated = tenants.rotate_playback_key("acme", true).await.unwrap();
        let third = tenants
            .mint_playback_token("acme", "main", 60)
            .await
            .unwrap();
        assert_eq!(third.key_id, rotated.id);
        assert_eq!(keys(&tenants).len(), 2);
        assert!(verify_token(&first.token, &keys(&tenants), "acme", "main", now_s()).is_ok());
        tenants.rotate_playback_key("acme", true).await.unwrap();
        assert_eq!(keys(&tenants).len(), MAX_PLAYBACK_KEYS);
        assert_eq!(
            verify_token(&first.token, &keys(&tenants), "acme", "main", now_s()),
            Err(TokenDenial::UnknownKey)
        );
        assert!(verify_token(&third.token, &keys(&tenants), "acme", "main", now_s()).is_ok());
        // Without keeping the previous key (a leaked secret): only the new one verifies.
        let fresh = tenants.rotate_playback_key("acme", false).await.unwrap();
        assert_eq!(keys(&tenants).len(), 1);
        assert_eq!(keys(&tenants)[0].id, fresh.id);
        assert_eq!(
            verify_token(&third.token, &keys(&tenants), "acme", "main", now_s()),
            Err(TokenDenial::UnknownKey)
        );
        // Settings changes keep the keys; back to public, no token is asked for.
        tenants
            .update("acme", |s| s.playback = Playback::Public)
            .await
            .unwrap();
        assert!(matches!(
            tenants.playback_policy("acme"),
            Some(PlaybackPolicy::Public)
        ));
        assert_eq!(
            state
                .load_tenant("acme")
                .await
                .unwrap()
                .unwrap()
                .playback_keys,
            vec![fresh]
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
