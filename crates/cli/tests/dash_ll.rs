//! Low-latency DASH and the multivariant playlist (issue #13 items 3 and 4), from a worker
//! that does not ingest, with independent readers:
//!
//! - the MPD of a stream with LL-HLS parts (the default `--part-duration`) parses with pip's
//!   `mpegdash` (and `xml.etree` for what `mpegdash` 0.4 does not model:
//!   `ServiceDescription`, and `availabilityTimeComplete`, which it reads as a Python `bool`
//!   of the text) and has the DASH-IF low-latency profile, `availabilityTimeOffset` with
//!   `availabilityTimeComplete="false"`, a `ServiceDescription` and a `UTCTiming`;
//! - the segment being built, requested by its `$Number$` as soon as the MPD announces it,
//!   comes with chunked transfer: its first bytes arrive before the segment is complete
//!   (listed in the HLS playlist; the figures are printed), and the whole body is the
//!   segment object once stored;
//! - the multivariant playlist has `CODECS`, `RESOLUTION` and `FRAME-RATE=30.000` for a
//!   30 fps source, read by pip's `m3u8`, for fMP4 with parts, fMP4 without and MPEG-TS;
//!   without parts (`--part-duration off`) the MPD has none of the low-latency signalling;
//!   HEVC and AV1 (Enhanced RTMP, ffmpeg 9) keep their `hvc1.`/`av01.` `CODECS`, the same in
//!   the MPD, with `FRAME-RATE=25.000` for the 25 fps test media;
//! - dash.js in headless Chromium (tests/browser/dash_ll_player.mjs) plays the low-latency
//!   MPD in its low-latency mode with live catch-up and reports its live latency
//!   (`getCurrentLiveLatency()`).
//!
//! (npm's `mpd-parser` 1.4 reads neither `ServiceDescription` nor `availabilityTimeOffset`,
//! so it would check nothing here.)

use std::io::Read;
use std::path::PathBuf;
use std::process::Command;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tidegate_testkit::*;

const KEY: &str = "llcam";
const TOKEN: &str = "operator-secret-token";

/// Reads a multivariant playlist from stdin with `m3u8` and prints its variant's attributes.
const MULTIVARIANT_PY: &str = r#"
import json, sys, m3u8
pl = m3u8.loads(sys.stdin.read())
assert pl.is_variant, "not a multivariant playlist"
info = pl.playlists[0].stream_info
print(json.dumps({"codecs": info.codecs, "resolution": list(info.resolution or []),
                  "frameRate": info.frame_rate, "bandwidth": info.bandwidth}))
"#;

/// 10 s of 30 fps testsrc2 (640x360, 2 s GOPs) + AAC, generated once per target dir.
fn media_30fps() -> PathBuf {
    cached_media("h264aac-30fps-v1.mp4", |tmp| {
        run_ok(
            Command::new(ffmpeg())
                .args(["-y", "-nostdin", "-hide_banner", "-v", "error"])
                .args(lavfi_inputs("testsrc2=size=640x360:rate=30"))
                .args(["-t", "10"])
                .args([
                    "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-b:v", "800k",
                ])
                .args(fixed_gop_args(60))
                .args(["-c:a", "aac", "-b:a", "96k", "-ac", "2", "-ar", "48000"])
                .args(["-movflags", "+faststart"])
                .arg(tmp),
            "generating the 30 fps file",
        );
    })
}

fn publish_30fps(url: &str) -> Proc {
    publish_with(&ffmpeg(), &media_30fps(), url, &Publish::forever())
}

fn get_text(url: &str) -> (u16, String) {
    match ureq::get(url).call() {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(s, r)) => (s, r.into_string().unwrap_or_default()),
        Err(e) => panic!("GET {url}: {e}"),
    }
}

fn get_bytes(url: &str) -> Vec<u8> {
    let resp = ureq::get(url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let mut body = Vec::new();
    resp.into_reader().read_to_end(&mut body).unwrap();
    body
}

/// The number of the last segment the MPD's last period announces.
fn last_number(summary: &Value) -> u64 {
    let rep = last_representation(summary);
    rep["startNumber"].as_u64().unwrap_or(0) + timeline_count(rep) - 1
}

/// The MPD is low-latency and its last period lists `segments` segments or more.
fn low_latency_with(summary: &Value, segments: u64) -> bool {
    let rep = last_representation(summary);
    !rep["availabilityTimeOffset"].is_null() && timeline_count(rep) >= segments
}

/// [`last_number`] read straight from the MPD text (the last period's `startNumber` and its
/// `S` elements with their repeats), for polling quickly.
fn last_number_in(text: &str) -> Option<u64> {
    let period = text.rsplit("<Period ").next()?;
    let start: u64 = period
        .split("startNumber=\"")
        .nth(1)?
        .split('"')
        .next()?
        .parse()
        .ok()?;
    let count: u64 = period
        .split("<S ")
        .skip(1)
        // Each piece is one `S` element (and, for the last, the closing tags after it).
        .map(|s| {
            1 + s
                .split(" r=\"")
                .nth(1)
                .and_then(|r| r.split('"').next()?.parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum();
    (count > 0).then(|| start + count - 1)
}

/// The multivariant playlist at `url` once it exists, as `m3u8` reads it.
fn multivariant(url: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, text) = get_text(url);
        if status == 200 {
            return python_json(MULTIVARIANT_PY, &text, "m3u8");
        }
        assert!(Instant::now() < deadline, "no {url}: {status} {text}");
        thread::sleep(Duration::from_millis(300));
    }
}

fn assert_multivariant(url: &str, codec_prefix: &str) -> Value {
    assert_multivariant_at(url, codec_prefix, "30.000")
}

/// The multivariant playlist at `url` has `CODECS` starting with `codec_prefix` and AAC,
/// `RESOLUTION=640x360` and `FRAME-RATE=<rate>` (three decimals); returns what `m3u8` read.
fn assert_multivariant_at(url: &str, codec_prefix: &str, rate: &str) -> Value {
    let v = multivariant(url);
    println!("{url}: {v}");
    assert!(
        v["codecs"].as_str().unwrap_or("").starts_with(codec_prefix)
            && v["codecs"].as_str().unwrap_or("").contains("mp4a.40.2"),
        "{v}"
    );
    assert_eq!(v["resolution"], json!([640, 360]), "{v}");
    assert_eq!(
        v["frameRate"].as_f64(),
        Some(rate.parse::<f64>().unwrap()),
        "{v}"
    );
    let (_, text) = get_text(url);
    assert!(
        text.contains(&format!(",FRAME-RATE={rate}")),
        "three decimals: {text}"
    );
    v
}

#[test]
fn a_non_ingesting_worker_serves_low_latency_dash_and_sends_the_segment_being_built_chunked() {
    let cluster = Cluster::start(ClusterOpts {
        workers: 2,
        ..ClusterOpts::default()
    });
    let ingest = &cluster.workers[0];
    let viewer = &cluster.workers[1];
    let mut publisher = publish_30fps(&format!("rtmp://{}/live/{KEY}", ingest.rtmp));
    let mpd_url = viewer.url(&format!("/dash/default/{KEY}/manifest.mpd"));

    let (text, mpd) = wait_mpd(&mpd_url, "low latency and three segments", |m| {
        low_latency_with(m, 3)
    });
    println!("{text}");
    let profiles = mpd["profiles"].as_str().unwrap();
    assert!(
        profiles.contains("urn:mpeg:dash:profile:isoff-live:2011")
            && profiles.contains("http://www.dashif.org/guidelines/low-latency-live-v5"),
        "{text}"
    );
    // 2 s segments, 1/3 s parts (the default): available once the first part is.
    let rep = last_representation(&mpd);
    let ato = rep["availabilityTimeOffset"].as_f64().unwrap();
    assert!(
        (ato - 1.667).abs() < 0.01,
        "availabilityTimeOffset {ato}: {text}"
    );
    assert_eq!(rep["availabilityTimeComplete"], "false", "{text}");
    let latency = &mpd["latency"];
    let target = latency["target"].as_f64().unwrap_or(0.0);
    assert!(
        target > 0.0
            && latency["min"].as_f64().unwrap_or(f64::MAX) <= target
            && latency["max"].as_f64().unwrap_or(0.0) >= target,
        "ServiceDescription Latency: {text}"
    );
    assert!(
        mpd["playbackRate"]["min"].as_f64().unwrap_or(1.0) < 1.0
            && mpd["playbackRate"]["max"].as_f64().unwrap_or(1.0) > 1.0,
        "ServiceDescription PlaybackRate: {text}"
    );
    assert_eq!(mpd["utcTiming"][0][0], "urn:mpeg:dash:utc:http-iso:2014");
    assert_eq!(mpd["utcTiming"][0][1], viewer.url("/dash/time"));

    // The segment being built: wait for the MPD to announce a new one (polled often, read
    // without the Python parser, so the request goes out early in the segment), then ask
    // for it.
    let announced = last_number(&mpd);
    let deadline = Instant::now() + Duration::from_secs(20);
    let (number, announcing) = loop {
        let (status, text) = get_text(&mpd_url);
        if let Some(n) = (status == 200).then(|| last_number_in(&text)).flatten() {
            if n > announced {
                break (n, text);
            }
        }
        assert!(
            Instant::now() < deadline,
            "no new segment announced: {text}"
        );
        thread::sleep(Duration::from_millis(30));
    };
    let name = rep["media"]
        .as_str()
        .unwrap()
        .replace("$Number$", &number.to_string());
    let base = resolve(&mpd_url, mpd["baseURLs"][0].as_str().unwrap());
    let segment_url = resolve(&base, &name);
    let playlist_url = viewer.url(&format!("/hls/default/{KEY}/index.m3u8"));
    let (status, playlist) = get_text(&playlist_url);
    assert_eq!(status, 200);
    assert!(
        !playlist.contains(&name),
        "{name} is being built, not yet listed:\n{playlist}"
    );

    // When the HLS playlist lists it (complete), from another thread.
    let requested = Instant::now();
    let (listed_tx, listed_rx) = mpsc::channel();
    {
        let (playlist_url, name) = (playlist_url.clone(), name.clone());
        thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if get_text(&playlist_url).1.contains(&name) {
                    let _ = listed_tx.send(Instant::now());
                    return;
                }
                thread::sleep(Duration::from_millis(20));
            }
        });
    }
    let resp = ureq::get(&segment_url)
        .call()
        .unwrap_or_else(|e| panic!("GET {segment_url}: {e}"));
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.header("transfer-encoding"),
        Some("chunked"),
        "the segment being built comes with chunked transfer"
    );
    assert_eq!(resp.header("content-type"), Some("video/iso.segment"));
    let mut reader = resp.into_reader();
    let mut body = Vec::new();
    let mut first_bytes = None;
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = reader
            .read(&mut buf)
            .expect("the chunked body reads to its end");
        if n == 0 {
            break;
        }
        first_bytes.get_or_insert_with(Instant::now);
        body.extend_from_slice(&buf[..n]);
    }
    let ended = Instant::now();
    let first_bytes = first_bytes.expect("a body");
    let listed = listed_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the segment gets listed");
    let secs = |t: Instant| t.duration_since(requested).as_secs_f64();
    println!(
        "segment being built {name}: first bytes {:.3} s after the request, the segment \
         complete (listed in the HLS playlist) after {:.3} s, the body ended after {:.3} s, \
         {} bytes",
        secs(first_bytes),
        secs(listed),
        secs(ended),
        body.len()
    );
    assert!(
        first_bytes < listed,
        "the first bytes came before the segment was complete"
    );
    assert_eq!(
        last_number(&mpd_summary(&announcing)),
        number,
        "the quick reading agrees with mpegdash's: {announcing}"
    );
    let stored = get_bytes(&segment_url);
    assert!(body == stored, "the chunked body is the segment object");
    assert!(stored.len() > 1000);

    // The multivariant playlist with parts on.
    assert_multivariant(
        &viewer.url(&format!("/hls/default/{KEY}/master.m3u8")),
        "avc1.",
    );
    publisher.kill();
}

fn api(method: &str, url: &str, body: Value) -> (u16, Value) {
    let resp = ureq::request(method, url)
        .set("Authorization", &format!("Bearer {TOKEN}"))
        .set("Content-Type", "application/json")
        .send_string(&body.to_string());
    let resp = match resp {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let status = resp.status();
    let text = resp.into_string().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Creates tenant `name` with `settings` and a key for its stream `main`; returns the key.
fn tenant_key(base: &str, name: &str, settings: Value) -> String {
    let mut body = json!({"name": name});
    if let (Some(b), Some(s)) = (body.as_object_mut(), settings.as_object()) {
        b.extend(s.clone());
    }
    let (status, answer) = api("POST", &format!("{base}/api/v1/tenants"), body);
    assert_eq!(status, 201, "{answer}");
    let (status, answer) = api(
        "POST",
        &format!("{base}/api/v1/tenants/{name}/keys"),
        json!({"stream": "main"}),
    );
    assert_eq!(status, 201, "{answer}");
    answer["key"].as_str().unwrap().to_owned()
}

#[test]
fn without_parts_the_mpd_is_as_before_and_multivariant_playlists_have_the_frame_rate() {
    let server = Server::start(&["--admin-token", TOKEN, "--part-duration", "off"]);
    let base = server.url("");
    // With tenants, every stream needs its key: one tenant packaged as fMP4, one as TS.
    let fmp4_key = tenant_key(&base, "mp4co", json!({}));
    let ts_key = tenant_key(&base, "tsco", json!({"segment_format": "ts"}));
    let mut fmp4 = publish_30fps(&format!("rtmp://{}/live/{fmp4_key}", server.rtmp));
    let mut ts = publish_30fps(&format!("rtmp://{}/live/{ts_key}", server.rtmp));

    let (text, mpd) = wait_mpd(
        &server.url("/dash/mp4co/main/manifest.mpd"),
        "two segments",
        |m| timeline_count(last_representation(m)) >= 2,
    );
    for absent in [
        "availabilityTimeOffset",
        "availabilityTimeComplete",
        "ServiceDescription",
        "low-latency",
    ] {
        assert!(!text.contains(absent), "{absent} without parts: {text}");
    }
    assert!(mpd["latency"].is_null());
    assert_multivariant(&server.url("/hls/mp4co/main/master.m3u8"), "avc1.");
    assert_multivariant(&server.url("/hls/tsco/main/master.m3u8"), "avc1.");
    fmp4.kill();
    ts.kill();
}

#[test]
fn hevc_and_av1_keep_their_codecs_in_the_multivariant_playlist_and_the_mpd() {
    // Encoded before the server starts (cached per target dir).
    let (hevc, av1) = (media(Media::HevcAac), media(Media::Av1Aac));
    let server = Server::start(&[]);
    let mut publishers = Vec::new();
    for (key, file) in [("hevc", &hevc), ("av1", &av1)] {
        publishers.push(publish_with(
            &ffmpeg9(),
            file,
            &server.rtmp_url(key),
            &Publish::forever(),
        ));
    }
    for (key, prefix) in [("hevc", "hvc1."), ("av1", "av01.")] {
        // The test media are 25 fps.
        let v = assert_multivariant_at(
            &server.url(&format!("/hls/default/{key}/master.m3u8")),
            prefix,
            "25.000",
        );
        let (_, mpd) = get_text(&server.url(&format!("/dash/default/{key}/manifest.mpd")));
        let codecs = v["codecs"].as_str().unwrap();
        assert!(
            mpd.contains(&format!("codecs=\"{codecs}\"")),
            "the MPD names the same codecs ({codecs}): {mpd}"
        );
    }
    for mut p in publishers {
        p.kill();
    }
}

fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

#[test]
fn dash_js_in_chromium_plays_the_low_latency_mpd_from_the_non_ingesting_worker() {
    let node = require_cmd("node");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        PathBuf::from(&chromium).is_file(),
        "required test tool `chromium` is missing (Debian package chromium); run ./scripts/install-test-tools.sh"
    );
    for module in ["playwright-core", "dashjs"] {
        assert!(
            browser_dir()
                .join(format!("node_modules/{module}/package.json"))
                .is_file(),
            "required test tool `{module}` is missing (npm ci in crates/cli/tests/browser); \
             run ./scripts/install-test-tools.sh"
        );
    }
    let cluster = Cluster::start(ClusterOpts {
        workers: 2,
        ..ClusterOpts::default()
    });
    let mut publisher = publish_30fps(&format!("rtmp://{}/live/{KEY}", cluster.workers[0].rtmp));
    let mpd_url = cluster.workers[1].url(&format!("/dash/default/{KEY}/manifest.mpd"));
    wait_mpd(&mpd_url, "low latency and three segments", |m| {
        low_latency_with(m, 3)
    });
    let out = Command::new(node)
        .arg(browser_dir().join("dash_ll_player.mjs"))
        .args([mpd_url.as_str(), "20"])
        .env("CHROMIUM", &chromium)
        .current_dir(browser_dir())
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}{stderr}");
    assert!(
        out.status.success() && stdout.contains("PASS"),
        "dash.js failed:\n{stdout}{stderr}"
    );
    let figure = |name: &str| -> f64 {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(f64::NAN)
    };
    let (latency, target) = (figure("LATENCY "), figure("TARGET "));
    println!("dash.js live latency {latency:.2} s (target {target:.2} s)");
    assert!(latency > 0.0, "dash.js reports its live latency:\n{stdout}");
    publisher.kill();
}
