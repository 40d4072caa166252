//! End to end: FLV files written by ffmpeg (Debian's for H.264/AAC, the static ffmpeg 9 from
//! the `imageio-ffmpeg` wheel for Enhanced RTMP HEVC/AV1), split into tags here and fed to
//! the demuxer. Each test skips (with a message) when its ffmpeg is not installed, except
//! under `CI=true`, where a missing tool fails the test.
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

use bytes::Bytes;
use tidegate_flv::file::{FileTags, TAG_AUDIO, TAG_VIDEO};
use tidegate_flv::FlvDemuxer;
use tidegate_media::{Frame, MediaEvent, TrackKind, VideoCodec};

fn debian_ffmpeg() -> Option<PathBuf> {
    let ok = Command::new("ffmpeg")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then(|| PathBuf::from("ffmpeg"))
}

fn ffmpeg9() -> Option<PathBuf> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())",
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let path = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    path.exists().then_some(path)
}

fn encode(ffmpeg: &PathBuf, name: &str, args: &[&str]) -> Bytes {
    let path = std::env::temp_dir().join(format!("tidegate-flv-{}-{name}.flv", std::process::id()));
    let out = Command::new(ffmpeg)
        .args(["-y", "-loglevel", "error"])
        .args(args)
        .args(["-f", "flv"])
        .arg(&path)
        .output()
        .expect("run ffmpeg");
    assert!(
        out.status.success(),
        "ffmpeg failed for {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let data = std::fs::read(&path).expect("read flv");
    let _ = std::fs::remove_file(&path);
    Bytes::from(data)
}

/// Splits an FLV file into its tags and feeds the demuxer.
fn demux(file: &Bytes) -> (FlvDemuxer, Vec<MediaEvent>) {
    let mut d = FlvDemuxer::new();
    let mut events = Vec::new();
    for tag in FileTags::new(file.clone()).unwrap() {
        let tag = tag.unwrap();
        match tag.tag_type {
            TAG_AUDIO => d.handle_audio(tag.timestamp_ms, tag.data).unwrap(),
            TAG_VIDEO => d.handle_video(tag.timestamp_ms, tag.data).unwrap(),
            _ => {}
        }
        events.extend(std::iter::from_fn(|| d.poll_event()));
    }
    (d, events)
}

fn track_frames(events: &[MediaEvent], track: TrackKind) -> Vec<&Frame> {
    events
        .iter()
        .filter_map(|e| match e {
            MediaEvent::Frame(f) if f.track == track => Some(f),
            _ => None,
        })
        .collect()
}

fn check_timeline(frames: &[&Frame], step: i64) {
    for w in frames.windows(2) {
        assert!(w[1].dts >= w[0].dts, "dts must not decrease");
    }
    for f in frames {
        assert!(f.pts >= f.dts, "pts {} < dts {}", f.pts, f.dts);
    }
    if frames.len() > 2 {
        let span = frames[frames.len() - 1].dts - frames[0].dts;
        assert_eq!(span, step * (frames.len() as i64 - 1));
    }
}

#[test]
fn h264_aac_from_debian_ffmpeg() {
    let Some(ffmpeg) = debian_ffmpeg() else {
        missing("ffmpeg");
        return;
    };
    let file = encode(
        &ffmpeg,
        "h264",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=25",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-frames:v",
            "30",
            "-t",
            "1.2",
            "-c:v",
            "libx264",
            "-g",
            "10",
            "-bf",
            "2",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-ac",
            "2",
        ],
    );
    let (d, events) = demux(&file);
    let video = d.video_config().unwrap();
    assert_eq!(video.codec, VideoCodec::H264);
    assert_eq!((video.width, video.height), (640, 360));
    assert!(
        video.codec_string.starts_with("avc1.64"),
        "{}",
        video.codec_string
    );
    let audio = d.audio_config().unwrap();
    assert_eq!(
        (
            audio.sample_rate,
            audio.channels,
            audio.codec_string.as_str()
        ),
        (48000, 2, "mp4a.40.2")
    );
    let v = track_frames(&events, TrackKind::Video);
    assert_eq!(v.len(), 30);
    assert_eq!(v.iter().filter(|f| f.keyframe).count(), 3);
    assert!(
        v.iter().any(|f| f.pts > f.dts),
        "B-frames give composition offsets"
    );
    check_timeline(&v, 3600);
    let a = track_frames(&events, TrackKind::Audio);
    // ffmpeg stops at the 30th video frame; the audio interleaved so far comes through.
    assert!(a.len() > 10, "{} audio frames", a.len());
    for w in a.windows(2) {
        // 1024 samples at 48 kHz: 21 or 22 ms apart in FLV's millisecond timestamps.
        let step = w[1].dts - w[0].dts;
        assert!(step == 21 * 90 || step == 22 * 90, "audio step {step}");
    }
    assert_eq!(d.stats().frames_before_config, 0);
    assert_eq!(d.stats().timestamp_jumps, 0);
}

#[test]
fn hevc_from_ffmpeg9() {
    let Some(ffmpeg) = ffmpeg9() else {
        missing("imageio-ffmpeg");
        return;
    };
    let file = encode(
        &ffmpeg,
        "hevc",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=426x240:rate=25",
            "-frames:v",
            "30",
            "-c:v",
            "libx265",
            "-x265-params",
            "info=0:log-level=error",
            "-g",
            "10",
            "-pix_fmt",
            "yuv420p",
        ],
    );
    let (d, events) = demux(&file);
    let video = d.video_config().unwrap();
    assert_eq!(video.codec, VideoCodec::H265);
    assert_eq!((video.width, video.height), (426, 240));
    assert_eq!(video.codec_string, "hvc1.1.6.L60.90");
    let v = track_frames(&events, TrackKind::Video);
    assert_eq!(v.len(), 30);
    assert_eq!(v.iter().filter(|f| f.keyframe).count(), 3);
    check_timeline(&v, 3600);
}

#[test]
fn av1_from_ffmpeg9() {
    let Some(ffmpeg) = ffmpeg9() else {
        missing("imageio-ffmpeg");
        return;
    };
    let file = encode(
        &ffmpeg,
        "av1",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x180:rate=25",
            "-frames:v",
            "20",
            "-c:v",
            "libsvtav1",
            "-svtav1-params",
            "log-level=0",
            "-preset",
            "12",
            "-g",
            "10",
            "-pix_fmt",
            "yuv420p",
        ],
    );
    let (d, events) = demux(&file);
    let video = d.video_config().unwrap();
    assert_eq!(video.codec, VideoCodec::Av1);
    assert_eq!((video.width, video.height), (320, 180));
    assert_eq!(video.codec_string, "av01.0.00M.08");
    let v = track_frames(&events, TrackKind::Video);
    assert_eq!(v.len(), 20);
    assert!(v[0].keyframe);
    for f in &v {
        // Temporal delimiters are gone: no OBU of type 2 at the start.
        assert_ne!((f.data[0] >> 3) & 0x0f, 2);
    }
    check_timeline(&v, 3600);
}

/// A tool the test needs is absent: fail under CI (nothing may skip silently there), skip
/// with a message elsewhere.
fn missing(tool: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{tool} is required (scripts/install-test-tools.sh installs it)");
    }
    eprintln!("skipped: {tool} not installed");
}
