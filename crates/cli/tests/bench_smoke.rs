//! `tidegate bench` against a real `tidegate serve`: 3 paced publishers and 2 HLS viewers
//! for a few seconds; the JSON report must show every publisher connected and none
//! dropped, bytes sent, viewers that played without errors, and the server's own segment
//! latency scraped from /metrics.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{ffmpeg, media, Media, Server};

#[test]
fn bench_publishers_and_viewers_against_serve() {
    let mut server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let flv = dir.path().join("clip.flv");
    let out = Command::new(ffmpeg())
        .args(["-y", "-nostdin", "-hide_banner", "-loglevel", "error", "-i"])
        .arg(media(Media::H264Aac))
        .args(["-t", "10", "-c", "copy", "-f", "flv"])
        .arg(&flv)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = dir.path().join("report.json");
    let url = format!("rtmp://{}/live/bench{{i}}", server.rtmp);
    let play = server.url("/hls/default/bench{i}/index.m3u8");
    let started = std::time::Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_tidegate"))
        .arg("bench")
        .args(["--url", &url, "--input"])
        .arg(&flv)
        .args(["--publishers", "3", "--ramp-up-rate", "10/s"])
        .args(["--duration", "9s", "--viewers", "2", "--play-url", &play])
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench failed: {}\n{stdout}\n{stderr}",
        out.status
    );
    assert!(started.elapsed() < Duration::from_secs(30), "bench overran");
    server.assert_alive();
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let ctx = format!("report:\n{stdout}\nprogress:\n{stderr}");
    let p = &report["publishers"];
    assert_eq!(p["connected"], 3, "{ctx}");
    assert_eq!(p["dropped"], 0, "{ctx}");
    assert_eq!(p["refused"], 0, "{ctx}");
    assert_eq!(p["failed"], 0, "{ctx}");
    assert!(p["bytes_sent"].as_u64().unwrap() > 100_000, "{ctx}");
    for o in p["per_publisher"].as_array().unwrap() {
        assert_eq!(o["outcome"], "finished", "{ctx}");
        // On loopback a publisher never falls a whole second behind.
        assert!(o["max_lag_ms"].as_u64().unwrap() < 1000, "{ctx}");
    }
    let v = &report["viewers"];
    assert_eq!(v["errors"], 0, "{ctx}");
    assert_eq!(v["started"], 2, "{ctx}");
    assert!(v["segments"].as_u64().unwrap() >= 2, "{ctx}");
    // The server's keyframe -> listed histogram grew while the bench ran.
    let lat = &report["server_segment_latency"];
    assert!(lat["segments"].as_u64().unwrap() >= 3, "{ctx}");
    assert!(
        report["generator"]["cpu_seconds"].as_f64().is_some(),
        "{ctx}"
    );
    assert!(stdout.contains("3 connected"), "{ctx}");
    assert!(stderr.contains("publishing 3"), "no progress line: {ctx}");
}

#[test]
fn srt_urls_are_refused_clearly() {
    let out = Command::new(env!("CARGO_BIN_EXE_tidegate"))
        .args([
            "bench",
            "--url",
            "srt://127.0.0.1:9000?streamid=x",
            "--input",
        ])
        .arg("/nonexistent.flv")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not yet supported"), "{err}");
}
