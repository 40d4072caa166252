//! What every part of tidegate names the same way: stream and tenant ids and their name
//! rules, tenants' settings and stream keys (format, hash, constant-time check), signed
//! playback (signing keys, HS256 tokens), the wall clock in Unix milliseconds, and the URLs
//! of the configuration, each parsed once into a type ([`StateUrl`], [`StorageUrl`], [`SrtSource`], [`WebhookUrl`]).
//!
//! A leaf: it depends on no other tidegate crate but the SRT protocol's constants.
#![deny(missing_docs)]

/// Serde for a type with `FromStr` and `Display`: written as its string, read through its
/// parser (so a configuration file can hold it typed).
#[macro_export]
#[doc(hidden)]
macro_rules! serde_as_string {
    ($t:ty) => {
        impl ::serde::Serialize for $t {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> ::serde::Deserialize<'de> for $t {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(::serde::de::Error::custom)
            }
        }
    };
}

mod playback;
mod srt_source;
mod store_url;
mod tenant;
mod tenant_settings;
mod webhook_url;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use srt_source::{parse_srt_url, redact_url, SrtSource};
pub use store_url::{valid_bucket, SentinelUrl, StateUrl, StorageUrl};
pub use tenant::{
    valid_tenant_name, KeyHash, KeyId, KeyRecord, NoRandomness, Playback, Quotas, StreamKey,
    TenantSettings, KEY_ID_BYTES, KEY_PREFIX, KEY_SECRET_BYTES, MAX_TENANT_NAME_LEN, OPEN_TENANT,
};
pub use tenant_settings::PART_DURATION_RANGE;
pub use tenant_settings::{
    check_api_health, check_stream_settings, tenant_webhook_shape, Secret, SegmentFormat,
    TenantHealth, MAX_RECONNECT_WINDOW, MAX_SRT_LATENCY, MAX_TENANT_WEBHOOKS, REDACTED,
    SEGMENT_DURATION_RANGE,
};
// Tenant admin tokens (issue #12 item 5).
pub use tenant::{AdminToken, TokenRecord, TokenScope, TOKEN_PREFIX};
pub use tenant::{DEFAULT_OVER_BITRATE_FOR_S, MAX_OVER_BITRATE_FOR_S};
// One credential type behind stream keys and admin tokens.
pub use tenant::{AdminTokenKind, Credential, CredentialKind, StreamKeyKind};
pub use webhook_url::{check_url, WebhookUrl};
// Signed playback (issue #12): signing keys and HS256 tokens.
pub use playback::{
    base64url_decode, base64url_encode, mint_token, valid_stream_pattern, verify_token,
    PlaybackClaims, PlaybackKey, TokenDenial, MAX_PLAYBACK_KEYS, MAX_PLAYBACK_TTL_S, MAX_TOKEN_LEN,
    PLAYBACK_SECRET_BYTES, TOKEN_ALG,
};

/// Milliseconds since the Unix epoch (the wall clock used for program date time and records).
pub fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A stream's identity: the tenant and the public stream name. Both are validated path-safe
/// names (see [`StreamId::new`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StreamId {
    /// The tenant.
    pub tenant: String,
    /// The public stream name.
    pub name: String,
}

/// Longest tenant or stream name accepted.
pub const MAX_NAME_LEN: usize = 128;

impl StreamId {
    /// Builds an id from untrusted parts: each must be 1..=128 of `[A-Za-z0-9_.-]` and must not
    /// start with a dot, so it can name a directory or an object prefix safely.
    pub fn new(tenant: &str, name: &str) -> Option<Self> {
        (valid_name(tenant) && valid_name(name)).then(|| Self {
            tenant: tenant.to_owned(),
            name: name.to_owned(),
        })
    }

    /// The key prefix of this stream's objects: `TENANT/NAME`.
    pub fn prefix(&self) -> String {
        format!("{}/{}", self.tenant, self.name)
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tenant, self.name)
    }
}

/// Whether `s` is a safe tenant, stream or object file name.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}
