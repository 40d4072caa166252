//! Real players against a two-worker cluster with no stickiness (issue #13, "Tests that must
//! exist"): ffmpeg publishes to worker A; every viewer request goes through a round-robin
//! HTTP proxy over A and B (testkit's `RoundRobinProxy`, per request, also on one
//! keep-alive connection), so each player's successive requests alternate between the
//! ingesting worker and the other. Two tenants: `ll` with LL-HLS parts (the worker's default
//! part duration) and `regular` with none (`part_duration_ms: 0`, the playlist as before
//! LL-HLS). In one headless chromium, five pages play at once: hls.js with
//! `lowLatencyMode: true` on each tenant's playlist (on `ll` it loads parts and blocks on
//! `_HLS_msn`/`_HLS_part`, its held requests going through the proxy), dash.js on the MPD,
//! and Shaka Player on the HLS playlist and on the MPD. Each plays at least [`PLAY_S`]
//! seconds of media with no fatal error and no stall over [`STALL_MS`]; the proxy shows
//! both workers served each player's playlists and media. The live latency each player
//! computes is printed.

use std::time::Duration;

use serde_json::json;
use tidegate_testkit::*;

const TOKEN: &str = "operator-secret-token";
/// Seconds of media each player must play.
const PLAY_S: f64 = 30.0;
/// The longest the playhead may stand still once playing. Five players, two workers, Redis,
/// the S3 server and two encoders share the test machine's two cores: a player that misses
/// one frame deadline under that load stands still ~1 s (Shaka once reported 1.1 s while the
/// rest of the suite ran beside it), so the bound leaves room for the machine, not the stream.
const STALL_MS: f64 = 2000.0;

/// Creates tenant `name` with `settings` and a key for its stream `main`; returns the key.
fn tenant_with_key(base: &str, name: &str, settings: serde_json::Value) -> String {
    let mut body = json!({ "name": name });
    if let (Some(b), Some(s)) = (body.as_object_mut(), settings.as_object()) {
        b.extend(s.clone());
    }
    let (status, answer) = api_as(TOKEN, "POST", &format!("{base}/api/v1/tenants"), Some(body));
    assert_eq!(status, 201, "{answer}");
    let (status, answer) = api_as(
        TOKEN,
        "POST",
        &format!("{base}/api/v1/tenants/{name}/keys"),
        Some(json!({ "stream": "main" })),
    );
    assert_eq!(status, 201, "{answer}");
    answer["key"].as_str().unwrap().to_owned()
}

#[test]
fn hls_js_dash_js_and_shaka_play_through_a_round_robin_over_two_workers() {
    let cluster = Cluster::start(ClusterOpts {
        workers: 2,
        worker_args: ["--admin-token", TOKEN].map(String::from).to_vec(),
        ..ClusterOpts::default()
    });
    let ingest = &cluster.workers[0];
    let other = &cluster.workers[1];
    let base = ingest.url("");
    let ll_key = tenant_with_key(&base, "ll", json!({}));
    let regular_key = tenant_with_key(&base, "regular", json!({ "part_duration_ms": 0 }));
    let _publishers = [&ll_key, &regular_key]
        .map(|key| publish_ffmpeg(Media::H264Aac, &ingest.rtmp_url(key), &Publish::forever()));
    // The worker that does not ingest lists three segments: the players start on a window.
    for tenant in ["ll", "regular"] {
        wait_playlist(
            &other.url(&format!("/hls/{tenant}/main/index.m3u8")),
            Duration::from_secs(40),
            "three segments on the worker that does not ingest",
            |pl| pl.segments.len() >= 3,
        );
    }
    let ll_hls = "/hls/ll/main/index.m3u8".to_owned();
    let regular_hls = "/hls/regular/main/index.m3u8".to_owned();
    let mpd = "/dash/ll/main/manifest.mpd".to_owned();
    let players = [
        ("hlsjs-ll", Engine::HlsJs, &ll_hls),
        ("hlsjs-regular", Engine::HlsJs, &regular_hls),
        ("dashjs", Engine::DashJs, &mpd),
        ("shaka-hls", Engine::Shaka, &ll_hls),
        ("shaka-dash", Engine::Shaka, &mpd),
    ];
    // A proxy per player, so that each one's requests alternate workers strictly.
    let backends = [ingest.http, other.http];
    let proxies: Vec<RoundRobinProxy> = players
        .iter()
        .map(|_| RoundRobinProxy::start(&backends))
        .collect();
    let specs: Vec<PlayerSpec> = players
        .iter()
        .zip(&proxies)
        .map(|((name, engine, path), proxy)| PlayerSpec::new(name, *engine, &proxy.url(path)))
        .collect();

    let mut browser = Players::start(&specs);
    let playing = browser.wait_started(Duration::from_secs(120));
    // Each plays PLAY_S seconds and a margin; a fatal error ends the wait early.
    let fatal = browser.wait_line(Duration::from_secs_f64(PLAY_S + 6.0), |l| {
        l.starts_with("FATAL ")
    });
    let output = browser.output();
    let reports = browser.finish();
    for r in &reports {
        eprintln!("PLAYER {}", r.line());
    }
    for ((name, _, _), proxy) in players.iter().zip(&proxies) {
        eprintln!("PROXY of {name}:\n{}", proxy.summary());
    }
    assert!(fatal.is_none(), "a player failed: {fatal:?}\n{output}");
    for (name, _, _) in &players {
        assert!(
            playing.iter().any(|p| p == name),
            "{name} never played:\n{output}"
        );
    }
    assert_eq!(reports.len(), players.len(), "{output}");
    for r in &reports {
        assert!(
            r.fatal().is_empty(),
            "{} reported fatal errors: {}",
            r.name,
            r.line()
        );
        assert!(
            r.played_s() >= PLAY_S,
            "{} played {:.1} s of media, want {PLAY_S}: {}",
            r.name,
            r.played_s(),
            r.line()
        );
        assert!(
            r.longest_stall_ms() <= STALL_MS,
            "{} stalled {} ms: {}",
            r.name,
            r.longest_stall_ms(),
            r.line()
        );
        assert!(
            r.json["width"].as_u64().unwrap_or(0) > 0,
            "{} decoded no picture: {}",
            r.name,
            r.line()
        );
        assert!(
            r.median_latency().is_some(),
            "{} computed no live latency: {}",
            r.name,
            r.line()
        );
    }
    // hls.js on `ll` played LL-HLS: parts, blocking reloads, held by both workers through
    // the proxy; on `regular`, the playlist it has always had.
    let report = |name: &str| reports.iter().find(|r| r.name == name).unwrap();
    let ll = &report("hlsjs-ll").json["lowLatency"];
    assert_eq!(ll["parts"], true, "hls.js saw no EXT-X-PART: {ll}");
    assert_eq!(
        ll["canBlockReload"], true,
        "hls.js saw no CAN-BLOCK-RELOAD: {ll}"
    );
    let regular = &report("hlsjs-regular").json["lowLatency"];
    assert_eq!(
        regular["parts"], false,
        "parts in the regular playlist: {regular}"
    );
    let blocking: Vec<ProxiedRequest> = proxies[0]
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("_HLS_msn=") && r.status == 200)
        .collect();
    for i in 0..2 {
        assert!(
            blocking.iter().any(|r| r.backend == Some(i)),
            "worker {i} answered no blocking playlist request of hls.js:\n{}",
            proxies[0].summary()
        );
    }
    let held = blocking.iter().filter(|r| r.head_ms >= 100).count();
    // Parts are `seg-EPOCH-N.PART.m4s`: a dot in the name before the extension.
    let is_part = |r: &ProxiedRequest| {
        let file = r.path_only().rsplit('/').next().unwrap_or_default();
        file.strip_suffix(".m4s")
            .is_some_and(|stem| stem.contains('.'))
    };
    let parts: Vec<ProxiedRequest> = proxies[0]
        .requests()
        .into_iter()
        .filter(|r| is_part(r) && r.status == 200)
        .collect();
    eprintln!(
        "BLOCKING: {} blocking reloads of hls.js answered 200, {held} held 100 ms or more; \
         {} parts loaded",
        blocking.len(),
        parts.len()
    );
    assert!(
        held > 0,
        "no blocking request was held:\n{}",
        proxies[0].summary()
    );
    for i in 0..2 {
        assert!(
            parts.iter().any(|r| r.backend == Some(i)),
            "worker {i} served hls.js no part:\n{}",
            proxies[0].summary()
        );
    }
    for ((name, _, _), proxy) in players.iter().zip(&proxies) {
        for (i, worker) in ["the ingesting worker", "the other worker"]
            .iter()
            .enumerate()
        {
            for kind in [RequestKind::Playlist, RequestKind::Media] {
                assert!(
                    proxy.served(i, kind) > 0,
                    "{worker} served {name} no {kind:?}:\n{}",
                    proxy.summary()
                );
            }
        }
    }
}
