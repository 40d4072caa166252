//! The crate's one error type.

/// Everything that can go wrong in an RTMP session, server or client.
///
/// Every variant except [`RtmpError::Closed`], [`RtmpError::NotPublishing`] and
/// [`RtmpError::Internal`] is caused by the peer (see [`RtmpError::is_peer_error`]); the
/// driver should close the connection on any peer error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RtmpError {
    /// C0 named an RTMP version other than 3.
    #[error("unsupported RTMP version byte {0:#04x}")]
    UnsupportedVersion(u8),
    /// The handshake did not complete within the configured timeout.
    #[error("handshake timed out")]
    HandshakeTimeout,
    /// A message header announced a message larger than the limit.
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    MessageTooLarge {
        /// Announced message length.
        len: u32,
        /// The limit in force.
        max: u32,
    },
    /// The peer asked for a chunk size of zero, with the high bit set, or above the limit.
    #[error("invalid chunk size {0}")]
    InvalidChunkSize(u32),
    /// The peer used more chunk stream ids than the limit allows.
    #[error("too many chunk streams (limit {0})")]
    TooManyChunkStreams(usize),
    /// Messages being reassembled would hold more bytes than the limit allows.
    #[error("pending reassembly exceeds {0} bytes")]
    TooMuchPending(usize),
    /// A connection that has no publish pending or accepted held (or announced) more
    /// unfinished-message bytes than the session's before-publish limit: it costs at most a
    /// few tens of KB until it is a publisher.
    #[error("more than {0} bytes of unfinished messages before publishing")]
    PrePublishBuffer(usize),
    /// The replies waiting for the driver to write them passed the session's bound: the
    /// driver is not writing (a peer that stopped reading) or the peer provokes replies
    /// faster than it reads them.
    #[error("more than {0} bytes of replies waiting to be sent")]
    TransmitBacklog(usize),
    /// An AMF0 value could not be decoded.
    #[error("AMF decode error: {0}")]
    Amf(&'static str),
    /// The peer broke the RTMP command protocol.
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// Client: the server did not let us publish (nor refuse) within the configured
    /// timeout after the handshake.
    #[error("publish timed out")]
    PublishTimeout,
    /// Client: media or metadata handed in before `NetStream.Publish.Start` or after
    /// unpublishing (a driver error; the session stays usable).
    #[error("not publishing")]
    NotPublishing,
    /// The session already failed; it accepts no more input.
    #[error("session is closed")]
    Closed,
    /// A bug: an invariant of this crate did not hold. Debug builds (tests, fuzzing) panic
    /// instead; release builds close the connection with this error.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl RtmpError {
    /// Whether the peer caused this error (bad bytes, slowness), as opposed to the driver
    /// misusing the session.
    pub fn is_peer_error(&self) -> bool {
        !matches!(
            self,
            RtmpError::Closed | RtmpError::NotPublishing | RtmpError::Internal(_)
        )
    }

    /// A broken invariant: panics in debug builds, so that tests and fuzzing find it;
    /// [`RtmpError::Internal`] in release builds, which ends the connection, not the process.
    pub(crate) fn internal(what: &'static str) -> RtmpError {
        debug_assert!(false, "tidegate-rtmp invariant broken: {what}");
        RtmpError::Internal(what)
    }

    /// A short, bounded label for metrics: `handshake`, `timeout`, `chunk`,
    /// `prepublish_buffer`, `transmit_backlog`, `amf`, `protocol`, `usage`, `closed` or
    /// `internal`.
    pub fn kind(&self) -> &'static str {
        match self {
            RtmpError::UnsupportedVersion(_) => "handshake",
            RtmpError::HandshakeTimeout | RtmpError::PublishTimeout => "timeout",
            RtmpError::MessageTooLarge { .. }
            | RtmpError::InvalidChunkSize(_)
            | RtmpError::TooManyChunkStreams(_)
            | RtmpError::TooMuchPending(_) => "chunk",
            RtmpError::PrePublishBuffer(_) => "prepublish_buffer",
            RtmpError::TransmitBacklog(_) => "transmit_backlog",
            RtmpError::Amf(_) => "amf",
            RtmpError::Protocol(_) => "protocol",
            RtmpError::NotPublishing => "usage",
            RtmpError::Closed => "closed",
            RtmpError::Internal(_) => "internal",
        }
    }
}
