//! The crate's one error type.

use tidegate_media::codec::CodecError;
use tidegate_media::TrackKind;

/// Why a muxer could not be created or a segment not written. No variant is an internal
/// fault; a failed `segment` call leaves the continuity counters untouched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TsError {
    /// The configuration uses something MPEG-TS segments for HLS cannot carry here (AV1,
    /// AAC that ADTS cannot describe, an invalid NAL length size).
    #[error("unsupported in MPEG-TS: {what}")]
    Unsupported {
        /// The feature.
        what: &'static str,
    },
    /// The muxer was created with neither a video nor an audio configuration.
    #[error("an MPEG-TS muxer needs at least one track")]
    NoTracks,
    /// A run carries frames of a track the muxer was not configured with.
    #[error("frames for the unconfigured {0:?} track")]
    UnconfiguredTrack(TrackKind),
    /// Two runs of one `segment` call name the same track.
    #[error("two runs for the {0:?} track")]
    DuplicateTrack(TrackKind),
    /// Decode times going backwards within a run, or a timestamp beyond 64-bit arithmetic.
    #[error("timestamp out of range: {what}")]
    Timestamp {
        /// Which rule.
        what: &'static str,
    },
    /// A frame or configuration record is malformed (e.g. a NAL length prefix runs past
    /// the end of the frame).
    #[error(transparent)]
    Codec(#[from] CodecError),
}

impl TsError {
    /// A short, fixed label for metrics: `unsupported`, `no_tracks`, `unconfigured_track`,
    /// `duplicate_track`, `timestamp`, `codec`.
    pub fn kind(&self) -> &'static str {
        match self {
            TsError::Unsupported { .. } => "unsupported",
            TsError::NoTracks => "no_tracks",
            TsError::UnconfiguredTrack(_) => "unconfigured_track",
            TsError::DuplicateTrack(_) => "duplicate_track",
            TsError::Timestamp { .. } => "timestamp",
            TsError::Codec(_) => "codec",
        }
    }

    /// The error comes from the publisher's media (codec choice, bitstream, timestamps)
    /// rather than from the caller's use of the API.
    pub fn is_from_media(&self) -> bool {
        matches!(
            self,
            TsError::Unsupported { .. } | TsError::Timestamp { .. } | TsError::Codec(_)
        )
    }
}
