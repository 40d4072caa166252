//! Real-decoder tests: ffmpeg-encoded H.264/HEVC + AAC muxed into CMAF segments, then read
//! back by ffprobe/ffmpeg through an HLS playlist and as one concatenated file.
// A test binary: its helpers (outside `#[test]` functions, which clippy.toml already
// covers) may unwrap, panic and index too; the crate's deny lints are for its library code.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{
    assert_decodes_cleanly, assert_streams, cut, generate, probe_duration, probe_video_timestamps,
    scratch_dir, write_playlist, Media,
};
use tidegate_fmp4::{init_segment, media_segment};
use tidegate_media::VideoCodec;

fn mux_and_check(name: &str, codec: VideoCodec, codec_name: &str) {
    let dir = scratch_dir(name);
    let m: Media = generate(&dir, codec);
    let init = init_segment(Some(&m.video), Some(&m.audio)).unwrap();
    std::fs::write(dir.join("init.mp4"), &init).unwrap();
    let mut whole = init.to_vec();
    let mut entries = Vec::new();
    for (i, c) in cut(&m).iter().enumerate() {
        let seg = media_segment(i as u32 + 1, &c.runs(&m), Some(&m.audio)).unwrap();
        let file = format!("seg{i}.m4s");
        std::fs::write(dir.join(&file), &seg).unwrap();
        whole.extend_from_slice(&seg);
        let first = m.video_frames[c.video.0].dts;
        entries.push((file, (c.video.2 - first) as f64 / 90_000.0));
    }
    let playlist = write_playlist(&dir, Some("init.mp4"), &entries);
    assert_decodes_cleanly(&playlist);
    assert_streams(&playlist, codec_name, &m);

    let joined = dir.join("whole.mp4");
    std::fs::write(&joined, &whole).unwrap();
    assert_decodes_cleanly(&joined);
    assert_streams(&joined, codec_name, &m);
    // The mov demuxer reports where the track ends: the 1 s shift plus 6 s of media.
    let duration = probe_duration(&joined);
    assert!((duration - 7.0).abs() < 0.1, "duration {duration}");
    // Timestamps come back exactly (video timescale is 90 kHz; no edit list).
    let expected: Vec<(i64, i64)> = m.video_frames.iter().map(|f| (f.pts, f.dts)).collect();
    assert_eq!(probe_video_timestamps(&joined), expected);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn h264_aac_cmaf_plays_in_ffmpeg() {
    mux_and_check("fmp4-h264", VideoCodec::H264, "h264");
}

#[test]
fn hevc_aac_cmaf_plays_in_ffmpeg() {
    mux_and_check("fmp4-hevc", VideoCodec::H265, "hevc");
}
