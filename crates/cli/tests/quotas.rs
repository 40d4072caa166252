//! Tenant quotas against the real binary, with real publishers: the n+1-th live stream of a
//! tenant is refused at once with the quota in words that ffmpeg prints (RTMP) and SRT
//! rejection 1402, on one worker and across a two-worker Redis cluster (streams live on
//! worker A count on worker B); a publisher taking over its own live stream is not an extra
//! stream; the tenant's total ingest bitrate refuses one more stream; a stream above its
//! per-stream bitrate cap turns `warning` with `over_bitrate_quota` and, once the tenant says
//! so, is disconnected; publish attempts beyond the tenant's rate are refused, and one
//! tenant's flood leaves another tenant's attempts alone. Every refusal is counted in
//! `tidegate_publish_refused_total{protocol,tenant,reason}`.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use serde_json::{json, Value};
use tidegate_testkit::hooks::{delivered, Receiver};
use tidegate_testkit::hostile::{metric_sum, srt_connect_silent, SrtAnswer};
use tidegate_testkit::*;

const TOKEN: &str = "operator-secret-token";

/// `method url` with the operator token and an optional JSON body: (status, body).
fn api(method: &str, url: &str, body: Option<Value>) -> (u16, Value) {
    tidegate_testkit::http::api_as(TOKEN, method, url, body)
}

/// Creates tenant `name` with `quotas` through the API at `base`.
fn tenant(base: &str, name: &str, quotas: Value) {
    let (status, body) = api(
        "POST",
        &format!("{base}/api/v1/tenants"),
        Some(json!({"name": name, "quotas": quotas})),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["quotas"], {
        let mut all = json!({
            "max_streams": null, "max_bitrate_bps": null, "max_total_bitrate_bps": null,
            "max_publish_rate": null, "over_bitrate_for_s": null,
            "disconnect_over_bitrate": false
        });
        for (k, v) in quotas.as_object().unwrap() {
            all[k] = v.clone();
        }
        all
    });
}

/// A new key of tenant `tenant` for its stream `stream`.
fn key(base: &str, tenant: &str, stream: &str) -> String {
    let (status, body) = api(
        "POST",
        &format!("{base}/api/v1/tenants/{tenant}/keys"),
        Some(json!({"stream": stream})),
    );
    assert_eq!(status, 201, "{body}");
    body["key"].as_str().unwrap().to_owned()
}

/// `tidegate_publish_refused_total` of `tenant` and `reason`, summed over protocols.
fn refused(metrics: &str, tenant: &str, reason: &str) -> f64 {
    let labels = [("tenant", tenant), ("reason", reason)];
    metric_sum(metrics, "tidegate_publish_refused_total", &labels)
}

fn rtmp_publisher(rtmp: SocketAddr, key: &str, how: &Publish) -> Proc {
    publish_ffmpeg(Media::H264Aac, &format!("rtmp://{rtmp}/live/{key}"), how)
}

fn wait_segments(server: &Server, tenant: &str, stream: &str) {
    wait_playlist(
        &server.url(&format!("/hls/{tenant}/{stream}/index.m3u8")),
        Duration::from_secs(30),
        &format!("segments of {tenant}/{stream}"),
        |pl| !pl.segments.is_empty(),
    );
}

/// Waits for a publisher that must be refused: it exits with a failure, and ffmpeg printed
/// `why`.
fn assert_refused_with(p: &mut Proc, why: &str) {
    assert_publisher_refused(p, why);
    assert!(
        p.log_text().contains(why),
        "ffmpeg shows `{why}`; log:\n{}",
        p.log_tail(20)
    );
}

/// One SRT caller's handshake for stream id `sid` from a fresh socket: what it came to.
fn srt_handshake(srt: SocketAddr, socket_id: u32, sid: &str) -> SrtAnswer {
    let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    srt_connect_silent(&sock, srt, socket_id, sid)
}

/// The rejection an SRT caller over a quota gets: 1402 `SRT_REJX_OVERLOAD` (a handshake
/// type of 1000 + the code).
const SRT_QUOTA_REJECTION: SrtAnswer = SrtAnswer::Rejected(1000 + 1402);

/// The API's view of a stream (`null` until the worker knows it: its first media).
fn stream(server: &Server, tenant: &str, name: &str) -> Value {
    let (status, v) = api(
        "GET",
        &server.url(&format!("/api/v1/streams/{tenant}/{name}")),
        None,
    );
    match status {
        200 => v,
        404 => Value::Null,
        _ => panic!("{status}: {v}"),
    }
}

fn reason_codes(v: &Value) -> Vec<String> {
    v["reasons"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r["code"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_n_plus_first_stream_is_refused_with_its_reason_and_a_takeover_of_a_live_one_is_not() {
    let server = Server::start(&["--admin-token", TOKEN]);
    let base = server.url("");
    tenant(&base, "acme", json!({"max_streams": 2}));
    tenant(&base, "beta", json!({"max_streams": 1}));
    let keys: Vec<String> = ["one", "two", "three"]
        .iter()
        .map(|s| key(&base, "acme", s))
        .collect();
    let mut one = rtmp_publisher(server.rtmp, &keys[0], &Publish::forever());
    let mut two = rtmp_publisher(server.rtmp, &keys[1], &Publish::forever());
    wait_segments(&server, "acme", "one");
    wait_segments(&server, "acme", "two");

    // The third stream: refused at once, the quota in words on ffmpeg's console.
    let mut three = rtmp_publisher(server.rtmp, &keys[2], &Publish::for_secs(5));
    assert_refused_with(&mut three, "tenant acme: 2 of 2 live streams");
    // Over SRT: rejection 1402, and ffmpeg gives up.
    assert_eq!(
        srt_handshake(server.srt, 0x5100, &keys[2]),
        SRT_QUOTA_REJECTION
    );
    let mut srt = ffmpeg_ts_loop(
        "ffmpeg-srt-over-quota",
        &format!("srt://{}?streamid={}&pkt_size=1316", server.srt, keys[2]),
    );
    assert!(
        srt.wait_exit(Duration::from_secs(20))
            .is_some_and(|s| !s.success()),
        "ffmpeg over SRT must be refused; log:\n{}",
        srt.log_tail(20)
    );
    let metrics = server.metrics();
    assert!(
        refused(&metrics, "acme", "quota_streams") >= 3.0,
        "{metrics}"
    );
    assert_eq!(refused(&metrics, "beta", "quota_streams"), 0.0, "{metrics}");
    assert!(
        server
            .log_text()
            .contains("publish refused: tenant acme: 2 of 2 live streams"),
        "the worker logs the refusal"
    );

    // A second encoder on a live stream's key is not an extra stream: the quota lets it
    // through, and the stream's own rule answers it (on one worker the live publisher
    // keeps its key; the cluster test has the takeover from another worker).
    let before = refused(&server.metrics(), "acme", "quota_streams");
    let mut second = rtmp_publisher(server.rtmp, &keys[0], &Publish::for_secs(5));
    assert_refused_with(&mut second, "stream is already live");
    assert_eq!(refused(&server.metrics(), "acme", "quota_streams"), before);
    // Nor is an encoder that comes back after a drop.
    two.kill();
    let mut back = rtmp_publisher(server.rtmp, &keys[1], &Publish::forever());
    let url = server.url("/hls/acme/two/index.m3u8");
    let seen = wait_playlist(&url, Duration::from_secs(10), "the playlist", |_| true).next_msn();
    wait_playlist(&url, Duration::from_secs(30), "two more segments", |pl| {
        pl.next_msn() >= seen + 2
    });
    assert!(
        back.is_running(),
        "the reconnect was admitted: {}",
        back.log_tail(20)
    );
    assert_eq!(refused(&server.metrics(), "acme", "quota_streams"), before);
    for p in [&mut one, &mut back] {
        p.kill();
    }
}

#[test]
fn on_a_two_worker_cluster_the_streams_live_on_one_worker_count_on_the_other() {
    let cluster = Cluster::start(ClusterOpts {
        workers: 2,
        worker_args: vec!["--admin-token".into(), TOKEN.into()],
        ..ClusterOpts::default()
    });
    let a = &cluster.workers[0];
    let b = &cluster.workers[1];
    tenant(&a.url(""), "acme", json!({"max_streams": 2}));
    let keys: Vec<String> = ["one", "two", "three"]
        .iter()
        .map(|s| key(&a.url(""), "acme", s))
        .collect();
    // For the attempt rate, at the end (made now, so both workers know them by then).
    tenant(&a.url(""), "noisy", json!({"max_publish_rate": 1}));
    let noisy_keys: Vec<String> = (0..6)
        .map(|i| key(&a.url(""), "noisy", &format!("s{i}")))
        .collect();
    let mut one = rtmp_publisher(a.rtmp, &keys[0], &Publish::forever());
    let mut two = rtmp_publisher(a.rtmp, &keys[1], &Publish::forever());
    wait_segments(a, "acme", "one");
    wait_segments(a, "acme", "two");

    // Worker B has no stream of acme, and still refuses the third.
    let mut three = rtmp_publisher(b.rtmp, &keys[2], &Publish::for_secs(5));
    assert_refused_with(&mut three, "tenant acme: 2 of 2 live streams");
    assert_eq!(srt_handshake(b.srt, 0x5200, &keys[2]), SRT_QUOTA_REJECTION);
    let metrics = b.metrics();
    assert!(
        refused(&metrics, "acme", "quota_streams") >= 2.0,
        "{metrics}"
    );

    // A backup encoder of a live stream on worker B takes it over from A: the same
    // stream, not an extra one.
    let mut backup = rtmp_publisher(b.rtmp, &keys[0], &Publish::forever());
    wait_for(
        "worker B to hold acme/one",
        Duration::from_secs(30),
        Duration::from_millis(300),
        || {
            let (_, v) = api("GET", &b.url("/api/v1/streams/acme/one"), None);
            (v["live_here"] == true).then_some(())
        },
    );
    assert!(backup.is_running(), "{}", backup.log_tail(20));
    assert!(
        one.wait_exit(Duration::from_secs(20)).is_some(),
        "the publisher on A lost its stream"
    );
    assert_eq!(
        refused(&b.metrics(), "acme", "quota_streams"),
        refused(&metrics, "acme", "quota_streams"),
        "the takeover was not refused by the quota"
    );

    // A stream that goes away frees its place, on the other worker too.
    two.kill();
    let mut three = wait_for(
        "worker B to admit the third stream once the first is gone",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || {
            let mut p = rtmp_publisher(b.rtmp, &keys[2], &Publish::forever());
            match p.wait_exit(Duration::from_secs(3)) {
                None => Some(p),
                Some(_) => None,
            }
        },
    );
    wait_segments(b, "acme", "three");
    assert!(three.is_running());
    three.kill();
    backup.kill();

    // The attempt rate holds across the cluster: with 1 a second, an attempt on worker A
    // and one on worker B within the same second admit the first and refuse the second
    // (each worker's own bucket would have let both through). Tried in fresh seconds until
    // both attempts fell within one (a busy machine may straddle a second).
    let mut decided = false;
    for (i, pair) in noisy_keys.chunks(2).enumerate() {
        // Start just after a second begins.
        while unix_ms() % 1000 > 100 {
            std::thread::sleep(Duration::from_millis(10));
        }
        let started = unix_ms() / 1000;
        let first = srt_handshake(a.srt, 0x7000 + i as u32, &pair[0]);
        let second = srt_handshake(b.srt, 0x7100 + i as u32, &pair[1]);
        if unix_ms() / 1000 != started {
            continue;
        }
        assert_eq!(first, SrtAnswer::Connected, "trial {i}");
        assert_eq!(
            second, SRT_QUOTA_REJECTION,
            "trial {i}: B counted A's attempt"
        );
        decided = true;
        break;
    }
    assert!(
        decided,
        "no two attempts fell within one second in three tries"
    );
    assert!(refused(&b.metrics(), "noisy", "quota_rate") >= 1.0);
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[test]
fn the_total_bitrate_of_a_tenants_live_streams_refuses_one_more() {
    let server = Server::start(&["--admin-token", TOKEN]);
    let base = server.url("");
    // Far below what one test stream sends.
    tenant(&base, "acme", json!({"max_total_bitrate_bps": 20_000}));
    let first = key(&base, "acme", "first");
    let second = key(&base, "acme", "second");
    let mut p = rtmp_publisher(server.rtmp, &first, &Publish::forever());
    wait_segments(&server, "acme", "first");
    wait_for(
        "the first stream's bitrate measured",
        Duration::from_secs(20),
        Duration::from_millis(300),
        || (stream(&server, "acme", "first")["bitrate_bps"].as_u64() > Some(20_000)).then_some(()),
    );
    let mut over = rtmp_publisher(server.rtmp, &second, &Publish::for_secs(5));
    assert_refused_with(&mut over, "total ingest bitrate");
    assert_eq!(
        srt_handshake(server.srt, 0x5300, &second),
        SRT_QUOTA_REJECTION
    );
    let metrics = server.metrics();
    assert!(
        refused(&metrics, "acme", "quota_bitrate") >= 2.0,
        "{metrics}"
    );
    assert!(p.is_running(), "the live stream is left alone");
    p.kill();
}

#[test]
fn a_stream_over_its_bitrate_cap_is_flagged_then_disconnected_when_the_tenant_says_so() {
    let rx = Receiver::start(|_, _| (200, Duration::ZERO));
    let hook = rx.url("/hooks/tidegate");
    let server = Server::start(&[
        "--admin-token",
        TOKEN,
        "--webhook-url",
        &hook,
        "--webhook-secret",
        "quota-webhook-secret-0123",
    ]);
    let base = server.url("");
    // A cap far below the test stream's bitrate, tolerated for 2 s; flagged only.
    tenant(
        &base,
        "loud",
        json!({"max_bitrate_bps": 20_000, "over_bitrate_for_s": 2}),
    );
    let k = key(&base, "loud", "main");
    let mut p = rtmp_publisher(server.rtmp, &k, &Publish::forever());
    let flagged = wait_for(
        "the stream flagged warning with over_bitrate_quota",
        Duration::from_secs(30),
        Duration::from_millis(300),
        || {
            let v = stream(&server, "loud", "main");
            (v["status"] == "warning" && reason_codes(&v).iter().any(|c| c == "over_bitrate_quota"))
                .then_some(v)
        },
    );
    let reason = flagged["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["code"] == "over_bitrate_quota")
        .unwrap()
        .clone();
    assert_eq!(reason["max_bps"], 20_000, "{reason}");
    assert!(reason["bps"].as_u64().unwrap() > 20_000, "{reason}");
    assert!(
        p.is_running(),
        "flagged, not disconnected: the tenant did not ask"
    );
    // The webhook says so too.
    rx.wait(
        Duration::from_secs(10),
        "stream.status_changed with over_bitrate_quota",
        |hits| {
            delivered(hits, "stream.status_changed").iter().any(|h| {
                let v = &h.json()["data"];
                v["status"] == "warning"
                    && v["reasons"]
                        .as_array()
                        .is_some_and(|r| r.iter().any(|r| r["code"] == "over_bitrate_quota"))
            })
        },
    );

    // The tenant now asks for it (through `tidegate tenant update`, which keeps the other
    // quotas): the live publisher is disconnected, logged and counted.
    let out = std::process::Command::new(tidegate_bin())
        .args([
            "tenant",
            "update",
            "loud",
            "--disconnect-over-bitrate",
            "true",
        ])
        .args(["--api", &base, "--token", TOKEN])
        .env_remove("TIDEGATE_ADMIN_TOKEN")
        .env_remove("TIDEGATE_API")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let updated: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        updated["quotas"]["disconnect_over_bitrate"], true,
        "{updated}"
    );
    assert_eq!(updated["quotas"]["max_bitrate_bps"], 20_000, "{updated}");
    assert_eq!(updated["quotas"]["over_bitrate_for_s"], 2, "{updated}");
    assert!(
        p.wait_exit(Duration::from_secs(20))
            .is_some_and(|s| !s.success()),
        "the publisher over its cap is disconnected; log:\n{}",
        p.log_tail(20)
    );
    wait_for(
        "the disconnect counted",
        Duration::from_secs(10),
        Duration::from_millis(200),
        || {
            server
                .metrics()
                .lines()
                .any(|l| l.starts_with("tidegate_quota_disconnects_total{tenant=\"loud\"} 1"))
                .then_some(())
        },
    );
    assert!(
        server
            .log_text()
            .contains("publisher disconnected: over its tenant's per-stream bitrate quota"),
        "the worker says why"
    );
    wait_for(
        "the stream reconnecting",
        Duration::from_secs(10),
        Duration::from_millis(200),
        || (stream(&server, "loud", "main")["status"] == "reconnecting").then_some(()),
    );
}

#[test]
fn publish_attempts_beyond_the_rate_are_refused_and_one_tenants_flood_spares_another() {
    let server = Server::start(&["--admin-token", TOKEN]);
    let base = server.url("");
    tenant(&base, "noisy", json!({"max_publish_rate": 2}));
    tenant(&base, "quiet", json!({"max_publish_rate": 2}));
    tenant(&base, "closed", json!({"max_publish_rate": 0}));
    let noisy = key(&base, "noisy", "main");
    let quiet = key(&base, "quiet", "main");
    let quiet_probe = key(&base, "quiet", "probe");
    let closed = key(&base, "closed", "main");

    // A flood of 30 SRT callers with noisy's key, as fast as they go: beyond the burst of
    // 2 (and the tokens refilled meanwhile: a few, even on a slow machine) each is refused
    // with 1402.
    let answers: Vec<SrtAnswer> = (0..30u32)
        .map(|i| srt_handshake(server.srt, 0x6000 + i, &noisy))
        .collect();
    let over = answers
        .iter()
        .filter(|a| **a == SRT_QUOTA_REJECTION)
        .count();
    assert!(over >= 10, "{answers:?}");
    assert_ne!(
        answers[0], SRT_QUOTA_REJECTION,
        "the first is within the rate"
    );
    // Quiet's attempts are its own: admitted at once, during noisy's flood.
    assert_eq!(
        srt_handshake(server.srt, 0x6100, &quiet_probe),
        SrtAnswer::Connected
    );
    let mut p = rtmp_publisher(server.rtmp, &quiet, &Publish::forever());
    wait_segments(&server, "quiet", "main");
    let metrics = server.metrics();
    assert!(
        refused(&metrics, "noisy", "quota_rate") >= over as f64,
        "{metrics}"
    );
    assert_eq!(refused(&metrics, "quiet", "quota_rate"), 0.0, "{metrics}");

    // What an encoder sees: a tenant whose rate is 0 is refused every attempt, in words.
    let mut c = rtmp_publisher(server.rtmp, &closed, &Publish::for_secs(5));
    assert_refused_with(
        &mut c,
        "tenant closed: over its 0 publish attempts a second",
    );
    assert!(refused(&server.metrics(), "closed", "quota_rate") >= 1.0);
    assert!(p.is_running());
    p.kill();
}
