//! Debian's ffmpeg publishes pre-encoded test media over RTMP in real time; the HLS output
//! passes the RFC 8216 checks while live and after it ends, every segment starts with a
//! keyframe, ffprobe sees the codecs sent, it decodes without an error, and its duration
//! is within one segment of what was sent.

use tidegate_testkit::*;

const SENT: u32 = 12;

fn ffmpeg_publisher(kind: Media) -> impl FnOnce(&str) -> Proc {
    move |url| publish_ffmpeg(kind, url, &Publish::for_secs(SENT))
}

#[test]
fn h264_aac_fmp4() {
    let out = publish_once_and_check(
        &[],
        true,
        true,
        SENT.into(),
        ffmpeg_publisher(Media::H264Aac),
    );
    assert_streams(&out.streams, Some("h264"), true);
}

#[test]
fn h264_aac_mpegts() {
    let out = publish_once_and_check(
        &["--segment-format", "ts"],
        false,
        true,
        SENT.into(),
        ffmpeg_publisher(Media::H264Aac),
    );
    assert_streams(&out.streams, Some("h264"), true);
}

#[test]
fn audio_only() {
    let out = publish_once_and_check(
        &[],
        true,
        false,
        SENT.into(),
        ffmpeg_publisher(Media::AudioOnly),
    );
    assert_streams(&out.streams, None, true);
}

#[test]
fn video_only() {
    let out = publish_once_and_check(
        &[],
        true,
        true,
        SENT.into(),
        ffmpeg_publisher(Media::VideoOnly),
    );
    assert_streams(&out.streams, Some("h264"), false);
}
