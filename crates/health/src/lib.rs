#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod config;
mod machine;
mod ring;
mod status;

pub use config::{HealthConfig, HealthOverrides, MAX_WINDOW_SECS};
pub use machine::{
    BitrateCap, StreamHealth, BITRATE_WINDOW_SECS, EVALUATION_INTERVAL_MS, HISTORY_LEN,
    MAX_PENDING_EVENTS, MIN_PACKETS_FOR_RATE,
};
pub use status::{HealthEvent, PacketTotals, Reason, Status, REASON_CODES};

/// Errors of this crate: only configuration can be wrong (the state machine itself accepts
/// any input, clamping out-of-range values).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HealthError {
    /// A health threshold is out of range. Caused by the operator's configuration (server
    /// defaults or a tenant's overrides), never by a publisher.
    #[error("health config: {field} {reason}")]
    InvalidConfig {
        /// The offending field, as written in the configuration (kebab-case).
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

#[cfg(test)]
mod tests;
