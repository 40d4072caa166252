//! Pacing, without a clock: which piece of the input is due when, where each publisher
//! starts, and how the connections ramp up. The drivers turn these media times into
//! deadlines (`crate::publisher::Pacer`).
//!
//! A publisher's *media time* is the time since its first media; the piece at media time
//! `t` is due at `base + t`, where `base` is chosen by [`aligned_start`] so that the
//! keyframes of N publishers are spread evenly over one GOP instead of all landing on the
//! server at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::flv_file::{FlvFile, Tag};
use crate::ts_source::{Chunk, TsPass};

/// One pass of an input that publishers loop forever: its pieces (FLV tags, TS payloads)
/// in order, each with a media time from the start of the pass.
pub trait Looped {
    /// One piece.
    type Piece;
    /// The pieces of one pass, in order.
    fn pieces(&self) -> &[Self::Piece];
    /// Media time of a piece from the start of its pass.
    fn piece_time(piece: &Self::Piece) -> Duration;
    /// Media time at which pass `pass` starts: `pass` times the length of a pass.
    fn pass_start(&self, pass: u64) -> Duration;
}

impl Looped for FlvFile {
    type Piece = Tag;

    fn pieces(&self) -> &[Tag] {
        &self.tags
    }

    fn piece_time(tag: &Tag) -> Duration {
        Duration::from_millis(u64::from(tag.timestamp_ms))
    }

    /// Loop `k` adds `k` file durations (at least 1 ms, so that the timeline always
    /// advances) to every timestamp.
    fn pass_start(&self, pass: u64) -> Duration {
        let ms = pass.saturating_mul(u64::from(self.duration_ms.max(1)));
        Duration::from_millis(ms)
    }
}

impl Looped for TsPass {
    type Piece = Chunk;

    fn pieces(&self) -> &[Chunk] {
        &self.chunks
    }

    fn piece_time(chunk: &Chunk) -> Duration {
        Duration::from_micros(chunk.due_us)
    }

    /// Pass `k` adds `k` times [`TsPass::duration_ticks`] to every clock (µs precision).
    fn pass_start(&self, pass: u64) -> Duration {
        let ticks = u128::from(pass) * u128::from(self.duration_ticks);
        Duration::from_micros(u64::try_from(ticks * 1000 / 90).unwrap_or(u64::MAX))
    }
}

/// Walks an input's pieces forever, adding the pass length to the media times on each
/// pass so that the timeline never goes back.
#[derive(Debug, Clone)]
pub struct Schedule<P> {
    input: Arc<P>,
    pass: u64,
    index: usize,
}

impl<P: Looped> Schedule<P> {
    /// A schedule at the start of the input. The input must hold at least one piece
    /// ([`FlvFile::parse`] and [`TsPass`]'s constructors guarantee it).
    pub fn new(input: Arc<P>) -> Self {
        Schedule {
            input,
            pass: 0,
            index: 0,
        }
    }

    /// Media time of the next piece.
    pub fn next_due(&self) -> Duration {
        let start = self.input.pass_start(self.pass);
        let piece = self.input.pieces().get(self.index).map(P::piece_time);
        debug_assert!(piece.is_some(), "the schedule's index is within its pass");
        start.saturating_add(piece.unwrap_or_default())
    }

    /// Completed passes over the input.
    pub fn loops(&self) -> u64 {
        self.pass
    }

    /// The next piece: its pass and its index within the pass.
    pub fn position(&self) -> (u64, usize) {
        (self.pass, self.index)
    }

    /// Pieces handed out so far, over all passes.
    pub fn handed_out(&self) -> u64 {
        self.pass
            .saturating_mul(self.input.pieces().len() as u64)
            .saturating_add(self.index as u64)
    }

    /// Moves on to the next piece (the first of the next pass after the last).
    pub fn advance(&mut self) {
        self.index += 1;
        if self.index >= self.input.pieces().len() {
            self.index = 0;
            self.pass += 1;
        }
    }

    /// Calls `f(media_time, piece)` for every piece whose media time is at or before
    /// `until`, in order, and returns how many there were. `f` gets a reference: cloning
    /// a tag's `data` is a reference-count increment, not a copy.
    pub fn pop_due(&mut self, until: Duration, mut f: impl FnMut(Duration, &P::Piece)) -> usize {
        let mut n = 0;
        while self.next_due() <= until {
            let Some(piece) = self.input.pieces().get(self.index) else {
                return n;
            };
            f(self.next_due(), piece);
            n += 1;
            self.advance();
        }
        n
    }
}

/// The RTMP timestamp for a media time: milliseconds, wrapping at 2^32 as on the wire.
pub fn wire_timestamp(media_ms: u64) -> u32 {
    (media_ms % (1u64 << 32)) as u32
}

/// Where in the GOP publisher `index` of `count` puts its keyframes: `index * gop / count`.
pub fn stagger_phase_ms(index: usize, count: usize, gop_ms: u32) -> u64 {
    if count == 0 {
        return 0;
    }
    (index as u64 % count as u64).saturating_mul(u64::from(gop_ms)) / count as u64
}

/// The first instant at or after `earliest` whose distance from `origin` is
/// `phase_ms` modulo `gop_ms`: a publisher that starts its media there puts every keyframe
/// at `origin + phase + k * gop`, whatever its connection time was.
pub fn aligned_start(origin: Instant, earliest: Instant, phase_ms: u64, gop_ms: u32) -> Instant {
    let gop = u128::from(gop_ms.max(1));
    let phase = u128::from(phase_ms) % gop;
    let since_ms = earliest.saturating_duration_since(origin).as_millis();
    // Smallest k*gop + phase >= since (ms granularity, rounded up).
    let since_ceil = if earliest > origin + Duration::from_millis(since_ms as u64) {
        since_ms + 1
    } else {
        since_ms
    };
    let k = since_ceil.saturating_sub(phase).div_ceil(gop);
    let target = k * gop + phase;
    origin + Duration::from_millis(u64::try_from(target).unwrap_or(u64::MAX))
}

/// When publisher `index` starts connecting, at `rate_per_sec` new connections a second.
pub fn ramp_offset(index: usize, rate_per_sec: f64) -> Duration {
    if !(rate_per_sec.is_finite() && rate_per_sec > 0.0) {
        return Duration::ZERO;
    }
    Duration::try_from_secs_f64(index as f64 / rate_per_sec).unwrap_or(Duration::MAX)
}
