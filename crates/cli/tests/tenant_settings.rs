//! Per-tenant settings against the real binary, with real publishers (ffmpeg over RTMP and
//! SRT) and a real webhook receiver:
//!
//! - SRT: a tenant's passphrase admits its publishers and refuses one with the server's
//!   passphrase (or none), while another tenant's publisher uses the server's; the tenant's
//!   latency is the one negotiated; the API never shows the passphrase, the log never
//!   holds it.
//! - Webhooks: a tenant's webhook receives its events, signed with its secret, and none of
//!   another tenant's; the server's webhook receives both.
//! - Segments and the reconnect window, declared in the TOML file: a tenant with
//!   `segment-format = "ts"` and `segment-duration = "4s"` gets `.ts` segments and
//!   `EXT-X-TARGETDURATION:4` while another gets fMP4 at the server's 2 s on the same worker;
//!   its short reconnect window ends its stream while the other's still waits.
//! - Cluster: settings changed through worker A apply to a publisher on worker B.
//! - `tidegate tenant update` sets them as the API does.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tidegate_testkit::hooks::{describe, Receiver, SECRET};
use tidegate_testkit::*;

const TOKEN: &str = "operator-secret-token";

/// `method url` with the operator token and an optional JSON body: (status, body).
fn api(method: &str, url: &str, body: Option<Value>) -> (u16, Value) {
    tidegate_testkit::http::api_as(TOKEN, method, url, body)
}

/// Creates tenant `body["name"]` through the API at `base`.
fn create_tenant(base: &str, body: Value) -> Value {
    let (status, answer) = api("POST", &format!("{base}/api/v1/tenants"), Some(body));
    assert_eq!(status, 201, "{answer}");
    answer
}

/// A new key for stream `stream` of `tenant`.
fn new_key(base: &str, tenant: &str, stream: &str) -> String {
    let (status, body) = api(
        "POST",
        &format!("{base}/api/v1/tenants/{tenant}/keys"),
        Some(json!({"stream": stream})),
    );
    assert_eq!(status, 201, "{body}");
    body["key"].as_str().unwrap().to_owned()
}

fn playlist(server: &Server, tenant: &str, stream: &str) -> String {
    server.url(&format!("/hls/{tenant}/{stream}/index.m3u8"))
}

fn wait_segments(url: &str, what: &str) -> MediaPlaylist {
    wait_playlist(url, Duration::from_secs(40), what, |pl| {
        !pl.segments.is_empty()
    })
}

/// ffmpeg sending MPEG-TS over SRT with `streamid=KEY` and `extra` query options.
fn srt_publisher(srt: SocketAddr, key: &str, extra: &str) -> Proc {
    ffmpeg_ts_loop(
        "ffmpeg-srt",
        &format!("srt://{srt}?streamid={key}&pkt_size=1316{extra}"),
    )
}

const SERVER_PASSPHRASE: &str = "server-passphrase-1";
const ACME_PASSPHRASE: &str = "acme-only-passphrase";

#[test]
fn a_tenants_srt_passphrase_and_latency_apply_to_its_streams_only() {
    let server = Server::start(&[
        "--admin-token",
        TOKEN,
        "--srt-passphrase",
        SERVER_PASSPHRASE,
    ]);
    let base = server.url("");
    let acme = create_tenant(
        &base,
        json!({"name": "acme", "srt_passphrase": ACME_PASSPHRASE, "srt_pbkeylen": 32,
               "srt_latency_ms": 400, "health": {"min_bitrate_bps": 100000}}),
    );
    // Shown as set, never as itself.
    assert_eq!(acme["srt_passphrase"], "<redacted>", "{acme}");
    assert_eq!(acme["srt_latency_ms"], 400, "{acme}");
    assert_eq!(acme["health"]["min_bitrate_bps"], 100000, "{acme}");
    create_tenant(&base, json!({"name": "beta"}));
    let acme_key = new_key(&base, "acme", "main");
    let beta_key = new_key(&base, "beta", "main");

    // acme: its own passphrase and key length publish.
    let mut good = srt_publisher(
        server.srt,
        &acme_key,
        &format!("&passphrase={ACME_PASSPHRASE}&pbkeylen=32"),
    );
    wait_segments(
        &playlist(&server, "acme", "main"),
        "acme over SRT with its passphrase",
    );
    // beta: the server's passphrase, as before tenants had one.
    let mut beta = srt_publisher(
        server.srt,
        &beta_key,
        &format!("&passphrase={SERVER_PASSPHRASE}"),
    );
    wait_segments(
        &playlist(&server, "beta", "main"),
        "beta over SRT with the server's",
    );

    // acme with the server's passphrase, with the right one at the wrong key length, or
    // with none: refused, and the live publisher goes on.
    let second = new_key(&base, "acme", "second");
    for (what, extra) in [
        (
            "the server's passphrase",
            format!("&passphrase={SERVER_PASSPHRASE}"),
        ),
        (
            "the wrong key length",
            format!("&passphrase={ACME_PASSPHRASE}&pbkeylen=16"),
        ),
        ("no passphrase", String::new()),
    ] {
        let mut bad = srt_publisher(server.srt, &second, &extra);
        assert_publisher_refused(&mut bad, what);
        assert!(good.is_running(), "acme's publisher keeps streaming");
    }
    // beta with acme's passphrase: refused too (its tenant has none of its own).
    let mut bad = srt_publisher(
        server.srt,
        &new_key(&base, "beta", "other"),
        &format!("&passphrase={ACME_PASSPHRASE}"),
    );
    assert_publisher_refused(&mut bad, "beta with acme's passphrase");

    let log = server.log_text();
    assert!(
        !log.contains(ACME_PASSPHRASE) && !log.contains(SERVER_PASSPHRASE),
        "a passphrase reached the log"
    );
    assert!(log.contains("tenant acme: its own srt-passphrase"), "{log}");
    // The latency negotiated: acme's 400 ms, beta's the server's 120 ms (ffmpeg asks 120).
    let publishing: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("srt: publishing"))
        .collect();
    let latency_of = |tenant: &str| {
        publishing
            .iter()
            .find(|l| l.contains(&format!("stream={tenant}/main")))
            .unwrap_or_else(|| panic!("no publishing line for {tenant}: {publishing:?}"))
            .to_string()
    };
    assert!(
        latency_of("acme").contains("latency_ms=400"),
        "{publishing:?}"
    );
    assert!(
        latency_of("beta").contains("latency_ms=120"),
        "{publishing:?}"
    );
    let (_, listed) = api("GET", &server.url("/api/v1/tenants"), None);
    assert!(!listed.to_string().contains(ACME_PASSPHRASE), "{listed}");
    good.kill();
    beta.kill();
}

const ACME_HOOK_SECRET: &str = "acme-webhook-secret-0123";

#[test]
fn a_tenants_webhook_receives_its_events_and_no_other_tenants() {
    let rx = Receiver::start(|_, _| (200, Duration::ZERO));
    let server = Server::start(&[
        "--admin-token",
        TOKEN,
        "--webhook-url",
        &rx.url("/server"),
        "--webhook-secret",
        SECRET,
        "--reconnect-window",
        "2s",
    ]);
    let base = server.url("");
    let acme = create_tenant(
        &base,
        json!({"name": "acme", "webhooks": [rx.url("/acme")], "webhook_secret": ACME_HOOK_SECRET}),
    );
    assert_eq!(acme["webhook_secret"], "<redacted>", "{acme}");
    create_tenant(&base, json!({"name": "beta"}));
    let acme_key = new_key(&base, "acme", "cam");
    let beta_key = new_key(&base, "beta", "cam");
    let mut a = publish_ffmpeg(
        Media::H264Aac,
        &format!("rtmp://{}/live/{acme_key}", server.rtmp),
        &Publish::for_secs(4),
    );
    let mut b = publish_ffmpeg(
        Media::H264Aac,
        &format!("rtmp://{}/live/{beta_key}", server.rtmp),
        &Publish::for_secs(4),
    );
    wait_publisher_success(&mut a, Duration::from_secs(40));
    wait_publisher_success(&mut b, Duration::from_secs(40));
    let ended = |hits: &[tidegate_testkit::hooks::Hit], path: &str, tenant: &str| {
        hits.iter().any(|h| {
            h.path == path
                && h.json()["type"] == "stream.ended"
                && h.json()["data"]["tenant"] == tenant
        })
    };
    let hits = rx.wait(Duration::from_secs(40), "both streams ended", |h| {
        ended(h, "/acme", "acme") && ended(h, "/server", "acme") && ended(h, "/server", "beta")
    });
    let at = |path: &str| -> Vec<&tidegate_testkit::hooks::Hit> {
        hits.iter().filter(|h| h.path == path).collect()
    };
    // The tenant's webhook: its own events, signed with its own secret, in order.
    let own = at("/acme");
    for h in &own {
        h.verify(ACME_HOOK_SECRET)
            .unwrap_or_else(|e| panic!("{e}\n{}", describe(&hits)));
        assert_eq!(h.json()["data"]["tenant"], "acme", "{}", describe(&hits));
    }
    let kinds: Vec<String> = own
        .iter()
        .map(|h| h.json()["type"].as_str().unwrap_or("").to_owned())
        .collect();
    for k in ["stream.published", "stream.unpublished", "stream.ended"] {
        assert!(kinds.iter().any(|x| x == k), "no {k} at /acme: {kinds:?}");
    }
    // The server's webhook: every tenant's, signed with the server's secret.
    for h in at("/server") {
        h.verify(SECRET)
            .unwrap_or_else(|e| panic!("{e}\n{}", describe(&hits)));
    }
    let log = server.log_text();
    assert!(
        !log.contains(ACME_HOOK_SECRET),
        "the webhook secret reached the log"
    );
}

#[test]
fn segment_format_duration_and_reconnect_window_follow_the_tenant() {
    let dir = tempfile::Builder::new()
        .prefix("tidegate-settings-")
        .tempdir()
        .unwrap();
    let config = dir.path().join("tidegate.toml");
    std::fs::write(
        &config,
        "[tenants.short]\nsegment-format = \"ts\"\nsegment-duration = \"4s\"\n\
         reconnect-window = \"2s\"\n\n[tenants.plain]\n",
    )
    .unwrap();
    let server = Server::start(&[
        "--admin-token",
        TOKEN,
        "--config",
        config.to_str().unwrap(),
        "--reconnect-window",
        "60s",
    ]);
    let base = server.url("");
    let (_, short) = api("GET", &server.url("/api/v1/tenants/short"), None);
    assert_eq!(short["segment_format"], "ts", "{short}");
    assert_eq!(short["reconnect_window_ms"], 2000, "{short}");
    assert_eq!(short["segment_duration_ms"], 4000, "{short}");
    // The command line sets the same (and leaves the rest as it is).
    let out = std::process::Command::new(tidegate_bin())
        .args([
            "tenant",
            "update",
            "short",
            "--srt-latency",
            "300ms",
            "--api",
            &base,
        ])
        .args(["--token", TOKEN])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, short) = api("GET", &server.url("/api/v1/tenants/short"), None);
    assert_eq!(short["srt_latency_ms"], 300, "{short}");
    assert_eq!(short["segment_format"], "ts", "{short}");
    let short_key = new_key(&base, "short", "cam");
    let plain_key = new_key(&base, "plain", "cam");
    let mut a = publish_ffmpeg(
        Media::H264Aac,
        &format!("rtmp://{}/live/{short_key}", server.rtmp),
        &Publish::for_secs(9),
    );
    let mut b = publish_ffmpeg(
        Media::H264Aac,
        &format!("rtmp://{}/live/{plain_key}", server.rtmp),
        &Publish::for_secs(9),
    );
    let short_url = playlist(&server, "short", "cam");
    let plain_url = playlist(&server, "plain", "cam");
    let ts = wait_segments(&short_url, "the ts tenant's segments");
    let fmp4 = wait_segments(&plain_url, "the fmp4 tenant's segments");
    assert!(!ts.is_fmp4(), "{}", ts.text);
    assert!(
        ts.segments.iter().all(|s| s.uri.ends_with(".ts")),
        "{}",
        ts.text
    );
    assert!(fmp4.is_fmp4(), "{}", fmp4.text);
    assert!(
        fmp4.segments.iter().all(|s| s.uri.ends_with(".m4s")),
        "{}",
        fmp4.text
    );
    // 4 s for the tenant, the server's 2 s for the other (2 s GOP: cut at the keyframe).
    assert_eq!(ts.target_duration, 4, "{}", ts.text);
    assert!(fmp4.target_duration < 4, "{}", fmp4.text);
    wait_publisher_success(&mut a, Duration::from_secs(40));
    wait_publisher_success(&mut b, Duration::from_secs(40));

    // Both publishers are gone: the 2 s window ends the tenant's stream, the server's
    // 60 s one keeps the other waiting.
    let ended = wait_playlist(
        &short_url,
        Duration::from_secs(30),
        "the short window's end",
        |pl| pl.endlist,
    );
    assert!(ended.endlist);
    let waiting = fetch_playlist(&plain_url, &Expect::default()).unwrap();
    assert!(
        !waiting.endlist,
        "the server's 60 s window still runs: {}",
        waiting.text
    );
    let (_, streams) = api("GET", &server.url("/api/v1/streams"), None);
    let status = |tenant: &str| {
        streams
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["tenant"] == tenant)
            .map(|s| s["status"].clone())
    };
    assert_eq!(status("plain"), Some(json!("reconnecting")), "{streams}");
}

#[test]
fn settings_changed_through_one_worker_apply_on_another() {
    let cluster = Cluster::start(ClusterOpts {
        workers: 2,
        worker_args: vec!["--admin-token".into(), TOKEN.into()],
        ..ClusterOpts::default()
    });
    let a = &cluster.workers[0];
    let b = &cluster.workers[1];
    create_tenant(&a.url(""), json!({"name": "acme"}));
    let key = new_key(&a.url(""), "acme", "main");
    let (status, patched) = api(
        "PATCH",
        &a.url("/api/v1/tenants/acme"),
        Some(json!({"segment_format": "ts", "segment_duration_ms": 4000})),
    );
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["segment_format"], "ts");
    let changed = Instant::now();
    std::thread::sleep(Duration::from_secs(1).saturating_sub(changed.elapsed()));
    let mut publisher = publish_ffmpeg(
        Media::H264Aac,
        &format!("rtmp://{}/live/{key}", b.rtmp),
        &Publish::forever(),
    );
    let pl = wait_segments(&playlist(b, "acme", "main"), "acme through worker B");
    assert!(
        pl.segments.iter().all(|s| s.uri.ends_with(".ts")),
        "worker B applies the format set through A: {}",
        pl.text
    );
    assert_eq!(pl.target_duration, 4, "{}", pl.text);
    publisher.kill();
}
