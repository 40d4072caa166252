//! Wrap-aware sequence numbers, message numbers and timestamps.

use std::cmp::Ordering;

/// Sequence numbers are 31 bits on the wire.
pub const SEQ_MASK: u32 = 0x7FFF_FFFF;
/// Half the sequence space: two numbers further apart than this compare "the other way".
const SEQ_HALF: u32 = 0x4000_0000;
/// Message numbers are 26 bits on the wire.
pub const MSG_MASK: u32 = 0x03FF_FFFF;

/// A 31-bit packet sequence number with wrap-aware arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SeqNo(u32);

impl SeqNo {
    /// Builds a sequence number, dropping bits above the 31st.
    pub const fn new(v: u32) -> Self {
        SeqNo(v & SEQ_MASK)
    }
    /// The raw 31-bit value.
    pub const fn get(self) -> u32 {
        self.0
    }
    /// `self + n` modulo 2^31.
    #[must_use]
    pub const fn add(self, n: u32) -> Self {
        SeqNo(self.0.wrapping_add(n) & SEQ_MASK)
    }
    /// `self - n` modulo 2^31.
    #[must_use]
    pub const fn sub(self, n: u32) -> Self {
        SeqNo(self.0.wrapping_sub(n) & SEQ_MASK)
    }
    /// The next sequence number.
    #[must_use]
    pub const fn next(self) -> Self {
        self.add(1)
    }
    /// Signed distance `self - other`, assuming both are within 2^30 of each other.
    pub const fn diff(self, other: SeqNo) -> i32 {
        let d = self.0.wrapping_sub(other.0) & SEQ_MASK;
        if d >= SEQ_HALF {
            // Negative: sign-extend from 31 bits.
            (d as i32) - (SEQ_MASK as i32) - 1
        } else {
            d as i32
        }
    }
}

impl PartialOrd for SeqNo {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SeqNo {
    /// Wrap-aware: `a < b` iff `b` is less than 2^30 ahead of `a`.
    fn cmp(&self, other: &Self) -> Ordering {
        self.diff(*other).cmp(&0)
    }
}

/// A 26-bit message number (1 ..= 2^26-1; 0 is never used by libsrt).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MsgNo(u32);

impl MsgNo {
    /// Builds a message number, dropping bits above the 26th.
    pub const fn new(v: u32) -> Self {
        MsgNo(v & MSG_MASK)
    }
    /// The raw 26-bit value.
    pub const fn get(self) -> u32 {
        self.0
    }
    /// The next message number, skipping 0 on wrap.
    #[must_use]
    pub const fn next(self) -> Self {
        let n = self.0.wrapping_add(1) & MSG_MASK;
        if n == 0 {
            MsgNo(1)
        } else {
            MsgNo(n)
        }
    }
}

/// Extends 32-bit microsecond timestamps (which wrap every ~71.6 minutes) to 64 bits,
/// relative to the most recent one seen. Reordering within ±35 minutes is handled.
#[derive(Debug, Clone, Copy, Default)]
pub struct TimestampUnwrapper {
    last: Option<i64>,
}

impl TimestampUnwrapper {
    /// Extends `ts`, returning microseconds since the peer's start (may be negative only
    /// if the very first timestamps arrive reordered across zero).
    pub fn extend(&mut self, ts: u32) -> i64 {
        match self.last {
            None => {
                self.last = Some(i64::from(ts));
                i64::from(ts)
            }
            Some(last) => {
                let d = i64::from(ts.wrapping_sub(last as u32) as i32);
                let ext = last.saturating_add(d);
                if d > 0 {
                    self.last = Some(ext);
                }
                ext
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_wraps() {
        let max = SeqNo::new(SEQ_MASK);
        assert_eq!(max.next(), SeqNo::new(0));
        assert_eq!(SeqNo::new(0).sub(1), max);
        assert_eq!(SeqNo::new(2).diff(max), 3);
        assert_eq!(max.diff(SeqNo::new(2)), -3);
        assert!(max < SeqNo::new(2));
        assert!(SeqNo::new(5) > SeqNo::new(3));
        assert_eq!(SeqNo::new(0xFFFF_FFFF).get(), SEQ_MASK);
        assert_eq!(SeqNo::new(100).diff(SeqNo::new(100)), 0);
        assert_eq!(SeqNo::new(SEQ_HALF).diff(SeqNo::new(0)), -(SEQ_HALF as i32));
    }

    #[test]
    fn msgno_skips_zero() {
        assert_eq!(MsgNo::new(MSG_MASK).next(), MsgNo::new(1));
        assert_eq!(MsgNo::new(7).next().get(), 8);
    }

    #[test]
    fn timestamps_unwrap() {
        let mut u = TimestampUnwrapper::default();
        assert_eq!(u.extend(0xFFFF_FF00), 0xFFFF_FF00);
        assert_eq!(u.extend(0x10), 0x1_0000_0010);
        // Reordered packet from before the wrap.
        assert_eq!(u.extend(0xFFFF_FFF0), 0xFFFF_FFF0);
        assert_eq!(u.extend(0x20), 0x1_0000_0020);
    }
}
