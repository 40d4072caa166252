//! Tenant admin tokens (issue #12 item 5): made, listed and revoked by the operator through
//! the admin API, stored hashed in the tenant's record beside its stream keys, so every
//! worker of a cluster knows a new token (and forgets a revoked one) with the same refresh
//! that carries key changes: within a second with Redis.
//!
//! [`TokenIndex`] is the pure part: built from the tenant records with the [`KeyIndex`]
//! (one swap carries both), it answers which tenant a presented token belongs to. A token is
//! `tgt_ID_SECRET` ([`AdminToken`]): parsed, looked up by its public id, its SHA-256
//! compared in constant time. A token of an unknown id is hashed and compared all the same
//! (against a hash nothing has), so a guess costs one hash whatever it names.

use std::collections::HashMap;

use tidegate_model::{unix_ms, AdminToken, KeyHash, KeyId, TokenRecord, TokenScope};

use super::{KeyIndex, ManageError, Tenants};
use crate::store::{StoreError, TenantRecord, MAX_TOKENS_PER_TENANT};

/// A token as made: its record and, once, its secret.
#[derive(Debug)]
pub struct IssuedToken {
    /// The stored record (its hash, not the secret).
    pub record: TokenRecord,
    /// The whole token: shown once, never stored.
    pub token: AdminToken,
}

/// Why a presented token admits no tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRefusal {
    /// Not a token, or none of the current ones (wrong, revoked, its tenant deleted). Which
    /// of these is not told.
    Unknown,
    /// The tenant directory could not be read yet (the state store did not answer at start).
    Unavailable,
}

/// Every tenant admin token, by id. Pure: no I/O, no clock.
#[derive(Debug, Clone, Default)]
pub struct TokenIndex {
    by_id: HashMap<KeyId, Vec<(String, KeyHash)>>,
}

impl TokenIndex {
    /// The index of `tenants`' tokens.
    pub fn new(tenants: &[TenantRecord]) -> Self {
        let mut by_id: HashMap<KeyId, Vec<(String, KeyHash)>> = HashMap::new();
        for t in tenants {
            for token in &t.tokens {
                by_id
                    .entry(token.id.clone())
                    .or_default()
                    .push((t.name.clone(), token.hash.clone()));
            }
        }
        Self { by_id }
    }

    /// The tenant `presented` is a current token of. Costs one parse, one lookup and one
    /// SHA-256 compared in constant time, found or not.
    pub fn resolve(&self, presented: &str) -> Result<&str, TokenRefusal> {
        let token = AdminToken::parse(presented).ok_or(TokenRefusal::Unknown)?;
        let Some(candidates) = self.by_id.get(token.id()) else {
            // The same work as a known id with a wrong secret.
            let _ = KeyHash::of_token("").matches(&token);
            return Err(TokenRefusal::Unknown);
        };
        candidates
            .iter()
            .find(|(_, hash)| hash.matches(&token))
            .map(|(tenant, _)| tenant.as_str())
            .ok_or(TokenRefusal::Unknown)
    }

    /// How many tokens there are.
    pub fn len(&self) -> usize {
        self.by_id.values().map(Vec::len).sum()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

impl KeyIndex {
    /// The tenant `presented` is a current admin token of.
    pub fn resolve_token(&self, presented: &str) -> Result<&str, TokenRefusal> {
        self.tokens.resolve(presented)
    }
}

impl Tenants {
    /// The tenant `presented` is a current admin token of, with the index as it is now.
    pub fn resolve_token(&self, presented: &str) -> Result<String, TokenRefusal> {
        match self.current() {
            Some(index) => index.resolve_token(presented).map(str::to_owned),
            None => Err(TokenRefusal::Unavailable),
        }
    }

    /// Makes a new admin token for tenant `name`.
    pub async fn create_token(
        &self,
        name: &str,
        scope: TokenScope,
    ) -> Result<IssuedToken, ManageError> {
        let token = AdminToken::generate()?;
        let record = TokenRecord {
            id: token.id().clone(),
            scope,
            hash: token.hash(),
            created_ms: unix_ms(),
        };
        self.change(name, false, |t| {
            if t.tokens.len() >= MAX_TOKENS_PER_TENANT {
                return Err(ManageError::TooManyTokens);
            }
            if t.tokens.iter().any(|k| k.id == record.id) {
                // A 64-bit collision: refused rather than two tokens under one id.
                return Err(ManageError::Store(StoreError::Unavailable(
                    "token id collision; try again".into(),
                )));
            }
            t.tokens.push(record.clone());
            Ok(())
        })
        .await?;
        self.refresh_after_write().await;
        Ok(IssuedToken { record, token })
    }

    /// The admin tokens of tenant `name` (ids, scopes, creation times; the hashes are for
    /// the caller to leave out).
    pub async fn tokens(&self, name: &str) -> Result<Vec<TokenRecord>, ManageError> {
        self.get(name)
            .await?
            .map(|t| t.tokens)
            .ok_or(ManageError::NotFound("no such tenant"))
    }

    /// Revokes admin token `id` of tenant `name`: every worker refuses it from its next
    /// refresh on (at once on this one).
    pub async fn revoke_token(&self, name: &str, id: &str) -> Result<TokenRecord, ManageError> {
        let id: KeyId = id
            .parse()
            .map_err(|_| ManageError::NotFound("no such token"))?;
        let mut revoked = None;
        self.change(name, false, |t| {
            let at = t
                .tokens
                .iter()
                .position(|k| k.id == id)
                .ok_or(ManageError::NotFound("no such token"))?;
            revoked = Some(t.tokens.remove(at));
            Ok(())
        })
        .await?;
        self.refresh_after_write().await;
        revoked.ok_or(ManageError::NotFound("no such token"))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::StateStore;
    use tidegate_model::TenantSettings;

    fn tenant_with(name: &str, tokens: &[&AdminToken]) -> TenantRecord {
        let mut t = TenantRecord::new(name, TenantSettings::default());
        for token in tokens {
            t.tokens.push(TokenRecord {
                id: token.id().clone(),
                scope: TokenScope::Tenant,
                hash: token.hash(),
                created_ms: 0,
            });
        }
        t
    }

    #[test]
    fn a_token_resolves_to_its_own_tenant_only() {
        let a = AdminToken::generate().unwrap();
        let b = AdminToken::generate().unwrap();
        let index = TokenIndex::new(&[tenant_with("acme", &[&a]), tenant_with("beta", &[&b])]);
        assert_eq!(index.len(), 2);
        assert_eq!(index.resolve(a.expose()), Ok("acme"));
        assert_eq!(index.resolve(b.expose()), Ok("beta"));
        // A guessed secret for a known id, an unknown token, a stream key's shape, garbage.
        let guess = format!("tgt_{}_{}", a.id(), "0".repeat(48));
        let unknown = AdminToken::generate().unwrap();
        for bad in [
            guess.as_str(),
            unknown.expose(),
            "",
            "tgt_",
            "operator-token",
            &a.expose()[1..],
        ] {
            assert_eq!(index.resolve(bad), Err(TokenRefusal::Unknown), "{bad}");
        }
        assert!(TokenIndex::default().is_empty());
    }

    #[tokio::test]
    async fn tokens_are_made_listed_and_revoked_through_the_embedded_store() {
        let (dir, streams) = crate::stream::test_streams("tokens", "state");
        let state: Arc<dyn StateStore> =
            Arc::new(crate::store::fs::FsStateStore::new(dir.join("state")));
        let tenants = Tenants::new(state, streams);
        assert_eq!(
            tenants.resolve_token("tgt_x"),
            Err(TokenRefusal::Unavailable)
        );
        tenants.refresh().await.unwrap();
        tenants
            .create("acme", TenantSettings::default())
            .await
            .unwrap();
        assert!(matches!(
            tenants.create_token("nobody", TokenScope::Tenant).await,
            Err(ManageError::NotFound(_))
        ));
        let issued = tenants
            .create_token("acme", TokenScope::Tenant)
            .await
            .unwrap();
        assert_eq!(
            tenants.resolve_token(issued.token.expose()).as_deref(),
            Ok("acme")
        );
        let stored = std::fs::read_to_string(dir.join("state/.tenants/acme.json")).unwrap();
        assert!(!stored.contains(issued.token.expose()), "only the hash");
        let listed = tenants.tokens("acme").await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, issued.record.id);

        // A settings change keeps the tokens.
        tenants.update("acme", |_| {}).await.unwrap();
        tenants
            .update("acme", |s| s.pool = Some("premium".into()))
            .await
            .unwrap();
        assert_eq!(tenants.tokens("acme").await.unwrap().len(), 1);

        tenants
            .revoke_token("acme", issued.record.id.as_str())
            .await
            .unwrap();
        assert_eq!(
            tenants.resolve_token(issued.token.expose()),
            Err(TokenRefusal::Unknown)
        );
        assert!(matches!(
            tenants
                .revoke_token("acme", issued.record.id.as_str())
                .await,
            Err(ManageError::NotFound(_))
        ));
        assert!(matches!(
            tenants.revoke_token("acme", "../x").await,
            Err(ManageError::NotFound(_))
        ));
        // Deleting the tenant takes its tokens with it.
        let again = tenants
            .create_token("acme", TokenScope::Tenant)
            .await
            .unwrap();
        tenants.delete("acme").await.unwrap();
        assert_eq!(
            tenants.resolve_token(again.token.expose()),
            Err(TokenRefusal::Unknown)
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
