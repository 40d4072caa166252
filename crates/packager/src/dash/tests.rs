//! The MPD rendering: periods at discontinuities, exact timelines, the window.

use super::*;

const T0: i64 = 1_700_000_000_000; // 2023-11-14T22:13:20.000Z

/// A segment of session `epoch` numbered `n`, starting at `start` ticks and lasting `ticks`.
fn segment(epoch: u64, n: u64, start: i64, ticks: u64, pdt: i64) -> SegmentEntry {
    SegmentEntry {
        sequence: 0,
        uri: format!("seg-{epoch}-{n}.m4s"),
        duration_secs: ticks as f64 / 90_000.0,
        program_date_time_ms: pdt,
        discontinuity: false,
        map_uri: Some(format!("init-{epoch}-0.mp4")),
        bytes: 500_000,
        start_ticks: Some(start),
        video_frames: Some((ticks / 3000) as u32),
        video_cadence: None,
        period: None,
        parts: Vec::new(),
    }
}

fn options(query: Option<&str>) -> MpdOptions<'_> {
    MpdOptions {
        id: "acme/main",
        base_url: Some("/hls/acme/main/"),
        query,
        utc_timing_url: "/dash/time",
        now_ms: T0 + 60_000,
    }
}

/// One session of `count` segments of `ticks` each, named as the writer names them (numbered
/// from 0 in each session, whatever the media sequence).
fn push_session(state: &mut PlaylistState, count: u64, first_dts: i64, ticks: u64, pdt: i64) {
    state.begin_session();
    let epoch = state.epoch;
    for n in 0..count {
        let offset = i64::try_from(n * ticks).unwrap();
        state.push_segment(segment(
            epoch,
            n,
            first_dts + offset,
            ticks,
            pdt + offset / 90,
        ));
    }
}

fn fmp4_state(window: usize) -> PlaylistState {
    let mut state = PlaylistState::new(Container::Fmp4, window, 2);
    state.codecs = Some("avc1.64001f,mp4a.40.2".into());
    state.resolution = Some((1280, 720));
    state.audio_sample_rate = Some(48_000);
    state
}

#[test]
fn one_session_is_one_period_with_an_exact_timeline() {
    let mut state = fmp4_state(10);
    // 2.002 s segments: 180180 ticks, not a whole number of milliseconds' worth of 90 kHz.
    push_session(&mut state, 3, 1_000, 180_180, T0);
    let mpd = state.render_mpd(&options(None)).unwrap();
    assert_eq!(
        mpd,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
<MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\" id=\"acme/main\" profiles=\"urn:mpeg:dash:profile:isoff-live:2011\" type=\"dynamic\" availabilityStartTime=\"1970-01-01T00:00:00Z\" publishTime=\"2023-11-14T22:14:20.000Z\" minimumUpdatePeriod=\"PT2.000S\" timeShiftBufferDepth=\"PT6.006S\" suggestedPresentationDelay=\"PT6.000S\" minBufferTime=\"PT2.000S\" maxSegmentDuration=\"PT2.002S\">\n\
\x20 <BaseURL>/hls/acme/main/</BaseURL>\n\
\x20 <Period id=\"p1700000000000\" start=\"PT1700000000.000S\">\n\
\x20   <AdaptationSet id=\"0\" contentType=\"video\" mimeType=\"video/mp4\" segmentAlignment=\"true\" startWithSAP=\"1\">\n\
\x20     <Representation id=\"0\" bandwidth=\"1998002\" codecs=\"avc1.64001f,mp4a.40.2\" width=\"1280\" height=\"720\" frameRate=\"30000/1001\" audioSamplingRate=\"48000\">\n\
\x20       <SegmentTemplate timescale=\"90000\" presentationTimeOffset=\"1000\" startNumber=\"0\" initialization=\"init-1-0.mp4\" media=\"seg-1-$Number$.m4s\">\n\
\x20         <SegmentTimeline>\n\
\x20           <S t=\"1000\" d=\"180180\" r=\"2\"/>\n\
\x20         </SegmentTimeline>\n\
\x20       </SegmentTemplate>\n\
\x20     </Representation>\n\
\x20   </AdaptationSet>\n\
\x20 </Period>\n\
\x20 <UTCTiming schemeIdUri=\"urn:mpeg:dash:utc:http-iso:2014\" value=\"/dash/time\"/>\n\
</MPD>\n"
    );
}

#[test]
fn a_reconnect_starts_a_second_period_with_its_own_init_and_numbering() {
    let mut state = fmp4_state(10);
    push_session(&mut state, 2, 0, 180_000, T0);
    // The publisher comes back 3 s after the first session's last segment ended, with its
    // timestamps from 0 again.
    push_session(&mut state, 2, 0, 171_000, T0 + 7_000);
    let mpd = state.render_mpd(&options(None)).unwrap();
    assert_eq!(mpd.matches("<Period ").count(), 2, "{mpd}");
    assert!(
        mpd.contains("<Period id=\"p1700000000000\" start=\"PT1700000000.000S\">"),
        "{mpd}"
    );
    assert!(
        mpd.contains("<Period id=\"p1700000007000\" start=\"PT1700000007.000S\">"),
        "{mpd}"
    );
    assert!(mpd.contains(
        "presentationTimeOffset=\"0\" startNumber=\"0\" initialization=\"init-1-0.mp4\" media=\"seg-1-$Number$.m4s\""
    ));
    assert!(mpd.contains(
        "presentationTimeOffset=\"0\" startNumber=\"0\" initialization=\"init-2-0.mp4\" media=\"seg-2-$Number$.m4s\""
    ));
    assert!(mpd.contains("<S t=\"0\" d=\"180000\" r=\"1\"/>"));
    assert!(mpd.contains("<S t=\"0\" d=\"171000\" r=\"1\"/>"));
    // The window is the listed media: 2 × 2 s + 2 × 1.9 s.
    assert!(mpd.contains("timeShiftBufferDepth=\"PT7.800S\""), "{mpd}");

    // The first period's segments leave the window: the second period keeps its id, its
    // start and its presentationTimeOffset (DASH-IF: they must not change in an update).
    for _ in 0..10 {
        let n = state.next_sequence - 2;
        let start = i64::try_from(n * 171_000).unwrap();
        state.push_segment(segment(2, n, start, 171_000, T0 + 7_000 + start / 90));
    }
    let mpd = state.render_mpd(&options(None)).unwrap();
    assert_eq!(mpd.matches("<Period ").count(), 1, "{mpd}");
    assert!(
        mpd.contains("<Period id=\"p1700000007000\" start=\"PT1700000007.000S\">"),
        "{mpd}"
    );
    assert!(
        mpd.contains("presentationTimeOffset=\"0\" startNumber=\"2\""),
        "{mpd}"
    );
    assert!(
        mpd.contains("<S t=\"342000\" d=\"171000\" r=\"9\"/>"),
        "{mpd}"
    );
    assert!(mpd.contains("timeShiftBufferDepth=\"PT19.000S\""), "{mpd}");
}

#[test]
fn periods_never_overlap_even_when_the_wall_clock_disagrees() {
    let mut state = fmp4_state(10);
    push_session(&mut state, 2, 0, 180_000, T0);
    // A failover to a worker whose clock is a second behind.
    push_session(&mut state, 1, 0, 180_000, T0 + 3_000);
    let mpd = state.render_mpd(&options(None)).unwrap();
    assert!(
        mpd.contains("<Period id=\"p1700000004000\" start=\"PT1700000004.000S\">"),
        "{mpd}"
    );
}

#[test]
fn a_gap_in_the_timeline_is_written_with_its_time() {
    let mut state = fmp4_state(10);
    state.begin_session();
    state.push_segment(segment(1, 0, 0, 180_000, T0));
    state.push_segment(segment(1, 1, 180_000, 90_000, T0 + 2_000));
    state.push_segment(segment(1, 2, 300_000, 90_000, T0 + 3_333));
    let mpd = state.render_mpd(&options(None)).unwrap();
    assert!(
        mpd.contains("<S t=\"0\" d=\"180000\"/>\n            <S d=\"90000\"/>\n            <S t=\"300000\" d=\"90000\"/>"),
        "{mpd}"
    );
}

#[test]
fn signed_playback_carries_the_query_on_every_url() {
    let mut state = fmp4_state(10);
    push_session(&mut state, 1, 0, 180_000, T0);
    let mpd = state.render_mpd(&options(Some("token=a.b$c&x"))).unwrap();
    assert!(
        mpd.contains("initialization=\"init-1-0.mp4?token=a.b$$c&amp;x\" media=\"seg-1-$Number$.m4s?token=a.b$$c&amp;x\""),
        "{mpd}"
    );
}

#[test]
fn an_ended_stream_has_a_duration_and_no_more_updates() {
    let mut state = fmp4_state(10);
    push_session(&mut state, 2, 0, 180_000, T0);
    state.end();
    let mpd = state.render_mpd(&options(None)).unwrap();
    assert!(!mpd.contains("minimumUpdatePeriod"), "{mpd}");
    assert!(
        mpd.contains("mediaPresentationDuration=\"PT1700000004.000S\""),
        "{mpd}"
    );
}

#[test]
fn audio_only_streams_are_audio() {
    let mut state = PlaylistState::new(Container::Fmp4, 10, 2);
    state.codecs = Some("mp4a.40.2".into());
    state.audio_sample_rate = Some(44_100);
    state.begin_session();
    let mut entry = segment(1, 0, 0, 180_000, T0);
    entry.video_frames = Some(0);
    state.push_segment(entry);
    let mpd = state.render_mpd(&options(None)).unwrap();
    assert!(
        mpd.contains("contentType=\"audio\" mimeType=\"audio/mp4\""),
        "{mpd}"
    );
    assert!(!mpd.contains("frameRate"), "{mpd}");
    assert!(mpd.contains("audioSamplingRate=\"44100\""), "{mpd}");
}

#[test]
fn mpeg_ts_and_empty_streams_have_no_mpd() {
    let mut state = PlaylistState::new(Container::MpegTs, 10, 2);
    state.begin_session();
    let mut entry = segment(1, 0, 0, 180_000, T0);
    entry.uri = "seg-1-0.ts".into();
    entry.map_uri = None;
    state.push_segment(entry);
    assert_eq!(
        state.render_mpd(&options(None)),
        Err(MpdUnavailable::MpegTs)
    );
    assert_eq!(
        fmp4_state(10).render_mpd(&options(None)),
        Err(MpdUnavailable::NoSegments)
    );
}

#[test]
fn a_new_playlist_after_an_end_is_numbered_by_its_names_not_the_media_sequence() {
    let mut state = fmp4_state(10);
    push_session(&mut state, 3, 0, 180_000, T0);
    state.end();
    state.reset_for_new_stream();
    // The writer names the new session's segments from 0; the media sequence goes on at 3.
    push_session(&mut state, 2, 0, 180_000, T0 + 60_000);
    assert_eq!(state.segments.front().map(|s| s.sequence), Some(3));
    let mpd = state.render_mpd(&options(None)).unwrap();
    assert_eq!(mpd.matches("<Period ").count(), 1, "{mpd}");
    let init = format!(
        "startNumber=\"0\" initialization=\"init-{}-0.mp4\"",
        state.epoch
    );
    assert!(mpd.contains(&init), "{mpd}");
    assert!(mpd.contains("minimumUpdatePeriod"), "live again: {mpd}");
}

#[test]
fn a_state_stored_without_period_anchors_still_renders() {
    let mut state = fmp4_state(10);
    push_session(&mut state, 2, 900, 180_000, T0);
    push_session(&mut state, 1, 0, 180_000, T0 + 10_000);
    for s in state.segments.iter_mut() {
        s.period = None;
    }
    let mpd = state.render_mpd(&options(None)).unwrap();
    assert!(
        mpd.contains("<Period id=\"d0\" start=\"PT1700000000.000S\">"),
        "{mpd}"
    );
    assert!(
        mpd.contains("<Period id=\"d1\" start=\"PT1700000010.000S\">"),
        "{mpd}"
    );
    assert!(mpd.contains("presentationTimeOffset=\"900\""), "{mpd}");
}

#[test]
fn the_period_anchor_survives_a_serde_round_trip() {
    let mut state = fmp4_state(10);
    push_session(&mut state, 2, 900, 180_000, T0);
    let json = serde_json::to_string(&state).unwrap();
    let back: PlaylistState = serde_json::from_str(&json).unwrap();
    assert_eq!(back, state);
    assert_eq!(
        back.render_mpd(&options(None)),
        state.render_mpd(&options(None))
    );
}

// --- low-latency DASH (issue #13) ---

/// Part `index` of segment `n` of session `epoch`, a third of a second long.
fn part(epoch: u64, n: u64, index: u32) -> PartEntry {
    PartEntry {
        uri: crate::part_uri(&format!("seg-{epoch}-{n}.m4s"), index),
        duration_secs: 1.0 / 3.0,
        independent: index == 0,
        gap: false,
        offset: u64::from(index) * 1000,
        bytes: 1000,
    }
}

/// A stream with 1/3 s parts: 3 complete 2 s segments, then `open_parts` parts of the
/// fourth published.
fn ll_state(open_parts: u32) -> PlaylistState {
    let mut state = fmp4_state(10);
    state.part_target_secs = Some(1.0 / 3.0);
    push_session(&mut state, 3, 0, 180_000, T0);
    let epoch = state.epoch;
    for index in 0..open_parts {
        state.push_part(
            part(epoch, 3, index),
            T0 + 6000,
            Some(format!("init-{epoch}-0.mp4")),
            Some(crate::part_uri(&format!("seg-{epoch}-3.m4s"), index + 1)),
        );
    }
    state
}

#[test]
fn without_parts_the_mpd_has_no_low_latency_signalling() {
    let mut state = fmp4_state(10);
    push_session(&mut state, 3, 0, 180_000, T0);
    assert_eq!(state.low_latency_dash(), None);
    assert_eq!(state.segment_in_progress(), None);
    let mpd = state.render_mpd(&options(None)).unwrap();
    assert!(mpd.contains("minimumUpdatePeriod=\"PT2.000S\""), "{mpd}");
    for absent in [
        "availabilityTimeOffset",
        "availabilityTimeComplete",
        "ServiceDescription",
        LL_DASH_PROFILE,
    ] {
        assert!(!mpd.contains(absent), "{absent}: {mpd}");
    }
    // MPEG-TS with parts has no MPD at all, and no low-latency DASH.
    let mut ts = ll_state(2);
    ts.container = Container::MpegTs;
    assert_eq!(ts.low_latency_dash(), None);
}

#[test]
fn with_parts_the_segment_being_built_is_announced_with_availability_time_offset() {
    let state = ll_state(2);
    let building = state.segment_in_progress().unwrap();
    assert_eq!(building.uri, "seg-1-3.m4s");
    assert_eq!(building.parts.len(), 2);
    let mpd = state.render_mpd(&options(None)).unwrap();
    assert!(
        mpd.contains(&format!(
            "profiles=\"urn:mpeg:dash:profile:isoff-live:2011,{LL_DASH_PROFILE}\""
        )),
        "{mpd}"
    );
    assert!(
        mpd.contains(
            "  <BaseURL>/hls/acme/main/</BaseURL>\n  <ServiceDescription id=\"0\">\n    <Latency target=\"1500\" min=\"1125\" max=\"3000\"/>\n    <PlaybackRate min=\"0.96\" max=\"1.04\"/>\n  </ServiceDescription>\n  <Period "
        ),
        "{mpd}"
    );
    // 2 s segments, 1/3 s parts: available once the first part is.
    assert!(
        mpd.contains(
            "media=\"seg-1-$Number$.m4s\" availabilityTimeOffset=\"1.667\" availabilityTimeComplete=\"false\">"
        ),
        "{mpd}"
    );
    // Three complete segments and the fourth, being built, announced with the previous
    // one's duration: number 3 of the template.
    assert!(
        mpd.contains("<S t=\"0\" d=\"180000\" r=\"3\"/>\n          </SegmentTimeline>"),
        "{mpd}"
    );
    assert!(mpd.contains("timeShiftBufferDepth=\"PT6.000S\""), "{mpd}");
    assert!(mpd.contains("<UTCTiming "), "{mpd}");
    // Updated every three parts, not once a segment: dash.js learns of the next segment
    // only from an update.
    assert!(mpd.contains("minimumUpdatePeriod=\"PT1.000S\""), "{mpd}");
    assert_eq!(
        state.low_latency_dash().unwrap().minimum_update_period_ms,
        1000
    );
    // Parts of a whole second: never longer than a segment.
    let mut slow = ll_state(2);
    slow.part_target_secs = Some(1.0);
    assert_eq!(
        slow.low_latency_dash().unwrap().minimum_update_period_ms,
        2000
    );

    // Between segments the next one is only hinted: not announced before its first part
    // is stored (it may never exist).
    let mut state = fmp4_state(10);
    state.part_target_secs = Some(1.0 / 3.0);
    push_session(&mut state, 3, 0, 180_000, T0);
    assert_eq!(state.segment_in_progress(), None);
    state.preload_hint = Some(crate::part_uri("seg-1-3.m4s", 0));
    assert_eq!(state.segment_in_progress(), None);
    let mpd = state.render_mpd(&options(None)).unwrap();
    assert!(mpd.contains("<S t=\"0\" d=\"180000\" r=\"2\"/>"), "{mpd}");
}

#[test]
fn a_segment_longer_than_the_last_is_announced_with_its_parts_duration() {
    // Seven parts of a third of a second: 2.333 s so far.
    let state = ll_state(7);
    let mpd = state.render_mpd(&options(None)).unwrap();
    assert!(
        mpd.contains("<S t=\"0\" d=\"180000\" r=\"2\"/>\n            <S d=\"210000\"/>"),
        "{mpd}"
    );
}

#[test]
fn the_complete_segment_replaces_the_announced_one_and_the_next_is_announced() {
    let mut state = ll_state(6);
    let epoch = state.epoch;
    let mut complete = segment(epoch, 3, 540_000, 180_000, T0 + 6000);
    complete.parts = (0..6).map(|i| part(epoch, 3, i)).collect();
    state.push_segment(complete);
    state.preload_hint = Some(crate::part_uri(&format!("seg-{epoch}-4.m4s"), 0));
    let mpd = state.render_mpd(&options(None)).unwrap();
    // Four complete segments; the fifth, only hinted, is not announced yet.
    assert!(mpd.contains("<S t=\"0\" d=\"180000\" r=\"3\"/>"), "{mpd}");
    assert_eq!(state.segment_in_progress(), None);
    state.push_part(
        part(epoch, 4, 0),
        T0 + 8000,
        Some(format!("init-{epoch}-0.mp4")),
        Some(crate::part_uri(&format!("seg-{epoch}-4.m4s"), 1)),
    );
    assert_eq!(state.segment_in_progress().unwrap().uri, "seg-1-4.m4s");
    let mpd = state.render_mpd(&options(None)).unwrap();
    assert!(mpd.contains("<S t=\"0\" d=\"180000\" r=\"4\"/>"), "{mpd}");
}

#[test]
fn a_segment_being_built_after_a_reconnect_waits_for_its_period() {
    let mut state = ll_state(0);
    state.begin_session();
    let epoch = state.epoch;
    state.push_part(
        part(epoch, 0, 0),
        T0 + 9000,
        Some(format!("init-{epoch}-0.mp4")),
        Some(crate::part_uri(&format!("seg-{epoch}-0.m4s"), 1)),
    );
    let building = state.segment_in_progress().unwrap();
    assert!(building.discontinuity);
    let mpd = state.render_mpd(&options(None)).unwrap();
    // The old period's three segments only: the new period starts when its first segment
    // is complete.
    assert!(mpd.contains("<S t=\"0\" d=\"180000\" r=\"2\"/>"), "{mpd}");
    assert!(!mpd.contains(&format!("seg-{epoch}-")), "{mpd}");
}

#[test]
fn an_ended_stream_announces_nothing_in_progress() {
    let mut state = ll_state(3);
    state.end();
    assert_eq!(state.segment_in_progress(), None);
    let mpd = state.render_mpd(&options(None)).unwrap();
    assert!(mpd.contains("<S t=\"0\" d=\"180000\" r=\"2\"/>"), "{mpd}");
    assert!(mpd.contains("mediaPresentationDuration"), "{mpd}");
}

#[test]
fn after_a_short_last_segment_the_next_period_starts_after_its_announced_end() {
    // Announced while being built with the previous segment's 2 s, the last segment of the
    // session was cut short at 0.76 s (the publisher left): a DASH player that fetched it
    // believes it ends 1.24 s later, and the new period must not start inside that.
    let mut state = fmp4_state(10);
    state.part_target_secs = Some(1.0 / 3.0);
    push_session(&mut state, 2, 0, 180_000, T0);
    let epoch = state.epoch;
    state.push_segment(segment(epoch, 2, 360_000, 68_400, T0 + 4000));
    state.begin_session();
    let mut first = segment(state.epoch, 0, 0, 180_000, T0 + 4900);
    first.discontinuity = true;
    state.push_segment(first);
    let anchor = state.segments.back().unwrap().period.unwrap();
    // Actual end T0 + 4760; announced end T0 + 6000; and at least LL_PERIOD_GAP_MIN_MS
    // after the actual end, so that dash.js jumps the gap into the new period.
    assert_eq!(anchor.start_ms, T0 + 4760 + LL_PERIOD_GAP_MIN_MS);
    let mpd = state.render_mpd(&options(None)).unwrap();
    assert!(
        mpd.contains("<Period id=\"p1700000006760\" start=\"PT1700000006.760S\">"),
        "{mpd}"
    );
    // The old period's timeline is the segments as stored: 2 s, 2 s and the short one.
    assert!(
        mpd.contains("<S t=\"0\" d=\"180000\" r=\"1\"/>\n            <S d=\"68400\"/>"),
        "{mpd}"
    );

    // Without parts nothing was announced: the period starts at its wall clock.
    let mut state = fmp4_state(10);
    push_session(&mut state, 2, 0, 180_000, T0);
    let epoch = state.epoch;
    state.push_segment(segment(epoch, 2, 360_000, 68_400, T0 + 4000));
    state.begin_session();
    let mut first = segment(state.epoch, 0, 0, 180_000, T0 + 4900);
    first.discontinuity = true;
    state.push_segment(first);
    assert_eq!(
        state.segments.back().unwrap().period.unwrap().start_ms,
        T0 + 4900
    );
}

#[test]
fn with_parts_a_new_period_starts_at_least_the_minimum_gap_after_the_last_media() {
    // The publisher came back quickly (its first frame 0.5 s after the last one) after a
    // session whose last segment was complete (2 s, as announced): the new period still
    // starts LL_PERIOD_GAP_MIN_MS after the old media's end, not at its wall clock.
    let mut state = fmp4_state(10);
    state.part_target_secs = Some(1.0 / 3.0);
    push_session(&mut state, 3, 0, 180_000, T0);
    state.begin_session();
    let mut first = segment(state.epoch, 0, 0, 180_000, T0 + 6500);
    first.discontinuity = true;
    state.push_segment(first);
    let anchor = state.segments.back().unwrap().period.unwrap();
    assert_eq!(anchor.start_ms, T0 + 6000 + LL_PERIOD_GAP_MIN_MS);
    // A publisher away for longer: its wall clock.
    let mut state = fmp4_state(10);
    state.part_target_secs = Some(1.0 / 3.0);
    push_session(&mut state, 3, 0, 180_000, T0);
    state.begin_session();
    let mut first = segment(state.epoch, 0, 0, 180_000, T0 + 9500);
    first.discontinuity = true;
    state.push_segment(first);
    let anchor = state.segments.back().unwrap().period.unwrap();
    assert_eq!(anchor.start_ms, T0 + 9500);
}

#[test]
fn frame_rates_are_snapped_as_for_hls() {
    let rate = |frames: u32, ticks: u64| {
        let mut s = segment(1, 0, 0, ticks, T0);
        s.video_frames = Some(frames);
        frame_rate(&[&s])
    };
    // 30 fps, 29.97 fps (60 frames of 3003 ticks), 25 fps, and 12.5 (nothing standard).
    assert_eq!(rate(60, 180_000).as_deref(), Some("30"));
    assert_eq!(rate(60, 180_180).as_deref(), Some("30000/1001"));
    assert_eq!(rate(50, 180_000).as_deref(), Some("25"));
    assert_eq!(rate(48, 180_000).as_deref(), Some("24"));
    assert_eq!(rate(120, 180_180).as_deref(), Some("60000/1001"));
    assert_eq!(rate(25, 180_000).as_deref(), Some("12500/1000"));
    // One millisecond off (RTMP timestamps) still reads as 30.
    assert_eq!(rate(60, 180_090).as_deref(), Some("30"));
}
