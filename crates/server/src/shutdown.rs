//! What the worker's shutdown phases wait for and how long: the bounds, named, and the
//! draining of publishers (the work of `Phase::Draining`). The sequence itself is
//! `tidegate_lifecycle::Lifecycle::shut_down`; `run` joins each part to its phase.

use std::sync::Arc;
use std::time::Duration;

use tracing::info;

use crate::stream::Streams;
use crate::ServeConfig;

/// How often the live publisher count is read while publishers finish or move on their own.
pub const DRAIN_POLL_INTERVAL: Duration = Duration::from_millis(200);

/// How often the live publisher count is read while publishers close at a segment boundary.
pub const BOUNDARY_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// How long each phase of the shutdown waits for its parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownTimeouts {
    /// `Phase::Draining`: how long live publishers get to finish or move to another worker
    /// on their own (`--drain-timeout`).
    pub drain: Duration,
    /// `Phase::Draining`, after `drain`: how long the publishers left get to leave right
    /// after their next segment is cut: three segment durations and a second (a segment is
    /// cut at a keyframe, so it can run longer than the target).
    pub boundary: Duration,
    /// `Phase::Closing`: how long ingest gets to close the connections left and flush
    /// their last segments.
    pub ingest_close: Duration,
    /// `Phase::Leaving`: how long the heartbeat gets to remove this worker's record (it
    /// expires on its own otherwise).
    pub leave: Duration,
    /// `Phase::Offline`: how long the open HTTP connections get to finish.
    pub http_close: Duration,
}

impl ShutdownTimeouts {
    /// The bound of [`ShutdownTimeouts::ingest_close`].
    pub const INGEST_CLOSE: Duration = Duration::from_secs(10);
    /// The bound of [`ShutdownTimeouts::leave`].
    pub const LEAVE: Duration = Duration::from_secs(3);
    /// The bound of [`ShutdownTimeouts::http_close`].
    pub const HTTP_CLOSE: Duration = Duration::from_secs(2);

    /// The bounds for `drain_timeout` and segments of `segment_duration`.
    pub fn new(drain_timeout: Duration, segment_duration: Duration) -> Self {
        Self {
            drain: drain_timeout,
            boundary: segment_duration * 3 + Duration::from_secs(1),
            ingest_close: Self::INGEST_CLOSE,
            leave: Self::LEAVE,
            http_close: Self::HTTP_CLOSE,
        }
    }

    /// The bounds for the configuration's `--drain-timeout` and `--segment-duration`.
    pub fn from_config(config: &ServeConfig) -> Self {
        Self::new(config.drain_timeout, config.segment_duration)
    }
}

/// The work of `Phase::Draining` (readiness is already down: `/readyz` and the heartbeat
/// watch the phase): refuses new publishers, gives the live ones [`ShutdownTimeouts::drain`]
/// to finish or move, then closes the rest at their next segment boundary and gives them
/// [`ShutdownTimeouts::boundary`].
pub async fn drain_publishers(streams: Arc<Streams>, timeouts: ShutdownTimeouts) {
    info!("shutdown: not ready, refusing new publishers");
    streams.start_draining();
    let live = streams.live_count().await;
    if live == 0 {
        return;
    }
    info!(
        live,
        timeout_s = timeouts.drain.as_secs_f64(),
        "shutdown: waiting for publishers to finish or move"
    );
    let live = live_after(&streams, timeouts.drain, DRAIN_POLL_INTERVAL).await;
    if live > 0 {
        info!(
            live,
            "shutdown: drain timeout; closing publishers at their next segment boundary"
        );
        streams.close_publishers_at_boundary();
        // A tenant's segments may be longer than the server's (its `segment-duration`).
        let boundary = timeouts
            .boundary
            .max(streams.longest_segment_duration() * 3 + Duration::from_secs(1));
        live_after(&streams, boundary, BOUNDARY_POLL_INTERVAL).await;
    }
}

/// Reads the live publisher count every `poll` until none is left or `bound` has passed;
/// returns how many are left.
async fn live_after(streams: &Streams, bound: Duration, poll: Duration) -> usize {
    let deadline = tokio::time::Instant::now() + bound;
    while tokio::time::Instant::now() < deadline && streams.live_count().await > 0 {
        tokio::time::sleep(poll).await;
    }
    streams.live_count().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bounds_come_from_the_drain_timeout_and_the_segment_duration() {
        let t = ShutdownTimeouts::new(Duration::from_secs(30), Duration::from_secs(2));
        assert_eq!(
            t,
            ShutdownTimeouts {
                drain: Duration::from_secs(30),
                boundary: Duration::from_secs(7),
                ingest_close: Duration::from_secs(10),
                leave: Duration::from_secs(3),
                http_close: Duration::from_secs(2),
            }
        );
        let t = ShutdownTimeouts::new(Duration::ZERO, Duration::from_millis(500));
        assert_eq!(t.drain, Duration::ZERO);
        assert_eq!(t.boundary, Duration::from_millis(2500));
    }

    #[test]
    fn the_bounds_read_the_configuration() {
        let config = ServeConfig {
            drain_timeout: Duration::from_secs(5),
            segment_duration: Duration::from_secs(4),
            ..ServeConfig::default()
        };
        let t = ShutdownTimeouts::from_config(&config);
        assert_eq!(t.drain, Duration::from_secs(5));
        assert_eq!(t.boundary, Duration::from_secs(13));
    }
}
