//! The demuxer on streams written by real ffmpeg (H.264 and HEVC with AAC), whole and split
//! into 1316-byte SRT payloads and at odd offsets, plus garbage and loss, and H.264 whose
//! parameter sets were stripped (what GStreamer's `mpegtsmux ! srtsink` can deliver).
// A test binary: its helpers (outside `#[test]` functions, which clippy.toml already
// covers) may unwrap, panic and index too; the crate's deny lints are for its library code.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::PathBuf;
use std::process::Command;

use tidegate_media::{MediaEvent, TrackKind};
use tidegate_mpegts::TsDemuxer;

fn ffmpeg_ts(codec: &str) -> Vec<u8> {
    let dir = std::env::temp_dir().join(format!("tg-tsdemux-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out: PathBuf = dir.join(format!("{codec}.ts"));
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-y", "-nostdin", "-v", "error", "-f", "lavfi", "-i"])
        .arg("testsrc2=size=320x240:rate=25")
        .args(["-f", "lavfi", "-i", "sine=sample_rate=48000", "-t", "4"]);
    match codec {
        "h264" => cmd.args(["-c:v", "libx264", "-g", "50", "-bf", "2"]),
        // SPS (7) and PPS (8) removed from the bitstream: the PMT still declares H.264.
        "h264-no-parameter-sets" => cmd.args([
            "-c:v",
            "libx264",
            "-g",
            "50",
            "-bsf:v",
            "filter_units=remove_types=7|8",
        ]),
        _ => cmd.args([
            "-c:v",
            "libx265",
            "-x265-params",
            "log-level=error:keyint=50:min-keyint=50:scenecut=0",
        ]),
    };
    cmd.args(["-c:a", "aac", "-f", "mpegts"]).arg(&out);
    let st = cmd
        .status()
        .expect("ffmpeg is required (scripts/install-test-tools.sh installs it)");
    assert!(st.success());
    std::fs::read(out).unwrap()
}

struct Summary {
    video_frames: usize,
    keyframes: Vec<usize>,
    audio_frames: usize,
    /// `VideoDeclared` events.
    declared: usize,
    /// `VideoWithoutConfig` events.
    without_config: usize,
    codec: String,
    audio_codec: String,
    dts_monotonic: bool,
    first_dts: Option<i64>,
}

fn demux(data: &[u8], chunk: usize) -> (Summary, TsDemuxer) {
    let mut d = TsDemuxer::new();
    let mut s = Summary {
        video_frames: 0,
        keyframes: vec![],
        audio_frames: 0,
        declared: 0,
        without_config: 0,
        codec: String::new(),
        audio_codec: String::new(),
        dts_monotonic: true,
        first_dts: None,
    };
    let mut last_v = i64::MIN;
    for c in data.chunks(chunk) {
        d.handle_input(c).unwrap();
        while let Some(ev) = d.poll_event() {
            match ev {
                MediaEvent::VideoConfig(v) => s.codec = v.codec_string,
                MediaEvent::AudioConfig(a) => s.audio_codec = a.codec_string,
                MediaEvent::Frame(f) if f.track == TrackKind::Video => {
                    if f.keyframe {
                        s.keyframes.push(s.video_frames);
                    }
                    s.dts_monotonic &= f.dts > last_v;
                    last_v = f.dts;
                    s.first_dts.get_or_insert(f.dts);
                    assert!(f.pts >= f.dts);
                    s.video_frames += 1;
                }
                MediaEvent::Frame(_) => s.audio_frames += 1,
                MediaEvent::TimestampJump { .. } => panic!("no jump in a clean file"),
                MediaEvent::VideoDeclared => s.declared += 1,
                MediaEvent::VideoWithoutConfig => s.without_config += 1,
            }
        }
    }
    (s, d)
}

#[test]
fn h264_aac_from_ffmpeg_in_srt_sized_chunks() {
    let ts = ffmpeg_ts("h264");
    for chunk in [1316, 188, 7, 1000, ts.len()] {
        let (s, d) = demux(&ts, chunk);
        // The last access unit is only complete once the next PES starts: 99 of 100.
        assert!(
            (99..=100).contains(&s.video_frames),
            "{chunk}: {}",
            s.video_frames
        );
        assert_eq!(&s.keyframes[..2], &[0, 50], "{chunk}");
        assert!(s.codec.starts_with("avc1.64"), "{}", s.codec);
        assert_eq!(s.audio_codec, "mp4a.40.2");
        // 4 s at 48 kHz / 1024 ≈ 187 frames (the last PES may be pending).
        assert!((170..=190).contains(&s.audio_frames), "{}", s.audio_frames);
        assert!(s.dts_monotonic);
        assert_eq!((s.declared, s.without_config), (1, 0), "{chunk}");
        assert_eq!(d.stats().cc_errors, 0);
        assert_eq!(d.stats().sync_losses, 0);
    }
}

#[test]
fn h264_without_parameter_sets_is_declared_and_every_access_unit_reported() {
    let ts = ffmpeg_ts("h264-no-parameter-sets");
    let (s, d) = demux(&ts, 1316);
    assert_eq!(s.declared, 1, "the PMT declares the video once");
    assert_eq!(s.video_frames, 0, "nothing decodable goes to the packager");
    assert!(s.codec.is_empty(), "no configuration: {}", s.codec);
    assert!(
        (99..=100).contains(&s.without_config),
        "{}",
        s.without_config
    );
    assert!(d.stats().dropped_frames >= 99);
    // The audio is untouched.
    assert_eq!(s.audio_codec, "mp4a.40.2");
    assert!((170..=190).contains(&s.audio_frames), "{}", s.audio_frames);
}

#[test]
fn hevc_aac_from_ffmpeg() {
    let ts = ffmpeg_ts("hevc");
    let (s, _) = demux(&ts, 1316);
    assert!((99..=100).contains(&s.video_frames));
    // In decode order the second IRAP comes before the leading B-frames it precedes.
    assert_eq!(s.keyframes[0], 0);
    assert!((45..=50).contains(&s.keyframes[1]), "{:?}", s.keyframes);
    assert!(s.codec.starts_with("hvc1."), "{}", s.codec);
}

#[test]
fn lost_packets_are_counted_and_garbage_never_panics() {
    let ts = ffmpeg_ts("h264");
    // Drop every 50th packet.
    let lossy: Vec<u8> = ts
        .chunks(188)
        .enumerate()
        .filter(|(i, _)| i % 50 != 49)
        .flat_map(|(_, p)| p.to_vec())
        .collect();
    let (_, d) = demux(&lossy, 1316);
    assert!(d.stats().cc_errors > 0);
    // Garbage, truncations and bit flips: errors or drops, never a panic.
    let mut x: u64 = 12345;
    let mut garbage = ts.clone();
    for _ in 0..5000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let i = (x as usize) % garbage.len();
        garbage[i] = (x >> 32) as u8;
    }
    let mut d = TsDemuxer::new();
    for c in garbage.chunks(333) {
        let _ = d.handle_input(c);
        while d.poll_event().is_some() {}
    }
    for n in (0..ts.len()).step_by(997) {
        let mut d = TsDemuxer::new();
        let _ = d.handle_input(&ts[..n]);
        while d.poll_event().is_some() {}
    }
}
