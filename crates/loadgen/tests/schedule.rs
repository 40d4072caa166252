//! Pacing without a clock: looping an input with continuous media times, keyframe
//! staggering, aligned starts and the ramp-up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tidegate_loadgen::flv_file::{Tag, TagKind};
use tidegate_loadgen::schedule::*;
use tidegate_loadgen::FlvFile;

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

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

#[test]
fn loops_with_continuous_timestamps() {
    let mut s = Schedule::new(file(&[0, 40, 80], 120));
    let mut got = vec![];
    assert_eq!(
        s.pop_due(ms(250), |t, tag| got.push((t, tag.timestamp_ms))),
        7
    );
    let times: Vec<Duration> = [0, 40, 80, 120, 160, 200, 240].map(ms).into();
    assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), times);
    assert_eq!(
        got.iter().map(|g| g.1).collect::<Vec<_>>(),
        [0, 40, 80, 0, 40, 80, 0]
    );
    assert_eq!(s.next_due(), ms(280));
    assert_eq!(s.loops(), 2);
    assert_eq!(s.position(), (2, 1));
    assert_eq!(s.handed_out(), 7);
    // Nothing due before the next tag.
    assert_eq!(s.pop_due(ms(279), |_, _| panic!("not due")), 0);
}

#[test]
fn zero_duration_file_still_advances() {
    let mut s = Schedule::new(file(&[0], 0));
    let mut n = 0;
    s.pop_due(ms(3), |_, _| n += 1);
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
