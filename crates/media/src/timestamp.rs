//! Timestamp unwrapping (RTMP's 32-bit milliseconds, MPEG-TS's 33-bit 90 kHz) and jump
//! detection.
//!
//! Ingest protocols carry timestamps that wrap: RTMP after 2^32 ms (49.7 days), MPEG-TS
//! after 2^33 ticks (26.5 hours). The unwrappers turn them into a 64-bit timeline by taking
//! each new value as the one nearest to the previous value (so a timestamp slightly *before*
//! the previous one across the wrap point unwraps backwards, not 49 days forwards).
//!
//! Publishers also restart their clocks (encoder restart, playlist loop, a relay switching
//! sources). A [`JumpDetector`] watches one timeline; when it moves forwards more than a
//! threshold or backwards more than another, it rebases its output so the output continues
//! one nominal frame after the last output, and reports the size of the jump.

/// Number of bits in an RTMP timestamp.
const RTMP_TIMESTAMP_BITS: u32 = 32;

/// Number of bits in an MPEG-TS PTS/DTS.
const MPEGTS_TIMESTAMP_BITS: u32 = 33;

/// Unwraps a `bits`-wide wrapping counter by nearest distance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Unwrapper<const BITS: u32> {
    last: Option<i64>,
}

impl<const BITS: u32> Unwrapper<BITS> {
    const MODULUS: i64 = 1 << BITS;
    const HALF: i64 = 1 << (BITS - 1);

    fn unwrap(&mut self, raw: u64) -> i64 {
        let raw = (raw & (Self::MODULUS as u64 - 1)) as i64;
        let value = match self.last {
            None => raw,
            Some(last) => {
                let last_raw = last.rem_euclid(Self::MODULUS);
                let mut delta = raw - last_raw;
                if delta >= Self::HALF {
                    delta -= Self::MODULUS;
                } else if delta < -Self::HALF {
                    delta += Self::MODULUS;
                }
                last.saturating_add(delta)
            }
        };
        self.last = Some(value);
        value
    }
}

/// Unwraps RTMP's 32-bit millisecond timestamps into a 64-bit millisecond timeline. The first
/// value is taken as is; each later value is placed within ±2^31 ms of the previous one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RtmpTimestampUnwrapper {
    inner: Unwrapper<RTMP_TIMESTAMP_BITS>,
}

impl Default for Unwrapper<RTMP_TIMESTAMP_BITS> {
    fn default() -> Self {
        Self { last: None }
    }
}

impl Default for Unwrapper<MPEGTS_TIMESTAMP_BITS> {
    fn default() -> Self {
        Self { last: None }
    }
}

impl RtmpTimestampUnwrapper {
    /// A fresh unwrapper.
    pub fn new() -> Self {
        Self::default()
    }

    /// Unwraps the next timestamp (milliseconds).
    pub fn unwrap(&mut self, timestamp_ms: u32) -> i64 {
        self.inner.unwrap(u64::from(timestamp_ms))
    }
}

/// Unwraps MPEG-TS 33-bit 90 kHz PTS/DTS values into a 64-bit [`crate::TIMESCALE`] timeline.
/// Bits above the 33rd are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PtsUnwrapper {
    inner: Unwrapper<MPEGTS_TIMESTAMP_BITS>,
}

impl PtsUnwrapper {
    /// A fresh unwrapper.
    pub fn new() -> Self {
        Self::default()
    }

    /// Unwraps the next 33-bit timestamp.
    pub fn unwrap(&mut self, pts: u64) -> i64 {
        self.inner.unwrap(pts)
    }
}

/// Default forward jump threshold: a source timeline moving forwards by more than 10 s
/// between consecutive timestamps is a discontinuity, not a stall.
pub const DEFAULT_FORWARD_JUMP_TICKS: i64 = 10 * crate::TIMESCALE as i64;

/// Default backward jump threshold: interleaved audio and video may step back a little
/// (audio sent ahead of video), but more than 1 s backwards is a discontinuity.
pub const DEFAULT_BACKWARD_JUMP_TICKS: i64 = crate::TIMESCALE as i64;

/// Default nominal step placed between the last output before a jump and the first after
/// it: one frame at 30 fps.
pub const DEFAULT_NOMINAL_STEP_TICKS: i64 = crate::TIMESCALE as i64 / 30;

/// Thresholds of a [`JumpDetector`], in the units of the timeline it watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JumpThresholds {
    /// A step forwards larger than this is a jump.
    pub forward: i64,
    /// A step backwards larger than this is a jump.
    pub backward: i64,
    /// The step the output makes across a jump.
    pub nominal_step: i64,
}

impl Default for JumpThresholds {
    /// 10 s forwards, 1 s backwards, 1/30 s nominal step, in 90 kHz ticks.
    fn default() -> Self {
        Self {
            forward: DEFAULT_FORWARD_JUMP_TICKS,
            backward: DEFAULT_BACKWARD_JUMP_TICKS,
            nominal_step: DEFAULT_NOMINAL_STEP_TICKS,
        }
    }
}

/// The result of feeding one timestamp to a [`JumpDetector`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rebased {
    /// The timestamp on the continuous output timeline.
    pub output: i64,
    /// `Some(delta)` when this timestamp was a jump: how far the input moved (signed).
    pub jump: Option<i64>,
}

/// Detects discontinuities in a monotonic-ish timeline and keeps its output continuous by
/// applying a running offset (`output = input + offset`). The offset only changes at a jump,
/// so small reorderings (B-frames, audio/video interleaving) pass through untouched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JumpDetector {
    thresholds: JumpThresholds,
    offset: i64,
    last_input: Option<i64>,
    last_output: i64,
}

impl Default for JumpDetector {
    fn default() -> Self {
        Self::new(JumpThresholds::default())
    }
}

impl JumpDetector {
    /// A detector with the given thresholds; it starts with a zero offset.
    pub fn new(thresholds: JumpThresholds) -> Self {
        Self {
            thresholds,
            offset: 0,
            last_input: None,
            last_output: 0,
        }
    }

    /// The offset currently added to inputs.
    pub fn offset(&self) -> i64 {
        self.offset
    }

    /// Feeds the next input timestamp and returns it rebased.
    pub fn process(&mut self, input: i64) -> Rebased {
        let mut jump = None;
        if let Some(last) = self.last_input {
            let delta = input.saturating_sub(last);
            if delta > self.thresholds.forward || delta < self.thresholds.backward.saturating_neg()
            {
                let target = self
                    .last_output
                    .saturating_add(self.thresholds.nominal_step);
                self.offset = target.saturating_sub(input);
                jump = Some(delta);
            }
        }
        let output = input.saturating_add(self.offset);
        // Track the furthest output so a jump lands after everything already emitted.
        if self.last_input.is_none() || jump.is_some() || output > self.last_output {
            self.last_output = output;
        }
        self.last_input = Some(input);
        Rebased { output, jump }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtmp_unwraps_forward_across_the_wrap() {
        let mut u = RtmpTimestampUnwrapper::new();
        assert_eq!(u.unwrap(u32::MAX - 40), i64::from(u32::MAX - 40));
        assert_eq!(u.unwrap(u32::MAX - 7), i64::from(u32::MAX - 7));
        assert_eq!(u.unwrap(25), (1i64 << 32) + 25);
        assert_eq!(u.unwrap(58), (1i64 << 32) + 58);
        // Slightly backwards across the wrap again (audio interleaved behind video).
        assert_eq!(u.unwrap(u32::MAX - 2), i64::from(u32::MAX - 2));
        assert_eq!(u.unwrap(100), (1i64 << 32) + 100);
    }

    #[test]
    fn rtmp_unwraps_backwards_below_zero() {
        let mut u = RtmpTimestampUnwrapper::new();
        assert_eq!(u.unwrap(10), 10);
        assert_eq!(u.unwrap(u32::MAX - 9), -10);
        assert_eq!(u.unwrap(30), 30);
    }

    #[test]
    fn rtmp_unwraps_many_periods() {
        let mut u = RtmpTimestampUnwrapper::new();
        let step: u64 = 1 << 30;
        let mut expected: i64 = 0;
        for _ in 0..20 {
            let raw = (expected as u64 & 0xffff_ffff) as u32;
            assert_eq!(u.unwrap(raw), expected);
            expected += step as i64;
        }
    }

    #[test]
    fn pts_unwraps_33_bits() {
        let mut u = PtsUnwrapper::new();
        let max = (1u64 << 33) - 1;
        assert_eq!(u.unwrap(max - 3000), (max - 3000) as i64);
        assert_eq!(u.unwrap(3000), (1i64 << 33) + 3000);
        assert_eq!(u.unwrap(max), max as i64);
        assert_eq!(u.unwrap(6000 | (1 << 40)), (1i64 << 33) + 6000);
    }

    #[test]
    fn jump_detector_passes_small_steps_through() {
        let mut d = JumpDetector::default();
        for input in [0, 3003, 1800, 6006, 5400, 9009, 9009] {
            let r = d.process(input);
            assert_eq!(
                r,
                Rebased {
                    output: input,
                    jump: None
                }
            );
        }
    }

    #[test]
    fn jump_detector_rebases_forward_jump() {
        let mut d = JumpDetector::default();
        let step = 3000;
        let mut outputs = Vec::new();
        for i in 0..10 {
            outputs.push(d.process(i * step).output);
        }
        // Encoder restarts with an epoch-based clock one hour later.
        let hour = 3600 * 90_000;
        let r = d.process(hour + 10 * step);
        assert_eq!(r.jump, Some(hour + step));
        assert_eq!(r.output, 9 * step + DEFAULT_NOMINAL_STEP_TICKS);
        // Later samples keep the same offset.
        let r2 = d.process(hour + 11 * step);
        assert_eq!(
            r2,
            Rebased {
                output: r.output + step,
                jump: None
            }
        );
        // Exactly at the threshold is not a jump.
        let mut d = JumpDetector::default();
        d.process(0);
        assert_eq!(d.process(DEFAULT_FORWARD_JUMP_TICKS).jump, None);
        assert!(d.process(2 * DEFAULT_FORWARD_JUMP_TICKS + 1).jump.is_some());
    }

    #[test]
    fn jump_detector_rebases_backward_jump() {
        let mut d = JumpDetector::default();
        for i in 0..100 {
            d.process(1_000_000 + i * 3000);
        }
        let last = 1_000_000 + 99 * 3000;
        // The source loops back to zero.
        let r = d.process(0);
        assert_eq!(r.jump, Some(-last));
        assert_eq!(r.output, last + DEFAULT_NOMINAL_STEP_TICKS);
        assert_eq!(d.process(3000).output, r.output + 3000);
        // 0.9 s backwards is reordering, not a jump.
        let out = d.process(3000 - 81_000);
        assert_eq!(out.jump, None);
        assert_eq!(out.output, r.output + 3000 - 81_000);
    }

    #[test]
    fn jump_detector_saturates_on_extremes() {
        let mut d = JumpDetector::default();
        d.process(i64::MIN);
        let r = d.process(i64::MAX);
        assert!(r.jump.is_some());
        let r = d.process(i64::MIN);
        assert!(r.jump.is_some());
    }
}
