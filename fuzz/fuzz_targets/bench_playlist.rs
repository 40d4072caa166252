//! The bench viewer's HLS media-playlist reader (LL-HLS tags included) on arbitrary text.
//! A panic is a bug; what it reads is consistent: msns count up from the media sequence
//! plus the skipped segments, a hinted part follows the listed ones, the next blocking
//! request asks for what comes after the newest part.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tidegate_loadgen::playlist::{parse, MAX_PARTS, MAX_SEGMENTS};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(pl) = parse(text) else {
        return;
    };
    assert!(pl.segments.len() <= MAX_SEGMENTS);
    let parts: usize = pl.segments.iter().map(|s| s.parts.len()).sum::<usize>() + pl.open_parts.len();
    assert!(parts <= MAX_PARTS);
    for (i, s) in pl.segments.iter().enumerate() {
        assert_eq!(
            s.msn,
            pl.media_sequence + pl.skipped_segments + i as u64
        );
        assert!(s.duration.is_finite() && s.duration >= 0.0);
    }
    if let Some(h) = &pl.preload_hint {
        assert_eq!((h.msn, h.part), (pl.next_msn(), pl.open_parts.len() as u64));
    }
    let (msn, part) = pl.next_directives();
    assert_eq!(msn, pl.next_msn());
    if let (Some(p), Some((m, i, _))) = (part, pl.last_part()) {
        assert!((msn, p) > (m, i));
    }
    let _ = pl.edge_ms();
});
