//! LL-HLS parts end to end (issue #13 item 1, docs/ll-hls.md): ffmpeg publishes 2 s GOPs,
//! the writer stores and lists each part, the origin serves it. On one worker: the playlist
//! has the low-latency tags (server control, `PART-TARGET=0.334`, parts, a preload hint), a
//! segment's first part is `INDEPENDENT=YES`, every listed part is exactly its slice of the
//! segment (fetched while its segment is being built and again afterwards), pip's `m3u8`
//! finds the parts and the hint, and ffprobe/ffmpeg still play the same URL. `--part-duration
//! off` gives a playlist without any LL-HLS tag; a part duration out of range is refused at
//! start. On two workers sharing Redis, the worker that does not ingest lists each new part
//! soon after the ingesting one (the figure is printed) and serves its bytes. A tenant's
//! `part_duration_ms` is the part target of its streams.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;
use tidegate_testkit::*;

const TOKEN: &str = "operator-secret-token";

/// One parsed LL-HLS media playlist (what these tests look at).
#[derive(Debug, Default)]
struct LlPlaylist {
    /// Listed segments: URI, EXTINF, their parts.
    segments: Vec<(String, f64, Vec<Part>)>,
    /// The parts of the segment being built.
    open: Vec<Part>,
    /// `EXT-X-PRELOAD-HINT` URI.
    hint: Option<String>,
    /// `PART-TARGET`.
    part_target: Option<f64>,
    server_control: Option<String>,
}

#[derive(Debug, Clone)]
struct Part {
    uri: String,
    duration: f64,
    independent: bool,
}

fn attribute(line: &str, name: &str) -> Option<String> {
    let at = line.find(&format!("{name}="))? + name.len() + 1;
    let rest = &line[at..];
    if let Some(quoted) = rest.strip_prefix('"') {
        Some(quoted[..quoted.find('"')?].to_owned())
    } else {
        Some(rest.split(',').next()?.to_owned())
    }
}

fn parse_ll(text: &str) -> LlPlaylist {
    let mut pl = LlPlaylist::default();
    let mut parts = Vec::new();
    let mut extinf = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("#EXT-X-PART:") {
            parts.push(Part {
                uri: attribute(v, "URI").expect("EXT-X-PART URI"),
                duration: attribute(v, "DURATION")
                    .and_then(|d| d.parse().ok())
                    .expect("EXT-X-PART DURATION"),
                independent: v.contains("INDEPENDENT=YES"),
            });
        } else if let Some(v) = line.strip_prefix("#EXT-X-PART-INF:") {
            pl.part_target = attribute(v, "PART-TARGET").and_then(|t| t.parse().ok());
        } else if let Some(v) = line.strip_prefix("#EXT-X-SERVER-CONTROL:") {
            pl.server_control = Some(v.to_owned());
        } else if let Some(v) = line.strip_prefix("#EXT-X-PRELOAD-HINT:") {
            pl.hint = attribute(v, "URI");
        } else if let Some(v) = line.strip_prefix("#EXTINF:") {
            extinf = v.split(',').next().and_then(|d| d.parse().ok());
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let duration = extinf.take().expect("EXTINF before a URI");
            pl.segments
                .push((line.trim().to_owned(), duration, std::mem::take(&mut parts)));
        }
    }
    pl.open = parts;
    pl
}

fn fetch_text(url: &str) -> Option<String> {
    let r = try_get(url).ok()?;
    (r.status == 200).then(|| r.text())
}

/// Polls `url` until `want` holds of its LL-HLS parse.
fn wait_ll(url: &str, what: &str, want: impl Fn(&LlPlaylist) -> bool) -> (String, LlPlaylist) {
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        if let Some(text) = fetch_text(url) {
            let pl = parse_ll(&text);
            if want(&pl) {
                return (text, pl);
            }
            assert!(Instant::now() < deadline, "{what}: never came\n{text}");
        } else {
            assert!(Instant::now() < deadline, "{what}: {url} never answered");
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// GET a part: 200 with the segment content type and the segments' cache policy.
fn get_part(url: &str) -> Vec<u8> {
    let resp = ureq::get(url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(resp.status(), 200, "{url}");
    assert_eq!(
        resp.header("content-type"),
        Some("video/iso.segment"),
        "{url}"
    );
    assert_eq!(
        resp.header("cache-control"),
        Some("public, max-age=31536000, immutable"),
        "{url}"
    );
    let mut body = Vec::new();
    std::io::Read::read_to_end(&mut resp.into_reader(), &mut body).unwrap();
    body
}

/// Every listed segment's parts, fetched one by one, are its bytes exactly, in order.
fn check_parts_tile_segments(base: &str, pl: &LlPlaylist) -> usize {
    let mut checked = 0;
    for (uri, extinf, parts) in &pl.segments {
        if parts.is_empty() {
            continue;
        }
        let segment = get(&format!("{base}/{uri}"));
        assert_eq!(segment.status, 200, "{uri}");
        let mut joined = Vec::new();
        for p in parts {
            joined.extend(get_part(&format!("{base}/{}", p.uri)));
        }
        assert!(
            joined == segment.body,
            "{uri}: its {} parts ({} bytes) are not its {} bytes",
            parts.len(),
            joined.len(),
            segment.body.len()
        );
        assert!(parts[0].independent, "{uri}: first part not INDEPENDENT");
        let total: f64 = parts.iter().map(|p| p.duration).sum();
        assert!(
            (total - extinf).abs() < 0.01 * parts.len() as f64,
            "{uri}: parts last {total} s, the segment {extinf} s"
        );
        checked += 1;
    }
    checked
}

/// Reads a playlist with PyPI `m3u8` (installed by scripts/test.sh): parts and hint found.
fn m3u8_summary(text: &str) -> String {
    const SCRIPT: &str = r#"
import sys, m3u8
p = m3u8.loads(sys.stdin.read())
print("part_target", p.part_inf.part_target)
print("preload_hint", p.preload_hint.hint_type, p.preload_hint.uri)
print("segments", len(p.segments), "parts", sum(len(s.parts) for s in p.segments))
print("independent_first", all(s.parts[0].independent == "YES" for s in p.segments if s.parts and s.uri))
"#;
    let mut child = Command::new("python3")
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "m3u8 could not read the playlist: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// ffmpeg reads the playlist and decodes `seconds` of it without an error.
fn ffmpeg_plays(url: &str, seconds: u32) {
    let out = Command::new(ffmpeg())
        .args(["-hide_banner", "-nostdin", "-loglevel", "error"])
        .args(["-i", url, "-t", &seconds.to_string(), "-f", "null", "-"])
        .output()
        .expect("ffmpeg");
    assert!(
        out.status.success(),
        "ffmpeg could not play {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn one_worker_lists_parts_that_are_slices_of_their_segments() {
    let server = Server::start(&[]);
    let mut publisher = publish_ffmpeg(
        Media::H264Aac,
        &server.rtmp_url("parts"),
        &Publish::forever(),
    );
    let url = server.playlist_url("parts");
    let base = server.url("/hls/default/parts");

    // Parts of the segment being built, fetched as they come (their own objects).
    let (_, early) = wait_ll(&url, "an open segment with two parts", |p| {
        p.open.len() >= 2
    });
    let early_parts: Vec<(String, Vec<u8>)> = early
        .open
        .iter()
        .map(|p| (p.uri.clone(), get_part(&format!("{base}/{}", p.uri))))
        .collect();
    let parent = |part: &str| {
        let (stem, _) = part.rsplit_once('.').unwrap();
        format!("{}.m4s", stem.rsplit_once('.').unwrap().0)
    };
    let early_segment = parent(&early_parts[0].0);

    let (text, pl) = wait_ll(&url, "three segments listed", |p| {
        p.segments.len() >= 3 && p.segments.iter().any(|s| s.0 == early_segment)
    });
    assert!(
        pl.server_control
            .as_deref()
            .is_some_and(|c| c.contains("CAN-BLOCK-RELOAD=YES") && c.contains("PART-HOLD-BACK=")),
        "{text}"
    );
    let target = pl.part_target.expect("PART-TARGET");
    assert!(
        (target - 0.334).abs() < 0.0015,
        "PART-TARGET {target}\n{text}"
    );
    let hint = pl.hint.clone().expect("a preload hint");
    assert!(hint.starts_with("seg-") && hint.ends_with(".m4s"), "{hint}");
    for (_, _, parts) in &pl.segments {
        for p in parts {
            assert!(
                p.duration <= target + 0.001,
                "{} lasts {}\n{text}",
                p.uri,
                p.duration
            );
        }
    }

    // The early parts are the start of their segment's bytes, now that it is listed.
    let segment = get(&format!("{base}/{early_segment}"));
    let joined: Vec<u8> = early_parts.iter().flat_map(|(_, b)| b.clone()).collect();
    assert!(
        segment.body.starts_with(&joined),
        "the parts fetched while {early_segment} was built are not its first bytes"
    );
    let checked = check_parts_tile_segments(&base, &pl);
    assert!(checked >= 3, "{checked} segments with parts\n{text}");
    // Not listed, not hinted: 404.
    let (first, _, _) = &pl.segments[0];
    let missing = format!("{base}/{}", first.replace(".m4s", ".99.m4s"));
    assert_eq!(get(&missing).status, 404);
    assert_eq!(
        get(&format!("{base}/{}", first.replace(".m4s", ".01.m4s"))).status,
        404
    );

    // An independent LL-HLS parser.
    let summary = m3u8_summary(&text);
    assert!(summary.contains("part_target 0.334"), "{summary}");
    assert!(
        summary.contains(&format!("preload_hint PART {hint}")),
        "{summary}"
    );
    assert!(summary.contains("independent_first True"), "{summary}");
    let parts_found: usize = summary
        .lines()
        .find_map(|l| l.strip_prefix("segments "))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(parts_found >= 3 * 6, "{summary}");

    // Regular clients keep playing the same URL.
    let probe = run_ffprobe(&["-show_streams"], &url);
    let kinds: Vec<&str> = probe["streams"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["codec_type"].as_str())
        .collect();
    assert!(
        kinds.contains(&"video") && kinds.contains(&"audio"),
        "{probe}"
    );
    ffmpeg_plays(&url, 4);
    check_playlist_text(&url, &fetch_text(&url).unwrap(), &live_fmp4()).unwrap();

    // The publisher leaves: no hint and no open parts remain of its session.
    publisher.kill();
    let (text, _) = wait_ll(&url, "no hint after the publisher left", |p| {
        p.hint.is_none() && p.open.is_empty()
    });
    assert!(!text.contains("#EXT-X-ENDLIST"), "{text}");
}

#[test]
fn part_duration_off_is_plain_hls_and_a_bad_value_is_refused() {
    let server = Server::start(&["--part-duration", "off"]);
    let mut publisher = publish_ffmpeg(
        Media::H264Aac,
        &server.rtmp_url("plain"),
        &Publish::forever(),
    );
    let url = server.playlist_url("plain");
    let pl = wait_playlist(&url, Duration::from_secs(45), "two segments", |p| {
        p.segments.len() >= 2
    });
    check_playlist_text(&url, &pl.text, &live_fmp4()).unwrap();
    for tag in [
        "#EXT-X-PART",
        "#EXT-X-SERVER-CONTROL",
        "#EXT-X-PRELOAD-HINT",
        "#EXT-X-PART-INF",
    ] {
        assert!(!pl.text.contains(tag), "{tag} with parts off:\n{}", pl.text);
    }
    let first = &pl.segments[0].uri;
    let part = server.url(&format!(
        "/hls/default/plain/{}",
        first.replace(".m4s", ".0.m4s")
    ));
    assert_eq!(get(&part).status, 404);
    publisher.kill();

    for (how, value) in [
        ("flag", "50ms"),
        ("flag", "2s"),
        ("env", "1500ms"),
        ("flag", "soon"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(tidegate_bin());
        cmd.args([
            "serve",
            "--rtmp-listen",
            "127.0.0.1:0",
            "--srt-listen",
            "127.0.0.1:0",
        ])
        .args(["--http-listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path());
        if how == "flag" {
            cmd.args(["--part-duration", value]);
        } else {
            cmd.env("TIDEGATE_PART_DURATION", value);
        }
        let mut proc = Proc::spawn("tidegate-bad-part", cmd);
        let status = proc.wait_exit(Duration::from_secs(30));
        let log = proc.log_text();
        assert!(
            status.is_some_and(|s| !s.success()),
            "{how} {value}: not refused: {status:?}\n{log}"
        );
        assert!(
            log.contains("part-duration") || log.contains("part_duration"),
            "{how} {value}: {log}"
        );
    }
}

#[test]
fn the_worker_that_does_not_ingest_lists_each_part_soon_and_serves_it() {
    let cluster = Cluster::start(ClusterOpts {
        workers: 2,
        ..ClusterOpts::default()
    });
    let ingest = &cluster.workers[0];
    let viewer = &cluster.workers[1];
    let rtmp = format!("rtmp://{}/live/relay", ingest.rtmp);
    let mut publisher = publish_ffmpeg(Media::H264Aac, &rtmp, &Publish::forever());
    let here = ingest.playlist_url("relay");
    let there = viewer.playlist_url("relay");
    wait_ll(&there, "a segment on the other worker", |p| {
        !p.segments.is_empty()
    });

    // Both workers polled in turn; when each lists each part first.
    let mut seen: BTreeMap<String, (Option<Instant>, Option<Instant>)> = BTreeMap::new();
    let all_parts = |p: &LlPlaylist| -> Vec<String> {
        p.segments
            .iter()
            .flat_map(|s| s.2.iter())
            .chain(p.open.iter())
            .map(|x| x.uri.clone())
            .collect()
    };
    let until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < until {
        for (side, url) in [(0, &here), (1, &there)] {
            if let Some(text) = fetch_text(url) {
                let now = Instant::now();
                for uri in all_parts(&parse_ll(&text)) {
                    let e = seen.entry(uri).or_default();
                    let slot = if side == 0 { &mut e.0 } else { &mut e.1 };
                    slot.get_or_insert(now);
                }
            }
        }
        thread::sleep(Duration::from_millis(10));
    }
    // Parts first seen by the ingesting worker during the run (not those already listed).
    let first_poll = seen.values().filter_map(|v| v.0).min().unwrap();
    let mut delays: Vec<u128> = seen
        .iter()
        .filter_map(|(_, (a, b))| match (a, b) {
            (Some(a), Some(b)) if *a > first_poll + Duration::from_millis(50) => {
                Some(b.saturating_duration_since(*a).as_millis())
            }
            _ => None,
        })
        .collect();
    delays.sort_unstable();
    assert!(
        delays.len() >= 10,
        "{} new parts seen on both workers: {seen:?}",
        delays.len()
    );
    let median = delays[delays.len() / 2];
    let max = delays[delays.len() - 1];
    println!(
        "new parts listed on the non-ingesting worker after the ingesting one: median {median} ms, \
         max {max} ms over {} parts (10 ms polling of each)",
        delays.len()
    );
    assert!(
        max < 5_000,
        "a part took {max} ms to reach the other worker: {delays:?}"
    );
    let missing: Vec<&String> = seen
        .iter()
        .filter(|(_, (a, b))| {
            a.is_some_and(|a| a > first_poll + Duration::from_secs(1)) && b.is_none()
        })
        .map(|(k, _)| k)
        .filter(|k| !k.is_empty())
        .collect();
    // A part listed in the last instant of the run may not have reached the other yet.
    assert!(
        missing.len() <= 2,
        "parts never listed by the other worker: {missing:?}"
    );

    // The other worker serves the parts: the open ones from their objects, the listed
    // segments' from their bytes.
    let base = viewer.url("/hls/default/relay");
    let (_, pl) = wait_ll(&there, "an open segment with a part", |p| {
        !p.open.is_empty() && p.segments.len() >= 2
    });
    for p in &pl.open {
        assert!(!get_part(&format!("{base}/{}", p.uri)).is_empty());
    }
    assert!(check_parts_tile_segments(&base, &pl) >= 2);
    publisher.kill();
}

#[test]
fn a_tenant_part_duration_is_the_part_target_of_its_streams() {
    let server = Server::start(&["--admin-token", TOKEN]);
    let base = server.url("");
    let (status, answer) = api_as(
        TOKEN,
        "POST",
        &format!("{base}/api/v1/tenants"),
        Some(json!({"name": "halfsec", "part_duration_ms": 500})),
    );
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["part_duration_ms"], 500, "{answer}");
    let (status, answer) = api_as(
        TOKEN,
        "POST",
        &format!("{base}/api/v1/tenants"),
        Some(json!({"name": "toofast", "part_duration_ms": 100})),
    );
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = api_as(
        TOKEN,
        "POST",
        &format!("{base}/api/v1/tenants/halfsec/keys"),
        Some(json!({"stream": "main"})),
    );
    assert_eq!(status, 201, "{answer}");
    let key = answer["key"].as_str().unwrap().to_owned();
    let mut publisher = publish_ffmpeg(
        Media::H264Aac,
        &format!("rtmp://{}/live/{key}", server.rtmp),
        &Publish::forever(),
    );
    let url = server.url("/hls/halfsec/main/index.m3u8");
    let (text, pl) = wait_ll(&url, "two segments with parts", |p| {
        p.segments.iter().filter(|s| !s.2.is_empty()).count() >= 2
    });
    assert_eq!(pl.part_target, Some(0.5), "{text}");
    // 25 fps, 2 s GOPs: 12 frames (480 ms) a part, four parts and a short one a segment.
    for (uri, _, parts) in pl.segments.iter().filter(|s| !s.2.is_empty()) {
        assert!(
            parts.len() >= 4 && parts.len() <= 5,
            "{uri}: {} parts\n{text}",
            parts.len()
        );
        assert!(parts.iter().all(|p| p.duration <= 0.501), "{uri}\n{text}");
    }
    check_parts_tile_segments(&server.url("/hls/halfsec/main"), &pl);
    publisher.kill();
}

#[test]
fn a_signed_tenant_gates_parts_and_carries_the_token_onto_them() {
    let server = Server::start(&["--admin-token", TOKEN]);
    let base = server.url("");
    let call = |method: &str, path: &str, body: serde_json::Value| {
        let (status, answer) = api_as(TOKEN, method, &format!("{base}{path}"), Some(body));
        assert!(status == 201, "{method} {path}: {status} {answer}");
        answer
    };
    call(
        "POST",
        "/api/v1/tenants",
        json!({"name": "sig", "playback": "signed"}),
    );
    let key = call(
        "POST",
        "/api/v1/tenants/sig/keys",
        json!({"stream": "main"}),
    )["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let token = call(
        "POST",
        "/api/v1/tenants/sig/playback-tokens",
        json!({"stream": "main", "ttl_s": 600}),
    )["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut publisher = publish_ffmpeg(
        Media::H264Aac,
        &format!("rtmp://{}/live/{key}", server.rtmp),
        &Publish::forever(),
    );
    let url = server.url(&format!("/hls/sig/main/index.m3u8?token={token}"));
    let (text, pl) = wait_ll(&url, "a segment with parts and a hint", |p| {
        p.segments.iter().any(|s| !s.2.is_empty()) && p.hint.is_some()
    });
    let carried = format!("?token={token}");
    let hint = pl.hint.clone().unwrap();
    assert!(hint.ends_with(&carried), "{text}");
    let parts: Vec<&Part> = pl
        .segments
        .iter()
        .flat_map(|s| s.2.iter())
        .chain(pl.open.iter())
        .collect();
    assert!(parts.iter().all(|p| p.uri.ends_with(&carried)), "{text}");
    let part = &parts[0].uri;
    let with = ureq::get(&server.url(&format!("/hls/sig/main/{part}")))
        .call()
        .unwrap();
    assert_eq!(with.status(), 200);
    assert_eq!(
        with.header("cache-control"),
        Some("private, max-age=31536000, immutable")
    );
    let bare = part.trim_end_matches(&carried);
    let without = get(&server.url(&format!("/hls/sig/main/{bare}")));
    assert_eq!(without.status, 403, "a part without the token");
    publisher.kill();
}
