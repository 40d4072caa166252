//! What a player's screen shows, in wall-clock terms: the glass-to-glass latency of a
//! viewer that plays continuously from a start position behind the live edge. No I/O, no
//! clock: times go in as Unix milliseconds.
//!
//! The model (that of hls.js and dash.js without live catch-up, their default): playback
//! starts when the first media is in, at a chosen position (the live edge minus the hold-back:
//! `PART-HOLD-BACK`, 3 target durations, the MPD's presentation delay). From then on the
//! playhead advances in real time, so the latency — now minus the wall clock at which the
//! frame on screen was captured (its PROGRAM-DATE-TIME, or the MPD timeline) — stays
//! constant, until a piece of media arrives after the playhead needed it: the player
//! stalls (rebuffers) for the difference and the latency grows by as much.
//!
//! Call order: [`Playhead::start`] once, at the first arrival; then [`Playhead::arrive`] for
//! each piece of media in presentation order.

use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// A viewer's playhead.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Playhead {
    /// Now minus the wall clock of the frame on screen, ms (`None` before the start).
    latency_ms: Option<f64>,
    /// The wall clock of the start position: media before it is not played.
    from_ms: f64,
    /// Stalls so far.
    pub stalls: u64,
    /// Time spent stalled, ms.
    pub stall_ms: f64,
}

impl Playhead {
    /// Playback starts at `now_ms` at the media captured at `position_ms`.
    pub fn start(&mut self, now_ms: f64, position_ms: f64) {
        self.latency_ms = Some((now_ms - position_ms).max(0.0));
        self.from_ms = position_ms;
    }

    /// Whether [`Playhead::start`] was called.
    pub fn started(&self) -> bool {
        self.latency_ms.is_some()
    }

    /// Media whose first frame was captured at `start_ms` became playable at `arrived_ms`:
    /// the latency at which it is played (`None` before the start).
    pub fn arrive(&mut self, start_ms: f64, arrived_ms: f64) -> Option<f64> {
        let latency = self.latency_ms?;
        let needed = arrived_ms - start_ms.max(self.from_ms);
        if needed > latency {
            self.stalls += 1;
            self.stall_ms += needed - latency;
            self.latency_ms = Some(needed);
        }
        self.latency_ms
    }
}

/// Converts the monotonic clock to Unix milliseconds with one reading of both, taken when a
/// viewer starts (an NTP step during a run does not bend its figures).
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    at: Instant,
    unix_ms: f64,
}

impl WallClock {
    /// Reads both clocks now.
    pub fn now() -> Self {
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0);
        WallClock {
            at: Instant::now(),
            unix_ms,
        }
    }

    /// `t` in Unix milliseconds.
    pub fn ms(&self, t: Instant) -> f64 {
        if t >= self.at {
            self.unix_ms + t.duration_since(self.at).as_secs_f64() * 1000.0
        } else {
            self.unix_ms - self.at.duration_since(t).as_secs_f64() * 1000.0
        }
    }

    /// Unix milliseconds `ms` as an instant (clamped to now if it is long past).
    pub fn instant(&self, ms: f64) -> Instant {
        let d = ms - self.unix_ms;
        if d >= 0.0 {
            self.at + std::time::Duration::from_secs_f64((d / 1000.0).min(1e6))
        } else {
            self.at
                .checked_sub(std::time::Duration::from_secs_f64((-d / 1000.0).min(1e6)))
                .unwrap_or(self.at)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_is_constant_until_media_comes_late() {
        let mut p = Playhead::default();
        assert_eq!(p.arrive(0.0, 0.0), None);
        // Starts 1000 ms behind: media captured at 10_000, first in at 11_000 (a part that
        // began before the start position plays from the position).
        p.start(11_000.0, 10_000.0);
        assert_eq!(p.arrive(9_800.0, 11_000.0), Some(1000.0));
        // On time (arrives 400 ms after capture, needed 1000 ms after): no stall.
        assert_eq!(p.arrive(10_333.0, 10_733.0), Some(1000.0));
        assert_eq!(p.stalls, 0);
        // 1500 ms after capture: a 500 ms stall, and the latency grows.
        assert_eq!(p.arrive(10_666.0, 12_166.0), Some(1500.0));
        assert_eq!((p.stalls, p.stall_ms), (1, 500.0));
        // Never shrinks (no catch-up).
        assert_eq!(p.arrive(11_000.0, 11_100.0), Some(1500.0));
    }

    #[test]
    fn wall_clock_round_trips() {
        let c = WallClock::now();
        let t = c.at + std::time::Duration::from_millis(1500);
        assert!((c.ms(t) - c.unix_ms - 1500.0).abs() < 0.01);
        assert_eq!(c.instant(c.unix_ms + 1500.0), t);
        assert!(c.ms(c.instant(c.unix_ms - 20.0)) <= c.unix_ms);
    }
}
