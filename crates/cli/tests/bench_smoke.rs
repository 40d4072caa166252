//! `tidegate bench` against a real `tidegate serve`: 3 paced RTMP publishers and 2 HLS
//! viewers for a few seconds; the JSON report must show every publisher connected and none
//! dropped, bytes sent, viewers that played without errors, and the server's own segment
//! latency scraped from /metrics. Then the same over SRT (FLV muxed to MPEG-TS; an MPEG-TS
//! file with a passphrase): every publisher finishes, the SRT counters add up, and the
//! server lists each stream with segments.

use std::process::Command;
use std::time::Duration;

use tidegate_testkit::{ffmpeg, get, media, run_ok, wait_playlist, Media, Server};

#[test]
fn bench_publishers_and_viewers_against_serve() {
    let mut server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let flv = dir.path().join("clip.flv");
    remux(&flv, "flv");
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

/// `media` remuxed (no re-encoding) into `format` (`flv` or `mpegts`) at `path`.
fn remux(path: &std::path::Path, format: &str) {
    run_ok(
        Command::new(ffmpeg())
            .args(["-y", "-nostdin", "-hide_banner", "-loglevel", "error", "-i"])
            .arg(media(Media::H264Aac))
            .args(["-t", "10", "-c", "copy", "-f", format])
            .arg(path),
        &format!("remuxing into {format}"),
    );
}

/// Runs `tidegate bench ARGS --json FILE`; returns the report and a context string.
fn bench(
    args: &[&str],
    input: &std::path::Path,
    json: &std::path::Path,
) -> (serde_json::Value, String) {
    let started = std::time::Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_tidegate"))
        .arg("bench")
        .args(args)
        .arg("--input")
        .arg(input)
        .arg("--json")
        .arg(json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench failed: {}\n{stdout}\n{stderr}",
        out.status
    );
    assert!(started.elapsed() < Duration::from_secs(40), "bench overran");
    let report = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    (report, format!("report:\n{stdout}\nprogress:\n{stderr}"))
}

/// Every publisher published to the end, and the SRT counters add up.
fn assert_srt_publishers(report: &serde_json::Value, n: u64, ctx: &str) {
    let p = &report["publishers"];
    assert_eq!(p["connected"], n, "{ctx}");
    assert_eq!(p["dropped"], 0, "{ctx}");
    assert_eq!(p["refused"], 0, "{ctx}");
    assert_eq!(p["failed"], 0, "{ctx}");
    for o in p["per_publisher"].as_array().unwrap() {
        assert_eq!(o["outcome"], "finished", "{ctx}");
        // ~300 payloads a second for several seconds.
        assert!(o["srt"]["packets_sent"].as_u64().unwrap() > 500, "{ctx}");
    }
    let srt = &p["srt"];
    let sent = srt["packets_sent"].as_u64().unwrap();
    assert!(sent > 500 * n, "{ctx}");
    // The bytes on the wire are the payloads plus the 16-byte SRT headers and control.
    assert!(p["bytes_sent"].as_u64().unwrap() >= sent * 1316, "{ctx}");
    assert!(
        srt["packets_reported_lost"].as_u64().unwrap() <= sent,
        "{ctx}"
    );
    assert!(srt["rtt_ms"]["count"].as_u64().unwrap() == n, "{ctx}");
    assert_eq!(
        report["input"]["ts_payloads"].as_u64().map(|c| c > 100),
        Some(true),
        "{ctx}"
    );
}

/// The server lists each stream with segments (and serves its playlist).
fn assert_listed_with_segments(server: &Server, keys: &[String]) {
    for key in keys {
        wait_playlist(
            &server.playlist_url(key),
            Duration::from_secs(20),
            "two segments",
            |pl| pl.segments.len() >= 2,
        );
    }
    let list: serde_json::Value =
        serde_json::from_slice(&get(&server.url("/api/v1/streams")).body).unwrap();
    for key in keys {
        let s = list
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["stream"] == key.as_str())
            .unwrap_or_else(|| panic!("{key} not listed: {list}"));
        assert!(s["segments"].as_u64().unwrap_or(0) >= 2, "{s}");
    }
}

/// SRT: the FLV clip muxed to MPEG-TS, 1316-byte payloads through tidegate's own caller,
/// to `tidegate serve`'s SRT listener; the server packages every stream.
#[test]
fn bench_srt_publishers_against_serve() {
    let mut server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let flv = dir.path().join("clip.flv");
    remux(&flv, "flv");
    let url = format!(
        "srt://{}?streamid=#!::r=live/srt{{i}},m=publish",
        server.srt
    );
    let (report, ctx) = bench(
        &[
            "--url",
            &url,
            "--publishers",
            "3",
            "--ramp-up-rate",
            "10/s",
            "--duration",
            "8s",
        ],
        &flv,
        &dir.path().join("report.json"),
    );
    server.assert_alive();
    assert_srt_publishers(&report, 3, &ctx);
    assert!(ctx.contains("SRT: "), "{ctx}");
    let keys: Vec<String> = (0..3).map(|i| format!("srt{i}")).collect();
    assert_listed_with_segments(&server, &keys);
}

/// SRT with encryption: an MPEG-TS input sent as it is, with the server's passphrase and
/// AES-256; the same with a wrong passphrase is refused with the SRT reason.
#[test]
fn bench_srt_with_a_passphrase() {
    let pass = "correct horse battery";
    let mut server = Server::start(&["--srt-passphrase", pass]);
    let dir = tempfile::tempdir().unwrap();
    let ts = dir.path().join("clip.ts");
    remux(&ts, "mpegts");
    let url = format!(
        "srt://{}?streamid=#!::r=live/enc{{i}},m=publish&passphrase=correct%20horse%20battery&pbkeylen=32",
        server.srt
    );
    let (report, ctx) = bench(
        &[
            "--url",
            &url,
            "--publishers",
            "2",
            "--ramp-up-rate",
            "10/s",
            "--duration",
            "8s",
        ],
        &ts,
        &dir.path().join("report.json"),
    );
    server.assert_alive();
    assert_srt_publishers(&report, 2, &ctx);
    assert_listed_with_segments(&server, &["enc0".to_string(), "enc1".to_string()]);

    let wrong = format!(
        "srt://{}?streamid=#!::r=live/bad,m=publish&passphrase=wrong-passphrase",
        server.srt
    );
    let (report, ctx) = bench(
        &["--url", &wrong, "--duration", "3s", "--quiet"],
        &ts,
        &dir.path().join("wrong.json"),
    );
    let p = &report["publishers"];
    assert_eq!(p["refused"], 1, "{ctx}");
    let detail = p["per_publisher"][0]["detail"].as_str().unwrap_or("");
    assert!(detail.contains("BADSECRET"), "{ctx}");
    server.assert_alive();
}

/// The other viewer kinds: an LL-HLS viewer (blocking reloads, preload hints and parts,
/// with delta updates) and a DASH viewer (the MPD's timeline) play one stream beside an HLS
/// one and report per kind. Only that they ran and reported is asserted, not timings.
#[test]
fn bench_ll_hls_and_dash_viewers_report_per_kind() {
    let mut server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let flv = dir.path().join("clip.flv");
    remux(&flv, "flv");
    let url = format!("rtmp://{}/live/kinds{{i}}", server.rtmp);
    let play = server.url("/hls/default/kinds{i}/index.m3u8");
    let dash = server.url("/dash/default/kinds{i}/manifest.mpd");
    let (report, ctx) = bench(
        &[
            "--url",
            &url,
            "--duration",
            "10s",
            "--viewers",
            "3",
            "--viewer-kind",
            "ll-hls,dash,hls",
            "--play-url",
            &play,
            "--dash-url",
            &dash,
            "--ll-skip",
        ],
        &flv,
        &dir.path().join("report.json"),
    );
    server.assert_alive();
    let v = &report["viewers"];
    assert_eq!(v["started"], 3, "{ctx}");
    let kinds = &v["by_kind"];
    // Streams with parts get a low-latency MPD (availabilityTimeOffset): the DASH viewer
    // reports as LL-DASH.
    let dash_kind = "ll-dash";
    for kind in ["hls", "ll-hls", dash_kind] {
        let k = &kinds[kind];
        assert_eq!(k["viewers"], 1, "{kind}: {ctx}");
        assert_eq!(k["started"], 1, "{kind}: {ctx}");
        assert_eq!(k["errors"], 0, "{kind}: {ctx}");
        assert!(k["fetched"].as_u64().unwrap() >= 1, "{kind}: {ctx}");
        // The playhead played something: one latency sample at least.
        assert!(
            k["latency_ms"]["count"].as_u64().unwrap() >= 1,
            "{kind}: {ctx}"
        );
        assert!(
            ctx.contains(&format!("  {kind}: 1 viewers")),
            "{kind}: {ctx}"
        );
    }
    // The worker offers LL-HLS and LL-DASH (parts of 1/3 s by default): the viewers used it.
    assert_eq!(kinds["ll-hls"]["low_latency"], 1, "{ctx}");
    assert_eq!(kinds["ll-dash"]["low_latency"], 1, "{ctx}");
    assert!(kinds["ll-hls"]["parts"].as_u64().unwrap() >= 1, "{ctx}");
    for o in v["per_viewer"].as_array().unwrap() {
        assert!(o["kind"].is_string(), "{ctx}");
    }
}
