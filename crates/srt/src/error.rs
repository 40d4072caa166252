//! The crate's one error type.

use crate::handshake::RejectReason;

/// Everything that can go wrong in this crate.
///
/// Parse errors ([`Error::Truncated`], [`Error::Malformed`]) are caused by the peer (or by
/// whoever can send a datagram to the socket): the driver drops the datagram, logs at debug
/// level and carries on. Nothing a peer sends makes the library panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The datagram ended before a field it announces.
    #[error("truncated {what}: need {need} bytes, have {have}")]
    Truncated {
        /// What was being parsed.
        what: &'static str,
        /// Bytes needed.
        need: usize,
        /// Bytes present.
        have: usize,
    },
    /// A field holds a value the protocol does not allow.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// A handshake was refused (by us or by the peer) with an SRT rejection reason.
    #[error("connection rejected: {0}")]
    Rejected(RejectReason),
    /// The peer did not answer the handshake in time.
    #[error("handshake timed out")]
    HandshakeTimeout,
    /// A local configuration value is outside what SRT allows.
    #[error("invalid configuration: {0}")]
    Config(&'static str),
    /// A payload larger than one SRT live-mode packet was given to `send`.
    #[error("payload of {len} bytes exceeds the maximum of {max}")]
    PayloadTooLarge {
        /// Given length.
        len: usize,
        /// Maximum payload per packet.
        max: usize,
    },
    /// The connection is closed; nothing more can be sent.
    #[error("connection closed")]
    Closed,
}

impl Error {
    /// True if the error was caused by what a peer sent (bad or truncated datagram,
    /// rejection by the peer), as opposed to local misuse or configuration.
    pub fn is_peer_caused(&self) -> bool {
        matches!(
            self,
            Error::Truncated { .. } | Error::Malformed(_) | Error::Rejected(_)
        )
    }
}
