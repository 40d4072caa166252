//! What a tenant's settings name beyond pool, quotas and playback: the types of its SRT,
//! webhook and segment settings ([`Secret`], [`SegmentFormat`]) and the bounds a value must
//! keep ([`check_stream_settings`]). Every setting is optional: `None` takes the server's
//! flag (see `docs/tenant-settings.md`).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::TenantSettings;

/// What a secret shows instead of itself in an answer or a printed configuration. A PATCH
/// that sends it back keeps the stored secret.
pub const REDACTED: &str = "<redacted>";

/// A secret setting (an SRT passphrase, a webhook secret): stored as written, never shown.
/// Its `Debug` and `Display` print [`REDACTED`]; [`Secret::expose`] is the one way to read it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// A secret holding `s`.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret itself: for the handshake or the signature that needs it, nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// HLS segment container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SegmentFormat {
    /// CMAF fragmented MP4 (`init.mp4` + `.m4s`).
    #[default]
    Fmp4,
    /// MPEG-TS (`.ts`).
    Ts,
}

impl std::str::FromStr for SegmentFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fmp4" | "cmaf" => Ok(Self::Fmp4),
            "ts" | "mpegts" => Ok(Self::Ts),
            other => Err(format!("unknown segment format `{other}` (fmp4 or ts)")),
        }
    }
}

/// Shortest and longest target segment duration (the server's `--segment-duration` bounds).
pub const SEGMENT_DURATION_RANGE: (Duration, Duration) =
    (Duration::from_millis(500), Duration::from_secs(30));
/// Longest reconnect window (the server's `--reconnect-window` bound).
pub const MAX_RECONNECT_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// Longest SRT latency: the handshake carries it in 16 bits of milliseconds.
pub const MAX_SRT_LATENCY: Duration = Duration::from_secs(60);
/// Most webhook URLs of one tenant.
pub const MAX_TENANT_WEBHOOKS: usize = 8;

/// Checks the SRT, webhook and segment settings of `s` (ranges and formats; whether its
/// webhooks have a secret depends on the server and is checked where that is known).
pub fn check_stream_settings(s: &TenantSettings) -> Result<(), String> {
    for (name, secret) in [
        ("srt_passphrase", &s.srt_passphrase),
        ("webhook_secret", &s.webhook_secret),
    ] {
        if secret.as_ref().is_some_and(|p| p.expose() == REDACTED) {
            return Err(format!("{name}: `{REDACTED}` is what a secret shows, not a secret"));
        }
    }
    if let Some(pass) = &s.srt_passphrase {
        let len = pass.expose().len();
        if !(tidegate_srt::crypto::MIN_PASSPHRASE_LEN..=tidegate_srt::crypto::MAX_PASSPHRASE_LEN)
            .contains(&len)
        {
            return Err(format!(
                "srt_passphrase must be {} to {} characters (SRT rule)",
                tidegate_srt::crypto::MIN_PASSPHRASE_LEN,
                tidegate_srt::crypto::MAX_PASSPHRASE_LEN
            ));
        }
    }
    if s.srt_pbkeylen.is_some_and(|k| !matches!(k, 0 | 16 | 24 | 32)) {
        return Err("srt_pbkeylen must be 0 (the caller's), 16, 24 or 32".into());
    }
    if s.srt_latency.is_some_and(|l| l > MAX_SRT_LATENCY) {
        return Err("srt_latency must be at most 60s".into());
    }
    if s.webhooks.len() > MAX_TENANT_WEBHOOKS {
        return Err(format!(
            "at most {MAX_TENANT_WEBHOOKS} webhooks per tenant"
        ));
    }
    for url in &s.webhooks {
        crate::check_url(url).map_err(|e| format!("webhooks: {e}"))?;
    }
    if let Some(secret) = &s.webhook_secret {
        if secret.expose().len() < 16 {
            return Err("webhook_secret must be at least 16 characters".into());
        }
    }
    if s.reconnect_window.is_some_and(|w| w > MAX_RECONNECT_WINDOW) {
        return Err("reconnect_window must be at most 24h".into());
    }
    let (lo, hi) = SEGMENT_DURATION_RANGE;
    if s.segment_duration.is_some_and(|d| d < lo || d > hi) {
        return Err("segment_duration must be between 500ms and 30s".into());
    }
    if let Some(h) = &s.health {
        // The overrides over the defaults must hold on their own; over a server's own
        // `[health]` they are checked again where that is known.
        tidegate_health::HealthConfig::default()
            .merged(h)
            .validate()
            .map_err(|e| format!("health: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show_in_debug_or_display_but_are_stored() {
        let s = TenantSettings {
            srt_passphrase: Some(Secret::new("correct horse battery")),
            webhook_secret: Some(Secret::new("0123456789abcdef-hook")),
            ..TenantSettings::default()
        };
        let shown = format!("{s:?} {}", Secret::new("correct horse battery"));
        assert!(!shown.contains("horse") && !shown.contains("-hook"), "{shown}");
        let stored = serde_json::to_string(&s).unwrap();
        assert!(stored.contains("correct horse battery"), "{stored}");
        let back: TenantSettings = serde_json::from_str(&stored).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn settings_read_from_json_and_from_the_files_kebab_keys() {
        let json: TenantSettings = serde_json::from_str(
            r#"{"srt_passphrase": "0123456789", "srt_pbkeylen": 32, "srt_latency": "250ms",
                "webhooks": ["http://127.0.0.1:9/h"], "webhook_secret": "0123456789abcdef",
                "reconnect_window": "5s", "segment_format": "ts", "segment_duration": "4s",
                "health": {"min-bitrate-bps": 1000000, "low-bitrate-for": "3s"}}"#,
        )
        .unwrap();
        assert_eq!(json.srt_latency, Some(Duration::from_millis(250)));
        assert_eq!(json.reconnect_window, Some(Duration::from_secs(5)));
        assert_eq!(json.segment_format, Some(SegmentFormat::Ts));
        assert_eq!(json.segment_duration, Some(Duration::from_secs(4)));
        assert_eq!(
            json.health.as_ref().and_then(|h| h.min_bitrate_bps),
            Some(1_000_000)
        );
        check_stream_settings(&json).unwrap();
        let kebab: TenantSettings = serde_json::from_str(
            r#"{"srt-passphrase": "0123456789", "srt-pbkeylen": 32, "srt-latency": "250ms",
                "webhooks": ["http://127.0.0.1:9/h"], "webhook-secret": "0123456789abcdef",
                "reconnect-window": "5s", "segment-format": "ts", "segment-duration": "4s",
                "health": {"min-bitrate-bps": 1000000, "low-bitrate-for": "3s"}}"#,
        )
        .unwrap();
        assert_eq!(kebab, json);
        // Unset: nothing written, the server's values apply.
        assert_eq!(
            serde_json::to_string(&TenantSettings::default()).unwrap(),
            r#"{"pool":null,"quotas":{"max_streams":null,"max_bitrate_bps":null},"playback":"public"}"#
        );
    }

    #[test]
    fn out_of_range_settings_are_refused() {
        let bad = |s: TenantSettings| check_stream_settings(&s).unwrap_err();
        let d = TenantSettings::default;
        assert!(bad(TenantSettings {
            srt_passphrase: Some(Secret::new("short")),
            ..d()
        })
        .contains("10 to 79"));
        assert!(bad(TenantSettings {
            srt_passphrase: Some(Secret::new(REDACTED)),
            ..d()
        })
        .contains("not a secret"));
        assert!(bad(TenantSettings {
            srt_pbkeylen: Some(20),
            ..d()
        })
        .contains("16, 24 or 32"));
        assert!(bad(TenantSettings {
            srt_latency: Some(Duration::from_secs(61)),
            ..d()
        })
        .contains("60s"));
        assert!(bad(TenantSettings {
            webhooks: vec!["ftp://x/".into()],
            ..d()
        })
        .contains("http"));
        assert!(bad(TenantSettings {
            webhook_secret: Some(Secret::new("short")),
            ..d()
        })
        .contains("16"));
        assert!(bad(TenantSettings {
            reconnect_window: Some(Duration::from_secs(25 * 3600)),
            ..d()
        })
        .contains("24h"));
        assert!(bad(TenantSettings {
            segment_duration: Some(Duration::from_millis(100)),
            ..d()
        })
        .contains("500ms"));
        assert!(bad(TenantSettings {
            health: Some(tidegate_health::HealthOverrides {
                max_drop_rate: Some(7.0),
                ..Default::default()
            }),
            ..d()
        })
        .contains("health"));
        assert!(serde_json::from_str::<TenantSettings>(r#"{"segment_format": "mkv"}"#).is_err());
        assert!(serde_json::from_str::<TenantSettings>(r#"{"srt_latency": 200}"#).is_err());
    }
}
