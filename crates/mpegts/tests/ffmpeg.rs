//! Real-decoder tests: ffmpeg-encoded H.264/HEVC + AAC muxed into HLS `.ts` segments, then
//! read back by ffprobe/ffmpeg through a playlist and as one concatenated file.
// A test binary: its helpers (outside `#[test]` functions, which clippy.toml already
// covers) may unwrap, panic and index too; the crate's deny lints are for its library code.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "../../fmp4/tests/common/mod.rs"]
mod common;

use common::{
    assert_decodes_cleanly, assert_streams, cut, generate, probe_duration, probe_video_timestamps,
    scratch_dir, write_playlist, Media,
};
use tidegate_media::VideoCodec;
use tidegate_mpegts::{TsMuxer, TIMESTAMP_OFFSET};

fn mux_and_check(name: &str, codec: VideoCodec, codec_name: &str) {
    let dir = scratch_dir(name);
    let m: Media = generate(&dir, codec);
    let mut muxer = TsMuxer::new(Some(&m.video), Some(&m.audio)).unwrap();
    let mut whole = Vec::new();
    let mut entries = Vec::new();
    for (i, c) in cut(&m).iter().enumerate() {
        let seg = muxer.segment(&c.runs(&m)).unwrap();
        assert_eq!(seg.len() % 188, 0);
        let file = format!("seg{i}.ts");
        std::fs::write(dir.join(&file), &seg).unwrap();
        whole.extend_from_slice(&seg);
        let first = m.video_frames[c.video.0].dts;
        entries.push((file, (c.video.2 - first) as f64 / 90_000.0));
    }
    let playlist = write_playlist(&dir, None, &entries);
    assert_decodes_cleanly(&playlist);
    assert_streams(&playlist, codec_name, &m);

    // Continuity counters carry across segments, so the concatenation is one clean stream.
    let joined = dir.join("whole.ts");
    std::fs::write(&joined, &whole).unwrap();
    assert_decodes_cleanly(&joined);
    assert_streams(&joined, codec_name, &m);
    let duration = probe_duration(&joined);
    assert!((duration - 6.0).abs() < 0.1, "duration {duration}");
    let expected: Vec<(i64, i64)> = m
        .video_frames
        .iter()
        .map(|f| (f.pts + TIMESTAMP_OFFSET, f.dts + TIMESTAMP_OFFSET))
        .collect();
    assert_eq!(probe_video_timestamps(&joined), expected);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn h264_aac_ts_plays_in_ffmpeg() {
    mux_and_check("ts-h264", VideoCodec::H264, "h264");
}

#[test]
fn hevc_aac_ts_plays_in_ffmpeg() {
    mux_and_check("ts-hevc", VideoCodec::H265, "hevc");
}
