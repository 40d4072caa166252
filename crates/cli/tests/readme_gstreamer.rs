//! The README's GStreamer RTMP pipeline, run as written (only its URL replaced) against a
//! worker: it must publish H.264 that players decode, 4:2:0 (`yuv420p`), with AAC. Without
//! `format=I420` x264enc picks 4:4:4, which browsers cannot play.

use std::process::Command;
use std::time::Duration;

use tidegate_testkit::*;

/// The README's URL in the pipeline, replaced by the test worker's.
const README_URL: &str = "rtmp://localhost:1935/live/mystream";

/// The shell command of the README's ```sh block that publishes with `rtmp2sink`
/// (continuation lines joined).
fn readme_pipeline() -> String {
    let readme = include_str!("../../../README.md");
    let mut block: Option<Vec<&str>> = None;
    for line in readme.lines() {
        match &mut block {
            None if line.trim_start().starts_with("```sh") => block = Some(Vec::new()),
            None => {}
            Some(lines) if line.trim_start().starts_with("```") => {
                let text = lines.join("\n");
                if text.contains("gst-launch-1.0") && text.contains("rtmp2sink") {
                    return text.replace("\\\n", " ");
                }
                block = None;
            }
            Some(lines) => lines.push(line),
        }
    }
    panic!("README.md has no ```sh block with a gst-launch-1.0 ... rtmp2sink pipeline");
}

#[test]
fn the_readme_gstreamer_rtmp_pipeline_publishes_4_2_0_h264_with_aac() {
    require_cmd("gst-launch-1.0");
    for e in [
        "videotestsrc",
        "x264enc",
        "h264parse",
        "flvmux",
        "rtmp2sink",
        "audiotestsrc",
        "avenc_aac",
        "aacparse",
    ] {
        require_gst_element(e);
    }
    let pipeline = readme_pipeline();
    assert!(
        pipeline.contains(README_URL),
        "the README pipeline publishes to {README_URL}:\n{pipeline}"
    );
    let server = Server::start(&[]);
    let key = unique_name("readme-gst");
    let command = pipeline.replace(README_URL, &server.rtmp_url(&key));
    let mut cmd = Command::new("bash");
    cmd.arg("-c").arg(format!("exec {command}"));
    let mut publisher = Proc::spawn("gst-readme", cmd);

    let url = server.playlist_url(&key);
    wait_playlist(&url, Duration::from_secs(40), "a first segment", |pl| {
        !pl.segments.is_empty()
    });
    assert!(publisher.is_running(), "{}", publisher.log_tail(30));

    let out = Command::new(ffprobe())
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_type,codec_name,profile,pix_fmt",
            "-of",
            "compact",
        ])
        .arg(&url)
        .output()
        .unwrap();
    let probe = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "ffprobe: {probe}");
    let video = probe
        .lines()
        .find(|l| l.contains("codec_type=video"))
        .unwrap_or_else(|| panic!("no video stream: {probe}"));
    assert!(video.contains("codec_name=h264"), "{video}");
    assert!(video.contains("pix_fmt=yuv420p"), "not 4:2:0: {video}");
    assert!(
        probe
            .lines()
            .any(|l| l.contains("codec_type=audio") && l.contains("codec_name=aac")),
        "no AAC stream: {probe}"
    );
    publisher.kill();
}
