//! The crate's error type.

use tidegate_media::codec::CodecError;
use tidegate_media::TrackKind;

/// Why an FLV audio/video tag body was rejected. Every variant except
/// [`FlvError::EventQueueFull`] is the publisher's fault; the server ends the connection,
/// logs the message and counts [`FlvError::kind`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlvError {
    /// The tag body ended before a field it must contain.
    #[error("{what} is truncated")]
    Truncated {
        /// The structure being read.
        what: &'static str,
    },
    /// A field holds a value the FLV / Enhanced RTMP specification forbids.
    #[error("{what} is malformed: {reason}")]
    Malformed {
        /// The structure being read.
        what: &'static str,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A codec tidegate does not repackage (VP8/VP9, Opus, MP3, legacy Sorenson...).
    #[error("unsupported codec: {0}")]
    UnsupportedCodec(String),
    /// A sequence header whose configuration record is invalid or unsupported.
    #[error("invalid {track:?} configuration: {source}")]
    Config {
        /// The track.
        track: TrackKind,
        /// What the record parser found.
        #[source]
        source: CodecError,
    },
    /// A coded frame whose NAL/OBU framing is broken.
    #[error("invalid {track:?} frame: {source}")]
    Frame {
        /// The track.
        track: TrackKind,
        /// What the framing check found.
        #[source]
        source: CodecError,
    },
    /// A coded frame of another codec than the track's current configuration.
    #[error("{track:?} frame does not match the configured codec")]
    CodecMismatch {
        /// The track.
        track: TrackKind,
    },
    /// The caller did not drain [`crate::FlvDemuxer::poll_event`] (a driver bug).
    #[error("event queue full: poll_event was not drained")]
    EventQueueFull,
}

impl FlvError {
    /// A short, fixed label for metrics: `malformed`, `unsupported_codec`,
    /// `malformed_config`, `codec_mismatch` or `internal`.
    pub fn kind(&self) -> &'static str {
        match self {
            FlvError::Truncated { .. } | FlvError::Malformed { .. } | FlvError::Frame { .. } => {
                "malformed"
            }
            FlvError::UnsupportedCodec(_) => "unsupported_codec",
            FlvError::Config { source, .. } if source.is_unsupported() => "unsupported_codec",
            FlvError::Config { .. } => "malformed_config",
            FlvError::CodecMismatch { .. } => "codec_mismatch",
            FlvError::EventQueueFull => "internal",
        }
    }

    /// The publisher sent something valid that tidegate does not support.
    pub fn is_unsupported(&self) -> bool {
        self.kind() == "unsupported_codec"
    }

    /// The publisher caused this error (everything but [`FlvError::EventQueueFull`]).
    pub fn is_publisher_fault(&self) -> bool {
        !matches!(self, FlvError::EventQueueFull)
    }
}
