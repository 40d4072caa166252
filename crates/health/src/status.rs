//! The data the API, webhooks and metrics see: status, reasons, events, counters.

use serde::{Deserialize, Serialize};

/// A stream's health status. Serialized lowercase: `"healthy"`, `"warning"`,
/// `"reconnecting"`, `"offline"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// A publisher is connected and no warning reason holds.
    Healthy,
    /// A publisher is connected and at least one [`Reason`] holds.
    Warning,
    /// The publisher is gone; the stream waits for it within the reconnect window.
    Reconnecting,
    /// No publisher: never connected, or the reconnect window ran out (stream ended).
    Offline,
}

impl Status {
    /// The serialized name, also usable as a bounded metrics label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Healthy => "healthy",
            Status::Warning => "warning",
            Status::Reconnecting => "reconnecting",
            Status::Offline => "offline",
        }
    }

    /// Whether a publisher is connected (`healthy` or `warning`).
    pub fn is_live(self) -> bool {
        matches!(self, Status::Healthy | Status::Warning)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a stream is in `warning`. Serialized with its [`code`](Reason::code) as the `"code"`
/// tag, e.g. `{"code":"low_bitrate","bps":0,"threshold_bps":750000}`. The values are those of
/// the last evaluation at which the reason's condition held.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum Reason {
    /// Incoming bitrate below the threshold, every second, for `low-bitrate-for`.
    LowBitrate {
        /// Bitrate of the last complete second, bits per second.
        bps: u64,
        /// The threshold it fell below (absolute, or the relative one fixed when the reason
        /// was raised), bits per second.
        threshold_bps: u64,
    },
    /// Packet drop rate over the packet window above `max-drop-rate`.
    HighDropRate {
        /// Dropped / (received + dropped) over the packet window.
        rate: f64,
        /// The configured maximum.
        threshold: f64,
    },
    /// Packet loss rate over the packet window above `max-loss-rate`.
    HighLossRate {
        /// Lost / (received + lost) over the packet window.
        rate: f64,
        /// The configured maximum.
        threshold: f64,
    },
    /// No video keyframe for longer than `max-keyframe-interval`.
    NoKeyframe {
        /// Milliseconds since the last keyframe (or since video was announced).
        for_ms: u64,
    },
    /// The publisher's timestamps jumped or drifted (reported by the ingest session).
    TimestampJump,
    /// Another publisher tried to publish the same stream key.
    CompetingPublishers,
    /// The stream declares or carries a video track that cannot be decoded: no decoder
    /// configuration (H.264/HEVC parameter sets, an FLV sequence header) arrived within
    /// `max-keyframe-interval` of the track being declared or its first frame, so every
    /// video frame is dropped and the playlist is audio-only.
    NoVideo {
        /// Milliseconds since the video track was declared or its first frame arrived.
        for_ms: u64,
    },
    /// The stream's bitrate (over the last [`BITRATE_WINDOW_SECS`](crate::BITRATE_WINDOW_SECS)
    /// seconds) stayed above its tenant's per-stream cap (`max_bitrate_bps`) for the
    /// tenant's `over_bitrate_for_s` (see [`StreamHealth::set_bitrate_cap`](crate::StreamHealth::set_bitrate_cap)).
    OverBitrateQuota {
        /// The bitrate measured at the last evaluation above the cap, bits per second.
        bps: u64,
        /// The cap, bits per second.
        max_bps: u64,
    },
}

impl Reason {
    /// A short, stable code for metrics labels and logs (`"low_bitrate"`, `"high_drop_rate"`,
    /// `"high_loss_rate"`, `"no_keyframe"`, `"timestamp_jump"`, `"competing_publishers"`,
    /// `"no_video"`, `"over_bitrate_quota"`).
    pub fn code(&self) -> &'static str {
        match self {
            Reason::LowBitrate { .. } => "low_bitrate",
            Reason::HighDropRate { .. } => "high_drop_rate",
            Reason::HighLossRate { .. } => "high_loss_rate",
            Reason::NoKeyframe { .. } => "no_keyframe",
            Reason::TimestampJump => "timestamp_jump",
            Reason::CompetingPublishers => "competing_publishers",
            Reason::NoVideo { .. } => "no_video",
            Reason::OverBitrateQuota { .. } => "over_bitrate_quota",
        }
    }

    /// Position in the fixed reporting order (of [`REASON_CODES`]).
    pub(crate) fn index(&self) -> usize {
        match self {
            Reason::LowBitrate { .. } => 0,
            Reason::HighDropRate { .. } => 1,
            Reason::HighLossRate { .. } => 2,
            Reason::NoKeyframe { .. } => 3,
            Reason::TimestampJump => 4,
            Reason::CompetingPublishers => 5,
            Reason::NoVideo { .. } => 6,
            Reason::OverBitrateQuota { .. } => 7,
        }
    }
}

/// Every reason code, in reporting order: the complete (bounded) label set for metrics.
pub const REASON_CODES: [&str; 8] = [
    "low_bitrate",
    "high_drop_rate",
    "high_loss_rate",
    "no_keyframe",
    "timestamp_jump",
    "competing_publishers",
    "no_video",
    "over_bitrate_quota",
];

/// Something the server forwards to webhooks, metrics, logs and the dashboard.
/// `at_ms` is the driver's millisecond clock (the `now_ms` it passed in); the server maps it
/// to wall-clock time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum HealthEvent {
    /// The status changed.
    StatusChanged {
        /// The previous status.
        from: Status,
        /// The new status.
        to: Status,
        /// The reasons holding when the change happened (non-empty exactly when `to` is
        /// `warning`).
        reasons: Vec<Reason>,
        /// When, on the driver's clock (ms).
        at_ms: u64,
    },
    /// The set of reasons changed while the status stayed `warning`.
    ReasonsChanged {
        /// The status (always `warning`).
        status: Status,
        /// The reasons now holding.
        reasons: Vec<Reason>,
        /// When, on the driver's clock (ms).
        at_ms: u64,
    },
}

impl HealthEvent {
    /// When the event happened, on the driver's clock (ms).
    pub fn at_ms(&self) -> u64 {
        match self {
            HealthEvent::StatusChanged { at_ms, .. }
            | HealthEvent::ReasonsChanged { at_ms, .. } => *at_ms,
        }
    }
}

/// Cumulative packet counters of the stream (all connections), for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PacketTotals {
    /// Packets received.
    pub received: u64,
    /// Packets detected lost (recovered or not).
    pub lost: u64,
    /// Packets dropped (too late / never arrived).
    pub dropped: u64,
    /// Retransmitted packets received.
    pub retransmitted: u64,
}
