//! Enhanced RTMP: the static ffmpeg 9 from the `imageio-ffmpeg` wheel publishes HEVC and
//! AV1 (FourCC video tags) with AAC; the HLS output passes every check and ffprobe sees
//! the codec that was sent.

use tidegate_testkit::*;

const SENT: u32 = 10;

fn ffmpeg9_publisher(kind: Media) -> impl FnOnce(&str) -> Proc {
    move |url| {
        let file = media(kind);
        publish_with(&ffmpeg9(), &file, url, &Publish::for_secs(SENT))
    }
}

#[test]
fn hevc_aac() {
    media(Media::HevcAac); // encode before the server starts
    let out = publish_once_and_check(
        &[],
        true,
        true,
        SENT.into(),
        ffmpeg9_publisher(Media::HevcAac),
    );
    assert_streams(&out.streams, Some("hevc"), true);
}

#[test]
fn av1_aac() {
    media(Media::Av1Aac);
    let out = publish_once_and_check(
        &[],
        true,
        true,
        SENT.into(),
        ffmpeg9_publisher(Media::Av1Aac),
    );
    assert_streams(&out.streams, Some("av1"), true);
}
