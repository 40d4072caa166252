//! The packaging path behind an RTMP publisher fed arbitrary tags: FLV demuxer → segmenter
//! (fMP4 or MPEG-TS, with or without LL-HLS parts, from the first byte) → playlist. Each record is a tag type byte (even:
//! audio, odd: video), a 3-byte timestamp delta in ms (so timestamps can also go back), a
//! 1-byte length and that many body bytes. Refused input is fine; a panic or a failed
//! `debug_assert!` (the segmenter's internal invariants) is a bug.
#![no_main]
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tidegate_flv::FlvDemuxer;
use tidegate_packager::{
    part_uri, Container, PartEntry, PlaylistState, SegmentEntry, Segmenter, SegmenterConfig,
    SegmenterOutput, DEFAULT_PART_DURATION,
};

fn drain(segmenter: &mut Segmenter, playlist: &mut PlaylistState, container: Container) {
    while let Some(output) = segmenter.poll_output() {
        let uri = format!("{}.{}", playlist.next_sequence, container.segment_extension());
        match output {
            SegmenterOutput::Segment(cut) => {
                // With parts, the parts' spans cover the segment's bytes exactly, in order.
                let mut at = 0;
                for span in &cut.parts {
                    assert_eq!(span.offset, at);
                    at += span.len;
                }
                assert!(cut.parts.is_empty() || at == cut.bytes);
                playlist.push_segment(SegmentEntry::from_cut(&cut, uri, None));
            }
            SegmenterOutput::Part(part) => {
                let next = Some(part_uri(&uri, part.index + 1));
                playlist.push_part(
                    PartEntry {
                        uri: part_uri(&uri, part.index),
                        duration_secs: part.duration as f64 / 90_000.0,
                        independent: part.independent,
                        gap: false,
                        offset: part.offset,
                        bytes: part.data.len() as u64,
                    },
                    part.segment_program_date_time_ms,
                    None,
                    next,
                );
            }
            SegmenterOutput::Init { .. } => {}
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, mut rest)) = data.split_first() else {
        return;
    };
    let container = if first & 1 == 0 {
        Container::Fmp4
    } else {
        Container::MpegTs
    };
    let mut demuxer = FlvDemuxer::new();
    let parts = first & 2 != 0;
    let mut segmenter = Segmenter::new(SegmenterConfig {
        container,
        part_duration: parts.then_some(DEFAULT_PART_DURATION),
        ..SegmenterConfig::default()
    });
    let mut playlist = PlaylistState::new(container, 6, 2);
    if parts {
        playlist.part_target_secs = Some(DEFAULT_PART_DURATION as f64 / 90_000.0);
    }
    playlist.begin_session();
    let mut ts: u32 = 0;
    let mut wallclock_ms: i64 = 1_700_000_000_000;
    while let Some((&[kind, d0, d1, d2, len], tail)) = rest.split_first_chunk::<5>() {
        let len = usize::from(len).min(tail.len());
        let (body, tail) = tail.split_at(len);
        rest = tail;
        // Signed 24-bit delta: mostly forward, sometimes back.
        let delta = i32::from_be_bytes([d0, d1, d2, 0]) >> 8;
        ts = ts.wrapping_add_signed(delta);
        wallclock_ms += 10;
        let body = Bytes::copy_from_slice(body);
        let fed = if kind & 1 == 0 {
            demuxer.handle_audio(ts, body)
        } else {
            demuxer.handle_video(ts, body)
        };
        if fed.is_err() {
            continue;
        }
        while let Some(event) = demuxer.poll_event() {
            let _ = segmenter.handle_event(event, wallclock_ms);
            drain(&mut segmenter, &mut playlist, container);
        }
    }
    segmenter.finish();
    drain(&mut segmenter, &mut playlist, container);
    playlist.codecs = segmenter.codecs();
    let _ = playlist.render_delta_update();
    playlist.end();
    let _ = playlist.render_media_playlist();
});
