//! Pacing, without a clock: which tag is due when, where each publisher starts, and how
//! the connections ramp up. The drivers turn these media times into deadlines.
//!
//! A publisher's *media time* is milliseconds since its first media frame; the tag at
//! media time `t` is due at `base + t`, where `base` is chosen by [`aligned_start`] so that
//! the keyframes of N publishers are spread evenly over one GOP instead of all landing on
//! the server at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::flv_file::{FlvFile, Tag};

/// Walks a file's tags forever, adding the file's duration to the timestamps on each pass
/// so that the timeline never goes back.
#[derive(Debug, Clone)]
pub struct Schedule {
    file: Arc<FlvFile>,
    index: usize,
    loop_offset_ms: u64,
    loops: u64,
}

impl Schedule {
    /// A schedule at the start of the file. The file must hold at least one tag
    /// ([`FlvFile::parse`] guarantees it).
    pub fn new(file: Arc<FlvFile>) -> Self {
        Schedule {
            file,
            index: 0,
            loop_offset_ms: 0,
            loops: 0,
        }
    }

    /// Media time of the next tag.
    pub fn next_ms(&self) -> u64 {
        let ts = self.file.tags.get(self.index).map_or(0, |t| t.timestamp_ms);
        self.loop_offset_ms.saturating_add(u64::from(ts))
    }

    /// Completed passes over the file.
    pub fn loops(&self) -> u64 {
        self.loops
    }

    /// Calls `f(media_ms, tag)` for every tag whose media time is at or before `until_ms`,
    /// in file order, and returns how many there were. `f` gets a reference: cloning the
    /// tag's `data` is a reference-count increment, not a copy.
    pub fn pop_due(&mut self, until_ms: u64, mut f: impl FnMut(u64, &Tag)) -> usize {
        let mut n = 0;
        while self.next_ms() <= until_ms {
            let Some(tag) = self.file.tags.get(self.index) else {
                return n;
            };
            f(
                self.loop_offset_ms
                    .saturating_add(u64::from(tag.timestamp_ms)),
                tag,
            );
            n += 1;
            self.index += 1;
            if self.index >= self.file.tags.len() {
                self.index = 0;
                self.loops += 1;
                self.loop_offset_ms = self
                    .loop_offset_ms
                    .saturating_add(u64::from(self.file.duration_ms.max(1)));
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flv_file::TagKind;
    use bytes::Bytes;

    fn file(ts: &[u32], duration_ms: u32) -> Arc<FlvFile> {
        Arc::new(FlvFile {
            metadata: None,
            headers: vec![],
            tags: ts
                .iter()
                .map(|&t| Tag {
                    kind: TagKind::Video,
                    timestamp_ms: t,
                    keyframe: t == 0,
                    data: Bytes::from_static(b"x"),
                })
                .collect(),
            duration_ms,
            gop_ms: 1000,
            media_bytes: ts.len() as u64,
        })
    }

    #[test]
    fn loops_with_continuous_timestamps() {
        let mut s = Schedule::new(file(&[0, 40, 80], 120));
        let mut got = vec![];
        assert_eq!(s.pop_due(250, |t, _| got.push(t)), 7);
        assert_eq!(got, [0, 40, 80, 120, 160, 200, 240]);
        assert_eq!(s.next_ms(), 280);
        assert_eq!(s.loops(), 2);
        // Nothing due before the next tag.
        assert_eq!(s.pop_due(279, |_, _| panic!("not due")), 0);
    }

    #[test]
    fn zero_duration_file_still_advances() {
        let mut s = Schedule::new(file(&[0], 0));
        let mut n = 0;
        s.pop_due(3, |_, _| n += 1);
        assert_eq!(n, 4);
    }

    #[test]
    fn wire_timestamps_wrap() {
        assert_eq!(wire_timestamp(5), 5);
        assert_eq!(wire_timestamp((1 << 32) + 7), 7);
    }

    #[test]
    fn phases_spread_over_one_gop() {
        let p: Vec<u64> = (0..4).map(|i| stagger_phase_ms(i, 4, 2000)).collect();
        assert_eq!(p, [0, 500, 1000, 1500]);
        assert_eq!(stagger_phase_ms(3, 0, 2000), 0);
    }

    #[test]
    fn aligned_start_keeps_phase_whatever_the_connect_time() {
        let o = Instant::now();
        let ms = |m: u64| o + Duration::from_millis(m);
        assert_eq!(aligned_start(o, ms(0), 500, 2000), ms(500));
        assert_eq!(aligned_start(o, ms(500), 500, 2000), ms(500));
        assert_eq!(aligned_start(o, ms(501), 500, 2000), ms(2500));
        assert_eq!(aligned_start(o, ms(4321), 0, 2000), ms(6000));
        assert_eq!(aligned_start(o, ms(4321), 1500, 2000), ms(5500));
        // Sub-millisecond past a slot moves to the next one (never starts in the past).
        let just_after = ms(500) + Duration::from_micros(10);
        assert_eq!(aligned_start(o, just_after, 500, 2000), ms(2500));
        // Before the origin: the first slot.
        assert_eq!(aligned_start(ms(100), o, 30, 2000), ms(130));
    }

    #[test]
    fn ramp_spreads_connections() {
        assert_eq!(ramp_offset(0, 10.0), Duration::ZERO);
        assert_eq!(ramp_offset(25, 10.0), Duration::from_millis(2500));
        assert_eq!(ramp_offset(25, 0.0), Duration::ZERO);
        assert_eq!(ramp_offset(25, f64::INFINITY), Duration::ZERO);
    }
}
