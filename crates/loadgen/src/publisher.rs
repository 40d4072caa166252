//! What the RTMP and SRT publisher drivers share, whatever they speak: the task's place in
//! the run ([`Slot`]: ramp-up slot, keyframe phase, end, stop signal, live counters), the
//! start (wait for the slot, connect, then pace from a keyframe-aligned base), the lag
//! accounting, and how the way a connection ended becomes the reported outcome.
//!
//! A driver's life: `Slot::start`; connect and ask to publish; once the server accepts,
//! `Slot::publishing` gives the `Pacer`; every hand-in of media measures its lateness
//! with `Pacer::hand_in` and `note_lag`; `Slot::stop_requested` starts the stop
//! (`Pacer::record_stop`); `Slot::conclude` turns the `Exit` into the outcome.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{sleep_until, Instant};

use crate::report::{LiveState, Outcome, PublisherLive, PublisherOutcome};
use crate::schedule::aligned_start;

/// One publisher's place in the run, whatever it speaks.
#[derive(Debug)]
pub struct Slot {
    /// Index (the `{i}` of its URL).
    pub index: usize,
    /// Start of the run: the origin of the keyframe phases.
    pub origin: Instant,
    /// When to connect (the ramp-up slot).
    pub start_at: Instant,
    /// Keyframe phase within the GOP, ms (see [`crate::schedule::stagger_phase_ms`]).
    pub phase_ms: u64,
    /// When to stop.
    pub end_at: Instant,
    /// Live counters.
    pub live: Arc<PublisherLive>,
    /// Turns true to stop early.
    pub stop: watch::Receiver<bool>,
}

/// Everything one publisher task needs: its slot, where to publish and what to send.
#[derive(Debug)]
pub struct PublisherTask<T, M> {
    /// Its place in the run.
    pub slot: Slot,
    /// Where to publish.
    pub target: T,
    /// The shared input.
    pub media: Arc<M>,
}

/// How a publisher's connection ended.
pub(crate) enum Exit {
    /// It stopped as asked (or at its end time).
    Stopped,
    /// The server refused the publish (the refusal's code or reason).
    Refused(String),
    /// The connection failed or was lost (why).
    Lost(String),
}

impl Slot {
    /// Waits for the ramp-up slot. `None` when the publisher must not run at all (stopped
    /// before or while waiting, or its end time has passed); else it is marked connecting
    /// and the instant connecting started is returned.
    pub(crate) async fn start(&mut self) -> Option<Instant> {
        if *self.stop.borrow() {
            return None;
        }
        tokio::select! {
            _ = sleep_until(self.start_at) => {}
            _ = self.stop.changed() => return None,
        }
        if Instant::now() >= self.end_at {
            return None;
        }
        self.live.set_state(LiveState::Connecting);
        Some(Instant::now())
    }

    /// The server accepted the publish at `now`: records the connect time, marks the
    /// publisher publishing and returns its pacer, whose base puts the keyframes (every
    /// `gop_ms`) at this slot's phase.
    pub(crate) fn publishing(
        &self,
        out: &mut PublisherOutcome,
        connect_started: Instant,
        now: Instant,
        gop_ms: u32,
    ) -> Pacer {
        out.connect_ms = Some(now.duration_since(connect_started).as_secs_f64() * 1000.0);
        self.live.set_state(LiveState::Publishing);
        let base = aligned_start(
            self.origin.into_std(),
            now.into_std(),
            self.phase_ms,
            gop_ms,
        );
        Pacer {
            base: Instant::from_std(base),
            newest: Duration::ZERO,
        }
    }

    /// Resolves when the publisher must stop: asked to, or its end time came.
    pub(crate) async fn stop_requested(&mut self) {
        tokio::select! {
            _ = self.stop.changed() => {}
            _ = sleep_until(self.end_at) => {}
        }
    }

    /// The outcome of a publisher that ended with `exit`; `published`: the server had
    /// accepted the publish (a connection lost after that is a drop, before it a failure).
    pub(crate) fn conclude(
        &self,
        mut out: PublisherOutcome,
        exit: Exit,
        published: bool,
    ) -> PublisherOutcome {
        out.bytes_sent = self.live.bytes_sent.load(Ordering::Relaxed);
        let (outcome, detail) = match exit {
            Exit::Stopped if published => (Outcome::Finished, None),
            Exit::Stopped => (
                Outcome::Failed,
                Some("the run ended before the server let it publish".to_string()),
            ),
            Exit::Refused(code) => (Outcome::Refused, Some(code)),
            Exit::Lost(why) if published => (Outcome::Dropped, Some(why)),
            Exit::Lost(why) => (Outcome::Failed, Some(why)),
        };
        self.live.set_state(match outcome {
            Outcome::Finished => LiveState::Finished,
            Outcome::Refused => LiveState::Refused,
            Outcome::Dropped => LiveState::Dropped,
            Outcome::Failed | Outcome::NotStarted => LiveState::Failed,
        });
        out.outcome = outcome;
        out.detail = detail;
        out
    }
}

/// Records how late (ms) the latest hand-in of media was: the report's worst and the
/// progress line's current.
pub(crate) fn note_lag(live: &PublisherLive, out: &mut PublisherOutcome, lag_ms: u64) {
    out.max_lag_ms = out.max_lag_ms.max(lag_ms);
    live.lag_ms.store(lag_ms, Ordering::Relaxed);
}

/// Real-time pacing from one base instant: media time `t` (from the publisher's first
/// media) is due at `base + t`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pacer {
    base: Instant,
    /// The newest media time handed in so far.
    newest: Duration,
}

impl Pacer {
    /// When media time `media` is due.
    pub(crate) fn due(&self, media: Duration) -> Instant {
        self.base + media
    }

    /// When to wake up to hand in media time `media`: `coalesce` before it is due, so that
    /// one wake-up hands in everything due within `coalesce`.
    pub(crate) fn wake_at(&self, media: Duration, coalesce: Duration) -> Instant {
        let due = self.due(media);
        due.checked_sub(coalesce).unwrap_or(due)
    }

    /// The latest media time to hand in at `now`: what is due within `coalesce`.
    pub(crate) fn due_by(&self, now: Instant, coalesce: Duration) -> Duration {
        (now + coalesce).saturating_duration_since(self.base)
    }

    /// Media time `media` is handed in at `now`: how late it is, ms, measured against the
    /// newest media time handed in so far (inputs interleave audio and video a little out
    /// of timestamp order; lateness is that of the stream, not of each piece).
    pub(crate) fn hand_in(&mut self, now: Instant, media: Duration) -> u64 {
        self.newest = self.newest.max(media);
        self.late_ms(now, self.newest)
    }

    /// The newest media time handed in so far.
    pub(crate) fn newest(&self) -> Duration {
        self.newest
    }

    /// How late, ms, media time `media` is at `now` (0 if it is not due yet).
    pub(crate) fn late_ms(&self, now: Instant, media: Duration) -> u64 {
        now.saturating_duration_since(self.due(media)).as_millis() as u64
    }

    /// The publisher stops at `now` with `next` the media time it would have handed in
    /// next: records how far behind real time it was (what `coalesce` sends early does
    /// not count) and how much media it sent.
    pub(crate) fn record_stop(
        &self,
        out: &mut PublisherOutcome,
        now: Instant,
        coalesce: Duration,
        next: Duration,
    ) {
        let lag = now
            .checked_sub(coalesce)
            .unwrap_or(now)
            .saturating_duration_since(self.due(next));
        out.final_lag_ms = lag.as_millis() as u64;
        out.media_seconds = next.as_secs_f64();
    }
}
