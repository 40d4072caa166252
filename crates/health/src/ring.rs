//! A fixed ring of per-second counters: O(1) amortised writes, no allocation after creation.

use crate::config::MAX_WINDOW_SECS;

/// Seconds the ring holds: the longest window plus the second being filled plus one spare,
/// so a full window of complete seconds is always readable.
pub(crate) const RING_SECONDS: usize = MAX_WINDOW_SECS as usize + 2;

/// Counters for one wall-clock second (`now_ms / 1000`) of the driver's clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Bucket {
    /// Payload bytes received.
    pub bytes: u64,
    /// Packets received (SRT).
    pub received: u64,
    /// Packets detected lost (SRT), recovered or not.
    pub lost: u64,
    /// Packets dropped: too late or never arrived (SRT).
    pub dropped: u64,
}

impl Bucket {
    fn add(&mut self, o: &Bucket) {
        self.bytes = self.bytes.saturating_add(o.bytes);
        self.received = self.received.saturating_add(o.received);
        self.lost = self.lost.saturating_add(o.lost);
        self.dropped = self.dropped.saturating_add(o.dropped);
    }
}

/// Per-second buckets for the last [`RING_SECONDS`] seconds. Bucket for second `s` lives at
/// `s % RING_SECONDS` while `s` is within the ring's reach of `head`; seconds after `head`
/// read as zero until written, so a reader never needs to advance the ring (a stalled
/// publisher writes nothing and its seconds correctly read as empty).
#[derive(Debug, Clone)]
pub(crate) struct Ring {
    buckets: [Bucket; RING_SECONDS],
    /// The latest second written (or reset to).
    head: u64,
}

impl Ring {
    pub fn new(now_sec: u64) -> Self {
        Self {
            buckets: [Bucket::default(); RING_SECONDS],
            head: now_sec,
        }
    }

    /// Forgets everything (a new connection starts its own history).
    pub fn reset(&mut self, now_sec: u64) {
        self.buckets = [Bucket::default(); RING_SECONDS];
        self.head = now_sec;
    }

    fn slot(sec: u64) -> usize {
        // RING_SECONDS fits in u64 and the remainder is below it, so both casts are lossless.
        (sec % RING_SECONDS as u64) as usize
    }

    /// The bucket that second `sec` maps to. [`Ring::slot`] is below `RING_SECONDS`, the
    /// array's length, so the lookup cannot miss; the assertion tells tests and fuzzing if
    /// it ever does.
    fn bucket(&self, sec: u64) -> Option<&Bucket> {
        let bucket = self.buckets.get(Self::slot(sec));
        debug_assert!(bucket.is_some(), "ring slot out of range");
        bucket
    }

    /// [`Ring::bucket`], to write.
    fn bucket_mut(&mut self, sec: u64) -> Option<&mut Bucket> {
        let bucket = self.buckets.get_mut(Self::slot(sec));
        debug_assert!(bucket.is_some(), "ring slot out of range");
        bucket
    }

    /// Adds `delta` to second `sec`. Writes older than the ring reaches are ignored; writes
    /// slightly in the past (a driver clock that is not perfectly monotonic) land in their own
    /// second.
    pub fn add(&mut self, sec: u64, delta: &Bucket) {
        if sec > self.head {
            let gap = sec - self.head;
            if gap >= RING_SECONDS as u64 {
                self.buckets = [Bucket::default(); RING_SECONDS];
            } else {
                // Clear the seconds skipped since `head` (at most RING_SECONDS iterations;
                // amortised one per second of clock).
                for s in self.head.saturating_add(1)..=sec {
                    if let Some(b) = self.bucket_mut(s) {
                        *b = Bucket::default();
                    }
                }
            }
            self.head = sec;
        } else if self.head - sec >= RING_SECONDS as u64 {
            return;
        }
        if let Some(b) = self.bucket_mut(sec) {
            b.add(delta);
        }
    }

    /// The counters of second `sec` (zero if not written or already forgotten).
    pub fn get(&self, sec: u64) -> Bucket {
        if sec > self.head || self.head - sec >= RING_SECONDS as u64 {
            return Bucket::default();
        }
        self.bucket(sec).copied().unwrap_or_default()
    }

    /// Sum over seconds `from..to`.
    pub fn sum(&self, from: u64, to: u64) -> Bucket {
        let mut total = Bucket::default();
        // Seconds further back than the ring reaches read as zero: skip them.
        let from = from.max(to.saturating_sub(RING_SECONDS as u64));
        for s in from..to {
            total.add(&self.get(s));
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(n: u64) -> Bucket {
        Bucket {
            bytes: n,
            ..Bucket::default()
        }
    }

    #[test]
    fn seconds_wrap_and_expire() {
        let mut r = Ring::new(0);
        for s in 0..300 {
            r.add(s, &bytes(s));
        }
        assert_eq!(r.get(299).bytes, 299);
        assert_eq!(
            r.get(299 - RING_SECONDS as u64 + 1).bytes,
            299 - RING_SECONDS as u64 + 1
        );
        // Forgotten: would alias slot of 299 - RING_SECONDS + 1 + RING_SECONDS.
        assert_eq!(r.get(299 - RING_SECONDS as u64).bytes, 0);
        // Future seconds read as zero even though their slot holds an old value.
        assert_eq!(r.get(300).bytes, 0);
        assert_eq!(r.sum(290, 300).bytes, (290..300).sum::<u64>());
    }

    #[test]
    fn gap_clears_skipped_seconds() {
        let mut r = Ring::new(0);
        for s in 0..RING_SECONDS as u64 {
            r.add(s, &bytes(7));
        }
        let head = RING_SECONDS as u64 - 1;
        r.add(head + 10, &bytes(1));
        for s in head + 1..head + 10 {
            assert_eq!(r.get(s).bytes, 0, "second {s}");
        }
        assert_eq!(r.get(head).bytes, 7);
        assert_eq!(r.get(head + 10).bytes, 1);
        // A jump past the whole ring clears everything.
        r.add(head + 10_000, &bytes(2));
        assert_eq!(r.sum(0, head + 10_000).bytes, 0);
        assert_eq!(r.get(head + 10_000).bytes, 2);
    }

    #[test]
    fn late_writes_land_in_their_second_or_are_ignored() {
        let mut r = Ring::new(0);
        r.add(500, &bytes(1));
        r.add(499, &bytes(5));
        assert_eq!(r.get(499).bytes, 5);
        r.add(1, &bytes(9)); // too old
        assert_eq!(r.sum(0, 501).bytes, 6);
        r.add(u64::MAX, &bytes(u64::MAX));
        r.add(u64::MAX, &bytes(u64::MAX));
        assert_eq!(r.get(u64::MAX).bytes, u64::MAX);
    }
}
