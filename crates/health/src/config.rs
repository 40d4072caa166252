//! Health thresholds: server defaults, per-tenant overrides, validation.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::HealthError;

/// Longest window (relative-average window, packet window, low-bitrate and recovery durations)
/// the per-second ring can answer for, in seconds. The ring holds a few more seconds than this
/// (see `RING_SECONDS` in the ring module) so that a full window of *complete* seconds is
/// always available. 120 s keeps one stream's ring at about 4 KiB.
pub const MAX_WINDOW_SECS: u64 = 120;

/// Health thresholds for one stream.
///
/// The server has one of these as its defaults; a tenant may override any field with
/// [`HealthOverrides`] ([`HealthConfig::merged`]). Durations are written the humantime way
/// (`"5s"`, `"1m"`, `"500ms"`). Call [`HealthConfig::validate`] after parsing; a
/// [`StreamHealth`](crate::StreamHealth) built from an unvalidated config clamps out-of-range
/// values instead of failing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct HealthConfig {
    /// Absolute incoming-bitrate threshold in bits per second. When set (and non-zero), a
    /// connected stream whose per-second bitrate stays below it for `low-bitrate-for` turns
    /// `warning`. When absent or 0, the relative rule applies instead: below
    /// `relative-fraction` of the stream's own average over `relative-window`.
    pub min_bitrate_bps: Option<u64>,
    /// Relative rule: the fraction of the stream's own average bitrate below which a second
    /// counts as "low" (default 0.25, a quarter). Between 0 and 1.
    pub relative_fraction: f64,
    /// Relative rule: the window the stream's own average bitrate is taken over (default 60 s,
    /// at most 120 s). Only seconds of the current connection count.
    #[serde(with = "humantime_serde")]
    pub relative_window: Duration,
    /// How long the bitrate must stay below the threshold, every second, before the stream
    /// turns `warning` (default 5 s).
    #[serde(with = "humantime_serde")]
    pub low_bitrate_for: Duration,
    /// The low-bitrate rule (both modes) is only evaluated once the publisher has been
    /// connected this long (default 10 s): a fresh connection has no average yet and an encoder
    /// may take a few seconds to start sending.
    #[serde(with = "humantime_serde")]
    pub warmup: Duration,
    /// The window packet drop and loss rates are taken over (default 10 s, at most 120 s).
    #[serde(with = "humantime_serde")]
    pub packet_window: Duration,
    /// Highest tolerated packet drop rate (SRT: packets dropped because they arrived too late
    /// or never arrived in time), as a fraction of the packets that should have been
    /// delivered in `packet-window` (default 0.02, 2 %).
    pub max_drop_rate: f64,
    /// Highest tolerated packet loss rate (SRT: packets detected lost, whether or not a
    /// retransmission recovered them), as a fraction of received + lost packets in
    /// `packet-window` (default 0.10, 10 %).
    pub max_loss_rate: f64,
    /// Longest tolerated time without a video keyframe on a stream that carries video
    /// (default 10 s). Audio-only streams are never flagged.
    #[serde(with = "humantime_serde")]
    pub max_keyframe_interval: Duration,
    /// Hysteresis: a warning reason clears only after its condition has been false this long
    /// (default 5 s, at most 120 s).
    #[serde(with = "humantime_serde")]
    pub recover_after: Duration,
    /// Anti-flap dwell: after a `healthy` ⇄ `warning` change, the next such change waits
    /// until the current status has lasted this long (default 10 s). Lifecycle changes
    /// (`reconnecting`, `offline`, reconnect) are facts and never wait.
    #[serde(with = "humantime_serde")]
    pub min_dwell: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            min_bitrate_bps: None,
            relative_fraction: 0.25,
            relative_window: Duration::from_secs(60),
            low_bitrate_for: Duration::from_secs(5),
            warmup: Duration::from_secs(10),
            packet_window: Duration::from_secs(10),
            max_drop_rate: 0.02,
            max_loss_rate: 0.10,
            max_keyframe_interval: Duration::from_secs(10),
            recover_after: Duration::from_secs(5),
            min_dwell: Duration::from_secs(10),
        }
    }
}

/// A tenant's health thresholds: every field optional, merged over the server's
/// [`HealthConfig`] with [`HealthConfig::merged`]. Field meanings are those of
/// [`HealthConfig`]; `min-bitrate-bps = 0` selects the relative rule even where the server
/// default is absolute.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct HealthOverrides {
    /// See [`HealthConfig::min_bitrate_bps`]; 0 means "use the relative rule".
    pub min_bitrate_bps: Option<u64>,
    /// See [`HealthConfig::relative_fraction`].
    pub relative_fraction: Option<f64>,
    /// See [`HealthConfig::relative_window`].
    #[serde(with = "humantime_serde")]
    pub relative_window: Option<Duration>,
    /// See [`HealthConfig::low_bitrate_for`].
    #[serde(with = "humantime_serde")]
    pub low_bitrate_for: Option<Duration>,
    /// See [`HealthConfig::warmup`].
    #[serde(with = "humantime_serde")]
    pub warmup: Option<Duration>,
    /// See [`HealthConfig::packet_window`].
    #[serde(with = "humantime_serde")]
    pub packet_window: Option<Duration>,
    /// See [`HealthConfig::max_drop_rate`].
    pub max_drop_rate: Option<f64>,
    /// See [`HealthConfig::max_loss_rate`].
    pub max_loss_rate: Option<f64>,
    /// See [`HealthConfig::max_keyframe_interval`].
    #[serde(with = "humantime_serde")]
    pub max_keyframe_interval: Option<Duration>,
    /// See [`HealthConfig::recover_after`].
    #[serde(with = "humantime_serde")]
    pub recover_after: Option<Duration>,
    /// See [`HealthConfig::min_dwell`].
    #[serde(with = "humantime_serde")]
    pub min_dwell: Option<Duration>,
}

impl HealthConfig {
    /// This config (the server's defaults) with a tenant's overrides applied.
    pub fn merged(&self, o: &HealthOverrides) -> HealthConfig {
        HealthConfig {
            min_bitrate_bps: match o.min_bitrate_bps {
                Some(0) => None,
                Some(v) => Some(v),
                None => self.min_bitrate_bps,
            },
            relative_fraction: o.relative_fraction.unwrap_or(self.relative_fraction),
            relative_window: o.relative_window.unwrap_or(self.relative_window),
            low_bitrate_for: o.low_bitrate_for.unwrap_or(self.low_bitrate_for),
            warmup: o.warmup.unwrap_or(self.warmup),
            packet_window: o.packet_window.unwrap_or(self.packet_window),
            max_drop_rate: o.max_drop_rate.unwrap_or(self.max_drop_rate),
            max_loss_rate: o.max_loss_rate.unwrap_or(self.max_loss_rate),
            max_keyframe_interval: o
                .max_keyframe_interval
                .unwrap_or(self.max_keyframe_interval),
            recover_after: o.recover_after.unwrap_or(self.recover_after),
            min_dwell: o.min_dwell.unwrap_or(self.min_dwell),
        }
    }

    /// Checks every field is in range. Run it on the server defaults and on every merged
    /// tenant config when configuration is loaded.
    pub fn validate(&self) -> Result<(), HealthError> {
        let bad = |field: &'static str, reason: &'static str| {
            Err(HealthError::InvalidConfig { field, reason })
        };
        let max_window = Duration::from_secs(MAX_WINDOW_SECS);
        for (field, v) in [
            ("relative-fraction", self.relative_fraction),
            ("max-drop-rate", self.max_drop_rate),
            ("max-loss-rate", self.max_loss_rate),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return bad(field, "must be a fraction between 0 and 1");
            }
        }
        for (field, v) in [
            ("relative-window", self.relative_window),
            ("packet-window", self.packet_window),
            ("low-bitrate-for", self.low_bitrate_for),
            ("recover-after", self.recover_after),
        ] {
            if v < Duration::from_secs(1) || v > max_window {
                return bad(field, "must be between 1s and 120s");
            }
        }
        if self.low_bitrate_for > self.relative_window {
            return bad("low-bitrate-for", "must not exceed relative-window");
        }
        if self.max_keyframe_interval < Duration::from_secs(1) {
            return bad("max-keyframe-interval", "must be at least 1s");
        }
        if self.warmup > Duration::from_secs(3600) {
            return bad("warmup", "must be at most 1h");
        }
        if self.min_dwell > Duration::from_secs(3600) {
            return bad("min-dwell", "must be at most 1h");
        }
        Ok(())
    }
}

/// Milliseconds in a duration, saturating.
pub(crate) fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Whole seconds in a duration rounded up, clamped to `1..=MAX_WINDOW_SECS`.
pub(crate) fn window_secs(d: Duration) -> u64 {
    let s = ms(d).div_ceil(1000);
    s.clamp(1, MAX_WINDOW_SECS)
}

/// A fraction clamped to `0..=1` (NaN becomes 0).
pub(crate) fn fraction(f: f64) -> f64 {
    if f.is_nan() {
        0.0
    } else {
        f.clamp(0.0, 1.0)
    }
}
