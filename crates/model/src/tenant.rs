//! Tenants and their stream keys: the name rules, what a tenant is configured with, the key
//! format, and how a key is hashed and checked.
//!
//! A stream key is `tgk_ID_SECRET`: `ID` ([`KeyId`], 16 hex digits) names the key and is not
//! secret (the API lists it, a log line may carry it); `SECRET` is [`KEY_SECRET_BYTES`] bytes
//! from the operating system's generator (`getrandom`), in hex. The whole key is shown once,
//! when it is created or rotated; what is stored is its [`KeyHash`] (SHA-256, see
//! `docs/decisions/0013-stream-key-hashing.md`). A presented key is parsed, its `ID` looked
//! up, and its hash compared with the stored one in constant time ([`KeyHash::matches`]): a
//! wrong key costs one parse and one hash, and the comparison's timing says nothing about
//! how much of it was right.
//!
//! Every character of a key is one of `[0-9a-z_]`, so it travels unchanged in an RTMP
//! stream name, an SRT stream id and an OBS "stream key" field.

use std::fmt;
use std::marker::PhantomData;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The tenant every stream belongs to in open mode (no tenant configured): any key `K`
/// publishes stream `K` of this tenant.
pub const OPEN_TENANT: &str = "default";

/// Longest tenant name accepted (a DNS label's length: a tenant may name a pool, a Service,
/// a metric label).
pub const MAX_TENANT_NAME_LEN: usize = 63;

/// Random bytes in a key's secret part: 192 bits, well above the 128 the brute-force bound
/// asks for (a guesser at a million keys a second needs ~10^44 years for one hit).
pub const KEY_SECRET_BYTES: usize = 24;

/// Random bytes in a [`KeyId`]: 64 bits, enough that ids of one tenant never collide in
/// practice (a collision is still refused when stored).
pub const KEY_ID_BYTES: usize = 8;

/// The prefix of every stream key (recognisable in a leaked config file or a secret scanner).
pub const KEY_PREFIX: &str = "tgk_";

/// Whether `s` is a valid tenant name: 1..=[`MAX_TENANT_NAME_LEN`] of `[a-z0-9_-]`,
/// starting with a letter or a digit. Stricter than a stream name (no upper case, no dots):
/// it names a directory, a URL segment, a metric label and a pool member alike.
pub fn valid_tenant_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_TENANT_NAME_LEN
        && s.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'))
}

/// Who may watch a tenant's streams.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Playback {
    /// Anyone with the URL.
    #[default]
    Public,
    /// Only with a signed playback token.
    Signed,
}

/// A tenant's limits; `None` is unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Quotas {
    /// Streams live at once, across the cluster (`max-streams` in the TOML file).
    #[serde(alias = "max-streams")]
    pub max_streams: Option<u32>,
    /// Ingest bitrate of one stream, in bits per second (`max-bitrate-bps` in the TOML
    /// file).
    #[serde(alias = "max-bitrate-bps")]
    pub max_bitrate_bps: Option<u64>,
    // Quotas enforced at publish and while live (docs/quotas.md): the tenant's total
    // ingest bitrate, its publish attempts per second, and what happens to a stream over
    // `max_bitrate_bps`.
    /// Ingest bitrate of all the tenant's live streams together, across the cluster, in
    /// bits per second (`max-total-bitrate-bps`): a new stream is refused while the live
    /// ones measure this much or more.
    #[serde(alias = "max-total-bitrate-bps")]
    pub max_total_bitrate_bps: Option<u64>,
    /// Publish attempts a second with the tenant's keys, across the cluster
    /// (`max-publish-rate`); attempts beyond are refused.
    #[serde(alias = "max-publish-rate")]
    pub max_publish_rate: Option<u32>,
    /// How long, in seconds, a live stream's measured bitrate may stay above
    /// `max_bitrate_bps` before it is flagged `warning` with `over_bitrate_quota`
    /// (`over-bitrate-for-s`; [`DEFAULT_OVER_BITRATE_FOR_S`] when unset).
    #[serde(alias = "over-bitrate-for-s")]
    pub over_bitrate_for_s: Option<u32>,
    /// Whether a stream flagged `over_bitrate_quota` is disconnected as well
    /// (`disconnect-over-bitrate`; default false: flagged only).
    #[serde(alias = "disconnect-over-bitrate")]
    pub disconnect_over_bitrate: bool,
}

/// How long a stream may stay above its tenant's `max_bitrate_bps` before it is flagged,
/// when the tenant does not say ([`Quotas::over_bitrate_for_s`]).
pub const DEFAULT_OVER_BITRATE_FOR_S: u32 = 10;

/// The longest [`Quotas::over_bitrate_for_s`] accepted (the health machine's window).
pub const MAX_OVER_BITRATE_FOR_S: u32 = 120;

impl Quotas {
    /// How long a stream may stay above `max_bitrate_bps` before it is flagged.
    pub fn over_bitrate_for(&self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::from(
            self.over_bitrate_for_s
                .unwrap_or(DEFAULT_OVER_BITRATE_FOR_S)
                .clamp(1, MAX_OVER_BITRATE_FOR_S),
        ))
    }

    /// Checks the quotas added with their enforcement are in range: the total bitrate at
    /// most 2^53 - 1 (what every JSON reader reads exactly), `over_bitrate_for_s` within
    /// 1..=[`MAX_OVER_BITRATE_FOR_S`]. Says which field is wrong.
    pub fn check(&self) -> Result<(), String> {
        const MAX_JSON_INT: u64 = (1 << 53) - 1;
        if self.max_total_bitrate_bps.is_some_and(|b| b > MAX_JSON_INT) {
            return Err(format!(
                "max_total_bitrate_bps must be at most {MAX_JSON_INT}"
            ));
        }
        if self
            .over_bitrate_for_s
            .is_some_and(|s| !(1..=MAX_OVER_BITRATE_FOR_S).contains(&s))
        {
            return Err(format!(
                "over_bitrate_for_s must be between 1 and {MAX_OVER_BITRATE_FOR_S}"
            ));
        }
        Ok(())
    }

    /// Whether admitting a stream needs the tenant's live streams counted (in the state
    /// store): a limit on their number or on their total bitrate.
    pub fn counts_live_streams(&self) -> bool {
        self.max_streams.is_some() || self.max_total_bitrate_bps.is_some()
    }
}

/// What a tenant is configured with (everything but its keys): the same in the TOML file,
/// the admin API and the state store.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantSettings {
    /// Its dedicated worker pool; `None` for the shared pool.
    pub pool: Option<String>,
    /// Its limits.
    pub quotas: Quotas,
    /// Who may watch.
    pub playback: Playback,

    // --- per-tenant stream settings (issue #12 item 3; `tenant_settings.rs`). `None` (or
    // no webhooks): the server's flag. Durations are integers of milliseconds (`_ms`). ---
    /// The passphrase its SRT publishers must encrypt with (`srt-passphrase` in the file);
    /// never shown by the API.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub srt_passphrase: Option<crate::Secret>,
    /// The AES key length its SRT publishers must use: 16, 24, 32, or 0 for the caller's
    /// (`srt-pbkeylen`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub srt_pbkeylen: Option<u8>,
    /// The SRT receive latency asked for in its publishers' handshakes (`srt-latency`).
    #[serde(
        rename = "srt_latency_ms",
        with = "crate::tenant_settings::opt_ms",
        skip_serializing_if = "Option::is_none"
    )]
    pub srt_latency: Option<std::time::Duration>,
    /// URLs that receive its streams' events, besides the server's `webhooks`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<String>,
    /// The secret its webhooks are signed with (`webhook-secret`; the server's when unset);
    /// never shown by the API.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<crate::Secret>,
    /// How long its streams wait for their publisher before they end (`reconnect-window`).
    #[serde(
        rename = "reconnect_window_ms",
        with = "crate::tenant_settings::opt_ms",
        skip_serializing_if = "Option::is_none"
    )]
    pub reconnect_window: Option<std::time::Duration>,
    /// Its HLS segment container (`segment-format`: `fmp4` or `ts`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segment_format: Option<crate::SegmentFormat>,
    /// Its target segment duration (`segment-duration`).
    #[serde(
        rename = "segment_duration_ms",
        with = "crate::tenant_settings::opt_ms",
        skip_serializing_if = "Option::is_none"
    )]
    pub segment_duration: Option<std::time::Duration>,
    /// Its LL-HLS part duration (`part-duration`): 200ms to 1s, or 0 for none (regular HLS).
    #[serde(
        rename = "part_duration_ms",
        with = "crate::tenant_settings::opt_ms",
        skip_serializing_if = "Option::is_none"
    )]
    pub part_duration: Option<std::time::Duration>,
    /// Health thresholds that differ from the server's `[health]` (`[tenants.NAME.health]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<crate::TenantHealth>,
}

/// A key's public id: [`KEY_ID_BYTES`] random bytes in hex.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyId(String);

impl KeyId {
    /// The id as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for KeyId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if is_lower_hex(s, KEY_ID_BYTES * 2) {
            Ok(Self(s.to_owned()))
        } else {
            Err(format!(
                "a key id is {} lower-case hex digits",
                KEY_ID_BYTES * 2
            ))
        }
    }
}

impl TryFrom<String> for KeyId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<KeyId> for String {
    fn from(id: KeyId) -> String {
        id.0
    }
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// The operating system gave no randomness: no key can be made.
#[derive(Debug, thiserror::Error)]
#[error("no randomness from the operating system: {0}")]
pub struct NoRandomness(pub(crate) String);

/// What tells one kind of secret credential from another: its prefix, the context its hash
/// is taken in, and the name its `Debug` shows. Both kinds, [`StreamKey`] and [`AdminToken`],
/// are otherwise made, parsed, shown and hashed alike ([`Credential`]).
pub trait CredentialKind {
    /// The text every credential of this kind starts with (`tgk_`, `tgt_`).
    const PREFIX: &'static str;
    /// Domain separation: the bytes hashed before the credential, so that the hash of one
    /// kind is never that of another kind with the same text.
    const HASH_CONTEXT: &'static [u8];
    /// The type name its `Debug` shows.
    const NAME: &'static str;
}

/// The kind of a [`StreamKey`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKeyKind {}

impl CredentialKind for StreamKeyKind {
    const PREFIX: &'static str = KEY_PREFIX;
    const HASH_CONTEXT: &'static [u8] = KEY_HASH_CONTEXT;
    const NAME: &'static str = "StreamKey";
}

/// The kind of an [`AdminToken`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminTokenKind {}

impl CredentialKind for AdminTokenKind {
    const PREFIX: &'static str = TOKEN_PREFIX;
    const HASH_CONTEXT: &'static [u8] = TOKEN_HASH_CONTEXT;
    const NAME: &'static str = "AdminToken";
}

/// A whole secret credential of kind `K`, secret included: `PREFIX` + `ID_SECRET`, with a
/// [`KeyId`] as its public id and [`KEY_SECRET_BYTES`] random bytes as its secret, stored as
/// a [`KeyHash`] taken in its kind's context. Its `Debug` shows only the id: a credential
/// must never reach a log line ([`Credential::expose`] is the one way to read it, to show it
/// once).
#[derive(Clone, PartialEq, Eq)]
pub struct Credential<K> {
    id: KeyId,
    text: String,
    kind: PhantomData<K>,
}

/// A whole stream key (`tgk_ID_SECRET`), secret included.
pub type StreamKey = Credential<StreamKeyKind>;

/// A whole tenant admin token (`tgt_ID_SECRET`), secret included: made and checked like a
/// [`StreamKey`], its hash taken in its own context.
pub type AdminToken = Credential<AdminTokenKind>;

impl<K: CredentialKind> Credential<K> {
    /// A new credential with a new id.
    pub fn generate() -> Result<Self, NoRandomness> {
        Self::generate_for(Self::new_id()?)
    }

    /// A new secret for the credential `id` (rotation).
    pub fn generate_for(id: KeyId) -> Result<Self, NoRandomness> {
        let mut secret = [0u8; KEY_SECRET_BYTES];
        getrandom::fill(&mut secret).map_err(|e| NoRandomness(e.to_string()))?;
        let text = format!("{}{id}_{}", K::PREFIX, hex(&secret));
        Ok(Self::new(id, text))
    }

    /// A new random id.
    pub fn new_id() -> Result<KeyId, NoRandomness> {
        let mut id = [0u8; KEY_ID_BYTES];
        getrandom::fill(&mut id).map_err(|e| NoRandomness(e.to_string()))?;
        Ok(KeyId(hex(&id)))
    }

    /// Reads a presented credential; `None` when it is not of this kind's format (an
    /// open-mode stream name, a typo, garbage). Checks the shape only, not the secret.
    pub fn parse(s: &str) -> Option<Self> {
        let rest = s.strip_prefix(K::PREFIX)?;
        let (id, secret) = rest.split_once('_')?;
        if !is_lower_hex(secret, KEY_SECRET_BYTES * 2) {
            return None;
        }
        let id = id.parse().ok()?;
        Some(Self::new(id, s.to_owned()))
    }

    /// Whether `s` looks like a credential of this kind (its prefix): such a credential is
    /// checked as one and refused when it is none, never taken for something else.
    pub fn looks_like(s: &str) -> bool {
        s.starts_with(K::PREFIX)
    }

    /// The credential's public id.
    pub fn id(&self) -> &KeyId {
        &self.id
    }

    /// The whole credential, secret included: for the one answer that shows it, nothing
    /// else.
    pub fn expose(&self) -> &str {
        &self.text
    }

    /// What is stored instead of the credential.
    pub fn hash(&self) -> KeyHash {
        KeyHash::in_context(K::HASH_CONTEXT, &self.text)
    }

    fn new(id: KeyId, text: String) -> Self {
        Self {
            id,
            text,
            kind: PhantomData,
        }
    }
}

impl<K: CredentialKind> fmt::Debug for Credential<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({}{}_…)", K::NAME, K::PREFIX, self.id)
    }
}

/// Domain separation: a key's hash is never the hash of the same bytes in another role.
const KEY_HASH_CONTEXT: &[u8] = b"tidegate stream key v1\0";

/// The SHA-256 of a stream key (with a fixed context prefix), as stored.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyHash([u8; 32]);

impl KeyHash {
    /// The hash of the key text `key`.
    pub fn of(key: &str) -> Self {
        Self::in_context(KEY_HASH_CONTEXT, key)
    }

    /// The hash of the admin token text `token` (its own context, not a stream key's).
    pub fn of_token(token: &str) -> Self {
        Self::in_context(TOKEN_HASH_CONTEXT, token)
    }

    fn in_context(context: &[u8], text: &str) -> Self {
        let mut h = Sha256::new();
        h.update(context);
        h.update(text.as_bytes());
        Self(h.finalize().into())
    }

    /// Whether `credential` (a stream key or an admin token) hashes to this, compared in
    /// constant time. (`==` on two hashes is not: use this for anything a peer presented.)
    pub fn matches<K: CredentialKind>(&self, credential: &Credential<K>) -> bool {
        bool::from(self.0.ct_eq(&credential.hash().0))
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyHash({})", hex(&self.0))
    }
}

impl TryFrom<String> for KeyHash {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let err = || "a key hash is 64 lower-case hex digits".to_owned();
        if !is_lower_hex(&s, 64) {
            return Err(err());
        }
        let mut out = [0u8; 32];
        for (i, pair) in s.as_bytes().chunks_exact(2).enumerate() {
            let text = std::str::from_utf8(pair).map_err(|_| err())?;
            let byte = u8::from_str_radix(text, 16).map_err(|_| err())?;
            let slot = out.get_mut(i).ok_or_else(err)?;
            *slot = byte;
        }
        Ok(Self(out))
    }
}

impl From<KeyHash> for String {
    fn from(h: KeyHash) -> String {
        hex(&h.0)
    }
}

/// One stream key of a tenant, as stored: which stream it publishes, and its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// Its public id.
    pub id: KeyId,
    /// The public stream name it publishes (a valid stream name).
    pub stream: String,
    /// The hash of its current secret.
    pub hash: KeyHash,
    /// Unix ms when it was created.
    pub created_ms: i64,
    /// Unix ms of its latest rotation, if any.
    #[serde(default)]
    pub rotated_ms: Option<i64>,
}

// --- tenant admin tokens (issue #12 item 5) ---

/// The prefix of every tenant admin token (`tgt_ID_SECRET`; recognisable in a leaked file or
/// by a secret scanner, and never confused with a stream key).
pub const TOKEN_PREFIX: &str = "tgt_";

/// Domain separation: a token's hash is never that of a stream key with the same bytes.
const TOKEN_HASH_CONTEXT: &[u8] = b"tidegate admin token v1\0";

/// What a tenant admin token may do. Only one scope exists today; the field is stored so
/// that a narrower one (read-only, say) can come without a migration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenScope {
    /// The tenant's own streams, keys, record and metrics (see `docs/tokens.md`).
    #[default]
    Tenant,
}

/// One tenant admin token, as stored in its tenant's record: its id, scope and hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Its public id.
    pub id: KeyId,
    /// What it may do.
    #[serde(default)]
    pub scope: TokenScope,
    /// The hash of its secret.
    pub hash: KeyHash,
    /// Unix ms when it was created.
    pub created_ms: i64,
}

#[cfg(test)]
mod token_tests {
    use super::*;

    #[test]
    fn a_token_parses_back_and_matches_only_its_own_hash() {
        let token = AdminToken::generate().unwrap();
        let text = token.expose();
        assert!(text.starts_with(TOKEN_PREFIX) && AdminToken::looks_like(text));
        assert_eq!(
            text.len(),
            TOKEN_PREFIX.len() + 16 + 1 + 48,
            "192-bit secret"
        );
        let parsed = AdminToken::parse(text).unwrap();
        assert_eq!(parsed, token);
        assert!(token.hash().matches(&parsed));
        let other = AdminToken::generate().unwrap();
        assert_ne!(other.id(), token.id());
        assert!(!token.hash().matches(&other));
        assert!(!format!("{token:?}").contains(text.rsplit('_').next().unwrap()));
    }

    #[test]
    fn a_token_is_not_a_stream_key_and_its_hash_has_its_own_context() {
        let token = AdminToken::generate().unwrap();
        assert!(StreamKey::parse(token.expose()).is_none());
        let key = StreamKey::generate().unwrap();
        assert!(AdminToken::parse(key.expose()).is_none());
        // The same bytes hash differently as a key and as a token.
        assert_ne!(KeyHash::of("x"), KeyHash::of_token("x"));
        // printf 'tidegate admin token v1\0tgt_x' | sha256sum
        let h: String = KeyHash::of_token("tgt_x").into();
        assert_eq!(
            h,
            "7092b2c00e9bc138b2db27a076ff7e4d5595fd3c8f0e90657799af888d663a69"
        );
        for bad in [
            "tgt_".to_owned(),
            format!("tgt_0123456789abcdef_{}", "ab".repeat(23)),
            format!("tgt_0123456789ABCDEF_{}", "ab".repeat(24)),
            format!("Bearer tgt_0123456789abcdef_{}", "ab".repeat(24)),
        ] {
            assert!(AdminToken::parse(&bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn token_records_store_the_hash_only() {
        let token = AdminToken::generate().unwrap();
        let record = TokenRecord {
            id: token.id().clone(),
            scope: TokenScope::Tenant,
            hash: token.hash(),
            created_ms: 1,
        };
        let json = serde_json::to_string(&record).unwrap();
        assert!(!json.contains(token.expose()));
        assert!(json.contains(r#""scope":"tenant""#), "{json}");
        let back: TokenRecord = serde_json::from_str(&json).unwrap();
        assert!(back.hash.matches(&token));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_names_are_lower_case_labels() {
        for good in ["acme", "a", "tenant-1", "t_2", "0day", &"x".repeat(63)] {
            assert!(valid_tenant_name(good), "{good}");
        }
        for bad in [
            "",
            "Acme",
            "-acme",
            "_acme",
            "a.b",
            "a/b",
            "a b",
            "..",
            &"x".repeat(64),
        ] {
            assert!(!valid_tenant_name(bad), "{bad}");
        }
    }

    #[test]
    fn a_generated_key_parses_back_and_matches_only_its_own_hash() {
        let key = StreamKey::generate().unwrap();
        let text = key.expose();
        assert!(text.starts_with(KEY_PREFIX));
        assert_eq!(text.len(), KEY_PREFIX.len() + 16 + 1 + 48);
        assert!(crate::valid_name(text), "usable where a stream name is");
        let parsed = StreamKey::parse(text).unwrap();
        assert_eq!(parsed, key);
        assert!(key.hash().matches(&parsed));
        // Rotation: same id, a new secret; the old hash no longer matches.
        let rotated = StreamKey::generate_for(key.id().clone()).unwrap();
        assert_eq!(rotated.id(), key.id());
        assert_ne!(rotated.expose(), key.expose());
        assert!(!key.hash().matches(&rotated));
        // A different key, even with the same id, does not match.
        assert!(!rotated.hash().matches(&key));
    }

    #[test]
    fn keys_come_from_the_os_generator() {
        // Not a randomness test: two draws differ (a constant or a reused buffer would not).
        let a = StreamKey::generate().unwrap();
        let b = StreamKey::generate().unwrap();
        assert_ne!(a.id(), b.id());
        assert_ne!(a.expose(), b.expose());
    }

    #[test]
    fn malformed_keys_are_refused_by_shape() {
        let good = format!("tgk_0123456789abcdef_{}", "ab".repeat(24));
        assert!(StreamKey::parse(&good).is_some());
        for bad in [
            String::new(),
            "cam".to_owned(),
            "tgk_".to_owned(),
            format!("tgk_0123456789abcdef_{}", "ab".repeat(23)),
            format!("tgk_0123456789abcdef_{}", "AB".repeat(24)),
            format!("tgk_0123456789abcde_{}", "ab".repeat(24)),
            format!("tgk_0123456789abcdef_{}_", "ab".repeat(24)),
            format!("TGK_0123456789abcdef_{}", "ab".repeat(24)),
            format!("tgk_0123456789abcdef{}", "ab".repeat(24)),
        ] {
            assert!(StreamKey::parse(&bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn the_secret_never_shows_in_debug() {
        let key = StreamKey::generate().unwrap();
        let shown = format!("{key:?}");
        let secret = key.expose().rsplit('_').next().unwrap();
        assert!(!shown.contains(secret), "{shown}");
        assert!(shown.contains(key.id().as_str()));
    }

    #[test]
    fn hashes_and_records_round_trip_through_json() {
        let key = StreamKey::generate().unwrap();
        let record = KeyRecord {
            id: key.id().clone(),
            stream: "main".into(),
            hash: key.hash(),
            created_ms: 1,
            rotated_ms: None,
        };
        let json = serde_json::to_string(&record).unwrap();
        assert!(!json.contains(key.expose()), "only the hash is stored");
        let back: KeyRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back, record);
        assert!(back.hash.matches(&key));
        for bad in [
            r#""""#,
            r#""zz""#,
            &format!("\"{}\"", "A".repeat(64)),
            &format!("\"{}\"", "a".repeat(63)),
        ] {
            assert!(serde_json::from_str::<KeyHash>(bad).is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<KeyId>(r#""../x""#).is_err());
    }

    #[test]
    fn the_hash_is_sha256_with_its_context() {
        // A byte-exact vector: the stored form must never change silently.
        // printf 'tidegate stream key v1\0tgk_x' | sha256sum
        let h: String = KeyHash::of("tgk_x").into();
        assert_eq!(
            h,
            "7378ea9536c9efa4080efa6d83bd7143d66478f118083e6f4e04db29b00316f6"
        );
    }

    #[test]
    fn settings_read_from_the_api_shape() {
        let s: TenantSettings = serde_json::from_str(
            r#"{"pool": null, "quotas": {"max_streams": 5, "max_bitrate_bps": 8000000}, "playback": "signed"}"#,
        )
        .unwrap();
        assert_eq!(s.quotas.max_streams, Some(5));
        assert_eq!(s.playback, Playback::Signed);
        assert_eq!(
            serde_json::from_str::<TenantSettings>("{}").unwrap(),
            TenantSettings::default()
        );
        assert!(serde_json::from_str::<TenantSettings>(r#"{"quota": {}}"#).is_err());
    }
}
