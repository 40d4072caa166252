//! Cutting logic, tested through a transparent fake muxer whose segment bytes describe the
//! track runs it was given.

use super::*;
use tidegate_media::{AudioCodec, VideoCodec};

/// Init bytes: `init:<video codec>|<audio codec>`; segment bytes:
/// `<seq>;V,<frames>,<first dts>,<end dts>;A,...`.
struct FakeMuxer;

impl Muxer for FakeMuxer {
    fn configure(
        &mut self,
        video: Option<&VideoConfig>,
        audio: Option<&AudioConfig>,
    ) -> Result<Option<Bytes>, PackagerError> {
        let v = video.map_or("-", |v| v.codec_string.as_str());
        let a = audio.map_or("-", |a| a.codec_string.as_str());
        Ok(Some(Bytes::from(format!("init:{v}|{a}"))))
    }

    fn segment(&mut self, sequence: u32, runs: &[TrackRun<'_>]) -> Result<Bytes, PackagerError> {
        let mut text = format!("{sequence}");
        for run in runs {
            let kind = match run.track {
                TrackKind::Video => "V",
                TrackKind::Audio => "A",
            };
            for frame in run.frames {
                assert_eq!(frame.track, run.track);
            }
            for pair in run.frames.windows(2) {
                assert!(
                    pair[0].dts < pair[1].dts,
                    "dts must strictly increase: {pair:?}"
                );
            }
            if let Some(last) = run.frames.last() {
                assert!(last.dts < run.end_dts, "the last sample needs a duration");
            }
            text.push_str(&format!(
                ";{kind},{},{},{},{}",
                run.frames.len(),
                run.frames[0].dts,
                run.end_dts,
                u8::from(run.frames[0].keyframe)
            ));
        }
        Ok(Bytes::from(text))
    }
}

#[derive(Debug, PartialEq)]
struct Run {
    track: char,
    frames: usize,
    first: i64,
    end: i64,
}

/// Whether each segment's first video frame is a keyframe.
fn starts_with_keyframe(cut: &CutSegment) -> Option<bool> {
    let text = std::str::from_utf8(&cut.data).unwrap();
    text.split(';')
        .find(|part| part.starts_with('V'))
        .map(|part| part.ends_with(",1"))
}

fn runs(cut: &CutSegment) -> Vec<Run> {
    let text = std::str::from_utf8(&cut.data).unwrap();
    text.split(';')
        .skip(1)
        .map(|part| {
            let fields: Vec<&str> = part.split(',').collect();
            Run {
                track: fields[0].chars().next().unwrap(),
                frames: fields[1].parse().unwrap(),
                first: fields[2].parse().unwrap(),
                end: fields[3].parse().unwrap(),
                // fields[4]: keyframe flag, see `starts_with_keyframe`.
            }
        })
        .collect()
}

fn run_of(cut: &CutSegment, track: char) -> Option<Run> {
    runs(cut).into_iter().find(|r| r.track == track)
}

fn segmenter(target: u64) -> Segmenter {
    Segmenter::with_muxer(
        SegmenterConfig {
            target_duration: target,
            ..SegmenterConfig::default()
        },
        Box::new(FakeMuxer),
    )
}

fn video_config(codec: &str) -> VideoConfig {
    VideoConfig {
        codec: VideoCodec::H264,
        record: Bytes::new(),
        width: 1280,
        height: 720,
        nal_length_size: 4,
        codec_string: codec.to_string(),
    }
}

fn audio_config(sample_rate: u32) -> AudioConfig {
    AudioConfig {
        codec: AudioCodec::Aac,
        asc: Bytes::new(),
        sample_rate,
        channels: 2,
        samples_per_frame: 1024,
        codec_string: "mp4a.40.2".to_string(),
    }
}

fn video(dts: i64, keyframe: bool) -> MediaEvent {
    MediaEvent::Frame(Frame {
        track: TrackKind::Video,
        dts,
        pts: dts,
        keyframe,
        data: Bytes::from_static(&[0; 100]),
    })
}

fn audio(dts: i64) -> MediaEvent {
    MediaEvent::Frame(Frame {
        track: TrackKind::Audio,
        dts,
        pts: dts,
        keyframe: true,
        data: Bytes::from_static(&[0; 10]),
    })
}

fn feed(seg: &mut Segmenter, events: impl IntoIterator<Item = MediaEvent>) -> Vec<SegmenterOutput> {
    let mut out = Vec::new();
    for event in events {
        seg.handle_event(event, 1_700_000_000_000).unwrap();
        while let Some(o) = seg.poll_output() {
            out.push(o);
        }
    }
    out
}

fn finish(seg: &mut Segmenter) -> Vec<SegmenterOutput> {
    seg.finish();
    std::iter::from_fn(|| seg.poll_output()).collect()
}

fn cuts(outputs: &[SegmenterOutput]) -> Vec<CutSegment> {
    outputs
        .iter()
        .filter_map(|o| match o {
            SegmenterOutput::Segment(s) => Some(s.clone()),
            SegmenterOutput::Init { .. } | SegmenterOutput::Part(_) => None,
        })
        .collect()
}

fn inits(outputs: &[SegmenterOutput]) -> Vec<(u32, String)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            SegmenterOutput::Init { data, id } => {
                Some((*id, String::from_utf8(data.to_vec()).unwrap()))
            }
            SegmenterOutput::Segment(_) | SegmenterOutput::Part(_) => None,
        })
        .collect()
}

/// Video frames every `interval` ticks from `from` (inclusive) to `to` (exclusive), a
/// keyframe every `gop` frames counted from `from`.
fn video_frames(from: i64, to: i64, interval: i64, gop: i64) -> Vec<MediaEvent> {
    (0..)
        .map(|i| (i, from + i * interval))
        .take_while(|&(_, dts)| dts < to)
        .map(|(i, dts)| video(dts, i % gop == 0))
        .collect()
}

/// Merges events by dts (video first on ties), as an interleaving ingest would deliver.
fn interleave(mut a: Vec<MediaEvent>, b: Vec<MediaEvent>) -> Vec<MediaEvent> {
    a.extend(b);
    let key = |e: &MediaEvent| match e {
        MediaEvent::Frame(f) => (f.dts, f.track),
        _ => (i64::MIN, TrackKind::Video),
    };
    a.sort_by_key(key);
    a
}

fn configs() -> Vec<MediaEvent> {
    vec![
        MediaEvent::VideoConfig(video_config("avc1.64001f")),
        MediaEvent::AudioConfig(audio_config(48_000)),
    ]
}

#[test]
fn cuts_exactly_at_keyframes() {
    let mut seg = segmenter(DEFAULT_TARGET_DURATION);
    let mut events = vec![MediaEvent::VideoConfig(video_config("avc1.64001f"))];
    // 30 fps, 2 s GOPs, 5 GOPs.
    events.extend(video_frames(0, 900_000, 3000, 60));
    let mut out = feed(&mut seg, events);
    out.extend(finish(&mut seg));
    assert_eq!(inits(&out), vec![(0, "init:avc1.64001f|-".to_string())]);
    assert!(matches!(out[0], SegmenterOutput::Init { .. }));
    let segs = cuts(&out);
    assert_eq!(segs.len(), 5);
    for (i, cut) in segs.iter().enumerate() {
        let start = i as i64 * 180_000;
        assert_eq!(cut.start_dts, start);
        assert_eq!(cut.duration, 180_000);
        assert_eq!(cut.video_frames, 60);
        assert_eq!(cut.audio_frames, 0);
        assert_eq!(cut.init_id, Some(0));
        assert!(!cut.discontinuity && !cut.forced);
        let expected_key = (i < 4).then_some(start + 180_000);
        assert_eq!(cut.keyframe_dts, expected_key);
        assert_eq!(
            runs(cut),
            vec![Run {
                track: 'V',
                frames: 60,
                first: start,
                end: start + 180_000
            }]
        );
        assert_eq!(cut.bytes, cut.data.len() as u64);
        assert!(std::str::from_utf8(&cut.data)
            .unwrap()
            .starts_with(&format!("{};", i + 1)));
    }
}

#[test]
fn gops_longer_and_shorter_than_target() {
    // 3 s GOPs with a 2 s target: 3 s segments.
    let mut seg = segmenter(DEFAULT_TARGET_DURATION);
    let mut events = vec![MediaEvent::VideoConfig(video_config("avc1.64001f"))];
    events.extend(video_frames(0, 900_000, 3000, 90));
    let out = feed(&mut seg, events);
    let starts: Vec<i64> = cuts(&out).iter().map(|c| c.start_dts).collect();
    assert_eq!(starts, vec![0, 270_000, 540_000]);

    // 0.75 s GOPs: cut at the first keyframe at or past 2 s, i.e. 2.25 s.
    let mut seg = segmenter(DEFAULT_TARGET_DURATION);
    let mut events = vec![MediaEvent::VideoConfig(video_config("avc1.64001f"))];
    events.extend(video_frames(0, 900_000, 2250, 30));
    let out = feed(&mut seg, events);
    let segs = cuts(&out);
    assert_eq!(segs[0].start_dts, 0);
    assert_eq!(segs[0].duration, 202_500);
    assert_eq!(segs[1].start_dts, 202_500);
    assert_eq!(segs[1].duration, 202_500);

    // A keyframe exactly at the target cuts there.
    let mut seg = segmenter(DEFAULT_TARGET_DURATION);
    let mut events = vec![MediaEvent::VideoConfig(video_config("avc1.64001f"))];
    events.extend(video_frames(0, 400_000, 3000, 60));
    let out = feed(&mut seg, events);
    assert_eq!(cuts(&out)[0].duration, 180_000);
}

#[test]
fn audio_only_cuts_on_time_and_tiles() {
    let mut seg = segmenter(DEFAULT_TARGET_DURATION);
    let mut events = vec![MediaEvent::AudioConfig(audio_config(48_000))];
    events.extend((0..300).map(|i| audio(i * 1920)));
    let mut out = feed(&mut seg, events);
    out.extend(finish(&mut seg));
    let segs = cuts(&out);
    // First frame at or past 2 s: 94 * 1920 = 180480.
    assert_eq!(segs[0].start_dts, 0);
    assert_eq!(segs[0].audio_frames, 94);
    assert_eq!(segs[0].duration, 180_480);
    assert_eq!(segs[0].keyframe_dts, None);
    assert_eq!(segs[1].start_dts, 180_480);
    // Next: first frame at or past 180480 + 180000 = 360480 -> 188 * 1920 = 360960.
    assert_eq!(segs[1].audio_frames, 94);
    let mut expected_start = 0;
    let mut total_frames = 0;
    for cut in &segs {
        assert_eq!(cut.start_dts, expected_start);
        let run = run_of(cut, 'A').unwrap();
        assert_eq!(run.end, cut.start_dts + cut.duration as i64);
        expected_start = run.end;
        total_frames += cut.audio_frames;
    }
    assert_eq!(total_frames, 300);
    // The last segment ends one nominal frame (1024 samples at 48 kHz) after its last frame.
    assert_eq!(expected_start, 300 * 1920);
}

#[test]
fn frames_before_the_first_keyframe_are_dropped() {
    let mut seg = segmenter(DEFAULT_TARGET_DURATION);
    let mut events = configs();
    events.push(audio(0));
    events.push(video(0, false));
    events.push(audio(1920));
    events.push(video(3000, false));
    events.push(audio(3840));
    events.push(video(6000, true));
    events.push(audio(5760));
    events.push(video(9000, false));
    events.push(audio(7680));
    let mut out = feed(&mut seg, events);
    out.extend(finish(&mut seg));
    assert_eq!(seg.stats().dropped_before_keyframe, 5);
    let segs = cuts(&out);
    assert_eq!(segs.len(), 1);
    assert_eq!(segs[0].start_dts, 6000);
    assert_eq!(
        runs(&segs[0]),
        vec![
            Run {
                track: 'V',
                frames: 2,
                first: 6000,
                end: 12_000
            },
            Run {
                track: 'A',
                frames: 2,
                first: 5760,
                end: 9600
            },
        ]
    );
}

#[test]
fn audio_before_the_video_config_at_startup_is_dropped() {
    let mut seg = segmenter(DEFAULT_TARGET_DURATION);
    let mut events = vec![MediaEvent::AudioConfig(audio_config(48_000))];
    events.extend((0..5).map(|i| audio(i * 1920)));
    events.push(MediaEvent::VideoConfig(video_config("avc1.64001f")));
    events.push(video(9000, true));
    events.push(audio(9600));
    let mut out = feed(&mut seg, events);
    out.extend(finish(&mut seg));
    assert_eq!(seg.stats().dropped_before_keyframe, 5);
    assert_eq!(inits(&out), vec![(0, "init:avc1.64001f|mp4a.40.2".into())]);
    let segs = cuts(&out);
    assert_eq!(segs.len(), 1);
    assert!(!segs[0].discontinuity);
    assert_eq!(segs[0].start_dts, 9000);
}

#[test]
fn codec_change_emits_init_and_discontinuity() {
    let mut seg = segmenter(DEFAULT_TARGET_DURATION);
    let mut events = configs();
    events.extend(interleave(
        video_frames(0, 270_000, 3000, 60),
        (0..140).map(|i| audio(i * 1920)).collect(),
    ));
    // Same config again (RTMP encoders repeat it): nothing happens.
    events.push(MediaEvent::VideoConfig(video_config("avc1.64001f")));
    events.push(MediaEvent::AudioConfig(audio_config(48_000)));
    // A new video config; the frames up to its keyframe are dropped.
    events.push(MediaEvent::VideoConfig(video_config("avc1.640028")));
    events.push(video(270_000, false));
    events.push(audio(140 * 1920));
    events.push(video(273_000, true));
    events.push(audio(141 * 1920));
    events.push(video(276_000, false));
    let mut out = feed(&mut seg, events);
    out.extend(finish(&mut seg));
    assert_eq!(
        inits(&out),
        vec![
            (0, "init:avc1.64001f|mp4a.40.2".into()),
            (1, "init:avc1.640028|mp4a.40.2".into())
        ]
    );
    // Order: init 0, seg, seg, init 1, seg.
    let kinds: Vec<char> = out
        .iter()
        .map(|o| match o {
            SegmenterOutput::Init { .. } => 'I',
            SegmenterOutput::Segment(_) => 'S',
            SegmenterOutput::Part(_) => 'P',
        })
        .collect();
    assert_eq!(kinds, vec!['I', 'S', 'S', 'I', 'S']);
    let segs = cuts(&out);
    assert_eq!(seg.stats().dropped_before_keyframe, 1);
    assert_eq!(segs[0].init_id, Some(0));
    assert!(!segs[0].discontinuity);
    assert_eq!(segs[1].init_id, Some(0));
    assert!(!segs[1].discontinuity);
    assert_eq!(segs[1].keyframe_dts, Some(273_000));
    // The segment the new config closed ends at the new keyframe (video) and at the next
    // audio frame (audio).
    let v = run_of(&segs[1], 'V').unwrap();
    assert_eq!((v.first, v.end), (180_000, 273_000));
    let a = run_of(&segs[1], 'A').unwrap();
    assert_eq!(a.end, 141 * 1920, "the audio frame after the keyframe");
    assert_eq!(segs[2].init_id, Some(1));
    assert!(segs[2].discontinuity);
    assert_eq!(segs[2].start_dts, 273_000);
    assert_eq!(seg.codecs().as_deref(), Some("avc1.640028,mp4a.40.2"));
    assert_eq!(seg.resolution(), Some((1280, 720)));
}

#[test]
fn audio_config_change_cuts_and_waits_for_keyframe() {
    let mut seg = segmenter(DEFAULT_TARGET_DURATION);
    let mut events = configs();
    events.extend(interleave(
        video_frames(0, 90_000, 3000, 60),
        (0..46).map(|i| audio(i * 1920)).collect(),
    ));
    events.push(MediaEvent::AudioConfig(audio_config(44_100)));
    events.push(video(90_000, false));
    events.push(audio(46 * 1920));
    events.push(video(93_000, true));
    events.push(audio(47 * 1920));
    let mut out = feed(&mut seg, events);
    out.extend(finish(&mut seg));
    let segs = cuts(&out);
    assert_eq!(segs.len(), 2);
    assert_eq!(segs[0].start_dts, 0);
    assert_eq!(segs[0].keyframe_dts, None);
    assert!(segs[1].discontinuity);
    assert_eq!(segs[1].start_dts, 93_000);
    assert_eq!(segs[1].init_id, Some(1));
    assert_eq!(seg.stats().dropped_before_keyframe, 2);
    // The new segment's last audio sample ends one 44.1 kHz AAC frame later.
    let a = run_of(&segs[1], 'A').unwrap();
    assert_eq!(a.end, 47 * 1920 + 1024 * 90_000 / 44_100);
}

#[test]
fn audio_only_stream_gains_video() {
    let mut seg = segmenter(DEFAULT_TARGET_DURATION);
    let mut events = vec![MediaEvent::AudioConfig(audio_config(48_000))];
    events.extend((0..150).map(|i| audio(i * 1920)));
    events.push(MediaEvent::VideoConfig(video_config("avc1.64001f")));
    events.push(audio(150 * 1920));
    events.push(video(289_000, false));
    events.push(audio(151 * 1920));
    events.push(video(292_000, true));
    events.push(audio(152 * 1920));
    events.push(video(295_000, false));
    let mut out = feed(&mut seg, events);
    out.extend(finish(&mut seg));
    assert_eq!(
        inits(&out),
        vec![
            (0, "init:-|mp4a.40.2".into()),
            (1, "init:avc1.64001f|mp4a.40.2".into())
        ]
    );
    let segs = cuts(&out);
    assert_eq!(segs.len(), 3);
    // The audio-only segment kept its audio up to the keyframe.
    assert_eq!(segs[1].start_dts, 180_480);
    assert_eq!(segs[1].video_frames, 0);
    assert_eq!(segs[1].audio_frames, 152 - 94);
    assert_eq!(segs[1].keyframe_dts, Some(292_000));
    assert!(segs[2].discontinuity);
    assert_eq!(segs[2].start_dts, 292_000);
    assert_eq!(segs[2].video_frames, 2);
    assert_eq!(segs[2].audio_frames, 1);
    assert_eq!(seg.stats().dropped_before_keyframe, 1);
}

#[test]
fn audio_ends_are_exact_with_jittery_timestamps() {
    // RTMP-style timestamps: milliseconds, so 21.33 ms AAC frames arrive as 21/22 ms.
    let mut seg = segmenter(DEFAULT_TARGET_DURATION);
    let audio_dts: Vec<i64> = (0..600).map(|i| (i * 1024 * 1000 / 48_000) * 90).collect();
    let mut events = configs();
    events.extend(interleave(
        video_frames(0, 1_170_000, 3003, 60),
        audio_dts.iter().map(|&d| audio(d)).collect(),
    ));
    let mut out = feed(&mut seg, events);
    out.extend(finish(&mut seg));
    let segs = cuts(&out);
    assert!(segs.len() >= 5);
    for pair in segs.windows(2) {
        let (a0, a1) = (
            run_of(&pair[0], 'A').unwrap(),
            run_of(&pair[1], 'A').unwrap(),
        );
        assert_eq!(a0.end, a1.first, "audio tiles exactly");
        let (v0, v1) = (
            run_of(&pair[0], 'V').unwrap(),
            run_of(&pair[1], 'V').unwrap(),
        );
        assert_eq!(v0.end, v1.first, "video tiles exactly");
        assert_eq!(
            pair[0].start_dts + pair[0].duration as i64,
            pair[1].start_dts
        );
    }
    let total: u32 = segs.iter().map(|c| c.audio_frames).sum();
    assert_eq!(total, 600);
}

#[test]
fn finish_flushes_with_nominal_durations() {
    let mut seg = segmenter(DEFAULT_TARGET_DURATION);
    let mut events = configs();
    events.extend(interleave(
        video_frames(0, 30_000, 3600, 60), // 25 fps
        (0..15).map(|i| audio(i * 1920)).collect(),
    ));
    let out = feed(&mut seg, events);
    assert!(cuts(&out).is_empty());
    let out = finish(&mut seg);
    let segs = cuts(&out);
    assert_eq!(segs.len(), 1);
    assert_eq!(segs[0].video_frames, 9);
    assert_eq!(segs[0].audio_frames, 15);
    let v = run_of(&segs[0], 'V').unwrap();
    assert_eq!(v.end, 8 * 3600 + 3600);
    let a = run_of(&segs[0], 'A').unwrap();
    assert_eq!(a.end, 15 * 1920);
    assert_eq!(segs[0].duration, 9 * 3600);
    // Idempotent, and later events are ignored.
    assert!(finish(&mut seg).is_empty());
    seg.handle_event(video(40_000, true), 0).unwrap();
    assert!(finish(&mut seg).is_empty());
}

#[test]
fn a_closed_segment_waits_for_a_quiet_track_only_so_long() {
    let mut seg = segmenter(DEFAULT_TARGET_DURATION);
    let mut events = configs();
    events.extend(interleave(
        video_frames(0, 180_000, 3000, 60),
        (0..93).map(|i| audio(i * 1920)).collect(),
    ));
    events.push(video(180_000, true));
    let out = feed(&mut seg, events);
    assert!(cuts(&out).is_empty(), "waits for the next audio frame");
    // Audio went quiet; video goes on.
    let out = feed(
        &mut seg,
        video_frames(183_000, 180_000 + 45_000, 3000, 1000),
    );
    assert!(cuts(&out).is_empty());
    let out = feed(&mut seg, [video(180_000 + 45_000 + 3000, false)]);
    let segs = cuts(&out);
    assert_eq!(segs.len(), 1);
    assert_eq!(run_of(&segs[0], 'A').unwrap().end, 93 * 1920);
    assert_eq!(run_of(&segs[0], 'V').unwrap().end, 180_000);
}

#[test]
fn program_date_time_is_anchored_once() {
    let mut seg = segmenter(DEFAULT_TARGET_DURATION);
    let base = 1_700_000_000_000i64;
    let mut frames = vec![MediaEvent::VideoConfig(video_config("avc1.64001f"))];
    frames.extend(video_frames(1000, 1000 + 720_000, 3000, 60));
    let mut out = Vec::new();
    for (i, event) in frames.into_iter().enumerate() {
        // Arrival jitters by up to 40 ms; the first frame arrives at base.
        let jitter = (i as i64 * 7919) % 41;
        let wallclock = base + (i as i64).saturating_sub(1).max(0) * 33 + jitter * (i > 1) as i64;
        seg.handle_event(event, wallclock).unwrap();
        out.extend(std::iter::from_fn(|| seg.poll_output()));
    }
    let segs = cuts(&out);
    assert_eq!(segs.len(), 3);
    for cut in &segs {
        assert_eq!(cut.program_date_time_ms, base + (cut.start_dts - 1000) / 90);
    }
    assert_eq!(segs[1].program_date_time_ms, base + 2000);
}

#[test]
fn timestamp_jump_marks_the_next_segment() {
    let mut seg = segmenter(DEFAULT_TARGET_DURATION);
    let mut events = vec![MediaEvent::VideoConfig(video_config("avc1.64001f"))];
    events.extend(video_frames(0, 90_000, 3000, 60));
    events.push(MediaEvent::TimestampJump {
        track: TrackKind::Video,
        delta: 900_000,
    });
    events.extend(video_frames(90_000, 540_000, 3000, 30).into_iter().skip(30));
    let mut out = feed(&mut seg, events);
    out.extend(finish(&mut seg));
    let flags: Vec<bool> = cuts(&out).iter().map(|c| c.discontinuity).collect();
    assert_eq!(flags, vec![false, true, false]);
    assert_eq!(seg.stats().timestamp_jumps, 1);
}

#[test]
fn repeated_timestamps_are_nudged_forward_not_dropped() {
    // GStreamer's flvmux under load sends two audio frames with one timestamp.
    let mut seg = segmenter(DEFAULT_TARGET_DURATION);
    feed(
        &mut seg,
        [MediaEvent::AudioConfig(audio_config(48_000))]
            .into_iter()
            .chain([0, 1920, 1920, 3870, 5760].map(audio)),
    );
    // A video frame repeating its predecessor's dts moves one tick.
    let out = finish(&mut seg);
    let cut = &cuts(&out)[0];
    assert_eq!(
        run_of(cut, 'A'),
        Some(Run {
            track: 'A',
            frames: 5,
            first: 0,
            end: 5760 + 1920
        })
    );
    assert_eq!(seg.stats().nudged, 1);
    assert_eq!(seg.stats().dropped_backwards, 0);

    let mut seg = segmenter(DEFAULT_TARGET_DURATION);
    feed(&mut seg, configs());
    feed(
        &mut seg,
        [
            video(0, true),
            video(3000, false),
            video(3000, false),
            video(9000, false),
        ],
    );
    let out = finish(&mut seg);
    assert_eq!(run_of(&cuts(&out)[0], 'V').unwrap().frames, 4);
    assert_eq!(seg.stats().nudged, 1);
}

#[test]
fn backwards_dts_is_rejected_and_dropped() {
    let mut seg = segmenter(DEFAULT_TARGET_DURATION);
    feed(&mut seg, configs());
    seg.handle_event(video(30_000, true), 0).unwrap();
    let err = seg.handle_event(video(0, false), 0).unwrap_err();
    assert!(err.is_publisher_fault());
    seg.handle_event(video(33_000, false), 0).unwrap();
    let out = finish(&mut seg);
    assert_eq!(cuts(&out)[0].video_frames, 2);
    assert_eq!(seg.stats().dropped_backwards, 1);
}

#[test]
fn frames_without_config_are_dropped() {
    let mut seg = segmenter(DEFAULT_TARGET_DURATION);
    feed(&mut seg, [video(0, true), audio(0)]);
    assert_eq!(seg.stats().dropped_without_config, 2);
    assert!(finish(&mut seg).is_empty());
}

#[test]
fn caps_force_a_cut_without_keyframes() {
    let mut seg = Segmenter::with_muxer(
        SegmenterConfig {
            target_duration: DEFAULT_TARGET_DURATION,
            max_segment_duration: 5 * SECOND,
            ..SegmenterConfig::default()
        },
        Box::new(FakeMuxer),
    );
    let mut events = vec![MediaEvent::VideoConfig(video_config("avc1.64001f"))];
    // One keyframe, then 12 s without any.
    events.extend(video_frames(0, 1_080_000, 3000, 100_000));
    let mut out = feed(&mut seg, events);
    out.extend(finish(&mut seg));
    let segs = cuts(&out);
    assert_eq!(segs.len(), 3);
    assert!(segs[0].forced && segs[1].forced && !segs[2].forced);
    assert_eq!(segs[0].duration, 453_000);
    assert_eq!(segs[1].start_dts, 453_000);
    assert_eq!(seg.stats().forced_cuts, 2);
    assert!(segs
        .iter()
        .all(|c| c.video_frames as usize <= MAX_SEGMENT_FRAMES));

    // Frame-count cap.
    let mut seg = segmenter(DEFAULT_TARGET_DURATION);
    let mut events = vec![MediaEvent::AudioConfig(audio_config(48_000))];
    // Many audio frames one tick apart never reach the target duration.
    events.extend((0..MAX_SEGMENT_FRAMES + 10).map(|i| audio(i as i64)));
    let mut out = feed(&mut seg, events);
    out.extend(finish(&mut seg));
    let segs = cuts(&out);
    assert_eq!(segs.len(), 2);
    assert!(segs[0].forced && !segs[1].forced);
    assert_eq!(segs[0].audio_frames as usize, MAX_SEGMENT_FRAMES);
    assert_eq!(segs[1].audio_frames, 10);
}

#[test]
fn muxer_errors_lose_one_segment_only() {
    struct FailingOnce(bool);
    impl Muxer for FailingOnce {
        fn configure(
            &mut self,
            _video: Option<&VideoConfig>,
            _audio: Option<&AudioConfig>,
        ) -> Result<Option<Bytes>, PackagerError> {
            Ok(None)
        }
        fn segment(
            &mut self,
            _sequence: u32,
            _runs: &[TrackRun<'_>],
        ) -> Result<Bytes, PackagerError> {
            if std::mem::take(&mut self.0) {
                Err(PackagerError::MuxerNotConfigured)
            } else {
                Ok(Bytes::from_static(b"ok"))
            }
        }
    }
    let mut seg = Segmenter::with_muxer(SegmenterConfig::default(), Box::new(FailingOnce(true)));
    let mut events = vec![MediaEvent::VideoConfig(video_config("avc1.64001f"))];
    events.extend(video_frames(0, 180_000, 3000, 60));
    for event in events {
        seg.handle_event(event, 0).unwrap();
    }
    assert!(seg.handle_event(video(180_000, true), 0).is_err());
    assert!(seg.poll_output().is_none());
    for event in video_frames(183_000, 540_000, 3000, 60) {
        seg.handle_event(event, 0).unwrap();
    }
    let out: Vec<_> = std::iter::from_fn(|| seg.poll_output()).collect();
    let segs = cuts(&out);
    assert_eq!(segs.len(), 1);
    assert!(segs[0].discontinuity, "follows a gap");
    assert_eq!(segs[0].init_id, None, "no init segment for this container");
    assert_eq!(seg.stats().mux_errors, 1);
}

#[test]
fn config_serde_defaults() {
    let config: SegmenterConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(config, SegmenterConfig::default());
    let config: SegmenterConfig = serde_json::from_str(r#"{"container":"mpegts"}"#).unwrap();
    assert_eq!(config.container, Container::MpegTs);
    // A zero target is clamped rather than cutting at every frame with a zero duration.
    let seg = segmenter(0);
    assert_eq!(seg.config().target_duration, 1);
}

/// Random GOP lengths, frame rates, audio jitter and config changes: every frame that is
/// not dropped lands in exactly one segment, segments tile, video segments begin with a
/// keyframe, nothing panics.
#[test]
fn random_streams_keep_invariants() {
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    for _ in 0..40 {
        let mut seg = segmenter(DEFAULT_TARGET_DURATION);
        let mut events = configs();
        let interval = 1500 + next(3000) as i64;
        let mut dts = 0i64;
        let mut audio_dts = 0i64;
        let mut sent = 0u64;
        for _ in 0..(200 + next(400)) {
            let gop_end = dts + interval * (1 + next(150) as i64);
            let mut first = true;
            while dts < gop_end {
                while audio_dts <= dts {
                    events.push(audio(audio_dts));
                    sent += 1;
                    audio_dts += 1920 + next(3) as i64 - 1;
                }
                events.push(video(dts, first));
                sent += 1;
                first = false;
                dts += interval;
            }
            if next(50) == 0 {
                events.push(MediaEvent::TimestampJump {
                    track: TrackKind::Video,
                    delta: 1,
                });
            }
        }
        let mut out = feed(&mut seg, events);
        out.extend(finish(&mut seg));
        let segs = cuts(&out);
        let stats = seg.stats();
        let kept: u64 = segs
            .iter()
            .map(|c| u64::from(c.video_frames + c.audio_frames))
            .sum();
        assert_eq!(kept + stats.dropped_before_keyframe, sent);
        assert_eq!(
            stats.dropped_before_keyframe, 1,
            "audio at 0 precedes the keyframe"
        );
        for pair in segs.windows(2) {
            assert_eq!(
                pair[0].start_dts + pair[0].duration as i64,
                pair[1].start_dts
            );
            assert_eq!(
                run_of(&pair[0], 'A').map(|r| r.end),
                run_of(&pair[1], 'A').map(|r| r.first)
            );
        }
        for pair in segs.windows(2) {
            if !pair[0].forced && pair[1].video_frames > 0 {
                assert_eq!(starts_with_keyframe(&pair[1]), Some(true));
            }
        }
        assert_eq!(starts_with_keyframe(&segs[0]), Some(true));
        for cut in &segs {
            assert!(
                cut.forced || cut.duration >= DEFAULT_TARGET_DURATION || cut.keyframe_dts.is_none()
            );
        }
    }
}

#[test]
fn segmenter_and_state_can_move_between_tasks() {
    fn assert_send<T: Send + 'static>() {}
    assert_send::<Segmenter>();
    assert_send::<crate::PlaylistState>();
    assert_send::<SegmenterOutput>();
}

// --- LL-HLS parts (issue #13) ---

fn parted(part: u64) -> Segmenter {
    Segmenter::with_muxer(
        SegmenterConfig {
            part_duration: Some(part),
            ..SegmenterConfig::default()
        },
        Box::new(FakeMuxer),
    )
}

/// The segments and, for each, the parts emitted before it.
fn parts_and_segments(outputs: &[SegmenterOutput]) -> Vec<(Vec<CutPart>, CutSegment)> {
    let mut result = Vec::new();
    let mut parts = Vec::new();
    for (i, output) in outputs.iter().enumerate() {
        match output {
            SegmenterOutput::Part(p) => {
                // A part says it is its segment's last exactly when the segment follows.
                let segment_next = matches!(outputs.get(i + 1), Some(SegmenterOutput::Segment(_)));
                assert_eq!(p.last, segment_next, "part {} of a segment: {p:?}", p.index);
                parts.push(p.clone());
            }
            SegmenterOutput::Segment(s) => result.push((std::mem::take(&mut parts), s.clone())),
            SegmenterOutput::Init { .. } => {}
        }
    }
    assert!(parts.is_empty(), "parts after the last segment: {parts:?}");
    result
}

/// 30 fps video with 2 s GOPs and 48 kHz audio, parts of 1/3 s: every segment is the
/// concatenation of its parts' bytes, part durations sum to the segment's, parts are 10
/// frames (at most the part duration), the first part of each segment is independent and
/// the others are not, and every part's offset is where its bytes are.
#[test]
fn parts_concatenate_to_their_segment() {
    let mut seg = parted(crate::DEFAULT_PART_DURATION);
    let mut events = configs();
    events.extend(interleave(
        video_frames(0, 8 * 90_000, 3000, 60),
        (0..)
            .map(|i| i * 1920)
            .take_while(|d| *d < 8 * 90_000)
            .map(audio)
            .collect(),
    ));
    let mut outputs = feed(&mut seg, events);
    outputs.extend(finish(&mut seg));
    let segments = parts_and_segments(&outputs);
    assert_eq!(segments.len(), 4);
    for (parts, cut) in &segments {
        let joined: Vec<u8> = parts.iter().flat_map(|p| p.data.to_vec()).collect();
        assert_eq!(joined, cut.data.to_vec());
        assert_eq!(parts.iter().map(|p| p.duration).sum::<u64>(), cut.duration);
        assert_eq!(cut.duration, 180_000);
        assert_eq!(parts.len(), 6, "{parts:?}");
        assert_eq!(cut.parts.len(), parts.len());
        for (i, part) in parts.iter().enumerate() {
            assert_eq!(part.index as usize, i);
            assert_eq!(part.independent, i == 0, "part {i}");
            assert_eq!(part.duration, 30_000);
            assert!(part.duration <= crate::DEFAULT_PART_DURATION);
            let span = cut.parts[i];
            assert_eq!(
                (span.offset, span.len),
                (part.offset, part.data.len() as u64)
            );
            assert_eq!(span.independent, part.independent);
            assert_eq!(
                &cut.data[span.offset as usize..(span.offset + span.len) as usize],
                &part.data[..]
            );
            assert_eq!(part.segment_program_date_time_ms, cut.program_date_time_ms);
        }
        // Every frame is in exactly one part.
        let frames: usize = parts
            .iter()
            .map(|p| {
                let text = std::str::from_utf8(&p.data).unwrap();
                text.split(';')
                    .skip(1)
                    .map(|r| r.split(',').nth(1).unwrap().parse::<usize>().unwrap())
                    .sum::<usize>()
            })
            .sum();
        assert_eq!(frames as u32, cut.video_frames + cut.audio_frames);
        assert_eq!(cut.video_frames, 60);
    }
    assert_eq!(seg.stats().segments, 4);
}

/// The audio of a part ends exactly where the next part's audio begins (the part waits for
/// the next audio frame), so parts tile each track.
#[test]
fn parts_tile_each_track() {
    let mut seg = parted(crate::DEFAULT_PART_DURATION);
    let mut events = configs();
    events.extend(interleave(
        video_frames(0, 4 * 90_000, 3000, 60),
        (0..)
            .map(|i| i * 1920 + 7)
            .take_while(|d| *d < 4 * 90_000)
            .map(audio)
            .collect(),
    ));
    let outputs = feed(&mut seg, events);
    let parts: Vec<CutPart> = outputs
        .iter()
        .filter_map(|o| match o {
            SegmenterOutput::Part(p) => Some(p.clone()),
            _ => None,
        })
        .collect();
    assert!(parts.len() >= 10);
    let run = |p: &CutPart, track: char| {
        let text = std::str::from_utf8(&p.data).unwrap().to_string();
        text.split(';')
            .skip(1)
            .find(|r| r.starts_with(track))
            .map(|r| {
                let f: Vec<i64> = r
                    .split(',')
                    .skip(2)
                    .take(2)
                    .map(|x| x.parse().unwrap())
                    .collect();
                (f[0], f[1])
            })
    };
    for pair in parts.windows(2) {
        for track in ['V', 'A'] {
            let (Some((_, end)), Some((next_start, _))) =
                (run(&pair[0], track), run(&pair[1], track))
            else {
                continue;
            };
            assert_eq!(end, next_start, "{track}: {pair:?}");
        }
    }
}

/// A GOP that is not a multiple of the part duration (25 fps, 2 s GOPs, 1/3 s parts): parts
/// never exceed the part duration, only a segment's last part is shorter than 85 % of it
/// (§4.4.4.9 allows that), and each segment starts with an independent part.
#[test]
fn parts_stay_within_the_part_target_at_25_fps() {
    let mut seg = parted(crate::DEFAULT_PART_DURATION);
    let mut events = configs();
    events.extend(video_frames(0, 6 * 90_000 + 1, 3600, 50));
    let outputs = feed(&mut seg, events);
    for (parts, _) in parts_and_segments(&outputs) {
        assert!(parts[0].independent);
        for (i, part) in parts.iter().enumerate() {
            assert!(part.duration <= crate::DEFAULT_PART_DURATION, "{part:?}");
            if i + 1 < parts.len() {
                assert!(
                    part.duration * 100 >= crate::DEFAULT_PART_DURATION * 85,
                    "{part:?}"
                );
            }
        }
    }
}

/// Without a part duration no part is emitted and segments have no part spans; MPEG-TS
/// ignores the part duration; a part duration is clamped to 200 ms..=1 s.
#[test]
fn parts_are_opt_in() {
    let mut seg = segmenter(DEFAULT_TARGET_DURATION);
    let mut events = configs();
    events.extend(video_frames(0, 4 * 90_000, 3000, 60));
    let outputs = feed(&mut seg, events.clone());
    assert!(!outputs
        .iter()
        .any(|o| matches!(o, SegmenterOutput::Part(_))));
    assert!(cuts(&outputs).iter().all(|c| c.parts.is_empty()));
    let ts = Segmenter::new(SegmenterConfig {
        container: Container::MpegTs,
        part_duration: Some(30_000),
        ..SegmenterConfig::default()
    });
    assert_eq!(ts.config().part_duration, None);
    assert_eq!(
        parted(1).config().part_duration,
        Some(crate::MIN_PART_DURATION)
    );
    assert_eq!(
        parted(u64::MAX).config().part_duration,
        Some(crate::MAX_PART_DURATION)
    );
    let config: SegmenterConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(config.part_duration, None);
}

/// Random frame rates, GOP lengths, audio jitter and timestamp jumps with parts: no frame is
/// lost, segments tile, each segment is its parts' bytes, part durations sum to the
/// segment's and stay within the part duration (plus the 1 ms tolerance), a segment's first
/// part is independent after a keyframe cut.
#[test]
fn random_streams_with_parts_keep_invariants() {
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    for _ in 0..30 {
        let part_duration =
            crate::MIN_PART_DURATION + next(crate::MAX_PART_DURATION - crate::MIN_PART_DURATION);
        let mut seg = parted(part_duration);
        let mut events = configs();
        let interval = 1500 + next(3000) as i64;
        let (mut dts, mut audio_dts, mut sent) = (0i64, 0i64, 0u64);
        for _ in 0..(100 + next(200)) {
            let gop_end = dts + interval * (1 + next(150) as i64);
            let mut first = true;
            while dts < gop_end {
                while audio_dts <= dts {
                    events.push(audio(audio_dts));
                    sent += 1;
                    audio_dts += 1920 + next(3) as i64 - 1;
                }
                events.push(video(dts, first));
                sent += 1;
                first = false;
                dts += interval;
            }
            if next(50) == 0 {
                events.push(MediaEvent::TimestampJump {
                    track: TrackKind::Video,
                    delta: 1,
                });
            }
        }
        let mut out = feed(&mut seg, events);
        out.extend(finish(&mut seg));
        let segments = parts_and_segments(&out);
        let kept: u64 = segments
            .iter()
            .map(|(_, c)| u64::from(c.video_frames + c.audio_frames))
            .sum();
        assert_eq!(kept + seg.stats().dropped_before_keyframe, sent);
        for pair in segments.windows(2) {
            assert_eq!(
                pair[0].1.start_dts + pair[0].1.duration as i64,
                pair[1].1.start_dts
            );
        }
        let total_parts: usize = segments.iter().map(|(p, _)| p.len()).sum();
        assert!(
            total_parts > 2 * segments.len(),
            "segments are cut into parts"
        );
        let limit = part_duration + PART_JITTER_TICKS as u64;
        for (i, (parts, cut)) in segments.iter().enumerate() {
            let joined: Vec<u8> = parts.iter().flat_map(|p| p.data.to_vec()).collect();
            assert_eq!(joined, cut.data.to_vec());
            assert_eq!(parts.iter().map(|p| p.duration).sum::<u64>(), cut.duration);
            let after_forced = i > 0 && segments[i - 1].1.forced;
            assert!(after_forced || parts[0].independent);
            for part in parts {
                assert!(part.duration <= limit, "{} > {limit}", part.duration);
            }
        }
    }
}

/// The looped 30 fps test file as ffmpeg publishes it over RTMP (`-stream_loop -1 -c copy
/// -f flv`): dts in whole milliseconds (0, 34, 67, 100, 134, …), a keyframe every 60
/// frames, and at each loop a timeline jump of 5-6 ms (the file's AAC track is longer
/// than its video): frame 300 at 10.006 s, frame 600 at 20.011 s, frame 900 at 30.016 s.
fn looped_rtmp_30fps(loops: i64) -> Vec<MediaEvent> {
    let offsets_ms = [0, 10_006, 20_011, 30_016, 40_022];
    (0..loops)
        .flat_map(|l| {
            let offset = offsets_ms[usize::try_from(l).unwrap()];
            (0..300).map(move |k| {
                let ms = offset + (k * 100 + 2) / 3;
                video(ms * 90, k % 60 == 0)
            })
        })
        .collect()
}

/// The frame rate measured for each segment of `cuts`, as the playlist would list them
/// (`cadence`: with the regular intervals, else frames over durations as before).
fn frame_rates(cuts: &[CutSegment], cadence: bool) -> Vec<Option<u32>> {
    let mut state = crate::PlaylistState::new(Container::Fmp4, 4, 2);
    state.begin_session();
    cuts.iter()
        .enumerate()
        .map(|(n, cut)| {
            let mut entry = crate::playlist::SegmentEntry::from_cut(cut, format!("{n}.m4s"), None);
            if !cadence {
                entry.video_cadence = None;
            }
            state.push_segment(entry);
            state.frame_rate_milli
        })
        .collect()
}

#[test]
fn a_looped_30fps_rtmp_source_measures_30_not_29_97() {
    for part_duration in [None, Some(30_000)] {
        let mut seg = Segmenter::with_muxer(
            SegmenterConfig {
                part_duration,
                ..SegmenterConfig::default()
            },
            Box::new(FakeMuxer),
        );
        let mut events = vec![MediaEvent::VideoConfig(video_config("avc1.64001f"))];
        events.extend(looped_rtmp_30fps(4));
        let out = feed(&mut seg, events);
        let segs = cuts(&out);
        assert!(segs.len() >= 19, "{}", segs.len());
        // The cause: each segment holding a loop point lasts 2.006 or 2.005 s for its 60
        // frames, and the frames over the durations since the session began (300 in
        // 10.006 s: 29.982 fps) come nearer 29.97 than 30.
        assert_eq!(segs[4].video_frames, 60);
        assert_eq!(segs[4].duration, 180_540);
        let counted = frame_rates(&segs, false);
        assert_eq!(counted[4], Some(29_970), "{part_duration:?}: {counted:?}");
        // Measured from the regular frame intervals (the jump left out): 30 throughout.
        assert_eq!(
            segs[4].video_cadence.intervals, 59,
            "the jump is not counted"
        );
        let measured = frame_rates(&segs, true);
        assert!(
            measured.iter().all(|r| *r == Some(30_000)),
            "{part_duration:?}: {measured:?}"
        );
    }
}

#[test]
fn regular_intervals_leave_out_jumps_and_dropped_frames() {
    let frames: Vec<Frame> = [0, 3060, 6030, 9000, 12_510, 15_570, 21_570]
        .into_iter()
        .map(|dts| match video(dts, false) {
            MediaEvent::Frame(f) => f,
            _ => unreachable!(),
        })
        .collect();
    // 34, 33, 33 ms, a 39 ms jump, 34 ms, a dropped frame, then the known end (33 ms).
    let cadence = regular_intervals(&frames, Some(24_540), 3000);
    assert_eq!(
        cadence,
        FrameCadence {
            intervals: 5,
            ticks: 3060 + 2970 + 2970 + 3060 + 2970
        }
    );
    assert_eq!(regular_intervals(&frames[..1], None, 3000).tally(), None);
}
