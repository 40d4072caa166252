//! GStreamer over SRT, live (`videotestsrc`/`audiotestsrc is-live=true`, x264 with a 2 s GOP,
//! AAC), against a real `tidegate serve`:
//!
//! 1. the recipe that used to be in the README, `h264parse ! mpegtsmux ! srtsink`, and the
//!    same with `h264parse config-interval=-1`: GStreamer 1.22's `mpegtsmux` marks the
//!    packets around every keyframe as stream headers and `srtsink` drops those, so no
//!    SPS/PPS and no keyframe ever arrive. Both streams turn `warning` with the reason
//!    `no_video` in the API and in a signed `stream.status_changed` webhook, their dropped
//!    video frames are counted in `tidegate_video_frames_dropped_total`, and the log says so
//!    once per stream;
//! 2. the README's pipeline (`mpegtsmux alignment=7`) plays: the HLS output has an H.264
//!    4:2:0 video stream and AAC, and the stream stays `healthy` past the `no_video` bound.

use std::fs;
use std::net::SocketAddr;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use tidegate_testkit::hooks::{delivered, describe, Receiver, SECRET};
use tidegate_testkit::*;

/// The log line the server writes once per session for `no_video`.
const NO_VIDEO_LOG: &str = "no decodable video";

/// `max-keyframe-interval` (the `no_video` bound) of the server's default configuration.
const NO_VIDEO_BOUND: Duration = Duration::from_secs(10);

/// A live GStreamer publisher to `srt://addr` with stream id `key`: 640x360 30 fps test
/// pattern, x264 with a keyframe every 60 frames (2 s), AAC. `parse` are `h264parse`'s
/// properties, `mux` `mpegtsmux`'s. Runs until killed.
fn gst_srt(addr: SocketAddr, key: &str, parse: &str, mux: &str) -> Proc {
    let gst = require_cmd("gst-launch-1.0");
    for e in [
        "videotestsrc",
        "audiotestsrc",
        "x264enc",
        "h264parse",
        "aacparse",
        "mpegtsmux",
        "srtsink",
    ] {
        require_gst_element(e);
    }
    let aac = gst_aac_encoder();
    let pipeline = format!(
        "videotestsrc is-live=true \
         ! video/x-raw,format=I420,width=640,height=360,framerate=30/1 \
         ! x264enc tune=zerolatency speed-preset=veryfast key-int-max=60 bitrate=1500 \
         ! video/x-h264,profile=main ! h264parse {parse} ! queue \
         ! mpegtsmux name=mux {mux} ! srtsink uri=srt://{addr} streamid={key} \
         audiotestsrc is-live=true wave=sine ! audioconvert ! audioresample \
         ! audio/x-raw,rate=48000,channels=2 ! {aac} ! aacparse ! queue ! mux."
    );
    let mut cmd = Command::new(gst);
    cmd.arg("-e").args(pipeline.split_whitespace());
    Proc::spawn(&format!("gst-srt-{key}"), cmd)
}

fn reason_codes(v: &serde_json::Value) -> Vec<String> {
    v["reasons"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r["code"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// `tidegate_video_frames_dropped_total` of stream `key` over SRT; `None` without a series.
fn video_frames_dropped(metrics: &str, key: &str) -> Option<f64> {
    let series = format!(
        "tidegate_video_frames_dropped_total{{tenant=\"default\",stream=\"{key}\",protocol=\"srt\"}} "
    );
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .and_then(|v| v.trim().parse().ok())
}

/// Server log lines saying `no_video` for stream `key`.
fn no_video_lines(server: &Server, key: &str) -> usize {
    let stream = format!("stream=default/{key} ");
    server
        .log_text()
        .lines()
        .filter(|l| l.contains(NO_VIDEO_LOG) && l.contains(&stream))
        .count()
}

#[test]
fn mpegtsmux_into_srtsink_without_alignment_is_no_video_counted_logged_once_and_webhooked() {
    let rx = Receiver::start(|_, _| (204, Duration::ZERO));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tidegate.toml");
    fs::write(
        &config,
        format!(
            "webhooks = [\"{}\"]\nwebhook-secret = \"{SECRET}\"\n",
            rx.url("/hook")
        ),
    )
    .unwrap();
    let config = config.to_string_lossy().into_owned();
    let mut server = Server::start(&["--config", &config]);
    // The recipe the README had, and the same with parameter sets before every keyframe:
    // srtsink drops the keyframes either way.
    let mut plain = gst_srt(server.srt, "plain", "", "");
    let mut repeated = gst_srt(server.srt, "repeated", "config-interval=-1", "");
    let started = Instant::now();

    for key in ["plain", "repeated"] {
        let v = server.wait_stream_json(
            key,
            "status warning with reason no_video",
            NO_VIDEO_BOUND + Duration::from_secs(40),
            |v| v["status"] == "warning" && reason_codes(v).iter().any(|c| c == "no_video"),
        );
        eprintln!("{key}: {v}");
        assert_eq!(
            reason_codes(&v),
            ["no_video"],
            "{key}: only no_video (never no_keyframe: there is no configuration): {v}"
        );
        let for_ms = v["reasons"][0]["for_ms"].as_u64().unwrap_or(0);
        assert!(
            for_ms > NO_VIDEO_BOUND.as_millis() as u64,
            "{key}: for_ms {for_ms} must exceed the bound: {v}"
        );
        assert_eq!(v["protocol"], "srt", "{v}");
        // What a user saw: the stream carries data (≈1.5 Mbit/s of video goes in) but its
        // playlist is audio-only.
        assert_eq!(v["codecs"], "mp4a.40.2", "{key}: {v}");
    }
    assert!(
        started.elapsed() >= NO_VIDEO_BOUND,
        "no_video raised before its bound ({:?})",
        started.elapsed()
    );

    // Every video frame that arrives is dropped and counted, and the count keeps growing.
    let metrics = server.metrics();
    let first: Vec<f64> = ["plain", "repeated"]
        .iter()
        .map(|k| {
            video_frames_dropped(&metrics, k).unwrap_or_else(|| {
                panic!("no tidegate_video_frames_dropped_total series for {k}:\n{metrics}")
            })
        })
        .collect();
    for (k, n) in ["plain", "repeated"].iter().zip(&first) {
        // 30 fps for over 10 s; a busy machine may lose some, not most.
        assert!(*n >= 100.0, "{k}: only {n} video frames counted as dropped");
    }
    // Several more health evaluations (and reason updates) pass: still one log line each.
    thread::sleep(Duration::from_secs(4));
    let metrics = server.metrics();
    for (k, n) in ["plain", "repeated"].iter().zip(&first) {
        let now = video_frames_dropped(&metrics, k).unwrap_or(0.0);
        assert!(
            now > *n,
            "{k}: the dropped count stopped at {n} (now {now})"
        );
        assert_eq!(
            no_video_lines(&server, k),
            1,
            "{k}: the log must say no_video exactly once:\n{}",
            server.proc.log_tail(40)
        );
    }

    // The webhook carries the reason.
    let hits = rx.wait(
        Duration::from_secs(15),
        "status_changed webhooks with no_video",
        |h| {
            ["plain", "repeated"].iter().all(|k| {
                delivered(h, "stream.status_changed").iter().any(|hit| {
                    let d = &hit.json()["data"];
                    d["stream"] == *k && d["status"] == "warning"
                })
            })
        },
    );
    for hit in delivered(&hits, "stream.status_changed") {
        hit.verify(SECRET)
            .unwrap_or_else(|e| panic!("{e}\n{}", describe(&hits)));
        let d = &hit.json()["data"];
        if d["status"] == "warning" {
            assert_eq!(d["previous_status"], "healthy", "{d}");
            assert_eq!(d["reasons"][0]["code"], "no_video", "{d}");
        }
    }

    assert!(plain.is_running() && repeated.is_running());
    plain.kill();
    repeated.kill();
    server.assert_alive();
}

#[test]
fn the_readme_pipeline_plays_with_video_and_stays_healthy() {
    let mut server = Server::start(&[]);
    let key = "cam";
    let mut publisher = gst_srt(server.srt, key, "config-interval=-1", "alignment=7");
    let url = server.playlist_url(key);
    wait_playlist(&url, Duration::from_secs(30), "two segments", |pl| {
        pl.segments.len() >= 2
    });
    // Past the no_video bound, with margin, while still publishing.
    let connected = server.wait_stream_json(key, "status healthy", Duration::from_secs(10), |v| {
        v["status"] == "healthy"
    });
    eprintln!("{key}: {connected}");
    thread::sleep(NO_VIDEO_BOUND + Duration::from_secs(3));
    assert!(
        publisher.is_running(),
        "gst-launch exited:\n{}",
        publisher.log_tail(30)
    );
    let v = server.stream_json(key);
    assert_eq!(v["status"], "healthy", "{v}");
    assert!(reason_codes(&v).is_empty(), "{v}");
    let codecs = v["codecs"].as_str().unwrap_or("");
    assert!(
        codecs.starts_with("avc1.4d") && codecs.ends_with("mp4a.40.2"),
        "H.264 Main + AAC expected: {v}"
    );
    assert_eq!(no_video_lines(&server, key), 0);

    // What a player gets: H.264 in 4:2:0, and AAC.
    let probe = run_ffprobe(
        &[
            "-show_entries",
            "stream=codec_type,codec_name,pix_fmt,width,height",
        ],
        &url,
    );
    let streams = probe["streams"].as_array().cloned().unwrap_or_default();
    let video = streams
        .iter()
        .find(|s| s["codec_type"] == "video")
        .unwrap_or_else(|| panic!("no video stream in the HLS output: {probe}"));
    assert_eq!(video["codec_name"], "h264", "{probe}");
    assert_eq!(video["pix_fmt"], "yuv420p", "{probe}");
    assert_eq!(
        (video["width"].as_u64(), video["height"].as_u64()),
        (Some(640), Some(360))
    );
    assert!(
        streams
            .iter()
            .any(|s| s["codec_type"] == "audio" && s["codec_name"] == "aac"),
        "no AAC in the HLS output: {probe}"
    );

    publisher.kill();
    server.assert_alive();
}
