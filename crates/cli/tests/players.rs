//! Real players against a two-worker cluster with no stickiness (issue #13, "Tests that must
//! exist"): ffmpeg publishes to worker A; every viewer request goes through a round-robin
//! HTTP proxy over A and B (testkit's `RoundRobinProxy`, per request, also on one
//! keep-alive connection), so each player's successive requests alternate between the
//! ingesting worker and the other. In one headless chromium, four pages play at once:
//! hls.js with `lowLatencyMode: true` on the HLS playlist, dash.js on the MPD, and Shaka
//! Player on each. Each plays at least [`PLAY_S`] seconds of media with no fatal error and
//! no stall over [`STALL_MS`]; the proxy shows both workers served each player's playlists
//! and media. The live latency each player computes is printed.

use std::time::Duration;

use tidegate_testkit::*;

const KEY: &str = "players";
/// Seconds of media each player must play.
const PLAY_S: f64 = 30.0;
/// The longest the playhead may stand still once playing.
const STALL_MS: f64 = 1000.0;

#[test]
fn hls_js_dash_js_and_shaka_play_through_a_round_robin_over_two_workers() {
    let cluster = Cluster::start(ClusterOpts {
        workers: 2,
        ..ClusterOpts::default()
    });
    let ingest = &cluster.workers[0];
    let other = &cluster.workers[1];
    let _publisher = publish_ffmpeg(Media::H264Aac, &ingest.rtmp_url(KEY), &Publish::forever());
    // The worker that does not ingest lists three segments: the players start on a window.
    wait_playlist(
        &other.playlist_url(KEY),
        Duration::from_secs(40),
        "three segments on the worker that does not ingest",
        |pl| pl.segments.len() >= 3,
    );
    let hls = format!("/hls/default/{KEY}/index.m3u8");
    let mpd = format!("/dash/default/{KEY}/manifest.mpd");
    let players = [
        ("hlsjs-ll", Engine::HlsJs, &hls),
        ("dashjs", Engine::DashJs, &mpd),
        ("shaka-hls", Engine::Shaka, &hls),
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
