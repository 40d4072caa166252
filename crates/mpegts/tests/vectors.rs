//! Byte-exact vectors (PAT/PMT as ffmpeg 5.1 writes them, PES timestamps) and structural
//! properties of whole segments (packet size, continuity, PCR spacing).
// A test binary: its helpers (outside `#[test]` functions, which clippy.toml already
// covers) may unwrap, panic and index too; the crate's deny lints are for its library code.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use bytes::Bytes;
use tidegate_media::{
    AudioCodec, AudioConfig, Frame, MediaEvent, TrackKind, TrackRun, VideoCodec, VideoConfig,
};
use tidegate_mpegts::packet::{
    crc32_mpeg2, pcr_base, pes_header, read_timestamp, timestamp_bytes, write_pcr_packet,
    PACKET_LEN,
};
use tidegate_mpegts::{TsDemuxer, TsError, TsMuxer, AUDIO_PID, PMT_PID, VIDEO_PID};

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn video_config(codec: VideoCodec) -> VideoConfig {
    // avcC of `ffmpeg -f lavfi -i testsrc2=size=640x360 -c:v libx264 -f flv` (ffmpeg 5.1).
    VideoConfig {
        codec,
        record: Bytes::from(hex(
            "0164001effe1001a6764001eacd940a02ff970110000030001000003003c0f162d9601000668ebe3cb22c0fdf8f800",
        )),
        width: 640,
        height: 360,
        nal_length_size: 4,
        codec_string: "avc1.64001e".into(),
    }
}

fn audio_config() -> AudioConfig {
    AudioConfig {
        codec: AudioCodec::Aac,
        asc: Bytes::from_static(&[0x11, 0x90]),
        sample_rate: 48_000,
        channels: 2,
        samples_per_frame: 1024,
        codec_string: "mp4a.40.2".into(),
    }
}

fn frame(track: TrackKind, dts: i64, keyframe: bool, len: usize) -> Frame {
    let data = match track {
        // One IDR/non-IDR slice NAL with a 4-byte length.
        TrackKind::Video => {
            let mut d = (len as u32 - 4).to_be_bytes().to_vec();
            d.push(if keyframe { 0x65 } else { 0x41 });
            d.resize(len, 0x5a);
            d
        }
        TrackKind::Audio => vec![0x21; len],
    };
    Frame {
        track,
        dts,
        pts: dts,
        keyframe,
        data: Bytes::from(data),
    }
}

fn packets(ts: &[u8]) -> Vec<&[u8]> {
    assert_eq!(ts.len() % PACKET_LEN, 0);
    ts.chunks(PACKET_LEN).collect()
}

fn pid(p: &[u8]) -> u16 {
    u16::from_be_bytes([p[1] & 0x1f, p[2]])
}

#[test]
fn crc32_mpeg2_check_value() {
    assert_eq!(crc32_mpeg2(b"123456789"), 0x0376_e6e7);
}

#[test]
fn pat_and_pmt_match_ffmpeg() {
    let mut muxer =
        TsMuxer::new(Some(&video_config(VideoCodec::H264)), Some(&audio_config())).unwrap();
    let seg = muxer.segment(&[]).unwrap();
    let p = packets(&seg);
    assert_eq!(p.len(), 2);
    // Packets 1 and 2 of `ffmpeg -c:v libx264 -c:a aac -f mpegts` (ffmpeg 5.1).
    let mut pat = hex("474000100000b00d0001c100000001f0002ab104b2");
    pat.resize(188, 0xff);
    let mut pmt = hex("475000100002b0170001c10000e100f0001be100f0000fe101f0002f44b99b");
    pmt.resize(188, 0xff);
    assert_eq!(p[0], pat.as_slice());
    assert_eq!(p[1], pmt.as_slice());
    // The next segment's tables advance their continuity counters.
    let seg = muxer.segment(&[]).unwrap();
    assert_eq!(&seg[..4], &hex("47400011")[..]);
    assert_eq!(&seg[188..192], &hex("47500011")[..]);
}

#[test]
fn hevc_and_audio_only_pmts() {
    let mut m = TsMuxer::new(
        Some(&VideoConfig {
            codec: VideoCodec::H265,
            record: Bytes::new(),
            ..video_config(VideoCodec::H265)
        }),
        None,
    );
    // An HEVC record without arrays has no parameter sets to prepend: refused up front.
    assert!(m.is_err());
    m = TsMuxer::new(None, Some(&audio_config()));
    let seg = m.unwrap().segment(&[]).unwrap();
    // PCR_PID 0x101, one AAC stream.
    let section = &seg[188 + 5..188 + 5 + 17];
    assert_eq!(
        section,
        hex("02b0120001c10000e101f0000fe101f000").as_slice()
    );
    let crc = crc32_mpeg2(section);
    assert_eq!(&seg[188 + 22..188 + 26], &crc.to_be_bytes());
}

#[test]
fn pes_timestamps_match_ffmpeg() {
    // ffmpeg's first audio PES at PTS 1.4 s: `00 00 01 c0 .. .. 80 80 05 21 00 07 d8 61`.
    assert_eq!(timestamp_bytes(2, 126_000), [0x21, 0x00, 0x07, 0xd8, 0x61]);
    // ffmpeg's first video PES (PTS 1.6 s, DTS 1.4 s): `31 00 09 65 01 11 00 07 d8 61`.
    let (h, len) = pes_header(0xe0, 144_000, Some(126_000), usize::MAX);
    assert_eq!(
        &h[..len],
        hex("000001e0 0000 84 c0 0a 3100096501 110007d861").as_slice()
    );
    // 33-bit wrap: the top bit lands in the first byte.
    assert_eq!(
        timestamp_bytes(2, (1 << 33) - 1),
        [0x2f, 0xff, 0xff, 0xff, 0xff]
    );
}

#[test]
fn timestamps_and_pcrs_read_back_what_was_written() {
    for v in [0u64, 1, 126_000, 0x1_2345_6789, (1 << 33) - 1] {
        for prefix in [1, 2, 3] {
            assert_eq!(read_timestamp(timestamp_bytes(prefix, v)), v);
        }
        let mut out = bytes::BytesMut::new();
        write_pcr_packet(&mut out, VIDEO_PID, 0, v);
        // Header (4), adaptation_field_length, flags, then the PCR.
        assert_eq!(pcr_base(out[6..11].try_into().unwrap()), v);
    }
}

#[test]
fn small_audio_pes_is_stuffed_in_one_packet() {
    let mut m = TsMuxer::new(None, Some(&audio_config())).unwrap();
    let frames = [frame(TrackKind::Audio, 0, true, 10)];
    let run = TrackRun {
        track: TrackKind::Audio,
        frames: &frames,
        end_dts: 1920,
    };
    let seg = m.segment(&[run]).unwrap();
    let p = packets(&seg)[2];
    // PUSI, PID 0x101, adaptation + payload, CC 0; AF: RAI + PCR (base 63000), stuffing.
    let payload_len = 14 + 7 + 10;
    let af_len = 184 - payload_len - 1;
    let mut expected = hex("47410130");
    expected.push(af_len as u8);
    expected.extend(hex("50 00007b0c 7e00"));
    expected.resize(4 + 1 + af_len, 0xff);
    expected.extend(hex("000001c0 0019 8480 05 210007d861 fff14c80023ffc"));
    expected.extend([0x21; 10]);
    assert_eq!(p, expected.as_slice());
}

/// Parses continuity, PCRs and random access flags of a stream.
#[test]
fn continuity_and_pcr_spacing_across_segments() {
    let mut m = TsMuxer::new(Some(&video_config(VideoCodec::H264)), Some(&audio_config())).unwrap();
    let mut last_cc = std::collections::HashMap::new();
    let mut last_pcr: Option<u64> = None;
    let mut max_gap = 0;
    let mut keyframes_seen = 0;
    // Three 2 s segments of 10 fps video (sparse: 100 ms apart) and 48 kHz audio.
    for s in 0..3i64 {
        let video: Vec<Frame> = (0..20)
            .map(|i| {
                frame(
                    TrackKind::Video,
                    (s * 20 + i) * 9000,
                    i == 0,
                    500 + 37 * i as usize,
                )
            })
            .collect();
        let audio: Vec<Frame> = (0..94i64)
            .map(|i| frame(TrackKind::Audio, s * 180_000 + i * 1920, true, 300))
            .filter(|f| f.dts < (s + 1) * 180_000)
            .collect();
        let runs = [
            TrackRun {
                track: TrackKind::Video,
                frames: &video,
                end_dts: (s + 1) * 180_000,
            },
            TrackRun {
                track: TrackKind::Audio,
                frames: &audio,
                end_dts: (s + 1) * 180_000,
            },
        ];
        let seg = m.segment(&runs).unwrap();
        for p in packets(&seg) {
            assert_eq!(p[0], 0x47);
            let pid = pid(p);
            let afc = (p[3] >> 4) & 3;
            let cc = p[3] & 0x0f;
            let has_payload = afc & 1 == 1;
            if let Some(&prev) = last_cc.get(&pid) {
                let want = if has_payload { (prev + 1) & 0x0f } else { prev };
                assert_eq!(cc, want, "continuity on PID {pid:#x}");
            }
            last_cc.insert(pid, cc);
            if afc & 2 == 2 && p[4] > 0 {
                let flags = p[5];
                if flags & 0x10 != 0 {
                    assert_eq!(pid, VIDEO_PID, "PCR only on the video PID");
                    let base = (u64::from(p[6]) << 25)
                        | (u64::from(p[7]) << 17)
                        | (u64::from(p[8]) << 9)
                        | (u64::from(p[9]) << 1)
                        | (u64::from(p[10]) >> 7);
                    if let Some(prev) = last_pcr {
                        assert!(base >= prev, "PCR going backwards");
                        max_gap = max_gap.max(base - prev);
                    }
                    last_pcr = Some(base);
                }
                if flags & 0x40 != 0 {
                    assert_eq!(pid, VIDEO_PID);
                    keyframes_seen += 1;
                }
            }
            assert!([0, PMT_PID, VIDEO_PID, AUDIO_PID].contains(&pid));
        }
    }
    assert_eq!(keyframes_seen, 3);
    assert!(max_gap <= 9000, "PCR gap {max_gap} ticks exceeds 100 ms");
}

#[test]
fn keyframes_carry_aud_and_parameter_sets() {
    let config = video_config(VideoCodec::H264);
    let mut m = TsMuxer::new(Some(&config), None).unwrap();
    let frames = [
        frame(TrackKind::Video, 0, true, 20),
        frame(TrackKind::Video, 3000, false, 20),
    ];
    let run = TrackRun {
        track: TrackKind::Video,
        frames: &frames,
        end_dts: 6000,
    };
    let seg = m.segment(&[run]).unwrap();
    let p = packets(&seg);
    // First PES: AF (RAI + PCR) then PES header then AUD, SPS, PPS, slice.
    let key = p[2];
    let payload = &key[5 + key[4] as usize..];
    let es = &payload[14..]; // PES header with PTS only (pts == dts)
    let sps = &config.record[8..8 + 26];
    let pps = &config.record[37..37 + 6];
    let mut want = hex("0000000109f0");
    want.extend(hex("00000001"));
    want.extend(sps);
    want.extend(hex("00000001"));
    want.extend(pps);
    want.extend(hex("00000001"));
    want.extend(&frames[0].data[4..]);
    assert_eq!(es, want.as_slice());
    // Non-keyframe: AUD and slice only, no random access indicator.
    let other = p[3];
    assert_eq!(other[5] & 0x40, 0);
    let payload = &other[5 + other[4] as usize..];
    let mut want = hex("0000000109f0 00000001");
    want.extend(&frames[1].data[4..]);
    assert_eq!(&payload[14..], want.as_slice(), "pts == dts: PTS only");
}

#[test]
fn av1_and_bad_input_are_errors() {
    let av1 = VideoConfig {
        codec: VideoCodec::Av1,
        ..video_config(VideoCodec::Av1)
    };
    assert!(matches!(
        TsMuxer::new(Some(&av1), None),
        Err(TsError::Unsupported { .. })
    ));
    assert!(matches!(TsMuxer::new(None, None), Err(TsError::NoTracks)));
    let mut m = TsMuxer::new(Some(&video_config(VideoCodec::H264)), None).unwrap();
    let audio = [frame(TrackKind::Audio, 0, true, 5)];
    let run = TrackRun {
        track: TrackKind::Audio,
        frames: &audio,
        end_dts: 1,
    };
    assert_eq!(
        m.segment(&[run]),
        Err(TsError::UnconfiguredTrack(TrackKind::Audio))
    );
    // A NAL length running past the frame is a codec error, not a panic.
    let mut bad = frame(TrackKind::Video, 0, true, 10);
    bad.data = Bytes::from_static(&[0, 0, 1, 0, 0x65]);
    let frames = [bad];
    let run = TrackRun {
        track: TrackKind::Video,
        frames: &frames,
        end_dts: 1,
    };
    assert_eq!(m.segment(&[run]).unwrap_err().kind(), "codec");
    // A failed call leaves the counters as they were.
    let seg = m.segment(&[]).unwrap();
    assert_eq!(seg[3] & 0x0f, 0);
}

#[test]
fn muxed_segments_demux_back_to_the_frames_that_went_in() {
    let config = video_config(VideoCodec::H264);
    let mut m = TsMuxer::new(Some(&config), Some(&audio_config())).unwrap();
    let mut ts = Vec::new();
    let (mut video_in, mut audio_in) = (Vec::new(), Vec::new());
    // Two 2 s segments; frame sizes from 5 bytes (one packet with stuffing) to 9 kB (many
    // packets), so PES headers and payloads cross packet boundaries at many offsets.
    for s in 0..2i64 {
        let video: Vec<Frame> = (0..20)
            .map(|i| {
                let len = if i == 0 { 9000 } else { 5 + 181 * i as usize };
                frame(TrackKind::Video, (s * 20 + i) * 9000, i == 0, len)
            })
            .collect();
        let audio: Vec<Frame> = (0..94i64)
            .map(|i| {
                frame(
                    TrackKind::Audio,
                    s * 180_000 + i * 1920,
                    true,
                    7 + 3 * i as usize,
                )
            })
            .filter(|f| f.dts < (s + 1) * 180_000)
            .collect();
        let end_dts = (s + 1) * 180_000;
        let runs = [
            TrackRun {
                track: TrackKind::Video,
                frames: &video,
                end_dts,
            },
            TrackRun {
                track: TrackKind::Audio,
                frames: &audio,
                end_dts,
            },
        ];
        ts.extend_from_slice(&m.segment(&runs).unwrap());
        video_in.extend(video);
        audio_in.extend(audio);
    }
    let mut d = TsDemuxer::new();
    d.handle_input(&ts).unwrap();
    let (mut video_out, mut audio_out) = (Vec::new(), Vec::new());
    let mut configs = 0;
    while let Some(event) = d.poll_event() {
        match event {
            MediaEvent::Frame(f) if f.track == TrackKind::Video => video_out.push(f),
            MediaEvent::Frame(f) => audio_out.push(f),
            MediaEvent::VideoConfig(v) => {
                assert_eq!(v.record, config.record);
                configs += 1;
            }
            MediaEvent::AudioConfig(a) => {
                assert_eq!(a, audio_config());
                configs += 1;
            }
            MediaEvent::VideoDeclared => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(configs, 2);
    let stats = d.stats();
    assert_eq!(
        (stats.cc_errors, stats.sync_losses, stats.dropped_frames),
        (0, 0, 0)
    );
    // The last PES of each PID ends only at the next one, so the tail stays in the demuxer.
    assert_eq!(video_out.len(), video_in.len() - 1);
    assert_eq!(video_out[..], video_in[..video_out.len()]);
    assert!(audio_out.len() < audio_in.len());
    assert!(audio_out.len() + 8 >= audio_in.len(), "{}", audio_out.len());
    assert_eq!(audio_out[..], audio_in[..audio_out.len()]);
}
