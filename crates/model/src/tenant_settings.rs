//! What a tenant's settings name beyond pool, quotas and playback: the types of its SRT,
//! webhook, segment and health settings ([`Secret`], [`SegmentFormat`], [`TenantHealth`]) and
//! the bounds a value must keep ([`check_stream_settings`], and [`check_api_health`] for the
//! admin API). Every setting is optional: `None` takes the server's flag (see
//! `docs/tenant-settings.md`). In JSON (the admin API, the state store) durations are
//! integers of milliseconds, named `..._ms`; the TOML file writes them as the server's flags
//! (`"200ms"`, `"10s"`).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use tidegate_health::HealthOverrides;

use crate::TenantSettings;

/// Serde of an optional duration as an optional integer of milliseconds.
pub(crate) mod opt_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

/// A tenant's health thresholds in JSON: every field optional (unset: the server's
/// `[health]`), the meanings of `[health]`'s keys, durations in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantHealth {
    /// `min-bitrate-bps` (0: the relative rule).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_bitrate_bps: Option<u64>,
    /// `relative-fraction`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relative_fraction: Option<f64>,
    /// `relative-window`.
    #[serde(
        rename = "relative_window_ms",
        with = "opt_ms",
        skip_serializing_if = "Option::is_none"
    )]
    pub relative_window: Option<Duration>,
    /// `low-bitrate-for`.
    #[serde(
        rename = "low_bitrate_for_ms",
        with = "opt_ms",
        skip_serializing_if = "Option::is_none"
    )]
    pub low_bitrate_for: Option<Duration>,
    /// `warmup`.
    #[serde(
        rename = "warmup_ms",
        with = "opt_ms",
        skip_serializing_if = "Option::is_none"
    )]
    pub warmup: Option<Duration>,
    /// `packet-window`.
    #[serde(
        rename = "packet_window_ms",
        with = "opt_ms",
        skip_serializing_if = "Option::is_none"
    )]
    pub packet_window: Option<Duration>,
    /// `max-drop-rate`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_drop_rate: Option<f64>,
    /// `max-loss-rate`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_loss_rate: Option<f64>,
    /// `max-keyframe-interval`.
    #[serde(
        rename = "max_keyframe_interval_ms",
        with = "opt_ms",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_keyframe_interval: Option<Duration>,
    /// `recover-after`.
    #[serde(
        rename = "recover_after_ms",
        with = "opt_ms",
        skip_serializing_if = "Option::is_none"
    )]
    pub recover_after: Option<Duration>,
    /// `min-dwell`.
    #[serde(
        rename = "min_dwell_ms",
        with = "opt_ms",
        skip_serializing_if = "Option::is_none"
    )]
    pub min_dwell: Option<Duration>,
}

impl From<HealthOverrides> for TenantHealth {
    fn from(o: HealthOverrides) -> Self {
        Self {
            min_bitrate_bps: o.min_bitrate_bps,
            relative_fraction: o.relative_fraction,
            relative_window: o.relative_window,
            low_bitrate_for: o.low_bitrate_for,
            warmup: o.warmup,
            packet_window: o.packet_window,
            max_drop_rate: o.max_drop_rate,
            max_loss_rate: o.max_loss_rate,
            max_keyframe_interval: o.max_keyframe_interval,
            recover_after: o.recover_after,
            min_dwell: o.min_dwell,
        }
    }
}

impl TenantHealth {
    /// The overrides the health crate lays over the server's thresholds.
    pub fn overrides(&self) -> HealthOverrides {
        HealthOverrides {
            min_bitrate_bps: self.min_bitrate_bps,
            relative_fraction: self.relative_fraction,
            relative_window: self.relative_window,
            low_bitrate_for: self.low_bitrate_for,
            warmup: self.warmup,
            packet_window: self.packet_window,
            max_drop_rate: self.max_drop_rate,
            max_loss_rate: self.max_loss_rate,
            max_keyframe_interval: self.max_keyframe_interval,
            recover_after: self.recover_after,
            min_dwell: self.min_dwell,
        }
    }
}

/// The ranges the admin API takes for each health threshold (`docs/openapi.yaml` says the
/// same): narrower than the file's where two thresholds depend on each other
/// (`low_bitrate_for_ms` up to 60 s, `relative_window_ms` from 60 s), so that any set of
/// values in range holds over the default thresholds.
pub fn check_api_health(h: &TenantHealth) -> Result<(), String> {
    let ms = |d: Option<Duration>| d.map(|d| d.as_millis());
    for (name, v, lo, hi) in [
        ("relative_window_ms", ms(h.relative_window), 60_000, 120_000),
        ("low_bitrate_for_ms", ms(h.low_bitrate_for), 1_000, 60_000),
        ("warmup_ms", ms(h.warmup), 0, 3_600_000),
        ("packet_window_ms", ms(h.packet_window), 1_000, 120_000),
        (
            "max_keyframe_interval_ms",
            ms(h.max_keyframe_interval),
            1_000,
            3_600_000,
        ),
        ("recover_after_ms", ms(h.recover_after), 1_000, 120_000),
        ("min_dwell_ms", ms(h.min_dwell), 0, 3_600_000),
    ] {
        if v.is_some_and(|v| !(lo..=hi).contains(&v)) {
            return Err(format!("health.{name} must be between {lo} and {hi}"));
        }
    }
    for (name, v) in [
        ("relative_fraction", h.relative_fraction),
        ("max_drop_rate", h.max_drop_rate),
        ("max_loss_rate", h.max_loss_rate),
    ] {
        if v.is_some_and(|v| !(0.0..=1.0).contains(&v)) {
            return Err(format!("health.{name} must be between 0 and 1"));
        }
    }
    if h.min_bitrate_bps.is_some_and(|b| b > (1 << 53) - 1) {
        return Err("health.min_bitrate_bps must be at most 2^53 - 1".into());
    }
    Ok(())
}

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
/// Shortest and longest LL-HLS part duration (the server's `--part-duration` bounds; 0 is
/// "no parts").
pub const PART_DURATION_RANGE: (Duration, Duration) =
    (Duration::from_millis(200), Duration::from_secs(1));
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
            return Err(format!(
                "{name}: `{REDACTED}` is what a secret shows, not a secret"
            ));
        }
    }
    if let Some(pass) = &s.srt_passphrase {
        // What an encoder's URL or form field carries as typed; also what the API's
        // description can count (characters are bytes then).
        if !pass.expose().bytes().all(|b| (0x20..=0x7e).contains(&b)) {
            return Err("srt_passphrase must be printable ASCII".into());
        }
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
    if s.srt_pbkeylen
        .is_some_and(|k| !matches!(k, 0 | 16 | 24 | 32))
    {
        return Err("srt_pbkeylen must be 0 (the caller's), 16, 24 or 32".into());
    }
    if s.srt_latency.is_some_and(|l| l > MAX_SRT_LATENCY) {
        return Err("srt_latency must be at most 60s".into());
    }
    if s.webhooks.len() > MAX_TENANT_WEBHOOKS {
        return Err(format!("at most {MAX_TENANT_WEBHOOKS} webhooks per tenant"));
    }
    for url in &s.webhooks {
        if !tenant_webhook_shape(url) {
            return Err(format!(
                "webhooks: `{url}` must be http(s)://HOST[:PORT][/PATH][?QUERY] with HOST a \
                 lower-case DNS name or an IPv4 address (docs/tenant-settings.md)"
            ));
        }
        crate::check_url(url).map_err(|e| format!("webhooks: {e}"))?;
    }
    if let Some(secret) = &s.webhook_secret {
        if secret.expose().chars().count() < 16 {
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
    let (lo, hi) = PART_DURATION_RANGE;
    if s.part_duration
        .is_some_and(|d| !d.is_zero() && (d < lo || d > hi))
    {
        return Err("part_duration must be between 200ms and 1s, or 0 for none".into());
    }
    if let Some(h) = &s.health {
        // The overrides over the defaults must hold on their own; over a server's own
        // `[health]` they are checked again where that is known.
        tidegate_health::HealthConfig::default()
            .merged(&h.overrides())
            .validate()
            .map_err(|e| format!("health: {e}"))?;
    }
    Ok(())
}

/// Whether `url` has the shape a tenant's webhook must have (`docs/openapi.yaml` gives the
/// same as a pattern): `http://` or `https://`; a host that is an IPv4 address (four decimal
/// octets, no leading zeros) or a lower-case DNS name (labels of `[a-z0-9]` joined by single
/// hyphens, the last one starting with a letter); a port 1–65535 without leading zeros; a
/// path of `[A-Za-z0-9._~/-]`; a query of `[A-Za-z0-9._~=&-]`. Narrower than a URL, so that
/// every URL of this shape is one the HTTP client takes.
pub fn tenant_webhook_shape(url: &str) -> bool {
    let Some(rest) = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
    else {
        return false;
    };
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    if query.is_some_and(|q| {
        !q.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._~=&-".contains(&b))
    }) {
        return false;
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if !path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._~/-".contains(&b))
    {
        return false;
    }
    let (host, port) = match authority.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (authority, None),
    };
    if let Some(p) = port {
        let ok = !p.is_empty()
            && p.len() <= 5
            && !p.starts_with('0')
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u32>().is_ok_and(|n| (1..=65535).contains(&n));
        if !ok {
            return false;
        }
    }
    let octet = |o: &str| {
        !o.is_empty()
            && o.len() <= 3
            && o.bytes().all(|b| b.is_ascii_digit())
            && (o == "0" || !o.starts_with('0'))
            && o.parse::<u16>().is_ok_and(|n| n <= 255)
    };
    let labels: Vec<&str> = host.split('.').collect();
    if labels.len() == 4 && labels.iter().all(|o| octet(o)) {
        return true;
    }
    let label = |l: &str| {
        !l.is_empty()
            && l.split('-').all(|part| {
                !part.is_empty()
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            })
    };
    labels.iter().all(|l| label(l))
        && labels
            .last()
            .and_then(|l| l.bytes().next())
            .is_some_and(|b| b.is_ascii_lowercase())
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
        assert!(
            !shown.contains("horse") && !shown.contains("-hook"),
            "{shown}"
        );
        let stored = serde_json::to_string(&s).unwrap();
        assert!(stored.contains("correct horse battery"), "{stored}");
        let back: TenantSettings = serde_json::from_str(&stored).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn settings_read_from_json_with_durations_in_milliseconds() {
        let json: TenantSettings = serde_json::from_str(
            r#"{"srt_passphrase": "0123456789", "srt_pbkeylen": 32, "srt_latency_ms": 250,
                "webhooks": ["http://127.0.0.1:9/h"], "webhook_secret": "0123456789abcdef",
                "reconnect_window_ms": 5000, "segment_format": "ts", "segment_duration_ms": 4000,
                "health": {"min_bitrate_bps": 1000000, "low_bitrate_for_ms": 3000}}"#,
        )
        .unwrap();
        assert_eq!(json.srt_latency, Some(Duration::from_millis(250)));
        assert_eq!(json.reconnect_window, Some(Duration::from_secs(5)));
        assert_eq!(json.segment_format, Some(SegmentFormat::Ts));
        assert_eq!(json.segment_duration, Some(Duration::from_secs(4)));
        let health = json.health.clone().unwrap();
        assert_eq!(health.min_bitrate_bps, Some(1_000_000));
        assert_eq!(
            health.overrides().low_bitrate_for,
            Some(Duration::from_secs(3))
        );
        check_stream_settings(&json).unwrap();
        check_api_health(&health).unwrap();
        // Written back the same way.
        let back: TenantSettings =
            serde_json::from_str(&serde_json::to_string(&json).unwrap()).unwrap();
        assert_eq!(back, json);
        // Unset: nothing written, the server's values apply.
        assert_eq!(
            serde_json::to_string(&TenantSettings::default()).unwrap(),
            r#"{"pool":null,"quotas":{"max_streams":null,"max_bitrate_bps":null,"max_total_bitrate_bps":null,"max_publish_rate":null,"over_bitrate_for_s":null,"disconnect_over_bitrate":false},"playback":"public"}"#
        );
    }

    #[test]
    fn tenant_webhooks_have_a_shape_the_http_client_always_takes() {
        for good in [
            "http://127.0.0.1:8080/hooks/acme",
            "https://hooks.acme.example/tidegate?token=abc&x=1",
            "http://a",
            "http://0.0.0.0",
            "https://x-1.b2:65535/",
            "http://1.a/a.b~c_d-e",
        ] {
            assert!(tenant_webhook_shape(good), "{good}");
            assert!(crate::check_url(good).is_ok(), "{good}");
        }
        for bad in [
            "ftp://a/",
            "http://",
            "http://A.example",
            "http://a..b",
            "http://a--b",
            "http://-a",
            "http://1.2.3",
            "http://256.1.1.1",
            "http://01.1.1.1",
            "http://a:0",
            "http://a:65536",
            "http://a:080",
            "http://a/%41",
            "http://a/?q=%",
            "http://user@a/",
            "http://[::1]/",
            "http://a/ b",
        ] {
            assert!(!tenant_webhook_shape(bad), "{bad}");
        }
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
            health: Some(TenantHealth {
                max_drop_rate: Some(7.0),
                ..Default::default()
            }),
            ..d()
        })
        .contains("health"));
        assert!(serde_json::from_str::<TenantSettings>(r#"{"segment_format": "mkv"}"#).is_err());
        assert!(serde_json::from_str::<TenantSettings>(r#"{"srt_latency_ms": "200ms"}"#).is_err());
        // The API's health ranges: any set of values in range holds together.
        let api = |h: TenantHealth| check_api_health(&h);
        assert!(api(TenantHealth {
            relative_window: Some(Duration::from_secs(30)),
            ..Default::default()
        })
        .is_err());
        assert!(api(TenantHealth {
            low_bitrate_for: Some(Duration::from_secs(61)),
            ..Default::default()
        })
        .is_err());
        let edge = TenantHealth {
            low_bitrate_for: Some(Duration::from_secs(60)),
            relative_window: Some(Duration::from_secs(60)),
            ..Default::default()
        };
        api(edge.clone()).unwrap();
        tidegate_health::HealthConfig::default()
            .merged(&edge.overrides())
            .validate()
            .unwrap();
    }
}
