//! Ingest protocols: each turns a connection into media events for a stream: RTMP
//! ([`rtmp`]), the SRT listener ([`srt`], one `Router` task per socket) and SRT pull
//! ([`srt_pull`]), under the caps of [`limits`]; RTMPS ([`rtmps`]) is RTMP's driver over
//! TLS.
#![deny(missing_docs)]

pub mod limits;
pub mod reason;
pub mod rtmp;
pub mod rtmps;
pub mod srt;
pub mod srt_pull;

use std::sync::Arc;

use tidegate_config::IngestConfig;
use tidegate_events::metrics::Metrics;
use tidegate_events::webhooks::OnPublish;
use tidegate_events::{metrics, telemetry, webhooks};
use tidegate_registry::stream;
use tidegate_registry::stream::Streams;
use tidegate_store as store;

/// What the ingest tasks share (the server builds it).
pub struct Context {
    /// The ingest section of the configuration.
    pub config: IngestConfig,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The stream registry.
    pub streams: Arc<Streams>,
    /// Which stream a key publishes (open mode: any key `K` is stream `K` of `default`).
    pub tenants: Arc<tidegate_registry::tenants::Tenants>,
    /// The on-publish authorisation callback, when configured.
    pub on_publish: Option<OnPublish>,
    /// Caps on ingest connections, publishers and buffered bytes (RTMP and SRT share them;
    /// the connections also keep out of the descriptor reserve).
    pub ingest_limits: Arc<limits::IngestLimits>,
}

/// What a log line may say about a stream key: at most its first four characters (fewer for
/// a short key, never more than half of it; anything outside `[A-Za-z0-9._-]` shown as `?`)
/// and the first 8 hex digits of its SHA-256, e.g. `came…5b1e8f0c`. An operator can match a
/// refusal to a key (`printf %s KEY | sha256sum`) without the log giving the key away.
pub fn key_hint(key: &str) -> String {
    use sha2::{Digest, Sha256};
    if key.is_empty() {
        return "(empty)".into();
    }
    let shown = (key.chars().count() / 2).min(4);
    let prefix: String = key
        .chars()
        .take(shown)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '?'
            }
        })
        .collect();
    let digest = Sha256::digest(key.as_bytes());
    let hash: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!("{prefix}…{hash}")
}

/// [`key_hint`] computed only when it is written: a refusal's log line may be suppressed,
/// and a wrong key should cost no more than the one hash of its check.
#[derive(Debug, Clone, Copy)]
pub struct KeyHint<'a>(pub &'a str);

impl std::fmt::Display for KeyHint<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&key_hint(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::key_hint;

    #[test]
    fn a_key_hint_shows_a_short_prefix_and_a_hash_never_the_key() {
        // printf %s camera-1 | sha256sum → 6bf6f341...
        let hint = key_hint("camera-1");
        assert_eq!(hint, "came…6bf6f341");
        assert_ne!(key_hint("camera-2"), hint);
        assert!(key_hint("abc").starts_with("a…"));
        assert!(!key_hint("ab").contains("ab"));
        assert_eq!(key_hint(""), "(empty)");
        // Control characters and the like never reach the log.
        let odd = key_hint("a\nb\u{1b}[31m");
        assert!(odd.starts_with("a?b?…"), "{odd}");
    }

    #[test]
    fn a_lazy_key_hint_writes_the_same_hint() {
        assert_eq!(super::KeyHint("camera-1").to_string(), key_hint("camera-1"));
    }
}
