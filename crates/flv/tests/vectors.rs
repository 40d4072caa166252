//! Tag vectors from real ffmpeg output (Debian ffmpeg 5.1 for H.264/AAC, ffmpeg 9 from
//! imageio-ffmpeg for Enhanced RTMP HEVC/AV1/Opus/multitrack), plus hand-built ones for the
//! parts of the spec no encoder at hand emits (ModEx, many-track messages).
// A test binary: its helpers (outside `#[test]` functions, which clippy.toml already
// covers) may unwrap, panic and index too; the crate's deny lints are for its library code.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use bytes::Bytes;
use tidegate_flv::{
    parse_audio_tag, parse_video_tag, AudioTag, FlvDemuxer, FlvError, Ignored, VideoTag,
};
use tidegate_media::timestamp::JumpThresholds;
use tidegate_media::{Frame, MediaEvent, TrackKind, VideoCodec};

fn hex(s: &str) -> Bytes {
    let s: String = s.split_whitespace().collect();
    assert!(s.len().is_multiple_of(2), "odd hex literal");
    Bytes::from(
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect::<Vec<u8>>(),
    )
}

/// `ffmpeg -f lavfi -i testsrc2=size=640x360 -c:v libx264 -f flv`: AVC sequence header.
const AVC_SEQ: &str = "17 00 000000 0164001effe1001a6764001eacd940a02ff970110000030001000003003c0f162d9601000668ebe3cb22c0fdf8f800";
/// The matching AAC sequence header (44.1 kHz mono) from the same file.
const AAC_SEQ: &str = "af 00 120856e500";
/// ffmpeg 9 `-c:v libx265 -f flv`, 426x240: Enhanced RTMP hvc1 SequenceStart.
const HEVC_SEQ: &str = "90 68766331 0101600000009000000000003cf000fcfdf8f800000f03200001001840010c01ffff01600000030090000003000003003c959809210001002b42010101600000030090000003000003003ca00d880f1c9e5959a4932bc05a02000003000200000300321022000100074401c172b46240";
/// The metadata (colorInfo) packet ffmpeg 9 sends right after.
const HEVC_METADATA: &str =
    "d4 68766331 020009636f6c6f72496e666f03000b636f6c6f72436f6e66696703000009000009";
/// ffmpeg 9 `-c:v libsvtav1 -pix_fmt yuv420p10le -f flv`, 320x180: av01 SequenceStart.
const AV1_SEQ: &str = "90 61763031 81004c000a0b0200000561e7f66017c202";
/// ffmpeg 9 `-c:a libopus -f flv`: Opus SequenceStart.
const OPUS_SEQ: &str = "90 4f707573 4f707573486561640101380180bb0000000000";
/// ffmpeg 9 with a second audio stream: multitrack (OneTrack) SequenceStart for track 1.
const MULTITRACK_AUDIO_TRACK1: &str = "95 00 6d703461 01 120856e500";

/// Two length-prefixed NAL units (AUD, a slice).
const NALS: &str = "00000002 09f0 00000003 658884";

fn frames(d: &mut FlvDemuxer) -> Vec<MediaEvent> {
    std::iter::from_fn(|| d.poll_event()).collect()
}

fn frame(e: &MediaEvent) -> &Frame {
    match e {
        MediaEvent::Frame(f) => f,
        other => panic!("expected a frame, got {other:?}"),
    }
}

#[test]
fn h264_aac_stream() {
    let mut d = FlvDemuxer::new();
    d.handle_video(0, hex(AVC_SEQ)).unwrap();
    d.handle_audio(0, hex(AAC_SEQ)).unwrap();
    let ev = frames(&mut d);
    assert_eq!(ev.len(), 2);
    match &ev[0] {
        MediaEvent::VideoConfig(c) => {
            assert_eq!(c.codec_string, "avc1.64001e");
            assert_eq!((c.width, c.height), (640, 360));
        }
        other => panic!("{other:?}"),
    }
    match &ev[1] {
        MediaEvent::AudioConfig(c) => {
            assert_eq!(c.codec_string, "mp4a.40.2");
            assert_eq!((c.sample_rate, c.channels), (44100, 1));
        }
        other => panic!("{other:?}"),
    }
    // Key frame, cts 67 ms (real header bytes 17 01 000043).
    let key = hex(&format!("17 01 000043 {NALS}"));
    d.handle_video(0, key.clone()).unwrap();
    // Inter frame at 40 ms, cts 133 ms; negative cts -40 ms also works.
    d.handle_video(40, hex(&format!("27 01 000085 {NALS}")))
        .unwrap();
    d.handle_video(80, hex(&format!("27 01 ffffd8 {NALS}")))
        .unwrap();
    let raw = hex("af 01 de0200 4c61");
    d.handle_audio(23, raw.clone()).unwrap();
    let ev = frames(&mut d);
    assert_eq!(ev.len(), 4);
    let f = frame(&ev[0]);
    assert_eq!(
        (f.track, f.dts, f.pts, f.keyframe),
        (TrackKind::Video, 0, 67 * 90, true)
    );
    assert_eq!(f.data, hex(NALS));
    // The payload is a slice of the input, not a copy.
    assert_eq!(f.data.as_ptr(), key[5..].as_ptr());
    let f = frame(&ev[1]);
    assert_eq!((f.dts, f.pts, f.keyframe), (40 * 90, 173 * 90, false));
    let f = frame(&ev[2]);
    assert_eq!((f.dts, f.pts), (80 * 90, 40 * 90));
    let f = frame(&ev[3]);
    assert_eq!(
        (f.track, f.dts, f.pts, f.keyframe),
        (TrackKind::Audio, 23 * 90, 23 * 90, true)
    );
    assert_eq!(f.data.as_ptr(), raw[2..].as_ptr());
    assert_eq!(d.stats().video_frames, 3);
    assert_eq!(d.stats().audio_frames, 1);
}

#[test]
fn repeated_sequence_headers_are_deduplicated() {
    let mut d = FlvDemuxer::new();
    d.handle_video(0, hex(AVC_SEQ)).unwrap();
    d.handle_video(1000, hex(AVC_SEQ)).unwrap();
    d.handle_audio(0, hex(AAC_SEQ)).unwrap();
    d.handle_audio(1000, hex(AAC_SEQ)).unwrap();
    assert_eq!(frames(&mut d).len(), 2);
    assert_eq!(d.stats().repeated_configs, 2);
    // A different configuration (HEVC now) is announced.
    d.handle_video(2000, hex(HEVC_SEQ)).unwrap();
    d.handle_audio(2000, hex("af 00 1190")).unwrap();
    let ev = frames(&mut d);
    assert!(matches!(&ev[0], MediaEvent::VideoConfig(c) if c.codec == VideoCodec::H265));
    assert!(matches!(&ev[1], MediaEvent::AudioConfig(c) if c.sample_rate == 48000));
    assert_eq!(d.video_config().unwrap().codec_string, "hvc1.1.6.L60.90");
    assert_eq!(d.audio_config().unwrap().channels, 2);
    // An AVC frame after the switch is a protocol violation.
    let err = d
        .handle_video(2040, hex(&format!("17 01 000000 {NALS}")))
        .unwrap_err();
    assert_eq!(err.kind(), "codec_mismatch");
}

#[test]
fn frames_before_configuration_and_empty_frames_are_dropped() {
    let mut d = FlvDemuxer::new();
    d.handle_video(0, hex(&format!("17 01 000000 {NALS}")))
        .unwrap();
    d.handle_audio(0, hex("af 01 2100")).unwrap();
    assert_eq!(d.stats().frames_before_config, 2);
    d.handle_video(0, Bytes::new()).unwrap();
    d.handle_audio(0, Bytes::new()).unwrap();
    d.handle_video(0, hex(AVC_SEQ)).unwrap();
    d.handle_audio(0, hex(AAC_SEQ)).unwrap();
    d.handle_video(0, hex("17 01 000000")).unwrap();
    d.handle_audio(0, hex("af 01")).unwrap();
    assert_eq!(d.stats().empty_frames, 4);
    let ev = frames(&mut d);
    // The video frame before its sequence header is reported (health counts undecodable
    // video); the audio one is only counted. Then the two configurations.
    assert_eq!(ev.len(), 3, "{ev:?}");
    assert_eq!(ev[0], MediaEvent::VideoWithoutConfig);
    assert!(matches!(ev[1], MediaEvent::VideoConfig(_)), "{ev:?}");
    assert!(matches!(ev[2], MediaEvent::AudioConfig(_)), "{ev:?}");
}

#[test]
fn enhanced_hevc() {
    let mut d = FlvDemuxer::new();
    d.handle_video(0, hex(HEVC_SEQ)).unwrap();
    d.handle_video(0, hex(HEVC_METADATA)).unwrap();
    // ffmpeg 9: 91 hvc1 000050 (CodedFrames, key, cts 80) then a1 hvc1 0000c8 (inter, 200).
    d.handle_video(0, hex(&format!("91 68766331 000050 {NALS}")))
        .unwrap();
    d.handle_video(40, hex(&format!("a1 68766331 0000c8 {NALS}")))
        .unwrap();
    // CodedFramesX: no composition time.
    d.handle_video(80, hex(&format!("a3 68766331 {NALS}")))
        .unwrap();
    let ev = frames(&mut d);
    assert_eq!(ev.len(), 4, "{ev:?}");
    match &ev[0] {
        MediaEvent::VideoConfig(c) => {
            assert_eq!(c.codec_string, "hvc1.1.6.L60.90");
            assert_eq!((c.width, c.height), (426, 240));
        }
        other => panic!("{other:?}"),
    }
    let f = frame(&ev[1]);
    assert_eq!((f.dts, f.pts, f.keyframe), (0, 80 * 90, true));
    let f = frame(&ev[2]);
    assert_eq!((f.dts, f.pts, f.keyframe), (40 * 90, 240 * 90, false));
    let f = frame(&ev[3]);
    assert_eq!((f.dts, f.pts), (80 * 90, 80 * 90));
    assert_eq!(f.data, hex(NALS));
    assert_eq!(d.stats().ignored_messages, 1);
}

#[test]
fn legacy_hevc_codec_id_12() {
    let hvcc = &HEVC_SEQ[12..];
    let mut d = FlvDemuxer::new();
    d.handle_video(0, hex(&format!("1c 00 000000 {hvcc}")))
        .unwrap();
    d.handle_video(0, hex(&format!("1c 01 000021 {NALS}")))
        .unwrap();
    let ev = frames(&mut d);
    assert!(matches!(&ev[0], MediaEvent::VideoConfig(c) if c.codec == VideoCodec::H265));
    assert_eq!(frame(&ev[1]).pts, 33 * 90);
}

#[test]
fn enhanced_av1() {
    let mut d = FlvDemuxer::new();
    d.handle_video(0, hex(AV1_SEQ)).unwrap();
    // ffmpeg 9's first frame starts 91 av01 1200 0a0b...: CodedFrames without composition
    // time, a temporal delimiter first. Here: TD + sequence header + a one-byte frame OBU.
    let tu = hex("91 61763031 1200 0a0b0200000561e7f66017c202 3201aa");
    d.handle_video(0, tu.clone()).unwrap();
    d.handle_video(40, hex("a1 61763031 1200 3201bb")).unwrap();
    d.handle_video(80, hex("a1 61763031 1200")).unwrap();
    let ev = frames(&mut d);
    assert_eq!(ev.len(), 3, "{ev:?}");
    match &ev[0] {
        MediaEvent::VideoConfig(c) => {
            assert_eq!(c.codec_string, "av01.0.00M.10");
            assert_eq!((c.width, c.height), (320, 180));
        }
        other => panic!("{other:?}"),
    }
    let f = frame(&ev[1]);
    assert!(f.keyframe);
    assert_eq!(f.data, hex("0a0b0200000561e7f66017c202 3201aa"));
    assert_eq!(f.data.as_ptr(), tu[7..].as_ptr());
    let f = frame(&ev[2]);
    assert_eq!((f.dts, f.keyframe), (40 * 90, false));
    assert_eq!(f.data, hex("3201bb"));
    // The TD-only temporal unit was empty.
    assert_eq!(d.stats().empty_frames, 1);
    // Broken OBU framing is an error.
    let err = d.handle_video(120, hex("a1 61763031 3209aa")).unwrap_err();
    assert_eq!(err.kind(), "malformed");
}

#[test]
fn unsupported_codecs() {
    let cases = [
        (hex(OPUS_SEQ), false, "Opus"),
        (hex("90 61632d33 00"), false, "ac-3"),
        (hex("90 664c6143 00"), false, "fLaC"),
        (hex("90 2e6d7033 00"), false, ".mp3"),
        (hex("2f ff"), false, "sound format 2"),
        (hex("90 76703039 01"), true, "vp09"),
        (hex("90 76703038 01"), true, "vp08"),
        (hex("24 00"), true, "codec id 4"),
    ];
    for (data, video, name) in cases {
        let mut d = FlvDemuxer::new();
        let err = if video {
            d.handle_video(0, data)
        } else {
            d.handle_audio(0, data)
        }
        .unwrap_err();
        assert!(
            matches!(err, FlvError::UnsupportedCodec(_)),
            "{name}: {err}"
        );
        assert_eq!(err.kind(), "unsupported_codec");
        assert!(err.to_string().contains(name), "{err}");
        assert!(err.is_unsupported() && err.is_publisher_fault());
    }
    // A sequence header with an unsupported AAC object type is unsupported too.
    let err = FlvDemuxer::new()
        .handle_audio(0, hex("af 00 f94880"))
        .unwrap_err();
    assert_eq!(err.kind(), "unsupported_codec");
    let err = FlvDemuxer::new()
        .handle_audio(0, hex("af 00 1688"))
        .unwrap_err();
    assert_eq!(err.kind(), "malformed_config");
}

#[test]
fn enhanced_audio_and_multitrack() {
    let mut d = FlvDemuxer::new();
    // Track 1 of ffmpeg 9's multitrack output is not the default track: ignored.
    d.handle_audio(0, hex(MULTITRACK_AUDIO_TRACK1)).unwrap();
    assert_eq!(d.stats().ignored_messages, 1);
    // Enhanced mp4a SequenceStart and CodedFrames.
    d.handle_audio(0, hex("90 6d703461 1190")).unwrap();
    d.handle_audio(21, hex("91 6d703461 2100")).unwrap();
    // OneTrack multitrack on track 0.
    d.handle_audio(42, hex("95 01 6d703461 00 2101")).unwrap();
    // ManyTracks: track 2 then track 0 with sizes.
    d.handle_audio(64, hex("95 11 6d703461 02 000002 aaaa 00 000002 2102"))
        .unwrap();
    // ManyTracksManyCodecs: Opus on track 3 is skipped, mp4a on track 0 taken.
    d.handle_audio(
        85,
        hex("95 21 4f707573 03 000001 aa 6d703461 00 000002 2103"),
    )
    .unwrap();
    // ModEx (3 bytes of nanosecond offset) before CodedFrames.
    d.handle_audio(106, hex("97 02 0003e8 01 6d703461 2104"))
        .unwrap();
    let ev = frames(&mut d);
    let payloads: Vec<Bytes> = ev
        .iter()
        .filter_map(|e| match e {
            MediaEvent::Frame(f) => Some(f.data.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        payloads,
        vec![
            hex("2100"),
            hex("2101"),
            hex("2102"),
            hex("2103"),
            hex("2104")
        ]
    );
    assert!(matches!(&ev[0], MediaEvent::AudioConfig(c) if c.sample_rate == 48000));
    // Nested multitrack is malformed; a truncated track size too.
    assert!(d.handle_audio(0, hex("95 05 6d703461 00")).is_err());
    assert!(d
        .handle_audio(0, hex("95 11 6d703461 00 000009 2100"))
        .is_err());
}

#[test]
fn video_modex_multitrack_and_ignored_packets() {
    let mut d = FlvDemuxer::new();
    d.handle_video(0, hex(HEVC_SEQ)).unwrap();
    // ModEx with a 3-byte TimestampOffsetNano, then CodedFrames.
    d.handle_video(0, hex(&format!("97 02 0003e8 01 68766331 000000 {NALS}")))
        .unwrap();
    // ModEx with the 16-bit size escape (300 bytes).
    let big = "00".repeat(300);
    d.handle_video(40, hex(&format!("97 ff 012b {big} 03 68766331 {NALS}")))
        .unwrap();
    // Multitrack OneTrack, track 0, CodedFramesX.
    d.handle_video(80, hex(&format!("96 03 68766331 00 {NALS}")))
        .unwrap();
    // Multitrack OneTrack on track 1 is ignored.
    d.handle_video(120, hex(&format!("96 03 68766331 01 {NALS}")))
        .unwrap();
    // Command frame, legacy command frame, sequence ends, MPEG-2 TS sequence start.
    d.handle_video(120, hex("d0 68766331 00")).unwrap();
    d.handle_video(120, hex("57 01")).unwrap();
    d.handle_video(120, hex("92 68766331")).unwrap();
    d.handle_video(120, hex("17 02 000000")).unwrap();
    d.handle_video(120, hex("95 61763031 00")).unwrap();
    let ev = frames(&mut d);
    assert_eq!(ev.len(), 4, "{ev:?}");
    assert_eq!(frame(&ev[2]).dts, 40 * 90);
    assert_eq!(d.stats().ignored_messages, 6);
    assert_eq!(
        parse_video_tag(hex("d0 68766331 00")).unwrap(),
        VideoTag::Ignored(Ignored::Command)
    );
    // Too many ModEx entries.
    let chain = "00 aa 07 ".repeat(9);
    assert!(parse_video_tag(hex(&format!("97 {chain} 01 68766331"))).is_err());
    // Reserved packet type.
    assert!(parse_video_tag(hex("9a 68766331")).is_err());
    assert!(parse_audio_tag(hex("af 02 00")).is_err());
    assert_eq!(
        parse_audio_tag(hex("94 6d703461 00")).unwrap(),
        AudioTag::Ignored(Ignored::MultichannelConfig)
    );
}

#[test]
fn broken_nal_framing_is_an_error() {
    let mut d = FlvDemuxer::new();
    d.handle_video(0, hex(AVC_SEQ)).unwrap();
    let err = d
        .handle_video(0, hex("17 01 000000 00000009 6588"))
        .unwrap_err();
    assert_eq!(err.kind(), "malformed");
    assert!(err.to_string().contains("Video"), "{err}");
}

#[test]
fn timestamps_unwrap_across_the_32_bit_boundary() {
    let mut d = FlvDemuxer::new();
    d.handle_video(0, hex(AVC_SEQ)).unwrap();
    d.handle_audio(0, hex(AAC_SEQ)).unwrap();
    let start = u32::MAX - 50;
    let mut expected = Vec::new();
    for i in 0..6u32 {
        let ts = start.wrapping_add(i * 20);
        d.handle_video(ts, hex(&format!("27 01 000000 {NALS}")))
            .unwrap();
        d.handle_audio(ts.wrapping_sub(5), hex("af 01 2100"))
            .unwrap();
        let ms = i64::from(start) + i64::from(i * 20);
        expected.push(ms * 90);
        expected.push((ms - 5) * 90);
    }
    let dts: Vec<i64> = frames(&mut d)
        .iter()
        .filter_map(|e| match e {
            MediaEvent::Frame(f) => Some(f.dts),
            _ => None,
        })
        .collect();
    assert_eq!(dts, expected);
    assert_eq!(d.stats().timestamp_jumps, 0);
}

#[test]
fn timestamp_jump_shifts_both_tracks() {
    let mut d = FlvDemuxer::with_jump_thresholds(JumpThresholds {
        forward: 10_000 * 90,
        backward: 1_000 * 90,
        nominal_step: 40 * 90,
    });
    d.handle_video(0, hex(AVC_SEQ)).unwrap();
    d.handle_audio(0, hex(AAC_SEQ)).unwrap();
    for i in 0..10u32 {
        d.handle_video(i * 40, hex(&format!("27 01 000000 {NALS}")))
            .unwrap();
        d.handle_audio(i * 40 + 3, hex("af 01 2100")).unwrap();
        frames(&mut d);
    }
    // The encoder restarts: its clock jumps from 363 ms to 5,000,000 ms.
    d.handle_video(5_000_000, hex(&format!("17 01 000000 {NALS}")))
        .unwrap();
    d.handle_audio(5_000_003, hex("af 01 2100")).unwrap();
    d.handle_video(5_000_040, hex(&format!("27 01 000000 {NALS}")))
        .unwrap();
    let ev = frames(&mut d);
    assert_eq!(
        ev[0],
        MediaEvent::TimestampJump {
            track: TrackKind::Video,
            delta: (5_000_000 - 363) * 90
        }
    );
    // Continues one nominal step after the last output (audio at 363 ms).
    assert_eq!(frame(&ev[1]).dts, (363 + 40) * 90);
    assert_eq!(frame(&ev[2]).dts, (363 + 43) * 90);
    assert_eq!(frame(&ev[3]).dts, (363 + 80) * 90);
    // And a loop back to zero is a backwards jump.
    d.handle_video(0, hex(&format!("17 01 000000 {NALS}")))
        .unwrap();
    let ev = frames(&mut d);
    assert!(matches!(ev[0], MediaEvent::TimestampJump { delta, .. } if delta == -5_000_040 * 90));
    assert_eq!(frame(&ev[1]).dts, (363 + 120) * 90);
}

#[test]
fn undrained_queue_is_reported() {
    let mut d = FlvDemuxer::new();
    d.handle_audio(0, hex(AAC_SEQ)).unwrap();
    let mut result = Ok(());
    for i in 0..20 {
        result = d.handle_audio(i, hex("af 01 2100"));
        if result.is_err() {
            break;
        }
    }
    let err = result.unwrap_err();
    assert_eq!(err.kind(), "internal");
    assert!(!err.is_publisher_fault());
}

/// Every prefix of every vector: the parsers return errors (or, for prefixes that are
/// themselves complete tags, results) and never panic; sequence headers cut short are
/// always errors.
#[test]
fn every_split_point() {
    let sequence_headers = [
        (AVC_SEQ, true),
        (HEVC_SEQ, true),
        (AV1_SEQ, true),
        (AAC_SEQ, false),
    ];
    for (v, video) in sequence_headers {
        let full = hex(v);
        for cut in 1..full.len() {
            let mut d = FlvDemuxer::new();
            let r = if video {
                d.handle_video(0, full.slice(..cut))
            } else {
                d.handle_audio(0, full.slice(..cut))
            };
            // av1C is valid without its config OBUs (4 bytes after the 5-byte header), and
            // avcC without its optional 4-byte chroma extension; the ASC ends after 2 bytes.
            let complete = (v == AV1_SEQ && cut == 9)
                || (v == AVC_SEQ && cut >= full.len() - 4)
                || (v == AAC_SEQ && cut >= 4);
            assert_eq!(r.is_ok(), complete, "{v} cut {cut}: {r:?}");
        }
    }
    let others = [
        HEVC_METADATA,
        OPUS_SEQ,
        MULTITRACK_AUDIO_TRACK1,
        "95 21 4f707573 03 000001 aa 6d703461 00 000002 2103",
        "97 02 0003e8 01 68766331 000000 00000002 09f0",
        "91 61763031 1200 0a0b0200000561e7f66017c202 3201aa",
    ];
    for v in others {
        let full = hex(v);
        for cut in 0..=full.len() {
            let _ = parse_video_tag(full.slice(..cut));
            let _ = parse_audio_tag(full.slice(..cut));
        }
    }
    // Frames cut inside a NAL unit are errors once configured.
    let mut d = FlvDemuxer::new();
    d.handle_video(0, hex(AVC_SEQ)).unwrap();
    let full = hex(&format!("17 01 000000 {NALS}"));
    for cut in 1..full.len() {
        let r = d.handle_video(0, full.slice(..cut));
        frames(&mut d);
        // Complete at the header (empty), and after the first NAL unit.
        let complete = cut == 5 || cut == 11;
        assert_eq!(r.is_ok(), complete, "cut {cut}: {r:?}");
    }
}
