//! Playlist state transitions and rendering, checked byte-exactly and with `m3u8-rs`.

use super::*;
use crate::part_uri;

const T0: i64 = 1_700_000_000_000; // 2023-11-14T22:13:20.000Z

fn entry(uri: &str, duration_secs: f64, pdt: i64, map: Option<&str>) -> SegmentEntry {
    SegmentEntry {
        sequence: 0,
        uri: uri.to_string(),
        duration_secs,
        program_date_time_ms: pdt,
        discontinuity: false,
        map_uri: map.map(str::to_string),
        bytes: 500_000,
        parts: Vec::new(),
        start_ticks: None,
        video_frames: None,
        video_cadence: None,
        period: None,
    }
}

fn parse(text: &str) -> m3u8_rs::MediaPlaylist {
    m3u8_rs::parse_media_playlist_res(text.as_bytes())
        .unwrap_or_else(|e| panic!("invalid playlist {e:?}:\n{text}"))
}

#[test]
fn resume_with_discontinuity_and_new_map_then_end() {
    let mut state = PlaylistState::new(Container::Fmp4, 3, 2);
    state.begin_session();
    assert_eq!(state.epoch, 1);
    let map1 = Some("init-1-0.mp4");
    assert!(state
        .push_segment(entry("seg-0.m4s", 2.0, T0, map1))
        .is_empty());
    assert!(state
        .push_segment(entry("seg-1.m4s", 2.002, T0 + 2000, map1))
        .is_empty());
    assert!(state
        .push_segment(entry("seg-2.m4s", 1.998, T0 + 4002, map1))
        .is_empty());
    // The publisher reconnects a minute later.
    state.begin_session();
    assert_eq!(state.epoch, 2);
    let map2 = Some("init-2-0.mp4");
    let evicted = state.push_segment(entry("seg-3.m4s", 2.5, T0 + 60_000, map2));
    assert_eq!(evicted.len(), 1);
    assert_eq!(
        (evicted[0].sequence, evicted[0].uri.as_str()),
        (0, "seg-0.m4s")
    );
    let evicted = state.push_segment(entry("seg-4.m4s", 2.0, T0 + 62_500, map2));
    assert_eq!(evicted[0].sequence, 1);
    state.end();

    let expected = "#EXTM3U
#EXT-X-VERSION:6
#EXT-X-TARGETDURATION:3
#EXT-X-MEDIA-SEQUENCE:2
#EXT-X-DISCONTINUITY-SEQUENCE:0
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MAP:URI=\"init-1-0.mp4\"
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:24.002Z
#EXTINF:1.998,
seg-2.m4s
#EXT-X-DISCONTINUITY
#EXT-X-MAP:URI=\"init-2-0.mp4\"
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:14:20.000Z
#EXTINF:2.500,
seg-3.m4s
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:14:22.500Z
#EXTINF:2.000,
seg-4.m4s
#EXT-X-ENDLIST
";
    let text = state.render_media_playlist();
    assert_eq!(text, expected);

    let parsed = parse(&text);
    assert_eq!(parsed.version, Some(6));
    assert_eq!(parsed.target_duration, 3);
    assert_eq!(parsed.media_sequence, 2);
    assert_eq!(parsed.discontinuity_sequence, 0);
    assert!(parsed.end_list && parsed.independent_segments);
    let discontinuities: Vec<bool> = parsed.segments.iter().map(|s| s.discontinuity).collect();
    assert_eq!(discontinuities, vec![false, true, false]);
    let maps: Vec<Option<String>> = parsed
        .segments
        .iter()
        .map(|s| s.map.as_ref().map(|m| m.uri.clone()))
        .collect();
    assert_eq!(
        maps,
        vec![
            Some("init-1-0.mp4".into()),
            Some("init-2-0.mp4".into()),
            None
        ]
    );
    let pdts: Vec<i64> = parsed
        .segments
        .iter()
        .map(|s| s.program_date_time.unwrap().timestamp_millis())
        .collect();
    assert_eq!(pdts, vec![T0 + 4002, T0 + 60_000, T0 + 62_500]);

    // The discontinuity leaves the window: the sequence counts it.
    state.push_segment(entry("seg-5.m4s", 2.0, T0 + 64_500, map2));
    assert_eq!(state.discontinuity_sequence, 0);
    state.push_segment(entry("seg-6.m4s", 2.0, T0 + 66_500, map2));
    assert_eq!(state.discontinuity_sequence, 1);
    assert_eq!(state.media_sequence, 4);
    let parsed = parse(&state.render_media_playlist());
    assert_eq!(parsed.discontinuity_sequence, 1);
    // The first listed segment always carries its map.
    assert_eq!(
        parsed.segments[0].map.as_ref().map(|m| m.uri.as_str()),
        Some("init-2-0.mp4")
    );
}

#[test]
fn mpegts_playlist_is_version_3_without_map() {
    let mut state = PlaylistState::new(Container::MpegTs, 5, 2);
    state.begin_session();
    state.push_segment(entry("0.ts", 2.0, 0, None));
    state.mark_discontinuity();
    state.push_segment(entry("1.ts", 1.5, 2000, None));
    let expected = "#EXTM3U
#EXT-X-VERSION:3
#EXT-X-TARGETDURATION:2
#EXT-X-MEDIA-SEQUENCE:0
#EXT-X-DISCONTINUITY-SEQUENCE:0
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-PROGRAM-DATE-TIME:1970-01-01T00:00:00.000Z
#EXTINF:2.000,
0.ts
#EXT-X-DISCONTINUITY
#EXT-X-PROGRAM-DATE-TIME:1970-01-01T00:00:02.000Z
#EXTINF:1.500,
1.ts
";
    assert_eq!(state.render_media_playlist(), expected);
    parse(expected);
}

#[test]
fn target_duration_covers_every_rounded_extinf() {
    let mut state = PlaylistState::new(Container::Fmp4, 4, 2);
    state.begin_session();
    for (i, d) in [1.2, 2.4995, 2.5004, 0.0, f64::NAN, -3.0, 4.4994, 2.0]
        .into_iter()
        .enumerate()
    {
        state.push_segment(entry(&format!("{i}.m4s"), d, 0, Some("i.mp4")));
        let parsed = parse(&state.render_media_playlist());
        for segment in &parsed.segments {
            let rounded = (f64::from(segment.duration)).round() as u64;
            assert!(rounded <= parsed.target_duration, "{segment:?}");
        }
    }
    // 2.4995 renders as 2.500, which rounds to 3; 4.4994 as 4.499, which rounds to 4.
    assert_eq!(state.target_duration, 4);
    // Never decreases.
    let mut other = PlaylistState::new(Container::Fmp4, 4, 6);
    other.push_segment(entry("a", 1.0, 0, None));
    assert_eq!(other.target_duration, 6);
}

#[test]
fn multivariant_playlist() {
    let mut state = PlaylistState::new(Container::Fmp4, 4, 2);
    assert_eq!(state.render_multivariant_playlist("index.m3u8"), None);
    state.begin_session();
    state.push_segment(SegmentEntry {
        bytes: 1_000_000,
        ..entry("0.m4s", 2.0, 0, Some("i.mp4"))
    });
    // Too short to count.
    state.push_segment(SegmentEntry {
        bytes: 1_000_000,
        ..entry("1.m4s", 0.2, 0, Some("i.mp4"))
    });
    state.codecs = Some("avc1.64001f,mp4a.40.2".into());
    state.resolution = Some((1280, 720));
    let text = state.render_multivariant_playlist("index.m3u8").unwrap();
    assert_eq!(
        text,
        "#EXTM3U
#EXT-X-VERSION:6
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-STREAM-INF:BANDWIDTH=4000000,CODECS=\"avc1.64001f,mp4a.40.2\",RESOLUTION=1280x720
index.m3u8
"
    );
    let parsed = m3u8_rs::parse_master_playlist_res(text.as_bytes()).unwrap();
    assert_eq!(parsed.variants.len(), 1);
    assert_eq!(parsed.variants[0].bandwidth, 4_000_000);
    assert_eq!(parsed.variants[0].uri, "index.m3u8");
}

#[test]
fn uris_cannot_inject_tags() {
    let mut state = PlaylistState::new(Container::Fmp4, 4, 2);
    state.push_segment(entry("a\n#EXT-X-ENDLIST\nb", 2.0, 0, Some("x\"y\n.mp4")));
    let text = state.render_media_playlist();
    assert!(!text.contains("\n#EXT-X-ENDLIST"));
    assert!(text.contains("#EXT-X-MAP:URI=\"xy.mp4\"\n"));
    parse(&text);
}

#[test]
fn serde_round_trip_and_defaults() {
    let mut state = PlaylistState::new(Container::MpegTs, 3, 2);
    state.begin_session();
    for i in 0..5 {
        state.push_segment(entry(&format!("{i}.ts"), 2.0, T0 + i * 2000, None));
    }
    state.begin_session();
    state.codecs = Some("avc1.64001f".into());
    let json = serde_json::to_string(&state).unwrap();
    let back: PlaylistState = serde_json::from_str(&json).unwrap();
    assert_eq!(back, state);
    assert_eq!(back.render_media_playlist(), state.render_media_playlist());
    assert!(json.contains("\"container\":\"mpegts\""));
    // A state written by an older version (fields missing) still loads.
    let old: PlaylistState =
        serde_json::from_str(r#"{"epoch":7,"next_sequence":42,"media_sequence":40}"#).unwrap();
    assert_eq!(
        (old.epoch, old.next_sequence, old.window),
        (7, 42, DEFAULT_WINDOW)
    );
}

#[test]
fn epoch_fencing() {
    let mut state = PlaylistState::default();
    state.begin_session();
    assert!(state.check_epoch(1).is_ok());
    state.begin_session();
    let err = state.check_epoch(1).unwrap_err();
    assert!(err.is_stale_epoch());
}

#[test]
fn new_stream_after_end_keeps_numbering_monotonic() {
    let mut state = PlaylistState::new(Container::Fmp4, 3, 2);
    state.begin_session();
    for i in 0..4 {
        state.push_segment(entry(&format!("{i}.m4s"), 2.0, 0, Some("a.mp4")));
    }
    state.end();
    state.bandwidth = Some(1);
    let removed = state.reset_for_new_stream();
    assert_eq!(removed.len(), 3);
    assert!(!state.ended && state.segments.is_empty() && state.bandwidth.is_none());
    assert_eq!(state.media_sequence, 4);
    assert_eq!(state.discontinuity_sequence, 1);
    state.push_segment(entry("n.m4s", 2.0, 0, Some("b.mp4")));
    let parsed = parse(&state.render_media_playlist());
    assert_eq!(parsed.media_sequence, 4);
    assert!(!parsed.segments[0].discontinuity);
    assert!(!parsed.end_list);
}

/// Random segment durations, session restarts, resets, serde round trips and ends:
/// the media sequence never decreases, listed segments stay in order and contiguous, the
/// discontinuity sequence never decreases, every rendered playlist parses.
#[test]
fn random_histories_keep_sequences_monotonic() {
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    for round in 0..30 {
        let container = if round % 2 == 0 {
            Container::Fmp4
        } else {
            Container::MpegTs
        };
        let mut state = PlaylistState::new(container, 1 + next(8) as usize, 2);
        state.begin_session();
        let (mut last_media, mut last_dseq, mut last_target) = (0, 0, 0);
        let mut pdt = T0;
        for step in 0..400 {
            match next(20) {
                0 => state.begin_session(),
                1 => state.end(),
                2 => {
                    if state.ended {
                        state.reset_for_new_stream();
                    }
                }
                3 => state = serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap(),
                4 => state.mark_discontinuity(),
                _ => {
                    let gop = 0.5 + next(60) as f64 / 10.0;
                    let map =
                        (container == Container::Fmp4).then(|| format!("init-{}.mp4", state.epoch));
                    let evicted = state.push_segment(SegmentEntry {
                        discontinuity: next(10) == 0,
                        ..entry(&format!("s{step}"), gop, pdt, map.as_deref())
                    });
                    pdt += (gop * 1000.0) as i64;
                    for old in &evicted {
                        assert!(old.sequence < state.media_sequence);
                    }
                }
            }
            assert!(state.media_sequence >= last_media);
            assert!(state.discontinuity_sequence >= last_dseq);
            assert!(state.target_duration >= last_target);
            last_media = state.media_sequence;
            last_dseq = state.discontinuity_sequence;
            last_target = state.target_duration;
            assert!(state.segments.len() <= state.window);
            for (i, segment) in state.segments.iter().enumerate() {
                assert_eq!(segment.sequence, state.media_sequence + i as u64);
            }
            if let Some(last) = state.segments.back() {
                assert_eq!(last.sequence + 1, state.next_sequence);
            }
            let parsed = parse(&state.render_media_playlist());
            assert_eq!(parsed.media_sequence, state.media_sequence);
            assert_eq!(parsed.segments.len(), state.segments.len());
            assert_eq!(parsed.end_list, state.ended);
            for segment in &parsed.segments {
                assert!(f64::from(segment.duration).round() as u64 <= parsed.target_duration);
            }
        }
    }
}

// --- LL-HLS (issue #13) ---

fn part(uri: &str, duration_secs: f64, independent: bool) -> PartEntry {
    PartEntry {
        uri: uri.to_string(),
        duration_secs,
        independent,
        gap: false,
        offset: 0,
        bytes: 1000,
    }
}

/// Pushes `segments` segments of 2 s, each made of 6 parts of 1/3 s (the first independent),
/// then `open_parts` parts of the next one, with the preload hint on the part after.
fn ll_state(window: usize, segments: u64, open_parts: u32) -> PlaylistState {
    let mut state = PlaylistState::new(Container::Fmp4, window, 2);
    state.part_target_secs = Some(1.0 / 3.0);
    state.begin_session();
    let map = Some("init-1-0.mp4".to_string());
    for n in 0..=segments {
        let seg = format!("seg-1-{n}.m4s");
        let pdt = T0 + (n as i64) * 2000;
        let count = if n == segments { open_parts } else { 6 };
        for p in 0..count {
            let next = if p == 5 {
                part_uri(&format!("seg-1-{}.m4s", n + 1), 0)
            } else {
                part_uri(&seg, p + 1)
            };
            state.push_part(
                part(&part_uri(&seg, p), 0.3333, p == 0),
                pdt,
                map.clone(),
                Some(next),
            );
        }
        if n < segments {
            state.push_segment(entry(&seg, 2.0, pdt, map.as_deref()));
        }
    }
    state
}

/// The low-latency playlist: server control with PART-HOLD-BACK = 3 parts and
/// CAN-SKIP-UNTIL = 6 target durations, parts of the segments within 3 target durations of
/// the end (segments ending less than 6 s before the last part: here seg-1-1, 4.67 s; before
/// their EXTINF, after their PDT/MAP/DISCONTINUITY), the open segment's
/// parts and the preload hint.
#[test]
fn low_latency_playlist_byte_exact() {
    let state = ll_state(4, 4, 2);
    let expected = "#EXTM3U
#EXT-X-VERSION:6
#EXT-X-TARGETDURATION:2
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.002,CAN-SKIP-UNTIL=12.000
#EXT-X-PART-INF:PART-TARGET=0.334
#EXT-X-MEDIA-SEQUENCE:0
#EXT-X-DISCONTINUITY-SEQUENCE:0
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MAP:URI=\"init-1-0.mp4\"
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:20.000Z
#EXTINF:2.000,
seg-1-0.m4s
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:22.000Z
#EXT-X-PART:DURATION=0.333,URI=\"seg-1-1.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.333,URI=\"seg-1-1.1.m4s\"
#EXT-X-PART:DURATION=0.333,URI=\"seg-1-1.2.m4s\"
#EXT-X-PART:DURATION=0.333,URI=\"seg-1-1.3.m4s\"
#EXT-X-PART:DURATION=0.333,URI=\"seg-1-1.4.m4s\"
#EXT-X-PART:DURATION=0.333,URI=\"seg-1-1.5.m4s\"
#EXTINF:2.000,
seg-1-1.m4s
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:24.000Z
#EXT-X-PART:DURATION=0.333,URI=\"seg-1-2.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.333,URI=\"seg-1-2.1.m4s\"
#EXT-X-PART:DURATION=0.333,URI=\"seg-1-2.2.m4s\"
#EXT-X-PART:DURATION=0.333,URI=\"seg-1-2.3.m4s\"
#EXT-X-PART:DURATION=0.333,URI=\"seg-1-2.4.m4s\"
#EXT-X-PART:DURATION=0.333,URI=\"seg-1-2.5.m4s\"
#EXTINF:2.000,
seg-1-2.m4s
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:26.000Z
#EXT-X-PART:DURATION=0.333,URI=\"seg-1-3.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.333,URI=\"seg-1-3.1.m4s\"
#EXT-X-PART:DURATION=0.333,URI=\"seg-1-3.2.m4s\"
#EXT-X-PART:DURATION=0.333,URI=\"seg-1-3.3.m4s\"
#EXT-X-PART:DURATION=0.333,URI=\"seg-1-3.4.m4s\"
#EXT-X-PART:DURATION=0.333,URI=\"seg-1-3.5.m4s\"
#EXTINF:2.000,
seg-1-3.m4s
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:28.000Z
#EXT-X-PART:DURATION=0.333,URI=\"seg-1-4.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.333,URI=\"seg-1-4.1.m4s\"
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"seg-1-4.2.m4s\"
";
    let text = state.render_media_playlist();
    assert_eq!(text, expected);
    // Regular HLS clients read the same playlist (m3u8-rs knows no LL-HLS tags).
    let parsed = parse(&text);
    assert_eq!(parsed.segments.len(), 4);
    // The live edge: segment 4 with two parts, segment 3 had six.
    let edge = state.live_edge();
    assert_eq!(
        (edge.next_msn, edge.open_parts, edge.last_segment_parts),
        (4, 2, 6)
    );
}

/// A playlist without a part target renders as before even when parts are recorded.
#[test]
fn parts_are_not_rendered_without_a_part_target() {
    let mut state = ll_state(4, 3, 2);
    let with = state.render_media_playlist();
    state.part_target_secs = None;
    let without = state.render_media_playlist();
    assert!(with.contains("#EXT-X-PART:"));
    for tag in [
        "EXT-X-PART",
        "EXT-X-SERVER-CONTROL",
        "EXT-X-PRELOAD-HINT",
        "EXT-X-SKIP",
    ] {
        assert!(!without.contains(tag), "{tag} in\n{without}");
    }
    assert_eq!(state.render_delta_update(), without);
}

/// §6.2.5.1: the delta update replaces "Media Segments that are further from the end of the
/// last (Parent) Media Segment in the Playlist than the Skip Boundary" by EXT-X-SKIP;
/// "Replacing segments with the EXT-X-SKIP tag does not change the value of the
/// EXT-X-DISCONTINUITY-SEQUENCE tag"; what is not skipped stays as in the full playlist.
#[test]
fn delta_update_skips_the_oldest_segments_and_keeps_the_rest() {
    let mut state = ll_state(10, 12, 3);
    // A discontinuity in the skipped part and one in the kept part.
    state.segments[1].discontinuity = true;
    state.segments[8].discontinuity = true;
    state.segments[8].map_uri = Some("init-2-0.mp4".into());
    let full = state.render_media_playlist();
    let delta = state.render_delta_update();
    // Segments 2..=11 listed, 2 s each, boundary 12 s: 2, 3 and 4 end more than 12 s before
    // the end of segment 11.
    assert!(
        delta.contains("\n#EXT-X-SKIP:SKIPPED-SEGMENTS=3\n"),
        "{delta}"
    );
    assert!(delta.starts_with("#EXTM3U\n#EXT-X-VERSION:9\n"));
    let header_end = |t: &str| t.find("#EXT-X-INDEPENDENT-SEGMENTS\n").unwrap();
    assert_eq!(
        full[..header_end(&full)].replace("VERSION:6", "VERSION:9"),
        delta[..header_end(&delta)]
    );
    assert!(delta.contains(&format!(
        "#EXT-X-MEDIA-SEQUENCE:{}\n#EXT-X-DISCONTINUITY-SEQUENCE:{}\n",
        state.media_sequence, state.discontinuity_sequence
    )));
    // The first kept segment is seg 5 (msn 5): it carries its map; the rest is the full
    // playlist's tail byte for byte.
    assert_eq!(state.media_sequence, 2);
    let kept_from = full
        .find("#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:30.000Z")
        .unwrap();
    let delta_from = delta.find("#EXT-X-SKIP").unwrap();
    let delta_tail = &delta[delta_from..];
    assert_eq!(
        delta_tail,
        format!(
            "#EXT-X-SKIP:SKIPPED-SEGMENTS=3\n#EXT-X-MAP:URI=\"init-1-0.mp4\"\n{}",
            &full[kept_from..]
        )
    );
    // Same segments: skipped + listed = full.
    let count = |t: &str| t.matches("#EXTINF:").count();
    assert_eq!(count(&delta) + 3, count(&full));
    // A skipped segment's EXT-X-DISCONTINUITY goes with it (§4.4.5.2: EXT-X-SKIP "replaces
    // the segment URI lines and all Media Segment Tags that are applied to those
    // segments"): the client has it from the playlist it is updating.
    assert_eq!(full.matches("#EXT-X-DISCONTINUITY\n").count(), 2, "{full}");
    assert_eq!(
        delta.matches("#EXT-X-DISCONTINUITY\n").count(),
        1,
        "{delta}"
    );
    // An ended playlist ignores _HLS_skip.
    state.end();
    assert_eq!(state.render_delta_update(), state.render_media_playlist());
    assert!(!state.render_media_playlist().contains("PRELOAD-HINT"));
}

/// A resumed session's first parts follow EXT-X-DISCONTINUITY and their new map, before the
/// segment they make is pushed; the pushed segment keeps them.
#[test]
fn open_parts_after_a_resume_carry_the_discontinuity() {
    let mut state = ll_state(5, 2, 0);
    state.begin_session();
    // Before its first part, the new session's discontinuity ends the playlist (hls.js
    // takes the last segment of a playlist that ends with its URI for the next one); a
    // plain playlist is as before.
    let waiting = state.render_media_playlist();
    assert!(
        waiting.ends_with("seg-1-1.m4s\n#EXT-X-DISCONTINUITY\n"),
        "{waiting}"
    );
    assert_eq!(waiting.matches("#EXT-X-DISCONTINUITY\n").count(), 1);
    let mut plain = state.clone();
    plain.part_target_secs = None;
    assert!(plain.render_media_playlist().ends_with("seg-1-1.m4s\n"));
    state.push_part(
        part("seg-2-0.0.m4s", 0.3, true),
        T0 + 60_000,
        Some("init-2-0.mp4".into()),
        Some("seg-2-0.1.m4s".into()),
    );
    let text = state.render_media_playlist();
    assert!(
        text.ends_with(
            "seg-1-1.m4s
#EXT-X-DISCONTINUITY
#EXT-X-MAP:URI=\"init-2-0.mp4\"
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:14:20.000Z
#EXT-X-PART:DURATION=0.300,URI=\"seg-2-0.0.m4s\",INDEPENDENT=YES
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"seg-2-0.1.m4s\"
"
        ),
        "{text}"
    );
    assert_eq!(text.matches("#EXT-X-DISCONTINUITY\n").count(), 1, "{text}");
    state.push_segment(entry("seg-2-0.m4s", 0.3, T0 + 60_000, Some("init-2-0.mp4")));
    let last = state.segments.back().unwrap();
    assert!(last.discontinuity);
    assert_eq!(last.parts.len(), 1);
    assert!(state.open.is_none());
    // The state with parts survives a serde round trip.
    let back: PlaylistState =
        serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
    assert_eq!(back, state);
}

/// §6.2.6: a part request is served from its own object while its segment is being built,
/// from the segment's bytes once the segment is listed, held when it is the preload hint,
/// and "Not Found" otherwise (and the hint is no longer held once the stream has ended).
#[test]
fn part_requests_are_served_held_or_not_found() {
    let mut state = ll_state(4, 3, 2);
    state.segments[2].parts[1].offset = 1000;
    assert_eq!(state.part_request("seg-1-3.1.m4s"), PartRequest::Stored);
    assert_eq!(
        state.part_request("seg-1-2.1.m4s"),
        PartRequest::InSegment {
            segment_uri: "seg-1-2.m4s".into(),
            offset: 1000,
            len: 1000
        }
    );
    assert_eq!(state.part_request("seg-1-3.2.m4s"), PartRequest::Hinted);
    for unknown in [
        "seg-1-3.3.m4s",
        "seg-1-2.6.m4s",
        "seg-9-9.0.m4s",
        "seg-1-2.m4s",
        "x",
    ] {
        assert_eq!(
            state.part_request(unknown),
            PartRequest::NotFound,
            "{unknown}"
        );
    }
    state.end();
    assert_eq!(state.part_request("seg-1-3.2.m4s"), PartRequest::NotFound);
}

/// A state without LL-HLS serializes exactly as before LL-HLS existed (stored records of
/// regular streams do not change).
#[test]
fn regular_state_serializes_without_ll_fields() {
    let mut state = PlaylistState::new(Container::Fmp4, 3, 2);
    state.begin_session();
    state.push_segment(entry("0.m4s", 2.0, T0, Some("i.mp4")));
    let json = serde_json::to_string(&state).unwrap();
    for field in ["part_target_secs", "open", "preload_hint", "parts"] {
        assert!(!json.contains(field), "{field} in {json}");
    }
}

// --- multivariant FRAME-RATE (issue #13) ---

/// A segment of `frames` video frames lasting `ticks` (90 kHz).
fn video_segment(n: u64, frames: u32, ticks: u64) -> SegmentEntry {
    SegmentEntry {
        start_ticks: Some(0),
        video_frames: Some(frames),
        ..entry(
            &format!("seg-1-{n}.m4s"),
            ticks as f64 / 90_000.0,
            T0,
            Some("init-1-0.mp4"),
        )
    }
}

fn frame_rate_line(state: &PlaylistState) -> String {
    let text = state.render_multivariant_playlist("index.m3u8").unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("#EXT-X-STREAM-INF:"))
        .unwrap()
        .to_string();
    let parsed = m3u8_rs::parse_master_playlist_res(text.as_bytes()).unwrap();
    let rate = parsed.variants[0].frame_rate.unwrap();
    assert!(line.contains(&format!("FRAME-RATE={rate:.3}")), "{line}");
    line
}

#[test]
fn the_multivariant_playlist_has_a_frame_rate_with_three_decimals() {
    let mut state = PlaylistState::new(Container::Fmp4, 4, 2);
    state.begin_session();
    state.codecs = Some("avc1.64001f,mp4a.40.2".into());
    state.resolution = Some((1280, 720));
    // 30 fps timed in whole milliseconds (RTMP): 60 frames in 2.000 s, then segments of
    // 1.999 and 2.001 s.
    state.push_segment(video_segment(0, 60, 180_000));
    assert_eq!(state.frame_rate_milli, Some(30_000));
    assert!(frame_rate_line(&state)
        .ends_with("CODECS=\"avc1.64001f,mp4a.40.2\",RESOLUTION=1280x720,FRAME-RATE=30.000"));
    for n in 1..20 {
        let ticks = if n % 2 == 0 { 179_910 } else { 180_090 };
        state.push_segment(video_segment(n, 60, ticks));
        assert_eq!(state.frame_rate_milli, Some(30_000), "segment {n}");
    }
    // A first segment too short to tell 30 from 29.97 (2.001 s measures 29.985) is
    // settled by the next.
    let mut state = PlaylistState::new(Container::Fmp4, 4, 2);
    state.begin_session();
    state.push_segment(video_segment(0, 60, 180_090));
    state.push_segment(video_segment(1, 60, 179_910));
    assert_eq!(state.frame_rate_milli, Some(30_000));
}

#[test]
fn a_30fps_source_with_a_timeline_jump_or_a_short_tally_is_not_taken_for_29_97() {
    // The looped RTMP test file (dash_ll.rs): 2 s segments of 60 frames, the fifth holding
    // the loop point, where the timeline jumps 6 ms (2.006 s). Frames over durations: 300
    // in 10.006 s, 29.982 fps, nearer 29.97 than 30.
    let looped = |cadence: bool| {
        let mut state = PlaylistState::new(Container::Fmp4, 4, 2);
        state.begin_session();
        for n in 0..5 {
            let mut seg = video_segment(n, 60, if n == 4 { 180_540 } else { 180_000 });
            if cadence {
                // The segmenter's regular intervals: the 39 ms one (3510 ticks) left out.
                seg.video_cadence = Some(if n == 4 {
                    FrameTally {
                        frames: 59,
                        ticks: 180_540 - 3510,
                    }
                } else {
                    FrameTally {
                        frames: 60,
                        ticks: 180_000,
                    }
                });
            }
            state.push_segment(seg);
        }
        state.frame_rate_milli
    };
    assert_eq!(
        looped(false),
        Some(29_970),
        "the failure, without the cadence"
    );
    assert_eq!(looped(true), Some(30_000));

    // A first segment of 20 frames timed in whole milliseconds (0 to 667 ms): 29.985 fps
    // is as near 29.97 as 30, but 1 ms of rounding over 0.667 s cannot rule 30 out.
    let mut state = PlaylistState::new(Container::Fmp4, 4, 2);
    state.begin_session();
    state.push_segment(video_segment(0, 20, 60_030));
    assert_eq!(state.frame_rate_milli, Some(30_000));
    // 29.97 fps is still told from 30 over a 2 s segment (1 ms is 0.05 % of it).
    state.push_segment(SegmentEntry {
        discontinuity: true,
        ..video_segment(1, 60, 180_180)
    });
    assert_eq!(state.frame_rate_milli, Some(29_970));
}

#[test]
fn ntsc_and_odd_rates_are_measured_not_rounded_to_integers() {
    let mut state = PlaylistState::new(Container::MpegTs, 4, 2);
    state.begin_session();
    // 30000/1001: 60 frames in 2.002 s.
    state.push_segment(video_segment(0, 60, 180_180));
    assert_eq!(state.frame_rate_milli, Some(29_970));
    assert!(frame_rate_line(&state).ends_with("FRAME-RATE=29.970"));
    // 24000/1001 after a reconnect: measured afresh.
    let mut film = video_segment(1, 48, 180_180);
    film.discontinuity = true;
    state.push_segment(film);
    assert_eq!(state.frame_rate_milli, Some(23_976));
    // 12.5 fps: neither an integer nor NTSC.
    let mut odd = video_segment(2, 25, 180_000);
    odd.discontinuity = true;
    state.push_segment(odd);
    assert_eq!(state.frame_rate_milli, Some(12_500));
    assert!(frame_rate_line(&state).ends_with("FRAME-RATE=12.500"));
}

#[test]
fn a_variable_frame_rate_does_not_make_the_frame_rate_jitter() {
    let mut state = PlaylistState::new(Container::Fmp4, 4, 2);
    state.begin_session();
    state.push_segment(video_segment(0, 59, 180_000));
    let first = state.frame_rate_milli;
    assert_eq!(first, Some(29_500));
    // 58..=60 frames a segment (a source dropping frames): the rendered rate settles after
    // the first segments and then stays put, however the window slides.
    let mut renders = std::collections::BTreeSet::new();
    for n in 1..200 {
        state.push_segment(video_segment(n, 58 + (n % 3) as u32, 180_000));
        if n >= 20 {
            renders.insert(state.frame_rate_milli);
        }
    }
    assert_eq!(renders.len(), 1, "{renders:?}");
}

#[test]
fn audio_only_streams_have_no_frame_rate_and_old_states_still_load() {
    let mut state = PlaylistState::new(Container::Fmp4, 4, 2);
    state.begin_session();
    state.push_segment(video_segment(0, 0, 180_000));
    assert_eq!(state.frame_rate_milli, None);
    assert!(!state
        .render_multivariant_playlist("index.m3u8")
        .unwrap()
        .contains("FRAME-RATE"));
    state.push_segment(video_segment(1, 60, 180_000));
    let json = serde_json::to_string(&state).unwrap();
    let back: PlaylistState = serde_json::from_str(&json).unwrap();
    assert_eq!(back, state);
    // A state stored before the frame rate was kept.
    let old = json
        .replace(",\"frame_rate_milli\":30000", "")
        .replace(",\"frame_tally\":{\"frames\":60,\"ticks\":180000}", "");
    assert!(!old.contains("frame_"), "{old}");
    let back: PlaylistState = serde_json::from_str(&old).unwrap();
    assert_eq!(back.frame_rate_milli, None);
    // The reset of an ended stream forgets it.
    state.end();
    state.reset_for_new_stream();
    assert_eq!(state.frame_rate_milli, None);
    assert_eq!(state.frame_tally, FrameTally::default());
}
