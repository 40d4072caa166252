//! RTMP video that can never be decoded: an FLV (written by ffmpeg: metadata naming H.264,
//! an AVC sequence header, 2 s GOPs) with its sequence header tag removed, published in real
//! time by `tidegate bench` (the project's RTMP client, the only one that sends video tags
//! without their sequence header on purpose). The metadata declares video and video tags
//! keep arriving, but nothing can be decoded: the stream turns `warning` with `no_video`,
//! its dropped video frames are counted under `protocol="rtmp"`, and the log says so once.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use tidegate_testkit::*;

/// FLV tag type of video.
const TAG_VIDEO: u8 = 9;

/// 8 s of 640x360 30 fps H.264 (2 s GOP) + AAC in FLV, as ffmpeg writes it.
fn ffmpeg_flv(path: &Path) {
    run_ok(
        Command::new(ffmpeg())
            .args(["-y", "-nostdin", "-hide_banner", "-v", "error"])
            .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30"])
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
            .args(["-t", "8", "-c:v", "libx264", "-preset", "veryfast"])
            .args(["-pix_fmt", "yuv420p", "-g", "60", "-b:v", "1M"])
            .args(["-c:a", "aac", "-f", "flv"])
            .arg(path),
        "ffmpeg",
    );
}

/// The FLV without its AVC sequence header tags (codec id 7, AVCPacketType 0); returns how
/// many were removed.
fn strip_avc_sequence_headers(flv: &[u8]) -> (Vec<u8>, usize) {
    let header_len = u32::from_be_bytes(flv[5..9].try_into().unwrap()) as usize;
    // Header and PreviousTagSize0 stay.
    let mut out = flv[..header_len + 4].to_vec();
    let mut pos = header_len + 4;
    let mut removed = 0;
    while pos + 11 <= flv.len() {
        let size = u32::from_be_bytes([0, flv[pos + 1], flv[pos + 2], flv[pos + 3]]) as usize;
        let end = pos + 11 + size + 4; // tag header, body, PreviousTagSize
        assert!(end <= flv.len(), "truncated FLV tag at {pos}");
        let body = &flv[pos + 11..pos + 11 + size];
        let sequence_header =
            flv[pos] & 0x1f == TAG_VIDEO && body.len() >= 2 && body[0] & 0x0f == 7 && body[1] == 0;
        if sequence_header {
            removed += 1;
        } else {
            out.extend_from_slice(&flv[pos..end]);
        }
        pos = end;
    }
    (out, removed)
}

#[test]
fn rtmp_video_without_a_sequence_header_is_no_video() {
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole.flv");
    ffmpeg_flv(&whole);
    let (stripped, removed) = strip_avc_sequence_headers(&fs::read(&whole).unwrap());
    assert_eq!(removed, 1, "ffmpeg writes one AVC sequence header");
    let input = dir.path().join("no-sequence-header.flv");
    fs::write(&input, stripped).unwrap();

    let mut server = Server::start(&[]);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tidegate"));
    cmd.args(["bench", "--quiet", "--duration", "90s", "--url"])
        .arg(server.rtmp_url("cam"))
        .arg("--input")
        .arg(&input);
    let mut publisher = Proc::spawn("bench-no-sequence-header", cmd);

    let deadline = Instant::now() + Duration::from_secs(45);
    let v = loop {
        let r = get(&server.url("/api/v1/streams/default/cam"));
        let v: serde_json::Value = if r.status == 200 {
            serde_json::from_slice(&r.body).unwrap()
        } else {
            serde_json::Value::Null
        };
        if v["status"] == "warning" {
            break v;
        }
        assert!(
            Instant::now() < deadline && publisher.is_running(),
            "no warning: {v}\npublisher:\n{}\nserver:\n{}",
            publisher.log_tail(20),
            server.proc.log_tail(40)
        );
        thread::sleep(Duration::from_millis(300));
    };
    eprintln!("{v}");
    assert_eq!(v["reasons"][0]["code"], "no_video", "{v}");
    assert_eq!(v["reasons"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(v["protocol"], "rtmp", "{v}");
    assert_eq!(v["codecs"], "mp4a.40.2", "the playlist is audio-only: {v}");

    let metrics = server.metrics();
    let series =
        "tidegate_video_frames_dropped_total{tenant=\"default\",stream=\"cam\",protocol=\"rtmp\"} ";
    let dropped: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series}series:\n{metrics}"));
    assert!(
        dropped >= 100.0,
        "only {dropped} dropped video frames counted"
    );

    thread::sleep(Duration::from_secs(3));
    let lines = server
        .log_text()
        .lines()
        .filter(|l| l.contains("no decodable video") && l.contains("stream=default/cam "))
        .count();
    assert_eq!(lines, 1, "{}", server.proc.log_tail(30));

    // The series goes with the session.
    publisher.kill();
    wait_for(
        "the dropped-frames series to go with the session",
        Duration::from_secs(30),
        Duration::from_millis(300),
        || (!server.metrics().contains(series)).then_some(()),
    );
    server.assert_alive();
}
