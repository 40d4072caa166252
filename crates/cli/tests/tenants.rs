//! Tenants and stream keys against the real binary: a key made through the admin API
//! publishes (ffmpeg over RTMP and over SRT) to `/hls/TENANT/STREAM/`, whose URL never holds
//! the key; a wrong key, and the open-mode name once tenants exist, are refused with the
//! reason the encoder shows and counted; rotation keeps the live publisher streaming while
//! the old secret stops working; revocation disconnects the publisher and its stream goes
//! `reconnecting`, then ends. On a two-worker Redis cluster a key made through worker A
//! publishes through worker B a second later. `tidegate tenant` and `tidegate key` drive the
//! same API, and RTMPS resolves keys as RTMP does.

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tidegate_testkit::hostile::metric_sum;
use tidegate_testkit::*;

const TOKEN: &str = "operator-secret-token";

/// `method url` with the operator token and an optional JSON body: (status, body).
fn api(method: &str, url: &str, body: Option<Value>) -> (u16, Value) {
    tidegate_testkit::http::api_as(TOKEN, method, url, body)
}

/// Creates tenant `name` and a key for its stream `stream` through the API at `base`;
/// returns (key id, key).
fn tenant_with_key(base: &str, name: &str, stream: &str) -> (String, String) {
    let (status, body) = api(
        "POST",
        &format!("{base}/api/v1/tenants"),
        Some(json!({"name": name, "pool": null, "quotas": {"max_streams": 5}})),
    );
    assert_eq!(status, 201, "{body}");
    new_key(base, name, stream)
}

fn new_key(base: &str, tenant: &str, stream: &str) -> (String, String) {
    let (status, body) = api(
        "POST",
        &format!("{base}/api/v1/tenants/{tenant}/keys"),
        Some(json!({"stream": stream})),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["stream"], stream);
    let key = body["key"].as_str().unwrap().to_owned();
    assert!(key.len() >= 32, "a key carries at least 128 bits: {key}");
    (body["id"].as_str().unwrap().to_owned(), key)
}

fn playlist(server: &Server, tenant: &str, stream: &str) -> String {
    server.url(&format!("/hls/{tenant}/{stream}/index.m3u8"))
}

/// The `reason` count of `tidegate_publish_refused_total` in `metrics`, summed over its
/// other labels.
fn refused(metrics: &str, reason: &str) -> f64 {
    metric_sum(
        metrics,
        "tidegate_publish_refused_total",
        &[("reason", reason)],
    )
}

/// ffmpeg publishing `key` over RTMP to `rtmp`, for `seconds` or forever.
fn rtmp_publisher(rtmp: SocketAddr, key: &str, how: &Publish) -> Proc {
    publish_ffmpeg(Media::H264Aac, &format!("rtmp://{rtmp}/live/{key}"), how)
}

/// ffmpeg sending MPEG-TS over SRT with `streamid=KEY` (looping, real time).
fn srt_publisher(srt: SocketAddr, streamid: &str) -> Proc {
    ffmpeg_ts_loop(
        "ffmpeg-srt",
        &format!("srt://{srt}?streamid={streamid}&pkt_size=1316"),
    )
}

fn get_playlist_msn(url: &str) -> u64 {
    wait_playlist(url, Duration::from_secs(10), "the playlist", |_| true).next_msn()
}

fn wait_segments(url: &str, what: &str) {
    wait_playlist(url, Duration::from_secs(30), what, |pl| {
        !pl.segments.is_empty()
    });
}

#[test]
fn a_key_publishes_to_its_tenant_and_wrong_keys_are_refused() {
    let server = Server::start(&["--admin-token", TOKEN]);
    let base = server.url("");
    assert!(
        server.log_text().contains("OPEN MODE"),
        "open mode says so at start"
    );
    let (_, key) = tenant_with_key(&base, "acme", "main");

    // RTMP with the key: the tenant's public URL, which never holds the key.
    let mut publisher = rtmp_publisher(server.rtmp, &key, &Publish::forever());
    let url = playlist(&server, "acme", "main");
    assert!(!url.contains(&key));
    wait_segments(&url, "segments of acme/main over RTMP");
    let (status, streams) = api("GET", &server.url("/api/v1/streams"), None);
    assert_eq!(status, 200);
    assert!(
        !streams.to_string().contains(&key),
        "the API never shows a key: {streams}"
    );

    // A guessed key and the open-mode name are refused, with the reason ffmpeg shows.
    let guess = format!("{}0", &key[..key.len() - 1]);
    let guess = if guess == key {
        format!("{}1", &key[..key.len() - 1])
    } else {
        guess
    };
    for wrong in [guess.as_str(), "main", "cam"] {
        let mut p = rtmp_publisher(server.rtmp, wrong, &Publish::for_secs(5));
        assert_publisher_refused(&mut p, &format!("RTMP key {wrong}"));
        assert!(
            p.log_text().contains("unknown stream key"),
            "ffmpeg shows the reason; log:\n{}",
            p.log_tail(20)
        );
    }
    let metrics = server.metrics();
    assert!(refused(&metrics, "unknown_key") >= 3.0, "{metrics}");
    assert!(
        !server.log_text().contains(&key),
        "the key never reaches a log line"
    );

    // SRT with a key of the same tenant, and a wrong one.
    let (_, srt_key) = new_key(&base, "acme", "field");
    let mut srt = srt_publisher(server.srt, &srt_key);
    wait_segments(
        &playlist(&server, "acme", "field"),
        "segments of acme/field over SRT",
    );
    let mut wrong = srt_publisher(server.srt, &guess);
    assert_publisher_refused(&mut wrong, "SRT with a wrong key");
    wait_for(
        "the SRT refusal counted",
        Duration::from_secs(10),
        Duration::from_millis(200),
        || (refused(&server.metrics(), "unknown_key") >= 4.0).then_some(()),
    );
    srt.kill();
    publisher.kill();
}

#[test]
fn rotation_keeps_the_stream_and_revocation_ends_it() {
    let server = Server::start(&["--admin-token", TOKEN, "--reconnect-window", "3s"]);
    let base = server.url("");
    let (id, key) = tenant_with_key(&base, "acme", "main");
    let mut publisher = rtmp_publisher(server.rtmp, &key, &Publish::forever());
    let url = playlist(&server, "acme", "main");
    let before = wait_playlist(&url, Duration::from_secs(30), "a segment", |pl| {
        !pl.segments.is_empty()
    });
    let seen = before.next_msn();

    // Rotation: a new secret for the same key id; the live publisher goes on.
    let (status, rotated) = api(
        "POST",
        &format!("{base}/api/v1/tenants/acme/keys/{id}/rotate"),
        None,
    );
    assert_eq!(status, 200, "{rotated}");
    assert_eq!(rotated["id"], id.as_str());
    assert_ne!(rotated["key"], key.as_str());
    wait_playlist(&url, Duration::from_secs(20), "three more segments", |pl| {
        pl.next_msn() >= seen + 3 && !pl.endlist
    });
    assert!(publisher.is_running(), "rotation kept the publisher");
    let (_, stream) = api("GET", &server.url("/api/v1/streams/acme/main"), None);
    assert_eq!(stream["live_here"], true, "{stream}");
    // The old secret no longer publishes (refused before the stream is looked at, so not
    // as "already live").
    let mut old = rtmp_publisher(server.rtmp, &key, &Publish::for_secs(5));
    assert_publisher_refused(&mut old, "the rotated-away key");

    // Revoking another key of the same stream (a second encoder's) leaves this one alone.
    let (spare, _) = new_key(&base, "acme", "main");
    let (status, _) = api(
        "DELETE",
        &format!("{base}/api/v1/tenants/acme/keys/{spare}"),
        None,
    );
    assert_eq!(status, 200);
    let before = get_playlist_msn(&url);
    wait_playlist(&url, Duration::from_secs(20), "two more segments", |pl| {
        pl.next_msn() >= before + 2 && !pl.endlist
    });
    assert!(publisher.is_running(), "another key's revocation kept it");

    // Revocation: the publisher is disconnected, the stream goes reconnecting, then ends.
    let (status, revoked) = api(
        "DELETE",
        &format!("{base}/api/v1/tenants/acme/keys/{id}"),
        None,
    );
    assert_eq!(status, 200, "{revoked}");
    let started = Instant::now();
    wait_for(
        "the stream to go reconnecting or ended",
        Duration::from_secs(15),
        Duration::from_millis(200),
        || {
            let (_, s) = api("GET", &server.url("/api/v1/streams/acme/main"), None);
            (s["live_here"] != true).then_some(())
        },
    );
    wait_playlist(&url, Duration::from_secs(20), "EXT-X-ENDLIST", |pl| {
        pl.endlist
    });
    eprintln!("revoked → ended in {:?}", started.elapsed());
    // The encoder retrying with the revoked key is refused.
    let new_key = rotated["key"].as_str().unwrap();
    let mut retry = rtmp_publisher(server.rtmp, new_key, &Publish::for_secs(5));
    assert_publisher_refused(&mut retry, "the revoked key");
    publisher.kill();
}

#[test]
fn a_key_made_through_one_worker_publishes_through_another_within_a_second() {
    let cluster = Cluster::start(ClusterOpts {
        workers: 2,
        worker_args: vec!["--admin-token".into(), TOKEN.into()],
        ..ClusterOpts::default()
    });
    let a = &cluster.workers[0];
    let b = &cluster.workers[1];
    let (_, key) = tenant_with_key(&a.url(""), "acme", "main");
    let made = Instant::now();
    thread::sleep(Duration::from_secs(1).saturating_sub(made.elapsed()));
    let mut publisher = rtmp_publisher(b.rtmp, &key, &Publish::forever());
    // Watched from either worker.
    wait_segments(&playlist(b, "acme", "main"), "segments through worker B");
    wait_segments(&playlist(a, "acme", "main"), "the same stream on worker A");
    assert!(
        refused(&b.metrics(), "unknown_key") == 0.0,
        "worker B knew the key at once"
    );
    publisher.kill();
}

/// `tidegate ARGS --api URL [--token T]`: (success, stdout, stderr).
fn cli(server: &Server, token: Option<&str>, args: &[&str]) -> (bool, String, String) {
    server.cli(token, args)
}

#[test]
fn the_tenant_and_key_commands_drive_the_same_api() {
    let server = Server::start(&["--admin-token", TOKEN]);
    let ok = |args: &[&str]| -> Value {
        let (success, stdout, stderr) = cli(&server, Some(TOKEN), args);
        assert!(success, "tidegate {args:?} failed: {stderr}");
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {stdout}"))
    };
    let created = ok(&["tenant", "create", "acme", "--max-streams", "5"]);
    assert_eq!(created["name"], "acme");
    assert_eq!(created["quotas"]["max_streams"], 5);
    let updated = ok(&["tenant", "update", "acme", "--max-bitrate-bps", "8000000"]);
    assert_eq!(updated["quotas"]["max_streams"], 5, "kept: {updated}");
    assert_eq!(updated["quotas"]["max_bitrate_bps"], 8_000_000);

    let issued = ok(&["key", "create", "acme", "main"]);
    let key = issued["key"].as_str().unwrap().to_owned();
    let id = issued["id"].as_str().unwrap().to_owned();
    let listed = ok(&["key", "list", "acme"]);
    assert_eq!(listed[0]["id"], id.as_str());
    assert!(
        !listed.to_string().contains(&key),
        "a list never shows a key"
    );

    // The key the command printed publishes.
    let mut publisher = rtmp_publisher(server.rtmp, &key, &Publish::forever());
    wait_segments(
        &playlist(&server, "acme", "main"),
        "segments with the CLI's key",
    );
    let rotated = ok(&["key", "rotate", "acme", &id]);
    assert_ne!(rotated["key"], key.as_str());
    assert!(publisher.is_running(), "rotation kept the publisher");
    assert_eq!(ok(&["key", "revoke", "acme", &id])["action"], "revoked");
    assert_eq!(
        publisher
            .wait_exit(Duration::from_secs(15))
            .map(|s| s.success()),
        Some(false),
        "revocation disconnected the publisher"
    );

    // Errors carry the status and the API's message.
    let (success, _, stderr) = cli(&server, Some("wrong"), &["tenant", "list"]);
    assert!(!success && stderr.contains("401"), "{stderr}");
    let (success, _, stderr) = cli(&server, Some(TOKEN), &["tenant", "show", "nobody"]);
    assert!(!success && stderr.contains("404"), "{stderr}");
    assert_eq!(ok(&["tenant", "delete", "acme"])["action"], "deleted");
    assert_eq!(ok(&["tenant", "list"]), json!([]));
}

#[test]
fn rtmps_publishes_with_a_key_and_refuses_a_wrong_one() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key_file) = self_signed_cert(dir.path(), "tenants");
    let rtmps: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
    let server = Server::start(&[
        "--admin-token",
        TOKEN,
        "--rtmps-listen",
        &rtmps.to_string(),
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key_file.to_str().unwrap(),
    ]);
    let (_, key) = tenant_with_key(&server.url(""), "acme", "secure");
    let mut publisher = publish_ffmpeg(
        Media::H264Aac,
        &format!("rtmps://{rtmps}/live/{key}"),
        &Publish::forever(),
    );
    wait_segments(
        &playlist(&server, "acme", "secure"),
        "segments of acme/secure over RTMPS",
    );
    let mut wrong = publish_ffmpeg(
        Media::H264Aac,
        &format!("rtmps://{rtmps}/live/cam"),
        &Publish::for_secs(5),
    );
    assert_publisher_refused(&mut wrong, "RTMPS with the open-mode name");
    assert!(
        wrong.log_text().contains("unknown stream key"),
        "{}",
        wrong.log_tail(20)
    );
    let metrics = server.metrics();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("tidegate_publish_refused_total{")
                && l.contains("protocol=\"rtmps\"")
                && l.contains("reason=\"unknown_key\"")),
        "{metrics}"
    );
    publisher.kill();
}
