//! The protocol crates' errors as the `reason` label of `tidegate_connection_errors_total`.
//!
//! The metric's label values are a closed enum in the events crate ([`Reason`]); each protocol
//! error names its own kind (`kind()`), and a test holds the two equal for every variant.

use crate::metrics::ConnectionErrorReason as Reason;

/// An error that ends a publisher's connection, as its metric label value.
pub trait ErrorReason {
    /// The `reason` label value (the same string as the error's `kind()`).
    fn reason(&self) -> Reason;
}

impl ErrorReason for tidegate_rtmp::RtmpError {
    /// As [`tidegate_rtmp::RtmpError::kind`] (a test holds the two equal).
    fn reason(&self) -> Reason {
        use tidegate_rtmp::RtmpError as E;
        match self {
            E::UnsupportedVersion(_) => Reason::Handshake,
            E::HandshakeTimeout | E::PublishTimeout => Reason::Timeout,
            E::MessageTooLarge { .. }
            | E::InvalidChunkSize(_)
            | E::TooManyChunkStreams(_)
            | E::TooMuchPending(_) => Reason::Chunk,
            E::PrePublishBuffer(_) => Reason::PrepublishBuffer,
            E::TransmitBacklog(_) => Reason::TransmitBacklog,
            E::Amf(_) => Reason::Amf,
            E::Protocol(_) => Reason::Protocol,
            E::NotPublishing => Reason::Usage,
            E::Closed => Reason::Closed,
            E::Internal(_) => Reason::Internal,
        }
    }
}

impl ErrorReason for tidegate_flv::FlvError {
    /// As [`tidegate_flv::FlvError::kind`] (a test holds the two equal).
    fn reason(&self) -> Reason {
        use tidegate_flv::FlvError as E;
        match self {
            E::Truncated { .. } | E::Malformed { .. } | E::Frame { .. } => Reason::Malformed,
            E::UnsupportedCodec(_) => Reason::UnsupportedCodec,
            E::Config { source, .. } if source.is_unsupported() => Reason::UnsupportedCodec,
            E::Config { .. } => Reason::MalformedConfig,
            E::CodecMismatch { .. } => Reason::CodecMismatch,
            E::EventQueueFull => Reason::Internal,
        }
    }
}

impl ErrorReason for tidegate_mpegts::TsError {
    /// As [`tidegate_mpegts::TsError::kind`] (a test holds the two equal).
    fn reason(&self) -> Reason {
        use tidegate_mpegts::TsError as E;
        match self {
            E::Unsupported { .. } => Reason::Unsupported,
            E::NoTracks => Reason::NoTracks,
            E::UnconfiguredTrack(_) => Reason::UnconfiguredTrack,
            E::DuplicateTrack(_) => Reason::DuplicateTrack,
            E::Timestamp { .. } => Reason::Timestamp,
            E::Codec(_) => Reason::Codec,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorReason;

    #[test]
    fn protocol_error_kinds_are_the_metric_label_values() {
        use tidegate_flv::FlvError;
        use tidegate_media::codec::CodecError;
        use tidegate_media::TrackKind;
        use tidegate_mpegts::TsError;
        use tidegate_rtmp::RtmpError;

        let rtmp = [
            RtmpError::UnsupportedVersion(6),
            RtmpError::HandshakeTimeout,
            RtmpError::MessageTooLarge { len: 1, max: 0 },
            RtmpError::InvalidChunkSize(0),
            RtmpError::TooManyChunkStreams(1),
            RtmpError::TooMuchPending(1),
            RtmpError::PrePublishBuffer(1),
            RtmpError::TransmitBacklog(1),
            RtmpError::Amf("x"),
            RtmpError::Protocol("x"),
            RtmpError::PublishTimeout,
            RtmpError::NotPublishing,
            RtmpError::Closed,
            RtmpError::Internal("x"),
        ];
        for e in &rtmp {
            assert_eq!(e.reason().as_str(), e.kind(), "{e:?}");
        }
        let codec = [
            CodecError::Truncated { what: "x" },
            CodecError::Malformed {
                what: "x",
                reason: "y",
            },
            CodecError::Unsupported { what: "x" },
            CodecError::LimitExceeded {
                what: "x",
                limit: 1,
            },
        ];
        let mut flv = vec![
            FlvError::Truncated { what: "x" },
            FlvError::Malformed {
                what: "x",
                reason: "y",
            },
            FlvError::UnsupportedCodec("vp9".into()),
            FlvError::CodecMismatch {
                track: TrackKind::Video,
            },
            FlvError::EventQueueFull,
        ];
        let mut ts = vec![
            TsError::Unsupported { what: "x" },
            TsError::NoTracks,
            TsError::UnconfiguredTrack(TrackKind::Audio),
            TsError::DuplicateTrack(TrackKind::Video),
            TsError::Timestamp { what: "x" },
        ];
        for source in codec {
            flv.push(FlvError::Config {
                track: TrackKind::Video,
                source: source.clone(),
            });
            flv.push(FlvError::Frame {
                track: TrackKind::Video,
                source: source.clone(),
            });
            ts.push(TsError::Codec(source));
        }
        for e in &flv {
            assert_eq!(e.reason().as_str(), e.kind(), "{e:?}");
        }
        for e in &ts {
            assert_eq!(e.reason().as_str(), e.kind(), "{e:?}");
        }
    }
}
