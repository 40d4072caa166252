//! The bench viewer's DASH MPD reader on arbitrary text. A panic is a bug; what it reads is
//! bounded and consistent: segments numbered in order within a period, positive durations.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tidegate_loadgen::mpd::{expand, parse, parse_duration_ms, MAX_PERIODS, MAX_SEGMENTS};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_duration_ms(text);
    let _ = expand(text, "r", 1, 2, 3);
    let Ok(mpd) = parse(text) else {
        return;
    };
    assert!(mpd.periods.len() <= MAX_PERIODS);
    let total: usize = mpd.periods.iter().map(|p| p.segments.len()).sum();
    assert!(total <= MAX_SEGMENTS);
    for p in &mpd.periods {
        assert!(p.timescale > 0);
        for w in p.segments.windows(2) {
            assert!(w[1].number == w[0].number.saturating_add(1) || w[0].number == u64::MAX);
        }
        for s in &p.segments {
            assert!(s.duration_ms >= 0);
            let _ = s.end_ms();
        }
    }
    let _ = mpd.low_latency();
});
