//! Byte-exact vectors and timing properties of the public API.
// A test binary: its helpers (outside `#[test]` functions, which clippy.toml already
// covers) may unwrap, panic and index too; the crate's deny lints are for its library code.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use bytes::Bytes;
use tidegate_fmp4::{init_segment, media_segment, to_timescale, Fmp4Error};
use tidegate_media::{
    AudioCodec, AudioConfig, Frame, TrackKind, TrackRun, VideoCodec, VideoConfig,
};

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn frame(track: TrackKind, dts: i64, pts: i64, keyframe: bool, data: &[u8]) -> Frame {
    Frame {
        track,
        dts,
        pts,
        keyframe,
        data: Bytes::copy_from_slice(data),
    }
}

fn audio_config(sample_rate: u32, asc: &[u8]) -> AudioConfig {
    AudioConfig {
        codec: AudioCodec::Aac,
        asc: Bytes::copy_from_slice(asc),
        sample_rate,
        channels: 2,
        samples_per_frame: 1024,
        codec_string: "mp4a.40.2".into(),
    }
}

/// Iterates the boxes in `data` as (type, body).
fn boxes(mut data: &[u8]) -> Vec<([u8; 4], &[u8])> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let size = u32::from_be_bytes(data[..4].try_into().unwrap()) as usize;
        let kind: [u8; 4] = data[4..8].try_into().unwrap();
        out.push((kind, &data[8..size]));
        data = &data[size..];
    }
    out
}

fn child<'a>(data: &'a [u8], kind: &[u8; 4]) -> &'a [u8] {
    boxes(data)
        .into_iter()
        .find(|(k, _)| k == kind)
        .map(|(_, b)| b)
        .unwrap_or_else(|| panic!("no {}", String::from_utf8_lossy(kind)))
}

#[test]
fn video_segment_with_two_samples() {
    let frames = [
        frame(TrackKind::Video, 90_000, 93_000, true, &[0xaa; 3]),
        frame(TrackKind::Video, 93_000, 93_000, false, &[0xbb; 2]),
    ];
    let runs = [TrackRun {
        track: TrackKind::Video,
        frames: &frames,
        end_dts: 96_000,
    }];
    let seg = media_segment(7, &runs, None).unwrap();
    let expected = hex(
        "0000001c 73747970 6d736468 00000000 6d736468 636d6673 636d6666
         00000078 6d6f6f66
           00000010 6d666864 00000000 00000007
           00000060 74726166
             00000010 74666864 00020000 00000001
             00000014 74666474 01000000 00000000 00015f90
             00000034 7472756e 01000f01 00000002 00000080
               00000bb8 00000003 02000000 00000bb8
               00000bb8 00000002 01010000 00000000
         0000000d 6d646174 aaaaaa bbbb",
    );
    assert_eq!(seg.as_ref(), expected.as_slice());
}

#[test]
fn audio_run_is_converted_to_the_sample_rate() {
    // 1024-sample frames at 48 kHz are exactly 1920 ticks at 90 kHz.
    let frames = [
        frame(TrackKind::Audio, 90_000, 90_000, true, &[1, 2]),
        frame(TrackKind::Audio, 91_920, 91_920, true, &[3]),
    ];
    let runs = [TrackRun {
        track: TrackKind::Audio,
        frames: &frames,
        end_dts: 93_840,
    }];
    let config = audio_config(48_000, &[0x11, 0x90]);
    let seg = media_segment(1, &runs, Some(&config)).unwrap();
    let traf = child(child(&seg[28..], b"moof"), b"traf");
    assert_eq!(
        child(traf, b"tfhd"),
        hex("00020000 00000002").as_slice(),
        "default-base-is-moof, track 2"
    );
    assert_eq!(
        child(traf, b"tfdt"),
        hex("01000000 00000000 0000bb80").as_slice()
    );
    // moof = 8 + 16 + (8 + 16 + 20 + 20 + 2 * 12) = 112; data starts 8 after it.
    assert_eq!(
        child(traf, b"trun"),
        hex("00000701 00000002 00000078
             00000400 00000002 02000000
             00000400 00000001 02000000")
        .as_slice()
    );
    assert!(seg.ends_with(&hex("0000000b 6d646174 010203")));
}

#[test]
fn audio_without_config_and_duplicate_tracks_are_rejected() {
    let frames = [frame(TrackKind::Audio, 0, 0, true, &[1])];
    let run = TrackRun {
        track: TrackKind::Audio,
        frames: &frames,
        end_dts: 1920,
    };
    assert_eq!(
        media_segment(1, &[run], None),
        Err(Fmp4Error::MissingAudioConfig)
    );
    let config = audio_config(48_000, &[0x11, 0x90]);
    assert_eq!(
        media_segment(1, &[run, run], Some(&config)),
        Err(Fmp4Error::DuplicateTrack(TrackKind::Audio))
    );
}

#[test]
fn bad_timestamps_are_errors_not_panics() {
    let cases: [(i64, i64, i64, i64); 4] = [
        (-10, -10, 0, 100),                   // negative base decode time
        (100, 100, 50, 200),                  // decode times going backwards
        (0, 0, 10, 5),                        // end before the last frame
        (0, i64::from(i32::MAX) + 1, 10, 20), // composition offset beyond 32 bits
    ];
    for (dts0, pts0, dts1, end) in cases {
        let frames = [
            frame(TrackKind::Video, dts0, pts0, true, &[1]),
            frame(TrackKind::Video, dts1, dts1, false, &[2]),
        ];
        let run = TrackRun {
            track: TrackKind::Video,
            frames: &frames,
            end_dts: end,
        };
        let err = media_segment(1, &[run], None).unwrap_err();
        assert_eq!(err.kind(), "timestamp", "{dts0} {pts0} {dts1} {end}: {err}");
    }
    let huge = [frame(TrackKind::Audio, i64::MAX, i64::MAX, true, &[1])];
    let run = TrackRun {
        track: TrackKind::Audio,
        frames: &huge,
        end_dts: i64::MAX,
    };
    assert!(media_segment(1, &[run], Some(&audio_config(96_000, &[0x10, 0x10]))).is_err());
}

/// Parses `seg` and returns (tfdt, sum of trun durations, sample count) of its one `traf`.
fn traf_timing(seg: &[u8]) -> (u64, u64, usize) {
    let traf = child(child(&seg[28..], b"moof"), b"traf");
    let tfdt = u64::from_be_bytes(child(traf, b"tfdt")[4..12].try_into().unwrap());
    let trun = child(traf, b"trun");
    let flags = u32::from_be_bytes(trun[..4].try_into().unwrap()) & 0xff_ffff;
    let count = u32::from_be_bytes(trun[4..8].try_into().unwrap()) as usize;
    let per_sample = if flags & 0x800 != 0 { 16 } else { 12 };
    let durations: u64 = (0..count)
        .map(|i| {
            let at = 12 + i * per_sample;
            u64::from(u32::from_be_bytes(trun[at..at + 4].try_into().unwrap()))
        })
        .sum();
    (tfdt, durations, count)
}

#[test]
fn audio_segments_tile_with_millisecond_jitter() {
    for (rate, asc) in [(44_100u32, [0x12u8, 0x10]), (48_000, [0x11, 0x90])] {
        let config = audio_config(rate, &asc);
        // RTMP timestamps: each frame's start rounded to a millisecond, then to 90 kHz.
        // Start at an odd offset so nothing lines up by accident.
        let frames: Vec<Frame> = (0..400u64)
            .map(|k| {
                let ms = (k * 1024 * 1000 + u64::from(rate) / 2) / u64::from(rate) + 1_234_567;
                let dts = ms as i64 * 90;
                frame(TrackKind::Audio, dts, dts, true, &[k as u8])
            })
            .collect();
        let end_of_all = frames[399].dts + 1024 * 90_000 / i64::from(rate);
        // Cut at several places; each segment ends where the next begins.
        let cuts = [0usize, 1, 87, 88, 200, 333, 400];
        let mut expected_start = to_timescale(frames[0].dts, rate).unwrap() as u64;
        for (seq, pair) in cuts.windows(2).enumerate() {
            let (a, b) = (pair[0], pair[1]);
            let end_dts = frames.get(b).map_or(end_of_all, |f| f.dts);
            let run = TrackRun {
                track: TrackKind::Audio,
                frames: &frames[a..b],
                end_dts,
            };
            let seg = media_segment(seq as u32 + 1, &[run], Some(&config)).unwrap();
            let (tfdt, total, count) = traf_timing(&seg);
            assert_eq!(count, b - a);
            assert_eq!(
                tfdt, expected_start,
                "rate {rate}: segment {seq} does not tile"
            );
            expected_start = tfdt + total;
        }
        let last = to_timescale(end_of_all, rate).unwrap() as u64;
        assert_eq!(expected_start, last, "rate {rate}: total duration drifted");
    }
}

#[test]
fn every_audio_duration_stays_near_1024() {
    // Jitter from millisecond timestamps is at most one millisecond each side.
    let rate = 44_100u32;
    let config = audio_config(rate, &[0x12, 0x10]);
    let frames: Vec<Frame> = (0..100u64)
        .map(|k| {
            let dts = ((k * 1024 * 1000 + 22_050) / 44_100) as i64 * 90;
            frame(TrackKind::Audio, dts, dts, true, &[0])
        })
        .collect();
    let run = TrackRun {
        track: TrackKind::Audio,
        frames: &frames,
        end_dts: frames[99].dts + 2090,
    };
    let seg = media_segment(1, &[run], Some(&config)).unwrap();
    let trun = child(child(child(&seg[28..], b"moof"), b"traf"), b"trun");
    for i in 0..100 {
        let at = 12 + i * 12;
        let d = u32::from_be_bytes(trun[at..at + 4].try_into().unwrap());
        assert!((1024 - 45..=1024 + 45).contains(&d), "sample {i}: {d}");
    }
}

#[test]
fn init_segment_layout() {
    let video = VideoConfig {
        codec: VideoCodec::H264,
        record: Bytes::from_static(&[1, 0x64, 0, 0x1f, 0xff, 0xe0, 0]),
        width: 1280,
        height: 720,
        nal_length_size: 4,
        codec_string: "avc1.64001f".into(),
    };
    let audio = audio_config(48_000, &[0x11, 0x90]);
    let init = init_segment(Some(&video), Some(&audio)).unwrap();
    let top: Vec<[u8; 4]> = boxes(&init).iter().map(|(k, _)| *k).collect();
    assert_eq!(top, [*b"ftyp", *b"moov"]);
    let moov = child(&init, b"moov");
    let kinds: Vec<[u8; 4]> = boxes(moov).iter().map(|(k, _)| *k).collect();
    assert_eq!(kinds, [*b"mvhd", *b"trak", *b"trak", *b"mvex"]);
    let traks: Vec<&[u8]> = boxes(moov)
        .into_iter()
        .filter(|(k, _)| k == b"trak")
        .map(|(_, b)| b)
        .collect();
    // tkhd: track IDs and the 16.16 width/height.
    let tkhd = child(traks[0], b"tkhd");
    assert_eq!(&tkhd[12..16], &1u32.to_be_bytes());
    assert_eq!(&tkhd[76..84], &hex("05000000 02d00000")[..]);
    assert_eq!(&child(traks[1], b"tkhd")[12..16], &2u32.to_be_bytes());
    // mdhd timescales.
    let mdhd = child(child(traks[0], b"mdia"), b"mdhd");
    assert_eq!(&mdhd[12..16], &90_000u32.to_be_bytes());
    let mdhd = child(child(traks[1], b"mdia"), b"mdhd");
    assert_eq!(&mdhd[12..16], &48_000u32.to_be_bytes());
    // The sample entry carries the record verbatim.
    let stsd = child(
        child(child(child(traks[0], b"mdia"), b"minf"), b"stbl"),
        b"stsd",
    );
    let entry = boxes(&stsd[8..]);
    assert_eq!(&entry[0].0, b"avc1");
    assert_eq!(child(&entry[0].1[78..], b"avcC"), video.record.as_ref());
    let trex: Vec<&[u8]> = boxes(child(moov, b"mvex"))
        .into_iter()
        .map(|(_, b)| b)
        .collect();
    assert_eq!(trex.len(), 2);
    assert_eq!(init_segment(None, None), Err(Fmp4Error::NoTracks));
}
