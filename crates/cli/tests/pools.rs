//! Dedicated pools against the real binary: one Redis and two workers sharing it (and one
//! media volume), a shared one and one started with `--pool premium`. Tenant `acme` names
//! pool `premium`, tenant `beta` names none. An ffmpeg publisher of acme is refused by the
//! shared worker with the reason on its stderr (RTMP `NetStream.Publish.Rejected`), counted
//! as `reason="pool"` and logged; it is accepted by the premium worker, and its playlist is
//! watched (ffprobe reads the HLS) from the shared worker: viewers are not pinned. A publisher
//! of beta is refused by the premium worker. Over SRT the refusal is `SRT_REJX_FORBIDDEN`
//! (1403), and a `--pull` runs only where the pool serves the pulled stream's tenant.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use tidegate_testkit::hostile::metric_sum;
use tidegate_testkit::*;

const TOKEN: &str = "operator-secret-token";

/// `method url` with the operator token and an optional JSON body: (status, body).
fn api(method: &str, url: &str, body: Option<Value>) -> (u16, Value) {
    tidegate_testkit::http::api_as(TOKEN, method, url, body)
}

/// Creates tenant `name` in `pool` (`None`: the shared pool) with a key for its stream
/// `stream`, through the API at `base`; returns the key.
fn tenant_with_key(base: &str, name: &str, pool: Option<&str>, stream: &str) -> String {
    let (status, body) = api(
        "POST",
        &format!("{base}/api/v1/tenants"),
        Some(json!({"name": name, "pool": pool})),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["pool"], json!(pool), "{body}");
    let (status, body) = api(
        "POST",
        &format!("{base}/api/v1/tenants/{name}/keys"),
        Some(json!({"stream": stream})),
    );
    assert_eq!(status, 201, "{body}");
    body["key"].as_str().unwrap().to_owned()
}

/// The `tidegate_publish_refused_total` count of `reason` (and `protocol`, when given),
/// summed over the other labels.
fn refused(metrics: &str, reason: &str, protocol: Option<&str>) -> f64 {
    let mut labels = vec![("reason", reason)];
    labels.extend(protocol.map(|p| ("protocol", p)));
    metric_sum(metrics, "tidegate_publish_refused_total", &labels)
}

/// A shared worker and a `--pool premium` one on one Redis and one media volume, with the
/// operator token; `extra` goes to both. The shared worker is started first: tenants made
/// through it before the premium worker starts are read by the latter at its start.
struct Pools {
    shared: Server,
    premium: Option<Server>,
    redis: RedisServer,
    dir: tempfile::TempDir,
}

impl Pools {
    fn start_shared(extra: &[&str]) -> Pools {
        let dir = tempfile::Builder::new()
            .prefix("tidegate-pools-")
            .tempdir()
            .unwrap();
        let redis = RedisServer::start(dir.path());
        let shared = Self::worker(dir.path(), &redis, "shared-0", None, extra);
        Pools {
            shared,
            premium: None,
            redis,
            dir,
        }
    }

    fn start_premium(&mut self, extra: &[&str]) -> &Server {
        let w = Self::worker(
            self.dir.path(),
            &self.redis,
            "premium-0",
            Some("premium"),
            extra,
        );
        self.premium.insert(w)
    }

    fn worker(
        dir: &Path,
        redis: &RedisServer,
        id: &str,
        pool: Option<&str>,
        extra: &[&str],
    ) -> Server {
        let data = dir.join(id);
        let storage = format!("file://{}", dir.join("media").display());
        let mut args = vec![
            "--state".to_owned(),
            redis.url(),
            "--storage".to_owned(),
            storage,
            "--worker-id".to_owned(),
            id.to_owned(),
            "--admin-token".to_owned(),
            TOKEN.to_owned(),
        ];
        if let Some(pool) = pool {
            args.extend(["--pool".to_owned(), pool.to_owned()]);
        }
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        Server::start_in(&data, &args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    fn premium(&self) -> &Server {
        self.premium.as_ref().expect("the premium worker runs")
    }
}

fn rtmp_publisher(rtmp: SocketAddr, key: &str, how: &Publish) -> Proc {
    publish_ffmpeg(Media::H264Aac, &format!("rtmp://{rtmp}/live/{key}"), how)
}

fn srt_publisher(srt: SocketAddr, key: &str) -> Proc {
    ffmpeg_ts_loop(
        "ffmpeg-srt",
        &format!("srt://{srt}?streamid={key}&pkt_size=1316"),
    )
}

fn wait_segments(url: &str, what: &str) {
    wait_playlist(url, Duration::from_secs(30), what, |pl| {
        pl.segments.len() >= 2
    });
}

#[test]
fn a_pooled_tenant_publishes_only_to_its_pool_and_is_watched_from_any_worker() {
    let mut pools = Pools::start_shared(&[]);
    let base = pools.shared.url("");
    let acme = tenant_with_key(&base, "acme", Some("premium"), "main");
    let beta = tenant_with_key(&base, "beta", None, "cam");
    let premium = pools.start_premium(&[]);
    assert!(
        premium
            .log_text()
            .contains("this worker serves pool premium only"),
        "the premium worker names its pool at start:\n{}",
        premium.proc.log_tail(20)
    );
    let shared = &pools.shared;
    let premium = pools.premium();

    // The premium tenant at the shared worker: refused, with the reason ffmpeg shows.
    let mut wrong = rtmp_publisher(shared.rtmp, &acme, &Publish::for_secs(5));
    assert_publisher_refused(&mut wrong, "acme at the shared worker");
    let reason = "tenant acme publishes to pool premium: use its ingest address";
    assert!(
        wrong.log_text().contains(reason),
        "ffmpeg shows the reason; log:\n{}",
        wrong.log_tail(20)
    );
    assert!(refused(&shared.metrics(), "pool", Some("rtmp")) >= 1.0);
    assert!(
        shared
            .log_text()
            .contains(&format!("publish refused: {reason}")),
        "the shared worker logs the refusal:\n{}",
        shared.proc.log_tail(20)
    );
    assert!(!shared.log_text().contains(&acme), "never the key in a log");

    // At its pool's worker it publishes; a shared tenant publishes at the shared worker.
    let mut acme_live = rtmp_publisher(premium.rtmp, &acme, &Publish::forever());
    let mut beta_live = rtmp_publisher(shared.rtmp, &beta, &Publish::forever());
    let acme_url = shared.url("/hls/acme/main/index.m3u8");
    wait_segments(
        &premium.url("/hls/acme/main/index.m3u8"),
        "acme/main on the premium worker",
    );
    wait_segments(
        &shared.url("/hls/beta/cam/index.m3u8"),
        "beta/cam on the shared worker",
    );

    // Viewers are not pinned: the shared worker serves the premium stream, and ffprobe
    // reads it from there.
    wait_segments(&acme_url, "acme/main watched from the shared worker");
    let streams = probe_streams(&acme_url);
    assert!(
        streams
            .iter()
            .any(|s| s.codec_type == "video" && s.codec_name == "h264"),
        "ffprobe reads the premium stream from the shared worker: {streams:?}"
    );
    assert!(
        streams.iter().any(|s| s.codec_type == "audio"),
        "{streams:?}"
    );
    // And the premium worker serves the shared tenant's stream.
    wait_segments(
        &premium.url("/hls/beta/cam/index.m3u8"),
        "beta/cam watched from the premium worker",
    );

    // The shared tenant at the premium worker: refused.
    let mut wrong = rtmp_publisher(premium.rtmp, &beta, &Publish::for_secs(5));
    assert_publisher_refused(&mut wrong, "beta at the premium worker");
    assert!(
        wrong
            .log_text()
            .contains("tenant beta publishes to the shared pool, this worker serves pool premium"),
        "ffmpeg shows the reason; log:\n{}",
        wrong.log_tail(20)
    );
    assert!(refused(&premium.metrics(), "pool", Some("rtmp")) >= 1.0);
    assert!(acme_live.is_running() && beta_live.is_running());
    acme_live.kill();
    beta_live.kill();
}

#[test]
fn srt_refuses_a_pooled_tenant_with_1403_and_pulls_run_only_where_the_pool_serves() {
    // An SRT source that only listens, pulled by both workers into default/feed: tenant
    // `default` names no pool, so the shared worker pulls and the premium one stands by.
    let source_port = free_udp_port();
    let mut source = srt_ffmpeg_listener(source_port, "");
    let pull = format!("feed=srt://127.0.0.1:{source_port}?latency=200");
    let mut pools = Pools::start_shared(&["--pull", &pull]);
    let base = pools.shared.url("");
    let acme = tenant_with_key(&base, "acme", Some("premium"), "field");
    pools.start_premium(&["--pull", &pull]);
    let shared = &pools.shared;
    let premium = pools.premium();

    // libsrt (ffmpeg) at the shared worker: refused, counted, logged with the code.
    let mut wrong = srt_publisher(shared.srt, &acme);
    assert_publisher_refused(&mut wrong, "acme over SRT at the shared worker");
    wait_for(
        "the SRT pool refusal counted",
        Duration::from_secs(10),
        Duration::from_millis(200),
        || (refused(&shared.metrics(), "pool", Some("srt")) >= 1.0).then_some(()),
    );
    let log = shared.log_text();
    assert!(
        log.contains("SRT_REJX_FORBIDDEN (1403)")
            && log.contains("tenant acme publishes to pool premium: use its ingest address"),
        "{}",
        shared.proc.log_tail(20)
    );
    // The code as a caller receives it (libsrt tools print only "application-defined"):
    // tidegate's own SRT caller reports it.
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("clip.ts");
    run_ok(
        Command::new(ffmpeg())
            .args(["-hide_banner", "-loglevel", "error", "-y", "-i"])
            .arg(media(Media::H264Aac))
            .args(["-t", "4", "-c", "copy", "-f", "mpegts"])
            .arg(&clip),
        "ffmpeg: the MPEG-TS clip",
    );
    let out = Command::new(tidegate_bin())
        .arg("bench")
        .args(["--url", &format!("srt://{}?streamid={acme}", shared.srt)])
        .arg("--input")
        .arg(&clip)
        .args(["--duration", "3s", "--quiet", "--json", "-"])
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "bench JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let p = &report["publishers"];
    assert_eq!(p["refused"], 1, "{report}");
    let detail = p["per_publisher"][0]["detail"].as_str().unwrap_or("");
    assert!(detail.contains("FORBIDDEN (1403)"), "{report}");

    // At its pool's worker the same key publishes over SRT.
    let mut live = srt_publisher(premium.srt, &acme);
    wait_segments(
        &premium.url("/hls/acme/field/index.m3u8"),
        "acme/field over SRT on the premium worker",
    );

    // The pull: the shared worker pulls default/feed, the premium worker does not.
    wait_segments(
        &shared.url("/hls/default/feed/index.m3u8"),
        "the pulled feed",
    );
    let (_, stream) = api("GET", &premium.url("/api/v1/streams/default/feed"), None);
    assert_eq!(stream["held_by"], "shared-0", "{stream}");
    assert!(
        premium
            .log_text()
            .contains("srt pull: not pulling here: tenant default publishes to the shared pool"),
        "{}",
        premium.proc.log_tail(30)
    );
    assert!(refused(&premium.metrics(), "pool", Some("srt")) >= 1.0);
    live.kill();
    source.kill();
}
