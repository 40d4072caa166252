//! The crate's one error type.

/// Why a segment could not be written. Every variant describes input the writer cannot
/// represent (a bad configuration record or timestamps out of range); none is an internal
/// fault, and none leaves partial output behind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fmp4Error {
    /// `init_segment` was given neither a video nor an audio configuration.
    #[error("an init segment needs at least one track")]
    NoTracks,
    /// `media_segment` got an audio run but no audio configuration (its timescale).
    #[error("an audio run needs the audio configuration")]
    MissingAudioConfig,
    /// Two runs of one `media_segment` call name the same track.
    #[error("two runs for the {0:?} track")]
    DuplicateTrack(tidegate_media::TrackKind),
    /// A timestamp cannot be expressed: negative decode time, decode times going backwards,
    /// a sample duration or composition offset beyond its field.
    #[error("timestamp out of range: {what}")]
    Timestamp {
        /// Which field or rule.
        what: &'static str,
    },
    /// A configuration value does not fit its box field.
    #[error("configuration not representable: {what}")]
    Config {
        /// Which value.
        what: &'static str,
    },
    /// The segment exceeds one of the named limits of this crate.
    #[error("{what} exceeds the limit of {limit}")]
    LimitExceeded {
        /// What was counted.
        what: &'static str,
        /// The limit.
        limit: u64,
    },
}

impl Fmp4Error {
    /// A short, fixed label for metrics: `no_tracks`, `missing_config`, `duplicate_track`,
    /// `timestamp`, `config`, `limit`.
    pub fn kind(&self) -> &'static str {
        match self {
            Fmp4Error::NoTracks => "no_tracks",
            Fmp4Error::MissingAudioConfig => "missing_config",
            Fmp4Error::DuplicateTrack(_) => "duplicate_track",
            Fmp4Error::Timestamp { .. } => "timestamp",
            Fmp4Error::Config { .. } => "config",
            Fmp4Error::LimitExceeded { .. } => "limit",
        }
    }

    /// The error comes from the publisher's media (configuration or timestamps) rather than
    /// from the caller's use of the API (no tracks, duplicate or unconfigured runs).
    pub fn is_from_media(&self) -> bool {
        matches!(
            self,
            Fmp4Error::Timestamp { .. }
                | Fmp4Error::Config { .. }
                | Fmp4Error::LimitExceeded { .. }
        )
    }
}
